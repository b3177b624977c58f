//! The per-link aggregates' hash table: open addressing with linear probing and the entries
//! inline, so that where a key's entry lies follows from its hash and the table's size alone.
//! A click can then have that memory fetched before it takes the table's lock
//! ([`Table::place`]), where a table that keeps control bytes (hashbrown's) must first read them
//! under the lock, and the atomic that releases it waits for that read.

/// Keys by their 64-bit hash, values inline; the caller compares keys.
#[derive(Debug)]
pub(crate) struct Table<T> {
    /// A power of two long, or empty.
    slots: Box<[Option<Entry<T>>]>,
    len: usize,
    /// How full it may get, in 64ths.
    max_load: usize,
    /// How many fills in a row used less than an eighth of the slots ([`Table::clear`]).
    sparse_fills: u8,
}

/// A key's hash and value, starting a cache line: an entry that fits one line is then read
/// in one (the stats' links do, [`crate::stats`]), where one straddling two costs a click two
/// misses.
#[derive(Debug)]
#[repr(align(64))]
struct Entry<T>(u64, T);

/// Sparse fills in a row after which [`Table::clear`] lets the slots go: deltas are emptied
/// about once a second while clicks come, so about a minute.
const SPARSE_FILLS: usize = 60;

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table::with_max_load(48)
    }
}

