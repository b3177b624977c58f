//! One click, as the redirect path records it.
use std::net::IpAddr;

/// What kind of client followed a link, from its `User-Agent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// A phone or tablet browser.
    Mobile,
    /// A desktop browser.
    Desktop,
    /// A crawler, a chat app unfurling the link, an uptime checker, a script; also a client that
    /// sends no `User-Agent` at all. Bots never count as visits.
    Bot,
    /// A browser we cannot place.
    Other,
}

impl Device {
    /// Every class, in report order.
    pub const ALL: [Device; 4] = [Device::Mobile, Device::Desktop, Device::Other, Device::Bot];

    /// The class of a `User-Agent` header value (`None`: the header was absent).
    pub fn of(user_agent: Option<&[u8]>) -> Device {
        if is_bot(user_agent) {
            Device::Bot
        } else {
            Device::browser(user_agent)
        }
    }

    /// The class of a browser's `User-Agent`, one that [`is_bot`] found to be no bot: mobile,
    /// desktop or other.
    pub fn browser(user_agent: Option<&[u8]>) -> Device {
        let ua = user_agent
            .and_then(|u| std::str::from_utf8(u).ok())
            .unwrap_or("");
        const MOBILE: [&str; 6] = [
            "Mobi",
            "Android",
            "iPhone",
            "iPad",
            "HarmonyOS",
            "Windows Phone",
        ];
        const DESKTOP: [&str; 4] = ["Windows NT", "Macintosh", "X11", "CrOS"];
        if MOBILE.iter().any(|n| ua.contains(n)) {
            Device::Mobile
        } else if DESKTOP.iter().any(|n| ua.contains(n)) {
            Device::Desktop
        } else {
            Device::Other
        }
    }

    /// The name used in logs, exports and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Device::Mobile => "mobile",
            Device::Desktop => "desktop",
            Device::Bot => "bot",
            Device::Other => "other",
        }
    }

    /// The class named `s` (see [`Device::as_str`]).
    pub fn parse(s: &str) -> Option<Device> {
        Device::ALL.into_iter().find(|d| d.as_str() == s)
    }

    pub(crate) const fn index(self) -> usize {
        match self {
            Device::Mobile => 0,
            Device::Desktop => 1,
            Device::Other => 2,
            Device::Bot => 3,
        }
    }
}

/// Whether a request with this `User-Agent` (`None`: absent) comes from a bot or link-preview
/// fetcher rather than a person. Uses the `iscrawl` crate's keyword and browser-engine rules,
/// which run allocation-free in about a hundred nanoseconds, and remember recent answers.
#[inline]
pub fn is_bot(user_agent: Option<&[u8]>) -> bool {
    match user_agent.map(std::str::from_utf8) {
        Some(Ok(ua)) => iscrawl::is_crawler(ua),
        // No browser omits the header or sends bytes that are not text.
        None | Some(Err(_)) => true,
    }
}

/// The client address as stored: IPv4 without its last octet, IPv6 without its last 80 bits
/// (the /48 remains), so a click cannot be traced back to a subscriber.
pub fn anonymise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => anonymise(IpAddr::V4(v4)),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 80) - 1)).into()),
        },
    }
}

/// The host of a `Referer` value, if it is an absolute URL with a plausible host.
pub(crate) fn referrer_host(referer: &[u8]) -> Option<&[u8]> {
    let start = referer.windows(3).position(|w| w == b"://")?;
    let rest = &referer[start + 3..];
    let authority = rest
        .split(|&b| b == b'/' || b == b'?' || b == b'#')
        .next()
        .unwrap_or_default();
    // Credentials never belong in a statistic.
    let host_port = match authority.iter().rposition(|&b| b == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let host = if host_port.first() == Some(&b'[') {
        &host_port[..=host_port.iter().position(|&b| b == b']')?]
    } else {
        host_port.split(|&b| b == b':').next().unwrap_or_default()
    };
    let plausible = |b: &u8| b.is_ascii_alphanumeric() || b".-_:[]".contains(b);
    (!host.is_empty() && host.len() <= 253 && host.iter().all(plausible)).then_some(host)
}

/// A redirect to record, as the redirect path has it: borrowed, so recording it allocates
/// nothing ([`crate::Recorder::record`] writes its log line straight into a buffer).
#[derive(Debug, Clone, Copy)]
pub struct Visit<'a> {
    /// When, UTC seconds.
    pub at: i64,
    /// The link domain.
    pub domain: &'a str,
    /// The code.
    pub code: &'a str,
    /// The request's `Referer` value, if any: only its host is kept.
    pub referer: Option<&'a [u8]>,
    /// The client class.
    pub device: Device,
    /// The client address, as seen: it is anonymised ([`anonymise`]) when recorded.
    pub client: IpAddr,
}

