//! In-memory indexes over the scanned batches, built once per context: the
//! runs (ordered by `tstamp`, then `run_id`), the run of every `logs` row,
//! and the deduplicated loop frames with their parent links.
//!
//! A frame is identified by `(run, ctx_id)`; the same frame may be stored in
//! several segments (the forward run and each replay of it) and is kept once.

use crate::error::{Error, Result};
use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{Float64Type, Int32Type, Int64Type, TimestampMicrosecondType, UInt64Type};
use flor_store::segment::SealedBatch;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

/// "No row / no frame / no value" in the `u32` index columns.
pub(crate) const NONE: u32 = u32::MAX;

/// Loops nested deeper than this are treated as broken chains (a parent
/// cycle can only come from damaged data).
pub(crate) const MAX_DEPTH: usize = 64;

/// A hasher for keys that are already well mixed (`ctx_id`s) or small
/// integers: one multiply-rotate per word.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // The multiply leaves the best-mixed bits on top; hash tables index
        // by the low bits.
        self.0.rotate_left(26)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(26) ^ i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

/// A `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Runs, ordered by `(tstamp, run_id)`: index `i` is run `i` everywhere.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    pub tstamp: Vec<i64>,
    pub run_id: Vec<String>,
    pub projid: Vec<String>,
    pub filename: Vec<String>,
}

/// Assigns provisional run numbers while batches are read.
#[derive(Default)]
struct RunInterner {
    by_tstamp: FastMap<i64, Vec<(String, u32)>>,
    runs: Runs,
}

impl RunInterner {
    fn intern(&mut self, tstamp: i64, run_id: &str, projid: &str, filename: &str) -> u32 {
        let slot = self.by_tstamp.entry(tstamp).or_default();
        if let Some((_, id)) = slot.iter().find(|(r, _)| r == run_id) {
            return *id;
        }
        let id = self.runs.tstamp.len() as u32;
        slot.push((run_id.to_owned(), id));
        self.runs.tstamp.push(tstamp);
        self.runs.run_id.push(run_id.to_owned());
        self.runs.projid.push(projid.to_owned());
        self.runs.filename.push(filename.to_owned());
        id
    }

    /// The run number of every row of a batch: one run for a sealed
    /// batch, read from the key columns row by row for a stored one.
    fn batch(&mut self, table: &'static str, sb: &SealedBatch) -> Result<Vec<u32>> {
        let b = &sb.batch;
        if let Some(m) = &sb.meta {
            let run_id = format!("{:016x}", m.key.run_id);
            let r = self.intern(m.key.tstamp, &run_id, &m.projid, &m.filename);
            return Ok(vec![r; b.num_rows()]);
        }
        let projid = str_col(table, b, "projid")?;
        let tstamp = b
            .column_by_name("tstamp")
            .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
            .ok_or_else(|| missing(table, "tstamp"))?;
        let run_id = str_col(table, b, "run_id")?;
        let filename = str_col(table, b, "filename")?;
        let mut out = Vec::with_capacity(b.num_rows());
        let mut last: Option<(i64, usize, u32)> = None; // (tstamp, row, run) of the previous row
        for i in 0..b.num_rows() {
            let t = tstamp.value(i);
            if let Some((lt, lrow, lrun)) = last {
                if lt == t && run_id.value(lrow) == run_id.value(i) {
                    out.push(lrun);
                    continue;
                }
            }
            let r = self.intern(t, run_id.value(i), projid.value(i), filename.value(i));
            last = Some((t, i, r));
            out.push(r);
        }
        Ok(out)
    }

    /// Sorts the runs; returns them and the map from provisional to final number.
    fn finish(self) -> (Runs, Vec<u32>) {
        let r = self.runs;
        let mut order: Vec<u32> = (0..r.tstamp.len() as u32).collect();
        order.sort_by(|&a, &b| {
            (r.tstamp[a as usize], &r.run_id[a as usize]).cmp(&(r.tstamp[b as usize], &r.run_id[b as usize]))
        });
        let mut remap = vec![0u32; order.len()];
        for (new, &old) in order.iter().enumerate() {
            remap[old as usize] = new as u32;
        }
        let pick = |v: &Vec<String>| order.iter().map(|&o| v[o as usize].clone()).collect();
        let runs = Runs {
            tstamp: order.iter().map(|&o| r.tstamp[o as usize]).collect(),
            run_id: pick(&r.run_id),
            projid: pick(&r.projid),
            filename: pick(&r.filename),
        };
        (runs, remap)
    }
}

