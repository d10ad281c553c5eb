//! Checkpoint store benches (issue 4; results in BENCHMARKS.md, section
//! "checkpoint").
//!
//! ```text
//! nice cargo bench -p flor-benches --bench checkpoint
//! FLOR_BENCH_CHUNKING=1 nice cargo bench -p flor-benches --bench checkpoint -- frozen
//! ```
//!
//! - `checkpoint_256MiB/*`: 256 MiB of float32 weights (a fresh run each
//!   time, so nothing deduplicates): `save` + `flush` (durable) with the
//!   default options, without compression, with fixed-size chunks; `load`;
//!   beside it `torch.save`-style: the same bytes written to one file and
//!   fsynced; and the rejected design, chunks as sled values.
//! - `frozen_backbone/*`: a 256 MiB fine-tuning state whose backbone is
//!   frozen (the head and its optimizer state change, the header's step
//!   counter grows): time of a later checkpoint. The stored size of
//!   checkpoints 1–5 is printed first (not a timing).
//! - with `FLOR_BENCH_CHUNKING=1`, it also prints how much of a second
//!   checkpoint each chunking stores, for several change patterns.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode, Throughput};
use flor_store::checkpoint::{CheckpointOptions, CheckpointStore, Chunking};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const SIZE: usize = 256 * MIB;

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    flor_core::run::splitmix64(*x)
}

/// `len` bytes of float32 "weights": roughly normal, σ ≈ 0.02 (Irwin–Hall
/// of four uniforms), full-entropy mantissas like trained weights; zstd
/// level 1 saves ~8% on them.
fn weights(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        let r = splitmix(&mut x);
        let s: f32 = (0..4).map(|k| ((r >> (16 * k)) & 0xffff) as f32 / 65536.0).sum();
        out.extend_from_slice(&((s - 2.0) * 0.035).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A serialized fine-tuning state at `step`: a header (JSON with the step
/// and learning rate, so its length changes), a frozen backbone
/// (240 MiB), then the head's weights and its Adam moments (3 × ~5.3 MiB),
/// which change every step.
fn frozen_backbone_state(step: u64) -> Vec<u8> {
    static BACKBONE: OnceLock<Vec<u8>> = OnceLock::new();
    let backbone = BACKBONE.get_or_init(|| weights(1, 240 * MIB));
    let head = SIZE - 240 * MIB;
    let header = format!(
        "{{\"step\": {step}, \"lr\": {}, \"tensors\": {{\"backbone\": [0, {}], \"head\": [{}, {}]}}}}",
        1e-3 / (step as f64 + 1.0),
        backbone.len(),
        backbone.len(),
        backbone.len() + head
    );
    let mut out = Vec::with_capacity(8 + header.len() + SIZE);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(backbone);
    out.extend(weights(1000 + step, head));
    out
}

fn run_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("bench-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Times `save` + `flush` of `data` into a fresh run; the store is closed
/// and deleted outside the timing.
fn time_write(opts: &CheckpointOptions, data: &[u8], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = tempfile::tempdir().unwrap();
        let s = CheckpointStore::open_with(dir.path(), &run_name(), opts.clone()).unwrap();
        let t = Instant::now();
        s.save(&[("epoch".into(), 0)], "model", data).unwrap();
        s.flush().unwrap();
        total += t.elapsed();
        s.close().unwrap();
    }
    total
}

/// What a checkpoint-per-epoch `torch.save` does: one file, fsynced.
fn time_plain_file(data: &[u8], iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let mut f = std::fs::File::create(dir.path().join("model.pt")).unwrap();
        f.write_all(data).unwrap();
        f.sync_all().unwrap();
        total += t.elapsed();
    }
    total
}

/// The design the brief first named: every chunk a sled value under its
/// hash (fixed 16 KiB chunks, blake3, zstd 1, inserted by 2 threads).
fn time_sled_values(data: &[u8], iters: u64) -> Duration {
    sled_values(data, iters).0
}

/// [`time_sled_values`], also returning the database's size on disk after
/// the last iteration's flush.
fn sled_values(data: &[u8], iters: u64) -> (Duration, u64) {
    let mut total = Duration::ZERO;
    let mut disk = 0;
    for _ in 0..iters {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).flush_every_ms(None).open().unwrap();
        let tree = db.open_tree("chunks").unwrap();
        let t = Instant::now();
        std::thread::scope(|sc| {
            for part in 0..2 {
                let tree = tree.clone();
                sc.spawn(move || {
                    let mut z = zstd::bulk::Compressor::new(1).unwrap();
                    for (i, c) in data.chunks(16 << 10).enumerate() {
                        if i % 2 == part {
                            let h = blake3::hash(c);
                            tree.insert(h.as_bytes(), z.compress(c).unwrap()).unwrap();
                        }
                    }
                });
            }
        });
        db.flush().unwrap();
        total += t.elapsed();
        disk = dir_size(dir.path());
    }
    (total, disk)
}

fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A group of 10 flat samples, one 256 MiB operation each.
fn group<'a>(c: &'a mut Criterion, name: &str) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Bytes(SIZE as u64));
    g
}

