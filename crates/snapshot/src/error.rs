use std::{io, path::PathBuf};

/// Why a snapshot could not be opened, verified or written. Every message carries its cause;
/// `source()` adds nothing, so a chain printed with `{:#}` never repeats the OS error.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading, mapping or writing the file failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// The path names a FIFO, directory, device or socket: only regular files are snapshots.
    #[error("{}: {kind}, not a regular file (only a snapshot file can be loaded)", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead ("a FIFO", "a directory", ...).
        kind: &'static str,
    },
    /// The file has zero length (an interrupted copy, or a placeholder).
    #[error("file is empty (zero length)")]
    Empty,
    /// The file does not start with the snapshot magic: not a snapshot at all.
    #[error("bad magic: not a duanlian snapshot")]
    BadMagic,
    /// A format version this build cannot read.
    #[error(
        "unsupported format version {0} (this build reads versions {min} to {max})",
        min = crate::MIN_FORMAT_VERSION,
        max = crate::FORMAT_VERSION
    )]
    UnsupportedVersion(u32),
    /// The header's own checksum does not match.
    #[error("header checksum mismatch: stored {stored:#010x}, computed {actual:#010x}")]
    HeaderChecksum {
        /// CRC32C stored in the header.
        stored: u32,
        /// CRC32C of the header bytes as read.
        actual: u32,
    },
    /// The archive was written with another rkyv primitive format.
    #[error("archive uses rkyv format {found:#x}, this build reads {expected:#x}")]
    RkyvFormat {
        /// Format bits in the file.
        found: u32,
        /// Format bits of this build.
        expected: u32,
    },
    /// The file is shorter than its header says.
    #[error("truncated: {actual} bytes, the header says {expected}")]
    Truncated {
        /// Length the header implies.
        expected: u64,
        /// Length of the file.
        actual: u64,
    },
    /// The file is longer than its header says.
    #[error("trailing bytes: {actual} bytes, the header says {expected}")]
    TrailingBytes {
        /// Length the header implies.
        expected: u64,
        /// Length of the file.
        actual: u64,
    },
    /// The archive's checksum does not match the header.
    #[error("checksum mismatch: stored {stored:#010x}, computed {actual:#010x}")]
    PayloadChecksum {
        /// CRC32C stored in the header.
        stored: u32,
        /// CRC32C of the archive as read.
        actual: u32,
    },
    /// rkyv's validation rejected the archive.
    #[error("invalid archive: {0}")]
    InvalidArchive(String),
    /// The archive is well-formed but breaks an invariant of the table.
    #[error("inconsistent table: {0}")]
    Inconsistent(String),
}

impl PartialEq for SnapshotError {
    fn eq(&self, other: &Self) -> bool {
        // io::Error has no equality; comparing the rendered message is enough for tests.
        self.to_string() == other.to_string()
    }
}

/// Why a link could not be added to a [`crate::Builder`], or the table not finished.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// More than 65,535 distinct domains in one snapshot.
    #[error("more than 65535 domains in one snapshot")]
    TooManyDomains,
    /// More than `u32::MAX - 1` links in one snapshot.
    #[error("more than 4294967294 links in one snapshot")]
    TooManyLinks,
    /// The same `(domain, code)` more than once; the pairs are indexes in push order.
    #[error("{} duplicate (domain, code) pairs", .0.len())]
    Duplicates(Vec<crate::Duplicate>),
    /// Serialising the archive failed.
    #[error("serialising the archive failed: {0}")]
    Archive(String),
}
