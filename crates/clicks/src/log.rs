//! The click log: tab-separated lines in files rotated by UTC day and by size.
//!
//! ```text
//! clicks/clicks-20261125-000.tsv
//! 1764067200⇥go.example.cn⇥x7Kp2Qa⇥mobile⇥weibo.com⇥203.0.113.0   (⇥ is a tab)
//! ```
//! Fields: UTC seconds, domain, code, device class, referrer host (empty for none), anonymised
//! client address. A file named for day D holds clicks of day D, and stragglers of the day
//! before that arrived after midnight. A torn last line (a crash mid-write) is skipped on read.
//! Closed files are gzip-compressed (`.tsv.gz`, about a quarter of the size); readers take both.
use crate::event::referrer_host;
use crate::{anonymise, Click, ClickError, Device, Visit};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

const DAY: i64 = 86_400;

/// `YYYYMMDD` of a day number (days since 1970-01-01).
fn day_stamp(day: i64) -> String {
    duanlian_link::format_date(day * DAY).replace('-', "")
}

/// The day number a log file's name gives, if it is one of ours.
pub(crate) fn file_day(name: &str) -> Option<i64> {
    let stamp = name.strip_prefix("clicks-")?.get(..8)?;
    let date = format!("{}-{}-{}", &stamp[..4], &stamp[4..6], &stamp[6..8]);
    duanlian_link::parse_rfc3339(&date).map(|t| t.div_euclid(DAY))
}

/// Whether `name` is one of our raw log files (plain or compressed).
fn is_log(name: &str) -> bool {
    file_day(name).is_some() && (name.ends_with(".tsv") || name.ends_with(".tsv.gz"))
}

/// A place in the raw log: a file's name without `.gz`, and a byte offset in its uncompressed
/// text. Names sort in time order, so positions compare as tuples.
pub(crate) type Position = (String, u64);

/// Appends clicks to the current file, starting a new one on a new day or past a size.
#[derive(Debug)]
pub(crate) struct LogWriter {
    dir: PathBuf,
    max_bytes: u64,
    /// Day, bytes written, the file, and its name.
    current: Option<(i64, u64, BufWriter<File>, String)>,
    /// Files closed since [`LogWriter::take_closed`] was last called.
    closed: Vec<PathBuf>,
}

impl LogWriter {
    pub(crate) fn new(dir: &Path, max_bytes: u64) -> Result<LogWriter, ClickError> {
        fs::create_dir_all(dir).map_err(|e| ClickError::io(dir, e))?;
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            max_bytes,
            current: None,
            closed: Vec::new(),
        })
    }

    /// A fresh file for `day`: the next unused sequence number, so a restart never appends to
    /// a file that may end in a torn line.
    fn open(&self, day: i64) -> Result<(BufWriter<File>, String), ClickError> {
        let stamp = day_stamp(day);
        for n in 0..100_000u32 {
            let name = format!("clicks-{stamp}-{n:03}.tsv");
            let path = self.dir.join(&name);
            if self.dir.join(format!("{name}.gz")).exists() {
                continue;
            }
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(f) => return Ok((BufWriter::with_capacity(64 * 1024, f), name)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(ClickError::io(&path, e)),
            }
        }
        Err(ClickError::io(
            &self.dir,
            std::io::Error::other("no free click log file name for the day"),
        ))
    }

    #[cfg(test)]
    pub(crate) fn append(&mut self, click: &Click) -> Result<(), ClickError> {
        let mut line = Vec::new();
        encode_line(click, &mut line);
        self.append_lines(click.at.div_euclid(DAY), &line)
    }

    /// Appends whole lines of clicks of `day`, in a new file on a new day; a file past the size
    /// is closed at the end of a line.
    pub(crate) fn append_lines(&mut self, day: i64, mut lines: &[u8]) -> Result<(), ClickError> {
        while !lines.is_empty() {
            // Stragglers from before midnight stay in the current day's file.
            let (rotate, file_day) = match &self.current {
                None => (true, day),
                Some((d, size, _, _)) => (day > *d || *size >= self.max_bytes, day.max(*d)),
            };
            if rotate {
                if let Some((_, _, mut w, name)) = self.current.take() {
                    w.flush().map_err(|e| ClickError::io(&self.dir, e))?;
                    self.closed.push(self.dir.join(name));
                }
                let (w, name) = self.open(file_day)?;
                self.current = Some((file_day, 0, w, name));
            }
            let Some((_, size, w, _)) = &mut self.current else {
                return Ok(());
            };
            let room = usize::try_from(self.max_bytes.saturating_sub(*size)).unwrap_or(usize::MAX);
            let cut = match lines.get(room..) {
                Some(rest) if !rest.is_empty() => rest
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(lines.len(), |i| room + i + 1),
                _ => lines.len(),
            };
            w.write_all(&lines[..cut])
                .map_err(|e| ClickError::io(&self.dir, e))?;
            *size += cut as u64;
            lines = &lines[cut..];
        }
        Ok(())
    }

    pub(crate) fn flush(&mut self) -> Result<(), ClickError> {
        match &mut self.current {
            Some((_, _, w, _)) => w.flush().map_err(|e| ClickError::io(&self.dir, e)),
            None => Ok(()),
        }
    }

    /// Where the next line goes: everything before it is written (once flushed).
    pub(crate) fn position(&self) -> Option<Position> {
        self.current
            .as_ref()
            .map(|(_, size, _, name)| (name.clone(), *size))
    }

    /// The files closed since the last call, for compression.
    pub(crate) fn take_closed(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.closed)
    }

    /// The name of the file being written, which must be neither compressed nor removed.
    pub(crate) fn current_name(&self) -> Option<&str> {
        self.current.as_ref().map(|(_, _, _, name)| name.as_str())
    }
}

