//! The watchdog of a listener's connections: one task that looks at every open connection once
//! a second, as nginx's timer tree does, so a connection costs the watchdog one registration
//! and no task, timer or wake-up of its own.
//!
//! A connection's phase (waiting for a request head, or idle between requests) is kept in
//! relaxed atomics that its stream updates on every read and write without reading a clock;
//! the sweeper stamps a new phase with its tick the next time it passes, so a limit is never
//! enforced early and at most one second late.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::watch;

/// Why a connection is told to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum End {
    /// The server is shutting down: finish the request in flight, then close.
    Shutdown = 1,
    /// A request head took too long to arrive (or a new connection sent nothing). Close at once.
    HeaderTimeout = 2,
    /// Idle past the keep-alive timeout. Close at once.
    KeepAliveTimeout = 3,
}

impl End {
    fn from_code(code: u8) -> Option<End> {
        [End::Shutdown, End::HeaderTimeout, End::KeepAliveTimeout]
            .into_iter()
            .find(|e| *e as u8 == code)
    }

    pub(super) fn reason(self) -> &'static str {
        match self {
            End::Shutdown => "shutdown",
            End::HeaderTimeout => "header read timeout",
            End::KeepAliveTimeout => "keep-alive timeout",
        }
    }
}

/// The watchdog's two limits, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    pub(super) head: u64,
    pub(super) idle: u64,
}

impl Limits {
    pub(super) fn of(opts: &super::Options) -> Limits {
        Limits {
            head: opts.header_read_timeout.as_secs().max(1),
            idle: opts.keep_alive_timeout.as_secs().max(1),
        }
    }
}

/// `since` of a phase the sweeper has not stamped yet.
const UNSTAMPED: u64 = u64::MAX;

/// One connection as its stream and the sweeper see it.
#[derive(Debug)]
pub(super) struct ConnState {
    /// The sweeper's tick at which the current phase began, or [`UNSTAMPED`].
    since: AtomicU64,
    /// Whether a request head is awaited: from accept (a new connection must speak first),
    /// and from the first byte after a response.
    in_head: AtomicBool,
    /// Set when the connection is gone; the sweeper then forgets it.
    closed: AtomicBool,
    pub(super) ending: Ending,
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState {
            since: AtomicU64::new(UNSTAMPED),
            in_head: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            ending: Ending::default(),
        }
    }
}

impl ConnState {
    pub(super) fn read(&self, n: usize) {
        if n > 0 && !self.in_head.load(Ordering::Relaxed) {
            self.in_head.store(true, Ordering::Relaxed);
            self.since.store(UNSTAMPED, Ordering::Relaxed);
        }
    }

    pub(super) fn wrote(&self, n: usize) {
        if n > 0 {
            self.in_head.store(false, Ordering::Relaxed);
            self.since.store(UNSTAMPED, Ordering::Relaxed);
        }
    }

    /// The connection is gone: the sweeper drops it at its next pass.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// The verdict at tick `now`, stamping a new phase.
    fn judge(&self, now: u64, limits: Limits) -> Option<End> {
        let since = self.since.load(Ordering::Relaxed);
        if since == UNSTAMPED {
            self.since.store(now, Ordering::Relaxed);
            return None;
        }
        let elapsed = now.saturating_sub(since);
        if self.in_head.load(Ordering::Relaxed) {
            (elapsed >= limits.head).then_some(End::HeaderTimeout)
        } else {
            (elapsed >= limits.idle).then_some(End::KeepAliveTimeout)
        }
    }
}

/// The connections of one listener, and the task that watches them.
#[derive(Debug)]
pub(super) struct Sweeper {
    limits: Limits,
    conns: Mutex<Conns>,
}

#[derive(Debug, Default)]
struct Conns {
    list: Vec<Arc<ConnState>>,
    stopping: bool,
}

impl Sweeper {
    pub(super) fn new(limits: Limits) -> Sweeper {
        Sweeper {
            limits,
            conns: Mutex::new(Conns::default()),
        }
    }

    fn conns(&self) -> std::sync::MutexGuard<'_, Conns> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new connection's state, watched from now on (told to end at once if shutdown began).
    pub(super) fn register(&self) -> Arc<ConnState> {
        let state = Arc::new(ConnState::default());
        let mut conns = self.conns();
        if conns.stopping {
            state.ending.set(End::Shutdown);
        }
        conns.list.push(state.clone());
        state
    }

