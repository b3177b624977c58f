//! `duanlian serve`: the settings turned into a node (a data directory, a read-only snapshot or
//! a cluster member), its listeners started, and the node run until it is asked to stop.
use crate::import::{Encoding, Format};
use crate::settings::{Kind, Seed, Settings};
use crate::snapshot_cmd::named;
use crate::{autocompact, cluster, import};
use anyhow::{anyhow, Context, Result};
use duanlian_index::{Index, ReaperThread};
use duanlian_link::Domain;
use duanlian_server::{
    AcmeAnswers, Admin, AdminOptions, Health, Metrics, Options, Redirector, Reloader,
};
use duanlian_snapshot::Snapshot;
use duanlian_store::{DataDir, Store, StoreOptions};
use duanlian_write::Writes;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The links `duanlian serve` answers when given no snapshot, so a first run shows a redirect.
const SAMPLE_CSV: &str = include_str!("../data/sample-links.csv");

pub(crate) fn serve(settings: Settings) -> Result<()> {
    raise_open_file_limit(&settings);
    Node::build(settings)?.run()
}

/// Raises the soft limit of open files to the hard one: every connection is a descriptor, and
/// the usual soft default (1024, or less) is reached by a few hundred idle clients, after which
/// neither listener can accept. The hard limit is the operator's (systemd: `LimitNOFILE=`).
fn raise_open_file_limit(s: &Settings) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let before = getrlimit(Resource::Nofile);
    let (soft, hard) = (before.current, before.maximum);
    let raised = match (soft, hard) {
        (Some(soft), hard) if hard.is_none_or(|h| h > soft) => setrlimit(
            Resource::Nofile,
            Rlimit {
                current: hard,
                maximum: hard,
            },
        )
        .is_ok(),
        _ => false,
    };
    let now = getrlimit(Resource::Nofile).current;
    let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |v| v.to_string());
    tracing::info!(
        soft_before = %show(soft),
        soft = %show(now),
        hard = %show(hard),
        raised,
        "open-file limit"
    );
    let wanted = s.listener.max_connections as u64 + 1024;
    if now.is_some_and(|n| n < wanted) {
        tracing::warn!(
            limit = %show(now),
            max_connections = s.listener.max_connections,
            "the open-file limit is below --max-connections (plus room for files): raise the hard limit (systemd: LimitNOFILE=)"
        );
    }
}

/// Where a node's links come from and where its writes go.
enum Backend {
    ReadOnly,
    DataDir { store: Arc<Store>, path: PathBuf },
    Cluster(cluster::Node),
}

/// A node built from its settings: its index loaded, its writer chosen, its background duties
/// (reaper, checksum, compaction, SIGHUP) started; its listeners not yet.
struct Node {
    backend: Backend,
    redirector: Redirector,
    admin: Admin,
    health: Arc<Health>,
    listener: Options,
    admin_listen: SocketAddr,
    clicks: Option<duanlian_clicks::Writer>,
    _reaper: Option<ReaperThread>,
    /// The certificate robot, started once the listeners are up.
    acme: Option<(duanlian_acme::AcmeOptions, Arc<AcmeAnswers>)>,
}

