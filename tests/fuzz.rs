//! Property tests with arbitrary bytes and structured mutations against every parser that faces
//! outside bytes: the link model's parsers, snapshot files, journal segments, bulk CSV/JSONL
//! input, the admin API's JSON and the redirect listener's request heads. None may panic, hang
//! or allocate without bound.
//!
//! `cargo test --test fuzz` runs a bounded number of cases per target (seconds in all);
//! `DUANLIAN_FUZZ_CASES=100000 cargo test --release --test fuzz` runs as many as you like.
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[path = "support/http.rs"]
mod http;

/// Cases per target: `DUANLIAN_FUZZ_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("DUANLIAN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn runner(default: u32) -> TestRunner {
    TestRunner::new(Config {
        cases: cases(default),
        failure_persistence: None,
        ..Config::default()
    })
}

fn scratch(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("duanlian-fuzz-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).expect("mkdir");
    p
}

/// Byte edits to apply to a valid input: flip, overwrite, insert, delete, truncate.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
    Truncate(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Remove(i, n)),
        any::<usize>().prop_map(Edit::Truncate),
    ];
    prop::collection::vec(edit, 1..6)
}

/// `base` with `edits` applied at positions taken modulo its length, from byte `from` on.
fn mutate(base: &[u8], edits: &[Edit], from: usize) -> Vec<u8> {
    let mut v = base.to_vec();
    for e in edits {
        let span = v.len().saturating_sub(from).max(1);
        let at = |i: usize| from + i % span;
        match e {
            Edit::Flip(i, b) if !v.is_empty() => {
                let i = at(*i).min(v.len() - 1);
                v[i] ^= b;
            }
            Edit::Set(i, b) if !v.is_empty() => {
                let i = at(*i).min(v.len() - 1);
                v[i] = *b;
            }
            Edit::Insert(i, bytes) => {
                let i = at(*i).min(v.len());
                v.splice(i..i, bytes.iter().copied());
            }
            Edit::Remove(i, n) if !v.is_empty() => {
                let i = at(*i).min(v.len() - 1);
                let end = (i + n).min(v.len());
                v.drain(i..end);
            }
            Edit::Truncate(i) => {
                let i = at(*i).min(v.len());
                v.truncate(i);
            }
            _ => {}
        }
    }
    v
}

fn sample_links() -> Vec<duanlian_link::Link> {
    use duanlian_link::{parse_url, Code, Domain, ForwardQuery, Link, Redirect, Validity};
    (0..40)
        .map(|i| Link {
            domain: Domain::parse(if i % 3 == 0 {
                "s.example.com"
            } else {
                "go.example.cn"
            })
            .expect("domain"),
            code: Code::parse(&format!("c{i}x")).expect("code"),
            url: parse_url(&format!("https://shop.example.com/item/{i}?a={i}")).expect("url"),
            redirect: Redirect::ALL[i % 4],
            validity: Validity::new(
                (i % 5 == 0).then_some(1_700_000_000),
                (i % 4 == 0).then_some(4_000_000_000),
            )
            .and_then(|v| v.with_max_visits((i % 7 == 0).then_some(5)))
            .expect("validity"),
            created_at: 1_700_000_000 + i as i64,
            forward_query: [ForwardQuery::Add, ForwardQuery::Off, ForwardQuery::Override][i % 3],
            expired_url: (i % 6 == 0).then(|| "https://sorry.example/".into()),
        })
        .collect()
}

