//! What listing a run's checkpoints costs (every replay plans from it), by
//! the checkpoints' heads against by decoding every manifest (how stores
//! written before heads existed are listed), in one process on one store:
//!
//!     cargo run --release -p flor-benches --example checkpoint_listing -- [N] [MIB]
//!
//! Saves the same MIB-MiB object (default 64) at N loop paths (default
//! 100): deduplicated, so the packs hold it once while the manifests list
//! its ~MIB × 64 chunks N times. Then, three times each, opens the store
//! and lists it: with its heads, and with the `meta` mark that says every
//! manifest has a head removed (the manifests are decoded instead). Prints
//! seconds and nanoseconds per chunk reference.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use flor_store::checkpoint::CheckpointStore;
use std::time::{Duration, Instant};

const RUN: &str = "1700000000000000-0000000000000001";

fn main() {
    let mut args = std::env::args().skip(1);
    let n: i64 = args.next().map_or(100, |a| a.parse().expect("N"));
    let mib: usize = args.next().map_or(64, |a| a.parse().expect("MIB"));
    let dir = tempfile::tempdir().expect("temp dir");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..mib << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    for e in 0..n {
        s.save(&[("epoch".to_string(), e)], "model", &data).unwrap();
    }
    s.close().unwrap();
    let index = dir.path().join("checkpoints").join(RUN).join("index");
    for by_heads in [true, false] {
        if !by_heads {
            let db = open_index(&index);
            db.open_tree("meta").unwrap().remove("heads").unwrap();
            db.flush().unwrap();
        }
        for _ in 0..3 {
            let t = Instant::now();
            let s = CheckpointStore::open(dir.path(), RUN).unwrap();
            let open = t.elapsed().as_secs_f64();
            let listed = s.list().unwrap();
            let list = t.elapsed().as_secs_f64() - open;
            let refs: u64 = listed.iter().map(|c| c.chunks).sum();
            println!(
                "{}: open {open:.3} s, list {list:.4} s: {} checkpoints, {refs} chunk references, {:.1} ns per reference",
                if by_heads { "heads" } else { "manifests" },
                listed.len(),
                list * 1e9 / refs.max(1) as f64
            );
            drop(s);
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Opens the run's sled index directly, waiting for the store's handle to
/// release sled's file lock.
fn open_index(index: &std::path::Path) -> sled::Db {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match sled::open(index) {
            Ok(db) => return db,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("cannot open {}: {e}", index.display()),
        }
    }
}
