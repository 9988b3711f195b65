#!/usr/bin/env bash
# Batch reads side by side (issue 16): builds release binaries, starts Apogee, Debian's
# redis-server and Aerospike CE 8.1.2.0 (/work/shared/anchors/aerospike.sh, namespace `test`)
# on loopback, runs `apogee-bench batch-compare` (batches of 10 and 100 keys as records/s
# against single gets on the same server, Redis pipelines of as many GETs, CE batches of as
# many keys; phases alternated round by round) and stops only what it started.
#
#   bash bench/batch_compare.sh                  # defaults below
#   SECS=3 ROUNDS=5 RECORDS=100000 CONNS=16 bash bench/batch_compare.sh
#
# Ports (override with APOGEE_PORT, REDIS_PORT, CE_PORT; CE uses CE_PORT..CE_PORT+3).
# NO_CE=1 or NO_REDIS=1 leaves that side out. APOGEE_STORAGE=memory (the default) gives
# Apogee's `test` the storage CE's `test` has (storage-engine memory, 4 GiB);
# APOGEE_STORAGE=device keeps it on its data file with commit-to-device = false (as in
# bench/compare.sh), reads then served from the read cache or the file.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-3}
ROUNDS=${ROUNDS:-5}
RECORDS=${RECORDS:-100000}
CONNS=${CONNS:-16}
CORES=${CORES:-$(nproc)}
APOGEE_PORT=${APOGEE_PORT:-3400}
REDIS_PORT=${REDIS_PORT:-3401}
CE_PORT=${CE_PORT:-3410}
CE=${CE:-/work/shared/anchors/aerospike.sh}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET_DIR/batch-compare}

command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }
cargo build --release -q -p apogee-server -p apogee-bench
BIN=$TARGET_DIR/release

rm -rf "$OUT" && mkdir -p "$OUT"
pids=()
ce_started=""
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "$ce_started" ]; then "$CE" stop "$CE_PORT" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

. bench/lib.sh
refuse_taken() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "port $1 is already taken: pick another (${2}=...)" >&2; exit 1
    fi
}

refuse_taken "$APOGEE_PORT" APOGEE_PORT
case "${APOGEE_STORAGE:-memory}" in
memory) printf '[namespace.test]\nstorage-engine = "memory"\ndata-size = 4294967296\n' ;;
device) printf '[namespace.test]\ncommit-to-device = false\n' ;;
*) echo "APOGEE_STORAGE must be memory or device" >&2; exit 64 ;;
esac > "$OUT/apogee.toml"
"$BIN/apogee" --port "$APOGEE_PORT" --cores "$CORES" --data-dir "$OUT/apogee-data" \
    --config "$OUT/apogee.toml" > /dev/null 2> "$OUT/apogee.log" &
pids+=($!); wait_port "$APOGEE_PORT"
args=(--apogee "127.0.0.1:$APOGEE_PORT")

if [ -z "${NO_REDIS:-}" ]; then
    refuse_taken "$REDIS_PORT" REDIS_PORT
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no > "$OUT/redis.log" 2>&1 &
    pids+=($!); wait_port "$REDIS_PORT"
    args+=(--redis "127.0.0.1:$REDIS_PORT")
fi
if [ -z "${NO_CE:-}" ]; then
    refuse_taken "$CE_PORT" CE_PORT
    ce_started=1
    "$CE" start "$CE_PORT" > "$OUT/ce-start.log" 2>&1
    args+=(--aerospike "127.0.0.1:$CE_PORT")
fi

echo "batch-compare: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)," \
     "apogee storage ${APOGEE_STORAGE:-memory}," \
     "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN/apogee-bench" batch-compare "${args[@]}" --records "$RECORDS" --connections "$CONNS" \
    --seconds "$SECS" --rounds "$ROUNDS" | tee "$OUT/batch-compare.txt"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
