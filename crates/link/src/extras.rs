//! The optional fields of a link as bytes, shared by the snapshot and journal formats so both
//! store them the same way and old readers' data stays readable.
//!
//! ```text
//! extras := len:u16 field*          (len counts the bytes of the fields)
//! field  := 1:u8 max_visits:u64
//!         | 2:u8 url_len:u16 expired_url
//! ```
//! Little-endian. A tag this build does not know is an error, never skipped.
use crate::{parse_url, LinkError};

const MAX_VISITS: u8 = 1;
const EXPIRED_URL: u8 = 2;

/// Whether a link has anything to encode.
pub fn has_extras(max_visits: Option<u64>, expired_url: Option<&[u8]>) -> bool {
    max_visits.is_some() || expired_url.is_some()
}

/// Appends the encoding of the optional fields.
pub fn encode_extras(max_visits: Option<u64>, expired_url: Option<&[u8]>, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    if let Some(n) = max_visits {
        out.push(MAX_VISITS);
        out.extend_from_slice(&n.to_le_bytes());
    }
    if let Some(u) = expired_url {
        out.push(EXPIRED_URL);
        // URLs are at most 4096 bytes (the link model's limit).
        out.extend_from_slice(&(u.len() as u16).to_le_bytes());
        out.extend_from_slice(u);
    }
    let len = (out.len() - start - 2) as u16;
    out[start..start + 2].copy_from_slice(&len.to_le_bytes());
}

/// The decoded optional fields, borrowing the URL from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extras<'a> {
    /// The visit cap.
    pub max_visits: Option<u64>,
    /// The expired-link target.
    pub expired_url: Option<&'a [u8]>,
}

/// Decodes extras at the start of `bytes`; returns them and the bytes they took.
pub fn decode_extras(bytes: &[u8]) -> Result<(Extras<'_>, usize), String> {
    let len = match bytes {
        [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
        _ => return Err("extras cut short".into()),
    };
    let body = bytes.get(2..2 + len).ok_or("extras cut short")?;
    let mut out = Extras::default();
    let mut i = 0;
    while i < body.len() {
        match body[i] {
            MAX_VISITS => {
                let v = body.get(i + 1..i + 9).ok_or("max_visits cut short")?;
                let mut w = [0u8; 8];
                w.copy_from_slice(v);
                out.max_visits = Some(u64::from_le_bytes(w));
                i += 9;
            }
            EXPIRED_URL => {
                let l = body.get(i + 1..i + 3).ok_or("expired_url cut short")?;
                let l = usize::from(u16::from_le_bytes([l[0], l[1]]));
                out.expired_url = Some(body.get(i + 3..i + 3 + l).ok_or("expired_url cut short")?);
                i += 3 + l;
            }
            tag => return Err(format!("unknown extra field tag {tag}")),
        }
    }
    Ok((out, 2 + len))
}

impl Extras<'_> {
    /// Re-checks the fields with the link model (for verification of stored data).
    pub fn check(&self) -> Result<(), LinkError> {
        if self.max_visits == Some(0) {
            return Err(LinkError::MaxVisitsZero);
        }
        if let Some(u) = self.expired_url {
            let s = std::str::from_utf8(u)
                .map_err(|_| LinkError::ExpiredUrl(Box::new(LinkError::UrlEmpty)))?;
            match parse_url(s) {
                Ok(n) if *n == *s => {}
                Ok(_) => return Err(LinkError::ExpiredUrl(Box::new(LinkError::UrlNotAbsolute))),
                Err(e) => return Err(LinkError::ExpiredUrl(Box::new(e))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        for (mv, url) in [
            (Some(5u64), Some(&b"https://e.example/x"[..])),
            (None, Some(&b"https://a/"[..])),
            (Some(1), None),
        ] {
            let mut buf = Vec::new();
            encode_extras(mv, url, &mut buf);
            buf.extend_from_slice(b"trailing");
            let (e, used) = decode_extras(&buf).expect("decode");
            assert_eq!((e.max_visits, e.expired_url), (mv, url));
            assert_eq!(&buf[used..], b"trailing");
            for cut in 0..used {
                assert!(decode_extras(&buf[..cut]).is_err(), "cut at {cut}");
            }
        }
        assert!(decode_extras(&[1, 0, 9]).is_err());
    }
}
