//! Finding and getting past damage in the middle of the journal: [`check`] and [`salvage`].
//!
//! Opening refuses a journal that is damaged anywhere but its very end, since a damaged record
//! may be an acknowledged write. `check` says exactly what is damaged, without changing
//! anything; `salvage` writes a new journal of the records that are intact and swaps it in,
//! keeping the original directory and copying the damaged bytes into the quarantine.
//!
//! Finding the records after damage: from the first damaged byte, every later byte position is
//! tried as the start of a record. A position counts only if its header checksum holds, its
//! whole payload is there and its payload checksum holds, the payload decodes, and its sequence
//! number is one the damaged bytes could have been followed by: at least the next expected,
//! below the first of the next segment, and no further ahead than the number of records the
//! damaged bytes had room for. Two independent CRC32Cs make a chance match about one in 2^64
//! per position. A record forged inside a link's text cannot be found either: every length
//! field has a top byte of at most 4, a control byte no normal-form URL, domain or code holds.
use crate::codec;
use crate::error::{io_err, JournalError};
use crate::files::{fsync_dir, parent, sibling, unused, SALVAGED_SUFFIX};
use crate::gaps::Gaps;
use crate::quarantine;
use crate::range::SeqRange;
use crate::segment::{
    finish_salvage, header_at, list, segment_name, HeaderAt, MAGIC, MAX_PAYLOAD, MIN_RECORD,
    RECORD_HEADER,
};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where a salvage writes the new journal: `<journal dir>.salvage-tmp`.
pub(crate) const TMP_SUFFIX: &str = ".salvage-tmp";
/// Where the original journal goes: `<journal dir>.damaged-<unix time>`.
const DAMAGED_SUFFIX: &str = ".damaged-";

/// One damaged region of a segment file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment file (or the gap list).
    pub path: PathBuf,
    /// Where the damage starts in it.
    pub offset: u64,
    /// How many bytes it covers: up to the next intact record, or the end of the file. Zero
    /// where records are missing without damaged bytes (a sequence number jump, or a segment
    /// file that is gone).
    pub len: u64,
    /// The sequence numbers it must have held, from the intact records around it; `None`
    /// where it held no record (a damaged segment header, say).
    pub seqs: Option<SeqRange>,
    /// What is wrong at `offset`.
    pub reason: String,
}

impl fmt::Display for Damage {
    /// `FILE: offset N (L bytes): seq A..=B: reason`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: offset {} ({} bytes): seq ",
            self.path.display(),
            self.offset,
            self.len
        )?;
        match &self.seqs {
            Some(r) => write!(f, "{r}")?,
            None => f.write_str("none")?,
        }
        write!(f, ": {}", self.reason)
    }
}

/// A write cut short at the very end of the journal: never acknowledged, and cut off by the
/// next open. Not damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The last segment file.
    pub path: PathBuf,
    /// Where the torn write starts.
    pub offset: u64,
    /// Its length, to the end of the file.
    pub len: u64,
    /// What it looks like.
    pub reason: String,
}

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The journal directory.
    pub dir: PathBuf,
    /// The sequence number the snapshot includes, as passed in.
    pub after: u64,
    /// Segment files.
    pub segments: usize,
    /// Intact records (including those at or below `after`).
    pub records: u64,
    /// Sequence number of the first intact record.
    pub first_seq: Option<u64>,
    /// Sequence number of the last intact record.
    pub last_seq: Option<u64>,
    /// Every damaged region, in journal order.
    pub damage: Vec<Damage>,
    /// Breaks in the sequence that the gap list of an earlier salvage accounts for.
    pub accepted_gaps: Vec<SeqRange>,
    /// A torn write at the end, which opening cuts off.
    pub torn_tail: Option<TornTail>,
}

impl CheckReport {
    /// Whether nothing is damaged (a torn tail is not damage: it was never acknowledged).
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }

    /// The damaged sequence numbers past the snapshot, in order: the writes that are lost
    /// unless recovered from the quarantine by hand. Damage at or below `after` loses nothing,
    /// the snapshot has those records, but still keeps the journal from opening.
    pub fn lost(&self) -> Vec<SeqRange> {
        let mut lost: Vec<SeqRange> = self
            .damage
            .iter()
            .filter_map(|d| d.seqs?.above(self.after))
            .collect();
        lost.sort_by_key(|r| r.first);
        lost
    }
}

