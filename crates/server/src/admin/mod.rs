//! The admin API: JSON over HTTP/1.1 on its own listener, behind API keys.
mod input;
mod page;
mod problem;
mod qr;
mod stats;

use crate::Body;
use bytes::Bytes;
use duanlian_index::Index;
use duanlian_link::{format_rfc3339, Code, Domain, Link};
use duanlian_write::{Op, Operation, Outcome, WriteError, Writes, Written};
use http_body_util::{BodyExt, Limited};
use hyper::header::{
    HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use input::Rules;
use problem::{field, Problem};
use serde_json::{json, Value};
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

    fn authorised<B>(&self, req: &Request<B>) -> bool {
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .or_else(|| req.headers().get("x-api-key").map(|v| v.as_bytes()));
        let Some(given) = given else { return false };
        // Every key is compared in full, so timing tells nothing about which key or how much
        // of it matched.
        self.opts.api_keys.iter().fold(false, |ok, key| {
            ok | constant_time_eq(key.as_bytes(), given)
        })
    }

    async fn route<B: RequestBody>(&self, req: Request<B>) -> Answer {
        let path = req.uri().path().to_owned();
        if path == "/metrics" {
            let Some((metrics, health)) = &self.metrics else {
                return Err(Problem::not_found("metrics are not enabled"));
            };
            let mut r = Response::new(Body::new(Bytes::from(metrics.render(
                &self.index,
                health,
                self.writes.as_ref(),
            ))));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return Ok(r);
        }
        if req.method() == Method::GET || req.method() == Method::HEAD {
            if let Some(r) = page::asset(&path, req.headers()) {
                return Ok(r);
            }
        }
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let Some(rest) = segments.strip_prefix(&["api", "v1"]) else {
            return Err(Problem::not_found(format!("no such endpoint: {path}")));
        };
        if !self.authorised(&req) {
            return Err(Problem::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Unauthorized",
                "send an API key as 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'",
            ));
        }
        let method = req.method().clone();
        match (rest, &method) {
            (["domains"], &Method::GET) => Ok(self.domains()),
            (["links"], &Method::GET) => self.list(req.uri().query().unwrap_or("")),
            (["links"], &Method::POST) => self.create(req).await,
            (["links", "batch"], &Method::POST) => self.batch(req).await,
            (["links", domain, code], &Method::GET) => self.get(domain, code),
            (["links", domain, code, image @ ("qr.svg" | "qr.png")], &Method::GET) => {
                self.qr(domain, code, image)
            }
            (["links", domain, code, "stats"], &Method::GET) => {
                self.stats(domain, code, req.uri().query().unwrap_or(""))
            }
            (["links", domain, code], &Method::PATCH) => self.patch(domain, code, req).await,
            (["links", domain, code], &Method::DELETE) => self.delete(domain, code).await,
            (["admin", "compact"], &Method::POST) => self.compact().await,
            (["admin", "snapshot"], &Method::POST) => self.reload(req).await,
            (
                ["domains"]
                | ["links"]
                | ["links", "batch"]
                | ["links", _, _]
                | ["admin", "compact"]
                | ["admin", "snapshot"],
                _,
            ) => Err(Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                format!("{method} is not allowed on {path}"),
            )),
            _ => Err(Problem::not_found(format!("no such endpoint: {path}"))),
        }
    }

    fn rules(&self) -> Rules<'_> {
        Rules {
            domains: &self.opts.domains,
            default_code_length: self.opts.code_length,
        }
    }

    /// Submits a write; the revision is the cluster bucket's, for cluster nodes.
    async fn submit(&self, op: Op) -> Result<(Outcome, Option<u64>), Problem> {
        let Written { outcome, revision } = self.writes.submit(op).await.map_err(write_problem)?;
        Ok((outcome, revision))
    }

    fn link_json(&self, l: &Link) -> Value {
        let now = duanlian_link::now_secs();
        let visits = self
            .index
            .visits()
            .count(l.domain.as_str(), l.code.as_str());
        // As the redirect path decides: a used-up cap answers "expired" as a past expiry does.
        let used_up = l.validity.max_visits.is_some_and(|cap| visits >= cap);
        let (state, expired_by) = match l.validity.state_at(now) {
            duanlian_link::State::Expired => ("expired", Some("time")),
            duanlian_link::State::Active if used_up => ("expired", Some("visits")),
            duanlian_link::State::Active => ("active", None),
            duanlian_link::State::Pending => ("pending", None),
        };
        json!({
            "domain": l.domain.as_str(),
            "code": l.code.as_str(),
            "short_url": format!("{}://{}/{}", self.opts.short_url_scheme, l.domain, l.code),
            "url": &*l.url,
            "redirect": l.redirect.status(),
            "forward_query": match l.forward_query {
                duanlian_link::ForwardQuery::Off => json!(false),
                duanlian_link::ForwardQuery::Add => json!(true),
                duanlian_link::ForwardQuery::Override => json!("override"),
            },
            "valid_since": l.validity.valid_since,
            "expires_at": l.validity.expires_at,
            "expires": l.validity.expires_at.map(format_rfc3339),
            "max_visits": l.validity.max_visits,
            "expired_url": l.expired_url.as_deref(),
            "visits": visits,
            "state": state,
            "expired_by": expired_by,
            "created_at": l.created_at,
            "created": format_rfc3339(l.created_at),
        })
    }

    fn domains(&self) -> Response<Body> {
        let list: Vec<Value> = self
            .opts
            .domains
            .iter()
            .enumerate()
            .map(|(i, d)| json!({"domain": d.as_str(), "default": i == 0}))
            .collect();
        json_response(StatusCode::OK, &json!({ "domains": list }))
    }

    fn list(&self, query: &str) -> Answer {
        let mut domain = None;
        let mut limit = 100usize;
        let mut cursor = None;
        let mut search = None;
        let mut errors = Vec::new();
        for (k, v) in parse_query(query) {
            match k.as_str() {
                "q" if !v.is_empty() => search = Some(v.to_lowercase()),
                "q" => {}
                "domain" => match Domain::parse(&v) {
                    Ok(d) => domain = Some(d),
                    Err(e) => errors.push(field("domain", e)),
                },
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=1000).contains(&n) => limit = n,
                    _ => errors.push(field("limit", "must be a whole number from 1 to 1000")),
                },
                "cursor" => match v.split_once('/') {
                    Some((d, c)) if !d.is_empty() && !c.is_empty() => {
                        cursor = Some((d.to_owned(), c.to_owned()))
                    }
                    _ => errors.push(field("cursor", "is not a cursor from an earlier page")),
                },
                other => errors.push(field(
                    other,
                    "unknown parameter (known: domain, q, limit, cursor)",
                )),
            }
        }
        if !errors.is_empty() {
            return Err(Problem::invalid(errors));
        }
        let domain = domain.as_ref().map(|d| d.as_str());
        let after = cursor.as_ref().map(|(d, c)| (d.as_str(), c.as_str()));
        let (links, next) = match search {
            None => {
                let mut links = self.index.list(domain, after, limit + 1);
                let next = if links.len() > limit {
                    links.truncate(limit);
                    links.last().map(|l| format!("{}/{}", l.domain, l.code))
                } else {
                    None
                };
                (links, next)
            }
            Some(q) => self.search(domain, after, &q, limit),
        };
        let items: Vec<Value> = links.iter().map(|l| self.link_json(l)).collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "links": items, "next_cursor": next }),
        ))
    }

    /// Links whose code or target contains `q` (lowercase), in listing order. A search scans;
    /// one request scans at most `SCAN` links and hands back a cursor to go on from, so a
    /// search over millions of links answers promptly page by page.
    fn search(
        &self,
        domain: Option<&str>,
        after: Option<(&str, &str)>,
        q: &str,
        limit: usize,
    ) -> (Vec<Link>, Option<String>) {
        const SCAN: usize = 200_000;
        const CHUNK: usize = 1_000;
        // Codes and stored URLs are ASCII (the link model percent-encodes the rest), so an ASCII
        // case-insensitive window compare finds what lowercasing both would, without a copy.
        let contains = |hay: &str| {
            hay.as_bytes()
                .windows(q.len())
                .any(|w| w.eq_ignore_ascii_case(q.as_bytes()))
        };
        let cursor = |l: &Link| format!("{}/{}", l.domain, l.code);
        let mut found = Vec::new();
        let mut after: Option<(String, String)> = after.map(|(d, c)| (d.to_owned(), c.to_owned()));
        let mut scanned = 0;
        loop {
            let from = after.as_ref().map(|(d, c)| (d.as_str(), c.as_str()));
            let chunk = self.index.list(domain, from, CHUNK);
            let exhausted = chunk.len() < CHUNK;
            scanned += chunk.len();
            if let Some(l) = chunk.last() {
                after = Some((l.domain.as_str().to_owned(), l.code.as_str().to_owned()));
            }
            for l in chunk {
                if contains(l.code.as_str()) || contains(&l.url) {
                    found.push(l);
                    if found.len() == limit {
                        let next = found.last().map(cursor);
                        return (found, next);
                    }
                }
            }
            if exhausted {
                return (found, None);
            }
            if scanned >= SCAN {
                return (found, after.map(|(d, c)| format!("{d}/{c}")));
            }
        }
    }

    fn key(domain: &str, code: &str) -> Result<(Domain, Code), Problem> {
        let unknown = || Problem::not_found(format!("no link {domain}/{code}"));
        Ok((
            Domain::parse(domain).map_err(|_| unknown())?,
            Code::parse(code).map_err(|_| unknown())?,
        ))
    }

    fn get(&self, domain: &str, code: &str) -> Answer {
        let (d, c) = Self::key(domain, code)?;
        match self.index.get(d.as_str(), c.as_str()) {
            Some(link) => Ok(json_response(StatusCode::OK, &self.link_json(&link))),
            None => Err(Problem::not_found(format!("no link {d}/{c}"))),
        }
    }

    /// The short link as a QR code.
    fn qr(&self, domain: &str, code: &str, image: &str) -> Answer {
        let (d, c) = Self::key(domain, code)?;
        if !self.index.contains(d.as_str(), c.as_str()) {
            return Err(Problem::not_found(format!("no link {d}/{c}")));
        }
        let url = format!("{}://{d}/{c}", self.opts.short_url_scheme);
        let (body, kind) = if image == "qr.svg" {
            (
                Bytes::from(qr::svg(&url).map_err(|e| internal(&e))?),
                "image/svg+xml",
            )
        } else {
            (
                Bytes::from(qr::png(&url).map_err(|e| internal(&e))?),
                "image/png",
            )
        };
        let mut r = Response::new(Body::new(body));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
        Ok(r)
    }

    async fn create<B: RequestBody>(&self, req: Request<B>) -> Answer {
        self.writable()?;
        let body = self.json_body(req).await?;
        let new = input::create(&body, &self.rules()).map_err(Problem::invalid)?;
        match self.submit(Op::Create(vec![new])).await? {
            (Outcome::Created(links), revision) => {
                let link = links.first().ok_or_else(|| internal("no link created"))?;
                let mut r = json_response(
                    StatusCode::CREATED,
                    &with_revision(self.link_json(link), revision),
                );
                if let Ok(loc) =
                    HeaderValue::from_str(&format!("/api/v1/links/{}/{}", link.domain, link.code))
                {
                    r.headers_mut().insert(LOCATION, loc);
                }
                Ok(r)
            }
            _ => Err(internal("unexpected outcome")),
        }
    }

    async fn batch<B: RequestBody>(&self, req: Request<B>) -> Answer {
        self.writable()?;
        let body = self.json_body(req).await?;
        let new = input::batch(&body, &self.rules()).map_err(Problem::invalid)?;
        match self.submit(Op::Create(new)).await? {
            (Outcome::Created(links), revision) => {
                let items: Vec<Value> = links.iter().map(|l| self.link_json(l)).collect();
                Ok(json_response(
                    StatusCode::CREATED,
                    &with_revision(json!({ "links": items }), revision),
                ))
            }
            _ => Err(internal("unexpected outcome")),
        }
    }

    async fn patch<B: RequestBody>(&self, domain: &str, code: &str, req: Request<B>) -> Answer {
        self.writable()?;
        let (domain, code) = Self::key(domain, code)?;
        let body = self.json_body(req).await?;
        let patch = input::patch(&body, &self.rules()).map_err(Problem::invalid)?;
        match self
            .submit(Op::Update {
                domain,
                code,
                patch,
            })
            .await?
        {
            (Outcome::Updated(link), revision) => Ok(json_response(
                StatusCode::OK,
                &with_revision(self.link_json(&link), revision),
            )),
            _ => Err(internal("unexpected outcome")),
        }
    }

    async fn delete(&self, domain: &str, code: &str) -> Answer {
        self.writable()?;
        let (domain, code) = Self::key(domain, code)?;
        let (_, revision) = self
            .submit(Op::Delete {
                domain: domain.clone(),
                code: code.clone(),
            })
            .await?;
        // A link created later under the same code starts with no history.
        if let Some(stats) = &self.stats {
            stats.forget(domain.as_str(), code.as_str());
        }
        let mut r = Response::new(Body::default());
        *r.status_mut() = StatusCode::NO_CONTENT;
        if let Some(rev) = revision {
            r.headers_mut().insert(REVISION, HeaderValue::from(rev));
        }
        Ok(r)
    }

    /// Refuses a write before its body is read, on a node that takes none.
    fn writable(&self) -> Result<(), Problem> {
        match self.writes.refuses(Operation::Write) {
            Some(e) => Err(write_problem(e)),
            None => Ok(()),
        }
    }

    async fn compact(&self) -> Answer {
        if let Some(e) = self.writes.refuses(Operation::Compact) {
            return Err(write_problem(e));
        }
        let result = self.writes.compact().await;
        if let Some((metrics, _)) = &self.metrics {
            metrics.record_compaction("api", result.is_ok());
        }
        let report = result.map_err(write_problem)?;
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "sequence": report.sequence,
                "links": report.links,
                "segments_removed": report.segments_removed,
                "elapsed_ms": report.elapsed.as_millis() as u64,
            }),
        ))
    }

    async fn reload<B: RequestBody>(&self, req: Request<B>) -> Answer {
        if let Some(e) = self.writes.refuses(Operation::LoadBulk) {
            return Err(write_problem(e));
        }
        let Some(reloader) = self.reloader.clone() else {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "no-reload",
                "Snapshot loading not enabled",
                "this node serves its built-in links only; start it with --data-dir or --snapshot",
            ));
        };
        let body = self.json_body(req).await?;
        let path = match body.as_object().map(|o| (o.get("path"), o.len())) {
            Some((Some(Value::String(p)), 1)) => std::path::PathBuf::from(p),
            _ => {
                return Err(Problem::invalid(vec![field(
                    "path",
                    "send {\"path\": \"/path/to/file.snap\"} and nothing else",
                )]))
            }
        };
        match reloader.reload(&path).await {
            Ok(r) => Ok(json_response(
                StatusCode::OK,
                &json!({
                    "path": r.path.display().to_string(),
                    "links": r.links,
                    "elapsed_ms": r.elapsed.as_millis() as u64,
                }),
            )),
            Err(e) if e.is_bad_file() => Err(Problem::invalid(vec![field("path", e)])),
            Err(crate::ReloadError::Write(e)) => Err(write_problem(e)),
            Err(e) => Err(internal(&e.to_string())),
        }
    }

    async fn json_body<B: RequestBody>(&self, req: Request<B>) -> Result<Value, Problem> {
        let limit = self.opts.max_body_bytes;
        let too_large = || {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
                format!("the body limit is {limit} bytes"),
            )
        };
        if let Some(ct) = req.headers().get(CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            if !ct.starts_with("application/json") && !ct.ends_with("+json") {
                return Err(Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "Unsupported media type",
                    format!("send the body as JSON with Content-Type: application/json (got {ct})"),
                ));
            }
        }
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let bytes: Bytes = Limited::new(req.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    too_large()
                } else {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        "bad-body",
                        "Unreadable body",
                        e.to_string(),
                    )
                }
            })?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                "malformed-json",
                "Malformed JSON",
                format!("the body is not valid JSON: {e}"),
            )
        })
    }
}

