//! What an integration registers to follow every fork: its own threads (a runtime's tick
//! thread, a host's sampling timer) restart in each child the engine restarts, however the
//! fork happened (a wrapped entry point, a native `fork()` from C, FFI).
//!
//! The hooks are kept in a fixed array of atomics, so running them needs no lock and no
//! allocation: they run from the child's restart path ([`super::handlers::restart_in_child`]),
//! right after the engine's own profilers restarted.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

const MAX_HOOKS: usize = 8;

/// Each slot holds a `fn()` as an address, 0 when free. Slots are only ever filled.
static HOOKS: [AtomicUsize; MAX_HOOKS] = [const { AtomicUsize::new(0) }; MAX_HOOKS];

/// Registers `hook` to run in every child the engine follows, right after the engine's own
/// profilers restarted there, on the same path: on platforms with atfork handlers, inside
/// forkprof's child handler (the child's only thread, every signal blocked); under explicit
/// interception, inside [`super::after_fork_child`]. Registering the same function twice is a
/// no-op; at most 8 hooks per process.
///
/// A hook **may**: use atomics, allocate (libc resets its allocator's locks in the child before
/// any atfork child handler runs), start threads with [`crate::thread::RawThread`] or
/// `pthread_create`, call forkprof. It **may not**: start a `std::thread` (std's start-up lock
/// may be held by a thread the child does not have), print or log, read the environment,
/// resolve names, `dlopen`, or wait for any thread: the same rules as the engine's own restart.
pub fn on_child_restart(hook: fn()) -> Result<()> {
    let addr = hook as usize;
    for slot in &HOOKS {
        match slot.compare_exchange(0, addr, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(()),
            Err(held) if held == addr => return Ok(()),
            Err(_) => {}
        }
    }
    Err(Error::InvalidConfig {
        field: "on_child_restart",
        reason: format!("accepts at most {MAX_HOOKS} hooks per process; register one function that calls the others"),
    })
}

/// Runs every registered hook, oldest first. Atomics only, besides what the hooks do.
pub(super) fn run() {
    for slot in &HOOKS {
        let addr = slot.load(Ordering::Acquire);
        if addr == 0 {
            break;
        }
        // SAFETY: every non-zero slot was filled by `on_child_restart` from a `fn()` of this
        // program, and function addresses stay valid for the life of the process.
        let hook: fn() = unsafe { std::mem::transmute::<usize, fn()>(addr) };
        hook();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! distinct_hooks {
        ($($name:ident = $n:literal),*) => {
            $(fn $name() { std::hint::black_box($n); })*
        };
    }
    distinct_hooks!(
        h0 = 0,
        h1 = 1,
        h2 = 2,
        h3 = 3,
        h4 = 4,
        h5 = 5,
        h6 = 6,
        h7 = 7,
        h8 = 8
    );

    #[test]
    fn the_same_hook_twice_is_one_and_the_ninth_is_refused() {
        // Slots are process-wide: this is the only test in the crate that registers hooks.
        on_child_restart(h0).unwrap();
        on_child_restart(h0).unwrap();
        let filled = || {
            HOOKS
                .iter()
                .filter(|s| s.load(Ordering::Relaxed) != 0)
                .count()
        };
        assert_eq!(filled(), 1);
        for h in [h1, h2, h3, h4, h5, h6, h7] {
            on_child_restart(h).unwrap();
        }
        assert_eq!(filled(), MAX_HOOKS);
        let msg = on_child_restart(h8).unwrap_err().to_string();
        assert!(msg.contains("at most 8 hooks"), "{msg}");
        on_child_restart(h3).expect("a hook already registered is accepted when slots are full");
    }
}
