#!/usr/bin/env bash
# Defragmentation soak (issue 4): overwrite a fixed key set for SOAK_SECONDS (default 20) with
# the default defrag-lwm-pct (50) and with defragmentation all but off (1), side by side in one
# run, then print writes, bytes written against the data files' size, the files' size after,
# update latency percentiles, and check that every record reads back its latest value.
#
#     bash bench/defrag_soak.sh            # about 1 minute on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${SOAK_SECONDS:-20}"
records="${SOAK_RECORDS:-20000}"
port="${SOAK_PORT:-3301}"
cargo build --release --bins --quiet
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/pip install --quiet -r tests/python/requirements.txt; }
work="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

for lwm in 50 1; do
    cat > "$work/c.toml" <<TOML
[namespace.test]
write-block-size = 131072
commit-to-device = false
defrag-lwm-pct = $lwm
TOML
    rm -rf "$work/data"
    target/release/apogee --port "$port" --cores 2 --data-dir "$work/data" --config "$work/c.toml" 2>"$work/log-$lwm" &
    pid=$!
    for _ in $(seq 100); do
        target/release/apogee-info --port "$port" node >/dev/null 2>&1 && break
        sleep 0.1
    done
    target/release/apogee-bench run --port "$port" --records "$records" --phase load \
        --connections 16 >/dev/null
    target/release/apogee-bench run --port "$port" --records "$records" --phase run --read-pct 0 \
        --distribution uniform --connections 16 --duration-secs "$seconds" --json "$work/run-$lwm.json" >/dev/null
    du -sb "$work/data/test" | cut -f1 > "$work/bytes-$lwm"
    # Every record must read back with the values the load and the updates wrote.
    .venv/bin/python - "$port" "$records" <<'PY'
import sys, aerospike
port, records = int(sys.argv[1]), int(sys.argv[2])
c = aerospike.client({"hosts": [("127.0.0.1", port)]}).connect()
def field(i, f, n=100):
    seed = i * 31 + f
    return "".join(chr(ord("a") + (seed + j) % 26) for j in range(n))
bad = 0
for i in range(records):
    _, _, bins = c.get(("test", "usertable", f"user{i}"))
    if any(bins.get(f"field{f}") != field(i, f) for f in range(10)):
        bad += 1
print(f"verified {records} records, {bad} wrong")
sys.exit(1 if bad else 0)
PY
    kill "$pid"; wait "$pid" || true; pid=""
done

python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
print("| lwm | updates | bytes written (approx.) | data files after | update p50 / p99 / p99.9 |")
print("|---|---|---|---|---|")
p99 = {}
for lwm in ("50", "1"):
    run = [r for r in json.load(open(f"{work}/run-{lwm}.json")) if r["title"] != "load"][0]
    up = [o for o in run["ops"] if o["op"] == "update"][0]
    size = int(open(f"{work}/bytes-{lwm}").read())
    written = up["count"] * 1100  # one ~1.1 KB record version per update
    p99[lwm] = up["p99_us"]
    print(f"| {lwm} % | {up['count']:,} | {written/1e6:,.0f} MB ({written/size:.0f}x the files) | "
          f"{size/1e6:.1f} MB | {up['p50_us']} / {up['p99_us']} / {up['p999_us']} us |")
print(f"p99 with defragmentation / p99 with it nearly off: {p99['50']/p99['1']:.2f} (target <= 2)")
PY
