//! The write path: every create, update and delete goes through here.
//!
//! A [`Store`] owns the data directory (a lock, the current snapshot, the journal) and one writer
//! thread. Requests queue up while the writer is busy with an `fdatasync`; the writer takes all
//! of them as one group, checks each request's preconditions (a custom code must be free, an
//! updated link must exist) against the index plus the effects of the requests before it, writes
//! the accepted ones to the journal in one write and one sync, applies them to the index in
//! sequence order, and only then answers. So a `201` means "on disk and visible", and durability
//! costs one sync per group, not per request.
//!
//! Compaction folds the snapshot and the closed journal segments into a new snapshot, publishes
//! it atomically, swaps it into the index and drops the folded segments, while writes go on.
//!
//! ```no_run
//! use duanlian_store::{DataDir, Store, StoreOptions};
//! use duanlian_write::{NewLink, Op, Outcome};
//! use duanlian_link::{Domain, Redirect, Validity};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Store::open(DataDir::open("duanlian-data".as_ref())?, StoreOptions::default())?;
//! let created = store
//!     .submit(Op::Create(vec![NewLink {
//!         domain: Domain::parse("go.example.cn")?,
//!         code: None,
//!         code_length: 7,
//!         url: duanlian_link::parse_url("https://shop.example.com/item/42")?,
//!         redirect: Redirect::Found,
//!         validity: Validity::ALWAYS,
//!         forward_query: duanlian_link::ForwardQuery::Add,
//!         expired_url: None,
//!     }]))
//!     .await?;
//! if let Outcome::Created(links) = created {
//!     println!("https://go.example.cn/{}", links[0].code);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod compact;
mod dir;
mod error;
mod seam;
mod visits_file;
mod writer;

pub use compact::{compact_offline, AutoCompact, CompactReport, Trigger};
pub use dir::DataDir;
pub use error::StoreError;
pub use writer::{CommitObserver, Store, StoreOptions};
