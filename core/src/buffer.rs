//! The bounded buffer between host threads and the collector.
//!
//! Sharded byte vectors, each behind a [`BriefLock`]. A host thread tries its own shard first
//! and the others after it with `try_lock`, so `record()` never waits: if every shard is busy
//! or full the sample is dropped and counted. The collector swaps a shard's vector for an
//! empty one of the same capacity, so steady-state recording allocates nothing.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use crate::sync::BriefLock;

const SHARDS: usize = 8;

pub(crate) struct SampleBuffer {
    shards: Box<[CachePadded<BriefLock<Vec<u8>>>]>,
    shard_capacity: usize,
    /// Set by the collector before its last drain: a record that takes a shard lock after
    /// that drain would never be read, so it is refused instead of silently lost.
    closed: AtomicBool,
}

static NEXT_HINT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SHARD_HINT: Cell<usize> = const { Cell::new(usize::MAX) };
}

#[inline]
fn shard_hint() -> usize {
    SHARD_HINT.with(|h| {
        let mut v = h.get();
        if v == usize::MAX {
            v = NEXT_HINT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            h.set(v);
        }
        v
    })
}

/// What became of a push.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Push {
    Stored,
    /// Every shard was full or busy.
    Dropped,
    /// The record is larger than one shard can ever hold.
    TooLarge,
    /// The profiler is stopping and its collector has drained for the last time.
    Closed,
}

impl SampleBuffer {
    pub fn new(capacity: usize) -> Self {
        let shard_capacity = (capacity / SHARDS).max(1024);
        let shards = (0..SHARDS)
            .map(|_| CachePadded::new(BriefLock::new(Vec::with_capacity(shard_capacity))))
            .collect();
        SampleBuffer {
            shards,
            shard_capacity,
            closed: AtomicBool::new(false),
        }
    }

    pub fn shard_capacity(&self) -> usize {
        self.shard_capacity
    }

    /// Writes a record of `len` bytes with `write`, or drops it. Returns whether the shard it
    /// landed in is now more than half full (time to wake the collector).
    #[inline]
    pub fn push(&self, len: usize, write: impl FnOnce(&mut Vec<u8>)) -> (Push, bool) {
        if len > self.shard_capacity {
            return (Push::TooLarge, false);
        }
        let start = shard_hint();
        for i in 0..SHARDS {
            let shard = &self.shards[(start + i) % SHARDS];
            if let Some(mut buf) = shard.try_lock() {
                // Under the shard lock: `close` happens before the collector's last locking
                // of this shard, so either that drain reads this record or we see `closed`.
                if self.closed.load(Ordering::Relaxed) {
                    return (Push::Closed, false);
                }
                if buf.len() + len <= self.shard_capacity {
                    write(&mut buf);
                    return (Push::Stored, buf.len() * 2 > self.shard_capacity);
                }
            }
        }
        (Push::Dropped, true)
    }

    /// No record is stored after the next `drain` (call it before the collector's last one).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Hands each shard's bytes to `consume`, leaving the shard empty. `spare` must be an empty
    /// vector; it is swapped through the shards so no allocation happens.
    pub fn drain(&self, spare: &mut Vec<u8>, mut consume: impl FnMut(&[u8])) {
        for shard in self.shards.iter() {
            {
                let mut buf = shard.lock();
                if buf.is_empty() {
                    continue;
                }
                crate::hooks::pause_point(crate::hooks::Point::BufferSwap);
                std::mem::swap(&mut *buf, spare);
            }
            consume(spare);
            spare.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_when_full_and_drains_everything() {
        let buf = SampleBuffer::new(64 << 10);
        let cap = buf.shard_capacity();
        let mut stored = 0;
        let mut dropped = 0;
        for _ in 0..(SHARDS * cap / 100 + 50) {
            match buf.push(100, |v| v.extend_from_slice(&[7u8; 100])).0 {
                Push::Stored => stored += 1,
                Push::Dropped => dropped += 1,
                Push::TooLarge | Push::Closed => unreachable!(),
            }
        }
        assert!(dropped > 0);
        let mut spare = Vec::with_capacity(cap);
        let mut total = 0;
        buf.drain(&mut spare, |b| total += b.len());
        assert_eq!(total, stored * 100);
        assert_eq!(buf.push(cap + 1, |_| {}).0, Push::TooLarge);
        buf.close();
        assert_eq!(
            buf.push(10, |v| v.extend_from_slice(&[1u8; 10])).0,
            Push::Closed
        );
    }
}
