//! `duanlian`: build, check and serve short-link snapshots.
#![forbid(unsafe_code)]

mod autocompact;
mod clicks;
mod cluster;
mod config;
mod import;
mod journal_cmd;
mod test_hooks;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand};
use duanlian_index::Index;
use duanlian_link::{format_rfc3339, Domain};
use duanlian_server::{
    Admin, AdminOptions, DomainPolicy, Health, Metrics, Options, Redirector, Reloader, RuntimeShape,
};
use duanlian_snapshot::{Snapshot, SnapshotError};
use duanlian_store::{DataDir, Store, StoreOptions};
use duanlian_write::Writes;
use import::Format;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The links `duanlian serve` answers when given no snapshot, so a first run shows a redirect.
const SAMPLE_CSV: &str = include_str!("../data/sample-links.csv");

#[derive(Parser, Debug)]
#[command(
    name = "duanlian",
    version,
    about = "短链 duanlian: a fast short-link redirect service"
)]
struct Cli {
    /// Log format: text (human-readable), json (one object a line), or auto: text on a
    /// terminal, JSON otherwise. Default is auto. The level comes from DUANLIAN_LOG.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build, inspect and verify snapshot files.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Serve redirects, and the admin API.
    Serve(Box<ServeArgs>),
    /// Check configuration files.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Visit statistics: the click log.
    #[command(subcommand)]
    Clicks(ClicksCmd),
    /// Find and get past damage in a data directory's journal (the server must not be running).
    #[command(subcommand)]
    Journal(journal_cmd::JournalCommand),
    /// Fold a data directory's journal into a new snapshot (the server must not be running).
    Compact {
        /// The data directory.
        #[arg(long, default_value = "duanlian-data")]
        data_dir: PathBuf,
        /// Links expired longer ago than this are left out of the new snapshot. Default is 30d.
        #[arg(long, default_value = "30d", value_parser = parse_period)]
        expired_retention: i64,
    },
}

