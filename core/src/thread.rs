//! forkprof's own threads: started with `pthread_create` on stacks forkprof maps itself, never
//! with `std::thread`.
//!
//! Why not `std::thread::spawn`: std's thread start-up and exit take process-wide std locks
//! (the registry behind its stack-overflow handler, the thread-handle set-up, TLS destructor
//! registration). `fork()` copies a lock as it was, so a child forked while any parent thread
//! was starting or exiting a std thread inherits that lock held by a thread it does not have,
//! and every `std::thread::spawn` in the child then waits for ever. A thread started here meets
//! only libc's own thread bookkeeping, which glibc and musl lock around `fork()` and reset in
//! the child (glibc: the stack list and loader locks; musl: the thread-list lock), and macOS
//! libpthread likewise.
//!
//! Its stack is memory forkprof maps itself. For a thread that never forks
//! ([`RawThread::spawn_never_forking`], forkprof's own), most of it is not inherited by
//! children (they never run the thread), so a fork copies neither its pages nor its page-table
//! entries. Not all of it: libc keeps the thread's descriptor and static TLS at the top of a stack it is
//! given, and glibc's child of `fork()` writes to the descriptors on its thread lists. So the
//! thread itself, first thing, excludes only what lies below its own first frame (the part the
//! stack grows into) and leaves the top, which holds libc's data, inherited. The lowest page is
//! a guard: an overflow faults instead of writing into whatever lies below.
//!
//! What a body run here must not do, because it can run in a forked child whose parent threads
//! held locks: call `std::thread::current()`, `park`, or anything else that lazily creates std's
//! per-thread handle (use [`crate::sync::Parker`] to wait), print, read the environment, or
//! resolve names. A panic is caught at the thread's edge (the default hook prints it first).

