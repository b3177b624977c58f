/// Why an input is not a valid part of a link. [`LinkError::field`] names the input field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The code is empty.
    #[error("code is empty")]
    CodeEmpty,
    /// The code is longer than [`crate::MAX_CODE_LEN`].
    #[error("code is {0} characters, at most {max} allowed", max = crate::MAX_CODE_LEN)]
    CodeTooLong(usize),
    /// The code has a character outside `[A-Za-z0-9_-]`.
    #[error("code has {0:?}; only letters, digits, '_' and '-' are allowed")]
    CodeChar(char),
    /// The code is a path the service answers itself.
    #[error("code {0:?} is reserved for the service's own endpoints")]
    CodeReserved(String),
    /// The domain is empty.
    #[error("domain is empty")]
    DomainEmpty,
    /// The domain is longer than [`crate::MAX_DOMAIN_LEN`].
    #[error("domain is {0} characters, at most {max} allowed", max = crate::MAX_DOMAIN_LEN)]
    DomainTooLong(usize),
    /// The domain is not a host name (letters, digits, `-`, dots between labels of 1 to 63).
    #[error("not a host name: {0}")]
    DomainSyntax(String),
    /// The URL is empty.
    #[error("url is empty")]
    UrlEmpty,
    /// The URL is longer than [`crate::MAX_URL_LEN`] bytes.
    #[error("url is {0} bytes, at most {max} allowed", max = crate::MAX_URL_LEN)]
    UrlTooLong(usize),
    /// The URL has no scheme, or one other than `http` or `https`.
    #[error("url must start with http:// or https://")]
    UrlScheme,
    /// The URL is not absolute (`scheme://host...`).
    #[error("url must be absolute (scheme://host/...)")]
    UrlNotAbsolute,
    /// The URL has a control character or white space at a byte offset.
    #[error("url has a control character or white space at byte {0}")]
    UrlControl(usize),
    /// The URL's host is missing or malformed.
    #[error("url host {0}")]
    UrlHost(&'static str),
    /// A redirect status other than 301, 302, 307 or 308.
    #[error("redirect {0} is not one of 301, 302, 307, 308")]
    Redirect(u16),
    /// `valid_since` is not before `expires_at`.
    #[error("valid_since must be before expires_at")]
    ValidityOrder,
    /// `max_visits` is 0.
    #[error("max_visits must be at least 1")]
    MaxVisitsZero,
    /// The expired-link target is not a valid URL.
    #[error("expired_url: {0}")]
    ExpiredUrl(Box<LinkError>),
}

impl LinkError {
    /// A stable name for the error, for programs and for translations of the message (the
    /// admin API sends it beside the English reason): `url_scheme`, `code_char`, ...
    pub fn code(&self) -> &'static str {
        match self {
            LinkError::CodeEmpty => "code_empty",
            LinkError::CodeTooLong(_) => "code_too_long",
            LinkError::CodeChar(_) => "code_char",
            LinkError::CodeReserved(_) => "code_reserved",
            LinkError::DomainEmpty => "domain_empty",
            LinkError::DomainTooLong(_) => "domain_too_long",
            LinkError::DomainSyntax(_) => "domain_syntax",
            LinkError::UrlEmpty => "url_empty",
            LinkError::UrlTooLong(_) => "url_too_long",
            LinkError::UrlScheme => "url_scheme",
            LinkError::UrlNotAbsolute => "url_not_absolute",
            LinkError::UrlControl(_) => "url_control",
            LinkError::UrlHost(_) => "url_host",
            LinkError::Redirect(_) => "redirect_status",
            LinkError::ValidityOrder => "validity_order",
            LinkError::MaxVisitsZero => "max_visits_zero",
            LinkError::ExpiredUrl(inner) => inner.code(),
        }
    }

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
