#!/usr/bin/env bash
# Runs every Apogee test on a fresh machine: the Rust unit and integration tests (the latter
# start the real apogee binary and drive it with the official Rust client `aerospike` 3.0),
# the loom models, and the suite that drives a real server with the official Python client
# (installed from PyPI into .venv by this script).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use: a venv for the Python client, and Redis for the benchmark's
# RESP driver test. Installed when missing and apt is usable; otherwise say what is missing.
need=()
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq "${need[@]}"
    else
        echo "scripts/test.sh needs: ${need[*]} (e.g. sudo apt-get install ${need[*]})" >&2
        exit 1
    fi
fi

cargo build --workspace --bins
cargo test --workspace

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
APOGEE_BIN="$PWD/target/debug/apogee" .venv/bin/pytest -q -W ignore::DeprecationWarning tests/python
