//! Journal recovery: torn tails are cut, damage anywhere else refuses to open.
use duanlian_journal::{read, Journal, JournalError, Options, Record};
mod common;

use common::put;
use std::path::{Path, PathBuf};

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("dl-journal-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &Path, after: u64) -> Result<(Journal, Vec<Record>), JournalError> {
    let mut got = Vec::new();
    let j = Journal::open(dir, after, Options::default(), |r| got.push(r))?;
    Ok((j, got))
}

/// Writes `n` single-change records, one write each; returns the segment file.
fn fill(dir: &Path, n: usize) -> PathBuf {
    let (mut j, _) = open(dir, 0).expect("open");
    for i in 0..n {
        j.write(&[&[put(&format!("c{i}"))]]).expect("write");
    }
    dir.join(format!("{:020}.log", 1))
}

fn codes(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .flat_map(|r| r.changes.iter().map(|c| c.key().1.to_string()))
        .collect()
}

#[test]
fn records_replay_in_order_and_sequence_goes_on() {
    let d = Dir::new("replay");
    let (mut j, got) = open(&d.0, 0).expect("open");
    assert!(got.is_empty());
    assert_eq!(
        j.write(&[&[put("a")], &[put("b"), put("c")]])
            .expect("write"),
        2
    );
    assert_eq!(j.write(&[&[put("d")]]).expect("write"), 3);
    drop(j);
    let (j, got) = open(&d.0, 0).expect("reopen");
    assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(codes(&got), ["a", "b", "c", "d"]);
    assert_eq!(j.next_seq(), 4);
    drop(j);
    let (_, after_two) = open(&d.0, 2).expect("reopen after 2");
    assert_eq!(codes(&after_two), ["d"]);
    assert_eq!(read(&d.0, 1, u64::MAX, |_| {}).expect("read"), 3);
    let mut upto = Vec::new();
    read(&d.0, 0, 2, |r| upto.push(r)).expect("read through 2");
    assert_eq!(codes(&upto), ["a", "b", "c"]);
}

#[test]
fn cutting_the_last_record_at_every_offset_is_repaired() {
    let d = Dir::new("torn");
    let seg = fill(&d.0, 3);
    let whole = std::fs::read(&seg).expect("read");
    let (_, recs) = open(&d.0, 0).expect("open");
    assert_eq!(recs.len(), 3);
    // Find where the last record starts: the length of a journal with two records.
    let d2 = Dir::new("torn-two");
    let two_len = std::fs::read(fill(&d2.0, 2)).expect("read").len();
    for cut in two_len..whole.len() {
        std::fs::write(&seg, &whole[..cut]).expect("write");
        let (mut j, got) = open(&d.0, 0).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert_eq!(codes(&got), ["c0", "c1"], "cut at {cut}");
        assert_eq!(
            std::fs::metadata(&seg).expect("stat").len() as usize,
            two_len,
            "cut at {cut}"
        );
        // The next write gets the sequence number of the record that was lost.
        assert_eq!(
            j.write(&[&[put("again")]]).expect("write"),
            3,
            "cut at {cut}"
        );
        drop(j);
        let (_, got) = open(&d.0, 0).expect("reopen");
        assert_eq!(codes(&got), ["c0", "c1", "again"]);
    }
}

#[test]
fn damage_before_the_tail_refuses_to_open_naming_file_and_offset() {
    let d = Dir::new("flip");
    let seg = fill(&d.0, 3);
    let whole = std::fs::read(&seg).expect("read");
    let d2 = Dir::new("flip-two");
    let two_len = std::fs::read(fill(&d2.0, 2)).expect("read").len();
    for at in 0..two_len {
        let mut bad = whole.clone();
        bad[at] ^= 0x5a;
        std::fs::write(&seg, &bad).expect("write");
        match open(&d.0, 0) {
            Err(e @ JournalError::Corrupt { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("00000000000000000001.log"), "{msg}");
                assert!(msg.contains("offset"), "{msg}");
            }
            Err(other) => panic!("flip at {at}: unexpected {other}"),
            Ok((_, got)) => panic!("flip at {at} went unnoticed: {} records", got.len()),
        }
        // Nothing was cut: the damaged file is left as it was for inspection.
        assert_eq!(std::fs::read(&seg).expect("read"), bad);
    }
}

#[test]
fn zero_filled_tail_is_a_torn_write() {
    let d = Dir::new("zeros");
    let seg = fill(&d.0, 2);
    let mut bytes = std::fs::read(&seg).expect("read");
    let len = bytes.len();
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&seg, &bytes).expect("write");
    let (_, got) = open(&d.0, 0).expect("open");
    assert_eq!(got.len(), 2);
    assert_eq!(std::fs::metadata(&seg).expect("stat").len() as usize, len);
}

#[test]
fn rotation_and_removal_keep_the_sequence() {
    let d = Dir::new("rotate");
    let opts = Options { segment_bytes: 200 };
    let mut j = Journal::open(&d.0, 0, opts.clone(), |_| {}).expect("open");
    for i in 0..10 {
        j.write(&[&[put(&format!("r{i}"))]]).expect("write");
    }
    let through = j.rotate().expect("rotate");
    assert_eq!(through, 10);
    j.write(&[&[put("after")]]).expect("write");
    let segments_before = std::fs::read_dir(&d.0).expect("ls").count();
    assert!(segments_before > 2);
    assert!(j.remove_through(through).expect("remove") >= 2);
    drop(j);
    // Reopened as a compacted node would: the snapshot holds everything through 10.
    let mut got = Vec::new();
    let j = Journal::open(&d.0, through, opts, |r| got.push(r)).expect("reopen");
    assert_eq!(codes(&got), ["after"]);
    assert_eq!(j.next_seq(), 12);
}

#[test]
fn a_journal_behind_its_snapshot_starts_a_new_segment() {
    let d = Dir::new("behind");
    fill(&d.0, 3);
    // The snapshot already holds 1..=5 (compaction crashed before removing segments).
    let (mut j, got) = open(&d.0, 5).expect("open");
    assert!(got.is_empty());
    assert_eq!(j.write(&[&[put("x")]]).expect("write"), 6);
    drop(j);
    let (_, got) = open(&d.0, 5).expect("reopen");
    assert_eq!(codes(&got), ["x"]);
}

#[test]
fn missing_records_between_snapshot_and_journal_refuse_to_open() {
    let d = Dir::new("gap");
    std::fs::create_dir_all(&d.0).expect("mkdir");
    let (mut j, _) = open(&d.0, 9).expect("open");
    j.write(&[&[put("x")]]).expect("write"); // sequence 10
    drop(j);
    let err = open(&d.0, 3).expect_err("must refuse");
    assert!(err.to_string().contains("records are missing"), "{err}");
}
