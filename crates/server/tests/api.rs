//! The admin API contract in-process: every endpoint and error case that needs no process of
//! its own, through `Admin::handle` and a real store in a temporary data directory, so they run
//! in milliseconds. What needs the binary (API keys from the environment or a generated file,
//! restarts, compaction on disk, seeding a data directory) stays in `tests/e2e/api.rs`.
use bytes::Bytes;
use duanlian_index::Index;
use duanlian_link::{parse_url, Code, Domain, ForwardQuery, Redirect, Validity};
use duanlian_server::{respond, spawn_admin, Admin, AdminOptions, Options, Redirector};
use duanlian_snapshot::{Builder, Snapshot};
use duanlian_store::{DataDir, Store, StoreOptions};
use duanlian_write::{NewLink, ReadOnly, Writes};
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION};
use hyper::Request;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const KEY: &str = "test-key-1";

/// A directory of its own under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "duanlian-server-api-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A node as the binary builds it, without its listeners. Fields drop in order: the store
/// (which joins its threads) before the directory it writes in.
struct Node {
    admin: Admin,
    redirector: Redirector,
    _store: Option<Arc<Store>>,
    _dir: Option<TempDir>,
}

/// What `serve --data-dir D --domain go.example.cn --domain s.example.com --api-key KEY` gives.
fn options() -> AdminOptions {
    AdminOptions {
        domains: vec![domain("go.example.cn"), domain("s.example.com")],
        api_keys: vec![KEY.into()],
        ..AdminOptions::default()
    }
}

fn domain(d: &str) -> Domain {
    Domain::parse(d).expect("domain")
}

/// A data-directory node.
fn node(opts: AdminOptions) -> Node {
    let dir = TempDir::new();
    let data = DataDir::open(&dir.0.join("data")).expect("data directory");
    let store = Arc::new(Store::open(data, StoreOptions::default()).expect("store"));
    let index = store.index().clone();
    let writes: Arc<dyn Writes> = store.clone();
    Node {
        admin: Admin::new(opts, index.clone(), writes),
        redirector: Redirector::new(index).with_visit_counting(true),
        _store: Some(store),
        _dir: Some(dir),
    }
}

/// A read-only node serving a snapshot of `links` (domain, code, url), as `--snapshot` does.
fn read_only_node(links: &[(&str, &str, &str)]) -> Node {
    let mut builder = Builder::new();
    for &(d, c, url) in links {
        let link = NewLink {
            domain: domain(d),
            code: None,
            code_length: 7,
            url: parse_url(url).expect("url"),
            redirect: Redirect::Found,
            validity: Validity::ALWAYS,
            forward_query: ForwardQuery::Add,
            expired_url: None,
        }
        .into_link(Code::parse(c).expect("code"), 1_764_000_000);
        builder.push(&link).expect("push");
    }
    let bytes = builder
        .finish()
        .and_then(|t| t.to_bytes(0))
        .expect("snapshot");
    let index = Arc::new(Index::new(Arc::new(
        Snapshot::from_bytes(bytes).expect("snapshot"),
    )));
    Node {
        admin: Admin::new(
            AdminOptions {
                domains: vec![domain("go.example.cn")],
                ..options()
            },
            index.clone(),
            Arc::new(ReadOnly),
        ),
        redirector: Redirector::new(index),
        _store: None,
        _dir: None,
    }
}

