//! Listeners, runtimes and hyper connections.
use crate::admin::Admin;
use crate::redirect::{respond, Body, Redirector};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::ready;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

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
    /// The response to one request.
    fn answer<B>(&self, req: &Request<B>) -> Response<Body>;
}

impl Answer for Redirector {
    #[inline]
    fn answer<B>(&self, req: &Request<B>) -> Response<Body> {
        respond(self, req)
    }
}

/// Answers every request with the same `302`: the cost of the server around the lookup.
#[derive(Debug, Clone)]
pub struct FixedRedirect(pub hyper::header::HeaderValue);

impl Answer for FixedRedirect {
    #[inline]
    fn answer<B>(&self, _req: &Request<B>) -> Response<Body> {
        let mut r = Response::new(Body::default());
        *r.status_mut() = hyper::StatusCode::FOUND;
        r.headers_mut()
            .insert(hyper::header::LOCATION, self.0.clone());
        r
    }
}

/// Redirect listener settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; port 0 picks a free one (logged at start). Default is 127.0.0.1:8080.
    pub listen: SocketAddr,
    /// Worker threads. Default is the number of CPUs.
    pub threads: usize,
    /// How long a client may take to send a complete request head, including the wait for the
    /// next request on an idle keep-alive connection. Default is 30 s.
    pub header_read_timeout: Duration,
    /// Runtime layout. Default is [`RuntimeShape::PerCore`].
    pub shape: RuntimeShape,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            header_read_timeout: Duration::from_secs(30),
            shape: RuntimeShape::PerCore,
        }
    }
}

fn http(opts: &Options) -> http1::Builder {
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true);
    b
}

/// Serves one connection (any byte stream) until it closes. Used by [`run`], and by benches
/// that feed request bytes in-process.
pub async fn serve_connection<I, A>(io: I, redirector: Arc<A>, opts: &Options)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Answer,
{
    let service = service_fn(move |req| ready(Ok::<_, Infallible>(redirector.answer(&req))));
    if let Err(e) = http(opts).serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
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

async fn accept_loop<A: Answer>(listener: TcpListener, redirector: Arc<A>, opts: Arc<Options>) {
    loop {
        let stream = accept(&listener).await;
        let (redirector, opts) = (redirector.clone(), opts.clone());
        tokio::spawn(async move { serve_connection(stream, redirector, &opts).await });
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
            if let Err(e) = http(&opts)
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
        bind(listen)?
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

/// Binds the listener(s) and serves redirects until SIGINT or SIGTERM. Bind errors are returned
/// before any request is served.
pub fn run<A: Answer>(redirector: Arc<A>, opts: &Options) -> io::Result<()> {
    let threads = opts.threads.max(1);
    match opts.shape {
        RuntimeShape::PerCore => {
            // Bind every listener on this thread first, so a bad address fails the start and
            // port 0 resolves once, to the port all the others then share.
            let mut addr = opts.listen;
            let mut workers = Vec::with_capacity(threads);
            for _ in 0..threads {
                let rt = current_thread()?;
                let listener = {
                    let _guard = rt.enter();
                    bind(addr)?
                };
                addr = listener.local_addr()?;
                workers.push((rt, listener));
            }
            tracing::info!(%addr, threads, shape = "per-core", "redirect listener ready");
            let opts = Arc::new(Options {
                listen: addr,
                ..opts.clone()
            });
            let mut workers = workers.into_iter();
            let Some((main_rt, main_listener)) = workers.next() else {
                return Ok(());
            };
            for (i, (rt, listener)) in workers.enumerate() {
                let (redirector, opts) = (redirector.clone(), opts.clone());
                std::thread::Builder::new()
                    .name(format!("duanlian-w{}", i + 1))
                    .spawn(move || rt.block_on(accept_loop(listener, redirector, opts)))?;
            }
            main_rt.block_on(async move {
                tokio::select! {
                    _ = accept_loop(main_listener, redirector, opts) => {}
                    _ = shutdown_signal() => {}
                }
            });
        }
        RuntimeShape::MultiThread => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?;
            let listener = {
                let _guard = rt.enter();
                bind(opts.listen)?
            };
            let addr = listener.local_addr()?;
            tracing::info!(%addr, threads, shape = "multi-thread", "redirect listener ready");
            let opts = Arc::new(Options {
                listen: addr,
                ..opts.clone()
            });
            rt.block_on(async move {
                let accept = tokio::spawn(accept_loop(listener, redirector, opts));
                shutdown_signal().await;
                accept.abort();
            });
        }
    }
    tracing::info!("shutting down");
    Ok(())
}
