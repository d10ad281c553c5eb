//! The single integration-test binary of the `flordb` crate; one module per area.
//!
//! Tests that need a real child process re-execute this binary with
//! `FLOR_TEST_CHILD` set, running only `child::entry`.

mod child;
mod common;
mod query_cli;
mod record;
