//! The admin API: JSON over HTTP/1.1 on its own listener, behind API keys.
mod body;
mod input;
mod links;
mod listing;
mod maintenance;
mod page;
mod problem;
mod qr;
mod routes;
mod stats;
mod upload;

pub(crate) use routes::finish;

use crate::Body;
use bytes::Bytes;
use duanlian_index::Index;
use duanlian_link::Domain;
use duanlian_write::Writes;
use hyper::{Request, Response};
use problem::Problem;
use std::sync::Arc;

/// Admin API settings.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// The link domains links may be created on; the first is the default.
    pub domains: Vec<Domain>,
    /// Accepted API keys (`Authorization: Bearer KEY` or `X-Api-Key: KEY`). With none, every
    /// request is refused.
    pub api_keys: Vec<String>,
    /// Largest request body accepted, in bytes. Default is 8 MiB (a full batch of 10,000 links).
    pub max_body_bytes: usize,
    /// Length of generated codes when a request does not say. Default is 7.
    pub code_length: usize,
    /// Scheme of the `short_url` in answers. Default is `https`.
    pub short_url_scheme: String,
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            domains: Vec::new(),
            api_keys: Vec::new(),
            max_body_bytes: 8 << 20,
            code_length: 7,
            short_url_scheme: "https".into(),
        }
    }
}

/// The admin API's state: the index it reads and the node's writer.
#[derive(Debug)]
pub struct Admin {
    opts: AdminOptions,
    index: Arc<Index>,
    writes: Arc<dyn Writes>,
    metrics: Option<(Arc<crate::Metrics>, Arc<crate::Health>)>,
    reloader: Option<Arc<crate::Reloader>>,
    tls: Option<Arc<crate::Tls>>,
    stats: Option<Arc<duanlian_clicks::Stats>>,
}

type Answer = Result<Response<Body>, Problem>;

/// A request body the admin API can read: hyper's on a connection, or any other (a
/// `Full<Bytes>` in a test that calls [`Admin::handle`] in-process).
pub trait RequestBody:
    hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + 'static
{
}

impl<T> RequestBody for T where
    T: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static
{
}

impl Admin {
    /// The admin API of a node that reads from `index` and writes through `writes` (the data
    /// directory's store, a cluster's bucket, or [`duanlian_write::ReadOnly`]).
    pub fn new(opts: AdminOptions, index: Arc<Index>, writes: Arc<dyn Writes>) -> Admin {
        Admin {
            opts,
            index,
            writes,
            metrics: None,
            reloader: None,
            tls: None,
            stats: None,
        }
    }

    /// Answers `GET /api/v1/links/{domain}/{code}/stats` from `stats`.
    pub fn with_stats(mut self, stats: Arc<duanlian_clicks::Stats>) -> Admin {
        self.stats = Some(stats);
        self
    }

    /// Enables `POST /api/v1/admin/snapshot`, loading a bulk snapshot.
    pub fn with_reloader(mut self, reloader: Arc<crate::Reloader>) -> Admin {
        self.reloader = Some(reloader);
        self
    }

    /// Lists `tls`'s certificates at `GET /admin/tls` and reloads them at
    /// `POST /admin/tls/reload`.
    pub fn with_tls(mut self, tls: Arc<crate::Tls>) -> Admin {
        self.tls = Some(tls);
        self
    }

    /// Serves `metrics` at `/metrics` (no API key: Prometheus scrapes without one; keep the
    /// admin listener on an internal address).
    pub fn with_metrics(
        mut self,
        metrics: Arc<crate::Metrics>,
        health: Arc<crate::Health>,
    ) -> Admin {
        self.metrics = Some((metrics, health));
        self
    }

    /// Answers one admin request. Every failure is a problem+json answer, never a panic.
    pub async fn handle<B: RequestBody>(&self, req: Request<B>) -> Response<Body> {
        match self.route(req).await {
            Ok(r) => r,
            Err(p) => p.response(),
        }
    }
}
