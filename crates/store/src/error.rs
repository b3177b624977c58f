use duanlian_journal::JournalError;
use duanlian_snapshot::SnapshotError;
use duanlian_write::WriteError;
use std::{io, path::PathBuf};

/// Why a store operation failed. Every message carries its cause; `source()` adds nothing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write itself was refused or could not be carried out: a code taken, a link missing,
    /// an invalid result, no free code, writes unavailable since a journal write failed. The
    /// write vocabulary's own error, so the server gets it as it is.
    #[error("{0}")]
    Write(WriteError),
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

impl From<WriteError> for StoreError {
    fn from(e: WriteError) -> Self {
        StoreError::Write(e)
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
