"""Hindsight replay end to end (issue 7): record runs over two versions of
the digits training script, add a statement today, replay it into the past,
and compare with fresh full runs of each propagated version, bit for bit."""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

CASES = pathlib.Path(__file__).resolve().parents[3] / "shared" / "cases"
if not CASES.exists():
    CASES = pathlib.Path(os.environ.get("FLOR_SHARED", "/work/shared")) / "cases"
V1 = (CASES / "train_digits.py").read_text()

W_NORM = '        flor.log("w_norm", float(np.linalg.norm(weights)))\n'
STEP_NORM = '            flor.log("g_norm", float(np.linalg.norm(grad_W)))\n'


def refactor(src):
    """Version 2: renamed variables and an extracted helper function."""
    src = src.replace("W = np.zeros", "weights = np.zeros").replace("b = np.zeros(10)", "bias = np.zeros(10)")
    src = src.replace("with flor.checkpointing(W=W, b=b, rng=rng):", "with flor.checkpointing(W=weights, b=bias, rng=rng):")
    src = src.replace(
        "def softmax(z):",
        "def predict(x, weights, bias):\n    return softmax(x @ weights + bias)\n\n\ndef softmax(z):",
    )
    src = src.replace("softmax(xb @ W + b)", "predict(xb, weights, bias)")
    src = src.replace("softmax(X_val @ W + b)", "predict(X_val, weights, bias)")
    src = src.replace("W -= lr * grad_W", "weights -= lr * grad_W").replace("b -= lr * grad_b", "bias -= lr * grad_b")
    assert "W " not in src.replace("grad_W", "").replace("W=", ""), src
    return src


def with_statement(src, anchor, statement):
    """Inserts ``statement`` after the line containing ``anchor``."""
    i = src.index(anchor)
    j = src.index("\n", i) + 1
    return src[:j] + statement + src[j:]


def git(root, *args):
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True).stdout


def run(root, *args, env=None, check=True):
    e = dict(os.environ, FLOR_ECHO="0", **(env or {}))
    p = subprocess.run([sys.executable, *args], cwd=root, capture_output=True, text=True, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def new_repo(path):
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "t@example.invalid")
    git(path, "config", "user.name", "t")
    return path


def frame(root, *names):
    """``flor.dataframe(*names)`` in ``root`` as records; floats exact (hex)."""
    code = (
        "import flordb as flor, json, math\n"
        "df = flor.dataframe(*%r)\n"
        "def cell(v):\n"
        "    if isinstance(v, float): return None if math.isnan(v) else ['f', v.hex()]\n"
        "    if hasattr(v, 'item'): v = v.item()\n"
        "    if isinstance(v, float): return None if math.isnan(v) else ['f', v.hex()]\n"
        "    return v if isinstance(v, (int, str, bool)) or v is None else str(v)\n"
        "print(json.dumps([{k: cell(v) for k, v in r.items()} for r in df.to_dict('records')]))\n" % (names,)
    )
    import json

    def back(v):
        return float.fromhex(v[1]) if isinstance(v, list) and len(v) == 2 and v[0] == "f" else v

    return [{k: back(v) for k, v in r.items()} for r in json.loads(run(root, "-c", code).stdout)]


def by_run(root, name):
    """``{tstamp: {epoch: value}}`` of ``name`` in ``root``."""
    got = {}
    for r in frame(root, name):
        if r.get(name) is not None:
            got.setdefault(r["tstamp"], {})[r["epoch"]] = r[name]
    return got


def fresh_values(tmp, name, script, args, label):
    """The values of ``name`` in a fresh full run of ``script``."""
    root = new_repo(tmp / f"fresh-{label}")
    (root / "train.py").write_text(script)
    git(root, "add", "train.py")
    git(root, "commit", "-qm", "v")
    run(root, "train.py", "--kwargs", *args)
    return {(r.get("epoch"), r.get("step")): r[name] for r in frame(root, name) if r.get(name) is not None}


def repo_state(root):
    status = "".join(l + "\n" for l in git(root, "status", "--porcelain").splitlines() if ".flor/" not in l)
    return (git(root, "rev-parse", "HEAD"), git(root, "symbolic-ref", "HEAD"), (root / ".git" / "index").read_bytes(), status)


RUNS_V1 = [["lr=0.5", "epochs=6"], ["lr=0.1", "epochs=6", "seed=7"]]
RUN_V2 = ["lr=0.3", "epochs=6"]


@pytest.fixture
def project(tmp_path):
    """Three runs over two versions, checkpoints every epoch; today's script
    adds ``w_norm`` at the top of the epoch body and ``g_norm`` per step."""
    root = new_repo(tmp_path / "proj")
    (root / "train.py").write_text(V1)
    git(root, "add", "train.py")
    git(root, "commit", "-qm", "v1")
    for a in RUNS_V1:
        run(root, "train.py", "--kwargs", *a, env={"FLOR_CKPT": "every"})
    v2 = refactor(V1)
    (root / "train.py").write_text(v2)
    git(root, "commit", "-qam", "v2: refactor")
    run(root, "train.py", "--kwargs", *RUN_V2, env={"FLOR_CKPT": "every"})
    return root, v2


