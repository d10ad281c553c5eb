//! The pivoted view `dataframe(names…)` (DESIGN.md §5; FlorDB 4.0.1
//! `database.pivot`), computed directly on the Arrow batches.
//!
//! For each name asked, its records become rows with the loop columns of the
//! frames they were logged in; the per-name rows are joined one name after
//! the other with a full outer join on the run and the loop columns both
//! sides have (a missing loop on both sides counts as equal, as in pandas);
//! exact duplicate rows are dropped; rows are ordered by `tstamp`, `run_id`,
//! the loop columns (absent first), `source` (forward, forward+replay,
//! replay), then log order.
//!
//! One deliberate difference from FlorDB 4.0.1: `source` is not a join key.
//! flordb's replay records only the new names (DESIGN.md §7.4), so a
//! recovered value must land on the row of the values logged forward; the
//! row's `source` then reads `forward+replay`.

use crate::error::Result;
use crate::index::{FastHasher, FastMap, Index, Text, NONE};
use crate::output::{self, LogCols, TextType};
use datafusion::arrow::array::RecordBatch;
use std::cmp::Ordering;
use std::hash::Hasher;

/// Source bits of a row: which sources its values came from.
pub(crate) const FORWARD: u8 = 1;
/// See [`FORWARD`].
pub(crate) const REPLAY: u8 = 2;

/// The selected records: one entry per `logs` row whose name was asked,
/// as (batch, row). Its run, frame, source and `seq` are looked up where
/// they are kept (the index, the batch) rather than copied per record: at
/// 10^6 records each byte per record is a megabyte of fresh memory, about
/// half a millisecond to fault in on the 2-core reference machine.
#[derive(Debug)]
pub(crate) struct Selected<'s> {
    index: &'s Index,
    logs: &'s [LogCols<'s>],
    pub batch: Vec<u32>,
    pub row: Vec<u32>,
}

