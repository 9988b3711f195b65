"""Secondary indexes and queries through the official Python client against the real binary.

The main test is model-based: six indexes (an integer bin, a string bin, a blob bin, list
items, and map keys and map values on one set) live through random puts, overwrites,
operate updates that change indexed values, deletes, short TTLs expired by the sweep,
truncates of a set and of the namespace, and restarts (SIGTERM and SIGKILL) on the same data
dir. After every step a full scan must equal an in-test model of what exists, and every query
over every index (random ranges, equalities, contains and list / map-value ranges, with and
without a set, one of them paged with `max_records`) must return exactly the keys a
brute-force evaluation of its predicate over that scan gives, each once. Index entries are
kept apart from the records and changed on every mutation path (write, delete, expiry,
truncate, rebuild at start), so a path that forgets them shows up as a wrong query answer or
as an `entries` count that drifts from the model's.

Two small tests cover the errors of bad requests and an index built over data written before
it. The random seed is fixed (SINDEX_SEED overrides it) and printed, so a failure replays."""

import os
import random
import time

import aerospike
import pytest
from aerospike import exception as ex
from aerospike import predicates as p
from aerospike_helpers.operations import list_operations as lop
from aerospike_helpers.operations import map_operations as mop
from aerospike_helpers.operations import operations as op

from conftest import info, wait_for

# The client marks index_integer_create and its siblings deprecated (for
# index_single_value_create / index_cdt_create); they still send the same sindex-create
# commands, and they are what most applications call, so the tests use them.
pytestmark = pytest.mark.filterwarnings("ignore:.*is deprecated:DeprecationWarning")

SEED = int(os.environ.get("SINDEX_SEED", "1919"))
NS = "test"
SETS = ("a", "b")
KEYS_PER_SET = 200
STEPS = 32
# A sweep every second, so records with a one-second TTL are removed (with their index
# entries) within a step.
CONFIG = "[namespace.test]\nnsup-period = 1\n"
SEND_KEY = {"key": aerospike.POLICY_KEY_SEND}
# sindex-create answers once the definition is synced to disk; the client's default info
# timeout (1 s) is too short for an fsync on a busy machine's disk.
CREATE = {"timeout": 10_000}
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

# name -> (set the index covers or None for the whole namespace, bin, kind). Map keys and
# values are indexed on set "a" only, so queries there exercise a set-restricted index and
# records of set "b" holding the same maps must never match.
INDEXES = {
    "idx_int": (None, "i", "int"),
    "idx_str": (None, "s", "str"),
    "idx_blob": (None, "b", "blob"),
    "idx_list": (None, "l", "list"),
    "idx_mapkeys": ("a", "m", "mapkeys"),
    "idx_mapvalues": ("a", "m", "mapvalues"),
}

# Small value domains, so that ranges and equalities hit several records and a list often
# holds the same or several matching integers; the extremes check the ends of the key space.
EXTREME_INTS = (INT_MIN, INT_MIN + 1, -(2**40), 2**40, INT_MAX - 1, INT_MAX)
STRS = ("", "a", "b", "c", "v0", "v1", "v2", "v3", "ünïcødé", "x" * 300)
BLOBS = (b"", b"\x00", b"\x01", b"\x00\x01", b"\xff\xff\xff", b"blob")
MAP_KEYS = ("", "k0", "k1", "k2", "k3", "k4", "k5")


def is_int(v):
    return type(v) is int


def rand_int(rng):
    return rng.choice(EXTREME_INTS) if rng.random() < 0.05 else rng.randint(-10, 40)


def rand_list(rng):
    items = []
    for _ in range(rng.randint(0, 6)):
        r = rng.random()
        if r < 0.8:
            items.append(rng.randint(-5, 15))
        elif r < 0.9:
            items.append(rng.choice(STRS))  # not an integer: never in the list index
        elif r < 0.95:
            items.append([rng.randint(-5, 15)])  # nested: only top-level items are indexed
        else:
            items.append(rng.randint(-5, 15) + 0.5)
    return items


def rand_map(rng):
    m = {}
    for _ in range(rng.randint(0, 4)):
        key = rng.choice(MAP_KEYS) if rng.random() < 0.85 else rng.randint(0, 5)
        r = rng.random()
        m[key] = (rng.randint(-5, 15) if r < 0.8 else rng.choice(STRS) if r < 0.9
                  else [rng.randint(-5, 15)])
    return m


