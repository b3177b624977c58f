//! The fixed header in front of the archive.
//!
//! ```text
//! offset size field
//!      0    8 magic            b"DUANLIAN"
//!      8    4 format_version   u32 LE, this crate writes FORMAT_VERSION, reads 1 to 5
//!     12    4 rkyv_format      u32 LE, RKYV_FORMAT bits of the archive's primitive layout
//!     16    4 header_len       u32 LE, 80 (64 up to version 4): where the archive starts
//!     20    4 flags            u32 LE, 0 (reserved)
//!     24    8 link_count       u64 LE
//!     32    8 sequence         u64 LE, last change-feed sequence folded in; 0 for a bulk load
//!     40    8 payload_len      u64 LE, archive bytes after the header; the file ends there
//!     48    8 built_at         i64 LE, UTC seconds
//!     56    4 payload_crc32c   u32 LE, CRC32C of the archive
//!     60    4 reserved         0 (up to version 4: header_crc32c of bytes 0..60, header ends)
//!     64    8 feed_id          u64 LE, which change feed `sequence` counts in; 0 = the local
//!                              journal or none (version 5)
//!     72    4 reserved         0
//!     76    4 header_crc32c    u32 LE, CRC32C of bytes 0..76
//! ```
//! Both header lengths are multiples of 16, so the archive is as aligned in the file (and in
//! a mapping) as rkyv's `aligned` format needs.
use crate::SnapshotError;

/// The first eight bytes of every snapshot.
pub const MAGIC: [u8; 8] = *b"DUANLIAN";
/// The format version this crate reads and writes. Bumped whenever the header, the table
/// layout, the key hash or rkyv's primitive format changes.
pub const FORMAT_VERSION: u32 = 5;
/// The oldest format version this crate still reads. Versions 1 to 3 share one table layout
/// (slots → fixed-size entries → strings; version 2 added the optional-fields flag, version 3
/// the from-the-API flag) and are rebuilt into the current one at open; version 4 keeps each
/// link in one record that its slot points at; version 5 adds the feed id to the header.
pub const MIN_FORMAT_VERSION: u32 = 1;
/// Header size of the current version; the archive starts right after it, 16-byte aligned.
pub const HEADER_LEN: usize = 80;
/// Header size up to version 4.
const V4_HEADER_LEN: usize = 64;

const LITTLE_ENDIAN: u32 = 1;
const ALIGNED: u32 = 2;
const POINTER_WIDTH_32: u32 = 4;
/// rkyv's primitive format for this build, as pinned in the workspace manifest.
pub const RKYV_FORMAT: u32 = LITTLE_ENDIAN | ALIGNED | POINTER_WIDTH_32;

