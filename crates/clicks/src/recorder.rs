//! Where the redirect path records clicks, and the writer thread that takes them to the log.
use crate::log::{LogWriter, Position};
use crate::stats::{lock, Mark, BATCH};
use crate::{checkpoint, parse_line, ClickError, ReadReport, Stats, Visit};
use std::cell::Cell;
use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the recorder buffers and writes.
#[derive(Debug, Clone)]
pub struct RecorderOptions {
    /// Clicks a redirect thread's slot holds for the writer before new ones are dropped.
    /// Default 65,536.
    pub capacity: usize,
    /// A log file is closed and a new one started past this size. Default 64 MiB.
    pub max_file_bytes: u64,
    /// How often the writer takes a turn while a checkpoint is in hand, building its summaries
    /// or counting the clicks held back meanwhile, a short slice a turn. Default 2 ms, so that
    /// its turns on a core it shares with redirects are short and a checkpoint still ends in
    /// about a second.
    pub poll_every: Duration,
    /// How often it collects the recorded clicks and writes them out otherwise. Default 20 ms: a
    /// turn costs the core it shares with redirects two context switches, tens of microseconds
    /// on a virtual machine, so at 2 ms the writer took 2.3% of a busy core, and at 20 ms 0.8%.
    /// A slot must hold what arrives meanwhile, and while the writer waits for the core; the
    /// raw log and the time clicks are stamped with may be this far behind.
    pub idle_poll_every: Duration,
    /// A pause after each turn that took clicks; only for tests of the full-slot path.
    pub writer_delay: Duration,
    /// Clicks older than this many seconds are forgotten: their days leave the aggregates and
    /// their log files are deleted (checked at start and hourly). `None` keeps everything.
    /// Default 400 days, so a year can always be compared with the one before.
    pub retention: Option<i64>,
    /// Raw click-log files older than this many seconds are deleted (the aggregates live on in
    /// day summaries). `None` keeps them as long as the aggregates. Default 30 days.
    pub log_retention: Option<i64>,
    /// The most bytes raw click logs and day summaries may take; past it the oldest raw files
    /// go first. `None`: no cap. Default 10 GiB.
    pub max_log_bytes: Option<u64>,
    /// Free space the click log leaves on its file system for the journal beside it: below it
    /// the oldest raw files are deleted, and if that is not enough raw clicks stop being written
    /// (still counted in the aggregates) until there is room again. Default 1 GiB.
    pub reserve_bytes: u64,
    /// How often the aggregates of days with new clicks are written to their day summaries.
    /// Default 60 s: a crash loses nothing (the raw log since is replayed), it only bounds
    /// what a restart reads.
    pub checkpoint_every: Duration,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions {
            capacity: 65_536,
            max_file_bytes: 64 << 20,
            poll_every: Duration::from_millis(2),
            idle_poll_every: Duration::from_millis(20),
            writer_delay: Duration::ZERO,
            retention: Some(400 * 86_400),
            log_retention: Some(30 * 86_400),
            max_log_bytes: Some(10 << 30),
            reserve_bytes: 1 << 30,
            checkpoint_every: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// Counted but kept out of the raw log to leave the disk's reserve free.
    unlogged: AtomicU64,
    /// UTC seconds, set by the writer at every poll: clicks are stamped to the second, and a
    /// shared load is cheaper than a clock read on every redirect.
    now: AtomicI64,
}

/// Where a forwarding recorder's writer hands clicks instead of a local log: a cluster's
/// streams, whose consumers keep the aggregates. It must not block.
pub trait Forward: Send + 'static {
    /// Takes whole click-log lines ([`crate::encode_line`]'s form); returns whether it
    /// accepted them (if not, the writer counts them as failed).
    fn lines(&mut self, lines: &[u8]) -> bool;
    /// Takes the aggregates of clicks recorded since the last delta (about once a second);
    /// gives them back if it cannot take them now, to be handed over with the next.
    fn delta(&mut self, delta: Stats) -> Result<(), Stats>;
    /// An emptied delta ([`Stats::clear`]) to count the next second's clicks in, if one has
    /// come back: its tables keep the size the last second's clicks grew them to.
    fn spare_delta(&mut self) -> Option<Stats> {
        None
    }
}

/// Where the writer thread puts clicks.
enum Output {
    /// The local log; the redirect threads count into the aggregates it summarises.
    Log(Box<LocalLog>),
    /// Somewhere else, which keeps the aggregates itself.
    Forward(Forwarding),
}

/// A forwarding writer's state.
struct Forwarding {
    to: Box<dyn Forward>,
    /// A delta the forwarder could not take yet.
    unsent: Option<Stats>,
    /// When the deltas were last taken.
    last: Instant,
    /// Emptied slots' buffers, for the next sweep.
    spare: Vec<Pending>,
    /// Emptied deltas of slots whose clicks went into another's, for the next sweep.
    spare_deltas: Vec<Stats>,
}

impl Forwarding {
    /// Hands the slots' lines over, and their deltas once every [`DELTA_EVERY`] (and at every
    /// turn once `stopping`); returns how many clicks there were.
    fn turn(&mut self, shared: &Shared, stopping: bool) -> u64 {
        let deltas = stopping || self.last.elapsed() >= DELTA_EVERY;
        if deltas {
            self.last = Instant::now();
        }
        let mut got = 0;
        let (to, spare_deltas) = (&mut self.to, &mut self.spare_deltas);
        let taken = shared.sweep(false, deltas, &mut self.spare, &mut || {
            spare_deltas.pop().or_else(|| to.spare_delta())
        });
        for mut p in taken {
            got += p.clicks;
            if p.clicks > 0 {
                let counter = if self.to.lines(&p.lines) {
                    &shared.counters.written
                } else {
                    &shared.counters.failed
                };
                counter.fetch_add(p.clicks, Ordering::Relaxed);
            }
            match (p.delta.take(), &self.unsent) {
                (None, _) => {}
                // A spare no click has been counted in since.
                (Some(delta), _) if delta.is_empty() => self.keep_spare(delta),
                (Some(delta), Some(earlier)) => {
                    earlier.absorb(&delta);
                    delta.clear();
                    self.keep_spare(delta);
                }
                (Some(delta), None) => self.unsent = Some(delta),
            }
            recycle(&mut self.spare, p);
        }
        self.offer_unsent();
        got
    }

    fn keep_spare(&mut self, emptied: Stats) {
        if self.spare_deltas.len() < SLOTS {
            self.spare_deltas.push(emptied);
        }
    }

    /// Hands over the delta waiting, if the consumer takes it now.
    fn offer_unsent(&mut self) {
        if let Some(delta) = self.unsent.take() {
            self.unsent = self.to.delta(delta).err();
        }
    }

    /// At a stop, once the slots are empty: the delta the consumer last refused (it was busy
    /// with a burst, or its channel was full) is offered again for up to a second. What it still
    /// refuses then leaves the statistics, and the log says so.
    fn hand_over_last(&mut self) {
        let until = Instant::now() + Duration::from_secs(1);
        while self.unsent.is_some() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
            self.offer_unsent();
        }
        if let Some(delta) = &self.unsent {
            tracing::warn!(
                links = delta.links(),
                "the cluster took no last statistics delta at shutdown: its clicks are in the raw click stream only"
            );
        }
    }
}

