//! The redirect answer, as a pure function of request and state.
use bytes::Bytes;
use duanlian_clicks::{is_bot, Device, Recorder, Visit};
use duanlian_index::{Index, LinkRef};
use duanlian_link::{host_key, merge_query, now_secs, Code, Domain, HostBuf, State, MAX_CODE_LEN};
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HOST, LOCATION, REFERER, USER_AGENT,
};
use hyper::{Method, Request, Response, StatusCode};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// The response body type of every answer.
pub type Body = Full<Bytes>;

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");

/// What an expired link answers when it has nowhere to send the visitor.
const EXPIRED_PAGE: &str = r#"<!doctype html>
<html lang="en"><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Link expired · 链接已过期</title>
<body style="font-family:system-ui,sans-serif;max-width:32em;margin:4em auto;padding:0 1em;color:#333">
<h1>This link has expired</h1><p>链接已过期。</p>
<p>The short link you followed is no longer valid. Ask whoever shared it for a new one.</p>
<p>您访问的短链接已失效，请联系分享者获取新的链接。</p></body></html>
"#;

pub use duanlian_index::DEFAULT_RETENTION;

/// Where a link domain sends visitors it has no live link for. Each is a 302 target.
#[derive(Debug, Clone, Default)]
pub struct DomainPolicy {
    /// For expired links without an `expired_url` of their own (instead of 410).
    pub expired_url: Option<Box<str>>,
    /// For unknown codes (instead of 404).
    pub not_found_url: Option<Box<str>>,
    /// For `/` (instead of 404).
    pub root_url: Option<Box<str>>,
}

#[derive(Debug, Default)]
struct Policy {
    expired: Option<HeaderValue>,
    not_found: Option<HeaderValue>,
    root: Option<HeaderValue>,
}

/// Everything the redirect listener consults: the index (and its retention), per-domain
/// fallbacks, whether visits are counted, and the clock.
pub struct Redirector {
    index: Arc<Index>,
    policies: HashMap<Box<str>, Policy>,
    count_visits: bool,
    health: Arc<crate::Health>,
    metrics: Option<Arc<crate::Metrics>>,
    access_log: Option<crate::TrustedProxies>,
    /// Click events for statistics, and whose forwarded addresses to believe for them.
    clicks: Option<(Arc<Recorder>, crate::TrustedProxies)>,
    /// A test clock; `None` reads the system clock directly (one vDSO call, no indirection).
    clock: Option<Arc<dyn Fn() -> i64 + Send + Sync>>,
    /// A source this node may be behind (a cluster's bucket), read directly on a miss then.
    catch_up: Option<Arc<dyn duanlian_write::CatchUp>>,
    /// Where the visits of capped links come from when they are counted across nodes.
    quota: Option<Arc<dyn duanlian_write::VisitQuota>>,
    /// Answers to a certificate authority's HTTP-01 challenges, while an order is open.
    acme: Option<Arc<AcmeAnswers>>,
}

/// The key authorizations a certificate authority fetches at
/// `/.well-known/acme-challenge/TOKEN` (RFC 8555 §8.3) on any of the link domains, in plain
/// HTTP. That path can never be a code (codes have no `/` or `.`), so links are never shadowed.
#[derive(Debug, Default)]
pub struct AcmeAnswers(std::sync::RwLock<HashMap<String, String>>);

impl AcmeAnswers {
    /// Serves `key_authorization` for `token` from now on.
    pub fn publish(&self, token: &str, key_authorization: &str) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        map.insert(token.to_string(), key_authorization.to_string());
    }

    /// Stops serving `token`.
    pub fn withdraw(&self, token: &str) {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        map.remove(token);
    }

    fn answer(&self, token: &str) -> Response<Body> {
        let map = self.0.read().unwrap_or_else(|e| e.into_inner());
        match map.get(token) {
            Some(v) => {
                let mut r = Response::new(Full::new(Bytes::from(v.clone())));
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                r
            }
            None => not_found(),
        }
    }
}

