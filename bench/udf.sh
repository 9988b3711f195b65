#!/usr/bin/env bash
# UDF figures side by side in one run (issue 20): Apogee (release build, `storage-engine
# memory`) and Aerospike CE 8.1.2.0 from /work/shared/anchors/aerospike.sh when it is there
# (NO_CE=1 leaves it out; its namespace `test` is in memory too), each measured by
# bench/udf.py: a record UDF that increments a bin against the equivalent operate, and the
# sum of a bin over RECORDS records by a stream aggregation.
#
#   bash bench/udf.sh                  # RECORDS=100000 CALLS=20000 ROUNDS=3 CLIENTS=1
#   CLIENTS=8 bash bench/udf.sh        # also 8 concurrent clients per round
#
# Ports: 3480 (Apogee), 3490..3493 (CE); stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh

side_by_side udf 3480 3490 bench/udf.py --records "${RECORDS:-100000}" \
    --calls "${CALLS:-20000}" --rounds "${ROUNDS:-3}" --clients "${CLIENTS:-1}"
