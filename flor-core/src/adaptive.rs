//! Adaptive checkpoint period (DESIGN.md §7). Filled in by the checkpoint work.
