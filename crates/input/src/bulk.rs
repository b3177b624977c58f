//! Bulk input: CSV (a header row, columns by name) or JSON Lines, into a snapshot table.
//!
//! Every row goes through the same [`Fields`] the admin API reads. The whole file is read before
//! a bad one is refused: `FILE:LINE: field: reason` for each bad field of the first
//! [`MAX_BAD_ROWS`] bad rows, then how many more; repeated `(domain, code)` pairs are listed
//! together.
pub use crate::encoding::Encoding;
use crate::encoding::{Decode, NotGbk, NOT_UTF8};
use crate::fields::{FieldError, Fields, Form, Rules, Value};
use duanlian_link::{now_secs, Domain};
use duanlian_snapshot::{BuildError, Builder, Table};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, Read};
use std::path::Path;
use std::rc::Rc;

/// Input formats of a bulk file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    /// The format a file's extension says (`.csv`, `.jsonl`, `.ndjson`).
    pub fn from_path(path: &Path) -> Option<Format> {
        Format::from_name(path.extension()?.to_str()?)
    }

    /// `csv`, `jsonl` or `ndjson`, in any case.
    pub fn from_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

/// Why a bulk file was not read into a table. Each names the file (the line, where there is
/// one) as `name`: the name [`Source::name`] gave it.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // The fields are what the messages say.
pub enum BulkError {
    /// The file could not be read.
    #[error("{name}: {error}")]
    Io { name: String, error: std::io::Error },
    /// The CSV header row is wrong.
    #[error("{name}:1: header: {reason}")]
    Header { name: String, reason: String },
    /// A line that is not a row at all (broken CSV quoting, not JSON).
    #[error("{name}:{line}: row: {reason}")]
    Row {
        name: String,
        line: u64,
        reason: String,
    },
    /// Rows with bad fields: the first [`MAX_BAD_ROWS`] of them, each bad field on a line of
    /// the message, and how many rows were bad in all (the whole file is read, so that one run
    /// names every row to fix).
    #[error("{}", bad_rows(.name, *.count, .rows))]
    Fields {
        name: String,
        count: usize,
        rows: Vec<(u64, Vec<FieldError>)>,
    },
    /// The same `(domain, code)` on several lines: `repeats` holds (line, domain, code, first
    /// line) for up to 20 of them.
    #[error("{}", duplicates(.name, *.count, .repeats))]
    Duplicates {
        name: String,
        count: usize,
        repeats: Vec<(u64, String, String, u64)>,
    },
    /// The table cannot hold the links (too many, too many domains).
    #[error("{name}: {error}")]
    Table { name: String, error: BuildError },
}

/// The bad rows a message names; the rest are counted.
pub const MAX_BAD_ROWS: usize = 100;

fn bad_rows(name: &str, count: usize, rows: &[(u64, Vec<FieldError>)]) -> String {
    let mut all: Vec<String> = rows
        .iter()
        .flat_map(|(line, errors)| errors.iter().map(move |e| format!("{name}:{line}: {e}")))
        .collect();
    if count > rows.len() {
        let more = count - rows.len();
        let noun = if more == 1 { "row" } else { "rows" };
        all.push(format!("{name}: ... and {more} more bad {noun}"));
    }
    all.join("\n")
}

fn duplicates(name: &str, count: usize, repeats: &[(u64, String, String, u64)]) -> String {
    let mut msg = format!("{name}: {count} duplicate (domain, code) pairs:");
    for (line, domain, code, first) in repeats {
        msg.push_str(&format!(
            "\n  {name}:{line}: code: {domain}/{code} already defined at line {first}"
        ));
    }
    if count > repeats.len() {
        msg.push_str(&format!("\n  ... and {} more", count - repeats.len()));
    }
    msg
}

/// A bulk file being read.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The name errors give the file.
    pub name: &'a str,
    /// About how many bytes it has (for reserving space; 0 if unknown).
    pub size: u64,
    /// CSV or JSON Lines.
    pub format: Format,
    /// The domain of rows that name none.
    pub default_domain: Option<&'a Domain>,
    /// How its bytes are text.
    pub encoding: Encoding,
}

