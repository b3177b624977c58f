//! The in-memory link index that answers every redirect.
//!
//! The bulk of the links is an immutable [`Snapshot`] behind an atomic pointer (arc-swap), so a
//! new snapshot replaces the old one in a single store and readers never see half of either.
//! Links created, changed or deleted since that snapshot live in a concurrent overlay (dashmap):
//! a lookup asks the overlay first, then the snapshot. Deletions of snapshot links are
//! tombstones in the overlay.
//!
//! The index does not know where changes come from (bulk load, journal replay, the admin API, a
//! cluster feed); it only applies them, in sequence order, through [`Index::apply`].
//!
//! ```
//! use duanlian_index::{Change, Index};
//! use duanlian_link::{Code, Domain, Link, Redirect, Validity};
//!
//! let index = Index::empty();
//! let link = Link {
//!     domain: Domain::parse("go.example.cn")?,
//!     code: Code::parse("x7Kp2Qa")?,
//!     url: duanlian_link::parse_url("https://shop.example.com/item/42")?,
//!     redirect: Redirect::Found,
//!     validity: Validity::ALWAYS,
//!     created_at: 1_700_000_000,
//!     forward_query: duanlian_link::ForwardQuery::Add,
//!     expired_url: None,
//! };
//! index.apply(1, Change::Put(link.clone()));
//! let url = index.resolve("go.example.cn", "x7Kp2Qa", |l| l.map(|l| l.url.to_vec()));
//! assert_eq!(url.as_deref(), Some(&b"https://shop.example.com/item/42"[..]));
//!
//! index.apply(2, Change::Delete { domain: link.domain, code: link.code });
//! assert!(index.resolve("go.example.cn", "x7Kp2Qa", |l| l.is_none()));
//! # Ok::<(), duanlian_link::LinkError>(())
//! ```
#![forbid(unsafe_code)]

mod key;
mod reap;
mod visits;
mod wheel;

pub use reap::{Reaped, ReaperThread};
pub use visits::Visits;
pub use wheel::{TimerHandle, Wheel};

use arc_swap::ArcSwap;
use dashmap::DashMap;
pub use duanlian_link::Change;
use duanlian_link::Link;
pub use duanlian_snapshot::{LinkRef, Snapshot};
use key::{owned_key, KeyBuf};
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

#[derive(Debug, Clone)]
struct Slot {
    /// Sequence number of the change that put this slot here.
    seq: u64,
    link: Option<Arc<Link>>,
}

type OrderedKey = (Box<str>, Box<str>);

/// Snapshot plus overlay; see the crate docs.
#[derive(Debug)]
pub struct Index {
    snapshot: ArcSwap<Snapshot>,
    /// Hashed with foldhash rather than SipHash: only authenticated writes (and the journal)
    /// insert keys, so there is no one to flood it with colliding ones, and a lookup on every
    /// request hashes its key here first.
    overlay: DashMap<Box<[u8]>, Slot, foldhash::fast::RandomState>,
    // Kept beside the map because `DashMap::is_empty` locks every shard; the redirect path reads
    // this instead and skips the overlay entirely while it is empty (a pure bulk-load server).
    overlay_len: AtomicUsize,
    // The overlay's keys in (domain, code) order, for listings; the redirect path never reads
    // it. Changes update it and the map under its write lock, so a listing sees both agree.
    ordered: RwLock<BTreeSet<OrderedKey>>,
    applied: AtomicU64,
    visits: Visits,
    retention: AtomicI64,
    reaper: Mutex<reap::Reaper>,
    /// Writers' side of the reaper; never held while the reaper works.
    reap_inbox: Mutex<reap::Inbox>,
    /// The snapshot whose positions the reaper's snapshot tokens refer to.
    reaper_snapshot: Mutex<Option<Arc<Snapshot>>>,
    purged_in_snapshot: AtomicU64,
}

/// Thirty days, in seconds: the default retention of expired links.
pub const DEFAULT_RETENTION: i64 = 30 * 86_400;

