#!/usr/bin/env bash
# Server CPU per operation of single-record YCSB, side by side in one run (issue 18): Apogee
# (release build, `commit-to-device = false`, all cores), optionally Apogee on one core
# (ONE_CORE=1), a second Apogee binary (BASE=path, an A/B of two commits) and Aerospike CE
# 8.1.2.0 from /work/shared/anchors/aerospike.sh when it is there (NO_CE=1 leaves it out; its
# `test` namespace is in memory). Every side is loaded with the same records, then rounds
# alternate the sides under the same closed-loop load (`apogee-bench run --workload W`); a
# side's figure is its process's user+system CPU time during its phase divided by the
# operations it answered. On a 2-core machine the client takes the rest of the CPUs, so CPU per
# operation is the figure that stays comparable when the machine is loaded; ops/s and the
# read p50/p99 are printed beside it.
#
#   bash bench/ycsb_cpu.sh                    # WORKLOAD=B ROUNDS=4 SECS=5 RECORDS=100000 CONNS=32
#   BASE=/path/to/older/apogee ONE_CORE=1 bash bench/ycsb_cpu.sh
#   RATE=40000 bash bench/ycsb_cpu.sh         # open loop at 40,000 requests/s instead of closed
#
# Ports: 3430 (Apogee), 3431 (one core), 3432 (BASE), 3440..3443 (CE); stops only what it
# started.
set -euo pipefail
cd "$(dirname "$0")/.."

WORKLOAD=${WORKLOAD:-B}
ROUNDS=${ROUNDS:-4}
SECS=${SECS:-5}
RECORDS=${RECORDS:-100000}
CONNS=${CONNS:-32}
RATE=${RATE:-}
CE=${CE:-/work/shared/anchors/aerospike.sh}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET_DIR/ycsb-cpu}

cargo build --release -q -p apogee-server -p apogee-bench
BIN=$TARGET_DIR/release
rm -rf "$OUT" && mkdir -p "$OUT"
printf '[namespace.test]\ncommit-to-device = false\n' > "$OUT/a.toml"

. bench/lib.sh
pids=()
ce_started=""
trap stop_started EXIT

names=(); ports=(); spids=()
start_apogee() { # name binary port cores
    "$2" --port "$3" --cores "$4" --data-dir "$OUT/$1-data" --config "$OUT/a.toml" \
        > /dev/null 2> "$OUT/$1.log" &
    pids+=($!); spids+=($!); names+=("$1"); ports+=("$3"); wait_port "$3"
}
start_apogee apogee "$BIN/apogee" 3430 "$(nproc)"
if [ -n "${ONE_CORE:-}" ]; then start_apogee apogee-1core "$BIN/apogee" 3431 1; fi
if [ -n "${BASE:-}" ]; then start_apogee base "$BASE" 3432 "$(nproc)"; fi
if [ -z "${NO_CE:-}" ] && [ -x "$CE" ]; then
    ce_started=3440
    "$CE" start 3440 > "$OUT/ce-start.log" 2>&1
    ce_pid=$(listener_pid 3440)
    spids+=("$ce_pid"); names+=(aerospike-ce); ports+=(3440)
fi
for port in "${ports[@]}"; do
    "$BIN/apogee-bench" run --target aerospike --port "$port" --records "$RECORDS" \
        --phase load --connections "$CONNS" > /dev/null
done

echo "ycsb-cpu: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)," \
     "YCSB $WORKLOAD${RATE:+ open loop at $RATE/s}, $RECORDS records of 10 x 100 B, $CONNS connections, $SECS s per phase," \
     "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
    order=$(seq 0 $((${#names[@]} - 1)))
    if [ $((r % 2)) = 0 ]; then order=$(echo "$order" | tac); fi
    for i in $order; do
        json="$OUT/${names[$i]}-$r.json"
        c0=$(cpu_ticks "${spids[$i]}")
        "$BIN/apogee-bench" run --target aerospike --port "${ports[$i]}" --records "$RECORDS" \
            --phase run --workload "$WORKLOAD" --connections "$CONNS" --duration-secs "$SECS" \
            ${RATE:+--rate "$RATE"} --json "$json" > "$OUT/${names[$i]}-$r.txt"
        c1=$(cpu_ticks "${spids[$i]}")
        python3 - "$json" "${names[$i]}" "$r" $(( (c1 - c0) * TICK_US )) <<'PY'
import json, sys
path, name, rnd, cpu_us = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
run = json.load(open(path))[-1]
ops = sum(o["count"] for o in run["ops"])
read = next((o for o in run["ops"] if o["op"] == "read"), None)
lat = f", read p50 {read['p50_us']} us p99 {read['p99_us']} us" if read else ""
print(f"round {rnd} {name}: {run['ops_per_sec']:.0f} ops/s, server CPU {cpu_us / max(ops, 1):.2f} us/op{lat}")
PY
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
