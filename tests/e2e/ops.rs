//! What a redirect tier behind a load balancer needs: health, graceful shutdown, limits.
use crate::util::http::Request;
use crate::util::{
    build_snapshot, metric, poll, s, wait_until, Response, Server, TempDir, PATIENCE,
};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn snapshot(dir: &TempDir) -> std::path::PathBuf {
    build_snapshot(
        dir,
        "domain,code,url\ngo.example.cn,x7Kp2Qa,https://shop.example.com/42\n",
    )
}

/// A read-only node serving [`snapshot`], with `extra` flags.
fn snapshot_node(dir: &TempDir, extra: &[&str]) -> Server {
    let snap = snapshot(dir);
    let mut args = vec!["--snapshot", s(&snap)];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// `POST /api/v1/admin/snapshot` loading `file`, with API key `k`.
fn load_snapshot(srv: &Server, file: &std::path::Path) -> Response {
    srv.api(
        "POST",
        "/api/v1/admin/snapshot",
        Some("k"),
        Some(&format!(r#"{{"path":"{}"}}"#, s(file))),
    )
}

#[test]
fn health_endpoints_answer_on_any_host() {
    let dir = TempDir::new();
    let srv = snapshot_node(&dir, &["--threads", "1"]);
    for host in ["10.0.0.7", "go.example.cn", "anything"] {
        assert_eq!(srv.request("GET", host, "/healthz").status, 200);
        assert_eq!(srv.request("GET", host, "/livez").status, 200);
        let ready = srv.request("GET", host, "/readyz");
        assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    }
    assert_eq!(srv.request("HEAD", "x", "/readyz").status, 200);
    assert_eq!(srv.request("GET", "go.example.cn", "/metrics").status, 404);
}

#[test]
fn reserved_codes_cannot_be_taken() {
    let dir = TempDir::new();
    let input = dir.file("r.csv", b"domain,code,url\ngo.example.cn,ok,https://a.example/\ngo.example.cn,readyz,https://a.example/\n");
    let o = crate::util::snapshot_build(&input, &dir.path("r.snap"), &[]);
    assert!(
        crate::util::stderr(&o).contains("r.csv:3: code: code \"readyz\" is reserved"),
        "{}",
        crate::util::stderr(&o)
    );
    let srv = Server::start(&[
        "--data-dir",
        s(&dir.path("data")),
        "--domain",
        "go.example.cn",
        "--api-key",
        "k",
    ]);
    for code in ["healthz", "readyz", "livez", "metrics"] {
        let r = srv.api(
            "POST",
            "/api/v1/links",
            Some("k"),
            Some(&format!(
                r#"{{"url":"https://a.example/","code":"{code}"}}"#
            )),
        );
        assert_eq!(r.status, 422, "{code}: {}", r.body);
        assert!(r.body.contains("reserved"), "{}", r.body);
    }
}

#[test]
fn sigterm_drains_then_finishes_in_flight_requests_and_exits_cleanly() {
    let dir = TempDir::new();
    let mut srv = snapshot_node(
        &dir,
        &[
            "--threads",
            "2",
            "--drain-delay",
            "2",
            "--shutdown-timeout",
            "10",
        ],
    );
    // An idle keep-alive connection, and one with a request half sent.
    let mut idle = srv.connect();
    idle.write_all(b"GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\n\r\n")
        .expect("write");
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).expect("first answer");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 302"));
    let mut half = srv.connect();
    half.write_all(b"GET /x7Kp2Qa HTTP/1.1\r\nHost: go.exa")
        .expect("write");
    let open = || metric(&srv, "duanlian_open_connections");
    assert!(
        wait_until(PATIENCE, || open() >= 2.0),
        "the server never had both connections open: {}",
        open()
    );

    let started = Instant::now();
    srv.signal_term();
    // At once: not ready, yet still serving (the load balancer is moving away meanwhile).
    let readyz = loop {
        let r = srv.request("GET", "x", "/readyz");
        if r.status == 503 || started.elapsed() > Duration::from_secs(2) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(readyz.status, 503);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "readyz took {:?} to turn",
        started.elapsed()
    );
    assert_eq!(
        srv.request("GET", "go.example.cn", "/x7Kp2Qa").status,
        302,
        "still serving while draining"
    );

    // After the drain delay: the idle connection is closed...
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the idle keep-alive connection must be closed");
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "closed before the drain delay ended"
    );
    // ...and the request in flight still gets its answer.
    half.write_all(b"mple.cn\r\n\r\n")
        .expect("finish the request");
    let mut out = String::new();
    let _ = half.read_to_string(&mut out);
    assert!(
        out.starts_with("HTTP/1.1 302"),
        "in-flight request lost: {out:?}"
    );
    assert_eq!(
        srv.wait_exit(Duration::from_secs(10)),
        Some(0),
        "exit code after SIGTERM"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", srv.port)).is_err(),
        "nothing listens after exit"
    );
    assert!(
        srv.logs().contains("redirect listener stopped"),
        "{}",
        srv.logs()
    );
}

#[test]
fn oversized_headers_get_431() {
    let dir = TempDir::new();
    let srv = snapshot_node(&dir, &["--max-header-bytes", "8192"]);
    let big = format!(
        "GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\nX-Junk: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let r = Response::parse(&srv.raw(big.as_bytes()));
    assert_eq!(r.status, 431);
    assert_eq!(srv.request("GET", "go.example.cn", "/x7Kp2Qa").status, 302);
}

#[test]
fn a_client_dripping_header_bytes_is_disconnected() {
    let dir = TempDir::new();
    let srv = snapshot_node(&dir, &["--header-read-timeout", "2"]);
    let mut c = srv.connect();
    let started = Instant::now();
    let mut closed = false;
    for b in b"GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\n\r\n" {
        if c.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        // The drip itself: a byte every 400 ms never completes the head within 2 s.
        std::thread::sleep(Duration::from_millis(400));
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    if !closed {
        let mut buf = [0u8; 256];
        let n = c.read(&mut buf).unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
fn the_connection_limit_queues_new_clients() {
    let dir = TempDir::new();
    let srv = snapshot_node(&dir, &["--threads", "1", "--max-connections", "2"]);
    let req = b"GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\n\r\n";
    let mut buf = [0u8; 512];
    let mut first = srv.connect();
    let mut second = srv.connect();
    for c in [&mut first, &mut second] {
        c.write_all(req).expect("write");
        assert!(c.read(&mut buf).expect("answer") > 0);
    }
    // A third client connects (the kernel's backlog) but is not served while two are open...
    let mut third = srv.connect();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .expect("timeout");
    third.write_all(req).expect("write");
    assert!(
        third.read(&mut buf).is_err(),
        "served beyond the connection limit"
    );
    // ...until one of them leaves.
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let n = third.read(&mut buf).expect("served after a slot freed");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 302"));
}

#[test]
fn metrics_in_prometheus_text_format() {
    let dir = TempDir::new();
    let srv = Server::start(&[
        "--data-dir",
        s(&dir.path("data")),
        "--snapshot",
        s(&snapshot(&dir)),
        "--domain",
        "go.example.cn",
        "--api-key",
        "k",
    ]);
    for _ in 0..3 {
        assert_eq!(srv.request("GET", "go.example.cn", "/x7Kp2Qa").status, 302);
    }
    assert_eq!(srv.request("GET", "go.example.cn", "/missing").status, 404);
    assert_eq!(srv.request("POST", "go.example.cn", "/x7Kp2Qa").status, 405);
    let created = srv.api(
        "POST",
        "/api/v1/links",
        Some("k"),
        Some(r#"{"url":"https://a.example/","code":"new1"}"#),
    );
    assert_eq!(created.status, 201);
    // No API key needed: Prometheus scrapes without one.
    let m = srv.api("GET", "/metrics", None, None);
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    for line in [
        "duanlian_requests_total{outcome=\"redirect\"} 3",
        "duanlian_requests_total{outcome=\"not_found\"} 1",
        "duanlian_requests_total{outcome=\"bad_request\"} 1",
        "duanlian_links{layer=\"snapshot\"} 1",
        "duanlian_links{layer=\"overlay\"} 1",
        "duanlian_journal_fsync_seconds_count 1",
        "duanlian_snapshot_sequence 0",
    ] {
        assert!(m.body.contains(line), "missing {line:?} in:\n{}", m.body);
    }
    for name in [
        "duanlian_redirect_latency_seconds_bucket",
        "duanlian_open_connections",
        "duanlian_journal_bytes",
        "duanlian_snapshot_age_seconds",
    ] {
        assert!(m.body.contains(name), "missing {name} in:\n{}", m.body);
    }
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Snapshot files the process still has mapped.
fn mapped_snapshots(pid: u32) -> std::collections::BTreeSet<String> {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(".snap"))
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_owned))
        .collect()
}

#[test]
fn a_hundred_reloads_under_load_fail_nothing_and_leak_nothing() {
    let dir = TempDir::new();
    let a = crate::util::build_snapshot_named(&dir, "a", "domain,code,url\ngo.example.cn,shared,https://a.example/\ngo.example.cn,only-a,https://a.example/only\n");
    let b = crate::util::build_snapshot_named(&dir, "b", "domain,code,url\ngo.example.cn,shared,https://b.example/\ngo.example.cn,only-b,https://b.example/only\n");
    let srv = Server::start(&["--snapshot", s(&a), "--api-key", "k", "--threads", "2"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Load threads that got their first answer, so their connections are open on the server.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, answered, port) = (stop.clone(), answered.clone(), srv.port);
            std::thread::spawn(move || {
                let mut c = crate::util::KeepAlive::connect(port).expect("connect");
                let (mut ok, mut bad) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match c.get("go.example.cn", "/shared") {
                        Ok(r) if r.status == 302 => ok += 1,
                        _ => bad += 1,
                    }
                    if ok + bad == 1 {
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                (ok, bad)
            })
        })
        .collect();
    // The descriptor count to come back to includes the load's two connections.
    let answered = || answered.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        wait_until(PATIENCE, || answered() == 2),
        "{} of 2 load threads got an answer",
        answered()
    );
    let (fds_before, pid) = (fds(srv.pid()), srv.pid());
    for i in 0..100 {
        let file = if i % 2 == 0 { &b } else { &a };
        let r = load_snapshot(&srv, file);
        assert_eq!(r.status, 200, "reload {i}: {}", r.body);
    }
    // The last reload loaded `a`; a bad file changes nothing and says why.
    let bad = dir.file(
        "bad.snap",
        b"DUANLIAN but not really a snapshot at all .....................",
    );
    let r = load_snapshot(&srv, &bad);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains("bad.snap") || r.body.contains("header") || r.body.contains("truncated"),
        "{}",
        r.body
    );
    let missing = load_snapshot(&srv, std::path::Path::new("/nonexistent.snap"));
    assert_eq!(missing.status, 422);
    assert_eq!(srv.request("GET", "go.example.cn", "/only-a").status, 302);
    assert_eq!(srv.request("GET", "go.example.cn", "/only-b").status, 404);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load
        .into_iter()
        .map(|t| t.join().expect("load"))
        .fold((0, 0), |x, y| (x.0 + y.0, x.1 + y.1));
    assert_eq!(failed, 0, "{failed} failed requests during reloads");
    assert!(ok > 500, "the load barely ran: {ok}");
    // Old mappings are released once nothing uses them (requests, and the reaper, which lets
    // go of a snapshot at its next round, four times a second), and no descriptor is left
    // behind.
    let released = || mapped_snapshots(pid).len() <= 1 && fds(pid) <= fds_before;
    assert!(
        wait_until(PATIENCE, released),
        "still mapped: {:?}; descriptors grew from {fds_before} to {}",
        mapped_snapshots(pid),
        fds(pid)
    );
    let mapped = mapped_snapshots(pid);
    assert!(mapped.iter().all(|m| m.ends_with("a.snap")), "{mapped:?}");
    let metrics = srv.api("GET", "/metrics", None, None).body;
    assert!(
        metrics.contains("duanlian_snapshot_reloads_total{outcome=\"ok\"} 100"),
        "{metrics}"
    );
    assert!(
        metrics.contains("duanlian_snapshot_reloads_total{outcome=\"error\"} 2"),
        "{metrics}"
    );
}

/// Sends SIGHUP (reload the configured snapshot file).
fn hup(srv: &Server) {
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &srv.pid().to_string()])
        .status();
}