/// An answer of the admin API.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Node {
    /// One request with `headers`; a body goes as JSON with its length, as a client sends it.
    async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .header(CONTENT_LENGTH, b.len());
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or("").to_owned())))
            .expect("request");
        let res = self.admin.handle(req).await;
        let (parts, body) = res.into_parts();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    /// One request with `key` as a Bearer token.
    async fn api(&self, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> Reply {
        let bearer = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| ("authorization", b))
            .into_iter()
            .collect();
        self.request(method, path, &headers, body).await
    }

    /// A listing's codes and its next cursor.
    async fn page(&self, path: &str) -> (Vec<String>, Option<String>) {
        let r = self.api("GET", path, Some(KEY), None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let page = r.json();
        let codes = page["links"]
            .as_array()
            .expect("links")
            .iter()
            .filter_map(|l| l["code"].as_str().map(str::to_owned))
            .collect();
        (codes, page["next_cursor"].as_str().map(str::to_owned))
    }

    /// A file's bytes sent as they are, with the key.
    async fn upload(&self, path: &str, bytes: &[u8]) -> Reply {
        let req = Request::post(path)
            .header("authorization", format!("Bearer {KEY}"))
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, bytes.len())
            .body(Full::new(Bytes::copy_from_slice(bytes)))
            .expect("request");
        let (parts, body) = self.admin.handle(req).await.into_parts();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.collect().await.expect("body").to_bytes(),
        }
    }

    async fn create(&self, v: Value) -> Reply {
        self.api("POST", "/api/v1/links", Some(KEY), Some(&v.to_string()))
            .await
    }

    /// What the redirect listener answers `GET path` on `host`: status and `Location`.
    fn visit(&self, host: &str, path: &str) -> (u16, Option<String>) {
        self.visit_as(host, path, None)
    }

    /// The same, from a browser: a visit that counts.
    fn visit_as_person(&self, host: &str, path: &str) -> (u16, Option<String>) {
        let browser = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15";
        self.visit_as(host, path, Some(browser))
    }

    fn visit_as(&self, host: &str, path: &str, ua: Option<&str>) -> (u16, Option<String>) {
        let mut req = Request::get(path).header(HOST, host);
        if let Some(ua) = ua {
            req = req.header(hyper::header::USER_AGENT, ua);
        }
        let req = req.body(()).expect("request");
        let res = respond(&self.redirector, &req);
        let location = res
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (res.status().as_u16(), location)
    }
}

/// A problem+json answer with the given status, naming the given fields.
fn assert_problem(r: &Reply, status: u16, fields: &[&str]) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let b = r.json();
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
    // Every field error has a stable code beside its English reason, for the page to translate.
    for f in b["invalid_fields"].as_array().into_iter().flatten() {
        let code = f["code"].as_str().unwrap_or_default();
        assert!(
            !code.is_empty() && code.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'),
            "field error without a code: {f}"
        );
    }
    b
}

/// The codes of field errors, by field.
fn codes(b: &Value) -> Vec<(String, String)> {
    b["invalid_fields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_owned();
            (s("name"), s("code"))
        })
        .collect()
}

