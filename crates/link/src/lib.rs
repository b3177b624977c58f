//! The link model of duanlian: what a short link is, and which inputs make a valid one.
//!
//! A link maps `(domain, code)` to a target URL, answered with one of four redirect statuses and
//! optionally bounded in time. Every other crate takes its notion of "valid" from here, so the
//! bulk loader, the admin API and the redirect path agree on what may reach a `Location` header.
//!
//! ```
//! use duanlian_link::{Domain, Code, Link, Redirect, Validity};
//!
//! let link = Link {
//!     domain: Domain::parse("Go.Example.CN")?,
//!     code: Code::parse("x7Kp2Qa")?,
//!     url: duanlian_link::parse_url("https://shop.example.com/item/42?utm_source=sms")?,
//!     redirect: Redirect::Found,
//!     validity: Validity::new(None, Some(2_000_000_000))?.with_max_visits(Some(1000))?,
//!     created_at: 1_700_000_000,
//!     forward_query: duanlian_link::ForwardQuery::Add,
//!     expired_url: None,
//! };
//! assert_eq!(link.domain.as_str(), "go.example.cn");
//! assert!(link.validity.state_at(1_900_000_000).is_active());
//! # Ok::<(), duanlian_link::LinkError>(())
//! ```
#![forbid(unsafe_code)]

mod code;
mod domain;
mod error;
mod extras;
mod time;
mod url;
mod validity;

pub use code::{Code, MAX_CODE_LEN, RESERVED_CODES};
pub use domain::{host_key, Domain, HostBuf, MAX_DOMAIN_LEN};
pub use error::LinkError;
pub use extras::{decode_extras, encode_extras, has_extras, Extras};
pub use time::{
    format_date, format_rfc3339, parse_duration, parse_rfc3339, LATEST_INSTANT,
    LATEST_INSTANT_REASON,
};
pub use url::{display_url, merge_query, parse_url, push_percent_encoded, url_host, MAX_URL_LEN};

pub use validity::{State, Validity};

/// The HTTP status a link answers with. Default is [`Redirect::Found`] (302).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Redirect {
    /// 301 Moved Permanently: cached by browsers; the method may turn into GET.
    Moved,
    /// 302 Found: not cached; what link shorteners answer by default.
    #[default]
    Found,
    /// 307 Temporary Redirect: like 302 but the method is kept.
    Temporary,
    /// 308 Permanent Redirect: like 301 but the method is kept.
    Permanent,
}

impl Redirect {
    /// All kinds, in status order.
    pub const ALL: [Redirect; 4] = [
        Redirect::Moved,
        Redirect::Found,
        Redirect::Temporary,
        Redirect::Permanent,
    ];

    /// The status code on the wire.
    pub const fn status(self) -> u16 {
        match self {
            Redirect::Moved => 301,
            Redirect::Found => 302,
            Redirect::Temporary => 307,
            Redirect::Permanent => 308,
        }
    }

    /// The kind for a status code, if it is one of the four redirects.
    pub fn from_status(status: u16) -> Result<Redirect, LinkError> {
        Redirect::ALL
            .into_iter()
            .find(|r| r.status() == status)
            .ok_or(LinkError::Redirect(status))
    }

    /// A compact number for storage formats (0..=3), stable across versions.
    pub const fn to_u8(self) -> u8 {
        match self {
            Redirect::Moved => 0,
            Redirect::Found => 1,
            Redirect::Temporary => 2,
            Redirect::Permanent => 3,
        }
    }

    /// The inverse of [`Redirect::to_u8`].
    pub const fn from_u8(v: u8) -> Option<Redirect> {
        match v {
            0 => Some(Redirect::Moved),
            1 => Some(Redirect::Found),
            2 => Some(Redirect::Temporary),
            3 => Some(Redirect::Permanent),
            _ => None,
        }
    }
}

/// What a redirect does with the request's query string (`?utm_source=...` on the short link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ForwardQuery {
    /// Dropped: the target is answered as stored.
    Off,
    /// Appended to the target's: request parameters are added, but never replace one the target
    /// already has, so a clicker cannot change a target's `next=` or `redirect_uri=`.
    #[default]
    Add,
    /// Merged, the request's parameters replacing the target's of the same name. Whoever holds
    /// the short link can then rewrite the target's own parameters (an open redirect if the
    /// target has a `next=`); only for targets where that is wanted.
    Override,
}

impl ForwardQuery {
    /// Whether the query string is forwarded at all.
    pub const fn is_on(self) -> bool {
        !matches!(self, ForwardQuery::Off)
    }
}

/// One short link, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The link domain the code lives on.
    pub domain: Domain,
    /// The code: the path after `/`.
    pub code: Code,
    /// The absolute target URL, already normalised by [`parse_url`].
    pub url: Box<str>,
    /// Which redirect status answers it.
    pub redirect: Redirect,
    /// When it may redirect.
    pub validity: Validity,
    /// When it was created, in UTC seconds.
    pub created_at: i64,
    /// What a redirect does with the request's query string. Default is
    /// [`ForwardQuery::Add`]: appended, the target's own parameters winning on a clash.
    pub forward_query: ForwardQuery,
    /// Where an expired link sends visitors instead of answering 410.
    pub expired_url: Option<Box<str>>,
}

/// One change to the link set, as a change feed (the journal, later a cluster) delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create or replace a link.
    Put(Link),
    /// Remove a link, wherever it lives.
    Delete {
        /// The link domain.
        domain: Domain,
        /// The code.
        code: Code,
    },
}

impl Change {
    /// The `(domain, code)` the change is about.
    pub fn key(&self) -> (&Domain, &Code) {
        match self {
            Change::Put(l) => (&l.domain, &l.code),
            Change::Delete { domain, code } => (domain, code),
        }
    }
}

/// The current time in UTC seconds, the unit every timestamp in duanlian uses.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_round_trips() {
        for r in Redirect::ALL {
            assert_eq!(Redirect::from_status(r.status()), Ok(r));
            assert_eq!(Redirect::from_u8(r.to_u8()), Some(r));
        }
        assert_eq!(Redirect::from_status(303), Err(LinkError::Redirect(303)));
        assert_eq!(Redirect::from_u8(4), None);
    }
}
