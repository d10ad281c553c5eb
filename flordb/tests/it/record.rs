//! The durable record path (issue 2): values, names, loops, runs, crash,
//! concurrency, corruption and git behaviour, through the real store.

use crate::common::{child, child_prioritized, opts, repo};
use flordb::store::arrow::array::{AsArray, RecordBatch};
use flordb::store::arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType, UInt64Type};
use flordb::store::store::Store;
use flordb::{Flor, Value};
use std::collections::HashMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

/// Decodes every `logs` row back into `(value_name, Value)`, in seq order per run.
fn logged(root: &std::path::Path) -> Vec<(String, Value)> {
    let scan = Store::open(root).expect("open").scan().expect("scan");
    assert!(scan.damaged.is_empty(), "damaged: {:?}", scan.damaged);
    let mut out = Vec::new();
    for b in &scan.logs {
        out.extend(decode(b));
    }
    out
}

fn decode(b: &RecordBatch) -> Vec<(String, Value)> {
    let col = |n: &str| b.column_by_name(n).unwrap_or_else(|| panic!("column {n}"));
    let names = col("value_name").as_string::<i32>();
    let types = col("value_type").as_string::<i32>();
    let ints = col("value_int").as_primitive::<Int64Type>();
    let floats = col("value_float").as_primitive::<Float64Type>();
    let bools = col("value_bool").as_boolean();
    let texts = col("value_text").as_string::<i32>();
    (0..b.num_rows())
        .map(|i| {
            let v = match types.value(i) {
                "int" => Value::Int(ints.value(i)),
                "float" => Value::Float(floats.value(i)),
                "bool" => Value::Bool(bools.value(i)),
                "str" => Value::Str(texts.value(i).into()),
                "json" => Value::Json(texts.value(i).into()),
                "repr" => Value::Repr(texts.value(i).into()),
                t => panic!("type {t}"),
            };
            (names.value(i).to_owned(), v)
        })
        .collect()
}

