//! The redirect listener, spoken to over raw sockets.
use crate::util::http::Request;
use crate::util::{build_snapshot, poll, s, Response, Server, TempDir, PATIENCE};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const LONG: &str = "L234567890123456789012345678901234567890123456789012345678901234";

fn csv() -> String {
    // Expired a minute ago: past its expiry, well within the 30-day retention.
    let gone = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        - 60;
    format!(
        "domain,code,url,redirect,expires_at,valid_since\n\
         go.example.cn,x7Kp2Qa,https://shop.example.com/item/42?utm_source=sms,,,\n\
         go.example.cn,perm,https://example.com/p,301,,\n\
         go.example.cn,keep,https://example.com/k,307,,\n\
         go.example.cn,{LONG},https://example.com/long,308,,\n\
         go.example.cn,gone,https://example.com/old,,{gone},\n\
         go.example.cn,future,https://example.com/soon,,,4000000000\n\
         s.example.com,x7Kp2Qa,https://blog.example.com/,,,\n"
    )
}

fn server() -> (TempDir, Server) {
    let dir = TempDir::new();
    let snap = build_snapshot(&dir, &csv());
    let server = Server::start(&["--snapshot", s(&snap), "--threads", "1"]);
    (dir, server)
}

#[test]
fn hit_miss_and_every_redirect_kind() {
    let (_dir, srv) = server();
    let r = srv.request("GET", "go.example.cn", "/x7Kp2Qa");
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://shop.example.com/item/42?utm_source=sms")
    );
    assert_eq!(
        srv.request("GET", "s.example.com", "/x7Kp2Qa")
            .header("location"),
        Some("https://blog.example.com/")
    );
    assert_eq!(srv.request("GET", "go.example.cn", "/perm").status, 301);
    assert_eq!(srv.request("GET", "go.example.cn", "/keep").status, 307);
    let long = srv.request("GET", "go.example.cn", &format!("/{LONG}"));
    assert_eq!(
        (long.status, long.header("location")),
        (308, Some("https://example.com/long"))
    );

    let miss = srv.request("GET", "go.example.cn", "/x7Kp2Qb");
    assert_eq!(miss.status, 404);
    assert_eq!(miss.header("location"), None);
    assert!(miss.body.contains("not found"));
    // Codes are case-sensitive.
    assert_eq!(srv.request("GET", "go.example.cn", "/X7KP2QA").status, 404);
    // A 65-character code cannot exist.
    assert_eq!(
        srv.request("GET", "go.example.cn", &format!("/{LONG}x"))
            .status,
        404
    );
}

#[test]
fn host_is_matched_without_port_and_case() {
    let (_dir, srv) = server();
    for host in ["GO.Example.CN", "go.example.cn:8080", "Go.Example.Cn.:80"] {
        let r = srv.request("GET", host, "/x7Kp2Qa");
        assert_eq!(r.status, 302, "Host: {host}");
    }
    assert_eq!(
        srv.request("GET", "unknown.example", "/x7Kp2Qa").status,
        404
    );
    assert_eq!(srv.request("GET", "[::1]:80", "/x7Kp2Qa").status, 404);
    let no_host = Response::parse(&srv.raw(b"GET /x7Kp2Qa HTTP/1.1\r\nConnection: close\r\n\r\n"));
    assert_eq!(no_host.status, 400);
}