impl<'a> Visit<'a> {
    /// A visit with the fields in [`Click::new`]'s order.
    pub fn new(
        at: i64,
        domain: &'a str,
        code: &'a str,
        referer: Option<&'a [u8]>,
        device: Device,
        client: IpAddr,
    ) -> Visit<'a> {
        Visit {
            at,
            domain,
            code,
            referer,
            device,
            client,
        }
    }
}

/// Bytes a click keeps inline: domain, code and referrer host of nearly every click fit, so
/// reading a log back (at start, for an export) allocates nothing a click.
const INLINE: usize = 54;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Text {
    Inline([u8; INLINE], u8),
    Heap(Box<[u8]>),
}

impl Text {
    fn bytes(&self) -> &[u8] {
        match self {
            Text::Inline(b, len) => &b[..usize::from(*len)],
            Text::Heap(b) => b,
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Text::Inline(b, len) => &mut b[..usize::from(*len)],
            Text::Heap(b) => b,
        }
    }
}

/// One counted visit (or bot fetch): a `GET` that redirected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    /// When, UTC seconds.
    pub at: i64,
    /// The client class.
    pub device: Device,
    /// The client address, anonymised ([`anonymise`]).
    pub client: IpAddr,
    /// `domain \t code \t referrer-host`.
    text: Text,
    domain_len: u8,
    code_len: u8,
}

impl Click {
    /// A click on `domain`/`code` at `at` from `client` (anonymised here), with the request's
    /// `Referer` value, if any, reduced to its host.
    pub fn new(
        at: i64,
        domain: &str,
        code: &str,
        referer: Option<&[u8]>,
        device: Device,
        client: IpAddr,
    ) -> Click {
        let host = referer.and_then(referrer_host).unwrap_or_default();
        // Plausible hosts are ASCII, so this is a valid string.
        let host = std::str::from_utf8(host).unwrap_or_default();
        Click::build(at, domain, code, host, device, client)
    }

    /// A click read back from the log, whose referrer is already a host.
    pub(crate) fn from_parts(
        at: i64,
        domain: &str,
        code: &str,
        referrer_host: Option<&str>,
        device: Device,
        client: IpAddr,
    ) -> Click {
        Click::build(
            at,
            domain,
            code,
            referrer_host.unwrap_or(""),
            device,
            client,
        )
    }

    fn build(
        at: i64,
        domain: &str,
        code: &str,
        referrer_host: &str,
        device: Device,
        client: IpAddr,
    ) -> Click {
        let parts = [domain, "\t", code, "\t", referrer_host];
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let mut text = if len <= INLINE {
            Text::Inline([0; INLINE], len as u8)
        } else {
            Text::Heap(vec![0; len].into_boxed_slice())
        };
        let bytes = text.bytes_mut();
        let mut at_byte = 0;
        for p in parts {
            bytes[at_byte..at_byte + p.len()].copy_from_slice(p.as_bytes());
            at_byte += p.len();
        }
        bytes[len - referrer_host.len()..].make_ascii_lowercase();
        Click {
            at,
            device,
            client: anonymise(client),
            text,
            // Domains are at most 253 bytes and codes 64 by the link model; clamp regardless.
            domain_len: domain.len().min(255) as u8,
            code_len: code.len().min(255) as u8,
        }
    }

    fn text(&self) -> &str {
        // Built from `&str` parts and ASCII-lowercased, so always UTF-8.
        std::str::from_utf8(self.text.bytes()).unwrap_or("")
    }

    /// The link domain.
    pub fn domain(&self) -> &str {
        self.text()
            .get(..usize::from(self.domain_len))
            .unwrap_or("")
    }

    /// The code.
    pub fn code(&self) -> &str {
        let start = usize::from(self.domain_len) + 1;
        self.text()
            .get(start..start + usize::from(self.code_len))
            .unwrap_or("")
    }

    /// `domain \t code`, the key statistics are kept under.
    #[cfg(test)]
    pub(crate) fn key(&self) -> &str {
        self.key_and_referrer().0
    }

    /// The referring page's host, if the request named one.
    pub fn referrer(&self) -> Option<&str> {
        self.key_and_referrer().1
    }