/// How often a forwarding recorder hands over its delta.
const DELTA_EVERY: Duration = Duration::from_secs(1);

/// Slots the redirect threads record into; a thread always uses the same one.
const SLOTS: usize = 16;

/// The clicks recorded into one slot since the writer last took them.
#[derive(Debug, Default)]
struct Pending {
    /// Their click-log lines.
    lines: Vec<u8>,
    clicks: u64,
    /// Runs of lines by day: the day and where its run ends in `lines`.
    days: Vec<(i64, usize)>,
    /// Where each click not counted yet has its key and referrer in `lines`: the redirect
    /// thread counts them [`BATCH`] at a time and forgets them, so that they stay a few lines
    /// of the cache rather than a stream of fresh ones; the writer counts those left when it
    /// takes the slot.
    marks: Vec<Mark>,
    /// Recorded while a checkpoint reads the aggregates: the writer counts them once it is
    /// done.
    held: bool,
    /// The time's text of the last line.
    stamp: crate::log::Stamp,
    /// A forwarding recorder's aggregates of these clicks (and of earlier ones since the last
    /// delta), counted here instead of in the shared aggregates.
    delta: Option<Stats>,
    /// The slot's delta went with its clicks when no emptied one was at hand to replace it:
    /// the writer gives it one as soon as one comes back.
    wants_delta: bool,
}

impl Pending {
    /// Counts the clicks not counted yet into `stats`, or with none (a forwarding recorder's
    /// slot) into the slot's delta.
    fn count(&mut self, stats: Option<&Stats>) {
        if self.marks.is_empty() {
            return;
        }
        stats
            .unwrap_or_else(|| self.delta.get_or_insert_with(Stats::default))
            .count_marked(&self.lines, &self.marks);
        self.marks.clear();
    }
}

/// A slot on a cache line of its own, so threads on different slots do not share one.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(Mutex<Pending>);

/// What the redirect threads and the writer share.
#[derive(Debug)]
struct Shared {
    slots: [Slot; SLOTS],
    /// Clicks a slot holds before new ones are dropped.
    capacity: u64,
    /// Whether clicks are counted into per-slot deltas ([`Output::Forward`]).
    deltas: bool,
    counters: Counters,
}

/// The calling thread's slot: threads take them in turn as they first record.
#[inline]
fn slot_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SLOT: Cell<usize> = const { Cell::new(usize::MAX) });
    SLOT.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Ordering::Relaxed) % SLOTS);
        }
        s.get()
    })
}

impl Shared {
    /// Takes every slot's clicks, and the deltas if `deltas`; from now on each slot counts
    /// its clicks as they come unless `hold`.
    /// Slots whose delta is taken get one from `spare_delta`, if it has one.
    fn sweep(
        &self,
        hold: bool,
        deltas: bool,
        spare: &mut Vec<Pending>,
        spare_delta: &mut dyn FnMut() -> Option<Stats>,
    ) -> Vec<Pending> {
        let mut taken = Vec::new();
        for slot in &self.slots {
            let mut p = lock(&slot.0);
            if p.wants_delta && p.delta.is_none() {
                // Now rather than when the slot's next clicks are taken: by then they would
                // have grown a delta of their own from nothing (and had its memory zeroed).
                p.delta = spare_delta();
            }
            p.wants_delta &= p.delta.is_none();
            if p.clicks == 0 && p.held == hold && !(deltas && p.delta.is_some()) {
                continue;
            }
            if self.deltas {
                // The slot's last clicks, short of a batch, go with its delta.
                p.count(None);
            }
            let mut fresh = spare.pop().unwrap_or_default();
            fresh.held = hold;
            fresh.delta = if deltas {
                spare_delta()
            } else {
                p.delta.take()
            };
            fresh.wants_delta = self.deltas && fresh.delta.is_none();
            taken.push(std::mem::replace(&mut *p, fresh));
        }
        taken
    }
}

/// Keeps an emptied slot's buffers for a later sweep, so that a redirect thread does not grow
/// a new one from nothing every turn; a burst's buffer is let go rather than kept.
fn recycle(spare: &mut Vec<Pending>, mut p: Pending) {
    if p.lines.capacity() <= 4 << 20 && spare.len() < SLOTS {
        p.lines.clear();
        p.days.clear();
        p.marks.clear();
        p.clicks = 0;
        spare.push(p);
    }
}

/// The redirect path's end of the click log: [`Recorder::record`] never blocks on the writer.
#[derive(Debug)]
pub struct Recorder {
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    /// The local log's folder, if clicks go to one.
    dir: Option<PathBuf>,
}