impl Index {
    /// An index over `snapshot` with an empty overlay.
    pub fn new(snapshot: Arc<Snapshot>) -> Index {
        let applied = snapshot.header().sequence;
        Index {
            snapshot: ArcSwap::new(snapshot),
            overlay: DashMap::default(),
            overlay_len: AtomicUsize::new(0),
            ordered: RwLock::new(BTreeSet::new()),
            applied: AtomicU64::new(applied),
            visits: Visits::default(),
            retention: AtomicI64::new(DEFAULT_RETENTION),
            reaper: Mutex::new(reap::Reaper::new(duanlian_link::now_secs())),
            reap_inbox: Mutex::default(),
            reaper_snapshot: Mutex::new(None),
            purged_in_snapshot: AtomicU64::new(0),
        }
    }

    /// An index with no links.
    pub fn empty() -> Index {
        Index::new(Arc::new(empty_snapshot()))
    }

    /// Looks up `(domain, code)` — `domain` lowercase — and hands the link, if any, to `f`.
    ///
    /// A closure rather than a return value because a snapshot link borrows from the mapped file,
    /// which must stay alive (through the arc-swap guard) while the caller reads it.
    // Always: it has one call on the redirect path, and when the caller grew (the Host checks of
    // RFC 9112) LTO stopped inlining it, which cost about 30 instructions per redirect.
    #[inline(always)]
    pub fn resolve<R>(
        &self,
        domain: &str,
        code: &str,
        f: impl FnOnce(Option<&LinkRef<'_>>) -> R,
    ) -> R {
        if self.overlay_len.load(Ordering::Acquire) != 0 {
            if let Some(key) = KeyBuf::new(domain, code) {
                // Copy the slot out so no shard lock is held while `f` runs.
                let slot = self
                    .overlay
                    .get(key.as_bytes())
                    .map(|r| r.value().link.clone());
                match slot {
                    Some(Some(link)) => return f(Some(&LinkRef::from(&*link))),
                    Some(None) => return f(None),
                    None => {}
                }
            }
        }
        let snap = self.snapshot.load();
        // By reference: a `LinkRef` is 136 bytes, and the closure need not get its own copy.
        f(snap.get(domain, code).as_ref())
    }

    /// Sets how long expired links are kept, answering "expired", before they are purged: the
    /// one place the retention is set, read by the redirect path, the reaper and compaction.
    pub fn set_retention(&self, seconds: i64) {
        self.retention.store(seconds, Ordering::Relaxed);
    }

    /// The retention, in seconds.
    pub fn retention(&self) -> i64 {
        self.retention.load(Ordering::Relaxed)
    }

    /// Snapshot links past their retention since start (they leave at the next compaction).
    pub fn purged_in_snapshot(&self) -> u64 {
        self.purged_in_snapshot.load(Ordering::Relaxed)
    }

    /// Removes an overlay entry that expired, if it is still the one from change `seq`. If the
    /// snapshot holds an older version of the key, a tombstone stays to keep that hidden.
    fn purge_overlay(&self, seq: u64, domain: &str, code: &str) -> bool {
        let Some(key) = KeyBuf::new(domain, code) else {
            return false;
        };
        let mut ordered = self.ordered.write().unwrap_or_else(|p| p.into_inner());
        if self.snapshot.load().get(domain, code).is_some() {
            match self.overlay.get_mut(key.as_bytes()) {
                Some(mut slot) if slot.seq == seq => {
                    slot.link = None;
                    true
                }
                _ => false,
            }
        } else if self
            .overlay
            .remove_if(key.as_bytes(), |_, slot| slot.seq == seq)
            .is_some()
        {
            self.overlay_len.fetch_sub(1, Ordering::Release);
            ordered.remove(&(domain.into(), code.into()));
            true
        } else {
            false
        }
    }

    /// The visit counters.
    pub fn visits(&self) -> &Visits {
        &self.visits
    }

    /// An owned copy of a link, for the admin API.
    pub fn get(&self, domain: &str, code: &str) -> Option<Link> {
        self.resolve(domain, code, |l| l.and_then(|l| l.to_link()))
    }

    /// Whether `(domain, code)` is taken.
    pub fn contains(&self, domain: &str, code: &str) -> bool {
        self.resolve(domain, code, |l| l.is_some())
    }

    /// Applies change number `seq` to the overlay. Changes must come in sequence order; the
    /// index does not know or care whether they come from a journal, a bulk load or a cluster.
    pub fn apply(&self, seq: u64, change: Change) {
        let (domain, code) = change.key();
        let ordered_key: OrderedKey = (domain.as_str().into(), code.as_str().into());
        let key = owned_key(domain, code);
        let link = match change {
            Change::Put(link) => {
                if let Some(expires_at) = link.validity.expires_at {
                    self.schedule_overlay(
                        seq,
                        link.domain.as_str(),
                        link.code.as_str(),
                        expires_at,
                    );
                }
                Some(Arc::new(link))
            }
            Change::Delete { domain, code } => {
                // A link made later on the same key starts counting from zero.
                self.visits.forget(domain.as_str(), code.as_str());
                None
            }
        };
        let mut ordered = self.ordered.write().unwrap_or_else(|p| p.into_inner());
        if self.overlay.insert(key, Slot { seq, link }).is_none() {
            self.overlay_len.fetch_add(1, Ordering::Release);
        }
        ordered.insert(ordered_key);
        self.applied.fetch_max(seq, Ordering::AcqRel);
    }

    /// Counts `seq` as applied without changing anything: a change-feed entry that carries no
    /// link change (or one that was skipped), so waiting for `seq` ends.
    pub fn mark_applied(&self, seq: u64) {
        self.applied.fetch_max(seq, Ordering::AcqRel);
    }

    /// The highest sequence number applied (or included in the snapshot).
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    /// Replaces the snapshot in one atomic store and returns the previous one. The overlay stays
    /// on top. Requests that loaded the old snapshot finish on it; its mapping is released when
    /// the last of them drops its guard.
    pub fn swap_snapshot(&self, snapshot: Arc<Snapshot>) -> Arc<Snapshot> {
        self.applied
            .fetch_max(snapshot.header().sequence, Ordering::AcqRel);
        self.snapshot.swap(snapshot)
    }

    /// Replaces `current` by `new` — the same links in other memory, say — only if `current`
    /// is still the snapshot served; false when another swap came first and nothing changed.
    pub fn replace_snapshot(&self, current: &Arc<Snapshot>, new: Arc<Snapshot>) -> bool {
        let previous = self.snapshot.compare_and_swap(current, new);
        Arc::ptr_eq(&previous, current)
    }

    /// Drops overlay entries from changes up to `seq`, once a snapshot that includes them has
    /// been swapped in. A later change to the same key keeps its entry.
    pub fn prune_through(&self, seq: u64) {
        self.forget_scheduled_through(seq);
        let mut ordered = self.ordered.write().unwrap_or_else(|p| p.into_inner());
        ordered.retain(|(domain, code)| {
            let Some(key) = KeyBuf::new(domain, code) else {
                return true;
            };
            let removed = self
                .overlay
                .remove_if(key.as_bytes(), |_, slot| slot.seq <= seq)
                .is_some();
            if removed {
                self.overlay_len.fetch_sub(1, Ordering::Release);
            }
            !removed
        });
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Entries in the overlay, tombstones included.
    pub fn overlay_len(&self) -> usize {
        self.overlay_len.load(Ordering::Acquire)
    }

    /// Up to `limit` links in `(domain, code)` order, after `after` (exclusive), only on `domain`
    /// if given. Snapshot and overlay are merged; the overlay wins, tombstones hide.
    pub fn list(
        &self,
        domain: Option<&str>,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Vec<Link> {
        let start: (&str, &str) = match (domain, after) {
            (Some(d), Some(a)) if a.0 == d => a,
            (Some(d), _) => (d, ""),
            (None, Some(a)) => a,
            (None, None) => ("", ""),
        };
        let exclusive = after == Some(start);
        let in_scope = |d: &str| domain.is_none_or(|want| want == d);
        let snap = self.snapshot.load();
        let mut snap_iter = snap
            .seek(start.0, start.1)
            .skip_while(|l| exclusive && (l.domain, l.code) == (start.0, start.1.as_bytes()))
            .peekable();
        let ordered = self.ordered.read().unwrap_or_else(|p| p.into_inner());
        let lower: OrderedKey = (start.0.into(), start.1.into());
        let lower = if exclusive {
            Bound::Excluded(lower)
        } else {
            Bound::Included(lower)
        };
        let mut over_iter = ordered.range((lower, Bound::Unbounded)).peekable();
        let mut out = Vec::with_capacity(limit.min(1024));
        while out.len() < limit {
            let s_key = snap_iter.peek().map(|l| (l.domain, l.code));
            let o_key = over_iter.peek().map(|(d, c)| (&**d, c.as_bytes()));
            let take_overlay = match (s_key, o_key) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(s), Some(o)) => {
                    if s == o {
                        snap_iter.next();
                    }
                    o <= s
                }
            };
            if take_overlay {
                let Some((d, c)) = over_iter.next() else {
                    break;
                };
                if !in_scope(d) {
                    break;
                }
                let link = KeyBuf::new(d, c)
                    .and_then(|k| self.overlay.get(k.as_bytes()).and_then(|s| s.link.clone()));
                if let Some(link) = link {
                    out.push((*link).clone());
                }
            } else {
                let Some(l) = snap_iter.next() else { break };
                if !in_scope(l.domain) {
                    break;
                }
                if let Some(link) = l.to_link() {
                    out.push(link);
                }
            }
        }
        out
    }
}

fn empty_snapshot() -> Snapshot {
    let table = duanlian_snapshot::Builder::with_seed(0).finish();
    let bytes = table.and_then(|t| t.to_bytes(0));
    // An empty table always builds and opens; failing here would be a bug in the snapshot crate.
    #[allow(clippy::expect_used)]
    let bytes = bytes.expect("an empty table serialises");
    #[allow(clippy::expect_used)]
    Snapshot::from_bytes(bytes).expect("an empty table opens")
}

#[cfg(test)]
mod tests {
    use super::*;
    use duanlian_link::{parse_url, Code, Domain, Redirect, Validity};
    use duanlian_snapshot::Builder;

