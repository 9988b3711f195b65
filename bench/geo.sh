#!/usr/bin/env bash
# Geo query figures side by side in one run (issue 19): Apogee (release build, `storage-engine
# memory`) and Aerospike CE 8.1.2.0 from /work/shared/anchors/aerospike.sh when it is there
# (NO_CE=1 leaves it out; its namespace `test` is in memory too), each loaded with the same
# RECORDS records by bench/geo.py, which prints geo queries through the index against scans
# with the same predicate as a filter expression.
#
#   bash bench/geo.sh                     # RECORDS=200000 QUERIES=50
#   APOGEE_BIN=/path/to/older/apogee NO_CE=1 bash bench/geo.sh   # an A/B of two builds
#
# Ports: 3480 (Apogee), 3490..3493 (CE); stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

side_by_side geo 3480 3490 bench/geo.py \
    --records "${RECORDS:-200000}" --queries "${QUERIES:-50}"
