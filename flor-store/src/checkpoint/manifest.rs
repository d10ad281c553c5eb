//! Manifests: what a checkpoint consists of, stored in the `manifests` tree
//! of the run's sled database.
//!
//! ```text
//! key   = levels:u32 (name_len:u32 name:utf8 iteration:i64)* object_len:u32 object:utf8
//! value = crc32(body):u32 body        body = version:u32, then the rest of
//!                                     the manifest encoded with crate::codec
//! ```
//!
//! (little-endian). The checksum lets damage be reported before the body
//! reaches the decoder; the key has a plain layout so that a damaged
//! manifest can still be named by its loop path and object.
//!
//! Version 2 (written by this build) stores where each chunk's frame lies
//! (pack id and offset) next to its hash, so a load or a replay recipe
//! reads no chunk-index entry: on the replay bench the index lookups were
//! most of the coordinator's CPU while its workers ran (BENCHMARKS.md,
//! replay). The chunk index stays the dedup map of the write path and the
//! source of truth for `gc`, which rewrites the locations of the manifests
//! whose chunks it moved before it deletes any pack (`gc.rs`). Version 1
//! manifests (no locations) are still read; their chunks are located
//! through the index, and the next `gc` rewrites them as version 2.
//!
//! A manifest is written only after every chunk it lists is durable (see
//! the commit protocol in `writer.rs`), so a manifest that exists always
//! describes a complete checkpoint.

use super::pack::Loc;
use serde::{Deserialize, Serialize};

/// The manifest format written by this version.
pub(crate) const MANIFEST_VERSION: u32 = 2;

/// One chunk of an object, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChunkRef {
    /// blake3 of the chunk's raw bytes; the chunk's key in the index.
    pub hash: [u8; 32],
    /// Raw (uncompressed) length in bytes, > 0.
    pub raw_len: u32,
    /// Bytes the chunk's frame occupies in its pack (header, compressed
    /// payload and checksum).
    pub stored_len: u32,
    /// Id of the pack holding the frame (version 2; 0 in a version 1
    /// manifest, whose chunks are located through the index).
    pub pack: u32,
    /// Byte offset of the frame in its pack (as `pack`).
    pub offset: u64,
}

impl ChunkRef {
    /// A reference to a chunk whose frame lies at `loc`.
    pub(crate) fn at(hash: [u8; 32], raw_len: u32, loc: Loc) -> ChunkRef {
        ChunkRef {
            hash,
            raw_len,
            stored_len: loc.frame_len,
            pack: loc.pack,
            offset: loc.offset,
        }
    }

    /// Where the frame lies, as the manifest records it.
    pub(crate) fn loc(&self) -> Loc {
        Loc {
            pack: self.pack,
            offset: self.offset,
            frame_len: self.stored_len,
        }
    }
}

/// The description of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    /// The format version: [`MANIFEST_VERSION`], or 1 for a manifest
    /// written before chunk locations were recorded.
    pub version: u32,
    /// The loop path, outermost first.
    pub loop_path: Vec<(String, i64)>,
    /// The object name.
    pub object: String,
    /// Total raw length in bytes (the sum of the chunks' raw lengths).
    pub raw_len: u64,
    /// blake3 of the whole object.
    pub hash: [u8; 32],
    /// When the save was submitted, microseconds since the Unix epoch (UTC).
    pub written_at: i64,
    /// Pack bytes this checkpoint added (chunks not stored before it).
    pub new_bytes: u64,
    /// The chunks, in order.
    pub chunks: Vec<ChunkRef>,
}

/// A version 1 chunk reference: no location.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct ChunkRefV1 {
    hash: [u8; 32],
    raw_len: u32,
    stored_len: u32,
}

/// A version 1 manifest, as it was encoded.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct ManifestV1 {
    version: u32,
    loop_path: Vec<(String, i64)>,
    object: String,
    raw_len: u64,
    hash: [u8; 32],
    written_at: i64,
    new_bytes: u64,
    chunks: Vec<ChunkRefV1>,
}

impl From<ManifestV1> for Manifest {
    fn from(m: ManifestV1) -> Manifest {
        Manifest {
            version: m.version,
            loop_path: m.loop_path,
            object: m.object,
            raw_len: m.raw_len,
            hash: m.hash,
            written_at: m.written_at,
            new_bytes: m.new_bytes,
            chunks: m
                .chunks
                .into_iter()
                .map(|c| ChunkRef {
                    hash: c.hash,
                    raw_len: c.raw_len,
                    stored_len: c.stored_len,
                    pack: 0,
                    offset: 0,
                })
                .collect(),
        }
    }
}