/// The link model's parsers take any text.
#[test]
fn link_parsers_take_any_input() {
    let mut r = runner(2_000);
    let text = prop_oneof![
        ".*",
        "(https?|ftp)://[a-zA-Z0-9.:@\\[\\]%_-]{0,40}(/[^ ]{0,30})?(\\?[^#]{0,20})?(#.{0,5})?",
        "[0-9]{1,6}-[0-9]{1,3}-[0-9]{1,3}([Tt ][0-9:]{1,10}(\\.[0-9]*)?([Zz]|[+-][0-9:]{0,6})?)?",
        "[0-9]{0,25}[smhdwy]?",
    ];
    r.run(&(text, any::<Vec<u8>>()), |(s, bytes)| {
        let _ = duanlian_link::parse_url(&s).map(|u| duanlian_link::url_host(&u));
        let _ = duanlian_link::Code::parse(&s);
        let _ = duanlian_link::Code::parse_new(&s);
        let _ = duanlian_link::Domain::parse(&s);
        let _ = duanlian_link::parse_rfc3339(&s);
        let _ = duanlian_link::parse_duration(&s);
        let mut buf = duanlian_link::HostBuf::default();
        let _ = duanlian_link::host_key(s.as_bytes(), &mut buf);
        let _ = duanlian_link::host_key(&bytes, &mut buf);
        let _ = duanlian_link::decode_extras(&bytes);
        for mode in [
            duanlian_link::ForwardQuery::Add,
            duanlian_link::ForwardQuery::Override,
        ] {
            let merged = duanlian_link::merge_query(b"https://a.example/p?x=1#f", &bytes, mode);
            prop_assert!(merged.len() <= 26 + bytes.len() + 1);
        }
        Ok(())
    })
    .expect("no panic");
}

/// A snapshot file with damaged bytes is refused or read; never a panic. The payload is also
/// damaged behind an intact header, which opening without the checksum (as large files are
/// opened) then has to survive through its structural checks alone.
#[test]
fn damaged_snapshots_are_refused_never_a_panic() {
    let mut b = duanlian_snapshot::Builder::with_seed(7);
    for l in sample_links() {
        b.push(&l).expect("push");
    }
    let image = b
        .finish()
        .expect("finish")
        .to_bytes(42)
        .expect("bytes")
        .to_vec();
    let dir = scratch("snap");
    let path = dir.join("s.snap");
    let mut r = runner(400);
    r.run(&(edits(), any::<bool>()), |(e, keep_header)| {
        let bytes = mutate(&image, &e, if keep_header { 80 } else { 0 });
        let mut aligned = duanlian_snapshot::AlignedVec::new();
        aligned.extend_from_slice(&bytes);
        if let Ok(s) = duanlian_snapshot::Snapshot::from_bytes(aligned) {
            let _ = s.verify();
        }
        std::fs::write(&path, &bytes).expect("write");
        if let Ok(s) = duanlian_snapshot::Snapshot::open_deferred(&path) {
            // Lookups and iteration on a file whose checksum is not yet verified.
            for l in sample_links().iter().take(10) {
                let _ = s
                    .get(l.domain.as_str(), l.code.as_str())
                    .map(|l| l.to_link());
            }
            let _ = s.iter().take(100).filter_map(|l| l.to_link()).count();
            let _ = s.verify();
        }
        Ok(())
    })
    .expect("no panic");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A journal segment with damaged bytes is replayed, cut, quarantined or refused; never a panic.
#[test]
fn damaged_journals_are_refused_never_a_panic() {
    let base = scratch("journal-base");
    {
        let mut j =
            duanlian_journal::Journal::open(&base, 0, Default::default(), |_| {}).expect("open");
        for chunk in sample_links().chunks(3) {
            let changes: Vec<_> = chunk
                .iter()
                .cloned()
                .map(duanlian_link::Change::Put)
                .collect();
            j.write(&[&changes]).expect("write");
        }
    }
    let (name, segment) = std::fs::read_dir(&base)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| (e.file_name(), std::fs::read(e.path()).expect("read")))
        .find(|(n, _)| n.to_string_lossy().ends_with(".log"))
        .expect("a segment");
    let mut r = runner(300);
    r.run(&edits(), |e| {
        let dir = scratch("journal");
        let journal = dir.join("journal");
        std::fs::create_dir_all(&journal).expect("mkdir");
        std::fs::write(journal.join(&name), mutate(&segment, &e, 0)).expect("write");
        let _ = duanlian_journal::read(&journal, 0, u64::MAX, |_| {});
        let _ = duanlian_journal::check(&journal, 0);
        let _ = duanlian_journal::Journal::open(&journal, 0, Default::default(), |_| {});
        // Whatever the damage, a salvage leaves a journal that opens.
        if duanlian_journal::salvage(&journal, 0, duanlian_journal::SalvageMode::SkipDamaged)
            .is_ok()
        {
            let opened = duanlian_journal::Journal::open(&journal, 0, Default::default(), |_| {});
            prop_assert!(opened.is_ok(), "{:?}", opened.err());
        }
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    })
    .expect("no panic");
    let _ = std::fs::remove_dir_all(&base);
}

