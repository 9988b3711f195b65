"""Durability through the official Python client: SIGKILL right after the last acknowledged
write loses nothing; flipped bytes on disk are detected, counted and never served; a clean
SIGTERM exits 0 with everything flushed."""

import re
import time

import pytest
from aerospike import exception as ex

from conftest import info

RECORDS = 20_000


def expected(i):
    if i % 7 == 0:
        return None
    return i * 10 + (2 if i % 10 == 0 else 1)


def test_sigkill_after_last_ack_loses_nothing(apogee):
    a = apogee(cores=2).start()
    c = a.client()
    for i in range(RECORDS):
        c.put(("test", "crash", i), {"v": i * 10 + 1})
    for i in range(RECORDS):
        if i % 7 == 0:
            c.remove(("test", "crash", i))
        elif i % 10 == 0:
            c.put(("test", "crash", i), {"v": i * 10 + 2})
    a.kill()  # the moment the last write was acknowledged
    c.close()

    a.start()
    c = a.client()
    for i in range(RECORDS):
        want = expected(i)
        if want is None:
            with pytest.raises(ex.RecordNotFound):
                c.get(("test", "crash", i))
        else:
            assert c.get(("test", "crash", i))[2] == {"v": want}, i
    c.close()


def test_flipped_bytes_are_detected_and_never_served(apogee):
    a = apogee(cores=1).start()
    c = a.client()
    for i in range(500):
        c.put(("test", "corrupt", i), {"v": f"value-{i:05d}-MARKER"})
    # Key 250 also has an older good version; key 300 has only one version.
    c.put(("test", "corrupt", 250), {"v": "newer-version-of-250"})
    c.close()
    assert a.stop() == 0

    data_file = a.data_dir / "test" / "shard-0.dat"
    raw = bytearray(data_file.read_bytes())
    for marker in (b"value-00300-MARKER", b"newer-version-of-250"):
        at = raw.find(marker)
        assert at > 0 and raw.find(marker, at + 1) == -1
        raw[at + 3] ^= 0xFF
    data_file.write_bytes(bytes(raw))

    a.start()
    c = a.client()
    with pytest.raises(ex.RecordNotFound):
        c.get(("test", "corrupt", 300))
    assert c.get(("test", "corrupt", 250))[2] == {"v": "value-00250-MARKER"}, \
        "the previous good version is served"
    for i in range(500):
        if i not in (250, 300):
            assert c.get(("test", "corrupt", i))[2] == {"v": f"value-{i:05d}-MARKER"}
    c.close()
    log = a.log()
    assert re.search(r"bad_records=2\b", log), log
    assert "bad_records_skipped=2" in info(a.port, "namespace/test\n")


def test_sigterm_flushes_and_exits_zero(apogee):
    # commit-to-device off: acknowledged from memory, so only the shutdown flush saves them.
    a = apogee(config="[namespace.test]\ncommit-to-device = false\nflush-max-ms = 100000\n").start()
    c = a.client()
    for i in range(1000):
        c.put(("test", "term", i), {"v": i})
    c.close()
    assert a.stop() == 0
    assert "apogee stopped cleanly" in a.log()
    a.start()
    c = a.client()
    for i in range(1000):
        assert c.get(("test", "term", i))[2] == {"v": i}
    c.close()


def test_expiry_sweep_removes_expired_records(apogee):
    a = apogee(config="[namespace.test]\nnsup-period = 1\n").start()
    c = a.client()
    c.put(("test", "exp", "short"), {"a": 1}, meta={"ttl": 1})
    c.put(("test", "exp", "long"), {"a": 2})
    stats = lambda: dict(kv.split("=", 1) for kv in
                         info(a.port, "namespace/test\n").split("\t", 1)[1].strip().split(";"))
    assert stats()["objects"] == "2"
    deadline = time.time() + 10
    while stats()["objects"] != "1" and time.time() < deadline:
        time.sleep(0.2)
    s = stats()
    assert s["objects"] == "1" and s["expired_objects"] == "1" and s["tombstones"] == "1", s
    with pytest.raises(ex.RecordNotFound):
        c.get(("test", "exp", "short"))
    c.close()
    assert a.stop() == 0
    a.start()
    c = a.client()
    with pytest.raises(ex.RecordNotFound):
        c.get(("test", "exp", "short"))
    assert c.get(("test", "exp", "long"))[2] == {"a": 2}
    c.close()


def test_stop_writes_fails_writes_with_code_8_and_keeps_reads(apogee):
    a = apogee(cores=1, config="[namespace.test]\nwrite-block-size = 131072\n"
                               f"filesize = {4096 + 10 * 131072}\n").start()
    c = a.client()
    written = 0
    with pytest.raises(ex.AerospikeError) as err:
        while written < 5000:
            c.put(("test", "full", written), {"v": b"x" * 1000})
            written += 1
    assert err.value.code == 8, err.value
    assert 500 < written < 5000
    assert c.get(("test", "full", 0))[2] == {"v": b"x" * 1000}, "reads keep working"
    for i in range(written):
        c.remove(("test", "full", i))  # deletes pass during stop-writes
    deadline = time.time() + 10
    while True:
        try:
            c.put(("test", "full", "after"), {"v": 1})
            break
        except ex.AerospikeError as e:
            assert e.code == 8 and time.time() < deadline, e
            time.sleep(0.2)  # defragmentation frees the space in the background
    assert c.get(("test", "full", "after"))[2] == {"v": 1}
    c.close()


def test_changing_the_core_count_rehomes_the_data(apogee):
    a = apogee(cores=2).start()
    c = a.client()
    for i in range(2000):
        c.put(("test", "rehome", i), {"v": i})
    for i in range(0, 2000, 5):
        c.remove(("test", "rehome", i))
    c.close()
    assert a.stop() == 0
    for cores in (1, 3):
        a.cores = cores
        a.start()
        c = a.client()
        for i in range(2000):
            if i % 5 == 0:
                with pytest.raises(ex.RecordNotFound):
                    c.get(("test", "rehome", i))
            else:
                assert c.get(("test", "rehome", i))[2] == {"v": i}, (cores, i)
        c.put(("test", "rehome", f"after-{cores}"), {"v": cores})
        c.close()
        assert a.stop() == 0
        assert f"to_cores={cores}" in a.log(), a.log()
        shards = sorted(p.name for p in (a.data_dir / "test").iterdir())
        assert shards == [f"shard-{n}.dat" for n in range(cores)], shards
        assert not list(a.data_dir.glob("test.rehome-*"))
    a.start()
    c = a.client()
    assert c.get(("test", "rehome", "after-1"))[2] == {"v": 1}
    assert c.get(("test", "rehome", "after-3"))[2] == {"v": 3}
    c.close()