def rand_bins(rng, version):
    """A whole record: each indexed bin present or not, usually of its index's type and
    sometimes of another (which its index must ignore). `x` is always there, so that a
    record never loses its last bin."""
    bins = {"x": version}
    r = rng.random()
    if r < 0.8:
        bins["i"] = rand_int(rng)
    elif r < 0.9:
        bins["i"] = rng.choice(STRS)
    r = rng.random()
    if r < 0.7:
        bins["s"] = rng.choice(STRS)
    elif r < 0.75:
        bins["s"] = rand_int(rng)
    elif r < 0.8:
        bins["s"] = rng.choice(BLOBS)  # the same bytes as a string, but a blob: not indexed
    if rng.random() < 0.7:
        bins["b"] = rng.choice(BLOBS) if rng.random() < 0.9 else rng.choice(STRS)
    r = rng.random()
    if r < 0.8:
        bins["l"] = rand_list(rng)
    elif r < 0.85:
        bins["l"] = rand_int(rng)
    r = rng.random()
    if r < 0.8:
        bins["m"] = rand_map(rng)
    elif r < 0.85:
        bins["m"] = rand_list(rng)
    return bins


def indexed_values(name, set_name, bins):
    """What index `name` holds for a record (before removing repeats): the brute-force
    definition the server's answers are checked against."""
    index_set, bin_name, kind = INDEXES[name]
    if index_set is not None and set_name != index_set:
        return []
    v = bins.get(bin_name)
    if kind == "int":
        return [v] if is_int(v) else []
    if kind == "str":
        return [v] if isinstance(v, str) else []
    if kind == "blob":
        return [bytes(v)] if isinstance(v, (bytes, bytearray)) else []
    if kind == "list":
        return [x for x in v if is_int(x)] if isinstance(v, list) else []
    if kind == "mapkeys":
        return [k for k in v if isinstance(k, str)] if isinstance(v, dict) else []
    if kind == "mapvalues":
        return [x for x in v.values() if is_int(x)] if isinstance(v, dict) else []
    raise AssertionError(kind)


class Query:
    """One query: the index it should use, the set it names (None: the namespace), the
    client's predicate and the same test on one indexed value, for the brute force."""

    def __init__(self, index, set_name, predicate, test, text):
        self.index = index
        self.set_name = set_name
        self.predicate = predicate
        self.test = test
        self.text = text

    def __repr__(self):
        return f"{self.text} on set {self.set_name!r} (index {self.index})"

    def expected(self, records):
        return {k for k, bins in records.items()
                if (self.set_name is None or k[0] == self.set_name)
                and any(self.test(v) for v in indexed_values(self.index, k[0], bins))}


def int_bounds(rng, present):
    """A random [lo, hi], usually around values that exist, sometimes wide or empty."""
    r = rng.random()
    if r < 0.1:
        return INT_MIN, INT_MAX
    if r < 0.2 or not present:
        a, b = rand_int(rng), rand_int(rng)
    else:
        a = rng.choice(present)
        b = a + rng.randint(0, 12) if -(2**62) < a < 2**62 else a
    return min(a, b), max(a, b)


def pick(rng, present, pool):
    """A value that exists in the index (most of the time) or any from its pool."""
    return rng.choice(present) if present and rng.random() < 0.75 else rng.choice(pool)


