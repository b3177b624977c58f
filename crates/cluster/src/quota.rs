//! Visit caps across nodes, exact: the visits of a capped link are granted from a counter in
//! the visits bucket (`<bucket>-visits`, key `DOMAIN/CODE/CREATED_AT`), which only ever grows
//! by compare-and-set. A node takes a block of visits at a time (a lease) and spends it
//! locally, so a capped link's redirects wait on NATS only when its lease is spent; blocks
//! shrink as the cap nears (an eighth of what is left, at most 1,000), and the last visits are
//! granted one at a time. The counter never grants more than the cap, so the nodes together
//! never redirect more than the cap; a node that dies holding a lease leaves its unspent part
//! unused (the cap is then undershot by at most that much).
use crate::Cluster;
use async_nats::jetstream::kv;
use duanlian_write::{VisitQuota, WriteError};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long a refill may take before the visit is answered 503 (NATS unreachable).
const REFILL_LIMIT: Duration = Duration::from_secs(2);

/// This node's leases, one per capped link it has served.
#[derive(Debug, Default)]
pub(crate) struct Leases {
    leases: std::sync::Mutex<std::collections::HashMap<String, Arc<Lease>>>,
}

#[derive(Debug, Default)]
struct Lease {
    /// Visits leased and not spent yet.
    left: AtomicU64,
    /// The cap the shared counter was found used up at (0: not used up): a raised cap leases
    /// again.
    used_up_at: AtomicU64,
    /// One refill at a time per link on this node; the others wait for it and take from it.
    refilling: tokio::sync::Mutex<()>,
}

impl Lease {
    fn take(&self, cap: u64) -> Option<bool> {
        let used_up_at = self.used_up_at.load(Ordering::Acquire);
        if used_up_at != 0 && cap <= used_up_at {
            return Some(false);
        }
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .ok()
            .map(|_| true)
    }
}

/// The key of a link's visit counter: a link deleted and created again under the same code
/// starts a new count.
fn key(domain: &str, code: &str, created_at: i64) -> String {
    format!("{domain}/{code}/{created_at}")
}

/// The block leased when `left` visits remain.
pub(crate) fn block(left: u64) -> u64 {
    (left / 8).clamp(1, 1_000)
}

impl Leases {
    fn lease(&self, key: &str) -> Option<Arc<Lease>> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned()
    }

    fn lease_or_new(&self, key: &str) -> Arc<Lease> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key.to_owned())
            .or_default()
            .clone()
    }
}

impl Cluster {
    async fn refill_lease(
        &self,
        domain: &str,
        code: &str,
        created_at: i64,
        cap: u64,
    ) -> Result<bool, WriteError> {
        let key = key(domain, code, created_at);
        let lease = self.leases.lease_or_new(&key);
        let _one = lease.refilling.lock().await;
        // Another request refilled while this one waited.
        if let Some(granted) = lease.take(cap) {
            return Ok(granted);
        }
        let unavailable =
            || WriteError::Unavailable("NATS: the visit counter cannot be reached".into());
        let conn = self.conn.get().ok_or_else(unavailable)?;
        let visits = &conn.visits;
        let lease_from_counter = async {
            loop {
                let (granted, revision) = match visits.entry(key.clone()).await {
                    Ok(Some(e)) if e.operation == kv::Operation::Put => (
                        std::str::from_utf8(&e.value)
                            .ok()
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(0),
                        Some(e.revision),
                    ),
                    Ok(_) => (0, None),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if granted >= cap {
                    lease.used_up_at.store(cap, Ordering::Release);
                    return false;
                }
                let take = block(cap - granted);
                let value = (granted + take).to_string().into_bytes().into();
                let written = match revision {
                    Some(revision) => visits.update(&key, value, revision).await.is_ok(),
                    None => visits.create(&key, value).await.is_ok(),
                };
                // Lost the race to another node (or the write failed): read again.
                if written {
                    lease.left.fetch_add(take - 1, Ordering::AcqRel);
                    return true;
                }
            }
        };
        tokio::time::timeout(REFILL_LIMIT, lease_from_counter)
            .await
            .map_err(|_| unavailable())
    }
}

impl Cluster {
    /// Gives the unspent part of every lease back to the shared counters, so a node stopped
    /// on purpose leaves no visits unusable (a node that dies cannot: its leases are lost).
    /// Call it once no more redirects are answered.
    pub async fn return_leases(&self) {
        let Some(conn) = self.conn.get() else {
            return;
        };
        let leases: Vec<(String, Arc<Lease>)> = self
            .leases
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .collect();
        for (key, lease) in leases {
            let unspent = lease.left.swap(0, Ordering::AcqRel);
            if unspent == 0 {
                continue;
            }
            // Compare-and-set like a refill; a few tries, as other nodes may be leasing.
            for _ in 0..5 {
                let Ok(Some(e)) = conn.visits.entry(key.clone()).await else {
                    break;
                };
                let granted = std::str::from_utf8(&e.value)
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                let value = granted
                    .saturating_sub(unspent)
                    .to_string()
                    .into_bytes()
                    .into();
                if conn.visits.update(&key, value, e.revision).await.is_ok() {
                    break;
                }
            }
        }
    }
}

impl VisitQuota for Cluster {
    fn take(&self, domain: &str, code: &str, created_at: i64, cap: u64) -> Option<bool> {
        self.leases.lease(&key(domain, code, created_at))?.take(cap)
    }

    fn refill<'a>(
        &'a self,
        domain: &'a str,
        code: &'a str,
        created_at: i64,
        cap: u64,
    ) -> Pin<Box<dyn Future<Output = Result<bool, WriteError>> + Send + 'a>> {
        Box::pin(self.refill_lease(domain, code, created_at, cap))
    }
}

/// Opens (or creates) the visits bucket beside the links bucket.
pub(crate) async fn open_visits(
    js: &async_nats::jetstream::Context,
    opts: &crate::ClusterOptions,
) -> Result<kv::Store, crate::ClusterError> {
    crate::conn::open_kv(
        js,
        &format!("{}-visits", opts.bucket),
        "duanlian visit caps: DOMAIN/CODE/CREATED_AT -> visits granted",
        opts.replicas,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_shrink_to_one_as_the_cap_nears() {
        assert_eq!(block(50), 6);
        assert_eq!(block(7), 1);
        assert_eq!(block(1), 1);
        assert_eq!(block(1_000_000), 1_000);
        // Leasing a block at a time never passes the cap.
        let (cap, mut granted) = (50u64, 0u64);
        while granted < cap {
            granted += block(cap - granted);
        }
        assert_eq!(granted, cap);
    }

    #[test]
    fn a_lease_spends_what_it_holds_then_asks() {
        let lease = Lease::default();
        assert_eq!(lease.take(10), None);
        lease.left.store(2, Ordering::Release);
        assert_eq!(lease.take(10), Some(true));
        assert_eq!(lease.take(10), Some(true));
        assert_eq!(lease.take(10), None);
        lease.used_up_at.store(10, Ordering::Release);
        assert_eq!(lease.take(10), Some(false));
        assert_eq!(lease.take(11), None, "a raised cap leases again");
    }
}
