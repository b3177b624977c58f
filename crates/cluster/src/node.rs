//! One node's view of the cluster: connection, catch-up, the tail of the bucket, writes.
use crate::error::nats;
use crate::{codec, ClusterError};
use async_nats::jetstream::{self, kv, object_store};
use duanlian_index::Index;
use duanlian_link::{now_secs, Code, Domain, Link};
use duanlian_snapshot::Snapshot;
use duanlian_write::{random_code, Op, Outcome, WriteError, GENERATE_TRIES};
use futures_util::StreamExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

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

/// The connection, once made.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) kv: kv::Store,
    pub(crate) feed_id: u64,
}

/// A node of the cluster; see the crate docs.
#[derive(Debug)]
pub struct Cluster {
    opts: ClusterOptions,
    index: Arc<Index>,
    conn: OnceLock<Conn>,
    applied: tokio::sync::watch::Sender<u64>,
    /// The bucket's last revision when this node started; `u64::MAX` until known.
    start_target: AtomicU64,
    /// The bucket's last revision as of the last check.
    bucket_last: AtomicU64,
    lag_ok: AtomicBool,
    /// Told by the monitor when the watch makes no progress while the bucket is ahead.
    stalled: tokio::sync::Notify,
    /// A direct catch-up is running.
    catching_up: AtomicBool,
    /// Makes "newer than applied? then apply" one step for the watch and the direct catch-up.
    applying: std::sync::Mutex<()>,
    /// Where the clicks of the cluster are counted (set before `run`).
    pub(crate) stats: OnceLock<Arc<duanlian_clicks::Stats>>,
}

/// How long the watch may deliver nothing while the bucket is ahead before it is restarted.
const STALL: Duration = Duration::from_secs(1);

/// One stable number for a bucket incarnation: its name and the creation time of the stream
/// under it. A bucket deleted and created again gets a new identity, so a snapshot of the old
/// one is never resumed against the new one's revisions.
fn feed_id(bucket: &str, created_nanos: i128) -> u64 {
    // FNV-1a: tiny, stable across builds and platforms (unlike std's hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bucket.bytes().chain(created_nanos.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

pub(crate) async fn connect(opts: &ClusterOptions) -> Result<async_nats::Client, ClusterError> {
    let servers: Vec<async_nats::ServerAddr> = opts
        .servers
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|e| ClusterError::Nats(format!("{}: {e}", opts.servers)))?;
    async_nats::ConnectOptions::new()
        .name(&opts.name)
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(5)))
        .max_reconnects(None)
        .retain_servers_order()
        .connect(servers)
        .await
        .map_err(nats)
}

/// The links bucket (created if missing, with history 1 and no limits), its identity and its
/// last revision.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    opts: &ClusterOptions,
) -> Result<(kv::Store, u64, u64), ClusterError> {
    let kv = match js.get_key_value(&opts.bucket).await {
        Ok(kv) => kv,
        Err(_) => match js
            .create_key_value(kv::Config {
                bucket: opts.bucket.clone(),
                description: "duanlian links: DOMAIN/CODE -> link JSON".into(),
                history: 1,
                num_replicas: opts.replicas.max(1),
                ..Default::default()
            })
            .await
        {
            Ok(kv) => kv,
            // Another node created it meanwhile.
            Err(_) => js.get_key_value(&opts.bucket).await.map_err(nats)?,
        },
    };
    let (last, created) = bucket_state(js, opts).await?;
    Ok((kv, feed_id(&opts.bucket, created), last))
}

/// The bucket's last revision and creation time, fresh from the server.
pub(crate) async fn bucket_state(
    js: &jetstream::Context,
    opts: &ClusterOptions,
) -> Result<(u64, i128), ClusterError> {
    let stream = js
        .get_stream_no_info(opts.kv_stream())
        .await
        .map_err(nats)?;
    let info = stream.get_info().await.map_err(nats)?;
    Ok((
        info.state.last_sequence,
        info.created.unix_timestamp_nanos(),
    ))
}

pub(crate) async fn snapshot_store(
    js: &jetstream::Context,
    opts: &ClusterOptions,
) -> Result<object_store::ObjectStore, ClusterError> {
    match js.get_object_store(&opts.snapshots).await {
        Ok(s) => Ok(s),
        Err(_) => match js
            .create_object_store(object_store::Config {
                bucket: opts.snapshots.clone(),
                description: Some("duanlian snapshots of the links bucket".into()),
                num_replicas: opts.replicas.max(1),
                ..Default::default()
            })
            .await
        {
            Ok(s) => Ok(s),
            Err(_) => js.get_object_store(&opts.snapshots).await.map_err(nats),
        },
    }
}