impl Node {
    fn build(s: Settings) -> Result<Node> {
        let started = Instant::now();
        let tls = s.listener.tls.clone();
        let fresh_metrics = || match &tls {
            Some(tls) => Metrics::new().with_tls(tls.clone()),
            None => Metrics::new(),
        };
        let metrics = Arc::new(fresh_metrics());
        let configured = match &s.kind {
            Kind::ReadOnly { snapshot } => Some(snapshot.clone()),
            Kind::DataDir { reload, .. } => reload.clone(),
            Kind::Cluster(_) => None,
        };
        let (backend, index) = match s.kind {
            Kind::Cluster(opts) => {
                let node = cluster::Node::new(*opts)?;
                let index = node.index.clone();
                (Backend::Cluster(node), index)
            }
            Kind::ReadOnly { snapshot } => {
                let snapshot = &snapshot;
                let opened = Snapshot::open_deferred(snapshot).map_err(|e| named(snapshot, e))?;
                tracing::info!(
                    snapshot = %snapshot.display(),
                    links = opened.len(),
                    sequence = opened.header().sequence,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "snapshot loaded; serving it read-only (no --data-dir)"
                );
                (Backend::ReadOnly, Arc::new(Index::new(Arc::new(opened))))
            }
            Kind::DataDir { path, seed, .. } => {
                let store = open_data_dir(&path, &seed, &metrics)?;
                let index = store.index().clone();
                tracing::info!(
                    data_dir = %path.display(),
                    links_in_snapshot = index.snapshot().len(),
                    sequence = index.snapshot().header().sequence,
                    journal_records_replayed = store.replayed(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "data directory loaded"
                );
                let store = Arc::new(store);
                (Backend::DataDir { store, path }, index)
            }
        };
        let metrics = match &backend {
            Backend::Cluster(node) => {
                Arc::new(fresh_metrics().with_writer_gauges(node.cluster.as_ref()))
            }
            _ => metrics,
        };
        let read_only = matches!(backend, Backend::ReadOnly);
        let huge_pages = read_only
            && s.huge_pages.decided().unwrap_or_else(|| {
                Snapshot::huge_pages_pay_off(index.snapshot().file_len() as u64)
            });
        verify_in_background(&index, huge_pages);
        // The one place the retention is set: the redirect path, the reaper and compaction read it.
        index.set_retention(s.retention);
        // Nodes whose overlay takes writes (a data directory, a cluster) reclaim links past their
        // retention, whatever feeds their index. A read-only node's links all live in its mapped
        // file, which it never rewrites: it has nothing to reclaim, and skips the reaper's scan of
        // every record (a second of CPU at 10M links, on the core that serves redirects).
        let reaper = if read_only {
            None
        } else {
            Some(
                index
                    .start_reaper(Duration::from_millis(250))
                    .context("starting the reaper thread")?,
            )
        };
        let health = Arc::new(Health::default());
        let mut redirector = Redirector::new(index.clone())
            .with_health(health.clone())
            .with_metrics(metrics.clone())
            .with_policies(s.policies)
            // Counting every visit only makes sense where the counts can be kept.
            .with_visit_counting(!read_only);
        let acme = s.acme.map(|opts| (opts, Arc::new(AcmeAnswers::default())));
        if let Some((_, answers)) = &acme {
            redirector = redirector.with_acme_answers(answers.clone());
        }
        if let (Backend::Cluster(node), Some(tls)) = (&backend, &tls) {
            node.share_ticket_keys(tls.clone());
        }
        if let Backend::Cluster(node) = &backend {
            redirector = redirector
                .with_catch_up(node.cluster.clone())
                .with_visit_quota(node.cluster.clone());
        }
        let clicks = match (&backend, s.clicks) {
            (Backend::DataDir { path, .. }, Some(opts)) => Some(start_clicks(path, opts)?),
            (Backend::Cluster(node), Some(opts)) => Some(node.clicks(opts)?),
            _ => None,
        };
        if let Some((recorder, _)) = &clicks {
            redirector = redirector.with_clicks(recorder.clone(), s.proxies.clone());
        }
        if s.access_log {
            redirector = redirector.with_access_log(s.proxies);
        }
        let data_dir = match &backend {
            Backend::DataDir { path, .. } => Some(path.as_path()),
            _ => None,
        };
        let admin_opts = AdminOptions {
            domains: link_domains(s.domains, &index)?,
            api_keys: api_keys(s.api_keys, data_dir)?,
            max_body_bytes: s.max_body_bytes,
            code_length: s.code_length,
            ..AdminOptions::default()
        };
        // The node's writer, the one thing that differs between the three kinds for the admin API.
        let (writes, reloader): (Arc<dyn Writes>, _) = match &backend {
            Backend::DataDir { store, .. } => {
                (store.clone(), Some(Reloader::for_writes(store.clone())))
            }
            // A cluster node's snapshots come from the cluster, never from a local file.
            Backend::Cluster(node) => (node.cluster.clone(), None),
            Backend::ReadOnly => (
                Arc::new(duanlian_write::ReadOnly),
                Some(Reloader::new(index.clone())),
            ),
        };
        let mut admin = Admin::new(admin_opts, index.clone(), writes);
        let mut admin_reloader = None;
        if let Some(reloader) = reloader {
            let mut reloader =
                reloader
                    .with_metrics(metrics.clone())
                    .with_huge_pages(if read_only {
                        s.huge_pages.decided()
                    } else {
                        Some(false)
                    });
            if let Some(path) = configured {
                reloader = reloader.with_configured(path);
            }
            let reloader = Arc::new(reloader);
            admin_reloader = Some(reloader.clone());
            admin = admin.with_reloader(reloader);
        }
        if let Some((recorder, _)) = &clicks {
            metrics.watch_clicks(recorder.clone());
            admin = admin.with_stats(recorder.stats().clone());
        }
        if let Backend::DataDir { store, .. } = &backend {
            autocompact::spawn(store.clone(), s.compaction, metrics.clone())?;
        }
        if let Some(tls) = &tls {
            admin = admin.with_tls(tls.clone());
        }
        reload_on_sighup(admin_reloader.clone(), tls)?;
        let admin = admin.with_metrics(metrics, health.clone());
        Ok(Node {
            backend,
            redirector,
            admin,
            health,
            listener: s.listener,
            admin_listen: s.admin_listen,
            clicks: clicks.map(|(_, writer)| writer),
            _reaper: reaper,
            acme,
        })
    }

    /// Serves until SIGTERM/SIGINT, then drains, and leaves every acknowledged write on disk
    /// (or on its way to the cluster).
    fn run(self) -> Result<()> {
        if let Backend::Cluster(node) = &self.backend {
            let cluster = node.cluster.clone();
            self.health.gate_on(move || cluster.is_ready());
            node.start();
        }
        match (self.acme, &self.listener.tls, &self.backend) {
            (Some((opts, answers)), Some(tls), Backend::Cluster(node)) => {
                crate::acme::spawn_in_cluster(
                    node.handle(),
                    node.cluster.clone(),
                    opts,
                    answers,
                    tls.clone(),
                    self.health.clone(),
                )
            }
            (Some((opts, answers)), Some(tls), _) => {
                crate::acme::spawn(opts, answers, tls.clone(), self.health.clone())?
            }
            _ => {}
        }
        duanlian_server::spawn_admin(Arc::new(self.admin), self.admin_listen, &self.listener)
            .with_context(|| format!("admin listener on {}", self.admin_listen))?;
        duanlian_server::run(Arc::new(self.redirector), &self.listener, self.health)
            .with_context(|| format!("serving on {}", self.listener.listen))?;
        if let Backend::DataDir { store, .. } = &self.backend {
            store.shutdown();
        }
        if let Some(writer) = self.clicks {
            writer.finish();
        }
        if let Backend::Cluster(node) = self.backend {
            // After the click writer drained into the publisher: it sends what it holds.
            node.stop();
        }
        Ok(())
    }
}

/// Opens (and, when empty, seeds) a data directory.
fn open_data_dir(path: &Path, seed: &Seed, metrics: &Arc<Metrics>) -> Result<Store> {
    let dir = DataDir::open(path).with_context(|| format!("data directory {}", path.display()))?;
    if !dir.has_snapshot() {
        match seed {
            Seed::File(seed) => {
                dir.seed_from_file(seed).with_context(|| {
                    format!("seeding {} from {}", path.display(), seed.display())
                })?;
                tracing::info!(seed = %seed.display(), "seeded the data directory");
            }
            Seed::Sample => {
                dir.seed_from_bytes(&sample_image()?)?;
                tracing::info!(dir = %path.display(), "seeded the data directory with the built-in sample links");
            }
            Seed::Nothing => {}
        }
    }
    let observer = metrics.clone();
    let store_opts = StoreOptions {
        on_commit: Some(duanlian_store::CommitObserver(Arc::new(move |took| {
            observer.observe_fsync(took)
        }))),
        ..StoreOptions::default()
    };
    Store::open(dir, store_opts).with_context(|| format!("opening {}", path.display()))
}

/// Rebuilds the visit statistics from the click log in `data_dir`/clicks and starts its writer.
fn start_clicks(
    data_dir: &Path,
    opts: duanlian_clicks::RecorderOptions,
) -> Result<(Arc<duanlian_clicks::Recorder>, duanlian_clicks::Writer)> {
    let started = std::time::Instant::now();
    let dir = data_dir.join("clicks");
    let (recorder, writer, read) = duanlian_clicks::Recorder::start(&dir, opts)
        .with_context(|| format!("click log in {}", dir.display()))?;
    tracing::info!(
        clicks = read.clicks,
        skipped_lines = read.skipped,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "visit statistics rebuilt from the click log"
    );
    Ok((Arc::new(recorder), writer))
}

/// SIGHUP reloads the configured snapshot and the TLS certificates (each validated first; a
/// bad file changes nothing, and is logged and counted).
fn reload_on_sighup(
    reloader: Option<Arc<Reloader>>,
    tls: Option<Arc<duanlian_server::Tls>>,
) -> Result<()> {
    let reloader = reloader.filter(|r| r.configured().is_some());
    if reloader.is_none() && tls.is_none() {
        return Ok(());
    }
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("SIGHUP runtime")?;
    // Registered here, before the listeners start: a SIGHUP that arrived before the handler
    // would take its default action and end the process.
    let mut hup = {
        let _entered = rt.enter();
        signal(SignalKind::hangup()).context("listening for SIGHUP")?
    };
    std::thread::Builder::new()
        .name("duanlian-sighup".into())
        .spawn(move || {
            rt.block_on(async move {
                while hup.recv().await.is_some() {
                    // The outcomes are logged and counted by the reloaders themselves.
                    if let Some(tls) = &tls {
                        let tls = tls.clone();
                        let _ = tokio::task::spawn_blocking(move || tls.reload()).await;
                    }
                    if let Some(r) = &reloader {
                        if let Some(path) = r.configured() {
                            let _ = r.reload(path).await;
                        }
                    }
                }
            });
        })
        .context("starting the SIGHUP thread")?;
    Ok(())
}

/// The snapshot was opened with its structure checked but its checksum not yet (reading every
/// page of a multi-gigabyte file would delay the first redirect): check it now, beside serving.
/// A mismatch means the file rotted on disk; serving wrong targets is worse than not serving,
/// so the process stops with an error for the operator (and the load balancer) to see.
fn verify_in_background(index: &Arc<Index>, huge_pages: bool) {
    let snapshot = index.snapshot();
    let index = index.clone();
    let spawned = std::thread::Builder::new()
        .name("duanlian-verify".into())
        .spawn(move || {
            let started = Instant::now();
            let fail = |e: &dyn std::fmt::Display| -> ! {
                let file = snapshot
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                tracing::error!(%file, error = %e, "snapshot failed its checksum; stopping");
                eprintln!("duanlian: error: {file}: {e}");
                std::process::exit(1);
            };
            // With --huge-pages the mapping serves while a copy in huge pages is made (which
            // checks the checksum too); the copy then takes over, unless a reload came first.
            if let (true, Some(path)) = (huge_pages, snapshot.path()) {
                match Snapshot::open_huge_pages(path) {
                    Ok(copy) if copy.header() == snapshot.header() => {
                        let moved = index.replace_snapshot(&snapshot, Arc::new(copy));
                        return tracing::info!(
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            moved,
                            "snapshot checksum verified; serving it from huge pages"
                        );
                    }
                    Ok(_) => tracing::warn!(
                        "the snapshot file was replaced since start; serving the mapping until a reload"
                    ),
                    Err(e @ duanlian_snapshot::SnapshotError::PayloadChecksum { .. }) => fail(&e),
                    Err(e) => tracing::warn!(error = %e, "no huge-page copy; serving the mapping"),
                }
            }
            match snapshot.verify_checksum() {
                Ok(()) => tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "snapshot checksum verified"
                ),
                Err(e) => fail(&e),
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "could not start the snapshot checksum thread");
    }
}
/// The configured link domains, or else the loaded snapshot's, in name order.
fn link_domains(mut domains: Vec<Domain>, index: &Index) -> Result<Vec<Domain>> {
    if domains.is_empty() {
        let snapshot = index.snapshot();
        let mut names: Vec<&str> = snapshot.domains().collect();
        names.sort_unstable();
        for n in names {
            domains.push(Domain::parse(n).map_err(|e| anyhow!("snapshot domain {n}: {e}"))?);
        }
    }
    Ok(domains)
}

/// API keys from flags and DUANLIAN_API_KEYS; with none, the data directory's generated key
/// (made on first start, mode 0600).
fn api_keys(keys: Vec<String>, data_dir: Option<&Path>) -> Result<Vec<String>> {
    // Flags, else DUANLIAN_API_KEYS, else the configuration file: the settings picked the layer.
    if !keys.is_empty() {
        return Ok(keys);
    }
    let Some(dir) = data_dir else {
        tracing::warn!(
            "no API key configured and no data directory: the admin API refuses every request"
        );
        return Ok(keys);
    };
    let path = dir.join("api-key");
    match std::fs::read_to_string(&path) {
        Ok(k) if !k.trim().is_empty() => {
            tracing::info!(file = %path.display(), "admin API key loaded");
            Ok(vec![k.trim().to_owned()])
        }
        _ => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let key = duanlian_write::random_token()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("{}", path.display()))?;
            f.write_all(format!("{key}\n").as_bytes())
                .and_then(|()| f.sync_all())
                .with_context(|| format!("{}", path.display()))?;
            tracing::info!(file = %path.display(), "generated an admin API key; read it from this file");
            Ok(vec![key])
        }
    }
}
/// The built-in sample links as a snapshot image.
fn sample_image() -> Result<duanlian_snapshot::AlignedVec> {
    let input = SAMPLE_CSV.as_bytes();
    let imported = import::import_from(
        "data/sample-links.csv",
        input,
        input.len() as u64,
        Format::Csv,
        Encoding::Utf8,
        None,
    )?;
    imported.table.to_bytes(0).map_err(|e| anyhow!("{e}"))
}
