//! [`Flor`]: the recording API in Rust (DESIGN.md §5), the same calls the
//! Python package makes through the C ABI.

use flor_core::args::{cast, Kwargs};
use flor_core::{Recorder, RunKey, Source, Value};
use flor_store::segment::Manifest;
use flor_store::store::{RunWriter, Scan, Store, WriterOptions};
use flor_store::versions::{self, Snapshot};
use flor_store::wal::RunSummary;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Errors of the facade: the layers' errors, unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input to the recording runtime (empty name, bad `--kwargs` value,
    /// loop calls out of order).
    #[error(transparent)]
    Core(#[from] flor_core::Error),
    /// A storage error (I/O, corruption, git); see [`flor_store::Error`].
    #[error(transparent)]
    Store(#[from] flor_store::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a [`Flor`] records.
#[derive(Debug, Clone)]
pub struct Options {
    /// The script's path relative to the repository root (`filename` column).
    /// Default: the running executable's file name.
    pub filename: Option<String>,
    /// The command line to read `--kwargs` from (default: `std::env::args`).
    pub argv: Option<Vec<String>>,
    /// WAL flush interval and batching.
    pub writer: WriterOptions,
    /// Largest file put into a git snapshot, bytes (default 10 MiB).
    pub size_limit: u64,
    /// `Forward`, or `Replay` to add records to the existing run `replay_of`.
    pub source: Source,
    /// The run a replay adds to (required with `Source::Replay`).
    pub replay_of: Option<RunKey>,
    /// Commit a git snapshot per run (default true; replay writers never do).
    pub snapshot: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            filename: None,
            argv: None,
            writer: WriterOptions::default(),
            size_limit: versions::DEFAULT_SIZE_LIMIT,
            source: Source::Forward,
            replay_of: None,
            snapshot: true,
        }
    }
}

/// What [`Flor::commit`] sealed.
#[derive(Debug)]
pub struct Committed {
    /// The manifest of the sealed segments.
    pub manifest: Manifest,
    /// The git snapshot, when one was made.
    pub snapshot: Option<Snapshot>,
}

struct Level {
    ctx: Option<(u64, Instant)>,
}

struct Inner {
    recorder: Recorder,
    writer: Option<RunWriter>,
    run_started: Instant,
    setup_s: Option<f64>,
    outer_end: Option<Instant>,
    levels: Vec<Level>,
    args: serde_json::Map<String, serde_json::Value>,
    kwargs: Kwargs,
}

/// A recording session of one script in one project (a sequence of runs:
/// each [`Flor::commit`] seals the current run; the next record starts a new
/// `tstamp`). Thread-safe; `log` takes one mutex.
///
/// Nothing is created on disk until the first record: a program that only
/// queries makes no run and no commit. Dropping a `Flor` commits.
pub struct Flor {
    store: Store,
    opts: Options,
    filename: String,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Flor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flor").field("root", &self.store.root()).field("filename", &self.filename).finish()
    }
}

fn to_json(v: &Value) -> serde_json::Value {
    match v {
        Value::Int(i) => (*i).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f).map(serde_json::Value::Number).unwrap_or_else(|| flor_core::value::format_float(*f).into()),
        Value::Bool(b) => (*b).into(),
        Value::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| s.clone().into()),
        Value::Str(s) | Value::Repr(s) => s.clone().into(),
    }
}

impl Flor {
    /// Opens the project containing `dir` with default [`Options`].
    ///
    /// # Errors
    /// [`Error::Store`] when `dir` does not exist; a bad `--kwargs` item on
    /// the command line is [`Error::Core`]. Recording outside a git
    /// repository fails at the first record with
    /// [`flor_store::Error::NotARepository`], which says how to fix it.
    pub fn open(dir: impl AsRef<Path>) -> Result<Flor> {
        Flor::open_with(dir, Options::default())
    }

