//! The replay planner (DESIGN.md §7 steps 1–3): which runs lack the names,
//! their versions, where the new statements sit, which iterations must
//! run, which checkpoints exist, and an estimate from recorded timings.

use crate::position::{self, Analysis, Position};
use crate::propagate::{self, Outcome, Target};
use crate::Error;
use flor_core::RunKey;
use flor_query::arrow::array::{Array, AsArray, RecordBatch};
use flor_query::arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use flor_query::FlorContext;
use flor_store::checkpoint::{CheckpointInfo, CheckpointStore};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// What the user asked to replay.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The project (any directory inside the repository).
    pub project: PathBuf,
    /// The value names whose statements are carried and replayed.
    pub names: Vec<String>,
    /// The script (path relative to the repository root); default: the one
    /// recorded script whose current text logs all the names.
    pub script: Option<String>,
    /// A SQL predicate over run-level values (`lr > 0.01`), as in `flor dataframe --where`.
    pub where_: Option<String>,
    /// 0-based outer iterations to replay (default: all recorded).
    pub iterations: Option<Vec<i64>>,
    /// Worker processes (at least 1).
    pub workers: usize,
}

/// The plan for one old run.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The run.
    pub key: RunKey,
    /// Its snapshot commit.
    pub commit_id: String,
    /// Its recorded `arg` values (JSON object).
    pub args: serde_json::Map<String, serde_json::Value>,
    /// The propagated version: position of the statements, replay copy.
    pub analysis: Analysis,
    /// The statements' 1-based lines in the propagated file.
    pub lines: Vec<usize>,
    /// Identifier renames applied to the copies, `(new, old)`.
    pub renamed: Vec<(String, String)>,
    /// Outer iterations to run with the new statements on (0-based, sorted):
    /// the selected ones that lack a value of some name.
    pub iterations: Vec<i64>,
    /// Selected iterations skipped because every name already has a value
    /// there (an earlier, partial replay recorded them).
    pub already: usize,
    /// Per iteration to run, the values of each name already recorded there
    /// (by an earlier replay that stopped inside it): the worker records
    /// only the values after these, so none is recorded twice.
    pub recorded: BTreeMap<i64, BTreeMap<String, u64>>,
    /// Whether the replay skips the rest of the outer body after the
    /// statements: the position allows it and every selected iteration after
    /// the first can start from a checkpoint (a skipped body leaves the
    /// state half-updated, so the next iteration must be restored).
    pub skip_rest: bool,
    /// Outer iterations the run recorded.
    pub n_iterations: i64,
    /// Outer iterations with a checkpoint (state at the end of that iteration).
    pub checkpoints: Vec<i64>,
    /// Recorded seconds per outer iteration.
    pub durations: BTreeMap<i64, f64>,
    /// Recorded seconds before the first outer loop.
    pub setup_s: f64,
    /// Recorded seconds after the outer loop.
    pub teardown_s: f64,
    /// Estimated replay seconds on one worker.
    pub estimate_s: f64,
}

/// A run that cannot be replayed, and why (named, never skipped silently).
#[derive(Debug, Clone)]
pub struct Unplannable {
    /// The run.
    pub key: RunKey,
    /// Its snapshot commit, when known.
    pub commit_id: Option<String>,
    /// Why.
    pub reason: String,
}

/// The whole plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Repository root.
    pub root: PathBuf,
    /// Project id.
    pub projid: String,
    /// The script.
    pub filename: String,
    /// The names.
    pub names: Vec<String>,
    /// Runs to replay, oldest first.
    pub runs: Vec<RunPlan>,
    /// Runs that lack the names but cannot be replayed.
    pub unplannable: Vec<Unplannable>,
    /// Runs of the script that already have every name.
    pub up_to_date: usize,
    /// The runs' checkpoint databases, opened by the planner and kept open
    /// until the plan is dropped (the coordinator reads them while workers run).
    pub stores: Arc<CheckpointDbs>,
    /// Where planning took its time, wall seconds per phase in order:
    /// `open` (the store and query context), `queries` (runs, recorded
    /// values, versions, loop timings), `versions and checkpoints` (each
    /// version read from git and propagated, each run's checkpoint
    /// database opened and listed, in parallel). For `flor replay --timings`.
    pub timings: Vec<(&'static str, f64)>,
}

