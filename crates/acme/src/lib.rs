//! Certificates for the link domains from an ACME certificate authority (RFC 8555: Let's
//! Encrypt, ZeroSSL, a company's own CA, pebble in tests), without anyone placing files.
//!
//! Each domain is ordered on its own (one domain's failure holds up no other) and proved with
//! the HTTP-01 challenge: the CA fetches `http://DOMAIN/.well-known/acme-challenge/TOKEN`, which
//! the redirect listener answers in plain HTTP from what [`Challenges`] was given. The account
//! and certificates are kept by a [`Store`]: [`DirStore`] writes `NAME.crt` and `NAME.key` (mode
//! 0600) into [`certs_dir`], the directory the TLS listener serves, and `on_issued` is called so
//! it reloads them; a cluster keeps them in its bucket, and lets one node order at a time. A certificate is renewed
//! when 30 days or a third of its lifetime remain, whichever is less (so short-lived
//! certificates renew in time too); a failed order is retried after 1 minute, doubling up to
//! 6 hours.
//!
//! ```no_run
//! use duanlian_acme::{Acme, AcmeOptions, Challenges, DirStore};
//! # struct Board;
//! # impl Challenges for Board {
//! #     async fn publish(&self, _: &str, _: &str) {}
//! #     async fn withdraw(&self, _: &str) {}
//! # }
//! # async fn run() {
//! let opts = AcmeOptions {
//!     directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
//!     contact: vec!["mailto:ops@example.cn".into()],
//!     domains: vec!["go.example.cn".into()],
//!     state_dir: "/var/lib/duanlian/acme".into(),
//!     ca_cert: None,
//! };
//! let store = DirStore::new(opts.state_dir.clone());
//! Acme::new(opts, store, Board, Box::new(|| { /* reload TLS */ }))
//!     .run()
//!     .await;
//! # }
//! ```
mod http;
mod schedule;
mod store;

pub use schedule::{backoff, renew_at};
pub use store::{
    account_of, account_record, certs_dir, leaf_validity, write_certificate, DirStore,
};

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// Where challenge answers go: the redirect listener serves each token's key authorization at
/// `/.well-known/acme-challenge/TOKEN` until it is withdrawn. In a cluster, every node must
/// serve it before `publish` returns (the CA may ask any of them).
pub trait Challenges: Send + Sync + 'static {
    /// Serve `key_authorization` for `token`.
    fn publish(&self, token: &str, key_authorization: &str) -> impl Future<Output = ()> + Send;
    /// Stop serving `token`.
    fn withdraw(&self, token: &str) -> impl Future<Output = ()> + Send;
}

/// Where the account and the certificates are kept, and who may order.
pub trait Store: Send + Sync + 'static {
    /// The account stored for `directory` (its JSON), if any.
    fn account(
        &self,
        directory: &str,
    ) -> impl Future<Output = Result<Option<String>, AcmeError>> + Send;
    /// Keeps the account for `directory`.
    fn save_account(
        &self,
        directory: &str,
        json: &str,
    ) -> impl Future<Output = Result<(), AcmeError>> + Send;
    /// The stored certificate's validity for `domain` (not before, not after), if any.
    fn validity(&self, domain: &str) -> impl Future<Output = Option<(i64, i64)>> + Send;
    /// Keeps a new chain and key for `domain`.
    fn save_certificate(
        &self,
        domain: &str,
        chain: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), AcmeError>> + Send;
    /// Whether this node may order `domain` now, for at most `ttl` (in a cluster, one node at
    /// a time: the others find the certificate in the store when it is done).
    fn claim(&self, domain: &str, ttl: Duration) -> impl Future<Output = bool> + Send;
    /// Gives the claim on `domain` back.
    fn release(&self, domain: &str) -> impl Future<Output = ()> + Send;
}

/// What to order, from where, and where to keep it.
#[derive(Debug, Clone)]
pub struct AcmeOptions {
    /// The CA's directory URL.
    pub directory: String,
    /// Contact URIs for the account (`mailto:ops@example.cn`): where the CA writes about
    /// expiring certificates and policy changes.
    pub contact: Vec<String>,
    /// The names to hold certificates for.
    pub domains: Vec<String>,
    /// The account key and the certificates ([`certs_dir`]) live here.
    pub state_dir: PathBuf,
    /// Trust this CA certificate (PEM) for the ACME server's own HTTPS, instead of the system's
    /// roots: for a company CA or a test server.
    pub ca_cert: Option<PathBuf>,
}

/// Why an account or an order failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// A file of the state directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The stored account is not one this version can read.
    #[error("{path}: not an ACME account file: {reason}")]
    Account {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The CA refused or could not be reached.
    #[error("ACME: {0}")]
    Ca(#[from] instant_acme::Error),
    /// The store (a cluster's bucket) could not keep or give what was asked.
    #[error("keeping the ACME account or a certificate: {0}")]
    Store(String),
    /// The order ended without a certificate.
    #[error("{domain}: {reason}")]
    Order {
        /// The name ordered.
        domain: String,
        /// What the CA said, or which step failed.
        reason: String,
    },
}

/// The certificate robot of one node.
pub struct Acme<S, C> {
    opts: AcmeOptions,
    store: S,
    challenges: C,
    on_issued: Box<dyn Fn() + Send + Sync>,
}

impl<S, C> std::fmt::Debug for Acme<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme").field("opts", &self.opts).finish()
    }
}

/// How long to wait between looks when nothing is due.
const IDLE: i64 = 3600;
/// How long a claim to order a domain holds (an order takes seconds; a node that dies holding
/// one delays the others by at most this).
const CLAIM: Duration = Duration::from_secs(600);
/// How soon to look again at a domain another node is ordering.
const CLAIMED_ELSEWHERE: i64 = 30;