/// Deduplicated loop frames, one entry per `(run, ctx_id)`.
#[derive(Debug, Default)]
pub(crate) struct Frames {
    pub run: Vec<u32>,
    pub ctx: Vec<u64>,
    /// The enclosing frame, or [`NONE`] for an outermost loop (or a parent
    /// that was never stored).
    pub parent: Vec<u32>,
    /// The loop column this frame fills (see [`Frames::cols`]).
    pub col: Vec<u32>,
    /// 0-based iteration.
    pub iteration: Vec<i64>,
    /// Index into [`Frames::values`], or [`NONE`] when the iterated value
    /// equals the index.
    pub value: Vec<u32>,
    /// Distinct iterated values (`loop_value`).
    pub values: Vec<String>,
    /// Loop columns: `(loop name, occurrence)`, where occurrence counts the
    /// enclosing frames of the same loop name (0 for all but recursive loops).
    pub cols: Vec<(String, u32)>,
    /// Where each frame's kept copy is stored: `(loops batch, row)`; empty
    /// when no run can hold a frame twice (then every stored row is a frame,
    /// in order, and the `loops` table needs no deduplication).
    pub origin: Vec<(u32, u32)>,
    /// Per run: `ctx_id` → frame. One small map per run keeps each lookup
    /// inside a cache-sized table (the same `ctx_id`s recur in every run of
    /// a script, so they cannot share one map keyed by `ctx_id` alone).
    /// Built while indexing for a run whose frames may repeat (more than
    /// one `loops` batch, or a batch not read from a sealed file); for the
    /// others (one sealed file: a seal stores each frame once) built from
    /// [`Frames::span`] on the first lookup, which a pivot over records
    /// that follow their frames never makes.
    lookup: Vec<OnceLock<FastMap<u64, u32>>>,
    /// Per run whose map is built on demand: its frames `start..end`.
    span: Vec<(u32, u32)>,
}

impl Frames {
    /// The frame `(run, ctx_id)`, if stored.
    pub fn find(&self, run: u32, ctx: u64) -> Option<u32> {
        let map = self.lookup.get(run as usize)?.get_or_init(|| {
            let (start, end) = self.span.get(run as usize).copied().unwrap_or((0, 0));
            let mut m = FastMap::with_capacity_and_hasher(end.saturating_sub(start) as usize, Default::default());
            for f in start..end {
                if let Some(&c) = self.ctx.get(f as usize) {
                    m.entry(c).or_insert(f);
                }
            }
            m
        });
        map.get(&ctx).copied()
    }

    /// [`Frames::find`], first trying `hint` and the frame after it: records
    /// and frames are stored in the order they were made, so a record's
    /// frame is usually its predecessor's or the next one.
    fn find_near(&self, hint: u32, run: u32, ctx: u64) -> Option<u32> {
        // A run whose map is built on demand: its first frame too (where a
        // batch's first record usually is), so the map is seldom needed.
        let first = self.span.get(run as usize).map_or(NONE, |s| s.0);
        for f in [hint, hint.wrapping_add(1), first] {
            let fu = f as usize;
            if self.ctx.get(fu) == Some(&ctx) && self.run.get(fu) == Some(&run) {
                return Some(f);
            }
        }
        self.find(run, ctx)
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.run.len()
    }

    /// The innermost frame of each row of a `logs` batch whose runs are `runs`.
    fn of_rows(&self, b: &SealedBatch, runs: &[u32]) -> Result<Vec<u32>> {
        let b = &b.batch;
        let ctx = b.column_by_name("ctx_id").and_then(|c| c.as_primitive_opt::<UInt64Type>()).ok_or_else(|| missing("logs", "ctx_id"))?;
        let mut hint = 0u32;
        Ok(runs
            .iter()
            .zip(ctx.values().iter())
            .map(|(&run, &c)| {
                if c == flor_core::recorder::RUN_LEVEL_CTX {
                    return NONE;
                }
                match self.find_near(hint, run, c) {
                    Some(f) => {
                        hint = f;
                        f
                    }
                    None => NONE,
                }
            })
            .collect())
    }

    /// Whether any frame was stored more than once (the `loops` table then
    /// needs the deduplicated rows).
    pub fn deduplicated_from(&self, stored: usize) -> bool {
        stored != self.len()
    }
}

