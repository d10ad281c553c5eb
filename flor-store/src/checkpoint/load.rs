//! Loading a checkpoint: read its manifest, fetch each chunk's frame from
//! its pack, check the frame (its CRC-32, and that its header names the
//! chunk hash the manifest lists), decompress, then verify the whole
//! object's blake3 (docs/FORMAT.md, `checkpoints/<tstamp>-<run_id>/`);
//! only when that fails is each chunk hashed, to name the chunk at fault.
//! Large objects are decoded by several threads, each into its own part of
//! the output. Raw frames that lie back to back in a pack are read with one
//! vectored read, each payload straight into its part of the output.
//!
//! Chunk locations come from the manifest (version 2) or, for a version 1
//! manifest, from the chunk index. A [`Recipe`] is the same read with the
//! locations taken beforehand by the process that holds the run's database,
//! so that another process (a replay worker) can read and verify the bytes
//! from the packs alone ([`load_recipe`]).

use super::manifest::{self, ChunkRef, Manifest};
use super::pack::{
    check_frame_parts, open_frame, Codec, Loc, PackReaders, FRAMES_PER_READ, FRAME_OVERHEAD,
    PAYLOAD_AT,
};
use super::{gc::hex, loop_path_text, Shared};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Objects below this size are decoded on the calling thread.
const PARALLEL_FROM: u64 = 4 << 20;

/// Where the bytes of one checkpoint lie in its run's pack files: what a
/// process that does not hold the run's database needs to read and verify
/// them ([`load_recipe`]). Made by [`super::CheckpointStore::recipe`].
///
/// Valid while the packs are unchanged: packs are append-only, and only the
/// process holding the run's database rewrites or deletes them (`gc`), so a
/// recipe stays valid while its maker keeps the store open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipe {
    /// The run stem.
    pub run: String,
    /// The run's `packs` directory.
    pub packs: PathBuf,
    /// The loop path, outermost first.
    pub loop_path: Vec<(String, i64)>,
    /// The object name.
    pub object: String,
    /// Total raw length in bytes.
    pub raw_len: u64,
    /// blake3 of the whole object.
    pub hash: [u8; 32],
    /// The chunks, in order.
    pub chunks: Vec<RecipeChunk>,
}

/// One chunk of a [`Recipe`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipeChunk {
    /// blake3 of the chunk's raw bytes.
    pub hash: [u8; 32],
    /// Raw length in bytes.
    pub raw_len: u32,
    /// Pack id.
    pub pack: u32,
    /// Byte offset of the chunk's frame in the pack.
    pub offset: u64,
    /// Length of the frame in bytes.
    pub frame_len: u32,
}

/// One chunk to decode: its manifest entry and where its frame lies (or why
/// that is unknown).
struct Part<'a> {
    chunk: &'a ChunkRef,
    loc: std::result::Result<Loc, &'static str>,
}

/// The manifest of `(loop_path, object)`, checked against its key.
fn manifest_of(sh: &Shared, loop_path: &[(String, i64)], object: &str) -> Result<Manifest> {
    let key = manifest::key(loop_path, object)
        .map_err(|e| Error::Input(format!("checkpoint key: {e}")))?;
    let bytes = sh.manifests.get(key).map_err(|e| sh.sled_err(e))?;
    let Some(bytes) = bytes else {
        return Err(Error::CheckpointMissing {
            run: sh.run.clone(),
            object: object.to_string(),
            loop_path: loop_path_text(loop_path),
        });
    };
    let damaged = |detail: String| Error::CheckpointDamaged {
        run: sh.run.clone(),
        object: object.to_string(),
        loop_path: loop_path_text(loop_path),
        detail,
    };
    let m = Manifest::decode(&bytes).map_err(damaged)?;
    if m.loop_path != loop_path || m.object != object {
        return Err(damaged(format!(
            "the manifest stored under this key describes {:?} at {}",
            m.object,
            loop_path_text(&m.loop_path)
        )));
    }
    Ok(m)
}

