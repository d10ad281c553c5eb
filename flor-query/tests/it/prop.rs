//! Property test: the pivot equals a direct model of FlorDB 4.0.1's
//! `pivot` (per-name frames, outer merges on the common columns with null
//! keys equal, duplicates dropped), with the run id as part of every key.

use crate::harness::Run;
use flor_query::arrow::array::{Array, AsArray, RecordBatch};
use flor_query::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use flor_query::{FlorContext, Tables};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// One event of a generated script.
#[derive(Debug, Clone)]
enum Ev {
    /// Log `name` (0 = x, 1 = y) with a small int.
    Log(u8, i64),
    /// A loop `epoch` (depth 0) or `step` (depth 1) with one event list per iteration.
    Loop(Vec<Vec<Ev>>),
}

fn events(depth: u32) -> BoxedStrategy<Vec<Ev>> {
    let log = (0u8..2, 0i64..3).prop_map(|(n, v)| Ev::Log(n, v));
    if depth >= 2 {
        return prop::collection::vec(log, 0..3).boxed();
    }
    let lp = prop::collection::vec(events(depth + 1), 0..3).prop_map(Ev::Loop);
    prop::collection::vec(prop_oneof![3 => log, 1 => lp], 0..4).boxed()
}

#[derive(Debug, Clone)]
struct GenRun {
    file: u8,
    secs: i64,
    body: Vec<Ev>,
}

fn runs() -> impl Strategy<Value = Vec<GenRun>> {
    prop::collection::vec((0u8..2, 0i64..2, events(0)).prop_map(|(file, secs, body)| GenRun { file, secs, body }), 1..4)
}

const NAMES: [&str; 2] = ["x", "y"];
const LOOPS: [&str; 2] = ["epoch", "step"];

/// A record as the model sees it: run number, loop path, name, value.
type Rec = (usize, Vec<i64>, u8, i64);

fn play(run: &mut Run, evs: &[Ev], path: &mut Vec<i64>, recs: &mut Vec<Rec>, run_no: usize) {
    for ev in evs {
        match ev {
            Ev::Log(n, v) => {
                run.log(NAMES[*n as usize], *v);
                recs.push((run_no, path.clone(), *n, *v));
            }
            Ev::Loop(iters) => {
                let name = LOOPS[path.len()];
                run.enter(name);
                for (i, body) in iters.iter().enumerate() {
                    run.iter(i as i64, None);
                    path.push(i as i64);
                    play(run, body, path, recs, run_no);
                    path.pop();
                }
                run.exit(name);
            }
        }
    }
}

/// A model row: column -> cell (None = null). Columns: "run", "epoch", "step", names.
type Row = BTreeMap<String, Option<i64>>;

fn model(recs: &[Rec], names: &[u8]) -> Vec<Row> {
    let mut joined: Option<(BTreeSet<String>, Vec<Row>)> = None;
    for &n in names {
        let mine: Vec<&Rec> = recs.iter().filter(|r| r.2 == n).collect();
        let depth = mine.iter().map(|r| r.1.len()).max().unwrap_or(0);
        let mut cols: BTreeSet<String> = BTreeSet::from(["run".to_string(), NAMES[n as usize].to_string()]);
        cols.extend(LOOPS[..depth].iter().map(|s| s.to_string()));
        let rows: Vec<Row> = mine
            .iter()
            .map(|r| {
                let mut row = Row::new();
                row.insert("run".into(), Some(r.0 as i64));
                for (d, l) in LOOPS[..depth].iter().enumerate() {
                    row.insert(l.to_string(), r.1.get(d).copied());
                }
                row.insert(NAMES[n as usize].into(), Some(r.3));
                row
            })
            .collect();
        joined = Some(match joined {
            None => (cols, rows),
            Some((lcols, lrows)) => {
                let common: Vec<&String> = lcols.intersection(&cols).collect();
                let all: BTreeSet<String> = lcols.union(&cols).cloned().collect();
                let key = |r: &Row| common.iter().map(|c| r.get(*c).copied().flatten()).collect::<Vec<_>>();
                let fill = |r: &Row| all.iter().map(|c| (c.clone(), r.get(c).copied().flatten())).collect::<Row>();
                let mut out = Vec::new();
                let mut matched = vec![false; rows.len()];
                for l in &lrows {
                    let mut any = false;
                    for (k, r) in rows.iter().enumerate() {
                        if key(l) == key(r) {
                            let mut m = fill(l);
                            for (c, v) in r {
                                m.insert(c.clone(), *v);
                            }
                            out.push(m);
                            matched[k] = true;
                            any = true;
                        }
                    }
                    if !any {
                        out.push(fill(l));
                    }
                }
                for (k, r) in rows.iter().enumerate() {
                    if !matched[k] {
                        out.push(fill(r));
                    }
                }
                (all, out)
            }
        });
    }
    let (_, rows) = joined.unwrap_or_default();
    let set: BTreeSet<Row> = rows.into_iter().collect();
    set.into_iter().collect()
}

