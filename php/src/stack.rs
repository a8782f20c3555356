//! Walks the engine's call frames (`EG(current_execute_data)` and its `prev_execute_data`
//! chain) into forkprof frames, leaf first.
//!
//! Names are borrowed from the engine's strings where they can be; only what has to be
//! composed (`Class::method`, closures, the truncation frame) is written into a buffer that
//! is reused from sample to sample, so a steady-state walk allocates nothing.

use std::fmt::Write as _;

use ext_php_rs::ffi::{
    zend_class_entry, zend_execute_data, zend_function, zend_object, zend_string, zval,
    ZEND_ACC_CLOSURE, ZEND_EVAL_CODE, ZEND_INTERNAL_FUNCTION,
};
use forkprof::Frame;

/// Where one name's bytes are: in an engine string alive for the walk, in the walker's own
/// buffer, or a constant.
#[derive(Clone, Copy)]
enum Bytes {
    Engine(*const u8, usize),
    Own(usize, usize),
    Const(&'static [u8]),
    /// Nameless top-level code: `{main}` when it is the outermost frame, else `{include}`.
    TopLevel,
}

#[derive(Clone, Copy)]
struct RawFrame {
    function: Bytes,
    file: Bytes,
    line: u32,
}

const INCLUDE: &[u8] = b"{include}";
/// The engine's ZEND_CALL_FRAME_SLOT: a frame's header size in zvals, after which its
/// arguments start.
const CALL_FRAME_SLOT: usize =
    std::mem::size_of::<zend_execute_data>().div_ceil(std::mem::size_of::<zval>());
const MAIN: &[u8] = b"{main}";

/// A reusable stack walker; one per PHP thread.
pub struct Walker {
    text: String,
    raw: Vec<RawFrame>,
    frames: Vec<Frame<'static>>,
}

/// The bytes of a `zend_string`.
///
/// # Safety
/// `s` is null or a live `zend_string`.
unsafe fn zstr(s: *const zend_string) -> Option<Bytes> {
    if s.is_null() {
        return None;
    }
    // SAFETY: the caller guarantees `s` is a live zend_string: `val` holds `len` bytes.
    unsafe { Some(Bytes::Engine((*s).val.as_ptr() as *const u8, (*s).len)) }
}

impl Default for Walker {
    fn default() -> Self {
        Walker::new()
    }
}

impl Walker {
    pub fn new() -> Walker {
        Walker {
            text: String::with_capacity(4096),
            raw: Vec::with_capacity(128),
            frames: Vec::with_capacity(128),
        }
    }

    /// Appends `parts` to the walker's buffer, as one name.
    fn compose(&mut self, parts: &[Bytes]) -> Bytes {
        let start = self.text.len();
        for &p in parts {
            // The engine's names are bytes; forkprof replaces invalid UTF-8 when it builds
            // the profile, so they are kept as they are.
            // SAFETY: `text` is only ever read back as bytes (`as_bytes`), never as `str`.
            let buf = unsafe { self.text.as_mut_vec() };
            match p {
                // SAFETY: engine strings met during this walk are alive until it ends.
                Bytes::Engine(ptr, n) => {
                    buf.extend_from_slice(unsafe { std::slice::from_raw_parts(ptr, n) })
                }
                Bytes::Own(s, n) => buf.extend_from_within(s..s + n),
                Bytes::Const(c) => buf.extend_from_slice(c),
                Bytes::TopLevel => buf.extend_from_slice(INCLUDE),
            }
        }
        Bytes::Own(start, self.text.len() - start)
    }

    fn bytes(&self, b: Bytes) -> &[u8] {
        match b {
            // SAFETY: engine strings recorded during this walk are alive until the hook
            // returns, which is after the frames built from them are recorded.
            Bytes::Engine(p, n) => unsafe { std::slice::from_raw_parts(p, n) },
            Bytes::Own(s, n) => &self.text.as_bytes()[s..s + n],
            Bytes::Const(c) => c,
            Bytes::TopLevel => INCLUDE,
        }
    }

