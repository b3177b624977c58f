//! TLS for the redirect listener: certificates read from PEM files and checked before the node
//! serves anything, swapped on reload without dropping a connection, session tickets with
//! rotating keys, and the counts an operator watches (handshakes, resumptions, expiry).
//!
//! ```no_run
//! use duanlian_server::{Certificates, Tls};
//! let tls = Tls::load(Certificates::Dir("/etc/duanlian/tls".into()))?;
//! // ...later, after new files were put in place (SIGHUP does this):
//! let served = tls.reload()?;
//! # Ok::<(), duanlian_server::TlsError>(())
//! ```
mod certs;
mod tickets;

pub use certs::CertificateInfo;
pub use tickets::{TicketKey, Tickets};

use arc_swap::ArcSwap;
use certs::{Loaded, Strict};
use hyper::header::HeaderValue;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Why a certificate or key could not be used; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read or holds no PEM block of the kind wanted.
    #[error("{path}: {what}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        what: String,
    },
    /// The key is of a kind or form the TLS library cannot sign with.
    #[error("{path}: not a usable private key: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// The library's reason.
        reason: rustls::Error,
    },
    /// The TLS library refused the configuration itself.
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
    /// The key is not the one the certificate was issued for.
    #[error("{key} is not the key of the certificate in {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate's validity ended: every client would refuse it.
    #[error("{path}: the certificate expired on {on}")]
    Expired {
        /// The certificate file.
        path: PathBuf,
        /// When (RFC 3339, UTC).
        on: String,
    },
    /// Other users may read (or its group may write) the private key.
    #[error("{path}: a private key other users can read (mode {mode:04o}): chmod 600 it (640 for a group such as ssl-cert)")]
    KeyMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Where the listener's certificates come from.
#[derive(Debug, Clone)]
pub enum Certificates {
    /// One chain (PEM, leaf first) and its key (PEM: PKCS#8, SEC1 or PKCS#1) for every client.
    One {
        /// The certificate chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A directory of `NAME.crt` and `NAME.key` pairs, `NAME` a link domain
    /// (`go.example.cn`), a wildcard written with `_` (`_.example.cn` for `*.example.cn`, one
    /// label), or `default` (for clients that name no server). A client that names a server
    /// with no certificate here is refused in the handshake.
    Dir(PathBuf),
}

/// How handshakes ended, and reloads; read by the metrics.
#[derive(Debug, Default)]
pub struct TlsCounts {
    /// Full handshakes (a signature each).
    pub full: AtomicU64,
    /// Resumed sessions (a ticket or cached session, no signature).
    pub resumed: AtomicU64,
    /// Handshakes that failed (a client that gave up, spoke plain HTTP, or offered nothing in
    /// common; including those below).
    pub failed: AtomicU64,
    /// Handshakes cut at the header timeout.
    pub timed_out: AtomicU64,
    /// Clients that asked for a name with no certificate (refused in the handshake).
    pub unknown_name: AtomicU64,
    /// Reloads that took effect.
    pub reloads_ok: AtomicU64,
    /// Reloads refused (a bad file: nothing changed).
    pub reloads_failed: AtomicU64,
}

/// Seconds between session-ticket key rotations; a ticket opens for one to two of them.
const TICKET_PERIOD: u32 = 6 * 3600;

/// The redirect listener's TLS: what it serves now, and how to serve something else.
#[derive(Debug)]
pub struct Tls {
    source: Certificates,
    strict: Strict,
    current: Arc<Current>,
    config: Arc<ServerConfig>,
    tickets: Arc<Tickets>,
    hsts: HashMap<Box<str>, HeaderValue>,
    /// One reload at a time: two at once could leave the older files in place.
    reloading: Mutex<()>,
}

/// The certificates in use, which the handshake reads and a reload replaces.
#[derive(Debug)]
struct Current {
    loaded: ArcSwap<Loaded>,
    counts: TlsCounts,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let found = self.loaded.load().resolve(hello.server_name()).cloned();
        if found.is_none() {
            self.counts.unknown_name.fetch_add(1, Ordering::Relaxed);
        }
        found
    }
}

