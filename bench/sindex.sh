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

RECORDS=${RECORDS:-1000000}
ROUNDS=${ROUNDS:-3}
CE=${CE:-/work/shared/anchors/aerospike.sh}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET_DIR/sindex-bench}
PY=${PY:-.venv/bin/python}

cargo build --release -q -p apogee-server
rm -rf "$OUT" && mkdir -p "$OUT"
printf '[namespace.test]\nstorage-engine = "memory"\ndata-size = 4294967296\n' > "$OUT/a.toml"

pids=()
ce_started=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "$ce_started" ]; then "$CE" stop 3470 >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
. bench/lib.sh

"${APOGEE_BIN:-$TARGET_DIR/release/apogee}" --port 3460 --data-dir "$OUT/data" --config "$OUT/a.toml" \
    > "$OUT/apogee.log" 2>&1 &
pids+=($!)
apogee_pid=$!
wait_port 3460
echo "apogee: $("$PY" bench/sindex.py --port 3460 --records "$RECORDS" --rounds "$ROUNDS" --pid "$apogee_pid")"

if [ -z "${NO_CE:-}" ] && [ -x "$CE" ]; then
    "$CE" start 3470 > "$OUT/ce.log" 2>&1
    ce_started=1
    ce_pid=$(listener_pid 3470)
    echo "aerospike-ce: $("$PY" bench/sindex.py --port 3470 --records "$RECORDS" --rounds "$ROUNDS" --pid "$ce_pid")"
fi
