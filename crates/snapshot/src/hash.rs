//! The table's key hash. It is part of the file format: changing it needs a new format version.

const K0: u64 = 0x9E37_79B9_7F4A_7C15;
const K1: u64 = 0xD6E8_FEB8_6659_FD93;

#[inline(always)]
fn folded_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// The first eight bytes of `s`, zero-padded, as a little-endian word. Shorter input is read
/// with two overlapping fixed-size loads, whose shared bytes land on the same bits: copying a
/// variable-length tail into a zeroed buffer instead compiles to a `memcpy` call, and the
/// request path made eight of them per lookup.
#[inline(always)]
pub(crate) fn le_word(s: &[u8]) -> u64 {
    if let Some(w) = s.first_chunk::<8>() {
        return u64::from_le_bytes(*w);
    }
    let n = s.len();
    if let (Some(lo), Some(hi)) = (s.first_chunk::<4>(), s.last_chunk::<4>()) {
        let (lo, hi) = (u32::from_le_bytes(*lo), u32::from_le_bytes(*hi));
        return u64::from(lo) | u64::from(hi) << (8 * (n - 4));
    }
    if let (Some(lo), Some(hi)) = (s.first_chunk::<2>(), s.last_chunk::<2>()) {
        let (lo, hi) = (u16::from_le_bytes(*lo), u16::from_le_bytes(*hi));
        return u64::from(lo) | u64::from(hi) << (8 * (n - 2));
    }
    s.first().map_or(0, |&b| u64::from(b))
}

#[inline(always)]
fn absorb(mut h: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h = folded_mul(h ^ le_word(c), K0);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        h = folded_mul(h ^ le_word(rest), K0);
    }
    h
}

/// Hashes `(domain, code)` with the table's seed (random per snapshot, so crafted codes cannot
/// be made to collide in a file whose seed the attacker does not know).
#[inline(always)]
pub(crate) fn key_hash(seed: u64, domain: &[u8], code: &[u8]) -> u64 {
    // The lengths go in first so ("ab","c") and ("a","bc") hash apart.
    let lens = (domain.len() as u64) << 32 | code.len() as u64;
    let h = folded_mul(seed ^ lens, K1);
    let h = absorb(h, domain);
    let h = absorb(h, code);
    folded_mul(h, K1 ^ seed.rotate_left(17))
}

/// Maps a hash onto `0..n` without a division (Lemire's multiply-shift).
#[inline(always)]
pub(crate) fn slot_of(hash: u64, n: usize) -> usize {
    ((u128::from(hash) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable() {
        // The value is in committed snapshot files: it must never change within format version 1.
        assert_eq!(
            key_hash(42, b"go.example.cn", b"x7Kp2Qa"),
            0x7002_6b2c_63c7_3157
        );
    }

    #[test]
    fn le_word_is_the_zero_padded_word() {
        let bytes: Vec<u8> = (1..=12u8).map(|b| b.wrapping_mul(37)).collect();
        for start in 0..4 {
            for len in 0..=bytes.len() - start {
                let s = &bytes[start..start + len];
                let mut w = [0u8; 8];
                let n = len.min(8);
                w[..n].copy_from_slice(&s[..n]);
                assert_eq!(le_word(s), u64::from_le_bytes(w), "{s:?}");
            }
        }
    }

    #[test]
    fn boundaries_matter() {
        assert_ne!(key_hash(1, b"ab", b"c"), key_hash(1, b"a", b"bc"));
        assert_ne!(key_hash(1, b"a", b"b"), key_hash(2, b"a", b"b"));
    }

    #[test]
    fn slot_of_stays_in_range() {
        for h in [0, 1, u64::MAX, K0, K1] {
            assert!(slot_of(h, 7) < 7);
        }
    }
}
