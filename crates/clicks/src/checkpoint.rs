//! Day summaries: the aggregates on disk, so raw click logs can go long before the statistics
//! they fed, and a restart does not need them.
//!
//! ```text
//! clicks/days/20261125.tsv
//! # duanlian day summary 1⇥clicks-20261125-003.tsv⇥48211
//! L⇥go.example.cn⇥x7Kp2Qa⇥120⇥31⇥2⇥7          (counts: mobile, desktop, other, bot)
//! R⇥weibo.com⇥88                               (a referrer of the link above)
//! ```
//!
//! The header names the raw-log position the summary includes every click before: at start a
//! day's summary is loaded and only raw clicks past that position are added to it. The writer
//! rewrites the summaries of the days that got clicks since its last checkpoint (each file with
//! temp file, fsync, rename), so after a checkpoint at position P every raw file closed before P
//! is needed by nothing and may be deleted.
use crate::log::Position;
use crate::{ClickError, Stats};
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

const HEADER: &str = "# duanlian day summary 1";
const DAY: i64 = 86_400;

fn days_dir(dir: &Path) -> PathBuf {
    dir.join("days")
}

fn day_of(name: &str) -> Option<i64> {
    let stamp = name.strip_suffix(".tsv")?;
    if stamp.len() != 8 {
        return None;
    }
    let date = format!("{}-{}-{}", &stamp[..4], &stamp[4..6], &stamp[6..8]);
    duanlian_link::parse_rfc3339(&date).map(|t| t.div_euclid(DAY))
}

/// Writes the summaries of `days`, each including every click before `at`.
#[cfg(test)]
pub(crate) fn write(
    dir: &Path,
    stats: &Stats,
    days: &BTreeSet<i64>,
    at: &Position,
) -> Result<(), ClickError> {
    let mut pass = Pass::new(at.clone(), days.clone());
    while !pass.step(dir, stats, None, true)? {}
    Ok(())
}

/// A checkpoint under way: the summaries of `days` as of `at`, built a shard at a time, then
/// written to disk on a thread of their own. A day of a million links is a quarter of a second
/// of formatting, and its file's fsync can take longer than the click slots hold: in one go
/// on the writer thread the first would hold a core that redirects share, the second would
/// drop clicks. While a pass is building, the writer counts no new click (it holds them back),
/// so every summary is the aggregates as of `at`, exactly.
pub(crate) struct Pass {
    at: Position,
    days: BTreeSet<i64>,
    /// The last day started.
    last: Option<i64>,
    /// The day being built and its next shard.
    current: Option<(i64, usize)>,
    /// The day's text so far, in pieces of about [`PIECE`] bytes: one buffer doubling to tens
    /// of megabytes would copy itself for milliseconds at a time.
    text: Vec<Vec<u8>>,
    /// The days built.
    built: Vec<(i64, Vec<Vec<u8>>)>,
    /// Writing the built days, once all are.
    writing: Option<std::thread::JoinHandle<Result<(), ClickError>>>,
}

impl Pass {
    pub(crate) fn new(at: Position, days: BTreeSet<i64>) -> Pass {
        Pass {
            at,
            days,
            last: None,
            current: None,
            text: Vec::new(),
            built: Vec::new(),
            writing: None,
        }
    }

    /// The days this pass summarises, and the position it summarises them as of.
    pub(crate) fn into_parts(self) -> (BTreeSet<i64>, Position) {
        (self.days, self.at)
    }

    /// Whether the summaries are still being built from the aggregates (which must then not
    /// change).
    pub(crate) fn building(&self) -> bool {
        self.writing.is_none()
    }