def random_query(rng, name, records):
    index_set, bin_name, kind = INDEXES[name]
    set_name = index_set if index_set is not None else rng.choice((None, *SETS))
    present = sorted({v for k, bins in records.items()
                      for v in indexed_values(name, k[0], bins)}, key=repr)
    if kind in ("int", "list", "mapvalues"):
        lo, hi = int_bounds(rng, present)
        if rng.random() < 0.4:
            lo = hi = pick(rng, present, list(range(-10, 41)) + list(EXTREME_INTS))
        test = lambda v, lo=lo, hi=hi: is_int(v) and lo <= v <= hi  # noqa: E731
        if kind == "int":
            predicate = p.equals(bin_name, lo) if lo == hi else p.between(bin_name, lo, hi)
            text = f"{bin_name} in [{lo}, {hi}]"
        else:
            itype = (aerospike.INDEX_TYPE_LIST if kind == "list"
                     else aerospike.INDEX_TYPE_MAPVALUES)
            if lo == hi:
                predicate = p.contains(bin_name, itype, lo)
                text = f"{bin_name} {kind} contains {lo}"
            else:
                predicate = p.range(bin_name, itype, lo, hi)
                text = f"{bin_name} {kind} range [{lo}, {hi}]"
        return Query(name, set_name, predicate, test, text)
    if kind == "mapkeys":
        want = pick(rng, present, MAP_KEYS)
        predicate = p.contains(bin_name, aerospike.INDEX_TYPE_MAPKEYS, want)
    else:
        want = pick(rng, present, STRS if kind == "str" else BLOBS)
        predicate = p.equals(bin_name, want)
    test = lambda v, want=want: type(v) is type(want) and v == want  # noqa: E731
    return Query(name, set_name, predicate, test, f"{bin_name} {kind} equals {want!r:.40}")


