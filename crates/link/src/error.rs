use std::fmt;

/// Why an input is not a valid part of a link. [`LinkError::field`] names the input field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The code is empty.
    CodeEmpty,
    /// The code is longer than [`crate::MAX_CODE_LEN`].
    CodeTooLong(usize),
    /// The code has a character outside `[A-Za-z0-9_-]`.
    CodeChar(char),
    /// The code is a path the service answers itself.
    CodeReserved(String),
    /// The domain is empty.
    DomainEmpty,
    /// The domain is longer than [`crate::MAX_DOMAIN_LEN`].
    DomainTooLong(usize),
    /// The domain is not a host name (letters, digits, `-`, dots between labels of 1 to 63).
    DomainSyntax(String),
    /// The URL is empty.
    UrlEmpty,
    /// The URL is longer than [`crate::MAX_URL_LEN`] bytes.
    UrlTooLong(usize),
    /// The URL has no scheme, or one other than `http` or `https`.
    UrlScheme,
    /// The URL is not absolute (`scheme://host...`).
    UrlNotAbsolute,
    /// The URL has a control character or white space at a byte offset.
    UrlControl(usize),
    /// The URL's host is missing or malformed.
    UrlHost(&'static str),
    /// A redirect status other than 301, 302, 307 or 308.
    Redirect(u16),
    /// `valid_since` is not before `expires_at`.
    ValidityOrder,
    /// `max_visits` is 0.
    MaxVisitsZero,
    /// The expired-link target is not a valid URL.
    ExpiredUrl(Box<LinkError>),
}

impl LinkError {
    /// The input field the error is about: `code`, `domain`, `url`, `redirect` or `valid_since`.
    pub fn field(&self) -> &'static str {
        match self {
            LinkError::CodeEmpty
            | LinkError::CodeTooLong(_)
            | LinkError::CodeChar(_)
            | LinkError::CodeReserved(_) => "code",
            LinkError::DomainEmpty | LinkError::DomainTooLong(_) | LinkError::DomainSyntax(_) => {
                "domain"
            }
            LinkError::UrlEmpty
            | LinkError::UrlTooLong(_)
            | LinkError::UrlScheme
            | LinkError::UrlNotAbsolute
            | LinkError::UrlControl(_)
            | LinkError::UrlHost(_) => "url",
            LinkError::Redirect(_) => "redirect",
            LinkError::ValidityOrder => "valid_since",
            LinkError::MaxVisitsZero => "max_visits",
            LinkError::ExpiredUrl(_) => "expired_url",
        }
    }
}

impl fmt::Display for LinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkError::CodeEmpty => f.write_str("code is empty"),
            LinkError::CodeTooLong(n) => write!(
                f,
                "code is {n} characters, at most {} allowed",
                crate::MAX_CODE_LEN
            ),
            LinkError::CodeChar(c) => write!(
                f,
                "code has {c:?}; only letters, digits, '_' and '-' are allowed"
            ),
            LinkError::CodeReserved(c) => {
                write!(f, "code {c:?} is reserved for the service's own endpoints")
            }
            LinkError::DomainEmpty => f.write_str("domain is empty"),
            LinkError::DomainTooLong(n) => write!(
                f,
                "domain is {n} characters, at most {} allowed",
                crate::MAX_DOMAIN_LEN
            ),
            LinkError::DomainSyntax(why) => write!(f, "not a host name: {why}"),
            LinkError::UrlEmpty => f.write_str("url is empty"),
            LinkError::UrlTooLong(n) => write!(
                f,
                "url is {n} bytes, at most {} allowed",
                crate::MAX_URL_LEN
            ),
            LinkError::UrlScheme => f.write_str("url must start with http:// or https://"),
            LinkError::UrlNotAbsolute => f.write_str("url must be absolute (scheme://host/...)"),
            LinkError::UrlControl(at) => {
                write!(f, "url has a control character or white space at byte {at}")
            }
            LinkError::UrlHost(why) => write!(f, "url host {why}"),
            LinkError::Redirect(s) => {
                write!(f, "redirect {s} is not one of 301, 302, 307, 308")
            }
            LinkError::ValidityOrder => f.write_str("valid_since must be before expires_at"),
            LinkError::MaxVisitsZero => f.write_str("max_visits must be at least 1"),
            LinkError::ExpiredUrl(e) => write!(f, "expired_url: {e}"),
        }
    }
}

impl std::error::Error for LinkError {}
