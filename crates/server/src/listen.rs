//! Listeners, runtimes and hyper connections.
use crate::admin::Admin;
use crate::redirect::{respond_from, Body, DirectRead, Redirector};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::{ready, Future};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};

/// How request handling is spread over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeShape {
    /// One current-thread tokio runtime per thread, each with its own `SO_REUSEPORT` listener:
    /// no work stealing, no cross-thread wake-ups; the kernel spreads connections.
    PerCore,
    /// One multi-thread tokio runtime with a shared listener.
    MultiThread,
}

/// What the redirect listener answers with. [`Redirector`] is the real thing; [`FixedRedirect`]
/// is the benchmark floor: the same server, no lookup. Generic (not `dyn`) so the real path pays
/// nothing for the seam.
pub trait Answer: Send + Sync + 'static {
    /// The response to one request from `peer` (unknown for in-process connections).
    fn answer<B>(&self, req: &Request<B>, peer: Option<SocketAddr>) -> Response<Body>;

    /// Whether any answer may be marked for [`Answer::answer_later`]; connections of answers
    /// that never are get the plain service, without the check.
    fn may_defer(&self) -> bool {
        false
    }

    /// A second, asynchronous look at an answer marked as needing I/O (a cluster node's direct
    /// read of its bucket on a miss); nothing else ever comes here.
    fn answer_later<'a, B: Send + Sync + 'a>(
        &'a self,
        _req: &'a Request<B>,
        _peer: Option<SocketAddr>,
        first: Response<Body>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send + 'a {
        ready(first)
    }
}

/// A response now (every redirect), or after I/O (a miss marked for a direct read).
enum Reply {
    Now(Option<Response<Body>>),
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>),
}

impl std::future::Future for Reply {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut *self {
            Reply::Now(res) => std::task::Poll::Ready(Ok(res.take().unwrap_or_default())),
            Reply::Later(fut) => fut.as_mut().poll(cx).map(Ok),
        }
    }
}

impl Answer for Redirector {
    #[inline]
    fn answer<B>(&self, req: &Request<B>, peer: Option<SocketAddr>) -> Response<Body> {
        // One place builds the response, so it is built where it is returned: built in two
        // match arms it was moved twice more (two `memcpy` calls a request).
        let started = self
            .metrics()
            .and_then(|metrics| metrics.sample().then(Instant::now));
        let res = respond_from(self, req, peer);
        if let Some(metrics) = self.metrics() {
            // A deferred answer is counted when it is final.
            if res.extensions().get::<DirectRead>().is_none() {
                metrics.record(res.status().as_u16());
            }
            if let Some(t) = started {
                metrics.observe_latency(t.elapsed());
            }
        }
        if let (Some(proxies), Some(peer)) = (self.access_log(), peer) {
            tracing::info!(
                target: "access",
                client = %proxies.client(peer, req.headers()),
                proto = proxies.proto(peer, req.headers()),
                peer = %peer,
                method = %req.method(),
                host = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(""),
                path = req.uri().path(),
                status = res.status().as_u16(),
            );
        }
        res
    }

    fn may_defer(&self) -> bool {
        self.may_defer()
    }

    async fn answer_later<'a, B: Send + Sync + 'a>(
        &'a self,
        req: &'a Request<B>,
        peer: Option<SocketAddr>,
        first: Response<Body>,
    ) -> Response<Body> {
        let res = self.second_chance(req, peer, first).await;
        if let Some(metrics) = self.metrics() {
            metrics.record(res.status().as_u16());
        }
        res
    }
}

/// Answers every request with the same `302`: the cost of the server around the lookup.
#[derive(Debug, Clone)]
pub struct FixedRedirect(pub hyper::header::HeaderValue);

impl Answer for FixedRedirect {
    #[inline]
    fn answer<B>(&self, _req: &Request<B>, _peer: Option<SocketAddr>) -> Response<Body> {
        let mut r = Response::new(Body::default());
        *r.status_mut() = hyper::StatusCode::FOUND;
        r.headers_mut()
            .insert(hyper::header::LOCATION, self.0.clone());
        r
    }
}

