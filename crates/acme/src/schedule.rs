//! When to renew, and how long to wait after a failure.
use std::time::Duration;

const DAY: i64 = 86_400;

/// When a certificate valid from `not_before` to `not_after` (Unix seconds) is renewed: 30 days
/// before it ends, or when a third of its lifetime remains if that is later (a 6-day
/// certificate renews with 2 days left, not at once).
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    not_after - (30 * DAY).min(lifetime / 3)
}

/// The wait before the next try after `failures` failed orders in a row: 1 minute, doubling,
/// at most 6 hours (the CA's rate limits count failures too).
pub fn backoff(failures: u32) -> Duration {
    let minutes = 1u64 << failures.saturating_sub(1).min(9);
    Duration::from_secs((minutes * 60).min(6 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_30_days_early_or_at_two_thirds_of_a_short_life() {
        assert_eq!(renew_at(0, 90 * DAY), 60 * DAY);
        assert_eq!(renew_at(0, 365 * DAY), 335 * DAY);
        assert_eq!(renew_at(0, 6 * DAY), 4 * DAY);
        assert_eq!(renew_at(100, 130), 120);
        assert_eq!(
            renew_at(50, 10),
            10,
            "a backwards certificate is due at its end"
        );
    }

    #[test]
    fn backoff_doubles_from_a_minute_up_to_six_hours() {
        let secs: Vec<u64> = (1..=10).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(
            secs,
            [60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 21600]
        );
        assert_eq!(backoff(100).as_secs(), 21600);
    }
}
