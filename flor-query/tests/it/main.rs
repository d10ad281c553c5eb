//! The single integration-test binary of this crate; one module per area.
mod pivot;
