//! Garbage collection: drop chunks no manifest references, then delete
//! packs that hold no live chunk and rewrite packs that are mostly dead.
//!
//! Runs on the writer thread with no save in flight. Crash-safe by
//! ordering: dead index entries are removed (and flushed) first; live frames
//! of a pack being rewritten are copied to a new pack, which is fsynced
//! before the index points at the copies (flushed); then every manifest
//! whose recorded chunk locations differ from the index's is rewritten
//! (flushed); only then are old packs deleted. A crash in between leaves
//! unreferenced bytes that the next `gc` removes, or manifests pointing at
//! old copies that still exist and that the next `gc` re-points before it
//! deletes them — never a dangling index entry or manifest location.

use super::manifest::{ChunkRef, Manifest, MANIFEST_VERSION};
use super::pack::{check_crc, list_packs, open_frame, sync_dir, Loc, PACK_HEADER_LEN};
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
        let mut manifests = Vec::new();
        for kv in sh.manifests.iter() {
            let (k, v) = kv.map_err(sled_err)?;
            let m = Manifest::decode(&v).map_err(|detail| Error::Corrupt {
                path: sh.index_path.clone(),
                offset: 0,
                detail: format!(
                    "{detail}; gc stopped without deleting anything it cannot account for"
                ),
            })?;
            live.extend(m.chunks.iter().map(|c| c.hash));
            manifests.push((k, m));
        }

        // Split the index into dead entries and live entries per pack.
        let mut dead = Vec::new();
        let mut by_pack: HashMap<u32, Vec<([u8; 32], Loc)>> = HashMap::new();
        let mut locs: HashMap<[u8; 32], Loc> = HashMap::with_capacity(live.len());
        for kv in sh.chunks.iter() {
            let (k, v) = kv.map_err(sled_err)?;
            let hash: Option<[u8; 32]> = k.as_ref().try_into().ok();
            match (hash, Loc::decode(&v)) {
                (Some(h), Some(loc)) if live.contains(&h) => {
                    by_pack.entry(loc.pack).or_default().push((h, loc));
                    locs.insert(h, loc);
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
        // A live chunk the index lacks would have its pack deleted under a
        // manifest that still points into it.
        if let Some(h) = live.iter().find(|h| !locs.contains_key(*h)) {
            return Err(Error::Corrupt {
                path: sh.index_path.clone(),
                offset: 0,
                detail: format!(
                    "live chunk {} is not in the chunk index; gc stopped without deleting anything",
                    hex(h)
                ),
            });
        }
        // Where a manifest records another location than the index (a crash
        // during an earlier collection left it at the old copy, or damage),
        // the index's copy is checked before any manifest is pointed at it.
        let mut buf = Vec::new();
        let mut verified = HashSet::new();
        for (_, m) in manifests.iter().filter(|(_, m)| m.located()) {
            for c in &m.chunks {
                let Some(&loc) = locs.get(&c.hash) else {
                    continue;
                };
                if c.loc() == loc || !verified.insert(c.hash) {
                    continue;
                }
                let at = super::pack::pack_path(sh.readers.dir(), loc.pack);
                let checked = sh
                    .readers
                    .read(loc, &mut buf)
                    .map_err(|e| e.to_string())
                    .and_then(|()| open_frame(&buf, &c.hash, c.raw_len).map(|_| ()));
                if let Err(detail) = checked {
                    return Err(Error::Corrupt {
                        path: at,
                        offset: loc.offset,
                        detail: format!(
                            "the index's copy of chunk {} (the manifest of {:?} at {} records another) fails to check: {detail}; gc stopped without deleting anything",
                            hex(&c.hash),
                            m.object,
                            super::loop_path_text(&m.loop_path)
                        ),
                    });
                }
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
            locs.extend(moves.iter().copied());
        }
        let manifests_rewritten =
            relocate(&sh.manifests, manifests, &locs).map_err(|e| match e {
                Relocate::Sled(e) => sled_err(e),
                Relocate::Encode(detail) => Error::Poisoned(detail),
            })?;
        if manifests_rewritten > 0 {
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
            manifests_rewritten,
            bytes_before,
            bytes_after,
        })
    }
}

enum Relocate {
    Sled(sled::Error),
    Encode(String),
}

/// Rewrites each of `manifests` whose recorded chunk locations differ from
/// `locs` (the index after any moves), or that records none (version 1),
/// as a current-version manifest; returns how many it rewrote. Every live
/// chunk is in `locs` (checked before anything was changed).
fn relocate(
    tree: &sled::Tree,
    manifests: Vec<(sled::IVec, Manifest)>,
    locs: &HashMap<[u8; 32], Loc>,
) -> std::result::Result<u64, Relocate> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    for (k, mut m) in manifests {
        let mut changed = !m.located();
        let relocated: Option<Vec<ChunkRef>> = m
            .chunks
            .iter()
            .map(|c| {
                let loc = *locs.get(&c.hash)?;
                changed |= c.loc() != loc;
                Some(ChunkRef::at(c.hash, c.raw_len, loc))
            })
            .collect();
        // (A chunk missing from `locs` leaves the manifest as it is.)
        if let (true, Some(chunks)) = (changed, relocated) {
            m.chunks = chunks;
            m.version = MANIFEST_VERSION;
            batch.insert(k, m.encode().map_err(Relocate::Encode)?);
            n += 1;
        }
    }
    if n > 0 {
        tree.apply_batch(batch).map_err(Relocate::Sled)?;
    }
    Ok(n)
}

/// The first 8 bytes of a hash in hex, for messages.
pub(crate) fn hex(h: &[u8; 32]) -> String {
    h[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::manifest::{encode_v1, Manifest};
    use super::super::CheckpointStore;

    const RUN: &str = "1700000000000000-00000000000000aa";

    fn manifests(index: &std::path::Path) -> (sled::Db, sled::Tree) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let db = loop {
            match sled::open(index) {
                Ok(db) => break db,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                Err(e) => panic!("{e}"),
            }
        };
        let t = db.open_tree("manifests").unwrap();
        (db, t)
    }

    /// A store whose manifests predate chunk locations (version 1) loads
    /// through the index; gc rewrites its manifests with their locations.
    #[test]
    fn gc_records_the_locations_of_version_1_manifests() {
        let dir = tempfile::tempdir().unwrap();
        let at = |e: i64| vec![("epoch".to_string(), e)];
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        {
            let s = CheckpointStore::open(dir.path(), RUN).unwrap();
            s.save(&at(0), "model", &data).unwrap();
            s.save(&at(1), "model", &data).unwrap();
            s.close().unwrap();
        }
        let index = dir.path().join("checkpoints").join(RUN).join("index");
        {
            let (db, t) = manifests(&index);
            for kv in t.iter() {
                let (k, v) = kv.unwrap();
                let m = Manifest::decode(&v).unwrap();
                t.insert(k, encode_v1(&m)).unwrap();
            }
            db.flush().unwrap();
        }
        let s = CheckpointStore::open(dir.path(), RUN).unwrap();
        assert_eq!(s.load(&at(1), "model").unwrap(), data);
        let stats = s.gc().unwrap();
        assert_eq!(stats.manifests_rewritten, 2, "{stats:?}");
        assert_eq!(
            s.gc().unwrap().manifests_rewritten,
            0,
            "nothing left to rewrite"
        );
        drop(s);
        let (_db, t) = manifests(&index);
        let versions: Vec<bool> = t
            .iter()
            .map(|kv| Manifest::decode(&kv.unwrap().1).unwrap().located())
            .collect();
        assert_eq!(versions, vec![true, true]);
    }
}