#[test]
fn every_value_kind_round_trips_exactly() {
    let (_d, root) = repo();
    let big = "x".repeat(5 * 1024 * 1024);
    let values = vec![
        ("nan", Value::Float(f64::NAN)),
        ("inf", Value::Float(f64::INFINITY)),
        ("-inf", Value::Float(f64::NEG_INFINITY)),
        ("denormal", Value::Float(5e-324)),
        ("neg_zero", Value::Float(-0.0)),
        ("max_int", Value::Int(i64::MAX)),
        ("min_int", Value::Int(i64::MIN)),
        ("yes", Value::Bool(true)),
        ("big", Value::Str(big.clone())),
        ("nul", Value::Str("a\0b\nc\r\nd".into())),
        ("empty", Value::Str(String::new())),
        ("nested", Value::json(r#"{"a": [1, 2.5, {"b": null, "c": "d"}], "e": true}"#).expect("json")),
        ("obj", Value::Repr("<object at 0x1>".into())),
    ];
    {
        let flor = Flor::open_with(&root, opts("train.py")).expect("open");
        for (n, v) in &values {
            flor.log(n, v.clone()).expect("log");
        }
        flor.commit().expect("commit").expect("a run was sealed");
    }
    let got = logged(&root);
    assert_eq!(got.len(), values.len());
    for ((gn, gv), (n, v)) in got.iter().zip(&values) {
        assert_eq!(gn, n);
        assert_eq!(gv, v, "{n} did not round-trip");
    }
    // NaN's equality above is by bits; say it plainly too.
    assert!(matches!(got[0].1, Value::Float(f) if f.is_nan()));
}

#[test]
fn names_are_ordinary_data_and_empty_is_an_error() {
    let (_d, root) = repo();
    let names = ["value", "say \"hi\"", "it's", "a name with spaces", "ünïcødé λ", "drop table logs; --", "tstamp"];
    {
        let flor = Flor::open_with(&root, opts("train.py")).expect("open");
        for (i, n) in names.iter().enumerate() {
            flor.log(n, i as i64).expect("log");
        }
        let err = flor.log("", 1).expect_err("empty name must fail");
        assert_eq!(err.to_string(), "a logged value name must not be empty");
    }
    let got = logged(&root);
    let want: Vec<(String, Value)> = names.iter().enumerate().map(|(i, n)| (n.to_string(), Value::Int(i as i64))).collect();
    assert_eq!(got, want);
}

#[test]
fn loops_nest_three_deep_and_chain_to_the_outermost() {
    let (_d, root) = repo();
    {
        let flor = Flor::open_with(&root, opts("train.py")).expect("open");
        for e in flor.loop_iter("epoch", 0..2) {
            for s in flor.loop_iter("step", 0..3) {
                for m in flor.loop_iter("micro", 0..2) {
                    flor.log("x", (e * 100 + s * 10 + m) as i64).expect("log");
                }
            }
        }
    }
    let scan = Store::open(&root).expect("open").scan().expect("scan");
    let loops = &scan.loops[0];
    assert_eq!(loops.num_rows(), 2 + 6 + 12);
    let ctx = loops.column_by_name("ctx_id").expect("ctx").as_primitive::<UInt64Type>();
    let parent = loops.column_by_name("p_ctx_id").expect("p").as_primitive::<UInt64Type>();
    let name = loops.column_by_name("loop_name").expect("n").as_string::<i32>();
    let iter = loops.column_by_name("iteration").expect("i").as_primitive::<Int64Type>();
    let frames: HashMap<u64, (u64, String, i64)> =
        (0..loops.num_rows()).map(|i| (ctx.value(i), (parent.value(i), name.value(i).to_owned(), iter.value(i)))).collect();
    let logs = &scan.logs[0];
    let lctx = logs.column_by_name("ctx_id").expect("ctx").as_primitive::<UInt64Type>();
    let vals = logs.column_by_name("value_int").expect("v").as_primitive::<Int64Type>();
    assert_eq!(logs.num_rows(), 12);
    for i in 0..logs.num_rows() {
        // Walk the chain from the innermost frame to the outermost.
        let mut path = Vec::new();
        let mut c = lctx.value(i);
        while c != 0 {
            let (p, n, it) = frames.get(&c).expect("frame exists").clone();
            path.push((n, it));
            c = p;
        }
        path.reverse();
        let v = vals.value(i);
        assert_eq!(path, vec![("epoch".into(), v / 100), ("step".into(), v / 10 % 10), ("micro".into(), v % 10)]);
    }
}

#[test]
fn two_runs_in_the_same_second_get_different_tstamps() {
    let (_d, root) = repo();
    let flor = Flor::open_with(&root, opts("train.py")).expect("open");
    flor.log("a", 1).expect("log");
    let first = flor.run().expect("run");
    flor.commit().expect("commit");
    flor.log("a", 2).expect("log");
    let second = flor.run().expect("run");
    flor.commit().expect("commit");
    assert!(second.tstamp > first.tstamp, "{first:?} vs {second:?}");
    assert_ne!(first.run_id, second.run_id);
    let scan = Store::open(&root).expect("open").scan().expect("scan");
    let mut ts: Vec<i64> = scan.runs.iter().map(|b| b.column_by_name("tstamp").expect("t").as_primitive::<TimestampMicrosecondType>().value(0)).collect();
    ts.sort();
    assert_eq!(ts, vec![first.tstamp, second.tstamp]);
}

#[test]
fn a_query_only_session_creates_no_run() {
    let (_d, root) = repo();
    drop(Flor::open_with(&root, opts("train.py")).expect("open"));
    assert!(!root.join(".flor").exists());
}

#[test]
fn recording_outside_git_says_how_to_fix_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let flor = Flor::open_with(dir.path(), opts("x.py")).expect("reading needs no repository");
    let err = flor.log("a", 1).expect_err("no repository");
    assert!(err.to_string().contains("run `git init`"), "{err}");
}

#[test]
fn sigkill_loses_at_most_one_flush_interval() {
    let interval = Duration::from_millis(100);
    for trial in 0..20u64 {
        let (_d, root) = repo();
        let mut c = child_prioritized("log_forever", &root).stdout(std::process::Stdio::piped()).spawn().expect("spawn");
        let stdout = c.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("ack ") {
                    let _ = tx.send((Instant::now(), n.parse::<i64>().unwrap_or(0)));
                }
            }
        });
        // Wait for the first ack, then kill at a pseudo-random moment.
        let (_, _) = rx.recv_timeout(Duration::from_secs(60)).expect("child started logging");
        std::thread::sleep(Duration::from_millis(50 + (trial * 37) % 400));
        let killed_at = Instant::now();
        c.kill().expect("SIGKILL");
        c.wait().expect("wait");
        let acked = rx
            .try_iter()
            .filter(|(t, _)| *t + interval <= killed_at)
            .map(|(_, n)| n)
            .max()
            .unwrap_or(0);
        let store = Store::open(&root).expect("reopen recovers");
        assert!(store.recovery_errors().is_empty(), "{:?}", store.recovery_errors());
        let rec = store.recovered().last().expect("the run was recovered");
        assert_eq!(rec.status, flordb::store::segment::RunStatus::Interrupted);
        let scan = store.scan().expect("scan");
        assert!(scan.damaged.is_empty(), "{:?}", scan.damaged);
        let stem = format!("{}", rec.meta.stem());
        let logs: Vec<_> = scan
            .logs
            .iter()
            .zip(0..)
            .filter(|(b, _)| {
                b.column_by_name("run_id").expect("r").as_string::<i32>().value(0) == format!("{:016x}", rec.meta.key.run_id)
            })
            .map(|(b, _)| b)
            .collect();
        let vals: Vec<i64> = logs.iter().flat_map(|b| b.column_by_name("value_int").expect("v").as_primitive::<Int64Type>().values().to_vec()).collect();
        assert!(vals.len() as i64 >= acked, "trial {trial} ({stem}): {} records recovered, {acked} acknowledged before the last interval", vals.len());
        assert!(vals.iter().copied().eq(0..vals.len() as i64), "trial {trial}: records out of order or missing");
        let status = scan.runs.iter().find(|b| b.column_by_name("run_id").expect("r").as_string::<i32>().value(0) == format!("{:016x}", rec.meta.key.run_id)).expect("runs row");
        assert_eq!(status.column_by_name("status").expect("s").as_string::<i32>().value(0), "interrupted");
        assert_eq!(std::fs::read_dir(root.join(".flor/wal")).expect("wal dir").count(), 0, "the WAL was recovered and removed");
    }
}

