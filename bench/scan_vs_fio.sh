#!/usr/bin/env bash
# A full scan with a cold cache against fio on the same file, side by side in one run (issue 16):
# loads RECORDS records of 10 bins x 100 bytes (~1 KiB) into a release apogee once (kept in DIR
# for later runs with the same RECORDS), then alternates ROUNDS times:
#   1. apogee restarted (a new process: its record cache is empty and it reads with O_DIRECT,
#      so nothing is cached anywhere), then `apogee-bench full-scan`: one scan of every
#      partition on one connection, records/s, the count checked against RECORDS;
#   2. fio 4 KiB random reads, io_uring, queue depth 32, O_DIRECT, SECS seconds, on shard-0.dat;
#   3. fio sequential 1 MiB reads of shard-0.dat (O_DIRECT), for the storage-order comparison.
# Prints each round's ratios (scan records/s over fio IOPS) and their medians.
# Target: scan records/s >= 0.8 x fio's 4 KiB random-read IOPS at queue depth 32.
#
#   bash bench/scan_vs_fio.sh                        # RECORDS=10000000 ROUNDS=3 SECS=10
#   RECORDS=1000000 PORT=3620 bash bench/scan_vs_fio.sh
#
# The load runs with commit-to-device = false (it only fills the files; the scan is the same).
# Starts and stops only its own server, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-10000000}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
PORT=${PORT:-3620}
CORES=${CORES:-$(nproc)}
TARGET=${CARGO_TARGET_DIR:-target}
DIR=${DIR:-$TARGET/scan-fio}

command -v fio >/dev/null || { apt-get update -qq && apt-get install -y -qq fio; }
cargo build --release -q -p apogee-server -p apogee-bench
APOGEE=$TARGET/release/apogee
BENCH=$TARGET/release/apogee-bench
fio_json() { fio --output-format=json "$@" 2>/dev/null; }
field() { python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]; print($1)"; }

pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "port $PORT is already taken: pick another (PORT=...)" >&2; exit 1
fi
start() {
    "$APOGEE" --port "$PORT" --cores "$CORES" --data-dir "$DIR/data" --config "$DIR/apogee.toml" \
        > /dev/null 2>> "$DIR/apogee.log" &
    pid=$!
    # Recovery of 10 M records takes a while before the port opens (at most 10 minutes).
    for _ in $(seq 1 6000); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
        kill -0 "$pid" 2>/dev/null || { echo "apogee exited: see $DIR/apogee.log" >&2; exit 1; }
        sleep 0.1
    done
    echo "apogee did not open port $PORT" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }

mkdir -p "$DIR"
if [ "$(cat "$DIR/loaded" 2>/dev/null)" != "$RECORDS $CORES" ]; then
    rm -rf "$DIR/data" "$DIR/loaded"
    printf '[namespace.test]\ncommit-to-device = false\n' > "$DIR/apogee.toml"
    start
    echo "loading $RECORDS records"
    "$BENCH" run --port "$PORT" --records "$RECORDS" --phase load --connections 32 | tail -3
    stop
    echo "$RECORDS $CORES" > "$DIR/loaded"
fi
FILE="$DIR/data/test/shard-0.dat"
echo "data: $(du -sh "$DIR/data" | cut -f1) in $CORES shard files; fio reads $FILE ($(du -h "$FILE" | cut -f1))"

RAND=()
SEQ=()
for round in $(seq "$ROUNDS"); do
    echo "== round $round of $ROUNDS"
    start
    OUT=$("$BENCH" full-scan --port "$PORT"); echo "$OUT"
    stop
    N=$(echo "$OUT" | sed -E 's/full-scan: ([0-9]+) records.*/\1/')
    [ "$N" = "$RECORDS" ] || { echo "the scan returned $N records, not $RECORDS" >&2; exit 1; }
    SCAN=$(echo "$OUT" | sed -E 's/.*: ([0-9.]+) records\/s.*/\1/')
    IOPS=$(fio_json --name=r --filename="$FILE" --rw=randread --bs=4k --iodepth=32 \
        --ioengine=io_uring --direct=1 --time_based --runtime="$SECS" | field "j['read']['iops']")
    echo "fio 4 KiB random read QD32: $IOPS IOPS"
    MBPS=$(fio_json --name=s --filename="$FILE" --rw=read --bs=1M --iodepth=8 \
        --ioengine=io_uring --direct=1 --time_based --runtime="$SECS" | field "j['read']['bw_bytes']/1e6")
    # Records per second fio's sequential read would cover, at this file's bytes per record.
    BYTES=$(stat -c %s "$FILE")
    SEQ_RECS=$(python3 -c "print($MBPS * 1e6 / ($BYTES * $CORES / $RECORDS))")
    echo "fio sequential read: $MBPS MB/s = $SEQ_RECS records/s of this file"
    RAND+=("$(python3 -c "print($SCAN / $IOPS)")")
    SEQ+=("$(python3 -c "print($SCAN / $SEQ_RECS)")")
    echo "scan/fio random QD32 = ${RAND[-1]}   scan/fio sequential = ${SEQ[-1]}"
done
med() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.2f}', ' '.join(f'{float(x):.2f}' for x in sys.argv[1:]))" "$@"; }
echo "median scan/fio 4 KiB random QD32: $(med "${RAND[@]}")   (target >= 0.80)"
echo "median scan/fio sequential:        $(med "${SEQ[@]}")"
