use std::{fmt, io, path::PathBuf};

/// What went wrong with the journal.
#[derive(Debug)]
pub enum JournalError {
    /// Reading, writing or syncing a file failed.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A record before the end of the journal is damaged: refusing to guess what it said.
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the damaged record in that file.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// An earlier write or sync failed, so this journal takes no more writes: whether that
    /// write reached the disk is unknown, and reporting later writes as durable would be a lie.
    Failed,
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            JournalError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "{}: corrupt record at offset {offset}: {reason}",
                path.display()
            ),
            JournalError::Failed => {
                f.write_str("the journal stopped taking writes after a failed write or fsync")
            }
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JournalError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}
