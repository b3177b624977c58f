//! The link handlers: list and search, read, create (one or a batch), update, delete, QR codes.
use super::body::json_response;
use super::input::{self, Rules};
use super::problem::{field, internal, write_problem, Problem};
use super::routes::parse_query;
use super::{qr, Admin, Answer, RequestBody};
use crate::Body;
use bytes::Bytes;
use duanlian_link::{format_rfc3339, Code, Domain, Link};
use duanlian_write::{Op, Operation, Outcome, Written};
use hyper::header::{HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::{Request, Response, StatusCode};
use serde_json::{json, Value};

impl Admin {
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
            "display_url": duanlian_link::display_url(&l.url),
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

    pub(super) fn domains(&self) -> Response<Body> {
        let list: Vec<Value> = self
            .opts
            .domains
            .iter()
            .enumerate()
            .map(|(i, d)| json!({"domain": d.as_str(), "default": i == 0}))
            .collect();
        json_response(StatusCode::OK, &json!({ "domains": list }))
    }

    pub(super) fn list(&self, query: &str) -> Answer {
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
                    Err(e) => errors.push(field("domain", e.code(), e)),
                },
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=1000).contains(&n) => limit = n,
                    _ => errors.push(field(
                        "limit",
                        "range",
                        "must be a whole number from 1 to 1000",
                    )),
                },
                "cursor" => match v.split_once('/') {
                    Some((d, c)) if !d.is_empty() && !c.is_empty() => {
                        cursor = Some((d.to_owned(), c.to_owned()))
                    }
                    _ => errors.push(field(
                        "cursor",
                        "cursor",
                        "is not a cursor from an earlier page",
                    )),
                },
                other => errors.push(field(
                    other,
                    "unknown_field",
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

    pub(super) fn key(domain: &str, code: &str) -> Result<(Domain, Code), Problem> {
        let unknown = || Problem::not_found(format!("no link {domain}/{code}"));
        Ok((
            Domain::parse(domain).map_err(|_| unknown())?,
            Code::parse(code).map_err(|_| unknown())?,
        ))
    }

    pub(super) fn get(&self, domain: &str, code: &str) -> Answer {
        let (d, c) = Self::key(domain, code)?;
        match self.index.get(d.as_str(), c.as_str()) {
            Some(link) => Ok(json_response(StatusCode::OK, &self.link_json(&link))),
            None => Err(Problem::not_found(format!("no link {d}/{c}"))),
        }
    }

    /// The short link as a QR code.
    pub(super) fn qr(&self, domain: &str, code: &str, image: &str) -> Answer {
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

    pub(super) async fn create<B: RequestBody>(&self, req: Request<B>) -> Answer {
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

    pub(super) async fn batch<B: RequestBody>(&self, req: Request<B>) -> Answer {
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

    pub(super) async fn patch<B: RequestBody>(
        &self,
        domain: &str,
        code: &str,
        req: Request<B>,
    ) -> Answer {
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

    pub(super) async fn delete(&self, domain: &str, code: &str) -> Answer {
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
