"""Differential test harness: replays the operation sequences in `cases/*.json` against any
Aerospike-protocol server through the official Python client, and checks each result.

    python tests/differential/apogee_diff.py --host 127.0.0.1 --port 3000 [--filter list_]

The same files can be replayed against Apogee and against an Aerospike server: a case that
passes on one and fails on the other marks a difference. Cases are JSON so that any client
language can replay them.

Case format (one JSON list of cases per file):

    {"name": "list_append returns the new size",
     "record": {"l": [1, 2]},                  # put first (the record is deleted before)
     "steps": [
       {"ops": [["list_append", {"bin": "l", "val": 3}]],
        "expect": {"l": 3}},                   # the bins operate() returns
       {"ops": [["list_get", {"bin": "l", "index": 9}]],
        "error": 26}                           # or the result code it fails with
     ],
     "after": {"l": [1, 2, 3]}}                # the record's bins afterwards (get)

An op is [function name in aerospike_helpers.operations.*, keyword arguments]. Values use
these forms where JSON cannot say what Python needs:
  "$NAME"                  the constant aerospike.NAME (e.g. "$LIST_RETURN_VALUE")
  {"$ctx": [["map_key", "a"], ["list_index", 0]]}   a cdt_ctx list (cdt_ctx_<kind>(*args))
  {"$map": [[1, "a"], [2, "b"]]}                    a dict with non-string keys
  {"$kod": {...}}                                    an aerospike.KeyOrderedDict
  {"$bytes": "0102"}                                 a bytes value (hex)
  {"$tuple": [...]}                                  a tuple
  {"$sum": ["$A", "$B"]}                             flags OR-ed together (their sum)
  {"$exp": ["Eq", ["IntBin", "a"], 8]}              a compiled aerospike_helpers expression
  {"$var": "h1"}                                     a bin saved by an earlier step of the case
                                                     ("save": {"h1": "h"} keeps bin h's result)
A step may also carry "policy" (e.g. {"expressions": {"$exp": ...}} for a filter) and "call":
"operate" (the default), "get" (expect the bins), "remove" (expect {} on success) or "exists" (expect {}, or null for a missing record).
Results are compared with their types: 1, 1.0 and True differ.
"""

import argparse
import json
import sys
import warnings
from pathlib import Path

import aerospike
from aerospike import exception as ex
from aerospike_helpers import cdt_ctx
from aerospike_helpers import expressions as exp
from aerospike_helpers.expressions import base as exp_base
from aerospike_helpers.operations import (
    bitwise_operations,
    expression_operations,
    hll_operations,
    list_operations,
    map_operations,
    operations,
)

CASES_DIR = Path(__file__).resolve().parent / "cases"
MODULES = [operations, list_operations, map_operations, bitwise_operations, hll_operations,
           expression_operations]
SET = "diff"

# Values saved by earlier steps of the running case ("save"), read back with {"$var": name}.
_VARS = {}


def decode(v):
    """Turns a case's JSON value into the Python value the client needs."""
    if isinstance(v, str) and v.startswith("$"):
        return getattr(aerospike, v[1:])
    if isinstance(v, list):
        return [decode(x) for x in v]
    if isinstance(v, dict):
        if len(v) == 1:
            (tag, body), = v.items()
            if tag == "$ctx":
                return [getattr(cdt_ctx, "cdt_ctx_" + kind)(*map(decode, args))
                        for kind, *args in body]
            if tag == "$map":
                return {decode(k): decode(x) for k, x in body}
            if tag == "$kod":
                return aerospike.KeyOrderedDict({k: decode(x) for k, x in body.items()})
            if tag == "$bytes":
                return bytes.fromhex(body)
            if tag == "$tuple":
                return tuple(decode(x) for x in body)
            if tag == "$sum":
                return sum(decode(x) for x in body)
            if tag == "$exp":
                return build_exp(body).compile()
            if tag == "$var":
                return _VARS[body]
        return {k: decode(x) for k, x in v.items()}
    return v


