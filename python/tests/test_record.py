"""Recording from real scripts in real git repositories: log types, arg,
loops and echo, iteration, commit, filenames, errors, the CLI."""

import json
import math
import subprocess
import sys

import pandas as pd
import pytest

from conftest import dataframe, jsonable_rows, make_repo, query, read_back, run_script


def test_log_returns_its_value_and_keeps_types(repo):
    run_script(
        repo,
        """
        import json, math
        import flordb as flor

        class Thing:
            def __repr__(self):
                return "Thing(7)"

        assert flor.log("i", 3) == 3
        assert flor.log("f", 0.25) == 0.25
        assert flor.log("b", True) is True
        assert flor.log("s", "héllo\\x00x") == "héllo\\x00x"
        assert flor.log("l", [1, "a", None]) == [1, "a", None]
        assert flor.log("d", {"k": [1, 2]}) == {"k": [1, 2]}
        t = Thing()
        assert flor.log("o", t) is t
        assert math.isnan(flor.log("nan", float("nan")))
        assert flor.log("inf", float("-inf")) == float("-inf")
        assert flor.log("big", 2**70) == 2**70
        import numpy as np
        flor.log("np_f", np.float32(0.5))
        flor.log("np_i", np.int16(-4))
        flor.log("np_b", np.bool_(True))
        flor.log("np_0d", np.array(2.5))
        flor.log("np_arr", np.arange(3))
        """,
        env={"FLOR_ECHO": "0"},
    )
    df = dataframe(repo)  # run level: one row, every name a column
    assert list(df.columns) == ["projid", "tstamp", "filename", "source", "i", "f", "b", "s", "l", "d", "o", "nan", "inf", "big",
                                "np_f", "np_i", "np_b", "np_0d", "np_arr"]
    assert len(df) == 1
    row = df.iloc[0]
    assert row["projid"] == repo.name
    assert row["filename"] == "train.py"
    assert row["source"] == "forward"
    assert (row["i"], row["f"], row["b"], row["s"]) == (3, 0.25, True, "héllo\x00x")
    assert str(df["i"].dtype) == "Int64"
    assert df["f"].dtype == "float64"
    assert str(df["b"].dtype) == "boolean"
    assert row["l"] == [1, "a", None]
    assert row["d"] == {"k": [1, 2]}
    assert row["o"] == "Thing(7)"
    assert math.isnan(row["nan"]) and row["inf"] == float("-inf")
    assert (row["np_f"], row["np_i"], row["np_b"], row["np_0d"], row["np_arr"]) == (0.5, -4, True, 2.5, "array([0, 1, 2])")
    types = query(repo, "SELECT value_name, value_type FROM logs ORDER BY seq")
    assert dict(zip(types["value_name"], types["value_type"])) == {
        "i": "int",
        "f": "float",
        "b": "bool",
        "s": "str",
        "l": "json",
        "d": "json",
        "o": "repr",
        "nan": "float",
        "inf": "float",
        "big": "json",
        "np_f": "float",
        "np_i": "int",
        "np_b": "bool",
        "np_0d": "float",
        "np_arr": "repr",
    }


def test_arg_reads_kwargs_casts_and_hides_them(repo):
    proc = run_script(
        repo,
        """
        import json, sys
        import flordb as flor
        out = {
            "lr": flor.arg("lr", 0.001),
            "epochs": flor.arg("epochs", 2),
            "use_bn": flor.arg("use_bn", True),
            "tags": flor.arg("tags", ["x"]),
            "sizes": flor.arg("sizes", [8]),
            "name": flor.arg("name", "base"),
            "raw": flor.arg("raw"),
            "default": flor.arg("default", 7),
            "argv": sys.argv,
        }
        print("RESULT " + json.dumps(out))
        """,
        "--verbose",
        "--kwargs",
        "lr=0.1",
        "epochs=3",
        "use_bn=False",
        "tags=a,b",
        "sizes=1,2",
        "name=x=y",
        "raw=text",
        "--other",
        env={"FLOR_ECHO": "0"},
    )
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    assert out == {
        "lr": 0.1,
        "epochs": 3,
        "use_bn": False,
        "tags": ["a", "b"],
        "sizes": [1, 2],
        "name": "x=y",
        "raw": "text",
        "default": 7,
        "argv": ["train.py", "--verbose", "--other"],
    }
    df = dataframe(repo, "lr", "epochs", "use_bn", "tags")
    assert jsonable_rows(df[["lr", "epochs", "use_bn", "tags"]]) == [[0.1, 3, False, ["a", "b"]]]
    runs = query(repo, "SELECT args FROM runs")
    assert json.loads(runs["args"][0])["tags"] == ["a", "b"]


