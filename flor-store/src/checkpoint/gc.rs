//! Garbage collection: drop chunks no manifest references, then delete
//! packs that hold no live chunk and rewrite packs that are mostly dead.
//!
//! Runs on the writer thread with no save in flight. Before anything
//! changes, every manifest is checked against the index (`relocate.rs`): a
//! live chunk missing from the index, or a chunk whose every copy fails to
//! check, stops gc; an index entry whose copy is damaged while the copy the
//! manifest records is sound is mended (flushed). Crash-safe by
//! ordering: dead index entries are removed (and flushed) first; live frames
//! of a pack being rewritten are copied to a new pack, which is fsynced
//! before the index points at the copies (flushed); then every manifest
//! whose recorded chunk locations differ from the index's is rewritten
//! (flushed); a store written before manifest heads existed gets every
//! head and then its `meta` mark (flushed); only then are old packs
//! deleted. A crash in between leaves unreferenced bytes that the next
//! `gc` removes, or manifests pointing at old copies that still exist and
//! that the next `gc` re-points before it deletes them — never a dangling
//! index entry or manifest location.

use super::heads::{Head, HEADS_COMPLETE};
use super::pack::{check_crc, list_packs, sync_dir, Loc, PACK_HEADER_LEN};
use super::relocate::{check_against_index, each_manifest, relocate};
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
        each_manifest(&sh, |_, m| {
            live.extend(m.chunks.iter().map(|c| c.hash));
            Ok(())
        })?;

        // Split the index into dead entries and the live chunks' locations.
        let mut dead = Vec::new();
        let mut locs: HashMap<[u8; 32], Loc> = HashMap::with_capacity(live.len());
        for kv in sh.chunks.iter() {
            let (k, v) = kv.map_err(sled_err)?;
            let hash: Option<[u8; 32]> = k.as_ref().try_into().ok();
            match (hash, Loc::decode(&v)) {
                (Some(h), Some(loc)) if live.contains(&h) => {
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
        drop(live);
        // Manifests against the index; index entries whose copy is damaged
        // while the manifest's is sound are mended first.
        let repairs = check_against_index(&sh, &mut locs)?;
        if !repairs.is_empty() {
            let mut batch = sled::Batch::default();
            for (h, loc) in &repairs {
                batch.insert(&h[..], &loc.encode()[..]);
            }
            sh.chunks.apply_batch(batch).map_err(sled_err)?;
            sh.db.flush().map_err(sled_err)?;
        }
        let mut by_pack: HashMap<u32, Vec<([u8; 32], Loc)>> = HashMap::new();
        for (h, loc) in &locs {
            by_pack.entry(loc.pack).or_default().push((*h, *loc));
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
            locs.extend(moves.iter().copied());
        }
        crash_point(&sh.run, CrashPoint::IndexMoved)?;
        let manifests_rewritten = relocate(&sh, &locs)?;
        if manifests_rewritten > 0 {
            sh.db.flush().map_err(sled_err)?;
        }
        if !sh.heads_complete.load(std::sync::atomic::Ordering::SeqCst) {
            write_heads(&sh)?;
        }
        crash_point(&sh.run, CrashPoint::ManifestsRelocated)?;
        for (id, path) in &delete {
            sh.readers.forget(*id);
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(path, e)),
                _ => {}
            }
            crash_point(&sh.run, CrashPoint::PackDeleted)?;
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

/// Writes the head of every manifest (a store written before heads
/// existed, `heads.rs`), then records in `meta` that every manifest has
/// one (flushed), so that `list` reads heads from now on.
fn write_heads(sh: &super::Shared) -> Result<()> {
    let mut batch = sled::Batch::default();
    each_manifest(sh, |k, m| {
        let head = Head::of(&m)
            .encode()
            .map_err(|e| Error::Poisoned(format!("internal: encoding a checkpoint head: {e}")))?;
        batch.insert(k, head);
        Ok(())
    })?;
    sh.heads.apply_batch(batch).map_err(|e| sh.sled_err(e))?;
    sh.db.flush().map_err(|e| sh.sled_err(e))?;
    let meta = sh.db.open_tree("meta").map_err(|e| sh.sled_err(e))?;
    meta.insert(HEADS_COMPLETE, &[1u8])
        .map_err(|e| sh.sled_err(e))?;
    sh.db.flush().map_err(|e| sh.sled_err(e))?;
    sh.heads_complete
        .store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(())
}

/// Where a test may stop a collection as a crash would (`cfg(test)` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum CrashPoint {
    /// The index points at the moved copies (flushed); manifests not yet
    /// re-pointed.
    IndexMoved,
    /// Manifests re-pointed (flushed); no pack deleted yet.
    ManifestsRelocated,
    /// Right after the first pack was deleted.
    PackDeleted,
}

/// The run and point at which a test stops the next collection.
#[cfg(test)]
pub(crate) static CRASH_AT: std::sync::Mutex<Option<(String, CrashPoint)>> =
    std::sync::Mutex::new(None);

/// In tests, fails the collection of `run` at `point` when [`CRASH_AT`]
/// says so, leaving what is durable as a crash there would; otherwise
/// nothing.
fn crash_point(run: &str, point: CrashPoint) -> Result<()> {
    #[cfg(test)]
    {
        let at = CRASH_AT.lock().unwrap_or_else(|e| e.into_inner());
        if at.as_ref().is_some_and(|(r, p)| r == run && *p == point) {
            return Err(Error::Poisoned(format!("simulated crash at {point:?}")));
        }
    }
    let _ = (run, point);
    Ok(())
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

    /// A collection that rewrites a pack, stopped as a crash would at each
    /// point between its durable steps: after reopening, every checkpoint
    /// loads (from the manifests alone, the index emptied) once the next
    /// collection has run, and already right after the stop.
    #[test]
    fn a_collection_stopped_at_any_point_loses_nothing() {
        use super::{CrashPoint, CRASH_AT};
        use crate::checkpoint::CheckpointOptions;
        for (i, point) in [
            CrashPoint::IndexMoved,
            CrashPoint::ManifestsRelocated,
            CrashPoint::PackDeleted,
        ]
        .into_iter()
        .enumerate()
        {
            let run = format!("1700000000000000-00000000000000b{i}");
            let dir = tempfile::tempdir().unwrap();
            let at = |e: i64| vec![("epoch".to_string(), e)];
            let bytes = |seed: u32, n: u32| -> Vec<u8> {
                (0..n)
                    .map(|i| ((i ^ seed).wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect()
            };
            let keep = bytes(1, 300_000);
            let other = bytes(2, 60_000);
            let opts = CheckpointOptions {
                pack_target_bytes: 1 << 20,
                ..Default::default()
            };
            let s = CheckpointStore::open_with(dir.path(), &run, opts).unwrap();
            s.save(
                &at(0),
                "model",
                &[keep.clone(), bytes(3, 1_500_000)].concat(),
            )
            .unwrap();
            s.save(&at(1), "other", &other).unwrap();
            s.flush().unwrap();
            s.save(&at(0), "model", &keep).unwrap();
            s.flush().unwrap();
            *CRASH_AT.lock().unwrap() = Some((run.clone(), point));
            let e = s.gc().unwrap_err();
            *CRASH_AT.lock().unwrap() = None;
            assert!(e.to_string().contains("simulated crash"), "{point:?}: {e}");
            drop(s);
            let check = |what: &str| {
                let s = CheckpointStore::open(dir.path(), &run).unwrap();
                assert_eq!(s.load(&at(0), "model").unwrap(), keep, "{point:?}, {what}");
                assert_eq!(s.load(&at(1), "other").unwrap(), other, "{point:?}, {what}");
            };
            check("right after the stop");
            let s = CheckpointStore::open(dir.path(), &run).unwrap();
            let stats = s.gc().unwrap();
            assert_eq!(
                s.gc().unwrap().manifests_rewritten,
                0,
                "{point:?}: {stats:?}"
            );
            s.close().unwrap();
            let index = dir.path().join("checkpoints").join(&run).join("index");
            {
                let (db, _) = manifests(&index);
                db.open_tree("chunks").unwrap().clear().unwrap();
                db.flush().unwrap();
            }
            check("after the next collection, the index emptied");
        }
    }

    /// Listing reads the heads, which stay equal to what the manifests
    /// say through replacements; a store without heads (written before
    /// they existed) is listed from its manifests, the same, until gc
    /// writes every head and marks the store.
    #[test]
    fn heads_list_what_the_manifests_say_and_gc_writes_missing_ones() {
        use std::sync::atomic::Ordering;
        let run = "1700000000000000-00000000000000cc";
        let dir = tempfile::tempdir().unwrap();
        let at = |e: i64| vec![("epoch".to_string(), e)];
        let data = |seed: u32, n: u32| -> Vec<u8> {
            (0..n)
                .map(|i| ((i ^ seed).wrapping_mul(2_654_435_761) >> 11) as u8)
                .collect()
        };
        let s = CheckpointStore::open(dir.path(), run).unwrap();
        assert!(
            s.shared.heads_complete.load(Ordering::SeqCst),
            "a new store has every head"
        );
        s.save(&at(0), "model", &data(1, 200_000)).unwrap();
        s.save(&at(1), "model", &data(2, 300_000)).unwrap();
        s.save(&at(1), "optim", &data(3, 10_000)).unwrap();
        s.flush().unwrap();
        s.save(&at(1), "model", &data(4, 100_000)).unwrap(); // replaces
        let from_heads = s.list().unwrap();
        s.shared.heads_complete.store(false, Ordering::SeqCst);
        let from_manifests = s.list().unwrap();
        assert_eq!(from_heads, from_manifests);
        assert_eq!(from_heads.len(), 3);
        assert_eq!(from_heads[1].raw_bytes, 100_000);
        s.close().unwrap();

        // As a build before heads left it: no heads, no mark.
        let index = dir.path().join("checkpoints").join(run).join("index");
        {
            let (db, _) = manifests(&index);
            db.open_tree("heads").unwrap().clear().unwrap();
            db.open_tree("meta")
                .unwrap()
                .remove(super::HEADS_COMPLETE)
                .unwrap();
            db.flush().unwrap();
        }
        let s = CheckpointStore::open(dir.path(), run).unwrap();
        assert!(!s.shared.heads_complete.load(Ordering::SeqCst));
        assert_eq!(
            s.list().unwrap(),
            from_manifests,
            "listed from the manifests"
        );
        s.gc().unwrap();
        assert!(s.shared.heads_complete.load(Ordering::SeqCst));
        s.close().unwrap();
        let s = CheckpointStore::open(dir.path(), run).unwrap();
        assert!(
            s.shared.heads_complete.load(Ordering::SeqCst),
            "the mark is durable"
        );
        assert_eq!(
            s.list().unwrap(),
            from_manifests,
            "listed from the heads gc wrote"
        );
        assert_eq!(s.shared.heads.len(), 3);
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
