#!/usr/bin/env python3
"""Nemesis test for an Apogee cluster (issue 17): writers of unique values record every
acknowledgement while a loop injects faults, one at a time, into real `apogee` processes;
after healing, every acknowledged write must read back with its last acknowledged value (or
an in-doubt one: a write that failed or timed out may take effect at any time after it was
sent, even after later ones were acknowledged), and no record may carry a generation lower
than one acknowledged.

    APOGEE_BIN=target/debug/apogee .venv/bin/python tests/nemesis.py \
        --seconds 120 --nodes 3 --seed 1 --faults kill,pause,partition

Faults (each lasts 2-6 s, then is healed, then the cluster's recovery is timed):
  kill       SIGKILL a node, restart it on the same data directory and ports
  pause      SIGSTOP a node, SIGCONT it
  partition  cut a node off from everyone (its veth link down): peers and clients
  split      cut a node off from its peers only (blackhole routes); clients still reach both
             sides, so both accept writes: a split brain, where Aerospike AP promises nothing

Network: `partition` and `split` need each node in its own network namespace (root and
`ip netns`); the nodes' veth pairs meet in a bridge inside a hub namespace, which this process
enters (setns) so the client reaches every node. Nothing is added to the machine's own network
namespace. Without partition faults the nodes run on 127.0.0.1 (`--net loopback`), with ports
from --base-port (node i: service base+10i, fabric +1, heartbeat +2).

Why namespaces and not a proxy on the fabric and heartbeat links: nodes learn a peer's
heartbeat address from the datagram's source and its fabric address from what the peer
advertises (`fabric_advertised`), so a per-link proxy would need per-peer addresses anyway;
a kernel-level cut needs no relaying thread on this 2-core machine, cuts established TCP
connections and UDP alike, and heals by one command.

Every loop is bounded in count and time; only processes this script started are signalled, by
pid; namespaces are deleted on every exit path (a SIGKILLed run's are removed by the next run,
which deletes `apnem<pid>-*` namespaces whose pid is gone). Prints a summary (and writes it as
JSON with --json) and exits 1 on any lost acknowledged write or generation regression, 2 on a
harness failure (a node that would not start, a cluster that did not recover). A write lost to
split brain (acknowledged during a `split`, its key read back at a generation at least as high:
the generation policy kept the other side's version, as Aerospike AP does) is reported apart and
does not fail the run."""

import argparse
import ctypes
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

import aerospike  # noqa: E402
from aerospike_helpers.operations import operations as op  # noqa: E402

from test_cluster import balance, partition_of  # noqa: E402

NODE_IDS = [0xA1, 0xB2, 0xC3, 0xD4, 0xE5, 0xF6, 0xA7]
NS = "test"
SET = "nemesis"
RF = 2
FAULT_SECS_MIN, FAULT_SECS_MAX = 2.0, 6.0
# A node must answer `node` within this after its start (a debug build recovering its data).
START_SECS_MAX = 60
# After a heal: the cluster must be whole and serve a probe write+read on every master within
# this, else the run stops as a harness failure (recovery is what is being measured).
RECOVER_SECS_MAX = 45
# Quiet time between faults, after recovery, so each fault starts from a whole cluster.
QUIET_SECS = 2.0
WRITE_TIMEOUT_MS = 1500
READ_TIMEOUT_MS = 2000
# The final read of every key retries transient errors within this, and all of them together
# within the second (a cluster that never recovered would otherwise hold the run for hours).
FINAL_READ_SECS_MAX = 30
FINAL_READS_SECS_MAX = 120
NETNS_PREFIX = "apnem"
SUBNET = "10.77.0"
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1


class HarnessError(Exception):
    """The harness could not do its job (a node did not start, the cluster did not recover):
    not a verdict on the writes."""


# ---------------------------------------------------------------- info protocol, raw reads