/// Everything the pivot needs besides the `logs` batches themselves.
#[derive(Debug, Default)]
pub(crate) struct Index {
    pub runs: Runs,
    /// For each `logs` batch, the run of each row.
    pub log_runs: Vec<Vec<u32>>,
    /// For each `logs` batch, the innermost frame of each row: [`NONE`] at
    /// run level or when the frame was never stored.
    pub log_frames: Vec<Vec<u32>>,
    pub frames: Frames,
}

pub(crate) fn missing(table: &'static str, column: &str) -> Error {
    Error::Table { table, detail: format!("column {column:?} is missing or has the wrong type") }
}

/// A text column as read: plain `Utf8`, or `Dictionary(Int32, Utf8)` (the
/// few-valued columns of a sealed file, `flor_store::segment::read_sealed`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Text<'a> {
    Plain(&'a StringArray),
    /// Keys and values; a key outside the values reads as `""`.
    Dict(&'a [i32], &'a StringArray),
}

impl<'a> Text<'a> {
    /// The text of row `i` (a row of the column).
    #[inline]
    pub fn value(&self, i: usize) -> &'a str {
        match *self {
            Text::Plain(a) => a.value(i),
            Text::Dict(keys, values) => keys
                .get(i)
                .and_then(|&k| usize::try_from(k).ok())
                .filter(|&k| k < values.len())
                .map_or("", |k| values.value(k)),
        }
    }
}

/// The text column `name` of `b`, plain or dictionary.
pub(crate) fn text_col<'a>(table: &'static str, b: &'a RecordBatch, name: &str) -> Result<Text<'a>> {
    let c = b.column_by_name(name).ok_or_else(|| missing(table, name))?;
    if let Some(s) = c.as_string_opt::<i32>() {
        return Ok(Text::Plain(s));
    }
    let d = c.as_dictionary_opt::<Int32Type>().ok_or_else(|| missing(table, name))?;
    let values = d.values().as_string_opt::<i32>().ok_or_else(|| missing(table, name))?;
    Ok(Text::Dict(d.keys().values(), values))
}

pub(crate) fn str_col<'a>(table: &'static str, b: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    b.column_by_name(name).and_then(|c| c.as_string_opt::<i32>()).ok_or_else(|| missing(table, name))
}

