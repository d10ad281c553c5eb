//! Parsing with tree-sitter-python, and locating the first syntax error.

use tree_sitter::{InputEdit, Language, Node, Parser, Point, Tree};

use super::{Edit, Error, Side};

/// Parses `src`; a tree with an error or a missing token is
/// [`Error::Syntax`] at the first one.
pub(super) fn parse(language: &Language, src: &str, side: Side) -> Result<Tree, Error> {
    let mut parser = Parser::new();
    parser.set_language(language).map_err(|e| Error::Grammar { detail: e.to_string() })?;
    let tree = parser.parse(src, None).ok_or(Error::ParserGaveUp { side })?;
    let root = tree.root_node();
    if root.has_error() {
        return Err(first_error(root, src, side));
    }
    Ok(tree)
}

/// Checks that `text`, which is `old_src` with `edits` (by increasing
/// offset) applied, still parses; reparses incrementally from `old_tree`.
pub(super) fn check_edited(language: &Language, old_tree: &Tree, old_src: &str, edits: &[Edit], text: &str) -> Result<(), Error> {
    let mut tree = old_tree.clone();
    for edit in edits.iter().rev() {
        let start = point_at(old_src, edit.offset);
        let (rows, tail) = match edit.text.rfind('\n') {
            Some(i) => (edit.text.matches('\n').count(), edit.text.len() - i - 1),
            None => (0, edit.text.len()),
        };
        let new_end = if rows == 0 { Point { row: start.row, column: start.column + tail } } else { Point { row: start.row + rows, column: tail } };
        tree.edit(&InputEdit {
            start_byte: edit.offset,
            old_end_byte: edit.offset,
            new_end_byte: edit.offset + edit.text.len(),
            start_position: start,
            old_end_position: start,
            new_end_position: new_end,
        });
    }
    let mut parser = Parser::new();
    parser.set_language(language).map_err(|e| Error::Grammar { detail: e.to_string() })?;
    let tree = parser.parse(text, Some(&tree)).ok_or(Error::ParserGaveUp { side: Side::Old })?;
    let root = tree.root_node();
    if root.has_error() {
        return Err(first_error(root, text, Side::Old));
    }
    Ok(())
}

/// The tree-sitter point (0-based row, byte column) of byte `offset`.
fn point_at(src: &str, offset: usize) -> Point {
    let before = src.as_bytes().get(..offset).unwrap_or(&[]);
    let row = before.iter().filter(|&&c| c == b'\n').count();
    let column = offset - before.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
    Point { row, column }
}

/// Descends into the first child that contains an error until the error
/// node itself.
fn first_error(root: Node<'_>, src: &str, side: Side) -> Error {
    let mut node = root;
    let mut cursor = root.walk();
    while !(node.is_error() || node.is_missing()) {
        let next = node.children(&mut cursor).find(|c| c.has_error() || c.is_missing());
        match next {
            Some(c) => node = c,
            None => break,
        }
    }
    let (line, column) = line_column(src, node.start_byte());
    let detail = if node.is_missing() {
        format!("missing `{}`", node.kind())
    } else {
        let text = src.get(node.start_byte()..node.end_byte()).unwrap_or("");
        let first = text.lines().next().unwrap_or("").trim();
        if first.is_empty() {
            "invalid syntax".to_owned()
        } else {
            format!("invalid syntax near `{}`", super::snippet(first))
        }
    };
    Error::Syntax { side, line, column, detail }
}

/// 1-based line and column (in characters) of byte `offset` of `src`.
pub(super) fn line_column(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = src.as_bytes().get(..offset).unwrap_or(&[]);
    let line_start = before.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
    let line = 1 + before.iter().filter(|&&c| c == b'\n').count();
    let column = 1 + String::from_utf8_lossy(before.get(line_start..).unwrap_or(&[])).chars().count();
    (line, column)
}