def test_bad_kwarg_value_raises_argument_error(repo):
    proc = run_script(
        repo,
        """
        import flordb as flor
        try:
            flor.arg("epochs", 2)
        except flor.ArgumentError as e:
            assert isinstance(e, ValueError)
            print("ERROR", e)
        """,
        "--kwargs",
        "epochs=three",
        env={"FLOR_ECHO": "0"},
    )
    assert 'ERROR argument `epochs`: "three" is not a valid int (the type of its default)' in proc.stdout


def test_nested_loops_echo_like_flordb(repo):
    proc = run_script(
        repo,
        """
        import flordb as flor
        for epoch in flor.loop("epoch", range(2)):
            for step in flor.loop("step", range(2)):
                flor.log("loss", 1.0 / (1 + epoch * 2 + step))
            flor.log("acc", 0.5 + epoch)
        flor.log("done", True)
        """,
    )
    lines = [l for l in proc.stdout.splitlines() if l.strip()]
    assert lines == [
        "epoch: 0, step: 0, loss: 1.0",
        "epoch: 0, step: 1, loss: 0.5",
        "epoch: 0, acc: 0.5",
        "epoch: 1, step: 0, loss: 0.3333333333333333",
        "epoch: 1, step: 1, loss: 0.25",
        "epoch: 1, acc: 1.5",
        "done: True",
    ]
    assert "2/2" in proc.stderr  # the outer loop's progress bar
    df = dataframe(repo, "loss", "acc")
    assert list(df.columns) == ["projid", "tstamp", "filename", "source", "epoch", "step", "loss", "acc"]
    assert str(df["epoch"].dtype) == "Int64" and str(df["step"].dtype) == "Int64"
    assert jsonable_rows(df[["epoch", "step", "loss", "acc"]]) == [
        [0, 0, 1.0, 0.5],
        [0, 1, 0.5, 0.5],
        [1, 0, 1 / 3, 1.5],
        [1, 1, 0.25, 1.5],
    ]


def test_echo_off(repo):
    proc = run_script(
        repo,
        """
        import flordb as flor
        for epoch in flor.loop("epoch", range(2)):
            flor.log("loss", 0.5)
        print("end")
        """,
        env={"FLOR_ECHO": "0"},
    )
    assert proc.stdout.split() == ["end"]


def test_iteration_context_and_loop_values(repo):
    run_script(
        repo,
        """
        import flordb as flor
        for i, doc in enumerate(["a.pdf", "b.pdf"]):
            with flor.iteration("document", i, doc):
                for page in flor.loop("page", ["p1", "p2"]):
                    flor.log("chars", len(doc + page))
        """,
        env={"FLOR_ECHO": "0"},
    )
    df = dataframe(repo, "chars")
    assert list(df.columns) == ["projid", "tstamp", "filename", "source", "document", "document_value", "page", "page_value", "chars"]
    assert jsonable_rows(df[["document", "document_value", "page", "page_value", "chars"]]) == [
        [0, "a.pdf", 0, "p1", 7],
        [0, "a.pdf", 1, "p2", 7],
        [1, "b.pdf", 0, "p1", 7],
        [1, "b.pdf", 1, "p2", 7],
    ]


