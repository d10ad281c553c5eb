//! flordb hindsight replay: statement propagation (tree-sitter-python) and
//! the replay planner and executor (DESIGN.md §7; FlorDB arXiv 2310.07898
//! "Multiversion Hindsight Logging for Continuous Training").
//!
//! - [`propagate`]: carry new log statements into old versions of a script;
//! - [`position`]: where the statements sit relative to the loops, and the
//!   replay copy that skips the rest of the outer body;
//! - [`plan`]: which runs, versions, iterations and checkpoints; estimate;
//! - [`execute`] and [`executor`]: materialize versions, write checkpoint recipes,
//!   run workers in parallel, summarize.

#![warn(missing_docs)]

pub mod execute;
pub mod executor;
pub mod plan;
pub mod position;
pub mod propagate;

use std::path::PathBuf;

/// Errors of planning and running a replay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad input: no names, unknown script, nothing to replay.
    #[error("{0}")]
    Input(String),
    /// The query layer failed (including a bad `--where` predicate).
    #[error(transparent)]
    Query(#[from] flor_query::Error),
    /// The store failed (git objects, checkpoints).
    #[error(transparent)]
    Store(#[from] flor_store::Error),
    /// A temporary file could not be written.
    #[error("I/O error on {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// A bug: an unexpected query shape.
    #[error("internal error: {0}")]
    Internal(String),
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` (UTC) for a `tstamp` in microseconds.
pub fn fmt_tstamp(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}", sod / 3600, sod % 3600 / 60, sod % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tstamps_format_as_utc() {
        assert_eq!(super::fmt_tstamp(0), "1970-01-01 00:00:00.000000");
        assert_eq!(super::fmt_tstamp(1_796_030_826_989_469), "2026-11-30 09:27:06.989469");
    }
}
