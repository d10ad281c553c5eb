//! The one place bincode is used (pinned `=2.0.1`), so it can be swapped.

use serde::{de::DeserializeOwned, Serialize};

/// Largest value decoded (1 GiB, the WAL's frame limit): a damaged length
/// field becomes a decode error instead of a huge allocation.
pub const DECODE_LIMIT: usize = 1 << 30;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<DECODE_LIMIT>()
}

/// Encodes `v` (little-endian, fixed-width integers).
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(v, config()).map_err(|e| e.to_string())
}

/// Decodes bytes written by [`encode`]; trailing bytes, and claimed sizes
/// beyond [`DECODE_LIMIT`], are errors.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (v, n) = bincode::serde::decode_from_slice(bytes, config()).map_err(|e| e.to_string())?;
    if n != bytes.len() {
        return Err(format!(
            "{} trailing bytes after the value",
            bytes.len() - n
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_damaged_length_is_an_error_not_an_allocation() {
        // A Vec<u8> whose fixed-width length claims 7e18 bytes.
        let mut bytes = 7_000_000_000_000_000_000u64.to_le_bytes().to_vec();
        bytes.extend_from_slice(&[1, 2, 3]);
        assert!(super::decode::<Vec<u8>>(&bytes).is_err());
        let ok = super::encode(&vec![1u8, 2, 3]).unwrap();
        assert_eq!(super::decode::<Vec<u8>>(&ok).unwrap(), vec![1, 2, 3]);
    }
}
