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

/// CPU seconds (user + system) of each thread of this process, by thread
/// name, from `/proc/self/task/*/stat` (10 ms resolution).
fn thread_cpu() -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let Ok(st) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let Some((head, rest)) = st.rsplit_once(") ") else { continue };
        let name = head.split_once(" (").map(|(_, n)| n.to_owned()).unwrap_or_default();
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
        out.push((name, ticks / 100.0));
    }
    out
}

/// Where the CPU of `log` goes: the logging thread and the WAL writer
/// thread, in CPU nanoseconds per record over 20,000,000 records (one run,
/// no commit inside the measurement). Printed, not asserted: on a loaded
/// machine CPU time is steadier than wall time.
fn log_cpu_split(_c: &mut Criterion) {
    const N: u64 = 20_000_000;
    let (_d, root) = git_repo();
    let flor = Flor::open_with(&root, opts()).expect("open");
    flor.log("loss", 0.0).expect("log"); // start the run (and its writer thread)
    let before = thread_cpu();
    let t = Instant::now();
    for i in 0..N {
        flor.log("loss", i as f64).expect("log");
    }
    flor.flush().expect("flush");
    let wall = t.elapsed().as_secs_f64();
    let after = thread_cpu();
    let used = |name: &str| -> f64 {
        let sum = |v: &[(String, f64)]| v.iter().filter(|(n, _)| n.starts_with(name)).map(|(_, s)| s).sum::<f64>();
        sum(&after) - sum(&before)
    };
    let per = |s: f64| s * 1e9 / N as f64;
    println!(
        "record/log_cpu_split: {N} records in {:.3} s wall ({:.1} M records/s); CPU per record: writer thread (flor-wal) {:.1} ns, every other thread {:.1} ns",
        wall,
        N as f64 / wall / 1e6,
        per(used("flor-wal")),
        per(used("") - used("flor-wal")),
    );
}

/// CPU seconds of the whole process (all threads) spent in one
/// `commit_1M`-shaped commit, beside its wall time. Printed, not asserted.
fn commit_cpu(_c: &mut Criterion) {
    // The process's CPU, exited threads (the seal's) included.
    let total = || {
        let st = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let f: Vec<&str> = st.rsplit_once(") ").map(|(_, r)| r.split(' ').collect()).unwrap_or_default();
        (f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)) / 100.0
    };
    for _ in 0..3 {
        let (_d, root) = git_repo();
        let flor = Flor::open_with(&root, opts()).expect("open");
        for epoch in flor.loop_iter("epoch", 0..100) {
            for step in flor.loop_iter("step", 0..10_000) {
                flor.log("loss", (epoch * 10_000 + step) as f64).expect("log");
            }
        }
        let (c0, t) = (total(), Instant::now());
        flor.commit().expect("commit");
        println!("record/commit_cpu: commit of 1,000,000 records: {:.3} s wall, {:.3} s CPU (all threads)", t.elapsed().as_secs_f64(), total() - c0);
    }
}

criterion_group!(benches, log_throughput, commit_1m, log_cpu_split, commit_cpu);
criterion_main!(benches);
