//! The admin API contract, through the real binary: every endpoint and every error case.
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

#[test]
fn create_generates_random_codes_and_the_link_redirects() {
    let dir = TempDir::new();
    let srv = server(&dir, &[]);
    let r = create(
        &srv,
        json!({"url": "https://shop.example.com/item/42?utm_source=sms"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let b = body(&r);
    let code = b["code"].as_str().expect("code");
    assert_eq!(code.len(), 7);
    assert!(code.bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(
        b["domain"], "go.example.cn",
        "the first --domain is the default"
    );
    assert_eq!(b["short_url"], format!("https://go.example.cn/{code}"));
    assert_eq!(b["redirect"], 302);
    assert!(b["created_at"].as_i64().is_some_and(|t| t > 1_700_000_000));
    assert_eq!(
        r.header("location"),
        Some(format!("/api/v1/links/go.example.cn/{code}").as_str())
    );
    let hop = srv.request("GET", "go.example.cn", &format!("/{code}"));
    assert_eq!(hop.status, 302);
    assert_eq!(
        hop.header("location"),
        Some("https://shop.example.com/item/42?utm_source=sms")
    );
    let got = srv.api(
        "GET",
        &format!("/api/v1/links/go.example.cn/{code}"),
        Some(KEY),
        None,
    );
    assert_eq!(
        body(&got)["url"],
        "https://shop.example.com/item/42?utm_source=sms"
    );

    // Codes are random, not sequential; lengths follow code_length.
    let mut codes = std::collections::HashSet::new();
    for len in [4, 12, 32] {
        let r = create(
            &srv,
            json!({"url": "https://a.example/", "domain": "s.example.com", "code_length": len, "redirect": 301}),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let b = body(&r);
        assert_eq!(b["code"].as_str().map(str::len), Some(len));
        assert_eq!(b["redirect"], 301);
        codes.insert(b["code"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(codes.len(), 3);
}

#[test]
fn custom_codes_are_validated_and_taken_once() {
    let dir = TempDir::new();
    let srv = server(&dir, &[]);
    let r = create(
        &srv,
        json!({"url": "https://a.example/1", "code": "spring-sale_2026"}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let again = create(
        &srv,
        json!({"url": "https://a.example/2", "code": "spring-sale_2026"}),
    );
    assert_problem(&again, 409, &[]);
    // The same code on the other domain is a different link.
    let other = create(
        &srv,
        json!({"url": "https://a.example/3", "code": "spring-sale_2026", "domain": "S.Example.COM"}),
    );
    assert_eq!(other.status, 201, "{}", other.body);
    assert_problem(
        &create(
            &srv,
            json!({"url": "https://a.example/", "code": "bad/code"}),
        ),
        422,
        &["code"],
    );
    assert_problem(
        &create(
            &srv,
            json!({"url": "https://a.example/", "code": "x".repeat(65)}),
        ),
        422,
        &["code"],
    );
    assert_problem(
        &create(&srv, json!({"url": "https://a.example/", "code_length": 3})),
        422,
        &["code_length"],
    );
    assert_problem(
        &create(
            &srv,
            json!({"url": "https://a.example/", "code_length": 33}),
        ),
        422,
        &["code_length"],
    );
}

#[test]
fn bad_targets_are_refused_naming_the_field() {
    let dir = TempDir::new();
    let srv = server(&dir, &[]);
    let long = format!("https://a.example/{}", "x".repeat(4096));
    for url in [
        "javascript:alert(1)",
        "data:text/html,<b>hi</b>",
        "file:///etc/passwd",
        "https://a.example/\r\nSet-Cookie: x=1",
        "https://a.example/\u{0}",
        "/relative/path",
        "a.example/no-scheme",
        long.as_str(),
        "https://go.example.cn/loop",
        "https://S.EXAMPLE.COM:443/loop",
        "",
    ] {
        let b = assert_problem(&create(&srv, json!({ "url": url })), 422, &["url"]);
        assert!(
            b["detail"].as_str().is_some_and(|d| d.contains("url")),
            "{b}"
        );
    }
    assert_problem(&create(&srv, json!({"url": 42})), 422, &["url"]);
    assert_problem(
        &create(&srv, json!({"domain": "go.example.cn"})),
        422,
        &["url"],
    );
    assert_problem(
        &create(
            &srv,
            json!({"url": "https://a.example/", "domain": "evil.example"}),
        ),
        422,
        &["domain"],
    );
    assert_problem(
        &create(&srv, json!({"url": "https://a.example/", "redirect": 303})),
        422,
        &["redirect"],
    );
    assert_problem(
        &create(
            &srv,
            json!({"url": "https://a.example/", "valid_since": 4_000_000_020i64, "expires_at": 4_000_000_010i64}),
        ),
        422,
        &["valid_since"],
    );
    assert_problem(
        &create(
            &srv,
            json!({"url": "https://a.example/", "forward_query": "yes"}),
        ),
        422,
        &["forward_query"],
    );
    // Several problems at once are all named.
    assert_problem(
        &create(
            &srv,
            json!({"url": "ftp://x", "colour": "red", "code_length": 1000}),
        ),
        422,
        &["url", "colour", "code_length"],
    );
}

#[test]
fn malformed_and_oversized_bodies() {
    let dir = TempDir::new();
    let srv = server(&dir, &["--max-body-bytes", "1000"]);
    for bad in [
        "{\"url\":",
        "not json",
        "",
        "[1,2",
        "{\"url\": \"https://a/\"} trailing",
    ] {
        let r = srv.api("POST", "/api/v1/links", Some(KEY), Some(bad));
        assert_problem(&r, 400, &[]);
    }
    let r = srv.api("POST", "/api/v1/links", Some(KEY), Some("[1,2]"));
    assert_problem(&r, 422, &["body"]);
    let big = json!({"url": format!("https://a.example/{}", "x".repeat(2000))}).to_string();
    assert_problem(
        &srv.api("POST", "/api/v1/links", Some(KEY), Some(&big)),
        413,
        &[],
    );
    // The server is still fine afterwards.
    assert_eq!(
        create(&srv, json!({"url": "https://a.example/ok"})).status,
        201
    );
}

#[test]
fn api_keys_are_required() {
    let dir = TempDir::new();
    let srv = server(&dir, &["--api-key", "second-key"]);
    let none = srv.api("GET", "/api/v1/domains", None, None);
    assert_problem(&none, 401, &[]);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    assert_problem(
        &srv.api("GET", "/api/v1/domains", Some("wrong"), None),
        401,
        &[],
    );
    assert_problem(
        &srv.api("GET", "/api/v1/domains", Some("test-key-"), None),
        401,
        &[],
    );
    assert_eq!(
        srv.api("GET", "/api/v1/domains", Some("second-key"), None)
            .status,
        200
    );
    // X-Api-Key works as well as Bearer.
    let raw = srv_raw_admin(&srv, "GET /api/v1/domains HTTP/1.1\r\nHost: a\r\nX-Api-Key: test-key-1\r\nConnection: close\r\n\r\n");
    assert_eq!(raw.status, 200);
    let domains = body(&srv.api("GET", "/api/v1/domains", Some(KEY), None));
    assert_eq!(
        domains,
        json!({"domains": [{"domain": "go.example.cn", "default": true}, {"domain": "s.example.com", "default": false}]})
    );
}

fn srv_raw_admin(srv: &Server, req: &str) -> Response {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", srv.admin_port)).expect("connect");
    c.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    Response::parse(&out)
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

#[test]
fn read_update_delete_and_list() {
    let dir = TempDir::new();
    let srv = server(&dir, &[]);
    assert_eq!(
        create(&srv, json!({"url": "https://a.example/1", "code": "edit"})).status,
        201
    );
    let p = srv.api(
        "PATCH",
        "/api/v1/links/go.example.cn/edit",
        Some(KEY),
        Some(&json!({"url": "https://b.example/2", "redirect": 308, "expires_at": 4_000_000_000i64, "forward_query": false}).to_string()),
    );
    assert_eq!(p.status, 200, "{}", p.body);
    let b = body(&p);
    assert_eq!(
        (
            b["url"].as_str(),
            b["redirect"].as_i64(),
            b["expires_at"].as_i64()
        ),
        (Some("https://b.example/2"), Some(308), Some(4_000_000_000))
    );
    let hop = srv.request("GET", "go.example.cn", "/edit?utm_source=x");
    assert_eq!(
        (hop.status, hop.header("location")),
        (308, Some("https://b.example/2"))
    );
    // null clears a bound.
    let cleared = srv.api(
        "PATCH",
        "/api/v1/links/go.example.cn/edit",
        Some(KEY),
        Some(r#"{"expires_at": null}"#),
    );
    assert_eq!(body(&cleared)["expires_at"], Value::Null);
    assert_problem(
        &srv.api(
            "PATCH",
            "/api/v1/links/go.example.cn/edit",
            Some(KEY),
            Some(r#"{"code": "x"}"#),
        ),
        422,
        &["code"],
    );
    assert_problem(
        &srv.api(
            "PATCH",
            "/api/v1/links/go.example.cn/edit",
            Some(KEY),
            Some(r#"{"url": "javascript:x"}"#),
        ),
        422,
        &["url"],
    );
    assert_problem(
        &srv.api(
            "PATCH",
            "/api/v1/links/go.example.cn/nope",
            Some(KEY),
            Some(r#"{"redirect": 301}"#),
        ),
        404,
        &[],
    );
    assert_problem(
        &srv.api("GET", "/api/v1/links/go.example.cn/nope", Some(KEY), None),
        404,
        &[],
    );

    assert_eq!(
        srv.api(
            "DELETE",
            "/api/v1/links/go.example.cn/edit",
            Some(KEY),
            None
        )
        .status,
        204
    );
    assert_eq!(srv.request("GET", "go.example.cn", "/edit").status, 404);
    assert_problem(
        &srv.api(
            "DELETE",
            "/api/v1/links/go.example.cn/edit",
            Some(KEY),
            None,
        ),
        404,
        &[],
    );

    for i in 0..25 {
        let domain = if i % 2 == 0 {
            "go.example.cn"
        } else {
            "s.example.com"
        };
        assert_eq!(
            create(
                &srv,
                json!({"url": format!("https://l.example/{i}"), "domain": domain})
            )
            .status,
            201
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/links?limit=10&cursor={c}"),
            None => "/api/v1/links?limit=10".to_owned(),
        };
        let page = body(&srv.api("GET", &path, Some(KEY), None));
        for l in page["links"].as_array().expect("links") {
            seen.push(format!(
                "{}/{}",
                l["domain"].as_str().unwrap_or(""),
                l["code"].as_str().unwrap_or("")
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| {
        let (ad, ac) = a.split_once('/').unwrap_or_default();
        let (bd, bc) = b.split_once('/').unwrap_or_default();
        (ad, ac).cmp(&(bd, bc))
    });
    assert_eq!(seen, sorted, "pages come in a stable (domain, code) order");
    let only_s = body(&srv.api(
        "GET",
        "/api/v1/links?domain=s.example.com&limit=1000",
        Some(KEY),
        None,
    ));
    assert_eq!(only_s["links"].as_array().map(Vec::len), Some(12));
    assert_problem(
        &srv.api("GET", "/api/v1/links?limit=0", Some(KEY), None),
        422,
        &["limit"],
    );
    assert_problem(
        &srv.api("GET", "/api/v1/links?cursor=garbage", Some(KEY), None),
        422,
        &["cursor"],
    );
    assert_problem(
        &srv.api("GET", "/api/v1/links?colour=red", Some(KEY), None),
        422,
        &["colour"],
    );
}

#[test]
fn batches_are_all_or_nothing() {
    let dir = TempDir::new();
    let srv = server(&dir, &[]);
    let links: Vec<Value> = (0..300)
        .map(|i| json!({"url": format!("https://b.example/{i}")}))
        .collect();
    let r = srv.api(
        "POST",
        "/api/v1/links/batch",
        Some(KEY),
        Some(&json!({ "links": links }).to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let created = body(&r)["links"].as_array().map(Vec::len);
    assert_eq!(created, Some(300));
    assert_eq!(
        create(&srv, json!({"url": "https://b.example/x", "code": "held"})).status,
        201
    );
    let conflict = json!({"links": [{"url": "https://c.example/1", "code": "fresh1"}, {"url": "https://c.example/2", "code": "held"}]});
    assert_problem(
        &srv.api(
            "POST",
            "/api/v1/links/batch",
            Some(KEY),
            Some(&conflict.to_string()),
        ),
        409,
        &[],
    );
    assert_eq!(
        srv.request("GET", "go.example.cn", "/fresh1").status,
        404,
        "nothing of a refused batch is created"
    );
    let invalid = json!({"links": [{"url": "https://c.example/1", "code": "fresh2"}, {"url": "ftp://x"}, {"url": "https://c.example/3", "redirect": 1}]});
    assert_problem(
        &srv.api(
            "POST",
            "/api/v1/links/batch",
            Some(KEY),
            Some(&invalid.to_string()),
        ),
        422,
        &["links[1].url", "links[2].redirect"],
    );
    assert_eq!(srv.request("GET", "go.example.cn", "/fresh2").status, 404);
    let too_many: Vec<Value> = (0..10_001)
        .map(|_| json!({"url": "https://d.example/"}))
        .collect();
    let big = json!({ "links": too_many }).to_string();
    assert_problem(
        &srv.api("POST", "/api/v1/links/batch", Some(KEY), Some(&big)),
        422,
        &["links"],
    );
}

#[test]
fn routing_errors_and_read_only_nodes() {
    let dir = TempDir::new();
    let srv = server(&dir, &[]);
    assert_problem(
        &srv.api("GET", "/api/v1/nothing", Some(KEY), None),
        404,
        &[],
    );
    assert_problem(
        &srv.api("PUT", "/api/v1/links", Some(KEY), Some("{}")),
        405,
        &[],
    );
    assert_problem(&srv.api("GET", "/elsewhere", Some(KEY), None), 404, &[]);
    let snap = build_snapshot(
        &dir,
        "domain,code,url\ngo.example.cn,bulk,https://bulk.example/\n",
    );
    let ro = Server::start(&["--snapshot", s(&snap), "--api-key", KEY]);
    let refused = ro.api(
        "POST",
        "/api/v1/links",
        Some(KEY),
        Some(r#"{"url":"https://a.example/"}"#),
    );
    let b = assert_problem(&refused, 403, &[]);
    assert!(
        b["detail"]
            .as_str()
            .is_some_and(|d| d.contains("read-only") || d.contains("data directory")),
        "{b}"
    );
    assert_problem(
        &ro.api(
            "DELETE",
            "/api/v1/links/go.example.cn/bulk",
            Some(KEY),
            None,
        ),
        403,
        &[],
    );
    assert_problem(
        &ro.api("POST", "/api/v1/admin/compact", Some(KEY), None),
        403,
        &[],
    );
    let got = ro.api("GET", "/api/v1/links/go.example.cn/bulk", Some(KEY), None);
    assert_eq!(body(&got)["url"], "https://bulk.example/");
    assert_eq!(ro.request("GET", "go.example.cn", "/bulk").status, 302);
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

#[test]
fn qr_codes_of_short_links() {
    let dir = TempDir::new();
    let srv = server(&dir, &[]);
    assert_eq!(
        create(&srv, json!({"url": "https://a.example/", "code": "qr1"})).status,
        201
    );
    let svg = srv.api(
        "GET",
        "/api/v1/links/go.example.cn/qr1/qr.svg",
        Some(KEY),
        None,
    );
    assert_eq!(svg.status, 200);
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    assert!(
        svg.body.contains("<svg") && svg.body.contains("</svg>"),
        "{}",
        svg.body
    );
    let png = srv.api(
        "GET",
        "/api/v1/links/go.example.cn/qr1/qr.png",
        Some(KEY),
        None,
    );
    assert_eq!(png.status, 200);
    assert_eq!(png.header("content-type"), Some("image/png"));
    assert!(png.body.contains("PNG") && png.body.contains("IHDR"));
    assert_problem(
        &srv.api(
            "GET",
            "/api/v1/links/go.example.cn/nope/qr.svg",
            Some(KEY),
            None,
        ),
        404,
        &[],
    );
    assert_problem(
        &srv.api("GET", "/api/v1/links/go.example.cn/qr1/qr.svg", None, None),
        401,
        &[],
    );
    assert_problem(
        &srv.api(
            "GET",
            "/api/v1/links/go.example.cn/qr1/qr.gif",
            Some(KEY),
            None,
        ),
        404,
        &[],
    );
}

#[test]
fn listings_search_codes_and_targets_page_by_page() {
    let dir = TempDir::new();
    let srv = server(&dir, &[]);
    for (code, url) in [
        ("SpringSale", "https://shop.example.com/a"),
        ("other1", "https://shop.example.com/spring/b"),
        ("other2", "https://shop.example.com/c"),
        ("zSPRING", "https://shop.example.com/d"),
    ] {
        assert_eq!(create(&srv, json!({"url": url, "code": code})).status, 201);
    }
    let codes = |path: &str| -> (Vec<String>, Option<String>) {
        let page = body(&srv.api("GET", path, Some(KEY), None));
        let codes = page["links"]
            .as_array()
            .expect("links")
            .iter()
            .filter_map(|l| l["code"].as_str().map(str::to_owned))
            .collect();
        (codes, page["next_cursor"].as_str().map(str::to_owned))
    };
    // Case-insensitive, in the code or the target.
    let (all, next) = codes("/api/v1/links?q=Spring");
    assert_eq!(all, ["SpringSale", "other1", "zSPRING"]);
    assert_eq!(next, None);
    // A full page hands back a cursor; the rest follows from it.
    let (first, next) = codes("/api/v1/links?q=spring&limit=2");
    assert_eq!(first, ["SpringSale", "other1"]);
    let next = next.expect("a cursor after a full page");
    let (rest, _) = codes(&format!("/api/v1/links?q=spring&limit=2&cursor={next}"));
    assert_eq!(rest, ["zSPRING"]);
    let (none, _) = codes("/api/v1/links?q=autumn");
    assert!(none.is_empty());
}
