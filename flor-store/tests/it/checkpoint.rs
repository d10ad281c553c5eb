//! Checkpoint store tests (issue 4): round trips, deduplication, damage,
//! garbage collection, the `checkpoints` table; the kill -9 test is in
//! `checkpoint/crash.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod crash;

use flor_store::arrow::util::pretty::pretty_format_batches;
use flor_store::checkpoint::{
    checkpoints_table, loop_path_text, CheckpointOptions, CheckpointStore, Chunking,
};
use flor_store::Error;
use proptest::prelude::*;
use std::path::{Path, PathBuf};

pub(crate) const RUN: &str = "1700000000000000-00000000deadbeef";

pub(crate) fn at(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(n, i)| (n.to_string(), *i)).collect()
}

/// `len` bytes from `seed`: incompressible (SplitMix64) when `random`,
/// otherwise runs of repeated bytes that zstd compresses well.
pub(crate) fn bytes(seed: u64, len: usize, random: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed;
    while out.len() < len {
        x = flor_core::run::splitmix64(x);
        if random {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            let run = 1 + (x >> 56) as usize;
            out.extend(std::iter::repeat_n(x as u8 & 0x0f, run));
        }
    }
    out.truncate(len);
    out
}

fn packs(store_dir: &Path) -> Vec<PathBuf> {
    let mut p: Vec<_> = std::fs::read_dir(store_dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    p.sort();
    p
}

#[test]
fn round_trips_lists_and_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    assert_eq!(s.path(), dir.path().join("checkpoints").join(RUN));
    let model = bytes(1, 300_000, true);
    let optim = bytes(2, 200_000, false);
    s.save(&at(&[("epoch", 0)]), "model", &model).unwrap();
    s.save(&at(&[("epoch", 0)]), "optimizer", &optim).unwrap();
    s.save(&at(&[("epoch", 1), ("step", 7)]), "model", b"tiny")
        .unwrap();
    s.save(&[], "rng", b"").unwrap();
    assert_eq!(s.load(&at(&[("epoch", 0)]), "model").unwrap(), model);
    assert_eq!(s.load(&at(&[("epoch", 0)]), "optimizer").unwrap(), optim);
    assert_eq!(
        s.load(&at(&[("epoch", 1), ("step", 7)]), "model").unwrap(),
        b"tiny"
    );
    assert_eq!(s.load(&[], "rng").unwrap(), b"");

    match s.load(&at(&[("epoch", 2)]), "model") {
        Err(Error::CheckpointMissing {
            run,
            object,
            loop_path,
        }) => {
            assert_eq!(
                (run.as_str(), object.as_str(), loop_path.as_str()),
                (RUN, "model", "epoch=2")
            );
        }
        other => panic!("expected CheckpointMissing, got {other:?}"),
    }

    let list = s.list().unwrap();
    let rows: Vec<_> = list
        .iter()
        .map(|c| {
            (
                c.loop_path_text(),
                c.object.as_str(),
                c.raw_bytes,
                c.iteration(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            ("run".to_string(), "rng", 0, None),
            ("epoch=0".to_string(), "model", 300_000, Some(0)),
            ("epoch=0".to_string(), "optimizer", 200_000, Some(0)),
            ("epoch=1/step=7".to_string(), "model", 4, Some(1)),
        ]
    );
    let model_info = &list[1];
    assert_eq!(model_info.hash, *blake3::hash(&model).as_bytes());
    // Incompressible: stored raw, 45 bytes of frame per chunk.
    assert_eq!(model_info.stored_bytes, 300_000 + 45 * model_info.chunks);
    assert_eq!(model_info.new_bytes, model_info.stored_bytes);
    // Runs of bytes compress.
    assert!(list[2].stored_bytes < 200_000 / 4, "{:?}", list[2]);

    // Saving the same key again replaces it; reopening keeps everything.
    let model2 = bytes(3, 100_000, true);
    s.save(&at(&[("epoch", 0)]), "model", &model2).unwrap();
    let index = s.path().join("index");
    let snapshots = || {
        std::fs::read_dir(&index)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("snap."))
            .count()
    };
    assert_eq!(snapshots(), 0);
    s.close().unwrap();
    // Close leaves sled's snapshot behind, so the next open need not
    // recover the log to find the checkpoints.
    assert_eq!(snapshots(), 1);
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    assert_eq!(s.load(&at(&[("epoch", 0)]), "model").unwrap(), model2);
    assert_eq!(s.load(&at(&[("epoch", 0)]), "optimizer").unwrap(), optim);
    assert_eq!(s.list().unwrap().len(), 4);
}

#[test]
fn the_checkpoints_table() {
    let dir = tempfile::tempdir().unwrap();
    let other = "1700000000000001-0000000000000002";
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    s.save(&at(&[("epoch", 0)]), "model", &bytes(1, 20_000, true))
        .unwrap();
    // Flushed before the same bytes are saved again: with both in flight,
    // the shared chunk's new bytes go to whichever copy the parallel
    // compressors hand the writer first (see `CheckpointInfo::new_bytes`).
    s.flush().unwrap();
    s.save(&at(&[("epoch", 1)]), "model", &bytes(1, 20_000, true))
        .unwrap();
    s.save(&at(&[("epoch", 1), ("step", 3)]), "optimizer", &[7u8; 100])
        .unwrap();
    s.close().unwrap();
    let t = CheckpointStore::open(dir.path(), other).unwrap();
    t.save(&[], "rng", b"state").unwrap();
    t.flush().unwrap();

    // `other` is still open (sled admits one process): reported, not fatal.
    let table = checkpoints_table(dir.path()).unwrap();
    assert_eq!(table.unavailable.len(), 1);
    assert_eq!(table.unavailable[0].0, other);
    assert!(
        matches!(table.unavailable[0].1, Error::CheckpointLocked { .. }),
        "{:?}",
        table.unavailable[0].1
    );
    drop(t);

    let table = checkpoints_table(dir.path()).unwrap();
    assert!(table.unavailable.is_empty());
    // written_at is the wall clock: compare the other columns. Stored
    // bytes: raw chunks take 45 bytes of frame more; 100 equal bytes
    // compress to 17.
    let b = table.batch.project(&[0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    let expected = "\
+-----------------------------------+----------------+-----------+-----------+-----------+--------------+--------+-----------+
| run                               | loop_path      | object    | iteration | raw_bytes | stored_bytes | chunks | new_bytes |
+-----------------------------------+----------------+-----------+-----------+-----------+--------------+--------+-----------+
| 1700000000000000-00000000deadbeef | epoch=0        | model     | 0         | 20000     | 20045        | 1      | 20045     |
| 1700000000000000-00000000deadbeef | epoch=1        | model     | 1         | 20000     | 20045        | 1      | 0         |
| 1700000000000000-00000000deadbeef | epoch=1/step=3 | optimizer | 1         | 100       | 62           | 1      | 62        |
| 1700000000000001-0000000000000002 | run            | rng       |           | 5         | 50           | 1      | 50        |
+-----------------------------------+----------------+-----------+-----------+-----------+--------------+--------+-----------+";
    assert_eq!(pretty_format_batches(&[b]).unwrap().to_string(), expected);
}

/// Acceptance 1: random byte strings from 0 to 64 MiB round-trip exactly.
/// Sizes: a few large (up to exactly 64 MiB), many small; both chunkings,
/// compressed and raw, random and compressible content.
#[test]
fn byte_strings_up_to_64_mib_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cdc = CheckpointStore::open(dir.path(), RUN).unwrap();
    let fixed_opts = CheckpointOptions {
        chunking: Chunking::Fixed { size: 10_000 },
        compression: None,
        ..Default::default()
    };
    let fixed = CheckpointStore::open_with(dir.path(), "fixed-chunks", fixed_opts).unwrap();
    // The edges, always: nothing, and exactly 64 MiB.
    for (i, len) in [0usize, 64 << 20].into_iter().enumerate() {
        let data = bytes(i as u64, len, true);
        cdc.save(&at(&[("edge", i as i64)]), "blob", &data).unwrap();
        assert!(
            cdc.load(&at(&[("edge", i as i64)]), "blob").unwrap() == data,
            "{len} bytes"
        );
    }
    let case = std::sync::atomic::AtomicI64::new(0);
    let sizes = prop_oneof![
        12 => 0usize..70_000,
        4 => 70_000usize..4 << 20,
        1 => (16usize << 20)..=(64 << 20),
        1 => Just(64usize << 20),
    ];
    let cfg = ProptestConfig {
        cases: 40,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(cfg, |(len in sizes, seed in any::<u64>(), random in any::<bool>(), use_fixed in any::<bool>())| {
        let data = bytes(seed, len, random);
        let s = if use_fixed { &fixed } else { &cdc };
        let key = at(&[("case", case.fetch_add(1, std::sync::atomic::Ordering::Relaxed))]);
        s.save(&key, "blob", &data).unwrap();
        let back = s.load(&key, "blob").unwrap();
        prop_assert!(back == data, "{} bytes (seed {seed}, random {random}, fixed {use_fixed}) differ", len);
    });
}

/// Acceptance 2: two checkpoints of a 100 MiB buffer that differ in 1% of
/// their bytes (scattered 4 KiB blocks) occupy at most 1.15× one of them.
/// Random (incompressible) bytes, so compression cannot hide the dedup.
/// Measured as pack bytes on disk after flush (what the chunks occupy,
/// frame headers included); the sled index is reported beside it.
#[test]
fn a_one_percent_change_costs_under_15_percent() {
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    let a = bytes(42, 100 * MIB, true);
    let mut b = a.clone();
    let blocks = a.len() / 4096;
    let mut changed = std::collections::BTreeSet::new();
    let mut x = 7u64;
    while changed.len() < blocks / 100 {
        x = flor_core::run::splitmix64(x);
        changed.insert((x % blocks as u64) as usize);
    }
    for &blk in &changed {
        b[blk * 4096..(blk + 1) * 4096].copy_from_slice(&bytes(blk as u64, 4096, true));
    }
    let differing = a.iter().zip(&b).filter(|(p, q)| p != q).count();
    assert!(
        differing > MIB * 99 / 100 && differing <= MIB,
        "{differing} bytes differ"
    );

    s.save(&at(&[("epoch", 0)]), "model", &a).unwrap();
    s.flush().unwrap();
    let one = s.disk_usage().unwrap();
    s.save(&at(&[("epoch", 1)]), "model", &b).unwrap();
    s.flush().unwrap();
    let two = s.disk_usage().unwrap();
    let ratio = two.pack_bytes as f64 / one.pack_bytes as f64;
    let with_index =
        (two.pack_bytes + two.index_bytes) as f64 / (one.pack_bytes + one.index_bytes) as f64;
    eprintln!(
        "dedup: one checkpoint {} pack bytes ({} index), two {} ({} index): {ratio:.4}× packs, {with_index:.4}× with index",
        one.pack_bytes, one.index_bytes, two.pack_bytes, two.index_bytes
    );
    assert!(
        one.pack_bytes >= 100 * MIB as u64,
        "random data must not shrink: {}",
        one.pack_bytes
    );
    assert!(ratio <= 1.15, "two checkpoints take {ratio:.4}× one");
    // The manifests account for exactly the pack growth.
    let list = s.list().unwrap();
    assert_eq!(list[0].new_bytes + 16, one.pack_bytes);
    assert_eq!(list[0].new_bytes + list[1].new_bytes + 16, two.pack_bytes);
    assert_eq!(s.load(&at(&[("epoch", 0)]), "model").unwrap(), a);
    assert_eq!(s.load(&at(&[("epoch", 1)]), "model").unwrap(), b);
}

/// Acceptance 4: a flipped byte in a stored chunk is an error naming the
/// run, object and loop path; so are a truncated or missing pack.
#[test]
fn damage_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let key = at(&[("epoch", 3)]);
    let mut data = bytes(5, 150_000, true);
    data.extend(bytes(6, 150_000, false)); // some chunks zstd, some raw
    {
        let s = CheckpointStore::open(dir.path(), RUN).unwrap();
        s.save(&key, "model", &data).unwrap();
        s.flush().unwrap(); // the model's frames come first in the pack
        s.save(&at(&[("epoch", 4)]), "other", &bytes(8, 50_000, true))
            .unwrap();
        s.close().unwrap();
    }
    let store_dir = dir.path().join("checkpoints").join(RUN);
    let pack = packs(&store_dir).remove(0);
    let original = std::fs::read(&pack).unwrap();
    let model_end = 16
        + CheckpointStore::open(dir.path(), RUN)
            .unwrap()
            .list()
            .unwrap()[0]
            .stored_bytes as usize;

    let expect_damaged = |what: &str| {
        let s = CheckpointStore::open(dir.path(), RUN).unwrap();
        match s.load(&key, "model") {
            Err(e @ Error::CheckpointDamaged { .. }) => {
                let Error::CheckpointDamaged {
                    run,
                    object,
                    loop_path,
                    detail,
                } = &e
                else {
                    unreachable!()
                };
                assert_eq!(
                    (run.as_str(), object.as_str(), loop_path.as_str()),
                    (RUN, "model", "epoch=3"),
                    "{what}"
                );
                assert!(detail.contains("chunk "), "{what}: {detail}");
                let msg = e.to_string();
                assert!(
                    msg.contains(RUN) && msg.contains("\"model\"") && msg.contains("epoch=3"),
                    "{msg}"
                );
            }
            other => panic!("{what}: expected CheckpointDamaged, got {other:?}"),
        }
        // The damage stays local: the other checkpoint still loads.
        assert_eq!(
            s.load(&at(&[("epoch", 4)]), "other").unwrap(),
            bytes(8, 50_000, true),
            "{what}"
        );
    };
    // Every byte of the model's frames is covered: lengths, codec, hash,
    // payload and checksum (sampled with a stride to keep the test fast).
    for pos in (16..model_end)
        .step_by(997)
        .chain([16, 17, 20, 21, 60, model_end - 1])
    {
        let mut damaged = original.clone();
        damaged[pos] ^= 0x01;
        std::fs::write(&pack, &damaged).unwrap();
        expect_damaged(&format!("flip at byte {pos}"));
    }
    std::fs::write(&pack, &original[..model_end - 10]).unwrap();
    {
        let s = CheckpointStore::open(dir.path(), RUN).unwrap();
        assert!(
            matches!(s.load(&key, "model"), Err(Error::CheckpointDamaged { .. })),
            "truncated pack"
        );
    }
    std::fs::remove_file(&pack).unwrap();
    {
        let s = CheckpointStore::open(dir.path(), RUN).unwrap();
        let e = s.load(&key, "model").unwrap_err();
        assert!(
            matches!(e, Error::CheckpointDamaged { .. }),
            "missing pack: {e:?}"
        );
        assert!(e.to_string().contains("No such file"), "{e}");
    }
    std::fs::write(&pack, &original).unwrap();
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    assert_eq!(s.load(&key, "model").unwrap(), data);
}

#[test]
fn gc_drops_only_unreferenced_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let opts = CheckpointOptions {
        pack_target_bytes: 1 << 20,
        ..Default::default()
    };
    let s = CheckpointStore::open_with(dir.path(), RUN, opts).unwrap();
    let keep = bytes(1, 3 << 20, true);
    s.save(&at(&[("epoch", 0)]), "model", &keep).unwrap();
    s.save(&at(&[("epoch", 1)]), "model", &bytes(2, 3 << 20, true))
        .unwrap();
    s.flush().unwrap();
    assert_eq!(s.gc().unwrap().chunks_removed, 0);
    // Replace epoch 1: its old chunks become garbage.
    let replaced = bytes(3, 1 << 20, true);
    s.save(&at(&[("epoch", 1)]), "model", &replaced).unwrap();
    s.flush().unwrap();
    let before = s.disk_usage().unwrap();
    let stats = s.gc().unwrap();
    let after = s.disk_usage().unwrap();
    eprintln!("gc: {stats:?}, {before:?} → {after:?}");
    assert!(stats.chunks_removed > 100, "{stats:?}");
    assert_eq!(stats.bytes_before, before.pack_bytes);
    assert_eq!(stats.bytes_after, after.pack_bytes);
    assert!(
        after.pack_bytes < before.pack_bytes - (2 << 20),
        "{before:?} → {after:?}"
    );
    assert_eq!(after.chunks, before.chunks - stats.chunks_removed);
    let live: u64 = s.list().unwrap().iter().map(|c| c.stored_bytes).sum();
    // Packs at least half live are kept as they are: at most the two packs
    // where live and dead chunks meet keep some garbage.
    assert!(
        after.pack_bytes <= live + (2 << 20),
        "{after:?} vs {live} live"
    );
    assert_eq!(s.load(&at(&[("epoch", 0)]), "model").unwrap(), keep);
    assert_eq!(s.load(&at(&[("epoch", 1)]), "model").unwrap(), replaced);
    // Writing after a collection works, and nothing more is garbage.
    s.save(&at(&[("epoch", 2)]), "model", &keep).unwrap();
    assert_eq!(s.gc().unwrap().chunks_removed, 0);
    s.close().unwrap();
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    assert_eq!(s.load(&at(&[("epoch", 2)]), "model").unwrap(), keep);
}

#[test]
fn one_process_per_run_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    match CheckpointStore::open(dir.path(), RUN) {
        Err(Error::CheckpointLocked { run, .. }) => assert_eq!(run, RUN),
        other => panic!("expected CheckpointLocked, got {other:?}"),
    }
    for bad in ["", "../escape", ".hidden", "a/b", "sp ace"] {
        assert!(
            matches!(CheckpointStore::open(dir.path(), bad), Err(Error::Input(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(s.save(&[], "", b"x"), Err(Error::Input(_))));
    assert!(matches!(
        s.save(&at(&[("", 1)]), "m", b"x"),
        Err(Error::Input(_))
    ));
    let bad = CheckpointOptions {
        compression: Some(99),
        ..Default::default()
    };
    assert!(matches!(
        CheckpointStore::open_with(dir.path(), "other", bad),
        Err(Error::Input(_))
    ));
    assert_eq!(
        loop_path_text(&at(&[("epoch", 3), ("step", -1)])),
        "epoch=3/step=-1"
    );
}

/// After a failed write the store refuses further work until reopened.
#[test]
fn a_failed_write_poisons_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    s.gc().unwrap(); // starts the writer: it will create pack 1
                     // Occupy the name of the pack the writer is about to create.
    std::fs::create_dir(s.path().join("packs").join("0000000001.pack")).unwrap();
    s.save(&at(&[("epoch", 0)]), "model", b"abc").unwrap();
    let e = s.flush().unwrap_err();
    assert!(matches!(e, Error::Poisoned(_)), "{e:?}");
    assert!(
        e.to_string().contains("0000000001.pack") && e.to_string().contains(RUN),
        "{e}"
    );
    assert!(matches!(
        s.save(&at(&[("epoch", 1)]), "model", b"abc"),
        Err(Error::Poisoned(_))
    ));
    assert!(matches!(
        s.load(&at(&[("epoch", 0)]), "model"),
        Err(Error::Poisoned(_))
    ));
    assert!(s.close().is_err());
    std::fs::remove_dir(
        dir.path()
            .join("checkpoints")
            .join(RUN)
            .join("packs")
            .join("0000000001.pack"),
    )
    .unwrap();
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    assert!(matches!(
        s.load(&at(&[("epoch", 0)]), "model"),
        Err(Error::CheckpointMissing { .. })
    ));
    s.save(&at(&[("epoch", 0)]), "model", b"abc").unwrap();
    assert_eq!(s.load(&at(&[("epoch", 0)]), "model").unwrap(), b"abc");
}

#[test]
fn concurrent_savers() {
    let dir = tempfile::tempdir().unwrap();
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    std::thread::scope(|sc| {
        for t in 0..4u64 {
            let s = &s;
            sc.spawn(move || {
                for i in 0..10 {
                    let data = bytes(t * 100 + i, 50_000 + i as usize * 1000, i % 2 == 0);
                    s.save(&at(&[("epoch", i as i64)]), &format!("obj{t}"), &data)
                        .unwrap();
                }
            });
        }
    });
    for t in 0..4u64 {
        for i in 0..10 {
            let data = bytes(t * 100 + i, 50_000 + i as usize * 1000, i % 2 == 0);
            assert_eq!(
                s.load(&at(&[("epoch", i as i64)]), &format!("obj{t}"))
                    .unwrap(),
                data
            );
        }
    }
    assert_eq!(s.list().unwrap().len(), 40);
}

/// Damage inside the sled index (a manifest, a chunk's index entry), made
/// through sled itself so that sled's own checksums pass: still the named
/// error, never wrong bytes.
#[test]
fn damaged_manifests_and_index_entries_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(9, 100_000, true);
    {
        let s = CheckpointStore::open(dir.path(), RUN).unwrap();
        s.save(&at(&[("epoch", 1)]), "model", &data).unwrap();
        s.save(&at(&[("epoch", 2)]), "model", &data).unwrap();
        s.close().unwrap();
    }
    let index = dir.path().join("checkpoints").join(RUN).join("index");
    /// Rewrites the values of `tree` for which `f(key, value)` says so.
    type Rewrite<'a> = &'a dyn Fn(&[u8], &[u8]) -> Option<Vec<u8>>;
    let edit = |tree: &str, f: Rewrite| {
        let db = open_index(&index);
        let t = db.open_tree(tree).unwrap();
        for kv in t.iter() {
            let (k, v) = kv.unwrap();
            if let Some(nv) = f(&k, &v) {
                t.insert(k, nv).unwrap();
            }
        }
        db.flush().unwrap();
    };
    let damaged = |what: &str, e: Error| match e {
        Error::CheckpointDamaged {
            run,
            object,
            loop_path,
            detail,
        } => {
            assert_eq!(
                (run.as_str(), object.as_str(), loop_path.as_str()),
                (RUN, "model", "epoch=2"),
                "{what}: {detail}"
            );
        }
        other => panic!("{what}: expected CheckpointDamaged, got {other:?}"),
    };

    // The manifest of epoch 2 (the larger key) loses its last byte.
    let last_key = {
        let db = open_index(&index);
        db.open_tree("manifests")
            .unwrap()
            .last()
            .unwrap()
            .unwrap()
            .0
    };
    edit("manifests", &|k, v| {
        (k == &last_key[..]).then(|| v[..v.len() - 1].to_vec())
    });
    {
        let s = CheckpointStore::open(dir.path(), RUN).unwrap();
        damaged(
            "truncated manifest",
            s.load(&at(&[("epoch", 2)]), "model").unwrap_err(),
        );
        // Listing reads the checkpoints' heads, not their manifests: the
        // damaged one is still listed; loading it names the damage.
        let listed: Vec<String> = s.list().unwrap().iter().map(|c| c.loop_path_text()).collect();
        assert_eq!(listed, ["epoch=1", "epoch=2"]);
        assert_eq!(s.load(&at(&[("epoch", 1)]), "model").unwrap(), data);
        assert!(
            s.gc().is_err(),
            "gc must not run past a manifest it cannot read"
        );
    }
    edit("manifests", &|_, _| None);
    // A damaged head is reported by listing, by name.
    edit("heads", &|k, v| (k == &last_key[..]).then(|| v[..v.len() - 1].to_vec()));
    {
        let s = CheckpointStore::open(dir.path(), RUN).unwrap();
        damaged("listing a truncated head", s.list().unwrap_err());
    }

    // Every chunk index entry points 1 byte further. Loads do not read the
    // index (manifests record where their chunks lie), so the checkpoints
    // stored before still load; a new save deduplicates against the
    // damaged entries, and its frames fail to check when it is loaded.
    {
        let s = CheckpointStore::open(dir.path(), RUN).unwrap();
        s.save(&at(&[("epoch", 2)]), "model", &data).unwrap();
        s.close().unwrap();
    }
    edit("chunks", &|_, v| {
        let mut v = v.to_vec();
        v[4] = v[4].wrapping_add(1);
        Some(v)
    });
    let packs_before = packs(index.parent().unwrap());
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    assert_eq!(s.load(&at(&[("epoch", 2)]), "model").unwrap(), data);
    s.save(&at(&[("epoch", 3)]), "model", &data).unwrap();
    match s.load(&at(&[("epoch", 3)]), "model").unwrap_err() {
        Error::CheckpointDamaged {
            loop_path, detail, ..
        } => assert!(
            loop_path == "epoch=3" && detail.contains("chunk "),
            "{loop_path}: {detail}"
        ),
        other => panic!("shifted index entry: expected CheckpointDamaged, got {other:?}"),
    }
    // gc checks the index's copies where the manifests record others:
    // they fail, the manifests' own copies check, so it mends the index
    // entries and points the new manifest at the sound copies.
    let stats = s.gc().unwrap();
    assert_eq!(stats.manifests_rewritten, 1, "{stats:?}");
    assert_eq!(stats.chunks_removed, 0, "{stats:?}");
    assert_eq!(s.load(&at(&[("epoch", 3)]), "model").unwrap(), data);
    drop(s);
    assert_eq!(packs(index.parent().unwrap()), packs_before);
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    for e in 1..=3 {
        assert_eq!(s.load(&at(&[("epoch", e)]), "model").unwrap(), data, "epoch {e}");
    }
    s.close().unwrap();

    // When both copies fail, gc stops and deletes nothing. (Shift the
    // entries again; damage the pack where the manifests point.)
    edit("chunks", &|_, v| {
        let mut v = v.to_vec();
        v[4] = v[4].wrapping_add(1);
        Some(v)
    });
    let pack = packs(index.parent().unwrap()).remove(0);
    let mut bytes = std::fs::read(&pack).unwrap();
    let original = bytes.clone();
    for b in bytes.iter_mut().skip(16) {
        *b ^= 0x5a;
    }
    std::fs::write(&pack, &bytes).unwrap();
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    let e = s.gc().unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(&e, Error::Corrupt { .. })
            && msg.contains("and so does the copy the manifest records")
            && msg.contains("\"model\" at epoch=")
            && msg.contains("gc stopped without deleting anything"),
        "{e:?}"
    );
    drop(s);
    assert_eq!(packs(index.parent().unwrap()), packs_before);
    std::fs::write(&pack, &original).unwrap();
}

/// Empties a run's chunk index, so that only the locations recorded in
/// the manifests can lead a load to its chunks.
fn clear_chunk_index(run_dir: &Path) {
    let db = open_index(&run_dir.join("index"));
    db.open_tree("chunks").unwrap().clear().unwrap();
    db.flush().unwrap();
}

/// gc copies the live chunks of a mostly dead pack to a new pack and points
/// the manifests at the copies before it deletes the old pack: after it,
/// the checkpoint loads from its manifest alone.
#[test]
fn gc_points_manifests_at_the_chunks_it_moves() {
    let dir = tempfile::tempdir().unwrap();
    let opts = CheckpointOptions {
        pack_target_bytes: 1 << 20,
        ..Default::default()
    };
    let keep = bytes(31, 300_000, true);
    let s = CheckpointStore::open_with(dir.path(), RUN, opts).unwrap();
    s.save(&at(&[("epoch", 0)]), "model", &[keep.clone(), bytes(32, 1_500_000, true)].concat())
        .unwrap();
    s.save(&at(&[("epoch", 1)]), "other", &bytes(33, 50_000, true)).unwrap();
    s.flush().unwrap();
    // Replaced by its first 300 KB: the same chunks but the last, now in a
    // pack that is mostly garbage.
    s.save(&at(&[("epoch", 0)]), "model", &keep).unwrap();
    let stats = s.gc().unwrap();
    assert!(stats.packs_rewritten >= 1, "{stats:?}");
    assert!(
        (1..=2).contains(&stats.manifests_rewritten),
        "the model's manifest (and the other's if it moved): {stats:?}"
    );
    s.close().unwrap();
    let run_dir = dir.path().join("checkpoints").join(RUN);
    clear_chunk_index(&run_dir);
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    assert_eq!(s.load(&at(&[("epoch", 0)]), "model").unwrap(), keep);
    assert_eq!(s.load(&at(&[("epoch", 1)]), "other").unwrap(), bytes(33, 50_000, true));
}

/// The state a crash in the middle of a gc leaves: the index points at
/// copies of the chunks in a new pack, the manifests still at the old pack.
/// The next gc checks the copies, points the manifests at them, and only
/// then deletes the old pack.
#[test]
fn gc_mends_manifests_left_at_old_copies_by_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let model = bytes(41, 500_000, true);
    {
        let s = CheckpointStore::open(dir.path(), RUN).unwrap();
        s.save(&at(&[("epoch", 0)]), "model", &model).unwrap();
        s.save(&at(&[("epoch", 1)]), "model", &model).unwrap();
        s.close().unwrap();
    }
    let run_dir = dir.path().join("checkpoints").join(RUN);
    let old = packs(&run_dir);
    assert_eq!(old.len(), 1, "{old:?}");
    // Copy the pack as pack 7 (its header names its id) and point the
    // index at the copy.
    let mut copy = std::fs::read(&old[0]).unwrap();
    copy[12..16].copy_from_slice(&7u32.to_le_bytes());
    std::fs::write(run_dir.join("packs").join("0000000007.pack"), copy).unwrap();
    {
        let db = open_index(&run_dir.join("index"));
        let chunks = db.open_tree("chunks").unwrap();
        for kv in chunks.iter() {
            let (k, v) = kv.unwrap();
            let mut v = v.to_vec();
            v[..4].copy_from_slice(&7u32.to_le_bytes());
            chunks.insert(k, v).unwrap();
        }
        db.flush().unwrap();
    }
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    let stats = s.gc().unwrap();
    assert_eq!((stats.manifests_rewritten, stats.packs_deleted), (2, 1), "{stats:?}");
    assert_eq!(packs(&run_dir), vec![run_dir.join("packs").join("0000000007.pack")]);
    s.close().unwrap();
    clear_chunk_index(&run_dir);
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    assert_eq!(s.load(&at(&[("epoch", 0)]), "model").unwrap(), model);
    assert_eq!(s.load(&at(&[("epoch", 1)]), "model").unwrap(), model);
}

