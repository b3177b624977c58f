//! The seam between the server and a node's writer.
use crate::{Op, Outcome, WriteError};
use duanlian_link::Link;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

/// A boxed future of a write: the trait is used as `dyn Writes`, and a write costs a journal
/// sync or a network round trip, beside which the box is nothing.
pub type WriteFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, WriteError>> + Send + 'a>>;

/// What a write did, and where the backend numbers its changes (a cluster bucket's revision),
/// for the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The outcome.
    pub outcome: Outcome,
    /// The revision the change was written at, where the backend has one to show.
    pub revision: Option<u64>,
}

/// What a compaction (or a bulk load folded in like one) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// The change sequence number the new snapshot includes.
    pub sequence: u64,
    /// Links in the new snapshot.
    pub links: usize,
    /// Journal segments removed.
    pub segments_removed: usize,
    /// How long it took.
    pub elapsed: Duration,
}

/// A gauge the backend reports in the metrics: name, help, and the value now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gauge {
    /// Metric name without the `duanlian_` prefix.
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// The value now.
    pub value: i64,
}

/// The kinds of operation a writer may refuse outright, asked before a request's body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Creates, updates, deletes.
    Write,
    /// Compaction.
    Compact,
    /// Loading a bulk snapshot file.
    LoadBulk,
}

/// A node's writer: the data directory's store, a cluster's bucket, or [`ReadOnly`]. Everything
/// the server needs of it, and nothing of how it is done.
pub trait Writes: Send + Sync + std::fmt::Debug {
    /// Why this writer never does `op`, if it does not: the admin API answers with it before
    /// reading the request's body. `None` (the default) means it does.
    fn refuses(&self, op: Operation) -> Option<WriteError> {
        let _ = op;
        None
    }

    /// Carries out a write; answers once it is durable and visible in this node's index.
    fn submit(&self, op: Op) -> WriteFuture<'_, Written>;

    /// Folds what was written into a new snapshot.
    fn compact(&self) -> WriteFuture<'_, Compacted>;

    /// Makes the bulk snapshot at `path` this node's bulk links, writes through the API on top.
    fn load_bulk<'a>(&'a self, path: &'a Path) -> WriteFuture<'a, Compacted>;

    /// Bytes in the journal, where there is one.
    fn journal_bytes(&self) -> Option<u64> {
        None
    }

    /// The backend's own gauges, read at every scrape; the names must not change between calls.
    fn gauges(&self) -> Vec<Gauge> {
        Vec::new()
    }
}

/// The writer of a node that takes no writes: every write is [`WriteError::ReadOnly`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOnly;

impl Writes for ReadOnly {
    fn refuses(&self, op: Operation) -> Option<WriteError> {
        // A read-only node loads bulk files into its index itself (the server's reloader).
        (op != Operation::LoadBulk).then_some(WriteError::ReadOnly)
    }

    fn submit(&self, _op: Op) -> WriteFuture<'_, Written> {
        Box::pin(async { Err(WriteError::ReadOnly) })
    }

    fn compact(&self) -> WriteFuture<'_, Compacted> {
        Box::pin(async { Err(WriteError::ReadOnly) })
    }

    fn load_bulk<'a>(&'a self, _path: &'a Path) -> WriteFuture<'a, Compacted> {
        Box::pin(async { Err(WriteError::ReadOnly) })
    }
}

/// What the redirect path asks of a node that may be behind its source of links (a cluster
/// node catching up with its bucket): whether it is, and one direct read on a miss.
pub trait CatchUp: Send + Sync + std::fmt::Debug {
    /// Whether this node may be missing links its source has: a miss is then worth a direct
    /// read. Read on every miss, so it must be a load or two.
    fn lagging(&self) -> bool;

    /// The link under `(domain, code)` read from the source itself, if it is there and can be
    /// read quickly.
    fn direct_get<'a>(
        &'a self,
        domain: &'a str,
        code: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Link>> + Send + 'a>>;
}

/// Visits of capped links counted across nodes (a cluster): each node spends visits from a lease
/// it took from a counter the nodes share, so no more than the cap are ever granted in all.
pub trait VisitQuota: Send + Sync + std::fmt::Debug {
    /// One visit of the capped link `domain`/`code` (created at `created_at`) from this node's
    /// lease, without waiting: `Some(true)` granted, `Some(false)` its cap is used up,
    /// `None` the lease is spent and [`VisitQuota::refill`] must be asked.
    fn take(&self, domain: &str, code: &str, created_at: i64, cap: u64) -> Option<bool>;

    /// Leases more visits from the shared counter and takes one: `Ok(true)` granted,
    /// `Ok(false)` the cap is used up, an error when the counter cannot be reached in time.
    fn refill<'a>(
        &'a self,
        domain: &'a str,
        code: &'a str,
        created_at: i64,
        cap: u64,
    ) -> Pin<Box<dyn Future<Output = Result<bool, WriteError>> + Send + 'a>>;
}
