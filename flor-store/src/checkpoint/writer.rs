//! The writer thread: appends chunk frames to the active pack and commits
//! finished checkpoints in submission order.
//!
//! Commit protocol (one group of consecutive finished saves at a time):
//!
//! 1. every pack written since the last commit is fsynced;
//! 2. the index entries of the new chunks are inserted and sled is flushed;
//! 3. the manifests and their heads (`heads.rs`) are inserted in one sled
//!    transaction and sled is flushed again.
//!
//! A manifest therefore becomes durable only after everything it points to
//! is, and a crash at any moment leaves either the whole checkpoint or no
//! manifest at all (`load` then reports it missing). Saves commit in the
//! order they were submitted, so what survives a crash is a prefix of the
//! saves. After any failure the writer is poisoned: it discards further
//! work and every flush reports the failure, until the store is reopened.

use super::heads::Head;
use super::manifest::{ChunkRef, Manifest, MANIFEST_VERSION};
use super::pack::{Frame, Loc, PackWriter};
use super::{GcStats, Shared};
use crossbeam_channel::{Receiver, Sender};
use sled::transaction::Transactional;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Messages to the writer thread.
pub(crate) enum WriterMsg {
    /// A save starts (sent before any of its chunks).
    Begin {
        seq: u64,
        key: Vec<u8>,
        loop_path: Vec<(String, i64)>,
        object: String,
        written_at: i64,
    },
    /// A chunk is ready.
    Chunk {
        seq: u64,
        index: u32,
        hash: [u8; 32],
        raw_len: u32,
        body: ChunkBody,
    },
    /// A save has sent all its `chunks`.
    End {
        seq: u64,
        chunks: u32,
        raw_len: u64,
        hash: [u8; 32],
    },
    /// A worker failed; poisons the writer.
    Failed { detail: String },
    /// Answer once every save with a sequence number below `upto` is
    /// committed (durable), or with the failure that poisoned the writer.
    Flush {
        upto: u64,
        ack: Sender<Result<(), String>>,
    },
    /// Run garbage collection (no save may be in flight).
    Gc { ack: Sender<crate::Result<GcStats>> },
}

/// What a worker found for one chunk.
pub(crate) enum ChunkBody {
    /// The index already holds the chunk, at this location.
    Stored(Loc),
    /// A new chunk, sealed into a frame for the pack.
    New(Frame),
}

struct Pending {
    key: Vec<u8>,
    loop_path: Vec<(String, i64)>,
    object: String,
    written_at: i64,
    refs: Vec<Option<ChunkRef>>,
    received: u32,
    end: Option<(u32, u64, [u8; 32])>,
    new_bytes: u64,
}

impl Pending {
    fn complete(&self) -> bool {
        matches!(self.end, Some((n, ..)) if n == self.received)
    }
}

