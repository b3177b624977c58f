//! Per-link aggregates, updated as clicks arrive, so a report never rescans the log.
use crate::table::Table;
use crate::{Click, Device};
use std::collections::HashMap;
use std::num::NonZeroU8;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

const DAY: i64 = 86_400;
/// Distinct referrer hosts kept per link and day; the rest are summed under [`OTHER_REFERRERS`].
const MAX_REFERRERS_PER_DAY: usize = 1_000;
/// The bucket for referrer hosts past [`MAX_REFERRERS_PER_DAY`].
pub const OTHER_REFERRERS: &str = "(other)";
/// The bucket for visits without a referrer.
pub const DIRECT: &str = "(direct)";

/// One link's clicks on one UTC day: 48 bytes, plus the referrer table once a person arrives
/// from somewhere.
#[derive(Debug)]
struct Day {
    day: i64,
    devices: [u64; 4],
    /// Human visits by referrer host; those without one are the rest of the human visits.
    /// Allocated only once a referrer shows up. A fixed hash seed is cheap to make, and the
    /// per-day cap bounds what colliding hosts could cost. Boxed so that the many days without
    /// referrers (bots, SMS campaigns) keep `Day` at 48 bytes instead of 80.
    #[allow(clippy::box_collection)]
    referrers: Option<Box<Referrers>>,
}

/// Human visits by referrer host.
type Referrers = HashMap<Box<[u8]>, u64, foldhash::fast::FixedState>;

impl Day {
    fn new(day: i64) -> Day {
        Day {
            day,
            devices: [0; 4],
            referrers: None,
        }
    }

    fn count_referrer(&mut self, host: &[u8], n: u64) {
        let referrers = self.referrers.get_or_insert_with(Box::default);
        if let Some(sum) = referrers.get_mut(host) {
            *sum += n;
        } else if referrers.len() < MAX_REFERRERS_PER_DAY {
            referrers.insert(host.into(), n);
        } else {
            *referrers
                .entry(OTHER_REFERRERS.as_bytes().into())
                .or_default() += n;
        }
    }
}

/// One day of a link as reports and summaries read it (the latest day's counts are kept in
/// two parts, [`Link::clicks`] and the rest).
struct DayView<'a> {
    day: i64,
    devices: [u64; 4],
    referrers: Option<&'a Referrers>,
}

impl<'a> DayView<'a> {
    fn of(d: &'a Day) -> DayView<'a> {
        DayView {
            day: d.day,
            devices: d.devices,
            referrers: d.referrers.as_deref(),
        }
    }
}

/// Clicks per link (`domain \t code`, as bytes: the redirect thread counts a click from the
/// log line it has just written, with no second check of its text) and UTC day.
#[derive(Debug, Default)]
pub struct Stats {
    links: Shards,
    /// Counts what the redirect threads have recorded but not counted yet (they count a
    /// batch at a time): [`Stats::forget`] runs it first, or a deleted link's last clicks
    /// would be counted after it and bring its entry back.
    pending: std::sync::OnceLock<Uncounted>,
}

/// What counts the clicks recorded but not counted yet, into the statistics it is given.
pub(crate) struct Uncounted(pub(crate) Box<dyn Fn(&Stats) + Send + Sync>);

impl std::fmt::Debug for Uncounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Uncounted")
    }
}

/// A link's clicks, laid out for the click that counts in it: with the table's hash, the
/// key's first bytes and the latest day's counts fill one 64-byte line, so a click on a link
/// far outside the cache costs that line and no other. (The entry was 120 bytes before,
/// spread over two or three lines: with 100,000 links clicked at random that was two cache
/// misses a click, and what they evicted cost the rest of the redirect as much again.) What a
/// click seldom needs is behind `rest`: earlier days, the latest day's referrers, counts past
/// `u32`, and a long key's bytes past [`HEAD`].
#[derive(Debug)]
struct Link {
    /// The key's length plus one, 255 at most.
    len: NonZeroU8,
    /// The key's first bytes: all of `domain \t code` for a short link domain.
    head: [u8; HEAD],
    /// The latest day with clicks (days are clamped into `i32`: six million years).
    day: i32,
    /// The latest day's clicks by device ([`Device::index`]), past what `rest.latest` holds.
    clicks: [u32; 4],
    rest: Option<Box<Rest>>,
}

/// Key bytes kept in a link's line: `go.example.cn \t x7Kp2Qa` is 21.
const HEAD: usize = 27;

