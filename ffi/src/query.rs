//! Queries through the boundary: the pivoted `dataframe` and SQL, handed
//! out as an Arrow C stream (`struct ArrowArrayStream`, the Arrow C Stream
//! interface), which pyarrow imports without copying.

use crate::buffer::{str_arg, str_list_arg};
use crate::handle::{handle, FlorHandle};
use crate::status::{guard, FfiError, FfiResult};
use arrow::array::{RecordBatch, RecordBatchIterator};
use arrow::ffi_stream::FFI_ArrowArrayStream;
use flordb::query::{FlorContext, Tables};
use std::ffi::c_char;
use std::sync::Arc;

/// A query context over everything sealed in the handle's project plus the
/// handle's own unsealed run (so a script sees what it logged before
/// `commit`), with the `versions` table (`with_versions`, in a repository;
/// the pivot does not read it).
fn context(h: &FlorHandle, with_versions: bool) -> FfiResult<FlorContext> {
    let store = h.flor.store();
    let mut scan = store.scan()?;
    scan.extend(h.flor.pending()?);
    let mut tables = Tables::from(scan);
    if with_versions && store.in_repo() {
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
/// Float64, Boolean or Utf8; field metadata `flor.value_type`). With `n ==
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
        let ctx = context(h, false)?;
        let batch = if latest { ctx.latest_dataframe(&names)? } else { ctx.dataframe(&names)? };
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
        let batch = context(h, true)?.sql(sql)?;
        export(batch, out)
    })
}