impl Cluster {
    /// A node that will serve from `index`; nothing happens until [`Cluster::run`].
    pub fn new(opts: ClusterOptions, index: Arc<Index>) -> Arc<Cluster> {
        Arc::new(Cluster {
            opts,
            index,
            conn: OnceLock::new(),
            applied: tokio::sync::watch::channel(0).0,
            start_target: AtomicU64::new(u64::MAX),
            bucket_last: AtomicU64::new(0),
            lag_ok: AtomicBool::new(true),
            stalled: tokio::sync::Notify::new(),
            applying: std::sync::Mutex::new(()),
            catching_up: AtomicBool::new(false),
            stats: OnceLock::new(),
        })
    }

    /// Keeps the cluster's click aggregates in `stats`, fed from the click stream (call before
    /// [`Cluster::run`]).
    pub fn count_clicks_into(&self, stats: Arc<duanlian_clicks::Stats>) {
        let _ = self.stats.set(stats);
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
            ));
        }
        self.tail(conn).await;
    }

    /// Connects, opens the bucket, and loads the newest usable snapshot.
    async fn join(&self) -> Result<Conn, ClusterError> {
        let client = connect(&self.opts).await?;
        let js = jetstream::new(client.clone());
        let (kv, feed_id, last) = open_bucket(&js, &self.opts).await?;
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
    ) -> Result<Option<Snapshot>, String> {
        let store = snapshot_store(js, &self.opts)
            .await
            .map_err(|e| e.to_string())?;
        let name = self.opts.snapshot_object();
        match store.info(&name).await {
            Ok(info) if !info.deleted => {}
            _ => return Ok(None),
        }
        let snapshot = download(&store, &name, &self.opts.dir).await?;
        let h = snapshot.header();
        if h.feed_id != feed_id {
            return Err(format!(
                "it was folded from another bucket (feed {:016x}, this bucket is {feed_id:016x})",
                h.feed_id
            ));
        }
        if h.sequence > bucket_last {
            return Err(format!(
                "it is at revision {} but the bucket only reaches {bucket_last}",
                h.sequence
            ));
        }
        Ok(Some(snapshot))
    }

    /// Applies the bucket from the revision after the last applied one, forever.
    async fn tail(&self, conn: &Conn) {
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
    async fn monitor(self: Arc<Self>) {
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
    async fn follow_snapshots(self: Arc<Self>) {
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

    fn connected(&self) -> bool {
        self.conn.get().is_some_and(|c| {
            c.client.connection_state() == async_nats::connection::State::Connected
        })
    }

    /// The connection, if NATS is reachable right now: writes are refused at once otherwise
    /// (503), instead of waiting out a request timeout.
    fn writable(&self) -> Result<&Conn, WriteError> {
        match self.conn.get() {
            Some(c) if c.client.connection_state() == async_nats::connection::State::Connected => {
                Ok(c)
            }
            Some(_) => Err(WriteError::Unavailable("NATS is unreachable".into())),
            None => Err(WriteError::Unavailable(
                "not joined to the cluster yet".into(),
            )),
        }
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

    /// Writes through the bucket: answered once JetStream acknowledged the write and this
    /// node applied it (so the writer reads its own write). Returns the outcome and the
    /// revision of the last write.
    pub async fn submit(&self, op: Op) -> Result<(Outcome, u64), WriteError> {
        let conn = self.writable()?;
        let (outcome, revision) = match op {
            Op::Create(new) => self.create(conn, new).await?,
            Op::Update {
                domain,
                code,
                patch,
            } => {
                let key = codec::key(domain.as_str(), code.as_str());
                let mut tries = 0;
                loop {
                    let (link, read) = self.read(conn, &domain, &code).await?;
                    let link = patch.clone().apply_to(link)?;
                    match conn.kv.update(&key, codec::encode(&link), read).await {
                        Ok(rev) => break (Outcome::Updated(link), rev),
                        Err(e)
                            if e.kind() == kv::UpdateErrorKind::WrongLastRevision && tries < 8 =>
                        {
                            tries += 1; // changed meanwhile: read again and re-apply the patch
                        }
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
            Op::Delete { domain, code } => {
                let mut tries = 0;
                loop {
                    let (_, read) = self.read(conn, &domain, &code).await?;
                    match delete(conn, &self.opts, &domain, &code, read).await {
                        Ok(rev) => break (Outcome::Deleted, rev),
                        // Most likely changed since the read: read again (a 404 ends it).
                        Err(_) if tries < 8 => tries += 1,
                        Err(e) => return Err(WriteError::Unavailable(e)),
                    }
                }
            }
        };
        self.wait_applied(revision).await;
        Ok((outcome, revision))
    }

    async fn wait_applied(&self, revision: u64) {
        let mut applied = self.applied.subscribe();
        let waited =
            tokio::time::timeout(Duration::from_secs(2), applied.wait_for(|a| *a >= revision))
                .await;
        if waited.is_err() {
            // Durable in the bucket regardless; this node will apply it when its watch does.
            tracing::warn!(
                revision,
                "a write was acknowledged but is not applied here yet"
            );
        }
    }

    /// The current link and its revision, or 404.
    async fn read(
        &self,
        conn: &Conn,
        domain: &Domain,
        code: &Code,
    ) -> Result<(Link, u64), WriteError> {
        let key = codec::key(domain.as_str(), code.as_str());
        let not_found = || WriteError::NotFound {
            domain: domain.to_string(),
            code: code.to_string(),
        };
        match conn.kv.entry(key.clone()).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => codec::decode(&key, &e.value)
                .map(|l| (l, e.revision))
                .map_err(|why| WriteError::Unavailable(format!("unreadable bucket entry: {why}"))),
            Ok(_) => Err(not_found()),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Creates links one by one with create-if-absent. The bucket has no transactions, so a
    /// batch that fails part-way deletes the links it had created before answering the error.
    async fn create(
        &self,
        conn: &Conn,
        new: Vec<duanlian_write::NewLink>,
    ) -> Result<(Outcome, u64), WriteError> {
        let now = now_secs();
        let mut created: Vec<(Link, u64)> = Vec::with_capacity(new.len());
        for n in new {
            match self.create_one(conn, n, now).await {
                Ok(done) => created.push(done),
                Err(e) => {
                    for (link, rev) in &created {
                        let _ = delete(conn, &self.opts, &link.domain, &link.code, *rev).await;
                    }
                    return Err(e);
                }
            }
        }
        let last = created.iter().map(|c| c.1).max().unwrap_or(0);
        Ok((
            Outcome::Created(created.into_iter().map(|c| c.0).collect()),
            last,
        ))
    }

    async fn create_one(
        &self,
        conn: &Conn,
        n: duanlian_write::NewLink,
        now: i64,
    ) -> Result<(Link, u64), WriteError> {
        let chosen = n.code.clone();
        for _ in 0..GENERATE_TRIES {
            let code = match &chosen {
                Some(c) => c.clone(),
                None => match Code::parse_new(&random_code(n.code_length)?) {
                    Ok(c) if !self.index.contains(n.domain.as_str(), c.as_str()) => c,
                    _ => continue,
                },
            };
            let link = n.clone().into_link(code, now);
            let key = codec::key(link.domain.as_str(), link.code.as_str());
            match conn.kv.create(&key, codec::encode(&link)).await {
                Ok(rev) => return Ok((link, rev)),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                    if chosen.is_some() {
                        return Err(WriteError::Conflict {
                            domain: link.domain.to_string(),
                            code: link.code.to_string(),
                        });
                    }
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(WriteError::CodeSpaceExhausted(n.code_length))
    }
}

fn unavailable(e: impl std::fmt::Display) -> WriteError {
    WriteError::Unavailable(format!("NATS: {e}"))
}

/// A delete marker that only lands if the key is still at `revision`.
async fn delete(
    conn: &Conn,
    opts: &ClusterOptions,
    domain: &Domain,
    code: &Code,
    revision: u64,
) -> Result<u64, String> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("KV-Operation", "DEL");
    headers.insert(
        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        revision.to_string().as_str(),
    );
    let subject = opts.kv_subject_prefix() + &codec::key(domain.as_str(), code.as_str());
    let ack = conn
        .js
        .publish_with_headers(subject, headers, bytes::Bytes::new())
        .await
        .map_err(|e| format!("NATS: {e}"))?
        .await
        .map_err(|e| format!("NATS: {e}"))?;
    Ok(ack.sequence)
}

/// Downloads `name` to a temporary file in `dir`, renames it over `dir/NAME` and maps it,
/// verifying the checksum.
pub(crate) async fn download(
    store: &object_store::ObjectStore,
    name: &str,
    dir: &std::path::Path,
) -> Result<Snapshot, String> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.download"));
    let mut object = store
        .get(name)
        .await
        .map_err(|e| format!("fetching {name}: {e}"))?;
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    tokio::io::copy(&mut object, &mut file)
        .await
        .map_err(|e| format!("downloading {name}: {e}"))?;
    file.flush()
        .await
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    file.sync_all()
        .await
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    drop(file);
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // The file is replaced only by this rename, never written in place: mapping it is safe.
    let opened =
        tokio::task::spawn_blocking(move || Snapshot::open(&path).map_err(|e| e.to_string()))
            .await
            .map_err(|e| e.to_string())??;
    Ok(opened)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recreated_bucket_is_another_feed() {
        let a = feed_id("links", 1_700_000_000_000_000_000);
        assert_ne!(a, feed_id("links", 1_700_000_000_000_000_001));
        assert_ne!(a, feed_id("links2", 1_700_000_000_000_000_000));
        assert_eq!(a, feed_id("links", 1_700_000_000_000_000_000));
        assert_ne!(a, 0);
    }
}