/// Sends SIGHUP and waits until `path` on go.example.cn redirects (the reload took).
fn hup_until_redirects(srv: &Server, path: &str) {
    hup(srv);
    let redirects = || srv.request("GET", "go.example.cn", path).status == 302;
    assert!(
        wait_until(PATIENCE, redirects),
        "SIGHUP did not load the new file:\n{}",
        srv.logs()
    );
}

#[test]
fn sighup_reloads_the_configured_file() {
    let dir = TempDir::new();
    let served = crate::util::build_snapshot_named(
        &dir,
        "served",
        "domain,code,url\ngo.example.cn,first,https://a.example/\n",
    );
    let srv = Server::start(&["--snapshot", s(&served), "--api-key", "k"]);
    assert_eq!(srv.request("GET", "go.example.cn", "/second").status, 404);
    // Publish the new version the safe way: build beside it, rename over it.
    let next = crate::util::build_snapshot_named(
        &dir,
        "next",
        "domain,code,url\ngo.example.cn,second,https://b.example/\n",
    );
    std::fs::rename(&next, &served).expect("rename");
    hup_until_redirects(&srv, "/second");
    assert_eq!(srv.request("GET", "go.example.cn", "/first").status, 404);
    // The swap comes first, the log line right after it.
    assert!(
        wait_until(PATIENCE, || srv.logs().contains("snapshot reloaded")),
        "{}",
        srv.logs()
    );
}