/// The checkpoint databases of the runs in a plan, each opened once by
/// this process (sled admits one process per database; an open costs tens
/// of milliseconds) and shared by the planner and the coordinator's threads.
#[derive(Default)]
pub struct CheckpointDbs {
    open: Mutex<HashMap<String, Arc<RunCell>>>,
}

/// A run's checkpoints, opened at most once (`None`: none, or not openable).
type RunCell = OnceLock<Option<Arc<RunCheckpoints>>>;

/// One run's open checkpoint database and what it holds.
pub struct RunCheckpoints {
    /// The open store.
    pub store: CheckpointStore,
    /// Its checkpoints, listed once.
    pub infos: Vec<CheckpointInfo>,
}

impl std::fmt::Debug for CheckpointDbs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.open.lock().map_or(0, |m| m.values().filter(|c| c.get().is_some_and(Option::is_some)).count());
        f.debug_struct("CheckpointDbs").field("open", &n).finish()
    }
}

impl CheckpointDbs {
    /// The checkpoints of run `key` in the project at `root`, opening its
    /// database on first use; `None` when the run has none or its database
    /// cannot be opened (another process holds it): the replay then runs
    /// from the start.
    pub fn get(&self, root: &Path, key: RunKey) -> Option<Arc<RunCheckpoints>> {
        let stem = key.file_stem();
        // One cell per run, filled once outside the map's lock: runs open in
        // parallel, and a second caller for the same run waits for the first.
        let cell = self.open.lock().ok()?.entry(stem.clone()).or_default().clone();
        cell.get_or_init(|| {
            let flor = root.join(".flor");
            if !flor_store::checkpoint::run_dir(&flor, &stem).exists() {
                return None;
            }
            let store = CheckpointStore::open(&flor, &stem).ok()?;
            let infos = store.list().ok()?;
            Some(Arc::new(RunCheckpoints { store, infos }))
        })
        .clone()
    }
}

impl RunCheckpoints {
    /// The outer iterations with a checkpoint of the loop `outer`.
    pub fn iterations(&self, outer: Option<&str>) -> Vec<i64> {
        let mut its: Vec<i64> = self
            .infos
            .iter()
            .filter(|c| c.loop_path.len() == 1 && outer.is_none_or(|o| c.loop_path[0].0 == o))
            .map(|c| c.loop_path[0].1)
            .collect();
        its.sort_unstable();
        its.dedup();
        its
    }
}

impl Plan {
    /// Estimated seconds on one worker, summed over runs.
    pub fn estimate_s(&self) -> f64 {
        self.runs.iter().map(|r| r.estimate_s).sum()
    }
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a dyn Array, Error> {
    b.column_by_name(name).map(|c| c.as_ref()).ok_or_else(|| Error::Internal(format!("query result lacks column {name}")))
}

fn strings(b: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, Error> {
    let c = col(b, name)?;
    let c = flor_query::arrow::compute::cast(c, &flor_query::arrow::datatypes::DataType::Utf8).map_err(|e| Error::Internal(e.to_string()))?;
    let s = c.as_string::<i32>();
    Ok((0..s.len()).map(|i| s.is_valid(i).then(|| s.value(i).to_owned())).collect())
}

fn tstamps(b: &RecordBatch) -> Result<Vec<i64>, Error> {
    Ok(col(b, "tstamp")?.as_primitive::<TimestampMicrosecondType>().values().to_vec())
}

fn floats(b: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>, Error> {
    let c = col(b, name)?.as_primitive::<Float64Type>();
    Ok((0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i))).collect())
}

/// Finds the script whose working-tree text logs every name, among `recorded`.
fn find_script(root: &Path, names: &[String], recorded: &[String]) -> Result<String, Error> {
    let mut hits = Vec::new();
    for f in recorded {
        let Ok(src) = std::fs::read_to_string(root.join(f)) else { continue };
        if names.iter().all(|n| src.contains(&format!("\"{n}\"")) || src.contains(&format!("'{n}'"))) {
            hits.push(f.clone());
        }
    }
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => Err(Error::Input(format!("no recorded script's current text logs {}; name the script with --script", names.join(", ")))),
        _ => Err(Error::Input(format!("several scripts log {}: {}; choose one with --script", names.join(", "), hits.join(", ")))),
    }
}

