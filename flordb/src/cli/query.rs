//! `flor dataframe|sql|runs|versions` (being written).

use std::path::Path;

/// Arguments of `flor dataframe`.
#[derive(Debug, clap::Args)]
pub struct DataframeArgs {}
/// Arguments of `flor sql`.
#[derive(Debug, clap::Args)]
pub struct SqlArgs {}
/// Arguments of `flor runs` and `flor versions`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {}

pub fn dataframe(_p: &Path, _a: DataframeArgs) -> Result<(), String> {
    Err("not built yet".into())
}
pub fn sql(_p: &Path, _a: SqlArgs) -> Result<(), String> {
    Err("not built yet".into())
}
pub fn runs(_p: &Path, _a: ListArgs) -> Result<(), String> {
    Err("not built yet".into())
}
pub fn versions(_p: &Path, _a: ListArgs) -> Result<(), String> {
    Err("not built yet".into())
}
