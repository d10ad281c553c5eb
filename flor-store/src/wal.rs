//! The per-process write-ahead log (DESIGN.md §6, docs/FORMAT.md "wal").
//!
//! A [`WalWriter`] owns one file `.flor/wal/<tstamp>-<run_id>.<writer>.wal`,
//! locked with `flock(LOCK_EX)` while its process lives, so a recovering
//! process knows a WAL whose lock it can take belongs to a dead process.
//!
//! File layout: the 8-byte magic `FLORWAL1`, a `u32` LE format version, then
//! frames `[u32 LE payload length][u32 LE crc32 of payload][payload]`, where
//! the payload is a [`WalEntry`] encoded by [`crate::codec`]. Recovery reads
//! frames up to the first one that is short or fails its checksum: a torn
//! final frame is dropped; a bad frame followed by more bytes is reported as
//! corruption at its offset (the prefix before it is still recovered).

use crate::error::IoContext;
use crate::{codec, Error, Result};
use flor_core::{LoopFrame, Record, RunKey, Source};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The first bytes of every WAL file.
pub const MAGIC: &[u8; 8] = b"FLORWAL1";
/// The WAL format version written after the magic.
pub const WAL_VERSION: u32 = 1;
/// Largest frame payload accepted on read (1 GiB); larger lengths are corruption.
pub const MAX_FRAME: u32 = 1 << 30;

/// Identity of the run a WAL (and the segments sealed from it) belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// Project id (the repository directory's name).
    pub projid: String,
    /// Script path relative to the repository root.
    pub filename: String,
    /// The run.
    pub key: RunKey,
    /// `forward`, or `replay` for a replay worker adding to an old run.
    pub source: Source,
    /// Random id of the writing process, distinguishing several writers of one run.
    pub writer: u64,
}

impl RunMeta {
    /// `"<tstamp>-<run_id>.<writer>"`: the stem of this writer's files.
    pub fn stem(&self) -> String {
        format!("{}.{:016x}", self.key.file_stem(), self.writer)
    }
}

/// Run-level figures known at seal time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Seconds from the run's start to its first outer loop.
    pub setup_s: Option<f64>,
    /// Seconds from the end of the last outer loop to the seal.
    pub teardown_s: Option<f64>,
    /// Seconds from the run's start to the seal.
    pub wall_s: Option<f64>,
    /// The run's `arg` values as a JSON object text.
    pub args: String,
}

/// One WAL frame's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WalEntry {
    /// First entry of every WAL.
    Begin(RunMeta),
    /// Everything logged since the previous frame.
    Batch(Batch),
    /// The run-level summary, written just before sealing.
    Summary(RunSummary),
}

/// Records, frames and names accumulated between two WAL frames.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Batch {
    /// Newly interned names: `(id, name)`.
    pub names: Vec<(u32, String)>,
    /// Newly started loop iterations.
    pub frames: Vec<LoopFrame>,
    /// Finished iterations: `(ctx_id, duration in seconds)`.
    pub frame_ends: Vec<(u64, f64)>,
    /// Logged values, in call order.
    pub records: Vec<Record>,
}

impl Batch {
    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
            && self.frames.is_empty()
            && self.frame_ends.is_empty()
            && self.records.is_empty()
    }

    /// Concatenates `parts` in order, each vector allocated once at its
    /// final size (no regrowth copies).
    pub fn concat(parts: Vec<Batch>) -> Batch {
        let mut out = Batch {
            names: Vec::with_capacity(parts.iter().map(|b| b.names.len()).sum()),
            frames: Vec::with_capacity(parts.iter().map(|b| b.frames.len()).sum()),
            frame_ends: Vec::with_capacity(parts.iter().map(|b| b.frame_ends.len()).sum()),
            records: Vec::with_capacity(parts.iter().map(|b| b.records.len()).sum()),
        };
        for b in parts {
            out.extend(b);
        }
        out
    }

    /// Appends `other` to `self`.
    pub fn extend(&mut self, other: Batch) {
        self.names.extend(other.names);
        self.frames.extend(other.frames);
        self.frame_ends.extend(other.frame_ends);
        self.records.extend(other.records);
    }
}