/// Builds the plan for `req`.
///
/// # Errors
/// [`Error::Input`] for no names, an unknown script or a bad `--where`;
/// [`Error::Query`] / [`Error::Store`] when the store cannot be read.
/// Runs whose version cannot take the statements are listed in
/// [`Plan::unplannable`] with the reason, not errors.
pub fn plan(req: &Request) -> Result<Plan, Error> {
    if req.names.is_empty() {
        return Err(Error::Input("name at least one value to replay".into()));
    }
    let mut phase = std::time::Instant::now();
    let mut timings = Vec::new();
    let mut lap = |name: &'static str| {
        timings.push((name, phase.elapsed().as_secs_f64()));
        phase = std::time::Instant::now();
    };
    let ctx = FlorContext::open(&req.project)?;
    let store = flor_store::store::Store::open(&req.project)?;
    let root = store.root().to_path_buf();
    lap("open");
    let runs = ctx.sql("SELECT tstamp, run_id, filename, args, setup_s, teardown_s, status FROM runs ORDER BY tstamp, run_id")?;
    let run_files = strings(&runs, "filename")?;
    let mut recorded: Vec<String> = run_files.iter().flatten().cloned().collect();
    recorded.sort();
    recorded.dedup();
    let filename = match &req.script {
        Some(s) => s.trim_start_matches("./").to_owned(),
        None => find_script(&root, &req.names, &recorded)?,
    };
    let new_path = root.join(&filename);
    let new_src = std::fs::read_to_string(&new_path).map_err(|e| Error::Input(format!("cannot read the current script {}: {e}", new_path.display())))?;

    // The values of the names already recorded, per run.
    let have = Values::query(&ctx, &req.names)?;
    // --where over the run-level pivot.
    let allowed: Option<HashSet<i64>> = match &req.where_ {
        None => None,
        Some(pred) => {
            let pivot = ctx.dataframe::<&str>(&[])?;
            let kept = ctx.filter(&pivot, pred)?;
            Some(tstamps(&kept)?.into_iter().collect())
        }
    };
    let versions = ctx.versions()?;
    let commit_of: HashMap<String, String> = strings(&versions, "run_id")?
        .into_iter()
        .zip(strings(&versions, "commit_id")?)
        .filter_map(|(r, c)| Some((r?, c?)))
        .collect();
    let loops = ctx.sql("SELECT run_id, iteration, duration_s FROM loops WHERE p_ctx_id = 0")?;
    let mut durations: HashMap<String, BTreeMap<i64, f64>> = HashMap::new();
    {
        let ids = strings(&loops, "run_id")?;
        let its = col(&loops, "iteration")?.as_primitive::<Int64Type>().values().to_vec();
        let ds = floats(&loops, "duration_s")?;
        for ((id, it), d) in ids.into_iter().zip(its).zip(ds) {
            if let Some(id) = id {
                durations.entry(id).or_default().insert(it, d.unwrap_or(0.0));
            }
        }
    }

    let ts = tstamps(&runs)?;
    let ids = strings(&runs, "run_id")?;
    let args = strings(&runs, "args")?;
    let setup = floats(&runs, "setup_s")?;
    let teardown = floats(&runs, "teardown_s")?;
    let targets: Vec<Target> = req.names.iter().map(|n| Target::Name(n.clone())).collect();
    let mut out = Plan {
        root: root.clone(),
        projid: store.projid().to_owned(),
        filename: filename.clone(),
        names: req.names.clone(),
        runs: Vec::new(),
        unplannable: Vec::new(),
        up_to_date: 0,
        stores: Arc::new(CheckpointDbs::default()),
        timings: Vec::new(),
    };
    // Ancestry of the loop frames that hold values, for the runs that have some.
    let frames = have.frames(&ctx)?;
    lap("queries");
    // The runs of the script to consider, oldest first: (row, key, run id, commit).
    let mut todo: Vec<(usize, RunKey, String, String)> = Vec::new();
    let mut seen = HashSet::new();
    for i in 0..ts.len() {
        if run_files[i].as_deref() != Some(filename.as_str()) {
            continue;
        }
        let Some(run_id) = ids[i].clone() else { continue };
        if !seen.insert((ts[i], run_id.clone())) {
            continue;
        }
        let key = RunKey { tstamp: ts[i], run_id: u64::from_str_radix(&run_id, 16).map_err(|_| Error::Internal(format!("bad run id {run_id}")))? };
        if allowed.as_ref().is_some_and(|a| !a.contains(&ts[i])) {
            continue;
        }
        // Complete without planning: every name has a value at run level (a
        // statement outside the loop) or in every requested outer iteration.
        if have.run_level_done(&run_id, &req.names) {
            let n = durations.get(&run_id).and_then(|d| d.keys().max()).map_or(0, |m| m + 1);
            let per_it = have.per_iteration(&run_id, &frames);
            let complete = |i: &i64| per_it.get(i).is_some_and(|c| req.names.iter().all(|n| c.get(n).is_some_and(|k| *k > 0)));
            if have.at_run_level(&run_id, &req.names) || requested(req, n).iter().all(complete) {
                out.up_to_date += 1;
                continue;
            }
        }
        let Some(commit_id) = commit_of.get(&run_id).cloned() else {
            if have.run_level_done(&run_id, &req.names) {
                out.up_to_date += 1;
            } else {
                out.unplannable.push(Unplannable { key, commit_id: None, reason: "no git snapshot of this run".into() });
            }
            continue;
        };
        todo.push((i, key, run_id, commit_id));
    }
    // Propagation and git reads (once per version) and checkpoint listings
    // of the runs, in parallel.
    let versions = VersionPlans::default();
    let planned = parallel_map(&todo, |(_, key, _, commit_id)| plan_run(&root, &filename, &new_src, &targets, *key, commit_id, &versions, &out.stores));
    lap("versions and checkpoints");
    for ((i, key, run_id, commit_id), result) in todo.into_iter().zip(planned) {
        match result {
            Ok(mut rp) => {
                rp.args = args[i].as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or_default();
                rp.durations = durations.remove(&run_id).unwrap_or_default();
                rp.n_iterations = rp.durations.keys().max().map_or(0, |m| m + 1);
                rp.setup_s = setup[i].unwrap_or(0.0);
                rp.teardown_s = teardown[i].unwrap_or(0.0);
                let requested = requested(req, rp.n_iterations);
                match rp.analysis.position {
                    Position::Prefix | Position::Suffix => {
                        if have.run_level_done(&run_id, &req.names) {
                            out.up_to_date += 1;
                            continue;
                        }
                        rp.iterations = requested;
                    }
                    Position::OuterBody { .. } | Position::Nested => {
                        let per_it = have.per_iteration(&run_id, &frames);
                        let nested = matches!(rp.analysis.position, Position::Nested);
                        let (todo_its, already) = select_missing(&requested, &req.names, &per_it, nested);
                        if todo_its.is_empty() {
                            out.up_to_date += 1;
                            continue;
                        }
                        rp.already = already;
                        rp.recorded = todo_its.iter().filter_map(|i| per_it.get(i).map(|c| (*i, c.clone()))).collect();
                        rp.iterations = todo_its;
                    }
                }
                rp.iterations.sort_unstable();
                rp.iterations.dedup();
                rp.skip_rest = matches!(rp.analysis.position, Position::OuterBody { skip_rest: true })
                    && rp.iterations.iter().skip(1).all(|i| restore_point(&rp.checkpoints, i - 1).is_some());
                rp.estimate_s = estimate(&rp);
                out.runs.push(rp);
            }
            Err(reason) => out.unplannable.push(Unplannable { key, commit_id: Some(commit_id), reason }),
        }
    }
    out.timings = timings;
    Ok(out)
}

