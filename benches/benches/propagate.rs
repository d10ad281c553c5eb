//! `propagate`: statement propagation across code versions (issue 6,
//! acceptance 3; DESIGN.md §8, target ≤ 20 ms for one statement into one
//! old file).
//!
//! - `one_into_500_lines`: one `flor.log` statement into a 500-line training
//!   script whose new version also renamed a loop variable;
//! - `ten_into_2000_lines`: ten statements, spread over helpers and loops,
//!   into a 2,000-line script.
//!
//! Each measures the whole call: both parses, the GumTree matching, the
//! edit and the check that the edited file parses.
//!
//! `cargo bench -p flor-benches --bench propagate`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use flor_replay::propagate::{propagate, Target};

/// A synthetic training script of about `lines` lines: imports, arguments,
/// helper functions, then a checkpointed epoch/step loop. Helper `i` gets a
/// `flor.log("stmt_i", …)` when `i` is in `logged`; `var` names the
/// permutation variable of the epoch loop; `w_norm` adds the hindsight
/// statement at the top of the epoch body.
fn script(lines: usize, logged: &[usize], var: &str, w_norm: bool) -> String {
    let mut s = String::from(
        "\"\"\"Synthetic training script for the propagation bench.\"\"\"\nimport numpy as np\n\nimport flordb as flor\n\n\
         lr = flor.arg(\"lr\", 0.5)\nepochs = flor.arg(\"epochs\", 6)\nrng = np.random.default_rng(0)\n\n",
    );
    let helpers = lines.saturating_sub(40) / 10;
    for i in 0..helpers {
        let _ = write!(
            s,
            "\ndef helper_{i}(x, y):\n    \"\"\"Helper {i}.\"\"\"\n    z = x * {i} + y\n    for k in range({k}):\n        z = z + np.sin(k * x) / (k + 1)\n",
            k = i % 7 + 2
        );
        if logged.contains(&i) {
            let _ = writeln!(s, "        flor.log(\"stmt_{i}\", float(z))");
        }
        let _ = write!(s, "    if z > {i}:\n        z = z - {i}\n    return z\n");
    }
    let _ = write!(
        s,
        "\n\nW = np.zeros((64, 10))\nb = np.zeros(10)\nX = rng.normal(size=(1000, 64))\n\n\
         with flor.checkpointing(W=W, b=b, rng=rng):\n    for epoch in flor.loop(\"epoch\", range(epochs)):\n"
    );
    if w_norm {
        s.push_str("        flor.log(\"w_norm\", float(np.linalg.norm(W)))\n");
    }
    let _ = write!(
        s,
        "        {var} = rng.permutation(len(X))\n        for start in flor.loop(\"step\", range(0, len(X), 64)):\n\
         \x20           idx = {var}[start:start + 64]\n            xb = X[idx]\n            z = xb @ W + b\n\
         \x20           W -= lr * xb.T @ (z - z.mean(axis=0)) / len(idx)\n            b -= lr * z.mean(axis=0)\n\
         \x20           flor.log(\"loss\", float(helper_{h}(z.mean(), lr)))\n        flor.log(\"acc\", float(W.mean()))\n",
        h = helpers.saturating_sub(1)
    );
    s
}

fn bench(c: &mut Criterion) {
    let old = script(500, &[], "perm", false);
    let new = script(500, &[], "order", true);
    let one = [Target::Name("w_norm".into())];
    match propagate(&new, &old, &one) {
        Ok(p) if p.changed() => {}
        other => panic!("the 500-line case does not propagate: {other:?}"),
    }
    c.bench_function("propagate/one_into_500_lines", |b| {
        b.iter(|| propagate(black_box(&new), black_box(&old), black_box(&one)))
    });

    let spread = [3, 20, 41, 77, 90, 120, 151, 170, 190];
    let old = script(2000, &[], "perm", false);
    let new = script(2000, &spread, "order", true);
    let mut ten: Vec<Target> = spread.iter().map(|i| Target::Name(format!("stmt_{i}"))).collect();
    ten.push(Target::Name("w_norm".into()));
    match propagate(&new, &old, &ten) {
        Ok(p) if p.edits.len() == 10 => {}
        other => panic!("the 2,000-line case does not place ten statements: {other:?}"),
    }
    c.bench_function("propagate/ten_into_2000_lines", |b| {
        b.iter(|| propagate(black_box(&new), black_box(&old), black_box(&ten)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
