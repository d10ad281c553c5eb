//! The text edit: where in the old file a carried statement goes, and the
//! text that goes there, in the old file's indentation and line endings.

use std::collections::HashMap;

use super::tree::{Class, Id, Tree};

/// Where a statement goes, in terms of old-tree nodes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Anchor {
    /// After this statement, at its indentation.
    After(Id),
    /// First in this block (or the module).
    FirstIn(Id),
    /// Before this statement, at its indentation.
    Before(Id),
}

/// A resolved insertion point in the old text.
#[derive(Debug)]
pub(super) struct Spot {
    /// Byte offset in the old text.
    pub offset: usize,
    pub style: Style,
    /// The old statement the anchor names (for reporting its line).
    pub anchor_start: usize,
}

#[derive(Debug)]
pub(super) enum Style {
    /// Whole lines at this indentation; `eol_before` when the offset is the
    /// end of a file that lacks a final line break.
    Lines { indent: String, eol_before: bool },
    /// `; stmt` right after a statement on a one-line block or a `;` chain.
    InlineAfter,
    /// `stmt; ` right before such a statement.
    InlineBefore,
}

/// The statement to insert, split into lines.
pub(super) struct Copy {
    lines: Vec<Line>,
    /// A single line holding a simple statement: may go after a `;`.
    pub inline_ok: bool,
}

enum Line {
    /// Indentation beyond the statement's own, in the new file's unit,
    /// followed by the text.
    Indented { extra: String, text: String },
    /// Kept as it is: a line inside a multi-line string, or one less
    /// indented than the statement (inside brackets), or a blank one.
    Verbatim(String),
}

impl Copy {
    /// Splits `text` (the renamed statement, which began at byte `start` of
    /// `src`) into lines. `original` is the same statement before renaming
    /// (renaming never adds or removes a line break); `strings` are the byte
    /// ranges of string literals inside it, whose inner lines stay verbatim.
    pub fn new(src: &str, start: usize, text: &str, original: &str, strings: &[(usize, usize)], compound: bool) -> Copy {
        let base = indentation(src, line_start(src, start));
        let starts_line = src.get(line_start(src, start)..start).is_some_and(|p| p.chars().all(is_blank));
        let base = if starts_line { base } else { "" };
        let mut original_starts = vec![start];
        let mut pos = start;
        for piece in original.split('\n') {
            pos += piece.len() + 1;
            original_starts.push(pos);
        }
        let mut lines = Vec::new();
        for (k, raw) in text.split('\n').enumerate() {
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            if k == 0 {
                lines.push(Line::Indented { extra: String::new(), text: raw.to_owned() });
                continue;
            }
            let at = original_starts.get(k).copied().unwrap_or(usize::MAX);
            let in_string = strings.iter().any(|&(s, e)| s < at && at < e);
            let ws_len = raw.len() - raw.trim_start_matches(is_blank).len();
            let (ws, rest) = raw.split_at(ws_len);
            if in_string || rest.is_empty() {
                lines.push(Line::Verbatim(if in_string { raw.to_owned() } else { String::new() }));
            } else if let Some(extra) = ws.strip_prefix(base) {
                lines.push(Line::Indented { extra: extra.to_owned(), text: rest.to_owned() });
            } else {
                lines.push(Line::Verbatim(raw.to_owned()));
            }
        }
        let inline_ok = lines.len() == 1 && !compound;
        Copy { lines, inline_ok }
    }

    /// The lines at indentation `indent`, inner indentation converted from
    /// the unit `from` to `to`.
    fn render(&self, indent: &str, from: &str, to: &str) -> Vec<String> {
        self.lines
            .iter()
            .map(|l| match l {
                Line::Indented { extra, text } => format!("{indent}{}{text}", convert(extra, from, to)),
                Line::Verbatim(s) => s.clone(),
            })
            .collect()
    }

    /// The statement on one line (only meaningful when `inline_ok`).
    fn single(&self) -> &str {
        match self.lines.first() {
            Some(Line::Indented { text, .. }) | Some(Line::Verbatim(text)) => text,
            None => "",
        }
    }
}

