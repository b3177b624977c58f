//! Freeing memory of links past their expiry plus the retention.
//!
//! Reads never need this: a link past its retention already answers as unknown, decided from
//! its own fields. The reaper only reclaims what such links hold: overlay entries and visit
//! counters. Snapshot links live in the mapped file and leave it at the next compaction.
//!
//! Every node whose overlay takes writes runs it ([`Index::start_reaper`]): whatever feeds the
//! index (a journal, a cluster's bucket), expiring links are scheduled as they are applied, and a new
//! snapshot is scheduled once the reaper sees it swapped in. The retention is read when an entry
//! is scheduled, so setting it after the index was filled (a journal replayed) is fine.
//!
//! Writers never wait on the reaper: [`Index::apply`] and [`Index::prune_through`] only append
//! to an inbox whose lock is held for a push or a swap, and the reaper takes the inbox when it
//! runs. So however long a maintenance step takes, a write is not held up by it.
use crate::wheel::Wheel;
use crate::Index;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The wheel counts unsigned seconds; instants before 1970 are simply due.
fn wheel_time(secs: i64) -> u64 {
    secs.max(0) as u64
}

/// A poisoned lock only means another thread panicked mid-update of reaper bookkeeping, which
/// stays usable: the worst case is a link freed a little late.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Snapshot positions are scheduled with this bit set; overlay links by sequence number.
const SNAPSHOT_TOKEN: u64 = 1 << 63;

/// What writers hand the reaper: links to schedule, and how far the snapshot now reaches.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    /// Overlay links to schedule: sequence number, key and expiry.
    schedule: Vec<(u64, Box<str>, Box<str>, i64)>,
    /// Overlay links up to this sequence number are in the snapshot now.
    forget_through: u64,
}

#[derive(Debug)]
pub(crate) struct Reaper {
    wheel: Wheel,
    /// Scheduled overlay links: sequence number → key and purge time.
    overlay: HashMap<u64, (Box<str>, Box<str>, i64)>,
    /// The inbox's `forget_through` already applied.
    forgotten_through: u64,
}

impl Reaper {
    pub(crate) fn new(now: i64) -> Reaper {
        Reaper {
            wheel: Wheel::new(wheel_time(now)),
            overlay: HashMap::new(),
            forgotten_through: 0,
        }
    }

    /// Takes what writers left in the inbox.
    fn take_inbox(&mut self, inbox: &Mutex<Inbox>, retention: i64) {
        let (schedule, forget_through) = {
            let mut inbox = lock(inbox);
            (std::mem::take(&mut inbox.schedule), inbox.forget_through)
        };
        if forget_through > self.forgotten_through {
            self.forgotten_through = forget_through;
            self.overlay.retain(|&s, _| s > forget_through);
        }
        for (seq, domain, code, expires_at) in schedule {
            let purge_at = expires_at.saturating_add(retention);
            if seq > forget_through {
                self.wheel.insert(seq, wheel_time(purge_at));
                self.overlay.insert(seq, (domain, code, purge_at));
            }
        }
    }
}

/// What one [`Index::reap`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reaped {
    /// Overlay entries freed (or reduced to a tombstone over an older snapshot version).
    pub overlay: usize,
    /// Snapshot links now past their retention; they leave the file at the next compaction.
    pub snapshot: usize,
}

impl Index {
    pub(crate) fn schedule_overlay(&self, seq: u64, domain: &str, code: &str, expires_at: i64) {
        lock(&self.reap_inbox)
            .schedule
            .push((seq, domain.into(), code.into(), expires_at));
    }

    /// Forgets scheduled overlay links up to `seq`: a compacted snapshot now holds them, and
    /// [`Index::schedule_snapshot`] schedules them from there.
    pub(crate) fn forget_scheduled_through(&self, seq: u64) {
        let mut inbox = lock(&self.reap_inbox);
        inbox.forget_through = inbox.forget_through.max(seq);
    }

