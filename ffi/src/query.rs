//! Queries through the boundary: the pivoted `dataframe` and SQL, handed
//! out as an Arrow C stream (`struct ArrowArrayStream`, the Arrow C Stream
//! interface), which pyarrow imports without copying.
//!
//! `flor_query_dataframe` keeps the context the pivot reads (the project's
//! decoded segments and their index) in the handle after the call and
//! reuses it for the next call while the handle has no unsealed records
//! and `.flor/manifests` lists the same files (name, length, modification
//! time); it is dropped when either changes, or with the handle. It holds
//! the decoded records in memory (about 60 bytes per record: the resident
//! size of a process after one call over 10^6 records with one loop frame
//! each, with the cache against without; BENCHMARKS.md).
//! `FLOR_QUERY_CACHE=0` in the environment turns this off. SQL builds its
//! context per query.

use crate::buffer::{str_arg, str_list_arg};
use crate::handle::{handle, FlorHandle};
use crate::status::{guard, FfiError, FfiResult};
use arrow::array::{RecordBatch, RecordBatchIterator};
use arrow::ffi_stream::FFI_ArrowArrayStream;
use flordb::query::{FlorContext, Tables, TextType};
use flordb::store::store::Store;
use std::ffi::{c_char, OsString};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The sealed state a context was built from: each manifest's file name,
/// length in bytes and modification time, sorted. Manifests are write-once
/// and published last, so a new seal, a recovered run or a removed run
/// changes this list.
#[derive(Debug, PartialEq, Eq)]
struct SealedKey(Vec<(OsString, u64, Option<SystemTime>)>);

impl SealedKey {
    /// Lists `.flor/manifests`; `None` when it cannot be listed (then
    /// nothing is cached).
    fn of(store: &Store) -> Option<SealedKey> {
        let dir = store.flor_dir().join("manifests");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(SealedKey(Vec::new())),
            Err(_) => return None,
        };
        let mut v = Vec::new();
        for e in rd {
            let e = e.ok()?;
            let md = e.metadata().ok()?;
            v.push((e.file_name(), md.len(), md.modified().ok()));
        }
        v.sort();
        Some(SealedKey(v))
    }
}

/// The last `dataframe` context of a handle and the sealed state it holds
/// ([`FlorHandle::query_cache`]).
#[derive(Debug, Default)]
pub(crate) struct QueryCache(Option<(SealedKey, Arc<FlorContext>)>);

/// Whether `FLOR_QUERY_CACHE=0` turned the `dataframe` context cache off.
fn cache_disabled() -> bool {
    std::env::var_os("FLOR_QUERY_CACHE").is_some_and(|v| v == "0")
}

fn cache_lock(m: &Mutex<QueryCache>) -> std::sync::MutexGuard<'_, QueryCache> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The context `dataframe` reads: the cached one while the handle has no
/// unsealed records and the project's manifests are the ones it was built
/// from; otherwise a new one (kept for the next call when nothing is
/// unsealed).
fn dataframe_context(h: &FlorHandle) -> FfiResult<Arc<FlorContext>> {
    let pending = h.flor.pending()?;
    let live = pending.logs.iter().chain(&pending.loops).any(|b| b.num_rows() > 0);
    // Listed before the scan: a seal that lands in between is in the
    // context but not in the key, so the next call rebuilds (never stale).
    let key = if live || cache_disabled() { None } else { SealedKey::of(h.flor.store()) };
    if let Some(k) = &key {
        if let Some((ck, ctx)) = &cache_lock(&h.query_cache).0 {
            if ck == k {
                return Ok(Arc::clone(ctx));
            }
        }
    }
    // The pivot reads `logs` and `loops` only, their constant columns left
    // one value per file (`runs` files are not opened).
    let scan = h.flor.store().scan_sealed(&["logs", "loops"])?;
    let ctx = Arc::new(FlorContext::from_sealed(scan, Tables::from(pending))?);
    // Without a key the old entry goes too: it is not needed for what is
    // live now, and it holds a whole project's batches.
    cache_lock(&h.query_cache).0 = key.map(|k| (k, Arc::clone(&ctx)));
    Ok(ctx)
}

