//! The checkpoint store (DESIGN.md §6 "Checkpoints", issue 4): the bytes of
//! a run's checkpointed objects, deduplicated by content, compressed in
//! parallel, crash-safe.
//!
//! # Model
//!
//! A checkpoint is the bytes of one named object (`"model"`, `"optimizer"`,
//! `"rng"`) saved at one loop path (`[("epoch", 3)]`, outermost first,
//! 0-based iterations as in [`flor_core::Recorder::loop_path`]) of one run.
//! Saving the same `(loop path, object)` again replaces the earlier bytes.
//!
//! # Layout on disk
//!
//! One directory per run, `<.flor>/checkpoints/<run stem>/`:
//!
//! ```text
//! index/          sled database (sled admits one process at a time)
//!   tree meta       "format" → 1 (u32 LE), "run" → the run stem, "heads" →
//!                   1 once every manifest has its head
//!   tree chunks     blake3(chunk) (32 bytes) → pack id, offset, frame length
//!   tree manifests  codec(loop path, object) → manifest (codec): loop path,
//!                   object, raw length, blake3 of the whole object, written
//!                   at, new bytes, and the ordered chunks (hash, raw length,
//!                   stored length, pack id, offset: version 2, see
//!                   `manifest.rs`)
//!   tree heads      the same key → the manifest's summary (`heads.rs`):
//!                   what `list` reads, written with the manifest in one
//!                   transaction
//! packs/<id>.pack append-only chunk frames (format in `pack.rs`)
//! ```
//!
//! # Write path
//!
//! [`CheckpointStore::save`] cuts the bytes into chunks ([`Chunking`],
//! content-defined by default) on the caller's thread and hands them to a
//! crossbeam pool of workers through a bounded channel: a caller that
//! outruns the disk waits, and memory in flight stays below
//! `(2 × queue_chunks + workers + 1) × (max chunk + ~0.5%)` bytes. Each
//! worker hashes its chunk (blake3); a chunk already in the index is not
//! stored again; a new one is compressed with zstd (kept raw when that saves
//! under 1/10: a decode on every restore costs more than that is worth) and
//! sealed in a checksummed frame. One writer thread appends
//! frames to the active pack and commits finished saves in submission
//! order: fsync the packs, then insert and flush the index entries, then
//! insert and flush the manifests (`writer.rs`). A manifest is thus never
//! visible before its chunks are durable: a save torn by a crash is reported
//! missing by [`CheckpointStore::load`], never returned half-written, and
//! the saves that survive a crash are a prefix of those submitted.
//!
//! Why chunk bytes live in pack files rather than as sled values: sled
//! 0.34 rewrites whole leaf nodes (values included) as they fill and split,
//! which measured 100–300 MB/s and ~2× the stored bytes on disk for 256 MiB
//! of 16–64 KiB values on the 2-core reference machine, against ~500 MB/s
//! and 1× for packs with a sled index (BENCHMARKS.md, "checkpoint"). sled
//! keeps what it is good at: the small, transactional index and manifests,
//! and the per-run process lock.
//!
//! # Read path
//!
//! [`CheckpointStore::load`] finds each chunk's frame from the manifest
//! alone (no index lookup; a version 1 manifest goes through the index),
//! checks every frame's checksum, every chunk's blake3 hash, and the whole
//! object's hash; any mismatch is
//! [`Error::CheckpointDamaged`] naming the run, object, loop path, chunk,
//! pack and offset. Large objects are decoded by several threads.
//! [`CheckpointStore::recipe`] returns the chunks' pack locations; [`load_recipe`] reads and verifies the bytes
//! from the packs alone, so a process that does not hold the database (a
//! replay worker) reads checkpoints while the holder keeps it open.

mod chunker;
mod gc;
mod heads;
mod load;
mod manifest;
mod pack;
mod pool;
mod relocate;
mod table;
mod writer;

pub use chunker::Chunking;
pub use load::{
    decode_recipes, encode_recipes, load_recipe, load_recipe_into, load_recipe_to, Recipe,
    RecipeChunk,
};
pub use table::{
    checkpoints_batch, checkpoints_schema, checkpoints_table, list_runs, CheckpointsTable,
};

