//! Link lists uploaded on the operator page: a CSV file (in any [`Encoding`]) or the first sheet
//! of an Excel workbook (`.xlsx`), one link to create a row, judged row by row so that the page
//! can show every row's result.
//!
//! The first row names the columns: the API's field names (`url`, `code`, `expires_at`...) or
//! the Chinese ones operators write (`长链接`, `短码`, `过期时间`...). A file whose first cell is
//! already a URL has no header: one column of URLs. Times without a zone (`2027-01-01 00:00:00`,
//! or a date cell) are read in the zone the page works in.
use crate::bulk::{column_named, BulkError};
use crate::encoding::{Decode, Encoding, NOT_UTF8};
use crate::fields::{Fields, Form, Value};
use std::io::Cursor;

/// The most rows an upload may have: a batch's worth.
pub const MAX_UPLOAD_ROWS: usize = 10_000;

/// How an upload is read.
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    /// The name errors give the file.
    pub name: &'a str,
    /// The text encoding of a CSV file.
    pub encoding: Encoding,
    /// The zone of times written without one, as seconds east of UTC (Asia/Shanghai: 28,800).
    pub utc_offset: i32,
    /// The validity period of rows that give no expiry (`7d`), if any.
    pub default_expires_in: Option<&'a str>,
}

/// One row: its line in the file (a spreadsheet's row number) and its fields, not yet judged.
#[derive(Debug)]
pub struct Row {
    /// 1-based, as the spreadsheet shows it.
    pub line: u64,
    /// The link to create, read with [`Form::Create`].
    pub fields: Fields,
}

/// Reads every row of an uploaded file. Errors are about the file as a whole (not CSV, no
/// header, too many rows); a row's bad fields stay in its [`Row::fields`].
pub fn read_upload(bytes: &[u8], up: &Upload<'_>) -> Result<Vec<Row>, BulkError> {
    let table = if bytes.starts_with(b"PK\x03\x04") {
        xlsx_cells(bytes, up.name)?
    } else {
        csv_cells(bytes, up)?
    };
    let mut rows = table.into_iter().filter(|(_, cells)| {
        cells
            .iter()
            .any(|c| !matches!(c, Cell::Text(t) if t.trim().is_empty()))
    });
    let Some((first_line, first)) = rows.next() else {
        return Err(header(up.name, "the file has no rows".into()));
    };
    let looks_like_url = |c: &Cell| match c {
        Cell::Text(t) => {
            let t = t.trim().to_ascii_lowercase();
            t.starts_with("http://") || t.starts_with("https://")
        }
        _ => false,
    };
    let (columns, first_row) = if first.first().is_some_and(looks_like_url) {
        if first.len() > 1 {
            return Err(header(
                up.name,
                "the first row must name the columns (url, code, ...), or the file must have only a column of URLs".into(),
            ));
        }
        (vec![Some("url")], Some(first))
    } else {
        (columns(&first, up.name)?, None)
    };
    let mut out = Vec::new();
    let data = first_row.map(|r| (first_line, r)).into_iter().chain(rows);
    for (line, cells) in data {
        if out.len() == MAX_UPLOAD_ROWS {
            return Err(BulkError::Row {
                name: up.name.into(),
                line,
                reason: format!("more than {MAX_UPLOAD_ROWS} rows; split the file"),
            });
        }
        out.push(Row {
            line,
            fields: row_fields(&columns, &cells, up),
        });
    }
    Ok(out)
}

fn header(name: &str, reason: String) -> BulkError {
    BulkError::Header {
        name: name.into(),
        reason,
    }
}

/// A cell as read from the file.
#[derive(Debug, Clone)]
enum Cell {
    Text(String),
    /// Bytes that are not text in the file's encoding.
    NotText,
    /// An Excel date: days since 1899-12-30, wall-clock time in the upload's zone.
    Date(f64),
    /// An Excel error value (`#N/A`...).
    Error,
}

type Table = Vec<(u64, Vec<Cell>)>;

fn csv_cells(bytes: &[u8], up: &Upload<'_>) -> Result<Table, BulkError> {
    let (mut rdr, mut line_of) = crate::bulk::csv_reader(Decode::new(bytes, up.encoding), false);
    let mut out = Vec::new();
    let mut rec = csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(true) => {}
            Ok(false) => return Ok(out),
            Err(e) => return Err(line_of.row_error(up.name, &e)),
        }
        let line = line_of.of_record(&rdr, &rec);
        let cells = rec
            .iter()
            .map(|b| match std::str::from_utf8(b) {
                Ok(s) => Cell::Text(s.trim().trim_start_matches('\u{feff}').to_owned()),
                Err(_) => Cell::NotText,
            })
            .collect();
        out.push((line, cells));
    }
}

