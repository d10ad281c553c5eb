//! Where a hindsight statement sits relative to the script's `flor.loop`s,
//! and the replay-copy rewrite that skips the rest of the outer body
//! (DESIGN.md §7 steps 4; FlorDB, VLDB 2021 "Hindsight Logging for Model
//! Training" §4, physiological replay).

use std::fmt;
use tree_sitter::{Node, Parser};

/// The place of a statement in the script's loop structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Before the outermost `flor.loop` (or in a script with none): replay
    /// runs the prefix only.
    Prefix,
    /// In the outer loop's body before any nested loop: replay restores each
    /// selected iteration's starting checkpoint and, when `skip_rest`, skips
    /// the rest of the body.
    OuterBody {
        /// Whether the replay copy skips the body after the statement (false
        /// when the statement sits in a plain Python loop inside the body,
        /// where `continue` would mean something else).
        skip_rest: bool,
    },
    /// Inside a nested loop, or in the outer body after one: each selected
    /// iteration runs whole.
    Nested,
    /// After the outer loop: replay restores the last checkpoint and runs
    /// the suffix.
    Suffix,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Position::Prefix => "before the loop",
            Position::OuterBody { skip_rest: true } => "outer body (rest skipped)",
            Position::OuterBody { skip_rest: false } => "outer body",
            Position::Nested => "nested loop",
            Position::Suffix => "after the loop",
        })
    }
}

/// The analysis of one script version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Analysis {
    /// The outermost `flor.loop`'s name (its first argument, when a string
    /// literal), if the script has one.
    pub outer_loop: Option<String>,
    /// The position of every statement asked about, combined: the most
    /// demanding wins (Nested > Suffix > OuterBody > Prefix).
    pub position: Position,
    /// The replay copy: the source with `continue` inserted after the
    /// statements when `position` is `OuterBody { skip_rest: true }`,
    /// otherwise the source unchanged.
    pub replay_source: String,
}

/// Why a script could not be analysed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The source does not parse.
    #[error("the script does not parse as Python (first error at line {line})")]
    Syntax {
        /// 1-based line.
        line: usize,
    },
    /// A statement line names no statement.
    #[error("no statement at line {0}")]
    NoStatement(usize),
    /// tree-sitter could not load the Python grammar (a build problem).
    #[error("tree-sitter-python could not be loaded: {0}")]
    Grammar(String),
}

/// The line every skip-rest insertion carries.
pub const SKIP_LINE: &str = "if __import__(\"flordb\").skip_rest(): continue  # flor replay: the rest of this iteration is not needed";

fn is_flor_loop(node: Node<'_>, src: &str) -> bool {
    if node.kind() != "for_statement" {
        return false;
    }
    let Some(right) = node.child_by_field_name("right") else { return false };
    if right.kind() != "call" {
        return false;
    }
    let Some(func) = right.child_by_field_name("function") else { return false };
    let text = src.get(func.byte_range()).unwrap_or("");
    text == "loop" || text.ends_with(".loop")
}

fn loop_name(node: Node<'_>, src: &str) -> Option<String> {
    let args = node.child_by_field_name("right")?.child_by_field_name("arguments")?;
    let first = args.named_child(0)?;
    if first.kind() != "string" {
        return None;
    }
    let t = src.get(first.byte_range())?;
    Some(t.trim_matches(|c| c == '"' || c == '\'').to_owned())
}

fn first_error(node: Node<'_>) -> Option<usize> {
    if node.is_error() || node.is_missing() {
        return Some(node.start_position().row + 1);
    }
    let mut c = node.walk();
    for child in node.children(&mut c) {
        if child.has_error() {
            if let Some(l) = first_error(child) {
                return Some(l);
            }
        }
    }
    None
}

/// The statement starting on `line` (1-based): the outermost node starting
/// there whose parent is a block or the module.
fn statement_at<'t>(root: Node<'t>, line: usize) -> Option<Node<'t>> {
    let row = line.checked_sub(1)?;
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        let mut c = n.walk();
        for child in n.named_children(&mut c) {
            if child.start_position().row == row && matches!(n.kind(), "module" | "block") && child.kind() != "comment" {
                return Some(child);
            }
            if child.start_position().row <= row && child.end_position().row >= row {
                stack.push(child);
            }
        }
    }
    None
}

fn rank(p: Position) -> u8 {
    match p {
        Position::Prefix => 0,
        Position::OuterBody { .. } => 1,
        Position::Suffix => 2,
        Position::Nested => 3,
    }
}

/// Classifies the statements starting on `lines` (1-based) of `src` and
/// builds the replay copy.
///
/// # Errors
/// [`Error::Syntax`] when `src` does not parse; [`Error::NoStatement`] for
/// a line without a statement.
pub fn analyse(src: &str, lines: &[usize]) -> Result<Analysis, Error> {
    let mut parser = Parser::new();
    let lang: tree_sitter::Language = tree_sitter_python::LANGUAGE.into();
    parser.set_language(&lang).map_err(|e| Error::Grammar(e.to_string()))?;
    let tree = parser.parse(src, None).ok_or(Error::Syntax { line: 1 })?;
    let root = tree.root_node();
    if root.has_error() {
        return Err(Error::Syntax { line: first_error(root).unwrap_or(1) });
    }
    // The outermost flor.loop: the first in document order not inside another.
    let mut outer: Option<Node<'_>> = None;
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        if is_flor_loop(n, src) {
            if outer.is_none_or(|o| n.start_byte() < o.start_byte()) {
                outer = Some(n);
            }
            continue;
        }
        let mut c = n.walk();
        stack.extend(n.named_children(&mut c));
    }
    let mut position = Position::Prefix;
    let mut skip_after: Vec<Node<'_>> = Vec::new();
    for &line in lines {
        let stmt = statement_at(root, line).ok_or(Error::NoStatement(line))?;
        let p = match outer {
            None => Position::Prefix,
            Some(o) if stmt.end_byte() <= o.start_byte() => Position::Prefix,
            Some(o) if stmt.start_byte() >= o.end_byte() => Position::Suffix,
            Some(o) if o.start_byte() <= stmt.start_byte() && stmt.end_byte() <= o.end_byte() => classify_in_body(stmt, o, src, &mut skip_after),
            // Outside the outer loop but not before or after it (another
            // branch of the code): the whole run is needed.
            Some(_) => Position::Nested,
        };
        if rank(p) > rank(position) || (rank(p) == rank(position) && p == (Position::OuterBody { skip_rest: false })) {
            position = p;
        }
    }
    let replay_source = match position {
        Position::OuterBody { skip_rest: true } => insert_skip(src, &skip_after),
        _ => src.to_owned(),
    };
    Ok(Analysis { outer_loop: outer.and_then(|o| loop_name(o, src)), position, replay_source })
}