/// What a link's line has no room for.
#[derive(Debug)]
struct Rest {
    /// The key's bytes past [`HEAD`].
    tail: Box<[u8]>,
    /// The latest day's counts added in bulk or past `u32::MAX` (on top of [`Link::clicks`]),
    /// and its referrers.
    latest: Day,
    /// Earlier days, in order.
    earlier: Vec<Day>,
}

/// What [`Link::len`] holds for `key`.
fn len_code(key: &[u8]) -> NonZeroU8 {
    NonZeroU8::MIN.saturating_add(u8::try_from(key.len()).unwrap_or(u8::MAX))
}

/// The days a click may be on: 1970-01-01 to 9999-12-31, the days a date has four digits for.
/// Lines and deltas outside are refused where they are read, so that no day of absurd clicks
/// reaches the aggregates (whose days are `i32`).
pub(crate) const DAYS: std::ops::RangeInclusive<i64> = 0..=2_932_896;

fn clamp_day(day: i64) -> i32 {
    i32::try_from(day).unwrap_or(if day < 0 { i32::MIN } else { i32::MAX })
}

impl Link {
    fn new(key: &[u8], day: i64) -> Link {
        let n = key.len().min(HEAD);
        let mut head = [0; HEAD];
        head[..n].copy_from_slice(&key[..n]);
        let mut link = Link {
            len: len_code(key),
            head,
            day: clamp_day(day),
            clicks: [0; 4],
            rest: None,
        };
        if key.len() > HEAD {
            link.rest_mut().tail = key[HEAD..].into();
        }
        link
    }

    /// Whether this is the link `key`: its length and first bytes, in the line already read,
    /// and only for a long key the rest.
    #[inline]
    fn is(&self, key: &[u8]) -> bool {
        let n = key.len().min(HEAD);
        self.len == len_code(key)
            && self.head[..n] == key[..n]
            && (key.len() <= HEAD || self.rest.as_ref().is_some_and(|r| *r.tail == key[HEAD..]))
    }

    fn key(&self) -> std::borrow::Cow<'_, [u8]> {
        match &self.rest {
            Some(rest) if !rest.tail.is_empty() => [&self.head[..], &rest.tail].concat().into(),
            _ => self.head[..usize::from(self.len.get() - 1).min(HEAD)].into(),
        }
    }

    fn rest_mut(&mut self) -> &mut Rest {
        let day = self.day;
        self.rest.get_or_insert_with(|| {
            Box::new(Rest {
                tail: Box::default(),
                latest: Day::new(day.into()),
                earlier: Vec::new(),
            })
        })
    }

    /// Counts a click. Clicks arrive in time order, so nearly all count towards the latest
    /// day, in the line.
    #[inline]
    fn count(&mut self, day: i64, device: Device, referrer: &[u8]) {
        let referred = !referrer.is_empty() && device != Device::Bot;
        if clamp_day(day) != self.day {
            let d = self.day_mut(day);
            d.devices[device.index()] += 1;
            if referred {
                d.count_referrer(referrer, 1);
            }
            return;
        }
        let c = &mut self.clicks[device.index()];
        match c.checked_add(1) {
            Some(n) => *c = n,
            None => {
                *c = 0;
                self.rest_mut().latest.devices[device.index()] += 1 << 32;
            }
        }
        if referred {
            self.rest_mut().latest.count_referrer(referrer, 1);
        }
    }

    /// Adds counts by device on `day`: in the line where they fit, as a day's summary of a
    /// link loaded at start nearly always does.
    fn add(&mut self, day: i64, devices: [u64; 4]) {
        if clamp_day(day) != self.day {
            for (sum, n) in self.day_mut(day).devices.iter_mut().zip(devices) {
                *sum = sum.saturating_add(n);
            }
            return;
        }
        let mut spilled = [0; 4];
        for ((c, n), spill) in self.clicks.iter_mut().zip(devices).zip(&mut spilled) {
            match u64::from(*c).checked_add(n).map(u32::try_from) {
                Some(Ok(sum)) => *c = sum,
                _ => *spill = n,
            }
        }
        if spilled != [0; 4] {
            for (sum, n) in self.rest_mut().latest.devices.iter_mut().zip(spilled) {
                *sum = sum.saturating_add(n);
            }
        }
    }

    /// Where counts of `day` beyond the line go: for the latest day (a later day becomes it),
    /// what adds to [`Link::clicks`]; for an earlier one, that day.
    fn day_mut(&mut self, day: i64) -> &mut Day {
        let day = clamp_day(day);
        if day > self.day {
            self.roll(day);
        }
        let latest = self.day;
        let rest = self.rest_mut();
        if day == latest {
            return &mut rest.latest;
        }
        // A straggler from before midnight.
        let day = i64::from(day);
        let i = match rest.earlier.binary_search_by_key(&day, |d| d.day) {
            Ok(i) => i,
            Err(i) => {
                rest.earlier.insert(i, Day::new(day));
                i
            }
        };
        &mut rest.earlier[i]
    }

    /// Makes `day` the latest, the latest so far an earlier day.
    fn roll(&mut self, day: i32) {
        let clicks = std::mem::take(&mut self.clicks);
        let was = std::mem::replace(&mut self.day, day);
        let rest = self.rest_mut();
        let mut previous = std::mem::replace(&mut rest.latest, Day::new(day.into()));
        previous.day = was.into();
        for (sum, n) in previous.devices.iter_mut().zip(clicks) {
            *sum += u64::from(n);
        }
        rest.earlier.push(previous);
    }

    /// Every day with clicks, in order.
    fn days(&self) -> impl Iterator<Item = DayView<'_>> {
        let mut latest = DayView {
            day: self.day.into(),
            devices: self.clicks.map(u64::from),
            referrers: None,
        };
        if let Some(rest) = &self.rest {
            for (sum, n) in latest.devices.iter_mut().zip(rest.latest.devices) {
                *sum += n;
            }
            latest.referrers = rest.latest.referrers.as_deref();
        }
        let earlier = self.rest.iter().flat_map(|r| r.earlier.iter());
        earlier.map(DayView::of).chain(std::iter::once(latest))
    }

    /// Forgets the days before `first`; whether any is left.
    fn keep_from(&mut self, first: i64) -> bool {
        if let Some(rest) = &mut self.rest {
            rest.earlier.retain(|d| d.day >= first);
        }
        i64::from(self.day) >= first
    }
}

