//! flordb: FlorDB rebuilt in Rust, an embedded store for ML metadata with
//! hindsight logging. The facade crate users depend on.
//!
//! ```no_run
//! let flor = flordb::Flor::open(".")?;
//! let lr = flor.arg("lr", 0.01)?;
//! for epoch in flor.loop_iter("epoch", 0..3) {
//!     flor.log("loss", 1.0 / (epoch as f64 + 1.0))?;
//! }
//! flor.commit()?;
//! # let _ = lr;
//! # Ok::<(), flordb::Error>(())
//! ```

#![warn(missing_docs)]

pub mod cli;
mod flor;

pub use flor::{Committed, Error, Flor, LoopIter, Options, Result};
pub use flor_core as core;
pub use flor_core::Value;
pub use flor_query as query;
pub use flor_replay as replay;
pub use flor_store as store;
