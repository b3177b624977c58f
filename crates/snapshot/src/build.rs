//! Building a table and publishing it as a file.
use crate::format::{Header, FORMAT_VERSION, HEADER_LEN, RKYV_FORMAT};
use crate::hash::{key_hash, slot_of};
use crate::{record, BuildError, LinkRef, SnapshotError};
use duanlian_link::Link;
use rkyv::util::AlignedVec;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Seek, Write};
use std::path::Path;

/// Validity bounds present on a record.
pub(crate) const HAS_VALID_SINCE: u16 = 1;
pub(crate) const HAS_EXPIRES_AT: u16 = 2;
/// The link does not forward the request's query string (absent: it does, the default).
pub(crate) const NO_FORWARD_QUERY: u16 = 4;
/// Optional fields follow the URL in `strings` ([`duanlian_link::encode_extras`]); version 2.
pub(crate) const HAS_EXTRAS: u16 = 8;
/// The link was last written through the admin API, so loading a new bulk file into a data
/// directory keeps it on top instead of replacing it; version 3.
pub(crate) const FROM_API: u16 = 16;
/// The request's query string overrides the target's parameters of the same name
/// ([`duanlian_link::ForwardQuery::Override`]); absent, the target's win. Readers before it
/// refuse it in verification and serve such a link with the target's parameters winning.
pub(crate) const QUERY_OVERRIDE: u16 = 32;
pub(crate) const KNOWN_FLAGS: u16 =
    HAS_VALID_SINCE | HAS_EXPIRES_AT | NO_FORWARD_QUERY | HAS_EXTRAS | FROM_API | QUERY_OVERRIDE;

/// The record flags for a link's query forwarding.
pub(crate) fn forward_query_flags(f: duanlian_link::ForwardQuery) -> u16 {
    match f {
        duanlian_link::ForwardQuery::Off => NO_FORWARD_QUERY,
        duanlian_link::ForwardQuery::Add => 0,
        duanlian_link::ForwardQuery::Override => QUERY_OVERRIDE,
    }
}

/// The query forwarding a record's flags say. A table rather than branches: this runs on every
/// redirect, inside a lookup that must stay small enough to inline.
#[inline]
pub(crate) fn forward_query_of(flags: u16) -> duanlian_link::ForwardQuery {
    use duanlian_link::ForwardQuery::{Add, Off, Override};
    const BY_BITS: [duanlian_link::ForwardQuery; 4] = [Add, Off, Override, Off];
    let no_forward = usize::from(flags & NO_FORWARD_QUERY != 0);
    let override_ = usize::from(flags & QUERY_OVERRIDE != 0);
    BY_BITS[no_forward | override_ << 1]
}

/// The archived root (format version 4): an open-addressing table with linear probing over
/// link records.
///
/// `slots[i]` is 0 when empty, else `tag << 32 | (record / ALIGN + 1)` where `tag` is the high
/// half of the key hash, so a probe rejects almost every foreign key without touching a record,
/// and a match leads straight to the record (see [`crate::record`]). `order` lists the records
/// (as `offset / ALIGN`) sorted by `(domain, code)`, so listings can seek to a cursor by binary
/// search and page through in a stable order. Records are bytes, so validating the archive at
/// open does not walk millions of links.
#[derive(rkyv::Archive, rkyv::Serialize, Debug)]
pub(crate) struct TableData {
    pub(crate) seed: u64,
    pub(crate) domains: Vec<String>,
    pub(crate) slots: Vec<u64>,
    pub(crate) order: Vec<u32>,
    pub(crate) records: Vec<u8>,
}

/// The archived root of format versions 1 to 3, read only to convert such files at open.
// Never built in Rust: only its archived form is read, from old files.
#[allow(dead_code)]
#[derive(rkyv::Archive, Debug)]
pub(crate) struct TableDataV3 {
    pub(crate) seed: u64,
    pub(crate) domains: Vec<String>,
    pub(crate) slots: Vec<u64>,
    pub(crate) entries: Vec<EntryV3>,
    pub(crate) strings: Vec<u8>,
}