fn classify_in_body<'t>(stmt: Node<'t>, outer: Node<'t>, src: &str, skip_after: &mut Vec<Node<'t>>) -> Position {
    // Any flor.loop or plain loop between the statement and the outer loop?
    let mut plain_loop = false;
    let mut a = stmt.parent();
    while let Some(n) = a {
        if n.id() == outer.id() {
            break;
        }
        if is_flor_loop(n, src) {
            return Position::Nested;
        }
        if matches!(n.kind(), "for_statement" | "while_statement") {
            plain_loop = true;
        }
        a = n.parent();
    }
    // A nested flor.loop earlier in the outer body means the statement
    // depends on it: the iteration runs whole.
    let mut stack = vec![outer.child_by_field_name("body")];
    while let Some(Some(n)) = stack.pop() {
        if n.start_byte() >= stmt.start_byte() {
            continue;
        }
        if n.id() != outer.id() && is_flor_loop(n, src) && n.end_byte() <= stmt.start_byte() {
            return Position::Nested;
        }
        let mut c = n.walk();
        for ch in n.named_children(&mut c) {
            stack.push(Some(ch));
        }
    }
    if plain_loop {
        return Position::OuterBody { skip_rest: false };
    }
    skip_after.push(stmt);
    Position::OuterBody { skip_rest: true }
}

/// Inserts [`SKIP_LINE`] after the last of `stmts`, at its indentation,
/// keeping the file's line endings.
fn insert_skip(src: &str, stmts: &[Node<'_>]) -> String {
    let Some(last) = stmts.iter().max_by_key(|n| n.end_byte()) else { return src.to_owned() };
    let line_start = src[..last.start_byte()].rfind('\n').map_or(0, |i| i + 1);
    let indent: String = src[line_start..].chars().take_while(|c| *c == ' ' || *c == '\t').collect();
    let eol = if src.contains("\r\n") { "\r\n" } else { "\n" };
    let end = last.end_byte();
    let rest_of_line = src[end..].find('\n').map_or(src.len(), |i| end + i + 1);
    let mut out = String::with_capacity(src.len() + SKIP_LINE.len() + 16);
    out.push_str(&src[..rest_of_line]);
    if !out.ends_with('\n') {
        out.push_str(eol);
    }
    out.push_str(&indent);
    out.push_str(SKIP_LINE);
    out.push_str(eol);
    out.push_str(&src[rest_of_line..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "import flordb as flor\nx = 1\nflor.log(\"pre\", x)\nwith flor.checkpointing(W=W):\n    for epoch in flor.loop(\"epoch\", range(3)):\n        flor.log(\"w_norm\", 1.0)\n        perm = 2\n        for step in flor.loop(\"step\", range(4)):\n            flor.log(\"loss\", 0.5)\n        flor.log(\"acc\", 1)\n        for k in range(2):\n            flor.log(\"inner_plain\", k)\nflor.log(\"post\", 2)\n";

    #[test]
    fn positions_follow_the_loop_structure() {
        let a = analyse(SCRIPT, &[3]).unwrap();
        assert_eq!((a.position, a.outer_loop.as_deref()), (Position::Prefix, Some("epoch")));
        assert_eq!(analyse(SCRIPT, &[6]).unwrap().position, Position::OuterBody { skip_rest: true });
        assert_eq!(analyse(SCRIPT, &[9]).unwrap().position, Position::Nested);
        assert_eq!(analyse(SCRIPT, &[10]).unwrap().position, Position::Nested, "after a nested loop");
        assert_eq!(analyse(SCRIPT, &[13]).unwrap().position, Position::Suffix);
        assert_eq!(analyse(SCRIPT, &[6, 9]).unwrap().position, Position::Nested);
        assert_eq!(analyse(SCRIPT, &[3, 6]).unwrap().position, Position::OuterBody { skip_rest: true });
        assert_eq!(analyse(SCRIPT, &[99]).unwrap_err(), Error::NoStatement(99));
        assert_eq!(analyse("for x in (:\n", &[1]).unwrap_err(), Error::Syntax { line: 1 });
    }

    #[test]
    fn skip_rest_is_inserted_after_the_statement_at_its_indentation() {
        let a = analyse(SCRIPT, &[6]).unwrap();
        let lines: Vec<&str> = a.replay_source.lines().collect();
        assert_eq!(lines[5], "        flor.log(\"w_norm\", 1.0)");
        assert_eq!(lines[6], format!("        {SKIP_LINE}"));
        assert_eq!(lines[7], "        perm = 2");
    }
}
