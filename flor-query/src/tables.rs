//! The batches a context is built from, their conformance to the sealed
//! schemas, and the DataFusion tables `logs`, `loops`, `runs`, `versions`
//! (column by column in docs/FORMAT.md, "Query tables").

use crate::error::{df_err, Error, Result};
use crate::index::Frames;
use datafusion::arrow::array::{new_null_array, Array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::{cast, interleave};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::catalog::MemTable;
use datafusion::functions::expr_fn::coalesce;
use datafusion::prelude::{cast as cast_expr, col, SessionContext};
use flor_store::segment::{sealed_schema, SealedBatch};
use flor_store::store::Scan;
use std::sync::Arc;

/// The Arrow batches of each table, as read from a store (and, for a live
/// process, its not-yet-sealed records).
///
/// Batches are conformed to the sealed schemas ([`flor_store::schema`],
/// [`flor_store::versions::versions_schema`]): columns are matched by name,
/// cast when their type differs, and nullable columns missing from an older
/// segment read as null.
#[derive(Debug, Default, Clone)]
pub struct Tables {
    /// `logs` batches.
    pub logs: Vec<RecordBatch>,
    /// `loops` batches (a frame stored in several segments is kept once).
    pub loops: Vec<RecordBatch>,
    /// `runs` batches.
    pub runs: Vec<RecordBatch>,
    /// `versions` batches.
    pub versions: Vec<RecordBatch>,
}

impl Tables {
    /// Adds the batches of a store scan (its damage reports stay with the scan).
    pub fn add_scan(&mut self, scan: &Scan) {
        self.logs.extend(scan.logs.iter().cloned());
        self.loops.extend(scan.loops.iter().cloned());
        self.runs.extend(scan.runs.iter().cloned());
    }
}

impl From<Scan> for Tables {
    fn from(scan: Scan) -> Tables {
        Tables { logs: scan.logs, loops: scan.loops, runs: scan.runs, versions: Vec::new() }
    }
}

/// Rebuilds `b` with exactly the fields of `schema`.
pub(crate) fn conform(table: &'static str, schema: &SchemaRef, b: &RecordBatch) -> Result<RecordBatch> {
    conform_with(table, schema, b, false)
}

/// `Dictionary(Int32, Utf8)`: how a sealed file's few-valued text columns are read.
fn is_text_dictionary(t: &DataType) -> bool {
    matches!(t, DataType::Dictionary(k, v) if **k == DataType::Int32 && **v == DataType::Utf8)
}

/// [`conform`]; with `keep_dictionaries`, a `Dictionary(Int32, Utf8)`
/// column where the schema has `Utf8` stays a dictionary (the schema's
/// field then takes its type).
fn conform_with(table: &'static str, schema: &SchemaRef, b: &RecordBatch, keep_dictionaries: bool) -> Result<RecordBatch> {
    let n = b.num_rows();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let mut fields = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let c = match b.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Arc::clone(c),
            Some(c) if keep_dictionaries && f.data_type() == &DataType::Utf8 && is_text_dictionary(c.data_type()) => {
                Arc::clone(c)
            }
            Some(c) => cast(c, f.data_type()).map_err(|e| Error::Table {
                table,
                detail: format!("column {:?} has type {} and cannot be read as {}: {e}", f.name(), c.data_type(), f.data_type()),
            })?,
            None if f.is_nullable() => new_null_array(f.data_type(), n),
            None => return Err(Error::Table { table, detail: format!("column {:?} is missing", f.name()) }),
        };
        fields.push(if c.data_type() == f.data_type() { Arc::clone(f) } else { Arc::new(f.as_ref().clone().with_data_type(c.data_type().clone())) });
        cols.push(c);
    }
    let schema = if keep_dictionaries { Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())) } else { Arc::clone(schema) };
    RecordBatch::try_new(schema, cols).map_err(|e| Error::Table { table, detail: e.to_string() })
}

pub(crate) fn conform_all(table: &'static str, schema: &SchemaRef, bs: &[RecordBatch]) -> Result<Vec<RecordBatch>> {
    bs.iter().filter(|b| b.num_rows() > 0).map(|b| conform(table, schema, b)).collect()
}

