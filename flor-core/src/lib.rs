//! flordb's data model and recording runtime. No I/O happens here.
//!
//! The data model follows DESIGN.md §4 (FlorDB, CIDR 2025 "Flow with FlorDB",
//! §3): a [`Record`] is one `log(name, value)` call, attached to the innermost
//! [`LoopFrame`] it was made in; frames chain to the outermost loop; every
//! record belongs to one run, identified by a [`RunKey`] (`tstamp` in
//! microseconds plus a random run id).
//!
//! The [`Recorder`] is the recording runtime as a pure state machine: it keeps
//! the loop stack, derives context ids, validates names and produces records
//! and frames; `flor-store` persists what it produces.

#![warn(missing_docs)]

pub mod adaptive;
pub mod args;
mod error;
pub mod recorder;
pub mod run;
pub mod value;

pub use error::{Error, Result};
pub use recorder::{LoopFrame, Record, Recorder, Source};
pub use run::{RunKey, Tstamp};
pub use value::{Value, ValueType};