/// How [`salvage`] treats the records after damage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SalvageMode {
    /// Keep the records up to the first lost sequence number and drop every record after it,
    /// intact or not: the journal is a consistent prefix, as if the node had stopped at that
    /// point. For when later writes depend on earlier ones (a delete or update of a link
    /// created in the lost range). Damage that loses no record (a segment header) or only
    /// records the snapshot has does not count as a stop.
    PointInTime,
    /// Keep every intact record and skip the damaged ones, listing their sequence numbers as
    /// gaps the journal accepts. Loses the least; each link write stands on its own, so this
    /// is the usual choice.
    SkipDamaged,
}

impl fmt::Display for SalvageMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SalvageMode::PointInTime => "point-in-time",
            SalvageMode::SkipDamaged => "skip-damaged",
        })
    }
}

/// What [`salvage`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalvageReport {
    /// The mode it ran in.
    pub mode: SalvageMode,
    /// What the check before it found.
    pub check: CheckReport,
    /// Records in the salvaged journal (those after the snapshot).
    pub kept: u64,
    /// The first of them.
    pub first_kept: Option<u64>,
    /// The last of them.
    pub last_kept: Option<u64>,
    /// Sequence numbers past the snapshot that were damaged: skipped in both modes.
    pub lost: Vec<SeqRange>,
    /// Intact records past the snapshot left out because they came after the first loss
    /// ([`SalvageMode::PointInTime`] only). They are still in the original directory.
    pub dropped: Vec<SeqRange>,
    /// The breaks the salvaged journal's gap list names, which opening accepts.
    pub gaps: Vec<SeqRange>,
    /// The sequence number the next write gets.
    pub next_seq: u64,
    /// Where the original journal directory was moved, untouched; `None` when there was no
    /// damage and nothing was done.
    pub original: Option<PathBuf>,
    /// The quarantine files holding the damaged bytes.
    pub quarantined: Vec<PathBuf>,
}

/// Reads every segment in `dir` and reports every damaged region, without changing anything.
/// `after` is the sequence number the snapshot includes: it tells damage that loses writes
/// from damage that only keeps the journal from opening. Nothing must be writing the journal.
pub fn check(dir: &Path, after: u64) -> Result<CheckReport, JournalError> {
    walk(dir, after, &mut |_, _, _| Ok(()))
}

