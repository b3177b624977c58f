//! HAProxy's PROXY protocol, versions 1 and 2: the client's address as a load balancer in
//! front of us saw it, sent as a header ahead of the connection's first HTTP byte.
//!
//! Specification: <https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt>. [`parse`] is
//! a pure function of the bytes received so far: the listener parses what the first read of a
//! connection brought, and reads on only if the header is not whole yet. Only peers in
//! `--trusted-proxy` may send one: the spec forbids guessing whether a header is there, and
//! anyone else could claim any address with it.
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use thiserror::Error;

/// The longest version 1 line, CRLF included: `PROXY UNKNOWN` with two full IPv6 addresses and
/// ports (spec 2.1). Without a CRLF by then the line is invalid.
pub(crate) const V1_MAX_LEN: usize = 107;

/// The most address and TLV bytes a version 2 header may carry here (its length field allows
/// 65535). The largest address block is 216 bytes (AF_UNIX), and the TLVs senders emit in
/// practice (ALPN, authority, unique ID of at most 128 bytes, the SSL group with version, CN,
/// cipher and algorithm names, cloud providers' endpoint IDs) come to well under a kilobyte
/// together; 2 KiB leaves room for all of them while bounding what a broken peer makes us read
/// before its HTTP request.
pub(crate) const V2_MAX_BODY: usize = 2048;

/// The longest version 2 header accepted: the fixed part and [`V2_MAX_BODY`].
pub(crate) const V2_MAX_LEN: usize = V2_FIXED + V2_MAX_BODY;

/// Signature, version and command, family and protocol, length.
const V2_FIXED: usize = 16;

const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

const V1_SIGNATURE: &[u8] = b"PROXY";

/// The longest textual IPv6 address (`ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`).
const MAX_ADDRESS_TEXT: usize = 45;

/// What the bytes received so far hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// The start of a header, which ends further on: wait for more bytes.
    Incomplete,
    /// A whole header of `len` bytes; what follows it is the proxied connection's data.
    Complete {
        /// The header's length, from the first byte.
        len: usize,
        /// The client's address, or `None` when the header names none (v1 `UNKNOWN`, v2
        /// `LOCAL`, v2 families other than IPv4 and IPv6): then the peer's own address stands.
        source: Option<SocketAddr>,
    },
}

/// Why a connection's first bytes are not an acceptable PROXY header.
#[derive(Debug, Error)]
pub(crate) enum ProxyHeaderError {
    /// Neither signature: no PROXY header at all.
    #[error("not a PROXY protocol header")]
    NotProxy,
    /// A version 1 line that breaks the syntax.
    #[error("bad PROXY v1 header: {0}")]
    V1Syntax(V1Part),
    /// A version 1 line without a CRLF in its first [`V1_MAX_LEN`] bytes.
    #[error("PROXY v1 header without CRLF in its first {max} bytes", max = V1_MAX_LEN)]
    V1TooLong,
    /// A version 2 header of another version.
    #[error("PROXY v2 header with version {0}, not 2")]
    V2Version(u8),
    /// A version 2 command other than LOCAL (0) and PROXY (1).
    #[error("PROXY v2 header with unknown command {0:#x}")]
    V2Command(u8),
    /// A version 2 family and protocol byte outside the spec's (families 0 to 3, protocols 0
    /// to 2).
    #[error("PROXY v2 header with unknown address family and protocol {0:#04x}")]
    V2Family(u8),
    /// A length too short for the addresses of the family.
    #[error(
        "PROXY v2 header with {len} address bytes, fewer than family {family:#04x} needs ({need})"
    )]
    V2Short {
        /// The family and protocol byte.
        family: u8,
        /// The length field.
        len: u16,
        /// What the family's addresses take.
        need: u16,
    },
    /// A header longer than [`V2_MAX_LEN`] (the whole length, fixed part included).
    #[error("PROXY v2 header of {0} bytes, more than the {max} accepted", max = V2_MAX_LEN)]
    V2TooLong(usize),
    /// The peer closed the connection before the header ended.
    #[error("connection closed within the PROXY header")]
    Closed,
    /// The socket failed.
    #[error("reading the PROXY header: {0}")]
    Io(std::io::Error),
}

