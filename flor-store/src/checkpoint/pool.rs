//! The compression worker pool (crossbeam channels): each worker hashes a
//! chunk, skips it when the index already holds it, otherwise compresses it
//! with zstd and seals it into a pack frame for the writer thread.

use super::pack::{Codec, Frame, Loc};
use super::writer::WriterMsg;
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
    if let Some(loc) = known.as_deref().and_then(Loc::decode) {
        return Ok(WriterMsg::Chunk {
            seq,
            index: i,
            hash,
            raw_len,
            stored_len: loc.frame_len,
            frame: None,
        });
    }
    let frame = build_frame(data, &hash, raw_len, compressor)?;
    let stored_len = u32::try_from(frame.len()).map_err(|_| "frame over 4 GiB".to_string())?;
    Ok(WriterMsg::Chunk {
        seq,
        index: i,
        hash,
        raw_len,
        stored_len,
        frame: Some(frame),
    })
}

/// Compresses `data` into a sealed frame; keeps it raw (without copying)
/// when zstd saves less than 1/32 of it, so incompressible data also loads
/// at memory speed.
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
        if n + data.len() / 32 < data.len() {
            return Ok(Frame::seal(Codec::Zstd, raw_len, hash, out));
        }
    }
    Ok(Frame::seal(Codec::Raw, raw_len, hash, data))
}
