"""Truncate through the official Python client and raw info commands: a set or a whole
namespace (at once or up to an explicit last-update time) disappears for every read while later
writes stay, bad commands are answered with Aerospike's errors and change nothing, and a SIGKILL
right after the truncate never brings truncated records back."""

import re
import time

import pytest
from aerospike import exception as ex
from aerospike_helpers.operations import operations

from conftest import info, wait_for

N = 200


def put_all(c, set_name, keys):
    for i in keys:
        c.put(("test", set_name, i), {"v": i})


def absent(c, set_name, i):
    try:
        c.get(("test", set_name, i))
    except ex.RecordNotFound:
        return True
    return False


def set_objects(port, set_name):
    reply = info(port, f"sets/test/{set_name}\n")
    m = re.search(r"objects=(\d+)", reply)
    return int(m.group(1)) if m else 0


def ns_objects(port):
    return int(re.search(r"(?:^|;|\t)objects=(\d+)", info(port, "namespace/test\n")).group(1))


def test_truncate_set_leaves_other_sets_and_later_writes(apogee):
    a = apogee().start()
    c = a.client()
    put_all(c, "a", range(N))
    put_all(c, "b", range(N))
    before = ns_objects(a.port)
    assert before == 2 * N
    c.truncate("test", "a", 0)
    # Gone at once for every kind of read.
    for i in range(N):
        assert absent(c, "a", i), i
    _, meta = c.exists(("test", "a", 3))
    assert meta is None
    with pytest.raises(ex.RecordNotFound):
        c.operate(("test", "a", 4), [operations.read("v")])
    for i in range(N):
        assert c.get(("test", "b", i))[2] == {"v": i}
    # A write after the truncate starts a new record: generation 1, and it stays.
    c.put(("test", "a", 5), {"v": 55})
    _, meta, bins = c.get(("test", "a", 5))
    assert meta["gen"] == 1 and bins == {"v": 55}
    # The background removal drops the counts.
    wait_for(lambda: set_objects(a.port, "a") == 1, "set a to count 1 object")
    assert set_objects(a.port, "b") == N
    wait_for(lambda: ns_objects(a.port) == N + 1, "namespace objects to drop")
    assert re.search(r"truncate_lut=[1-9]", info(a.port, "sets/test/a\n"))


def test_truncate_with_lut_keeps_records_written_after_it(apogee):
    a = apogee().start()
    c = a.client()
    put_all(c, "a", range(50))
    time.sleep(0.05)
    lut = time.time_ns()
    time.sleep(0.05)
    put_all(c, "a", range(50, 100))
    c.truncate("test", "a", lut)
    for i in range(100):
        assert absent(c, "a", i) == (i < 50), i
    wait_for(lambda: set_objects(a.port, "a") == 50, "set a to count 50 objects")


def test_a_write_in_the_same_millisecond_as_the_truncate_is_ordered_by_the_reply(apogee):
    # A record written just before a truncate without `lut` (often in the same millisecond)
    # is gone; one written just after its answer is kept. 100 rounds make a shared
    # millisecond certain on loopback.
    a = apogee().start()
    c = a.client()
    for i in range(100):
        c.put(("test", "r", i), {"v": i})
        assert info(a.port, "truncate:namespace=test;set=r\n").endswith("\tok\n")
        assert absent(c, "r", i), i
        c.put(("test", "r", 1000 + i), {"v": i})
        assert c.get(("test", "r", 1000 + i))[2] == {"v": i}, i


def test_truncate_namespace(apogee):
    a = apogee().start()
    c = a.client()
    put_all(c, "a", range(N))
    put_all(c, "b", range(N))
    assert info(a.port, "truncate-namespace:namespace=test\n") == "truncate-namespace:namespace=test\tok\n"
    for i in range(N):
        assert absent(c, "a", i) and absent(c, "b", i), i
    wait_for(lambda: ns_objects(a.port) == 0, "namespace objects to reach 0")
    c.put(("test", "a", 1), {"v": 1})
    assert c.get(("test", "a", 1))[2] == {"v": 1}


