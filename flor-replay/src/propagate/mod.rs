//! Statement propagation across code versions (DESIGN.md §7 step 3).
//!
//! Multiversion hindsight logging (FlorDB, arXiv 2310.07898 §4) starts by
//! placing today's new `flor.log(...)` statement into every older version of
//! the script, at the place that means the same thing there. [`propagate`]
//! parses both versions with tree-sitter-python, maps the new syntax tree
//! onto the old one with GumTree (Falleri et al., "Fine-grained and accurate
//! source code differencing", ASE 2014: top-down on identical subtrees by
//! hash and height, bottom-up on containers by the share of mapped
//! descendants), and inserts each statement
//!
//! 1. after the old counterpart of its nearest previous sibling statement
//!    that has one, else
//! 2. first in the old counterpart of its enclosing block, else
//! 3. before the old counterpart of its nearest next sibling that has one,
//!
//! with identifiers that the mapping shows renamed (`epoch` → `e`) renamed in
//! the copy. The result is a text edit of the old file: everything else
//! (formatting, comments, tabs or spaces of any width, CRLF) stays as it was.
//! Among the blank and comment lines between two old statements, the copy
//! goes where the new file has it (after the comment lines that precede it
//! there too); a carried statement keeps its own trailing comments; a
//! carried function or class keeps the blank lines around it.
//!
//! Comments take no part in the matching. Anonymous tokens are folded into
//! their parent's label, so `a + b` and `a - b` differ but formatting does
//! not. Bottom-up matching (minimum share 0.5) is followed by a recovery pass
//! under each newly mapped pair: identical children in order, then children
//! of the same shape that differ only in identifiers (renames), then kinds
//! that occur once on each side.
//!
//! ```
//! use flor_replay::propagate::{propagate, Target};
//!
//! let old = "for e in range(3):\n    x = e * 2\n    print(x)\n";
//! let new = "for epoch in range(3):\n    x = epoch * 2\n    flor.log(\"x\", x)\n    print(x)\n";
//! let out = propagate(new, old, &[Target::Name("x".into())])?;
//! assert_eq!(out.text, "for e in range(3):\n    x = e * 2\n    flor.log(\"x\", x)\n    print(x)\n");
//! # Ok::<(), flor_replay::propagate::Error>(())
//! ```

mod diff;
mod insert;
mod matcher;
mod rename;
mod syntax;
mod targets;
#[cfg(test)]
mod tests;
mod tree;

use std::fmt;

pub use diff::unified_diff;

use insert::{Anchor, Copy, Layout, Style};
use rename::Renames;
use tree::Tree;

/// What to carry from the new file.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Every statement whose call's first argument is the plain string
    /// literal `name`: `flor.log("name", v)`, `x = flor.log("name", v)`.
    Name(String),
    /// The statement that starts on this 1-based line of the new file (all
    /// of them if several share the line), or the simple statement that
    /// spans it.
    Line(usize),
}

impl Target {
    /// Reads a command-line argument: all digits is a line, anything else a
    /// name.
    pub fn from_arg(arg: &str) -> Target {
        match arg.parse::<usize>() {
            Ok(line) if arg.bytes().all(|b| b.is_ascii_digit()) => Target::Line(line),
            _ => Target::Name(arg.to_owned()),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Name(name) => write!(f, "`{name}`"),
            Target::Line(line) => write!(f, "line {line}"),
        }
    }
}

/// Which of the two files an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The new version, where the statements come from.
    New,
    /// The old version, which receives them.
    Old,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::New => "new",
            Side::Old => "old",
        })
    }
}

