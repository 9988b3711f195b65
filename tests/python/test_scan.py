"""Scans (spec §8) through the official Python client against the real binary: full and
partition scans, pagination with max_records and resume by partition status that return every
record exactly once, bin selection, no-bins, filter expressions, records-per-second, background
scans with ops and their job status and abort, truncated records never returned; and raw
requests: an unknown namespace and a malformed partition list get their result codes, and a
client that leaves mid-scan frees the scan while the node keeps serving."""

import itertools
import socket
import struct
import time

import aerospike
import pytest
from aerospike_helpers import expressions as exp
from aerospike_helpers.batch.records import BatchRecords, Write
from aerospike_helpers.operations import operations as op

import conftest
from conftest import info, recv_exactly

# Every server these tests start listens in 3150..3199 (this worktree's port range).
_PORTS = itertools.cycle(range(3150, 3200))


def _port_in_range():
    for _ in range(50):
        port = next(_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port in 3150..3199")


@pytest.fixture(autouse=True)
def _ports(monkeypatch):
    monkeypatch.setattr(conftest, "free_port", _port_in_range)


def partition_of(digest):
    return int.from_bytes(bytes(digest[:2]), "little") & 0xFFF


def load(client, n, set_name="demo", start=0, bin_bytes=0):
    for i in range(start, start + n):
        bins = {"i": i, "s": f"v{i}"}
        if bin_bytes:
            bins["pad"] = b"x" * bin_bytes
        client.put(("test", set_name, i), bins, policy={"key": aerospike.POLICY_KEY_SEND})


def scan_all(client, set_name="demo", policy=None, **kw):
    return client.scan("test", set_name).results(policy or {}, **kw)


def test_full_scan_returns_every_record_once_with_key_and_metadata(client):
    load(client, 2000)
    load(client, 300, set_name="other")
    got = scan_all(client)
    assert sorted(r[2]["i"] for r in got) == list(range(2000))
    key, meta, bins = got[0]
    assert key[0] == "test" and key[1] == "demo" and key[2] == bins["i"]
    assert len(key[3]) == 20 and meta["gen"] == 1
    # No set: the whole namespace.
    assert len(client.scan("test", None).results()) == 2300
    assert scan_all(client, set_name="missing") == []


def test_partition_scan_returns_exactly_its_partitions(client):
    load(client, 3000)
    everything = scan_all(client)
    for begin, count in [(0, 1), (100, 50), (4000, 96)]:
        got = scan_all(client, policy={"partition_filter": {"begin": begin, "count": count}})
        want = {r[2]["i"] for r in everything if begin <= partition_of(r[0][3]) < begin + count}
        assert sorted(r[2]["i"] for r in got) == sorted(want)
        assert all(begin <= partition_of(r[0][3]) < begin + count for r in got)


def test_pagination_with_max_records_returns_every_record_exactly_once(client):
    load(client, 20_000)
    scan = client.scan("test", "demo")
    scan.paginate()
    seen = []
    pages = 0
    while not scan.is_done():
        page = scan.results({"max_records": 1500})
        assert len(page) <= 1500
        seen.extend(r[2]["i"] for r in page)
        pages += 1
        assert pages < 100
    assert len(seen) == 20_000 and len(set(seen)) == 20_000
    assert pages >= 14


def test_an_interrupted_scan_resumes_by_partition_status_exactly(client):
    load(client, 20_000)
    first = []

    def take(*args):  # (partition id, record) with a partition filter
        first.append(args[-1][2]["i"])
        return len(first) < 7000  # False stops the scan

    scan = client.scan("test", "demo")
    scan.foreach(take, {"partition_filter": {"begin": 0, "count": 4096}})
    assert len(first) == 7000
    status = scan.get_partitions_status()
    resumed = client.scan("test", "demo").results(
        {"partition_filter": {"begin": 0, "count": 4096, "partition_status": status}}
    )
    rest = [r[2]["i"] for r in resumed]
    # The record whose callback stopped the scan is not marked received by the client, so it
    # comes again (Aerospike CE 8.1.2 does the same); every other record comes exactly once.
    assert len(rest) == len(set(rest)) and len(first) == len(set(first))
    assert set(first) & set(rest) == {first[-1]}
    assert sorted(set(first) | set(rest)) == list(range(20_000))


def test_a_million_record_scan_interrupted_and_resumed_returns_each_once(client):
    # Loaded with batch writes of 2,000 rows (a put each would take minutes in a debug build).
    total, per_batch = 1_000_000, 2_000
    for start in range(0, total, per_batch):
        rows = [
            Write(("test", "big", i), ops=[op.write("i", i)])
            for i in range(start, start + per_batch)
        ]
        done = client.batch_write(BatchRecords(rows), {"total_timeout": 30_000})
        assert {r.result for r in done.batch_records} == {0}, start
    first = []

    def take(*args):
        first.append(args[-1][2]["i"])
        return len(first) < 400_000

    scan = client.scan("test", "big")
    scan.foreach(take, {"partition_filter": {"begin": 0, "count": 4096}})
    assert len(first) == 400_000
    status = scan.get_partitions_status()
    rest = []
    client.scan("test", "big").foreach(
        lambda *args: rest.append(args[-1][2]["i"]),
        {"partition_filter": {"begin": 0, "count": 4096, "partition_status": status}},
    )
    # As in the 20,000-record test: only the record whose callback stopped the scan comes twice.
    assert len(first) == len(set(first)) and len(rest) == len(set(rest))
    assert set(first) & set(rest) == {first[-1]}
    assert len(set(first) | set(rest)) == total
    assert min(first + rest) == 0 and max(first + rest) == total - 1


def test_bin_selection_and_no_bins(client):
    load(client, 200)
    client.put(("test", "demo", "only-t"), {"t": 1})
    scan = client.scan("test", "demo")
    scan.select("s")
    got = scan.results()
    # A record without any selected bin is left out (as Aerospike does).
    assert len(got) == 200 and all(set(r[2]) == {"s"} for r in got)
    heads = []
    client.scan("test", "demo").foreach(lambda r: heads.append(r), None, {"nobins": True})
    assert len(heads) == 201 and all(r[2] == {} for r in heads)
    assert all(r[1]["gen"] == 1 for r in heads)


def test_filter_expression(client):
    load(client, 500)
    expr = exp.And(exp.GE(exp.IntBin("i"), 100), exp.LT(exp.IntBin("i"), 150)).compile()
    got = scan_all(client, policy={"expressions": expr})
    assert sorted(r[2]["i"] for r in got) == list(range(100, 150))


def test_records_per_second_throttles(client):
    load(client, 300)
    started = time.time()
    got = scan_all(client, policy={"records_per_second": 500})
    assert len(got) == 300
    assert time.time() - started >= 0.45


def test_background_scan_applies_ops_and_reports_its_job(client):
    load(client, 1000)
    expr = exp.LT(exp.IntBin("i"), 600).compile()
    scan = client.scan("test", "demo")
    scan.add_ops([op.write("bg", 1), op.increment("i", 1000)])
    job = scan.execute_background({"expressions": expr})
    deadline = time.time() + 20
    while client.job_info(job, aerospike.JOB_SCAN)["status"] != aerospike.JOB_STATUS_COMPLETED:
        assert time.time() < deadline
        time.sleep(0.05)
    assert client.job_info(job, aerospike.JOB_SCAN)["records_read"] == 600
    after = {r[2]["s"]: r[2] for r in scan_all(client)}
    touched = [b for b in after.values() if b.get("bg") == 1]
    assert len(touched) == 600 and all(b["i"] >= 1000 for b in touched)
    shown = info(conftest_port(client), f"query-show:trid={job}\n")
    assert "status=done(ok)" in shown and "job-type=background-ops" in shown


def conftest_port(client):
    return client.get_nodes()[0][1]


def test_background_scan_can_be_aborted(client):
    load(client, 3000)
    scan = client.scan("test", "demo")
    scan.add_ops([op.write("slow", 1)])
    job = scan.execute_background({"records_per_second": 200})
    port = conftest_port(client)
    time.sleep(0.5)
    assert "status=active" in info(port, f"query-show:trid={job}\n")
    assert info(port, f"query-abort:trid={job}\n").endswith("\tOK\n")
    deadline = time.time() + 10
    while client.job_info(job, aerospike.JOB_SCAN)["status"] != aerospike.JOB_STATUS_COMPLETED:
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    touched = sum(1 for r in scan_all(client) if r[2].get("slow") == 1)
    assert 0 < touched < 3000
    assert "ERROR:2:id not active" in info(port, f"query-abort:trid={job}\n")
    assert "ERROR:2:job not found" in info(port, "query-show:trid=12345\n")
    assert "ERROR:4:bad id" in info(port, "query-show:trid=abc\n")
    assert "number-of-queries-killed:0" in info(port, "query-abort-all\n")


def test_truncated_records_are_not_returned(client):
    load(client, 500)
    client.truncate("test", "demo", 0)
    load(client, 20, start=1000)
    assert sorted(r[2]["i"] for r in scan_all(client)) == list(range(1000, 1020))


# --- raw requests -------------------------------------------------------------------------

def field(t, data):
    return struct.pack(">IB", len(data) + 1, t) + data


def raw_scan(port, fields, info3=0x04, sock=None):
    """Sends one scan message; returns the connected socket."""
    body = struct.pack(">BBBBBBIIIHH", 22, 0x01, 0, info3, 0, 0, 0, 0xFFFFFFFF, 0,
                       len(fields), 0) + b"".join(fields)
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(struct.pack(">Q", (2 << 56) | (3 << 48) | len(body)) + body)
    return s


def read_messages(s):
    """Every message of the reply up to LAST: (info3, result, generation, field count)."""
    out = []
    while True:
        size = struct.unpack(">Q", recv_exactly(s, 8))[0] & 0xFFFFFFFFFFFF
        data = recv_exactly(s, size)
        off = 0
        while off < len(data):
            (_, _, _, i3, _, rc, gen, _, _, nf, no) = struct.unpack(
                ">BBBBBBIIIHH", data[off:off + 22])
            off += 22
            for _ in range(nf + no):
                off += 4 + struct.unpack(">I", data[off:off + 4])[0]
            out.append((i3, rc, gen, nf))
            if i3 & 0x01:
                return out


PIDS = b"".join(struct.pack("<H", p) for p in range(4096))


def test_bad_requests_get_result_codes_and_the_node_keeps_serving(server, client):
    load(client, 50)
    port = server.port
    for fields, code in [
        ([field(0, b"nope"), field(11, PIDS)], 20),
        ([field(0, b"test"), field(11, b"\x01\x00\x02")], 4),
        ([field(0, b"test"), field(11, b"\x00\x10")], 4),
        ([field(0, b"test"), field(12, b"\x00" * 19)], 4),
    ]:
        with raw_scan(port, fields) as s:
            msgs = read_messages(s)
        assert msgs[-1][:2] == (0x01, code), msgs
    # A well-formed raw scan: 50 records and a LAST with result 0, no done markers needed.
    with raw_scan(port, [field(0, b"test"), field(1, b"demo"), field(11, PIDS)]) as s:
        msgs = read_messages(s)
    assert len([m for m in msgs if m[3] > 0]) == 50 and msgs[-1][:2] == (0x01, 0)
    assert len(scan_all(client)) == 50


def test_a_client_leaving_mid_scan_frees_the_scan(server, client):
    load(client, 4000, bin_bytes=2000)
    port = server.port
    trid = 0x5CA9
    s = raw_scan(port, [field(0, b"test"), field(1, b"demo"), field(7, struct.pack(">Q", trid)),
                        field(11, PIDS)])
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    recv_exactly(s, 8)  # the first frame's header: the scan is under way
    time.sleep(0.3)
    assert "status=active" in info(port, f"query-show:trid={trid}\n")
    s.close()
    deadline = time.time() + 10
    while "status=active" in info(port, f"query-show:trid={trid}\n"):
        assert time.time() < deadline, "the scan kept running after its client left"
        time.sleep(0.05)
    assert "done(abandoned" in info(port, f"query-show:trid={trid}\n")
    assert len(scan_all(client)) == 4000
