//! The project store in `.flor/`: open (with recovery), the background run
//! writer, seal, scan (DESIGN.md §6, docs/FORMAT.md).
//!
//! Concurrency: every writing process writes only files named after its own
//! run and writer id, so any number of processes (pipeline stages, sweeps,
//! replay workers) can write one project at once; readers trust only
//! manifests, which are published last.

use crate::error::IoContext;
use crate::segment::{self, Manifest, RunData, RunStatus, SealedBatch};
use crate::wal::{self, Batch, RunMeta, RunSummary, WalEntry, WalWriter};
use crate::{Error, Result};
use arrow::array::RecordBatch;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use flor_core::{LoopFrame, Record, RunKey, Source};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// Contents of `.flor/.gitignore`: the WAL and checkpoints stay out of git;
/// sealed segments and manifests go in.
pub const FLOR_GITIGNORE: &str = "wal/\ncheckpoints/\n*.tmp.*\n";

/// An open project store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    flor_dir: PathBuf,
    projid: String,
    in_repo: bool,
    recovered: Vec<Manifest>,
    recovery_errors: Vec<Error>,
}

/// Everything sealed in a project, per table, as batches of type `B`
/// ([`Scan`]: Arrow batches; [`SealedScan`]: batches as stored).
#[derive(Debug, Clone)]
pub struct Tables<B> {
    /// `logs` batches ([`crate::schema::logs`]).
    pub logs: Vec<B>,
    /// `loops` batches ([`crate::schema::loops`]).
    pub loops: Vec<B>,
    /// `runs` batches ([`crate::schema::runs`]).
    pub runs: Vec<B>,
    /// Files that failed their checksum or did not decode: skipped, named here.
    pub damaged: Vec<Arc<Error>>,
}

impl<B> Default for Tables<B> {
    fn default() -> Self {
        Tables { logs: Vec::new(), loops: Vec::new(), runs: Vec::new(), damaged: Vec::new() }
    }
}

impl<B> Tables<B> {
    /// Appends another scan's batches and damage reports.
    pub fn extend(&mut self, other: Tables<B>) {
        self.logs.extend(other.logs);
        self.loops.extend(other.loops);
        self.runs.extend(other.runs);
        self.damaged.extend(other.damaged);
    }
}

/// Everything sealed in a project, as Arrow batches per table.
pub type Scan = Tables<RecordBatch>;

/// Everything sealed in a project, as stored: [`SealedBatch`]es per table,
/// the constant columns not built (see [`Store::scan_sealed`]).
pub type SealedScan = Tables<SealedBatch>;

impl SealedScan {
    /// The batches with every column of their table ([`SealedBatch::full`]).
    ///
    /// # Errors
    /// [`Error::Format`] when a batch's columns are not its table's (cannot
    /// happen for batches read by [`Store::scan_sealed`]).
    pub fn into_full(self) -> Result<Scan> {
        let full = |bs: Vec<SealedBatch>, schema: arrow::datatypes::SchemaRef, what: &str| {
            bs.iter()
                .map(|b| b.full(&schema, what))
                .collect::<Result<Vec<_>>>()
        };
        Ok(Scan {
            logs: full(self.logs, crate::schema::logs(), "logs")?,
            loops: full(self.loops, crate::schema::loops(), "loops")?,
            runs: full(self.runs, crate::schema::runs(), "runs")?,
            damaged: self.damaged,
        })
    }
}

/// Options of a [`RunWriter`].
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// How often pending records are appended to the WAL (default 100 ms):
    /// a killed process loses at most this much.
    pub flush_interval: Duration,
    /// Records buffered before the logging thread hands a batch to the
    /// writer thread itself (default 16,384); at most one such batch waits
    /// to be written, then the logging thread waits (bounded memory, and a
    /// bounded lag behind the WAL).
    pub batch_records: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            flush_interval: Duration::from_millis(100),
            batch_records: 1 << 14,
        }
    }
}

