//! One redirect connection: hyper driven beside a watchdog that ends it on shutdown, after a
//! slow request head, or after a long idle keep-alive.
use super::answer::Reply;
use super::{http, stopped, Answer, Options, Shared};
use crate::redirect::{Body, DirectRead};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::{ready, Future};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Serves a connection; on shutdown, lets the request in flight finish and closes it.
///
/// hyper's own header timer also runs while a keep-alive connection waits for its next
/// request, so one setting could not be both short (against slow clients) and longer than a
/// load balancer's idle timeout. Here hyper's timer is off and a watchdog keeps the two apart.
pub(super) async fn serve_until_stopped<A: Answer>(stream: TcpStream, shared: &Shared<A>) {
    let answer = shared.answer.clone();
    let peer = stream.peer_addr().ok();
    if !answer.may_defer() {
        // The plain service: no answer here ever waits for I/O.
        let service = service_fn(move |req| ready(Ok::<_, Infallible>(answer.answer(&req, peer))));
        return drive(stream, service, &shared.opts, shared.stop.clone()).await;
    }
    let service = service_fn(move |req| {
        let res = answer.answer(&req, peer);
        if res.extensions().get::<DirectRead>().is_none() {
            Reply::Now(Some(res))
        } else {
            let answer = answer.clone();
            Reply::Later(Box::pin(async move {
                answer.answer_later(&req, peer, res).await
            }))
        }
    });
    drive(stream, service, &shared.opts, shared.stop.clone()).await
}