/// The pack location of chunk `c` of manifest `m`: recorded in the
/// manifest (version 2), else looked up in the index.
fn locate(
    sh: &Shared,
    m: &Manifest,
    c: &ChunkRef,
) -> Result<std::result::Result<Loc, &'static str>> {
    if m.located() {
        return Ok(c
            .loc()
            .checked()
            .ok_or("malformed location in the manifest"));
    }
    let entry = sh.chunks.get(c.hash).map_err(|e| sh.sled_err(e))?;
    Ok(match entry {
        None => Err("not in the chunk index"),
        Some(entry) => Loc::decode(&entry).ok_or("malformed index entry"),
    })
}

/// Loads and verifies one checkpoint; see [`super::CheckpointStore::load`].
pub(crate) fn load(
    sh: &Shared,
    loop_path: &[(String, i64)],
    object: &str,
    threads: usize,
) -> Result<Vec<u8>> {
    let m = manifest_of(sh, loop_path, object)?;
    let mut parts = Vec::with_capacity(m.chunks.len());
    for c in &m.chunks {
        parts.push(Part {
            chunk: c,
            loc: locate(sh, &m, c)?,
        });
    }
    let damaged = |detail: String| Error::CheckpointDamaged {
        run: sh.run.clone(),
        object: object.to_string(),
        loop_path: loop_path_text(loop_path),
        detail,
    };
    assemble(
        &sh.readers,
        &sh.dir,
        &parts,
        m.raw_len,
        &m.hash,
        threads,
        &damaged,
        Vec::new(),
    )
}

/// The first bytes of a recipe file: format name and version.
const RECIPES_MAGIC: &[u8; 8] = b"FLORRCP1";

