//! The link handlers: list and search, read, create (one or a batch), update, delete, QR codes.
use super::body::json_response;
use super::input::{self, Rules};
use super::listing::{LinkState, Query};
use super::problem::{field, internal, write_problem, Problem};
use super::routes::parse_query;
use super::{qr, Admin, Answer, RequestBody};
use crate::Body;
use bytes::Bytes;
use duanlian_link::{format_rfc3339, Code, Domain, Link};
use duanlian_write::{Op, Operation, Outcome, Written};
use hyper::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION};
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
    pub(super) async fn submit(&self, op: Op) -> Result<(Outcome, Option<u64>), Problem> {
        let Written { outcome, revision } = self.writes.submit(op).await.map_err(write_problem)?;
        Ok((outcome, revision))
    }

    pub(super) fn link_json(&self, l: &Link) -> Value {
        let now = duanlian_link::now_secs();
        let visits = self
            .index
            .visits()
            .count(l.domain.as_str(), l.code.as_str());
        let (state, expired_by) = LinkState::of(l, visits, now);
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
            "state": state.as_str(),
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

    pub(super) async fn list(&self, query: &str) -> Answer {
        let query = Query::parse(query).map_err(Problem::invalid)?;
        // Sorting and filtering scan: off the admin API's workers.
        let index = self.index.clone();
        let (links, next) = tokio::task::spawn_blocking(move || query.run(&index))
            .await
            .map_err(|e| internal(&e.to_string()))?;
        let items: Vec<Value> = links.iter().map(|l| self.link_json(l)).collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({ "links": items, "next_cursor": next }),
        ))
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
    /// `?size=` asks for an image about that many pixels wide; `?download` for a file named
    /// after the code.
    pub(super) fn qr(&self, domain: &str, code: &str, image: &str, query: &str) -> Answer {
        let (d, c) = Self::key(domain, code)?;
        let (mut size, mut download) = (None, false);
        for (k, v) in parse_query(query) {
            match k.as_str() {
                "size" => match v.parse::<usize>() {
                    Ok(n) if qr::SIZES.contains(&n) => size = Some(n),
                    _ => {
                        return Err(Problem::invalid(vec![field(
                            "size",
                            "range",
                            format!(
                                "must be a width in pixels from {} to {}",
                                qr::SIZES.start(),
                                qr::SIZES.end()
                            ),
                        )]))
                    }
                },
                "download" => download = true,
                other => {
                    return Err(Problem::invalid(vec![field(
                        other,
                        "unknown_field",
                        "unknown parameter (known: size, download)",
                    )]))
                }
            }
        }
        if !self.index.contains(d.as_str(), c.as_str()) {
            return Err(Problem::not_found(format!("no link {d}/{c}")));
        }
        let url = format!("{}://{d}/{c}", self.opts.short_url_scheme);
        let (body, kind, ext) = if image == "qr.svg" {
            (
                Bytes::from(qr::svg(&url, size).map_err(|e| internal(&e))?),
                "image/svg+xml",
                "svg",
            )
        } else {
            (
                Bytes::from(qr::png(&url, size).map_err(|e| internal(&e))?),
                "image/png",
                "png",
            )
        };
        let mut r = Response::new(Body::new(body));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(kind));
        if download {
            // Codes are [A-Za-z0-9_-] and domains host names: safe in a quoted file name.
            let name = format!("attachment; filename=\"{d}-{c}.{ext}\"");
            if let Ok(v) = HeaderValue::from_str(&name) {
                r.headers_mut().insert(CONTENT_DISPOSITION, v);
            }
        }
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
    pub(super) fn writable(&self) -> Result<(), Problem> {
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
