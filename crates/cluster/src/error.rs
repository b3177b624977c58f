use std::fmt;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS could not be reached, or a JetStream request failed or timed out.
    #[error("NATS: {0}")]
    Nats(String),
    /// A snapshot could not be built, written or opened.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// A file operation failed.
    #[error("{0}")]
    Io(String),
}

pub(crate) fn nats(e: impl fmt::Display) -> ClusterError {
    ClusterError::Nats(e.to_string())
}
