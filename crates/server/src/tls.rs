//! TLS for the redirect listener: certificate chains and their keys, read from PEM files and
//! checked before the node serves anything (a key that does not match its certificate is
//! refused at start, not at the first handshake).
//!
//! Either one certificate for every client ([`Certificates::One`]), or a directory with one
//! per link domain, chosen by the name the client asks for (SNI): see [`Certificates::Dir`].
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a certificate or key could not be used; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read or holds no PEM block of the kind wanted.
    #[error("{path}: {what}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        what: String,
    },
    /// The key is of a kind or form the TLS library cannot sign with.
    #[error("{path}: not a usable private key: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// The library's reason.
        reason: rustls::Error,
    },
    /// The TLS library refused the configuration itself.
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
    /// The key is not the one the certificate was issued for.
    #[error("{key} is not the key of the certificate in {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

/// Where the listener's certificates come from.
#[derive(Debug, Clone)]
pub enum Certificates {
    /// One chain (PEM, leaf first) and its key (PEM: PKCS#8, SEC1 or PKCS#1) for every client.
    One {
        /// The certificate chain file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// A directory of `NAME.crt` and `NAME.key` pairs, `NAME` a link domain
    /// (`go.example.cn`), a wildcard written with `_` (`_.example.cn` for `*.example.cn`, one
    /// label), or `default` (for clients that name no server). A client that names a server
    /// with no certificate here is refused in the handshake.
    Dir(PathBuf),
}

/// The server side of TLS for `certs`: TLS 1.3 and 1.2, ALPN `http/1.1`.
pub fn server_config(certs: &Certificates) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver: Arc<dyn rustls::server::ResolvesServerCert> = match certs {
        Certificates::One { cert, key } => Arc::new(One(certified(cert, key, &provider)?)),
        Certificates::Dir(dir) => Arc::new(ByName::load(dir, &provider)?),
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn file_error(path: &Path, what: String) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        what,
    }
}

/// One chain and its key, checked against each other.
fn certified(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, pem_error(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, pem_error(&e)))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no CERTIFICATE block".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        let what = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no PRIVATE KEY block".into(),
            other => pem_error(&other),
        };
        file_error(key, what)
    })?;
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|reason| TlsError::Key {
            path: key.to_path_buf(),
            reason,
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        // Unknown: the key cannot tell its public half; the handshake will tell.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(TlsError::Mismatch {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            })
        }
    }
    Ok(Arc::new(certified))
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no CERTIFICATE block".into(),
        other => format!("not PEM: {other}"),
    }
}

/// One certificate for every client, whatever name it asks for (or none).
#[derive(Debug)]
struct One(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for One {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Certificates by server name: exact names, wildcards (by the name's parent), a default for
/// clients that send none.
#[derive(Debug, Default)]
struct ByName {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ByName {
    fn load(dir: &Path, provider: &rustls::crypto::CryptoProvider) -> Result<ByName, TlsError> {
        let entries = std::fs::read_dir(dir).map_err(|e| file_error(dir, e.to_string()))?;
        let mut names: Vec<String> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| file_error(dir, e.to_string()))?;
            let file = entry.file_name();
            if let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".crt")) {
                names.push(name.to_string());
            }
        }
        names.sort();
        let mut by = ByName::default();
        for name in &names {
            let (cert, key) = (
                dir.join(format!("{name}.crt")),
                dir.join(format!("{name}.key")),
            );
            if !key.exists() {
                return Err(file_error(&cert, format!("no key beside it ({name}.key)")));
            }
            let certified = certified(&cert, &key, provider)?;
            let lower = name.to_ascii_lowercase();
            if lower == "default" {
                by.default = Some(certified);
            } else if let Some(parent) = lower.strip_prefix("_.") {
                by.wildcard.insert(parent.to_string(), certified);
            } else {
                by.exact.insert(lower, certified);
            }
        }
        if names.is_empty() {
            return Err(file_error(
                dir,
                "no certificates (NAME.crt with NAME.key beside it)".into(),
            ));
        }
        Ok(by)
    }
}

impl rustls::server::ResolvesServerCert for ByName {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return self.default.clone();
        };
        // rustls hands the name lower-cased and without a trailing dot.
        if let Some(c) = self.exact.get(name) {
            return Some(c.clone());
        }
        let parent = name.split_once('.').map(|(_, p)| p)?;
        self.wildcard.get(parent).cloned()
    }
}
