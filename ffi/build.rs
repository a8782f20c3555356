//! Gives the shared library its soname, `libforkprof.so.<ABI major>`, so a program linked
//! against one major never loads another. The major is read from `src/version.rs`, where the
//! header's FORKPROF_ABI_VERSION_MAJOR comes from too.

use std::fs;

fn main() {
    println!("cargo:rerun-if-changed=src/version.rs");
    let source = fs::read_to_string("src/version.rs").expect("ffi/src/version.rs is readable");
    let major = source
        .lines()
        .find_map(|l| l.strip_prefix("pub const FORKPROF_ABI_VERSION_MAJOR: u32 = "))
        .and_then(|rest| rest.strip_suffix(';'))
        .and_then(|n| n.parse::<u32>().ok())
        .expect("ffi/src/version.rs declares `pub const FORKPROF_ABI_VERSION_MAJOR: u32 = <n>;`");
    // ELF platforms take a soname; the file cargo writes keeps its plain name
    // (libforkprof.so), the name to install it under is the soname.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if matches!(
        os.as_str(),
        "linux" | "freebsd" | "netbsd" | "openbsd" | "dragonfly" | "illumos" | "solaris"
    ) {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libforkprof.so.{major}");
    } else if os == "macos" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libforkprof.{major}.dylib");
    }
}
