//! Validity periods through the real binary: expiry by time and by visits, fallbacks, counts
//! that survive restarts, and the API's validity inputs.
use crate::util::{poll, s, wait_until, KeepAlive, Server, TempDir, PATIENCE};
use serde_json::{json, Value};

const KEY: &str = "validity-key";

fn server(dir: &TempDir, extra: &[&str]) -> Server {
    Server::data_node(&dir.path("data"), KEY, extra)
}

fn create(srv: &Server, v: Value) -> Value {
    let r = srv.api("POST", "/api/v1/links", Some(KEY), Some(&v.to_string()));
    assert_eq!(r.status, 201, "{}", r.body);
    serde_json::from_str(&r.body).expect("json")
}

fn link(srv: &Server, domain: &str, code: &str) -> Value {
    srv.link(KEY, domain, code)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[test]
fn a_short_validity_redirects_then_expires() {
    let dir = TempDir::new();
    let srv = server(
        &dir,
        &["--expired-url", "s.example.com=https://s.example.org/ended"],
    );
    create(
        &srv,
        json!({"url": "https://a.example/flash", "code": "flash", "expires_in": 2}),
    );
    create(
        &srv,
        json!({"url": "https://a.example/own", "code": "own", "expires_in": 2, "expired_url": "https://a.example/sorry"}),
    );
    create(
        &srv,
        json!({"url": "https://a.example/dom", "code": "dom", "domain": "s.example.com", "expires_in": 2}),
    );
    assert_eq!(srv.request("GET", "go.example.cn", "/flash").status, 302);
    assert_eq!(srv.request("GET", "go.example.cn", "/own").status, 302);
    assert_eq!(srv.request("GET", "s.example.com", "/dom").status, 302);
    // Wait for the expiry by polling the answer (the clock decides, not a timed assertion).
    let gone = poll(PATIENCE, || {
        Some(srv.request("GET", "go.example.cn", "/flash")).filter(|r| r.status != 302)
    })
    .expect("/flash never expired");
    assert_eq!(gone.status, 410);
    assert!(gone.body.contains("This link has expired"), "{}", gone.body);
    assert_eq!(
        gone.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    // Created after /flash, perhaps in the next second: each is waited for on its own.
    let expired = |host: &str, path: &str, live: &str| {
        poll(PATIENCE, || {
            Some(srv.request("GET", host, path)).filter(|r| r.header("location") != Some(live))
        })
        .unwrap_or_else(|| panic!("{path} never expired"))
    };
    let own = expired("go.example.cn", "/own", "https://a.example/own");
    assert_eq!(
        (own.status, own.header("location")),
        (302, Some("https://a.example/sorry"))
    );
    let dom = expired("s.example.com", "/dom", "https://a.example/dom");
    assert_eq!(
        (dom.status, dom.header("location")),
        (302, Some("https://s.example.org/ended"))
    );
    assert_eq!(link(&srv, "go.example.cn", "flash")["state"], "expired");
    // Giving it a new expiry brings it back.
    let r = srv.api(
        "PATCH",
        "/api/v1/links/go.example.cn/flash",
        Some(KEY),
        Some(r#"{"expires_in": "1d"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(srv.request("GET", "go.example.cn", "/flash").status, 302);
}

#[test]
fn a_visit_cap_holds_exactly_under_racing_clients() {
    let dir = TempDir::new();
    let srv = server(&dir, &[]);
    create(
        &srv,
        json!({"url": "https://a.example/limited", "code": "limited", "max_visits": 50}),
    );
    // HEAD does not count.
    assert_eq!(srv.request("HEAD", "go.example.cn", "/limited").status, 302);
    let port = srv.port;
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = KeepAlive::connect(port).expect("connect");
                let mut counts = (0, 0);
                for _ in 0..25 {
                    match c.get("go.example.cn", "/limited").expect("get").status {
                        302 => counts.0 += 1,
                        410 => counts.1 += 1,
                        other => panic!("unexpected {other}"),
                    }
                }
                counts
            })
        })
        .collect();
    let (redirected, refused) = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!((redirected, refused), (50, 150));
    let l = link(&srv, "go.example.cn", "limited");
    assert_eq!(
        (
            l["visits"].as_u64(),
            l["max_visits"].as_u64(),
            l["state"].as_str()
        ),
        // Used up: expired, exactly as the redirect path answers it.
        (Some(50), Some(50), Some("expired"))
    );
    // Raising the cap lets visitors through again.
    srv.api(
        "PATCH",
        "/api/v1/links/go.example.cn/limited",
        Some(KEY),
        Some(r#"{"max_visits": 51}"#),
    );
    assert_eq!(srv.request("GET", "go.example.cn", "/limited").status, 302);
    assert_eq!(srv.request("GET", "go.example.cn", "/limited").status, 410);
}

/// The count `visits.bin` holds for `key` ("domain/code"). The file (crates/store's
/// visits_file.rs) is "DLVISIT1", then key_len:u16 key count:u64 per link (little-endian), then
/// a crc32c:u32; it is replaced by a rename, so it is never read half written.
fn saved_visits(path: &std::path::Path, key: &str) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let records = bytes.get(8..bytes.len().checked_sub(4)?)?;
    let mut at = 0;
    while at < records.len() {
        let len = u16::from_le_bytes(records.get(at..at + 2)?.try_into().ok()?) as usize;
        let name = records.get(at + 2..at + 2 + len)?;
        let count = records.get(at + 2 + len..at + 10 + len)?;
        if name == key.as_bytes() {
            return Some(u64::from_le_bytes(count.try_into().ok()?));
        }
        at += 10 + len;
    }
    None
}

