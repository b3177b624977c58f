//! The quarantine: damaged journal bytes, kept for inspection instead of thrown away.
//!
//! It is a directory beside the journal's (`DIR/journal` → `DIR/journal-quarantine`), so it
//! survives a salvage swapping the journal directory out. Each damaged region becomes one file,
//! `<segment>-<offset>.bin`, holding the bytes exactly as they were, and one line of
//! `index.jsonl` saying where they came from:
//!
//! ```text
//! {"file":"00000000000000000001-1187.bin","source":"data/journal/00000000000000000001.log",
//!  "offset":1187,"bytes":53,"first_seq":42,"last_seq":42,"reason":"…","unix_time":1767225600}
//! ```
//! (one line per entry; `last_seq` is null where the damage ran to the end of the journal and
//! how many records it held is unknown, both are null where it held no record).
use crate::error::{io_err, JournalError};
use crate::files::{create_dir_durably, sibling, unused, write_atomic};
use crate::range::SeqRange;
use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The index of quarantined regions, one JSON object per line.
pub(crate) const INDEX: &str = "index.jsonl";

/// Where damaged bytes of the journal in `journal_dir` are kept: the sibling directory
/// `<journal dir>-quarantine` (for a data directory, `DIR/journal-quarantine`).
pub fn quarantine_dir(journal_dir: &Path) -> PathBuf {
    sibling(journal_dir, "-quarantine")
}

/// One damaged region to keep.
pub(crate) struct Entry<'a> {
    pub(crate) source: &'a Path,
    pub(crate) offset: u64,
    pub(crate) bytes: &'a [u8],
    pub(crate) seqs: Option<SeqRange>,
    pub(crate) reason: &'a str,
}

/// Copies a damaged region into the quarantine of `journal_dir` and indexes it; returns the
/// file it went to. Written in full and synced before the caller cuts or swaps anything away.
pub(crate) fn put(journal_dir: &Path, entry: &Entry<'_>) -> Result<PathBuf, JournalError> {
    let dir = quarantine_dir(journal_dir);
    create_dir_durably(&dir)?;
    let stem = entry
        .source
        .file_stem()
        .map_or_else(|| "segment".into(), |s| s.to_string_lossy());
    // A region at the same place can be quarantined twice (a record lost there, the offset
    // reused by a later write, damaged again): never overwrite the first.
    let base = dir.join(format!("{stem}-{}", entry.offset));
    let file = {
        let mut name = unused(&base).into_os_string();
        name.push(".bin");
        PathBuf::from(name)
    };
    write_atomic(&file, entry.bytes)?;

    let index = dir.join(INDEX);
    let mut text = match fs::read_to_string(&index) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err(&index)(e)),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    let name = file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let (first, last) = match entry.seqs {
        Some(r) => (
            r.first.to_string(),
            r.last.map_or("null".into(), |l| l.to_string()),
        ),
        None => ("null".into(), "null".into()),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let _ = writeln!(
        text,
        "{{\"file\":{},\"source\":{},\"offset\":{},\"bytes\":{},\"first_seq\":{first},\"last_seq\":{last},\"reason\":{},\"unix_time\":{now}}}",
        json_str(&name),
        json_str(&entry.source.display().to_string()),
        entry.offset,
        entry.bytes.len(),
        json_str(entry.reason),
    );
    write_atomic(&index, text.as_bytes())?;
    Ok(file)
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::json_str;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_str("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
