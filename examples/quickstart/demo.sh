#!/usr/bin/env bash
# The main job end to end (issue 8): record two runs, commit a refactor,
# record a third, add a hindsight statement (the weight norm at the start of
# each epoch), replay it into all three runs from their checkpoints, print
# the table, check it against full fresh runs, and plot the loss curves.
#
# Usage: examples/quickstart/demo.sh PYTHON OUTDIR
#   PYTHON: an interpreter with flordb, numpy and scikit-learn installed
#   OUTDIR: where loss.png and dataframe.csv are written
set -euo pipefail
PY=${1:?python}
OUT=$(mkdir -p "${2:?outdir}" && cd "$2" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
SANDBOX=$(mktemp -d "${TMPDIR:-/tmp}/flordb-demo.XXXXXX")
export FLOR_ECHO=0
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "sandbox git repository: $SANDBOX"
cd "$SANDBOX"
git init -q -b main
git config user.email demo@example.invalid
git config user.name "flordb demo"
cp "$HERE/train.py" train.py
git add train.py && git commit -qm "train.py v1"

step "record two runs of version 1 (lr=0.5 and lr=0.1)"
"$PY" train.py --kwargs lr=0.5 epochs=8
"$PY" train.py --kwargs lr=0.1 epochs=8 seed=7

step "commit a refactor (version 2), record a third run (lr=0.2)"
cp "$HERE/train_v2.py" train.py
git commit -qam "train.py v2: refactor"
"$PY" train.py --kwargs lr=0.2 epochs=8

step "add a hindsight statement at the top of the epoch body"
"$PY" - <<'PYEOF'
src = open("train.py").read()
anchor = '    for epoch in flor.loop("epoch", range(epochs)):\n'
stmt = '        flor.log("w_norm", float(np.linalg.norm(weights)))\n'
assert anchor in src
open("train.py", "w").write(src.replace(anchor, anchor + stmt))
PYEOF
git --no-pager diff --stat

step "replay w_norm into every past run"
"$PY" -m flordb replay w_norm --yes

step "the table: w_norm per epoch for all three runs (source = replay)"
"$PY" - "$OUT" <<'PYEOF'
import sys
import pandas as pd
import flordb as flor
pd.set_option("display.width", 160)
df = flor.dataframe("lr", "w_norm", "val_acc")
print(df.to_string(index=False))
df.to_csv(f"{sys.argv[1]}/dataframe.csv", index=False)
missing = df["w_norm"].isna().sum()
runs = df["tstamp"].nunique()
assert runs == 3 and missing == 0, f"{runs} runs, {missing} epochs without w_norm"
print(f"\n{runs} runs, {len(df)} epochs, every w_norm recovered")
PYEOF

step "check: full fresh runs of today's script give the same w_norm as the replay, run by run"
# Versions 1 and 2 compute the same thing (v2 is a refactor), so today's
# script with each run's arguments must reproduce each replayed value.
FRESH=$(mktemp -d "${TMPDIR:-/tmp}/flordb-fresh.XXXXXX")
cp train.py "$FRESH/train.py"
(cd "$FRESH" && git init -q -b main && git add train.py && git -c user.email=d@example.invalid -c user.name=d commit -qm v3 \
  && "$PY" train.py --kwargs lr=0.5 epochs=8 \
  && "$PY" train.py --kwargs lr=0.1 epochs=8 seed=7 \
  && "$PY" train.py --kwargs lr=0.2 epochs=8)
"$PY" - "$FRESH" <<'PYEOF'
import subprocess, sys, json
code = "import flordb as flor, json; d = flor.dataframe('lr', 'w_norm'); print(json.dumps({str(lr): [v.hex() for v in g['w_norm']] for lr, g in d.groupby('lr')}))"
fresh = json.loads(subprocess.run([sys.executable, "-c", code], cwd=sys.argv[1], check=True, capture_output=True, text=True).stdout)
import flordb as flor
df = flor.dataframe("lr", "w_norm")
replayed = {str(lr): [v.hex() for v in g["w_norm"]] for lr, g in df.groupby("lr")}
assert sorted(replayed) == sorted(fresh) == ["0.1", "0.2", "0.5"], (sorted(replayed), sorted(fresh))
for lr in sorted(fresh):
    assert replayed[lr] == fresh[lr], (lr, replayed[lr], fresh[lr])
    print(f"lr={lr}: {len(fresh[lr])} w_norm values identical to the last bit")
PYEOF

step "plot the loss curves of the three runs"
"$PY" -m flordb plot loss --by lr -o "$OUT/loss.png"
echo
echo "Done. Sandbox: $SANDBOX   Outputs: $OUT/loss.png, $OUT/dataframe.csv"