impl<'s> Selected<'s> {
    /// No records yet, room for `n`, read from `logs` as `index` indexed them.
    pub fn with_capacity(index: &'s Index, logs: &'s [LogCols<'s>], n: usize) -> Selected<'s> {
        Selected { index, logs, batch: Vec::with_capacity(n), row: Vec::with_capacity(n) }
    }

    fn push(&mut self, batch: u32, row: u32) {
        self.batch.push(batch);
        self.row.push(row);
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// The (batch, row) of record `r`.
    #[inline]
    fn at(&self, r: u32) -> (usize, usize) {
        (self.batch[r as usize] as usize, self.row[r as usize] as usize)
    }

    /// The run of record `r`.
    #[inline]
    pub fn run(&self, r: u32) -> u32 {
        let (b, i) = self.at(r);
        self.index.log_runs.get(b).and_then(|v| v.get(i)).copied().unwrap_or(NONE)
    }

    /// The innermost frame of record `r`, or [`NONE`] at run level (or when
    /// the frame was never stored).
    #[inline]
    pub fn frame(&self, r: u32) -> u32 {
        let (b, i) = self.at(r);
        self.index.log_frames.get(b).and_then(|v| v.get(i)).copied().unwrap_or(NONE)
    }

    /// [`FORWARD`] or [`REPLAY`] for record `r`.
    #[inline]
    pub fn source(&self, r: u32) -> u8 {
        let (b, i) = self.at(r);
        self.logs.get(b).map_or(FORWARD, |lc| lc.source_bits(i))
    }

    /// The `seq` of record `r` (its order within its seal).
    #[inline]
    pub fn seq(&self, r: u32) -> u64 {
        let (b, i) = self.at(r);
        self.logs.get(b).map_or(0, |lc| lc.seq.value(i))
    }
}

/// The joined rows: run, one frame per loop column, one record per name.
#[derive(Debug, Default)]
pub(crate) struct Joined {
    pub run: Vec<u32>,
    /// Loop columns, in output order: `cols[j]` is a frame column id.
    pub cols: Vec<u32>,
    /// `dims[j][row]`: the frame filling loop column `j`, or [`NONE`].
    pub dims: Vec<Vec<u32>>,
    /// `vals[i][row]`: the selected record of name `i`, or [`NONE`].
    pub vals: Vec<Vec<u32>>,
}

impl Joined {
    pub fn len(&self) -> usize {
        self.run.len()
    }
}

/// Reads the records of `names` out of the `logs` batches.
fn select<'s>(index: &'s Index, logs: &'s [LogCols<'s>], names: &[&str]) -> (Selected<'s>, Vec<Vec<u32>>) {
    // Sized up front: growing by doubling would copy each vector and touch
    // twice its final memory (fresh pages cost more than the copying here).
    // Capacity past what is filled stays untouched.
    let total: usize = index.log_runs.iter().map(Vec::len).sum();
    let mut sel = Selected::with_capacity(index, logs, total);
    let per_name_cap = if names.len() == 1 { total } else { 0 };
    let mut per_name: Vec<Vec<u32>> = (0..names.len()).map(|_| Vec::with_capacity(per_name_cap)).collect();
    let lookup: std::collections::HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let find = |name: &str| if names.len() <= 4 { names.iter().position(|n| *n == name) } else { lookup.get(name).copied() };
    for (bi, ((lc, runs), frames)) in logs.iter().zip(&index.log_runs).zip(&index.log_frames).enumerate() {
        // A dictionary column: each distinct name looked up once.
        let by_key: Vec<Option<usize>> = match lc.value_name {
            Text::Dict(_, values) => (0..datafusion::arrow::array::Array::len(values)).map(|k| find(values.value(k))).collect(),
            Text::Plain(_) => Vec::new(),
        };
        for i in 0..runs.len().min(frames.len()) {
            let which = match lc.value_name {
                Text::Dict(keys, _) => keys.get(i).and_then(|&k| by_key.get(usize::try_from(k).ok()?).copied().flatten()),
                Text::Plain(a) => find(a.value(i)),
            };
            let Some(which) = which else { continue };
            per_name[which].push(sel.len() as u32);
            sel.push(bi as u32, i as u32);
        }
    }
    (sel, per_name)
}

/// The loop columns a name's records use, outermost first (by depth, then
/// first appearance).
fn name_cols(index: &Index, sel: &Selected, recs: &[u32]) -> Vec<u32> {
    let f = &index.frames;
    let mut best: Vec<Option<(usize, usize)>> = vec![None; f.cols.len()]; // (depth, first seen)
    let mut seen = 0usize;
    let mut chain: Vec<u32> = Vec::new();
    let mut last_frame = NONE;
    for &r in recs {
        let start = sel.frame(r);
        if start == NONE || start == last_frame {
            continue;
        }
        last_frame = start;
        chain.clear();
        let mut p = start;
        while p != NONE && chain.len() < crate::index::MAX_DEPTH {
            chain.push(p);
            p = f.parent[p as usize];
        }
        for (depth, &fr) in chain.iter().rev().enumerate() {
            let c = f.col[fr as usize] as usize;
            match best[c] {
                Some((d, _)) if d <= depth => {}
                Some((_, s)) => best[c] = Some((depth, s)),
                None => {
                    best[c] = Some((depth, seen));
                    seen += 1;
                }
            }
        }
    }
    let mut out: Vec<(usize, usize, u32)> =
        best.iter().enumerate().filter_map(|(c, b)| b.map(|(d, s)| (d, s, c as u32))).collect();
    out.sort_unstable();
    out.into_iter().map(|(_, _, c)| c).collect()
}

/// Writes the frames of `start`'s chain into `dims` at row `row`, for the
/// columns `pos` maps to a slot (`pos[col] != NONE`).
fn fill_dims(index: &Index, start: u32, pos: &[u32], dims: &mut [Vec<u32>], row: usize) {
    let f = &index.frames;
    let mut p = start;
    let mut steps = 0;
    while p != NONE && steps < crate::index::MAX_DEPTH {
        let slot = pos[f.col[p as usize] as usize];
        if slot != NONE {
            dims[slot as usize][row] = p;
        }
        p = f.parent[p as usize];
        steps += 1;
    }
}

/// Equality of two frames as join keys: both absent, or the same iteration
/// and iterated value.
fn frame_eq(index: &Index, a: u32, b: u32) -> bool {
    if a == b {
        return true;
    }
    if a == NONE || b == NONE {
        return false;
    }
    let f = &index.frames;
    f.iteration[a as usize] == f.iteration[b as usize] && f.value[a as usize] == f.value[b as usize]
}

fn frame_hash(index: &Index, a: u32) -> (u64, u64) {
    if a == NONE {
        return (u64::MAX, u64::MAX);
    }
    let f = &index.frames;
    (f.iteration[a as usize] as u64, u64::from(f.value[a as usize]))
}

/// Order of two frames in one loop column: absent first, then iteration,
/// then the iterated value's text.
pub(crate) fn frame_cmp(index: &Index, a: u32, b: u32) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    match (a == NONE, b == NONE) {
        (true, _) => return Ordering::Less,
        (_, true) => return Ordering::Greater,
        _ => {}
    }
    let f = &index.frames;
    f.iteration[a as usize].cmp(&f.iteration[b as usize]).then_with(|| {
        let text = |v: u32| if v == NONE { None } else { f.values.get(v as usize).map(String::as_str) };
        text(f.value[a as usize]).cmp(&text(f.value[b as usize]))
    })
}

