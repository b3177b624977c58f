use duanlian_journal::JournalError;
use duanlian_link::LinkError;
use duanlian_snapshot::SnapshotError;
use std::{io, path::PathBuf};

/// Why a store operation failed. Every message carries its cause; `source()` adds nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The `(domain, code)` is taken.
    #[error("{domain}/{code} is taken")]
    Conflict {
        /// The link domain.
        domain: String,
        /// The code.
        code: String,
    },
    /// No link with that `(domain, code)`.
    #[error("no link {domain}/{code}")]
    NotFound {
        /// The link domain.
        domain: String,
        /// The code.
        code: String,
    },
    /// A change would make an invalid link (for example a PATCH that empties the window).
    #[error("{field}: {0}", field = .0.field())]
    Invalid(LinkError),
    /// No free code of this length was found after many tries.
    #[error("no free code of length {0} found; use a longer code_length")]
    CodeSpaceExhausted(usize),
    /// The journal failed a write or sync earlier: this node takes no more writes.
    #[error("writes are unavailable: {0}")]
    Unavailable(String),
    /// Another process holds the data directory.
    #[error("{} is in use by another duanlian process", .0.display())]
    Locked(PathBuf),
    /// A file operation failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// The journal could not be opened or read.
    #[error("journal: {0}")]
    Journal(JournalError),
    /// A snapshot could not be opened or written.
    #[error("snapshot: {0}")]
    Snapshot(SnapshotError),
    /// Building a snapshot failed.
    #[error("building the snapshot failed: {0}")]
    Build(String),
    /// The writer thread is gone (the store is shutting down).
    #[error("the store is shut down")]
    Closed,
}

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
            StoreError::Io { error, .. } => error.raw_os_error(),
            StoreError::Snapshot(SnapshotError::Io { error, .. }) => error.raw_os_error(),
            _ => None,
        };
        matches!(os, Some(ENOSPC | EDQUOT))
    }
}

/// The write vocabulary's own failures (a PATCH that leaves an invalid link, no randomness),
/// as the store reports them.
impl From<duanlian_write::WriteError> for StoreError {
    fn from(e: duanlian_write::WriteError) -> Self {
        use duanlian_write::WriteError as W;
        match e {
            W::Conflict { domain, code } => StoreError::Conflict { domain, code },
            W::NotFound { domain, code } => StoreError::NotFound { domain, code },
            W::Invalid(e) => StoreError::Invalid(e),
            W::CodeSpaceExhausted(n) => StoreError::CodeSpaceExhausted(n),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

impl From<SnapshotError> for StoreError {
    fn from(e: SnapshotError) -> Self {
        StoreError::Snapshot(e)
    }
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |error| StoreError::Io {
        path: path.to_path_buf(),
        error,
    }
}
