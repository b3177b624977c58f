//! One redirect connection: hyper driven until the client leaves, or the sweeper (the
//! listener's watchdog) ends it on shutdown, after a slow request head, or after a long idle
//! keep-alive.
use super::answer::Reply;
use super::sweep::{ConnState, End, Ended};
use super::{http, Answer, Options, Shared};
use crate::redirect::{Body, DirectRead};
use bytes::{Buf, Bytes};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::{ready, Future};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use tokio::io::{AsyncRead, AsyncWrite};

/// Serves a connection from `peer` (the address `accept` returned); on shutdown, lets the
/// request in flight finish and closes it.
///
/// hyper's own header timer also runs while a keep-alive connection waits for its next
/// request, so one setting could not be both short (against slow clients) and longer than a
/// load balancer's idle timeout. Here hyper's timer is off and the sweeper keeps the two apart.
pub(super) async fn serve_until_stopped<A: Answer, I: AsyncRead + AsyncWrite + Unpin>(
    stream: I,
    peer: SocketAddr,
    state: Arc<ConnState>,
    shared: &Shared<A>,
) {
    let answer = shared.answer.clone();
    let peer = Some(peer);
    if !answer.may_defer() {
        // The plain service: no answer here ever waits for I/O.
        let service = service_fn(move |req| ready(Ok::<_, Infallible>(answer.answer(&req, peer))));
        return drive(stream, service, &shared.opts, state).await;
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
    drive(stream, service, &shared.opts, state).await
}

/// [`serve_until_stopped`] for HTTPS to domains with HSTS: every answer to such a domain
/// carries the header. A function of its own, never inlined, so that the other connections'
/// code stays as it was (a third service in `serve_until_stopped` cost every keep-alive
/// request about 150 instructions, in hyper's code inlined differently).
#[inline(never)]
pub(super) async fn serve_with_hsts<A: Answer, I: AsyncRead + AsyncWrite + Unpin>(
    stream: I,
    peer: SocketAddr,
    state: Arc<ConnState>,
    shared: &Shared<A>,
    tls: Arc<crate::Tls>,
) {
    let answer = shared.answer.clone();
    let peer = Some(peer);
    let service = service_fn(move |req| {
        let answer = answer.clone();
        let tls = tls.clone();
        async move {
            let first = answer.answer(&req, peer);
            let mut res = if first.extensions().get::<DirectRead>().is_none() {
                first
            } else {
                answer.answer_later(&req, peer, first).await
            };
            if let Some(v) = tls.hsts_for(&req) {
                res.headers_mut()
                    .insert(hyper::header::STRICT_TRANSPORT_SECURITY, v.clone());
            }
            Ok::<_, Infallible>(res)
        }
    });
    drive(stream, service, &shared.opts, state).await
}

/// Tells the sweeper the connection is gone, however its task ends.
struct Closing<'a>(&'a ConnState);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Serves `stream` with `service` until it closes or the sweeper ends it through `state`.
///
/// The end is awaited beside the connection as an [`Ended`], which costs one atomic load per
/// wake-up; a `select!` over a watcher's futures was polled again at every request (about 370
/// instructions a request under callgrind).
///
/// Generic over the stream so that the tests can drive it over an in-memory pipe.
pub(super) async fn drive<I, S>(stream: I, service: S, opts: &Options, state: Arc<ConnState>)
where
    I: AsyncRead + AsyncWrite + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _closing = Closing(&state);
    let builder = http(opts, None);
    let io = Watched {
        inner: stream,
        state: state.clone(),
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut ended = Ended {
        ending: &state.ending,
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

/// A stream whose first bytes were read already (by the first-request path), handed back
/// before the rest.
pub(super) struct Prefixed<T> {
    read: Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(super) fn new(read: Bytes, inner: T) -> Prefixed<T> {
        Prefixed { read, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        if self.read.is_empty() {
            return std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read[..n]);
        self.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

/// A stream that tells its connection's [`ConnState`] about reads and writes.
struct Watched<T> {
    inner: T,
    state: Arc<ConnState>,
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
        self.state.read(n);
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
            self.state.wrote(*n);
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
            self.state.wrote(*n);
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

    /// Nothing: hyper shuts the write side down only to close the connection, and the close
    /// that follows when the stream is dropped sends the same FIN. A separate `shutdown` was
    /// one more system call on every connection that ends after its answer.
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::sweep::{Ending, Limits, Sweeper};
    use super::*;
    use bytes::Bytes;
    use hyper::Response;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Wake, Waker};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::sync::watch;
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

    /// The sweeper passes once a second: a limit is enforced no earlier than it says and at
    /// most a second later.
    #[track_caller]
    fn within_a_second_after(took: Duration, limit: Duration) {
        assert!(
            took >= limit && took <= limit + secs(1),
            "{took:?} is not within a second after {limit:?}"
        );
    }

    /// A sweeper running from now, as a listener starts one.
    fn sweeper(opts: &Options) -> (Arc<Sweeper>, watch::Sender<bool>) {
        let (stop_tx, stop) = watch::channel(false);
        let sweeper = Arc::new(Sweeper::new(Limits::of(opts)));
        tokio::spawn(sweeper.clone().run(stop));
        (sweeper, stop_tx)
    }

    /// One connection over an in-memory pipe, served by [`drive`] with a service that answers
    /// `200 ok` after `think`. Returns the client's end, the server's stop switch and the
    /// serving task.
    fn serve(
        opts: Options,
        think: Duration,
    ) -> (DuplexStream, watch::Sender<bool>, JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(4096);
        let (sweeper, stop_tx) = sweeper(&opts);
        let state = sweeper.register();
        let task = tokio::spawn(async move {
            let service = service_fn(move |_req| async move {
                if !think.is_zero() {
                    sleep(think).await;
                }
                Ok::<_, Infallible>(Response::new(Body::new(Bytes::from_static(b"ok"))))
            });
            drive(server, service, &opts, state).await;
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
        within_a_second_after(closed - t0, secs(3));
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
        within_a_second_after(Instant::now() - t0, secs(3));
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
        sleep(ms(2_900)).await;
        client
            .write_all(b"Host: go.example.cn\r\n\r\n")
            .await
            .expect("write");
        let answer = response(&mut client).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert_eq!(Instant::now() - t0, ms(2_900));
        // The answer starts the keep-alive clock.
        let (more, closed) = until_closed(&mut client).await;
        assert_eq!(more, "");
        within_a_second_after(closed - t0, ms(12_900));
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
        // Idle is judged by the keep-alive timeout, not the header timeout.
        within_a_second_after(closed - t0, secs(10));
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
        within_a_second_after(closed - t0, ms(17_500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_sends_is_cut_at_the_header_timeout() {
        let (mut client, _stop, _task) = serve(opts(3, 10), Duration::ZERO);
        let t0 = Instant::now();
        let (got, closed) = until_closed(&mut client).await;
        assert_eq!(got, "");
        within_a_second_after(closed - t0, secs(3));
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

    #[tokio::test(start_paused = true)]
    async fn the_sweeper_forgets_a_closed_connection_at_its_next_pass() {
        let opts = opts(3, 10);
        let (sweeper, _stop) = sweeper(&opts);
        let (mut client, server) = tokio::io::duplex(4096);
        let state = sweeper.register();
        let task = tokio::spawn(async move {
            let service = service_fn(|_req| async {
                Ok::<_, Infallible>(Response::new(Body::new(Bytes::from_static(b"ok"))))
            });
            drive(server, service, &opts, state).await;
        });
        client.write_all(REQUEST).await.expect("write");
        response(&mut client).await;
        assert_eq!(sweeper.watched(), 1);
        drop(client);
        task.await.expect("served");
        sleep(ms(1_001)).await;
        assert_eq!(sweeper.watched(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_accepted_after_shutdown_began_is_told_at_once() {
        let (sweeper, stop) = sweeper(&opts(3, 10));
        stop.send(true).expect("stop");
        tokio::task::yield_now().await;
        let state = sweeper.register();
        assert_eq!(state.ending.get(), Some(End::Shutdown));
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

    /// Waits on `state`'s end in a task of its own; resolves to the end and when the task woke.
    fn waiting(state: &Arc<ConnState>) -> JoinHandle<(End, Instant)> {
        let state = state.clone();
        tokio::spawn(async move {
            let end = Ended {
                ending: &state.ending,
                registered: None,
            }
            .await;
            (end, Instant::now())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_waiting_task_wakes_when_the_sweeper_ends_the_connection() {
        let t0 = Instant::now();
        let (sweeper, _stop) = sweeper(&opts(3, 5));
        let state = sweeper.register();
        let woke = waiting(&state);
        state.read(1);
        sleep(ms(2_999)).await;
        assert!(!woke.is_finished(), "woken before the header timeout");
        let (end, at) = woke.await.expect("woken");
        assert_eq!(end, End::HeaderTimeout);
        within_a_second_after(at - t0, secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_waiting_task_wakes_exactly_when_shutdown_begins() {
        let t0 = Instant::now();
        let (sweeper, stop) = sweeper(&opts(3, 5));
        let state = sweeper.register();
        let woke = waiting(&state);
        sleep(ms(1_500)).await;
        assert!(!woke.is_finished());
        stop.send(true).expect("stop");
        let (end, at) = woke.await.expect("woken");
        assert_eq!((end, at - t0), (End::Shutdown, ms(1_500)));
    }
}
