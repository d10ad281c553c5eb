//! Turning a [`Plan`] into worker units and running them (DESIGN.md §7
//! steps 4–5): materialize each old version from git objects into a
//! temporary directory, write the propagated replay copy of the script,
//! spool the checkpoints each unit restores, run the units, summarize.
//!
//! The coordinator alone opens each run's checkpoint database (sled admits
//! one process per database) and serves the bytes to its workers as files
//! in the unit's spool directory (`<spool>/<iteration>/<hex(object)>`).

use crate::executor::{Event, Executor, Unit, UnitOutcome};
use crate::plan::{schedule, Plan, RunPlan, Step};
use crate::position::Position;
use crate::Error;
use flor_store::checkpoint::CheckpointStore;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The file a worker reads (its path is in `FLOR_REPLAY`): what to replay.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerSpec {
    /// Spec format version (1).
    pub version: u32,
    /// The user's repository root (records go to its `.flor/`).
    pub project_root: PathBuf,
    /// The script's path relative to the root.
    pub filename: String,
    /// The run's `tstamp` (µs).
    pub tstamp: i64,
    /// The run id, 16 hex digits.
    pub run_id: String,
    /// Names to record (all others are not recorded).
    pub names: Vec<String>,
    /// The outer loop's name.
    pub outer_loop: Option<String>,
    /// `prefix`, `iterations` or `suffix`.
    pub mode: &'static str,
    /// Outer iterations to run with recording on (sorted, 0-based).
    pub iterations: Vec<i64>,
    /// Skip the rest of the outer body after the statements.
    pub skip_rest: bool,
    /// Iterations whose checkpoint is in `spool`.
    pub checkpoints: Vec<i64>,
    /// Directory of spooled checkpoints.
    pub spool: PathBuf,
    /// The run's recorded `arg` values.
    pub args: serde_json::Map<String, serde_json::Value>,
}

/// How to run a plan.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Worker processes.
    pub workers: usize,
    /// The Python interpreter for workers (`python3`, or `sys.executable`).
    pub python: String,
}

/// The result of a replay.
#[derive(Debug)]
pub struct Report {
    /// The units run.
    pub units: Vec<Unit>,
    /// Their outcomes, in unit order.
    pub outcomes: Vec<UnitOutcome>,
    /// Wall seconds.
    pub seconds: f64,
    /// The plan's one-worker estimate, seconds.
    pub estimate_s: f64,
}

