"""Hostile info requests and values against the real binary: replies stay bounded in bytes,
time and memory; every bin name written is listed and the quota is enforced at write time; a
tab in a command keeps the reply's framing; lists and maps nested deeper than the clients can
read are refused when written."""

import socket
import struct
import time

import pytest
from conftest import recv_exactly
from aerospike import exception as ex
from aerospike_helpers import cdt_ctx
from aerospike_helpers.operations import list_operations as lo


# The server's limits (wire/src/info.rs, server/src/info.rs, bin_names.rs, ops value.rs).
INFO_COMMANDS_MAX = 1024
INFO_REQUEST_BYTES_MAX = 1 << 20
INFO_REPLY_BYTES_MAX = 16 << 20
BIN_NAMES_MAX = 65_535
DEPTH_MAX = 64
# The server may grow by about a reply and its frame while answering; far less than the
# gigabytes an unbounded reply took.
RSS_GROWTH_KIB_MAX = 160 * 1024


def info(port, cmds):
    """conftest's `info`, checking the reply's announced size against the bound first."""
    body = cmds.encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack(">Q", (2 << 56) | (1 << 48) | len(body)) + body)
        size = struct.unpack(">Q", recv_exactly(s, 8))[0] & 0xFFFFFFFFFFFF
        assert size <= INFO_REPLY_BYTES_MAX, size
        return recv_exactly(s, size).decode()


