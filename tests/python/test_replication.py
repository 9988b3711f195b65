"""Replication of writes between real Apogee processes on loopback, through the official
Python client: with replication-factor 2, every record written lies on exactly its master and
its replica; a delete reaches the replica as a tombstone; after a SIGKILL of one of 3 nodes
the survivors promote the replicas and every record written (single or batch) is read back,
and no deleted one comes back; a read sent to a replica is served there. Under commit level all a write whose replica does not answer is answered 9
(timeout, in doubt), as CE 8.1.2.0 does, and under `write-commit-level-override master` it
succeeds at once.

Every wait is bounded; counts and times are printed (run with -s to see them)."""

import os
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib

import aerospike
import pytest
from aerospike_helpers.batch import records as br
from aerospike_helpers.operations import operations as op

from conftest import Apogee, free_port
from test_cluster import (FABRIC_VERSION, FORM_SECS_MAX, REFORM_SECS_MAX, Cluster, balance,
                          fabric_frame, free_udp_port, objects, one, partition_of, raw_get,
                          raw_get_result, say_hello, wait_client_nodes)
from conftest import statistics as stats_of
from test_info_config import bin_names as bin_names_of

NODE_IDS = [0xA1, 0xB2, 0xC3]
KEYS = 1000


def ns_stats(port):
    text = one(port, "namespace/test")
    return dict(kv.split("=", 1) for kv in text.split(";") if "=" in kv)


def client_of(port, timeout_ms=5000):
    return aerospike.client({
        "hosts": [("127.0.0.1", port)],
        "policies": {"write": {"max_retries": 0, "total_timeout": timeout_ms},
                     "read": {"max_retries": 0, "total_timeout": timeout_ms}},
    }).connect()


def retrying(fn, secs=REFORM_SECS_MAX):
    """`fn()` until it does not raise a client error other than not-found, within `secs`
    (after a node died the client may route by its old map until its next tend)."""
    deadline = time.monotonic() + secs
    while True:
        try:
            return fn()
        except aerospike.exception.RecordNotFound:
            raise
        except aerospike.exception.AerospikeError as e:
            assert time.monotonic() < deadline, f"still failing after {secs}s: {e}"
            time.sleep(0.1)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    yield c
    c.kill_all()


def bin_names(port):
    """The names `bins` lists for namespace test."""
    return bin_names_of(port)[1]


def holders_count(rows, keys):
    """{node id: records it should hold} for `keys` under the map `rows`."""
    want = {}
    for k in keys:
        for n in rows[partition_of(k)]:
            want[n] = want.get(n, 0) + 1
    return want