/// A process opening the store recovers dead writers' WALs while others
/// create theirs: it must never take (and delete) a WAL still being created.
#[test]
fn recovery_never_takes_a_wal_being_created() {
    use flordb::core::{RunKey, Source};
    use flordb::store::wal::{RunMeta, WalWriter};
    let (_d, root) = repo();
    let wal_dir = root.join(".flor/wal");
    std::fs::create_dir_all(&wal_dir).expect("wal dir");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let recoverer = s.spawn(|| {
            let mut opens = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let store = Store::open(&root).expect("open");
                assert!(store.recovered().is_empty(), "recovered a live writer's WAL: {:?}", store.recovered());
                opens += 1;
            }
            opens
        });
        let mut writers = Vec::new();
        for i in 0..300 {
            let meta = RunMeta { projid: "p".into(), filename: "t.py".into(), key: RunKey::new(), source: Source::Forward, writer: i };
            let w = WalWriter::create(&wal_dir, &meta).expect("create");
            let back = w.read_back().expect("the WAL is still where its writer put it");
            assert_eq!(back.meta.as_ref(), Some(&meta));
            writers.push(w);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(recoverer.join().expect("recoverer") > 0);
        assert_eq!(std::fs::read_dir(&wal_dir).expect("ls").count(), 300, "every live WAL survived");
    });
}