/// Starts the join with the first name's records.
fn first(index: &Index, sel: &Selected, recs: Vec<u32>, cols: Vec<u32>) -> Joined {
    let n = recs.len();
    let mut pos = vec![NONE; index.frames.cols.len()];
    for (j, &c) in cols.iter().enumerate() {
        pos[c as usize] = j as u32;
    }
    let mut dims = vec![vec![NONE; n]; cols.len()];
    let mut run = Vec::with_capacity(n);
    for (row, &r) in recs.iter().enumerate() {
        run.push(sel.run(r));
        fill_dims(index, sel.frame(r), &pos, &mut dims, row);
    }
    Joined { run, cols, dims, vals: vec![recs] }
}

/// Full outer join of `left` with the records `recs` of the next name, on the
/// run and the loop columns both sides have.
fn join(index: &Index, sel: &Selected, left: Joined, recs: &[u32], rcols: &[u32]) -> Joined {
    let ncols = index.frames.cols.len();
    let mut out_cols = left.cols.clone();
    for &c in rcols {
        if !out_cols.contains(&c) {
            out_cols.push(c);
        }
    }
    // Right side's frames for its own columns, slot k <-> rcols[k].
    let mut rpos = vec![NONE; ncols];
    for (k, &c) in rcols.iter().enumerate() {
        rpos[c as usize] = k as u32;
    }
    let mut rdims = vec![vec![NONE; recs.len()]; rcols.len()];
    for (row, &r) in recs.iter().enumerate() {
        fill_dims(index, sel.frame(r), &rpos, &mut rdims, row);
    }
    // Common columns: (left slot, right slot).
    let common: Vec<(usize, usize)> = left
        .cols
        .iter()
        .enumerate()
        .filter_map(|(j, c)| (rpos[*c as usize] != NONE).then_some((j, rpos[*c as usize] as usize)))
        .collect();
    let key_hash = |run: u32, frames: &mut dyn Iterator<Item = u32>| -> u64 {
        let mut h = FastHasher::default();
        h.write_u32(run);
        for fr in frames {
            let (a, b) = frame_hash(index, fr);
            h.write_u64(a);
            h.write_u64(b);
        }
        h.finish()
    };
    // Build side: the right records, chained per key hash.
    let mut head: FastMap<u64, u32> = FastMap::default();
    let mut next = vec![NONE; recs.len()];
    for (k, &r) in recs.iter().enumerate().rev() {
        let h = key_hash(sel.run(r), &mut common.iter().map(|&(_, rs)| rdims[rs][k]));
        let e = head.entry(h).or_insert(NONE);
        next[k] = *e;
        *e = k as u32;
    }
    let names = left.vals.len() + 1;
    let mut out = Joined { run: Vec::new(), cols: out_cols.clone(), dims: vec![Vec::new(); out_cols.len()], vals: vec![Vec::new(); names] };
    // Where each output column comes from: left slot, or right slot.
    let from: Vec<(u32, u32)> = out_cols
        .iter()
        .map(|&c| (left.cols.iter().position(|&x| x == c).map_or(NONE, |p| p as u32), rpos[c as usize]))
        .collect();
    let mut matched = vec![false; recs.len()];
    let push = |out: &mut Joined, l: Option<usize>, r: Option<usize>| {
        let run = match (l, r) {
            (Some(l), _) => left.run[l],
            (None, Some(r)) => sel.run(recs[r]),
            (None, None) => return,
        };
        out.run.push(run);
        for (j, &(ls, rs)) in from.iter().enumerate() {
            let v = match (l, r) {
                (Some(l), _) if ls != NONE => left.dims[ls as usize][l],
                (_, Some(r)) if rs != NONE => rdims[rs as usize][r],
                _ => NONE,
            };
            out.dims[j].push(v);
        }
        for (i, lv) in left.vals.iter().enumerate() {
            out.vals[i].push(l.map_or(NONE, |l| lv[l]));
        }
        out.vals[names - 1].push(r.map_or(NONE, |r| recs[r]));
    };
    for l in 0..left.len() {
        let h = key_hash(left.run[l], &mut common.iter().map(|&(ls, _)| left.dims[ls][l]));
        let mut k = head.get(&h).copied().unwrap_or(NONE);
        let mut any = false;
        while k != NONE {
            let ku = k as usize;
            if sel.run(recs[ku]) == left.run[l] && common.iter().all(|&(ls, rs)| frame_eq(index, left.dims[ls][l], rdims[rs][ku])) {
                push(&mut out, Some(l), Some(ku));
                matched[ku] = true;
                any = true;
            }
            k = next[ku];
        }
        if !any {
            push(&mut out, Some(l), None);
        }
    }
    for (k, m) in matched.iter().enumerate() {
        if !m {
            push(&mut out, None, Some(k));
        }
    }
    out
}

