#!/usr/bin/env bash
# Two apogee binaries side by side on one workload (default YCSB B), in alternated rounds: each
# round starts each server in turn with a fresh data dir, loads the same records, runs the
# workload for SECS, stops it; the order reverses every other round. Prints ops/s per round,
# the ratio B/A per round and the median. Starts and stops only its own servers.
#
#   bash bench/ycsb_ab.sh BEFORE_APOGEE AFTER_APOGEE
#   ROUNDS=5 SECS=8 RECORDS=100000 CONNS=32 WORKLOAD=B PORT=3420 bash bench/ycsb_ab.sh A B
#
# The load generator is this tree's release apogee-bench (BENCH overrides it). Both servers run
# with commit-to-device = false, --cores CORES (default: all).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: ycsb_ab.sh BEFORE_APOGEE AFTER_APOGEE" >&2; exit 64; }
A=$1; B=$2
for b in "$A" "$B"; do [ -x "$b" ] || { echo "$b is not an executable" >&2; exit 66; }; done
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-8}
RECORDS=${RECORDS:-100000}
CONNS=${CONNS:-32}
WORKLOAD=${WORKLOAD:-B}
PORT=${PORT:-3420}
CORES=${CORES:-$(nproc)}
BENCH=${BENCH:-${CARGO_TARGET_DIR:-target}/release/apogee-bench}
OUT=${OUT:-$(dirname "$BENCH")/ycsb-ab}
[ -x "$BENCH" ] || { echo "$BENCH is missing: cargo build --release -p apogee-bench" >&2; exit 66; }

rm -rf "$OUT" && mkdir -p "$OUT"
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
. bench/lib.sh
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "port $PORT is already taken: pick another (PORT=...)" >&2; exit 1
fi
printf '[namespace.test]\ncommit-to-device = false\n' > "$OUT/apogee.toml"

# Runs in this shell (never in $(...)), so the EXIT trap knows the server's pid; sets RATE.
one() { # side-name binary round
    local name=$1 bin=$2 round=$3 dir="$OUT/$1-$3"
    "$bin" --port "$PORT" --cores "$CORES" --data-dir "$dir-data" --config "$OUT/apogee.toml" \
        > /dev/null 2> "$dir.log" &
    pid=$!; wait_port "$PORT"
    "$BENCH" run --target aerospike --port "$PORT" --records "$RECORDS" --phase load \
        --connections "$CONNS" > "$dir-load.txt"
    "$BENCH" run --target aerospike --port "$PORT" --records "$RECORDS" --phase run \
        --workload "$WORKLOAD" --connections "$CONNS" --duration-secs "$SECS" \
        --json "$dir.json" > "$dir.txt"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    rm -rf "$dir-data"
    RATE=$(python3 -c "import json; print(round(json.load(open('$dir.json'))[-1]['ops_per_sec']))")
}

echo "ycsb_ab: workload $WORKLOAD, $RECORDS records, $CONNS connections, $SECS s per run," \
     "$ROUNDS rounds, $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "A = $A"; echo "B = $B"
ratios=()
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then one A "$A" "$r"; a=$RATE; one B "$B" "$r"; b=$RATE
    else one B "$B" "$r"; b=$RATE; one A "$A" "$r"; a=$RATE; fi
    ratio=$(python3 -c "print(f'{$b/$a:.3f}')")
    ratios+=("$ratio")
    echo "round $r: A $a ops/s  B $b ops/s  B/A $ratio"
done
python3 -c "import statistics,sys; print('median B/A', f'{statistics.median(map(float, sys.argv[1:])):.3f}')" "${ratios[@]}"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
