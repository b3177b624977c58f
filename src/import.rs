//! Bulk input: CSV (header row, columns by name) or JSON Lines, into a snapshot builder.
//!
//! Every row is checked with the link model; the first bad row stops the build with
//! `FILE:LINE: field: reason`, and repeated `(domain, code)` pairs are listed together.
use anyhow::{anyhow, bail, Context, Result};
use duanlian_link::{parse_url, Code, Domain, ForwardQuery, Link, Redirect, Validity};
use duanlian_snapshot::{BuildError, Builder, Table};
use std::collections::HashMap;
use std::fmt;
use std::io::{BufRead, IsTerminal, Read};
use std::path::Path;

/// Input formats of `snapshot build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    pub(crate) fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            _ => None,
        }
    }
}

const COLUMNS: &[&str] = &[
    "url",
    "code",
    "domain",
    "redirect",
    "expires_at",
    "valid_since",
    "created_at",
    "forward_query",
    "expires_in",
    "max_visits",
    "expired_url",
];

/// A row's fields before validation. Empty optional CSV cells are `None`.
#[derive(Default)]
struct RawRow<'a> {
    url: Option<&'a str>,
    code: Option<&'a str>,
    domain: Option<&'a str>,
    redirect: Option<u16>,
    expires_at: Option<i64>,
    valid_since: Option<i64>,
    created_at: Option<i64>,
    forward_query: Option<ForwardQuery>,
    expires_in: Option<i64>,
    max_visits: Option<u64>,
    expired_url: Option<&'a str>,
}

/// A bad field: `field: reason`.
#[derive(Debug)]
struct FieldError {
    field: String,
    reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

fn field_err(field: &str, reason: impl fmt::Display) -> FieldError {
    FieldError {
        field: field.to_owned(),
        reason: reason.to_string(),
    }
}

struct Converter {
    default_domain: Option<Domain>,
    now: i64,
    // Most files use a handful of domains: validate each spelling once.
    domains: HashMap<String, Domain>,
}

impl Converter {
    fn link(&mut self, row: RawRow<'_>) -> Result<Link, FieldError> {
        let url = row.url.ok_or_else(|| field_err("url", "missing"))?;
        let code = row.code.ok_or_else(|| field_err("code", "missing"))?;
        let domain = match row.domain {
            Some(d) => match self.domains.get(d) {
                Some(d) => d.clone(),
                None => {
                    let parsed = Domain::parse(d).map_err(|e| field_err("domain", e))?;
                    self.domains.insert(d.to_owned(), parsed.clone());
                    parsed
                }
            },
            None => self
                .default_domain
                .clone()
                .ok_or_else(|| field_err("domain", "missing, and no --default-domain given"))?,
        };
        let link_err = |e: duanlian_link::LinkError| field_err(e.field(), e);
        let expires_at = match (row.expires_at, row.expires_in) {
            (Some(_), Some(_)) => {
                return Err(field_err(
                    "expires_in",
                    "give expires_at or expires_in, not both",
                ))
            }
            (at, within) => at.or(within.map(|d| self.now.saturating_add(d))),
        };
        if let Some((field, _)) = [
            ("expires_at", row.expires_at),
            (
                "expires_in",
                expires_at.filter(|_| row.expires_in.is_some()),
            ),
            ("valid_since", row.valid_since),
        ]
        .into_iter()
        .find(|(_, t)| t.is_some_and(|t| t > duanlian_link::LATEST_INSTANT))
        {
            return Err(field_err(field, duanlian_link::LATEST_INSTANT_REASON));
        }
        let expired_url = row
            .expired_url
            .map(|u| parse_url(u).map_err(|e| field_err("expired_url", e)))
            .transpose()?;
        Ok(Link {
            domain,
            code: Code::parse_new(code).map_err(link_err)?,
            url: parse_url(url).map_err(link_err)?,
            redirect: match row.redirect {
                Some(s) => Redirect::from_status(s).map_err(link_err)?,
                None => Redirect::default(),
            },
            validity: Validity::new(row.valid_since, expires_at)
                .and_then(|v| v.with_max_visits(row.max_visits))
                .map_err(link_err)?,
            created_at: row.created_at.unwrap_or(self.now),
            forward_query: row.forward_query.unwrap_or_default(),
            expired_url,
        })
    }
}

/// What a build read.
#[derive(Debug)]
pub(crate) struct Imported {
    pub(crate) table: Table,
    pub(crate) rows: usize,
}

/// Reads `path` and lays out the table.
pub(crate) fn import(
    path: &Path,
    format: Format,
    default_domain: Option<Domain>,
) -> Result<Imported> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    import_from(
        &path.display().to_string(),
        file,
        size,
        format,
        default_domain,
    )
}

