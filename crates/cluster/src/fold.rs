//! Folding bucket entries into a snapshot.
//!
//! A bucket with history 1 keeps, per key, only its newest message (a put or a delete marker),
//! in revision order. Reading it from the start up to revision N and keeping the newest state of
//! each key gives a snapshot "at N" that may lack keys changed after N; watching from N + 1
//! delivers exactly those keys' newest messages, so snapshot plus tail equals the bucket. The
//! property test below checks that claim against the real snapshot and index.
use duanlian_link::{Change, Code, Domain, Link};
use duanlian_snapshot::{BuildError, Builder, Table};
use std::collections::BTreeMap;

/// The newest state of each key seen so far.
#[derive(Debug, Default)]
pub(crate) struct Fold {
    links: BTreeMap<(Domain, Code), Link>,
    pub(crate) through: u64,
}

impl Fold {
    pub(crate) fn apply(&mut self, revision: u64, change: Change) {
        match change {
            Change::Put(link) => {
                self.links
                    .insert((link.domain.clone(), link.code.clone()), link);
            }
            Change::Delete { domain, code } => {
                self.links.remove(&(domain, code));
            }
        }
        self.through = self.through.max(revision);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.links.len()
    }

    /// The snapshot table, marked with the feed it came from.
    pub(crate) fn table(&self, feed_id: u64) -> Result<Table, BuildError> {
        let mut b = Builder::new();
        for link in self.links.values() {
            b.push_api(link)?;
        }
        Ok(b.finish()?.with_feed(feed_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duanlian_index::Index;
    use duanlian_link::{Redirect, Validity};
    use duanlian_snapshot::Snapshot;
    use std::sync::Arc;

    /// xorshift64*: enough randomness for operation sequences, and reproducible by seed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn link(code: &str, version: u64) -> Link {
        Link {
            domain: Domain::parse("go.example.cn").expect("domain"),
            code: Code::parse(code).expect("code"),
            url: format!("https://shop.example/{code}/{version}").into(),
            redirect: Redirect::Found,
            validity: Validity::ALWAYS,
            created_at: 1_700_000_000,
            forward_query: duanlian_link::ForwardQuery::Add,
            expired_url: None,
        }
    }

    /// A bucket with history 1: (revision, change) messages, of which only each key's newest
    /// survives.
    #[derive(Default)]
    struct Bucket {
        messages: Vec<(u64, Change)>,
    }

    impl Bucket {
        fn write(&mut self, change: Change) {
            let revision = self.messages.last().map_or(0, |m| m.0) + 1;
            let key = change.key();
            let key = (key.0.clone(), key.1.clone());
            self.messages.retain(|(_, c)| {
                let k = c.key();
                (k.0, k.1) != (&key.0, &key.1)
            });
            self.messages.push((revision, change));
        }
        fn last(&self) -> u64 {
            self.messages.last().map_or(0, |m| m.0)
        }
    }

    fn state(index: &Index) -> Vec<Link> {
        index.list(None, None, usize::MAX)
    }

    #[test]
    fn a_snapshot_at_n_plus_the_tail_equals_a_full_rebuild() {
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
            let mut bucket = Bucket::default();
            let codes: Vec<String> = (0..(2 + rng.below(12))).map(|i| format!("c{i}")).collect();
            let ops = 1 + rng.below(60);
            let mut published: Option<(u64, Vec<(u64, Change)>)> = None;
            for step in 0..ops {
                let code = &codes[rng.below(codes.len() as u64) as usize];
                let change = if rng.below(4) == 0 {
                    Change::Delete {
                        domain: Domain::parse("go.example.cn").expect("domain"),
                        code: Code::parse(code).expect("code"),
                    }
                } else {
                    Change::Put(link(code, step))
                };
                bucket.write(change);
                // Somewhere along the way, a snapshot is published: the bucket read so far.
                if published.is_none() && rng.below(ops) == 0 {
                    published = Some((bucket.last(), bucket.messages.clone()));
                }
            }
            let (n, seen) = published.unwrap_or((0, Vec::new()));

            let mut fold = Fold::default();
            for (rev, change) in seen {
                fold.apply(rev, change);
            }
            let image = fold.table(7).expect("table").to_bytes(n).expect("bytes");
            let snapshot = Snapshot::from_bytes(image).expect("snapshot");
            assert_eq!(
                (snapshot.header().sequence, snapshot.header().feed_id),
                (n, 7)
            );
            let resumed = Index::new(Arc::new(snapshot));
            for (rev, change) in bucket.messages.iter().filter(|m| m.0 > n) {
                resumed.apply(*rev, change.clone());
            }

            let mut full = Fold::default();
            for (rev, change) in bucket.messages.iter().cloned() {
                full.apply(rev, change);
            }
            let rebuilt = Index::new(Arc::new(
                Snapshot::from_bytes(
                    full.table(7)
                        .expect("table")
                        .to_bytes(bucket.last())
                        .expect("bytes"),
                )
                .expect("snapshot"),
            ));
            assert_eq!(
                state(&resumed),
                state(&rebuilt),
                "seed {seed}, snapshot at {n}"
            );
            assert_eq!(state(&rebuilt).len(), full.len());
        }
    }
}
