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

/// Hashes a long byte string (a sample's encoded frames and labels, often 1–3 KB) sixteen
/// bytes per step: each step multiplies two words into 128 bits and folds the halves, and two
/// accumulators alternate so consecutive multiplies do not wait on each other. About half the
/// instructions per byte of [`FastHasher::write`], whose one chain mixes eight bytes per
/// dependent multiply. Not for hash maps an attacker feeds: callers compare the bytes of every
/// candidate, so a weak spot costs time, never a wrong match.
#[inline]
pub fn hash_bytes(b: &[u8]) -> u64 {
    const K0: u64 = 0xA076_1D64_78BD_642F;
    const K1: u64 = 0xE703_7ED1_A0B4_28DB;
    #[inline(always)]
    fn fold(a: u64, b: u64) -> u64 {
        let p = (a as u128).wrapping_mul(b as u128);
        (p as u64) ^ ((p >> 64) as u64)
    }
    #[inline(always)]
    fn word(b: &[u8], at: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(w)
    }
    let (mut x, mut y) = (K0 ^ b.len() as u64, K1);
    let mut rest = b;
    while rest.len() >= 32 {
        x ^= fold(word(rest, 0) ^ K0, word(rest, 8) ^ K1);
        y ^= fold(word(rest, 16) ^ K0, word(rest, 24) ^ K1);
        x = x.rotate_left(23);
        y = y.rotate_left(23);
        rest = &rest[32..];
    }
    if rest.len() >= 16 {
        x ^= fold(word(rest, 0) ^ K0, word(rest, 8) ^ K1);
        rest = &rest[16..];
    }
    // The last 0–15 bytes, zero-padded into two words (the length is already in `x`).
    let mut tail = [0u8; 16];
    tail[..rest.len()].copy_from_slice(rest);
    y ^= fold(word(&tail, 0) ^ K0, word(&tail, 8) ^ K1);
    let h = fold(x ^ K1, y ^ K0);
    h ^ (h >> 29)
}

/// Whether two byte strings are equal, compared 32 bytes per step with plain word loads: a
/// cache hit compares a whole encoded sample (1–3 KB), and a C library's `memcmp` may compare
/// byte by byte.
#[inline]
pub fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut ca = a.chunks_exact(32);
    let mut cb = b.chunks_exact(32);
    for (x, y) in (&mut ca).zip(&mut cb) {
        let mut diff = 0u64;
        for i in 0..4 {
            let (mut wx, mut wy) = ([0u8; 8], [0u8; 8]);
            wx.copy_from_slice(&x[8 * i..8 * i + 8]);
            wy.copy_from_slice(&y[8 * i..8 * i + 8]);
            diff |= u64::from_ne_bytes(wx) ^ u64::from_ne_bytes(wy);
        }
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