/// The per-link map cut into shards by key: a map of a million links that doubles moves
/// all its entries at once, milliseconds in which the redirect thread counting the click that
/// made it grow answers nothing; a shard moves a thousandth of them. A day summary is also written a few
/// shards at a time ([`Stats::write_day_part`]). A key is hashed once, for its shard and for
/// its slot in the shard's table.
#[derive(Debug)]
struct Shards {
    shards: Box<[Mutex<Links>]>,
    /// Where each shard's slots are as of its last change under the lock ([`Table::place`]:
    /// the address, and the mask's bits from bit 56): read without the lock, only to have a
    /// key's slots fetched before a click takes it. Apart from the locks, and eight bytes
    /// each, so that this read finds them in the cache.
    places: Box<[AtomicU64]>,
    hasher: foldhash::fast::RandomState,
}

type Links = Table<Link>;

// A link's entry is one cache line, [`Link`]: anything added to it must come out elsewhere.
const _: () = assert!(Links::SLOT == 64);

/// A shard's table, locked; it publishes where the slots are when let go, as they move when
/// the table grows.
struct Locked<'a> {
    links: std::sync::MutexGuard<'a, Links>,
    place: &'a AtomicU64,
}

impl std::ops::Deref for Locked<'_> {
    type Target = Links;

    fn deref(&self) -> &Links {
        &self.links
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Links {
        &mut self.links
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let place = match self.links.place() {
            Some((at, mask)) => (at as u64) | u64::from(mask.count_ones()) << 56,
            None => 0,
        };
        // Compared first: a store would take the line from the threads reading it.
        if self.place.load(Ordering::Relaxed) != place {
            self.place.store(place, Ordering::Relaxed);
        }
    }
}

/// Shards a pass over every link ([`Stats::absorb`], [`Stats::clear`]) works through before it
/// offers the core to other threads: a few hundred links for a node's worth. The scheduler may
/// not take the offer (on Linux 6.18 a redirect thread sharing the core still waited for
/// milliseconds, docs/PERFORMANCE.md, sixth round), but it costs next to nothing.
const YIELD_EVERY: usize = 8;

/// How many parts a day summary is written in, one shard each.
pub(crate) const SHARDS: usize = 1024;

impl Default for Shards {
    fn default() -> Self {
        Shards {
            // Shards fill evenly, so with one limit they would all double within the same
            // few seconds; each has its own, from five eighths to three quarters.
            shards: (0..SHARDS)
                .map(|i| Mutex::new(Table::with_max_load(40 + i % 9)))
                .collect(),
            places: (0..SHARDS).map(|_| AtomicU64::default()).collect(),
            hasher: process_hasher(),
        }
    }
}

