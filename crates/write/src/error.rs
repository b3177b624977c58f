use duanlian_link::LinkError;

/// Why a write was not carried out. Every message carries its cause; `source()` adds nothing.
/// The admin API maps each kind to its status: conflicts 409, missing links 404, invalid links
/// 422, a node that takes no writes 403, an operation another kind of node does 409, writes
/// unavailable or no disk space 503.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The `(domain, code)` is taken.
    #[error("{domain}/{code} is taken")]
    Conflict {
        /// The link domain.
        domain: String,
        /// The code.
        code: String,
    },
    /// No link with that `(domain, code)`.
    #[error("no link {domain}/{code}")]
    NotFound {
        /// The link domain.
        domain: String,
        /// The code.
        code: String,
    },
    /// A change would make an invalid link (for example a PATCH that empties the window).
    #[error("{field}: {0}", field = .0.field())]
    Invalid(LinkError),
    /// No free code of this length was found after many tries.
    #[error("no free code of length {0} found; use a longer code_length")]
    CodeSpaceExhausted(usize),
    /// This node takes no writes at all (it serves a bulk snapshot read-only).
    #[error("this node serves a snapshot read-only; writes go to a node with a data directory")]
    ReadOnly,
    /// This kind of node does not do that operation; the message says what does.
    #[error("{0}")]
    NotHere(String),
    /// Writes cannot be taken now (a journal write failed earlier, the cluster is unreachable).
    #[error("writes are unavailable: {0}")]
    Unavailable(String),
    /// The disk is full: the node is fine and the write can be tried later.
    #[error("{0}")]
    NoSpace(String),
    /// A file given to load (a bulk snapshot) is missing, damaged or not a snapshot.
    #[error("{0}")]
    BadFile(String),
    /// Anything else: a fault of the node.
    #[error("{0}")]
    Failed(String),
}
