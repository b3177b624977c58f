//! A node of the cluster and its life: its options, joining (connect, open the bucket, load the
//! newest snapshot), then following the bucket for good, and what it tells about itself.
//!
//! The parts live next door: the NATS side in `conn`, following the bucket in `follow`,
//! writing to it in `writes`.
use crate::conn::{connect, download, open_bucket, snapshot_store, Conn};
use crate::{codec, ClusterError};
use async_nats::jetstream::{self, kv};
use duanlian_index::Index;
use duanlian_link::Link;
use duanlian_snapshot::Snapshot;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How a node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// NATS servers, comma-separated (`nats://10.0.0.1:4222,nats://10.0.0.2:4222`).
    pub servers: String,
    /// The key-value bucket holding the links. Default `links`.
    pub bucket: String,
    /// Replicas of the bucket, the object store and the click stream when this node creates
    /// them (JetStream clusters only; at most 5). Default 1.
    pub replicas: usize,
    /// The object store that holds published snapshots. Default `duanlian-snapshots`.
    pub snapshots: String,
    /// The stream of click events. Default `DUANLIAN_CLICKS`.
    pub clicks_stream: String,
    /// How long the click stream keeps events, when this node creates it. Default 400 days.
    pub clicks_max_age: Duration,
    /// Where downloaded snapshots are kept (mapped from there). Default: a folder in the
    /// system's temporary directory, per bucket.
    pub dir: PathBuf,
    /// Readiness fails while the node stays more than this many revisions behind the bucket
    /// for longer than `lag_grace`. Default 10,000.
    pub max_lag: u64,
    /// How long the lag may stay above `max_lag` before readiness fails. Default 5 s.
    pub lag_grace: Duration,
    /// This node's name: the NATS connection name and the prefix of its click-event ids.
    pub name: String,
    /// A pause before each watched entry is applied; only for tests of a lagging node.
    pub apply_delay: Duration,
}

impl ClusterOptions {
    /// Defaults for the NATS servers `servers`.
    pub fn new(servers: &str) -> ClusterOptions {
        ClusterOptions {
            servers: servers.to_string(),
            bucket: "links".into(),
            replicas: 1,
            snapshots: "duanlian-snapshots".into(),
            clicks_stream: "DUANLIAN_CLICKS".into(),
            clicks_max_age: Duration::from_secs(400 * 86_400),
            dir: std::env::temp_dir().join(format!("duanlian-cluster-{}", std::process::id())),
            max_lag: 10_000,
            lag_grace: Duration::from_secs(5),
            name: format!("duanlian-{}", std::process::id()),
            apply_delay: Duration::ZERO,
        }
    }

    /// The stream JetStream keeps the bucket in.
    pub(crate) fn kv_stream(&self) -> String {
        format!("KV_{}", self.bucket)
    }

    /// The subject of the bucket's entries start with this.
    pub(crate) fn kv_subject_prefix(&self) -> String {
        format!("$KV.{}.", self.bucket)
    }

    /// The object name of this bucket's snapshot in the object store.
    pub(crate) fn snapshot_object(&self) -> String {
        format!("{}.snap", self.bucket)
    }
}

/// What the metrics and `/readyz` show about the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterStatus {
    /// Connected to a NATS server right now.
    pub connected: bool,
    /// The newest bucket revision applied to this node's index.
    pub applied: u64,
    /// Revisions the bucket is ahead of this node, as of the last check (every half second).
    pub lag: u64,
    /// Applied everything that was in the bucket when the node started.
    pub caught_up: bool,
}

