//! Durability through the real binary: kill -9 under concurrent writes, damaged journals,
//! compaction under redirect load.
use crate::util::{metric, random_u64, s, wait_until, KeepAlive, Server, TempDir, PATIENCE};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY: &str = "durability-key";

fn start(data: &std::path::Path) -> Server {
    Server::data_node(data, KEY, &[])
}

/// `DUANLIAN_CRASH_CYCLES=300 cargo test --release --test e2e crash` runs the long version.
fn crash_cycles() -> usize {
    std::env::var("DUANLIAN_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// Every acknowledged create resolves after kill -9, and nothing resolves to a URL that was
/// never asked for under its code.
#[test]
fn crash_safety_under_concurrent_creates() {
    let dir = TempDir::new();
    let data = dir.path("data");
    // url -> Some(code) when a custom code was requested; every URL ever sent is here.
    let sent: Arc<Mutex<HashMap<String, Option<String>>>> = Arc::default();
    // code -> url for every 201.
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let cycles = crash_cycles();
    let mut total_acked = 0;
    for cycle in 0..cycles {
        let srv = start(&data);
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for t in 0..8 {
            let (sent, acked, stop, port) =
                (sent.clone(), acked.clone(), stop.clone(), srv.admin_port);
            clients.push(std::thread::spawn(move || {
                let Ok(mut conn) = KeepAlive::connect(port) else {
                    return;
                };
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let url = format!("https://crash.example/{cycle}/{t}/{i}");
                    // Half the creates choose their code, half let the server generate one.
                    let code = (i % 2 == 0).then(|| format!("c{cycle}t{t}n{i}"));
                    sent.lock().expect("lock").insert(url.clone(), code.clone());
                    let body = match &code {
                        Some(c) => json!({"url": url, "code": c}),
                        None => json!({"url": url}),
                    };
                    match conn.post_json("/api/v1/links", KEY, &body.to_string()) {
                        Ok(r) if r.status == 201 => {
                            let v: Value = serde_json::from_str(&r.body).expect("json");
                            let code = v["code"].as_str().expect("code").to_owned();
                            acked.lock().expect("lock").insert(code, url);
                        }
                        Ok(r) => panic!("unexpected answer {}: {}", r.status, r.body),
                        Err(_) => return, // the server died under us
                    }
                }
            }));
        }
        // Kill at a random moment while writes are in flight: once this cycle has had a create
        // acknowledged, after a random pause (the pause is the scenario, not a wait).
        assert!(
            wait_until(PATIENCE, || acked.lock().expect("lock").len() > total_acked),
            "cycle {cycle} acknowledged nothing"
        );
        std::thread::sleep(Duration::from_millis(random_u64() % 250));
        srv.kill9();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().expect("client");
        }

        let srv = start(&data);
        let acked_now = acked.lock().expect("lock").clone();
        assert!(
            acked_now.len() > total_acked,
            "cycle {cycle} acknowledged nothing"
        );
        total_acked = acked_now.len();
        // Every create acknowledged in this cycle, and a random sample of the earlier ones (all
        // of them in short runs; a long run would otherwise re-check a growing set each cycle).
        let this_cycle = format!("https://crash.example/{cycle}/");
        let sample_one_in = acked_now.len() as u64 / 2000 + 1;
        let to_check = acked_now.iter().filter(|(_, url)| {
            cycles <= 10
                || url.starts_with(&this_cycle)
                || random_u64().is_multiple_of(sample_one_in)
        });
        let mut conn = KeepAlive::connect(srv.port).expect("connect");
        for (code, url) in to_check {
            let r = conn
                .get("go.example.cn", &format!("/{code}"))
                .expect("redirect");
            assert_eq!(r.status, 302, "cycle {cycle}: acknowledged {code} lost");
            assert_eq!(
                r.header("location"),
                Some(url.as_str()),
                "cycle {cycle}: {code}"
            );
        }
        // The full listing check reads every link: each cycle in short runs, every 25th in long.
        if cycles > 10 && cycle % 25 != 0 && cycle + 1 != cycles {
            srv.kill9();
            eprintln!(
                "crash cycle {cycle}: {total_acked} acknowledged creates; this cycle's all present"
            );
            continue;
        }
        // Everything stored was asked for, under the code it was asked with.
        let sent_now = sent.lock().expect("lock").clone();
        let mut cursor: Option<String> = None;
        let mut stored = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/links?limit=1000&cursor={c}"),
                None => "/api/v1/links?limit=1000".into(),
            };
            let page: Value =
                serde_json::from_str(&srv.api("GET", &path, Some(KEY), None).body).expect("json");
            for l in page["links"].as_array().expect("links") {
                let (code, url) = (
                    l["code"].as_str().expect("code"),
                    l["url"].as_str().expect("url"),
                );
                match sent_now.get(url) {
                    Some(Some(asked)) => {
                        assert_eq!(asked, code, "{url} stored under the wrong code")
                    }
                    Some(None) => {}
                    None => panic!("{code} -> {url} was never sent"),
                }
                stored += 1;
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert!(stored >= total_acked);
        srv.kill9();
        eprintln!(
            "crash cycle {cycle}: {total_acked} acknowledged creates all present, {stored} stored"
        );
    }
}