    /// Describes one frame's function.
    ///
    /// # Safety
    /// `ex` and `func` are a live frame of the running PHP thread and its function.
    unsafe fn describe(
        &mut self,
        ex: *const zend_execute_data,
        func: *const zend_function,
    ) -> RawFrame {
        // SAFETY: the caller guarantees both pointers; every union read matches the
        // function's `type`, which the engine sets for every function.
        unsafe {
            let common = &(*func).common;
            let scope_name = if common.scope.is_null() {
                None
            } else {
                zstr((*common.scope).name)
            };
            if u32::from(common.type_) == ZEND_INTERNAL_FUNCTION {
                let name = zstr(common.function_name).unwrap_or(Bytes::Const(b"{internal}"));
                let function = match scope_name {
                    Some(class) => self.qualified(class, name),
                    None => name,
                };
                return RawFrame {
                    function,
                    file: Bytes::Const(b""),
                    line: 0,
                };
            }
            let op = &(*func).op_array;
            let file = zstr(op.filename).unwrap_or(Bytes::Const(b""));
            let opline = (*ex).opline;
            let line = if opline.is_null() {
                op.line_start
            } else {
                (*opline).lineno
            };
            let function = match zstr(common.function_name) {
                None if u32::from(common.type_) == ZEND_EVAL_CODE => Bytes::Const(b"{eval}"),
                None => Bytes::TopLevel,
                Some(_) if common.fn_flags & ZEND_ACC_CLOSURE != 0 => {
                    // PHP 8.2 names every closure `{closure}`; the line it starts on tells
                    // them apart (PHP 8.4 adopted the same idea).
                    let start = self.text.len();
                    if let Some(class) = scope_name {
                        self.compose(&[class, Bytes::Const(b"::")]);
                    }
                    let _ = write!(self.text, "{{closure:{}}}", op.line_start);
                    Bytes::Own(start, self.text.len() - start)
                }
                Some(name) => match scope_name {
                    Some(class) => self.qualified(class, name),
                    None => name,
                },
            };
            RawFrame {
                function,
                file,
                line,
            }
        }
    }

    fn qualified(&mut self, class: Bytes, name: Bytes) -> Bytes {
        self.compose(&[class, Bytes::Const(b"::"), name])
    }

    /// Walks from `ex` to the outermost frame, keeping at most `max_depth` frames (the last
    /// one says how many were left out), and hands the frames to `f`, with the first argument
    /// of the outermost frame whose first argument is an object of class `find` (null: none
    /// looked for; a Swoole request handler's request).
    ///
    /// # Safety
    /// `ex` is null or the running PHP thread's current frame, and the engine does not run
    /// while the walk is in progress (the walk happens inside an engine hook on that thread).
    /// `find` is null or a live class entry.
    pub unsafe fn walk<R>(
        &mut self,
        ex: *const zend_execute_data,
        max_depth: usize,
        find: *const zend_class_entry,
        f: impl FnOnce(&[Frame<'_>], Option<*const zend_object>) -> R,
    ) -> R {
        self.text.clear();
        self.raw.clear();
        let max_depth = max_depth.max(2);
        let mut cur = ex;
        let mut omitted = 0usize;
        let mut found = None;
        while !cur.is_null() {
            // SAFETY: `cur` is a live frame of this thread's chain (caller's guarantee, then
            // `prev_execute_data` links the engine maintains).
            let (func, prev) = unsafe { ((*cur).func, (*cur).prev_execute_data) };
            if !find.is_null() && !func.is_null() {
                // SAFETY: a live frame: its arguments follow it, `num_args` of them (the
                // engine's ZEND_CALL_ARG(ex, 1) is the first slot after the frame's header).
                unsafe {
                    if (*cur).This.u2.num_args >= 1 {
                        let arg = (cur as *const zval).add(CALL_FRAME_SLOT);
                        if let Some(obj) = crate::endpoint::object_of(arg, find) {
                            found = Some(obj);
                        }
                    }
                }
            }
            if !func.is_null() {
                if self.raw.len() + 1 < max_depth {
                    // SAFETY: `func` is the live frame's function.
                    let frame = unsafe { self.describe(cur, func) };
                    self.raw.push(frame);
                } else {
                    omitted += 1;
                }
            }
            cur = prev;
        }
        if omitted == 0 {
            if let Some(last) = self.raw.last_mut() {
                if let Bytes::TopLevel = last.function {
                    last.function = Bytes::Const(MAIN);
                }
            }
        } else {
            let start = self.text.len();
            let _ = write!(self.text, "[{omitted} frames omitted]");
            self.raw.push(RawFrame {
                function: Bytes::Own(start, self.text.len() - start),
                file: Bytes::Const(b""),
                line: 0,
            });
        }
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        for r in &self.raw {
            let function = self.bytes(r.function);
            let file = self.bytes(r.file);
            // SAFETY: the `'static` is a lie told only to reuse the vector's allocation: the
            // frames borrow `self.text` and engine strings, both unchanged until this
            // function returns, and the vector is emptied before it is stored again.
            let frame: Frame<'static> = unsafe {
                std::mem::transmute::<Frame<'_>, Frame<'static>>(Frame::from_bytes(
                    function, file, r.line,
                ))
            };
            frames.push(frame);
        }
        let out = f(&frames, found);
        frames.clear();
        self.frames = frames;
        out
    }
}

#[cfg(test)]
mod tests {
    //! The walker over hand-built engine structures (zeroed, with the fields the walk reads
    //! set), so naming and the depth cap are tested without a PHP process.
    use super::*;
    use ext_php_rs::ffi::{
        zend_class_entry, zend_op, zend_string, ZEND_EVAL_CODE, ZEND_USER_FUNCTION,
    };

