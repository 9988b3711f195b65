"""Lua UDFs through the official Python client against the real binary: modules are
registered, listed, fetched and removed with Aerospike's answers and survive a restart; a
module that does not compile, or whose name is a path, is refused and changes nothing;
record UDFs read, change, create and remove records atomically and return values of every
type; and the limits hold — an endless loop, a string built to a gigabyte, a call into a
removed module and a module replaced while calls run each end that call with an error
(result 100) while the node keeps serving every other request."""

import base64
import threading
import time

import aerospike
import pytest
from aerospike import exception as ex
from aerospike_helpers import expressions as exp

from conftest import info

MODULE = """
function add(rec, bin, n)
    rec[bin] = (rec[bin] or 0) + n
    aerospike:update(rec)
    return rec[bin]
end

function make(rec, v)
    rec['v'] = v
    rec['l'] = list{1, 2, 'three'}
    local m = map()
    m['k'] = 1.5
    rec['m'] = m
    aerospike:create(rec)
    return record.gen(rec)
end

function kinds(rec)
    return list{1, 2.5, 'x', true, map{a = 1}, list{}}
end

function drop(rec)
    aerospike:remove(rec)
    return aerospike:exists(rec)
end

function fail(rec)
    error('refused on purpose')
end

function spin(rec)
    local i = 0
    while true do i = i + 1 end
end

function grow(rec)
    local s = 'x'
    for i = 1, 40 do s = s .. s end
    return #s
end

function version(rec)
    return 1
end
"""


def put_module(port, name, source):
    content = base64.b64encode(source.encode()).decode()
    cmd = f"udf-put:filename={name};content={content};content-len={len(content)};udf-type=LUA;"
    return info(port, cmd + "\n").split("\t", 1)[1].strip()


@pytest.fixture
def node(apogee):
    a = apogee().start()
    assert put_module(a.port, "t.lua", MODULE) == "ok"
    return a


def test_modules_are_registered_listed_fetched_removed_and_kept(node):
    c = node.client()
    listed = c.udf_list()
    assert [m["name"] for m in listed] == ["t.lua"]
    assert len(listed[0]["hash"]) == 40
    assert c.udf_get("t.lua") == MODULE
    node.stop()
    node.start()
    c = node.client()
    assert [m["name"] for m in c.udf_list()] == ["t.lua"], "modules survive a restart"
    assert c.apply(("test", "u", 1), "t", "add", ["a", 2]) == 2
    c.udf_remove("t.lua")
    assert c.udf_list() == []
    with pytest.raises(ex.UDFError) as e:
        c.apply(("test", "u", 1), "t", "add", ["a", 2])
    assert e.value.code == 100


def test_bad_modules_are_refused_with_aerospikes_answers(node):
    p = node.port
    refused = put_module(p, "bad.lua", "function (\n")
    assert refused.startswith("error=compile_error;file=bad.lua;line=1;message="), refused
    message = base64.b64decode(refused.split("message=", 1)[1]).decode()
    assert "expected" in message
    assert put_module(p, "../evil.lua", MODULE) == "error=invalid_filename"
    assert put_module(p, "a/b.lua", MODULE) == "error=invalid_filename"
    cmd = "udf-put:filename=x.lua;content=!!!;content-len=3;udf-type=LUA;"
    assert info(p, cmd + "\n").split("\t", 1)[1].strip() == "error=invalid_content"
    cmd = "udf-put:filename=x.lua;content=eD0xCg==;content-len=8;udf-type=PYTHON;"
    assert info(p, cmd + "\n").split("\t", 1)[1].strip() == "error=invalid_udf_type"
    assert info(p, "udf-get:filename=nope.lua\n").split("\t", 1)[1].strip() == "error=not_found"
    names = [m["name"] for m in node.client().udf_list()]
    assert names == ["t.lua"], "nothing refused was registered"


def test_record_udfs_change_records_atomically_and_return_every_type(node):
    c = node.client()
    k = ("test", "u", "rec")
    # The generation a UDF sees is the record's before the call (0: new), as on Aerospike.
    assert c.apply(k, "t", "make", [7]) == 0
    _, meta, bins = c.get(k)
    assert bins == {"v": 7, "l": [1, 2, "three"], "m": {"k": 1.5}}
    assert c.apply(k, "t", "add", ["v", 5]) == 12
    assert c.get(k)[1]["gen"] == 2
    assert c.apply(k, "t", "kinds", []) == [1, 2.5, "x", True, {"a": 1}, []]
    assert c.get(k)[1]["gen"] == 2, "a UDF that does not update writes nothing"
    with pytest.raises(ex.UDFError) as e:
        c.apply(k, "t", "fail", [])
    assert e.value.code == 100 and "refused on purpose" in e.value.msg
    # `aerospike:exists` tells whether the record existed when the call began (Aerospike's).
    assert c.apply(k, "t", "drop", []) is True
    with pytest.raises(ex.RecordNotFound):
        c.get(k)
    # A filter expression that the record fails stops the UDF before it runs.
    f = ("test", "u", "filtered")
    c.put(f, {"v": 1})
    no = {"expressions": exp.Eq(exp.IntBin("v"), 2).compile()}
    with pytest.raises(ex.FilteredOut):
        c.apply(f, "t", "add", ["v", 1], policy=no)
    assert c.get(f)[2] == {"v": 1}
    yes = {"expressions": exp.Eq(exp.IntBin("v"), 1).compile()}
    assert c.apply(f, "t", "add", ["v", 1], policy=yes) == 2