/// A node of the cluster; see the crate docs.
#[derive(Debug)]
pub struct Cluster {
    pub(crate) opts: ClusterOptions,
    pub(crate) index: Arc<Index>,
    pub(crate) conn: OnceLock<Conn>,
    /// The newest applied revision, for those waiting for one (writers, snapshot swaps).
    pub(crate) applied: tokio::sync::watch::Sender<u64>,
    /// The bucket's last revision when this node started; `u64::MAX` until known.
    pub(crate) start_target: AtomicU64,
    /// The bucket's last revision as of the last check.
    pub(crate) bucket_last: AtomicU64,
    /// Not lagging beyond `max_lag` for longer than `lag_grace`.
    pub(crate) lag_ok: AtomicBool,
    /// Told by the monitor when the watch makes no progress while the bucket is ahead.
    pub(crate) stalled: tokio::sync::Notify,
    /// A direct catch-up is running.
    pub(crate) catching_up: AtomicBool,
    /// Makes "newer than applied? then apply" one step for the watch and the direct catch-up.
    pub(crate) applying: std::sync::Mutex<()>,
    /// Where the clicks of the cluster are counted (set before `run`).
    pub(crate) stats: OnceLock<Arc<duanlian_clicks::Stats>>,
    /// This node's leases of visits of capped links.
    pub(crate) leases: crate::quota::Leases,
    /// What the click publisher dropped and holds back.
    pub(crate) click_counters: crate::clicks::ClickCounters,
    /// The prefix of this process's message ids (node name and start): a restarted node's
    /// never collide with its last run's, and its consumer knows its own deltas by it.
    pub(crate) message_prefix: String,
    /// The click publisher's task, awaited at shutdown (see [`Cluster::flush_clicks`]).
    pub(crate) publisher: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The bucket of shared secrets, once opened (`secrets.rs`).
    pub(crate) secrets: tokio::sync::OnceCell<async_nats::jetstream::kv::Store>,
}

impl Cluster {
    /// A node that will serve from `index`; nothing happens until [`Cluster::run`].
    pub fn new(opts: ClusterOptions, index: Arc<Index>) -> Arc<Cluster> {
        Arc::new(Cluster {
            index,
            conn: OnceLock::new(),
            applied: tokio::sync::watch::channel(0).0,
            start_target: AtomicU64::new(u64::MAX),
            bucket_last: AtomicU64::new(0),
            lag_ok: AtomicBool::new(true),
            stalled: tokio::sync::Notify::new(),
            applying: std::sync::Mutex::new(()),
            leases: crate::quota::Leases::default(),
            catching_up: AtomicBool::new(false),
            stats: OnceLock::new(),
            click_counters: Default::default(),
            publisher: std::sync::Mutex::new(None),
            secrets: tokio::sync::OnceCell::new(),
            message_prefix: format!(
                "{}-{:x}-{:x}-",
                opts.name,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
                std::process::id()
            ),
            opts,
        })
    }

    /// Keeps the cluster's click aggregates in `stats`: this node's clicks as the forwarder
    /// takes them, other nodes' from the stream of deltas (call before the forwarder starts
    /// and before [`Cluster::run`]).
    pub fn count_clicks_into(&self, stats: Arc<duanlian_clicks::Stats>) {
        let _ = self.stats.set(stats);
    }

