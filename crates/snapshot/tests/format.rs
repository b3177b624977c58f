//! The snapshot file format: round trips, every malformed-file case, and the golden file.
use duanlian_link::{parse_url, Code, Domain, Link, Redirect, Validity};
use duanlian_snapshot::{
    AlignedVec, BuildError, Builder, Duplicate, Snapshot, SnapshotError, HEADER_LEN,
};
use std::path::PathBuf;

fn link(domain: &str, code: &str, url: &str) -> Link {
    Link {
        domain: Domain::parse(domain).expect("domain"),
        code: Code::parse(code).expect("code"),
        url: parse_url(url).expect("url"),
        redirect: Redirect::Found,
        validity: Validity::ALWAYS,
        created_at: 1_700_000_000,
        forward_query: duanlian_link::ForwardQuery::Add,
        expired_url: None,
    }
}

/// The links in the golden file; keep in step with `data/golden/snapshot-v1.snap`.
fn golden_links() -> Vec<Link> {
    let mut v = vec![
        link(
            "go.example.cn",
            "x7Kp2Qa",
            "https://shop.example.com/item/42?utm_source=sms",
        ),
        link("s.example.com", "x7Kp2Qa", "https://other.example.org/"),
        Link {
            redirect: Redirect::Permanent,
            validity: Validity::new(Some(1_700_000_000), Some(1_900_000_000)).expect("window"),
            ..link(
                "go.example.cn",
                "spring-sale_2025",
                "http://a.example/%E7%9F%AD",
            )
        },
        Link {
            forward_query: duanlian_link::ForwardQuery::Off,
            ..link("s.example.com", "no-query", "https://c.example/?fixed=1")
        },
        Link {
            redirect: Redirect::Moved,
            ..link(
                "go.example.cn",
                &"L".repeat(64),
                "https://b.example:8443/x?y=1#z",
            )
        },
    ];
    for i in 0..40 {
        v.push(link(
            "s.example.com",
            &format!("c{i}"),
            &format!("https://shop.example.com/{i}"),
        ));
    }
    v
}

fn image(links: &[Link], seed: u64, sequence: u64) -> AlignedVec {
    let mut b = Builder::with_seed(seed);
    for l in links {
        b.push(l).expect("push");
    }
    b.finish()
        .expect("finish")
        .to_bytes(sequence)
        .expect("to_bytes")
}

fn reopen(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let mut v = AlignedVec::<16>::new();
    v.extend_from_slice(bytes);
    Snapshot::from_bytes(v)
}

fn assert_has(snap: &Snapshot, links: &[Link]) {
    assert_eq!(snap.len(), links.len());
    for l in links {
        let got = snap
            .get(l.domain.as_str(), l.code.as_str())
            .unwrap_or_else(|| panic!("{}/{} missing", l.domain, l.code));
        assert_eq!(got.url, l.url.as_bytes());
        assert_eq!(got.code, l.code.as_str().as_bytes());
        assert_eq!(got.domain, l.domain.as_str());
        assert_eq!(got.redirect, l.redirect);
        assert_eq!(got.validity, l.validity);
        assert_eq!(got.created_at, l.created_at);
        assert_eq!(got.forward_query, l.forward_query);
        assert_eq!(got.expired_url, l.expired_url.as_deref().map(str::as_bytes));
        assert_eq!(got.to_link().as_ref(), Some(l));
    }
}

#[test]
fn round_trip_finds_every_link_and_nothing_else() {
    let links = golden_links();
    let snap = Snapshot::from_bytes(image(&links, 7, 12)).expect("open");
    assert_has(&snap, &links);
    assert_eq!(snap.header().sequence, 12);
    assert!(snap.get("go.example.cn", "x7Kp2Qb").is_none());
    assert!(snap.get("unknown.example", "x7Kp2Qa").is_none());
    assert!(snap.get("go.example.cn", "").is_none());
    assert_eq!(snap.iter().count(), links.len());
    let report = snap.verify().expect("verify");
    assert_eq!(
        report.domains,
        vec![("go.example.cn".into(), 3), ("s.example.com".into(), 42)]
    );
    assert_eq!(report.with_expiry, 1);
    assert_eq!(snap.domain_counts(), report.domains);
}