use crate::{Error, Result};
use crossbeam_channel::Sender;
use manifest::Manifest;
use pack::PackReaders;
use pool::Job;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use writer::{Writer, WriterMsg};

/// The store format version recorded in each run's `meta` tree.
pub const CHECKPOINT_FORMAT: u32 = 1;

/// Tuning of a [`CheckpointStore`]; [`Default`] is what the measurements in
/// BENCHMARKS.md chose.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointOptions {
    /// How objects are cut into chunks (default: content-defined,
    /// 4 / 16 / 64 KiB).
    pub chunking: Chunking,
    /// zstd level for chunks (default `Some(1)`: on float32 weights levels
    /// 1 and 3 save the same ~8%, level 1 faster); `None` stores chunks raw.
    /// Must lie in zstd's range (−131072 ..= 22).
    pub compression: Option<i32>,
    /// Compression workers (default: the available cores, at most 8; ≥ 1).
    /// Loading uses as many threads.
    pub workers: usize,
    /// Capacity of each bounded channel, in chunks (default 64; ≥ 1).
    pub queue_chunks: usize,
    /// A pack is closed and a new one started once it reaches this many
    /// bytes (default 256 MiB; ≥ 1 MiB).
    pub pack_target_bytes: u64,
    /// sled's page cache for the index, in bytes (default 64 MiB).
    pub index_cache_bytes: u64,
}

impl Default for CheckpointOptions {
    fn default() -> CheckpointOptions {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        CheckpointOptions {
            chunking: Chunking::default(),
            compression: Some(1),
            workers: cores.clamp(1, 8),
            queue_chunks: 64,
            pack_target_bytes: 256 << 20,
            index_cache_bytes: 64 << 20,
        }
    }
}

impl CheckpointOptions {
    /// Checks every field's documented range.
    ///
    /// # Errors
    /// [`Error::Input`] naming the field.
    pub fn validate(&self) -> Result<()> {
        self.chunking.validate()?;
        if let Some(level) = self.compression {
            if !zstd::compression_level_range().contains(&level) {
                return Err(Error::Input(format!(
                    "checkpoint zstd level {level} is outside zstd's range {:?}",
                    zstd::compression_level_range()
                )));
            }
        }
        if self.workers == 0 || self.queue_chunks == 0 {
            return Err(Error::Input(
                "checkpoint workers and queue_chunks must be at least 1".into(),
            ));
        }
        if self.pack_target_bytes < 1 << 20 {
            return Err(Error::Input(
                "checkpoint pack_target_bytes must be at least 1 MiB".into(),
            ));
        }
        Ok(())
    }
}

/// One checkpoint as [`CheckpointStore::list`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// The loop path, outermost first (0-based iterations).
    pub loop_path: Vec<(String, i64)>,
    /// The object name.
    pub object: String,
    /// Length of the object in bytes.
    pub raw_bytes: u64,
    /// Bytes its chunks occupy in the packs (compressed, frame headers
    /// included), chunks shared with other checkpoints counted in full.
    pub stored_bytes: u64,
    /// Pack bytes this checkpoint added when it was written: what its
    /// chunks did not share with checkpoints stored before it. A chunk
    /// shared by saves in flight at the same time (submitted before the
    /// earlier one was flushed) counts for whichever save's copy reached
    /// the pack writer first: chunks are compressed in parallel.
    pub new_bytes: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// When the save was submitted, microseconds since the Unix epoch (UTC).
    pub written_at: i64,
    /// blake3 of the object's bytes.
    pub hash: [u8; 32],
}

impl CheckpointInfo {
    /// The canonical text of the loop path; see [`loop_path_text`].
    pub fn loop_path_text(&self) -> String {
        loop_path_text(&self.loop_path)
    }

    /// The outermost loop's 0-based iteration (`None` at run level).
    pub fn iteration(&self) -> Option<i64> {
        self.loop_path.first().map(|l| l.1)
    }
}

