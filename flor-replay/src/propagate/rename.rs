//! Renames learnt from the mapping, applied to the carried statement.
//!
//! Each mapped pair of identifier leaves is a vote `new name → old name`; a
//! new name is renamed to the old name with the most votes when that beats
//! keeping it (ties keep it). `epoch` in every statement of a loop whose old
//! version says `e` thus becomes `e` in the copy.

use std::collections::HashMap;

use tree_sitter::Node;

use super::matcher::Mapping;
use super::tree::{Class, Tree};

/// New identifier → the old identifier it was renamed from.
#[derive(Debug, Default)]
pub(super) struct Renames {
    map: HashMap<String, String>,
}

impl Renames {
    /// Learns the renames from the mapped identifier leaves of `a` (new) and
    /// `b` (old).
    pub fn learn(a: &Tree, b: &Tree, m: &Mapping) -> Renames {
        let mut votes: HashMap<&str, HashMap<&str, usize>> = HashMap::new();
        for x in 0..a.len() {
            if a.class(x) != Class::Identifier {
                continue;
            }
            let Some(y) = m.old_of(x) else { continue };
            if b.class(y) == Class::Identifier {
                *votes.entry(a.label(x)).or_default().entry(b.label(y)).or_default() += 1;
            }
        }
        let mut map = HashMap::new();
        for (new, olds) in votes {
            let keep = olds.get(new).copied().unwrap_or(0);
            let best = olds.iter().filter(|(old, _)| **old != new).max_by(|l, r| l.1.cmp(r.1).then(r.0.cmp(l.0)));
            if let Some((old, &n)) = best {
                if n > keep {
                    map.insert(new.to_owned(), (*old).to_owned());
                }
            }
        }
        Renames { map }
    }

    /// The old name of `new`, if it was renamed.
    pub fn get(&self, new: &str) -> Option<&str> {
        self.map.get(new).map(String::as_str)
    }
}

/// The source of `stmt` from its start to byte `end`, with renamed
/// identifiers replaced; also the renames it applied, in order of first use.
pub(super) fn renamed_source(stmt: Node<'_>, end: usize, src: &str, renames: &Renames) -> (String, Vec<(String, String)>) {
    let start = stmt.start_byte();
    let mut idents: Vec<(usize, usize, &str)> = Vec::new();
    let mut stack = vec![stmt];
    let mut cursor = stmt.walk();
    while let Some(node) = stack.pop() {
        if node.kind() == "identifier" {
            if let Some(old) = src.get(node.start_byte()..node.end_byte()).and_then(|t| renames.get(t)) {
                idents.push((node.start_byte(), node.end_byte(), old));
            }
            continue;
        }
        stack.extend(node.children(&mut cursor));
    }
    idents.sort_unstable_by_key(|i| i.0);
    let mut out = String::new();
    let mut applied: Vec<(String, String)> = Vec::new();
    let mut pos = start;
    for (s, e, old) in idents {
        if s < pos || e > end {
            continue;
        }
        out.push_str(src.get(pos..s).unwrap_or(""));
        out.push_str(old);
        let new = src.get(s..e).unwrap_or("").to_owned();
        if !applied.iter().any(|(n, _)| *n == new) {
            applied.push((new, old.to_owned()));
        }
        pos = e;
    }
    out.push_str(src.get(pos..end.max(pos)).unwrap_or(""));
    (out, applied)
}