/// Why propagation failed. Input errors ([`Error::Syntax`],
/// [`Error::NameNotFound`], [`Error::LineOutOfRange`],
/// [`Error::NoStatementAtLine`]) ask the user to fix the arguments or the
/// files; placement errors ([`Error::NoCounterpart`],
/// [`Error::OneLineBlock`]) mean this old version has no place for the
/// statement; the rest are bugs or a broken build.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file does not parse as Python; `line` and `column` are 1-based,
    /// the column counted in characters.
    #[error("syntax error in the {side} file at line {line}, column {column}: {detail}")]
    Syntax {
        /// The file.
        side: Side,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What tree-sitter found there.
        detail: String,
    },
    /// No statement of the new file logs this name.
    #[error("no statement in the new file logs `{name}` (a call whose first argument is the string \"{name}\")")]
    NameNotFound {
        /// The name asked for.
        name: String,
    },
    /// The line is not in the new file.
    #[error("line {line} is outside the new file, which has {lines} lines")]
    LineOutOfRange {
        /// The 1-based line asked for.
        line: usize,
        /// Lines in the new file.
        lines: usize,
    },
    /// The line is blank, a comment, or inside a block without being a
    /// statement of its own.
    #[error("no statement starts on line {line} of the new file")]
    NoStatementAtLine {
        /// The 1-based line asked for.
        line: usize,
    },
    /// Neither the statement's siblings nor its block have a counterpart in
    /// the old version.
    #[error("cannot place `{statement}` (new line {line}): {reason}")]
    NoCounterpart {
        /// The statement's first line.
        statement: String,
        /// Its 1-based line in the new file.
        line: usize,
        /// What has no counterpart.
        reason: String,
    },
    /// The place in the old version is a one-line block (`for x in y: f(x)`)
    /// or a `;` chain, and the statement does not fit on one line.
    #[error("cannot place `{statement}` (new line {line}) into the one-line statement at old line {old_line}: only a one-line simple statement fits there")]
    OneLineBlock {
        /// The statement's first line.
        statement: String,
        /// Its 1-based line in the new file.
        line: usize,
        /// The 1-based line of the old place.
        old_line: usize,
    },
    /// The edited old file no longer parses: a bug in propagation.
    #[error("internal error: the edited old file would not parse ({detail}); please report it with both files")]
    BrokenEdit {
        /// The syntax error of the edited file.
        detail: String,
    },
    /// tree-sitter-python could not be loaded (a build mismatch).
    #[error("cannot load the tree-sitter-python grammar: {detail}")]
    Grammar {
        /// tree-sitter's reason.
        detail: String,
    },
    /// tree-sitter stopped without a tree.
    #[error("tree-sitter gave up parsing the {side} file")]
    ParserGaveUp {
        /// The file.
        side: Side,
    },
    /// Another error, with the old version it happened in.
    #[error("old version {version}: {source}")]
    InVersion {
        /// The old version (a commit, a path).
        version: String,
        /// What went wrong.
        source: Box<Error>,
    },
}

impl Error {
    /// Names the old version (a commit id, a path) the error happened in.
    pub fn in_version(self, version: impl Into<String>) -> Error {
        Error::InVersion { version: version.into(), source: Box::new(self) }
    }
}

/// The result of [`propagate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Propagated {
    /// The old file with the statements inserted.
    pub text: String,
    /// One entry per carried statement, in new-file order.
    pub placements: Vec<Placement>,
    /// The insertions into the old file, by increasing offset; applying them
    /// gives `text`.
    pub edits: Vec<Edit>,
}

impl Propagated {
    /// Whether any statement was inserted.
    pub fn changed(&self) -> bool {
        !self.edits.is_empty()
    }
}

/// One insertion into the old text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edit {
    /// Byte offset in the old text where `text` goes.
    pub offset: usize,
    /// What is inserted there.
    pub text: String,
}

/// What happened to one carried statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The target that named the statement.
    pub target: Target,
    /// The statement's 1-based first line in the new file.
    pub new_line: usize,
    /// Where it ended up.
    pub outcome: Outcome,
}

/// Where a carried statement ended up.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Inserted.
    Inserted {
        /// 1-based line of the copy in [`Propagated::text`].
        line: usize,
        /// Where it was placed, relative to the old file.
        anchor: Placed,
        /// Identifiers renamed in the copy, `(new, old)`.
        renamed: Vec<(String, String)>,
    },
    /// The old file already has it: for a [`Target::Name`], a statement
    /// logging the name anywhere; otherwise the same statement (after
    /// renaming) right where it would go, among old statements that have no
    /// counterpart in the new file. Left alone.
    AlreadyPresent {
        /// 1-based line of the existing statement in the old file.
        old_line: usize,
    },
}

/// How the place of an inserted statement was chosen; lines are 1-based
/// lines of the old file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placed {
    /// After the counterpart of its previous sibling, which starts here.
    After {
        /// The sibling's old line.
        old_line: usize,
    },
    /// First in the counterpart of its block, whose first statement is here.
    FirstInBlock {
        /// The block's first statement's old line.
        old_line: usize,
    },
    /// Before the counterpart of its next sibling, which starts here.
    Before {
        /// The sibling's old line.
        old_line: usize,
    },
}

