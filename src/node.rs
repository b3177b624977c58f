//! `duanlian serve`: the settings turned into a node (a data directory, a read-only snapshot or
//! a cluster member), its listeners started, and the node run until it is asked to stop.
use crate::args::{HugePages, ServeArgs, Shape};
use crate::import::Format;
use crate::snapshot_cmd::named;
use crate::{autocompact, cluster, import, test_hooks};
use anyhow::{anyhow, Context, Result};
use duanlian_index::Index;
use duanlian_link::Domain;
use duanlian_server::{
    Admin, AdminOptions, DomainPolicy, Health, Metrics, Options, Redirector, Reloader, RuntimeShape,
};
use duanlian_snapshot::Snapshot;
use duanlian_store::{DataDir, Store, StoreOptions};
use duanlian_write::Writes;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The links `duanlian serve` answers when given no snapshot, so a first run shows a redirect.
const SAMPLE_CSV: &str = include_str!("../data/sample-links.csv");

pub(crate) fn serve(args: ServeArgs) -> Result<()> {
    let started = Instant::now();
    let node = match &args.cluster.cluster {
        Some(servers) => Some(cluster::Node::new(servers, &args)?),
        None => None,
    };
    let metrics = Arc::new(match &node {
        Some(node) => Metrics::new().with_writer_gauges(node.cluster.as_ref()),
        None => Metrics::new(),
    });
    // Flags first: a mistake in them must not leave a data directory behind.
    let policies = domain_policies(&args)?;
    let proxies = duanlian_server::TrustedProxies::parse(&args.trusted_proxies)
        .map_err(|e| anyhow!("--trusted-proxy: {e}"))?;
    if args.admin_listen == args.listen && args.listen.port() != 0 {
        return Err(anyhow!(
            "--admin-listen must differ from --listen: the admin API never shares the redirect port"
        ));
    }
    let read_only = args.snapshot.is_some() && args.data_dir.is_none() && node.is_none();
    if args.huge_pages == HugePages::On && !read_only {
        return Err(anyhow!(
            "--huge-pages applies to a node serving --snapshot without --data-dir"
        ));
    }
    let (index, store, data_dir) = if let Some(node) = &node {
        (node.index.clone(), None, None)
    } else if let (Some(path), None) = (&args.snapshot, &args.data_dir) {
        let snapshot = Snapshot::open_deferred(path).map_err(|e| named(path, e))?;
        tracing::info!(
            snapshot = %path.display(),
            links = snapshot.len(),
            sequence = snapshot.header().sequence,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "snapshot loaded; serving it read-only (no --data-dir)"
        );
        (Arc::new(Index::new(Arc::new(snapshot))), None, None)
    } else {
        let path = args
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("duanlian-data"));
        let dir =
            DataDir::open(&path).with_context(|| format!("data directory {}", path.display()))?;
        if !dir.has_snapshot() {
            match (&args.snapshot, &args.data_dir) {
                (Some(seed), _) => {
                    dir.seed_from_file(seed).with_context(|| {
                        format!("seeding {} from {}", path.display(), seed.display())
                    })?;
                    tracing::info!(seed = %seed.display(), "seeded the data directory");
                }
                // `duanlian serve` with no arguments: a first run shows working links.
                (None, None) => {
                    dir.seed_from_bytes(&sample_image()?)?;
                    tracing::info!(dir = %path.display(), "seeded the data directory with the built-in sample links");
                }
                (None, Some(_)) => {}
            }
        }
        let observer = metrics.clone();
        let store_opts = StoreOptions {
            on_commit: Some(duanlian_store::CommitObserver(Arc::new(move |took| {
                observer.observe_fsync(took)
            }))),
            ..StoreOptions::default()
        };
        let store =
            Store::open(dir, store_opts).with_context(|| format!("opening {}", path.display()))?;
        let index = store.index().clone();
        tracing::info!(
            data_dir = %path.display(),
            links_in_snapshot = index.snapshot().len(),
            sequence = index.snapshot().header().sequence,
            journal_records_replayed = store.replayed(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "data directory loaded"
        );
        (index, Some(Arc::new(store)), Some(path))
    };

    let domains = link_domains(&args.domains, &index)?;
    let api_keys = api_keys(&args.api_keys, data_dir.as_deref())?;
    let admin_opts = AdminOptions {
        domains,
        api_keys,
        max_body_bytes: args.max_body_bytes,
        code_length: usize::from(args.code_length),
        ..AdminOptions::default()
    };
    let defaults = Options::default();
    let opts = Options {
        listen: args.listen,
        threads: args.threads.unwrap_or(defaults.threads),
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        keep_alive_timeout: Duration::from_secs(args.keep_alive_timeout),
        max_header_bytes: args.max_header_bytes,
        max_connections: args.max_connections,
        drain_delay: Duration::from_secs(args.drain_delay),
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        shape: match args.runtime {
            Shape::PerCore => RuntimeShape::PerCore,
            Shape::MultiThread => RuntimeShape::MultiThread,
        },
    };
    let huge_pages = read_only
        && args
            .huge_pages
            .decided()
            .unwrap_or_else(|| Snapshot::huge_pages_pay_off(index.snapshot().file_len() as u64));
    verify_in_background(&index, huge_pages);
    // The one place the retention is set: the redirect path, the reaper and compaction read it.
    index.set_retention(args.expired_retention);
    // Nodes whose overlay takes writes (a data directory, a cluster) reclaim links past their
    // retention, whatever feeds their index. A read-only node's links all live in its mapped
    // file, which it never rewrites: it has nothing to reclaim, and skips the reaper's scan of
    // every record (a second of CPU at 10M links, on the core that serves redirects).
    let _reaper = if store.is_some() || node.is_some() {
        Some(
            index
                .start_reaper(Duration::from_millis(250))
                .context("starting the reaper thread")?,
        )
    } else {
        None
    };
    let health = Arc::new(Health::default());
    let redirector = Redirector::new(index.clone())
        .with_health(health.clone())
        .with_metrics(metrics.clone())
        .with_policies(policies)
        // Counting every visit only makes sense where the counts can be kept.
        .with_visit_counting(store.is_some() || node.is_some());
    let redirector = match &node {
        Some(node) => redirector.with_catch_up(node.cluster.clone()),
        None => redirector,
    };
    let clicks = match (&data_dir, &node, args.no_stats) {
        (_, _, true) => None,
        (Some(dir), _, false) => Some(start_clicks(dir, &args)?),
        (None, Some(node), false) => Some(node.clicks(&args)?),
        (None, None, false) => None,
    };
    let redirector = match &clicks {
        Some((recorder, _)) => redirector.with_clicks(recorder.clone(), proxies.clone()),
        None => redirector,
    };
    let redirector = if args.access_log {
        redirector.with_access_log(proxies)
    } else {
        redirector
    };
    // The node's writer, the one thing that differs between the three kinds for the admin API.
    let (writes, reloader): (Arc<dyn Writes>, _) = match (&store, &node) {
        (Some(store), _) => (store.clone(), Some(Reloader::for_writes(store.clone()))),
        // A cluster node's snapshots come from the cluster, never from a local file.
        (None, Some(node)) => (node.cluster.clone(), None),
        (None, None) => (
            Arc::new(duanlian_write::ReadOnly),
            Some(Reloader::new(index.clone())),
        ),
    };
    let admin = Admin::new(admin_opts, index.clone(), writes);
    let mut admin = admin;
    if let Some(reloader) = reloader {
        let mut reloader = reloader
            .with_metrics(metrics.clone())
            .with_huge_pages(if read_only {
                args.huge_pages.decided()
            } else {
                Some(false)
            });
        if let Some(path) = &args.snapshot {
            reloader = reloader.with_configured(path.clone());
        }
        let reloader = Arc::new(reloader);
        if reloader.configured().is_some() {
            reload_on_sighup(reloader.clone())?;
        }
        admin = admin.with_reloader(reloader);
    }
    if let Some((recorder, _)) = &clicks {
        metrics.watch_clicks(recorder.clone());
        admin = admin.with_stats(recorder.stats().clone());
    }
    if let Some(store) = &store {
        let limits = autocompact::limits(args.compact_journal_bytes, args.compact_overlay_links);
        autocompact::spawn(store.clone(), limits, metrics.clone())?;
    }
    let admin = admin.with_metrics(metrics, health.clone());
    if let Some(node) = &node {
        let cluster = node.cluster.clone();
        health.gate_on(move || cluster.is_ready());
        node.start();
    }
    duanlian_server::spawn_admin(Arc::new(admin), args.admin_listen, &opts)
        .with_context(|| format!("admin listener on {}", args.admin_listen))?;
    duanlian_server::run(Arc::new(redirector), &opts, health)
        .with_context(|| format!("serving on {}", args.listen))?;
    if let Some(store) = store {
        store.shutdown();
    }
    if let Some((_, writer)) = clicks {
        writer.finish();
    }
    if let Some(node) = node {
        // After the click writer drained into the publisher: give it a moment to send.
        node.stop();
    }
    Ok(())
}

