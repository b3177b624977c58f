//! A link's fields, read one at a time from JSON or text and judged together at the end.
use duanlian_link::{
    parse_duration, parse_rfc3339, parse_url, url_host, Code, Domain, ForwardQuery, Link,
    LinkError, Redirect, Validity, LATEST_INSTANT, LATEST_INSTANT_REASON,
};
use duanlian_write::{NewLink, Patch};
use serde_json::Value as Json;
use std::fmt;

/// The shortest and longest generated code a request may ask for.
pub const MIN_CODE_LENGTH: usize = 4;
/// See [`MIN_CODE_LENGTH`].
pub const MAX_CODE_LENGTH: usize = 32;

/// What the fields are for; each takes its own set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// A new link through the API: the code may be generated.
    Create,
    /// Changes to a link through the API: its domain and code stay.
    Patch,
    /// A row of a bulk file: the code is given, and the creation time may be.
    Bulk,
}

impl Form {
    /// The field names this form takes, in the order the documentation lists them.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Form::Create => &[
                "url",
                "domain",
                "code",
                "code_length",
                "redirect",
                "expires_at",
                "expires_in",
                "valid_since",
                "max_visits",
                "expired_url",
                "forward_query",
            ],
            Form::Patch => &[
                "url",
                "redirect",
                "expires_at",
                "expires_in",
                "valid_since",
                "max_visits",
                "expired_url",
                "forward_query",
            ],
            Form::Bulk => &[
                "url",
                "code",
                "domain",
                "redirect",
                "expires_at",
                "valid_since",
                "created_at",
                "forward_query",
                "expires_in",
                "max_visits",
                "expired_url",
            ],
        }
    }
}

/// A field's value as it arrived: typed JSON, or the text of a CSV cell.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    /// A JSON member's value (API bodies, JSON Lines).
    Json(&'a Json),
    /// A CSV cell, trimmed, never empty.
    Text(&'a str),
}

impl<'a> Value<'a> {
    fn is_null(self) -> bool {
        matches!(self, Value::Json(Json::Null))
    }

    fn text(self) -> Option<&'a str> {
        match self {
            Value::Json(Json::String(s)) => Some(s.as_str()),
            Value::Text(s) => Some(s),
            _ => None,
        }
    }
}

/// A bad field: its name (with its place in a batch, `links[3].url`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name, with its place in a batch.
    pub field: String,
    /// Why it was refused, as a stable name for programs and translations (`url_scheme`,
    /// `required`, `unknown_domain`...; the README lists them).
    pub code: &'static str,
    /// Why it was refused, for people.
    pub reason: String,
}

impl FieldError {
    /// An error about `field`.
    pub fn new(
        field: impl Into<String>,
        code: &'static str,
        reason: impl fmt::Display,
    ) -> FieldError {
        FieldError {
            field: field.into(),
            code,
            reason: reason.to_string(),
        }
    }
}

