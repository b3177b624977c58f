//! Binding listeners and accepting connections.
use super::conn::serve_until_stopped;
use super::{http, stopped, Answer, Options, Shared};
use crate::admin::Admin;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

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

pub(super) async fn accept_loop<A: Answer>(listener: TcpListener, shared: Arc<Shared<A>>) {
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

pub(super) async fn admin_loop(listener: TcpListener, admin: Arc<Admin>, opts: Arc<Options>) {
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
