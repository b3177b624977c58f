//! `GET /api/v1/links`: the links in code order page by page, or filtered by text and state, or
//! sorted by creation or visits.
//!
//! Code order walks the index from a cursor and costs what a page costs. A filter scans, at
//! most `SCAN` links a request (60 ms here), and hands back a cursor to go on from. A sort must
//! see every link: it scans them all (0.32–0.35 s a million on the 2-core test VM), keeps only
//! the best `offset + limit`, and pages by offset up to `MAX_OFFSET`.
use super::problem::{field, FieldError};
use super::routes::parse_query;
use duanlian_index::Index;
use duanlian_link::{Domain, Link};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Links a filtered request looks at before it answers with what it found and a cursor.
const SCAN: usize = 200_000;
/// Links read from the index at a time.
const CHUNK: usize = 1_000;
/// The deepest page a sorted listing reaches: sorting keeps this many links in memory.
pub(super) const MAX_OFFSET: usize = 10_000;

/// How a listing is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sort {
    Code,
    Created { newest_first: bool },
    Visits { most_first: bool },
}

/// A link's state as the redirect path would answer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LinkState {
    Active,
    /// Its expiry passed, or its visit cap was reached.
    Expired,
    /// Its `valid_since` is still ahead.
    Pending,
}

impl LinkState {
    fn parse(s: &str) -> Option<LinkState> {
        match s {
            "active" => Some(LinkState::Active),
            "expired" => Some(LinkState::Expired),
            "pending" => Some(LinkState::Pending),
            _ => None,
        }
    }

    /// The state, and what ended an expired link (`time` or `visits`).
    pub(super) fn of(link: &Link, visits: u64, now: i64) -> (LinkState, Option<&'static str>) {
        // As the redirect path decides: a used-up cap answers "expired" as a past expiry does.
        let used_up = link.validity.max_visits.is_some_and(|cap| visits >= cap);
        match link.validity.state_at(now) {
            duanlian_link::State::Expired => (LinkState::Expired, Some("time")),
            duanlian_link::State::Active if used_up => (LinkState::Expired, Some("visits")),
            duanlian_link::State::Active => (LinkState::Active, None),
            duanlian_link::State::Pending => (LinkState::Pending, None),
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            LinkState::Active => "active",
            LinkState::Expired => "expired",
            LinkState::Pending => "pending",
        }
    }
}

/// A listing request.
pub(super) struct Query {
    domain: Option<Domain>,
    limit: usize,
    cursor: Option<String>,
    /// Lowercase, non-ASCII percent-encoded as stored targets are.
    search: Option<String>,
    /// The term as typed, lowercase, if it has non-ASCII characters: for domain names, which
    /// targets keep in punycode.
    search_text: Option<String>,
    state: Option<LinkState>,
    sort: Sort,
}

