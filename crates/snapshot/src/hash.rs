//! The table's key hash. It is part of the file format: changing it needs a new format version.

const K0: u64 = 0x9E37_79B9_7F4A_7C15;
const K1: u64 = 0xD6E8_FEB8_6659_FD93;

#[inline(always)]
fn folded_mul(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[inline(always)]
fn absorb(mut h: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = folded_mul(h ^ u64::from_le_bytes(w), K0);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = folded_mul(h ^ u64::from_le_bytes(w), K0);
    }
    h
}

/// Hashes `(domain, code)` with the table's seed (random per snapshot, so crafted codes cannot
/// be made to collide in a file whose seed the attacker does not know).
#[inline]
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
