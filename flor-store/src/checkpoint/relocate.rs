//! Manifest locations during `gc` (see `gc.rs`): checking the manifests'
//! recorded chunk locations against the chunk index, mending index entries
//! whose copy is damaged while the manifest's copy is sound, and rewriting
//! manifests to point at the locations gc settled on.
//!
//! The manifests are read from the tree on each pass rather than kept in
//! memory (gc holds the store's submit lock, so nothing else writes them):
//! a run with many large checkpoints has tens of millions of chunk
//! references.

use super::manifest::{ChunkRef, Manifest, MANIFEST_VERSION};
use super::pack::{open_frame, pack_path, Loc};
use super::{gc::hex, loop_path_text, Shared};
use crate::{Error, Result};
use std::collections::{HashMap, HashSet};

/// Calls `f` with every manifest, in key order. A manifest that does not
/// decode stops gc ([`Error::Corrupt`]) before it changes anything.
pub(super) fn each_manifest(
    sh: &Shared,
    mut f: impl FnMut(sled::IVec, Manifest) -> Result<()>,
) -> Result<()> {
    for kv in sh.manifests.iter() {
        let (k, v) = kv.map_err(|e| sh.sled_err(e))?;
        let m = Manifest::decode(&v).map_err(|detail| Error::Corrupt {
            path: sh.index_path.clone(),
            offset: 0,
            detail: format!("{detail}; gc stopped without deleting anything it cannot account for"),
        })?;
        f(k, m)?;
    }
    Ok(())
}

/// Checks the manifests against `locs` (the index's location of every
/// indexed live chunk) before gc changes anything:
///
/// - a live chunk missing from the index stops gc: its pack would be
///   deleted under the manifests that point into it;
/// - where a manifest records another location than the index (a crash
///   during an earlier gc left it at the old copy, or the index entry is
///   damaged), the index's copy is read and checked. When it fails and the
///   manifest's own copy checks, the index entry is what is damaged: `locs`
///   takes the manifest's location, and the chunk is returned for the
///   caller to write back to the index. When both fail, gc stops.
pub(super) fn check_against_index(
    sh: &Shared,
    locs: &mut HashMap<[u8; 32], Loc>,
) -> Result<Vec<([u8; 32], Loc)>> {
    let mut missing: Option<(String, usize)> = None;
    let mut repairs = Vec::new();
    let mut verified = HashSet::new();
    let mut buf = Vec::new();
    each_manifest(sh, |_, m| {
        let name = || format!("{:?} at {}", m.object, loop_path_text(&m.loop_path));
        if m.chunks.iter().any(|c| !locs.contains_key(&c.hash)) {
            let first = missing.get_or_insert_with(|| (name(), 0));
            first.1 += 1;
            return Ok(());
        }
        if !m.located() {
            return Ok(());
        }
        for c in &m.chunks {
            let Some(&indexed) = locs.get(&c.hash) else {
                continue;
            };
            if c.loc() == indexed || !verified.insert(c.hash) {
                continue;
            }
            let Err(detail) = check_copy(sh, indexed, c, &mut buf) else {
                continue;
            };
            if check_copy(sh, c.loc(), c, &mut buf).is_ok() {
                locs.insert(c.hash, c.loc());
                repairs.push((c.hash, c.loc()));
                continue;
            }
            return Err(Error::Corrupt {
                path: pack_path(sh.readers.dir(), indexed.pack),
                offset: indexed.offset,
                detail: format!(
                    "chunk {} of the checkpoint {}: the index's copy fails to check ({detail}), and so does the copy the manifest records; gc stopped without deleting anything",
                    hex(&c.hash),
                    name()
                ),
            });
        }
        Ok(())
    })?;
    if let Some((first, n)) = missing {
        return Err(Error::Corrupt {
            path: sh.index_path.clone(),
            offset: 0,
            detail: format!(
                "the checkpoint {first} (and {} more) references chunks that are not in the chunk index; gc stopped without deleting anything",
                n - 1
            ),
        });
    }
    Ok(repairs)
}

/// Reads the frame at `loc` and checks it is chunk `c` (checksum, hash, raw
/// length).
fn check_copy(
    sh: &Shared,
    loc: Loc,
    c: &ChunkRef,
    buf: &mut Vec<u8>,
) -> std::result::Result<(), String> {
    sh.readers.read(loc, buf).map_err(|e| e.to_string())?;
    open_frame(buf, &c.hash, c.raw_len).map(|_| ())
}

/// Rewrites every manifest whose recorded chunk locations differ from
/// `locs` (the index after gc's repairs and moves), or that records none
/// (version 1), as a current-version manifest, in one batch; returns how
/// many it rewrote. The caller flushes. Every live chunk is in `locs`
/// ([`check_against_index`]).
pub(super) fn relocate(sh: &Shared, locs: &HashMap<[u8; 32], Loc>) -> Result<u64> {
    let mut batch = sled::Batch::default();
    let mut n = 0;
    each_manifest(sh, |k, mut m| {
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
            let bytes = m.encode().map_err(|e| {
                Error::Poisoned(format!(
                    "internal: encoding the manifest of {:?} at {}: {e}",
                    m.object,
                    loop_path_text(&m.loop_path)
                ))
            })?;
            batch.insert(k, bytes);
            n += 1;
        }
        Ok(())
    })?;
    if n > 0 {
        sh.manifests
            .apply_batch(batch)
            .map_err(|e| sh.sled_err(e))?;
    }
    Ok(n)
}
