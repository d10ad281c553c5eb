//! Record path tests: WAL, segments, recovery, versions (issue 2).
