//! The recording handle: open/free, interned names, typed `log` calls,
//! `arg`, loops, flush and commit.

use crate::buffer::{cstr_arg, str_arg, write_buffer, write_out, FlorBuffer};
use crate::checkpoint::Checkpoints;
use crate::status::{guard, FfiError, FfiResult, FlorStatus};
use flordb::{Flor, Options, Value};
use std::ffi::c_char;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, RwLock};

/// An open flordb session of one script in one project (opaque).
///
/// Made by [`flor_open`], released by [`flor_free`]. All functions taking a
/// handle may be called from several threads at once.
pub struct FlorHandle {
    pub(crate) flor: Flor,
    /// Interned names: `names[id]` was interned as `id`.
    names: RwLock<Vec<String>>,
    /// `--kwargs` of the argv the handle was opened with (raw text).
    kwargs: BTreeMap<String, String>,
    pub(crate) checkpoints: Mutex<Checkpoints>,
    /// The last `dataframe` context, reused while nothing changed
    /// (`flor_query_dataframe`).
    pub(crate) query_cache: Mutex<crate::query::QueryCache>,
}

impl FlorHandle {
    /// A handle around `flor` with the raw `--kwargs` it was opened with.
    pub(crate) fn boxed(flor: Flor, kwargs: BTreeMap<String, String>) -> Box<FlorHandle> {
        Box::new(FlorHandle { flor, names: RwLock::new(Vec::new()), kwargs, checkpoints: Mutex::new(Checkpoints::default()), query_cache: Mutex::default() })
    }

    pub(crate) fn checkpoints(&self) -> MutexGuard<'_, Checkpoints> {
        self.checkpoints.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log(&self, id: u32, value: Value) -> FfiResult {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        let name = names
            .get(id as usize)
            .ok_or_else(|| FfiError::new(FlorStatus::InvalidArgument, format!("name id {id} was not interned by this handle")))?;
        Ok(self.flor.log(name, value)?)
    }
}

/// Borrows the handle behind `h`.
///
/// # Safety
/// `h` must be NULL or a live handle from [`flor_open`].
pub(crate) unsafe fn handle<'a>(h: *const FlorHandle) -> FfiResult<&'a FlorHandle> {
    // SAFETY: NULL or live by the caller's contract.
    unsafe { h.as_ref() }.ok_or_else(|| FfiError::null("handle"))
}

/// Opens a session on the project containing `dir`.
///
/// - `dir`: a directory inside the project (NUL-terminated UTF-8).
/// - `filename`: the script's path relative to the repository root, as
///   recorded in the `filename` column; NULL for the executable's name.
/// - `argv`/`argc`: the command line to read `--kwargs k=v …` from
///   (program name first); NULL/0 for none.
/// - `out`: receives the handle on success.
///
/// Creates nothing on disk: the run (and `.flor/`) starts with the first
/// record, and recording outside a git repository fails there with
/// `FLOR_STATUS_NOT_A_REPOSITORY`. Opening recovers write-ahead logs left
/// by dead processes.
///
/// Errors: `FLOR_STATUS_IO` when `dir` does not exist;
/// `FLOR_STATUS_BAD_KWARG` for a `--kwargs` item without `=`.
///
/// # Safety
/// String arguments must be NULL or NUL-terminated; `argv` must hold
/// `argc` such strings; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn flor_open(
    dir: *const c_char,
    filename: *const c_char,
    argv: *const *const c_char,
    argc: usize,
    out: *mut *mut FlorHandle,
) -> FlorStatus {
    guard(|| {
        if out.is_null() {
            return Err(FfiError::null("out"));
        }
        // SAFETY: NUL-terminated or NULL by contract.
        let dir = unsafe { cstr_arg(dir, "dir") }?.ok_or_else(|| FfiError::null("dir"))?;
        // SAFETY: as above.
        let filename = unsafe { cstr_arg(filename, "filename") }?.map(str::to_owned);
        let mut args = Vec::with_capacity(argc);
        if argc > 0 {
            if argv.is_null() {
                return Err(FfiError::null("argv"));
            }
            // SAFETY: `argv` holds `argc` pointers by contract.
            for p in unsafe { std::slice::from_raw_parts(argv, argc) } {
                // SAFETY: each is NUL-terminated by contract.
                args.push(unsafe { cstr_arg(*p, "argv") }?.ok_or_else(|| FfiError::null("argv[i]"))?.to_owned());
            }
        }
        let kwargs = flordb::core::args::Kwargs::parse(args.iter().cloned())?.values;
        let opts = Options { filename, argv: Some(args), ..Options::default() };
        let flor = Flor::open_with(dir, opts)?;
        let h = FlorHandle::boxed(flor, kwargs);
        // SAFETY: checked non-NULL above.
        unsafe { out.write(Box::into_raw(h)) };
        Ok(())
    })
}

