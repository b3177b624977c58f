//! Segment files and record framing.
//!
//! A segment is `{first_seq:020}.log`: an 8-byte magic, then records back to back:
//!
//! ```text
//! offset size field
//!      0    4 payload_len   u32 LE
//!      4    8 seq           u64 LE, exactly one more than the record before
//!     12    4 header_crc    CRC32C of bytes 0..12
//!     16    4 payload_crc   CRC32C of the payload
//!     20    … payload       see codec.rs
//! ```
//!
//! Recovery: a crash can only damage the end of the last segment, where a group write was cut
//! short. So damage that reaches the end of the last segment (a header or payload cut short, a
//! zero-filled tail) is a torn write: it is cut off with a log line. A final record that is all
//! there (a valid header and every payload byte) but fails its payload checksum is not torn:
//! it was written whole and then damaged, so it may have been acknowledged. It is cut off too,
//! so the node comes up, but only after its bytes are copied into the quarantine
//! (`crate::quarantine`), and it is logged as an error with its sequence number.
//! Damage anywhere else — a bad header checksum with data behind it, a bad payload followed by
//! more records, a gap in the sequence that the gap list (`crate::gaps`) does not name — is
//! corruption, and opening refuses with file and offset; `check` and `salvage` take it from
//! there.
use crate::codec;
use crate::error::{io_err, JournalError};
use crate::files::{fsync_dir, parent, sibling};
use crate::gaps::Gaps;
use crate::quarantine;
use duanlian_link::Change;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) const MAGIC: &[u8; 8] = b"DLJRNL01";
pub(crate) const RECORD_HEADER: usize = 20;
/// No record is larger: a batch of 10,000 links of 4 KiB URLs fits with room to spare.
pub(crate) const MAX_PAYLOAD: usize = 64 << 20;
/// No record is smaller: a header and a payload of zero changes (just its count).
pub(crate) const MIN_RECORD: usize = RECORD_HEADER + 4;

/// A record header whose checksum holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub(crate) len: usize,
    pub(crate) seq: u64,
    pub(crate) payload_crc: u32,
}

/// What the bytes at a record's position hold.
pub(crate) enum HeaderAt {
    /// Fewer bytes than a header.
    Short,
    /// The header checksum fails.
    BadChecksum,
    /// A header that can be trusted (its length may still be over the limit).
    Valid(Header),
}

/// Reads the record header at the start of `rest`.
pub(crate) fn header_at(rest: &[u8]) -> HeaderAt {
    let Some(h) = rest.get(..RECORD_HEADER) else {
        return HeaderAt::Short;
    };
    let word = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
    let mut w8 = [0u8; 8];
    w8.copy_from_slice(&h[4..12]);
    if crc32c::crc32c(&h[..12]) != word(12) {
        return HeaderAt::BadChecksum;
    }
    HeaderAt::Valid(Header {
        len: word(0) as usize,
        seq: u64::from_le_bytes(w8),
        payload_crc: word(16),
    })
}

/// One journal record: a sequence number and the changes written under it, all or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's sequence number.
    pub seq: u64,
    /// Its changes, in order.
    pub changes: Vec<Change>,
}

/// Journal settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// A segment that has grown past this many bytes is closed and a new one started.
    /// Default is 64 MiB.
    pub segment_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_bytes: 64 << 20,
        }
    }
}

/// The open journal, positioned for appending.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    opts: Options,
    file: File,
    path: PathBuf,
    len: u64,
    next_seq: u64,
    /// First sequence number of each closed segment, and of the open one last.
    segments: Vec<u64>,
    failed: bool,
    buf: Vec<u8>,
}

pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.log")
}