use std::ffi::{c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::region::{page_size, ForkLocalRegion};

/// Stack for forkprof's own threads: room for zstd, the HTTP client and the pprof encoder with
/// a wide margin. Only the pages a thread touches become resident.
pub const DEFAULT_STACK: usize = 1 << 20;

// POSIX.1-2008, present in glibc, musl and macOS libSystem; the `libc` crate declares it only
// for some of them.
extern "C" {
    fn pthread_attr_setstack(
        attr: *mut libc::pthread_attr_t,
        stackaddr: *mut c_void,
        stacksize: libc::size_t,
    ) -> libc::c_int;
}

/// A thread started with [`RawThread::spawn`]. Dropping the handle without [`RawThread::join`]
/// leaves the thread running and its stack mapped for the life of the process.
pub struct RawThread {
    handle: libc::pthread_t,
    stack: Option<ForkLocalRegion>,
}

// SAFETY: a pthread_t names a thread of the process and may be joined or detached from any
// thread (on some libcs it is a pointer, hence no automatic Send); the stack region is plain
// memory owned by this handle.
unsafe impl Send for RawThread {}

struct Start {
    name: &'static CStr,
    platform: &'static dyn Platform,
    body: Box<dyn FnOnce() + Send>,
    /// The lowest usable stack address (just above the guard page), when the thread is to
    /// exclude its stack from children.
    exclude_from: Option<usize>,
    /// Set once the thread is named and about to run its body.
    running: Arc<AtomicBool>,
}

/// How long `spawn` waits for the new thread to be running before it returns anyway (a thread
/// not scheduled by then is not waited for: a child must never wait without bound).
const START_WAIT: Duration = Duration::from_secs(1);

extern "C" fn thread_main(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the `Box<Start>` leaked by `spawn`, handed to this thread alone.
    let start = unsafe { Box::from_raw(arg.cast::<Start>()) };
    if let Some(low) = start.exclude_from {
        exclude_stack_below_here(low, start.platform);
    }
    // One allocation before the body: allocators that build a thread's state lazily under a
    // process-wide lock (mimalloc) build it now, not first in a child this thread forks, where
    // that lock may be held by a thread the child does not have.
    drop(std::hint::black_box(Box::new(0u64)));
    start.platform.name_current_thread(start.name);
    start.running.store(true, Ordering::Release);
    let Start { body, .. } = *start;
    // Unwinding out of an `extern "C"` function aborts the process: stop any panic here.
    let _ = catch_unwind(AssertUnwindSafe(body));
    std::ptr::null_mut()
}

/// Marks this thread's stack from `stack_low` up to one page below the current frame as not
/// inherited by children: what a deeper call touches later is never copied by a fork, while
/// this frame and what libc keeps above it (descriptor, static TLS) stay inherited.
#[inline(never)]
fn exclude_stack_below_here(stack_low: usize, platform: &'static dyn Platform) {
    let here = 0u8;
    let page = page_size();
    let top = (std::ptr::addr_of!(here) as usize & !(page - 1)).saturating_sub(page);
    if top > stack_low {
        // SAFETY: page-aligned pages of this thread's own stack, below every live frame, which
        // no child ever touches (children do not run this thread). The range is unmapped only
        // after the thread ended; unmapping clears the advice.
        unsafe { platform.exclude_from_fork(stack_low as *mut u8, top - stack_low) };
    }
}

impl RawThread {
    /// Starts `body` on a new thread named `name` (at most 15 bytes show on Linux), with a
    /// stack of `stack_size` bytes plus a guard page. Safe to call in a forked child: see the
    /// module documentation for the locks it can meet. The thread may fork. Returns once the
    /// thread runs (or after 1 s if it is not scheduled by then).
    pub fn spawn(
        name: &'static CStr,
        stack_size: usize,
        platform: &'static dyn Platform,
        body: Box<dyn FnOnce() + Send>,
    ) -> Result<RawThread> {
        Self::start(name, stack_size, platform, body, false)
    }

    /// Like [`RawThread::spawn`], for a thread that never calls `fork()`: its stack is not
    /// inherited by children, so forks elsewhere in the process do not pay for it. A fork from
    /// this thread would leave the child running on a stack it does not have. Returns without
    /// waiting for the thread to be scheduled.
    pub fn spawn_never_forking(
        name: &'static CStr,
        stack_size: usize,
        platform: &'static dyn Platform,
        body: Box<dyn FnOnce() + Send>,
    ) -> Result<RawThread> {
        Self::start(name, stack_size, platform, body, true)
    }

    fn start(
        name: &'static CStr,
        stack_size: usize,
        platform: &'static dyn Platform,
        body: Box<dyn FnOnce() + Send>,
        exclude_stack: bool,
    ) -> Result<RawThread> {
        let page = page_size();
        let size = stack_size.max(64 << 10).div_ceil(page) * page + page;
        // mmap and mprotect only: no lock of libc's or std's.
        let stack = ForkLocalRegion::inherited(size, platform).ok_or(Error::Os {
            call: "mmap (thread stack)",
            errno: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        })?;
        let base = stack.as_ptr().cast::<c_void>();
        // SAFETY: the first page of the mapping just made, which nothing else uses.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(Error::last_os("mprotect (stack guard)"));
        }
        let running = Arc::new(AtomicBool::new(false));
        let start = Box::into_raw(Box::new(Start {
            name,
            platform,
            body,
            exclude_from: exclude_stack.then_some(base as usize + page),
            running: running.clone(),
        }));
        // SAFETY: a zeroed pthread_attr_t is valid storage for pthread_attr_init.
        let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
        // SAFETY: pthread_t is plain data (an integer or a pointer); pthread_create overwrites it.
        let mut handle: libc::pthread_t = unsafe { std::mem::zeroed() };
        // SAFETY: `attr` is initialised before use and destroyed after; the stack range is ours
        // for as long as the thread can run (`join` unmaps it only after the thread ended, and
        // without `join` it is never unmapped); `start` is handed to the thread, or reclaimed
        // below if the thread was not created.
        let rc = unsafe {
            let mut rc = libc::pthread_attr_init(&mut attr);
            if rc == 0 {
                rc = pthread_attr_setstack(
                    &mut attr,
                    base.cast::<u8>().add(page).cast(),
                    size - page,
                );
                if rc == 0 {
                    // The new thread inherits this mask: it starts with every asynchronous
                    // signal blocked, so a host's process-directed signal never runs its
                    // handler on a forkprof thread.
                    let _blocked = crate::signals::Blocked::asynchronous();
                    rc = libc::pthread_create(&mut handle, &attr, thread_main, start.cast());
                }
                libc::pthread_attr_destroy(&mut attr);
            }
            rc
        };
        if rc != 0 {
            // SAFETY: no thread was created, so `start` is still ours.
            drop(unsafe { Box::from_raw(start) });
            return Err(Error::Os {
                call: "pthread_create",
                errno: rc,
            });
        }
        // A host's thread (one that may fork): `spawn` returns once it runs under its own name
        // with its allocator state built, so a fork right after sees it as it is, unless it is
        // not scheduled soon. forkprof's own threads are not waited for: a child's first
        // `record` would pay for their scheduling, and a thread that never starts is caught by
        // the session's start-up grace.
        if !exclude_stack {
            let until = Instant::now() + START_WAIT;
            while !running.load(Ordering::Acquire) && Instant::now() < until {
                std::thread::yield_now();
            }
        }
        Ok(RawThread {
            handle,
            stack: Some(stack),
        })
    }

    #[cfg(test)]
    fn stack_base(&self) -> usize {
        self.stack.as_ref().map_or(0, |s| s.as_ptr() as usize)
    }

    /// Waits for the thread to end, then unmaps its stack.
    pub fn join(mut self) {
        // Taken first: `Drop` (which runs when this returns) then has nothing to detach.
        let stack = self.stack.take();
        // SAFETY: `handle` is a joinable thread of this process, joined once (this consumes
        // the handle, and `Drop` no longer touches it).
        let rc = unsafe { libc::pthread_join(self.handle, std::ptr::null_mut()) };
        if rc == 0 {
            drop(stack); // the thread has ended: its stack is free to go
        } else {
            // Not ours to wait for after all (cannot happen for a handle from `spawn`): keep
            // the stack mapped rather than pull it from under a running thread.
            std::mem::forget(stack);
        }
    }
}