    /// Waits until the click publisher has sent what it held, once the click writer has
    /// finished (which closes its queue). Bound it with a timeout: with NATS unreachable the
    /// publisher gives up after one round.
    pub async fn flush_clicks(&self) {
        let task = self.publisher.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// The JetStream context, once joined.
    pub(crate) fn jetstream(&self) -> Option<jetstream::Context> {
        self.conn.get().map(|c| c.js.clone())
    }

    /// The options the node runs with.
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// Connects (retrying until NATS answers), loads the newest snapshot, then follows the
    /// bucket for as long as the process lives. The connection reconnects by itself; the watch
    /// resumes from the last applied revision after any interruption.
    pub async fn run(self: Arc<Self>) {
        let mut logged = false;
        let conn = loop {
            match self.join().await {
                Ok(conn) => break conn,
                Err(e) => {
                    if !logged {
                        tracing::warn!(error = %e, servers = %self.opts.servers, "cannot join the cluster yet; retrying every second");
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let conn = self.conn.get_or_init(|| conn);
        tokio::spawn(self.clone().monitor());
        tokio::spawn(self.clone().follow_snapshots());
        if let Some(stats) = self.stats.get() {
            tokio::spawn(crate::clicks::consume(
                conn.js.clone(),
                self.opts.clone(),
                stats.clone(),
                self.index.clone(),
                self.message_prefix.clone(),
            ));
        }
        self.tail(conn).await;
    }

    /// Connects, opens the bucket, and loads the newest usable snapshot.
    async fn join(&self) -> Result<Conn, ClusterError> {
        let client = connect(&self.opts).await?;
        let js = jetstream::new(client.clone());
        let (kv, feed_id, last) = open_bucket(&js, &self.opts).await?;
        let visits = crate::quota::open_visits(&js, &self.opts).await?;
        self.bucket_last.store(last, Ordering::Relaxed);
        match self.load_snapshot(&js, feed_id, last).await {
            Ok(Some(snapshot)) => {
                tracing::info!(
                    links = snapshot.len(),
                    revision = snapshot.header().sequence,
                    bucket_revision = last,
                    "loaded the cluster snapshot; following the bucket from the revision after it"
                );
                self.index.swap_snapshot(Arc::new(snapshot));
            }
            Ok(None) => {
                tracing::info!(
                    bucket_revision = last,
                    "no cluster snapshot yet; rebuilding from the bucket"
                )
            }
            Err(why) => tracing::warn!(
                reason = %why,
                bucket_revision = last,
                "the cluster snapshot is unusable; rebuilding from the bucket"
            ),
        }
        self.start_target.store(last, Ordering::Release);
        self.applied.send_replace(self.index.applied());
        tracing::info!(
            bucket = %self.opts.bucket,
            feed_id = format_args!("{feed_id:016x}"),
            from_revision = self.index.applied() + 1,
            "joined the cluster"
        );
        Ok(Conn {
            client,
            js,
            kv,
            visits,
            feed_id,
        })
    }

    /// Downloads the published snapshot (temporary file, checksum, rename, map) and checks that
    /// it belongs to this bucket incarnation and is not ahead of it. `Ok(None)`: none published.
    async fn load_snapshot(
        &self,
        js: &jetstream::Context,
        feed_id: u64,
        bucket_last: u64,
    ) -> Result<Option<Snapshot>, ClusterError> {
        let store = snapshot_store(js, &self.opts).await?;
        let name = self.opts.snapshot_object();
        match store.info(&name).await {
            Ok(info) if !info.deleted => {}
            _ => return Ok(None),
        }
        let snapshot = download(&store, &name, &self.opts.dir).await?;
        let h = snapshot.header();
        if h.feed_id != feed_id {
            return Err(ClusterError::OtherBucket {
                snapshot: h.feed_id,
                bucket: feed_id,
            });
        }
        if h.sequence > bucket_last {
            return Err(ClusterError::AheadOfBucket {
                revision: h.sequence,
                bucket_last,
            });
        }
        Ok(Some(snapshot))
    }

    /// Whether the node has applied everything the bucket held when it started.
    pub fn caught_up(&self) -> bool {
        self.index.applied() >= self.start_target.load(Ordering::Acquire)
    }

    /// What `/readyz` asks: caught up, and not lagging beyond the limit for too long.
    pub fn is_ready(&self) -> bool {
        self.caught_up() && self.lag_ok.load(Ordering::Relaxed)
    }

    /// The newest applied revision.
    pub fn applied(&self) -> u64 {
        self.index.applied()
    }

    /// How far the bucket is ahead of this node, as of the last check.
    pub fn lag(&self) -> u64 {
        self.bucket_last
            .load(Ordering::Relaxed)
            .saturating_sub(self.index.applied())
    }

    /// Whether a miss may be a link this node has not seen yet.
    pub fn lagging(&self) -> bool {
        !self.caught_up() || self.lag() > 0
    }

    /// Connection, applied revision, lag.
    pub fn status(&self) -> ClusterStatus {
        ClusterStatus {
            connected: self.connected(),
            applied: self.applied(),
            lag: self.lag(),
            caught_up: self.caught_up(),
        }
    }

    pub(crate) fn connected(&self) -> bool {
        self.conn.get().is_some_and(|c| {
            c.client.connection_state() == async_nats::connection::State::Connected
        })
    }

    /// One direct read of the bucket, for a miss while this node is behind.
    pub async fn direct_get(&self, domain: &str, code: &str) -> Option<Link> {
        let conn = self.conn.get()?;
        let key = codec::key(domain, code);
        let entry = tokio::time::timeout(Duration::from_secs(1), conn.kv.entry(key.clone()))
            .await
            .ok()?
            .ok()??;
        if entry.operation != kv::Operation::Put {
            return None;
        }
        codec::decode(&key, &entry.value).ok()
    }
}
