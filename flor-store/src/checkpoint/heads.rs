//! Manifest heads: what [`super::CheckpointStore::list`] reports of each
//! checkpoint, stored apart from the manifests in the `heads` tree of the
//! run's sled database.
//!
//! ```text
//! key   = the manifest key (see `manifest.rs`)
//! value = crc32(body):u32 body        body = Head encoded with crate::codec
//! ```
//!
//! Listing a run's checkpoints (every replay plans from it) used to decode
//! every manifest, chunk list and all: ~230 ns per chunk reference, so
//! 100 checkpoints of a 1 GiB model (~65,000 chunks each) took over a
//! second per run. A head is a few dozen bytes whatever the object's size.
//!
//! A head is written in the same sled transaction as its manifest (see the
//! commit protocol in `writer.rs`), so the two are replaced together and a
//! crash leaves both or neither. A store whose `meta` tree lacks `heads`
//! was written before heads existed (or has checkpoints committed by such a
//! build): it is listed from the manifests until a `gc` writes every head
//! and records `heads` = 1.

use super::manifest::{sealed, unsealed, Manifest};
use super::CheckpointInfo;
use serde::{Deserialize, Serialize};

/// The head format written by this version.
pub(crate) const HEAD_VERSION: u32 = 1;

/// The `meta` key recording that every manifest has its head.
pub(crate) const HEADS_COMPLETE: &str = "heads";

/// The summary of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Head {
    /// [`HEAD_VERSION`].
    pub version: u32,
    /// The loop path, outermost first.
    pub loop_path: Vec<(String, i64)>,
    /// The object name.
    pub object: String,
    /// Raw length of the object in bytes.
    pub raw_len: u64,
    /// blake3 of the whole object.
    pub hash: [u8; 32],
    /// When the save was submitted, microseconds since the Unix epoch (UTC).
    pub written_at: i64,
    /// Pack bytes this checkpoint added.
    pub new_bytes: u64,
    /// Bytes its chunks' frames occupy (shared chunks counted in full).
    pub stored_bytes: u64,
    /// Number of chunks.
    pub chunks: u64,
}

impl Head {
    /// The head of manifest `m`.
    pub(crate) fn of(m: &Manifest) -> Head {
        Head {
            version: HEAD_VERSION,
            loop_path: m.loop_path.clone(),
            object: m.object.clone(),
            raw_len: m.raw_len,
            hash: m.hash,
            written_at: m.written_at,
            new_bytes: m.new_bytes,
            stored_bytes: m.stored_bytes(),
            chunks: m.chunks.len() as u64,
        }
    }

    /// The stored value: checksum, then the [`crate::codec`] encoding.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        sealed(self)
    }

    /// Checks and decodes a stored value.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Head, String> {
        let body = unsealed(bytes, "checkpoint head")?;
        let h: Head = crate::codec::decode(body)
            .map_err(|e| format!("checkpoint head does not decode: {e}"))?;
        if h.version != HEAD_VERSION {
            return Err(format!(
                "checkpoint head format version {} is not supported (this build reads {HEAD_VERSION})",
                h.version
            ));
        }
        Ok(h)
    }

    /// What [`super::CheckpointStore::list`] reports.
    pub(crate) fn info(self) -> CheckpointInfo {
        CheckpointInfo {
            loop_path: self.loop_path,
            object: self.object,
            raw_bytes: self.raw_len,
            stored_bytes: self.stored_bytes,
            new_bytes: self.new_bytes,
            chunks: self.chunks,
            written_at: self.written_at,
            hash: self.hash,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks() {
        let h = Head {
            version: HEAD_VERSION,
            loop_path: vec![("epoch".into(), 3)],
            object: "model".into(),
            raw_len: 30,
            hash: [7; 32],
            written_at: 1_700_000_000_000_000,
            new_bytes: 12,
            stored_bytes: 115,
            chunks: 2,
        };
        let bytes = h.encode().unwrap();
        assert_eq!(Head::decode(&bytes).unwrap(), h);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Head::decode(&b).is_err(), "flip at {i}");
        }
        let mut bad = h.clone();
        bad.version = 9;
        assert!(Head::decode(&bad.encode().unwrap())
            .unwrap_err()
            .contains("version 9"));
    }
}