/// The outer iterations `req` selects among a run's `n` (all by default).
fn requested(req: &Request, n: i64) -> Vec<i64> {
    match &req.iterations {
        Some(sel) => sel.iter().copied().filter(|it| (0..n).contains(it)).collect(),
        None => (0..n).collect(),
    }
}

/// Which of the `requested` outer iterations to run, given the values of
/// the names already recorded in each (`per_it`), and how many requested
/// ones are complete. An iteration is complete when every name has a value
/// there. For a statement in a nested loop an iteration may hold only the
/// first of its values (a worker stopped inside it): an iteration with
/// values that is followed by a requested iteration without any is run
/// again (the worker skips the values already there).
pub fn select_missing(requested: &[i64], names: &[String], per_it: &BTreeMap<i64, BTreeMap<String, u64>>, nested: bool) -> (Vec<i64>, usize) {
    let complete = |i: &i64| per_it.get(i).is_some_and(|c| names.iter().all(|n| c.get(n).copied().unwrap_or(0) > 0));
    let any = |i: i64| per_it.get(&i).is_some_and(|c| c.values().any(|n| *n > 0));
    let wanted: HashSet<i64> = requested.iter().copied().collect();
    let mut out = Vec::new();
    let mut already = 0;
    for &i in requested {
        // In a nested loop, a complete-looking iteration followed by a
        // selected one without values may have stopped early.
        let maybe_partial = nested && wanted.contains(&(i + 1)) && !any(i + 1);
        if !complete(&i) || maybe_partial {
            out.push(i);
        } else {
            already += 1;
        }
    }
    (out, already)
}

