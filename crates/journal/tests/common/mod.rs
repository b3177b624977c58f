//! What the journal's test files share.
use duanlian_link::{parse_url, Change, Code, Domain, Link, Redirect, Validity};

/// A plain link on go.example.cn under `code`.
pub(crate) fn put(code: &str) -> Change {
    Change::Put(Link {
        domain: Domain::parse("go.example.cn").expect("domain"),
        code: Code::parse(code).expect("code"),
        url: parse_url(&format!("https://t.example/{code}")).expect("url"),
        redirect: Redirect::Found,
        validity: Validity::ALWAYS,
        created_at: 1_700_000_000,
        forward_query: duanlian_link::ForwardQuery::Add,
        expired_url: None,
    })
}
