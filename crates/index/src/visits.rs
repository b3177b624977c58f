//! Visit counts per link, in memory, with atomic counters.
//!
//! Keyed by `domain/code` rather than by where the link lives, so counts carry over snapshot
//! swaps and compaction unchanged. A counter is created on a link's first counted visit.
use crate::key::KeyBuf;
use dashmap::DashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The visit counters; see the module docs.
#[derive(Debug, Default)]
pub struct Visits {
    /// Hashed with foldhash rather than SipHash: a counter exists only for a link that exists,
    /// so its keys are not the caller's to choose, and this hash runs on every counted visit.
    counts: DashMap<Box<[u8]>, AtomicU64, foldhash::fast::RandomState>,
    dirty: AtomicBool,
}

impl Visits {
    /// Counts one visit. With a `cap`, the visit counts (and the caller may redirect) only while
    /// the count is below it, so with a cap of N exactly N racing visits get `true`.
    #[inline]
    pub fn hit(&self, domain: &str, code: &str, cap: Option<u64>) -> bool {
        let Some(key) = KeyBuf::new(domain, code) else {
            return false;
        };
        let bump = |c: &AtomicU64| match cap {
            None => {
                c.fetch_add(1, Ordering::Relaxed);
                true
            }
            Some(cap) => c
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                    (v < cap).then(|| v + 1)
                })
                .is_ok(),
        };
        let counted = match self.counts.get(key.as_bytes()) {
            Some(c) => bump(c.value()),
            // First visit: the entry lock makes concurrent first visits share one counter.
            None => bump(
                self.counts
                    .entry(key.as_bytes().into())
                    .or_insert_with(|| AtomicU64::new(0))
                    .value(),
            ),
        };
        // Read before writing: a store on every visit would bounce this cache line between
        // the cores serving redirects.
        if counted && !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
        counted
    }

    /// Adds `n` visits made elsewhere (another node's, in cluster mode).
    pub fn add(&self, domain: &str, code: &str, n: u64) {
        let Some(key) = KeyBuf::new(domain, code) else {
            return;
        };
        if n == 0 {
            return;
        }
        match self.counts.get(key.as_bytes()) {
            Some(c) => {
                c.value().fetch_add(n, Ordering::Relaxed);
            }
            None => {
                self.counts
                    .entry(key.as_bytes().into())
                    .or_insert_with(|| AtomicU64::new(0))
                    .value()
                    .fetch_add(n, Ordering::Relaxed);
            }
        }
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// The count of a link (0 if never visited).
    pub fn count(&self, domain: &str, code: &str) -> u64 {
        KeyBuf::new(domain, code)
            .and_then(|k| {
                self.counts
                    .get(k.as_bytes())
                    .map(|c| c.load(Ordering::Acquire))
            })
            .unwrap_or(0)
    }

    /// Drops a link's counter (it was deleted or purged; a new link on the key starts at 0).
    pub fn forget(&self, domain: &str, code: &str) {
        if let Some(k) = KeyBuf::new(domain, code) {
            if self.counts.remove(k.as_bytes()).is_some() {
                self.dirty.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Sets a count (loading saved counts at start).
    pub fn set(&self, key: &[u8], count: u64) {
        self.counts.insert(key.into(), AtomicU64::new(count));
    }

    /// Every `(domain/code, count)`, if anything changed since the last call; for saving.
    pub fn take_changed(&self) -> Option<Vec<(Box<[u8]>, u64)>> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(
            self.counts
                .iter()
                .map(|e| (e.key().clone(), e.value().load(Ordering::Acquire)))
                .collect(),
        )
    }

    /// Marks the counts as changed again (a save that took them failed).
    pub fn mark_changed(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Links with a counter.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether no link has been visited.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_cap_of_n_lets_exactly_n_racing_visits_through() {
        let v = Arc::new(Visits::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let v = v.clone();
                std::thread::spawn(move || {
                    (0..1000).filter(|_| v.hit("a.cn", "x", Some(137))).count()
                })
            })
            .collect();
        let through: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
        assert_eq!(through, 137);
        assert_eq!(v.count("a.cn", "x"), 137);
    }

    #[test]
    fn counts_forget_and_report_changes() {
        let v = Visits::default();
        assert!(v.take_changed().is_none());
        for _ in 0..3 {
            assert!(v.hit("a.cn", "x", None));
        }
        assert_eq!(v.count("a.cn", "x"), 3);
        let saved = v.take_changed().expect("changed");
        assert_eq!(saved, vec![(b"a.cn/x".to_vec().into_boxed_slice(), 3)]);
        assert!(v.take_changed().is_none());
        v.forget("a.cn", "x");
        assert_eq!(v.count("a.cn", "x"), 0);
        v.set(b"a.cn/y", 9);
        assert_eq!(v.count("a.cn", "y"), 9);
        // A failed save hands the changes back.
        v.mark_changed();
        assert!(v.take_changed().is_some());
    }
}
