"""A 3-node Apogee cluster on loopback, with real processes and the official Python client:
the nodes form one cluster and agree on Aerospike's partition map, the client finds every
node from one seed and routes each key to its master; a SIGKILLed node is dropped and the
survivors re-form, and it rejoins when restarted; after each change the partitions migrate
until every node claims exactly its rows of the new map (test_migration.py checks the data).
A request that reaches a node which does not master its partition is proxied over the fabric.

Node ids are A1, B2, C3, as in the real CE cluster the balance was checked against
(design.md §5). Every wait is bounded; times are printed (run with -s to see them)."""

import base64
import socket
import struct
import time
import zlib

import aerospike
import pytest

from conftest import Apogee, free_port, info, recv_exactly, statistics

PARTITIONS = 4096
NODE_IDS = [0xA1, 0xB2, 0xC3]
FORM_SECS_MAX = 20
# Detection (~1.5 s), the next quantum (<= 1.8 s), a round trip: the membership simulation
# bounds it at 3.8 s; real processes on a busy 2-core machine get slack.
REFORM_SECS_MAX = 12
# Migrations after a change, on a loaded 2-core machine in a debug build.
MIGRATE_SECS_MAX = 90


def fnv64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def jen64(data):
    m = 0xFFFFFFFFFFFFFFFF
    h = 0
    for b in data:
        h = (h + b) & m
        h = (h + (h << 10)) & m
        h ^= h >> 6
    h = (h + (h << 3)) & m
    h ^= h >> 11
    h = (h + (h << 15)) & m
    return h


def balance(succession, rf):
    """Aerospike's partition map (design.md §5), written again here from the description so
    the server's Rust is checked against an independent reading of it."""
    succession = sorted(succession, reverse=True)
    hashed = [fnv64(n.to_bytes(8, "little")).to_bytes(8, "little") for n in succession]
    rows = []
    for p in range(PARTITIONS):
        hp = fnv64(p.to_bytes(4, "little")).to_bytes(8, "little")
        ranked = sorted(((jen64(h + hp) & ~7) + i for i, h in enumerate(hashed)), reverse=True)
        rows.append([succession[v & 7] for v in ranked][: min(rf, len(succession))])
    return rows


def free_udp_port():
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue


def one(port, cmd):
    return info(port, cmd + "\n").split("\t", 1)[1].strip()


