//! Folding the journal into a new snapshot.
use crate::{DataDir, Store, StoreError};
use duanlian_journal::{Journal, Options as JournalOptions};
use duanlian_link::{now_secs, Change, Link};
use duanlian_snapshot::{Builder, Snapshot, Table};
use std::collections::HashMap;
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

/// The snapshot `base` with the journal's records in `(base's sequence, through]` applied.
/// Links past `expires_at + retention` at `now` are purged: left out.
fn fold(
    base: &Snapshot,
    journal_dir: &Path,
    through: u64,
    now: i64,
    retention: i64,
) -> Result<Table, StoreError> {
    // Latest state per key; keys are `domain/code`, which is unambiguous (neither has a '/').
    let mut latest: HashMap<Vec<u8>, Option<Link>> = HashMap::new();
    let key = |d: &str, c: &[u8]| {
        let mut k = Vec::with_capacity(d.len() + 1 + c.len());
        k.extend_from_slice(d.as_bytes());
        k.push(b'/');
        k.extend_from_slice(c);
        k
    };
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
    let mut b = Builder::new();
    b.reserve(base.len() + latest.len(), 80);
    let mut scratch = Vec::new();
    for link in base.iter() {
        scratch.clear();
        scratch.extend_from_slice(link.domain.as_bytes());
        scratch.push(b'/');
        scratch.extend_from_slice(link.code);
        if !latest.contains_key(&scratch) && !link.validity.is_purged_at(now, retention) {
            b.push_ref(&link)
                .map_err(|e| StoreError::Build(e.to_string()))?;
        }
    }
    for link in latest
        .values()
        .flatten()
        .filter(|l| !l.validity.is_purged_at(now, retention))
    {
        b.push(link).map_err(|e| StoreError::Build(e.to_string()))?;
    }
    b.finish().map_err(|e| StoreError::Build(e.to_string()))
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
        let started = Instant::now();
        let _one_at_a_time = self.compaction.lock().await;
        let through = self.rotate().await?;
        let base = self.index().snapshot();
        if through <= base.header().sequence {
            return Ok(CompactReport {
                sequence: base.header().sequence,
                links: base.len(),
                segments_removed: 0,
                elapsed: started.elapsed(),
            });
        }
        let (journal_dir, snapshot_path) = (self.dir.journal_dir(), self.dir.snapshot_path());
        let retention = self.retention;
        let snapshot = tokio::task::spawn_blocking(move || {
            let table = fold(&base, &journal_dir, through, now_secs(), retention)?;
            publish(&snapshot_path, &table, through)
        })
        .await
        .map_err(|e| StoreError::Build(format!("compaction task failed: {e}")))??;
        let links = snapshot.len();
        self.index().swap_snapshot(Arc::new(snapshot));
        self.index().prune_through(through);
        let index = self.index().clone();
        // The new snapshot's positions differ: reschedule its expiring links, off this task.
        tokio::task::spawn_blocking(move || index.schedule_snapshot());
        let segments_removed = self.remove_through(through).await?;
        Ok(CompactReport {
            sequence: through,
            links,
            segments_removed,
            elapsed: started.elapsed(),
        })
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
    let table = fold(&base, &dir.journal_dir(), through, now_secs(), retention)?;
    let snapshot = publish(&dir.snapshot_path(), &table, through)?;
    Ok(CompactReport {
        sequence: through,
        links: snapshot.len(),
        segments_removed: journal.remove_through(through)?,
        elapsed: started.elapsed(),
    })
}
