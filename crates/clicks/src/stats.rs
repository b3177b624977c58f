//! Per-link aggregates, updated as clicks arrive, so a report never rescans the log.
use crate::{Click, Device};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

const DAY: i64 = 86_400;
/// Distinct referrer hosts kept per link and day; the rest are summed under [`OTHER_REFERRERS`].
const MAX_REFERRERS_PER_DAY: usize = 1_000;
/// The bucket for referrer hosts past [`MAX_REFERRERS_PER_DAY`].
pub const OTHER_REFERRERS: &str = "(other)";
/// The bucket for visits without a referrer.
pub const DIRECT: &str = "(direct)";

#[derive(Debug, Default)]
struct Day {
    devices: [u64; 4],
    /// Human visits by referrer host.
    referrers: HashMap<Box<str>, u64>,
}

/// Clicks per link (`domain \t code`) and UTC day.
#[derive(Debug, Default)]
pub struct Stats {
    links: Mutex<HashMap<Box<str>, BTreeMap<i64, Day>>>,
}

/// The statistics of one link over a range of days.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// First day (days since 1970-01-01, UTC), inclusive.
    pub from_day: i64,
    /// Last day, inclusive.
    pub to_day: i64,
    /// Visits by people.
    pub human: u64,
    /// Fetches by bots (not visits).
    pub bot: u64,
    /// `(day, human, bot)` for every day of the range, zeros included.
    pub per_day: Vec<(i64, u64, u64)>,
    /// Human visits by referrer host, most first ([`DIRECT`] for none).
    pub referrers: Vec<(String, u64)>,
    /// Clicks by device class, in [`Device::ALL`] order.
    pub devices: Vec<(Device, u64)>,
}

impl Stats {
    /// Counts a batch of clicks (one lock for the batch).
    pub fn add(&self, clicks: &[Click]) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        for c in clicks {
            let days = match links.get_mut(c.key()) {
                Some(days) => days,
                None => links.entry(c.key().into()).or_default(),
            };
            let day = days.entry(c.at.div_euclid(DAY)).or_default();
            day.devices[c.device.index()] += 1;
            if c.device != Device::Bot {
                let host = c.referrer().unwrap_or(DIRECT);
                let host = if day.referrers.len() < MAX_REFERRERS_PER_DAY
                    || day.referrers.contains_key(host)
                {
                    host
                } else {
                    OTHER_REFERRERS
                };
                match day.referrers.get_mut(host) {
                    Some(n) => *n += 1,
                    None => {
                        day.referrers.insert(host.into(), 1);
                    }
                }
            }
        }
    }

    /// Forgets a link's statistics (it was deleted; a new link under its code starts afresh).
    pub fn forget(&self, domain: &str, code: &str) {
        let key = format!("{domain}\t{code}");
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key.as_str());
    }

    /// The first day with clicks for a link.
    pub fn first_day(&self, domain: &str, code: &str) -> Option<i64> {
        let key = format!("{domain}\t{code}");
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.get(key.as_str())?.keys().next().copied()
    }

    /// A link's statistics for days `from_day..=to_day`, with the `top` referrers.
    pub fn report(
        &self,
        domain: &str,
        code: &str,
        from_day: i64,
        to_day: i64,
        top: usize,
    ) -> Report {
        let key = format!("{domain}\t{code}");
        let mut devices = [0u64; 4];
        let mut referrers: HashMap<&str, u64> = HashMap::new();
        let mut per_day = Vec::new();
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let mut days = links
            .get(key.as_str())
            .map(|d| d.range(from_day..=to_day))
            .into_iter()
            .flatten()
            .peekable();
        for day in from_day..=to_day {
            match days.next_if(|(d, _)| **d == day) {
                Some((_, stats)) => {
                    for (sum, n) in devices.iter_mut().zip(stats.devices) {
                        *sum += n;
                    }
                    for (host, n) in &stats.referrers {
                        *referrers.entry(host).or_default() += n;
                    }
                    let bot = stats.devices[Device::Bot.index()];
                    per_day.push((day, stats.devices.iter().sum::<u64>() - bot, bot));
                }
                None => per_day.push((day, 0, 0)),
            }
        }
        let mut referrers: Vec<(String, u64)> = referrers
            .into_iter()
            .map(|(h, n)| (h.to_owned(), n))
            .collect();
        referrers.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        referrers.truncate(top);
        let bot = devices[Device::Bot.index()];
        Report {
            from_day,
            to_day,
            human: devices.iter().sum::<u64>() - bot,
            bot,
            per_day,
            referrers,
            devices: Device::ALL
                .into_iter()
                .map(|d| (d, devices[d.index()]))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_sum_days_devices_and_referrers() {
        let s = Stats::default();
        let ip = "192.0.2.1".parse().expect("ip");
        let d0 = 20_000 * DAY;
        let click = |at, referer: Option<&[u8]>, device| {
            Click::new(at, "go.example.cn", "abc", referer, device, ip)
        };
        s.add(&[
            click(d0 + 1, Some(b"https://weibo.com/x"), Device::Mobile),
            click(d0 + 2, Some(b"https://weibo.com/y"), Device::Desktop),
            click(d0 + 3, None, Device::Mobile),
            click(d0 + 4, None, Device::Bot),
            click(d0 + 2 * DAY, Some(b"https://t.co/"), Device::Other),
            Click::new(d0, "go.example.cn", "other", None, Device::Mobile, ip),
        ]);
        let r = s.report("go.example.cn", "abc", 20_000, 20_002, 10);
        assert_eq!((r.human, r.bot), (4, 1));
        assert_eq!(r.per_day, [(20_000, 3, 1), (20_001, 0, 0), (20_002, 1, 0)]);
        assert_eq!(
            r.referrers,
            [
                ("weibo.com".to_owned(), 2),
                (DIRECT.to_owned(), 1),
                ("t.co".to_owned(), 1)
            ]
        );
        assert_eq!(
            r.devices,
            [
                (Device::Mobile, 2),
                (Device::Desktop, 1),
                (Device::Other, 1),
                (Device::Bot, 1)
            ]
        );
        let later = s.report("go.example.cn", "abc", 20_001, 20_002, 1);
        assert_eq!((later.human, later.referrers.len()), (1, 1));
        assert_eq!(s.first_day("go.example.cn", "abc"), Some(20_000));
        s.forget("go.example.cn", "abc");
        assert_eq!(
            s.report("go.example.cn", "abc", 20_000, 20_000, 10).human,
            0
        );
    }
}
