"""Expressions through the official Python client against the real apogee binary: the typed
build (an ill-typed filter is PARAMETER_ERROR, as on Aerospike CE 8.1.2), call arguments that
are expressions, and the bit and HLL call families. Each expected result was checked against
Aerospike CE 8.1.2.0 (../shared/anchors/aerospike.sh)."""

import aerospike
import pytest
from aerospike import exception as ex
from aerospike_helpers import expressions as exp
from aerospike_helpers.expressions import bitwise as bitexp
from aerospike_helpers.expressions import hll as hllexp
from aerospike_helpers.operations import expression_operations as eo
from aerospike_helpers.operations import hll_operations as hllops

KEY = ("test", "exp", "k1")
MISSING = ("test", "exp", "nope")


@pytest.fixture
def rec(client):
    client.put(KEY, {"i": 1, "f": 2.5, "s": "abc", "l": [1, 2, 8, [26, 27], "s"],
                     "b": bytearray(b"\x01\x02")})
    client.operate(KEY, [hllops.hll_add("h", ["a", "b", "c"], 8)])
    return KEY


def get(client, key, e):
    return client.get(key, policy={"expressions": e.compile()})


@pytest.mark.parametrize("bad", [
    exp.Eq(exp.Add(exp.IntBin("i"), 5.0), 10),      # int plus float
    exp.Eq(exp.IntBin("i"), "x"),                    # int compared with a string
    exp.Not(exp.IntBin("i")),                         # not of an int
    exp.Eq(exp.ToFloat(exp.FloatBin("f")), 2.0),     # to_float of a float
    exp.Add(exp.IntBin("i"), 5),                     # a filter that is not boolean
])
def test_an_ill_typed_filter_is_a_parameter_error(client, rec, bad):
    with pytest.raises(ex.InvalidRequest):
        get(client, rec, bad)
    # CE looks the record up first: a missing record is NOT_FOUND whatever the filter.
    with pytest.raises(ex.RecordNotFound):
        get(client, MISSING, bad)


def test_a_bad_batch_filter_fails_the_whole_batch(client, rec):
    bad = exp.Eq(exp.Add(exp.IntBin("i"), 5.0), 10).compile()
    res = client.batch_read([rec, MISSING], policy={"expressions": bad})
    assert res.result == 4


def test_call_arguments_are_expressions(client, rec):
    # A quoted list literal as the value list.
    got = exp.ListGetByValueList(None, aerospike.LIST_RETURN_VALUE, [8, [26, 27]], "l")
    _, _, bins = client.operate(rec, [eo.expression_read("r", got.compile())])
    assert bins["r"] == [8, [26, 27]]
    assert get(client, rec, exp.Eq(got, [8, [26, 27]]))[2]["i"] == 1
    # An index computed from a bin.
    at = exp.ListGetByIndex(None, aerospike.LIST_RETURN_VALUE, exp.ResultType.INTEGER,
                            exp.Add(exp.IntBin("i"), 1), "l")
    _, _, bins = client.operate(rec, [eo.expression_read("r", at.compile())])
    assert bins["r"] == 8


def test_bit_and_hll_calls(client, rec):
    count = bitexp.BitCount(0, 16, exp.BlobBin("b"))
    _, _, bins = client.operate(rec, [eo.expression_read("r", count.compile())])
    assert bins["r"] == 2
    n = hllexp.HLLGetCount(exp.HLLBin("h"))
    _, _, bins = client.operate(rec, [eo.expression_read("r", n.compile())])
    assert bins["r"] == 3


def test_geo_comparisons(client):
    circle = aerospike.GeoJSON({"type": "AeroCircle", "coordinates": [[-132.0, 37.5], 1000]})
    pt = aerospike.GeoJSON({"type": "Point", "coordinates": [-132.0, 37.5]})
    far = aerospike.GeoJSON({"type": "Point", "coordinates": [-60.5, 20]})
    key = ("test", "exp", "geo")
    client.put(key, {"point": pt, "region": circle, "far": far})
    # As on CE 8.1.2: a point within a region and a region containing a point match, two
    # points never do, and geojson values cannot be compared with Eq (PARAMETER_ERROR).
    assert get(client, key, exp.CmpGeo(exp.GeoBin("point"), circle))[2]["far"]
    assert get(client, key, exp.CmpGeo(exp.GeoBin("region"), pt))[2]["far"]
    for no in [exp.CmpGeo(exp.GeoBin("far"), circle), exp.CmpGeo(exp.GeoBin("point"), pt)]:
        with pytest.raises(ex.FilteredOut):
            get(client, key, no)
    with pytest.raises(ex.InvalidRequest):
        get(client, key, exp.Eq(exp.GeoBin("point"), pt))


def test_write_flags_are_judged_before_the_expression_is_evaluated(client, rec):
    # An expression that is unknown on this record (the bin it reads is missing): CE answers
    # BIN_EXISTS / BIN_NOT_FOUND from the flags first, not OP_NOT_APPLICABLE.
    unknown = exp.IntBin("no-such-bin").compile()
    existing = next(iter(client.get(rec)[2]))
    with pytest.raises(ex.BinExistsError):
        client.operate(rec, [eo.expression_write(existing, unknown, aerospike.EXP_WRITE_CREATE_ONLY)])
    with pytest.raises(ex.BinNotFound):
        client.operate(rec, [eo.expression_write("absent", unknown, aerospike.EXP_WRITE_UPDATE_ONLY)])
    with pytest.raises(ex.OpNotApplicable):
        client.operate(rec, [eo.expression_write("absent", unknown, aerospike.EXP_WRITE_DEFAULT)])