def test_commit_starts_a_new_run_and_own_records_are_visible(repo):
    proc = run_script(
        repo,
        """
        import flordb as flor
        flor.log("x", 1)
        print("PENDING", len(flor.dataframe("x")))
        flor.commit()
        flor.log("x", 2)
        """,
        env={"FLOR_ECHO": "0"},
    )
    assert "PENDING 1" in proc.stdout
    df = dataframe(repo, "x")
    assert list(df["x"]) == [1, 2]
    assert df["tstamp"].nunique() == 2
    branches = subprocess.run(["git", "branch", "--list"], cwd=repo, capture_output=True, text=True).stdout
    assert "flor.main" in branches and "* main" in branches


def test_filename_is_relative_to_the_repository_root(repo):
    run_script(repo, "import flordb as flor\nflor.log('a', 1)\n", name="stages/train.py", env={"FLOR_ECHO": "0"})
    run_script(repo, "import flordb as flor\nflor.log('a', 2)\n", name="train.py", env={"FLOR_ECHO": "0"})
    df = dataframe(repo, "a")
    assert dict(zip(df["a"], df["filename"])) == {1: "stages/train.py", 2: "train.py"}
    latest = read_back(repo, "flor.utils.latest(flor.dataframe('a'))")
    assert sorted(latest["a"]) == [1, 2]  # newest run of each script


def test_outside_git_one_clear_line_and_the_script_goes_on(tmp_path):
    work = tmp_path / "plain"
    work.mkdir()
    proc = run_script(
        work,
        """
        import flordb as flor
        x = flor.arg("lr", 0.5)
        for e in flor.loop("epoch", range(2)):
            flor.log("loss", x)
        print("finished", x)
        """,
        "--kwargs",
        "lr=0.25",
        env={"FLOR_ECHO": "0", "TQDM_DISABLE": "1"},
    )
    assert proc.stdout.split() == ["finished", "0.25"]
    err = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(err) == 1, proc.stderr
    assert err[0].startswith("flordb: not recording: ") and "git init" in err[0]
    assert "Traceback" not in proc.stderr
    assert not (work / ".flor").exists()


def test_import_and_query_outside_git_create_nothing(tmp_path):
    df = read_back(tmp_path, "flor.dataframe('loss')")
    assert len(df) == 0 and list(df.columns)[:4] == ["projid", "tstamp", "filename", "source"]
    assert list(tmp_path.iterdir()) == []


def test_errors_mirror_the_rust_errors(repo):
    proc = run_script(
        repo,
        """
        import flordb as flor
        try:
            flor.log("", 1)
        except flor.InputError as e:
            assert isinstance(e, ValueError) and isinstance(e, flor.FlorError)
            print("E1", e)
        try:
            flor.query("SELECT nope FROM logs")
        except flor.SqlError as e:
            assert isinstance(e, flor.QueryError)
            print("E2", type(e).__name__)
        try:
            flor.checkpoints.load_bytes("1-00000000000000ff", [("epoch", 0)], "W")
        except flor.CheckpointMissingError as e:
            assert isinstance(e, KeyError)
            print("E3", e)
        """,
        env={"FLOR_ECHO": "0"},
    )
    assert "E1 a logged value name must not be empty" in proc.stdout
    assert "E2 SqlError" in proc.stdout
    assert 'E3 no checkpoint: run 1-00000000000000ff, object "W", at epoch=0' in proc.stdout


def test_query_returns_typed_frames(repo):
    run_script(repo, "import flordb as flor\nfor i in flor.loop('step', range(5)):\n    flor.log('v', i * 0.5)\n", env={"FLOR_ECHO": "0"})
    df = query(repo, "SELECT count(*) AS n, sum(value_float) AS s FROM logs WHERE value_name = 'v'")
    assert jsonable_rows(df) == [[5, 5.0]]
    assert str(df["n"].dtype) == "Int64" and df["s"].dtype == "float64"


