"""A full disk is "out of space" (result 8), never a server error (1), and never stops a shard:
apogee on a 64 MiB tmpfs with the default filesize (16 GiB, far more than fits) fills it with
client writes, keeps serving reads and deletes, resumes writes once deletes and
defragmentation free space, answers 8 when another process takes the last bytes (a real
ENOSPC inside the engine), restarts on the completely full filesystem and serves, and
resumes writes by itself once the other process's file is gone."""

import errno
import os
import subprocess
import re
import time

import aerospike
import pytest
from aerospike import exception as ex

from conftest import info

MIB = 1 << 20
FS_BYTES = 64 * MIB
VALUE_BYTES = 16 * 1024
# 64 MiB of 16 KiB records is about 4,000: every loop below stops well before these.
WRITES_MAX = 8_000
RESUME_WAIT_S = 15


@pytest.fixture
def small_fs(tmp_path):
    """A 64 MiB tmpfs of its own (the server's data directory), unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a 64 MiB tmpfs needs root")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def key(i):
    return ("test", "full", i)


def put(client, i, codes):
    """One write; returns whether it succeeded, counting every error code in `codes`."""
    try:
        client.put(key(i), {"v": bytes([i % 251]) * VALUE_BYTES})
        return True
    except ex.AerospikeError as e:
        codes[e.code] = codes.get(e.code, 0) + 1
        return False


def fill(client, start, codes, full_streak=100):
    """Writes new keys from `start` until `full_streak` writes in a row are refused (both
    shards full); returns the keys written."""
    written, streak, i = [], 0, start
    while streak < full_streak:
        assert i - start < WRITES_MAX, f"writes never stopped: {codes}"
        if put(client, i, codes):
            written.append(i)
            streak = 0
        else:
            streak += 1
        i += 1
    return written


def wait_for_a_write(client, start, codes):
    """Tries new keys until one is written (writes resumed); returns the key."""
    deadline = time.time() + RESUME_WAIT_S
    i = start
    while not put(client, i, codes):
        assert time.time() < deadline, f"writes did not resume: {codes}"
        time.sleep(0.05)
        i += 1
    return i


def fill_from_outside(mnt):
    """Another process's file takes every byte the filesystem has left."""
    path = mnt / "filler"
    chunk = b"\0" * MIB
    with open(path, "wb", buffering=0) as f:
        for _ in range(FS_BYTES // MIB + 1):
            try:
                f.write(chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
        while True:  # the last partial MiB, page by page
            try:
                f.write(b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
    assert os.statvfs(mnt).f_bavail == 0
    return path


def set_config(server, setting):
    reply = info(server.port, f"set-config:context=namespace;id=test;{setting}\n")
    assert reply.endswith("\tok\n"), reply


def check_reads(client, keys):
    for i in keys:
        _, _, bins = client.get(key(i))
        assert bins == {"v": bytes([i % 251]) * VALUE_BYTES}, i


def test_a_full_disk_is_out_of_space_and_the_node_keeps_serving(small_fs, apogee):
    started = time.time()
    server = apogee(name=small_fs.name).start()
    assert server.data_dir == small_fs
    client = server.client()
    codes = {}

    # Client writes stop with 8 while the filesystem still has room for every shard's headroom.
    written = fill(client, 0, codes)
    assert set(codes) == {ex.ServerFull.code}, codes
    assert len(written) * VALUE_BYTES > FS_BYTES // 4, len(written)
    assert os.statvfs(small_fs).f_bavail > 0, "client writes should stop before the fs is full"
    check_reads(client, written[::50])

    # Deletes work on the full node; defragmentation then frees blocks and writes resume.
    set_config(server, "defrag-sleep=0")
    deleted = [i for n, i in enumerate(written) if n % 4 != 0]
    for i in deleted:
        client.remove(key(i))
    kept = written[::4]
    nxt = wait_for_a_write(client, WRITES_MAX, codes)
    kept.append(nxt)
    assert ex.ServerError.code not in codes, codes

    # Another process takes the last bytes. With the percentage limits out of the way, client
    # writes use the files' free blocks down to their headroom, then get 8, never 1; reads and
    # deletes go on.
    set_config(server, "stop-writes-used-pct=100")
    set_config(server, "stop-writes-avail-pct=0")
    filler = fill_from_outside(small_fs)
    kept += fill(client, nxt + 1, codes)
    assert ex.ServerError.code not in codes, codes
    check_reads(client, kept[::25])
    for i in kept[:20]:
        client.remove(key(i))
    kept = kept[20:]

    # A restart on the completely full filesystem (the start-up warning reports less
    # than a block free).
    # The node starts, serves reads and deletes, answers writes with 8, and defragmentation
    # does not fail. Whether reserving the headroom back meets a real ENOSPC here depends on
    # how many free blocks the deletes left, so that is not asserted: the engine test
    # a_real_enospc_is_out_of_space_and_passes_once_space_is_back covers a real ENOSPC.
    client.close()
    assert server.stop() == 0
    log_before = len(server.log())
    server.start()
    client = server.client()
    check_reads(client, kept[::25])
    codes_after = {}
    for i in range(nxt + 1 + WRITES_MAX, nxt + 1 + WRITES_MAX + 50):
        put(client, i, codes_after)
    assert set(codes_after) == {ex.ServerFull.code}, codes_after
    for i in kept[:20]:
        client.remove(key(i))
    kept = kept[20:]
    time.sleep(0.5)  # a few defragmenter and space-check rounds
    restart_log = server.log()[log_before:]
    free = re.search(r"fs_free_bytes=(\d+)", restart_log)
    assert free and int(free.group(1)) < 1 << 20, restart_log  # less than one write block
    for bad in ("defragmentation failed", "device error", "storage error"):
        assert bad not in restart_log, restart_log

    # Once the other file is gone, writes resume by themselves (the live data is above the
    # default stop-writes-used-pct of 70 now, so that limit is lifted again as before).
    set_config(server, "stop-writes-used-pct=100")
    filler.unlink()
    wait_for_a_write(client, nxt + 1 + 2 * WRITES_MAX, codes)
    assert ex.ServerError.code not in codes, codes
    check_reads(client, kept[::25])
    client.close()
    assert time.time() - started < 60
