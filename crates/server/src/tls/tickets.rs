//! Session tickets: a client that comes back resumes its session with one round trip and no
//! signature, the cheapest handshake there is. A ticket is the session's secrets sealed with a
//! key only the servers hold (AES-256-GCM); the key rotates on a schedule, and the previous one
//! still opens tickets, so a ticket is good for one to two rotation periods.
//!
//! On its own a node makes its keys. In a cluster the keys come from the cluster
//! ([`Tickets::install`]), so a client resumes on whichever node the load balancer picks.
use arc_swap::ArcSwap;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const ID_LEN: usize = 16;

/// One ticket key: its id (written at the head of each ticket it seals), its secret, and when
/// it was made (Unix seconds).
#[derive(Clone)]
pub struct TicketKey {
    id: [u8; ID_LEN],
    secret: [u8; 32],
    created: i64,
}

impl std::fmt::Debug for TicketKey {
    // The secret stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TicketKey")
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

impl TicketKey {
    /// A new random key, made `now`.
    pub fn generate(now: i64) -> Option<TicketKey> {
        let rng = SystemRandom::new();
        let mut key = TicketKey {
            id: [0; ID_LEN],
            secret: [0; 32],
            created: now,
        };
        rng.fill(&mut key.id).ok()?;
        rng.fill(&mut key.secret).ok()?;
        Some(key)
    }

    /// A key from 48 random bytes (its id, then its secret) made at `created`: how a key
    /// shared by a cluster arrives.
    pub fn from_random(bytes: &[u8; 48], created: i64) -> TicketKey {
        let mut key = TicketKey {
            id: [0; ID_LEN],
            secret: [0; 32],
            created,
        };
        key.id.copy_from_slice(&bytes[..ID_LEN]);
        key.secret.copy_from_slice(&bytes[ID_LEN..]);
        key
    }

    /// When it was made (Unix seconds).
    pub fn created(&self) -> i64 {
        self.created
    }
}

struct Sealer {
    key: TicketKey,
    aead: LessSafeKey,
    /// Nonces: a random prefix drawn once for this sealer, then a count, so that no two
    /// tickets share one (nodes sharing a key draw different prefixes) and sealing asks the
    /// kernel for no randomness.
    prefix: [u8; 4],
    count: AtomicU64,
}

impl Sealer {
    fn new(key: TicketKey) -> Option<Sealer> {
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key.secret).ok()?);
        let mut prefix = [0u8; 4];
        SystemRandom::new().fill(&mut prefix).ok()?;
        Some(Sealer {
            key,
            aead,
            prefix,
            count: AtomicU64::new(0),
        })
    }

    fn next_nonce(&self) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.prefix);
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        nonce[4..].copy_from_slice(&n.to_be_bytes());
        nonce
    }
}

struct Keys {
    current: Sealer,
    previous: Option<Sealer>,
}

/// The ticket keys of a node: rustls's `ProducesTickets`.
pub struct Tickets {
    keys: ArcSwap<Option<Keys>>,
    /// Seconds between rotations.
    period: u32,
    /// Keys come from outside ([`Tickets::install`]); never rotate them here.
    installed: AtomicBool,
}

impl std::fmt::Debug for Tickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tickets")
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

impl Tickets {
    /// Keys rotated every `period` seconds.
    pub(super) fn new(period: u32) -> Tickets {
        Tickets {
            keys: ArcSwap::from_pointee(None),
            period,
            installed: AtomicBool::new(false),
        }
    }

    /// Seconds between rotations.
    pub fn period(&self) -> u32 {
        self.period
    }

    /// From now on seals with `current` and opens with it and `previous`; the node no longer
    /// rotates keys itself (whoever installs them does), unless the installed key grows twice
    /// its period old (the installer is gone: a key must not seal forever).
    pub fn install(&self, current: TicketKey, previous: Option<TicketKey>) {
        let (Some(current), previous) = (Sealer::new(current), previous.and_then(Sealer::new))
        else {
            return;
        };
        self.installed.store(true, Ordering::Release);
        self.keys.store(Arc::new(Some(Keys { current, previous })));
    }

