//! Overlay keys: `domain '/' code` as bytes. Neither part can contain '/', so the key is
//! unambiguous, and the request path builds it on the stack instead of allocating.
use duanlian_link::{Code, Domain, MAX_CODE_LEN, MAX_DOMAIN_LEN};

const MAX_KEY: usize = MAX_DOMAIN_LEN + 1 + MAX_CODE_LEN;

pub(crate) struct KeyBuf {
    buf: [u8; MAX_KEY],
    len: usize,
}

impl KeyBuf {
    /// `None` when the parts are too long to be a stored key (so nothing could match).
    #[inline]
    pub(crate) fn new(domain: &str, code: &str) -> Option<KeyBuf> {
        let (d, c) = (domain.as_bytes(), code.as_bytes());
        let len = d.len() + 1 + c.len();
        if d.len() > MAX_DOMAIN_LEN || c.len() > MAX_CODE_LEN {
            return None;
        }
        let mut buf = [0u8; MAX_KEY];
        buf[..d.len()].copy_from_slice(d);
        buf[d.len()] = b'/';
        buf[d.len() + 1..len].copy_from_slice(c);
        Some(KeyBuf { buf, len })
    }

    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

pub(crate) fn owned_key(domain: &Domain, code: &Code) -> Box<[u8]> {
    let mut k = Vec::with_capacity(domain.as_str().len() + 1 + code.as_str().len());
    k.extend_from_slice(domain.as_str().as_bytes());
    k.push(b'/');
    k.extend_from_slice(code.as_str().as_bytes());
    k.into_boxed_slice()
}
