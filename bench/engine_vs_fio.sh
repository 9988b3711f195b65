#!/usr/bin/env bash
# The storage engine against fio on the same file system, side by side in one run:
#   1. write throughput: engine appends of 1 KiB records (1 MiB blocks, O_DIRECT, written as
#      each block fills, one fdatasync at the end: commit-to-device off) vs fio sequential
#      O_DIRECT writes, bs=1M, fdatasync every 8 (fio is no slower without: checked);
#      then the same with one shard per core (CORES, default nproc) vs fio with as many jobs;
#   2. random reads at queue depth 32: engine reads of 1 KiB records, cache off, vs fio 4 KiB
#      random reads (io_uring, iodepth=32) of the same file; then the records of 1b read by
#      one shard per core, the 32 reads in flight split between them;
#   3. cold start: engine recovery of the file vs fio reading it sequentially, bs=1M.
# Targets (issue 4): 1 >= 85 %, 2 >= 80 %, 3 <= 1.5x fio's time.
# Every measurement alternates engine and fio ROUNDS times (default 5) and reports the
# ratio of each pair and their median: this machine's device swings by a third from one
# second to the next, so one pair alone says little.
# Every write measurement, engine's or fio's, starts after `settle`: the files deleted before
# it are synced away and the device gets SETTLE seconds (default 3). A file system mounted
# with `discard` (this one is) trims a deleted file's blocks; before, only the engine's runs
# followed a deletion, so only they could share the device with those trims. (The effect
# measured small: engine runs right after deleting 2 GiB had a median 2 % below settled
# ones over four pairs, within this device's noise; the point is that both sides are now
# treated alike.)
#
#   bash bench/engine_vs_fio.sh              # RECORDS=1000000 (1 GiB), SECS=10, ROUNDS=5
set -euo pipefail
cd "$(dirname "$0")/.."
RECORDS=${RECORDS:-1000000}
SECS=${SECS:-10}
ROUNDS=${ROUNDS:-5}
SETTLE=${SETTLE:-3}
DIR=${DIR:-target/engine-io}

command -v fio >/dev/null || { apt-get update -qq && apt-get install -y -qq fio; }
cargo build --release -q -p apogee-bench --bin engine-io
BIN=target/release/engine-io
rm -rf "$DIR" && mkdir -p "$DIR"
FILE="$DIR/engine/shard-0.dat"

fio_json() { fio --output-format=json "$@" 2>/dev/null; }
field() { python3 -c "import json,sys; j=json.load(sys.stdin)['jobs'][0]; print($1)"; }

CORES=${CORES:-$(nproc)}
settle() { sync; sleep "$SETTLE"; }
# Each engine line is printed, then its number taken from it (tee to /dev/stderr would reopen
# a redirected log file at offset 0 and overwrite it).
mbps() { sed -E 's/.*: ([0-9.]+) MB\/s/\1/'; }
reads_per_s() { sed -E 's/.*: ([0-9]+) reads\/s.*/\1/'; }
W_PAIRS=()
WN_PAIRS=()
for round in $(seq "$ROUNDS"); do
    echo "== 1. write throughput (round $round of $ROUNDS)"
    rm -rf "$DIR/engine"
    settle
    OUT=$("$BIN" write "$DIR/engine" "$RECORDS"); echo "$OUT"
    ENGINE_W=$(echo "$OUT" | mbps)
    settle
    FIO_W=$(fio_json --name=w --filename="$DIR/fio.dat" --rw=write --bs=1M --size=$((RECORDS))k \
        --direct=1 --ioengine=psync --fdatasync=8 --end_fsync=1 | field "j['write']['bw_bytes']/1e6")
    rm -f "$DIR/fio.dat"
    echo "fio sequential write: $FIO_W MB/s"
    W_PAIRS+=("$ENGINE_W/$FIO_W")

    echo "== 1b. write throughput with one shard per core, as the server runs, vs fio with as many jobs (round $round of $ROUNDS)"
    rm -rf "$DIR/engine-n"
    settle
    OUT=$("$BIN" write-shards "$DIR/engine-n" "$RECORDS" "$CORES"); echo "$OUT"
    ENGINE_WN=$(echo "$OUT" | mbps)
    settle
    FIO_WN=$(fio_json --name=w --directory="$DIR" --rw=write --bs=1M --size=$((RECORDS / CORES))k \
        --numjobs="$CORES" --group_reporting --direct=1 --ioengine=psync --fdatasync=8 --end_fsync=1 \
        | field "j['write']['bw_bytes']/1e6")
    rm -f "$DIR"/w.*
    echo "fio sequential write, $CORES jobs: $FIO_WN MB/s"
    WN_PAIRS+=("$ENGINE_WN/$FIO_WN")
done

R_PAIRS=()
RN_PAIRS=()
C_PAIRS=()
for round in $(seq "$ROUNDS"); do
    echo "== 2. random reads at queue depth 32 (round $round of $ROUNDS)"
    OUT=$("$BIN" read "$DIR/engine" "$RECORDS" "$SECS"); echo "$OUT"
    ENGINE_R=$(echo "$OUT" | reads_per_s)
    FIO_R=$(fio_json --name=r --filename="$FILE" --rw=randread --bs=4k --iodepth=32 --direct=1 \
        --ioengine=io_uring --runtime="$SECS" --time_based | field "j['read']['iops']")
    echo "fio 4 KiB random read: $FIO_R IOPS"
    OUT=$(QD=$((32 / CORES * CORES)) "$BIN" read-shards "$DIR/engine-n" "$RECORDS" "$CORES" "$SECS"); echo "$OUT"
    ENGINE_RN=$(echo "$OUT" | reads_per_s)
    R_PAIRS+=("$ENGINE_R/$FIO_R")
    RN_PAIRS+=("$ENGINE_RN/$FIO_R")

    echo "== 3. cold start (round $round of $ROUNDS)"
    START=$(date +%s.%N)
    "$BIN" recover "$DIR/engine"
    END=$(date +%s.%N)
    FIO_T=$(fio_json --name=c --filename="$FILE" --rw=read --bs=1M --direct=1 --ioengine=psync \
        | field "j['read']['runtime']/1000")
    echo "fio sequential read of the same file: $FIO_T s"
    C_PAIRS+=("$(python3 -c "print($END - $START)")/$FIO_T")
done
rm -rf "$DIR/engine-n"

python3 - "$CORES" "${W_PAIRS[*]}" "${WN_PAIRS[*]}" "${R_PAIRS[*]}" "${RN_PAIRS[*]}" "${C_PAIRS[*]}" <<'PY'
import statistics
import sys
cores = int(sys.argv[1])
def ratios(pairs):
    return [float(a) / float(b) for a, b in (p.split("/") for p in pairs.split())]
w, wn, r, rn, c = (ratios(a) for a in sys.argv[2:7])
def show(rs):
    return f"{statistics.median(rs):.2f} median of " + " ".join(f"{x:.2f}" for x in rs)
print()
print(f"write throughput   engine/fio = {show(w)}   (target >= 0.85)")
print(f"  {cores} shards / {cores} fio jobs = {show(wn)}")
print(f"random reads QD32  engine/fio = {show(r)}   (target >= 0.80)")
print(f"  {cores} shards, QD32 in all / fio = {show(rn)}")
print(f"cold start time    engine/fio = {show(c)}   (target <= 1.50; engine time includes process start)")
PY
