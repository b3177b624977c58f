//! Freeing memory of links past their expiry plus the retention.
//!
//! Reads never need this: a link past its retention already answers as unknown, decided from
//! its own fields. The reaper only reclaims what such links hold: overlay entries and visit
//! counters. Snapshot links live in the mapped file and leave it at the next compaction.
use crate::wheel::Wheel;
use crate::Index;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// Snapshot positions are scheduled with this bit set; overlay links by sequence number.
const SNAPSHOT_TOKEN: u64 = 1 << 63;

#[derive(Debug)]
pub(crate) struct Reaper {
    wheel: Wheel,
    /// Scheduled overlay links: sequence number → key and purge time.
    overlay: HashMap<u64, (Box<str>, Box<str>, i64)>,
}

impl Reaper {
    pub(crate) fn new(now: i64) -> Reaper {
        Reaper {
            wheel: Wheel::new(now.max(0) as u64),
            overlay: HashMap::new(),
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
        let purge_at = expires_at.saturating_add(self.retention());
        let mut r = self.reaper.lock().unwrap_or_else(|p| p.into_inner());
        r.wheel.insert(seq, purge_at.max(0) as u64);
        r.overlay
            .insert(seq, (domain.into(), code.into(), purge_at));
    }

    /// Forgets scheduled overlay links up to `seq`: a compacted snapshot now holds them, and
    /// [`Index::schedule_snapshot`] schedules them from there.
    pub(crate) fn forget_scheduled_through(&self, seq: u64) {
        let mut r = self.reaper.lock().unwrap_or_else(|p| p.into_inner());
        r.overlay.retain(|&s, _| s > seq);
    }

    /// Schedules every link of the current snapshot that has an expiry, dropping what was
    /// scheduled for an earlier snapshot. Call after a snapshot is swapped in (and once at start,
    /// in the background: it reads every entry).
    pub fn schedule_snapshot(&self) -> usize {
        let snap = self.snapshot();
        let retention = self.retention();
        let now = crate::now_for_wheel();
        let mut wheel = Wheel::with_capacity(now, snap.len() / 4);
        let mut n = 0;
        for (pos, expires_at) in snap.expiries() {
            wheel.insert(
                SNAPSHOT_TOKEN | pos as u64,
                expires_at.saturating_add(retention).max(0) as u64,
            );
            n += 1;
        }
        let mut r = self.reaper.lock().unwrap_or_else(|p| p.into_inner());
        for (&seq, &(_, _, purge_at)) in &r.overlay {
            wheel.insert(seq, purge_at.max(0) as u64);
        }
        r.wheel = wheel;
        *self
            .reaper_snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(snap);
        n
    }

    /// Frees what has passed its retention by `now` (UTC seconds). Works in chunks, so writers
    /// and listings never wait long behind it; the redirect path never waits at all.
    pub fn reap(&self, now: i64) -> Reaped {
        let mut due = Vec::new();
        {
            let mut r = self.reaper.lock().unwrap_or_else(|p| p.into_inner());
            r.wheel.advance(now.max(0) as u64, &mut due);
        }
        let mut done = Reaped::default();
        let scheduled = self
            .reaper_snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for chunk in due.chunks(4096) {
            for &token in chunk {
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
                let key = {
                    let mut r = self.reaper.lock().unwrap_or_else(|p| p.into_inner());
                    r.overlay.remove(&token)
                };
                if let Some((domain, code, _)) = key {
                    if self.purge_overlay(token, &domain, &code) {
                        self.visits().forget(&domain, &code);
                        done.overlay += 1;
                    }
                }
            }
        }
        self.purged_in_snapshot
            .fetch_add(done.snapshot as u64, Ordering::Relaxed);
        done
    }
}
