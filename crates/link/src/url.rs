use crate::{ForwardQuery, LinkError};

/// The longest target URL accepted, in bytes, after normalisation.
pub const MAX_URL_LEN: usize = 4096;

/// Validates a target URL and returns the form that goes into `Location`.
///
/// Accepted: absolute `http`/`https` URLs with a host, no credentials, no control characters or
/// white space anywhere. Non-ASCII characters after the host are percent-encoded (as a browser
/// would send them), so every stored target is a valid header value; a non-ASCII host (an
/// internationalised domain name, `例子.中国`) becomes its punycode (`xn--fsqu00a.xn--fiqs8s`),
/// as a browser would look it up. The scheme is lowercased; nothing else is changed.
/// [`display_url`] turns the stored form back into what people read.
pub fn parse_url(input: &str) -> Result<Box<str>, LinkError> {
    if input.is_empty() {
        return Err(LinkError::UrlEmpty);
    }
    if input.len() > MAX_URL_LEN {
        return Err(LinkError::UrlTooLong(input.len()));
    }
    if let Some(at) = input.bytes().position(|b| b <= b' ' || b == 0x7f) {
        return Err(LinkError::UrlControl(at));
    }
    let (scheme, rest) = split_scheme(input)?;
    let rest = rest.strip_prefix("//").ok_or(LinkError::UrlNotAbsolute)?;
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let auth = ascii_authority(&rest[..host_end])?;
    check_authority(&auth)?;

    let mut out = String::with_capacity(input.len());
    out.push_str(scheme);
    out.push_str("://");
    out.push_str(&auth);
    push_percent_encoded(&mut out, &rest[host_end..]);
    if out.len() > MAX_URL_LEN {
        return Err(LinkError::UrlTooLong(out.len()));
    }
    Ok(out.into())
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Appends `text` with every non-ASCII character percent-encoded as its UTF-8 bytes, as a stored
/// target spells what follows its host (`商品` → `%E5%95%86%E5%93%81`); ASCII as it is.
pub fn push_percent_encoded(out: &mut String, text: &str) {
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut utf8 = [0u8; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
}

/// An authority with a non-ASCII host name in punycode (UTS 46, as browsers map it: full-width
/// dots are dots, letters are lowercased); others as they are.
fn ascii_authority(auth: &str) -> Result<std::borrow::Cow<'_, str>, LinkError> {
    if auth.is_ascii() || auth.starts_with('[') || auth.contains('@') {
        return Ok(auth.into());
    }
    let (host, port) = match auth.rfind(':') {
        Some(c) if auth[c + 1..].bytes().all(|b| b.is_ascii_digit()) => auth.split_at(c),
        _ => (auth, ""),
    };
    let ascii = idna::domain_to_ascii(host)
        .map_err(|_| LinkError::UrlHost("is not a valid internationalised domain name"))?;
    Ok(format!("{ascii}{port}").into())
}

/// A stored target as people read it: a punycode host in its own script, and percent-encoded
/// UTF-8 after it decoded (`https://例子.中国/商品`). Escapes of ASCII (`%20`, `%2F`) and of bytes
/// that are not UTF-8 stay, so the text still means the same URL. For showing only: what is
/// stored and sent in `Location` is the encoded form.
pub fn display_url(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let host_end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let auth = &url[start..host_end];
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..start]);
    let puny = auth
        .split(['.', ':'])
        .any(|l| l.len() > 4 && l[..4].eq_ignore_ascii_case("xn--"));
    if puny && !auth.starts_with('[') {
        let (host, port) = auth.split_at(auth.find(':').unwrap_or(auth.len()));
        let (unicode, result) = idna::domain_to_unicode(host);
        out.push_str(if result.is_ok() { &unicode } else { host });
        out.push_str(port);
    } else {
        out.push_str(auth);
    }
    let rest = &url.as_bytes()[host_end..];
    let mut bytes = Vec::with_capacity(rest.len());
    let mut i = 0;
    while i < rest.len() {
        // A run of escapes of non-ASCII bytes is decoded if it is UTF-8.
        let mut run = Vec::new();
        let mut j = i;
        while j + 2 < rest.len() && rest[j] == b'%' {
            match hex_byte(rest[j + 1], rest[j + 2]) {
                Some(b) if b >= 0x80 => {
                    run.push(b);
                    j += 3;
                }
                _ => break,
            }
        }
        if run.is_empty() {
            bytes.push(rest[i]);
            i += 1;
            continue;
        }
        // Each byte of the run is three characters of the text from `i` on.
        let mut k = 0;
        while k < run.len() {
            match std::str::from_utf8(&run[k..]) {
                Ok(text) => {
                    bytes.extend_from_slice(text.as_bytes());
                    k = run.len();
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    bytes.extend_from_slice(&run[k..k + good]);
                    let bad = e.error_len().unwrap_or(run.len() - k - good);
                    let from = i + 3 * (k + good);
                    bytes.extend_from_slice(&rest[from..from + 3 * bad]);
                    k += good + bad;
                }
            }
        }
        i = j;
    }
    out.push_str(&String::from_utf8_lossy(&bytes));
    out
}

