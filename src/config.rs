//! The TOML configuration file of `duanlian serve`, the lowest of three layers: file, then
//! environment variables (`DUANLIAN_...`), then flags. Unknown keys are errors.
use crate::args::{HugePages, ServeArgs, Shape};
use anyhow::{anyhow, Context, Result};
use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The file's shape; every key optional. Names match the flags, with `_` for `-`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    data_dir: Option<PathBuf>,
    snapshot: Option<PathBuf>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    domains: Option<Vec<String>>,
    api_keys: Option<Vec<String>>,
    max_body_bytes: Option<usize>,
    code_length: Option<u8>,
    expired_retention: Option<String>,
    threads: Option<usize>,
    header_read_timeout: Option<u64>,
    keep_alive_timeout: Option<u64>,
    max_header_bytes: Option<usize>,
    max_connections: Option<usize>,
    drain_delay: Option<u64>,
    shutdown_timeout: Option<u64>,
    runtime: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    access_log: Option<bool>,
    no_stats: Option<bool>,
    clicks_queue: Option<u32>,
    compact_journal_bytes: Option<u64>,
    compact_overlay_links: Option<usize>,
    huge_pages: Option<HugeSetting>,
    stats_retention: Option<String>,
    clicks_retention: Option<String>,
    clicks_max_bytes: Option<u64>,
    clicks_reserve_bytes: Option<u64>,
    cluster: Option<String>,
    cluster_bucket: Option<String>,
    cluster_replicas: Option<u8>,
    cluster_dir: Option<PathBuf>,
    cluster_max_lag: Option<u64>,
    node_name: Option<String>,
    /// Per link domain: `[domain."go.example.cn"]` with `expired_url`, `not_found_url`, `root_url`.
    #[serde(default)]
    domain: BTreeMap<String, DomainSection>,
}

