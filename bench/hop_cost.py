"""What a cross-core hop costs (issues 18 and 20): the server CPU, context switches and rate of
single-record commands whose record the connection's own core owns, against the same commands
for records another core owns; one line of JSON per (client CPU, owning core).

    python bench/hop_cost.py --port 3000 --pid PID --cores 2 [--kind operate] [--secs 4]

Relies on two things Apogee does: core k runs pinned on CPU k, and a new connection is handed
to the core on the CPU its packets arrive on (`server/src/steering.rs`), so a client pinned to
CPU c is served by core c. A record's core is its partition modulo the core count
(`engine/src/placement.rs`), its partition the first 12 bits of its digest. Each measurement
is one sequential client (a process pinned to its CPU, its own connection) calling back to
back over 200 records of one core; run by bench/hop_cost.sh.
"""

import argparse
import json
import multiprocessing
import os
import sys
import time

import aerospike
from aerospike_helpers.operations import operations as ops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from udf_load import process_usage  # noqa: E402

NS, SET = "test", "hop"
KEYS_PER_CORE = 200


def keys_of_core(core, cores):
    """KEYS_PER_CORE user keys whose records core `core` of `cores` owns."""
    keys, i = [], 0
    while len(keys) < KEYS_PER_CORE:
        d = aerospike.calc_digest(NS, SET, i)
        if ((d[0] | (d[1] << 8)) & 0xFFF) % cores == core:
            keys.append((NS, SET, i))
        i += 1
    return keys


def client(port, cpu, keys, kind, secs, start_at, out):
    os.sched_setaffinity(0, {cpu})
    c = aerospike.client({"hosts": [("127.0.0.1", port)]}).connect()
    c.get(keys[0])
    while time.time() < start_at:
        time.sleep(0.001)
    end, done = start_at + secs, 0
    while time.time() < end:
        for _ in range(50):
            key = keys[done % len(keys)]
            if kind == "get":
                c.get(key)
            else:
                c.operate(key, [ops.increment("n", 1), ops.read("n")])
            done += 1
    out.put(done)
    c.close()


def measure(a, cpu, owner, keys):
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 1.0
    p = ctx.Process(target=client, args=(a.port, cpu, keys, a.kind, a.secs, start_at, out))
    p.start()
    time.sleep(max(0.0, start_at - time.time()))
    before = process_usage(a.pid)
    calls = out.get(timeout=a.secs + 60)
    after = process_usage(a.pid)
    elapsed = time.time() - start_at
    p.join()
    cpu_s, vol, invol = (y - x for x, y in zip(before, after))
    return {
        "client_cpu": cpu,
        "owning_core": owner,
        "hop": owner != cpu,
        "kind": a.kind,
        "calls_per_s": round(calls / elapsed),
        "server_cpu_us_per_call": round(cpu_s * 1e6 / calls, 1),
        "voluntary_switches_per_call": round(vol / calls, 2),
        "involuntary_switches_per_call": round(invol / calls, 2),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--cores", type=int, required=True)
    ap.add_argument("--kind", choices=["get", "operate"], default="operate")
    ap.add_argument("--secs", type=float, default=4.0)
    ap.add_argument("--client-cpus", default="0,1",
                    help="the client CPUs to measure from, each also a core's CPU")
    a = ap.parse_args()
    keys = [keys_of_core(k, a.cores) for k in range(a.cores)]
    c = aerospike.client({"hosts": [("127.0.0.1", a.port)]}).connect()
    for core_keys in keys:
        for key in core_keys:
            c.put(key, {"n": 0})
    c.close()
    for cpu in (int(x) for x in a.client_cpus.split(",")):
        for owner in sorted({cpu, (cpu + 1) % a.cores}):
            print(json.dumps(measure(a, cpu, owner, keys[owner])), flush=True)


if __name__ == "__main__":
    main()
