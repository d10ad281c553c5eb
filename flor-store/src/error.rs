//! The error type of `flor-store`.

use std::path::PathBuf;

/// Errors of the storage layer.
///
/// Variants separate who must act: [`Error::Corrupt`] and [`Error::Torn`]
/// are damaged data (the named file, nothing else); [`Error::Io`] is the
/// operating system; [`Error::NotARepository`] and [`Error::Input`] are the
/// caller's; [`Error::Poisoned`] means an earlier durable write failed and
/// the writer must be reopened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on `path`.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A file's bytes fail their checksum or do not decode.
    #[error("corrupt file {path} at byte offset {offset}: {detail}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage (0 when the whole file is at fault).
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// Parquet or Arrow failed to encode or decode `path`.
    #[error("Parquet/Arrow error on {path}: {detail}")]
    Format {
        /// The file involved.
        path: PathBuf,
        /// The library's message.
        detail: String,
    },
    /// The directory is not inside a git repository.
    #[error("{path} is not inside a git repository; flordb versions every run in git: run `git init` there (or in a parent directory) and try again")]
    NotARepository {
        /// The directory given.
        path: PathBuf,
    },
    /// git2 failed.
    #[error("git error in {path}: {detail}")]
    Git {
        /// The repository.
        path: PathBuf,
        /// libgit2's message.
        detail: String,
    },
    /// A checkpoint is damaged: a chunk fails its hash.
    #[error("checkpoint damaged: run {run}, object {object:?}, at {loop_path}: {detail}")]
    CheckpointDamaged {
        /// The run's file stem (`<tstamp>-<run_id>`).
        run: String,
        /// The object name.
        object: String,
        /// The loop path, e.g. `epoch=3`.
        loop_path: String,
        /// What failed.
        detail: String,
    },
    /// No complete checkpoint exists under the key (never written, or torn by a crash).
    #[error("no checkpoint: run {run}, object {object:?}, at {loop_path}")]
    CheckpointMissing {
        /// The run's file stem.
        run: String,
        /// The object name.
        object: String,
        /// The loop path.
        loop_path: String,
    },
    /// Another process (or another open store in this process) holds the
    /// run's checkpoint database: sled admits one process per database.
    #[error("checkpoint database {path} of run {run} is open in another process (sled admits one process per database); close it there first")]
    CheckpointLocked {
        /// The run's file stem.
        run: String,
        /// The database directory.
        path: PathBuf,
    },
    /// sled failed.
    #[error("checkpoint database {path}: {detail}")]
    Sled {
        /// The database directory.
        path: PathBuf,
        /// sled's message.
        detail: String,
    },
    /// Bad input from the caller.
    #[error("{0}")]
    Input(String),
    /// An earlier durable write failed; this writer refuses further writes.
    #[error("the store writer stopped after a failed write ({0}); reopen the store")]
    Poisoned(String),
    /// A data-model error from `flor-core`.
    #[error(transparent)]
    Core(#[from] flor_core::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}
