//! The `forkprof.*` INI directives as PHP sees them: registered at MINIT with their real
//! defaults (so `ini_get()`, `php --ri forkprof` and `phpinfo()` show them), the environment
//! fallbacks written into the directives they stand for, and the values in effect read back at
//! the first request of each process (after php-fpm applied its pool's `php_admin_value`s).
//!
//! Every directive is `PHP_INI_SYSTEM`: the profiler is one per process, started at its first
//! request, so a value that changed per directory or per script (`.user.ini`, `ini_set()`)
//! could not take effect without restarting it. php-fpm's `php_value` / `php_admin_value`
//! set system directives too, per pool, in each worker before its first request.

use std::ffi::{c_char, CString};
use std::sync::OnceLock;

use ext_php_rs::ffi::{
    ext_php_rs_executor_globals, php_info_print_table_end, php_info_print_table_header,
    php_info_print_table_row, php_info_print_table_start, zend_hash_str_find_ptr_lc,
    zend_ini_entry, zend_string_init_interned, zval,
};
use ext_php_rs::flags::IniEntryPermission;
use ext_php_rs::zend::{IniEntryDef, IniEntryDefs, ModuleEntry};

use crate::settings::{self, Entry};

const SYSTEM: IniEntryPermission = IniEntryPermission::System;

/// One line per entry of [`settings::ALL`], same order, names and defaults (a unit test
/// checks it): the engine keeps pointers into this table for the life of the process.
static INI: IniEntryDefs<18> = IniEntryDefs::new([
    IniEntryDef::new(c"forkprof.enabled", c"1", SYSTEM),
    IniEntryDef::new(c"forkprof.service", c"php", SYSTEM),
    IniEntryDef::new(c"forkprof.env", c"", SYSTEM),
    IniEntryDef::new(c"forkprof.version", c"", SYSTEM),
    IniEntryDef::new(c"forkprof.tags", c"", SYSTEM),
    IniEntryDef::new(c"forkprof.output_dir", c"/tmp/forkprof", SYSTEM),
    IniEntryDef::new(c"forkprof.endpoint", c"", SYSTEM),
    IniEntryDef::new(c"forkprof.period_ms", c"10", SYSTEM),
    IniEntryDef::new(c"forkprof.export_period_s", c"60", SYSTEM),
    IniEntryDef::new(c"forkprof.max_depth", c"128", SYSTEM),
    IniEntryDef::new(c"forkprof.shutdown_timeout_ms", c"250", SYSTEM),
    IniEntryDef::new(c"forkprof.endpoint_collection_enabled", c"1", SYSTEM),
    IniEntryDef::new(c"forkprof.allocation_enabled", c"1", SYSTEM),
    IniEntryDef::new(c"forkprof.allocation_sampling_distance", c"4194304", SYSTEM),
    IniEntryDef::new(c"forkprof.exception_enabled", c"1", SYSTEM),
    IniEntryDef::new(c"forkprof.exception_sampling_distance", c"100", SYSTEM),
    IniEntryDef::new(c"forkprof.timeline_enabled", c"1", SYSTEM),
    IniEntryDef::end(),
]);

extern "C" {
    /// `PHPAPI zval *cfg_get_entry(const char *name, size_t name_length)`: the value php.ini,
    /// a `conf.d` file or `-d` gave a directive, or null when none did.
    fn cfg_get_entry(name: *const c_char, name_length: usize) -> *mut zval;
    /// `ZEND_API void display_ini_entries(zend_module_entry *module)`: the directive table of
    /// `phpinfo()` and `php --ri` (name, local value, master value).
    fn display_ini_entries(module: *mut ModuleEntry);
}

/// The directives whose value MINIT took from the environment: (directive, variable, value).
static FROM_ENV: OnceLock<Vec<(&'static str, &'static str, String)>> = OnceLock::new();

/// Registers the directives.
pub fn register(module_number: i32) {
    IniEntryDef::register(INI.as_slice(), module_number);
}

/// The engine's entry for directive `name`.
///
/// # Safety
/// On the engine's thread, after MINIT registered the directives.
unsafe fn entry(name: &str) -> *mut zend_ini_entry {
    // SAFETY: the executor globals and their directive table live as long as the engine;
    // the table holds `zend_ini_entry` pointers.
    unsafe {
        let eg = ext_php_rs_executor_globals();
        if eg.is_null() || (*eg).ini_directives.is_null() {
            return std::ptr::null_mut();
        }
        zend_hash_str_find_ptr_lc((*eg).ini_directives, name.as_ptr().cast(), name.len()).cast()
    }
}