fn write_problem(e: WriteError) -> Problem {
    match &e {
        WriteError::Conflict { .. } => Problem::new(
            StatusCode::CONFLICT,
            "code-taken",
            "Code taken",
            e.to_string(),
        ),
        WriteError::NotFound { .. } => Problem::not_found(e.to_string()),
        WriteError::Invalid(le) => Problem::invalid(vec![field(le.field(), le)]),
        WriteError::CodeSpaceExhausted(_) => Problem::new(
            StatusCode::CONFLICT,
            "code-space-exhausted",
            "No free code",
            e.to_string(),
        ),
        WriteError::ReadOnly => read_only(),
        WriteError::NotHere(why) => cluster_node(why),
        WriteError::NoSpace(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no-space",
            "Writes unavailable: the disk is full",
            e.to_string(),
        ),
        WriteError::Unavailable(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Writes unavailable",
            e.to_string(),
        ),
        WriteError::BadFile(why) => Problem::invalid(vec![field("path", why)]),
        WriteError::Failed(why) => internal(why),
    }
}

/// The header that carries a cluster write's bucket revision (also a `revision` JSON field).
const REVISION: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("duanlian-revision");

fn with_revision(mut v: Value, revision: Option<u64>) -> Value {
    if let (Some(rev), Some(o)) = (revision, v.as_object_mut()) {
        o.insert("revision".into(), json!(rev));
    }
    v
}

