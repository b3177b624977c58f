//! The bounded queue between the redirect path and the click-log writer.
use crate::log::{LogWriter, Position};
use crate::{checkpoint, Click, ClickError, ReadReport, Stats};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How the recorder queues and writes.
#[derive(Debug, Clone)]
pub struct RecorderOptions {
    /// Clicks the queue holds before new ones are dropped. Default 65,536.
    pub capacity: usize,
    /// A log file is closed and a new one started past this size. Default 64 MiB.
    pub max_file_bytes: u64,
    /// How often the writer collects queued clicks and writes them out. Default 2 ms, so that
    /// its turns on a core it shares with redirects are short; the queue must hold what
    /// arrives meanwhile, and while the writer waits for the core.
    pub poll_every: Duration,
    /// A pause after each written batch; only for tests of the full-queue path.
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
/// stream, whose consumers keep the aggregates. It must not block; what it cannot take it
/// refuses, and the writer counts those clicks as failed.
pub trait Forward: Send + 'static {
    /// Takes a batch; returns whether it was accepted.
    fn forward(&mut self, batch: &[Click]) -> bool;
}

/// Where the writer thread puts clicks.
enum Output {
    /// The local log; the writer also keeps the aggregates.
    Log(Box<LocalLog>),
    /// Somewhere else, which keeps the aggregates itself.
    Forward(Box<dyn Forward>),
}

/// The redirect path's end of the queue: [`Recorder::record`] never blocks.
#[derive(Debug)]
pub struct Recorder {
    tx: SyncSender<Click>,
    counters: Arc<Counters>,
    stats: Arc<Stats>,
    /// The local log's folder, if clicks go to one.
    dir: Option<PathBuf>,
}

/// The writer thread; [`Writer::finish`] drains the queue and flushes the log.
#[derive(Debug)]
pub struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Loads the aggregates from the day summaries in `dir` and the raw log written after
    /// them, then starts the writer thread that appends new clicks there and counts them in.
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
            compressor: Compressor::default(),
            pass: None,
            held: std::collections::VecDeque::new(),
            due: false,
            recheck: false,
        };
        let (mut recorder, writer) = Recorder::spawn(Output::Log(Box::new(log)), stats, opts)?;
        recorder.dir = Some(dir.to_path_buf());
        Ok((recorder, writer, report))
    }

    /// A recorder whose writer hands clicks to `forward` instead of a log, and leaves
    /// `stats` (what [`Recorder::stats`] answers) to whoever consumes what was forwarded.
    pub fn forwarding(
        forward: Box<dyn Forward>,
        stats: Arc<Stats>,
        opts: RecorderOptions,
    ) -> Result<(Recorder, Writer), ClickError> {
        Recorder::spawn(Output::Forward(forward), stats, opts)
    }

    /// The queue, the counters and the writer thread that empties the queue into `output`.
    fn spawn(
        output: Output,
        stats: Arc<Stats>,
        opts: RecorderOptions,
    ) -> Result<(Recorder, Writer), ClickError> {
        let (tx, rx) = sync_channel(opts.capacity.max(1));
        let counters = Arc::new(Counters::default());
        counters
            .now
            .store(duanlian_link::now_secs(), Ordering::Relaxed);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (counters, stats, stop) = (counters.clone(), stats.clone(), stop.clone());
            std::thread::Builder::new()
                .name("duanlian-clicks".into())
                .spawn(move || write_loop(rx, output, &opts, &counters, &stats, &stop))
                .map_err(|e| ClickError::io(Path::new("click writer thread"), e))?
        };
        Ok((
            Recorder {
                tx,
                counters,
                stats,
                dir: None,
            },
            Writer {
                stop,
                thread: Some(thread),
            },
        ))
    }

    /// Queues a click; when the queue is full the click is dropped and counted, never waited for.
    #[inline]
    pub fn record(&self, click: Click) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(click)
        {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The current time in UTC seconds as of the writer's last poll (at most
    /// [`RecorderOptions::poll_every`] behind while the writer keeps up): the time to stamp a
    /// click with.
    #[inline]
    pub fn now(&self) -> i64 {
        self.counters.now.load(Ordering::Relaxed)
    }

    /// The aggregates the writer keeps up to date.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Clicks written to the log so far.
    pub fn written(&self) -> u64 {
        self.counters.written.load(Ordering::Relaxed)
    }

    /// Clicks dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed)
    }

    /// Clicks counted but not written because the log could not be written.
    pub fn failed(&self) -> u64 {
        self.counters.failed.load(Ordering::Relaxed)
    }

    /// Clicks counted but kept out of the raw log to leave the disk's reserve free.
    pub fn unlogged(&self) -> u64 {
        self.counters.unlogged.load(Ordering::Relaxed)
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
    /// Stops the writer once the queue is empty, with everything written flushed.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
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
    held: std::collections::VecDeque<Click>,
    /// A checkpoint is due: it starts once the one under way ends.
    due: bool,
    /// A checkpoint has made more raw files deletable: look at them at the next turn.
    recheck: bool,
}

