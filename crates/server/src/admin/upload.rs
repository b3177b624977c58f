//! `POST /api/v1/links/import`: a CSV file or an Excel workbook of links to create, as the
//! operator page uploads it. Every row gets its own answer, so that a file with one bad row in
//! a thousand can be checked first, then either fixed and sent again or created without it.
use super::body::json_response;
use super::problem::{field, internal, FieldError, Problem};
use super::routes::parse_query;
use super::{Admin, Answer, RequestBody};
use duanlian_input::bulk::Encoding;
use duanlian_input::upload::{read_upload, Upload};
use duanlian_link::{display_url, now_secs, Domain};
use duanlian_write::{NewLink, Op, Outcome};
use hyper::{Request, StatusCode};
use serde_json::{json, Value};
use std::collections::HashSet;

/// What to do with the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Judge every row, create nothing.
    Check,
    /// Create the valid rows, report the others.
    Valid,
    /// Create every row, or none if any is bad (as a batch does).
    All,
}

struct ImportQuery {
    mode: Mode,
    domain: Option<Domain>,
    expires_in: Option<String>,
    encoding: Encoding,
    utc_offset: i32,
    name: String,
}

impl ImportQuery {
    fn parse(query: &str, ours: &[Domain]) -> Result<ImportQuery, Vec<FieldError>> {
        let mut q = ImportQuery {
            mode: Mode::All,
            domain: None,
            expires_in: None,
            encoding: Encoding::Auto,
            utc_offset: 0,
            name: "upload".into(),
        };
        let mut errors = Vec::new();
        for (k, v) in parse_query(query) {
            match k.as_str() {
                "mode" => match v.as_str() {
                    "check" => q.mode = Mode::Check,
                    "valid" => q.mode = Mode::Valid,
                    "all" => q.mode = Mode::All,
                    _ => errors.push(field("mode", "unknown_value", "must be check, valid or all")),
                },
                "domain" => match Domain::parse(&v) {
                    Ok(d) if ours.contains(&d) => q.domain = Some(d),
                    Ok(d) => errors.push(field(
                        "domain",
                        "unknown_domain",
                        format!("{d} is not a link domain of this service (see GET /api/v1/domains)"),
                    )),
                    Err(e) => errors.push(field("domain", e.code(), e)),
                },
                "expires_in" if v.is_empty() => {}
                "expires_in" => match duanlian_link::parse_duration(&v) {
                    Some(d) if d > 0 => q.expires_in = Some(v),
                    _ => errors.push(field(
                        "expires_in",
                        "period",
                        "must be a period such as 7d, 12h or 30m",
                    )),
                },
                "encoding" => match Encoding::from_name(&v) {
                    Some(e) => q.encoding = e,
                    None => errors.push(field(
                        "encoding",
                        "unknown_value",
                        "must be auto, utf-8 or gbk",
                    )),
                },
                "utc_offset" => match utc_offset(&v) {
                    Some(s) => q.utc_offset = s,
                    None => errors.push(field(
                        "utc_offset",
                        "unknown_value",
                        "must be an offset such as +08:00 or -05:00",
                    )),
                },
                "name" if !v.is_empty() => q.name = v.chars().take(200).collect(),
                "name" => {}
                other => errors.push(field(
                    other,
                    "unknown_field",
                    "unknown parameter (known: mode, domain, expires_in, encoding, utc_offset, name)",
                )),
            }
        }
        if errors.is_empty() {
            Ok(q)
        } else {
            Err(errors)
        }
    }
}

/// `+08:00`, `-05:30`, `Z`: seconds east of UTC.
fn utc_offset(s: &str) -> Option<i32> {
    if s == "Z" || s == "z" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' | b' ' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    ((0..=14).contains(&h) && (0..60).contains(&m)).then_some(sign * (h * 3600 + m * 60))
}

/// One row's answer so far.
enum Judged {
    Valid { line: u64, link: Box<NewLink> },
    Invalid { line: u64, errors: Vec<FieldError> },
}