    /// Opens the project containing `dir` with `opts`.
    ///
    /// # Errors
    /// As [`Flor::open`].
    pub fn open_with(dir: impl AsRef<Path>, opts: Options) -> Result<Flor> {
        let store = Store::open(dir.as_ref())?;
        let filename = opts.filename.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "main".into())
        });
        let argv = opts.argv.clone().unwrap_or_else(|| std::env::args().collect());
        let kwargs = Kwargs::parse(argv)?;
        let inner = Inner {
            recorder: Recorder::new(),
            writer: None,
            run_started: Instant::now(),
            setup_s: None,
            outer_end: None,
            levels: Vec::new(),
            args: serde_json::Map::new(),
            kwargs,
        };
        Ok(Flor { store, opts, filename, inner: Mutex::new(inner) })
    }

    /// The store this session writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The `filename` recorded for this script.
    pub fn filename(&self) -> &str {
        &self.filename
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writer<'a>(&self, inner: &'a mut Inner) -> Result<&'a RunWriter> {
        if inner.writer.is_none() {
            let w = self.store.begin_run(&self.filename, self.opts.source, self.opts.replay_of, self.opts.writer.clone())?;
            inner.run_started = Instant::now();
            inner.setup_s = None;
            inner.outer_end = None;
            // A new run starts with every name interned so far.
            for (id, n) in inner.recorder.names().iter().enumerate() {
                w.push_name(id as u32, n);
            }
            inner.writer = Some(w);
        }
        inner.writer.as_ref().ok_or_else(|| Error::Store(flor_store::Error::Poisoned("no writer".into())))
    }

    /// The current run, once anything has been recorded in it.
    pub fn run(&self) -> Option<RunKey> {
        self.lock().writer.as_ref().map(|w| w.meta().key)
    }

    /// Logs `value` under `name` in the current loop context.
    ///
    /// Durable against a process kill within the flush interval (100 ms).
    ///
    /// # Errors
    /// [`flor_core::Error::EmptyName`] for an empty name; storage errors when
    /// the run cannot be started (e.g. outside a git repository).
    pub fn log(&self, name: &str, value: impl Into<Value>) -> Result<()> {
        let mut g = self.lock();
        let inner = &mut *g;
        let before = inner.recorder.names().len();
        let id = inner.recorder.intern(name)?;
        let record = inner.recorder.record(id, value.into());
        let new = inner.recorder.names().len() > before && inner.writer.is_some();
        let w = self.writer(inner)?;
        w.push(if new { Some((id, name)) } else { None }, record);
        Ok(())
    }

    /// The value of argument `name`: `--kwargs name=…` cast to the type of
    /// `default`, else `default`. Logged at the current context and kept in
    /// the run's `args`.
    ///
    /// # Errors
    /// [`flor_core::Error::BadArg`] naming the argument when the text does
    /// not parse as the default's type; as [`Flor::log`].
    pub fn arg(&self, name: &str, default: impl Into<Value>) -> Result<Value> {
        let default = default.into();
        let v = {
            let g = self.lock();
            match g.kwargs.values.get(name) {
                Some(text) => cast(name, text, &default)?,
                None => default,
            }
        };
        self.log(name, v.clone())?;
        self.lock().args.insert(name.to_owned(), to_json(&v));
        Ok(v)
    }

    /// Opens the loop `name` (see [`Flor::iteration`], [`Flor::loop_exit`];
    /// [`Flor::loop_iter`] does all three).
    ///
    /// # Errors
    /// [`flor_core::Error::EmptyLoopName`].
    pub fn loop_enter(&self, name: &str) -> Result<()> {
        let mut g = self.lock();
        g.recorder.loop_enter(name)?;
        g.levels.push(Level { ctx: None });
        Ok(())
    }

    /// Starts iteration `index` (0-based) of the innermost open loop, ending
    /// the previous one (its wall time goes to `loops.duration_s`). `value`
    /// is the iterated value's text when it differs from the index.
    ///
    /// # Errors
    /// [`flor_core::Error::LoopMisuse`] with no open loop; storage errors as
    /// [`Flor::log`].
    pub fn iteration(&self, index: i64, value: Option<String>) -> Result<()> {
        let mut g = self.lock();
        let inner = &mut *g;
        let now = Instant::now();
        let outer = inner.levels.len() == 1;
        if outer && inner.setup_s.is_none() && inner.writer.is_some() {
            inner.setup_s = Some((now - inner.run_started).as_secs_f64());
        }
        let prev = inner.levels.last_mut().and_then(|l| l.ctx.take());
        let frame = inner.recorder.iteration(index, value)?;
        let ctx = frame.ctx_id;
        let fresh = inner.writer.is_none();
        let w = self.writer(inner)?;
        if let Some((c, t)) = prev {
            w.push_frame_end(c, (now - t).as_secs_f64());
        }
        w.push_frame(frame);
        if fresh && outer {
            inner.setup_s = Some((now - inner.run_started).as_secs_f64());
        }
        if let Some(l) = inner.levels.last_mut() {
            l.ctx = Some((ctx, Instant::now()));
        }
        Ok(())
    }

    /// Closes the innermost loop, which must be `name`.
    ///
    /// # Errors
    /// [`flor_core::Error::LoopMisuse`] when another loop is innermost.
    pub fn loop_exit(&self, name: &str) -> Result<()> {
        let mut g = self.lock();
        let inner = &mut *g;
        inner.recorder.loop_exit(name)?;
        let level = inner.levels.pop();
        let now = Instant::now();
        if let (Some(Level { ctx: Some((c, t)), .. }), Some(w)) = (level, inner.writer.as_ref()) {
            w.push_frame_end(c, (now - t).as_secs_f64());
        }
        if inner.levels.is_empty() {
            inner.outer_end = Some(now);
        }
        Ok(())
    }

    /// Iterates `iter` as the named loop: each item is one iteration
    /// (0-based index), records inside attach to it.
    pub fn loop_iter<I: IntoIterator>(&self, name: &str, iter: I) -> LoopIter<'_, I::IntoIter> {
        let open = self.loop_enter(name);
        LoopIter { flor: self, name: name.to_owned(), iter: iter.into_iter(), index: 0, error: open.err(), done: false }
    }

    /// The current loop path, outermost first: `(loop name, 0-based iteration)`.
    pub fn loop_path(&self) -> Vec<(String, i64)> {
        self.lock().recorder.loop_path()
    }

    /// Everything recorded by this session's current, unsealed run, as a
    /// [`Scan`] (so the process's own queries see it).
    ///
    /// # Errors
    /// Storage errors from the writer thread.
    pub fn pending(&self) -> Result<Scan> {
        let g = self.lock();
        let Some(w) = g.writer.as_ref() else { return Ok(Scan::default()) };
        let data = w.snapshot()?;
        Ok(Scan {
            logs: vec![data.logs_batch()?],
            loops: vec![data.loops_batch()?],
            runs: vec![data.runs_batch(flor_store::segment::RunStatus::Committed, flor_core::run::now_micros())?],
            damaged: Vec::new(),
        })
    }

    /// Writes pending records to the WAL and fsyncs it.
    ///
    /// # Errors
    /// Storage errors.
    pub fn flush(&self) -> Result<()> {
        match self.lock().writer.as_ref() {
            Some(w) => Ok(w.flush()?),
            None => Ok(()),
        }
    }

    /// Seals the current run into Parquet segments, commits its code
    /// snapshot to `flor.<branch>`, and ends the run: the next record starts
    /// a new `tstamp`. Returns `None` when nothing was recorded since the
    /// last commit.
    ///
    /// Durability: once this returns, the run is sealed and fsynced.
    ///
    /// # Errors
    /// Storage errors; a failed seal leaves the WAL, recovered as an
    /// interrupted run on the next open.
    pub fn commit(&self) -> Result<Option<Committed>> {
        let mut g = self.lock();
        let Some(w) = g.writer.take() else { return Ok(None) };
        let now = Instant::now();
        let summary = RunSummary {
            setup_s: g.setup_s,
            teardown_s: g.outer_end.map(|t| (now - t).as_secs_f64()),
            wall_s: Some((now - g.run_started).as_secs_f64()),
            args: serde_json::Value::Object(g.args.clone()).to_string(),
        };
        g.recorder.reset_loops();
        g.levels.clear();
        drop(g);
        let meta = w.meta().clone();
        let snapshotting = self.opts.snapshot && self.opts.source == Source::Forward;
        // The seal hands each segment's bytes over as it writes them: they
        // become git blobs there, on the seal's threads, not read back later.
        let blobs = std::sync::Arc::new(versions::Blobs::default());
        let manifest = if snapshotting {
            let (b, root) = (std::sync::Arc::clone(&blobs), self.store.root().to_path_buf());
            w.seal_with(summary, Box::new(move |rel: &str, bytes: &[u8]| b.write(&root, rel, bytes)))?
        } else {
            w.seal(summary)?
        };
        let snapshot = if snapshotting {
            let snap = versions::snapshot_with(self.store.root(), &meta, self.opts.size_limit, &blobs)?;
            warn_skipped(&snap, self.opts.size_limit);
            Some(snap)
        } else {
            None
        };
        Ok(Some(Committed { manifest, snapshot }))
    }
}