/// Loads and recipes take chunk locations from the manifests (format
/// version 2): with the chunk index emptied they still read every
/// checkpoint, deduplicated ones included. gc, whose source of truth is the
/// index, then refuses to run rather than delete packs that manifests point
/// into.
#[test]
fn loads_and_recipes_read_no_chunk_index_entry() {
    use flor_store::checkpoint::load_recipe;
    let dir = tempfile::tempdir().unwrap();
    let model = bytes(21, 400_000, true);
    let optim = bytes(22, 100_000, false);
    {
        let s = CheckpointStore::open(dir.path(), RUN).unwrap();
        s.save(&at(&[("epoch", 0)]), "model", &model).unwrap();
        s.save(&at(&[("epoch", 0)]), "optim", &optim).unwrap();
        s.flush().unwrap();
        // Every chunk of this one is already stored: all deduplicated.
        s.save(&at(&[("epoch", 1)]), "model", &model).unwrap();
        s.close().unwrap();
    }
    let run_dir = dir.path().join("checkpoints").join(RUN);
    {
        let s = CheckpointStore::open(dir.path(), RUN).unwrap();
        assert!(s.disk_usage().unwrap().chunks > 10);
    }
    clear_chunk_index(&run_dir);
    let packs_before = packs(&run_dir);
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    assert_eq!(s.disk_usage().unwrap().chunks, 0);
    for (e, name, want) in [(0, "model", &model), (0, "optim", &optim), (1, "model", &model)] {
        let key = at(&[("epoch", e)]);
        assert_eq!(&s.load(&key, name).unwrap(), want, "{name} at epoch {e}");
        let recipe = s.recipe(&key, name).unwrap();
        assert_eq!(&load_recipe(&recipe, 2).unwrap(), want, "recipe of {name} at epoch {e}");
    }
    let e = s.gc().unwrap_err();
    assert!(
        matches!(&e, Error::Corrupt { detail, .. } if detail.contains("not in the chunk index")),
        "{e:?}"
    );
    drop(s);
    assert_eq!(packs(&run_dir), packs_before, "gc deleted nothing");
}

