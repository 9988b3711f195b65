"""Single-record commands through the official Python client: every basic value and key type,
select, exists, touch, remove, TTL, generations and the exists/generation policies, each
asserting what the client documentation says the call returns."""

import time

import aerospike
import pytest
from aerospike import exception as ex
from aerospike_helpers.operations import operations as op

from conftest import info

VALUES = {
    "int": 42,
    "neg": -(2**63),
    "float": 1.5,
    "str": "hello ünïcode",
    "bytes": b"\x00\x01\xff",
    "list": [1, "x", 2.5, [3]],
    "map": {"k": 1, "n": {"deep": "er"}},
    "bool": True,
}


@pytest.mark.parametrize("key", ["key1", 7, -5, bytearray(b"\x01\x02\x03")])
def test_put_get_every_value_type(client, key):
    k = ("test", "demo", key)
    client.put(k, VALUES)
    _, meta, bins = client.get(k)
    assert bins == VALUES
    assert meta["gen"] == 1
    assert meta["ttl"] == aerospike.TTL_NEVER_EXPIRE or meta["ttl"] > 10**9


def test_digest_matches_the_client(client):
    k = ("test", "demo", "key1")
    client.put(k, {"a": 1})
    (key, _, _) = client.get(k)
    assert key[3] == aerospike.calc_digest("test", "demo", "key1")


def test_empty_set(client):
    k = ("test", None, "noset")
    client.put(k, {"a": 1})
    assert client.get(k)[2] == {"a": 1}


def test_select_exists_remove(client):
    k = ("test", "demo", "sel")
    client.put(k, {"a": 1, "b": "two", "c": 3.0})
    _, _, bins = client.select(k, ["a", "c", "missing"])
    assert bins == {"a": 1, "c": 3.0}
    _, meta = client.exists(k)
    assert meta["gen"] == 1
    client.remove(k)
    assert client.exists(k)[1] is None
    with pytest.raises(ex.RecordNotFound):
        client.get(k)
    with pytest.raises(ex.RecordNotFound):
        client.remove(k)


def test_generation_and_merge(client):
    k = ("test", "demo", "gen")
    client.put(k, {"a": 1})
    client.put(k, {"b": 2})
    client.put(k, {"a": None})  # None deletes a bin
    _, meta, bins = client.get(k)
    assert meta["gen"] == 3
    assert bins == {"b": 2}


def test_ttl_and_touch(client):
    k = ("test", "demo", "ttl")
    client.put(k, {"a": 1}, meta={"ttl": 100})
    _, meta = client.exists(k)
    assert 98 <= meta["ttl"] <= 100
    client.touch(k, 500)
    _, meta = client.exists(k)
    assert 498 <= meta["ttl"] <= 500 and meta["gen"] == 2
    client.put(k, {"a": 2}, meta={"ttl": aerospike.TTL_DONT_UPDATE})
    _, meta = client.exists(k)
    assert 498 <= meta["ttl"] <= 500 and meta["gen"] == 3
    client.put(k, {"a": 3}, meta={"ttl": aerospike.TTL_NEVER_EXPIRE})
    assert client.exists(k)[1]["ttl"] == aerospike.TTL_NEVER_EXPIRE
    with pytest.raises(ex.RecordNotFound):
        client.touch(("test", "demo", "nope"), 10)


def test_expired_record_reads_as_missing(client):
    k = ("test", "demo", "short")
    client.put(k, {"a": 1}, meta={"ttl": 1})
    assert client.get(k)[2] == {"a": 1}
    time.sleep(2.1)
    with pytest.raises(ex.RecordNotFound):
        client.get(k)
    client.put(k, {"a": 2})
    assert client.exists(k)[1]["gen"] == 1, "a write re-creates an expired record"


def test_exists_policies(client):
    k = ("test", "demo", "pol")
    client.put(k, {"a": 1}, policy={"exists": aerospike.POLICY_EXISTS_CREATE})
    with pytest.raises(ex.RecordExistsError):
        client.put(k, {"a": 2}, policy={"exists": aerospike.POLICY_EXISTS_CREATE})
    missing = ("test", "demo", "pol-missing")
    for policy in (aerospike.POLICY_EXISTS_UPDATE, aerospike.POLICY_EXISTS_REPLACE):
        with pytest.raises(ex.RecordNotFound):
            client.put(missing, {"a": 1}, policy={"exists": policy})
    assert client.exists(missing)[1] is None
    client.put(k, {"b": 2}, policy={"exists": aerospike.POLICY_EXISTS_REPLACE})
    assert client.get(k)[2] == {"b": 2}
    client.put(k, {"c": 3}, policy={"exists": aerospike.POLICY_EXISTS_CREATE_OR_REPLACE})
    assert client.get(k)[2] == {"c": 3}
    client.put(k, {"d": 4}, policy={"exists": aerospike.POLICY_EXISTS_UPDATE})
    assert client.get(k)[2] == {"c": 3, "d": 4}