#[test]
fn entries_are_sorted_and_seek_finds_a_cursor() {
    let links = golden_links();
    let snap = Snapshot::from_bytes(image(&links, 7, 0)).expect("open");
    let keys: Vec<(String, Vec<u8>)> = snap
        .iter()
        .map(|l| (l.domain.to_owned(), l.code.to_vec()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    let from_s: Vec<_> = snap.seek("s.example.com", "").map(|l| l.domain).collect();
    assert_eq!(from_s.len(), 42);
    let after = snap.seek("s.example.com", "c5").next().expect("c5 exists");
    assert_eq!(after.code, b"c5");
    let between = snap
        .seek("s.example.com", "c50")
        .next()
        .expect("next after c50");
    assert_eq!(between.code, b"c6");
    assert!(snap.seek("zz.example", "").next().is_none());
    assert!(!snap
        .get("s.example.com", "no-query")
        .expect("present")
        .forward_query
        .is_on());
    assert!(snap
        .get("s.example.com", "c1")
        .expect("present")
        .forward_query
        .is_on());
}

#[test]
fn empty_table_opens() {
    let snap = Snapshot::from_bytes(image(&[], 1, 0)).expect("open");
    assert!(snap.is_empty());
    assert!(snap.get("a.cn", "x").is_none());
}

#[test]
fn duplicates_are_all_reported() {
    let mut b = Builder::with_seed(3);
    for l in [
        link("a.cn", "x", "https://1.cn/"),
        link("a.cn", "y", "https://2.cn/"),
        link("a.cn", "x", "https://3.cn/"),
        link("b.cn", "x", "https://4.cn/"),
        link("a.cn", "x", "https://5.cn/"),
    ] {
        b.push(&l).expect("push");
    }
    match b.finish() {
        Err(BuildError::Duplicates(d)) => assert_eq!(
            d,
            vec![
                Duplicate {
                    domain: "a.cn".into(),
                    code: "x".into(),
                    first: 0,
                    repeat: 2
                },
                Duplicate {
                    domain: "a.cn".into(),
                    code: "x".into(),
                    first: 0,
                    repeat: 4
                },
            ]
        ),
        other => panic!("expected duplicates, got {other:?}"),
    }
}

#[test]
fn every_single_byte_flip_is_detected() {
    let good = image(&golden_v2_links(), 5, 3);
    for at in 0..good.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut bad = good.to_vec();
            bad[at] ^= mask;
            assert!(
                reopen(&bad).is_err(),
                "flip {mask:#x} at byte {at} went unnoticed"
            );
        }
    }
}

#[test]
fn malformed_files_get_typed_errors() {
    let good = image(&golden_links(), 5, 3);
    assert_eq!(reopen(&[]).err(), Some(SnapshotError::Empty));
    assert!(matches!(
        reopen(&good[..10]),
        Err(SnapshotError::Truncated {
            expected: 64,
            actual: 10
        })
    ));
    assert!(matches!(
        reopen(&good[..good.len() - 1]),
        Err(SnapshotError::Truncated { .. })
    ));
    let mut longer = good.to_vec();
    longer.push(0);
    assert!(matches!(
        reopen(&longer),
        Err(SnapshotError::TrailingBytes { .. })
    ));
    let mut magic = good.to_vec();
    magic[0] = b'X';
    assert_eq!(reopen(&magic).err(), Some(SnapshotError::BadMagic));
    let mut version = good.to_vec();
    version[8] = 6;
    assert_eq!(
        reopen(&version).err(),
        Some(SnapshotError::UnsupportedVersion(6))
    );
    version[8] = 0;
    assert_eq!(
        reopen(&version).err(),
        Some(SnapshotError::UnsupportedVersion(0))
    );
    let mut count = good.to_vec();
    count[24] ^= 1;
    assert!(matches!(
        reopen(&count),
        Err(SnapshotError::HeaderChecksum { .. })
    ));
    let mut payload = good.to_vec();
    payload[HEADER_LEN + 5] ^= 1;
    assert!(matches!(
        reopen(&payload),
        Err(SnapshotError::PayloadChecksum { .. })
    ));
}

#[test]
fn invalid_archive_behind_a_valid_checksum_is_rejected() {
    // A forger who fixes up both checksums still cannot get garbage past rkyv's validation.
    let good = image(&golden_links(), 5, 3);
    let mut bad = good.to_vec();
    let end = bad.len();
    for b in &mut bad[end - 16..] {
        *b = 0xff; // the root's relative pointers now point far outside the buffer
    }
    let crc = crc32c::crc32c(&bad[HEADER_LEN..]);
    bad[56..60].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&bad[..76]);
    bad[76..80].copy_from_slice(&hcrc.to_le_bytes());
    assert!(
        matches!(reopen(&bad), Err(SnapshotError::InvalidArchive(_))),
        "{:?}",
        reopen(&bad)
    );
}

fn golden_path(version: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../data/golden/snapshot-v{version}.snap"))
}

/// The link that versions 3 and later mark as written through the admin API.
fn via_api() -> Link {
    link("go.example.cn", "viaApi", "https://f.example/")
}