/// CPU seconds (user + system, all threads) this process has used, from
/// `/proc/self/stat` (Linux; `None` elsewhere).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// CPU time of one write and one load of `data`: independent of other
/// load on the machine; `bytes / (cpu / cores)` bounds the throughput an
/// idle machine with that many cores can reach.
fn cpu_report(data: &[u8]) {
    for (name, opts) in [
        ("default (zstd 1)", CheckpointOptions::default()),
        ("zstd 3", CheckpointOptions { compression: Some(3), ..Default::default() }),
        ("no compression", CheckpointOptions { compression: None, ..Default::default() }),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let s = CheckpointStore::open_with(dir.path(), "cpu", opts).unwrap();
        let (c0, t0) = (cpu_seconds(), Instant::now());
        s.save(&[("epoch".into(), 0)], "model", data).unwrap();
        s.flush().unwrap();
        let (c1, t1) = (cpu_seconds(), Instant::now());
        let back = s.load(&[("epoch".into(), 0)], "model").unwrap();
        let (c2, t2) = (cpu_seconds(), Instant::now());
        assert!(back == data);
        let packs = s.disk_usage().unwrap().pack_bytes;
        if let (Some(c0), Some(c1), Some(c2)) = (c0, c1, c2) {
            let mb = data.len() as f64 / 1e6;
            eprintln!(
                "cpu, {name}: write {:.2} s CPU / {:.2} s wall, load {:.2} s CPU / {:.2} s wall \
                 (CPU-bound ceiling on 2 idle cores: write {:.0} MB/s, load {:.0} MB/s); {packs} pack bytes",
                c1 - c0,
                (t1 - t0).as_secs_f64(),
                c2 - c1,
                (t2 - t1).as_secs_f64(),
                mb / ((c1 - c0) / 2.0),
                mb / ((c2 - c1) / 2.0)
            );
        }
    }
}

fn throughput_256(c: &mut Criterion) {
    let data = weights(7, SIZE);
    cpu_report(&data);
    if let (Some(c0), t0) = (cpu_seconds(), Instant::now()) {
        let (_, disk) = sled_values(&data, 1);
        if let Some(c1) = cpu_seconds() {
            let cpu = c1 - c0;
            eprintln!(
                "cpu, sled values (rejected design): write {cpu:.2} s CPU / {:.2} s wall \
                 (CPU-bound ceiling on 2 idle cores: {:.0} MB/s); {disk} B on disk",
                t0.elapsed().as_secs_f64(),
                data.len() as f64 / 1e6 / (cpu / 2.0)
            );
        }
    }
    let mut g = group(c, "checkpoint_256MiB");
    let default = CheckpointOptions::default();
    g.bench_function("write_default", |b| b.iter_custom(|n| time_write(&default, &data, n)));
    let raw = CheckpointOptions { compression: None, ..Default::default() };
    g.bench_function("write_no_compression", |b| b.iter_custom(|n| time_write(&raw, &data, n)));
    let zstd3 = CheckpointOptions { compression: Some(3), ..Default::default() };
    g.bench_function("write_zstd3", |b| b.iter_custom(|n| time_write(&zstd3, &data, n)));
    let fixed = CheckpointOptions { chunking: Chunking::Fixed { size: 16 << 10 }, ..Default::default() };
    g.bench_function("write_fixed_16KiB", |b| b.iter_custom(|n| time_write(&fixed, &data, n)));
    g.bench_function("torch_save_style_file_fsync", |b| b.iter_custom(|n| time_plain_file(&data, n)));
    g.bench_function("sled_values_rejected_design", |b| b.iter_custom(|n| time_sled_values(&data, n)));

    let dir = tempfile::tempdir().unwrap();
    let s = CheckpointStore::open(dir.path(), "load").unwrap();
    s.save(&[("epoch".into(), 0)], "model", &data).unwrap();
    s.flush().unwrap();
    eprintln!("stored: {:?}; {:?}", s.list().unwrap()[0].stored_bytes, s.disk_usage().unwrap());
    g.bench_function("load", |b| {
        b.iter(|| {
            let back = s.load(&[("epoch".into(), 0)], "model").unwrap();
            assert_eq!(back.len(), SIZE);
            back
        })
    });
    g.finish();
}

