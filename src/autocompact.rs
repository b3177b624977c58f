//! Compacting a data directory by itself, so the journal (restart time) and the overlay
//! (memory) stay bounded under steady creates, as Redis rewrites its AOF once it has grown.
use anyhow::{Context, Result};
use duanlian_server::Metrics;
use duanlian_store::{AutoCompact, Store};
use std::sync::Arc;
use std::time::Duration;

/// How often the limits are checked: a few seconds of creates past a limit cost nothing.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// Starts the thread that compacts `store` whenever a limit of `limits` is passed; never two
/// compactions at once (one already running, from the API say, makes a check a no-op).
pub(crate) fn spawn(store: Arc<Store>, limits: AutoCompact, metrics: Arc<Metrics>) -> Result<()> {
    if limits.journal_bytes.is_none() && limits.overlay_links.is_none() {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("auto-compaction runtime")?;
    std::thread::Builder::new()
        .name("duanlian-compact".into())
        .spawn(move || {
            rt.block_on(async move {
                loop {
                    tokio::time::sleep(CHECK_EVERY).await;
                    let Some((trigger, result)) = store.compact_if_due(&limits).await else {
                        continue;
                    };
                    metrics.record_compaction(trigger.as_str(), result.is_ok());
                    match result {
                        Ok(r) => tracing::info!(
                            trigger = trigger.as_str(),
                            sequence = r.sequence,
                            links = r.links,
                            segments_removed = r.segments_removed,
                            elapsed_ms = r.elapsed.as_millis() as u64,
                            "compacted automatically"
                        ),
                        // Retried at the next check; a full disk is the usual cause.
                        Err(e) => tracing::error!(
                            trigger = trigger.as_str(),
                            error = %e,
                            "automatic compaction failed"
                        ),
                    }
                }
            })
        })
        .context("starting the auto-compaction thread")?;
    Ok(())
}