/// Commits the current run (as [`flor_commit`]) and releases the handle.
/// Accepts NULL. A failed commit is reported on stderr; the run's
/// write-ahead log is then recovered as an interrupted run on the next open.
///
/// # Safety
/// `h` must be NULL or a live handle, not used after this call.
#[no_mangle]
pub unsafe extern "C" fn flor_free(h: *mut FlorHandle) {
    if h.is_null() {
        return;
    }
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: a live handle from `flor_open`, released once (contract).
        let h = unsafe { Box::from_raw(h) };
        if let Err(e) = h.checkpoints().close() {
            eprintln!("flordb: closing the checkpoint store failed: {}", e.message);
        }
        drop(h); // `Flor`'s drop commits
    }));
}

/// Interns a value name; `out_id` receives its id for the `flor_log_*`
/// calls. Interning the same name again returns the same id.
///
/// Errors: `FLOR_STATUS_EMPTY_NAME`; `FLOR_STATUS_INVALID_UTF8`.
///
/// # Safety
/// `h` live; `name` points to `len` bytes; `out_id` writable.
#[no_mangle]
pub unsafe extern "C" fn flor_name_intern(h: *const FlorHandle, name: *const c_char, len: usize, out_id: *mut u32) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let (h, name) = unsafe { (handle(h)?, str_arg(name, len, "name")?) };
        if name.is_empty() {
            return Err(flordb::core::Error::EmptyName.into());
        }
        if out_id.is_null() {
            return Err(FfiError::null("out_id"));
        }
        let mut names = h.names.write().unwrap_or_else(|p| p.into_inner());
        let id = match names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                names.push(name.to_owned());
                names.len() - 1
            }
        };
        let id = u32::try_from(id).map_err(|_| FfiError::new(FlorStatus::InvalidArgument, "more than 2^32 names"))?;
        write_out(out_id, id, "out_id")
    })
}

/// Logs a float under the interned name `id` in the current loop context.
///
/// Durable against a process kill within the flush interval (100 ms).
/// Errors: `FLOR_STATUS_NOT_A_REPOSITORY` outside a git repository (the
/// first record starts the run); `FLOR_STATUS_INVALID_ARGUMENT` for an
/// unknown id; storage errors.
///
/// # Safety
/// `h` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn flor_log_f64(h: *const FlorHandle, id: u32, value: f64) -> FlorStatus {
    // SAFETY: contract.
    guard(|| unsafe { handle(h) }?.log(id, Value::Float(value)))
}

/// As [`flor_log_f64`] for a 64-bit integer.
///
/// # Safety
/// `h` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn flor_log_i64(h: *const FlorHandle, id: u32, value: i64) -> FlorStatus {
    // SAFETY: contract.
    guard(|| unsafe { handle(h) }?.log(id, Value::Int(value)))
}

/// As [`flor_log_f64`] for a boolean.
///
/// # Safety
/// `h` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn flor_log_bool(h: *const FlorHandle, id: u32, value: bool) -> FlorStatus {
    // SAFETY: contract.
    guard(|| unsafe { handle(h) }?.log(id, Value::Bool(value)))
}

/// As [`flor_log_f64`] for a UTF-8 string of `len` bytes (NUL bytes allowed).
///
/// # Safety
/// `h` live; `value` points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn flor_log_str(h: *const FlorHandle, id: u32, value: *const c_char, len: usize) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let (h, v) = unsafe { (handle(h)?, str_arg(value, len, "value")?) };
        h.log(id, Value::Str(v.to_owned()))
    })
}

/// As [`flor_log_f64`] for a JSON document (a list or dict from Python).
/// Errors: `FLOR_STATUS_INVALID_ARGUMENT` when the text is not JSON.
///
/// # Safety
/// `h` live; `json` points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn flor_log_json(h: *const FlorHandle, id: u32, json: *const c_char, len: usize) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let (h, v) = unsafe { (handle(h)?, str_arg(json, len, "json")?) };
        let v = Value::json(v).map_err(|e| FfiError::new(FlorStatus::InvalidArgument, format!("value is not JSON: {e}")))?;
        h.log(id, v)
    })
}