def propagated(root, tmp, name, version_src, label):
    """The old version with today's statements carried in, by `flor propagate`."""
    old = tmp / f"old-{label}.py"
    old.write_text(version_src)
    run(root, "-m", "flordb", "propagate", "--from", str(root / "train.py"), "--to", str(old), name, "--write")
    return old.read_text()


def test_outer_body_statement_is_exact_and_leaves_the_repo_alone(project, tmp_path):
    root, v2 = project
    today = with_statement(v2, "for epoch in flor.loop", W_NORM)
    (root / "train.py").write_text(today)
    before = repo_state(root)
    # Numpy arrays restored straight into their memory, whatever the cores.
    p = run(root, "-m", "flordb", "replay", "w_norm", "--yes", "--workers", "2", "--timings", env={"FLOR_REPLAY_PREFETCH": "0"})
    assert "3 run(s) to replay" in p.stdout, p.stdout
    assert [r for r in timing_rows(p.stdout) if "in place" in r] == timing_rows(p.stdout) and len(timing_rows(p.stdout)) == 3, p.stdout
    assert "outer body (rest skipped)" in p.stdout, p.stdout
    assert repo_state(root) == before
    got = by_run(root, "w_norm")
    runs = sorted(got)
    assert len(runs) == 3 and all(len(got[t]) == 6 for t in runs), got
    expect = [
        fresh_values(tmp_path, "w_norm", propagated(root, tmp_path, "w_norm", V1, "a"), RUNS_V1[0], "a"),
        fresh_values(tmp_path, "w_norm", propagated(root, tmp_path, "w_norm", V1, "b"), RUNS_V1[1], "b"),
        fresh_values(tmp_path, "w_norm", today, RUN_V2, "c"),
    ]
    for t, e in zip(runs, expect):
        assert {(k, None): v for k, v in got[t].items()} == e


def test_step_statement_for_selected_iterations(project, tmp_path):
    root, v2 = project
    today = with_statement(v2, "grad_W = xb.T", STEP_NORM)
    (root / "train.py").write_text(today)
    # Checkpoints read ahead on the prefetch thread, whatever the cores.
    p = run(root, "-m", "flordb", "replay", "g_norm", "--iterations", "1,4", "--yes", "--timings", env={"FLOR_REPLAY_PREFETCH": "1"})
    rows = timing_rows(p.stdout)
    assert rows and all("read ahead" in r for r in rows), p.stdout
    rows = [r for r in frame(root, "g_norm") if r.get("g_norm") is not None]
    assert {r["epoch"] for r in rows} == {1, 4}
    newest = max(r["tstamp"] for r in rows)
    got = {(r["epoch"], r["step"]): r["g_norm"] for r in rows if r["tstamp"] == newest}
    expect = fresh_values(tmp_path, "g_norm", today, RUN_V2, "step")
    assert got == {k: v for k, v in expect.items() if k[0] in (1, 4)}


def test_a_killed_worker_fails_its_unit_only_and_leaves_the_repo_alone(project, tmp_path):
    root, v2 = project
    # The old versions do not import os: the statement imports it itself.
    boom = '        flor.log("boom", __import__("os").kill(__import__("os").getpid(), 9) if lr == 0.3 and epoch == 2 else epoch)\n'
    today = with_statement(v2, "for epoch in flor.loop", boom)
    (root / "train.py").write_text(today)
    before = repo_state(root)
    p = run(root, "-m", "flordb", "replay", "boom", "--yes", "--workers", "1", check=False)
    assert p.returncode != 0
    assert "1 failed" in p.stdout and "FAILED" in p.stdout, p.stdout
    assert repo_state(root) == before
    rows = [r for r in frame(root, "boom") if r.get("boom") is not None]
    per_run = {}
    for r in rows:
        per_run.setdefault(r["tstamp"], set()).add(r["epoch"])
    full = [t for t, e in per_run.items() if e == set(range(6))]
    assert len(full) == 2, f"the two other runs were replayed whole: {per_run}"
    # The killed worker's records written before the kill were recovered from
    # its write-ahead log; nothing at or after the kill.
    killed = [e for t, e in per_run.items() if t not in full]
    assert all(e <= {0, 1} for e in killed), per_run


