//! The single integration-test binary of this crate; one module per area.
mod checkpoint;
mod record_path;