/// What a bulk read made.
#[derive(Debug)]
pub struct Imported {
    /// The links, laid out for a snapshot.
    pub table: Table,
    /// How many rows the file had.
    pub rows: usize,
}

/// Reads every row of `input` into a snapshot table; `progress(rows, bytes)` is called every
/// 65,536 rows.
pub fn read(
    src: Source<'_>,
    input: impl Read,
    mut progress: impl FnMut(usize, u64),
) -> Result<Imported, BulkError> {
    let name = src.name;
    let rules = Rules::bulk(src.default_domain);
    let now = now_secs();
    let mut builder = Builder::new();
    // About 100 bytes a row in typical files; a rough reservation saves most regrowth.
    builder.reserve((src.size / 100) as usize, 80);
    let mut lines: Vec<u64> = Vec::new();
    let (mut bad, mut bad_count) = (Vec::new(), 0usize);
    let mut on_row = |line: u64, fields: Fields, pos: u64| -> Result<(), BulkError> {
        let link = match fields.link(&rules, now) {
            Ok(link) => link,
            Err(errors) => {
                bad_count += 1;
                if bad.len() < MAX_BAD_ROWS {
                    bad.push((line, errors));
                }
                return Ok(());
            }
        };
        if bad_count > 0 {
            // The table is not made; later rows are only checked.
            return Ok(());
        }
        builder.push(&link).map_err(|error| BulkError::Table {
            name: format!("{name}:{line}"),
            error,
        })?;
        lines.push(line);
        if lines.len().is_multiple_of(65_536) {
            progress(lines.len(), pos);
        }
        Ok(())
    };
    let reader = Decode::new(input, src.encoding);
    match src.format {
        Format::Csv => read_csv(name, reader, &mut on_row)?,
        Format::Jsonl => read_jsonl(name, reader, &mut on_row)?,
    }
    if bad_count > 0 {
        return Err(BulkError::Fields {
            name: name.into(),
            count: bad_count,
            rows: bad,
        });
    }
    let rows = lines.len();
    let table = builder.finish().map_err(|e| match e {
        BuildError::Duplicates(d) => BulkError::Duplicates {
            name: name.into(),
            count: d.len(),
            repeats: d
                .iter()
                .take(20)
                .map(|dup| {
                    (
                        lines[dup.repeat],
                        dup.domain.clone(),
                        dup.code.clone(),
                        lines[dup.first],
                    )
                })
                .collect(),
        },
        error => BulkError::Table {
            name: name.into(),
            error,
        },
    })?;
    Ok(Imported { table, rows })
}

type OnRow<'r> = dyn FnMut(u64, Fields, u64) -> Result<(), BulkError> + 'r;

/// Most files use a handful of domains: each spelling is checked once.
#[derive(Default)]
struct Domains(HashMap<String, Domain>);

impl Domains {
    fn read(&mut self, fields: &mut Fields, raw: &str) {
        if let Some(d) = self.0.get(raw) {
            return fields.set_domain(d.clone());
        }
        match Domain::parse(raw) {
            Ok(d) => {
                self.0.insert(raw.to_owned(), d.clone());
                fields.set_domain(d);
            }
            // Read again to keep the error in the row's list.
            Err(_) => fields.read("domain", Value::Text(raw)),
        }
    }
}

/// Line numbers of CSV records. csv's own count is off after blank lines (and, with its default
/// CRLF handling, on CRLF files), so lines are counted here from the newlines read, and a
/// record's line found from where it ends (where it starts, csv counts the blank lines before
/// it in).
pub(crate) struct Lines<R> {
    inner: R,
    read: u64,
    /// Offsets of newlines read but not yet passed by a record.
    newlines: Rc<RefCell<VecDeque<u64>>>,
}

/// The other end of [`Lines`]: lines by byte offset, asked in increasing order.
pub(crate) struct LineOf {
    newlines: Rc<RefCell<VecDeque<u64>>>,
    passed: u64,
}