    fn link(domain: &str, code: &str, url: &str) -> Link {
        Link {
            domain: Domain::parse(domain).expect("domain"),
            code: Code::parse(code).expect("code"),
            url: parse_url(url).expect("url"),
            redirect: Redirect::Found,
            validity: Validity::ALWAYS,
            created_at: 0,
            forward_query: duanlian_link::ForwardQuery::Add,
            expired_url: None,
        }
    }

    fn delete(domain: &str, code: &str) -> Change {
        Change::Delete {
            domain: Domain::parse(domain).expect("domain"),
            code: Code::parse(code).expect("code"),
        }
    }

    fn snapshot(links: &[Link], seq: u64) -> Arc<Snapshot> {
        let mut b = Builder::with_seed(1);
        for l in links {
            b.push(l).expect("push");
        }
        let bytes = b.finish().expect("finish").to_bytes(seq).expect("bytes");
        Arc::new(Snapshot::from_bytes(bytes).expect("open"))
    }

    fn url_of(index: &Index, d: &str, c: &str) -> Option<String> {
        index.resolve(d, c, |l| {
            l.map(|l| String::from_utf8_lossy(l.url).into_owned())
        })
    }

    fn keys(links: &[Link]) -> Vec<String> {
        links
            .iter()
            .map(|l| format!("{}/{}", l.domain, l.code))
            .collect()
    }

