use std::path::{Path, PathBuf};

/// Why the click log could not be read or written.
#[derive(Debug)]
pub enum ClickError {
    /// A file or directory operation failed.
    Io {
        /// What was being read or written.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
}

impl ClickError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> ClickError {
        ClickError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl std::fmt::Display for ClickError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClickError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for ClickError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClickError::Io { source, .. } => Some(source),
        }
    }
}