/// One link of a version 1-3 table: `strings[str_off..]` holds `code_len` bytes of code, then
/// `url_len` bytes of URL, then (flag `HAS_EXTRAS`) the optional fields.
#[derive(rkyv::Archive, Debug, Clone, Copy)]
pub(crate) struct EntryV3 {
    pub(crate) str_off: u64,
    pub(crate) domain: u16,
    pub(crate) code_len: u8,
    pub(crate) redirect: u8,
    pub(crate) url_len: u16,
    pub(crate) flags: u16,
    pub(crate) created_at: i64,
    pub(crate) valid_since: i64,
    pub(crate) expires_at: i64,
}

/// A `(domain, code)` pushed twice: the key, and indexes of the first and the repeated push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The link domain.
    pub domain: String,
    /// The code.
    pub code: String,
    /// Push index of the first occurrence.
    pub first: usize,
    /// Push index of the repeat.
    pub repeat: usize,
}

/// Collects links into a snapshot table. Each push writes the link's record; `finish` only
/// sorts and lays out slots.
#[derive(Debug)]
pub struct Builder {
    seed: u64,
    domains: Vec<String>,
    domain_ids: HashMap<String, u16>,
    records: Vec<u8>,
    /// Record offsets in push order.
    starts: Vec<u64>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// A builder with a random hash seed.
    pub fn new() -> Builder {
        use std::hash::{BuildHasher, Hasher};
        // std's RandomState is seeded from the OS; one hasher's output is a good enough seed.
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Builder::with_seed(seed)
    }

    /// A builder with a fixed seed, for reproducible files (golden tests, benchmarks).
    pub fn with_seed(seed: u64) -> Builder {
        Builder {
            seed,
            domains: Vec::new(),
            domain_ids: HashMap::new(),
            records: Vec::new(),
            starts: Vec::new(),
        }
    }

    /// Reserves room for `links` more links of about `bytes_each` bytes of code and URL.
    pub fn reserve(&mut self, links: usize, bytes_each: usize) {
        self.starts.reserve(links);
        self.records
            .reserve(links.saturating_mul(record::HEAD + bytes_each + record::ALIGN / 2));
    }

    /// Number of links pushed so far.
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Adds a link. Duplicates are found by [`Builder::finish`], which reports them all at once.
    pub fn push(&mut self, link: &Link) -> Result<(), BuildError> {
        self.push_ref(&LinkRef::from(link))
    }

    /// Adds a link written through the admin API ([`LinkRef::from_api`]).
    pub fn push_api(&mut self, link: &Link) -> Result<(), BuildError> {
        self.push_ref(&LinkRef {
            from_api: true,
            ..LinkRef::from(link)
        })
    }

    /// Adds a link read from another snapshot (compaction), without copying it into a [`Link`].
    /// The parts must already satisfy the link model, as they do in any snapshot.
    pub fn push_ref(&mut self, link: &LinkRef<'_>) -> Result<(), BuildError> {
        if self.starts.len() >= (u32::MAX - 1) as usize {
            return Err(BuildError::TooManyLinks);
        }
        let start = self.records.len();
        // Slots and the order hold `offset / ALIGN + 1` in 32 bits: 32 GiB of records.
        if start / record::ALIGN >= (u32::MAX - 1) as usize {
            return Err(BuildError::TooManyLinks);
        }
        let domain = match self.domain_ids.get(link.domain) {
            Some(&id) => id,
            None => {
                let id =
                    u16::try_from(self.domains.len()).map_err(|_| BuildError::TooManyDomains)?;
                self.domains.push(link.domain.to_owned());
                self.domain_ids.insert(link.domain.to_owned(), id);
                id
            }
        };
        let mut flags = 0;
        if link.validity.valid_since.is_some() {
            flags |= HAS_VALID_SINCE;
        }
        if link.validity.expires_at.is_some() {
            flags |= HAS_EXPIRES_AT;
        }
        flags |= forward_query_flags(link.forward_query);
        let extras = duanlian_link::has_extras(link.validity.max_visits, link.expired_url);
        if extras {
            flags |= HAS_EXTRAS;
        }
        if link.from_api {
            flags |= FROM_API;
        }
        record::Head {
            domain,
            flags,
            redirect: link.redirect.to_u8(),
            // Both bounded by the link model: codes <= 64 bytes, URLs <= 4096 bytes.
            code_len: link.code.len() as u8,
            url_len: link.url.len() as u16,
            created_at: link.created_at,
            valid_since: link.validity.valid_since.unwrap_or(0),
            expires_at: link.validity.expires_at.unwrap_or(0),
        }
        .encode(&mut self.records);
        self.records.extend_from_slice(link.code);
        self.records.extend_from_slice(link.url);
        if extras {
            duanlian_link::encode_extras(
                link.validity.max_visits,
                link.expired_url,
                &mut self.records,
            );
        }
        let padded = self.records.len().next_multiple_of(record::ALIGN);
        self.records.resize(padded, 0);
        self.starts.push(start as u64);
        Ok(())
    }

