"""Acceptance item 2 of issue 5: the scripts in ``shared/cases/`` run
unchanged under this package, and ``dataframe(…)`` of the names in each
script's docstring has the same columns (names, order) and rows as under
FlorDB 4.0.1, which this test installs from the package registry into a
throw-away venv (``target/py/venv-peer``, reused while it holds 4.0.1) and
runs in its own temporary repository. FlorDB stores every value as text,
so its values are compared after parsing (``ast.literal_eval``); here the
columns must be typed."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT, dataframe, jsonable_rows, make_repo, run_script

PEER_VERSION = "4.0.1"
PEER_VENV = REPO_ROOT / "target" / "py" / "venv-peer"


def cases_dir():
    for c in [os.environ.get("FLOR_CASES"), REPO_ROOT.parent / "shared" / "cases", Path("/work/shared/cases")]:
        if c and Path(c).is_dir():
            return Path(c)
    pytest.fail("shared/cases not found beside the repository (set FLOR_CASES)")


# Runs (command-line arguments) and names for each case, from its docstring;
# train_digits.py names none, so its logged names are used.
def case_plan(path):
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    runs = [line.split(path.name, 1)[1].split() for line in doc.splitlines() if f"python {path.name}" in line]
    m = re.search(r"flor\.dataframe\(([^)]*)\)", doc)
    names = [ast.literal_eval(n.strip()) for n in m.group(1).split(",")] if m else ["lr", "epochs", "seed", "loss", "val_acc"]
    return runs or [[]], names


CASES = ["nested_loops.py", "documents.py", "train_digits.py"]


@pytest.fixture(scope="session")
def peer_python():
    """python of a venv with FlorDB 4.0.1 (and scikit-learn for the cases)."""
    py = PEER_VENV / "bin" / "python"
    ok = py.exists() and subprocess.run(
        [str(py), "-c", f"import importlib.metadata as m; assert m.version('flordb') == '{PEER_VERSION}'; import sklearn"],
        capture_output=True,
    ).returncode == 0
    if not ok:
        shutil.rmtree(PEER_VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        r = subprocess.run(
            [str(py), "-m", "pip", "install", "--quiet", f"flordb=={PEER_VERSION}", "scikit-learn"],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            pytest.fail(f"could not install flordb=={PEER_VERSION} from the package registry:\n{r.stderr[-3000:]}")
    return str(py)


def peer_dataframe(peer_py, root, names):
    code = (
        "import json, sys\n"
        "import flordb as flor\n"
        f"df = flor.dataframe(*{names!r})\n"
        "rows = [[None if v is None or (isinstance(v, float) and v != v) else str(v) for v in r]"
        " for r in df.astype(object).where(df.notna(), None).itertuples(index=False)]\n"
        "print('PEER ' + json.dumps({'columns': list(df.columns), 'rows': rows}))\n"
    )
    proc = subprocess.run([peer_py, "-c", code], cwd=root, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("PEER "))
    return json.loads(line[5:])


def parse_peer(text):
    if text is None:
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def plain(v):
    """numpy/pandas scalars as Python values (for JSON)."""
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        try:
            return v.item()
        except (ValueError, AttributeError):
            return v
    return v


def normalize(columns, rows, ts_rank):
    """Rows as comparable tuples: tstamp -> run ordinal, projid dropped."""
    out = []
    for r in rows:
        d = dict(zip(columns, r))
        d.pop("projid", None)
        d["tstamp"] = ts_rank[d["tstamp"]]
        out.append(tuple(json.dumps(d[c], sort_keys=True) for c in columns if c != "projid"))
    return sorted(out)


def run_case(root, case, runs, python=None):
    src = (cases_dir() / case).read_text()
    for args in runs:
        run_script(root, src, *args, name=case, env={"FLOR_ECHO": "0", "TQDM_DISABLE": "1"}, python=python)


@pytest.mark.parametrize("case", CASES)
def test_case_matches_flordb_401(tmp_path, case, peer_python):
    runs, names = case_plan(cases_dir() / case)

    ours_root = make_repo(tmp_path / "ours")
    run_case(ours_root, case, runs)
    ours = dataframe(ours_root, *names)

    peer_root = make_repo(tmp_path / "peer")
    run_case(peer_root, case, runs, python=peer_python)
    peer = peer_dataframe(peer_python, peer_root, names)

    assert list(ours.columns) == peer["columns"], "same columns in the same order"
    assert len(ours) == len(peer["rows"]) > 0, "same number of rows"

    # Proper dtypes on our side.
    for n in names:
        kind = str(ours[n].dtype)
        assert kind in ("Int64", "float64", "boolean", "string", "object"), (n, kind)
    for loop in [c for c in ours.columns if c in ("epoch", "step", "document", "page")]:
        assert str(ours[loop].dtype) == "Int64"

    ours_rows = [[plain(v) for v in r] for r in jsonable_rows(ours)]
    ours_ts = {t: i for i, t in enumerate(sorted({r[1] for r in ours_rows}))}
    peer_rows = [[parse_peer(v) if c not in ("tstamp", "projid", "filename", "source") else v for c, v in zip(peer["columns"], r)] for r in peer["rows"]]
    peer_ts = {t: i for i, t in enumerate(sorted({r[1] for r in peer_rows}))}
    # Loop values are text on both sides (`step_value`, `document_value`).
    cols = list(ours.columns)
    for c in [c for c in cols if c.endswith("_value")]:
        j = cols.index(c)
        for r in peer_rows:
            r[j] = None if r[j] is None else str(r[j])
    assert normalize(cols, ours_rows, ours_ts) == normalize(cols, peer_rows, peer_ts)
