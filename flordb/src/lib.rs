//! flordb: FlorDB rebuilt in Rust. The facade crate users depend on.

#![warn(missing_docs)]

pub mod cli;

pub use flor_core as core;
pub use flor_query as query;
pub use flor_replay as replay;
pub use flor_store as store;
