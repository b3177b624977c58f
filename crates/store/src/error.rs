use duanlian_journal::JournalError;
use duanlian_link::LinkError;
use duanlian_snapshot::SnapshotError;
use std::{fmt, io, path::PathBuf};

/// Why a store operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// The `(domain, code)` is taken.
    Conflict {
        /// The link domain.
        domain: String,
        /// The code.
        code: String,
    },
    /// No link with that `(domain, code)`.
    NotFound {
        /// The link domain.
        domain: String,
        /// The code.
        code: String,
    },
    /// A change would make an invalid link (for example a PATCH that empties the window).
    Invalid(LinkError),
    /// No free code of this length was found after many tries.
    CodeSpaceExhausted(usize),
    /// The journal failed a write or sync earlier: this node takes no more writes.
    Unavailable(String),
    /// Another process holds the data directory.
    Locked(PathBuf),
    /// A file operation failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The journal could not be opened or read.
    Journal(JournalError),
    /// A snapshot could not be opened or written.
    Snapshot(SnapshotError),
    /// Building a snapshot failed.
    Build(String),
    /// The writer thread is gone (the store is shutting down).
    Closed,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict { domain, code } => write!(f, "{domain}/{code} is taken"),
            StoreError::NotFound { domain, code } => write!(f, "no link {domain}/{code}"),
            StoreError::Invalid(e) => write!(f, "{}: {e}", e.field()),
            StoreError::CodeSpaceExhausted(len) => {
                write!(
                    f,
                    "no free code of length {len} found; use a longer code_length"
                )
            }
            StoreError::Unavailable(why) => write!(f, "writes are unavailable: {why}"),
            StoreError::Locked(p) => {
                write!(f, "{} is in use by another duanlian process", p.display())
            }
            StoreError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            StoreError::Journal(e) => write!(f, "journal: {e}"),
            StoreError::Snapshot(e) => write!(f, "snapshot: {e}"),
            StoreError::Build(why) => write!(f, "building the snapshot failed: {why}"),
            StoreError::Closed => f.write_str("the store is shut down"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<JournalError> for StoreError {
    fn from(e: JournalError) -> Self {
        StoreError::Journal(e)
    }
}

impl StoreError {
    /// Whether the write failed for lack of disk space (or quota): the node is fine, the disk is
    /// not, so the answer is "try later" (503), never a fault of the request or the file.
    pub fn is_out_of_space(&self) -> bool {
        const ENOSPC: i32 = 28;
        const EDQUOT: i32 = 122;
        let os = match self {
            StoreError::Io { source, .. } => source.raw_os_error(),
            StoreError::Snapshot(SnapshotError::Io { source, .. }) => source.raw_os_error(),
            _ => None,
        };
        matches!(os, Some(ENOSPC | EDQUOT))
    }
}

impl From<SnapshotError> for StoreError {
    fn from(e: SnapshotError) -> Self {
        StoreError::Snapshot(e)
    }
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}
