//! Replay and the command line through the C ABI: the handle a replay
//! worker records with, and `flor …` run in-process (`python -m flordb …`).

use crate::buffer::{bytes_arg, cstr_arg, flor_buffer_free, write_buffer, write_out, FlorBuffer};
use crate::handle::FlorHandle;
use crate::status::{guard, FfiError, FlorStatus};
use flordb::core::{RunKey, Source};
use flordb::{Flor, Options};
use std::collections::HashMap;
use std::ffi::c_char;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

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

/// Reads checkpoint `index` (0-based) of the recipe file at `path` (the
/// `flor_store::checkpoint::Recipe`s the replay coordinator wrote with
/// `encode_recipes`, one per object a unit restores) from the run's pack files,
/// verifying every frame's CRC-32 and the whole object's blake3, without
/// opening the run's checkpoint database (the coordinator holds it). A
/// large object is decoded on up to `threads` threads (0: one per core).
/// `out` receives the bytes (release with `flor_buffer_free`). The file is
/// parsed once per process while it stays the same file (path, device,
/// inode, size, change time), since a worker loads every object of its
/// unit from it.
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
        let recipe = recipe_at(&recipes, path, index)?;
        write_buffer(out, load_recipe_into(recipe, threads, Vec::new())?)
    })
}

/// Restores checkpoint `index` (0-based) of the recipe file at `path` (as
/// [`flor_checkpoint_load_recipe`]) straight into `dest`, the memory of the
/// live object it restores (a numpy array's data): the object must be
/// `prefix_len + dest_len` bytes whose first `prefix_len` are `prefix` (the
/// kind byte and `.npy` header the array would be saved with). No buffer of
/// the object's size is allocated and the bytes are not copied again.
/// `loaded` receives true when `dest` now holds the rest of the object,
/// every byte verified (each frame's CRC-32 and chunk hash, the whole
/// object's blake3); false, with `dest` untouched, when the checkpoint has
/// another size or header (restore it through a buffer instead).
///
/// Errors: as [`flor_checkpoint_load_recipe`]. After an error `dest` may
/// hold part of the object.
///
/// # Safety
/// `path` must be NUL-terminated; `prefix` points to `prefix_len` bytes and
/// `dest` to `dest_len` writable bytes that nothing else reads or writes
/// during the call and that do not overlap `prefix`; `loaded` must be
/// writable.
#[no_mangle]
pub unsafe extern "C" fn flor_checkpoint_load_recipe_to(
    path: *const c_char,
    index: usize,
    threads: usize,
    prefix: *const u8,
    prefix_len: usize,
    dest: *mut u8,
    dest_len: usize,
    loaded: *mut bool,
) -> FlorStatus {
    guard(|| {
        // SAFETY: NUL-terminated by contract.
        let path = unsafe { cstr_arg(path, "path") }?.ok_or_else(|| FfiError::null("path"))?;
        // SAFETY: `prefix_len` bytes by contract.
        let prefix = unsafe { bytes_arg(prefix, prefix_len, "prefix") }?;
        let dest: &mut [u8] = if dest_len == 0 {
            &mut []
        } else if dest.is_null() {
            return Err(FfiError::null("dest"));
        } else {
            // SAFETY: `dest_len` writable bytes, not aliased during the call, by contract.
            unsafe { std::slice::from_raw_parts_mut(dest, dest_len) }
        };
        if loaded.is_null() {
            return Err(FfiError::null("loaded"));
        }
        let recipes = read_recipes(path)?;
        let recipe = recipe_at(&recipes, path, index)?;
        let ok = flordb::store::checkpoint::load_recipe_to(recipe, threads_or_cores(threads), prefix, dest)?;
        write_out(loaded, ok, "loaded")
    })
}

/// Recipe `index` of the file at `path`.
fn recipe_at<'a>(recipes: &'a [flordb::store::checkpoint::Recipe], path: &str, index: usize) -> Result<&'a flordb::store::checkpoint::Recipe, FfiError> {
    recipes.get(index).ok_or_else(|| {
        FfiError::new(FlorStatus::InvalidArgument, format!("checkpoint recipe file {path} holds {} recipes, not {}", recipes.len(), index + 1))
    })
}

/// What identifies one version of a recipe file: its path, and (on Unix)
/// its device, inode, length and change time in nanoseconds.
type RecipeFileId = (String, [u64; 4], i64);

/// The recipe file this process read last: a worker restores every object
/// of its unit from one file, so it is parsed once, not once per object.
static RECIPES: Mutex<Option<(RecipeFileId, Arc<Vec<flordb::store::checkpoint::Recipe>>)>> = Mutex::new(None);

