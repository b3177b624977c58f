//! duanlian's HTTP front end: the redirect listener.
//!
//! `GET /{code}` with a `Host` naming a link domain answers the link's redirect status and
//! `Location`; unknown links are 404, expired ones 410, other methods 405. The answer is built
//! by [`respond`], a plain function of the request and the [`Index`], so it can be tested and
//! benchmarked without sockets; [`run`] puts it behind hyper 1 on real listeners.
//!
//! The [`Admin`] API (JSON, API keys, problem+json errors) runs on a second listener and
//! runtime ([`spawn_admin`]), so writes and their fsyncs never share a thread with redirects.
//!
//! ```no_run
//! use duanlian_server::{run, Health, Options, Redirector};
//! use std::sync::Arc;
//!
//! let index = Arc::new(duanlian_index::Index::empty());
//! let opts = Options { listen: "127.0.0.1:8080".parse()?, ..Options::default() };
//! let health = Arc::new(Health::default());
//! let redirector = Redirector::new(index).with_health(health.clone());
//! run(Arc::new(redirector), &opts, health)?; // until SIGINT or SIGTERM, then drains
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
// Two `unsafe` blocks, both in listen/accept.rs: registering the redirect listener with the
// reactor, and `TCP_DEFER_ACCEPT` on it.
#![deny(unsafe_code)]

mod admin;
mod listen;
mod metrics;
mod proxy;
mod proxy_protocol;
mod redirect;
mod reload;
mod tls;

pub use admin::{Admin, AdminOptions, RequestBody};
pub use listen::{
    run, serve_connection, spawn_admin, Answer, FixedRedirect, Health, Options, RuntimeShape,
};
pub use metrics::Metrics;
pub use proxy::TrustedProxies;
pub use redirect::{
    respond, respond_from, AcmeAnswers, Body, DomainPolicy, Redirector, DEFAULT_RETENTION,
};
pub use reload::{ReloadError, Reloaded, Reloader};
pub use tls::{CertificateInfo, Certificates, TicketKey, Tickets, Tls, TlsCounts, TlsError};

pub use duanlian_index::Index;
