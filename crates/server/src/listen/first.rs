//! The first request of a fresh connection, answered before the connection costs anything
//! more: no task, no reactor registration, no hyper connection.
//!
//! Most clicks are one request on a new connection (a browser leaving for the target, an L4
//! load balancer passing a client through). By the time such a connection is accepted its
//! request has usually arrived, so one non-blocking read takes it, `httparse` (hyper's own
//! parser) reads the head, the answer is written with one non-blocking write, and, when the
//! client asked to close, the socket is closed: `accept4`, `recvfrom`, `writev`, `close`. Every
//! other case goes to hyper with the bytes already read, which then answers exactly as it
//! always did; this path only ever takes requests whose answer it writes the way hyper does.
use super::Answer;
use crate::proxy_protocol::Parsed;
use crate::redirect::Body;
use bytes::Bytes;
use hyper::body::Body as _;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, DATE};
use hyper::{Method, Request, Response, Version};
use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Request heads that fit here are read in one go; a longer one goes to hyper.
const READ: usize = 4096;
/// Headers `httparse` takes here; a request with more goes to hyper (which allows 100).
const HEADERS: usize = 32;

/// What became of a connection's first request.
pub(super) enum First {
    /// Answered (or refused), and the connection is to close: drop the stream.
    Closed,
    /// Answered; the connection stays open for hyper to serve the next request.
    KeepAlive { peer: SocketAddr },
    /// Not taken here: hyper serves the connection, starting with `read`; `peer` is the client
    /// (from a PROXY header if there was one). With `proxy_pending` the PROXY header has not
    /// all arrived, and `read` is its beginning.
    Hyper {
        read: Bytes,
        peer: SocketAddr,
        proxy_pending: bool,
    },
}

/// How the first request is read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reading {
    /// The connection starts with a PROXY header (the peer is a trusted load balancer).
    pub(super) proxy: bool,
    /// Whether to answer here at all: a node whose answers may wait for I/O leaves them to
    /// hyper, and only the PROXY header is read here.
    pub(super) answer: bool,
    pub(super) max_head: usize,
}

/// Reads and, where it can, answers the first request on `stream`, a non-blocking socket
/// accepted a moment ago.
pub(super) fn serve<A: Answer>(
    stream: &mio::net::TcpStream,
    peer: SocketAddr,
    answer: &A,
    how: Reading,
) -> First {
    READ_BUF.with_borrow_mut(|buf| serve_from(stream, peer, answer, how, buf))
}

thread_local! {
    /// The read buffer, one per thread and zeroed once: zeroing 4 KiB on the stack for every
    /// connection cost more than all of the request's parsing.
    static READ_BUF: RefCell<Box<[u8; READ]>> = RefCell::new(Box::new([0; READ]));
}

fn serve_from<A: Answer>(
    stream: &mio::net::TcpStream,
    mut peer: SocketAddr,
    answer: &A,
    how: Reading,
    buf: &mut [u8; READ],
) -> First {
    let hyper = |read: &[u8], peer, proxy_pending| First::Hyper {
        read: Bytes::copy_from_slice(read),
        peer,
        proxy_pending,
    };
    let n = match (&*stream).read(&mut buf[..]) {
        Ok(0) => return First::Closed,
        Ok(n) => n,
        // Nothing yet (the client is slow, or sends later): hyper waits for it.
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return hyper(&[], peer, how.proxy),
        Err(_) => return First::Closed,
    };
    let mut read = &buf[..n];
    if how.proxy {
        match crate::proxy_protocol::parse(read) {
            Ok(Parsed::Complete { len, source }) => {
                peer = source.unwrap_or(peer);
                read = &read[len..];
            }
            Ok(Parsed::Incomplete) => return hyper(read, peer, true),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "refused: bad PROXY header");
                return First::Closed;
            }
        }
    }
    if !how.answer || read.is_empty() {
        return hyper(read, peer, false);
    }
    let Some(head) = parse(read, how.max_head) else {
        return hyper(read, peer, false);
    };
    let res = answer.answer(&head.request, Some(peer));
    let Some(out) = encode(
        &res,
        head.version,
        head.close,
        head.request.method() == Method::HEAD,
    ) else {
        return hyper(read, peer, false);
    };
    match (&*stream).write(&out) {
        Ok(written) if written == out.len() && head.close => First::Closed,
        Ok(written) if written == out.len() => First::KeepAlive { peer },
        // A fresh socket's send buffer takes a redirect whole; if it ever does not, the rest
        // would need the reactor, and a client that cannot take 300 bytes can lose this
        // connection.
        _ => First::Closed,
    }
}

/// A request this path answers, and how its connection goes on.
struct Head {
    request: Request<()>,
    version: Version,
    close: bool,
}

