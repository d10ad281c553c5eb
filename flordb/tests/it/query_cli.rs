//! `flor dataframe|sql|runs|versions|checkpoints` through the real binary, on a project
//! recorded through `flordb::Flor` (issue 3, acceptance 2 and 4).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failing test panics

use crate::common::{opts, repo};
use flordb::query::arrow::array::RecordBatch;
use flordb::query::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use flordb::query::FlorContext;
use flordb::Flor;
use std::path::Path;
use std::process::Output;

/// Two runs of train.py: `lr` at run level, `loss` per step, `acc` per epoch.
fn record(root: &Path) {
    let flor = Flor::open_with(root, opts("train.py")).expect("open");
    for (run, lr) in [0.5, 0.25].into_iter().enumerate() {
        flor.log("lr", lr).expect("log");
        for e in flor.loop_iter("epoch", 0..2) {
            for s in flor.loop_iter("step", 0..2) {
                flor.log("loss", (run * 10 + e * 2 + s) as f64).expect("log");
            }
            flor.log("acc", 0.5 + e as f64 / 4.0).expect("log");
        }
        flor.commit().expect("commit");
    }
}

fn flor(root: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_flor"))
        .arg("--project")
        .arg(root)
        .args(args)
        .output()
        .expect("run flor")
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "exit {:?}, stderr: {}", o.status.code(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).expect("utf-8")
}

/// Exit 1, nothing on stdout, one line on stderr starting with `flor: `.
fn fails(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(1), "stdout: {}", String::from_utf8_lossy(&o.stdout));
    let err = String::from_utf8(o.stderr.clone()).expect("utf-8");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("flor: "), "{err}");
    err
}

#[test]
fn dataframe_as_table_csv_json_and_parquet() {
    let (_d, root) = repo();
    record(&root);
    let table = ok(&flor(&root, &["dataframe", "loss", "acc"]));
    let header = table.lines().nth(1).expect("header");
    for col in ["projid", "tstamp", "filename", "source", "epoch", "step", "loss", "acc"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(table.trim_end().ends_with("(8 rows)"), "{table}");

    let csv = ok(&flor(&root, &["dataframe", "loss", "acc", "--latest", "--format", "csv"]));
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], ["projid", "tstamp", "filename", "source", "epoch", "step", "loss", "acc"]);
    let body: Vec<Vec<&str>> = rows[1..].iter().map(|r| [&r[2..4], &r[4..]].concat()).collect();
    assert_eq!(
        body,
        [
            ["train.py", "forward", "0", "0", "10.0", "0.5"],
            ["train.py", "forward", "0", "1", "11.0", "0.5"],
            ["train.py", "forward", "1", "0", "12.0", "0.75"],
            ["train.py", "forward", "1", "1", "13.0", "0.75"],
        ]
    );

    let json = ok(&flor(&root, &["dataframe", "lr", "--format", "json", "--where", "lr < 0.5"]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["lr"], serde_json::json!(0.25));
    assert_eq!(rows[0]["filename"], serde_json::json!("train.py"));

    // Parquet reads back unchanged: same schema (metadata included), same values.
    let out = root.join("df.parquet");
    ok(&flor(&root, &["dataframe", "loss", "acc", "--format", "parquet", "-o", out.to_str().expect("path")]));
    let file = std::fs::File::open(&out).expect("parquet file");
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).expect("reader").build().expect("build");
    let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>().expect("read");
    let want = FlorContext::open(&root).expect("ctx").dataframe(&["loss", "acc"]).expect("df");
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].columns(), want.columns());
    assert_eq!(batches[0].schema().fields(), want.schema().fields());
}