/// Waits until no process holds `path`'s lock: a child forked by a
/// concurrent test holds a copy of every descriptor until it execs.
fn wait_unlocked(path: &std::path::Path) {
    let t0 = Instant::now();
    while !matches!(flordb::store::wal::claim(path), Ok(Some(_))) {
        assert!(t0.elapsed() < Duration::from_secs(10), "{} stayed locked", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A `.wal.new` (a WAL whose creation a kill interrupted, or whose rename
/// a power failure lost) is recovered only when nobody holds it and it is
/// over a minute old: an empty one is removed, one with its `Begin` is
/// sealed as an interrupted run.
#[test]
fn a_stale_half_created_wal_is_recovered_and_a_fresh_one_kept() {
    let (_d, root) = repo();
    let wal_dir = root.join(".flor/wal");
    std::fs::create_dir_all(&wal_dir).expect("wal dir");
    let fresh = wal_dir.join("1-00000000000000aa.00000000000000bb.wal.new");
    let stale = wal_dir.join("2-00000000000000aa.00000000000000bb.wal.new");
    std::fs::write(&fresh, b"FLOR").expect("write");
    let f = std::fs::File::create(&stale).expect("create");
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(120)).expect("mtime");
    drop(f);
    wait_unlocked(&stale);
    let store = Store::open(&root).expect("open");
    assert!(store.recovered().is_empty() && store.recovery_errors().is_empty());
    assert!(fresh.exists(), "a WAL being created right now is left alone");
    assert!(!stale.exists(), "an abandoned half-created WAL is removed");

    // A complete WAL whose rename was lost comes back as an interrupted run.
    use flordb::core::{RunKey, Source};
    use flordb::store::wal::{RunMeta, WalWriter};
    let meta = RunMeta { projid: "p".into(), filename: "t.py".into(), key: RunKey::new(), source: Source::Forward, writer: 7 };
    let w = WalWriter::create(&wal_dir, &meta).expect("create");
    let renamed = w.path().with_extension("wal.new");
    std::fs::rename(w.path(), &renamed).expect("rename");
    drop(w);
    wait_unlocked(&renamed);
    let f = std::fs::File::options().write(true).open(&renamed).expect("open");
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(120)).expect("mtime");
    drop(f);
    let store = Store::open(&root).expect("reopen");
    assert!(store.recovery_errors().is_empty(), "{:?}", store.recovery_errors());
    assert_eq!(store.recovered().len(), 1, "the run whose rename was lost is recovered");
    assert_eq!(store.recovered()[0].meta.key, meta.key);
    assert_eq!(store.recovered()[0].status, flordb::store::segment::RunStatus::Interrupted);
    assert!(!renamed.exists());
}

#[test]
fn eight_processes_write_one_project_at_once() {
    let (_d, root) = repo();
    let kids: Vec<_> = (0..8).map(|_| child("log_100k", &root).stdout(std::process::Stdio::null()).spawn().expect("spawn")).collect();
    for mut k in kids {
        assert!(k.wait().expect("wait").success());
    }
    let scan = Store::open(&root).expect("open").scan().expect("scan");
    assert!(scan.damaged.is_empty());
    let mut per_run: HashMap<String, Vec<i64>> = HashMap::new();
    for b in &scan.logs {
        let run = b.column_by_name("run_id").expect("r").as_string::<i32>();
        let v = b.column_by_name("value_int").expect("v").as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            per_run.entry(run.value(i).to_owned()).or_default().push(v.value(i));
        }
    }
    assert_eq!(per_run.len(), 8);
    assert_eq!(per_run.values().map(Vec::len).sum::<usize>(), 800_000);
    for vals in per_run.values() {
        assert!(vals.iter().copied().eq(0..100_000), "each run holds 0..100000 exactly once, in order");
    }
    assert_eq!(flordb::store::versions::rows(&root).expect("versions").len(), 8, "8 snapshots on flor.main");
}

#[test]
fn a_flipped_byte_names_the_file_and_other_runs_still_read() {
    let (_d, root) = repo();
    {
        let flor = Flor::open_with(&root, opts("train.py")).expect("open");
        flor.log("a", 1).expect("log");
        flor.commit().expect("commit");
        flor.log("a", 2).expect("log");
        flor.commit().expect("commit");
    }
    let seg_dir = root.join(".flor/segments");
    let mut logs: Vec<_> = std::fs::read_dir(&seg_dir).expect("dir").flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().ends_with(".logs.parquet")).collect();
    logs.sort();
    let victim = &logs[0];
    let mut bytes = std::fs::read(victim).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(victim, bytes).expect("write");
    let scan = Store::open(&root).expect("open").scan().expect("scan");
    assert_eq!(scan.damaged.len(), 1);
    let msg = scan.damaged[0].to_string();
    assert!(msg.contains(&victim.display().to_string()) && msg.contains("checksum mismatch"), "{msg}");
    let vals: Vec<i64> = scan.logs.iter().map(|b| b.column_by_name("value_int").expect("v").as_primitive::<Int64Type>().value(0)).collect();
    assert_eq!(vals, vec![2], "the other run still reads");
}

