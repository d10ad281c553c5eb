//! `record`: `log` throughput from Rust and the time to commit 1,000,000
//! records (DESIGN.md §8; issue 2 acceptance 6).
//!
//! `cargo bench -p flor-benches --bench record`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flor_benches::git_repo;
use flordb::{Flor, Options};
use std::time::{Duration, Instant};

fn opts() -> Options {
    Options { filename: Some("train.py".into()), argv: Some(vec!["train.py".into()]), ..Default::default() }
}

fn log_throughput(c: &mut Criterion) {
    let (_d, root) = git_repo();
    let flor = Flor::open_with(&root, opts()).expect("open");
    let mut g = c.benchmark_group("record");
    const N: u64 = 1_000_000;
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.bench_function("log_f64_1M", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                for i in 0..N {
                    flor.log("loss", i as f64).expect("log");
                }
                total += t.elapsed();
                flor.commit().expect("commit");
            }
            total
        })
    });
    g.finish();
}

fn commit_1m(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    g.sample_size(10);
    g.bench_function("commit_1M", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (_d, root) = git_repo();
                let flor = Flor::open_with(&root, opts()).expect("open");
                for epoch in flor.loop_iter("epoch", 0..100) {
                    for step in flor.loop_iter("step", 0..10_000) {
                        flor.log("loss", (epoch * 10_000 + step) as f64).expect("log");
                    }
                }
                let t = Instant::now();
                flor.commit().expect("commit");
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, log_throughput, commit_1m);
criterion_main!(benches);
