//! Unified diffs of a propagation, for `flor propagate`.

/// A unified diff (`---`/`+++` headers, hunks with 3 lines of context)
/// from `before` to `after`; empty when they are equal.
pub fn unified_diff(before: &str, after: &str, before_name: &str, after_name: &str) -> String {
    if before == after {
        return String::new();
    }
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(before_name, after_name)
        .to_string()
}