/// Marks an answer a cluster node gives only after one read of the cluster (see
/// [`Redirector::second_chance`]): a miss while it is behind its bucket, or a visit of a capped
/// link whose lease is spent.
#[derive(Debug, Clone)]
pub(crate) struct DirectRead {
    domain: Box<str>,
    code: Box<str>,
    wait: Wait,
}

/// What a deferred answer waits for.
#[derive(Debug, Clone, Copy)]
enum Wait {
    /// The link itself, read from the bucket.
    Link,
    /// More visits of a capped link, leased from the counter the nodes share.
    Quota { created_at: i64, cap: u64 },
}

impl std::fmt::Debug for Redirector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redirector")
            .field("count_visits", &self.count_visits)
            .finish_non_exhaustive()
    }
}

impl Redirector {
    /// Answers certificate authorities' HTTP-01 challenges from `answers`.
    pub fn with_acme_answers(mut self, answers: Arc<AcmeAnswers>) -> Redirector {
        self.acme = Some(answers);
        self
    }

    /// Redirects from `index`: no fallbacks, the index's retention, visits not counted (except
    /// for links with a visit cap, which must count to enforce it).
    pub fn new(index: Arc<Index>) -> Redirector {
        Redirector {
            index,
            policies: HashMap::new(),
            count_visits: false,
            health: Arc::default(),
            metrics: None,
            access_log: None,
            clicks: None,
            clock: None,
            catch_up: None,
            quota: None,
            acme: None,
        }
    }

    /// Counts the visits of capped links with `quota` (a cluster's shared counters) instead
    /// of this node's counters alone, so a cap holds across nodes.
    pub fn with_visit_quota(mut self, quota: Arc<dyn duanlian_write::VisitQuota>) -> Redirector {
        self.quota = Some(quota);
        self
    }

    /// Lets a miss while this node is behind `source` (a cluster's bucket) look the code up
    /// there once.
    pub fn with_catch_up(mut self, source: Arc<dyn duanlian_write::CatchUp>) -> Redirector {
        self.catch_up = Some(source);
        self
    }

    /// Whether an answer may be marked [`DirectRead`]: only on a node that can be behind, or
    /// that leases the visits of capped links.
    pub(crate) fn may_defer(&self) -> bool {
        self.catch_up.is_some() || self.quota.is_some()
    }

