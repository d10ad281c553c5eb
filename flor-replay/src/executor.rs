//! Running replay units: the [`Executor`] trait and the local process pool
//! (DESIGN.md §7 step 5, §9: a cluster executor — Ray tasks, Slurm or
//! Kubernetes job arrays — implements the same trait).

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

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
}

/// Runs units and reports events; a failing unit never stops the others.
pub trait Executor {
    /// Runs every unit, calling `on_event` from any thread, and returns one
    /// outcome per unit in `units` order.
    fn execute(&self, units: &[Unit], on_event: &(dyn Fn(Event) + Sync)) -> Vec<UnitOutcome>;
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

fn tail(mut f: std::fs::File, lines: usize) -> String {
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn run_one(unit: &Unit, on_event: &(dyn Fn(Event) + Sync)) -> UnitOutcome {
    let start = Instant::now();
    let fail = |msg: String| UnitOutcome { unit: unit.id, ok: false, exit_code: None, seconds: start.elapsed().as_secs_f64(), stderr_tail: msg };
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
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start {prog}: {e}")),
    };
    on_event(Event::Started(unit.id));
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix(PROGRESS_PREFIX) {
                if let Ok(done) = n.trim().parse() {
                    on_event(Event::Progress { unit: unit.id, done });
                }
            }
        }
    }
    let status = child.wait();
    let seconds = start.elapsed().as_secs_f64();
    let stderr_tail = tail(stderr, 20);
    match status {
        Ok(s) => UnitOutcome { unit: unit.id, ok: s.success(), exit_code: s.code(), seconds, stderr_tail },
        Err(e) => UnitOutcome { unit: unit.id, ok: false, exit_code: None, seconds, stderr_tail: format!("{stderr_tail}\nwait failed: {e}") },
    }
}

impl Executor for LocalPool {
    fn execute(&self, units: &[Unit], on_event: &(dyn Fn(Event) + Sync)) -> Vec<UnitOutcome> {
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
                            let o = run_one(u, on_event);
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