    /// Builds shards until `deadline` if any; once all are built, has them written. Whether
    /// the pass is done: `wait` waits for the files.
    pub(crate) fn step(
        &mut self,
        dir: &Path,
        stats: &Stats,
        deadline: Option<std::time::Instant>,
        wait: bool,
    ) -> Result<bool, ClickError> {
        if let Some(writing) = self.writing.take() {
            if !wait && !writing.is_finished() {
                self.writing = Some(writing);
                return Ok(false);
            }
            return writing
                .join()
                .unwrap_or_else(|_| Err(ClickError::io(dir, std::io::Error::other("panicked"))))
                .map(|()| true);
        }
        use std::ops::Bound::{Excluded, Unbounded};
        loop {
            let (day, part) = match self.current {
                Some(c) => c,
                None => {
                    let next = match self.last {
                        None => self.days.iter().next(),
                        Some(last) => self.days.range((Excluded(last), Unbounded)).next(),
                    };
                    let Some(&day) = next else {
                        break;
                    };
                    self.last = Some(day);
                    let mut first = piece();
                    // Writing into a Vec cannot fail.
                    let _ = writeln!(first, "{HEADER}\t{}\t{}", self.at.0, self.at.1);
                    self.text = vec![first];
                    (day, 0)
                }
            };
            if part == crate::stats::SHARDS {
                self.built.push((day, std::mem::take(&mut self.text)));
                self.current = None;
                continue;
            }
            self.current = Some((day, part));
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Ok(false);
            }
            if self.text.last().is_none_or(|piece| piece.len() >= PIECE) {
                self.text.push(piece());
            }
            if let Some(piece) = self.text.last_mut() {
                stats.write_day_part(day, part, piece);
            }
            self.current = Some((day, part + 1));
        }
        let built = std::sync::Arc::new(std::mem::take(&mut self.built));
        let write = {
            let (dir, built) = (dir.to_path_buf(), built.clone());
            move || write_files(&dir, &built)
        };
        match std::thread::Builder::new()
            .name("duanlian-days".into())
            .spawn(write)
        {
            Ok(handle) => self.writing = Some(handle),
            // No thread: written here.
            Err(_) => return write_files(dir, &built).map(|()| true),
        }
        if wait {
            return self.step(dir, stats, None, wait);
        }
        Ok(false)
    }
}

/// Bytes of day-summary text built and written at a time.
const PIECE: usize = 1 << 20;

/// An empty piece, with room for the shard that takes it past [`PIECE`].
fn piece() -> Vec<u8> {
    Vec::with_capacity(PIECE + (PIECE >> 3))
}

/// The built days' files, then their folder, durably.
fn write_files(dir: &Path, built: &[(i64, Vec<Vec<u8>>)]) -> Result<(), ClickError> {
    for (day, text) in built {
        write_file(dir, *day, text)?;
    }
    let folder = days_dir(dir);
    fs::create_dir_all(&folder)
        .and_then(|()| File::open(&folder))
        .and_then(|d| d.sync_all())
        .map_err(|e| ClickError::io(&folder, e))
}

/// One day's summary, whole: temporary file, fsync, rename. A piece at a time, making way for
/// other threads between them: copying tens of megabytes into the page cache at once would
/// hold a core that redirects share for milliseconds.
fn write_file(dir: &Path, day: i64, text: &[Vec<u8>]) -> Result<(), ClickError> {
    let folder = days_dir(dir);
    fs::create_dir_all(&folder).map_err(|e| ClickError::io(&folder, e))?;
    let stamp = duanlian_link::format_date(day * DAY).replace('-', "");
    let path = folder.join(format!("{stamp}.tsv"));
    let tmp = folder.join(format!("{stamp}.tsv.tmp"));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        for piece in text {
            f.write_all(piece)?;
            std::thread::yield_now();
        }
        f.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(ClickError::io(&path, e));
    }
    Ok(())
}

