"""The exception hierarchy of flordb, mirroring the Rust errors.

Every failing call into the native library returns a status code (the C
enum ``FlorStatus``, codes never reused); :func:`raise_for` turns it into
the matching exception carrying the Rust message.

::

    FlorError
    ├── InputError (also ValueError)        the caller's input
    │   ├── ArgumentError                    --kwargs item or value
    │   └── LoopError                        loop calls out of order
    ├── NotARepositoryError                  recording outside git
    ├── StorageError (also OSError)         the store on disk
    │   ├── CorruptError                     checksum / decode failure
    │   ├── GitError
    │   └── PoisonedError                    an earlier durable write failed
    ├── CheckpointError
    │   ├── CheckpointMissingError (also KeyError)
    │   ├── CheckpointDamagedError
    │   └── CheckpointLockedError
    ├── QueryError
    │   └── SqlError
    └── InternalError                        a bug in flordb
"""


class FlorError(Exception):
    """Base class of every flordb error. ``status`` is the native status code."""

    status = None

    def __init__(self, message, status=None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self):
        return self.message


class InputError(FlorError, ValueError):
    """Bad input from the caller (a name, a value, an argument)."""


class ArgumentError(InputError):
    """A ``--kwargs`` item or value that cannot be used."""


class LoopError(InputError):
    """Loop calls out of order, or an empty loop name."""


class NotARepositoryError(FlorError):
    """Recording was asked for outside a git repository."""


class StorageError(FlorError, OSError):
    """The store on disk failed (I/O, format)."""


class CorruptError(StorageError):
    """A stored file fails its checksum or does not decode."""


class GitError(StorageError):
    """git failed."""


class PoisonedError(StorageError):
    """An earlier durable write failed; the session refuses further writes."""


class CheckpointError(FlorError):
    """A checkpoint could not be saved or loaded."""


class CheckpointMissingError(CheckpointError, KeyError):
    """No complete checkpoint exists under the key asked for."""

    def __str__(self):  # KeyError would quote the message
        return self.message


class CheckpointDamagedError(CheckpointError):
    """A checkpoint failed its hashes."""


class CheckpointLockedError(CheckpointError):
    """The run's checkpoint database is open in another process."""


class QueryError(FlorError):
    """A query could not be answered."""


class SqlError(QueryError):
    """DataFusion rejected or failed a SQL query."""


class InternalError(FlorError):
    """An internal failure or a caught panic: a bug in flordb."""


# FlorStatus code -> exception class (ffi/include/flor.h, enum FlorStatus).
_BY_STATUS = {
    1: InputError,  # NULL_ARGUMENT
    2: InputError,  # INVALID_UTF8
    3: InternalError,  # PANIC
    10: InputError,  # EMPTY_NAME
    11: ArgumentError,  # BAD_ARG
    12: ArgumentError,  # BAD_KWARG
    13: LoopError,  # LOOP_MISUSE
    14: LoopError,  # EMPTY_LOOP_NAME
    15: InputError,  # BAD_SETTING
    16: InputError,  # INVALID_ARGUMENT
    20: NotARepositoryError,
    21: StorageError,  # IO
    22: CorruptError,
    23: StorageError,  # FORMAT
    24: GitError,
    25: PoisonedError,
    26: InputError,  # STORE_INPUT
    30: CheckpointMissingError,
    31: CheckpointDamagedError,
    32: CheckpointLockedError,
    33: CheckpointError,  # CHECKPOINT_DATABASE
    40: SqlError,
    41: QueryError,  # QUERY_TABLE
    42: QueryError,  # QUERY_INPUT
    90: InternalError,
}


def error_for(status, message):
    """The exception for a native status code and message."""
    cls = _BY_STATUS.get(status, FlorError)
    return cls(message, status)


__all__ = [
    "FlorError",
    "InputError",
    "ArgumentError",
    "LoopError",
    "NotARepositoryError",
    "StorageError",
    "CorruptError",
    "GitError",
    "PoisonedError",
    "CheckpointError",
    "CheckpointMissingError",
    "CheckpointDamagedError",
    "CheckpointLockedError",
    "QueryError",
    "SqlError",
    "InternalError",
    "error_for",
]
