//! SQL over `logs`, `loops`, `runs`, `versions` (issue 3, acceptance 2).

use crate::harness::{assert_table, git_project, project, table, Run};
use flor_query::arrow::array::{RecordBatch, StringArray};
use flor_query::arrow::datatypes::{DataType, Field, Schema};
use flor_query::{Error, FlorContext, Tables};
use std::sync::Arc;

fn two_runs() -> (Run, Run) {
    let mut a = Run::new("train.py", 0, 1);
    a.log("lr", 0.5).enter("epoch");
    for e in 0..2 {
        a.iter(e, None).log("loss", 2.0 - e as f64);
    }
    a.exit("epoch");
    let mut b = Run::new("train.py", 10, 2);
    b.log("lr", 0.25).enter("epoch").iter(0, None).log("loss", 4.0).exit("epoch");
    (a, b)
}

#[test]
fn joins_logs_loops_runs_versions() {
    let (a, b) = two_runs();
    let (_d, ctx, commits) = git_project(&[&a, &b]);
    let q = "
        SELECT v.commit_id, r.status, lp.loop_name, lp.iteration, l.value_name, l.value_float
        FROM logs l
        JOIN loops lp ON lp.run_id = l.run_id AND lp.tstamp = l.tstamp AND lp.ctx_id = l.ctx_id
        JOIN runs r ON r.run_id = l.run_id AND r.tstamp = l.tstamp
        JOIN versions v ON v.run_id = l.run_id AND v.tstamp = l.tstamp
        ORDER BY l.tstamp, lp.iteration";
    let got = ctx.sql(q).unwrap();
    let expected = format!(
        "
        +------------------------------------------+-----------+-----------+-----------+------------+-------------+
        | commit_id                                | status    | loop_name | iteration | value_name | value_float |
        +------------------------------------------+-----------+-----------+-----------+------------+-------------+
        | {0} | committed | epoch     | 0         | loss       | 2.0         |
        | {0} | committed | epoch     | 1         | loss       | 1.0         |
        | {1} | committed | epoch     | 0         | loss       | 4.0         |
        +------------------------------------------+-----------+-----------+-----------+------------+-------------+",
        commits[0], commits[1]
    );
    assert_table(&got, &expected);
    // Run-level values per version: an ML engineer's "which code gave which lr".
    let got = ctx
        .sql(
            "SELECT v.commit_id = '{c0}' AS first, l.value_float AS lr FROM logs l
             JOIN versions v USING (tstamp, run_id) WHERE l.value_name = 'lr' ORDER BY l.tstamp"
                .replace("{c0}", &commits[0])
                .as_str(),
        )
        .unwrap();
    assert_table(
        &got,
        "
        +-------+------+
        | first | lr   |
        +-------+------+
        | true  | 0.5  |
        | false | 0.25 |
        +-------+------+",
    );
    let v = ctx.versions().unwrap();
    assert_eq!(v.num_rows(), 2);
    let branch = v.column_by_name("branch").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(branch.value(0), "main");
}

#[test]
fn value_column_is_the_text_form() {
    let mut r = Run::new("train.py", 0, 1);
    r.log("i", 42).log("f", 0.5).log("b", true).log("s", "adam").log("w", 3.0);
    let (_d, ctx) = project(&[&r]);
    assert_table(
        &ctx.sql("SELECT value_name, value_type, value FROM logs ORDER BY seq").unwrap(),
        "
        +------------+------------+-------+
        | value_name | value_type | value |
        +------------+------------+-------+
        | i          | int        | 42    |
        | f          | float      | 0.5   |
        | b          | bool       | true  |
        | s          | str        | adam  |
        | w          | float      | 3.0   |
        +------------+------------+-------+",
    );
    // Typed columns stay typed for arithmetic.
    assert_table(
        &ctx.sql("SELECT sum(value_int) AS si, sum(value_float) AS sf FROM logs").unwrap(),
        "
        +----+-----+
        | si | sf  |
        +----+-----+
        | 42 | 3.5 |
        +----+-----+",
    );
}

