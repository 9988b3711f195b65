#!/usr/bin/env bash
# Replication's cost: YCSB A against a 2-node cluster with replication-factor 2 and with 1,
# Apogee and Aerospike CE 8.1.2.0 (/work/shared/anchors/aerospike.sh) side by side, in
# alternated rounds (the side order reverses every other round). Each side of a round starts
# its 2 nodes on loopback, waits until the cluster is formed (cluster_size=2, cluster-stable
# answers a key, the nodes' master claims cover the 4096 partitions), loads RECORDS records with
# apogee-bench, runs YCSB A for SECS, and stops its nodes. apogee-bench runs with --route: it
# reads the partition map once and sends each get and put to its partition's master, as the
# official clients do (ROUTE=0: everything to the first node, which proxies the rest).
# Failed operations (CE answers 14, key busy, on the hottest zipfian keys) are counted and
# printed, not retried. Prints ops/s and server CPU per op (utime+stime of both nodes over the run phase) per round
# and side, and the ratios RF2/RF1 (Apogee, CE) and Apogee RF2 / CE RF2 per round and median.
#
#   bash bench/cluster_ycsb.sh
#   ROUNDS=3 SECS=8 RECORDS=100000 CONNS=32 CORES=2 BASE_PORT=7100 bash bench/cluster_ycsb.sh
#
# Apogee's `test` is storage-engine memory (like CE's `test`), or APOGEE_STORAGE=device (its
# data files, commit-to-device = false). Starts and stops only its own processes, by pid.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-8}
RECORDS=${RECORDS:-100000}
CONNS=${CONNS:-32}
CORES=${CORES:-$(nproc)}
BASE_PORT=${BASE_PORT:-7100}   # Apogee nodes BASE, BASE+10; CE nodes BASE+40, BASE+50
ROUTE=${ROUTE:-1}
CE=${CE:-/work/shared/anchors/aerospike.sh}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-$TARGET_DIR/release}
OUT=${OUT:-$TARGET_DIR/cluster-ycsb}
FORM_TIMEOUT_S=60
for b in "$BIN/apogee" "$BIN/apogee-bench"; do
    [ -x "$b" ] || { echo "$b is missing: cargo build --release -p apogee-server -p apogee-bench" >&2; exit 66; }
done
PROBE="python3 bench/cluster_probe.py"
AP_PORTS=("$BASE_PORT" $((BASE_PORT + 10)))
CE_PORTS=($((BASE_PORT + 40)) $((BASE_PORT + 50)))
export AS_HOME="$OUT/ce"   # CE nodes' config, logs and data: our own, never another run's

rm -rf "$OUT" && mkdir -p "$OUT"
ap_pids=()
ce_up=()
stop_all() {
    for p in "${ap_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${ap_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    ap_pids=()
    for port in "${ce_up[@]}"; do "$CE" stop "$port" >/dev/null 2>&1 || true; done
    ce_up=()
}
trap stop_all EXIT
. bench/lib.sh
for p in "${AP_PORTS[@]}" "${CE_PORTS[@]}"; do
    for q in $p $((p + 1)) $((p + 2)) $((p + 3)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$q") 2>/dev/null; then
            echo "port $q is already taken: pick another BASE_PORT" >&2; exit 1
        fi
    done
done

start_apogee() { # rf dir
    local rf=$1 dir=$2 i j seeds
    mkdir -p "$dir"
    case "${APOGEE_STORAGE:-memory}" in
    memory) printf '[namespace.test]\nreplication-factor = %s\nstorage-engine = "memory"\ndata-size = 4294967296\n' "$rf" ;;
    device) printf '[namespace.test]\nreplication-factor = %s\ncommit-to-device = false\n' "$rf" ;;
    *) echo "APOGEE_STORAGE must be memory or device" >&2; exit 64 ;;
    esac > "$dir/apogee.toml"
    for i in 0 1; do
        seeds=()
        for j in 0 1; do
            [ "$i" = "$j" ] || seeds+=(--mesh-seed-address-port "127.0.0.1:$((AP_PORTS[j] + 2))")
        done
        "$BIN/apogee" --port "${AP_PORTS[i]}" --fabric-port $((AP_PORTS[i] + 1)) \
            --heartbeat-port $((AP_PORTS[i] + 2)) --cores "$CORES" --cluster-name bench-ycsb \
            --data-dir "$dir/node-$i" --config "$dir/apogee.toml" "${seeds[@]}" \
            > /dev/null 2> "$dir/node-$i.log" &
        ap_pids+=($!)
    done
    for p in "${AP_PORTS[@]}"; do wait_port "$p"; done
    SERVER_PIDS=("${ap_pids[@]}"); SEED=${AP_PORTS[0]}; NODE_PORTS=("${AP_PORTS[@]}")
}

start_ce() { # rf dir
    local rf=$1
    AS_RF=$rf "$CE" start "${CE_PORTS[0]}" > "$2-start.log" 2>&1 || { cat "$2-start.log" >&2; exit 1; }
    ce_up+=("${CE_PORTS[0]}")
    AS_RF=$rf "$CE" start "${CE_PORTS[1]}" "${CE_PORTS[0]}" >> "$2-start.log" 2>&1 || { cat "$2-start.log" >&2; exit 1; }
    ce_up+=("${CE_PORTS[1]}")
    SERVER_PIDS=("$(cat "$AS_HOME/node-${CE_PORTS[0]}/asd.pid")" "$(cat "$AS_HOME/node-${CE_PORTS[1]}/asd.pid")")
    SEED=${CE_PORTS[0]}; NODE_PORTS=("${CE_PORTS[@]}")
}

