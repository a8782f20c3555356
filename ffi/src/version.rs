//! Which ABI this library speaks, and the check a caller runs against the header it was
//! compiled with.
//!
//! The major number is also the soname's (`libforkprof.so.1`): `build.rs` reads it from this
//! file, so the two cannot disagree.

use std::ffi::c_char;

use crate::status::{forkprof_status, guard, FfiError};

/// The ABI's major version: it moves when a change breaks callers built against an earlier
/// header of the same major (a removed call, a changed signature, a field moved or removed),
/// and it is the number in the soname, `libforkprof.so.<major>`.
pub const FORKPROF_ABI_VERSION_MAJOR: u32 = 1;

/// The ABI's minor version: it moves when calls, constants or fields at the end of a
/// size-tagged struct are added.
pub const FORKPROF_ABI_VERSION_MINOR: u32 = 1;

/// The ABI this header describes, `major << 16 | minor`: pass it to `forkprof_abi_check`.
pub const FORKPROF_ABI_VERSION: u32 = FORKPROF_ABI_VERSION_MAJOR << 16 | FORKPROF_ABI_VERSION_MINOR;

/// The ABI this library speaks, `major << 16 | minor` (compare with `FORKPROF_ABI_VERSION`).
#[no_mangle]
pub extern "C" fn forkprof_abi_version() -> u32 {
    FORKPROF_ABI_VERSION
}

/// Checks that this library can serve a caller compiled against the header whose
/// `FORKPROF_ABI_VERSION` is `header_version`: FORKPROF_OK when the majors are equal and the
/// library's minor is at least the header's; FORKPROF_ERR_ABI otherwise, with a message naming
/// both versions. Call it once, before anything else:
/// `forkprof_abi_check(FORKPROF_ABI_VERSION)`.
#[no_mangle]
pub extern "C" fn forkprof_abi_check(header_version: u32) -> forkprof_status {
    guard(|| {
        let (major, minor) = (header_version >> 16, header_version & 0xffff);
        let served = minor <= FORKPROF_ABI_VERSION_MINOR;
        if major == FORKPROF_ABI_VERSION_MAJOR && served {
            return Ok(());
        }
        let fix = if major == FORKPROF_ABI_VERSION_MAJOR {
            format!("install libforkprof ABI {major}.{minor} or later")
        } else {
            format!("link the program against libforkprof.so.{major}")
        };
        Err(FfiError::abi(format!(
            "this program was compiled against forkprof.h ABI {major}.{minor}, but this \
             libforkprof speaks ABI {}.{} ({}): {fix}, or rebuild the program against this \
             library's forkprof.h",
            FORKPROF_ABI_VERSION_MAJOR,
            FORKPROF_ABI_VERSION_MINOR,
            env!("CARGO_PKG_VERSION"),
        )))
    })
}

/// The library's release, e.g. "0.1.0" (not the ABI's: see `forkprof_abi_version`). Static
/// storage; never NULL.
#[no_mangle]
pub extern "C" fn forkprof_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