/// Inserts the statements of `new_src` named by `targets` into `old_src`.
///
/// Both inputs are whole Python files. Statements already in the old file
/// are left alone, so propagating twice changes nothing the second time.
/// Time is roughly linear in the file sizes (a few milliseconds for a
/// 500-line file in a release build).
///
/// # Errors
/// [`Error::Syntax`] when either file does not parse (with its line and
/// column); [`Error::NameNotFound`], [`Error::LineOutOfRange`] or
/// [`Error::NoStatementAtLine`] when a target names nothing;
/// [`Error::NoCounterpart`] or [`Error::OneLineBlock`] when a statement has
/// no place in the old file (wrap with [`Error::in_version`] to name the
/// version).
pub fn propagate(new_src: &str, old_src: &str, targets: &[Target]) -> Result<Propagated, Error> {
    let language: tree_sitter::Language = tree_sitter_python::LANGUAGE.into();
    let new_ts = syntax::parse(&language, new_src, Side::New)?;
    let old_ts = syntax::parse(&language, old_src, Side::Old)?;
    let carried = targets::resolve(new_ts.root_node(), new_src, targets)?;
    let skip: Vec<tree_sitter::Node<'_>> = carried.iter().map(|c| c.node).collect();
    let (a, slots) = tree::build(new_ts.root_node(), new_src, &skip);
    let (b, _) = tree::build(old_ts.root_node(), old_src, &[]);
    let m = matcher::gumtree(&a, &b);
    let renames = Renames::learn(&a, &b, &m);
    let new_layout = Layout::of(new_src, &a, "    ");
    let old_layout = Layout::of(old_src, &b, &new_layout.unit);

    let old_logged = if carried.iter().any(|c| matches!(c.target, Target::Name(_))) {
        targets::logged_lines(old_ts.root_node(), old_src)
    } else {
        Default::default()
    };
    let mut placements = Vec::with_capacity(carried.len());
    // (offset in old, order, text, index into placements)
    let mut pending: Vec<(usize, usize, String, usize)> = Vec::new();
    for (order, (c, slot)) in carried.iter().zip(slots).enumerate() {
        let new_line = c.node.start_position().row + 1;
        let statement = first_line(new_src, c.node);
        if let Target::Name(name) = &c.target {
            if let Some(&old_line) = old_logged.get(name.as_str()) {
                placements.push(Placement { target: c.target.clone(), new_line, outcome: Outcome::AlreadyPresent { old_line } });
                continue;
            }
        }
        let no_place = |reason: String| Error::NoCounterpart { statement: statement.clone(), line: new_line, reason };
        let slot = slot.ok_or_else(|| no_place("it is not a statement of the new file".into()))?;
        let anchor = choose_anchor(&a, &b, &m, slot).ok_or_else(|| no_place(missing_context(new_src, c.node)))?;
        let (copy_tree, _) = tree::build(c.node, new_src, &[]);
        let compound = targets::COMPOUND.contains(&c.node.kind());
        let end = insert::copy_end(new_src, c.node.start_byte(), copy_tree.end(Tree::ROOT), compound);
        let gaps = insert::Gaps::around(new_src, c.node.start_byte(), end);
        let spot = insert::spot(old_src, &b, anchor, &gaps)
            .ok_or_else(|| no_place("its place in the old file is an empty block".into()))?;

        let renamed_hash = copy_tree.hash_renamed(|n| renames.get(n).map(str::to_owned));
        if let Some(same) = already_there(&b, &m, anchor, renamed_hash) {
            let old_line = syntax::line_column(old_src, b.start(same)).0;
            placements.push(Placement { target: c.target.clone(), new_line, outcome: Outcome::AlreadyPresent { old_line } });
            continue;
        }
        let (text, renamed) = rename::renamed_source(c.node, end, new_src, &renames);
        let original = new_src.get(c.node.start_byte()..end).unwrap_or("");
        let copy = Copy::new(
            new_src,
            c.node.start_byte(),
            &text,
            original,
            &string_ranges(c.node),
            compound,
        );
        let old_line = syntax::line_column(old_src, spot.anchor_start).0;
        let definition = matches!(c.node.kind(), "function_definition" | "class_definition" | "decorated_definition");
        let pad = if definition { insert::padding(old_src, spot.offset, &gaps) } else { (0, 0) };
        let insertion = insert::text(&spot, &copy, &new_layout, &old_layout, pad)
            .ok_or(Error::OneLineBlock { statement: statement.clone(), line: new_line, old_line })?;
        let placed = match anchor {
            Anchor::After(_) => Placed::After { old_line },
            Anchor::FirstIn(_) => Placed::FirstInBlock { old_line },
            Anchor::Before(_) => Placed::Before { old_line },
        };
        let leading_break = matches!(spot.style, Style::Lines { eol_before: true, .. });
        pending.push((spot.offset, order, insertion, placements.len()));
        placements.push(Placement {
            target: c.target.clone(),
            new_line,
            outcome: Outcome::Inserted { line: usize::from(leading_break), anchor: placed, renamed },
        });
    }

    pending.sort_by_key(|p| (p.0, p.1));
    let mut text = String::with_capacity(old_src.len() + pending.iter().map(|p| p.2.len()).sum::<usize>());
    let mut edits = Vec::with_capacity(pending.len());
    let mut pos = 0;
    let mut line = 1;
    for (offset, _, insertion, index) in pending {
        let kept = old_src.get(pos..offset).unwrap_or("");
        line += kept.matches('\n').count();
        text.push_str(kept);
        pos = offset;
        if let Some(Placement { outcome: Outcome::Inserted { line: l, .. }, .. }) = placements.get_mut(index) {
            // `l` is 1 when the copy follows a line break it brings along.
            *l += line;
        }
        text.push_str(&insertion);
        line += insertion.matches('\n').count();
        edits.push(Edit { offset, text: insertion });
    }
    text.push_str(old_src.get(pos..).unwrap_or(""));
    if !edits.is_empty() {
        syntax::check_edited(&language, &old_ts, old_src, &edits, &text)
            .map_err(|e| Error::BrokenEdit { detail: e.to_string() })?;
    }
    Ok(Propagated { text, placements, edits })
}

