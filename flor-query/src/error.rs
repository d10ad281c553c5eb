//! The error type of `flor-query`.

use datafusion::error::DataFusionError;

/// Errors of the query layer.
///
/// Who must act: [`Error::Sql`] and [`Error::Input`] are the caller's (a
/// query or predicate DataFusion rejects, an argument that cannot be used);
/// [`Error::Store`] comes from reading the project (I/O, a repository that
/// cannot be read); [`Error::Table`] means stored batches do not fit the
/// table they belong to (damaged or foreign data); [`Error::Arrow`] and
/// [`Error::Runtime`] are internal failures; [`Error::NestedRuntime`] is a
/// blocking call made from inside an async runtime (use the `_async` method).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Opening or scanning the store failed.
    #[error(transparent)]
    Store(#[from] flor_store::Error),
    /// DataFusion rejected or failed a query; the message is DataFusion's.
    #[error("{source}")]
    Sql {
        /// The SQL text (query or predicate) as given.
        query: String,
        /// DataFusion's error.
        source: DataFusionError,
    },
    /// A stored batch does not fit its table (a column is missing or has a
    /// type that cannot be converted).
    #[error("table {table}: {detail}")]
    Table {
        /// `logs`, `loops`, `runs` or `versions`.
        table: &'static str,
        /// What does not fit.
        detail: String,
    },
    /// Bad input from the caller that is not SQL (e.g. a batch without the
    /// columns [`crate::latest`] needs).
    #[error("{0}")]
    Input(String),
    /// Arrow failed while building the named result (an internal bug).
    #[error("Arrow error while building {what}: {source}")]
    Arrow {
        /// The result being built.
        what: &'static str,
        /// Arrow's error.
        source: datafusion::arrow::error::ArrowError,
    },
    /// DataFusion failed outside a user query (registering a table).
    #[error("DataFusion error while {what}: {source}")]
    DataFusion {
        /// What was being done.
        what: &'static str,
        /// DataFusion's error.
        source: DataFusionError,
    },
    /// The tokio runtime that drives DataFusion could not be started.
    #[error("could not start the query runtime: {0}")]
    Runtime(std::io::Error),
    /// A blocking query method was called from inside an async runtime.
    #[error("blocking query called inside an async runtime; use the `_async` method instead")]
    NestedRuntime,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn arrow_err(what: &'static str) -> impl FnOnce(datafusion::arrow::error::ArrowError) -> Error {
    move |source| Error::Arrow { what, source }
}

pub(crate) fn df_err(what: &'static str) -> impl FnOnce(DataFusionError) -> Error {
    move |source| Error::DataFusion { what, source }
}
