"""The short CI variant of the nemesis test (tests/nemesis.py, issue 17): a 3-node cluster of
real apogee processes under a writer load of per-key increasing values, with a fixed seed, so
the same faults hit the same nodes for the same times in every run (the load's interleaving is
not fixed). Each case runs the script as a subprocess, which owns its processes and network
namespaces and removes them on every exit, and asserts on its JSON summary: every
acknowledged write reads back with its last acknowledged value or an in-doubt one, and no
generation below one acknowledged.

Every case asserts that no acknowledged write is lost; in the split case, where both sides
serve, a write lost to split brain (the generation policy kept the other side's version, as
in Aerospike AP) is reported by the script and allowed. The partition and split cases need
root and `ip netns` (network namespaces). The control case (no faults) shows the checker
reports no loss where there is none."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BIN, ROOT

SCRIPT = ROOT / "tests" / "nemesis.py"
SEED = 17
# A fault case: 2 s quiet, one or two faults of 2-6 s, each followed by its recovery (~2 s)
# and 2 s quiet, then the final read of every key written; the control run needs no fault
# time. About a minute for the file on a 2-core machine (debug build).
LOAD_SECS = 12
CONTROL_SECS = 6
KEYS = 1000
CASE_SECS_MAX = 150

def netns_available():
    if os.geteuid() != 0:
        return False
    name = f"apnemprobe{os.getpid()}"
    try:
        ok = subprocess.run(["ip", "netns", "add", name], capture_output=True,
                            timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
    if ok:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)
    return ok


def run_nemesis(tmp_path, faults, seconds=LOAD_SECS):
    """Runs the script; returns (exit code, summary dict, output). A run past its bound is sent
    SIGTERM (the script cleans up on it), then SIGKILL."""
    out_json = tmp_path / "summary.json"
    cmd = [sys.executable, str(SCRIPT), "--seconds", str(seconds), "--seed", str(SEED),
           "--faults", faults, "--keys", str(KEYS), "--threads", "3", "--bin", str(BIN),
           "--dir", str(tmp_path / "work"), "--json", str(out_json)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=CASE_SECS_MAX)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        pytest.fail(f"nemesis ran past {CASE_SECS_MAX}s:\n{output}")
    print(output)
    summary = json.loads(out_json.read_text()) if out_json.exists() else None
    return proc.returncode, summary, output


def check(tmp_path, faults, expect_faults, seconds=LOAD_SECS):
    code, s, output = run_nemesis(tmp_path, faults, seconds)
    # Harness failures (exit 2: a node that would not start, a cluster that did not recover)
    # are RuntimeErrors, told apart from lost writes (AssertionError) in the report.
    if s is None or s["harness_error"]:
        raise RuntimeError(f"nemesis harness failed (exit {code}):\n{output}")
    assert len(s["faults"]) >= expect_faults, s["faults"]
    assert s["acknowledged"] > 300, s
    assert s["unreadable"] == 0, s
    assert (s["lost"], s["generation_regressions"]) == (0, 0), (
        f"lost {s['lost']} (by fault {s['lost_by_fault']}), generation regressions "
        f"{s['generation_regressions']}; first: {s['lost_detail'][:3]}")
    assert code == 0, output


def test_control_run_without_faults_loses_nothing(tmp_path):
    check(tmp_path, "none", 0, CONTROL_SECS)


def test_kill_and_restart(tmp_path):
    check(tmp_path, "kill", 1)


def test_pause(tmp_path):
    check(tmp_path, "pause", 1)


@pytest.mark.skipif(not netns_available(), reason="partitions need root and `ip netns`")
def test_partition(tmp_path):
    check(tmp_path, "partition", 1)


@pytest.mark.skipif(not netns_available(), reason="splits need root and `ip netns`")
def test_split(tmp_path):
    check(tmp_path, "split", 1)