/// The hasher of every [`Stats`] in the process, seeded at random once: a key then has the same
/// hash, and the same shard, in a redirect thread's delta as in the node's statistics, so a delta
/// is added in shard by shard, one lock each, with the hashes it kept.
fn process_hasher() -> foldhash::fast::RandomState {
    static HASHER: std::sync::OnceLock<foldhash::fast::RandomState> = std::sync::OnceLock::new();
    HASHER
        .get_or_init(foldhash::fast::RandomState::default)
        .clone()
}

impl Shards {
    fn hash(&self, key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    /// The shard of a key's hash. Its high bits: the table places an entry by the low bits,
    /// which must vary within a shard.
    fn shard(hash: u64) -> usize {
        (hash >> 32) as usize % SHARDS
    }

    fn of(&self, hash: u64) -> Locked<'_> {
        self.lock(Self::shard(hash))
    }

    fn lock(&self, shard: usize) -> Locked<'_> {
        Locked {
            links: lock(&self.shards[shard]),
            place: &self.places[shard],
        }
    }

    fn each(&self) -> impl Iterator<Item = Locked<'_>> {
        (0..SHARDS).map(|shard| self.lock(shard))
    }

    /// Has the first slots a key of `hash` is looked for in fetched, without the lock.
    fn prefetch(&self, hash: u64) {
        let place = self.places[Self::shard(hash)].load(Ordering::Relaxed);
        if place == 0 {
            return;
        }
        let at = (place & ((1 << 56) - 1)) as usize;
        let mask = 1usize.wrapping_shl((place >> 56) as u32).wrapping_sub(1);
        Links::prefetch_at(at, mask, hash);
    }

    /// A link's entry, created (its latest day `day`) if it has none.
    fn link_mut<'a>(&self, links: &'a mut Links, hash: u64, key: &[u8], day: i64) -> &'a mut Link {
        links.get_or_insert_with(hash, |l| l.is(key), || Link::new(key, day))
    }

    /// What `f` makes of a link's entry, if it has one.
    fn read<R>(&self, key: &[u8], f: impl FnOnce(Option<&Link>) -> R) -> R {
        let hash = self.hash(key);
        let links = self.of(hash);
        f(links.find(hash, |l| l.is(key)))
    }
}

/// Clicks a batch has fetched ahead of the one it counts: enough misses in flight to cover a
/// miss's latency, few enough that the first fetched is not evicted before it is used.
const AHEAD: usize = 8;

/// Clicks a redirect thread records before it counts them, all at once
/// ([`Stats::count_marked`]): a few microseconds of work, so no request waits long behind it.
pub(crate) const BATCH: usize = 64;

/// Where a click's key and referrer are in the lines it was written into, and what else
/// counting it needs: the redirect thread keeps one per click for the writer to count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    key: (u32, u32),
    referrer: (u32, u32),
    day: i64,
    device: Device,
}

impl Mark {
    pub(crate) fn new(spans: crate::log::Spans, day: i64, device: Device) -> Mark {
        // A slot's lines are far below 4 GiB (its capacity is in clicks); were they not, the
        // key would come out empty and the click go uncounted, not miscounted.
        let at = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
        Mark {
            key: (at(spans.key.start), at(spans.key.end)),
            referrer: (at(spans.referrer.start), at(spans.referrer.end)),
            day,
            device,
        }
    }
}

