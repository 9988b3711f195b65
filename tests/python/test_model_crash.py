"""A model-based crash test through the official Python client: random puts, overwrites,
deletes, increments, list appends and short TTLs from several writer threads, while the server
is killed with SIGKILL (or stopped with SIGTERM) at random moments; after every restart each
key must equal the model for everything that was acknowledged. An op cut off by the kill may
or may not have happened, so a key with an op in flight may hold either its old or its new
state. A short TTL is modelled by when the server may have applied the write (between sending
it and its reply) and each check read by when it was sent and answered, since records expire
while the check runs. Bounded: a fixed seed, 6 rounds of about a second of writing each."""

import random
import threading
import time

from aerospike import exception as ex
from aerospike_helpers.operations import list_operations as lo
from aerospike_helpers.operations import operations as op

KEYS = 300
ROUNDS = 6
WRITERS = 4
WRITE_SECONDS = 1.0
SHORT_TTL = 3


class Model:
    """Acknowledged state per key: None (absent) or (bins, expiry), where expiry is None (never
    expires) or (earliest, latest): the server holds the record at any moment before `earliest`
    and has expired it at any moment from `latest` on (see `ttl_expiry`)."""

    def __init__(self):
        self.state = {}
        # key -> (op, state before it, time sent): an op not acknowledged, which may or may
        # not have happened; its possible results are known only once the server is gone.
        self.in_flight = {}
        self.lock = threading.Lock()

    def possible(self, k, server_gone):
        with self.lock:
            options = [self.state.get(k)]
            if k in self.in_flight:
                call, cur, sent = self.in_flight[k]
                options += in_flight_results(call, cur, sent, server_gone)
            return options


def ttl_expiry(sent, acked):
    """The server sets void time = its whole seconds + TTL when it applies the write, at some
    moment in [sent, acked], and a record stays readable through its void-time second, as on
    Aerospike (gone once the whole seconds pass it): it is held before sent + TTL and gone
    from acked + TTL + 1 on. `acked` may be much later than `sent` when the machine is
    loaded."""
    return (sent + SHORT_TTL, acked + SHORT_TTL + 1)


def recreated(call):
    """What an increment or append leaves when the record it meant to change had already
    expired on the server: the server creates the record (generation 1, no TTL)."""
    kind, arg = call
    return ({"v": arg}, None) if kind == "incr" else ({"l": [arg]}, None)


def pick(rng, cur):
    """Picks an op for a key whose acknowledged state is `cur`."""
    choice = rng.random()
    if choice < 0.35 or cur is None:
        new = {"v": rng.randrange(1_000_000), "s": "x" * rng.randrange(1, 200), "l": [1]}
        return ("put_ttl", new) if rng.random() < 0.2 else ("put", new)
    if choice < 0.55:
        return ("remove", None)
    if choice < 0.8:
        return ("incr", rng.randrange(1, 10))
    return ("append", rng.randrange(100))


def result(call, cur, sent, acked, generation):
    """The state an acknowledged op leaves; `generation` is the record's generation in the
    reply of an increment or append (1: the record had expired and was created anew)."""
    kind, arg = call
    if kind == "put":
        return (arg, None)
    if kind == "put_ttl":
        return (arg, ttl_expiry(sent, acked))
    if kind == "remove":
        return None
    if generation == 1:
        return recreated(call)
    bins, expiry = cur
    if kind == "incr":
        return (dict(bins, v=bins["v"] + arg), expiry)
    return (dict(bins, l=bins["l"] + [arg]), expiry)


def in_flight_results(call, cur, sent, server_gone):
    """The states an op cut off may have left, the server having applied it (if at all)
    before `server_gone`."""
    kind, arg = call
    if kind in ("put", "put_ttl", "remove"):
        return [result(call, cur, sent, server_gone, None)]
    options = [result(call, cur, sent, server_gone, 2)]
    expiry = cur[1]
    if expiry is not None and server_gone > expiry[0]:
        options.append(recreated(call))
    return options


def apply(c, key, call):
    """Sends the op; returns the generation in the reply of an increment or append."""
    kind, arg = call
    if kind == "put":
        c.put(key, arg, meta={"ttl": -1})
    elif kind == "put_ttl":
        c.put(key, arg, meta={"ttl": SHORT_TTL})
    elif kind == "remove":
        c.remove(key)
    elif kind == "incr":
        return c.operate(key, [op.increment("v", arg)], meta={"ttl": -2})[1]["gen"]
    else:
        return c.operate(key, [lo.list_append("l", arg)], meta={"ttl": -2})[1]["gen"]
    return None


def writer(server_client, model, keys, rng, stop):
    """Writes to its own keys until stopped or the connection dies."""
    while not stop.is_set():
        k = rng.choice(keys)
        with model.lock:
            cur = model.state.get(k)
        if cur is not None and cur[1] is not None and cur[1][0] - time.time() < 0.5:
            continue  # near expiry: leave it alone (an op that lands late is still modelled)
        call = pick(rng, cur)
        sent = time.time()
        with model.lock:
            model.in_flight[k] = (call, cur, sent)
        try:
            generation = apply(server_client, ("test", "model", k), call)
        except ex.AerospikeError:
            return  # cut off by the kill, or timed out: it stays in flight
        acked = time.time()
        with model.lock:
            model.state[k] = result(call, cur, sent, acked, generation)
            del model.in_flight[k]


def matches(got, state, read_from, read_to):
    """Whether a read sent at `read_from` and answered at `read_to` may return `got`."""
    if state is None:
        return got is None
    bins, expiry = state
    if expiry is None or read_to < expiry[0]:
        return got == bins
    if read_from >= expiry[1]:
        return got is None
    return got is None or got == bins


def test_random_ops_survive_random_kills(apogee):
    rng = random.Random(20261124)
    server = apogee(cores=2).start()
    model = Model()
    for rnd in range(ROUNDS):
        stop = threading.Event()
        clients = [server.client() for _ in range(WRITERS)]
        threads = [
            threading.Thread(target=writer, args=(
                clients[w], model, list(range(w, KEYS, WRITERS)), random.Random(rng.random()), stop))
            for w in range(WRITERS)
        ]
        for t in threads:
            t.start()
        time.sleep(WRITE_SECONDS * (0.5 + rng.random()))
        if rnd % 3 == 2:
            stop.set()
            for t in threads:
                t.join()
            assert server.stop() == 0
            server_gone = time.time()
        else:
            server.kill()  # writers are mid-op: some ops are cut off
            server_gone = time.time()
            stop.set()
            for t in threads:
                t.join()
        for c in clients:
            c.close()

        server.start()
        c = server.client()
        for k in range(KEYS):
            read_from = time.time()
            try:
                got = c.get(("test", "model", k))[2]
            except ex.RecordNotFound:
                got = None
            read_to = time.time()
            options = model.possible(k, server_gone)
            assert any(matches(got, s, read_from, read_to) for s in options), (
                rnd, k, got, options, read_from, read_to)
            # Whatever survived is now the acknowledged state.
            with model.lock:
                model.in_flight.pop(k, None)
                st = model.state.get(k)
                if got is None:
                    model.state.pop(k, None)
                elif st is None or st[0] != got:
                    model.state[k] = next(s for s in options if s and s[0] == got)
        c.close()
    assert len(model.state) > 50, "the test wrote too little to mean anything"