/// A stored value (a manifest, a head): the CRC-32 of the
/// [`crate::codec`] encoding of `v`, then that encoding.
pub(crate) fn sealed<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    let body = crate::codec::encode(v)?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The body of a value [`sealed`] wrote, once its checksum matches; the
/// error names `what` (`"manifest"`, `"checkpoint head"`).
pub(crate) fn unsealed<'b>(bytes: &'b [u8], what: &str) -> Result<&'b [u8], String> {
    let (crc, body) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| format!("{what} shorter than its checksum"))?;
    if crc32fast::hash(body) != u32::from_le_bytes(*crc) {
        return Err(format!("{what} checksum mismatch"));
    }
    Ok(body)
}

/// The manifest key of `(loop_path, object)`; fails only for a name over
/// 4 GiB or more than 2³² loop levels.
pub(crate) fn key(loop_path: &[(String, i64)], object: &str) -> Result<Vec<u8>, String> {
    let len = |n: usize| {
        u32::try_from(n).map_err(|_| "a checkpoint name or loop path is too long".to_string())
    };
    let mut k = Vec::with_capacity(
        8 + object.len() + loop_path.iter().map(|(n, _)| n.len() + 12).sum::<usize>(),
    );
    k.extend_from_slice(&len(loop_path.len())?.to_le_bytes());
    for (name, iteration) in loop_path {
        k.extend_from_slice(&len(name.len())?.to_le_bytes());
        k.extend_from_slice(name.as_bytes());
        k.extend_from_slice(&iteration.to_le_bytes());
    }
    k.extend_from_slice(&len(object.len())?.to_le_bytes());
    k.extend_from_slice(object.as_bytes());
    Ok(k)
}

/// The `(loop_path, object)` of a manifest key, for naming a damaged
/// manifest; `None` when the key is not one [`key`] makes.
pub(crate) fn decode_key(mut k: &[u8]) -> Option<(Vec<(String, i64)>, String)> {
    fn take<'a>(k: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = k.split_at_checked(n)?;
        *k = rest;
        Some(head)
    }
    fn u32_of(k: &mut &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(take(k, 4)?.try_into().ok()?) as usize)
    }
    fn text(k: &mut &[u8]) -> Option<String> {
        let n = u32_of(k)?;
        String::from_utf8(take(k, n)?.to_vec()).ok()
    }
    let levels = u32_of(&mut k)?;
    let mut path = Vec::new();
    for _ in 0..levels {
        let name = text(&mut k)?;
        let iteration = i64::from_le_bytes(take(&mut k, 8)?.try_into().ok()?);
        path.push((name, iteration));
    }
    let object = text(&mut k)?;
    k.is_empty().then_some((path, object))
}

impl Manifest {
    /// The stored value: checksum, then the [`crate::codec`] encoding.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, String> {
        sealed(self)
    }

    /// Checks and decodes a stored value: the checksum, the version, and
    /// that the chunk lengths are non-zero and add up to `raw_len`.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Manifest, String> {
        let body = unsealed(bytes, "manifest")?;
        let version = body
            .first_chunk::<4>()
            .map(|v| u32::from_le_bytes(*v))
            .ok_or("manifest shorter than its version")?;
        let undecodable = |e: String| format!("manifest does not decode: {e}");
        let m: Manifest = match version {
            MANIFEST_VERSION => crate::codec::decode(body).map_err(undecodable)?,
            1 => crate::codec::decode::<ManifestV1>(body)
                .map_err(undecodable)?
                .into(),
            v => {
                return Err(format!(
                    "manifest format version {v} is not supported (this build reads 1 and {MANIFEST_VERSION})"
                ))
            }
        };
        let mut sum = 0u64;
        for (i, c) in m.chunks.iter().enumerate() {
            if c.raw_len == 0 {
                return Err(format!("manifest lists chunk {i} with length 0"));
            }
            sum = sum.saturating_add(u64::from(c.raw_len));
        }
        if sum != m.raw_len {
            return Err(format!(
                "manifest chunk lengths add up to {sum} bytes, not the recorded {}",
                m.raw_len
            ));
        }
        Ok(m)
    }

    /// Whether the chunks carry their pack locations (version 2 and
    /// later); a version 1 manifest's chunks are located through the index.
    pub(crate) fn located(&self) -> bool {
        self.version >= 2
    }

    /// Sum of the chunks' stored lengths in bytes (shared chunks counted in full).
    pub(crate) fn stored_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.stored_len)).sum()
    }
}

