"""UDF figures of one server (issue 20), printed as one line of JSON: a record UDF that
increments a bin against the equivalent operate (an increment and a read), each driven the
same way (sequential calls from one client over `keys` records, `rounds` rounds alternated),
and a stream aggregation (the sum of a bin) over a scan of `records` records.

    python bench/udf.py --port 3000 [--records 100000] [--calls 20000] [--rounds 3] [--clients 8]

With `--clients N` (N > 1) each round also runs the UDF and the operate from N processes at
once (each its own client, `calls / N` calls each): throughput under load, where one
sequential client measures a request's round trip.

Run by bench/udf.sh against Apogee and Aerospike CE in one run.
"""

import argparse
import base64
import json
import multiprocessing
import os
import tempfile
import time

import aerospike
from aerospike_helpers.batch.records import BatchRecords, Write
from aerospike_helpers.operations import operations as ops

MODULE = """
function incr(rec, bin, n)
    rec[bin] = (rec[bin] or 0) + n
    aerospike:update(rec)
    return rec[bin]
end

local function value(rec) return rec['v'] end
local function add(a, b) return a + b end

function sum(s)
    return s : map(value) : reduce(add)
end
"""
NS, SET = "test", "ub"
KEYS = 1000


def register(client):
    """Registers MODULE as `ubench.lua` on every node the client knows."""
    content = base64.b64encode(MODULE.encode()).decode()
    put = f"udf-put:filename=ubench.lua;content={content};content-len={len(content)};udf-type=LUA;"
    for _, (err, text) in client.info_all(put).items():
        assert not err and text.strip().split("\t")[-1] == "ok", (err, text)


def call(client, kind, key):
    """One record UDF incrementing bin `n` (kind "udf"), or the equivalent operate."""
    if kind == "udf":
        client.apply(key, "ubench", "incr", ["n", 1])
    else:
        client.operate(key, [ops.increment("n", 1), ops.read("n")])


def worker(port, kind, calls, offset, barrier, out):
    """One concurrent client: `calls` UDF or operate calls once every worker is ready."""
    c = aerospike.client({"hosts": [("127.0.0.1", port)]}).connect()
    keys = [(NS, SET, i) for i in range(KEYS)]
    c.get(keys[0])  # connected before the clock starts
    barrier.wait()
    t = time.perf_counter()
    for i in range(offset, offset + calls):
        call(c, kind, keys[i % KEYS])
    out.put(time.perf_counter() - t)
    c.close()


def parallel_round(port, kind, calls, clients):
    """Calls per second of `clients` processes together (all calls over the slowest's time)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(clients), ctx.Queue()
    each = calls // clients
    procs = [ctx.Process(target=worker, args=(port, kind, each, j * each, barrier, out))
             for j in range(clients)]
    for p in procs:
        p.start()
    times = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return each * clients / max(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=1)
    a = ap.parse_args()
    lua_dir = tempfile.mkdtemp(prefix="apogee-udf-bench-")
    with open(os.path.join(lua_dir, "ubench.lua"), "w") as f:
        f.write(MODULE)
    client = aerospike.client({
        "hosts": [("127.0.0.1", a.port)],
        "lua": {"user_path": lua_dir},
        "policies": {"batch": {"total_timeout": 60000}},
    }).connect()
    register(client)
    time.sleep(0.5)
    for start in range(0, a.records, 2000):
        batch = BatchRecords([Write((NS, SET, i), [ops.write("v", i)])
                              for i in range(start, min(start + 2000, a.records))])
        client.batch_write(batch)
    keys = [(NS, SET, i) for i in range(KEYS)]

    def udf_round():
        t = time.perf_counter()
        for i in range(a.calls):
            call(client, "udf", keys[i % KEYS])
        return a.calls / (time.perf_counter() - t)

    def operate_round():
        t = time.perf_counter()
        for i in range(a.calls):
            call(client, "operate", keys[i % KEYS])
        return a.calls / (time.perf_counter() - t)

    def aggregate():
        t = time.perf_counter()
        q = client.query(NS, SET)
        q.apply("ubench", "sum")
        out = []
        q.foreach(out.append)
        assert out == [sum(range(a.records))], out
        return time.perf_counter() - t

    udf, operate, agg, udf_n, operate_n = [], [], [], [], []
    for _ in range(a.rounds):
        udf.append(udf_round())
        operate.append(operate_round())
        agg.append(aggregate())
        if a.clients > 1:
            udf_n.append(parallel_round(a.port, "udf", a.calls, a.clients))
            operate_n.append(parallel_round(a.port, "operate", a.calls, a.clients))
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    out = {
        "calls": a.calls,
        "udf_per_s": round(med(udf)),
        "operate_per_s": round(med(operate)),
        "udf_vs_operate": round(med(udf) / med(operate), 2),
        "aggregate_records": a.records,
        "aggregate_ms": round(med(agg) * 1000, 1),
    }
    if a.clients > 1:
        out.update({
            "clients": a.clients,
            "udf_per_s_concurrent": round(med(udf_n)),
            "operate_per_s_concurrent": round(med(operate_n)),
        })
    print(json.dumps(out))


if __name__ == "__main__":
    main()
