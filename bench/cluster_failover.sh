#!/usr/bin/env bash
# Time from a node's death to every partition being served again: a 3-node cluster with
# replication-factor 2 on loopback, RECORDS records loaded with apogee-bench (--route), then one
# node (KILL_NODE, default the last) is SIGKILLed and bench/cluster_probe.py polls the two
# survivors' `replicas` every ~20 ms until the union of their master (column-0) claims covers
# all 4096 partitions, then batch-reads every loaded key from the node claiming its partition
# until one sweep finds them all. Prints both times, measured from the SIGKILL. Runs Apogee
# (its defaults) and then Aerospike CE 8.1.2.0 (/work/shared/anchors/aerospike.sh: heartbeat
# interval 150 ms, timeout 10) in turn, ROUNDS times each.
#
#   bash bench/cluster_failover.sh
#   ROUNDS=2 RECORDS=20000 KILL_NODE=2 CORES=2 BASE_PORT=7100 bash bench/cluster_failover.sh
#
# Starts and stops only its own processes, by pid; the data of every node is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
RECORDS=${RECORDS:-20000}
KILL_NODE=${KILL_NODE:-2}
CORES=${CORES:-$(nproc)}
BASE_PORT=${BASE_PORT:-7100}   # Apogee nodes BASE, +10, +20; CE nodes BASE+40, +50, +60
CE=${CE:-/work/shared/anchors/aerospike.sh}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-$TARGET_DIR/release}
OUT=${OUT:-$TARGET_DIR/cluster-failover}
FORM_TIMEOUT_S=60
SERVED_TIMEOUT_S=30
for b in "$BIN/apogee" "$BIN/apogee-bench"; do
    [ -x "$b" ] || { echo "$b is missing: cargo build --release -p apogee-server -p apogee-bench" >&2; exit 66; }
done
PROBE="python3 bench/cluster_probe.py"
AP_PORTS=("$BASE_PORT" $((BASE_PORT + 10)) $((BASE_PORT + 20)))
CE_PORTS=($((BASE_PORT + 40)) $((BASE_PORT + 50)) $((BASE_PORT + 60)))
export AS_HOME="$OUT/ce"

rm -rf "$OUT" && mkdir -p "$OUT"
ap_pids=()
ce_up=()
stop_all() {
    for p in "${ap_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${ap_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    ap_pids=()
    # `stop` signals the pid in the node's own pid file (ours) and removes the node's data.
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

start_apogee() { # dir
    local dir=$1 i j seeds
    mkdir -p "$dir"
    printf '[namespace.test]\nreplication-factor = 2\nstorage-engine = "memory"\ndata-size = 1073741824\n' \
        > "$dir/apogee.toml"
    for i in 0 1 2; do
        seeds=()
        for j in 0 1 2; do
            [ "$i" = "$j" ] || seeds+=(--mesh-seed-address-port "127.0.0.1:$((AP_PORTS[j] + 2))")
        done
        "$BIN/apogee" --port "${AP_PORTS[i]}" --fabric-port $((AP_PORTS[i] + 1)) \
            --heartbeat-port $((AP_PORTS[i] + 2)) --cores "$CORES" --cluster-name bench-failover \
            --data-dir "$dir/node-$i" --config "$dir/apogee.toml" "${seeds[@]}" \
            > /dev/null 2> "$dir/node-$i.log" &
        ap_pids+=($!)
    done
    for p in "${AP_PORTS[@]}"; do wait_port "$p"; done
    SERVER_PIDS=("${ap_pids[@]}"); NODE_PORTS=("${AP_PORTS[@]}")
}

start_ce() { # dir
    AS_RF=2 "$CE" start "${CE_PORTS[0]}" > "$1-start.log" 2>&1 || { cat "$1-start.log" >&2; exit 1; }
    ce_up+=("${CE_PORTS[0]}")
    AS_RF=2 "$CE" start "${CE_PORTS[1]}" "${CE_PORTS[0]}" >> "$1-start.log" 2>&1 || { cat "$1-start.log" >&2; exit 1; }
    ce_up+=("${CE_PORTS[1]}")
    AS_RF=2 "$CE" start "${CE_PORTS[2]}" "${CE_PORTS[0]}" "${CE_PORTS[1]}" >> "$1-start.log" 2>&1 || { cat "$1-start.log" >&2; exit 1; }
    ce_up+=("${CE_PORTS[2]}")
    SERVER_PIDS=()
    for p in "${CE_PORTS[@]}"; do SERVER_PIDS+=("$(cat "$AS_HOME/node-$p/asd.pid")"); done
    NODE_PORTS=("${CE_PORTS[@]}")
}

one() { # side round
    local side=$1 round=$2 dir="$OUT/$1-$2" survivors=() i
    case $side in
    apogee) start_apogee "$dir" ;;
    ce) start_ce "$dir" ;;
    esac
    $PROBE wait-formed 3 "$FORM_TIMEOUT_S" "${NODE_PORTS[@]}" > /dev/null
    "$BIN/apogee-bench" run --target aerospike --port "${NODE_PORTS[0]}" --records "$RECORDS" \
        --phase load --connections 16 --bins 1 --bin-bytes 100 --route \
        > "$dir-load.txt" 2> "$dir-load.err"
    for i in 0 1 2; do [ "$i" = "$KILL_NODE" ] || survivors+=("${NODE_PORTS[i]}"); done
    local victim=${SERVER_PIDS[KILL_NODE]} result
    result=$($PROBE failover "$victim" "$RECORDS" "$SERVED_TIMEOUT_S" "${survivors[@]}") ||
        result="FAILED: not served within ${SERVED_TIMEOUT_S}s"
    echo "  $side: node $KILL_NODE (port ${NODE_PORTS[KILL_NODE]}) SIGKILLed: $result"
    # The victim is dead; reap it (Apogee) or let `stop` find its pid gone (CE).
    stop_all
}

echo "cluster_failover: 3 nodes, replication-factor 2, $RECORDS records, SIGKILL of node $KILL_NODE," \
     "$ROUNDS rounds, Apogee --cores $CORES, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs," \
     "load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r"
    one apogee "$r"
    one ce "$r"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