/// The bytes of a recipe file holding `recipes`, read back by
/// [`decode_recipes`]: the 8 bytes `FLORRCP1`, then the list in this
/// crate's binary encoding (`crate::codec`: little-endian, fixed-width
/// integers, hashes as 32 raw bytes). A replay coordinator writes one per
/// unit and its worker reads it; both are the same build. About 55 bytes
/// per chunk: a 6 MB object of ~400 chunks takes ~22 KB.
///
/// # Errors
/// [`Error::Input`] when the list does not encode (a `packs` path that is
/// not UTF-8).
pub fn encode_recipes(recipes: &[Recipe]) -> Result<Vec<u8>> {
    let body = crate::codec::encode(&recipes)
        .map_err(|e| Error::Input(format!("checkpoint recipes do not encode: {e}")))?;
    let mut out = Vec::with_capacity(RECIPES_MAGIC.len() + body.len());
    out.extend_from_slice(RECIPES_MAGIC);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The recipes of a file written by [`encode_recipes`], or why the bytes
/// are not one (another format or version, a truncated or damaged body).
pub fn decode_recipes(bytes: &[u8]) -> std::result::Result<Vec<Recipe>, String> {
    let body = bytes
        .strip_prefix(RECIPES_MAGIC.as_slice())
        .ok_or("it does not start with FLORRCP1 (not a recipe file of this version)")?;
    crate::codec::decode(body)
}

/// The recipe of one checkpoint; see [`super::CheckpointStore::recipe`].
pub(crate) fn recipe(sh: &Shared, loop_path: &[(String, i64)], object: &str) -> Result<Recipe> {
    let m = manifest_of(sh, loop_path, object)?;
    let mut chunks = Vec::with_capacity(m.chunks.len());
    let n = m.chunks.len();
    for (i, c) in m.chunks.iter().enumerate() {
        let loc = locate(sh, &m, c)?.map_err(|d| Error::CheckpointDamaged {
            run: sh.run.clone(),
            object: object.to_string(),
            loop_path: loop_path_text(loop_path),
            detail: format!("chunk {i} of {n} (blake3 {}…): {d}", hex(&c.hash)),
        })?;
        chunks.push(RecipeChunk {
            hash: c.hash,
            raw_len: c.raw_len,
            pack: loc.pack,
            offset: loc.offset,
            frame_len: loc.frame_len,
        });
    }
    Ok(Recipe {
        run: sh.run.clone(),
        packs: sh.readers.dir().to_path_buf(),
        loop_path: m.loop_path,
        object: m.object,
        raw_len: m.raw_len,
        hash: m.hash,
        chunks,
    })
}

/// Reads and verifies the checkpoint `recipe` describes from its pack files
/// alone (no database), decoding large objects on up to `threads` threads.
///
/// # Errors
/// [`Error::CheckpointDamaged`] for a malformed recipe, a missing pack or a
/// byte that fails its checksum or hash (naming the run, object, loop path,
/// chunk, pack and offset); [`Error::Io`] when a pack cannot be read.
pub fn load_recipe(recipe: &Recipe, threads: usize) -> Result<Vec<u8>> {
    load_recipe_into(recipe, threads, Vec::new())
}

/// [`load_recipe`] into `buf`, a buffer from an earlier load that the
/// caller is done with (its contents are overwritten; an empty `Vec` is
/// fine): when its capacity suffices no memory is allocated, so a reader
/// that loads the same objects over and over (a replay worker restoring
/// every epoch) does not fault in fresh pages for each one.
///
/// # Errors
/// As [`load_recipe`].
pub fn load_recipe_into(recipe: &Recipe, threads: usize, buf: Vec<u8>) -> Result<Vec<u8>> {
    let r = RecipeParts::parse(recipe)?;
    let parts = r.parts();
    let readers = PackReaders::new(recipe.packs.clone());
    assemble(
        &readers,
        &recipe.packs,
        &parts,
        recipe.raw_len,
        &r.hash,
        threads,
        &r.damaged(),
        buf,
    )
}

/// [`load_recipe`] of an object whose first `prefix.len()` bytes are known
/// (a numpy array's kind byte and `.npy` header), writing the rest straight
/// into `dest`, the memory it is restored into (a live array's data), with
/// no buffer of the object's size and no copy.
///
/// Returns `Ok(false)`, with `dest` untouched, when the object is not
/// `prefix.len() + dest.len()` bytes long or does not start with `prefix`
/// (the caller restores it another way); `Ok(true)` when `dest` holds the
/// rest of the object and every byte passed the checks of
/// [`load_recipe`] (each frame's CRC-32 and chunk hash, the whole object's
/// blake3 over `prefix` and `dest`).
///
/// # Errors
/// As [`load_recipe`]. On an error `dest` may hold part of the object: the
/// caller must not use its contents.
pub fn load_recipe_to(
    recipe: &Recipe,
    threads: usize,
    prefix: &[u8],
    dest: &mut [u8],
) -> Result<bool> {
    let p = prefix.len();
    if usize::try_from(recipe.raw_len).ok() != p.checked_add(dest.len()) {
        return Ok(false);
    }
    let r = RecipeParts::parse(recipe)?;
    let parts = r.parts();
    let damaged = r.damaged();
    let readers = PackReaders::new(recipe.packs.clone());
    // The chunks that hold any of the prefix are decoded into `head` and
    // compared before `dest` is written; the others go straight to `dest`.
    let mut head_chunks = 0;
    let mut head_len = 0usize;
    while head_len < p && head_chunks < parts.len() {
        head_len += parts[head_chunks].chunk.raw_len as usize;
        head_chunks += 1;
    }
    let mut head = vec![0u8; head_len];
    let mut slices = slice_parts(&parts[..head_chunks], 0, &mut head, &damaged)?;
    decode_all(&readers, &mut slices, parts.len(), 1, &damaged)?;
    if head.get(..p) != Some(prefix) {
        return Ok(false);
    }
    let (from_head, rest) = dest.split_at_mut_checked(head_len - p).ok_or_else(|| {
        damaged(format!(
            "chunk {} runs past the object's end",
            head_chunks.saturating_sub(1)
        ))
    })?;
    from_head.copy_from_slice(&head[p..]);
    let mut slices = slice_parts(&parts[head_chunks..], head_chunks, rest, &damaged)?;
    let threads = if recipe.raw_len < PARALLEL_FROM {
        1
    } else {
        threads
    };
    decode_all(&readers, &mut slices, parts.len(), threads, &damaged)?;
    let mut sum = blake3::Hasher::new();
    sum.update(prefix);
    sum.update(dest);
    if sum.finalize().as_bytes() != &r.hash {
        let whole = [prefix, &*dest].concat();
        return Err(damaged(mismatch_detail(&parts, &whole)));
    }
    Ok(true)
}

/// The [`Error::CheckpointDamaged`] of `recipe`'s object with `detail`.
fn recipe_damaged(recipe: &Recipe) -> impl Fn(String) -> Error + '_ {
    move |detail| Error::CheckpointDamaged {
        run: recipe.run.clone(),
        object: recipe.object.clone(),
        loop_path: loop_path_text(&recipe.loop_path),
        detail,
    }
}