impl Tls {
    /// Reads and checks every certificate of `source`: TLS 1.3 and 1.2, ALPN `http/1.1`,
    /// session tickets.
    pub fn load(source: Certificates) -> Result<Tls, TlsError> {
        Tls::with_strictness(source, Strict::Yes)
    }

    /// A directory that a certificate robot (ACME) fills: it may start empty, and a certificate
    /// that cannot be served (expired, half written) is skipped with a warning, not refused.
    /// Clients asking for a name without a certificate are refused in the handshake until one
    /// is there and [`Tls::reload`] has run.
    pub fn managed(dir: PathBuf) -> Result<Tls, TlsError> {
        Tls::with_strictness(Certificates::Dir(dir), Strict::Lenient)
    }

    fn with_strictness(source: Certificates, strict: Strict) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = Arc::new(Current {
            loaded: ArcSwap::from_pointee(Loaded::load(&source, &provider, strict)?),
            counts: TlsCounts::default(),
        });
        let tickets = Arc::new(Tickets::new(TICKET_PERIOD));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.ticketer = tickets.clone();
        Ok(Tls {
            source,
            strict,
            current,
            config: Arc::new(config),
            tickets,
            hsts: HashMap::new(),
            reloading: Mutex::new(()),
        })
    }

    /// Sends `Strict-Transport-Security: max-age=SECONDS` on every answer over TLS to each
    /// domain given (never over plain HTTP, where browsers ignore it).
    pub fn with_hsts(mut self, domains: impl IntoIterator<Item = (String, u64)>) -> Tls {
        for (domain, max_age) in domains {
            if let Ok(v) = HeaderValue::from_str(&format!("max-age={max_age}")) {
                self.hsts.insert(domain.to_ascii_lowercase().into(), v);
            }
        }
        self
    }

    /// Reads the certificates again and swaps them in; handshakes under way finish with the
    /// old ones, open connections are not touched. On any error nothing changes. Reads files:
    /// call it off the redirect threads.
    pub fn reload(&self) -> Result<Vec<CertificateInfo>, TlsError> {
        let _one = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let counts = &self.current.counts;
        match Loaded::load(&self.source, self.config.crypto_provider(), self.strict) {
            Ok(loaded) => {
                let info = loaded.info.clone();
                self.current.loaded.store(Arc::new(loaded));
                counts.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(certificates = info.len(), "TLS certificates reloaded");
                Ok(info)
            }
            Err(e) => {
                counts.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "TLS reload refused; the certificates in use stay");
                Err(e)
            }
        }
    }

    /// The certificates served now.
    pub fn certificates(&self) -> Vec<CertificateInfo> {
        self.current.loaded.load().info.clone()
    }

    /// Handshake and reload counts.
    pub fn counts(&self) -> &TlsCounts {
        &self.current.counts
    }

    /// The session-ticket keys (a cluster installs shared ones).
    pub fn tickets(&self) -> &Arc<Tickets> {
        &self.tickets
    }

    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }

    pub(crate) fn has_hsts(&self) -> bool {
        !self.hsts.is_empty()
    }

    /// The HSTS header for a request's `Host`, if its domain has one.
    pub(crate) fn hsts_for<B>(&self, req: &hyper::Request<B>) -> Option<&HeaderValue> {
        let host = req.headers().get(hyper::header::HOST)?;
        // The same normal form the redirect looks links up by.
        let mut buf = duanlian_link::HostBuf::default();
        self.hsts
            .get(duanlian_link::host_key(host.as_bytes(), &mut buf)?)
    }

    /// Counts how a handshake ended.
    pub(crate) fn count_handshake(&self, conn: &rustls::ServerConnection) {
        let c = &self.current.counts;
        match conn.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => &c.resumed,
            _ => &c.full,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_failure(&self, timed_out: bool) {
        let c = &self.current.counts;
        c.failed.fetch_add(1, Ordering::Relaxed);
        if timed_out {
            c.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}