/// Links a checkpoint looks at in one turn of the writer: about a millisecond.
const CHECKPOINT_STEP: usize = 4096;

/// Compresses closed click logs on a thread of its own at the lowest priority: a 64 MiB file
/// is a second of CPU, which on the writer thread would stall the click queue (and drop clicks
/// in a burst), and at normal priority would take turns with the redirects sharing the core.
/// Files wait uncompressed while the machine is busy; they count against the log's size cap
/// as they are, so the disk stays within bounds meanwhile.
/// Dropped with the log: it finishes the file in hand and leaves the rest to the next start
/// (which compresses what an earlier run left).
#[derive(Default)]
struct Compressor {
    tx: Option<std::sync::mpsc::Sender<PathBuf>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
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
        let stop = self.stop.clone();
        let spawned = std::thread::Builder::new()
            .name("duanlian-gzip".into())
            .spawn(move || {
                lowest_priority();
                for path in rx {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    compress_here(&path);
                }
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

fn compress_here(path: &Path) {
    if let Err(e) = crate::log::compress(path) {
        tracing::warn!(error = %e, "compressing a closed click log failed");
    }
}

/// Nice 19 for the calling thread (on Linux a thread id names one thread); best effort.
fn lowest_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), 19) {
        tracing::debug!(error = %e, "could not lower the compressor's priority");
    }
}

impl LocalLog {
    fn write(&mut self, batch: &[Click], counters: &Counters, stats: &Stats, failing: &mut bool) {
        self.append(batch, counters, failing);
        // Counted after they are in the log, so that what the statistics show, an export can
        // already read. Aggregates count every click, even ones the disk refused: the log is the
        // export, the aggregates are what the API shows. While a checkpoint builds,
        // [`LocalLog::hold`] keeps the clicks for later instead.
        if !self.holding() {
            self.count(batch, stats);
        }
    }