impl Store {
    /// Opens the store of the project containing `dir`.
    ///
    /// The project root is the enclosing git repository's work tree, or `dir`
    /// itself outside a repository (reading needs no repository). Opening
    /// recovers the WAL of every dead writer into a sealed, `interrupted` run
    /// (see [`Store::recovered`]); it creates nothing when there is nothing
    /// to recover.
    ///
    /// # Errors
    /// [`Error::Io`] when `dir` does not exist. Recovery problems do not fail
    /// the open; they are listed by [`Store::recovery_errors`].
    pub fn open(dir: &Path) -> Result<Store> {
        let dir = dir.canonicalize().at(dir)?;
        let (root, in_repo) = match git2::Repository::discover(&dir) {
            Ok(repo) => match repo.workdir() {
                Some(w) => (w.canonicalize().at(w)?, true),
                None => (dir.clone(), false),
            },
            Err(_) => (dir.clone(), false),
        };
        let projid = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        let flor_dir = root.join(".flor");
        let mut store = Store {
            root,
            flor_dir,
            projid,
            in_repo,
            recovered: Vec::new(),
            recovery_errors: Vec::new(),
        };
        store.recover();
        Ok(store)
    }

    /// The project root (repository work tree).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/.flor`.
    pub fn flor_dir(&self) -> &Path {
        &self.flor_dir
    }

    /// The project id: the root directory's name.
    pub fn projid(&self) -> &str {
        &self.projid
    }

    /// Whether the root is a git work tree (required for recording).
    pub fn in_repo(&self) -> bool {
        self.in_repo
    }

    /// Runs recovered from dead writers' WALs by [`Store::open`].
    pub fn recovered(&self) -> &[Manifest] {
        &self.recovered
    }

    /// Problems met during recovery (a corrupt WAL is named here and kept
    /// as `<name>.corrupt`; its intact prefix is still recovered).
    pub fn recovery_errors(&self) -> &[Error] {
        &self.recovery_errors
    }

