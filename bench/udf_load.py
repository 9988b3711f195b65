"""Server CPU per call of a record UDF or the equivalent operate under N concurrent clients
(issue 20), printed as one line of JSON: calls/s, and the server process's CPU time and context
switches (voluntary, involuntary) per call over the measured window, read from /proc/PID.

    python bench/udf_load.py --port 3000 --pid PID --setup            # module and keys, once
    python bench/udf_load.py --port 3000 --pid PID --kind udf --clients 8 --secs 5

The UDF and the operate are bench/udf.py's (increment bin `n` of one of 1,000 records and read
it). Each client is a process of its own with its own connection, calling back to back; the
window opens once every client is connected. Run by bench/udf_cpu.sh, which alternates the
servers.
"""

import argparse
import json
import multiprocessing
import os
import sys
import time

import aerospike

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from udf import KEYS, NS, SET, call, register  # noqa: E402

CALLS_PER_CLOCK_CHECK = 50


def worker(port, kind, secs, first, start_at, out):
    """One client: calls back to back from `start_at` for `secs` seconds; puts its count."""
    c = aerospike.client({"hosts": [("127.0.0.1", port)]}).connect()
    keys = [(NS, SET, i) for i in range(KEYS)]
    c.get(keys[0])  # connected before the window opens
    while time.time() < start_at:
        time.sleep(0.001)
    end, done, i = start_at + secs, 0, first
    while time.time() < end:
        for _ in range(CALLS_PER_CLOCK_CHECK):
            call(c, kind, keys[i % KEYS])
            i += 1
            done += 1
    out.put(done)
    c.close()


def process_usage(pid):
    """(CPU seconds, voluntary switches, involuntary switches) of process `pid`, all threads."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    vol = invol = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches"):
                        vol += int(line.split()[1])
                    elif line.startswith("nonvoluntary_ctxt_switches"):
                        invol += int(line.split()[1])
        except FileNotFoundError:
            pass  # a thread that ended meanwhile
    return cpu, vol, invol


def setup(port):
    c = aerospike.client({"hosts": [("127.0.0.1", port)]}).connect()
    register(c)
    time.sleep(0.5)
    for i in range(KEYS):
        c.put((NS, SET, i), {"v": i, "n": 0})
    c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--setup", action="store_true")
    ap.add_argument("--kind", choices=["udf", "operate"], default="udf")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--secs", type=float, default=5.0)
    a = ap.parse_args()
    if a.setup:
        setup(a.port)
        return
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start_at = time.time() + 1.0 + 0.1 * a.clients
    procs = [ctx.Process(target=worker,
                         args=(a.port, a.kind, a.secs, j * (KEYS // a.clients), start_at, out))
             for j in range(a.clients)]
    for p in procs:
        p.start()
    time.sleep(max(0.0, start_at - time.time()))
    before = process_usage(a.pid)
    calls = sum(out.get(timeout=a.secs + 60) for _ in procs)
    after = process_usage(a.pid)
    elapsed = time.time() - start_at  # the clients finish their last few calls past `secs`
    for p in procs:
        p.join()
    cpu, vol, invol = (y - x for x, y in zip(before, after))
    print(json.dumps({
        "kind": a.kind,
        "clients": a.clients,
        "calls_per_s": round(calls / elapsed),
        "server_cpu_us_per_call": round(cpu * 1e6 / max(calls, 1), 1),
        "voluntary_switches_per_call": round(vol / max(calls, 1), 3),
        "involuntary_switches_per_call": round(invol / max(calls, 1), 3),
    }))


if __name__ == "__main__":
    main()
