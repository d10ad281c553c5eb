//! The `checkpoints` table: which checkpoints exist, as Arrow, for the
//! query layer (issue 4: "which iterations have checkpoints is queryable").

use super::{CheckpointInfo, CheckpointStore};
use crate::{Error, Result};
use arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// Schema of the `checkpoints` table, one row per checkpoint:
///
/// | column | type | meaning |
/// | --- | --- | --- |
/// | `run` | Utf8 | run file stem `<tstamp>-<run_id hex>` |
/// | `loop_path` | Utf8 | canonical loop path ([`super::loop_path_text`]) |
/// | `object` | Utf8 | object name |
/// | `iteration` | Int64, null at run level | the outermost loop's 0-based iteration |
/// | `raw_bytes` | UInt64 | object length in bytes |
/// | `stored_bytes` | UInt64 | pack bytes of its chunks, shared ones in full |
/// | `chunks` | UInt64 | number of chunks |
/// | `new_bytes` | UInt64 | pack bytes it added when written |
/// | `written_at` | Timestamp(µs), UTC | when the save was submitted |
pub fn checkpoints_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        Arc::new(Schema::new(vec![
            Field::new("run", DataType::Utf8, false),
            Field::new("loop_path", DataType::Utf8, false),
            Field::new("object", DataType::Utf8, false),
            Field::new("iteration", DataType::Int64, true),
            Field::new("raw_bytes", DataType::UInt64, false),
            Field::new("stored_bytes", DataType::UInt64, false),
            Field::new("chunks", DataType::UInt64, false),
            Field::new("new_bytes", DataType::UInt64, false),
            Field::new(
                "written_at",
                DataType::Timestamp(TimeUnit::Microsecond, None),
                false,
            ),
        ]))
    })
    .clone()
}

/// One run's checkpoints as a batch of [`checkpoints_schema`].
///
/// # Errors
/// [`Error::Format`] when Arrow rejects the columns (an internal bug).
pub fn checkpoints_batch(run: &str, infos: &[CheckpointInfo]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(infos.iter().map(|_| run))),
        Arc::new(StringArray::from_iter_values(
            infos.iter().map(|i| i.loop_path_text()),
        )),
        Arc::new(StringArray::from_iter_values(
            infos.iter().map(|i| i.object.as_str()),
        )),
        Arc::new(Int64Array::from_iter(infos.iter().map(|i| i.iteration()))),
        Arc::new(UInt64Array::from_iter_values(
            infos.iter().map(|i| i.raw_bytes),
        )),
        Arc::new(UInt64Array::from_iter_values(
            infos.iter().map(|i| i.stored_bytes),
        )),
        Arc::new(UInt64Array::from_iter_values(
            infos.iter().map(|i| i.chunks),
        )),
        Arc::new(UInt64Array::from_iter_values(
            infos.iter().map(|i| i.new_bytes),
        )),
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            infos.iter().map(|i| i.written_at),
        )),
    ];
    RecordBatch::try_new(checkpoints_schema(), columns).map_err(|e| Error::Format {
        path: run.into(),
        detail: e.to_string(),
    })
}

/// The run stems that have a checkpoint directory under `flor_dir`
/// (`<flor_dir>/checkpoints/*`), sorted; empty when there is none.
///
/// # Errors
/// [`Error::Io`] when the directory exists but cannot be read.
pub fn list_runs(flor_dir: &Path) -> Result<Vec<String>> {
    let root = flor_dir.join("checkpoints");
    let rd = match std::fs::read_dir(&root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Io { path: root, source }),
    };
    let mut runs = Vec::new();
    for e in rd {
        let e = e.map_err(|source| Error::Io {
            path: root.clone(),
            source,
        })?;
        if e.path().join("index").is_dir() {
            if let Some(name) = e.file_name().to_str() {
                runs.push(name.to_string());
            }
        }
    }
    runs.sort();
    Ok(runs)
}

/// The checkpoints of every run of a project, from [`checkpoints_table`].
#[derive(Debug)]
pub struct CheckpointsTable {
    /// One row per checkpoint, [`checkpoints_schema`], by run.
    pub batch: RecordBatch,
    /// Runs that could not be listed, with the reason: typically
    /// [`Error::CheckpointLocked`] for a run whose process is still
    /// running (sled admits one process per database), or damage.
    pub unavailable: Vec<(String, Error)>,
}

/// Lists the checkpoints of every run under `flor_dir` (the `.flor`
/// directory) for the query layer's `checkpoints` table. Opens each run's
/// store read-only in effect (no thread is started, nothing is written
/// but sled's own recovery); a run that cannot be opened is reported in
/// [`CheckpointsTable::unavailable`] instead of failing the whole table.
///
/// # Errors
/// [`Error::Io`] when the checkpoints directory cannot be read.
pub fn checkpoints_table(flor_dir: &Path) -> Result<CheckpointsTable> {
    let mut batches = Vec::new();
    let mut unavailable = Vec::new();
    for run in list_runs(flor_dir)? {
        let listed = CheckpointStore::open(flor_dir, &run).and_then(|s| s.list_batch());
        match listed {
            Ok(b) => batches.push(b),
            Err(e) => unavailable.push((run, e)),
        }
    }
    let batch = arrow::compute::concat_batches(&checkpoints_schema(), &batches).map_err(|e| {
        Error::Format {
            path: flor_dir.join("checkpoints"),
            detail: e.to_string(),
        }
    })?;
    Ok(CheckpointsTable { batch, unavailable })
}
