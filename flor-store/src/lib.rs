//! flordb's storage layer (DESIGN.md §6, format in docs/FORMAT.md).
//!
//! - [`wal`]: the per-process write-ahead log (framed, checksummed records
//!   written by a background thread);
//! - [`segment`]: sealed Parquet segments (`logs`, `loops`, `runs`) and the
//!   per-seal manifest that makes them visible atomically;
//! - [`store`]: the project store in `.flor/`: open, recover, seal, scan;
//! - [`versions`]: git snapshots on the shadow branch `flor.<branch>`;
//! - [`checkpoint`]: the sled + zstd checkpoint store.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod codec;
mod error;
pub mod schema;
pub mod segment;
pub mod store;
pub mod versions;
pub mod wal;

pub use arrow;
pub use error::{Error, Result};
pub use parquet;
