//! Replay and the command line through the C ABI: the handle a replay
//! worker records with, and `flor …` run in-process (`python -m flordb …`).

use crate::buffer::{cstr_arg, flor_buffer_free, write_buffer, FlorBuffer};
use crate::handle::FlorHandle;
use crate::status::{guard, FfiError, FlorStatus};
use flordb::core::{RunKey, Source};
use flordb::{Flor, Options};
use std::ffi::c_char;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};

/// Opens a replay worker's session: records go to the project at `root`
/// with `source = replay`, attached to the existing run `(tstamp, run_id)`;
/// no git snapshot is made. Used by the Python package's replay mode
/// (`FLOR_REPLAY`), see DESIGN.md §7 step 4.
///
/// - `root`: the user's repository root (NUL-terminated UTF-8).
/// - `filename`: the script's path relative to the root.
/// - `tstamp`: the run's `tstamp` in microseconds; `run_id`: its id.
/// - `out`: receives the handle on success.
///
/// Errors: `FLOR_STATUS_IO` when `root` does not exist.
///
/// # Safety
/// `root` and `filename` must be NUL-terminated; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn flor_open_replay(
    root: *const c_char,
    filename: *const c_char,
    tstamp: i64,
    run_id: u64,
    out: *mut *mut FlorHandle,
) -> FlorStatus {
    guard(|| {
        if out.is_null() {
            return Err(FfiError::null("out"));
        }
        // SAFETY: NUL-terminated by contract.
        let root = unsafe { cstr_arg(root, "root") }?.ok_or_else(|| FfiError::null("root"))?;
        // SAFETY: as above.
        let filename = unsafe { cstr_arg(filename, "filename") }?.ok_or_else(|| FfiError::null("filename"))?.to_owned();
        let opts = Options {
            filename: Some(filename),
            argv: Some(Vec::new()),
            source: Source::Replay,
            replay_of: Some(RunKey { tstamp, run_id }),
            snapshot: false,
            ..Options::default()
        };
        let flor = Flor::open_with(root, opts)?;
        let h = FlorHandle::boxed(flor, Default::default());
        // SAFETY: checked non-NULL above.
        unsafe { out.write(Box::into_raw(h)) };
        Ok(())
    })
}

/// Reads checkpoint `index` (0-based) of the recipe file at `path` (a JSON
/// array of `flor_store::checkpoint::Recipe`, written by the replay
/// coordinator, one per object a unit restores) from the run's pack files,
/// verifying every frame's CRC-32 and the whole object's blake3, without
/// opening the run's checkpoint database (the coordinator holds it). A
/// large object is decoded on up to `threads` threads (0: one per core).
/// `out` receives the bytes (release with `flor_buffer_free`).
///
/// Errors: `FLOR_STATUS_IO` when the recipe file or a pack cannot be read,
/// `FLOR_STATUS_CORRUPT` for a recipe file that does not parse,
/// `FLOR_STATUS_INVALID_ARGUMENT` when `index` is past its end,
/// `FLOR_STATUS_CHECKPOINT_DAMAGED` for bytes that fail their checks.
///
/// # Safety
/// `path` must be NUL-terminated; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn flor_checkpoint_load_recipe(path: *const c_char, index: usize, threads: usize, out: *mut FlorBuffer) -> FlorStatus {
    guard(|| {
        // SAFETY: NUL-terminated by contract.
        let path = unsafe { cstr_arg(path, "path") }?.ok_or_else(|| FfiError::null("path"))?;
        if out.is_null() {
            return Err(FfiError::null("out"));
        }
        let recipes = read_recipes(path)?;
        let recipe = recipes.get(index).ok_or_else(|| {
            FfiError::new(FlorStatus::InvalidArgument, format!("checkpoint recipe file {path} holds {} recipes, not {}", recipes.len(), index + 1))
        })?;
        write_buffer(out, load_recipe_into(recipe, threads, Vec::new())?)
    })
}

