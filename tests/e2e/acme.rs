//! Automatic certificates through the real binary against a real ACME server: Debian's
//! `pebble` (and `pebble-challtestsrv` as its DNS, answering 127.0.0.1 for every name).
//!
//! `#[ignore]`d without pebble (listed as ignored, with the reason, by `cargo test`); `.ci/run`
//! installs Debian's `pebble` package and runs them with `--ignored`. Run without it, they fail
//! saying what is missing.
use crate::tls::{connect_as, https_port};
use crate::util::{free_port, listening, s, wait_until, Server, TempDir};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// pebble and its DNS server, killed when dropped.
pub(crate) struct Pebble {
    dir: TempDir,
    port: u16,
    management: u16,
    /// pebble's own HTTPS certificate (PEM file, and DER).
    pub(crate) ca_file: String,
    ca: Vec<u8>,
    children: Vec<Child>,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn program(name: &str) -> String {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = format!("{dir}/{name}");
        if Path::new(&p).exists() {
            return p;
        }
    }
    panic!("{name} not found: install Debian's pebble package (apt-get install pebble), as .ci/run does");
}

impl Pebble {
    /// The flags that make a node order its certificates here and serve them on a port of its
    /// own.
    pub(crate) fn flags(&self) -> Vec<String> {
        [
            "--tls-listen",
            "127.0.0.1:0",
            "--acme-directory",
            &self.directory(),
            "--acme-ca-cert",
            &self.ca_file,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Starts pebble validating HTTP-01 on `http_port`, issuing certificates valid for
    /// `validity` seconds.
    pub(crate) fn start(http_port: u16, validity: u64) -> Pebble {
        let dir = TempDir::new();
        let made = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("certificate");
        let (cert, key) = (dir.path("pebble.crt"), dir.path("pebble.key"));
        std::fs::write(&cert, made.cert.pem()).expect("write");
        std::fs::write(&key, made.signing_key.serialize_pem()).expect("write");
        let (port, management, dns) = (free_port(), free_port(), free_port());
        let config = dir.path("pebble.json");
        std::fs::write(
            &config,
            serde_json::json!({"pebble": {
                "listenAddress": format!("127.0.0.1:{port}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": s(&cert),
                "privateKey": s(&key),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity,
            }})
            .to_string(),
        )
        .expect("write config");
        let log =
            |name: &str| Stdio::from(std::fs::File::create(dir.path(name)).expect("log file"));
        let dns_server = Command::new(program("pebble-challtestsrv"))
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
                "-management",
                &format!("127.0.0.1:{}", free_port()),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("start pebble-challtestsrv");
        let pebble = Command::new(program("pebble"))
            .args([
                "-config",
                s(&config),
                "-dnsserver",
                &format!("127.0.0.1:{dns}"),
            ])
            // No random sleeps before validating, and no nonces refused at random.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("start pebble");
        let p = Pebble {
            ca_file: s(&cert).to_string(),
            ca: made.cert.der().to_vec(),
            dir,
            port,
            management,
            children: vec![dns_server, pebble],
        };
        assert!(listening(p.port), "pebble did not start:\n{}", p.logs());
        p
    }

    pub(crate) fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    pub(crate) fn logs(&self) -> String {
        ["pebble.log", "pebble.err", "challtestsrv.err"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The root pebble issues under (made anew at each start), from its management API.
    pub(crate) fn root(&self) -> Vec<u8> {
        let mut tls = connect_as(self.management, &self.ca, "localhost", true);
        tls.write_all(b"GET /roots/0 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut pem = Vec::new();
        let mut buf = [0u8; 4096];
        while !pem.windows(25).any(|w| w == b"-----END CERTIFICATE-----") {
            match tls.read(&mut buf) {
                Ok(n) if n > 0 => pem.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        use rustls::pki_types::pem::PemObject as _;
        rustls::pki_types::CertificateDer::from_pem_slice(&pem)
            .expect("root PEM")
            .to_vec()
    }
}

/// The leaf served to `name` on `port`, verified against `root`; none if the handshake fails.
pub(crate) fn leaf(port: u16, root: &[u8], name: &str) -> Option<Vec<u8>> {
    let mut tls = connect_as(port, root, name, true);
    tls.conn.complete_io(&mut tls.sock).ok()?;
    tls.conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
}

fn node(data: &Path, http: u16, pebble: &Pebble) -> Server {
    let listen = format!("127.0.0.1:{http}");
    let mut flags = vec!["--listen".to_owned(), listen];
    flags.extend(pebble.flags());
    flags.extend(["--acme-contact", "mailto:ops@example.cn"].map(str::to_owned));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Server::data_node(data, "k", &flags)
}

fn issued(srv: &Server, times: usize) -> bool {
    srv.logs().matches("ACME certificate issued").count() >= times
}

#[test]
#[ignore = "needs Debian's pebble (apt-get install pebble); run with --ignored"]
fn certificates_are_ordered_kept_and_renewed_from_an_acme_server() {
    let http = free_port();
    // Certificates valid for 30 s: renewed when a third of that is left.
    let pebble = Pebble::start(http, 30);
    let data = TempDir::new();
    let srv = node(&data.0, http, &pebble);
    assert!(
        wait_until(Duration::from_secs(30), || issued(&srv, 2)),
        "no certificates:\n{}\n{}",
        srv.logs(),
        pebble.logs()
    );
    let https = https_port(&srv);
    let root = pebble.root();
    let first = leaf(https, &root, "go.example.cn").expect("a certificate for go.example.cn");
    assert!(leaf(https, &root, "s.example.com").is_some());

    // Kept in the data directory, the keys for their owner only.
    use std::os::unix::fs::PermissionsExt as _;
    for f in ["acme/account.json", "acme/certs/go.example.cn.key"] {
        let mode = std::fs::metadata(data.path(f))
            .expect(f)
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let r = srv.api("GET", "/api/v1/admin/tls", Some("k"), None);
    assert!(r.body.contains("\"name\":\"go.example.cn\""), "{}", r.body);
    // The challenge path is never a code, and answers nothing once the order is done.
    let r = srv.request(
        "GET",
        "go.example.cn",
        "/.well-known/acme-challenge/nothing",
    );
    assert_eq!(r.status, 404);

    // Renewed before it ends, and the new one served without a restart.
    assert!(
        wait_until(Duration::from_secs(40), || {
            issued(&srv, 3) && leaf(https, &root, "go.example.cn") != Some(first.clone())
        }),
        "not renewed:\n{}",
        srv.logs()
    );
    let left = crate::util::metric(
        &srv,
        "duanlian_tls_certificate_expiry_seconds{name=\"go.example.cn\"}",
    );
    assert!(left > 0.0, "{left}");
    drop(srv);

    // A restart serves what is on disk with the same account (pebble issues 5-year
    // certificates by default; these are short, so a renewal may come, but no new account).
    let again = node(&data.0, http, &pebble);
    let https = https_port(&again);
    assert!(leaf(https, &root, "go.example.cn").is_some());
    assert!(
        !again.logs().contains("ACME account created"),
        "{}",
        again.logs()
    );
}

#[test]
fn acme_is_refused_without_what_it_needs() {
    let data = TempDir::new();
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "--data-dir",
                s(&data.0),
                "--domain",
                "go.example.cn",
                "--acme-directory",
                "https://ca.example/dir",
            ],
            "--acme-directory needs --tls-listen",
        ),
        (
            &[
                "--data-dir",
                s(&data.0),
                "--tls-listen",
                "127.0.0.1:0",
                "--acme-directory",
                "https://ca.example/dir",
            ],
            "--acme-directory needs the link domains",
        ),
        (
            &[
                "--data-dir",
                s(&data.0),
                "--domain",
                "go.example.cn",
                "--tls-listen",
                "127.0.0.1:0",
                "--acme-directory",
                "https://ca.example/dir",
                "--acme-contact",
                "ops@example.cn",
            ],
            "expected a mailto: URI",
        ),
        (
            &[
                "--data-dir",
                s(&data.0),
                "--acme-contact",
                "mailto:ops@example.cn",
            ],
            "need --acme-directory",
        ),
    ];
    for (args, says) in cases {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let o = crate::util::run(&all);
        assert!(!o.status.success(), "started with {args:?}");
        let err = crate::util::stderr(&o);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
