//! Folding the journal into a new snapshot.
use crate::{DataDir, Store, StoreError};
use duanlian_journal::{Journal, Options as JournalOptions};
use duanlian_link::{now_secs, Change, Link};
use duanlian_snapshot::{Builder, LinkRef, Snapshot, Table};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// The sequence number the new snapshot includes (unchanged when there was nothing to do).
    pub sequence: u64,
    /// Links in the new snapshot.
    pub links: usize,
    /// Journal segments removed.
    pub segments_removed: usize,
    /// How long it took.
    pub elapsed: Duration,
}

/// The links of a new snapshot: `base` with the journal's records in `(base's sequence,
/// through]` applied. With `bulk`, the links `base` had from a bulk load are replaced by that
/// file's, while links written through the API (flagged in `base`, or in the journal) stay on top.
/// Links past `expires_at + retention` at `now` are purged: left out.
fn fold(
    base: &Snapshot,
    bulk: Option<&Snapshot>,
    journal_dir: &Path,
    through: u64,
    now: i64,
    retention: i64,
) -> Result<Table, StoreError> {
    // Latest state per key; keys are `domain/code`, which is unambiguous (neither has a '/').
    let mut latest: HashMap<Vec<u8>, Option<Link>> = HashMap::new();
    duanlian_journal::read(journal_dir, base.header().sequence, through, |record| {
        for change in record.changes {
            match change {
                Change::Put(link) => {
                    let k = key(link.domain.as_str(), link.code.as_str().as_bytes());
                    latest.insert(k, Some(link));
                }
                Change::Delete { domain, code } => {
                    latest.insert(key(domain.as_str(), code.as_str().as_bytes()), None);
                }
            }
        }
    })?;
    let build = |e: duanlian_snapshot::BuildError| StoreError::Build(e.to_string());
    let live = |l: &LinkRef<'_>| !l.validity.is_purged_at(now, retention);
    let mut b = Builder::new();
    b.reserve(
        base.len() + bulk.map_or(0, Snapshot::len) + latest.len(),
        80,
    );
    let mut api_keys = HashSet::new();
    for link in base.iter() {
        if bulk.is_some() && !link.from_api {
            continue;
        }
        let k = key(link.domain, link.code);
        if !latest.contains_key(&k) && live(&link) {
            b.push_ref(&link).map_err(build)?;
            if bulk.is_some() {
                api_keys.insert(k);
            }
        }
    }
    for link in bulk.iter().flat_map(|s| s.iter()) {
        let k = key(link.domain, link.code);
        if !api_keys.contains(&k) && !latest.contains_key(&k) && live(&link) {
            b.push_ref(&LinkRef {
                from_api: false,
                ..link
            })
            .map_err(build)?;
        }
    }
    for link in latest.values().flatten() {
        if live(&LinkRef::from(link)) {
            b.push_api(link).map_err(build)?;
        }
    }
    b.finish().map_err(build)
}

fn key(domain: &str, code: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(domain.len() + 1 + code.len());
    k.extend_from_slice(domain.as_bytes());
    k.push(b'/');
    k.extend_from_slice(code);
    k
}

fn publish(path: &Path, table: &Table, through: u64) -> Result<Snapshot, StoreError> {
    table.write(path, through)?;
    Ok(Snapshot::open(path)?)
}

impl Store {
    /// Folds everything written so far into a new snapshot, swaps it in and drops the folded
    /// journal segments. Writes and redirects go on meanwhile: the writer only pauses to close
    /// its segment, and readers move to the new snapshot in one atomic swap, with the overlay
    /// (which holds the same links) covering them until then.
    pub async fn compact(&self) -> Result<CompactReport, StoreError> {
        self.fold_in(None).await
    }

    /// Makes the bulk snapshot at `path` this data directory's bulk links: checked completely
    /// (checksum and every link) first, then folded with everything written through the API
    /// exactly like a compaction, so the result is as durable as any compacted snapshot.
    /// Links created or changed through the API stay on top of the file's; deletes that are
    /// not compacted yet apply to it too. A file that fails its checks changes nothing.
    pub async fn load_bulk(&self, path: &Path) -> Result<CompactReport, StoreError> {
        let path = path.to_path_buf();
        let bulk = tokio::task::spawn_blocking(move || {
            let snap = Snapshot::open(&path)?;
            snap.verify()?;
            Ok::<_, StoreError>(snap)
        })
        .await
        .map_err(|e| StoreError::Build(format!("bulk check task failed: {e}")))??;
        self.fold_in(Some(Arc::new(bulk))).await
    }

