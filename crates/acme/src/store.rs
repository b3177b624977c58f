//! The state directory: `account.json` (the account key, mode 0600) and `certs/NAME.crt` with
//! `certs/NAME.key` (mode 0600), each file replaced whole by a rename.
use crate::AcmeError;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// The directory the certificates are written to, under `state_dir`: `NAME.crt` and
/// `NAME.key` pairs, as the TLS listener's certificate directory reads them.
pub fn certs_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("certs")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AcmeError + '_ {
    move |source| AcmeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The account and certificates in a directory of this node's: `account.json` and
/// [`certs_dir`]. One node orders: every claim is granted.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    /// Keeps everything under `dir` (created when first written).
    pub fn new(dir: PathBuf) -> DirStore {
        DirStore { dir }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    directory: String,
    credentials: serde_json::Value,
}

/// How a [`Store`](crate::Store) keeps an account: the credentials' JSON beside the CA's
/// directory URL, so that an account of another CA is never used.
pub fn account_record(directory: &str, credentials: &str) -> Result<Vec<u8>, String> {
    let credentials = serde_json::from_str(credentials).map_err(|e| e.to_string())?;
    serde_json::to_vec_pretty(&Stored {
        directory: directory.to_string(),
        credentials,
    })
    .map_err(|e| e.to_string())
}

/// The credentials' JSON in a record [`account_record`] made, if it is `directory`'s.
pub fn account_of(record: &[u8], directory: &str) -> Result<Option<String>, String> {
    let stored: Stored = serde_json::from_slice(record).map_err(|e| e.to_string())?;
    if stored.directory != directory {
        tracing::info!(stored = %stored.directory, %directory, "the ACME account kept is another CA's: making a new one");
        return Ok(None);
    }
    Ok(Some(stored.credentials.to_string()))
}

impl crate::Store for DirStore {
    async fn account(&self, directory: &str) -> Result<Option<String>, AcmeError> {
        let path = self.dir.join("account.json");
        let record = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        account_of(&record, directory).map_err(|reason| AcmeError::Account { path, reason })
    }

    async fn save_account(&self, directory: &str, json: &str) -> Result<(), AcmeError> {
        let path = self.dir.join("account.json");
        match account_record(directory, json) {
            Ok(record) => replace(&path, &record, 0o600),
            Err(reason) => Err(AcmeError::Account { path, reason }),
        }
    }

    async fn validity(&self, domain: &str) -> Option<(i64, i64)> {
        let path = certs_dir(&self.dir).join(format!("{domain}.crt"));
        leaf_validity(&std::fs::read(path).ok()?)
    }

    async fn save_certificate(
        &self,
        domain: &str,
        chain: &str,
        key: &str,
    ) -> Result<(), AcmeError> {
        write_certificate(&certs_dir(&self.dir), domain, chain, key)
    }

    async fn claim(&self, _domain: &str, _ttl: std::time::Duration) -> bool {
        true
    }

    async fn release(&self, _domain: &str) {}
}

/// Writes `domain`'s chain and key into `dir` as the TLS listener reads them, the key first
/// (mode 0600), each replaced whole.
pub fn write_certificate(
    dir: &Path,
    domain: &str,
    chain: &str,
    key: &str,
) -> Result<(), AcmeError> {
    replace(&dir.join(format!("{domain}.key")), key.as_bytes(), 0o600)?;
    replace(&dir.join(format!("{domain}.crt")), chain.as_bytes(), 0o644)
}

/// The first certificate's validity in a PEM chain (not before, not after, Unix seconds).
pub fn leaf_validity(pem: &[u8]) -> Option<(i64, i64)> {
    use x509_parser::prelude::FromDer as _;
    let leaf = CertificateDer::pem_slice_iter(pem).next()?.ok()?;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(leaf.as_ref()).ok()?;
    let v = parsed.validity();
    Some((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// Replaces `path` whole with `bytes` (mode `mode`), through a temporary file and a rename, so
/// a reader never sees half a file.
fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AcmeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_replaced_whole_with_their_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("dl-acme-store-{}", std::process::id()));
        let path = dir.join("certs").join("go.example.cn.key");
        replace(&path, b"one", 0o600).expect("write");
        replace(&path, b"two", 0o600).expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(leaf_validity(b"not PEM").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