/// Reads links from `input` (of about `size` bytes), naming it `name` in every error.
pub(crate) fn import_from(
    name: &str,
    input: impl Read,
    size: u64,
    format: Format,
    default_domain: Option<Domain>,
) -> Result<Imported> {
    let progress = Progress::new(size);
    let mut conv = Converter {
        default_domain,
        now: duanlian_link::now_secs(),
        domains: HashMap::new(),
    };
    let mut builder = Builder::new();
    // About 100 bytes a row in typical files; a rough reservation saves most regrowth.
    builder.reserve((size / 100) as usize, 80);
    let mut lines: Vec<u64> = Vec::new();
    let mut on_row = |line: u64, row: Result<RawRow<'_>, FieldError>, pos: u64| -> Result<()> {
        let link = row
            .and_then(|r| conv.link(r))
            .map_err(|e| anyhow!("{name}:{line}: {e}"))?;
        builder
            .push(&link)
            .map_err(|e| anyhow!("{name}:{line}: {e}"))?;
        lines.push(line);
        progress.tick(lines.len(), pos);
        Ok(())
    };
    let reader = std::io::BufReader::with_capacity(1 << 20, input);
    match format {
        Format::Csv => read_csv(name, reader, &mut on_row)?,
        Format::Jsonl => read_jsonl(name, reader, &mut on_row)?,
    }
    progress.finish();
    let rows = lines.len();
    let table = builder.finish().map_err(|e| match e {
        BuildError::Duplicates(d) => {
            let mut msg = format!("{name}: {} duplicate (domain, code) pairs:", d.len());
            for dup in d.iter().take(20) {
                msg.push_str(&format!(
                    "\n  {name}:{}: code: {}/{} already defined at line {}",
                    lines[dup.repeat], dup.domain, dup.code, lines[dup.first]
                ));
            }
            if d.len() > 20 {
                msg.push_str(&format!("\n  ... and {} more", d.len() - 20));
            }
            anyhow!(msg)
        }
        other => anyhow!("{name}: {other}"),
    })?;
    Ok(Imported { table, rows })
}

type OnRow<'r> = dyn FnMut(u64, Result<RawRow<'_>, FieldError>, u64) -> Result<()> + 'r;

fn read_csv(name: &str, input: impl Read, on_row: &mut OnRow<'_>) -> Result<()> {
    // Records end at '\n' only: with the default CRLF handling csv reports the line before the
    // real one for CRLF files. The '\r' then left on the last cell goes with the cell trimming.
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(input);
    let headers = rdr
        .byte_headers()
        .map_err(|e| anyhow!("{name}:1: header: {}", csv_reason(&e)))?
        .clone();
    let mut col: [Option<usize>; 11] = [None; 11];
    for (i, h) in headers.iter().enumerate() {
        let h = String::from_utf8_lossy(h);
        let h = h.trim().trim_start_matches('\u{feff}');
        match COLUMNS.iter().position(|c| c.eq_ignore_ascii_case(h)) {
            Some(k) if col[k].is_some() => bail!("{name}:1: header: column {h:?} appears twice"),
            Some(k) => col[k] = Some(i),
            None => bail!(
                "{name}:1: header: unknown column {h:?} (known: {})",
                COLUMNS.join(", ")
            ),
        }
    }
    for required in ["url", "code"] {
        if col[COLUMNS.iter().position(|c| *c == required).unwrap_or(0)].is_none() {
            bail!("{name}:1: header: required column {required:?} is missing");
        }
    }
    let mut rec = csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                bail!("{name}:{line}: row: {}", csv_reason(&e));
            }
        }
        let pos = rec.position().map_or((0, 0), |p| (p.line(), p.byte()));
        let row = csv_row(&rec, &col);
        on_row(pos.0, row, pos.1)?;
    }
}

fn csv_row<'a>(
    rec: &'a csv::ByteRecord,
    col: &[Option<usize>; 11],
) -> Result<RawRow<'a>, FieldError> {
    let cell = |k: usize| -> Result<Option<&'a str>, FieldError> {
        let Some(bytes) = col[k].and_then(|i| rec.get(i)) else {
            return Ok(None);
        };
        let s = std::str::from_utf8(bytes).map_err(|_| field_err(COLUMNS[k], "not valid UTF-8"))?;
        let s = s.trim();
        Ok((!s.is_empty()).then_some(s))
    };
    let int = |k: usize| -> Result<Option<i64>, FieldError> {
        cell(k)?
            .map(|s| {
                s.parse::<i64>().map_err(|_| {
                    field_err(
                        COLUMNS[k],
                        format!("{s:?} is not a whole number of UTC seconds"),
                    )
                })
            })
            .transpose()
    };
    // Instants: UTC seconds or RFC 3339.
    let instant = |k: usize| -> Result<Option<i64>, FieldError> {
        cell(k)?
            .map(|s| {
                s.parse::<i64>()
                    .ok()
                    .or_else(|| duanlian_link::parse_rfc3339(s))
                    .ok_or_else(|| {
                        field_err(
                            COLUMNS[k],
                            format!("{s:?} is neither UTC seconds nor an RFC 3339 time"),
                        )
                    })
            })
            .transpose()
    };
    Ok(RawRow {
        url: cell(0)?,
        code: cell(1)?,
        domain: cell(2)?,
        redirect: cell(3)?
            .map(|s| {
                s.parse::<u16>().map_err(|_| {
                    field_err(
                        "redirect",
                        format!("{s:?} is not one of 301, 302, 307, 308"),
                    )
                })
            })
            .transpose()?,
        expires_at: instant(4)?,
        valid_since: instant(5)?,
        created_at: int(6)?,
        forward_query: cell(7)?
            .map(|s| match s.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(ForwardQuery::Add),
                "false" | "0" | "no" => Ok(ForwardQuery::Off),
                "override" => Ok(ForwardQuery::Override),
                _ => Err(field_err(
                    "forward_query",
                    format!("{s:?} is not true, false or override"),
                )),
            })
            .transpose()?,
        expires_in: cell(8)?
            .map(|s| {
                duanlian_link::parse_duration(s)
                    .filter(|d| *d > 0)
                    .ok_or_else(|| {
                        field_err(
                            "expires_in",
                            format!("{s:?} is not a period such as 7d, 30d, 1y, 90m"),
                        )
                    })
            })
            .transpose()?,
        max_visits: cell(9)?
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| field_err("max_visits", format!("{s:?} is not a whole number")))
            })
            .transpose()?,
        expired_url: cell(10)?,
    })
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => {
            format!("has {len} fields, the header has {expected_len}")
        }
        csv::ErrorKind::Io(io) => io.to_string(),
        _ => e.to_string(),
    }
}

