"""Migration with real processes and the official Python client (issue 17): a 3-node cluster
(replication-factor 2) loaded with records takes a 4th node while a writer keeps writing,
then loses one; after each change the partitions migrate, every acknowledged write reads
back with its last value, and every record is on exactly the 2 nodes the new map names —
counted per partition with `partition-info` — and on no other (nodes drop what they no longer
hold). Every wait is bounded; times are printed (run with -s to see them)."""

import threading
import time

import aerospike
import pytest

from conftest import statistics
from test_cluster import (Cluster, balance, one, partition_of, replicas,
                          wait_client_nodes, MIGRATE_SECS_MAX)

IDS = [0xA1, 0xB2, 0xC3, 0xD4]
KEYS = 2000
WRITER_SECS_MAX = 120


def partition_counts(port):
    """{partition: records} this node holds of namespace test."""
    rows = one(port, "partition-info:namespace=test").split(";")
    header = rows[0].split(":")
    assert header[:3] == ["namespace", "partition", "state"] and header[12] == "records", header
    counts = {}
    for row in rows[1:]:
        f = row.split(":")
        counts[int(f[1])] = int(f[12])
    assert len(counts) == 4096
    return counts


def check_placement(cluster, members, values):
    """Every key reads back its last acknowledged value, and each partition's records are on
    exactly its 2 holders in the map of `members`, with none anywhere else."""
    rows = balance(members, 2)
    per_partition = {}
    for k in values:
        per_partition[partition_of(k)] = per_partition.get(partition_of(k), 0) + 1
    counts = {node_id: partition_counts(n.port)
              for n, node_id in zip(cluster.nodes, cluster.ids) if n in cluster.live()}
    # The cores publish their counts every 500 ms.
    deadline = time.monotonic() + 5
    while True:
        wrong = [(p, node_id, c[p]) for node_id, c in counts.items() for p in range(4096)
                 if c[p] != (per_partition.get(p, 0) if node_id in rows[p] else 0)]
        if not wrong or time.monotonic() > deadline:
            break
        time.sleep(0.5)
        counts = {node_id: partition_counts(n.port)
                  for n, node_id in zip(cluster.nodes, cluster.ids) if n in cluster.live()}
    assert not wrong, f"{len(wrong)} (partition, node, records) not as the map says: {wrong[:5]}"
    total = sum(int(one(n.port, "namespace/test").split("objects=")[1].split(";")[0])
                for n in cluster.live())
    assert total == 2 * len(values), total


class Writer(threading.Thread):
    """Writes increasing values to the keys in turn; records the last acknowledged value of
    each (a write that fails is in doubt: its key may hold it or the one before)."""

    def __init__(self, client, keys):
        super().__init__(daemon=True)
        self.client, self.keys = client, keys
        self.acked, self.doubt = {}, {}
        self.stop, self.ok, self.failed = threading.Event(), 0, 0

    def run(self):
        started, value = time.monotonic(), 10_000
        while not self.stop.is_set() and time.monotonic() - started < WRITER_SECS_MAX:
            for k in self.keys[:200]:
                value += 1
                try:
                    self.client.put(k, {"v": value})
                    self.acked[k] = value
                    self.ok += 1
                except aerospike.exception.AerospikeError:
                    self.doubt[k] = value
                    self.failed += 1
                if self.stop.is_set():
                    return


def check_values(client, keys, writer):
    for k in keys:
        got = client.get(k)[2]["v"]
        want = writer.acked.get(k, k[2])
        assert got == want or got == writer.doubt.get(k), (k, got, want)


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path, ids=IDS)
    yield c
    c.kill_all()


def test_a_joining_and_a_leaving_node_migrate_every_record_to_exactly_its_two_holders(cluster):
    first = IDS[:3]
    for n in cluster.nodes[:3]:
        n.start()
    cluster.wait_formed(first)
    cluster.wait_stable(first)
    policy = {"total_timeout": 5000, "max_retries": 5, "sleep_between_retries": 100}
    client = aerospike.client({"hosts": [("127.0.0.1", cluster.nodes[0].port)],
                               "policies": {"write": policy, "read": policy}}).connect()
    wait_client_nodes(client, 3)
    keys = [("test", "mig", i) for i in range(KEYS)]
    for k in keys:
        client.put(k, {"v": k[2]})
    check_placement(cluster, first, keys)

    # D4 joins while a writer keeps writing: every write is acknowledged or in doubt, and
    # after the migrations every key holds its last acknowledged value.
    writer = Writer(client, keys)
    writer.start()
    t0 = time.monotonic()
    cluster.nodes[3].start()
    cluster.wait_formed(IDS)
    took, _ = cluster.wait_stable(IDS)
    writer.stop.set()
    writer.join(timeout=30)
    print(f"\nD4 joined; migrations done {time.monotonic() - t0:.2f}s after its start; "
          f"writer {writer.ok} acknowledged, {writer.failed} in doubt")
    assert writer.ok > 0
    wait_client_nodes(client, 4)
    cluster.check_map(IDS)
    check_values(client, keys, writer)
    check_placement(cluster, IDS, keys)
    moved = sum(int(one(n.port, "namespace/test").split("migrate_record_receives=")[1]
                    .split(";")[0]) for n in cluster.nodes)
    assert moved > 0

    # B2 leaves (SIGKILL) while the writer runs again: the survivors re-form and migrate.
    writer2 = Writer(client, keys)
    writer2.acked, writer2.doubt = dict(writer.acked), dict(writer.doubt)
    writer2.start()
    t0 = time.monotonic()
    cluster.nodes[1].kill()
    rest = [IDS[0], IDS[2], IDS[3]]
    cluster.wait_formed(rest, secs=MIGRATE_SECS_MAX)
    cluster.wait_stable(rest)
    writer2.stop.set()
    writer2.join(timeout=30)
    print(f"B2 killed; re-formed and migrated in {time.monotonic() - t0:.2f}s; "
          f"writer {writer2.ok} acknowledged, {writer2.failed} in doubt")
    cluster.check_map(rest)
    check_values(client, keys, writer2)
    check_placement(cluster, rest, keys)
    for n in cluster.live():
        s = statistics(n.port)
        assert s["migrate_partitions_remaining"] == "0", s
    client.close()


