//! A scripted run for tests: drives flor-core's `Recorder` the way the
//! facade does and seals through flor-store's segment writer, so the tables
//! the tests read went through the real record path (Parquet on disk).

use flor_core::{LoopFrame, Recorder, RunKey, Source, Value};
use flor_query::arrow::array::RecordBatch;
use flor_query::arrow::util::pretty::pretty_format_batches;
use flor_query::FlorContext;
use flor_store::segment::{self, RunData, RunStatus};
use flor_store::wal::{Batch, RunMeta, RunSummary};
use std::path::Path;

/// Base tstamp of the test runs: 2023-11-14T22:13:20 UTC, in µs.
pub const T0: i64 = 1_700_000_000_000_000;

/// One run of one script being recorded.
pub struct Run {
    rec: Recorder,
    meta: RunMeta,
    batch: Batch,
}

impl Run {
    /// A forward run of `filename` at `T0 + secs` seconds, run id `id`.
    pub fn new(filename: &str, secs: i64, id: u64) -> Run {
        Run::with(filename, T0 + secs * 1_000_000, id, Source::Forward)
    }

    /// A replay writer adding to the run `(T0 + secs, id)`.
    pub fn replay(filename: &str, secs: i64, id: u64) -> Run {
        Run::with(filename, T0 + secs * 1_000_000, id, Source::Replay)
    }

    fn with(filename: &str, tstamp: i64, id: u64, source: Source) -> Run {
        let meta = RunMeta {
            projid: "proj".into(),
            filename: filename.into(),
            key: RunKey { tstamp, run_id: id },
            source,
            writer: id ^ (source as u64 + 1),
        };
        Run { rec: Recorder::new(), meta, batch: Batch::default() }
    }

    /// `log(name, value)`.
    pub fn log(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        let before = self.rec.names().len();
        let id = self.rec.intern(name).expect("a test name");
        if self.rec.names().len() > before {
            self.batch.names.push((id, name.to_owned()));
        }
        self.batch.records.push(self.rec.record(id, value.into()));
        self
    }

    /// Opens loop `name`.
    pub fn enter(&mut self, name: &str) -> &mut Self {
        self.rec.loop_enter(name).expect("a test loop");
        self
    }

    /// Starts iteration `i` (with its value's text when not the index).
    pub fn iter(&mut self, i: i64, value: Option<&str>) -> &mut Self {
        let f: LoopFrame = self.rec.iteration(i, value.map(str::to_owned)).expect("an open loop");
        self.batch.frame_ends.push((f.ctx_id, 0.5));
        self.batch.frames.push(f);
        self
    }

    /// Closes loop `name`.
    pub fn exit(&mut self, name: &str) -> &mut Self {
        self.rec.loop_exit(name).expect("the innermost loop");
        self
    }

    /// The run as sealed data.
    pub fn data(&self) -> RunData {
        let summary = (self.meta.source == Source::Forward).then(|| RunSummary { args: "{}".into(), ..Default::default() });
        RunData { meta: self.meta.clone(), batch: self.batch.clone(), summary }
    }

    /// The run's identity.
    pub fn meta(&self) -> &RunMeta {
        &self.meta
    }

    /// Seals the run into `dir/.flor` (Parquet segments + manifest).
    pub fn seal(&self, dir: &Path) {
        segment::seal(&dir.join(".flor"), &self.data(), RunStatus::Committed, self.meta.key.tstamp + 1_000_000)
            .expect("seal a test run");
    }
}

/// Seals `runs` into a fresh directory and opens a context on it.
pub fn project(runs: &[&Run]) -> (tempfile::TempDir, FlorContext) {
    let dir = tempfile::tempdir().expect("a temp dir");
    for r in runs {
        r.seal(dir.path());
    }
    let ctx = FlorContext::open(dir.path()).expect("open the project");
    assert!(ctx.damaged().is_empty(), "{:?}", ctx.damaged());
    (dir, ctx)
}

/// The batch pretty-printed, one string per line.
pub fn table(b: &RecordBatch) -> Vec<String> {
    pretty_format_batches(std::slice::from_ref(b)).expect("format").to_string().lines().map(str::to_owned).collect()
}

/// Asserts that `b` prints as `expected` (lines, trimmed of indentation).
#[track_caller]
pub fn assert_table(b: &RecordBatch, expected: &str) {
    let want: Vec<String> = expected.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    let got = table(b);
    assert_eq!(got, want, "\ngot:\n{}\n", got.join("\n"));
}

/// Like [`project`], inside a fresh git repository with `train.py`, each
/// run followed by its code snapshot on `flor.main`; returns the commit ids.
pub fn git_project(runs: &[&Run]) -> (tempfile::TempDir, FlorContext, Vec<String>) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git").args(args).current_dir(dir.path()).output().expect("git");
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q", "-b", "main"]);
    let mut commits = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        std::fs::write(dir.path().join(&r.meta.filename), format!("# version {i}\n")).expect("write a script");
        r.seal(dir.path());
        let snap = flor_store::versions::snapshot(dir.path(), &r.meta, flor_store::versions::DEFAULT_SIZE_LIMIT).expect("snapshot");
        commits.push(snap.commit_id);
    }
    let ctx = FlorContext::open(dir.path()).expect("open the project");
    assert!(ctx.damaged().is_empty(), "{:?}", ctx.damaged());
    (dir, ctx, commits)
}