/// What one [`CheckpointStore::gc`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcStats {
    /// Chunks dropped from the index because no manifest references them.
    pub chunks_removed: u64,
    /// Pack files deleted (emptied ones and rewritten ones).
    pub packs_deleted: u64,
    /// Packs under half live whose live chunks were copied to a new pack.
    pub packs_rewritten: u64,
    /// Manifests rewritten to record their chunks' new locations (chunks
    /// copied out of a rewritten pack), or to record locations at all
    /// (version 1 manifests, written before locations were recorded).
    pub manifests_rewritten: u64,
    /// Pack bytes on disk before.
    pub bytes_before: u64,
    /// Pack bytes on disk after.
    pub bytes_after: u64,
}

/// Bytes a run's checkpoints occupy on disk, from [`CheckpointStore::disk_usage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskUsage {
    /// Total length of the pack files.
    pub pack_bytes: u64,
    /// Total length of the files of the sled index.
    pub index_bytes: u64,
    /// Chunks in the index.
    pub chunks: u64,
}

/// The canonical text of a loop path: `name=iteration` per level, outermost
/// first, joined by `/` (`epoch=3/step=10`); `run` for the empty path (a
/// run-level checkpoint). Used in listings, the `checkpoints` table and
/// error messages; it is not parsed back (names may contain `=` or `/`).
pub fn loop_path_text(loop_path: &[(String, i64)]) -> String {
    if loop_path.is_empty() {
        return "run".into();
    }
    let parts: Vec<String> = loop_path.iter().map(|(n, i)| format!("{n}={i}")).collect();
    parts.join("/")
}

/// `<flor_dir>/checkpoints/<run>`: the directory of one run's checkpoints.
pub fn run_dir(flor_dir: &Path, run: &str) -> PathBuf {
    flor_dir.join("checkpoints").join(run)
}

/// State shared by the store, its workers and its writer thread.
pub(crate) struct Shared {
    pub run: String,
    pub dir: PathBuf,
    pub index_path: PathBuf,
    pub db: sled::Db,
    pub chunks: sled::Tree,
    pub manifests: sled::Tree,
    /// The manifests' heads (`heads.rs`), what `list` reads.
    pub heads: sled::Tree,
    /// Every manifest has its head (`meta` key `heads`); otherwise `list`
    /// reads the manifests. Set by `gc` once it has written every head.
    pub heads_complete: std::sync::atomic::AtomicBool,
    pub readers: PackReaders,
    poison: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn sled_err(&self, e: sled::Error) -> Error {
        Error::Sled {
            path: self.index_path.clone(),
            detail: e.to_string(),
        }
    }

    pub(crate) fn set_poison(&self, detail: &str) {
        let mut p = self.poison.lock().unwrap_or_else(|e| e.into_inner());
        p.get_or_insert_with(|| detail.to_string());
    }