def test_with_no_full_copy_left_the_master_serves_at_once_resolving_each_record(tmp_path):
    """Both nodes of a 2-node cluster restart cold after B2 missed writes: every copy is a
    subset, B2's older. Each partition's master serves at once, before its merge is in, and
    looks each record up on the other node first (duplicate resolution): a write through
    B2 lands on top of A1's newer version and is not lost to it at the merge."""
    ids = IDS[:2]
    cluster = Cluster(tmp_path, ids=ids)
    try:
        cluster.start()
        cluster.wait_formed(ids)
        cluster.wait_stable(ids)
        policy = {"total_timeout": 10000, "max_retries": 20, "sleep_between_retries": 100}
        client = aerospike.client({"hosts": [("127.0.0.1", cluster.nodes[0].port)],
                                   "policies": {"write": policy, "read": policy}}).connect()
        wait_client_nodes(client, 2)
        keys = [("test", "dupres", i) for i in range(300)]
        for k in keys:
            client.put(k, {"v": 0})
        # Records in most partitions, so the merges after the restart take a while.
        for i in range(3000):
            client.put(("test", "filler", i), {"v": i})
        # B2 dies; A1 alone takes 4 more generations of every key (B2 keeps generation 1).
        cluster.nodes[1].kill()
        cluster.wait_formed(ids[:1], secs=MIGRATE_SECS_MAX)
        for gen in range(1, 5):
            for k in keys:
                client.put(k, {"v": gen})
        client.close()
        # Both restart cold: every partition with records has no full copy anywhere.
        cluster.nodes[0].kill()
        cluster.wait_ports_free()
        t0 = time.monotonic()
        cluster.start()
        cluster.wait_formed(ids)
        # Every partition claimed by a master (the plan is in on both nodes), and the client
        # has that map: before it, a put fails at once in the client (-8, no node for the
        # partition) rather than being retried.
        deadline = time.monotonic() + 30
        while set().union(*(replicas(n.port)[0] for n in cluster.nodes)) != set(range(4096)):
            assert time.monotonic() < deadline, "partitions left unclaimed after the restart"
            time.sleep(0.05)
        client = aerospike.client({"hosts": [("127.0.0.1", cluster.nodes[1].port)],
                                   "policies": {"write": policy, "read": policy}}).connect()
        wait_client_nodes(client, 2)
        deadline = time.monotonic() + 5
        while True:
            try:
                client.put(keys[0], {"v": 100})
                break
            except aerospike.exception.InvalidNodeError:
                assert time.monotonic() < deadline, "the client never learned the map"
                time.sleep(0.1)
        for k in keys:
            client.put(k, {"v": 100})
        wrote = time.monotonic() - t0
        remaining = [int(statistics(n.port)["migrate_partitions_remaining"]) for n in cluster.nodes]
        took, _ = cluster.wait_stable(ids)
        asked = [int(one(n.port, "namespace/test").split("dup_res_ask=")[1].split(";")[0])
                 for n in cluster.nodes]
        print(f"\nrestarted; {len(keys)} writes done {wrote:.2f}s after the restart with "
              f"{remaining} partitions still migrating, merges done {took:.2f}s later; "
              f"dup_res_ask {asked}")
        # Both masters resolved against the other node's subset (so they served while merging).
        assert all(a > 0 for a in asked), asked
        for k in keys:
            _, meta, bins = client.get(k)
            assert bins["v"] == 100 and meta["gen"] >= 6, (k, meta, bins)
        client.close()
    finally:
        cluster.kill_all()


