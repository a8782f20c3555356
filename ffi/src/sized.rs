//! Size-tagged structs: every struct the library reads from or writes into a caller starts
//! with `uint32_t size`, which the caller sets to `sizeof` as its own header declares it. The
//! library reads and writes only that many bytes, so a struct may gain fields at its end in a
//! later minor version without an older caller being read past or written past; a field the
//! caller's struct does not have reads as zero. A size larger than the library knows comes from
//! a caller compiled against a newer header, and is refused with FORKPROF_ERR_ABI before
//! anything is read or written.

use std::marker::PhantomData;
use std::mem::MaybeUninit;

use crate::status::FfiError;
use crate::version::{FORKPROF_ABI_VERSION_MAJOR, FORKPROF_ABI_VERSION_MINOR};

/// A struct that crosses the ABI with its size in its first field.
///
/// # Safety
/// Implementors are `#[repr(C)]`, their first field is `size: u32`, and all-zero bytes are a
/// valid value of them (their fields are integers and raw pointers).
pub(crate) unsafe trait SizeTagged: Copy {
    /// The C name, for messages.
    const NAME: &'static str;
    /// Where the struct ended at ABI 1.0 (the end of its last field then): no 1.x caller's
    /// `sizeof` is smaller, so less is a caller's bug (most often `size` left at 0).
    const MIN_SIZE: usize;
}

/// Checks a caller's `size` and returns it as the number of bytes to read or write.
fn checked_size<T: SizeTagged>(size: u32, what: &dyn std::fmt::Display) -> Result<usize, FfiError> {
    let size = size as usize;
    let own = size_of::<T>();
    if size == own {
        Ok(size)
    } else if size < T::MIN_SIZE {
        Err(FfiError::invalid(format!(
            "`{what}.size` is {size}, smaller than any {name} (at least {min} bytes): set it to \
             sizeof({name})",
            name = T::NAME,
            min = T::MIN_SIZE,
        )))
    } else if size > own {
        Err(FfiError::abi(format!(
            "`{what}.size` is {size}, but this libforkprof (ABI {}.{}) knows {name} as {own} \
             bytes: the caller was compiled against a newer forkprof.h; install a libforkprof at \
             least as new as that header",
            FORKPROF_ABI_VERSION_MAJOR,
            FORKPROF_ABI_VERSION_MINOR,
            name = T::NAME,
        )))
    } else {
        Ok(size)
    }
}

/// Reads the `size` field at `at`.
///
/// # Safety
/// `at` points to at least 4 readable bytes.
#[inline]
unsafe fn size_at(at: *const u8) -> u32 {
    // SAFETY: per the contract; unaligned because an element of a caller's array sits at
    // `i * size`, and a size that is not a multiple of 4 is only found out by reading it.
    unsafe { at.cast::<u32>().read_unaligned() }
}

/// Copies the first `size` bytes at `at` over an all-zero `T`.
///
/// # Safety
/// `at` points to `size <= size_of::<T>()` readable bytes.
#[inline]
unsafe fn read_prefix<T: SizeTagged>(at: *const u8, size: usize) -> T {
    if size == size_of::<T>() {
        // SAFETY: `size_of::<T>()` readable bytes; unaligned for the same reason as `size_at`.
        return unsafe { at.cast::<T>().read_unaligned() };
    }
    let mut v = MaybeUninit::<T>::zeroed();
    // SAFETY: `size` bytes are readable at `at` and fit in `v`; the two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(at, v.as_mut_ptr().cast::<u8>(), size) };
    // SAFETY: all-zero bytes are a valid `T` (trait contract), and the caller's bytes over
    // them are the fields of a `T` as the caller's header laid them out.
    unsafe { v.assume_init() }
}

/// A caller's array of size-tagged structs: element `i` is at `i * array[0].size` bytes, and
/// every element must carry the same size (checked once, up front, so reading them is a plain
/// copy per element on the recording path).
pub(crate) struct TaggedArray<'a, T> {
    base: *const u8,
    len: usize,
    stride: usize,
    _elements: PhantomData<&'a [T]>,
}

impl<'a, T: SizeTagged> TaggedArray<'a, T> {
    /// `n == 0` is the empty array whatever `ptr` is.
    ///
    /// # Safety
    /// If `n > 0`, `ptr` is NULL or points to `n` elements of `ptr[0].size` bytes each,
    /// readable and unchanged for `'a`.
    #[inline]
    pub(crate) unsafe fn new(
        ptr: *const T,
        n: usize,
        what: &'static str,
    ) -> Result<Self, FfiError> {
        let mut array = TaggedArray {
            base: ptr.cast(),
            len: 0,
            stride: size_of::<T>(),
            _elements: PhantomData,
        };
        if n == 0 {
            return Ok(array);
        }
        if ptr.is_null() {
            return Err(FfiError::null(what));
        }
        // SAFETY: `n > 0`, so the first element's size field is readable.
        let first = unsafe { size_at(array.base) };
        let stride = checked_size::<T>(first, &format_args!("{what}[0]"))?;
        if n.checked_mul(stride)
            .is_none_or(|b| b > isize::MAX as usize)
        {
            return Err(FfiError::invalid(format!(
                "`{what}` count {n} is larger than any array can be"
            )));
        }
        for i in 1..n {
            // SAFETY: `i < n` elements of `stride` bytes are readable (the contract), and
            // `n * stride` fits.
            let size = unsafe { size_at(array.base.add(i * stride)) };
            if size != first {
                return Err(mixed_sizes::<T>(what, i, size, first));
            }
        }
        array.len = n;
        array.stride = stride;
        Ok(array)
    }

