use std::{fmt, io, path::PathBuf};

/// Why a snapshot could not be opened, verified or written.
#[derive(Debug)]
pub enum SnapshotError {
    /// Reading, mapping or writing the file failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The path names a FIFO, directory, device or socket: only regular files are snapshots.
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead ("a FIFO", "a directory", ...).
        kind: &'static str,
    },
    /// The file has zero length (an interrupted copy, or a placeholder).
    Empty,
    /// The file does not start with the snapshot magic: not a snapshot at all.
    BadMagic,
    /// A format version this build cannot read.
    UnsupportedVersion(u32),
    /// The header's own checksum does not match.
    HeaderChecksum {
        /// CRC32C stored in the header.
        stored: u32,
        /// CRC32C of the header bytes as read.
        actual: u32,
    },
    /// The archive was written with another rkyv primitive format.
    RkyvFormat {
        /// Format bits in the file.
        found: u32,
        /// Format bits of this build.
        expected: u32,
    },
    /// The file is shorter than its header says.
    Truncated {
        /// Length the header implies.
        expected: u64,
        /// Length of the file.
        actual: u64,
    },
    /// The file is longer than its header says.
    TrailingBytes {
        /// Length the header implies.
        expected: u64,
        /// Length of the file.
        actual: u64,
    },
    /// The archive's checksum does not match the header.
    PayloadChecksum {
        /// CRC32C stored in the header.
        stored: u32,
        /// CRC32C of the archive as read.
        actual: u32,
    },
    /// rkyv's validation rejected the archive.
    InvalidArchive(String),
    /// The archive is well-formed but breaks an invariant of the table.
    Inconsistent(String),
}

impl PartialEq for SnapshotError {
    fn eq(&self, other: &Self) -> bool {
        // io::Error has no equality; comparing the rendered message is enough for tests.
        self.to_string() == other.to_string()
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            SnapshotError::NotAFile { path, kind } => write!(
                f,
                "{}: {kind}, not a regular file (only a snapshot file can be loaded)",
                path.display()
            ),
            SnapshotError::Empty => f.write_str("file is empty (zero length)"),
            SnapshotError::BadMagic => f.write_str("bad magic: not a duanlian snapshot"),
            SnapshotError::UnsupportedVersion(v) => write!(
                f,
                "unsupported format version {v} (this build reads versions {} to {})",
                crate::MIN_FORMAT_VERSION,
                crate::FORMAT_VERSION
            ),
            SnapshotError::HeaderChecksum { stored, actual } => write!(
                f,
                "header checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
            ),
            SnapshotError::RkyvFormat { found, expected } => write!(
                f,
                "archive uses rkyv format {found:#x}, this build reads {expected:#x}"
            ),
            SnapshotError::Truncated { expected, actual } => {
                write!(f, "truncated: {actual} bytes, the header says {expected}")
            }
            SnapshotError::TrailingBytes { expected, actual } => write!(
                f,
                "trailing bytes: {actual} bytes, the header says {expected}"
            ),
            SnapshotError::PayloadChecksum { stored, actual } => write!(
                f,
                "checksum mismatch: stored {stored:#010x}, computed {actual:#010x}"
            ),
            SnapshotError::InvalidArchive(why) => write!(f, "invalid archive: {why}"),
            SnapshotError::Inconsistent(why) => write!(f, "inconsistent table: {why}"),
        }
    }
}

impl std::error::Error for SnapshotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SnapshotError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Why a link could not be added to a [`crate::Builder`], or the table not finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// More than 65,535 distinct domains in one snapshot.
    TooManyDomains,
    /// More than `u32::MAX - 1` links in one snapshot.
    TooManyLinks,
    /// The same `(domain, code)` more than once; the pairs are indexes in push order.
    Duplicates(Vec<crate::Duplicate>),
    /// Serialising the archive failed.
    Archive(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::TooManyDomains => f.write_str("more than 65535 domains in one snapshot"),
            BuildError::TooManyLinks => f.write_str("more than 4294967294 links in one snapshot"),
            BuildError::Duplicates(d) => write!(f, "{} duplicate (domain, code) pairs", d.len()),
            BuildError::Archive(why) => write!(f, "serialising the archive failed: {why}"),
        }
    }
}

impl std::error::Error for BuildError {}
