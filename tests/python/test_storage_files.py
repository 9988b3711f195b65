"""A namespace over configured files (Aerospike's `file` key): two files shared by two cores,
one region per core in each; writes acknowledged before a SIGKILL are all there after the
restart, both files hold data of both cores, and restarting with another core count re-homes
the records into the new regions."""

import os

import pytest
import aerospike
from aerospike import exception as ex

from conftest import info

RECORDS = 6000
MIB = 1 << 20


def assert_records(c, set_name, n, deleted_every, bins):
    """Every key i < n of `set_name` is gone when i % deleted_every == 0, else holds bins(i)."""
    for i in range(n):
        if i % deleted_every == 0:
            with pytest.raises(ex.RecordNotFound):
                c.get(("test", set_name, i))
        else:
            assert c.get(("test", set_name, i))[2] == bins(i), i


def config(tmp_path, files, filesize=64 * MIB, name="files.toml"):
    p = tmp_path / name
    listed = ", ".join(f'"{f}"' for f in files)
    p.write_text(
        "[namespace.test]\n"
        'storage-engine = "device"\n'
        f"file = [{listed}]\n"
        f"filesize = {filesize}\n"
        "write-block-size = 131072\n")
    return p


def test_two_files_two_cores_survive_sigkill(apogee, tmp_path):
    files = [tmp_path / "a.dat", tmp_path / "b.dat"]
    cfg = config(tmp_path, files)
    a = apogee(cores=2, extra=["--config", str(cfg)]).start()
    c = a.client()
    for i in range(RECORDS):
        c.put(("test", "f", i), {"v": i, "pad": "x" * 500})
    for i in range(0, RECORDS, 5):
        c.remove(("test", "f", i))
    a.kill()
    c.close()
    # Each file: region 0 (core 0) from byte 0, region 1 (core 1) from 32 MiB; both got
    # blocks (a header page is 4 KiB, a block 128 KiB, so more than a header means data).
    for f in files:
        data = f.read_bytes()
        assert data[:8] == b"APOGEEDB"
        assert data[32 * MIB:32 * MIB + 8] == b"APOGEEDB", f"{f}: core 1 wrote no region"
        assert any(data[4096:32 * MIB]), f"{f}: core 0 wrote no block"
        assert any(data[32 * MIB + 4096:]), f"{f}: core 1 wrote no block"
    assert not (a.data_dir / "test").exists() or not any((a.data_dir / "test").glob("shard-*"))

    a.start()
    c = a.client()
    assert_records(c, "f", RECORDS, 5, lambda i: {"v": i, "pad": "x" * 500})
    c.close()
    a.stop()

    # Another core count (or file size) moves every region boundary: the data is re-homed
    # through a staging copy under the data directory, there and back, and nothing is lost.
    bigger = config(tmp_path, files, filesize=96 * MIB, name="bigger.toml")
    for cores, conf in ((3, cfg), (2, cfg), (2, bigger)):
        b = apogee(cores=cores, extra=["--config", str(conf)])
        before = b.log().count("re-homed data to the new core count")
        b.start()
        assert b.log().count("re-homed data to the new core count") == before + 1
        c = b.client()
        assert_records(c, "f", RECORDS, 5, lambda i: {"v": i, "pad": "x" * 500})
        c.close()
        b.stop()
        assert not list(b.data_dir.glob("test.rehome-stage*")), "staging copy left behind"


def loop_device(tmp_path, size):
    """A loop device over a sparse file, or None where this machine cannot make one."""
    import shutil
    import subprocess
    if os.geteuid() != 0 or not shutil.which("losetup"):
        return None
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(size)
    r = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else None


def test_raw_device_survives_sigkill(apogee, tmp_path):
    import subprocess
    dev = loop_device(tmp_path, 128 * MIB)
    if dev is None:
        pytest.skip("no loop device on this machine (needs root and losetup)")
    try:
        a = apogee(cores=2, config=f'[namespace.test]\ndevice = ["{dev}"]\n'
                                   "write-block-size = 131072\n").start()
        c = a.client()
        for i in range(3000):
            c.put(("test", "d", i), {"v": i, "p": "y" * 300})
        a.kill()
        c.close()
        a.start()
        c = a.client()
        for i in range(3000):
            assert c.get(("test", "d", i))[2]["v"] == i, i
        c.close()
        a.stop()
        # Core 1's region starts half-way through the device.
        with open(dev, "rb") as f:
            f.seek(64 * MIB)
            assert f.read(8) == b"APOGEEDB"
    finally:
        subprocess.run(["losetup", "-d", dev], check=False)


def test_memory_namespace_serves_from_ram_and_forgets_at_restart(apogee):
    a = apogee(cores=2, config='[namespace.test]\nstorage-engine = "memory"\n'
                               f"data-size = {64 * MIB}\nwrite-block-size = 131072\n").start()
    c = a.client()
    for i in range(2000):
        c.put(("test", "m", i), {"v": i, "l": [i]})
    for i in range(2000):
        c.operate(("test", "m", i), [{"op": aerospike.OPERATOR_INCR, "bin": "v", "val": 1}])
    for i in range(0, 2000, 4):
        c.remove(("test", "m", i))
    assert_records(c, "m", 2000, 4, lambda i: {"v": i + 1, "l": [i]})
    stats = info(a.port, "namespace/test\n")
    assert "objects=1500" in stats, stats
    assert f"data_total_bytes={64 * MIB}" in stats, stats
    c.close()
    assert not list(a.data_dir.glob("**/*.dat")), "a memory namespace wrote a data file"
    a.stop()
    a.start()
    c = a.client()
    with pytest.raises(ex.RecordNotFound):
        c.get(("test", "m", 1))
    c.close()


def test_memory_persisted_to_a_file_survives_sigkill(apogee, tmp_path):
    f = tmp_path / "mem.dat"
    a = apogee(cores=2, config='[namespace.test]\nstorage-engine = "memory"\n'
                               f'file = "{f}"\nfilesize = {64 * MIB}\nwrite-block-size = 131072\n'
               ).start()
    c = a.client()
    for i in range(3000):
        c.put(("test", "p", i), {"v": i})
    for i in range(0, 3000, 3):
        c.remove(("test", "p", i))
    a.kill()
    c.close()
    assert f.read_bytes()[:8] == b"APOGEEDB"
    a.start()
    c = a.client()
    assert_records(c, "p", 3000, 3, lambda i: {"v": i})
    c.close()
