#!/usr/bin/env python3
"""Migration probe for bench/cluster_migrate.sh, speaking the Aerospike wire protocol to Apogee
and Aerospike CE alike (standard library only; the info, `replicas` and digest helpers are
bench/cluster_probe.py's). It starts and stops no process.

  cluster_migrate.py migrate RECORDS RATE BEFORE_S TIMEOUT_S SIGNAL_FILE NEW_PORT PORT...

With the cluster of PORTs formed and RECORDS records loaded (apogee-bench's keys user0.. of
test/usertable, one 100-byte bin `field0`), it runs a light open-loop client load of RATE
requests/s from one thread (half gets, half puts of `field0`, keys uniform; each request to its
partition's master by the nodes' `replicas` column 0, re-read every second as the official
clients do; a request is sent once, never retried). After BEFORE_S seconds of it, it creates
SIGNAL_FILE: the caller then starts the new node (NEW_PORT). Every ~50 ms it reads every node's
`statistics` and takes as
  join: the first poll where a node of PORTs reports cluster_size = len(PORTs) + 1;
  done: the first poll after it where every node (the new one too) reports that cluster_size,
        one cluster_key and migrate_partitions_remaining=0 (every namespace), and migration has
        been seen (remaining > 0 on some poll, or records received since the start);
  test done: the first poll where namespace test's migrate_tx_partitions_remaining and
        migrate_rx_partitions_remaining are 0 on every node (after being above 0).
Records migrated: the growth of migrate_record_receives (namespace/test) summed over the
nodes, from before the load to done (and migrate_records_transmitted, as a cross-check); also
the growth of client_proxy_complete and client_proxy_error (requests a node forwarded to the
partition's master; CE: namespace/test, Apogee: statistics).
Prints one JSON object: the times, the records, the migration rate and the client requests
before (the BEFORE_S window, less its first second) and during (join to done) migration: count,
latency p50/p99/max in ms (send to reply), and failures by request and result code ("get 11",
"put 9"; "io": no reply in 1 s or a broken connection); and the same for the requests between
the signal and the join ("joining": the new node starting and being admitted).
"""
import json
import os
import random
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_probe import (NAMESPACE, SET, claims, digest, info, partition_of,  # noqa: E402
                           recv_exact)

POLL_INTERVAL_S = 0.05
MAP_REFRESH_S = 1.0
REQUEST_TIMEOUT_S = 1.0
BIN_BYTES = 100


def kv(text):
    out = {}
    for item in (text or "").split(";"):
        k, sep, v = item.partition("=")
        if sep:
            out[k] = v
    return out


def field(ftype, data):
    return struct.pack(">IB", len(data) + 1, ftype) + data


def request(key, write):
    d = digest(key)
    fields = field(0, NAMESPACE.encode()) + field(1, SET.encode()) + field(4, d)
    ops = b""
    if write:
        name = b"field0"
        value = (f"u{key}:".encode() * BIN_BYTES)[:BIN_BYTES]
        # op size, WRITE (2), particle STRING (3), version, name length, name, value
        ops = struct.pack(">IBBBB", 4 + len(name) + len(value), 2, 3, 0, len(name)) + name + value
    info1, info2 = (0, 0x01) if write else (0x01 | 0x02, 0)
    msg = bytes([22, info1, info2, 0, 0, 0]) + struct.pack(
        ">IIIHH", 0, 0, int(REQUEST_TIMEOUT_S * 1000), 3, 1 if write else 0) + fields + ops
    return partition_of(d), struct.pack(">Q", (2 << 56) | (3 << 48) | len(msg)) + msg


class Load:
    """The client load: `samples` holds (start, seconds, result) per request."""

    def __init__(self, records, rate, ports):
        self.records, self.rate = records, rate
        self.ports = list(ports)
        self.owner = claims(self.ports)
        self.samples = []
        self.stop = threading.Event()
        self.conns = {}

    def add_port(self, port):
        if port not in self.ports:
            self.ports = self.ports + [port]

    def refresh(self):
        while not self.stop.wait(MAP_REFRESH_S):
            owner = claims(self.ports)
            if owner:
                self.owner = owner

    def exchange(self, port, req):
        s = self.conns.get(port)
        if s is None:
            s = socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT_S)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conns[port] = s
        try:
            s.sendall(req)
            size = struct.unpack(">Q", recv_exact(s, 8))[0] & 0xFFFFFFFFFFFF
            return recv_exact(s, size)[5]
        except OSError:
            self.conns.pop(port, None)
            s.close()
            raise

    def run(self):
        rng = random.Random(1)
        t0 = time.monotonic()
        n = 0
        while not self.stop.is_set():
            due = t0 + n / self.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            n += 1
            write = rng.random() < 0.5
            pid, req = request(rng.randrange(self.records), write)
            port = self.owner.get(pid, self.ports[0])
            start = time.monotonic()
            try:
                rc = self.exchange(port, req)
            except OSError:
                rc = "io"
            self.samples.append((start, time.monotonic() - start, rc, write))