def test_a_node_joining_under_load_costs_a_client_without_retries_no_error(cluster):
    """A join is not a failure: the old masters serve until each partition's new master has
    it, and a node whose table is a moment behind a peer's (each publishes its own) waits
    for it instead of answering 11. A client that never retries sees no error at all, as
    with Aerospike CE."""
    for n in cluster.nodes[:3]:
        n.start()
    cluster.wait_formed(IDS[:3])
    cluster.wait_stable(IDS[:3])
    policy = {"total_timeout": 2000, "max_retries": 0}
    client = aerospike.client({"hosts": [("127.0.0.1", cluster.nodes[0].port)],
                               "policies": {"write": policy, "read": policy},
                               "max_error_rate": 0}).connect()
    wait_client_nodes(client, 3)
    keys = [("test", "join", i) for i in range(3000)]
    for k in keys:
        client.put(k, {"v": 0, "pad": "x" * 100})
    errors, done, stop = {}, [0], threading.Event()

    def load(start):
        i = start
        while not stop.is_set():
            k = keys[i % len(keys)]
            i += 7
            try:
                if i % 2:
                    client.put(k, {"v": i})
                else:
                    client.get(k)
                done[0] += 1
            except aerospike.exception.AerospikeError as e:
                errors[e.code] = errors.get(e.code, 0) + 1

    threads = [threading.Thread(target=load, args=(j,), daemon=True) for j in range(4)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    cluster.nodes[3].start()
    cluster.wait_formed(IDS)
    cluster.wait_stable(IDS)
    time.sleep(1)  # the client's next tend: it now routes to D4 too
    stop.set()
    for t in threads:
        t.join(timeout=10)
    handoffs = sum(int(statistics(n.port)["client_proxy_after_handoff"]) for n in cluster.nodes)
    print(f"\nD4 joined and migrations done in {time.monotonic() - t0:.1f}s: "
          f"{done[0]} operations, errors by result code {errors}, "
          f"{handoffs} proxied after a hand-off")
    assert done[0] > 1000
    # On failure, the nodes' warnings say which path answered (a stall and the write lease, a
    # proxy that failed, a table that did not settle in time). Seen in 2 of ~6 CI runs before
    # 2026-12-07: a write routed to its master whose hand-off completed before it ran answered
    # 11; it is now proxied to the new master (client_proxy_after_handoff counts them).
    assert not errors, (errors, [line[:200] for n in cluster.nodes for line in n.log().splitlines()
                                 if " WARN " in line or " ERROR " in line or "answered 11" in line][-30:])
    client.close()


def test_a_write_whose_partition_is_handed_off_before_it_runs_is_proxied_to_the_new_master(
        tmp_path):
    """A write routed to its partition's master can find, when it runs, that the partition
    was handed to a joining node meanwhile. Aerospike proxies it to the new master; so does
    Apogee (it used to answer 11, which a client without retries reports as an error). A
    debug-build fault holds every client write 200 ms on its core before it runs, so the
    hand-offs of the partitions being written land inside that window."""
    delay_ms = 200
    cluster = Cluster(tmp_path, ids=IDS, prefix=["env", f"APOGEE_FAULT_WRITE_DELAY_MS={delay_ms}"])
    try:
        for n in cluster.nodes[:3]:
            n.start()
        cluster.wait_formed(IDS[:3])
        cluster.wait_stable(IDS[:3])
        # Keys whose partitions move to D4 as their master when it joins.
        before, after = balance(IDS[:3], 2), balance(IDS, 2)
        moving, i = [], 0
        while len(moving) < 24:
            k = ("test", "handoff", i)
            p = partition_of(k)
            if after[p][0] == 0xD4 and before[p][0] != 0xD4:
                moving.append(k)
            i += 1
        policy = {"total_timeout": 3000, "max_retries": 0}
        client = aerospike.client({"hosts": [("127.0.0.1", cluster.nodes[0].port)],
                                   "policies": {"write": policy, "read": policy},
                                   "max_error_rate": 0}).connect()
        wait_client_nodes(client, 3)
        errors, acked, done, stop = {}, {}, [0], threading.Event()

        def write(mine):
            n = 0
            while not stop.is_set():
                for k in mine:
                    n += 1
                    try:
                        client.put(k, {"v": n})
                        acked[k] = n
                        done[0] += 1
                    except aerospike.exception.AerospikeError as e:
                        errors[e.code] = errors.get(e.code, 0) + 1

        threads = [threading.Thread(target=write, args=(moving[j::8],), daemon=True)
                   for j in range(8)]
        for t in threads:
            t.start()
        cluster.nodes[3].start()
        cluster.wait_formed(IDS)
        cluster.wait_stable(IDS)
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        handoffs = sum(int(statistics(n.port)["client_proxy_after_handoff"]) for n in cluster.nodes)
        print(f"\n{done[0]} writes acknowledged, errors {errors}, "
              f"{handoffs} proxied after a hand-off")
        assert not errors, [line[:200] for n in cluster.nodes for line in n.log().splitlines()
                            if "answered 11" in line or " WARN " in line][-20:]
        # With 24 partitions each written a third of the time, a hand-off with no write in
        # its window has probability (2/3)^24 < 1e-4.
        assert handoffs > 0
        # Nothing proxied was lost: each key holds its writer's last acknowledged value.
        for k in moving:
            assert client.get(k)[2]["v"] == acked[k], k
        client.close()
    finally:
        cluster.kill_all()
