//! The snapshot file: the bulk of duanlian's links, opened in milliseconds and never parsed.
//!
//! A snapshot is a fixed 64-byte [`Header`] followed by an rkyv archive of an open-addressing hash
//! table keyed by `(domain, code)`. [`Snapshot::open`] maps the file, checks header, checksum and
//! archive once, and from then on [`Snapshot::get`] reads links straight out of the mapped bytes.
//! [`Builder`] makes one; [`write_atomic`] publishes it so that no reader ever sees a partial file.
//!
//! This is the only duanlian crate with `unsafe`: mapping a file, and reading an archive that was
//! validated at open without validating it again on every lookup.
//!
//! ```
//! use duanlian_link::{Code, Domain, Link, Redirect, Validity};
//! use duanlian_snapshot::{Builder, Snapshot};
//!
//! let mut b = Builder::new();
//! b.push(&Link {
//!     domain: Domain::parse("go.example.cn")?,
//!     code: Code::parse("x7Kp2Qa")?,
//!     url: duanlian_link::parse_url("https://shop.example.com/item/42")?,
//!     redirect: Redirect::Found,
//!     validity: Validity::ALWAYS,
//!     created_at: 1_700_000_000,
//!     forward_query: duanlian_link::ForwardQuery::Add,
//!     expired_url: None,
//! })?;
//! let snap = Snapshot::from_bytes(b.finish()?.to_bytes(0)?)?;
//! let hit = snap.get("go.example.cn", "x7Kp2Qa").expect("present");
//! assert_eq!(hit.url, b"https://shop.example.com/item/42");
//! assert!(snap.get("go.example.cn", "nope").is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

mod build;
mod error;
mod format;
mod hash;
mod read;
mod record;

pub use build::{write_atomic, Builder, Duplicate, Table};
pub use error::{BuildError, SnapshotError};
pub use format::{Header, FORMAT_VERSION, HEADER_LEN, MAGIC, MIN_FORMAT_VERSION, RKYV_FORMAT};
pub use read::{Iter, LinkRef, SharedImage, Snapshot, VerifyReport};
pub use rkyv::util::AlignedVec;