/// Where each link of the data-directory test should send visitors (None: 404).
fn assert_targets(srv: &Server, want: &[(&str, Option<&str>)]) {
    for (code, url) in want {
        let r = srv.request("GET", "go.example.cn", &format!("/{code}"));
        match url {
            Some(url) => {
                assert_eq!(r.status, 302, "{code}: {}", r.body);
                assert_eq!(r.header("location"), Some(*url), "{code}");
            }
            None => assert_eq!(r.status, 404, "{code}"),
        }
    }
}

#[test]
fn a_data_directory_takes_new_bulk_files_with_api_writes_on_top() {
    let dir = TempDir::new();
    let data = dir.path("data");
    let configured = crate::util::build_snapshot_named(
        &dir,
        "bulk",
        "domain,code,url\n\
         go.example.cn,old,https://bulk1.example/old\n\
         go.example.cn,both,https://bulk1.example/both\n\
         go.example.cn,patched,https://bulk1.example/patched\n\
         go.example.cn,gone,https://bulk1.example/gone\n",
    );
    let mut srv = Server::data_node(&data, "k", &["--snapshot", s(&configured)]);
    let create = |srv: &Server, code: &str| {
        let body = format!(r#"{{"url":"https://api.example/{code}","code":"{code}"}}"#);
        let r = srv.api("POST", "/api/v1/links", Some("k"), Some(&body));
        assert_eq!(r.status, 201, "{}", r.body);
    };
    // API writes on both sides of a compaction: in the snapshot, and only in the journal.
    create(&srv, "compacted");
    let r = srv.api("POST", "/api/v1/admin/compact", Some("k"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    create(&srv, "fresh");
    let r = srv.api(
        "PATCH",
        "/api/v1/links/go.example.cn/patched",
        Some("k"),
        Some(r#"{"url":"https://api.example/patched"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = srv.api(
        "DELETE",
        "/api/v1/links/go.example.cn/gone",
        Some("k"),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);

    // A new bulk file that also names the codes the API wrote: the API's versions win.
    let second = crate::util::build_snapshot_named(
        &dir,
        "second",
        "domain,code,url\n\
         go.example.cn,both,https://bulk2.example/both\n\
         go.example.cn,new,https://bulk2.example/new\n\
         go.example.cn,fresh,https://bulk2.example/fresh\n\
         go.example.cn,compacted,https://bulk2.example/compacted\n\
         go.example.cn,patched,https://bulk2.example/patched\n\
         go.example.cn,gone,https://bulk2.example/gone\n",
    );
    let r = load_snapshot(&srv, &second);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(r#""links":5"#), "{}", r.body);
    let after_second = [
        ("old", None),
        ("both", Some("https://bulk2.example/both")),
        ("new", Some("https://bulk2.example/new")),
        ("fresh", Some("https://api.example/fresh")),
        ("compacted", Some("https://api.example/compacted")),
        ("patched", Some("https://api.example/patched")),
        // Its delete was not compacted yet, so it applies to the new file too.
        ("gone", None),
    ];
    assert_targets(&srv, &after_second);

    // A bad file changes nothing and says why.
    let bad = dir.file("bad.snap", b"DUANLIAN but not a snapshot");
    let r = load_snapshot(&srv, &bad);
    assert_eq!(r.status, 422, "{}", r.body);
    assert_targets(&srv, &after_second);

    // The bulk load is durable: a hard kill and a restart serve the same links.
    srv.stop();
    let mut srv = Server::data_node(&data, "k", &["--snapshot", s(&configured)]);
    assert_targets(&srv, &after_second);

    // SIGHUP loads the configured path again, after a new build was renamed over it.
    let third = crate::util::build_snapshot_named(
        &dir,
        "third",
        "domain,code,url\ngo.example.cn,hup,https://bulk3.example/hup\n",
    );
    std::fs::rename(&third, &configured).expect("rename");
    hup_until_redirects(&srv, "/hup");
    assert_targets(
        &srv,
        &[
            ("both", None),
            ("new", None),
            ("fresh", Some("https://api.example/fresh")),
            ("compacted", Some("https://api.example/compacted")),
            ("patched", Some("https://api.example/patched")),
        ],
    );
    let metrics = srv.api("GET", "/metrics", None, None).body;
    assert!(
        metrics.contains("duanlian_snapshot_reloads_total{outcome=\"ok\"} 1"),
        "{metrics}"
    );
    srv.stop();
}

#[test]
fn logs_are_json_when_not_on_a_terminal_and_text_on_request() {
    let dir = TempDir::new();
    let snap = snapshot(&dir);
    let srv = Server::start(&["--snapshot", s(&snap)]);
    let logs = srv.logs();
    for line in logs.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    let first = logs
        .lines()
        .find(|l| l.contains("snapshot loaded"))
        .unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert_eq!(v["level"], "INFO");
    assert!(
        v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("snapshot loaded")),
        "{v}"
    );
    assert_eq!(v["fields"]["links"], 1, "start-up says what was loaded");
    let text = Server::start(&["--snapshot", s(&snap), "--log-format", "text"]);
    let logs = text.logs();
    assert!(logs.lines().all(|l| !l.starts_with('{')), "{logs}");
    let line = logs
        .lines()
        .find(|l| l.contains("snapshot loaded"))
        .unwrap_or_default();
    assert!(line.contains("INFO"), "{line}");
}

#[test]
fn configuration_file_then_environment_then_flags() {
    let dir = TempDir::new();
    let data = dir.path("data");
    let conf = dir.file(
        "duanlian.toml",
        format!(
            "data_dir = \"{}\"\ndomains = [\"go.example.cn\", \"s.example.com\"]\napi_keys = [\"from-file\"]\ncode_length = 9\n\
             drain_delay = 0\n\n[domain.\"go.example.cn\"]\nnot_found_url = \"https://www.example.cn/404\"\n",
            s(&data)
        )
        .as_bytes(),
    );
    let create = |srv: &Server| {
        let r = srv.api(
            "POST",
            "/api/v1/links",
            Some("from-file"),
            Some(r#"{"url":"https://a.example/"}"#),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).expect("json");
        v["code"].as_str().map_or(0, str::len)
    };
    let srv = Server::start(&["--config", s(&conf)]);
    assert_eq!(create(&srv), 9, "the file's code_length");
    let miss = srv.request("GET", "go.example.cn", "/nope");
    assert_eq!(
        miss.header("location"),
        Some("https://www.example.cn/404"),
        "the file's domain section"
    );
    srv.kill9();
    let env = Server::start_env(&[("DUANLIAN_CODE_LENGTH", "11")], &["--config", s(&conf)]);
    assert_eq!(create(&env), 11, "the environment beats the file");
    env.kill9();
    let flag = Server::start_env(
        &[("DUANLIAN_CODE_LENGTH", "11")],
        &["--config", s(&conf), "--code-length", "12"],
    );
    assert_eq!(create(&flag), 12, "a flag beats both");
}

#[test]
fn config_check_validates_and_prints_the_effective_settings() {
    let dir = TempDir::new();
    let good = dir.file("good.toml", b"listen = \"0.0.0.0:80\"\ndomains = [\"go.example.cn\"]\nexpired_retention = \"7d\"\nruntime = \"multi-thread\"\nhuge_pages = false\ncluster = \"nats://10.0.0.1:4222\"\ncluster_replicas = 3\n");
    let o = crate::util::run(&["config", "check", s(&good)]);
    assert!(o.status.success(), "{}", crate::util::stderr(&o));
    let out = crate::util::stdout(&o);
    for line in [
        "listen = \"0.0.0.0:80\"",
        "admin_listen = \"127.0.0.1:8081\"",
        "expired_retention = \"7d\"",
        "runtime = \"multi-thread\"",
        "huge_pages = \"false\"",
        "cluster = \"nats://10.0.0.1:4222\"",
        "cluster_replicas = 3",
        "good.toml: ok",
    ] {
        assert!(out.contains(line), "{line} in:\n{out}");
    }
    // What it prints can be pasted back: the same settings again.
    let again = dir.file("again.toml", out.as_bytes());
    let o = crate::util::run(&["config", "check", s(&again)]);
    assert!(o.status.success(), "{}", crate::util::stderr(&o));
    assert_eq!(
        crate::util::stdout(&o).replace("again.toml", "good.toml"),
        out
    );
    let cases: [(&str, &[u8], &str); 9] = [
        ("huge.toml", b"huge_pages = \"sometimes\"\n", "huge_pages"),
        (
            "replicas.toml",
            b"cluster_replicas = 7\n",
            "cluster_replicas",
        ),
        (
            "unknown.toml",
            b"listen = \"0.0.0.0:80\"\nlisten_port = 80\n",
            "unknown key `listen_port`",
        ),
        ("type.toml", b"threads = \"two\"\n", "threads"),
        (
            "period.toml",
            b"expired_retention = \"a while\"\n",
            "expired_retention",
        ),
        (
            "url.toml",
            b"[domain.\"go.example.cn\"]\nroot_url = \"javascript:x\"\n",
            "[domain.\"go.example.cn\"] root_url = \"javascript:x\": url must start",
        ),
        // serve's own rules, in the file's words (the default listen address included).
        (
            "same.toml",
            b"admin_listen = \"127.0.0.1:8080\"\n",
            "admin_listen must differ from listen",
        ),
        (
            "tls.toml",
            b"tls_cert = \"/x.pem\"\n",
            "tls_cert needs tls_key",
        ),
        ("syntax.toml", b"listen = \n", "syntax.toml"),
    ];
    for (name, text, expect) in cases {
        let f = dir.file(name, text);
        let o = crate::util::run(&["config", "check", s(&f)]);
        let err = crate::util::stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{name}: {err}");
        assert!(
            err.contains(expect) && err.contains(name),
            "{name}: expected {expect:?} in {err}"
        );
        // serve refuses the same file the same way, before touching anything.
        let o = crate::util::run(&[
            "serve",
            "--config",
            s(&f),
            "--data-dir",
            s(&dir.path("never")),
        ]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        assert!(!dir.path("never").exists());
    }
}

#[test]
fn forwarded_headers_are_believed_from_trusted_proxies_only() {
    let dir = TempDir::new();
    let snap = snapshot(&dir);
    let req = "GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n\r\n";
    let access = |srv: &Server| -> serde_json::Value {
        let line = poll(PATIENCE, || {
            let logs = srv.logs();
            let line = logs.lines().find(|l| l.contains("\"target\":\"access\""))?;
            Some(line.to_owned())
        })
        .unwrap_or_else(|| panic!("no access log line:\n{}", srv.logs()));
        serde_json::from_str(&line).expect("json")
    };
    // The same request through a trusted proxy range and through an untrusted one.
    for (proxies, client, proto) in [
        ("127.0.0.0/8", "203.0.113.7", "https"),
        ("10.0.0.0/8", "127.0.0.1", "http"),
    ] {
        let srv = Server::start(&[
            "--snapshot",
            s(&snap),
            "--access-log",
            "--trusted-proxy",
            proxies,
        ]);
        assert_eq!(Response::parse(&srv.raw(req.as_bytes())).status, 302);
        let line = access(&srv);
        let got = (
            line["fields"]["client"].as_str(),
            line["fields"]["proto"].as_str(),
        );
        assert_eq!(
            got,
            (Some(client), Some(proto)),
            "trusting {proxies}: {line}"
        );
    }
    // No access log unless asked for. An access line is written before its answer is sent, and
    // a SIGHUP's "snapshot reloaded" comes after the answer, on the same stderr: once that is
    // in, any access line would be too.
    let quiet = Server::start(&["--snapshot", s(&snap)]);
    assert_eq!(Response::parse(&quiet.raw(req.as_bytes())).status, 302);
    hup(&quiet);
    assert!(
        wait_until(PATIENCE, || quiet.logs().contains("snapshot reloaded")),
        "{}",
        quiet.logs()
    );
    assert!(
        !quiet.logs().contains("\"target\":\"access\""),
        "{}",
        quiet.logs()
    );
    let bad = crate::util::run(&[
        "serve",
        "--snapshot",
        s(&snap),
        "--trusted-proxy",
        "not-an-ip",
    ]);
    assert!(
        crate::util::stderr(&bad).contains("--trusted-proxy"),
        "{}",
        crate::util::stderr(&bad)
    );
}

#[test]
fn running_out_of_descriptors_pauses_accepting_and_recovers() {
    let dir = TempDir::new();
    let snap = snapshot(&dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let log = dir.path("serve.log");
    let cmd = format!(
        "ulimit -n 40 && exec {} serve --snapshot {} --listen 127.0.0.1:{port} --admin-listen 127.0.0.1:0 --threads 1 --log-format text 2>{}",
        env!("CARGO_BIN_EXE_duanlian"),
        s(&snap),
        s(&log)
    );
    let mut child = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .spawn()
        .expect("spawn");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let started = wait_until(PATIENCE, || TcpStream::connect(("127.0.0.1", port)).is_ok());
    // Far more connections than descriptors, each with the start of a request (the kernel
    // hands over a connection once its first bytes are in): the accept loop hits EMFILE, and
    // says so.
    let flood: Vec<TcpStream> = (0..80)
        .filter_map(|_| {
            let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
            c.write_all(b"GET /x7Kp2Qa HTTP/1.1\r\n").ok()?;
            Some(c)
        })
        .collect();
    let paused = started && wait_until(PATIENCE, || logs().contains("accept failed; pausing"));
    let alive = child.try_wait().expect("wait").is_none();
    drop(flood);
    // Once descriptors are free again, it serves.
    let get = Request::get("/x7Kp2Qa")
        .header("Host", "go.example.cn")
        .timeout(Duration::from_secs(2));
    let answer = (started && alive)
        .then(|| poll(PATIENCE, || get.send(port).ok().filter(|r| r.status == 302)))
        .flatten();
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "server did not start: {}", logs());
    assert!(paused, "accept never failed: {}", logs());
    assert!(alive, "the server died: {}", logs());
    assert!(
        answer.is_some(),
        "no 302 once descriptors were free: {}",
        logs()
    );
}

#[test]
fn huge_page_memory_serves_and_reloads_like_a_mapping() {
    let dir = TempDir::new();
    let a = snapshot(&dir);
    let b = crate::util::build_snapshot_named(
        &dir,
        "b",
        "domain,code,url\ngo.example.cn,other,https://b.example/\n",
    );
    let srv = Server::start(&["--snapshot", s(&a), "--huge-pages", "--api-key", "k"]);
    let r = srv.request("GET", "go.example.cn", "/x7Kp2Qa");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("https://shop.example.com/42"));
    // The mapping answers at once; the copy in huge pages takes over in the background.
    let mapped = || {
        std::fs::read_to_string(format!("/proc/{}/maps", srv.pid()))
            .expect("maps")
            .contains(s(&a))
    };
    let moved = || !mapped() && srv.logs().contains("serving it from huge pages");
    assert!(wait_until(PATIENCE, moved), "{}", srv.logs());
    assert_eq!(srv.request("GET", "go.example.cn", "/x7Kp2Qa").status, 302);
    let r = load_snapshot(&srv, &b);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(srv.request("GET", "go.example.cn", "/other").status, 302);
    assert_eq!(srv.request("GET", "go.example.cn", "/x7Kp2Qa").status, 404);
    // Reloads go straight to huge pages: no mapping of either file is left.
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", srv.pid())).expect("maps");
    assert!(!maps.contains("b.snap") && !maps.contains(s(&a)), "{maps}");

    let o = crate::util::run(&["serve", "--data-dir", s(&dir.path("d")), "--huge-pages"]);
    assert!(!o.status.success());
    assert!(
        crate::util::stderr(&o).contains("--huge-pages applies to"),
        "{}",
        crate::util::stderr(&o)
    );
}