/// Loads every summary of a day at or after `first_day` into `stats` and deletes older ones;
/// returns each loaded day's position. A damaged summary is skipped with a warning: its day is
/// then rebuilt from whatever raw log is left.
pub(crate) fn load(
    dir: &Path,
    stats: &Stats,
    first_day: i64,
) -> Result<HashMap<i64, Position>, ClickError> {
    let folder = days_dir(dir);
    let mut loaded = HashMap::new();
    let entries = match fs::read_dir(&folder) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(loaded),
        Err(e) => return Err(ClickError::io(&folder, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| ClickError::io(&folder, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.ends_with(".tmp") {
            let _ = fs::remove_file(&path);
            continue;
        }
        let Some(day) = day_of(&name) else {
            continue;
        };
        if day < first_day {
            fs::remove_file(&path).map_err(|e| ClickError::io(&path, e))?;
            continue;
        }
        let text = fs::read_to_string(&path).map_err(|e| ClickError::io(&path, e))?;
        let (header, body) = text.split_once('\n').unwrap_or((&text, ""));
        let position = match header.split('\t').collect::<Vec<_>>().as_slice() {
            [HEADER, file, offset] => offset.parse().ok().map(|o| ((*file).to_owned(), o)),
            _ => None,
        };
        // Checked before anything is added, so a bad file adds nothing.
        let scratch = Stats::default();
        match (position, scratch.add_day(day, body)) {
            (Some(position), Ok(())) => {
                // Cannot fail: the same text just parsed.
                let _ = stats.add_day(day, body);
                loaded.insert(day, position);
            }
            (_, Err(line)) => {
                tracing::warn!(file = %path.display(), line = line + 1, "damaged day summary skipped")
            }
            (None, _) => {
                tracing::warn!(file = %path.display(), "day summary without a position skipped")
            }
        }
    }
    Ok(loaded)
}

/// Deletes the summaries of days before `first_day`.
pub(crate) fn remove_before(dir: &Path, first_day: i64) -> Result<usize, ClickError> {
    let folder = days_dir(dir);
    let entries = match fs::read_dir(&folder) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(ClickError::io(&folder, e)),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if day_of(&name).is_some_and(|d| d < first_day) {
            fs::remove_file(entry.path()).map_err(|e| ClickError::io(&entry.path(), e))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Bytes the summaries take.
pub(crate) fn bytes(dir: &Path) -> u64 {
    fs::read_dir(days_dir(dir))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Click, Device};

    #[test]
    fn summaries_round_trip_and_damage_is_skipped() {
        let dir = std::env::temp_dir().join(format!("dl-days-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ip = "192.0.2.1".parse().expect("ip");
        let s = Stats::default();
        let d0 = 20_000;
        s.add(&[
            Click::new(
                d0 * DAY + 1,
                "go.example.cn",
                "a",
                Some(b"https://weibo.com/x"),
                Device::Mobile,
                ip,
            ),
            Click::new(d0 * DAY + 2, "go.example.cn", "a", None, Device::Bot, ip),
            Click::new(
                (d0 + 1) * DAY,
                "go.example.cn",
                "b",
                None,
                Device::Desktop,
                ip,
            ),
        ]);
        let at = ("clicks-x.tsv".to_owned(), 77);
        write(&dir, &s, &BTreeSet::from([d0, d0 + 1]), &at).expect("write");
        let back = Stats::default();
        let loaded = load(&dir, &back, 0).expect("load");
        assert_eq!(loaded.get(&d0), Some(&at));
        for (code, day) in [("a", d0), ("b", d0 + 1)] {
            assert_eq!(
                back.report("go.example.cn", code, day, day, 5),
                s.report("go.example.cn", code, day, day, 5)
            );
        }
        fs::write(
            days_dir(&dir).join("20240101.tsv"),
            format!("{HEADER}\tf\t1\nL\tbroken\n"),
        )
        .expect("write");
        let again = Stats::default();
        assert_eq!(load(&dir, &again, 0).expect("load").len(), 2);
        // Older than the first day kept: deleted.
        assert_eq!(
            load(&dir, &Stats::default(), d0 + 1).expect("load").len(),
            1
        );
        assert!(!days_dir(&dir).join("20240101.tsv").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