/// Runs `f` over `items` on up to as many threads as there are cores;
/// results in `items` order.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len()).max(1);
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        // A panicking thread's results cannot be made up (the caller pairs
        // results with `items` by position): its panic goes on.
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// SQL text of a string literal (single quotes doubled; DataFusion reads
/// backslashes literally).
fn sql_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Loop frames by `(run id, ctx_id)`: `(parent ctx_id, iteration)`.
type Frames = HashMap<(String, u64), (u64, i64)>;

/// The values of the replayed names already in the store: per run, per
/// loop frame (`ctx_id`, 0 for the run level), per name, how many.
#[derive(Debug, Default)]
struct Values {
    by_run: HashMap<String, HashMap<u64, BTreeMap<String, u64>>>,
}

impl Values {
    fn query(ctx: &FlorContext, names: &[String]) -> Result<Values, Error> {
        let list: Vec<String> = names.iter().map(|n| sql_str(n)).collect();
        let b = ctx.sql(&format!(
            "SELECT run_id, value_name, ctx_id, count(*) AS n FROM logs WHERE value_name IN ({}) GROUP BY run_id, value_name, ctx_id",
            list.join(", ")
        ))?;
        let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
        let runs = strings(&b, "run_id")?;
        let vnames = strings(&b, "value_name")?;
        let ctxs = col(&b, "ctx_id")?.as_primitive::<flor_query::arrow::datatypes::UInt64Type>().values().to_vec();
        let ns = col(&b, "n")?.as_primitive::<Int64Type>().values().to_vec();
        let mut by_run: HashMap<String, HashMap<u64, BTreeMap<String, u64>>> = HashMap::new();
        for (((r, n), c), k) in runs.into_iter().zip(vnames).zip(ctxs).zip(ns) {
            let (Some(r), Some(n)) = (r, n) else { continue };
            if !wanted.contains(n.as_str()) {
                continue;
            }
            *by_run.entry(r).or_default().entry(c).or_default().entry(n).or_default() += u64::try_from(k).unwrap_or(0);
        }
        Ok(Values { by_run })
    }

    /// Every name has a value somewhere in the run.
    fn run_level_done(&self, run_id: &str, names: &[String]) -> bool {
        self.by_run.get(run_id).is_some_and(|frames| names.iter().all(|n| frames.values().any(|c| c.get(n).is_some_and(|k| *k > 0))))
    }

    /// Every name has a value at run level (outside any loop).
    fn at_run_level(&self, run_id: &str, names: &[String]) -> bool {
        self.by_run.get(run_id).and_then(|f| f.get(&0)).is_some_and(|c| names.iter().all(|n| c.get(n).is_some_and(|k| *k > 0)))
    }

    /// Loop frames (`ctx_id` → parent, iteration) of the runs with values.
    fn frames(&self, ctx: &FlorContext) -> Result<Frames, Error> {
        if self.by_run.is_empty() {
            return Ok(HashMap::new());
        }
        let list: Vec<String> = self.by_run.keys().map(|r| sql_str(r)).collect();
        let b = ctx.sql(&format!("SELECT run_id, ctx_id, p_ctx_id, iteration FROM loops WHERE run_id IN ({})", list.join(", ")))?;
        let runs = strings(&b, "run_id")?;
        let u64s = |name: &str| -> Result<Vec<u64>, Error> { Ok(col(&b, name)?.as_primitive::<flor_query::arrow::datatypes::UInt64Type>().values().to_vec()) };
        let (ctxs, parents) = (u64s("ctx_id")?, u64s("p_ctx_id")?);
        let its = col(&b, "iteration")?.as_primitive::<Int64Type>().values().to_vec();
        let mut out = HashMap::new();
        for (((r, c), p), i) in runs.into_iter().zip(ctxs).zip(parents).zip(its) {
            if let Some(r) = r {
                out.insert((r, c), (p, i));
            }
        }
        Ok(out)
    }