/// Appends frames to one WAL file. Not thread-safe by itself: the background
/// writer in [`crate::store`] owns it.
#[derive(Debug)]
pub struct WalWriter {
    path: PathBuf,
    file: File,
    poisoned: Option<String>,
}

fn flock(file: &File, blocking: bool) -> bool {
    use std::os::unix::io::AsRawFd;
    let op = if blocking {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    // SAFETY: the descriptor is valid for the lifetime of `file`.
    unsafe { libc::flock(file.as_raw_fd(), op) == 0 }
}

impl WalWriter {
    /// Creates the WAL for `meta` in `dir`, locks it, writes the header and
    /// the `Begin` entry (fsynced, so the run is recoverable from then on).
    ///
    /// The file is born as `<stem>.wal.new`, a name recovery never opens,
    /// and renamed to `<stem>.wal` only once it is locked and holds its
    /// header and `Begin`: a recovering process listing the directory at any
    /// moment sees either no WAL or a locked, complete one (it never takes
    /// the lock of a WAL whose writer has not locked it yet).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be created, locked, written or
    /// renamed.
    pub fn create(dir: &Path, meta: &RunMeta) -> Result<WalWriter> {
        std::fs::create_dir_all(dir).at(dir)?;
        let path = dir.join(format!("{}.wal", meta.stem()));
        let new = dir.join(format!("{}.wal.new", meta.stem()));
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&new)
            .at(&new)?;
        if !flock(&file, false) {
            return Err(Error::Io {
                path: new,
                source: std::io::Error::other("WAL is locked by another process"),
            });
        }
        let mut w = WalWriter {
            path: new,
            file,
            poisoned: None,
        };
        let mut header = Vec::with_capacity(12);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&WAL_VERSION.to_le_bytes());
        w.write_raw(&header)?;
        w.append(&WalEntry::Begin(meta.clone()))?;
        w.sync()?;
        // Not followed by a directory fsync (it cost a run's first `log`
        // ~10–25 ms): after a power failure the file may be back under its
        // `.wal.new` name, which recovery treats as a WAL once it is a
        // minute old.
        std::fs::rename(&w.path, &path).at(&path)?;
        w.path = path;
        Ok(w)
    }

    /// The WAL's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(why) = &self.poisoned {
            return Err(Error::Poisoned(why.clone()));
        }
        if let Err(e) = self.file.write_all(bytes) {
            self.poisoned = Some(format!("write to {}: {e}", self.path.display()));
            return Err(Error::Io {
                path: self.path.clone(),
                source: e,
            });
        }
        Ok(())
    }

    /// Appends one framed entry (one `write` call; durable against a process
    /// kill once it returns, against power loss after [`WalWriter::sync`]).
    ///
    /// # Errors
    /// [`Error::Io`] on a failed write, after which every call returns
    /// [`Error::Poisoned`].
    pub fn append(&mut self, entry: &WalEntry) -> Result<()> {
        let payload = codec::encode(entry).map_err(Error::Input)?;
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l <= MAX_FRAME)
            .ok_or_else(|| {
                Error::Input(format!(
                    "WAL frame of {} bytes exceeds 1 GiB",
                    payload.len()
                ))
            })?;
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.extend_from_slice(&len.to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        self.write_raw(&frame)
    }

    /// fsyncs the WAL.
    ///
    /// # Errors
    /// [`Error::Io`]; the writer is poisoned afterwards.
    pub fn sync(&mut self) -> Result<()> {
        if let Err(e) = self.file.sync_data() {
            self.poisoned = Some(format!("fsync {}: {e}", self.path.display()));
            return Err(Error::Io {
                path: self.path.clone(),
                source: e,
            });
        }
        Ok(())
    }

    /// Reads back every frame written so far (through a separate handle,
    /// so appending continues where it was), as [`read_wal`] does.
    ///
    /// # Errors
    /// As [`read_wal`].
    pub fn read_back(&self) -> Result<Recovered> {
        let file = File::open(&self.path).at(&self.path)?;
        read_wal(&self.path, &file)
    }

    /// Deletes the WAL (after its run is sealed), keeping the lock to the end.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be removed.
    pub fn remove(self) -> Result<()> {
        std::fs::remove_file(&self.path).at(&self.path)
    }
}

