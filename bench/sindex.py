"""Secondary-index figures of one server (issue 19), printed as one line of JSON: a query
matching 0.1 % of the records against a scan with the equivalent filter expression, the
background build rate of an index against the scan rate of the same data, and the index's
memory per entry (the server's own `sindex/<ns>/<name>` used_bytes, and for Apogee the
growth of the process's resident memory while the index was built).

    python bench/sindex.py --port 3000 --records 1000000 [--pid PID] [--rounds 3]

Loads `records` records of set `sb` (bin `v` = 0..records-1, bin `pad` = 100 bytes) with
batch writes, then measures. Run by bench/sindex.sh against Apogee and Aerospike CE in one run.
"""

import argparse
import json
import time

import aerospike
from aerospike import predicates as p
from aerospike_helpers import expressions as exp
from aerospike_helpers.batch.records import BatchRecords, Write
from aerospike_helpers.operations import operations as ops

NS, SET, INDEX = "test", "sb", "sb_v"
BATCH_RECORDS = 2000


def info(client, cmd):
    (_, (err, text)), = client.info_all(cmd).items()
    if err:
        raise RuntimeError(f"{cmd}: {err}")
    return text.strip().split("\t")[-1]


def stat(client):
    text = info(client, f"sindex/{NS}/{INDEX}")
    return dict(kv.split("=", 1) for kv in text.split(";") if "=" in kv)


def rss_bytes(pid):
    if not pid:
        return None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def load(client, records):
    pad = "x" * 100
    for start in range(0, records, BATCH_RECORDS):
        batch = BatchRecords(
            [
                Write((NS, SET, i), [ops.write("v", i), ops.write("pad", pad)])
                for i in range(start, min(start + BATCH_RECORDS, records))
            ]
        )
        client.batch_write(batch)
        bad = [r for r in batch.batch_records if r.result != 0]
        if bad:
            raise RuntimeError(f"batch write failed: result {bad[0].result}")


def timed(fn):
    t = time.perf_counter()
    n = fn()
    return time.perf_counter() - t, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--pid", type=int, default=0, help="server pid, for resident memory")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    client = aerospike.client(
        {"hosts": [("127.0.0.1", a.port)], "policies": {"batch": {"total_timeout": 60000}}}
    ).connect()
    try:
        client.index_remove(NS, INDEX)
    except aerospike.exception.AerospikeError:
        pass
    t0 = time.perf_counter()
    load(client, a.records)
    load_s = time.perf_counter() - t0
    matching = max(1, a.records // 1000)

    def scan_all():
        # A scan that reads every record and returns none: the scan rate of the data.
        q = client.query(NS, SET)
        pol = {"expressions": exp.LT(exp.IntBin("v"), -1).compile(), "total_timeout": 600000}
        return len(q.results(pol))

    def filtered_scan():
        q = client.query(NS, SET)
        pol = {"expressions": exp.LT(exp.IntBin("v"), matching).compile(), "total_timeout": 600000}
        return len(q.results(pol))

    # The scan rate: the median of `rounds` full scans (one is too noisy on a shared machine).
    scan_s = sorted(timed(scan_all)[0] for _ in range(a.rounds))[a.rounds // 2]
    # The build: from the create (sent raw, so the client's 2 s polling does not count) to
    # load_pct=100, polled every 5 ms.
    rss_before = rss_bytes(a.pid)
    t = time.perf_counter()
    out = info(client, f"sindex-create:ns={NS};set={SET};indexname={INDEX};indexdata=v,numeric")
    if out != "ok":
        raise RuntimeError(f"sindex-create: {out}")
    while stat(client).get("load_pct") != "100":
        time.sleep(0.005)
    build_s = time.perf_counter() - t
    time.sleep(1.5)  # Apogee refreshes its per-shard entry counts every second.
    s = stat(client)
    rss_after = rss_bytes(a.pid)

    def query():
        q = client.query(NS, SET)
        q.where(p.between("v", 0, matching - 1))
        return len(q.results({"total_timeout": 600000}))

    query_s, scan_f_s = [], []
    for _ in range(a.rounds):
        d, n = timed(query)
        assert n == matching, f"query returned {n} records, {matching} expected"
        query_s.append(d)
        d, n = timed(filtered_scan)
        assert n == matching, f"scan returned {n} records, {matching} expected"
        scan_f_s.append(d)
    entries = int(s.get("entries", 0))
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(
        json.dumps(
            {
                "records": a.records,
                "load_s": round(load_s, 2),
                "matching": matching,
                "query_ms": round(med(query_s) * 1000, 2),
                "filtered_scan_ms": round(med(scan_f_s) * 1000, 2),
                "query_speedup": round(med(scan_f_s) / med(query_s), 1),
                "scan_records_per_s": round(a.records / scan_s),
                "build_records_per_s": round(a.records / build_s),
                "build_vs_scan": round(scan_s / build_s, 2),
                "entries": entries,
                "used_bytes": int(s.get("used_bytes", 0)),
                "used_bytes_per_entry": round(int(s.get("used_bytes", 0)) / max(entries, 1), 1),
                "rss_growth_per_entry": (
                    round((rss_after - rss_before) / max(entries, 1), 1)
                    if rss_before and rss_after
                    else None
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