fn binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_duanlian"))
}

/// Bulk input with damaged bytes ends in a snapshot or a message naming the file; never a panic
/// (exit code 101) or a hang.
#[test]
fn damaged_bulk_input_gets_a_message_never_a_panic() {
    let csv = b"domain,code,url,redirect,expires_at,expires_in,valid_since,max_visits,expired_url,forward_query\n\
go.example.cn,a1,https://a.example/1,301,2099-01-01,,,3,https://b.example/,true\n\
go.example.cn,a2,https://a.example/2?x=1,,,7d,2020-01-01T00:00:00Z,,,override\n\
s.example.com,a3,https://a.example/3,308,,,,,,false\n";
    let jsonl = b"{\"domain\":\"go.example.cn\",\"code\":\"j1\",\"url\":\"https://a.example/1\",\"max_visits\":2}\n\
{\"domain\":\"go.example.cn\",\"code\":\"j2\",\"url\":\"https://a.example/2\",\"expires_in\":\"1d\",\"forward_query\":\"override\"}\n";
    let dir = scratch("bulk");
    let mut r = runner(24);
    r.run(&(edits(), any::<bool>()), |(e, json)| {
        let (name, base): (&str, &[u8]) = if json {
            ("in.jsonl", jsonl)
        } else {
            ("in.csv", csv)
        };
        let input = dir.join(name);
        std::fs::write(&input, mutate(base, &e, 0)).expect("write");
        let out = binary()
            .args(["snapshot", "build", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(dir.join("out.snap"))
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        prop_assert!(out.status.code().is_some_and(|c| c <= 2), "{stderr}");
        if !out.status.success() {
            prop_assert!(stderr.contains(name), "{stderr}");
        }
        Ok(())
    })
    .expect("no panic");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Any JSON value, at the top or inside a link object: 201, 4xx or a problem, never a 5xx.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,20}".prop_map(Value::String),
        "https?://[a-z.]{1,12}/[a-z?=&]{0,10}".prop_map(Value::String),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z".prop_map(Value::String),
        "[0-9]{1,4}[smhdwy]".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("url".to_owned()),
                    Just("code".to_owned()),
                    Just("domain".to_owned()),
                    Just("redirect".to_owned()),
                    Just("expires_at".to_owned()),
                    Just("expires_in".to_owned()),
                    Just("valid_since".to_owned()),
                    Just("max_visits".to_owned()),
                    Just("expired_url".to_owned()),
                    Just("forward_query".to_owned()),
                    Just("code_length".to_owned()),
                    Just("links".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A running node for the admin API cases, killed on drop.
struct Node(std::process::Child, u16, PathBuf);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.2);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// The status of an admin API call with the fuzz key and a JSON body; `None` without an answer.
fn call(port: u16, method: &str, path: &str, body: &str) -> Option<u16> {
    http::Request::new(method, path)
        .header("Host", "a")
        .bearer("fuzz")
        .json(body)
        .timeout(Duration::from_secs(10))
        .send(port)
        .ok()
        .map(|r| r.status)
}

#[test]
fn any_json_to_the_admin_api_is_answered_never_a_5xx() {
    let dir = scratch("api");
    let (port, admin) = (free_port(), free_port());
    let child = binary()
        .args(["serve", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--domain",
            "go.example.cn",
            "--api-key",
            "fuzz",
            "--threads",
            "1",
        ])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start");
    let node = Node(child, admin, dir);
    let started = std::time::Instant::now();
    while call(node.1, "GET", "/api/v1/domains", "").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never listened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        call(
            node.1,
            "POST",
            "/api/v1/links",
            r#"{"url":"https://a.example/","code":"known"}"#
        ),
        Some(201)
    );
    let mut r = runner(200);
    r.run(&(json_value(), 0usize..3), |(v, target)| {
        let (method, path, body) = match target {
            0 => ("POST", "/api/v1/links", v.to_string()),
            1 => (
                "POST",
                "/api/v1/links/batch",
                serde_json::json!({ "links": v }).to_string(),
            ),
            _ => ("PATCH", "/api/v1/links/go.example.cn/known", v.to_string()),
        };
        let status = call(node.1, method, path, &body);
        prop_assert!(
            status.is_some_and(|s| s < 500),
            "{method} {path} {body}: {status:?}"
        );
        Ok(())
    })
    .expect("no 5xx");
}

/// Request heads through hyper and the redirect service in memory: any bytes get an HTTP answer
/// (or a closed connection), never a 5xx, a panic or a hang.
#[test]
fn any_request_head_is_answered_never_a_5xx_or_a_hang() {
    let mut b = duanlian_snapshot::Builder::with_seed(3);
    for l in sample_links() {
        b.push(&l).expect("push");
    }
    let bytes = b.finish().expect("finish").to_bytes(1).expect("bytes");
    let snap = duanlian_snapshot::Snapshot::from_bytes(bytes).expect("open");
    let index = Arc::new(duanlian_server::Index::new(Arc::new(snap)));
    let redirector = Arc::new(duanlian_server::Redirector::new(index));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let templates: [&[u8]; 4] = [
        b"GET /c1x?utm_source=sms&a=9 HTTP/1.1\r\nHost: go.example.cn\r\nUser-Agent: Mozilla/5.0\r\n\r\n",
        b"HEAD /c3x HTTP/1.1\r\nHost: S.Example.com:80\r\nConnection: close\r\n\r\n",
        b"GET http://go.example.cn/c2x HTTP/1.1\r\nHost: go.example.cn\r\n\r\nGET /c4x HTTP/1.1\r\nHost: go.example.cn\r\n\r\n",
        b"GET /%63%31x HTTP/1.0\r\nHost: go.example.cn.\r\nReferer: https://weibo.com/\r\n\r\n",
    ];
    // hyper closes at the client's end of input without answering, so instead of closing, a
    // final request with `Connection: close` follows whatever was sent; a fuzzed request still
    // waiting for a body it announced just waits, and then must end when the client goes.
    let opts = duanlian_server::Options {
        header_read_timeout: Duration::from_millis(500),
        keep_alive_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let exchange = |input: Vec<u8>| {
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(64 * 1024);
            let (redirector, opts) = (redirector.clone(), opts.clone());
            let conn = tokio::spawn(async move {
                duanlian_server::serve_connection(server, redirector, &opts).await
            });
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = client.write_all(&input).await;
            let _ = client
                .write_all(b"\r\n\r\nGET /c1x HTTP/1.1\r\nHost: go.example.cn\r\nConnection: close\r\n\r\n")
                .await;
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), client.read_to_end(&mut out)).await;
            drop(client);
            tokio::time::timeout(Duration::from_secs(5), conn)
                .await
                .map(|_| out)
        })
    };
    // The harness itself: an unchanged template redirects.
    let plain = exchange(templates[0].to_vec()).expect("ends");
    assert!(
        plain.starts_with(b"HTTP/1.1 302"),
        "{}",
        String::from_utf8_lossy(&plain)
    );
    let mut r = runner(1_000);
    r.run(
        &(
            edits(),
            0usize..4,
            prop::collection::vec(any::<u8>(), 0..64),
            any::<bool>(),
        ),
        |(e, t, raw, use_raw)| {
            let input = if use_raw {
                raw
            } else {
                mutate(templates[t], &e, 0)
            };
            let answer = exchange(input.clone());
            let Ok(out) = answer else {
                return Err(TestCaseError::fail(format!(
                    "hung on {:?}",
                    String::from_utf8_lossy(&input)
                )));
            };
            let text = String::from_utf8_lossy(&out);
            for status in text
                .split("HTTP/1.")
                .skip(1)
                .filter_map(|s| s.get(2..5)?.parse::<u16>().ok())
            {
                prop_assert!(
                    status < 500,
                    "{status} for {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
            Ok(())
        },
    )
    .expect("no 5xx, panic or hang");
}
