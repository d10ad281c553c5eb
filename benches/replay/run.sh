#!/usr/bin/env bash
# Replay benchmark (issue 7): flordb replay vs a full re-run, 2 workers vs 1,
# and FlorDB 4.0.1's replay of the same script, all in one invocation.
# Env: FLOR_PY (flordb venv python), FLOR_PEER_PY (FlorDB 4.0.1 python),
# RUNS (runs per project, default 4), EPOCHS (default 10), KEEP=1 keeps the temp dir.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec "${FLOR_PY:-/tmp/venv-replay/bin/python}" "$here/bench.py" "$@"
