//! Unit tests of the propagation internals; the behaviour as a whole is
//! tested on the corpus in `tests/corpus/`.

use super::tree::{build, Tree};
use super::{matcher, syntax, Edit, Error, Side};

fn parse(src: &str) -> tree_sitter::Tree {
    let language: tree_sitter::Language = tree_sitter_python::LANGUAGE.into();
    match syntax::parse(&language, src, Side::Old) {
        Ok(t) => t,
        Err(e) => panic!("{e}"),
    }
}

const SRC: &str = "import numpy as np\n\nfor epoch in range(3):\n    x = np.ones(3) * epoch  # c\n    print(x.sum())\n";

#[test]
fn identical_files_map_every_node_to_itself() {
    let ts = parse(SRC);
    let (a, _) = build(ts.root_node(), SRC, &[]);
    let (b, _) = build(ts.root_node(), SRC, &[]);
    let m = matcher::gumtree(&a, &b);
    assert!((0..a.len()).all(|x| m.old_of(x) == Some(x)));
}

#[test]
fn comments_do_not_change_the_tree() {
    let plain = SRC.replace("  # c", "");
    let (ta, tb) = (parse(SRC), parse(&plain));
    let (a, _) = build(ta.root_node(), SRC, &[]);
    let (b, _) = build(tb.root_node(), &plain, &[]);
    assert_eq!(a.hash(Tree::ROOT), b.hash(Tree::ROOT));
    let minus = SRC.replace("* epoch", "- epoch");
    let tc = parse(&minus);
    let (c, _) = build(tc.root_node(), &minus, &[]);
    assert_ne!(a.hash(Tree::ROOT), c.hash(Tree::ROOT), "operators are part of the label");
}

#[test]
fn renamed_identifiers_are_mapped_to_each_other() {
    let old = SRC.replace("epoch", "e");
    let (ta, tb) = (parse(SRC), parse(&old));
    let (a, _) = build(ta.root_node(), SRC, &[]);
    let (b, _) = build(tb.root_node(), &old, &[]);
    let m = matcher::gumtree(&a, &b);
    let renames = super::rename::Renames::learn(&a, &b, &m);
    assert_eq!(renames.get("epoch"), Some("e"));
    assert_eq!(renames.get("x"), None);
}

#[test]
fn a_broken_edit_is_caught_and_a_good_one_passes() {
    let language: tree_sitter::Language = tree_sitter_python::LANGUAGE.into();
    let old = parse(SRC);
    let at = SRC.find("    print").unwrap_or(0);
    let good = vec![Edit { offset: at, text: "    y = (1,\n         2)\n".into() }];
    let text = format!("{}{}{}", &SRC[..at], good[0].text, &SRC[at..]);
    assert!(syntax::check_edited(&language, &old, SRC, &good, &text).is_ok());
    let bad = vec![Edit { offset: at, text: "    y = (1,\n".into() }];
    let text = format!("{}{}{}", &SRC[..at], bad[0].text, &SRC[at..]);
    let err = syntax::check_edited(&language, &old, SRC, &bad, &text);
    assert!(matches!(err, Err(Error::Syntax { side: Side::Old, .. })), "{err:?}");
}

#[test]
fn line_and_column_count_characters() {
    assert_eq!(syntax::line_column("ab\ncdé f", 0), (1, 1));
    assert_eq!(syntax::line_column("ab\ncdé f", 3), (2, 1));
    assert_eq!(syntax::line_column("ab\ncdé f", "ab\ncdé ".len()), (2, 5));
}