/// The value directive `name` has now, as PHP would return it from `ini_get()`.
fn value_of(name: &str) -> Option<String> {
    // SAFETY: on the engine's thread (MINIT or RINIT); the entry and its value string live
    // until the engine changes them, which it does not while this runs.
    unsafe {
        let e = entry(name);
        if e.is_null() || (*e).value.is_null() {
            return None;
        }
        let v = (*e).value;
        let bytes = std::slice::from_raw_parts((*v).val.as_ptr() as *const u8, (*v).len);
        Some(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Writes the environment fallbacks into the directives nothing in INI set, so `ini_get()`
/// returns the value in effect. MINIT only: the environment is read before any other thread
/// exists.
pub fn apply_env(env: &dyn Fn(&str) -> Option<String>) {
    let mut applied = Vec::new();
    for e in settings::ALL {
        // SAFETY: MINIT, on the engine's thread; `cfg_get_entry` only looks the name up.
        let configured = unsafe { !cfg_get_entry(e.ini.as_ptr().cast(), e.ini.len()).is_null() };
        if configured {
            continue;
        }
        let Some((from, v)) = settings::env_value(e, env) else {
            continue;
        };
        // SAFETY: MINIT, single-threaded: the entry is ours, registered above; the new value
        // is a permanent interned string, as the engine's own startup values are (nothing
        // frees it, and it outlives every request).
        unsafe {
            let entry = entry(e.ini);
            let Some(init) = zend_string_init_interned else {
                continue;
            };
            if entry.is_null() {
                continue;
            }
            let s = init(v.as_ptr().cast(), v.len(), true);
            if s.is_null() {
                continue;
            }
            (*entry).value = s;
        }
        applied.push((e.ini, from, v));
    }
    let _ = FROM_ENV.set(applied);
}

/// The value in effect for `e` and where it came from (the directive, or the environment
/// variable MINIT took it from), for [`settings::Settings::read`].
pub fn current(e: &Entry) -> Option<(&'static str, String)> {
    let v = value_of(e.ini)?;
    let from = FROM_ENV
        .get()
        .and_then(|all| all.iter().find(|(ini, _, ev)| *ini == e.ini && *ev == v))
        .map_or(e.ini, |(_, from, _)| *from);
    Some((from, v))
}

/// The directive table of `phpinfo()` / `php --ri forkprof`.
///
/// # Safety
/// From MINFO, with the engine's module entry.
pub unsafe fn display(module: *mut ModuleEntry) {
    // SAFETY: the caller passes the module the engine is describing.
    unsafe { display_ini_entries(module) };
    // The engine's table shows the value in effect and the start-up one; the default, and
    // what the environment may set instead, are ours to show.
    // SAFETY: a table of three NUL-terminated columns, opened and closed here.
    unsafe {
        php_info_print_table_start();
        php_info_print_table_header(
            3,
            c"Directive".as_ptr(),
            c"Default".as_ptr(),
            c"Environment fallback".as_ptr(),
        );
    }
    for e in settings::ALL {
        let cell = |s: &str| CString::new(s.replace('\0', " ")).unwrap_or_default();
        let default = if e.default.is_empty() {
            "no value"
        } else {
            e.default
        };
        let env = if e.env.is_empty() {
            "none".to_string()
        } else {
            e.env.join(", ")
        };
        let (name, default, env) = (cell(e.ini), cell(default), cell(&env));
        // SAFETY: three NUL-terminated strings for a three-column row.
        unsafe { php_info_print_table_row(3, name.as_ptr(), default.as_ptr(), env.as_ptr()) };
    }
    // SAFETY: closes the table opened above.
    unsafe { php_info_print_table_end() };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn the_registered_table_is_the_settings_list() {
        let table = INI.as_slice();
        assert_eq!(table.len(), settings::ALL.len() + 1);
        for (def, e) in table.iter().zip(settings::ALL) {
            // SAFETY: every pointer in the table comes from a C string literal.
            let (name, default) = unsafe {
                (
                    CStr::from_ptr(def.name).to_str().unwrap(),
                    CStr::from_ptr(def.value).to_str().unwrap(),
                )
            };
            assert_eq!(name, e.ini);
            assert_eq!(default, e.default, "{name}");
            assert_eq!(def.modifiable as u32, SYSTEM.bits(), "{name}");
        }
        assert!(table.last().unwrap().name.is_null());
    }
}
