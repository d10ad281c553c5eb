//! Bytes in and out of the boundary: borrowed `(pointer, length)` inputs and
//! the owned [`FlorBuffer`] output.

use crate::status::{FfiError, FfiResult, FlorStatus};
use std::ffi::{c_char, CStr};

/// Bytes owned by flordb, handed to the caller (a string's UTF-8 bytes, a
/// checkpoint's bytes). Release with [`flor_buffer_free`].
///
/// `data` is NULL only for an empty buffer. Strings are not NUL-terminated:
/// use `len`.
#[repr(C)]
#[derive(Debug)]
pub struct FlorBuffer {
    /// The first byte (NULL when `len` is 0).
    pub data: *mut u8,
    /// Number of bytes.
    pub len: usize,
}

impl FlorBuffer {
    pub(crate) fn from_vec(v: Vec<u8>) -> FlorBuffer {
        if v.is_empty() {
            return FlorBuffer { data: std::ptr::null_mut(), len: 0 };
        }
        let boxed = v.into_boxed_slice();
        let len = boxed.len();
        FlorBuffer { data: Box::into_raw(boxed).cast::<u8>(), len }
    }
}

impl FlorBuffer {
    /// Takes the bytes back as a `Vec` (of exactly `len` bytes), leaving
    /// the buffer empty.
    ///
    /// # Safety
    /// `data`/`len` must come from [`FlorBuffer::from_vec`], unmodified.
    pub(crate) unsafe fn take(&mut self) -> Vec<u8> {
        let (data, len) = (self.data, self.len);
        self.data = std::ptr::null_mut();
        self.len = 0;
        if data.is_null() || len == 0 {
            return Vec::new();
        }
        let slice = std::ptr::slice_from_raw_parts_mut(data, len);
        // SAFETY: a boxed slice of exactly `len` bytes from `from_vec`,
        // taken once (reset above).
        unsafe { Box::from_raw(slice) }.into_vec()
    }
}

/// Releases the bytes of a [`FlorBuffer`] filled by flordb and resets it to
/// empty, so freeing twice is harmless. Accepts NULL and an empty buffer.
///
/// # Safety
/// `buffer` must be NULL or point to a value flordb wrote (or an empty
/// buffer), its `data`/`len` not modified since.
#[no_mangle]
pub unsafe extern "C" fn flor_buffer_free(buffer: *mut FlorBuffer) {
    // SAFETY: NULL or valid by the caller's contract.
    let Some(b) = (unsafe { buffer.as_mut() }) else { return };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: filled by flordb and unmodified, by the caller's contract;
        // `take` resets it, so a second free finds it empty.
        drop(unsafe { b.take() });
    }));
}

/// Writes `value` to `out` (checked non-NULL by the caller).
pub(crate) fn write_buffer(out: *mut FlorBuffer, value: Vec<u8>) -> FfiResult {
    if out.is_null() {
        return Err(FfiError::null("out"));
    }
    // SAFETY: `out` is non-NULL and, by the caller's contract, writable.
    unsafe { out.write(FlorBuffer::from_vec(value)) };
    Ok(())
}

/// Borrows `len` bytes at `ptr` (NULL allowed only with `len == 0`).
///
/// # Safety
/// `ptr` must point to `len` readable bytes that outlive the returned slice.
pub(crate) unsafe fn bytes_arg<'a>(ptr: *const u8, len: usize, what: &str) -> FfiResult<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(FfiError::null(what));
    }
    // SAFETY: non-NULL, `len` readable bytes by the caller's contract.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Borrows `len` bytes at `ptr` as UTF-8 text.
///
/// # Safety
/// As [`bytes_arg`].
pub(crate) unsafe fn str_arg<'a>(ptr: *const c_char, len: usize, what: &str) -> FfiResult<&'a str> {
    // SAFETY: forwarded contract.
    let bytes = unsafe { bytes_arg(ptr.cast::<u8>(), len, what) }?;
    std::str::from_utf8(bytes)
        .map_err(|e| FfiError::new(FlorStatus::InvalidUtf8, format!("argument `{what}` is not valid UTF-8: {e}")))
}

/// Borrows a NUL-terminated UTF-8 string.
///
/// # Safety
/// `ptr` must be NULL or point to a NUL-terminated string that outlives
/// the returned slice.
pub(crate) unsafe fn cstr_arg<'a>(ptr: *const c_char, what: &str) -> FfiResult<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str()
        .map(Some)
        .map_err(|e| FfiError::new(FlorStatus::InvalidUtf8, format!("argument `{what}` is not valid UTF-8: {e}")))
}

/// Borrows `n` strings given as parallel arrays of pointers and lengths.
///
/// # Safety
/// `ptrs` and `lens` must each point to `n` readable elements (or be NULL
/// with `n == 0`), each string as in [`str_arg`].
pub(crate) unsafe fn str_list_arg<'a>(
    ptrs: *const *const c_char,
    lens: *const usize,
    n: usize,
    what: &str,
) -> FfiResult<Vec<&'a str>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if ptrs.is_null() || lens.is_null() {
        return Err(FfiError::null(what));
    }
    // SAFETY: both arrays hold `n` elements by the caller's contract.
    let (ptrs, lens) = unsafe { (std::slice::from_raw_parts(ptrs, n), std::slice::from_raw_parts(lens, n)) };
    ptrs.iter()
        .zip(lens)
        // SAFETY: each element is a valid (pointer, length) by the contract.
        .map(|(p, l)| unsafe { str_arg(*p, *l, what) })
        .collect()
}

/// Writes `value` to `out`, which must be non-NULL.
pub(crate) fn write_out<T>(out: *mut T, value: T, what: &str) -> FfiResult {
    if out.is_null() {
        return Err(FfiError::null(what));
    }
    // SAFETY: non-NULL and writable by the caller's contract.
    unsafe { out.write(value) };
    Ok(())
}
