"""Differential secondary-index queries: writes one generated data set holding every indexed
type (integers, strings, blobs, lists, map keys and values, a nested element under a CDT
context, GeoJSON points and regions, values of the wrong type and missing bins), creates an
index of each kind, runs a fixed list of queries and prints each query's result (the sorted
user keys, or the error code) as JSON.

    python tests/differential/sindex_diff.py --port 3000 > out.json
    python tests/differential/sindex_diff.py --port 3000 --check sindex_expected.json

`sindex_expected.json` holds what Aerospike CE 8.1.2.0 answered (recorded with
`../shared/anchors/aerospike.sh start 3800` and `--port 3800 --record`); `--check` compares a
server's answers with it. tests/python/test_sindex_differential.py runs the check against
Apogee.
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import aerospike
from aerospike import exception as ex
from aerospike import predicates as p
from aerospike_helpers import cdt_ctx

NS, SET = "test", "sd"
RECORDS = 240
# The index_*_create helpers used here are deprecated in client 19, still supported.
warnings.filterwarnings("ignore", category=DeprecationWarning)
EXPECTED = Path(__file__).resolve().parent / "sindex_expected.json"

# (name, bin, index type, data type, context)
INDEXES = [
    ("sd_i", "i", aerospike.INDEX_TYPE_DEFAULT, aerospike.INDEX_NUMERIC, None),
    ("sd_s", "s", aerospike.INDEX_TYPE_DEFAULT, aerospike.INDEX_STRING, None),
    ("sd_b", "b", aerospike.INDEX_TYPE_DEFAULT, aerospike.INDEX_BLOB, None),
    ("sd_l", "l", aerospike.INDEX_TYPE_LIST, aerospike.INDEX_NUMERIC, None),
    ("sd_ls", "ls", aerospike.INDEX_TYPE_LIST, aerospike.INDEX_STRING, None),
    ("sd_mk", "m", aerospike.INDEX_TYPE_MAPKEYS, aerospike.INDEX_STRING, None),
    ("sd_mv", "m", aerospike.INDEX_TYPE_MAPVALUES, aerospike.INDEX_NUMERIC, None),
    ("sd_g", "g", aerospike.INDEX_TYPE_DEFAULT, aerospike.INDEX_GEO2DSPHERE, None),
    ("sd_r", "r", aerospike.INDEX_TYPE_DEFAULT, aerospike.INDEX_GEO2DSPHERE, None),
    ("sd_e", "e", aerospike.INDEX_TYPE_DEFAULT, aerospike.INDEX_GEO2DSPHERE, None),
    ("sd_n", "n", aerospike.INDEX_TYPE_LIST, aerospike.INDEX_NUMERIC,
     [cdt_ctx.cdt_ctx_list_index(0)]),
]


def record(i):
    """Record i of the data set: every bin a function of i, some missing or of another type."""
    bins = {
        "i": i % 37 - 10,
        "s": f"s{i % 13}",
        "b": bytes([i % 7]),
        "l": [i % 5, i % 11, 100 + i % 3],
        "ls": [f"t{i % 4}", f"t{i % 6}"],
        "m": {f"k{i % 5}": i % 9, f"j{i % 3}": 50 + i % 4},
        "g": aerospike.GeoJSON({"type": "Point",
                                "coordinates": [(i % 20) - 10 + 0.25, (i % 16) - 8 + 0.5]}),
        "n": [[i % 4, i % 9], i],
    }
    # Points a few hundred metres from a polygon's edges, where great-circle edges and lines
    # of constant latitude disagree, and points around the antimeridian.
    if i % 2 == 0:
        lat = (38.001, 38.004, 38.008, 38.02, 35.999, 36.002, 36.006, 36.02)[i // 2 % 8]
        lon = -122.0 + (i // 16 % 5) * 0.2 - 0.4
    else:
        lon = (179.5, -179.5, 178.9, -178.9, 180.0, 179.99)[i // 2 % 6]
        lat = (0.0, 0.99, 1.01, -0.999)[i // 12 % 4]
    bins["e"] = aerospike.GeoJSON({"type": "Point", "coordinates": [lon, lat]})
    if i % 17 == 0:
        bins["i"] = f"not an integer {i}"
        bins["s"] = i
    if i % 19 == 0:
        del bins["l"]
        del bins["m"]
    if i % 6 == 0:
        bins["r"] = aerospike.GeoJSON({"type": "AeroCircle",
                                       "coordinates": [[(i % 10) - 5, (i % 8) - 4], 150000]})
    return bins


def queries():
    """(label, set, predicate[, context]) of every query compared."""
    square = {"type": "Polygon",
              "coordinates": [[[-3.0, -3.0], [3.0, -3.0], [3.0, 3.0], [-3.0, 3.0], [-3.0, -3.0]]]}
    two_degrees = {"type": "Polygon", "coordinates": [[[-123.0, 36.0], [-121.0, 36.0],
                                                        [-121.0, 38.0], [-123.0, 38.0],
                                                        [-123.0, 36.0]]]}
    antimeridian = {"type": "Polygon", "coordinates": [[[179.0, -1.0], [-179.0, -1.0],
                                                         [-179.0, 1.0], [179.0, 1.0],
                                                         [179.0, -1.0]]]}
    return [
        ("int between -5..5", SET, p.between("i", -5, 5)),
        ("int equals 0", SET, p.equals("i", 0)),
        ("int between, other set", "other", p.between("i", -5, 5)),
        ("int between, no set", None, p.between("i", -5, 5)),
        ("int between, empty range", SET, p.between("i", 1000, 2000)),
        ("int between reversed", SET, p.between("i", 5, -5)),
        ("string equals s3", SET, p.equals("s", "s3")),
        ("string equals missing", SET, p.equals("s", "zz")),
        ("blob equals 02", SET, p.equals("b", bytes([2]))),
        ("list contains 4", SET, p.contains("l", aerospike.INDEX_TYPE_LIST, 4)),
        ("list range 9..100", SET, p.range("l", aerospike.INDEX_TYPE_LIST, 9, 100)),
        ("list of strings contains t5", SET, p.contains("ls", aerospike.INDEX_TYPE_LIST, "t5")),
        ("map keys contain k2", SET, p.contains("m", aerospike.INDEX_TYPE_MAPKEYS, "k2")),
        ("map values range 7..51", SET, p.range("m", aerospike.INDEX_TYPE_MAPVALUES, 7, 51)),
        ("map values contain 53", SET, p.contains("m", aerospike.INDEX_TYPE_MAPVALUES, 53)),
        ("ctx list_index(0) contains 8", SET, p.contains("n", aerospike.INDEX_TYPE_LIST, 8),
         [cdt_ctx.cdt_ctx_list_index(0)]),
        ("geo points within square", SET, p.geo_within_geojson_region("g", json.dumps(square))),
        ("geo points within 300 km of (1, 1)", SET, p.geo_within_radius("g", 1.0, 1.0, 300000)),
        ("geo regions containing (0, 0)", SET, p.geo_contains_point("r", 0.0, 0.0)),
        ("geo points near a 2-degree square's edges", SET,
         p.geo_within_geojson_region("e", json.dumps(two_degrees))),
        ("geo points within a box across the antimeridian", SET,
         p.geo_within_geojson_region("e", json.dumps(antimeridian))),
        ("no index on bin", SET, p.equals("zz", 1)),
        ("string filter on numeric index", SET, p.equals("i", "x")),
        ("list filter on default index", SET, p.contains("i", aerospike.INDEX_TYPE_LIST, 1)),
    ]


def wait_built(client, name, deadline_s=60):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        replies = client.info_all(f"sindex/{NS}/{name}")
        if all("load_pct=100" in (r[1] or "") for r in replies.values()):
            return
        time.sleep(0.05)
    raise TimeoutError(f"index {name} not built after {deadline_s} s")


def setup(client):
    for name, *_ in INDEXES:
        try:
            client.index_remove(NS, name)
        except ex.AerospikeError:
            pass
    client.truncate(NS, SET, 0)
    client.truncate(NS, "other", 0)
    time.sleep(0.2)
    for i in range(RECORDS):
        client.put((NS, SET, i), record(i))
    for i in range(10):
        client.put((NS, "other", 1000 + i), {"i": i})
    # Created with the info command the C client sends (its own helpers then sleep 2 s
    # before each poll of the build; polling here is quicker).
    itypes = {aerospike.INDEX_TYPE_DEFAULT: "DEFAULT", aerospike.INDEX_TYPE_LIST: "LIST",
              aerospike.INDEX_TYPE_MAPKEYS: "MAPKEYS", aerospike.INDEX_TYPE_MAPVALUES: "MAPVALUES"}
    dtypes = {aerospike.INDEX_NUMERIC: "NUMERIC", aerospike.INDEX_STRING: "STRING",
              aerospike.INDEX_BLOB: "BLOB", aerospike.INDEX_GEO2DSPHERE: "GEO2DSPHERE"}
    for name, bin_, itype, dtype, ctx in INDEXES:
        context = f"context={client.get_cdtctx_base64(ctx)};" if ctx else ""
        cmd = (f"sindex-create:ns={NS};set={SET};indexname={name};numbins=1;{context}"
               f"indextype={itypes[itype]};indexdata={bin_},{dtypes[dtype]};priority=normal")
        for _, (err, text) in client.info_all(cmd).items():
            if err or text.strip().split("\t")[-1] != "ok":
                raise RuntimeError(f"{cmd}: {err or text}")
    for name, *_ in INDEXES:
        wait_built(client, name)


def run(client):
    """Every query's answer: sorted user keys (a repeated key appears twice), or the error
    code."""
    out = {}
    for label, set_, pred, *ctx in queries():
        q = client.query(NS, set_)
        q.where(pred, *ctx)
        try:
            keys = [r[0][2] for r in q.results({"max_retries": 0})]
            out[label] = sorted(keys, key=lambda k: (str(type(k)), k))
        except ex.AerospikeError as e:
            out[label] = f"error {e.code}"
    return out


def connect(port):
    return aerospike.client({"hosts": [("127.0.0.1", port)],
                             "policies": {"info": {"timeout": 5000}}}).connect()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--record", action="store_true", help=f"write the answers to {EXPECTED}")
    ap.add_argument("--check", type=Path, help="compare the answers with this file")
    a = ap.parse_args()
    client = connect(a.port)
    setup(client)
    out = run(client)
    if a.record:
        EXPECTED.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    if a.check:
        want = json.loads(a.check.read_text())
        bad = {k: (out.get(k), v) for k, v in want.items() if out.get(k) != v}
        for k, (got, exp_) in bad.items():
            print(f"DIFF {k}: got {got}, expected {exp_}", file=sys.stderr)
        sys.exit(1 if bad else 0)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
