//! The single integration-test binary of this crate; one module per area.
// A failing test panics; that is how it reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod harness;
mod pivot;
mod prop;
mod sql;