/// The links in the golden files of version 3 and later: version 2's plus [`via_api`].
fn golden_v3_links() -> Vec<Link> {
    let mut v = golden_v2_links();
    v.push(via_api());
    v
}

/// Version 2 added optional fields (visit cap, expired-link target) behind an entry flag.
fn golden_v2_links() -> Vec<Link> {
    let mut v = golden_links();
    v.push(Link {
        validity: Validity::new(Some(1_700_000_000), Some(1_900_000_000))
            .and_then(|v| v.with_max_visits(Some(500)))
            .expect("validity"),
        expired_url: Some("https://sorry.example/ended?from=short".into()),
        ..link("go.example.cn", "capped", "https://d.example/")
    });
    v.push(Link {
        validity: Validity::ALWAYS.with_max_visits(Some(1)).expect("cap"),
        ..link("s.example.com", "once", "https://e.example/")
    });
    v
}

#[test]
fn golden_v1_file_keeps_opening() {
    let snap = Snapshot::open(golden_path(1)).expect("the committed version-1 snapshot must open");
    assert_eq!(snap.header().format_version, 1);
    assert_eq!(snap.header().sequence, 77);
    assert_has(&snap, &golden_links());
    snap.verify().expect("verify");
}

#[test]
fn golden_v2_file_keeps_opening() {
    let snap = Snapshot::open(golden_path(2)).expect("the committed version-2 snapshot must open");
    assert_eq!(snap.header().format_version, 2);
    assert_eq!(snap.header().sequence, 78);
    assert_has(&snap, &golden_v2_links());
    let capped = snap.get("go.example.cn", "capped").expect("capped");
    assert_eq!(capped.validity.max_visits, Some(500));
    assert_eq!(
        capped.expired_url,
        Some(&b"https://sorry.example/ended?from=short"[..])
    );
    snap.verify().expect("verify");
}

#[test]
fn golden_v3_file_keeps_opening() {
    let snap = Snapshot::open(golden_path(3)).expect("the committed version-3 snapshot must open");
    assert_eq!(snap.header().format_version, 3);
    assert_eq!(snap.header().sequence, 79);
    let links = golden_v3_links();
    assert_has(&snap, &links);
    assert!(snap
        .iter()
        .filter(|l| l.code != b"viaApi")
        .all(|l| !l.from_api));
    assert!(
        snap.get("go.example.cn", "viaApi")
            .expect("viaApi")
            .from_api
    );
    snap.verify().expect("verify");
}

#[test]
fn golden_v4_file_keeps_opening() {
    let snap = Snapshot::open(golden_path(4)).expect("the committed version-4 snapshot must open");
    assert_eq!(snap.header().format_version, 4);
    assert_eq!(snap.header().sequence, 79);
    let links = golden_v3_links();
    assert_has(&snap, &links);
    assert!(
        snap.get("go.example.cn", "viaApi")
            .expect("viaApi")
            .from_api
    );
    snap.verify().expect("verify");
    // Converting an older file gives the same links as the current layout holds.
    let old = Snapshot::open(golden_path(3)).expect("v3");
    assert!(old.iter().eq(snap.iter()));
}

#[test]
fn golden_v5_file_keeps_opening() {
    let snap = Snapshot::open(golden_path(5)).expect("the committed version-5 snapshot must open");
    assert_eq!(snap.header().format_version, 5);
    assert_eq!(snap.header().sequence, 79);
    assert_eq!(snap.header().feed_id, GOLDEN_FEED);
    let links = golden_v3_links();
    assert_has(&snap, &links);
    snap.verify().expect("verify");
    // Version 4 (64-byte header) and 5 (80-byte header, feed id) hold the same table.
    let old = Snapshot::open(golden_path(4)).expect("v4");
    assert_eq!(old.header().feed_id, 0);
    assert!(old.iter().eq(snap.iter()));
}

/// The feed id in the version-5 golden file.
const GOLDEN_FEED: u64 = 0x5eed_f00d_0000_0005;

#[test]
fn the_feed_id_round_trips() {
    let mut b = Builder::with_seed(1);
    b.push(&link("go.example.cn", "a", "https://a.example/"))
        .expect("push");
    let image = b
        .finish()
        .expect("finish")
        .with_feed(77)
        .to_bytes(12)
        .expect("bytes");
    let snap = reopen(&image).expect("open");
    assert_eq!((snap.header().sequence, snap.header().feed_id), (12, 77));
}

#[test]
fn the_api_flag_is_refused_in_older_versions() {
    // The committed version-3 file, relabelled version 2 (the layout is the same).
    let mut bytes = std::fs::read(golden_path(3)).expect("golden v3");
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    let err = reopen(&bytes).expect_err("version 2 has no API flag");
    assert!(err.to_string().contains("unknown flags"), "{err}");
}

