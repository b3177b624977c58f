//! `serve`'s settings, checked: every flag turned into the value the node is built from, with
//! nothing opened, created or connected, so a mistake in them leaves no trace (no data
//! directory, no API-key file) and `config check` reports exactly what `serve` would refuse.
use crate::args::{HugePages, ServeArgs, Shape};
use crate::{cluster, test_hooks};
use anyhow::{anyhow, Result};
use duanlian_clicks::RecorderOptions;
use duanlian_cluster::ClusterOptions;
use duanlian_link::Domain;
use duanlian_server::{DomainPolicy, Options, RuntimeShape, TrustedProxies};
use duanlian_store::AutoCompact;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What kind of node the settings describe.
pub(crate) enum Kind {
    /// `--snapshot` without `--data-dir`: the file served as it is, reloadable.
    ReadOnly { snapshot: PathBuf },
    /// A data directory that takes writes; `seed` fills it when it has no snapshot yet, and
    /// `reload` is the bulk snapshot SIGHUP loads again.
    DataDir {
        path: PathBuf,
        seed: Seed,
        reload: Option<PathBuf>,
    },
    /// A member of a cluster on NATS JetStream.
    Cluster(Box<ClusterOptions>),
}

/// What an empty data directory starts with.
pub(crate) enum Seed {
    /// The `--snapshot` file.
    File(PathBuf),
    /// `duanlian serve` with no arguments: the built-in sample links, so a first run shows a
    /// redirect.
    Sample,
    Nothing,
}

/// Everything `serve` needs, checked.
pub(crate) struct Settings {
    pub(crate) kind: Kind,
    pub(crate) listener: Options,
    pub(crate) admin_listen: SocketAddr,
    /// Link domains from the settings; empty means the loaded snapshot's.
    pub(crate) domains: Vec<Domain>,
    /// Empty means the data directory's generated key.
    pub(crate) api_keys: Vec<String>,
    pub(crate) max_body_bytes: usize,
    pub(crate) code_length: usize,
    pub(crate) policies: HashMap<Domain, DomainPolicy>,
    pub(crate) proxies: TrustedProxies,
    pub(crate) access_log: bool,
    pub(crate) retention: i64,
    /// `None` with `--no-stats`.
    pub(crate) clicks: Option<RecorderOptions>,
    pub(crate) compaction: AutoCompact,
    pub(crate) huge_pages: HugePages,
    /// Certificates from an ACME CA, into the managed directory `listener.tls` serves.
    pub(crate) acme: Option<duanlian_acme::AcmeOptions>,
}

