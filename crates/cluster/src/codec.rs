//! Keys and values in the bucket.
//!
//! A key is `DOMAIN/CODE`: both are already restricted to characters a JetStream key allows
//! (lowercase host names; codes of letters, digits, `_` and `-`), so the key is readable as is,
//! `nats kv get links go.example.cn/x7Kp2Qa`. A value is the link's JSON, the same fields the
//! admin API shows, so operators can read the bucket with the `nats` tool.
use crate::ClusterError;
use bytes::Bytes;
use duanlian_link::{parse_url, Change, Code, Domain, ForwardQuery, Link, Redirect, Validity};
use serde::{Deserialize, Serialize};

/// The bucket key of a link.
pub(crate) fn key(domain: &str, code: &str) -> String {
    let mut k = String::with_capacity(domain.len() + 1 + code.len());
    k.push_str(domain);
    k.push('/');
    k.push_str(code);
    k
}

/// The `(domain, code)` of a bucket key; an error for a key duanlian did not write.
fn parse_key(key: &str) -> Result<(Domain, Code), ClusterError> {
    key.split_once('/')
        .and_then(|(domain, code)| Some((Domain::parse(domain).ok()?, Code::parse(code).ok()?)))
        .ok_or_else(|| ClusterError::EntryKey {
            key: key.to_string(),
        })
}

#[derive(Serialize, Deserialize)]
struct Value {
    url: String,
    redirect: u16,
    created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    valid_since: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_visits: Option<u64>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    forward_query: bool,
    /// The request's parameters override the target's ([`ForwardQuery::Override`]).
    #[serde(default, skip_serializing_if = "is_false")]
    query_override: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expired_url: Option<String>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A link's value in the bucket.
pub(crate) fn encode(link: &Link) -> Bytes {
    let v = Value {
        url: link.url.to_string(),
        redirect: link.redirect.status(),
        created_at: link.created_at,
        valid_since: link.validity.valid_since,
        expires_at: link.validity.expires_at,
        max_visits: link.validity.max_visits,
        forward_query: link.forward_query.is_on(),
        query_override: link.forward_query == ForwardQuery::Override,
        expired_url: link.expired_url.as_deref().map(str::to_string),
    };
    // Serialising plain fields into a Vec cannot fail.
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

/// The link a bucket entry holds, checked as the admin API checks input.
pub(crate) fn decode(key: &str, value: &[u8]) -> Result<Link, ClusterError> {
    let (domain, code) = parse_key(key)?;
    let v: Value = serde_json::from_slice(value).map_err(|error| ClusterError::EntryJson {
        key: key.to_string(),
        error,
    })?;
    let bad = |error: duanlian_link::LinkError| ClusterError::EntryLink {
        key: key.to_string(),
        error,
    };
    Ok(Link {
        domain,
        code,
        url: parse_url(&v.url).map_err(bad)?,
        redirect: Redirect::from_status(v.redirect).map_err(bad)?,
        validity: Validity::new(v.valid_since, v.expires_at)
            .and_then(|w| w.with_max_visits(v.max_visits))
            .map_err(bad)?,
        created_at: v.created_at,
        forward_query: match (v.forward_query, v.query_override) {
            (false, _) => ForwardQuery::Off,
            (true, false) => ForwardQuery::Add,
            (true, true) => ForwardQuery::Override,
        },
        expired_url: v
            .expired_url
            .as_deref()
            .map(parse_url)
            .transpose()
            .map_err(bad)?,
    })
}

/// The change a bucket entry makes: a put, or a delete (or purge) marker.
pub(crate) fn change(key: &str, value: &[u8], deleted: bool) -> Result<Change, ClusterError> {
    if deleted {
        let (domain, code) = parse_key(key)?;
        Ok(Change::Delete { domain, code })
    } else {
        decode(key, value).map(Change::Put)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_and_bad_values_are_named() {
        let link = Link {
            domain: Domain::parse("go.example.cn").expect("domain"),
            code: Code::parse("x7Kp2Qa").expect("code"),
            url: parse_url("https://shop.example.com/item/42?a=1").expect("url"),
            redirect: Redirect::Temporary,
            validity: Validity::new(Some(10), Some(20))
                .and_then(|v| v.with_max_visits(Some(3)))
                .expect("validity"),
            created_at: 5,
            forward_query: ForwardQuery::Override,
            expired_url: Some("https://sorry.example/".into()),
        };
        let k = key("go.example.cn", "x7Kp2Qa");
        assert_eq!(k, "go.example.cn/x7Kp2Qa");
        assert_eq!(decode(&k, &encode(&link)).expect("decodes"), link);
        let err =
            decode(&k, br#"{"url":"ftp://x","redirect":302,"created_at":1}"#).expect_err("ftp");
        assert!(matches!(err, ClusterError::EntryLink { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with("go.example.cn/x7Kp2Qa: url:"),
            "{err}"
        );
        assert!(matches!(
            decode("nokey", b"{}"),
            Err(ClusterError::EntryKey { .. })
        ));
        assert!(matches!(
            decode(&k, b"{"),
            Err(ClusterError::EntryJson { .. })
        ));
        assert_eq!(
            change(&k, b"", true).expect("a delete marker"),
            Change::Delete {
                domain: Domain::parse("go.example.cn").expect("domain"),
                code: Code::parse("x7Kp2Qa").expect("code"),
            }
        );
        assert!(matches!(
            change("nokey", b"", true),
            Err(ClusterError::EntryKey { .. })
        ));
    }
}