/// Rebuilds the visit statistics from the click log in `data_dir`/clicks and starts its writer.
/// The click queue and writer as the flags set them, for either kind of recorder.
pub(crate) fn recorder_options(args: &ServeArgs) -> duanlian_clicks::RecorderOptions {
    duanlian_clicks::RecorderOptions {
        capacity: args.clicks_queue as usize,
        writer_delay: test_hooks::delay("DUANLIAN_TEST_CLICKS_WRITER_DELAY_MS"),
        retention: Some(args.stats_retention),
        log_retention: Some(args.clicks_retention.min(args.stats_retention)),
        max_log_bytes: (args.clicks_max_bytes > 0).then_some(args.clicks_max_bytes),
        reserve_bytes: args.clicks_reserve_bytes,
        ..Default::default()
    }
}

fn start_clicks(
    data_dir: &Path,
    args: &ServeArgs,
) -> Result<(Arc<duanlian_clicks::Recorder>, duanlian_clicks::Writer)> {
    let started = std::time::Instant::now();
    let dir = data_dir.join("clicks");
    let (recorder, writer, read) = duanlian_clicks::Recorder::start(&dir, recorder_options(args))
        .with_context(|| format!("click log in {}", dir.display()))?;
    tracing::info!(
        clicks = read.clicks,
        skipped_lines = read.skipped,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "visit statistics rebuilt from the click log"
    );
    Ok((Arc::new(recorder), writer))
}