/// Liveness and readiness, shared by the listeners, the health endpoints and shutdown.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    draining: AtomicBool,
    connections: AtomicUsize,
    gate: std::sync::OnceLock<Gate>,
}

/// A further condition of readiness (a cluster node: caught up with its bucket).
struct Gate(Box<dyn Fn() -> bool + Send + Sync>);

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gate")
    }
}

impl Health {
    /// Makes readiness also depend on `condition`, asked at every `/readyz` (set once).
    pub fn gate_on(&self, condition: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.gate.set(Gate(Box::new(condition)));
    }

    /// Marks the node ready (listeners up, data loaded) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether a load balancer should send traffic here: ready, not draining, and the gate (if
    /// any) open.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && !self.draining.load(Ordering::Acquire)
            && self.gate.get().is_none_or(|g| (g.0)())
    }

    /// Starts a shutdown: readiness turns false at once.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Open connections on the redirect listener.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }
}

/// Redirect listener settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; port 0 picks a free one (logged at start). Default is 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// Worker threads. Default is the number of CPUs.
    pub threads: usize,
    /// How long a client may take to send a complete request head once it has started one.
    /// A client that sends nothing, or a byte now and then, is disconnected. Default is 30 s.
    pub header_read_timeout: Duration,
    /// How long an idle keep-alive connection stays open. Longer than the idle timeouts of
    /// common load balancers (60 s), so they never reuse a connection this end is closing.
    /// Default is 75 s.
    pub keep_alive_timeout: Duration,
    /// Largest request head (request line and headers); larger ones get 431. Default is 16 KiB.
    pub max_header_bytes: usize,
    /// Connections served at once; further ones wait in the listen backlog. Default is 65,536.
    pub max_connections: usize,
    /// After SIGTERM or SIGINT: how long to keep accepting while `/readyz` says 503, so load
    /// balancers stop sending first. Default is 5 s.
    pub drain_delay: Duration,
    /// After the drain delay: how long in-flight requests get to finish before the process
    /// exits anyway. Default is 30 s.
    pub shutdown_timeout: Duration,
    /// Runtime layout. Default is [`RuntimeShape::PerCore`].
    pub shape: RuntimeShape,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            header_read_timeout: Duration::from_secs(30),
            keep_alive_timeout: Duration::from_secs(75),
            max_header_bytes: 16 << 10,
            max_connections: 65_536,
            drain_delay: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(30),
            shape: RuntimeShape::PerCore,
        }
    }
}

/// hyper's connection settings. `header_timeout` is hyper's own timer, which also runs while a
/// keep-alive connection waits; redirect connections pass `None` and use their watchdog.
fn http(opts: &Options, header_timeout: Option<Duration>) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_header_size(opts.max_header_bytes)
        .keep_alive(true);
    b
}

/// Serves one connection (any byte stream) until it closes. Used by benches that feed request
/// bytes in-process; [`run`] adds graceful shutdown around the same thing.
pub async fn serve_connection<I, A>(io: I, redirector: Arc<A>, opts: &Options)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Answer,
{
    let service = service_fn(move |req| ready(Ok::<_, Infallible>(redirector.answer(&req, None))));
    let http = http(opts, Some(opts.header_read_timeout));
    if let Err(e) = http.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Whether a listener may share its port with this process's other per-core listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Share {
    /// The only listener on its address (the admin API, a multi-thread runtime).
    Alone,
    /// One of this process's per-core listeners, joined with `SO_REUSEPORT`.
    PerCore,
}

fn bind(addr: SocketAddr, share: Share) -> io::Result<TcpListener> {
    bind_socket(addr, share).map_err(|e| in_use(addr, e))
}

fn bind_socket(addr: SocketAddr, share: Share) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if share == Share::PerCore {
        socket.set_reuseport(true)?;
    }
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Fails if any socket listens on `addr` already. `SO_REUSEPORT` lets every socket that sets it
/// bind the same address, so a second server started by mistake would silently get half the
/// traffic; a socket without it cannot bind over any listener, so binding one and letting it go
/// tells whether the address is free before the per-core listeners take it. Port 0 is always
/// free: the first listener picks the port the others then share.
fn check_free(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    bind(addr, Share::Alone).map(drop)
}