    /// The keys to seal with now: rotated first when the current one has served its period
    /// (unless installed from outside).
    fn now_keys(&self) -> Option<arc_swap::Guard<Arc<Option<Keys>>>> {
        let keys = self.keys.load();
        let now = duanlian_link::now_secs();
        let periods = if self.installed.load(Ordering::Acquire) {
            2
        } else {
            1
        };
        let due = match &**keys {
            Some(k) => k.current.key.created + periods * i64::from(self.period) <= now,
            None => true,
        };
        if !due {
            return Some(keys);
        }
        let fresh = Sealer::new(TicketKey::generate(now)?)?;
        // Two handshakes may rotate at once: the one that loses keeps the winner's keys.
        let old: Arc<Option<Keys>> = arc_swap::Guard::into_inner(keys);
        let previous = (*old)
            .as_ref()
            .and_then(|k| Sealer::new(k.current.key.clone()));
        let next = Arc::new(Some(Keys {
            current: fresh,
            previous,
        }));
        let _ = self.keys.compare_and_swap(&old, next);
        Some(self.keys.load())
    }
}

impl rustls::server::ProducesTickets for Tickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.period
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.now_keys()?;
        let sealer = &(**keys).as_ref()?.current;
        let nonce = sealer.next_nonce();
        let mut out = Vec::with_capacity(ID_LEN + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&sealer.key.id);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        sealer
            .aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&sealer.key.id),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < ID_LEN + NONCE_LEN {
            return None;
        }
        let (id, rest) = cipher.split_at(ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let keys = self.keys.load();
        let keys = (**keys).as_ref()?;
        let sealer = [Some(&keys.current), keys.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|s| s.key.id == id)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let plain = sealer
            .aead
            .open_in_place(nonce, Aad::from(&sealer.key.id), &mut body)
            .ok()?;
        let len = plain.len();
        body.truncate(len);
        Some(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets as _;

    #[test]
    fn a_ticket_opens_with_its_key_and_the_next_rotations_but_not_another_nodes() {
        let a = Tickets::new(3600);
        let sealed = a.encrypt(b"session").expect("sealed");
        assert_eq!(a.decrypt(&sealed).as_deref(), Some(&b"session"[..]));
        let b = Tickets::new(3600);
        let _ = b.encrypt(b"other");
        assert_eq!(b.decrypt(&sealed), None, "another node's own keys");
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(a.decrypt(&tampered), None);
    }

    #[test]
    fn installed_keys_are_shared_and_the_previous_one_still_opens() {
        let now = duanlian_link::now_secs();
        // As a cluster shares them: the same random bytes on each node.
        let mut shared = [0u8; 48];
        SystemRandom::new().fill(&mut shared).expect("random");
        let (k1, k2) = (
            TicketKey::from_random(&shared, now - 10),
            TicketKey::generate(now).expect("key"),
        );
        let (a, b) = (Tickets::new(3600), Tickets::new(3600));
        a.install(k1.clone(), None);
        b.install(TicketKey::from_random(&shared, now - 10), None);
        let sealed = a.encrypt(b"session").expect("sealed");
        assert_eq!(b.decrypt(&sealed).as_deref(), Some(&b"session"[..]));
        b.install(k2, Some(k1));
        assert_eq!(b.decrypt(&sealed).as_deref(), Some(&b"session"[..]));
    }

    #[test]
    fn a_key_past_its_period_is_rotated_and_kept_as_the_previous() {
        let t = Tickets::new(1);
        let old = TicketKey::generate(duanlian_link::now_secs() - 5).expect("key");
        t.keys.store(Arc::new(Some(Keys {
            current: Sealer::new(old.clone()).expect("sealer"),
            previous: None,
        })));
        let mut with_old = old.id.to_vec();
        let sealed_old = {
            let keys = t.keys.load();
            let s = &(**keys).as_ref().expect("keys").current;
            let nonce = [7u8; NONCE_LEN];
            let mut body = b"session".to_vec();
            s.aead
                .seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(&s.key.id),
                    &mut body,
                )
                .expect("seal");
            with_old.extend_from_slice(&nonce);
            with_old.extend_from_slice(&body);
            with_old
        };
        let fresh = t.encrypt(b"new").expect("sealed");
        assert_ne!(&fresh[..ID_LEN], &old.id[..], "rotated");
        assert_eq!(t.decrypt(&sealed_old).as_deref(), Some(&b"session"[..]));
    }
}