pub(crate) fn lines<R: Read>(inner: R) -> (Lines<R>, LineOf) {
    let newlines = Rc::new(RefCell::new(VecDeque::new()));
    let reader = Lines {
        inner,
        read: 0,
        newlines: newlines.clone(),
    };
    (
        reader,
        LineOf {
            newlines,
            passed: 0,
        },
    )
}

impl<R: Read> Read for Lines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut newlines = self.newlines.borrow_mut();
        for (i, _) in buf[..n].iter().enumerate().filter(|(_, &b)| b == b'\n') {
            newlines.push_back(self.read + i as u64);
        }
        self.read += n as u64;
        Ok(n)
    }
}

impl LineOf {
    /// The 1-based line that byte `at` is on.
    pub(crate) fn line(&mut self, at: u64) -> u64 {
        let mut newlines = self.newlines.borrow_mut();
        while newlines.front().is_some_and(|&nl| nl < at) {
            newlines.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }

    /// The line `rec` starts on, the reader being just past it.
    pub(crate) fn of_record<R: Read>(
        &mut self,
        rdr: &csv::Reader<R>,
        rec: &csv::ByteRecord,
    ) -> u64 {
        let end = rdr.position().byte();
        let inside: u64 = rec
            .iter()
            .map(|cell| cell.iter().filter(|&&b| b == b'\n').count() as u64)
            .sum();
        // The last byte is the record's own newline, if it has one.
        (self.line(end.saturating_sub(1))).saturating_sub(inside)
    }

    /// A record csv could not read (broken quoting, bytes not in the file's encoding), with
    /// its line.
    pub(crate) fn row_error(&mut self, name: &str, e: &csv::Error) -> BulkError {
        let decoder_line = match e.kind() {
            csv::ErrorKind::Io(io) => not_gbk(io).map(|n| n.line),
            _ => None,
        };
        let line = decoder_line.or_else(|| e.position().map(|p| self.line(p.byte())));
        BulkError::Row {
            name: name.into(),
            line: line.unwrap_or(0),
            reason: csv_reason(e),
        }
    }
}

/// A CSV reader as bulk files need: records end at '\n' (the '\r' of CRLF files goes with the
/// cell trimming), rows of any length (checked against the header by the caller, after blank
/// lines are skipped).
pub(crate) fn csv_reader<R: Read>(input: R, has_headers: bool) -> (csv::Reader<Lines<R>>, LineOf) {
    let (input, line_of) = lines(input);
    let rdr = csv::ReaderBuilder::new()
        .has_headers(has_headers)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(input);
    (rdr, line_of)
}

/// Whether a record is a blank line (a lone '\r' or spaces included).
pub(crate) fn is_blank(rec: &csv::ByteRecord) -> bool {
    rec.iter()
        .all(|cell| cell.iter().all(u8::is_ascii_whitespace))
}

fn read_csv(name: &str, input: impl Read, on_row: &mut OnRow<'_>) -> Result<(), BulkError> {
    let (mut rdr, mut line_of) = csv_reader(input, true);
    let header = |reason: String| BulkError::Header {
        name: name.into(),
        reason,
    };
    let headers = rdr
        .byte_headers()
        .map_err(|e| header(csv_reason(&e)))?
        .clone();
    // Column of the file → field name.
    let mut by_column: Vec<&'static str> = Vec::with_capacity(headers.len());
    for h in headers.iter() {
        let h = String::from_utf8_lossy(h);
        let h = h.trim().trim_start_matches('\u{feff}');
        match column_named(h, Form::Bulk) {
            Some(c) if by_column.contains(&c) => {
                return Err(header(format!("column {h:?} appears twice")))
            }
            Some(c) => by_column.push(c),
            None => {
                return Err(header(format!(
                    "unknown column {h:?} (known: {})",
                    Form::Bulk.fields().join(", ")
                )))
            }
        }
    }
    for required in ["url", "code"] {
        if !by_column.contains(&required) {
            return Err(header(format!("required column {required:?} is missing")));
        }
    }
    let mut domains = Domains::default();
    let mut rec = csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => return Err(line_of.row_error(name, &e)),
        }
        let pos = rec.position().map_or(0, |p| p.byte());
        let line = line_of.of_record(&rdr, &rec);
        if is_blank(&rec) {
            continue;
        }
        if rec.len() != headers.len() {
            return Err(BulkError::Row {
                name: name.into(),
                line,
                reason: format!("has {} fields, the header has {}", rec.len(), headers.len()),
            });
        }
        let mut fields = Fields::new(Form::Bulk);
        for (column, bytes) in by_column.iter().zip(rec.iter()) {
            let Ok(cell) = std::str::from_utf8(bytes) else {
                fields.read_error(column, "not_utf8", NOT_UTF8);
                continue;
            };
            match cell.trim() {
                "" => {}
                cell if *column == "domain" => domains.read(&mut fields, cell),
                cell => fields.read(column, Value::Text(cell)),
            }
        }
        on_row(line, fields, pos)?;
    }
}

