//! Cluster mode: many redirect nodes, one link set, kept in NATS JetStream.
//!
//! The source of truth is a JetStream key-value bucket (`links`, history 1): one key per link,
//! `DOMAIN/CODE`, its value the link's JSON, its revision the bucket's sequence number. Every
//! node serves from its own memory, like a single node: a snapshot (mapped) plus an overlay. The
//! snapshot comes from the bucket's object store, folded from the bucket up to revision N and
//! marked with N and the bucket's identity; the overlay is the bucket watched from N + 1. Admin
//! writes go to the bucket (a create is create-if-absent, an update and a delete carry the
//! revision they read), and are answered once JetStream acknowledged them and this node applied
//! them. Click events go to a stream, from which every node keeps the aggregates.
//!
//! Nothing here replicates by itself: ordering, durability and failover are JetStream's.
//!
//! ```no_run
//! use duanlian_cluster::{Cluster, ClusterOptions};
//! use duanlian_index::Index;
//! use std::sync::Arc;
//!
//! # async fn demo() -> Result<(), duanlian_cluster::ClusterError> {
//! let index = Arc::new(Index::empty());
//! let cluster = Cluster::new(ClusterOptions::new("nats://127.0.0.1:4222"), index.clone());
//! tokio::spawn(cluster.clone().run()); // connect, load the newest snapshot, follow the bucket
//! while !cluster.caught_up() {
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//! }
//! println!("{} links at revision {}", index.snapshot().len(), cluster.applied());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod clicks;
mod codec;
mod conn;
mod error;
mod fold;
mod follow;
mod node;
mod publish;
mod quota;
mod seam;
mod secrets;
mod writes;

pub use clicks::{read_click_events, ClickForwarder};
pub use error::ClusterError;
pub use node::{Cluster, ClusterOptions, ClusterStatus};
pub use publish::{publish_snapshot, upload_snapshot_file, Published};
pub use secrets::{Rotated, Secret, SECRET_LEN};