    fn poisoned(&self) -> Option<String> {
        self.poison
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

struct Pipeline {
    jobs: Sender<Job>,
    writer: Sender<WriterMsg>,
    threads: Vec<JoinHandle<()>>,
}

/// One run's checkpoint store: save, load, list and collect checkpoints.
///
/// Open it once per process and run (sled admits one process per
/// database; a second [`CheckpointStore::open`] of the same run, in this
/// process or another, fails with [`Error::CheckpointLocked`]). All methods
/// take `&self` and may be called from several threads. The worker pool
/// starts with the first [`CheckpointStore::save`] or
/// [`CheckpointStore::gc`], so a store opened only to read costs no threads.
///
/// Dropping the store flushes and stops its threads, ignoring errors; call
/// [`CheckpointStore::close`] to see them.
pub struct CheckpointStore {
    shared: Arc<Shared>,
    options: CheckpointOptions,
    pipeline: Mutex<Option<Pipeline>>,
    /// Saves, loads and recipes hold it shared; `gc` holds it exclusively.
    submit: RwLock<()>,
    next_seq: AtomicU64,
}

impl CheckpointStore {
    /// Opens (creating if needed) the checkpoints of `run` under
    /// `flor_dir` (the project's `.flor` directory) with default options.
    /// `run` is the run's file stem, [`flor_core::RunKey::file_stem`]
    /// (`"<tstamp>-<run_id hex>"`).
    ///
    /// # Errors
    /// [`Error::Input`] for a run name that is not a plain file stem (ASCII
    /// letters, digits, `.`, `_`, `-`; not starting with `.`);
    /// [`Error::CheckpointLocked`] when another process (or another open
    /// store in this one) holds the run's database; [`Error::Io`] when the
    /// directories cannot be created; [`Error::Sled`] when sled fails;
    /// [`Error::Corrupt`] when the database has another format version or
    /// belongs to another run.
    pub fn open(flor_dir: &Path, run: &str) -> Result<CheckpointStore> {
        CheckpointStore::open_with(flor_dir, run, CheckpointOptions::default())
    }

    /// [`CheckpointStore::open`] with explicit options. Options affect how
    /// new checkpoints are written; any store reads checkpoints written
    /// with any options.
    ///
    /// # Errors
    /// As [`CheckpointStore::open`], and [`Error::Input`] for options
    /// outside their documented ranges.
    pub fn open_with(
        flor_dir: &Path,
        run: &str,
        options: CheckpointOptions,
    ) -> Result<CheckpointStore> {
        check_run(run)?;
        options.validate()?;
        let dir = run_dir(flor_dir, run);
        let packs_dir = dir.join("packs");
        let index_path = dir.join("index");
        std::fs::create_dir_all(&packs_dir).map_err(|source| Error::Io {
            path: packs_dir.clone(),
            source,
        })?;
        let sled_err = |e: sled::Error| Error::Sled {
            path: index_path.clone(),
            detail: e.to_string(),
        };
        // sled releases its file lock when its background threads let go of
        // the database, a moment after the last handle in this process is
        // dropped; a store reopened right after a close waits for that (up
        // to 3 s) before reporting the database as held elsewhere.
        let opened = open_index(
            &index_path,
            options.index_cache_bytes,
            std::time::Duration::from_secs(3),
            std::time::Duration::from_millis(20),
        );
        let db = opened.map_err(|e| {
            if is_locked(&e) {
                Error::CheckpointLocked {
                    run: run.to_string(),
                    path: index_path.clone(),
                }
            } else {
                sled_err(e)
            }
        })?;
        let meta = db.open_tree("meta").map_err(sled_err)?;
        let corrupt = |detail: String| Error::Corrupt {
            path: index_path.clone(),
            offset: 0,
            detail,
        };
        match meta.get("format").map_err(sled_err)? {
            None => {
                meta.insert("format", &CHECKPOINT_FORMAT.to_le_bytes())
                    .map_err(sled_err)?;
                meta.insert("run", run.as_bytes()).map_err(sled_err)?;
                meta.insert(heads::HEADS_COMPLETE, &[1u8])
                    .map_err(sled_err)?;
                db.flush().map_err(sled_err)?;
            }
            Some(v) => {
                let version = <[u8; 4]>::try_from(v.as_ref()).ok().map(u32::from_le_bytes);
                if version != Some(CHECKPOINT_FORMAT) {
                    return Err(corrupt(format!(
                        "checkpoint store format {version:?} is not supported (this build reads {CHECKPOINT_FORMAT})"
                    )));
                }
                let owner = meta.get("run").map_err(sled_err)?;
                if owner.as_deref() != Some(run.as_bytes()) {
                    let owner = owner.map(|o| String::from_utf8_lossy(&o).into_owned());
                    return Err(corrupt(format!(
                        "the database belongs to run {owner:?}, not {run:?}"
                    )));
                }
            }
        }
        let chunks = db.open_tree("chunks").map_err(sled_err)?;
        let manifests = db.open_tree("manifests").map_err(sled_err)?;
        let heads = db.open_tree("heads").map_err(sled_err)?;
        let heads_complete = meta
            .get(heads::HEADS_COMPLETE)
            .map_err(sled_err)?
            .is_some_and(|v| v.as_ref() == [1]);
        let shared = Arc::new(Shared {
            run: run.to_string(),
            dir,
            index_path: index_path.clone(),
            db,
            chunks,
            manifests,
            heads,
            heads_complete: std::sync::atomic::AtomicBool::new(heads_complete),
            readers: PackReaders::new(packs_dir),
            poison: Mutex::new(None),
        });
        Ok(CheckpointStore {
            shared,
            options,
            pipeline: Mutex::new(None),
            submit: RwLock::new(()),
            next_seq: AtomicU64::new(0),
        })
    }

    /// The run stem this store belongs to.
    pub fn run(&self) -> &str {
        &self.shared.run
    }

    /// The run's checkpoint directory (`<.flor>/checkpoints/<run>`).
    pub fn path(&self) -> &Path {
        &self.shared.dir
    }

    /// The options new checkpoints are written with.
    pub fn options(&self) -> &CheckpointOptions {
        &self.options
    }

    /// Saves `bytes` as `object` at `loop_path`, replacing an earlier
    /// checkpoint under the same key once this one is committed.
    ///
    /// Asynchronous: returns once every chunk is queued for the workers
    /// (waiting while the bounded queues are full), usually before the
    /// checkpoint is durable. It becomes durable — and visible to
    /// [`CheckpointStore::list`] and other processes — when the writer
    /// commits it, shortly after its last chunk is written; call
    /// [`CheckpointStore::flush`] to wait for that. [`CheckpointStore::load`]
    /// and [`CheckpointStore::list`] on this store wait for pending saves,
    /// so they see their own writes.
    ///
    /// # Errors
    /// [`Error::Input`] for an empty object or loop name, or an object over
    /// 256 GiB; [`Error::Poisoned`] when an earlier write failed (the store
    /// must be reopened). A failure of this save's own writing is reported
    /// by a later call (`flush`, `load`, `list`, `close`, `save`).
    pub fn save(&self, loop_path: &[(String, i64)], object: &str, bytes: &[u8]) -> Result<()> {
        check_names(loop_path, object)?;
        if bytes.len() as u64 / 64 >= u64::from(u32::MAX) {
            return Err(Error::Input(format!(
                "checkpoint {object:?} of {} bytes is too large",
                bytes.len()
            )));
        }
        let key = manifest::key(loop_path, object)
            .map_err(|e| Error::Input(format!("checkpoint key: {e}")))?;
        let _shared = self.submit.read().unwrap_or_else(|e| e.into_inner());
        self.check_poison()?;
        let (jobs, writer) = self.senders()?;
        let seq = self.next_seq.fetch_add(1, Ordering::SeqCst);
        // From here every send must happen or the store is poisoned: the
        // writer commits in sequence order and would wait for this save.
        let stopped = || self.stopped();
        let written_at = flor_core::run::now_micros();
        writer
            .send(WriterMsg::Begin {
                seq,
                key,
                loop_path: loop_path.to_vec(),
                object: object.to_string(),
                written_at,
            })
            .map_err(|_| stopped())?;
        let mut whole = blake3::Hasher::new();
        let mut n: u32 = 0;
        for range in self.options.chunking.cut(bytes) {
            let Some(chunk) = bytes.get(range) else { break };
            whole.update(chunk);
            jobs.send(Job {
                seq,
                index: n,
                data: chunk.to_vec(),
            })
            .map_err(|_| stopped())?;
            n += 1;
        }
        let end = WriterMsg::End {
            seq,
            chunks: n,
            raw_len: bytes.len() as u64,
            hash: *whole.finalize().as_bytes(),
        };
        writer.send(end).map_err(|_| stopped())?;
        Ok(())
    }

    /// Waits until every save submitted before this call is durable.
    ///
    /// # Errors
    /// [`Error::Poisoned`] with the failure when a write failed; the store
    /// refuses further saves until reopened.
    pub fn flush(&self) -> Result<()> {
        let upto = self.next_seq.load(Ordering::SeqCst);
        let writer = {
            let p = self.pipeline.lock().unwrap_or_else(|e| e.into_inner());
            match p.as_ref() {
                Some(p) => p.writer.clone(),
                None => return self.check_poison(),
            }
        };
        let (tx, rx) = crossbeam_channel::bounded(1);
        writer
            .send(WriterMsg::Flush { upto, ack: tx })
            .map_err(|_| self.stopped())?;
        match rx.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(detail)) => Err(Error::Poisoned(detail)),
            Err(_) => Err(self.stopped()),
        }
    }

