//! Opening a snapshot and reading links out of it in place.
use crate::build::{
    forward_query_of, ArchivedTableData, ArchivedTableDataV3, Builder, FROM_API, HAS_EXPIRES_AT,
    HAS_EXTRAS, HAS_VALID_SINCE, KNOWN_FLAGS, QUERY_OVERRIDE,
};
use crate::format::Header;
use crate::hash::{key_hash, le_word, slot_of};
use crate::record::{self, Head};
use crate::SnapshotError;
use duanlian_link::{Code, ForwardQuery, Redirect, Validity};
use rkyv::util::AlignedVec;
use std::fs::File;
use std::path::{Path, PathBuf};

/// The file image, owning the mapping (or the buffer): immutable, cheap to clone, and able to
/// hand out slices (a URL for a `Location` header) without copying.
struct Backing(bytes::Bytes);

impl Backing {
    fn mapped(map: memmap2::Mmap) -> Backing {
        Backing(bytes::Bytes::from_owner(map))
    }

    fn owned(v: AlignedVec) -> Backing {
        Backing(bytes::Bytes::from_owner(OwnedImage(v)))
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// `AlignedVec` as a `Bytes` owner.
struct OwnedImage(AlignedVec);

impl AsRef<[u8]> for OwnedImage {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A link's view of the image it was read from; see [`LinkRef::url_bytes`].
#[derive(Clone, Copy)]
pub struct SharedImage<'a>(&'a bytes::Bytes);

impl std::fmt::Debug for SharedImage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SharedImage({} bytes)", self.0.len())
    }
}

impl PartialEq for SharedImage<'_> {
    /// Where the bytes live is not part of a link's value.
    fn eq(&self, _other: &Self) -> bool {
        true
    }
}

impl Eq for SharedImage<'_> {}

/// An open, validated snapshot. Lookups read the mapped bytes directly; nothing is parsed.
pub struct Snapshot {
    backing: Backing,
    header: Header,
    path: Option<PathBuf>,
    /// A version 1-3 file rebuilt in memory at open (its checksum checked then).
    converted: bool,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

/// One link as stored in a snapshot, borrowed from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkRef<'a> {
    /// The link domain (lowercase).
    pub domain: &'a str,
    /// The code's bytes (checked by [`Snapshot::verify`]; always ASCII in a file we wrote).
    pub code: &'a [u8],
    /// The target URL's bytes, as they go into `Location`.
    pub url: &'a [u8],
    /// The redirect status.
    pub redirect: Redirect,
    /// The validity window.
    pub validity: Validity,
    /// Creation time, UTC seconds.
    pub created_at: i64,
    /// What a redirect does with the request's query string.
    pub forward_query: ForwardQuery,
    /// Where an expired link sends visitors instead of answering 410.
    pub expired_url: Option<&'a [u8]>,
    /// Whether the link was last written through the admin API rather than loaded in bulk:
    /// loading a new bulk file into a data directory replaces bulk links and keeps these.
    pub from_api: bool,
    /// The snapshot image the link was read from, if any.
    pub image: Option<SharedImage<'a>>,
}

impl<'a> From<&'a duanlian_link::Link> for LinkRef<'a> {
    fn from(link: &'a duanlian_link::Link) -> LinkRef<'a> {
        LinkRef {
            domain: link.domain.as_str(),
            code: link.code.as_str().as_bytes(),
            url: link.url.as_bytes(),
            redirect: link.redirect,
            validity: link.validity,
            created_at: link.created_at,
            forward_query: link.forward_query,
            expired_url: link.expired_url.as_deref().map(str::as_bytes),
            from_api: false,
            image: None,
        }
    }
}

