//! One link's record in a version-4 table: a fixed 32-byte head, then the code, the URL and the
//! optional fields, padded to 8 bytes. A hash slot points straight at its record, so a lookup
//! reads the slot and then one record (the code to compare, the fields, and the URL to answer
//! with, side by side) instead of a slot, an entry and a string area.
//!
//! ```text
//! offset size field
//!      0    2 domain        index into the table's domains
//!      2    2 flags         HAS_VALID_SINCE | HAS_EXPIRES_AT | NO_FORWARD_QUERY | HAS_EXTRAS | FROM_API |
//!                            QUERY_OVERRIDE
//!      4    1 redirect      301/302/307/308 as Redirect::to_u8
//!      5    1 code_len
//!      6    2 url_len
//!      8    8 created_at    UTC seconds
//!     16    8 valid_since   0 unless HAS_VALID_SINCE
//!     24    8 expires_at    0 unless HAS_EXPIRES_AT
//!     32    … code, url, optional fields (HAS_EXTRAS), zero padding to a multiple of 8
//! ```
//! All integers little-endian, read with `from_le_bytes`, so a record needs no alignment.

/// Bytes before the code.
pub(crate) const HEAD: usize = 32;
/// Records start at multiples of this; slots and the order store `offset / ALIGN`.
pub(crate) const ALIGN: usize = 8;

/// The fixed head of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) domain: u16,
    pub(crate) flags: u16,
    pub(crate) redirect: u8,
    pub(crate) code_len: u8,
    pub(crate) url_len: u16,
    pub(crate) created_at: i64,
    pub(crate) valid_since: i64,
    pub(crate) expires_at: i64,
}

impl Head {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.domain.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.push(self.redirect);
        out.push(self.code_len);
        out.extend_from_slice(&self.url_len.to_le_bytes());
        out.extend_from_slice(&self.created_at.to_le_bytes());
        out.extend_from_slice(&self.valid_since.to_le_bytes());
        out.extend_from_slice(&self.expires_at.to_le_bytes());
    }

    /// The head at the start of `b`, if `b` is long enough.
    #[inline(always)]
    pub(crate) fn decode(b: &[u8]) -> Option<Head> {
        let b: &[u8; HEAD] = b.get(..HEAD)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let i64_at = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            i64::from_le_bytes(w)
        };
        Some(Head {
            domain: u16_at(0),
            flags: u16_at(2),
            redirect: b[4],
            code_len: b[5],
            url_len: u16_at(6),
            created_at: i64_at(8),
            valid_since: i64_at(16),
            expires_at: i64_at(24),
        })
    }
}

/// Domain id and code of the record at the start of `rec`, which must be one the builder wrote
/// (it panics on a cut record, as an indexing bug would).
pub(crate) fn key_of(rec: &[u8]) -> (u16, &[u8]) {
    let domain = u16::from_le_bytes([rec[0], rec[1]]);
    (domain, &rec[HEAD..HEAD + usize::from(rec[5])])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip() {
        let h = Head {
            domain: 3,
            flags: 0x1f,
            redirect: 2,
            code_len: 7,
            url_len: 4096,
            created_at: -5,
            valid_since: 1_700_000_000,
            expires_at: i64::MAX,
        };
        let mut b = Vec::new();
        h.encode(&mut b);
        assert_eq!(b.len(), HEAD);
        assert_eq!(Head::decode(&b), Some(h));
        b.extend_from_slice(b"x7Kp2Qa https://...");
        assert_eq!(key_of(&b), (3, &b"x7Kp2Qa"[..]));
        assert_eq!(Head::decode(&b[..HEAD - 1]), None);
    }
}