def test_every_record_is_on_its_master_and_replica_and_survives_a_sigkill(cluster):
    cluster.start()
    cluster.wait_formed(NODE_IDS)
    cluster.wait_stable(NODE_IDS)
    client = client_of(cluster.nodes[0].port)
    wait_client_nodes(client, 3)
    keys = [("test", "repl", i) for i in range(KEYS)]
    t0 = time.monotonic()
    for k in keys:
        client.put(k, {"v": k[2], "s": f"value-{k[2]}"})
    took = time.monotonic() - t0
    rows = balance(NODE_IDS, 2)
    want = holders_count(rows, keys)
    got = {m: objects(n.port) for n, m in zip(cluster.nodes, NODE_IDS)}
    print(f"\n{KEYS} puts acknowledged in {took:.2f}s; objects per node {got}, "
          f"master+replica per node {want}")
    assert got == want
    assert sum(got.values()) == 2 * KEYS
    stats = [ns_stats(n.port) for n in cluster.nodes]
    assert sum(int(s["repl_write_success"]) for s in stats) == KEYS
    assert sum(int(s["repl_write_received_stored"]) for s in stats) == KEYS
    assert all(s["repl_write_error"] == "0" and s["repl_write_timeout"] == "0" for s in stats)
    # Images stored by replicas are not client writes there.
    assert sum(int(s["client_write_success"]) for s in stats) == KEYS
    # Per-shard fabric: each core opens its connections to the peer's shard that owns the
    # partition, so an image is applied on the core that read it. Only a core's first
    # request to a peer (before the peer's answer said how many shards it has) may land on
    # another core: at most 2 cores × 2 peers per node, against half of the images before.
    node_stats = [stats_of(n.port) for n in cluster.nodes]
    cross = [int(s["fabric_cross_core"]) for s in node_stats]
    handed = [int(s["fabric_connections_handed"]) for s in node_stats]
    print(f"fabric frames served off their shard per node {cross}, connections handed {handed}")
    assert all(c <= 4 for c in cross), cross
    assert sum(handed) > 0, handed
    # Each record read straight from its replica node is served there (not proxied).
    port_of = {m: n.port for n, m in zip(cluster.nodes, NODE_IDS)}
    codes = [raw_get_result(port_of[rows[partition_of(k)][1]], k) for k in keys]
    assert codes == [0] * KEYS
    for n in cluster.nodes:
        assert stats_of(n.port)["client_proxy_complete"] == "0"
    # A bin name first written to one key is listed (`bins`) by its master and its replica,
    # not by the third node.
    k = keys[0]
    holders = rows[partition_of(k)]
    client.put(k, {"only_here": 1})
    for n, m in zip(cluster.nodes, NODE_IDS):
        listed = "only_here" in bin_names(n.port)
        assert listed == (m in holders), (hex(m), [hex(h) for h in holders], listed)
    # The official client with replica policy ANY spreads reads over master and replica.
    before = [int(ns_stats(n.port)["client_read_success"]) for n in cluster.nodes]
    for k in keys:
        _, _, bins = client.get(k, policy={"replica": aerospike.POLICY_REPLICA_ANY})
        assert bins["v"] == k[2]
    served = [int(ns_stats(n.port)["client_read_success"]) - b
              for n, b in zip(cluster.nodes, before)]
    mastered = [sum(1 for k in keys if rows[partition_of(k)][0] == m) for m in NODE_IDS]
    print(f"replica policy ANY: reads served per node {served}, keys mastered {mastered}")
    assert sum(served) == KEYS and served != mastered
    for n in cluster.nodes:
        assert stats_of(n.port)["client_proxy_complete"] == "0"

    # Overwrites replicate the new version; deletes replicate as tombstones.
    for k in keys[:100]:
        client.put(k, {"v": -k[2]})
    # Batch rows are single-record writes: they replicate the same way.
    res = client.batch_operate(keys[100:200], [op.write("b", 1)])
    assert [r.result for r in res.batch_records] == [0] * 100
    deleted = keys[900:]
    for k in deleted[:50]:
        client.remove(k)
    res = client.batch_remove(deleted[50:])
    assert [r.result for r in res.batch_records] == [0] * 50
    got = {m: objects(n.port) for n, m in zip(cluster.nodes, NODE_IDS)}
    assert got == holders_count(rows, keys[:900]), got

    # SIGKILL B2: for its partitions, A1 and C3 hold the replicas and are promoted.
    victim = NODE_IDS[1]
    lost_master = [k for k in keys if rows[partition_of(k)][0] == victim]
    assert len(lost_master) > 250 and any(rows[partition_of(k)][0] == victim for k in deleted)
    _, key = cluster.wait_formed(NODE_IDS)
    cluster.wait_stable(NODE_IDS)
    cluster.nodes[1].kill()
    took, _ = cluster.wait_formed([NODE_IDS[0], NODE_IDS[2]], old_key=key, secs=REFORM_SECS_MAX)
    print(f"SIGKILL of B2 ({len(lost_master)} of the keys mastered there): A1 and C3 "
          f"re-formed in {took:.2f}s")
    wait_client_nodes(client, 2)
    t1 = time.monotonic()
    missing, wrong = [], []
    for k in keys[:900]:
        try:
            _, _, bins = retrying(lambda: client.get(k))
        except aerospike.exception.RecordNotFound:
            missing.append(k)
            continue
        if bins["v"] != (-k[2] if k[2] < 100 else k[2]) or (100 <= k[2] < 200) != ("b" in bins):
            wrong.append((k, bins))
    resurrected = []
    for k in deleted:
        try:
            retrying(lambda: client.get(k))
            resurrected.append(k)
        except aerospike.exception.RecordNotFound:
            pass
    print(f"read back {900 - len(missing)} of 900 records in {time.monotonic() - t1:.2f}s; "
          f"missing {len(missing)}, wrong {len(wrong)}, deleted and back {len(resurrected)}")
    assert (missing, wrong, resurrected) == ([], [], [])
    client.close()