    fn recover(&mut self) {
        let wal_dir = self.flor_dir.join("wal");
        let Ok(entries) = std::fs::read_dir(&wal_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("wal") => {}
                // Still being created, unless unlocked and over a minute old.
                Some("new") if is_stale(&path) => {}
                _ => continue,
            }
            match self.recover_one(&path) {
                Ok(Some(m)) => self.recovered.push(m),
                Ok(None) => {}
                Err(e) => self.recovery_errors.push(e),
            }
        }
    }

    fn recover_one(&self, path: &Path) -> Result<Option<Manifest>> {
        let Some(file) = wal::claim(path)? else {
            return Ok(None);
        }; // its writer is alive
        let rec = wal::read_wal(path, &file)?;
        let Some(meta) = rec.meta else {
            std::fs::remove_file(path).at(path)?; // torn before Begin: nothing acknowledged
            return Ok(None);
        };
        let stem = meta.stem();
        let manifest = if segment::manifest_path(&self.flor_dir, &stem).exists() {
            None // sealed before the crash; only the WAL removal was lost
        } else {
            let parts = segment::RunParts {
                meta: &meta,
                batches: &rec.batches,
                summary: rec.summary.as_ref(),
            };
            let m = segment::seal_with(
                &self.flor_dir,
                parts,
                RunStatus::Interrupted,
                flor_core::run::now_micros(),
                &|_, _| Ok(()),
            )?;
            Some(m)
        };
        if let Some((offset, detail)) = rec.corruption {
            let kept = path.with_extension("wal.corrupt");
            std::fs::rename(path, &kept).at(path)?;
            return Err(Error::Corrupt {
                path: path.into(),
                offset,
                detail: format!(
                    "{detail}; the prefix before it was recovered, the file kept as {}",
                    kept.display()
                ),
            });
        }
        std::fs::remove_file(path).at(path)?;
        drop(file);
        Ok(manifest)
    }

    /// Reads every sealed segment (in parallel), verifying checksums. A
    /// damaged file is skipped and reported in [`Scan::damaged`]; the rest
    /// stays readable.
    ///
    /// # Errors
    /// [`Error::Io`] only when the manifests directory exists but cannot be listed.
    pub fn scan(&self) -> Result<Scan> {
        self.scan_sealed(&["logs", "loops", "runs"])?.into_full()
    }

    /// Reads the sealed files of the tables named in `tables` (`logs`,
    /// `loops`, `runs`; the others' files are not opened), in parallel, one
    /// thread per core (at most 8), verifying checksums, and leaves their
    /// constant columns out ([`SealedBatch`]): what a reader that needs only
    /// the stored columns uses. Damage is reported as by [`Store::scan`].
    ///
    /// # Errors
    /// [`Error::Io`] only when the manifests directory exists but cannot be listed.
    pub fn scan_sealed(&self, tables: &[&str]) -> Result<SealedScan> {
        let dir = self.flor_dir.join("manifests");
        let mut paths: Vec<PathBuf> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SealedScan::default()),
            Err(e) => {
                return Err(Error::Io {
                    path: dir,
                    source: e,
                })
            }
        };
        paths.sort();
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8)
            .min(paths.len().max(1));
        let chunk = paths.len().div_ceil(threads).max(1);
        let seg_dir = self.flor_dir.join("segments");
        let parts: Vec<SealedScan> = std::thread::scope(|s| {
            let handles: Vec<_> = paths
                .chunks(chunk)
                .map(|part| {
                    let seg_dir = &seg_dir;
                    s.spawn(move || {
                        let mut out = SealedScan::default();
                        // One file buffer per thread, reused file after file.
                        let mut scratch = segment::ReadScratch::default();
                        for p in part {
                            scan_manifest(p, seg_dir, tables, &mut out, &mut scratch);
                        }
                        out
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        let mut out = SealedScan::default();
        for p in parts {
            out.extend(p);
        }
        Ok(out)
    }

    /// All manifests, verified; damaged ones are returned as errors in the second list.
    pub fn manifests(&self) -> (Vec<Manifest>, Vec<Error>) {
        let dir = self.flor_dir.join("manifests");
        let (mut ok, mut bad) = (Vec::new(), Vec::new());
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for p in rd.flatten().map(|e| e.path()) {
                if p.extension().and_then(|e| e.to_str()) == Some("json") {
                    match segment::read_manifest(&p) {
                        Ok(m) => ok.push(m),
                        Err(e) => bad.push(e),
                    }
                }
            }
        }
        ok.sort_by_key(|m| (m.meta.key, m.meta.writer));
        (ok, bad)
    }

    /// Starts a writer for a new run (`key = None`: a fresh [`RunKey`]) or,
    /// with [`Source::Replay`], for records added to an existing run.
    ///
    /// Creates `.flor/` and its `.gitignore` on first use, then the WAL.
    ///
    /// # Errors
    /// [`Error::NotARepository`] outside a git work tree; [`Error::Io`] when
    /// `.flor/` or the WAL cannot be created.
    pub fn begin_run(
        &self,
        filename: &str,
        source: Source,
        key: Option<RunKey>,
        opts: WriterOptions,
    ) -> Result<RunWriter> {
        if !self.in_repo {
            return Err(Error::NotARepository {
                path: self.root.clone(),
            });
        }
        std::fs::create_dir_all(&self.flor_dir).at(&self.flor_dir)?;
        let gi = self.flor_dir.join(".gitignore");
        if !gi.exists() {
            std::fs::write(&gi, FLOR_GITIGNORE).at(&gi)?;
        }
        let meta = RunMeta {
            projid: self.projid.clone(),
            filename: filename.to_owned(),
            key: key.unwrap_or_default(),
            source,
            writer: RunKey::new().run_id,
        };
        RunWriter::start(self.flor_dir.clone(), meta, opts)
    }
}

/// A `<stem>.wal.new` is a WAL still being created (see
/// [`wal::WalWriter::create`]). One over a minute old was left by a writer
/// killed before the rename, or its rename was lost with a power failure
/// (the directory is not fsynced at creation): it is recovered like any
/// WAL whose lock can be taken. A younger one is never touched, so a writer
/// that has created it but not yet locked it keeps it.
fn is_stale(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > std::time::Duration::from_secs(60))
}

fn scan_manifest(
    path: &Path,
    seg_dir: &Path,
    tables: &[&str],
    out: &mut SealedScan,
    scratch: &mut segment::ReadScratch,
) {
    let m = match segment::read_manifest(path) {
        Ok(m) => m,
        Err(e) => return out.damaged.push(Arc::new(e)),
    };
    let meta = Arc::new(m.meta);
    // A table this flordb does not know is still read (and reported as damaged).
    let wanted = |t: &str| tables.contains(&t) || !["logs", "loops", "runs"].contains(&t);
    for f in m.files.iter().filter(|f| wanted(&f.table)) {
        match segment::read_sealed_with(&seg_dir.join(&f.name), f, &meta, scratch) {
            Ok(batches) => match f.table.as_str() {
                "logs" => out.logs.extend(batches),
                "loops" => out.loops.extend(batches),
                "runs" => out.runs.extend(batches),
                _ => {}
            },
            Err(e) => out.damaged.push(Arc::new(e)),
        }
    }
}

/// What [`RunWriter::seal_with`] calls for each sealed file (see
/// [`segment::OnSealed`]).
pub type SealHook = dyn Fn(&str, &[u8]) -> Result<()> + Send + Sync;

enum Cmd {
    Flush(Sender<Result<()>>),
    Snapshot(Sender<Result<RunData>>),
    Seal(RunSummary, Box<SealHook>, Sender<Result<Manifest>>),
}

/// State shared by the logging threads and the writer thread.
#[derive(Debug)]
struct Shared {
    /// Records not yet handed to the writer thread, and when the oldest of
    /// them was logged.
    pending: Mutex<(Batch, Option<std::time::Instant>)>,
    /// Full batches, sent while `pending` is locked so their order is kept.
    data_tx: Sender<Batch>,
    data_rx: Receiver<Batch>,
    /// Batches sent and not yet written (for backpressure).
    queued: AtomicUsize,
    /// Emptied record vectors handed back by the writer thread, capacity
    /// kept, so a logging thread refills warm memory instead of faulting in
    /// fresh pages for every batch (at most [`SPARE_VECS`]).
    spare: Mutex<Vec<Vec<Record>>>,
    /// The flush interval: no acknowledged record waits longer for the WAL.
    interval: Duration,
}

/// The most full batches that may wait for the writer thread before a
/// logging thread waits: one being written while the next fills, so the
/// log lags the WAL by at most two batches (bounded memory and time).
const MAX_QUEUED: usize = 1;

/// The most emptied record vectors kept for reuse.
const SPARE_VECS: usize = 2;

/// The background writer of one run in this process.
///
/// Logging threads append to a pending [`Batch`] under a mutex; the writer
/// thread appends it to the WAL every `flush_interval` (full batches are
/// handed over earlier through a crossbeam channel) and keeps the run in
/// memory until [`RunWriter::seal`]. Dropping a writer without sealing
/// flushes the WAL and leaves it to be recovered as an interrupted run.
#[derive(Debug)]
pub struct RunWriter {
    meta: RunMeta,
    flor_dir: PathBuf,
    shared: Arc<Shared>,
    tx: Option<Sender<Cmd>>,
    thread: Option<JoinHandle<()>>,
    batch_records: usize,
}

impl RunWriter {
    fn start(flor_dir: PathBuf, meta: RunMeta, opts: WriterOptions) -> Result<RunWriter> {
        let wal = WalWriter::create(&flor_dir.join("wal"), &meta)?;
        let (data_tx, data_rx) = unbounded();
        let shared = Arc::new(Shared {
            pending: Mutex::new((Batch::default(), None)),
            data_tx,
            data_rx,
            queued: AtomicUsize::new(0),
            spare: Mutex::new(Vec::new()),
            interval: opts.flush_interval,
        });
        let (tx, rx) = bounded::<Cmd>(4);
        let s2 = Arc::clone(&shared);
        let meta2 = meta.clone();
        let dir2 = flor_dir.clone();
        let interval = opts.flush_interval;
        let thread = std::thread::Builder::new()
            .name("flor-wal".into())
            .spawn(move || writer_loop(wal, meta2, &s2, rx, interval, dir2))
            .map_err(|e| Error::Io {
                path: flor_dir.clone(),
                source: e,
            })?;
        Ok(RunWriter {
            meta,
            flor_dir,
            shared,
            tx: Some(tx),
            thread: Some(thread),
            batch_records: opts.batch_records.max(1),
        })
    }

    /// The run and writer identity.
    pub fn meta(&self) -> &RunMeta {
        &self.meta
    }

    /// `<root>/.flor`.
    pub fn flor_dir(&self) -> &Path {
        &self.flor_dir
    }

    fn lock(&self) -> MutexGuard<'_, (Batch, Option<std::time::Instant>)> {
        let mut g = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if g.1.is_none() {
            g.1 = Some(std::time::Instant::now());
        }
        g
    }

    /// Appends a record (and, first, the name it uses when new).
    ///
    /// Durable against a process kill within `flush_interval`: when the
    /// writer thread falls behind (records older than half the interval
    /// still pending) or [`MAX_QUEUED`] full batches wait, the logging
    /// thread hands its batch over and waits for the WAL to catch up, so a
    /// caller that outruns the disk is slowed rather than exposed.
    pub fn push(&self, new_name: Option<(u32, &str)>, record: Record) {
        let wait_all = {
            let mut g = self.lock();
            let p = &mut g.0;
            if let Some((id, n)) = new_name {
                p.names.push((id, n.to_owned()));
            }
            p.records.push(record);
            let n = p.records.len();
            let full = n >= self.batch_records;
            let stale =
                n % 1024 == 0 && g.1.is_some_and(|t| t.elapsed() >= self.shared.interval / 2);
            if full || stale {
                self.shared.queued.fetch_add(1, Ordering::AcqRel);
                let spare = self
                    .shared
                    .spare
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop();
                let spare = spare.unwrap_or_else(|| Vec::with_capacity(self.batch_records));
                let records = std::mem::replace(&mut g.0.records, spare);
                let batch = Batch {
                    records,
                    ..std::mem::take(&mut g.0)
                };
                let _ = self.shared.data_tx.send(batch);
                g.1 = None;
                Some(stale)
            } else {
                None
            }
        };
        if let Some(stale) = wait_all {
            let limit = if stale { 0 } else { MAX_QUEUED };
            while self.shared.queued.load(Ordering::Acquire) > limit
                && self.thread.as_ref().is_some_and(|t| !t.is_finished())
            {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }

    /// Declares name `id` (sent before any record using it in this run).
    pub fn push_name(&self, id: u32, name: &str) {
        self.lock().0.names.push((id, name.to_owned()));
    }

    /// Records the start of a loop iteration.
    pub fn push_frame(&self, frame: LoopFrame) {
        self.lock().0.frames.push(frame);
    }

    /// Records the end of the iteration `ctx_id` after `seconds`.
    pub fn push_frame_end(&self, ctx_id: u64, seconds: f64) {
        self.lock().0.frame_ends.push((ctx_id, seconds));
    }

    fn ask<T>(&self, make: impl FnOnce(Sender<Result<T>>) -> Cmd) -> Result<T> {
        let gone = || Error::Poisoned("the WAL writer thread has stopped".into());
        let tx = self.tx.as_ref().ok_or_else(gone)?;
        let (rtx, rrx) = bounded(1);
        tx.send(make(rtx)).map_err(|_| gone())?;
        rrx.recv().map_err(|_| gone())?
    }

    /// Writes everything pending to the WAL and fsyncs it.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Poisoned`] when the WAL cannot be written.
    pub fn flush(&self) -> Result<()> {
        self.ask(Cmd::Flush)
    }

    /// Everything this writer holds so far (for the process's own queries of
    /// not-yet-sealed records).
    ///
    /// # Errors
    /// As [`RunWriter::flush`].
    pub fn snapshot(&self) -> Result<RunData> {
        self.ask(Cmd::Snapshot)
    }

    /// Seals the run: segments, then the manifest, then the WAL is removed.
    /// Consumes the writer.
    ///
    /// # Errors
    /// [`Error::Io`] / [`Error::Format`] naming the file; the WAL then stays
    /// and the run is recovered as interrupted on the next open.
    pub fn seal(self, summary: RunSummary) -> Result<Manifest> {
        self.seal_with(summary, Box::new(|_: &str, _: &[u8]| Ok(())))
    }

    /// [`RunWriter::seal`], calling `on_file` with each sealed file's path
    /// relative to the project root and its bytes once the file is durable
    /// (the facade writes them as git blobs there, on the seal's threads).
    ///
    /// # Errors
    /// As [`RunWriter::seal`], and whatever `on_file` returns.
    pub fn seal_with(mut self, summary: RunSummary, on_file: Box<SealHook>) -> Result<Manifest> {
        let r = self.ask(|tx| Cmd::Seal(summary, on_file, tx));
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        r
    }
}

impl Drop for RunWriter {
    fn drop(&mut self) {
        self.tx = None; // the thread flushes what is pending and exits, leaving the WAL
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Everything handed over so far, in logging order: the full batches sent
/// (all sent while `pending` was locked, so before what is pending now), then
/// what is pending. The second value counts the sent batches, to be
/// subtracted from `queued` once written.
fn drain(shared: &Shared) -> (Vec<Batch>, usize) {
    let mut p = shared.pending.lock().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<Batch> = shared.data_rx.try_iter().collect();
    let sent = out.len();
    out.push(std::mem::take(&mut p.0));
    p.1 = None;
    (out, sent)
}

/// The writer thread's side: the WAL and nothing else. Records are not
/// kept in memory: a seal (or a snapshot) reads the run back from the WAL,
/// which is still in the page cache, so the logging path pays only for the
/// encoding and the `write`, and emptied record vectors go back to the
/// logging thread (measured: keeping the records in memory instead costs
/// the logging thread about twice the CPU per record on this 2-core machine).
struct Sink {
    wal: WalWriter,
    meta: RunMeta,
    failed: Option<String>,
}

impl Sink {
    /// Writes `batches` to the WAL, then marks `sent` queued batches done.
    fn write(&mut self, (batches, sent): (Vec<Batch>, usize), shared: &Shared) -> Result<()> {
        let r = self.write_all(batches, shared);
        shared.queued.fetch_sub(sent, Ordering::AcqRel);
        r
    }

    fn write_all(&mut self, batches: Vec<Batch>, shared: &Shared) -> Result<()> {
        if let Some(f) = &self.failed {
            return Err(Error::Poisoned(f.clone()));
        }
        for b in batches {
            if b.is_empty() {
                continue;
            }
            let entry = WalEntry::Batch(b);
            let r = self.wal.append(&entry);
            if let Err(e) = r {
                self.failed = Some(e.to_string());
                return Err(e);
            }
            let WalEntry::Batch(b) = entry else { continue };
            let mut records = b.records;
            records.clear();
            let mut spare = shared.spare.lock().unwrap_or_else(|p| p.into_inner());
            if spare.len() < SPARE_VECS && records.capacity() > 0 {
                spare.push(records);
            }
        }
        Ok(())
    }

    /// Everything written so far, read back from the WAL: the batches as
    /// framed and the summary when one was written.
    fn read_back(&self) -> Result<(Vec<Batch>, Option<RunSummary>)> {
        let rec = self.wal.read_back()?;
        if let Some((offset, detail)) = rec.corruption {
            return Err(Error::Corrupt {
                path: self.wal.path().to_path_buf(),
                offset,
                detail,
            });
        }
        Ok((rec.batches, rec.summary))
    }
}

fn writer_loop(
    wal: WalWriter,
    meta: RunMeta,
    shared: &Shared,
    rx: Receiver<Cmd>,
    interval: Duration,
    flor_dir: PathBuf,
) {
    let mut sink = Sink {
        wal,
        meta,
        failed: None,
    };
    let mut last_drain = std::time::Instant::now();
    loop {
        if last_drain.elapsed() >= interval / 2 {
            let _ = sink.write(drain(shared), shared);
            last_drain = std::time::Instant::now();
        }
        // Drain twice per interval so a record waits at most one interval.
        let wait = (interval / 2).saturating_sub(last_drain.elapsed());
        let cmd = crossbeam_channel::select! {
            recv(rx) -> c => c.ok(),
            recv(shared.data_rx) -> b => {
                // Put it back in front by writing it now: nothing sent later can
                // precede it, and `drain` takes the rest in order.
                if let Ok(b) = b {
                    let _ = sink.write((vec![b], 1), shared);
                }
                continue;
            },
            default(wait) => continue,
        };
        let Some(cmd) = cmd else {
            let _ = sink.write(drain(shared), shared);
            let _ = sink.wal.sync();
            return;
        };
        match cmd {
            Cmd::Flush(reply) => {
                let r = sink
                    .write(drain(shared), shared)
                    .and_then(|()| sink.wal.sync());
                let _ = reply.send(r);
            }
            Cmd::Snapshot(reply) => {
                let r = sink
                    .write(drain(shared), shared)
                    .and_then(|()| sink.read_back())
                    .map(|(batches, summary)| RunData {
                        meta: sink.meta.clone(),
                        batch: Batch::concat(batches),
                        summary,
                    });
                let _ = reply.send(r);
            }
            Cmd::Seal(summary, on_file, reply) => {
                // No fsync of the WAL here: the seal's files are fsynced
                // before its manifest publishes them, and until then the
                // WAL (written, not synced) covers a killed process.
                let r = (|| {
                    sink.write(drain(shared), shared)?;
                    sink.wal.append(&WalEntry::Summary(summary.clone()))?;
                    let (batches, _) = sink.read_back()?;
                    let parts = segment::RunParts {
                        meta: &sink.meta,
                        batches: &batches,
                        summary: Some(&summary),
                    };
                    segment::seal_with(
                        &flor_dir,
                        parts,
                        RunStatus::Committed,
                        flor_core::run::now_micros(),
                        &*on_file,
                    )
                })();
                if r.is_ok() {
                    let Sink { wal, .. } = sink;
                    let _ = wal.remove();
                }
                let _ = reply.send(r);
                return;
            }
        }
    }
}