/// SIGHUP reloads the configured snapshot (validated first; a bad file changes nothing).
fn reload_on_sighup(reloader: Arc<Reloader>) -> Result<()> {
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
                    if let Some(path) = reloader.configured() {
                        // The outcome is logged and counted by the reloader itself.
                        let _ = reloader.reload(path).await;
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
/// `--expired-url`, `--not-found-url` and `--root-url`, grouped by domain.
pub(crate) fn domain_policies(args: &ServeArgs) -> Result<HashMap<Domain, DomainPolicy>> {
    type Slot = fn(&mut DomainPolicy) -> &mut Option<Box<str>>;
    let mut out: HashMap<Domain, DomainPolicy> = HashMap::new();
    let groups: [(&str, &[String], Slot); 3] = [
        ("--expired-url", &args.expired_urls, |p| &mut p.expired_url),
        ("--not-found-url", &args.not_found_urls, |p| {
            &mut p.not_found_url
        }),
        ("--root-url", &args.root_urls, |p| &mut p.root_url),
    ];
    for (flag, values, slot) in groups {
        for v in values {
            let (d, u) = v
                .split_once('=')
                .ok_or_else(|| anyhow!("{flag} {v}: expected DOMAIN=URL"))?;
            let domain = Domain::parse(d).map_err(|e| anyhow!("{flag} {v}: {e}"))?;
            let url = duanlian_link::parse_url(u).map_err(|e| anyhow!("{flag} {v}: {e}"))?;
            *slot(out.entry(domain).or_default()) = Some(url);
        }
    }
    Ok(out)
}

/// The configured link domains, or else the loaded snapshot's, in name order.
fn link_domains(flags: &[String], index: &Index) -> Result<Vec<Domain>> {
    let mut domains = Vec::new();
    for d in flags {
        let d = Domain::parse(d).map_err(|e| anyhow!("--domain {d}: {e}"))?;
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
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
fn api_keys(flags: &[String], data_dir: Option<&Path>) -> Result<Vec<String>> {
    // Flags, else DUANLIAN_API_KEYS (comma-separated), else the configuration file: clap and
    // `config::apply` have already picked the layer.
    let mut keys: Vec<String> = flags.iter().map(|k| k.trim().to_owned()).collect();
    keys.retain(|k| !k.is_empty());
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
        None,
    )?;
    imported.table.to_bytes(0).map_err(|e| anyhow!("{e}"))
}
