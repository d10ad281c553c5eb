//! The error type of `flor-core`.

/// Errors raised by the data model and the recording runtime.
///
/// Every variant is caused by the caller's input (a bad name, a bad
/// `--kwargs` value, a loop call out of order); none is a storage fault.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A value name was empty. Names may hold any other characters.
    #[error("a logged value name must not be empty")]
    EmptyName,
    /// A loop name was empty.
    #[error("a loop name must not be empty")]
    EmptyLoopName,
    /// A `--kwargs` value did not parse as the type of the argument's default.
    #[error("argument `{name}`: {value:?} is not a valid {expected} (the type of its default)")]
    BadArg {
        /// The argument name.
        name: String,
        /// The text given on the command line.
        value: String,
        /// The expected type, e.g. `int`.
        expected: &'static str,
    },
    /// A `--kwargs` item was not of the form `key=value`.
    #[error("--kwargs item {0:?} is not of the form key=value")]
    BadKwarg(String),
    /// `iteration`/`loop_exit` was called with no open loop, or for another loop.
    #[error("loop misuse: {0}")]
    LoopMisuse(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