impl LinkRef<'_> {
    /// The target URL as shared bytes: a slice of the snapshot image (no copy, no allocation)
    /// when the link came from one, else a copy.
    pub fn url_bytes(&self) -> bytes::Bytes {
        if let Some(SharedImage(image)) = self.image {
            let base = image.as_ptr() as usize;
            let start = (self.url.as_ptr() as usize).wrapping_sub(base);
            if let Some(end) = start
                .checked_add(self.url.len())
                .filter(|&e| e <= image.len())
            {
                return image.slice(start..end);
            }
        }
        bytes::Bytes::copy_from_slice(self.url)
    }

    /// An owned [`duanlian_link::Link`]; `None` if the bytes break the link model (never in a
    /// snapshot that passed [`Snapshot::verify`], nor for links that came from a `Link`).
    pub fn to_link(&self) -> Option<duanlian_link::Link> {
        Some(duanlian_link::Link {
            domain: duanlian_link::Domain::parse(self.domain).ok()?,
            code: Code::parse(std::str::from_utf8(self.code).ok()?).ok()?,
            url: std::str::from_utf8(self.url).ok()?.into(),
            redirect: self.redirect,
            validity: self.validity,
            created_at: self.created_at,
            forward_query: self.forward_query,
            expired_url: match self.expired_url {
                Some(u) => Some(std::str::from_utf8(u).ok()?.into()),
                None => None,
            },
        })
    }
}

/// What [`Snapshot::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Links per domain, in the order the domains first appeared.
    pub domains: Vec<(String, u64)>,
    /// Links with an expiry time.
    pub with_expiry: u64,
    /// Links with a start time.
    pub with_valid_since: u64,
}

impl Snapshot {
    /// Maps a snapshot file and validates it: header, checksum, archive and table shape.
    ///
    /// # File contract
    /// The mapping is only sound while nobody truncates or rewrites the file: a shrunk file makes
    /// reads fault (SIGBUS), a rewritten one changes bytes that were validated. duanlian's
    /// writers never do either — they publish with [`crate::write_atomic`], which renames a new
    /// file into place, so an open mapping keeps seeing the old inode. Other tools must do the
    /// same (`cp` over a served snapshot is not safe; `cp` to a temp name then `mv` is).
    pub fn open(path: impl AsRef<Path>) -> Result<Snapshot, SnapshotError> {
        Snapshot::map(path.as_ref(), true)
    }

