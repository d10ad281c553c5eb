//! Propagation corpus tests (issue 6).
