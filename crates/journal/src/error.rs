use std::{io, path::PathBuf};

/// What went wrong with the journal.
///
/// Every variant says its cause in its message; `source()` adds nothing, so a chain printed
/// with `{:#}` does not repeat the OS error.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading, writing or syncing a file failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// A record before the end of the journal is damaged: refusing to guess what it said.
    #[error("{}: corrupt record at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the damaged record in that file.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The list of sequence numbers a salvage skipped (`gaps` in the journal directory) is
    /// damaged: which breaks in the sequence are intended is unknown, so none are accepted.
    #[error("{}: damaged gap list: {reason}", path.display())]
    GapList {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A salvage could not be carried out; the original journal is untouched.
    #[error("{}: cannot salvage: {reason}", path.display())]
    Salvage {
        /// The journal directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// An earlier write or sync failed, so this journal takes no more writes: whether that
    /// write reached the disk is unknown, and reporting later writes as durable would be a lie.
    #[error("the journal stopped taking writes after a failed write or fsync")]
    Failed,
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |error| JournalError::Io {
        path: path.to_path_buf(),
        error,
    }
}