impl Drop for RawThread {
    fn drop(&mut self) {
        if let Some(stack) = self.stack.take() {
            // Not joined: the thread may still run on this stack, so it stays mapped for ever.
            // SAFETY: detaching a joinable thread we own lets libc release its descriptor when
            // it ends; the stack is ours and is never unmapped.
            unsafe { libc::pthread_detach(self.handle) };
            std::mem::forget(stack);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Plain;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn runs_the_body_and_joins() {
        let n = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let n = n.clone();
                RawThread::spawn(
                    c"forkprof-test",
                    DEFAULT_STACK,
                    &Plain,
                    Box::new(move || {
                        // Deep enough to need more than one stack page.
                        let buf = [i as u8; 64 << 10];
                        n.fetch_add(
                            buf.iter().map(|&b| b as u32).sum::<u32>() / (64 << 10),
                            Ordering::SeqCst,
                        );
                    }),
                )
                .unwrap()
            })
            .collect();
        for t in threads {
            t.join();
        }
        assert_eq!(n.load(Ordering::SeqCst), 1 + 2 + 3);
    }

    fn mapped(addr: usize) -> bool {
        // SAFETY: msync only inspects the mapping; ENOMEM means nothing is mapped there.
        unsafe { libc::msync(addr as *mut libc::c_void, page_size(), libc::MS_ASYNC) == 0 }
    }

    #[test]
    fn join_unmaps_the_stack_and_dropping_keeps_it() {
        let joined =
            RawThread::spawn(c"forkprof-test", DEFAULT_STACK, &Plain, Box::new(|| {})).unwrap();
        let base = joined.stack_base();
        assert!(mapped(base));
        joined.join();
        assert!(!mapped(base), "a joined thread's stack stays mapped");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let detached = RawThread::spawn(
            c"forkprof-test",
            DEFAULT_STACK,
            &Plain,
            Box::new(move || {
                let _ = rx.recv();
            }),
        )
        .unwrap();
        let base = detached.stack_base();
        drop(detached);
        assert!(mapped(base), "a running thread's stack was unmapped");
        drop(tx);
    }

    #[test]
    fn a_thread_starts_with_asynchronous_signals_blocked() {
        let seen = Arc::new(AtomicU32::new(0));
        let t = {
            let seen = seen.clone();
            RawThread::spawn_never_forking(
                c"forkprof-test",
                DEFAULT_STACK,
                &Plain,
                Box::new(move || {
                    let blocked = crate::signals::is_blocked(libc::SIGPROF) as u32
                        | (crate::signals::is_blocked(libc::SIGSEGV) as u32) << 1;
                    seen.store(blocked | 4, Ordering::SeqCst);
                }),
            )
            .unwrap()
        };
        t.join();
        assert_eq!(
            seen.load(Ordering::SeqCst),
            1 | 4,
            "SIGPROF blocked, SIGSEGV not"
        );
        assert!(
            !crate::signals::is_blocked(libc::SIGPROF),
            "the creator's mask changed"
        );
    }

    #[test]
    fn a_panicking_body_does_not_take_the_process_down() {
        let t = RawThread::spawn(
            c"forkprof-test",
            DEFAULT_STACK,
            &Plain,
            Box::new(|| panic!("deliberate panic in a raw thread")),
        )
        .unwrap();
        t.join();
    }
}
