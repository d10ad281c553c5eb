//! GumTree matching (Falleri et al., "Fine-grained and accurate source code
//! differencing", ASE 2014, §3): a greedy top-down phase that maps the
//! largest identical subtrees, then a bottom-up phase that maps containers
//! whose descendants are mostly mapped to each other, each followed by a
//! recovery pass over their still unmapped children.
//!
//! `a` is the new tree (targets left out), `b` the old one.

use std::collections::HashMap;

use super::tree::{Class, Id, Tree};

/// Subtrees lower than this are left to the bottom-up phase (paper §3.1,
/// `minHeight`): single tokens match too easily.
const MIN_HEIGHT: usize = 2;
/// A container is mapped when at least this share of its descendants is
/// mapped into the candidate (paper §3.2, `minDice`).
const MIN_DICE: f64 = 0.5;
/// Groups of identical subtrees whose pair count exceeds this are paired in
/// order instead of being ranked pair by pair (keeps pathological inputs,
/// thousands of identical lines, linear).
const MAX_GROUP_PAIRS: usize = 4096;
/// Containers whose mapped descendants lead to more old containers of the
/// same kind than this try only the nearest ones (bounds the work on
/// pathological nesting).
const MAX_CANDIDATES: usize = 64;
/// Child lists larger than this (product of the two lengths) skip the
/// longest-common-subsequence recovery.
const MAX_LCS_CELLS: usize = 4_000_000;

/// A one-to-one mapping between the nodes of `a` (new) and `b` (old).
pub(super) struct Mapping {
    to_old: Vec<Option<Id>>,
    to_new: Vec<Option<Id>>,
}

impl Mapping {
    fn new(a: &Tree, b: &Tree) -> Mapping {
        Mapping { to_old: vec![None; a.len()], to_new: vec![None; b.len()] }
    }

    /// The old node mapped to new node `x`.
    pub fn old_of(&self, x: Id) -> Option<Id> {
        self.to_old.get(x).copied().flatten()
    }

    /// The new node mapped to old node `y`.
    pub fn new_of(&self, y: Id) -> Option<Id> {
        self.to_new.get(y).copied().flatten()
    }

    fn is_free_new(&self, x: Id) -> bool {
        self.old_of(x).is_none()
    }

    fn is_free_old(&self, y: Id) -> bool {
        self.new_of(y).is_none()
    }

    fn link(&mut self, x: Id, y: Id) {
        if self.is_free_new(x) && self.is_free_old(y) {
            self.to_old[x] = Some(y);
            self.to_new[y] = Some(x);
        }
    }
}

/// Maps `a` (new) onto `b` (old).
pub(super) fn gumtree(a: &Tree, b: &Tree) -> Mapping {
    let mut m = Mapping::new(a, b);
    if a.len() == 0 || b.len() == 0 {
        return m;
    }
    top_down(a, b, &mut m);
    bottom_up(a, b, &mut m);
    m
}

/// A priority list of open nodes, by height (paper §3.1, `L1`/`L2`).
struct Queue {
    buckets: Vec<Vec<Id>>,
    max: usize,
}

impl Queue {
    fn new(t: &Tree) -> Queue {
        let mut q = Queue { buckets: vec![Vec::new(); t.height(Tree::ROOT) as usize + 1], max: 0 };
        q.push(t, Tree::ROOT);
        q
    }

    fn push(&mut self, t: &Tree, id: Id) {
        let h = t.height(id) as usize;
        if let Some(bucket) = self.buckets.get_mut(h) {
            bucket.push(id);
            self.max = self.max.max(h);
        }
    }

    fn peek_max(&mut self) -> usize {
        while self.max > 0 && self.buckets[self.max].is_empty() {
            self.max -= 1;
        }
        self.max
    }

    fn pop(&mut self) -> Vec<Id> {
        std::mem::take(&mut self.buckets[self.max])
    }

    fn open(&mut self, t: &Tree, id: Id) {
        for &c in t.children(id) {
            self.push(t, c);
        }
    }
}

fn link_isomorphic(a: &Tree, m: &mut Mapping, x: Id, y: Id) {
    for k in 0..a.size(x) {
        m.link(x + k, y + k);
    }
}

