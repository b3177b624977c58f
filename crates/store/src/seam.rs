//! The store as the server sees it: a [`Writes`].
use crate::{CompactReport, Store, StoreError};
use duanlian_write::{Compacted, Op, WriteError, WriteFuture, Writes, Written};
use std::path::Path;

/// What the server is told of a store failure. `file`: the operation loads a file the caller
/// named, so a snapshot it cannot read is the file's fault (422), not the node's.
fn write_error(e: StoreError, file: bool) -> WriteError {
    match e {
        StoreError::Write(e) => e,
        e if e.is_out_of_space() => WriteError::NoSpace(e.to_string()),
        e @ StoreError::Closed => WriteError::Unavailable(e.to_string()),
        e @ StoreError::Snapshot(_) if file => WriteError::BadFile(e.to_string()),
        e => WriteError::Failed(e.to_string()),
    }
}

fn compacted(r: CompactReport) -> Compacted {
    Compacted {
        sequence: r.sequence,
        links: r.links,
        segments_removed: r.segments_removed,
        elapsed: r.elapsed,
    }
}

impl Writes for Store {
    fn submit(&self, op: Op) -> WriteFuture<'_, Written> {
        Box::pin(async move {
            let outcome = Store::submit(self, op)
                .await
                .map_err(|e| write_error(e, false))?;
            Ok(Written {
                outcome,
                revision: None,
            })
        })
    }

    fn compact(&self) -> WriteFuture<'_, Compacted> {
        Box::pin(async move {
            Store::compact(self)
                .await
                .map(compacted)
                .map_err(|e| write_error(e, false))
        })
    }

    fn load_bulk<'a>(&'a self, path: &'a Path) -> WriteFuture<'a, Compacted> {
        Box::pin(async move {
            Store::load_bulk(self, path)
                .await
                .map(compacted)
                .map_err(|e| write_error(e, true))
        })
    }

    fn journal_bytes(&self) -> Option<u64> {
        Some(Store::journal_bytes(self))
    }
}