/// The writer thread; [`Writer::finish`] takes the last clicks and flushes the log.
#[derive(Debug)]
pub struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Loads the aggregates from the day summaries in `dir` and the raw log written after
    /// them, then starts the writer thread that appends new clicks there.
    pub fn start(
        dir: &Path,
        opts: RecorderOptions,
    ) -> Result<(Recorder, Writer, ReadReport), ClickError> {
        let stats = Arc::new(Stats::default());
        let since = match opts.retention {
            Some(keep) => {
                let since = duanlian_link::now_secs().saturating_sub(keep);
                crate::log::remove_before(dir, since)?;
                since
            }
            None => i64::MIN,
        };
        let marks = checkpoint::load(dir, &stats, since.div_euclid(DAY))?;
        let mut dirty = BTreeSet::new();
        let mut last_file: Option<String> = None;
        let mut batch = Vec::with_capacity(4096);
        let report = crate::log::scan(dir, since, i64::MAX, |c, (file, offset)| {
            if last_file.as_deref() != Some(file) {
                last_file = Some(file.to_owned());
            }
            let day = c.at.div_euclid(DAY);
            // Already in the day's summary.
            if let Some((mark_file, mark_offset)) = marks.get(&day) {
                if (file, offset) <= (mark_file.as_str(), *mark_offset) {
                    return;
                }
            }
            dirty.insert(day);
            batch.push(c);
            if batch.len() == batch.capacity() {
                stats.add(&batch);
                batch.clear();
            }
        })?;
        stats.add(&batch);
        let log = LocalLog {
            log: LogWriter::new(dir, opts.max_file_bytes)?,
            dir: dir.to_path_buf(),
            dirty,
            // Every file read so far is whole; the writer starts a new one.
            pending: last_file.map(|f| (f, u64::MAX)),
            safe: None,
            last_checkpoint: std::time::Instant::now(),
            last_check: None,
            paused: false,
            compressor: Compressor::new(opts.max_log_bytes),
            pass: None,
            held: VecDeque::new(),
            due: false,
            recheck: false,
            spare: Vec::new(),
        };
        let (mut recorder, writer) = Recorder::spawn(Output::Log(Box::new(log)), stats, opts)?;
        recorder.dir = Some(dir.to_path_buf());
        Ok((recorder, writer, report))
    }

    /// A recorder whose writer hands clicks to `forward` instead of a log: their lines, and
    /// about once a second their aggregates. `stats` (what [`Recorder::stats`] answers) is left
    /// to whoever consumes what was forwarded.
    pub fn forwarding(
        forward: Box<dyn Forward>,
        stats: Arc<Stats>,
        opts: RecorderOptions,
    ) -> Result<(Recorder, Writer), ClickError> {
        let output = Output::Forward(Forwarding {
            to: forward,
            unsent: None,
            last: Instant::now(),
            spare: Vec::new(),
            spare_deltas: Vec::new(),
        });
        Recorder::spawn(output, stats, opts)
    }

    /// The slots, the counters and the writer thread that empties the slots into `output`.
    fn spawn(
        output: Output,
        stats: Arc<Stats>,
        opts: RecorderOptions,
    ) -> Result<(Recorder, Writer), ClickError> {
        let shared = Arc::new(Shared {
            slots: Default::default(),
            capacity: opts.capacity.max(1) as u64,
            deltas: matches!(output, Output::Forward(_)),
            counters: Counters::default(),
        });
        if !shared.deltas {
            // Weak: the statistics outlive the recorder in the server's handlers.
            let slots = Arc::downgrade(&shared);
            stats.count_pending_with(crate::stats::Uncounted(Box::new(move |stats| {
                let Some(shared) = slots.upgrade() else {
                    return;
                };
                for slot in &shared.slots {
                    let mut p = lock(&slot.0);
                    if !p.held {
                        p.count(Some(stats));
                    }
                }
            })));
        }
        shared
            .counters
            .now
            .store(duanlian_link::now_secs(), Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stats, stop) = (shared.clone(), stats.clone(), stop.clone());
            std::thread::Builder::new()
                .name("duanlian-clicks".into())
                .spawn(move || write_loop(output, &opts, &shared, &stats, &stop))
                .map_err(|e| ClickError::io(Path::new("click writer thread"), e))?
        };
        Ok((
            Recorder {
                shared,
                stats,
                dir: None,
            },
            Writer {
                stop,
                thread: Some(thread),
            },
        ))
    }

    /// Records a visit: its log line goes into the calling thread's slot, for the writer to
    /// append, and it is counted in the aggregates with the slot's next [`BATCH`] of clicks, or
    /// by the writer's next turn, whichever comes first (unless a checkpoint is reading them;
    /// the writer counts it once that is done). A slot the writer has not emptied for
    /// [`RecorderOptions::capacity`] clicks drops the visit and counts it, never waits.
    #[inline]
    pub fn record(&self, visit: Visit<'_>) {
        let shared = &*self.shared;
        let mut guard = lock(&shared.slots[slot_index()].0);
        let p = &mut *guard;
        if p.clicks >= shared.capacity {
            shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let spans = crate::log::append_visit(&visit, &mut p.stamp, &mut p.lines);
        let day = visit.at.div_euclid(DAY);
        match p.days.last_mut() {
            Some((d, end)) if *d == day => *end = p.lines.len(),
            _ => p.days.push((day, p.lines.len())),
        }
        p.clicks += 1;
        p.marks.push(Mark::new(spans, day, visit.device));
        // The lines' buffer's next line, cold since the writer last took it: fetched now, it
        // is in the cache when the next clicks write it, instead of each write waiting for
        // its line at the lock's release.
        let ahead = (p.lines.as_ptr() as usize)
            .wrapping_add(p.lines.len())
            .wrapping_add(128);
        crate::stats::prefetch::<true>(ahead, 1);
        if !p.held && p.marks.len() >= BATCH {
            p.count((!shared.deltas).then_some(&*self.stats));
        }
    }

    /// The current time in UTC seconds as of the writer's last poll (at most
    /// [`RecorderOptions::idle_poll_every`] behind while the writer keeps up): the time to stamp a
    /// click with.
    #[inline]
    pub fn now(&self) -> i64 {
        self.shared.counters.now.load(Ordering::Relaxed)
    }

    /// The aggregates: the redirect threads', or the consumer's, of a forwarding recorder.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Clicks written to the log so far.
    pub fn written(&self) -> u64 {
        self.shared.counters.written.load(Ordering::Relaxed)
    }

    /// Clicks dropped because the writer had fallen behind.
    pub fn dropped(&self) -> u64 {
        self.shared.counters.dropped.load(Ordering::Relaxed)
    }

    /// Clicks counted but not written because the log could not be written.
    pub fn failed(&self) -> u64 {
        self.shared.counters.failed.load(Ordering::Relaxed)
    }

    /// Clicks counted but kept out of the raw log to leave the disk's reserve free.
    pub fn unlogged(&self) -> u64 {
        self.shared.counters.unlogged.load(Ordering::Relaxed)
    }

    /// Bytes the click log takes on disk: raw files and day summaries (0 without a local log).
    pub fn log_bytes(&self) -> u64 {
        let Some(dir) = &self.dir else {
            return 0;
        };
        let raw: u64 = crate::log::log_files(dir)
            .map(|files| files.iter().map(|f| f.2).sum())
            .unwrap_or(0);
        raw + checkpoint::bytes(dir)
    }
}

impl Writer {
    /// Stops the writer once it has taken every click recorded so far, with everything
    /// written flushed.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

const DAY: i64 = 86_400;

/// The local log and what the writer knows about it.
struct LocalLog {
    log: LogWriter,
    dir: PathBuf,
    /// Days with clicks not yet in their summaries.
    dirty: BTreeSet<i64>,
    /// A checkpoint position owed from start: every file read then is whole.
    pending: Option<Position>,
    /// Everything before this position is in day summaries.
    safe: Option<Position>,
    last_checkpoint: std::time::Instant,
    last_check: Option<std::time::Instant>,
    /// Raw clicks are not written: the disk is down to its reserve.
    paused: bool,
    compressor: Compressor,
    /// A checkpoint under way, and the clicks written to the raw log while it was building its
    /// summaries (which must hold exactly the clicks before its position). They are counted
    /// after, a slice a turn: hundreds of thousands at once would hold the core for as long as
    /// the checkpoint took to build. The next checkpoint waits for them.
    pass: Option<checkpoint::Pass>,
    /// Lines of held clicks, and how far into the first they are counted.
    held: VecDeque<(Vec<u8>, usize)>,
    /// A checkpoint is due: it starts once the one under way ends.
    due: bool,
    /// A checkpoint has made more raw files deletable: look at them at the next turn.
    recheck: bool,
    /// Emptied slots' buffers, for the next sweep.
    spare: Vec<Pending>,
}

/// How long the writer works on a checkpoint (building it, or counting the clicks held back
/// meanwhile) in one turn. A turn on the core redirects share is a pause for every connection
/// it serves; the writer takes a turn every [`RecorderOptions::poll_every`].
const TURN: Duration = Duration::from_micros(150);

/// Compresses closed click logs on a thread of its own in the idle scheduling class: a 64 MiB
/// file (1.4 million clicks) is about 0.3 s of CPU, 4% of what its redirects took,
/// which on the writer thread would leave the click slots unswept (and drop clicks in a
/// burst), and at normal priority would take turns with the redirects sharing the core.
///
/// Compressing is the one piece of a click's cost that can wait, so it waits for a lull:
/// while the node records more than [`BUSY_CLICKS`] a second (the writer judges it every
/// turn), closed files stay as they are, unless those waiting pass `backlog` bytes (then the
/// oldest is compressed anyway).
/// Waiting files count against the log's size cap as they are, so the disk stays within
/// bounds meanwhile. Dropped with the log: it finishes the file in hand and leaves the rest to
/// the next start (which compresses what an earlier run left).
struct Compressor {
    tx: Option<std::sync::mpsc::Sender<PathBuf>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// The clicks the writer takes from the slots, over time.
    load: Load,
    /// What the writer last judged the load to be, for the thread.
    busy: Arc<AtomicBool>,
    /// Bytes of closed files that may wait for a lull.
    backlog: u64,
}

/// A node recording more clicks a second than this is in a burst (at about 5 µs of CPU a
/// redirect, a tenth of a core and more).
const BUSY_CLICKS: u64 = 20_000;

/// The span [`BUSY_CLICKS`] is averaged over.
const BUSY_WINDOW: Duration = Duration::from_secs(5);

impl Compressor {
    /// `max_log_bytes` is the log's size cap: at most an eighth of it (and 1 GiB) waits.
    fn new(max_log_bytes: Option<u64>) -> Compressor {
        Compressor {
            tx: None,
            thread: None,
            stop: Arc::default(),
            load: Load::new(BUSY_WINDOW),
            busy: Arc::default(),
            backlog: max_log_bytes.map_or(1 << 30, |max| (max / 8).min(1 << 30)),
        }
    }

