//! The journal: an append-only, sequence-numbered log of link changes on disk.
//!
//! Every acknowledged write is a record here before it is answered. Records carry a monotonically
//! increasing sequence number and CRC32C checksums, and live in segment files named after their
//! first sequence number. Reading the journal back is the change feed an index replays at start;
//! compaction folds a prefix of it into a snapshot and then drops those segments.
//!
//! Damage in the middle of the journal (a flipped bit, a bad sector) makes opening refuse, since
//! a damaged record may be an acknowledged write. [`check`] reports every damaged region with
//! the sequence numbers it held, and [`salvage`] rebuilds the journal from the intact records
//! in one of two [`SalvageMode`]s, keeping the original directory and the damaged bytes
//! (in [`quarantine_dir`]).
//!
//! The journal is single-owner and synchronous: one writer calls [`Journal::write`] with a group of
//! records, which costs one `write` and one `fdatasync` however many records the group holds. The
//! caller decides how to gather groups (the store does group commit).
//!
//! ```
//! use duanlian_journal::{Journal, Options};
//! use duanlian_link::{Change, Code, Domain};
//!
//! let dir = std::env::temp_dir().join(format!("journal-doc-{}", std::process::id()));
//! let delete = Change::Delete { domain: Domain::parse("go.example.cn")?, code: Code::parse("x7Kp2Qa")? };
//! let mut journal = Journal::open(&dir, 0, Options::default(), |_| unreachable!("empty"))?;
//! let seq = journal.write(&[std::slice::from_ref(&delete)])?;
//! drop(journal);
//! let mut replayed = Vec::new();
//! Journal::open(&dir, 0, Options::default(), |record| replayed.push(record))?;
//! assert_eq!(replayed[0].seq, seq);
//! assert_eq!(replayed[0].changes, vec![delete]);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod codec;
mod error;
mod files;
mod gaps;
mod quarantine;
mod range;
mod salvage;
mod segment;

pub use error::JournalError;
pub use quarantine::quarantine_dir;
pub use range::SeqRange;
pub use salvage::{check, salvage, CheckReport, Damage, SalvageMode, SalvageReport, TornTail};
pub use segment::{read, Journal, Options, Record};