/// What [`read_wal`] found in a WAL file.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The run, from the `Begin` entry; `None` when even that was torn.
    pub meta: Option<RunMeta>,
    /// Every batch, in order (as framed; see [`crate::segment::RunParts`]).
    pub batches: Vec<Batch>,
    /// The summary, when the process got that far.
    pub summary: Option<RunSummary>,
    /// Corruption before the tail: `(byte offset, detail)`.
    pub corruption: Option<(u64, String)>,
}

/// Tries to take a dead process's WAL: `Some(file)` (locked) when no live
/// process holds it, `None` when its writer is alive.
///
/// # Errors
/// [`Error::Io`] when it cannot be opened.
pub fn claim(path: &Path) -> Result<Option<File>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .at(path)?;
    Ok(if flock(&file, false) {
        Some(file)
    } else {
        None
    })
}

/// Reads every intact frame of a WAL (see the module docs for the policy).
///
/// # Errors
/// [`Error::Io`] when it cannot be read; [`Error::Corrupt`] when the header
/// is wrong (not a flordb WAL, or a newer version).
pub fn read_wal(path: &Path, mut file: &File) -> Result<Recovered> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).at(path)?;
    let mut out = Recovered::default();
    if bytes.len() < 12 {
        return Ok(out); // torn before the header finished: nothing was acknowledged
    }
    if &bytes[..8] != MAGIC {
        return Err(Error::Corrupt {
            path: path.into(),
            offset: 0,
            detail: "not a flordb WAL (bad magic)".into(),
        });
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != WAL_VERSION {
        return Err(Error::Corrupt {
            path: path.into(),
            offset: 8,
            detail: format!("WAL version {version}, expected {WAL_VERSION}"),
        });
    }
    // Frame boundaries first (cheap), then checksums and decoding on up to
    // four threads (a seal reads the whole run back through here), then the
    // entries in order, stopping at the first bad frame.
    let mut frames = Vec::new();
    let mut pos = 12usize;
    while pos < bytes.len() {
        let Some(head) = bytes.get(pos..pos + 8) else {
            break;
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let end = pos + 8 + len;
        if end > bytes.len() {
            break; // torn tail
        }
        frames.push((pos, end, crc));
        pos = end;
    }
    let decode = |&(pos, end, crc): &(usize, usize, u32)| -> std::result::Result<WalEntry, String> {
        let payload = &bytes[pos + 8..end];
        if crc32fast::hash(payload) == crc {
            codec::decode::<WalEntry>(payload)
        } else {
            Err("checksum mismatch".into())
        }
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(4);
    let decoded: Vec<std::result::Result<WalEntry, String>> = if threads < 2 || frames.len() < 8 {
        frames.iter().map(decode).collect()
    } else {
        let per = frames.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = frames
                .chunks(per)
                .map(|part| {
                    (
                        part.len(),
                        std::thread::Builder::new()
                            .spawn_scoped(s, move || part.iter().map(decode).collect::<Vec<_>>())
                            .ok(),
                        part,
                    )
                })
                .collect();
            let mut all = Vec::with_capacity(frames.len());
            for (n, h, part) in handles {
                match h.map(|h| h.join()) {
                    Some(Ok(v)) => all.extend(v),
                    Some(Err(_)) => all.extend(
                        (0..n).map(|_| Err("the WAL decoding thread panicked".to_string())),
                    ),
                    None => all.extend(part.iter().map(decode)),
                }
            }
            all
        })
    };
    let mut parts = Vec::new();
    for (&(pos, end, _), entry) in frames.iter().zip(decoded) {
        match entry {
            Ok(WalEntry::Begin(m)) => out.meta = Some(m),
            Ok(WalEntry::Batch(b)) => parts.push(b),
            Ok(WalEntry::Summary(s)) => out.summary = Some(s),
            Err(detail) => {
                if end < bytes.len() {
                    out.corruption = Some((pos as u64, detail));
                }
                break;
            }
        }
    }
    out.batches = parts;
    Ok(out)
}
