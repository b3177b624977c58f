//! `GET /api/v1/links/{domain}/{code}/stats`: a link's visits from the click aggregates.
use super::body::json_response;
use super::problem::{field, Problem};
use super::routes::parse_query;
use super::{Admin, Answer};
use hyper::StatusCode;
use serde_json::{json, Value};

const DAY: i64 = 86_400;
/// The longest range one report covers (its per-day list is zero-filled).
const MAX_DAYS: i64 = 366;

/// A `from`/`to` value: a date (`2026-11-25`) or an RFC 3339 time; the UTC day it falls on.
fn day_of(v: &str) -> Option<i64> {
    duanlian_link::parse_rfc3339(v).map(|t| t.div_euclid(DAY))
}

fn date(day: i64) -> String {
    duanlian_link::format_date(day * DAY)
}

impl Admin {
    pub(super) fn stats(&self, domain: &str, code: &str, query: &str) -> Answer {
        let (d, c) = Self::key(domain, code)?;
        let Some(link) = self.index.get(d.as_str(), c.as_str()) else {
            return Err(Problem::not_found(format!("no link {d}/{c}")));
        };
        let Some(stats) = &self.stats else {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                "statistics-off",
                "Statistics are off",
                "this node records no click events (it has no data directory, or runs with --no-stats)",
            ));
        };
        let (mut from, mut to, mut top) = (None, None, 10usize);
        let mut errors = Vec::new();
        for (k, v) in parse_query(query) {
            match k.as_str() {
                "from" | "to" => match day_of(&v) {
                    Some(day) if k == "from" => from = Some(day),
                    Some(day) => to = Some(day),
                    None => errors.push(field(
                        &k,
                        "time",
                        "must be a date (2026-11-25) or an RFC 3339 time",
                    )),
                },
                "top" => match v.parse::<usize>() {
                    Ok(n) if (1..=100).contains(&n) => top = n,
                    _ => errors.push(field(
                        "top",
                        "range",
                        "must be a whole number from 1 to 100",
                    )),
                },
                other => errors.push(field(
                    other,
                    "unknown_field",
                    "unknown parameter (known: from, to, top)",
                )),
            }
        }
        let to = to.unwrap_or_else(|| duanlian_link::now_secs().div_euclid(DAY));
        let from = from.unwrap_or_else(|| {
            let first = stats.first_day(d.as_str(), c.as_str());
            let created = link.created_at.div_euclid(DAY);
            first
                .map_or(created, |f| f.min(created))
                .clamp(to - (MAX_DAYS - 1), to)
        });
        if from > to {
            errors.push(field("from", "range", "is after to"));
        } else if to - from >= MAX_DAYS {
            errors.push(field(
                "to",
                "range",
                format!("the range is at most {MAX_DAYS} days"),
            ));
        }
        if !errors.is_empty() {
            return Err(Problem::invalid(errors));
        }
        let r = stats.report(d.as_str(), c.as_str(), from, to, top);
        let per_day: Vec<Value> = r
            .per_day
            .iter()
            .map(|&(day, human, bot)| json!({ "date": date(day), "human": human, "bot": bot }))
            .collect();
        let referrers: Vec<Value> = r
            .referrers
            .iter()
            .map(|(host, n)| json!({ "host": host, "visits": n }))
            .collect();
        let devices: serde_json::Map<String, Value> = r
            .devices
            .iter()
            .map(|(d, n)| (d.as_str().to_owned(), json!(n)))
            .collect();
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "domain": d.as_str(),
                "code": c.as_str(),
                "from": date(r.from_day),
                "to": date(r.to_day),
                "visits": { "human": r.human, "bot": r.bot },
                "visit_counter": self.index.visits().count(d.as_str(), c.as_str()),
                "per_day": per_day,
                "referrers": referrers,
                "devices": devices,
            }),
        ))
    }
}
