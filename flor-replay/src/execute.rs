//! Turning a [`Plan`] into worker units and running them (DESIGN.md §7
//! steps 4–5): each unit is prepared by the executor before its process
//! starts — materialize its version from git objects into a temporary
//! directory (once per run), write the propagated replay copy of the
//! script, write a checkpoint recipe for each object the unit restores,
//! write its spec. The local pool prepares units on one thread per worker
//! (up to the cores), ahead of its workers, so every worker starts right
//! after about one preparation and later preparations overlap running
//! units.
//!
//! The coordinator alone opens each run's checkpoint database (sled admits
//! one process per database) and keeps it open for the whole replay; it
//! gives each unit one recipe file (`recipes-<k>.bin`, written by
//! [`flor_store::checkpoint::encode_recipes`]: for every object the unit
//! restores, where each of its chunks lies in the run's pack files; binary,
//! ~55 bytes per chunk, where JSON with hex hashes took ~120 and a
//! millisecond to write and to parse per 3800 chunks), and each worker
//! reads and verifies the bytes from the
//! packs itself (`flor_prefetch_start` with a core to spare,
//! `flor_checkpoint_load_recipe_to` straight into a numpy array's memory,
//! `flor_checkpoint_load_recipe`), in parallel with the other workers. One file per unit, not one per object:
//! creating files is the costly part of preparing a unit on a busy ext4
//! directory (a unit restoring 9 checkpoints of 6 objects made 54 files and
//! 9 directories).

use crate::executor::{Event, Executor, Unit, UnitOutcome};
use crate::plan::{schedule, Plan, RunPlan, Step};
use crate::position::Position;
use crate::Error;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

/// The spec format version written here and read by the Python package
/// (4: the unit's recipe file is binary, `encode_recipes`), so that a
/// coordinator and workers of different builds fail with a clear message.
pub const SPEC_VERSION: u32 = 4;

/// The file a worker reads (its path is in `FLOR_REPLAY`): what to replay.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerSpec {
    /// Spec format version ([`SPEC_VERSION`]).
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
    /// Iterations whose checkpoints this unit restores (each with at least
    /// one object), in restore order.
    pub checkpoints: Vec<i64>,
    /// Per iteration of `checkpoints` (as a decimal string), the names of
    /// the objects checkpointed there, sorted, each with its 0-based index
    /// in the `recipes` array.
    pub objects: BTreeMap<String, Vec<(String, usize)>>,
    /// The recipe file ([`flor_store::checkpoint::encode_recipes`]) of
    /// [`flor_store::checkpoint::Recipe`]s, one per restored object, in
    /// restore order (iterations as in `checkpoints`, objects by name);
    /// not written when the unit restores nothing.
    pub recipes: PathBuf,
    /// The run's recorded `arg` values.
    pub args: serde_json::Map<String, serde_json::Value>,
    /// Per iteration, values of each name already recorded there by an
    /// earlier replay: the worker skips that many before recording.
    pub recorded: BTreeMap<i64, BTreeMap<String, u64>>,
    /// Threads a worker decodes one large checkpoint with: the cores
    /// shared among the workers that run at once.
    pub decode_threads: usize,
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

/// The checkpoints a unit restores: iterations in restore order, the
/// objects of each (sorted, with their index in the recipe file), and the
/// recipe file's contents.
#[derive(Default)]
struct Restores {
    iterations: Vec<i64>,
    objects: BTreeMap<String, Vec<(String, usize)>>,
    recipes: Vec<flor_store::checkpoint::Recipe>,
}

/// The recipes of each object checkpointed at the end of each of
/// `iterations` of run `rp` (iterations without a checkpoint are left out).
fn restores(plan: &Plan, rp: &RunPlan, iterations: &[i64]) -> Result<Restores, Error> {
    let mut out = Restores::default();
    if iterations.is_empty() {
        return Ok(out);
    }
    let Some(ckpts) = plan.stores.get(&plan.root, rp.key) else {
        return Ok(out);
    };
    let outer = rp.analysis.outer_loop.as_deref();
    for &i in iterations {
        let mut here: Vec<_> = ckpts
            .infos
            .iter()
            .filter(|c| {
                c.loop_path.len() == 1
                    && c.loop_path[0].1 == i
                    && outer.is_none_or(|o| c.loop_path[0].0 == o)
            })
            .collect();
        if here.is_empty() {
            continue;
        }
        here.sort_by(|a, b| a.object.cmp(&b.object));
        let mut names = Vec::with_capacity(here.len());
        for info in here {
            names.push((info.object.clone(), out.recipes.len()));
            out.recipes.push(ckpts.store.recipe(&info.loop_path, &info.object)?);
        }
        out.iterations.push(i);
        out.objects.insert(i.to_string(), names);
    }
    Ok(out)
}

/// Splits a run's selected iterations into at most `parts` contiguous chunks.
fn chunks(its: &[i64], parts: usize) -> Vec<Vec<i64>> {
    let parts = parts.clamp(1, its.len().max(1));
    let size = its.len().div_ceil(parts).max(1);
    its.chunks(size).map(<[i64]>::to_vec).collect()
}

/// What preparing one unit takes: which run, which iterations, where.
#[derive(Debug, Clone)]
struct Job {
    run: usize,
    mode: &'static str,
    part: Vec<i64>,
    restores: Vec<i64>,
    src: PathBuf,
    recipes: PathBuf,
    spec: PathBuf,
    decode_threads: usize,
}

