#!/usr/bin/env bash
# Starts and stops an N-node Apogee cluster on loopback, for development.
#
#   scripts/cluster.sh start N DIR [BASE_PORT]   # node i: service BASE+10i, fabric +1, heartbeat +2
#   scripts/cluster.sh status DIR                # each node's cluster_size, cluster_key, principal
#   scripts/cluster.sh stop DIR                  # SIGTERM every node started under DIR, wait
#   scripts/cluster.sh kill DIR I                # SIGKILL node I (a crash)
#   scripts/cluster.sh restart DIR I             # start node I again, same data and ports
#
# Node i keeps its data under DIR/node-i (its node id in DIR/node-i/node-id, chosen on first
# start), logs to DIR/node-i.log, and its pid in DIR/node-i.pid. Every node seeds every other.
# APOGEE_BIN (default target/debug/apogee) and CORES (default 2), CLUSTER_NAME (default dev)
# and EXTRA_ARGS are passed through. BASE_PORT defaults to 3000 (Aerospike's ports).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${APOGEE_BIN:-target/debug/apogee}"
cores="${CORES:-2}"
name="${CLUSTER_NAME:-dev}"
# Bounded waits: a node that has not answered within this many seconds is reported.
ready_secs=30

usage() { sed -n '2,14p' "$0" >&2; exit 2; }

info() { # port command
    python3 - "$1" "$2" <<'PY'
import socket, struct, sys
port, cmd = int(sys.argv[1]), sys.argv[2] + "\n"
try:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(struct.pack(">Q", (2 << 56) | (1 << 48) | len(cmd)) + cmd.encode())
        head = b""
        while len(head) < 8:
            c = s.recv(8 - len(head))
            if not c: raise OSError("closed")
            head += c
        size = struct.unpack(">Q", head)[0] & 0xFFFFFFFFFFFF
        body = b""
        while len(body) < size:
            c = s.recv(size - len(body))
            if not c: raise OSError("closed")
            body += c
    print(body.decode().split("\t", 1)[1].strip())
except OSError:
    sys.exit(1)
PY
}

start_node() { # dir i n base
    local dir=$1 i=$2 n=$3 base=$4 seeds=() j
    for ((j = 0; j < n; j++)); do
        ((j == i)) || seeds+=(--mesh-seed-address-port "127.0.0.1:$((base + 10 * j + 2))")
    done
    mkdir -p "$dir/node-$i"
    # shellcheck disable=SC2086
    "$bin" --port $((base + 10 * i)) --fabric-port $((base + 10 * i + 1)) \
        --heartbeat-port $((base + 10 * i + 2)) --cores "$cores" --cluster-name "$name" \
        --data-dir "$dir/node-$i" "${seeds[@]}" ${EXTRA_ARGS:-} >>"$dir/node-$i.log" 2>&1 &
    echo $! >"$dir/node-$i.pid"
    echo "$n $base" >"$dir/cluster"
    local deadline=$((SECONDS + ready_secs))
    until info $((base + 10 * i)) node >/dev/null 2>&1; do
        if ! kill -0 "$(cat "$dir/node-$i.pid")" 2>/dev/null; then
            echo "node $i exited; see $dir/node-$i.log" >&2; return 1
        fi
        ((SECONDS < deadline)) || { echo "node $i not ready in ${ready_secs}s" >&2; return 1; }
        sleep 0.1
    done
    echo "node $i: service $((base + 10 * i)), heartbeat $((base + 10 * i + 2)), pid $(cat "$dir/node-$i.pid")"
}

cmd="${1:-}"; shift || true
case "$cmd" in
start)
    [[ $# -ge 2 ]] || usage
    n=$1 dir=$2 base=${3:-3000}
    [[ -x $bin ]] || { echo "build first: $bin is missing (cargo build -p apogee-server)" >&2; exit 1; }
    mkdir -p "$dir"
    for ((i = 0; i < n; i++)); do start_node "$dir" "$i" "$n" "$base"; done
    ;;
restart)
    [[ $# -eq 2 ]] || usage
    dir=$1 i=$2; read -r n base <"$dir/cluster"
    start_node "$dir" "$i" "$n" "$base"
    ;;
kill)
    [[ $# -eq 2 ]] || usage
    kill -KILL "$(cat "$1/node-$2.pid")" && echo "node $2 killed"
    ;;
status)
    [[ $# -eq 1 ]] || usage
    read -r n base <"$1/cluster"
    for ((i = 0; i < n; i++)); do
        port=$((base + 10 * i))
        if stats=$(info "$port" statistics); then
            echo "node $i ($(info "$port" node)): $(tr ';' '\n' <<<"$stats" |
                grep -E '^cluster_(size|key|principal|is_member)=' | tr '\n' ' ')"
        else
            echo "node $i: not answering on $port"
        fi
    done
    ;;
stop)
    [[ $# -eq 1 ]] || usage
    for pidfile in "$1"/node-*.pid; do
        [[ -e $pidfile ]] || continue
        pid=$(cat "$pidfile")
        if kill -TERM "$pid" 2>/dev/null; then
            for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -0 "$pid" 2>/dev/null && { echo "$pid did not stop in 30s; SIGKILL" >&2; kill -KILL "$pid"; }
        fi
        rm -f "$pidfile"
    done
    echo "stopped"
    ;;
*) usage ;;
esac
