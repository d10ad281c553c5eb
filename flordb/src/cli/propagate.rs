//! `flor propagate` (being written).

/// Arguments of `flor propagate`.
#[derive(Debug, clap::Args)]
pub struct PropagateArgs {}

pub fn run(_a: PropagateArgs) -> Result<(), String> {
    Err("flor propagate is not built yet".into())
}