/// The identity of the file at `path` now, or `None` where it cannot be
/// told (then the file is parsed on every call).
fn recipe_file_id(path: &str) -> Option<RecipeFileId> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some((path.to_owned(), [m.dev(), m.ino(), m.len(), m.ctime_nsec() as u64], m.ctime()))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The recipes in the recipe file at `path`. The replay coordinator writes
/// each file once, before its worker starts; a file replaced or rewritten
/// since (another inode, size or change time) is parsed again.
fn read_recipes(path: &str) -> Result<Arc<Vec<flordb::store::checkpoint::Recipe>>, FfiError> {
    let id = recipe_file_id(path);
    let mut cached = RECIPES.lock().unwrap_or_else(|p| p.into_inner());
    if let (Some(id), Some((seen, r))) = (&id, cached.as_ref()) {
        if id == seen {
            return Ok(r.clone());
        }
    }
    let bytes = std::fs::read(path).map_err(|e| FfiError::new(FlorStatus::Io, format!("cannot read the checkpoint recipe file {path}: {e}")))?;
    let recipes = flordb::store::checkpoint::decode_recipes(&bytes)
        .map_err(|e| FfiError::new(FlorStatus::Corrupt, format!("checkpoint recipe file {path} does not decode: {e}")))?;
    let recipes = Arc::new(recipes);
    *cached = id.map(|id| (id, recipes.clone()));
    Ok(recipes)
}

/// The checkpoint `recipe` describes, decoded on `threads` threads (0: one
/// per core) into `buf` (reused when large enough).
fn load_recipe_into(recipe: &flordb::store::checkpoint::Recipe, threads: usize, buf: Vec<u8>) -> Result<Vec<u8>, FfiError> {
    Ok(flordb::store::checkpoint::load_recipe_into(recipe, threads_or_cores(threads), buf)?)
}

/// `threads`, or one per core for 0.
fn threads_or_cores(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    }
}

/// Checkpoints read ahead on a background thread, in a fixed order (see
/// [`flor_prefetch_start`]).
pub struct FlorPrefetch {
    rx: Receiver<Result<Vec<u8>, FfiError>>,
    /// Buffers handed back by [`flor_prefetch_recycle`], for the thread to
    /// read later checkpoints into.
    recycle: Sender<Vec<u8>>,
}

/// The prefetch thread's buffers for reuse: handed-back buffers are kept
/// only while a later checkpoint of their size remains, so the pool never
/// holds more than the restores in flight at once.
struct Pool {
    /// Per size in bytes, the checkpoints of that size not yet read.
    later: HashMap<u64, usize>,
    bufs: Vec<Vec<u8>>,
}

impl Pool {
    /// A pool for reading checkpoints of these sizes, in order.
    fn new(sizes: impl IntoIterator<Item = u64>) -> Pool {
        let mut later: HashMap<u64, usize> = HashMap::new();
        for s in sizes {
            *later.entry(s).or_default() += 1;
        }
        Pool { later, bufs: Vec::new() }
    }

    /// A buffer for the next checkpoint, of `len` bytes: a kept buffer of
    /// exactly that length (so that handing it out as a `FlorBuffer` needs
    /// no reallocation), or an empty one. Buffers in `back` are kept if a
    /// later checkpoint can use them, freed otherwise.
    fn take(&mut self, len: u64, back: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
        if let Some(n) = self.later.get_mut(&len) {
            *n = n.saturating_sub(1);
        }
        self.bufs.extend(back);
        let buf = match self.bufs.iter().position(|b| b.len() as u64 == len) {
            Some(i) => self.bufs.swap_remove(i),
            None => Vec::new(),
        };
        let later = &self.later;
        self.bufs.retain(|b| later.get(&(b.len() as u64)).is_some_and(|&n| n > 0));
        buf
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
                let mut pool = Pool::new(recipes.iter().map(|r| r.raw_len));
                for (i, r) in recipes.iter().enumerate() {
                    let buf = pool.take(r.raw_len, recycled.try_iter());
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
/// The thread keeps a handed-back buffer only while a later checkpoint of
/// its size remains, and frees it otherwise: this is `flor_buffer_free`
/// when the thread has finished, and also when `p` is NULL. A NULL
/// `buffer` is ignored.
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
        let code = flordb::cli::main_with(args);
        // In a library Rust never flushes its stdout at exit; flush it so a
        // caller that exits at once (`python -m flordb` uses `os._exit`)
        // loses no partial last line.
        use std::io::Write;
        let _ = std::io::stdout().flush();
        code
    })
    .unwrap_or(70)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::Pool;
    use crate::status::FlorStatus;
    use flordb::store::checkpoint::CheckpointStore;
    use std::ffi::CString;

