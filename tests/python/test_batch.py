"""Batches (spec §7) through the official Python client 19 (which has no get_many,
exists_many or select_many: `batch_read` does all three): present and missing keys, several
sets, an unknown namespace and selected bins; write, operate and remove rows through the
single-record path; UDF rows answered "not yet"; and malformed batch frames sent raw, after
which the node still serves."""

import base64
import socket
import struct

import aerospike
import pytest
from aerospike_helpers.batch import records as br
from aerospike_helpers.operations import operations as op

from conftest import info, recv_exactly

N = 40


@pytest.fixture
def loaded(client):
    keys = []
    for i in range(N):
        k = ("test", "s1" if i % 2 else "s2", f"k{i}")
        client.put(k, {"a": i, "b": f"v{i}", "c": [i]})
        keys.append(k)
    return keys


def records(client, keys, bins=None):
    """(result, meta, bins) per key, in order; `batch_read` is how client 19 spells get_many
    (bins None), select_many (named bins) and exists_many (bins [])."""
    res = client.batch_read(keys) if bins is None else client.batch_read(keys, bins)
    assert [r.key[:3] for r in res.batch_records] == keys
    out = []
    for r in res.batch_records:
        rec = r.record or (None, None, None)
        out.append((r.result, rec[1], rec[2] if len(rec) > 2 else None))
    return out


def test_get_many_present_and_missing(client, loaded):
    missing = [("test", "s1", "nope1"), ("test", "s3", "nope2")]
    keys = loaded[:10] + missing + loaded[10:]
    got = records(client, keys)
    assert len(got) == len(keys)
    for want, (result, meta, bins) in zip(keys, got):
        if want in missing:
            assert (result, meta, bins) == (2, None, None)
        else:
            i = int(want[2][1:])
            assert result == 0
            assert bins == {"a": i, "b": f"v{i}", "c": [i]}
            assert meta["gen"] == 1


def test_exists_many(client, loaded):
    keys = [loaded[0], ("test", "s1", "nope"), loaded[5]]
    got = records(client, keys, [])
    assert [r for r, _, _ in got] == [0, 2, 0]
    assert got[0][1]["gen"] == 1
    assert got[0][2] is None


def test_select_many(client, loaded):
    got = records(client, loaded[:6] + [("test", "s1", "nope")], ["b", "zz"])
    for (result, meta, bins), i in zip(got[:6], range(6)):
        assert result == 0 and bins == {"b": f"v{i}"}
    assert got[6][0] == 2


def test_batch_read_rows(client, loaded):
    keys = loaded[:4] + [("test", "s1", "nope")]
    res = client.batch_read(keys)
    assert [r.result for r in res.batch_records] == [0, 0, 0, 0, 2]
    assert res.batch_records[2].record[2] == {"a": 2, "b": "v2", "c": [2]}
    assert res.batch_records[4].record is None
    sel = client.batch_read(keys, ["a"])
    assert sel.batch_records[3].record[2] == {"a": 3}
    head = client.batch_read(keys, [])
    assert head.batch_records[1].result == 0
    assert head.batch_records[1].record[1]["gen"] == 1
    assert len(head.batch_records[1].record) == 2, "(key, meta): no bins"


def test_batch_read_records_with_ops_and_a_missing_namespace(client, loaded):
    rows = br.BatchRecords([
        br.Read(loaded[0], None, read_all_bins=True),
        br.Read(loaded[1], [op.read("b")]),
        br.Read(("nosuchns", "s1", "k1"), None, read_all_bins=True),
        br.Read(("test", "s1", "nope"), [op.read("a")]),
    ])
    res = client.batch_write(rows)
    codes = [r.result for r in res.batch_records]
    assert codes == [0, 0, 20, 2]
    assert res.batch_records[0].record[2]["a"] == 0
    assert res.batch_records[1].record[2] == {"b": "v1"}


def test_batch_write_rows_take_the_single_record_write_path(client, loaded):
    rows = br.BatchRecords([
        br.Write(loaded[0], [op.write("a", 99), op.read("a")]),
        br.Read(loaded[1], None, read_all_bins=True),
        br.Remove(loaded[2]),
        br.Remove(("test", "s1", "nope")),
    ])
    res = client.batch_write(rows)
    assert [r.result for r in res.batch_records] == [0, 0, 0, 2]
    assert res.batch_records[0].record[2] == {"a": 99}
    assert client.get(loaded[0])[2]["a"] == 99
    assert client.get(loaded[0])[1]["gen"] == 2
    assert client.exists(loaded[2])[1] is None