/// The request in `read` if it is one this path answers: a whole GET or HEAD head with no
/// body and nothing after it, no `Expect` or `Upgrade`, within `max_head` bytes.
fn parse(read: &[u8], max_head: usize) -> Option<Head> {
    // Left uninitialised: httparse fills what it uses.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(read, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return None,
    };
    if len != read.len() || len > max_head {
        return None;
    }
    let method = match req.method? {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        _ => return None,
    };
    let version = match req.version? {
        1 => Version::HTTP_11,
        0 => Version::HTTP_10,
        _ => return None,
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(req.path?)
        .version(version);
    let (mut close, mut keep_alive) = (false, false);
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if h.value != b"0" {
                return None;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return None;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        builder = builder.header(name, h.value);
    }
    let close = match version {
        Version::HTTP_10 => !keep_alive,
        _ => close,
    };
    // HTTP/1.0 keep-alive answers need a header hyper adds; leave them to hyper.
    if version == Version::HTTP_10 && !close {
        return None;
    }
    let request = builder.body(()).ok()?;
    Some(Head {
        request,
        version,
        close,
    })
}

/// The response as hyper writes it: the status line in the request's version, the answer's
/// headers, `connection: close` on an HTTP/1.1 connection that closes, `content-length`, and
/// `date`. `None` for an answer this path does not write (a body of unknown length).
fn encode(res: &Response<Body>, version: Version, close: bool, head: bool) -> Option<Vec<u8>> {
    let body = body_bytes(res.body())?;
    let status = res.status();
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(itoa::Buffer::new().format(status.as_u16()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_length = false;
    let mut has_date = false;
    for (name, value) in res.headers() {
        has_length |= name == CONTENT_LENGTH;
        has_date |= name == DATE;
        if name == CONNECTION {
            // hyper decides the connection's fate from the request; keep out of its way.
            return None;
        }
        header(&mut out, name.as_str(), value);
    }
    if close && version == Version::HTTP_11 {
        out.extend_from_slice(b"connection: close\r\n");
    }
    // hyper says nothing of the length of an empty answer to HEAD (it cannot know the GET's).
    let empty_head = head && body.is_empty();
    if !has_length && !empty_head {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        http_date(&mut out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head {
        out.extend_from_slice(&body);
    }
    Some(out)
}

fn header(out: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The whole body of a response that has it in memory (every answer of the redirect path).
fn body_bytes(body: &Body) -> Option<Bytes> {
    let mut body = body.clone();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(&mut body).poll_frame(&mut cx) {
        std::task::Poll::Ready(Some(Ok(frame))) => frame.into_data().ok(),
        std::task::Poll::Ready(None) => Some(Bytes::new()),
        _ => None,
    }
}

thread_local! {
    /// The `date` value of the current second: formatted once a second, as hyper does.
    static DATE_NOW: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

fn http_date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE_NOW.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let text = httpdate::HttpDate::from(now).to_string();
            if text.len() == 29 {
                cached.1.copy_from_slice(text.as_bytes());
                cached.0 = secs;
            }
        }
        out.extend_from_slice(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &[u8]) -> Option<Head> {
        parse(raw, 16 << 10)
    }

    #[test]
    fn a_one_shot_get_is_taken() {
        let h = head(b"GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\nConnection: close\r\n\r\n")
            .expect("taken");
        assert!(h.close);
        assert_eq!(h.request.uri().path(), "/x7Kp2Qa");
        assert_eq!(h.request.headers()["host"], "go.example.cn");
        let h = head(b"GET /a HTTP/1.0\r\nHost: a\r\n\r\n").expect("1.0 closes by default");
        assert!(h.close);
        let h = head(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n").expect("keep-alive is taken");
        assert!(!h.close);
        let h = head(b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close\r\n\r\n")
            .expect("taken");
        assert!(h.close);
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for raw in [
            &b"GET /a HTTP/1.1\r\nHost: a\r\n"[..],
            b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a\r\nX: \x01\r\n\r\n",
            b"BREW /a HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a HTTP/2.0\r\nHost: a\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert!(head(raw).is_none(), "{:?}", String::from_utf8_lossy(raw));
        }
        let many: String = (0..40).map(|i| format!("X-{i}: y\r\n")).collect();
        let raw = format!("GET /a HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert!(
            head(raw.as_bytes()).is_none(),
            "more headers than taken here"
        );
        assert!(parse(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n", 10).is_none());
    }

    #[test]
    fn answers_are_written_as_hyper_writes_them() {
        let mut res = Response::new(Body::new(Bytes::from_static(b"not found\n")));
        *res.status_mut() = hyper::StatusCode::NOT_FOUND;
        res.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        let out = encode(&res, Version::HTTP_11, true, false).expect("written");
        let text = String::from_utf8(out).expect("text");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 404 Not Found"));
        assert_eq!(
            lines.next(),
            Some("content-type: text/plain; charset=utf-8")
        );
        assert_eq!(lines.next(), Some("connection: close"));
        assert_eq!(lines.next(), Some("content-length: 10"));
        let date = lines.next().expect("date");
        assert!(date.starts_with("date: ") && date.ends_with(" GMT") && date.len() == 35);
        assert_eq!(body, "not found\n");
        let out = encode(&res, Version::HTTP_10, true, true).expect("written");
        let text = String::from_utf8(out).expect("text");
        assert!(text.starts_with("HTTP/1.0 404 Not Found\r\n"));
        assert!(
            !text.contains("connection:"),
            "HTTP/1.0 closes without saying so"
        );
        assert!(text.ends_with("\r\n\r\n"), "no body for HEAD");
    }
}