    /// Whether serving a snapshot file of `len` bytes from huge pages
    /// ([`Snapshot::open_huge_pages`]) is worth it here: the table is large enough for TLB
    /// misses to dominate a lookup (512 MiB and up; at 132 MB, a million links, no difference
    /// was measurable), the kernel hands out transparent huge pages on request, and twice the
    /// file fits in the memory available (the copy is made while the mapping still serves).
    pub fn huge_pages_pay_off(len: u64) -> bool {
        const WORTH_IT: u64 = 512 << 20;
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| s.contains("[always]") || s.contains("[madvise]"));
        let available = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib.saturating_mul(1024))
            })
            .unwrap_or(0);
        len >= WORTH_IT && thp && available / 2 >= len
    }

    /// Like [`Snapshot::open`], but copies the file into anonymous memory backed by transparent
    /// huge pages (2 MiB) instead of mapping it. Opening takes as long as reading the file (a
    /// second or so per gigabyte), and the memory is private rather than shared page cache; in
    /// return a lookup in a table of gigabytes no longer misses the TLB on every cache line it
    /// touches. Where the kernel grants no huge pages (THP `never`) this is an ordinary copy.
    pub fn open_huge_pages(path: impl AsRef<Path>) -> Result<Snapshot, SnapshotError> {
        use std::io::Read;
        let path = path.as_ref();
        let (mut file, len) = open_file(path)?;
        let len = usize::try_from(len)
            .map_err(|_| io_error(path, std::io::Error::other("file too large for memory")))?;
        let io = |e| io_error(path, e);
        let mut memory = memmap2::MmapMut::map_anon(len).map_err(io)?;
        // Advice only: without it (or without THP) the copy still works, on small pages.
        let _ = memory.advise(memmap2::Advice::HugePage);
        file.read_exact(&mut memory).map_err(io)?;
        let mut snap =
            Snapshot::check(Backing::mapped(memory.make_read_only().map_err(io)?), true)?;
        snap.path = Some(path.to_path_buf());
        Ok(snap)
    }

    /// Like [`Snapshot::open`], but leaves the payload checksum for
    /// [`Snapshot::verify_checksum`], so a server can answer within milliseconds of start even
    /// for a file of gigabytes (the checksum pass reads every page). Everything that memory
    /// safety rests on — header, lengths, rkyv validation, table shape — is still checked here;
    /// the checksum only guards the data against corruption at rest.
    pub fn open_deferred(path: impl AsRef<Path>) -> Result<Snapshot, SnapshotError> {
        Snapshot::map(path.as_ref(), false)
    }

    /// Maps `path` and checks it, the payload checksum only if asked.
    fn map(path: &Path, checksum: bool) -> Result<Snapshot, SnapshotError> {
        let (file, _) = open_file(path)?;
        // SAFETY: the file contract on `Snapshot::open`: published snapshots are replaced by
        // rename, never modified in place, so the mapped bytes stay as they are for the
        // mapping's lifetime.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_error(path, e))?;
        let mut snap = Snapshot::check(Backing::mapped(map), checksum)?;
        snap.path = Some(path.to_path_buf());
        Ok(snap)
    }

    /// Recomputes the payload checksum and compares it with the header's.
    pub fn verify_checksum(&self) -> Result<(), SnapshotError> {
        if self.converted {
            return Ok(());
        }
        let actual = crc32c::crc32c(&self.backing.bytes()[self.header.archive_offset()..]);
        if actual == self.header.payload_crc32c {
            Ok(())
        } else {
            Err(SnapshotError::PayloadChecksum {
                stored: self.header.payload_crc32c,
                actual,
            })
        }
    }

    /// Validates a whole snapshot image held in memory (for tests, benches and built-in data).
    pub fn from_bytes(bytes: AlignedVec) -> Result<Snapshot, SnapshotError> {
        Snapshot::check(Backing::owned(bytes), true)
    }

    fn check(backing: Backing, checksum: bool) -> Result<Snapshot, SnapshotError> {
        let bytes = backing.bytes();
        let header = Header::decode(bytes, bytes.len() as u64)?;
        let payload = &bytes[header.archive_offset()..];
        let checksum_error = || {
            let actual = crc32c::crc32c(payload);
            (actual != header.payload_crc32c).then_some(SnapshotError::PayloadChecksum {
                stored: header.payload_crc32c,
                actual,
            })
        };
        if checksum {
            if let Some(e) = checksum_error() {
                return Err(e);
            }
        }
        // With the checksum deferred, a structural failure is reported as the checksum
        // mismatch it almost always is: the more useful diagnosis, and it costs nothing now.
        let structural = |e: SnapshotError| {
            if checksum {
                e
            } else {
                checksum_error().unwrap_or(e)
            }
        };
        if header.format_version < 4 {
            // Older layouts are rebuilt into the current one: reading them stays simple, and
            // compaction rewrites such files soon anyway. That reads every link, so the
            // checksum is checked first whatever was asked.
            if let Some(e) = checksum_error() {
                return Err(e);
            }
            let image = convert(payload, &header)?;
            let mut snap = Snapshot::check(Backing::owned(image), false)?;
            snap.header = header;
            snap.converted = true;
            return Ok(snap);
        }
        let table = rkyv::access::<ArchivedTableData, rkyv::rancor::Error>(payload)
            .map_err(|e| structural(SnapshotError::InvalidArchive(e.to_string())))?;
        if table.order.len() as u64 != header.link_count {
            return Err(structural(SnapshotError::Inconsistent(format!(
                "header says {} links, the table has {}",
                header.link_count,
                table.order.len()
            ))));
        }
        // Lookups stop at an empty slot: there must be at least one.
        if table.slots.len() <= table.order.len() {
            return Err(structural(SnapshotError::Inconsistent(format!(
                "{} slots for {} links",
                table.slots.len(),
                table.order.len()
            ))));
        }
        Ok(Snapshot {
            backing,
            header,
            path: None,
            converted: false,
        })
    }

    #[inline(always)]
    fn table(&self) -> &ArchivedTableData {
        let payload = &self.backing.bytes()[self.header.archive_offset()..];
        // SAFETY: `check` ran `rkyv::access` over exactly these bytes before this Snapshot was
        // built, and they cannot change afterwards: owned bytes are never handed out mutably,
        // and mapped ones are covered by the file contract on `Snapshot::open`.
        #[allow(unsafe_code)]
        unsafe {
            rkyv::access_unchecked::<ArchivedTableData>(payload)
        }
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file this snapshot was opened from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Size of the file image in bytes.
    pub fn file_len(&self) -> usize {
        self.backing.bytes().len()
    }

    /// Number of links.
    pub fn len(&self) -> usize {
        self.table().order.len()
    }

    /// Whether there are no links.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The link domains that have links in this snapshot.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.table().domains.iter().map(|d| d.as_str())
    }

    /// Looks up `(domain, code)`; `domain` must already be lowercase (see
    /// [`duanlian_link::host_key`]). Reads at most a few cache lines; never allocates.
    // Always: the redirect path's one call to it must not become a call when its caller grows
    // (LTO's inliner dropped it once, for about 30 instructions per redirect).
    #[inline(always)]
    pub fn get(&self, domain: &str, code: &str) -> Option<LinkRef<'_>> {
        let t = self.table();
        let slots = t.slots.as_slice();
        let n = slots.len();
        let h = key_hash(t.seed.to_native(), domain.as_bytes(), code.as_bytes());
        let tag = h >> 32;
        let mut s = slot_of(h, n);
        // Bounded by the table size, so even a table that broke its invariants cannot spin.
        for _ in 0..n {
            let v = slots.get(s)?.to_native();
            if v == 0 {
                return None;
            }
            if v >> 32 == tag {
                let link = self.record(t, (v as u32).wrapping_sub(1))?;
                if short_eq(link.code, code.as_bytes())
                    && short_eq(link.domain.as_bytes(), domain.as_bytes())
                {
                    return Some(link);
                }
            }
            s += 1;
            if s == n {
                s = 0;
            }
        }
        None
    }

    /// `(position, expires_at)` of every link with an expiry, read from the records' fixed
    /// heads only.
    pub fn expiries(&self) -> impl Iterator<Item = (usize, i64)> + '_ {
        let t = self.table();
        t.order.iter().enumerate().filter_map(move |(i, r)| {
            let head = self.head(t, r.to_native())?;
            (head.flags & HAS_EXPIRES_AT != 0).then_some((i, head.expires_at))
        })
    }

    /// The link at a position of [`Snapshot::iter`] order.
    pub fn link_at(&self, position: usize) -> Option<LinkRef<'_>> {
        let t = self.table();
        self.record(t, t.order.get(position)?.to_native())
    }

    /// Every link, in `(domain, code)` order.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            snap: self,
            next: 0,
        }
    }

    /// The links from `(domain, code)` on (inclusive), in `(domain, code)` order: a binary
    /// search, then a scan. `seek(d, "")` starts at the first link of domain `d`.
    pub fn seek(&self, domain: &str, code: &str) -> Iter<'_> {
        let t = self.table();
        let key = (domain.as_bytes(), code.as_bytes());
        let (mut lo, mut hi) = (0, t.order.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let below = self
                .link_at(mid)
                .is_some_and(|l| (l.domain.as_bytes(), l.code) < key);
            if below {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Iter {
            snap: self,
            next: lo,
        }
    }

    /// The fixed head of the record at `unit` (its offset / ALIGN).
    #[inline]
    fn head(&self, t: &ArchivedTableData, unit: u32) -> Option<Head> {
        Head::decode(t.records.get(unit as usize * record::ALIGN..)?)
    }

    /// The link whose record starts at `unit` (its offset / ALIGN); `None` if it runs outside
    /// the records (never in a file that passed `verify`).
    #[inline]
    fn record<'a>(&'a self, t: &'a ArchivedTableData, unit: u32) -> Option<LinkRef<'a>> {
        let records = t.records.as_slice();
        let off = unit as usize * record::ALIGN;
        let rec = records.get(off..)?;
        let head = Head::decode(rec)?;
        let code_end = record::HEAD + usize::from(head.code_len);
        let url_end = code_end + usize::from(head.url_len);
        let extras = if head.flags & HAS_EXTRAS != 0 {
            duanlian_link::decode_extras(rec.get(url_end..)?).ok()?.0
        } else {
            duanlian_link::Extras::default()
        };
        Some(LinkRef {
            domain: t.domains.get(usize::from(head.domain))?.as_str(),
            code: rec.get(record::HEAD..code_end)?,
            url: rec.get(code_end..url_end)?,
            redirect: Redirect::from_u8(head.redirect).unwrap_or_default(),
            validity: Validity {
                valid_since: (head.flags & HAS_VALID_SINCE != 0).then_some(head.valid_since),
                expires_at: (head.flags & HAS_EXPIRES_AT != 0).then_some(head.expires_at),
                max_visits: extras.max_visits,
            },
            created_at: head.created_at,
            forward_query: forward_query_of(head.flags),
            expired_url: extras.expired_url,
            from_api: head.flags & FROM_API != 0,
            image: Some(SharedImage(&self.backing.0)),
        })
    }

    /// Checks every entry: in bounds, a valid code and URL, a known redirect kind, and found by
    /// its own key (so the table has no unreachable or repeated keys). `open` already checked the
    /// checksum and archive; this is the slow, thorough pass behind `duanlian snapshot verify`.
    pub fn verify(&self) -> Result<VerifyReport, SnapshotError> {
        let t = self.table();
        let bad = |i: usize, why: String| SnapshotError::Inconsistent(format!("link #{i}: {why}"));
        let mut per_domain = vec![0u64; t.domains.len()];
        let (mut with_expiry, mut with_valid_since) = (0, 0);
        let mut prev: Option<(&str, &[u8])> = None;
        for (i, unit) in t.order.iter().enumerate() {
            let unit = unit.to_native();
            let (Some(head), Some(link)) = (self.head(t, unit), self.record(t, unit)) else {
                return Err(bad(i, "points outside the table".into()));
            };
            if Redirect::from_u8(head.redirect).is_none() {
                return Err(bad(i, format!("unknown redirect kind {}", head.redirect)));
            }
            let flags = head.flags;
            if flags & !KNOWN_FLAGS != 0 {
                return Err(bad(i, format!("unknown flags {flags:#x}")));
            }
            if flags & HAS_EXTRAS != 0 {
                let extras = duanlian_link::Extras {
                    max_visits: link.validity.max_visits,
                    expired_url: link.expired_url,
                };
                if !duanlian_link::has_extras(extras.max_visits, extras.expired_url) {
                    return Err(bad(i, "unreadable optional fields".into()));
                }
                extras.check().map_err(|e| bad(i, e.to_string()))?;
            }
            let code = std::str::from_utf8(link.code)
                .ok()
                .filter(|c| Code::is_valid(c.as_bytes()))
                .ok_or_else(|| {
                    bad(
                        i,
                        format!("invalid code {:?}", String::from_utf8_lossy(link.code)),
                    )
                })?;
            let url =
                std::str::from_utf8(link.url).map_err(|_| bad(i, "url is not UTF-8".into()))?;
            match duanlian_link::parse_url(url) {
                Ok(u) if *u == *url => {}
                _ => return Err(bad(i, format!("invalid url {url:?}"))),
            }
            if Validity::new(link.validity.valid_since, link.validity.expires_at).is_err() {
                return Err(bad(i, "valid_since is not before expires_at".into()));
            }
            match self.get(link.domain, code) {
                Some(found) if std::ptr::eq(found.code, link.code) => {}
                _ => {
                    return Err(bad(
                        i,
                        format!("{}/{code} is not reachable by lookup", link.domain),
                    ))
                }
            }
            if prev.is_some_and(|p| p >= (link.domain, link.code)) {
                return Err(bad(i, "out of (domain, code) order".into()));
            }
            prev = Some((link.domain, link.code));
            per_domain[usize::from(head.domain)] += 1;
            with_expiry += u64::from(link.validity.expires_at.is_some());
            with_valid_since += u64::from(link.validity.valid_since.is_some());
        }
        Ok(VerifyReport {
            domains: self.domains().map(str::to_owned).zip(per_domain).collect(),
            with_expiry,
            with_valid_since,
        })
    }

    /// Links per domain, counted from the records' fixed heads.
    pub fn domain_counts(&self) -> Vec<(String, u64)> {
        let t = self.table();
        let mut counts = vec![0u64; t.domains.len()];
        for unit in t.order.iter() {
            let domain = self.head(t, unit.to_native()).map(|h| h.domain);
            if let Some(c) = domain.and_then(|d| counts.get_mut(usize::from(d))) {
                *c += 1;
            }
        }
        self.domains().map(str::to_owned).zip(counts).collect()
    }
}

