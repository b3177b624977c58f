//! The gap list: sequence numbers a salvage skipped, which the journal accepts as missing.
//!
//! The journal refuses any break in its sequence numbers, because a break means acknowledged
//! writes are gone. After `salvage` has skipped damaged records on purpose (and said so), the
//! breaks it left are listed in `DIR/gaps`, and a jump is accepted only where a listed range
//! fits it exactly: from its first number to one past its last. Any other jump is still
//! corruption. Once a compaction has folded past a gap and dropped the segments around it, the
//! next open removes the entry, so each listing is used up rather than kept as a standing
//! exception.
//!
//! ```text
//! duanlian journal gaps v1
//! 20306 20310          first and last skipped sequence number, inclusive, ascending
//! crc32c 1a2b3c4d      CRC32C of every byte before this line
//! ```
use crate::error::{io_err, JournalError};
use crate::files::{fsync_dir, write_atomic};
use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::path::Path;

pub(crate) const FILE: &str = "gaps";
const HEADER: &str = "duanlian journal gaps v1\n";

/// The listed gaps, as inclusive `(first, last)` ranges in ascending order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Gaps(pub(crate) Vec<(u64, u64)>);

impl Gaps {
    /// Reads `dir`'s gap list; no file is an empty list.
    pub(crate) fn load(dir: &Path) -> Result<Gaps, JournalError> {
        let path = dir.join(FILE);
        let text = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Gaps::default()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        parse(&text).map_err(|reason| JournalError::GapList { path, reason })
    }

    /// Whether a listed gap explains a jump from `from` (the number expected) to `to` (the
    /// number found).
    pub(crate) fn bridges(&self, from: u64, to: u64) -> bool {
        self.0
            .iter()
            .any(|&(first, last)| first == from && last.checked_add(1) == Some(to))
    }

    /// How many sequence numbers the gaps at or after `from` hold, for bounding how far a
    /// record found after damage may plausibly be numbered.
    pub(crate) fn numbers_from(&self, from: u64) -> u64 {
        self.0
            .iter()
            .filter(|g| g.0 >= from)
            .map(|g| (g.1 - g.0).saturating_add(1))
            .fold(0, u64::saturating_add)
    }

    /// Replaces `dir`'s gap list (removing the file when the list is empty).
    pub(crate) fn store(&self, dir: &Path) -> Result<(), JournalError> {
        let path = dir.join(FILE);
        if self.0.is_empty() {
            return match fs::remove_file(&path) {
                Ok(()) => fsync_dir(dir),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err(&path)(e)),
            };
        }
        write_atomic(&path, self.render().as_bytes())
    }

    fn render(&self) -> String {
        let mut text = String::from(HEADER);
        for (first, last) in &self.0 {
            let _ = writeln!(text, "{first} {last}");
        }
        let crc = crc32c::crc32c(text.as_bytes());
        let _ = writeln!(text, "crc32c {crc:08x}");
        text
    }

    /// Drops the gaps nothing can jump across any more: at or below `after` (in the snapshot)
    /// and before the first segment that is left (`None`: no segments). Returns whether any went.
    pub(crate) fn prune(&mut self, after: u64, first_segment: Option<u64>) -> bool {
        let before = self.0.len();
        self.0
            .retain(|&(_, last)| !(last <= after && first_segment.is_none_or(|f| last < f)));
        self.0.len() != before
    }
}

fn parse(bytes: &[u8]) -> Result<Gaps, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    let body = text
        .strip_prefix(HEADER)
        .ok_or_else(|| format!("does not start with {:?}", HEADER.trim_end()))?;
    let trimmed = body.strip_suffix('\n').ok_or("no final newline")?;
    let (ranges, crc_line) = match trimmed.rfind('\n') {
        Some(at) => (&trimmed[..=at], &trimmed[at + 1..]),
        None => ("", trimmed),
    };
    let stored = crc_line
        .strip_prefix("crc32c ")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or("the last line is not `crc32c <hex>`")?;
    let covered = HEADER.len() + ranges.len();
    let actual = crc32c::crc32c(&bytes[..covered]);
    if stored != actual {
        return Err(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        ));
    }
    let mut gaps = Vec::new();
    for (n, line) in ranges.lines().enumerate() {
        let bad = || format!("line {}: {line:?} is not `first last`", n + 2);
        let mut parts = line.split(' ');
        let (Some(first), Some(last), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let (first, last) = (
            first.parse::<u64>().map_err(|_| bad())?,
            last.parse::<u64>().map_err(|_| bad())?,
        );
        if first > last || gaps.last().is_some_and(|&(_, prev)| first <= prev) {
            return Err(format!("line {}: ranges out of order", n + 2));
        }
        gaps.push((first, last));
    }
    Ok(Gaps(gaps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_catches_damage() {
        let gaps = Gaps(vec![(5, 9), (20, 20)]);
        let text = gaps.render();
        assert_eq!(parse(text.as_bytes()), Ok(gaps.clone()));
        assert!(gaps.bridges(5, 10) && gaps.bridges(20, 21));
        assert!(!gaps.bridges(5, 9) && !gaps.bridges(6, 10) && !gaps.bridges(19, 21));
        assert_eq!(
            parse(Gaps::default().render().as_bytes()),
            Ok(Gaps::default())
        );
        for at in 0..text.len() {
            let mut bad = text.clone().into_bytes();
            bad[at] ^= 0x01;
            assert!(parse(&bad).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn pruning_keeps_what_a_segment_or_the_snapshot_still_needs() {
        let mut gaps = Gaps(vec![(5, 9), (20, 20)]);
        // Not yet in the snapshot, or a segment from before the gap is still there.
        assert!(!gaps.prune(8, Some(1)));
        assert!(!gaps.prune(30, Some(9)));
        assert!(gaps.prune(9, Some(10)));
        assert_eq!(gaps.0, [(20, 20)]);
        assert!(gaps.prune(100, None));
        assert!(gaps.0.is_empty());
    }
}
