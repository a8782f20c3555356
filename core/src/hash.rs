//! A small, fast, non-cryptographic hasher for the profiler's own tables.
//!
//! The keys are frame names and location ids produced by the host, hashed millions of times a
//! minute on the collector thread; SipHash's DoS resistance buys nothing there and costs about
//! 3× the time.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

const MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

impl FastHasher {
    #[inline]
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(MULTIPLIER);
    }
}

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes([
                c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7],
            ]));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 56));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.mix(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.mix(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        // Fold the high bits down: hashbrown takes its bucket index from the low bits.
        self.0 ^ (self.0 >> 29)
    }
}

/// Hashes a long byte string (a sample's encoded frames and labels, often 1–3 KB) in four
/// independent lanes, each taking one word per step as `(lane ^ word) * K`: one load-xor and
/// one multiply per eight bytes, and the four multiplies of a step do not wait on each other
/// (about a third of the instructions of [`FastHasher::write`], whose single chain also
/// rotates). The lanes are folded together with 128-bit multiplies at the end, which bring
/// the high bits down to the low bits a hash index buckets by.
///
/// Known weak spot: flipping bit 63 of two words of the same lane cancels out (a multiply by
/// an odd constant carries a top-bit flip through unchanged). Callers compare the bytes of
/// every candidate, so a collision costs a comparison, never a wrong match; and this is not
/// for tables an attacker feeds.
#[inline]
pub fn hash_bytes(b: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    const SEEDS: [u64; 4] = [
        0xA076_1D64_78BD_642F,
        0xE703_7ED1_A0B4_28DB,
        0x8EBC_6AF0_9C88_C6E3,
        0x5899_65CC_7537_4CC3,
    ];
    #[inline(always)]
    fn fold(a: u64, b: u64) -> u64 {
        let p = (a as u128).wrapping_mul(b as u128);
        (p as u64) ^ ((p >> 64) as u64)
    }
    let mut lanes = SEEDS;
    let mut blocks = b.chunks_exact(32);
    for block in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            *lane = (*lane ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
    }
    // The last 0–31 bytes, zero-padded (the length is folded in below, so padding cannot
    // make two lengths agree).
    let rest = blocks.remainder();
    if !rest.is_empty() {
        let mut tail = [0u8; 32];
        tail[..rest.len()].copy_from_slice(rest);
        for (lane, w) in lanes.iter_mut().zip(tail.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            *lane = (*lane ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
    }
    let h = fold(
        fold(lanes[0] ^ SEEDS[1], lanes[1] ^ b.len() as u64),
        fold(lanes[2] ^ SEEDS[3], lanes[3] ^ SEEDS[0]),
    );
    h ^ (h >> 29)
}

/// Whether two byte strings are equal, 64 bytes per step folded with XOR/OR, which the
/// compiler turns into vector instructions: a cache hit compares a whole encoded sample
/// (1–3 KB), and a C library's `memcmp` may compare byte by byte.
#[inline]
pub fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut ca = a.chunks_exact(64);
    let mut cb = b.chunks_exact(64);
    for (x, y) in (&mut ca).zip(&mut cb) {
        let diff = x.iter().zip(y).fold(0u8, |d, (p, q)| d | (p ^ q));
        if diff != 0 {
            return false;
        }
    }
    ca.remainder() == cb.remainder()
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

pub fn fast_map<K, V>() -> FastMap<K, V> {
    HashMap::with_hasher(BuildHasherDefault::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_eq_agrees_with_slice_equality_at_every_length_and_position() {
        let a: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
        for n in 0..=150 {
            assert!(bytes_eq(&a[..n], &a[..n]));
            for at in 0..n {
                let mut b = a[..n].to_vec();
                b[at] ^= 1;
                assert!(!bytes_eq(&a[..n], &b), "n {n}, differs at {at}");
            }
        }
        assert!(!bytes_eq(&a[..10], &a[..11]));
    }

    #[test]
    fn hash_bytes_sees_every_byte_and_the_length() {
        let a: Vec<u8> = (0..200u32).map(|i| (i * 13) as u8).collect();
        for n in 0..=100 {
            let h = hash_bytes(&a[..n]);
            for at in 0..n {
                let mut b = a[..n].to_vec();
                b[at] ^= 0x40;
                assert_ne!(hash_bytes(&b), h, "n {n}, flipped at {at}");
            }
            let mut longer = a[..n].to_vec();
            longer.push(0);
            assert_ne!(hash_bytes(&longer), h, "n {n}: a trailing zero");
        }
    }
}
