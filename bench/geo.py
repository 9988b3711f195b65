"""Geo query figures of one server (issue 19), printed as one line of JSON: points within a
small circle and within a thin triangle through a geo2dsphere index (S2 cell ranges) against
a scan with the same predicate as a filter expression, and regions containing a point
likewise.

    python bench/geo.py --port 3000 [--records 200000] [--queries 50] [--rounds 2]

Loads `records` records of set `gb`, each a point (bin `p`) spread over a 2 x 2 degree
square and a circle of 50 m to 5 km around it (bin `r`), with batch writes; indexes both;
then times `queries` random point-within-circle queries (500 m radius), as many
point-within-triangle queries and as many region-containing-point queries, and the equivalent filtered scans. Run by bench/geo.sh
against Apogee and Aerospike CE in one run.
"""

import argparse
import json
import random
import time

import aerospike
from aerospike import predicates as p
from aerospike_helpers import expressions as exp
from aerospike_helpers.batch.records import BatchRecords, Write
from aerospike_helpers.operations import operations as ops
from sindex import info  # bench/ is on the path when run as `python bench/geo.py`

NS, SET = "test", "gb"
BATCH_RECORDS = 2000
LON, LAT = -122.4, 37.7


def load(client, records, rng):
    for start in range(0, records, BATCH_RECORDS):
        rows = []
        for i in range(start, min(start + BATCH_RECORDS, records)):
            lon, lat = LON + rng.uniform(-1, 1), LAT + rng.uniform(-1, 1)
            point = aerospike.GeoJSON({"type": "Point", "coordinates": [lon, lat]})
            circle = aerospike.GeoJSON(
                {"type": "AeroCircle", "coordinates": [[lon, lat], rng.uniform(50, 5000)]})
            rows.append(Write((NS, SET, i), [ops.write("p", point), ops.write("r", circle)]))
        batch = BatchRecords(rows)
        client.batch_write(batch)
        bad = [r for r in batch.batch_records if r.result != 0]
        if bad:
            raise RuntimeError(f"batch write failed: result {bad[0].result}")


def triangle(lon, lat):
    """A thin diagonal triangle of about 0.02 x 0.02 degrees at (lon, lat)."""
    ring = [[lon, lat], [lon + 0.02, lat + 0.02], [lon + 0.019, lat + 0.021], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    rng = random.Random(42)
    client = aerospike.client(
        {"hosts": [("127.0.0.1", a.port)], "policies": {"batch": {"total_timeout": 60000}}}
    ).connect()
    try:
        client.truncate(NS, SET, 0)
        time.sleep(1)
        load(client, a.records, rng)
        for b in ("p", "r"):
            client.index_single_value_create(NS, SET, b, aerospike.INDEX_GEO2DSPHERE, f"gb_{b}")
        for b in ("p", "r"):
            while "load_pct=100" not in info(client, f"sindex/{NS}/gb_{b}"):
                time.sleep(0.2)
        centres = [(LON + rng.uniform(-0.9, 0.9), LAT + rng.uniform(-0.9, 0.9))
                   for _ in range(a.queries)]
        out = {}
        for kind in ("within", "polygon", "contains"):
            q_times, s_times, found = [], [], 0
            for _ in range(a.rounds):
                t = time.perf_counter()
                for lon, lat in centres:
                    q = client.query(NS, SET)
                    if kind == "within":
                        q.where(p.geo_within_radius("p", lon, lat, 500))
                    elif kind == "polygon":
                        q.where(p.geo_within_geojson_region("p", json.dumps(triangle(lon, lat))))
                    else:
                        q.where(p.geo_contains_point("r", lon, lat))
                    found += len(q.results())
                q_times.append((time.perf_counter() - t) / len(centres))
                # The scan is slow: a few of the queries, as filtered scans.
                t = time.perf_counter()
                for lon, lat in centres[:3]:
                    if kind == "within":
                        region = {"type": "AeroCircle", "coordinates": [[lon, lat], 500]}
                        f = exp.CmpGeo(exp.GeoBin("p"), aerospike.GeoJSON(region))
                    elif kind == "polygon":
                        f = exp.CmpGeo(exp.GeoBin("p"), aerospike.GeoJSON(triangle(lon, lat)))
                    else:
                        pt = {"type": "Point", "coordinates": [lon, lat]}
                        f = exp.CmpGeo(exp.GeoBin("r"), aerospike.GeoJSON(pt))
                    client.scan(NS, SET).results({"expressions": f.compile()})
                s_times.append((time.perf_counter() - t) / 3)
            q_ms, s_ms = min(q_times) * 1e3, min(s_times) * 1e3
            out[kind] = {"query_ms": round(q_ms, 2), "scan_ms": round(s_ms, 1),
                         "scan_over_query": round(s_ms / q_ms, 1),
                         "matched_per_query": round(found / a.rounds / len(centres), 1)}
        print(json.dumps(out))
    finally:
        for b in ("p", "r"):
            try:
                client.index_remove(NS, f"gb_{b}")
            except aerospike.exception.AerospikeError:
                pass
        client.close()


if __name__ == "__main__":
    main()
