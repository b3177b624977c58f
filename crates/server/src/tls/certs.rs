//! Reading certificates and keys from PEM files, every check done before anything is served:
//! a key that is not the certificate's, an expired certificate, a key other users can read.
use super::{Certificates, TlsError};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One certificate as served: the name it answers (a domain, `*.parent`, or `default`), its
/// file, and the end of its validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// The name clients ask for, as the directory spells it (`_.` shown as `*.`); `default`
    /// for the certificate of clients that name no server (or of every client, with one).
    pub name: String,
    /// The certificate file.
    pub file: PathBuf,
    /// When the leaf certificate stops being valid, in seconds since the Unix epoch.
    pub not_after: i64,
}

/// Certificates by server name, as loaded: exact names, wildcards (by the name's parent), a
/// default for clients that send no name (with one certificate: for every client).
#[derive(Debug, Default)]
pub(super) struct Loaded {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
    everyone: bool,
    pub(super) info: Vec<CertificateInfo>,
}

/// What the loader forgives: a directory that a certificate robot fills (ACME) may be empty or
/// hold an expired certificate it is about to replace; one an operator fills may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Strict {
    Yes,
    /// Skip (with a warning) what cannot be served; never fail for it.
    Lenient,
}

impl Loaded {
    pub(super) fn load(
        source: &Certificates,
        provider: &CryptoProvider,
        strict: Strict,
    ) -> Result<Loaded, TlsError> {
        let now = duanlian_link::now_secs();
        match source {
            Certificates::One { cert, key } => {
                let (certified, not_after) = certified(cert, key, provider, now)?;
                Ok(Loaded {
                    default: Some(certified),
                    everyone: true,
                    info: vec![CertificateInfo {
                        name: "default".into(),
                        file: cert.clone(),
                        not_after,
                    }],
                    ..Loaded::default()
                })
            }
            Certificates::Dir(dir) => Loaded::load_dir(dir, provider, now, strict),
        }
    }

    fn load_dir(
        dir: &Path,
        provider: &CryptoProvider,
        now: i64,
        strict: Strict,
    ) -> Result<Loaded, TlsError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if strict == Strict::Lenient && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Loaded::default())
            }
            Err(e) => return Err(file_error(dir, e.to_string())),
        };
        let mut names: Vec<String> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| file_error(dir, e.to_string()))?;
            let file = entry.file_name();
            if let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".crt")) {
                names.push(name.to_string());
            }
        }
        names.sort();
        let mut by = Loaded::default();
        for name in &names {
            let (cert, key) = (
                dir.join(format!("{name}.crt")),
                dir.join(format!("{name}.key")),
            );
            let loaded = if key.exists() {
                certified(&cert, &key, provider, now)
            } else {
                Err(file_error(&cert, format!("no key beside it ({name}.key)")))
            };
            let (certified, not_after) = match (loaded, strict) {
                (Ok(c), _) => c,
                (Err(e), Strict::Yes) => return Err(e),
                (Err(e), Strict::Lenient) => {
                    tracing::warn!(error = %e, "certificate skipped");
                    continue;
                }
            };
            let lower = name.to_ascii_lowercase();
            let shown = match lower.strip_prefix("_.") {
                Some(parent) => format!("*.{parent}"),
                None => lower.clone(),
            };
            by.info.push(CertificateInfo {
                name: shown,
                file: cert.clone(),
                not_after,
            });
            if lower == "default" {
                by.default = Some(certified);
            } else if let Some(parent) = lower.strip_prefix("_.") {
                by.wildcard.insert(parent.to_string(), certified);
            } else {
                by.exact.insert(lower, certified);
            }
        }
        if names.is_empty() && strict == Strict::Yes {
            return Err(file_error(
                dir,
                "no certificates (NAME.crt with NAME.key beside it)".into(),
            ));
        }
        Ok(by)
    }

    /// The certificate for a client that asked for `name` (lower-cased, no trailing dot, as
    /// rustls hands it), or none.
    pub(super) fn resolve(&self, name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let name = match name {
            Some(name) if !self.everyone => name,
            _ => return self.default.as_ref(),
        };
        if let Some(c) = self.exact.get(name) {
            return Some(c);
        }
        let parent = name.split_once('.').map(|(_, p)| p)?;
        self.wildcard.get(parent)
    }
}

fn file_error(path: &Path, what: String) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        what,
    }
}

/// One chain and its key, checked against each other, the chain's leaf not expired, and the key
/// readable by its owner (and group) only; with the leaf's end of validity.
fn certified(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
    now: i64,
) -> Result<(Arc<CertifiedKey>, i64), TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, pem_error(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, pem_error(&e)))?;
    let Some(leaf) = chain.first() else {
        return Err(file_error(cert, "no CERTIFICATE block".into()));
    };
    let not_after = not_after(leaf).map_err(|what| file_error(cert, what))?;
    if not_after <= now {
        return Err(TlsError::Expired {
            path: cert.to_path_buf(),
            on: duanlian_link::format_rfc3339(not_after),
        });
    }
    check_key_mode(key)?;
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
    Ok((Arc::new(certified), not_after))
}

/// The leaf's notAfter, in Unix seconds.
pub(super) fn not_after(leaf: &CertificateDer<'_>) -> Result<i64, String> {
    use x509_parser::prelude::FromDer as _;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(parsed.validity().not_after.timestamp())
}

/// A private key that other users can read is refused, as ssh refuses one. Its group may read
/// it (0640 with a group such as Debian's ssl-cert), not write it.
fn check_key_mode(key: &Path) -> Result<(), TlsError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(key).map_err(|e| file_error(key, e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o027 != 0 {
        return Err(TlsError::KeyMode {
            path: key.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::NoItemsFound => "no CERTIFICATE block".into(),
        other => format!("not PEM: {other}"),
    }
}
