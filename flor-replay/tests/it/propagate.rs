//! Propagation corpus tests (issue 6).
//!
//! Each folder of `tests/corpus/` holds `new.py`, `old.py`, `targets` (one
//! target per line: a name, or a 1-based line number of `new.py`) and either
//! `expected.py` (the exact propagated old file) or `expected.err` (the exact
//! error message, one line). Files are compared byte for byte, so CRLF and
//! tabs in the corpus matter (`.gitattributes` there keeps git off them).

use std::fs;
use std::path::{Path, PathBuf};

use flor_replay::propagate::{propagate, unified_diff, Error, Outcome, Placed, Target};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("corpus")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn targets_of(case: &Path) -> Vec<Target> {
    read(&case.join("targets")).lines().map(str::trim).filter(|l| !l.is_empty()).map(Target::from_arg).collect()
}

fn cases() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .unwrap_or_else(|e| panic!("corpus: {e}"))
        .map(|e| e.map(|e| e.path()).unwrap_or_else(|e| panic!("corpus: {e}")))
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// Runs one case; `Err` describes the mismatch.
fn check(case: &Path) -> Result<(), String> {
    let new = read(&case.join("new.py"));
    let old = read(&case.join("old.py"));
    let targets = targets_of(case);
    let result = propagate(&new, &old, &targets);
    let expected_err = case.join("expected.err");
    if expected_err.exists() {
        let want = read(&expected_err).trim_end().to_owned();
        return match result {
            Err(e) if e.to_string() == want => Ok(()),
            Err(e) => Err(format!("error differs:\n  want: {want}\n  got:  {e}")),
            Ok(p) => Err(format!("expected the error\n  {want}\ngot a result:\n{}", p.text)),
        };
    }
    let want = read(&case.join("expected.py"));
    let got = result.map_err(|e| format!("unexpected error: {e}"))?;
    if got.text != want {
        return Err(format!("text differs (- expected, + got):\n{}", unified_diff(&want, &got.text, "expected", "got")));
    }
    // Idempotent: the expected file already holds every statement.
    let again = propagate(&new, &want, &targets).map_err(|e| format!("second run: {e}"))?;
    if again.text != want || again.changed() {
        return Err(format!("second run changed the file:\n{}", unified_diff(&want, &again.text, "expected", "again")));
    }
    if again.placements.iter().any(|p| !matches!(p.outcome, Outcome::AlreadyPresent { .. })) {
        return Err(format!("second run placements: {:?}", again.placements));
    }
    Ok(())
}

#[test]
fn corpus_cases_all_pass() {
    let cases = cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| check(c).err().map(|e| format!("--- {}\n{e}", c.file_name().and_then(|n| n.to_str()).unwrap_or("?"))))
        .collect();
    assert!(failures.is_empty(), "{} of {} corpus cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    assert!(cases.len() >= 20, "the corpus has {} cases, want at least 20", cases.len());
}

const OLD: &str = "import flordb as flor\n\nfor e in range(3):\n    x = e * 2\n    print(x)\n";
const NEW: &str = "import flordb as flor\n\nfor epoch in range(3):\n    x = epoch * 2\n    flor.log(\"x\", x + epoch)\n    print(x)\n";

#[test]
fn placement_reports_lines_anchor_and_renames() {
    let out = propagate(NEW, OLD, &[Target::Name("x".into())]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.text, "import flordb as flor\n\nfor e in range(3):\n    x = e * 2\n    flor.log(\"x\", x + e)\n    print(x)\n");
    assert_eq!(out.placements.len(), 1);
    assert_eq!(out.placements[0].new_line, 5);
    assert_eq!(
        out.placements[0].outcome,
        Outcome::Inserted {
            line: 5,
            anchor: Placed::After { old_line: 4 },
            renamed: vec![("epoch".to_owned(), "e".to_owned())]
        }
    );
    assert_eq!(out.edits.len(), 1);
    assert_eq!(out.edits[0].offset, OLD.find("    print").unwrap_or(usize::MAX));
    assert_eq!(out.edits[0].text, "    flor.log(\"x\", x + e)\n");
}

#[test]
fn unified_diff_shows_the_inserted_line() {
    let out = propagate(NEW, OLD, &[Target::Line(5)]).unwrap_or_else(|e| panic!("{e}"));
    let diff = unified_diff(OLD, &out.text, "a/old.py", "b/old.py");
    assert_eq!(
        diff,
        "--- a/old.py\n+++ b/old.py\n@@ -2,4 +2,5 @@\n \n for e in range(3):\n     x = e * 2\n+    flor.log(\"x\", x + e)\n     print(x)\n"
    );
    assert_eq!(unified_diff(OLD, OLD, "a", "b"), "");
}

#[test]
fn targets_from_arguments() {
    assert_eq!(Target::from_arg("12"), Target::Line(12));
    assert_eq!(Target::from_arg("w_norm"), Target::Name("w_norm".into()));
    assert_eq!(Target::from_arg("+3"), Target::Name("+3".into()));
    assert_eq!(Target::Line(3).to_string(), "line 3");
}

#[test]
fn errors_name_the_version_and_the_place() {
    let err = propagate(NEW, "for e in range(3)\n    x = 1\n", &[Target::Name("x".into())])
        .err()
        .map(|e| e.in_version("abc123"));
    let msg = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.starts_with("old version abc123: syntax error in the old file at line 1, column "), "{msg}");
    let err = propagate(NEW, OLD, &[Target::Line(99)]).err();
    assert!(matches!(err, Some(Error::LineOutOfRange { line: 99, lines: 6 })), "{err:?}");
    let err = propagate(NEW, OLD, &[Target::Line(2)]).err();
    assert!(matches!(err, Some(Error::NoStatementAtLine { line: 2 })), "{err:?}");
}

#[test]
fn several_targets_keep_their_new_order() {
    let new = "for i in range(3):\n    flor.log(\"a\", i)\n    flor.log(\"b\", i)\n    y = i\n";
    let old = "for i in range(3):\n    y = i\n";
    let out = propagate(new, old, &[Target::Name("b".into()), Target::Name("a".into())]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.text, "for i in range(3):\n    flor.log(\"a\", i)\n    flor.log(\"b\", i)\n    y = i\n");
}
