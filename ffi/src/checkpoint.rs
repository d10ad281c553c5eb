//! Checkpoints through the boundary: the adaptive decision at the end of
//! an outer iteration, saving object bytes at the current loop path of
//! the current run, and loading them back (DESIGN.md §5 `checkpointing`,
//! §6 "Checkpoints", §7 "Adaptive checkpointing").
//!
//! The caller serializes its objects (the Python package pickles them,
//! writes numpy arrays as `.npy`, …); flordb stores bytes.

use crate::buffer::{bytes_arg, str_arg, str_list_arg, write_buffer, write_out, FlorBuffer};
use crate::handle::{handle, FlorHandle};
use crate::status::{guard, FfiError, FfiResult, FlorStatus};
use flordb::core::adaptive::AdaptivePeriod;
use flordb::store::checkpoint::CheckpointStore;
use std::ffi::c_char;

/// Per-handle checkpoint state: the current run's store (opened at the
/// first save) and its adaptive period.
#[derive(Default)]
pub(crate) struct Checkpoints {
    store: Option<(String, CheckpointStore)>,
    period: Option<AdaptivePeriod>,
}

impl Checkpoints {
    /// Makes pending saves durable and closes the run's store; the next
    /// run starts a new store and a new adaptive period.
    pub fn close(&mut self) -> FfiResult {
        self.period = None;
        match self.store.take() {
            Some((_, s)) => Ok(s.close()?),
            None => Ok(()),
        }
    }

    fn period(&mut self) -> FfiResult<&mut AdaptivePeriod> {
        if self.period.is_none() {
            let p = AdaptivePeriod::from_env().map_err(|e| FfiError::new(FlorStatus::BadSetting, e.to_string()))?;
            self.period = Some(p);
        }
        self.period.as_mut().ok_or_else(|| FfiError::new(FlorStatus::Internal, "no adaptive period"))
    }

    fn store(&mut self, h: &FlorHandle, run: &str) -> FfiResult<&CheckpointStore> {
        if self.store.as_ref().is_some_and(|(r, _)| r != run) {
            if let Some((_, s)) = self.store.take() {
                s.close()?;
            }
        }
        if self.store.is_none() {
            let s = CheckpointStore::open(h.flor.store().flor_dir(), run)?;
            self.store = Some((run.to_owned(), s));
        }
        self.store.as_ref().map(|(_, s)| s).ok_or_else(|| FfiError::new(FlorStatus::Internal, "no checkpoint store"))
    }
}

/// Reports that outer iteration `iteration` (0-based) took
/// `iteration_seconds` of compute and asks whether to checkpoint at its
/// end (`is_last`: it is the loop's last iteration, always checkpointed).
/// `out` receives the decision. The policy comes from `FLOR_CKPT`
/// (`adaptive` by default: checkpoint time ≤ 1% of iteration time;
/// `every`; or a target such as `5%`).
///
/// Errors: `FLOR_STATUS_BAD_SETTING` for a `FLOR_CKPT` value not understood.
///
/// # Safety
/// `h` live; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn flor_checkpoint_due(
    h: *const FlorHandle,
    iteration: i64,
    is_last: bool,
    iteration_seconds: f64,
    out: *mut bool,
) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let h = unsafe { handle(h) }?;
        let mut c = h.checkpoints();
        let p = c.period()?;
        p.observe_iteration(iteration_seconds);
        write_out(out, p.should_checkpoint(iteration, is_last), "out")
    })
}

/// Reports how long a checkpoint took (serializing and saving, seconds),
/// for the adaptive period.
///
/// # Safety
/// `h` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn flor_checkpoint_observe(h: *const FlorHandle, seconds: f64) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let h = unsafe { handle(h) }?;
        h.checkpoints().period()?.observe_checkpoint(seconds);
        Ok(())
    })
}

/// Saves `len` bytes at `data` as checkpoint `object` of the current run at
/// the current loop path (outermost first, 0-based iterations), replacing
/// an earlier save under the same key.
///
/// Asynchronous: chunks are compressed and written by a worker pool; the
/// save is durable after [`flor_commit`](crate::handle::flor_commit) (or
/// [`flor_free`](crate::handle::flor_free)).
/// Errors: `FLOR_STATUS_STORE_INPUT` when no run is open yet (nothing was
/// recorded) or the object name is empty; `FLOR_STATUS_CHECKPOINT_LOCKED`;
/// I/O errors.
///
/// # Safety
/// `h` live; `object` points to `object_len` bytes, `data` to `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn flor_checkpoint_save(
    h: *const FlorHandle,
    object: *const c_char,
    object_len: usize,
    data: *const u8,
    len: usize,
) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let (h, object, data) = unsafe { (handle(h)?, str_arg(object, object_len, "object")?, bytes_arg(data, len, "data")?) };
        let run = h
            .flor
            .run()
            .ok_or_else(|| FfiError::new(FlorStatus::StoreInput, "checkpoint: no run is open yet (record something or start a loop first)"))?;
        let path = h.flor.loop_path();
        let mut c = h.checkpoints();
        c.store(h, &run.file_stem())?.save(&path, object, data)?;
        Ok(())
    })
}

/// Loads checkpoint `object` of run `run` (its file stem
/// `"<tstamp>-<run id hex>"`) at the loop path given by `depth` loop names
/// (`names`/`name_lens`) and 0-based `iterations`, outermost first. `out`
/// receives the bytes (release with
/// [`flor_buffer_free`](crate::buffer::flor_buffer_free)).
///
/// Errors: `FLOR_STATUS_CHECKPOINT_MISSING`, `FLOR_STATUS_CHECKPOINT_DAMAGED`
/// (naming run, object, loop path), `FLOR_STATUS_CHECKPOINT_LOCKED` when
/// another process holds that run's database.
///
/// # Safety
/// `h` live; `run`/`object` point to their lengths in bytes; `names`,
/// `name_lens` and `iterations` hold `depth` elements; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn flor_checkpoint_load(
    h: *const FlorHandle,
    run: *const c_char,
    run_len: usize,
    names: *const *const c_char,
    name_lens: *const usize,
    iterations: *const i64,
    depth: usize,
    object: *const c_char,
    object_len: usize,
    out: *mut FlorBuffer,
) -> FlorStatus {
    guard(|| {
        // SAFETY: contract.
        let (h, run, object, names) = unsafe {
            (
                handle(h)?,
                str_arg(run, run_len, "run")?,
                str_arg(object, object_len, "object")?,
                str_list_arg(names, name_lens, depth, "names")?,
            )
        };
        let iters: &[i64] = if depth == 0 {
            &[]
        } else if iterations.is_null() {
            return Err(FfiError::null("iterations"));
        } else {
            // SAFETY: `depth` elements by contract.
            unsafe { std::slice::from_raw_parts(iterations, depth) }
        };
        let path: Vec<(String, i64)> = names.iter().map(|n| (*n).to_owned()).zip(iters.iter().copied()).collect();
        if out.is_null() {
            return Err(FfiError::null("out"));
        }
        let mut c = h.checkpoints();
        let bytes = c.store(h, run)?.load(&path, object)?;
        write_buffer(out, bytes)
    })
}
