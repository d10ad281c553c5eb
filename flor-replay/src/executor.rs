//! Running replay units: the [`Executor`] trait and the local process pool
//! (DESIGN.md §7 step 5, §9: a cluster executor — Ray tasks, Slurm or
//! Kubernetes job arrays — implements the same trait).

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One independent piece of a replay: one old run, or a range of its
/// iterations, run by one worker process.
#[derive(Debug, Clone)]
pub struct Unit {
    /// Index of the unit (0-based, dense).
    pub id: usize,
    /// A label for progress and the summary (`<tstamp> epochs 0–4`).
    pub label: String,
    /// The program and arguments (`python3 train.py`).
    pub argv: Vec<String>,
    /// Working directory (the materialized version).
    pub cwd: PathBuf,
    /// Extra environment (`FLOR_REPLAY=<spec path>`).
    pub env: Vec<(String, String)>,
    /// Steps the unit reports progress over (selected iterations).
    pub total: u64,
}

/// What an executor reports while it runs.
#[derive(Debug, Clone)]
pub enum Event {
    /// The unit's process started.
    Started(usize),
    /// The unit finished `done` of its `total` steps.
    Progress {
        /// Unit id.
        unit: usize,
        /// Steps done.
        done: u64,
    },
    /// The unit ended.
    Finished(UnitOutcome),
}

/// How a unit ended.
#[derive(Debug, Clone)]
pub struct UnitOutcome {
    /// Unit id.
    pub unit: usize,
    /// Exit status 0.
    pub ok: bool,
    /// The exit code, `None` when killed by a signal or never started.
    pub exit_code: Option<i32>,
    /// Wall seconds: preparing it plus running its process.
    pub seconds: f64,
    /// The last lines of its stderr (at most 20), for the summary.
    pub stderr_tail: String,
    /// Seconds spent preparing the unit before its process started.
    pub prepare_s: f64,
    /// Wall-clock time (seconds since the Unix epoch) when the process was
    /// started; 0 when it never started.
    pub started_unix: f64,
    /// The worker's [`TIMES_PREFIX`] line, without the prefix.
    pub times: Option<String>,
}

/// What prepares a unit before its process starts (materializing its
/// version, writing its checkpoint recipes and spec); an error fails the
/// unit. [`LocalPool`] calls it from several threads at once (units taken
/// in order), ahead of the workers.
pub type Prepare<'a> = dyn Fn(&Unit) -> Result<(), String> + Sync + 'a;