/// As [`flor_log_f64`] for the text form (`repr`) of a value with no better
/// type; stored with `value_type = repr`.
///
/// # Safety
/// `h` live; `text` points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn flor_log_repr(h: *const FlorHandle, id: u32, text: *const c_char, len: usize) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let (h, v) = unsafe { (handle(h)?, str_arg(text, len, "text")?) };
        h.log(id, Value::Repr(v.to_owned()))
    })
}

/// Runs `Flor::arg` for `name` with `default` and writes the result.
unsafe fn arg_value(h: *const FlorHandle, name: *const c_char, len: usize, default: Value) -> FfiResult<Value> {
    // SAFETY: forwarded contract.
    let (h, name) = unsafe { (handle(h)?, str_arg(name, len, "name")?) };
    Ok(h.flor.arg(name, default)?)
}

/// `arg(name, default)` for an integer default: `--kwargs name=…` parsed as
/// an integer, else `default`; logged at the current context.
/// Errors: `FLOR_STATUS_BAD_ARG` naming the argument when the text does
/// not parse; as [`flor_log_f64`].
///
/// # Safety
/// `h` live; `name` points to `len` bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn flor_arg_i64(h: *const FlorHandle, name: *const c_char, len: usize, default: i64, out: *mut i64) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        match unsafe { arg_value(h, name, len, Value::Int(default)) }? {
            Value::Int(v) => write_out(out, v, "out"),
            other => Err(unexpected(&other)),
        }
    })
}

/// As [`flor_arg_i64`] for a float default.
///
/// # Safety
/// As [`flor_arg_i64`].
#[no_mangle]
pub unsafe extern "C" fn flor_arg_f64(h: *const FlorHandle, name: *const c_char, len: usize, default: f64, out: *mut f64) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        match unsafe { arg_value(h, name, len, Value::Float(default)) }? {
            Value::Float(v) => write_out(out, v, "out"),
            other => Err(unexpected(&other)),
        }
    })
}

/// As [`flor_arg_i64`] for a boolean default (`true/false/1/0/yes/no`, any case).
///
/// # Safety
/// As [`flor_arg_i64`].
#[no_mangle]
pub unsafe extern "C" fn flor_arg_bool(h: *const FlorHandle, name: *const c_char, len: usize, default: bool, out: *mut bool) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        match unsafe { arg_value(h, name, len, Value::Bool(default)) }? {
            Value::Bool(v) => write_out(out, v, "out"),
            other => Err(unexpected(&other)),
        }
    })
}

/// As [`flor_arg_i64`] for a string default; `out` receives the UTF-8 text
/// (release it with [`flor_buffer_free`]).
///
/// # Safety
/// `h` live; `name`/`default` point to `len`/`default_len` bytes; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn flor_arg_str(
    h: *const FlorHandle,
    name: *const c_char,
    len: usize,
    default: *const c_char,
    default_len: usize,
    out: *mut FlorBuffer,
) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let d = unsafe { str_arg(default, default_len, "default") }?.to_owned();
        // SAFETY: contract.
        match unsafe { arg_value(h, name, len, Value::Str(d)) }? {
            Value::Str(v) => write_buffer(out, v.into_bytes()),
            other => Err(unexpected(&other)),
        }
    })
}

/// As [`flor_arg_i64`] for a list default given as JSON text: `a,b` casts
/// each item to the type of the default's first item (strings otherwise),
/// a JSON list is taken as is. `out` receives the JSON text of the list.
///
/// # Safety
/// As [`flor_arg_str`].
#[no_mangle]
pub unsafe extern "C" fn flor_arg_json(
    h: *const FlorHandle,
    name: *const c_char,
    len: usize,
    default_json: *const c_char,
    default_len: usize,
    out: *mut FlorBuffer,
) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let d = unsafe { str_arg(default_json, default_len, "default_json") }?;
        let d = Value::json(d).map_err(|e| FfiError::new(FlorStatus::InvalidArgument, format!("default is not JSON: {e}")))?;
        // SAFETY: contract.
        match unsafe { arg_value(h, name, len, d) }? {
            Value::Json(v) => write_buffer(out, v.into_bytes()),
            other => Err(unexpected(&other)),
        }
    })
}

