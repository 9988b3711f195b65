#!/usr/bin/env bash
# What a cross-core hop costs (issues 18 and 20), on Apogee alone: bench/hop_cost.py's
# sequential client, pinned to each CPU in turn, over records its connection's core owns and
# records the next core owns; ROUNDS rounds. Release build, `storage-engine memory`, all cores.
#
#   bash bench/hop_cost.sh                      # KIND=operate SECS=4 ROUNDS=2 CLIENT_CPUS=0,1
#
# Port 3470; stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

KIND=${KIND:-operate}
SECS=${SECS:-4}
ROUNDS=${ROUNDS:-2}
CLIENT_CPUS=${CLIENT_CPUS:-0,1}
PY=${PY:-.venv/bin/python}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET_DIR/hop-cost}

cargo build --release -q -p apogee-server
rm -rf "$OUT" && mkdir -p "$OUT"
printf '[namespace.test]\nstorage-engine = "memory"\ndata-size = 1073741824\n' > "$OUT/a.toml"
. bench/lib.sh
cores=$(nproc)
"$TARGET_DIR/release/apogee" --port 3470 --cores "$cores" --data-dir "$OUT/data" \
    --config "$OUT/a.toml" > /dev/null 2> "$OUT/apogee.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
wait_port 3470

echo "hop-cost: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)," \
     "$KIND, $SECS s per measurement, $cores cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
    "$PY" bench/hop_cost.py --port 3470 --pid "$pid" --cores "$cores" --kind "$KIND" \
        --secs "$SECS" --client-cpus "$CLIENT_CPUS" | sed "s/^/round $r: /"
done
