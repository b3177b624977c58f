//! Record payloads: a list of changes in a compact binary form.
//!
//! ```text
//! payload := count:u32 change*
//! change  := 1:u8 key put        (put)
//!          | 2:u8 key            (delete)
//! key     := domain_len:u8 domain code_len:u8 code
//! put     := url_len:u16 url redirect:u8 flags:u8 created_at:i64
//!            [valid_since:i64 if flags&1] [expires_at:i64 if flags&2]
//!            [extras if flags&8]  (see duanlian_link::encode_extras)
//!            (flags&4: the link does not forward the query string; flags&16: the
//!            request's parameters override the target's of the same name)
//! ```
//! Integers are little-endian. New kinds of change get new tags; a tag this build does not
//! know is reported as corruption, never skipped.
use duanlian_link::{parse_url, Change, Code, Domain, ForwardQuery, Link, Redirect, Validity};

const PUT: u8 = 1;
const DELETE: u8 = 2;
const HAS_VALID_SINCE: u8 = 1;
const HAS_EXPIRES_AT: u8 = 2;
const NO_FORWARD_QUERY: u8 = 4;
const HAS_EXTRAS: u8 = 8;
/// The request's query string overrides the target's parameters of the same name.
const QUERY_OVERRIDE: u8 = 16;

pub(crate) fn encode(changes: &[Change], out: &mut Vec<u8>) {
    out.extend_from_slice(&(changes.len() as u32).to_le_bytes());
    for c in changes {
        match c {
            Change::Put(l) => {
                out.push(PUT);
                key(out, &l.domain, &l.code);
                out.extend_from_slice(&(l.url.len() as u16).to_le_bytes());
                out.extend_from_slice(l.url.as_bytes());
                out.push(l.redirect.to_u8());
                let mut flags = 0;
                if l.validity.valid_since.is_some() {
                    flags |= HAS_VALID_SINCE;
                }
                if l.validity.expires_at.is_some() {
                    flags |= HAS_EXPIRES_AT;
                }
                flags |= match l.forward_query {
                    ForwardQuery::Off => NO_FORWARD_QUERY,
                    ForwardQuery::Add => 0,
                    ForwardQuery::Override => QUERY_OVERRIDE,
                };
                let expired_url = l.expired_url.as_deref().map(str::as_bytes);
                let extras = duanlian_link::has_extras(l.validity.max_visits, expired_url);
                if extras {
                    flags |= HAS_EXTRAS;
                }
                out.push(flags);
                out.extend_from_slice(&l.created_at.to_le_bytes());
                for t in [l.validity.valid_since, l.validity.expires_at]
                    .into_iter()
                    .flatten()
                {
                    out.extend_from_slice(&t.to_le_bytes());
                }
                if extras {
                    duanlian_link::encode_extras(l.validity.max_visits, expired_url, out);
                }
            }
            Change::Delete { domain, code } => {
                out.push(DELETE);
                key(out, domain, code);
            }
        }
    }
}

fn key(out: &mut Vec<u8>, domain: &Domain, code: &Code) {
    // Both fit a byte: domains are at most 253 bytes, codes at most 64.
    out.push(domain.as_str().len() as u8);
    out.extend_from_slice(domain.as_str().as_bytes());
    out.push(code.as_str().len() as u8);
    out.extend_from_slice(code.as_str().as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("payload ends early".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut w = [0u8; 4];
        w.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(w))
    }

    fn i64(&mut self) -> Result<i64, String> {
        let mut w = [0u8; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(i64::from_le_bytes(w))
    }

    fn str(&mut self, n: usize) -> Result<&'a str, String> {
        std::str::from_utf8(self.take(n)?).map_err(|_| "text is not UTF-8".into())
    }
}

