//! Following the bucket: the watch that applies its entries to the index in revision order,
//! the direct catch-up for when that watch stalls, the lag that decides readiness, and the
//! swap to each newly published snapshot.
use crate::conn::{bucket_state, download, snapshot_store, Conn};
use crate::{codec, Cluster};
use async_nats::jetstream::{kv, object_store};
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the watch may deliver nothing while the bucket is ahead before it is restarted.
const STALL: Duration = Duration::from_secs(1);

impl Cluster {
    /// Applies the bucket from the revision after the last applied one, forever.
    pub(crate) async fn tail(&self, conn: &Conn) {
        loop {
            let from = self.index.applied() + 1;
            match conn.kv.watch_all_from_revision(from).await {
                Ok(mut watch) => loop {
                    tokio::select! {
                        entry = watch.next() => match entry {
                            Some(Ok(e)) => {
                                if !self.opts.apply_delay.is_zero() {
                                    tokio::time::sleep(self.opts.apply_delay).await;
                                }
                                self.apply(&e)
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "bucket watch interrupted; resuming");
                                break;
                            }
                            None => break,
                        },
                        // The watch's consumer lived on a server that went away: the client
                        // would notice after two missed 5 s heartbeats; the lag tells sooner.
                        () = self.stalled.notified() => {
                            tracing::info!(from = self.index.applied() + 1, "the bucket watch stalled; watching again");
                            break;
                        }
                    }
                },
                Err(e) => tracing::warn!(error = %e, from, "cannot watch the bucket; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn apply(&self, e: &kv::Entry) {
        let deleted = !matches!(e.operation, kv::Operation::Put);
        self.apply_raw(e.revision, &e.key, &e.value, deleted);
    }

    fn apply_raw(&self, revision: u64, key: &str, value: &[u8], deleted: bool) {
        let _one_at_a_time = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        if revision <= self.index.applied() {
            return; // seen before a resumed watch, or by the other path
        }
        match codec::change(key, value, deleted) {
            Ok(change) => {
                if let (duanlian_link::Change::Delete { domain, code }, Some(stats)) =
                    (&change, self.stats.get())
                {
                    // A link made later under the same code starts without this one's history.
                    stats.forget(domain.as_str(), code.as_str());
                }
                self.index.apply(revision, change)
            }
            Err(why) => {
                // Not ours to judge: skip it, but keep the revision order moving.
                tracing::warn!(revision, %why, "skipping a bucket entry duanlian cannot read");
                self.index.mark_applied(revision);
            }
        }
        self.bucket_last.fetch_max(revision, Ordering::Relaxed);
        self.applied.send_replace(revision);
    }

    /// Counts everything up to `revision` as applied without a change (the messages in
    /// between were superseded), waking whoever waits for it.
    fn skip_to(&self, revision: u64) {
        let _one_at_a_time = self.applying.lock().unwrap_or_else(|p| p.into_inner());
        self.index.mark_applied(revision);
        self.applied.send_replace(self.index.applied());
    }

    /// Reads what the watch has not delivered straight from the bucket's stream, message by
    /// message. Direct gets are answered by any replica without a consumer, so this works
    /// while a JetStream cluster elects a new metadata leader after losing a server (when
    /// no consumer can be created for seconds).
    async fn catch_up_directly(&self, conn: &Conn) {
        let Ok(stream) = conn.js.get_stream_no_info(self.opts.kv_stream()).await else {
            return;
        };
        let prefix = self.opts.kv_subject_prefix();
        let all = format!("{prefix}>");
        let last = self.bucket_last.load(Ordering::Relaxed);
        let mut caught = 0u64;
        while self.index.applied() < last {
            let from = self.index.applied() + 1;
            let got = stream
                .direct_get_builder()
                .sequence(from)
                .next_by_subject(all.as_str())
                .send()
                .await;
            match got {
                // The next surviving message, possibly past `last`: the ones between were
                // superseded, and applying it keeps the order.
                Ok(m) => {
                    let Some(key) = m.subject.as_str().strip_prefix(&prefix) else {
                        self.skip_to(m.sequence);
                        continue;
                    };
                    if !self.opts.apply_delay.is_zero() {
                        tokio::time::sleep(self.opts.apply_delay).await;
                    }
                    let deleted = m
                        .headers
                        .get("KV-Operation")
                        .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE"));
                    self.apply_raw(m.sequence, key, &m.payload, deleted);
                    caught += 1;
                }
                // Nothing from `from` on survives: all of it was superseded.
                Err(e)
                    if e.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound =>
                {
                    self.skip_to(last);
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "direct catch-up interrupted");
                    return;
                }
            }
        }
        if caught > 0 {
            tracing::info!(
                entries = caught,
                revision = self.index.applied(),
                "caught up by direct reads while the watch was stalled"
            );
        }
    }

    /// Every half second: the bucket's last revision, hence the lag, hence readiness.
    pub(crate) async fn monitor(self: Arc<Self>) {
        let mut above_since: Option<Instant> = None;
        let mut progress = (self.index.applied(), Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let Some(conn) = self.conn.get() else {
                continue;
            };
            // Unreachable NATS: the lag is unknown, not high; the node goes on serving.
            if let Ok((last, _)) = bucket_state(&conn.js, &self.opts).await {
                self.bucket_last.fetch_max(last, Ordering::Relaxed);
            }
            let lag = self.lag();
            let applied = self.index.applied();
            if lag == 0 || applied != progress.0 {
                progress = (applied, Instant::now());
            } else if progress.1.elapsed() >= STALL {
                self.stalled.notify_one();
                progress.1 = Instant::now();
                // In its own task: the monitor must go on judging readiness meanwhile.
                if !self.catching_up.swap(true, Ordering::AcqRel) {
                    let me = self.clone();
                    tokio::spawn(async move {
                        if let Some(conn) = me.conn.get() {
                            me.catch_up_directly(conn).await;
                        }
                        me.catching_up.store(false, Ordering::Release);
                    });
                }
            }
            if lag > self.opts.max_lag {
                let since = *above_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.opts.lag_grace
                    && self.lag_ok.swap(false, Ordering::Relaxed)
                {
                    tracing::warn!(
                        lag,
                        max = self.opts.max_lag,
                        "lagging behind the bucket; not ready"
                    );
                }
            } else {
                above_since = None;
                if !self.lag_ok.swap(true, Ordering::Relaxed) {
                    tracing::info!(lag, "caught up with the bucket again; ready");
                }
            }
        }
    }

    /// Loads each newly published snapshot once this node has applied what it covers, and
    /// drops the overlay entries it makes redundant.
    pub(crate) async fn follow_snapshots(self: Arc<Self>) {
        let Some(conn) = self.conn.get() else {
            return;
        };
        let name = self.opts.snapshot_object();
        loop {
            let watch = match snapshot_store(&conn.js, &self.opts).await {
                Ok(store) => match store.watch().await {
                    Ok(w) => Some((store, w)),
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot watch the snapshot store");
                        None
                    }
                },
                Err(_) => None,
            };
            if let Some((store, mut watch)) = watch {
                while let Some(info) = watch.next().await {
                    let Ok(info) = info else {
                        break;
                    };
                    if info.name != name || info.deleted {
                        continue;
                    }
                    self.take_snapshot(conn, &store, &name).await;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn take_snapshot(&self, conn: &Conn, store: &object_store::ObjectStore, name: &str) {
        let snapshot = match download(store, name, &self.opts.dir).await {
            Ok(s) => s,
            Err(why) => {
                tracing::warn!(%why, "a newly published snapshot is unusable; keeping the current one");
                return;
            }
        };
        let (seq, feed) = (snapshot.header().sequence, snapshot.header().feed_id);
        if feed != conn.feed_id {
            tracing::warn!("a newly published snapshot is of another bucket; ignored");
            return;
        }
        if seq <= self.index.snapshot().header().sequence {
            return;
        }
        // A snapshot ahead of what this node applied would hide nothing (the tail re-applies
        // the newest state of those keys) but would make `applied` jump; wait for the tail.
        let mut applied = self.applied.subscribe();
        if applied.wait_for(|a| *a >= seq).await.is_err() {
            return;
        }
        let links = snapshot.len();
        self.index.swap_snapshot(Arc::new(snapshot));
        self.index.prune_through(seq);
        tracing::info!(
            links,
            revision = seq,
            "swapped in the newly published snapshot"
        );
    }
}