fn read_jsonl(name: &str, input: impl BufRead, on_row: &mut OnRow<'_>) -> Result<()> {
    let (mut line_no, mut pos) = (0u64, 0u64);
    for line in input.split(b'\n') {
        let line = line.with_context(|| name.to_string())?;
        line_no += 1;
        pos += line.len() as u64 + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let value: serde_json::Value = serde_json::from_slice(&line)
            .map_err(|e| anyhow!("{name}:{line_no}: row: not valid JSON ({e})"))?;
        let serde_json::Value::Object(obj) = &value else {
            bail!("{name}:{line_no}: row: expected a JSON object");
        };
        on_row(line_no, json_row(obj), pos)?;
    }
    Ok(())
}

fn json_row(obj: &serde_json::Map<String, serde_json::Value>) -> Result<RawRow<'_>, FieldError> {
    use serde_json::Value;
    let mut row = RawRow::default();
    for (k, v) in obj {
        if v.is_null() {
            continue;
        }
        let text = || v.as_str().ok_or_else(|| field_err(k, "must be a string"));
        let int = || {
            v.as_i64()
                .ok_or_else(|| field_err(k, "must be a whole number of UTC seconds"))
                .map(Some)
        };
        let instant = || {
            v.as_i64()
                .or_else(|| v.as_str().and_then(duanlian_link::parse_rfc3339))
                .ok_or_else(|| field_err(k, "must be UTC seconds or an RFC 3339 time"))
                .map(Some)
        };
        match k.as_str() {
            "url" => row.url = Some(text()?),
            "code" => row.code = Some(text()?),
            "domain" => row.domain = Some(text()?),
            "redirect" => {
                let status = match v {
                    Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
                    Value::String(s) => s.parse().ok(),
                    _ => None,
                };
                row.redirect =
                    Some(status.ok_or_else(|| field_err(k, "is not one of 301, 302, 307, 308"))?);
            }
            "expires_at" => row.expires_at = instant()?,
            "valid_since" => row.valid_since = instant()?,
            "expires_in" => {
                let d = match v {
                    Value::Number(n) => n.as_i64(),
                    Value::String(s) => duanlian_link::parse_duration(s),
                    _ => None,
                };
                row.expires_in = Some(d.filter(|d| *d > 0).ok_or_else(|| {
                    field_err(
                        k,
                        "must be a period such as \"7d\", \"30d\", \"1y\", \"90m\", or seconds",
                    )
                })?);
            }
            "max_visits" => {
                row.max_visits = Some(
                    v.as_u64()
                        .ok_or_else(|| field_err(k, "must be a whole number"))?,
                )
            }
            "expired_url" => row.expired_url = Some(text()?),
            "created_at" => row.created_at = int()?,
            "forward_query" => {
                row.forward_query = Some(match v {
                    serde_json::Value::Bool(true) => ForwardQuery::Add,
                    serde_json::Value::Bool(false) => ForwardQuery::Off,
                    serde_json::Value::String(s) if s == "override" => ForwardQuery::Override,
                    _ => return Err(field_err(k, "must be true, false or \"override\"")),
                })
            }
            _ => {
                return Err(field_err(
                    k,
                    format!("unknown field (known: {})", COLUMNS.join(", ")),
                ))
            }
        }
    }
    Ok(row)
}

/// A progress bar on stderr, only when a person is watching.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(bytes: u64) -> Progress {
        if !std::io::stderr().is_terminal() || bytes < 8 << 20 {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new(bytes);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} reading {bytes}/{total_bytes} [{bar:30}] {msg} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress(Some(bar))
    }

    fn tick(&self, rows: usize, pos: u64) {
        if let Some(bar) = &self.0 {
            if rows.is_multiple_of(65_536) {
                bar.set_position(pos);
                bar.set_message(format!("{rows} links"));
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