/// Opens a run's sled index directly, waiting (up to 3 s) for this
/// process's previous handle to release sled's file lock.
fn open_index(index: &std::path::Path) -> sled::Db {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        match sled::open(index) {
            Ok(db) => return db,
            Err(e)
                if std::time::Instant::now() < deadline
                    && e.to_string().contains("could not acquire lock") =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("cannot open {}: {e}", index.display()),
        }
    }
}

#[test]
fn recipes_read_the_packs_without_the_database() {
    use flor_store::checkpoint::{decode_recipes, encode_recipes, load_recipe, Recipe};
    let dir = tempfile::tempdir().unwrap();
    let key = at(&[("epoch", 2)]);
    let mut data = bytes(11, 5 << 20, true); // large: decoded on several threads
    data.extend(bytes(12, 300_000, false));
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    s.save(&key, "model", &data).unwrap();
    s.save(&key, "empty", b"").unwrap();
    // While the store stays open (it holds the database), the recipe reads
    // the same bytes, here through a recipe file's bytes as a worker gets it.
    let r = s.recipe(&key, "model").unwrap();
    assert_eq!(
        (
            r.run.as_str(),
            r.object.as_str(),
            r.loop_path.clone(),
            r.raw_len
        ),
        (RUN, "model", key.clone(), data.len() as u64)
    );
    let r: Recipe = decode_recipes(&encode_recipes(&[r]).unwrap())
        .unwrap()
        .remove(0);
    assert_eq!(load_recipe(&r, 1).unwrap(), data);
    assert_eq!(load_recipe(&r, 4).unwrap(), data);
    assert_eq!(
        load_recipe(&s.recipe(&key, "empty").unwrap(), 2).unwrap(),
        b""
    );
    assert!(matches!(
        s.recipe(&key, "absent"),
        Err(Error::CheckpointMissing { .. })
    ));
    // A damaged recipe or pack is named, never returned.
    let named = |what: &str, r: &Recipe| match load_recipe(r, 2) {
        Err(Error::CheckpointDamaged {
            run,
            object,
            loop_path,
            detail,
        }) => {
            assert_eq!(
                (run.as_str(), object.as_str(), loop_path.as_str()),
                (RUN, "model", "epoch=2"),
                "{what}: {detail}"
            );
        }
        other => panic!("{what}: expected CheckpointDamaged, got {other:?}"),
    };
    let mut bad = r.clone();
    bad.hash[0] ^= 1;
    named("wrong object hash", &bad);
    let mut bad = r.clone();
    bad.chunks[3].hash = bad.chunks[4].hash;
    named("wrong chunk hash", &bad);
    let mut bad = r.clone();
    bad.chunks[1].offset += 1;
    named("shifted offset", &bad);
    let mut bad = r.clone();
    bad.chunks[0].frame_len = 3;
    named("short frame", &bad);
    let mut bad = r.clone();
    bad.raw_len -= 1;
    named("short object", &bad);
    let mut bad = r.clone();
    bad.chunks.pop();
    named("missing chunk", &bad);
    let mut bad = r.clone();
    bad.chunks[2].pack += 7;
    named("missing pack", &bad);
    let pack = packs(s.path()).remove(0);
    let original = std::fs::read(&pack).unwrap();
    let mut flipped = original.clone();
    let last = flipped.len() - 100;
    flipped[last] ^= 0x10;
    std::fs::write(&pack, &flipped).unwrap();
    named("flipped pack byte", &r);
    std::fs::write(&pack, &original).unwrap();
    assert_eq!(load_recipe(&r, 2).unwrap(), data);

    // A frame whose checksum was recomputed over changed content passes
    // every frame check; the whole-object hash catches it and the chunk
    // at fault is named.
    let c = r.chunks[2].clone();
    let bad_pack = r.packs.join(format!("{:010}.pack", c.pack));
    let original = std::fs::read(&bad_pack).unwrap();
    let mut forged = original.clone();
    let (start, end) = (c.offset as usize, c.offset as usize + c.frame_len as usize);
    forged[end - 10] ^= 0x01; // a payload byte
    let crc = crc32fast::hash(&forged[start + 4..end - 4]);
    forged[end - 4..end].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&bad_pack, &forged).unwrap();
    match load_recipe(&r, 2) {
        Err(Error::CheckpointDamaged { detail, .. }) => assert!(
            detail.starts_with(&format!("chunk 2 of {} (blake3 ", r.chunks.len()))
                && detail.ends_with("content does not match its hash"),
            "{detail}"
        ),
        other => panic!("expected CheckpointDamaged, got {other:?}"),
    }
    std::fs::write(&bad_pack, &original).unwrap();
    s.close().unwrap();
}