def window(samples, lo, hi):
    lat = sorted(d for t, d, _, _ in samples if lo <= t < hi)
    errors = {}
    for t, _, rc, write in samples:
        if lo <= t < hi and rc != 0:
            k = f"{'put' if write else 'get'} {rc}"
            errors[k] = errors.get(k, 0) + 1
    if not lat:
        return {"requests": 0, "errors": errors}

    def pct(q):
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 3)

    return {"requests": len(lat), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "max_ms": round(lat[-1] * 1000, 3), "errors": errors}


def ns_counts(port):
    ns = kv(info(port, f"namespace/{NAMESPACE}"))
    out = {k: int(ns.get(k, 0) or 0)
           for k in ("objects", "migrate_record_receives", "migrate_records_transmitted")}
    # Requests a node forwarded to the partition's master: CE counts them per namespace,
    # Apogee in `statistics`.
    st = kv(info(port, "statistics"))
    for k in ("client_proxy_complete", "client_proxy_error"):
        out[k] = int(ns.get(k, 0) or 0) + int(st.get(k, 0) or 0)
    return out


def migrate(records, rate, before_s, timeout_s, signal_file, new_port, ports):
    size = len(ports) + 1
    before = {p: ns_counts(p) for p in ports}
    load = Load(records, rate, ports)
    threads = [threading.Thread(target=load.run), threading.Thread(target=load.refresh)]
    for t in threads:
        t.start()
    try:
        t_load = time.monotonic()
        time.sleep(before_s)
        t_signal = time.monotonic()
        open(signal_file, "w").close()
        t_join = t_done = t_test_done = None
        seen_remaining = seen_test = False
        polls = 0
        all_ports = ports + [new_port]
        while time.monotonic() - t_signal < timeout_s:
            polls += 1
            t = time.monotonic()
            if t_join is None:
                if any(kv(info(p, "statistics")).get("cluster_size") == str(size) for p in ports):
                    t_join = t
                    load.add_port(new_port)
                time.sleep(POLL_INTERVAL_S)
                continue
            stats = [kv(info(p, "statistics")) for p in all_ports]
            remaining = [int(s.get("migrate_partitions_remaining", -1) or -1) for s in stats]
            seen_remaining |= any(r > 0 for r in remaining)
            if t_test_done is None:
                ns = [kv(info(p, f"namespace/{NAMESPACE}")) for p in all_ports]
                left = [int(n.get("migrate_tx_partitions_remaining", -1) or -1)
                        + int(n.get("migrate_rx_partitions_remaining", -1) or -1) for n in ns]
                seen_test |= any(x > 0 for x in left)
                if seen_test and all(x == 0 for x in left):
                    t_test_done = t
            same = (all(s.get("cluster_size") == str(size) for s in stats)
                    and len({s.get("cluster_key") for s in stats}) == 1)
            if same and all(r == 0 for r in remaining):
                after = {p: ns_counts(p) for p in all_ports}
                received = sum(after[p]["migrate_record_receives"]
                               - before.get(p, {}).get("migrate_record_receives", 0)
                               for p in all_ports)
                if seen_remaining or received > 0:
                    t_done = t
                    break
            time.sleep(POLL_INTERVAL_S)
    finally:
        load.stop.set()
        for th in threads:
            th.join()
    if t_done is None:
        print(f"migration not done within {timeout_s} s of the signal (joined: "
              f"{t_join is not None}, polls {polls})", file=sys.stderr)
        return 1
    secs = t_done - t_join
    received = {p: after[p]["migrate_record_receives"]
                - before.get(p, {}).get("migrate_record_receives", 0) for p in all_ports}
    sent = {p: after[p]["migrate_records_transmitted"]
            - before.get(p, {}).get("migrate_records_transmitted", 0) for p in all_ports}
    proxied = {k: sum(after[p][k] - before.get(p, {}).get(k, 0) for p in all_ports)
               for k in ("client_proxy_complete", "client_proxy_error")}
    total = sum(received.values())
    senders = [p for p in all_ports if sent[p] > 0]
    out = {
        "start_to_join_s": round(t_join - t_signal, 3),
        "join_to_done_s": round(secs, 3),
        # namespace test alone (its migrate_{tx,rx}_partitions_remaining 0 on every node)
        "join_to_test_done_s": round((t_test_done or t_done) - t_join, 3),
        "polls": polls,
        "remaining_seen": seen_remaining,
        "records_received": total,
        "records_transmitted": sum(sent.values()),
        "received_per_node": [received[p] for p in all_ports],
        "transmitted_per_node": [sent[p] for p in all_ports],
        "objects_before": [before[p]["objects"] for p in ports],
        "objects_after": [after[p]["objects"] for p in all_ports],
        "migrate_records_per_s": round(total / secs),
        "per_sender_records_per_s": round(sum(sent.values()) / max(len(senders), 1) / secs),
        "senders": len(senders),
        "proxied": proxied["client_proxy_complete"],
        "proxy_errors": proxied["client_proxy_error"],
        "before": window(load.samples, t_load + 1.0, t_signal),
        "joining": window(load.samples, t_signal, t_join),
        "during": window(load.samples, t_join, t_done),
    }
    print(json.dumps(out))
    return 0


def main(argv):
    if len(argv) >= 8 and argv[0] == "migrate":
        return migrate(int(argv[1]), float(argv[2]), float(argv[3]), float(argv[4]), argv[5],
                       int(argv[6]), [int(p) for p in argv[7:]])
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
