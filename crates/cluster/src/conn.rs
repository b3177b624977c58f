//! The way into NATS: the connection, the links bucket and its identity, the snapshot object
//! store, and downloading a snapshot from it. Shared by the nodes and by `snapshot publish`.
use crate::error::io_err;
use crate::{ClusterError, ClusterOptions};
use async_nats::jetstream::{self, kv, object_store};
use duanlian_snapshot::Snapshot;
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The connection, once made.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) kv: kv::Store,
    /// The shared visit counters of capped links (`quota.rs`).
    pub(crate) visits: kv::Store,
    pub(crate) feed_id: u64,
}

/// One stable number for a bucket incarnation: its name and the creation time of the stream
/// under it. A bucket deleted and created again gets a new identity, so a snapshot of the old
/// one is never resumed against the new one's revisions.
fn feed_id(bucket: &str, created_nanos: i128) -> u64 {
    // FNV-1a: tiny, stable across builds and platforms (unlike std's hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bucket.bytes().chain(created_nanos.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

pub(crate) async fn connect(opts: &ClusterOptions) -> Result<async_nats::Client, ClusterError> {
    let servers: Vec<async_nats::ServerAddr> = opts
        .servers
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|error| ClusterError::Servers {
            servers: opts.servers.clone(),
            error,
        })?;
    async_nats::ConnectOptions::new()
        .name(&opts.name)
        .connection_timeout(Duration::from_secs(2))
        .request_timeout(Some(Duration::from_secs(5)))
        .max_reconnects(None)
        .retain_servers_order()
        .connect(servers)
        .await
        .map_err(ClusterError::Connect)
}

/// The links bucket (created if missing, with history 1 and no limits), its identity and its
/// last revision.
pub(crate) async fn open_bucket(
    js: &jetstream::Context,
    opts: &ClusterOptions,
) -> Result<(kv::Store, u64, u64), ClusterError> {
    let kv = open_kv(
        js,
        &opts.bucket,
        "duanlian links: DOMAIN/CODE -> link JSON",
        opts.replicas,
    )
    .await?;
    let (last, created) = bucket_state(js, opts).await?;
    Ok((kv, feed_id(&opts.bucket, created), last))
}

/// The key-value bucket `name` (history 1, no limits), created with `replicas` if missing.
pub(crate) async fn open_kv(
    js: &jetstream::Context,
    name: &str,
    description: &str,
    replicas: usize,
) -> Result<kv::Store, ClusterError> {
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    match js
        .create_key_value(kv::Config {
            bucket: name.to_string(),
            description: description.to_string(),
            history: 1,
            num_replicas: replicas.max(1),
            ..Default::default()
        })
        .await
    {
        Ok(store) => Ok(store),
        // Another node created it meanwhile.
        Err(_) => js
            .get_key_value(name)
            .await
            .map_err(ClusterError::OpenBucket),
    }
}

/// The bucket's last revision and creation time, fresh from the server.
pub(crate) async fn bucket_state(
    js: &jetstream::Context,
    opts: &ClusterOptions,
) -> Result<(u64, i128), ClusterError> {
    let stream = js
        .get_stream_no_info(opts.kv_stream())
        .await
        .map_err(ClusterError::BucketStream)?;
    let info = stream.get_info().await.map_err(ClusterError::BucketInfo)?;
    Ok((
        info.state.last_sequence,
        info.created.unix_timestamp_nanos(),
    ))
}

/// The object store of published snapshots, created if missing.
pub(crate) async fn snapshot_store(
    js: &jetstream::Context,
    opts: &ClusterOptions,
) -> Result<object_store::ObjectStore, ClusterError> {
    match js.get_object_store(&opts.snapshots).await {
        Ok(s) => Ok(s),
        Err(_) => match js
            .create_object_store(object_store::Config {
                bucket: opts.snapshots.clone(),
                description: Some("duanlian snapshots of the links bucket".into()),
                num_replicas: opts.replicas.max(1),
                ..Default::default()
            })
            .await
        {
            Ok(s) => Ok(s),
            // Another node created it meanwhile.
            Err(_) => js
                .get_object_store(&opts.snapshots)
                .await
                .map_err(ClusterError::SnapshotStore),
        },
    }
}

/// Downloads `name` to a temporary file in `dir`, renames it over `dir/NAME` and maps it,
/// verifying the checksum.
pub(crate) async fn download(
    store: &object_store::ObjectStore,
    name: &str,
    dir: &Path,
) -> Result<Snapshot, ClusterError> {
    tokio::fs::create_dir_all(dir).await.map_err(io_err(dir))?;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.download"));
    let mut object = store.get(name).await.map_err(|error| ClusterError::Fetch {
        name: name.to_string(),
        error,
    })?;
    let mut file = tokio::fs::File::create(&tmp).await.map_err(io_err(&tmp))?;
    tokio::io::copy(&mut object, &mut file)
        .await
        .map_err(|error| ClusterError::Download {
            name: name.to_string(),
            error,
        })?;
    file.flush().await.map_err(io_err(&tmp))?;
    file.sync_all().await.map_err(io_err(&tmp))?;
    drop(file);
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(io_err(&path))?;
    // The file is replaced only by this rename, never written in place: mapping it is safe.
    tokio::task::spawn_blocking(move || Snapshot::open(&path))
        .await
        .map_err(ClusterError::OpenInterrupted)?
        .map_err(ClusterError::Snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recreated_bucket_is_another_feed() {
        let a = feed_id("links", 1_700_000_000_000_000_000);
        assert_ne!(a, feed_id("links", 1_700_000_000_000_000_001));
        assert_ne!(a, feed_id("links2", 1_700_000_000_000_000_000));
        assert_eq!(a, feed_id("links", 1_700_000_000_000_000_000));
        assert_ne!(a, 0);
    }
}