impl<T> Table<T> {
    /// A table that doubles once `max_load` 64ths full (from 32, half, to 48, three quarters).
    pub(crate) fn with_max_load(max_load: usize) -> Self {
        Table {
            slots: Box::default(),
            len: 0,
            max_load: max_load.clamp(32, 48),
            sparse_fills: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// The bytes a slot takes.
    pub(crate) const SLOT: usize = std::mem::size_of::<Option<Entry<T>>>();

    /// The address of the first slot and the mask that takes a hash to a slot's index, `None`
    /// while empty: the first slot a key is looked for in, and the slots after it, are at
    /// `address + (hash & mask) * SLOT` on. Only for prefetching.
    pub(crate) fn place(&self) -> Option<(usize, usize)> {
        (!self.slots.is_empty()).then(|| (self.slots.as_ptr() as usize, self.mask()))
    }

    /// Has the first slots a key of `hash` is looked for in fetched.
    pub(crate) fn prefetch(&self, hash: u64) {
        if let Some((at, mask)) = self.place() {
            Self::prefetch_at(at, mask, hash);
        }
    }

    /// [`Table::prefetch`] for a table whose slots are at `at` with mask `mask`, as
    /// [`Table::place`] gave them (read without the table at hand, nor its lock).
    pub(crate) fn prefetch_at(at: usize, mask: usize, hash: u64) {
        let first = (hash as usize & mask).wrapping_mul(Self::SLOT);
        // Two slots, two lines: a probe finds a key in fewer on average, three quarters full
        // at most.
        crate::stats::prefetch::<false>(at.wrapping_add(first), 2 * Self::SLOT);
    }

    /// Where the key of hash `hash` is, or the empty slot that ends its probe.
    fn probe(&self, hash: u64, eq: impl Fn(&T) -> bool) -> Result<usize, usize> {
        let mask = self.mask();
        let mut i = hash as usize & mask;
        loop {
            match &self.slots[i] {
                None => return Err(i),
                Some(Entry(h, v)) if *h == hash && eq(v) => return Ok(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    pub(crate) fn find(&self, hash: u64, eq: impl Fn(&T) -> bool) -> Option<&T> {
        if self.slots.is_empty() {
            return None;
        }
        let i = self.probe(hash, eq).ok()?;
        self.slots[i].as_ref().map(|Entry(_, v)| v)
    }

    /// The value under the key, made by `make` if there is none.
    pub(crate) fn get_or_insert_with(
        &mut self,
        hash: u64,
        eq: impl Fn(&T) -> bool,
        make: impl FnOnce() -> T,
    ) -> &mut T {
        // At most `max_load` full, three quarters at most: a probe then finds a key in 1.5 to
        // 2.5 slots on average, two or three cache lines from its first.
        if (self.len + 1) * 64 > self.slots.len() * self.max_load {
            self.grow();
        }
        let i = match self.probe(hash, eq) {
            Ok(i) => i,
            Err(i) => {
                self.len += 1;
                self.slots[i] = Some(Entry(hash, make()));
                i
            }
        };
        match &mut self.slots[i] {
            Some(Entry(_, v)) => v,
            None => unreachable!("slot {i} was just found or filled"),
        }
    }

    fn grow(&mut self) {
        self.rebuild((self.slots.len() * 2).max(16));
    }

    /// The table again, `size` slots long: also what mends probes cut short by emptied slots.
    fn rebuild(&mut self, size: usize) {
        let old = std::mem::replace(&mut self.slots, (0..size).map(|_| None).collect());
        for Entry(hash, v) in old.into_vec().into_iter().flatten() {
            let (Ok(i) | Err(i)) = self.probe(hash, |_| false);
            self.slots[i] = Some(Entry(hash, v));
        }
    }

    /// Takes the value under the key out.
    pub(crate) fn remove(&mut self, hash: u64, eq: impl Fn(&T) -> bool) -> Option<T> {
        if self.slots.is_empty() {
            return None;
        }
        let i = self.probe(hash, eq).ok()?;
        let taken = self.slots[i].take().map(|Entry(_, v)| v);
        self.len -= 1;
        self.close_gap(i);
        taken
    }

    /// Moves back the entries after an emptied slot that probes would otherwise no longer
    /// reach (no tombstones: they would lengthen every later probe).
    fn close_gap(&mut self, mut gap: usize) {
        let mask = self.mask();
        let mut j = (gap + 1) & mask;
        while let Some(Entry(hash, _)) = &self.slots[j] {
            let home = *hash as usize & mask;
            // The entry may fill the gap if the gap lies on its probe, between home and j.
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(gap) & mask) {
                self.slots[gap] = self.slots[j].take();
                gap = j;
            }
            j = (j + 1) & mask;
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten().map(|Entry(_, v)| v)
    }

    /// The values with their keys' hashes.
    pub(crate) fn iter_hashed(&self) -> impl Iterator<Item = (u64, &T)> {
        self.slots.iter().flatten().map(|Entry(h, v)| (*h, v))
    }

    /// Takes every value out. The slots stay for the next fill unless the last
    /// [`SPARSE_FILLS`] in a row each used less than an eighth of them: a delta emptied each
    /// second then does not grow from nothing each second, nor after a second that ends a
    /// burst half-way (regrowing a node's delta after every lull had fresh memory zeroed, 4% of
    /// a cluster node's CPU under the bench's bursts); a burst's room goes a minute after it.
    pub(crate) fn clear(&mut self) {
        if self.len * 8 >= self.slots.len() {
            self.sparse_fills = 0;
        } else {
            self.sparse_fills = self.sparse_fills.saturating_add(1);
        }
        if usize::from(self.sparse_fills) >= SPARSE_FILLS {
            self.slots = Box::default();
            self.sparse_fills = 0;
        } else if self.len > 0 {
            self.slots.iter_mut().for_each(|slot| *slot = None);
        }
        self.len = 0;
    }

    /// Keeps the values `keep` says yes to (it may change them), each looked at once.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&mut T) -> bool) {
        let mut removed = false;
        for slot in self.slots.iter_mut() {
            if slot.as_mut().is_some_and(|Entry(_, v)| !keep(v)) {
                *slot = None;
                self.len -= 1;
                removed = true;
            }
        }
        if removed {
            self.rebuild(self.slots.len());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Against a HashMap, with hashes made to collide in a small table so that probes wrap
    /// and removals move entries back.
    #[test]
    fn behaves_as_a_map_under_inserts_removals_and_retain() {
        let mut table: Table<(u32, u64)> = Table::default();
        let mut model: HashMap<u32, u64> = HashMap::new();
        let hash = |k: u32| u64::from(k.wrapping_mul(2_654_435_761) % 97) | 0xF00 << 32;
        let mut x: u32 = 1;
        for round in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let k = x % 300;
            match round % 7 {
                0..=3 => {
                    let v = table.get_or_insert_with(hash(k), |e| e.0 == k, || (k, 0));
                    v.1 += 1;
                    *model.entry(k).or_default() += 1;
                }
                4 | 5 => {
                    assert_eq!(
                        table.remove(hash(k), |e| e.0 == k).map(|e| e.1),
                        model.remove(&k)
                    );
                }
                _ if round % 1000 == 6 => {
                    table.retain(|e| e.0 % 3 != 0);
                    model.retain(|k, _| k % 3 != 0);
                }
                _ => {}
            }
            assert_eq!(table.len(), model.len());
        }
        let mut emptied: Table<u32> = Table::default();
        for k in 0..100 {
            emptied.get_or_insert_with(hash(k), |&e| e == k, || k);
        }
        let place = emptied.place();
        emptied.clear();
        assert!(emptied.is_empty() && emptied.find(hash(7), |&e| e == 7).is_none());
        assert_eq!(emptied.place(), place, "a well-used table keeps its slots");
        for fill in 1..=SPARSE_FILLS {
            emptied.get_or_insert_with(hash(7), |&e| e == 7, || 7);
            emptied.clear();
            let kept = emptied.place() == place;
            assert_eq!(
                kept,
                fill < SPARSE_FILLS,
                "fill {fill}: nearly empty ones in a row"
            );
        }
        assert_eq!(emptied.place(), None, "let go after {SPARSE_FILLS} of them");
        for k in 0..300 {
            assert_eq!(
                table.find(hash(k), |e| e.0 == k).map(|e| e.1),
                model.get(&k).copied()
            );
        }
        let mut all: Vec<_> = table.iter().copied().collect();
        all.sort_unstable();
        let mut want: Vec<_> = model.into_iter().collect();
        want.sort_unstable();
        assert_eq!(all, want);
    }
}
