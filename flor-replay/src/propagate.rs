//! Statement propagation (being written).
