//! A hierarchical timing wheel with one-second ticks that owns no clock.
//!
//! The wheel only frees memory: whether a link redirects is decided on every read from the
//! link's own fields. So the wheel may be late (it runs when [`Wheel::advance`] is called), but it
//! never reports a token before its deadline and never forgets one.
//!
//! Six levels of 64 slots, each slot of a level as wide as the whole level below:
//!
//! ```text
//! level  slot width          level covers
//!     0  1 s                 64 s
//!     1  64 s                ~68 min
//!     2  4096 s (~68 min)    ~72.8 h
//!     3  ~72.8 h             ~194 days
//!     4  ~194 days           ~34 years
//!     5  ~34 years           ~2177 years (deadlines past ~2143 years ahead are clamped)
//! ```
//!
//! The design follows tokio's timer wheel (`tokio/src/runtime/time/wheel`): the same six levels
//! of 64, the level chosen from the highest differing 6-bit group, occupancy masks to find the
//! next slot, and cascading on the way down. Two things differ. Our clock is wall-clock UTC
//! seconds supplied by the caller, not milliseconds since a runtime started, so `elapsed` is
//! large from the first call and a clamped deadline can reach into the top level's *next*
//! turn; and the caller owns the locking.
//!
//! That second turn is why deadlines are clamped to 63 top-level slots ahead rather than 64: a
//! deadline in the top level's next turn that fell in the *current* top slot would look due now,
//! be cascaded, land in the same slot, and be re-filed forever.
//!
//! An entry goes into the level of the highest 6-bit group in which its deadline differs from
//! the current tick, so the current slot of every level above 0 is always empty. Advancing
//! finds the next occupied slot per level with a 64-bit occupancy mask (`rotate_right` +
//! `trailing_zeros`), and moves ("cascades") a higher slot's entries down once time reaches it.
//!
//! Entries live in a slab of 32-byte nodes linked into per-slot lists, so insert and remove are
//! O(1) and the wheel costs 32 bytes per scheduled entry plus the slab's spare capacity.

const LEVELS: usize = 6;
const SLOTS: usize = 64;
const BITS: u32 = 6;
/// The furthest a deadline may lie ahead of the current tick: 63 top-level slots, so a
/// deadline never shares the current top-level slot's index in the level's next turn.
const MAX_AHEAD: u64 = (SLOTS as u64 - 1) << (BITS * (LEVELS as u32 - 1));
const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    token: u64,
    deadline: u64,
    next: u32,
    prev: u32,
    /// Bumped when the node is freed, so a stale handle cannot remove a newer entry.
    generation: u32,
    level: u8,
    slot: u8,
}

#[derive(Debug, Clone)]
struct Level {
    occupied: u64,
    heads: [u32; SLOTS],
}

/// Identifies one scheduled entry, for [`Wheel::remove`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    index: u32,
    generation: u32,
}

/// The wheel; see the module docs.
#[derive(Debug, Clone)]
pub struct Wheel {
    /// The current tick (UTC seconds): every deadline at or before it has been reported.
    elapsed: u64,
    levels: Vec<Level>,
    slab: Vec<Node>,
    free: u32,
    len: usize,
}

/// The level for a deadline, seen from tick `elapsed` (both in seconds).
fn level_for(elapsed: u64, deadline: u64) -> usize {
    // `| 63` keeps deadlines inside the current 64-second window on level 0.
    let masked = (elapsed ^ deadline) | (SLOTS as u64 - 1);
    let significant = 63 - masked.leading_zeros();
    ((significant / BITS) as usize).min(LEVELS - 1)
}

fn slot_for(deadline: u64, level: usize) -> usize {
    ((deadline >> (BITS * level as u32)) & (SLOTS as u64 - 1)) as usize
}

impl Wheel {
    /// An empty wheel whose clock reads `now`.
    pub fn new(now: u64) -> Wheel {
        Wheel::with_capacity(now, 0)
    }

    /// An empty wheel with room for `capacity` entries before its slab grows.
    pub fn with_capacity(now: u64, capacity: usize) -> Wheel {
        Wheel {
            elapsed: now,
            levels: vec![
                Level {
                    occupied: 0,
                    heads: [NIL; SLOTS],
                };
                LEVELS
            ],
            slab: Vec::with_capacity(capacity),
            free: NIL,
            len: 0,
        }
    }