/// The decoded header of a snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version of the file.
    pub format_version: u32,
    /// rkyv primitive-format bits.
    pub rkyv_format: u32,
    /// Number of links in the table.
    pub link_count: u64,
    /// Last change-feed sequence number the snapshot includes; 0 for a plain bulk load.
    pub sequence: u64,
    /// Length of the archive after the header.
    pub payload_len: u64,
    /// When the file was built, UTC seconds.
    pub built_at: i64,
    /// CRC32C of the archive.
    pub payload_crc32c: u32,
    /// Which change feed `sequence` counts in: a cluster bucket's identity, or 0 for the local
    /// journal (and for every file before version 5).
    pub feed_id: u64,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl Header {
    /// Where the archive starts in a file of this header's version.
    pub fn archive_offset(&self) -> usize {
        if self.format_version >= 5 {
            HEADER_LEN
        } else {
            V4_HEADER_LEN
        }
    }

    /// Encodes a current-version header (whatever `format_version` says).
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.rkyv_format.to_le_bytes());
        b[16..20].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[24..32].copy_from_slice(&self.link_count.to_le_bytes());
        b[32..40].copy_from_slice(&self.sequence.to_le_bytes());
        b[40..48].copy_from_slice(&self.payload_len.to_le_bytes());
        b[48..56].copy_from_slice(&self.built_at.to_le_bytes());
        b[56..60].copy_from_slice(&self.payload_crc32c.to_le_bytes());
        b[64..72].copy_from_slice(&self.feed_id.to_le_bytes());
        let crc = crc32c::crc32c(&b[..76]);
        b[76..80].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header: magic, version, header checksum, rkyv format, and that the
    /// file is exactly as long as the header says. `file_len` is the whole file's length.
    pub(crate) fn decode(bytes: &[u8], file_len: u64) -> Result<Header, SnapshotError> {
        if file_len == 0 {
            return Err(SnapshotError::Empty);
        }
        let truncated = |expected: usize| SnapshotError::Truncated {
            expected: expected as u64,
            actual: file_len,
        };
        if bytes.len() < V4_HEADER_LEN {
            return Err(truncated(V4_HEADER_LEN));
        }
        if bytes[0..8] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let format_version = u32_at(bytes, 8);
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&format_version) {
            return Err(SnapshotError::UnsupportedVersion(format_version));
        }
        let (len, crc_at) = if format_version >= 5 {
            (HEADER_LEN, 76)
        } else {
            (V4_HEADER_LEN, 60)
        };
        if bytes.len() < len {
            return Err(truncated(len));
        }
        let stored = u32_at(bytes, crc_at);
        let actual = crc32c::crc32c(&bytes[..crc_at]);
        if stored != actual {
            return Err(SnapshotError::HeaderChecksum { stored, actual });
        }
        let rkyv_format = u32_at(bytes, 12);
        if rkyv_format != RKYV_FORMAT {
            return Err(SnapshotError::RkyvFormat {
                found: rkyv_format,
                expected: RKYV_FORMAT,
            });
        }
        let header_len = u32_at(bytes, 16);
        let flags = u32_at(bytes, 20);
        if header_len as usize != len || flags != 0 {
            return Err(SnapshotError::Inconsistent(format!(
                "header_len {header_len} / flags {flags:#x} are not those of version {format_version}"
            )));
        }
        let h = Header {
            format_version,
            rkyv_format,
            link_count: u64_at(bytes, 24),
            sequence: u64_at(bytes, 32),
            payload_len: u64_at(bytes, 40),
            built_at: u64_at(bytes, 48) as i64,
            payload_crc32c: u32_at(bytes, 56),
            feed_id: if format_version >= 5 {
                u64_at(bytes, 64)
            } else {
                0
            },
        };
        let expected = (len as u64).saturating_add(h.payload_len);
        if file_len < expected {
            return Err(SnapshotError::Truncated {
                expected,
                actual: file_len,
            });
        }
        if file_len > expected {
            return Err(SnapshotError::TrailingBytes {
                expected,
                actual: file_len,
            });
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            format_version: FORMAT_VERSION,
            rkyv_format: RKYV_FORMAT,
            link_count: 3,
            sequence: 9,
            payload_len: 100,
            built_at: 1_700_000_000,
            payload_crc32c: 0xdead_beef,
            feed_id: 0x0123_4567_89ab_cdef,
        }
    }

    #[test]
    fn round_trips() {
        let b = sample().encode();
        assert_eq!(Header::decode(&b, 180), Ok(sample()));
    }

    #[test]
    fn length_mismatches_are_named() {
        let b = sample().encode();
        assert!(matches!(
            Header::decode(&b, 179),
            Err(SnapshotError::Truncated {
                expected: 180,
                actual: 179
            })
        ));
        assert!(matches!(
            Header::decode(&b, 181),
            Err(SnapshotError::TrailingBytes { .. })
        ));
        assert_eq!(
            Header::decode(&b[..10], 10),
            Err(SnapshotError::Truncated {
                expected: 64,
                actual: 10
            })
        );
        assert_eq!(Header::decode(&[], 0), Err(SnapshotError::Empty));
    }
}
