"""A node under hostile clients and operator mistakes, driven as a real process: stalled
partial frames, connection floods past proto-fd-max and the file limit, a second server on the
same port or data directory, clients connecting the moment a restarted node opens its port,
and a write that panics. Each test asserts the bounded outcome and that other clients stay
served."""

import socket
import struct
import subprocess
import time

import aerospike
import pytest

from conftest import BIN, free_port, info, wait_for

MESSAGE_HEADER = 3
INFO_HEADER = 1


def proto(msg_type, size):
    return struct.pack(">Q", (2 << 56) | (msg_type << 48) | size)


def rss_kib(pid, key="VmRSS"):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


def stats(port):
    text = info(port, "statistics\n").split("\t", 1)[1].strip()
    return dict(kv.split("=", 1) for kv in text.split(";"))


def closed_by_server(sock, timeout=5.0):
    """True when the server closed the connection (EOF or reset) within `timeout`."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_stalled_partial_frames_hold_bounded_memory(server):
    """1,000 connections each announce a 128 MiB body and send 100 bytes of it, then stall;
    four more send 100 MiB each. The node holds what arrived (not what was announced), at most
    one 128 MiB partial frame per core, and closes the stalled ones after 5 s."""
    pid = server.proc.pid
    c = server.client()
    c.put(("test", "demo", "k"), {"a": 1})
    base = rss_kib(pid)
    stalled = []
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", server.port))
            s.sendall(proto(MESSAGE_HEADER, 128 << 20) + b"x" * 100)
            stalled.append(s)
        time.sleep(0.5)
        # 100 bytes and a connection each: well under 64 KiB per connection.
        assert rss_kib(pid) - base < 32 * 1024, (base, rss_kib(pid))
        big = []
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", server.port))
            try:
                s.sendall(proto(MESSAGE_HEADER, 128 << 20) + b"y" * (100 << 20))
            except OSError:
                pass  # closed by the server: its core's partial-frame budget is spent
            big.append(s)
        # Bound: the 1,000 small ones, plus one largest frame per core (2 cores).
        bound_kib = 32 * 1024 + 2 * 128 * 1024 + 16 * 1024
        assert rss_kib(pid, "VmHWM") - base < bound_kib, (base, rss_kib(pid, "VmHWM"))
        # The official client is served meanwhile.
        assert c.get(("test", "demo", "k"))[2] == {"a": 1}
        st = stats(server.port)
        assert int(st["client_frames_over_budget"]) >= 2, st
        # Every stalled frame is closed after the stall limit (5 s), and its memory returned.
        wait_for(lambda: all(closed_by_server(s, 0.01) for s in stalled[:20] + big),
                 "stalled frames closed", timeout=15)
        wait_for(lambda: int(stats(server.port)["client_frames_stalled"]) >= 1000,
                 "stall count", timeout=15)
        wait_for(lambda: rss_kib(pid) - base < 64 * 1024, "memory released", timeout=10)
        assert c.get(("test", "demo", "k"))[2] == {"a": 1}
    finally:
        for s in stalled:
            s.close()
    # Repeats are folded into rate-limited lines, not one per connection.
    assert server.log().count("stopped arriving mid-frame") <= 4


def test_connections_past_proto_fd_max_are_closed_and_idle_ones_reaped(apogee):
    server = apogee(config="[service]\nproto-fd-max = 20\nproto-fd-idle-ms = 1500\n").start()
    # The start-up probes' connections are closed: only the one asking is open.
    wait_for(lambda: stats(server.port)["client_connections"] == "1", "probes closed")
    time.sleep(0.5)  # and the connection that asked
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    try:
        # Each holds a slot once accepted: prove it with a request on every one.
        for s in held:
            body = b"node\n"
            s.sendall(proto(INFO_HEADER, len(body)) + body)
            size = struct.unpack(">Q", s.recv(8, socket.MSG_WAITALL))[0] & 0xFFFFFFFFFFFF
            assert s.recv(size, socket.MSG_WAITALL).startswith(b"node\t")
        extra = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(50)]
        assert all(closed_by_server(s) for s in extra), "over the limit: closed at once"
        # Idle past proto-fd-idle-ms: reaped, so an official client connects again.
        wait_for(lambda: all(closed_by_server(s, 0.01) for s in held), "idle reaping")
        c = server.client()
        c.put(("test", "demo", 1), {"a": 1})
        assert c.get(("test", "demo", 1))[2] == {"a": 1}
        st = stats(server.port)
        assert int(st["client_connections_refused"]) >= 50, st
        assert int(st["reaped_fds"]) >= 20, st
        c.close()
    finally:
        for s in held:
            s.close()
    assert server.log().count("refusing client connections") <= 4


def test_the_default_limit_fits_the_file_limit(apogee):
    """With a file limit of 400, the default proto-fd-max (15,000) is lowered to fit, so a
    flood of connections is refused cleanly instead of failing accept with EMFILE."""
    server = apogee(prefix=["prlimit", "--nofile=400:400", "--"]).start()
    assert "the file limit (ulimit -n) is below what the default proto-fd-max needs" in server.log()
    flood = []
    try:
        for _ in range(300):
            flood.append(socket.create_connection(("127.0.0.1", server.port)))
        time.sleep(0.5)
        assert int(stats_after_closing_one(flood, server.port)["client_connections_refused"]) > 0
    finally:
        for s in flood:
            s.close()
    c = server.client()
    c.put(("test", "demo", 1), {"a": 1})
    assert c.get(("test", "demo", 1))[2] == {"a": 1}
    c.close()
    assert "Too many open files" not in server.log()


def stats_after_closing_one(held, port):
    """`statistics` while the flood holds every slot: free one first so the request gets in."""
    held.pop(0).close()
    time.sleep(0.2)
    return stats(port)


def test_a_second_server_on_the_same_port_or_data_directory_refuses_to_start(apogee, tmp_path):
    first = apogee("first").start()
    # Same port, another data directory.
    other = subprocess.run(
        [str(BIN), "--port", str(first.port), "--cores", "1", "--data-dir", str(tmp_path / "other")],
        capture_output=True, text=True, timeout=30)
    assert other.returncode != 0
    assert f"cannot listen on 127.0.0.1:{first.port}: the port is already in use" in other.stderr
    # Same data directory, another port.
    same_dir = subprocess.run(
        [str(BIN), "--port", str(free_port()), "--cores", "1", "--data-dir", str(first.data_dir)],
        capture_output=True, text=True, timeout=30)
    assert same_dir.returncode != 0
    assert f"is in use by another apogee process (pid {first.proc.pid})" in same_dir.stderr
    # Fresh clients all reach the first server, which still has every record.
    c = first.client()
    for i in range(20):
        c.put(("test", "demo", i), {"i": i})
    c.close()
    for i in range(20):
        fresh = first.client()
        assert fresh.get(("test", "demo", i))[2] == {"i": i}
        fresh.close()


def test_a_client_connecting_the_moment_the_port_opens_sees_every_record(apogee):
    """After a SIGKILL, the port opens only once every shard has recovered: a client polling
    for the port sees all the records and all the set counts on its first request."""
    records = 100_000
    server = apogee(cores=4).start()
    bench = BIN.parent / "apogee-bench"
    load = subprocess.run(
        [str(bench), "run", "--port", str(server.port), "--phase", "load", "--records",
         str(records), "--bins", "1", "--bin-bytes", "8", "--connections", "256"],
        capture_output=True, text=True, timeout=300)
    assert load.returncode == 0, load.stderr
    assert f"{records} ok, 0 errors" in load.stdout, load.stdout
    server.kill()
    port = server.port
    proc = subprocess.Popen(
        [str(BIN), "--port", str(port), "--cores", "4", "--data-dir", str(server.data_dir)],
        stdout=subprocess.DEVNULL, stderr=open(server.log_path, "ab"))
    server.proc = proc
    deadline = time.time() + 60
    first = None
    while first is None:
        assert time.time() < deadline, "the restarted node never opened its port"
        assert proc.poll() is None, server.log()
        try:
            first = info(port, "namespace/test\nsets/test/usertable\n")
        except OSError:
            time.sleep(0.001)
    lines = dict(line.split("\t", 1) for line in first.strip().split("\n"))
    ns = dict(kv.split("=", 1) for kv in lines["namespace/test"].split(";"))
    assert ns["objects"] == str(records), ns["objects"]
    assert f":objects={records}:" in lines["sets/test/usertable"], lines
    assert "recovering" in server.log() or "apogee is serving" in server.log()


def test_a_write_that_panics_poisons_its_shard_and_reads_go_on(apogee):
    server = apogee(cores=1, prefix=["env", "APOGEE_FAULT_PANIC_BIN=boom"]).start()
    c = server.client()
    c.put(("test", "demo", "before"), {"a": 1})
    with pytest.raises(aerospike.exception.ServerError):
        c.put(("test", "demo", "x"), {"boom": 1})
    # Writes are refused from now on; reads go on.
    for key in ("before", "other"):
        with pytest.raises(aerospike.exception.ServerError):
            c.put(("test", "demo", key), {"a": 2})
    assert c.get(("test", "demo", "before"))[2] == {"a": 1}
    assert stats(server.port)["shards_poisoned"] == "1"
    assert server.log().count("this shard is poisoned") == 1
    c.close()
    # A restart recovers from what is on disk and takes writes again.
    assert server.stop() == 0
    server.start()
    c = server.client()
    c.put(("test", "demo", "after"), {"a": 3})
    assert c.get(("test", "demo", "before"))[2] == {"a": 1}
    c.close()