def recv_exactly(sock, size):
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def info(host, port, cmd, timeout=2.0):
    body = (cmd + "\n").encode()
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(struct.pack(">Q", (2 << 56) | (1 << 48) | len(body)) + body)
        size = struct.unpack(">Q", recv_exactly(s, 8))[0] & 0xFFFFFFFFFFFF
        text = recv_exactly(s, size).decode()
    return text.split("\t", 1)[1].strip() if "\t" in text else text.strip()


def stats(host, port):
    text = info(host, port, "statistics")
    return dict(kv.split("=", 1) for kv in text.split(";") if "=" in kv)


def raw_read(host, port, key, timeout_ms=1000):
    """(result code, generation) of a read of `key` sent straight to one node, no routing and
    no proxy semantics on the client side: what that node itself answers."""
    digest = bytes(aerospike.calc_digest(*key))
    ns = key[0].encode()
    fields = struct.pack(">IB", len(ns) + 1, 0) + ns + struct.pack(">IB", 21, 4) + digest
    header = struct.pack(">BBBBBBIIIHH", 22, 1 | 2, 0, 0, 0, 0, 0, 0, timeout_ms, 2, 0)
    body = header + fields
    with socket.create_connection((host, port), timeout=timeout_ms / 1000 + 2) as s:
        s.sendall(struct.pack(">Q", (2 << 56) | (3 << 48) | len(body)) + body)
        size = struct.unpack(">Q", recv_exactly(s, 8))[0] & 0xFFFFFFFFFFFF
        reply = recv_exactly(s, size)
    return reply[5], struct.unpack(">I", reply[6:10])[0]


# ---------------------------------------------------------------- network namespaces

