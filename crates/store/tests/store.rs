//! The write path end to end in-process: preconditions, durability across reopen, compaction.
use duanlian_link::{parse_url, Code, Domain, Redirect, Validity};
use duanlian_store::{compact_offline, DataDir, Store, StoreError, StoreOptions};
use duanlian_write::{NewLink, Op, Outcome, Patch, WriteError};
use std::path::PathBuf;
use std::sync::Arc;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("dl-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(d: &Dir) -> Store {
    Store::open(DataDir::open(&d.0).expect("dir"), StoreOptions::default()).expect("open")
}

fn new(code: Option<&str>, url: &str) -> NewLink {
    NewLink {
        domain: Domain::parse("go.example.cn").expect("domain"),
        code: code.map(|c| Code::parse(c).expect("code")),
        code_length: 7,
        url: parse_url(url).expect("url"),
        redirect: Redirect::Found,
        validity: Validity::ALWAYS,
        forward_query: duanlian_link::ForwardQuery::Add,
        expired_url: None,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn url(store: &Store, code: &str) -> Option<String> {
    store
        .index()
        .get("go.example.cn", code)
        .map(|l| l.url.to_string())
}

#[test]
fn create_update_delete_survive_reopen() {
    let d = Dir::new("crud");
    let rt = rt();
    let generated = {
        let store = open(&d);
        let created = rt.block_on(store.submit(Op::Create(vec![
            new(Some("mine"), "https://a.example/1"),
            new(None, "https://a.example/2"),
        ])));
        let Ok(Outcome::Created(links)) = created else {
            panic!("{created:?}")
        };
        assert_eq!(links[0].code.as_str(), "mine");
        let generated = links[1].code.to_string();
        assert_eq!(generated.len(), 7);
        assert!(generated.bytes().all(|b| b.is_ascii_alphanumeric()));
        let patch = Patch {
            url: Some(parse_url("https://a.example/new").expect("url")),
            redirect: Some(Redirect::Moved),
            ..Patch::default()
        };
        let updated = rt.block_on(store.submit(Op::Update {
            domain: Domain::parse("go.example.cn").expect("d"),
            code: Code::parse("mine").expect("c"),
            patch,
        }));
        assert!(
            matches!(updated, Ok(Outcome::Updated(ref l)) if &*l.url == "https://a.example/new" && l.redirect == Redirect::Moved)
        );
        assert_eq!(
            url(&store, "mine").as_deref(),
            Some("https://a.example/new")
        );
        let deleted = rt.block_on(store.submit(Op::Delete {
            domain: Domain::parse("go.example.cn").expect("d"),
            code: Code::parse(&generated).expect("c"),
        }));
        assert_eq!(deleted.ok(), Some(Outcome::Deleted));
        generated
    };
    let store = open(&d);
    assert_eq!(store.replayed(), 3);
    assert_eq!(
        url(&store, "mine").as_deref(),
        Some("https://a.example/new")
    );
    assert_eq!(url(&store, &generated), None);
}

#[test]
fn preconditions_hold_and_batches_are_all_or_nothing() {
    let d = Dir::new("pre");
    let rt = rt();
    let store = open(&d);
    rt.block_on(store.submit(Op::Create(vec![new(Some("taken"), "https://a.example/1")])))
        .expect("create");
    let again =
        rt.block_on(store.submit(Op::Create(vec![new(Some("taken"), "https://a.example/2")])));
    assert!(
        matches!(again, Err(StoreError::Write(WriteError::Conflict { .. }))),
        "{again:?}"
    );
    let batch = rt.block_on(store.submit(Op::Create(vec![
        new(Some("fresh"), "https://a.example/3"),
        new(Some("taken"), "https://a.example/4"),
    ])));
    assert!(matches!(
        batch,
        Err(StoreError::Write(WriteError::Conflict { .. }))
    ));
    assert_eq!(url(&store, "fresh"), None, "a failed batch creates nothing");
    let dup_in_batch = rt.block_on(store.submit(Op::Create(vec![
        new(Some("twin"), "https://a.example/5"),
        new(Some("twin"), "https://a.example/6"),
    ])));
    assert!(matches!(
        dup_in_batch,
        Err(StoreError::Write(WriteError::Conflict { .. }))
    ));
    assert_eq!(url(&store, "twin"), None);
    let missing = rt.block_on(store.submit(Op::Delete {
        domain: Domain::parse("go.example.cn").expect("d"),
        code: Code::parse("nope").expect("c"),
    }));
    assert!(matches!(
        missing,
        Err(StoreError::Write(WriteError::NotFound { .. }))
    ));
    let window = Patch {
        valid_since: Some(Some(10)),
        expires_at: Some(Some(5)),
        ..Patch::default()
    };
    let bad = rt.block_on(store.submit(Op::Update {
        domain: Domain::parse("go.example.cn").expect("d"),
        code: Code::parse("taken").expect("c"),
        patch: window,
    }));
    assert!(matches!(
        bad,
        Err(StoreError::Write(WriteError::Invalid(_)))
    ));
}

#[test]
fn racing_creates_of_one_code_grant_it_once() {
    let d = Dir::new("race");
    let store = Arc::new(open(&d));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let wins = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..64 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .submit(Op::Create(vec![new(
                        Some("prize"),
                        &format!("https://a.example/{i}"),
                    )]))
                    .await
            }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.expect("join") {
                Ok(_) => wins += 1,
                Err(StoreError::Write(WriteError::Conflict { .. })) => {}
                Err(e) => panic!("{e}"),
            }
        }
        wins
    });
    assert_eq!(wins, 1);
}

