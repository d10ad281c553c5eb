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
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray, UInt64Array,
};
use flor_core::{Value, ValueType};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
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

fn key_columns(meta: &RunMeta, n: usize) -> Vec<ArrayRef> {
    vec![
        const_str(&meta.projid, n),
        ts_array(meta.key.tstamp, n),
        const_str(&format!("{:016x}", meta.key.run_id), n),
        const_str(&meta.filename, n),
    ]
}

fn arrow_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Format { path: PathBuf::from(what), detail: e.to_string() }
}

impl RunData {
    fn names(&self) -> HashMap<u32, &str> {
        self.batch.names.iter().map(|(id, n)| (*id, n.as_str())).collect()
    }

    /// The `logs` rows ([`schema::logs`]).
    ///
    /// # Errors
    /// [`Error::Corrupt`]-free; [`Error::Format`] if Arrow rejects the arrays
    /// (an internal bug), [`Error::Input`] for a record naming an unknown name id.
    pub fn logs_batch(&self) -> Result<RecordBatch> {
        let names = self.names();
        let recs = &self.batch.records;
        let n = recs.len();
        let mut cols = key_columns(&self.meta, n);
        let mut name_b = StringBuilder::with_capacity(n, n * 8);
        let mut type_b = StringBuilder::with_capacity(n, n * 5);
        let mut int_b = Int64Builder::with_capacity(n);
        let mut float_b = Float64Builder::with_capacity(n);
        let mut bool_b = BooleanBuilder::with_capacity(n);
        let mut text_b = StringBuilder::new();
        for r in recs {
            let name = names
                .get(&r.name)
                .ok_or_else(|| Error::Input(format!("record refers to unknown name id {}", r.name)))?;
            name_b.append_value(name);
            type_b.append_value(r.value.value_type().as_str());
            let (mut i, mut f, mut b, mut t) = (None, None, None, None);
            match &r.value {
                Value::Int(v) => i = Some(*v),
                Value::Float(v) => f = Some(*v),
                Value::Bool(v) => b = Some(*v),
                Value::Str(s) | Value::Json(s) | Value::Repr(s) => t = Some(s.as_str()),
            }
            int_b.append_option(i);
            float_b.append_option(f);
            bool_b.append_option(b);
            text_b.append_option(t);
        }
        cols.push(Arc::new(UInt64Array::from_iter_values(recs.iter().map(|r| r.ctx_id))));
        cols.push(Arc::new(UInt64Array::from_iter_values(0..n as u64)));
        cols.push(Arc::new(name_b.finish()));
        cols.push(Arc::new(type_b.finish()));
        cols.push(Arc::new(int_b.finish()));
        cols.push(Arc::new(float_b.finish()));
        cols.push(Arc::new(bool_b.finish()));
        cols.push(Arc::new(text_b.finish()));
        cols.push(const_str(self.meta.source.as_str(), n));
        RecordBatch::try_new(schema::logs(), cols).map_err(|e| arrow_err("logs batch", e))
    }

    /// The `loops` rows ([`schema::loops`]), one per distinct `ctx_id`.
    ///
    /// # Errors
    /// [`Error::Format`] if Arrow rejects the arrays (an internal bug).
    pub fn loops_batch(&self) -> Result<RecordBatch> {
        let durations: HashMap<u64, f64> = self.batch.frame_ends.iter().copied().collect();
        let mut seen = HashSet::new();
        let frames: Vec<_> = self.batch.frames.iter().filter(|f| seen.insert(f.ctx_id)).collect();
        let n = frames.len();
        let mut cols = key_columns(&self.meta, n);
        cols.push(Arc::new(UInt64Array::from_iter_values(frames.iter().map(|f| f.ctx_id))));
        cols.push(Arc::new(UInt64Array::from_iter_values(frames.iter().map(|f| f.p_ctx_id))));
        cols.push(Arc::new(StringArray::from_iter_values(frames.iter().map(|f| f.loop_name.as_str()))));
        cols.push(Arc::new(arrow::array::Int64Array::from_iter_values(frames.iter().map(|f| f.iteration))));
        cols.push(Arc::new(StringArray::from_iter(frames.iter().map(|f| f.loop_value.as_deref()))));
        cols.push(Arc::new(arrow::array::Float64Array::from_iter(frames.iter().map(|f| durations.get(&f.ctx_id).copied()))));
        RecordBatch::try_new(schema::loops(), cols).map_err(|e| arrow_err("loops batch", e))
    }

    /// The one `runs` row ([`schema::runs`]).
    ///
    /// # Errors
    /// [`Error::Format`] if Arrow rejects the arrays (an internal bug).
    pub fn runs_batch(&self, status: RunStatus, ended_at: i64) -> Result<RecordBatch> {
        let s = self.summary.clone().unwrap_or_default();
        let args = if s.args.is_empty() { "{}".to_string() } else { s.args.clone() };
        let mut cols = key_columns(&self.meta, 1);
        cols.push(const_str(status.as_str(), 1));
        cols.push(ts_array(ended_at, 1));
        cols.push(Arc::new(UInt64Array::from(vec![self.batch.records.len() as u64])));
        cols.push(Arc::new(arrow::array::Float64Array::from(vec![s.setup_s])));
        cols.push(Arc::new(arrow::array::Float64Array::from(vec![s.teardown_s])));
        cols.push(Arc::new(arrow::array::Float64Array::from(vec![s.wall_s])));
        cols.push(const_str(&args, 1));
        RecordBatch::try_new(schema::runs(), cols).map_err(|e| arrow_err("runs batch", e))
    }