fn hex_byte(hi: u8, lo: u8) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    Some(digit(hi)? << 4 | digit(lo)?)
}

/// The host of a URL that passed [`parse_url`]: lowercase, without port or trailing dot.
/// Used to refuse targets that point back at one of our own link domains (redirect loops).
pub fn url_host(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let auth = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = if auth.starts_with('[') {
        &auth[..auth.find(']').map_or(auth.len(), |i| i + 1)]
    } else {
        auth.split(':').next().unwrap_or(auth)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    Some(host.to_ascii_lowercase())
}

/// Appends a request's query string to a target URL for links that forward it, as `mode` says:
/// with [`ForwardQuery::Add`] the target's own parameters stay and only request parameters of
/// other names are added; with [`ForwardQuery::Override`] a request parameter replaces the
/// target's of the same name. The target's parameters keep their order, the request's follow in
/// theirs, a fragment stays last. [`ForwardQuery::Off`] returns the target as it is.
pub fn merge_query(target: &[u8], request_query: &[u8], mode: ForwardQuery) -> Vec<u8> {
    if mode == ForwardQuery::Off {
        return target.to_vec();
    }
    let frag_at = target
        .iter()
        .position(|&b| b == b'#')
        .unwrap_or(target.len());
    let (before_frag, fragment) = target.split_at(frag_at);
    let (base, own) = match before_frag.iter().position(|&b| b == b'?') {
        Some(q) => (&before_frag[..q], &before_frag[q + 1..]),
        None => (before_frag, &b""[..]),
    };
    let name = |pair: &[u8]| -> Vec<u8> {
        pair.split(|&b| b == b'=')
            .next()
            .unwrap_or_default()
            .to_vec()
    };
    let pairs = |q: &'_ [u8]| -> Vec<Vec<u8>> {
        q.split(|&b| b == b'&')
            .filter(|p| !p.is_empty())
            .map(name)
            .collect()
    };
    // Names whose pairs give way on the other side.
    let (own_names, requested) = match mode {
        ForwardQuery::Override => (Vec::new(), pairs(request_query)),
        _ => (pairs(own), Vec::new()),
    };
    let mut out = Vec::with_capacity(target.len() + request_query.len() + 1);
    out.extend_from_slice(base);
    out.push(b'?');
    let mut first = true;
    let mut push = |out: &mut Vec<u8>, pair: &[u8]| {
        if !first {
            out.push(b'&');
        }
        out.extend_from_slice(pair);
        first = false;
    };
    for pair in own.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        if !requested.contains(&name(pair)) {
            push(&mut out, pair);
        }
    }
    for pair in request_query
        .split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
    {
        if !own_names.contains(&name(pair)) {
            push(&mut out, pair);
        }
    }
    if out.last() == Some(&b'?') {
        out.pop(); // nothing to append after all
    }
    out.extend_from_slice(fragment);
    out
}

fn split_scheme(input: &str) -> Result<(&'static str, &str), LinkError> {
    let Some(colon) = input.find(':') else {
        return Err(LinkError::UrlNotAbsolute);
    };
    let scheme = &input[..colon];
    // "/path:x" or "host/a:b" have no scheme at all: say "not absolute", not "bad scheme".
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    {
        return Err(LinkError::UrlNotAbsolute);
    }
    let scheme = if scheme.eq_ignore_ascii_case("https") {
        "https"
    } else if scheme.eq_ignore_ascii_case("http") {
        "http"
    } else {
        return Err(LinkError::UrlScheme);
    };
    Ok((scheme, &input[colon + 1..]))
}

