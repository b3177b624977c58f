use async_nats::jetstream::{context, kv, object_store, stream};
use duanlian_link::LinkError;
use duanlian_snapshot::{BuildError, SnapshotError};
use std::{io, path::PathBuf};

/// Why a cluster operation failed, named by the step that failed.
///
/// Every message carries its cause; `source()` adds nothing, so a chain printed with `{:#}` does
/// not repeat it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// An entry of the server list is not a NATS URL.
    #[error("NATS servers {servers}: {error}")]
    Servers {
        /// The list as given.
        servers: String,
        /// Why an entry does not parse.
        error: io::Error,
    },
    /// No NATS server of the list could be connected to.
    #[error("connecting to NATS: {0}")]
    Connect(async_nats::ConnectError),
    /// The links bucket could neither be opened nor created.
    #[error("opening the bucket: {0}")]
    OpenBucket(context::KeyValueError),
    /// The stream under the links bucket could not be found.
    #[error("finding the bucket's stream: {0}")]
    BucketStream(context::GetStreamError),
    /// The state of the stream under the links bucket (last revision, creation time) could
    /// not be read.
    #[error("reading the bucket's stream info: {0}")]
    BucketInfo(stream::InfoError),
    /// The stream of click events could not be found.
    #[error("finding the click stream: {0}")]
    ClickStream(context::GetStreamError),
    /// The state of the click stream could not be read.
    #[error("reading the click stream's info: {0}")]
    ClickStreamInfo(stream::InfoError),
    /// No consumer of the click stream could be made.
    #[error("consuming the click stream: {0}")]
    ClickConsumer(stream::ConsumerError),
    /// The consumer of the click stream could not be read from.
    #[error("reading the click stream: {0}")]
    ReadClicks(async_nats::jetstream::consumer::StreamError),
    /// The click stream failed while delivering.
    #[error("reading the click stream: {0}")]
    ClickDelivery(async_nats::jetstream::consumer::push::OrderedError),
    /// The bucket could not be watched.
    #[error("watching the bucket: {0}")]
    WatchBucket(kv::WatchError),
    /// The watch of the bucket failed while delivering entries.
    #[error("reading the bucket: {0}")]
    ReadBucket(kv::WatcherError),
    /// A bucket key is not `DOMAIN/CODE` (something other than duanlian wrote it).
    #[error("{key:?} is not DOMAIN/CODE")]
    EntryKey {
        /// The key.
        key: String,
    },
    /// A bucket value is not the JSON of a link.
    #[error("{key}: {error}")]
    EntryJson {
        /// The key of the entry.
        key: String,
        /// What the JSON parser said.
        error: serde_json::Error,
    },
    /// A bucket value is JSON of a link, but not of a valid one.
    #[error("{key}: {field}: {error}", field = .error.field())]
    EntryLink {
        /// The key of the entry.
        key: String,
        /// What is invalid.
        error: LinkError,
    },
    /// The object store of snapshots could neither be opened nor created.
    #[error("opening the snapshot store: {0}")]
    SnapshotStore(context::ObjectStoreError),
    /// The snapshot object could not be fetched from the object store.
    #[error("fetching {name}: {error}")]
    Fetch {
        /// The object's name.
        name: String,
        /// What the object store said.
        error: object_store::GetError,
    },
    /// The snapshot object broke off while being downloaded.
    #[error("downloading {name}: {error}")]
    Download {
        /// The object's name.
        name: String,
        /// Why the copy failed.
        error: io::Error,
    },
    /// The snapshot could not be put in the object store.
    #[error("uploading the snapshot: {0}")]
    Upload(object_store::PutError),
    /// What was sent could not be flushed to the NATS server.
    #[error("flushing the NATS connection: {0}")]
    Flush(async_nats::client::FlushError),
    /// A published snapshot is of another incarnation of the bucket (or of another bucket):
    /// its revisions say nothing about this one's.
    #[error(
        "the snapshot was folded from another bucket (feed {snapshot:016x}, this bucket is {bucket:016x})"
    )]
    OtherBucket {
        /// The feed id the snapshot is marked with.
        snapshot: u64,
        /// The feed id of the bucket.
        bucket: u64,
    },
    /// A published snapshot claims revisions the bucket never reached.
    #[error("the snapshot is at revision {revision} but the bucket only reaches {bucket_last}")]
    AheadOfBucket {
        /// The revision the snapshot is marked with.
        revision: u64,
        /// The bucket's last revision.
        bucket_last: u64,
    },
    /// The links folded from the bucket do not make a snapshot table.
    #[error("building the snapshot: {0}")]
    Build(BuildError),
    /// A snapshot file could not be written, or opened and verified.
    #[error("snapshot: {0}")]
    Snapshot(SnapshotError),
    /// The task opening a downloaded snapshot panicked or was cancelled.
    #[error("opening the snapshot was interrupted: {0}")]
    OpenInterrupted(tokio::task::JoinError),
    /// A shared secret could not be read or written (`secrets.rs`).
    #[error("shared secret {name}: {reason}")]
    Secret {
        /// The secret's key.
        name: String,
        /// What failed.
        reason: String,
    },
    /// Not connected to the cluster yet.
    #[error("not connected to the cluster yet")]
    NotJoined,
    /// A file or directory operation failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
}

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(io::Error) -> ClusterError + '_ {
    move |error| ClusterError::Io {
        path: path.to_path_buf(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn the_cause_is_in_the_message_and_not_again_in_the_source() {
        let e = io_err(std::path::Path::new("/x/links.snap"))(io::Error::other("disk on fire"));
        assert_eq!(e.to_string(), "/x/links.snap: disk on fire");
        assert!(e.source().is_none());
        let e = ClusterError::Servers {
            servers: "nats://a,::".into(),
            error: io::Error::other("bad"),
        };
        assert!(e.to_string().ends_with(": bad"), "{e}");
        assert!(e.source().is_none());
        let e = ClusterError::EntryLink {
            key: "go.example.cn/x".into(),
            error: LinkError::UrlScheme,
        };
        assert_eq!(
            e.to_string(),
            "go.example.cn/x: url: url must start with http:// or https://"
        );
        assert!(e.source().is_none());
    }

    /// Operators (and the cluster tests) read why a published snapshot was passed over.
    #[test]
    fn an_unusable_snapshot_says_why() {
        let other = ClusterError::OtherBucket {
            snapshot: 0xab,
            bucket: 0xcd,
        };
        assert_eq!(
            other.to_string(),
            "the snapshot was folded from another bucket (feed 00000000000000ab, this bucket is 00000000000000cd)"
        );
        let ahead = ClusterError::AheadOfBucket {
            revision: 9,
            bucket_last: 4,
        };
        assert_eq!(
            ahead.to_string(),
            "the snapshot is at revision 9 but the bucket only reaches 4"
        );
    }
}
