"""Fixtures: real temporary git repositories, scripts run as subprocesses
(``python script.py --kwargs …``), and queries read back in a subprocess
(each process has one flordb session, rooted at its working directory)."""

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def git(root, *args):
    subprocess.run(
        ["git", "-c", "user.name=flordb-tests", "-c", "user.email=tests@example.invalid", *args],
        cwd=root,
        check=True,
        capture_output=True,
    )


def make_repo(path):
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("test project\n")
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", "init")
    return path


@pytest.fixture
def repo(tmp_path):
    """A fresh git repository (branch main, one commit)."""
    return make_repo(tmp_path / "proj")


def env_for(extra=None):
    env = dict(os.environ)
    env.setdefault("FLOR_ECHO", "1")
    env["PYTHONUNBUFFERED"] = "1"
    env["TQDM_DISABLE"] = env.get("TQDM_DISABLE", "")
    if extra:
        env.update(extra)
    return env


def run_script(root, source, *args, name="train.py", env=None, check=True, python=None):
    """Writes ``source`` to ``root/name`` and runs it there as a script."""
    path = Path(root) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
    proc = subprocess.run(
        [python or sys.executable, str(path.relative_to(root)), *args],
        cwd=root,
        capture_output=True,
        text=True,
        env=env_for(env),
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{name} failed ({proc.returncode}):\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def read_back(root, expr):
    """Evaluates ``expr`` (with ``flor`` = flordb) in a fresh process in
    ``root`` and returns the unpickled result."""
    code = (
        "import pickle, sys\n"
        "import flordb as flor\n"
        f"res = {expr}\n"
        "sys.stdout.buffer.write(pickle.dumps(res))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, env=env_for({"FLOR_ECHO": "0"}), timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"read_back({expr}) failed:\n{proc.stderr.decode()}")
    return pickle.loads(proc.stdout)


def dataframe(root, *names):
    return read_back(root, f"flor.dataframe(*{list(names)!r})")


def query(root, sql):
    return read_back(root, f"flor.query({sql!r})")


def jsonable_rows(df):
    """Rows of ``df`` as lists of plain Python values (NA -> None)."""
    out = []
    for row in df.astype(object).itertuples(index=False):
        out.append([None if (v is None or (not isinstance(v, (list, dict)) and _isna(v))) else v for v in row])
    return out


def _isna(v):
    import pandas as pd

    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


__all__ = ["git", "make_repo", "run_script", "read_back", "dataframe", "query", "jsonable_rows", "json"]
