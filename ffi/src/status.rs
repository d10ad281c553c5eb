//! Status codes, the thread-local last-error message, and the panic guard
//! every `extern "C"` entry point runs its body in (STYLE.md "C ABI").

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The result of every fallible `flor_*` call.
///
/// Codes are grouped by who must act (10s: the caller's input; 20s: the
/// store; 30s: checkpoints; 40s: queries; 1–3 and 90s: the boundary and
/// internal bugs). A code, once published, is never reused for another
/// meaning; new errors get new numbers. On any code but
/// `FLOR_STATUS_OK`, [`flor_last_error`] describes the failure.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlorStatus {
    /// Success; outputs were written.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// A string argument was not valid UTF-8.
    InvalidUtf8 = 2,
    /// A Rust panic was caught at the boundary (a bug in flordb; the
    /// handle may be left in an unknown state).
    Panic = 3,
    /// A logged value name was empty.
    EmptyName = 10,
    /// A `--kwargs` value did not parse as the type of the argument's default.
    BadArg = 11,
    /// A `--kwargs` item was not of the form `key=value`.
    BadKwarg = 12,
    /// Loop calls out of order (iteration with no open loop, exit of
    /// another loop than the innermost).
    LoopMisuse = 13,
    /// A loop name was empty.
    EmptyLoopName = 14,
    /// A setting (e.g. `FLOR_CKPT`) was not understood.
    BadSetting = 15,
    /// Another bad argument from the caller (described by the message).
    InvalidArgument = 16,
    /// Recording was asked for outside a git repository; the message says
    /// how to fix it.
    NotARepository = 20,
    /// The operating system failed an I/O call; the message names the path.
    Io = 21,
    /// A stored file fails its checksum or does not decode; the message
    /// names the file and offset.
    Corrupt = 22,
    /// Parquet or Arrow failed on a named file.
    Format = 23,
    /// git failed.
    Git = 24,
    /// An earlier durable write failed; the writer refuses further writes
    /// until the handle is reopened.
    Poisoned = 25,
    /// The store rejected the caller's input.
    StoreInput = 26,
    /// No complete checkpoint exists under the key asked for.
    CheckpointMissing = 30,
    /// A checkpoint failed its hashes.
    CheckpointDamaged = 31,
    /// The run's checkpoint database is open in another process.
    CheckpointLocked = 32,
    /// The checkpoint database (sled) failed.
    CheckpointDatabase = 33,
    /// DataFusion rejected or failed a SQL query or predicate.
    Sql = 40,
    /// Stored batches do not fit their table (damaged or foreign data).
    QueryTable = 41,
    /// The query layer rejected the caller's input.
    QueryInput = 42,
    /// An internal failure (Arrow, the query runtime, an error kind this
    /// build does not know); the message says what.
    Internal = 90,
}

/// An error on its way out through the boundary.
#[derive(Debug)]
pub(crate) struct FfiError {
    pub status: FlorStatus,
    pub message: String,
}

impl FfiError {
    pub fn new(status: FlorStatus, message: impl Into<String>) -> FfiError {
        FfiError { status, message: message.into() }
    }

    pub fn null(what: &str) -> FfiError {
        FfiError::new(FlorStatus::NullArgument, format!("argument `{what}` must not be NULL"))
    }
}

pub(crate) type FfiResult<T = ()> = Result<T, FfiError>;

fn core_status(e: &flordb::core::Error) -> FlorStatus {
    use flordb::core::Error as E;
    match e {
        E::EmptyName => FlorStatus::EmptyName,
        E::EmptyLoopName => FlorStatus::EmptyLoopName,
        E::BadArg { .. } => FlorStatus::BadArg,
        E::BadKwarg(_) => FlorStatus::BadKwarg,
        E::LoopMisuse(_) => FlorStatus::LoopMisuse,
        _ => FlorStatus::Internal,
    }
}

fn store_status(e: &flordb::store::Error) -> FlorStatus {
    use flordb::store::Error as E;
    match e {
        E::Io { .. } => FlorStatus::Io,
        E::Corrupt { .. } => FlorStatus::Corrupt,
        E::Format { .. } => FlorStatus::Format,
        E::NotARepository { .. } => FlorStatus::NotARepository,
        E::Git { .. } => FlorStatus::Git,
        E::CheckpointDamaged { .. } => FlorStatus::CheckpointDamaged,
        E::CheckpointMissing { .. } => FlorStatus::CheckpointMissing,
        E::CheckpointLocked { .. } => FlorStatus::CheckpointLocked,
        E::Sled { .. } => FlorStatus::CheckpointDatabase,
        E::Input(_) => FlorStatus::StoreInput,
        E::Poisoned(_) => FlorStatus::Poisoned,
        E::Core(c) => core_status(c),
        _ => FlorStatus::Internal,
    }
}

impl From<flordb::Error> for FfiError {
    fn from(e: flordb::Error) -> FfiError {
        let status = match &e {
            flordb::Error::Core(c) => core_status(c),
            flordb::Error::Store(s) => store_status(s),
            _ => FlorStatus::Internal,
        };
        FfiError::new(status, e.to_string())
    }
}

impl From<flordb::store::Error> for FfiError {
    fn from(e: flordb::store::Error) -> FfiError {
        FfiError::new(store_status(&e), e.to_string())
    }
}

impl From<flordb::core::Error> for FfiError {
    fn from(e: flordb::core::Error) -> FfiError {
        FfiError::new(core_status(&e), e.to_string())
    }
}

impl From<flordb::query::Error> for FfiError {
    fn from(e: flordb::query::Error) -> FfiError {
        use flordb::query::Error as E;
        let status = match &e {
            E::Store(s) => store_status(s),
            E::Sql { .. } => FlorStatus::Sql,
            E::Table { .. } => FlorStatus::QueryTable,
            E::Input(_) => FlorStatus::QueryInput,
            _ => FlorStatus::Internal,
        };
        FfiError::new(status, e.to_string())
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = text);
}

/// Runs `body`, catching panics; on failure records the message for
/// [`flor_last_error`] and returns its status.
pub(crate) fn guard(body: impl FnOnce() -> FfiResult) -> FlorStatus {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => FlorStatus::Ok,
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic payload".into());
            set_last_error(&format!("internal error in flordb (a bug, please report it): {what}"));
            FlorStatus::Panic
        }
    }
}

/// The message of the last failed `flor_*` call on this thread, as a
/// NUL-terminated UTF-8 string; `""` when none failed yet.
///
/// The pointer stays valid until the next failing `flor_*` call on the
/// same thread; copy the text to keep it. Successful calls leave it as is.
/// Never returns NULL.
#[no_mangle]
pub extern "C" fn flor_last_error() -> *const c_char {
    catch_unwind(|| LAST_ERROR.with(|l| l.borrow().as_ptr())).unwrap_or(c"internal error".as_ptr())
}
