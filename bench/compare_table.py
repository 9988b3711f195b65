"""Prints the comparison table from the JSON reports bench/compare.sh leaves in its output
directory: throughput and p50/p99 per target and workload, and the ratios Apogee / Redis and
Apogee / null server."""

import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
targets = ["apogee", "redis", "null", "apogee-durable"]
runs = ["load", "A", "B", "C", "get", "put"]


def load(target, run):
    p = out / f"{target}-{run}.json"
    if not p.exists():
        return None
    report = json.loads(p.read_text())[-1]
    ops = report["ops"]
    worst = lambda key: max((o[key] for o in ops), default=0)
    errors = sum(e["count"] for e in report["errors"])
    return {"ops": report["ops_per_sec"], "p50": worst("p50_us"), "p99": worst("p99_us"),
            "errors": errors}


print(f"{'run':<5} {'target':<15} {'ops/s':>10} {'p50 us':>8} {'p99 us':>8} {'errors':>7}")
for run in runs:
    for t in targets:
        r = load(t, run)
        if r:
            print(f"{run:<5} {t:<15} {r['ops']:>10.0f} {r['p50']:>8} {r['p99']:>8} {r['errors']:>7}")
print()
print(f"{'run':<5} {'apogee/redis':>13} {'apogee/null':>12} {'durable/redis':>14}")
for run in runs:
    a, r, n, d = (load(t, run) for t in targets)
    ratio = lambda x, y: f"{x['ops'] / y['ops']:.2f}" if x and y and y["ops"] else "-"
    print(f"{run:<5} {ratio(a, r):>13} {ratio(a, n):>12} {ratio(d, r):>14}")

half = load("apogee", "halfB")
if half:
    print()
    print(f"apogee, workload B open loop at half its peak ({half['ops']:.0f} ops/s): "
          f"p50 {half['p50']} us, p99 {half['p99']} us (target: p99 <= 1000 us)")