    /// Entries scheduled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tick the wheel has advanced to.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Bytes the wheel holds: its slab (spare capacity included) and level tables.
    pub fn memory_bytes(&self) -> usize {
        self.slab.capacity() * std::mem::size_of::<Node>()
            + self.levels.len() * std::mem::size_of::<Level>()
    }

    /// Schedules `token` for `deadline` (UTC seconds). A deadline already passed is reported by
    /// the next [`Wheel::advance`]; one further than ~2143 years ahead is clamped (reported
    /// early, which only frees memory early: readers decide from the link's own fields).
    pub fn insert(&mut self, token: u64, deadline: u64) -> TimerHandle {
        let deadline = deadline.clamp(self.elapsed, self.elapsed.saturating_add(MAX_AHEAD));
        let node = Node {
            token,
            deadline,
            next: NIL,
            prev: NIL,
            generation: 0,
            level: 0,
            slot: 0,
        };
        let index = if self.free != NIL {
            let i = self.free;
            let n = &mut self.slab[i as usize];
            self.free = n.next;
            *n = Node {
                generation: n.generation,
                ..node
            };
            i
        } else {
            self.slab.push(node);
            (self.slab.len() - 1) as u32
        };
        self.link(index);
        self.len += 1;
        TimerHandle {
            index,
            generation: self.slab[index as usize].generation,
        }
    }

    /// Unschedules an entry; returns its token, or `None` if it already fired or was removed.
    pub fn remove(&mut self, h: TimerHandle) -> Option<u64> {
        let n = self.slab.get(h.index as usize)?;
        if n.generation != h.generation || n.level == u8::MAX {
            return None;
        }
        let token = n.token;
        self.unlink(h.index);
        self.release(h.index);
        Some(token)
    }

    /// Moves the clock to `now` and appends every token whose deadline is at or before `now` to
    /// `expired`, each exactly once.
    pub fn advance(&mut self, now: u64, expired: &mut Vec<u64>) {
        while let Some((level, slot, deadline)) = self.next_expiration() {
            if deadline > now {
                break;
            }
            self.elapsed = self.elapsed.max(deadline);
            // Take the slot's whole list, then expire or cascade each entry.
            let mut i = self.levels[level].heads[slot];
            self.levels[level].heads[slot] = NIL;
            self.levels[level].occupied &= !(1u64 << slot);
            while i != NIL {
                let next = self.slab[i as usize].next;
                if self.slab[i as usize].deadline <= self.elapsed {
                    expired.push(self.slab[i as usize].token);
                    self.release(i);
                } else {
                    self.link(i);
                }
                i = next;
            }
        }
        self.elapsed = self.elapsed.max(now);
    }

    /// The earliest deadline of any scheduled entry's slot (a lower bound of the next firing).
    pub fn next_deadline(&self) -> Option<u64> {
        self.next_expiration().map(|(_, _, d)| d)
    }