/// What a cluster node answers for the data-directory and snapshot-file operations.
fn cluster_node(why: &str) -> Problem {
    Problem::new(StatusCode::CONFLICT, "cluster-node", "Cluster node", why)
}

fn read_only() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "read-only",
        "Read-only node",
        "this node serves a snapshot without a data directory; start it with --data-dir to accept writes",
    )
}

fn internal(why: &str) -> Problem {
    tracing::error!(error = why, "admin API internal error");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        why.to_owned(),
    )
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `a=1&b=x%2Fy` into decoded pairs (`+` is a space, as in forms), by the WHATWG
/// `application/x-www-form-urlencoded` rules.
fn parse_query(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes()).into_owned().collect()
}

/// Adds `WWW-Authenticate` to 401 answers, as RFC 9110 asks.
pub(crate) fn finish(mut r: Response<Body>) -> Response<Body> {
    if r.status() == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            parse_query("domain=go.example.cn&cursor=a.cn%2Fx&limit=5&q=a+b&bad=%zz&end=%4"),
            vec![
                ("domain".into(), "go.example.cn".into()),
                ("cursor".into(), "a.cn/x".into()),
                ("limit".into(), "5".into()),
                ("q".into(), "a b".into()),
                ("bad".into(), "%zz".into()),
                ("end".into(), "%4".into()),
            ]
        );
    }

    #[test]
    fn key_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