fn in_use(addr: SocketAddr, e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::AddrInUse {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{addr} is already in use: another process listens there"),
        )
    } else {
        e
    }
}

/// Errors after which `accept` should pause instead of spinning: out of descriptors or memory.
fn is_resource_exhaustion(e: &io::Error) -> bool {
    const ENOMEM: i32 = 12;
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    const ENOBUFS: i32 = 105;
    matches!(e.raw_os_error(), Some(ENOMEM | ENFILE | EMFILE | ENOBUFS))
}

/// The next connection. Errors never end the loop: running out of descriptors or memory pauses
/// it briefly (so it neither spins nor dies), anything else concerns one connection only.
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) if is_resource_exhaustion(&e) => {
                tracing::warn!(error = %e, "accept failed; pausing 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => {}
        }
    }
}

/// What every redirect runtime shares.
struct Shared<A> {
    answer: Arc<A>,
    opts: Options,
    health: Arc<Health>,
    permits: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

async fn accept_loop<A: Answer>(listener: TcpListener, shared: Arc<Shared<A>>) {
    let mut stop = shared.stop.clone();
    loop {
        // At the connection limit, stop accepting: new clients wait in the backlog.
        let permit = tokio::select! {
            p = shared.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stopped(&mut stop) => return,
        };
        let stream = tokio::select! {
            s = accept(&listener) => s,
            _ = stopped(&mut stop) => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            shared.health.connections.fetch_add(1, Ordering::AcqRel);
            serve_until_stopped(stream, &shared).await;
            shared.health.connections.fetch_sub(1, Ordering::AcqRel);
            drop(permit);
        });
    }
}