def test_rows_naming_one_record_run_in_the_order_sent(apogee):
    # Rows of different records run together; rows of one record must not overtake each other,
    # even when each must first read its record from the device (cold cache after a restart).
    server = apogee().start()
    client = server.client()
    keys = [("test", "s1", f"ordered{i}") for i in range(30)]
    for k in keys:
        client.put(k, {"n": 0})
    client.close()
    assert server.stop() == 0
    server.start()
    client = server.client()
    rows = [br.Write(k, [op.increment("n", 1), op.read("n")]) for _ in range(5) for k in keys]
    res = client.batch_write(br.BatchRecords(rows), {"total_timeout": 10_000})
    assert all(r.result == 0 for r in res.batch_records)
    for i, k in enumerate(keys):
        seen = [res.batch_records[j * len(keys) + i].record[2]["n"] for j in range(5)]
        assert seen == [1, 2, 3, 4, 5], (k, seen)
    client.close()


def test_batch_operate_and_remove(client, loaded):
    keys = loaded[:5]
    res = client.batch_operate(keys, [op.increment("a", 10), op.read("a")])
    assert [r.result for r in res.batch_records] == [0] * 5
    assert [r.record[2]["a"] for r in res.batch_records] == [10, 11, 12, 13, 14]
    res = client.batch_remove(keys[:3])
    assert [r.result for r in res.batch_records] == [0, 0, 0]
    got = records(client, keys)
    assert [r for r, _, _ in got] == [2, 2, 2, 0, 0]


def test_batch_udf_rows_run_the_record_udf_on_each_row(client, server, loaded):
    # A module that is not registered fails each row as a UDF (100); once registered, each
    # row runs it on its own record.
    res = client.batch_apply(loaded[:3], "bm", "add", ["c", 1])
    assert [r.result for r in res.batch_records] == [100, 100, 100]
    source = "function add(r, b, n) r[b] = (r[b] or 0) + n; aerospike:update(r); return r[b] end"
    content = base64.b64encode(source.encode()).decode()
    cmd = f"udf-put:filename=bm.lua;content={content};content-len={len(content)};udf-type=LUA;"
    assert info(server.port, cmd + "\n").endswith("\tok\n")
    res = client.batch_apply(loaded[:3], "bm", "add", ["n", 5])
    assert [r.result for r in res.batch_records] == [0, 0, 0]
    assert [r.record[2]["SUCCESS"] for r in res.batch_records] == [5, 5, 5]
    assert [client.get(k)[2]["n"] for k in loaded[:3]] == [5, 5, 5]


def test_a_large_batch_streams_in_several_frames(client):
    big = "x" * 4000
    keys = [("test", "big", i) for i in range(300)]
    for k in keys:
        client.put(k, {"v": big, "i": k[2]})
    got = records(client, keys + [("test", "big", "nope")])
    assert [b["i"] for _, _, b in got[:300]] == list(range(300))
    assert got[300][0] == 2


# --- raw frames -------------------------------------------------------------------------------

def batch_frame(field41):
    field = struct.pack(">IB", len(field41) + 1, 41) + field41
    header = struct.pack(">BBBBBBIIIHH", 22, 0x08, 0, 0, 0, 0, 0, 0, 1000, 1, 0)
    body = header + field
    return struct.pack(">Q", (2 << 56) | (3 << 48) | len(body)) + body


def full_row(index, digest, set_name=b"s1"):
    ns = struct.pack(">IB", 5, 0) + b"test"
    st = struct.pack(">IB", len(set_name) + 1, 1) + set_name
    return (struct.pack(">I", index) + digest + bytes([0x0a, 0x03, 0, 0])
            + struct.pack(">IHH", 0, 2, 0) + ns + st)


def repeat_row(index, digest):
    return struct.pack(">I", index) + digest + b"\x01"


def read_stream(sock):
    """Row messages as (result, index) until the LAST message; returns (rows, last result)."""
    rows = []
    while True:
        head = recv_exactly(sock, 8)
        size = struct.unpack(">Q", head)[0] & 0xFFFFFFFFFFFF
        body = recv_exactly(sock, size)
        pos = 0
        while pos < len(body):
            (_, _, _, info3, _, result, _, _, index, n_fields, n_ops) = struct.unpack(
                ">BBBBBBIIIHH", body[pos:pos + 22])
            pos += 22
            for _ in range(n_fields + n_ops):
                (sz,) = struct.unpack(">I", body[pos:pos + 4])
                pos += 4 + sz
            if info3 & 1:
                return rows, result
            rows.append((result, index))


def raw(port, frame):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(frame)
        return read_stream(s)


def test_raw_batch_with_repeat_rows(server, client, loaded):
    d0 = aerospike.calc_digest("test", "s1", "k1")
    d1 = aerospike.calc_digest("test", "s1", "nope")
    d2 = aerospike.calc_digest("test", "s1", "k3")
    data = struct.pack(">IB", 3, 0x0d) + full_row(0, d0) + repeat_row(1, d1) + repeat_row(2, d2)
    rows, last = raw(server.port, batch_frame(data))
    assert last == 0
    assert sorted(rows, key=lambda r: r[1]) == [(0, 0), (2, 1), (0, 2)]