def two_nodes(tmp_path, config):
    """A1 and B2 with `config` (TOML) each: every partition is on both."""
    hb = [free_udp_port(), free_udp_port()]
    nodes = []
    for i, node_id in enumerate(NODE_IDS[:2]):
        path = tmp_path / f"{node_id:X}.toml"
        path.write_text(config)
        nodes.append(Apogee(tmp_path / f"node-{node_id:X}", extra=[
            "--config", str(path), "--node-id", f"{node_id:x}",
            "--heartbeat-port", str(hb[i]), "--fabric-port", str(free_port()),
            "--cluster-name", "pytest", "--mesh-seed-address-port", f"127.0.0.1:{hb[1 - i]}"]))
    for n in nodes:
        n.start()
    deadline = time.monotonic() + FORM_SECS_MAX
    while not all(one(n.port, "cluster-stable:size=2").find("ERROR") < 0 for n in nodes):
        assert time.monotonic() < deadline, "2 nodes did not form"
        time.sleep(0.1)
    return nodes


# A heartbeat timeout of 40 intervals (6 s), so a replica paused for a second stays a member
# and its partitions keep it as their replica.
SLOW_DETECTION = "[network.heartbeat]\ntimeout = 40\n"


def put_while_paused(nodes, key, bins, policy=None):
    """Puts `key` through A1 while B2 (its replica) is SIGSTOPped: (error code or 0, secs)."""
    client = client_of(nodes[0].port)
    wait_client_nodes(client, 2)
    client.put(key, {"v": 0})
    os.kill(nodes[1].proc.pid, signal.SIGSTOP)
    t = time.monotonic()
    try:
        client.put(key, bins, policy=policy or {})
        code = 0
    except aerospike.exception.AerospikeError as e:
        code = e.code
    finally:
        took = time.monotonic() - t
        os.kill(nodes[1].proc.pid, signal.SIGCONT)
    client.close()
    return code, took


def replica_reply_bytes(port, key):
    """The size of the reply to a read of `key` sent straight to `port` (no routing), after
    checking that it succeeded."""
    reply = raw_get(port, key, server_timeout_ms=5000)
    assert reply[5] == 0, reply[5]
    return len(reply)


def a1_key(prefix):
    rows = balance(NODE_IDS[:2], 2)
    return next(("test", prefix, i) for i in range(1000)
                if rows[partition_of(("test", prefix, i))][0] == NODE_IDS[0])


def test_commit_level_all_answers_timeout_when_the_replica_does_not_answer(tmp_path):
    nodes = two_nodes(tmp_path, SLOW_DETECTION)
    try:
        # A record near the largest (1 MiB blocks) travels whole, in one image.
        client = client_of(nodes[0].port)
        wait_client_nodes(client, 2)
        big = a1_key("big")
        blob = os.urandom(1_000_000)
        # The client lists a node before its next tend has fetched that node's partitions:
        # until then it has no node for them (InvalidNodeError, nothing sent).
        deadline = time.monotonic() + FORM_SECS_MAX
        while True:
            try:
                client.put(big, {"b": blob})
                break
            except aerospike.exception.InvalidNodeError:
                assert time.monotonic() < deadline, "the client never routed the key"
                time.sleep(0.1)
        client.close()
        assert replica_reply_bytes(nodes[1].port, big) > 1_000_000
        assert ns_stats(nodes[1].port)["repl_write_received_stored"] == "1"
        code, took = put_while_paused(nodes, a1_key("all"), {"v": 1})
        print(f"\ncommit level all, replica paused: code {code} after {took:.2f}s")
        assert code == 9 and 0.9 < took < 3
        assert ns_stats(nodes[0].port)["repl_write_timeout"] == "1"
        assert ns_stats(nodes[0].port)["client_write_repl_failed"] == "1"
        # The client's own commit level master is honoured under the default override (off).
        code, took = put_while_paused(nodes, a1_key("cm"), {"v": 1},
                                      {"commit_level": aerospike.POLICY_COMMIT_LEVEL_MASTER})
        print(f"client commit level master, replica paused: code {code} after {took:.2f}s")
        assert code == 0 and took < 0.9
    finally:
        for n in nodes:
            n.kill()


