//! Walks the engine's call frames (`EG(current_execute_data)` and its `prev_execute_data`
//! chain) into forkprof frames, leaf first.
//!
//! Names are borrowed from the engine's strings where they can be; only what has to be
//! composed (`Class::method`, closures, the truncation frame) is written into a buffer that
//! is reused from sample to sample, so a steady-state walk allocates nothing.

use std::fmt::Write as _;

use ext_php_rs::ffi::{
    zend_execute_data, zend_function, zend_string, ZEND_ACC_CLOSURE, ZEND_EVAL_CODE,
    ZEND_INTERNAL_FUNCTION,
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
    /// one says how many were left out), and hands the frames to `f`.
    ///
    /// # Safety
    /// `ex` is null or the running PHP thread's current frame, and the engine does not run
    /// while the walk is in progress (the walk happens inside an engine hook on that thread).
    pub unsafe fn walk<R>(
        &mut self,
        ex: *const zend_execute_data,
        max_depth: usize,
        f: impl FnOnce(&[Frame<'_>]) -> R,
    ) -> R {
        self.text.clear();
        self.raw.clear();
        let max_depth = max_depth.max(2);
        let mut cur = ex;
        let mut omitted = 0usize;
        while !cur.is_null() {
            // SAFETY: `cur` is a live frame of this thread's chain (caller's guarantee, then
            // `prev_execute_data` links the engine maintains).
            let (func, prev) = unsafe { ((*cur).func, (*cur).prev_execute_data) };
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
        let out = f(&frames);
        frames.clear();
        self.frames = frames;
        out
    }
}