    /// The first occupied slot at or after the current tick: lower levels always come due
    /// before higher ones, so the lowest level with anything scheduled decides.
    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        (0..LEVELS).find_map(|level| {
            let occupied = self.levels[level].occupied;
            if occupied == 0 {
                return None;
            }
            let shift = BITS * level as u32;
            let slot_range = 1u64 << shift;
            let level_range = slot_range << BITS;
            let now_slot = ((self.elapsed >> shift) & (SLOTS as u64 - 1)) as u32;
            let slot = (occupied.rotate_right(now_slot).trailing_zeros() + now_slot) % SLOTS as u32;
            // In u128: near the end of u64 time the level's next turn lies past u64::MAX, and
            // such a slot is then never due.
            let level_start = u128::from(self.elapsed & !(level_range - 1));
            let mut deadline = level_start + u128::from(slot) * u128::from(slot_range);
            if deadline + u128::from(slot_range) <= u128::from(self.elapsed) {
                // A slot behind the current one belongs to the level's next turn.
                deadline += u128::from(level_range);
            }
            Some((
                level,
                slot as usize,
                u64::try_from(deadline).unwrap_or(u64::MAX),
            ))
        })
    }

    fn link(&mut self, i: u32) {
        let deadline = self.slab[i as usize].deadline;
        let level = level_for(self.elapsed, deadline);
        let slot = slot_for(deadline, level);
        let head = self.levels[level].heads[slot];
        {
            let n = &mut self.slab[i as usize];
            n.level = level as u8;
            n.slot = slot as u8;
            n.prev = NIL;
            n.next = head;
        }
        if head != NIL {
            self.slab[head as usize].prev = i;
        }
        self.levels[level].heads[slot] = i;
        self.levels[level].occupied |= 1u64 << slot;
    }

    fn unlink(&mut self, i: u32) {
        let Node {
            next,
            prev,
            level,
            slot,
            ..
        } = self.slab[i as usize];
        let (level, slot) = (usize::from(level), usize::from(slot));
        if prev != NIL {
            self.slab[prev as usize].next = next;
        } else {
            self.levels[level].heads[slot] = next;
            if next == NIL {
                self.levels[level].occupied &= !(1u64 << slot);
            }
        }
        if next != NIL {
            self.slab[next as usize].prev = prev;
        }
    }

    fn release(&mut self, i: u32) {
        let free = self.free;
        let n = &mut self.slab[i as usize];
        n.generation = n.generation.wrapping_add(1);
        n.level = u8::MAX; // marks a free node
        n.next = free;
        self.free = i;
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn node_is_32_bytes() {
        assert_eq!(std::mem::size_of::<Node>(), 32);
    }

    #[test]
    fn levels_and_slots() {
        assert_eq!(level_for(0, 0), 0);
        assert_eq!(level_for(0, 63), 0);
        assert_eq!(level_for(0, 64), 1);
        assert_eq!(level_for(0, 4095), 1);
        assert_eq!(level_for(0, 4096), 2);
        assert_eq!(level_for(100, 1 << 35), 5);
        assert_eq!(level_for(0, u64::MAX), 5);
        // Same 64-second window as the current tick: level 0 even across a slot boundary.
        assert_eq!(level_for(130, 140), 0);
        assert_eq!(slot_for(130, 0), 2);
        assert_eq!(slot_for(64 * 5 + 3, 1), 5);
    }

    #[test]
    fn fires_at_the_deadline_not_before() {
        let mut w = Wheel::new(1_000);
        w.insert(1, 1_005);
        w.insert(2, 1_000 + 3 * 3600);
        w.insert(3, 1_000 + 400 * 86_400);
        let mut out = Vec::new();
        w.advance(1_004, &mut out);
        assert!(out.is_empty());
        w.advance(1_005, &mut out);
        assert_eq!(out, [1]);
        w.advance(1_000 + 3 * 3600 - 1, &mut out);
        assert_eq!(out, [1]);
        w.advance(1_000 + 3 * 3600, &mut out);
        assert_eq!(out, [1, 2]);
        w.advance(u64::from(u32::MAX), &mut out);
        assert_eq!(out, [1, 2, 3]);
        assert!(w.is_empty());
    }

    #[test]
    fn past_deadlines_fire_on_the_next_advance_and_removal_is_exact() {
        let mut w = Wheel::new(500);
        let a = w.insert(7, 10);
        let b = w.insert(8, 600);
        assert_eq!(w.remove(b), Some(8));
        assert_eq!(w.remove(b), None, "a handle removes once");
        let c = w.insert(9, 600); // reuses b's node
        assert_eq!(
            w.remove(b),
            None,
            "a stale handle cannot remove the new entry"
        );
        let mut out = Vec::new();
        w.advance(500, &mut out);
        assert_eq!(out, [7]);
        assert_eq!(w.remove(a), None);
        w.advance(600, &mut out);
        assert_eq!(out, [7, 9]);
        assert_eq!(w.remove(c), None);
    }

    /// SplitMix64: a fixed-seed generator for the property test.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    /// Far-future deadlines (a link "expiring" in year 9999, or at i64::MAX) once made
    /// `advance` re-file an entry into the top level's current slot forever. Every deadline up
    /// to u64::MAX, from starting ticks up to the end of time, must fire exactly once, never
    /// before its (clamped) deadline, and every advance must end.
    #[test]
    fn far_future_deadlines_end_and_fire_once() {
        let starts = [
            0,
            1_764_000_000,
            253_402_300_799,
            i64::MAX as u64,
            u64::MAX - MAX_AHEAD,
            u64::MAX - 5,
        ];
        let far = [
            253_402_300_799,
            i64::MAX as u64,
            u64::MAX,
            u64::MAX - 1,
            1 << 36,
            (1 << 36) - 1,
            1 << 40,
        ];
        for (s, &start) in starts.iter().enumerate() {
            let mut rng = Rng(s as u64);
            let mut w = Wheel::new(start);
            let mut deadlines = BTreeMap::new();
            for (t, &d) in far.iter().enumerate() {
                w.insert(t as u64, d);
                deadlines.insert(t as u64, d.clamp(start, start.saturating_add(MAX_AHEAD)));
            }
            for t in far.len() as u64..200 {
                let d = start.saturating_add(rng.next() >> (rng.next() % 64));
                w.insert(t, d);
                deadlines.insert(t, d.clamp(start, start.saturating_add(MAX_AHEAD)));
            }
            let mut now = start;
            let mut fired = Vec::new();
            let mut seen = std::collections::BTreeSet::new();
            while now < u64::MAX {
                // Jumps from seconds to the whole horizon and beyond.
                now = now
                    .saturating_add(rng.next() >> (rng.next() % 64))
                    .max(now + 1);
                fired.clear();
                w.advance(now, &mut fired);
                for t in &fired {
                    assert!(
                        deadlines[t] <= now,
                        "start {start}: {t} fired early at {now}"
                    );
                    assert!(seen.insert(*t), "start {start}: {t} fired twice");
                }
            }
            assert!(w.is_empty(), "start {start}: {} left", w.len());
            assert_eq!(seen.len(), deadlines.len());
        }
    }

    /// The regression as the index met it: a tick of today and a deadline of year 9999.
    #[test]
    fn a_year_9999_deadline_does_not_wedge_advance() {
        let now = 1_764_000_000;
        let mut w = Wheel::new(now);
        w.insert(1, 253_402_300_799);
        w.insert(2, u64::MAX);
        let mut out = Vec::new();
        for step in 1..=1000u64 {
            w.advance(now + step * 3_600, &mut out);
        }
        assert!(out.is_empty());
        w.advance(u64::MAX, &mut out);
        out.sort_unstable();
        assert_eq!(out, [1, 2]);
    }

    /// Against a sorted map: after every advance, exactly the entries due have fired, once each.
    #[test]
    fn property_agrees_with_a_model() {
        for seed in 0..200 {
            let mut rng = Rng(seed);
            let start = 1_700_000_000 + rng.next() % 100_000;
            let mut w = Wheel::new(start);
            let mut model: BTreeMap<u64, u64> = BTreeMap::new(); // token -> deadline
            let mut handles = Vec::new();
            let mut now = start;
            let mut fired = Vec::new();
            for step in 0..300u64 {
                match rng.next() % 10 {
                    0..=4 => {
                        // Deadlines from the past to years ahead, favouring the near future.
                        let ahead = match rng.next() % 4 {
                            0 => rng.next() % 70,
                            1 => rng.next() % 5_000,
                            2 => rng.next() % 400_000,
                            _ => rng.next() % 200_000_000,
                        };
                        let deadline = (now + ahead).saturating_sub(rng.next() % 3 * 10);
                        let token = seed * 1_000 + step;
                        handles.push((token, w.insert(token, deadline)));
                        model.insert(token, deadline.max(now));
                    }
                    5 if !handles.is_empty() => {
                        let (token, h) =
                            handles.swap_remove((rng.next() % handles.len() as u64) as usize);
                        assert_eq!(w.remove(h), model.remove(&token).map(|_| token));
                    }
                    _ => {
                        now += match rng.next() % 3 {
                            0 => rng.next() % 5,
                            1 => rng.next() % 10_000,
                            _ => rng.next() % 50_000_000,
                        };
                        fired.clear();
                        w.advance(now, &mut fired);
                        let mut due: Vec<u64> = model
                            .iter()
                            .filter(|(_, &d)| d <= now)
                            .map(|(&t, _)| t)
                            .collect();
                        model.retain(|_, d| *d > now);
                        fired.sort_unstable();
                        due.sort_unstable();
                        assert_eq!(fired, due, "seed {seed} step {step} now {now}");
                    }
                }
                assert_eq!(w.len(), model.len());
            }
        }
    }
}