def test_write_commit_level_override_master_acknowledges_before_the_replica(tmp_path):
    config = SLOW_DETECTION + "[namespace.test]\nwrite-commit-level-override = \"master\"\n"
    nodes = two_nodes(tmp_path, config)
    try:
        assert "write-commit-level-override=master" in one(
            nodes[0].port, "get-config:context=namespace;id=test")
        key = a1_key("master")
        code, took = put_while_paused(nodes, key, {"v": 1})
        print(f"\noverride master, replica paused: code {code} after {took:.2f}s")
        assert code == 0 and took < 0.9
        # With the replica answering, writes under master still reach it (in the background).
        client = client_of(nodes[0].port)
        wait_client_nodes(client, 2)
        keys = [("test", "bg", i) for i in range(200)]
        for k in keys:
            client.put(k, {"v": 1})
        deadline = time.monotonic() + 10
        while objects(nodes[1].port) < 201:
            assert time.monotonic() < deadline, objects(nodes[1].port)
            time.sleep(0.1)
        # B2 holds every record: the paused write's key and the 200 others.
        time.sleep(0.5)
        assert objects(nodes[1].port) == 201
        # Background images are bounded per core (256): with B2 paused, a batch of 2,000
        # writes mastered by A1 succeeds at once, the images past the bound dropped and counted rather than
        # 2,000 tasks and connections opened.
        mastered = balance(NODE_IDS[:2], 2)
        flood = [k for k in (("test", "flood", i) for i in range(5000))
                 if mastered[partition_of(k)][0] == NODE_IDS[0]][:2000]
        rows = [br.Write(k, [op.write("v", 1)]) for k in flood]
        os.kill(nodes[1].proc.pid, signal.SIGSTOP)
        t = time.monotonic()
        try:
            res = client.batch_write(br.BatchRecords(rows), {"total_timeout": 20_000})
        finally:
            took = time.monotonic() - t
            os.kill(nodes[1].proc.pid, signal.SIGCONT)
        codes = {r.result for r in res.batch_records}
        print(f"2000 batch writes under master with the replica paused: {took:.2f}s, "
              f"codes {codes}")
        dropped = int(ns_stats(nodes[0].port)["repl_write_dropped"])
        print(f"images dropped past the bound: {dropped}")
        assert codes == {0} and took < 5 and 2000 - 2 * 256 <= dropped < 2000
        client.close()
    finally:
        for n in nodes:
            n.kill()


def image_frame(namespace, digest, generation, lut_ms, bins, flip=None, view=0):
    """A fabric ReplicaWrite frame built from docs/architecture.md and storage-format.md alone
    (view key, namespace, record: "APR1", length, CRC32 over all but itself, flags, set length, generation, void
    time, last-update ms, digest, set, key type 0, bin count, bins), an independent reading of
    the format the server encodes."""
    body = bytearray()
    body += struct.pack(">BBHIQ", 0, 0, generation, 0, lut_ms) + digest
    body += b"\x00" + struct.pack(">H", len(bins))
    for name, value in bins:
        body += bytes([len(name)]) + name + b"\x01" + struct.pack(">I", 8) + struct.pack(">q", value)
    total = 12 + len(body)
    head = b"APR1" + struct.pack(">I", total)
    crc = zlib.crc32(head + bytes(body))
    record = head + struct.pack(">I", crc) + bytes(body)
    if flip is not None:
        record = bytearray(record)
        record[flip] ^= 1
        record = bytes(record)
    # The sender's view key: a replica applies only images sent by its own view (0: none).
    msg = struct.pack("<Q", view) + bytes([len(namespace)]) + namespace
    msg += struct.pack("<I", len(record)) + record
    return fabric_frame(4, msg)