/// The journal's only segment and the byte ranges of its records.
fn records(data: &std::path::Path) -> (std::path::PathBuf, Vec<u8>, Vec<(usize, usize)>) {
    let journal = data.join("journal");
    let mut segs: Vec<_> = std::fs::read_dir(&journal)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    segs.sort();
    let seg = segs.pop().expect("a segment");
    let bytes = std::fs::read(&seg).expect("read");
    let mut ranges = Vec::new();
    let mut off = 8;
    while off + 20 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
            as usize;
        ranges.push((off, off + 20 + len));
        off += 20 + len;
    }
    (seg, bytes, ranges)
}

#[test]
fn torn_and_corrupt_journals_at_start() {
    let dir = TempDir::new();
    let data = dir.path("data");
    let srv = start(&data);
    for code in ["one", "two", "three"] {
        let r = srv.api(
            "POST",
            "/api/v1/links",
            Some(KEY),
            Some(&json!({"url": format!("https://j.example/{code}"), "code": code}).to_string()),
        );
        assert_eq!(r.status, 201);
    }
    srv.kill9();
    let (seg, whole, ranges) = records(&data);
    assert_eq!(ranges.len(), 3);
    let (last_start, last_end) = ranges[2];
    assert_eq!(last_end, whole.len());

    // A write cut anywhere inside the last record: start-up cuts it off and serves the rest.
    for cut in last_start..last_end {
        std::fs::write(&seg, &whole[..cut]).expect("write");
        let srv = start(&data);
        assert_eq!(
            srv.request("GET", "go.example.cn", "/two").status,
            302,
            "cut at {cut}"
        );
        assert_eq!(
            srv.request("GET", "go.example.cn", "/three").status,
            404,
            "cut at {cut}"
        );
        if cut > last_start {
            assert!(
                srv.logs().contains("torn"),
                "cut at {cut}: no log line about the torn write"
            );
        }
        srv.kill9();
        assert_eq!(
            std::fs::metadata(&seg).expect("stat").len() as usize,
            last_start
        );
    }

    // Damage before the last record: start-up refuses, naming file and offset, and changes nothing.
    for at in 0..last_start {
        let mut bad = whole.clone();
        bad[at] ^= 0x41;
        std::fs::write(&seg, &bad).expect("write");
        let o = crate::util::run(&[
            "serve",
            "--data-dir",
            s(&data),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--api-key",
            KEY,
        ]);
        let err = crate::util::stderr(&o);
        assert_eq!(o.status.code(), Some(1), "flip at {at}: {err}");
        assert!(
            err.contains(&seg.file_name().expect("name").to_string_lossy().to_string()),
            "flip at {at}: {err}"
        );
        assert!(err.contains("offset"), "flip at {at}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            std::fs::read(&seg).expect("read"),
            bad,
            "a refused start must not modify the journal"
        );
    }
}