    /// Per outer iteration of `run_id`, the values of each name in it (at
    /// any depth below it).
    fn per_iteration(&self, run_id: &str, frames: &Frames) -> BTreeMap<i64, BTreeMap<String, u64>> {
        let mut out: BTreeMap<i64, BTreeMap<String, u64>> = BTreeMap::new();
        let Some(by_ctx) = self.by_run.get(run_id) else { return out };
        for (&ctx, counts) in by_ctx {
            // Walk up to the frame whose parent is the run (0).
            let (mut c, mut outer) = (ctx, None);
            for _ in 0..64 {
                match frames.get(&(run_id.to_owned(), c)) {
                    Some(&(0, it)) => {
                        outer = Some(it);
                        break;
                    }
                    Some(&(p, _)) => c = p,
                    None => break,
                }
            }
            if let Some(it) = outer {
                let e = out.entry(it).or_default();
                for (n, k) in counts {
                    *e.entry(n.clone()).or_default() += k;
                }
            }
        }
        out
    }
}

/// What planning learns from one version of the script, the same for every
/// run of that version (a sweep has many runs of one version): where the
/// statements land and what the position analysis says.
#[derive(Clone)]
struct VersionPlan {
    analysis: Analysis,
    lines: Vec<usize>,
    renamed: Vec<(String, String)>,
}

/// Per commit id, its [`VersionPlan`] (or why it has none), computed once:
/// the runs of one version share it, whichever planning thread asks first
/// computes it and the others wait for it. Below that, per distinct text of
/// the script, the placement itself: a sweep commits a new version per run
/// with the script unchanged, and its text is propagated once, not once per
/// commit (~2 ms each for a short script).
#[derive(Default)]
struct VersionPlans {
    done: Mutex<HashMap<String, Arc<VersionCell>>>,
    by_text: Mutex<HashMap<String, Arc<TextCell>>>,
}

/// A version's plan, computed at most once.
type VersionCell = OnceLock<Result<VersionPlan, String>>;

/// The placement into one text of the script, computed at most once.
type TextCell = OnceLock<Result<VersionPlan, Failure>>;

/// Why statements cannot be placed into a text, without the version's name
/// (texts are shared by versions; [`Failure::in_version`] adds it).
#[derive(Clone)]
enum Failure {
    /// Propagation failed.
    Propagate(String),
    /// The position analysis failed.
    Position(String),
}

impl Failure {
    /// The message for version `short` (12 hex digits of the commit).
    fn in_version(&self, short: &str) -> String {
        match self {
            // As `propagate::Error::in_version` words it.
            Failure::Propagate(m) => format!("old version {short}: {m}"),
            Failure::Position(m) => format!("version {short}: {m}"),
        }
    }
}

impl VersionPlans {
    fn get(&self, root: &Path, filename: &str, new_src: &str, targets: &[Target], commit_id: &str) -> Result<VersionPlan, String> {
        let cell = match self.done.lock() {
            Ok(mut done) => done.entry(commit_id.to_owned()).or_default().clone(),
            Err(_) => return self.plan_version(root, filename, new_src, targets, commit_id),
        };
        cell.get_or_init(|| self.plan_version(root, filename, new_src, targets, commit_id)).clone()
    }

    /// Reads `filename` at `commit_id`, places the statements in it and
    /// analyses where they sit (once per distinct text).
    fn plan_version(&self, root: &Path, filename: &str, new_src: &str, targets: &[Target], commit_id: &str) -> Result<VersionPlan, String> {
        let short = &commit_id[..commit_id.len().min(12)];
        let old = flor_store::versions::read_file(root, commit_id, filename).map_err(|e| e.to_string())?;
        let old = String::from_utf8(old).map_err(|_| format!("{filename} in version {short} is not UTF-8"))?;
        let placed = match self.by_text.lock() {
            Ok(mut by_text) => {
                let cell = by_text.entry(old.clone()).or_default().clone();
                drop(by_text);
                cell.get_or_init(|| place(new_src, &old, targets)).clone()
            }
            Err(_) => place(new_src, &old, targets),
        };
        placed.map_err(|f| f.in_version(short))
    }
}