/// The units of `plan` under `work` (a fresh temporary directory), with
/// what preparing each takes; writes nothing.
fn units(plan: &Plan, opts: &ExecOptions, work: &Path) -> (Vec<Unit>, Vec<Job>) {
    let mut units = Vec::new();
    let mut jobs = Vec::new();
    let per_run = opts.workers.div_ceil(plan.runs.len().max(1)).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let at_once = opts.workers.clamp(1, plan.runs.len().max(1) * per_run);
    let decode_threads = (cores / at_once).max(1);
    for (r, rp) in plan.runs.iter().enumerate() {
        let stem = rp.key.file_stem();
        let src = work.join(&stem).join("src");
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
                    .filter_map(|s| {
                        if let Step::Restore(c) = s {
                            Some(c)
                        } else {
                            None
                        }
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let spec = work.join(&stem).join(format!("spec-{k}.json"));
            let range = match (part.first(), part.last()) {
                (Some(a), Some(b)) if a == b => format!(" iteration {a}"),
                (Some(a), Some(b)) => format!(" iterations {a}–{b}"),
                _ => String::new(),
            };
            let label = format!(
                "{}{}{}",
                crate::fmt_tstamp(rp.key.tstamp),
                range,
                if n_parts > 1 {
                    format!(" ({}/{n_parts})", k + 1)
                } else {
                    String::new()
                }
            );
            units.push(Unit {
                id: units.len(),
                label,
                argv: vec![opts.python.clone(), plan.filename.clone()],
                cwd: src.clone(),
                env: vec![
                    ("FLOR_REPLAY".into(), spec.to_string_lossy().into_owned()),
                    ("FLOR_ECHO".into(), "0".into()),
                    ("PYTHONUNBUFFERED".into(), "1".into()),
                ],
                total: part.len().max(1) as u64,
            });
            jobs.push(Job {
                run: r,
                mode,
                part,
                restores,
                src: src.clone(),
                recipes: work.join(&stem).join(format!("recipes-{k}.bin")),
                spec,
                decode_threads,
            });
        }
    }
    (units, jobs)
}

/// Prepares one unit: its run's version (once per run, whichever unit of
/// the run comes first), its checkpoint recipes and its spec.
fn prepare(
    plan: &Plan,
    job: &Job,
    materialized: &OnceLock<Result<(), String>>,
) -> Result<(), Error> {
    let rp = &plan.runs[job.run];
    let m = materialized.get_or_init(|| {
        let go = || -> Result<(), Error> {
            std::fs::create_dir_all(&job.src).map_err(|e| Error::Io(job.src.clone(), e))?;
            flor_store::versions::materialize(&plan.root, &rp.commit_id, &job.src)?;
            let script = job.src.join(&plan.filename);
            std::fs::write(&script, &rp.analysis.replay_source)
                .map_err(|e| Error::Io(script.clone(), e))
        };
        go().map_err(|e| e.to_string())
    });
    if let Err(e) = m {
        return Err(Error::Internal(format!(
            "materializing version {}: {e}",
            &rp.commit_id[..rp.commit_id.len().min(12)]
        )));
    }
    let restores = restores(plan, rp, &job.restores)?;
    if !restores.recipes.is_empty() {
        // A unit that restores nothing gets no file (its spec lists no objects).
        let bytes = flor_store::checkpoint::encode_recipes(&restores.recipes)?;
        std::fs::write(&job.recipes, bytes).map_err(|e| Error::Io(job.recipes.clone(), e))?;
    }
    let recorded = if job.mode == "iterations" {
        rp.recorded
            .iter()
            .filter(|(i, _)| job.part.contains(i))
            .map(|(i, c)| (*i, c.clone()))
            .collect()
    } else {
        BTreeMap::new()
    };
    let spec = WorkerSpec {
        version: SPEC_VERSION,
        project_root: plan.root.clone(),
        filename: plan.filename.clone(),
        tstamp: rp.key.tstamp,
        run_id: format!("{:016x}", rp.key.run_id),
        names: plan.names.clone(),
        outer_loop: rp.analysis.outer_loop.clone(),
        mode: job.mode,
        iterations: job.part.clone(),
        skip_rest: rp.skip_rest,
        checkpoints: restores.iterations,
        objects: restores.objects,
        recipes: job.recipes.clone(),
        args: rp.args.clone(),
        recorded,
        decode_threads: job.decode_threads,
    };
    let text = serde_json::to_string_pretty(&spec).map_err(|e| Error::Internal(e.to_string()))?;
    std::fs::write(&job.spec, text).map_err(|e| Error::Io(job.spec.clone(), e))
}

/// Runs `plan` with `executor`: units are prepared in a temporary directory
/// (removed afterwards) as the executor starts them; reports. The user's
/// repository is only read (git objects); records go to its `.flor/`.
///
/// # Errors
/// [`Error::Io`] when the temporary directory cannot be made; unit
/// failures (including failures to prepare one) are in the report.
pub fn run(
    plan: &Plan,
    opts: &ExecOptions,
    executor: &dyn Executor,
    on_event: &(dyn Fn(&[Unit], Event) + Sync),
) -> Result<Report, Error> {
    let start = Instant::now();
    let work = tempfile::Builder::new()
        .prefix("flor-replay-")
        .tempdir()
        .map_err(|e| Error::Io(std::env::temp_dir(), e))?;
    let (units, jobs) = units(plan, opts, work.path());
    let materialized: Vec<OnceLock<Result<(), String>>> =
        plan.runs.iter().map(|_| OnceLock::new()).collect();
    let prep = |u: &Unit| -> Result<(), String> {
        let job = jobs.get(u.id).ok_or_else(|| format!("no unit {}", u.id))?;
        prepare(plan, job, &materialized[job.run]).map_err(|e| e.to_string())
    };
    let outcomes = executor.execute(&units, &prep, &|e| on_event(&units, e));
    Ok(Report {
        units,
        outcomes,
        seconds: start.elapsed().as_secs_f64(),
        estimate_s: plan.estimate_s(),
    })
}
