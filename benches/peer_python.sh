#!/usr/bin/env bash
# Makes the three throw-away venvs of benches/peer_python.py and runs it:
#   target/py/venv-bench   this package (pip install ., `release` profile:
#                          BENCH_PROFILE=py for the pyproject default)
#   target/py/venv-peer    FlorDB 4.0.1 from the package registry
#   target/py/venv-mlflow  MLflow with the SQLite backend
# Arguments go to peer_python.py (e.g. --sizes 10000,100000).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flordb-target}"
PY="${PYTHON:-python3}"
V=target/py
mkdir -p "$V"
if [ ! -x "$V/venv-bench/bin/python" ] || [ "${REBUILD:-1}" = 1 ]; then
    rm -rf "$V/venv-bench"; "$PY" -m venv "$V/venv-bench"
    MATURIN_PEP517_ARGS="--profile ${BENCH_PROFILE:-release}" "$V/venv-bench/bin/python" -m pip install --quiet .
fi
if ! "$V/venv-peer/bin/python" -c "import importlib.metadata as m; assert m.version('flordb') == '4.0.1'" 2>/dev/null; then
    rm -rf "$V/venv-peer"; "$PY" -m venv "$V/venv-peer"
    "$V/venv-peer/bin/python" -m pip install --quiet flordb==4.0.1 scikit-learn
fi
if ! "$V/venv-mlflow/bin/python" -c "import mlflow, sqlalchemy, alembic, pandas" 2>/dev/null; then
    rm -rf "$V/venv-mlflow"; "$PY" -m venv "$V/venv-mlflow"
    "$V/venv-mlflow/bin/python" -m pip install --quiet mlflow-skinny sqlalchemy alembic pandas
fi
exec "$PY" benches/peer_python.py --ours "$V/venv-bench/bin/python" --flordb "$V/venv-peer/bin/python" \
    --mlflow "$V/venv-mlflow/bin/python" "$@"
