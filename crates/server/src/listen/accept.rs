//! Binding listeners and accepting connections.
use super::conn::{serve_until_stopped, serve_with_hsts, Prefixed};
use super::first::{self, First};
use super::sweep::{ConnState, Limits, Sweeper};
use super::Health;
use super::{http, stopped, Answer, Options, Shared};
use crate::admin::Admin;
use crate::proxy_protocol::{self, Parsed, ProxyHeaderError};
use bytes::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;

/// Whether a listener may share its port with this process's other per-core listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Share {
    /// The only listener on its address (the admin API, a multi-thread runtime).
    Alone,
    /// One of this process's per-core listeners, joined with `SO_REUSEPORT`.
    PerCore,
}

pub(super) fn bind(addr: SocketAddr, share: Share) -> io::Result<TcpListener> {
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
pub(super) fn check_free(addr: SocketAddr) -> io::Result<()> {
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

/// The next connection and its peer. Errors never end the loop: running out of descriptors or
/// memory pauses it briefly (so it neither spins nor dies), anything else concerns one
/// connection only. `TCP_NODELAY` comes from the listening socket (Linux copies it to every
/// accepted one), so no `setsockopt` here.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) if is_resource_exhaustion(&e) => {
                tracing::warn!(error = %e, "accept failed; pausing 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => {}
        }
    }
}

/// Asks the kernel to hand over a connection only once its first bytes have arrived
/// (`TCP_DEFER_ACCEPT`), for up to `limit`: the first-request path then finds the request there
/// when it reads, instead of going to hyper and the reactor to wait for it; and a client that
/// connects and says nothing never takes a descriptor. Best effort: without it the node works
/// as before, only a little slower on fresh connections.
fn defer_accept(listener: &std::net::TcpListener, limit: Duration) {
    use std::os::fd::AsRawFd;
    let secs = libc::c_int::try_from(limit.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
    // SAFETY: `setsockopt` reads `size_of::<c_int>()` bytes from a live `c_int` on this stack
    // frame, for a descriptor the borrowed listener keeps open during the call.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            std::ptr::from_ref(&secs).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "TCP_DEFER_ACCEPT not set");
    }
}

/// The next connection on a redirect listener, not yet registered with the reactor (the
/// first-request path may finish it without). Errors as in [`accept`].
async fn accept_raw(
    listener: &AsyncFd<mio::net::TcpListener>,
) -> (mio::net::TcpStream, SocketAddr) {
    loop {
        let mut ready = match listener.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::warn!(error = %e, "listener failed; pausing 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match ready.try_io(|l| l.get_ref().accept()) {
            Ok(Ok(accepted)) => return accepted,
            Ok(Err(e)) if is_resource_exhaustion(&e) => {
                tracing::warn!(error = %e, "accept failed; pausing 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // One connection's trouble, or no connection waiting (readiness cleared).
            Ok(Err(_)) | Err(_) => {}
        }
    }
}

/// Accepts on a redirect listener until shutdown; `tls`: every connection starts with a
/// handshake.
pub(super) async fn accept_loop<A: Answer>(
    listener: TcpListener,
    shared: Arc<Shared<A>>,
    tls: Option<Arc<crate::Tls>>,
) {
    let registered = listener.into_std().and_then(|l| {
        defer_accept(&l, shared.opts.header_read_timeout);
        let listener = mio::net::TcpListener::from_std(l);
        // SAFETY: `register` asks that the descriptor stay open and the same for the life of
        // the `AsyncFd`. The mio listener owns it, closes it only when dropped, and is owned
        // by the `AsyncFd` from here on, which drops it last.
        #[allow(unsafe_code)]
        let fd =
            unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) };
        fd.map_err(io::Error::from)
    });
    let listener = match registered {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "redirect listener could not be watched");
            return;
        }
    };
    let mut stop = shared.stop.clone();
    // One future for the whole loop: made anew at every connection, it read the watch
    // channel's value under its lock each time.
    let mut stopping = std::pin::pin!(stopped(&mut stop));
    // This listener's connections are watched by one sweeper task, not one watcher each.
    let sweeper = Arc::new(Sweeper::new(Limits::of(&shared.opts)));
    tokio::spawn(sweeper.clone().run(shared.stop.clone()));
    // A cluster node may answer a miss only after I/O: its requests all go to hyper; so do
    // requests that arrive inside TLS.
    let answer_here = !shared.answer.may_defer() && tls.is_none();
    let acceptor = tls.as_ref().map(|t| t.acceptor());
    let proxy = shared.opts.proxy_protocol.as_ref();
    loop {
        // At the connection limit, stop accepting: new clients wait in the backlog.
        if !shared.limit.try_reserve() {
            tokio::select! {
                () = shared.limit.reserve() => {}
                _ = &mut stopping => return,
            }
        }
        let (stream, peer) = tokio::select! {
            s = accept_raw(&listener) => s,
            _ = &mut stopping => {
                shared.limit.release();
                return;
            }
        };
        let proxied = match proxy {
            // Only the load balancers named may send a PROXY header: anyone else could claim
            // any address with one.
            Some(trusted) if !trusted.contains(peer.ip()) => {
                tracing::debug!(%peer, "refused: not a trusted source of PROXY headers");
                shared.limit.release();
                continue;
            }
            Some(_) => true,
            None => false,
        };
        let first = if answer_here || proxied {
            let how = first::Reading {
                proxy: proxied,
                answer: answer_here,
                max_head: shared.opts.max_header_bytes,
            };
            first::serve(&stream, peer, &*shared.answer, how)
        } else {
            First::Hyper {
                read: Bytes::new(),
                peer,
                proxy_pending: false,
            }
        };
        let (read, peer, proxy_pending, answered) = match first {
            First::Closed => {
                shared.limit.release();
                continue;
            }
            First::KeepAlive { peer } => (Bytes::new(), peer, false, true),
            First::Hyper {
                read,
                peer,
                proxy_pending,
            } => (read, peer, proxy_pending, false),
        };
        let stream = match TcpStream::from_std(std::net::TcpStream::from(stream)) {
            Ok(stream) => stream,
            Err(_) => {
                shared.limit.release();
                continue;
            }
        };
        let state = sweeper.register();
        if answered {
            // The answer written starts the keep-alive clock.
            state.wrote(1);
        }
        let shared = shared.clone();
        let tls = tls.clone().zip(acceptor.clone());
        // The connection's future (hyper's state, a kilobyte and more) goes to the heap in one
        // move; spawned as it is, tokio moved it through several frames, a `memcpy` each.
        tokio::spawn(async move {
            let _open = Open::new(&shared.limit, &shared.health);
            let mut stream = stream;
            let (read, peer) = if proxy_pending {
                let limit = shared.opts.header_read_timeout;
                match tokio::time::timeout(limit, rest_of_proxy_header(&mut stream, read)).await {
                    Ok(Ok((source, read))) => (read, source.unwrap_or(peer)),
                    Ok(Err(e)) => {
                        return tracing::debug!(%peer, error = %e, "refused: bad PROXY header")
                    }
                    Err(_) => return tracing::debug!(%peer, "PROXY header timed out"),
                }
            } else {
                (read, peer)
            };
            let stream = Prefixed::new(read, stream);
            match tls {
                None => Box::pin(serve_until_stopped(stream, peer, state, &shared)).await,
                Some((tls, acceptor)) => {
                    Box::pin(serve_tls(stream, peer, state, &shared, tls, acceptor)).await
                }
            }
        });
    }
}

