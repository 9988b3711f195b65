#!/usr/bin/env python3
"""Cluster probes for the cluster bench scripts, speaking the Aerospike wire protocol to
Apogee and Aerospike CE alike (standard library only). It owns no process except the one
node `failover` is told to SIGKILL, and never waits longer than its --timeout.

  cluster_probe.py info PORT COMMAND
  cluster_probe.py wait-formed SIZE TIMEOUT_S PORT...
      every node reports cluster_size=SIZE in `statistics`, answers `cluster-stable:size=SIZE`
      with a key (not ERROR), and the union of the nodes' `replicas` column-0 (master) bitmaps
      of namespace test covers all 4096 partitions; prints the seconds it took
  cluster_probe.py failover PID RECORDS TIMEOUT_S PORT...
      SIGKILLs PID (a node this script's caller started), then every ~20 ms asks the
      survivors (PORTs) for `replicas` until the union of their column-0 claims covers all
      4096 partitions, and then batch-reads every loaded key (user0..user{RECORDS-1} of
      test/usertable, apogee-bench's keys) from the node claiming its partition, until one
      sweep finds every record; prints the time from the kill to each of the two
"""
import base64
import hashlib
import os
import signal
import socket
import struct
import sys
import time

PARTITIONS = 4096
NAMESPACE = "test"
SET = "usertable"
# Batch rows per request: CE's default batch-max-requests is 5000.
BATCH_KEYS_MAX = 5000
POLL_INTERVAL_S = 0.02
INFO_TIMEOUT_S = 1.0


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        c = s.recv(n - len(buf))
        if not c:
            raise OSError("connection closed")
        buf += c
    return bytes(buf)


def info(port, cmd):
    """The value of one info command, or None when the node does not answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=INFO_TIMEOUT_S) as s:
            body = (cmd + "\n").encode()
            s.sendall(struct.pack(">Q", (2 << 56) | (1 << 48) | len(body)) + body)
            size = struct.unpack(">Q", recv_exact(s, 8))[0] & 0xFFFFFFFFFFFF
            line = recv_exact(s, size).decode(errors="replace").split("\n")[0]
            return line.split("\t", 1)[1] if "\t" in line else line
    except OSError:
        return None


def masters(port):
    """The partitions `port` claims as master (column 0) in namespace test, or None."""
    v = info(port, "replicas")
    if v is None:
        return None
    for entry in v.split(";"):
        ns, _, rest = entry.partition(":")
        if ns != NAMESPACE:
            continue
        cols = rest.split(",")
        if len(cols) < 3:
            return None
        bits = base64.b64decode(cols[2])
        return {p for p in range(PARTITIONS) if bits[p // 8] & (0x80 >> (p % 8))}
    return set()


def claims(ports):
    """partition -> port claiming it as master, over the nodes that answered."""
    owner = {}
    for port in ports:
        for p in masters(port) or ():
            owner[p] = port
    return owner


def stat(port, name):
    v = info(port, "statistics") or ""
    for kv in v.split(";"):
        k, _, val = kv.partition("=")
        if k == name:
            return val
    return None


def wait_formed(size, timeout_s, ports):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        ok = all(stat(p, "cluster_size") == str(size) for p in ports)
        ok = ok and all(
            (v := info(p, f"cluster-stable:size={size}")) and not v.startswith("ERROR")
            for p in ports
        )
        if ok and len(claims(ports)) == PARTITIONS:
            print(f"{time.monotonic() - t0:.2f}")
            return 0
        time.sleep(0.1)
    for p in ports:
        print(f"node {p}: cluster_size={stat(p, 'cluster_size')} "
              f"stable={info(p, f'cluster-stable:size={size}')}", file=sys.stderr)
    print(f"cluster of {size} not formed within {timeout_s} s", file=sys.stderr)
    return 1


def digest(i):
    return hashlib.new("ripemd160", SET.encode() + b"\x03" + f"user{i}".encode()).digest()


def partition_of(d):
    return (d[0] | (d[1] << 8)) & (PARTITIONS - 1)


def field(ftype, data):
    return struct.pack(">IB", len(data) + 1, ftype) + data


def batch_request(digests):
    """A batch-index read of the records' headers (no bins), rows after the first REPEAT."""
    rows = bytearray(struct.pack(">IB", len(digests), 0x0D))
    for n, d in enumerate(digests):
        rows += struct.pack(">I", n) + d
        if n:
            rows.append(0x01)  # REPEAT
            continue
        # Row flags, then info1 READ | GET_NOBINDATA, info2, info3, ttl, 2 fields, 0 ops.
        rows += bytes([0x0A, 0x21, 0, 0]) + struct.pack(">IHH", 0, 2, 0)
        rows += field(0, NAMESPACE.encode()) + field(1, SET.encode())
    msg = bytes([22, 0x08, 0, 0, 0, 0]) + struct.pack(">IIIHH", 0, 0, 1000, 1, 0)
    msg += field(41, bytes(rows))
    return struct.pack(">Q", (2 << 56) | (3 << 48) | len(msg)) + msg