fn check_authority(auth: &str) -> Result<(), LinkError> {
    if auth.contains('@') {
        return Err(LinkError::UrlHost("must not carry credentials ('@')"));
    }
    let (host, port) = if let Some(v6) = auth.strip_prefix('[') {
        let end = v6
            .find(']')
            .ok_or(LinkError::UrlHost("has an unclosed '['"))?;
        let host = &v6[..end];
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(LinkError::UrlHost("is not an IPv6 address"));
        }
        (host, &v6[end + 1..])
    } else {
        match auth.find(':') {
            Some(c) => (&auth[..c], &auth[c..]),
            None => (auth, ""),
        }
    };
    if host.is_empty() {
        return Err(LinkError::UrlHost("is missing"));
    }
    if !host.is_ascii() {
        return Err(LinkError::UrlHost("must be ASCII (use punycode for IDNs)"));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Err(LinkError::UrlHost(
            "has a character not allowed in a host name",
        ));
    }
    // A browser reads a host whose last label is a number (decimal, or 0x hex) as an IPv4
    // address, and refuses it if it is not one: accept such a host only as a plain dotted quad.
    if !auth.starts_with('[') {
        let name = host.strip_suffix('.').unwrap_or(host);
        let last = name.rsplit('.').next().unwrap_or(name);
        let numeric = !last.is_empty()
            && (last.bytes().all(|b| b.is_ascii_digit())
                || last
                    .strip_prefix("0x")
                    .or_else(|| last.strip_prefix("0X"))
                    .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit())));
        if numeric && name.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(LinkError::UrlHost("is not an IPv4 address"));
        }
    }
    if let Some(p) = port.strip_prefix(':') {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err(LinkError::UrlHost("has a malformed port"));
        }
    } else if !port.is_empty() {
        return Err(LinkError::UrlHost("is followed by junk"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> String {
        parse_url(s)
            .map(String::from)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn accepts_ordinary_targets() {
        assert_eq!(
            ok("https://shop.example.com/item/42?utm_source=sms#top"),
            "https://shop.example.com/item/42?utm_source=sms#top"
        );
        assert_eq!(ok("HTTP://Example.com"), "http://Example.com");
        assert_eq!(ok("https://[::1]:8443/x"), "https://[::1]:8443/x");
        assert_eq!(ok("https://a.cn:8080?q=1"), "https://a.cn:8080?q=1");
    }

    #[test]
    fn percent_encodes_non_ascii_after_the_host() {
        assert_eq!(
            ok("https://a.cn/短链?q=é"),
            "https://a.cn/%E7%9F%AD%E9%93%BE?q=%C3%A9"
        );
    }

    #[test]
    fn rejects_dangerous_and_malformed_targets() {
        assert_eq!(parse_url("javascript:alert(1)"), Err(LinkError::UrlScheme));
        assert_eq!(parse_url("data:text/html,hi"), Err(LinkError::UrlScheme));
        assert_eq!(parse_url("file:///etc/passwd"), Err(LinkError::UrlScheme));
        assert_eq!(parse_url("/relative/path"), Err(LinkError::UrlNotAbsolute));
        assert_eq!(parse_url("example.com/x"), Err(LinkError::UrlNotAbsolute));
        assert_eq!(
            parse_url("https:example.com"),
            Err(LinkError::UrlNotAbsolute)
        );
        assert_eq!(
            parse_url("https://a.cn/\r\nSet-Cookie: x"),
            Err(LinkError::UrlControl(13))
        );
        assert_eq!(parse_url("https://a.cn/\0"), Err(LinkError::UrlControl(13)));
        assert_eq!(
            parse_url("https://a.cn/a b"),
            Err(LinkError::UrlControl(14))
        );
        assert_eq!(parse_url(""), Err(LinkError::UrlEmpty));
        assert!(matches!(
            parse_url("https:///path"),
            Err(LinkError::UrlHost(_))
        ));
        assert!(matches!(
            parse_url("https://user:pw@a.cn/"),
            Err(LinkError::UrlHost(_))
        ));
        assert!(matches!(
            parse_url("https://xn--例子.cn/"),
            Err(LinkError::UrlHost(_))
        ));
        assert!(matches!(
            parse_url("https://a.cn:80x/"),
            Err(LinkError::UrlHost(_))
        ));
    }

    #[test]
    fn internationalised_hosts_become_punycode_and_read_back() {
        let stored = ok("https://例子.中国/路径?商品=红#顶");
        assert_eq!(
            stored,
            "https://xn--fsqu00a.xn--fiqs8s/%E8%B7%AF%E5%BE%84?%E5%95%86%E5%93%81=%E7%BA%A2#%E9%A1%B6"
        );
        assert_eq!(display_url(&stored), "https://例子.中国/路径?商品=红#顶");
        // Full-width dots and capitals as browsers map them; the port stays.
        assert_eq!(
            ok("https://例子。中国:8443/"),
            "https://xn--fsqu00a.xn--fiqs8s:8443/"
        );
        assert_eq!(ok("https://Bücher.DE/"), "https://xn--bcher-kva.de/");
        // What does not decode to UTF-8 text stays escaped, as do escapes of ASCII.
        assert_eq!(
            display_url("https://a.cn/%20%2F%E4%BD%A0%FF%E5"),
            "https://a.cn/%20%2F你%FF%E5"
        );
        assert_eq!(display_url("https://a.cn/plain"), "https://a.cn/plain");
    }

    /// Found by the differential test against the url crate: hosts a browser refuses.
    #[test]
    fn hosts_a_browser_refuses_are_refused() {
        for bad in [
            "http://[a0]/",
            "http://[::1:]/",
            "http://300.0.0.0/",
            "http://1.2.3.4.5/",
            "http://a.b.0x1f/x",
            "http://example.com:99999/",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        for good in [
            "http://[::1]:8080/",
            "http://192.0.2.1/",
            "http://a.b.c/",
            "https://x1.example:65535/",
        ] {
            assert!(parse_url(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn host_of_a_url() {
        assert_eq!(
            url_host("https://Go.Example.CN:8443/x").as_deref(),
            Some("go.example.cn")
        );
        assert_eq!(url_host("http://a.cn.?q").as_deref(), Some("a.cn"));
        assert_eq!(url_host("https://[::1]:80/").as_deref(), Some("[::1]"));
    }

    #[test]
    fn query_merging_where_the_target_wins() {
        let m = |t: &str, q: &str| {
            String::from_utf8(merge_query(t.as_bytes(), q.as_bytes(), ForwardQuery::Add))
                .expect("utf8")
        };
        assert_eq!(
            m("https://a.cn/p", "utm_source=sms"),
            "https://a.cn/p?utm_source=sms"
        );
        // The target's own parameters are not the clicker's to change.
        assert_eq!(
            m(
                "https://a.cn/login?next=/home&x=0",
                "next=https://evil.example&x=1&y=2"
            ),
            "https://a.cn/login?next=/home&x=0&y=2"
        );
        assert_eq!(
            m("https://a.cn/p?x=1#top", "y=2&x=3"),
            "https://a.cn/p?x=1&y=2#top"
        );
        assert_eq!(m("https://a.cn/p?x=1", "&&"), "https://a.cn/p?x=1");
        assert_eq!(m("https://a.cn/p", "&"), "https://a.cn/p");
        assert_eq!(
            m("https://a.cn/p?flag", "flag=1&other"),
            "https://a.cn/p?flag&other"
        );
        assert_eq!(
            String::from_utf8(merge_query(
                b"https://a.cn/p?x=1",
                b"y=2",
                ForwardQuery::Off
            ))
            .expect("utf8"),
            "https://a.cn/p?x=1"
        );
    }

    #[test]
    fn query_merging_where_the_request_wins() {
        let m = |t: &str, q: &str| {
            String::from_utf8(merge_query(
                t.as_bytes(),
                q.as_bytes(),
                ForwardQuery::Override,
            ))
            .expect("utf8")
        };
        assert_eq!(
            m("https://a.cn/p", "utm_source=sms"),
            "https://a.cn/p?utm_source=sms"
        );
        assert_eq!(
            m("https://a.cn/p?x=1&utm_source=web", "utm_source=sms"),
            "https://a.cn/p?x=1&utm_source=sms"
        );
        assert_eq!(
            m("https://a.cn/p?x=1#top", "y=2&x=3"),
            "https://a.cn/p?y=2&x=3#top"
        );
        assert_eq!(m("https://a.cn/p?x=1", "&&"), "https://a.cn/p?x=1");
        assert_eq!(m("https://a.cn/p", "&"), "https://a.cn/p");
        assert_eq!(
            m("https://a.cn/p?flag", "other"),
            "https://a.cn/p?flag&other"
        );
    }

    #[test]
    fn enforces_the_length_limit_after_encoding() {
        let base = "https://a.cn/";
        let fits = format!("{base}{}", "a".repeat(MAX_URL_LEN - base.len()));
        assert!(parse_url(&fits).is_ok());
        let long = format!("{fits}a");
        assert_eq!(
            parse_url(&long),
            Err(LinkError::UrlTooLong(MAX_URL_LEN + 1))
        );
        let grows = format!("{base}{}", "é".repeat(1500));
        assert!(matches!(parse_url(&grows), Err(LinkError::UrlTooLong(_))));
    }
}
