//! Liveness and readiness: what `/healthz`, `/readyz`, the listeners and shutdown share.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Liveness and readiness, shared by the listeners, the health endpoints and shutdown.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    draining: AtomicBool,
    pub(super) connections: AtomicUsize,
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
