//! Replay and the command line through the C ABI: the handle a replay
//! worker records with, and `flor …` run in-process (`python -m flordb …`).

use crate::buffer::{cstr_arg, write_buffer, FlorBuffer};
use crate::handle::FlorHandle;
use crate::status::{guard, FfiError};
use flordb::core::{RunKey, Source};
use flordb::{Flor, Options};
use std::ffi::c_char;

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
) -> crate::status::FlorStatus {
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

/// Reads the checkpoint described by the recipe file at `path` (JSON,
/// written by the replay coordinator, `flor_store::checkpoint::Recipe`)
/// from the run's pack files, verifying every chunk and the whole object,
/// without opening the run's checkpoint database (the coordinator holds
/// it). A large object is decoded on up to `threads` threads (0: one per
/// core). `out` receives the bytes (release with `flor_buffer_free`).
///
/// Errors: `FLOR_STATUS_IO` when the recipe or a pack cannot be read,
/// `FLOR_STATUS_CORRUPT` for a recipe that does not parse,
/// `FLOR_STATUS_CHECKPOINT_DAMAGED` for bytes that fail their checks.
///
/// # Safety
/// `path` must be NUL-terminated; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn flor_checkpoint_load_recipe(path: *const c_char, threads: usize, out: *mut FlorBuffer) -> crate::status::FlorStatus {
    guard(|| {
        // SAFETY: NUL-terminated by contract.
        let path = unsafe { cstr_arg(path, "path") }?.ok_or_else(|| FfiError::null("path"))?;
        if out.is_null() {
            return Err(FfiError::null("out"));
        }
        let text = std::fs::read(path).map_err(|e| FfiError::new(crate::status::FlorStatus::Io, format!("cannot read the checkpoint recipe {path}: {e}")))?;
        let recipe: flordb::store::checkpoint::Recipe = serde_json::from_slice(&text)
            .map_err(|e| FfiError::new(crate::status::FlorStatus::Corrupt, format!("checkpoint recipe {path} does not parse: {e}")))?;
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { threads };
        let bytes = flordb::store::checkpoint::load_recipe(&recipe, threads)?;
        write_buffer(out, bytes)
    })
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
