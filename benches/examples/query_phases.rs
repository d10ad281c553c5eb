//! Where a cold `dataframe` call's time goes, phase by phase, in one fresh
//! process: open the store, scan the sealed segments, build the query
//! context, pivot. Run it on a project (e.g. one made by
//! `benches/peer_python.py`'s `dataframe` worker):
//!
//!     cargo run --release -p flor-benches --example query_phases -- DIR [NAME] [--full]
//!
//! Prints milliseconds per phase; `NAME` defaults to `loss`. The scan is
//! the one `flor.dataframe` does (`Store::scan_sealed` of `logs` and
//! `loops`); `--full` times `Store::scan` (every column of every table, as
//! SQL needs them) instead.

#![allow(clippy::expect_used, missing_docs)]

use flor_query::{FlorContext, Tables};
use flor_store::store::Store;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--full");
    let mut args = args.into_iter().filter(|a| a != "--full");
    let dir = args.next().expect("usage: query_phases DIR [NAME] [--full]");
    let name = args.next().unwrap_or_else(|| "loss".into());
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let store = Store::open(dir.as_ref()).expect("open");
    let open = ms(t);
    let t = Instant::now();
    let (ctx, rows, scan_ms, context) = if full {
        let scan = store.scan().expect("scan");
        let scan_ms = ms(t);
        let rows: usize = scan.logs.iter().map(|b| b.num_rows()).sum();
        let t = Instant::now();
        let ctx = FlorContext::from_tables(Tables::from(scan)).expect("context");
        (ctx, rows, scan_ms, ms(t))
    } else {
        let scan = store.scan_sealed(&["logs", "loops"]).expect("scan");
        let scan_ms = ms(t);
        let rows: usize = scan.logs.iter().map(|b| b.num_rows()).sum();
        let t = Instant::now();
        let ctx = FlorContext::from_sealed(scan, Tables::default()).expect("context");
        (ctx, rows, scan_ms, ms(t))
    };
    let t = Instant::now();
    let df = ctx.dataframe(&[name.as_str()]).expect("pivot");
    let pivot = ms(t);
    let t = Instant::now();
    let df2 = ctx.dataframe(&[name.as_str()]).expect("pivot");
    let pivot2 = ms(t);
    assert_eq!(df.num_rows(), df2.num_rows());
    println!(
        "logs rows {rows}, output rows {}: open {open:.1} ms, scan {scan_ms:.1} ms, context {context:.1} ms, pivot {pivot:.1} ms (again {pivot2:.1} ms), total {:.1} ms",
        df.num_rows(),
        open + scan_ms + context + pivot
    );
}