def run_query(client, q, max_records=None):
    """Every record of `q`; with `max_records`, paged until the client says it is done."""
    query = client.query(NS, q.set_name)
    query.where(q.predicate)
    if max_records is None:
        return query.results()
    query.max_records = max_records
    query.paginate()
    out = []
    # Far more pages than records: the bound only stops a query that would never finish.
    for _ in range(10_000 // max_records + 10):
        page = query.results()
        assert len(page) <= max_records, (q, max_records, len(page))
        out += page
        if query.is_done():
            return out
    raise AssertionError(f"paged query {q} with max_records {max_records} never finished")


def scan_records(client):
    out = {}
    for (_, set_name, key, _), _, bins in client.scan(NS, None).results():
        assert (set_name, key) not in out, f"scan returned {(set_name, key)} twice"
        out[(set_name, key)] = bins
    return out


def diff(got, want):
    """A short account of how two {key: bins} differ."""
    missing = sorted(want.keys() - got.keys(), key=repr)[:5]
    extra = sorted(got.keys() - want.keys(), key=repr)[:5]
    changed = [(k, got[k], want[k]) for k in sorted(got.keys() & want.keys(), key=repr)
               if got[k] != want[k]][:3]
    return f"missing {missing}, unexpected {extra}, differing (got, want) {changed}"[:2000]


def check(client, model, rng, what):
    """The scan equals the model, and every query equals the brute force over the scan."""
    records = scan_records(client)
    assert records == model, f"after {what}: scan != model: {diff(records, model)}"
    queries = [random_query(rng, name, records) for name in INDEXES for _ in range(4)]
    for q in queries:
        got = run_query(client, q)
        keys = [(r[0][1], r[0][2]) for r in got]
        assert len(keys) == len(set(keys)), f"after {what}: {q} sent a record twice"
        want = q.expected(records)
        assert set(keys) == want, (
            f"after {what}: {q}: missing {sorted(want - set(keys), key=repr)[:10]}, "
            f"unexpected {sorted(set(keys) - want, key=repr)[:10]}")
        for (_, set_name, key, _), _, bins in got:
            assert bins == records[(set_name, key)], (what, q, (set_name, key))
    # One query paged: pages resume where the last one stopped, so together they hold every
    # record once, even a record that matches at several list items or map values.
    q = rng.choice(queries)
    max_records = rng.randint(1, 30)
    got = run_query(client, q, max_records)
    keys = [(r[0][1], r[0][2]) for r in got]
    assert len(keys) == len(set(keys)), f"after {what}: paged {q} sent a record twice"
    assert set(keys) == q.expected(records), (
        f"after {what}: paged {q} by {max_records}: "
        f"{sorted(set(keys) ^ q.expected(records), key=repr)[:10]} differ")
    return len(queries) + 1


def index_stats(port, name):
    reply = info(port, f"sindex/{NS}/{name}\n").split("\t", 1)[1].strip()
    assert not reply.startswith("ERROR"), (name, reply)
    return dict(kv.split("=", 1) for kv in reply.split(";"))


def wait_indexes_readable(port):
    """At start each index is rebuilt from the records in the background; queries answer
    203 until it is done."""
    for name in INDEXES:
        wait_for(lambda name=name: index_stats(port, name)["load_pct"] == "100",
                 f"index {name} to finish building", timeout=20)


def model_entries(model, name):
    # One entry per record and distinct value (strings and blobs are kept by hash; the
    # pools here have no collisions).
    return sum(len(set(indexed_values(name, k[0], bins))) for k, bins in model.items())


def wait_entries_match(port, model, what):
    """Each index's `entries` (refreshed every second) settles at the model's count: an
    entry left behind by a delete, an expiry, a truncate or a rebuild would keep it above."""
    want = {name: model_entries(model, name) for name in INDEXES}
    got = {}

    def settled():
        got.update({name: int(index_stats(port, name)["entries"]) for name in INDEXES})
        return got == want

    try:
        wait_for(settled, "index entries to match the model", timeout=10)
    except AssertionError:
        raise AssertionError(f"after {what}: entries {got}, model {want}") from None


def ns_objects(port):
    reply = info(port, f"namespace/{NS}\n").split("\t", 1)[1].strip()
    return int(dict(kv.split("=", 1) for kv in reply.split(";"))["objects"])


def create_indexes(client):
    for name, (set_name, bin_name, kind) in INDEXES.items():
        if kind == "int":
            client.index_integer_create(NS, set_name, bin_name, name, CREATE)
        elif kind == "str":
            client.index_string_create(NS, set_name, bin_name, name, CREATE)
        elif kind == "blob":
            client.index_blob_create(NS, set_name, bin_name, name, CREATE)
        elif kind == "list":
            client.index_list_create(NS, set_name, bin_name, aerospike.INDEX_NUMERIC, name,
                                     CREATE)
        elif kind == "mapkeys":
            client.index_map_keys_create(NS, set_name, bin_name, aerospike.INDEX_STRING, name,
                                         CREATE)
        elif kind == "mapvalues":
            client.index_map_values_create(NS, set_name, bin_name, aerospike.INDEX_NUMERIC,
                                           name, CREATE)


class Steps:
    """The random mutations, each applied to the server and the model."""

    def __init__(self, rng, model):
        self.rng, self.model = rng, model
        self.version = 0

    def key(self):
        return (self.rng.choice(SETS), self.rng.randrange(KEYS_PER_SET))

    def existing(self, n):
        keys = sorted(self.model, key=repr)
        return self.rng.sample(keys, min(n, len(keys)))

    def next_version(self):
        self.version += 1
        return self.version

    def puts(self, c, n=None):
        """Whole-record replaces and bin-level updates (new bins added, some removed with
        None), some with a long TTL that never runs out during the test."""
        rng = self.rng
        for _ in range(n or rng.randint(20, 80)):
            k = self.key()
            bins = rand_bins(rng, self.next_version())
            meta = {"ttl": 3600} if rng.random() < 0.1 else None
            if rng.random() < 0.5 or k not in self.model:
                c.put((NS, *k), bins, meta=meta,
                      policy={**SEND_KEY, "exists": aerospike.POLICY_EXISTS_CREATE_OR_REPLACE})
                self.model[k] = bins
            else:
                update = {b: v for b, v in bins.items() if rng.random() < 0.6}
                update["x"] = bins["x"]
                for b in ("i", "s", "b", "l", "m"):
                    if b in self.model[k] and b not in update and rng.random() < 0.2:
                        update[b] = None  # removes the bin
                c.put((NS, *k), update, meta=meta, policy=SEND_KEY)
                for b, v in update.items():
                    if v is None:
                        self.model[k].pop(b, None)
                    else:
                        self.model[k][b] = v
        return "puts"

    def operates(self, c):
        """Updates in place that change indexed values: increments, list appends and pops,
        map puts and removes, bin writes and removals."""
        rng = self.rng
        for k in self.existing(rng.randint(10, 30)):
            bins = self.model[k]
            ops = [op.write("x", self.next_version())]
            bins["x"] = self.version
            i = bins.get("i")
            if is_int(i) and abs(i) < 2**40 and rng.random() < 0.7:
                d = rng.randint(-8, 8)
                ops.append(op.increment("i", d))
                bins["i"] = i + d
            elif rng.random() < 0.5:
                bins["i"] = rand_int(rng)
                ops.append(op.write("i", bins["i"]))
            lst = bins.get("l")
            if lst is None or isinstance(lst, list):
                lst = bins.setdefault("l", [])
                if lst and rng.random() < 0.3:
                    ops.append(lop.list_pop("l", 0))
                    lst.pop(0)
                else:
                    item = rng.randint(-5, 15)
                    ops.append(lop.list_append("l", item))
                    lst.append(item)
            m = bins.get("m")
            if m is None or isinstance(m, dict):
                m = bins.setdefault("m", {})
                if m and rng.random() < 0.3:
                    key = rng.choice(sorted(m, key=repr))
                    ops.append(mop.map_remove_by_key("m", key, aerospike.MAP_RETURN_NONE))
                    del m[key]
                else:
                    key, value = rng.choice(MAP_KEYS), rng.randint(-5, 15)
                    ops.append(mop.map_put("m", key, value))
                    m[key] = value
            r = rng.random()
            if r < 0.3:
                bins["s"] = rng.choice(STRS)
                ops.append(op.write("s", bins["s"]))
            elif r < 0.4 and "s" in bins:
                del bins["s"]
                ops.append(op.write("s", None))
            if rng.random() < 0.3:
                bins["b"] = rng.choice(BLOBS)
                ops.append(op.write("b", bins["b"]))
            c.operate((NS, *k), ops, policy=SEND_KEY)
        return "operates"

    def deletes(self, c):
        for _ in range(self.rng.randint(5, 25)):
            k = self.key() if self.rng.random() < 0.2 else (self.existing(1) or [self.key()])[0]
            try:
                c.remove((NS, *k))
                assert k in self.model, f"removed {k}, which the model does not hold"
            except ex.RecordNotFound:
                assert k not in self.model, f"{k} not found, but the model holds it"
            self.model.pop(k, None)
        return "deletes"

    def short_ttls(self, c, port):
        """Records (new and overwritten) with a one-second TTL, then wait until they are
        hidden and swept; no check runs meanwhile, as the moment each expires is not
        known to the second."""
        rng = self.rng
        keys = {self.key() for _ in range(rng.randint(5, 20))} | set(self.existing(5))
        for k in keys:
            c.put((NS, *k), rand_bins(rng, self.next_version()), meta={"ttl": 1},
                  policy={**SEND_KEY, "exists": aerospike.POLICY_EXISTS_CREATE_OR_REPLACE})
            self.model.pop(k, None)

        def gone():
            return all(c.exists((NS, *k))[1] is None for k in keys)

        wait_for(gone, "short-TTL records to expire", timeout=20)
        wait_for(lambda: ns_objects(port) == len(self.model),
                 "the expiry sweep to remove them", timeout=20)
        return f"short TTLs on {len(keys)} keys"

    def truncate(self, c, whole_namespace):
        set_name = None if whole_namespace else self.rng.choice(SETS)
        c.truncate(NS, set_name, 0)
        for k in [k for k in self.model if set_name is None or k[0] == set_name]:
            del self.model[k]
        return f"truncate of {set_name or 'the namespace'}"


def test_queries_match_a_scan_through_writes_expiry_truncates_and_restarts(apogee):
    print(f"SINDEX_SEED={SEED}")
    rng = random.Random(SEED)
    server = apogee(config=CONFIG).start()
    client = server.client()
    model = {}
    steps = Steps(rng, model)
    # Records before the indexes exist, so creation builds over data, then every step after.
    steps.puts(client, 300)
    started = time.time()
    create_indexes(client)
    print(f"{len(INDEXES)} indexes created over {len(model)} records in "
          f"{time.time() - started:.1f}s")
    queries = check(client, model, rng, "index creation")
    wait_entries_match(server.port, model, "index creation")

    # Each kind at least once (two restarts of each sort), the rest random; puts most often
    # and truncates rarely, so that a few hundred records are usually there.
    plan = ["ttl", "truncate-set", "truncate-namespace", "stop", "kill", "stop", "kill"]
    kinds = ["puts"] * 4 + ["operates"] * 2 + ["deletes", "ttl", "truncate-set", "stop",
                                                  "kill"]
    plan += [rng.choice(kinds) for _ in range(STEPS - len(plan))]
    rng.shuffle(plan)
    print("plan:", " ".join(plan))
    most = len(model)
    for n, kind in enumerate(plan):
        if kind in ("stop", "kill"):
            client.close()
            if kind == "stop":
                assert server.stop() == 0
            else:
                server.kill()
            server.start()
            wait_indexes_readable(server.port)
            client = server.client()
            what = "restart after SIGTERM" if kind == "stop" else "restart after SIGKILL"
        elif kind == "ttl":
            what = steps.short_ttls(client, server.port)
        elif kind.startswith("truncate"):
            what = steps.truncate(client, kind == "truncate-namespace")
        else:
            what = getattr(steps, kind)(client)
        what = f"step {n} ({what}, {len(model)} records)"
        queries += check(client, model, rng, what)
        most = max(most, len(model))
        if kind in ("stop", "kill", "ttl", "deletes") or kind.startswith("truncate"):
            wait_entries_match(server.port, model, what)
    wait_entries_match(server.port, model, "the last step")
    client.close()
    print(f"{len(plan)} steps, {queries} queries checked, up to {most} records, "
          f"{len(model)} at the end")


def test_bad_requests_get_aerospike_errors(client, server):
    client.put((NS, "s", 1), {"i": 1, "s": "x"}, policy=SEND_KEY)
    client.index_integer_create(NS, "s", "i", "idx_i", CREATE)
    # The same definition again under its name is accepted and changes nothing.
    client.index_integer_create(NS, "s", "i", "idx_i", CREATE)
    # The name taken by another definition: 200.
    with pytest.raises(ex.IndexFoundError) as e:
        client.index_string_create(NS, "s", "i", "idx_i", CREATE)
    assert e.value.code == 200
    with pytest.raises(ex.IndexFoundError):
        client.index_integer_create(NS, "s", "s", "idx_i", CREATE)
    with pytest.raises(ex.NamespaceNotFound) as e:
        client.index_integer_create("nope", "s", "i", "idx_nope", CREATE)
    assert e.value.code == 20

    def query(predicate, set_name="s"):
        q = client.query(NS, set_name)
        q.where(predicate)
        return q.results()

    # No index on the bin, none of the predicate's type on it, or none covering the set: 201.
    for predicate, set_name in ((p.between("zz", 1, 2), "s"), (p.equals("s", "x"), "s"),
                                (p.between("i", 1, 2), "other"), (p.between("i", 1, 2), None)):
        with pytest.raises(ex.IndexNotFound) as e:
            query(predicate, set_name)
        assert e.value.code == 201
    with pytest.raises(ex.InvalidRequest) as e:
        query(p.between("i", 5, 2))
    assert e.value.code == 4
    # None of this changed the index.
    assert [r[0][2] for r in query(p.between("i", 1, 1))] == [1]
    assert "indexname=idx_i:set=s:bin=i:type=numeric" in info(server.port, "sindex-list:ns=test\n")


def test_index_created_over_existing_records_finds_them_all(client):
    rng = random.Random(SEED)
    values = {}
    for k in range(500):
        r = rng.random()
        # Most records hold an integer; some a string or nothing under the bin, which the
        # index must skip.
        bins = {"i": rng.randint(-1000, 1000)} if r < 0.8 else {"i": "str"} if r < 0.9 else {}
        bins["x"] = k
        client.put((NS, "pre", k), bins, policy=SEND_KEY)
        if is_int(bins.get("i")):
            values[k] = bins["i"]
    client.index_integer_create(NS, "pre", "i", "idx_pre", CREATE)

    def query(lo, hi):
        q = client.query(NS, "pre")
        q.where(p.between("i", lo, hi))
        keys = [r[0][2] for r in q.results()]
        assert len(keys) == len(set(keys))
        return set(keys)

    assert query(INT_MIN, INT_MAX) == set(values)
    for _ in range(20):
        lo = rng.randint(-1100, 1100)
        hi = lo + rng.randint(0, 300)
        assert query(lo, hi) == {k for k, v in values.items() if lo <= v <= hi}, (lo, hi)
    # And a record written after the build is found as well.
    client.put((NS, "pre", 1000), {"i": 5000}, policy=SEND_KEY)
    assert query(5000, 5000) == {1000}
