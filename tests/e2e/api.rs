//! The admin API through the real binary: what needs a process of its own (keys from the
//! environment and a generated key file, restarts, compaction on disk, seeding a data
//! directory) and that the command line reaches the API. The contract itself, every endpoint and
//! every error case, is tested in-process in `crates/server/tests/api.rs`.
use crate::util::{build_snapshot, s, Response, Server, TempDir};
use serde_json::{json, Value};

const KEY: &str = "test-key-1";

fn server(dir: &TempDir, extra: &[&str]) -> Server {
    Server::data_node(&dir.path("data"), KEY, extra)
}

fn body(r: &Response) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", r.body))
}

/// A problem+json answer with the given status, naming the given fields.
fn assert_problem(r: &Response, status: u16, fields: &[&str]) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let b = body(r);
    for k in ["type", "title", "status", "detail"] {
        assert!(b.get(k).is_some(), "problem without {k}: {b}");
    }
    assert_eq!(b["status"], status);
    let named: Vec<&str> = b["invalid_fields"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["name"].as_str()).collect())
        .unwrap_or_default();
    for f in fields {
        assert!(named.contains(f), "{f} not named in {b}");
    }
    b
}

fn create(srv: &Server, v: Value) -> Response {
    srv.api("POST", "/api/v1/links", Some(KEY), Some(&v.to_string()))
}

/// The flags that shape the API reach it: the domains and their order, the default code
/// length, every `--api-key`, `--max-body-bytes`; a node with only `--snapshot` takes no writes.
#[test]
fn command_line_settings_reach_the_admin_api() {
    let dir = TempDir::new();
    let srv = server(
        &dir,
        &["--max-body-bytes", "1000", "--api-key", "second-key"],
    );
    let r = create(&srv, json!({"url": "https://shop.example.com/item/42"}));
    assert_eq!(r.status, 201, "{}", r.body);
    let b = body(&r);
    let code = b["code"].as_str().expect("code");
    assert_eq!((code.len(), &b["domain"]), (7, &json!("go.example.cn")));
    let hop = srv.request("GET", "go.example.cn", &format!("/{code}"));
    assert_eq!(
        (hop.status, hop.header("location")),
        (302, Some("https://shop.example.com/item/42"))
    );
    let domains = srv.api("GET", "/api/v1/domains", Some("second-key"), None);
    assert_eq!(
        body(&domains),
        json!({"domains": [{"domain": "go.example.cn", "default": true}, {"domain": "s.example.com", "default": false}]})
    );
    let none = srv.api("GET", "/api/v1/domains", None, None);
    assert_problem(&none, 401, &[]);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    assert!(none.body.contains("no API key sent"), "{}", none.body);
    // A wrong key is told apart from none.
    let wrong = srv.api("GET", "/api/v1/domains", Some("not-a-key"), None);
    assert_problem(&wrong, 401, &[]);
    assert!(
        wrong.body.contains("not one this node accepts"),
        "{}",
        wrong.body
    );
    let big = json!({"url": format!("https://a.example/{}", "x".repeat(2000))}).to_string();
    assert_problem(
        &srv.api("POST", "/api/v1/links", Some(KEY), Some(&big)),
        413,
        &[],
    );

    let snap = build_snapshot(
        &dir,
        "domain,code,url\ngo.example.cn,bulk,https://bulk.example/\n",
    );
    let ro = Server::start(&["--snapshot", s(&snap), "--api-key", KEY]);
    assert_problem(&create(&ro, json!({"url": "https://a.example/"})), 403, &[]);
    let got = ro.api("GET", "/api/v1/links/go.example.cn/bulk", Some(KEY), None);
    assert_eq!(body(&got)["url"], "https://bulk.example/");
    assert_eq!(ro.request("GET", "go.example.cn", "/bulk").status, 302);
}