/// Decimal digits of `n` appended to `out` without the formatting machinery (the writer does
/// this for every click).
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// One log line, newline included, replacing `out`'s contents.
pub fn encode_line(click: &Click, out: &mut Vec<u8>) {
    out.clear();
    push_at(out, click.at);
    let (key, referrer) = click.key_and_referrer_bytes();
    out.extend_from_slice(key);
    push_rest(out, click.device, referrer, click.client);
}

/// Where a line's `domain \t code` and referrer host lie in the buffer it was appended to.
#[derive(Debug)]
pub(crate) struct Spans {
    pub(crate) key: Range<usize>,
    pub(crate) referrer: Range<usize>,
}

/// Appends a visit's log line (the same as [`encode_line`] of its [`Click`]) to `out`, which
/// may hold earlier lines: the redirect path writes it straight into its buffer. `stamp` keeps
/// the time's text from the click before, which is nearly always of the same second.
pub(crate) fn append_visit(v: &Visit<'_>, stamp: &mut Stamp, out: &mut Vec<u8>) -> Spans {
    // Plausible hosts are ASCII and hold no tab.
    let host = v.referer.and_then(referrer_host).unwrap_or_default();
    let device = v.device.as_str().as_bytes();
    let at = stamp.text(v.at);
    // The longest address text, so the line grows the buffer once at most.
    out.reserve(at.len() + v.domain.len() + v.code.len() + device.len() + host.len() + 45);
    out.extend_from_slice(at);
    let key_start = out.len();
    out.extend_from_slice(v.domain.as_bytes());
    out.push(b'\t');
    out.extend_from_slice(v.code.as_bytes());
    let key = key_start..out.len();
    let start = out.len() + 2 + device.len();
    push_rest(out, v.device, host, anonymise(v.client));
    let referrer = start..start + host.len();
    out[referrer.clone()].make_ascii_lowercase();
    Spans { key, referrer }
}

/// A time's text as a line starts with it (`seconds \t`), kept for the next line.
#[derive(Debug, Default)]
pub(crate) struct Stamp {
    at: Option<i64>,
    text: Vec<u8>,
}

impl Stamp {
    fn text(&mut self, at: i64) -> &[u8] {
        if self.at != Some(at) {
            self.text.clear();
            push_at(&mut self.text, at);
            self.at = Some(at);
        }
        &self.text
    }
}

fn push_at(out: &mut Vec<u8>, at: i64) {
    if at < 0 {
        out.push(b'-');
    }
    push_decimal(out, at.unsigned_abs());
    out.push(b'\t');
}

/// The fields after `domain \t code`, newline included. Written for every click, so each
/// piece is a fixed-size copy into one small buffer, and the buffer one copy onto `out`:
/// byte-by-byte pushes and a call to `memcpy` per field cost as much as the rest of the line.
fn push_rest(out: &mut Vec<u8>, device: Device, referrer: &[u8], client: IpAddr) {
    let mut buf = [0u8; 40];
    let (field, len) = &DEVICE_FIELDS[device.index()];
    buf[..16].copy_from_slice(field);
    let mut n = *len;
    if !referrer.is_empty() {
        out.extend_from_slice(&buf[..n]);
        out.extend_from_slice(referrer);
        n = 0;
    }
    buf[n] = b'\t';
    n += 1;
    match client {
        IpAddr::V4(v4) => {
            for octet in v4.octets() {
                let (text, len) = &OCTETS[usize::from(octet)];
                buf[n..n + 4].copy_from_slice(text);
                n += *len;
            }
            // The last octet's dot becomes the newline.
            buf[n - 1] = b'\n';
            out.extend_from_slice(&buf[..n]);
        }
        // Rare enough, and subtle enough (zero compression), for the standard formatter.
        IpAddr::V6(v6) => {
            out.extend_from_slice(&buf[..n]);
            let _ = write!(out, "{v6}");
            out.push(b'\n');
        }
    }
}

