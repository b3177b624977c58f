//! `serve --cluster` and `snapshot publish`: the binary's side of cluster mode.
use anyhow::{anyhow, Context, Result};
use clap::Args;
use duanlian_cluster::{ClickForwarder, Cluster, ClusterOptions};
use duanlian_index::Index;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Cluster mode's flags of `serve`.
#[derive(Args, Debug, Clone)]
pub(crate) struct ClusterArgs {
    /// Cluster mode: links live in a NATS JetStream key-value bucket on these servers
    /// (comma-separated nats://HOST:PORT), not in a data directory. Replaces --data-dir and
    /// --snapshot. Default is single-node mode.
    #[arg(env = "DUANLIAN_CLUSTER", long = "cluster", value_name = "URLS")]
    pub(crate) cluster: Option<String>,
    /// The key-value bucket of the links.
    #[arg(env = "DUANLIAN_CLUSTER_BUCKET", long, default_value = "links")]
    pub(crate) cluster_bucket: String,
    /// Replicas of the bucket, the snapshot store and the click stream, when this node creates them
    /// (a JetStream cluster of at least as many servers).
    #[arg(env = "DUANLIAN_CLUSTER_REPLICAS", long, default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub(crate) cluster_replicas: u8,
    /// Where the node keeps the snapshot it downloads from the cluster (mapped from there).
    /// Default is a folder in the system's temporary directory.
    #[arg(env = "DUANLIAN_CLUSTER_DIR", long)]
    pub(crate) cluster_dir: Option<PathBuf>,
    /// /readyz fails while this node stays more than this many revisions behind the bucket for over
    /// 5 seconds.
    #[arg(env = "DUANLIAN_CLUSTER_MAX_LAG", long, default_value_t = 10_000)]
    pub(crate) cluster_max_lag: u64,
    /// This node's name in NATS and in click-event ids. Default is the host name and process id.
    #[arg(env = "DUANLIAN_NODE_NAME", long)]
    pub(crate) node_name: Option<String>,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into())
}

pub(crate) fn options(servers: &str, args: &ClusterArgs) -> ClusterOptions {
    let mut opts = ClusterOptions::new(servers);
    opts.bucket = args.cluster_bucket.clone();
    opts.replicas = usize::from(args.cluster_replicas);
    opts.max_lag = args.cluster_max_lag;
    opts.apply_delay = crate::test_hooks::delay("DUANLIAN_TEST_CLUSTER_APPLY_DELAY_MS");
    opts.name = args
        .node_name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", host_name(), std::process::id()));
    opts.dir = args.cluster_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("duanlian-cluster-{}-{}", opts.bucket, opts.name))
    });
    opts
}

/// A cluster node being started: its runtime (NATS client, watch, click publisher) lives as
/// long as this value.
pub(crate) struct Node {
    pub(crate) cluster: Arc<Cluster>,
    pub(crate) index: Arc<Index>,
    runtime: tokio::runtime::Runtime,
}

impl Node {
    pub(crate) fn new(opts: ClusterOptions) -> Result<Node> {
        let index = Arc::new(Index::empty());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("duanlian-cluster")
            .enable_all()
            .build()
            .context("cluster runtime")?;
        tracing::info!(servers = %opts.servers, bucket = %opts.bucket, node = %opts.name, dir = %opts.dir.display(), "cluster mode");
        Ok(Node {
            cluster: Cluster::new(opts, index.clone()),
            index,
            runtime,
        })
    }

    /// Click events go to the cluster's streams; this node's aggregates take its own deltas
    /// directly and every other node's from the stream of deltas.
    pub(crate) fn clicks(
        &self,
        opts: duanlian_clicks::RecorderOptions,
    ) -> Result<(Arc<duanlian_clicks::Recorder>, duanlian_clicks::Writer)> {
        let stats = Arc::new(duanlian_clicks::Stats::default());
        // Before the forwarder starts, so that it counts the first click.
        self.cluster.count_clicks_into(stats.clone());
        // 1,024 batches, each what a redirect thread recorded between two of the writer's
        // polls (20 ms): tens of seconds of a busy node's clicks while the cluster thread merges a burst
        // of other nodes' deltas.
        let forwarder = ClickForwarder::start(&self.cluster, self.runtime.handle(), 1024);
        let (recorder, writer) =
            duanlian_clicks::Recorder::forwarding(Box::new(forwarder), stats, opts)
                .context("click writer")?;
        Ok((Arc::new(recorder), writer))
    }