impl Report {
    /// Units that failed.
    pub fn failed(&self) -> impl Iterator<Item = (&Unit, &UnitOutcome)> {
        self.units.iter().zip(&self.outcomes).filter(|(_, o)| !o.ok)
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Writes the checkpoints of `iterations` (end-of-iteration state) of run
/// `rp` into `spool/<i>/<hex(object)>`; returns the iterations spooled.
fn spool(root: &Path, rp: &RunPlan, iterations: &[i64], spool: &Path) -> Result<Vec<i64>, Error> {
    if iterations.is_empty() {
        return Ok(Vec::new());
    }
    let store = CheckpointStore::open(&root.join(".flor"), &rp.key.file_stem())?;
    let infos = store.list()?;
    let mut done = Vec::new();
    for &i in iterations {
        let dir = spool.join(i.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| Error::Io(dir.clone(), e))?;
        for info in infos.iter().filter(|c| c.loop_path.len() == 1 && c.loop_path[0].1 == i) {
            let bytes = store.load(&info.loop_path, &info.object)?;
            let path = dir.join(hex(&info.object));
            std::fs::write(&path, bytes).map_err(|e| Error::Io(path.clone(), e))?;
        }
        done.push(i);
    }
    let _ = store.close();
    Ok(done)
}

/// Splits a run's selected iterations into at most `parts` contiguous chunks.
fn chunks(its: &[i64], parts: usize) -> Vec<Vec<i64>> {
    let parts = parts.clamp(1, its.len().max(1));
    let size = its.len().div_ceil(parts).max(1);
    its.chunks(size).map(<[i64]>::to_vec).collect()
}

/// Builds the units of `plan` under `work` (a fresh temporary directory).
///
/// # Errors
/// [`Error::Store`] when a version cannot be materialized or a checkpoint
/// cannot be spooled; [`Error::Io`] for the temporary files.
pub fn prepare(plan: &Plan, opts: &ExecOptions, work: &Path) -> Result<Vec<Unit>, Error> {
    let mut units = Vec::new();
    let per_run = opts.workers.div_ceil(plan.runs.len().max(1)).max(1);
    for rp in &plan.runs {
        let stem = rp.key.file_stem();
        let src = work.join(&stem).join("src");
        std::fs::create_dir_all(&src).map_err(|e| Error::Io(src.clone(), e))?;
        flor_store::versions::materialize(&plan.root, &rp.commit_id, &src)?;
        let script = src.join(&plan.filename);
        std::fs::write(&script, &rp.analysis.replay_source).map_err(|e| Error::Io(script.clone(), e))?;
        let (mode, parts): (&'static str, Vec<Vec<i64>>) = match rp.analysis.position {
            Position::Prefix => ("prefix", vec![Vec::new()]),
            Position::Suffix => ("suffix", vec![Vec::new()]),
            _ => ("iterations", chunks(&rp.iterations, per_run)),
        };
        let n_parts = parts.len();
        for (k, part) in parts.into_iter().enumerate() {
            let restores: Vec<i64> = match mode {
                "suffix" => rp.checkpoints.last().copied().into_iter().collect(),
                "iterations" => schedule(&part, &rp.checkpoints, rp.skip_rest)
                    .into_iter()
                    .filter_map(|s| if let Step::Restore(c) = s { Some(c) } else { None })
                    .collect(),
                _ => Vec::new(),
            };
            let spool_dir = work.join(&stem).join(format!("spool-{k}"));
            std::fs::create_dir_all(&spool_dir).map_err(|e| Error::Io(spool_dir.clone(), e))?;
            let spooled = spool(&plan.root, rp, &restores, &spool_dir)?;
            let spec = WorkerSpec {
                version: 1,
                project_root: plan.root.clone(),
                filename: plan.filename.clone(),
                tstamp: rp.key.tstamp,
                run_id: format!("{:016x}", rp.key.run_id),
                names: plan.names.clone(),
                outer_loop: rp.analysis.outer_loop.clone(),
                mode,
                iterations: part.clone(),
                skip_rest: rp.skip_rest,
                checkpoints: spooled,
                spool: spool_dir.clone(),
                args: rp.args.clone(),
            };
            let spec_path = work.join(&stem).join(format!("spec-{k}.json"));
            let text = serde_json::to_string_pretty(&spec).map_err(|e| Error::Internal(e.to_string()))?;
            std::fs::write(&spec_path, text).map_err(|e| Error::Io(spec_path.clone(), e))?;
            let range = match (part.first(), part.last()) {
                (Some(a), Some(b)) if a == b => format!(" iteration {a}"),
                (Some(a), Some(b)) => format!(" iterations {a}–{b}"),
                _ => String::new(),
            };
            let label = format!("{}{}{}", crate::fmt_tstamp(rp.key.tstamp), range, if n_parts > 1 { format!(" ({}/{n_parts})", k + 1) } else { String::new() });
            units.push(Unit {
                id: units.len(),
                label,
                argv: vec![opts.python.clone(), plan.filename.clone()],
                cwd: src.clone(),
                env: vec![
                    ("FLOR_REPLAY".into(), spec_path.to_string_lossy().into_owned()),
                    ("FLOR_ECHO".into(), "0".into()),
                    ("PYTHONUNBUFFERED".into(), "1".into()),
                ],
                total: part.len().max(1) as u64,
            });
        }
    }
    Ok(units)
}

/// Runs `plan` with `executor`: prepares the units in a temporary directory
/// (removed afterwards), runs them, and reports. The user's repository is
/// only read (git objects); records go to its `.flor/`.
///
/// # Errors
/// As [`prepare`]; unit failures are in the report, not errors.
pub fn run(plan: &Plan, opts: &ExecOptions, executor: &dyn Executor, on_event: &(dyn Fn(&[Unit], Event) + Sync)) -> Result<Report, Error> {
    let start = Instant::now();
    let work = tempfile::Builder::new().prefix("flor-replay-").tempdir().map_err(|e| Error::Io(std::env::temp_dir(), e))?;
    let units = prepare(plan, opts, work.path())?;
    let outcomes = executor.execute(&units, &|e| on_event(&units, e));
    Ok(Report { units, outcomes, seconds: start.elapsed().as_secs_f64(), estimate_s: plan.estimate_s() })
}
