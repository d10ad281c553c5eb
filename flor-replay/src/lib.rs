//! flordb hindsight replay: statement propagation (tree-sitter-python) and
//! the replay planner and executor (DESIGN.md §7).

#![warn(missing_docs)]

pub mod propagate;
