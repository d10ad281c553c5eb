//! Fuzzes statement propagation with arbitrary inputs: no panic, no hang,
//! and every success is consistent: its edits rebuild its text, and when
//! every target is a name, propagating again into the result changes
//! nothing (the statements are already there).
//!
//! Input layout: `NEW \0 OLD \0 TARGETS`, bytes read as UTF-8 (lossy);
//! TARGETS is one target per line (digits are a line number, anything else a
//! name), at most 8. Without a third part every line of NEW that has a
//! statement is tried as a target.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../src/propagate/mod.rs"]
mod propagate;

use propagate::{propagate, Target};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\0');
    let new = parts.next().unwrap_or("");
    let old = parts.next().unwrap_or("");
    let targets: Vec<Target> = match parts.next() {
        Some(t) => t.lines().filter(|l| !l.is_empty()).take(8).map(Target::from_arg).collect(),
        None => (1..=new.lines().count().min(8)).map(Target::Line).collect(),
    };
    let Ok(out) = propagate(new, old, &targets) else { return };
    let mut rebuilt = String::new();
    let mut pos = 0;
    for edit in &out.edits {
        assert!(edit.offset >= pos && edit.offset <= old.len(), "edits out of order");
        rebuilt.push_str(&old[pos..edit.offset]);
        rebuilt.push_str(&edit.text);
        pos = edit.offset;
    }
    rebuilt.push_str(&old[pos..]);
    assert_eq!(rebuilt, out.text, "edits do not rebuild the text");
    if targets.iter().all(|t| matches!(t, Target::Name(_))) {
        match propagate(new, &out.text, &targets) {
            Ok(again) => assert!(again.edits.is_empty(), "second run edited again: {:?}", again.edits),
            Err(e) => panic!("second run failed: {e}"),
        }
    }
});
