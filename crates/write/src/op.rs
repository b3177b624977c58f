//! The write operations and their outcomes.
use crate::WriteError;
use duanlian_link::{Code, Domain, ForwardQuery, Link, Redirect, Validity};

/// A link to create.
#[derive(Debug, Clone)]
pub struct NewLink {
    /// Its link domain (the API checks it is one of ours).
    pub domain: Domain,
    /// A chosen code, or `None` to generate one.
    pub code: Option<Code>,
    /// Length of a generated code.
    pub code_length: usize,
    /// Target, already checked by [`duanlian_link::parse_url`].
    pub url: Box<str>,
    /// Redirect status.
    pub redirect: Redirect,
    /// Validity window.
    pub validity: Validity,
    /// Whether the request's query string is forwarded.
    pub forward_query: ForwardQuery,
    /// Where the link sends visitors once expired.
    pub expired_url: Option<Box<str>>,
}

impl NewLink {
    /// The link this request creates under `code`, created at `now`.
    pub fn into_link(self, code: Code, now: i64) -> Link {
        Link {
            domain: self.domain,
            code,
            url: self.url,
            redirect: self.redirect,
            validity: self.validity,
            created_at: now,
            forward_query: self.forward_query,
            expired_url: self.expired_url,
        }
    }
}

/// Fields a PATCH may change; `None` leaves a field as it is. For the validity bounds,
/// `Some(None)` clears the bound.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    /// New target.
    pub url: Option<Box<str>>,
    /// New redirect status.
    pub redirect: Option<Redirect>,
    /// New start of validity.
    pub valid_since: Option<Option<i64>>,
    /// New expiry.
    pub expires_at: Option<Option<i64>>,
    /// New query forwarding.
    pub forward_query: Option<ForwardQuery>,
    /// New visit cap (`Some(None)` removes it).
    pub max_visits: Option<Option<u64>>,
    /// New expired-link target (`Some(None)` removes it).
    pub expired_url: Option<Option<Box<str>>>,
}

impl Patch {
    /// `link` with this patch's changes; an error if they leave an invalid link (an empty
    /// validity window, a zero visit cap).
    pub fn apply_to(self, mut link: Link) -> Result<Link, WriteError> {
        if let Some(url) = self.url {
            link.url = url;
        }
        if let Some(r) = self.redirect {
            link.redirect = r;
        }
        if let Some(f) = self.forward_query {
            link.forward_query = f;
        }
        if let Some(u) = self.expired_url {
            link.expired_url = u;
        }
        link.validity = Validity::new(
            self.valid_since.unwrap_or(link.validity.valid_since),
            self.expires_at.unwrap_or(link.validity.expires_at),
        )
        .and_then(|v| v.with_max_visits(self.max_visits.unwrap_or(link.validity.max_visits)))
        .map_err(WriteError::Invalid)?;
        Ok(link)
    }
}

/// A write request.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create links, all or none (one journal record).
    Create(Vec<NewLink>),
    /// Change an existing link.
    Update {
        /// Link domain.
        domain: Domain,
        /// Code.
        code: Code,
        /// What to change.
        patch: Patch,
    },
    /// Delete an existing link.
    Delete {
        /// Link domain.
        domain: Domain,
        /// Code.
        code: Code,
    },
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The links created, in request order.
    Created(Vec<Link>),
    /// The link after the update.
    Updated(Link),
    /// The link is gone.
    Deleted,
}
