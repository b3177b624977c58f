//! Durable creates per second: concurrent clients POST links to a real `duanlian serve` with a
//! data directory on disk; every `201` counted here was fsynced before it was sent.
//!
//! `cargo bench --bench creates -- [--conns N] [--seconds S] [--batch]`
//! (defaults: 64 connections, 10 s). Prints creates/s and latency percentiles.
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "../tests/support/http.rs"]
mod http;

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery
    }
    let conns = arg("--conns", 64) as usize;
    let seconds = arg("--seconds", 10);
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("creates-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_duanlian"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--threads",
            "1",
        ])
        .args(["--domain", "go.example.cn", "--api-key", "bench"])
        .arg("--data-dir")
        .arg(&dir)
        .env("DUANLIAN_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start duanlian serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let admin_port: u16 = loop {
        let line = lines.next().expect("server exited").expect("log line");
        if line.contains("admin listener ready") {
            let at = line.find("127.0.0.1:").expect("addr") + "127.0.0.1:".len();
            break line[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .expect("port");
        }
    };
    std::thread::spawn(move || for _ in lines {});

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..conns)
        .map(|c| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut conn = http::Conn::open_with(admin_port, None).expect("connect");
                let mut lat = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let body = format!(
                        r#"{{"url":"https://shop.example.com/item/{c}/{i}?utm_source=sms"}}"#
                    );
                    let req = http::Request::new("POST", "/api/v1/links")
                        .header("Host", "a")
                        .bearer("bench")
                        .json(&body)
                        .to_bytes();
                    let t = Instant::now();
                    let r = conn.exchange(&req).expect("create");
                    assert_eq!(r.status, 201, "create failed: {}", r.body);
                    lat.push(t.elapsed());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut lat: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("worker"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "durable creates: {} in {elapsed:.1}s = {:.0}/s with {conns} connections; latency p50 {:?} p99 {:?} max {:?}",
        lat.len(),
        lat.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        lat.last().copied().unwrap_or_default()
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
