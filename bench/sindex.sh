#!/usr/bin/env bash
# Secondary-index figures side by side in one run (issue 19): Apogee (release build,
# `storage-engine memory`) and Aerospike CE 8.1.2.0 from /work/shared/anchors/aerospike.sh when
# it is there (NO_CE=1 leaves it out; its namespace `test` is in memory too), each loaded with
# the same RECORDS records by bench/sindex.py, which prints for each: a query matching 0.1 % of
# the records against a scan with the equivalent filter expression, the index build rate
# against the scan rate of the same data, and memory per index entry.
#
#   bash bench/sindex.sh                  # RECORDS=1000000 ROUNDS=3
#   APOGEE_BIN=/path/to/older/apogee NO_CE=1 bash bench/sindex.sh   # an A/B of two builds
#
# Ports: 3460 (Apogee), 3470..3473 (CE); stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

WITH_PID=1 side_by_side sindex 3460 3470 bench/sindex.py \
    --records "${RECORDS:-1000000}" --rounds "${ROUNDS:-3}"