/// Runs units and reports events; a failing unit never stops the others.
pub trait Executor {
    /// Runs every unit, calling `prepare` for each before it starts (once,
    /// from any thread) and `on_event` from any thread, and returns one
    /// outcome per unit in `units` order.
    fn execute(
        &self,
        units: &[Unit],
        prepare: &Prepare<'_>,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Vec<UnitOutcome>;
}

/// A pool of `workers` local processes.
#[derive(Debug, Clone)]
pub struct LocalPool {
    /// Processes at once (at least 1).
    pub workers: usize,
}

/// The line prefix a worker prints on stdout after each selected iteration:
/// `FLOR-REPLAY-PROGRESS <done>`.
pub const PROGRESS_PREFIX: &str = "FLOR-REPLAY-PROGRESS ";

/// The line prefix of a worker's phase times, printed once at exit:
/// `FLOR-REPLAY-TIMES {"imported": t, "loop": t, "restore_s": s, …}`.
pub const TIMES_PREFIX: &str = "FLOR-REPLAY-TIMES ";

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn tail(mut f: std::fs::File, lines: usize) -> String {
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A unit whose preparation has run: `Ok(seconds)` or the error.
type Prepared<'u> = (&'u Unit, Result<f64, (String, f64)>);

fn run_one(
    unit: &Unit,
    prepared: Result<f64, (String, f64)>,
    on_event: &(dyn Fn(Event) + Sync),
) -> UnitOutcome {
    let start = Instant::now();
    let fail = |msg: String, prepare_s: f64| UnitOutcome {
        unit: unit.id,
        ok: false,
        exit_code: None,
        seconds: start.elapsed().as_secs_f64() + prepare_s,
        stderr_tail: msg,
        prepare_s,
        started_unix: 0.0,
        times: None,
    };
    let prepare_s = match prepared {
        Ok(s) => s,
        Err((e, s)) => return fail(format!("preparing the unit failed: {e}"), s),
    };
    let fail = |msg: String| fail(msg, prepare_s);
    let Some((prog, args)) = unit.argv.split_first() else {
        return fail("empty command".into());
    };
    let stderr = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot create a file for stderr: {e}")),
    };
    let Ok(stderr_w) = stderr.try_clone() else {
        return fail("cannot share the stderr file".into());
    };
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .current_dir(&unit.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr_w));
    for (k, v) in &unit.env {
        cmd.env(k, v);
    }
    let started_unix = unix_now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start {prog}: {e}")),
    };
    on_event(Event::Started(unit.id));
    let mut times = None;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix(PROGRESS_PREFIX) {
                if let Ok(done) = n.trim().parse() {
                    on_event(Event::Progress {
                        unit: unit.id,
                        done,
                    });
                }
            } else if let Some(t) = line.strip_prefix(TIMES_PREFIX) {
                times = Some(t.trim().to_owned());
            }
        }
    }
    let status = child.wait();
    let seconds = start.elapsed().as_secs_f64() + prepare_s;
    let stderr_tail = tail(stderr, 20);
    let (ok, exit_code, stderr_tail) = match status {
        Ok(s) => (s.success(), s.code(), stderr_tail),
        Err(e) => (false, None, format!("{stderr_tail}\nwait failed: {e}")),
    };
    UnitOutcome {
        unit: unit.id,
        ok,
        exit_code,
        seconds,
        stderr_tail,
        prepare_s,
        started_unix,
        times,
    }
}