/// The recipes in the recipe file at `path`.
fn read_recipes(path: &str) -> Result<Vec<flordb::store::checkpoint::Recipe>, FfiError> {
    let text = std::fs::read(path).map_err(|e| FfiError::new(FlorStatus::Io, format!("cannot read the checkpoint recipe file {path}: {e}")))?;
    serde_json::from_slice(&text).map_err(|e| FfiError::new(FlorStatus::Corrupt, format!("checkpoint recipe file {path} does not parse: {e}")))
}

/// The checkpoint `recipe` describes, decoded on `threads` threads (0: one
/// per core) into `buf` (reused when large enough).
fn load_recipe_into(recipe: &flordb::store::checkpoint::Recipe, threads: usize, buf: Vec<u8>) -> Result<Vec<u8>, FfiError> {
    let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
    Ok(flordb::store::checkpoint::load_recipe_into(recipe, threads, buf)?)
}

/// Checkpoints read ahead on a background thread, in a fixed order (see
/// [`flor_prefetch_start`]).
pub struct FlorPrefetch {
    rx: Receiver<Result<Vec<u8>, FfiError>>,
    /// Buffers handed back by [`flor_prefetch_recycle`], for the thread to
    /// read later checkpoints into.
    recycle: Sender<Vec<u8>>,
}

/// Buffers the prefetch thread keeps for reuse, at most.
const POOL_MAX: usize = 64;

/// A buffer from `pool` of exactly `len` bytes (so that handing it out as a
/// `FlorBuffer` needs no reallocation), or an empty one.
fn take_buffer(pool: &mut Vec<Vec<u8>>, len: u64) -> Vec<u8> {
    match pool.iter().position(|b| b.len() as u64 == len) {
        Some(i) => pool.swap_remove(i),
        None => Vec::new(),
    }
}

/// Starts reading every checkpoint of the recipe file at `path` (as
/// [`flor_checkpoint_load_recipe`]), in the file's order, on a background
/// thread, at most `ahead` (at least 1) finished ones waiting: a replay
/// worker restores them one after the other while the next are read
/// (during its start-up and its iterations). Large objects are decoded on
/// up to `threads` threads (0: one per core). The file is read and parsed
/// before this returns. `out` receives the handle; take the checkpoints in
/// order with [`flor_prefetch_next`], release with [`flor_prefetch_free`].
///
/// Errors: as [`flor_checkpoint_load_recipe`] for the recipe file;
/// `FLOR_STATUS_IO` when the thread cannot start.
///
/// # Safety
/// `path` must be NUL-terminated; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn flor_prefetch_start(path: *const c_char, threads: usize, ahead: usize, out: *mut *mut FlorPrefetch) -> FlorStatus {
    guard(|| {
        // SAFETY: NUL-terminated by contract.
        let path = unsafe { cstr_arg(path, "path") }?.ok_or_else(|| FfiError::null("path"))?;
        if out.is_null() {
            return Err(FfiError::null("out"));
        }
        let recipes = read_recipes(path)?;
        let (tx, rx) = sync_channel(ahead.max(1));
        let (recycle, recycled) = channel::<Vec<u8>>();
        std::thread::Builder::new()
            .name("flor-prefetch".into())
            .spawn(move || {
                let mut pool: Vec<Vec<u8>> = Vec::new();
                for (i, r) in recipes.iter().enumerate() {
                    pool.extend(recycled.try_iter());
                    if pool.len() > POOL_MAX {
                        pool.drain(..pool.len() - POOL_MAX);
                    }
                    let buf = take_buffer(&mut pool, r.raw_len);
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load_recipe_into(r, threads, buf)))
                        .unwrap_or_else(|_| Err(FfiError::new(FlorStatus::Panic, format!("reading checkpoint recipe {i} panicked"))));
                    if tx.send(r).is_err() {
                        break; // the handle was freed
                    }
                }
            })
            .map_err(|e| FfiError::new(FlorStatus::Io, format!("cannot start the prefetch thread: {e}")))?;
        // SAFETY: checked non-NULL above.
        unsafe { out.write(Box::into_raw(Box::new(FlorPrefetch { rx, recycle }))) };
        Ok(())
    })
}

