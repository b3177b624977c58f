//! Running the binary, talking HTTP to it (through the shared client in
//! `tests/support/http.rs`, which sends anything), and waiting for things to happen.
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[path = "../support/http.rs"]
pub(crate) mod http;

pub(crate) use http::Response;

/// How long a test waits for something that should happen soon: generous, since a passing
/// wait ends as soon as its condition holds and only a failing one waits this long.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `f` (every 20 ms) until it returns something, for at most `limit`.
pub(crate) fn poll<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `condition` (every 20 ms) until it holds, for at most `limit`; whether it held. Use
/// as `assert!(wait_until(..), "what never happened: {state}")`, so the message shows the
/// state as it was when the wait gave up.
pub(crate) fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    poll(limit, || condition().then_some(())).is_some()
}

/// A desktop browser's User-Agent: requests without one are bots, which count no visits.
pub(crate) const BROWSER: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0";

pub(crate) fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_duanlian"))
}

/// Runs the binary to completion.
pub(crate) fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run duanlian")
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A scratch directory, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "duanlian-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).expect("mkdir");
        TempDir(p)
    }

    pub(crate) fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write");
        p
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `duanlian snapshot build --input INPUT --output OUTPUT EXTRA...`.
pub(crate) fn snapshot_build(input: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "snapshot",
        "build",
        "--input",
        s(input),
        "--output",
        s(output),
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// Builds `NAME.snap` from CSV text with the real binary.
pub(crate) fn build_snapshot_named(dir: &TempDir, name: &str, csv: &str) -> PathBuf {
    let input = dir.file(&format!("{name}.csv"), csv.as_bytes());
    let output = dir.path(&format!("{name}.snap"));
    let o = snapshot_build(&input, &output, &[]);
    assert!(o.status.success(), "build failed: {}", stderr(&o));
    output
}

/// Builds `links.snap` from CSV text with the real binary.
pub(crate) fn build_snapshot(dir: &TempDir, csv: &str) -> PathBuf {
    build_snapshot_named(dir, "links", csv)
}

/// A running `duanlian serve` on free ports; killed on drop.
pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
    pub(crate) admin_port: u16,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The port in a log line's listen address (`127.0.0.1:PORT`, in text or JSON logs).
pub(crate) fn logged_port(line: &str) -> Option<u16> {
    let at = line.find("127.0.0.1:")?;
    let rest = &line[at + "127.0.0.1:".len()..];
    rest.chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .ok()
}

impl Server {
    /// Starts `duanlian serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 ARGS...` and waits
    /// until both listeners are up.
    pub(crate) fn start(args: &[&str]) -> Server {
        Server::start_in(None, args)
    }

    /// A writable node on data directory `data`, with link domains go.example.cn (the default)
    /// and s.example.com, API key `key`, one redirect thread, and `extra` flags.
    pub(crate) fn data_node(data: &Path, key: &str, extra: &[&str]) -> Server {
        let mut args = vec![
            "--data-dir",
            s(data),
            "--domain",
            "go.example.cn",
            "--domain",
            "s.example.com",
            "--api-key",
            key,
            "--threads",
            "1",
        ];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    /// The same, with the server's working directory set to `cwd`.
    pub(crate) fn start_in(cwd: Option<&Path>, args: &[&str]) -> Server {
        Server::launch(cwd, &[], args)
    }

    /// The same, with extra environment variables.
    pub(crate) fn start_env(env: &[(&str, &str)], args: &[&str]) -> Server {
        Server::launch(None, env, args)
    }

    /// Stops the server (SIGKILL) and waits for it.
    pub(crate) fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The same, started with a soft limit of `files` open files (the hard limit as it is).
    pub(crate) fn start_with_file_limit(files: u32, args: &[&str]) -> Server {
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            &format!("ulimit -Sn {files} && exec \"$0\" \"$@\""),
            env!("CARGO_BIN_EXE_duanlian"),
        ]);
        Server::launch_cmd(cmd, None, &[], args)
    }

    fn launch(cwd: Option<&Path>, env: &[(&str, &str)], args: &[&str]) -> Server {
        Server::launch_cmd(bin(), cwd, env, args)
    }

    fn launch_cmd(
        mut cmd: Command,
        cwd: Option<&Path>,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Server {
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        cmd.env_remove("DUANLIAN_API_KEYS");
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Any free port, unless the test needs a known one (a CA validating on it).
        if !args.contains(&"--listen") {
            cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        } else {
            cmd.arg("serve");
        }
        let mut child = cmd
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(args)
            .env("DUANLIAN_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn duanlian serve");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (mut port, mut admin_port) = (None, None);
        while port.is_none() || admin_port.is_none() {
            let line = match lines.next() {
                Some(Ok(l)) => l,
                _ => panic!(
                    "server exited before listening: {:?}\n{}",
                    child.wait(),
                    logs.lock().map(|l| l.join("\n")).unwrap_or_default()
                ),
            };
            if line.contains("admin listener ready") {
                admin_port = logged_port(&line);
            } else if line.contains("redirect listener ready") {
                port = logged_port(&line);
            }
            if let Ok(mut l) = logs.lock() {
                l.push(line);
            }
        }
        // Keep draining stderr so the server never blocks on a full pipe.
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
            }
        });
        Server {
            child,
            port: port.unwrap_or_default(),
            admin_port: admin_port.unwrap_or_default(),
            logs,
        }
    }

    /// Everything the server logged so far.
    pub(crate) fn logs(&self) -> String {
        self.logs.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the server to exit; returns whether it exited 0.
    pub(crate) fn terminate(mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Sends SIGTERM without waiting.
    pub(crate) fn signal_term(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Waits for the process to exit (up to `limit`); its exit code, if it exited.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        poll(limit, || self.child.try_wait().ok().flatten())?.code()
    }

    /// Kills the server with SIGKILL and waits for it.
    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A link as the admin API reads it back (it must exist).
    pub(crate) fn link(&self, key: &str, domain: &str, code: &str) -> serde_json::Value {
        let r = self.api(
            "GET",
            &format!("/api/v1/links/{domain}/{code}"),
            Some(key),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str(&r.body).expect("link JSON")
    }

    /// An admin API call with the given key and JSON body.
    pub(crate) fn api(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&str>,
    ) -> Response {
        let mut req = http::Request::new(method, path).header("Host", "admin");
        if let Some(k) = key {
            req = req.bearer(k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send(self.admin_port).expect("admin API call")
    }

    /// A raw connection to the redirect listener; reads wait at most 10 s.
    pub(crate) fn connect(&self) -> TcpStream {
        http::connect(self.port, Some(Duration::from_secs(10))).expect("connect")
    }

    /// Sends raw bytes on a fresh connection and reads until the server closes it.
    pub(crate) fn raw(&self, request: &[u8]) -> String {
        http::exchange_once(self.port, request, Some(Duration::from_secs(10))).expect("raw request")
    }

    /// `METHOD path` with a Host header, from a browser (bots count no visits), on a connection
    /// closed after the answer.
    pub(crate) fn request(&self, method: &str, host: &str, path: &str) -> Response {
        self.request_with(method, host, path, &[("User-Agent", BROWSER)])
    }

    /// The same, with exactly the `headers` given besides Host.
    pub(crate) fn request_with(
        &self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut req = http::Request::new(method, path)
            .header("Host", host)
            .timeout(Duration::from_secs(10));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send(self.port)
            .unwrap_or_else(|e| panic!("{method} {host}{path}: {e}"))
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the metric line `NAME VALUE` on `srv`'s `/metrics` (labels included in NAME),
/// or 0 when there is none.
pub(crate) fn metric(srv: &Server, name: &str) -> f64 {
    let body = srv.api("GET", "/metrics", None, None).body;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// One keep-alive connection that sends requests and reads exactly one response each.
pub(crate) struct KeepAlive(http::Conn);

impl KeepAlive {
    /// Connects to `127.0.0.1:port`; reads wait at most 10 s.
    pub(crate) fn connect(port: u16) -> std::io::Result<KeepAlive> {
        http::Conn::open_with(port, Some(Duration::from_secs(10))).map(KeepAlive)
    }

    /// `GET path` from a browser.
    pub(crate) fn get(&mut self, host: &str, path: &str) -> std::io::Result<Response> {
        self.0.send(
            &http::Request::get(path)
                .header("Host", host)
                .header("User-Agent", BROWSER),
        )
    }

    /// `POST path` to the admin API with key `key` and a JSON body.
    pub(crate) fn post_json(
        &mut self,
        path: &str,
        key: &str,
        body: &str,
    ) -> std::io::Result<Response> {
        self.0.send(
            &http::Request::new("POST", path)
                .header("Host", "admin")
                .bearer(key)
                .json(body),
        )
    }
}

/// A small random source for tests that need unpredictability (kill moments), seeded by std.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// A port no other caller in this process got: the kernel may hand the same free port out twice
/// once the probe socket is closed (a three-server NATS cluster once got two servers on one
/// port and never formed).
pub(crate) fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Whether something accepts connections on 127.0.0.1:`port` within 10 s (a server the test
/// started).
pub(crate) fn listening(port: u16) -> bool {
    wait_until(Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
}