fn io_error(path: &Path, error: std::io::Error) -> SnapshotError {
    SnapshotError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// `path` opened for reading, with its length. An empty file is refused here: a zero-length
/// mapping is an error on Linux, and an empty snapshot is always a mistake.
fn open_file(path: &Path) -> Result<(File, u64), SnapshotError> {
    // Checked before opening: opening a FIFO blocks until something writes to it, and a device
    // or directory is never a snapshot.
    let kind = std::fs::metadata(path)
        .map_err(|e| io_error(path, e))?
        .file_type();
    if !kind.is_file() {
        return Err(SnapshotError::NotAFile {
            path: path.to_owned(),
            kind: file_kind(kind),
        });
    }
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let len = file.metadata().map_err(|e| io_error(path, e))?.len();
    if len == 0 {
        return Err(SnapshotError::Empty);
    }
    Ok((file, len))
}

fn file_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// A version 1-3 payload rebuilt as a current-version image with the same links, seed and
/// sequence. Every entry is checked on the way as that version's rules say.
fn convert(payload: &[u8], header: &Header) -> Result<AlignedVec, SnapshotError> {
    let t = rkyv::access::<ArchivedTableDataV3, rkyv::rancor::Error>(payload)
        .map_err(|e| SnapshotError::InvalidArchive(e.to_string()))?;
    if t.entries.len() as u64 != header.link_count || t.slots.len() <= t.entries.len() {
        return Err(SnapshotError::Inconsistent(format!(
            "header says {} links; the table has {} in {} slots",
            header.link_count,
            t.entries.len(),
            t.slots.len()
        )));
    }
    let bad = |i: usize, why: String| SnapshotError::Inconsistent(format!("link #{i}: {why}"));
    let strings = t.strings.as_slice();
    let mut b = Builder::with_seed(t.seed.to_native());
    b.reserve(t.entries.len(), strings.len() / t.entries.len().max(1));
    let known = match header.format_version {
        1 => KNOWN_FLAGS & !HAS_EXTRAS & !FROM_API & !QUERY_OVERRIDE,
        2 => KNOWN_FLAGS & !FROM_API & !QUERY_OVERRIDE,
        _ => KNOWN_FLAGS & !QUERY_OVERRIDE,
    };
    for (i, e) in t.entries.iter().enumerate() {
        let flags = e.flags.to_native();
        if flags & !known != 0 {
            return Err(bad(i, format!("unknown flags {flags:#x}")));
        }
        let redirect = Redirect::from_u8(e.redirect)
            .ok_or_else(|| bad(i, format!("unknown redirect kind {}", e.redirect)))?;
        let off = usize::try_from(e.str_off.to_native()).unwrap_or(usize::MAX);
        let code_end = off.saturating_add(usize::from(e.code_len));
        let url_end = code_end.saturating_add(usize::from(e.url_len.to_native()));
        let outside = || bad(i, "points outside the table".into());
        let extras = if flags & HAS_EXTRAS != 0 {
            duanlian_link::decode_extras(strings.get(url_end..).ok_or_else(outside)?)
                .map_err(|_| bad(i, "unreadable optional fields".into()))?
                .0
        } else {
            duanlian_link::Extras::default()
        };
        let link = LinkRef {
            domain: t
                .domains
                .get(usize::from(e.domain.to_native()))
                .ok_or_else(outside)?
                .as_str(),
            code: strings.get(off..code_end).ok_or_else(outside)?,
            url: strings.get(code_end..url_end).ok_or_else(outside)?,
            redirect,
            validity: Validity {
                valid_since: (flags & HAS_VALID_SINCE != 0).then(|| e.valid_since.to_native()),
                expires_at: (flags & HAS_EXPIRES_AT != 0).then(|| e.expires_at.to_native()),
                max_visits: extras.max_visits,
            },
            created_at: e.created_at.to_native(),
            forward_query: forward_query_of(flags),
            expired_url: extras.expired_url,
            from_api: flags & FROM_API != 0,
            image: None,
        };
        b.push_ref(&link).map_err(|e| bad(i, e.to_string()))?;
    }
    let table = b
        .finish()
        .map_err(|e| SnapshotError::Inconsistent(e.to_string()))?;
    table
        .with_feed(header.feed_id)
        .to_bytes(header.sequence)
        .map_err(|e| SnapshotError::InvalidArchive(e.to_string()))
}

/// Equality for the short strings of a lookup (codes of ~7 bytes, domains of ~15), compared
/// eight bytes at a time: a libc `memcmp` call costs more than the comparison for these
/// lengths, and showed up as a fifth of the redirect path's user time in a profile.
#[inline(always)]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut ca, mut cb) = (a.chunks(8), b.chunks(8));
    loop {
        match (ca.next(), cb.next()) {
            (Some(x), Some(y)) => {
                if le_word(x) != le_word(y) {
                    return false;
                }
            }
            _ => return true,
        }
    }
}