/// A recipe's hashes and locations, decoded once.
struct RecipeParts<'r> {
    recipe: &'r Recipe,
    hash: [u8; 32],
    refs: Vec<ChunkRef>,
    locs: Vec<std::result::Result<Loc, &'static str>>,
}

impl<'r> RecipeParts<'r> {
    fn parse(recipe: &'r Recipe) -> Result<RecipeParts<'r>> {
        let hash = recipe.hash;
        let mut refs = Vec::with_capacity(recipe.chunks.len());
        let mut locs = Vec::with_capacity(recipe.chunks.len());
        for c in &recipe.chunks {
            let r = ChunkRef {
                hash: c.hash,
                raw_len: c.raw_len,
                stored_len: c.frame_len,
                pack: c.pack,
                offset: c.offset,
            };
            locs.push(r.loc().checked().ok_or("malformed location in the recipe"));
            refs.push(r);
        }
        Ok(RecipeParts {
            recipe,
            hash,
            refs,
            locs,
        })
    }

    fn parts(&self) -> Vec<Part<'_>> {
        self.refs
            .iter()
            .zip(&self.locs)
            .map(|(chunk, loc)| Part { chunk, loc: *loc })
            .collect()
    }

    fn damaged(&self) -> impl Fn(String) -> Error + 'r {
        recipe_damaged(self.recipe)
    }
}

/// Decodes `parts` into one buffer of `raw_len` bytes (`out`, reused when
/// its capacity suffices) and checks it against `hash`.
#[allow(clippy::too_many_arguments)]
fn assemble(
    readers: &PackReaders,
    dir: &Path,
    parts: &[Part<'_>],
    raw_len: u64,
    hash: &[u8; 32],
    threads: usize,
    damaged: &dyn Fn(String) -> Error,
    mut out: Vec<u8>,
) -> Result<Vec<u8>> {
    let len = usize::try_from(raw_len)
        .map_err(|_| damaged(format!("{raw_len} bytes do not fit in memory")))?;
    if out.len() == len {
        // A reused buffer of the same size: every byte is overwritten below
        // (each chunk fills its slice, and the slices cover the object).
    } else {
        out.clear();
        out.try_reserve_exact(len).map_err(|e| Error::Io {
            path: dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("{len} bytes for a checkpoint: {e}"),
            ),
        })?;
        out.resize(len, 0);
    }
    let mut slices = slice_parts(parts, 0, &mut out, damaged)?;
    let threads = if raw_len < PARALLEL_FROM { 1 } else { threads };
    decode_all(readers, &mut slices, parts.len(), threads, damaged)?;
    drop(slices);
    if blake3::hash(&out).as_bytes() != hash {
        return Err(damaged(mismatch_detail(parts, &out)));
    }
    Ok(out)
}

