"""Replay benchmark (issue 7 acceptance item 4). See BENCHMARKS.md.

Times, wall clock, in one invocation:
  full    a full run of today's script (with the hindsight statement) in a
          fresh repo: what you pay without replay, per run;
  rep1    `python -m flordb replay w_norm --yes --workers 1 --timings` over
          RUNS runs recorded with FLOR_CKPT=every (project A), on a fresh
          copy of A each time;
  rep2    the same with --workers 2;
          REPEATS rounds (default 5) of rep1 and rep2 on fresh copies,
          alternating which goes first; medians and every sample printed;
  peer    FlorDB 4.0.1: record RUNS runs, then `flordb replay --apply w_norm`
          (replays from iteration 0, one process) in its own repo and venv.
"""
import os
import pathlib
import statistics
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PY = os.environ.get("FLOR_PY", "/tmp/venv-replay/bin/python")
PEER_PY = os.environ.get("FLOR_PEER_PY", str(ROOT / "target/py/venv-peer/bin/python"))
RUNS = int(os.environ.get("RUNS", "4"))
EPOCHS = int(os.environ.get("EPOCHS", "10"))
REPEATS = int(os.environ.get("REPEATS", "5"))
STMT = '        flor.log("w_norm", float(np.linalg.norm(W)))\n'
ANCHOR = 'for epoch in flor.loop("epoch"'
BASE_ENV = dict(os.environ, FLOR_ECHO="0", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")


def sh(cwd, *args, env=None, stdin=None):
    p = subprocess.run(list(args), cwd=cwd, env=env or BASE_ENV, input=stdin, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"FAILED {args} in {cwd} ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


CPU = {}  # label -> CPU seconds (user + system) of the command and its children


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cwd, *args, env=None, stdin=None, cpu_label=None):
    c = child_cpu()
    t = time.perf_counter()
    p = sh(cwd, *args, env=env, stdin=stdin)
    wall = time.perf_counter() - t
    if cpu_label:
        CPU[cpu_label] = child_cpu() - c
    return wall, p


def repo(path, src):
    path.mkdir()
    sh(path, "git", "init", "-q", "-b", "main")
    sh(path, "git", "config", "user.email", "bench@example.invalid")
    sh(path, "git", "config", "user.name", "bench")
    (path / "train_slow.py").write_text(src)
    sh(path, "git", "add", "train_slow.py")
    sh(path, "git", "commit", "-qm", "v1")
    return path


def with_stmt(src):
    i = src.index(ANCHOR)
    j = src.index("\n", i) + 1
    return src[:j] + STMT + src[j:]


def count_w_norm(py, cwd, env):
    code = ("import flordb as flor\n"
            "df = flor.dataframe('w_norm')\n"
            "print(int(df['w_norm'].notna().sum()) if 'w_norm' in df else 0)\n")
    return int(sh(cwd, py, "-c", code, env=env).stdout.strip().splitlines()[-1])


def main():
    src = (HERE / "train_slow.py").read_text()
    today = with_stmt(src)
    args = ["--kwargs", f"epochs={EPOCHS}"]
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="flor-replay-bench-"))
    ckpt = dict(BASE_ENV, FLOR_CKPT="every")
    res = {}
    try:
        load0 = os.getloadavg()
        # Full re-run of today's script, fresh repo, no checkpoints.
        c = repo(tmp / "full", today)
        res["full"], _ = timed(c, PY, "train_slow.py", *args)
        # Record RUNS runs in A (checkpoint every epoch).
        rec = []
        a = repo(tmp / "A", src)
        for _ in range(RUNS):
            t, _ = timed(a, PY, "train_slow.py", *args, env=ckpt)
            rec.append(t)
        (a / "train_slow.py").write_text(today)
        res["record_ckpt"] = sum(rec) / len(rec)
        rep = ["-m", "flordb", "replay", "w_norm", "--yes", "--timings", "--workers"]
        # Each replay on its own fresh copy of A (replayed records would make
        # a second replay of the same project skip them), written back and
        # settled before the clock starts; the order alternates per round.
        samples = {"1": [], "2": []}
        cpus = {"1": [], "2": []}
        procs = {}
        counts = []
        for k in range(REPEATS):
            for w in (("1", "2") if k % 2 == 0 else ("2", "1")):
                d = tmp / f"r{k}w{w}"
                shutil.copytree(a, d, symlinks=True)
                os.sync()
                time.sleep(1)
                t, procs[w] = timed(d, PY, *rep, w, cpu_label="rep")
                samples[w].append(t)
                cpus[w].append(CPU["rep"])
                counts.append(count_w_norm(PY, d, BASE_ENV))
                shutil.rmtree(d, ignore_errors=True)
        p1, p2 = procs["1"], procs["2"]
        res["rep1"], res["rep2"] = statistics.median(samples["1"]), statistics.median(samples["2"])
        CPU["rep1"], CPU["rep2"] = statistics.median(cpus["1"]), statistics.median(cpus["2"])
        ratios = [x / y for x, y in zip(samples["1"], samples["2"])]
        # Peer: FlorDB 4.0.1 in its own repo and venv; `python` on PATH is the
        # peer's, because its replay spawns `python train_slow.py --replay_flor`.
        peer_env = dict(BASE_ENV, PATH=str(pathlib.Path(PEER_PY).parent) + os.pathsep + BASE_ENV["PATH"])
        peer_env.pop("VIRTUAL_ENV", None)
        res["peer_record"] = res["peer_replay"] = None
        pn = None
        peer_err = None
        if os.path.exists(PEER_PY):
            try:
                pr = repo(tmp / "P", src)
                pt = []
                for _ in range(RUNS):
                    t, _ = timed(pr, PEER_PY, "train_slow.py", *args, env=peer_env)
                    pt.append(t)
                res["peer_record"] = sum(pt) / len(pt)
                (pr / "train_slow.py").write_text(today)
                res["peer_replay"], pp = timed(pr, PEER_PY, "-m", "flordb", "replay", "--apply", "w_norm",
                                               env=peer_env, stdin="y\n")
                pn = count_w_norm(PEER_PY, pr, peer_env)
            except SystemExit as e:
                peer_err = str(e)[:2000]
        load1 = os.getloadavg()
    finally:
        if not os.environ.get("KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("kept", tmp)

    per1 = res["rep1"] / RUNS
    per2 = res["rep2"] / RUNS
    print(f"# replay bench: {RUNS} run(s) x {EPOCHS} epochs per project, BLAS threads=1, cores={os.cpu_count()}")
    print(f"# load average before {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; after {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    print(f"# w_norm values after each replay: {sorted(set(counts))}, peer={pn} (expected {RUNS * EPOCHS} each)")
    print("| measurement | wall s | per run s |")
    print("| --- | ---: | ---: |")
    print(f"| full re-run of today's script (1 run, no checkpoints) | {res['full']:.2f} | {res['full']:.2f} |")
    print(f"| recording with FLOR_CKPT=every (mean of {RUNS} runs) | {res['record_ckpt']:.2f} | {res['record_ckpt']:.2f} |")
    print(f"| flordb replay w_norm --workers 1 ({RUNS} runs, median of {REPEATS}) | {res['rep1']:.3f} | {per1:.3f} |")
    print(f"| flordb replay w_norm --workers 2 ({RUNS} runs, median of {REPEATS}) | {res['rep2']:.3f} | {per2:.3f} |")
    if res["peer_record"] is not None:
        print(f"| FlorDB 4.0.1 recording (mean of {RUNS} runs) | {res['peer_record']:.2f} | {res['peer_record']:.2f} |")
    if res["peer_replay"] is not None:
        print(f"| FlorDB 4.0.1 replay --apply w_norm ({RUNS} runs) | {res['peer_replay']:.2f} | {res['peer_replay'] / RUNS:.2f} |")
    print()
    print(f"full re-run / replay per run (1 worker): {res['full'] / per1:.1f}x  (target >= 20x)")
    print(f"replay 1 worker / 2 workers (same {RUNS} runs, medians): {res['rep1'] / res['rep2']:.3f}x  (target >= 1.8x)")
    print("  per round (1 worker s / 2 workers s = ratio): "
          + ", ".join(f"{x:.3f}/{y:.3f} = {r:.3f}x" for x, y, r in zip(samples["1"], samples["2"], ratios))
          + f"; median of the rounds' ratios {statistics.median(ratios):.3f}x")
    # What bounds 2 workers: on C cores a command using X CPU seconds takes
    # at least X / C wall seconds, so 1 worker / 2 workers <= rep1 / (cpu2 / C).
    cores = os.cpu_count() or 1
    c1, c2 = CPU["rep1"], CPU["rep2"]
    print(f"CPU (user+sys, all processes, medians): --workers 1 {c1:.2f} s = {c1 / res['rep1']:.2f} cores busy on average; "
          f"--workers 2 {c2:.2f} s = {c2 / res['rep2']:.2f} cores")
    print(f"ceiling for 1 worker / 2 workers on {cores} cores from that CPU: "
          f"{res['rep1'] / (c2 / cores):.2f}x")
    if res["peer_replay"] is not None:
        print(f"FlorDB 4.0.1 replay / flordb replay (1 worker): {res['peer_replay'] / res['rep1']:.1f}x")
    if peer_err:
        print("peer failed:\n" + peer_err)
    for label, p in (("--workers 1", p1), ("--workers 2", p2)):
        out = p.stdout
        cut = out.find("Replayed ")
        print(f"--- flordb replay {label} (last round): summary and --timings ---")
        print(out[cut:] if cut >= 0 else out[-3000:])


if __name__ == "__main__":
    main()