/// Writes the golden file of the current format version. Only for a new version: committed
/// files are the proof that old versions stay readable, and are never rewritten.
/// `cargo test -p duanlian-snapshot -- --ignored write_golden`
#[test]
#[ignore]
fn write_golden() {
    let path = golden_path(duanlian_snapshot::FORMAT_VERSION);
    assert!(
        !path.exists(),
        "{} exists: golden files are never rewritten",
        path.display()
    );
    let mut b = Builder::with_seed(42);
    for l in golden_v2_links() {
        b.push(&l).expect("push");
    }
    b.push_api(&via_api()).expect("push_api");
    let image = b
        .finish()
        .expect("finish")
        .with_feed(GOLDEN_FEED)
        .to_bytes(79)
        .expect("to_bytes");
    duanlian_snapshot::write_atomic(&path, &image).expect("write");
}

#[test]
fn open_names_io_errors_and_publishes_atomically() {
    let dir = std::env::temp_dir().join(format!("dl-snap-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let missing = dir.join("missing.snap");
    match Snapshot::open(&missing) {
        Err(e @ SnapshotError::Io { .. }) => assert!(e.to_string().contains("missing.snap")),
        other => panic!("{other:?}"),
    }
    let empty = dir.join("empty.snap");
    std::fs::write(&empty, b"").expect("write");
    assert_eq!(Snapshot::open(&empty).err(), Some(SnapshotError::Empty));

    let path = dir.join("links.snap");
    duanlian_snapshot::write_atomic(&path, &image(&golden_links(), 9, 1)).expect("write");
    let old = Snapshot::open(&path).expect("open");
    // Replacing the file leaves the open mapping on the old inode, intact.
    duanlian_snapshot::write_atomic(&path, &image(&golden_links()[..3], 9, 2)).expect("rewrite");
    assert_has(&old, &golden_links());
    assert_eq!(Snapshot::open(&path).expect("reopen").len(), 3);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("ls")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn streaming_write_produces_the_same_archive() {
    let mut b = Builder::with_seed(11);
    for l in golden_v2_links() {
        b.push(&l).expect("push");
    }
    let table = b.finish().expect("finish");
    let in_memory = table.to_bytes(5).expect("bytes");
    let dir = std::env::temp_dir().join(format!("dl-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("s.snap");
    let size = table.write(&path, 5).expect("write");
    let on_disk = std::fs::read(&path).expect("read");
    assert_eq!(size as usize, on_disk.len());
    assert_eq!(&on_disk[HEADER_LEN..], &in_memory[HEADER_LEN..]);
    // Headers agree on everything but the build time (and so the header checksum).
    assert_eq!(on_disk[..48], in_memory[..48]);
    assert_eq!(on_disk[56..60], in_memory[56..60]);
    let snap = Snapshot::open(&path).expect("open");
    assert_has(&snap, &golden_v2_links());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn deferred_open_checks_structure_now_and_the_checksum_later() {
    let dir = std::env::temp_dir().join(format!("dl-deferred-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join("d.snap");
    let good = image(&golden_v2_links(), 3, 0);
    std::fs::write(&path, &good).expect("write");
    let snap = Snapshot::open_deferred(&path).expect("open");
    assert!(snap.verify_checksum().is_ok());
    // A flipped payload byte passes the structural checks but not the checksum.
    let mut bad = good.to_vec();
    let at = bad.len() - 200;
    bad[at] ^= 0x20;
    let other = dir.join("bad.snap");
    std::fs::write(&other, &bad).expect("write");
    if let Ok(snap) = Snapshot::open_deferred(&other) {
        assert!(matches!(
            snap.verify_checksum(),
            Err(SnapshotError::PayloadChecksum { .. })
        ));
    }
    // Structural damage is still refused at once.
    let mut magic = good.to_vec();
    magic[0] = b'Y';
    std::fs::write(&other, &magic).expect("write");
    assert_eq!(
        Snapshot::open_deferred(&other).err(),
        Some(SnapshotError::BadMagic)
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn url_bytes_of_a_snapshot_link_share_its_image() {
    let links = golden_links();
    let snap = Snapshot::from_bytes(image(&links, 4, 0)).expect("open");
    let hit = snap.get("go.example.cn", "x7Kp2Qa").expect("present");
    let shared = hit.url_bytes();
    assert_eq!(&shared[..], hit.url);
    assert_eq!(
        shared.as_ptr(),
        hit.url.as_ptr(),
        "a slice of the image, not a copy"
    );
    let owned = duanlian_snapshot::LinkRef::from(&links[0]);
    assert_eq!(&owned.url_bytes()[..], links[0].url.as_bytes());
}