def sh(*args, check=True):
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=20)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def remove_stale_namespaces():
    """Namespaces left by a run of this script that was SIGKILLed (its pid is gone)."""
    out = sh("ip", "netns", "list", check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(NETNS_PREFIX):
            continue
        pid = name[len(NETNS_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            sh("ip", "netns", "del", name, check=False)


class Netns:
    """A hub namespace with a bridge, and one namespace per node joined to it by a veth pair.
    Node i is SUBNET.(i+1); this process enters the hub (SUBNET.254)."""

    def __init__(self, nodes):
        self.hub = f"{NETNS_PREFIX}{os.getpid()}-hub"
        self.names = [f"{NETNS_PREFIX}{os.getpid()}-{i}" for i in range(nodes)]
        self.created = []
        self.cuts = set()  # (i, j) blackholed from i's side

    def create(self):
        remove_stale_namespaces()
        for name in [self.hub, *self.names]:
            sh("ip", "netns", "add", name)
            self.created.append(name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "addr", "add", f"{SUBNET}.254/24", "dev", "br0")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i, name in enumerate(self.names):
            sh("ip", "-n", self.hub, "link", "add", f"vh{i}", "type", "veth",
               "peer", "name", "eth0", "netns", name)
            sh("ip", "-n", self.hub, "link", "set", f"vh{i}", "master", "br0")
            sh("ip", "-n", self.hub, "link", "set", f"vh{i}", "up")
            sh("ip", "-n", name, "addr", "add", f"{SUBNET}.{i + 1}/24", "dev", "eth0")
            sh("ip", "-n", name, "link", "set", "eth0", "up")

    def enter_hub(self):
        """setns(2) into the hub; must run before any thread starts (it moves this thread
        only, and threads started later inherit it)."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/var/run/netns/{self.hub}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                raise HarnessError(f"setns into {self.hub}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(fd)

    def host(self, i):
        return f"{SUBNET}.{i + 1}"

    def prefix(self, i):
        return ["ip", "netns", "exec", self.names[i]]

    def isolate(self, i, cut):
        sh("ip", "-n", self.hub, "link", "set", f"vh{i}", "down" if cut else "up")

    def cut_peers(self, i, peers, cut):
        """Blackhole routes both ways between node i and each peer; the hub (client) still
        reaches everyone."""
        for j in peers:
            for a, b in ((i, j), (j, i)):
                verb = "add" if cut else "del"
                sh("ip", "-n", self.names[a], "route", verb, "blackhole", f"{self.host(b)}/32",
                   check=cut)
                (self.cuts.add if cut else self.cuts.discard)((a, b))

    def heal_all(self):
        for i in range(len(self.names)):
            sh("ip", "-n", self.hub, "link", "set", f"vh{i}", "up", check=False)
        for a, b in list(self.cuts):
            sh("ip", "-n", self.names[a], "route", "del", "blackhole", f"{self.host(b)}/32",
               check=False)
        self.cuts.clear()

    def delete(self):
        for name in reversed(self.created):
            sh("ip", "netns", "del", name, check=False)
        self.created = []


class Loopback:
    """Every node on 127.0.0.1, told apart by ports; no partitions."""

    def host(self, i):
        return "127.0.0.1"

    def prefix(self, i):
        return []


# ---------------------------------------------------------------- nodes

def set_pdeathsig():
    # A node outlives nothing: if this script dies (even SIGKILLed), its nodes are killed.
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Node:
    def __init__(self, i, net, workdir, ports, bin_path, n):
        self.i = i
        self.id = NODE_IDS[i]
        self.net = net
        self.host = net.host(i)
        self.port, self.fabric, self.hb = ports
        self.data = workdir / f"node-{self.id:X}"
        self.log_path = workdir / f"node-{self.id:X}.log"
        self.bin = bin_path
        self.n = n
        self.proc = None
        self.paused = False
        self.seeds = []

    def start(self, seeds):
        self.seeds = seeds
        args = [*self.net.prefix(self.i), str(self.bin), "--address", self.host,
                "--port", str(self.port), "--fabric-port", str(self.fabric),
                "--heartbeat-port", str(self.hb), "--node-id", f"{self.id:x}",
                "--cluster-name", "nemesis", "--cores", "2", "--data-dir", str(self.data)]
        for s in seeds:
            args += ["--mesh-seed-address-port", s]
        log = open(self.log_path, "ab")
        log.write(f"\n==== nemesis: start at {time.strftime('%H:%M:%S')} ====\n".encode())
        log.flush()
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log,
                                     preexec_fn=set_pdeathsig)
        log.close()
        self.paused = False
        deadline = time.monotonic() + START_SECS_MAX
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"node {self.id:X} exited with {self.proc.returncode}; "
                                   f"see {self.log_path}")
            try:
                if info(self.host, self.port, "node", timeout=1):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise HarnessError(f"node {self.id:X} not ready in {START_SECS_MAX}s; see {self.log_path}")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        if self.alive():
            self.proc.send_signal(sig)

    def kill(self):
        if self.alive():
            if self.paused:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.paused = False


# ---------------------------------------------------------------- the writers' record

class Ledger:
    """Per key: the last acknowledged (value, generation, time), every value whose write failed
    or timed out (in doubt), and acknowledgements whose generation went backwards."""

    def __init__(self):
        self.last_ack = {}
        self.in_doubt = {}
        self.next_value = {}
        self.ops = 0
        self.acked = 0
        self.failed = 0
        self.codes = {}
        self.ack_regressions = []  # (key, previous (value, gen), new (value, gen), time)
        self.lock = threading.Lock()


def writer(t, threads, keys, ledger, client, stop, rng_seed, t0):
    rng = random.Random(rng_seed)
    mine = list(range(t, keys, threads))
    policy = {"total_timeout": WRITE_TIMEOUT_MS, "max_retries": 0}
    while not stop.is_set():
        k = rng.choice(mine)
        value = ledger.next_value.get(k, 0) + 1
        ledger.next_value[k] = value
        key = (NS, SET, k)
        try:
            _, meta, _ = client.operate(key, [op.write("v", value)], policy=policy)
            now = time.monotonic() - t0
            with ledger.lock:
                ledger.ops += 1
                ledger.acked += 1
                prev = ledger.last_ack.get(k)
                if prev is not None and meta["gen"] <= prev[1]:
                    ledger.ack_regressions.append((k, prev[:2], (value, meta["gen"]), now))
                ledger.last_ack[k] = (value, meta["gen"], now)
        except aerospike.exception.AerospikeError as e:
            with ledger.lock:
                ledger.ops += 1
                ledger.failed += 1
                name = f"{e.code} {type(e).__name__}"
                ledger.codes[name] = ledger.codes.get(name, 0) + 1
                ledger.in_doubt.setdefault(k, set()).add(value)
            time.sleep(0.01)  # a dead or cut node's keys fail at once: no busy loop


# ---------------------------------------------------------------- the run

class Run:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.faults = [f for f in args.faults.split(",") if f and f != "none"]
        unknown = set(self.faults) - {"kill", "pause", "partition", "split"}
        if unknown:
            raise SystemExit(f"unknown faults {sorted(unknown)}: kill, pause, partition, split")
        want_netns = bool({"partition", "split"} & set(self.faults))
        net = args.net if args.net != "auto" else ("netns" if want_netns else "loopback")
        if want_netns and net != "netns":
            raise SystemExit("partition and split need --net netns (root, `ip netns`)")
        self.workdir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="nemesis-"))
        # A directory left by an earlier run holds that run's records: its nodes would come
        # back with values this run never wrote, which the checker would report as lost.
        if self.workdir.exists() and any(self.workdir.iterdir()):
            raise SystemExit(f"--dir {self.workdir} is not empty (an earlier run's data?)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.net = Netns(args.nodes) if net == "netns" else Loopback()
        self.nodes = []
        self.events = []
        self.client = None
        self.t0 = time.monotonic()

    def log(self, msg):
        print(f"[{time.monotonic() - self.t0:7.2f}s] {msg}", flush=True)

    def ports(self, i):
        base = self.args.base_port + (0 if isinstance(self.net, Netns) else 10 * i)
        return base, base + 1, base + 2

    def setup(self):
        if isinstance(self.net, Netns):
            self.net.create()
            self.net.enter_hub()
        for i in range(self.args.nodes):
            self.nodes.append(Node(i, self.net, self.workdir, self.ports(i), self.args.bin,
                                   self.args.nodes))
        for n in self.nodes:
            n.start([f"{m.host}:{m.hb}" for m in self.nodes if m is not n])
        took = self.wait_whole(START_SECS_MAX)
        self.log(f"{len(self.nodes)} nodes formed ({took:.2f}s after the last start); "
                 f"net {type(self.net).__name__.lower()}, data {self.workdir}")
        self.client = aerospike.client({
            "hosts": [(n.host, n.port) for n in self.nodes],
            "policies": {"write": {"max_retries": 0, "total_timeout": WRITE_TIMEOUT_MS},
                         "read": {"max_retries": 0, "total_timeout": READ_TIMEOUT_MS}},
        }).connect()
        deadline = time.monotonic() + START_SECS_MAX
        while len(self.client.get_nodes()) != len(self.nodes):
            if time.monotonic() > deadline:
                raise HarnessError(f"client sees {self.client.get_nodes()}")
            time.sleep(0.1)
        rows = balance(NODE_IDS[: len(self.nodes)], RF)
        self.probes = {}
        k = 0
        while len(self.probes) < len(self.nodes) and k < 100_000:
            master = rows[partition_of((NS, "probe", k))][0]
            self.probes.setdefault(master, (NS, "probe", k))
            k += 1

    def whole(self):
        """True when every node answers and reports one cluster of all nodes under one key."""
        keys = set()
        for n in self.nodes:
            try:
                s = stats(n.host, n.port)
            except (OSError, ConnectionError):
                return False
            if s.get("cluster_size") != str(len(self.nodes)) or s.get("cluster_is_member") != "true":
                return False
            keys.add(s.get("cluster_key"))
        return len(keys) == 1 and "0" not in keys

    def wait_whole(self, secs):
        start = time.monotonic()
        while not self.whole():
            if time.monotonic() - start > secs:
                raise HarnessError(f"cluster not whole within {secs}s")
            time.sleep(0.05)
        return time.monotonic() - start

    def probe_ok(self):
        """Whether a write+read succeeds on a key of every master; the last failure (master,
        partition, what went wrong) is kept for the harness error."""
        for master, key in self.probes.items():
            value = random.getrandbits(48)
            try:
                self.client.put(key, {"p": value}, policy={"total_timeout": 1000})
                got = self.client.get(key, policy={"total_timeout": 1000})[2]
                if got != {"p": value}:
                    self.probe_failure = (master, partition_of(key), f"read back {got}")
                    return False
            except aerospike.exception.AerospikeError as e:
                self.probe_failure = (master, partition_of(key), f"{e.code} {e.msg}")
                return False
        return True

    def partition_views(self):
        """What every node says of the last failing probe's partition (`partition-info` row:
        state, holders, place, working master) and of its cluster, for the harness error."""
        failure = getattr(self, "probe_failure", None)
        if failure is None:
            return "no probe failed"
        part = failure[1]
        views = []
        for n in self.nodes:
            try:
                rows = info(n.host, n.port, f"partition-info:namespace={NS}", timeout=5)
                row = next((r for r in rows.split(";") if r.startswith(f"{NS}:{part}:")), "?")
                s = stats(n.host, n.port)
                views.append(f"{n.id:X}: {row} key={s.get('cluster_key')} "
                             f"migrate_remaining={s.get('migrate_partitions_remaining')}")
            except (OSError, ConnectionError) as e:
                views.append(f"{n.id:X}: {e}")
        return "partition views: " + " | ".join(views)

    def recover(self):
        """(seconds until the cluster is whole, seconds until a write+read succeeds on a key
        of every master) after a heal."""
        start = time.monotonic()
        while not self.whole():
            if time.monotonic() - start > RECOVER_SECS_MAX:
                raise HarnessError(f"cluster not whole {RECOVER_SECS_MAX}s after a heal")
            time.sleep(0.05)
        formed = time.monotonic() - start
        while not self.probe_ok():
            if time.monotonic() - start > RECOVER_SECS_MAX:
                raise HarnessError(f"no write+read on every master {RECOVER_SECS_MAX}s after "
                                   f"a heal; last failure (master, partition, error): "
                                   f"{getattr(self, 'probe_failure', None)}; "
                                   f"{self.partition_views()}")
            time.sleep(0.05)
        return formed, time.monotonic() - start

    def inject(self, kind):
        n = self.rng.choice(self.nodes)
        secs = self.rng.uniform(FAULT_SECS_MIN, FAULT_SECS_MAX)
        start = time.monotonic() - self.t0
        self.log(f"fault {len(self.events) + 1}: {kind} {n.id:X} for {secs:.1f}s")
        if kind == "kill":
            n.kill()
            time.sleep(secs)
            n.start(n.seeds)
        elif kind == "pause":
            n.signal(signal.SIGSTOP)
            n.paused = True
            time.sleep(secs)
            n.signal(signal.SIGCONT)
            n.paused = False
        elif kind == "partition":
            self.net.isolate(n.i, True)
            time.sleep(secs)
            self.net.isolate(n.i, False)
        elif kind == "split":
            peers = [m.i for m in self.nodes if m is not n]
            self.net.cut_peers(n.i, peers, True)
            time.sleep(secs)
            self.net.cut_peers(n.i, peers, False)
        healed = time.monotonic() - self.t0
        formed, recovered = self.recover()
        event = {"kind": kind, "node": f"{n.id:X}", "start_s": round(start, 2),
                 "healed_s": round(healed, 2), "secs": round(secs, 2),
                 "formed_after_heal_s": round(formed, 2),
                 "recovered_after_heal_s": round(recovered, 2)}
        self.events.append(event)
        self.log(f"  healed; whole after {formed:.2f}s, write+read on every master after "
                 f"{recovered:.2f}s")

    def run(self):
        args = self.args
        ledger = Ledger()
        stop = threading.Event()
        self.t0 = time.monotonic()
        threads = [threading.Thread(target=writer, daemon=True,
                                    args=(t, args.threads, args.keys, ledger, self.client, stop,
                                          args.seed * 1000 + t, self.t0))
                   for t in range(args.threads)]
        for t in threads:
            t.start()
        end = self.t0 + args.seconds
        harness_error = None
        try:
            time.sleep(min(QUIET_SECS, args.seconds))
            count = 0
            # Bounded by time and by count (one fault needs at least FAULT_SECS_MIN).
            while self.faults and time.monotonic() + FAULT_SECS_MAX < end and count < args.seconds:
                self.inject(self.rng.choice(self.faults))
                count += 1
                time.sleep(QUIET_SECS)
            # The load runs its full time; with no faults (a control run) that is all it does.
            time.sleep(max(0.0, end - time.monotonic()))
        except HarnessError as e:
            harness_error = str(e)
            self.log(f"harness: {e}")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=WRITE_TIMEOUT_MS / 1000 + 10)
            for n in self.nodes:
                if n.paused:
                    n.signal(signal.SIGCONT)
                    n.paused = False
            if isinstance(self.net, Netns):
                self.net.heal_all()
        load_secs = time.monotonic() - self.t0
        if harness_error is None:
            try:
                self.wait_whole(RECOVER_SECS_MAX)
            except HarnessError as e:
                harness_error = str(e)
        return self.check(ledger, load_secs, harness_error)

    def check(self, ledger, load_secs, harness_error):
        lost, regressed, stale_in_doubt, late_in_doubt = [], [], 0, 0
        rows = balance(NODE_IDS[: len(self.nodes)], RF)
        unreadable = []
        read_policy = {"total_timeout": READ_TIMEOUT_MS}
        all_deadline = time.monotonic() + FINAL_READS_SECS_MAX
        for k in sorted(set(ledger.last_ack) | set(ledger.in_doubt)):
            key = (NS, SET, k)
            deadline = min(time.monotonic() + FINAL_READ_SECS_MAX, all_deadline)
            while True:
                try:
                    _, meta, bins = self.client.get(key, policy=read_policy)
                    got = (bins.get("v"), meta["gen"])
                    break
                except aerospike.exception.RecordNotFound:
                    got = (None, 0)
                    break
                except aerospike.exception.AerospikeError as e:
                    if time.monotonic() > deadline:
                        got = ("error", e.code)
                        break
                    time.sleep(0.1)
            if got[0] == "error":
                unreadable.append(k)
                continue
            ack = ledger.last_ack.get(k)
            doubt = ledger.in_doubt.get(k, set())
            if ack is None:
                if got[0] is not None and got[0] not in doubt:
                    lost.append(self.explain(k, None, got, rows))
                continue
            value, gen, _ = ack
            # A write that failed or timed out is in doubt: it may take effect at any time
            # after it was sent, even after later writes were acknowledged (a request a cut
            # node's TCP delivers once the link is back, a master's local write that never
            # reached its replica, merged later) — never below the acknowledged generation.
            if got[0] != value and got[0] not in doubt:
                lost.append(self.explain(k, ack, got, rows))
            elif got[1] < gen:
                regressed.append(self.explain(k, ack, got, rows))
            elif got[0] != value and got[0] > value:
                stale_in_doubt += 1
            elif got[0] != value:
                late_in_doubt += 1
        lost, split_brain = self.split_brain(lost)
        summary = {
            "seed": self.args.seed, "nodes": len(self.nodes), "seconds": round(load_secs, 1),
            "faults_requested": self.faults, "net": type(self.net).__name__.lower(),
            "keys": self.args.keys, "threads": self.args.threads,
            "operations": ledger.ops, "acknowledged": ledger.acked,
            "failed_or_in_doubt": ledger.failed,
            "failure_codes": dict(sorted(ledger.codes.items())),
            "keys_acknowledged": len(ledger.last_ack),
            "final_value_a_later_in_doubt_write": stale_in_doubt,
            "final_value_an_earlier_in_doubt_write": late_in_doubt,
            "lost": len(lost), "lost_to_split_brain": len(split_brain),
            "generation_regressions": len(regressed),
            "unreadable": len(unreadable),
            "ack_generation_regressions_during_run": len(ledger.ack_regressions),
            "ack_regressions_after_fault": self.after_fault([t for *_, t in
                                                             ledger.ack_regressions]),
            "faults": self.events, "harness_error": harness_error,
            "lost_by_fault": by_fault(lost), "regressed_by_fault": by_fault(regressed),
            "lost_detail": lost[:20], "regressed_detail": regressed[:20],
            "split_brain_detail": split_brain[:20],
            "ack_regressions_detail": [
                {"key": k, "before": b, "after": a, "at_s": round(t, 2)}
                for k, b, a, t in ledger.ack_regressions[:20]],
            "workdir": str(self.workdir),
        }
        return summary

    def split_brain(self, lost):
        """(lost, lost to split brain): a lost write whose last acknowledgement came in a
        `split` fault's window (both sides serve: Aerospike AP's split brain) and whose key
        reads back at a generation at least as high was resolved away by the generation
        policy, as in Aerospike CE; it is reported, not failed. Any other loss (a lower
        generation won, the record is gone, the acknowledgement came outside a split) fails."""
        kept, split = [], []
        for d in lost:
            fault = d["fault"]
            explained = (fault is not None and self.events[fault - 1]["kind"] == "split"
                         and d["last_ack"] is not None and d["read"]["value"] is not None
                         and d["read"]["gen"] >= d["last_ack"]["gen"])
            (split if explained else kept).append(d)
        return kept, split

    def after_fault(self, times):
        """{fault number (1-based) or "before": count} of `times` by the last fault started
        before each: acknowledgements whose generation went backwards show which fault left a
        stale copy serving, even where a later write hid it from the final check."""
        out = {}
        for t in times:
            name = "before"
            for i, e in enumerate(self.events):
                if e["start_s"] <= t:
                    name = str(i + 1)
            out[name] = out.get(name, 0) + 1
        return out

    def explain(self, k, ack, got, rows):
        """What a lost or regressed key looked like: its last acknowledgement, what the cluster
        read back, each holder's own copy (result code, generation), and the fault (1-based)
        whose window, from its start to the cluster's recovery after its heal, holds the last
        acknowledgement (None: acknowledged while the cluster was whole)."""
        key = (NS, SET, k)
        part = partition_of(key)
        copies = {}
        for n in self.nodes:
            # A node that holds no copy proxies the read to the master: only holders' answers
            # are their own copies.
            if n.id not in rows[part]:
                continue
            try:
                code, gen = raw_read(n.host, n.port, key)
                copies[f"{n.id:X}"] = {"code": code, "gen": gen}
            except OSError as e:
                copies[f"{n.id:X}"] = {"error": str(e)}
        during = None
        if ack is not None:
            during = next((i + 1 for i, e in enumerate(self.events)
                           if e["start_s"] <= ack[2] <= e["healed_s"] + e["recovered_after_heal_s"]),
                          None)
        return {"key": k, "partition": part,
                "holders": [f"{m:X}" for m in rows[part]],
                "last_ack": None if ack is None else
                {"value": ack[0], "gen": ack[1], "at_s": round(ack[2], 2)},
                "read": {"value": got[0], "gen": got[1]}, "copies": copies,
                "fault": during}

    def cleanup(self):
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001 (closing a client of dead nodes may complain)
                pass
        for n in self.nodes:
            if n.alive():
                if n.paused:
                    n.proc.send_signal(signal.SIGCONT)
                n.proc.send_signal(signal.SIGTERM)
                try:
                    n.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    n.proc.send_signal(signal.SIGKILL)
                    n.proc.wait(timeout=15)
        if isinstance(self.net, Netns):
            self.net.delete()


def by_fault(found):
    """{fault number (1-based) or "whole": keys} by the window their last acknowledgement
    came in: a fault's, from its start to the recovery after its heal, or none ("whole")."""
    out = {}
    for d in found:
        name = "whole" if d["fault"] is None else str(d["fault"])
        out[name] = out.get(name, 0) + 1
    return out


def print_summary(s):
    print("\n==== nemesis summary ====")
    print(f"seed {s['seed']}, {s['nodes']} nodes ({s['net']}), {s['seconds']}s, "
          f"{s['threads']} writers over {s['keys']} keys")
    print(f"operations {s['operations']}, acknowledged {s['acknowledged']}, failed/in doubt "
          f"{s['failed_or_in_doubt']} (codes {s['failure_codes']})")
    print(f"lost {s['lost']} (and {s['lost_to_split_brain']} to split brain, resolved by "
          f"generation as in Aerospike AP), generation regressions {s['generation_regressions']}, unreadable "
          f"{s['unreadable']}; final value a later in-doubt write: "
          f"{s['final_value_a_later_in_doubt_write']}, an earlier in-doubt write applied late: "
          f"{s['final_value_an_earlier_in_doubt_write']}; acknowledgements whose generation went "
          f"backwards during the run: {s['ack_generation_regressions_during_run']}")
    print(f"faults injected: {len(s['faults'])}")
    for i, e in enumerate(s["faults"]):
        lost = s["lost_by_fault"].get(str(i + 1), 0)
        regressed = s["regressed_by_fault"].get(str(i + 1), 0)
        backwards = s["ack_regressions_after_fault"].get(str(i + 1), 0)
        print(f"  {i + 1:3} {e['start_s']:7.2f}s {e['kind']:9} {e['node']} for {e['secs']:.1f}s: whole "
              f"{e['formed_after_heal_s']:.2f}s, write+read on every master "
              f"{e['recovered_after_heal_s']:.2f}s after the heal; lost {lost}, regressed {regressed}, acks with a lower generation "
              f"since its start {backwards}")
    for name in ("lost_detail", "regressed_detail", "split_brain_detail",
                 "ack_regressions_detail"):
        for d in s[name][:10]:
            print(f"  {name.split('_')[0]}: {json.dumps(d)}")
    if s["harness_error"]:
        print(f"harness error: {s['harness_error']}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=120, help="load and fault time (default 120)")
    p.add_argument("--nodes", type=int, default=3, choices=range(2, len(NODE_IDS) + 1))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--faults", default="kill,pause,partition",
                   help="comma list of kill, pause, partition, split; none: a control run")
    p.add_argument("--net", choices=["auto", "loopback", "netns"], default="auto",
                   help="auto: netns when partition or split is asked, else loopback")
    p.add_argument("--threads", type=int, default=4, help="writer threads (default 4)")
    p.add_argument("--keys", type=int, default=3000, help="key space (default 3000)")
    p.add_argument("--base-port", type=int, default=7200,
                   help="node i: service base+10i, fabric +1, heartbeat +2 (default 7200)")
    p.add_argument("--bin", default=os.environ.get("APOGEE_BIN", ROOT / "target/debug/apogee"))
    p.add_argument("--dir", help="work directory (default: a fresh one under /tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work directory on success")
    p.add_argument("--json", help="also write the summary here")
    args = p.parse_args(argv)
    if not Path(args.bin).exists():
        raise SystemExit(f"build the server first: {args.bin} is missing")
    run = Run(args)
    # SIGTERM (a CI timeout) unwinds through `finally` like Ctrl-C, so cleanup runs.
    def on_term(*_):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, on_term)
    summary = None
    try:
        run.setup()
        summary = run.run()
    except HarnessError as e:
        print(f"harness: {e}", file=sys.stderr)
    except KeyboardInterrupt as e:
        # `finally` stops the nodes and removes the namespaces.
        print(f"interrupted ({e or 'SIGINT'})", file=sys.stderr)
        return 130
    finally:
        run.cleanup()
    if summary is None:
        print(f"logs kept in {run.workdir}", file=sys.stderr)
        return 2
    print_summary(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    bad = summary["lost"] or summary["generation_regressions"] or summary["unreadable"]
    if bad or summary["harness_error"] or args.keep:
        print(f"logs kept in {run.workdir}")
    elif not args.dir:
        shutil.rmtree(run.workdir, ignore_errors=True)
    if bad:
        return 1
    return 2 if summary["harness_error"] else 0


if __name__ == "__main__":
    sys.exit(main())