#[test]
fn a_reused_buffer_reads_the_same_bytes() {
    use flor_store::checkpoint::load_recipe_into;
    let dir = tempfile::tempdir().unwrap();
    let key = at(&[("epoch", 0)]);
    let data = bytes(21, 1 << 20, true);
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    s.save(&key, "w", &data).unwrap();
    let r = s.recipe(&key, "w").unwrap();
    // A buffer of the same size full of other bytes, a larger one, a
    // smaller one and none: each comes back holding exactly the object.
    for buf in [
        vec![0xAB; data.len()],
        vec![7; data.len() * 2],
        vec![1; 10],
        Vec::new(),
    ] {
        let out = load_recipe_into(&r, 2, buf).unwrap();
        assert_eq!(out.len(), data.len());
        assert!(out == data);
    }
    // Reused in place when its capacity suffices: no new allocation.
    let buf = vec![0u8; data.len()];
    let ptr = buf.as_ptr();
    let out = load_recipe_into(&r, 1, buf).unwrap();
    assert_eq!(out.as_ptr(), ptr);
    assert!(out == data);
    s.close().unwrap();
}

#[test]
fn load_to_writes_the_rest_straight_into_the_destination() {
    use flor_store::checkpoint::load_recipe_to;
    let dir = tempfile::tempdir().unwrap();
    let key = at(&[("epoch", 1)]);
    // A header, 5 MiB of incompressible bytes (raw frames, read with
    // vectored reads on several threads), then compressible ones (zstd).
    let mut data = bytes(31, 100, false);
    data.extend(bytes(32, 5 << 20, true));
    data.extend(bytes(33, 200_000, false));
    let s = CheckpointStore::open(dir.path(), RUN).unwrap();
    s.save(&key, "w", &data).unwrap();
    let r = s.recipe(&key, "w").unwrap();
    // Prefixes inside the first chunk, spanning several chunks, and none.
    for (p, threads) in [(100, 1), (100, 4), (40_000, 2), (0, 2)] {
        let mut dest = vec![0xAA; data.len() - p];
        assert!(
            load_recipe_to(&r, threads, &data[..p], &mut dest).unwrap(),
            "prefix {p}"
        );
        assert!(
            dest == data[p..],
            "prefix {p}, {threads} threads: wrong bytes"
        );
    }
    // Another header or another size: not loaded, the destination untouched.
    let mut other = data[..100].to_vec();
    other[50] ^= 1;
    let mut dest = vec![0xAA; data.len() - 100];
    assert!(!load_recipe_to(&r, 2, &other, &mut dest).unwrap());
    assert!(dest.iter().all(|b| *b == 0xAA));
    let mut short = vec![0xAA; data.len() - 101];
    assert!(!load_recipe_to(&r, 2, &data[..100], &mut short).unwrap());
    assert!(short.iter().all(|b| *b == 0xAA));
    // A frame forged with a valid checksum: the whole-object hash over
    // prefix and destination catches it and names the chunk.
    let c = r.chunks[5].clone();
    let pack = r.packs.join(format!("{:010}.pack", c.pack));
    let original = std::fs::read(&pack).unwrap();
    let mut forged = original.clone();
    let (start, end) = (c.offset as usize, c.offset as usize + c.frame_len as usize);
    forged[end - 10] ^= 0x01;
    let crc = crc32fast::hash(&forged[start + 4..end - 4]);
    forged[end - 4..end].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&pack, &forged).unwrap();
    match load_recipe_to(&r, 2, &data[..100], &mut dest) {
        Err(Error::CheckpointDamaged { detail, .. }) => assert!(
            detail.starts_with(&format!("chunk 5 of {} (blake3 ", r.chunks.len()))
                && detail.ends_with("content does not match its hash"),
            "{detail}"
        ),
        other => panic!("expected CheckpointDamaged, got {other:?}"),
    }
    // A flipped byte fails its frame's checksum, named by pack and offset.
    let mut flipped = original.clone();
    flipped[end - 10] ^= 0x01;
    std::fs::write(&pack, &flipped).unwrap();
    match load_recipe_to(&r, 1, &data[..100], &mut dest) {
        Err(Error::CheckpointDamaged { detail, .. }) => assert!(
            detail.starts_with("chunk 5 of ")
                && detail.contains(&format!("at byte {}", c.offset))
                && detail.ends_with("frame checksum mismatch"),
            "{detail}"
        ),
        other => panic!("expected CheckpointDamaged, got {other:?}"),
    }
    // A pack cut short: the frames from the cut on are missing; the first
    // of them is named (read frame by frame once the vectored read comes
    // up short).
    let cut = end - 10;
    std::fs::write(&pack, &original[..cut]).unwrap();
    // Compressor threads may store chunks out of order: the earliest chunk
    // whose frame no longer fits is the one named.
    let (first_cut, lost) = r
        .chunks
        .iter()
        .enumerate()
        .find(|(_, k)| k.pack == c.pack && (k.offset + u64::from(k.frame_len)) as usize > cut)
        .unwrap();
    match load_recipe_to(&r, 1, &data[..100], &mut dest) {
        Err(Error::CheckpointDamaged { detail, .. }) => assert!(
            detail.starts_with(&format!("chunk {first_cut} of "))
                && detail.contains(&format!("at byte {}", lost.offset)),
            "{detail}"
        ),
        other => panic!("expected CheckpointDamaged, got {other:?}"),
    }
    std::fs::write(&pack, &original).unwrap();
    assert!(load_recipe_to(&r, 2, &data[..100], &mut dest).unwrap());
    assert!(dest == data[100..]);
    s.close().unwrap();
}

