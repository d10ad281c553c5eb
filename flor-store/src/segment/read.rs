//! Reading sealed files: verification (length, CRC-32 from the manifest)
//! and decoding, with or without the constant columns (docs/FORMAT.md,
//! "segments").

use super::{sealed_schema, with_constants, FileEntry};
use crate::error::IoContext;
use crate::schema;
use crate::wal::RunMeta;
use crate::{Error, Result};
use arrow::array::{new_null_array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use std::path::Path;
use std::sync::Arc;

/// One table's rows from one sealed file, as stored: the constant columns
/// are not put back (see [`SealedBatch::full`]), so a reader that needs
/// only the other columns never builds one array per row for them.
#[derive(Debug, Clone)]
pub struct SealedBatch {
    /// The stored columns: those of [`sealed_schema`] (format version 2;
    /// as read by [`read_sealed`], the few-valued text columns `value_name`,
    /// `value_type` and `loop_name` are `Dictionary(Int32, Utf8)`), or
    /// every column of the table (format version 1, `meta` is `None`).
    pub batch: RecordBatch,
    /// The run of every row (the values of the constant columns), or
    /// `None` when `batch` stores them itself.
    pub meta: Option<Arc<RunMeta>>,
}

impl SealedBatch {
    /// A batch that stores every column itself (`meta` is `None`).
    pub fn stored(batch: RecordBatch) -> SealedBatch {
        SealedBatch { batch, meta: None }
    }

    /// Number of rows.
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// The rows with every column of `full` (the table's schema,
    /// [`schema::logs`], [`schema::loops`] or [`schema::runs`]): the constant
    /// columns built from `meta` (one value per row), dictionary columns
    /// cast to the table's type, the others shared.
    ///
    /// # Errors
    /// [`Error::Format`] naming `what` when the stored columns are not
    /// those of `sealed_schema(full)` in order.
    pub fn full(&self, full: &SchemaRef, what: &str) -> Result<RecordBatch> {
        let Some(meta) = &self.meta else {
            return Ok(self.batch.clone());
        };
        let sealed = sealed_schema(full);
        let cols = self
            .batch
            .columns()
            .iter()
            .zip(sealed.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(Arc::clone(c))
                } else {
                    arrow::compute::cast(c, f.data_type()).map_err(|e| super::arrow_err(what, e))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        with_constants(meta, full, cols, self.batch.num_rows(), what)
    }
}

/// The table schema of a manifest entry's table name.
fn table_schema(table: &str) -> Option<SchemaRef> {
    match table {
        "logs" => Some(schema::logs()),
        "loops" => Some(schema::loops()),
        "runs" => Some(schema::runs()),
        _ => None,
    }
}

/// Reads one sealed file, verifies its length and CRC-32, decodes its
/// batches and restores the constant columns from `meta` (the manifest's
/// run), so every batch has the table's full schema.
///
/// # Errors
/// [`Error::Io`] when unreadable; [`Error::Corrupt`] naming the file when the
/// length or checksum differ from the manifest; [`Error::Format`] when the
/// Parquet does not decode.
pub fn read_segment(path: &Path, entry: &FileEntry, meta: &RunMeta) -> Result<Vec<RecordBatch>> {
    let what = path.display().to_string();
    let full = table_schema(&entry.table).ok_or_else(|| unknown_table(path, &entry.table))?;
    read_sealed(path, entry, &Arc::new(meta.clone()))?
        .iter()
        .map(|b| b.full(&full, &what))
        .collect()
}

fn unknown_table(path: &Path, table: &str) -> Error {
    Error::Format {
        path: path.into(),
        detail: format!("unknown table {table:?} in the manifest"),
    }
}

/// Reads one sealed file as [`read_segment`] does (length, CRC-32, decode)
/// but leaves the constant columns out: format version 2 batches come back
/// with `meta` (shared, not copied), version 1 batches as stored.
///
/// # Errors
/// As [`read_segment`]; [`Error::Format`] also when the columns are neither
/// those of the table nor those of its sealed schema.
pub fn read_sealed(path: &Path, entry: &FileEntry, meta: &Arc<RunMeta>) -> Result<Vec<SealedBatch>> {
    read_sealed_with(path, entry, meta, &mut ReadScratch::default())
}

/// What [`read_sealed_with`] reuses from one file to the next: the buffer a
/// file is read into, and the all-null columns made for columns not
/// decoded (a later file of no more rows gets a slice of the same one).
/// Fresh pages cost about 0.5 ns per byte on the reference machine
/// (BENCHMARKS.md, "Query"), so a scan of many files should touch them once
/// per thread rather than once per file.
#[derive(Debug, Default)]
pub struct ReadScratch {
    bytes: Vec<u8>,
    nulls: Vec<ArrayRef>,
}

impl ReadScratch {
    /// An all-null array of `n` rows of type `dt`: a slice of the one kept
    /// for `dt` when that is long enough (all-null arrays hold nothing
    /// but zeros), else a new one, kept in its place.
    fn nulls(&mut self, dt: &DataType, n: usize) -> ArrayRef {
        if let Some(a) = self.nulls.iter().find(|a| a.data_type() == dt && a.len() >= n) {
            return a.slice(0, n);
        }
        let a = new_null_array(dt, n);
        self.nulls.retain(|x| x.data_type() != dt);
        self.nulls.push(Arc::clone(&a));
        a
    }
}

/// [`read_sealed`] with buffers reused from the previous call (see
/// [`ReadScratch`]): the file is read into `scratch`'s buffer, whose
/// capacity is handed back once nothing decoded refers to the file's
/// bytes.
///
/// # Errors
/// As [`read_sealed`].
pub fn read_sealed_with(
    path: &Path,
    entry: &FileEntry,
    meta: &Arc<RunMeta>,
    scratch: &mut ReadScratch,
) -> Result<Vec<SealedBatch>> {
    let mut bytes = std::mem::take(&mut scratch.bytes);
    bytes.clear();
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_to_end(&mut f, &mut bytes))
        .at(path)?;
    if bytes.len() as u64 != entry.bytes {
        return Err(Error::Corrupt {
            path: path.into(),
            offset: bytes.len().min(entry.bytes as usize) as u64,
            detail: format!(
                "length {} differs from the manifest's {}",
                bytes.len(),
                entry.bytes
            ),
        });
    }
    let crc = crc32fast::hash(&bytes);
    if crc != entry.crc32 {
        return Err(Error::Corrupt {
            path: path.into(),
            offset: 0,
            detail: format!(
                "checksum mismatch: manifest {:08x}, file {crc:08x}",
                entry.crc32
            ),
        });
    }
    let bytes = bytes::Bytes::from(bytes);
    let keep = bytes.clone();
    let out = decode_sealed(path, entry, meta, bytes, scratch);
    if let Ok(mut back) = keep.try_into_mut() {
        back.clear(); // nothing to move back: only the capacity is wanted
        scratch.bytes = Vec::from(back);
    }
    out
}

/// Decodes the verified bytes of a sealed file ([`read_sealed`]).
fn decode_sealed(
    path: &Path,
    entry: &FileEntry,
    meta: &Arc<RunMeta>,
    bytes: bytes::Bytes,
    scratch: &mut ReadScratch,
) -> Result<Vec<SealedBatch>> {
    let fmt = |e: parquet::errors::ParquetError| Error::Format {
        path: path.into(),
        detail: e.to_string(),
    };
    let md = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new()).map_err(fmt)?;
    let full = table_schema(&entry.table).ok_or_else(|| unknown_table(path, &entry.table))?;
    let sealed = sealed_schema(&full);
    let stored = md.schema().fields() == full.fields();
    if !stored && md.schema().fields() != sealed.fields() {
        return Err(Error::Format {
            path: path.into(),
            detail: format!(
                "columns {:?} are not those of table {}",
                md.schema()
                    .fields()
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>(),
                entry.table
            ),
        });
    }
    if stored {
        // Format version 1: every column stored, read as it is.
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, md)
            .with_batch_size(1 << 20)
            .build()
            .map_err(fmt)?;
        return reader
            .map(|b| b.map(SealedBatch::stored).map_err(|e| fmt(e.into())))
            .collect();
    }
    // Format version 2: few-valued text as dictionaries (no string copied
    // per row); a column whose statistics say it holds only nulls is not
    // decoded but made null here (`scratch`'s, shared from file to file).
    let read = read_schema(&sealed);
    let parquet_md = Arc::clone(md.metadata());
    let md = ArrowReaderMetadata::try_new(
        Arc::clone(&parquet_md),
        ArrowReaderOptions::new().with_schema(Arc::clone(&read)),
    )
    .map_err(fmt)?;
    let groups = parquet_md.row_groups();
    let all_null: Vec<bool> = (0..read.fields().len())
        .map(|c| {
            !groups.is_empty()
                && groups.iter().all(|g| {
                    g.columns()
                        .get(c)
                        .and_then(|m| m.statistics())
                        .and_then(|s| s.null_count_opt())
                        .is_some_and(|n| i64::try_from(n).ok() == Some(g.num_rows()))
                })
        })
        .collect();
    let keep: Vec<usize> = (0..all_null.len()).filter(|&c| !all_null[c]).collect();
    let mask = ProjectionMask::roots(parquet_md.file_metadata().schema_descr(), keep);
    let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, md)
        .with_batch_size(1 << 20)
        .with_projection(mask)
        .build()
        .map_err(fmt)?;
    let what = path.display().to_string();
    let mut out = Vec::new();
    for b in reader {
        out.push({
            let b = b.map_err(|e| fmt(e.into()))?;
            let n = b.num_rows();
            let mut decoded = b.columns().iter();
            let cols = read
                .fields()
                .iter()
                .zip(&all_null)
                .map(|(f, &null)| -> Result<ArrayRef> {
                    if null {
                        Ok(scratch.nulls(f.data_type(), n))
                    } else {
                        decoded.next().cloned().ok_or_else(|| {
                            super::arrow_err(&what, format!("column {} missing", f.name()))
                        })
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let batch = RecordBatch::try_new(Arc::clone(&read), cols)
                .map_err(|e| super::arrow_err(&what, e))?;
            SealedBatch {
                batch,
                meta: Some(Arc::clone(meta)),
            }
        });
    }
    Ok(out)
}

/// Text columns with a handful of distinct values, read as dictionaries.
const DICTIONARY_COLUMNS: [&str; 3] = ["value_name", "value_type", "loop_name"];

/// `sealed` with the [`DICTIONARY_COLUMNS`] as `Dictionary(Int32, Utf8)`.
fn read_schema(sealed: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = sealed
        .fields()
        .iter()
        .map(|f| {
            if DICTIONARY_COLUMNS.contains(&f.name().as_str()) && f.data_type() == &DataType::Utf8 {
                let d = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
                Field::new(f.name(), d, f.is_nullable())
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::segment::{read_manifest, seal, RunData, RunStatus};
    use crate::wal::{Batch, RunSummary};
    use arrow::array::Array;
    use flor_core::{Recorder, RunKey, Source, Value};

    /// A run with `lr` at run level and `loss` (floats: no ints, bools or
    /// text) in two iterations of `epoch`, one of them with a value.
    fn run() -> RunData {
        let meta = RunMeta {
            projid: "proj".into(),
            filename: "train.py".into(),
            key: RunKey { tstamp: 1_700_000_000_000_000, run_id: 7 },
            source: Source::Forward,
            writer: 9,
        };
        let mut rec = Recorder::new();
        let mut batch = Batch::default();
        let lr = rec.intern("lr").unwrap();
        let loss = rec.intern("loss").unwrap();
        batch.names = vec![(lr, "lr".into()), (loss, "loss".into())];
        batch.records.push(rec.record(lr, Value::Float(0.5)));
        rec.loop_enter("epoch").unwrap();
        for (i, v) in [(0, None), (1, Some("b".to_owned()))] {
            let f = rec.iteration(i, v).unwrap();
            batch.frame_ends.push((f.ctx_id, 0.25));
            batch.frames.push(f);
            batch.records.push(rec.record(loss, Value::Float(1.0 / (i + 1) as f64)));
        }
        RunData { meta, batch, summary: Some(RunSummary { args: "{}".into(), ..Default::default() }) }
    }

    #[test]
    fn sealed_batches_keep_dictionaries_and_skip_null_columns_yet_read_back_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let data = run();
        let m = seal(dir.path(), &data, RunStatus::Committed, 1).unwrap();
        let meta = Arc::new(read_manifest(&crate::segment::manifest_path(dir.path(), &data.meta.stem())).unwrap().meta);
        for f in &m.files {
            let path = dir.path().join("segments").join(&f.name);
            let sealed = read_sealed(&path, f, &meta).unwrap();
            let full = table_schema(&f.table).unwrap();
            let got: Vec<RecordBatch> = sealed.iter().map(|b| b.full(&full, "t").unwrap()).collect();
            let want = match f.table.as_str() {
                "logs" => data.logs_batch().unwrap(),
                "loops" => data.loops_batch().unwrap(),
                _ => data.runs_batch(RunStatus::Committed, 1).unwrap(),
            };
            assert_eq!(got, vec![want.clone()], "{}", f.table);
            assert_eq!(read_segment(&path, f, &meta).unwrap(), vec![want], "{}", f.table);
            // Columns that zstd does not shrink are stored uncompressed.
            let bytes = bytes::Bytes::from(std::fs::read(&path).unwrap());
            let md = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new()).unwrap();
            for c in md.metadata().row_group(0).columns() {
                let name = c.column_path().string();
                let want = if crate::segment::UNCOMPRESSED_COLUMNS.contains(&name.as_str()) { "UNCOMPRESSED" } else { "ZSTD" };
                assert!(format!("{:?}", c.compression()).starts_with(want), "{} {name}: {:?}", f.table, c.compression());
                // Nearly distinct values and counters: no dictionary page.
                let plain = crate::segment::PLAIN_COLUMNS.contains(&name.as_str());
                let delta = crate::segment::DELTA_COLUMNS.contains(&name.as_str());
                if plain || delta {
                    assert_eq!(c.dictionary_page_offset(), None, "{} {name}", f.table);
                }
                if delta {
                    assert!(c.encodings().any(|e| e == parquet::basic::Encoding::DELTA_BINARY_PACKED), "{} {name}", f.table);
                }
                // A text column of nulls only (no str values here) says so
                // in its statistics.
                if name == "value_text" {
                    assert_eq!(c.statistics().and_then(|s| s.null_count_opt()), Some(f.rows), "{name}");
                }
            }
            // Read again through one reused buffer: the same batches, and
            // the buffer's capacity comes back for the next file.
            let mut scratch = ReadScratch { bytes: b"stale contents".to_vec(), nulls: Vec::new() };
            for _ in 0..2 {
                let again = read_sealed_with(&path, f, &meta, &mut scratch).unwrap();
                assert_eq!(again.iter().map(|b| b.batch.clone()).collect::<Vec<_>>(), sealed.iter().map(|b| b.batch.clone()).collect::<Vec<_>>());
                assert!(scratch.bytes.capacity() as u64 >= f.bytes, "{}", f.table);
            }
            let b = &sealed[0].batch;
            if f.table == "logs" {
                assert!(matches!(b.column_by_name("value_name").unwrap().data_type(), DataType::Dictionary(..)));
                let ints = b.column_by_name("value_int").unwrap();
                assert_eq!(ints.null_count(), 3);
            }
            if f.table == "loops" {
                assert!(matches!(b.column_by_name("loop_name").unwrap().data_type(), DataType::Dictionary(..)));
            }
        }
    }
}