    /// Answers an answer marked [`DirectRead`] after its read of the cluster: a miss from one
    /// direct read of the bucket, a capped link's visit from a new lease. Any other answer is
    /// returned as it is.
    pub(crate) async fn second_chance<B>(
        &self,
        req: &Request<B>,
        peer: Option<SocketAddr>,
        mut first: Response<Body>,
    ) -> Response<Body> {
        let is_get = *req.method() == Method::GET;
        // A link read directly may be capped with its lease spent: one more round then.
        let mut direct: Option<duanlian_link::Link> = None;
        for _ in 0..2 {
            let Some(DirectRead { domain, code, wait }) = first.extensions_mut().remove() else {
                return first;
            };
            first = match (wait, &self.catch_up, &self.quota) {
                (Wait::Link, Some(source), _) => match source.direct_get(&domain, &code).await {
                    Some(link) => {
                        let l = LinkRef::from(&link);
                        let res = decide(
                            self,
                            req,
                            peer,
                            is_get,
                            &domain,
                            &code,
                            Some(&l),
                            false,
                            None,
                        );
                        direct = Some(link);
                        res
                    }
                    None => return first,
                },
                (Wait::Quota { created_at, cap }, _, Some(quota)) => {
                    match quota.refill(&domain, &code, created_at, cap).await {
                        Ok(granted) => {
                            let decided = |link: Option<&LinkRef<'_>>| {
                                decide(
                                    self,
                                    req,
                                    peer,
                                    is_get,
                                    &domain,
                                    &code,
                                    link,
                                    false,
                                    Some(granted),
                                )
                            };
                            match &direct {
                                Some(link) => decided(Some(&LinkRef::from(link))),
                                None => self.index.resolve(&domain, &code, decided),
                            }
                        }
                        // Never over the cap: without the counter, no visit.
                        Err(_) => text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "the visit counter of this link cannot be reached; try again\n",
                        ),
                    }
                }
                _ => return first,
            };
        }
        first
    }

    /// Shares the health state `/readyz` reports (the one [`crate::run`] marks ready and
    /// draining).
    pub fn with_health(mut self, health: Arc<crate::Health>) -> Redirector {
        self.health = health;
        self
    }

    /// Counts answers and samples latency into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::Metrics>) -> Redirector {
        self.metrics = Some(metrics);
        self
    }

    /// Logs every request (target `access`) with the client address as `proxies` determine it.
    /// Off by default: a redirect tier's request volume rarely belongs in its logs.
    pub fn with_access_log(mut self, proxies: crate::TrustedProxies) -> Redirector {
        self.access_log = Some(proxies);
        self
    }

    /// Records a click event for every redirected GET, with the client address as `proxies`
    /// determine it. Bots are recorded as bots; they never count as visits either way.
    pub fn with_clicks(
        mut self,
        recorder: Arc<Recorder>,
        proxies: crate::TrustedProxies,
    ) -> Redirector {
        self.clicks = Some((recorder, proxies));
        self
    }

    /// The access log's proxy list, when the access log is on.
    pub(crate) fn access_log(&self) -> Option<&crate::TrustedProxies> {
        self.access_log.as_ref()
    }

    /// The metrics, if recorded.
    pub(crate) fn metrics(&self) -> Option<&crate::Metrics> {
        self.metrics.as_deref()
    }

    /// Replaces the clock (UTC seconds) validity is judged by; for tests.
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Redirector {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Sets the per-domain fallbacks. Their URLs must have passed [`duanlian_link::parse_url`].
    pub fn with_policies(mut self, policies: HashMap<Domain, DomainPolicy>) -> Redirector {
        let value = |u: &Option<Box<str>>| u.as_deref().and_then(|u| HeaderValue::from_str(u).ok());
        self.policies = policies
            .into_iter()
            .map(|(d, p)| {
                let policy = Policy {
                    expired: value(&p.expired_url),
                    not_found: value(&p.not_found_url),
                    root: value(&p.root_url),
                };
                (d.as_str().into(), policy)
            })
            .collect();
        self
    }

    /// Counts every redirected GET (visit counts in the admin API, statistics).
    pub fn with_visit_counting(mut self, on: bool) -> Redirector {
        self.count_visits = on;
        self
    }

    /// The index.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    fn policy(&self, domain: &str) -> Option<&Policy> {
        if self.policies.is_empty() {
            None
        } else {
            self.policies.get(domain)
        }
    }

    fn not_found(&self, domain: &str) -> Response<Body> {
        match self.policy(domain).and_then(|p| p.not_found.clone()) {
            Some(to) => found(to),
            None => not_found(),
        }
    }

    fn expired(&self, domain: &str, link: &LinkRef<'_>) -> Response<Body> {
        let own = link
            .expired_url
            .and_then(|u| HeaderValue::from_bytes(u).ok());
        match own.or_else(|| self.policy(domain).and_then(|p| p.expired.clone())) {
            Some(to) => found(to),
            None => {
                let mut r = Response::new(Full::new(Bytes::from_static(EXPIRED_PAGE.as_bytes())));
                *r.status_mut() = StatusCode::GONE;
                r.headers_mut().insert(CONTENT_TYPE, HTML);
                r
            }
        }
    }
}

