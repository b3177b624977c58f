//! TLS for the redirect listener: a certificate chain and its key, read from PEM files and
//! checked before the node serves anything (a key that does not match its certificate is
//! refused at start, not at the first handshake).
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
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
    /// The key is not the one the certificate was issued for.
    #[error("{key} is not the key of the certificate in {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

/// The server side of TLS for one certificate chain (`cert`, PEM, leaf first) and its private
/// key (`key`, PEM: PKCS#8, SEC1 or PKCS#1): TLS 1.3 and 1.2, ALPN `http/1.1`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let file_error = |path: &Path, what: String| TlsError::File {
        path: path.to_path_buf(),
        what,
    };
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let signing = provider
        .key_provider
        .load_private_key(private)
        .map_err(|reason| TlsError::Key {
            path: key.to_path_buf(),
            reason,
        })?;
    let certified = rustls::sign::CertifiedKey::new(chain, signing);
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
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|reason| TlsError::Key {
            path: key.to_path_buf(),
            reason,
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(One(Arc::new(certified))));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no CERTIFICATE block".into(),
        other => format!("not PEM: {other}"),
    }
}

/// One certificate for every client, whatever name it asks for (or none).
#[derive(Debug)]
struct One(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for One {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}