@pytest.mark.parametrize("case", ["count_too_big", "count_too_small", "repeat_first", "truncated"])
def test_malformed_batches_are_refused_and_the_node_serves_on(server, client, loaded, case):
    d0 = aerospike.calc_digest("test", "s1", "k1")
    d1 = aerospike.calc_digest("test", "s1", "k3")
    rows = full_row(0, d0) + repeat_row(1, d1)
    data = {
        "count_too_big": struct.pack(">IB", 3, 0x0d) + rows,
        "count_too_small": struct.pack(">IB", 1, 0x0d) + rows,
        "repeat_first": struct.pack(">IB", 2, 0x0d) + repeat_row(0, d0) + repeat_row(1, d1),
        "truncated": struct.pack(">IB", 2, 0x0d) + rows[:-3],
    }[case]
    got, last = raw(server.port, batch_frame(data))
    assert got == [] and last == 4
    assert client.get(loaded[1])[2]["a"] == 1
    assert [r for r, _, _ in records(client, loaded[:3])] == [0, 0, 0]


def test_a_batch_filter_expression_filters_rows_out(client, loaded):
    from aerospike_helpers import expressions as exp
    keys = loaded[:4] + [("test", "s1", "nope")]
    policy = {"expressions": exp.GT(exp.IntBin("a"), 1).compile()}
    res = client.batch_read(keys, policy=policy)
    assert [r.result for r in res.batch_records] == [27, 27, 0, 0, 2]
    assert res.batch_records[2].record[2]["a"] == 2
    # A row's own filter wins over the batch's.
    rows = br.BatchRecords([
        br.Read(loaded[0], None, read_all_bins=True,
                policy={"expressions": exp.Eq(exp.IntBin("a"), 0).compile()}),
        br.Read(loaded[1], None, read_all_bins=True),
    ])
    res = client.batch_write(rows, policy_batch=policy)
    assert [r.result for r in res.batch_records] == [0, 27]


def test_latencies_list_batch_histograms(server, client, loaded):
    from conftest import info
    client.batch_read(loaded[:5])
    got = info(server.port, "latencies:\n")
    names = [part.split(":")[0] for part in got.split("\t", 1)[1].strip().split(";")]
    assert names[0] == "batch-index"
    assert "{test}-batch-sub-read" in names and "{test}-batch-sub-write" in names
    assert info(server.port, "latencies:hist=batch-index\n").startswith(
        "latencies:hist=batch-index\tbatch-index:msec,")


def test_a_client_leaving_mid_batch_frees_it_and_the_node_serves_on(server, client):
    big = "x" * 8000
    keys = [("test", "big", i) for i in range(400)]
    for k in keys:
        client.put(k, {"v": big})
    digests = [aerospike.calc_digest(*k) for k in keys]
    data = struct.pack(">IB", len(keys), 0x0d) + full_row(0, digests[0], b"big") + b"".join(
        repeat_row(i, d) for i, d in enumerate(digests[1:], 1))
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.sendall(batch_frame(data))
        recv_exactly(s, 8)
        s.close()  # reset: the server's next writes fail
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
        s.sendall(batch_frame(data))
        rows, last = read_stream(s)
    assert last == 0 and sorted(i for _, i in rows) == list(range(len(keys)))
    assert client.get(keys[7])[2]["v"] == big
    assert "panicked" not in server.log()


def test_a_memory_namespace_serves_batches_from_ram_through_overwrites_and_deletes(apogee):
    # A memory namespace reads records where they lie in RAM (no record cache): versions in
    # the open write block, in sealed blocks, overwritten, deleted and moved by defragmentation
    # must all read back exactly, in batches and single gets. Write-behind (commit-to-device
    # false) acknowledges a write while its bytes are still only in the open write block.
    server = apogee(
        config='[namespace.test]\nstorage-engine = "memory"\ndata-size = 268435456\n'
        "write-block-size = 131072\ncommit-to-device = false\n"
    ).start()
    client = server.client()
    n = 3000
    keys = [("test", "m", i) for i in range(n)]
    for round_ in range(3):
        for i, k in enumerate(keys):
            if round_ == 0 or i % (round_ + 1) == 0:
                client.put(k, {"i": i, "r": round_, "pad": "x" * (200 + i % 50)})
    for k in keys[::7]:
        client.remove(k)

    def want(i):
        if i % 7 == 0:
            return None
        return max(r for r in range(3) if r == 0 or i % (r + 1) == 0)

    for start in range(0, n, 500):
        got = client.batch_read(keys[start : start + 500]).batch_records
        for j, rec in enumerate(got):
            i = start + j
            if want(i) is None:
                assert rec.result == 2, (i, rec.result)
            else:
                assert rec.result == 0, (i, rec.result)
                bins = rec.record[2]
                assert (bins["i"], bins["r"], len(bins["pad"])) == (i, want(i), 200 + i % 50)
    _, _, bins = client.get(keys[1])
    assert bins["r"] == want(1)
    # Read at once after each write: the newest version may still be only in the open block.
    for i in range(300):
        k = ("test", "m", f"fresh{i}")
        client.put(k, {"v": i})
        assert client.get(k)[2] == {"v": i}
        assert client.batch_read([k, keys[1]]).batch_records[0].record[2] == {"v": i}
    client.close()
