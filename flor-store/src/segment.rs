//! Sealed Parquet segments and the manifest that publishes them
//! (DESIGN.md §6, docs/FORMAT.md "segments", "manifests").
//!
//! Sealing one writer's run produces up to three Parquet files in
//! `.flor/segments/` (`<stem>.logs.parquet`, `<stem>.loops.parquet`,
//! `<stem>.runs.parquet`) and then one manifest `.flor/manifests/<stem>.json`
//! that lists them with their byte length and CRC-32. Every file is written
//! to a temporary name, fsynced, renamed, and the directory fsynced; the
//! manifest goes last, so a reader that only trusts manifests never sees a
//! partial seal.

use crate::error::IoContext;
use crate::schema;
use crate::wal::{Batch, RunMeta, RunSummary};
use crate::{Error, Result};
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringArray,
    StringBuilder, TimestampMicrosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use flor_core::{Value, ValueType};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a run ended, stored in `runs.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    /// Sealed by `commit`.
    Committed,
    /// Recovered from the WAL of a process that died.
    Interrupted,
}

impl RunStatus {
    /// `"committed"` or `"interrupted"`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Committed => "committed",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// Everything one writer logged for one run, ready to seal.
#[derive(Debug, Clone)]
pub struct RunData {
    /// The run and writer.
    pub meta: RunMeta,
    /// Names, frames, frame durations and records.
    pub batch: Batch,
    /// Run-level figures (forward writers).
    pub summary: Option<RunSummary>,
}

/// One file listed in a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// `logs`, `loops` or `runs`.
    pub table: String,
    /// File name inside `.flor/segments/`.
    pub name: String,
    /// Length in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the whole file.
    pub crc32: u32,
    /// Row count.
    pub rows: u64,
}

/// The manifest of one seal (JSON, followed by a `crc32:` line over the JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`schema::FORMAT_VERSION`] at write time.
    pub format_version: u32,
    /// The run and writer.
    pub meta: RunMeta,
    /// How the run ended.
    pub status: RunStatus,
    /// The sealed files.
    pub files: Vec<FileEntry>,
}

fn ts_array(v: i64, n: usize) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(vec![v; n]))
}

fn const_str(v: &str, n: usize) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(std::iter::repeat_n(v, n)))
}

/// The columns that are constant within one writer's seal: the key columns
/// `projid, tstamp, run_id, filename` of every table and `source` of `logs`.
/// Sealed files leave them out (format version 2) and carry them in the
/// Parquet footer's key-value metadata; [`read_segment`] puts them back.
const KEY_COLUMNS: [&str; 4] = ["projid", "tstamp", "run_id", "filename"];

/// The constant value of key column `name` (or `source`) for `meta`, as an
/// array of `n` rows; `None` for any other column.
fn constant_column(meta: &RunMeta, name: &str, n: usize) -> Option<ArrayRef> {
    Some(match name {
        "projid" => const_str(&meta.projid, n),
        "tstamp" => ts_array(meta.key.tstamp, n),
        "run_id" => const_str(&format!("{:016x}", meta.key.run_id), n),
        "filename" => const_str(&meta.filename, n),
        "source" => const_str(meta.source.as_str(), n),
        _ => return None,
    })
}

fn is_constant_column(name: &str) -> bool {
    KEY_COLUMNS.contains(&name) || name == "source"
}

/// The schema of a sealed file (format version 2) of the table whose schema
/// is `full`: `full` without the constant columns (`projid`, `tstamp`,
/// `run_id`, `filename`, and `source` of `logs`), in the same order.
pub fn sealed_schema(full: &SchemaRef) -> SchemaRef {
    let fields: Vec<_> = full
        .fields()
        .iter()
        .filter(|f| !is_constant_column(f.name()))
        .cloned()
        .collect();
    Arc::new(Schema::new(fields))
}

/// Completes a batch of `full`'s non-constant columns (in order) with the
/// constant columns of `meta`.
fn with_constants(
    meta: &RunMeta,
    full: &SchemaRef,
    partial: Vec<ArrayRef>,
    n: usize,
    what: &str,
) -> Result<RecordBatch> {
    let mut partial = partial.into_iter();
    let mut cols = Vec::with_capacity(full.fields().len());
    for f in full.fields() {
        match constant_column(meta, f.name(), n) {
            Some(c) => cols.push(c),
            None => cols.push(
                partial
                    .next()
                    .ok_or_else(|| arrow_err(what, format!("column {} missing", f.name())))?,
            ),
        }
    }
    RecordBatch::try_new(full.clone(), cols).map_err(|e| arrow_err(what, e))
}

fn arrow_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Format {
        path: PathBuf::from(what),
        detail: e.to_string(),
    }
}

/// A borrowed view of one writer's run as consecutive [`Batch`]es, in
/// logging order: what the writer thread holds at a seal (its batches as
/// they were written to the WAL, never concatenated), or one [`RunData`].
#[derive(Debug, Clone, Copy)]
pub struct RunParts<'a> {
    /// The run and writer.
    pub meta: &'a RunMeta,
    /// The batches, in order.
    pub batches: &'a [Batch],
    /// Run-level figures (forward writers).
    pub summary: Option<&'a RunSummary>,
}

impl RunData {
    /// This run as a [`RunParts`] view of one batch.
    pub fn parts(&self) -> RunParts<'_> {
        RunParts {
            meta: &self.meta,
            batches: std::slice::from_ref(&self.batch),
            summary: self.summary.as_ref(),
        }
    }

    /// The `logs` rows ([`schema::logs`]).
    ///
    /// # Errors
    /// [`Error::Format`] if Arrow rejects the arrays (an internal bug),
    /// [`Error::Input`] for a record naming an unknown name id.
    pub fn logs_batch(&self) -> Result<RecordBatch> {
        let p = self.parts();
        with_constants(
            &self.meta,
            &schema::logs(),
            p.logs_columns()?,
            p.n_records(),
            "logs batch",
        )
    }

    /// The `loops` rows ([`schema::loops`]), one per distinct `ctx_id`.
    ///
    /// # Errors
    /// [`Error::Format`] if Arrow rejects the arrays (an internal bug).
    pub fn loops_batch(&self) -> Result<RecordBatch> {
        let (cols, n) = self.parts().loops_columns();
        with_constants(&self.meta, &schema::loops(), cols, n, "loops batch")
    }

    /// The one `runs` row ([`schema::runs`]).
    ///
    /// # Errors
    /// [`Error::Format`] if Arrow rejects the arrays (an internal bug).
    pub fn runs_batch(&self, status: RunStatus, ended_at: i64) -> Result<RecordBatch> {
        with_constants(
            &self.meta,
            &schema::runs(),
            self.parts().runs_columns(status, ended_at),
            1,
            "runs batch",
        )
    }

    /// The value types seen per name, for callers that check types early.
    pub fn types_by_name(&self) -> HashMap<String, HashSet<ValueType>> {
        let names = self.parts().names();
        let mut out: HashMap<String, HashSet<ValueType>> = HashMap::new();
        for r in &self.batch.records {
            if let Some(n) = names.get(r.name as usize).copied().flatten() {
                out.entry(n.to_owned())
                    .or_default()
                    .insert(r.value.value_type());
            }
        }
        out
    }
}

impl<'a> RunParts<'a> {
    fn records(&self) -> impl Iterator<Item = &'a flor_core::Record> + 'a {
        let batches = self.batches;
        batches.iter().flat_map(|b| b.records.iter())
    }

    /// Number of records.
    pub fn n_records(&self) -> usize {
        self.batches.iter().map(|b| b.records.len()).sum()
    }

    /// Name ids to names, indexed by id.
    fn names(&self) -> Vec<Option<&'a str>> {
        let batches = self.batches;
        let all = || batches.iter().flat_map(|b| b.names.iter());
        let len = all().map(|(id, _)| *id as usize + 1).max().unwrap_or(0);
        let mut out = vec![None; len];
        for (id, n) in all() {
            out[*id as usize] = Some(n.as_str());
        }
        out
    }

    /// The non-constant `logs` columns, in schema order.
    fn logs_columns(&self) -> Result<Vec<ArrayRef>> {
        let names = self.names();
        let n = self.n_records();
        let mut name_b = StringBuilder::with_capacity(n, n * 8);
        let mut type_b = StringBuilder::with_capacity(n, n * 5);
        let mut int_b = Int64Builder::with_capacity(n);
        let mut float_b = Float64Builder::with_capacity(n);
        let mut bool_b = BooleanBuilder::with_capacity(n);
        let mut text_b = StringBuilder::new();
        for r in self.records() {
            let name = names
                .get(r.name as usize)
                .copied()
                .flatten()
                .ok_or_else(|| {
                    Error::Input(format!("record refers to unknown name id {}", r.name))
                })?;
            name_b.append_value(name);
            type_b.append_value(r.value.value_type().as_str());
            match &r.value {
                Value::Int(v) => int_b.append_value(*v),
                _ => int_b.append_null(),
            }
            match &r.value {
                Value::Float(v) => float_b.append_value(*v),
                _ => float_b.append_null(),
            }
            match &r.value {
                Value::Bool(v) => bool_b.append_value(*v),
                _ => bool_b.append_null(),
            }
            match &r.value {
                Value::Str(s) | Value::Json(s) | Value::Repr(s) => text_b.append_value(s),
                _ => text_b.append_null(),
            }
        }
        Ok(vec![
            Arc::new(UInt64Array::from_iter_values(
                self.records().map(|r| r.ctx_id),
            )),
            Arc::new(UInt64Array::from_iter_values(0..n as u64)),
            Arc::new(name_b.finish()),
            Arc::new(type_b.finish()),
            Arc::new(int_b.finish()),
            Arc::new(float_b.finish()),
            Arc::new(bool_b.finish()),
            Arc::new(text_b.finish()),
        ])
    }

    /// The non-constant `loops` columns, in schema order, and their row
    /// count: one row per distinct `ctx_id` (its first frame, its last
    /// recorded duration).
    fn loops_columns(&self) -> (Vec<ArrayRef>, usize) {
        let n_ends = self.batches.iter().map(|b| b.frame_ends.len()).sum();
        let mut durations: FxHashMap<u64, f64> =
            FxHashMap::with_capacity_and_hasher(n_ends, Default::default());
        durations.extend(
            self.batches
                .iter()
                .flat_map(|b| b.frame_ends.iter().copied()),
        );
        let n_frames = self.batches.iter().map(|b| b.frames.len()).sum();
        let mut seen: FxHashSet<u64> =
            FxHashSet::with_capacity_and_hasher(n_frames, Default::default());
        let frames: Vec<_> = self
            .batches
            .iter()
            .flat_map(|b| b.frames.iter())
            .filter(|f| seen.insert(f.ctx_id))
            .collect();
        let n = frames.len();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from_iter_values(
                frames.iter().map(|f| f.ctx_id),
            )),
            Arc::new(UInt64Array::from_iter_values(
                frames.iter().map(|f| f.p_ctx_id),
            )),
            Arc::new(StringArray::from_iter_values(
                frames.iter().map(|f| f.loop_name.as_str()),
            )),
            Arc::new(arrow::array::Int64Array::from_iter_values(
                frames.iter().map(|f| f.iteration),
            )),
            Arc::new(StringArray::from_iter(
                frames.iter().map(|f| f.loop_value.as_deref()),
            )),
            Arc::new(arrow::array::Float64Array::from_iter(
                frames.iter().map(|f| durations.get(&f.ctx_id).copied()),
            )),
        ];
        (cols, n)
    }

    fn runs_columns(&self, status: RunStatus, ended_at: i64) -> Vec<ArrayRef> {
        let s = self.summary.cloned().unwrap_or_default();
        let args = if s.args.is_empty() {
            "{}".to_string()
        } else {
            s.args.clone()
        };
        vec![
            const_str(status.as_str(), 1),
            ts_array(ended_at, 1),
            Arc::new(UInt64Array::from(vec![self.n_records() as u64])),
            Arc::new(arrow::array::Float64Array::from(vec![s.setup_s])),
            Arc::new(arrow::array::Float64Array::from(vec![s.teardown_s])),
            Arc::new(arrow::array::Float64Array::from(vec![s.wall_s])),
            const_str(&args, 1),
        ]
    }
}

/// Columns stored without zstd: random ids and durations it does not
/// shrink, dictionary-encoded ones whose pages are a few bytes, and the
/// [`DELTA_COLUMNS`]. A reader then makes no zstd context for them (one
/// per column chunk read, about as costly as decompressing the chunk;
/// docs/FORMAT.md, "segments").
const UNCOMPRESSED_COLUMNS: [&str; 8] = [
    "ctx_id",
    "p_ctx_id",
    "duration_s",
    "value_name",
    "value_type",
    "loop_name",
    "seq",
    "iteration",
];

/// Columns stored `PLAIN`, without a dictionary: their values are nearly
/// all distinct (random `ctx_id`s, logged floats), so a dictionary page
/// holds every value once more and decoding goes through it.
const PLAIN_COLUMNS: [&str; 2] = ["ctx_id", "value_float"];

/// Columns stored `DELTA_BINARY_PACKED`, without a dictionary: counters
/// (`seq` is 0, 1, 2, … within a seal; `iteration` counts up within a
/// loop), a few bytes per page instead of a dictionary of every value.
const DELTA_COLUMNS: [&str; 2] = ["seq", "iteration"];

/// Encodes a batch as a Parquet file in memory: zstd level 1 (but for the
/// [`UNCOMPRESSED_COLUMNS`]), the [`PLAIN_COLUMNS`] and [`DELTA_COLUMNS`]
/// without a dictionary, row groups of up to 1,048,576 rows (Parquet's
/// default), the format version and `metadata` in the footer's key-value
/// metadata. String columns carry no min/max statistics (computing them
/// compares every value; flordb reads whole files and never prunes by
/// them), except a column of nulls only, whose statistics (a null count,
/// no values) tell a reader it need not decode it.
///
/// # Errors
/// [`Error::Format`] naming `what` when Parquet fails.
pub fn to_parquet(
    batch: &RecordBatch,
    what: &str,
    metadata: Vec<(String, String)>,
) -> Result<Vec<u8>> {
    use arrow::array::Array;
    use parquet::basic::Encoding;
    use parquet::file::metadata::KeyValue;
    use parquet::file::properties::EnabledStatistics;
    use parquet::schema::types::ColumnPath;
    let mut kv = vec![KeyValue::new(
        "flor.format_version".into(),
        schema::FORMAT_VERSION.to_string(),
    )];
    kv.extend(metadata.into_iter().map(|(k, v)| KeyValue::new(k, v)));
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).map_err(|e| arrow_err(what, e))?,
        ))
        .set_key_value_metadata(Some(kv));
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        let name = f.name().as_str();
        let path = || ColumnPath::from(name);
        if UNCOMPRESSED_COLUMNS.contains(&name) {
            props = props.set_column_compression(path(), Compression::UNCOMPRESSED);
        }
        if PLAIN_COLUMNS.contains(&name) {
            props = props
                .set_column_dictionary_enabled(path(), false)
                .set_column_encoding(path(), Encoding::PLAIN);
        }
        if DELTA_COLUMNS.contains(&name) && f.data_type().is_integer() {
            props = props
                .set_column_dictionary_enabled(path(), false)
                .set_column_encoding(path(), Encoding::DELTA_BINARY_PACKED);
        }
        if matches!(f.data_type(), DataType::Utf8 | DataType::LargeUtf8) {
            let all_null = c.null_count() == c.len();
            props = props.set_column_statistics_enabled(
                path(),
                if all_null { EnabledStatistics::Chunk } else { EnabledStatistics::None },
            );
        }
    }
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props.build()))
        .map_err(|e| arrow_err(what, e))?;
    w.write(batch).map_err(|e| arrow_err(what, e))?;
    w.close().map_err(|e| arrow_err(what, e))?;
    Ok(buf)
}

/// Writes `bytes` to `path` via a temporary name, fsync, rename, directory fsync.
///
/// # Errors
/// [`Error::Io`] naming the file at fault.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::Input(format!("{} has no parent directory", path.display())))?;
    std::fs::create_dir_all(dir).at(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
    }
    std::fs::rename(&tmp, path).at(path)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .at(dir)?;
    Ok(())
}

/// Seals `data` into `flor_dir/segments` and publishes it with a manifest in
/// `flor_dir/manifests`. Returns the manifest. Tables with no rows are not
/// written; the `runs` row is written for forward writers only.
///
/// # Errors
/// [`Error::Io`] or [`Error::Format`] naming the file; on error no manifest
/// exists, so nothing partial is visible.
pub fn seal(flor_dir: &Path, data: &RunData, status: RunStatus, ended_at: i64) -> Result<Manifest> {
    seal_with(flor_dir, data.parts(), status, ended_at, &|_, _| Ok(()))
}

/// Called by [`seal_with`] with each sealed file's path relative to the
/// project root (`.flor/segments/<name>`) and its bytes, right after the file
/// is durable; may run on several threads at once. An error fails the seal
/// before the manifest is written.
pub type OnSealed<'a> = &'a (dyn Fn(&str, &[u8]) -> Result<()> + Sync);

/// [`seal`], calling `on_file` for every file written (the facade stores
/// them as git blobs while the other table is still encoding).
///
/// The `logs` and `loops` files are built, encoded and written on two
/// threads at once. Each file is written to a temporary name, fsynced,
/// renamed and its directory fsynced; the manifest goes last.
///
/// # Errors
/// As [`seal`], and whatever `on_file` returns.
pub fn seal_with(
    flor_dir: &Path,
    data: RunParts<'_>,
    status: RunStatus,
    ended_at: i64,
    on_file: OnSealed<'_>,
) -> Result<Manifest> {
    let stem = data.meta.stem();
    let seg_dir = flor_dir.join("segments");
    let write = |table: &str,
                 full: SchemaRef,
                 cols: Vec<ArrayRef>,
                 rows: usize|
     -> Result<Option<FileEntry>> {
        if rows == 0 {
            return Ok(None);
        }
        let name = format!("{stem}.{table}.parquet");
        let batch =
            RecordBatch::try_new(sealed_schema(&full), cols).map_err(|e| arrow_err(&name, e))?;
        let bytes = to_parquet(&batch, &name, constant_metadata(data.meta))?;
        write_atomic(&seg_dir.join(&name), &bytes)?;
        on_file(&format!(".flor/segments/{name}"), &bytes)?;
        Ok(Some(FileEntry {
            table: table.into(),
            name,
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
            rows: rows as u64,
        }))
    };
    let loops_file = || {
        let (cols, n) = data.loops_columns();
        write("loops", schema::loops(), cols, n)
    };
    let (logs, loops) = std::thread::scope(|s| {
        // When no thread can be started, the loops file is written after
        // the logs file on this one.
        let spawned = std::thread::Builder::new()
            .name("flor-seal".into())
            .spawn_scoped(s, loops_file)
            .ok();
        let logs = data
            .logs_columns()
            .and_then(|cols| write("logs", schema::logs(), cols, data.n_records()));
        let loops = match spawned {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(Error::Poisoned("the loops seal thread panicked".into()))),
            None => loops_file(),
        };
        (logs, loops)
    });
    let mut files: Vec<FileEntry> = [logs?, loops?].into_iter().flatten().collect();
    if data.meta.source == flor_core::Source::Forward {
        files.extend(write(
            "runs",
            schema::runs(),
            data.runs_columns(status, ended_at),
            1,
        )?);
    }
    let manifest = Manifest {
        format_version: schema::FORMAT_VERSION,
        meta: data.meta.clone(),
        status,
        files,
    };
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Input(e.to_string()))?;
    let text = format!("{json}\ncrc32:{:08x}\n", crc32fast::hash(json.as_bytes()));
    write_atomic(&manifest_path(flor_dir, &stem), text.as_bytes())?;
    Ok(manifest)
}

/// The footer metadata of a sealed file: the values of its constant columns
/// (`flor.projid`, `flor.tstamp` in µs, `flor.run_id`, `flor.filename`,
/// `flor.source`), so a reader without the manifest can restore them.
fn constant_metadata(meta: &RunMeta) -> Vec<(String, String)> {
    vec![
        ("flor.projid".into(), meta.projid.clone()),
        ("flor.tstamp".into(), meta.key.tstamp.to_string()),
        ("flor.run_id".into(), format!("{:016x}", meta.key.run_id)),
        ("flor.filename".into(), meta.filename.clone()),
        ("flor.source".into(), meta.source.as_str().into()),
    ]
}

/// `flor_dir/manifests/<stem>.json`.
pub fn manifest_path(flor_dir: &Path, stem: &str) -> PathBuf {
    flor_dir.join("manifests").join(format!("{stem}.json"))
}

/// Reads and verifies one manifest.
///
/// # Errors
/// [`Error::Io`] when unreadable; [`Error::Corrupt`] naming the file when the
/// checksum line is missing or wrong or the JSON does not parse.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let text = std::fs::read_to_string(path).at(path)?;
    let corrupt = |detail: String| Error::Corrupt {
        path: path.into(),
        offset: 0,
        detail,
    };
    let (json, tail) = text
        .rsplit_once("\ncrc32:")
        .ok_or_else(|| corrupt("no crc32 line".into()))?;
    let want =
        u32::from_str_radix(tail.trim(), 16).map_err(|_| corrupt("bad crc32 line".into()))?;
    let got = crc32fast::hash(json.as_bytes());
    if want != got {
        return Err(corrupt(format!(
            "checksum mismatch: stored {want:08x}, computed {got:08x}"
        )));
    }
    let m: Manifest = serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
    if m.format_version > schema::FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {} is newer than this flordb ({})",
            m.format_version,
            schema::FORMAT_VERSION
        )));
    }
    Ok(m)
}

mod read;
pub use read::{read_sealed, read_sealed_with, read_segment, ReadScratch, SealedBatch};