#[test]
fn compaction_under_redirect_load_fails_nothing() {
    let dir = TempDir::new();
    let data = dir.path("data");
    let srv = start(&data);
    let links: Vec<Value> = (0..500)
        .map(|i| json!({"url": format!("https://load.example/{i}"), "code": format!("L{i}")}))
        .collect();
    let r = srv.api(
        "POST",
        "/api/v1/links/batch",
        Some(KEY),
        Some(&json!({ "links": links }).to_string()),
    );
    assert_eq!(r.status, 201);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for t in 0..2u64 {
        let (stop, ok, bad, port) = (stop.clone(), ok.clone(), bad.clone(), srv.port);
        load.push(std::thread::spawn(move || {
            let mut conn = KeepAlive::connect(port).expect("connect");
            let mut i = t * 7919;
            while !stop.load(Ordering::Relaxed) {
                i = (i + 1) % 500;
                match conn.get("go.example.cn", &format!("/L{i}")) {
                    Ok(r)
                        if r.status == 302
                            && r.header("location")
                                == Some(format!("https://load.example/{i}").as_str()) =>
                    {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        bad.fetch_add(1, Ordering::Relaxed);
                        conn = KeepAlive::connect(port).expect("reconnect");
                    }
                }
            }
        }));
    }
    // The load is running before the first compaction starts...
    let redirects = || ok.load(Ordering::Relaxed);
    assert!(
        wait_until(PATIENCE, || redirects() >= 100),
        "the load never got going: {} redirects, {} failures",
        redirects(),
        bad.load(Ordering::Relaxed)
    );
    let started = Instant::now();
    for round in 0..10 {
        // New writes between compactions, so each one has something to fold.
        let r = srv.api(
            "POST",
            "/api/v1/links",
            Some(KEY),
            Some(&json!({"url": format!("https://load.example/extra{round}")}).to_string()),
        );
        assert_eq!(r.status, 201);
        let c = srv.api("POST", "/api/v1/admin/compact", Some(KEY), None);
        assert_eq!(c.status, 200, "{}", c.body);
    }
    // ...and goes on after the last one, to a thousand redirects at least, before it stops.
    let enough = (redirects() + 200).max(1001);
    assert!(
        wait_until(PATIENCE, || redirects() >= enough),
        "the load generator barely ran: {} redirects, {} failures",
        redirects(),
        bad.load(Ordering::Relaxed)
    );
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.join().expect("load thread");
    }
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    eprintln!(
        "{ok} redirects during 10 compactions in {:?}, {bad} failures",
        started.elapsed()
    );
    assert_eq!(bad, 0);
    assert!(ok > 1000, "the load generator barely ran: {ok}");
    srv.kill9();
    let journal_files = std::fs::read_dir(data.join("journal")).expect("ls").count();
    assert!(
        journal_files <= 2,
        "compaction left {journal_files} segments"
    );
}

/// Every acknowledged `(code, target)` still redirects to its target.
fn redirect_all(srv: &Server, acked: &[(String, String)]) {
    for (code, url) in acked {
        let r = srv.request("GET", "go.example.cn", &format!("/{code}"));
        assert_eq!(r.header("location"), Some(url.as_str()), "{code}");
    }
}

/// A small tmpfs inside `dir` (a disk that fills up), unmounted on drop. Needs root, as CI has.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &TempDir, size: &str) -> Tmpfs {
        let mnt = dir.path("tiny");
        std::fs::create_dir_all(&mnt).expect("mkdir");
        let mounted = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                s(&mnt),
            ])
            .status()
            .is_ok_and(|st| st.success());
        assert!(
            mounted,
            "this test mounts a small tmpfs and needs root (CI runs as root)"
        );
        Tmpfs(mnt)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A failed journal write (here: the disk is full) answers 503 and stops all writes, and never
