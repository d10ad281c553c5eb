//! versions (being written).