impl<S: Store, C: Challenges> Acme<S, C> {
    /// A robot for `opts`, keeping what it gets in `store`; `on_issued` runs after each new
    /// certificate is stored.
    pub fn new(
        opts: AcmeOptions,
        store: S,
        challenges: C,
        on_issued: Box<dyn Fn() + Send + Sync>,
    ) -> Acme<S, C> {
        Acme {
            opts,
            store,
            challenges,
            on_issued,
        }
    }

    /// Orders what is missing or due, then sleeps until the next renewal or retry; forever.
    pub async fn run(self) {
        let mut tries = 0;
        let account = loop {
            match self.account().await {
                Ok(a) => break a,
                Err(e) => {
                    tries += 1;
                    let wait = backoff(tries);
                    tracing::warn!(error = %e, retry_in_s = wait.as_secs(), "ACME account unavailable");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        // Per domain: failures in a row, and when to try again.
        let mut failed: HashMap<String, (u32, i64)> = HashMap::new();
        loop {
            let now = duanlian_link::now_secs();
            let mut next = now + IDLE;
            for domain in &self.opts.domains {
                let due = match self.store.validity(domain).await {
                    Some((from, until)) => renew_at(from, until),
                    None => now,
                };
                let at = due.max(failed.get(domain).map_or(0, |f| f.1));
                if at > now {
                    next = next.min(at);
                    continue;
                }
                if !self.store.claim(domain, CLAIM).await {
                    next = next.min(now + CLAIMED_ELSEWHERE);
                    continue;
                }
                let ordered = self.order(&account, domain).await;
                self.store.release(domain).await;
                match ordered {
                    Ok(until) => {
                        failed.remove(domain);
                        tracing::info!(%domain, not_after = %duanlian_link::format_rfc3339(until), "ACME certificate issued");
                        (self.on_issued)();
                        if let Some((from, until)) = self.store.validity(domain).await {
                            next = next.min(renew_at(from, until));
                        }
                    }
                    Err(e) => {
                        let f = failed.entry(domain.clone()).or_insert((0, 0));
                        f.0 += 1;
                        let wait = backoff(f.0);
                        f.1 = duanlian_link::now_secs() + wait.as_secs() as i64;
                        next = next.min(f.1);
                        tracing::warn!(%domain, error = %e, failures = f.0, retry_in_s = wait.as_secs(), "ACME order failed");
                    }
                }
            }
            let wait = (next - duanlian_link::now_secs()).max(1);
            tokio::time::sleep(Duration::from_secs(wait as u64)).await;
        }
    }

    /// The stored account for this directory, or a new one (then stored).
    async fn account(&self) -> Result<Account, AcmeError> {
        let client = http::Client::new(self.opts.ca_cert.as_deref())?;
        let builder = Account::builder_with_http(Box::new(client));
        let directory = &self.opts.directory;
        if let Some(json) = self.store.account(directory).await? {
            let credentials = serde_json::from_str(&json).map_err(|e| AcmeError::Account {
                path: PathBuf::from("account"),
                reason: e.to_string(),
            })?;
            return Ok(builder.from_credentials(credentials).await?);
        }
        let contact: Vec<&str> = self.opts.contact.iter().map(String::as_str).collect();
        let (account, credentials) = builder
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                self.opts.directory.clone(),
                None,
            )
            .await?;
        let json = serde_json::to_string(&credentials).map_err(|e| AcmeError::Account {
            path: PathBuf::from("account"),
            reason: e.to_string(),
        })?;
        self.store.save_account(directory, &json).await?;
        tracing::info!(directory = %self.opts.directory, id = account.id(), "ACME account created");
        Ok(account)
    }

    /// One order for `domain`, through to the files; the new certificate's end of validity.
    async fn order(&self, account: &Account, domain: &str) -> Result<i64, AcmeError> {
        let fail = |reason: String| AcmeError::Order {
            domain: domain.to_string(),
            reason,
        };
        let ids = [Identifier::Dns(domain.to_string())];
        let mut order = account.new_order(&NewOrder::new(&ids)).await?;
        let mut published = Vec::new();
        let mut authorizations = order.authorizations();
        let mut proved = Ok(());
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    proved = Err(fail(format!("authorization is {other:?}")));
                    break;
                }
            }
            let Some(mut challenge) = authz.challenge(ChallengeType::Http01) else {
                proved = Err(fail("the CA offers no http-01 challenge".into()));
                break;
            };
            let key_authorization = challenge.key_authorization();
            self.challenges
                .publish(&challenge.token, key_authorization.as_str())
                .await;
            published.push(challenge.token.clone());
            if let Err(e) = challenge.set_ready().await {
                proved = Err(e.into());
                break;
            }
        }
        let issued = match proved {
            Ok(()) => self.finish(&mut order, domain).await,
            Err(e) => Err(e),
        };
        for token in &published {
            self.challenges.withdraw(token).await;
        }
        issued
    }

    async fn finish(
        &self,
        order: &mut instant_acme::Order,
        domain: &str,
    ) -> Result<i64, AcmeError> {
        let retry = RetryPolicy::new().timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retry).await?;
        if status != OrderStatus::Ready {
            let why = order
                .state()
                .error
                .as_ref()
                .map_or_else(|| format!("order is {status:?}"), |p| p.to_string());
            return Err(AcmeError::Order {
                domain: domain.to_string(),
                reason: why,
            });
        }
        let key = order.finalize().await?;
        let chain = order.poll_certificate(&retry).await?;
        let (_, until) = leaf_validity(chain.as_bytes()).ok_or_else(|| AcmeError::Order {
            domain: domain.to_string(),
            reason: "the CA sent no readable certificate".into(),
        })?;
        self.store.save_certificate(domain, &chain, &key).await?;
        Ok(until)
    }
}