impl Executor for LocalPool {
    /// Units are prepared on threads of their own (one per worker, up to
    /// the number of cores), taken in unit order and handed to the pool as
    /// each is ready: up to `workers` prepared units wait in the channel
    /// and each preparing thread may hold one more. So a unit's
    /// preparation (its version materialized from git, its recipes and
    /// spec) overlaps the run of the units before it instead of delaying
    /// its own start, and N workers get their first units after about one
    /// preparation, not N of them one after the other.
    fn execute(
        &self,
        units: &[Unit],
        prepare: &Prepare<'_>,
        on_event: &(dyn Fn(Event) + Sync),
    ) -> Vec<UnitOutcome> {
        let workers = self.workers.max(1).min(units.len().max(1));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (tx, rx) = crossbeam_channel::bounded::<Prepared<'_>>(workers);
        // Only the worker threads hold receivers: if they all end early,
        // sends fail and the preparing threads stop instead of blocking.
        let receivers: Vec<_> = (0..workers).map(|_| rx.clone()).collect();
        drop(rx);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut outcomes: Vec<UnitOutcome> = std::thread::scope(|s| {
            for _ in 0..workers.min(cores) {
                let (tx, next) = (tx.clone(), &next);
                s.spawn(move || {
                    while let Some(u) =
                        units.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        let t = Instant::now();
                        let r = prepare(u)
                            .map(|()| t.elapsed().as_secs_f64())
                            .map_err(|e| (e, t.elapsed().as_secs_f64()));
                        if tx.send((u, r)).is_err() {
                            break;
                        }
                    }
                });
            }
            // The pool ends when every preparing thread has sent its last unit.
            drop(tx);
            let handles: Vec<_> = receivers
                .into_iter()
                .map(|rx| {
                    s.spawn(move || {
                        let mut done = Vec::new();
                        for (u, prepared) in rx.iter() {
                            let o = run_one(u, prepared, on_event);
                            on_event(Event::Finished(o.clone()));
                            done.push(o);
                        }
                        done
                    })
                })
                .collect();
            // A panicking worker thread's outcomes cannot be made up (callers
            // pair outcomes with units): its panic goes on.
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        outcomes.sort_by_key(|o| o.unit);
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn unit(id: usize, argv: &[&str]) -> Unit {
        Unit {
            id,
            label: format!("unit {id}"),
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            cwd: std::env::temp_dir(),
            env: Vec::new(),
            total: 1,
        }
    }

    /// Each unit is prepared once; a failed preparation or a failing
    /// process fails only its own unit; outcomes come back in unit order
    /// with the process's exit code and stderr tail.
    #[test]
    fn failures_stay_in_their_unit_and_preparation_runs_once() {
        let units = vec![
            unit(0, &["sh", "-c", "echo FLOR-REPLAY-PROGRESS 1"]),
            unit(1, &["sh", "-c", "true"]),
            unit(2, &["sh", "-c", "echo boom >&2; exit 3"]),
            unit(3, &["sh", "-c", "true"]),
        ];
        let prepared = Mutex::new(Vec::new());
        let prepare = |u: &Unit| {
            prepared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(u.id);
            if u.id == 1 {
                Err("no version".to_owned())
            } else {
                Ok(())
            }
        };
        let progress = Mutex::new(Vec::new());
        let on_event = |e: Event| {
            if let Event::Progress { unit, done } = e {
                progress
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((unit, done));
            }
        };
        let out = LocalPool { workers: 2 }.execute(&units, &prepare, &on_event);
        let mut prepared = prepared.into_inner().unwrap_or_else(|p| p.into_inner());
        prepared.sort_unstable();
        assert_eq!(prepared, vec![0, 1, 2, 3]);
        assert_eq!(
            out.iter().map(|o| o.unit).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            out.iter().map(|o| o.ok).collect::<Vec<_>>(),
            vec![true, false, false, true]
        );
        assert_eq!(out[1].stderr_tail, "preparing the unit failed: no version");
        assert_eq!(out[1].started_unix, 0.0);
        assert_eq!(out[2].exit_code, Some(3));
        assert_eq!(out[2].stderr_tail, "boom");
        assert_eq!(
            progress.into_inner().unwrap_or_else(|p| p.into_inner()),
            vec![(0, 1)]
        );
    }

    /// With two workers on two cores, the first two units are prepared at
    /// the same time: each preparation waits (up to 10 s) for the other to
    /// begin, which one preparing thread could never satisfy.
    #[test]
    fn the_first_units_are_prepared_side_by_side() {
        if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
            return; // one core: one preparing thread, by design
        }
        let units = vec![
            unit(0, &["sh", "-c", "true"]),
            unit(1, &["sh", "-c", "true"]),
        ];
        let arrived = (Mutex::new(0usize), std::sync::Condvar::new());
        let prepare = |_: &Unit| {
            let (n, cv) = &arrived;
            let mut n = n.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            cv.notify_all();
            let (n, timeout) = cv
                .wait_timeout_while(n, std::time::Duration::from_secs(10), |n| *n < 2)
                .unwrap_or_else(|p| p.into_inner());
            if timeout.timed_out() && *n < 2 {
                Err("the other unit was not being prepared".to_owned())
            } else {
                Ok(())
            }
        };
        let out = LocalPool { workers: 2 }.execute(&units, &prepare, &|_| {});
        assert!(
            out.iter().all(|o| o.ok),
            "{:?}",
            out.iter().map(|o| &o.stderr_tail).collect::<Vec<_>>()
        );
    }

    /// A worker thread that panics (here: in the event callback) makes the
    /// pool panic too, once the other threads have ended, instead of
    /// returning fewer outcomes than units or leaving the preparing
    /// threads blocked on a channel no one reads.
    #[test]
    fn a_panicking_worker_thread_ends_the_pool_with_its_panic() {
        let units: Vec<Unit> = (0..6).map(|i| unit(i, &["sh", "-c", "true"])).collect();
        let on_event = |e: Event| {
            if let Event::Started(_) = e {
                panic!("progress display failed");
            }
        };
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            LocalPool { workers: 1 }.execute(&units, &|_| Ok(()), &on_event)
        }));
        let msg = out
            .err()
            .and_then(|p| p.downcast_ref::<&str>().map(|s| (*s).to_owned()));
        assert_eq!(msg.as_deref(), Some("progress display failed"));
    }
}