/// Our rows in the model's terms; `runs` maps (tstamp, filename) to run numbers.
fn ours(b: &RecordBatch, names: &[u8], runs: &[(i64, String)]) -> Vec<(Vec<usize>, Row)> {
    let ts = b.column_by_name("tstamp").unwrap().as_primitive::<TimestampMicrosecondType>();
    let file = b.column_by_name("filename").unwrap().as_string::<i32>();
    let int = |name: &str, i: usize| {
        b.column_by_name(name).and_then(|c| match c.as_primitive_opt::<Int64Type>() {
            Some(c) => c.is_valid(i).then(|| c.value(i)),
            None => {
                assert_eq!(c.null_count(), c.len(), "a name with no values is an all-null column");
                None
            }
        })
    };
    (0..b.num_rows())
        .map(|i| {
            let candidates: Vec<usize> =
                runs.iter().enumerate().filter(|(_, r)| r.0 == ts.value(i) && r.1 == file.value(i)).map(|(k, _)| k).collect();
            let mut row = Row::new();
            for l in LOOPS {
                row.insert(l.into(), int(l, i));
            }
            for &n in names {
                row.insert(NAMES[n as usize].into(), int(NAMES[n as usize], i));
            }
            (candidates, row)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn pivot_matches_the_flordb_model(gen in runs(), order in prop_oneof![Just(vec![0u8]), Just(vec![1u8]), Just(vec![0u8, 1]), Just(vec![1u8, 0])]) {
        let mut tables = Tables::default();
        let mut recs = Vec::new();
        let mut keys = Vec::new();
        for (k, g) in gen.iter().enumerate() {
            let file = ["a.py", "b.py"][g.file as usize];
            let mut run = Run::new(file, g.secs, k as u64 + 1);
            play(&mut run, &g.body, &mut Vec::new(), &mut recs, k);
            let d = run.data();
            tables.logs.push(d.logs_batch().unwrap());
            tables.loops.push(d.loops_batch().unwrap());
            keys.push((run.meta().key.tstamp, file.to_string()));
        }
        let ctx = FlorContext::from_tables(tables).unwrap();
        let names: Vec<&str> = order.iter().map(|&n| NAMES[n as usize]).collect();
        let b = ctx.dataframe(&names).unwrap();
        let want = model(&recs, &order);
        let got = ours(&b, &order, &keys);
        prop_assert_eq!(got.len(), want.len(), "rows: got {:?}\nwant {:?}", got, want);
        // Every model row is matched by one of ours (runs told apart by number).
        let mut free: Vec<bool> = vec![true; got.len()];
        for w in &want {
            let run = w["run"].unwrap_or(-1) as usize;
            let mut visible = w.clone();
            visible.remove("run");
            for l in LOOPS { visible.entry(l.to_string()).or_insert(None); }
            let hit = got.iter().enumerate().position(|(k, (cands, row))| free[k] && cands.contains(&run) && *row == visible);
            prop_assert!(hit.is_some(), "model row {:?} missing from {:?}", w, got);
            if let Some(k) = hit { free[k] = false; }
        }
        // Ordered by tstamp, then (within a run) the loops, absent first.
        let key = |r: &(Vec<usize>, Row)| (keys[r.0[0]].0, r.1.get("epoch").copied().flatten(), r.1.get("step").copied().flatten());
        for w in got.windows(2) {
            prop_assert!(key(&w[0]).0 <= key(&w[1]).0);
            if key(&w[0]).0 == key(&w[1]).0 && w[0].0 == w[1].0 && w[0].0.len() == 1 {
                prop_assert!((key(&w[0]).1, key(&w[0]).2) <= (key(&w[1]).1, key(&w[1]).2), "order {:?}", got);
            }
        }
    }
}