#[derive(Subcommand, Debug)]
enum ClicksCmd {
    /// Write the recorded click events (one per redirected GET, bots included) for analytics
    /// tools. Safe while the server runs.
    Export(clicks::ExportArgs),
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Validate a TOML configuration file and print the settings `serve` would use with it
    /// (environment variables and flags given here are applied on top, as in `serve`).
    Check {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum SnapshotCmd {
    /// Build a snapshot from CSV (header row: url, code, and optionally domain, redirect,
    /// expires_at, valid_since, created_at) or JSON Lines with the same field names.
    Build {
        /// Input file; the format follows its extension (.csv, .jsonl, .ndjson) unless --format.
        #[arg(long)]
        input: PathBuf,
        /// Snapshot file to write (atomically: temp file, fsync, rename).
        #[arg(long)]
        output: PathBuf,
        /// Domain for rows without one.
        #[arg(long)]
        default_domain: Option<String>,
        /// Input format. Default is taken from the input's extension.
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Cluster mode: fold the links bucket into a snapshot and store it in the cluster's object
    /// store, where every node picks it up (run it from cron, e.g. hourly).
    Publish(cluster::PublishArgs),
    /// Print a snapshot's header, link count and domains.
    Inspect {
        /// Snapshot file.
        file: PathBuf,
    },
    /// Check a snapshot thoroughly: checksum, archive, and every link.
    Verify {
        /// Snapshot file.
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// A TOML configuration file; environment variables (DUANLIAN_...) override it, flags
    /// override both. See `duanlian config check`.
    #[arg(long, env = "DUANLIAN_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (snapshot, journal, generated API key); enables the admin API's writes.
    /// Default is ./duanlian-data, seeded with the built-in sample links on first start, unless
    /// --snapshot is given without --data-dir, which serves that file read-only.
    #[arg(env = "DUANLIAN_DATA_DIR", long)]
    data_dir: Option<PathBuf>,
    /// A bulk snapshot: served read-only without --data-dir; with --data-dir, the seed of an
    /// empty data directory. Either way SIGHUP loads it again (links written through the API
    /// stay on top).
    #[arg(env = "DUANLIAN_SNAPSHOT", long)]
    snapshot: Option<PathBuf>,
    /// Address of the redirect listener; port 0 picks a free port. Default is 127.0.0.1:8080.
    #[arg(env = "DUANLIAN_LISTEN", long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Address of the admin API; never the redirect port. Default is 127.0.0.1:8081.
    #[arg(env = "DUANLIAN_ADMIN_LISTEN", long, default_value = "127.0.0.1:8081")]
    admin_listen: std::net::SocketAddr,
    /// A link domain links may be created on (repeat for more; the first is the default).
    /// Default is the domains of the loaded snapshot.
    #[arg(env = "DUANLIAN_DOMAINS", value_delimiter = ',', long = "domain")]
    domains: Vec<String>,
    /// An accepted API key (repeatable; also DUANLIAN_API_KEYS, comma-separated). With none,
    /// a key is generated into the data directory on first start.
    #[arg(env = "DUANLIAN_API_KEYS", value_delimiter = ',', long = "api-key")]
    api_keys: Vec<String>,
    /// Largest admin request body, in bytes. Default is 8388608 (8 MiB).
    #[arg(env = "DUANLIAN_MAX_BODY_BYTES", long, default_value_t = 8 << 20)]
    max_body_bytes: usize,
    /// Length of generated codes. Default is 7.
    #[arg(env = "DUANLIAN_CODE_LENGTH", long, default_value_t = 7, value_parser = clap::value_parser!(u8).range(4..=32))]
    code_length: u8,
    /// Where expired links of a domain go instead of a 410 page: DOMAIN=URL (repeatable).
    /// A link's own expired_url wins.
    #[arg(long = "expired-url", value_name = "DOMAIN=URL")]
    expired_urls: Vec<String>,
    /// Where unknown codes of a domain go instead of a 404: DOMAIN=URL (repeatable).
    #[arg(long = "not-found-url", value_name = "DOMAIN=URL")]
    not_found_urls: Vec<String>,
    /// Where `/` of a domain goes instead of a 404: DOMAIN=URL (repeatable).
    #[arg(long = "root-url", value_name = "DOMAIN=URL")]
    root_urls: Vec<String>,
    /// How long an expired link keeps answering "expired" before it is purged (then 404, and
    /// dropped at the next compaction): 30d, 12h, seconds... Default is 30d.
    #[arg(env = "DUANLIAN_EXPIRED_RETENTION", long, default_value = "30d", value_parser = parse_period)]
    expired_retention: i64,
    /// Worker threads for redirects. Default is the number of CPUs.
    #[arg(env = "DUANLIAN_THREADS", long)]
    threads: Option<usize>,
    /// Seconds a client may take to send a request head once it has started one. Default is 30.
    #[arg(env = "DUANLIAN_HEADER_READ_TIMEOUT", long, default_value_t = 30)]
    header_read_timeout: u64,
    /// Seconds an idle keep-alive connection stays open; keep it above the load balancer's idle
    /// timeout (60 s on common ones). Default is 75.
    #[arg(env = "DUANLIAN_KEEP_ALIVE_TIMEOUT", long, default_value_t = 75)]
    keep_alive_timeout: u64,
    /// Largest request head in bytes; larger ones get 431. Default is 16384.
    #[arg(env = "DUANLIAN_MAX_HEADER_BYTES", long, default_value_t = 16 << 10)]
    max_header_bytes: usize,
    /// Connections served at once; more wait in the listen backlog. Default is 65536.
    #[arg(env = "DUANLIAN_MAX_CONNECTIONS", long, default_value_t = 65_536)]
    max_connections: usize,
    /// After SIGTERM/SIGINT, seconds to keep accepting while /readyz answers 503, so load
    /// balancers move away first. Default is 5.
    #[arg(env = "DUANLIAN_DRAIN_DELAY", long, default_value_t = 5)]
    drain_delay: u64,
    /// Seconds in-flight requests get to finish after the drain delay. Default is 30.
    #[arg(env = "DUANLIAN_SHUTDOWN_TIMEOUT", long, default_value_t = 30)]
    shutdown_timeout: u64,
    /// A proxy (address or CIDR range) whose X-Forwarded-For and X-Forwarded-Proto are believed;
    /// repeatable. Anyone else's forwarding headers are ignored. Default is none.
    #[arg(
        env = "DUANLIAN_TRUSTED_PROXIES",
        value_delimiter = ',',
        long = "trusted-proxy"
    )]
    trusted_proxies: Vec<String>,
    /// Log every request on the redirect listener (target "access", with the client address).
    /// Default is off.
    #[arg(env = "DUANLIAN_ACCESS_LOG", long)]
    access_log: bool,
    /// Record no click events and keep no visit statistics. Default is to keep them whenever
    /// there is a data directory (in its clicks/ folder).
    #[arg(env = "DUANLIAN_NO_STATS", long)]
    no_stats: bool,
    /// Click events queued for the click-log writer before new ones are dropped (and counted in
    /// duanlian_clicks_total{outcome="dropped"}). Default is 65536.
    #[arg(env = "DUANLIAN_CLICKS_QUEUE", long, default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1..))]
    clicks_queue: u32,
    /// Data-directory nodes compact by themselves once the journal holds this many bytes (a
    /// restart replays the journal: 256 MiB is about a second). 0: never by size.
    #[arg(env = "DUANLIAN_COMPACT_JOURNAL_BYTES", long, default_value_t = 256 << 20)]
    compact_journal_bytes: u64,
    /// Data-directory nodes compact by themselves once this many links changed since the
    /// snapshot are held in memory (about 500 bytes each, against about 130 in the snapshot).
    /// 0: never by count.
    #[arg(
        env = "DUANLIAN_COMPACT_OVERLAY_LINKS",
        long,
        default_value_t = 100_000
    )]
    compact_overlay_links: usize,
    /// Serve the snapshot from a copy in transparent huge pages: the mapping answers from the
    /// first millisecond while the copy is made in the background (about a second per GB),
    /// then the copy takes over, and lookups in a table of gigabytes stop missing the TLB.
    /// Reloads load straight into huge pages. Read-only nodes (--snapshot, no --data-dir) only.
    /// auto: for snapshots of 512 MiB and more, when the kernel offers transparent huge pages
    /// and twice the file fits in available memory. Default is auto; --huge-pages alone is on.
    #[arg(env = "DUANLIAN_HUGE_PAGES", long, value_enum, default_value_t = HugePages::Auto,
          num_args = 0..=1, default_missing_value = "on")]
    huge_pages: HugePages,
    /// Clicks older than this are forgotten: their days leave the statistics and their click
    /// log files are deleted (checked at start and hourly). Default is 400d.
    #[arg(env = "DUANLIAN_STATS_RETENTION", long, default_value = "400d", value_parser = parse_period)]
    stats_retention: i64,
    /// Raw click-log files (one line per click, for `clicks export`) older than this are
    /// deleted; the statistics keep their days in day summaries. Default is 30d.
    #[arg(env = "DUANLIAN_CLICKS_RETENTION", long, default_value = "30d", value_parser = parse_period)]
    clicks_retention: i64,
    /// The most bytes the click log may take (raw files and day summaries); past it the oldest
    /// raw files go first. 0: no cap. Default is 10 GiB.
    #[arg(env = "DUANLIAN_CLICKS_MAX_BYTES", long, default_value_t = 10 << 30)]
    clicks_max_bytes: u64,
    /// Free space the click log leaves on its disk for the journal: below it the oldest raw
    /// files are deleted, and raw clicks stop being written (statistics go on) until there is
    /// room. Default is 1 GiB.
    #[arg(env = "DUANLIAN_CLICKS_RESERVE_BYTES", long, default_value_t = 1 << 30)]
    clicks_reserve_bytes: u64,
    /// Runtime layout: one current-thread runtime per thread with SO_REUSEPORT (per-core), or
    /// one work-stealing runtime (multi-thread). Default is per-core.
    #[arg(env = "DUANLIAN_RUNTIME", long, value_enum, default_value_t = Shape::PerCore)]
    runtime: Shape,
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum HugePages {
    Auto,
    On,
    Off,
}

