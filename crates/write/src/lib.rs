//! What a write is, and who carries it out.
//!
//! The admin API turns requests into [`Op`]s; a node's writer carries them out and answers with
//! an [`Outcome`] or a [`WriteError`]. Which writer that is — a data directory's journal, a
//! cluster's bucket, none on a read-only node — is the binary's choice: the server holds it as a
//! `dyn` [`Writes`] and never names a backend. A cluster node that may be behind its bucket also
//! gives the redirect path a [`CatchUp`] for one direct read on a miss.
//!
//! ```
//! use duanlian_write::{NewLink, Op, ReadOnly, WriteError, Writes};
//! use duanlian_link::{Domain, ForwardQuery, Redirect, Validity};
//!
//! let op = Op::Create(vec![NewLink {
//!     domain: Domain::parse("go.example.cn")?,
//!     code: None,
//!     code_length: 7,
//!     url: duanlian_link::parse_url("https://shop.example.com/item/42")?,
//!     redirect: Redirect::Found,
//!     validity: Validity::ALWAYS,
//!     forward_query: ForwardQuery::Add,
//!     expired_url: None,
//! }]);
//! // A node without a writer refuses every write the same way.
//! let refused = futures_lite_block_on(ReadOnly.submit(op));
//! assert!(matches!(refused, Err(WriteError::ReadOnly)));
//! # fn futures_lite_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     let waker = std::task::Waker::noop();
//! #     let mut cx = std::task::Context::from_waker(waker);
//! #     let mut f = std::pin::pin!(f);
//! #     loop { if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; } }
//! # }
//! # Ok::<(), duanlian_link::LinkError>(())
//! ```
#![forbid(unsafe_code)]

mod code;
mod error;
mod op;
mod seam;

pub use code::{random_code, random_token, GENERATE_TRIES};
pub use error::WriteError;
pub use op::{NewLink, Op, Outcome, Patch};
pub use seam::{
    CatchUp, Compacted, Gauge, Operation, ReadOnly, VisitQuota, WriteFuture, Writes, Written,
};
