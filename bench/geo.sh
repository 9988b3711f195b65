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

RECORDS=${RECORDS:-200000}
QUERIES=${QUERIES:-50}
CE=${CE:-/work/shared/anchors/aerospike.sh}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET_DIR/geo-bench}
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

"${APOGEE_BIN:-$TARGET_DIR/release/apogee}" --port 3480 --data-dir "$OUT/data" --config "$OUT/a.toml" \
    > "$OUT/apogee.log" 2>&1 &
pids+=($!)
wait_port 3480
echo "apogee: $("$PY" bench/geo.py --port 3480 --records "$RECORDS" --queries "$QUERIES")"

if [ -z "${NO_CE:-}" ] && [ -x "$CE" ]; then
    "$CE" start 3490 > "$OUT/ce.log" 2>&1
    ce_started=1
    echo "aerospike-ce: $("$PY" bench/geo.py --port 3490 --records "$RECORDS" --queries "$QUERIES")"
fi