    /// A `zend_string` holding `s`, in storage the test owns.
    fn zs(s: &str, keep: &mut Vec<Box<[u64]>>) -> *mut zend_string {
        let words = (std::mem::size_of::<zend_string>() + s.len()).div_ceil(8) + 1;
        let mut buf = vec![0u64; words].into_boxed_slice();
        let p = buf.as_mut_ptr() as *mut zend_string;
        // SAFETY: `buf` is zeroed, 8-aligned and large enough for the header plus `s`.
        unsafe {
            (*p).len = s.len();
            std::ptr::copy_nonoverlapping(s.as_ptr(), (*p).val.as_mut_ptr() as *mut u8, s.len());
        }
        keep.push(buf);
        p
    }

    /// A zeroed engine struct, leaked: ext-php-rs gives some of them (`zval`, hash tables)
    /// destructors that call into the engine, which a test process does not have.
    /// Raw allocation rather than `Box`: a `Box<T>` would instantiate `T`'s drop glue, and
    /// with it the engine symbols it calls, which the test binary cannot link.
    fn zeroed<T>() -> &'static mut T {
        let layout = std::alloc::Layout::new::<T>();
        // SAFETY: a non-zero-sized layout; all-zero is a valid value of the engine's C structs;
        // the allocation is never freed, so the reference stays valid.
        unsafe {
            let p = std::alloc::alloc_zeroed(layout) as *mut T;
            assert!(!p.is_null(), "out of memory");
            &mut *p
        }
    }

    struct Fixture {
        strings: Vec<Box<[u64]>>,
        frames: Vec<*mut zend_execute_data>,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                strings: Vec::new(),
                frames: Vec::new(),
            }
        }

        fn class(&mut self, name: &str) -> *mut zend_class_entry {
            let c = zeroed::<zend_class_entry>();
            c.name = zs(name, &mut self.strings);
            c
        }

        /// A function: `ty` is ZEND_USER_FUNCTION, ZEND_INTERNAL_FUNCTION or ZEND_EVAL_CODE.
        fn func(
            &mut self,
            ty: u32,
            name: Option<&str>,
            scope: *mut zend_class_entry,
            flags: u32,
        ) -> *mut zend_function {
            let f = zeroed::<zend_function>();
            let name = name.map_or(std::ptr::null_mut(), |n| zs(n, &mut self.strings));
            // Writing union fields is safe; the walk reads the ones `type_` selects.
            f.common.type_ = ty as u8;
            f.common.function_name = name;
            f.common.scope = scope;
            f.common.fn_flags = flags;
            if ty != ZEND_INTERNAL_FUNCTION {
                f.op_array.filename = zs("/app/index.php", &mut self.strings);
                f.op_array.line_start = 7;
            }
            f
        }