#[tokio::test]
async fn field_errors_carry_stable_codes() {
    let n = node(options());
    let r = n
        .create(json!({
            "url": "ftp://x",
            "code": "a b",
            "max_visits": 0,
            "expires_in": "soon",
            "redirect": 303,
            "domain": "elsewhere.example",
            "colour": "red",
        }))
        .await;
    let b = assert_problem(&r, 422, &["url"]);
    let mut got = codes(&b);
    got.sort();
    let want = [
        ("code", "code_char"),
        ("colour", "unknown_field"),
        ("domain", "unknown_domain"),
        ("expires_in", "period"),
        ("max_visits", "max_visits"),
        ("redirect", "redirect_status"),
        ("url", "url_scheme"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);
    let r = n.create(json!({"expires_at": 1})).await;
    let b = assert_problem(&r, 422, &["url", "expires_at"]);
    let mut got = codes(&b);
    got.sort();
    assert_eq!(
        got,
        [
            ("expires_at".to_string(), "past".to_string()),
            ("url".to_string(), "required".to_string())
        ]
    );
}

#[tokio::test]
async fn create_generates_random_codes_and_the_link_redirects() {
    let n = node(options());
    let r = n
        .create(json!({"url": "https://shop.example.com/item/42?utm_source=sms"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let b = r.json();
    let code = b["code"].as_str().expect("code");
    assert_eq!(code.len(), 7);
    assert!(code.bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(
        b["domain"], "go.example.cn",
        "the first domain is the default"
    );
    assert_eq!(b["short_url"], format!("https://go.example.cn/{code}"));
    assert_eq!(b["redirect"], 302);
    assert!(b["created_at"].as_i64().is_some_and(|t| t > 1_700_000_000));
    assert_eq!(
        r.header("location"),
        Some(format!("/api/v1/links/go.example.cn/{code}").as_str())
    );
    assert_eq!(
        n.visit("go.example.cn", &format!("/{code}")),
        (
            302,
            Some("https://shop.example.com/item/42?utm_source=sms".into())
        )
    );
    let got = n
        .api(
            "GET",
            &format!("/api/v1/links/go.example.cn/{code}"),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(
        got.json()["url"],
        "https://shop.example.com/item/42?utm_source=sms"
    );

    // Codes are random, not sequential; lengths follow code_length.
    let mut codes = std::collections::HashSet::new();
    for len in [4, 12, 32] {
        let r = n
            .create(json!({"url": "https://a.example/", "domain": "s.example.com", "code_length": len, "redirect": 301}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        let b = r.json();
        assert_eq!(b["code"].as_str().map(str::len), Some(len));
        assert_eq!(b["redirect"], 301);
        codes.insert(b["code"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(codes.len(), 3);
}

#[tokio::test]
async fn custom_codes_are_validated_and_taken_once() {
    let n = node(options());
    let r = n
        .create(json!({"url": "https://a.example/1", "code": "spring-sale_2026"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let again = n
        .create(json!({"url": "https://a.example/2", "code": "spring-sale_2026"}))
        .await;
    assert_problem(&again, 409, &[]);
    // The same code on the other domain is a different link.
    let other = n
        .create(json!({"url": "https://a.example/3", "code": "spring-sale_2026", "domain": "S.Example.COM"}))
        .await;
    assert_eq!(other.status, 201, "{}", other.text());
    for (body, field) in [
        (
            json!({"url": "https://a.example/", "code": "bad/code"}),
            "code",
        ),
        (
            json!({"url": "https://a.example/", "code": "x".repeat(65)}),
            "code",
        ),
        (
            json!({"url": "https://a.example/", "code_length": 3}),
            "code_length",
        ),
        (
            json!({"url": "https://a.example/", "code_length": 33}),
            "code_length",
        ),
    ] {
        assert_problem(&n.create(body).await, 422, &[field]);
    }
}

#[tokio::test]
async fn bad_targets_are_refused_naming_the_field() {
    let n = node(options());
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
        let b = assert_problem(&n.create(json!({ "url": url })).await, 422, &["url"]);
        assert!(
            b["detail"].as_str().is_some_and(|d| d.contains("url")),
            "{b}"
        );
    }
    for (body, field) in [
        (json!({"url": 42}), "url"),
        (json!({"domain": "go.example.cn"}), "url"),
        (
            json!({"url": "https://a.example/", "domain": "evil.example"}),
            "domain",
        ),
        (
            json!({"url": "https://a.example/", "redirect": 303}),
            "redirect",
        ),
        (
            json!({"url": "https://a.example/", "valid_since": 4_000_000_020i64, "expires_at": 4_000_000_010i64}),
            "valid_since",
        ),
        (
            json!({"url": "https://a.example/", "forward_query": "yes"}),
            "forward_query",
        ),
    ] {
        assert_problem(&n.create(body).await, 422, &[field]);
    }
    // Several problems at once are all named.
    assert_problem(
        &n.create(json!({"url": "ftp://x", "colour": "red", "code_length": 1000}))
            .await,
        422,
        &["url", "colour", "code_length"],
    );
}

#[tokio::test]
async fn malformed_and_oversized_bodies() {
    let n = node(AdminOptions {
        max_body_bytes: 1000,
        ..options()
    });
    for bad in [
        "{\"url\":",
        "not json",
        "",
        "[1,2",
        "{\"url\": \"https://a/\"} trailing",
    ] {
        let r = n.api("POST", "/api/v1/links", Some(KEY), Some(bad)).await;
        assert_problem(&r, 400, &[]);
    }
    let r = n
        .api("POST", "/api/v1/links", Some(KEY), Some("[1,2]"))
        .await;
    assert_problem(&r, 422, &["body"]);
    let big = json!({"url": format!("https://a.example/{}", "x".repeat(2000))}).to_string();
    assert_problem(
        &n.api("POST", "/api/v1/links", Some(KEY), Some(&big)).await,
        413,
        &[],
    );
    // The node is still fine afterwards.
    assert_eq!(
        n.create(json!({"url": "https://a.example/ok"}))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn api_keys_are_required() {
    let n = node(AdminOptions {
        api_keys: vec![KEY.into(), "second-key".into()],
        ..options()
    });
    assert_problem(&n.api("GET", "/api/v1/domains", None, None).await, 401, &[]);
    for wrong in ["wrong", "test-key-", "test-key-11", ""] {
        assert_problem(
            &n.api("GET", "/api/v1/domains", Some(wrong), None).await,
            401,
            &[],
        );
    }
    assert_eq!(
        n.api("GET", "/api/v1/domains", Some("second-key"), None)
            .await
            .status,
        200
    );
    // X-Api-Key works as well as Bearer.
    let r = n
        .request("GET", "/api/v1/domains", &[("x-api-key", KEY)], None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"domains": [{"domain": "go.example.cn", "default": true}, {"domain": "s.example.com", "default": false}]})
    );
}

/// `WWW-Authenticate` is added where answers leave for the wire, so this one goes through the
/// admin listener.
#[test]
fn unauthorized_answers_on_the_admin_listener_ask_for_a_bearer_key() {
    use std::io::{Read, Write};
    // No data directory: the listener keeps the admin API for the rest of the process.
    let n = read_only_node(&[]);
    let addr = spawn_admin(
        Arc::new(n.admin),
        "127.0.0.1:0".parse().expect("address"),
        &Options::default(),
    )
    .expect("admin listener");
    let ask = |req: &str| {
        let mut c = std::net::TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .expect("timeout");
        c.write_all(req.as_bytes()).expect("write");
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out.to_ascii_lowercase()
    };
    let refused = ask("GET /api/v1/domains HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert!(refused.starts_with("http/1.1 401 "), "{refused}");
    assert!(
        refused.contains("\r\nwww-authenticate: bearer\r\n"),
        "{refused}"
    );
    let allowed = ask(&format!(
        "GET /api/v1/domains HTTP/1.1\r\nHost: a\r\nX-Api-Key: {KEY}\r\nConnection: close\r\n\r\n"
    ));
    assert!(allowed.starts_with("http/1.1 200 "), "{allowed}");
    assert!(!allowed.contains("www-authenticate"), "{allowed}");
}

#[tokio::test]
async fn read_update_delete_and_list() {
    let n = node(options());
    assert_eq!(
        n.create(json!({"url": "https://a.example/1", "code": "edit"}))
            .await
            .status,
        201
    );
    let path = "/api/v1/links/go.example.cn/edit";
    let p = n
        .api(
            "PATCH",
            path,
            Some(KEY),
            Some(&json!({"url": "https://b.example/2", "redirect": 308, "expires_at": 4_000_000_000i64, "forward_query": false}).to_string()),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.text());
    let b = p.json();
    assert_eq!(
        (
            b["url"].as_str(),
            b["redirect"].as_i64(),
            b["expires_at"].as_i64()
        ),
        (Some("https://b.example/2"), Some(308), Some(4_000_000_000))
    );
    assert_eq!(
        n.visit("go.example.cn", "/edit?utm_source=x"),
        (308, Some("https://b.example/2".into()))
    );
    // null clears a bound.
    let cleared = n
        .api("PATCH", path, Some(KEY), Some(r#"{"expires_at": null}"#))
        .await;
    assert_eq!(cleared.json()["expires_at"], Value::Null);
    assert_problem(
        &n.api("PATCH", path, Some(KEY), Some(r#"{"code": "x"}"#))
            .await,
        422,
        &["code"],
    );
    assert_problem(
        &n.api("PATCH", path, Some(KEY), Some(r#"{"url": "javascript:x"}"#))
            .await,
        422,
        &["url"],
    );
    assert_problem(
        &n.api(
            "PATCH",
            "/api/v1/links/go.example.cn/nope",
            Some(KEY),
            Some(r#"{"redirect": 301}"#),
        )
        .await,
        404,
        &[],
    );
    assert_problem(
        &n.api("GET", "/api/v1/links/go.example.cn/nope", Some(KEY), None)
            .await,
        404,
        &[],
    );

    assert_eq!(n.api("DELETE", path, Some(KEY), None).await.status, 204);
    assert_eq!(n.visit("go.example.cn", "/edit").0, 404);
    assert_problem(&n.api("DELETE", path, Some(KEY), None).await, 404, &[]);

    for i in 0..25 {
        let domain = if i % 2 == 0 {
            "go.example.cn"
        } else {
            "s.example.com"
        };
        assert_eq!(
            n.create(json!({"url": format!("https://l.example/{i}"), "domain": domain}))
                .await
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
        let page = n.api("GET", &path, Some(KEY), None).await.json();
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
    let only_s = n
        .api(
            "GET",
            "/api/v1/links?domain=s.example.com&limit=1000",
            Some(KEY),
            None,
        )
        .await
        .json();
    assert_eq!(only_s["links"].as_array().map(Vec::len), Some(12));
    for (query, field) in [
        ("limit=0", "limit"),
        ("cursor=garbage", "cursor"),
        ("colour=red", "colour"),
    ] {
        assert_problem(
            &n.api("GET", &format!("/api/v1/links?{query}"), Some(KEY), None)
                .await,
            422,
            &[field],
        );
    }
}

#[tokio::test]
async fn batches_are_all_or_nothing() {
    let n = &node(options());
    let batch = |v: Value| async move {
        n.api(
            "POST",
            "/api/v1/links/batch",
            Some(KEY),
            Some(&v.to_string()),
        )
        .await
    };
    let links: Vec<Value> = (0..300)
        .map(|i| json!({"url": format!("https://b.example/{i}")}))
        .collect();
    let r = batch(json!({ "links": links })).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["links"].as_array().map(Vec::len), Some(300));
    assert_eq!(
        n.create(json!({"url": "https://b.example/x", "code": "held"}))
            .await
            .status,
        201
    );
    let conflict = json!({"links": [{"url": "https://c.example/1", "code": "fresh1"}, {"url": "https://c.example/2", "code": "held"}]});
    assert_problem(&batch(conflict).await, 409, &[]);
    assert_eq!(
        n.visit("go.example.cn", "/fresh1").0,
        404,
        "nothing of a refused batch is created"
    );
    let invalid = json!({"links": [{"url": "https://c.example/1", "code": "fresh2"}, {"url": "ftp://x"}, {"url": "https://c.example/3", "redirect": 1}]});
    assert_problem(
        &batch(invalid).await,
        422,
        &["links[1].url", "links[2].redirect"],
    );
    assert_eq!(n.visit("go.example.cn", "/fresh2").0, 404);
    let too_many: Vec<Value> = (0..10_001)
        .map(|_| json!({"url": "https://d.example/"}))
        .collect();
    assert_problem(&batch(json!({ "links": too_many })).await, 422, &["links"]);
}

#[tokio::test]
async fn routing_errors() {
    let n = node(options());
    assert_problem(
        &n.api("GET", "/api/v1/nothing", Some(KEY), None).await,
        404,
        &[],
    );
    assert_problem(
        &n.api("PUT", "/api/v1/links", Some(KEY), Some("{}")).await,
        405,
        &[],
    );
    assert_problem(&n.api("GET", "/elsewhere", Some(KEY), None).await, 404, &[]);
}

#[tokio::test]
async fn read_only_nodes_refuse_writes_and_serve_reads() {
    let n = read_only_node(&[("go.example.cn", "bulk", "https://bulk.example/")]);
    let refused = n
        .api(
            "POST",
            "/api/v1/links",
            Some(KEY),
            Some(r#"{"url":"https://a.example/"}"#),
        )
        .await;
    let b = assert_problem(&refused, 403, &[]);
    assert!(
        b["detail"]
            .as_str()
            .is_some_and(|d| d.contains("read-only") || d.contains("data directory")),
        "{b}"
    );
    assert_problem(
        &n.api(
            "DELETE",
            "/api/v1/links/go.example.cn/bulk",
            Some(KEY),
            None,
        )
        .await,
        403,
        &[],
    );
    assert_problem(
        &n.api("POST", "/api/v1/admin/compact", Some(KEY), None)
            .await,
        403,
        &[],
    );
    let got = n
        .api("GET", "/api/v1/links/go.example.cn/bulk", Some(KEY), None)
        .await;
    assert_eq!(got.json()["url"], "https://bulk.example/");
    assert_eq!(n.visit("go.example.cn", "/bulk").0, 302);
}

#[tokio::test]
async fn qr_codes_of_short_links() {
    let n = node(options());
    assert_eq!(
        n.create(json!({"url": "https://a.example/", "code": "qr1"}))
            .await
            .status,
        201
    );
    let svg = n
        .api(
            "GET",
            "/api/v1/links/go.example.cn/qr1/qr.svg",
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(svg.status, 200);
    assert_eq!(svg.header("content-type"), Some("image/svg+xml"));
    let text = svg.text();
    assert!(text.contains("<svg") && text.contains("</svg>"), "{text}");
    let png = n
        .api(
            "GET",
            "/api/v1/links/go.example.cn/qr1/qr.png",
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(png.status, 200);
    assert_eq!(png.header("content-type"), Some("image/png"));
    assert!(png.body.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert!(png.body.windows(4).any(|w| w == b"IHDR"));
    for (path, key, status) in [
        ("/api/v1/links/go.example.cn/nope/qr.svg", Some(KEY), 404),
        ("/api/v1/links/go.example.cn/qr1/qr.svg", None, 401),
        ("/api/v1/links/go.example.cn/qr1/qr.gif", Some(KEY), 404),
    ] {
        assert_problem(&n.api("GET", path, key, None).await, status, &[]);
    }
    // Sizes for print, and a file named after the link.
    let big = n
        .api(
            "GET",
            "/api/v1/links/go.example.cn/qr1/qr.png?size=1024&download",
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(big.status, 200);
    let width = u32::from_be_bytes([big.body[16], big.body[17], big.body[18], big.body[19]]);
    assert!((1000..=1050).contains(&width), "{width}");
    assert_eq!(
        big.header("content-disposition"),
        Some("attachment; filename=\"go.example.cn-qr1.png\"")
    );
    let tiny = n
        .api(
            "GET",
            "/api/v1/links/go.example.cn/qr1/qr.svg?size=5",
            Some(KEY),
            None,
        )
        .await;
    assert_problem(&tiny, 422, &["size"]);
}

#[tokio::test]
async fn listings_search_codes_and_targets_page_by_page() {
    let n = &node(options());
    for (code, url) in [
        ("SpringSale", "https://shop.example.com/a"),
        ("other1", "https://shop.example.com/spring/b"),
        ("other2", "https://shop.example.com/c"),
        ("zSPRING", "https://shop.example.com/d"),
    ] {
        assert_eq!(
            n.create(json!({"url": url, "code": code})).await.status,
            201
        );
    }
    // Case-insensitive, in the code or the target.
    let (all, next) = n.page("/api/v1/links?q=Spring").await;
    assert_eq!(all, ["SpringSale", "other1", "zSPRING"]);
    assert_eq!(next, None);
    // A full page hands back a cursor; the rest follows from it.
    let (first, next) = n.page("/api/v1/links?q=spring&limit=2").await;
    assert_eq!(first, ["SpringSale", "other1"]);
    let next = next.expect("a cursor after a full page");
    let rest = n
        .api(
            "GET",
            &format!("/api/v1/links?q=spring&limit=2&cursor={next}"),
            Some(KEY),
            None,
        )
        .await
        .json();
    assert_eq!(rest["links"][0]["code"], "zSPRING");
    assert_eq!(rest["links"].as_array().map(Vec::len), Some(1));
    let (none, _) = n.page("/api/v1/links?q=autumn").await;
    assert!(none.is_empty());
}

/// Operators want the newest links first, the busiest ones, and to see used-up, expired and not
/// yet valid links apart; a Chinese search term finds a target stored percent-encoded.
#[tokio::test]
async fn listings_sort_by_visits_and_creation_and_filter_by_state() {
    let n = &node(options());
    let later = duanlian_link::now_secs() + 86_400;
    for body in [
        json!({"url": "https://shop.example.com/商品", "code": "a1"}),
        json!({"url": "https://shop.example.com/b", "code": "a2", "max_visits": 1}),
        json!({"url": "https://shop.example.com/c", "code": "a3"}),
        json!({"url": "https://shop.example.com/d", "code": "p1", "valid_since": later}),
    ] {
        assert_eq!(n.create(body).await.status, 201);
    }
    n.visit_as_person("go.example.cn", "/a2");
    n.visit_as_person("go.example.cn", "/a3");
    n.visit_as_person("go.example.cn", "/a3");
    let (most, _) = n.page("/api/v1/links?sort=-visits").await;
    assert_eq!(most, ["a3", "a2", "a1", "p1"]);
    let (least, _) = n.page("/api/v1/links?sort=visits").await;
    assert_eq!(least, ["a1", "p1", "a2", "a3"]);
    // Created in the same second: ties go in code order, and pages follow by offset.
    let (first, next) = n.page("/api/v1/links?sort=-created&limit=3").await;
    assert_eq!(first, ["a1", "a2", "a3"]);
    let next = next.expect("a cursor after a full page");
    let (rest, end) = n
        .page(&format!(
            "/api/v1/links?sort=-created&limit=3&cursor={next}"
        ))
        .await;
    assert_eq!((rest, end), (vec!["p1".to_owned()], None));
    for (state, want) in [
        ("expired", vec!["a2"]),
        ("pending", vec!["p1"]),
        ("active", vec!["a1", "a3"]),
    ] {
        let (got, _) = n.page(&format!("/api/v1/links?state={state}")).await;
        assert_eq!(got, want, "state={state}");
    }
    let (found, _) = n.page("/api/v1/links?q=%E5%95%86%E5%93%81").await;
    assert_eq!(found, ["a1"]);
    // A Chinese domain name, which the target keeps in punycode.
    let idn = json!({"url": "https://例子.中国/x", "code": "idn"});
    assert_eq!(n.create(idn).await.status, 201);
    let (found, _) = n.page("/api/v1/links?q=%E4%BE%8B%E5%AD%90").await;
    assert_eq!(found, ["idn"]);
    let r = n
        .api(
            "GET",
            "/api/v1/links?sort=newest&state=gone&cursor=x",
            Some(KEY),
            None,
        )
        .await;
    assert_problem(&r, 422, &["sort", "state"]);
    let r = n
        .api(
            "GET",
            "/api/v1/links?sort=visits&cursor=a/b",
            Some(KEY),
            None,
        )
        .await;
    assert_problem(&r, 422, &["cursor"]);
}

/// An Excel upload is checked row by row, then created without its bad row; all-or-nothing
/// refuses it naming the row; a second upload finds its codes taken.
#[tokio::test]
async fn uploads_answer_row_by_row() {
    let n = node(options());
    let xlsx = include_bytes!("../../input/tests/fixtures/links.xlsx");
    let base = "/api/v1/links/import?utc_offset=%2B08:00&expires_in=30d&name=links.xlsx";
    let check = n.upload(&format!("{base}&mode=check"), xlsx).await;
    assert_eq!(check.status, 200, "{}", check.text());
    let b = check.json();
    assert_eq!(
        (b["created"].as_u64(), b["invalid"].as_u64()),
        (Some(0), Some(1))
    );
    let rows = b["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["ok"], true);
    assert_eq!(rows[0]["display_url"], "https://shop.example.cn/商品/1");
    assert_eq!(
        (rows[1]["line"].as_u64(), &rows[1]["ok"]),
        (Some(3), &json!(false))
    );
    assert_eq!(rows[1]["errors"][0]["code"], "url_scheme");
    // Nothing was created.
    assert_eq!(
        n.api("GET", "/api/v1/links/go.example.cn/xlsx1", Some(KEY), None)
            .await
            .status,
        404
    );

    let all = n.upload(&format!("{base}&mode=all"), xlsx).await;
    assert_problem(&all, 422, &["rows[3].url"]);

    let valid = n.upload(&format!("{base}&mode=valid"), xlsx).await;
    assert_eq!(valid.status, 201, "{}", valid.text());
    let b = valid.json();
    assert_eq!(
        (b["created"].as_u64(), b["invalid"].as_u64()),
        (Some(2), Some(1))
    );
    let first = &b["rows"][0]["link"];
    assert_eq!(
        (first["code"].as_str(), first["max_visits"].as_u64()),
        (Some("xlsx1"), Some(5))
    );
    // The date cell, 2027-01-01 00:00 in Shanghai.
    assert_eq!(first["expires_at"].as_i64(), Some(1_798_761_600 - 8 * 3600));
    // No expiry in the sheet: the default period.
    let third = &b["rows"][2]["link"];
    assert_eq!(third["code"].as_str().map(str::len), Some(7));
    assert_eq!(n.visit("go.example.cn", "/xlsx1").0, 302);

    let again = n.upload(&format!("{base}&mode=check"), xlsx).await.json();
    assert_eq!(again["rows"][0]["errors"][0]["code"], "code_taken");

    // A GBK CSV with Chinese headers, and a file that is neither.
    let (gbk, _, _) = encoding_rs::GBK.encode("长链接,短码\nhttps://a.example/春,gbk1\n");
    let r = n.upload("/api/v1/links/import?mode=valid", &gbk).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json()["rows"][0]["link"]["display_url"],
        "https://a.example/春"
    );
    let r = n
        .upload("/api/v1/links/import?mode=check", b"colour\nred\n")
        .await;
    assert_problem(&r, 422, &["file"]);
    let r = n
        .upload("/api/v1/links/import?mode=maybe&utc_offset=8", b"")
        .await;
    assert_problem(&r, 422, &["mode", "utc_offset"]);
}