    /// Appends to the raw log, unless the disk is down to its reserve.
    fn append(&mut self, batch: &[Click], counters: &Counters, failing: &mut bool) {
        if self.paused {
            counters
                .unlogged
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            return;
        }
        let written = batch
            .iter()
            .try_for_each(|c| self.log.append(c))
            .and_then(|()| self.log.flush());
        match written {
            Ok(()) => {
                counters
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if *failing {
                    tracing::info!(dir = %self.dir.display(), "click log writable again");
                    *failing = false;
                }
            }
            Err(e) => {
                counters
                    .failed
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
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

    /// Moves a turn's clicks into the held ones if a checkpoint is building (they were written
    /// to the raw log, not counted); else leaves them. Moved, not copied: a pass lasts most of a
    /// second, and a copy is an allocation a click.
    fn hold(&mut self, batch: &mut Vec<Click>) {
        if self.holding() {
            self.held.extend(batch.drain(..));
        }
    }

    fn count(&mut self, batch: &[Click], stats: &Stats) {
        stats.add(batch);
        let mut last = None;
        for c in batch {
            let day = c.at.div_euclid(DAY);
            if last != Some(day) {
                self.dirty.insert(day);
                last = Some(day);
            }
        }
    }

    /// Starts summarising the days that got clicks, as of the log's current position, unless
    /// a checkpoint is under way already.
    fn start_checkpoint(&mut self) {
        if self.pass.is_some() || !self.held.is_empty() {
            return;
        }
        self.last_checkpoint = std::time::Instant::now();
        let at = match (self.pending.take(), self.log.position()) {
            (_, Some(at)) => at,
            (Some(at), None) => at,
            (None, None) if self.dirty.is_empty() => return,
            // Clicks counted while paused or failing, none written since start: their days are
            // summarised as of before any raw file of this run.
            (None, None) => (String::new(), 0),
        };
        if self.log.flush().is_err() {
            return; // the write path reports it
        }
        tracing::debug!(days = self.dirty.len(), "click checkpoint started");
        self.pass = Some(checkpoint::Pass::new(at, std::mem::take(&mut self.dirty)));
    }

    /// Takes the checkpoint under way a step further (`budget` links; `wait`: for its files);
    /// once its summaries are built the clicks held back meanwhile are counted.
    fn step_checkpoint(&mut self, stats: &Stats, budget: usize, wait: bool) {
        let Some(pass) = &mut self.pass else {
            return;
        };
        let outcome = pass.step(&self.dir, stats, budget, wait);
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

    /// Counts up to `n` of the clicks held back while a checkpoint was building.
    fn count_held(&mut self, stats: &Stats, n: usize) {
        if self.holding() || self.held.is_empty() {
            return;
        }
        let n = n.min(self.held.len());
        let slice: Vec<Click> = self.held.drain(..n).collect();
        self.count(&slice, stats);
    }

    /// A whole checkpoint now: at shutdown, and before deleting for the disk's reserve.
    fn checkpoint(&mut self, stats: &Stats) {
        self.step_checkpoint(stats, usize::MAX, true);
        self.count_held(stats, usize::MAX);
        self.start_checkpoint();
        self.step_checkpoint(stats, usize::MAX, true);
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
    fn maintain(&mut self, stats: &Stats, opts: &RecorderOptions, now: i64) {
        let closed = self.log.take_closed();
        if !closed.is_empty()
            || self.pending.is_some()
            || (!self.dirty.is_empty() && self.last_checkpoint.elapsed() >= opts.checkpoint_every)
        {
            self.due = true;
        }
        if self.due && self.pass.is_none() {
            self.due = false;
            self.start_checkpoint();
        }
        self.step_checkpoint(stats, CHECKPOINT_STEP, false);
        self.count_held(stats, CHECKPOINT_STEP);
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
            self.checkpoint(stats);
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
    rx: Receiver<Click>,
    mut output: Output,
    opts: &RecorderOptions,
    counters: &Counters,
    stats: &Stats,
    stop: &AtomicBool,
) {
    // The writer polls instead of blocking in `recv`: a receiver waiting on the channel makes
    // every send a futex wake-up and a context switch, which on a busy redirect core cost more
    // than the rest of the click put together. Between polls a send is a few atomic operations.
    let mut batch = Vec::with_capacity(4096);
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
        // Read before the queue is: every click sent before `finish` set the flag is then
        // in the queue this pass drains. (Read after, a click sent between an empty drain and
        // the flag would be left behind.)
        let stopping = stop.load(Ordering::Acquire);
        let mut disconnected = false;
        while batch.len() < batch.capacity() {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        let (got, full) = (batch.len(), batch.len() == batch.capacity());
        // In slices, yielding between them: a whole batch at once is milliseconds of work that
        // a redirect thread sharing this core would wait behind.
        for slice in batch.chunks(128) {
            match &mut output {
                Output::Log(log) => log.write(slice, counters, stats, &mut failing),
                Output::Forward(f) => {
                    let counter = if f.forward(slice) {
                        &counters.written
                    } else {
                        &counters.failed
                    };
                    counter.fetch_add(slice.len() as u64, Ordering::Relaxed);
                }
            }
            std::thread::yield_now();
        }
        if let Output::Log(log) = &mut output {
            // Before `maintain`, which may end the pass's building: the slices above were
            // written while it built.
            log.hold(&mut batch);
            log.maintain(stats, opts, now);
        }
        if got > 0 {
            batch.clear();
            if !opts.writer_delay.is_zero() {
                std::thread::sleep(opts.writer_delay);
            }
        }
        if full {
            continue;
        }
        // Asked to stop: go on until a pass finds the queue empty, so nothing queued is lost.
        if disconnected || (stopping && got == 0) {
            break;
        }
        if !stopping {
            std::thread::sleep(opts.poll_every);
        }
    }
    if let Output::Log(log) = &mut output {
        if let Err(e) = log.log.flush() {
            tracing::error!(error = %e, "click log flush at shutdown failed");
        }
        log.checkpoint(stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;

    /// A click recorded just before `finish` is counted: the writer must not take the stop
    /// flag for "the queue is empty" when it looked at the queue before the click arrived.
    #[test]
    fn a_click_recorded_just_before_finish_is_kept() {
        let ip = "192.0.2.1".parse().expect("ip");
        for i in 0..300 {
            let dir =
                std::env::temp_dir().join(format!("dl-clicks-fin-{}-{i}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            let opts = RecorderOptions {
                poll_every: Duration::from_micros(50),
                ..RecorderOptions::default()
            };
            let (rec, writer, _) = Recorder::start(&dir, opts).expect("start");
            // Let the writer reach its polling, then race it.
            std::thread::sleep(Duration::from_micros(200 + i % 7 * 30));
            rec.record(Click::new(
                1_764_000_000,
                "go.example.cn",
                "x7Kp2Qa",
                None,
                Device::Mobile,
                ip,
            ));
            writer.finish();
            let day = 1_764_000_000 / DAY;
            let r = rec.stats().report("go.example.cn", "x7Kp2Qa", day, day, 1);
            assert_eq!(r.human, 1, "round {i}");
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
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
            rec.record(Click::new(i, "d.cn", "c", None, Device::Mobile, ip));
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
                rec.record(Click::new(
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
            rec.record(Click::new(now + i, "d.cn", "c", None, Device::Mobile, ip));
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
