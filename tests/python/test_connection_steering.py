"""Connections are served by the core pinned to the CPU their packets arrive on
(server/src/steering.rs): on loopback, the CPU the client ran on when it connected. A client
process pinned to each CPU in turn opens a connection and reads, over that same connection,
which core serves it (`client_connections_by_core` in `statistics`). Which core accepts is
the kernel's choice, so the debug build's `APOGEE_FAULT_ACCEPT_CORE` makes one core accept
everything: a client on the other CPU is then served there only if it was handed over."""

import multiprocessing
import os

import pytest

from conftest import statistics

ROUNDS = 4
ACCEPTING = 1


def by_core_seen_from(cpu, port, out):
    """In a process pinned to `cpu`: connect, ask `statistics` on that connection."""
    os.sched_setaffinity(0, {cpu})
    by_core = statistics(port)["client_connections_by_core"]
    out.put([int(n) for n in by_core.split(",")])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or os.cpu_count() < 2,
                    reason="needs two CPUs for two pinned cores")
def test_a_connection_is_served_by_the_core_on_its_cpu(apogee):
    server = apogee(cores=2, prefix=["env", f"APOGEE_FAULT_ACCEPT_CORE={ACCEPTING}"]).start()
    cpus = sorted(os.sched_getaffinity(0))[:2]
    # The server pins core k to the k-th online CPU; this test needs those to be ours.
    assert cpus == [0, 1], f"expected CPUs 0 and 1 to be usable, have {cpus}"
    ctx = multiprocessing.get_context("fork")
    wrong = []
    for _ in range(ROUNDS):
        for cpu in cpus:
            out = ctx.Queue()
            p = ctx.Process(target=by_core_seen_from, args=(cpu, server.port, out))
            p.start()
            by_core = out.get(timeout=30)
            p.join(timeout=30)
            expected = [1 if core == cpu else 0 for core in range(2)]
            if by_core != expected:
                wrong.append((cpu, by_core))
    assert not wrong, f"clients on these CPUs were served by other cores: {wrong}"
    handed = statistics(server.port)["client_connections_handed"]
    # Every connection from CPU 0 crossed; the info request above was accepted by core 1 too.
    assert int(handed) >= ROUNDS