    #[test]
    fn overlay_shadows_snapshot_and_tombstones_hide_it() {
        let index = Index::new(snapshot(
            &[
                link("a.cn", "one", "https://snap/1"),
                link("a.cn", "two", "https://snap/2"),
            ],
            0,
        ));
        assert_eq!(
            url_of(&index, "a.cn", "one").as_deref(),
            Some("https://snap/1")
        );
        index.apply(1, Change::Put(link("a.cn", "one", "https://over/1")));
        index.apply(2, Change::Put(link("a.cn", "new", "https://over/new")));
        index.apply(3, delete("a.cn", "two"));
        assert_eq!(
            url_of(&index, "a.cn", "one").as_deref(),
            Some("https://over/1")
        );
        assert_eq!(
            url_of(&index, "a.cn", "new").as_deref(),
            Some("https://over/new")
        );
        assert_eq!(url_of(&index, "a.cn", "two"), None);
        assert!(!index.contains("a.cn", "two"));
        assert_eq!(url_of(&index, "b.cn", "one"), None);
        assert_eq!(index.overlay_len(), 3);
        assert_eq!(index.applied(), 3);
    }

    #[test]
    fn swap_keeps_overlay_on_top_and_prune_drops_what_the_snapshot_has() {
        let index = Index::new(snapshot(&[link("a.cn", "one", "https://old/1")], 0));
        index.apply(1, Change::Put(link("a.cn", "mine", "https://over/")));
        index.apply(2, delete("a.cn", "one"));
        index.apply(3, Change::Put(link("a.cn", "late", "https://late/")));
        // A snapshot folded through sequence 2: "mine" is in it, "one" is gone.
        let old = index.swap_snapshot(snapshot(&[link("a.cn", "mine", "https://over/")], 2));
        assert_eq!(old.len(), 1);
        index.prune_through(2);
        assert_eq!(index.overlay_len(), 1);
        assert_eq!(
            url_of(&index, "a.cn", "mine").as_deref(),
            Some("https://over/")
        );
        assert_eq!(url_of(&index, "a.cn", "one"), None);
        assert_eq!(
            url_of(&index, "a.cn", "late").as_deref(),
            Some("https://late/")
        );
        assert_eq!(
            keys(&index.list(None, None, 10)),
            ["a.cn/late", "a.cn/mine"]
        );
    }