#[test]
fn keys_from_the_environment_and_a_generated_key() {
    let dir = TempDir::new();
    let data = dir.path("data");
    // No key configured: one is generated into the data directory, readable by its owner only.
    let srv = Server::start(&["--data-dir", s(&data), "--domain", "go.example.cn"]);
    let key_file = data.join("api-key");
    let key = std::fs::read_to_string(&key_file)
        .expect("generated key")
        .trim()
        .to_owned();
    assert_eq!(key.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_file)
        .expect("stat")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        srv.logs().contains("api-key"),
        "the log says where the key is"
    );
    assert_eq!(
        srv.api("GET", "/api/v1/domains", Some(&key), None).status,
        200
    );
    srv.kill9();
    // The environment variable, comma-separated.
    let mut cmd_env = Server::start_env(
        &[("DUANLIAN_API_KEYS", "k-one, k-two")],
        &["--data-dir", s(&data)],
    );
    assert_eq!(
        cmd_env
            .api("GET", "/api/v1/domains", Some("k-two"), None)
            .status,
        200
    );
    assert_eq!(
        cmd_env
            .api("GET", "/api/v1/domains", Some(&key), None)
            .status,
        401
    );
    cmd_env.stop();
}

/// Query forwarding adds the request's parameters but never lets them replace the target's own
/// (a target's `next=` must not become an open redirect under our short link); the old merge,
/// request winning, is the explicit `"override"`, kept through the journal and compaction.
#[test]
fn forward_query_adds_the_request_query_and_the_target_wins_unless_override() {
    let dir = TempDir::new();
    let srv = server(&dir, &[]);
    create(
        &srv,
        json!({"url": "https://t.example/p?lang=zh&utm_source=web#top", "code": "fq"}),
    );
    create(
        &srv,
        json!({"url": "https://t.example/p?lang=zh", "code": "nofq", "forward_query": false}),
    );
    create(
        &srv,
        json!({"url": "https://t.example/login?next=/home", "code": "login"}),
    );
    let r = create(
        &srv,
        json!({"url": "https://t.example/p?lang=zh&utm_source=web", "code": "ovr", "forward_query": "override"}),
    );
    assert_eq!(body(&r)["forward_query"], "override");
    let r = srv.api(
        "POST",
        "/api/v1/links",
        Some(KEY),
        Some(&json!({"url": "https://t.example/", "forward_query": "merge"}).to_string()),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("forward_query"), "{}", r.body);
    let location = |srv: &Server, path: &str| {
        srv.request("GET", "go.example.cn", path)
            .header("location")
            .map(str::to_owned)
    };
    let check = |srv: &Server| {
        assert_eq!(
            location(srv, "/fq?utm_source=sms&id=7").as_deref(),
            Some("https://t.example/p?lang=zh&utm_source=web&id=7#top")
        );
        assert_eq!(
            location(srv, "/fq").as_deref(),
            Some("https://t.example/p?lang=zh&utm_source=web#top")
        );
        assert_eq!(
            location(srv, "/login?next=https://evil.example/").as_deref(),
            Some("https://t.example/login?next=/home")
        );
        assert_eq!(
            location(srv, "/nofq?utm_source=sms").as_deref(),
            Some("https://t.example/p?lang=zh")
        );
        assert_eq!(
            location(srv, "/ovr?utm_source=sms&id=7").as_deref(),
            Some("https://t.example/p?lang=zh&utm_source=sms&id=7")
        );
    };
    check(&srv);
    // Replayed from the journal, then folded into a snapshot.
    srv.kill9();
    let srv = server(&dir, &[]);
    check(&srv);
    assert_eq!(
        srv.api("POST", "/api/v1/admin/compact", Some(KEY), None)
            .status,
        200
    );
    srv.kill9();
    let srv = server(&dir, &[]);
    check(&srv);
    let r = srv.api(
        "PATCH",
        "/api/v1/links/go.example.cn/ovr",
        Some(KEY),
        Some(r#"{"forward_query":true}"#),
    );
    assert_eq!(body(&r)["forward_query"], true, "{}", r.body);
    assert_eq!(
        location(&srv, "/ovr?utm_source=sms").as_deref(),
        Some("https://t.example/p?lang=zh&utm_source=web")
    );
}

#[test]
fn links_survive_restart_and_compaction() {
    let dir = TempDir::new();
    let srv = server(&dir, &[]);
    for i in 0..20 {
        assert_eq!(
            create(
                &srv,
                json!({"url": format!("https://r.example/{i}"), "code": format!("r{i}")})
            )
            .status,
            201
        );
    }
    srv.api("DELETE", "/api/v1/links/go.example.cn/r3", Some(KEY), None);
    let c = srv.api("POST", "/api/v1/admin/compact", Some(KEY), None);
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(body(&c)["links"], 19);
    create(
        &srv,
        json!({"url": "https://r.example/after", "code": "after"}),
    );
    srv.kill9();
    let srv = server(&dir, &[]);
    assert_eq!(
        srv.request("GET", "go.example.cn", "/r7")
            .header("location"),
        Some("https://r.example/7")
    );
    assert_eq!(
        srv.request("GET", "go.example.cn", "/after")
            .header("location"),
        Some("https://r.example/after")
    );
    assert_eq!(srv.request("GET", "go.example.cn", "/r3").status, 404);
    srv.kill9();
    // Offline compaction, then a start from the compacted directory.
    let o = crate::util::run(&["compact", "--data-dir", s(&dir.path("data"))]);
    assert!(o.status.success(), "{}", crate::util::stderr(&o));
    assert!(
        crate::util::stdout(&o).contains("20 links"),
        "{}",
        crate::util::stdout(&o)
    );
    let srv = server(&dir, &[]);
    assert_eq!(srv.request("GET", "go.example.cn", "/after").status, 302);
}

#[test]
fn a_bulk_snapshot_seeds_an_empty_data_directory() {
    let dir = TempDir::new();
    let snap = build_snapshot(
        &dir,
        "domain,code,url\ngo.example.cn,bulk1,https://bulk.example/1\n",
    );
    let data = dir.path("data");
    let srv = Server::start(&[
        "--data-dir",
        s(&data),
        "--snapshot",
        s(&snap),
        "--api-key",
        KEY,
    ]);
    assert_eq!(srv.request("GET", "go.example.cn", "/bulk1").status, 302);
    assert_eq!(
        create(
            &srv,
            json!({"url": "https://new.example/", "code": "fresh"})
        )
        .status,
        201
    );
    srv.kill9();
    // The seed is only for an empty directory: a later start keeps what was written since.
    let other = build_snapshot(
        &dir,
        "domain,code,url\ngo.example.cn,other,https://other.example/\n",
    );
    let srv = Server::start(&[
        "--data-dir",
        s(&data),
        "--snapshot",
        s(&other),
        "--api-key",
        KEY,
    ]);
    assert_eq!(srv.request("GET", "go.example.cn", "/bulk1").status, 302);
    assert_eq!(srv.request("GET", "go.example.cn", "/fresh").status, 302);
    assert_eq!(srv.request("GET", "go.example.cn", "/other").status, 404);
}

/// A target on an internationalised domain name is stored and sent in punycode, with its path
/// percent-encoded, and read back in its own script as `display_url`.
#[test]
fn an_idn_target_redirects_in_punycode_and_reads_back_in_chinese() {
    let dir = TempDir::new();
    let srv = server(&dir, &["--domain", "go.example.cn"]);
    let r = create(
        &srv,
        json!({"url": "https://例子.中国/路径?颜色=红", "code": "idn1"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let link = body(&r);
    let stored = "https://xn--fsqu00a.xn--fiqs8s/%E8%B7%AF%E5%BE%84?%E9%A2%9C%E8%89%B2=%E7%BA%A2";
    assert_eq!(link["url"], stored);
    assert_eq!(link["display_url"], "https://例子.中国/路径?颜色=红");
    let got = srv.request("GET", "go.example.cn", "/idn1");
    assert_eq!((got.status, got.header("location")), (302, Some(stored)));
    let r = create(
        &srv,
        json!({"url": "https://xn--例子.中国/", "code": "idn2"}),
    );
    assert_problem(&r, 422, &["url"]);
}