/// Decodes a payload, re-checking every field with the link model.
pub(crate) fn decode(payload: &[u8]) -> Result<Vec<Change>, String> {
    let mut r = Reader(payload);
    let count = r.u32()? as usize;
    // Each change takes at least 3 bytes; a larger count is damage, not a reason to allocate.
    if count > payload.len() / 3 {
        return Err(format!(
            "{count} changes cannot fit in {} bytes",
            payload.len()
        ));
    }
    let mut changes = Vec::with_capacity(count);
    for _ in 0..count {
        let tag = r.u8()?;
        let dlen = usize::from(r.u8()?);
        let domain = Domain::parse(r.str(dlen)?).map_err(|e| e.to_string())?;
        let clen = usize::from(r.u8()?);
        let code = Code::parse(r.str(clen)?).map_err(|e| e.to_string())?;
        changes.push(match tag {
            PUT => {
                let ulen = usize::from(r.u16()?);
                let raw = r.str(ulen)?;
                let url = parse_url(raw).map_err(|e| e.to_string())?;
                if *url != *raw {
                    return Err("url is not in normal form".into());
                }
                let redirect = Redirect::from_u8(r.u8()?).ok_or("unknown redirect kind")?;
                let flags = r.u8()?;
                let known = HAS_VALID_SINCE
                    | HAS_EXPIRES_AT
                    | NO_FORWARD_QUERY
                    | HAS_EXTRAS
                    | QUERY_OVERRIDE;
                if flags & !known != 0 {
                    return Err(format!("unknown flags {flags:#x}"));
                }
                let created_at = r.i64()?;
                let valid_since = if flags & HAS_VALID_SINCE != 0 {
                    Some(r.i64()?)
                } else {
                    None
                };
                let expires_at = if flags & HAS_EXPIRES_AT != 0 {
                    Some(r.i64()?)
                } else {
                    None
                };
                let extras = if flags & HAS_EXTRAS != 0 {
                    let (extras, used) = duanlian_link::decode_extras(r.0)?;
                    extras.check().map_err(|e| e.to_string())?;
                    let extras = (extras.max_visits, extras.expired_url.map(<[u8]>::to_vec));
                    r.take(used)?;
                    extras
                } else {
                    (None, None)
                };
                let validity = Validity::new(valid_since, expires_at)
                    .and_then(|v| v.with_max_visits(extras.0))
                    .map_err(|e| e.to_string())?;
                Change::Put(Link {
                    domain,
                    code,
                    url,
                    redirect,
                    validity,
                    created_at,
                    forward_query: if flags & NO_FORWARD_QUERY != 0 {
                        ForwardQuery::Off
                    } else if flags & QUERY_OVERRIDE != 0 {
                        ForwardQuery::Override
                    } else {
                        ForwardQuery::Add
                    },
                    expired_url: match extras.1 {
                        Some(u) => Some(
                            String::from_utf8(u)
                                .map_err(|_| "expired_url is not UTF-8")?
                                .into(),
                        ),
                        None => None,
                    },
                })
            }
            DELETE => Change::Delete { domain, code },
            other => return Err(format!("unknown change tag {other}")),
        });
    }
    if !r.0.is_empty() {
        return Err(format!("{} bytes after the last change", r.0.len()));
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(code: &str, validity: Validity, forward_query: ForwardQuery) -> Change {
        Change::Put(Link {
            domain: Domain::parse("go.example.cn").expect("domain"),
            code: Code::parse(code).expect("code"),
            url: parse_url("https://a.example/x?y=1").expect("url"),
            redirect: Redirect::Temporary,
            validity,
            created_at: 1_700_000_000,
            forward_query,
            expired_url: None,
        })
    }

    #[test]
    fn round_trips_every_shape() {
        let changes = vec![
            put("a", Validity::ALWAYS, ForwardQuery::Add),
            put(
                "b",
                Validity::new(Some(5), Some(9)).expect("window"),
                ForwardQuery::Off,
            ),
            put(
                "c",
                Validity::new(None, Some(9)).expect("window"),
                ForwardQuery::Override,
            ),
            Change::Put(Link {
                expired_url: Some("https://e.example/sorry".into()),
                ..match put(
                    "d",
                    Validity::ALWAYS.with_max_visits(Some(3)).expect("cap"),
                    ForwardQuery::Add,
                ) {
                    Change::Put(l) => l,
                    Change::Delete { .. } => unreachable!(),
                }
            }),
            Change::Delete {
                domain: Domain::parse("s.example.com").expect("domain"),
                code: Code::parse("zz").expect("code"),
            },
        ];
        let mut buf = Vec::new();
        encode(&changes, &mut buf);
        assert_eq!(decode(&buf), Ok(changes));
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let mut buf = Vec::new();
        encode(&[put("a", Validity::ALWAYS, ForwardQuery::Add)], &mut buf);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..buf.len() {
            let mut bad = buf.clone();
            bad[at] ^= 0xff;
            let _ = decode(&bad); // must not panic; some flips still decode to valid changes
        }
        let mut extra = buf.clone();
        extra.push(0);
        assert!(decode(&extra).is_err());
    }
}