    /// Restores through the C ABI straight into caller memory, from a
    /// recipe file written the way the coordinator writes one.
    #[test]
    fn load_recipe_to_fills_the_callers_memory_and_rereads_a_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = "1700000000000000-00000000000000ab";
        let store = CheckpointStore::open(dir.path(), run).unwrap();
        let at = [("epoch".to_string(), 0i64)];
        // A kind byte and header, then 3 MB of pseudo-random bytes (raw frames).
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut data = b"Nheader:".to_vec();
        data.extend((0..3_000_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }));
        store.save(&at, "w", &data).unwrap();
        store.save(&at, "b", b"Nheader:tiny").unwrap();
        store.flush().unwrap();
        let path = dir.path().join("recipes-0.bin");
        let write = |objects: &[&str]| {
            let recipes: Vec<_> = objects.iter().map(|o| store.recipe(&at, o).unwrap()).collect();
            // A new file renamed over the old one, as a rewrite would be.
            let tmp = dir.path().join("recipes.tmp");
            std::fs::write(&tmp, flordb::store::checkpoint::encode_recipes(&recipes).unwrap()).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        write(&["w", "b"]);
        let cpath = CString::new(path.to_str().unwrap()).unwrap();
        let load_to = |index: usize, prefix: &[u8], dest: &mut [u8]| {
            let mut loaded = false;
            // SAFETY: valid pointers and lengths, `dest` not aliased.
            let st = unsafe {
                super::flor_checkpoint_load_recipe_to(
                    cpath.as_ptr(),
                    index,
                    1,
                    prefix.as_ptr(),
                    prefix.len(),
                    dest.as_mut_ptr(),
                    dest.len(),
                    &mut loaded,
                )
            };
            (st, loaded)
        };
        let mut dest = vec![0u8; data.len() - 8];
        assert_eq!(load_to(0, b"Nheader:", &mut dest), (FlorStatus::Ok, true));
        assert!(dest == data[8..]);
        // Another header or size: not loaded, memory untouched.
        let mut other = vec![7u8; data.len() - 8];
        assert_eq!(load_to(0, b"Nheader!", &mut other), (FlorStatus::Ok, false));
        assert!(other.iter().all(|b| *b == 7));
        let mut short = vec![7u8; 3];
        assert_eq!(load_to(1, b"Nheader:", &mut short), (FlorStatus::Ok, false));
        assert_eq!(short, [7, 7, 7]);
        let mut tiny = [0u8; 4];
        assert_eq!(load_to(1, b"Nheader:", &mut tiny), (FlorStatus::Ok, true));
        assert_eq!(&tiny, b"tiny");
        assert_eq!(load_to(2, b"Nheader:", &mut tiny).0, FlorStatus::InvalidArgument);
        // The file replaced by one listing the objects the other way round:
        // read again, not served from the parsed copy.
        write(&["b", "w"]);
        assert_eq!(load_to(0, b"Nheader:", &mut tiny), (FlorStatus::Ok, true));
        assert_eq!(load_to(1, b"Nheader:", &mut dest), (FlorStatus::Ok, true));
        assert!(dest == data[8..]);
        store.close().unwrap();
    }

    #[test]
    fn the_pool_reuses_exact_sizes_and_keeps_only_what_a_later_read_needs() {
        // Three epochs of two objects (4 and 2 bytes), then one of 9 bytes.
        let mut pool = Pool::new([4, 2, 4, 2, 4, 2, 9]);
        let a = pool.take(4, []);
        assert!(a.is_empty(), "nothing to reuse yet");
        let b = pool.take(2, []);
        assert!(b.is_empty());
        // Both handed back: the 4-byte one is reused for the next 4.
        let a = pool.take(4, [vec![1u8; 4], vec![2u8; 2]]);
        assert_eq!(a, vec![1u8; 4]);
        assert_eq!(pool.bufs, vec![vec![2u8; 2]]);
        let b = pool.take(2, []);
        assert_eq!(b, vec![2u8; 2]);
        // Last 4- and 2-byte reads: a buffer of no later size is freed, not kept.
        let a = pool.take(4, [vec![3u8; 4], vec![7u8; 5]]);
        assert_eq!(a, vec![3u8; 4]);
        assert!(pool.bufs.is_empty(), "{:?}", pool.bufs);
        let _ = pool.take(2, [vec![4u8; 2]]);
        // Nothing of 4 or 2 bytes is read later: handed-back ones are freed.
        let c = pool.take(9, [vec![5u8; 4], vec![6u8; 2]]);
        assert!(c.is_empty());
        assert!(pool.bufs.is_empty(), "{:?}", pool.bufs);
    }
}
