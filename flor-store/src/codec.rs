//! The one place bincode is used (pinned `=2.0.1`), so it can be swapped.

use serde::{de::DeserializeOwned, Serialize};

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_fixed_int_encoding()
}

/// Encodes `v` (little-endian, fixed-width integers).
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(v, config()).map_err(|e| e.to_string())
}

/// Decodes bytes written by [`encode`]; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (v, n) = bincode::serde::decode_from_slice(bytes, config()).map_err(|e| e.to_string())?;
    if n != bytes.len() {
        return Err(format!("{} trailing bytes after the value", bytes.len() - n));
    }
    Ok(v)
}
