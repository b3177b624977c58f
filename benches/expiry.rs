//! Expiry costs: the wheel at 10M scheduled entries, the validity check on the redirect path,
//! and redirect latency while a million links are purged at once.
//!
//! `cargo bench --bench expiry`
// criterion's macros generate undocumented public functions.
#![allow(missing_docs)]
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use duanlian_index::{Change, Index, Wheel};
use duanlian_link::{now_secs, parse_url, Code, Domain, Link, Redirect, Validity};
use duanlian_server::{respond, Redirector};
use hyper::header::HOST;
use hyper::Request;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const N: u64 = 10_000_000;
static REPORT: std::sync::Once = std::sync::Once::new();
const T0: u64 = 1_800_000_000;

/// Deadlines spread over a year, as validity periods of 1 to 365 days would be.
fn deadline(i: u64) -> u64 {
    T0 + (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20) % (365 * 86_400)
}

fn wheel(c: &mut Criterion) {
    let mut g = c.benchmark_group("wheel");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    g.bench_function("insert_10m", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut w = Wheel::with_capacity(T0, N as usize);
                let t = Instant::now();
                for i in 0..N {
                    black_box(w.insert(i, deadline(i)));
                }
                total += t.elapsed();
                REPORT.call_once(|| {
                    eprintln!(
                        "wheel: {} entries, {} bytes, {:.1} bytes per entry",
                        w.len(),
                        w.memory_bytes(),
                        w.memory_bytes() as f64 / w.len() as f64
                    )
                });
            }
            total
        })
    });
    g.bench_function("advance_10m_over_a_year", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut w = Wheel::with_capacity(T0, N as usize);
                for i in 0..N {
                    w.insert(i, deadline(i));
                }
                let mut out = Vec::with_capacity(1 << 20);
                let t = Instant::now();
                // One advance a minute of simulated time, as the reaper does once a second.
                let mut now = T0;
                let mut fired = 0;
                while now < T0 + 366 * 86_400 {
                    now += 60;
                    out.clear();
                    w.advance(now, &mut out);
                    fired += out.len();
                }
                total += t.elapsed();
                assert_eq!(fired as u64, N);
            }
            total
        })
    });
    g.finish();
}

fn link(code: &str, validity: Validity) -> Link {
    Link {
        domain: Domain::parse("go.example.cn").expect("domain"),
        code: Code::parse(code).expect("code"),
        url: parse_url(&format!(
            "https://shop.example.com/item/{code}?utm_source=sms"
        ))
        .expect("url"),
        redirect: Redirect::Found,
        validity,
        created_at: 0,
        forward_query: duanlian_link::ForwardQuery::Add,
        expired_url: None,
    }
}

fn request(code: &str) -> Request<()> {
    Request::get(format!("/{code}"))
        .header(HOST, "go.example.cn")
        .body(())
        .expect("request")
}

fn expiry_check(c: &mut Criterion) {
    let index = Arc::new(Index::empty());
    let now = now_secs();
    index.apply(1, Change::Put(link("permanent", Validity::ALWAYS)));
    let window = Validity::new(Some(now - 86_400), Some(now + 30 * 86_400)).expect("window");
    index.apply(2, Change::Put(link("bounded", window)));
    let r = Arc::new(Redirector::new(index));
    let (permanent, bounded) = (request("permanent"), request("bounded"));
    let mut g = c.benchmark_group("expiry_check");
    g.bench_function("respond_permanent", |b| {
        b.iter(|| black_box(respond(&r, &permanent)))
    });
    g.bench_function("respond_with_validity_window", |b| {
        b.iter(|| black_box(respond(&r, &bounded)))
    });
    // The same two through a whole HTTP/1.1 exchange, which is what a redirect costs.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for code in ["permanent", "bounded"] {
        let raw = format!("GET /{code} HTTP/1.1\r\nHost: go.example.cn\r\n\r\n");
        g.bench_function(format!("http1_{code}"), |b| {
            b.iter_custom(|iters| rt.block_on(exchange(r.clone(), raw.as_bytes(), iters)))
        });
    }
    g.finish();
}

/// `iters` requests on one keep-alive connection through hyper over an in-memory pipe.
async fn exchange(r: Arc<Redirector>, request: &[u8], iters: u64) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let conn = tokio::spawn(async move {
        duanlian_server::serve_connection(server, r, &duanlian_server::Options::default()).await
    });
    let mut buf = vec![0u8; 16 * 1024];
    let start = Instant::now();
    for _ in 0..iters {
        client.write_all(request).await.expect("write");
        let mut got = 0;
        loop {
            got += client.read(&mut buf[got..]).await.expect("read");
            if buf[..got].ends_with(b"\r\n\r\n") {
                break;
            }
        }
    }
    let took = start.elapsed();
    drop(client);
    let _ = conn.await;
    took
}

fn mass_expiry(c: &mut Criterion) {
    const EXPIRING: u64 = 1_000_000;
    let mut g = c.benchmark_group("mass_expiry");
    g.sample_size(10);
    // Redirects keep running for as long as the purge takes; the reported time is the mean
    // per redirect during the purge, and the slowest one is printed.
    g.bench_function("respond_while_1m_links_are_purged", |b| {
        b.iter_custom(|iters| {
            let index = Arc::new(Index::empty());
            index.set_retention(0);
            let now = now_secs();
            index.apply(1, Change::Put(link("stays", Validity::ALWAYS)));
            // A million links that all expired in the same second.
            for i in 0..EXPIRING {
                let v = Validity::new(None, Some(now - 1)).expect("window");
                index.apply(i + 2, Change::Put(link(&format!("x{i}"), v)));
            }
            let r = Redirector::new(index.clone());
            let req = request("stays");
            let done = Arc::new(AtomicBool::new(false));
            let reaper = {
                let (index, done) = (index.clone(), done.clone());
                std::thread::spawn(move || {
                    let t = Instant::now();
                    let reaped = index.reap(now);
                    done.store(true, Ordering::Release);
                    (reaped.overlay, t.elapsed())
                })
            };
            let mut lat = Vec::with_capacity(1 << 22);
            let t = Instant::now();
            while !done.load(Ordering::Acquire) || (lat.len() as u64) < iters {
                let one = Instant::now();
                black_box(respond(&r, &req));
                lat.push(one.elapsed());
            }
            let total = t.elapsed();
            let (purged, took) = reaper.join().expect("reaper");
            lat.sort_unstable();
            let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
            eprintln!(
                "mass expiry: {purged} purged in {took:?}; {} redirects meanwhile: p50 {:?} p99 {:?} p99.99 {:?} max {:?}",
                lat.len(),
                pct(0.5),
                pct(0.99),
                pct(0.9999),
                lat[lat.len() - 1]
            );
            total.mul_f64(iters as f64 / lat.len() as f64)
        })
    });
    g.finish();
}

criterion_group!(benches, wheel, expiry_check, mass_expiry);
criterion_main!(benches);