/// Loads on other threads while gc rewrites and deletes packs: each load
/// returns the checkpoint's bytes, never a spurious "damaged" from a pack
/// deleted between its manifest read and its pack reads (gc waits for
/// loads in progress, and loads wait for gc).
#[test]
fn loads_during_gc_see_whole_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let opts = CheckpointOptions {
        pack_target_bytes: 1 << 20,
        ..Default::default()
    };
    let s = CheckpointStore::open_with(dir.path(), RUN, opts).unwrap();
    let keep = bytes(51, 300_000, true);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let loader = scope.spawn(|| {
            let mut loads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // Either version of the checkpoint (the long one before its
                // replacement, or `keep`), whole.
                match s.load(&at(&[("epoch", 0)]), "model") {
                    Ok(b) => assert!(
                        b.starts_with(&keep) && [300_000, 1_500_000].contains(&b.len()),
                        "a load returned {} bytes",
                        b.len()
                    ),
                    Err(Error::CheckpointMissing { .. }) => {}
                    Err(e) => panic!("load during gc: {e}"),
                }
                loads += 1;
            }
            loads
        });
        for round in 0..24u64 {
            // A mostly dead pack each round: gc copies the live chunks out
            // and deletes it.
            s.save(&at(&[("epoch", 0)]), "model", &[keep.clone(), bytes(60 + round, 1_200_000, true)].concat())
                .unwrap();
            s.flush().unwrap();
            s.save(&at(&[("epoch", 0)]), "model", &keep).unwrap();
            let stats = s.gc().unwrap();
            assert!(stats.packs_deleted >= 1, "round {round}: {stats:?}");
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let loads = loader.join().unwrap();
        assert!(loads > 24, "{loads} loads");
    });
}