def test_a_partial_replay_is_resumed_per_iteration(project, tmp_path):
    """A worker killed in epoch 3 leaves the values of epochs 0-2 of its run
    (recovered from its write-ahead log); the next `flor replay` runs only
    epochs 3-5 of that run, the values equal a fresh full run's, and none is
    recorded twice."""
    root, v2 = project
    os_ = '__import__("os")'  # the old versions do not import os
    stmt = (
        f'        flor.log("w_norm", float(np.linalg.norm(weights)) if not ({os_}.environ.get("FLOR_TEST_KILL") '
        f'and lr == 0.3 and epoch == 3) else (__import__("time").sleep(0.6), {os_}.kill({os_}.getpid(), 9)))\n'
    )
    today = with_statement(v2, "for epoch in flor.loop", stmt)
    (root / "train.py").write_text(today)
    p = run(root, "-m", "flordb", "replay", "w_norm", "--yes", "--workers", "1", env={"FLOR_TEST_KILL": "1"}, check=False)
    assert p.returncode != 0 and "1 failed" in p.stdout, p.stdout
    epochs = by_run(root, "w_norm")
    assert sorted(len(e) for e in epochs.values()) == [3, 6, 6], epochs
    before = repo_state(root)
    p = run(root, "-m", "flordb", "replay", "w_norm", "--yes", "--workers", "2", "--timings")
    assert "1 run(s) to replay, 2 already have them" in p.stdout, p.stdout
    assert "[3, 4, 5]" in p.stdout, p.stdout
    assert "Timings: planning" in p.stdout and "versions and checkpoints" in p.stdout, p.stdout
    if sys.platform == "linux":
        cpu = re.search(r"CPU of this process so far \(the coordinator, all its threads\): ([\d.]+) s user \+ ([\d.]+) s system", p.stdout)
        assert cpu and 0 < float(cpu[1]) + float(cpu[2]) < 60, p.stdout
    assert repo_state(root) == before
    got = by_run(root, "w_norm")
    assert sorted(len(v) for v in got.values()) == [6, 6, 6], got
    assert frame_sql(root, "SELECT count(*) FROM logs WHERE value_name = 'w_norm'") == [18]
    resumed = {(e, None): v for e, v in got[max(got)].items()}
    assert resumed == fresh_values(tmp_path, "w_norm", today, RUN_V2, "resumed")
    # Nothing is left to replay.
    p = run(root, "-m", "flordb", "replay", "w_norm", "--yes")
    assert "0 run(s) to replay, 3 already have them" in p.stdout, p.stdout


def test_checkpoints_are_read_ahead_only_with_a_spare_core_and_iterations_to_overlap():
    from flordb.replay import _reads_ahead

    spare, skip = {"decode_threads": 2, "skip_rest": True}, {"decode_threads": 1, "skip_rest": False}
    assert _reads_ahead({"decode_threads": 2, "skip_rest": False}, "")
    assert not _reads_ahead(spare, "")  # restores back to back: in place
    assert not _reads_ahead(skip, "") and not _reads_ahead({}, "")  # no spare core
    assert _reads_ahead(spare, "1") and _reads_ahead(skip, "1")
    assert not _reads_ahead({"decode_threads": 4, "skip_rest": False}, "0")


def test_checkpoints_every_second_epoch_still_give_exact_values(tmp_path):
    """Checkpoints at epochs 1, 3, 5 only: each selected epoch restores the
    nearest earlier checkpoint and re-runs the gap with logging off."""
    root = new_repo(tmp_path / "sparse")
    v2 = refactor(V1)
    (root / "train.py").write_text(v2)
    git(root, "add", "train.py")
    git(root, "commit", "-qm", "v2")
    run(root, "train.py", "--kwargs", *RUN_V2, env={"FLOR_CKPT": "every:2"})
    ckpts = frame_sql(root, "SELECT DISTINCT iteration FROM checkpoints ORDER BY iteration")
    today = with_statement(v2, "for epoch in flor.loop", W_NORM)
    (root / "train.py").write_text(today)
    p = run(root, "-m", "flordb", "replay", "w_norm", "--yes", "--workers", "2")
    assert "3 of 6" in p.stdout, p.stdout
    rows = [r for r in frame(root, "w_norm") if r.get("w_norm") is not None]
    got = {(r["epoch"], None): r["w_norm"] for r in rows}
    assert got == fresh_values(tmp_path, "w_norm", today, RUN_V2, "sparse")
    assert ckpts in ([], [1, 3, 5])


def timing_rows(stdout):
    """The unit rows of ``flor replay --timings``' table."""
    return [line for line in stdout.splitlines() if line.startswith("│") and "┆ +" in line]


def frame_sql(root, sql):
    """The first column of ``sql``'s result, or [] when the table is absent."""
    code = "import flordb as flor, json, sys\ntry:\n    print(json.dumps([int(x) for x in flor.query(%r).iloc[:, 0]]))\nexcept Exception:\n    print('[]')\n" % sql
    import json

    return json.loads(run(root, "-c", code).stdout)