/// Places the statements into `old` (one version's text of the script)
/// and analyses where they sit.
fn place(new_src: &str, old: &str, targets: &[Target]) -> Result<VersionPlan, Failure> {
    let p = propagate::propagate(new_src, old, targets).map_err(|e| Failure::Propagate(e.to_string()))?;
    let mut lines = Vec::new();
    let mut renamed = Vec::new();
    for pl in &p.placements {
        match &pl.outcome {
            Outcome::Inserted { line, renamed: r, .. } => {
                lines.push(*line);
                renamed.extend(r.iter().cloned());
            }
            Outcome::AlreadyPresent { old_line } => lines.push(*old_line),
        }
    }
    let analysis = position::analyse(&p.text, &lines).map_err(|e| Failure::Position(e.to_string()))?;
    Ok(VersionPlan { analysis, lines, renamed })
}

#[allow(clippy::too_many_arguments)]
fn plan_run(
    root: &Path,
    filename: &str,
    new_src: &str,
    targets: &[Target],
    key: RunKey,
    commit_id: &str,
    versions: &VersionPlans,
    stores: &CheckpointDbs,
) -> Result<RunPlan, String> {
    let VersionPlan { analysis, lines, renamed } = versions.get(root, filename, new_src, targets, commit_id)?;
    let checkpoints = stores.get(root, key).map(|c| c.iterations(analysis.outer_loop.as_deref())).unwrap_or_default();
    Ok(RunPlan {
        key,
        commit_id: commit_id.to_owned(),
        args: serde_json::Map::new(),
        analysis,
        lines,
        renamed,
        iterations: Vec::new(),
        already: 0,
        recorded: BTreeMap::new(),
        skip_rest: false,
        n_iterations: 0,
        checkpoints,
        durations: BTreeMap::new(),
        setup_s: 0.0,
        teardown_s: 0.0,
        estimate_s: 0.0,
    })
}

/// The outer iterations of `key` with a checkpoint of the loop `outer`.
/// A database that cannot be opened (another process holds it) counts as none.
pub fn list_checkpoints(root: &Path, key: RunKey, outer: Option<&str>) -> Vec<i64> {
    CheckpointDbs::default().get(root, key).map(|c| c.iterations(outer)).unwrap_or_default()
}

/// The nearest checkpointed iteration at or before `i`, if any.
pub fn restore_point(checkpoints: &[i64], i: i64) -> Option<i64> {
    checkpoints.iter().rev().copied().find(|c| *c <= i)
}

/// Estimated seconds to replay `rp` on one worker: setup, plus per selected
/// iteration the gap re-executed from the nearest checkpoint, plus the
/// iteration itself (a tenth when the rest of the body is skipped), plus
/// teardown for statements after the loop. Restore time is not modelled.
pub fn estimate(rp: &RunPlan) -> f64 {
    let dur = |i: i64| rp.durations.get(&i).copied().unwrap_or(0.0);
    let mut t = rp.setup_s;
    match rp.analysis.position {
        Position::Prefix => {}
        Position::Suffix => t += rp.teardown_s,
        Position::OuterBody { .. } | Position::Nested => {
            for step in schedule(&rp.iterations, &rp.checkpoints, rp.skip_rest) {
                t += match step {
                    Step::Restore(_) => 0.0,
                    Step::Gap(g) => dur(g),
                    Step::Selected(i) => if rp.skip_rest { dur(i) * 0.1 } else { dur(i) },
                };
            }
        }
    }
    t
}

/// One step of a replay worker's outer loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Restore the checkpoint taken at the end of this iteration.
    Restore(i64),
    /// Run this iteration whole with logging off (state only).
    Gap(i64),
    /// Run this iteration with the new statements recording.
    Selected(i64),
}

