//! Property test: for random links, validity windows, visit caps and a random walk through
//! time, every answer of the redirect path agrees with a simple model. Time is injected.
use duanlian_index::{Change, Index};
use duanlian_link::{parse_url, Code, Domain, Link, Redirect, Validity};
use duanlian_server::{respond, Redirector};
use hyper::header::{HOST, LOCATION};
use hyper::Request;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// SplitMix64, fixed seeds: every run checks the same cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone)]
struct Model {
    valid_since: Option<i64>,
    expires_at: Option<i64>,
    max_visits: Option<u64>,
    expired_url: Option<String>,
    visits: u64,
}

const T0: i64 = 1_800_000_000;
const RETENTION: i64 = 1_000;

impl Model {
    /// The expected (status, Location) of a GET at `now`, counting the visit if it redirects.
    fn get(&mut self, now: i64, url: &str) -> (u16, Option<String>) {
        let expired = match &self.expired_url {
            Some(u) => (302, Some(u.clone())),
            None => (410, None),
        };
        if self.expires_at.is_some_and(|e| now >= e + RETENTION) {
            return (404, None);
        }
        if self.valid_since.is_some_and(|s| now < s) {
            return (404, None);
        }
        if self.expires_at.is_some_and(|e| now >= e) {
            return expired;
        }
        if self.max_visits.is_some_and(|cap| self.visits >= cap) {
            return expired;
        }
        self.visits += 1;
        (302, Some(url.to_owned()))
    }
}

#[test]
fn redirect_answers_agree_with_the_model() {
    for seed in 0..50 {
        let mut rng = Rng(seed);
        let index = Arc::new(Index::empty());
        let clock = Arc::new(AtomicI64::new(T0));
        let c = clock.clone();
        index.set_retention(RETENTION);
        let r = Redirector::new(index.clone()).with_clock(move || c.load(Ordering::Relaxed));
        let mut models = Vec::new();
        for i in 0..40u64 {
            let around = |rng: &mut Rng| T0 + rng.pick(4_000) as i64 - 500;
            let valid_since = (rng.pick(3) == 0).then(|| around(&mut rng));
            let mut expires_at = (rng.pick(2) == 0).then(|| around(&mut rng));
            if let (Some(s), Some(e)) = (valid_since, expires_at) {
                if s >= e {
                    expires_at = Some(s + 1 + rng.pick(500) as i64);
                }
            }
            let max_visits = (rng.pick(3) == 0).then(|| 1 + rng.pick(5));
            let expired_url = (rng.pick(3) == 0).then(|| format!("https://sorry.example/{i}"));
            let link = Link {
                domain: Domain::parse("go.example.cn").expect("domain"),
                code: Code::parse(&format!("c{i}")).expect("code"),
                url: parse_url(&format!("https://t.example/{i}")).expect("url"),
                redirect: Redirect::Found,
                validity: Validity::new(valid_since, expires_at)
                    .and_then(|v| v.with_max_visits(max_visits))
                    .expect("validity"),
                created_at: T0,
                forward_query: duanlian_link::ForwardQuery::Add,
                expired_url: expired_url.as_deref().map(Into::into),
            };
            index.apply(i + 1, Change::Put(link));
            models.push(Model {
                valid_since,
                expires_at,
                max_visits,
                expired_url,
                visits: 0,
            });
        }
        let mut now = T0 - 600;
        for step in 0..400 {
            now += rng.pick(60) as i64;
            clock.store(now, Ordering::Relaxed);
            let i = rng.pick(models.len() as u64) as usize;
            let req = Request::get(format!("/c{i}"))
                .header(HOST, "go.example.cn")
                // A person: bots use up no visits.
                .header(
                    hyper::header::USER_AGENT,
                    "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Firefox/115.0",
                )
                .body(())
                .expect("request");
            let res = respond(&r, &req);
            let got = (
                res.status().as_u16(),
                res.headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            );
            let want = models[i].get(now, &format!("https://t.example/{i}"));
            assert_eq!(
                got, want,
                "seed {seed} step {step} link {i} at {now}: {:?}",
                models[i]
            );
        }
    }
}