def replicas(port):
    """{replica index: set of partitions} this node claims for namespace test."""
    value = one(port, "replicas")
    entry = next(e for e in value.split(";") if e.startswith("test:"))
    fields = entry[len("test:"):].split(",")
    regime, count, maps = int(fields[0]), int(fields[1]), fields[2:]
    assert regime == 0 and len(maps) == count
    claims = {}
    for r, b64 in enumerate(maps):
        bits = base64.b64decode(b64)
        claims[r] = {p for p in range(PARTITIONS) if bits[p // 8] & (0x80 >> (p % 8))}
    return claims


def partition_of(key):
    d = aerospike.calc_digest(*key)
    return (d[0] | (d[1] << 8)) & (PARTITIONS - 1)


class Cluster:
    def __init__(self, tmp_path, ids=NODE_IDS, prefix=()):
        self.ids = list(ids)
        self.hb = [free_udp_port() for _ in self.ids]
        self.fabric = [free_port() for _ in self.ids]
        self.nodes = []
        for i, node_id in enumerate(self.ids):
            seeds = []
            for j, port in enumerate(self.hb):
                if j != i:
                    seeds += ["--mesh-seed-address-port", f"127.0.0.1:{port}"]
            extra = ["--node-id", f"{node_id:x}", "--heartbeat-port", str(self.hb[i]),
                     "--fabric-port", str(self.fabric[i]), "--cluster-name", "pytest", *seeds]
            self.nodes.append(Apogee(tmp_path / f"node-{node_id:X}", cores=2, extra=extra,
                                     prefix=prefix))

    def start(self):
        for n in self.nodes:
            n.start()
        return self

    def kill_all(self):
        for n in self.nodes:
            n.kill()

    def wait_ports_free(self, secs=10):
        """Waits until every node's heartbeat (UDP) and fabric (TCP) port can be bound again:
        a SIGKILLed node's sockets can outlive it briefly (io_uring requests still hold them
        while the kernel tears its ring down), and a node restarted on them at once would
        refuse to start."""
        deadline = time.monotonic() + secs
        for kind, ports in ((socket.SOCK_DGRAM, self.hb), (socket.SOCK_STREAM, self.fabric)):
            for port in ports:
                while True:
                    with socket.socket(socket.AF_INET, kind) as s:
                        if kind == socket.SOCK_STREAM:
                            # As the server's listener binds: past connections in TIME-WAIT
                            # do not stop it.
                            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                        try:
                            s.bind(("127.0.0.1", port))
                            break
                        except OSError:
                            assert time.monotonic() < deadline, f"port {port} still in use"
                            time.sleep(0.05)

    def live(self):
        return [n for n in self.nodes if n.proc and n.proc.poll() is None]

    def wait_formed(self, members, old_key=None, secs=FORM_SECS_MAX):
        """Waits until every live node reports one cluster of exactly `members` (node ids)
        under one key (other than `old_key`); returns (seconds waited, key)."""
        started = time.monotonic()
        want = sorted(members, reverse=True)
        while True:
            seen = []
            for n in self.live():
                s = statistics(n.port)
                seen.append((s["cluster_key"], int(s["cluster_size"]),
                             s["cluster_is_member"], s["cluster_principal"]))
            keys = {k for k, *_ in seen}
            ok = (len(keys) == 1 and old_key not in keys and "0" not in keys
                  and all(size == len(want) and member == "true" and int(pr, 16) == want[0]
                          for _, size, member, pr in seen))
            if ok:
                return time.monotonic() - started, keys.pop()
            if time.monotonic() - started > secs:
                raise AssertionError(f"not formed as {[hex(m) for m in want]} in {secs}s: {seen}")
            time.sleep(0.05)

    def wait_stable(self, members, secs=MIGRATE_SECS_MAX):
        """Waits until every live node answers cluster-stable for `members` (migrations
        done, one key); returns (seconds waited, key)."""
        started = time.monotonic()
        while True:
            answers = [one(n.port, f"cluster-stable:size={len(members)}") for n in self.live()]
            if len(set(answers)) == 1 and not answers[0].startswith("ERROR"):
                return time.monotonic() - started, answers[0]
            if time.monotonic() - started > secs:
                raise AssertionError(f"migrations not done in {secs}s: {answers}")
            time.sleep(0.1)

    def check_map(self, members):
        """Every live node claims exactly its rows of the balance for `members`."""
        rows = balance(members, 2)
        for n, node_id in zip(self.nodes, self.ids):
            if n not in self.live():
                continue
            claims = replicas(n.port)
            assert len(claims) == min(2, len(members))
            for r, parts in claims.items():
                want = {p for p in range(PARTITIONS) if rows[p][r] == node_id}
                assert parts == want, f"node {node_id:X} replica {r}: {len(parts)} vs {len(want)}"


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.kill_all()


def test_three_nodes_form_one_cluster_route_keys_to_masters_and_reform_after_a_kill(cluster):
    t0 = time.monotonic()
    cluster.start()
    took, key = cluster.wait_formed(NODE_IDS)
    print(f"\n3 nodes formed {time.monotonic() - t0:.2f}s after the first start "
          f"({took:.2f}s after the last), cluster_key {key}")
    took, _ = cluster.wait_stable(NODE_IDS)
    print(f"and stable (nothing left to migrate) {took:.2f}s later")
    cluster.check_map(NODE_IDS)
    for n in cluster.nodes:
        assert one(n.port, "cluster-stable:size=3;ignore-migrations=true;namespace=test") == key
        assert one(n.port, "cluster-name") == "pytest"
        peers = one(n.port, "peers-clear-std")
        others = [x for x, m in zip(cluster.nodes, NODE_IDS) if x is not n]
        for o, m in zip(others, [m for x, m in zip(cluster.nodes, NODE_IDS) if x is not n]):
            assert f"[{m:X},,[127.0.0.1:{o.port}]]" in peers, peers
        assert int(one(n.port, "partition-generation")) >= 1

    # The official client, given one seed, finds all three and routes each key to its master
    # (a non-master answers result 11, so a put that succeeds landed on its master).
    seed = cluster.nodes[0]
    client = aerospike.client({"hosts": [("127.0.0.1", seed.port)],
                               "policies": {"write": {"max_retries": 0},
                                            "read": {"max_retries": 0}}}).connect()
    wait_client_nodes(client, 3)
    assert sorted(p for _, p in client.get_nodes()) == sorted(n.port for n in cluster.nodes)
    keys = [("test", "cluster", i) for i in range(1000)]
    for k in keys:
        client.put(k, {"v": k[2]})
    for k in keys:
        assert client.get(k)[2] == {"v": k[2]}
    # A batch is split by the client per master; every row is found.
    batch = client.batch_read(keys).batch_records
    assert [(r.result, r.record[2]) for r in batch] == [(0, {"v": k[2]}) for k in keys]
    # A scan is split by the client per node, each node scanning the partitions it masters.
    scanned = sorted(bins["v"] for _, _, bins in client.scan("test", "cluster").results())
    assert scanned == list(range(1000))
    rows = balance(NODE_IDS, 2)
    want = {m: 0 for m in NODE_IDS}
    for k in keys:
        for holder in rows[partition_of(k)]:
            want[holder] += 1
    for n, node_id in zip(cluster.nodes, NODE_IDS):
        assert objects(n.port) == want[node_id], f"node {node_id:X}: want {want}"
    print(f"1000 keys put and read through one seed; objects per master and replica {want}")

    # The client routed every request straight to its master: nothing was proxied.
    for n in cluster.nodes:
        s = statistics(n.port)
        assert (s["client_proxy_complete"], s["proxy_received"]) == ("0", "0"), s
    # A read sent straight to a node that does not hold the key is proxied to the master
    # over the fabric, and its reply relayed: found there, not found for a missing key. (A
    # node holding it as a replica serves it itself: test_replication.py.)
    foreign = next(k for k in keys if NODE_IDS[0] not in rows[partition_of(k)])
    master = cluster.nodes[NODE_IDS.index(rows[partition_of(foreign)][0])]
    assert raw_get_result(seed.port, foreign) == 0
    missing = next(("test", "cluster", i) for i in range(10_000, 20_000)
                   if NODE_IDS[0] not in rows[partition_of(("test", "cluster", i))])
    assert raw_get_result(seed.port, missing) == 2
    assert statistics(seed.port)["client_proxy_complete"] == "2"
    assert statistics(master.port)["proxy_received"] != "0"
    # So are batch rows: one batch of rows of every node's partitions, sent straight to A1,
    # answers every row (found, or not found for the missing key), not 11.
    from test_batch import batch_frame, full_row, raw
    some = keys[:40] + [missing]
    data = struct.pack(">IB", len(some), 0x0d) + b"".join(
        full_row(i, aerospike.calc_digest(*k), b"cluster") for i, k in enumerate(some))
    got, last = raw(seed.port, batch_frame(data))
    assert last == 0
    assert sorted(got, key=lambda r: r[1]) == [(0, i) for i in range(40)] + [(2, 40)]
    others = sum(1 for k in some if rows[partition_of(k)][0] != NODE_IDS[0])
    assert others > 10
    assert statistics(seed.port)["client_proxy_complete"] == str(2 + others)

    # SIGKILL the principal: the two others re-form without it.
    generation_before = int(one(cluster.nodes[0].port, "partition-generation"))
    victim = cluster.nodes[2]
    victim.kill()
    took, key2 = cluster.wait_formed(NODE_IDS[:2], old_key=key, secs=REFORM_SECS_MAX)
    print(f"SIGKILL of C3 (principal): A1 and B2 re-formed in {took:.2f}s, cluster_key {key2}")
    took, _ = cluster.wait_stable(NODE_IDS[:2])
    print(f"and migrated in {took:.2f}s")
    cluster.check_map(NODE_IDS[:2])
    assert int(one(cluster.nodes[0].port, "partition-generation")) > generation_before
    assert f"{NODE_IDS[2]:X}" not in one(cluster.nodes[0].port, "peers-clear-std")

    # The client follows: it drops the dead node, takes the new map, and new keys land on
    # their new masters and replicas.
    wait_client_nodes(client, 2)
    before = [objects(n.port) for n in cluster.nodes[:2]]
    rows2 = balance(NODE_IDS[:2], 2)
    fresh = [("test", "after-kill", i) for i in range(300)]
    deadline = time.monotonic() + REFORM_SECS_MAX
    for k in fresh:
        while True:
            try:
                client.put(k, {"v": 1})
                break
            except aerospike.exception.AerospikeError as e:
                # Until the client's next tend (1 s) it may still route by the old map.
                assert time.monotonic() < deadline, f"put {k} still failing: {e}"
                time.sleep(0.1)
    for i, node_id in enumerate(NODE_IDS[:2]):
        landed = sum(1 for k in fresh if node_id in rows2[partition_of(k)])
        assert landed == len(fresh), "2 nodes, replication-factor 2: each holds every key"
        assert objects(cluster.nodes[i].port) - before[i] == landed
    client.close()

    # Restarted, it rejoins (same data directory, same id).
    t1 = time.monotonic()
    victim.start()
    took, key3 = cluster.wait_formed(NODE_IDS, old_key=key2, secs=REFORM_SECS_MAX)
    print(f"C3 restarted: rejoined {time.monotonic() - t1:.2f}s after its start, cluster_key {key3}")
    took, _ = cluster.wait_stable(NODE_IDS)
    print(f"and migrated in {took:.2f}s")
    cluster.check_map(NODE_IDS)

    # SIGKILL a member that is not the principal: the principal drops it.
    cluster.nodes[0].kill()
    took, key4 = cluster.wait_formed(NODE_IDS[1:], old_key=key3, secs=REFORM_SECS_MAX)
    print(f"SIGKILL of A1 (member): B2 and C3 re-formed in {took:.2f}s, cluster_key {key4}")
    took, _ = cluster.wait_stable(NODE_IDS[1:])
    print(f"and migrated in {took:.2f}s")
    cluster.check_map(NODE_IDS[1:])


def objects(port):
    return int(one(port, "namespace/test").split("objects=")[1].split(";")[0])


def wait_client_nodes(client, count):
    deadline = time.monotonic() + FORM_SECS_MAX
    while len(client.get_nodes()) != count:
        assert time.monotonic() < deadline, client.get_nodes()
        time.sleep(0.1)


def raw_get(port, key, server_timeout_ms=1000):
    """The reply body (an AS_MSG) to a read of every bin of `key` sent straight to `port`
    (no client routing)."""
    digest = bytes(aerospike.calc_digest(*key))
    ns = key[0].encode()
    fields = struct.pack(">IB", len(ns) + 1, 0) + ns + struct.pack(">IB", 21, 4) + digest
    # info1 READ|GET_ALL, 2 fields, 0 ops.
    header = struct.pack(">BBBBBBIIIHH", 22, 1 | 2, 0, 0, 0, 0, 0, 0, server_timeout_ms, 2, 0)
    body = header + fields
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack(">Q", (2 << 56) | (3 << 48) | len(body)) + body)
        size = struct.unpack(">Q", recv_exactly(s, 8))[0] & 0xFFFFFFFFFFFF
        return recv_exactly(s, size)


def raw_get_result(port, key):
    """The result code of a read of `key` sent straight to `port` (no client routing)."""
    return raw_get(port, key)[5]


def test_a_peer_with_another_cluster_name_is_refused(tmp_path):
    hb = [free_udp_port(), free_udp_port()]
    a = Apogee(tmp_path / "a", extra=["--node-id", "a1", "--cluster-name", "one",
                                      "--heartbeat-port", str(hb[0]),
                                      "--fabric-port", str(free_port()),
                                      "--mesh-seed-address-port", f"127.0.0.1:{hb[1]}"])
    b = Apogee(tmp_path / "b", extra=["--node-id", "b2", "--cluster-name", "two",
                                      "--heartbeat-port", str(hb[1]),
                                      "--fabric-port", str(free_port()),
                                      "--mesh-seed-address-port", f"127.0.0.1:{hb[0]}"])
    try:
        a.start()
        b.start()
        deadline = time.monotonic() + FORM_SECS_MAX
        while not all(statistics(n.port)["cluster_is_member"] == "true" for n in (a, b)):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(2)
        for n in (a, b):
            assert statistics(n.port)["cluster_size"] == "1"
        assert "cluster-name differs" in a.log() or "cluster-name differs" in b.log()
    finally:
        a.kill()
        b.kill()


def test_a_busy_heartbeat_port_stops_the_start_naming_the_key(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        a = Apogee(tmp_path / "a", extra=["--heartbeat-port", str(port)])
        with pytest.raises(RuntimeError, match="network.heartbeat"):
            a.start()


def test_a_busy_fabric_port_stops_the_start_naming_the_key(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        a = Apogee(tmp_path / "a", extra=["--heartbeat-port", str(free_udp_port()),
                                          "--fabric-port", str(busy.getsockname()[1])])
        with pytest.raises(RuntimeError, match="network.fabric"):
            a.start()


FABRIC_VERSION = 3
ANY_SHARD = 0xFFFF


def hello_body(node_id=0xB2, name=b"", shard=ANY_SHARD):
    """A fabric hello: `name_len u8 | name | node u64 | shard u16` (little-endian)."""
    return bytes([len(name)]) + name + node_id.to_bytes(8, "little") + struct.pack("<H", shard)


def say_hello(sock, **kw):
    """Sends a hello and reads its answer (kind 14: the node's shard count), returned."""
    sock.sendall(fabric_frame(1, hello_body(**kw)))
    size = struct.unpack("<I", recv_exactly(sock, 4))[0]
    reply = recv_exactly(sock, size)
    assert reply[:6] == b"APFB" + bytes([FABRIC_VERSION, 14]) and size == 12, reply
    assert struct.unpack("<I", reply[6:10])[0] == zlib.crc32(reply[4:6] + reply[10:]), reply
    return struct.unpack("<H", reply[10:])[0]


def fabric_frame(kind, body, version=FABRIC_VERSION, crc=None):
    """One fabric frame: `len u32 | "APFB" | version | kind | crc32 u32 | body`, the CRC over
    version, kind and body (server/src/cluster/fabric.rs)."""
    if crc is None:
        crc = zlib.crc32(bytes([version, kind]) + body)
    frame = b"APFB" + bytes([version, kind]) + struct.pack("<I", crc) + body
    return struct.pack("<I", len(frame)) + frame


def closed_by_peer(sock):
    """The node closed the connection without a reply (a reset when our bytes were unread)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_bad_fabric_input_closes_that_connection_only(tmp_path):
    fabric = free_port()
    a = Apogee(tmp_path / "a", extra=["--node-id", "a1", "--heartbeat-port", str(free_udp_port()),
                                      "--fabric-port", str(fabric)]).start()
    try:
        hello = hello_body()
        cases = [
            b"GET / HTTP/1.0\r\n\r\n",                        # not a fabric frame
            (0xFFFFFFFF).to_bytes(4, "little"),                 # a length over the bound
            fabric_frame(1, hello_body(name=b"other")),          # another cluster
            fabric_frame(1, hello[:-2]),                        # a version-2 hello (no shard)
            fabric_frame(1, hello, version=1),                  # an older fabric version
            fabric_frame(1, hello, crc=zlib.crc32(b"x")),       # a damaged frame
        ]
        for junk in cases:
            with socket.create_connection(("127.0.0.1", fabric), timeout=5) as s:
                s.sendall(junk)
                assert closed_by_peer(s), junk
        # After a valid hello, a malformed proxied request closes the connection too.
        # A well-formed duplicate-resolution lookup is answered (no such record: status 0).
        with socket.create_connection(("127.0.0.1", fabric), timeout=5) as s:
            assert say_hello(s) == 2, "the node's 2 shards"
            s.sendall(fabric_frame(12, b"\x04test" + bytes(20)))
            size = struct.unpack("<I", recv_exactly(s, 4))[0]
            reply = recv_exactly(s, size)
            assert reply[:6] == b"APFB" + bytes([FABRIC_VERSION, 13]) and reply[10:] == b"\x00"
        for bad in (fabric_frame(2, b"\x16garbage"),                   # not a request
                    fabric_frame(12, b"\x04test" + bytes(3)),             # a short lookup
                    fabric_frame(2, b"\x16garbage", crc=0)):              # a bad checksum
            with socket.create_connection(("127.0.0.1", fabric), timeout=5) as s:
                say_hello(s)
                s.sendall(bad)
                assert closed_by_peer(s), bad
        assert one(a.port, "node") == "A1"
        assert "differs from this node's" in a.log()
    finally:
        a.kill()


def test_two_nodes_with_one_node_id_refuse_each_other(tmp_path):
    hb = [free_udp_port(), free_udp_port()]
    nodes = [Apogee(tmp_path / f"n{i}", extra=["--node-id", "a1", "--heartbeat-port", str(hb[i]),
                                               "--fabric-port", str(free_port()),
                                               "--mesh-seed-address-port",
                                               f"127.0.0.1:{hb[1 - i]}"])
             for i in range(2)]
    try:
        for n in nodes:
            n.start()
        deadline = time.monotonic() + FORM_SECS_MAX
        while not all(statistics(n.port)["cluster_is_member"] == "true" for n in nodes):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(2)
        for n in nodes:
            assert statistics(n.port)["cluster_size"] == "1"
        assert all("has this node's node-id" in n.log() for n in nodes)
    finally:
        for n in nodes:
            n.kill()
