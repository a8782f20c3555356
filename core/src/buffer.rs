//! The bounded buffer between host threads and the collector.
//!
//! Eight shards, each behind a [`BriefLock`], each with two halves in one [`ForkLocalRegion`]:
//! host threads append records to a shard's active half; the collector flips the halves under
//! the lock and reads the full one outside it. A host thread tries its own shard first and the
//! others after it with `try_lock`, so `record()` never waits: if every shard is busy or full
//! the sample is dropped and counted. Nothing is allocated after start, and forked children do
//! not inherit the region (see `region.rs`) where the platform can reveal any fork before a
//! host thread writes (a wipe-on-fork sentinel).

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use crate::platform::Platform;
use crate::region::ForkLocalRegion;
use crate::sync::BriefLock;

const SHARDS: usize = 8;

/// A shard's state: which half hosts write to, and how much of it is used.
struct Shard {
    active: usize,
    len: usize,
}

pub(crate) struct SampleBuffer {
    region: ForkLocalRegion,
    shards: Box<[CachePadded<BriefLock<Shard>>]>,
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
    SHARD_HINT
        .try_with(|h| {
            let mut v = h.get();
            if v == usize::MAX {
                v = NEXT_HINT.fetch_add(1, Ordering::Relaxed) % SHARDS;
                h.set(v);
            }
            v
        })
        .unwrap_or(0)
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
    /// `capacity` bytes of records can wait for the collector (the region holds twice that:
    /// the halves being filled and the halves being read). `None` if the memory cannot be had.
    /// `forks_seen_at_once`: every child notices its fork before its first record (the fork
    /// protocol's wipe-on-fork sentinel), so the buffer can be left out of children.
    pub fn new(
        capacity: usize,
        platform: &'static dyn Platform,
        forks_seen_at_once: bool,
    ) -> Option<Self> {
        let shard_capacity = (capacity / SHARDS).max(1024);
        // Host threads write here before they know their process is a child. With a sentinel
        // a child nobody told about its fork sees it before its first write; without one it
        // sees it only at a pid check (every 64 records), so the buffer must stay mapped in
        // children: they write into their own copy, which nobody reads.
        let len = 2 * SHARDS * shard_capacity;
        let region = if forks_seen_at_once {
            ForkLocalRegion::new(len, platform)?
        } else {
            ForkLocalRegion::inherited(len, platform)?
        };
        let shards = (0..SHARDS)
            .map(|_| CachePadded::new(BriefLock::new(Shard { active: 0, len: 0 })))
            .collect();
        Some(SampleBuffer {
            region,
            shards,
            shard_capacity,
            closed: AtomicBool::new(false),
        })
    }

    /// The platform the buffer's memory came from (the collector's tables use it too).
    pub fn platform(&self) -> &'static dyn Platform {
        self.region.platform()
    }

    #[cfg(test)]
    pub fn shard_capacity(&self) -> usize {
        self.shard_capacity
    }

    /// Start of half `half` of shard `shard`.
    #[inline]
    fn half(&self, shard: usize, half: usize) -> *mut MaybeUninit<u8> {
        debug_assert!((shard * 2 + half + 1) * self.shard_capacity <= self.region.len());
        // SAFETY: within the region: 2 halves × SHARDS shards × shard_capacity bytes.
        unsafe {
            self.region
                .as_ptr()
                .add((shard * 2 + half) * self.shard_capacity)
        }
    }

    /// Writes a record of `len` bytes with `write`, or drops it. Returns whether the shard it
    /// landed in is now more than half full (time to wake the collector).
    #[inline]
    pub fn push(&self, len: usize, write: impl FnOnce(&mut [MaybeUninit<u8>])) -> (Push, bool) {
        if len > self.shard_capacity {
            return (Push::TooLarge, false);
        }
        let start = shard_hint();
        for i in 0..SHARDS {
            let index = (start + i) % SHARDS;
            if let Some(mut shard) = self.shards[index].try_lock() {
                // Under the shard lock: `close` happens before the collector's last locking
                // of this shard, so either that drain reads this record or we see `closed`.
                if self.closed.load(Ordering::Relaxed) {
                    return (Push::Closed, false);
                }
                if shard.len + len <= self.shard_capacity {
                    // SAFETY: bytes `len..len + n` of the shard's active half lie within the
                    // half (checked above); they are written only under this shard's lock, and
                    // the collector reads only the other half until it flips them, also under
                    // this lock.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            self.half(index, shard.active).add(shard.len),
                            len,
                        )
                    };
                    write(dst);
                    shard.len += len;
                    return (Push::Stored, shard.len * 2 > self.shard_capacity);
                }
            }
        }
        (Push::Dropped, true)
    }

    /// No record is stored after the next `drain` (call it before the collector's last one).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Hands each shard's records to `consume`, leaving the shard empty. Called only by the
    /// collector thread: a half handed out here is not written again until the next call has
    /// flipped the halves back, after `consume` returned.
    pub fn drain(&self, mut consume: impl FnMut(&[u8])) {
        for (index, shard) in self.shards.iter().enumerate() {
            let (half, len) = {
                let mut shard = shard.lock();
                if shard.len == 0 {
                    continue;
                }
                crate::pause_points::pause_point(crate::pause_points::Point::HoldingShardToSwap);
                let full = (shard.active, shard.len);
                shard.active ^= 1;
                shard.len = 0;
                full
            };
            // SAFETY: hosts now write to the other half; the first `len` bytes of this one were
            // initialised by `push` (the region starts zeroed, `encode` fills what it reserves).
            let bytes =
                unsafe { std::slice::from_raw_parts(self.half(index, half).cast::<u8>(), len) };
            consume(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Plain;

    fn fill(v: &mut [MaybeUninit<u8>], byte: u8) {
        for b in v {
            b.write(byte);
        }
    }

    #[test]
    fn drops_when_full_and_drains_everything() {
        let buf = SampleBuffer::new(64 << 10, &Plain, true).unwrap();
        let cap = buf.shard_capacity();
        let mut stored = 0;
        let mut dropped = 0;
        for i in 0..(SHARDS * cap / 100 + 50) {
            match buf.push(100, |v| fill(v, i as u8)).0 {
                Push::Stored => stored += 1,
                Push::Dropped => dropped += 1,
                Push::TooLarge | Push::Closed => unreachable!(),
            }
        }
        assert!(dropped > 0);
        let mut total = 0;
        buf.drain(|b| {
            assert!(b.chunks(100).all(|rec| rec.iter().all(|&x| x == rec[0])));
            total += b.len();
        });
        assert_eq!(total, stored * 100);
        // The halves flipped: the buffer takes records again and hands out only the new ones.
        assert_eq!(buf.push(100, |v| fill(v, 0xAB)).0, Push::Stored);
        let mut seen = Vec::new();
        buf.drain(|b| seen.extend_from_slice(b));
        assert_eq!(seen, vec![0xAB; 100]);
        assert_eq!(buf.push(cap + 1, |_| {}).0, Push::TooLarge);
        buf.close();
        assert_eq!(buf.push(10, |v| fill(v, 1)).0, Push::Closed);
    }
}