/// How a file is laid out: its indentation unit and line ending.
pub(super) struct Layout {
    pub unit: String,
    pub eol: &'static str,
}

impl Layout {
    /// Looks at `src` and its tree; `fallback` is the unit when the file has
    /// no indented block.
    pub fn of(src: &str, t: &Tree, fallback: &str) -> Layout {
        let eol = match src.find('\n') {
            Some(i) if i > 0 && src.as_bytes().get(i - 1) == Some(&b'\r') => "\r\n",
            _ => "\n",
        };
        let mut votes: HashMap<&str, usize> = HashMap::new();
        for id in 0..t.len() {
            if t.class(id) != Class::Block {
                continue;
            }
            let (Some(&first), Some(owner)) = (t.children(id).first(), t.parent(id)) else { continue };
            if !starts_line(src, t.start(first)) {
                continue;
            }
            let inner = indentation(src, line_start(src, t.start(first)));
            let outer = indentation(src, line_start(src, t.start(owner)));
            if let Some(unit) = inner.strip_prefix(outer).filter(|u| !u.is_empty()) {
                *votes.entry(unit).or_default() += 1;
            }
        }
        let unit = votes
            .into_iter()
            .max_by(|l, r| l.1.cmp(&r.1).then(r.0.cmp(l.0)))
            .map_or_else(|| fallback.to_owned(), |(u, _)| u.to_owned());
        Layout { unit, eol }
    }
}

/// The blank and comment-only lines right above and right below a statement
/// of the new file, trimmed: where the copy goes among such lines in the old
/// file follows them.
pub(super) struct Gaps<'a> {
    above: Vec<&'a str>,
    below: Vec<&'a str>,
}

/// At most this many gap lines are looked at on each side.
const MAX_GAP_LINES: usize = 32;