fn frozen_backbone(c: &mut Criterion) {
    // Stored sizes (not timings), printed once per run of this binary.
    frozen_backbone_report();
    if std::env::var_os("FLOR_BENCH_CHUNKING").is_some() {
        chunking_report();
    }
    let mut g = group(c, "frozen_backbone");
    let dir = tempfile::tempdir().unwrap();
    let s = CheckpointStore::open(dir.path(), "frozen").unwrap();
    s.save(&[("epoch".into(), 0)], "model", &frozen_backbone_state(0)).unwrap();
    s.flush().unwrap();
    let step = AtomicU64::new(1);
    g.bench_function("write_later_checkpoint", |b| {
        b.iter_custom(|n| {
            let mut total = Duration::ZERO;
            for _ in 0..n {
                let i = step.fetch_add(1, Ordering::Relaxed);
                let state = frozen_backbone_state(i);
                let t = Instant::now();
                s.save(&[("epoch".into(), i as i64)], "model", &state).unwrap();
                s.flush().unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

fn frozen_backbone_report() {
    let dir = tempfile::tempdir().unwrap();
    let s = CheckpointStore::open(dir.path(), "frozen-report").unwrap();
    for step in 0..5u64 {
        s.save(&[("epoch".into(), step as i64)], "model", &frozen_backbone_state(step)).unwrap();
    }
    s.flush().unwrap();
    let torch_style = 5 * SIZE as u64;
    for i in s.list().unwrap() {
        eprintln!(
            "frozen backbone, checkpoint {}: raw {} B, new {} B stored ({:.2}% saved)",
            i.loop_path_text(),
            i.raw_bytes,
            i.new_bytes,
            100.0 * (1.0 - i.new_bytes as f64 / i.raw_bytes as f64)
        );
    }
    let u = s.disk_usage().unwrap();
    eprintln!(
        "frozen backbone, 5 checkpoints: {} B packs + {} B index on disk vs {} B as 5 plain files ({:.2}%)",
        u.pack_bytes,
        u.index_bytes,
        torch_style,
        100.0 * (u.pack_bytes + u.index_bytes) as f64 / torch_style as f64
    );
}

/// Fraction of a second checkpoint stored anew, per chunking and pattern.
fn chunking_report() {
    let n = 64 * MIB;
    let base = weights(11, n);
    let mut scattered = base.clone();
    let blocks = n / 4096;
    let mut x = 5u64;
    let mut changed = std::collections::BTreeSet::new();
    while changed.len() < blocks / 100 {
        changed.insert((splitmix(&mut x) % blocks as u64) as usize);
    }
    for &b in &changed {
        scattered[b * 4096..(b + 1) * 4096].copy_from_slice(&weights(b as u64, 4096));
    }
    let mut head_changed = base.clone();
    head_changed[n - n / 16..].copy_from_slice(&weights(99, n / 16));
    let mut shifted = b"{\"step\": 10}".to_vec();
    shifted.extend_from_slice(&base);
    let mut first_shifted = b"{\"step\": 9}".to_vec();
    first_shifted.extend_from_slice(&base);
    let patterns: [(&str, &[u8], &[u8]); 3] = [
        ("1% scattered 4 KiB blocks", &base, &scattered),
        ("last 1/16 rewritten in place", &base, &head_changed),
        ("header grew by 1 byte", &first_shifted, &shifted),
    ];
    let chunkings = [
        ("fixed 16 KiB", Chunking::Fixed { size: 16 << 10 }),
        ("fixed 32 KiB", Chunking::Fixed { size: 32 << 10 }),
        ("CDC 4/16/64 KiB (default)", Chunking::default()),
        ("CDC 8/32/128 KiB", Chunking::ContentDefined { min: 8 << 10, avg: 32 << 10, max: 128 << 10 }),
    ];
    for (cname, chunking) in chunkings {
        let mut row = Vec::new();
        for (_, a, b) in &patterns {
            let dir = tempfile::tempdir().unwrap();
            let opts = CheckpointOptions { chunking, compression: None, ..Default::default() };
            let s = CheckpointStore::open_with(dir.path(), "chunking", opts).unwrap();
            s.save(&[("epoch".into(), 0)], "model", a).unwrap();
            s.save(&[("epoch".into(), 1)], "model", b).unwrap();
            let l = s.list().unwrap();
            let t = Instant::now();
            let write_rate = (n as f64 / 1e6) / {
                s.save(&[("epoch".into(), 2)], "fresh", &weights(77, n)).unwrap();
                s.flush().unwrap();
                t.elapsed().as_secs_f64()
            };
            row.push(format!("{:.2}% ({:.0} MB/s, {} chunks)", 100.0 * l[1].new_bytes as f64 / l[1].raw_bytes as f64, write_rate, l[1].chunks));
        }
        eprintln!("chunking {cname}: {}", row.join(" | "));
    }
    eprintln!("patterns: {}", patterns.map(|p| p.0).join(" | "));
}

criterion_group!(benches, frozen_backbone, throughput_256);
criterion_main!(benches);