/// The source bits of row `row` of `j`.
fn row_source(sel: &Selected, j: &Joined, row: usize) -> u8 {
    j.vals.iter().map(|v| v[row]).filter(|&r| r != NONE).fold(0, |acc, r| acc | sel.source(r))
}

/// The `source` of every joined row: [`Sources::Forward`] when every
/// `logs` batch is a forward seal's (nothing to compute per row), else
/// the source bits of each row.
#[derive(Debug)]
pub(crate) enum Sources {
    /// Every row is [`FORWARD`].
    Forward,
    /// Row `r`'s bits ([`FORWARD`], [`REPLAY`] or both).
    Rows(Vec<u8>),
}

impl Sources {
    /// The sources of `j`'s rows.
    pub fn of(sel: &Selected, logs: &[LogCols<'_>], j: &Joined) -> Sources {
        if logs.iter().all(LogCols::all_forward) {
            return Sources::Forward;
        }
        Sources::Rows((0..j.len()).map(|r| row_source(sel, j, r)).collect())
    }

    /// Row `r`'s bits.
    #[inline]
    fn bits(&self, r: usize) -> u8 {
        match self {
            Sources::Forward => FORWARD,
            Sources::Rows(b) => b.get(r).copied().unwrap_or(FORWARD),
        }
    }
}

/// Sorts the rows and drops exact duplicates; returns the kept row numbers.
fn order_and_dedup(index: &Index, sel: &Selected, logs: &[LogCols<'_>], j: &Joined, src: &Sources) -> Vec<u32> {
    let n = j.len();
    // Order of sources: forward, forward+replay, replay.
    let rank = |r: usize| match src.bits(r) {
        FORWARD => 0u8,
        REPLAY => 2,
        _ => 1,
    };
    let key_cmp = |a: usize, b: usize| -> Ordering {
        j.run[a]
            .cmp(&j.run[b])
            .then_with(|| {
                for d in &j.dims {
                    let o = frame_cmp(index, d[a], d[b]);
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                Ordering::Equal
            })
            .then_with(|| rank(a).cmp(&rank(b)))
    };
    let mut rows: Vec<u32> = (0..n as u32).collect();
    // Common case: the join produced the rows in order, each key once, so
    // there is nothing to sort and no duplicate to drop.
    if (1..n).all(|r| key_cmp(r - 1, r) == Ordering::Less) {
        return rows;
    }
    rows.sort_by(|&a, &b| {
        key_cmp(a as usize, b as usize).then_with(|| {
            for v in &j.vals {
                let (x, y) = (v[a as usize], v[b as usize]);
                let o = match (x == NONE, y == NONE) {
                    (true, true) => Ordering::Equal,
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (false, false) => sel.seq(x).cmp(&sel.seq(y)),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        })
    });
    // Drop exact duplicates inside each group of equal (run, loops, source).
    let same_values = |a: usize, b: usize| {
        j.vals.iter().all(|v| {
            let (x, y) = (v[a], v[b]);
            x == y || (x != NONE && y != NONE && output::same_value(logs, sel, x, y))
        })
    };
    let mut kept = Vec::with_capacity(n);
    let mut g = 0;
    while g < rows.len() {
        let mut e = g + 1;
        while e < rows.len() && key_cmp(rows[g] as usize, rows[e] as usize) == Ordering::Equal {
            e += 1;
        }
        if e - g <= 16 {
            let start = kept.len();
            for &r in &rows[g..e] {
                if !kept[start..].iter().any(|&k: &u32| same_values(k as usize, r as usize)) {
                    kept.push(r);
                }
            }
        } else {
            // A large group (a name logged many times in one iteration): hash.
            let mut seen: FastMap<u64, Vec<u32>> = FastMap::default();
            for &r in &rows[g..e] {
                let h = j.vals.iter().fold(0u64, |acc, v| {
                    let x = v[r as usize];
                    let vh = if x == NONE { 1 } else { output::value_hash(logs, sel, x) };
                    acc.rotate_left(17) ^ vh
                });
                let bucket = seen.entry(h).or_default();
                if !bucket.iter().any(|&k| same_values(k as usize, r as usize)) {
                    bucket.push(r);
                    kept.push(r);
                }
            }
        }
        g = e;
    }
    kept
}

/// `dataframe(names…)` over the indexed batches. `names` must be non-empty
/// and free of repeats.
pub(crate) fn pivot(index: &Index, logs: &[LogCols<'_>], names: &[&str], text: TextType) -> Result<RecordBatch> {
    let (sel, per_name) = select(index, logs, names);
    let mut joined: Option<Joined> = None;
    for recs in per_name {
        let cols = name_cols(index, &sel, &recs);
        joined = Some(match joined {
            None => first(index, &sel, recs, cols),
            Some(left) => join(index, &sel, left, &recs, &cols),
        });
    }
    let joined = joined.unwrap_or_default();
    let src = Sources::of(&sel, logs, &joined);
    let rows = order_and_dedup(index, &sel, logs, &joined, &src);
    output::build(index, logs, &sel, &joined, &src, &rows, names, text)
}

/// The run-level pivot (`dataframe()` without names): one row per run that
/// logged anything outside loops, one column per run-level name in order of
/// first appearance. A name logged more than once at run level in one run
/// shows its last forward value (a replayed value only when no forward one
/// exists).
pub(crate) fn run_level(index: &Index, logs: &[LogCols<'_>], text: TextType) -> Result<RecordBatch> {
    let mut sel = Selected::with_capacity(index, logs, 0);
    let mut names: Vec<&str> = Vec::new();
    let mut ids: std::collections::HashMap<&str, u32> = std::collections::HashMap::new();
    let mut first: Vec<(u32, u8, u64)> = Vec::new(); // (run, replay?, seq) of the first record
    let mut cells: FastMap<(u32, u32), u32> = FastMap::default();
    for (bi, (lc, runs)) in logs.iter().zip(&index.log_runs).enumerate() {
        for (i, &run) in runs.iter().enumerate() {
            if lc.ctx_id.value(i) != flor_core::recorder::RUN_LEVEL_CTX {
                continue;
            }
            let name = lc.value_name.value(i);
            let id = *ids.entry(name).or_insert_with(|| {
                names.push(name);
                first.push((u32::MAX, u8::MAX, u64::MAX));
                (names.len() - 1) as u32
            });
            let (src, seq) = (lc.source_bits(i), lc.seq.value(i));
            let key = (run, src, seq);
            if key < first[id as usize] {
                first[id as usize] = key;
            }
            let r = sel.len() as u32;
            sel.push(bi as u32, i as u32);
            let cell = cells.entry((run, id)).or_insert(r);
            let better = |a: u32, b: u32| (sel.source(a) == FORWARD, sel.seq(a)) > (sel.source(b) == FORWARD, sel.seq(b));
            if better(r, *cell) {
                *cell = r;
            }
        }
    }
    let mut order: Vec<u32> = (0..names.len() as u32).collect();
    order.sort_by_key(|&n| first[n as usize]);
    let mut runs: Vec<u32> = cells.keys().map(|(r, _)| *r).collect();
    runs.sort_unstable();
    runs.dedup();
    let mut joined = Joined { run: runs.clone(), cols: Vec::new(), dims: Vec::new(), vals: Vec::new() };
    for &n in &order {
        joined.vals.push(runs.iter().map(|&r| cells.get(&(r, n)).copied().unwrap_or(NONE)).collect());
    }
    let labels: Vec<&str> = order.iter().map(|&n| names[n as usize]).collect();
    let rows: Vec<u32> = (0..runs.len() as u32).collect();
    let src = Sources::of(&sel, logs, &joined);
    output::build(index, logs, &sel, &joined, &src, &rows, &labels, text)
}