/// Replaces a damaged journal in `dir` with one made of its intact records after `after` (the
/// snapshot's sequence number), as `mode` says.
///
/// The original is never modified: the new journal is written and synced in
/// `<dir>.salvage-tmp`, checked, renamed to `<dir>.salvaged`, and then the original is renamed
/// to `<dir>.damaged-<unix time>` and the new one to `dir`, each step synced in the parent
/// directory. [`Journal::open`](crate::Journal::open) finishes a swap a crash interrupted.
/// Damaged bytes are copied into [`quarantine_dir`](crate::quarantine_dir) first. A journal
/// without damage is left alone (the report's `original` is `None`).
///
/// Sequence numbers go on after the last record kept, so numbers lost at the very end (and
/// those dropped by [`SalvageMode::PointInTime`]) are given to new writes.
///
/// Nothing must have the journal open: the caller holds the data directory's lock.
pub fn salvage(dir: &Path, after: u64, mode: SalvageMode) -> Result<SalvageReport, JournalError> {
    finish_salvage(dir)?;
    let ready = sibling(dir, SALVAGED_SUFFIX);
    if ready.is_dir() {
        // A salvage that stopped before moving the original aside: the original is in place
        // and untouched, this copy of ours was never used.
        fs::remove_dir_all(&ready).map_err(io_err(&ready))?;
    }
    let found = check(dir, after)?;
    let lost = found.lost();
    let mut report = SalvageReport {
        mode,
        check: found.clone(),
        kept: 0,
        first_kept: None,
        last_kept: None,
        lost: lost.clone(),
        dropped: Vec::new(),
        gaps: Vec::new(),
        next_seq: found.last_seq.map_or(after, |l| l.max(after)) + 1,
        original: None,
        quarantined: Vec::new(),
    };
    if found.is_clean() {
        return Ok(report);
    }
    let stop = match mode {
        SalvageMode::PointInTime => lost.first().map_or(u64::MAX, |r| r.first),
        SalvageMode::SkipDamaged => u64::MAX,
    };

    let tmp = sibling(dir, TMP_SUFFIX);
    if fs::symlink_metadata(&tmp).is_ok() {
        fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let written = (|| {
        let mut out = Output::new(&tmp, after, stop);
        let again = walk(dir, after, &mut |seq, frame, segment| {
            out.record(seq, frame, segment)
        })?;
        out.flush()?;
        if again.damage != found.damage {
            return Err(salvage_err(
                dir,
                "the journal changed while it was read; is a server still running?".into(),
            ));
        }
        Gaps(out.gaps.clone()).store(&tmp)?;
        fsync_dir(&tmp)?;
        let verified = check(&tmp, after)?;
        let kept_in_new = verified.records;
        if !verified.is_clean() || verified.torn_tail.is_some() || kept_in_new != out.kept {
            return Err(salvage_err(
                dir,
                format!(
                    "the salvaged journal in {} did not check clean ({} records of {}, {} damaged regions)",
                    tmp.display(),
                    kept_in_new,
                    out.kept,
                    verified.damage.len()
                ),
            ));
        }
        Ok(out)
    })();
    let out = match written {
        Ok(out) => out,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };

    let kept_aside = (|| {
        let mut files = Vec::new();
        for d in found.damage.iter().filter(|d| d.len > 0) {
            let bytes = read_range(&d.path, d.offset, d.len)?;
            files.push(quarantine::put(
                dir,
                &quarantine::Entry {
                    source: &d.path,
                    offset: d.offset,
                    bytes: &bytes,
                    seqs: d.seqs,
                    reason: &d.reason,
                },
            )?);
        }
        Ok(files)
    })();
    report.quarantined = match kept_aside {
        Ok(files) => files,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };

    let up = parent(dir);
    fs::rename(&tmp, &ready).map_err(io_err(&ready))?;
    fsync_dir(&up)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = unused(&sibling(dir, &format!("{DAMAGED_SUFFIX}{now}")));
    fs::rename(dir, &aside).map_err(io_err(&aside))?;
    fs::rename(&ready, dir).map_err(io_err(dir))?;
    fsync_dir(&up)?;

    report.kept = out.kept;
    report.first_kept = out.first_kept;
    report.last_kept = out.last_kept;
    report.dropped = out.dropped;
    report.gaps = out.gaps.iter().map(|&(f, l)| SeqRange::new(f, l)).collect();
    report.next_seq = out.prev + 1;
    tracing::warn!(
        dir = %dir.display(),
        mode = %mode,
        kept = report.kept,
        lost = %ranges(&report.lost),
        dropped = %ranges(&report.dropped),
        original = %aside.display(),
        "journal: salvaged"
    );
    report.original = Some(aside);
    Ok(report)
}

/// `a..=b, c..=d` for logs.
fn ranges(r: &[SeqRange]) -> String {
    r.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn salvage_err(dir: &Path, reason: String) -> JournalError {
    JournalError::Salvage {
        path: dir.to_path_buf(),
        reason,
    }
}

fn read_range(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>, JournalError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    f.seek(SeekFrom::Start(offset)).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    f.take(len).read_to_end(&mut bytes).map_err(io_err(path))?;
    Ok(bytes)
}

/// The salvaged journal being written: one segment per run of consecutive sequence numbers
/// within one original segment, so segments never grow past the originals and every break in
/// the sequence falls at a segment's start.
struct Output<'a> {
    dir: &'a Path,
    after: u64,
    stop: u64,
    /// First sequence number, original segment, and bytes of the segment being filled.
    current: Option<(u64, usize, Vec<u8>)>,
    /// The last sequence number kept (starting at `after`).
    prev: u64,
    kept: u64,
    first_kept: Option<u64>,
    last_kept: Option<u64>,
    gaps: Vec<(u64, u64)>,
    dropped: Vec<SeqRange>,
}

impl<'a> Output<'a> {
    fn new(dir: &'a Path, after: u64, stop: u64) -> Output<'a> {
        Output {
            dir,
            after,
            stop,
            current: None,
            prev: after,
            kept: 0,
            first_kept: None,
            last_kept: None,
            gaps: Vec::new(),
            dropped: Vec::new(),
        }
    }

    fn record(&mut self, seq: u64, frame: &[u8], segment: usize) -> Result<(), JournalError> {
        if seq <= self.after {
            return Ok(());
        }
        if seq >= self.stop {
            match self.dropped.last_mut() {
                Some(r) if r.last == Some(seq - 1) => r.last = Some(seq),
                _ => self.dropped.push(SeqRange::one(seq)),
            }
            return Ok(());
        }
        let jump = seq != self.prev + 1;
        if jump {
            self.gaps.push((self.prev + 1, seq - 1));
        }
        if jump || self.current.as_ref().is_none_or(|c| c.1 != segment) {
            self.flush()?;
            self.current = Some((seq, segment, MAGIC.to_vec()));
        }
        if let Some((_, _, bytes)) = &mut self.current {
            bytes.extend_from_slice(frame);
        }
        self.prev = seq;
        self.kept += 1;
        self.first_kept.get_or_insert(seq);
        self.last_kept = Some(seq);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), JournalError> {
        let Some((first, _, bytes)) = self.current.take() else {
            return Ok(());
        };
        let path = self.dir.join(segment_name(first));
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.write_all(&bytes).map_err(io_err(&path))?;
        f.sync_all().map_err(io_err(&path))
    }
}

type OnRecord<'a> = dyn FnMut(u64, &[u8], usize) -> Result<(), JournalError> + 'a;

/// Reads the whole journal, calling `on(seq, record bytes, segment index)` for each intact
/// record in order, and reports the rest.
fn walk(dir: &Path, after: u64, on: &mut OnRecord<'_>) -> Result<CheckReport, JournalError> {
    if fs::symlink_metadata(dir).is_err() {
        let ready = sibling(dir, SALVAGED_SUFFIX);
        if ready.is_dir() {
            return Err(salvage_err(
                dir,
                format!(
                    "an interrupted salvage left the new journal in {}: opening the journal (starting the server) or salvaging again moves it into place",
                    ready.display()
                ),
            ));
        }
    }
    let segments = list(dir)?;
    let mut report = CheckReport {
        dir: dir.to_path_buf(),
        after,
        segments: segments.len(),
        records: 0,
        first_seq: None,
        last_seq: None,
        damage: Vec::new(),
        accepted_gaps: Vec::new(),
        torn_tail: None,
    };
    let gaps = match Gaps::load(dir) {
        Ok(g) => g,
        // Then no break is accepted: each shows up as missing records, which a salvage
        // lists afresh.
        Err(JournalError::GapList { path, reason }) => {
            let len = fs::metadata(&path).map_or(0, |m| m.len());
            report.damage.push(Damage {
                path,
                offset: 0,
                len,
                seqs: None,
                reason: format!("damaged gap list: {reason}"),
            });
            Gaps::default()
        }
        Err(e) => return Err(e),
    };
    let mut w = Walker {
        after,
        gaps: &gaps,
        expect: segments.first().map_or(after.saturating_add(1), |s| {
            s.0.min(after.saturating_add(1))
        }),
        pending: None,
        report,
        on,
    };
    for (i, (first, path)) in segments.iter().enumerate() {
        let bytes = fs::read(path).map_err(io_err(path))?;
        let next_first = segments.get(i + 1).map(|s| s.0);
        w.segment_start(i, *first, path);
        w.segment(i, path, &bytes, next_first)?;
    }
    if let Some(d) = w.pending.take() {
        w.report.damage.push(d);
    }
    Ok(w.report)
}

/// Whether `seq` may be in a segment followed by one starting at `next_first`. The largest
/// number is never real (sequence numbers count writes), and taking it would leave no next one.
fn below(seq: u64, next_first: Option<u64>) -> bool {
    seq < next_first.unwrap_or(u64::MAX)
}

/// What became of a record whose header holds.
enum Taken {
    /// Taken, intact or damaged in its place; the next record starts here.
    Through(usize),
    /// A torn write at the end of the journal.
    Torn(&'static str),
    /// Out of place: damage, with the next record to be looked for from `from`.
    Misplaced { from: usize, reason: String },
}

struct Walker<'a, 'b> {
    after: u64,
    gaps: &'a Gaps,
    /// The sequence number the next intact record should have.
    expect: u64,
    /// Damage that ran to the end of a segment: how many records it held is known once the
    /// next segment's first sequence number is.
    pending: Option<Damage>,
    report: CheckReport,
    on: &'a mut OnRecord<'b>,
}

impl Walker<'_, '_> {
    /// Sequence numbers `from..to` (none when `to <= from`).
    fn between(from: u64, to: u64) -> Option<SeqRange> {
        (to > from).then(|| SeqRange::new(from, to - 1))
    }

    fn damage(
        &mut self,
        path: &Path,
        offset: usize,
        len: usize,
        seqs: Option<SeqRange>,
        reason: String,
    ) {
        self.report.damage.push(Damage {
            path: path.to_path_buf(),
            offset: offset as u64,
            len: len as u64,
            seqs,
            reason,
        });
    }

    fn torn(&mut self, path: &Path, offset: usize, len: usize, reason: &str) {
        self.report.torn_tail = Some(TornTail {
            path: path.to_path_buf(),
            offset: offset as u64,
            len: len as u64,
            reason: reason.to_owned(),
        });
    }

    /// Damage from `offset` to the end of the segment.
    fn run_to_end(&mut self, path: &Path, bytes: &[u8], offset: usize, reason: String) {
        self.pending = Some(Damage {
            path: path.to_path_buf(),
            offset: offset as u64,
            len: (bytes.len() - offset) as u64,
            seqs: Some(SeqRange {
                first: self.expect,
                last: None,
            }),
            reason,
        });
    }

    /// Records damage starting at `offset` up to the next intact record found from `from`
    /// on, and returns where that record is; `None` when the damage runs to the end of the
    /// segment.
    fn skip(
        &mut self,
        path: &Path,
        bytes: &[u8],
        offset: usize,
        from: usize,
        next_first: Option<u64>,
        reason: String,
    ) -> Option<usize> {
        match self.resync(bytes, from, offset, next_first) {
            Some((at, seq)) => {
                let seqs = Self::between(self.expect, seq);
                self.damage(path, offset, at - offset, seqs, reason);
                self.expect = seq;
                Some(at)
            }
            None => {
                self.run_to_end(path, bytes, offset, reason);
                None
            }
        }
    }

    /// The first position at or after `from` holding a whole, valid record whose sequence
    /// number can follow damage that started at `damaged_from`.
    fn resync(
        &self,
        bytes: &[u8],
        from: usize,
        damaged_from: usize,
        next_first: Option<u64>,
    ) -> Option<(usize, u64)> {
        let listed = self.gaps.numbers_from(self.expect);
        for at in from..bytes.len() {
            let h = match header_at(&bytes[at..]) {
                HeaderAt::Valid(h) => h,
                HeaderAt::BadChecksum => continue,
                HeaderAt::Short => return None,
            };
            // The damaged bytes cannot have held more records than fit in them.
            let room = ((at - damaged_from) / MIN_RECORD) as u64;
            let most = self.expect.saturating_add(room).saturating_add(listed);
            if h.len > MAX_PAYLOAD
                || h.seq < self.expect
                || h.seq > most
                || !below(h.seq, next_first)
            {
                continue;
            }
            let end = at + RECORD_HEADER + h.len;
            let Some(payload) = bytes.get(at + RECORD_HEADER..end) else {
                continue;
            };
            if crc32c::crc32c(payload) == h.payload_crc && codec::decode(payload).is_ok() {
                return Some((at, h.seq));
            }
        }
        None
    }

    fn segment_start(&mut self, i: usize, first: u64, path: &Path) {
        if let Some(mut d) = self.pending.take() {
            d.seqs = Self::between(self.expect, first);
            self.report.damage.push(d);
            self.expect = self.expect.max(first);
            return;
        }
        if first < self.expect {
            // Overlaps the segment before; any records of it also show up as damage, as
            // sequence numbers going back.
            let reason = format!(
                "segment starts at sequence {first}, but the segment before ends at {}",
                self.expect - 1
            );
            self.damage(path, 0, 0, None, reason);
            return;
        }
        if first == self.expect {
            return;
        }
        let from = self.expect.max(self.after.saturating_add(1));
        if first <= self.after.saturating_add(1) {
            // Skipped records are in the snapshot (a compaction stopped before removing them).
        } else if self.gaps.bridges(from, first) {
            self.report
                .accepted_gaps
                .push(SeqRange::new(from, first - 1));
        } else {
            let reason = if i == 0 {
                format!(
                    "the journal starts at sequence {first}, but the snapshot ends at {}: records are missing",
                    self.after
                )
            } else {
                format!(
                    "records are missing: the segment before ends at sequence {}, this one starts at {first}",
                    self.expect.saturating_sub(1)
                )
            };
            let seqs = Self::between(self.expect, first);
            self.damage(path, 0, 0, seqs, reason);
        }
        self.expect = first;
    }

    fn segment(
        &mut self,
        index: usize,
        path: &Path,
        bytes: &[u8],
        next_first: Option<u64>,
    ) -> Result<(), JournalError> {
        let is_last = next_first.is_none();
        if bytes.len() < MAGIC.len() {
            if is_last && MAGIC.starts_with(bytes) {
                self.torn(path, 0, bytes.len(), "incomplete segment header");
            } else {
                self.run_to_end(path, bytes, 0, "shorter than the segment header".into());
            }
            return Ok(());
        }
        let mut off = MAGIC.len();
        if &bytes[..MAGIC.len()] != MAGIC {
            let reason = "bad magic: not a duanlian journal segment".to_owned();
            match self.skip(path, bytes, 0, 1, next_first, reason) {
                Some(at) => off = at,
                None => return Ok(()),
            }
        }
        while off < bytes.len() {
            let rest = &bytes[off..];
            // Where to look for the next record when this one is damaged, and why.
            let (from, reason) = match header_at(rest) {
                HeaderAt::Short if is_last => {
                    self.torn(path, off, rest.len(), "record header cut short");
                    return Ok(());
                }
                HeaderAt::Short => {
                    self.run_to_end(path, bytes, off, "record header cut short".into());
                    return Ok(());
                }
                // Preallocated or delayed-allocation tails read back as zeros after a crash.
                HeaderAt::BadChecksum if is_last && rest.iter().all(|&b| b == 0) => {
                    self.torn(path, off, rest.len(), "zero-filled tail");
                    return Ok(());
                }
                HeaderAt::BadChecksum => (off + 1, "record header checksum mismatch".into()),
                HeaderAt::Valid(h) if h.len > MAX_PAYLOAD => (
                    off + 1,
                    format!("record length {} is over the limit", h.len),
                ),
                HeaderAt::Valid(h) => match self.record(index, path, bytes, off, h, next_first)? {
                    Taken::Through(end) => {
                        off = end;
                        continue;
                    }
                    Taken::Torn(reason) => {
                        self.torn(path, off, rest.len(), reason);
                        return Ok(());
                    }
                    Taken::Misplaced { from, reason } => (from, reason),
                },
            };
            match self.skip(path, bytes, off, from, next_first, reason) {
                Some(at) => off = at,
                None => return Ok(()),
            }
        }
        Ok(())
    }

    /// A record whose header holds (and whose length is within the limit). Decides in the
    /// order opening does, so that `check` calls clean exactly what opening accepts.
    fn record(
        &mut self,
        index: usize,
        path: &Path,
        bytes: &[u8],
        off: usize,
        h: crate::segment::Header,
        next_first: Option<u64>,
    ) -> Result<Taken, JournalError> {
        let end = off + RECORD_HEADER + h.len;
        let fault = match bytes.get(off + RECORD_HEADER..end) {
            None => Some("record payload cut short".to_owned()),
            Some(payload) if crc32c::crc32c(payload) != h.payload_crc => {
                Some("record payload checksum mismatch".to_owned())
            }
            Some(payload) => codec::decode(payload).err(),
        };
        if h.seq < self.expect || !below(h.seq, next_first) {
            // A frame that holds together but is out of place: look past it when it is
            // whole, otherwise at every byte after its start.
            let from = if fault.is_none() { end } else { off + 1 };
            let reason = format!("sequence {}, expected {}", h.seq, self.expect);
            return Ok(Taken::Misplaced { from, reason });
        }
        let bridged = h.seq > self.expect && self.gaps.bridges(self.expect, h.seq);
        if end > bytes.len() {
            // A write cut short by a crash, if it is the next record at the very end; opening
            // refuses any other number there.
            if next_first.is_none() && (h.seq == self.expect || bridged) {
                return Ok(Taken::Torn("record payload cut short"));
            }
            return Ok(Taken::Misplaced {
                from: off + 1,
                reason: "record payload cut short".into(),
            });
        }
        if bridged {
            self.report
                .accepted_gaps
                .push(SeqRange::new(self.expect, h.seq - 1));
            self.expect = h.seq;
        }
        match fault {
            // The header holds, so this record's place and number are known: the damage is
            // exactly this record (and any numbers it jumped over).
            Some(reason) => {
                let seqs = SeqRange::new(self.expect, h.seq);
                self.damage(path, off, end - off, Some(seqs), reason);
            }
            None => {
                if h.seq > self.expect {
                    let reason = format!(
                        "records are missing: sequence {} follows {}",
                        h.seq,
                        self.expect.saturating_sub(1)
                    );
                    let seqs = Self::between(self.expect, h.seq);
                    self.damage(path, off, 0, seqs, reason);
                }
                (self.on)(h.seq, &bytes[off..end], index)?;
                self.report.records += 1;
                self.report.first_seq.get_or_insert(h.seq);
                self.report.last_seq = Some(h.seq);
            }
        }
        self.expect = h.seq + 1;
        Ok(Taken::Through(end))
    }
}