fn top_down(a: &Tree, b: &Tree, m: &mut Mapping) {
    let mut qa = Queue::new(a);
    let mut qb = Queue::new(b);
    let mut candidates: Vec<(Id, Id)> = Vec::new();
    loop {
        let (ha, hb) = (qa.peek_max(), qb.peek_max());
        if ha.min(hb) < MIN_HEIGHT {
            break;
        }
        if ha > hb {
            for x in qa.pop() {
                qa.open(a, x);
            }
            continue;
        }
        if hb > ha {
            for y in qb.pop() {
                qb.open(b, y);
            }
            continue;
        }
        let (la, lb) = (qa.pop(), qb.pop());
        let mut index: HashMap<u64, usize> = HashMap::new();
        let mut groups: Vec<(Vec<Id>, Vec<Id>)> = Vec::new();
        for (side, list, t) in [(0, &la, a), (1, &lb, b)] {
            for &n in list {
                let g = *index.entry(t.hash(n)).or_insert_with(|| {
                    groups.push((Vec::new(), Vec::new()));
                    groups.len() - 1
                });
                if side == 0 {
                    groups[g].0.push(n);
                } else {
                    groups[g].1.push(n);
                }
            }
        }
        for (ga, gb) in groups {
            match (ga.len(), gb.len()) {
                (_, 0) => ga.iter().for_each(|&x| qa.open(a, x)),
                (0, _) => gb.iter().for_each(|&y| qb.open(b, y)),
                (1, 1) => link_isomorphic(a, m, ga[0], gb[0]),
                (p, q) if p * q <= MAX_GROUP_PAIRS => {
                    for &x in &ga {
                        candidates.extend(gb.iter().map(|&y| (x, y)));
                    }
                }
                _ => {
                    for (&x, &y) in ga.iter().zip(&gb) {
                        link_isomorphic(a, m, x, y);
                    }
                    ga.iter().skip(gb.len()).for_each(|&x| qa.open(a, x));
                    gb.iter().skip(ga.len()).for_each(|&y| qb.open(b, y));
                }
            }
        }
    }
    // Ambiguous identical subtrees: prefer the pair whose parents share the
    // most mapped descendants, then the pair at the closer relative position.
    let mut parent_dice: HashMap<(Id, Id), f64> = HashMap::new();
    let mut ranked: Vec<(f64, f64, Id, Id)> = candidates
        .into_iter()
        .map(|(x, y)| {
            let d = match (a.parent(x), b.parent(y)) {
                (Some(p), Some(q)) => *parent_dice.entry((p, q)).or_insert_with(|| dice(a, b, m, p, q)),
                _ => 0.0,
            };
            let dist = (x as f64 / a.len() as f64 - y as f64 / b.len() as f64).abs();
            (d, dist, x, y)
        })
        .collect();
    ranked.sort_by(|l, r| r.0.total_cmp(&l.0).then(l.1.total_cmp(&r.1)).then(l.2.cmp(&r.2)).then(l.3.cmp(&r.3)));
    for (_, _, x, y) in ranked {
        if m.is_free_new(x) && m.is_free_old(y) {
            link_isomorphic(a, m, x, y);
        }
    }
}

/// Share of the descendants of `x` and `y` that are mapped to each other:
/// `2 |{d below x : m(d) below y}| / (|below x| + |below y|)` (paper §3.2).
fn dice(a: &Tree, b: &Tree, m: &Mapping, x: Id, y: Id) -> f64 {
    let below = (a.size(x) - 1) + (b.size(y) - 1);
    if below == 0 {
        return 0.0;
    }
    let common = (x + 1..x + a.size(x)).filter(|&d| m.old_of(d).is_some_and(|o| b.is_below(o, y))).count();
    2.0 * common as f64 / below as f64
}

fn bottom_up(a: &Tree, b: &Tree, m: &mut Mapping) {
    let mut seen = vec![usize::MAX; b.len()];
    let mut candidates: Vec<Id> = Vec::new();
    // Reverse preorder visits every child before its parent.
    for x in (1..a.len()).rev() {
        if !m.is_free_new(x) || a.children(x).is_empty() {
            continue;
        }
        candidates.clear();
        for d in x + 1..x + a.size(x) {
            let Some(o) = m.old_of(d) else { continue };
            let mut up = b.parent(o);
            while let Some(p) = up {
                if seen[p] == x {
                    break;
                }
                seen[p] = x;
                if b.kind(p) == a.kind(x) && m.is_free_old(p) && p != Tree::ROOT && candidates.len() < MAX_CANDIDATES {
                    candidates.push(p);
                }
                up = b.parent(p);
            }
        }
        let best = candidates
            .iter()
            .map(|&y| (dice(a, b, m, x, y), (x as f64 / a.len() as f64 - y as f64 / b.len() as f64).abs(), y))
            .max_by(|l, r| l.0.total_cmp(&r.0).then(r.1.total_cmp(&l.1)).then(r.2.cmp(&l.2)));
        if let Some((d, _, y)) = best {
            if d >= MIN_DICE {
                m.link(x, y);
                recover(a, b, m, x, y);
            }
        }
    }
    if a.kind(Tree::ROOT) == b.kind(Tree::ROOT) {
        m.link(Tree::ROOT, Tree::ROOT);
        recover(a, b, m, Tree::ROOT, Tree::ROOT);
    }
}

