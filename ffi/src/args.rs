//! Turning C arguments (pointer + length) into Rust slices, with the checks that keep a bad
//! argument an error instead of undefined behaviour.

use std::ffi::c_char;
use std::mem::MaybeUninit;

use crate::status::FfiError;

/// Borrows `len` bytes at `ptr`. `len == 0` is the empty string whatever `ptr` is.
///
/// # Safety
/// If `ptr` is non-null and `len > 0`, `ptr` must point to `len` readable bytes that stay
/// unchanged for `'a`.
#[inline]
pub(crate) unsafe fn bytes<'a>(
    ptr: *const c_char,
    len: usize,
    what: &str,
) -> Result<&'a [u8], FfiError> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(FfiError::null(what));
    }
    if len > isize::MAX as usize {
        return Err(FfiError::invalid(format!(
            "`{what}` length {len} is larger than any object can be"
        )));
    }
    // SAFETY: non-null, `len` fits an object, and the caller vouches for the memory.
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

/// Borrows a C string given as pointer + length, lossily as text (config strings).
///
/// # Safety
/// As [`bytes`].
pub(crate) unsafe fn text(ptr: *const c_char, len: usize, what: &str) -> Result<String, FfiError> {
    // SAFETY: forwarded contract.
    let b = unsafe { bytes(ptr, len, what) }?;
    Ok(String::from_utf8_lossy(b).into_owned())
}

/// Borrows an array of `n` `T`s at `ptr`. `n == 0` is the empty array whatever `ptr` is.
///
/// # Safety
/// If `ptr` is non-null and `n > 0`, it must point to `n` initialised `T`s that stay
/// unchanged for `'a`.
#[inline]
pub(crate) unsafe fn array<'a, T>(
    ptr: *const T,
    n: usize,
    what: &str,
) -> Result<&'a [T], FfiError> {
    if n == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(FfiError::null(what));
    }
    if n.checked_mul(size_of::<T>())
        .is_none_or(|b| b > isize::MAX as usize)
    {
        return Err(FfiError::invalid(format!(
            "`{what}` count {n} is larger than any array can be"
        )));
    }
    if !ptr.is_aligned() {
        return Err(FfiError::invalid(format!(
            "`{what}` is not aligned for its element type"
        )));
    }
    // SAFETY: non-null, aligned, size fits an object, and the caller vouches for the memory.
    Ok(unsafe { std::slice::from_raw_parts(ptr, n) })
}

/// Converts `src` element by element into a temporary `[U]` and hands it to `k`: in a buffer
/// on the stack when it holds at most `N` items (the hot path allocates nothing), in one
/// `Vec` otherwise.
#[inline]
pub(crate) fn with_mapped<T, U: Copy, E, R, const N: usize>(
    src: &[T],
    mut map: impl FnMut(&T) -> Result<U, E>,
    k: impl FnOnce(&[U]) -> R,
) -> Result<R, E> {
    if src.len() <= N {
        let mut buf: [MaybeUninit<U>; N] = [const { MaybeUninit::uninit() }; N];
        for (slot, item) in buf.iter_mut().zip(src) {
            slot.write(map(item)?);
        }
        // SAFETY: the loop wrote the first `src.len()` slots (an early error return reads
        // none); `U: Copy`, so leaving them undropped is fine.
        let done = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<U>(), src.len()) };
        Ok(k(done))
    } else {
        let v = src.iter().map(map).collect::<Result<Vec<U>, E>>()?;
        Ok(k(&v))
    }
}
