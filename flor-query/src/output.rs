//! Typed access to `logs` batches and the Arrow output of the pivots.
//!
//! Output shape (DESIGN.md §5): `projid, tstamp, filename, source`, one
//! `Int64` column per loop (0-based iteration) followed by `<loop>_value`
//! (`Utf8`) when some iterated value differs from its index, then one column
//! per name. A name's column keeps the type of its values: `Int64`,
//! `Float64` (also for a mix of ints and floats), `Boolean`, or `Utf8` (str,
//! json, repr, and any other mix, written as text). Every name column
//! carries the field metadata `flor.name` (the exact name) and
//! `flor.value_type` (its value types, comma-separated); a mix of types adds
//! `flor.mixed_types`.

use crate::error::{arrow_err, Result};
use crate::index::{missing, str_col, text_col, Index, Text, NONE};
use crate::pivot::{Joined, Selected, Sources, FORWARD, REPLAY};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Float64Array, Float64Builder, GenericStringArray, Int64Array,
    Int64Builder, OffsetSizeTrait, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::array::builder::NullBufferBuilder;
use datafusion::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit, UInt64Type};
use flor_core::ValueType;
use flor_store::segment::SealedBatch;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault};
use std::sync::Arc;

/// Field metadata key: the exact logged name of a name column.
pub const META_NAME: &str = "flor.name";
/// Field metadata key: the value types of a name column (`int`, `float`,
/// `bool`, `str`, `json`, `repr`; comma-separated when several).
pub const META_VALUE_TYPE: &str = "flor.value_type";
/// Field metadata key, present only when a name's values have more than one
/// type: the types, comma-separated (e.g. `int,str`).
pub const META_MIXED_TYPES: &str = "flor.mixed_types";

/// The Arrow type of the pivoted view's text columns (`projid`,
/// `filename`, `source`, `<loop>_value` and text name columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextType {
    /// `Utf8` (32-bit offsets), the documented default.
    #[default]
    Utf8,
    /// `LargeUtf8` (64-bit offsets): what pandas' pyarrow-backed `string`
    /// dtype holds, so pandas takes the columns as they are instead of
    /// copying them into wider offsets (at 10^6 rows, ~43 MB of fresh
    /// memory and 7–60 ms).
    LargeUtf8,
}

/// The typed columns of one `logs` batch.
#[derive(Debug)]
pub(crate) struct LogCols<'a> {
    pub value_name: Text<'a>,
    pub ctx_id: &'a UInt64Array,
    pub seq: &'a UInt64Array,
    pub value_type: Text<'a>,
    /// For a dictionary `value_type`: the type of each dictionary value
    /// (parsed once per batch, not once per row); empty for a plain one.
    pub types_by_key: Vec<ValueType>,
    pub int: &'a Int64Array,
    pub float: &'a Float64Array,
    pub boolean: &'a BooleanArray,
    pub text: &'a StringArray,
    pub source: SourceCol<'a>,
}

/// The `source` of a `logs` batch's rows: one per row (a stored batch), or
/// one for the whole batch (a sealed one), as [`FORWARD`] or [`REPLAY`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum SourceCol<'a> {
    Rows(&'a StringArray),
    Const(u8),
}

/// [`FORWARD`] or [`REPLAY`] for a `source` text.
fn source_bits(s: &str) -> u8 {
    if s == "replay" {
        REPLAY
    } else {
        FORWARD
    }
}

