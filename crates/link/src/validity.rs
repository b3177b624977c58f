use crate::LinkError;

/// When a link may redirect: from `valid_since` (inclusive) until `expires_at` (exclusive),
/// both in UTC seconds, either bound optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Validity {
    /// Before this instant the link behaves as if it did not exist.
    pub valid_since: Option<i64>,
    /// From this instant on the link answers "expired".
    pub expires_at: Option<i64>,
    /// After this many counted visits the link answers "expired". Never 0.
    pub max_visits: Option<u64>,
}

/// What a link is at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not valid yet: answered like an unknown code.
    Pending,
    /// Redirects.
    Active,
    /// Past its validity: never redirects again.
    Expired,
}

impl State {
    /// Whether the link redirects.
    pub fn is_active(self) -> bool {
        self == State::Active
    }
}

impl Validity {
    /// No bounds: the link is permanent.
    pub const ALWAYS: Validity = Validity {
        valid_since: None,
        expires_at: None,
        max_visits: None,
    };

    /// Checks that the window is not empty.
    pub fn new(valid_since: Option<i64>, expires_at: Option<i64>) -> Result<Validity, LinkError> {
        if let (Some(s), Some(e)) = (valid_since, expires_at) {
            if s >= e {
                return Err(LinkError::ValidityOrder);
            }
        }
        Ok(Validity {
            valid_since,
            expires_at,
            max_visits: None,
        })
    }

    /// Adds a visit cap; 0 is refused (a link that can never redirect is a mistake).
    pub fn with_max_visits(self, max_visits: Option<u64>) -> Result<Validity, LinkError> {
        if max_visits == Some(0) {
            return Err(LinkError::MaxVisitsZero);
        }
        Ok(Validity { max_visits, ..self })
    }

    /// Whether either time bound is set, so callers can skip reading the clock for permanent
    /// links.
    #[inline]
    pub fn is_bounded(&self) -> bool {
        self.valid_since.is_some() || self.expires_at.is_some()
    }

    /// Whether the link is past its expiry plus `retention` seconds: from then on it is purged
    /// and answers as if it never existed.
    #[inline]
    pub fn is_purged_at(&self, now: i64, retention: i64) -> bool {
        self.expires_at
            .is_some_and(|e| now >= e.saturating_add(retention))
    }

    /// The state at `now` (UTC seconds). Decided from the link's own fields alone, so it is exact
    /// whatever any background reclaimer has or has not done.
    #[inline]
    pub fn state_at(&self, now: i64) -> State {
        if self.expires_at.is_some_and(|e| now >= e) {
            State::Expired
        } else if self.valid_since.is_some_and(|s| now < s) {
            State::Pending
        } else {
            State::Active
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_bounds_are_inclusive_then_exclusive() {
        let v = Validity::new(Some(10), Some(20)).expect("valid window");
        assert_eq!(v.state_at(9), State::Pending);
        assert_eq!(v.state_at(10), State::Active);
        assert_eq!(v.state_at(19), State::Active);
        assert_eq!(v.state_at(20), State::Expired);
        assert_eq!(Validity::ALWAYS.state_at(i64::MAX), State::Active);
        assert!(!Validity::ALWAYS.is_bounded());
    }

    #[test]
    fn empty_windows_are_rejected() {
        assert_eq!(
            Validity::new(Some(5), Some(5)),
            Err(LinkError::ValidityOrder)
        );
        assert!(Validity::new(None, Some(5)).is_ok());
    }
}
