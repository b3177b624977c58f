//! Request bodies to store operations, naming every invalid field.
use super::problem::{field, FieldError};
use duanlian_link::{
    now_secs, parse_duration, parse_rfc3339, parse_url, url_host, Code, Domain, ForwardQuery,
    Redirect, Validity, LATEST_INSTANT, LATEST_INSTANT_REASON,
};
use duanlian_write::{NewLink, Patch};
use serde_json::{Map, Value};

/// What the API needs to know to judge a link's fields.
pub(crate) struct Rules<'a> {
    pub(crate) domains: &'a [Domain],
    pub(crate) default_code_length: usize,
}

const CREATE_FIELDS: &str = "url, domain, code, code_length, redirect, expires_at, expires_in, valid_since, max_visits, expired_url, forward_query";
const PATCH_FIELDS: &str =
    "url, redirect, expires_at, expires_in, valid_since, max_visits, expired_url, forward_query";
pub(crate) const MIN_CODE_LENGTH: usize = 4;
pub(crate) const MAX_CODE_LENGTH: usize = 32;

/// Collects field errors, prefixed (`links[3].url`) inside a batch.
struct Errors<'p> {
    prefix: &'p str,
    list: Vec<FieldError>,
}

impl Errors<'_> {
    fn add(&mut self, name: &str, reason: impl std::fmt::Display) {
        self.list
            .push(field(format!("{}{name}", self.prefix), reason));
    }
}

fn string<'v>(v: &'v Value, name: &str, errs: &mut Errors<'_>) -> Option<&'v str> {
    match v {
        Value::String(s) => Some(s),
        _ => {
            errs.add(name, "must be a string");
            None
        }
    }
}

/// An instant: UTC seconds, an RFC 3339 string (`2026-12-01T00:00:00+08:00`), a date, or null.
fn instant(v: &Value, name: &str, errs: &mut Errors<'_>) -> Option<Option<i64>> {
    let parsed = match v {
        Value::Null => return Some(None),
        Value::Number(n) => n.as_i64(),
        Value::String(s) => parse_rfc3339(s),
        _ => None,
    };
    match parsed {
        None => {
            errs.add(
                name,
                "must be UTC seconds or an RFC 3339 time such as 2026-12-01T00:00:00Z, or null",
            );
            None
        }
        Some(t) if t > LATEST_INSTANT => {
            errs.add(name, LATEST_INSTANT_REASON);
            None
        }
        Some(t) => Some(Some(t)),
    }
}

/// A validity period: `"1d"`, `"7d"`, `"30d"`, `"1y"`, `"90m"`, seconds, or null (permanent).
fn period(v: &Value, name: &str, errs: &mut Errors<'_>) -> Option<Option<i64>> {
    let parsed = match v {
        Value::Null => return Some(None),
        Value::Number(n) => n.as_i64().filter(|s| *s > 0),
        Value::String(s) => parse_duration(s).filter(|s| *s > 0),
        _ => None,
    };
    if parsed.is_none() {
        errs.add(name, "must be a period such as \"1d\", \"7d\", \"30d\", \"1y\", \"90m\", a number of seconds, or null");
    }
    parsed.map(Some)
}

fn visits_cap(v: &Value, errs: &mut Errors<'_>) -> Option<Option<u64>> {
    match v {
        Value::Null => Some(None),
        _ => match v.as_u64() {
            Some(n) if n > 0 => Some(Some(n)),
            _ => {
                errs.add(
                    "max_visits",
                    "must be a whole number of at least 1, or null",
                );
                None
            }
        },
    }
}

fn expired_target(v: &Value, rules: &Rules<'_>, errs: &mut Errors<'_>) -> Option<Option<Box<str>>> {
    if v.is_null() {
        return Some(None);
    }
    let raw = string(v, "expired_url", errs)?;
    match parse_url(raw) {
        // An expired link sent to one of our own domains can land on itself, which answers
        // expired again: a loop under our own name.
        Ok(u) if rules.is_own(&u) => {
            errs.add("expired_url", LOOP_REASON);
            None
        }
        Ok(u) => Some(Some(u)),
        Err(e) => {
            errs.add("expired_url", e);
            None
        }
    }
}

const LOOP_REASON: &str = "points at a link domain of this service (a redirect loop)";

impl Rules<'_> {
    /// Whether `url` (already parsed) is on one of this service's link domains.
    fn is_own(&self, url: &str) -> bool {
        let host = url_host(url);
        self.domains
            .iter()
            .any(|d| Some(d.as_str()) == host.as_deref())
    }
}