/// Iterator over a snapshot's links; see [`Snapshot::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    snap: &'a Snapshot,
    next: usize,
}

impl<'a> Iterator for Iter<'a> {
    type Item = LinkRef<'a>;

    fn next(&mut self) -> Option<LinkRef<'a>> {
        while self.next < self.snap.len() {
            let i = self.next;
            self.next += 1;
            // Records that run outside the table cannot occur in a verified file; skipping
            // them keeps iteration total anyway.
            if let Some(link) = self.snap.link_at(i) {
                return Some(link);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::short_eq;

    #[test]
    fn small_tables_stay_mapped() {
        // A million links is 132 MB: huge pages made no measurable difference there.
        assert!(!super::Snapshot::huge_pages_pay_off(132_000_000));
    }

    #[test]
    fn short_eq_is_byte_equality() {
        let cases: [&[u8]; 7] = [
            b"",
            b"a",
            b"x7Kp2Qa",
            b"x7Kp2Qb",
            b"go.example.cn",
            b"go.example.co",
            b"12345678",
        ];
        for a in cases {
            for b in cases {
                assert_eq!(short_eq(a, b), a == b, "{a:?} {b:?}");
            }
        }
        assert!(!short_eq(b"12345678a", b"12345678b"));
        assert!(short_eq(&[7u8; 64], &[7u8; 64]));
    }
}
