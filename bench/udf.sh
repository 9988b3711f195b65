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

RECORDS=${RECORDS:-100000}
CALLS=${CALLS:-20000}
ROUNDS=${ROUNDS:-3}
CLIENTS=${CLIENTS:-1}
CE=${CE:-/work/shared/anchors/aerospike.sh}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET_DIR/udf-bench}
PY=${PY:-.venv/bin/python}

cargo build --release -q -p apogee-server
rm -rf "$OUT" && mkdir -p "$OUT"
printf '[namespace.test]\nstorage-engine = "memory"\ndata-size = 4294967296\n' > "$OUT/a.toml"

pids=()
ce_started=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "$ce_started" ]; then "$CE" stop 3490 >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
. bench/lib.sh

args=(--records "$RECORDS" --calls "$CALLS" --rounds "$ROUNDS" --clients "$CLIENTS")
"$TARGET_DIR/release/apogee" --port 3480 --data-dir "$OUT/data" --config "$OUT/a.toml" \
    > "$OUT/apogee.log" 2>&1 &
pids+=($!)
wait_port 3480
echo "apogee: $("$PY" bench/udf.py --port 3480 "${args[@]}")"

if [ -z "${NO_CE:-}" ] && [ -x "$CE" ]; then
    "$CE" start 3490 > "$OUT/ce.log" 2>&1
    ce_started=1
    echo "aerospike-ce: $("$PY" bench/udf.py --port 3490 "${args[@]}")"
fi
