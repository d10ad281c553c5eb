//! Garbage collection: drop chunks no manifest references, then delete
//! packs that hold no live chunk and rewrite packs that are mostly dead.
//!
//! Runs on the writer thread with no save in flight. Crash-safe by
//! ordering: dead index entries are removed (and flushed) first; live frames
//! of a pack being rewritten are copied to a new pack, which is fsynced
//! before the index points at the copies (flushed); only then are old packs
//! deleted. A crash in between leaves unreferenced bytes that the next `gc`
//! removes, never a dangling index entry.

use super::manifest::Manifest;
use super::pack::{check_crc, list_packs, sync_dir, Loc, PACK_HEADER_LEN};
use super::writer::Writer;
use super::GcStats;
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};

impl Writer {
    /// Runs one collection; see the module documentation.
    pub(super) fn collect(&mut self) -> Result<GcStats> {
        let sh = self.shared.clone();
        let sled_err = |e: sled::Error| Error::Sled {
            path: sh.index_path.clone(),
            detail: e.to_string(),
        };
        let io_err = |path: &std::path::Path, e: std::io::Error| Error::Io {
            path: path.to_path_buf(),
            source: e,
        };
        let poisoned = |d: String| Error::Poisoned(d);

        // Close the active pack so that it can be collected too.
        self.sync_packs().map_err(poisoned)?;
        self.pack = None;

        // Every chunk some manifest references.
        let mut live: HashSet<[u8; 32]> = HashSet::new();
        for kv in sh.manifests.iter() {
            let (_, v) = kv.map_err(sled_err)?;
            let m = Manifest::decode(&v).map_err(|detail| Error::Corrupt {
                path: sh.index_path.clone(),
                offset: 0,
                detail: format!(
                    "{detail}; gc stopped without deleting anything it cannot account for"
                ),
            })?;
            live.extend(m.chunks.iter().map(|c| c.hash));
        }

        // Split the index into dead entries and live entries per pack.
        let mut dead = Vec::new();
        let mut by_pack: HashMap<u32, Vec<([u8; 32], Loc)>> = HashMap::new();
        for kv in sh.chunks.iter() {
            let (k, v) = kv.map_err(sled_err)?;
            let hash: Option<[u8; 32]> = k.as_ref().try_into().ok();
            match (hash, Loc::decode(&v)) {
                (Some(h), Some(loc)) if live.contains(&h) => {
                    by_pack.entry(loc.pack).or_default().push((h, loc))
                }
                (Some(h), None) if live.contains(&h) => {
                    return Err(Error::Corrupt {
                        path: sh.index_path.clone(),
                        offset: 0,
                        detail: format!("index entry of live chunk {} is malformed", hex(&h)),
                    })
                }
                _ => dead.push(k),
            }
        }
        let chunks_removed = dead.len() as u64;
        if !dead.is_empty() {
            let mut batch = sled::Batch::default();
            for k in dead {
                batch.remove(k);
            }
            sh.chunks.apply_batch(batch).map_err(sled_err)?;
            sh.db.flush().map_err(sled_err)?;
        }

        // Choose packs: no live bytes → delete; under half live → rewrite.
        let dir = sh.readers.dir().to_path_buf();
        let packs = list_packs(&dir).map_err(|e| io_err(&dir, e))?;
        let bytes_before: u64 = packs.iter().map(|p| p.2).sum();
        let mut delete = Vec::new();
        let mut rewritten = 0u64;
        let mut moves = Vec::new();
        let mut buf = Vec::new();
        for (id, path, len) in &packs {
            let entries = by_pack.remove(id).unwrap_or_default();
            let live_bytes: u64 = entries.iter().map(|(_, l)| u64::from(l.frame_len)).sum();
            if live_bytes == 0 {
                delete.push((*id, path.clone()));
            } else if live_bytes * 2 < len.saturating_sub(PACK_HEADER_LEN) {
                for (h, loc) in entries {
                    sh.readers
                        .read(loc, &mut buf)
                        .map_err(|e| io_err(path, e))?;
                    check_crc(&buf).map_err(|detail| Error::Corrupt {
                        path: path.clone(),
                        offset: loc.offset,
                        detail: format!("chunk {}: {detail}", hex(&h)),
                    })?;
                    moves.push((h, self.append(&[&buf]).map_err(poisoned)?));
                }
                rewritten += 1;
                delete.push((*id, path.clone()));
            }
        }
        if let Some((id, _)) = by_pack.iter().next() {
            return Err(Error::Corrupt {
                path: sh.index_path.clone(),
                offset: 0,
                detail: format!("live chunks point into pack {id}, which does not exist"),
            });
        }
        if !moves.is_empty() {
            self.sync_packs().map_err(poisoned)?;
            let mut batch = sled::Batch::default();
            for (h, loc) in &moves {
                batch.insert(&h[..], &loc.encode()[..]);
            }
            sh.chunks.apply_batch(batch).map_err(sled_err)?;
            sh.db.flush().map_err(sled_err)?;
        }
        for (id, path) in &delete {
            sh.readers.forget(*id);
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(path, e)),
                _ => {}
            }
        }
        if !delete.is_empty() {
            sync_dir(&dir).map_err(|e| io_err(&dir, e))?;
        }
        let bytes_after = list_packs(&dir)
            .map_err(|e| io_err(&dir, e))?
            .iter()
            .map(|p| p.2)
            .sum();
        Ok(GcStats {
            chunks_removed,
            packs_deleted: delete.len() as u64,
            packs_rewritten: rewritten,
            bytes_before,
            bytes_after,
        })
    }
}

/// The first 8 bytes of a hash in hex, for messages.
pub(crate) fn hex(h: &[u8; 32]) -> String {
    h[..8].iter().map(|b| format!("{b:02x}")).collect()
}
