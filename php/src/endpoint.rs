//! The request's endpoint, carried by every sample as the `trace endpoint` label Datadog's
//! views group by: the script path for the CLI, `SCRIPT_NAME` (or the request URI without its
//! query string) under php-fpm and other web SAPIs, and, inside a Swoole HTTP request
//! handler, that request's URI without its query string.
//!
//! The web and CLI endpoint is read once per request, at RINIT, into a buffer of the PHP
//! thread. A Swoole worker runs no RINIT per request: its requests are found in the stack
//! itself, as the outermost frame whose first argument is a `Swoole\Http\Request` (the
//! handler Swoole called), whose `server['request_uri']` is read while the sample is taken.
//! With coroutines each request runs on its own stack, so each sample names its own request.

use std::cell::RefCell;
use std::ffi::{c_char, CStr};
use std::sync::atomic::{AtomicPtr, Ordering};

use ext_php_rs::ffi::{
    _efree, ext_php_rs_compiler_globals, sapi_globals, zend_class_entry, zend_hash_str_find,
    zend_hash_str_find_ptr_lc, zend_object, zend_property_info, zval,
};

extern "C" {
    /// `SAPI_API char *sapi_getenv(const char *name, size_t name_len)`: a request variable of
    /// web SAPIs (FastCGI parameters under php-fpm), `estrdup`ed; null where the SAPI has none
    /// (the CLI).
    fn sapi_getenv(name: *const c_char, name_len: usize) -> *mut c_char;
}

const IS_ARRAY: u32 = 7;
const IS_STRING: u32 = 6;
const IS_OBJECT: u32 = 8;
const IS_REFERENCE: u32 = 10;

/// `Swoole\Http\Request`'s class, when Swoole is loaded (looked up at RINIT).
static SWOOLE_REQUEST: AtomicPtr<zend_class_entry> = AtomicPtr::new(std::ptr::null_mut());