def batch_found(s, digests):
    """How many of the rows came back found (result 0)."""
    s.sendall(batch_request(digests))
    found = 0
    while True:
        size = struct.unpack(">Q", recv_exact(s, 8))[0] & 0xFFFFFFFFFFFF
        body = recv_exact(s, size)
        pos = 0
        while pos < len(body):
            info3, rc = body[pos + 3], body[pos + 5]
            n_fields, n_ops = struct.unpack(">HH", body[pos + 18:pos + 22])
            pos += 22
            for _ in range(n_fields + n_ops):
                pos += 4 + struct.unpack(">I", body[pos:pos + 4])[0]
            if info3 & 0x01:  # LAST
                return found
            if rc == 0:
                found += 1


def sweep(owner, by_partition):
    """True when every key reads back (found) from the node claiming its partition."""
    per_node = {}
    for p, ds in by_partition.items():
        per_node.setdefault(owner[p], []).extend(ds)
    try:
        for port, ds in per_node.items():
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                for i in range(0, len(ds), BATCH_KEYS_MAX):
                    chunk = ds[i:i + BATCH_KEYS_MAX]
                    if batch_found(s, chunk) != len(chunk):
                        return False
        return True
    except OSError:
        return False


def failover(pid, records, timeout_s, ports):
    by_partition = {}
    for i in range(records):
        d = digest(i)
        by_partition.setdefault(partition_of(d), []).append(d)
    before = claims(ports)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    t_claims = None
    polls = sweeps = 0
    while time.monotonic() - t0 < timeout_s:
        owner = claims(ports)
        polls += 1
        if len(owner) == PARTITIONS:
            if t_claims is None:
                t_claims = time.monotonic() - t0
            sweeps += 1
            if sweep(owner, by_partition):
                t_served = time.monotonic() - t0
                print(f"claims_s={t_claims:.3f} served_s={t_served:.3f} polls={polls} "
                      f"sweeps={sweeps} survivors_mastered_before={len(before)}")
                return 0
        time.sleep(POLL_INTERVAL_S)
    print(f"not every partition served within {timeout_s} s "
          f"(claims_s={t_claims}, polls={polls}, sweeps={sweeps})", file=sys.stderr)
    return 1


def main(argv):
    if len(argv) >= 3 and argv[0] == "info":
        v = info(int(argv[1]), argv[2])
        print(v if v is not None else "")
        return 0 if v is not None else 1
    if len(argv) >= 4 and argv[0] == "wait-formed":
        return wait_formed(int(argv[1]), float(argv[2]), [int(p) for p in argv[3:]])
    if len(argv) >= 5 and argv[0] == "failover":
        return failover(int(argv[1]), int(argv[2]), float(argv[3]), [int(p) for p in argv[4:]])
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
