//! Loading a checkpoint: read its manifest, fetch each chunk's frame from
//! its pack, check the frame, decompress, verify the chunk's blake3 hash,
//! then verify the whole object's hash. Large objects are decoded by several
//! threads, each into its own part of the output.

use super::manifest::{self, ChunkRef, Manifest};
use super::pack::{open_frame, Codec, Loc};
use super::{gc::hex, loop_path_text, Shared};
use crate::{Error, Result};

/// Objects below this size are decoded on the calling thread.
const PARALLEL_FROM: u64 = 4 << 20;

/// Loads and verifies one checkpoint; see [`super::CheckpointStore::load`].
pub(crate) fn load(sh: &Shared, loop_path: &[(String, i64)], object: &str, threads: usize) -> Result<Vec<u8>> {
    let damaged = |detail: String| Error::CheckpointDamaged {
        run: sh.run.clone(),
        object: object.to_string(),
        loop_path: loop_path_text(loop_path),
        detail,
    };
    let key = manifest::key(loop_path, object).map_err(|e| Error::Input(format!("checkpoint key: {e}")))?;
    let bytes = sh.manifests.get(key).map_err(|e| sh.sled_err(e))?;
    let Some(bytes) = bytes else {
        return Err(Error::CheckpointMissing {
            run: sh.run.clone(),
            object: object.to_string(),
            loop_path: loop_path_text(loop_path),
        });
    };
    let m = Manifest::decode(&bytes).map_err(damaged)?;
    if m.loop_path != loop_path || m.object != object {
        return Err(damaged(format!(
            "the manifest stored under this key describes {:?} at {}",
            m.object,
            loop_path_text(&m.loop_path)
        )));
    }
    let len = usize::try_from(m.raw_len).map_err(|_| damaged(format!("{} bytes do not fit in memory", m.raw_len)))?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|e| Error::Io {
        path: sh.dir.clone(),
        source: std::io::Error::new(std::io::ErrorKind::OutOfMemory, format!("{len} bytes for a checkpoint: {e}")),
    })?;
    out.resize(len, 0);

    // Pair every chunk with its slice of the output.
    let mut parts: Vec<(usize, &ChunkRef, &mut [u8])> = Vec::with_capacity(m.chunks.len());
    let mut rest: &mut [u8] = &mut out;
    for (i, c) in m.chunks.iter().enumerate() {
        let (part, tail) = std::mem::take(&mut rest)
            .split_at_mut_checked(c.raw_len as usize)
            .ok_or_else(|| damaged(format!("chunk {i} runs past the object's end")))?;
        parts.push((i, c, part));
        rest = tail;
    }
    let n = m.chunks.len();
    let threads = if m.raw_len < PARALLEL_FROM { 1 } else { threads.clamp(1, n.max(1)) };
    let result = if threads == 1 {
        decode_parts(sh, &mut parts, n)
    } else {
        let per = n.div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> =
                parts.chunks_mut(per).map(|group| s.spawn(move || decode_parts(sh, group, n))).collect();
            // Report the failure of the earliest chunk, whatever thread found it.
            let mut first: Option<(usize, ChunkFailure)> = None;
            for h in handles {
                let r = h.join().unwrap_or_else(|_| Err((0, ChunkFailure::Damaged("a loading thread panicked".into()))));
                if let Err((i, f)) = r {
                    if first.as_ref().is_none_or(|(j, _)| i < *j) {
                        first = Some((i, f));
                    }
                }
            }
            first.map_or(Ok(()), Err)
        })
    };
    match result {
        Ok(()) => {}
        Err((_, ChunkFailure::Damaged(d))) => return Err(damaged(d)),
        Err((_, ChunkFailure::Io(e))) => return Err(e),
    }
    if blake3::hash(&out).as_bytes() != &m.hash {
        return Err(damaged("the whole object's hash does not match its manifest".into()));
    }
    Ok(out)
}

enum ChunkFailure {
    Damaged(String),
    Io(Error),
}

/// Decodes each `(chunk number, chunk, output slice)`; stops at the first failure.
fn decode_parts(
    sh: &Shared,
    parts: &mut [(usize, &ChunkRef, &mut [u8])],
    total: usize,
) -> std::result::Result<(), (usize, ChunkFailure)> {
    let mut dec: Option<zstd::bulk::Decompressor<'static>> = None;
    let mut buf = Vec::new();
    for (i, c, out) in parts.iter_mut() {
        decode_one(sh, c, out, &mut buf, &mut dec).map_err(|f| {
            let f = match f {
                ChunkFailure::Damaged(d) => {
                    ChunkFailure::Damaged(format!("chunk {} of {total} (blake3 {}…): {d}", *i, hex(&c.hash)))
                }
                io => io,
            };
            (*i, f)
        })?;
    }
    Ok(())
}

fn decode_one(
    sh: &Shared,
    c: &ChunkRef,
    out: &mut [u8],
    buf: &mut Vec<u8>,
    dec: &mut Option<zstd::bulk::Decompressor<'static>>,
) -> std::result::Result<(), ChunkFailure> {
    let entry = sh.chunks.get(c.hash).map_err(|e| ChunkFailure::Io(sh.sled_err(e)))?;
    let Some(entry) = entry else {
        return Err(ChunkFailure::Damaged("not in the chunk index".into()));
    };
    let loc = Loc::decode(&entry).ok_or_else(|| ChunkFailure::Damaged("malformed index entry".into()))?;
    let at = format!("pack {:010} at byte {}", loc.pack, loc.offset);
    sh.readers.read(loc, buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof => {
            ChunkFailure::Damaged(format!("{at}: {e}"))
        }
        _ => ChunkFailure::Io(Error::Io { path: super::pack::pack_path(sh.readers.dir(), loc.pack), source: e }),
    })?;
    let (codec, payload) = open_frame(buf, &c.hash, c.raw_len).map_err(|d| ChunkFailure::Damaged(format!("{at}: {d}")))?;
    match codec {
        Codec::Raw if payload.len() == out.len() => out.copy_from_slice(payload),
        Codec::Raw => return Err(ChunkFailure::Damaged(format!("{at}: raw payload of wrong length"))),
        Codec::Zstd => {
            let d = match dec {
                Some(d) => d,
                None => dec.insert(
                    zstd::bulk::Decompressor::new()
                        .map_err(|e| ChunkFailure::Damaged(format!("zstd decompressor: {e}")))?,
                ),
            };
            let n = d
                .decompress_to_buffer(payload, &mut *out)
                .map_err(|e| ChunkFailure::Damaged(format!("{at}: zstd: {e}")))?;
            if n != out.len() {
                return Err(ChunkFailure::Damaged(format!("{at}: decompressed to {n} bytes, not {}", out.len())));
            }
        }
    }
    if blake3::hash(out).as_bytes() != &c.hash {
        return Err(ChunkFailure::Damaged(format!("{at}: content does not match its hash")));
    }
    Ok(())
}