impl HugePages {
    /// `Some(on)` when decided, `None` for a decision per file.
    fn decided(self) -> Option<bool> {
        match self {
            HugePages::Auto => None,
            HugePages::On => Some(true),
            HugePages::Off => Some(false),
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Shape {
    PerCore,
    MultiThread,
}

fn main() {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(cli.log_format);
    if let Err(e) = run(cli, &matches) {
        eprintln!("duanlian: error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(format: LogFormat) {
    let level = std::env::var("DUANLIAN_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Auto if !terminal => builder.json().init(),
        LogFormat::Text | LogFormat::Auto => builder.with_ansi(terminal).init(),
    }
}

fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<()> {
    match cli.command {
        Command::Snapshot(SnapshotCmd::Build {
            input,
            output,
            default_domain,
            format,
        }) => build(&input, &output, default_domain.as_deref(), format),
        Command::Snapshot(SnapshotCmd::Inspect { file }) => inspect(&file),
        Command::Snapshot(SnapshotCmd::Publish(args)) => cluster::publish(&args),
        Command::Snapshot(SnapshotCmd::Verify { file }) => verify(&file),
        Command::Serve(mut args) => {
            if let (Some(path), Some(m)) =
                (args.config.clone(), matches.subcommand_matches("serve"))
            {
                config::apply(config::read(&path)?, &mut args, m)
                    .map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
            }
            serve(*args)
        }
        Command::Config(ConfigCmd::Check { file }) => config_check(&file),
        Command::Clicks(ClicksCmd::Export(args)) => clicks::export(&args),
        Command::Journal(cmd) => journal_cmd::run(&cmd),
        Command::Compact {
            data_dir,
            expired_retention,
        } => compact(&data_dir, expired_retention),
    }
}

fn build(
    input: &Path,
    output: &Path,
    default_domain: Option<&str>,
    format: Option<Format>,
) -> Result<()> {
    let started = Instant::now();
    let format = format.or_else(|| Format::from_path(input)).ok_or_else(|| {
        anyhow!(
            "{}: cannot tell the format from the extension; pass --format csv or --format jsonl",
            input.display()
        )
    })?;
    let default_domain = default_domain
        .map(|d| Domain::parse(d).map_err(|e| anyhow!("--default-domain: {e}")))
        .transpose()?;
    let imported = import::import(input, format, default_domain)?;
    let size = imported.table.write(output, 0)?;
    eprintln!(
        "wrote {} ({} links, {} bytes) in {:.2}s",
        output.display(),
        imported.rows,
        size,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Opens a snapshot, naming the file in every error.
fn open(path: &Path) -> Result<Snapshot> {
    Snapshot::open(path).map_err(|e| named(path, e))
}

/// A snapshot error that names its file (I/O errors already do).
fn named(path: &Path, e: SnapshotError) -> anyhow::Error {
    match e {
        SnapshotError::Io { .. } | SnapshotError::NotAFile { .. } => anyhow!(e),
        other => anyhow!("{}: {other}", path.display()),
    }
}

fn inspect(path: &Path) -> Result<()> {
    let snap = open(path)?;
    let h = snap.header();
    println!(
        "file            {} ({} bytes)",
        path.display(),
        snap.file_len()
    );
    println!(
        "format version  {} (rkyv format {:#x})",
        h.format_version, h.rkyv_format
    );
    println!("links           {}", h.link_count);
    println!("sequence        {}", h.sequence);
    if h.feed_id != 0 {
        println!("feed            {:016x} (a cluster bucket)", h.feed_id);
    }
    println!(
        "built at        {} ({})",
        format_rfc3339(h.built_at),
        h.built_at
    );
    println!("payload crc32c  {:#010x}", h.payload_crc32c);
    println!("domains");
    for (domain, count) in snap.domain_counts() {
        println!("  {domain:<40} {count}");
    }
    Ok(())
}

fn verify(path: &Path) -> Result<()> {
    let started = Instant::now();
    let snap = open(path)?;
    let report = snap
        .verify()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    println!(
        "{}: ok: {} links on {} domains ({} with an expiry), verified in {:.2}s",
        path.display(),
        snap.len(),
        report.domains.len(),
        report.with_expiry,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
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

fn config_check(file: &Path) -> Result<()> {
    use clap::{CommandFactory, FromArgMatches};
    let m = Cli::command().try_get_matches_from(["duanlian", "serve"])?;
    let Command::Serve(mut args) = Cli::from_arg_matches(&m)?.command else {
        return Err(anyhow!("internal: serve arguments"));
    };
    let serve = m
        .subcommand_matches("serve")
        .ok_or_else(|| anyhow!("internal: serve matches"))?;
    config::apply(config::read(file)?, &mut args, serve)
        .map_err(|e| anyhow!("{}: {e:#}", file.display()))?;
    // The checks `serve` makes before it starts anything.
    domain_policies(&args).map_err(|e| anyhow!("{}: {e:#}", file.display()))?;
    for d in &args.domains {
        Domain::parse(d).map_err(|e| anyhow!("{}: domains: {d}: {e}", file.display()))?;
    }
    print!("{}", config::describe(&args));
    println!("# {}: ok", file.display());
    Ok(())
}

pub(crate) fn parse_period(s: &str) -> Result<i64, String> {
    duanlian_link::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a period such as 30d, 12h, 90m or seconds"))
}

/// `--expired-url`, `--not-found-url` and `--root-url`, grouped by domain.
fn domain_policies(args: &ServeArgs) -> Result<HashMap<Domain, DomainPolicy>> {
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

fn compact(data_dir: &Path, retention: i64) -> Result<()> {
    let dir = DataDir::open(data_dir)
        .with_context(|| format!("data directory {}", data_dir.display()))?;
    let report = duanlian_store::compact_offline(&dir, retention)?;
    println!(
        "{}: snapshot at sequence {} with {} links; {} journal segments removed; {:.2}s",
        data_dir.display(),
        report.sequence,
        report.links,
        report.segments_removed,
        report.elapsed.as_secs_f64()
    );
    Ok(())
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