thread_local! {
    /// This request's endpoint (empty: none), written at RINIT, read by samples.
    static REQUEST: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Whether the endpoint label is on (`forkprof.endpoint_collection_enabled`).
pub static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// The route-less form of a URI: without its query string or fragment.
pub fn routeless(uri: &str) -> &str {
    uri.split(['?', '#']).next().unwrap_or("")
}

/// At RINIT: reads this request's endpoint.
pub fn request_started() {
    // SAFETY: RINIT, on the engine's thread: the compiler globals' class table lives as long
    // as the engine, and Swoole registered its classes at its MINIT.
    unsafe {
        if SWOOLE_REQUEST.load(Ordering::Relaxed).is_null() {
            let cg = ext_php_rs_compiler_globals();
            if !cg.is_null() && !(*cg).class_table.is_null() {
                let name = "swoole\\http\\request";
                let ce =
                    zend_hash_str_find_ptr_lc((*cg).class_table, name.as_ptr().cast(), name.len());
                SWOOLE_REQUEST.store(ce.cast(), Ordering::Relaxed);
            }
        }
    }
    let endpoint = read_request_endpoint();
    REQUEST.with(|r| {
        if let Ok(mut r) = r.try_borrow_mut() {
            r.clear();
            r.push_str(&endpoint);
        }
    });
}

fn cstr(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string of the engine, alive for this call.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    (!s.is_empty()).then_some(s)
}

fn read_request_endpoint() -> String {
    // SAFETY: RINIT, on the engine's thread: `sapi_getenv` returns an `estrdup`ed copy (or
    // null), freed here; the SAPI's request info lives for the request.
    unsafe {
        let name = "SCRIPT_NAME";
        let v = sapi_getenv(name.as_ptr().cast(), name.len());
        if !v.is_null() {
            let s = cstr(v);
            _efree(v.cast());
            if let Some(s) = s {
                return s;
            }
        }
        let info = &*std::ptr::addr_of!(sapi_globals.request_info);
        if let Some(uri) = cstr(info.request_uri) {
            return routeless(&uri).to_string();
        }
        cstr(info.path_translated).unwrap_or_default()
    }
}

/// The class whose instance, as a frame's first argument, marks a Swoole request handler:
/// null when Swoole is not loaded or the label is off (the walk then looks for nothing).
pub fn find_class() -> *const zend_class_entry {
    if !ENABLED.load(Ordering::Relaxed) {
        return std::ptr::null();
    }
    SWOOLE_REQUEST.load(Ordering::Relaxed)
}

/// The zval a reference points to, or `z` itself.
///
/// # Safety
/// `z` is a live zval.
unsafe fn deref(z: *const zval) -> *const zval {
    // SAFETY: the type says which union member is set.
    unsafe {
        if (*z).u1.type_info & 0xff == IS_REFERENCE {
            std::ptr::addr_of!((*(*z).value.ref_).val)
        } else {
            z
        }
    }
}

/// `$request->server['request_uri']` of a `Swoole\Http\Request`, without its query string.
///
/// # Safety
/// `obj` is a live `Swoole\Http\Request`, on the PHP thread, inside an engine hook.
pub unsafe fn swoole_uri<'a>(obj: *const zend_object) -> Option<&'a str> {
    // SAFETY: read-only lookups in the object's class and property table, which live as long
    // as the object; every union read follows the zval's type.
    unsafe {
        let ce = (*obj).ce;
        let name = "server";
        let info = zend_hash_str_find(&(*ce).properties_info, name.as_ptr().cast(), name.len());
        if info.is_null() {
            return None;
        }
        let info = (*info).value.ptr as *const zend_property_info;
        if info.is_null() {
            return None;
        }
        let server = deref((obj as *const u8).add((*info).offset as usize) as *const zval);
        if (*server).u1.type_info & 0xff != IS_ARRAY {
            return None;
        }
        let key = "request_uri";
        let uri = zend_hash_str_find((*server).value.arr, key.as_ptr().cast(), key.len());
        if uri.is_null() {
            return None;
        }
        let uri = deref(uri);
        if (*uri).u1.type_info & 0xff != IS_STRING {
            return None;
        }
        let s = (*uri).value.str_;
        let bytes = std::slice::from_raw_parts((*s).val.as_ptr() as *const u8, (*s).len);
        std::str::from_utf8(bytes).ok().map(routeless)
    }
}

/// Whether `z` (a frame's first argument) is an object of class `ce`; the object if so.
///
/// # Safety
/// `z` is a live zval.
pub unsafe fn object_of(z: *const zval, ce: *const zend_class_entry) -> Option<*const zend_object> {
    // SAFETY: the type says which union member is set.
    unsafe {
        if (*z).u1.type_info & 0xff != IS_OBJECT {
            return None;
        }
        let obj = (*z).value.obj;
        (!obj.is_null() && std::ptr::eq((*obj).ce, ce)).then_some(obj as *const zend_object)
    }
}

/// Runs `f` with this sample's endpoint: the Swoole request's URI if the walk found one
/// (`swoole`), else this request's endpoint; empty when there is none.
pub fn with<R>(swoole: Option<&str>, f: impl FnOnce(&str) -> R) -> R {
    if !ENABLED.load(Ordering::Relaxed) {
        return f("");
    }
    if let Some(uri) = swoole {
        return f(uri);
    }
    REQUEST.with(|r| match r.try_borrow() {
        Ok(r) => f(&r),
        Err(_) => f(""),
    })
}

#[cfg(test)]
mod tests {
    use super::routeless;

    #[test]
    fn the_route_less_uri_drops_the_query_and_fragment() {
        assert_eq!(routeless("/orders/7?id=1&x=2"), "/orders/7");
        assert_eq!(routeless("/a#frag"), "/a");
        assert_eq!(routeless("/plain"), "/plain");
        assert_eq!(routeless("?only=query"), "");
    }
}