def test_limits_end_one_call_and_the_node_keeps_serving(node):
    c = node.client()
    k = ("test", "u", "lim")
    c.put(k, {"a": 1})
    t = time.monotonic()
    with pytest.raises(ex.UDFError) as e:
        c.apply(k, "t", "spin", [], policy={"total_timeout": 30000})
    assert "instructions" in e.value.msg
    print(f"\nan endless loop stopped after {time.monotonic() - t:.2f}s")
    with pytest.raises(ex.UDFError) as e:
        c.apply(k, "t", "grow", [], policy={"total_timeout": 30000})
    assert e.value.code == 100
    assert c.get(k)[2] == {"a": 1}, "failed calls changed nothing"
    assert c.apply(k, "t", "add", ["a", 1]) == 2, "the same core runs UDFs after the errors"


def test_a_module_replaced_or_removed_while_calls_run(node):
    c = node.client()
    keys = [("test", "u", i) for i in range(50)]
    for k in keys:
        c.put(k, {"a": 0})
    seen, errors, stop = set(), [], threading.Event()

    def caller():
        cc = node.client()
        while not stop.is_set():
            for k in keys:
                try:
                    seen.add(cc.apply(k, "t", "version", []))
                except ex.UDFError as e:
                    errors.append(e.code)

    threads = [threading.Thread(target=caller) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    assert put_module(node.port, "t.lua", MODULE.replace("return 1\nend", "return 2\nend")) == "ok"
    deadline = time.monotonic() + 10
    while 2 not in seen:
        assert time.monotonic() < deadline, "the replaced module never ran"
        time.sleep(0.05)
    c.udf_remove("t.lua")
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(10)
    assert seen <= {1, 2}
    assert set(errors) <= {100}, errors
    assert errors, "calls after the removal failed"
    assert c.get(keys[0])[2] == {"a": 0}, "the node still serves"


STREAM = """
local function value(bin)
    return function(rec) return rec[bin] end
end

local function add(a, b) return a + b end

function sum(s, bin)
    return s : map(value(bin)) : reduce(add)
end

function even_count(s, bin)
    local function even(rec) return rec[bin] % 2 == 0 end
    local function one() return 1 end
    return s : filter(even) : map(one) : reduce(add)
end

function by_group(s)
    local function fold(acc, rec)
        local g = rec['g']
        acc[g] = (acc[g] or 0) + 1
        return acc
    end
    local function merge(a, b)
        return map.merge(a, b, function(x, y) return x + y end)
    end
    return s : aggregate(map(), fold) : reduce(merge)
end

function broken(s)
    return s : map(function(rec) error('stage failed') end)
end
"""


AGGREGATE = """
import json, sys
import aerospike
from aerospike import exception as ex
from aerospike import predicates as p

port, lua_dir = int(sys.argv[1]), sys.argv[2]
c = aerospike.client({"hosts": [("127.0.0.1", port)], "lua": {"user_path": lua_dir}}).connect()
out = {}
for label, fn, args, where in [
    ("sum", "sum", ["v"], None),
    ("even", "even_count", ["v"], None),
    ("groups", "by_group", [], None),
    ("sum 10..19", "sum", ["v"], (10, 19)),
    ("broken", "broken", [], None),
]:
    q = c.query("test", "agg")
    if where:
        q.where(p.between("v", *where))
    q.apply("agg", fn, args)
    values = []
    try:
        q.foreach(values.append)
        out[label] = values
    except ex.AerospikeError as e:
        out[label] = f"error {e.code}"
print(json.dumps(out))
"""


def test_stream_udfs_aggregate_over_scans_and_queries(apogee, tmp_path):
    import json
    import subprocess
    import sys

    node = apogee().start()
    assert put_module(node.port, "agg.lua", STREAM) == "ok"
    c = node.client()
    for i in range(200):
        c.put(("test", "agg", i), {"v": i, "g": f"g{i % 3}"})
    c.index_integer_create("test", "agg", "v", "agg_v")
    # The client runs the final reduce itself with the same module from its Lua user path,
    # which the client library sets once per process: a process of its own.
    (tmp_path / "lua").mkdir()
    (tmp_path / "lua" / "agg.lua").write_text(STREAM)
    run = subprocess.run([sys.executable, "-c", AGGREGATE, str(node.port), str(tmp_path / "lua")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["sum"] == [sum(range(200))]
    assert out["even"] == [100]
    assert out["groups"] == [{"g0": 67, "g1": 67, "g2": 66}]
    assert out["sum 10..19"] == [sum(range(10, 20))]
    assert out["broken"] == "error 100"
    assert c.get(("test", "agg", 1))[2]["v"] == 1, "the node still serves"