def exp_class(name):
    """An expression class by name: from the package, or from its `base` module (client 19.3
    does not re-export every class, e.g. RemoveResult, which 19.0 called ResultRemove)."""
    if not isinstance(name, str):
        return None
    return getattr(exp, name, None) or getattr(exp_base, name, None)


def build_exp(node):
    """["Eq", ["IntBin", "a"], 8] -> Eq(IntBin("a"), 8); other values decode as usual."""
    if isinstance(node, list) and node and exp_class(node[0]) is not None:
        return exp_class(node[0])(*[build_exp(a) for a in node[1:]])
    return decode(node)


def same(a, b):
    """Equality that also compares types (1 != 1.0 != True), recursively."""
    if isinstance(a, (bytes, bytearray)) and isinstance(b, (bytes, bytearray)):
        return bytes(a) == bytes(b)
    if type(a) is not type(b) and not (isinstance(a, dict) and isinstance(b, dict)):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def find_op(name):
    for m in MODULES:
        f = getattr(m, name, None)
        if f is not None:
            return f
    raise KeyError(f"no op named {name} in aerospike_helpers.operations")


def build_ops(specs):
    return [find_op(name)(**{k: decode(v) for k, v in kwargs.items()}) for name, kwargs in specs]


def run_case(client, ns, case):
    """Runs one case; returns a list of failure messages (empty when it passes)."""
    key = (ns, SET, case["name"])
    failures = []
    _VARS.clear()
    try:
        client.remove(key)
    except ex.RecordNotFound:
        pass
    if "record" in case:
        client.put(key, decode(case["record"]))
    for i, step in enumerate(case["steps"]):
        where = f"step {i}"
        policy = decode(step.get("policy", {}))
        call = step.get("call", "operate")
        try:
            if call == "operate":
                _, _, bins = client.operate(key, build_ops(step["ops"]), policy=policy)
            elif call == "get":
                _, _, bins = client.get(key, policy=policy)
            elif call == "remove":
                client.remove(key, policy=policy)
                bins = {}
            elif call == "exists":
                _, meta = client.exists(key, policy=policy)
                bins = {} if meta is not None else None
            else:
                raise KeyError(f"unknown call {call}")
        except ex.AerospikeError as e:
            if "error" not in step:
                failures.append(f"{where}: failed with {e.code} ({e.msg})")
            elif e.code != step["error"]:
                failures.append(f"{where}: error {e.code}, expected {step['error']}")
            continue
        for var, bin_name in step.get("save", {}).items():
            _VARS[var] = bins.get(bin_name)
        if "expect" not in step and "error" not in step:
            if "save" not in step:
                failures.append(f"{where}: the step has no expect, error or save")
            continue
        if "error" in step:
            failures.append(f"{where}: succeeded with {bins}, expected error {step['error']}")
        elif not same(bins, decode(step["expect"])):
            failures.append(f"{where}: got {bins!r}, expected {decode(step['expect'])!r}")
    if "after" in case:
        try:
            _, _, bins = client.get(key)
        except ex.RecordNotFound:
            bins = None
        want = decode(case["after"])
        if not same(bins, want):
            failures.append(f"after: record is {bins!r}, expected {want!r}")
    return failures


def load_cases(filter_text=""):
    cases = []
    for path in sorted(CASES_DIR.glob("*.json")):
        for case in json.loads(path.read_text()):
            case["file"] = path.name
            if filter_text in case["name"]:
                cases.append(case)
    names = [c["name"] for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"case names must be unique: {sorted(dup)}"
    return cases


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--namespace", default="test")
    p.add_argument("--filter", default="", help="run only cases whose name contains this")
    a = p.parse_args()
    # The client deprecates some arguments the cases still use (value_byte_size); they work.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    client = aerospike.client({"hosts": [(a.host, a.port)]}).connect()
    failed = 0
    cases = load_cases(a.filter)
    for case in cases:
        problems = run_case(client, a.namespace, case)
        if problems:
            failed += 1
            print(f"FAIL {case['file']}: {case['name']}")
            for m in problems:
                print(f"    {m}")
    print(f"{len(cases) - failed}/{len(cases)} cases passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