/// [`conform_all`] for batches as stored: a sealed one is conformed to the
/// table's sealed schema (its constant columns stay with its run, its text
/// dictionaries stay dictionaries), a stored one to the table's schema.
pub(crate) fn conform_sealed(table: &'static str, schema: &SchemaRef, bs: Vec<SealedBatch>) -> Result<Vec<SealedBatch>> {
    let sealed = sealed_schema(schema);
    bs.into_iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| match b.meta {
            None => Ok(SealedBatch::stored(conform(table, schema, &b.batch)?)),
            Some(meta) => Ok(SealedBatch { batch: conform_with(table, &sealed, &b.batch, true)?, meta: Some(meta) }),
        })
        .collect()
}

/// The batches with every column of `schema` (the constant columns of a
/// sealed batch built from its run).
pub(crate) fn full_batches(table: &'static str, schema: &SchemaRef, bs: &[SealedBatch]) -> Result<Vec<RecordBatch>> {
    bs.iter().map(|b| b.full(schema, table).map_err(|e| Error::Table { table, detail: e.to_string() })).collect()
}

/// The deduplicated `loops` rows, one per frame, in the order first stored.
pub(crate) fn dedup_loops(schema: &SchemaRef, loops: &[RecordBatch], frames: &Frames) -> Result<Vec<RecordBatch>> {
    let stored: usize = loops.iter().map(RecordBatch::num_rows).sum();
    if !frames.deduplicated_from(stored) {
        return Ok(loops.to_vec());
    }
    let idx: Vec<(usize, usize)> = frames.origin.iter().map(|&(b, r)| (b as usize, r as usize)).collect();
    let mut cols = Vec::with_capacity(schema.fields().len());
    for c in 0..schema.fields().len() {
        let arrays: Vec<&dyn Array> = loops.iter().map(|b| b.column(c).as_ref()).collect();
        cols.push(interleave(&arrays, &idx).map_err(crate::error::arrow_err("the loops table"))?);
    }
    let b = RecordBatch::try_new(Arc::clone(schema), cols).map_err(crate::error::arrow_err("the loops table"))?;
    Ok(vec![b])
}

/// Splits batches into at most `parts` partitions (round robin).
fn partitions(batches: &[RecordBatch], parts: usize) -> Vec<Vec<RecordBatch>> {
    let parts = parts.clamp(1, batches.len().max(1));
    let mut out = vec![Vec::new(); parts];
    for (i, b) in batches.iter().enumerate() {
        out[i % parts].push(b.clone());
    }
    out
}

fn mem_table(schema: &SchemaRef, batches: &[RecordBatch], parts: usize) -> Result<Arc<MemTable>> {
    let t = MemTable::try_new(Arc::clone(schema), partitions(batches, parts)).map_err(df_err("building a table"))?;
    Ok(Arc::new(t))
}

/// Registers `logs` (with the computed text column `value`), `loops`,
/// `runs` and `versions` in `ctx`.
pub(crate) fn register(
    ctx: &SessionContext,
    logs: &[RecordBatch],
    loops: &[RecordBatch],
    runs: &[RecordBatch],
    versions: &[RecordBatch],
) -> Result<()> {
    let parts = ctx.state().config().target_partitions();
    let logs_schema = flor_store::schema::logs();
    let raw = ctx.read_table(mem_table(&logs_schema, logs, parts)?).map_err(df_err("registering logs"))?;
    let text = |c: &str| cast_expr(col(c), DataType::Utf8);
    let value = coalesce(vec![text("value_int"), text("value_float"), text("value_bool"), col("value_text")]);
    let mut exprs: Vec<_> = logs_schema.fields().iter().map(|f| col(f.name().as_str())).collect();
    // `value` right after `value_type`.
    let at = logs_schema.index_of("value_type").map_or(exprs.len(), |i| i + 1);
    exprs.insert(at, value.alias("value"));
    let view = raw.select(exprs).map_err(df_err("registering logs"))?.into_view();
    ctx.register_table("logs", view).map_err(df_err("registering logs"))?;
    let tables: [(&str, SchemaRef, &[RecordBatch]); 3] = [
        ("loops", flor_store::schema::loops(), loops),
        ("runs", flor_store::schema::runs(), runs),
        ("versions", flor_store::versions::versions_schema(), versions),
    ];
    for (name, schema, batches) in tables {
        ctx.register_table(name, mem_table(&schema, batches, parts)?).map_err(df_err("registering a table"))?;
    }
    Ok(())
}