/// `m` stored as a version 1 manifest (without locations), as builds
/// before version 2 wrote it.
#[cfg(test)]
pub(crate) fn encode_v1(m: &Manifest) -> Vec<u8> {
    let v1 = ManifestV1 {
        version: 1,
        loop_path: m.loop_path.clone(),
        object: m.object.clone(),
        raw_len: m.raw_len,
        hash: m.hash,
        written_at: m.written_at,
        new_bytes: m.new_bytes,
        chunks: m
            .chunks
            .iter()
            .map(|c| ChunkRefV1 {
                hash: c.hash,
                raw_len: c.raw_len,
                stored_len: c.stored_len,
            })
            .collect(),
    };
    let body = crate::codec::encode(&v1).unwrap_or_default();
    let mut bytes = crc32fast::hash(&body).to_le_bytes().to_vec();
    bytes.extend_from_slice(&body);
    bytes
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            loop_path: vec![("epoch".into(), 3)],
            object: "model".into(),
            raw_len: 30,
            hash: [7; 32],
            written_at: 1_700_000_000_000_000,
            new_bytes: 12,
            chunks: vec![
                ChunkRef {
                    hash: [1; 32],
                    raw_len: 10,
                    stored_len: 55,
                    pack: 0,
                    offset: 16,
                },
                ChunkRef {
                    hash: [2; 32],
                    raw_len: 20,
                    stored_len: 60,
                    pack: 1,
                    offset: 4096,
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_checks() {
        let m = sample();
        let bytes = m.encode().unwrap();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        assert_eq!(m.stored_bytes(), 115);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(Manifest::decode(&b).is_err(), "flip at {i}");
        }
        let mut bad = sample();
        bad.raw_len = 31;
        assert!(Manifest::decode(&bad.encode().unwrap())
            .unwrap_err()
            .contains("add up to 30"));
        let mut bad = sample();
        bad.version = 9;
        assert!(Manifest::decode(&bad.encode().unwrap())
            .unwrap_err()
            .contains("version 9"));
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    /// A manifest written before chunk locations (version 1) still reads,
    /// as one whose chunks must be located through the index.
    #[test]
    fn version_1_manifests_read_without_locations() {
        let m = sample();
        let bytes = encode_v1(&m);
        let read = Manifest::decode(&bytes).unwrap();
        assert!(!read.located() && m.located());
        assert_eq!(read.version, 1);
        assert_eq!(
            (read.raw_len, read.hash, read.stored_bytes()),
            (30, [7; 32], 115)
        );
        let hashes: Vec<_> = read.chunks.iter().map(|c| (c.hash, c.raw_len)).collect();
        assert_eq!(hashes, vec![([1; 32], 10), ([2; 32], 20)]);
        // Version 2 bytes are longer by the locations: 12 bytes per chunk.
        assert_eq!(m.encode().unwrap().len(), bytes.len() + 2 * 12);
    }

    #[test]
    fn keys_differ_by_path_and_object() {
        let a = key(&[("epoch".into(), 3)], "model").unwrap();
        assert_ne!(a, key(&[("epoch".into(), 4)], "model").unwrap());
        assert_ne!(a, key(&[("epoch".into(), 3)], "optim").unwrap());
        assert_ne!(key(&[], "a").unwrap(), key(&[("".into(), 0)], "a").unwrap());
        let two = key(&[("epoch".into(), -3), ("step".into(), i64::MAX)], "ünï").unwrap();
        assert_eq!(
            decode_key(&a),
            Some((vec![("epoch".to_string(), 3)], "model".to_string()))
        );
        assert_eq!(
            decode_key(&two),
            Some((
                vec![("epoch".to_string(), -3), ("step".to_string(), i64::MAX)],
                "ünï".to_string()
            ))
        );
        for cut in 0..a.len() {
            assert_eq!(decode_key(&a[..cut]), None);
        }
        assert_eq!(decode_key(&[a.as_slice(), b"x"].concat()), None);
        assert_eq!(decode_key(&[0xff; 64]), None);
    }
}