/// A query context over everything sealed in the handle's project plus the
/// handle's own unsealed run (so a script sees what it logged before
/// `commit`), with the `versions` table in a repository (for SQL; built per
/// query, not cached).
fn sql_context(h: &FlorHandle) -> FfiResult<FlorContext> {
    let store = h.flor.store();
    let mut scan = store.scan()?;
    scan.extend(h.flor.pending()?);
    let mut tables = Tables::from(scan);
    if store.in_repo() {
        // A history that cannot be read leaves `versions` empty rather than
        // failing every query (FlorContext::open does the same).
        if let Ok(b) = flordb::store::versions::list(store.root()) {
            tables.versions.push(b);
        }
    }
    Ok(FlorContext::from_tables(tables)?)
}

/// Moves `batch` into the caller's `ArrowArrayStream`.
fn export(batch: RecordBatch, out: *mut FFI_ArrowArrayStream) -> FfiResult {
    if out.is_null() {
        return Err(FfiError::null("out"));
    }
    let schema = batch.schema();
    let reader = RecordBatchIterator::new(vec![Ok(batch)], Arc::clone(&schema));
    let stream = FFI_ArrowArrayStream::new(Box::new(reader));
    // SAFETY: `out` is non-NULL and writable by the caller's contract; its
    // previous contents are not a live stream (they are overwritten, not
    // released), as the C Stream interface expects of an output argument.
    unsafe { out.write(stream) };
    Ok(())
}

/// The pivoted view `dataframe(names…)` (DESIGN.md §5): columns `projid,
/// tstamp (µs, UTC), filename, source`, one Int64 column per loop (0-based
/// iteration) and `<loop>_value` when an iterated value differs from its
/// index, then one column per name in the order given (typed: Int64,
/// Float64, Boolean or text; field metadata `flor.value_type`). Every text
/// column is LargeUtf8 (64-bit offsets), what pandas' pyarrow-backed
/// strings hold, so pandas takes it without a copy. With `n ==
/// 0`: one row per run, one column per run-level name. `latest` keeps only
/// the newest run of each script. `out` receives a stream of one batch;
/// the caller releases it (`out->release(out)`), usually by importing it.
///
/// Errors: storage errors reading segments; `FLOR_STATUS_QUERY_TABLE` for
/// segments that do not fit their table.
///
/// # Safety
/// `h` live; `names`/`lens` hold `n` (pointer, length) pairs; `out` points
/// to writable memory for one `struct ArrowArrayStream`.
#[no_mangle]
pub unsafe extern "C" fn flor_query_dataframe(
    h: *const FlorHandle,
    names: *const *const c_char,
    lens: *const usize,
    n: usize,
    latest: bool,
    out: *mut FFI_ArrowArrayStream,
) -> crate::FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let (h, names) = unsafe { (handle(h)?, str_list_arg(names, lens, n, "names")?) };
        let ctx = dataframe_context(h)?;
        let text = TextType::LargeUtf8;
        let batch = if latest { ctx.latest_dataframe_with(&names, text)? } else { ctx.dataframe_with(&names, text)? };
        export(batch, out)
    })
}

/// Runs one read-only SQL query over the tables `logs`, `loops`, `runs`,
/// `versions` (docs/FORMAT.md, "Query tables"); `out` receives its result
/// as a stream of one batch.
///
/// Errors: `FLOR_STATUS_SQL` with DataFusion's message.
///
/// # Safety
/// `h` live; `sql` points to `len` bytes; `out` as in [`flor_query_dataframe`].
#[no_mangle]
pub unsafe extern "C" fn flor_query_sql(
    h: *const FlorHandle,
    sql: *const c_char,
    len: usize,
    out: *mut FFI_ArrowArrayStream,
) -> crate::FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let (h, sql) = unsafe { (handle(h)?, str_arg(sql, len, "sql")?) };
        let batch = sql_context(h)?.sql(sql)?;
        export(batch, out)
    })
}
