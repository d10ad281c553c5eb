"""Side-by-side Python benchmark: flordb vs FlorDB 4.0.1 vs MLflow (SQLite).

Measured in the same run, each system in its own virtual environment and a
fresh temporary git repository:

- ``log``: calls per second of ``flor.log("loss", x)`` (echo off where the
  system allows it: ``FLOR_ECHO=0`` here; FlorDB 4.0.1 always echoes, its
  stdout goes to /dev/null) and of MLflow's ``log_metric``;
- ``commit``: seconds to commit the logged records, per 10^6 records
  (FlorDB 4.0.1 logs 2·10^5 calls, flordb 2·10^6; MLflow writes on every
  call, so it has none);
- ``dataframe``: seconds for ``dataframe("loss")`` into pandas over N
  records in 100 runs (N = 10^4, 10^5, 10^6), and for MLflow
  ``get_metric_history`` of every run into one pandas frame. Two figures
  per system: the first call in the process (cold: flordb reads and indexes
  the segments) and the best of two more calls (warm: flordb reuses the
  context it kept, since nothing changed in between). pandas and pyarrow
  are imported before the timing starts.

Usage (benches/peer_python.sh makes the venvs):

    python benches/peer_python.py --ours PY --flordb PY --mlflow PY \
        [--sizes 10000,100000,1000000] [--log-calls 2000000] [--timeout 900]

Prints one table with the ratios peer / flordb (higher = flordb faster).
Workers are this file run as ``PY peer_python.py worker SYSTEM TASK N``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

RUNS = 100


def git_repo(path):
    os.makedirs(path, exist_ok=True)
    env = dict(os.environ, GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@example.invalid", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@example.invalid")
    for args in (["init", "-q", "-b", "main"], ["add", "README.md"], ["commit", "-q", "-m", "init"]):
        if args[0] == "add":
            with open(os.path.join(path, "README.md"), "w") as f:
                f.write("bench\n")
        subprocess.run(["git", *args], cwd=path, check=True, env=env, capture_output=True)
    return path


# ---------------------------------------------------------------- workers


def worker_flor(task, n):
    import flordb as flor  # ours or FlorDB 4.0.1, whichever this venv has

    log = flor.log
    if task == "log":
        x = 0.5
        t0 = time.perf_counter()
        for _ in range(n):
            log("loss", x)
        t1 = time.perf_counter()
        flor.commit()
        t2 = time.perf_counter()
        return {"log_calls_per_s": n / (t1 - t0), "commit_s_per_1m": (t2 - t1) * 1e6 / n, "calls_measured": n}
    if task == "dataframe":
        per_run = n // RUNS
        steps = range(per_run)
        for r in range(RUNS):
            for step in flor.loop("step", steps):
                log("loss", step * 0.001 + r)
            flor.commit()
        import pandas  # noqa: F401  (imported before timing, for every system)

        try:
            import pyarrow  # noqa: F401  (flordb's path; FlorDB 4.0.1 does not use it)
        except ImportError:
            pass

        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            df = flor.dataframe("loss")
            times.append(time.perf_counter() - t0)
        assert len(df) == n, (len(df), n)
        return {"dataframe_cold_s": times[0], "dataframe_s": min(times[1:]), "rows": len(df)}
    raise ValueError(task)


def worker_mlflow(task, n):
    import mlflow
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri("sqlite:///" + os.path.abspath("mlflow.db"))
    client = MlflowClient()
    exp = client.create_experiment("bench")
    if task == "log":
        run = client.create_run(exp)
        rid = run.info.run_id
        m = min(n, 2000)  # one SQLite transaction per call: slow
        t0 = time.perf_counter()
        for i in range(m):
            client.log_metric(rid, "loss", 0.5, step=i)
        t1 = time.perf_counter()
        client.set_terminated(rid)
        return {"log_calls_per_s": m / (t1 - t0), "calls_measured": m}
    if task == "dataframe":
        import pandas as pd

        per_run = n // RUNS
        rids = []
        for r in range(RUNS):
            rid = client.create_run(exp).info.run_id
            ts = int(time.time() * 1000)
            for s in range(0, per_run, 1000):
                batch = [Metric("loss", step * 0.001 + r, ts, step) for step in range(s, min(per_run, s + 1000))]
                client.log_batch(rid, metrics=batch)
            rids.append(rid)
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            frames = []
            for rid in rids:
                hist = client.get_metric_history(rid, "loss")
                frames.append(pd.DataFrame({"run_id": rid, "step": [h.step for h in hist], "loss": [h.value for h in hist]}))
            df = pd.concat(frames, ignore_index=True)
            times.append(time.perf_counter() - t0)
        assert len(df) == n, (len(df), n)
        return {"dataframe_cold_s": times[0], "dataframe_s": min(times[1:]), "rows": len(df)}
    raise ValueError(task)


def worker(system, task, n):
    fn = worker_mlflow if system == "mlflow" else worker_flor
    res = fn(task, n)
    with open(os.environ["BENCH_OUT"], "w") as f:
        f.write(json.dumps(res))


# ---------------------------------------------------------------- driver


def run_worker(py, system, task, n, timeout):
    with tempfile.TemporaryDirectory(prefix=f"bench-{system}-") as d:
        root = git_repo(os.path.join(d, "proj"))
        out_path = os.path.join(d, "result.json")
        env = dict(os.environ, FLOR_ECHO="0", TQDM_DISABLE="1", PYTHONHASHSEED="0", BENCH_OUT=out_path)
        script = os.path.join(root, "bench.py")
        with open(__file__) as src, open(script, "w") as dst:
            dst.write(src.read())
        try:
            proc = subprocess.run(
                [py, "bench.py", "worker", system, task, str(n)],
                cwd=root,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timeout after {timeout}s"}
        out = open(out_path).read() if os.path.exists(out_path) else ""
        if proc.returncode != 0 or not out.strip():
            return {"error": proc.stderr.decode()[-400:].strip().splitlines()[-1:] or ["failed"]}
        return json.loads(out)


def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "rate":
        return f"{v:,.0f}/s"
    return f"{v * 1000:,.1f} ms" if v < 1 else f"{v:,.2f} s"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True)
    ap.add_argument("--flordb", required=True)
    ap.add_argument("--mlflow", required=True)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--log-calls", type=int, default=2_000_000)
    ap.add_argument("--timeout", type=int, default=900)
    ap.add_argument("--repeats", type=int, default=5,
                    help="dataframe workers per size for flordb (this): the median first call is reported "
                         "(the peers' calls take seconds and run once)")
    a = ap.parse_args()
    a.ours, a.flordb, a.mlflow = (os.path.abspath(p) for p in (a.ours, a.flordb, a.mlflow))
    systems = {"flordb (this)": ("flor", a.ours), "FlorDB 4.0.1": ("flor", a.flordb), "MLflow (SQLite)": ("mlflow", a.mlflow)}
    results = {}
    for label, (kind, py) in systems.items():
        n = a.log_calls if label != "FlorDB 4.0.1" else min(a.log_calls, 200_000)
        results[(label, "log")] = run_worker(py, kind, "log", n, a.timeout)
        print(label, "log", results[(label, "log")], flush=True)
        for size in [int(s) for s in a.sizes.split(",")]:
            reps = a.repeats if label == "flordb (this)" else 1
            runs = [run_worker(py, kind, "dataframe", size, a.timeout) for _ in range(max(1, reps))]
            ok = [r for r in runs if "error" not in r]
            if len(ok) > 1:
                cold = sorted(r["dataframe_cold_s"] for r in ok)
                warm = sorted(r["dataframe_s"] for r in ok)
                results[(label, size)] = {
                    "dataframe_cold_s": statistics.median(cold),
                    "dataframe_s": statistics.median(warm),
                    "rows": ok[0]["rows"],
                }
                print(f"{label} {size}: {len(ok)} workers, first call (cold) "
                      + ", ".join(f"{c * 1000:.0f}" for c in cold)
                      + f" ms (median {statistics.median(cold) * 1000:.0f}); repeated (warm, best of 2 each) "
                      + ", ".join(f"{w * 1000:.0f}" for w in warm)
                      + f" ms (median {statistics.median(warm) * 1000:.0f})", flush=True)
            else:
                results[(label, size)] = (ok or runs)[0]
            print(label, size, results[(label, size)], flush=True)

    ours = "flordb (this)"
    rows = [
        ("log calls/s (echo off)", "log", "log_calls_per_s", "rate"),
        ("commit, seconds per 1,000,000 logged records", "log", "commit_s_per_1m", "time"),
    ]
    for s in a.sizes.split(","):
        med = f"; flordb (this): median of {a.repeats} processes" if a.repeats > 1 else ""
        rows.append((f"dataframe('loss'), {int(s):,} records / {RUNS} runs, first call (cold{med})", int(s), "dataframe_cold_s", "time"))
        rows.append((f"dataframe('loss'), {int(s):,} records / {RUNS} runs, repeated (warm, best of 2{med})", int(s), "dataframe_s", "time"))
    print()
    print("calls measured for log: " + ", ".join(f"{lab} {results.get((lab, 'log'), {}).get('calls_measured', '?'):,}" for lab in systems))
    print("| measure | " + " | ".join(systems) + " | FlorDB 4.0.1 / flordb | MLflow / flordb |")
    print("|---|" + "---|" * (len(systems) + 2))
    for title, key, field, unit in rows:
        vals = {lab: results.get((lab, key), {}).get(field) for lab in systems}
        cells = []
        for lab in systems:
            err = results.get((lab, key), {}).get("error")
            cells.append(fmt(vals[lab], unit) if vals[lab] is not None else (str(err)[:40] if err else "—"))
        ratios = []
        for peer in ("FlorDB 4.0.1", "MLflow (SQLite)"):
            o, p = vals[ours], vals[peer]
            if o is None or p is None:
                ratios.append("—")
            else:
                ratios.append(f"{o / p:,.1f}×" if unit == "rate" else f"{p / o:,.1f}×")
        print(f"| {title} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        system, task, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
        del sys.argv[1:]  # FlorDB 4.0.1 parses the command line when imported
        worker(system, task, n)
    else:
        main()