/// The order in which a worker restores checkpoints and runs iterations to
/// replay `selected` (sorted, 0-based), given the checkpointed iterations.
/// The Python package follows the same rule (`flordb/replay.py`).
pub fn schedule(selected: &[i64], checkpoints: &[i64], skip_rest: bool) -> Vec<Step> {
    let mut out = Vec::new();
    let mut state: Option<i64> = Some(-1); // the iteration whose end state is live; None = dirty
    for &i in selected {
        let target = i - 1;
        if state != Some(target) {
            if let Some(c) = restore_point(checkpoints, target) {
                if state.is_none_or(|s| c > s) {
                    out.push(Step::Restore(c));
                    state = Some(c);
                }
            }
            let from = state.unwrap_or(-1);
            for g in (from + 1)..i {
                out.push(Step::Gap(g));
            }
        }
        out.push(Step::Selected(i));
        state = if skip_rest { None } else { Some(i) };
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn schedule_restores_the_nearest_checkpoint_and_fills_gaps() {
        use Step::*;
        // Every epoch checkpointed, skipping the rest: restore before each.
        assert_eq!(schedule(&[0, 1, 2], &[0, 1, 2], true), vec![Selected(0), Restore(0), Selected(1), Restore(1), Selected(2)]);
        // Whole iterations run on from each other.
        assert_eq!(schedule(&[0, 1, 2], &[0, 1, 2], false), vec![Selected(0), Selected(1), Selected(2)]);
        // --iterations 1,4 with checkpoints every 2nd epoch (1, 3, 5).
        assert_eq!(schedule(&[1, 4], &[1, 3, 5], false), vec![Gap(0), Selected(1), Restore(3), Selected(4)]);
        assert_eq!(schedule(&[4], &[1, 3], true), vec![Restore(3), Selected(4)]);
        // No checkpoints: run from the start.
        assert_eq!(schedule(&[2], &[], false), vec![Gap(0), Gap(1), Selected(2)]);
    }

    /// Commits `files` (path, text) on top of HEAD in `repo`; the commit id.
    fn commit(repo: &git2::Repository, files: &[(&str, &str)]) -> String {
        let root = repo.workdir().unwrap().to_path_buf();
        let mut index = repo.index().unwrap();
        for (path, text) in files {
            std::fs::write(root.join(path), text).unwrap();
            index.add_path(Path::new(path)).unwrap();
        }
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, "v", &tree, &parents).unwrap().to_string()
    }

    /// A sweep commits one text many times: it is placed once, and each
    /// version's failure still names that version.
    #[test]
    fn a_text_committed_many_times_is_placed_once_and_errors_name_each_version() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path()).unwrap();
        let old = include_str!("../tests/corpus/19_target_without_counterpart/old.py");
        let new = include_str!("../tests/corpus/19_target_without_counterpart/new.py");
        let c1 = commit(&repo, &[("train.py", old)]);
        let c2 = commit(&repo, &[("notes.txt", "same script, another run")]);
        let c3 = commit(&repo, &[("train.py", &format!("{old}# edited\n"))]);
        let targets = vec![Target::Name("val_loss".into())];
        let plans = VersionPlans::default();
        for c in [&c1, &c2, &c3, &c1] {
            let err = plans.get(dir.path(), "train.py", new, &targets, c).err().unwrap();
            assert!(err.starts_with(&format!("old version {}: cannot place `flor.log(\"val_loss\"", &c[..12])), "{err}");
        }
        assert_eq!(plans.by_text.lock().unwrap().len(), 2);
        assert_eq!(plans.done.lock().unwrap().len(), 3);
    }

    fn counts(its: &[(i64, &[(&str, u64)])]) -> BTreeMap<i64, BTreeMap<String, u64>> {
        its.iter().map(|(i, c)| (*i, c.iter().map(|(n, k)| ((*n).to_owned(), *k)).collect())).collect()
    }

    #[test]
    fn only_iterations_without_every_name_run_again() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let all: Vec<i64> = (0..6).collect();
        // A worker killed in iteration 3 left 0-2; iteration 4 has only "a".
        let per_it = counts(&[(0, &[("a", 1), ("b", 1)]), (1, &[("a", 1), ("b", 1)]), (2, &[("a", 1), ("b", 1)]), (4, &[("a", 1)])]);
        assert_eq!(select_missing(&all, &names, &per_it, false), (vec![3, 4, 5], 3));
        // In a nested loop, iteration 2 may hold only its first values: run again.
        assert_eq!(select_missing(&all, &names, &per_it, true), (vec![2, 3, 4, 5], 2));
        // Nothing missing; a selection of iterations counts only those.
        let full = counts(&(0..6).map(|i| (i, &[("a", 2u64), ("b", 1u64)][..])).collect::<Vec<_>>());
        assert_eq!(select_missing(&all, &names, &full, true), (vec![], 6));
        assert_eq!(select_missing(&[1, 4], &names, &per_it, true), (vec![4], 1));
        assert_eq!(select_missing(&all, &names, &BTreeMap::new(), false), (all.clone(), 0));
    }
}