fn git(root: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git").args(args).current_dir(root).output().expect("git");
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_run_leaves_the_users_repository_exactly_as_it_was() {
    let (_d, root) = repo();
    std::fs::write(root.join("README.md"), "staged change\n").expect("w");
    git(&root, &["add", "README.md"]);
    std::fs::write(root.join("train.py"), "print('unstaged change')\n").expect("w");
    std::fs::write(root.join("notes.txt"), "untracked\n").expect("w");
    std::fs::write(root.join(".gitignore"), "*.log\n").expect("w");
    std::fs::write(root.join("debug.log"), "ignored\n").expect("w");
    let big = vec![7u8; 50 * 1024 * 1024];
    std::fs::write(root.join("weights.bin"), &big).expect("w");
    let before = (
        git(&root, &["rev-parse", "HEAD"]),
        git(&root, &["symbolic-ref", "HEAD"]),
        std::fs::read(root.join(".git/index")).expect("index"),
        git(&root, &["status", "--porcelain"]),
    );
    let committed = {
        let flor = Flor::open_with(&root, opts("train.py")).expect("open");
        flor.log("loss", 0.5).expect("log");
        flor.commit().expect("commit").expect("sealed")
    };
    let after = (
        git(&root, &["rev-parse", "HEAD"]),
        git(&root, &["symbolic-ref", "HEAD"]),
        std::fs::read(root.join(".git/index")).expect("index"),
        git(&root, &["status", "--porcelain"]),
    );
    // .flor/ appears as untracked in status; everything the user had is unchanged.
    assert_eq!(before.0, after.0, "HEAD moved");
    assert_eq!(before.1, after.1, "branch changed");
    assert_eq!(before.2, after.2, "index file changed");
    let after_status: String = after.3.lines().filter(|l| !l.contains(".flor/")).map(|l| format!("{l}\n")).collect();
    assert_eq!(before.3, after_status, "git status changed");

    let snap = committed.snapshot.expect("snapshot");
    assert_eq!(snap.shadow_branch, "flor.main");
    assert_eq!(git(&root, &["rev-parse", "flor.main"]).trim(), snap.commit_id);
    let files = git(&root, &["ls-tree", "-r", "--name-only", "flor.main"]);
    let files: Vec<&str> = files.lines().collect();
    assert!(files.contains(&"train.py") && files.contains(&"notes.txt") && files.contains(&".gitignore"), "{files:?}");
    assert!(!files.contains(&"weights.bin") && !files.contains(&"debug.log"), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with(".flor/segments/") && f.ends_with(".logs.parquet")), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with(".flor/manifests/")), "{files:?}");
    // Segment blobs are written by flordb itself (stored zlib blocks): git
    // reads them back byte for byte and fsck finds nothing wrong.
    for f in files.iter().filter(|f| f.starts_with(".flor/segments/")) {
        let out = std::process::Command::new("git").args(["cat-file", "blob", &format!("flor.main:{f}")]).current_dir(&root).output().expect("git");
        assert!(out.status.success(), "git cat-file {f}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.stdout, std::fs::read(root.join(f)).expect("segment"), "{f} differs in git");
    }
    git(&root, &["fsck", "--strict", "--no-dangling"]);
    assert_eq!(git(&root, &["show", "flor.main:train.py"]), "print('unstaged change')\n", "the snapshot holds the working-tree code");
    assert!(snap.skipped.iter().any(|s| s.path == "weights.bin" && s.reason == flordb::store::versions::SkipReason::TooLarge(50 * 1024 * 1024)));
    let parents = git(&root, &["log", "-1", "--format=%P", "flor.main"]);
    assert_eq!(parents.trim(), before.0.trim(), "first snapshot's parent is HEAD");
}

#[test]
fn detached_head_snapshots_to_a_branch_named_after_the_commit() {
    let (_d, root) = repo();
    let head = git(&root, &["rev-parse", "HEAD"]);
    git(&root, &["checkout", "-q", "--detach"]);
    let flor = Flor::open_with(&root, opts("train.py")).expect("open");
    flor.log("a", 1).expect("log");
    let c = flor.commit().expect("commit").expect("sealed");
    let snap = c.snapshot.expect("snapshot");
    assert_eq!(snap.branch, head.trim()[..12]);
    assert_eq!(git(&root, &["rev-parse", "HEAD"]), head);
}
