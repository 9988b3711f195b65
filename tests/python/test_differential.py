"""Replays every case of the differential harness (tests/differential/cases/*.json) against a
real apogee through the official Python client: one test per case, each asserting the results
and result codes the Aerospike documentation gives for the operations it runs."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "differential"))
import apogee_diff  # noqa: E402

CASES = apogee_diff.load_cases()


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory):
    from conftest import Apogee

    server = Apogee(tmp_path_factory.mktemp("diff") / "data").start()
    c = server.client()
    yield c
    c.close()
    server.kill()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(shared_client, case):
    problems = apogee_diff.run_case(shared_client, "test", case)
    assert not problems, "\n".join(problems)


def test_the_harness_notices_a_wrong_expectation(shared_client):
    """A case with a deliberately wrong expected result must fail, or the harness proves nothing."""
    case = {"name": "harness self-check", "record": {"l": [1, 2]},
            "steps": [{"ops": [["list_size", {"bin_name": "l"}]], "expect": {"l": 3}}],
            "after": {"l": [1, 2, 3]}}
    problems = apogee_diff.run_case(shared_client, "test", case)
    assert len(problems) == 2, problems
    wrong_type = {"name": "harness type check", "record": {"l": [1, 2]},
                  "steps": [{"ops": [["list_size", {"bin_name": "l"}]], "expect": {"l": 2.0}}]}
    assert apogee_diff.run_case(shared_client, "test", wrong_type)
