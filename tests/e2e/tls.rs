//! HTTPS on the redirect listener through the real binary: `--tls-cert` and `--tls-key`.
use crate::util::{build_snapshot, logged_port, run, s, stderr, wait_until, Server, TempDir};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CSV: &str = "domain,code,url,redirect,expires_at,valid_since\n\
                   go.example.cn,x7Kp2Qa,https://shop.example.com/item/42?utm_source=sms,,,\n";

/// A self-signed certificate for `go.example.cn` (ECDSA P-256) in `dir`: (cert, key, DER).
pub(crate) fn certificate(dir: &TempDir, name: &str) -> (String, String, Vec<u8>) {
    certificate_for(dir, name, "go.example.cn")
}

/// A self-signed certificate for `host` in `dir` as `name.crt` and `name.key`.
fn certificate_for(dir: &TempDir, name: &str, host: &str) -> (String, String, Vec<u8>) {
    let made = rcgen::generate_simple_self_signed(vec![host.to_string()]).expect("certificate");
    let (cert, key) = (
        dir.path(&format!("{name}.crt")),
        dir.path(&format!("{name}.key")),
    );
    std::fs::write(&cert, made.cert.pem()).expect("write cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("write key");
    private(&key);
    (
        s(&cert).to_string(),
        s(&key).to_string(),
        made.cert.der().to_vec(),
    )
}

/// Readable by its owner only, as a private key must be.
pub(crate) fn private(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A TLS client that trusts only `der`, speaking HTTP/1.1 (ALPN) to `port` as `go.example.cn`.
fn connect(port: u16, der: &[u8]) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    connect_as(port, der, "go.example.cn", true)
}

/// The same, checking the certificate for `name`, and naming it to the server only if `sni`.
pub(crate) fn connect_as(
    port: u16,
    der: &[u8],
    name: &str,
    sni: bool,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    connect_with(port, client(der, sni), name)
}

/// A client configuration trusting only `der`; connections made with one resume each other's
/// sessions.
pub(crate) fn client(der: &[u8], sni: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.enable_sni = sni;
    Arc::new(config)
}

pub(crate) fn connect_with(
    port: u16,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = rustls::pki_types::ServerName::try_from(name.to_string()).expect("name");
    let conn = rustls::ClientConnection::new(config, name).expect("client");
    let tcp = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    rustls::StreamOwned::new(conn, tcp)
}

/// Sends one GET over `tls` and reads the response head (the redirects have no body).
pub(crate) fn get(tls: &mut impl ReadWrite, path: &str) -> String {
    write!(tls, "GET {path} HTTP/1.1\r\nHost: go.example.cn\r\n\r\n").expect("write");
    tls.flush().expect("flush");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).expect("read");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

pub(crate) trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// `serve --snapshot SNAP --listen 127.0.0.1:0 ARGS`, which must refuse to start: its error.
fn refused(snap: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec!["serve", "--snapshot", s(snap), "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let o = run(&all);
    assert!(!o.status.success(), "started with {args:?}");
    stderr(&o)
}

fn server(dir: &TempDir, cert: &str, key: &str, extra: &[&str]) -> Server {
    let snap = build_snapshot(dir, CSV);
    let mut args = vec![
        "--snapshot",
        s(&snap),
        "--threads",
        "1",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[test]
fn the_redirect_listener_speaks_https_with_the_given_certificate() {
    let dir = TempDir::new();
    let (cert, key, der) = certificate(&dir, "go");
    let srv = server(&dir, &cert, &key, &[]);
    let mut tls = connect(srv.port, &der);
    let head = get(&mut tls, "/x7Kp2Qa");
    assert!(head.starts_with("HTTP/1.1 302"), "{head}");
    assert!(
        head.contains("location: https://shop.example.com/item/42?utm_source=sms"),
        "{head}"
    );
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    // Keep-alive inside TLS.
    let head = get(&mut tls, "/nope");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // A client speaking plain HTTP to the TLS port is closed, and the node serves on.
    let mut plain = TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    plain
        .write_all(b"GET /x7Kp2Qa HTTP/1.1\r\nHost: go.example.cn\r\n\r\n")
        .expect("write");
    let mut rest = Vec::new();
    let _ = plain.read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("HTTP/1.1 302"),
        "no redirect in the clear"
    );
    let mut again = connect(srv.port, &der);
    assert!(get(&mut again, "/x7Kp2Qa").starts_with("HTTP/1.1 302"));
}

#[test]
fn a_handshake_that_never_comes_is_cut_at_the_header_timeout() {
    let dir = TempDir::new();
    let (cert, key, _) = certificate(&dir, "go");
    let srv = server(&dir, &cert, &key, &["--header-read-timeout", "1"]);
    let mut silent = TcpStream::connect(("127.0.0.1", srv.port)).expect("connect");
    // Half a ClientHello, then nothing.
    silent
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .expect("write");
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let closed = matches!(silent.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "the connection ends");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_key_that_is_not_the_certificates_is_refused_at_start_naming_both_files() {
    let dir = TempDir::new();
    let (cert, _, _) = certificate(&dir, "one");
    let (_, other_key, _) = certificate(&dir, "two");
    let snap = build_snapshot(&dir, CSV);
    let err = refused(&snap, &["--tls-cert", &cert, "--tls-key", &other_key]);
    assert!(
        err.contains(&other_key) && err.contains(&cert) && err.contains("is not the key"),
        "{err}"
    );
    // A certificate file without a certificate; a key file without a key.
    let empty = dir.path("empty.pem");
    std::fs::write(&empty, "not PEM\n").expect("write");
    private(&empty);
    for (c, k, named) in [
        (s(&empty), other_key.as_str(), s(&empty)),
        (&cert, s(&empty), s(&empty)),
    ] {
        let err = refused(&snap, &["--tls-cert", c, "--tls-key", k]);
        assert!(
            err.contains(named)
                && (err.contains("no CERTIFICATE block") || err.contains("no PRIVATE KEY block")),
            "{err}"
        );
    }
    // One without the other.
    let err = refused(&snap, &["--tls-cert", &cert]);
    assert!(err.contains("--tls-key"), "{err}");
}

#[test]
fn a_configuration_file_names_the_certificate_and_key() {
    let dir = TempDir::new();
    let (cert, key, der) = certificate(&dir, "go");
    let snap = build_snapshot(&dir, CSV);
    let config = dir.path("duanlian.toml");
    std::fs::write(
        &config,
        format!(
            "snapshot = {:?}\ntls_cert = {cert:?}\ntls_key = {key:?}\nthreads = 1\n",
            s(&snap)
        ),
    )
    .expect("write config");
    let o = run(&["config", "check", s(&config)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let srv = Server::start(&["--config", s(&config)]);
    let mut tls = connect(srv.port, &der);
    assert!(get(&mut tls, "/x7Kp2Qa").starts_with("HTTP/1.1 302"));
}

#[test]
fn a_certificate_directory_answers_each_name_with_its_own() {
    let dir = TempDir::new();
    let certs = TempDir::new();
    let (_, _, exact) = certificate_for(&certs, "go.example.cn", "go.example.cn");
    let (_, _, wildcard) = certificate_for(&certs, "_.shop.example", "*.shop.example");
    let (_, _, default) = certificate_for(&certs, "default", "go.example.cn");
    let snap = build_snapshot(&dir, CSV);
    let srv = Server::start(&[
        "--snapshot",
        s(&snap),
        "--threads",
        "1",
        "--tls-dir",
        s(&certs.0),
    ]);
    let served = |tls: &rustls::StreamOwned<rustls::ClientConnection, TcpStream>| {
        tls.conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
    };
    let mut tls = connect_as(srv.port, &exact, "go.example.cn", true);
    assert!(get(&mut tls, "/x7Kp2Qa").starts_with("HTTP/1.1 302"));
    assert_eq!(served(&tls), Some(exact.clone()));
    // A name under the wildcard (the request's Host is what picks the link, as ever).
    let mut tls = connect_as(srv.port, &wildcard, "a.shop.example", true);
    assert!(get(&mut tls, "/x7Kp2Qa").starts_with("HTTP/1.1 302"));
    assert_eq!(served(&tls), Some(wildcard.clone()));
    // No name: the default.
    let mut tls = connect_as(srv.port, &default, "go.example.cn", false);
    assert!(get(&mut tls, "/x7Kp2Qa").starts_with("HTTP/1.1 302"));
    assert_eq!(served(&tls), Some(default.clone()));
    // A name with no certificate: refused in the handshake, and the node serves on.
    let mut tls = connect_as(srv.port, &exact, "other.example", true);
    let _ = write!(tls, "GET / HTTP/1.1\r\nHost: other.example\r\n\r\n");
    let mut buf = [0u8; 64];
    assert!(
        !matches!(tls.read(&mut buf), Ok(n) if n > 0),
        "no answer without a certificate for the name"
    );
    let mut tls = connect_as(srv.port, &exact, "go.example.cn", true);
    assert!(get(&mut tls, "/x7Kp2Qa").starts_with("HTTP/1.1 302"));
    assert!(
        crate::util::metric(
            &srv,
            "duanlian_tls_handshakes_total{outcome=\"unknown_name\"}"
        ) >= 1.0
    );

    // A certificate without its key is refused at start, naming the file.
    std::fs::remove_file(certs.path("default.key")).expect("remove key");
    let err = refused(&snap, &["--tls-dir", s(&certs.0)]);
    assert!(
        err.contains("default.crt") && err.contains("no key beside it"),
        "{err}"
    );
}

#[test]
fn a_tls_listener_beside_the_plain_one_leaves_the_plain_one_plain() {
    let dir = TempDir::new();
    let (cert, key, der) = certificate(&dir, "go");
    let srv = server(&dir, &cert, &key, &["--tls-listen", "127.0.0.1:0"]);
    let https = https_port(&srv);
    assert_ne!(https, srv.port);
    // A printed http:// link answers directly, in the clear.
    let plain = srv.request("GET", "go.example.cn", "/x7Kp2Qa");
    assert_eq!(plain.status, 302);
    // And https:// on the other port.
    let mut tls = connect(https, &der);
    assert!(get(&mut tls, "/x7Kp2Qa").starts_with("HTTP/1.1 302"));

    // Without a certificate it is refused.
    let snap = build_snapshot(&dir, CSV);
    let err = refused(&snap, &["--tls-listen", "127.0.0.1:0"]);
    assert!(err.contains("--tls-listen needs"), "{err}");
}

/// The leaf certificate a connection was served.
fn served(tls: &rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> Option<Vec<u8>> {
    tls.conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
}

#[test]
fn certificates_reload_by_the_admin_api_and_sighup_and_a_bad_file_changes_nothing() {
    let dir = TempDir::new();
    let (cert, key, first) = certificate(&dir, "go");
    let srv = server(&dir, &cert, &key, &["--api-key", "k"]);
    let mut open = connect(srv.port, &first);
    assert!(get(&mut open, "/x7Kp2Qa").starts_with("HTTP/1.1 302"));

    // New files in place, then the admin API: new connections get them, the open one goes on.
    let (_, _, second) = certificate(&dir, "go");
    let r = srv.api("POST", "/api/v1/admin/tls/reload", Some("k"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("\"name\":\"default\"") && r.body.contains("seconds_left"),
        "{}",
        r.body
    );
    let mut tls = connect(srv.port, &second);
    assert!(get(&mut tls, "/x7Kp2Qa").starts_with("HTTP/1.1 302"));
    assert_eq!(served(&tls), Some(second.clone()));
    assert!(get(&mut open, "/x7Kp2Qa").starts_with("HTTP/1.1 302"));

    // A bad key: 422 naming the file, and the certificate in use stays.
    std::fs::write(&key, "not a key\n").expect("write");
    let r = srv.api("POST", "/api/v1/admin/tls/reload", Some("k"), None);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body.contains(&key) && r.body.contains("certificates"),
        "{}",
        r.body
    );
    let mut tls = connect(srv.port, &second);
    assert!(get(&mut tls, "/x7Kp2Qa").starts_with("HTTP/1.1 302"));

    // SIGHUP reads them again.
    let (_, _, third) = certificate(&dir, "go");
    let o = std::process::Command::new("kill")
        .args(["-HUP", &srv.pid().to_string()])
        .output()
        .expect("kill");
    assert!(o.status.success());
    assert!(
        wait_until(Duration::from_secs(5), || {
            let mut tls = connect(srv.port, &third);
            tls.conn.complete_io(&mut tls.sock).is_ok() && served(&tls) == Some(third.clone())
        }),
        "SIGHUP did not load the new certificate:\n{}",
        srv.logs()
    );

    let m = |name: &str| crate::util::metric(&srv, name);
    assert_eq!(m("duanlian_tls_reloads_total{outcome=\"error\"}"), 1.0);
    assert_eq!(m("duanlian_tls_reloads_total{outcome=\"ok\"}"), 2.0);
    assert!(m("duanlian_tls_handshakes_total{outcome=\"full\"}") >= 4.0);
    let left = m("duanlian_tls_certificate_expiry_seconds{name=\"default\"}");
    assert!(left > 86_400.0, "{left}");
    // Without TLS there is nothing to reload.
    let plain = Server::start(&[
        "--snapshot",
        s(&build_snapshot(&dir, CSV)),
        "--api-key",
        "k",
    ]);
    let r = plain.api("POST", "/api/v1/admin/tls/reload", Some("k"), None);
    assert_eq!(r.status, 409, "{}", r.body);
}

#[test]
fn an_expired_certificate_and_a_key_others_can_read_are_refused_at_start() {
    let dir = TempDir::new();
    let snap = build_snapshot(&dir, CSV);
    let mut params =
        rcgen::CertificateParams::new(vec!["go.example.cn".to_string()]).expect("params");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let signing = rcgen::KeyPair::generate().expect("key");
    let made = params.self_signed(&signing).expect("certificate");
    let (cert, key) = (dir.path("old.crt"), dir.path("old.key"));
    std::fs::write(&cert, made.pem()).expect("write");
    std::fs::write(&key, signing.serialize_pem()).expect("write");
    private(&key);
    let err = refused(&snap, &["--tls-cert", s(&cert), "--tls-key", s(&key)]);
    assert!(
        err.contains(s(&cert)) && err.contains("expired on 2021-01-01"),
        "{err}"
    );

    let (cert, key, _) = certificate(&dir, "go");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = refused(&snap, &["--tls-cert", &cert, "--tls-key", &key]);
    assert!(
        err.contains(&key) && err.contains("mode 0644") && err.contains("chmod 600"),
        "{err}"
    );
}

#[test]
fn hsts_goes_with_https_answers_of_its_domain_and_sessions_resume() {
    let dir = TempDir::new();
    let (cert, key, der) = certificate(&dir, "go");
    let srv = server(
        &dir,
        &cert,
        &key,
        &[
            "--tls-listen",
            "127.0.0.1:0",
            "--hsts",
            "go.example.cn=365d",
        ],
    );
    let https = https_port(&srv);
    let config = client(&der, true);
    let mut tls = connect_with(https, config.clone(), "go.example.cn");
    let head = get(&mut tls, "/x7Kp2Qa");
    assert!(
        head.starts_with("HTTP/1.1 302")
            && head.contains("strict-transport-security: max-age=31536000"),
        "{head}"
    );
    // Another domain's answer has none.
    write!(tls, "GET /x HTTP/1.1\r\nHost: other.example\r\n\r\n").expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).expect("read");
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    assert!(!String::from_utf8_lossy(&got).contains("strict-transport"));
    // Nor does plain HTTP.
    let plain = srv.request("GET", "go.example.cn", "/x7Kp2Qa");
    assert_eq!(plain.status, 302);
    assert!(plain.header("strict-transport-security").is_none());
    drop(tls);

    // The client comes back with its ticket: no full handshake.
    let mut again = connect_with(https, config, "go.example.cn");
    assert!(get(&mut again, "/x7Kp2Qa").starts_with("HTTP/1.1 302"));
    assert_eq!(
        again.conn.handshake_kind(),
        Some(rustls::HandshakeKind::Resumed)
    );
    assert!(crate::util::metric(&srv, "duanlian_tls_handshakes_total{outcome=\"resumed\"}") >= 1.0);

    // HSTS without HTTPS is refused.
    let err = refused(
        &build_snapshot(&dir, CSV),
        &["--hsts", "go.example.cn=365d"],
    );
    assert!(err.contains("--hsts needs HTTPS"), "{err}");
}

/// The port of `srv`'s HTTPS listener beside the plain one (`--tls-listen 127.0.0.1:0`).
pub(crate) fn https_port(srv: &Server) -> u16 {
    let mut https = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            https = srv
                .logs()
                .lines()
                .find(|l| l.contains("https listener ready"))
                .and_then(logged_port);
            https.is_some()
        }),
        "no HTTPS listener:\n{}",
        srv.logs()
    );
    https.unwrap_or_default()
}

#[test]
#[ignore = "needs openssl on PATH (Debian's openssl; ring makes no RSA keys); run with --ignored"]
fn an_rsa_certificate_serves_tls_1_2_and_1_3_clients() {
    let dir = TempDir::new();
    let (cert, key) = (dir.path("rsa.crt"), dir.path("rsa.key"));
    // ring makes no RSA keys; openssl does (Debian's openssl package, as .ci/run installs).
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args([
            "-subj",
            "/CN=go.example.cn",
            "-addext",
            "subjectAltName=DNS:go.example.cn",
        ])
        // A server's own certificate, not a CA's (openssl's default), or clients refuse it.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-keyout", s(&key), "-out", s(&cert)])
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    private(&key);
    use rustls::pki_types::pem::PemObject as _;
    let der = rustls::pki_types::CertificateDer::from_pem_file(&cert)
        .expect("certificate")
        .to_vec();
    let srv = server(&dir, s(&cert), s(&key), &[]);
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .expect("version")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut tls = connect_with(srv.port, Arc::new(config), "go.example.cn");
        assert!(get(&mut tls, "/x7Kp2Qa").starts_with("HTTP/1.1 302"));
        assert_eq!(tls.conn.protocol_version(), Some(version.version));
    }
}