/// State of the writer thread.
pub(crate) struct Writer {
    pub(super) shared: Arc<Shared>,
    pack_target: u64,
    pub(super) pack: Option<PackWriter>,
    /// Packs that filled up since the last commit, not yet fsynced.
    pub(super) rolled: Vec<PackWriter>,
    next_pack: u32,
    objects: BTreeMap<u64, Pending>,
    /// Every save with a smaller sequence number is committed.
    committed: u64,
    /// Chunks appended since the last commit, not yet in the index.
    unindexed: HashMap<[u8; 32], Loc>,
    waiters: Vec<(u64, Sender<Result<(), String>>)>,
    poisoned: Option<String>,
}

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, pack_target: u64, next_pack: u32) -> Writer {
        Writer {
            shared,
            pack_target,
            pack: None,
            rolled: Vec::new(),
            next_pack,
            objects: BTreeMap::new(),
            committed: 0,
            unindexed: HashMap::new(),
            waiters: Vec::new(),
            poisoned: None,
        }
    }

    /// Runs until every sender is dropped, then commits what is complete.
    pub(crate) fn run(mut self, rx: Receiver<WriterMsg>) {
        while let Ok(msg) = rx.recv() {
            self.handle(msg);
            if rx.is_empty() || !self.waiters.is_empty() || self.ready() >= 64 {
                self.commit_ready();
            }
        }
        self.commit_ready();
    }

    fn handle(&mut self, msg: WriterMsg) {
        if let Some(p) = &self.poisoned {
            match msg {
                WriterMsg::Flush { ack, .. } => {
                    let _ = ack.send(Err(p.clone()));
                }
                WriterMsg::Gc { ack } => {
                    let _ = ack.send(Err(crate::Error::Poisoned(p.clone())));
                }
                _ => {}
            }
            return;
        }
        let r = match msg {
            WriterMsg::Begin {
                seq,
                key,
                loop_path,
                object,
                written_at,
            } => {
                let p = Pending {
                    key,
                    loop_path,
                    object,
                    written_at,
                    refs: Vec::new(),
                    received: 0,
                    end: None,
                    new_bytes: 0,
                };
                self.objects.insert(seq, p);
                Ok(())
            }
            WriterMsg::Chunk {
                seq,
                index,
                hash,
                raw_len,
                body,
            } => self.chunk(seq, index, hash, raw_len, body),
            WriterMsg::End {
                seq,
                chunks,
                raw_len,
                hash,
            } => match self.objects.get_mut(&seq) {
                Some(p) if p.refs.len() <= chunks as usize => {
                    p.end = Some((chunks, raw_len, hash));
                    Ok(())
                }
                _ => Err(format!(
                    "internal: end of unknown or inconsistent save #{seq}"
                )),
            },
            WriterMsg::Failed { detail } => Err(detail),
            WriterMsg::Flush { upto, ack } => {
                if upto <= self.committed {
                    let _ = ack.send(Ok(()));
                } else {
                    self.waiters.push((upto, ack));
                }
                Ok(())
            }
            WriterMsg::Gc { ack } => {
                self.commit_ready();
                let r = match &self.poisoned {
                    Some(p) => Err(crate::Error::Poisoned(p.clone())),
                    None if !self.objects.is_empty() => Err(crate::Error::Input(
                        "internal: gc while saves are in flight".into(),
                    )),
                    None => self.collect(),
                };
                // A failed durable write poisons; damaged data changed nothing.
                let failed = match &r {
                    Err(crate::Error::Corrupt { .. }) | Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                };
                let _ = ack.send(r);
                failed.map_or(Ok(()), Err)
            }
        };
        if let Err(detail) = r {
            self.poison(detail);
        }
    }

    fn chunk(
        &mut self,
        seq: u64,
        index: u32,
        hash: [u8; 32],
        raw_len: u32,
        body: ChunkBody,
    ) -> Result<(), String> {
        let mut new_bytes = 0;
        let loc = match body {
            ChunkBody::Stored(loc) => loc,
            ChunkBody::New(frame) => {
                if let Some(loc) = self.unindexed.get(&hash).copied().or(self.indexed(&hash)?) {
                    // Stored meanwhile (by another save in flight, or
                    // committed after the worker looked): keep the one copy.
                    loc
                } else {
                    let loc = self.append(&frame.parts())?;
                    self.unindexed.insert(hash, loc);
                    new_bytes = u64::from(loc.frame_len);
                    loc
                }
            }
        };
        let Some(p) = self.objects.get_mut(&seq) else {
            return Err(format!("internal: chunk of unknown save #{seq}"));
        };
        let i = index as usize;
        if p.refs.len() <= i {
            p.refs.resize(i + 1, None);
        }
        if p.refs[i]
            .replace(ChunkRef::at(hash, raw_len, loc))
            .is_some()
        {
            return Err(format!("internal: chunk {i} of save #{seq} arrived twice"));
        }
        p.received += 1;
        p.new_bytes += new_bytes;
        Ok(())
    }

    /// The index entry of `hash`, if any.
    fn indexed(&self, hash: &[u8; 32]) -> Result<Option<Loc>, String> {
        let v =
            self.shared.chunks.get(hash).map_err(|e| {
                format!("index lookup in {}: {e}", self.shared.index_path.display())
            })?;
        Ok(v.as_deref().and_then(Loc::decode))
    }

    /// Appends a sealed frame to the active pack, starting a new pack when
    /// there is none or it has reached the target size.
    pub(super) fn append(&mut self, frame: &[&[u8]]) -> Result<Loc, String> {
        if self
            .pack
            .as_ref()
            .is_some_and(|p| p.len() >= self.pack_target)
        {
            if let Some(full) = self.pack.take() {
                self.rolled.push(full);
            }
        }
        let pack = match &mut self.pack {
            Some(p) => p,
            None => {
                let id = self.next_pack;
                let p = PackWriter::create(self.shared.readers.dir(), id).map_err(|e| {
                    format!(
                        "creating pack {}: {e}",
                        super::pack::pack_path(self.shared.readers.dir(), id).display()
                    )
                })?;
                self.next_pack = id.checked_add(1).ok_or("pack ids exhausted")?;
                self.pack.insert(p)
            }
        };
        pack.append(frame)
            .map_err(|e| format!("appending to pack {}: {e}", pack.path.display()))
    }

    /// Makes every pack written since the last commit durable.
    pub(super) fn sync_packs(&mut self) -> Result<(), String> {
        for p in self.rolled.iter_mut().chain(self.pack.as_mut()) {
            p.sync()
                .map_err(|e| format!("fsync of pack {}: {e}", p.path.display()))?;
        }
        self.rolled.clear();
        Ok(())
    }

    /// Number of consecutive complete saves from the next one to commit.
    fn ready(&self) -> usize {
        let mut n = 0;
        for (&seq, p) in &self.objects {
            if seq != self.committed + n as u64 || !p.complete() {
                break;
            }
            n += 1;
        }
        n
    }

    fn commit_ready(&mut self) {
        if self.poisoned.is_some() {
            return;
        }
        let n = self.ready();
        if n > 0 {
            if let Err(detail) = self.commit(n) {
                self.poison(detail);
                return;
            }
        }
        let committed = self.committed;
        self.waiters.retain(|(upto, ack)| {
            if *upto <= committed {
                let _ = ack.send(Ok(()));
                false
            } else {
                true
            }
        });
    }

    fn commit(&mut self, n: usize) -> Result<(), String> {
        let index_path = self.shared.index_path.clone();
        let sled_err = |what: &str, e: sled::Error| {
            format!("{what} in checkpoint index {}: {e}", index_path.display())
        };
        // 1. Chunk bytes durable.
        self.sync_packs()?;
        // 2. Index entries durable.
        if !self.unindexed.is_empty() {
            let mut batch = sled::Batch::default();
            for (hash, loc) in &self.unindexed {
                batch.insert(&hash[..], &loc.encode()[..]);
            }
            self.shared
                .chunks
                .apply_batch(batch)
                .map_err(|e| sled_err("inserting chunks", e))?;
            self.shared
                .db
                .flush()
                .map_err(|e| sled_err("flushing", e))?;
            self.unindexed.clear();
        }
        // 3. Manifests and their heads durable, together.
        let mut batch = sled::Batch::default();
        let mut heads = sled::Batch::default();
        for _ in 0..n {
            let Some((seq, p)) = self.objects.pop_first() else {
                break;
            };
            let Some((_, raw_len, hash)) = p.end else {
                return Err(format!("internal: committing unfinished save #{seq}"));
            };
            let chunks: Option<Vec<ChunkRef>> = p.refs.into_iter().collect();
            let chunks = chunks.ok_or_else(|| format!("internal: save #{seq} lacks a chunk"))?;
            let m = Manifest {
                version: MANIFEST_VERSION,
                loop_path: p.loop_path,
                object: p.object,
                raw_len,
                hash,
                written_at: p.written_at,
                new_bytes: p.new_bytes,
                chunks,
            };
            heads.insert(
                p.key.clone(),
                Head::of(&m)
                    .encode()
                    .map_err(|e| format!("internal: encoding a checkpoint head: {e}"))?,
            );
            batch.insert(
                p.key,
                m.encode()
                    .map_err(|e| format!("internal: encoding a manifest: {e}"))?,
            );
        }
        let both: sled::transaction::TransactionResult<(), ()> =
            (&self.shared.manifests, &self.shared.heads).transaction(|(m, h)| {
                m.apply_batch(&batch)?;
                h.apply_batch(&heads)?;
                Ok(())
            });
        both.map_err(|e| match e {
            sled::transaction::TransactionError::Storage(e) => sled_err("inserting manifests", e),
            sled::transaction::TransactionError::Abort(()) => {
                "internal: the manifest transaction aborted".to_string()
            }
        })?;
        self.shared
            .db
            .flush()
            .map_err(|e| sled_err("flushing", e))?;
        self.committed += n as u64;
        Ok(())
    }

    fn poison(&mut self, detail: String) {
        let detail = format!("checkpoints of run {}: {detail}", self.shared.run);
        self.shared.set_poison(&detail);
        for (_, ack) in self.waiters.drain(..) {
            let _ = ack.send(Err(detail.clone()));
        }
        self.objects.clear();
        self.unindexed.clear();
        self.poisoned = Some(detail);
    }
}