    /// Loads and verifies the checkpoint of `object` at `loop_path`, after
    /// waiting for this store's pending saves (and for a
    /// [`CheckpointStore::gc`] in progress, which in turn waits for loads
    /// in progress).
    ///
    /// # Errors
    /// [`Error::CheckpointMissing`] when no complete checkpoint exists under
    /// the key (never saved, or torn by a crash before its commit);
    /// [`Error::CheckpointDamaged`] when a stored byte fails its checksum or
    /// hash, a chunk or pack is missing, or the manifest is unreadable — the
    /// message names the run, object, loop path, and chunk, pack and offset;
    /// [`Error::Io`] or [`Error::Sled`] when reading fails;
    /// [`Error::Poisoned`] when a pending save failed.
    pub fn load(&self, loop_path: &[(String, i64)], object: &str) -> Result<Vec<u8>> {
        // Shared, like saves: a `gc` (exclusive) neither starts nor deletes
        // a pack while this load reads one.
        let _shared = self.submit.read().unwrap_or_else(|e| e.into_inner());
        self.flush()?;
        load::load(&self.shared, loop_path, object, self.options.workers)
    }

    /// Where the bytes of the checkpoint of `object` at `loop_path` lie in
    /// the run's packs (after waiting for this store's pending saves), for
    /// a process that does not hold the database: it reads them with
    /// [`load_recipe`]. The recipe stays valid while this store is open
    /// and runs no [`CheckpointStore::gc`].
    ///
    /// # Errors
    /// As [`CheckpointStore::load`], for the manifest and the index.
    pub fn recipe(&self, loop_path: &[(String, i64)], object: &str) -> Result<Recipe> {
        let _shared = self.submit.read().unwrap_or_else(|e| e.into_inner());
        self.flush()?;
        load::recipe(&self.shared, loop_path, object)
    }

