//! Arrow schemas of the sealed tables, column by column in docs/FORMAT.md.

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::{Arc, OnceLock};

/// The format version written into every manifest and Parquet footer.
///
/// 2: sealed files leave out the columns constant within a seal (`projid`,
/// `tstamp`, `run_id`, `filename`, and `source` of `logs`) and carry them in
/// the footer metadata. 1: every column stored. Both are read.
pub const FORMAT_VERSION: u32 = 2;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

/// Key columns shared by every table: `projid, tstamp, run_id, filename`.
fn key_fields() -> Vec<Field> {
    vec![
        Field::new("projid", DataType::Utf8, false),
        Field::new("tstamp", ts(), false),
        Field::new("run_id", DataType::Utf8, false),
        Field::new("filename", DataType::Utf8, false),
    ]
}

/// `logs`: one row per logged value.
///
/// `projid, tstamp, run_id, filename, ctx_id (u64, 0 = run level), seq (u64,
/// order within the seal), value_name, value_type (int|float|bool|str|json|
/// repr), value_int, value_float, value_bool, value_text (str/json/repr),
/// source (forward|replay)`. Exactly one `value_*` column is non-null.
pub fn logs() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let mut f = key_fields();
        f.extend([
            Field::new("ctx_id", DataType::UInt64, false),
            Field::new("seq", DataType::UInt64, false),
            Field::new("value_name", DataType::Utf8, false),
            Field::new("value_type", DataType::Utf8, false),
            Field::new("value_int", DataType::Int64, true),
            Field::new("value_float", DataType::Float64, true),
            Field::new("value_bool", DataType::Boolean, true),
            Field::new("value_text", DataType::Utf8, true),
            Field::new("source", DataType::Utf8, false),
        ]);
        Arc::new(Schema::new(f))
    })
    .clone()
}

/// `loops`: one row per loop iteration (loop context frame).
///
/// `projid, tstamp, run_id, filename, ctx_id, p_ctx_id (0 = outermost),
/// loop_name, iteration (0-based), loop_value (null when equal to the index),
/// duration_s (wall seconds of the iteration; null when it did not finish)`.
pub fn loops() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let mut f = key_fields();
        f.extend([
            Field::new("ctx_id", DataType::UInt64, false),
            Field::new("p_ctx_id", DataType::UInt64, false),
            Field::new("loop_name", DataType::Utf8, false),
            Field::new("iteration", DataType::Int64, false),
            Field::new("loop_value", DataType::Utf8, true),
            Field::new("duration_s", DataType::Float64, true),
        ]);
        Arc::new(Schema::new(f))
    })
    .clone()
}

/// `runs`: one row per run (written by the forward process only).
///
/// `projid, tstamp, run_id, filename, status (committed|interrupted),
/// ended_at, n_records, setup_s (seconds before the first outer loop),
/// teardown_s (seconds after the last outer loop), wall_s, args (JSON object
/// of the run's `arg` values)`.
pub fn runs() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let mut f = key_fields();
        f.extend([
            Field::new("status", DataType::Utf8, false),
            Field::new("ended_at", ts(), false),
            Field::new("n_records", DataType::UInt64, false),
            Field::new("setup_s", DataType::Float64, true),
            Field::new("teardown_s", DataType::Float64, true),
            Field::new("wall_s", DataType::Float64, true),
            Field::new("args", DataType::Utf8, false),
        ]);
        Arc::new(Schema::new(f))
    })
    .clone()
}