impl Settings {
    pub(crate) fn check(args: ServeArgs) -> Result<Settings> {
        if args.admin_listen == args.listen && args.listen.port() != 0 {
            return Err(anyhow!(
                "--admin-listen must differ from --listen: the admin API never shares the redirect port"
            ));
        }
        let domains = parse_domains(&args.domains)?;
        let kind = match (&args.cluster.cluster, &args.data_dir, &args.snapshot) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(anyhow!(
                    "--cluster replaces --data-dir and --snapshot: a cluster node loads its snapshot from the cluster (see `duanlian snapshot publish`)"
                ))
            }
            (Some(_), None, None) if domains.is_empty() => {
                return Err(anyhow!(
                    "--cluster needs the link domains (--domain, repeatable): the node starts before it has seen any link"
                ))
            }
            (Some(servers), None, None) => {
                let mut opts = cluster::options(servers, &args.cluster);
                opts.clicks_max_age = Duration::from_secs(args.stats_retention.max(1) as u64);
                Kind::Cluster(Box::new(opts))
            }
            (None, None, Some(snapshot)) => Kind::ReadOnly {
                snapshot: snapshot.clone(),
            },
            (None, data_dir, snapshot) => Kind::DataDir {
                path: data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("duanlian-data")),
                seed: match (snapshot, data_dir) {
                    (Some(seed), _) => Seed::File(seed.clone()),
                    (None, None) => Seed::Sample,
                    (None, Some(_)) => Seed::Nothing,
                },
                reload: snapshot.clone(),
            },
        };
        if args.huge_pages == HugePages::On && !matches!(kind, Kind::ReadOnly { .. }) {
            return Err(anyhow!(
                "--huge-pages applies to a node serving --snapshot without --data-dir"
            ));
        }
        let proxies = TrustedProxies::parse(&args.trusted_proxies)
            .map_err(|e| anyhow!("--trusted-proxy: {e}"))?;
        if args.proxy_protocol && args.trusted_proxies.is_empty() {
            return Err(anyhow!(
                "--proxy-protocol needs --trusted-proxy: only the load balancers named there may send a PROXY header"
            ));
        }
        if let Some(tls_listen) = args.tls_listen {
            if args.tls_cert.is_none() && args.tls_dir.is_none() && args.acme_directory.is_none() {
                return Err(anyhow!(
                    "--tls-listen needs --tls-cert and --tls-key, --tls-dir, or --acme-directory"
                ));
            }
            if tls_listen.port() != 0
                && (tls_listen == args.listen || tls_listen == args.admin_listen)
            {
                return Err(anyhow!(
                    "--tls-listen {tls_listen} is also --listen or --admin-listen: give it an address of its own"
                ));
            }
        }
        let hsts = hsts(&args)?;
        let acme = acme(&args, &kind, &domains)?;
        if !hsts.is_empty() && args.tls_cert.is_none() && args.tls_dir.is_none() && acme.is_none() {
            return Err(anyhow!(
                "--hsts needs HTTPS (--tls-cert and --tls-key, or --tls-dir): browsers ignore the header over plain HTTP"
            ));
        }
        let defaults = Options::default();
        let listener = Options {
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
            proxy_protocol: args.proxy_protocol.then(|| proxies.clone()),
            // Paired here, not by clap: a configuration file's keys are parsed one at a time.
            tls: {
                use duanlian_server::Certificates;
                let certs = match (&args.tls_cert, &args.tls_key, &args.tls_dir) {
                    (Some(_), _, Some(_)) => {
                        return Err(anyhow!("--tls-cert and --tls-dir: give one or the other"))
                    }
                    (Some(cert), Some(key), None) => Some(Certificates::One {
                        cert: cert.clone(),
                        key: key.clone(),
                    }),
                    (Some(_), None, None) => return Err(anyhow!("--tls-cert needs --tls-key")),
                    (None, Some(_), _) => return Err(anyhow!("--tls-key needs --tls-cert")),
                    (None, None, Some(dir)) => Some(Certificates::Dir(dir.clone())),
                    (None, None, None) => None,
                };
                let tls = match (certs, &acme) {
                    (Some(c), None) => Some(duanlian_server::Tls::load(c)?),
                    (None, Some(a)) => Some(duanlian_server::Tls::managed(
                        duanlian_acme::certs_dir(&a.state_dir),
                    )?),
                    (None, None) => None,
                    (Some(_), Some(_)) => {
                        return Err(anyhow!(
                            "--acme-directory and --tls-cert or --tls-dir: give one way to get certificates"
                        ))
                    }
                };
                tls.map(|t| Arc::new(t.with_hsts(hsts)))
            },
            tls_listen: args.tls_listen,
        };
        let mut api_keys: Vec<String> = args.api_keys.iter().map(|k| k.trim().into()).collect();
        api_keys.retain(|k| !k.is_empty());
        // Only where the counts can be kept: a read-only node has no data directory.
        let clicks = (!args.no_stats && !matches!(kind, Kind::ReadOnly { .. }))
            .then(|| recorder_options(&args));
        Ok(Settings {
            policies: domain_policies(&args)?,
            proxies,
            kind,
            listener,
            admin_listen: args.admin_listen,
            domains,
            api_keys,
            max_body_bytes: args.max_body_bytes,
            code_length: usize::from(args.code_length),
            access_log: args.access_log,
            retention: args.expired_retention,
            clicks,
            compaction: AutoCompact {
                journal_bytes: (args.compact_journal_bytes > 0)
                    .then_some(args.compact_journal_bytes),
                overlay_links: (args.compact_overlay_links > 0)
                    .then_some(args.compact_overlay_links),
            },
            huge_pages: args.huge_pages,
            acme,
        })
    }
}