/// Why a value was refused: [`FieldError::code`] and [`FieldError::reason`].
struct Refused(&'static str, String);

fn refused(code: &'static str, reason: impl Into<String>) -> Refused {
    Refused(code, reason.into())
}

impl From<LinkError> for Refused {
    fn from(e: LinkError) -> Refused {
        Refused(e.code(), e.to_string())
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// What the fields are judged against.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// This service's link domains: a link must be on one, and its targets must not point at
    /// one (a redirect loop under our own name). `None` for bulk files, which may name any
    /// domain.
    pub domains: Option<&'a [Domain]>,
    /// The domain of a link that names none.
    pub default_domain: Option<&'a Domain>,
    /// The length of a generated code when the request names none.
    pub code_length: usize,
    /// Whether an expiry in the past is refused: a request creating an expired link is a
    /// mistake, while a bulk file may carry history.
    pub refuse_past: bool,
}

impl<'a> Rules<'a> {
    /// The admin API's rules: links on `domains` (the first is the default).
    pub fn api(domains: &'a [Domain], code_length: usize) -> Rules<'a> {
        Rules {
            domains: Some(domains),
            default_domain: domains.first(),
            code_length,
            refuse_past: true,
        }
    }

    /// A bulk file's rules: any domain, `default_domain` for rows without one.
    pub fn bulk(default_domain: Option<&'a Domain>) -> Rules<'a> {
        Rules {
            domains: None,
            default_domain,
            code_length: 7,
            refuse_past: false,
        }
    }

    fn is_own(&self, url: &str) -> bool {
        let Some(domains) = self.domains else {
            return false;
        };
        let host = url_host(url);
        domains.iter().any(|d| Some(d.as_str()) == host.as_deref())
    }
}

const LOOP_REASON: &str = "points at a link domain of this service (a redirect loop)";
const INSTANT_REASON: &str =
    "must be UTC seconds or an RFC 3339 time such as 2026-12-01T00:00:00Z, or null";
const PERIOD_REASON: &str =
    "must be a period such as \"1d\", \"7d\", \"30d\", \"1y\", \"90m\", a number of seconds, or null";

/// A link's fields as read so far. Each is parsed as it is read; `Some(None)` is an explicit
/// `null` (for a change: remove it). Errors are kept, so one answer names every bad field.
#[derive(Debug)]
pub struct Fields {
    form: Form,
    prefix: String,
    url: Option<Box<str>>,
    domain: Option<Domain>,
    domain_refused: bool,
    code: Option<Code>,
    code_length: Option<usize>,
    redirect: Option<Redirect>,
    expires_at: Option<Option<i64>>,
    expires_in: Option<Option<i64>>,
    valid_since: Option<Option<i64>>,
    max_visits: Option<Option<u64>>,
    expired_url: Option<Option<Box<str>>>,
    forward_query: Option<ForwardQuery>,
    created_at: Option<i64>,
    /// Whether `url` and `code` were named at all (a bad value has its own error).
    url_named: bool,
    code_named: bool,
    errors: Vec<FieldError>,
}

impl Fields {
    /// No fields read yet.
    pub fn new(form: Form) -> Fields {
        Fields {
            form,
            prefix: String::new(),
            url: None,
            domain: None,
            domain_refused: false,
            code: None,
            code_length: None,
            redirect: None,
            expires_at: None,
            expires_in: None,
            valid_since: None,
            max_visits: None,
            expired_url: None,
            forward_query: None,
            created_at: None,
            url_named: false,
            code_named: false,
            errors: Vec::new(),
        }
    }

    /// Fields whose errors are named `{prefix}{field}`, as `links[3].` in a batch.
    pub fn with_prefix(mut self, prefix: String) -> Fields {
        self.prefix = prefix;
        self
    }

    /// Reads all of a JSON object's members.
    pub fn from_object(form: Form, obj: &serde_json::Map<String, Json>) -> Fields {
        let mut f = Fields::new(form);
        f.read_object(obj);
        f
    }

    /// Reads every member of `obj`.
    pub fn read_object(&mut self, obj: &serde_json::Map<String, Json>) {
        for (k, v) in obj {
            self.read(k, Value::Json(v));
        }
    }

    fn fail(&mut self, name: &str, code: &'static str, reason: impl fmt::Display) {
        self.errors.push(FieldError::new(
            format!("{}{name}", self.prefix),
            code,
            reason,
        ));
    }

    /// Reads one field; a bad value or a name this form does not take is kept as an error.
    pub fn read(&mut self, name: &str, value: Value<'_>) {
        if !self.form.fields().contains(&name) {
            let Refused(code, reason) = match (self.form, name) {
                (Form::Patch, "domain" | "code") => {
                    refused("immutable", "cannot be changed; create a new link instead")
                }
                _ => refused(
                    "unknown_field",
                    format!("unknown field (known: {})", self.form.fields().join(", ")),
                ),
            };
            return self.fail(name, code, reason);
        }
        self.url_named |= name == "url";
        self.code_named |= name == "code";
        // A null domain or code asks for the default; a bulk file's null is an empty cell.
        if value.is_null() && (self.form == Form::Bulk || matches!(name, "domain" | "code")) {
            self.code_named &= name != "code";
            return;
        }
        let result = match name {
            "url" => target(value).map(|u| self.url = Some(u)),
            "domain" => match value.text().map(Domain::parse) {
                Some(Ok(d)) => {
                    self.domain = Some(d);
                    Ok(())
                }
                Some(Err(e)) => {
                    self.domain_refused = true;
                    Err(e.into())
                }
                None => {
                    self.domain_refused = true;
                    Err(not_string())
                }
            },
            "code" => match value.text() {
                Some(s) => Code::parse_new(s)
                    .map(|c| self.code = Some(c))
                    .map_err(Refused::from),
                None => Err(not_string()),
            },
            "code_length" => match whole(value) {
                Some(n) if (MIN_CODE_LENGTH as u64..=MAX_CODE_LENGTH as u64).contains(&n) => {
                    self.code_length = Some(n as usize);
                    Ok(())
                }
                _ => Err(refused(
                    "code_length",
                    format!("must be a whole number from {MIN_CODE_LENGTH} to {MAX_CODE_LENGTH}"),
                )),
            },
            "redirect" => redirect(value).map(|r| self.redirect = Some(r)),
            "expires_at" => instant(value).map(|t| self.expires_at = Some(t)),
            "valid_since" => instant(value).map(|t| self.valid_since = Some(t)),
            "created_at" => instant(value).map(|t| self.created_at = t),
            "expires_in" => period(value).map(|d| self.expires_in = Some(d)),
            "max_visits" => visits_cap(value).map(|n| self.max_visits = Some(n)),
            "expired_url" => {
                if value.is_null() {
                    self.expired_url = Some(None);
                    Ok(())
                } else {
                    target(value).map(|u| self.expired_url = Some(Some(u)))
                }
            }
            "forward_query" => query_forwarding(value).map(|q| self.forward_query = Some(q)),
            _ => Ok(()),
        };
        if let Err(Refused(code, reason)) = result {
            self.fail(name, code, reason);
        }
    }

    /// Keeps an error for a field whose value could not even be read (a cell not in UTF-8).
    pub(crate) fn read_error(&mut self, name: &str, code: &'static str, reason: &str) {
        self.url_named |= name == "url";
        self.code_named |= name == "code";
        self.fail(name, code, reason);
    }

    /// Sets the domain already parsed (bulk files parse each spelling once).
    pub fn set_domain(&mut self, domain: Domain) {
        self.domain = Some(domain);
    }

    /// Whether a field was read with a bad value or name.
    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Targets checked against the rules: neither may point at one of our own domains.
    fn check_targets(&mut self, rules: &Rules<'_>) {
        let own_url = self.url.as_deref().is_some_and(|u| rules.is_own(u));
        let own_expired = matches!(&self.expired_url, Some(Some(u)) if rules.is_own(u));
        if own_url {
            self.url = None;
            self.fail("url", "redirect_loop", LOOP_REASON);
        }
        if own_expired {
            self.expired_url = None;
            self.fail("expired_url", "redirect_loop", LOOP_REASON);
        }
    }

    /// The expiry from `expires_at` and `expires_in`, which contradict each other when both
    /// are given; `None` when neither was.
    fn expiry(&mut self, rules: &Rules<'_>, now: i64) -> Option<Option<i64>> {
        match (self.expires_at, self.expires_in) {
            (Some(Some(_)), Some(Some(_))) => {
                let both = "give expires_at or expires_in, not both";
                self.fail("expires_at", "expiry_twice", both);
                self.fail("expires_in", "expiry_twice", both);
                None
            }
            (Some(Some(t)), _) if rules.refuse_past && t < now => {
                self.fail("expires_at", "past", "is in the past");
                None
            }
            (Some(t), _) => Some(t),
            (None, Some(Some(d))) if now.saturating_add(d) > LATEST_INSTANT => {
                self.fail("expires_in", "too_late", LATEST_INSTANT_REASON);
                None
            }
            (None, Some(d)) => Some(d.map(|d| now.saturating_add(d))),
            (None, None) => None,
        }
    }

    fn validity(&mut self, expires: Option<i64>) -> Option<Validity> {
        let since = self.valid_since.flatten();
        let cap = self.max_visits.flatten();
        match Validity::new(since, expires).and_then(|v| v.with_max_visits(cap)) {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(e.field(), e.code(), e);
                None
            }
        }
    }

    fn domain(&mut self, rules: &Rules<'_>) -> Option<Domain> {
        match self.domain.take() {
            Some(d) => match rules.domains {
                Some(ours) if !ours.contains(&d) => {
                    self.fail(
                        "domain",
                        "unknown_domain",
                        format!(
                            "{d} is not a link domain of this service (see GET /api/v1/domains)"
                        ),
                    );
                    None
                }
                _ => Some(d),
            },
            None if self.domain_refused => None,
            None => match rules.default_domain {
                Some(d) => Some(d.clone()),
                None => {
                    let reason = match rules.domains {
                        Some(_) => "no link domains are configured on this node",
                        None => "missing, and no --default-domain given",
                    };
                    self.fail("domain", "required", reason);
                    None
                }
            },
        }
    }

    fn required<T>(&mut self, name: &str, value: Option<T>, named: bool) -> Option<T> {
        if !named {
            self.fail(name, "required", "is required");
        }
        value
    }

    fn done<T>(self, value: Option<T>) -> Result<T, Vec<FieldError>> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => Err(self.errors),
        }
    }

    /// A create request's link ([`Form::Create`]).
    pub fn new_link(mut self, rules: &Rules<'_>, now: i64) -> Result<NewLink, Vec<FieldError>> {
        self.check_targets(rules);
        let (url, named) = (self.url.take(), self.url_named);
        let url = self.required("url", url, named);
        let domain = self.domain(rules);
        let expires = self.expiry(rules, now).flatten();
        let validity = self.validity(expires);
        let link = (|| {
            Some(NewLink {
                domain: domain?,
                code: self.code.take(),
                code_length: self.code_length.unwrap_or(rules.code_length),
                url: url?,
                redirect: self.redirect.unwrap_or_default(),
                validity: validity?,
                forward_query: self.forward_query.unwrap_or(ForwardQuery::Add),
                expired_url: self.expired_url.take().flatten(),
            })
        })();
        self.done(link)
    }

    /// A bulk row's link ([`Form::Bulk`]), created at `created_at` or else `now`.
    pub fn link(mut self, rules: &Rules<'_>, now: i64) -> Result<Link, Vec<FieldError>> {
        self.check_targets(rules);
        let (url, named) = (self.url.take(), self.url_named);
        let url = self.required("url", url, named);
        let (code, named) = (self.code.take(), self.code_named);
        let code = self.required("code", code, named);
        let domain = self.domain(rules);
        let expires = self.expiry(rules, now).flatten();
        let validity = self.validity(expires);
        let link = (|| {
            Some(Link {
                domain: domain?,
                code: code?,
                url: url?,
                redirect: self.redirect.unwrap_or_default(),
                validity: validity?,
                created_at: self.created_at.unwrap_or(now),
                forward_query: self.forward_query.unwrap_or_default(),
                expired_url: self.expired_url.take().flatten(),
            })
        })();
        self.done(link)
    }

    /// A change request's patch ([`Form::Patch`]).
    pub fn patch(mut self, rules: &Rules<'_>, now: i64) -> Result<Patch, Vec<FieldError>> {
        self.check_targets(rules);
        let expires_at = self.expiry(rules, now);
        let patch = Patch {
            url: self.url.take(),
            redirect: self.redirect,
            valid_since: self.valid_since,
            expires_at,
            forward_query: self.forward_query,
            max_visits: self.max_visits,
            expired_url: self.expired_url.take(),
        };
        self.done(Some(patch))
    }
}

fn not_string() -> Refused {
    refused("not_string", "must be a string")
}

fn target(v: Value<'_>) -> Result<Box<str>, Refused> {
    let raw = v.text().ok_or_else(not_string)?;
    parse_url(raw).map_err(|e| match e {
        // The field name is already the error's name.
        LinkError::ExpiredUrl(inner) => Refused::from(*inner),
        e => e.into(),
    })
}

fn whole(v: Value<'_>) -> Option<u64> {
    match v {
        Value::Json(j) => j.as_u64(),
        Value::Text(s) => s.trim().parse().ok(),
    }
}

/// An instant: UTC seconds, or an RFC 3339 time (`2026-12-01T00:00:00+08:00`), or null.
fn instant(v: Value<'_>) -> Result<Option<i64>, Refused> {
    let parsed = match v {
        Value::Json(Json::Null) => return Ok(None),
        Value::Json(Json::Number(n)) => n.as_i64(),
        other => match other.text().map(str::trim) {
            Some(s) => Some(s.parse::<i64>().ok().or_else(|| parse_rfc3339(s)).ok_or_else(|| {
                refused("time", format!("{s:?} is neither UTC seconds nor an RFC 3339 time such as 2026-12-01T00:00:00Z"))
            })?),
            None => None,
        },
    };
    match parsed {
        None => Err(refused("time", INSTANT_REASON)),
        Some(t) if t > LATEST_INSTANT => Err(refused("too_late", LATEST_INSTANT_REASON)),
        Some(t) => Ok(Some(t)),
    }
}

/// A validity period: `"1d"`, `"7d"`, `"30d"`, `"1y"`, `"90m"`, seconds, or null (permanent).
fn period(v: Value<'_>) -> Result<Option<i64>, Refused> {
    let parsed = match v {
        Value::Json(Json::Null) => return Ok(None),
        Value::Json(Json::Number(n)) => n.as_i64(),
        other => other.text().and_then(parse_duration),
    };
    match parsed.filter(|d| *d > 0) {
        Some(d) => Ok(Some(d)),
        None => Err(refused("period", PERIOD_REASON)),
    }
}

fn visits_cap(v: Value<'_>) -> Result<Option<u64>, Refused> {
    if v.is_null() {
        return Ok(None);
    }
    match whole(v) {
        Some(n) if n > 0 => Ok(Some(n)),
        _ => Err(refused(
            "max_visits",
            "must be a whole number of at least 1, or null",
        )),
    }
}

fn redirect(v: Value<'_>) -> Result<Redirect, Refused> {
    let status = match v {
        Value::Json(Json::Number(n)) => n.as_u64(),
        other => other.text().and_then(|s| s.trim().parse().ok()),
    };
    match status.and_then(|n| u16::try_from(n).ok()) {
        Some(s) => Redirect::from_status(s).map_err(Refused::from),
        None => Err(refused(
            "redirect_status",
            "must be one of 301, 302, 307, 308",
        )),
    }
}

/// `true` (the request's parameters added, the target's own winning), `false`, or `"override"`
/// (the request's parameters replace the target's); a CSV cell may also say `1`/`yes`, `0`/`no`.
fn query_forwarding(v: Value<'_>) -> Result<ForwardQuery, Refused> {
    let parsed = match v {
        Value::Json(Json::Bool(true)) => Some(ForwardQuery::Add),
        Value::Json(Json::Bool(false)) => Some(ForwardQuery::Off),
        Value::Json(Json::String(s)) if s == "override" => Some(ForwardQuery::Override),
        Value::Json(_) => None,
        Value::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(ForwardQuery::Add),
            "false" | "0" | "no" => Some(ForwardQuery::Off),
            "override" => Some(ForwardQuery::Override),
            _ => None,
        },
    };
    parsed.ok_or_else(|| {
        refused("forward_query", "must be true (add the request's parameters), false, or \"override\" (the request's parameters replace the target's)")
    })
}
