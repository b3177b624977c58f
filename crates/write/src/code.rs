//! Random codes and tokens from the OS's generator.
use crate::WriteError;

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Draws of a random code before giving up on a code length.
pub const GENERATE_TRIES: usize = 64;

fn fill(buf: &mut [u8]) -> Result<(), WriteError> {
    getrandom::fill(buf).map_err(|e| WriteError::Unavailable(format!("no randomness: {e}")))
}

/// A code of `len` characters drawn uniformly from `[A-Za-z0-9]`. Bytes of 248 and above are
/// rejected so that every character has exactly the same chance (248 = 4 × 62).
pub fn random_code(len: usize) -> Result<String, WriteError> {
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        fill(&mut buf)?;
        for &b in &buf {
            if b < 248 && out.len() < len {
                out.push(char::from(ALPHABET[usize::from(b % 62)]));
            }
        }
    }
    Ok(out)
}

/// A secret of 32 random bytes, as 64 hex digits (API keys).
pub fn random_token() -> Result<String, WriteError> {
    let mut buf = [0u8; 32];
    fill(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_length_and_alphabet_and_differ() {
        let a = random_code(7).expect("code");
        let b = random_code(7).expect("code");
        assert_eq!(a.len(), 7);
        assert!(a.bytes().all(|c| ALPHABET.contains(&c)));
        assert_ne!(a, b);
        assert_eq!(random_code(32).expect("code").len(), 32);
        assert_eq!(random_token().expect("token").len(), 64);
    }

    #[test]
    fn characters_are_roughly_uniform() {
        let mut counts = [0u32; 62];
        let s = random_code(62_000).expect("code");
        for c in s.bytes() {
            let i = ALPHABET.iter().position(|&a| a == c).expect("in alphabet");
            counts[i] += 1;
        }
        // Expected 1000 each; 6 sigma is about 190.
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }
}