    /// The caller's array as it is, when it is laid out exactly as this library's `[T]` (a
    /// caller built against the same header: the common case, read without a copy).
    #[inline]
    fn as_slice(&self) -> Option<&'a [T]> {
        let exact = self.stride == size_of::<T>() && self.base.cast::<T>().is_aligned();
        // SAFETY: `len` elements of `size_of::<T>()` bytes, aligned, readable and unchanged
        // for 'a (`new`'s contract); `len == 0` is the empty slice at a dangling pointer.
        exact.then(|| unsafe {
            if self.len == 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts(self.base.cast::<T>(), self.len)
            }
        })
    }

    /// Hands `f` the elements as a `[T]`: the caller's own array when it has this library's
    /// layout, else whole copies (fields the caller's struct lacks are zero).
    #[inline]
    pub(crate) fn with_slice<const N: usize, R>(&self, f: impl FnOnce(&[T]) -> R) -> R {
        match self.as_slice() {
            Some(slice) => f(slice),
            None => self.with_copies::<N, R>(f),
        }
    }

    /// The copying side of [`with_slice`](Self::with_slice), out of line so its buffer is not
    /// in the common path's stack frame: on the stack up to `N` elements, in one `Vec` beyond.
    #[cold]
    #[inline(never)]
    fn with_copies<const N: usize, R>(&self, f: impl FnOnce(&[T]) -> R) -> R {
        if self.len <= N {
            let mut buf: [MaybeUninit<T>; N] = [const { MaybeUninit::uninit() }; N];
            let mut written = 0;
            for (slot, t) in buf.iter_mut().zip(self.iter()) {
                slot.write(t);
                written += 1;
            }
            // SAFETY: the loop wrote the first `written` slots; `T: Copy` needs no drop.
            f(unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<T>(), written) })
        } else {
            f(&self.iter().collect::<Vec<T>>())
        }
    }

    /// Each element as a whole `T` (fields the caller's struct lacks are zero).
    #[inline]
    fn iter(&self) -> impl ExactSizeIterator<Item = T> + use<'_, 'a, T> {
        (0..self.len).map(move |i| {
            // SAFETY: `i < len` and the array holds `len` elements of `stride` bytes, with
            // `stride <= size_of::<T>()` (both checked in `new`).
            unsafe { read_prefix::<T>(self.base.add(i * self.stride), self.stride) }
        })
    }
}

#[cold]
#[inline(never)]
fn mixed_sizes<T: SizeTagged>(what: &str, i: usize, size: u32, first: u32) -> FfiError {
    FfiError::invalid(format!(
        "`{what}[{i}].size` is {size} but `{what}[0].size` is {first}: set every element's \
         size to sizeof({name})",
        name = T::NAME,
    ))
}

/// A caller's struct to fill, its size checked before the library does anything else, so a
/// refused size never leaves a call half done.
pub(crate) struct OutSlot<T> {
    out: *mut T,
    size: usize,
}

impl<T: SizeTagged> OutSlot<T> {
    /// # Safety
    /// `out` is NULL or points to a writable struct of `out->size` bytes whose `size` is set,
    /// and stays so until `write`.
    pub(crate) unsafe fn new(out: *mut T, what: &'static str) -> Result<Self, FfiError> {
        if out.is_null() {
            return Err(FfiError::null(what));
        }
        // SAFETY: non-null, and its size field is readable per the contract.
        let size = checked_size::<T>(unsafe { size_at(out.cast()) }, &what)?;
        Ok(OutSlot { out, size })
    }

    /// The caller's `size` (checked): the stride of an array of such structs.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Writes `value` over the caller's struct: no byte past its `size`, and not `size` itself.
    pub(crate) fn write(self, value: &T) {
        const SIZE_FIELD: usize = size_of::<u32>();
        // SAFETY: bytes `4..size` of `*out` are the caller's to write (`new`'s contract) and
        // `size <= size_of::<T>()`, so they are inside `value` too; the two do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                std::ptr::from_ref(value).cast::<u8>().add(SIZE_FIELD),
                self.out.cast::<u8>().add(SIZE_FIELD),
                self.size - SIZE_FIELD,
            )
        };
    }
}