    /// Sorts the links and lays out the hash table. Fails listing every repeated
    /// `(domain, code)`.
    pub fn finish(self) -> Result<Table, BuildError> {
        let n = self.starts.len();
        // Sort by (domain, code), ties by push order, so repeats sit right after their first.
        let mut rank = vec![0u32; self.domains.len()];
        let mut by_name: Vec<usize> = (0..self.domains.len()).collect();
        by_name.sort_unstable_by(|&a, &b| self.domains[a].cmp(&self.domains[b]));
        for (r, &id) in by_name.iter().enumerate() {
            rank[id] = r as u32;
        }
        // Sort keys that decide almost every comparison without touching the records again: the
        // domain's rank, then the code's first 14 bytes (codes never contain a zero byte, so zero
        // padding sorts a shorter code before its extensions, as byte order does).
        let prefix = |domain: u16, code: &[u8]| -> u128 {
            let mut k = u128::from(rank[usize::from(domain)]) << 112;
            for (i, &b) in code.iter().take(14).enumerate() {
                k |= u128::from(b) << (104 - 8 * i);
            }
            k
        };
        // The key hash is computed here too, while the records are read in order: laying out
        // the slots later then needs no record at all.
        let mut keyed: Vec<(u128, u64, u32)> = (0..n)
            .map(|i| {
                let (id, domain, code) = self.key(i);
                (
                    prefix(id, code),
                    key_hash(self.seed, domain, code),
                    i as u32,
                )
            })
            .collect();
        keyed.sort_unstable_by(|&(ka, _, a), &(kb, _, b)| {
            ka.cmp(&kb)
                .then_with(|| self.key(a as usize).2.cmp(self.key(b as usize).2))
                .then(a.cmp(&b))
        });
        let mut dups = Vec::new();
        let mut first = 0;
        for w in 1..keyed.len() {
            let (prev, cur) = (
                self.key(keyed[w - 1].2 as usize),
                self.key(keyed[w].2 as usize),
            );
            // Different sort keys are different links; only equal keys need the bytes.
            if keyed[w - 1].0 != keyed[w].0 || prev != cur {
                first = w;
                continue;
            }
            dups.push(Duplicate {
                domain: String::from_utf8_lossy(cur.1).into_owned(),
                code: String::from_utf8_lossy(cur.2).into_owned(),
                first: keyed[first].2 as usize,
                repeat: keyed[w].2 as usize,
            });
        }
        if !dups.is_empty() {
            dups.sort_unstable_by_key(|d| d.repeat);
            return Err(BuildError::Duplicates(dups));
        }
        let unit = |i: u32| (self.starts[i as usize] / record::ALIGN as u64) as u32;
        let order: Vec<u32> = keyed.iter().map(|&(_, _, i)| unit(i)).collect();

        // Load factor 1/2: a miss ends within about two slots, which share a cache line.
        let nslots = (n * 2).max(8);
        let mut slots = vec![0u64; nslots];
        for &(_, h, i) in &keyed {
            let mut s = slot_of(h, nslots);
            while slots[s] != 0 {
                s += 1;
                if s == nslots {
                    s = 0;
                }
            }
            slots[s] = (h >> 32) << 32 | (u64::from(unit(i)) + 1);
        }
        drop(keyed);
        Ok(Table {
            data: TableData {
                seed: self.seed,
                domains: self.domains,
                slots,
                order,
                records: self.records,
            },
            feed_id: 0,
        })
    }

    /// Domain id, domain and code of the `i`th pushed link.
    fn key(&self, i: usize) -> (u16, &[u8], &[u8]) {
        let (domain, code) = record::key_of(&self.records[self.starts[i] as usize..]);
        (domain, self.domains[usize::from(domain)].as_bytes(), code)
    }
}

