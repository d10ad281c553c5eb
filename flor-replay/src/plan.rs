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
use flor_store::checkpoint::CheckpointStore;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

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
    /// Outer iterations to run with the new statements on (0-based, sorted).
    pub iterations: Vec<i64>,
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
    let ctx = FlorContext::open(&req.project)?;
    let store = flor_store::store::Store::open(&req.project)?;
    let root = store.root().to_path_buf();
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

    // Which runs already hold the names.
    let have = ctx.sql("SELECT DISTINCT run_id, value_name FROM logs")?;
    let have: HashSet<(String, String)> = strings(&have, "run_id")?
        .into_iter()
        .zip(strings(&have, "value_name")?)
        .filter_map(|(r, n)| Some((r?, n?)))
        .collect();
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
    };
    for i in 0..ts.len() {
        if run_files[i].as_deref() != Some(filename.as_str()) {
            continue;
        }
        let Some(run_id) = ids[i].clone() else { continue };
        let key = RunKey { tstamp: ts[i], run_id: u64::from_str_radix(&run_id, 16).map_err(|_| Error::Internal(format!("bad run id {run_id}")))? };
        if allowed.as_ref().is_some_and(|a| !a.contains(&ts[i])) {
            continue;
        }
        if req.names.iter().all(|n| have.contains(&(run_id.clone(), n.clone()))) {
            out.up_to_date += 1;
            continue;
        }
        let Some(commit_id) = commit_of.get(&run_id).cloned() else {
            out.unplannable.push(Unplannable { key, commit_id: None, reason: "no git snapshot of this run".into() });
            continue;
        };
        match plan_run(&root, &filename, &new_src, &targets, key, &commit_id, req) {
            Ok(mut rp) => {
                rp.args = args[i].as_deref().and_then(|a| serde_json::from_str(a).ok()).unwrap_or_default();
                rp.durations = durations.remove(&run_id).unwrap_or_default();
                rp.n_iterations = rp.durations.keys().max().map_or(0, |m| m + 1);
                rp.setup_s = setup[i].unwrap_or(0.0);
                rp.teardown_s = teardown[i].unwrap_or(0.0);
                rp.iterations = match &req.iterations {
                    Some(sel) => sel.iter().copied().filter(|it| (0..rp.n_iterations).contains(it)).collect(),
                    None => (0..rp.n_iterations).collect(),
                };
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
    Ok(out)
}

fn plan_run(root: &Path, filename: &str, new_src: &str, targets: &[Target], key: RunKey, commit_id: &str, _req: &Request) -> Result<RunPlan, String> {
    let short = &commit_id[..commit_id.len().min(12)];
    let old = flor_store::versions::read_file(root, commit_id, filename).map_err(|e| e.to_string())?;
    let old = String::from_utf8(old).map_err(|_| format!("{filename} in version {short} is not UTF-8"))?;
    let p = propagate::propagate(new_src, &old, targets).map_err(|e| e.in_version(short).to_string())?;
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
    let analysis = position::analyse(&p.text, &lines).map_err(|e| format!("version {short}: {e}"))?;
    let checkpoints = list_checkpoints(root, key, analysis.outer_loop.as_deref());
    Ok(RunPlan {
        key,
        commit_id: commit_id.to_owned(),
        args: serde_json::Map::new(),
        analysis,
        lines,
        renamed,
        iterations: Vec::new(),
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
    let dir = flor_store::checkpoint::run_dir(&root.join(".flor"), &key.file_stem());
    if !dir.exists() {
        return Vec::new();
    }
    let Ok(store) = CheckpointStore::open(&root.join(".flor"), &key.file_stem()) else { return Vec::new() };
    let mut its: Vec<i64> = store
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.loop_path.len() == 1 && outer.is_none_or(|o| c.loop_path[0].0 == o))
        .map(|c| c.loop_path[0].1)
        .collect();
    its.sort_unstable();
    its.dedup();
    let _ = store.close();
    its
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
}