impl Index {
    /// Builds the index over conformed `logs` and `loops` batches.
    pub fn build(logs: &[SealedBatch], loops: &[SealedBatch]) -> Result<Index> {
        let mut interner = RunInterner::default();
        let mut log_runs = logs.iter().map(|b| interner.batch("logs", b)).collect::<Result<Vec<_>>>()?;
        let loop_runs = loops.iter().map(|b| interner.batch("loops", b)).collect::<Result<Vec<_>>>()?;
        let (runs, remap) = interner.finish();
        for v in &mut log_runs {
            for r in v.iter_mut() {
                *r = remap[*r as usize];
            }
        }
        let mut frames = Frames::default();
        // Size each run's map once (rows per run; duplicates only over-reserve).
        let mut per_run = vec![0usize; runs.tstamp.len()];
        for rs in &loop_runs {
            for &r in rs {
                per_run[remap[r as usize] as usize] += 1;
            }
        }
        // Runs whose frames may be stored more than once need their map now.
        let mut batches_of_run = vec![0u32; runs.tstamp.len()];
        let mut eager = vec![false; runs.tstamp.len()];
        for (b, rs) in loops.iter().zip(&loop_runs) {
            let mut last = NONE;
            for &r in rs {
                let r = remap[r as usize];
                if r != last {
                    batches_of_run[r as usize] += 1;
                    eager[r as usize] |= b.meta.is_none();
                    last = r;
                }
            }
        }
        for (e, &n) in eager.iter_mut().zip(&batches_of_run) {
            *e |= n > 1;
        }
        frames.lookup = per_run
            .iter()
            .zip(&eager)
            .map(|(&n, &e)| if e { OnceLock::from(FastMap::with_capacity_and_hasher(n, Default::default())) } else { OnceLock::new() })
            .collect();
        frames.span = vec![(0, 0); runs.tstamp.len()];
        let total: usize = per_run.iter().sum();
        for v in [&mut frames.run, &mut frames.col] {
            v.reserve(total);
        }
        frames.ctx.reserve(total);
        frames.iteration.reserve(total);
        frames.value.reserve(total);
        // Without a run that can repeat a frame, neither is ever read.
        let any_eager = eager.iter().any(|&e| e);
        if any_eager {
            frames.origin.reserve(total);
        }
        // Where each frame's `p_ctx_id` is, to find parents once every frame
        // is in: batches appended whole (first frame, loops batch), and the
        // frames appended row by row with their `p_ctx_id` (not copied per
        // frame: at 10^6 frames that is 8 MB of fresh memory).
        let mut whole: Vec<(u32, usize)> = Vec::new();
        let mut by_row: Vec<(u32, u64)> = Vec::new();
        let mut has_duration: Vec<bool> = Vec::new();
        let mut names: HashMap<String, u32> = HashMap::new();
        let mut name_of: Vec<u32> = Vec::with_capacity(total);
        let mut value_ids: HashMap<String, u32> = HashMap::new();
        for (bi, (sb, rs)) in loops.iter().zip(&loop_runs).enumerate() {
            let b = &sb.batch;
            let ctx = b.column_by_name("ctx_id").and_then(|c| c.as_primitive_opt::<UInt64Type>()).ok_or_else(|| missing("loops", "ctx_id"))?;
            let pctx = b.column_by_name("p_ctx_id").and_then(|c| c.as_primitive_opt::<UInt64Type>()).ok_or_else(|| missing("loops", "p_ctx_id"))?;
            let it = b.column_by_name("iteration").and_then(|c| c.as_primitive_opt::<Int64Type>()).ok_or_else(|| missing("loops", "iteration"))?;
            let dur = b.column_by_name("duration_s").and_then(|c| c.as_primitive_opt::<Float64Type>()).ok_or_else(|| missing("loops", "duration_s"))?;
            let lname = text_col("loops", b, "loop_name")?;
            let lval = str_col("loops", b, "loop_value")?;
            let mut last_name: Option<(usize, u32)> = None;
            // A dictionary column: each distinct name interned once.
            let mut intern = |n: &str| {
                let next = names.len() as u32;
                *names.entry(n.to_owned()).or_insert(next)
            };
            let name_by_key: Vec<u32> = match lname {
                Text::Dict(_, values) => (0..values.len()).map(|k| intern(values.value(k))).collect(),
                Text::Plain(_) => Vec::new(),
            };
            let mut name_at = |i: usize| match (lname, last_name) {
                (Text::Dict(keys, _), _) => match keys.get(i).and_then(|&k| name_by_key.get(usize::try_from(k).ok()?)) {
                    Some(&id) => id,
                    // A key outside the dictionary reads as `""`.
                    None => intern(""),
                },
                (Text::Plain(a), Some((row, id))) if a.value(row) == a.value(i) => id,
                (Text::Plain(a), _) => {
                    let id = intern(a.value(i));
                    last_name = Some((i, id));
                    id
                }
            };
            let mut value_at = |i: usize| {
                if !lval.is_valid(i) {
                    return NONE;
                }
                let v = lval.value(i);
                let next = frames.values.len() as u32;
                let id = *value_ids.entry(v.to_owned()).or_insert(next);
                if id == next {
                    frames.values.push(v.to_owned());
                }
                id
            };
            // A sealed file of a run stored once (a seal stores each frame
            // once): every row is a new frame, in order, so the columns are
            // appended whole rather than row by row.
            let n = b.num_rows();
            let single = rs.first().map(|&r| remap[r as usize]).filter(|&r| sb.meta.is_some() && !eager.get(r as usize).copied().unwrap_or(true));
            if let Some(run) = single {
                let f0 = frames.run.len() as u32;
                if let Some(span) = frames.span.get_mut(run as usize) {
                    if span.0 == span.1 {
                        span.0 = f0;
                    }
                    span.1 = f0 + n as u32;
                }
                frames.run.extend(std::iter::repeat_n(run, n));
                frames.ctx.extend_from_slice(ctx.values());
                frames.iteration.extend_from_slice(it.values());
                whole.push((f0, bi));
                if lval.null_count() == n {
                    frames.value.extend(std::iter::repeat_n(NONE, n));
                } else {
                    frames.value.extend((0..n).map(&mut value_at));
                }
                name_of.extend((0..n).map(&mut name_at));
                if any_eager {
                    frames.origin.extend((0..n as u32).map(|i| (bi as u32, i)));
                    has_duration.extend((0..n).map(|i| dur.is_valid(i)));
                }
                continue;
            }
            for i in 0..n {
                let run = remap[rs[i] as usize];
                let c = ctx.value(i);
                let dur_ok = dur.is_valid(i);
                let f = frames.run.len() as u32;
                // The frame already stored under this `(run, ctx_id)`, if any.
                let stored = if eager.get(run as usize).copied().unwrap_or(true) {
                    let Some(map) = frames.lookup.get_mut(run as usize).and_then(OnceLock::get_mut) else { continue };
                    let slot = *map.entry(c).or_insert(f);
                    (slot != f).then_some(slot)
                } else {
                    if let Some(span) = frames.span.get_mut(run as usize) {
                        if span.0 == span.1 {
                            span.0 = f;
                        }
                        span.1 = f + 1;
                    }
                    None
                };
                if let Some(f) = stored {
                    // Keep the copy that knows its duration (the forward one).
                    if dur_ok && !has_duration[f as usize] {
                        frames.origin[f as usize] = (bi as u32, i as u32);
                        has_duration[f as usize] = true;
                    }
                    continue;
                }
                let name_id = name_at(i);
                let value = value_at(i);
                frames.run.push(run);
                frames.ctx.push(c);
                frames.iteration.push(it.value(i));
                frames.value.push(value);
                if any_eager {
                    frames.origin.push((bi as u32, i as u32));
                    has_duration.push(dur_ok);
                }
                by_row.push((f, pctx.value(i)));
                name_of.push(name_id);
            }
        }
        // Parents (siblings follow each other and share theirs).
        let mut parents = vec![NONE; frames.len()];
        let mut last: (u32, u64, u32) = (NONE, flor_core::recorder::RUN_LEVEL_CTX, NONE);
        let mut parent_of = |f: u32, p: u64| {
            let Some(&run) = frames.run.get(f as usize) else { return };
            let parent = if p == flor_core::recorder::RUN_LEVEL_CTX {
                NONE
            } else if (run, p) == (last.0, last.1) {
                last.2
            } else {
                let found = frames.find(run, p).unwrap_or(NONE);
                last = (run, p, found);
                found
            };
            if let Some(slot) = parents.get_mut(f as usize) {
                *slot = parent;
            }
        };
        for &(f0, bi) in &whole {
            let pctx = loops[bi].batch.column_by_name("p_ctx_id").and_then(|c| c.as_primitive_opt::<UInt64Type>()).ok_or_else(|| missing("loops", "p_ctx_id"))?;
            for (k, &p) in pctx.values().iter().enumerate() {
                parent_of(f0 + k as u32, p);
            }
        }
        for &(f, p) in &by_row {
            parent_of(f, p);
        }
        frames.parent = parents;
        // Columns: (loop name, occurrence among ancestors).
        let mut name_text: Vec<&str> = vec![""; names.len()];
        for (n, &id) in &names {
            name_text[id as usize] = n;
        }
        let mut col_ids: HashMap<(u32, u32), u32> = HashMap::new();
        let mut cols: Vec<(String, u32)> = Vec::new();
        frames.col = (0..frames.len())
            .map(|f| {
                // Siblings (same name and parent) share the column.
                if f > 0 && frames.parent[f] == frames.parent[f - 1] && name_of[f] == name_of[f - 1] {
                    return NONE;
                }
                let mut occurrence = 0u32;
                let mut p = frames.parent[f];
                let mut steps = 0;
                while p != NONE && steps < MAX_DEPTH {
                    if name_of[p as usize] == name_of[f] {
                        occurrence += 1;
                    }
                    p = frames.parent[p as usize];
                    steps += 1;
                }
                let key = (name_of[f], occurrence);
                *col_ids.entry(key).or_insert_with(|| {
                    cols.push((name_text[key.0 as usize].to_owned(), occurrence));
                    (cols.len() - 1) as u32
                })
            })
            .collect();
        for f in 1..frames.len() {
            if frames.col[f] == NONE {
                frames.col[f] = frames.col[f - 1];
            }
        }
        frames.cols = cols;
        let pairs: Vec<(&SealedBatch, &Vec<u32>)> = logs.iter().zip(&log_runs).collect();
        let log_frames = crate::par::map_halves(&pairs, |(b, _)| b.num_rows(), |(b, rs)| frames.of_rows(b, rs))
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        Ok(Index { runs, log_runs, log_frames, frames })
    }
}
