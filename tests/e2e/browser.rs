//! The operator page in headless Chromium, driven over WebDriver (chromedriver's HTTP API,
//! spoken here with a few lines of std networking rather than a client crate).
//!
//! Needs Debian's `chromium` and `chromium-driver`, so the test is `#[ignore]`d (listed as
//! ignored, with the reason, by `cargo test`); `.ci/run` installs them and runs it with
//! `--ignored`. Run without them, it fails saying what is missing. `DUANLIAN_SCREENSHOTS=DIR`
//! keeps the screenshots (the README's come from there; they need a Chinese font installed, such
//! as Debian's `fonts-wqy-microhei`, or the Chinese shows as boxes).
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
    fn start(profile: &Path, accept_language: &str, downloads: &Path) -> Driver {
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
                "prefs": {
                    "intl.accept_languages": accept_language,
                    "download.default_directory": downloads.display().to_string(),
                    "download.prompt_for_download": false,
                },
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

fn link(srv: &Server, domain: &str, code: &str) -> Value {
    srv.link(KEY, domain, code)
}

const KEY: &str = "page-key";
/// 2026-01-01 and 2027-01-01, 00:00 UTC.
const Y2026: i64 = 1_767_225_600;
const Y2027: i64 = 1_798_761_600;
const SHANGHAI: i64 = 8 * 3600;

/// Waits for a downloaded file and returns its bytes.
fn downloaded(dir: &Path, name: &str) -> Vec<u8> {
    let path = dir.join(name);
    let started = Instant::now();
    loop {
        // Chromium writes NAME.crdownload first and renames it when done.
        if let Ok(bytes) = std::fs::read(&path) {
            if !bytes.is_empty() {
                return bytes;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no download {name} in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An operator's day in Chinese: create a link with every field, find it in the list by state
/// and by visits, download its QR code, edit every field, upload an Excel file with a bad row
/// and create the rest.
#[test]
#[ignore = "needs chromium and chromium-driver (apt-get install chromium chromium-driver); run with --ignored"]
fn the_page_creates_lists_and_explains_links() {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    assert!(
        present,
        "{CHROMIUM} and {CHROMEDRIVER} are required (apt-get install chromium chromium-driver)"
    );
    let dir = TempDir::new();
    let downloads = dir.path("downloads");
    std::fs::create_dir_all(&downloads).expect("download dir");
    let srv = Server::data_node(&dir.path("data"), KEY, &[]);
    let page = format!("http://127.0.0.1:{}/", srv.admin_port);
    let b = Driver::start(&dir.path("profile"), "zh-CN,zh", &downloads);

    // Chinese from Accept-Language; English on request, and back.
    b.go(&page);
    assert_eq!(b.text("h1 [data-i18n=title]"), "短链接");
    b.click("#lang-switch");
    assert_eq!(b.text("h1 [data-i18n=title]"), "Short links");
    b.click("#lang-switch");
    assert_eq!(b.text("h1 [data-i18n=title]"), "短链接");

    // The key once; a wrong one is refused on the spot, in Chinese.
    b.type_in("#api-key", "wrong");
    b.click("#login-form button[type=submit]");
    let refused = b.wait(
        "the bad-key message",
        "return document.querySelector('[data-error-for=api_key]').textContent;",
    );
    assert_eq!(refused, "密钥无效。");
    b.type_in("#api-key", KEY);
    b.click("#login-form button[type=submit]");
    b.element("#create-form");
    // Times are in Shanghai time, and the page says so.
    assert!(b.text("#zone option:checked").starts_with("Asia/Shanghai"));

    // An error from the API shows next to its field, in Chinese.
    b.type_in("#url", "shop.example.com/no-scheme");
    b.click("#create-form button[type=submit]");
    let error = b.wait(
        "the URL error",
        "return document.querySelector('#create-form [data-error-for=url]').textContent;",
    );
    assert!(
        error
            .as_str()
            .is_some_and(|e| e.contains("链接") && !e.contains("url")),
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

    // A link with every field the API takes: a Chinese target on an IDN, a date in Shanghai
    // time, a custom code, a visit cap, and the options behind "更多选项".
    b.type_in("#url", "https://例子.中国/商品?颜色=红");
    b.click("#domain option[value='s.example.com']");
    b.click("#validity option[value='date']");
    b.type_in("#expires-date", "2027-01-01 00:00:00");
    b.type_in("#code", "cn-sale");
    b.type_in("#max-visits", "2");
    b.click("#more summary");
    b.click("#redirect option[value='301']");
    b.click("#forward-query option[value='false']");
    b.type_in("#valid-since", "2026-01-01 00:00");
    b.type_in("#expired-url", "https://shop.example.com/over");
    b.click("#create-form button[type=submit]");
    let short = b.wait(
        "the short link",
        "return document.querySelector('#short-url').textContent;",
    );
    assert_eq!(short, "https://s.example.com/cn-sale");
    assert_eq!(b.text("#result-target"), "https://例子.中国/商品?颜色=红");
    b.wait(
        "the QR code",
        "const q = document.querySelector('#qr'); return q.complete && q.naturalWidth > 0 && q.src.startsWith('blob:');",
    );
    b.screenshot("page-create.png");
    let made = link(&srv, "s.example.com", "cn-sale");
    assert_eq!(
        made["url"],
        "https://xn--fsqu00a.xn--fiqs8s/%E5%95%86%E5%93%81?%E9%A2%9C%E8%89%B2=%E7%BA%A2"
    );
    assert_eq!(made["expires_at"], Y2027 - SHANGHAI);
    assert_eq!(made["valid_since"], Y2026 - SHANGHAI);
    assert_eq!(made["redirect"], 301);
    assert_eq!(made["forward_query"], false);
    assert_eq!(made["max_visits"], 2);
    assert_eq!(made["expired_url"], "https://shop.example.com/over");
    // A generated code of a chosen length (the other fields as they were).
    b.type_in("#code", "");
    b.type_in("#max-visits", "");
    b.type_in("#code-length", "12");
    b.click("#domain option[value='go.example.cn']");
    b.click("#create-form button[type=submit]");
    let generated = b.wait(
        "a generated code",
        "const s = document.querySelector('#short-url').textContent; return s.endsWith('/cn-sale') ? '' : s;",
    );
    let code = generated
        .as_str()
        .and_then(|s| s.rsplit('/').next())
        .unwrap_or("");
    assert_eq!(code.len(), 12, "{generated}");

    // Two visits use the cap up; the third goes where the link says latecomers go.
    for status in [301, 301, 302] {
        let r = srv.request_with(
            "GET",
            "s.example.com",
            "/cn-sale",
            &[("User-Agent", BROWSER)],
        );
        assert_eq!(r.status, status);
    }
    // Another link, never visited.
    let r = srv.api(
        "POST",
        "/api/v1/links",
        Some(KEY),
        Some(r#"{"url":"https://shop.example.com/quiet","domain":"s.example.com","code":"quiet"}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);

    // The list: most visited first, the used-up link says so; filtered by state.
    b.click("#tabs [data-tab=links]");
    b.click("#list-domain option[value='s.example.com']");
    b.click("#list-sort option[value='-visits']");
    b.wait(
        "the most visited first",
        "const r = document.querySelectorAll('#links-table tbody tr'); return r.length === 2 && r[0].dataset.code === 'cn-sale';",
    );
    let row = "#links-table tr[data-code='cn-sale']";
    assert_eq!(b.text(&format!("{row} td.visits")), "2 / 2");
    b.screenshot("page-list.png");
    assert_eq!(b.text(&format!("{row} .state")), "已用完");
    assert_eq!(
        b.text(&format!("{row} td.target")),
        "https://例子.中国/商品?颜色=红"
    );
    assert_eq!(
        b.text(&format!("{row} td.expires")).get(..16),
        Some("2027-01-01 00:00")
    );
    b.click("#list-state option[value='active']");
    b.wait(
        "only the active link",
        "const r = document.querySelectorAll('#links-table tbody tr'); return r.length === 1 && r[0].dataset.code === 'quiet';",
    );
    b.click("#list-state option[value='expired']");
    b.wait(
        "only the used-up link",
        "const r = document.querySelectorAll('#links-table tbody tr'); return r.length === 1 && r[0].dataset.code === 'cn-sale';",
    );

    // Its detail: the visits per day, the QR code and its downloads.
    b.click(row);
    b.wait(
        "the visits in the statistics",
        "return document.querySelector('#detail-visits').textContent === '2';",
    );
    b.wait(
        "the chart",
        "return document.querySelectorAll('#chart rect.human').length === 1;",
    );
    assert!(b.text("#chart").contains("最高 2"), "{}", b.text("#chart"));
    b.wait(
        "the detail's QR code",
        "const q = document.querySelector('#detail-qr'); return q.complete && q.naturalWidth > 0;",
    );
    b.click("#detail-downloads button[data-kind=png][data-size='512']");
    let png = downloaded(&downloads, "cn-sale-512.png");
    assert!(png.starts_with(b"\x89PNG"));
    let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    assert!((480..=560).contains(&width), "{width}");

    // Every field edited: a new target, 302, the visit's parameters win, no start, a new
    // expiry, a higher cap, no page for latecomers. The link is active again.
    b.type_in("#edit-url", "https://shop.example.com/新品");
    b.click("#edit-redirect option[value='302']");
    b.click("#edit-forward-query option[value='override']");
    b.type_in("#edit-since", "");
    b.type_in("#edit-expires", "2028-01-01 12:00:00");
    b.type_in("#edit-max-visits", "10");
    b.type_in("#edit-expired-url", "");
    b.click("#edit-form button[type=submit]");
    b.element("#saved");
    b.wait(
        "the state shown again",
        "return document.querySelector('#detail-state').textContent === '有效';",
    );
    let edited = link(&srv, "s.example.com", "cn-sale");
    assert_eq!(edited["url"], "https://shop.example.com/%E6%96%B0%E5%93%81");
    assert_eq!(edited["redirect"], 302);
    assert_eq!(edited["forward_query"], "override");
    assert_eq!(edited["valid_since"], Value::Null);
    assert_eq!(
        edited["expires_at"],
        Y2027 + 365 * 86_400 + 12 * 3600 - SHANGHAI
    );
    assert_eq!(edited["max_visits"], 10);
    assert_eq!(edited["expired_url"], Value::Null);
    assert_eq!(edited["state"], "active");
    b.screenshot("page-links.png");

    // An Excel file with a bad row: checked row by row, then the good rows created.
    let xlsx = dir.file(
        "活动链接.xlsx",
        include_bytes!("../../crates/input/tests/fixtures/links.xlsx"),
    );
    b.click("#tabs [data-tab=bulk]");
    let input = b.element("#upload-file");
    b.call(
        "POST",
        &format!("/element/{input}/value"),
        Some(json!({ "text": xlsx.display().to_string() })),
    );
    b.click("#upload-domain option[value='s.example.com']");
    b.click("#upload-validity option[value='30d']");
    b.click("#upload-form button[type=submit]");
    b.wait(
        "the rows checked",
        "return document.querySelectorAll('#upload-table tbody tr').length === 3;",
    );
    assert_eq!(b.text("#upload-summary"), "共 3 行，2 行有效，1 行有错误。");
    assert_eq!(
        b.text("#upload-table tr[data-line='3'] td.errors"),
        "长链接：链接须以 http 或 https 开头"
    );
    b.screenshot("page-upload.png");
    assert_eq!(b.text("#upload-create"), "生成其中 2 行有效的链接");
    b.click("#upload-create");
    b.wait(
        "the links created",
        "return document.querySelector('#upload-summary').textContent.startsWith('已生成 2 个链接');",
    );
    let from_sheet = link(&srv, "s.example.com", "xlsx1");
    assert_eq!(from_sheet["max_visits"], 5);
    assert_eq!(from_sheet["expires_at"], Y2027 - SHANGHAI);
    assert!(b
        .js(
            "return document.querySelector('#upload-csv').href.startsWith('blob:');",
            json!([])
        )
        .as_bool()
        .unwrap_or(false));
    b.click("#upload-csv");
    let csv = String::from_utf8(downloaded(&downloads, "short-links.csv")).expect("UTF-8 CSV");
    assert!(csv.starts_with('\u{feff}'), "a byte-order mark for Excel");
    assert!(csv.contains("https://s.example.com/xlsx1"), "{csv}");
    assert!(csv.contains("https://shop.example.cn/商品/1"), "{csv}");
    b.click("#upload-zip");
    let zip = downloaded(&downloads, "qr-codes.zip");
    assert!(zip.starts_with(b"PK\x03\x04"));
    assert!(zip.windows(9).any(|w| w == b"xlsx1.png"));
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