impl<'a> LogCols<'a> {
    /// Borrows the columns of a conformed `logs` batch.
    pub fn new(sb: &'a SealedBatch) -> Result<LogCols<'a>> {
        let b = &sb.batch;
        let source = match &sb.meta {
            Some(m) => SourceCol::Const(source_bits(m.source.as_str())),
            None => SourceCol::Rows(str_col("logs", b, "source")?),
        };
        let prim = |n: &'static str| b.column_by_name(n).ok_or_else(|| missing("logs", n));
        let value_type = text_col("logs", b, "value_type")?;
        let types_by_key = match value_type {
            Text::Dict(_, values) => (0..values.len()).map(|k| parse_type(values.value(k))).collect(),
            Text::Plain(_) => Vec::new(),
        };
        Ok(LogCols {
            value_name: text_col("logs", b, "value_name")?,
            ctx_id: prim("ctx_id")?.as_primitive_opt::<UInt64Type>().ok_or_else(|| missing("logs", "ctx_id"))?,
            seq: prim("seq")?.as_primitive_opt::<UInt64Type>().ok_or_else(|| missing("logs", "seq"))?,
            value_type,
            types_by_key,
            int: prim("value_int")?.as_primitive_opt::<Int64Type>().ok_or_else(|| missing("logs", "value_int"))?,
            float: prim("value_float")?.as_primitive_opt::<Float64Type>().ok_or_else(|| missing("logs", "value_float"))?,
            boolean: prim("value_bool")?.as_boolean_opt().ok_or_else(|| missing("logs", "value_bool"))?,
            text: str_col("logs", b, "value_text")?,
            source,
        })
    }

    /// Whether every row is [`FORWARD`] without looking at rows (a forward
    /// seal's batch).
    pub fn all_forward(&self) -> bool {
        matches!(self.source, SourceCol::Const(FORWARD))
    }

    /// [`FORWARD`] or [`REPLAY`].
    pub fn source_bits(&self, i: usize) -> u8 {
        match self.source {
            SourceCol::Rows(s) => source_bits(s.value(i)),
            SourceCol::Const(bits) => bits,
        }
    }

    /// The value of row `i`, `None` when its typed column is null (damaged
    /// data). An unknown `value_type` reads as `repr` text.
    fn value(&self, i: usize) -> Option<Cell<'a>> {
        let t = match self.value_type {
            // A key outside the dictionary reads as `""`, an unknown type.
            Text::Dict(keys, _) => keys
                .get(i)
                .and_then(|&k| self.types_by_key.get(usize::try_from(k).ok()?).copied())
                .unwrap_or(ValueType::Repr),
            Text::Plain(a) => parse_type(a.value(i)),
        };
        let ok = |a: &dyn Array| a.is_valid(i);
        Some(match t {
            ValueType::Int if ok(self.int) => Cell::Int(self.int.value(i)),
            ValueType::Float if ok(self.float) => Cell::Float(self.float.value(i)),
            ValueType::Bool if ok(self.boolean) => Cell::Bool(self.boolean.value(i)),
            ValueType::Str | ValueType::Json | ValueType::Repr if ok(self.text) => Cell::Text(t, self.text.value(i)),
            _ => return None,
        })
    }
}

/// A `value_type` text as a type; an unknown one reads as `repr` text.
fn parse_type(s: &str) -> ValueType {
    ValueType::parse(s).unwrap_or(ValueType::Repr)
}

/// One logged value, borrowed from its batch.
#[derive(Debug, Clone, Copy)]
enum Cell<'a> {
    Int(i64),
    Float(f64),
    Bool(bool),
    Text(ValueType, &'a str),
}

impl Cell<'_> {
    fn kind(&self) -> ValueType {
        match self {
            Cell::Int(_) => ValueType::Int,
            Cell::Float(_) => ValueType::Float,
            Cell::Bool(_) => ValueType::Bool,
            Cell::Text(t, _) => *t,
        }
    }

    /// Exact equality (floats by bits).
    fn same(&self, o: &Cell<'_>) -> bool {
        match (self, o) {
            (Cell::Int(a), Cell::Int(b)) => a == b,
            (Cell::Float(a), Cell::Float(b)) => a.to_bits() == b.to_bits(),
            (Cell::Bool(a), Cell::Bool(b)) => a == b,
            (Cell::Text(s, a), Cell::Text(t, b)) => s == t && a == b,
            _ => false,
        }
    }

    fn hash(&self) -> u64 {
        let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        match self {
            Cell::Int(a) => h.hash_one((1u8, a)),
            Cell::Float(a) => h.hash_one((2u8, a.to_bits())),
            Cell::Bool(a) => h.hash_one((3u8, a)),
            Cell::Text(t, a) => h.hash_one((*t as u8, a)),
        }
    }

    /// Text form for mixed-type columns (Python's `str()` conventions).
    fn text(&self) -> String {
        match self {
            Cell::Int(v) => v.to_string(),
            Cell::Float(v) => flor_core::value::format_float(*v),
            Cell::Bool(v) => if *v { "True" } else { "False" }.to_owned(),
            Cell::Text(_, s) => (*s).to_owned(),
        }
    }
}

fn cell<'a>(logs: &[LogCols<'a>], sel: &Selected, r: u32) -> Option<Cell<'a>> {
    let r = r as usize;
    logs.get(sel.batch[r] as usize)?.value(sel.row[r] as usize)
}

