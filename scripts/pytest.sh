#!/usr/bin/env bash
# Runs the Python package's tests (python/tests) the way a user installs the
# package: a fresh virtual environment, one `pip install` of the repository
# path (maturin builds the cdylib into the shared CARGO_TARGET_DIR), then
# pytest. Arguments go to pytest; pytest's "no tests collected" fails.
#
# The package is built with the `dev` profile here (MATURIN_PEP517_ARGS),
# so it reuses the artifacts `cargo test --workspace` built moments before
# in `make test` (~25 s instead of a full `py`-profile build); users get the
# optimized `py` profile from pyproject.toml.
#
# The tests that compare with FlorDB 4.0.1 install it into a second
# throw-away venv (target/py/venv-peer) from the package registry.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flordb-target}"
export MATURIN_PEP517_ARGS="${MATURIN_PEP517_ARGS:---profile dev}"
PY="${PYTHON:-python3}"
VENV="target/py/venv-pytest"
rm -rf "$VENV"
mkdir -p target/py
"$PY" -m venv "$VENV"
echo "== pip install .[test] into $VENV (builds the native library)"
"$VENV/bin/python" -m pip install --quiet ".[test]"
echo "== pytest python/tests"
set +e
"$VENV/bin/python" -m pytest python/tests "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$rc"
