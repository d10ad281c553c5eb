//! Checkpoint store tests (issue 4).