    #[test]
    fn domain_and_code_do_not_run_together() {
        let index = Index::empty();
        index.apply(1, Change::Put(link("a.b", "c", "https://x/1")));
        assert_eq!(url_of(&index, "a", "b.c"), None);
        assert_eq!(url_of(&index, "a.b", "c").as_deref(), Some("https://x/1"));
    }

    #[test]
    fn reaper_frees_only_what_passed_its_retention() {
        let now = duanlian_link::now_secs();
        let expiring = |code: &str, expires_at: i64| Link {
            validity: Validity::new(None, Some(expires_at)).expect("window"),
            ..link("a.cn", code, &format!("https://x/{code}"))
        };
        let index = Index::new(snapshot(&[link("a.cn", "shadowed", "https://snap/")], 0));
        index.set_retention(100);
        index.apply(1, Change::Put(expiring("soon", now + 10)));
        index.apply(2, Change::Put(expiring("shadowed", now + 10)));
        index.apply(3, Change::Put(expiring("later", now + 1_000)));
        index.apply(4, Change::Put(expiring("replaced", now + 10)));
        index.apply(5, Change::Put(link("a.cn", "replaced", "https://x/new")));
        index.visits().hit("a.cn", "soon", None);
        assert_eq!(
            index.reap(now + 109),
            Reaped::default(),
            "nothing before expiry + retention"
        );
        let reaped = index.reap(now + 110);
        assert_eq!(reaped.overlay, 2, "soon, and shadowed (as a tombstone)");
        assert_eq!(index.visits().count("a.cn", "soon"), 0);
        assert_eq!(url_of(&index, "a.cn", "soon"), None);
        assert_eq!(
            url_of(&index, "a.cn", "shadowed"),
            None,
            "the older snapshot version stays hidden"
        );
        assert_eq!(
            url_of(&index, "a.cn", "replaced").as_deref(),
            Some("https://x/new"),
            "a newer change survives"
        );
        assert_eq!(
            url_of(&index, "a.cn", "later").as_deref(),
            Some("https://x/later")
        );
        assert_eq!(index.overlay_len(), 3, "shadowed, later, replaced");
        assert_eq!(index.reap(now + 1_100).overlay, 1);
    }