/// Last-chance matching under a freshly mapped pair (GumTree's recovery):
/// among the unmapped children, first identical subtrees in order (longest
/// common subsequence), then subtrees of the same shape that look edited
/// (a renamed variable), then kinds that occur once on each side;
/// repeated below every pair it maps.
fn recover(a: &Tree, b: &Tree, m: &mut Mapping, x: Id, y: Id) {
    let mut work = vec![(x, y)];
    while let Some((x, y)) = work.pop() {
        let free_a = |m: &Mapping| a.children(x).iter().copied().filter(|&c| m.is_free_new(c)).collect::<Vec<_>>();
        let free_b = |m: &Mapping| b.children(y).iter().copied().filter(|&c| m.is_free_old(c)).collect::<Vec<_>>();
        let (ca, cb) = (free_a(m), free_b(m));
        if ca.is_empty() || cb.is_empty() {
            continue;
        }
        for (p, q) in lcs(&ca, &cb, |p, q| a.hash(p) == b.hash(q)) {
            link_isomorphic(a, m, p, q);
        }
        let (ca, cb) = (free_a(m), free_b(m));
        for (p, q) in lcs(&ca, &cb, |p, q| a.shape(p) == b.shape(q) && plausible_update(a, b, p, q)) {
            for k in 0..a.size(p) {
                m.link(p + k, q + k);
            }
        }
        let (ca, cb) = (free_a(m), free_b(m));
        let mut counts: HashMap<u16, (usize, usize, Id, Id)> = HashMap::new();
        for &p in &ca {
            let e = counts.entry(a.kind(p)).or_insert((0, 0, p, 0));
            e.0 += 1;
        }
        for &q in &cb {
            if let Some(e) = counts.get_mut(&b.kind(q)) {
                e.1 += 1;
                e.3 = q;
            }
        }
        for &p in &ca {
            let Some(&(1, 1, _, q)) = counts.get(&a.kind(p)) else { continue };
            // Below the module any unique pair goes (the body block of a
            // mapped loop); at the top, two functions must share something.
            let leaf = a.children(p).is_empty() && b.children(q).is_empty();
            if leaf || x != Tree::ROOT || dice(a, b, m, p, q) > 0.0 {
                m.link(p, q);
                if !leaf {
                    work.push((p, q));
                }
            }
        }
    }
}

/// Whether two subtrees of the same shape look like one edited into the
/// other: single tokens, or an identifier in common at the same place, or
/// differences in identifiers only (a renamed variable).
fn plausible_update(a: &Tree, b: &Tree, p: Id, q: Id) -> bool {
    let same = |k: Id| a.label(p + k) == b.label(q + k);
    let n = a.size(p);
    n == 1
        || (0..n).any(|k| a.class(p + k) == Class::Identifier && same(k))
        || (0..n).all(|k| a.class(p + k) == Class::Identifier || !a.children(p + k).is_empty() || same(k))
}

/// Longest common subsequence of `xs` and `ys` under `eq`, as index pairs in
/// order; empty when the table would exceed [`MAX_LCS_CELLS`].
fn lcs(xs: &[Id], ys: &[Id], eq: impl Fn(Id, Id) -> bool) -> Vec<(Id, Id)> {
    let (n, k) = (xs.len(), ys.len());
    if n == 0 || k == 0 || n.saturating_mul(k) > MAX_LCS_CELLS {
        return Vec::new();
    }
    let w = k + 1;
    let mut t = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..k).rev() {
            t[i * w + j] =
                if eq(xs[i], ys[j]) { t[(i + 1) * w + j + 1] + 1 } else { t[(i + 1) * w + j].max(t[i * w + j + 1]) };
        }
    }
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n && j < k {
        if eq(xs[i], ys[j]) && t[i * w + j] == t[(i + 1) * w + j + 1] + 1 {
            out.push((xs[i], ys[j]));
            i += 1;
            j += 1;
        } else if t[(i + 1) * w + j] >= t[i * w + j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}