#[test]
fn unknown_name_is_empty_and_errors_are_one_line() {
    let (_d, root) = repo();
    record(&root);
    let t = ok(&flor(&root, &["dataframe", "nope"]));
    assert!(t.trim_end().ends_with("(0 rows)"), "{t}");
    let e = fails(&flor(&root, &["sql", "SELEC 1"]));
    assert!(e.contains("SELEC"), "{e}");
    let e = fails(&flor(&root, &["dataframe", "loss", "--where", "no_such_col > 1"]));
    assert!(e.contains("no_such_col"), "{e}");
    let e = fails(&flor(&root, &["dataframe", "loss", "--format", "parquet"]));
    assert!(e.contains("-o FILE"), "{e}");
    let e = fails(&flor(&root.join("missing"), &["runs"]));
    assert!(e.contains("missing"), "{e}");
    let plain = tempfile::tempdir().expect("tempdir");
    let e = fails(&flor(plain.path(), &["versions"]));
    assert!(e.contains("not inside a git repository") && e.contains("git init"), "{e}");
    for sub in ["dataframe", "sql", "runs", "versions"] {
        let h = ok(&flor(&root, &[sub, "--help"]));
        assert!(h.contains("--format"), "{sub}: {h}");
    }
}

#[test]
fn sql_joins_all_four_tables_and_lists_runs_and_versions() {
    let (_d, root) = repo();
    record(&root);
    let q = "SELECT r.status, count(DISTINCT v.commit_id) AS versions, count(*) AS records, max(lp.iteration) AS last_step
             FROM logs l
             JOIN loops lp ON lp.tstamp = l.tstamp AND lp.run_id = l.run_id AND lp.ctx_id = l.ctx_id
             JOIN runs r ON r.tstamp = l.tstamp AND r.run_id = l.run_id
             JOIN versions v ON v.tstamp = l.tstamp AND v.run_id = l.run_id
             WHERE l.value_name = 'loss' GROUP BY r.status";
    let csv = ok(&flor(&root, &["sql", q, "--format", "csv"]));
    assert_eq!(csv, "status,versions,records,last_step\ncommitted,2,8,1\n");
    let runs = ok(&flor(&root, &["runs", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&runs).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    let latest = ok(&flor(&root, &["runs", "--latest", "--format", "json"]));
    let l: serde_json::Value = serde_json::from_str(&latest).expect("json");
    assert_eq!(l.as_array().map(Vec::len), Some(1));
    assert_eq!(l[0]["run_id"], v[1]["run_id"]);
    let versions = ok(&flor(&root, &["versions", "--format", "csv", "--where", "branch = 'main'"]));
    assert_eq!(versions.lines().count(), 3, "{versions}");
    assert!(versions.starts_with("projid,tstamp,run_id,filename,commit_id,branch\n"), "{versions}");
}

#[test]
fn checkpoints_lists_every_runs_checkpoints_and_names_a_busy_one() {
    use flordb::store::checkpoint::CheckpointStore;
    let (_d, root) = repo();
    record(&root);
    let flor_dir = root.join(".flor");
    let epoch = |i: i64| vec![("epoch".to_string(), i)];
    {
        let s = CheckpointStore::open(&flor_dir, "1000-00000000000000aa").expect("open");
        for i in 0..3 {
            s.save(&epoch(i), "model", &vec![i as u8; 100_000]).expect("save");
        }
        s.save(&epoch(2), "optimizer", b"adam state").expect("save");
        s.close().expect("close");
    }
    let csv = ok(&flor(&root, &["checkpoints", "--format", "csv"]));
    let mut lines = csv.lines();
    let header = lines.next().expect("header");
    assert!(header.starts_with("run,loop_path,object,iteration,raw_bytes"), "{header}");
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert!(rows.iter().all(|r| r.starts_with("1000-00000000000000aa,")), "{csv}");
    assert_eq!(rows.iter().filter(|r| r.contains(",model,")).count(), 3, "{csv}");
    assert!(rows.iter().any(|r| r.contains(",optimizer,2,10,")), "{csv}");

    let csv = ok(&flor(&root, &["checkpoints", "--format", "csv", "--where", "object = 'model' AND iteration >= 1"]));
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let e = fails(&flor(&root, &["checkpoints", "--latest"]));
    assert!(e.contains("--where"), "{e}");

    // A run whose store a live process holds is named and left out.
    let busy = CheckpointStore::open(&flor_dir, "2000-00000000000000bb").expect("open");
    busy.save(&epoch(0), "model", b"w").expect("save");
    busy.flush().expect("flush");
    let out = flor(&root, &["checkpoints", "--format", "csv"]);
    let csv = ok(&out);
    assert_eq!(csv.lines().count(), 5, "{csv}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2000-00000000000000bb"), "{err}");
    busy.close().expect("close");
}