fn xlsx_cells(bytes: &[u8], name: &str) -> Result<Table, BulkError> {
    use calamine::{Data, Reader, Xlsx};
    let not_xlsx =
        |e: &dyn std::fmt::Display| header(name, format!("not a readable .xlsx workbook ({e})"));
    let mut book: Xlsx<_> = Xlsx::new(Cursor::new(bytes)).map_err(|e| not_xlsx(&e))?;
    let range = match book.worksheet_range_at(0) {
        Some(Ok(range)) => range,
        Some(Err(e)) => return Err(not_xlsx(&e)),
        None => return Err(header(name, "the workbook has no sheets".into())),
    };
    let top = range.start().map_or(0, |(row, _)| u64::from(row));
    let left = range.start().map_or(0, |(_, col)| col as usize);
    let mut out = Vec::new();
    for (i, row) in range.rows().enumerate() {
        // Columns left of the first used one are empty: keep positions as the sheet has them.
        let mut cells = vec![Cell::Text(String::new()); left];
        cells.extend(row.iter().map(|c| match c {
            Data::Empty => Cell::Text(String::new()),
            Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => {
                Cell::Text(s.trim().to_owned())
            }
            Data::Int(n) => Cell::Text(n.to_string()),
            // Whole numbers typed into Excel come back as floats: 5, not 5.0.
            Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => {
                Cell::Text(format!("{}", *f as i64))
            }
            Data::Float(f) => Cell::Text(f.to_string()),
            Data::Bool(b) => Cell::Text(b.to_string()),
            Data::DateTime(d) => Cell::Date(d.as_f64()),
            Data::Error(_) => Cell::Error,
        }));
        out.push((top + i as u64 + 1, cells));
    }
    Ok(out)
}

/// The field each column holds; a column with an empty header is ignored.
fn columns(first: &[Cell], name: &str) -> Result<Vec<Option<&'static str>>, BulkError> {
    let form = Form::Create;
    let mut out: Vec<Option<&'static str>> = Vec::with_capacity(first.len());
    for cell in first {
        let h = match cell {
            Cell::Text(t) => t.trim(),
            _ => return Err(header(name, "a column's name is not text".into())),
        };
        if h.is_empty() {
            out.push(None);
            continue;
        }
        match column_named(h, form) {
            Some(c) if out.contains(&Some(c)) => {
                return Err(header(name, format!("column {h:?} appears twice")))
            }
            Some(c) => out.push(Some(c)),
            None => {
                return Err(header(
                    name,
                    format!("unknown column {h:?} (known: {})", form.fields().join(", ")),
                ))
            }
        }
    }
    if !out.contains(&Some("url")) {
        return Err(header(name, "required column \"url\" is missing".into()));
    }
    Ok(out)
}

