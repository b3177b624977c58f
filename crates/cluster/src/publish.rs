//! `duanlian snapshot publish`: fold the bucket into a snapshot and put it in the object store.
use crate::conn::{connect, open_bucket, snapshot_store};
use crate::error::io_err;
use crate::fold::Fold;
use crate::{codec, ClusterError, ClusterOptions};
use async_nats::jetstream::{self, kv, object_store};
use futures_util::StreamExt;
use std::collections::HashMap;

/// What [`publish_snapshot`] published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The bucket revision the snapshot includes.
    pub revision: u64,
    /// Links in it.
    pub links: usize,
    /// File size in bytes.
    pub bytes: u64,
    /// Bucket entries skipped because duanlian cannot read them (written by something else).
    pub skipped: u64,
}

/// Reads the whole bucket up to its current last revision N, builds a snapshot marked with N
/// and the bucket's identity, and stores it in the object store, where every node's watch
/// picks it up. Safe to run from several places at once: each upload replaces the object
/// whole, and a node only ever moves to a newer revision.
pub async fn publish_snapshot(opts: &ClusterOptions) -> Result<Published, ClusterError> {
    let client = connect(opts).await?;
    let js = jetstream::new(client.clone());
    let (kv, feed_id, last) = open_bucket(&js, opts).await?;
    let mut fold = Fold::default();
    let mut skipped = 0;
    if last > 0 {
        let mut watch = kv
            .watch_all_from_revision(1)
            .await
            .map_err(ClusterError::WatchBucket)?;
        while let Some(entry) = watch.next().await {
            let e = entry.map_err(ClusterError::ReadBucket)?;
            let deleted = !matches!(e.operation, kv::Operation::Put);
            match codec::change(&e.key, &e.value, deleted) {
                Ok(change) => fold.apply(e.revision, change),
                Err(why) => {
                    skipped += 1;
                    tracing::warn!(revision = e.revision, %why, "skipping a bucket entry");
                    fold.through = fold.through.max(e.revision);
                }
            }
            // Revision `last` is the newest message of its key, so it is always delivered.
            if e.revision >= last {
                break;
            }
        }
    }
    let revision = fold.through.max(last);
    let table = fold.table(feed_id).map_err(ClusterError::Build)?;
    std::fs::create_dir_all(&opts.dir).map_err(io_err(&opts.dir))?;
    let path = opts
        .dir
        .join(format!("publish-{}.snap", std::process::id()));
    let bytes = table
        .write(&path, revision)
        .map_err(ClusterError::Snapshot)?;
    let store = snapshot_store(&js, opts).await?;
    let mut file = tokio::fs::File::open(&path).await.map_err(io_err(&path))?;
    let meta = object_store::ObjectMetadata {
        name: opts.snapshot_object(),
        description: Some(format!(
            "{} links of bucket {} at revision {revision}",
            table.len(),
            opts.bucket
        )),
        metadata: HashMap::from([
            ("revision".to_string(), revision.to_string()),
            ("feed".to_string(), format!("{feed_id:016x}")),
        ]),
        ..Default::default()
    };
    let put = store
        .put(meta, &mut file)
        .await
        .map_err(ClusterError::Upload);
    let _ = std::fs::remove_file(&path);
    put?;
    client.flush().await.map_err(ClusterError::Flush)?;
    Ok(Published {
        revision,
        links: table.len(),
        bytes,
        skipped,
    })
}

/// Stores the file at `path` as the bucket's snapshot exactly as it is, unchecked: for recovery
/// drills and tests of what nodes do with a snapshot that is corrupt, of another bucket, or
/// ahead of the bucket (they rebuild from the bucket).
pub async fn upload_snapshot_file(
    opts: &ClusterOptions,
    path: &std::path::Path,
) -> Result<u64, ClusterError> {
    let client = connect(opts).await?;
    let js = jetstream::new(client.clone());
    let store = snapshot_store(&js, opts).await?;
    let mut file = tokio::fs::File::open(path).await.map_err(io_err(path))?;
    let info = store
        .put(opts.snapshot_object().as_str(), &mut file)
        .await
        .map_err(ClusterError::Upload)?;
    client.flush().await.map_err(ClusterError::Flush)?;
    Ok(info.size as u64)
}