    /// Notes clicks taken from the slots.
    fn taken(&mut self, clicks: u64) {
        self.load.clicks += clicks;
    }

    /// Judges the load, at every turn of the writer's.
    fn judge(&mut self) {
        self.busy.store(self.load.busy(), Ordering::Relaxed);
    }
}

impl Drop for Compressor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The click rate over the last `window` ([`BUSY_WINDOW`]), from samples taken at most five
/// times in it (the writer asks every turn).
struct Load {
    /// Clicks so far.
    clicks: u64,
    window: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl Load {
    /// Counts from now.
    fn new(window: Duration) -> Load {
        Load {
            clicks: 0,
            window,
            samples: VecDeque::from([(Instant::now(), 0)]),
        }
    }

    fn busy(&mut self) -> bool {
        let now = Instant::now();
        let n = self.clicks;
        if self
            .samples
            .back()
            .is_none_or(|(t, _)| now.duration_since(*t) >= self.window / 5)
        {
            self.samples.push_back((now, n));
        }
        // Keep one sample at least a window old, if there is one.
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| now.duration_since(*t) >= self.window)
        {
            self.samples.pop_front();
        }
        let Some(&(since, then)) = self.samples.front() else {
            return false;
        };
        // Over less than a fifth of the window (just started), as if over that.
        let secs = now.duration_since(since).max(self.window / 5).as_secs_f64();
        n.saturating_sub(then) as f64 / secs > BUSY_CLICKS as f64
    }
}

impl Compressor {
    fn compress(&mut self, path: PathBuf) {
        if let Some(tx) = &self.tx {
            match tx.send(path) {
                Ok(()) => return,
                Err(e) => {
                    self.tx = None;
                    return self.compress(e.0);
                }
            }
        }
        let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
        let (stop, busy, backlog) = (self.stop.clone(), self.busy.clone(), self.backlog);
        let spawned = std::thread::Builder::new()
            .name("duanlian-gzip".into())
            .spawn(move || {
                lowest_priority();
                compress_in_lulls(&rx, &stop, &busy, backlog, BUSY_WINDOW / 5);
            });
        match spawned {
            Ok(thread) => {
                let _ = tx.send(path);
                self.tx = Some(tx);
                self.thread = Some(thread);
            }
            Err(e) => {
                tracing::warn!(error = %e, "no thread for compressing click logs; compressing here");
                compress_here(&path);
            }
        }
    }
}

/// The compressor thread: files in the order they closed, each once the node is out of a
/// burst (`busy` false; looked at every `poll` while files wait) or the files waiting pass
/// `backlog` bytes. A file deleted meanwhile (retention, the size cap) is passed over.
fn compress_in_lulls(
    rx: &std::sync::mpsc::Receiver<PathBuf>,
    stop: &AtomicBool,
    busy: &AtomicBool,
    backlog: u64,
    poll: Duration,
) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut waiting: VecDeque<PathBuf> = VecDeque::new();
    loop {
        waiting.extend(rx.try_iter());
        if stop.load(Ordering::Acquire) {
            return;
        }
        let mut waiting_bytes = 0;
        waiting.retain(|p| {
            std::fs::metadata(p)
                .map(|m| waiting_bytes += m.len())
                .is_ok()
        });
        if waiting_bytes > backlog || !busy.load(Ordering::Relaxed) {
            if let Some(path) = waiting.pop_front() {
                compress_here(&path);
                continue;
            }
        }
        let next = if waiting.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(poll)
        };
        match next {
            Ok(path) => waiting.push_back(path),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn compress_here(path: &Path) {
    if let Err(e) = crate::log::compress(path) {
        tracing::warn!(error = %e, "compressing a closed click log failed");
    }
}

/// `SCHED_IDLE` for the calling thread, or nice 19 where that is refused; best effort.
/// Nice 19 alone still has a share of a busy core (15 against a redirect thread's 1024:
/// measured 1.2% of the process's CPU under the harness's load, and the caches it streams a
/// file through afterwards); an idle-class thread runs when the core has nothing else to do.
fn lowest_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_setscheduler` reads one `sched_param` from a live value on this stack
    // frame; pid 0 is the calling thread.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc == 0 {
        return;
    }
    tracing::debug!(error = %std::io::Error::last_os_error(), "no SCHED_IDLE for the compressor");
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
        tracing::debug!(error = %e, "could not lower the compressor's priority");
    }
}

impl LocalLog {
    /// Takes the slots' clicks and writes them: `hold` holds back the clicks recorded from now
    /// on, for a checkpoint that reads the aggregates.
    fn collect(&mut self, shared: &Shared, stats: &Stats, hold: bool, failing: &mut bool) -> u64 {
        let mut got = 0;
        for p in shared.sweep(hold, false, &mut self.spare, &mut || None) {
            got += p.clicks;
            self.write(p, stats, &shared.counters, failing);
        }
        got
    }

    /// Appends a slot's lines to the raw log, and counts them and marks their days for the
    /// next checkpoint, or keeps them for counting once the checkpoint under way has read the
    /// aggregates.
    fn write(&mut self, mut p: Pending, stats: &Stats, counters: &Counters, failing: &mut bool) {
        if p.clicks == 0 {
            return recycle(&mut self.spare, p);
        }
        self.compressor.taken(p.clicks);
        self.append(&p, counters, failing);
        if p.held {
            // Their days are marked as they are counted.
            let lines = std::mem::take(&mut p.lines);
            self.held.push_back((lines, 0));
        } else {
            p.count(Some(stats));
            self.dirty.extend(p.days.iter().map(|&(day, _)| day));
        }
        recycle(&mut self.spare, p);
    }

    /// Appends to the raw log, unless the disk is down to its reserve. Every click is counted
    /// in the aggregates, even ones the disk refused: the log is the export, the aggregates are
    /// what the API shows.
    fn append(&mut self, p: &Pending, counters: &Counters, failing: &mut bool) {
        if self.paused {
            counters.unlogged.fetch_add(p.clicks, Ordering::Relaxed);
            return;
        }
        let mut start = 0;
        let written = p
            .days
            .iter()
            .try_for_each(|&(day, end)| {
                let run = &p.lines[start..end];
                start = end;
                self.log.append_lines(day, run)
            })
            .and_then(|()| self.log.flush());
        match written {
            Ok(()) => {
                counters.written.fetch_add(p.clicks, Ordering::Relaxed);
                if *failing {
                    tracing::info!(dir = %self.dir.display(), "click log writable again");
                    *failing = false;
                }
            }
            Err(e) => {
                counters.failed.fetch_add(p.clicks, Ordering::Relaxed);
                if !*failing {
                    tracing::error!(error = %e, "click log write failed; counting on, logging off until it works again");
                    *failing = true;
                }
            }
        }
    }

    /// Whether clicks are held back: a checkpoint is reading the aggregates.
    fn holding(&self) -> bool {
        self.pass.as_ref().is_some_and(|p| p.building())
    }

    /// A checkpoint is due, under way, or has held clicks left to count: the writer then takes
    /// its short turns often.
    fn checkpoint_in_hand(&self) -> bool {
        self.due || self.pass.is_some() || !self.held.is_empty()
    }

    /// Starts summarising the days that got clicks, as of the log's position once every click
    /// counted so far is written, unless a checkpoint is under way already.
    fn start_checkpoint(&mut self, shared: &Shared, stats: &Stats, failing: &mut bool) {
        if self.pass.is_some() || !self.held.is_empty() {
            return;
        }
        // From here on the slots hold their clicks back; all counted ones are in the log.
        self.collect(shared, stats, true, failing);
        self.last_checkpoint = std::time::Instant::now();
        let at = match (self.pending.take(), self.log.position()) {
            (_, Some(at)) => at,
            (Some(at), None) => at,
            (None, None) if self.dirty.is_empty() => {
                self.collect(shared, stats, false, failing);
                return;
            }
            // Clicks counted while paused or failing, none written since start: their days are
            // summarised as of before any raw file of this run.
            (None, None) => (String::new(), 0),
        };
        if self.log.flush().is_err() {
            self.collect(shared, stats, false, failing);
            return; // the write path reports it
        }
        tracing::debug!(days = self.dirty.len(), "click checkpoint started");
        self.pass = Some(checkpoint::Pass::new(at, std::mem::take(&mut self.dirty)));
    }

    /// Takes the checkpoint under way a step further (until `deadline`, if any; `wait`: for
    /// its files).
    /// Once its summaries are built the slots count again; what they held meanwhile is counted
    /// by [`LocalLog::count_held`].
    fn step_checkpoint(
        &mut self,
        shared: &Shared,
        stats: &Stats,
        deadline: Option<Instant>,
        wait: bool,
        failing: &mut bool,
    ) {
        let Some(pass) = &mut self.pass else {
            return;
        };
        let building = pass.building();
        let outcome = pass.step(&self.dir, stats, deadline, wait);
        // The aggregates are read (or will not be): the slots count again.
        if building && (!pass.building() || outcome.is_err()) {
            self.collect(shared, stats, false, failing);
        }
        if let Ok(false) = outcome {
            return;
        }
        let Some(pass) = self.pass.take() else {
            return;
        };
        tracing::debug!(
            held = self.held.len(),
            ok = outcome.is_ok(),
            "click checkpoint ended"
        );
        let (days, at) = pass.into_parts();
        match outcome {
            Ok(_) => {
                self.safe = Some(at);
                self.recheck = true;
            }
            Err(e) => {
                self.dirty.extend(days);
                tracing::error!(error = %e, "writing the click day summaries failed; will retry");
            }
        }
    }

    /// Counts the clicks held back while a checkpoint was building, until `deadline` if any:
    /// a slice a turn, since hundreds of thousands at once would hold the core as long as the
    /// checkpoint took to build. The next checkpoint waits for them.
    fn count_held(&mut self, stats: &Stats, deadline: Option<Instant>) {
        if self.holding() {
            return;
        }
        let mut n = 0u32;
        loop {
            let Some((lines, at)) = self.held.front_mut() else {
                return;
            };
            let mut last = None;
            for line in lines[*at..].split_inclusive(|&b| b == b'\n') {
                *at += line.len();
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                if let Some(click) = std::str::from_utf8(line).ok().and_then(parse_line) {
                    stats.add(std::slice::from_ref(&click));
                    let day = click.at.div_euclid(DAY);
                    if last != Some(day) {
                        self.dirty.insert(day);
                        last = Some(day);
                    }
                }
                n = n.wrapping_add(1);
                if n.is_multiple_of(256) && deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
            }
            if *at == lines.len() {
                self.held.pop_front();
            } else {
                return;
            }
        }
    }

    /// A whole checkpoint now: at shutdown, and before deleting for the disk's reserve.
    fn checkpoint(&mut self, shared: &Shared, stats: &Stats, failing: &mut bool) {
        self.step_checkpoint(shared, stats, None, true, failing);
        self.count_held(stats, None);
        self.start_checkpoint(shared, stats, failing);
        self.step_checkpoint(shared, stats, None, true, failing);
    }

    /// Whether a raw file may be deleted: closed, and all its clicks in summaries.
    fn deletable(&self, name: &str) -> bool {
        let stem = name.strip_suffix(".gz").unwrap_or(name);
        if self.log.current_name() == Some(stem) {
            return false;
        }
        match &self.safe {
            Some((file, offset)) => stem < file.as_str() || (stem == file && *offset == u64::MAX),
            None => false,
        }
    }

    /// Checkpoints when due, compresses closed files, and keeps the raw log within its age,
    /// its size cap and the disk's reserve, oldest files first.
    fn maintain(
        &mut self,
        shared: &Shared,
        stats: &Stats,
        opts: &RecorderOptions,
        now: i64,
        failing: &mut bool,
    ) {
        let closed = self.log.take_closed();
        if !closed.is_empty()
            || self.pending.is_some()
            || (!self.dirty.is_empty() && self.last_checkpoint.elapsed() >= opts.checkpoint_every)
        {
            self.due = true;
        }
        if self.due && self.pass.is_none() {
            self.due = false;
            self.start_checkpoint(shared, stats, failing);
        }
        self.step_checkpoint(shared, stats, Some(Instant::now() + TURN), false, failing);
        self.count_held(stats, Some(Instant::now() + TURN));
        self.compressor.judge();
        for path in closed {
            self.compressor.compress(path);
        }
        if !self.recheck
            && self
                .last_check
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.recheck = false;
        let first = self.last_check.is_none();
        self.last_check = Some(std::time::Instant::now());
        let Ok(files) = crate::log::log_files(&self.dir) else {
            return;
        };
        if first {
            // Left uncompressed by an earlier run.
            for (name, path, _) in &files {
                if name.ends_with(".tsv") && self.log.current_name() != Some(name.as_str()) {
                    self.compressor.compress(path.clone());
                }
            }
        }
        let Ok(files) = crate::log::log_files(&self.dir) else {
            return;
        };
        let mut total: u64 = files.iter().map(|f| f.2).sum::<u64>() + checkpoint::bytes(&self.dir);
        let mut free = free_bytes(&self.dir);
        if free.is_some_and(|f| f < opts.reserve_bytes) {
            // Make everything closed deletable before deciding what goes.
            self.checkpoint(shared, stats, failing);
        }
        let too_old = |name: &str| {
            opts.log_retention.is_some_and(|keep| {
                crate::log::file_day(name)
                    .is_some_and(|d| (d + 1) * DAY <= now.saturating_sub(keep))
            })
        };
        for (name, path, len) in &files {
            let over_cap = opts.max_log_bytes.is_some_and(|max| total > max);
            let short = free.is_some_and(|f| f < opts.reserve_bytes);
            if !(too_old(name) || over_cap || short) {
                // Files are in time order: the rest are newer still.
                break;
            }
            if !self.deletable(name) {
                continue;
            }
            match std::fs::remove_file(path) {
                Ok(()) => {
                    total = total.saturating_sub(*len);
                    free = free.map(|f| f + len);
                    tracing::info!(file = %path.display(), bytes = len, "removed a raw click log");
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "could not remove a click log")
                }
            }
        }
        let short = free.is_some_and(|f| f < opts.reserve_bytes);
        if short != self.paused {
            self.paused = short;
            if short {
                tracing::error!(
                    reserve_bytes = opts.reserve_bytes,
                    free_bytes = free.unwrap_or(0),
                    "disk down to the reserve kept for the journal: raw clicks are no longer written (statistics go on)"
                );
            } else {
                tracing::info!("room on the disk again: raw clicks are written again");
            }
        }
    }
}

/// Free bytes for unprivileged writers on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

fn write_loop(
    mut output: Output,
    opts: &RecorderOptions,
    shared: &Shared,
    stats: &Stats,
    stop: &AtomicBool,
) {
    // The writer polls: the redirect threads never wake it, so a click costs them no system
    // call; between polls their clicks wait in their slots.
    let counters = &shared.counters;
    let mut failing = false;
    let mut pruned = std::time::Instant::now();
    loop {
        let now = duanlian_link::now_secs();
        counters.now.store(now, Ordering::Relaxed);
        if let (Some(keep), true) = (
            opts.retention,
            pruned.elapsed() >= Duration::from_secs(3600),
        ) {
            pruned = std::time::Instant::now();
            let since = now.saturating_sub(keep);
            stats.forget_before(since);
            if let Output::Log(log) = &output {
                if let Err(e) = crate::log::remove_before(&log.dir, since) {
                    tracing::warn!(error = %e, "could not remove old click logs");
                }
                if let Err(e) = checkpoint::remove_before(&log.dir, since.div_euclid(DAY)) {
                    tracing::warn!(error = %e, "could not remove old day summaries");
                }
            }
        }
        // Read before the slots are: every click recorded before `finish` set the flag is
        // then in the slots this sweep takes.
        let stopping = stop.load(Ordering::Acquire);
        let (got, busy) = match &mut output {
            Output::Log(log) => {
                let got = log.collect(shared, stats, log.holding(), &mut failing);
                log.maintain(shared, stats, opts, now, &mut failing);
                (got, log.checkpoint_in_hand())
            }
            Output::Forward(f) => (f.turn(shared, stopping), false),
        };
        if got > 0 && !opts.writer_delay.is_zero() {
            std::thread::sleep(opts.writer_delay);
        }
        // Asked to stop: go on until a sweep finds the slots empty, so nothing recorded is
        // lost.
        if stopping && got == 0 {
            if let Output::Forward(f) = &mut output {
                f.hand_over_last();
            }
            break;
        }
        if !stopping {
            // `finish` unparks it, so a stop is not kept waiting a whole idle poll.
            std::thread::park_timeout(if busy {
                opts.poll_every
            } else {
                opts.idle_poll_every
            });
        }
    }
    if let Output::Log(log) = &mut output {
        if let Err(e) = log.log.flush() {
            tracing::error!(error = %e, "click log flush at shutdown failed");
        }
        log.checkpoint(shared, stats, &mut failing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Device, Visit};

    /// A click recorded just before `finish` is counted: the writer must not take the stop
    /// flag for "the slots are empty" when it looked at them before the click arrived.
    #[test]
    fn a_click_recorded_just_before_finish_is_kept() {
        for i in 0..300 {
            let dir =
                std::env::temp_dir().join(format!("dl-clicks-fin-{}-{i}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let opts = polling_every(Duration::from_micros(50));
            let (rec, writer, _) = Recorder::start(&dir, opts).expect("start");
            // Let the writer reach its polling, then race it.
            std::thread::sleep(Duration::from_micros(200 + i % 7 * 30));
            rec.record(mobile_click("x7Kp2Qa"));
            writer.finish();
            let day = 1_764_000_000 / DAY;
            let r = rec.stats().report("go.example.cn", "x7Kp2Qa", day, day, 1);
            assert_eq!(r.human, 1, "round {i}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    /// A consumer that refuses the last delta at a stop (busy, its channel full) is offered it
    /// again until it takes it: the clicks reach the statistics.
    #[test]
    fn a_refused_last_delta_is_offered_again_at_a_stop() {
        /// Refuses deltas while `refusals` last, then adds them to `taken`.
        struct Busy {
            refusals: u32,
            taken: Arc<Stats>,
        }
        impl Forward for Busy {
            fn lines(&mut self, _: &[u8]) -> bool {
                true
            }
            fn delta(&mut self, delta: Stats) -> Result<(), Stats> {
                if self.refusals > 0 {
                    self.refusals -= 1;
                    return Err(delta);
                }
                self.taken.absorb(&delta);
                Ok(())
            }
        }
        let taken = Arc::new(Stats::default());
        let busy = Busy {
            refusals: 20,
            taken: taken.clone(),
        };
        let opts = polling_every(Duration::from_micros(200));
        let (rec, writer) =
            Recorder::forwarding(Box::new(busy), Arc::new(Stats::default()), opts).expect("start");
        for code in ["a", "b", "c"] {
            rec.record(mobile_click(code));
        }
        writer.finish();
        assert_eq!(taken.links(), 3);
    }

    /// A forwarder hands each delta back emptied: the next second's clicks are counted in it,
    /// and only those.
    #[test]
    fn a_delta_handed_back_counts_the_next_seconds_clicks_only() {
        #[derive(Default)]
        struct Recycling {
            /// Each delta's links, as it came.
            seen: Arc<Mutex<Vec<usize>>>,
            spare: Option<Stats>,
            handed_back: Arc<AtomicUsize>,
        }
        impl Forward for Recycling {
            fn lines(&mut self, _: &[u8]) -> bool {
                true
            }
            fn delta(&mut self, delta: Stats) -> Result<(), Stats> {
                lock(&self.seen).push(delta.links());
                delta.clear();
                self.spare = Some(delta);
                Ok(())
            }
            fn spare_delta(&mut self) -> Option<Stats> {
                let spare = self.spare.take();
                if spare.is_some() {
                    self.handed_back.fetch_add(1, Ordering::Relaxed);
                }
                spare
            }
        }
        let forward = Recycling::default();
        let (seen, handed_back) = (forward.seen.clone(), forward.handed_back.clone());
        let opts = polling_every(Duration::from_millis(1));
        let (rec, writer) =
            Recorder::forwarding(Box::new(forward), Arc::new(Stats::default()), opts)
                .expect("start");
        let until = Instant::now() + Duration::from_secs(10);
        // Each delta comes back only after the sweep that took it had to leave the slot
        // without one; the slot gets it at the writer's next turn, before its next clicks, so
        // they count in it and not in a delta grown from nothing.
        for (second, codes) in [["a", "b", "c"].as_slice(), &["d"], &["e"]]
            .into_iter()
            .enumerate()
        {
            while handed_back.load(Ordering::Relaxed) < second && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(
                handed_back.load(Ordering::Relaxed),
                second,
                "second {second}"
            );
            for code in codes {
                rec.record(mobile_click(code));
            }
            while lock(&seen).len() == second && second < 2 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        writer.finish();
        assert_eq!(*lock(&seen), [3, 1, 1], "no delta is handed over empty");
    }

    /// Threads record while checkpoints come one after another: the statistics count every
    /// click once, as they do after a restart from the summaries and the raw log.
    #[test]
    fn clicks_recorded_during_checkpoints_count_once() {
        let dir = fresh("busy");
        let opts = || RecorderOptions {
            checkpoint_every: Duration::from_millis(1),
            max_file_bytes: 64 << 10,
            retention: None,
            reserve_bytes: 0,
            ..polling_every(Duration::from_micros(200))
        };
        let (rec, writer, _) = Recorder::start(&dir, opts()).expect("start");
        let rec = Arc::new(rec);
        let ip = "192.0.2.1".parse().expect("ip");
        let day = duanlian_link::now_secs().div_euclid(DAY);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let rec = rec.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u32 {
                        let code = format!("c{}", i % 500);
                        let device = if t == 0 { Device::Bot } else { Device::Mobile };
                        rec.record(Visit::new(
                            day * DAY + i64::from(i % 80_000),
                            "d.cn",
                            &code,
                            None,
                            device,
                            ip,
                        ));
                        if i % 1000 == 0 {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("recording thread");
        }
        writer.finish();
        assert_eq!((rec.written(), rec.dropped()), (80_000, 0));
        let sum = |stats: &Stats| {
            (0..500).fold((0, 0), |(h, b), i| {
                let r = stats.report("d.cn", &format!("c{i}"), day, day, 1);
                (h + r.human, b + r.bot)
            })
        };
        assert_eq!(sum(rec.stats()), (60_000, 20_000));
        let (again, writer, _) = Recorder::start(&dir, opts()).expect("restart");
        writer.finish();
        assert_eq!(sum(again.stats()), (60_000, 20_000));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_slot_drops_and_counts_instead_of_waiting() {
        let dir = std::env::temp_dir().join(format!("dl-clicks-rec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = RecorderOptions {
            capacity: 2,
            writer_delay: Duration::from_millis(300),
            ..RecorderOptions::default()
        };
        let (rec, writer, _) = Recorder::start(&dir, opts).expect("start");
        let ip = "192.0.2.1".parse().expect("ip");
        let started = std::time::Instant::now();
        for i in 0..50 {
            rec.record(Visit::new(i, "d.cn", "c", None, Device::Mobile, ip));
        }
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "record waited"
        );
        assert!(rec.dropped() >= 40, "dropped {}", rec.dropped());
        writer.finish();
        assert_eq!(rec.written() + rec.dropped(), 50);
        // A restart rebuilds the same aggregates from the log.
        let keep_all = RecorderOptions {
            retention: None,
            ..RecorderOptions::default()
        };
        let (again, writer, report) = Recorder::start(&dir, keep_all).expect("restart");
        assert_eq!(report.clicks, rec.written());
        assert_eq!(
            again.stats().report("d.cn", "c", 0, 0, 1).human,
            rec.written()
        );
        writer.finish();
        // With a retention (the default: 400 days), clicks from 1970 are gone, files and all.
        let (_, writer, report) =
            Recorder::start(&dir, RecorderOptions::default()).expect("restart");
        writer.finish();
        assert_eq!(report.clicks, 0);
        let left = std::fs::read_dir(&dir).expect("dir").count();
        // Only the file the new writer may have opened for today can remain.
        assert!(left <= 1, "{left} files left");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A phone's click on `go.example.cn/code`, at one fixed time.
    fn mobile_click(code: &str) -> Visit<'_> {
        let ip = std::net::Ipv4Addr::new(192, 0, 2, 1).into();
        Visit::new(
            1_764_000_000,
            "go.example.cn",
            code,
            None,
            Device::Mobile,
            ip,
        )
    }

    /// Options whose writer polls every `every`, busy or idle.
    fn polling_every(every: Duration) -> RecorderOptions {
        RecorderOptions {
            poll_every: every,
            idle_poll_every: every,
            ..RecorderOptions::default()
        }
    }

    /// A link deleted right after its clicks (counted a batch at a time, not yet by then)
    /// starts afresh: its last clicks are not counted after `forget` and bring it back.
    #[test]
    fn a_forgotten_link_stays_forgotten() {
        let dir = fresh("forget");
        // A writer that does not come round before the end: only `forget` counts the slot.
        let (rec, writer, _) =
            Recorder::start(&dir, polling_every(Duration::from_secs(60))).expect("start");
        for _ in 0..10 {
            rec.record(mobile_click("gone"));
            rec.record(mobile_click("kept"));
        }
        let day = 1_764_000_000 / DAY;
        rec.stats().forget("go.example.cn", "gone");
        writer.finish();
        let human = |code| rec.stats().report("go.example.cn", code, day, day, 1).human;
        assert_eq!((human("gone"), human("kept")), (0, 10));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn fresh(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dl-clicks-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn totals(rec: &Recorder, from: i64, to: i64) -> (u64, u64) {
        let r = rec.stats().report("d.cn", "c", from, to, 3);
        (r.human, r.bot)
    }

    /// Raw clicks go (by age, by the size cap) while the statistics they fed stay, across
    /// restarts, counted once; closed files are compressed and still read.
    #[test]
    fn raw_logs_go_before_the_statistics_and_restarts_count_once() {
        let dir = fresh("raw");
        let now = duanlian_link::now_secs();
        let today = now.div_euclid(DAY);
        let opts = || RecorderOptions {
            max_file_bytes: 2_000,
            log_retention: Some(10 * DAY),
            reserve_bytes: 0,
            ..RecorderOptions::default()
        };
        let (rec, writer, _) = Recorder::start(&dir, opts()).expect("start");
        let ip = "192.0.2.1".parse().expect("ip");
        // 40 days ago to today, 50 clicks a day, in time order.
        let mut sent = 0;
        for day in (today - 40)..=today {
            for i in 0..50 {
                let device = if i % 10 == 0 {
                    Device::Bot
                } else {
                    Device::Mobile
                };
                rec.record(Visit::new(
                    day * DAY + i,
                    "d.cn",
                    "c",
                    Some(b"https://weibo.com/"),
                    device,
                    ip,
                ));
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        writer.finish();
        assert_eq!(rec.written(), sent);
        let before = totals(&rec, today - 40, today);
        assert_eq!(before, (sent * 9 / 10, sent / 10));
        let names = || -> Vec<String> {
            crate::log::log_files(&dir)
                .expect("files")
                .into_iter()
                .map(|f| f.0)
                .collect()
        };
        // Restarts: the summaries hold what the deleted raw files held; nothing twice.
        for _ in 0..2 {
            let (again, writer, _) = Recorder::start(&dir, opts()).expect("restart");
            std::thread::sleep(Duration::from_millis(200));
            writer.finish();
            assert_eq!(totals(&again, today - 40, today), before);
            let r = again.stats().report("d.cn", "c", today - 40, today, 3);
            assert_eq!(r.referrers[0], ("weibo.com".to_owned(), sent * 9 / 10));
        }
        let left = names();
        let oldest = left.first().expect("a raw file");
        let oldest_day = crate::log::file_day(oldest).expect("day");
        assert!(
            oldest_day >= today - 11,
            "raw files older than 10 days remain: {left:?}"
        );
        assert!(
            left.iter().filter(|n| n.ends_with(".tsv")).count() <= 1,
            "{left:?}"
        );
        // The size cap: the oldest raw files go; the statistics stay.
        let capped = RecorderOptions {
            max_log_bytes: Some(1),
            ..opts()
        };
        let (again, writer, _) = Recorder::start(&dir, capped).expect("restart");
        std::thread::sleep(Duration::from_millis(200));
        writer.finish();
        assert_eq!(totals(&again, today - 40, today), before);
        assert!(names().is_empty(), "{:?}", names());
        let (again, writer, _) = Recorder::start(&dir, opts()).expect("restart");
        writer.finish();
        assert_eq!(totals(&again, today - 40, today), before);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The load is the click rate over the last window, whatever came before it.
    #[test]
    fn the_load_is_the_last_windows_rate() {
        let mut load = Load::new(Duration::from_millis(500));
        assert!(!load.busy());
        // A million clicks now: busy at once, over a fifth of the window at least.
        load.clicks += 1_000_000;
        assert!(load.busy());
        // Nothing more: quiet again once the clicks are a window old.
        let end = Instant::now() + Duration::from_secs(5);
        while load.busy() {
            assert!(Instant::now() < end, "still busy long after the burst");
            std::thread::sleep(Duration::from_millis(20));
        }
        // A long quiet stretch does not water down a new burst.
        std::thread::sleep(Duration::from_millis(600));
        assert!(!load.busy());
        load.clicks += 20_000;
        assert!(load.busy(), "a burst after a quiet stretch");
    }

    /// Closed files wait while the node is in a burst and are compressed once it is over, or
    /// once those waiting pass the backlog; a file deleted meanwhile is passed over.
    #[test]
    fn compression_waits_for_a_lull_or_a_backlog() {
        let dir = fresh("lull");
        std::fs::create_dir_all(&dir).expect("dir");
        let file = |n: usize| {
            let path = dir.join(format!("clicks-20261201-{n:03}.tsv"));
            std::fs::write(
                &path,
                "1764547200\td.cn\tc\tmobile\t\t192.0.2.0\n".repeat(100),
            )
            .expect("write");
            path
        };
        let gz = |p: &Path| p.with_extension("tsv.gz");
        let start = |backlog: u64, busy: &Arc<AtomicBool>| {
            let (tx, rx) = std::sync::mpsc::channel();
            let busy = busy.clone();
            let thread = std::thread::spawn(move || {
                let stop = AtomicBool::new(false);
                let poll = Duration::from_millis(20);
                compress_in_lulls(&rx, &stop, &busy, backlog, poll)
            });
            (tx, thread)
        };
        let busy = Arc::new(AtomicBool::new(true));
        let (tx, thread) = start(1 << 30, &busy);
        let (gone, first) = (file(0), file(1));
        tx.send(gone.clone()).expect("send");
        tx.send(first.clone()).expect("send");
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            first.exists() && !gz(&first).exists(),
            "compressed in a burst"
        );
        std::fs::remove_file(&gone).expect("delete");
        busy.store(false, Ordering::Relaxed);
        let end = Instant::now() + Duration::from_secs(10);
        while !gz(&first).exists() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            gz(&first).exists() && !first.exists(),
            "not compressed after the burst"
        );
        assert!(!gz(&gone).exists(), "a deleted file came back compressed");
        drop(tx);
        thread.join().expect("join");
        // With no room for a backlog, a file is compressed in a burst.
        busy.store(true, Ordering::Relaxed);
        let (tx, thread) = start(0, &busy);
        let second = file(2);
        tx.send(second.clone()).expect("send");
        let end = Instant::now() + Duration::from_secs(10);
        while !gz(&second).exists() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gz(&second).exists(), "a backlog past its bound waited");
        drop(tx);
        thread.join().expect("join");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Below the disk's reserve raw clicks stop being written but are still counted.
    #[test]
    fn the_reserve_stops_raw_clicks_not_statistics() {
        let dir = fresh("reserve");
        let opts = RecorderOptions {
            reserve_bytes: u64::MAX,
            ..RecorderOptions::default()
        };
        let (rec, writer, _) = Recorder::start(&dir, opts).expect("start");
        std::thread::sleep(Duration::from_millis(150));
        let ip = "192.0.2.1".parse().expect("ip");
        let now = duanlian_link::now_secs();
        for i in 0..20 {
            rec.record(Visit::new(now + i, "d.cn", "c", None, Device::Mobile, ip));
        }
        writer.finish();
        assert_eq!((rec.written(), rec.unlogged()), (0, 20));
        let day = now.div_euclid(DAY);
        assert_eq!(totals(&rec, day, day + 1).0, 20);
        // The day summary keeps them across a restart with no raw log at all.
        let (again, writer, _) =
            Recorder::start(&dir, RecorderOptions::default()).expect("restart");
        writer.finish();
        assert_eq!(totals(&again, day, day + 1).0, 20);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