/// Serves a connection; on shutdown, lets the request in flight finish and closes it.
///
/// hyper's own header timer also runs while a keep-alive connection waits for its next
/// request, so one setting could not be both short (against slow clients) and longer than a
/// load balancer's idle timeout. Here hyper's timer is off and a watchdog keeps the two apart.
async fn serve_until_stopped<A: Answer>(stream: TcpStream, shared: &Shared<A>) {
    let answer = shared.answer.clone();
    let peer = stream.peer_addr().ok();
    if !answer.may_defer() {
        // The plain service: no answer here ever waits for I/O.
        let service = service_fn(move |req| ready(Ok::<_, Infallible>(answer.answer(&req, peer))));
        return drive(stream, service, shared).await;
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
    drive(stream, service, shared).await
}

/// Serves `stream` with `service` until it closes, the server stops, or the watchdog ends it.
///
/// The watchdog and the shutdown signal wait in a watcher task of their own, which tells the
/// connection through an [`Ending`]. Waited for here beside the connection, as `select!`
/// branches, they were polled again at every wake-up of the connection, that is for every
/// request: about 370 instructions a request under callgrind, 6% of the whole server's.
async fn drive<A, S>(stream: TcpStream, service: S, shared: &Shared<A>)
where
    A: Answer,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = http(&shared.opts, None);
    let clock = Arc::new(ConnClock::default());
    let ending = Arc::new(Ending::default());
    let _watcher = AbortOnDrop(tokio::spawn(watch_connection(
        clock.clone(),
        ending.clone(),
        shared.stop.clone(),
        Limits::of(&shared.opts),
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

/// Resolves once shutdown has begun (the guard `wait_for` returns is dropped here, so callers
/// can hold this across awaits in `Send` tasks).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Waits until every connection is closed, or the shutdown deadline.
async fn connections_closed(health: &Health, deadline: Instant) {
    while health.connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn admin_loop(listener: TcpListener, admin: Arc<Admin>, opts: Arc<Options>) {
    loop {
        let stream = accept(&listener).await;
        let (admin, opts) = (admin.clone(), opts.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(crate::admin::finish(admin.handle(req).await)) }
            });
            if let Err(e) = http(&opts, Some(opts.header_read_timeout))
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

/// Starts the admin API on its own runtime and thread; returns the bound address.
pub fn spawn_admin(
    admin: Arc<Admin>,
    listen: SocketAddr,
    opts: &Options,
) -> io::Result<SocketAddr> {
    // Two workers: JSON handling for concurrent writers, and compaction's blocking work, must
    // not queue behind each other; redirects never run here.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("duanlian-admin")
        .enable_all()
        .build()?;
    let listener = {
        let _guard = rt.enter();
        bind(listen, Share::Alone)?
    };
    let addr = listener.local_addr()?;
    let opts = Arc::new(opts.clone());
    std::thread::Builder::new()
        .name("duanlian-admin".into())
        .spawn(move || rt.block_on(admin_loop(listener, admin, opts)))?;
    tracing::info!(%addr, "admin listener ready");
    Ok(addr)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn current_thread() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Binds the listener(s), marks `health` ready and serves until SIGINT or SIGTERM, then shuts
/// down gracefully: readiness turns false at once, connections are still accepted for the drain
/// delay, then accepting stops, requests in flight finish, idle keep-alive connections close,
/// and this returns (at the latest after the shutdown timeout). Bind errors are returned before
/// any request is served.
pub fn run<A: Answer>(answer: Arc<A>, opts: &Options, health: Arc<Health>) -> io::Result<()> {
    let threads = opts.threads.max(1);
    let (stop_tx, stop) = watch::channel(false);
    let mut shared = Shared {
        answer,
        opts: opts.clone(),
        health: health.clone(),
        permits: Arc::new(Semaphore::new(opts.max_connections.max(1))),
        stop,
    };
    let (main_rt, main_listener, workers) = match opts.shape {
        RuntimeShape::PerCore => {
            // Bind every listener on this thread first, so a bad address fails the start and
            // port 0 resolves once, to the port all the others then share.
            let mut addr = opts.listen;
            let mut bound = Vec::with_capacity(threads);
            for i in 0..threads {
                let rt = current_thread()?;
                let listener = {
                    let _guard = rt.enter();
                    if i == 0 {
                        check_free(addr)?;
                    }
                    bind(addr, Share::PerCore)?
                };
                addr = listener.local_addr()?;
                bound.push((rt, listener));
            }
            tracing::info!(%addr, threads, shape = "per-core", "redirect listener ready");
            shared.opts.listen = addr;
            let mut bound = bound.into_iter();
            let Some((rt, listener)) = bound.next() else {
                return Ok(());
            };
            (rt, listener, bound.collect::<Vec<_>>())
        }
        RuntimeShape::MultiThread => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?;
            let listener = {
                let _guard = rt.enter();
                bind(opts.listen, Share::Alone)?
            };
            let addr = listener.local_addr()?;
            tracing::info!(%addr, threads, shape = "multi-thread", "redirect listener ready");
            shared.opts.listen = addr;
            (rt, listener, Vec::new())
        }
    };
    let shared = Arc::new(shared);
    let deadline_after_drain = opts.shutdown_timeout;
    let mut handles = Vec::new();
    for (i, (rt, listener)) in workers.into_iter().enumerate() {
        let shared = shared.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("duanlian-w{}", i + 1))
                .spawn(move || {
                    rt.block_on(async {
                        accept_loop(listener, shared.clone()).await;
                        // This runtime's connections live only while it runs: wait for them.
                        connections_closed(&shared.health, Instant::now() + deadline_after_drain)
                            .await;
                    })
                })?,
        );
    }
    health.set_ready(true);
    let drain = opts.drain_delay;
    main_rt.block_on(async {
        let accepting = tokio::spawn(accept_loop(main_listener, shared.clone()));
        shutdown_signal().await;
        health.start_draining();
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            connections = health.connections(),
            "shutting down: /readyz is 503; still accepting during the drain delay"
        );
        tokio::time::sleep(drain).await;
        let _ = stop_tx.send(true);
        let _ = accepting.await;
        let deadline = Instant::now() + deadline_after_drain;
        connections_closed(&health, deadline).await;
        let left = health.connections();
        if left > 0 {
            tracing::warn!(
                connections = left,
                "shutdown timeout: closing connections still open"
            );
        }
    });
    for h in handles {
        let _ = h.join();
    }
    tracing::info!("redirect listener stopped");
    Ok(())
}
