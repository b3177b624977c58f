//! Fresh connections: one request each, as most clicks arrive; silent clients; the open-file
//! limit.
use crate::util::{build_snapshot, s, wait_until, Server, TempDir, PATIENCE};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn csv() -> &'static str {
    "domain,code,url\ngo.example.cn,x7Kp2Qa,https://shop.example.com/item/42\n"
}

fn one_shot(port: u16, request: &[u8]) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(request).expect("write");
    let mut out = Vec::new();
    // A refused connection may end in a reset (closed with the request unread).
    if let Err(e) = c.read_to_end(&mut out) {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first request of a connection is answered without hyper when it can be; what it
/// writes must be what hyper writes, byte for byte but the date.
#[test]
fn one_request_connections_get_what_keep_alive_ones_get() {
    let dir = TempDir::new();
    let snap = build_snapshot(&dir, csv());
    let srv = Server::start(&["--snapshot", s(&snap), "--threads", "1"]);
    let strip_date = |t: &str| -> String {
        t.lines()
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (path, method) in [
        ("/x7Kp2Qa", "GET"),
        ("/x7Kp2Qa?utm=1", "GET"),
        ("/x7Kp2Qa", "HEAD"),
        ("/nope", "GET"),
        ("/", "GET"),
        ("/healthz", "GET"),
    ] {
        let close =
            format!("{method} {path} HTTP/1.1\r\nHost: go.example.cn\r\nConnection: close\r\n\r\n");
        let fresh = one_shot(srv.port, close.as_bytes());
        // The same request second on a keep-alive connection is hyper's to answer.
        let pair = format!(
            "GET /healthz HTTP/1.1\r\nHost: go.example.cn\r\n\r\n{method} {path} HTTP/1.1\r\nHost: go.example.cn\r\nConnection: close\r\n\r\n"
        );
        let both = one_shot(srv.port, pair.as_bytes());
        let second = &both[both.find("ok\n").expect("first answer") + 3..];
        assert_eq!(strip_date(&fresh), strip_date(second), "{method} {path}");
        assert!(fresh.contains("\r\ndate: "), "{fresh}");
    }
    let old = one_shot(
        srv.port,
        b"GET /x7Kp2Qa HTTP/1.0\r\nHost: go.example.cn\r\n\r\n",
    );
    assert!(old.starts_with("HTTP/1.0 302 Found\r\n"), "{old}");
    assert!(!old.contains("connection:"), "{old}");
    // A keep-alive first request is answered, and the connection serves the next one.
    let mut c = TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(b"GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\n\r\n")
        .expect("write");
    let mut first = Vec::new();
    while !first.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(c.read(&mut byte).expect("read"), 1, "kept open");
        first.push(byte[0]);
    }
    let first = String::from_utf8_lossy(&first);
    assert!(first.starts_with("HTTP/1.1 302"), "{first}");
    assert!(!first.contains("connection: close"), "{first}");
    c.write_all(b"GET /nope HTTP/1.1\r\nHost: go.example.cn\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut second = String::new();
    c.read_to_string(&mut second).expect("read");
    assert!(second.starts_with("HTTP/1.1 404"), "{second}");
}

#[test]
fn a_connection_that_sends_nothing_is_cut_at_the_header_timeout() {
    let dir = TempDir::new();
    let snap = build_snapshot(&dir, csv());
    let srv = Server::start(&[
        "--snapshot",
        s(&snap),
        "--threads",
        "1",
        "--header-read-timeout",
        "2",
        "--keep-alive-timeout",
        "60",
    ]);
    let mut silent = TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = silent.read(&mut buf).unwrap_or(0);
    let took = started.elapsed();
    assert_eq!(n, 0, "closed without an answer");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "closed after {took:?}, not at the 2 s header timeout (keep-alive is 60 s)"
    );
}

/// A few hundred silent clients used to exhaust a default soft limit of open files, after
/// which neither listener answered. The soft limit is raised to the hard one at start, and
/// silent clients are cut at the header timeout.
#[test]
fn silent_clients_do_not_exhaust_the_open_file_limit() {
    let hard: u64 = std::process::Command::new("sh")
        .args(["-c", "ulimit -Hn"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(u64::MAX);
    let dir = TempDir::new();
    let snap = build_snapshot(&dir, csv());
    let srv = Server::start_with_file_limit(
        256,
        &[
            "--snapshot",
            s(&snap),
            "--threads",
            "1",
            "--header-read-timeout",
            "3",
        ],
    );
    let logs = srv.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("open-file limit"))
        .expect("the limits are logged");
    assert!(line.contains("256"), "the soft limit before: {line}");
    if hard <= 512 {
        eprintln!("hard limit {hard}: nothing to raise here, the rest is skipped");
        return;
    }
    assert!(line.contains("raised"), "{line}");
    let silent: Vec<TcpStream> = (0..400)
        .map(|_| TcpStream::connect(("127.0.0.1", srv.port)).expect("connect"))
        .collect();
    let answered = one_shot(
        srv.port,
        b"GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\nConnection: close\r\n\r\n",
    );
    assert!(answered.starts_with("HTTP/1.1 302"), "{answered}");
    let admin = one_shot(
        srv.admin_port,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(
        admin.starts_with("HTTP/1.1 "),
        "the admin listener answers: {admin}"
    );
    assert!(
        wait_until(PATIENCE, || crate::util::metric(
            &srv,
            "duanlian_open_connections"
        ) < 1.0),
        "the silent connections were cut"
    );
    drop(silent);
}

/// The access-log line of the request for `path`.
fn access_line(srv: &Server, path: &str) -> serde_json::Value {
    let line = crate::util::poll(PATIENCE, || {
        srv.logs()
            .lines()
            .find(|l| l.contains("\"target\":\"access\"") && l.contains(&format!("\"/{path}\"")))
            .map(str::to_owned)
    })
    .expect("an access-log line");
    serde_json::from_str(&line).expect("json")
}

#[test]
fn proxy_protocol_headers_name_the_client_from_trusted_balancers_only() {
    let dir = TempDir::new();
    let snap = build_snapshot(&dir, csv());
    let proxied = |trusted: &str| {
        Server::start(&[
            "--snapshot",
            s(&snap),
            "--threads",
            "1",
            "--proxy-protocol",
            "--trusted-proxy",
            trusted,
            "--access-log",
            "--log-format",
            "json",
        ])
    };
    let srv = proxied("127.0.0.1");
    let request = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: go.example.cn\r\nConnection: close\r\n\r\n")
    };
    // Version 1, with the request in the same packet.
    let v1 = format!(
        "PROXY TCP4 203.0.113.7 192.0.2.1 51000 80\r\n{}",
        request("/v1")
    );
    assert!(one_shot(srv.port, v1.as_bytes()).starts_with("HTTP/1.1 404"));
    let line = access_line(&srv, "v1");
    assert_eq!(line["fields"]["peer"], "203.0.113.7:51000", "{line}");
    // Version 2 over IPv6, header and request in separate writes with a pause between.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x24".to_vec();
    v2.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .expect("ip")
            .octets(),
    );
    v2.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .expect("ip")
            .octets(),
    );
    v2.extend_from_slice(&[0xc7, 0x38, 0x00, 0x50]);
    let mut c = TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    c.write_all(&v2[..10]).expect("write");
    std::thread::sleep(Duration::from_millis(50));
    c.write_all(&v2[10..]).expect("write");
    c.write_all(request("/v2").as_bytes()).expect("write");
    let mut out = String::new();
    c.read_to_string(&mut out).expect("read");
    assert!(out.starts_with("HTTP/1.1 404"), "{out}");
    let line = access_line(&srv, "v2");
    assert_eq!(line["fields"]["peer"], "[2001:db8::7]:51000", "{line}");
    // A LOCAL header (the balancer's own health check) keeps the socket's address.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    local.extend_from_slice(request("/local").as_bytes());
    assert!(one_shot(srv.port, &local).starts_with("HTTP/1.1 404"));
    let line = access_line(&srv, "local");
    let peer = line["fields"]["peer"].as_str().unwrap_or_default();
    assert!(peer.starts_with("127.0.0.1:"), "{line}");
    // Malformed headers, and plain HTTP where a header must be, are closed unanswered.
    for bad in [
        &b"PROXY TCP4 203.0.113.7 192.0.2.1 51000\r\nGET / HTTP/1.1\r\n\r\n"[..],
        b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c",
        b"GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\nConnection: close\r\n\r\n",
    ] {
        assert_eq!(
            one_shot(srv.port, bad),
            "",
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    drop(srv);
    // From a source not named, even a well-formed header is refused.
    let untrusted = proxied("10.0.0.0/8");
    assert_eq!(one_shot(untrusted.port, v1.as_bytes()), "");
    // And --proxy-protocol without a trusted source is a settings error.
    let o = crate::util::run(&["serve", "--snapshot", s(&snap), "--proxy-protocol"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(crate::util::stderr(&o).contains("--trusted-proxy"));
}

/// Percent-escaped codes are decoded before the lookup, as nginx does; escapes that spell no
/// code are a 404, never a 5xx.
#[test]
fn percent_escaped_codes_are_decoded_and_bad_escapes_are_not_found() {
    let dir = TempDir::new();
    let snap = build_snapshot(&dir, csv());
    let srv = Server::start(&["--snapshot", s(&snap), "--threads", "1"]);
    let get = |path: &str| {
        one_shot(
            srv.port,
            format!("GET {path} HTTP/1.1\r\nHost: go.example.cn\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
    };
    let plain = get("/x7Kp2Qa");
    assert!(plain.starts_with("HTTP/1.1 302"), "{plain}");
    for path in ["/%78%37Kp2Qa", "/x7K%702Qa", "/%787Kp2Q%61"] {
        let escaped = get(path);
        assert!(escaped.starts_with("HTTP/1.1 302"), "{path}: {escaped}");
        assert!(
            escaped.contains("location: https://shop.example.com/item/42\r\n"),
            "{path}: {escaped}"
        );
    }
    for path in [
        "/%2Fx7Kp2Qa",
        "/x7Kp2Qa%2F",
        "/%",
        "/%7",
        "/%zz",
        "/%00",
        "/%C3%A9",
    ] {
        let answer = get(path);
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
    }
}
