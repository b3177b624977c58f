//! Inputs a hostile user or an unlucky operator sends, through the real binary: each test
//! reproduces something that once hung, lost data or misled, and shows what happens now.
use crate::util::{metric, run, s, stderr, wait_until, Server, TempDir, PATIENCE};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEY: &str = "hostile-key";

fn node(dir: &TempDir, extra: &[&str]) -> Server {
    Server::data_node(&dir.path("data"), KEY, extra)
}

fn post(srv: &Server, path: &str, v: &Value) -> crate::util::Response {
    srv.api("POST", path, Some(KEY), Some(&v.to_string()))
}

fn problem_fields(r: &crate::util::Response) -> Vec<String> {
    let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("json: {}", r.body));
    v["invalid_fields"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A create with a far-future expiry once wedged the reaper (a timing-wheel entry re-filed
/// forever under its lock), and every later write waited on that lock. Now: the latest accepted
/// instant is 9999-12-31T23:59:59Z, later ones are 422 naming the field, and a link at the
/// limit leaves writes, compaction and the reaper working.
#[test]
fn far_future_expiries_are_refused_past_year_9999_and_never_stall_writes() {
    let dir = TempDir::new();
    // A retention of one second lets a canary below show the reaper finishing a round.
    let srv = node(&dir, &["--expired-retention", "1"]);
    for (body, field) in [
        (
            json!({"url": "https://t.example/a", "expires_at": "10000-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"url": "https://t.example/a", "expires_at": 253_402_300_800i64}),
            "expires_at",
        ),
        (
            json!({"url": "https://t.example/a", "expires_at": i64::MAX}),
            "expires_at",
        ),
        (
            json!({"url": "https://t.example/a", "expires_in": "9000y"}),
            "expires_in",
        ),
        (
            json!({"url": "https://t.example/a", "valid_since": i64::MAX}),
            "valid_since",
        ),
    ] {
        let r = post(&srv, "/api/v1/links", &body);
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(problem_fields(&r), [field], "{}", r.body);
    }
    // The limit itself, and years the old wheel looped on (4200, 3000y), are accepted.
    for (code, body) in [
        (
            "far",
            json!({"url": "https://t.example/far", "expires_at": "9999-12-31T23:59:59Z"}),
        ),
        (
            "y4200",
            json!({"url": "https://t.example/far", "expires_at": "4200-01-01T00:00:00Z"}),
        ),
        (
            "y3000",
            json!({"url": "https://t.example/far", "expires_in": "3000y"}),
        ),
    ] {
        let mut body = body;
        body["code"] = json!(code);
        let r = post(&srv, "/api/v1/links", &body);
        assert_eq!(r.status, 201, "{code}: {}", r.body);
    }
    // The reaper (every quarter second) gets past these entries: a canary expiring in a second
    // leaves memory once its one-second retention is over, which only a round of the reaper
    // that started after the entries above were filed can do.
    let overlay = r#"duanlian_links{layer="overlay"}"#;
    let before = metric(&srv, overlay);
    let r = post(
        &srv,
        "/api/v1/links",
        &json!({"url": "https://t.example/canary", "code": "canary", "expires_in": 1}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(
        wait_until(PATIENCE, || metric(&srv, overlay) == before),
        "the reaper never purged the canary: {} links in memory, {before} before it",
        metric(&srv, overlay)
    );
    // Writes go on.
    for i in 0..20 {
        let started = Instant::now();
        let r = post(
            &srv,
            "/api/v1/links",
            &json!({"url": format!("https://t.example/{i}"), "expires_in": "1d"}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "create {i} took {:?}",
            started.elapsed()
        );
    }
    let r = srv.api("POST", "/api/v1/admin/compact", Some(KEY), None);
    assert!(r.status < 300, "compaction: {} {}", r.status, r.body);
    assert_eq!(srv.request("GET", "go.example.cn", "/far").status, 302);
    assert_eq!(
        post(
            &srv,
            "/api/v1/links",
            &json!({"url": "https://t.example/after"})
        )
        .status,
        201
    );
}

/// Bulk input names the file, line and field for an expiry past the limit.
#[test]
fn bulk_input_refuses_expiries_past_year_9999() {
    let dir = TempDir::new();
    for (name, csv, want) in [
        ("at.csv", "domain,code,url,expires_at\ngo.example.cn,a,https://a.example/,9999-12-31T23:59:59Z\ngo.example.cn,b,https://a.example/,253402300800\n", "at.csv:3: expires_at"),
        ("in.csv", "domain,code,url,expires_in\ngo.example.cn,a,https://a.example/,9000y\n", "in.csv:2: expires_in"),
        ("secs.csv", "domain,code,url,expires_at\ngo.example.cn,a,https://a.example/,9223372036854775807\n", "secs.csv:2: expires_at"),
        ("since.jsonl", "{\"domain\":\"go.example.cn\",\"code\":\"a\",\"url\":\"https://a.example/\",\"valid_since\":300000000000}\n", "since.jsonl:1: valid_since"),
    ] {
        let input = dir.file(name, csv.as_bytes());
        let o = crate::util::snapshot_build(&input, &dir.path("out.snap"), &[]);
        assert!(!o.status.success(), "{name} was accepted");
        assert!(stderr(&o).contains(want), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains("9999-12-31T23:59:59Z"), "{}", stderr(&o));
    }
}

/// An expired link sent to one of our own domains could land on itself:
/// `/exploop` → `302 https://go.example.cn/exploop` → expired again.
#[test]
fn expired_url_on_our_own_domain_is_refused() {
    let dir = TempDir::new();
    let srv = node(&dir, &[]);
    let r = post(
        &srv,
        "/api/v1/links",
        &json!({"url": "https://t.example/", "code": "exploop", "expires_in": "1d",
                "expired_url": "https://GO.example.cn/exploop"}),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(problem_fields(&r), ["expired_url"]);
    assert!(r.body.contains("redirect loop"), "{}", r.body);
    let r = post(
        &srv,
        "/api/v1/links",
        &json!({"url": "https://t.example/", "code": "ok"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = srv.api(
        "PATCH",
        "/api/v1/links/go.example.cn/ok",
        Some(KEY),
        Some(r#"{"expired_url":"http://s.example.com/other"}"#),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(problem_fields(&r), ["expired_url"]);
}

/// Loading a FIFO as a snapshot once blocked the request forever (opening a FIFO waits for a
/// writer). Anything but a regular file is 422 naming `path`, at once.
#[test]
fn loading_a_fifo_or_directory_as_a_snapshot_is_refused_at_once() {
    let dir = TempDir::new();
    let srv = node(&dir, &[]);
    let fifo = dir.path("pipe.snap");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    for (path, kind) in [(fifo.clone(), "a FIFO"), (dir.0.clone(), "a directory")] {
        let started = Instant::now();
        let r = post(&srv, "/api/v1/admin/snapshot", &json!({"path": s(&path)}));
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(problem_fields(&r), ["path"]);
        assert!(r.body.contains(kind), "{}", r.body);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // A read-only node too.
    let snap = crate::util::build_snapshot(
        &dir,
        "domain,code,url\ngo.example.cn,a,https://a.example/\n",
    );
    let ro = Server::start(&["--snapshot", s(&snap), "--api-key", KEY]);
    let r = post(&ro, "/api/v1/admin/snapshot", &json!({"path": s(&fifo)}));
    assert_eq!(r.status, 422, "{}", r.body);
}

/// A link whose visit cap is used up answers as expired, and the API says so.
#[test]
fn a_used_up_visit_cap_is_expired_in_the_api() {
    let dir = TempDir::new();
    let srv = node(&dir, &[]);
    let r = post(
        &srv,
        "/api/v1/links",
        &json!({"url": "https://t.example/", "code": "two", "max_visits": 2}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let state = || {
        let r = srv.api("GET", "/api/v1/links/go.example.cn/two", Some(KEY), None);
        let v: Value = serde_json::from_str(&r.body).expect("json");
        (
            v["state"].as_str().unwrap_or("").to_owned(),
            v["expired_by"].clone(),
        )
    };
    assert_eq!(state(), ("active".to_owned(), Value::Null));
    assert_eq!(srv.request("GET", "go.example.cn", "/two").status, 302);
    assert_eq!(state().0, "active");
    assert_eq!(srv.request("GET", "go.example.cn", "/two").status, 302);
    assert_eq!(srv.request("GET", "go.example.cn", "/two").status, 410);
    assert_eq!(state(), ("expired".to_owned(), json!("visits")));
    let r = srv.api("GET", "/api/v1/links?limit=10", Some(KEY), None);
    assert!(r.body.contains(r#""state":"expired""#), "{}", r.body);
}

/// Cells a spreadsheet reads as formulas are neutralised in the CSV export.
#[test]
fn click_export_neutralises_formula_cells() {
    let dir = TempDir::new();
    let data = dir.path("data");
    let srv = node(&dir, &[]);
    let r = post(
        &srv,
        "/api/v1/links",
        &json!({"url": "https://t.example/", "code": "-2-3"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = srv.request_with(
        "GET",
        "go.example.cn",
        "/-2-3",
        &[
            ("User-Agent", crate::util::BROWSER),
            ("Referer", "https://-cmd.example/x"),
        ],
    );
    assert_eq!(r.status, 302);
    let mut csv = String::new();
    assert!(
        wait_until(PATIENCE, || {
            let o = run(&["clicks", "export", "--data-dir", s(&data)]);
            csv = crate::util::stdout(&o);
            csv.lines().count() == 2
        }),
        "the click never reached the log: {csv}"
    );
    let row = csv.lines().nth(1).expect("row");
    assert!(
        row.contains(",go.example.cn,'-2-3,desktop,'-cmd.example,"),
        "{row}"
    );
}

/// A second server started on the same addresses once shared them silently (`SO_REUSEPORT` on
/// both listeners), and the kernel split traffic between two processes serving different links.
/// Now it refuses to start, naming the address; the first server keeps all the traffic.
#[test]
fn a_second_server_on_the_same_ports_refuses_to_start() {
    let dir = TempDir::new();
    let first = node(&dir, &[]);
    let other = TempDir::new();
    for (listen, admin, taken) in [
        (first.port, 0, first.port),
        (0, first.admin_port, first.admin_port),
    ] {
        let o = crate::util::bin()
            .args([
                "serve",
                "--data-dir",
                s(&other.path("data")),
                "--domain",
                "go.example.cn",
                "--listen",
                &format!("127.0.0.1:{listen}"),
                "--admin-listen",
                &format!("127.0.0.1:{admin}"),
                "--api-key",
                KEY,
            ])
            .output()
            .expect("run");
        assert!(!o.status.success(), "a second server started");
        let err = stderr(&o);
        assert!(
            err.contains(&format!("127.0.0.1:{taken} is already in use")),
            "{err}"
        );
    }
    let r = first.api("GET", "/api/v1/links?limit=1", Some(KEY), None);
    assert_eq!(r.status, 200);
}

/// Raw clicks once grew without bound on the journal's disk. Below the reserve they stop being
/// written (counted as unlogged) while the statistics go on and survive a restart through the
/// day summaries; the metrics show the click log's size.
#[test]
fn click_logs_leave_the_disk_reserve_to_the_journal() {
    let dir = TempDir::new();
    let data = dir.path("data");
    let srv = node(&dir, &["--clicks-reserve-bytes", &u64::MAX.to_string()]);
    let r = post(
        &srv,
        "/api/v1/links",
        &json!({"url": "https://t.example/", "code": "busy"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // The click recorder checks the free space (at start, then at most once a second) and says
    // so when it stops writing raw clicks; clicks before that would still be logged.
    let noticed = || srv.logs().contains("reserve kept for the journal");
    assert!(
        wait_until(PATIENCE, noticed),
        "the recorder never noticed the reserve:\n{}",
        srv.logs()
    );
    for _ in 0..3 {
        assert_eq!(srv.request("GET", "go.example.cn", "/busy").status, 302);
    }
    let unlogged = r#"duanlian_clicks_total{outcome="unlogged"}"#;
    assert!(
        wait_until(PATIENCE, || metric(&srv, unlogged) == 3.0),
        "{} unlogged clicks, not 3",
        metric(&srv, unlogged)
    );
    let stats = |srv: &Server| {
        let r = srv.api(
            "GET",
            "/api/v1/links/go.example.cn/busy/stats",
            Some(KEY),
            None,
        );
        let v: Value = serde_json::from_str(&r.body).expect("json");
        v["visits"]["human"].as_u64().unwrap_or(0)
    };
    assert_eq!(stats(&srv), 3);
    assert!(srv
        .api("GET", "/metrics", None, None)
        .body
        .contains("duanlian_click_log_bytes "));
    let o = run(&["clicks", "export", "--data-dir", s(&data)]);
    assert_eq!(
        crate::util::stdout(&o).lines().count(),
        1,
        "only the header"
    );
    assert!(srv.terminate(), "clean shutdown");
    let srv = node(&dir, &[]);
    assert_eq!(stats(&srv), 3, "kept by the day summary");
    assert!(metric(&srv, "duanlian_click_log_bytes") > 0.0);
}