/// `\t device \t` of each [`Device::index`], padded to 16 bytes, and its length.
const DEVICE_FIELDS: [([u8; 16], usize); Device::ALL.len()] = {
    let mut fields = [([0u8; 16], 0); Device::ALL.len()];
    let mut d = 0;
    while d < Device::ALL.len() {
        let name = Device::ALL[d];
        let text = name.as_str().as_bytes();
        fields[name.index()].0[0] = b'\t';
        let mut i = 0;
        while i < text.len() {
            fields[name.index()].0[1 + i] = text[i];
            i += 1;
        }
        fields[name.index()].0[1 + i] = b'\t';
        fields[name.index()].1 = text.len() + 2;
        d += 1;
    }
    fields
};

/// Every octet's decimal digits followed by a dot, padded to 4 bytes, and their length.
const OCTETS: [([u8; 4], usize); 256] = {
    let mut octets = [([0u8; 4], 0); 256];
    let mut o = 0;
    while o < 256 {
        let digits = [(o / 100) as u8, (o / 10 % 10) as u8, (o % 10) as u8];
        let skip = if o >= 100 {
            0
        } else if o >= 10 {
            1
        } else {
            2
        };
        let mut i = skip;
        while i < 3 {
            octets[o].0[i - skip] = b'0' + digits[i];
            i += 1;
        }
        octets[o].0[3 - skip] = b'.';
        octets[o].1 = 4 - skip;
        o += 1;
    }
    octets
};

/// A click from one log line (without its newline); `None` if the line is not one.
pub fn parse_line(line: &str) -> Option<Click> {
    let mut f = line.split('\t');
    let at: i64 = f.next()?.parse().ok()?;
    if !crate::stats::DAYS.contains(&at.div_euclid(DAY)) {
        return None;
    }
    let (domain, code) = (f.next()?, f.next()?);
    let device = Device::parse(f.next()?)?;
    let referrer = f.next()?;
    let client: IpAddr = f.next()?.parse().ok()?;
    if f.next().is_some() || domain.is_empty() || code.is_empty() {
        return None;
    }
    Some(Click::from_parts(
        at,
        domain,
        code,
        Some(referrer).filter(|r| !r.is_empty()),
        device,
        client,
    ))
}