/// Where a left-out statement goes (see the module documentation).
fn choose_anchor(a: &Tree, b: &Tree, m: &matcher::Mapping, slot: tree::Slot) -> Option<Anchor> {
    let kids = a.children(slot.parent);
    let (before, after) = kids.split_at(slot.index.min(kids.len()));
    let counterpart = |s: &tree::Id| m.old_of(*s).filter(|&o| b.is_statement(o));
    if let Some(o) = before.iter().rev().find_map(counterpart) {
        return Some(Anchor::After(o));
    }
    if let Some(p) = m.old_of(slot.parent) {
        let has_room = match b.class(p) {
            tree::Class::Module => true,
            tree::Class::Block => !b.children(p).is_empty(),
            _ => false,
        };
        if has_room {
            return Some(Anchor::FirstIn(p));
        }
    }
    after.iter().find_map(counterpart).map(Anchor::Before)
}

/// An old statement equal to the renamed copy among the old statements
/// without a new counterpart right at the anchor (where an earlier
/// propagation put it): the copy is already there.
fn already_there(b: &Tree, m: &matcher::Mapping, anchor: Anchor, hash: u64) -> Option<tree::Id> {
    let (block, from, backwards) = match anchor {
        Anchor::After(s) => (b.parent(s)?, Some(s), false),
        Anchor::FirstIn(p) => (p, None, false),
        Anchor::Before(n) => (b.parent(n)?, Some(n), true),
    };
    let kids = b.children(block);
    let at = from.and_then(|f| kids.iter().position(|&k| k == f));
    let run: Box<dyn Iterator<Item = &tree::Id>> = match (at, backwards) {
        (Some(i), false) => Box::new(kids.iter().skip(i + 1)),
        (Some(i), true) => Box::new(kids.iter().take(i).rev()),
        (None, _) => Box::new(kids.iter()),
    };
    run.take_while(|&&k| m.new_of(k).is_none()).find(|&&k| b.hash(k) == hash).copied()
}

/// Why a statement has no place: the construct around it that has no
/// counterpart in the old version.
fn missing_context(src: &str, node: tree_sitter::Node<'_>) -> String {
    let owner = node.parent().filter(|p| p.kind() == "block").and_then(|b| b.parent());
    match owner {
        Some(o) => format!(
            "neither its enclosing `{}` (new line {}) nor any statement beside it has a counterpart in the old version",
            first_line(src, o),
            o.start_position().row + 1
        ),
        None => "no statement beside it has a counterpart in the old version".to_owned(),
    }
}

/// The first line of a node's text, shortened for messages.
fn first_line(src: &str, node: tree_sitter::Node<'_>) -> String {
    let text = src.get(node.start_byte()..node.end_byte()).unwrap_or("");
    snippet(text.lines().next().unwrap_or("").trim())
}

/// `text` cut to at most 60 characters.
fn snippet(text: &str) -> String {
    let mut out: String = text.chars().take(60).collect();
    if text.chars().count() > 60 {
        out.push('…');
    }
    out
}

/// Byte ranges of the string literals inside `node` that span lines.
fn string_ranges(node: tree_sitter::Node<'_>) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut stack = vec![node];
    let mut cursor = node.walk();
    while let Some(n) = stack.pop() {
        if n.kind() == "string" && n.start_position().row != n.end_position().row {
            out.push((n.start_byte(), n.end_byte()));
            continue;
        }
        stack.extend(n.children(&mut cursor));
    }
    out
}
