"""Host requirements: Apogee runs as an ordinary user under the default 8 MiB locked-memory
limit, and bad flags or config values fail at start with a message naming the problem."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import BIN, Apogee


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to drop to an unprivileged user")
def test_runs_unprivileged_with_default_memlock(tmp_path):
    base = Path(tempfile.mkdtemp(dir="/tmp"))
    base.chmod(0o777)
    try:
        prefix = ["prlimit", "--memlock=8388608:8388608", "setpriv", "--reuid=nobody",
                  "--regid=nogroup", "--clear-groups", "--inh-caps=-all"]
        a = Apogee(base / "data", cores=2, prefix=prefix)
        a.log_path = tmp_path / "unpriv.log"
        a.start()
        try:
            c = a.client()
            c.put(("test", "demo", "u"), {"a": 1})
            assert c.get(("test", "demo", "u"))[2] == {"a": 1}
            c.close()
            assert a.stop() == 0
        finally:
            a.kill()
        owner = (base / "data" / "test" / "shard-0.dat").stat().st_uid
        assert owner != 0, "the data file was written by the unprivileged user"
        assert "memlock_kib=8192" in a.log()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("args, message", [
    (["--cores", "0"], "cores = 0 is out of range: 1..=256"),
    (["--port", "0"], "port = 0 is out of range"),
    (["--port", "70000"], "70000"),
    (["--config", "/nonexistent.toml"], "cannot read config file /nonexistent.toml"),
])
def test_bad_flags_fail_with_a_clear_message(tmp_path, args, message):
    r = subprocess.run([str(BIN), "--data-dir", str(tmp_path / "d"), *args],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert message in r.stderr, r.stderr


def test_bad_config_key_is_named(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[namespace.test]\nwrite-block-size = 4096\n")
    r = subprocess.run([str(BIN), "--config", str(cfg), "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert "namespace.test.write-block-size = 4096 is out of range: 131072..=8388608 bytes" in r.stderr
    cfg.write_text("[namespace.test]\ncommit-to-devise = true\n")
    r = subprocess.run([str(BIN), "--config", str(cfg), "--data-dir", str(tmp_path / "d")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "commit-to-devise" in r.stderr, r.stderr


def test_help_explains_every_flag():
    r = subprocess.run([str(BIN), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    for flag in ("--address", "--port", "--data-dir", "--cores", "--config"):
        assert flag in r.stdout