    /// The value types seen per name, for callers that check types early.
    pub fn types_by_name(&self) -> HashMap<String, HashSet<ValueType>> {
        let names = self.names();
        let mut out: HashMap<String, HashSet<ValueType>> = HashMap::new();
        for r in &self.batch.records {
            if let Some(n) = names.get(&r.name) {
                out.entry((*n).to_owned()).or_default().insert(r.value.value_type());
            }
        }
        out
    }
}

/// Encodes a batch as a Parquet file in memory (zstd level 1, format version
/// in the footer's key-value metadata).
///
/// # Errors
/// [`Error::Format`] naming `what` when Parquet fails.
pub fn to_parquet(batch: &RecordBatch, what: &str) -> Result<Vec<u8>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).map_err(|e| arrow_err(what, e))?))
        .set_key_value_metadata(Some(vec![parquet::file::metadata::KeyValue::new(
            "flor.format_version".into(),
            schema::FORMAT_VERSION.to_string(),
        )]))
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).map_err(|e| arrow_err(what, e))?;
    w.write(batch).map_err(|e| arrow_err(what, e))?;
    w.close().map_err(|e| arrow_err(what, e))?;
    Ok(buf)
}

/// Writes `bytes` to `path` via a temporary name, fsync, rename, directory fsync.
///
/// # Errors
/// [`Error::Io`] naming the file at fault.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().ok_or_else(|| Error::Input(format!("{} has no parent directory", path.display())))?;
    std::fs::create_dir_all(dir).at(dir)?;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
    }
    std::fs::rename(&tmp, path).at(path)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)?;
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
    let stem = data.meta.stem();
    let seg_dir = flor_dir.join("segments");
    let mut files = Vec::new();
    let mut tables = vec![("logs", data.logs_batch()?), ("loops", data.loops_batch()?)];
    if data.meta.source == flor_core::Source::Forward {
        tables.push(("runs", data.runs_batch(status, ended_at)?));
    }
    for (table, batch) in tables {
        if batch.num_rows() == 0 {
            continue;
        }
        let name = format!("{stem}.{table}.parquet");
        let bytes = to_parquet(&batch, &name)?;
        write_atomic(&seg_dir.join(&name), &bytes)?;
        files.push(FileEntry {
            table: table.into(),
            name,
            bytes: bytes.len() as u64,
            crc32: crc32fast::hash(&bytes),
            rows: batch.num_rows() as u64,
        });
    }
    let manifest = Manifest { format_version: schema::FORMAT_VERSION, meta: data.meta.clone(), status, files };
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Input(e.to_string()))?;
    let text = format!("{json}\ncrc32:{:08x}\n", crc32fast::hash(json.as_bytes()));
    write_atomic(&manifest_path(flor_dir, &stem), text.as_bytes())?;
    Ok(manifest)
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
    let corrupt = |detail: String| Error::Corrupt { path: path.into(), offset: 0, detail };
    let (json, tail) = text.rsplit_once("\ncrc32:").ok_or_else(|| corrupt("no crc32 line".into()))?;
    let want = u32::from_str_radix(tail.trim(), 16).map_err(|_| corrupt("bad crc32 line".into()))?;
    let got = crc32fast::hash(json.as_bytes());
    if want != got {
        return Err(corrupt(format!("checksum mismatch: stored {want:08x}, computed {got:08x}")));
    }
    let m: Manifest = serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
    if m.format_version > schema::FORMAT_VERSION {
        return Err(corrupt(format!("format version {} is newer than this flordb ({})", m.format_version, schema::FORMAT_VERSION)));
    }
    Ok(m)
}

/// Reads one sealed file, verifies its length and CRC-32, decodes its batches.
///
/// # Errors
/// [`Error::Io`] when unreadable; [`Error::Corrupt`] naming the file when the
/// length or checksum differ from the manifest; [`Error::Format`] when the
/// Parquet does not decode.
pub fn read_segment(path: &Path, entry: &FileEntry) -> Result<Vec<RecordBatch>> {
    let bytes = std::fs::read(path).at(path)?;
    if bytes.len() as u64 != entry.bytes {
        return Err(Error::Corrupt {
            path: path.into(),
            offset: bytes.len().min(entry.bytes as usize) as u64,
            detail: format!("length {} differs from the manifest's {}", bytes.len(), entry.bytes),
        });
    }
    let crc = crc32fast::hash(&bytes);
    if crc != entry.crc32 {
        return Err(Error::Corrupt {
            path: path.into(),
            offset: 0,
            detail: format!("checksum mismatch: manifest {:08x}, file {crc:08x}", entry.crc32),
        });
    }
    let fmt = |e: parquet::errors::ParquetError| Error::Format { path: path.into(), detail: e.to_string() };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))
        .map_err(fmt)?
        .with_batch_size(1 << 20)
        .build()
        .map_err(fmt)?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Format { path: path.into(), detail: e.to_string() })
}