impl Query {
    pub(super) fn parse(query: &str) -> Result<Query, Vec<FieldError>> {
        let mut q = Query {
            domain: None,
            limit: 100,
            cursor: None,
            search: None,
            search_text: None,
            state: None,
            sort: Sort::Code,
        };
        let mut errors = Vec::new();
        for (k, v) in parse_query(query) {
            match k.as_str() {
                "q" if !v.trim().is_empty() => {
                    q.search = Some(stored_form(v.trim()));
                    q.search_text = (!v.is_ascii()).then(|| v.trim().to_lowercase());
                }
                "q" => {}
                "domain" => match Domain::parse(&v) {
                    Ok(d) => q.domain = Some(d),
                    Err(e) => errors.push(field("domain", e.code(), e)),
                },
                "limit" => match v.parse::<usize>() {
                    Ok(n) if (1..=1000).contains(&n) => q.limit = n,
                    _ => errors.push(field("limit", "range", "must be a whole number from 1 to 1000")),
                },
                "cursor" if !v.is_empty() => q.cursor = Some(v),
                "cursor" => {}
                "state" => match LinkState::parse(&v) {
                    Some(s) => q.state = Some(s),
                    None => errors.push(field(
                        "state",
                        "unknown_value",
                        "must be active, expired or pending",
                    )),
                },
                "sort" => match v.as_str() {
                    "code" => q.sort = Sort::Code,
                    "created" => q.sort = Sort::Created { newest_first: false },
                    "-created" => q.sort = Sort::Created { newest_first: true },
                    "visits" => q.sort = Sort::Visits { most_first: false },
                    "-visits" => q.sort = Sort::Visits { most_first: true },
                    _ => errors.push(field(
                        "sort",
                        "unknown_value",
                        "must be code, created, -created (newest first), visits or -visits (most first)",
                    )),
                },
                other => errors.push(field(
                    other,
                    "unknown_field",
                    "unknown parameter (known: domain, q, state, sort, limit, cursor)",
                )),
            }
        }
        let bad_cursor = || {
            field(
                "cursor",
                "cursor",
                "is not a cursor from an earlier page of this listing",
            )
        };
        match (&q.cursor, q.sort) {
            (Some(c), Sort::Code) if !valid_key_cursor(c) => errors.push(bad_cursor()),
            (Some(c), Sort::Created { .. } | Sort::Visits { .. }) => match c.parse::<usize>() {
                Ok(n) if n <= MAX_OFFSET => {}
                _ => errors.push(bad_cursor()),
            },
            _ => {}
        }
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(errors)
        }
    }

    /// The page of links and the cursor of the next, if there is one.
    pub(super) fn run(&self, index: &Index) -> (Vec<Link>, Option<String>) {
        let now = duanlian_link::now_secs();
        let keep = |l: &Link| -> bool {
            let state_ok = self.state.is_none_or(|want| {
                let visits = index.visits().count(l.domain.as_str(), l.code.as_str());
                LinkState::of(l, visits, now).0 == want
            });
            state_ok
                && self.search.as_deref().is_none_or(|q| {
                    matches(l, q) || self.search_text.as_deref().is_some_and(|t| in_idn(l, t))
                })
        };
        match self.sort {
            Sort::Code if self.search.is_none() && self.state.is_none() => self.by_code(index),
            Sort::Code => self.filtered(index, keep),
            sort => self.sorted(index, sort, keep),
        }
    }

    fn domain(&self) -> Option<&str> {
        self.domain.as_ref().map(|d| d.as_str())
    }

    fn after(&self) -> Option<(&str, &str)> {
        self.cursor.as_deref().and_then(|c| c.split_once('/'))
    }

    fn by_code(&self, index: &Index) -> (Vec<Link>, Option<String>) {
        let mut links = index.list(self.domain(), self.after(), self.limit + 1);
        let next = if links.len() > self.limit {
            links.truncate(self.limit);
            links.last().map(cursor)
        } else {
            None
        };
        (links, next)
    }

    /// The listing's links after `after`, in code order, read from the index a chunk at a time.
    fn links_after<'a>(
        &'a self,
        index: &'a Index,
        mut after: Option<(String, String)>,
    ) -> impl Iterator<Item = Link> + 'a {
        let mut chunk = Vec::new().into_iter();
        let mut exhausted = false;
        std::iter::from_fn(move || loop {
            if let Some(l) = chunk.next() {
                return Some(l);
            }
            if exhausted {
                return None;
            }
            let from = after.as_ref().map(|(d, c)| (d.as_str(), c.as_str()));
            let links = index.list(self.domain(), from, CHUNK);
            exhausted = links.len() < CHUNK;
            after = links
                .last()
                .map(|l| (l.domain.as_str().to_owned(), l.code.as_str().to_owned()));
            chunk = links.into_iter();
        })
    }

    /// Links that pass `keep`, in code order; a request scans at most `SCAN`, so that a filter
    /// over millions of links answers promptly page by page.
    fn filtered(&self, index: &Index, keep: impl Fn(&Link) -> bool) -> (Vec<Link>, Option<String>) {
        let after = self.after().map(|(d, c)| (d.to_owned(), c.to_owned()));
        let mut found = Vec::new();
        // The last link looked at, when it was not kept (else it is the last found).
        let mut passed = None;
        for (scanned, l) in self.links_after(index, after).enumerate() {
            if scanned == SCAN {
                // The cursor goes on after the last link looked at.
                let at = passed.as_ref().or(found.last()).map(cursor);
                return (found, at);
            }
            if keep(&l) {
                passed = None;
                found.push(l);
                if found.len() == self.limit {
                    let at = found.last().map(cursor);
                    return (found, at);
                }
            } else {
                passed = Some(l);
            }
        }
        (found, None)
    }

    /// Links that pass `keep`, ordered by `sort`, ties in code order; pages by offset.
    fn sorted(
        &self,
        index: &Index,
        sort: Sort,
        keep: impl Fn(&Link) -> bool,
    ) -> (Vec<Link>, Option<String>) {
        let offset = self
            .cursor
            .as_deref()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0usize);
        let want = offset + self.limit;
        // The worst kept link on top, to be dropped for a better one.
        let mut best: BinaryHeap<Ranked> = BinaryHeap::new();
        let mut matched = 0usize;
        for link in self.links_after(index, None).filter(|l| keep(l)) {
            matched += 1;
            let rank = match sort {
                Sort::Created { newest_first } => sign(newest_first) * i128::from(link.created_at),
                Sort::Visits { most_first } => {
                    let visits = index
                        .visits()
                        .count(link.domain.as_str(), link.code.as_str());
                    sign(most_first) * i128::from(visits)
                }
                Sort::Code => 0,
            };
            let entry = Ranked { rank, link };
            if best.len() < want {
                best.push(entry);
            } else if best.peek().is_some_and(|worst| entry < *worst) {
                best.pop();
                best.push(entry);
            }
        }
        let page: Vec<Link> = best
            .into_sorted_vec()
            .into_iter()
            .skip(offset)
            .map(|r| r.link)
            .collect();
        let next = (matched > want && want < MAX_OFFSET).then(|| want.to_string());
        (page, next)
    }
}

