#!/usr/bin/env bash
# Server CPU per record of batch reads, side by side in one run (issue 16): Apogee (release
# build, `storage-engine memory`), optionally a second Apogee binary (BASE=path, an A/B of two
# commits) and Aerospike CE 8.1.2.0 from /work/shared/anchors/aerospike.sh when it is there
# (NO_CE=1 leaves it out) and Redis (`redis-server`, records as hashes of 10 fields read by
# pipelines of N HGETALLs, the same record shape; NO_REDIS=1 leaves it out). Each side is loaded with the same records, then rounds alternate the
# sides under the same closed-loop batch load (`apogee-bench run --batch N`); a side's figure
# is its process's user+system CPU time during its phase divided by the records it returned.
# On a 2-core machine the client takes the rest of the CPUs, so CPU per record is the figure
# that stays comparable when the machine is loaded; records/s is printed beside it.
#
#   bash bench/batch_cpu.sh                       # BATCH=100 ROUNDS=4 SECS=3 RECORDS=100000
#   BASE=/path/to/older/apogee bash bench/batch_cpu.sh
#
# Ports: 3400 (Apogee), 3420 (BASE), 3410..3413 (CE), 3401 (Redis); stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

BATCH=${BATCH:-100}
ROUNDS=${ROUNDS:-4}
SECS=${SECS:-3}
RECORDS=${RECORDS:-100000}
CE=${CE:-/work/shared/anchors/aerospike.sh}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET_DIR/batch-cpu}

cargo build --release -q -p apogee-server -p apogee-bench
BIN=$TARGET_DIR/release
rm -rf "$OUT" && mkdir -p "$OUT"
printf '[namespace.test]\nstorage-engine = "memory"\ndata-size = 4294967296\n' > "$OUT/a.toml"

. bench/lib.sh
pids=()
ce_started=""
trap stop_started EXIT

names=(apogee); ports=(3400)
"$BIN/apogee" --port 3400 --cores "$(nproc)" --data-dir "$OUT/new" --config "$OUT/a.toml" \
    > /dev/null 2> "$OUT/apogee.log" &
pids+=($!); spids=($!); wait_port 3400
if [ -n "${BASE:-}" ]; then
    "$BASE" --port 3420 --cores "$(nproc)" --data-dir "$OUT/base" --config "$OUT/a.toml" \
        > /dev/null 2> "$OUT/base.log" &
    pids+=($!); spids+=($!); names+=(base); ports+=(3420); wait_port 3420
fi
if [ -z "${NO_CE:-}" ] && [ -x "$CE" ]; then
    ce_started=3410
    "$CE" start 3410 > "$OUT/ce-start.log" 2>&1
    ce_pid=$(listener_pid 3410)
    spids+=("$ce_pid"); names+=(aerospike-ce); ports+=(3410)
fi
targets=()
for _ in "${ports[@]}"; do targets+=(aerospike); done
if [ -z "${NO_REDIS:-}" ] && command -v redis-server > /dev/null; then
    redis-server --port 3401 --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
        > "$OUT/redis.log" 2>&1 &
    pids+=($!); spids+=($!); names+=(redis-hgetall); ports+=(3401); targets+=(redis)
    wait_port 3401
fi
for i in "${!ports[@]}"; do
    "$BIN/apogee-bench" run --target "${targets[$i]}" --port "${ports[$i]}" --records "$RECORDS" \
        --phase load --connections 16 > /dev/null
done

echo "batch-cpu: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)," \
     "batch $BATCH, $RECORDS records of 10 x 100 B, 16 connections, $(nproc) cores," \
     "load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
    order=$(seq 0 $((${#names[@]} - 1)))
    if [ $((r % 2)) = 0 ]; then order=$(echo "$order" | tac); fi
    for i in $order; do
        c0=$(cpu_ticks "${spids[$i]}")
        line=$("$BIN/apogee-bench" run --target "${targets[$i]}" --port "${ports[$i]}" \
            --records "$RECORDS" --phase run --read-pct 100 --distribution uniform \
            --batch "$BATCH" --connections 16 --duration-secs "$SECS" | grep 'ops/s over')
        c1=$(cpu_ticks "${spids[$i]}")
        batches=$(echo "$line" | sed -E 's/.* ([0-9]+) ok.*/\1/')
        records=$((batches * BATCH))
        echo "round $r ${names[$i]}: $((records / SECS)) records/s," \
             "server CPU $(( (c1 - c0) * TICK_US * 1000 / records )) ns per record"
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