    /// Compacts if the journal or the overlay has outgrown `limits` and no compaction is
    /// running: `None` when none was due or one was already under way (it does the same job).
    /// Without it nothing bounds the journal (restart time) or the overlay (memory, about four
    /// times a compacted link's) under steady creates.
    pub async fn compact_if_due(
        &self,
        limits: &AutoCompact,
    ) -> Option<(Trigger, Result<CompactReport, StoreError>)> {
        let trigger = if limits
            .journal_bytes
            .is_some_and(|max| self.journal_bytes() >= max)
        {
            Trigger::JournalBytes
        } else if limits
            .overlay_links
            .is_some_and(|max| self.index().overlay_len() >= max)
        {
            Trigger::OverlayLinks
        } else {
            return None;
        };
        let one_at_a_time = self.compaction.try_lock().ok()?;
        Some((trigger, self.fold_locked(None, one_at_a_time).await))
    }

    async fn fold_in(&self, bulk: Option<Arc<Snapshot>>) -> Result<CompactReport, StoreError> {
        let one_at_a_time = self.compaction.lock().await;
        self.fold_locked(bulk, one_at_a_time).await
    }

    async fn fold_locked(
        &self,
        bulk: Option<Arc<Snapshot>>,
        _one_at_a_time: tokio::sync::MutexGuard<'_, ()>,
    ) -> Result<CompactReport, StoreError> {
        let started = Instant::now();
        let through = self.rotate().await?;
        let base = self.index().snapshot();
        if through <= base.header().sequence && bulk.is_none() {
            return Ok(CompactReport {
                sequence: base.header().sequence,
                links: base.len(),
                segments_removed: 0,
                elapsed: started.elapsed(),
            });
        }
        let (journal_dir, snapshot_path) = (self.dir.journal_dir(), self.dir.snapshot_path());
        let retention = self.index().retention();
        let snapshot = tokio::task::spawn_blocking(move || {
            let table = fold(
                &base,
                bulk.as_deref(),
                &journal_dir,
                through,
                now_secs(),
                retention,
            )?;
            publish(&snapshot_path, &table, through)
        })
        .await
        .map_err(|e| StoreError::Build(format!("compaction task failed: {e}")))??;
        let links = snapshot.len();
        self.index().swap_snapshot(Arc::new(snapshot));
        self.index().prune_through(through);
        let segments_removed = self.remove_through(through).await?;
        Ok(CompactReport {
            sequence: through,
            links,
            segments_removed,
            elapsed: started.elapsed(),
        })
    }
}

/// When a data-directory node compacts by itself; `None` turns a limit off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoCompact {
    /// Compact once the journal's segments hold this many bytes. Default 256 MiB (a replay of
    /// about a second at start).
    pub journal_bytes: Option<u64>,
    /// Compact once the overlay holds this many entries (links and tombstones). Default 100,000
    /// (about 50 MB of memory).
    pub overlay_links: Option<usize>,
}

impl Default for AutoCompact {
    fn default() -> Self {
        AutoCompact {
            journal_bytes: Some(256 << 20),
            overlay_links: Some(100_000),
        }
    }
}

/// Which limit made a compaction due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The journal passed [`AutoCompact::journal_bytes`].
    JournalBytes,
    /// The overlay passed [`AutoCompact::overlay_links`].
    OverlayLinks,
}

impl Trigger {
    /// A name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::JournalBytes => "journal_bytes",
            Trigger::OverlayLinks => "overlay_links",
        }
    }
}

/// Compacts a data directory that no server has open (`duanlian compact`).
pub fn compact_offline(dir: &DataDir, retention: i64) -> Result<CompactReport, StoreError> {
    let started = Instant::now();
    let base = if dir.has_snapshot() {
        Snapshot::open(dir.snapshot_path())?
    } else {
        let bytes = Builder::new()
            .finish()
            .and_then(|t| t.to_bytes(0))
            .map_err(|e| StoreError::Build(e.to_string()))?;
        Snapshot::from_bytes(bytes)?
    };
    // Opening repairs a torn tail, exactly as a server start would.
    let mut journal = Journal::open(
        &dir.journal_dir(),
        base.header().sequence,
        JournalOptions::default(),
        |_| {},
    )?;
    let through = journal.rotate()?;
    if through <= base.header().sequence && dir.has_snapshot() {
        return Ok(CompactReport {
            sequence: base.header().sequence,
            links: base.len(),
            segments_removed: journal.remove_through(through)?,
            elapsed: started.elapsed(),
        });
    }
    let table = fold(
        &base,
        None,
        &dir.journal_dir(),
        through,
        now_secs(),
        retention,
    )?;
    let snapshot = publish(&dir.snapshot_path(), &table, through)?;
    Ok(CompactReport {
        sequence: through,
        links: snapshot.len(),
        segments_removed: journal.remove_through(through)?,
        elapsed: started.elapsed(),
    })
}