    /// Schedules every link of the current snapshot that has an expiry, dropping what was
    /// scheduled for an earlier snapshot. Call after a snapshot is swapped in (and once at start,
    /// in the background: it reads every entry).
    pub fn schedule_snapshot(&self) -> usize {
        let snap = self.snapshot();
        let retention = self.retention();
        let now = wheel_time(duanlian_link::now_secs());
        let mut wheel = Wheel::with_capacity(now, snap.len() / 4);
        let mut n = 0;
        for (pos, expires_at) in snap.expiries() {
            wheel.insert(
                SNAPSHOT_TOKEN | pos as u64,
                wheel_time(expires_at.saturating_add(retention)),
            );
            n += 1;
        }
        let mut r = lock(&self.reaper);
        r.take_inbox(&self.reap_inbox, retention);
        for (&seq, &(_, _, purge_at)) in &r.overlay {
            wheel.insert(seq, wheel_time(purge_at));
        }
        r.wheel = wheel;
        *lock(&self.reaper_snapshot) = Some(snap);
        n
    }

    /// Frees what has passed its retention by `now` (UTC seconds). Locks are taken per link, so
    /// writers and listings never wait long behind it; the redirect path never waits at all.
    pub fn reap(&self, now: i64) -> Reaped {
        let mut due = Vec::new();
        {
            let mut r = lock(&self.reaper);
            r.take_inbox(&self.reap_inbox, self.retention());
            r.wheel.advance(wheel_time(now), &mut due);
        }
        let mut done = Reaped::default();
        let scheduled = lock(&self.reaper_snapshot).clone();
        for token in due {
            if token & SNAPSHOT_TOKEN != 0 {
                let pos = (token & !SNAPSHOT_TOKEN) as usize;
                if let Some(link) = scheduled.as_ref().and_then(|s| s.link_at(pos)) {
                    if let Ok(code) = std::str::from_utf8(link.code) {
                        self.visits().forget(link.domain, code);
                    }
                    done.snapshot += 1;
                }
                continue;
            }
            let key = lock(&self.reaper).overlay.remove(&token);
            if let Some((domain, code, _)) = key {
                if self.purge_overlay(token, &domain, &code) {
                    self.visits().forget(&domain, &code);
                    done.overlay += 1;
                }
            }
        }
        self.purged_in_snapshot
            .fetch_add(done.snapshot as u64, Ordering::Relaxed);
        done
    }
}

impl Index {
    /// One round of upkeep at `now`: schedules the snapshot's expiring links if a new snapshot
    /// was swapped in since the last round (or none was scheduled yet), then reaps.
    pub fn maintain(&self, now: i64) -> Reaped {
        let current = self.snapshot();
        let scheduled = lock(&self.reaper_snapshot)
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &current));
        if !scheduled {
            let n = self.schedule_snapshot();
            tracing::debug!(links = n, "scheduled the snapshot's expiring links");
        }
        self.reap(now)
    }

    /// Starts the thread that runs [`Index::maintain`] every `every`, until the handle drops.
    pub fn start_reaper(self: &Arc<Self>, every: Duration) -> std::io::Result<ReaperThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let (index, flag) = (self.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("duanlian-reaper".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let reaped = index.maintain(duanlian_link::now_secs());
                    if reaped.overlay + reaped.snapshot > 0 {
                        tracing::debug!(
                            overlay = reaped.overlay,
                            snapshot = reaped.snapshot,
                            "purged expired links"
                        );
                    }
                    // In short naps, so a stop is noticed promptly.
                    let until = std::time::Instant::now() + every;
                    while !flag.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                        std::thread::sleep(every.min(Duration::from_millis(100)));
                    }
                }
            })?;
        Ok(ReaperThread {
            stop,
            thread: Some(thread),
        })
    }
}

/// The reaper thread of [`Index::start_reaper`]; stopped and joined on drop.
#[derive(Debug)]
pub struct ReaperThread {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for ReaperThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
