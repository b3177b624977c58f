//! The bounded queue between the redirect path and the click-log writer.
use crate::log::LogWriter;
use crate::{read_logs, Click, ClickError, ReadReport, Stats};
use std::path::Path;
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
    /// How often the writer collects queued clicks and writes them out. Default 50 ms; the
    /// queue must hold what arrives meanwhile (65,536 clicks is 1.3 M redirects a second).
    pub poll_every: Duration,
    /// A pause after each written batch; only for tests of the full-queue path.
    pub writer_delay: Duration,
    /// Clicks older than this many seconds are forgotten: their days leave the aggregates and
    /// their log files are deleted (checked at start and hourly). `None` keeps everything.
    /// Default 400 days, so a year can always be compared with the one before.
    pub retention: Option<i64>,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions {
            capacity: 65_536,
            max_file_bytes: 64 << 20,
            poll_every: Duration::from_millis(50),
            writer_delay: Duration::ZERO,
            retention: Some(400 * 86_400),
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    written: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
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
    Log(LogWriter, std::path::PathBuf),
    /// Somewhere else, which keeps the aggregates itself.
    Forward(Box<dyn Forward>),
}

/// The redirect path's end of the queue: [`Recorder::record`] never blocks.
#[derive(Debug)]
pub struct Recorder {
    tx: SyncSender<Click>,
    counters: Arc<Counters>,
    stats: Arc<Stats>,
}

/// The writer thread; [`Writer::finish`] drains the queue and flushes the log.
#[derive(Debug)]
pub struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    /// Rebuilds the aggregates from the logs in `dir`, then starts the writer thread that
    /// appends new clicks there and counts them in.
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
        let mut batch = Vec::with_capacity(4096);
        let report = read_logs(dir, since, i64::MAX, |c| {
            batch.push(c);
            if batch.len() == batch.capacity() {
                stats.add(&batch);
                batch.clear();
            }
        })?;
        stats.add(&batch);
        let log = LogWriter::new(dir, opts.max_file_bytes)?;
        let (recorder, writer) = Recorder::spawn(Output::Log(log, dir.to_path_buf()), stats, opts)?;
        Ok((recorder, writer, report))
    }

    /// A recorder whose writer hands clicks to `forward` instead of a log, and leaves
    /// [`Recorder::stats`] to whoever consumes what was forwarded (the same aggregates, fed
    /// from the cluster's stream).
    pub fn forwarding(
        forward: Box<dyn Forward>,
        opts: RecorderOptions,
    ) -> Result<(Recorder, Writer), ClickError> {
        Recorder::spawn(Output::Forward(forward), Arc::new(Stats::default()), opts)
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
            if let Output::Log(_, dir) = &output {
                if let Err(e) = crate::log::remove_before(dir, since) {
                    tracing::warn!(error = %e, "could not remove old click logs");
                }
            }
        }
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
        for slice in batch.chunks(512) {
            match &mut output {
                Output::Log(log, dir) => {
                    write_batch(slice, log, dir, counters, stats, &mut failing)
                }
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
        if disconnected || (stop.load(Ordering::Acquire) && got == 0) {
            break;
        }
        if !stop.load(Ordering::Acquire) {
            std::thread::sleep(opts.poll_every);
        }
    }
    if let Output::Log(log, _) = &mut output {
        if let Err(e) = log.flush() {
            tracing::error!(error = %e, "click log flush at shutdown failed");
        }
    }
}

fn write_batch(
    batch: &[Click],
    log: &mut LogWriter,
    dir: &Path,
    counters: &Counters,
    stats: &Stats,
    failing: &mut bool,
) {
    // Aggregates count every click, even ones the disk refused: the log is the export, the
    // aggregates are what the API shows.
    stats.add(batch);
    let written = batch
        .iter()
        .try_for_each(|c| log.append(c))
        .and_then(|()| log.flush());
    match written {
        Ok(()) => {
            counters
                .written
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            if *failing {
                tracing::info!(dir = %dir.display(), "click log writable again");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Device;

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
}
