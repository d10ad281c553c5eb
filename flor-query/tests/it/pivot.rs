//! Pivot and SQL tests (issue 3).