/// The expiry from `expires_at` and `expires_in`, which contradict each other when both are
/// given; an explicit instant in the past is refused too.
fn expiry(
    at: Option<Option<i64>>,
    within: Option<Option<i64>>,
    now: i64,
    errs: &mut Errors<'_>,
) -> Option<Option<i64>> {
    match (at, within) {
        (Some(Some(_)), Some(Some(_))) => {
            errs.add("expires_at", "give expires_at or expires_in, not both");
            errs.add("expires_in", "give expires_at or expires_in, not both");
            None
        }
        (Some(Some(t)), _) if t < now => {
            errs.add("expires_at", "is in the past");
            None
        }
        (Some(t), _) => Some(t),
        (None, Some(Some(d))) if now.saturating_add(d) > LATEST_INSTANT => {
            errs.add("expires_in", LATEST_INSTANT_REASON);
            None
        }
        (None, Some(d)) => Some(d.map(|d| now.saturating_add(d))),
        (None, None) => None,
    }
}

fn redirect(v: &Value, errs: &mut Errors<'_>) -> Option<Redirect> {
    let parsed = v
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .map(Redirect::from_status);
    match parsed {
        Some(Ok(r)) => Some(r),
        _ => {
            errs.add("redirect", "must be one of 301, 302, 307, 308");
            None
        }
    }
}

/// `true` (request parameters added, the target's own winning), `false`, or `"override"`.
fn query_forwarding(v: &Value, errs: &mut Errors<'_>) -> Option<ForwardQuery> {
    match v {
        Value::Bool(true) => Some(ForwardQuery::Add),
        Value::Bool(false) => Some(ForwardQuery::Off),
        Value::String(s) if s == "override" => Some(ForwardQuery::Override),
        _ => {
            errs.add(
                "forward_query",
                "must be true (add the request's parameters), false, or \"override\" (the request's parameters replace the target's)",
            );
            None
        }
    }
}

fn target(v: &Value, rules: &Rules<'_>, errs: &mut Errors<'_>) -> Option<Box<str>> {
    let raw = string(v, "url", errs)?;
    match parse_url(raw) {
        Ok(url) if rules.is_own(&url) => {
            errs.add("url", LOOP_REASON);
            None
        }
        Ok(url) => Some(url),
        Err(e) => {
            errs.add("url", e);
            None
        }
    }
}

/// Parses one link of a create request (`prefix` names its place in a batch).
fn new_link(obj: &Map<String, Value>, rules: &Rules<'_>, errs: &mut Errors<'_>) -> Option<NewLink> {
    let before = errs.list.len();
    let now = now_secs();
    let (mut url, mut domain, mut code) = (None, None, None);
    let mut code_length = rules.default_code_length;
    let mut red = Redirect::default();
    let (mut since, mut at, mut within, mut cap, mut expired_url) = (None, None, None, None, None);
    let mut forward_query = ForwardQuery::Add;
    for (k, v) in obj {
        match k.as_str() {
            "url" => url = target(v, rules, errs),
            "domain" => {
                if v.is_null() {
                    continue;
                }
                if let Some(s) = string(v, "domain", errs) {
                    match Domain::parse(s) {
                        Ok(d) if rules.domains.contains(&d) => domain = Some(d),
                        Ok(d) => errs.add(
                            "domain",
                            format!("{d} is not a link domain of this service (see GET /api/v1/domains)"),
                        ),
                        Err(e) => errs.add("domain", e),
                    }
                }
            }
            "code" => {
                if v.is_null() {
                    continue;
                }
                if let Some(s) = string(v, "code", errs) {
                    match Code::parse_new(s) {
                        Ok(c) => code = Some(c),
                        Err(e) => errs.add("code", e),
                    }
                }
            }
            "code_length" => match v.as_u64() {
                Some(n) if (MIN_CODE_LENGTH as u64..=MAX_CODE_LENGTH as u64).contains(&n) => {
                    code_length = n as usize
                }
                _ => errs.add(
                    "code_length",
                    format!("must be a whole number from {MIN_CODE_LENGTH} to {MAX_CODE_LENGTH}"),
                ),
            },
            "redirect" => red = redirect(v, errs).unwrap_or_default(),
            "expires_at" => at = instant(v, k, errs),
            "expires_in" => within = period(v, k, errs),
            "valid_since" => since = instant(v, k, errs).flatten(),
            "max_visits" => cap = visits_cap(v, errs).flatten(),
            "expired_url" => expired_url = expired_target(v, rules, errs).flatten(),
            "forward_query" => forward_query = query_forwarding(v, errs).unwrap_or_default(),
            other => errs.add(other, format!("unknown field (known: {CREATE_FIELDS})")),
        }
    }
    if !obj.contains_key("url") {
        errs.add("url", "is required");
    }
    let domain = match domain {
        Some(d) => Some(d),
        None if obj.get("domain").is_some_and(|v| !v.is_null()) => None,
        None => match rules.domains.first() {
            Some(d) => Some(d.clone()),
            None => {
                errs.add("domain", "no link domains are configured on this node");
                None
            }
        },
    };
    let expires = expiry(at, within, now, errs).flatten();
    let validity = match Validity::new(since, expires).and_then(|v| v.with_max_visits(cap)) {
        Ok(v) => Some(v),
        Err(e) => {
            errs.add(e.field(), e);
            None
        }
    };
    if errs.list.len() > before {
        return None;
    }
    Some(NewLink {
        domain: domain?,
        code,
        code_length,
        url: url?,
        redirect: red,
        validity: validity?,
        forward_query,
        expired_url,
    })
}

