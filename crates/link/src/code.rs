use crate::LinkError;
use std::fmt;

/// The longest code accepted, in characters.
pub const MAX_CODE_LEN: usize = 64;

/// Paths the redirect listener answers itself; no link may take them as its code.
pub const RESERVED_CODES: &[&str] = &["healthz", "readyz", "livez", "metrics"];

/// A short-link code: 1 to 64 characters of `[A-Za-z0-9_-]`, compared case-sensitively.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(Box<str>);

impl Code {
    /// Validates a code.
    pub fn parse(s: &str) -> Result<Code, LinkError> {
        check(s.as_bytes())?;
        Ok(Code(s.into()))
    }

    /// Validates a code for a new link: as [`Code::parse`], and not one of [`RESERVED_CODES`].
    pub fn parse_new(s: &str) -> Result<Code, LinkError> {
        let code = Code::parse(s)?;
        if RESERVED_CODES.contains(&s) {
            return Err(LinkError::CodeReserved(s.to_owned()));
        }
        Ok(code)
    }

    /// Whether raw request bytes could be a code; the request path uses this without allocating.
    pub fn is_valid(bytes: &[u8]) -> bool {
        // Not `check(..).is_ok()`: this runs on every request, and needs no reason.
        !bytes.is_empty() && bytes.len() <= MAX_CODE_LEN && bytes.iter().all(|&c| is_code_byte(c))
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check(b: &[u8]) -> Result<(), LinkError> {
    if b.is_empty() {
        return Err(LinkError::CodeEmpty);
    }
    if b.len() > MAX_CODE_LEN {
        return Err(LinkError::CodeTooLong(b.len()));
    }
    match b.iter().position(|&c| !is_code_byte(c)) {
        None => Ok(()),
        // Report the character, not a byte of it, so a UTF-8 input reads back as typed.
        Some(at) => Err(LinkError::CodeChar(
            String::from_utf8_lossy(&b[at..])
                .chars()
                .next()
                .unwrap_or('?'),
        )),
    }
}

/// Which bytes a code may hold, as a table: one load per byte instead of a chain of ranges.
const CODE_BYTES: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        c += 1;
    }
    t
};

#[inline(always)]
fn is_code_byte(c: u8) -> bool {
    CODE_BYTES[usize::from(c)]
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_alphabet_and_length_bounds() {
        assert!(Code::parse("a").is_ok());
        assert!(Code::parse("x7Kp2Qa_-").is_ok());
        assert!(Code::parse(&"Z".repeat(64)).is_ok());
        assert_eq!(
            Code::parse(&"Z".repeat(65)),
            Err(LinkError::CodeTooLong(65))
        );
        assert_eq!(Code::parse(""), Err(LinkError::CodeEmpty));
    }

    #[test]
    fn rejects_other_characters() {
        assert_eq!(Code::parse("a/b"), Err(LinkError::CodeChar('/')));
        assert_eq!(Code::parse("a.b"), Err(LinkError::CodeChar('.')));
        assert_eq!(Code::parse("短链"), Err(LinkError::CodeChar('短')));
        assert!(!Code::is_valid(b"a b"));
        assert!(Code::is_valid(b"Ab9"));
    }

    #[test]
    fn reserved_codes_are_refused_for_new_links_only() {
        assert_eq!(
            Code::parse_new("healthz"),
            Err(LinkError::CodeReserved("healthz".into()))
        );
        assert!(
            Code::parse("healthz").is_ok(),
            "old data with such a code still reads"
        );
        assert!(
            Code::parse_new("Healthz").is_ok(),
            "codes are case-sensitive"
        );
    }
}