#[test]
fn visit_counts_survive_restarts() {
    let dir = TempDir::new();
    let srv = server(&dir, &["--drain-delay", "0"]);
    create(
        &srv,
        json!({"url": "https://a.example/c", "code": "counted"}),
    );
    for _ in 0..7 {
        assert_eq!(srv.request("GET", "go.example.cn", "/counted").status, 302);
    }
    srv.request("HEAD", "go.example.cn", "/counted");
    assert_eq!(link(&srv, "go.example.cn", "counted")["visits"], 7);
    assert!(srv.terminate(), "SIGTERM must end the server cleanly");
    // A clean stop saves the counts.
    let srv = server(&dir, &[]);
    assert_eq!(link(&srv, "go.example.cn", "counted")["visits"], 7);
    for _ in 0..3 {
        srv.request("GET", "go.example.cn", "/counted");
    }
    // They are saved every 2 s, so a kill -9 after that loses nothing.
    let visits = dir.path("data/visits.bin");
    assert!(
        wait_until(PATIENCE, || saved_visits(&visits, "go.example.cn/counted")
            == Some(10)),
        "visits.bin never held 10 visits: {:?}",
        saved_visits(&visits, "go.example.cn/counted")
    );
    srv.kill9();
    let srv = server(&dir, &[]);
    assert_eq!(link(&srv, "go.example.cn", "counted")["visits"], 10);
    // A deleted link's count goes with it.
    srv.api(
        "DELETE",
        "/api/v1/links/go.example.cn/counted",
        Some(KEY),
        None,
    );
    create(
        &srv,
        json!({"url": "https://a.example/c2", "code": "counted"}),
    );
    assert_eq!(link(&srv, "go.example.cn", "counted")["visits"], 0);
}

#[test]
fn validity_inputs_and_contradictions() {
    let dir = TempDir::new();
    let srv = server(&dir, &[]);
    let week = create(
        &srv,
        json!({"url": "https://a.example/w", "expires_in": "7d"}),
    );
    let at = week["expires_at"].as_i64().expect("expires_at");
    assert!((at - now() - 7 * 86_400).abs() <= 5, "{week}");
    let year = create(
        &srv,
        json!({"url": "https://a.example/y", "expires_in": "1y", "max_visits": 1000}),
    );
    assert_eq!(year["max_visits"], 1000);
    let rfc = create(
        &srv,
        json!({"url": "https://a.example/r", "expires_at": "2099-01-01T00:00:00+08:00"}),
    );
    assert_eq!(rfc["expires_at"], 4_070_880_000i64);
    assert_eq!(rfc["expires"], "2098-12-31T16:00:00Z");
    let permanent = create(
        &srv,
        json!({"url": "https://a.example/p", "expires_in": null}),
    );
    assert_eq!(permanent["expires_at"], Value::Null);
    let pending = create(
        &srv,
        json!({"url": "https://a.example/later", "code": "later", "valid_since": now() + 3600}),
    );
    assert_eq!(pending["state"], "pending");
    assert_eq!(srv.request("GET", "go.example.cn", "/later").status, 404);

    let refused = |body: Value, fields: &[&str]| {
        let r = srv.api("POST", "/api/v1/links", Some(KEY), Some(&body.to_string()));
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).expect("json");
        for f in fields {
            assert!(
                v["invalid_fields"]
                    .as_array()
                    .expect("fields")
                    .iter()
                    .any(|x| x["name"] == *f),
                "{f} in {v}"
            );
        }
    };
    refused(
        json!({"url": "https://a.example/", "expires_at": now() - 60}),
        &["expires_at"],
    );
    refused(
        json!({"url": "https://a.example/", "expires_at": "2000-01-01T00:00:00Z"}),
        &["expires_at"],
    );
    refused(
        json!({"url": "https://a.example/", "expires_at": now() + 60, "expires_in": "1d"}),
        &["expires_at", "expires_in"],
    );
    refused(
        json!({"url": "https://a.example/", "valid_since": now() + 7200, "expires_at": now() + 3600}),
        &["valid_since"],
    );
    refused(
        json!({"url": "https://a.example/", "max_visits": 0}),
        &["max_visits"],
    );
    refused(
        json!({"url": "https://a.example/", "expires_in": "soon"}),
        &["expires_in"],
    );
    refused(
        json!({"url": "https://a.example/", "expires_at": "next tuesday"}),
        &["expires_at"],
    );
    refused(
        json!({"url": "https://a.example/", "expired_url": "javascript:x"}),
        &["expired_url"],
    );
}

