//! The command line: every subcommand and flag, as clap parses them. Flags of `serve` also
//! come from the environment (`DUANLIAN_*`) and the configuration file (see `config.rs`).
use crate::import::{Encoding, Format};
use crate::{clicks, cluster, journal_cmd};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "duanlian",
    version,
    about = "短链 duanlian: a fast short-link redirect service"
)]
pub(crate) struct Cli {
    /// Log format: text (human-readable), json (one object a line), or auto: text on a terminal,
    /// JSON otherwise. The level comes from DUANLIAN_LOG.
    #[arg(env = "DUANLIAN_LOG_FORMAT", long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
        /// Links expired longer ago than this are left out of the new snapshot.
        #[arg(long, default_value = "30d", value_parser = parse_period)]
        expired_retention: i64,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum ClicksCmd {
    /// Write the recorded click events (one per redirected GET, bots included) for analytics
    /// tools. Safe while the server runs.
    Export(clicks::ExportArgs),
}

#[derive(Subcommand, Debug)]
pub(crate) enum ConfigCmd {
    /// Validate a TOML configuration file and print the settings `serve` would use with it
    /// (environment variables and flags given here are applied on top, as in `serve`).
    Check {
        /// The file.
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SnapshotCmd {
    /// Build a snapshot from CSV or JSON Lines. CSV has a header row naming its columns, in any
    /// order: url and code, and optionally domain, redirect (301, 302, 307, 308), expires_at,
    /// expires_in (7d, 12h; counted from now), valid_since, created_at (RFC 3339 or Unix
    /// seconds), max_visits, expired_url and forward_query (true, false, override). JSON Lines
    /// take the same names, one object a line.
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
        /// The input's text encoding: auto reads UTF-8, and GBK (what Excel in China saves as
        /// "CSV") when the first non-ASCII characters are not UTF-8.
        #[arg(long, value_enum, default_value_t = Encoding::Auto)]
        encoding: Encoding,
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
    pub(crate) config: Option<PathBuf>,
    /// Data directory (snapshot, journal, generated API key); enables the admin API's writes.
    /// Default is ./duanlian-data, seeded with the built-in sample links on first start, unless
    /// --snapshot is given without --data-dir, which serves that file read-only.
    #[arg(env = "DUANLIAN_DATA_DIR", long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// A bulk snapshot: served read-only without --data-dir; with --data-dir, the seed of an
    /// empty data directory. Either way SIGHUP loads it again (links written through the API
    /// stay on top).
    #[arg(env = "DUANLIAN_SNAPSHOT", long)]
    pub(crate) snapshot: Option<PathBuf>,
    /// Address of the redirect listener; port 0 picks a free port.
    #[arg(env = "DUANLIAN_LISTEN", long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: std::net::SocketAddr,
    /// Address of the admin API; never the redirect port.
    #[arg(env = "DUANLIAN_ADMIN_LISTEN", long, default_value = "127.0.0.1:8081")]
    pub(crate) admin_listen: std::net::SocketAddr,
    /// A link domain links may be created on (repeat for more; the first is the default).
    /// Default is the domains of the loaded snapshot.
    #[arg(env = "DUANLIAN_DOMAINS", value_delimiter = ',', long = "domain")]
    pub(crate) domains: Vec<String>,
    /// An accepted API key (repeatable; also DUANLIAN_API_KEYS, comma-separated). With none,
    /// a key is generated into the data directory on first start.
    #[arg(env = "DUANLIAN_API_KEYS", value_delimiter = ',', long = "api-key")]
    pub(crate) api_keys: Vec<String>,
    /// Largest admin request body, in bytes.
    #[arg(env = "DUANLIAN_MAX_BODY_BYTES", long, default_value_t = 8 << 20)]
    pub(crate) max_body_bytes: usize,
    /// Length of generated codes.
    #[arg(env = "DUANLIAN_CODE_LENGTH", long, default_value_t = 7, value_parser = clap::value_parser!(u8).range(4..=32))]
    pub(crate) code_length: u8,
    /// Where expired links of a domain go instead of a 410 page: DOMAIN=URL (repeatable).
    /// A link's own expired_url wins.
    // Space-separated in the variable: a URL may hold a comma, never a bare space.
    #[arg(
        env = "DUANLIAN_EXPIRED_URL",
        value_delimiter = ' ',
        long = "expired-url",
        value_name = "DOMAIN=URL"
    )]
    pub(crate) expired_urls: Vec<String>,
    /// Where unknown codes of a domain go instead of a 404: DOMAIN=URL (repeatable).
    // Space-separated in the variable: a URL may hold a comma, never a bare space.
    #[arg(
        env = "DUANLIAN_NOT_FOUND_URL",
        value_delimiter = ' ',
        long = "not-found-url",
        value_name = "DOMAIN=URL"
    )]
    pub(crate) not_found_urls: Vec<String>,
    /// Where `/` of a domain goes instead of a 404: DOMAIN=URL (repeatable).
    // Space-separated in the variable: a URL may hold a comma, never a bare space.
    #[arg(
        env = "DUANLIAN_ROOT_URL",
        value_delimiter = ' ',
        long = "root-url",
        value_name = "DOMAIN=URL"
    )]
    pub(crate) root_urls: Vec<String>,
    /// How long an expired link keeps answering "expired" before it is purged (then 404, and
    /// dropped at the next compaction): 30d, 12h, seconds...
    #[arg(env = "DUANLIAN_EXPIRED_RETENTION", long, default_value = "30d", value_parser = parse_period)]
    pub(crate) expired_retention: i64,
    /// Worker threads for redirects. Default is the number of CPUs.
    #[arg(env = "DUANLIAN_THREADS", long)]
    pub(crate) threads: Option<usize>,
    /// Seconds a client may take to send a request head once it has started one.
    #[arg(env = "DUANLIAN_HEADER_READ_TIMEOUT", long, default_value_t = 30)]
    pub(crate) header_read_timeout: u64,
    /// Seconds an idle keep-alive connection stays open; keep it above the load balancer's idle
    /// timeout (60 s on common ones).
    #[arg(env = "DUANLIAN_KEEP_ALIVE_TIMEOUT", long, default_value_t = 75)]
    pub(crate) keep_alive_timeout: u64,
    /// Largest request head in bytes; larger ones get 431.
    #[arg(env = "DUANLIAN_MAX_HEADER_BYTES", long, default_value_t = 16 << 10)]
    pub(crate) max_header_bytes: usize,
    /// Connections served at once; more wait in the listen backlog.
    #[arg(env = "DUANLIAN_MAX_CONNECTIONS", long, default_value_t = 65_536)]
    pub(crate) max_connections: usize,
    /// After SIGTERM/SIGINT, seconds to keep accepting while /readyz answers 503, so load balancers
    /// move away first.
    #[arg(env = "DUANLIAN_DRAIN_DELAY", long, default_value_t = 5)]
    pub(crate) drain_delay: u64,
    /// Seconds in-flight requests get to finish after the drain delay.
    #[arg(env = "DUANLIAN_SHUTDOWN_TIMEOUT", long, default_value_t = 30)]
    pub(crate) shutdown_timeout: u64,
    /// A proxy (address or CIDR range) whose X-Forwarded-For and X-Forwarded-Proto are believed;
    /// repeatable. Anyone else's forwarding headers are ignored. Default is none.
    #[arg(
        env = "DUANLIAN_TRUSTED_PROXIES",
        value_delimiter = ',',
        long = "trusted-proxy"
    )]
    pub(crate) trusted_proxies: Vec<String>,
    /// Behind an L4 load balancer: every connection from a --trusted-proxy starts with a PROXY
    /// protocol header (v1 or v2), whose client address the statistics and access log see.
    /// Connections from anyone else are refused. Default is off.
    #[arg(env = "DUANLIAN_PROXY_PROTOCOL", long)]
    pub(crate) proxy_protocol: bool,
    /// HTTPS on the redirect listener: this PEM file's certificate chain (leaf first), with
    /// --tls-key. The listener then speaks TLS 1.3 and 1.2 only. Default is plain HTTP.
    #[arg(env = "DUANLIAN_TLS_CERT", long, value_name = "FILE")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, SEC1 or PKCS#1; ECDSA, Ed25519 or RSA).
    #[arg(env = "DUANLIAN_TLS_KEY", long, value_name = "FILE")]
    pub(crate) tls_key: Option<PathBuf>,
    /// HTTPS on the redirect listener with one certificate per link domain, chosen by the name
    /// the client asks for (SNI): NAME.crt and NAME.key pairs, NAME a domain, `_.example.cn`
    /// for `*.example.cn`, or `default` for clients that name no server. Instead of --tls-cert.
    #[arg(env = "DUANLIAN_TLS_DIR", long, value_name = "DIR")]
    pub(crate) tls_dir: Option<PathBuf>,
    /// Serve HTTPS on this address, beside plain HTTP on --listen (which then stays plain).
    /// Needs --tls-cert or --tls-dir. Default: --listen itself speaks TLS when they are given.
    #[arg(env = "DUANLIAN_TLS_LISTEN", long, value_name = "ADDR")]
    pub(crate) tls_listen: Option<std::net::SocketAddr>,
    /// Certificates for every link domain from this ACME CA's directory URL (Let's Encrypt:
    /// https://acme-v02.api.letsencrypt.org/directory), proved by HTTP-01 on --listen (port 80
    /// for a public CA) and served by HTTPS on --tls-listen; kept in the data directory and
    /// renewed before they expire (in cluster mode: in the cluster, one node ordering). Instead
    /// of --tls-cert or --tls-dir. Default is off.
    #[arg(env = "DUANLIAN_ACME_DIRECTORY", long, value_name = "URL")]
    pub(crate) acme_directory: Option<String>,
    /// A contact for the ACME account, where the CA writes about expiring certificates:
    /// mailto:ops@example.cn (repeatable). Default is none.
    #[arg(
        env = "DUANLIAN_ACME_CONTACT",
        value_delimiter = ',',
        long = "acme-contact",
        value_name = "URI"
    )]
    pub(crate) acme_contacts: Vec<String>,
    /// Trust this CA certificate (PEM) for the ACME server's own HTTPS instead of the system's
    /// roots: a company CA, or a test server such as pebble. Default: the system's roots.
    #[arg(env = "DUANLIAN_ACME_CA_CERT", long, value_name = "FILE")]
    pub(crate) acme_ca_cert: Option<PathBuf>,
    /// Strict-Transport-Security on every HTTPS answer of a domain: DOMAIN=PERIOD, the header's
    /// max-age (such as go.example.cn=365d; repeatable). Browsers then use HTTPS for that
    /// domain by themselves. Never sent over plain HTTP. Default is none.
    #[arg(
        env = "DUANLIAN_HSTS",
        value_delimiter = ',',
        long = "hsts",
        value_name = "DOMAIN=PERIOD"
    )]
    pub(crate) hsts: Vec<String>,
    /// Log every request on the redirect listener (target "access", with the client address).
    /// Default is off.
    #[arg(env = "DUANLIAN_ACCESS_LOG", long)]
    pub(crate) access_log: bool,
    /// Record no click events and keep no visit statistics. Default is to keep them whenever
    /// there is a data directory (in its clicks/ folder).
    #[arg(env = "DUANLIAN_NO_STATS", long)]
    pub(crate) no_stats: bool,
    /// Click events a redirect thread buffers for the click-log writer before new ones are
    /// dropped (and counted in duanlian_clicks_total{outcome="dropped"}).
    #[arg(env = "DUANLIAN_CLICKS_QUEUE", long, default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) clicks_queue: u32,
    /// Data-directory nodes compact by themselves once the journal holds this many bytes (a
    /// restart replays the journal: 256 MiB is about a second). 0: never by size.
    #[arg(env = "DUANLIAN_COMPACT_JOURNAL_BYTES", long, default_value_t = 256 << 20)]
    pub(crate) compact_journal_bytes: u64,
    /// Data-directory nodes compact by themselves once this many links changed since the
    /// snapshot are held in memory (about 500 bytes each, against about 130 in the snapshot).
    /// 0: never by count.
    #[arg(
        env = "DUANLIAN_COMPACT_OVERLAY_LINKS",
        long,
        default_value_t = 100_000
    )]
    pub(crate) compact_overlay_links: usize,
    /// Serve the snapshot from a copy in transparent huge pages: the mapping answers from the first
    /// millisecond while the copy is made in the background (about a second per GB), then the copy
    /// takes over, and lookups in a table of gigabytes stop missing the TLB. Reloads load straight
    /// into huge pages. Read-only nodes (--snapshot, no --data-dir) only. auto: for snapshots of
    /// 512 MiB and more, when the kernel offers transparent huge pages and twice the file fits in
    /// available memory. --huge-pages alone is on.
    #[arg(env = "DUANLIAN_HUGE_PAGES", long, value_enum, default_value_t = HugePages::Auto,
          num_args = 0..=1, default_missing_value = "on")]
    pub(crate) huge_pages: HugePages,
    /// Clicks older than this are forgotten: their days leave the statistics and their click log
    /// files are deleted (checked at start and hourly).
    #[arg(env = "DUANLIAN_STATS_RETENTION", long, default_value = "400d", value_parser = parse_period)]
    pub(crate) stats_retention: i64,
    /// Raw click-log files (one line per click, for `clicks export`) older than this are deleted;
    /// the statistics keep their days in day summaries.
    #[arg(env = "DUANLIAN_CLICKS_RETENTION", long, default_value = "30d", value_parser = parse_period)]
    pub(crate) clicks_retention: i64,
    /// The most bytes the click log may take (raw files and day summaries); past it the oldest raw
    /// files go first. 0: no cap.
    #[arg(env = "DUANLIAN_CLICKS_MAX_BYTES", long, default_value_t = 10 << 30)]
    pub(crate) clicks_max_bytes: u64,
    /// Free space the click log leaves on its disk for the journal: below it the oldest raw files
    /// are deleted, and raw clicks stop being written (statistics go on) until there is room.
    #[arg(env = "DUANLIAN_CLICKS_RESERVE_BYTES", long, default_value_t = 1 << 30)]
    pub(crate) clicks_reserve_bytes: u64,
    /// Runtime layout: one current-thread runtime per thread with SO_REUSEPORT (per-core), or one
    /// work-stealing runtime (multi-thread).
    #[arg(env = "DUANLIAN_RUNTIME", long, value_enum, default_value_t = Shape::PerCore)]
    pub(crate) runtime: Shape,
    #[command(flatten)]
    pub(crate) cluster: cluster::ClusterArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum HugePages {
    Auto,
    // A configuration file may say `huge_pages = true`.
    #[value(alias = "true")]
    On,
    #[value(alias = "false")]
    Off,
}

impl HugePages {
    /// `Some(on)` when decided, `None` for a decision per file.
    pub(crate) fn decided(self) -> Option<bool> {
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

pub(crate) fn parse_period(s: &str) -> Result<i64, String> {
    duanlian_link::parse_duration(s)
        .ok_or_else(|| format!("{s:?} is not a period such as 30d, 12h, 90m or seconds"))
}
