//! Replacing a served bulk snapshot while traffic flows.
use duanlian_index::{Index, Snapshot};
use duanlian_snapshot::SnapshotError;
use duanlian_write::{WriteError, Writes};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The file loaded.
    pub path: PathBuf,
    /// Links served now: the file's, plus on a data directory those written through the API.
    pub links: usize,
    /// How long validation and the swap took.
    pub elapsed: Duration,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is missing, damaged or not a snapshot.
    #[error("{0}")]
    Snapshot(SnapshotError),
    /// The node's writer could not take it (a bad file, writes unavailable, disk full, ...).
    #[error("{0}")]
    Write(WriteError),
}

impl ReloadError {
    /// Whether the file itself is at fault (rather than the node).
    pub fn is_bad_file(&self) -> bool {
        match self {
            ReloadError::Snapshot(_) | ReloadError::Write(WriteError::BadFile(_)) => true,
            // Writing the folded snapshot can fail for want of space: the node's fault.
            ReloadError::Write(_) => false,
        }
    }
}

/// Where a loaded file goes.
#[derive(Debug)]
enum Target {
    /// A read-only node: the file replaces the served snapshot.
    Index(Arc<Index>),
    /// A node with a writer (a data directory): the file replaces its bulk links, API writes
    /// stay on top.
    Writes(Arc<dyn Writes>),
}

/// Loads snapshots into a running node: the new file is fully validated (checksum included)
/// before one atomic swap; requests that hold the old snapshot finish on it, and its mapping
/// is released when the last of them is done.
#[derive(Debug)]
pub struct Reloader {
    target: Target,
    configured: Option<PathBuf>,
    metrics: Option<Arc<crate::Metrics>>,
    /// `Some(on)`: always or never load into huge pages; `None`: when it pays off for the file.
    huge_pages: Option<bool>,
}

impl Reloader {
    /// A reloader for a read-only node serving `index`.
    pub fn new(index: Arc<Index>) -> Reloader {
        Reloader {
            target: Target::Index(index),
            configured: None,
            metrics: None,
            huge_pages: Some(false),
        }
    }

    /// A reloader for a node whose writer folds bulk files in (a data directory).
    pub fn for_writes(writes: Arc<dyn Writes>) -> Reloader {
        Reloader {
            target: Target::Writes(writes),
            configured: None,
            metrics: None,
            huge_pages: Some(false),
        }
    }

    /// The file SIGHUP reloads.
    pub fn with_configured(mut self, path: PathBuf) -> Reloader {
        self.configured = Some(path);
        self
    }

    /// Whether a read-only node loads files into huge-page memory
    /// ([`Snapshot::open_huge_pages`]): `Some(on)` decides for every file, `None` decides per
    /// file by [`Snapshot::huge_pages_pay_off`].
    pub fn with_huge_pages(mut self, on: Option<bool>) -> Reloader {
        self.huge_pages = on;
        self
    }

    /// Counts reloads and failures into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::Metrics>) -> Reloader {
        self.metrics = Some(metrics);
        self
    }

    /// The file SIGHUP reloads, if one was configured.
    pub fn configured(&self) -> Option<&Path> {
        self.configured.as_deref()
    }

    /// Validates `path` completely, then swaps it in. On any error nothing changes.
    pub async fn reload(&self, path: &Path) -> Result<Reloaded, ReloadError> {
        let started = Instant::now();
        let result = match &self.target {
            Target::Index(index) => {
                let (index, owned, huge) = (index.clone(), path.to_path_buf(), self.huge_pages);
                tokio::task::spawn_blocking(move || {
                    let huge = huge.unwrap_or_else(|| {
                        std::fs::metadata(&owned)
                            .is_ok_and(|m| Snapshot::huge_pages_pay_off(m.len()))
                    });
                    let snap = if huge {
                        Snapshot::open_huge_pages(&owned)?
                    } else {
                        Snapshot::open(&owned)?
                    };
                    let links = snap.len();
                    index.swap_snapshot(Arc::new(snap));
                    Ok(links)
                })
                .await
                .unwrap_or_else(|e| {
                    Err(SnapshotError::Io {
                        path: path.to_path_buf(),
                        error: std::io::Error::other(format!("reload task failed: {e}")),
                    })
                })
                .map_err(ReloadError::Snapshot)
            }
            Target::Writes(writes) => writes
                .load_bulk(path)
                .await
                .map(|r| r.links)
                .map_err(ReloadError::Write),
        };
        let result = result.map(|links| Reloaded {
            path: path.to_path_buf(),
            links,
            elapsed: started.elapsed(),
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
