//! The pivoted view: exact expected tables (issue 3, acceptance 1).

use crate::harness::{assert_table, project, Run, T0};
use flor_core::Value;
use flor_query::arrow::array::{Array, AsArray};
use flor_query::arrow::datatypes::{DataType, Int64Type, TimestampMicrosecondType};
use flor_query::{META_MIXED_TYPES, META_NAME, META_VALUE_TYPE};

/// train.py: `lr` at run level, `loss` per epoch (3 epochs).
fn one_loop_run() -> Run {
    let mut r = Run::new("train.py", 0, 1);
    r.log("lr", 0.01).enter("epoch");
    for e in 0..3 {
        r.iter(e, None).log("loss", 1.0 / f64::powi(2.0, e as i32));
    }
    r.exit("epoch");
    r
}

#[test]
fn one_loop() {
    let (_d, ctx) = project(&[&one_loop_run()]);
    assert_table(
        &ctx.dataframe(&["loss"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-------+------+
        | projid | tstamp              | filename | source  | epoch | loss |
        +--------+---------------------+----------+---------+-------+------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 1.0  |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 1     | 0.5  |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 2     | 0.25 |
        +--------+---------------------+----------+---------+-------+------+",
    );
    // A run-level name joins every row of its run.
    assert_table(
        &ctx.dataframe(&["lr", "loss"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-------+------+------+
        | projid | tstamp              | filename | source  | epoch | lr   | loss |
        +--------+---------------------+----------+---------+-------+------+------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 0.01 | 1.0  |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 1     | 0.01 | 0.5  |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 2     | 0.01 | 0.25 |
        +--------+---------------------+----------+---------+-------+------+------+",
    );
    let df = ctx.dataframe(&["loss"]).unwrap();
    let s = df.schema();
    assert_eq!(s.field_with_name("epoch").unwrap().data_type(), &DataType::Int64);
    let loss = s.field_with_name("loss").unwrap();
    assert_eq!(loss.data_type(), &DataType::Float64);
    assert_eq!(loss.metadata().get(META_NAME).map(String::as_str), Some("loss"));
    assert_eq!(loss.metadata().get(META_VALUE_TYPE).map(String::as_str), Some("float"));
    assert_eq!(loss.metadata().get(META_MIXED_TYPES), None);
}

/// epoch/step nesting: `loss` per step, `acc` per epoch (after the steps).
fn nested_run() -> Run {
    let mut r = Run::new("train.py", 0, 1);
    r.enter("epoch");
    for e in 0..2 {
        r.iter(e, None).enter("step");
        for s in 0..2 {
            r.iter(s, None).log("loss", e as f64 + 0.25 * s as f64);
        }
        r.exit("step").log("acc", 0.5 + 0.125 * e as f64);
    }
    r.exit("epoch");
    r
}

#[test]
fn epoch_step_nesting_names_at_both_depths() {
    let (_d, ctx) = project(&[&nested_run()]);
    assert_table(
        &ctx.dataframe(&["loss", "acc"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-------+------+------+-------+
        | projid | tstamp              | filename | source  | epoch | step | loss | acc   |
        +--------+---------------------+----------+---------+-------+------+------+-------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 0    | 0.0  | 0.5   |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 1    | 0.25 | 0.5   |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 1     | 0    | 1.0  | 0.625 |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 1     | 1    | 1.25 | 0.625 |
        +--------+---------------------+----------+---------+-------+------+------+-------+",
    );
    // Asked the other way round: the outer name first, loops still outermost first.
    assert_table(
        &ctx.dataframe(&["acc", "loss"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-------+------+-------+------+
        | projid | tstamp              | filename | source  | epoch | step | acc   | loss |
        +--------+---------------------+----------+---------+-------+------+-------+------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 0    | 0.5   | 0.0  |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 1    | 0.5   | 0.25 |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 1     | 0    | 0.625 | 1.0  |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 1     | 1    | 0.625 | 1.25 |
        +--------+---------------------+----------+---------+-------+------+-------+------+",
    );
    assert_table(
        &ctx.dataframe(&["acc"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-------+-------+
        | projid | tstamp              | filename | source  | epoch | acc   |
        +--------+---------------------+----------+---------+-------+-------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 0.5   |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 1     | 0.625 |
        +--------+---------------------+----------+---------+-------+-------+",
    );
}

/// infer.py: a loop over documents (strings), pages inside; a second loop
/// whose first value equals its index.
fn documents_run() -> Run {
    let mut r = Run::new("infer.py", 0, 1);
    r.enter("document");
    for (d, (name, pages)) in [("a.pdf", 2i64), ("b.pdf", 1)].into_iter().enumerate() {
        r.iter(d as i64, Some(name)).log("n_pages", pages).enter("page");
        for p in 0..pages {
            r.iter(p, None).log("words", 100 * (d as i64 + 1) + p);
        }
        r.exit("page");
    }
    r.exit("document").enter("shard");
    for (i, v) in ["0", "x"].into_iter().enumerate() {
        r.iter(i as i64, Some(v)).log("rows", 10 + i as i64);
    }
    r.exit("shard");
    r
}

#[test]
fn loop_over_strings() {
    let (_d, ctx) = project(&[&documents_run()]);
    assert_table(
        &ctx.dataframe(&["n_pages"]).unwrap(),
        "
        +--------+---------------------+----------+---------+----------+----------------+---------+
        | projid | tstamp              | filename | source  | document | document_value | n_pages |
        +--------+---------------------+----------+---------+----------+----------------+---------+
        | proj   | 2023-11-14T22:13:20 | infer.py | forward | 0        | a.pdf          | 2       |
        | proj   | 2023-11-14T22:13:20 | infer.py | forward | 1        | b.pdf          | 1       |
        +--------+---------------------+----------+---------+----------+----------------+---------+",
    );
    assert_table(
        &ctx.dataframe(&["words", "n_pages"]).unwrap(),
        "
        +--------+---------------------+----------+---------+----------+----------------+------+-------+---------+
        | projid | tstamp              | filename | source  | document | document_value | page | words | n_pages |
        +--------+---------------------+----------+---------+----------+----------------+------+-------+---------+
        | proj   | 2023-11-14T22:13:20 | infer.py | forward | 0        | a.pdf          | 0    | 100   | 2       |
        | proj   | 2023-11-14T22:13:20 | infer.py | forward | 0        | a.pdf          | 1    | 101   | 2       |
        | proj   | 2023-11-14T22:13:20 | infer.py | forward | 1        | b.pdf          | 0    | 200   | 1       |
        +--------+---------------------+----------+---------+----------+----------------+------+-------+---------+",
    );
    // A value equal to its index is stored as null and read back as the index.
    assert_table(
        &ctx.dataframe(&["rows"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-------+-------------+------+
        | projid | tstamp              | filename | source  | shard | shard_value | rows |
        +--------+---------------------+----------+---------+-------+-------------+------+
        | proj   | 2023-11-14T22:13:20 | infer.py | forward | 0     | 0           | 10   |
        | proj   | 2023-11-14T22:13:20 | infer.py | forward | 1     | x           | 11   |
        +--------+---------------------+----------+---------+-------+-------------+------+",
    );
}

#[test]
fn same_name_at_run_level_and_in_a_loop() {
    let mut r = Run::new("train.py", 0, 1);
    r.log("x", 100).enter("epoch");
    for e in 0..2 {
        r.iter(e, None).log("x", e);
    }
    r.exit("epoch");
    let (_d, ctx) = project(&[&r]);
    assert_table(
        &ctx.dataframe(&["x"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-------+-----+
        | projid | tstamp              | filename | source  | epoch | x   |
        +--------+---------------------+----------+---------+-------+-----+
        | proj   | 2023-11-14T22:13:20 | train.py | forward |       | 100 |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 0   |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 1     | 1   |
        +--------+---------------------+----------+---------+-------+-----+",
    );
}

/// Two scripts of one project: train.py logs `score` per epoch, infer.py per
/// document; both log `model` at run level.
#[test]
fn two_scripts_filename_is_a_dimension() {
    let mut train = Run::new("train.py", 0, 1);
    train.log("model", "resnet").enter("epoch");
    for e in 0..2 {
        train.iter(e, None).log("score", 10 + e);
    }
    train.exit("epoch");
    let mut infer = Run::new("infer.py", 5, 2);
    infer.log("model", "resnet-ft").enter("document");
    for (d, name) in ["a.pdf", "b.pdf"].into_iter().enumerate() {
        infer.iter(d as i64, Some(name)).log("score", 20 + d as i64);
    }
    infer.exit("document");
    let (_d, ctx) = project(&[&train, &infer]);
    assert_table(
        &ctx.dataframe(&["model", "score"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-------+----------+----------------+-----------+-------+
        | projid | tstamp              | filename | source  | epoch | document | document_value | model     | score |
        +--------+---------------------+----------+---------+-------+----------+----------------+-----------+-------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     |          |                | resnet    | 10    |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 1     |          |                | resnet    | 11    |
        | proj   | 2023-11-14T22:13:25 | infer.py | forward |       | 0        | a.pdf          | resnet-ft | 20    |
        | proj   | 2023-11-14T22:13:25 | infer.py | forward |       | 1        | b.pdf          | resnet-ft | 21    |
        +--------+---------------------+----------+---------+-------+----------+----------------+-----------+-------+",
    );
    assert_table(
        &ctx.latest_dataframe(&["model"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-----------+
        | projid | tstamp              | filename | source  | model     |
        +--------+---------------------+----------+---------+-----------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | resnet    |
        | proj   | 2023-11-14T22:13:25 | infer.py | forward | resnet-ft |
        +--------+---------------------+----------+---------+-----------+",
    );
}

#[test]
fn forward_and_replay_side_by_side() {
    let mut fwd = Run::new("train.py", 0, 1);
    fwd.enter("epoch");
    for e in 0..2 {
        fwd.iter(e, None).log("loss", 1.0 / (e as f64 + 1.0));
    }
    fwd.exit("epoch");
    // Hindsight: `grad_norm` recovered for both epochs; `loss` re-logged in epoch 1.
    let mut rep = Run::replay("train.py", 0, 1);
    rep.enter("epoch");
    rep.iter(0, None).log("grad_norm", 3.0);
    rep.iter(1, None).log("grad_norm", 2.0).log("loss", 0.5);
    rep.exit("epoch");
    let (_d, ctx) = project(&[&fwd, &rep]);
    assert_table(
        &ctx.dataframe(&["loss", "grad_norm"]).unwrap(),
        "
        +--------+---------------------+----------+----------------+-------+------+-----------+
        | projid | tstamp              | filename | source         | epoch | loss | grad_norm |
        +--------+---------------------+----------+----------------+-------+------+-----------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward+replay | 0     | 1.0  | 3.0       |
        | proj   | 2023-11-14T22:13:20 | train.py | forward+replay | 1     | 0.5  | 2.0       |
        | proj   | 2023-11-14T22:13:20 | train.py | replay         | 1     | 0.5  | 2.0       |
        +--------+---------------------+----------+----------------+-------+------+-----------+",
    );
    assert_table(
        &ctx.dataframe(&["loss"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-------+------+
        | projid | tstamp              | filename | source  | epoch | loss |
        +--------+---------------------+----------+---------+-------+------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 1.0  |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 1     | 0.5  |
        | proj   | 2023-11-14T22:13:20 | train.py | replay  | 1     | 0.5  |
        +--------+---------------------+----------+---------+-------+------+",
    );
    // The frames stored by both writers are one frame each.
    let n = ctx.sql("SELECT count(*) AS frames FROM loops").unwrap();
    assert_table(
        &n,
        "
        +--------+
        | frames |
        +--------+
        | 2      |
        +--------+",
    );
}

#[test]
fn no_name_pivot_is_one_row_per_run() {
    let mut a = Run::new("train.py", 0, 1);
    a.log("lr", 0.1).log("epochs", 10).log("optimizer", "adam").enter("epoch");
    a.iter(0, None).log("loss", 1.0).exit("epoch");
    let mut b = Run::new("train.py", 10, 2);
    b.log("lr", 0.01).log("epochs", 20).log("optimizer", "sgd").log("seed", 7).log("lr", 0.02);
    // Only loop-level records: no row.
    let mut c = Run::new("infer.py", 20, 3);
    c.enter("document").iter(0, Some("a.pdf")).log("score", 1).exit("document");
    // A run-level value recovered by replay joins the run's row.
    let mut rep = Run::replay("train.py", 0, 1);
    rep.log("n_params", 1234);
    let (_d, ctx) = project(&[&a, &b, &c, &rep]);
    assert_table(
        &ctx.dataframe::<&str>(&[]).unwrap(),
        "
        +--------+---------------------+----------+----------------+------+--------+-----------+----------+------+
        | projid | tstamp              | filename | source         | lr   | epochs | optimizer | n_params | seed |
        +--------+---------------------+----------+----------------+------+--------+-----------+----------+------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward+replay | 0.1  | 10     | adam      | 1234     |      |
        | proj   | 2023-11-14T22:13:30 | train.py | forward        | 0.02 | 20     | sgd       |          | 7    |
        +--------+---------------------+----------+----------------+------+--------+-----------+----------+------+",
    );
    let df = ctx.dataframe::<&str>(&[]).unwrap();
    let types: Vec<DataType> = df.schema().fields().iter().skip(4).map(|f| f.data_type().clone()).collect();
    assert_eq!(types, [DataType::Float64, DataType::Int64, DataType::Utf8, DataType::Int64, DataType::Int64]);
}

#[test]
fn unknown_name_is_an_empty_result() {
    let (_d, ctx) = project(&[&one_loop_run()]);
    assert_table(
        &ctx.dataframe(&["nope"]).unwrap(),
        "
        +--------+--------+----------+--------+------+
        | projid | tstamp | filename | source | nope |
        +--------+--------+----------+--------+------+
        +--------+--------+----------+--------+------+",
    );
    assert_table(
        &ctx.dataframe(&["lr", "nope"]).unwrap(),
        "
        +--------+---------------------+----------+---------+------+------+
        | projid | tstamp              | filename | source  | lr   | nope |
        +--------+---------------------+----------+---------+------+------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0.01 |      |
        +--------+---------------------+----------+---------+------+------+",
    );
    // Names are case-sensitive data, not SQL identifiers.
    assert_eq!(ctx.dataframe(&["LOSS"]).unwrap().num_rows(), 0);
}

#[test]
fn names_are_data() {
    let mut r = Run::new("train.py", 0, 1);
    r.log("value", 1)
        .log("drop table logs; --", true)
        .log("tstamp", 5)
        .log("ünï côdé", 2.5)
        .log("' OR '1'='1", "x")
        .enter("epoch")
        .iter(0, None)
        .log("say \"hi\"", "hello")
        .log("value", 2)
        .exit("epoch");
    let (_d, ctx) = project(&[&r]);
    assert_table(
        &ctx.dataframe(&["value"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-------+-------+
        | projid | tstamp              | filename | source  | epoch | value |
        +--------+---------------------+----------+---------+-------+-------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward |       | 1     |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 2     |
        +--------+---------------------+----------+---------+-------+-------+",
    );
    assert_table(
        &ctx.dataframe(&["say \"hi\"", "drop table logs; --"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-------+----------+---------------------+
        | projid | tstamp              | filename | source  | epoch | say \"hi\" | drop table logs; -- |
        +--------+---------------------+----------+---------+-------+----------+---------------------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | hello    | true                |
        +--------+---------------------+----------+---------+-------+----------+---------------------+",
    );
    assert_table(
        &ctx.dataframe(&["' OR '1'='1", "ünï côdé"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-------------+----------+
        | projid | tstamp              | filename | source  | ' OR '1'='1 | ünï côdé |
        +--------+---------------------+----------+---------+-------------+----------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | x           | 2.5      |
        +--------+---------------------+----------+---------+-------------+----------+",
    );
    // A name equal to a fixed column keeps its exact name in the metadata.
    let df = ctx.dataframe(&["tstamp"]).unwrap();
    assert_table(
        &df,
        "
        +--------+---------------------+----------+---------+----------+
        | projid | tstamp              | filename | source  | tstamp_2 |
        +--------+---------------------+----------+---------+----------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 5        |
        +--------+---------------------+----------+---------+----------+",
    );
    assert_eq!(df.schema().field(4).metadata().get(META_NAME).map(String::as_str), Some("tstamp"));
    // Nothing was dropped.
    assert_eq!(ctx.sql("SELECT count(*) FROM logs").unwrap().num_rows(), 1);
    assert_eq!(ctx.dataframe(&["drop table logs; --"]).unwrap().num_rows(), 1);
}

#[test]
fn mixed_types_become_text_that_says_so() {
    let mut a = Run::new("train.py", 0, 1);
    a.log("m", 1).log("n", 1).log("j", Value::json("[1, 2]").unwrap()).log("b", true);
    let mut b = Run::new("train.py", 10, 2);
    b.log("m", "one").log("n", 2.5).log("j", Value::json("{\"a\": 1}").unwrap()).log("b", false);
    let (_d, ctx) = project(&[&a, &b]);
    let df = ctx.dataframe(&["m", "n", "j", "b"]).unwrap();
    assert_table(
        &df,
        "
        +--------+---------------------+----------+---------+-----+-----+----------+-------+
        | projid | tstamp              | filename | source  | m   | n   | j        | b     |
        +--------+---------------------+----------+---------+-----+-----+----------+-------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 1   | 1.0 | [1, 2]   | true  |
        | proj   | 2023-11-14T22:13:30 | train.py | forward | one | 2.5 | {\"a\": 1} | false |
        +--------+---------------------+----------+---------+-----+-----+----------+-------+",
    );
    let s = df.schema();
    let meta = |name: &str, key: &str| s.field_with_name(name).unwrap().metadata().get(key).cloned();
    assert_eq!(s.field_with_name("m").unwrap().data_type(), &DataType::Utf8);
    assert_eq!(meta("m", META_MIXED_TYPES).as_deref(), Some("int,str"));
    assert_eq!(s.field_with_name("n").unwrap().data_type(), &DataType::Float64);
    assert_eq!(meta("n", META_MIXED_TYPES).as_deref(), Some("int,float"));
    assert_eq!(meta("j", META_VALUE_TYPE).as_deref(), Some("json"));
    assert_eq!(meta("j", META_MIXED_TYPES), None);
    assert_eq!(s.field_with_name("b").unwrap().data_type(), &DataType::Boolean);
}

#[test]
fn runs_with_the_same_tstamp_stay_apart() {
    let mut a = Run::new("train.py", 0, 1);
    a.log("lr", 0.1).enter("epoch").iter(0, None).log("loss", 1.0).exit("epoch");
    let mut b = Run::new("train.py", 0, 2);
    b.log("lr", 0.2).enter("epoch").iter(0, None).log("loss", 1.0).exit("epoch");
    let (_d, ctx) = project(&[&a, &b]);
    assert_table(
        &ctx.dataframe(&["lr", "loss"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-------+-----+------+
        | projid | tstamp              | filename | source  | epoch | lr  | loss |
        +--------+---------------------+----------+---------+-------+-----+------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 0.1 | 1.0  |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 0.2 | 1.0  |
        +--------+---------------------+----------+---------+-------+-----+------+",
    );
    // Equal rows of two runs are not collapsed.
    assert_eq!(ctx.dataframe(&["loss"]).unwrap().num_rows(), 2);
}

#[test]
fn repeated_logs_in_one_iteration_keep_log_order_and_drop_exact_duplicates() {
    let mut r = Run::new("train.py", 0, 1);
    r.enter("epoch").iter(0, None);
    for v in [3, 1, 3, 2] {
        r.log("batch_loss", v);
    }
    r.exit("epoch");
    let (_d, ctx) = project(&[&r]);
    assert_table(
        &ctx.dataframe(&["batch_loss"]).unwrap(),
        "
        +--------+---------------------+----------+---------+-------+------------+
        | projid | tstamp              | filename | source  | epoch | batch_loss |
        +--------+---------------------+----------+---------+-------+------------+
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 3          |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 1          |
        | proj   | 2023-11-14T22:13:20 | train.py | forward | 0     | 2          |
        +--------+---------------------+----------+---------+-------+------------+",
    );
}

/// Two runs, 40,000 steps each (80,000 rows: the key columns are built on a
/// second thread past 65,536 rows): every row exact, in order.
#[test]
fn a_large_pivot_is_exact_row_by_row() {
    const STEPS: i64 = 40_000;
    let mut runs = Vec::new();
    for id in 1..=2u64 {
        let mut r = Run::new(if id == 1 { "a.py" } else { "b.py" }, id as i64, id);
        r.enter("step");
        for s in 0..STEPS {
            r.iter(s, None).log("loss", s * 10 + id as i64);
        }
        r.exit("step");
        runs.push(r);
    }
    let (_d, ctx) = project(&runs.iter().collect::<Vec<_>>());
    let df = ctx.dataframe(&["loss"]).unwrap();
    assert_eq!(df.num_rows(), 2 * STEPS as usize);
    let schema = df.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["projid", "tstamp", "filename", "source", "step", "loss"]);
    let text = |c: &str| df.column_by_name(c).unwrap().as_string::<i32>().clone();
    let int = |c: &str| df.column_by_name(c).unwrap().as_primitive::<Int64Type>().clone();
    let ts = df.column_by_name("tstamp").unwrap().as_primitive::<TimestampMicrosecondType>().clone();
    let (projid, filename, source, step, loss) = (text("projid"), text("filename"), text("source"), int("step"), int("loss"));
    for row in 0..df.num_rows() {
        let id = row as i64 / STEPS + 1;
        let s = row as i64 % STEPS;
        assert_eq!(projid.value(row), "proj");
        assert_eq!(ts.value(row), T0 + id * 1_000_000);
        assert_eq!(filename.value(row), if id == 1 { "a.py" } else { "b.py" });
        assert_eq!(source.value(row), "forward");
        assert_eq!((step.is_valid(row), step.value(row)), (true, s));
        assert_eq!((loss.is_valid(row), loss.value(row)), (true, s * 10 + id));
    }
}

/// `dataframe_with(…, LargeUtf8)` is `dataframe(…)` with every text column
/// as `LargeUtf8`: the same values, labels and field metadata (loop values,
/// text and mixed names, replayed sources, `latest`, the run-level pivot).
#[test]
fn large_text_columns_hold_the_same_table() {
    use flor_query::arrow::compute::cast;
    use flor_query::TextType;
    let mut fwd = Run::new("train.py", 20, 3);
    fwd.log("model", "resnet").enter("epoch");
    for e in 0..2 {
        fwd.iter(e, None).log("loss", 1.0 / (e as f64 + 1.0)).log("m", if e == 0 { Value::Int(1) } else { Value::Str("one".into()) });
    }
    fwd.exit("epoch");
    let mut rep = Run::replay("train.py", 20, 3);
    rep.enter("epoch");
    rep.iter(1, None).log("grad_norm", 2.0).log("loss", 0.5);
    rep.exit("epoch");
    let (_d, ctx) = project(&[&documents_run(), &one_loop_run(), &fwd, &rep]);
    let asks: [&[&str]; 6] = [&["n_pages"], &["words", "n_pages"], &["rows"], &["loss", "grad_norm", "m", "model"], &["nothing"], &[]];
    for names in asks {
        for latest in [false, true] {
            let (small, large) = if latest {
                (ctx.latest_dataframe(names).unwrap(), ctx.latest_dataframe_with(names, TextType::LargeUtf8).unwrap())
            } else {
                (ctx.dataframe(names).unwrap(), ctx.dataframe_with(names, TextType::LargeUtf8).unwrap())
            };
            assert_eq!(small.num_rows(), large.num_rows(), "{names:?}");
            assert_eq!(small.num_columns(), large.num_columns(), "{names:?}");
            for (i, (fs, fl)) in small.schema().fields().iter().zip(large.schema().fields()).enumerate() {
                assert_eq!((fs.name(), fs.metadata(), fs.is_nullable()), (fl.name(), fl.metadata(), fl.is_nullable()), "{names:?}");
                let want = if fs.data_type() == &DataType::Utf8 { DataType::LargeUtf8 } else { fs.data_type().clone() };
                assert_eq!(fl.data_type(), &want, "{names:?} {}", fs.name());
                assert_eq!(&cast(small.column(i), &want).unwrap(), large.column(i), "{names:?} {}", fs.name());
            }
        }
    }
    assert_ne!(ctx.dataframe(&["loss"]).unwrap().num_rows(), 0);
}