/// `huge_pages = true`, `false`, or `"auto"` / `"on"` / `"off"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HugeSetting {
    Bool(bool),
    Word(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainSection {
    expired_url: Option<String>,
    not_found_url: Option<String>,
    root_url: Option<String>,
}

pub(crate) fn read(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Fills every setting that neither a flag nor an environment variable gave from the file.
pub(crate) fn apply(file: FileConfig, args: &mut ServeArgs, m: &ArgMatches) -> Result<()> {
    let unset = |id: &str| {
        !matches!(
            m.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    macro_rules! take {
        ($($field:ident),*) => {$(
            if let Some(v) = file.$field {
                if unset(stringify!($field)) {
                    args.$field = v.into();
                }
            }
        )*};
    }
    take!(
        listen,
        admin_listen,
        max_body_bytes,
        header_read_timeout,
        max_header_bytes
    );
    take!(
        max_connections,
        drain_delay,
        shutdown_timeout,
        domains,
        api_keys
    );
    take!(trusted_proxies, access_log, keep_alive_timeout, no_stats);
    take!(compact_journal_bytes, compact_overlay_links);
    if let Some(v) = file.huge_pages.filter(|_| unset("huge_pages")) {
        args.huge_pages = match v {
            HugeSetting::Bool(true) => HugePages::On,
            HugeSetting::Bool(false) => HugePages::Off,
            HugeSetting::Word(w) => <HugePages as clap::ValueEnum>::from_str(&w, false)
                .map_err(|_| anyhow!("huge_pages: {w:?} is not auto, on, off, true or false"))?,
        };
    }
    if let Some(v) = file.clicks_queue.filter(|_| unset("clicks_queue")) {
        if v == 0 {
            return Err(anyhow!("clicks_queue: must be at least 1"));
        }
        args.clicks_queue = v;
    }
    let c = &mut args.cluster;
    if let Some(v) = file.cluster.filter(|_| unset("cluster")) {
        c.cluster = Some(v);
    }
    if let Some(v) = file.cluster_bucket.filter(|_| unset("cluster_bucket")) {
        c.cluster_bucket = v;
    }
    if let Some(v) = file.cluster_replicas.filter(|_| unset("cluster_replicas")) {
        if !(1..=5).contains(&v) {
            return Err(anyhow!("cluster_replicas: {v} is not from 1 to 5"));
        }
        c.cluster_replicas = v;
    }
    if let Some(v) = file.cluster_dir.filter(|_| unset("cluster_dir")) {
        c.cluster_dir = Some(v);
    }
    if let Some(v) = file.cluster_max_lag.filter(|_| unset("cluster_max_lag")) {
        c.cluster_max_lag = v;
    }
    if let Some(v) = file.node_name.filter(|_| unset("node_name")) {
        c.node_name = Some(v);
    }
    if let Some(v) = file.data_dir.filter(|_| unset("data_dir")) {
        args.data_dir = Some(v);
    }
    if let Some(v) = file.snapshot.filter(|_| unset("snapshot")) {
        args.snapshot = Some(v);
    }
    if let Some(v) = file.threads.filter(|_| unset("threads")) {
        args.threads = Some(v);
    }
    if let Some(v) = file.code_length.filter(|_| unset("code_length")) {
        if !(4..=32).contains(&v) {
            return Err(anyhow!("code_length: {v} is not from 4 to 32"));
        }
        args.code_length = v;
    }
    if let Some(v) = file
        .expired_retention
        .filter(|_| unset("expired_retention"))
    {
        args.expired_retention =
            crate::parse_period(&v).map_err(|e| anyhow!("expired_retention: {e}"))?;
    }
    if let Some(v) = file.stats_retention.filter(|_| unset("stats_retention")) {
        args.stats_retention =
            crate::parse_period(&v).map_err(|e| anyhow!("stats_retention: {e}"))?;
    }
    if let Some(v) = file.clicks_retention.filter(|_| unset("clicks_retention")) {
        args.clicks_retention =
            crate::parse_period(&v).map_err(|e| anyhow!("clicks_retention: {e}"))?;
    }
    take!(clicks_max_bytes, clicks_reserve_bytes);
    if let Some(v) = file.runtime.filter(|_| unset("runtime")) {
        args.runtime = <Shape as clap::ValueEnum>::from_str(&v, false)
            .map_err(|_| anyhow!("runtime: {v:?} is not per-core or multi-thread"))?;
    }
    // Domain sections add to the per-domain flags; a flag for the same domain and field wins
    // because it comes later when the policies are built.
    for (domain, section) in file.domain {
        let add = |list: &mut Vec<String>, url: Option<String>| {
            if let Some(u) = url {
                list.insert(0, format!("{domain}={u}"));
            }
        };
        add(&mut args.expired_urls, section.expired_url);
        add(&mut args.not_found_urls, section.not_found_url);
        add(&mut args.root_urls, section.root_url);
    }
    Ok(())
}

/// The effective settings, one `key = value` a line (API keys masked).
pub(crate) fn describe(args: &ServeArgs) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k} = {v}\n"));
    let opt = |p: &Option<PathBuf>| {
        p.as_ref()
            .map_or("(none)".into(), |p| p.display().to_string())
    };
    line("data_dir", opt(&args.data_dir));
    line("snapshot", opt(&args.snapshot));
    line("listen", args.listen.to_string());
    line("admin_listen", args.admin_listen.to_string());
    line("domains", format!("{:?}", args.domains));
    line("api_keys", format!("{} configured", args.api_keys.len()));
    line("max_body_bytes", args.max_body_bytes.to_string());
    line("code_length", args.code_length.to_string());
    line("expired_retention", format!("{}s", args.expired_retention));
    line(
        "threads",
        args.threads
            .map_or("(number of CPUs)".into(), |t| t.to_string()),
    );
    line(
        "header_read_timeout",
        format!("{}s", args.header_read_timeout),
    );
    line(
        "keep_alive_timeout",
        format!("{}s", args.keep_alive_timeout),
    );
    line("max_header_bytes", args.max_header_bytes.to_string());
    line("max_connections", args.max_connections.to_string());
    line("drain_delay", format!("{}s", args.drain_delay));
    line("shutdown_timeout", format!("{}s", args.shutdown_timeout));
    line("runtime", format!("{:?}", args.runtime));
    line("trusted_proxies", format!("{:?}", args.trusted_proxies));
    line("access_log", args.access_log.to_string());
    line("no_stats", args.no_stats.to_string());
    line("clicks_queue", args.clicks_queue.to_string());
    line(
        "compact_journal_bytes",
        args.compact_journal_bytes.to_string(),
    );
    line(
        "compact_overlay_links",
        args.compact_overlay_links.to_string(),
    );
    line(
        "huge_pages",
        format!("{:?}", args.huge_pages).to_lowercase(),
    );
    line("stats_retention", format!("{}s", args.stats_retention));
    line("clicks_retention", format!("{}s", args.clicks_retention));
    line("clicks_max_bytes", args.clicks_max_bytes.to_string());
    line(
        "clicks_reserve_bytes",
        args.clicks_reserve_bytes.to_string(),
    );
    let c = &args.cluster;
    line(
        "cluster",
        c.cluster.clone().unwrap_or_else(|| "(none)".into()),
    );
    line("cluster_bucket", c.cluster_bucket.clone());
    line("cluster_replicas", c.cluster_replicas.to_string());
    line("cluster_dir", opt(&c.cluster_dir));
    line("cluster_max_lag", c.cluster_max_lag.to_string());
    line(
        "node_name",
        c.node_name
            .clone()
            .unwrap_or_else(|| "(host name and pid)".into()),
    );
    for (k, v) in [
        ("expired_url", &args.expired_urls),
        ("not_found_url", &args.not_found_urls),
        ("root_url", &args.root_urls),
    ] {
        for e in v {
            line(k, e.clone());
        }
    }
    out
}
