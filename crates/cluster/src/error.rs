use std::fmt;

/// Why a cluster operation failed.
#[derive(Debug)]
pub enum ClusterError {
    /// NATS could not be reached, or a JetStream request failed or timed out.
    Nats(String),
    /// A snapshot could not be built, written or opened.
    Snapshot(String),
    /// A file operation failed.
    Io(String),
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Nats(why) => write!(f, "NATS: {why}"),
            ClusterError::Snapshot(why) => write!(f, "snapshot: {why}"),
            ClusterError::Io(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ClusterError {}

pub(crate) fn nats(e: impl fmt::Display) -> ClusterError {
    ClusterError::Nats(e.to_string())
}