#[test]
fn compaction_folds_the_journal_and_keeps_every_link() {
    let d = Dir::new("compact");
    let rt = rt();
    {
        let store = open(&d);
        for i in 0..50 {
            rt.block_on(store.submit(Op::Create(vec![new(
                Some(&format!("c{i}")),
                &format!("https://a.example/{i}"),
            )])))
            .expect("create");
        }
        rt.block_on(store.submit(Op::Delete {
            domain: Domain::parse("go.example.cn").expect("d"),
            code: Code::parse("c7").expect("c"),
        }))
        .expect("delete");
        let report = rt.block_on(store.compact()).expect("compact");
        assert_eq!(report.sequence, 51);
        assert_eq!(report.links, 49);
        assert_eq!(store.index().overlay_len(), 0);
        assert_eq!(url(&store, "c3").as_deref(), Some("https://a.example/3"));
        assert_eq!(url(&store, "c7"), None);
        // Writes after compaction go on with the next sequence number.
        rt.block_on(store.submit(Op::Create(vec![new(
            Some("late"),
            "https://a.example/late",
        )])))
        .expect("create");
        let again = rt.block_on(store.compact()).expect("compact again");
        assert_eq!((again.sequence, again.links), (52, 50));
    }
    let store = open(&d);
    assert_eq!(store.replayed(), 0);
    assert_eq!(store.index().snapshot().header().sequence, 52);
    assert_eq!(
        url(&store, "late").as_deref(),
        Some("https://a.example/late")
    );
    rt.block_on(store.submit(Op::Create(vec![new(
        Some("after"),
        "https://a.example/after",
    )])))
    .expect("create");
    drop(store);
    let report = compact_offline(&DataDir::open(&d.0).expect("dir"), 30 * 86_400).expect("offline");
    assert_eq!((report.sequence, report.links), (53, 51));
    let store = open(&d);
    assert_eq!(
        url(&store, "after").as_deref(),
        Some("https://a.example/after")
    );
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let d = Dir::new("lock");
    let _first = DataDir::open(&d.0).expect("first");
    assert!(matches!(DataDir::open(&d.0), Err(StoreError::Locked(_))));
}
