#!/usr/bin/env bash
# Server CPU per call of a record UDF and of the equivalent operate under concurrent clients,
# side by side in one run (issue 20): Apogee (release build, `storage-engine memory`, all
# cores), optionally Apogee on one core (ONE_CORE=1), and Aerospike CE 8.1.2.0 from
# /work/shared/anchors/aerospike.sh when it is there (NO_CE=1 leaves it out; its `test` is in
# memory too). Rounds alternate the servers (reversed every other round) under the same load:
# CLIENTS processes of bench/udf_load.py, each calling back to back for SECS seconds. Each line
# gives calls/s, the server process's CPU per call, and its context switches per call.
#
#   bash bench/udf_cpu.sh                      # KINDS="udf operate" CLIENTS=8 SECS=5 ROUNDS=2
#   ONE_CORE=1 bash bench/udf_cpu.sh
#   SERVER_CPUS=0-7 CLIENT_CPUS=8-15 bash bench/udf_cpu.sh   # servers and clients on CPUs of
#                                              # their own (Apogee: --cores 8 on CPUs 0-7)
#
# On a 2-CPU machine the clients take most of the CPU, so CPU per call is the comparable
# figure; calls/s is printed beside it. Ports: 3450 (Apogee), 3451 (one core), 3460..3463
# (CE); stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

KINDS=${KINDS:-udf operate}
CLIENTS=${CLIENTS:-8}
SECS=${SECS:-5}
ROUNDS=${ROUNDS:-2}
CE=${CE:-/work/shared/anchors/aerospike.sh}
PY=${PY:-.venv/bin/python}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OUT=${OUT:-$TARGET_DIR/udf-cpu}

cargo build --release -q -p apogee-server
rm -rf "$OUT" && mkdir -p "$OUT"
printf '[namespace.test]\nstorage-engine = "memory"\ndata-size = 1073741824\n' > "$OUT/a.toml"

. bench/lib.sh
pids=()
ce_started=""
trap stop_started EXIT

# With SERVER_CPUS the servers run on those CPUs only (Apogee one core per CPU, pinned to
# CPUs 0.. of the machine, so the list must start at 0 and be contiguous) and the clients on
# CLIENT_CPUS.
server=()
cores=$(nproc)
if [ -n "${SERVER_CPUS:-}" ]; then
    server=(taskset -c "$SERVER_CPUS")
    cores=$(taskset -c "$SERVER_CPUS" nproc)
    allowed=$(taskset -c "$SERVER_CPUS" sh -c 'sed -n "s/^Cpus_allowed_list:\t//p" /proc/self/status')
    case "$allowed" in
        0 | "0-$((cores - 1))") ;;
        *) echo "SERVER_CPUS must be 0 or 0-N (Apogee pins core k to CPU k), not $allowed" >&2
           exit 1 ;;
    esac
fi
names=(); ports=(); spids=()
start_apogee() { # name port cores
    "${server[@]}" "$TARGET_DIR/release/apogee" --port "$2" --cores "$3" \
        --data-dir "$OUT/$1-data" --config "$OUT/a.toml" > /dev/null 2> "$OUT/$1.log" &
    pids+=($!); spids+=($!); names+=("$1"); ports+=("$2"); wait_port "$2"
}
start_apogee apogee 3450 "$cores"
if [ -n "${ONE_CORE:-}" ]; then start_apogee apogee-1core 3451 1; fi
if [ -z "${NO_CE:-}" ] && [ -x "$CE" ]; then
    ce_started=3460
    "${server[@]}" "$CE" start 3460 > "$OUT/ce-start.log" 2>&1
    spids+=("$(listener_pid 3460)"); names+=(aerospike-ce); ports+=(3460)
fi
for i in "${!names[@]}"; do
    "$PY" bench/udf_load.py --port "${ports[$i]}" --pid "${spids[$i]}" --setup
done

clients=("$PY")
if [ -n "${CLIENT_CPUS:-}" ]; then clients=(taskset -c "$CLIENT_CPUS" "$PY"); fi
echo "udf-cpu: $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD)," \
     "$CLIENTS clients${CLIENT_CPUS:+ on CPUs $CLIENT_CPUS}${SERVER_CPUS:+, servers on CPUs $SERVER_CPUS}," \
     "$SECS s per phase, $(nproc) CPUs," \
     "load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
    order=$(seq 0 $((${#names[@]} - 1)))
    if [ $((r % 2)) = 0 ]; then order=$(echo "$order" | tac); fi
    for kind in $KINDS; do
        for i in $order; do
            echo "round $r ${names[$i]}: $("${clients[@]}" bench/udf_load.py --port "${ports[$i]}" \
                --pid "${spids[$i]}" --kind "$kind" --clients "$CLIENTS" --secs "$SECS")"
        done
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