    /// Every committed checkpoint of this run, by loop path then object,
    /// after waiting for this store's pending saves. Reads each
    /// checkpoint's head (a few dozen bytes, `heads.rs`), not its manifest,
    /// so it costs the same whatever the objects' sizes; a store written
    /// before heads existed is listed from its manifests until a
    /// [`CheckpointStore::gc`] writes their heads.
    ///
    /// # Errors
    /// [`Error::CheckpointDamaged`] for a head (or manifest) that does not
    /// decode, naming its loop path and object when its key is readable (a
    /// damaged manifest whose head is sound is reported by
    /// [`CheckpointStore::load`], not here); [`Error::Sled`];
    /// [`Error::Poisoned`] when a pending save failed.
    pub fn list(&self) -> Result<Vec<CheckpointInfo>> {
        self.flush()?;
        let sh = &self.shared;
        let damaged = |k: &[u8], detail: String| {
            let (loop_path, object) = manifest::decode_key(k)
                .map(|(l, o)| (loop_path_text(&l), o))
                .unwrap_or_else(|| ("?".into(), "?".into()));
            Error::CheckpointDamaged {
                run: sh.run.clone(),
                object,
                loop_path,
                detail,
            }
        };
        let mut out = Vec::new();
        if sh.heads_complete.load(Ordering::SeqCst) {
            for kv in sh.heads.iter() {
                let (k, v) = kv.map_err(|e| sh.sled_err(e))?;
                out.push(heads::Head::decode(&v).map_err(|d| damaged(&k, d))?.info());
            }
        } else {
            for kv in sh.manifests.iter() {
                let (k, v) = kv.map_err(|e| sh.sled_err(e))?;
                let m = Manifest::decode(&v).map_err(|d| damaged(&k, d))?;
                out.push(heads::Head::of(&m).info());
            }
        }
        out.sort_by(|a, b| (&a.loop_path, &a.object).cmp(&(&b.loop_path, &b.object)));
        Ok(out)
    }

    /// [`CheckpointStore::list`] as an Arrow batch with the
    /// [`checkpoints_schema`] columns.
    ///
    /// # Errors
    /// As [`CheckpointStore::list`].
    pub fn list_batch(&self) -> Result<arrow::record_batch::RecordBatch> {
        checkpoints_batch(self.run(), &self.list()?)
    }