def ack(sock):
    head = sock.recv(4, socket.MSG_WAITALL)
    size = struct.unpack("<I", head)[0]
    body = sock.recv(size, socket.MSG_WAITALL)
    assert body[:6] == b"APFB" + bytes([FABRIC_VERSION, 5]) and size == 11, body
    assert struct.unpack("<I", body[6:10])[0] == zlib.crc32(body[4:6] + body[10:]), body
    return body[10]


@pytest.mark.parametrize("policy", ["generation", "last-update-time"])
def test_images_from_the_fabric_are_checked_applied_if_newer_or_refused(tmp_path, policy):
    fabric = free_port()
    config = tmp_path / "a.toml"
    config.write_text(f"[namespace.test]\nconflict-resolution-policy = \"{policy}\"\n")
    a = Apogee(tmp_path / "a", extra=["--node-id", "a1", "--heartbeat-port", str(free_udp_port()),
                                      "--fabric-port", str(fabric),
                                      "--config", str(config)]).start()
    by_generation = policy == "generation"
    try:
        deadline = time.monotonic() + FORM_SECS_MAX
        while "ERROR" in one(a.port, "cluster-stable"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        digest = bytes(aerospike.calc_digest("test", "", "raw"))
        view = int(stats_of(a.port)["cluster_key"], 16)
        with socket.create_connection(("127.0.0.1", fabric), timeout=5) as s:
            say_hello(s)
            s.sendall(image_frame(b"nope", digest, 1, 1000, [(b"v", 7)], view=view))
            assert ack(s) == 4, "unknown namespace"
            # Sent by another view (an old one, the other side of a split) or by none:
            # refused, after the 200 ms the replica gives its own table to catch up.
            for other in (view ^ 1, 0):
                s.sendall(image_frame(b"test", digest, 2, 1000, [(b"v", 7)], view=other))
                assert ack(s) == 3, "other view"
            s.sendall(image_frame(b"test", digest, 2, 1000, [(b"v", 7)], view=view))
            assert ack(s) == 0, "stored"
            s.sendall(image_frame(b"test", digest, 2, 1000, [(b"v", 8)], view=view))
            assert ack(s) == 1, "the same version again: not newer"
            # A lower generation, later: newer only by last-update time.
            s.sendall(image_frame(b"test", digest, 1, 9000, [(b"v", 9)], view=view))
            assert ack(s) == (1 if by_generation else 0)
            # A higher generation, earlier: newer only by generation.
            s.sendall(image_frame(b"test", digest, 3, 500, [(b"v", 10)], view=view))
            assert ack(s) == (0 if by_generation else 1)
            # A flipped bit fails the record's checksum: that connection is closed.
            s.sendall(image_frame(b"test", digest, 4, 2000, [(b"v", 11)], flip=30, view=view))
            assert s.recv(1) == b""
        c = client_of(a.port)
        _, meta, bins = c.get(("test", "", "raw"))
        assert (bins, meta["gen"]) == (({"v": 10}, 3) if by_generation else ({"v": 9}, 1))
        c.close()
        s = ns_stats(a.port)
        assert (s["repl_write_received_stored"], s["repl_write_received_not_newer"],
                s["repl_write_received_refused"]) == ("2", "2", "2")
        assert "replica write's record does not decode" in a.log()
        assert one(a.port, "node") == "A1"
    finally:
        a.kill()


def test_no_acknowledged_write_is_lost_when_a_master_dies_under_load(cluster):
    """A writer of unique keys records every acknowledgement while B2 is SIGKILLed mid-load;
    after the survivors re-form, every acknowledged write is read back with its value."""
    import threading

    cluster.start()
    _, key = cluster.wait_formed(NODE_IDS)
    cluster.wait_stable(NODE_IDS)
    writer = client_of(cluster.nodes[0].port, timeout_ms=2000)
    wait_client_nodes(writer, 3)
    acked, failed = [], []
    stop = threading.Event()

    def write():
        i = 0
        while not stop.is_set():
            k = ("test", "load", i)
            try:
                writer.put(k, {"v": i})
                acked.append(k)
            except aerospike.exception.AerospikeError as e:
                failed.append((k, e.code))
                time.sleep(0.005)  # a dead node's keys fail at once: no busy loop
            i += 1

    t = threading.Thread(target=write)
    t.start()
    try:
        time.sleep(1.5)
        before = len(acked)
        cluster.nodes[1].kill()
        cluster.wait_formed([NODE_IDS[0], NODE_IDS[2]], old_key=key, secs=REFORM_SECS_MAX)
        time.sleep(2)
    finally:
        stop.set()
        t.join(timeout=30)
    rows = balance(NODE_IDS, 2)
    on_b2 = sum(1 for k in acked if rows[partition_of(k)][0] == NODE_IDS[1])
    print(f"\nwrites: {len(acked) + len(failed)}, acknowledged {len(acked)} ({before} before the "
          f"kill, {on_b2} of B2's partitions), failed {len(failed)} "
          f"(codes {sorted({c for _, c in failed})})")
    assert before > 50 and len(acked) > before
    reader = client_of(cluster.nodes[0].port)
    wait_client_nodes(reader, 2)
    lost = []
    for k in acked:
        try:
            _, _, bins = retrying(lambda: reader.get(k))
            if bins != {"v": k[2]}:
                lost.append((k, bins))
        except aerospike.exception.RecordNotFound:
            lost.append((k, None))
    print(f"acknowledged and lost: {len(lost)}")
    assert lost == []
    writer.close()
    reader.close()


def connections_to(port):
    """TCP connections on this machine to 127.0.0.1:`port`, established or being opened (not
    those already closed and draining)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", "state", "syn-sent",
                          f"dst 127.0.0.1:{port}"],
                         capture_output=True, text=True, check=True).stdout
    return sum(1 for line in out.splitlines() if line.strip())


def test_a_burst_of_writes_to_a_paused_replica_opens_a_bounded_number_of_connections(tmp_path):
    # 300 writes at once whose replica is paused: each waits for its image's answer, but a
    # core opens at most 64 fabric connections to one peer (2 cores: 128); the rest wait for
    # one within their deadline, and every write answers timeout (9), none succeeds.
    nodes = two_nodes(tmp_path, SLOW_DETECTION)
    try:
        fabric = int(nodes[1].extra[nodes[1].extra.index("--fabric-port") + 1])
        rows = balance(NODE_IDS[:2], 2)
        keys = [k for k in (("test", "burst", i) for i in range(3000))
                if rows[partition_of(k)][0] == NODE_IDS[0]][:300]
        clients = [aerospike.client({"hosts": [("127.0.0.1", nodes[0].port)],
                                     "max_conns_per_node": 400,
                                     "policies": {"write": {"total_timeout": 5000,
                                                            "max_retries": 0}}}).connect()
                   for _ in range(3)]
        for c in clients:
            wait_client_nodes(c, 2)
        codes, peak = [], 0
        lock = threading.Lock()

        def put(i, k):
            try:
                clients[i % 3].put(k, {"v": i})
                code = 0
            except aerospike.exception.AerospikeError as e:
                code = e.code
            with lock:
                codes.append(code)

        os.kill(nodes[1].proc.pid, signal.SIGSTOP)
        try:
            threads = [threading.Thread(target=put, args=(i, k)) for i, k in enumerate(keys)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 10
            while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
                peak = max(peak, connections_to(fabric))
                time.sleep(0.05)
            for t in threads:
                t.join(timeout=10)
        finally:
            os.kill(nodes[1].proc.pid, signal.SIGCONT)
        print(f"\n300 writes, replica paused: peak {peak} fabric connections to it, "
              f"codes {sorted(set(codes))}")
        assert len(codes) == 300
        assert set(codes) <= {9}, sorted(set(codes))
        assert 0 < peak <= 2 * 64 + 8, peak  # + the pooled idle ones from before the pause
        for c in clients:
            c.close()
    finally:
        for n in nodes:
            n.stop()


def test_a_truncate_sent_to_one_node_truncates_the_set_on_every_member(cluster):
    # The client sends truncate to one node; the cut-off reaches every member over the fabric
    # and is durable there: no holder (master or replica) serves a truncated record, other
    # sets keep theirs, and a member restarted afterwards still does not.
    cluster.start()
    cluster.wait_formed(NODE_IDS)
    cluster.wait_stable(NODE_IDS)
    client = client_of(cluster.nodes[0].port)
    wait_client_nodes(client, 3)
    gone = [("test", "tr", i) for i in range(300)]
    kept = [("test", "keep", i) for i in range(100)]
    for k in gone + kept:
        client.put(k, {"v": k[2]})
    rows = balance(NODE_IDS, 2)
    port_of = {m: n.port for n, m in zip(cluster.nodes, NODE_IDS)}
    assert all(raw_get_result(port_of[h], k) == 0 for k in gone for h in rows[partition_of(k)])
    time.sleep(0.01)  # the cut-off (now) falls after every write above
    client.truncate("test", "tr", 0)
    deadline = time.monotonic() + 10
    while True:
        left = [(k, h) for k in gone for h in rows[partition_of(k)]
                if raw_get_result(port_of[h], k) != 2]
        if not left:
            break
        assert time.monotonic() < deadline, f"{len(left)} copies still served, e.g. {left[:3]}"
        time.sleep(0.1)
    assert all(raw_get_result(port_of[h], k) == 0 for k in kept for h in rows[partition_of(k)])
    # A member restarted keeps the cut-off it was sent (its truncate file).
    b2 = cluster.nodes[1]
    assert b2.stop() == 0
    b2.start()
    cluster.wait_formed(NODE_IDS, secs=REFORM_SECS_MAX)
    # Back from a restart its copies are subsets: it answers once it has received the full
    # ones again (a record it still had on disk would be served then, were the cut-off lost).
    cluster.wait_stable(NODE_IDS)
    held = [k for k in gone if NODE_IDS[1] in rows[partition_of(k)]]
    assert held and all(raw_get_result(b2.port, k) == 2 for k in held)
    client.close()


def raw_generation(port, key):
    """The generation a read of `key` sent straight to `port` answers (it must succeed)."""
    reply = raw_get(port, key)
    assert reply[5] == 0, reply[5]
    return struct.unpack(">I", reply[6:10])[0]


def test_a_read_that_touches_its_record_replicates_the_touch(tmp_path):
    # read-touch-ttl-percent 100 touches at once: the master stores a new version (generation
    # 2, TTL restarted) and its replica gets that version too.
    nodes = two_nodes(tmp_path, "")
    try:
        client = client_of(nodes[0].port)
        wait_client_nodes(client, 2)
        key = a1_key("touch")
        client.put(key, {"v": 1}, meta={"ttl": 1000})
        assert raw_generation(nodes[1].port, key) == 1
        _, meta, _ = client.get(key, policy={"read_touch_ttl_percent": 100})
        assert raw_generation(nodes[0].port, key) == 2
        assert raw_generation(nodes[1].port, key) == 2
        client.close()
    finally:
        for n in nodes:
            n.stop()


def test_an_undo_taken_while_a_member_is_away_stays_undone_when_it_returns(cluster):
    # The set is truncated on every member; C3 goes down; the truncate is undone on A1 and
    # B2. C3 returns with its truncate and shares it with the new view, but the undo is the
    # later change (its version is higher): every member ends with no cut-off, C3 included.
    import re

    cluster.start()
    cluster.wait_formed(NODE_IDS)
    cluster.wait_stable(NODE_IDS)
    client = client_of(cluster.nodes[0].port)
    wait_client_nodes(client, 3)
    for i in range(100):
        client.put(("test", "trundo", i), {"v": i})
    time.sleep(0.01)
    client.truncate("test", "trundo", 0)

    def cut_off(node):
        m = re.search(r"truncate_lut=(\d+)", one(node.port, "sets/test/trundo"))
        return None if m is None else int(m.group(1))

    deadline = time.monotonic() + 10
    while not all(cut_off(n) for n in cluster.nodes):
        assert time.monotonic() < deadline, [cut_off(n) for n in cluster.nodes]
        for i in range(100, 200):  # the set must have records here to be listed
            retrying(lambda: client.put(("test", "trundo", i), {"v": i}))
        time.sleep(0.1)
    c3 = cluster.nodes[2]
    assert c3.stop() == 0
    cluster.wait_formed(NODE_IDS[:2], secs=REFORM_SECS_MAX)
    assert one(cluster.nodes[0].port, "truncate-undo:namespace=test;set=trundo") == "ok"
    deadline = time.monotonic() + 10
    while any(cut_off(n) for n in cluster.nodes[:2]):
        assert time.monotonic() < deadline, "the undo did not reach B2"
        time.sleep(0.1)
    c3.start()
    cluster.wait_formed(NODE_IDS, secs=REFORM_SECS_MAX)
    cluster.wait_stable(NODE_IDS)
    for i in range(200, 400):
        retrying(lambda: client.put(("test", "trundo", i), {"v": i}))
    time.sleep(1.0)  # the cut-offs shared on the view have arrived by now
    assert [cut_off(n) for n in cluster.nodes] == [0, 0, 0]
    client.close()


def test_a_member_down_during_a_truncate_learns_the_cut_off_when_it_returns(cluster):
    # C3 is down when the set is truncated; its disk still has the set's records. When it
    # returns, the members share their cut-offs with the new view: C3 makes the cut-off
    # durable, serves none of those records, and none comes back through the migrations.
    cluster.start()
    cluster.wait_formed(NODE_IDS)
    cluster.wait_stable(NODE_IDS)
    client = client_of(cluster.nodes[0].port)
    wait_client_nodes(client, 3)
    gone = [("test", "trdown", i) for i in range(300)]
    for k in gone:
        client.put(k, {"v": k[2]})
    c3 = cluster.nodes[2]
    assert c3.stop() == 0
    cluster.wait_formed(NODE_IDS[:2], secs=REFORM_SECS_MAX)
    time.sleep(0.01)  # the cut-off (now) falls after every write above
    retrying(lambda: client.truncate("test", "trdown", 0))
    c3.start()
    cluster.wait_formed(NODE_IDS, secs=REFORM_SECS_MAX)
    cluster.wait_stable(NODE_IDS)
    rows = balance(NODE_IDS, 2)
    port_of = {m: n.port for n, m in zip(cluster.nodes, NODE_IDS)}
    deadline = time.monotonic() + 10
    while True:
        served = [(k, h) for k in gone for h in rows[partition_of(k)]
                  if raw_get_result(port_of[h], k) != 2]
        if not served:
            break
        assert time.monotonic() < deadline, f"{len(served)} truncated copies served: {served[:3]}"
        time.sleep(0.1)
    # Durable on C3: after another restart it still serves none.
    assert c3.stop() == 0
    c3.start()
    cluster.wait_formed(NODE_IDS, secs=REFORM_SECS_MAX)
    cluster.wait_stable(NODE_IDS)
    held = [k for k in gone if NODE_IDS[2] in rows[partition_of(k)]]
    assert held and all(raw_get_result(c3.port, k) == 2 for k in held)
    client.close()
