//! Inputs a hostile user or an unlucky operator sends, through the real binary: each test
//! reproduces something that once hung, lost data or misled, and shows what happens now.
use crate::util::{run, s, stderr, Server, TempDir};
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
    let srv = node(&dir, &[]);
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
    // Writes go on (the reaper runs every quarter second; give it several rounds).
    std::thread::sleep(Duration::from_millis(800));
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
        let o = run(&[
            "snapshot",
            "build",
            "--input",
            s(&dir.file(name, csv.as_bytes())),
            "--output",
            s(&dir.path("out.snap")),
        ]);
        assert!(!o.status.success(), "{name} was accepted");
        assert!(stderr(&o).contains(want), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains("9999-12-31T23:59:59Z"), "{}", stderr(&o));
    }
}