/// Deletes the log files that hold only clicks before `since` (UTC seconds): a file holds its
/// own day and stragglers of the day before, so it goes once its day is over before `since`.
pub(crate) fn remove_before(dir: &Path, since: i64) -> Result<usize, ClickError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(ClickError::io(dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| ClickError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let (Some(day), true) = (file_day(&name), is_log(&name)) {
            if (day + 1) * DAY <= since {
                fs::remove_file(entry.path()).map_err(|e| ClickError::io(&entry.path(), e))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// What reading the logs found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReadReport {
    /// Clicks read (in the time range).
    pub clicks: u64,
    /// Lines that were not clicks (a torn last line after a crash, or damage).
    pub skipped: u64,
}

/// Calls `on` with every logged click at or after `since` and before `until` (UTC seconds), file
/// by file in time order.
pub fn read_logs(
    dir: &Path,
    since: i64,
    until: i64,
    mut on: impl FnMut(Click),
) -> Result<ReadReport, ClickError> {
    scan(dir, since, until, |c, _| on(c))
}

/// [`read_logs`], also handing over the position just after each click's line.
pub(crate) fn scan(
    dir: &Path,
    since: i64,
    until: i64,
    mut on: impl FnMut(Click, (&str, u64)),
) -> Result<ReadReport, ClickError> {
    let mut report = ReadReport::default();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for (name, path, _) in log_files(dir)? {
        let Some(day) = file_day(&name) else {
            continue;
        };
        // A file holds its own day and stragglers of the one before.
        if day >= since.div_euclid(DAY) && day - 1 <= until.div_euclid(DAY) {
            files.push((name, path));
        }
    }
    files.sort();
    for (name, path) in files {
        let stem = name.strip_suffix(".gz").unwrap_or(&name);
        // The compressor may have replaced a closed `.tsv` by its `.tsv.gz` since the listing.
        let (file, gzip) = match File::open(&path) {
            Ok(file) => (file, name.ends_with(".gz")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !name.ends_with(".gz") => {
                let gz = path.with_file_name(format!("{name}.gz"));
                match File::open(&gz) {
                    Ok(file) => (file, true),
                    Err(e) => return Err(ClickError::io(&gz, e)),
                }
            }
            Err(e) => return Err(ClickError::io(&path, e)),
        };
        let reader: Box<dyn BufRead> = if gzip {
            Box::new(BufReader::new(flate2::read::GzDecoder::new(file)))
        } else {
            Box::new(BufReader::new(file))
        };
        let mut offset = 0u64;
        for line in reader.split(b'\n') {
            let line = match line {
                Ok(line) => line,
                // A compressed file cut short (a crash mid-compression never leaves one, but a
                // damaged disk may): what was read stands.
                Err(e) if name.ends_with(".gz") => {
                    tracing::warn!(file = %path.display(), error = %e, "damaged compressed click log");
                    report.skipped += 1;
                    break;
                }
                Err(e) => return Err(ClickError::io(&path, e)),
            };
            offset += line.len() as u64 + 1;
            match std::str::from_utf8(&line).ok().and_then(parse_line) {
                Some(c) if c.at >= since && c.at < until => {
                    report.clicks += 1;
                    on(c, (stem, offset));
                }
                Some(_) => {}
                None => report.skipped += 1,
            }
        }
    }
    Ok(report)
}

/// The raw log files in `dir`: name, path and size on disk.
pub(crate) fn log_files(dir: &Path) -> Result<Vec<(String, PathBuf, u64)>, ClickError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ClickError::io(dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ClickError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_log(&name) {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            files.push((name, entry.path(), len));
        }
    }
    files.sort();
    // A crash between compressing a file and removing the original leaves both; the
    // compressed copy was complete before its rename, so it is the one read.
    let compressed: std::collections::HashSet<String> = files
        .iter()
        .filter_map(|(n, _, _)| n.strip_suffix(".gz").map(str::to_owned))
        .collect();
    files.retain(|(n, _, _)| !compressed.contains(n));
    Ok(files)
}

/// Compresses a closed log file to `NAME.gz` (temp file, fsync, rename), then removes it.
pub(crate) fn compress(path: &Path) -> Result<(), ClickError> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(());
    };
    let gz = path.with_file_name(format!("{name}.gz"));
    let tmp = path.with_file_name(format!("{name}.gz.tmp"));
    let result = (|| {
        let mut input = BufReader::new(File::open(path)?);
        let out = File::create(&tmp)?;
        // Level 1: click lines compress about fourfold even so, at several times the speed.
        let mut enc =
            flate2::write::GzEncoder::new(BufWriter::new(out), flate2::Compression::fast());
        // A piece at a time, making way for other threads between them: even at the lowest
        // priority a thread that gets the core keeps it for a scheduler slice, milliseconds in
        // which the redirects sharing it wait.
        let mut piece = vec![0; 32 << 10];
        loop {
            let n = input.read(&mut piece)?;
            if n == 0 {
                break;
            }
            enc.write_all(&piece[..n])?;
            std::thread::yield_now();
        }
        let out = enc.finish()?.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()?;
        // Deleted meanwhile (retention, the size cap): do not bring it back compressed.
        if !path.exists() {
            return fs::remove_file(&tmp);
        }
        fs::rename(&tmp, &gz)?;
        fs::remove_file(path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| ClickError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_files_are_removed_whole_days_only() {
        let dir = std::env::temp_dir().join(format!("dl-clicks-rm-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        for name in [
            "clicks-20250101-000.tsv",
            "clicks-20250102-000.tsv",
            "notes.txt",
        ] {
            fs::write(dir.join(name), b"").expect("file");
        }
        let jan2 = 1_735_776_000; // 2025-01-02T00:00:00Z
        assert_eq!(remove_before(&dir, jan2 + 3600).expect("remove"), 1);
        let mut left: Vec<String> = fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["clicks-20250102-000.tsv", "notes.txt"]);
        let _ = fs::remove_dir_all(&dir);
    }

    /// A time outside 1970 to 9999 is a damaged line, not a click on a day of its own.
    #[test]
    fn a_line_of_an_absurd_time_is_refused() {
        let line = |at: &str| format!("{at}\tgo.example.cn\tx7Kp2Qa\tmobile\t\t203.0.113.0");
        assert!(parse_line(&line("1764067200")).is_some());
        assert!(parse_line(&line("253402300799")).is_some());
        for at in [
            "253402300800",
            "99999999999999999",
            "-1",
            "-9223372036854775808",
        ] {
            assert!(parse_line(&line(at)).is_none(), "{at}");
        }
    }

    /// The redirect path's line is the line of the same click as read back and re-encoded.
    #[test]
    fn a_visit_appends_the_line_its_click_encodes() {
        let mut stamp = Stamp::default();
        let mut out = b"earlier\n".to_vec();
        for (at, client, referer) in [
            (
                1_764_000_000,
                "203.0.113.77",
                Some(&b"https://WeiBo.com/x"[..]),
            ),
            (1_764_000_000, "10.0.100.9", None),
            (1_764_000_001, "0.99.255.1", Some(&b"not a url"[..])),
            (-5, "2001:db8:abcd:12::1", Some(&b"http://t.co"[..])),
            (7, "::ffff:198.51.100.9", None),
        ] {
            let client: IpAddr = client.parse().expect("ip");
            let visit = Visit::new(
                at,
                "go.example.cn",
                "x7Kp2Qa",
                referer,
                Device::Mobile,
                client,
            );
            let start = out.len();
            let spans = append_visit(&visit, &mut stamp, &mut out);
            let mut want = Vec::new();
            let click = Click::new(
                visit.at,
                visit.domain,
                visit.code,
                referer,
                visit.device,
                client,
            );
            encode_line(&click, &mut want);
            assert_eq!(
                String::from_utf8_lossy(&out[start..]),
                String::from_utf8_lossy(&want)
            );
            assert_eq!(&out[spans.key], b"go.example.cn\tx7Kp2Qa");
            assert_eq!(
                &out[spans.referrer],
                click.referrer().unwrap_or("").as_bytes()
            );
        }
    }

    /// `push_rest`'s tables against the standard formatter: every octet in every place, every
    /// device, with and without a referrer, and IPv6.
    #[test]
    fn the_fields_after_the_key_are_as_the_standard_formatter_writes_them() {
        let devices = Device::ALL;
        for o in 0..=255u8 {
            for (i, client) in [[o, 0, 0, 0], [1, o, 2, 3], [10, 20, o, 30], [255, 9, 99, o]]
                .into_iter()
                .enumerate()
            {
                let client = IpAddr::from(client);
                let device = devices[(usize::from(o) + i) % 4];
                let referrer = if o % 2 == 0 { "weibo.com" } else { "" };
                let mut out = b"x".to_vec();
                push_rest(&mut out, device, referrer.as_bytes(), client);
                let want = format!("x\t{}\t{referrer}\t{client}\n", device.as_str());
                assert_eq!(String::from_utf8_lossy(&out), want);
            }
        }
        let client: IpAddr = "2001:db8::7".parse().expect("ip");
        let mut out = Vec::new();
        push_rest(&mut out, Device::Bot, b"", client);
        assert_eq!(out, b"\tbot\t\t2001:db8::7\n");
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 99, 100, 101, 255, 1_764_067_200, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }

    #[test]
    fn days_rotate_files_and_lines_round_trip() {
        let dir = std::env::temp_dir().join(format!("dl-clicks-log-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut w = LogWriter::new(&dir, 1 << 20).expect("writer");
        let ip: IpAddr = "192.0.2.55".parse().expect("ip");
        let day0 = 1_764_028_800; // 2025-11-25T00:00:00Z
        let clicks = [
            Click::new(
                day0 + 10,
                "go.example.cn",
                "a",
                Some(b"https://t.co/x"),
                Device::Mobile,
                ip,
            ),
            Click::new(day0 + DAY + 5, "go.example.cn", "b", None, Device::Bot, ip),
            // A straggler from the day before goes into the current file.
            Click::new(day0 + 20, "s.example.com", "c", None, Device::Desktop, ip),
        ];
        for c in &clicks {
            w.append(c).expect("append");
        }
        w.flush().expect("flush");
        let mut names: Vec<String> = fs::read_dir(&dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["clicks-20251125-000.tsv", "clicks-20251126-000.tsv"]
        );
        // A torn line at the end is skipped, not fatal.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(&names[1]))
            .expect("open");
        f.write_all(b"1764115300\tgo.exa").expect("tear");
        let mut got = Vec::new();
        let report = read_logs(&dir, 0, i64::MAX, |c| got.push(c)).expect("read");
        assert_eq!(
            report,
            ReadReport {
                clicks: 3,
                skipped: 1
            }
        );
        assert_eq!(got, clicks);
        let mut since = Vec::new();
        read_logs(&dir, day0 + DAY, i64::MAX, |c| since.push(c)).expect("read");
        assert_eq!(since, [clicks[1].clone()]);
        let _ = fs::remove_dir_all(&dir);
    }
}