    /// Connections being watched (closed ones are counted until the next pass).
    #[cfg(test)]
    pub(super) fn watched(&self) -> usize {
        self.conns().list.len()
    }

    /// One pass at tick `now`: forgets closed connections and ends those past a limit.
    fn sweep(&self, now: u64) {
        let limits = self.limits;
        self.conns().list.retain(|c| {
            if c.closed.load(Ordering::Relaxed) {
                return false;
            }
            if c.ending.get().is_none() {
                if let Some(end) = c.judge(now, limits) {
                    c.ending.set(end);
                }
            }
            true
        });
    }

    /// Tells every connection, and every one registered from now on, to end after its
    /// request in flight.
    fn stop(&self) {
        let mut conns = self.conns();
        conns.stopping = true;
        for c in &conns.list {
            c.ending.set(End::Shutdown);
        }
    }

    /// Watches until `stop` turns true, then ends every connection.
    pub(super) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        let mut now = 0u64;
        loop {
            tokio::select! {
                _ = every.tick() => {
                    now += 1;
                    self.sweep(now);
                }
                _ = super::stopped(&mut stop) => break,
            }
        }
        self.stop();
    }
}

/// A connection's [`End`], set once by the sweeper.
#[derive(Debug, Default)]
pub(super) struct Ending {
    end: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl Ending {
    pub(super) fn set(&self, end: End) {
        self.end.store(end as u8, Ordering::Release);
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub(super) fn get(&self) -> Option<End> {
        End::from_code(self.end.load(Ordering::Acquire))
    }
}

/// The connection task's side of an [`Ending`]. A poll is one atomic load: the task's waker is
/// handed over on the first poll (and again only if it changes), not on every poll.
pub(super) struct Ended<'a> {
    pub(super) ending: &'a Ending,
    pub(super) registered: Option<Waker>,
}

impl std::future::Future for Ended<'_> {
    type Output = End;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        if let Some(end) = self.ending.get() {
            return Poll::Ready(end);
        }
        if !self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            *self
                .ending
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
            self.registered = Some(cx.waker().clone());
            // `set` may have looked for a waker before this one was there to take.
            if let Some(end) = self.ending.get() {
                return Poll::Ready(end);
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::Wake;

    const LIMITS: Limits = Limits { head: 3, idle: 5 };

    #[test]
    fn a_new_connection_awaits_a_head_from_the_tick_that_first_sees_it() {
        let c = ConnState::default();
        assert_eq!(c.judge(7, LIMITS), None, "stamped");
        assert_eq!(c.judge(9, LIMITS), None);
        assert_eq!(c.judge(10, LIMITS), Some(End::HeaderTimeout));
    }

    #[test]
    fn a_response_written_turns_the_head_clock_into_the_idle_clock() {
        let c = ConnState::default();
        c.read(10);
        assert_eq!(c.judge(1, LIMITS), None);
        c.wrote(100);
        assert_eq!(c.judge(3, LIMITS), None, "a new phase, stamped");
        assert_eq!(c.judge(7, LIMITS), None, "idle 4 s: not yet");
        assert_eq!(c.judge(8, LIMITS), Some(End::KeepAliveTimeout));
    }

    #[test]
    fn an_empty_read_starts_no_request_head() {
        let c = ConnState::default();
        c.wrote(1);
        c.judge(1, LIMITS);
        c.read(0);
        assert_eq!(c.judge(4, LIMITS), None, "still idle, not a head past 3 s");
        c.read(1);
        assert_eq!(c.judge(5, LIMITS), None, "a head, stamped");
        assert_eq!(c.judge(8, LIMITS), Some(End::HeaderTimeout));
    }

    struct Noop;

    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    #[test]
    fn polling_again_with_the_same_waker_does_not_hand_it_over_again() {
        let ending = Ending::default();
        let waker = Waker::from(Arc::new(Noop));
        let mut ended = Ended {
            ending: &ending,
            registered: None,
        };
        let mut cx = Context::from_waker(&waker);
        assert_eq!(std::pin::Pin::new(&mut ended).poll(&mut cx), Poll::Pending);
        let handed = ending.waker.lock().expect("lock").take();
        assert!(handed.is_some_and(|w| w.will_wake(&waker)));
        // Emptied behind its back, the slot stays empty: the second poll takes no lock.
        let again = waker.clone();
        let mut cx = Context::from_waker(&again);
        assert_eq!(std::pin::Pin::new(&mut ended).poll(&mut cx), Poll::Pending);
        assert!(ending.waker.lock().expect("lock").is_none());
    }
}
