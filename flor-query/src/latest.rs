//! `latest`: the newest run of each script (FlorDB's `flor.utils.latest`).

use crate::error::{arrow_err, Error, Result};
use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use std::collections::HashMap;

/// Keeps the rows of `batch` whose `tstamp` is the newest among the rows of
/// the same `filename`.
///
/// FlorDB 4.0.1 keeps the newest `tstamp` of the whole frame; flordb keeps
/// one per script, so a pipeline's stages each show their latest run. Two
/// runs of one script with the same newest `tstamp` (µs) are both kept.
///
/// # Errors
/// [`Error::Input`] when `batch` has no `tstamp` column of type
/// `Timestamp(µs)` or no `filename` column of type `Utf8` or `LargeUtf8`.
pub fn latest(batch: &RecordBatch) -> Result<RecordBatch> {
    let tstamp = batch
        .column_by_name("tstamp")
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or_else(|| Error::Input("latest: the table has no tstamp column of type Timestamp(µs)".into()))?;
    let filename = batch.column_by_name("filename");
    let (small, large) = (filename.and_then(|c| c.as_string_opt::<i32>()), filename.and_then(|c| c.as_string_opt::<i64>()));
    if small.is_none() && large.is_none() {
        return Err(Error::Input("latest: the table has no filename column of type Utf8 or LargeUtf8".into()));
    }
    let mut newest: HashMap<Option<&str>, i64> = HashMap::new();
    let file = |i: usize| match (small, large) {
        (Some(a), _) => a.is_valid(i).then(|| a.value(i)),
        (_, Some(a)) => a.is_valid(i).then(|| a.value(i)),
        (None, None) => None,
    };
    for i in 0..batch.num_rows() {
        if tstamp.is_valid(i) {
            let e = newest.entry(file(i)).or_insert(i64::MIN);
            *e = (*e).max(tstamp.value(i));
        }
    }
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|i| Some(tstamp.is_valid(i) && newest.get(&file(i)) == Some(&tstamp.value(i))))
        .collect();
    filter_record_batch(batch, &keep).map_err(arrow_err("the latest rows"))
}
