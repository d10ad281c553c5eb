//! `query`: the pivoted view and SQL over in-memory tables (issue 3,
//! acceptance 3; DESIGN.md §8).
//!
//! - `dataframe_loss_1M`: `dataframe(["loss"])` over 1,000,000 records in
//!   100 runs (10 epochs × 1,000 steps each) to one Arrow batch (target
//!   ≤ 150 ms), the context already built;
//! - `dataframe_loss_acc_1M`: the same plus `acc` per epoch (an outer join);
//! - `context_1M`: building the context (frame index, tables) from batches;
//! - `open_dataframe_1M_disk`: open + scan the sealed Parquet segments +
//!   pivot, what `flor dataframe loss` does;
//! - `run_level_10k_runs`: `dataframe([])` over 10,000 runs × 5 names;
//! - `sql_avg_loss_per_run_1M`: a `GROUP BY` over `logs`;
//! - `scaling/dataframe_loss/N` for N = 100,000, 1,000,000, 10,000,000.
//!
//! `cargo bench -p flor-benches --bench query` (set `FLOR_BENCH_SKIP_10M=1`
//! to leave out the 10,000,000-record point, which needs ~4 GB).

#![allow(clippy::expect_used, missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flor_core::{Recorder, RunKey, Source, Value};
use flor_query::{FlorContext, Tables};
use flor_store::segment::{self, RunData, RunStatus};
use flor_store::wal::{Batch, RunMeta, RunSummary};
use std::time::{Duration, Instant};

const T0: i64 = 1_700_000_000_000_000;

/// The identity of forward run number `run`.
fn meta(filename: &str, tstamp: i64, run: u64) -> RunMeta {
    RunMeta { projid: "bench".into(), filename: filename.into(), key: RunKey { tstamp, run_id: run + 1 }, source: Source::Forward, writer: run + 1 }
}

/// One run of `train.py`: `lr` at run level, `loss` per step, `acc` per epoch.
fn train_run(run: u64, epochs: i64, steps: i64) -> RunData {
    let meta = meta("train.py", T0 + run as i64 * 1_000_000, run);
    let mut rec = Recorder::new();
    let mut batch = Batch::default();
    let log = |rec: &mut Recorder, batch: &mut Batch, name: &str, v: Value| {
        let before = rec.names().len();
        let id = rec.intern(name).expect("name");
        if rec.names().len() > before {
            batch.names.push((id, name.to_owned()));
        }
        batch.records.push(rec.record(id, v));
    };
    log(&mut rec, &mut batch, "lr", Value::Float(0.001 * (run + 1) as f64));
    rec.loop_enter("epoch").expect("loop");
    for e in 0..epochs {
        let f = rec.iteration(e, None).expect("iteration");
        batch.frames.push(f);
        rec.loop_enter("step").expect("loop");
        for s in 0..steps {
            let f = rec.iteration(s, None).expect("iteration");
            batch.frames.push(f);
            log(&mut rec, &mut batch, "loss", Value::Float(1.0 / (1.0 + (e * steps + s) as f64)));
        }
        rec.loop_exit("step").expect("loop");
        log(&mut rec, &mut batch, "acc", Value::Float(0.5 + e as f64 / 100.0));
    }
    rec.loop_exit("epoch").expect("loop");
    RunData { meta, batch, summary: Some(RunSummary { args: "{}".into(), ..Default::default() }) }
}

/// `records` loss records in 100 runs of 10 epochs.
fn loss_tables(records: usize) -> Tables {
    let steps = (records / 100 / 10).max(1) as i64;
    let mut t = Tables::default();
    for r in 0..100 {
        let d = train_run(r, 10, steps);
        t.logs.push(d.logs_batch().expect("logs"));
        t.loops.push(d.loops_batch().expect("loops"));
        t.runs.push(d.runs_batch(RunStatus::Committed, T0).expect("runs"));
    }
    t
}

/// 10,000 runs with 5 run-level names each (a sweep).
fn sweep_tables() -> Tables {
    let mut t = Tables::default();
    for r in 0..10_000u64 {
        let meta = meta("sweep.py", T0 + r as i64 * 1_000, r);
        let mut rec = Recorder::new();
        let mut batch = Batch::default();
        let vals: [(&str, Value); 5] = [
            ("lr", Value::Float(0.0001 * (r % 100 + 1) as f64)),
            ("batch_size", Value::Int(32 << (r % 4))),
            ("optimizer", Value::Str(if r % 2 == 0 { "adam" } else { "sgd" }.into())),
            ("seed", Value::Int(r as i64)),
            ("val_acc", Value::Float((r % 1000) as f64 / 1000.0)),
        ];
        for (name, v) in vals {
            let id = rec.intern(name).expect("name");
            batch.names.push((id, name.to_owned()));
            batch.records.push(rec.record(id, v));
        }
        let d = RunData { meta, batch, summary: None };
        t.logs.push(d.logs_batch().expect("logs"));
    }
    t
}

fn dataframe_1m(c: &mut Criterion) {
    let tables = loss_tables(1_000_000);
    let ctx = FlorContext::from_tables(tables.clone()).expect("context");
    let mut g = c.benchmark_group("query");
    g.sample_size(10).measurement_time(Duration::from_secs(10)).throughput(Throughput::Elements(1_000_000));
    g.bench_function("dataframe_loss_1M", |b| b.iter(|| ctx.dataframe(&["loss"]).expect("pivot")));
    g.bench_function("dataframe_loss_acc_1M", |b| b.iter(|| ctx.dataframe(&["loss", "acc"]).expect("pivot")));
    g.bench_function("context_1M", |b| b.iter(|| FlorContext::from_tables(tables.clone()).expect("context")));
    g.bench_function("sql_avg_loss_per_run_1M", |b| {
        b.iter(|| {
            ctx.sql("SELECT run_id, avg(value_float) FROM logs WHERE value_name = 'loss' GROUP BY run_id").expect("sql")
        })
    });
    g.finish();
}

fn open_from_disk(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    for r in 0..100 {
        segment::seal(&dir.path().join(".flor"), &train_run(r, 10, 1_000), RunStatus::Committed, T0).expect("seal");
    }
    let mut g = c.benchmark_group("query");
    g.sample_size(10).measurement_time(Duration::from_secs(10)).throughput(Throughput::Elements(1_000_000));
    g.bench_function("open_dataframe_1M_disk", |b| {
        b.iter(|| {
            let ctx = FlorContext::open(dir.path()).expect("open");
            ctx.dataframe(&["loss"]).expect("pivot")
        })
    });
    g.finish();
}

fn run_level(c: &mut Criterion) {
    let ctx = FlorContext::from_tables(sweep_tables()).expect("context");
    let mut g = c.benchmark_group("query");
    g.sample_size(10).throughput(Throughput::Elements(10_000));
    g.bench_function("run_level_10k_runs", |b| b.iter(|| ctx.dataframe::<&str>(&[]).expect("pivot")));
    g.finish();
}

fn scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("query/scaling");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let mut sizes = vec![100_000usize, 1_000_000];
    if std::env::var_os("FLOR_BENCH_SKIP_10M").is_none() {
        sizes.push(10_000_000);
    }
    for n in sizes {
        let t = Instant::now();
        let ctx = FlorContext::from_tables(loss_tables(n)).expect("context");
        eprintln!("query/scaling: context over {n} records built in {:?}", t.elapsed());
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("dataframe_loss", n), &n, |b, _| b.iter(|| ctx.dataframe(&["loss"]).expect("pivot")));
    }
    g.finish();
}

criterion_group!(benches, dataframe_1m, open_from_disk, run_level, scaling);
criterion_main!(benches);
