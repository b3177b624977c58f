//! The HTTPS client that talks to the CA: one HTTP/1.1 connection per request (an order is a
//! dozen requests, spaced out), over rustls with the system's roots or a given CA. Written here
//! rather than taken from hyper: hyper's client feature, once in the binary, changed how its
//! server code was inlined and cost every keep-alive redirect about 100 instructions.
use crate::AcmeError;
use bytes::Bytes;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls::pki_types::{CertificateDer, ServerName};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for a connection, and for an answer.
const LIMIT: Duration = Duration::from_secs(30);

pub(crate) struct Client {
    tls: tokio_rustls::TlsConnector,
}

type Boxed = Box<dyn std::error::Error + Send + Sync>;

impl Client {
    /// Trusting `ca` (PEM) only, or else the system's root certificates.
    pub(crate) fn new(ca: Option<&Path>) -> Result<Client, AcmeError> {
        let mut roots = rustls::RootCertStore::empty();
        let bad = |path: &Path, reason: String| AcmeError::Account {
            path: path.to_path_buf(),
            reason,
        };
        match ca {
            Some(path) => {
                use rustls::pki_types::pem::PemObject as _;
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|e| bad(path, format!("not a PEM certificate: {e}")))?
                {
                    let cert = cert.map_err(|e| bad(path, format!("not PEM: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| bad(path, format!("not a CA certificate: {e}")))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(Path::new("(TLS)"), e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

impl HttpClient for Client {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let tls = self.tls.clone();
        Box::pin(async move {
            match tokio::time::timeout(LIMIT, send(tls, req)).await {
                Ok(Ok(rsp)) => Ok(rsp),
                Ok(Err(e)) => Err(instant_acme::Error::Other(e)),
                Err(_) => Err(instant_acme::Error::Str(
                    "the ACME server did not answer within 30 s",
                )),
            }
        })
    }
}

async fn send(
    tls: tokio_rustls::TlsConnector,
    req: http::Request<BodyWrapper<Bytes>>,
) -> Result<BytesResponse, Boxed> {
    use http_body_util::BodyExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let uri = req.uri().clone();
    if uri.scheme_str() != Some("https") {
        return Err(format!("{uri}: the ACME server must be reached over https").into());
    }
    let host = uri.host().ok_or_else(|| format!("{uri}: no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        parts.method,
        uri.path_and_query().map_or("/", |p| p.as_str()),
        body.len()
    );
    for (name, value) in &parts.headers {
        if name != http::header::HOST && name != http::header::CONTENT_LENGTH {
            head.push_str(&format!("{name}: {}\r\n", value.to_str()?));
        }
    }
    head.push_str("\r\n");

    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let mut stream = tls.connect(ServerName::try_from(host)?, tcp).await?;
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.flush().await?;
    let mut raw = Vec::new();
    // Connection: close, so the answer ends where the stream does; a server that closes without
    // TLS's close_notify still gave us what it sent.
    match stream.read_to_end(&mut raw).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    let res = parse(&raw)?.map(http_body_util::Full::new);
    Ok(BytesResponse::from(res))
}

/// An HTTP/1.1 answer read to its end: status, headers, and the body (de-chunked).
fn parse(raw: &[u8]) -> Result<http::Response<Bytes>, Boxed> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(raw)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Err("the ACME server's answer ended early".into()),
    };
    let mut out = http::Response::builder().status(res.code.unwrap_or(500));
    let mut chunked = false;
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
            continue;
        }
        out = out.header(h.name, h.value);
    }
    let rest = &raw[len..];
    let body = if chunked {
        unchunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(out.body(Bytes::from(body))?)
}

fn unchunk(mut rest: &[u8]) -> Result<Vec<u8>, Boxed> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk without its size line")?;
        let size_text = std::str::from_utf8(&rest[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or("a chunk shorter than its size")?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("a chunk without its end")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_whole_and_chunks_joined() {
        let raw = b"HTTP/1.1 201 Created\r\nReplay-Nonce: abc\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        let res = parse(raw).expect("parsed");
        assert_eq!(res.status(), 201);
        assert_eq!(res.headers()["replay-nonce"], "abc");
        assert_eq!(res.into_body(), Bytes::from("{\"a\":1}"));
        let plain = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").expect("parsed");
        assert_eq!(plain.into_body(), Bytes::from("ok"));
        assert!(parse(b"HTTP/1.1 200").is_err());
    }
}