/// Serves `stream` with `service` until it closes, `stop` turns true, or the watchdog ends it.
///
/// The watchdog and the shutdown signal wait in a watcher task of their own, which tells the
/// connection through an [`Ending`]. Waited for here beside the connection, as `select!`
/// branches, they were polled again at every wake-up of the connection, that is for every
/// request: about 370 instructions a request under callgrind, 6% of the whole server's.
///
/// Generic over the stream so that the tests can drive it over an in-memory pipe.
async fn drive<I, S>(stream: I, service: S, opts: &Options, stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = http(opts, None);
    let clock = Arc::new(ConnClock::default());
    let ending = Arc::new(Ending::default());
    let _watcher = AbortOnDrop(tokio::spawn(watch_connection(
        clock.clone(),
        ending.clone(),
        stop,
        Limits::of(opts),
    )));
    let io = Watched {
        inner: stream,
        clock,
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut ended = Ended {
        ending: &ending,
        registered: None,
    };
    let first = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = conn.as_mut().poll(cx) {
            return Poll::Ready(Ok(r));
        }
        std::pin::Pin::new(&mut ended).poll(cx).map(Err)
    })
    .await;
    let result = match first {
        Ok(result) => result,
        Err(End::Shutdown) => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
        Err(watchdog) => {
            tracing::debug!(reason = watchdog.reason(), "closing connection");
            return;
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Why a connection is told to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum End {
    /// The server is shutting down: finish the request in flight, then close.
    Shutdown = 1,
    /// The watchdog: a request head took too long to arrive. Close at once.
    HeaderTimeout = 2,
    /// The watchdog: idle past the keep-alive timeout. Close at once.
    KeepAliveTimeout = 3,
}

impl End {
    fn from_code(code: u8) -> Option<End> {
        [End::Shutdown, End::HeaderTimeout, End::KeepAliveTimeout]
            .into_iter()
            .find(|e| *e as u8 == code)
    }

    fn reason(self) -> &'static str {
        match self {
            End::Shutdown => "shutdown",
            End::HeaderTimeout => "header read timeout",
            End::KeepAliveTimeout => "keep-alive timeout",
        }
    }
}

/// A connection's [`End`], set once by its watcher task.
#[derive(Debug, Default)]
struct Ending {
    end: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl Ending {
    fn set(&self, end: End) {
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

    fn get(&self) -> Option<End> {
        End::from_code(self.end.load(Ordering::Acquire))
    }
}

/// The connection task's side of an [`Ending`]. A poll is one atomic load: the task's waker is
/// handed over on the first poll (and again only if it changes), not on every poll.
struct Ended<'a> {
    ending: &'a Ending,
    registered: Option<Waker>,
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

/// The watchdog's two limits, in whole seconds.
#[derive(Debug, Clone, Copy)]
struct Limits {
    head: u64,
    idle: u64,
}

impl Limits {
    fn of(opts: &Options) -> Limits {
        Limits {
            head: opts.header_read_timeout.as_secs().max(1),
            idle: opts.keep_alive_timeout.as_secs().max(1),
        }
    }
}

/// Waits for shutdown or the watchdog's verdict on one connection and tells the connection.
async fn watch_connection(
    clock: Arc<ConnClock>,
    ending: Arc<Ending>,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) {
    let end = tokio::select! {
        _ = stopped(&mut stop) => End::Shutdown,
        end = clock.watch(limits) => end,
    };
    ending.set(end);
}

/// Aborts a task when dropped: a connection's watcher ends with the connection.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a connection is doing, in whole seconds of its watchdog: cheap to update on every read
/// and write (relaxed atomics, no clock reads).
#[derive(Debug, Default)]
struct ConnClock {
    /// Seconds since the connection opened, advanced by the watchdog.
    tick: AtomicU64,
    /// Tick at which the current phase began.
    since: AtomicU64,
    /// Whether a request head has started arriving since the last response was written.
    in_head: AtomicBool,
}

impl ConnClock {
    fn read(&self, n: usize) {
        if n > 0 && !self.in_head.load(Ordering::Relaxed) {
            self.in_head.store(true, Ordering::Relaxed);
            self.since
                .store(self.tick.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    fn wrote(&self, n: usize) {
        if n > 0 {
            self.in_head.store(false, Ordering::Relaxed);
            self.since
                .store(self.tick.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Resolves when the connection has idled or dawdled too long; says which.
    async fn watch(&self, Limits { head, idle }: Limits) -> End {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.tick().await;
        loop {
            every.tick().await;
            let now = self.tick.fetch_add(1, Ordering::Relaxed) + 1;
            let elapsed = now - self.since.load(Ordering::Relaxed);
            if self.in_head.load(Ordering::Relaxed) {
                if elapsed >= head {
                    return End::HeaderTimeout;
                }
            } else if elapsed >= idle {
                return End::KeepAliveTimeout;
            }
        }
    }
}

/// A stream that tells its [`ConnClock`] about reads and writes.
struct Watched<T> {
    inner: T,
    clock: Arc<ConnClock>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.clock.read(n);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            self.clock.wrote(*n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            self.clock.wrote(*n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use hyper::Response;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::task::JoinHandle;
    use tokio::time::{sleep, Instant};

    const REQUEST: &[u8] = b"GET /x HTTP/1.1\r\nHost: go.example.cn\r\n\r\n";

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn ms(m: u64) -> Duration {
        Duration::from_millis(m)
    }

    fn opts(head: u64, idle: u64) -> Options {
        Options {
            header_read_timeout: secs(head),
            keep_alive_timeout: secs(idle),
            ..Options::default()
        }
    }

    /// One connection over an in-memory pipe, served by [`drive`] with a service that answers
    /// `200 ok` after `think`. Returns the client's end, the server's stop switch and the
    /// serving task.
    fn serve(
        opts: Options,
        think: Duration,
    ) -> (DuplexStream, watch::Sender<bool>, JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(4096);
        let (stop_tx, stop) = watch::channel(false);
        let task = tokio::spawn(async move {
            let service = service_fn(move |_req| async move {
                if !think.is_zero() {
                    sleep(think).await;
                }
                Ok::<_, Infallible>(Response::new(Body::new(Bytes::from_static(b"ok"))))
            });
            drive(server, service, &opts, stop).await;
        });
        (client, stop_tx, task)
    }

    /// Reads one whole response (its body is `ok`), leaving the connection open.
    async fn response(client: &mut DuplexStream) -> String {
        let mut got = Vec::new();
        while !got.ends_with(b"\r\n\r\nok") {
            let mut buf = [0; 1024];
            let n = client.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Reads until the server closes the connection: what came before, and when it closed.
    async fn until_closed(client: &mut DuplexStream) -> (String, Instant) {
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("read");
        (String::from_utf8_lossy(&got).into_owned(), Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_request_head_is_cut_at_the_header_timeout() {
        let (mut client, _stop, task) = serve(opts(3, 10), Duration::ZERO);
        let t0 = Instant::now();
        client
            .write_all(b"GET /x HTTP/1.1\r\nHost: go.exa")
            .await
            .expect("write");
        let (got, closed) = until_closed(&mut client).await;
        assert_eq!(closed - t0, secs(3), "closed at the limit, not before");
        assert_eq!(got, "", "cut without an answer");
        task.await.expect("served");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_trickled_a_byte_at_a_time_is_still_cut_at_the_header_timeout() {
        let (client, _stop, _task) = serve(opts(3, 10), Duration::ZERO);
        let (mut rx, mut tx) = tokio::io::split(client);
        let t0 = Instant::now();
        tokio::spawn(async move {
            for byte in b"GET /x HTTP/1.1\r\nHost: go.example.cn\r\nX: "
                .iter()
                .cycle()
            {
                if tx.write_all(&[*byte]).await.is_err() {
                    return;
                }
                sleep(ms(500)).await;
            }
        });
        let mut got = Vec::new();
        rx.read_to_end(&mut got).await.expect("read");
        assert_eq!(Instant::now() - t0, secs(3));
        assert!(got.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_head_finished_in_time_is_answered_and_the_connection_kept() {
        let (mut client, _stop, _task) = serve(opts(3, 10), Duration::ZERO);
        let t0 = Instant::now();
        client
            .write_all(b"GET /x HTTP/1.1\r\n")
            .await
            .expect("write");
        sleep(ms(2_500)).await;
        client
            .write_all(b"Host: go.example.cn\r\n\r\n")
            .await
            .expect("write");
        let answer = response(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert_eq!(Instant::now() - t0, ms(2_500));
        // The answer, written in the watchdog's second 2, starts the keep-alive clock.
        let (more, closed) = until_closed(&mut client).await;
        assert_eq!((more.as_str(), closed - t0), ("", secs(12)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_closes_at_the_keep_alive_timeout() {
        let (mut client, _stop, task) = serve(opts(3, 10), Duration::ZERO);
        let t0 = Instant::now();
        client.write_all(REQUEST).await.expect("write");
        let answer = response(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        let (more, closed) = until_closed(&mut client).await;
        assert_eq!(more, "");
        assert_eq!(
            closed - t0,
            secs(10),
            "idle is judged by the keep-alive timeout, not the header timeout"
        );
        task.await.expect("served");
    }

    #[tokio::test(start_paused = true)]
    async fn every_request_starts_the_keep_alive_timeout_again() {
        let (mut client, _stop, _task) = serve(opts(3, 10), Duration::ZERO);
        let t0 = Instant::now();
        client.write_all(REQUEST).await.expect("write");
        response(&mut client).await;
        sleep(ms(7_500)).await;
        client.write_all(REQUEST).await.expect("write");
        response(&mut client).await;
        let (_, closed) = until_closed(&mut client).await;
        assert_eq!(closed - t0, secs(17));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_sends_closes_at_the_keep_alive_timeout() {
        let (mut client, _stop, _task) = serve(opts(3, 10), Duration::ZERO);
        let t0 = Instant::now();
        let (got, closed) = until_closed(&mut client).await;
        assert_eq!((got.as_str(), closed - t0), ("", secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_lets_the_request_in_flight_finish_then_closes() {
        let (mut client, stop, task) = serve(opts(30, 75), secs(2));
        let t0 = Instant::now();
        client.write_all(REQUEST).await.expect("write");
        sleep(secs(1)).await;
        stop.send(true).expect("stop");
        let (got, closed) = until_closed(&mut client).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\nok"), "{got}");
        assert!(got.contains("connection: close\r\n"), "{got}");
        assert_eq!(closed - t0, secs(2), "closed as soon as the answer is out");
        task.await.expect("served");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_closes_an_idle_keep_alive_connection_at_once() {
        let (mut client, stop, task) = serve(opts(30, 75), Duration::ZERO);
        let t0 = Instant::now();
        client.write_all(REQUEST).await.expect("write");
        response(&mut client).await;
        sleep(ms(4_500)).await;
        stop.send(true).expect("stop");
        let (more, closed) = until_closed(&mut client).await;
        assert_eq!((more.as_str(), closed - t0), ("", ms(4_500)));
        task.await.expect("served");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_the_client_closes_ends_without_waiting_for_the_watchdog() {
        let (mut client, _stop, task) = serve(opts(3, 10), Duration::ZERO);
        let t0 = Instant::now();
        client.write_all(REQUEST).await.expect("write");
        response(&mut client).await;
        drop(client);
        task.await.expect("served");
        assert_eq!(Instant::now() - t0, Duration::ZERO);
    }

    #[test]
    fn limits_are_whole_seconds_and_at_least_one() {
        let opts = Options {
            header_read_timeout: ms(2_900),
            keep_alive_timeout: Duration::ZERO,
            ..Options::default()
        };
        let Limits { head, idle } = Limits::of(&opts);
        assert_eq!((head, idle), (2, 1));
    }

    /// Runs [`ConnClock::watch`] on `clock` from now; resolves to its verdict and when it came.
    fn watching(clock: &Arc<ConnClock>, head: u64, idle: u64) -> JoinHandle<(End, Instant)> {
        let clock = clock.clone();
        tokio::spawn(async move {
            let end = clock.watch(Limits { head, idle }).await;
            (end, Instant::now())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_written_turns_the_head_clock_into_the_idle_clock() {
        let t0 = Instant::now();
        let clock = Arc::new(ConnClock::default());
        let verdict = watching(&clock, 3, 5);
        clock.read(10);
        sleep(ms(2_500)).await;
        clock.wrote(100);
        let (end, at) = verdict.await.expect("watched");
        assert_eq!((end, at - t0), (End::KeepAliveTimeout, secs(7)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_read_starts_no_request_head() {
        let t0 = Instant::now();
        let clock = Arc::new(ConnClock::default());
        let verdict = watching(&clock, 3, 5);
        clock.read(0);
        let (end, at) = verdict.await.expect("watched");
        assert_eq!((end, at - t0), (End::KeepAliveTimeout, secs(5)));
    }

    /// Counts its wake-ups.
    #[derive(Debug, Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl Wakes {
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn poll(ended: &mut Ended<'_>, waker: &Waker) -> Poll<End> {
        std::pin::Pin::new(ended).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn an_end_set_before_the_first_poll_is_ready_at_once() {
        let ending = Ending::default();
        ending.set(End::HeaderTimeout);
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut ended = Ended {
            ending: &ending,
            registered: None,
        };
        assert_eq!(poll(&mut ended, &waker), Poll::Ready(End::HeaderTimeout));
        assert_eq!(wakes.count(), 0);
    }

    #[test]
    fn set_wakes_the_waiting_task_once_and_its_next_poll_is_ready() {
        let ending = Ending::default();
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(wakes.clone());
        let mut ended = Ended {
            ending: &ending,
            registered: None,
        };
        assert_eq!(poll(&mut ended, &waker), Poll::Pending);
        assert_eq!(poll(&mut ended, &waker), Poll::Pending);
        assert_eq!(wakes.count(), 0, "nothing wakes the task before the end");
        ending.set(End::KeepAliveTimeout);
        assert_eq!(wakes.count(), 1);
        assert_eq!(poll(&mut ended, &waker), Poll::Ready(End::KeepAliveTimeout));
        assert_eq!(wakes.count(), 1);
    }

    #[test]
    fn a_task_that_polls_with_a_new_waker_is_the_one_woken() {
        let ending = Ending::default();
        let (first, second) = (Arc::new(Wakes::default()), Arc::new(Wakes::default()));
        let mut ended = Ended {
            ending: &ending,
            registered: None,
        };
        assert_eq!(poll(&mut ended, &Waker::from(first.clone())), Poll::Pending);
        assert_eq!(
            poll(&mut ended, &Waker::from(second.clone())),
            Poll::Pending
        );
        ending.set(End::Shutdown);
        assert_eq!((first.count(), second.count()), (0, 1));
    }

    #[test]
    fn polling_again_with_the_same_waker_does_not_hand_it_over_again() {
        let ending = Ending::default();
        let waker = Waker::from(Arc::new(Wakes::default()));
        let mut ended = Ended {
            ending: &ending,
            registered: None,
        };
        assert_eq!(poll(&mut ended, &waker), Poll::Pending);
        let handed = ending.waker.lock().expect("lock").take();
        assert!(handed.is_some_and(|w| w.will_wake(&waker)));
        // Emptied behind its back, the slot stays empty: the second poll takes no lock.
        assert_eq!(poll(&mut ended, &waker.clone()), Poll::Pending);
        assert!(ending.waker.lock().expect("lock").is_none());
    }

    /// Waits on `ending` in a task of its own; resolves to the end and when the task woke.
    fn waiting(ending: &Arc<Ending>) -> JoinHandle<(End, Instant)> {
        let ending = ending.clone();
        tokio::spawn(async move {
            let end = Ended {
                ending: &ending,
                registered: None,
            }
            .await;
            (end, Instant::now())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_waiting_task_wakes_exactly_when_the_watchdog_ends_the_connection() {
        let t0 = Instant::now();
        let (_stop_tx, stop) = watch::channel(false);
        let clock = Arc::new(ConnClock::default());
        let ending = Arc::new(Ending::default());
        let woke = waiting(&ending);
        clock.read(1);
        tokio::spawn(watch_connection(
            clock,
            ending.clone(),
            stop,
            Limits { head: 3, idle: 5 },
        ));
        sleep(ms(2_999)).await;
        assert!(!woke.is_finished(), "woken before the header timeout");
        let (end, at) = woke.await.expect("woken");
        assert_eq!((end, at - t0), (End::HeaderTimeout, secs(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_waiting_task_wakes_exactly_when_shutdown_begins() {
        let t0 = Instant::now();
        let (stop_tx, stop) = watch::channel(false);
        let ending = Arc::new(Ending::default());
        let woke = waiting(&ending);
        tokio::spawn(watch_connection(
            Arc::default(),
            ending.clone(),
            stop,
            Limits { head: 3, idle: 5 },
        ));
        sleep(ms(1_500)).await;
        assert!(!woke.is_finished());
        stop_tx.send(true).expect("stop");
        let (end, at) = woke.await.expect("woken");
        assert_eq!((end, at - t0), (End::Shutdown, ms(1_500)));
    }
}