impl<'a> Gaps<'a> {
    /// The gaps around the statement at bytes `start..end` of `src`.
    pub fn around(src: &'a str, start: usize, end: usize) -> Gaps<'a> {
        let mut above = Vec::new();
        let mut offset = line_start(src, start);
        while offset > 0 && above.len() < MAX_GAP_LINES {
            let prev = line_start(src, offset - 1);
            match gap_line(src.get(prev..offset).unwrap_or("x")) {
                Some(line) => above.push(line),
                None => break,
            }
            offset = prev;
        }
        above.reverse();
        let mut below = Vec::new();
        let mut offset = next_line(src, end);
        while offset < src.len() && below.len() < MAX_GAP_LINES {
            let next = next_line(src, offset);
            match gap_line(src.get(offset..next).unwrap_or("x")) {
                Some(line) => below.push(line),
                None => break,
            }
            offset = next;
        }
        Gaps { above, below }
    }
}

/// A blank or comment-only line, trimmed; `None` for a line with code.
fn gap_line(line: &str) -> Option<&str> {
    let t = line.trim_matches(is_blank_or_eol);
    (t.is_empty() || t.starts_with('#')).then_some(t)
}

/// The start of the line after the one holding `offset` (or the end).
fn next_line(src: &str, offset: usize) -> usize {
    src.get(offset..).and_then(|r| r.find('\n')).map_or(src.len(), |i| offset + i + 1)
}

/// Where the copy of the statement at `start..end` of `src` ends: with the
/// comment after it on its last line, and, for a compound statement, the
/// comment lines right below that are indented into its body.
pub(super) fn copy_end(src: &str, start: usize, end: usize, compound: bool) -> usize {
    let line_end = |at: usize| {
        let e = src.get(at..).and_then(|r| r.find('\n')).map_or(src.len(), |i| at + i);
        if e > at && src.as_bytes().get(e - 1) == Some(&b'\r') {
            e - 1
        } else {
            e
        }
    };
    let mut out = end;
    let last = line_end(end);
    if src.get(end..last).is_some_and(|rest| rest.trim_start_matches(is_blank).starts_with('#')) {
        out = last;
    }
    if compound {
        let base = indentation(src, line_start(src, start)).len();
        let mut at = next_line(src, out);
        while at < src.len() {
            let next = next_line(src, at);
            let line = src.get(at..next).unwrap_or("");
            let is_comment = gap_line(line).is_some_and(|t| t.starts_with('#'));
            if !is_comment || indentation(src, at).len() <= base {
                break;
            }
            out = line_end(at);
            at = next;
        }
    }
    out
}

/// Moves a line-start `offset` down past old lines equal to the first lines
/// of `gap`.
fn skip_down(src: &str, mut offset: usize, gap: &[&str]) -> usize {
    for want in gap {
        let next = next_line(src, offset);
        if offset >= src.len() || gap_line(src.get(offset..next).unwrap_or("x")) != Some(want) {
            break;
        }
        offset = next;
    }
    offset
}

/// Moves a line-start `offset` up past old lines equal to the last lines of
/// `gap`.
fn skip_up(src: &str, mut offset: usize, gap: &[&str]) -> usize {
    for want in gap.iter().rev() {
        if offset == 0 {
            break;
        }
        let prev = line_start(src, offset - 1);
        if gap_line(src.get(prev..offset).unwrap_or("x")) != Some(want) {
            break;
        }
        offset = prev;
    }
    offset
}

/// Resolves `anchor` to a byte offset and style in the old text; `gaps` are
/// the blank and comment lines around the statement in the new file.
pub(super) fn spot(src: &str, t: &Tree, anchor: Anchor, gaps: &Gaps<'_>) -> Option<Spot> {
    match anchor {
        Anchor::After(s) => {
            let block = t.parent(s)?;
            let end = t.end(s);
            let siblings = t.children(block);
            let next = siblings.iter().position(|&c| c == s).and_then(|i| siblings.get(i + 1));
            let same_line = next.is_some_and(|&n| !src.get(end..t.start(n)).unwrap_or("\n").contains('\n'));
            if !starts_line(src, t.start(s)) || same_line {
                return Some(Spot { offset: end, style: Style::InlineAfter, anchor_start: t.start(s) });
            }
            let indent = indentation(src, line_start(src, t.start(s))).to_owned();
            let (offset, eol_before) = match src.get(end..).and_then(|r| r.find('\n')) {
                Some(i) => (skip_down(src, end + i + 1, &gaps.above), false),
                None => (src.len(), true),
            };
            Some(Spot { offset, style: Style::Lines { indent, eol_before }, anchor_start: t.start(s) })
        }
        Anchor::FirstIn(block) => {
            let Some(&first) = t.children(block).first() else {
                // An old module without statements: the copy goes last.
                let eol_before = !src.is_empty() && !src.ends_with('\n');
                return (t.class(block) == Class::Module).then(|| Spot {
                    offset: src.len(),
                    style: Style::Lines { indent: String::new(), eol_before },
                    anchor_start: src.len(),
                });
            };
            let start = t.start(first);
            if !starts_line(src, start) {
                return Some(Spot { offset: start, style: Style::InlineBefore, anchor_start: start });
            }
            let indent = indentation(src, line_start(src, start)).to_owned();
            let mut offset = line_start(src, start);
            if let (Class::Block, Some(owner)) = (t.class(block), t.parent(block)) {
                // Above comments and blank lines that open the block: right
                // after the header's last line.
                let kids = t.children(owner);
                let header_end = kids
                    .iter()
                    .position(|&c| c == block)
                    .and_then(|i| i.checked_sub(1))
                    .and_then(|i| kids.get(i))
                    .map_or(t.start(owner), |&c| t.end(c));
                let floor = src.get(header_end..).and_then(|r| r.find('\n')).map_or(src.len(), |i| header_end + i + 1);
                while offset > floor {
                    let prev = line_start(src, offset - 1);
                    let line = src.get(prev..offset).unwrap_or("").trim_matches(is_blank_or_eol);
                    if line.is_empty() || line.starts_with('#') {
                        offset = prev;
                    } else {
                        break;
                    }
                }
                offset = skip_down(src, offset, &gaps.above);
            } else {
                offset = skip_up(src, offset, &gaps.below);
            }
            Some(Spot { offset, style: Style::Lines { indent, eol_before: false }, anchor_start: start })
        }
        Anchor::Before(n) => {
            let start = t.start(n);
            if !starts_line(src, start) {
                return Some(Spot { offset: start, style: Style::InlineBefore, anchor_start: start });
            }
            let indent = indentation(src, line_start(src, start)).to_owned();
            let offset = skip_up(src, line_start(src, start), &gaps.below);
            Some(Spot { offset, style: Style::Lines { indent, eol_before: false }, anchor_start: start })
        }
    }
}

/// The text to insert at `spot`, or `None` when the statement cannot be
/// written on one line there.
/// `pad` is `(before, after)`: blank lines around the copy (see
/// [`padding`]).
pub(super) fn text(spot: &Spot, copy: &Copy, new: &Layout, old: &Layout, pad: (usize, usize)) -> Option<String> {
    match &spot.style {
        Style::Lines { indent, eol_before } => {
            let body = copy.render(indent, &new.unit, &old.unit).join(old.eol);
            let (before, after) = (old.eol.repeat(pad.0), old.eol.repeat(pad.1));
            Some(if *eol_before {
                format!("{}{before}{body}{after}", old.eol)
            } else {
                format!("{before}{body}{}{after}", old.eol)
            })
        }
        Style::InlineAfter => copy.inline_ok.then(|| format!("; {}", copy.single())),
        Style::InlineBefore => copy.inline_ok.then(|| format!("{}; ", copy.single())),
    }
}

/// Blank lines to add before and after a copied function or class so that
/// it is set off as in the new file (at most 2 each side), counting those
/// the old file already has at the line start `offset`.
pub(super) fn padding(src: &str, offset: usize, gaps: &Gaps<'_>) -> (usize, usize) {
    let want_above = gaps.above.iter().rev().take_while(|l| l.is_empty()).count().min(2);
    let want_below = gaps.below.iter().take_while(|l| l.is_empty()).count().min(2);
    let mut have_above = 0;
    let mut at = offset;
    while have_above < 2 && at > 0 {
        let prev = line_start(src, at - 1);
        if gap_line(src.get(prev..at).unwrap_or("x")) != Some("") {
            break;
        }
        have_above += 1;
        at = prev;
    }
    let mut have_below = 0;
    let mut at = offset;
    while have_below < 2 && at < src.len() {
        let next = next_line(src, at);
        if gap_line(src.get(at..next).unwrap_or("x")) != Some("") {
            break;
        }
        have_below += 1;
        at = next;
    }
    let want_below = if offset >= src.len() { 0 } else { want_below };
    (want_above.saturating_sub(have_above), want_below.saturating_sub(have_below))
}

/// Rewrites leading repetitions of the unit `from` as `to`.
fn convert(extra: &str, from: &str, to: &str) -> String {
    if from == to || from.is_empty() {
        return extra.to_owned();
    }
    let mut rest = extra;
    let mut out = String::new();
    while let Some(r) = rest.strip_prefix(from) {
        out.push_str(to);
        rest = r;
    }
    out.push_str(rest);
    out
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t' || c == '\x0c'
}

fn is_blank_or_eol(c: char) -> bool {
    is_blank(c) || c == '\r' || c == '\n'
}

/// Byte offset of the start of the line holding `offset`.
pub(super) fn line_start(src: &str, offset: usize) -> usize {
    src.get(..offset).and_then(|s| s.rfind('\n')).map_or(0, |i| i + 1)
}

/// The leading blanks of the line starting at `start`.
fn indentation(src: &str, start: usize) -> &str {
    let line = src.get(start..).unwrap_or("");
    let n = line.len() - line.trim_start_matches(is_blank).len();
    line.get(..n).unwrap_or("")
}

/// Whether only blanks precede `offset` on its line.
fn starts_line(src: &str, offset: usize) -> bool {
    src.get(line_start(src, offset)..offset).is_some_and(|p| p.chars().all(is_blank))
}