/// The segments in `dir`, by first sequence number.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if let Ok(first) = stem.parse::<u64>() {
            out.push((first, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// What scanning one segment found.
struct Scan {
    /// Where the valid records end.
    valid_len: u64,
    /// What is past them at the end of the last segment, when something is.
    tail: Option<Tail>,
}

/// The end of the last segment, past its valid records.
enum Tail {
    /// A write cut short by a crash: it was never acknowledged.
    Torn(String),
    /// A whole record (exactly to the end of the file) whose payload checksum fails: damaged
    /// after it was written, so possibly acknowledged.
    Damaged { seq: u64, reason: String },
}

impl Tail {
    fn reason(&self) -> &str {
        match self {
            Tail::Torn(why) | Tail::Damaged { reason: why, .. } => why,
        }
    }
}

/// Reads the records of one segment, calling `on` for those with `after < seq <= through`.
#[allow(clippy::too_many_arguments)]
fn scan(
    path: &Path,
    first_seq: u64,
    is_last: bool,
    expect_seq: &mut u64,
    after: u64,
    through: u64,
    gaps: &Gaps,
    on: &mut dyn FnMut(Record),
) -> Result<Scan, JournalError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let corrupt = |offset: usize, reason: String| JournalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason,
    };
    let torn = |offset: usize, why: &str| {
        Ok(Scan {
            valid_len: offset as u64,
            tail: Some(Tail::Torn(why.to_owned())),
        })
    };
    if bytes.len() < MAGIC.len() {
        // A segment created just before a crash, before its magic reached the disk.
        if is_last && MAGIC.starts_with(&bytes) {
            return torn(0, "incomplete segment header");
        }
        return Err(corrupt(0, "shorter than the segment header".into()));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt(
            0,
            "bad magic: not a duanlian journal segment".into(),
        ));
    }
    // A segment may start past the expected sequence only where the records skipped are in the
    // snapshot already (a compaction that stopped before removing old segments), or a salvage
    // listed them as lost, or both (the listing starts after the snapshot).
    let skip_ok = first_seq <= after + 1 || gaps.bridges((*expect_seq).max(after + 1), first_seq);
    if first_seq != *expect_seq && !(first_seq > *expect_seq && skip_ok) {
        return Err(corrupt(
            0,
            format!("segment starts at sequence {first_seq}, expected {expect_seq}"),
        ));
    }
    *expect_seq = first_seq;
    let mut off = MAGIC.len();
    while off < bytes.len() && *expect_seq <= through {
        let rest = &bytes[off..];
        if rest.len() < RECORD_HEADER {
            if is_last {
                return torn(off, "record header cut short");
            }
            return Err(corrupt(off, "record header cut short".into()));
        }
        let Header {
            len,
            seq,
            payload_crc,
        } = match header_at(rest) {
            HeaderAt::Valid(h) => h,
            // The length check above makes a short header impossible here.
            HeaderAt::Short | HeaderAt::BadChecksum => {
                // Preallocated or delayed-allocation tails read back as zeros after a crash.
                if is_last && rest.iter().all(|&b| b == 0) {
                    return torn(off, "zero-filled tail");
                }
                return Err(corrupt(off, "record header checksum mismatch".into()));
            }
        };
        if len > MAX_PAYLOAD {
            return Err(corrupt(
                off,
                format!("record length {len} is over the limit"),
            ));
        }
        if seq != *expect_seq && !(seq > *expect_seq && gaps.bridges(*expect_seq, seq)) {
            return Err(corrupt(
                off,
                format!("sequence {seq}, expected {expect_seq}"),
            ));
        }
        // Only a listed gap can carry the sequence past `through` here; checked after the
        // jump itself, so a wrong number is reported rather than taken as the end.
        if seq > through {
            break;
        }
        *expect_seq = seq;
        let end = off + RECORD_HEADER + len;
        if end > bytes.len() {
            if is_last {
                return torn(off, "record payload cut short");
            }
            return Err(corrupt(off, "record payload cut short".into()));
        }
        let payload = &bytes[off + RECORD_HEADER..end];
        if crc32c::crc32c(payload) != payload_crc {
            if is_last && end == bytes.len() {
                return Ok(Scan {
                    valid_len: off as u64,
                    tail: Some(Tail::Damaged {
                        seq,
                        reason: "last record's payload checksum mismatch".into(),
                    }),
                });
            }
            return Err(corrupt(off, "record payload checksum mismatch".into()));
        }
        let changes = codec::decode(payload).map_err(|why| corrupt(off, why))?;
        if seq > after {
            on(Record { seq, changes });
        }
        *expect_seq += 1;
        off = end;
    }
    Ok(Scan {
        valid_len: off as u64,
        tail: None,
    })
}