/// A mutex's guard, even after a panic elsewhere: what it guards is counts and bytes, still
/// worth using.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Asks the processor to bring in the cache lines of `len` bytes at `address`, without waiting
/// for them. `NEAR`: into every level of the cache, for data about to be used and kept; else
/// (the aggregates' entries, a random one a click, in a table far larger than the cache) as
/// non-temporal, close to the core but not spread over the outer levels, where each would
/// push out a line the redirect path uses (measured: 2% less CPU per redirect).
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn prefetch<const NEAR: bool>(address: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use core::arch::x86_64::{_mm_prefetch, _MM_HINT_NTA, _MM_HINT_T0};
        let first = address & !63;
        for line in 0..((address & 63) + len).div_ceil(64) {
            let at = std::ptr::without_provenance::<i8>(first.wrapping_add(line * 64));
            // SAFETY: a prefetch neither reads nor writes memory as the program sees it, and
            // does not fault, whatever the address: it is a hint to the cache.
            unsafe {
                if NEAR {
                    _mm_prefetch::<_MM_HINT_T0>(at);
                } else {
                    _mm_prefetch::<_MM_HINT_NTA>(at);
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (address, len);
}

fn link_key(domain: &str, code: &str) -> Vec<u8> {
    [domain.as_bytes(), b"\t", code.as_bytes()].concat()
}

/// One link's `L` line of a day and its `R` lines (see [`Stats::write_day`]).
fn write_link_day(out: &mut Vec<u8>, key: &[u8], d: &DayView<'_>) {
    out.extend_from_slice(b"L\t");
    out.extend_from_slice(key);
    for n in d.devices {
        push_count(out, n);
    }
    out.push(b'\n');
    for (host, n) in d.referrers.iter().flat_map(|r| r.iter()) {
        out.extend_from_slice(b"R\t");
        out.extend_from_slice(host);
        push_count(out, *n);
        out.push(b'\n');
    }
}

fn push_count(out: &mut Vec<u8>, n: u64) {
    out.push(b'\t');
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The statistics of one link over a range of days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// First day (days since 1970-01-01, UTC), inclusive.
    pub from_day: i64,
    /// Last day, inclusive.
    pub to_day: i64,
    /// Visits by people.
    pub human: u64,
    /// Fetches by bots (not visits).
    pub bot: u64,
    /// `(day, human, bot)` for every day of the range, zeros included.
    pub per_day: Vec<(i64, u64, u64)>,
    /// Human visits by referrer host, most first ([`DIRECT`] for none).
    pub referrers: Vec<(String, u64)>,
    /// Clicks by device class, in [`Device::ALL`] order.
    pub devices: Vec<(Device, u64)>,
}

impl Stats {
    /// Counts a batch of clicks.
    pub fn add(&self, clicks: &[Click]) {
        for c in clicks {
            let (key, referrer) = c.key_and_referrer_bytes();
            let hash = self.links.hash(key);
            self.count(hash, key, c.at.div_euclid(DAY), c.device, referrer);
        }
    }

    /// Counts a batch of clicks written into `lines`, where `marks` say their keys and
    /// referrers are. The links' entries are far apart in a table far larger than the cache,
    /// so each is fetched [`AHEAD`] clicks before it is counted: the misses then overlap,
    /// where a click counted on its own waits for its entry.
    pub(crate) fn count_marked(&self, lines: &[u8], marks: &[Mark]) {
        let key = |m: &Mark| {
            lines
                .get(m.key.0 as usize..m.key.1 as usize)
                .unwrap_or_default()
        };
        let mut hashes = [0u64; BATCH];
        for marks in marks.chunks(BATCH) {
            for (hash, m) in hashes.iter_mut().zip(marks) {
                *hash = self.links.hash(key(m));
            }
            let hashes = &hashes[..marks.len()];
            for &hash in hashes.iter().take(AHEAD) {
                self.links.prefetch(hash);
            }
            for (i, (m, &hash)) in marks.iter().zip(hashes).enumerate() {
                if let Some(&ahead) = hashes.get(i + AHEAD) {
                    self.links.prefetch(ahead);
                }
                let (key, referrer) = (
                    key(m),
                    lines
                        .get(m.referrer.0 as usize..m.referrer.1 as usize)
                        .unwrap_or_default(),
                );
                if !key.is_empty() {
                    self.count(hash, key, m.day, m.device, referrer);
                }
            }
        }
    }

    /// Counts one click on the link `key` (`domain \t code`, of hash `hash`) on `day`, from a
    /// referrer host (empty: none).
    #[inline(always)]
    fn count(&self, hash: u64, key: &[u8], day: i64, device: Device, referrer: &[u8]) {
        let mut links = self.links.of(hash);
        self.links
            .link_mut(&mut links, hash, key, day)
            .count(day, device, referrer);
    }

    /// Adds everything `other` counted: a node's own delta into its statistics. The work
    /// grows with the links and days in `other`, not with its clicks; it makes way for other
    /// threads every few shards, as a second's delta of many links is milliseconds of work
    /// on a core that redirects may share.
    pub fn absorb(&self, other: &Stats) {
        for (n, theirs) in other.links.each().enumerate() {
            if n % YIELD_EVERY == YIELD_EVERY - 1 {
                std::thread::yield_now();
            }
            // Both hash alike (`process_hasher`): their shard's links are all in our shard of
            // the same number, and keep their hashes.
            let mut mine = self.links.lock(n);
            // Each link's entry is fetched [`AHEAD`] links before it is added in, as a batch
            // of clicks is counted: the links are scattered over a table far larger than the
            // cache, and one link's work is too short to hide one miss.
            let places: Vec<(u64, &Link)> = theirs.iter_hashed().collect();
            for &(hash, _) in places.iter().take(AHEAD) {
                mine.prefetch(hash);
            }
            for (i, &(hash, link)) in places.iter().enumerate() {
                if let Some(&(ahead, _)) = places.get(i + AHEAD) {
                    mine.prefetch(ahead);
                }
                let key = link.key();
                debug_assert_eq!(hash, self.links.hash(&key), "one hasher for all statistics");
                let entry = self.links.link_mut(&mut mine, hash, &key, link.day.into());
                for d in link.days() {
                    entry.add(d.day, d.devices);
                    if let Some(referrers) = d.referrers {
                        let day = entry.day_mut(d.day);
                        for (host, n) in referrers.iter() {
                            day.count_referrer(host, *n);
                        }
                    }
                }
            }
        }
    }

    /// Empties the statistics, keeping the room they took unless it has long been little used
    /// (see `Table::clear`): a delta handed back for reuse then counts the next second's
    /// clicks without growing its tables (and having the fresh memory zeroed) all over again.
    /// Makes way for other threads every few shards, as [`Stats::absorb`] does.
    pub fn clear(&self) {
        for (n, mut links) in self.links.each().enumerate() {
            if n % YIELD_EVERY == YIELD_EVERY - 1 {
                std::thread::yield_now();
            }
            links.clear();
        }
    }

    /// Appends day `day`'s aggregates in the day-summary text form (see [`crate::checkpoint`]):
    /// an `L` line per link (`L domain code mobile desktop other bot`, tab-separated, counts in
    /// [`Device::index`] order), each followed by its `R host count` referrer lines.
    pub fn write_day(&self, day: i64, out: &mut Vec<u8>) {
        for part in 0..SHARDS {
            self.write_day_part(day, part, out);
        }
    }

    /// Writes every day's aggregates as [`Stats::write_day`] does and empties the statistics
    /// as [`Stats::clear`] does, in one pass over the links, a thousandth of them at a time:
    /// `each` gets a day and the text of that day's links in the part, whole links only, with
    /// no lock held. A delta is written out and emptied once a second; one pass rather than
    /// one to find its days, one per day and one to clear it reads a table larger than the
    /// cache once.
    pub fn drain_parts(&self, mut each: impl FnMut(i64, &[u8])) {
        // Nearly always one day; two after midnight.
        let mut texts: Vec<(i64, Vec<u8>)> = Vec::new();
        for part in 0..SHARDS {
            {
                let mut links = self.links.lock(part);
                for link in links.iter() {
                    let key = link.key();
                    for d in link.days() {
                        let at = match texts.iter().position(|(day, _)| *day == d.day) {
                            Some(at) => at,
                            None => {
                                texts.push((d.day, Vec::new()));
                                texts.len() - 1
                            }
                        };
                        write_link_day(&mut texts[at].1, &key, &d);
                    }
                }
                links.clear();
            }
            for (day, text) in &mut texts {
                if !text.is_empty() {
                    each(*day, text);
                    text.clear();
                }
            }
        }
    }

    /// [`Stats::write_day`] for the links of one shard (`part < SHARDS`).
    pub(crate) fn write_day_part(&self, day: i64, part: usize, out: &mut Vec<u8>) {
        if part >= SHARDS {
            return;
        }
        let links = self.links.lock(part);
        for link in links.iter() {
            if let Some(d) = link.days().find(|d| d.day == day) {
                write_link_day(out, &link.key(), &d);
            }
        }
    }

    /// Adds the aggregates of a day summary written by [`Stats::write_day`]; the error names
    /// the first line that is not one, or is 0 for a day outside 1970-01-01 to 9999-12-31.
    pub fn add_day(&self, day: i64, text: &str) -> Result<(), usize> {
        if !DAYS.contains(&day) {
            return Err(0);
        }
        let mut current: Option<(Vec<u8>, u64)> = None;
        for (n, line) in text.lines().enumerate() {
            let fields: Vec<&str> = line.split('\t').collect();
            match fields.as_slice() {
                ["L", domain, code, counts @ ..] if counts.len() == 4 => {
                    let mut devices = [0u64; 4];
                    for (slot, c) in devices.iter_mut().zip(counts) {
                        *slot = c.parse().map_err(|_| n + 1)?;
                    }
                    let key = link_key(domain, code);
                    let hash = self.links.hash(&key);
                    let mut links = self.links.of(hash);
                    self.links
                        .link_mut(&mut links, hash, &key, day)
                        .add(day, devices);
                    current = Some((key, hash));
                }
                ["R", host, count] => {
                    let count: u64 = count.parse().map_err(|_| n + 1)?;
                    let (key, hash) = current.as_ref().ok_or(n + 1)?;
                    // The link's entry may have gone since its `L` line (deleted, `forget`),
                    // and the rest of the day must still count.
                    let mut links = self.links.of(*hash);
                    let link = self.links.link_mut(&mut links, *hash, key, day);
                    link.day_mut(day).count_referrer(host.as_bytes(), count);
                }
                [""] => {}
                _ => return Err(n + 1),
            }
        }
        Ok(())
    }

    /// How many links have clicks counted.
    pub fn links(&self) -> usize {
        self.links.each().map(|links| links.len()).sum()
    }

    /// Whether no click has been counted.
    pub fn is_empty(&self) -> bool {
        self.links.each().all(|links| links.is_empty())
    }

    /// Forgets every day before the one `since` (UTC seconds) falls on, and links left with none.
    pub fn forget_before(&self, since: i64) {
        let first = since.div_euclid(DAY);
        for mut links in self.links.each() {
            links.retain(|l| l.keep_from(first));
        }
    }

    /// Has `count` run before [`Stats::forget`] (once; later calls change nothing).
    pub(crate) fn count_pending_with(&self, count: Uncounted) {
        let _ = self.pending.set(count);
    }

    /// Forgets a link's statistics (it was deleted; a new link under its code starts afresh).
    pub fn forget(&self, domain: &str, code: &str) {
        if let Some(Uncounted(count)) = self.pending.get() {
            count(self);
        }
        let key = link_key(domain, code);
        let hash = self.links.hash(&key);
        let mut links = self.links.of(hash);
        links.remove(hash, |l| l.is(&key));
    }

    /// The first day with clicks for a link.
    pub fn first_day(&self, domain: &str, code: &str) -> Option<i64> {
        self.links.read(&link_key(domain, code), |link| {
            link.and_then(|l| l.days().next()).map(|d| d.day)
        })
    }

    /// A link's statistics for days `from_day..=to_day`, with the `top` referrers.
    pub fn report(
        &self,
        domain: &str,
        code: &str,
        from_day: i64,
        to_day: i64,
        top: usize,
    ) -> Report {
        let mut devices = [0u64; 4];
        let mut referrers: HashMap<String, u64> = HashMap::new();
        let mut per_day = Vec::new();
        self.links.read(&link_key(domain, code), |link| {
            let mut days = link
                .into_iter()
                .flat_map(Link::days)
                .skip_while(|d| d.day < from_day)
                .peekable();
            for day in from_day..=to_day {
                match days.next_if(|d| d.day == day) {
                    Some(stats) => {
                        for (sum, n) in devices.iter_mut().zip(stats.devices) {
                            *sum += n;
                        }
                        for (host, n) in stats.referrers.iter().flat_map(|r| r.iter()) {
                            *referrers
                                .entry(String::from_utf8_lossy(host).into_owned())
                                .or_default() += n;
                        }
                        let bot = stats.devices[Device::Bot.index()];
                        per_day.push((day, stats.devices.iter().sum::<u64>() - bot, bot));
                    }
                    None => per_day.push((day, 0, 0)),
                }
            }
        });
        let bot = devices[Device::Bot.index()];
        let human = devices.iter().sum::<u64>() - bot;
        let direct = human - referrers.values().sum::<u64>();
        let mut referrers: Vec<(String, u64)> = referrers
            .into_iter()
            .chain((direct > 0).then(|| (DIRECT.to_owned(), direct)))
            .collect();
        referrers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        referrers.truncate(top);
        Report {
            from_day,
            to_day,
            human,
            bot,
            per_day,
            referrers,
            devices: Device::ALL
                .into_iter()
                .map(|d| (d, devices[d.index()]))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_days_are_forgotten() {
        let s = Stats::default();
        let ip = "192.0.2.1".parse().expect("ip");
        let at =
            |code: &str, day: i64| Click::new(day * DAY, "d.cn", code, None, Device::Mobile, ip);
        s.add(&[at("a", 10), at("a", 20), at("b", 10)]);
        s.forget_before(15 * DAY + 5);
        assert_eq!(s.report("d.cn", "a", 0, 30, 1).human, 1);
        assert_eq!(s.first_day("d.cn", "a"), Some(20));
        assert_eq!(s.first_day("d.cn", "b"), None);
    }

    #[test]
    fn long_keys_and_counts_past_u32_stay_exact() {
        // Two keys alike in the 27 bytes kept in the line, told apart by their tails.
        let s = Stats::default();
        let ip = "192.0.2.1".parse().expect("ip");
        let domain = "links.a-rather-long-shop-domain.example.com";
        let at = |code: &str| Click::new(20 * DAY, domain, code, None, Device::Mobile, ip);
        s.add(&[at("aaa"), at("aab"), at("aab")]);
        assert_eq!(s.report(domain, "aaa", 20, 20, 1).human, 1);
        assert_eq!(s.report(domain, "aab", 20, 20, 1).human, 2);
        let mut text = Vec::new();
        s.write_day(20, &mut text);
        let again = Stats::default();
        again
            .add_day(20, std::str::from_utf8(&text).expect("utf-8"))
            .expect("summary");
        assert_eq!(again.report(domain, "aab", 20, 20, 1).human, 2);
        s.forget(domain, "aab");
        assert_eq!(s.report(domain, "aab", 20, 20, 1).human, 0);
        assert_eq!(s.report(domain, "aaa", 20, 20, 1).human, 1);

        // A day's count by device past u32::MAX, by clicks and by a summary's bulk add.
        let mut link = Link::new(b"d.cn\tc", 20);
        link.clicks[Device::Mobile.index()] = u32::MAX;
        link.count(20, Device::Mobile, b"");
        link.add(20, [u64::from(u32::MAX), 0, 0, 0]);
        let days: Vec<_> = link.days().map(|d| (d.day, d.devices[0])).collect();
        assert_eq!(days, [(20, 2 * u64::from(u32::MAX) + 1)]);
        link.count(21, Device::Mobile, b"");
        let days: Vec<_> = link.days().map(|d| (d.day, d.devices[0])).collect();
        assert_eq!(days, [(20, 2 * u64::from(u32::MAX) + 1), (21, 1)]);
    }

    #[test]
    fn stragglers_land_on_their_own_day() {
        let s = Stats::default();
        let ip = "192.0.2.1".parse().expect("ip");
        let at = |day: i64| Click::new(day * DAY + 7, "d.cn", "c", None, Device::Mobile, ip);
        s.add(&[at(10), at(12), at(11), at(10), at(13), at(12)]);
        let r = s.report("d.cn", "c", 9, 13, 1);
        assert_eq!(
            r.per_day,
            [(9, 0, 0), (10, 2, 0), (11, 1, 0), (12, 2, 0), (13, 1, 0)]
        );
        assert_eq!(s.first_day("d.cn", "c"), Some(10));
        assert_eq!(s.report("d.cn", "c", 12, 12, 1).human, 2);
    }

    #[test]
    fn reports_sum_days_devices_and_referrers() {
        let s = Stats::default();
        let ip = "192.0.2.1".parse().expect("ip");
        let d0 = 20_000 * DAY;
        let click = |at, referer: Option<&[u8]>, device| {
            Click::new(at, "go.example.cn", "abc", referer, device, ip)
        };
        s.add(&[
            click(d0 + 1, Some(b"https://weibo.com/x"), Device::Mobile),
            click(d0 + 2, Some(b"https://weibo.com/y"), Device::Desktop),
            click(d0 + 3, None, Device::Mobile),
            click(d0 + 4, None, Device::Bot),
            click(d0 + 2 * DAY, Some(b"https://t.co/"), Device::Other),
            Click::new(d0, "go.example.cn", "other", None, Device::Mobile, ip),
        ]);
        let r = s.report("go.example.cn", "abc", 20_000, 20_002, 10);
        assert_eq!((r.human, r.bot), (4, 1));
        assert_eq!(r.per_day, [(20_000, 3, 1), (20_001, 0, 0), (20_002, 1, 0)]);
        assert_eq!(
            r.referrers,
            [
                ("weibo.com".to_owned(), 2),
                (DIRECT.to_owned(), 1),
                ("t.co".to_owned(), 1)
            ]
        );
        assert_eq!(
            r.devices,
            [
                (Device::Mobile, 2),
                (Device::Desktop, 1),
                (Device::Other, 1),
                (Device::Bot, 1)
            ]
        );
        let later = s.report("go.example.cn", "abc", 20_001, 20_002, 1);
        assert_eq!((later.human, later.referrers.len()), (1, 1));
        assert_eq!(s.first_day("go.example.cn", "abc"), Some(20_000));
        s.forget("go.example.cn", "abc");
        assert_eq!(
            s.report("go.example.cn", "abc", 20_000, 20_000, 10).human,
            0
        );
    }
}
