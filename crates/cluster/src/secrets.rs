//! Secrets every node must hold alike (the TLS session-ticket keys, so a client resumes on
//! whichever node the load balancer picks), kept in the bucket `<bucket>-secrets`. The first
//! node to find a secret past its period rotates it by compare-and-set, so exactly one new
//! secret wins, and the one before it is kept beside it for what it sealed.
use crate::{Cluster, ClusterError};
use async_nats::jetstream::kv;
use std::time::Duration;

/// Bytes of one secret.
pub const SECRET_LEN: usize = 48;

/// One secret and when it was made (Unix seconds).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// Its random bytes.
    pub bytes: [u8; SECRET_LEN],
    /// When it was made.
    pub created: i64,
}

impl std::fmt::Debug for Secret {
    // The bytes stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secret")
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// A rotated secret: the one to use now, and the one before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// Seal with this one.
    pub current: Secret,
    /// Still open what this one sealed.
    pub previous: Option<Secret>,
}

const ONE: usize = 8 + SECRET_LEN;

fn encode(r: &Rotated) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 * ONE);
    for s in std::iter::once(&r.current).chain(r.previous.as_ref()) {
        out.extend_from_slice(&s.created.to_be_bytes());
        out.extend_from_slice(&s.bytes);
    }
    out
}

fn decode(b: &[u8]) -> Option<Rotated> {
    let one = |b: &[u8]| -> Option<Secret> {
        let created = i64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let bytes = b.get(8..ONE)?.try_into().ok()?;
        Some(Secret { bytes, created })
    };
    match b.len() {
        ONE => Some(Rotated {
            current: one(b)?,
            previous: None,
        }),
        n if n == 2 * ONE => Some(Rotated {
            current: one(&b[..ONE])?,
            previous: Some(one(&b[ONE..])?),
        }),
        _ => None,
    }
}

fn fresh(now: i64) -> Result<Secret, String> {
    let mut bytes = [0u8; SECRET_LEN];
    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
    Ok(Secret {
        bytes,
        created: now,
    })
}

impl Cluster {
    /// The shared secret `name`, rotated first if its current one is `period` old or older
    /// (or made, if there is none).
    pub async fn rotating_secret(
        &self,
        name: &str,
        period: Duration,
    ) -> Result<Rotated, ClusterError> {
        let fail = |reason: String| ClusterError::Secret {
            name: name.to_string(),
            reason,
        };
        // A lost race means another node rotated: read again and take its secret.
        for _ in 0..5 {
            let now = duanlian_link::now_secs();
            let entry = self.shared_get(name).await?;
            let (stored, revision) = match &entry {
                Some((value, revision)) => (decode(value), Some(*revision)),
                None => (None, None),
            };
            if let Some(r) = &stored {
                if r.current.created + period.as_secs() as i64 > now {
                    return Ok(r.clone());
                }
            }
            let next = Rotated {
                current: fresh(now).map_err(fail)?,
                previous: stored.map(|r| r.current),
            };
            let written = match revision {
                Some(rev) => self.shared_update(name, encode(&next), rev).await?,
                None => self.shared_create(name, encode(&next)).await?,
            };
            if written {
                tracing::info!(secret = name, "shared secret rotated");
                return Ok(next);
            }
        }
        Err(fail("lost every rotation race; try again".into()))
    }

    /// A value of the secrets bucket, and its revision (for [`Cluster::shared_update`]).
    pub async fn shared_get(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, ClusterError> {
        let store = self.secrets_bucket().await?;
        let entry = store.entry(key).await.map_err(|e| secret_error(key, e))?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| (e.value.to_vec(), e.revision)))
    }

    /// Sets a value of the secrets bucket.
    pub async fn shared_put(&self, key: &str, value: Vec<u8>) -> Result<(), ClusterError> {
        let store = self.secrets_bucket().await?;
        store
            .put(key, value.into())
            .await
            .map(|_| ())
            .map_err(|e| secret_error(key, e))
    }

    /// Sets a value the bucket does not hold yet; `false` if it does.
    pub async fn shared_create(&self, key: &str, value: Vec<u8>) -> Result<bool, ClusterError> {
        let store = self.secrets_bucket().await?;
        Ok(store.create(key, value.into()).await.is_ok())
    }

    /// Replaces a value read at `revision`; `false` if it changed since.
    pub async fn shared_update(
        &self,
        key: &str,
        value: Vec<u8>,
        revision: u64,
    ) -> Result<bool, ClusterError> {
        let store = self.secrets_bucket().await?;
        Ok(store.update(key, value.into(), revision).await.is_ok())
    }

    /// Removes a value.
    pub async fn shared_delete(&self, key: &str) -> Result<(), ClusterError> {
        let store = self.secrets_bucket().await?;
        store.delete(key).await.map_err(|e| secret_error(key, e))
    }

    /// Every value under `prefix` (`acme.`), then every change to them: the key, and its value
    /// (`None` once deleted). Ends when the connection does; watch again then.
    pub async fn watch_shared(
        &self,
        prefix: &str,
    ) -> Result<impl futures_util::Stream<Item = (String, Option<Vec<u8>>)> + Send, ClusterError>
    {
        use futures_util::StreamExt as _;
        let store = self.secrets_bucket().await?;
        let watch = store
            .watch_with_history(format!("{prefix}>"))
            .await
            .map_err(|e| secret_error(prefix, e))?;
        Ok(watch.filter_map(|entry| async move {
            let entry = entry.ok()?;
            let value = (entry.operation == kv::Operation::Put).then(|| entry.value.to_vec());
            Some((entry.key, value))
        }))
    }

    async fn secrets_bucket(&self) -> Result<&kv::Store, ClusterError> {
        let js = self.jetstream().ok_or(ClusterError::NotJoined)?;
        let name = format!("{}-secrets", self.opts.bucket);
        let replicas = self.opts.replicas;
        self.secrets
            .get_or_try_init(|| async move {
                crate::conn::open_kv(
                    &js,
                    &name,
                    "duanlian secrets every node holds alike",
                    replicas,
                )
                .await
            })
            .await
    }
}

fn secret_error(key: &str, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Secret {
        name: key.to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_secret_reads_back_as_written() {
        let a = fresh(100).expect("random");
        let b = fresh(200).expect("random");
        assert_ne!(a.bytes, b.bytes);
        let one = Rotated {
            current: a.clone(),
            previous: None,
        };
        let two = Rotated {
            current: b,
            previous: Some(a),
        };
        assert_eq!(decode(&encode(&one)), Some(one));
        assert_eq!(decode(&encode(&two)), Some(two));
        assert_eq!(decode(&[0; 10]), None);
    }
}