/// The part of a version 1 line that is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum V1Part {
    /// `PROXY` not followed by exactly one space.
    Separator,
    /// Not `TCP4`, `TCP6` or `UNKNOWN`.
    Protocol,
    /// Not an address of the stated family.
    SourceAddress,
    /// Not an address of the stated family.
    DestinationAddress,
    /// Not a decimal port without leading zeros.
    SourcePort,
    /// Not a decimal port without leading zeros.
    DestinationPort,
    /// Fewer than four fields after `TCP4` or `TCP6`.
    MissingField,
    /// A space after the destination port.
    ExtraField,
    /// A CR or LF that is not the CRLF ending the line.
    LineBreak,
}

impl fmt::Display for V1Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            V1Part::Separator => "PROXY not followed by one space",
            V1Part::Protocol => "protocol is not TCP4, TCP6 or UNKNOWN",
            V1Part::SourceAddress => "bad source address",
            V1Part::DestinationAddress => "bad destination address",
            V1Part::SourcePort => "bad source port",
            V1Part::DestinationPort => "bad destination port",
            V1Part::MissingField => "fewer than four fields",
            V1Part::ExtraField => "more than four fields",
            V1Part::LineBreak => "CR or LF within the line",
        })
    }
}

use ProxyHeaderError as E;

/// Reads a PROXY header (either version) from the start of `buf`.
///
/// `Incomplete` only while `buf` could still become a valid header: anything that no further
/// bytes can make valid is an error at once, so the connection can be closed without waiting
/// (spec 2.1: abort as soon as possible).
pub(crate) fn parse(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    match buf.first() {
        None => Ok(Parsed::Incomplete),
        Some(&b) if b == V2_SIGNATURE[0] => parse_v2(buf),
        Some(_) => parse_v1(buf),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let start = buf.len().min(V1_SIGNATURE.len());
    if buf[..start] != V1_SIGNATURE[..start] {
        return Err(E::NotProxy);
    }
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    if let Some(end) = window.windows(2).position(|w| w == b"\r\n") {
        let source = v1_line(&window[..end], true)?;
        return Ok(Parsed::Complete {
            len: end + 2,
            source,
        });
    }
    if buf.len() >= V1_MAX_LEN {
        return Err(E::V1TooLong);
    }
    match window.split_last() {
        // A CR at the end may be the first half of the CRLF: then the line before it is whole.
        Some((b'\r', line)) => v1_line(line, true)?,
        _ => v1_line(window, false)?,
    };
    Ok(Parsed::Incomplete)
}

/// Checks a version 1 line without its CRLF (`whole`), or the start of one, which is accepted
/// if some continuation could make it valid. The client's address, for a whole line.
fn v1_line(line: &[u8], whole: bool) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let Some(rest) = line.strip_prefix(V1_SIGNATURE) else {
        // Only a start shorter than the signature, which the caller has compared.
        return if whole { Err(E::NotProxy) } else { Ok(None) };
    };
    let rest = match rest.split_first() {
        Some((b' ', rest)) => rest,
        None if !whole => return Ok(None),
        _ => return Err(E::V1Syntax(V1Part::Separator)),
    };
    let (protocol, fields) = match rest.iter().position(|&b| b == b' ') {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let family = match protocol {
        b"TCP4" => Family::V4,
        b"TCP6" => Family::V6,
        // The spec lets a sender put anything (or nothing) between UNKNOWN and the CRLF.
        b"UNKNOWN" => {
            return match fields {
                Some(f) if f.iter().any(|&b| b == b'\r' || b == b'\n') => {
                    Err(E::V1Syntax(V1Part::LineBreak))
                }
                _ => Ok(None),
            };
        }
        p if !whole
            && fields.is_none()
            && [&b"TCP4"[..], b"TCP6", b"UNKNOWN"]
                .iter()
                .any(|k| k.starts_with(p)) =>
        {
            return Ok(None);
        }
        _ => return Err(E::V1Syntax(V1Part::Protocol)),
    };
    let Some(fields) = fields else {
        return if whole {
            Err(E::V1Syntax(V1Part::MissingField))
        } else {
            Ok(None)
        };
    };
    v1_tcp(fields, family, whole)
}

#[derive(Debug, Clone, Copy)]
enum Family {
    V4,
    V6,
}

/// `SRC DST SPORT DPORT` after `TCP4 ` or `TCP6 `.
fn v1_tcp(
    fields: &[u8],
    family: Family,
    whole: bool,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    const PARTS: [V1Part; 4] = [
        V1Part::SourceAddress,
        V1Part::DestinationAddress,
        V1Part::SourcePort,
        V1Part::DestinationPort,
    ];
    let mut source = None;
    let mut source_port = None;
    let mut fields = fields.split(|&b| b == b' ').peekable();
    let mut n = 0;
    while let Some(field) = fields.next() {
        let Some(&part) = PARTS.get(n) else {
            return Err(E::V1Syntax(V1Part::ExtraField));
        };
        // The last field of an incomplete line may still be arriving.
        let open = !whole && fields.peek().is_none();
        let ok = match n {
            0 | 1 if open => address_start(field, family),
            0 => {
                source = address(field, family);
                source.is_some()
            }
            1 => address(field, family).is_some(),
            _ if open && field.is_empty() => true,
            2 => {
                source_port = port(field);
                source_port.is_some()
            }
            _ => port(field).is_some(),
        };
        if !ok {
            return Err(E::V1Syntax(part));
        }
        n += 1;
    }
    if !whole {
        return Ok(None);
    }
    match (source, source_port) {
        (Some(ip), Some(port)) if n == PARTS.len() => Ok(Some(SocketAddr::new(ip, port))),
        _ => Err(E::V1Syntax(V1Part::MissingField)),
    }
}

/// An address of `family` in the text forms Rust's parser accepts: for IPv4 exactly four
/// decimal numbers without leading zeros (as the spec requires), for IPv6 hex groups with at most
/// one `::`, possibly ending in dotted IPv4 (which `inet_ntop`, so HAProxy, writes for
/// IPv4-mapped addresses).
fn address(text: &[u8], family: Family) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?;
    match family {
        Family::V4 => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        Family::V6 => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
    }
}

