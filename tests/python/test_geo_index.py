"""Geo2dsphere indexes over S2 cells (issue 19): every geo query through an index returns
exactly the records a full scan with the same predicate as a filter expression returns.

Points and regions (circles and polygons, some across the antimeridian's neighbourhood and
near a pole) are written at random; a point index and a region index are built over them
(the records exist first, so the background build runs), then more records are written,
updated and deleted (so the write path indexes too). Queries for points within random
regions and for regions containing random points, whole and paged with `max_records`, must
equal the scan's answer, each record once. The server runs with non-default
`geo2dsphere-within` settings, which `get-config` must show.
"""

import json
import random

import aerospike
from aerospike import predicates as p
from aerospike_helpers import expressions as exp

from conftest import info, wait_for

NS, SET = "test", "geo"
RECORDS = 1500
CONFIG = """
[namespace.test.geo2dsphere-within]
min-level = 3
max-level = 18
max-cells = 8
level-mod = 1
"""
# Where the data lies: San Francisco's neighbourhood, the antimeridian's, and the north pole's.
CENTRES = ((-122.4, 37.7), (179.5, -16.5), (10.0, 89.5))


def point(rng):
    lon, lat = rng.choice(CENTRES)
    return (max(-180.0, min(180.0, lon + rng.uniform(-1.5, 1.5))),
            max(-90.0, min(90.0, lat + rng.uniform(-0.45, 0.45))))


def region(rng):
    """A circle or a polygon (square, or a triangle) around a point."""
    lon, lat = point(rng)
    kind = rng.random()
    if kind < 0.4:
        return {"type": "AeroCircle", "coordinates": [[lon, lat], rng.uniform(100, 80_000)]}
    d = rng.uniform(0.001, 0.6)
    lo_lon, hi_lon = max(-180.0, lon - d), min(180.0, lon + d)
    lo_lat, hi_lat = max(-90.0, lat - d / 2), min(90.0, lat + d / 2)
    if kind < 0.75:
        ring = [[lo_lon, lo_lat], [hi_lon, lo_lat], [hi_lon, hi_lat], [lo_lon, hi_lat]]
    else:
        ring = [[lo_lon, lo_lat], [hi_lon, lo_lat], [lon, hi_lat]]
    return {"type": "Polygon", "coordinates": [ring + [ring[0]]]}


def bins_of(rng):
    lon, lat = point(rng)
    bins = {"p": aerospike.GeoJSON({"type": "Point", "coordinates": [lon, lat]}),
            "r": aerospike.GeoJSON(region(rng))}
    if rng.random() < 0.1:
        del bins["r"]
    return bins


def keys_of(records):
    keys = [bytes(r[0][3]) for r in records]
    assert len(keys) == len(set(keys)), "a record answered twice"
    return set(keys)


def scanned(client, filter_exp):
    scan = client.scan(NS, SET)
    return keys_of(scan.results({"expressions": filter_exp}))