fn row_fields(columns: &[Option<&'static str>], cells: &[Cell], up: &Upload<'_>) -> Fields {
    let mut fields = Fields::new(Form::Create);
    let mut expiry_given = false;
    for (column, cell) in columns.iter().zip(cells) {
        let Some(column) = *column else { continue };
        let is_time = matches!(column, "expires_at" | "valid_since");
        let text = match cell {
            Cell::Text(t) if t.is_empty() => continue,
            Cell::Text(t) if is_time => local_time(t, up.utc_offset).unwrap_or_else(|| t.clone()),
            Cell::Text(t) => t.clone(),
            Cell::Date(days) if is_time => excel_instant(*days, up.utc_offset).to_string(),
            Cell::Date(days) => days.to_string(),
            Cell::NotText => {
                fields.read_error(column, "not_utf8", NOT_UTF8);
                continue;
            }
            Cell::Error => {
                fields.read_error(
                    column,
                    "cell_error",
                    "the cell holds an error value (#N/A, #REF!...)",
                );
                continue;
            }
        };
        expiry_given |= matches!(column, "expires_at" | "expires_in");
        fields.read(column, Value::Text(&text));
    }
    if let (false, Some(period)) = (expiry_given, up.default_expires_in) {
        fields.read("expires_in", Value::Text(period));
    }
    fields
}

/// UTC seconds of an Excel date serial (days since 1899-12-30) that is wall-clock time at
/// `utc_offset`.
fn excel_instant(days: f64, utc_offset: i32) -> i64 {
    const UNIX_EPOCH_SERIAL: f64 = 25_569.0;
    ((days - UNIX_EPOCH_SERIAL) * 86_400.0).round() as i64 - i64::from(utc_offset)
}

/// `2027-01-01 00:00:00`, `2027/1/1 8:00`, `2027-01-01`: a wall-clock time at `utc_offset`, as
/// RFC 3339. `None` for anything else (UTC seconds, RFC 3339), which is read as it is.
fn local_time(text: &str, utc_offset: i32) -> Option<String> {
    let text = text.trim();
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((d, t)) => (d, t.trim()),
        None => (text, "0:00"),
    };
    let mut ymd = date.split(['-', '/']).map(|p| p.parse::<u32>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    if ymd.next().is_some() || !(1970..=9999).contains(&y) {
        return None;
    }
    let mut hms = time.split(':').map(|p| p.parse::<u32>().ok());
    let (h, min) = (hms.next()??, hms.next()??);
    let s = hms.next().unwrap_or(Some(0))?;
    if hms.next().is_some() {
        return None;
    }
    let sign = if utc_offset < 0 { '-' } else { '+' };
    let off = utc_offset.unsigned_abs();
    Some(format!(
        "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}{sign}{:02}:{:02}",
        off / 3600,
        off % 3600 / 60
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rules;
    use duanlian_link::Domain;

    const SHANGHAI: i32 = 8 * 3600;

    fn upload(name: &str) -> Upload<'_> {
        Upload {
            name,
            encoding: Encoding::Auto,
            utc_offset: SHANGHAI,
            default_expires_in: Some("7d"),
        }
    }

    #[test]
    fn a_workbook_row_by_row() {
        let bytes = include_bytes!("../tests/fixtures/links.xlsx");
        let rows = read_upload(bytes, &upload("links.xlsx")).expect("rows");
        assert_eq!(rows.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3, 4]);
        let domains = [Domain::parse("go.example.cn").expect("domain")];
        let rules = Rules::api(&domains, 7);
        let now = 1_767_225_600; // 2026-01-01
        let mut rows = rows.into_iter();
        let first = rows
            .next()
            .expect("row 2")
            .fields
            .new_link(&rules, now)
            .expect("valid");
        assert_eq!(first.code.as_ref().map(|c| c.as_str()), Some("xlsx1"));
        assert_eq!(first.validity.max_visits, Some(5));
        // The date cell 2027-01-01 00:00 in Shanghai.
        assert_eq!(
            first.validity.expires_at,
            Some(1_798_761_600 - SHANGHAI as i64)
        );
        assert!(first.url.contains("%E5%95%86"));
        let errors = rows
            .next()
            .expect("row 3")
            .fields
            .new_link(&rules, now)
            .expect_err("bad");
        assert_eq!(errors[0].code, "url_scheme");
        let third = rows
            .next()
            .expect("row 4")
            .fields
            .new_link(&rules, now)
            .expect("valid");
        // Text in the sheet's zone.
        assert_eq!(
            third.validity.expires_at,
            Some(1_811_851_200 - SHANGHAI as i64)
        );
        assert_eq!(third.code, None);
    }

    #[test]
    fn csv_with_chinese_headers_in_gbk_and_a_bare_list_of_urls() {
        let text = "长链接,有效期\nhttps://a.example/1,30d\nhttps://a.example/2,\n";
        let (gbk, _, _) = encoding_rs::GBK.encode(text);
        let rows = read_upload(&gbk, &upload("gbk.csv")).expect("rows");
        assert_eq!(rows.len(), 2);
        let domains = [Domain::parse("go.example.cn").expect("domain")];
        let rules = Rules::api(&domains, 7);
        let now = 1_767_225_600;
        let expiries: Vec<_> = rows
            .into_iter()
            .map(|r| {
                r.fields
                    .new_link(&rules, now)
                    .expect("valid")
                    .validity
                    .expires_at
            })
            .collect();
        // A row without an expiry takes the default period.
        assert_eq!(expiries, [Some(now + 30 * 86_400), Some(now + 7 * 86_400)]);
        let bare = read_upload(
            b"https://a.example/1\n\nhttps://a.example/2\n",
            &upload("urls.txt"),
        )
        .expect("rows");
        assert_eq!(bare.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn whole_file_errors() {
        let e = read_upload(b"colour\nred\n", &upload("x.csv")).expect_err("unknown column");
        assert!(
            e.to_string()
                .contains("x.csv:1: header: unknown column \"colour\""),
            "{e}"
        );
        let e = read_upload(b"", &upload("x.csv")).expect_err("empty");
        assert!(e.to_string().contains("no rows"), "{e}");
        let e = read_upload(b"PK\x03\x04garbage", &upload("x.xlsx")).expect_err("broken");
        assert!(e.to_string().contains("not a readable .xlsx"), "{e}");
        let e = read_upload(b"https://a.example/,x\n", &upload("x.csv")).expect_err("two columns");
        assert!(e.to_string().contains("name the columns"), "{e}");
    }

    #[test]
    fn local_times() {
        assert_eq!(
            local_time("2027-01-01 00:00:00", SHANGHAI).as_deref(),
            Some("2027-01-01T00:00:00+08:00")
        );
        assert_eq!(
            local_time("2027/1/2 8:05", -3600).as_deref(),
            Some("2027-01-02T08:05:00-01:00")
        );
        assert_eq!(
            local_time("2027-01-01", 0).as_deref(),
            Some("2027-01-01T00:00:00+00:00")
        );
        assert_eq!(local_time("1798732800", SHANGHAI), None);
        assert_eq!(local_time("2027-01-01T00:00:00Z", SHANGHAI), None);
    }
}
