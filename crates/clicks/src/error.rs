use std::path::{Path, PathBuf};

/// Why the click log could not be read or written. The message carries its cause; `source()`
/// adds nothing, so a chain printed with `{:#}` does not repeat the OS error.
#[derive(Debug, thiserror::Error)]
pub enum ClickError {
    /// A file or directory operation failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// What was being read or written.
        path: PathBuf,
        /// The system's reason.
        error: std::io::Error,
    },
}

impl ClickError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> ClickError {
        ClickError::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}