/// reports an unknown outcome as success; redirects go on, and a restart keeps every 201.
#[test]
fn a_failed_journal_write_stops_writes_with_503() {
    let dir = TempDir::new();
    let tiny = Tmpfs::mount(&dir, "512k");
    let data = tiny.0.join("data");
    let srv = start(&data);
    let mut acked = Vec::new();
    let mut first_failure = None;
    for i in 0..400 {
        let url = format!("https://full.example/{i}/{}", "x".repeat(3000));
        let r = srv.api(
            "POST",
            "/api/v1/links",
            Some(KEY),
            Some(&json!({"url": url, "code": format!("f{i}")}).to_string()),
        );
        match r.status {
            201 => acked.push((format!("f{i}"), url)),
            503 => {
                first_failure = Some(r);
                break;
            }
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    let failure = first_failure.expect("the disk never filled up");
    assert_eq!(
        failure.header("content-type"),
        Some("application/problem+json")
    );
    assert!(acked.len() > 10, "only {} creates fit", acked.len());
    // Every later write is refused too, even a tiny one that would fit.
    let later = srv.api(
        "POST",
        "/api/v1/links",
        Some(KEY),
        Some(r#"{"url":"https://a/","code":"tiny"}"#),
    );
    assert_eq!(later.status, 503, "{}", later.body);
    let del = srv.api("DELETE", "/api/v1/links/go.example.cn/f0", Some(KEY), None);
    assert_eq!(del.status, 503);
    // Reads and redirects go on.
    assert_eq!(srv.request("GET", "go.example.cn", "/f1").status, 302);
    srv.kill9();
    // The restart cuts whatever partial record the failed write left, and keeps every 201.
    let srv = start(&data);
    redirect_all(&srv, &acked);
    srv.kill9();
}

/// Online compaction on a full disk once answered 500. It is 503 like every write refused for
/// lack of space; nothing half-written stays behind, every acknowledged link still redirects,
/// and a restart keeps them all.
#[test]
fn compaction_on_a_full_disk_is_503_and_the_node_stays_consistent() {
    let dir = TempDir::new();
    let tiny = Tmpfs::mount(&dir, "1m");
    let data = tiny.0.join("data");
    let srv = start(&data);
    // About 600 KiB of journal: the snapshot folding it in does not fit beside it.
    let mut acked = Vec::new();
    for i in 0..200 {
        let url = format!("https://full.example/{i}/{}", "x".repeat(3000));
        let r = srv.api(
            "POST",
            "/api/v1/links",
            Some(KEY),
            Some(&json!({"url": url, "code": format!("c{i}")}).to_string()),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        acked.push((format!("c{i}"), url));
    }
    let r = srv.api("POST", "/api/v1/admin/compact", Some(KEY), None);
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("no-space"), "{}", r.body);
    let leftovers: Vec<String> = std::fs::read_dir(&data)
        .expect("data dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    redirect_all(&srv, &acked);
    srv.kill9();
    let srv = start(&data);
    redirect_all(&srv, &acked);
    srv.kill9();
}

/// Nothing bounded the journal or the overlay under steady creates. Now a node compacts by
/// itself past a journal size or an overlay count (never two at once), counts it in a metric and
/// logs it, and the journal stays bounded; every link survives a restart.
#[test]
fn steady_creates_keep_the_journal_bounded_by_automatic_compaction() {
    let dir = TempDir::new();
    let data = dir.path("data");
    let limit = 64 * 1024;
    let srv = Server::data_node(
        &data,
        KEY,
        &[
            "--compact-journal-bytes",
            &limit.to_string(),
            "--compact-overlay-links",
            "0",
        ],
    );
    let mut largest = 0.0f64;
    for batch in 0..20 {
        let links: Vec<Value> = (0..100)
            .map(|i| json!({"url": format!("https://steady.example/{batch}/{i}/{}", "p".repeat(150)), "code": format!("s{batch}x{i}")}))
            .collect();
        let r = srv.api(
            "POST",
            "/api/v1/links/batch",
            Some(KEY),
            Some(&json!({ "links": links }).to_string()),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        largest = largest.max(metric(&srv, "duanlian_journal_bytes"));
        // A steady rate of writes (the scenario), which automatic compaction has to keep up
        // with; not a wait for something.
        std::thread::sleep(Duration::from_millis(300));
    }
    let journal = || metric(&srv, "duanlian_journal_bytes");
    assert!(
        wait_until(PATIENCE, || journal() < limit as f64),
        "the journal stayed above the limit: {} bytes",
        journal()
    );
    // About 500 KiB were written; never more than the limit plus what arrives between checks.
    assert!(
        largest < 4.0 * limit as f64,
        "journal reached {largest} bytes"
    );
    let auto = metric(
        &srv,
        r#"duanlian_compactions_total{trigger="journal_bytes",outcome="ok"}"#,
    );
    assert!(auto >= 2.0, "{auto} automatic compactions");
    assert!(
        srv.logs().contains("compacted automatically"),
        "{}",
        srv.logs()
    );
    srv.kill9();
    let srv = Server::data_node(&data, KEY, &["--compact-overlay-links", "500"]);
    for (batch, i) in [(0, 0), (7, 42), (19, 99)] {
        let r = srv.request("GET", "go.example.cn", &format!("/s{batch}x{i}"));
        assert_eq!(r.status, 302, "s{batch}x{i}");
    }
    // The overlay limit: 600 creates, compacted once 500 are held in memory.
    let links: Vec<Value> = (0..600)
        .map(|i| json!({"url": format!("https://steady.example/o/{i}"), "code": format!("o{i}")}))
        .collect();
    let r = srv.api(
        "POST",
        "/api/v1/links/batch",
        Some(KEY),
        Some(&json!({ "links": links }).to_string()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let by_size = r#"duanlian_compactions_total{trigger="overlay_links",outcome="ok"}"#;
    assert!(
        wait_until(PATIENCE, || metric(&srv, by_size) >= 1.0),
        "no compaction by overlay size"
    );
    assert_eq!(metric(&srv, r#"duanlian_links{layer="overlay"}"#), 0.0);
    assert_eq!(srv.request("GET", "go.example.cn", "/o599").status, 302);
}

/// The data directory's one journal segment.
fn only_segment(data: &std::path::Path) -> std::path::PathBuf {
    let segments: Vec<_> = std::fs::read_dir(data.join("journal"))
        .expect("journal")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    assert_eq!(segments.len(), 1, "{segments:?}");
    segments[0].clone()
}

fn flip(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).expect("write");
}

/// Creates `n` links one request (one journal record) each; returns their codes and targets.
fn create_each(srv: &Server, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let (code, url) = (format!("j{i}"), format!("https://journal.example/{i}"));
            let r = srv.api(
                "POST",
                "/api/v1/links",
                Some(KEY),
                Some(&json!({"url": url, "code": code}).to_string()),
            );
            assert_eq!(r.status, 201, "{}", r.body);
            (code, url)
        })
        .collect()
}

fn duanlian(args: &[&str]) -> std::process::Output {
    crate::util::run(args)
}

/// One damaged byte in the middle of the journal once left truncation as the only way back,
/// losing every intact record behind it. `journal check` reports the damaged record (file,
/// offset, sequence number); `journal salvage --mode skip-damaged` keeps every other record,
/// keeps the original and quarantines the damaged bytes; the node then starts with all links
/// but the one damaged write, takes new writes, compacts and restarts.
#[test]
fn a_damaged_record_mid_journal_is_checked_and_salvaged() {
    let dir = TempDir::new();
    let data = dir.path("data");
    let srv = start(&data);
    let links = create_each(&srv, 300);
    srv.kill9();
    let segment = only_segment(&data);
    let len = std::fs::metadata(&segment).expect("segment").len() as usize;
    flip(&segment, len / 2);

    let refused = duanlian(&["serve", "--data-dir", s(&data), "--domain", "go.example.cn"]);
    assert!(!refused.status.success());
    assert!(
        crate::util::stderr(&refused).contains("corrupt record"),
        "{}",
        crate::util::stderr(&refused)
    );

    let check = duanlian(&["journal", "check", "--data-dir", s(&data)]);
    assert!(!check.status.success(), "damage must fail the check");
    let report = crate::util::stdout(&check);
    let damaged: Vec<&str> = report.lines().filter(|l| l.contains(": offset ")).collect();
    assert_eq!(damaged.len(), 1, "{report}");
    // One record lost: its sequence range is a single number.
    let seq = damaged[0]
        .split("seq ")
        .nth(1)
        .and_then(|r| r.split("..=").next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no sequence number in {report}"));
    assert!(
        damaged[0].contains(&format!("seq {seq}..={seq}")),
        "{report}"
    );

    let salvage = duanlian(&[
        "journal",
        "salvage",
        "--data-dir",
        s(&data),
        "--mode",
        "skip-damaged",
    ]);
    assert!(
        salvage.status.success(),
        "{}",
        crate::util::stderr(&salvage)
    );
    let names: Vec<String> = std::fs::read_dir(&data)
        .expect("data")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("journal.damaged-")),
        "{names:?}"
    );
    let index = std::fs::read_to_string(data.join("journal-quarantine").join("index.jsonl"))
        .expect("quarantine index");
    assert!(index.contains(&format!("\"first_seq\":{seq}")), "{index}");
    assert!(duanlian(&["journal", "check", "--data-dir", s(&data)])
        .status
        .success());

    // Sequence numbers start at 1 with the first create: record `seq` held link `seq - 1`.
    let srv = start(&data);
    for (i, (code, url)) in links.iter().enumerate() {
        let r = srv.request("GET", "go.example.cn", &format!("/{code}"));
        if i + 1 == seq {
            assert_eq!(r.status, 404, "{code} was in the damaged record");
        } else {
            assert_eq!(r.header("location"), Some(url.as_str()), "{code}");
        }
    }
    let more = srv.api(
        "POST",
        "/api/v1/links",
        Some(KEY),
        Some(r#"{"url":"https://journal.example/after","code":"after"}"#),
    );
    assert_eq!(more.status, 201, "{}", more.body);
    srv.kill9();
    let srv = start(&data);
    assert_eq!(srv.request("GET", "go.example.cn", "/after").status, 302);
    assert_eq!(srv.request("GET", "go.example.cn", "/j299").status, 302);
    let c = srv.api("POST", "/api/v1/admin/compact", Some(KEY), None);
    assert_eq!(c.status, 200, "{}", c.body);
    srv.kill9();
    let srv = start(&data);
    assert_eq!(srv.request("GET", "go.example.cn", "/after").status, 302);
    srv.kill9();
}

/// A flipped bit in the last, fully written record once dropped an acknowledged link silently,
/// as if it were a torn write. The node still comes up, but the bytes go to the quarantine and
/// an error names the sequence number.
#[test]
fn a_damaged_last_record_is_quarantined_and_logged() {
    let dir = TempDir::new();
    let data = dir.path("data");
    let srv = start(&data);
    create_each(&srv, 20);
    srv.kill9();
    let segment = only_segment(&data);
    let len = std::fs::metadata(&segment).expect("segment").len() as usize;
    flip(&segment, len - 3);
    let srv = start(&data);
    let logs = srv.logs();
    assert!(
        logs.contains("ERROR") || logs.contains("\"level\":\"ERROR\""),
        "{logs}"
    );
    assert!(logs.contains("20"), "the sequence number: {logs}");
    assert!(logs.contains("quarantine"), "{logs}");
    let quarantined: Vec<_> = std::fs::read_dir(data.join("journal-quarantine"))
        .expect("quarantine")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(srv.request("GET", "go.example.cn", "/j18").status, 302);
    assert_eq!(srv.request("GET", "go.example.cn", "/j19").status, 404);
    srv.kill9();
    let check = duanlian(&["journal", "check", "--data-dir", s(&data)]);
    assert!(check.status.success(), "{}", crate::util::stdout(&check));
}