#[test]
fn runs_table_and_latest() {
    let (a, b) = two_runs();
    let (_d, ctx) = project(&[&a, &b]);
    let runs = ctx.runs().unwrap();
    assert_eq!(runs.num_rows(), 2);
    let got = flor_query::latest(&runs).unwrap();
    assert_table(
        &ctx.filter(&got, "true").unwrap().project(&[1, 2, 4]).unwrap(),
        "
        +---------------------+------------------+-----------+
        | tstamp              | run_id           | status    |
        +---------------------+------------------+-----------+
        | 2023-11-14T22:13:30 | 0000000000000002 | committed |
        +---------------------+------------------+-----------+",
    );
}

#[test]
fn where_predicate_filters_a_dataframe() {
    let (a, b) = two_runs();
    let (_d, ctx) = project(&[&a, &b]);
    let df = ctx.dataframe(&["lr", "loss"]).unwrap();
    assert_table(
        &ctx.filter(&df, "epoch = 0 AND lr < 0.5").unwrap(),
        "
        +--------+---------------------+----------+---------+-------+------+------+
        | projid | tstamp              | filename | source  | epoch | lr   | loss |
        +--------+---------------------+----------+---------+-------+------+------+
        | proj   | 2023-11-14T22:13:30 | train.py | forward | 0     | 0.25 | 4.0  |
        +--------+---------------------+----------+---------+-------+------+------+",
    );
    // Field metadata survives the filter.
    let f = ctx.filter(&df, "loss > 0").unwrap();
    assert_eq!(f.schema().field_with_name("loss").unwrap().metadata(), df.schema().field_with_name("loss").unwrap().metadata());
    match ctx.filter(&df, "no_such_column > 1") {
        Err(Error::Sql { source, .. }) => assert!(source.to_string().contains("no_such_column"), "{source}"),
        other => panic!("expected a SQL error, got {other:?}"),
    }
}

#[test]
fn bad_sql_is_an_error_with_datafusion_message() {
    let (_d, ctx) = project(&[&two_runs().0]);
    let e = ctx.sql("SELEC * FROM logs").unwrap_err();
    assert!(matches!(e, Error::Sql { .. }), "{e:?}");
    assert!(e.to_string().contains("SELEC"), "{e}");
    let e = ctx.sql("SELECT * FROM nope").unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    // Read-only: the session's tables cannot be dropped or replaced by a query.
    assert!(ctx.sql("DROP TABLE logs").is_err());
    assert!(ctx.sql("CREATE TABLE t AS SELECT 1").is_err());
    assert_eq!(ctx.sql("SELECT count(*) AS n FROM logs").unwrap().num_rows(), 1);
    // information_schema is on: SHOW TABLES lists the four tables and its own.
    assert!(table(&ctx.sql("SHOW TABLES").unwrap()).len() > 4);
}

#[test]
fn a_damaged_segment_is_reported_and_the_rest_is_readable() {
    let (a, b) = two_runs();
    let (dir, _ctx) = project(&[&a, &b]);
    let seg = dir.path().join(".flor/segments");
    let victim = std::fs::read_dir(&seg)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("0000000000000002") && p.to_string_lossy().ends_with(".logs.parquet"))
        .unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let ctx = FlorContext::open(dir.path()).unwrap();
    assert_eq!(ctx.damaged().len(), 1);
    assert!(ctx.damaged()[0].to_string().contains(&victim.file_name().unwrap().to_string_lossy().to_string()), "{}", ctx.damaged()[0]);
    assert_eq!(ctx.dataframe(&["loss"]).unwrap().num_rows(), 2);
}

#[test]
fn a_batch_that_does_not_fit_is_a_table_error() {
    let bad = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("projid", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from(vec!["p"]))],
    )
    .unwrap();
    let e = FlorContext::from_tables(Tables { logs: vec![bad], ..Tables::default() }).unwrap_err();
    assert!(matches!(e, Error::Table { table: "logs", .. }), "{e:?}");
    assert!(e.to_string().contains("tstamp"), "{e}");
}

