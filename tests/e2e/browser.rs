//! The operator page in headless Chromium, driven over WebDriver (chromedriver's HTTP API,
//! spoken here with a few lines of std networking rather than a client crate).
//!
//! Needs Debian's `chromium` and `chromium-driver`, so the test is `#[ignore]`d (listed as
//! ignored, with the reason, by `cargo test`); `.ci/run` installs them and runs it with
//! `--ignored`. Run without them, it fails saying what is missing. `DUANLIAN_SCREENSHOTS=DIR`
//! keeps the screenshots (the README's come from there).
use crate::util::http::{Conn, Request};
use crate::util::{free_port, Server, TempDir, BROWSER};
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Driver {
    port: u16,
    session: String,
    child: Child,
}

/// One HTTP/1.1 exchange with chromedriver; the JSON body of the answer. chromedriver keeps
/// the connection open whatever we ask, so the answer is read by its Content-Length.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = Request::new(method, path)
        .header("Host", "127.0.0.1")
        .close()
        .json(&body);
    let r = Conn::open_with(port, Some(Duration::from_secs(60)))
        .and_then(|mut c| c.send(&req))
        .unwrap_or_else(|e| panic!("chromedriver {method} {path}: {e}"));
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or(Value::Null),
    )
}

impl Driver {
    fn start(profile: &Path, accept_language: &str) -> Driver {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let started = Instant::now();
        while http_ready(port).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1100,1400",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {"intl.accept_languages": accept_language},
            }
        }}});
        let (status, v) = http(port, "POST", "/session", Some(&caps));
        assert_eq!(status, 200, "new session: {v}");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_owned();
        Driver {
            port,
            session,
            child,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = http(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        );
        assert_eq!(status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments` as usual) in the page.
    fn js(&self, script: &str, args: Value) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Waits until `script` returns something truthy, and returns it.
    fn wait(&self, what: &str, script: &str) -> Value {
        let started = Instant::now();
        loop {
            let v = self.js(script, json!([]));
            if !matches!(v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0) {
                return v;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn element(&self, css: &str) -> String {
        self.wait(
            css,
            &format!(
                "const e = document.querySelector({}); \
                 return !!e && (e.offsetParent !== null || (e.tagName === 'OPTION' && e.parentElement.offsetParent !== null));",
                json!(css)
            ),
        );
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .expect("element id")
            .to_owned()
    }

    fn click(&self, css: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    fn type_in(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.call("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent.trim() : '';",
            json!([css]),
        )
        .as_str()
        .unwrap_or("")
        .to_owned()
    }

    fn screenshot(&self, name: &str) {
        let png = decode_base64(self.call("GET", "/screenshot", None).as_str().unwrap_or(""));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG screenshot");
        let dir = std::env::var("DUANLIAN_SCREENSHOTS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        std::fs::write(dir.join(name), png).expect("write screenshot");
    }
}

fn http_ready(port: u16) -> Option<()> {
    TcpStream::connect(("127.0.0.1", port)).ok()?;
    let (status, v) = http(port, "GET", "/status", None);
    (status == 200 && v["value"]["ready"] == json!(true)).then_some(())
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = http(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for v in s.bytes().filter_map(value) {
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
#[ignore = "needs chromium and chromium-driver (apt-get install chromium chromium-driver); run with --ignored"]
fn the_page_creates_lists_and_explains_links() {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    assert!(
        present,
        "{CHROMIUM} and {CHROMEDRIVER} are required (apt-get install chromium chromium-driver)"
    );
    let dir = TempDir::new();
    let srv = Server::data_node(&dir.path("data"), "page-key", &[]);
    let page = format!("http://127.0.0.1:{}/", srv.admin_port);
    let b = Driver::start(&dir.path("profile"), "zh-CN,zh");

    // Chinese first (Accept-Language), English on request.
    b.go(&page);
    assert_eq!(b.text("h1 [data-i18n=title]"), "短链接");
    b.click("#lang-switch");
    assert_eq!(b.text("h1 [data-i18n=title]"), "Short links");

    // The key once; a wrong one is refused on the spot.
    b.type_in("#api-key", "wrong");
    b.click("#login-form button[type=submit]");
    b.wait(
        "the bad-key message",
        "return document.querySelector('[data-error-for=api_key]').textContent;",
    );
    b.type_in("#api-key", "page-key");
    b.click("#login-form button[type=submit]");
    b.element("#create-form");

    // A 7-day link on the non-default domain.
    b.type_in("#url", "https://shop.example.com/item/7?from=page");
    b.click("#domain option[value='s.example.com']");
    b.click("#validity option[value='7d']");
    b.click("#create-form button[type=submit]");
    let short = b
        .wait(
            "the short link",
            "return document.querySelector('#short-url').textContent;",
        )
        .as_str()
        .unwrap_or("")
        .to_owned();
    let code = short
        .strip_prefix("https://s.example.com/")
        .unwrap_or_else(|| panic!("short link on the chosen domain: {short}"))
        .to_owned();
    b.wait(
        "the QR code",
        "const q = document.querySelector('#qr'); return q.complete && q.naturalWidth > 0 && q.src.startsWith('blob:');",
    );
    b.screenshot("page-create.png");

    // The short link works over HTTP, and the visit is counted.
    let r = srv.request_with(
        "GET",
        "s.example.com",
        &format!("/{code}"),
        &[("User-Agent", BROWSER)],
    );
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("https://shop.example.com/item/7?from=page")
    );

    // The list on that domain shows it with its visit and an expiry about 7 days away.
    b.click("#tabs [data-tab=links]");
    b.click("#list-domain option[value='s.example.com']");
    let row = format!("#links-table tr[data-code='{code}']");
    b.element(&row);
    assert_eq!(b.text(&format!("{row} td.visits")), "1");
    let expires: i64 = b
        .js(
            "return document.querySelector(arguments[0]).dataset.expiresAt;",
            json!([row]),
        )
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("expires_at on the row");
    let in_days = (expires - duanlian_link::now_secs()) as f64 / 86_400.0;
    assert!(
        (6.99..=7.01).contains(&in_days),
        "expires in {in_days} days"
    );
    // Its statistics: the visit, per day.
    b.click(&row);
    b.wait(
        "the visit in the statistics",
        "return document.querySelector('#detail-visits').textContent === '1';",
    );
    b.wait(
        "the chart",
        "return document.querySelectorAll('#chart rect.human').length === 1;",
    );
    b.screenshot("page-links.png");

    // An API error shows next to the field it is about.
    b.click("#tabs [data-tab=create]");
    b.type_in("#url", "shop.example.com/no-scheme");
    b.click("#create-form button[type=submit]");
    let error = b.wait(
        "the URL error",
        "return document.querySelector('#create-form [data-error-for=url]').textContent;",
    );
    assert!(
        error.as_str().is_some_and(|e| e.contains("absolute")),
        "{error}"
    );
    assert!(b
        .js(
            "return document.querySelector('#url').classList.contains('invalid');",
            json!([])
        )
        .as_bool()
        .unwrap_or(false));
    b.screenshot("page-error.png");
}

#[test]
fn the_page_is_served_whole_from_the_binary() {
    let dir = TempDir::new();
    let srv = Server::data_node(&dir.path("data"), "k", &[]);
    let get = |path: &str, lang: &str| {
        Request::get(path)
            .header("Host", "admin")
            .header("Accept-Language", lang)
            .send(srv.admin_port)
            .expect("admin page")
    };
    let zh = get("/", "zh-CN,zh;q=0.9,en;q=0.8");
    assert_eq!(zh.status, 200);
    assert!(zh.body.contains(r#"<html lang="zh">"#), "{}", zh.body);
    let en = get("/", "en-US,en");
    assert!(en.body.contains(r#"<html lang="en">"#));
    let csp = en.header("content-security-policy").unwrap_or("");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    // Nothing the page loads comes from elsewhere.
    for (path, kind) in [("/app.js", "text/javascript"), ("/app.css", "text/css")] {
        let r = get(path, "en");
        assert_eq!(r.status, 200, "{path}");
        assert!(r
            .header("content-type")
            .is_some_and(|t| t.starts_with(kind)));
        // (The SVG namespace is a name, not a request.)
        let body = r.body.replace("http://www.w3.org/2000/svg", "");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} refers elsewhere"
        );
    }
    // The API behind it still wants a key.
    assert_eq!(get("/api/v1/domains", "en").status, 401);
}
