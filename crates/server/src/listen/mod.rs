//! Listeners, runtimes and hyper connections.
mod accept;
mod answer;
mod conn;
mod first;
mod health;
mod sweep;

pub use answer::{Answer, FixedRedirect};
pub use health::Health;

use crate::admin::Admin;
use accept::{accept_loop, admin_loop, bind, check_free, ConnLimit, Share};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::ready;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How request handling is spread over threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeShape {
    /// One current-thread tokio runtime per thread, each with its own `SO_REUSEPORT` listener:
    /// no work stealing, no cross-thread wake-ups; the kernel spreads connections.
    PerCore,
    /// One multi-thread tokio runtime with a shared listener.
    MultiThread,
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
    /// PROXY protocol: connections from these sources start with a PROXY header (v1 or v2)
    /// naming the client; connections from anywhere else are refused. Default is off.
    pub proxy_protocol: Option<crate::TrustedProxies>,
    /// TLS on the redirect listener (see [`crate::Tls`]): every connection starts with a
    /// handshake, which must be over within `header_read_timeout`. Default is off (plain HTTP).
    pub tls: Option<Arc<crate::Tls>>,
    /// With `tls`: serve HTTPS on this address instead, beside plain HTTP on `listen` (a link
    /// printed as `http://` then costs no second hop). Default: none, `listen` speaks TLS.
    pub tls_listen: Option<SocketAddr>,
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
            proxy_protocol: None,
            tls: None,
            tls_listen: None,
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

/// What every redirect runtime shares.
struct Shared<A> {
    answer: Arc<A>,
    opts: Options,
    health: Arc<Health>,
    limit: ConnLimit,
    stop: watch::Receiver<bool>,
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

/// The HTTPS listener beside the plain one, if there is one.
async fn accept_tls_beside<A: Answer>(
    listener: Option<TcpListener>,
    shared: Arc<Shared<A>>,
    tls: Option<Arc<crate::Tls>>,
) {
    if let (Some(listener), Some(tls)) = (listener, tls) {
        accept_loop(listener, shared, Some(tls)).await;
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
        limit: ConnLimit::new(opts.max_connections),
        stop,
    };
    // TLS on the redirect listener itself, or on listeners of its own beside it.
    let (plain_tls, beside) = match (&opts.tls, opts.tls_listen) {
        (Some(tls), None) => (Some(tls.clone()), None),
        (Some(tls), Some(_)) => (None, Some(tls.clone())),
        (None, _) => (None, None),
    };
    let (main_rt, main_listener, main_tls_listener, workers) = match opts.shape {
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
            tracing::info!(%addr, threads, shape = "per-core", tls = plain_tls.is_some(), "redirect listener ready");
            shared.opts.listen = addr;
            let mut tls_bound: Vec<Option<TcpListener>> = Vec::with_capacity(threads);
            if let (Some(_), Some(mut tls_addr)) = (&beside, opts.tls_listen) {
                for (i, (rt, _)) in bound.iter().enumerate() {
                    let _guard = rt.enter();
                    if i == 0 {
                        check_free(tls_addr)?;
                    }
                    let listener = bind(tls_addr, Share::PerCore)?;
                    tls_addr = listener.local_addr()?;
                    tls_bound.push(Some(listener));
                }
                tracing::info!(addr = %tls_addr, threads, "https listener ready");
            }
            tls_bound.resize_with(threads, || None);
            let mut bound = bound
                .into_iter()
                .zip(tls_bound)
                .map(|((rt, l), t)| (rt, l, t));
            let Some((rt, listener, tls_listener)) = bound.next() else {
                return Ok(());
            };
            (rt, listener, tls_listener, bound.collect::<Vec<_>>())
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
            tracing::info!(%addr, threads, shape = "multi-thread", tls = plain_tls.is_some(), "redirect listener ready");
            shared.opts.listen = addr;
            let tls_listener = match (&beside, opts.tls_listen) {
                (Some(_), Some(tls_addr)) => {
                    let _guard = rt.enter();
                    let listener = bind(tls_addr, Share::Alone)?;
                    tracing::info!(addr = %listener.local_addr()?, threads, "https listener ready");
                    Some(listener)
                }
                _ => None,
            };
            (rt, listener, tls_listener, Vec::new())
        }
    };
    let shared = Arc::new(shared);
    let deadline_after_drain = opts.shutdown_timeout;
    let mut handles = Vec::new();
    for (i, (rt, listener, tls_listener)) in workers.into_iter().enumerate() {
        let shared = shared.clone();
        let (plain_tls, beside) = (plain_tls.clone(), beside.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("duanlian-w{}", i + 1))
                .spawn(move || {
                    rt.block_on(async {
                        let https =
                            tokio::spawn(accept_tls_beside(tls_listener, shared.clone(), beside));
                        accept_loop(listener, shared.clone(), plain_tls).await;
                        let _ = https.await;
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
        let accepting = tokio::spawn(accept_loop(main_listener, shared.clone(), plain_tls));
        let https = tokio::spawn(accept_tls_beside(main_tls_listener, shared.clone(), beside));
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
        let _ = https.await;
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