cpu_ticks() { # utime + stime of every server pid, in clock ticks
    local t=0 p
    for p in "${SERVER_PIDS[@]}"; do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}

# Runs in this shell (never in $(...)), so the EXIT trap sees the pids; sets RATE and CPU_US.
one() { # side round
    local side=$1 round=$2 dir="$OUT/$1-$2" rf=${1##*-rf} route=()
    [ "$ROUTE" = 1 ] && route=(--route)
    case $side in
    apogee-*) start_apogee "$rf" "$dir" ;;
    ce-*) start_ce "$rf" "$dir" ;;
    esac
    FORMED_S=$($PROBE wait-formed 2 "$FORM_TIMEOUT_S" "${NODE_PORTS[@]}")
    "$BIN/apogee-bench" run --target aerospike --port "$SEED" --records "$RECORDS" --phase load \
        --connections "$CONNS" "${route[@]}" > "$dir-load.txt" 2> "$dir-load.err" ||
        { echo "$side: the load failed:" >&2; cat "$dir-load.txt" "$dir-load.err" >&2; exit 1; }
    local t0 t1
    t0=$(cpu_ticks)
    "$BIN/apogee-bench" run --target aerospike --port "$SEED" --records "$RECORDS" --phase run \
        --workload A --connections "$CONNS" --duration-secs "$SECS" "${route[@]}" \
        --json "$dir.json" > "$dir.txt" 2> "$dir.err" || true   # exits 1 on any failed op
    t1=$(cpu_ticks)
    [ -s "$dir.json" ] || { echo "$side: the run phase failed:" >&2; cat "$dir.err" >&2; exit 1; }
    # Objects per node (RF 2: every node holds every record) and requests a node proxied to
    # another (client_proxy_complete: Apogee in `statistics`, CE per namespace): 0 when the
    # load generator sent each request to its master.
    OBJECTS="" PROXIED=0
    local p n
    for p in "${NODE_PORTS[@]}"; do
        OBJECTS+="$($PROBE info "$p" namespace/test | tr ';' '\n' | sed -n 's/^objects=//p') "
        for n in $({ $PROBE info "$p" statistics; $PROBE info "$p" namespace/test; } |
                   tr ';' '\n' | sed -n 's/^client_proxy_complete=//p'); do
            PROXIED=$((PROXIED + n))
        done
    done
    stop_all
    read -r RATE CPU_US ERRS < <(python3 - "$dir.json" "$t0" "$t1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))[-1]
ops = r["ops_per_sec"] * r["elapsed_secs"]
cpu_s = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
print(round(r["ops_per_sec"]), f"{cpu_s / max(ops, 1) * 1e6:.1f}", r["errors"] if isinstance(r["errors"], int) else sum(e["count"] for e in r["errors"]))
PY
)
    echo "  $side: $RATE ops/s, server CPU $CPU_US us/op, errors $ERRS, formed in ${FORMED_S}s," \
         "objects per node ${OBJECTS% }, proxied $PROXIED; $(grep -h '^routing' "$dir.err" | sed 's/, unclaimed/; unclaimed/' || echo 'not routed')"
}

SIDES=(apogee-rf2 apogee-rf1 ce-rf2 ce-rf1)
echo "cluster_ycsb: YCSB A, 2 nodes each, $RECORDS records, $CONNS connections, $SECS s per run," \
     "$ROUNDS rounds, Apogee --cores $CORES storage ${APOGEE_STORAGE:-memory}, route $ROUTE," \
     "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
rows=()
for r in $(seq 1 "$ROUNDS"); do
    order=("${SIDES[@]}")
    [ $((r % 2)) -eq 0 ] && order=(ce-rf1 ce-rf2 apogee-rf1 apogee-rf2)
    echo "round $r: ${order[*]}"
    declare -A rate=() cpu=()
    for s in "${order[@]}"; do one "$s" "$r"; rate[$s]=$RATE; cpu[$s]=$CPU_US; done
    rows+=("$r ${rate[apogee-rf2]} ${rate[apogee-rf1]} ${rate[ce-rf2]} ${rate[ce-rf1]} ${cpu[apogee-rf2]} ${cpu[apogee-rf1]} ${cpu[ce-rf2]} ${cpu[ce-rf1]}")
done
python3 - "${rows[@]}" <<'PY'
import statistics, sys
rows = [list(map(float, a.split())) for a in sys.argv[1:]]
print("\nround  apogee-rf2  apogee-rf1  ce-rf2  ce-rf1 (ops/s) | server CPU us/op: ap-rf2 ap-rf1 ce-rf2 ce-rf1")
for r in rows:
    print(f"{int(r[0]):>5} {r[1]:>11.0f} {r[2]:>11.0f} {r[3]:>7.0f} {r[4]:>7.0f}       | {r[5]:>6.1f} {r[6]:>6.1f} {r[7]:>6.1f} {r[8]:>6.1f}")
ratios = {
    "apogee RF2/RF1 ops/s": [r[1] / r[2] for r in rows],
    "CE RF2/RF1 ops/s": [r[3] / r[4] for r in rows],
    "apogee RF2 / CE RF2 ops/s": [r[1] / r[3] for r in rows],
    "apogee RF1 / CE RF1 ops/s": [r[2] / r[4] for r in rows],
    "apogee RF2/RF1 CPU per op": [r[5] / r[6] for r in rows],
    "CE RF2/RF1 CPU per op": [r[7] / r[8] for r in rows],
    "apogee RF2 / CE RF2 CPU per op": [r[5] / r[7] for r in rows],
}
print()
for k, v in ratios.items():
    print(f"{k:<32} per round {' '.join(f'{x:.2f}' for x in v)}  median {statistics.median(v):.2f}")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