/// RFC 9112 §3.2.2: two Host headers are a 400 (whatever their values), and an absolute-form
/// request target's authority wins over the Host header.
#[test]
fn ambiguous_hosts_follow_rfc_9112() {
    let (_dir, srv) = server();
    let raw = |req: &[u8]| Response::parse(&srv.raw(req));
    for req in [
        &b"GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\nHost: s.example.com\r\nConnection: close\r\n\r\n"[..],
        b"GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\nHost: go.example.cn\r\nConnection: close\r\n\r\n",
        b"GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\nUser-Agent: x\r\nhost: s.example.com\r\nConnection: close\r\n\r\n",
        b"GET http://go.example.cn/x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\nHost: a\r\nConnection: close\r\n\r\n",
    ] {
        let r = raw(req);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(req));
    }
    // The absolute form names s.example.com; the Host header's go.example.cn is ignored.
    let r = raw(b"GET http://s.example.com/x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\nConnection: close\r\n\r\n");
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("https://blog.example.com/"))
    );
    let r = raw(b"GET http://user@GO.example.cn:8080/x7Kp2Qa HTTP/1.1\r\nHost: s.example.com\r\nConnection: close\r\n\r\n");
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("https://shop.example.com/item/42?utm_source=sms"))
    );
    let r = raw(b"GET http://unknown.example/x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 404);
}

#[test]
fn validity_is_decided_on_read() {
    let (_dir, srv) = server();
    let gone = srv.request("GET", "go.example.cn", "/gone");
    assert_eq!(gone.status, 410);
    assert_eq!(gone.header("location"), None);
    assert_eq!(srv.request("GET", "go.example.cn", "/future").status, 404);
}

#[test]
fn paths_that_cannot_be_codes() {
    let (_dir, srv) = server();
    for path in [
        "/x7Kp2Qa/",
        "/x7Kp2Qa/extra",
        "/",
        "//x7Kp2Qa",
        "/x7Kp2Qa.html",
        "/x7K%70Qa",
    ] {
        assert_eq!(
            srv.request("GET", "go.example.cn", path).status,
            404,
            "{path}"
        );
    }
    // The query string is not part of the code.
    assert_eq!(
        srv.request("GET", "go.example.cn", "/x7Kp2Qa?utm_source=x")
            .status,
        302
    );
}

#[test]
fn head_and_other_methods() {
    let (_dir, srv) = server();
    let head = srv.request("HEAD", "go.example.cn", "/x7Kp2Qa");
    assert_eq!(head.status, 302);
    assert_eq!(
        head.header("location"),
        Some("https://shop.example.com/item/42?utm_source=sms")
    );
    assert_eq!(head.body, "");
    let head_miss = srv.request("HEAD", "go.example.cn", "/nope");
    assert_eq!((head_miss.status, head_miss.body.as_str()), (404, ""));
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let r = srv.request(m, "go.example.cn", "/x7Kp2Qa");
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
}

#[test]
fn garbage_is_refused_and_the_server_lives_on() {
    let (_dir, srv) = server();
    for junk in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS hello\r\n\r\n"[..],
        b"GARBAGE\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /x7Kp2Qa HTTP/9.9\r\nHost: go.example.cn\r\n\r\n",
        b"GET /x7Kp2Qa HTTP/1.1\r\nHost go.example.cn\r\n\r\n",
        b"\r\n\r\n\r\n\r\n",
        b"\0\0\0\0\0\0\0\0",
    ] {
        let answer = srv.raw(junk);
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
            "{junk:?} -> {answer:?}"
        );
    }
    assert_eq!(srv.request("GET", "go.example.cn", "/x7Kp2Qa").status, 302);
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let (_dir, srv) = server();
    let mut c = srv.connect();
    let one = b"GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\n\r\n";
    let two = b"GET /perm HTTP/1.1\r\nHost: go.example.cn\r\nConnection: close\r\n\r\n";
    c.write_all(one).expect("write");
    c.write_all(two).expect("write");
    let mut out = String::new();
    c.read_to_string(&mut out).expect("read");
    assert_eq!(out.matches("HTTP/1.1 ").count(), 2, "{out}");
    assert!(out.starts_with("HTTP/1.1 302"));
    assert!(out.contains("HTTP/1.1 301"));
}

