//! In-process costs of the redirect path: snapshot lookups at 1M links, overlay lookups, the
//! `respond` function, and one whole HTTP/1.1 exchange through hyper over an in-memory pipe.
//!
//! `cargo bench --bench redirect` (set `DUANLIAN_BENCH_LINKS` to change the 1M default).
// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]
use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use duanlian_index::{Change, Index};
use duanlian_link::{Code, Domain, Link, Redirect, Validity};
use duanlian_server::Options;
use duanlian_snapshot::{Builder, Snapshot};
use hyper::header::HeaderValue;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DOMAINS: [&str; 2] = ["s.example.com", "go.example.cn"];

/// A small deterministic generator (SplitMix64), so every run looks up the same keys.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn code(&mut self) -> String {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        (0..7)
            .map(|_| ALPHABET[(self.next() % ALPHABET.len() as u64) as usize] as char)
            .collect()
    }
}

fn links(n: usize, seed: u64) -> Vec<Link> {
    let mut rng = Rng(seed);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let domain = DOMAINS[(rng.next() % 2) as usize];
        let code = rng.code();
        if !seen.insert((domain, code.clone())) {
            continue;
        }
        let url = format!(
            "https://shop.example.com/item/{}?utm_source=sms&utm_campaign=c{}",
            rng.next() % 1_000_000_000,
            rng.next() % 1000
        );
        out.push(Link {
            domain: Domain::parse(domain).expect("domain"),
            code: Code::parse(&code).expect("code"),
            url: duanlian_link::parse_url(&url).expect("url"),
            redirect: Redirect::Found,
            validity: Validity::ALWAYS,
            created_at: 1_700_000_000,
            forward_query: duanlian_link::ForwardQuery::Add,
            expired_url: None,
        });
    }
    out
}

fn snapshot_bytes(links: &[Link]) -> duanlian_snapshot::AlignedVec {
    let mut b = Builder::with_seed(42);
    for l in links {
        b.push(l).expect("push");
    }
    b.finish().expect("finish").to_bytes(0).expect("bytes")
}

fn snapshot(links: &[Link]) -> Snapshot {
    Snapshot::from_bytes(snapshot_bytes(links)).expect("open")
}