    /// Drops chunks that no manifest references (left by replaced
    /// checkpoints or torn by a crash), deletes packs with no live chunk and
    /// rewrites packs that are less than half live. Waits for pending saves
    /// and blocks new ones while it runs. Crash-safe: see `gc.rs`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when a manifest or index entry cannot be read
    /// (nothing is deleted then); [`Error::Io`], [`Error::Sled`] or
    /// [`Error::Poisoned`] when a write fails (the store is poisoned).
    pub fn gc(&self) -> Result<GcStats> {
        let _exclusive = self.submit.write().unwrap_or_else(|e| e.into_inner());
        self.check_poison()?;
        let (_, writer) = self.senders()?;
        self.flush()?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        writer
            .send(WriterMsg::Gc { ack: tx })
            .map_err(|_| self.stopped())?;
        rx.recv().map_err(|_| self.stopped())?
    }

    /// Bytes on disk: pack files, the sled index's files, chunks indexed.
    /// Counts committed state; call [`CheckpointStore::flush`] first to
    /// include pending saves.
    ///
    /// # Errors
    /// [`Error::Io`] when a directory cannot be read.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let sh = &self.shared;
        let packs = pack::list_packs(sh.readers.dir()).map_err(|source| Error::Io {
            path: sh.readers.dir().to_path_buf(),
            source,
        })?;
        Ok(DiskUsage {
            pack_bytes: packs.iter().map(|p| p.2).sum(),
            index_bytes: dir_size(&sh.index_path).map_err(|source| Error::Io {
                path: sh.index_path.clone(),
                source,
            })?,
            chunks: sh.chunks.len() as u64,
        })
    }

    /// Flushes, stops the worker threads and closes the database; then
    /// opens it once more, alone, so that sled recovers its log and writes a
    /// snapshot of its page table (`index/snap.*`) now rather than at the
    /// next open. Without it every later open (a replay's planner opens each
    /// run's database) re-reads and checksums the whole log and writes that
    /// snapshot itself: ~2.5 ms and an fsync for a 3800-chunk run, against
    /// ~1 ms with it. The reopen is best effort: sled lets go of its file
    /// lock a moment after the last handle is dropped, so a reopen that
    /// finds the database locked is tried again for up to 200 ms; when it
    /// is still held (another process opened it meanwhile) or fails to
    /// open, close still succeeds and the next open recovers as usual. It
    /// changes no checkpoint.
    ///
    /// # Errors
    /// [`Error::Poisoned`] when a pending save failed; [`Error::Sled`] when
    /// the final flush fails.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()?;
        let (index_path, cache_bytes) = (
            self.shared.index_path.clone(),
            self.options.index_cache_bytes,
        );
        drop(self);
        drop(open_index(
            &index_path,
            cache_bytes,
            std::time::Duration::from_millis(200),
            std::time::Duration::from_millis(5),
        ));
        Ok(())
    }

    fn shutdown(&mut self) -> Result<()> {
        let flushed = self.flush();
        let pipeline = self
            .pipeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(Pipeline {
            jobs,
            writer,
            threads,
        }) = pipeline
        {
            drop(jobs);
            drop(writer);
            for t in threads {
                let _ = t.join();
            }
        }
        flushed?;
        self.shared
            .db
            .flush()
            .map_err(|e| self.shared.sled_err(e))?;
        Ok(())
    }

    fn check_poison(&self) -> Result<()> {
        match self.shared.poisoned() {
            Some(detail) => Err(Error::Poisoned(detail)),
            None => Ok(()),
        }
    }

    fn stopped(&self) -> Error {
        let detail = self.shared.poisoned().unwrap_or_else(|| {
            format!(
                "checkpoints of run {}: the writer thread stopped",
                self.shared.run
            )
        });
        self.shared.set_poison(&detail);
        Error::Poisoned(detail)
    }

    /// The pipeline's senders, starting the threads on first use.
    fn senders(&self) -> Result<(Sender<Job>, Sender<WriterMsg>)> {
        let mut p = self.pipeline.lock().unwrap_or_else(|e| e.into_inner());
        if p.is_none() {
            *p = Some(self.start()?);
        }
        match p.as_ref() {
            Some(p) => Ok((p.jobs.clone(), p.writer.clone())),
            None => Err(self.stopped()),
        }
    }

    fn start(&self) -> Result<Pipeline> {
        let sh = &self.shared;
        let packs = pack::list_packs(sh.readers.dir()).map_err(|source| Error::Io {
            path: sh.readers.dir().to_path_buf(),
            source,
        })?;
        // Never append to a pack an earlier process wrote (its tail may be torn).
        let next_pack = packs.last().map_or(Some(1), |p| p.0.checked_add(1));
        let next_pack = next_pack.ok_or_else(|| Error::Corrupt {
            path: sh.readers.dir().to_path_buf(),
            offset: 0,
            detail: "pack ids exhausted".into(),
        })?;
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded::<Job>(self.options.queue_chunks);
        let (w_tx, w_rx) = crossbeam_channel::bounded::<WriterMsg>(self.options.queue_chunks);
        let mut threads = Vec::new();
        let spawn_err = |e: std::io::Error| Error::Io {
            path: sh.dir.clone(),
            source: e,
        };
        let writer = Writer::new(sh.clone(), self.options.pack_target_bytes, next_pack);
        threads.push(
            std::thread::Builder::new()
                .name("flor-ckpt-writer".into())
                .spawn(move || writer.run(w_rx))
                .map_err(spawn_err)?,
        );
        for i in 0..self.options.workers {
            let (rx, tx, index, level) = (
                jobs_rx.clone(),
                w_tx.clone(),
                sh.chunks.clone(),
                self.options.compression,
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("flor-ckpt-zstd-{i}"))
                    .spawn(move || pool::worker(rx, tx, index, level))
                    .map_err(spawn_err)?,
            );
        }
        Ok(Pipeline {
            jobs: jobs_tx,
            writer: w_tx,
            threads,
        })
    }
}

