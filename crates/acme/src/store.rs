//! The state directory: `account.json` (the account key, mode 0600) and `certs/NAME.crt` with
//! `certs/NAME.key` (mode 0600), each file replaced whole by a rename.
use crate::AcmeError;
use instant_acme::AccountCredentials;
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

#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    directory: String,
    credentials: AccountCredentials,
}

/// The account stored for `directory`, if there is one (an account of another CA is not).
pub(crate) fn account(
    state_dir: &Path,
    directory: &str,
) -> Result<Option<AccountCredentials>, AcmeError> {
    let path = state_dir.join("account.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let stored: Stored = serde_json::from_str(&text).map_err(|e| AcmeError::Account {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if stored.directory != directory {
        tracing::info!(stored = %stored.directory, %directory, "the ACME account on file is another CA's: making a new one");
        return Ok(None);
    }
    Ok(Some(stored.credentials))
}

pub(crate) fn save_account(
    state_dir: &Path,
    directory: &str,
    credentials: &AccountCredentials,
) -> Result<(), AcmeError> {
    let path = state_dir.join("account.json");
    // Serialized through a borrowed copy: the credentials type is not Clone.
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "directory": directory,
        "credentials": credentials,
    }))
    .map_err(|e| AcmeError::Account {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    replace(&path, text.as_bytes(), 0o600)
}

/// Writes the chain and key for `domain`, the key first; the chain's end of validity.
pub(crate) fn save_certificate(
    state_dir: &Path,
    domain: &str,
    chain: &str,
    key: &str,
) -> Result<i64, AcmeError> {
    let dir = certs_dir(state_dir);
    let cert = dir.join(format!("{domain}.crt"));
    let (_, until) = leaf_validity(chain.as_bytes()).ok_or_else(|| AcmeError::Order {
        domain: domain.to_string(),
        reason: "the CA sent no readable certificate".into(),
    })?;
    replace(&dir.join(format!("{domain}.key")), key.as_bytes(), 0o600)?;
    replace(&cert, chain.as_bytes(), 0o644)?;
    Ok(until)
}

/// The stored certificate's validity for `domain` (not before, not after), if it can be read.
pub(crate) fn validity(state_dir: &Path, domain: &str) -> Option<(i64, i64)> {
    let path = certs_dir(state_dir).join(format!("{domain}.crt"));
    leaf_validity(&std::fs::read(path).ok()?)
}

fn leaf_validity(pem: &[u8]) -> Option<(i64, i64)> {
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
        assert!(validity(&dir, "go.example.cn").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