/// The click buffers and writer as the flags set them, for either kind of recorder.
fn recorder_options(args: &ServeArgs) -> RecorderOptions {
    RecorderOptions {
        capacity: args.clicks_queue as usize,
        writer_delay: test_hooks::delay("DUANLIAN_TEST_CLICKS_WRITER_DELAY_MS"),
        retention: Some(args.stats_retention),
        log_retention: Some(args.clicks_retention.min(args.stats_retention)),
        max_log_bytes: (args.clicks_max_bytes > 0).then_some(args.clicks_max_bytes),
        reserve_bytes: args.clicks_reserve_bytes,
        ..Default::default()
    }
}

fn parse_domains(flags: &[String]) -> Result<Vec<Domain>> {
    let mut domains = Vec::new();
    for d in flags {
        let d = Domain::parse(d).map_err(|e| anyhow!("--domain {d}: {e}"))?;
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    Ok(domains)
}

/// `--acme-directory` and its companions, checked: certificates need a data directory to live
/// in, the challenge needs plain HTTP on --listen, and the link domains must be known at start.
fn acme(
    args: &ServeArgs,
    kind: &Kind,
    domains: &[Domain],
) -> Result<Option<duanlian_acme::AcmeOptions>> {
    let Some(directory) = &args.acme_directory else {
        if !args.acme_contacts.is_empty() || args.acme_ca_cert.is_some() {
            return Err(anyhow!(
                "--acme-contact and --acme-ca-cert need --acme-directory"
            ));
        }
        return Ok(None);
    };
    if !(directory.starts_with("https://") || directory.starts_with("http://")) {
        return Err(anyhow!(
            "--acme-directory {directory}: expected the CA's directory URL (https://...)"
        ));
    }
    let state_dir = match kind {
        Kind::DataDir { path, .. } => path.join("acme"),
        Kind::ReadOnly { .. } => {
            return Err(anyhow!(
                "--acme-directory needs --data-dir (or --cluster): the account key and certificates are kept there"
            ))
        }
        // The bucket keeps them; each node mirrors them under its cluster directory.
        Kind::Cluster(opts) => opts.dir.join("acme"),
    };
    if args.tls_listen.is_none() {
        return Err(anyhow!(
            "--acme-directory needs --tls-listen: the CA's HTTP-01 challenge is answered in plain HTTP on --listen, HTTPS is served on --tls-listen"
        ));
    }
    if domains.is_empty() {
        return Err(anyhow!(
            "--acme-directory needs the link domains (--domain, repeatable): they are the names ordered"
        ));
    }
    for c in &args.acme_contacts {
        if !c.starts_with("mailto:") {
            return Err(anyhow!(
                "--acme-contact {c}: expected a mailto: URI (mailto:ops@example.cn)"
            ));
        }
    }
    Ok(Some(duanlian_acme::AcmeOptions {
        directory: directory.clone(),
        contact: args.acme_contacts.clone(),
        domains: domains.iter().map(|d| d.as_str().to_string()).collect(),
        state_dir,
        ca_cert: args.acme_ca_cert.clone(),
    }))
}

/// `--hsts DOMAIN=PERIOD`: the max-age of each domain's Strict-Transport-Security header, in
/// seconds; a later value for a domain wins.
fn hsts(args: &ServeArgs) -> Result<Vec<(String, u64)>> {
    let mut out: Vec<(String, u64)> = Vec::new();
    for v in &args.hsts {
        let (d, period) = v.split_once('=').ok_or_else(|| {
            anyhow!("--hsts {v}: expected DOMAIN=PERIOD (such as go.example.cn=365d)")
        })?;
        let domain = Domain::parse(d).map_err(|e| anyhow!("--hsts {v}: {e}"))?;
        let secs = duanlian_link::parse_duration(period)
            .filter(|s| *s >= 0)
            .ok_or_else(|| {
                anyhow!("--hsts {v}: {period} is not a period (365d, 12h, seconds...)")
            })?;
        out.retain(|(name, _)| name != domain.as_str());
        out.push((domain.as_str().to_string(), secs as u64));
    }
    Ok(out)
}

/// `--expired-url`, `--not-found-url` and `--root-url`, grouped by domain; a later value for the
/// same domain and field wins (flags come after the configuration file's sections).
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