/// Says on stderr which files the snapshot left out.
fn warn_skipped(snap: &Snapshot, limit: u64) {
    let mut ignored = Vec::new();
    for s in &snap.skipped {
        match s.reason {
            versions::SkipReason::TooLarge(n) => eprintln!(
                "flordb: warning: {} ({n} bytes) is over the snapshot size limit ({limit} bytes) and was not committed to {}",
                s.path, snap.shadow_branch
            ),
            versions::SkipReason::Ignored => ignored.push(s.path.as_str()),
        }
    }
    if !ignored.is_empty() {
        let shown: Vec<_> = ignored.iter().take(3).copied().collect();
        let more = if ignored.len() > 3 { format!(" and {} more", ignored.len() - 3) } else { String::new() };
        eprintln!("flordb: warning: git-ignored paths left out of the snapshot: {}{more}", shown.join(", "));
    }
}

impl Drop for Flor {
    fn drop(&mut self) {
        if let Err(e) = self.commit() {
            eprintln!("flordb: commit at exit failed: {e}");
        }
    }
}

/// The iterator returned by [`Flor::loop_iter`]. Dropping it (or `break`)
/// closes the loop.
pub struct LoopIter<'a, I> {
    flor: &'a Flor,
    name: String,
    iter: I,
    index: i64,
    error: Option<Error>,
    done: bool,
}

impl<I> LoopIter<'_, I> {
    /// The first error met while recording the loop (an iterator cannot
    /// return it from `next`); `None` when all went well.
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }
}

impl<I: Iterator> Iterator for LoopIter<'_, I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        if self.done {
            return None;
        }
        match self.iter.next() {
            Some(item) => {
                if let Err(e) = self.flor.iteration(self.index, None) {
                    self.error.get_or_insert(e);
                }
                self.index += 1;
                Some(item)
            }
            None => {
                self.done = true;
                if let Err(e) = self.flor.loop_exit(&self.name) {
                    self.error.get_or_insert(e);
                }
                None
            }
        }
    }
}

impl<I> Drop for LoopIter<'_, I> {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.flor.loop_exit(&self.name);
        }
    }
}