impl Admin {
    pub(super) async fn import<B: RequestBody>(&self, req: Request<B>) -> Answer {
        let query = ImportQuery::parse(req.uri().query().unwrap_or(""), &self.opts.domains)
            .map_err(Problem::invalid)?;
        if query.mode != Mode::Check {
            self.writable()?;
        }
        let bytes = self.raw_body(req).await?;
        let up = Upload {
            name: &query.name,
            encoding: query.encoding,
            utc_offset: query.utc_offset,
            default_expires_in: query.expires_in.as_deref(),
        };
        let rows = read_upload(&bytes, &up)
            .map_err(|e| Problem::invalid(vec![field("file", "bad_file", e)]))?;
        let domains = &self.opts.domains;
        let rules = duanlian_input::Rules {
            default_domain: query.domain.as_ref().or(domains.first()),
            ..duanlian_input::Rules::api(domains, self.opts.code_length)
        };
        let now = now_secs();
        let mut codes = HashSet::new();
        let judged: Vec<Judged> = rows
            .into_iter()
            .map(|row| match row.fields.new_link(&rules, now) {
                Ok(link) => {
                    let taken = link.code.as_ref().and_then(|c| {
                        let key = (link.domain.clone(), c.clone());
                        if self.index.contains(link.domain.as_str(), c.as_str()) {
                            Some(field(
                                "code",
                                "code_taken",
                                format!("{}/{c} is taken", link.domain),
                            ))
                        } else if !codes.insert(key) {
                            Some(field(
                                "code",
                                "code_repeated",
                                format!("{}/{c} is on an earlier row too", link.domain),
                            ))
                        } else {
                            None
                        }
                    });
                    match taken {
                        Some(e) => Judged::Invalid {
                            line: row.line,
                            errors: vec![e],
                        },
                        None => Judged::Valid {
                            line: row.line,
                            link: Box::new(link),
                        },
                    }
                }
                Err(errors) => Judged::Invalid {
                    line: row.line,
                    errors: errors
                        .into_iter()
                        .map(|e| field(e.field, e.code, e.reason))
                        .collect(),
                },
            })
            .collect();
        let invalid = judged
            .iter()
            .filter(|j| matches!(j, Judged::Invalid { .. }))
            .count();
        if query.mode == Mode::All && invalid > 0 {
            let fields = judged
                .iter()
                .filter_map(|j| match j {
                    Judged::Invalid { line, errors } => Some((line, errors)),
                    Judged::Valid { .. } => None,
                })
                .flat_map(|(line, errors)| {
                    errors
                        .iter()
                        .map(move |e| field(format!("rows[{line}].{}", e.name), e.code, &e.reason))
                })
                .take(100)
                .collect();
            return Err(Problem::invalid(fields));
        }
        let create = query.mode != Mode::Check;
        let new: Vec<NewLink> = judged
            .iter()
            .filter_map(|j| match j {
                Judged::Valid { link, .. } if create => Some((**link).clone()),
                _ => None,
            })
            .collect();
        let mut created = Vec::new().into_iter();
        let count = new.len();
        if !new.is_empty() {
            match self.submit(Op::Create(new)).await? {
                (Outcome::Created(links), _) => created = links.into_iter(),
                _ => return Err(internal("unexpected outcome")),
            }
        }
        let rows: Vec<Value> = judged
            .iter()
            .map(|j| match j {
                Judged::Valid { line, link } => match created.next() {
                    Some(made) => json!({"line": line, "ok": true, "link": self.link_json(&made)}),
                    None => json!({
                        "line": line,
                        "ok": true,
                        "url": &*link.url,
                        "display_url": display_url(&link.url),
                        "domain": link.domain.as_str(),
                        "code": link.code.as_ref().map(|c| c.as_str()),
                    }),
                },
                Judged::Invalid { line, errors } => json!({
                    "line": line,
                    "ok": false,
                    "errors": errors.iter().map(FieldError::json).collect::<Vec<_>>(),
                }),
            })
            .collect();
        let status = if count > 0 {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(json_response(
            status,
            &json!({"created": count, "invalid": invalid, "rows": rows}),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::utc_offset;

    #[test]
    fn offsets() {
        assert_eq!(utc_offset("+08:00"), Some(28_800));
        assert_eq!(utc_offset("-05:30"), Some(-19_800));
        assert_eq!(utc_offset("Z"), Some(0));
        assert_eq!(utc_offset("08:00"), None);
        assert_eq!(utc_offset("+15:00"), None);
    }
}