/// The names operators give columns in Chinese spreadsheets, for the field each means.
const CHINESE_COLUMNS: &[(&str, &[&str])] = &[
    ("url", &["长链接", "原链接", "目标链接", "链接", "网址"]),
    ("code", &["短码", "自定义短码"]),
    ("domain", &["域名", "短链域名"]),
    ("redirect", &["跳转方式", "跳转类型"]),
    ("expires_at", &["过期时间", "到期时间"]),
    ("expires_in", &["有效期"]),
    ("valid_since", &["生效时间", "开始时间"]),
    ("max_visits", &["最大访问次数", "访问上限"]),
    ("expired_url", &["过期跳转", "过期后跳转"]),
    ("forward_query", &["转发参数"]),
    ("created_at", &["创建时间"]),
];

/// The field a column header names in `form`: its own name in any case, or a Chinese name.
pub(crate) fn column_named(header: &str, form: Form) -> Option<&'static str> {
    let fields = form.fields();
    if let Some(f) = fields.iter().find(|f| f.eq_ignore_ascii_case(header)) {
        return Some(f);
    }
    let (field, _) = CHINESE_COLUMNS
        .iter()
        .find(|(_, names)| names.contains(&header))?;
    fields.iter().find(|f| *f == field).copied()
}

fn csv_reason(e: &csv::Error) -> String {
    // (Rows of the wrong length are the callers' to refuse: the reader is flexible.)
    match e.kind() {
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => e.to_string(),
    }
}

/// The decoder's complaint inside an I/O error.
fn not_gbk(e: &std::io::Error) -> Option<&NotGbk> {
    e.get_ref()?.downcast_ref::<NotGbk>()
}

fn read_jsonl(name: &str, input: impl BufRead, on_row: &mut OnRow<'_>) -> Result<(), BulkError> {
    let (mut line_no, mut pos) = (0u64, 0u64);
    let mut domains = Domains::default();
    for line in input.split(b'\n') {
        let line = line.map_err(|error| match not_gbk(&error) {
            Some(n) => BulkError::Row {
                name: name.into(),
                line: n.line,
                reason: n.to_string(),
            },
            None => BulkError::Io {
                name: name.into(),
                error,
            },
        })?;
        line_no += 1;
        pos += line.len() as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let row = |reason: String| BulkError::Row {
            name: name.into(),
            line: line_no,
            reason,
        };
        if std::str::from_utf8(&line).is_err() {
            return Err(row(NOT_UTF8.into()));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&line).map_err(|e| row(format!("not valid JSON ({e})")))?;
        let serde_json::Value::Object(obj) = &value else {
            return Err(row("expected a JSON object".into()));
        };
        let mut fields = Fields::new(Form::Bulk);
        for (k, v) in obj {
            match v {
                serde_json::Value::String(d) if k == "domain" => domains.read(&mut fields, d),
                v => fields.read(k, Value::Json(v)),
            }
        }
        on_row(line_no, fields, pos)?;
    }
    Ok(())
}