def test_generation_policies(client):
    k = ("test", "demo", "genpol")
    client.put(k, {"a": 1})
    with pytest.raises(ex.RecordGenerationError):
        client.put(k, {"a": 2}, meta={"gen": 99}, policy={"gen": aerospike.POLICY_GEN_EQ})
    client.put(k, {"a": 2}, meta={"gen": 1}, policy={"gen": aerospike.POLICY_GEN_EQ})
    with pytest.raises(ex.RecordGenerationError):
        client.put(k, {"a": 3}, meta={"gen": 2}, policy={"gen": aerospike.POLICY_GEN_GT})
    client.put(k, {"a": 3}, meta={"gen": 3}, policy={"gen": aerospike.POLICY_GEN_GT})
    with pytest.raises(ex.RecordGenerationError):
        client.remove(k, meta={"gen": 1}, policy={"gen": aerospike.POLICY_GEN_EQ})
    _, meta, bins = client.get(k)
    assert bins == {"a": 3} and meta["gen"] == 3


def test_operate_basic_ops(client):
    k = ("test", "demo", "ops")
    client.put(k, {"a": 6, "s": "m"})
    _, meta, bins = client.operate(k, [
        op.increment("a", 5), op.append("s", "x"), op.prepend("s", "p"),
        op.read("a"), op.read("s"), op.write("w", 7), op.touch(30)])
    assert bins == {"a": 11, "s": "pmx"}
    assert meta["gen"] == 2 and 28 <= meta["ttl"] <= 30
    with pytest.raises(ex.BinIncompatibleType):
        client.operate(k, [op.increment("s", 1)])
    assert client.get(k)[2] == {"a": 11, "s": "pmx", "w": 7}, "failed operate applied nothing"
    client.operate(k, [op.delete()])
    assert client.exists(k)[1] is None


def test_long_bin_name_and_unknown_namespace(client):
    with pytest.raises(ex.BinNameError):
        client.put(("test", "demo", "long"), {"sixteen_chars_xx": 1})
    with pytest.raises(ex.NamespaceNotFound):
        client.get(("nons", "demo", 1))


def test_record_too_big(client):
    with pytest.raises(ex.RecordTooBig):
        client.put(("test", "demo", "big"), {"b": b"x" * (2 * 1024 * 1024)})


def test_info(server, client):
    assert client.info_all("namespaces")
    nodes = client.info_all("namespace/test")
    (_, text), = nodes.values()
    assert "objects=" in text
    assert info(server.port, "build\n") == "build\t8.1.2.0\n"
    assert info(server.port, "bogus\n") == "bogus\tERROR:4:unrecognized command\n"


def test_a_geo_filter_on_a_missing_bin_filters_the_record_out(client):
    # Geo filters are supported (tests/python/test_expressions.py); a missing bin is unknown,
    # so the record is filtered out (27) as on Aerospike CE 8.1.2.
    from aerospike_helpers import expressions as exp
    k = ("test", "demo", "geo")
    client.put(k, {"s": "abc"})
    point = aerospike.GeoJSON({"type": "Point", "coordinates": [0.0, 0.0]})
    geo = exp.CmpGeo(exp.GeoBin("g"), point).compile()
    with pytest.raises(ex.FilteredOut):
        client.get(k, policy={"expressions": geo})


def test_compressed_requests(client):
    k = ("test", "demo", "zip")
    big = {"s": "x" * 5000, "n": 1}
    client.put(k, big, policy={"compress": True})
    assert client.get(k, policy={"compress": True})[2] == big


def test_read_touch_ttl_percent(client):
    k = ("test", "demo", "touch-on-read")
    client.put(k, {"a": 1}, meta={"ttl": 100})
    # 1%: only a read in the last second of the TTL touches; this one does not.
    _, meta, _ = client.get(k, policy={"read_touch_ttl_percent": 1})
    assert client.exists(k)[1]["gen"] == 1
    # 100%: any read touches: a new generation with the TTL restarted.
    client.get(k, policy={"read_touch_ttl_percent": 100})
    _, meta = client.exists(k)
    assert meta["gen"] == 2 and 98 <= meta["ttl"] <= 100
    # -1: never touch.
    client.get(k, policy={"read_touch_ttl_percent": -1})
    assert client.exists(k)[1]["gen"] == 2


def test_value_ops_have_a_work_budget(client):
    from aerospike_helpers.operations import bitwise_operations as bo
    k = ("test", "demo", "budget")
    client.put(k, {"b": bytearray(900_000)})
    # 100 bit reads of a 900 KB blob: 90 MB of work, fine; 400: over the 256 MiB budget.
    client.operate(k, [bo.bit_count("b", 0, 8) for _ in range(100)])
    with pytest.raises(ex.InvalidRequest) as e:
        client.operate(k, [bo.bit_count("b", 0, 8) for _ in range(400)])
    assert e.value.code == 4
    assert client.get(k)[2]["b"] == bytearray(900_000)
