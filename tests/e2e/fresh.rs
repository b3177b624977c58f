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
    c.read_to_end(&mut out).expect("read to the server's close");
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
        let close = format!(
            "{method} {path} HTTP/1.1\r\nHost: go.example.cn\r\nConnection: close\r\n\r\n"
        );
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
    let old = one_shot(srv.port, b"GET /x7Kp2Qa HTTP/1.0\r\nHost: go.example.cn\r\n\r\n");
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
    assert!(admin.starts_with("HTTP/1.1 "), "the admin listener answers: {admin}");
    assert!(
        wait_until(PATIENCE, || crate::util::metric(&srv, "duanlian_open_connections") < 1.0),
        "the silent connections were cut"
    );
    drop(silent);
}