#[test]
fn live_records_join_the_sealed_ones() {
    let (a, b) = two_runs();
    let (dir, _ctx) = project(&[&a]);
    // `b` is still running: its records come from the writer's snapshot.
    let store = flor_store::store::Store::open(dir.path()).unwrap();
    let mut tables = Tables::from(store.scan().unwrap());
    let live = b.data();
    tables.logs.push(live.logs_batch().unwrap());
    tables.loops.push(live.loops_batch().unwrap());
    let ctx = FlorContext::from_tables(tables).unwrap();
    assert_eq!(ctx.dataframe(&["loss"]).unwrap().num_rows(), 3);
}

#[test]
fn a_sealed_scan_reads_as_the_full_scan() {
    // FlorContext::open keeps the constant columns one value per file; a
    // context over the full scan has them per row. Both must agree.
    let (a, _) = two_runs();
    let mut r = crate::harness::Run::replay("train.py", 0, 1);
    r.enter("epoch").iter(1, None).log("w", 7i64).exit("epoch");
    let (dir, sealed) = project(&[&a, &r]);
    let store = flor_store::store::Store::open(dir.path()).unwrap();
    let full = FlorContext::from_scan(store.scan().unwrap()).unwrap();
    for names in [&["loss", "w"][..], &["w"], &[]] {
        assert_eq!(table(&sealed.dataframe(names).unwrap()), table(&full.dataframe(names).unwrap()), "{names:?}");
    }
    for q in ["SELECT * FROM logs ORDER BY tstamp, source, seq", "SELECT * FROM loops ORDER BY tstamp, ctx_id", "SELECT * FROM runs"] {
        assert_eq!(table(&sealed.sql(q).unwrap()), table(&full.sql(q).unwrap()), "{q}");
    }
    let got = sealed.dataframe(&["loss", "w"]).unwrap();
    assert_table(
        &got,
        "
        +--------+---------------------+----------+----------------+-------+------+---+
        | projid | tstamp              | filename | source         | epoch | loss | w |
        +--------+---------------------+----------+----------------+-------+------+---+
        | proj   | 2023-11-14T22:13:20 | train.py | forward        | 0     | 2.0  |   |
        | proj   | 2023-11-14T22:13:20 | train.py | forward+replay | 1     | 1.0  | 7 |
        +--------+---------------------+----------+----------------+-------+------+---+",
    );
}

#[test]
fn single_seal_runs_with_nested_and_valued_loops_read_as_the_full_scan() {
    // Each run sealed once: its frames are taken a whole file at a time
    // (no per-run map); nested loops, iterated values and run-level names
    // must come out as from the per-row path of a full scan.
    let mut a = Run::new("train.py", 0, 1);
    a.log("lr", 0.5).enter("epoch");
    for e in 0..3 {
        a.iter(e, None).log("acc", e as f64).enter("step");
        for s in 0..4 {
            a.iter(s, if s % 2 == 0 { Some("even") } else { None }).log("loss", (e * 10 + s) as f64);
        }
        a.exit("step");
    }
    a.exit("epoch");
    let mut b = Run::new("eval.py", 5, 2);
    b.enter("batch");
    for s in 0..3 {
        b.iter(s, Some(["x", "y", "z"][s as usize])).log("loss", s);
    }
    b.exit("batch");
    let (dir, sealed) = project(&[&a, &b]);
    let store = flor_store::store::Store::open(dir.path()).unwrap();
    let full = FlorContext::from_scan(store.scan().unwrap()).unwrap();
    for names in [&["loss", "acc"][..], &["loss"], &["acc", "lr"], &[]] {
        let got = sealed.dataframe(names).unwrap();
        assert_eq!(table(&got), table(&full.dataframe(names).unwrap()), "{names:?}");
    }
    assert_eq!(sealed.dataframe(&["loss"]).unwrap().num_rows(), 15);
}
