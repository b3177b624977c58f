//! Replacing a served bulk snapshot while traffic flows.
use duanlian_index::{Index, Snapshot};
use duanlian_snapshot::SnapshotError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The file now served.
    pub path: PathBuf,
    /// Its links.
    pub links: usize,
    /// How long validation and the swap took.
    pub elapsed: Duration,
}

/// Loads snapshots into a running index: the new file is fully validated (checksum included)
/// before one atomic swap; the overlay stays on top; requests that hold the old snapshot finish
/// on it, and its mapping is released when the last of them is done.
#[derive(Debug)]
pub struct Reloader {
    index: Arc<Index>,
    configured: PathBuf,
    metrics: Option<Arc<crate::Metrics>>,
}

impl Reloader {
    /// A reloader for `index`, whose SIGHUP reloads re-read `configured`.
    pub fn new(index: Arc<Index>, configured: PathBuf) -> Reloader {
        Reloader {
            index,
            configured,
            metrics: None,
        }
    }

    /// Counts reloads and failures into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::Metrics>) -> Reloader {
        self.metrics = Some(metrics);
        self
    }

    /// Reloads the configured file (SIGHUP).
    pub fn reload_configured(&self) -> Result<Reloaded, SnapshotError> {
        self.reload(&self.configured)
    }

    /// Validates `path` completely, then swaps it in. On any error nothing changes.
    pub fn reload(&self, path: &Path) -> Result<Reloaded, SnapshotError> {
        let started = Instant::now();
        let result = Snapshot::open(path).map(|snap| {
            let links = snap.len();
            self.index.swap_snapshot(Arc::new(snap));
            Reloaded {
                path: path.to_path_buf(),
                links,
                elapsed: started.elapsed(),
            }
        });
        if let Some(m) = &self.metrics {
            m.record_reload(result.is_ok());
        }
        match &result {
            Ok(r) => tracing::info!(
                file = %r.path.display(),
                links = r.links,
                elapsed_ms = r.elapsed.as_millis() as u64,
                "snapshot reloaded"
            ),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "snapshot reload failed; still serving the previous one")
            }
        }
        result
    }
}
