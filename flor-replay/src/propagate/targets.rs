//! Finding the statements to carry: by the name a statement logs, or by line.

use std::collections::HashMap;

use tree_sitter::Node;

use super::{Error, Target};

/// Compound statements: they hold blocks, so they can neither be written on
/// one line after `;` nor picked from a line inside their body.
pub(super) const COMPOUND: &[&str] = &[
    "if_statement",
    "for_statement",
    "while_statement",
    "try_statement",
    "with_statement",
    "function_definition",
    "class_definition",
    "decorated_definition",
    "match_statement",
];

/// A statement of the new file to carry, with the target that named it.
pub(super) struct Resolved<'t> {
    pub target: Target,
    pub node: Node<'t>,
}

/// Every statement of the tree (a named child of the module or of a block),
/// in preorder. Simple statements are not searched further: only compound
/// ones hold blocks.
pub(super) fn statements<'t>(root: Node<'t>) -> Vec<Node<'t>> {
    let mut out = Vec::new();
    let mut stack = vec![(root, false)];
    let mut cursor = root.walk();
    while let Some((node, is_statement)) = stack.pop() {
        if is_statement {
            out.push(node);
            if !COMPOUND.contains(&node.kind()) {
                continue;
            }
        }
        let holds_statements = matches!(node.kind(), "module" | "block");
        let first = stack.len();
        for child in node.named_children(&mut cursor) {
            if !child.is_extra() {
                stack.push((child, holds_statements));
            }
        }
        if let Some(pushed) = stack.get_mut(first..) {
            pushed.reverse();
        }
    }
    out
}

/// Resolves `targets` against the new file; statements come out in source
/// order, without duplicates or statements nested in another one.
pub(super) fn resolve<'t>(root: Node<'t>, src: &str, targets: &[Target]) -> Result<Vec<Resolved<'t>>, Error> {
    let all = statements(root);
    let mut names: Vec<Option<&str>> = Vec::new();
    let mut found: Vec<Resolved<'t>> = Vec::new();
    for target in targets {
        match target {
            Target::Name(name) => {
                if names.is_empty() {
                    names = all.iter().map(|&n| logged_name(n, src)).collect();
                }
                let before = found.len();
                for (&node, &logged) in all.iter().zip(&names) {
                    if logged == Some(name.as_str()) {
                        found.push(Resolved { target: target.clone(), node });
                    }
                }
                if found.len() == before {
                    return Err(Error::NameNotFound { name: name.clone() });
                }
            }
            Target::Line(line) => {
                let lines = src.lines().count();
                if *line == 0 || *line > lines {
                    return Err(Error::LineOutOfRange { line: *line, lines });
                }
                let row = line - 1;
                let starting: Vec<Node<'t>> = all.iter().copied().filter(|n| n.start_position().row == row).collect();
                if starting.is_empty() {
                    // The innermost statement spanning the line: the last in preorder.
                    let spanning = all
                        .iter()
                        .rev()
                        .copied()
                        .find(|n| n.start_position().row < row && row <= n.end_position().row)
                        .filter(|n| !COMPOUND.contains(&n.kind()))
                        .ok_or(Error::NoStatementAtLine { line: *line })?;
                    found.push(Resolved { target: target.clone(), node: spanning });
                } else {
                    found.extend(starting.into_iter().map(|node| Resolved { target: target.clone(), node }));
                }
            }
        }
    }
    found.sort_by_key(|r| (r.node.start_byte(), std::cmp::Reverse(r.node.end_byte())));
    let mut out: Vec<Resolved<'t>> = Vec::with_capacity(found.len());
    for r in found {
        let inside = out.last().is_some_and(|p| p.node.end_byte() >= r.node.end_byte());
        if !inside {
            out.push(r);
        }
    }
    Ok(out)
}

/// The name a statement logs: the first argument of its call when that is a
/// plain string literal. The call is the whole expression statement or the
/// right-hand side of an assignment: `flor.log("loss", l)`,
/// `x = flor.log("x", f(y))`, `total += log("t", t)`.
pub(super) fn logged_name<'s>(stmt: Node<'_>, src: &'s str) -> Option<&'s str> {
    if stmt.kind() != "expression_statement" {
        return None;
    }
    let mut cursor = stmt.walk();
    let mut expr = stmt.named_children(&mut cursor).find(|c| !c.is_extra())?;
    while matches!(expr.kind(), "assignment" | "augmented_assignment") {
        expr = expr.child_by_field_name("right")?;
    }
    if expr.kind() != "call" {
        return None;
    }
    let args = expr.child_by_field_name("arguments").filter(|a| a.kind() == "argument_list")?;
    let first = args.named_children(&mut cursor).find(|c| !c.is_extra())?;
    string_value(first, src)
}

/// The text of a plain string literal (no prefix such as `f` or `b`, no
/// interpolation), between its quotes.
fn string_value<'s>(node: Node<'_>, src: &'s str) -> Option<&'s str> {
    if node.kind() != "string" {
        return None;
    }
    let mut cursor = node.walk();
    let children: Vec<Node<'_>> = node.named_children(&mut cursor).collect();
    if children.iter().any(|c| c.kind() == "interpolation") {
        return None;
    }
    let open = children.first().filter(|c| c.kind() == "string_start")?;
    let close = children.last().filter(|c| c.kind() == "string_end")?;
    let prefix = src.get(open.start_byte()..open.end_byte())?;
    if prefix.chars().any(|c| matches!(c, 'f' | 'F' | 'b' | 'B' | 't' | 'T')) {
        return None;
    }
    src.get(open.end_byte()..close.start_byte())
}

/// The names logged by the statements under `root`, each with the 1-based
/// line of the first statement that logs it.
pub(super) fn logged_lines<'s>(root: Node<'_>, src: &'s str) -> HashMap<&'s str, usize> {
    let mut out = HashMap::new();
    for n in statements(root) {
        if let Some(name) = logged_name(n, src) {
            out.entry(name).or_insert(n.start_position().row + 1);
        }
    }
    out
}