BAD = [
    ("truncate:namespace=test", "ERROR:4:missing 'set'"),
    ("truncate:set=a", "ERROR:20:missing 'namespace'"),
    ("truncate:namespace=;set=a", "ERROR:20:missing 'namespace' value"),
    ("truncate:namespace=test;set=", "ERROR:4:missing 'set' value"),
    ("truncate:namespace=test;set=" + "x" * 64, "ERROR:4:'set' value too long"),
    ("truncate:namespace=test;set=a;lut=abc", "ERROR:4:would truncate to 0"),
    ("truncate:namespace=test;set=a;lut=", "ERROR:4:missing 'lut' value"),
    ("truncate:namespace=test;set=a;lut=1262304000000000000", "ERROR:4:would truncate to 0"),
    ("truncate:namespace=test;set=a;lut=99999999999999999999", "ERROR:4:would truncate in the future"),
    ("truncate-namespace:namespace=test;set=a", "ERROR:4:unexpected set name"),
    ("truncate-namespace:namespace=test;lut=x", "ERROR:4:would truncate to 0"),
    ("truncate-undo:namespace=test", "ERROR:4:missing 'set'"),
    ("truncate-namespace-undo:namespace=test;set=a", "ERROR:4:unexpected set name"),
]


def test_bad_commands_answer_aerospikes_errors_and_change_nothing(apogee):
    a = apogee().start()
    c = a.client()
    put_all(c, "a", range(20))
    future = f"truncate:namespace=test;set=a;lut={time.time_ns() + 3_600 * 10**9}"
    for cmd, want in [*BAD, (future, "ERROR:4:would truncate in the future")]:
        assert info(a.port, cmd + "\n") == f"{cmd}\t{want}\n"
    with pytest.raises(ex.AerospikeError):
        c.truncate("test", "a", time.time_ns() + 3_600 * 10**9)
    # As Aerospike: an unknown namespace is accepted and changes nothing.
    assert info(a.port, "truncate:namespace=nope;set=a\n").endswith("\tok\n")
    time.sleep(0.3)
    for i in range(20):
        assert c.get(("test", "a", i))[2] == {"v": i}
    assert not (a.data_dir / "truncate-test").exists()


def test_truncate_survives_sigkill_and_writes_after_it_stay(apogee):
    a = apogee().start()
    c = a.client()
    put_all(c, "a", range(N))
    put_all(c, "b", range(N))
    c.truncate("test", "a", 0)
    put_all(c, "a", range(1000, 1010))
    a.kill()  # at once: the background removal may not have run
    c.close()

    a.start()
    c = a.client()
    for i in range(N):
        assert absent(c, "a", i), i
        assert c.get(("test", "b", i))[2] == {"v": i}
    for i in range(1000, 1010):
        assert c.get(("test", "a", i))[2] == {"v": i}
    assert ns_objects(a.port) == N + 10
    assert set_objects(a.port, "a") == 10
    assert "truncated=" in a.log()


def test_truncate_undo_forgets_the_cut_off(apogee):
    a = apogee().start()
    c = a.client()
    put_all(c, "a", range(20))
    c.truncate("test", "a", 0)
    wait_for(lambda: set_objects(a.port, "a") == 0, "set a to empty")
    assert info(a.port, "truncate-undo:namespace=test;set=a\n").endswith("\tok\n")
    assert "truncate_lut=0" in info(a.port, "sets/test/a\n")
    # Records already removed stay removed; new writes are kept.
    assert absent(c, "a", 3)
    c.put(("test", "a", 3), {"v": 3})
    assert c.get(("test", "a", 3))[2] == {"v": 3}
    # The cut-off is gone; the undo's version stays (members compare it).
    lines = (a.data_dir / "truncate-test").read_text().splitlines()
    assert not any(line.startswith("set ") for line in lines), lines
    assert any(line.startswith("version set 61 2 ") for line in lines), lines


def test_a_bad_truncate_file_stops_the_start_naming_file_and_line(apogee):
    a = apogee()
    a.data_dir.mkdir(parents=True)
    (a.data_dir / "truncate-test").write_text("apogee-truncate 1\nnamespace 12\nset zz 5\n")
    with pytest.raises(RuntimeError) as e:
        a.start()
    assert "truncate-test line 3" in str(e.value)