/// Reads the records with `after < seq <= through` without opening the journal for writing
/// (compaction of closed segments while the writer appends to the open one). Fails on any
/// damage in that range, torn tail included, since it repairs nothing. Returns the last
/// sequence number read.
pub fn read(
    dir: &Path,
    after: u64,
    through: u64,
    mut on: impl FnMut(Record),
) -> Result<u64, JournalError> {
    let segments = list(dir)?;
    let gaps = Gaps::load(dir)?;
    let mut expect = segments.first().map_or(after + 1, |s| s.0);
    for (i, (first, path)) in segments.iter().enumerate() {
        if *first > through {
            break;
        }
        let is_last = i + 1 == segments.len();
        let scan = scan(
            path,
            *first,
            is_last,
            &mut expect,
            after,
            through,
            &gaps,
            &mut on,
        )?;
        if let Some(tail) = scan.tail {
            let hint = match tail {
                Tail::Torn(_) => "open the journal to repair a torn tail",
                Tail::Damaged { .. } => "opening the journal moves it to the quarantine",
            };
            return Err(JournalError::Corrupt {
                path: path.clone(),
                offset: scan.valid_len,
                reason: format!("{} ({hint})", tail.reason()),
            });
        }
    }
    Ok(expect - 1)
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, replaying every record with `seq > after` into
    /// `on`, in order. `after` is the sequence the caller's snapshot already includes; a journal
    /// that starts later than `after + 1` is missing records and refuses to open (unless a
    /// [`salvage`](crate::salvage()) listed exactly those as lost).
    ///
    /// A torn write at the end is cut off. A whole last record that fails its checksum is cut
    /// off as well, after its bytes are copied into [`quarantine_dir`](crate::quarantine_dir)
    /// and logged as an error. If `dir` is missing because a salvage stopped between moving
    /// the damaged journal aside and moving the salvaged one in, the swap is finished first.
    pub fn open(
        dir: &Path,
        after: u64,
        opts: Options,
        mut on: impl FnMut(Record),
    ) -> Result<Journal, JournalError> {
        finish_salvage(dir)?;
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let segments = list(dir)?;
        let mut gaps = Gaps::load(dir)?;
        let mut expect = segments.first().map_or(after + 1, |s| s.0);
        if expect > after + 1 && !gaps.bridges(after + 1, expect) {
            return Err(JournalError::Corrupt {
                path: segments[0].1.clone(),
                offset: 0,
                reason: format!(
                    "the journal starts at sequence {expect}, but the snapshot ends at {after}: records are missing"
                ),
            });
        }
        let mut tail: Option<(PathBuf, u64)> = None;
        for (i, (first, path)) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            let scan = scan(
                path,
                *first,
                is_last,
                &mut expect,
                after,
                u64::MAX,
                &gaps,
                &mut on,
            )?;
            if let Some(end) = &scan.tail {
                let cut = fs::metadata(path).map_err(io_err(path))?.len() - scan.valid_len;
                match end {
                    Tail::Torn(why) => tracing::warn!(
                        file = %path.display(),
                        offset = scan.valid_len,
                        bytes = cut,
                        reason = %why,
                        "journal: cutting off a torn write at the end"
                    ),
                    Tail::Damaged { seq, reason } => {
                        let kept = quarantine_tail(dir, path, scan.valid_len, *seq, reason)?;
                        tracing::error!(
                            seq = *seq,
                            file = %path.display(),
                            offset = scan.valid_len,
                            bytes = cut,
                            reason = %reason,
                            quarantine = %kept.display(),
                            "journal: the last record is damaged (whole, but its checksum fails): \
                             its changes are lost; the bytes are kept in the quarantine"
                        );
                    }
                }
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(io_err(path))?;
                f.set_len(scan.valid_len).map_err(io_err(path))?;
                f.sync_all().map_err(io_err(path))?;
            }
            if is_last {
                tail = Some((path.clone(), scan.valid_len));
            }
        }
        // Once the segments around a listed gap are gone, nothing can jump across it again.
        if gaps.prune(after, segments.first().map(|s| s.0)) {
            gaps.store(dir)?;
        }
        // Records at or below `after` are in the snapshot already: sequence numbers go on from
        // whichever is larger.
        let next_seq = expect.max(after + 1);
        let mut firsts: Vec<u64> = segments.iter().map(|s| s.0).collect();
        let (file, path, len) = match tail {
            // Go on in the last segment when its records run right up to `next_seq`.
            Some((path, len)) if len >= MAGIC.len() as u64 && expect == next_seq => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                (file, path, len)
            }
            tail => {
                if let Some((path, len)) = tail {
                    if len < MAGIC.len() as u64 {
                        // A segment whose header was torn off holds nothing: start it afresh.
                        fs::remove_file(&path).map_err(io_err(&path))?;
                        firsts.pop();
                    }
                }
                let (file, path) = create_segment(dir, next_seq)?;
                firsts.push(next_seq);
                (file, path, MAGIC.len() as u64)
            }
        };
        Ok(Journal {
            dir: dir.to_path_buf(),
            opts,
            file,
            path,
            len,
            next_seq,
            segments: firsts,
            failed: false,
            buf: Vec::new(),
        })
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        list(&self.dir)
            .map(|s| {
                s.iter()
                    .filter_map(|(_, p)| fs::metadata(p).ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Appends one record per element of `records`, with consecutive sequence numbers, in one
    /// write followed by one `fdatasync`. Returns the last sequence number written. After an
    /// error the journal refuses all further writes ([`JournalError::Failed`]).
    pub fn write(&mut self, records: &[&[Change]]) -> Result<u64, JournalError> {
        if self.failed {
            return Err(JournalError::Failed);
        }
        self.buf.clear();
        let mut seq = self.next_seq;
        for changes in records {
            let start = self.buf.len();
            self.buf.extend_from_slice(&[0u8; RECORD_HEADER]);
            codec::encode(changes, &mut self.buf);
            let payload_len = self.buf.len() - start - RECORD_HEADER;
            let payload_crc = crc32c::crc32c(&self.buf[start + RECORD_HEADER..]);
            let h = &mut self.buf[start..start + RECORD_HEADER];
            h[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
            h[4..12].copy_from_slice(&seq.to_le_bytes());
            let header_crc = crc32c::crc32c(&h[..12]);
            h[12..16].copy_from_slice(&header_crc.to_le_bytes());
            h[16..20].copy_from_slice(&payload_crc.to_le_bytes());
            seq += 1;
        }
        let result = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data())
            .map_err(io_err(&self.path));
        if let Err(e) = result {
            self.failed = true;
            return Err(e);
        }
        self.len += self.buf.len() as u64;
        self.next_seq = seq;
        if self.len >= self.opts.segment_bytes {
            self.rotate()?;
        }
        Ok(seq - 1)
    }

    /// Closes the current segment and starts a new one, unless the current one is empty.
    /// Returns the last sequence number in closed segments: everything up to it can be folded
    /// into a snapshot while writes go on in the new segment.
    pub fn rotate(&mut self) -> Result<u64, JournalError> {
        if self.failed {
            return Err(JournalError::Failed);
        }
        if self.len > MAGIC.len() as u64 {
            match create_segment(&self.dir, self.next_seq) {
                Ok((file, path)) => {
                    self.file = file;
                    self.path = path;
                    self.len = MAGIC.len() as u64;
                    self.segments.push(self.next_seq);
                }
                Err(e) => {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
        Ok(self.next_seq - 1)
    }

    /// Deletes closed segments whose records all have `seq <= through` (they are in a
    /// published snapshot). Returns how many were removed.
    pub fn remove_through(&mut self, through: u64) -> Result<usize, JournalError> {
        let mut removed = 0;
        // A closed segment ends where the next one starts.
        while self.segments.len() > 1 && self.segments[1] <= through + 1 {
            let path = self.dir.join(segment_name(self.segments[0]));
            fs::remove_file(&path).map_err(io_err(&path))?;
            self.segments.remove(0);
            removed += 1;
        }
        if removed > 0 {
            fsync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Copies the damaged last record (`from` to the end of `path`) into the quarantine.
fn quarantine_tail(
    dir: &Path,
    path: &Path,
    from: u64,
    seq: u64,
    reason: &str,
) -> Result<PathBuf, JournalError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    let start = usize::try_from(from)
        .unwrap_or(bytes.len())
        .min(bytes.len());
    quarantine::put(
        dir,
        &quarantine::Entry {
            source: path,
            offset: from,
            bytes: &bytes[start..],
            seqs: Some(crate::SeqRange::one(seq)),
            reason,
        },
    )
}

/// Finishes a salvage that stopped after moving the damaged journal aside but before moving the
/// salvaged one in (`dir` missing, its complete replacement waiting beside it). Without this,
/// opening would start an empty journal and the records would be silently gone.
pub(crate) fn finish_salvage(dir: &Path) -> Result<(), JournalError> {
    let ready = sibling(dir, crate::files::SALVAGED_SUFFIX);
    if fs::symlink_metadata(dir).is_ok() || !ready.is_dir() {
        return Ok(());
    }
    fs::rename(&ready, dir).map_err(io_err(dir))?;
    fsync_dir(&parent(dir))?;
    tracing::warn!(
        dir = %dir.display(),
        from = %ready.display(),
        "journal: finished an interrupted salvage by moving the salvaged journal into place"
    );
    Ok(())
}

fn create_segment(dir: &Path, first_seq: u64) -> Result<(File, PathBuf), JournalError> {
    let path = dir.join(segment_name(first_seq));
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    file.write_all(MAGIC).map_err(io_err(&path))?;
    file.sync_all().map_err(io_err(&path))?;
    fsync_dir(dir)?;
    Ok((file, path))
}
