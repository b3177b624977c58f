//! What the redirect listener answers with, and how an answer becomes hyper's reply.
use crate::redirect::{respond_from, Body, DirectRead, Redirector};
use hyper::{Request, Response};
use std::convert::Infallible;
use std::future::ready;
use std::net::SocketAddr;
use std::time::Instant;

/// What the redirect listener answers with. [`Redirector`] is the real thing; [`FixedRedirect`]
/// is the benchmark floor: the same server, no lookup. Generic (not `dyn`) so the real path pays
/// nothing for the seam.
pub trait Answer: Send + Sync + 'static {
    /// The response to one request from `peer` (unknown for in-process connections).
    fn answer<B>(&self, req: &Request<B>, peer: Option<SocketAddr>) -> Response<Body>;

    /// Whether any answer may be marked for [`Answer::answer_later`]; connections of answers
    /// that never are get the plain service, without the check.
    fn may_defer(&self) -> bool {
        false
    }

    /// A second, asynchronous look at an answer marked as needing I/O (a cluster node's direct
    /// read of its bucket on a miss); nothing else ever comes here.
    fn answer_later<'a, B: Send + Sync + 'a>(
        &'a self,
        _req: &'a Request<B>,
        _peer: Option<SocketAddr>,
        first: Response<Body>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send + 'a {
        ready(first)
    }
}

/// A response now (every redirect), or after I/O (a miss marked for a direct read).
pub(super) enum Reply {
    Now(Option<Response<Body>>),
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>),
}

impl std::future::Future for Reply {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut *self {
            Reply::Now(res) => std::task::Poll::Ready(Ok(res.take().unwrap_or_default())),
            Reply::Later(fut) => fut.as_mut().poll(cx).map(Ok),
        }
    }
}

impl Answer for Redirector {
    #[inline]
    fn answer<B>(&self, req: &Request<B>, peer: Option<SocketAddr>) -> Response<Body> {
        // One place builds the response, so it is built where it is returned: built in two
        // match arms it was moved twice more (two `memcpy` calls a request).
        let started = self
            .metrics()
            .and_then(|metrics| metrics.sample().then(Instant::now));
        let res = respond_from(self, req, peer);
        if let Some(metrics) = self.metrics() {
            // A deferred answer is counted when it is final.
            if res.extensions().get::<DirectRead>().is_none() {
                metrics.record(res.status().as_u16());
            }
            if let Some(t) = started {
                metrics.observe_latency(t.elapsed());
            }
        }
        if let (Some(proxies), Some(peer)) = (self.access_log(), peer) {
            tracing::info!(
                target: "access",
                client = %proxies.client(peer, req.headers()),
                proto = proxies.proto(peer, req.headers()),
                peer = %peer,
                method = %req.method(),
                host = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(""),
                path = req.uri().path(),
                status = res.status().as_u16(),
            );
        }
        res
    }

    fn may_defer(&self) -> bool {
        self.may_defer()
    }

    async fn answer_later<'a, B: Send + Sync + 'a>(
        &'a self,
        req: &'a Request<B>,
        peer: Option<SocketAddr>,
        first: Response<Body>,
    ) -> Response<Body> {
        let res = self.second_chance(req, peer, first).await;
        if let Some(metrics) = self.metrics() {
            metrics.record(res.status().as_u16());
        }
        res
    }
}

/// Answers every request with the same `302`: the cost of the server around the lookup.
#[derive(Debug, Clone)]
pub struct FixedRedirect(pub hyper::header::HeaderValue);

impl Answer for FixedRedirect {
    #[inline]
    fn answer<B>(&self, _req: &Request<B>, _peer: Option<SocketAddr>) -> Response<Body> {
        let mut r = Response::new(Body::default());
        *r.status_mut() = hyper::StatusCode::FOUND;
        r.headers_mut()
            .insert(hyper::header::LOCATION, self.0.clone());
        r
    }
}