impl Drop for CheckpointStore {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl std::fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("run", &self.shared.run)
            .field("dir", &self.shared.dir)
            .finish()
    }
}

/// Opens the sled database at `index_path` with `cache_bytes` of cache,
/// trying again every `poll` while its file lock is held, for up to
/// `patience`: sled lets go of the lock a moment after the last handle in a
/// process is dropped, so a reopen right after a close can find it held.
fn open_index(
    index_path: &Path,
    cache_bytes: u64,
    patience: std::time::Duration,
    poll: std::time::Duration,
) -> sled::Result<sled::Db> {
    let open = || {
        sled::Config::new()
            .path(index_path)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None)
            .open()
    };
    let deadline = std::time::Instant::now() + patience;
    let mut opened = open();
    while opened.as_ref().is_err_and(is_locked) && std::time::Instant::now() < deadline {
        std::thread::sleep(poll);
        opened = open();
    }
    opened
}

/// Whether sled failed to open a database because another handle (in this
/// or another process) holds its file lock.
fn is_locked(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn check_run(run: &str) -> Result<()> {
    let ok = !run.is_empty()
        && run.len() <= 200
        && !run.starts_with('.')
        && run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::Input(format!(
            "checkpoint run {run:?} is not a run file stem like \"<tstamp>-<run_id hex>\" \
             (ASCII letters, digits, '.', '_', '-'; at most 200; not starting with '.')"
        )))
    }
}

fn check_names(loop_path: &[(String, i64)], object: &str) -> Result<()> {
    if object.is_empty() {
        return Err(Error::Input(
            "a checkpointed object needs a non-empty name".into(),
        ));
    }
    if loop_path.iter().any(|(n, _)| n.is_empty()) {
        return Err(Error::Input(format!(
            "checkpoint {object:?}: a loop name in the loop path is empty"
        )));
    }
    Ok(())
}

/// Total length of the files under `dir`; files sled removes meanwhile
/// are skipped.
fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let mut total = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = match e.metadata() {
            Ok(m) => m,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(e),
        };
        total += match m.is_dir() {
            true => match dir_size(&e.path()) {
                Err(e) if gone(&e) => 0,
                r => r?,
            },
            false => m.len(),
        };
    }
    Ok(total)
}
