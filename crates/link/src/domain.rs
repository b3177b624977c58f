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

/// Scratch space for [`host_key`], so the request path normalises `Host` on the stack. One byte
/// longer than a domain, for the root dot that is stripped after copying.
#[derive(Debug)]
pub struct HostBuf([u8; MAX_DOMAIN_LEN + 1]);

impl Default for HostBuf {
    fn default() -> Self {
        HostBuf([0; MAX_DOMAIN_LEN + 1])
    }
}

/// Each byte's lowercase form if it may appear in a host name, else 0: one load per byte
/// decides both on the request path.
const HOST_LOWER: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = (b as u8).to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.' {
            t[b] = c;
        }
        b += 1;
    }
    t
};

/// Turns a `Host` header value into the form domains are stored in: port stripped, lowercase,
/// no trailing dot. `None` when it cannot be a link domain (IPv6 literal, bad bytes, too long).
///
/// This checks the characters but not the label structure: a malformed name simply finds no
/// link, and the redirect path stays a single pass over the bytes.
pub fn host_key<'b>(raw: &[u8], buf: &'b mut HostBuf) -> Option<&'b str> {
    let mut len = 0;
    for &b in raw {
        let lower = HOST_LOWER[usize::from(b)];
        if lower == 0 {
            // The port is not part of the key and is not looked at.
            if b == b':' {
                break;
            }
            return None;
        }
        *buf.0.get_mut(len)? = lower;
        len += 1;
    }
    let host = &buf.0[..len];
    let host = host.strip_suffix(b".").unwrap_or(host);
    if host.is_empty() || host.len() > MAX_DOMAIN_LEN {
        return None;
    }
    std::str::from_utf8(host).ok()
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
        // The longest name, with and without the root dot; the port is never looked at.
        let longest = "a".repeat(MAX_DOMAIN_LEN);
        assert_eq!(host_key(longest.as_bytes(), &mut buf), Some(&*longest));
        let dotted = format!("{longest}.");
        assert_eq!(host_key(dotted.as_bytes(), &mut buf), Some(&*longest));
        assert_eq!(host_key(format!("{dotted}.").as_bytes(), &mut buf), None);
        assert_eq!(host_key(b"A-1.cn:x y", &mut buf), Some("a-1.cn"));
        assert_eq!(host_key(b"a_b.cn", &mut buf), None);
    }
}
