//! A cluster node as the server sees it: its writer ([`Writes`]) and, while it is behind its
//! bucket, the direct read on a miss ([`CatchUp`]).
use crate::Cluster;
use duanlian_link::Link;
use duanlian_write::{
    CatchUp, Compacted, Gauge, Op, Operation, WriteError, WriteFuture, Writes, Written,
};
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

/// Why a cluster node does not do `op` itself.
fn not_here(op: Operation) -> Option<WriteError> {
    let why = match op {
        Operation::Write => return None,
        Operation::Compact => "a cluster node has no journal to compact; publish a snapshot of the bucket with `duanlian snapshot publish`",
        Operation::LoadBulk => "a cluster node loads the snapshots published for its bucket; publish one with `duanlian snapshot publish`",
    };
    Some(WriteError::NotHere(why.into()))
}

impl Writes for Cluster {
    fn refuses(&self, op: Operation) -> Option<WriteError> {
        not_here(op)
    }

    fn submit(&self, op: Op) -> WriteFuture<'_, Written> {
        Box::pin(async move {
            let (outcome, revision) = Cluster::submit(self, op).await?;
            Ok(Written {
                outcome,
                revision: Some(revision),
            })
        })
    }

    fn compact(&self) -> WriteFuture<'_, Compacted> {
        Box::pin(async { Err(not_here(Operation::Compact).unwrap_or(WriteError::ReadOnly)) })
    }

    fn load_bulk<'a>(&'a self, _path: &'a Path) -> WriteFuture<'a, Compacted> {
        Box::pin(async { Err(not_here(Operation::LoadBulk).unwrap_or(WriteError::ReadOnly)) })
    }

    fn gauges(&self) -> Vec<Gauge> {
        let st = self.status();
        vec![
            Gauge {
                name: "cluster_connected",
                help: "Connected to a NATS server (1/0)",
                value: i64::from(st.connected),
            },
            Gauge {
                name: "cluster_applied_revision",
                help: "The newest bucket revision applied",
                value: st.applied as i64,
            },
            Gauge {
                name: "cluster_lag_revisions",
                help: "Revisions the bucket is ahead of this node",
                value: st.lag as i64,
            },
            Gauge {
                name: "cluster_caught_up",
                help: "Applied what the bucket held when the node started (1/0)",
                value: i64::from(st.caught_up),
            },
            Gauge {
                name: "cluster_click_events_dropped",
                help: "Click events dropped since start: NATS unreachable longer than the 64 MiB buffer holds",
                value: counted(&self.click_counters.events_dropped),
            },
            Gauge {
                name: "cluster_deltas_dropped",
                help: "Statistics delta messages dropped since start: NATS unreachable longer than the 64 MiB buffer holds",
                value: counted(&self.click_counters.deltas_dropped),
            },
            Gauge {
                name: "cluster_clicks_unsent_bytes",
                help: "Bytes of click events and statistics deltas waiting for NATS",
                value: counted(&self.click_counters.unsent_bytes),
            },
        ]
    }
}

fn counted(n: &std::sync::atomic::AtomicU64) -> i64 {
    i64::try_from(n.load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(i64::MAX)
}

impl CatchUp for Cluster {
    fn lagging(&self) -> bool {
        Cluster::lagging(self)
    }

    fn direct_get<'a>(
        &'a self,
        domain: &'a str,
        code: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<Link>> + Send + 'a>> {
        Box::pin(Cluster::direct_get(self, domain, code))
    }
}
