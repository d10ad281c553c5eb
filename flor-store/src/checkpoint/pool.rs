//! The compression worker pool (crossbeam channels): each worker hashes a
//! chunk, skips it when the index already holds it, otherwise compresses it
//! with zstd and seals it into a pack frame for the writer thread.

use super::pack::{Codec, Frame, Loc};
use super::writer::{ChunkBody, WriterMsg};
use crossbeam_channel::{Receiver, Sender};

/// One chunk of an object being saved.
pub(crate) struct Job {
    /// The save's sequence number.
    pub seq: u64,
    /// The chunk's position in the object, 0-based.
    pub index: u32,
    /// The chunk's raw bytes.
    pub data: Vec<u8>,
}

/// Runs one worker until the job channel closes.
pub(crate) fn worker(
    jobs: Receiver<Job>,
    out: Sender<WriterMsg>,
    index: sled::Tree,
    level: Option<i32>,
) {
    let mut compressor = match level.map(zstd::bulk::Compressor::new).transpose() {
        Ok(c) => c,
        Err(e) => {
            // Poison the writer; keep draining so that callers never block.
            let _ = out.send(WriterMsg::Failed {
                detail: format!("zstd compressor: {e}"),
            });
            for _ in jobs {}
            return;
        }
    };
    for job in jobs {
        let msg = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            process(job, &index, compressor.as_mut())
        })) {
            Ok(Ok(msg)) => msg,
            Ok(Err(detail)) => WriterMsg::Failed { detail },
            Err(_) => WriterMsg::Failed {
                detail: "a compression worker panicked".into(),
            },
        };
        if out.send(msg).is_err() {
            return;
        }
    }
}

fn process(
    job: Job,
    index: &sled::Tree,
    compressor: Option<&mut zstd::bulk::Compressor<'static>>,
) -> Result<WriterMsg, String> {
    let Job {
        seq,
        index: i,
        data,
    } = job;
    let hash = *blake3::hash(&data).as_bytes();
    let raw_len = u32::try_from(data.len()).map_err(|_| "chunk over 4 GiB".to_string())?;
    let known = index.get(hash).map_err(|e| format!("index lookup: {e}"))?;
    // `gc` runs with no save in flight, so a location read here still
    // holds when the writer commits this save.
    let body = match known.as_deref().and_then(Loc::decode) {
        Some(loc) => ChunkBody::Stored(loc),
        None => {
            let frame = build_frame(data, &hash, raw_len, compressor)?;
            u32::try_from(frame.len()).map_err(|_| "frame over 4 GiB".to_string())?;
            ChunkBody::New(frame)
        }
    };
    Ok(WriterMsg::Chunk {
        seq,
        index: i,
        hash,
        raw_len,
        body,
    })
}

/// A chunk is stored compressed only when zstd saves at least
/// `1 / MIN_SAVING_DIVISOR` of it (10%); otherwise it is kept raw.
///
/// Decoding (Huffman literals, ~0.9 ns per byte here) sits on every
/// restore, i.e. on replay's critical path, so a small saving is not worth
/// it: the replay bench's float64 weights save ~6% under zstd, and storing
/// them raw cost 4.5% more disk (489 vs 468 MB for 8 runs) and saved ~22%
/// of a replay's user CPU (BENCHMARKS.md, replay). The checkpoint bench's
/// float32 weights (σ ≈ 0.02) save 11.6% and stay compressed, as do bf16
/// weights, sparse or repeated bytes, RNG and optimizer scalars.
pub(crate) const MIN_SAVING_DIVISOR: usize = 10;

/// Compresses `data` into a sealed frame; keeps it raw (without copying)
/// when zstd saves less than `1 / MIN_SAVING_DIVISOR` of it, so such data
/// loads at memory speed.
pub(crate) fn build_frame(
    data: Vec<u8>,
    hash: &[u8; 32],
    raw_len: u32,
    compressor: Option<&mut zstd::bulk::Compressor<'static>>,
) -> Result<Frame, String> {
    if let Some(c) = compressor {
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
        let n = c
            .compress_to_buffer(&data, &mut out)
            .map_err(|e| format!("zstd compression: {e}"))?;
        if n + data.len() / MIN_SAVING_DIVISOR <= data.len() {
            return Ok(Frame::seal(Codec::Zstd, raw_len, hash, out));
        }
    }
    Ok(Frame::seal(Codec::Raw, raw_len, hash, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `len` bytes: the first `zero_pct` percent zeros (which zstd removes),
    /// the rest pseudo-random (which it cannot shrink).
    fn partly_compressible(len: usize, zero_pct: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|i| {
                if i < len * zero_pct / 100 {
                    return 0;
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn codec_of(data: Vec<u8>) -> u8 {
        let mut c = zstd::bulk::Compressor::new(3).unwrap_or_else(|e| panic!("compressor: {e}"));
        let raw_len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let frame = build_frame(data, &[0; 32], raw_len, Some(&mut c)).unwrap_or_else(|e| panic!("{e}"));
        frame.parts()[0][4]
    }

    #[test]
    fn compressed_only_when_it_saves_a_tenth() {
        assert_eq!(codec_of(partly_compressible(1 << 20, 5)), Codec::Raw as u8, "5% saved: kept raw");
        assert_eq!(codec_of(partly_compressible(1 << 20, 20)), Codec::Zstd as u8, "20% saved: compressed");
    }
}
