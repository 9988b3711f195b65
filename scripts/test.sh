#!/usr/bin/env bash
# Runs every Apogee test on a fresh machine: the Rust unit and integration tests (the latter
# start the real apogee binary and drive it with the official Rust client `aerospike` 3.0),
# the loom models, and the suite that drives a real server with the official Python client
# (installed from PyPI into .venv by this script).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --workspace --bins
cargo test --workspace

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
APOGEE_BIN="$PWD/target/debug/apogee" .venv/bin/pytest -q -W ignore::DeprecationWarning tests/python
