"""Starts real apogee processes on free loopback ports for the tests that drive them with the
official Python client (`aerospike` from PyPI)."""

import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import aerospike
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("APOGEE_BIN", ROOT / "target" / "debug" / "apogee"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def info(port, cmds):
    """One raw info request on a fresh connection; returns the reply text."""
    body = cmds.encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(struct.pack(">Q", (2 << 56) | (1 << 48) | len(body)) + body)
        head = recv_exactly(s, 8)
        size = struct.unpack(">Q", head)[0] & 0xFFFFFFFFFFFF
        return recv_exactly(s, size).decode()


def statistics(port):
    """The node's `statistics` info answer as a dict, over a fresh connection (`info`)."""
    text = info(port, "statistics\n").split("\t", 1)[1].strip()
    return dict(kv.split("=", 1) for kv in text.split(";") if "=" in kv)


def wait_for(pred, what, timeout=10):
    """Polls `pred` every 50 ms until it holds; fails naming `what` after `timeout` seconds."""
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def recv_exactly(sock, size):
    """`size` bytes from `sock`: MSG_WAITALL alone may return short on a socket with a
    timeout, so loop."""
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(min(size - len(data), 1 << 20))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


class Apogee:
    def __init__(self, data_dir, cores=2, extra=(), prefix=()):
        self.data_dir = Path(data_dir)
        self.cores = cores
        self.extra = list(extra)
        self.prefix = list(prefix)
        self.proc = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    def start(self):
        assert BIN.exists(), f"build the server first: {BIN} is missing"
        self.port = free_port()
        self.log_file = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*self.prefix, str(BIN), "--port", str(self.port), "--cores", str(self.cores),
             "--data-dir", str(self.data_dir), *self.extra],
            stdout=subprocess.DEVNULL, stderr=self.log_file)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"apogee exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if info(self.port, "node\n").startswith("node\t"):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"apogee did not become ready:\n{self.log()}")

    def client(self):
        return aerospike.client({"hosts": [("127.0.0.1", self.port)]}).connect()

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self):
        """SIGTERM and wait; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture
def apogee(tmp_path):
    started = []

    def make(name="data", cores=2, extra=(), prefix=(), config=None):
        """A server over `tmp_path/name`; `config`: TOML text for its --config file."""
        if config is not None:
            path = tmp_path / f"{name}.toml"
            path.write_text(config)
            extra = [*extra, "--config", str(path)]
        a = Apogee(tmp_path / name, cores, extra, prefix)
        started.append(a)
        return a

    yield make
    for a in started:
        a.kill()


@pytest.fixture
def server(apogee):
    return apogee().start()


@pytest.fixture
def client(server):
    c = server.client()
    yield c
    c.close()
