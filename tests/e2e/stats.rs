//! Visit statistics through the real binary: click events, bots, anonymisation, the stats
//! endpoint, the export, and the full-queue path.
use crate::util::{metric, run, s, stderr, stdout, Server, TempDir, BROWSER, PATIENCE};
use serde_json::Value;
use std::time::{Duration, Instant};

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const WHATSAPP: &str = "WhatsApp/2.23.20.0 A";

fn create(srv: &Server, body: &str) {
    let r = srv.api("POST", "/api/v1/links", Some("k"), Some(body));
    assert_eq!(r.status, 201, "{}", r.body);
}

fn json(srv: &Server, path: &str) -> (u16, Value) {
    let r = srv.api("GET", path, Some("k"), None);
    (
        r.status,
        serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("not JSON: {}", r.body)),
    )
}

/// The stats of `code` once the writer has counted `total` clicks (human + bot).
fn stats_when(srv: &Server, code: &str, total: u64) -> Value {
    let mut last = Value::Null;
    crate::util::poll(PATIENCE, || {
        let (status, v) = json(srv, &format!("/api/v1/links/go.example.cn/{code}/stats"));
        assert_eq!(status, 200, "{v}");
        let seen =
            v["visits"]["human"].as_u64().unwrap_or(0) + v["visits"]["bot"].as_u64().unwrap_or(0);
        last = v;
        (seen >= total).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("stats never reached {total}: {last}"))
}

/// Waits until `srv`'s writer has appended `n` clicks to the raw log: the statistics count a
/// click as it is made, the raw log gets its line at the writer's next poll (up to 20 ms later).
fn logged(srv: &Server, n: u64) {
    let written = r#"duanlian_clicks_total{outcome="written"}"#;
    crate::util::poll(PATIENCE, || {
        (metric(srv, written) >= n as f64).then_some(())
    })
    .unwrap_or_else(|| panic!("never {n} clicks in the raw log"));
}

#[test]
fn visits_are_counted_by_device_and_referrer_and_bots_apart() {
    let dir = TempDir::new();
    let data = dir.path("data");
    let mut srv = Server::data_node(&data, "k", &[]);
    create(
        &srv,
        r#"{"url":"https://shop.example.com/a","code":"promo"}"#,
    );
    create(
        &srv,
        r#"{"url":"https://shop.example.com/b","code":"capped","max_visits":2}"#,
    );
    let get = |code: &str, headers: &[(&str, &str)]| {
        srv.request_with("GET", "go.example.cn", &format!("/{code}"), headers)
            .status
    };
    for _ in 0..3 {
        assert_eq!(
            get(
                "promo",
                &[
                    ("User-Agent", IPHONE),
                    ("Referer", "https://Weibo.com/u/1?x=2")
                ]
            ),
            302
        );
    }
    for _ in 0..2 {
        assert_eq!(get("promo", &[("User-Agent", BROWSER)]), 302);
    }
    // Bots are told where the link goes, recorded as bots, and count no visit.
    assert_eq!(get("promo", &[("User-Agent", GOOGLEBOT)]), 302);
    assert_eq!(get("promo", &[("User-Agent", WHATSAPP)]), 302);
    assert_eq!(get("promo", &[]), 302);
    // HEAD is not a visit at all.
    assert_eq!(
        srv.request_with(
            "HEAD",
            "go.example.cn",
            "/promo",
            &[("User-Agent", BROWSER)]
        )
        .status,
        302
    );
    let v = stats_when(&srv, "promo", 8);
    assert_eq!(v["visits"]["human"], 5, "{v}");
    assert_eq!(v["visits"]["bot"], 3, "{v}");
    let today = v["to"].as_str().expect("to").to_owned();
    let days = v["per_day"].as_array().expect("per_day");
    let last = days.last().expect("a day");
    assert_eq!(
        (last["date"].as_str(), &last["human"], &last["bot"]),
        (Some(today.as_str()), &Value::from(5), &Value::from(3))
    );
    assert_eq!(v["referrers"][0]["host"], "weibo.com", "{v}");
    assert_eq!(v["referrers"][0]["visits"], 3, "{v}");
    assert_eq!(v["referrers"][1]["host"], "(direct)", "{v}");
    assert_eq!(v["devices"]["mobile"], 3, "{v}");
    assert_eq!(v["devices"]["desktop"], 2, "{v}");
    assert_eq!(v["devices"]["bot"], 3, "{v}");
    let (_, link) = json(&srv, "/api/v1/links/go.example.cn/promo");
    assert_eq!(link["visits"], 5, "bots counted: {link}");

    // A capped link: bots use none of its visits.
    for _ in 0..3 {
        assert_eq!(get("capped", &[("User-Agent", GOOGLEBOT)]), 302);
    }
    assert_eq!(get("capped", &[("User-Agent", IPHONE)]), 302);
    assert_eq!(get("capped", &[("User-Agent", IPHONE)]), 302);
    assert_eq!(get("capped", &[("User-Agent", IPHONE)]), 410);

    // Ranges and bad queries.
    let (status, v) = json(
        &srv,
        &format!("/api/v1/links/go.example.cn/promo/stats?from={today}&to={today}&top=1"),
    );
    assert_eq!(status, 200);
    assert_eq!(v["referrers"].as_array().map(Vec::len), Some(1));
    let (status, v) = json(
        &srv,
        "/api/v1/links/go.example.cn/promo/stats?from=2026-13-01&top=0&x=1",
    );
    assert_eq!(status, 422, "{v}");
    let fields: Vec<&str> = v["invalid_fields"]
        .as_array()
        .expect("invalid_fields")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(fields, ["from", "top", "x"], "{v}");
    let (status, v) = json(
        &srv,
        "/api/v1/links/go.example.cn/promo/stats?from=2020-01-01&to=2026-01-01",
    );
    assert_eq!(status, 422, "{v}");
    assert_eq!(json(&srv, "/api/v1/links/go.example.cn/nope/stats").0, 404);

    // A restart (even a hard kill) rebuilds the same statistics from the click log: the 8
    // clicks above and the capped link's 5.
    logged(&srv, 13);
    srv.stop();
    let srv = Server::data_node(&data, "k", &[]);
    let again = stats_when(&srv, "promo", 8);
    assert_eq!(again["visits"], serde_json::json!({"human": 5, "bot": 3}));
    assert_eq!(again["referrers"][0]["host"], "weibo.com");

    // Deleting a link forgets its statistics: a new link under the code starts afresh.
    let r = srv.api(
        "DELETE",
        "/api/v1/links/go.example.cn/promo",
        Some("k"),
        None,
    );
    assert_eq!(r.status, 204);
    create(
        &srv,
        r#"{"url":"https://shop.example.com/new","code":"promo"}"#,
    );
    let (_, fresh) = json(&srv, "/api/v1/links/go.example.cn/promo/stats");
    assert_eq!(fresh["visits"], serde_json::json!({"human": 0, "bot": 0}));
}

#[test]
fn addresses_are_anonymised_and_exported() {
    let dir = TempDir::new();
    let data = dir.path("data");
    let srv = Server::data_node(&data, "k", &["--trusted-proxy", "127.0.0.1"]);
    create(&srv, r#"{"url":"https://shop.example.com/a","code":"exp"}"#);
    let via = |xff: &str| {
        let r = srv.request_with(
            "GET",
            "go.example.cn",
            "/exp",
            &[
                ("User-Agent", BROWSER),
                ("X-Forwarded-For", xff),
                ("Referer", "https://t.co/abc"),
            ],
        );
        assert_eq!(r.status, 302);
    };
    via("203.0.113.77");
    via("2001:db8:abcd:12:3456:789a:bcde:f012");
    stats_when(&srv, "exp", 2);
    logged(&srv, 2);
    let o = run(&["clicks", "export", "--data-dir", s(&data)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = stdout(&o);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "time,domain,code,device,referrer,client");
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines[1].ends_with(",go.example.cn,exp,desktop,t.co,203.0.113.0"),
        "{csv}"
    );
    assert!(
        lines[2].ends_with(",go.example.cn,exp,desktop,t.co,2001:db8:abcd::"),
        "{csv}"
    );
    assert!(
        !csv.contains("203.0.113.77") && !csv.contains("f012"),
        "{csv}"
    );
    assert!(stderr(&o).contains("2 clicks exported"), "{}", stderr(&o));
    let o = run(&[
        "clicks",
        "export",
        "--data-dir",
        s(&data),
        "--format",
        "jsonl",
        "--since",
        "1h",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let first: Value =
        serde_json::from_str(stdout(&o).lines().next().expect("a line")).expect("json");
    assert_eq!(first["client"], "203.0.113.0");
    assert_eq!(first["referrer"], "t.co");
    let since = |when: &str| run(&["clicks", "export", "--data-dir", s(&data), "--since", when]);
    assert_eq!(
        stdout(&since("2099-01-01")).lines().count(),
        1,
        "only the header"
    );
    let o = since("yesterday");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--since"), "{}", stderr(&o));

    // Without the proxy trusted, a forwarded address is not believed.
    let other = Server::data_node(&dir.path("other"), "k", &[]);
    create(
        &other,
        r#"{"url":"https://shop.example.com/a","code":"exp"}"#,
    );
    let r = other.request_with(
        "GET",
        "go.example.cn",
        "/exp",
        &[("User-Agent", BROWSER), ("X-Forwarded-For", "203.0.113.77")],
    );
    assert_eq!(r.status, 302);
    stats_when(&other, "exp", 1);
    logged(&other, 1);
    let o = run(&["clicks", "export", "--data-dir", s(&dir.path("other"))]);
    assert!(
        stdout(&o).trim_end().ends_with(",127.0.0.0"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_full_click_buffer_drops_clicks_and_never_slows_redirects() {
    let dir = TempDir::new();
    let data = dir.path("data");
    let srv = Server::start_env(
        &[("DUANLIAN_TEST_CLICKS_WRITER_DELAY_MS", "2000")],
        &[
            "--data-dir",
            s(&data),
            "--domain",
            "go.example.cn",
            "--api-key",
            "k",
            "--threads",
            "1",
            "--clicks-queue",
            "1",
        ],
    );
    create(
        &srv,
        r#"{"url":"https://shop.example.com/a","code":"burst"}"#,
    );
    let mut c = crate::util::KeepAlive::connect(srv.port).expect("connect");
    let started = Instant::now();
    for _ in 0..30 {
        assert_eq!(c.get("go.example.cn", "/burst").expect("get").status, 302);
    }
    // The writer sleeps two seconds a turn; thirty redirects did not wait for it.
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    let metrics = srv.api("GET", "/metrics", None, None).body;
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("duanlian_clicks_total{outcome=\"dropped\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no dropped count: {metrics}"));
    assert!(dropped >= 20, "dropped {dropped}");
    // Visit counts are exact regardless: they are not click events.
    let (_, link) = json(&srv, "/api/v1/links/go.example.cn/burst");
    assert_eq!(link["visits"], 30);
}

#[test]
fn statistics_can_be_switched_off() {
    let dir = TempDir::new();
    let data = dir.path("data");
    let srv = Server::data_node(&data, "k", &["--no-stats"]);
    create(
        &srv,
        r#"{"url":"https://shop.example.com/a","code":"quiet"}"#,
    );
    assert_eq!(srv.request("GET", "go.example.cn", "/quiet").status, 302);
    let (status, v) = json(&srv, "/api/v1/links/go.example.cn/quiet/stats");
    assert_eq!(status, 404);
    assert_eq!(
        v["type"].as_str().map(|t| t.ends_with("statistics-off")),
        Some(true),
        "{v}"
    );
    assert!(!data.join("clicks").exists());
    let (_, link) = json(&srv, "/api/v1/links/go.example.cn/quiet");
    assert_eq!(link["visits"], 1, "visit counts stay on");
}

#[test]
fn clicks_past_the_retention_are_forgotten() {
    let dir = TempDir::new();
    let data = dir.path("data");
    let clicks = data.join("clicks");
    std::fs::create_dir_all(&clicks).expect("clicks dir");
    // A year-old log, and one from yesterday, both for the same link.
    let day = 86_400;
    let now = duanlian_link::now_secs();
    let file = |at: i64| {
        let date = duanlian_link::format_date(at).replace('-', "");
        let path = clicks.join(format!("clicks-{date}-000.tsv"));
        std::fs::write(
            &path,
            format!("{at}\tgo.example.cn\told\tmobile\t\t192.0.2.0\n"),
        )
        .expect("write");
        path
    };
    let (ancient, recent) = (file(now - 365 * day), file(now - day));
    let srv = Server::data_node(&data, "k", &["--stats-retention", "30d"]);
    create(&srv, r#"{"url":"https://shop.example.com/a","code":"old"}"#);
    let (_, v) = json(&srv, "/api/v1/links/go.example.cn/old/stats");
    assert_eq!(v["visits"]["human"], 1, "{v}");
    assert!(!ancient.exists());
    // Closed raw files are compressed, so the recent one may be either.
    assert!(recent.exists() || recent.with_extension("tsv.gz").exists());
}