/// A finished table, ready to be written.
#[derive(Debug)]
pub struct Table {
    data: TableData,
    feed_id: u64,
}

impl Table {
    /// Number of links.
    pub fn len(&self) -> usize {
        self.data.order.len()
    }

    /// Whether the table has no links.
    pub fn is_empty(&self) -> bool {
        self.data.order.is_empty()
    }

    /// Marks the table as folded from the change feed `feed_id` (a cluster bucket's identity;
    /// 0, the default, is the local journal), recorded in the header next to the sequence.
    pub fn with_feed(mut self, feed_id: u64) -> Table {
        self.feed_id = feed_id;
        self
    }

    /// The header for an archive of this table.
    fn header(&self, sequence: u64, payload_len: u64, payload_crc32c: u32) -> Header {
        Header {
            format_version: FORMAT_VERSION,
            rkyv_format: RKYV_FORMAT,
            link_count: self.data.order.len() as u64,
            sequence,
            payload_len,
            built_at: duanlian_link::now_secs(),
            payload_crc32c,
            feed_id: self.feed_id,
        }
    }

    /// The whole file image: header plus archive. `sequence` is the last change-feed sequence
    /// number the table includes (0 for a bulk load).
    pub fn to_bytes(&self, sequence: u64) -> Result<AlignedVec, BuildError> {
        let est = HEADER_LEN
            + 64
            + self.data.slots.len() * 8
            + self.data.order.len() * 4
            + self.data.records.len()
            + self.data.domains.iter().map(|d| d.len() + 8).sum::<usize>();
        let mut buf = AlignedVec::<16>::with_capacity(est);
        buf.extend_from_slice(&[0u8; HEADER_LEN]);
        // The writer's positions include the header, which is a multiple of 16 long, so every
        // archived value is as aligned in the file (and in the mapping) as in this buffer.
        let mut buf = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&self.data, buf)
            .map_err(|e| BuildError::Archive(e.to_string()))?;
        let payload = &buf[HEADER_LEN..];
        let header = self.header(sequence, payload.len() as u64, crc32c::crc32c(payload));
        buf[..HEADER_LEN].copy_from_slice(&header.encode());
        Ok(buf)
    }
}

impl Table {
    /// Writes the snapshot file to `path` without holding the whole image in memory: the
    /// archive streams into a temporary file (its checksum computed on the way), the header goes
    /// in last, then the file is published as by [`write_atomic`]. Returns the file's size.
    pub fn write(&self, path: &Path, sequence: u64) -> Result<u64, SnapshotError> {
        let mut size = 0;
        publish(path, |file| {
            file.write_all(&[0u8; HEADER_LEN])?;
            let sink = ChecksumWriter {
                inner: std::io::BufWriter::with_capacity(1 << 20, &mut *file),
                crc: 0,
                len: 0,
            };
            // Positions start after the header, exactly as in `to_bytes`, so the bytes are the same.
            let writer = rkyv::ser::writer::IoWriter::with_pos(sink, HEADER_LEN);
            let writer = rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(&self.data, writer)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let mut sink = writer.into_inner();
            sink.inner.flush()?;
            let (crc, len) = (sink.crc, sink.len);
            drop(sink);
            let header = self.header(sequence, len, crc);
            file.seek(std::io::SeekFrom::Start(0))?;
            file.write_all(&header.encode())?;
            size = HEADER_LEN as u64 + len;
            Ok(())
        })?;
        Ok(size)
    }
}

/// Passes bytes through, keeping their CRC32C and count.
struct ChecksumWriter<W> {
    inner: W,
    crc: u32,
    len: u64,
}

impl<W: Write> Write for ChecksumWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Publishes `bytes` at `path` so that readers see either the old file or the whole new one:
/// write a temporary file beside it, fsync it, rename it over `path`, fsync the directory.
/// A published snapshot is never modified in place, which is what makes mapping it safe.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    publish(path, |f| f.write_all(bytes))
}

/// The temp-file, fsync, rename, fsync-directory discipline around `fill`.
fn publish(
    path: &Path,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), SnapshotError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| SnapshotError::Io { path, error }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| SnapshotError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
    })?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io(path))?;
        // Errors name the file asked for: the temporary one beside it is ours, not the user's.
        fill(&mut f).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io(path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