/// Looks up the raw text of `--kwargs name=…` without logging anything:
/// `found` receives whether it was given, `out` its text (empty when not).
///
/// # Safety
/// `h` live; `name` points to `len` bytes; `found` and `out` writable.
#[no_mangle]
pub unsafe extern "C" fn flor_arg_lookup(
    h: *const FlorHandle,
    name: *const c_char,
    len: usize,
    found: *mut bool,
    out: *mut FlorBuffer,
) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let (h, name) = unsafe { (handle(h)?, str_arg(name, len, "name")?) };
        if found.is_null() || out.is_null() {
            return Err(FfiError::null("found/out"));
        }
        let value = h.kwargs.get(name).cloned();
        write_out(found, value.is_some(), "found")?;
        write_buffer(out, value.unwrap_or_default().into_bytes())
    })
}

fn unexpected(v: &Value) -> FfiError {
    FfiError::new(FlorStatus::Internal, format!("arg returned a {} value for a default of another type", v.value_type().as_str()))
}

/// Opens the loop `name` (then [`flor_loop_iterate`] per iteration and
/// [`flor_loop_exit`] at its end).
/// Errors: `FLOR_STATUS_EMPTY_LOOP_NAME`.
///
/// # Safety
/// `h` live; `name` points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn flor_loop_enter(h: *const FlorHandle, name: *const c_char, len: usize) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let (h, name) = unsafe { (handle(h)?, str_arg(name, len, "name")?) };
        Ok(h.flor.loop_enter(name)?)
    })
}

/// Starts iteration `index` (0-based) of the innermost open loop. `value`
/// (`value_len` bytes, NULL for none) is the iterated value's text, kept
/// when it differs from the index (a document name).
/// Errors: `FLOR_STATUS_LOOP_MISUSE` with no open loop; as [`flor_log_f64`].
///
/// # Safety
/// `h` live; `value` NULL or pointing to `value_len` bytes.
#[no_mangle]
pub unsafe extern "C" fn flor_loop_iterate(h: *const FlorHandle, index: i64, value: *const c_char, value_len: usize) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let h = unsafe { handle(h) }?;
        let value = if value.is_null() {
            None
        } else {
            // SAFETY: contract.
            Some(unsafe { str_arg(value, value_len, "value") }?.to_owned())
        };
        Ok(h.flor.iteration(index, value)?)
    })
}

/// Closes the innermost loop, which must be `name`.
/// Errors: `FLOR_STATUS_LOOP_MISUSE` when another loop is innermost.
///
/// # Safety
/// `h` live; `name` points to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn flor_loop_exit(h: *const FlorHandle, name: *const c_char, len: usize) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let (h, name) = unsafe { (handle(h)?, str_arg(name, len, "name")?) };
        Ok(h.flor.loop_exit(name)?)
    })
}

/// Writes pending records to the write-ahead log and fsyncs it.
///
/// # Safety
/// `h` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn flor_flush(h: *const FlorHandle) -> FlorStatus {
    // SAFETY: contract.
    guard(|| Ok(unsafe { handle(h) }?.flor.flush()?))
}

/// Seals the current run into Parquet segments and commits its code
/// snapshot to the shadow branch `flor.<branch>`; the next record starts
/// a new run. Pending checkpoints are made durable first. `committed`
/// (may be NULL) receives whether there was a run to seal.
///
/// Durability: on success the run is sealed and fsynced.
///
/// # Safety
/// `h` live; `committed` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn flor_commit(h: *const FlorHandle, committed: *mut bool) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let h = unsafe { handle(h) }?;
        h.checkpoints().close()?;
        let done = h.flor.commit()?.is_some();
        if !committed.is_null() {
            // SAFETY: non-NULL and writable by contract.
            unsafe { committed.write(done) };
        }
        Ok(())
    })
}

/// `projid`, project root, `filename` and current run of the handle, as a
/// JSON object: `{"projid": …, "root": …, "in_repo": bool, "filename": …,
/// "run": "<tstamp>-<run id>" or null, "loop_path": [[name, i], …]}`.
///
/// # Safety
/// `h` live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn flor_handle_info(h: *const FlorHandle, out: *mut FlorBuffer) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let h = unsafe { handle(h) }?;
        let store = h.flor.store();
        let info = serde_json::json!({
            "projid": store.projid(),
            "root": store.root().to_string_lossy(),
            "in_repo": store.in_repo(),
            "filename": h.flor.filename(),
            "run": h.flor.run().map(|k| k.file_stem()),
            "loop_path": h.flor.loop_path(),
        });
        write_buffer(out, info.to_string().into_bytes())
    })
}

/// The flordb version, a static NUL-terminated string.
#[no_mangle]
pub extern "C" fn flor_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