def memory_kib(server):
    """(VmRSS, VmHWM) of the server process, in KiB."""
    fields = {}
    with open(f"/proc/{server.proc.pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()[0] if value.split() else ""
    return int(fields["VmRSS"]), int(fields["VmHWM"])


def timed_info(port, body):
    started = time.monotonic()
    reply = info(port, body)
    return reply, time.monotonic() - started


def assert_framed(reply, commands):
    """One `<command>\\t<value>` line per command, in order, each with exactly one tab."""
    lines = reply.split("\n")
    assert lines[-1] == "", "reply ends with a newline"
    lines = lines[:-1]
    assert len(lines) == len(commands)
    for line, cmd in zip(lines, commands):
        assert line.count("\t") == 1, line[:200]
        assert line.split("\t")[0] == cmd.replace("\t", " ")
    return [line.split("\t")[1] for line in lines]


def write_distinct_names(client, first, count, per_record=1000):
    """Writes bins named n<first>..n<first+count-1>, `per_record` to a record."""
    for start in range(first, first + count, per_record):
        names = range(start, min(start + per_record, first + count))
        client.put(("test", "names", start), {f"n{i}": i for i in names})


def bins_count(port):
    value = info(port, "bins/test\n").split("\t", 1)[1]
    head = value.split(",", 2)
    return int(head[0].removeprefix("bin_names=")), head


def still_serves(server):
    c = server.client()
    try:
        c.put(("test", "after", 1), {"ok": 1})
        assert c.get(("test", "after", 1))[2] == {"ok": 1}
    finally:
        c.close()


def test_huge_info_requests_are_refused_in_bounded_time_and_memory(server):
    rss0, hwm0 = memory_kib(server)
    # 1 MiB of `replicas\n`: 116,508 commands, refused whole.
    body = "replicas\n" * (INFO_REQUEST_BYTES_MAX // len("replicas\n"))
    reply, secs = timed_info(server.port, body)
    assert reply == f"ERROR:4:info request over {INFO_COMMANDS_MAX} commands\n"
    assert secs < 3
    # Over 1 MiB: refused whole.
    reply, secs = timed_info(server.port, "node\n" * (INFO_REQUEST_BYTES_MAX // 5 + 1))
    assert reply == f"ERROR:4:info request over {INFO_REQUEST_BYTES_MAX} bytes\n"
    assert secs < 3
    # The most commands allowed are all answered.
    reply, secs = timed_info(server.port, "replicas\n" * INFO_COMMANDS_MAX)
    values = assert_framed(reply, ["replicas"] * INFO_COMMANDS_MAX)
    assert all(v.startswith("test:0,1,") for v in values)
    assert secs < 3
    _, hwm1 = memory_kib(server)
    assert hwm1 - max(hwm0, rss0) < RSS_GROWTH_KIB_MAX, (rss0, hwm0, hwm1)
    still_serves(server)


def test_every_name_written_is_listed_and_bins_replies_stay_bounded(server):
    c = server.client()
    write_distinct_names(c, 0, 20_000)
    # Admitted before each write ran: listed at once, none dropped.
    count, head = bins_count(server.port)
    assert count == 20_000, head
    assert head[1] == f"bin_names_quota={BIN_NAMES_MAX}"
    listed = info(server.port, "bins\n").split("\t", 1)[1].rstrip("\n")
    names = listed.removeprefix("test:").split(",")[2:]
    assert sorted(names) == sorted(f"n{i}" for i in range(20_000))

    rss0, hwm0 = memory_kib(server)
    # 1 MiB of `bins\n` (it built a 1.83 GB reply from 50 KB before): refused whole.
    reply, secs = timed_info(server.port, "bins\n" * (INFO_REQUEST_BYTES_MAX // 5))
    assert reply == f"ERROR:4:info request over {INFO_COMMANDS_MAX} commands\n"
    assert secs < 3
    # As many as allowed: answered up to the reply's bound, the rest refused line by line.
    cmds = ["bins"] * (INFO_COMMANDS_MAX - 1) + ["build"]
    reply, secs = timed_info(server.port, "".join(f"{cmd}\n" for cmd in cmds))
    assert secs < 5
    assert len(reply) <= INFO_REPLY_BYTES_MAX
    values = assert_framed(reply, cmds)
    full = f"ERROR:4:info reply over {INFO_REPLY_BYTES_MAX} bytes"
    answered = [v for v in values[:-1] if v == listed]
    refused = [v for v in values[:-1] if v == full]
    assert len(answered) + len(refused) == INFO_COMMANDS_MAX - 1
    assert len(answered) >= INFO_REPLY_BYTES_MAX // len(listed) - 2, len(answered)
    assert refused, "the bound was reached"
    assert values[-1] != full, "a small answer after the bound still fits"
    _, hwm1 = memory_kib(server)
    assert hwm1 - max(hwm0, rss0) < RSS_GROWTH_KIB_MAX, (rss0, hwm0, hwm1)
    c.close()
    still_serves(server)


def test_a_write_past_the_bin_name_quota_is_refused(apogee):
    server = apogee().start()
    c = server.client()
    write_distinct_names(c, 0, BIN_NAMES_MAX)
    assert bins_count(server.port)[0] == BIN_NAMES_MAX
    key = ("test", "quota", 1)
    with pytest.raises(ex.BinNameError) as e:
        c.put(key, {"n1": 1, "brand-new": 2})
    assert e.value.code == 21
    # Refused whole: nothing written, the name not listed.
    _, meta = c.exists(key)
    assert meta is None
    with pytest.raises(ex.BinNameError):
        c.operate(key, [lo.list_append("other-new", 1)])
    assert bins_count(server.port)[0] == BIN_NAMES_MAX
    # Names already known are still written.
    c.put(key, {"n1": 1, "n65534": 2})
    assert c.get(key)[2] == {"n1": 1, "n65534": 2}
    c.close()
    # The names, and so the quota, survive a restart.
    assert server.stop() == 0
    server.start()
    assert bins_count(server.port)[0] == BIN_NAMES_MAX
    c = server.client()
    with pytest.raises(ex.BinNameError):
        c.put(key, {"brand-new": 2})
    c.close()


def test_a_tab_in_a_command_keeps_the_reply_framed(server):
    cmds = ["node\tx", "build", "\tnamespaces", "namespace/te\tst"]
    reply = info(server.port, "".join(f"{cmd}\n" for cmd in cmds))
    values = assert_framed(reply, cmds)
    assert values[0] == "ERROR:4:tab in info command"
    assert values[1] == "8.1.2.0"
    assert values[2] == values[3] == "ERROR:4:tab in info command"


def nested(levels, kind):
    value = [] if kind == "list" else {}
    for _ in range(levels - 1):
        value = [value] if kind == "list" else {"k": value}
    return value


@pytest.mark.parametrize("kind", ["list", "map"])
def test_values_nested_past_the_limit_are_refused_at_write_time(client, kind):
    key = ("test", "deep", kind)
    client.put(key, {"b": nested(DEPTH_MAX, kind)})
    assert client.get(key)[2] == {"b": nested(DEPTH_MAX, kind)}
    for levels in (DEPTH_MAX + 1, 1000):
        # Result 4 (PARAMETER); the Python client names it InvalidRequest.
        with pytest.raises(ex.InvalidRequest) as e:
            client.put(key, {"b": nested(levels, kind)})
        assert e.value.code == 4
    # Nothing changed, and the record still reads back.
    assert client.get(key)[2] == {"b": nested(DEPTH_MAX, kind)}


def test_a_list_op_cannot_build_a_value_past_the_limit(client):
    key = ("test", "deep", "op")
    client.put(key, {"l": nested(DEPTH_MAX, "list")})
    # 32 steps down reach the list at level 33: appending a list of n levels there makes the
    # bin 33 + n levels deep.
    down = [cdt_ctx.cdt_ctx_list_index(0)] * 32
    client.operate(key, [lo.list_append("l", nested(DEPTH_MAX - 33, "list"), ctx=down)])
    after = client.get(key)[2]
    with pytest.raises(ex.InvalidRequest) as e:
        client.operate(key, [lo.list_append("l", nested(DEPTH_MAX - 32, "list"), ctx=down)])
    assert e.value.code == 4
    assert client.get(key)[2] == after
