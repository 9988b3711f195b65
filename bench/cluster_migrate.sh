#!/usr/bin/env bash
# Migration rate against the node's own scan rate (issue 17): Apogee and Aerospike CE 8.1.2.0
# (/work/shared/anchors/aerospike.sh) side by side, the side order reversed every other round.
# Each side of a round starts 2 nodes on loopback with replication-factor 2, waits until the
# cluster is formed, loads RECORDS records of one 100-byte bin with apogee-bench (--route), and
# times SCANS full scans of node 0 after one uncounted one (`apogee-bench full-scan`: all 4096
# partitions listed; an Apogee node answers the partitions it masters, a CE node every partition
# it holds in full). Both sides have namespaces `test` (the records) and `bar` (empty), as the
# CE anchor has. Then bench/cluster_migrate.py runs a light client load (RATE requests/s, half
# gets, half puts, each to its partition's master, never retried) for BEFORE_S seconds, the
# script starts a third node, and the probe times from the join (cluster_size 3 seen) until
# every node reports migrate_partitions_remaining=0 (both namespaces; namespace test's own end
# is printed too). Migration rate: records received (migrate_record_receives, summed over the
# nodes) / those seconds; two nodes send at once, so the rate per sending node is printed too.
# Prints per round and side the scan rate (median and best), the migration, migrate/scan, the
# client latency p50/p99 during migration over before, and the client requests that failed
# while the node joined and while migrating, by request and result code; then the medians.
#
#   BASE_PORT=8300 bash bench/cluster_migrate.sh        # about 3 minutes
#   ROUNDS=2 RECORDS=200000 SCANS=7 RATE=1000 BEFORE_S=5 CORES=2 BASE_PORT=7100 bash bench/cluster_migrate.sh
#
# Apogee's namespaces are storage-engine memory (CE's `test` is memory, its empty `bar` a file).
# Starts and stops only its own processes, by pid; logs and each step's output stay in $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
RECORDS=${RECORDS:-200000}
SCANS=${SCANS:-7}
RATE=${RATE:-1000}
BEFORE_S=${BEFORE_S:-5}
CORES=${CORES:-$(nproc)}
BASE_PORT=${BASE_PORT:-7100}   # Apogee nodes BASE, +10, +20; CE nodes BASE+40, +50, +60
CE=${CE:-/work/shared/anchors/aerospike.sh}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=${BIN:-$TARGET_DIR/release}
OUT=${OUT:-$TARGET_DIR/cluster-migrate}
FORM_TIMEOUT_S=60
MIGRATE_TIMEOUT_S=${MIGRATE_TIMEOUT_S:-180}
for b in "$BIN/apogee" "$BIN/apogee-bench"; do
    [ -x "$b" ] || { echo "$b is missing: cargo build --release -p apogee-server -p apogee-bench" >&2; exit 66; }
done
PROBE="python3 bench/cluster_probe.py"
AP_PORTS=("$BASE_PORT" $((BASE_PORT + 10)) $((BASE_PORT + 20)))
CE_PORTS=($((BASE_PORT + 40)) $((BASE_PORT + 50)) $((BASE_PORT + 60)))
export AS_HOME="$OUT/ce"   # CE nodes' config, logs and data: our own, never another run's

