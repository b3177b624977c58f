//! A small HTTP/1.1 client over std's `TcpStream`, shared by the test crates and the benches
//! that run the real binary (include it with `#[path = ".../tests/support/http.rs"] mod http;`).
//!
//! It sends exactly what it is given and checks nothing, so tests can also send what a real
//! client never would. Two ways to use a connection:
//!
//! - [`Request::send`]: a new connection per request, `Connection: close`, the answer read
//!   until the server closes (every byte after the head is the body);
//! - [`Conn`]: one keep-alive connection, each answer read as its head and `Content-Length`
//!   bytes of body.
//!
//! ```ignore
//! let r = Request::new("POST", "/api/v1/links")
//!     .header("Host", "admin")
//!     .bearer("key")
//!     .json(r#"{"url":"https://a.example/"}"#)
//!     .send(admin_port)?;
//! assert_eq!(r.status, 201);
//! ```
#![allow(dead_code)] // each crate that includes this uses part of it

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// How long a read may wait unless a request or connection says otherwise: long enough for a
/// compaction on a busy machine, short enough that a server that never answers fails the test.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// A request: method, target, headers in the order given, an optional body.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    close: bool,
    timeout: Duration,
}

impl Request {
    /// `METHOD path HTTP/1.1`, with no headers yet (not even `Host`).
    pub(crate) fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: None,
            close: false,
            timeout: TIMEOUT,
        }
    }

    /// `GET path`.
    pub(crate) fn get(path: &str) -> Request {
        Request::new("GET", path)
    }

    /// Adds a header line `name: value` (repeats are sent as repeats).
    pub(crate) fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `Authorization: Bearer key`.
    pub(crate) fn bearer(self, key: &str) -> Request {
        self.header("Authorization", &format!("Bearer {key}"))
    }

    /// A body, sent with its `Content-Length` (also when it is empty).
    pub(crate) fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    /// A JSON body: `Content-Type: application/json` and the text.
    pub(crate) fn json(self, text: &str) -> Request {
        self.header("Content-Type", "application/json").body(text)
    }

    /// `Connection: close`: the server answers and closes. ([`Request::send`] always says so.)
    pub(crate) fn close(mut self) -> Request {
        self.close = true;
        self
    }

    /// How long [`Request::send`] waits for each read (default [`TIMEOUT`]).
    pub(crate) fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    /// The bytes on the wire: request line, headers as given, `Connection: close` when asked
    /// for, then `Content-Length` and the body when there is one.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        self.bytes(self.close)
    }

    fn bytes(&self, close: bool) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        if let Some(body) = &self.body {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(self.body.as_deref().unwrap_or_default());
        out
    }

    /// Sends the request with `Connection: close` on a new connection to `127.0.0.1:port` and
    /// reads the answer until the server closes. Errors: connecting or writing failed, or
    /// what came back has no status line (nothing at all, say).
    pub(crate) fn send(&self, port: u16) -> io::Result<Response> {
        let raw = exchange_once(port, &self.bytes(true), Some(self.timeout))?;
        Response::try_parse(&raw).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no HTTP answer to {} {}: {raw:?}", self.method, self.path),
            )
        })
    }
}

/// A connection to `127.0.0.1:port` whose reads give up after `timeout` (`None`: never).
pub(crate) fn connect(port: u16, timeout: Option<Duration>) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(timeout)?;
    Ok(stream)
}

/// Sends `bytes` as they are on a new connection and reads until the server closes it. A read
/// error (a reset, the timeout) ends the answer like a close: what came before it is returned.
pub(crate) fn exchange_once(
    port: u16,
    bytes: &[u8],
    timeout: Option<Duration>,
) -> io::Result<String> {
    let mut stream = connect(port, timeout)?;
    stream.write_all(bytes)?;
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// One keep-alive connection: each request is followed by exactly one answer.
#[derive(Debug)]
pub(crate) struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    /// Connects to `127.0.0.1:port` (no Nagle delay), reads waiting at most [`TIMEOUT`].
    pub(crate) fn open(port: u16) -> io::Result<Conn> {
        Conn::open_with(port, Some(TIMEOUT))
    }

    /// The same with another read timeout (`None`: wait forever).
    pub(crate) fn open_with(port: u16, timeout: Option<Duration>) -> io::Result<Conn> {
        let stream = connect(port, timeout)?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(stream),
        })
    }

    /// Sends `req` (keep-alive unless it says [`Request::close`]) and reads its answer; the
    /// answer to a `HEAD` has no body whatever its `Content-Length`.
    pub(crate) fn send(&mut self, req: &Request) -> io::Result<Response> {
        self.stream.get_mut().write_all(&req.to_bytes())?;
        self.read_response(req.method.eq_ignore_ascii_case("HEAD"))
    }

    /// Sends raw request bytes and reads one answer (its head, then `Content-Length` bytes).
    pub(crate) fn exchange(&mut self, raw: &[u8]) -> io::Result<Response> {
        self.stream.get_mut().write_all(raw)?;
        self.read_response(false)
    }

    fn read_response(&mut self, head_only: bool) -> io::Result<Response> {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
            }
            let end = line == "\r\n";
            head.push_str(&line);
            if end {
                break;
            }
        }
        let mut r = Response::try_parse(&head).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not an answer: {head:?}"),
            )
        })?;
        let len: usize = if head_only {
            0
        } else {
            r.header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        r.body = String::from_utf8_lossy(&body).into_owned();
        Ok(r)
    }
}

/// An answer: status, headers (names in lower case) and body (lossy UTF-8).
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Response {
    /// Parses raw answer text; panics (showing the text) when it has no status line.
    #[track_caller]
    pub(crate) fn parse(raw: &str) -> Response {
        Response::try_parse(raw).unwrap_or_else(|| panic!("no status line in {raw:?}"))
    }

    /// Parses raw answer text: the head up to the first blank line, everything after it as
    /// the body. `None` without a status line.
    pub(crate) fn try_parse(raw: &str) -> Option<Response> {
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Some(Response {
            status,
            headers,
            body: body.to_owned(),
        })
    }

    /// The first value of header `name` (any case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}