#[test]
fn header_read_timeout_disconnects_a_slow_client() {
    let dir = TempDir::new();
    let snap = build_snapshot(&dir, &csv());
    let srv = Server::start(&[
        "--snapshot",
        s(&snap),
        "--threads",
        "1",
        "--header-read-timeout",
        "1",
        "--keep-alive-timeout",
        "3",
    ]);
    let mut c = srv.connect();
    c.write_all(b"GET /x7Kp2Qa HTTP/1.1\r\nHo").expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 256];
    // The server must close the connection (EOF or reset) rather than wait forever; the read
    // timeout of 10 s in `connect` only keeps a broken server from hanging the test.
    let n = c.read(&mut buf).unwrap_or(0);
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "connection was not closed"
    );
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    // An idle keep-alive connection outlives the header timeout, and closes at the keep-alive
    // timeout.
    let mut idle = srv.connect();
    let req = b"GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\n\r\n";
    idle.write_all(req).expect("write");
    assert!(idle.read(&mut buf).expect("first answer") > 0);
    // Idle on purpose, past the 1 s header timeout and short of the 3 s keep-alive timeout.
    std::thread::sleep(Duration::from_millis(1800));
    idle.write_all(req)
        .expect("still open past the header timeout");
    let n = idle.read(&mut buf).expect("second answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 302"));
    let idle_since = Instant::now();
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed when idle");
    let waited = idle_since.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "closed after {waited:?}"
    );
}

#[test]
fn serve_without_arguments_uses_the_sample_links() {
    // It makes ./duanlian-data: run it somewhere disposable.
    let cwd = TempDir::new();
    let srv = Server::start_in(Some(&cwd.0), &[]);
    assert!(cwd.0.join("duanlian-data/snapshot.snap").exists());
    let r = srv.request("GET", "go.example.cn", "/duanlian");
    assert_eq!(r.status, 302);
    assert!(r
        .header("location")
        .is_some_and(|l| l.starts_with("https://")));
    // Expired in 2023: long past the 30-day retention, so purged.
    assert_eq!(
        srv.request("GET", "s.example.com", "/old-campaign").status,
        404
    );
    for _ in 0..3 {
        assert_eq!(
            srv.request("GET", "go.example.cn", "/three-visits").status,
            302
        );
    }
    assert_eq!(
        srv.request("GET", "go.example.cn", "/three-visits").status,
        410
    );
    // Expires two minutes after the first start (then 410 for 30 days).
    assert_eq!(srv.request("GET", "go.example.cn", "/soon").status, 302);
    let idn = srv.request("GET", "go.example.cn", "/cn-shop");
    assert_eq!(
        idn.header("location"),
        Some("https://xn--fsqu00a.xn--fiqs8s/%E5%95%86%E5%93%81?%E9%A2%9C%E8%89%B2=%E7%BA%A2")
    );
}

#[test]
fn multi_thread_runtime_answers_the_same() {
    let dir = TempDir::new();
    let snap = build_snapshot(&dir, &csv());
    for shape in ["per-core", "multi-thread"] {
        let srv = Server::start(&["--snapshot", s(&snap), "--threads", "2", "--runtime", shape]);
        // Several connections, so both per-core listeners are likely to get some.
        for _ in 0..8 {
            assert_eq!(
                srv.request("GET", "go.example.cn", "/x7Kp2Qa").status,
                302,
                "{shape}"
            );
        }
        assert!(srv.pid() > 0);
    }
}

#[test]
fn the_benchmark_floor_answers_one_fixed_redirect() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    // An example of this package (`cargo test` builds them beside the binary), not a command.
    let floor = std::path::Path::new(env!("CARGO_BIN_EXE_duanlian"))
        .parent()
        .expect("target dir")
        .join("examples")
        .join("bench-floor");
    let mut child = std::process::Command::new(floor)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let get = Request::get("/anything").header("Host", "x");
    let answer = poll(PATIENCE, || get.send(port).ok());
    let _ = child.kill();
    let _ = child.wait();
    let r = answer.expect("floor server did not come up");
    assert_eq!(r.status, 302);
    assert!(r.header("location").is_some());
}
