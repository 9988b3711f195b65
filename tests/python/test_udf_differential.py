"""Record UDFs answer what Aerospike CE 8.1.2.0 answered: the module and calls of
tests/differential/udf_diff.py (every return type, bin reads and writes, record metadata, the
list, map, bytes, string and math libraries, create/update/remove/exists, errors raised in Lua,
an unknown function), compared call by call, with the record read back after each, against
CE's recorded answers in tests/differential/udf_expected.json."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "differential"))

import udf_diff  # noqa: E402


def test_record_udfs_answer_what_aerospike_answered(server):
    udf_diff.register(server.port)
    got = udf_diff.run(udf_diff.connect(server.port))
    want = json.loads(udf_diff.EXPECTED.read_text())
    assert set(got) == set(want)
    diffs = {label: (got[label], want[label]) for label in want if got[label] != want[label]}
    assert not diffs, f"answers differ from Aerospike's (got, expected): {diffs}"
    # The calls are not degenerate: most succeed, some fail with a Lua message.
    assert sum(1 for v in want.values() if "ok" in v) >= 30
    assert sum(1 for v in want.values() if v.get("error") == 100) >= 4