fn n_links() -> usize {
    std::env::var("DUANLIAN_BENCH_LINKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// How many distinct keys the lookup benches cycle through (`DUANLIAN_BENCH_KEYS`, 4096): few
/// keep every line they touch in the caches and measure the lookup's own work, many measure
/// its trips to memory.
fn n_keys() -> usize {
    std::env::var("DUANLIAN_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096)
}

/// Keys to look up, spread over the whole table so caches behave as under real traffic.
fn sample(links: &[Link], k: usize) -> Vec<(String, String)> {
    let step = (links.len() / k).max(1);
    links
        .iter()
        .step_by(step)
        .map(|l| (l.domain.to_string(), l.code.to_string()))
        .collect()
}

/// `get_hit`, `get_miss` and `get_hit_location` on `snap`, cycling through the keys.
fn gets(
    c: &mut Criterion,
    group: &str,
    snap: &Snapshot,
    hits: &[(String, String)],
    misses: &[(String, String)],
) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    for (name, keys) in [("get_hit", hits), ("get_miss", misses)] {
        g.bench_function(BenchmarkId::new(name, snap.len()), |b| {
            let mut i = 0;
            b.iter(|| {
                let (d, c) = &keys[i % keys.len()];
                i += 1;
                black_box(snap.get(d, c).map(|l| l.url.len()))
            })
        });
    }
    // A hit as the server uses it: the URL becomes the `Location` value, validated byte by
    // byte, so its cache lines are read too.
    g.bench_function(BenchmarkId::new("get_hit_location", snap.len()), |b| {
        let mut i = 0;
        b.iter(|| {
            let (d, c) = &hits[i % hits.len()];
            i += 1;
            black_box(
                snap.get(d, c)
                    .map(|l| HeaderValue::from_maybe_shared(l.url_bytes()).is_ok()),
            )
        })
    });
    g.finish();
}

fn lookups(c: &mut Criterion) {
    let n = n_links();
    let all = links(n, 1);
    let snap = snapshot(&all);
    let hits = sample(&all, n_keys());
    let misses: Vec<(String, String)> = links(n_keys(), 2)
        .into_iter()
        .map(|l| (l.domain.to_string(), format!("{}-", l.code)))
        .collect();

    gets(c, "snapshot", &snap, &hits, &misses);

    // The same table copied into transparent huge pages (`serve --huge-pages`): the lookups
    // above, without a TLB miss per cache line once the table outgrows the TLB's reach.
    let path = std::env::temp_dir().join(format!("duanlian-bench-{}.snap", std::process::id()));
    duanlian_snapshot::write_atomic(&path, &snapshot_bytes(&all)).expect("write");
    let huge = Snapshot::open_huge_pages(&path).expect("open");
    let _ = std::fs::remove_file(&path);
    gets(c, "snapshot_huge_pages", &huge, &hits, &misses);
    drop(huge);

    // The overlay on its own: links put through the change feed, none in the snapshot
    // (100k, or DUANLIAN_BENCH_OVERLAY_LINKS).
    let overlay = Index::empty();
    let fresh = links(
        std::env::var("DUANLIAN_BENCH_OVERLAY_LINKS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000),
        3,
    );
    for (seq, l) in (1..).zip(&fresh) {
        overlay.apply(seq, Change::Put(l.clone()));
    }
    let o_hits = sample(&fresh, 4096);
    let mut g = c.benchmark_group("overlay");
    g.throughput(Throughput::Elements(1));
    for (name, keys) in [("resolve_hit", &o_hits), ("resolve_miss", &misses)] {
        g.bench_function(BenchmarkId::new(name, fresh.len()), |b| {
            let mut i = 0;
            b.iter(|| {
                let (d, c) = &keys[i % keys.len()];
                i += 1;
                black_box(overlay.resolve(d, c, |l| l.map(|l| l.url.len())))
            })
        });
    }
    g.finish();

    // The full index path as the server uses it: empty overlay, so straight to the snapshot.
    let index = Index::new(Arc::new(snap));
    let mut g = c.benchmark_group("index");
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("resolve_hit", n), |b| {
        let mut i = 0;
        b.iter(|| {
            let (d, c) = &hits[i % hits.len()];
            i += 1;
            black_box(index.resolve(d, c, |l| l.map(|l| l.url.len())))
        })
    });
    g.finish();
}

fn redirect(c: &mut Criterion) {
    let all = links(100_000, 1);
    let index = Arc::new(Index::new(Arc::new(snapshot(&all))));
    let redirector = Arc::new(duanlian_server::Redirector::new(index));
    let keys = sample(&all, 1024);
    let requests: Vec<Bytes> = keys
        .iter()
        .map(|(d, c)| Bytes::from(format!("GET /{c} HTTP/1.1\r\nHost: {d}\r\n\r\n")))
        .collect();

    let mut g = c.benchmark_group("redirect");
    g.throughput(Throughput::Elements(1));

    let reqs: Vec<hyper::Request<()>> = keys
        .iter()
        .map(|(d, c)| {
            hyper::Request::get(format!("/{c}"))
                .header("host", d.as_str())
                .body(())
                .expect("request")
        })
        .collect();
    g.bench_function("respond", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            black_box(duanlian_server::respond(&redirector, &reqs[i % reqs.len()]))
        })
    });

    // Request bytes in, response bytes out, through hyper on one keep-alive connection; once
    // without and once with metrics, whose recording must not show.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let with_metrics = Arc::new(
        duanlian_server::Redirector::new(redirector.index().clone())
            .with_metrics(Arc::new(duanlian_server::Metrics::new())),
    );
    for (name, redirector) in [
        ("in_process_http1", &redirector),
        ("in_process_http1_metrics", &with_metrics),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| rt.block_on(exchange(redirector.clone(), &requests, iters)))
        });
    }
    g.finish();
}

/// `iters` request/response exchanges on one in-memory connection; the time they took.
async fn exchange(
    redirector: Arc<duanlian_server::Redirector>,
    requests: &[Bytes],
    iters: u64,
) -> std::time::Duration {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let conn = tokio::spawn(async move {
        duanlian_server::serve_connection(server, redirector, &Options::default()).await
    });
    let mut buf = vec![0u8; 64 * 1024];
    let start = std::time::Instant::now();
    for i in 0..iters as usize {
        client
            .write_all(&requests[i % requests.len()])
            .await
            .expect("write");
        // Every answer is a 302 with an empty body: read up to the end of the head.
        let mut got = 0;
        loop {
            got += client.read(&mut buf[got..]).await.expect("read");
            if buf[..got].ends_with(b"\r\n\r\n") {
                break;
            }
        }
        debug_assert!(buf.starts_with(b"HTTP/1.1 302"));
    }
    let took = start.elapsed();
    drop(client);
    let _ = conn.await;
    took
}

criterion_group!(benches, lookups, redirect);
criterion_main!(benches);