/// Whether `start` begins some address of `family`. Every proper start of a valid address
/// becomes valid with one of these endings (an exhaustive search over short strings and every
/// prefix of many generated addresses found no exception), and one that becomes valid with any
/// of them plainly is a start.
fn address_start(start: &[u8], family: Family) -> bool {
    const V4: &[&[u8]] = &[b"", b"0", b".0", b"0.0", b".0.0", b"0.0.0", b".0.0.0"];
    const V6: &[&[u8]] = &[
        b"", b"0", b":", b"::", b":0", b".0", b"0.0", b".0.0", b"0.0.0", b".0.0.0",
    ];
    if start.is_empty() {
        return true;
    }
    if start.len() > MAX_ADDRESS_TEXT {
        return false;
    }
    let endings = match family {
        Family::V4 => V4,
        Family::V6 => V6,
    };
    let mut text = [0; MAX_ADDRESS_TEXT + 8];
    text[..start.len()].copy_from_slice(start);
    endings.iter().any(|ending| {
        let end = start.len() + ending.len();
        text[start.len()..end].copy_from_slice(ending);
        address(&text[..end], family).is_some()
    })
}

/// A decimal port, 0 to 65535, without leading zeros.
fn port(text: &[u8]) -> Option<u16> {
    match text {
        [b'0'] => Some(0),
        [b'1'..=b'9', rest @ ..] if rest.len() < 5 && rest.iter().all(u8::is_ascii_digit) => {
            let n = text.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'));
            u16::try_from(n).ok()
        }
        _ => None,
    }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyHeaderError> {
    let Some(fixed) = buf.first_chunk::<V2_FIXED>() else {
        v2_start(buf)?;
        return Ok(Parsed::Incomplete);
    };
    let head = V2Head::new(fixed)?;
    Ok(match buf.get(V2_FIXED..head.total) {
        None => Parsed::Incomplete,
        Some(body) => Parsed::Complete {
            len: head.total,
            source: head.address.source(body),
        },
    })
}

/// Checks the part of the fixed 16 bytes received so far.
fn v2_start(start: &[u8]) -> Result<(), ProxyHeaderError> {
    let n = start.len().min(V2_SIGNATURE.len());
    if start[..n] != V2_SIGNATURE[..n] {
        return Err(E::NotProxy);
    }
    if let Some(&version_command) = start.get(12) {
        if command(version_command)? == Command::Proxy {
            if let Some(&family) = start.get(13) {
                check_family(family)?;
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    /// The proxy's own connection (a health check): the peer's address stands.
    Local,
    /// A relayed connection.
    Proxy,
}

fn command(version_command: u8) -> Result<Command, ProxyHeaderError> {
    match (version_command >> 4, version_command & 0xf) {
        (2, 0) => Ok(Command::Local),
        (2, 1) => Ok(Command::Proxy),
        (2, command) => Err(E::V2Command(command)),
        (version, _) => Err(E::V2Version(version)),
    }
}

/// Families UNSPEC, INET, INET6 and UNIX; protocols UNSPEC, STREAM and DGRAM.
fn check_family(family: u8) -> Result<(), ProxyHeaderError> {
    if family >> 4 <= 3 && family & 0xf <= 2 {
        Ok(())
    } else {
        Err(E::V2Family(family))
    }
}

/// What a version 2 header's fixed part says.
#[derive(Debug, Clone, Copy)]
struct V2Head {
    /// The whole header's length.
    total: usize,
    address: V2Address,
}

/// The addresses of a version 2 header this module reads.
#[derive(Debug, Clone, Copy)]
enum V2Address {
    /// None, or none we use (LOCAL; UNSPEC; UNIX; a family without a transport).
    Unused,
    /// IPv4: two addresses and two ports, 12 bytes.
    V4,
    /// IPv6: two addresses and two ports, 36 bytes.
    V6,
}

impl V2Head {
    fn new(fixed: &[u8; V2_FIXED]) -> Result<V2Head, ProxyHeaderError> {
        let [s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, version_command, family, l0, l1] =
            *fixed;
        if [s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11] != V2_SIGNATURE {
            return Err(E::NotProxy);
        }
        let command = command(version_command)?;
        let len = u16::from_be_bytes([l0, l1]);
        let total = V2_FIXED + usize::from(len);
        if total > V2_MAX_LEN {
            return Err(E::V2TooLong(total));
        }
        // LOCAL: "discard the protocol block including the family which is ignored".
        if command == Command::Local {
            return Ok(V2Head {
                total,
                address: V2Address::Unused,
            });
        }
        check_family(family)?;
        // UNSPEC protocol with a real family carries no ports: treated as UNSPEC, as the spec
        // allows for combinations a receiver does not use.
        let (address, need) = match family {
            0x11 | 0x12 => (V2Address::V4, 12),
            0x21 | 0x22 => (V2Address::V6, 36),
            0x31 | 0x32 => (V2Address::Unused, 216),
            _ => (V2Address::Unused, 0),
        };
        if len < need {
            return Err(E::V2Short { family, len, need });
        }
        Ok(V2Head { total, address })
    }
}

impl V2Address {
    /// The source address and port from the address block `body` (12 bytes for IPv4, 36 for
    /// IPv6, which [`V2Head::new`] has checked against the length field).
    fn source(self, body: &[u8]) -> Option<SocketAddr> {
        match self {
            V2Address::Unused => None,
            V2Address::V4 => {
                let [a, b, c, d, _, _, _, _, p0, p1, _, _] = *body.first_chunk::<12>()?;
                Some(SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
                    u16::from_be_bytes([p0, p1]),
                ))
            }
            V2Address::V6 => {
                let (ip, rest) = body.split_first_chunk::<16>()?;
                let (_, rest) = rest.split_first_chunk::<16>()?;
                let port = rest.first_chunk::<2>()?;
                Some(SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(*ip)),
                    u16::from_be_bytes(*port),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> (usize, Option<SocketAddr>) {
        match parse(buf) {
            Ok(Parsed::Complete { len, source }) => (len, source),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
        }
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().expect("socket address"))
    }

    /// Every proper prefix of `header` is `Incomplete`, and the whole is `Complete` with its
    /// own length, also with more bytes behind it.
    fn assert_incremental(header: &[u8]) {
        for end in 0..header.len() {
            assert!(
                matches!(parse(&header[..end]), Ok(Parsed::Incomplete)),
                "prefix {:?} of {:?}: {:?}",
                String::from_utf8_lossy(&header[..end]),
                String::from_utf8_lossy(header),
                parse(&header[..end]),
            );
        }
        let (len, _) = complete(header);
        assert_eq!(len, header.len());
        let mut more = header.to_vec();
        more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(complete(&more).0, header.len());
    }

    fn error(line: &[u8]) -> ProxyHeaderError {
        match parse(line) {
            Err(e) => e,
            ok => panic!("{:?} accepted: {ok:?}", String::from_utf8_lossy(line)),
        }
    }

    const TCP4: &[u8] = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    const TCP6_LONGEST: &[u8] = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    const UNKNOWN_LONGEST: &[u8] = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";

    #[test]
    fn v1_tcp4() {
        assert_eq!(complete(TCP4), (TCP4.len(), addr("192.168.0.1:56324")));
        let (len, source) = complete(b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\nGET");
        assert_eq!((len, source), (44, addr("0.0.0.0:0")));
    }

    #[test]
    fn v1_tcp6() {
        assert_eq!(TCP6_LONGEST.len(), 104);
        assert_eq!(
            complete(TCP6_LONGEST),
            (104, addr("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"))
        );
        let line = b"PROXY TCP6 2001:DB8::1 ::1 1 80\r\n";
        assert_eq!(complete(line), (line.len(), addr("[2001:db8::1]:1")));
        // IPv4-mapped addresses as inet_ntop (so HAProxy) writes them.
        let line = b"PROXY TCP6 ::ffff:192.0.2.7 ::ffff:192.0.2.1 5000 443\r\n";
        assert_eq!(
            complete(line),
            (line.len(), addr("[::ffff:192.0.2.7]:5000"))
        );
    }

    #[test]
    fn v1_unknown_names_no_address_and_may_carry_anything() {
        assert_eq!(complete(b"PROXY UNKNOWN\r\nGET"), (15, None));
        assert_eq!(UNKNOWN_LONGEST.len(), V1_MAX_LEN);
        assert_eq!(complete(UNKNOWN_LONGEST), (V1_MAX_LEN, None));
        assert_eq!(complete(b"PROXY UNKNOWN whatever  it says\r\n"), (33, None));
    }

    #[test]
    fn every_prefix_of_a_valid_header_is_incomplete() {
        let lines: [&[u8]; 9] = [
            TCP4,
            TCP6_LONGEST,
            UNKNOWN_LONGEST,
            b"PROXY UNKNOWN\r\n",
            b"PROXY TCP4 1.2.3.4 10.0.0.1 0 8080\r\n",
            b"PROXY TCP6 ::ffff:192.0.2.7 ::ffff:192.0.2.1 5000 443\r\n",
            b"PROXY TCP6 :: 1:: 65535 1\r\n",
            b"PROXY TCP6 1:2:3:4:5:6:7:8 1::8 1 2\r\n",
            b"PROXY TCP6 fe80::1:2:3:4:5 a:b:c:d:e:f:1.2.3.4 10 20\r\n",
        ];
        for line in lines {
            assert_incremental(line);
        }
        for header in [
            v2(0x21, 0x11, &V4_BLOCK),
            v2(0x21, 0x21, &V6_BLOCK),
            v2(0x20, 0x00, &[]),
            v2(0x21, 0x31, &[7; 216]),
            v2(0x21, 0x11, &with_tlvs(&V4_BLOCK)),
            v2(0x20, 0xff, &[]),
        ] {
            assert_incremental(&header);
        }
    }

    #[test]
    fn not_a_proxy_header() {
        for buf in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXX",
            b"P ROXY",
            b"\r\n\r\nGET / HTTP/1.1\r\n",
            b"\x16\x03\x01",
        ] {
            assert!(
                matches!(parse(buf), Err(ProxyHeaderError::NotProxy)),
                "{buf:?}: {:?}",
                parse(buf)
            );
        }
        assert_eq!(parse(b"").ok(), Some(Parsed::Incomplete));
    }

    #[test]
    fn v1_malformed() {
        use V1Part::*;
        let cases: &[(&[u8], V1Part)] = &[
            (b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", Separator),
            (b"PROXY\r\n", Separator),
            (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", Protocol),
            (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", Protocol),
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", Protocol),
            (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", Protocol),
            (b"PROXY UNKNOWNX\r\n", Protocol),
            (b"PROXY unknown\r\n", Protocol),
            (b"PROXY \r\n", Protocol),
            (b"PROXY UNKNOWN a\rb\r\n", LineBreak),
            (b"PROXY UNKNOWN a\nb\r\n", LineBreak),
            (b"PROXY TCP4\r\n", MissingField),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", MissingField),
            (b"PROXY TCP4 1.2.3.4\r\n", MissingField),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", ExtraField),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", ExtraField),
            (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", SourceAddress),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", DestinationAddress),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n", SourcePort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", DestinationPort),
            (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", SourceAddress),
            (b"PROXY TCP4 256.1.1.1 5.6.7.8 1 2\r\n", SourceAddress),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", SourceAddress),
            (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", SourceAddress),
            (b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n", SourceAddress),
            (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", SourceAddress),
            (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", DestinationAddress),
            (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", SourceAddress),
            (b"PROXY TCP6 [::1] ::1 1 2\r\n", SourceAddress),
            (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", SourceAddress),
            (b"PROXY TCP6 2001:db8:::1 ::1 1 2\r\n", SourceAddress),
            (b"PROXY TCP6 1::2::3 ::1 1 2\r\n", SourceAddress),
            (b"PROXY TCP6 g::1 ::1 1 2\r\n", SourceAddress),
            (b"PROXY TCP6 12345::1 ::1 1 2\r\n", SourceAddress),
            (
                b"PROXY TCP6 ::1 1:2:3:4:5:6:7:8:9 1 2\r\n",
                DestinationAddress,
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", SourcePort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", SourcePort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", SourcePort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", SourcePort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", SourcePort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1o 2\r\n", SourcePort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n", SourcePort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", DestinationPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", DestinationPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", DestinationPort),
            // Caught before any CRLF: nothing after these bytes could make them valid.
            (b"PROXY TCP4 999", SourceAddress),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 ", ExtraField),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r", MissingField),
            (b"PROXY TCP6 ::1::", SourceAddress),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 00", SourcePort),
            (b"PROXY TCX", Protocol),
            (b"PROXY_", Separator),
        ];
        for &(line, part) in cases {
            let e = error(line);
            assert!(
                matches!(e, ProxyHeaderError::V1Syntax(p) if p == part),
                "{:?}: {e:?}, expected {part:?}",
                String::from_utf8_lossy(line)
            );
        }
        // A port "0" is whole already; only the next byte tells.
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 0").ok(),
            Some(Parsed::Incomplete)
        );
    }

    #[test]
    fn v1_ends_within_107_bytes() {
        // One byte over the longest line: the CRLF ends at byte 108.
        let mut long = UNKNOWN_LONGEST.to_vec();
        long.insert(14, b'x');
        assert!(matches!(parse(&long), Err(ProxyHeaderError::V1TooLong)));
        // 107 bytes and no CRLF yet: it cannot come in time any more.
        assert!(matches!(
            parse(&long[..V1_MAX_LEN]),
            Err(ProxyHeaderError::V1TooLong)
        ));
        assert!(matches!(
            parse(&[b'P'; 200][..]),
            Err(ProxyHeaderError::NotProxy)
        ));
        assert!(matches!(
            parse(&[&b"PROXY UNKNOWN "[..], &[b'a'; 100]].concat()),
            Err(ProxyHeaderError::V1TooLong)
        ));
    }

    /// Source 192.0.2.7:56324, destination 198.51.100.1:443.
    const V4_BLOCK: [u8; 12] = [192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0x01, 0xbb];
    /// Source [2001:db8::7]:65535, destination [2001:db8::1]:80.
    const V6_BLOCK: [u8; 36] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0x20, 0x01, 0x0d, 0xb8, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0, 80,
    ];

    fn v2(version_command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let len = u16::try_from(body.len()).expect("length");
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[version_command, family]);
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    /// `block` followed by ALPN "h2", AUTHORITY "go.example.cn" and a NOOP TLV.
    fn with_tlvs(block: &[u8]) -> Vec<u8> {
        let mut b = block.to_vec();
        b.extend_from_slice(&[0x01, 0, 2]);
        b.extend_from_slice(b"h2");
        b.extend_from_slice(&[0x02, 0, 13]);
        b.extend_from_slice(b"go.example.cn");
        b.extend_from_slice(&[0x04, 0, 3, 0, 0, 0]);
        b
    }

    #[test]
    fn v2_proxy_over_inet_and_inet6() {
        let h = v2(0x21, 0x11, &V4_BLOCK);
        assert_eq!(complete(&h), (28, addr("192.0.2.7:56324")));
        let h = v2(0x21, 0x21, &V6_BLOCK);
        assert_eq!(complete(&h), (52, addr("[2001:db8::7]:65535")));
        // UDP over either names a client address all the same.
        assert_eq!(
            complete(&v2(0x21, 0x12, &V4_BLOCK)).1,
            addr("192.0.2.7:56324")
        );
        assert_eq!(
            complete(&v2(0x21, 0x22, &V6_BLOCK)).1,
            addr("[2001:db8::7]:65535")
        );
        // HTTP right behind the header is not part of it.
        let mut h = v2(0x21, 0x11, &V4_BLOCK);
        h.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(complete(&h).0, 28);
    }

    #[test]
    fn v2_tlvs_are_skipped() {
        let body = with_tlvs(&V4_BLOCK);
        let h = v2(0x21, 0x11, &body);
        assert_eq!(complete(&h), (16 + body.len(), addr("192.0.2.7:56324")));
        let body = with_tlvs(&V6_BLOCK);
        let h = v2(0x21, 0x21, &body);
        assert_eq!(complete(&h), (16 + body.len(), addr("[2001:db8::7]:65535")));
        // The largest accepted: 2048 bytes of addresses and TLVs.
        let mut body = V4_BLOCK.to_vec();
        body.extend_from_slice(&[0x04, 0x07, 0xf1]);
        body.resize(V2_MAX_BODY, 0);
        let h = v2(0x21, 0x11, &body);
        assert!(matches!(parse(&h[..h.len() - 1]), Ok(Parsed::Incomplete)));
        assert_eq!(complete(&h), (V2_MAX_LEN, addr("192.0.2.7:56324")));
    }

    #[test]
    fn v2_without_a_usable_address() {
        // LOCAL: the proxy's own connection (health checks), whatever the family says.
        assert_eq!(complete(&v2(0x20, 0x00, &[])), (16, None));
        assert_eq!(complete(&v2(0x20, 0x11, &V4_BLOCK)), (28, None));
        assert_eq!(complete(&v2(0x20, 0xff, &[1, 2, 3])), (19, None));
        // UNSPEC, UNIX, and a family without a transport protocol.
        assert_eq!(complete(&v2(0x21, 0x00, &[])), (16, None));
        assert_eq!(complete(&v2(0x21, 0x00, &V4_BLOCK)), (28, None));
        assert_eq!(complete(&v2(0x21, 0x31, &[b'/'; 216])), (232, None));
        assert_eq!(complete(&v2(0x21, 0x32, &[b'/'; 216])), (232, None));
        assert_eq!(complete(&v2(0x21, 0x10, &[])), (16, None));
        assert_eq!(complete(&v2(0x21, 0x20, &V4_BLOCK)), (28, None));
    }

    #[test]
    fn v2_malformed() {
        use ProxyHeaderError as E;
        let good = v2(0x21, 0x11, &V4_BLOCK);
        for at in 0..12 {
            let mut h = good.clone();
            h[at] ^= 0x20;
            assert!(matches!(parse(&h), Err(E::NotProxy)), "signature byte {at}");
            // Refused from that byte on, not only once 16 have come.
            assert!(
                matches!(parse(&h[..=at]), Err(E::NotProxy)),
                "prefix to {at}"
            );
        }
        for version in [0x0, 0x1, 0x3, 0xf] {
            let h = v2(version << 4 | 1, 0x11, &V4_BLOCK);
            assert!(matches!(parse(&h), Err(E::V2Version(v)) if v == version));
            assert!(matches!(parse(&h[..13]), Err(E::V2Version(v)) if v == version));
        }
        for command in [0x2, 0x3, 0xf] {
            let h = v2(0x20 | command, 0x11, &V4_BLOCK);
            assert!(matches!(parse(&h), Err(E::V2Command(c)) if c == command));
            assert!(matches!(parse(&h[..13]), Err(E::V2Command(c)) if c == command));
        }
        for family in [0x40, 0x41, 0xf1, 0x13, 0x1f, 0x03, 0x33] {
            let h = v2(0x21, family, &V4_BLOCK);
            assert!(matches!(parse(&h), Err(E::V2Family(f)) if f == family));
            assert!(matches!(parse(&h[..14]), Err(E::V2Family(f)) if f == family));
        }
        for (family, len, need) in [
            (0x11, 0, 12),
            (0x11, 11, 12),
            (0x12, 4, 12),
            (0x21, 12, 36),
            (0x21, 35, 36),
            (0x31, 36, 216),
            (0x32, 215, 216),
        ] {
            let h = v2(0x21, family, &vec![0; usize::from(len)]);
            assert!(
                matches!(parse(&h), Err(E::V2Short { family: f, len: l, need: n }) if (f, l, n) == (family, len, need)),
                "{family:#x} {len}: {:?}",
                parse(&h)
            );
            // Known as soon as the length field is in.
            assert!(matches!(parse(&h[..16]), Err(E::V2Short { .. })));
        }
        let mut long = v2(0x21, 0x11, &V4_BLOCK);
        long[14..16].copy_from_slice(&2049u16.to_be_bytes());
        assert!(matches!(parse(&long[..16]), Err(E::V2TooLong(2065))));
        long[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(parse(&long), Err(E::V2TooLong(65551))));
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = error(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n");
        assert_eq!(e.to_string(), "bad PROXY v1 header: bad source port");
        let e = error(&v2(0x21, 0x21, &V4_BLOCK));
        assert_eq!(
            e.to_string(),
            "PROXY v2 header with 12 address bytes, fewer than family 0x21 needs (36)"
        );
        assert!(
            std::error::Error::source(&ProxyHeaderError::Io(std::io::Error::other("x"))).is_none()
        );
    }
}