#[test]
fn domain_fallbacks_for_unknown_codes_and_the_root() {
    let dir = TempDir::new();
    let srv = server(
        &dir,
        &[
            "--not-found-url",
            "go.example.cn=https://www.example.cn/404",
            "--root-url",
            "go.example.cn=https://www.example.cn/",
        ],
    );
    let miss = srv.request("GET", "go.example.cn", "/nothing-here");
    assert_eq!(
        (miss.status, miss.header("location")),
        (302, Some("https://www.example.cn/404"))
    );
    let root = srv.request("GET", "go.example.cn", "/");
    assert_eq!(
        (root.status, root.header("location")),
        (302, Some("https://www.example.cn/"))
    );
    assert_eq!(
        srv.request("GET", "s.example.com", "/nothing-here").status,
        404
    );
    assert_eq!(srv.request("GET", "s.example.com", "/").status, 404);
    let unused = dir.path("unused");
    let bad = crate::util::run(&[
        "serve",
        "--data-dir",
        s(&unused),
        "--not-found-url",
        "go.example.cn",
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(
        !unused.exists(),
        "a flag error must not create the data directory"
    );
    assert!(
        crate::util::stderr(&bad).contains("expected DOMAIN=URL"),
        "{}",
        crate::util::stderr(&bad)
    );
}

#[test]
fn bulk_input_takes_the_validity_columns() {
    let dir = TempDir::new();
    let snap = crate::util::build_snapshot(
        &dir,
        "domain,code,url,expires_at,expires_in,max_visits,expired_url,valid_since\n\
         go.example.cn,twice,https://a.example/t,,,2,https://a.example/over,\n\
         go.example.cn,week,https://a.example/w,,7d,,,\n\
         go.example.cn,rfc,https://a.example/r,2099-01-01T00:00:00Z,,,,2020-01-01\n",
    );
    let srv = Server::start(&["--snapshot", s(&snap), "--api-key", KEY]);
    assert_eq!(srv.request("GET", "go.example.cn", "/twice").status, 302);
    assert_eq!(srv.request("GET", "go.example.cn", "/twice").status, 302);
    let over = srv.request("GET", "go.example.cn", "/twice");
    assert_eq!(
        (over.status, over.header("location")),
        (302, Some("https://a.example/over"))
    );
    let week = link(&srv, "go.example.cn", "week");
    assert!(
        (week["expires_at"].as_i64().unwrap_or(0) - now() - 7 * 86_400).abs() <= 30,
        "{week}"
    );
    assert_eq!(
        link(&srv, "go.example.cn", "rfc")["expires_at"],
        4_070_908_800i64
    );
    let both = crate::util::snapshot_build(
        &dir.file(
            "both.csv",
            b"domain,code,url,expires_at,expires_in\ngo.example.cn,x,https://a/,2099-01-01,1d\n",
        ),
        &dir.path("both.snap"),
        &[],
    );
    assert!(
        crate::util::stderr(&both).contains("both.csv:2: expires_in"),
        "{}",
        crate::util::stderr(&both)
    );
    let zero = crate::util::snapshot_build(
        &dir.file(
            "zero.csv",
            b"domain,code,url,max_visits\ngo.example.cn,x,https://a/,0\n",
        ),
        &dir.path("zero.snap"),
        &[],
    );
    assert!(
        crate::util::stderr(&zero).contains("zero.csv:2: max_visits"),
        "{}",
        crate::util::stderr(&zero)
    );
}

/// A data-directory node frees what passed its retention, with the retention set in one place
/// (the flag): expired links leave the overlay.
#[test]
fn links_past_their_retention_leave_memory() {
    let dir = TempDir::new();
    let srv = server(&dir, &["--expired-retention", "1"]);
    for i in 0..5 {
        create(
            &srv,
            json!({"url": format!("https://t.example/{i}"), "code": format!("brief{i}"), "expires_in": 1}),
        );
    }
    create(
        &srv,
        json!({"url": "https://t.example/stays", "code": "stays"}),
    );
    assert_eq!(
        crate::util::metric(&srv, r#"duanlian_links{layer="overlay"}"#),
        6.0
    );
    let overlay = || crate::util::metric(&srv, r#"duanlian_links{layer="overlay"}"#);
    assert!(
        wait_until(PATIENCE, || overlay() == 1.0),
        "expired links never left memory: {} links in the overlay",
        overlay()
    );
    assert_eq!(srv.request("GET", "go.example.cn", "/brief0").status, 404);
    assert_eq!(srv.request("GET", "go.example.cn", "/stays").status, 302);
}