def queried(client, predicate, max_records=None):
    query = client.query(NS, SET)
    query.where(predicate)
    if max_records is None:
        return keys_of(query.results())
    query.max_records = max_records
    query.paginate()
    out = []
    for _ in range(RECORDS // max_records + 10):
        page = query.results()
        assert len(page) <= max_records
        out += page
        if query.is_done():
            return keys_of(out)
    raise AssertionError("a paged geo query never finished")


def test_geo_queries_equal_a_filtered_scan(apogee):
    server = apogee(config=CONFIG).start()
    client = server.client()
    conf = info(server.port, f"get-config:context=namespace;id={NS}\n")
    for setting in ("min-level=3", "max-level=18", "max-cells=8", "level-mod=1"):
        assert f"geo2dsphere-within.{setting}" in conf, conf
    rng = random.Random(19)
    for k in range(RECORDS):
        client.put((NS, SET, k), bins_of(rng))
    client.index_single_value_create(NS, SET, "p", aerospike.INDEX_GEO2DSPHERE, "geo_p")
    client.index_single_value_create(NS, SET, "r", aerospike.INDEX_GEO2DSPHERE, "geo_r")
    for name in ("geo_p", "geo_r"):
        wait_for(lambda name=name: "load_pct=100" in info(server.port, f"sindex/{NS}/{name}\n"),
                 f"{name} to be built", timeout=30)
    # Writes after the build: replaced values, deletes, new records.
    for _ in range(RECORDS // 3):
        k = rng.randrange(RECORDS + 200)
        if rng.random() < 0.2:
            try:
                client.remove((NS, SET, k))
            except aerospike.exception.RecordNotFound:
                pass
        else:
            client.put((NS, SET, k), bins_of(rng))
    asked = 0
    for n in range(40):
        r = region(rng)
        text = json.dumps(r)
        want = scanned(client, exp.CmpGeo(exp.GeoBin("p"), aerospike.GeoJSON(r)).compile())
        paged = 7 if n % 4 == 0 else None
        got = queried(client, p.geo_within_geojson_region("p", text), paged)
        assert got == want, (r, sorted(got ^ want)[:10])
        asked += len(want)
        lon, lat = point(rng)
        pt = json.dumps({"type": "Point", "coordinates": [lon, lat]})
        want = scanned(client, exp.CmpGeo(exp.GeoBin("r"), aerospike.GeoJSON(json.loads(pt))).compile())
        got = queried(client, p.geo_contains_geojson_point("r", pt), paged)
        assert got == want, ((lon, lat), sorted(got ^ want)[:10])
        asked += len(want)
    # The random queries found something (a test that matched nothing would prove little).
    assert asked > 200, asked
    client.close()


def test_geojson_aerospike_would_not_store_is_refused_with_160(server):
    """A put of a region too large for max-cells, a shape Aerospike does not know, a
    coordinate out of range, a ring under 4 points or a ring crossing itself answers 160 (as CE 8.1.2.0 does) and changes nothing;
    a query for points within a ring crossing itself answers 4."""
    client = server.client()
    key = (NS, "geobad", 1)
    good = aerospike.GeoJSON({"type": "Point", "coordinates": [1.0, 2.0]})
    client.put(key, {"g": good, "n": 1})
    bowtie = {"type": "Polygon", "coordinates": [[[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]]}
    for bad in ('{"type":"AeroCircle","coordinates":[[10,20],9000000]}',
                '{"type":"Blah","coordinates":[1,2]}',
                '{"type":"Point","coordinates":[200,2]}',
                '{"type":"Polygon","coordinates":[[[0,0],[1,1],[0,0]]]}',
                json.dumps(bowtie)):
        try:
            client.put(key, {"g": aerospike.geojson(bad), "n": 2})
        except aerospike.exception.AerospikeError as e:
            assert e.code == 160, (bad, e.code)
        else:
            raise AssertionError(f"{bad} was stored")
    _, _, bins = client.get(key)
    assert bins["n"] == 1 and str(bins["g"]) == str(good)
    # CE stores a circle with a negative radius or of 6,000 km (9,000 km is over max-cells),
    # and a ring with a repeated vertex.
    client.put(key, {"g": aerospike.geojson('{"type":"AeroCircle","coordinates":[[0,0],-5]}')})
    client.put(key, {"g": aerospike.geojson('{"type":"AeroCircle","coordinates":[[10,20],6e6]}')})
    client.put(key, {"g": aerospike.GeoJSON({"type": "Polygon", "coordinates": [
        [[0, 0], [5, 0], [5, 0], [5, 5], [0, 5], [0, 0]]]})})
    client.index_single_value_create(NS, "geobad", "g", aerospike.INDEX_GEO2DSPHERE, "geobad_g")
    wait_for(lambda: "load_pct=100" in info(server.port, f"sindex/{NS}/geobad_g\n"),
             "geobad_g to be built", timeout=30)
    query = client.query(NS, "geobad")
    query.where(p.geo_within_geojson_region("g", json.dumps(bowtie)))
    try:
        query.results()
    except aerospike.exception.AerospikeError as e:
        assert e.code == 4, e.code
    else:
        raise AssertionError("a query within a ring crossing itself was answered")
    client.close()


def test_set_config_changes_geo2dsphere_within_as_aerospike_does(apogee):
    """set-config takes `geo2dsphere-within-{min-level,max-level,max-cells}` with CE 8.1.2.0's
    bounds (0..=30, 0..=30, 1..=256; min-level above max-level accepted) and refuses the rest
    with 4, changing nothing. As on CE, the settings change the cells later writes are indexed
    under, never which GeoJSON values a write may store (judged by fixed settings); what was
    indexed under the old settings is still found."""
    server = apogee().start()
    client = server.client()

    def conf():
        text = info(server.port, f"get-config:context=namespace;id={NS}\n")
        text = text.split("\t", 1)[-1].strip()
        return {k: v for k, v in (kv.split("=", 1) for kv in text.split(";") if "geo" in kv)}

    def set_config(kv):
        reply = info(server.port, f"set-config:context=namespace;id={NS};{kv}\n")
        return reply.split("\t", 1)[-1].strip()

    def put(k, geojson):
        try:
            client.put((NS, "geoset", k), {"g": aerospike.geojson(geojson)})
            return "stored"
        except aerospike.exception.AerospikeError as e:
            return e.code

    big = '{"type":"AeroCircle","coordinates":[[10,20],6e6]}'
    huge = '{"type":"AeroCircle","coordinates":[[10,20],9e6]}'
    before = conf()
    assert before["geo2dsphere-within.max-cells"] == "12", before
    assert (put(1, big), put(9, huge)) == ("stored", 160)
    assert put(2, '{"type":"Point","coordinates":[10.0,20.0]}') == "stored"
    client.index_single_value_create(NS, "geoset", "g", aerospike.INDEX_GEO2DSPHERE, "geoset_g")
    wait_for(lambda: "load_pct=100" in info(server.port, f"sindex/{NS}/geoset_g\n"),
             "geoset_g to be built", timeout=30)

    for bad in ("geo2dsphere-within-min-level=31", "geo2dsphere-within-max-level=31",
                "geo2dsphere-within-min-level=-1", "geo2dsphere-within-max-cells=0",
                "geo2dsphere-within-max-cells=257", "geo2dsphere-within-max-cells=2x",
                "geo2dsphere-within-level-mod=2", "geo2dsphere-within-strict=false",
                "geo2dsphere-within.max-cells=20"):
        assert set_config(bad).startswith("ERROR:4"), bad
    assert conf() == before, "a refused set-config changed nothing"

    assert set_config("geo2dsphere-within-max-cells=1") == "ok"
    assert set_config("geo2dsphere-within-min-level=26") == "ok"
    assert set_config("geo2dsphere-within-max-level=25") == "ok"
    now = conf()
    assert (now["geo2dsphere-within.max-cells"], now["geo2dsphere-within.min-level"],
            now["geo2dsphere-within.max-level"]) == ("1", "26", "25"), now
    # Writes are judged as before.
    assert (put(3, big), put(9, huge)) == ("stored", 160)
    assert set_config("geo2dsphere-within-min-level=4") == "ok"
    assert set_config("geo2dsphere-within-max-level=16") == "ok"
    assert set_config("geo2dsphere-within-max-cells=3") == "ok"
    assert put(4, '{"type":"AeroCircle","coordinates":[[10.001,20.001],50]}') == "stored"
    assert put(5, '{"type":"Point","coordinates":[10.0005,20.0005]}') == "stored"

    digest = {k: bytes(aerospike.calc_digest(NS, "geoset", k)) for k in (1, 2, 3, 4, 5, 9)}

    def found(predicate):
        q = client.query(NS, "geoset")
        q.where(predicate)
        got = keys_of(q.results())
        return {k for k, d in digest.items() if d in got}

    # Regions indexed under each of the three settings contain this point (as CE answers); both points
    # lie within 200 m of (10, 20).
    pt = aerospike.GeoJSON({"type": "Point", "coordinates": [10.001, 20.001]})
    assert found(p.geo_contains_geojson_point("g", pt.dumps())) == {1, 3, 4}
    assert found(p.geo_within_radius("g", 10.0, 20.0, 200)) == {2, 5}
    client.close()
