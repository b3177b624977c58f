//! Ranges of sequence numbers, as damage reports and gap lists name them.
use std::fmt;

/// Sequence numbers `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    /// The first.
    pub first: u64,
    /// The last; `None` where the damage runs to the end of the journal, so how many records
    /// it held cannot be told.
    pub last: Option<u64>,
}

impl SeqRange {
    /// One sequence number.
    pub fn one(seq: u64) -> SeqRange {
        SeqRange {
            first: seq,
            last: Some(seq),
        }
    }

    pub(crate) fn new(first: u64, last: u64) -> SeqRange {
        SeqRange {
            first,
            last: Some(last),
        }
    }

    /// How many sequence numbers, when known.
    pub fn count(&self) -> Option<u64> {
        self.last.map(|l| (l - self.first).saturating_add(1))
    }

    /// The part of the range after `after`, if any.
    pub(crate) fn above(self, after: u64) -> Option<SeqRange> {
        let first = self.first.max(after.saturating_add(1));
        match self.last {
            Some(l) if l < first => None,
            last => Some(SeqRange { first, last }),
        }
    }
}

impl fmt::Display for SeqRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.last {
            Some(l) => write!(f, "{}..={l}", self.first),
            None => write!(f, "{}..", self.first),
        }
    }
}