/// The next prefetched checkpoint's bytes (waiting for it); `out` receives
/// them (release with `flor_buffer_free`). Errors: the failure reading that
/// checkpoint (as `flor_checkpoint_load_recipe`), or `FLOR_STATUS_INVALID_ARGUMENT`
/// when every path was taken.
///
/// # Safety
/// `p` from [`flor_prefetch_start`], not freed; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn flor_prefetch_next(p: *mut FlorPrefetch, out: *mut FlorBuffer) -> FlorStatus {
    guard(|| {
        // SAFETY: live handle by contract.
        let p = unsafe { p.as_ref() }.ok_or_else(|| FfiError::null("prefetch"))?;
        match p.rx.recv() {
            Ok(r) => write_buffer(out, r?),
            Err(_) => Err(FfiError::new(FlorStatus::InvalidArgument, "every prefetched checkpoint was taken")),
        }
    })
}

/// Hands the bytes of `buffer`, a checkpoint taken with
/// [`flor_prefetch_next`] and no longer used, back to the prefetch thread,
/// which reads a later checkpoint of the same size into them instead of
/// allocating (and faulting in) fresh memory; `buffer` is reset to empty.
/// Equivalent to `flor_buffer_free` when the thread has finished. NULL
/// arguments are ignored.
///
/// # Safety
/// `p` from [`flor_prefetch_start`], not freed; `buffer` NULL or filled by
/// flordb, its `data`/`len` not modified since.
#[no_mangle]
pub unsafe extern "C" fn flor_prefetch_recycle(p: *mut FlorPrefetch, buffer: *mut FlorBuffer) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: NULL or valid by the caller's contract.
        let Some(b) = (unsafe { buffer.as_mut() }) else { return };
        // SAFETY: live handle by contract.
        let Some(p) = (unsafe { p.as_ref() }) else {
            // SAFETY: as above.
            unsafe { flor_buffer_free(buffer) };
            return;
        };
        // SAFETY: `b` was filled by flordb and not modified, by contract.
        let bytes = unsafe { b.take() };
        let _ = p.recycle.send(bytes);
    }));
}

/// Stops prefetching (the thread ends after the checkpoint it is reading)
/// and frees the handle. NULL is ignored.
///
/// # Safety
/// `p` from [`flor_prefetch_start`], freed at most once.
#[no_mangle]
pub unsafe extern "C" fn flor_prefetch_free(p: *mut FlorPrefetch) {
    if !p.is_null() {
        // SAFETY: from Box::into_raw in flor_prefetch_start, freed once by contract.
        let _ = std::panic::catch_unwind(|| drop(unsafe { Box::from_raw(p) }));
    }
}

/// Runs the `flor` command line `argv[0..argc]` (program name first) in
/// this process and returns its exit code (0 success, 1 failure with a
/// one-line reason on stderr, 2 usage error), or 70 when it panicked.
///
/// # Safety
/// `argv` must hold `argc` NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn flor_cli_main(argv: *const *const c_char, argc: usize) -> i32 {
    std::panic::catch_unwind(|| {
        let mut args: Vec<String> = Vec::with_capacity(argc);
        if argc > 0 && !argv.is_null() {
            // SAFETY: `argv` holds `argc` pointers by contract.
            for p in unsafe { std::slice::from_raw_parts(argv, argc) } {
                // SAFETY: each is NUL-terminated by contract.
                match unsafe { cstr_arg(*p, "argv") } {
                    Ok(Some(s)) => args.push(s.to_owned()),
                    _ => return 2,
                }
            }
        }
        if args.is_empty() {
            args.push("flor".into());
        }
        flordb::cli::main_with(args)
    })
    .unwrap_or(70)
}
