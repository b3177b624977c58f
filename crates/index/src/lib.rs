//! The in-memory link index that answers every redirect.
//!
//! The bulk of the links is an immutable [`Snapshot`] behind an atomic pointer (arc-swap), so a
//! new snapshot replaces the old one in a single store and readers never see half of either.
//! Links created, changed or deleted since that snapshot live in a concurrent overlay (dashmap):
//! a lookup asks the overlay first, then the snapshot. Deletions of snapshot links are
//! tombstones in the overlay.
//!
//! The index does not know where changes come from (bulk load, journal replay, the admin API, a
//! cluster feed); it only applies them, through [`Index::apply`].
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
//! };
//! index.apply(Change::Put(link.clone()));
//! let url = index.resolve("go.example.cn", "x7Kp2Qa", |l| l.map(|l| l.url.to_vec()));
//! assert_eq!(url.as_deref(), Some(&b"https://shop.example.com/item/42"[..]));
//!
//! index.apply(Change::Delete { domain: link.domain, code: link.code });
//! assert!(index.resolve("go.example.cn", "x7Kp2Qa", |l| l.is_none()));
//! # Ok::<(), duanlian_link::LinkError>(())
//! ```
#![forbid(unsafe_code)]

mod key;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use duanlian_link::{Code, Domain, Link};
pub use duanlian_snapshot::{LinkRef, Snapshot};
use key::{owned_key, KeyBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// One change to the link set, in the order a change feed delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Create or replace a link.
    Put(Link),
    /// Remove a link, wherever it lives.
    Delete {
        /// The link domain.
        domain: Domain,
        /// The code.
        code: Code,
    },
}

#[derive(Debug, Clone)]
enum Slot {
    Live(Arc<Link>),
    Deleted,
}

/// Snapshot plus overlay; see the crate docs.
#[derive(Debug)]
pub struct Index {
    snapshot: ArcSwap<Snapshot>,
    overlay: DashMap<Box<[u8]>, Slot>,
    // Kept beside the map because `DashMap::is_empty` locks every shard; the redirect path reads
    // this instead and skips the overlay entirely while it is empty (a pure bulk-load server).
    overlay_len: AtomicUsize,
}

impl Index {
    /// An index over `snapshot` with an empty overlay.
    pub fn new(snapshot: Arc<Snapshot>) -> Index {
        Index {
            snapshot: ArcSwap::new(snapshot),
            overlay: DashMap::new(),
            overlay_len: AtomicUsize::new(0),
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
    #[inline]
    pub fn resolve<R>(
        &self,
        domain: &str,
        code: &str,
        f: impl FnOnce(Option<LinkRef<'_>>) -> R,
    ) -> R {
        if self.overlay_len.load(Ordering::Acquire) != 0 {
            if let Some(key) = KeyBuf::new(domain, code) {
                // Copy the slot out so no shard lock is held while `f` runs.
                let slot = self.overlay.get(key.as_bytes()).map(|r| r.value().clone());
                match slot {
                    Some(Slot::Live(link)) => return f(Some(link_ref(&link))),
                    Some(Slot::Deleted) => return f(None),
                    None => {}
                }
            }
        }
        let snap = self.snapshot.load();
        f(snap.get(domain, code))
    }

    /// Applies one change to the overlay.
    pub fn apply(&self, change: Change) {
        let (key, slot) = match change {
            Change::Put(link) => (
                owned_key(&link.domain, &link.code),
                Slot::Live(Arc::new(link)),
            ),
            Change::Delete { domain, code } => (owned_key(&domain, &code), Slot::Deleted),
        };
        if self.overlay.insert(key, slot).is_none() {
            self.overlay_len.fetch_add(1, Ordering::Release);
        }
    }

    /// Replaces the snapshot in one atomic store and returns the previous one. The overlay stays
    /// on top. Requests that loaded the old snapshot finish on it; its mapping is released when
    /// the last of them drops its guard.
    pub fn swap_snapshot(&self, snapshot: Arc<Snapshot>) -> Arc<Snapshot> {
        self.snapshot.swap(snapshot)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Entries in the overlay, tombstones included.
    pub fn overlay_len(&self) -> usize {
        self.overlay_len.load(Ordering::Acquire)
    }
}

fn link_ref(link: &Link) -> LinkRef<'_> {
    LinkRef {
        domain: link.domain.as_str(),
        code: link.code.as_str().as_bytes(),
        url: link.url.as_bytes(),
        redirect: link.redirect,
        validity: link.validity,
        created_at: link.created_at,
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
    use duanlian_link::{parse_url, Redirect, Validity};
    use duanlian_snapshot::Builder;

    fn link(domain: &str, code: &str, url: &str) -> Link {
        Link {
            domain: Domain::parse(domain).expect("domain"),
            code: Code::parse(code).expect("code"),
            url: parse_url(url).expect("url"),
            redirect: Redirect::Found,
            validity: Validity::ALWAYS,
            created_at: 0,
        }
    }

    fn snapshot(links: &[Link]) -> Arc<Snapshot> {
        let mut b = Builder::with_seed(1);
        for l in links {
            b.push(l).expect("push");
        }
        let bytes = b.finish().expect("finish").to_bytes(0).expect("bytes");
        Arc::new(Snapshot::from_bytes(bytes).expect("open"))
    }

    fn url_of(index: &Index, d: &str, c: &str) -> Option<String> {
        index.resolve(d, c, |l| {
            l.map(|l| String::from_utf8_lossy(l.url).into_owned())
        })
    }

    #[test]
    fn overlay_shadows_snapshot_and_tombstones_hide_it() {
        let index = Index::new(snapshot(&[
            link("a.cn", "one", "https://snap/1"),
            link("a.cn", "two", "https://snap/2"),
        ]));
        assert_eq!(
            url_of(&index, "a.cn", "one").as_deref(),
            Some("https://snap/1")
        );
        index.apply(Change::Put(link("a.cn", "one", "https://over/1")));
        index.apply(Change::Put(link("a.cn", "new", "https://over/new")));
        let two = link("a.cn", "two", "https://x/");
        index.apply(Change::Delete {
            domain: two.domain,
            code: two.code,
        });
        assert_eq!(
            url_of(&index, "a.cn", "one").as_deref(),
            Some("https://over/1")
        );
        assert_eq!(
            url_of(&index, "a.cn", "new").as_deref(),
            Some("https://over/new")
        );
        assert_eq!(url_of(&index, "a.cn", "two"), None);
        assert_eq!(url_of(&index, "b.cn", "one"), None);
        assert_eq!(index.overlay_len(), 3);
    }

    #[test]
    fn swap_keeps_overlay_on_top() {
        let index = Index::new(snapshot(&[link("a.cn", "one", "https://old/1")]));
        index.apply(Change::Put(link("a.cn", "mine", "https://over/")));
        let old = index.swap_snapshot(snapshot(&[
            link("a.cn", "one", "https://new/1"),
            link("a.cn", "mine", "https://new/mine"),
        ]));
        assert_eq!(old.len(), 1);
        assert_eq!(
            url_of(&index, "a.cn", "one").as_deref(),
            Some("https://new/1")
        );
        assert_eq!(
            url_of(&index, "a.cn", "mine").as_deref(),
            Some("https://over/")
        );
    }

    #[test]
    fn domain_and_code_do_not_run_together() {
        let index = Index::empty();
        index.apply(Change::Put(link("a.b", "c", "https://x/1")));
        assert_eq!(url_of(&index, "a", "b.c"), None);
        assert_eq!(url_of(&index, "a.b", "c").as_deref(), Some("https://x/1"));
    }
}