    /// [`Click::key`] and [`Click::referrer`] at the cost of one check of the text.
    pub(crate) fn key_and_referrer(&self) -> (&str, Option<&str>) {
        let text = self.text();
        let key_len = self.key_len();
        let key = text.get(..key_len).unwrap_or("");
        let referrer = text.get(key_len + 1..).filter(|r| !r.is_empty());
        (key, referrer)
    }

    /// The length of `domain \t code` at the start of the text.
    fn key_len(&self) -> usize {
        usize::from(self.domain_len) + 1 + usize::from(self.code_len)
    }

    /// The bytes of `domain \t code` and of the referrer host (empty if none), unchecked:
    /// for writers of bytes.
    pub(crate) fn key_and_referrer_bytes(&self) -> (&[u8], &[u8]) {
        let text = self.text.bytes();
        let key_len = self.key_len();
        let key = text.get(..key_len).unwrap_or_default();
        let referrer = text.get(key_len + 1..).unwrap_or_default();
        (key, referrer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices() {
        let chrome_win = b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
        let iphone = b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
        let wechat = b"Mozilla/5.0 (Linux; Android 13; V2148A) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/107.0.5304.141 Mobile Safari/537.36 XWEB/5023 MMWEBSDK/20230405 MicroMessenger/8.0.35";
        assert_eq!(Device::of(Some(chrome_win)), Device::Desktop);
        assert_eq!(Device::of(Some(iphone)), Device::Mobile);
        assert_eq!(Device::of(Some(wechat)), Device::Mobile);
        for bot in [
            &b"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"[..],
            b"Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
            b"facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            b"Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
            b"TelegramBot (like TwitterBot)",
            b"WhatsApp/2.23.20.0 A",
            b"Mozilla/5.0 (compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
            b"curl/8.5.0",
            b"",
            b"\xff\xfe",
        ] {
            assert_eq!(
                Device::of(Some(bot)),
                Device::Bot,
                "{}",
                String::from_utf8_lossy(bot)
            );
        }
        assert_eq!(Device::of(None), Device::Bot);
        for d in Device::ALL {
            assert_eq!(Device::parse(d.as_str()), Some(d));
        }
    }

    #[test]
    fn addresses_lose_their_last_octet_or_80_bits() {
        let v4: IpAddr = "203.0.113.77".parse().expect("v4");
        assert_eq!(anonymise(v4), "203.0.113.0".parse::<IpAddr>().expect("v4"));
        let v6: IpAddr = "2001:db8:abcd:1234:5678:9abc:def0:1234"
            .parse()
            .expect("v6");
        assert_eq!(
            anonymise(v6),
            "2001:db8:abcd::".parse::<IpAddr>().expect("v6")
        );
        let mapped: IpAddr = "::ffff:198.51.100.9".parse().expect("mapped");
        assert_eq!(
            anonymise(mapped),
            "198.51.100.0".parse::<IpAddr>().expect("v4")
        );
    }

    #[test]
    fn referrer_hosts() {
        let host = |r: &[u8]| {
            Click::new(
                0,
                "d",
                "c",
                Some(r),
                Device::Other,
                IpAddr::from([0, 0, 0, 0]),
            )
            .referrer()
            .unwrap_or("")
            .to_owned()
        };
        assert_eq!(host(b"https://Weibo.COM/u/123?x=1"), "weibo.com");
        assert_eq!(
            host(b"https://user:pw@mail.example:8443/inbox"),
            "mail.example"
        );
        assert_eq!(host(b"http://[2001:db8::1]:80/"), "[2001:db8::1]");
        assert_eq!(host(b"android-app://com.tencent.mm/"), "com.tencent.mm");
        assert_eq!(host(b"not a url"), "");
        assert_eq!(host(b"https://bad\thost/"), "");
        let c = Click::new(
            1,
            "go.example.cn",
            "x7Kp2Qa",
            Some(b"https://t.co/abc"),
            Device::Mobile,
            "10.1.2.3".parse().expect("ip"),
        );
        assert_eq!(
            (c.domain(), c.code(), c.referrer()),
            ("go.example.cn", "x7Kp2Qa", Some("t.co"))
        );
        assert_eq!(c.key(), "go.example.cn\tx7Kp2Qa");
        assert_eq!(c.client, "10.1.2.0".parse::<IpAddr>().expect("ip"));
        let direct = Click::new(1, "d.cn", "c", None, Device::Other, c.client);
        assert_eq!(direct.referrer(), None);
    }
}
