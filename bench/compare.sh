#!/usr/bin/env bash
# One command for the side-by-side comparison: builds release binaries, starts Apogee, Redis
# and the null server on loopback, runs the same YCSB workloads (load, A, B, C, get, put)
# against each with the same client and connections, stops everything and prints the
# comparison table (Apogee / Redis and Apogee / null-server ratios with latency percentiles).
#
#   bash bench/compare.sh            # defaults: 10 s per run, 100,000 records, 32 connections
#   SECS=5 RECORDS=50000 CONNS=16 bash bench/compare.sh
#
# Apogee runs with commit-to-device = false (acknowledged from memory, flushed every
# flush-max-ms), the durability Redis has with its defaults (no fsync per write); the
# "apogee-durable" row repeats the run with every write fdatasync'd before its ack.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-10}
RECORDS=${RECORDS:-100000}
CONNS=${CONNS:-32}
CORES=${CORES:-$(nproc)}
OUT=${OUT:-target/compare}

command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }
cargo build --release -q -p apogee-server -p apogee-bench
BIN=target/release

rm -rf "$OUT" && mkdir -p "$OUT"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# Servers are started in this shell (not in $(...)), so their pids land in pids and no
# command substitution waits on their output.
. bench/lib.sh

start_apogee() { # name commit-to-device; sets P
    P=$(port)
    printf '[namespace.test]\ncommit-to-device = %s\n' "$2" > "$OUT/$1.toml"
    "$BIN/apogee" --port "$P" --cores "$CORES" --data-dir "$OUT/$1-data" --config "$OUT/$1.toml" \
        > /dev/null 2> "$OUT/$1.log" &
    pids+=($!); wait_port "$P"
}

run_all() { # name target port
    local name=$1 target=$2 p=$3
    "$BIN/apogee-bench" run --target "$target" --port "$p" --records "$RECORDS" --phase load \
        --connections "$CONNS" --json "$OUT/$name-load.json" > "$OUT/$name-load.txt"
    for w in A B C; do
        "$BIN/apogee-bench" run --target "$target" --port "$p" --records "$RECORDS" --phase run \
            --workload "$w" --connections "$CONNS" --duration-secs "$SECS" \
            --json "$OUT/$name-$w.json" > "$OUT/$name-$w.txt"
    done
    "$BIN/apogee-bench" run --target "$target" --port "$p" --records "$RECORDS" --phase run \
        --read-pct 100 --distribution uniform --connections "$CONNS" --duration-secs "$SECS" \
        --json "$OUT/$name-get.json" > "$OUT/$name-get.txt"
    "$BIN/apogee-bench" run --target "$target" --port "$p" --records "$RECORDS" --phase run \
        --read-pct 0 --distribution uniform --connections "$CONNS" --duration-secs "$SECS" \
        --json "$OUT/$name-put.json" > "$OUT/$name-put.txt"
    echo "done: $name" >&2
}

start_apogee apogee false; run_all apogee aerospike "$P"
# Latency at half the peak: workload B open loop at half of the closed-loop B rate, latency
# counted from each request's intended send time.
HALF=$(python3 -c "import json,sys; print(int(json.load(open('$OUT/apogee-B.json'))[-1]['ops_per_sec'] / 2))")
"$BIN/apogee-bench" run --target aerospike --port "$P" --records "$RECORDS" --phase run \
    --workload B --connections "$CONNS" --duration-secs "$SECS" --rate "$HALF" \
    --json "$OUT/apogee-halfB.json" > "$OUT/apogee-halfB.txt"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

RP=$(port)
redis-server --port "$RP" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    > "$OUT/redis.log" 2>&1 &
pids+=($!); wait_port "$RP"; run_all redis redis "$RP"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

NP=$(port)
"$BIN/apogee-bench" null-server --port "$NP" --cores "$CORES" > /dev/null 2>&1 &
pids+=($!); wait_port "$NP"; run_all null aerospike "$NP"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

start_apogee apogee-durable true; run_all apogee-durable aerospike "$P"

echo
echo "Comparison: $RECORDS records of 10 x 100 B, $CONNS connections, ${SECS} s per run," \
     "$CORES cores for each server, $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD)"
python3 bench/compare_table.py "$OUT"
