use crate::LinkError;
use std::fmt;

/// The longest host name accepted, in bytes (RFC 1035).
pub const MAX_DOMAIN_LEN: usize = 253;

/// A link domain: a host name, stored lowercase without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(Box<str>);

impl Domain {
    /// Validates a host name and lowercases it.
    pub fn parse(s: &str) -> Result<Domain, LinkError> {
        let s = s.strip_suffix('.').unwrap_or(s);
        if s.is_empty() {
            return Err(LinkError::DomainEmpty);
        }
        if s.len() > MAX_DOMAIN_LEN {
            return Err(LinkError::DomainTooLong(s.len()));
        }
        let lower = s.to_ascii_lowercase();
        check_labels(lower.as_bytes()).map_err(|why| LinkError::DomainSyntax(why.to_owned()))?;
        Ok(Domain(lower.into()))
    }

    /// The host name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_labels(host: &[u8]) -> Result<(), &'static str> {
    for label in host.split(|&b| b == b'.') {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 characters");
        }
        if label.first() == Some(&b'-') || label.last() == Some(&b'-') {
            return Err("label starts or ends with '-'");
        }
        if !label
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("only letters, digits, '-' and '.' are allowed (use punycode for IDNs)");
        }
    }
    Ok(())
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Domain {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Scratch space for [`host_key`], so the request path normalises `Host` on the stack.
#[derive(Debug)]
pub struct HostBuf([u8; MAX_DOMAIN_LEN]);

impl Default for HostBuf {
    fn default() -> Self {
        HostBuf([0; MAX_DOMAIN_LEN])
    }
}

/// Turns a `Host` header value into the form domains are stored in: port stripped, lowercase,
/// no trailing dot. `None` when it cannot be a link domain (IPv6 literal, bad bytes, too long).
///
/// This checks the characters but not the label structure: a malformed name simply finds no
/// link, and the redirect path stays a single pass over the bytes.
pub fn host_key<'b>(raw: &[u8], buf: &'b mut HostBuf) -> Option<&'b str> {
    let host = match raw.iter().position(|&b| b == b':') {
        Some(colon) => &raw[..colon],
        None => raw,
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() || host.len() > MAX_DOMAIN_LEN {
        return None;
    }
    let out = &mut buf.0[..host.len()];
    for (o, &b) in out.iter_mut().zip(host) {
        let l = b.to_ascii_lowercase();
        if !(l.is_ascii_lowercase() || l.is_ascii_digit() || l == b'-' || l == b'.') {
            return None;
        }
        *o = l;
    }
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_lowercases_and_strips_the_root_dot() {
        assert_eq!(
            Domain::parse("Go.Example.CN.").map(|d| d.0),
            Ok("go.example.cn".into())
        );
        assert_eq!(
            Domain::parse("localhost").map(|d| d.0),
            Ok("localhost".into())
        );
    }

    #[test]
    fn parse_rejects_non_host_names() {
        for bad in [
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "exa mple.com",
            "例子.cn",
            "a:80",
        ] {
            assert!(
                matches!(Domain::parse(bad), Err(LinkError::DomainSyntax(_))),
                "{bad}"
            );
        }
        assert_eq!(Domain::parse(""), Err(LinkError::DomainEmpty));
        assert_eq!(
            Domain::parse(&"a".repeat(254)),
            Err(LinkError::DomainTooLong(254))
        );
        assert!(matches!(
            Domain::parse(&"a".repeat(64)),
            Err(LinkError::DomainSyntax(_))
        ));
    }

    #[test]
    fn host_key_strips_port_and_case() {
        let mut buf = HostBuf::default();
        assert_eq!(
            host_key(b"Go.Example.CN:8080", &mut buf),
            Some("go.example.cn")
        );
        assert_eq!(host_key(b"s.example.com.", &mut buf), Some("s.example.com"));
        assert_eq!(host_key(b"[::1]:80", &mut buf), None);
        assert_eq!(host_key(b"", &mut buf), None);
        assert_eq!(host_key(b":80", &mut buf), None);
        assert_eq!(host_key("é.cn".as_bytes(), &mut buf), None);
        assert_eq!(host_key(&[b'a'; 254], &mut buf), None);
    }
}