ap_pids=()
ce_up=()
probe_pid=""
stop_all() {
    [ -n "$probe_pid" ] && { kill "$probe_pid" 2>/dev/null || true; wait "$probe_pid" 2>/dev/null || true; }
    probe_pid=""
    for p in "${ap_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${ap_pids[@]}"; do wait "$p" 2>/dev/null || true; done
    ap_pids=()
    # `stop` signals the pid in the node's own pid file (ours) and removes the node's data.
    for port in "${ce_up[@]}"; do "$CE" stop "$port" >/dev/null 2>&1 || true; done
    ce_up=()
}
trap stop_all EXIT
. bench/lib.sh
ports_free() { # service port: it and the node's other 3 ports must be free (checked before every
               # start: another session may take them between rounds, and a load sent there is not ours)
    local q
    for q in $1 $(($1 + 1)) $(($1 + 2)) $(($1 + 3)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$q") 2>/dev/null; then
            echo "port $q is already taken: pick another BASE_PORT" >&2; exit 1
        fi
    done
}
for p in "${AP_PORTS[@]}" "${CE_PORTS[@]}"; do ports_free "$p"; done
rm -rf "$OUT" && mkdir -p "$OUT"

start_apogee_node() { # dir index seed-index...
    local dir=$1 i=$2 j seeds=()
    shift 2
    for j in "$@"; do seeds+=(--mesh-seed-address-port "127.0.0.1:$((AP_PORTS[j] + 2))"); done
    ports_free "${AP_PORTS[i]}"
    "$BIN/apogee" --port "${AP_PORTS[i]}" --fabric-port $((AP_PORTS[i] + 1)) \
        --heartbeat-port $((AP_PORTS[i] + 2)) --cores "$CORES" --cluster-name bench-migrate \
        --data-dir "$dir/node-$i" --config "$dir/apogee.toml" "${seeds[@]}" \
        > /dev/null 2> "$dir/node-$i.log" &
    ap_pids+=($!)
    wait_port "${AP_PORTS[i]}"
}

start_ce_node() { # dir index seed-index...
    local dir=$1 i=$2 j seeds=()
    shift 2
    for j in "$@"; do seeds+=("${CE_PORTS[j]}"); done
    ports_free "${CE_PORTS[i]}"
    ce_up+=("${CE_PORTS[i]}")   # first: `stop` also ends a node whose start failed
    AS_RF=2 "$CE" start "${CE_PORTS[i]}" "${seeds[@]}" >> "$dir/start.log" 2>&1 ||
        { cat "$dir/start.log" >&2; exit 1; }
}

# Runs in this shell (never in $(...)), so the EXIT trap sees the pids; sets ROW.
one() { # side round
    local side=$1 round=$2 dir="$OUT/$1-$2" start i scans=() s n
    mkdir -p "$dir"
    case $side in
    apogee)
        # `bar` as CE's (the anchor's second namespace, empty here): both sides migrate the
        # same partitions.
        printf '[namespace.%s]\nreplication-factor = 2\nstorage-engine = "memory"\ndata-size = 1073741824\n' \
            test bar > "$dir/apogee.toml"
        start=start_apogee_node; NODE_PORTS=("${AP_PORTS[@]}") ;;
    ce) start=start_ce_node; NODE_PORTS=("${CE_PORTS[@]}") ;;
    esac
    $start "$dir" 0
    $start "$dir" 1 0
    $PROBE wait-formed 2 "$FORM_TIMEOUT_S" "${NODE_PORTS[0]}" "${NODE_PORTS[1]}" > /dev/null
    "$BIN/apogee-bench" run --target aerospike --port "${NODE_PORTS[0]}" --records "$RECORDS" \
        --phase load --connections 16 --bins 1 --bin-bytes 100 --route \
        > "$dir/load.txt" 2> "$dir/load.err" ||
        { echo "$side: the load failed:" >&2; cat "$dir/load.txt" "$dir/load.err" >&2; exit 1; }
    # One scan first, not counted: the nodes finish the load's background work meanwhile
    # (the first scan after a load runs several times slower).
    "$BIN/apogee-bench" full-scan --port "${NODE_PORTS[0]}" > "$dir/scan-warm.txt"
    for i in $(seq 1 "$SCANS"); do
        s=$("$BIN/apogee-bench" full-scan --port "${NODE_PORTS[0]}")
        echo "$s" >> "$dir/scan.txt"
        scans+=("$(echo "$s" | sed -E 's/.*: ([0-9.]+) records\/s.*/\1/')")
        n=$(echo "$s" | sed -E 's/full-scan: ([0-9]+) records.*/\1/')
    done
    local parts
    parts=$(sed -nE '$s/.*partitions scanned ([0-9]+).*/\1/p' "$dir/scan.txt")
    rm -f "$dir/joined"
    python3 bench/cluster_migrate.py migrate "$RECORDS" "$RATE" "$BEFORE_S" "$MIGRATE_TIMEOUT_S" \
        "$dir/joined" "${NODE_PORTS[2]}" "${NODE_PORTS[0]}" "${NODE_PORTS[1]}" \
        > "$dir/migrate.json" 2> "$dir/migrate.err" &
    probe_pid=$!
    while [ ! -e "$dir/joined" ]; do
        kill -0 "$probe_pid" 2>/dev/null || { cat "$dir/migrate.err" >&2; exit 1; }
        sleep 0.05
    done
    $start "$dir" 2 0 1
    wait "$probe_pid" || { probe_pid=""; echo "$side: the migration probe failed:" >&2; cat "$dir/migrate.err" >&2; exit 1; }
    probe_pid=""
    stop_all
    ROW=$(python3 - "$side" "$round" "$n" "$parts" "$dir/migrate.json" "${scans[@]}" <<'PY'
import json, statistics, sys
side, rnd, n, parts, path, scans = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]
m = json.load(open(path))
b, d = m["before"], m["during"]
scan = statistics.median(float(x) for x in scans)
row = {
    "side": side, "round": int(rnd), "scan_records": int(n), "scan_partitions": int(parts),
    "scan_rate": scan, "scan_rates": [float(x) for x in scans],
    "migrated": m["records_received"], "transmitted": m["records_transmitted"],
    "secs": m["join_to_done_s"], "join_s": m["start_to_join_s"], "test_secs": m["join_to_test_done_s"],
    "rate": m["migrate_records_per_s"], "per_sender": m["per_sender_records_per_s"],
    "ratio": m["migrate_records_per_s"] / scan, "per_sender_ratio": m["per_sender_records_per_s"] / scan,
    "before": b, "during": d, "joining": m["joining"],
    "p50x": d["p50_ms"] / b["p50_ms"], "p99x": d["p99_ms"] / b["p99_ms"],
    "objects_after": m["objects_after"],
    "proxied": m["proxied"], "proxy_errors": m["proxy_errors"],
}
print(json.dumps(row))
PY
)
    python3 - "$ROW" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