fn found(to: HeaderValue) -> Response<Body> {
    let mut r = Response::new(Body::default());
    *r.status_mut() = StatusCode::FOUND;
    r.headers_mut().insert(LOCATION, to);
    // Fallbacks change as links come and go: keep them out of shared caches.
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Answers one request on the redirect listener.
///
/// Never panics and never allocates for a redirect beyond the response itself (and the merged
/// URL when a query string is forwarded); every failure is a status code. Validity is decided
/// here on every request from the link's own fields and the clock: before `valid_since` 404;
/// from `expires_at`, or once `max_visits` GETs have redirected, "expired" (410, or the link's or
/// its domain's `expired_url`); after the retention 404. Only GETs count as visits.
pub fn respond<B>(r: &Redirector, req: &Request<B>) -> Response<Body> {
    respond_from(r, req, None)
}

/// [`respond`] for a request from `peer` (the socket's address), which click events record.
pub fn respond_from<B>(
    r: &Redirector,
    req: &Request<B>,
    peer: Option<SocketAddr>,
) -> Response<Body> {
    let is_get = match *req.method() {
        Method::GET => true,
        // hyper writes no body for HEAD (but keeps Content-Length).
        Method::HEAD => false,
        _ => {
            let mut res = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            res.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return res;
        }
    };
    // The service's own endpoints answer on any Host (load balancers probe by address).
    match req.uri().path() {
        "/healthz" | "/livez" => return text(StatusCode::OK, "ok\n"),
        "/readyz" if r.health.is_ready() => return text(StatusCode::OK, "ready\n"),
        "/readyz" => return text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => {}
    }
    // RFC 9112 §3.2.2: more than one Host is a 400, and an absolute-form request target's
    // authority wins over the Host header (which is then ignored). Two hosts must never let a
    // proxy in front route by one while we answer by the other.
    let headers = req.headers();
    // A name with several values makes the map longer than its key count: only then look.
    if headers.len() != headers.keys_len() && two_hosts(headers) {
        return text(StatusCode::BAD_REQUEST, "more than one Host header\n");
    }
    // Browsers send origin-form; the absolute form (proxies, scanners) is kept out of line.
    let host = if req.uri().authority().is_some() {
        absolute_form_host(req.uri())
    } else {
        match host_header(headers) {
            Some(h) => h.as_bytes(),
            None => return text(StatusCode::BAD_REQUEST, "missing Host header\n"),
        }
    };
    let mut buf = HostBuf::default();
    let Some(domain) = host_key(host, &mut buf) else {
        return not_found();
    };
    let Some(code) = req.uri().path().strip_prefix('/') else {
        return text(StatusCode::BAD_REQUEST, "bad request target\n");
    };
    if code.is_empty() {
        return match r.policy(domain).and_then(|p| p.root.clone()) {
            Some(to) => found(to),
            None => not_found(),
        };
    }
    // A trailing slash, a second segment or a stray character can never name a link; a
    // percent-escape may still spell one.
    if !Code::is_valid(code.as_bytes()) {
        return escaped(r, req, peer, is_get, domain, code);
    }
    r.index.resolve(domain, code, |link| {
        decide(r, req, peer, is_get, domain, code, link, true, None)
    })
}

/// The answer for a path that is not a code as it stands. Escapes are decoded first, as nginx
/// does, so a link that went through something over-encoding it (`/%61bc` for `/abc`) still
/// works. Out of line: links are shared unescaped, and the common path must not pay for this.
#[cold]
#[inline(never)]
fn escaped<B>(
    r: &Redirector,
    req: &Request<B>,
    peer: Option<SocketAddr>,
    is_get: bool,
    domain: &str,
    path: &str,
) -> Response<Body> {
    if let (Some(answers), Some(token)) =
        (&r.acme, path.strip_prefix(".well-known/acme-challenge/"))
    {
        return answers.answer(token);
    }
    let mut buf = [0; MAX_CODE_LEN];
    match percent_decode(path.as_bytes(), &mut buf) {
        Some(code) => r.index.resolve(domain, code, |link| {
            decide(r, req, peer, is_get, domain, code, link, true, None)
        }),
        None => r.not_found(domain),
    }
}

/// `path` with its percent-escapes decoded into `buf`, if that is a code. `None` for a path
/// without escapes (it was checked as it stands), a malformed escape, a decoded byte no code
/// holds (`%2F` among them: `/%2Fx` must not name a link `x` or reach another segment), or more
/// than [`MAX_CODE_LEN`] bytes.
fn percent_decode<'a>(path: &[u8], buf: &'a mut [u8; MAX_CODE_LEN]) -> Option<&'a str> {
    if !path.contains(&b'%') {
        return None;
    }
    let mut len = 0;
    let mut bytes = path.iter();
    while let Some(&b) = bytes.next() {
        let b = if b == b'%' {
            let high = hex_digit(*bytes.next()?)?;
            let low = hex_digit(*bytes.next()?)?;
            high << 4 | low
        } else {
            b
        };
        *buf.get_mut(len)? = b;
        len += 1;
    }
    let code = &buf[..len];
    if Code::is_valid(code) {
        std::str::from_utf8(code).ok()
    } else {
        None
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The answer for the link found under `domain`/`code` (or its absence). `may_defer`: a miss
/// on a cluster node behind its bucket is marked for one direct read instead of answered.
#[allow(clippy::too_many_arguments)]
#[inline]
fn decide<B>(
    r: &Redirector,
    req: &Request<B>,
    peer: Option<SocketAddr>,
    is_get: bool,
    domain: &str,
    code: &str,
    link: Option<&LinkRef<'_>>,
    may_defer: bool,
    granted: Option<bool>,
) -> Response<Body> {
    let Some(link) = link else {
        if may_defer && r.catch_up.as_ref().is_some_and(|c| c.lagging()) {
            let mut res = r.not_found(domain);
            res.extensions_mut().insert(DirectRead {
                domain: domain.into(),
                code: code.into(),
                wait: Wait::Link,
            });
            return res;
        }
        return r.not_found(domain);
    };
    let clock = || match &r.clock {
        None => now_secs(),
        Some(clock) => clock(),
    };
    let mut read_clock = None;
    // Permanent links skip the clock; bounded ones are decided here, on every read.
    if link.validity.is_bounded() {
        let now = clock();
        read_clock = Some(now);
        if link.validity.is_purged_at(now, r.index.retention()) {
            return r.not_found(domain);
        }
        match link.validity.state_at(now) {
            State::Active => {}
            State::Pending => return r.not_found(domain),
            State::Expired => return r.expired(domain, link),
        }
    }
    // Only a GET can be a visit, and only a person's: bots and link-preview fetchers are
    // told where the link goes but use up nothing.
    let counted =
        is_get && (r.count_visits || r.clicks.is_some() || link.validity.max_visits.is_some());
    // Only a counted request needs the User-Agent (a header lookup is a hash of its name).
    let user_agent = if counted {
        req.headers().get(USER_AGENT).map(|v| v.as_bytes())
    } else {
        None
    };
    let human = counted && !is_bot(user_agent);
    let visits = r.index.visits();
    let used_up = match link.validity.max_visits {
        // Across nodes, a capped visit is granted from this node's lease of the shared count
        // (the count here is then only what the statistics show).
        Some(cap) if human && r.quota.is_some() => {
            let granted = granted.or_else(|| {
                r.quota
                    .as_ref()
                    .and_then(|q| q.take(domain, code, link.created_at, cap))
            });
            match granted {
                Some(true) => {
                    visits.hit(domain, code, None);
                    false
                }
                Some(false) => true,
                None => {
                    let mut res = r.expired(domain, link);
                    res.extensions_mut().insert(DirectRead {
                        domain: domain.into(),
                        code: code.into(),
                        wait: Wait::Quota {
                            created_at: link.created_at,
                            cap,
                        },
                    });
                    return res;
                }
            }
        }
        // A visit takes one of the capped visits or finds none left; anything else looks.
        Some(cap) if human => !visits.hit(domain, code, Some(cap)),
        Some(cap) => visits.count(domain, code) >= cap,
        None => {
            if human && r.count_visits {
                visits.hit(domain, code, None);
            }
            false
        }
    };
    if used_up {
        return r.expired(domain, link);
    }
    let location = match req.uri().query() {
        // Only a request with a query string pays for building a new URL.
        Some(q) if link.forward_query.is_on() && !q.is_empty() => HeaderValue::from_maybe_shared(
            Bytes::from(merge_query(link.url, q.as_bytes(), link.forward_query)),
        ),
        // A slice of the snapshot's mapping: validated, not copied.
        _ => HeaderValue::from_maybe_shared(link.url_bytes()),
    };
    let Ok(location) = location else {
        // Unreachable for links that passed the link model; refuse rather than emit it.
        return text(StatusCode::INTERNAL_SERVER_ERROR, "invalid stored target\n");
    };
    // Every redirected GET is a click, bots' included (recorded as bots).
    if let (Some((recorder, proxies)), true) = (&r.clicks, is_get) {
        let device = if human {
            Device::browser(user_agent)
        } else {
            Device::Bot
        };
        let client = match peer {
            Some(peer) => proxies.client(peer, req.headers()),
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let referer = req.headers().get(REFERER).map(|v| v.as_bytes());
        // To the second: the clock already read, a test clock, or the recorder's.
        let at = read_clock.unwrap_or_else(|| match r.clock {
            Some(_) => clock(),
            None => recorder.now(),
        });
        recorder.record(Visit::new(at, domain, code, referer, device, client));
    }
    let mut res = Response::new(Body::default());
    *res.status_mut() = StatusCode::from_u16(link.redirect.status()).unwrap_or(StatusCode::FOUND);
    res.headers_mut().insert(LOCATION, location);
    res
}

/// Whether the request has more than one `Host` header.
#[cold]
#[inline(never)]
fn two_hosts(headers: &HeaderMap) -> bool {
    headers.get_all(HOST).iter().nth(1).is_some()
}

/// The host of an absolute-form request target (`GET http://go.example.cn/x HTTP/1.1`).
#[cold]
#[inline(never)]
fn absolute_form_host(uri: &hyper::Uri) -> &[u8] {
    uri.authority().map_or(&b""[..], |a| a.host().as_bytes())
}

/// The first `Host` header. User agents send it first (RFC 9110, 7.2), so a scan from the front
/// usually stops at the first name, where [`HeaderMap::get`] would hash the name first.
#[inline]
fn host_header(headers: &HeaderMap) -> Option<&HeaderValue> {
    headers
        .iter()
        .find_map(|(name, value)| (name == HOST).then_some(value))
}

fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found\n")
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, TEXT);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use duanlian_index::Change;
    use duanlian_link::{parse_url, Link, Redirect, Validity};

    fn redirector() -> Redirector {
        let index = Index::empty();
        let mut seq = 0;
        let mut put = |code: &str, redirect, validity, expired_url: Option<&str>| {
            seq += 1;
            index.apply(
                seq,
                Change::Put(Link {
                    domain: Domain::parse("go.example.cn").expect("domain"),
                    code: Code::parse(code).expect("code"),
                    url: parse_url(&format!("https://t.example/{code}")).expect("url"),
                    redirect,
                    validity,
                    created_at: 0,
                    forward_query: duanlian_link::ForwardQuery::Add,
                    expired_url: expired_url.map(Into::into),
                }),
            )
        };
        let now = now_secs();
        put("ok", Redirect::Found, Validity::ALWAYS, None);
        put("perm", Redirect::Permanent, Validity::ALWAYS, None);
        put(
            "old",
            Redirect::Found,
            Validity::new(None, Some(now - 5)).expect("window"),
            None,
        );
        put(
            "moved",
            Redirect::Found,
            Validity::new(None, Some(now - 5)).expect("window"),
            Some("https://sorry.example/"),
        );
        put(
            "purged",
            Redirect::Found,
            Validity::new(None, Some(now - 100)).expect("window"),
            None,
        );
        put(
            "later",
            Redirect::Found,
            Validity::new(Some(i64::MAX - 1), None).expect("window"),
            None,
        );
        put(
            "twice",
            Redirect::Found,
            Validity::ALWAYS.with_max_visits(Some(2)).expect("cap"),
            None,
        );
        let policy = DomainPolicy {
            expired_url: None,
            not_found_url: Some("https://go.example.cn.example/missing".into()),
            root_url: Some("https://www.example.cn/".into()),
        };
        index.set_retention(60);
        Redirector::new(Arc::new(index)).with_policies(HashMap::from([(
            Domain::parse("go.example.cn").expect("d"),
            policy,
        )]))
    }

    fn get(r: &Redirector, method: &str, host: Option<&str>, uri: &str) -> Response<Body> {
        let mut b = Request::builder().method(method).uri(uri).header(
            USER_AGENT,
            "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0",
        );
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        respond(r, &b.body(()).expect("request"))
    }

    fn location(res: &Response<Body>) -> Option<&str> {
        res.headers().get(LOCATION).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn statuses() {
        let r = redirector();
        let res = get(&r, "GET", Some("Go.Example.CN:80"), "/ok");
        assert_eq!(res.status(), 302);
        assert_eq!(location(&res), Some("https://t.example/ok"));
        assert_eq!(get(&r, "GET", Some("go.example.cn"), "/perm").status(), 308);
        assert_eq!(get(&r, "POST", Some("go.example.cn"), "/ok").status(), 405);
        assert_eq!(get(&r, "GET", None, "/ok").status(), 400);
        assert_eq!(
            get(&r, "GET", None, "http://go.example.cn/ok").status(),
            302
        );
        assert_eq!(get(&r, "HEAD", Some("go.example.cn"), "/ok").status(), 302);
        let q = get(&r, "GET", Some("go.example.cn"), "/ok?utm=1");
        assert_eq!(location(&q), Some("https://t.example/ok?utm=1"));
        assert_eq!(get(&r, "GET", Some("other.cn"), "/ok").status(), 404);
    }

    #[test]
    fn percent_escapes_are_decoded_before_lookup() {
        let r = redirector();
        for path in ["/%6Fk", "/%6fk", "/o%6B", "/%6F%6B"] {
            let res = get(&r, "GET", Some("go.example.cn"), path);
            assert_eq!(
                (res.status().as_u16(), location(&res)),
                (302, Some("https://t.example/ok")),
                "{path}"
            );
        }
        let res = get(&r, "GET", Some("go.example.cn"), "/%70erm?utm=1");
        assert_eq!(
            (res.status().as_u16(), location(&res)),
            (308, Some("https://t.example/perm?utm=1"))
        );
        assert_eq!(
            get(&r, "HEAD", Some("go.example.cn"), "/%6Fk").status(),
            302
        );
        // Validity is judged for the decoded code as for the plain one.
        assert_eq!(
            get(&r, "GET", Some("go.example.cn"), "/%6Fld").status(),
            410
        );
    }

    #[test]
    fn escapes_that_spell_no_code_are_not_found() {
        let long = "%61".repeat(MAX_CODE_LEN + 1);
        let longest = "%61".repeat(MAX_CODE_LEN);
        let paths = [
            "/%2Fok",
            "/%2fok",
            "/ok%2F",
            "/%",
            "/%6",
            "/ok%",
            "/%zz",
            "/%6g",
            "/%%6Fk",
            "/%25",
            "/%2D",
            "/%20ok",
            "/%00",
            "/%C3%A9",
            "/%2E%2E",
            "/o%6B/",
            &format!("/{long}"),
            &format!("/{longest}"),
        ];
        let with_fallback = redirector();
        let plain = redirector().with_policies(HashMap::new());
        for path in paths {
            let res = get(&with_fallback, "GET", Some("go.example.cn"), path);
            assert_eq!(
                (res.status().as_u16(), location(&res)),
                (302, Some("https://go.example.cn.example/missing")),
                "{path}: the domain's not-found target"
            );
            let res = get(&plain, "GET", Some("go.example.cn"), path);
            assert_eq!(res.status(), 404, "{path}");
        }
    }

    #[test]
    fn percent_decoding_stays_within_a_code() {
        let mut buf = [0; MAX_CODE_LEN];
        assert_eq!(percent_decode(b"%61bc", &mut buf), Some("abc"));
        assert_eq!(percent_decode(b"a%2Db%5f", &mut buf), Some("a-b_"));
        // Nothing to decode: the path was already judged as it stands.
        assert_eq!(percent_decode(b"ok/", &mut buf), None);
        let longest = "%41".repeat(MAX_CODE_LEN);
        let decoded = "A".repeat(MAX_CODE_LEN);
        assert_eq!(
            percent_decode(longest.as_bytes(), &mut buf),
            Some(decoded.as_str())
        );
        assert_eq!(
            percent_decode(format!("{longest}A").as_bytes(), &mut buf),
            None
        );
        for bad in [
            &b"%"[..],
            b"%4",
            b"%4G",
            b"%G4",
            b"%2F",
            b"a%2fb",
            b"%FF",
            b"%2B",
        ] {
            assert_eq!(percent_decode(bad, &mut buf), None, "{bad:?}");
        }
    }

    #[test]
    fn host_is_found_wherever_it_stands_and_only_once() {
        let r = redirector();
        // Another name repeated (the case that makes the map look twice) does not matter.
        let req = Request::get("/ok")
            .header(USER_AGENT, "curl/8")
            .header("x-forwarded-for", "192.0.2.1")
            .header("x-forwarded-for", "192.0.2.2")
            .header(HOST, "GO.example.cn")
            .body(())
            .expect("request");
        let res = respond(&r, &req);
        assert_eq!(location(&res), Some("https://t.example/ok"));
        // RFC 9112 §3.2.2: two Host headers are a 400, wherever they stand.
        let req = Request::get("/ok")
            .header(HOST, "GO.example.cn")
            .header(USER_AGENT, "curl/8")
            .header(HOST, "other.example")
            .body(())
            .expect("request");
        assert_eq!(respond(&r, &req).status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn validity_and_fallbacks() {
        let r = redirector();
        let old = get(&r, "GET", Some("go.example.cn"), "/old");
        assert_eq!(old.status(), 410);
        assert_eq!(old.headers()[CONTENT_TYPE], HTML);
        let moved = get(&r, "GET", Some("go.example.cn"), "/moved");
        assert_eq!(
            (moved.status().as_u16(), location(&moved)),
            (302, Some("https://sorry.example/"))
        );
        // Past the retention, an expired link is gone: the domain's not-found target.
        let purged = get(&r, "GET", Some("go.example.cn"), "/purged");
        assert_eq!(
            location(&purged),
            Some("https://go.example.cn.example/missing")
        );
        let later = get(&r, "GET", Some("go.example.cn"), "/later");
        assert_eq!(
            location(&later),
            Some("https://go.example.cn.example/missing")
        );
        let root = get(&r, "GET", Some("go.example.cn"), "/");
        assert_eq!(location(&root), Some("https://www.example.cn/"));
        assert_eq!(
            get(&r, "GET", Some("go.example.cn"), "/ok/").status(),
            302,
            "not-found fallback"
        );
        assert_eq!(get(&r, "GET", Some("s.example.com"), "/").status(), 404);
    }

    #[test]
    fn visit_caps_count_gets_only() {
        let r = redirector();
        assert_eq!(
            get(&r, "HEAD", Some("go.example.cn"), "/twice").status(),
            302
        );
        assert_eq!(
            get(&r, "GET", Some("go.example.cn"), "/twice").status(),
            302
        );
        assert_eq!(
            get(&r, "GET", Some("go.example.cn"), "/twice").status(),
            302
        );
        assert_eq!(
            get(&r, "GET", Some("go.example.cn"), "/twice").status(),
            410
        );
        assert_eq!(
            get(&r, "HEAD", Some("go.example.cn"), "/twice").status(),
            410
        );
        assert_eq!(r.index().visits().count("go.example.cn", "twice"), 2);
        // Without counting switched on, uncapped links are not counted.
        get(&r, "GET", Some("go.example.cn"), "/ok");
        assert_eq!(r.index().visits().count("go.example.cn", "ok"), 0);
    }

    #[test]
    fn bots_use_up_no_visits() {
        let r = redirector().with_visit_counting(true);
        let bot = |path: &str| {
            let req = Request::get(path)
                .header(HOST, "go.example.cn")
                .header(
                    USER_AGENT,
                    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                )
                .body(())
                .expect("request");
            respond(&r, &req).status()
        };
        for _ in 0..5 {
            assert_eq!(bot("/twice"), 302);
            assert_eq!(bot("/ok"), 302);
        }
        assert_eq!(r.index().visits().count("go.example.cn", "twice"), 0);
        assert_eq!(r.index().visits().count("go.example.cn", "ok"), 0);
        assert_eq!(get(&r, "GET", Some("go.example.cn"), "/ok").status(), 302);
        assert_eq!(r.index().visits().count("go.example.cn", "ok"), 1);
    }
}
