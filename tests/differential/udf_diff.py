"""Differential record UDFs: registers one Lua module of our own (`udf_diff.lua`, beside this
file), writes a few records, makes a fixed list of `apply` calls (every return type, bin reads
and writes, record metadata, the `list`, `map`, `bytes`, `string` and `math` libraries,
`aerospike:create/update/remove/exists`, errors raised in Lua, unknown functions and modules)
and prints, per call, what it returned (or its error code and the Lua message without its file
path) and the record afterwards, as JSON.

    python tests/differential/udf_diff.py --port 3000 > out.json
    python tests/differential/udf_diff.py --port 3000 --check udf_expected.json

`udf_expected.json` holds what Aerospike CE 8.1.2.0 answered (recorded with
`../shared/anchors/aerospike.sh start 3800` and `--port 3800 --record`); `--check` compares a
server's answers with it. tests/python/test_udf_differential.py runs the check against Apogee.
"""

import argparse
import base64
import json
import re
import socket
import struct
import sys
import time
from pathlib import Path

import aerospike
from aerospike import exception as ex

NS, SET = "test", "ud"
HERE = Path(__file__).resolve().parent
MODULE = HERE / "udf_diff.lua"
EXPECTED = HERE / "udf_expected.json"

# (label, key, function, args). Keys 1..3 exist (see RECORDS); 9 does not.
CALLS = [
    ("int", 1, "ret_int", []),
    ("negative float", 1, "ret_float", []),
    ("string", 1, "ret_str", []),
    ("nil", 1, "ret_nil", []),
    ("true", 1, "ret_bool", [True]),
    ("false", 1, "ret_bool", [False]),
    ("list", 1, "ret_list", []),
    ("map", 1, "ret_map", []),
    ("nested", 1, "ret_nested", []),
    ("bytes", 1, "ret_bytes", []),
    ("echo args", 1, "echo", [1, "two", 3.5, [4, 5], {"six": 6}, bytearray(b"\x07")]),
    ("bin read", 1, "get_bin", ["i"]),
    ("missing bin read", 1, "get_bin", ["nope"]),
    ("list bin read", 2, "get_bin", ["l"]),
    ("map bin read", 2, "get_bin", ["m"]),
    ("record meta", 1, "meta", []),
    ("bin names", 2, "names", []),
    ("increment", 1, "incr", ["i", 5]),
    ("increment twice", 1, "incr", ["i", -2]),
    ("set list bin", 3, "set_bin", ["l2", [3, 1, 2]]),
    ("set map bin", 3, "set_bin", ["m2", {"a": 1, "b": [2]}]),
    ("remove a bin", 3, "set_bin", ["s", None]),
    ("list library", 2, "lists", []),
    ("map library", 2, "maps", []),
    ("bytes library", 1, "bytes_ops", []),
    ("bytes integers and slices", 1, "bytes_more", []),
    ("string and math", 1, "strs", ["Hello"]),
    ("exists on a record", 1, "exists", []),
    ("exists on a missing record", 9, "exists", []),
    ("create a missing record", 9, "create", [42]),
    ("update a missing record", 8, "incr", ["i", 1]),
    ("remove the record", 3, "remove", []),
    ("error with a string", 1, "fail", ["boom"]),
    ("error with a table", 1, "fail_table", []),
    ("runtime error", 1, "runtime_error", []),
    ("unknown function", 1, "no_such_function", []),
    ("write then fail", 2, "write_then_fail", []),
    ("ttl and gen after update", 2, "touch_meta", []),
    ("a float bin", 1, "set_bin", ["f", 2.5]),
    ("a bool bin", 1, "set_bin", ["bo", True]),
    ("a string of length 0", 1, "set_bin", ["e", ""]),
    ("tostring of types", 2, "types", []),
]

RECORDS = {
    1: {"i": 10, "s": "one"},
    2: {"i": 20, "s": "two", "l": [1, 2, 3], "m": {"x": 1, "y": 2}},
    3: {"i": 30, "s": "three"},
}


def info(port, cmd):
    body = (cmd + "\n").encode()
    header = struct.pack(">Q", (2 << 56) | (1 << 48) | len(body))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(header + body)
        head = s.recv(8, socket.MSG_WAITALL)
        n = struct.unpack(">Q", head)[0] & 0xFFFFFFFFFFFF
        data = b""
        while len(data) < n:
            data += s.recv(n - len(data))
    return data.decode().split("\t", 1)[-1].strip()


def register(port):
    src = MODULE.read_bytes()
    content = base64.b64encode(src).decode()
    answer = info(port, f"udf-put:filename=udf_diff.lua;content={content};"
                        f"content-len={len(content)};udf-type=LUA;")
    assert answer == "ok" or answer.startswith("ok"), answer
    # Aerospike distributes a module asynchronously; wait until it is listed.
    deadline = time.monotonic() + 10
    while "udf_diff.lua" not in info(port, "udf-list"):
        assert time.monotonic() < deadline, "module never listed"
        time.sleep(0.05)


def plain(v):
    """A client value as JSON: bytes tagged, maps with sorted string keys, floats kept apart
    from ints."""
    if isinstance(v, (bytes, bytearray)):
        return {"$bytes": bytes(v).hex()}
    if isinstance(v, float):
        return {"$float": repr(v)}
    if isinstance(v, dict):
        return {"$map": sorted([[json.dumps(plain(k)), plain(x)] for k, x in v.items()])}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


def lua_message(msg):
    """A UDF error's message without the module's path (servers install modules in different
    directories) and without the node address the client puts first: 'udf_diff:12: boom'."""
    msg = re.sub(r"^\d+\.\d+\.\d+\.\d+:\d+ ", "", msg or "")
    return re.sub(r"^.*?udf_diff(\.lua)?:", "udf_diff:", msg)


def run(client):
    for k in (1, 2, 3, 8, 9):
        try:
            client.remove((NS, SET, k))
        except ex.RecordNotFound:
            pass
    for k, bins in RECORDS.items():
        client.put((NS, SET, k), bins)
    out = {}
    for label, k, fn, args in CALLS:
        key = (NS, SET, k)
        try:
            got = {"ok": plain(client.apply(key, "udf_diff", fn, args))}
        except ex.AerospikeError as e:
            got = {"error": e.code, "message": lua_message(e.msg) if e.code == 100 else None}
        try:
            _, meta, bins = client.get(key)
            got["after"] = plain(bins)
        except ex.RecordNotFound:
            got["after"] = None
        out[label] = got
    return out


def connect(port):
    return aerospike.client({"hosts": [("127.0.0.1", port)]}).connect()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--record", action="store_true", help=f"write {EXPECTED.name}")
    ap.add_argument("--check", metavar="FILE")
    a = ap.parse_args()
    register(a.port)
    got = run(connect(a.port))
    if a.record:
        lines = [f" {json.dumps(k)}: {json.dumps(got[k], sort_keys=True)}" for k in sorted(got)]
        EXPECTED.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    if a.check:
        want = json.loads(Path(a.check).read_text())
        bad = {k: (got.get(k), want[k]) for k in want if got.get(k) != want[k]}
        for k, (g, w) in bad.items():
            print(f"DIFF {k}:\n  got  {g}\n  want {w}")
        print(f"{len(want) - len(bad)}/{len(want)} calls answer the same")
        sys.exit(1 if bad else 0)
    if not a.record and not a.check:
        json.dump(got, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