        /// Pushes a frame running `func` at `line` below the previous one (callers first).
        fn call(&mut self, func: *mut zend_function, line: u32) -> *mut zend_execute_data {
            let ex = zeroed::<zend_execute_data>();
            ex.func = func;
            ex.prev_execute_data = self.frames.last().copied().unwrap_or(std::ptr::null_mut());
            if line != 0 {
                let op = zeroed::<zend_op>();
                op.lineno = line;
                ex.opline = op;
            }
            self.frames.push(ex);
            ex
        }
    }

    fn names(leaf: *const zend_execute_data, depth: usize) -> Vec<(String, String, u32)> {
        let mut w = Walker::new();
        // SAFETY: the fixture's frames form a valid chain and outlive the walk.
        unsafe {
            w.walk(leaf, depth, std::ptr::null(), |frames, _| {
                frames
                    .iter()
                    .map(|f| {
                        (
                            String::from_utf8_lossy(f.function).into_owned(),
                            String::from_utf8_lossy(f.file).into_owned(),
                            f.line,
                        )
                    })
                    .collect()
            })
        }
    }

    #[test]
    fn names_methods_closures_main_and_internal_functions() {
        let mut fx = Fixture::new();
        let main = fx.func(ZEND_USER_FUNCTION, None, std::ptr::null_mut(), 0);
        let shop = fx.class("Shop\\Cart");
        let method = fx.func(ZEND_USER_FUNCTION, Some("total"), shop, 0);
        let closure = fx.func(
            ZEND_USER_FUNCTION,
            Some("{closure}"),
            shop,
            ZEND_ACC_CLOSURE,
        );
        let usleep = fx.func(
            ZEND_INTERNAL_FUNCTION,
            Some("usleep"),
            std::ptr::null_mut(),
            0,
        );
        fx.call(main, 30);
        fx.call(method, 12);
        fx.call(closure, 8);
        let leaf = fx.call(usleep, 0);
        let got = names(leaf, 128);
        let want = [
            ("usleep", "", 0),
            ("Shop\\Cart::{closure:7}", "/app/index.php", 8),
            ("Shop\\Cart::total", "/app/index.php", 12),
            ("{main}", "/app/index.php", 30),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(f, file, l)| (f.to_string(), file.to_string(), *l))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn nameless_code_below_the_top_is_an_include_and_eval_is_named() {
        let mut fx = Fixture::new();
        let main = fx.func(ZEND_USER_FUNCTION, None, std::ptr::null_mut(), 0);
        let included = fx.func(ZEND_USER_FUNCTION, None, std::ptr::null_mut(), 0);
        let eval = fx.func(ZEND_EVAL_CODE, None, std::ptr::null_mut(), 0);
        fx.call(main, 3);
        fx.call(included, 0); // not started: the walk falls back to line_start
        let leaf = fx.call(eval, 1);
        let got: Vec<_> = names(leaf, 128)
            .into_iter()
            .map(|(f, _, l)| (f, l))
            .collect();
        assert_eq!(
            got,
            vec![
                ("{eval}".to_string(), 1),
                ("{include}".to_string(), 7),
                ("{main}".to_string(), 3)
            ]
        );
    }

    #[test]
    fn deep_stacks_keep_the_leaf_most_frames_and_count_the_rest() {
        let mut fx = Fixture::new();
        let main = fx.func(ZEND_USER_FUNCTION, None, std::ptr::null_mut(), 0);
        let down = fx.func(ZEND_USER_FUNCTION, Some("down"), std::ptr::null_mut(), 0);
        fx.call(main, 1);
        let mut leaf = std::ptr::null_mut();
        for _ in 0..300 {
            leaf = fx.call(down, 2);
        }
        let got = names(leaf, 64);
        assert_eq!(got.len(), 64);
        assert!(got[..63].iter().all(|(f, _, _)| f == "down"));
        // 301 frames, 63 kept: 238 left out, {main} among them.
        assert_eq!(got[63].0, "[238 frames omitted]");
        // A walker is reused: a second, shallow walk starts from a clean buffer.
        let shallow = fx.frames[1] as *const zend_execute_data;
        let mut w = Walker::new();
        // SAFETY: as in `names`.
        let n = unsafe { w.walk(leaf, 64, std::ptr::null(), |f, _| f.len()) };
        assert_eq!(n, 64);
        // SAFETY: as in `names`.
        let second = unsafe {
            w.walk(shallow, 64, std::ptr::null(), |f, _| {
                f.iter()
                    .map(|f| String::from_utf8_lossy(f.function).into_owned())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(second, vec!["down".to_string(), "{main}".to_string()]);
    }
}