fn sign(descending: bool) -> i128 {
    if descending {
        1
    } else {
        -1
    }
}

/// A link in the sort's heap, ordered best first: the higher rank, then code order.
struct Ranked {
    rank: i128,
    link: Link,
}

impl Ranked {
    fn key(&self) -> (Reverse<i128>, &str, &str) {
        (
            Reverse(self.rank),
            self.link.domain.as_str(),
            self.link.code.as_str(),
        )
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Ranked) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Ranked) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Ranked) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

fn cursor(l: &Link) -> String {
    format!("{}/{}", l.domain, l.code)
}

fn valid_key_cursor(c: &str) -> bool {
    c.split_once('/')
        .is_some_and(|(d, c)| !d.is_empty() && !c.is_empty())
}

/// A search term as stored targets spell it: lowercase, and non-ASCII percent-encoded (so that
/// `商品` finds `https://shop.example.cn/%E5%95%86%E5%93%81`).
fn stored_form(q: &str) -> String {
    let mut out = String::with_capacity(q.len() * 3);
    duanlian_link::push_percent_encoded(&mut out, &q.to_lowercase());
    out
}

/// Whether the link's target, read back in its own script, contains `text`: only a target with a
/// punycode label can (the rest are matched in their stored form), so others cost nothing.
fn in_idn(l: &Link, text: &str) -> bool {
    l.url.contains("xn--")
        && duanlian_link::display_url(&l.url)
            .to_lowercase()
            .contains(text)
}

/// Whether the link's code or target contains `q` (from [`stored_form`]), ignoring ASCII case.
/// Codes and stored URLs are ASCII, so a window compare finds what lowercasing both would,
/// without a copy.
fn matches(l: &Link, q: &str) -> bool {
    let contains = |hay: &str| {
        hay.as_bytes()
            .windows(q.len())
            .any(|w| w.eq_ignore_ascii_case(q.as_bytes()))
    };
    contains(l.code.as_str()) || contains(&l.url)
}