def test_python_m_flordb_is_the_flor_command(repo):
    run_script(repo, "import flordb as flor\nfor i in flor.loop('epoch', range(2)):\n    flor.log('loss', 1.5 - i)\n", env={"FLOR_ECHO": "0"})
    cmd = [sys.executable, "-m", "flordb"]
    out = subprocess.run([*cmd, "dataframe", "loss", "--format", "csv"], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "projid,tstamp,filename,source,epoch,loss"
    assert [l.split(",")[-2:] for l in lines[1:]] == [["0", "1.5"], ["1", "0.5"]]
    for sub in ("sql", "query"):
        out = subprocess.run([*cmd, sub, "SELECT count(*) AS n FROM logs", "--format", "csv"], cwd=repo, capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.split() == ["n", "2"], out.stderr
    bad = subprocess.run([*cmd, "sql", "SELEC"], cwd=repo, capture_output=True, text=True)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
    # A query-only process creates no run.
    assert len(read_back(repo, "flor.query('SELECT * FROM runs')")) == 1


def test_python_m_flordb_loads_only_the_engine(repo):
    # The CLI imports the package for `-m` but needs only the native engine:
    # the recording API (and json, the session) load on first use instead.
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "flordb", "sql", "SELECT 1 AS one", "--format", "csv"],
                         cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["one", "1"]
    imported = {l.rsplit("|", 1)[-1].strip() for l in out.stderr.splitlines() if l.startswith("import time:")}
    assert "flordb._native" in imported
    assert not imported & {"flordb.api", "flordb._session", "flordb.checkpoints", "flordb.replay", "json"}, imported
    # The same lazy package still serves every name, on first use.
    code = (
        "import sys; sys.argv[0] = '-m'; sys.orig_argv = [sys.executable, '-m', 'flordb']\n"
        "import flordb as flor\n"
        "assert 'log' not in vars(flor) and 'log' in dir(flor)\n"
        "assert not flor.skip_rest() and flor.log('x', 2) == 2 and flor.checkpoints.current_run()\n"
        "try:\n    flor.nope\nexcept AttributeError as e:\n    print('E', e)\n"
    )
    p = run_script(repo, code, env={"FLOR_ECHO": "0"})
    assert "E module 'flordb' has no attribute 'nope'" in p.stdout
    # Another module run with -m whose package imports flordb gets it whole.
    (repo / "pkg").mkdir()
    (repo / "pkg" / "__init__.py").write_text("import flordb\nprint('eager', 'log' in vars(flordb))\n")
    (repo / "pkg" / "train.py").write_text("")
    out = subprocess.run([sys.executable, "-m", "pkg.train"], cwd=repo, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["eager", "True"], out.stderr


def test_ipython_cells_commit_what_they_logged(repo):
    # A stand-in IPython (the real one is not a test dependency): flordb
    # registers a post_run_cell callback when imported inside IPython.
    (repo / "IPython.py").write_text(
        "class _Events:\n"
        "    def __init__(self):\n"
        "        self.callbacks = {}\n"
        "    def register(self, name, fn):\n"
        "        self.callbacks.setdefault(name, []).append(fn)\n"
        "class _Shell:\n"
        "    events = _Events()\n"
        "_shell = _Shell()\n"
        "def get_ipython():\n"
        "    return _shell\n"
    )
    proc = run_script(
        repo,
        """
        import IPython
        import flordb as flor
        cell_done = IPython.get_ipython().events.callbacks["post_run_cell"]
        flor.log("cell", 1)
        run1 = flor.checkpoints.current_run()
        for cb in cell_done:
            cb()
        assert flor.checkpoints.current_run() is None, "the cell's run was committed"
        flor.log("cell", 2)
        print("RUNS", run1 is not None, flor.checkpoints.current_run() != run1)
        """,
        name="notebook.py",
        env={"FLOR_ECHO": "0"},
    )
    assert "RUNS True True" in proc.stdout
    df = dataframe(repo, "cell")
    assert list(df["cell"]) == [1, 2] and df["tstamp"].nunique() == 2