b, d = r["before"], r["during"]
print(f"  {r['side']}: scan {r['scan_rate']:.0f} records/s (median of {len(r['scan_rates'])}, max {max(r['scan_rates']):.0f}: "
      f"{' '.join(f'{x:.0f}' for x in r['scan_rates'])}; {r['scan_records']} records, "
      f"{r['scan_partitions']} partitions); joined {r['join_s']:.2f} s after the start, migrated "
      f"{r['migrated']} records (sent {r['transmitted']}) in {r['secs']:.2f} s (namespace test done at {r['test_secs']:.2f} s): {r['rate']} records/s, "
      f"{r['per_sender']} per sending node; migrate/scan {r['ratio']:.4f} (per sender {r['per_sender_ratio']:.4f}); "
      f"objects after {r['objects_after']}")
print(f"    client: before {b['requests']} requests p50 {b['p50_ms']} ms p99 {b['p99_ms']} ms errors {b['errors']};"
      f" during {d['requests']} p50 {d['p50_ms']} ms p99 {d['p99_ms']} ms max {d['max_ms']} ms errors {d['errors']}"
      f" (p50 x{r['p50x']:.2f}, p99 x{r['p99x']:.2f}); while joining: {r['joining']['requests']} errors {r['joining']['errors']};"
      f" proxied {r['proxied']}, proxy errors {r['proxy_errors']}")
PY
}

machine() { # load average and the share of time some task waited on IO (PSI, last 60 s)
    echo "load average $(cut -d' ' -f1-3 /proc/loadavg), IO pressure some avg60" \
        "$(sed -nE 's/^some avg10=[0-9.]+ avg60=([0-9.]+).*/\1/p' /proc/pressure/io 2>/dev/null || echo '?')%"
}
echo "cluster_migrate: 2 nodes + 1 joining, replication-factor 2, $RECORDS records, $SCANS scans," \
     "client load $RATE/s, $ROUNDS rounds, Apogee --cores $CORES, $(date -u '+%Y-%m-%d %H:%M UTC')," \
     "$(nproc) CPUs, $(machine)"
rows=()
for r in $(seq 1 "$ROUNDS"); do
    order=(apogee ce)
    [ $((r % 2)) -eq 0 ] && order=(ce apogee)
    echo "round $r: ${order[*]} ($(machine))"
    for s in "${order[@]}"; do one "$s" "$r"; rows+=("$ROW"); done
done
python3 - "${rows[@]}" <<'PY'
import json, statistics, sys
rows = [json.loads(a) for a in sys.argv[1:]]
med = lambda side, k: statistics.median(r[k] for r in rows if r["side"] == side)
print("\nside    round  scan rec/s  migrated  secs   migrate rec/s  migrate/scan  p50 x  p99 x  failed: joining | migrating (by code)")
for r in rows:
    j, d = r["joining"], r["during"]
    print(f"{r['side']:<7} {r['round']:>5} {r['scan_rate']:>11.0f} {r['migrated']:>9} {r['secs']:>6.2f} "
          f"{r['rate']:>14} {r['ratio']:>13.4f} {r['p50x']:>6.2f} {r['p99x']:>6.2f}  "
          f"{sum(j['errors'].values())}/{j['requests']} {j['errors']} | "
          f"{sum(d['errors'].values())}/{d['requests']} {d['errors']}; proxied {r['proxied']} ({r['proxy_errors']} failed)")
print()
for side in ("apogee", "ce"):
    print(f"{side:<7} median: scan {med(side, 'scan_rate'):.0f} rec/s, migrate {med(side, 'rate'):.0f} rec/s "
          f"in {med(side, 'secs'):.2f} s, migrate/scan {med(side, 'ratio'):.4f}, "
          f"p50 x{med(side, 'p50x'):.2f}, p99 x{med(side, 'p99x'):.2f}; against the best scan of each round "
          f"{statistics.median(r['rate'] / max(r['scan_rates']) for r in rows if r['side'] == side):.4f}")
print(f"apogee/CE migrate rec/s: {med('apogee', 'rate') / med('ce', 'rate'):.2f}; "
      f"apogee/CE migrate/scan: {med('apogee', 'ratio') / med('ce', 'ratio'):.2f}")
PY
echo "after: $(machine)"