fn object<'v>(v: &'v Value, what: &str) -> Result<&'v Map<String, Value>, Vec<FieldError>> {
    v.as_object()
        .ok_or_else(|| vec![field(what, "must be a JSON object")])
}

/// `POST /api/v1/links`.
pub(crate) fn create(body: &Value, rules: &Rules<'_>) -> Result<NewLink, Vec<FieldError>> {
    let obj = object(body, "body")?;
    let mut errs = Errors {
        prefix: "",
        list: Vec::new(),
    };
    match new_link(obj, rules, &mut errs) {
        Some(l) if errs.list.is_empty() => Ok(l),
        _ => Err(errs.list),
    }
}

/// The most links one batch request may create.
pub(crate) const MAX_BATCH: usize = 10_000;

/// `POST /api/v1/links/batch`: `{"links": [ ... ]}`.
pub(crate) fn batch(body: &Value, rules: &Rules<'_>) -> Result<Vec<NewLink>, Vec<FieldError>> {
    let obj = object(body, "body")?;
    if let Some(k) = obj.keys().find(|k| *k != "links") {
        return Err(vec![field(k.as_str(), "unknown field (known: links)")]);
    }
    let Some(list) = obj.get("links").and_then(Value::as_array) else {
        return Err(vec![field("links", "is required, as an array of links")]);
    };
    if list.is_empty() || list.len() > MAX_BATCH {
        return Err(vec![field(
            "links",
            format!("must hold 1 to {MAX_BATCH} links, not {}", list.len()),
        )]);
    }
    let mut out = Vec::with_capacity(list.len());
    let mut all = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let prefix = format!("links[{i}].");
        let mut errs = Errors {
            prefix: &prefix,
            list: Vec::new(),
        };
        match item.as_object() {
            Some(obj) => {
                if let Some(l) = new_link(obj, rules, &mut errs) {
                    out.push(l);
                }
            }
            None => errs.add("", "must be a JSON object"),
        }
        all.extend(errs.list);
        // A batch with thousands of bad rows needs no thousands of messages.
        if all.len() >= 100 {
            break;
        }
    }
    if all.is_empty() {
        Ok(out)
    } else {
        Err(all)
    }
}

/// `PATCH /api/v1/links/{domain}/{code}`.
pub(crate) fn patch(body: &Value, rules: &Rules<'_>) -> Result<Patch, Vec<FieldError>> {
    let obj = object(body, "body")?;
    let mut errs = Errors {
        prefix: "",
        list: Vec::new(),
    };
    let mut p = Patch::default();
    let (mut at, mut within) = (None, None);
    for (k, v) in obj {
        match k.as_str() {
            "url" => p.url = target(v, rules, &mut errs),
            "redirect" => p.redirect = redirect(v, &mut errs),
            "expires_at" => at = instant(v, k, &mut errs),
            "expires_in" => within = period(v, k, &mut errs),
            "valid_since" => p.valid_since = instant(v, k, &mut errs),
            "max_visits" => p.max_visits = visits_cap(v, &mut errs),
            "expired_url" => p.expired_url = expired_target(v, rules, &mut errs),
            "forward_query" => p.forward_query = query_forwarding(v, &mut errs),
            "domain" | "code" => errs.add(k, "cannot be changed; create a new link instead"),
            other => errs.add(other, format!("unknown field (known: {PATCH_FIELDS})")),
        }
    }
    p.expires_at = expiry(at, within, now_secs(), &mut errs);
    if errs.list.is_empty() {
        Ok(p)
    } else {
        Err(errs.list)
    }
}