/// One chunk to decode: its number in the object, its part, and the slice
/// of the output it fills.
type Slot<'p, 'o> = (usize, &'p Part<'p>, &'o mut [u8]);

/// Pairs every part (numbered from `first`) with its slice of `out`, which
/// the parts must cover exactly.
fn slice_parts<'p, 'o>(
    parts: &'p [Part<'p>],
    first: usize,
    out: &'o mut [u8],
    damaged: &dyn Fn(String) -> Error,
) -> Result<Vec<Slot<'p, 'o>>> {
    let mut slices = Vec::with_capacity(parts.len());
    let mut rest: &mut [u8] = out;
    for (i, p) in parts.iter().enumerate() {
        let (part, tail) = std::mem::take(&mut rest)
            .split_at_mut_checked(p.chunk.raw_len as usize)
            .ok_or_else(|| damaged(format!("chunk {} runs past the object's end", first + i)))?;
        slices.push((first + i, p, part));
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(damaged(format!(
            "the chunks end {} bytes before the object's end",
            rest.len()
        )));
    }
    Ok(slices)
}

/// Decodes every slot, on up to `threads` threads (each a contiguous share
/// of the slots); reports the failure of the earliest chunk.
fn decode_all(
    readers: &PackReaders,
    slices: &mut [Slot<'_, '_>],
    total: usize,
    threads: usize,
    damaged: &dyn Fn(String) -> Error,
) -> Result<()> {
    let threads = threads.clamp(1, slices.len().max(1));
    let result = if threads == 1 {
        decode_parts(readers, slices, total)
    } else {
        let per = slices.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = slices
                .chunks_mut(per)
                .map(|group| s.spawn(move || decode_parts(readers, group, total)))
                .collect();
            let mut first: Option<(usize, ChunkFailure)> = None;
            for h in handles {
                let r = h.join().unwrap_or_else(|_| {
                    Err((0, ChunkFailure::Damaged("a loading thread panicked".into())))
                });
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
        Ok(()) => Ok(()),
        Err((_, ChunkFailure::Damaged(d))) => Err(damaged(d)),
        Err((_, ChunkFailure::Io(e))) => Err(e),
    }
}

/// Why an assembled object failed its whole-object hash: the first chunk
/// whose bytes do not match their blake3, or, when every chunk does, the
/// manifest's chunk list itself.
///
/// Chunks are not hashed one by one on the way in: each frame's CRC-32 and
/// the chunk hash in its header (checked against the manifest) catch
/// damage and misplaced frames, and the whole-object blake3 catches the
/// rest, so a second blake3 pass over every byte is only needed here, to
/// name the chunk at fault.
fn mismatch_detail(parts: &[Part<'_>], out: &[u8]) -> String {
    let n = parts.len();
    let mut rest = out;
    for (i, p) in parts.iter().enumerate() {
        let (bytes, tail) = rest.split_at(rest.len().min(p.chunk.raw_len as usize));
        rest = tail;
        if blake3::hash(bytes).as_bytes() != &p.chunk.hash {
            let at = match p.loc {
                Ok(loc) => at(loc),
                Err(d) => d.to_string(),
            };
            return format!(
                "chunk {i} of {n} (blake3 {}…): {at}: content does not match its hash",
                hex(&p.chunk.hash)
            );
        }
    }
    "the whole object's hash does not match its manifest".into()
}

enum ChunkFailure {
    Damaged(String),
    Io(Error),
}

/// Where a frame lies, for messages.
fn at(loc: Loc) -> String {
    format!("pack {:010} at byte {}", loc.pack, loc.offset)
}

/// Prefixes a chunk's failure with its number and hash.
fn named(i: usize, p: &Part<'_>, total: usize, f: ChunkFailure) -> (usize, ChunkFailure) {
    let f = match f {
        ChunkFailure::Damaged(d) => ChunkFailure::Damaged(format!(
            "chunk {i} of {total} (blake3 {}…): {d}",
            hex(&p.chunk.hash)
        )),
        io => io,
    };
    (i, f)
}

/// Decodes each slot; stops at the first failure (the earliest chunk of a
/// window of frames read together).
///
/// Frames sized as raw frames (payload as long as the chunk) are taken in
/// windows of up to [`FRAMES_PER_READ`] frames and [`WINDOW_BYTES`] bytes
/// from one pack; within a window, frames that form one contiguous stretch
/// of the pack, in whatever chunk order (the compressor threads hand the
/// writer chunks in the order they finish), are read with one vectored
/// read, each payload straight into its slice. A 6 MB object of 16 KiB
/// chunks takes a few dozen system calls instead of ~400, and no copy.
/// Anything else, and any stretch that cannot be read in one go (a pack
/// cut short), is read frame by frame, which names the frame at fault.
fn decode_parts(
    readers: &PackReaders,
    slots: &mut [Slot<'_, '_>],
    total: usize,
) -> std::result::Result<(), (usize, ChunkFailure)> {
    let mut dec: Option<zstd::bulk::Decompressor<'static>> = None;
    let mut buf = Vec::new();
    let mut i = 0;
    while i < slots.len() {
        let n = raw_window(&slots[i..]);
        if n >= 2 {
            read_window(readers, &mut slots[i..i + n], total, &mut buf, &mut dec)?;
            i += n;
            continue;
        }
        let (j, p, out) = &mut slots[i];
        decode_one(readers, p, out, &mut buf, &mut dec).map_err(|f| named(*j, p, total, f))?;
        i += 1;
    }
    Ok(())
}

/// Most payload bytes one vectored read takes (Linux reads at most
/// 0x7ffff000 bytes per call; a window stays far below that).
const WINDOW_BYTES: usize = 64 << 20;

/// How many slots from the first have a location in the first one's pack
/// and frames sized as raw frames: at most [`FRAMES_PER_READ`], and at
/// most [`WINDOW_BYTES`] of payload beyond the first.
fn raw_window(slots: &[Slot<'_, '_>]) -> usize {
    let mut n = 0;
    let mut bytes = 0usize;
    let mut pack = None;
    for (_, p, out) in slots.iter().take(FRAMES_PER_READ) {
        let Ok(loc) = p.loc else { break };
        bytes = bytes.saturating_add(out.len());
        if loc.frame_len as usize != out.len() + FRAME_OVERHEAD
            || pack.is_some_and(|k| k != loc.pack)
            || (n > 0 && bytes > WINDOW_BYTES)
        {
            break;
        }
        pack = Some(loc.pack);
        n += 1;
    }
    n
}

/// Reads a [`raw_window`]: its frames in pack order, each stretch of
/// back-to-back frames with one vectored read (headers and checksums into
/// scratch, payloads into their slots), then checks every frame. A single
/// frame, and every frame of a stretch whose read came up short, is read
/// on its own. Reports the earliest chunk that fails.
fn read_window(
    readers: &PackReaders,
    group: &mut [Slot<'_, '_>],
    total: usize,
    buf: &mut Vec<u8>,
    dec: &mut Option<zstd::bulk::Decompressor<'static>>,
) -> std::result::Result<(), (usize, ChunkFailure)> {
    // The chunk number, part and location of each slot, apart from the
    // slots' output slices (borrowed mutably below).
    let meta: Vec<(usize, &Part<'_>, Loc)> = group
        .iter()
        .filter_map(|(j, p, _)| p.loc.ok().map(|loc| (*j, *p, loc)))
        .collect();
    if meta.len() != group.len() {
        // `raw_window` takes only slots with a location; read one by one.
        for (j, p, out) in group.iter_mut() {
            decode_one(readers, p, out, buf, dec).map_err(|f| named(*j, p, total, f))?;
        }
        return Ok(());
    }
    let mut outs: Vec<Option<&mut [u8]>> =
        group.iter_mut().map(|(_, _, o)| Some(&mut **o)).collect();
    let mut order: Vec<usize> = (0..meta.len()).collect();
    order.sort_by_key(|&k| meta[k].2.offset);
    let mut first_failure: Option<(usize, ChunkFailure)> = None;
    let mut fail = |f: (usize, ChunkFailure)| {
        if first_failure.as_ref().is_none_or(|(j, _)| f.0 < *j) {
            first_failure = Some(f);
        }
    };
    let mut a = 0;
    while a < order.len() {
        // The stretch order[a..b] lies back to back in the pack.
        let mut b = a + 1;
        while b < order.len() {
            let (prev, next) = (meta[order[b - 1]].2, meta[order[b]].2);
            if prev.offset + u64::from(prev.frame_len) != next.offset {
                break;
            }
            b += 1;
        }
        let stretch = &order[a..b];
        let mut payloads: Vec<&mut [u8]> = stretch.iter().filter_map(|&k| outs[k].take()).collect();
        let mut heads = vec![[0u8; PAYLOAD_AT]; stretch.len()];
        let mut crcs = vec![[0u8; 4]; stretch.len()];
        let read = stretch.len() >= 2
            && payloads.len() == stretch.len()
            && readers
                .read_frames(
                    meta[stretch[0]].2.pack,
                    meta[stretch[0]].2.offset,
                    &mut heads,
                    &mut payloads,
                    &mut crcs,
                )
                .unwrap_or(false);
        for (s, (&k, out)) in stretch.iter().zip(payloads.iter_mut()).enumerate() {
            let (j, p, loc) = meta[k];
            let r = if read {
                match check_frame_parts(&heads[s], out, &crcs[s], &p.chunk.hash, p.chunk.raw_len) {
                    Ok(Codec::Raw) => Ok(()),
                    // A compressed frame exactly as long as a raw one.
                    Ok(Codec::Zstd) => decode_one(readers, p, out, buf, dec),
                    Err(d) => Err(ChunkFailure::Damaged(format!("{}: {d}", at(loc)))),
                }
            } else {
                // A single frame, or a stretch not read in one go: on its own.
                decode_one(readers, p, out, buf, dec)
            };
            if let Err(f) = r {
                fail(named(j, p, total, f));
            }
        }
        a = b;
    }
    first_failure.map_or(Ok(()), Err)
}

fn decode_one(
    readers: &PackReaders,
    p: &Part<'_>,
    out: &mut [u8],
    buf: &mut Vec<u8>,
    dec: &mut Option<zstd::bulk::Decompressor<'static>>,
) -> std::result::Result<(), ChunkFailure> {
    let c = p.chunk;
    let loc = p.loc.map_err(|d| ChunkFailure::Damaged(d.into()))?;
    readers.read(loc, buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof => {
            ChunkFailure::Damaged(format!("{}: {e}", at(loc)))
        }
        _ => ChunkFailure::Io(Error::Io {
            path: super::pack::pack_path(readers.dir(), loc.pack),
            source: e,
        }),
    })?;
    let (codec, payload) = open_frame(buf, &c.hash, c.raw_len)
        .map_err(|d| ChunkFailure::Damaged(format!("{}: {d}", at(loc))))?;
    match codec {
        Codec::Raw if payload.len() == out.len() => out.copy_from_slice(payload),
        Codec::Raw => {
            return Err(ChunkFailure::Damaged(format!(
                "{}: raw payload of wrong length",
                at(loc)
            )))
        }
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
                .map_err(|e| ChunkFailure::Damaged(format!("{}: zstd: {e}", at(loc))))?;
            if n != out.len() {
                return Err(ChunkFailure::Damaged(format!(
                    "{}: decompressed to {n} bytes, not {}",
                    at(loc),
                    out.len()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::{decode_recipes, encode_recipes, Recipe, RecipeChunk};

    #[test]
    fn recipe_files_round_trip_and_refuse_other_bytes() {
        let r = Recipe {
            run: "1700000000000000-0000000000000001".into(),
            packs: "/tmp/packs".into(),
            loop_path: vec![("epoch".into(), 3)],
            object: "W".into(),
            raw_len: 20,
            hash: [7; 32],
            chunks: vec![RecipeChunk {
                hash: [9; 32],
                raw_len: 20,
                pack: 1,
                offset: 16,
                frame_len: 65,
            }],
        };
        let bytes = encode_recipes(&[r.clone(), r.clone()]).unwrap();
        assert_eq!(decode_recipes(&bytes).unwrap(), vec![r.clone(), r]);
        assert!(decode_recipes(b"[{\"run\": 1}]")
            .unwrap_err()
            .contains("FLORRCP1"));
        assert!(decode_recipes(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_recipes(&longer).unwrap_err().contains("trailing"));
    }
}