/// Reads on from `got`, the start of a PROXY header, until the header is whole: its client
/// address, and what came after it.
async fn rest_of_proxy_header(
    stream: &mut TcpStream,
    got: Bytes,
) -> Result<(Option<SocketAddr>, Bytes), ProxyHeaderError> {
    use tokio::io::AsyncReadExt as _;
    let mut got = bytes::BytesMut::from(&got[..]);
    loop {
        match proxy_protocol::parse(&got)? {
            Parsed::Complete { len, source } => return Ok((source, got.split_off(len).freeze())),
            Parsed::Incomplete => {
                // `parse` refuses a header past its longest, so this ends.
                got.reserve(512);
                if stream
                    .read_buf(&mut got)
                    .await
                    .map_err(ProxyHeaderError::Io)?
                    == 0
                {
                    return Err(ProxyHeaderError::Closed);
                }
            }
        }
    }
}

pub(super) async fn admin_loop(listener: TcpListener, admin: Arc<Admin>, opts: Arc<Options>) {
    loop {
        let (stream, _) = accept(&listener).await;
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

/// The connection limit. A slot is taken before `accept`, so at the limit new clients wait in
/// the listen backlog; two atomic operations a connection, where a semaphore's owned permit
/// also cloned an `Arc` and took its lock at the limit.
#[derive(Debug)]
pub(super) struct ConnLimit {
    max: usize,
    used: AtomicUsize,
    freed: Notify,
}

impl ConnLimit {
    pub(super) fn new(max: usize) -> ConnLimit {
        ConnLimit {
            max: max.max(1),
            used: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// Takes a slot if one is free.
    fn try_reserve(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Takes a slot, waiting while all are taken.
    async fn reserve(&self) {
        loop {
            let freed = self.freed.notified();
            let mut freed = std::pin::pin!(freed);
            // Listening before looking: a slot freed in between still wakes this.
            freed.as_mut().enable();
            if self.try_reserve() {
                return;
            }
            freed.await;
        }
    }

    fn release(&self) {
        if self.used.fetch_sub(1, Ordering::AcqRel) == self.max {
            self.freed.notify_waiters();
        }
    }
}

/// An open connection: counted in [`Health`] while it lives, its slot given back when it ends.
struct Open<'a> {
    limit: &'a ConnLimit,
    health: &'a Health,
}

impl<'a> Open<'a> {
    fn new(limit: &'a ConnLimit, health: &'a Health) -> Open<'a> {
        health.connections.fetch_add(1, Ordering::AcqRel);
        Open { limit, health }
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.health.connections.fetch_sub(1, Ordering::AcqRel);
        self.limit.release();
    }
}

/// A connection that starts with a TLS handshake: out of the plain connections' task, whose
/// code (and hyper's, inlined into it) stays as it was without TLS.
#[inline(never)]
async fn serve_tls<A: Answer>(
    stream: Prefixed<TcpStream>,
    peer: SocketAddr,
    state: Arc<ConnState>,
    shared: &Shared<A>,
    tls: Arc<crate::Tls>,
    acceptor: tokio_rustls::TlsAcceptor,
) {
    // A handshake that never ends would hold the connection's slot: it gets what a request
    // head gets.
    let limit = shared.opts.header_read_timeout;
    let stream = match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            state.close();
            tls.count_failure(false);
            return tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            state.close();
            tls.count_failure(true);
            return tracing::debug!(%peer, "TLS handshake timed out");
        }
    };
    tls.count_handshake(stream.get_ref().1);
    if tls.has_hsts() {
        Box::pin(serve_with_hsts(stream, peer, state, shared, tls)).await;
    } else {
        Box::pin(serve_until_stopped(stream, peer, state, shared)).await;
    }
}
