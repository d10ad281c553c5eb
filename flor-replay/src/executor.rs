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
    /// Wall seconds.
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

/// What prepares a unit just before its process starts (materializing its
/// version, writing its checkpoint recipes and spec), called on the
/// executor's thread for that unit; an error fails the unit.
pub type Prepare<'a> = dyn Fn(&Unit) -> Result<(), String> + Sync + 'a;

/// Runs units and reports events; a failing unit never stops the others.
pub trait Executor {
    /// Runs every unit, calling `prepare` for each just before it starts and
    /// `on_event` from any thread, and returns one outcome per unit in
    /// `units` order.
    fn execute(&self, units: &[Unit], prepare: &Prepare<'_>, on_event: &(dyn Fn(Event) + Sync)) -> Vec<UnitOutcome>;
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
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn tail(mut f: std::fs::File, lines: usize) -> String {
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn run_one(unit: &Unit, prepare: &Prepare<'_>, on_event: &(dyn Fn(Event) + Sync)) -> UnitOutcome {
    let start = Instant::now();
    let fail = |msg: String, prepare_s: f64| UnitOutcome {
        unit: unit.id,
        ok: false,
        exit_code: None,
        seconds: start.elapsed().as_secs_f64(),
        stderr_tail: msg,
        prepare_s,
        started_unix: 0.0,
        times: None,
    };
    if let Err(e) = prepare(unit) {
        return fail(format!("preparing the unit failed: {e}"), start.elapsed().as_secs_f64());
    }
    let prepare_s = start.elapsed().as_secs_f64();
    let fail = |msg: String| fail(msg, prepare_s);
    let Some((prog, args)) = unit.argv.split_first() else { return fail("empty command".into()) };
    let stderr = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => return fail(format!("cannot create a file for stderr: {e}")),
    };
    let Ok(stderr_w) = stderr.try_clone() else { return fail("cannot share the stderr file".into()) };
    let mut cmd = Command::new(prog);
    cmd.args(args).current_dir(&unit.cwd).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(stderr_w));
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
                    on_event(Event::Progress { unit: unit.id, done });
                }
            } else if let Some(t) = line.strip_prefix(TIMES_PREFIX) {
                times = Some(t.trim().to_owned());
            }
        }
    }
    let status = child.wait();
    let seconds = start.elapsed().as_secs_f64();
    let stderr_tail = tail(stderr, 20);
    let (ok, exit_code, stderr_tail) = match status {
        Ok(s) => (s.success(), s.code(), stderr_tail),
        Err(e) => (false, None, format!("{stderr_tail}\nwait failed: {e}")),
    };
    UnitOutcome { unit: unit.id, ok, exit_code, seconds, stderr_tail, prepare_s, started_unix, times }
}

impl Executor for LocalPool {
    fn execute(&self, units: &[Unit], prepare: &Prepare<'_>, on_event: &(dyn Fn(Event) + Sync)) -> Vec<UnitOutcome> {
        let (tx, rx) = crossbeam_channel::unbounded::<&Unit>();
        for u in units {
            let _ = tx.send(u);
        }
        drop(tx);
        let mut outcomes: Vec<UnitOutcome> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..self.workers.max(1).min(units.len().max(1)))
                .map(|_| {
                    let rx = rx.clone();
                    s.spawn(move || {
                        let mut done = Vec::new();
                        for u in rx.iter() {
                            let o = run_one(u, prepare, on_event);
                            on_event(Event::Finished(o.clone()));
                            done.push(o);
                        }
                        done
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
        });
        outcomes.sort_by_key(|o| o.unit);
        outcomes
    }
}