    /// The runtime the node's cluster work runs on.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.handle()
    }

    /// Joins in the background: `/readyz` says ready once the node caught up.
    pub(crate) fn start(&self) {
        self.runtime.spawn(self.cluster.clone().run());
    }

    /// Keeps `tls`'s session-ticket keys the same on every node (from the cluster's secrets,
    /// rotated on the tickets' period), so a client resumes wherever it lands. Until the
    /// cluster answers, the node seals with keys of its own.
    pub(crate) fn share_ticket_keys(&self, tls: Arc<duanlian_server::Tls>) {
        let cluster = self.cluster.clone();
        self.runtime.spawn(async move {
            let tickets = tls.tickets().clone();
            let period = Duration::from_secs(u64::from(tickets.period()));
            let key = |s: duanlian_cluster::Secret| {
                duanlian_server::TicketKey::from_random(&s.bytes, s.created)
            };
            let mut warned = false;
            loop {
                let wait = match cluster.rotating_secret("tls-tickets", period).await {
                    Ok(r) => {
                        let next = r.current.created + period.as_secs() as i64;
                        tickets.install(key(r.current), r.previous.map(key));
                        warned = false;
                        // Look again when it is due, and at least every minute (another node
                        // may rotate first).
                        (next - duanlian_link::now_secs()).clamp(1, 60) as u64
                    }
                    Err(duanlian_cluster::ClusterError::NotJoined) => 1,
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, "TLS ticket keys not shared yet; retrying");
                            warned = true;
                        }
                        5
                    }
                };
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
        });
    }

    pub(crate) fn stop(self) {
        let cluster = self.cluster.clone();
        let _ = self.runtime.block_on(async move {
            // The last second of clicks, and anything held over an outage (the click writer
            // has finished, so nothing more comes): the acknowledgements wait at most 10 s.
            let _ = tokio::time::timeout(Duration::from_secs(12), cluster.flush_clicks()).await;
            // Unspent visits of capped links go back to the shared counters (at most a second).
            tokio::time::timeout(Duration::from_secs(1), cluster.return_leases()).await
        });
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// `duanlian snapshot publish`.
#[derive(Args, Debug)]
pub(crate) struct PublishArgs {
    /// NATS servers, comma-separated nats://HOST:PORT.
    #[arg(env = "DUANLIAN_CLUSTER", long = "cluster", value_name = "URLS")]
    cluster: String,
    #[command(flatten)]
    settings: PublishSettings,
}

#[derive(Args, Debug)]
struct PublishSettings {
    /// The key-value bucket of the links.
    #[arg(
        env = "DUANLIAN_CLUSTER_BUCKET",
        long = "cluster-bucket",
        default_value = "links"
    )]
    bucket: String,
    /// Replicas, if the bucket or the snapshot store has to be created.
    #[arg(env = "DUANLIAN_CLUSTER_REPLICAS", long = "cluster-replicas", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    replicas: u8,
    /// Where the snapshot file is built before the upload. Default is the temporary directory.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Upload this file as the snapshot, unchecked, instead of folding the bucket (recovery
    /// drills; tests of how nodes treat a corrupt or foreign snapshot).
    #[arg(long, hide = true)]
    raw_file: Option<PathBuf>,
}

pub(crate) fn publish(args: &PublishArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let mut opts = ClusterOptions::new(&args.cluster);
    opts.bucket = args.settings.bucket.clone();
    opts.replicas = usize::from(args.settings.replicas);
    opts.name = format!("duanlian-publish-{}", std::process::id());
    if let Some(dir) = &args.settings.dir {
        opts.dir = dir.clone();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    if let Some(file) = &args.settings.raw_file {
        let size = rt
            .block_on(duanlian_cluster::upload_snapshot_file(&opts, file))
            .with_context(|| format!("uploading {}", file.display()))?;
        println!(
            "uploaded {} ({size} bytes) unchecked as {}/{}.snap",
            file.display(),
            opts.snapshots,
            opts.bucket
        );
        return Ok(());
    }
    let published = rt
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(600),
                duanlian_cluster::publish_snapshot(&opts),
            )
            .await
        })
        .map_err(|_| anyhow!("{}: no answer within 10 minutes", args.cluster))?
        .with_context(|| format!("publishing a snapshot of bucket {}", opts.bucket))?;
    println!(
        "published {} of bucket {} at revision {} ({} bytes) as {}/{} in {:.1}s{}",
        crate::count(published.links as u64, "link", "links"),
        opts.bucket,
        published.revision,
        published.bytes,
        opts.snapshots,
        format_args!("{}.snap", opts.bucket),
        started.elapsed().as_secs_f64(),
        if published.skipped > 0 {
            format!(
                "; {} skipped",
                crate::count(published.skipped, "unreadable entry", "unreadable entries")
            )
        } else {
            String::new()
        }
    );
    Ok(())
}