    /// Writers must never wait on the reaper: with its lock held (a maintenance step that takes
    /// long, or once looped), applies and prunes still finish, and the reaper catches up later.
    #[test]
    fn writes_do_not_wait_on_a_busy_reaper() {
        let now = duanlian_link::now_secs();
        let index = Arc::new(Index::empty());
        index.set_retention(0);
        let held = lock_reaper(&index);
        let writer = {
            let index = index.clone();
            std::thread::spawn(move || {
                for i in 1..=100u64 {
                    let l = Link {
                        validity: Validity::new(None, Some(now + 1)).expect("window"),
                        ..link("a.cn", &format!("c{i}"), "https://x/")
                    };
                    index.apply(i, Change::Put(l));
                }
                index.prune_through(0);
            })
        };
        let started = std::time::Instant::now();
        while !writer.is_finished() {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(10),
                "writes wait on the reaper's lock"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(held);
        assert_eq!(index.reap(now + 1).overlay, 100);
        // A link "expiring" at the end of time does not wedge the reaper either.
        let forever = Link {
            validity: Validity::new(None, Some(i64::MAX)).expect("window"),
            ..link("a.cn", "forever", "https://x/")
        };
        index.apply(101, Change::Put(forever));
        assert_eq!(index.reap(now + 10).overlay, 0);
        assert_eq!(index.reap(i64::MAX).overlay, 1);
    }

    fn lock_reaper(index: &Index) -> std::sync::MutexGuard<'_, reap::Reaper> {
        index.reaper.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[test]
    fn snapshot_links_are_scheduled_from_their_entries() {
        let now = duanlian_link::now_secs();
        let mut links = vec![link("a.cn", "keep", "https://k/")];
        for i in 0..10 {
            links.push(Link {
                validity: Validity::new(None, Some(now + i)).expect("window"),
                ..link("a.cn", &format!("e{i}"), "https://e/")
            });
        }
        let index = Index::new(snapshot(&links, 0));
        index.set_retention(0);
        assert_eq!(index.schedule_snapshot(), 10);
        index.visits().hit("a.cn", "e3", None);
        assert_eq!(index.reap(now + 4).snapshot, 5);
        assert_eq!(index.visits().count("a.cn", "e3"), 0);
        assert_eq!(index.purged_in_snapshot(), 5);
    }

    #[test]
    fn list_merges_in_order_and_pages_stably() {
        let index = Index::new(snapshot(
            &[
                link("b.cn", "s2", "https://s/2"),
                link("a.cn", "s1", "https://s/1"),
                link("b.cn", "s4", "https://s/4"),
                link("a-b.cn", "s0", "https://s/0"),
            ],
            0,
        ));
        index.apply(1, Change::Put(link("b.cn", "s3", "https://o/3")));
        index.apply(2, Change::Put(link("b.cn", "s2", "https://o/2")));
        index.apply(3, delete("b.cn", "s4"));
        index.apply(4, Change::Put(link("c.cn", "o1", "https://o/c")));
        let all = index.list(None, None, 100);
        assert_eq!(
            keys(&all),
            ["a-b.cn/s0", "a.cn/s1", "b.cn/s2", "b.cn/s3", "c.cn/o1"]
        );
        assert_eq!(&*all[2].url, "https://o/2");
        // Page by two: every link exactly once, in the same order.
        let mut paged = Vec::new();
        let mut after: Option<(String, String)> = None;
        loop {
            let page = index.list(
                None,
                after.as_ref().map(|(d, c)| (d.as_str(), c.as_str())),
                2,
            );
            if page.is_empty() {
                break;
            }
            after = page
                .last()
                .map(|l| (l.domain.to_string(), l.code.to_string()));
            paged.extend(page);
        }
        assert_eq!(keys(&paged), keys(&all));
        assert_eq!(
            keys(&index.list(Some("b.cn"), None, 100)),
            ["b.cn/s2", "b.cn/s3"]
        );
        assert_eq!(
            keys(&index.list(Some("b.cn"), Some(("b.cn", "s2")), 100)),
            ["b.cn/s3"]
        );
        assert!(index.list(Some("z.cn"), None, 100).is_empty());
    }
}