/// Whether records `a` and `b` hold the same value (type and content).
pub(crate) fn same_value(logs: &[LogCols<'_>], sel: &Selected, a: u32, b: u32) -> bool {
    match (cell(logs, sel, a), cell(logs, sel, b)) {
        (Some(x), Some(y)) => x.same(&y),
        (None, None) => true,
        _ => false,
    }
}

/// A hash of record `r`'s value consistent with [`same_value`].
pub(crate) fn value_hash(logs: &[LogCols<'_>], sel: &Selected, r: u32) -> u64 {
    cell(logs, sel, r).map_or(0, |c| c.hash())
}

fn source_label(bits: u8) -> &'static str {
    match bits {
        REPLAY => "replay",
        b if b == FORWARD | REPLAY => "forward+replay",
        _ => "forward",
    }
}

/// Makes `label` unique among `used` by appending `_2`, `_3`, … .
fn unique(used: &mut HashSet<String>, label: String) -> String {
    let mut l = label.clone();
    let mut k = 2;
    while used.contains(&l) {
        l = format!("{label}_{k}");
        k += 1;
    }
    used.insert(l.clone());
    l
}

/// The column of name `i` over `rows`, typed as described in the module docs.
fn name_column(logs: &[LogCols<'_>], sel: &Selected, vals: &[u32], rows: &[u32]) -> (ArrayRef, DataType, Vec<ValueType>) {
    let get = |row: u32| {
        let r = vals[row as usize];
        if r == NONE {
            None
        } else {
            cell(logs, sel, r)
        }
    };
    // One pass that also gathers the values' bits: enough when the column
    // turns out to hold floats only or ints only (the bits are then the
    // column's buffer as they are).
    let mut kinds: Vec<ValueType> = Vec::new();
    let mut valid = NullBufferBuilder::new(rows.len());
    let mut bits: Vec<u64> = Vec::with_capacity(rows.len());
    for &row in rows {
        let c = get(row);
        bits.push(match c {
            Some(Cell::Float(v)) => v.to_bits(),
            Some(Cell::Int(v)) => v as u64,
            _ => 0,
        });
        match c {
            Some(c) => {
                valid.append_non_null();
                let k = c.kind();
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
            None => valid.append_null(),
        }
    }
    kinds.sort_by_key(|k| *k as u8);
    let n = bits.len();
    match kinds.as_slice() {
        [ValueType::Float] => {
            let values = ScalarBuffer::new(Buffer::from_vec(bits), 0, n);
            return (Arc::new(Float64Array::new(values, valid.finish())), DataType::Float64, kinds);
        }
        [ValueType::Int] => {
            let values = ScalarBuffer::new(Buffer::from_vec(bits), 0, n);
            return (Arc::new(Int64Array::new(values, valid.finish())), DataType::Int64, kinds);
        }
        _ => {}
    }
    let numeric = kinds.iter().all(|k| matches!(k, ValueType::Int | ValueType::Float));
    match kinds.as_slice() {
        [ValueType::Int] => {
            let mut b = Int64Builder::with_capacity(rows.len());
            for &row in rows {
                match get(row) {
                    Some(Cell::Int(v)) => b.append_value(v),
                    _ => b.append_null(),
                }
            }
            (Arc::new(b.finish()), DataType::Int64, kinds)
        }
        [_, ..] if numeric => {
            let mut b = Float64Builder::with_capacity(rows.len());
            for &row in rows {
                match get(row) {
                    Some(Cell::Float(v)) => b.append_value(v),
                    Some(Cell::Int(v)) => b.append_value(v as f64),
                    _ => b.append_null(),
                }
            }
            (Arc::new(b.finish()), DataType::Float64, kinds)
        }
        [ValueType::Bool] => {
            let mut b = BooleanBuilder::with_capacity(rows.len());
            for &row in rows {
                match get(row) {
                    Some(Cell::Bool(v)) => b.append_value(v),
                    _ => b.append_null(),
                }
            }
            (Arc::new(b.finish()), DataType::Boolean, kinds)
        }
        _ => {
            let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 8);
            for &row in rows {
                match get(row) {
                    Some(Cell::Text(_, s)) => b.append_value(s),
                    Some(c) => b.append_value(c.text()),
                    None => b.append_null(),
                }
            }
            (Arc::new(b.finish()), DataType::Utf8, kinds)
        }
    }
}

/// Consecutive rows of `rows` with the same `key`, as (key, count) in
/// order: a run's rows follow each other in the output, so the columns
/// that are constant per run are a few long stretches.
fn stretches<K: PartialEq + Copy>(rows: &[u32], key: impl Fn(u32) -> K) -> Vec<(K, usize)> {
    let mut out: Vec<(K, usize)> = Vec::new();
    for &r in rows {
        let k = key(r);
        match out.last_mut() {
            Some((last, n)) if *last == k => *n += 1,
            _ => out.push((k, 1)),
        }
    }
    out
}

/// A `Utf8` array of `text` repeated `count` times for each stretch, in
/// order, built in one allocation per buffer: a stretch's bytes are copied
/// in doubling blocks and its offsets are an arithmetic progression (per
/// row, a builder's doubling and checks, or a copy call per value, cost
/// several times the writing itself).
fn repeated_text<O: OffsetSizeTrait>(stretches: &[(&str, usize)]) -> Result<GenericStringArray<O>> {
    let too_big = |total: usize| crate::Error::Input(format!("the dataframe's text column would hold {total} bytes, more than an Arrow {} column can hold", GenericStringArray::<O>::DATA_TYPE));
    let mut total = 0usize;
    let mut rows = 0usize;
    for (t, n) in stretches {
        total = t.len().checked_mul(*n).and_then(|b| total.checked_add(b)).ok_or_else(|| too_big(usize::MAX))?;
        rows += n;
    }
    if O::from_usize(total).is_none() {
        return Err(too_big(total));
    }
    let mut values: Vec<u8> = Vec::with_capacity(total);
    let mut offsets: Vec<O> = Vec::with_capacity(rows + 1);
    offsets.push(O::usize_as(0));
    for (t, n) in stretches {
        let (start, len) = (values.len(), t.len());
        if len > 0 && *n > 0 {
            values.extend_from_slice(t.as_bytes());
            let want = len * n;
            while values.len() - start < want {
                let have = values.len() - start;
                values.extend_from_within(start..start + have.min(want - have));
            }
        }
        // Fits: every offset is at most `total`, which fits in `O`.
        let mut at = start;
        offsets.extend((0..*n).map(|_| {
            at += len;
            O::usize_as(at)
        }));
    }
    GenericStringArray::try_new(OffsetBuffer::new(offsets.into()), values.into(), None).map_err(arrow_err("a dataframe text column"))
}

/// Builds the output batch of `rows` (row numbers of `j`, in output order);
/// `names[i]` labels `j.vals[i]`.
// The pivot's parts are separate borrows (the run-level pivot has no frames
// to order), and a struct only for this call would hold them all the same.
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
    index: &Index,
    logs: &[LogCols<'_>],
    sel: &Selected,
    j: &Joined,
    src: &Sources,
    rows: &[u32],
    names: &[&str],
    text_type: TextType,
) -> Result<RecordBatch> {
    let runs = &index.runs;
    let mut used: HashSet<String> = HashSet::new();
    let mut fields: Vec<Field> = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    let run_of = |row: &u32| j.run[*row as usize] as usize;
    let text_dt = match text_type {
        TextType::Utf8 => DataType::Utf8,
        TextType::LargeUtf8 => DataType::LargeUtf8,
    };
    let texts = |stretches: &[(&str, usize)]| -> Result<ArrayRef> {
        Ok(match text_type {
            TextType::Utf8 => Arc::new(repeated_text::<i32>(stretches)?),
            TextType::LargeUtf8 => Arc::new(repeated_text::<i64>(stretches)?),
        })
    };
    for (label, dt) in [("projid", text_dt.clone()), ("tstamp", DataType::Timestamp(TimeUnit::Microsecond, None)), ("filename", text_dt.clone()), ("source", text_dt.clone())] {
        used.insert(label.to_owned());
        fields.push(Field::new(label, dt, false));
    }
    // Three key columns on a second thread, beside `source`, the loop and
    // the name columns (about half the output's bytes each side; they read
    // only shared, immutable data).
    let keys = || -> Result<[ArrayRef; 3]> {
        let by_run = stretches(rows, |r| run_of(&r));
        let text = |of_run: &[String]| texts(&by_run.iter().map(|&(r, n)| (of_run[r].as_str(), n)).collect::<Vec<_>>());
        let mut tstamp: Vec<i64> = Vec::with_capacity(rows.len());
        for &(r, n) in &by_run {
            tstamp.extend(std::iter::repeat_n(runs.tstamp[r], n));
        }
        Ok([
            text(&runs.projid)?,
            Arc::new(TimestampMicrosecondArray::from(tstamp)),
            text(&runs.filename)?,
        ])
    };
    let source = || -> Result<ArrayRef> {
        let by_source = match src {
            Sources::Forward => vec![(source_label(FORWARD), rows.len())],
            Sources::Rows(bits) => stretches(rows, |r| bits[r as usize]).into_iter().map(|(b, n)| (source_label(b), n)).collect(),
        };
        texts(&by_source)
    };
    let (keys, source, rest) = std::thread::scope(|s| {
        // No thread (small output, or none could be started): built here.
        let handle = (rows.len() >= crate::par::PARALLEL_ROWS).then(|| std::thread::Builder::new().spawn_scoped(s, keys).ok()).flatten();
        let source = source();
        let rest = rest_columns(index, logs, sel, j, rows, names, &mut used);
        let keys = match handle {
            // A panic there is a bug; it goes on as if it had happened here.
            Some(h) => h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => keys(),
        };
        (keys, source, rest)
    });
    cols.extend(keys?);
    cols.push(source?);
    let (rest_fields, rest_cols) = rest?;
    fields.extend(rest_fields);
    cols.extend(rest_cols);
    if text_type == TextType::LargeUtf8 {
        // The loop values and text names (built as `Utf8`; none in a
        // dataframe of numbers).
        for (f, c) in fields.iter_mut().zip(cols.iter_mut()) {
            if c.data_type() == &DataType::Utf8 {
                *c = cast(c, &DataType::LargeUtf8).map_err(arrow_err("a dataframe text column"))?;
                *f = f.clone().with_data_type(DataType::LargeUtf8);
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).map_err(arrow_err("the dataframe"))
}

/// The loop columns and the name columns of [`build`], with their fields.
fn rest_columns(
    index: &Index,
    logs: &[LogCols<'_>],
    sel: &Selected,
    j: &Joined,
    rows: &[u32],
    names: &[&str],
    used: &mut HashSet<String>,
) -> Result<(Vec<Field>, Vec<ArrayRef>)> {
    let frames = &index.frames;
    let mut fields: Vec<Field> = Vec::new();
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (slot, &c) in j.cols.iter().enumerate() {
        let (name, occurrence) = &frames.cols[c as usize];
        let base = if *occurrence == 0 { name.clone() } else { format!("{name}_{occurrence}") };
        let label = unique(used, base.clone());
        let d = &j.dims[slot];
        let mut valid = NullBufferBuilder::new(rows.len());
        let mut it: Vec<i64> = Vec::with_capacity(rows.len());
        let mut any_value = false;
        for &r in rows {
            let f = d[r as usize];
            if f == NONE {
                valid.append_null();
                it.push(0);
            } else {
                valid.append_non_null();
                it.push(frames.iteration[f as usize]);
                any_value |= frames.value[f as usize] != NONE;
            }
        }
        fields.push(Field::new(label, DataType::Int64, true));
        cols.push(Arc::new(Int64Array::new(it.into(), valid.finish())));
        if any_value {
            let vals: StringArray = rows
                .iter()
                .map(|&r| {
                    let f = d[r as usize];
                    if f == NONE {
                        return None;
                    }
                    let v = frames.value[f as usize];
                    Some(if v == NONE { frames.iteration[f as usize].to_string() } else { frames.values[v as usize].clone() })
                })
                .collect();
            fields.push(Field::new(unique(used, format!("{base}_value")), DataType::Utf8, true));
            cols.push(Arc::new(vals));
        }
    }
    for (i, name) in names.iter().enumerate() {
        let Some(vals) = j.vals.get(i) else { continue };
        let (array, dt, kinds) = name_column(logs, sel, vals, rows);
        let types = kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(",");
        let mut meta = HashMap::from([(META_NAME.to_owned(), (*name).to_owned()), (META_VALUE_TYPE.to_owned(), types.clone())]);
        if kinds.len() > 1 {
            meta.insert(META_MIXED_TYPES.to_owned(), types);
        }
        fields.push(Field::new(unique(used, (*name).to_owned()), dt, true).with_metadata(meta));
        cols.push(array);
    }
    Ok((fields, cols))
}
