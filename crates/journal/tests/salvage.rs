//! Damage in the middle of the journal: `check` finds it, `salvage` gets past it, and opening
//! quarantines a whole last record that fails its checksum instead of cutting it off silently.
use duanlian_journal::{
    check, quarantine_dir, read, salvage, Journal, JournalError, Options, Record, SalvageMode,
    SeqRange,
};
mod common;

use common::put;
use duanlian_link::Change;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// A data directory of its own per test: the journal, its quarantine and the damaged original
/// all live side by side in it.
struct Root(PathBuf);

impl Root {
    fn new(tag: &str) -> Root {
        let p = std::env::temp_dir().join(format!("dl-salvage-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).expect("mkdir");
        Root(p)
    }

    fn journal(&self) -> PathBuf {
        self.0.join("journal")
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const RECORDS: u64 = 3000;

fn opts() -> Options {
    Options {
        segment_bytes: 16 << 10,
    }
}

/// Writes `n` records (every seventh with two changes) in groups of ten, across many segments;
/// returns them as a replay gives them back.
fn build(dir: &Path, n: u64) -> Vec<Record> {
    let mut j = Journal::open(dir, 0, opts(), |_| unreachable!("new journal")).expect("open");
    let changes: Vec<Vec<Change>> = (1..=n)
        .map(|seq| {
            let mut c = vec![put(&format!("c{seq}"))];
            if seq % 7 == 0 {
                c.push(put(&format!("d{seq}")));
            }
            c
        })
        .collect();
    for group in changes.chunks(10) {
        let refs: Vec<&[Change]> = group.iter().map(Vec::as_slice).collect();
        j.write(&refs).expect("write");
    }
    drop(j);
    let all = replay(dir, 0);
    assert_eq!(all.len() as u64, n);
    all
}

fn replay(dir: &Path, after: u64) -> Vec<Record> {
    let mut got = Vec::new();
    Journal::open(dir, after, opts(), |r| got.push(r)).expect("open");
    got
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// A record's place in its segment, read with the documented framing.
#[derive(Debug, Clone, Copy)]
struct Frame {
    offset: usize,
    seq: u64,
    len: usize,
}

fn frames(seg: &Path) -> Vec<Frame> {
    let b = fs::read(seg).expect("read");
    let mut out = Vec::new();
    let mut off = 8;
    while off + 20 <= b.len() {
        let len = u32::from_le_bytes(b[off..off + 4].try_into().expect("4")) as usize;
        let seq = u64::from_le_bytes(b[off + 4..off + 12].try_into().expect("8"));
        out.push(Frame {
            offset: off,
            seq,
            len: 20 + len,
        });
        off += 20 + len;
    }
    out
}

fn flip(path: &Path, at: usize) {
    let mut b = fs::read(path).expect("read");
    b[at] ^= 0x10;
    fs::write(path, b).expect("write");
}

fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .expect("ls")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).expect("read"),
            )
        })
        .collect()
}

fn without(all: &[Record], gone: &[u64]) -> Vec<Record> {
    all.iter()
        .filter(|r| !gone.contains(&r.seq))
        .cloned()
        .collect()
}

fn range(first: u64, last: u64) -> SeqRange {
    SeqRange {
        first,
        last: Some(last),
    }
}

/// The middle record of the middle segment.
fn middle(dir: &Path) -> (PathBuf, Frame) {
    let segs = segments(dir);
    assert!(segs.len() >= 5, "{} segments", segs.len());
    let seg = segs[segs.len() / 2].clone();
    let f = frames(&seg);
    (seg, f[f.len() / 2])
}

#[test]
fn one_damaged_record_in_a_middle_segment_is_found_and_skipped() {
    // In the header (found again by scanning forward) and in the payload (the header still
    // says where the record ends).
    for (tag, within) in [("header", 6), ("payload", 30)] {
        let root = Root::new(&format!("one-{tag}"));
        let dir = root.journal();
        let all = build(&dir, RECORDS);
        let (seg, frame) = middle(&dir);
        let damaged_bytes =
            fs::read(&seg).expect("read")[frame.offset..frame.offset + frame.len].to_vec();
        flip(&seg, frame.offset + within);

        match Journal::open(&dir, 0, opts(), |_| {}) {
            Err(e @ JournalError::Corrupt { .. }) => {
                assert!(e.to_string().contains(&*seg.to_string_lossy()), "{e}")
            }
            other => panic!("{tag}: open must refuse, got {other:?}"),
        }

        let report = check(&dir, 0).expect("check");
        assert_eq!(report.damage.len(), 1, "{tag}: {:?}", report.damage);
        let d = &report.damage[0];
        assert_eq!(d.path, seg);
        assert_eq!(d.offset, frame.offset as u64);
        assert_eq!(d.len, frame.len as u64);
        assert_eq!(d.seqs, Some(range(frame.seq, frame.seq)));
        assert_eq!(report.records, RECORDS - 1);
        assert_eq!(
            (report.first_seq, report.last_seq),
            (Some(1), Some(RECORDS))
        );
        assert_eq!(report.lost(), [range(frame.seq, frame.seq)]);
        assert!(report.torn_tail.is_none());
        let line = d.to_string();
        assert!(
            line.contains(&format!(
                "offset {} ({} bytes): seq {}..={}",
                frame.offset, frame.len, frame.seq, frame.seq
            )),
            "{line}"
        );

        let before = contents(&dir);
        let s = salvage(&dir, 0, SalvageMode::SkipDamaged).expect("salvage");
        assert_eq!(s.kept, RECORDS - 1);
        assert_eq!(s.lost, [range(frame.seq, frame.seq)]);
        assert!(s.dropped.is_empty());
        assert_eq!(s.gaps, [range(frame.seq, frame.seq)]);
        assert_eq!(s.next_seq, RECORDS + 1);
        // The original is kept as it was, beside the new journal.
        let original = s.original.clone().expect("moved aside");
        assert_eq!(original.parent(), Some(root.0.as_path()));
        assert_eq!(contents(&original), before);
        // The quarantine holds the damaged record's bytes exactly as they were on disk.
        assert_eq!(s.quarantined.len(), 1);
        assert_eq!(s.quarantined[0].parent(), Some(&*quarantine_dir(&dir)));
        let mut expected_bytes = damaged_bytes;
        expected_bytes[within] ^= 0x10;
        assert_eq!(fs::read(&s.quarantined[0]).expect("read"), expected_bytes);
        let index = fs::read_to_string(quarantine_dir(&dir).join("index.jsonl")).expect("index");
        assert!(
            index.contains(&format!(
                "\"first_seq\":{},\"last_seq\":{}",
                frame.seq, frame.seq
            )),
            "{index}"
        );

        // Compaction reads across the gap too.
        let mut read_back = Vec::new();
        read(&dir, 0, u64::MAX, |r| read_back.push(r)).expect("read");
        assert_eq!(read_back, without(&all, &[frame.seq]));

        let mut got = Vec::new();
        let mut j = Journal::open(&dir, 0, opts(), |r| got.push(r)).expect("open after");
        assert_eq!(got, without(&all, &[frame.seq]), "{tag}");
        assert_eq!(j.next_seq(), RECORDS + 1);
        assert_eq!(j.write(&[&[put("after")]]).expect("write"), RECORDS + 1);
        drop(j);
        assert_eq!(replay(&dir, 0).len() as u64, RECORDS);
        let again = check(&dir, 0).expect("check after");
        assert!(again.is_clean(), "{:?}", again.damage);
        assert_eq!(again.accepted_gaps, [range(frame.seq, frame.seq)]);
    }
}

#[test]
fn point_in_time_keeps_exactly_the_prefix() {
    let root = Root::new("pit");
    let dir = root.journal();
    let all = build(&dir, RECORDS);
    let (seg, frame) = middle(&dir);
    flip(&seg, frame.offset + 2);
    let s = salvage(&dir, 0, SalvageMode::PointInTime).expect("salvage");
    let seq = frame.seq;
    assert_eq!(s.kept, seq - 1);
    assert_eq!(s.last_kept, Some(seq - 1));
    assert_eq!(s.lost, [range(seq, seq)]);
    assert_eq!(s.dropped, [range(seq + 1, RECORDS)]);
    assert!(s.gaps.is_empty());
    assert_eq!(s.next_seq, seq);
    assert!(s.original.as_deref().is_some_and(Path::is_dir));
    assert!(!dir.join("gaps").exists());
    let mut got = Vec::new();
    let mut j = Journal::open(&dir, 0, opts(), |r| got.push(r)).expect("open");
    assert_eq!(got, all[..(seq - 1) as usize]);
    assert_eq!(j.write(&[&[put("next")]]).expect("write"), seq);
    drop(j);
    assert!(check(&dir, 0).expect("check").is_clean());
}

#[test]
fn two_damaged_regions_one_running_to_the_end_of_its_segment() {
    let root = Root::new("two");
    let dir = root.journal();
    let all = build(&dir, RECORDS);
    let segs = segments(&dir);
    // A header flip early on, and the last three records of a later segment zeroed (so the
    // number of records lost there comes from the next segment's name).
    let early = frames(&segs[2])[10];
    flip(&segs[2], early.offset + 13);
    let late_frames = frames(&segs[7]);
    let tail = &late_frames[late_frames.len() - 3..];
    let mut b = fs::read(&segs[7]).expect("read");
    let tail_len = b.len() - tail[0].offset;
    b[tail[0].offset..].fill(0);
    fs::write(&segs[7], &b).expect("write");

    let report = check(&dir, 0).expect("check");
    assert_eq!(report.damage.len(), 2, "{:?}", report.damage);
    let (a, z) = (&report.damage[0], &report.damage[1]);
    assert_eq!(
        (a.path.as_path(), a.offset),
        (segs[2].as_path(), early.offset as u64)
    );
    assert_eq!(a.seqs, Some(range(early.seq, early.seq)));
    assert_eq!(
        (z.path.as_path(), z.offset, z.len),
        (segs[7].as_path(), tail[0].offset as u64, tail_len as u64)
    );
    assert_eq!(z.seqs, Some(range(tail[0].seq, tail[2].seq)));
    assert_eq!(report.records, RECORDS - 4);

    let s = salvage(&dir, 0, SalvageMode::SkipDamaged).expect("salvage");
    let lost = [early.seq, tail[0].seq, tail[1].seq, tail[2].seq];
    assert_eq!(
        s.lost,
        [range(early.seq, early.seq), range(tail[0].seq, tail[2].seq)]
    );
    assert_eq!(s.gaps, s.lost);
    assert_eq!(s.quarantined.len(), 2);
    assert_eq!(
        fs::read(&s.quarantined[1]).expect("read"),
        vec![0u8; tail_len]
    );
    assert_eq!(replay(&dir, 0), without(&all, &lost));
}

#[test]
fn damage_in_a_segment_header_loses_nothing() {
    let root = Root::new("magic");
    let dir = root.journal();
    let all = build(&dir, RECORDS);
    let seg = segments(&dir)[4].clone();
    flip(&seg, 3);
    assert!(matches!(
        Journal::open(&dir, 0, opts(), |_| {}),
        Err(JournalError::Corrupt { .. })
    ));
    let report = check(&dir, 0).expect("check");
    assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
    let d = &report.damage[0];
    assert_eq!((d.path.as_path(), d.offset, d.len), (seg.as_path(), 0, 8));
    assert_eq!(d.seqs, None);
    assert!(report.lost().is_empty());
    assert_eq!(report.records, RECORDS);

    // Nothing is lost, so the point in time is the end: both modes keep everything.
    let s = salvage(&dir, 0, SalvageMode::PointInTime).expect("salvage");
    assert_eq!((s.kept, s.next_seq), (RECORDS, RECORDS + 1));
    assert!(s.lost.is_empty() && s.dropped.is_empty() && s.gaps.is_empty());
    assert_eq!(replay(&dir, 0), all);
}

#[test]
fn damage_the_snapshot_already_has_loses_nothing() {
    let root = Root::new("insnap");
    let dir = root.journal();
    let all = build(&dir, RECORDS);
    let (seg, frame) = middle(&dir);
    flip(&seg, frame.offset + 25);
    let after = frame.seq + 100;
    let report = check(&dir, after).expect("check");
    assert_eq!(report.damage.len(), 1);
    assert!(report.lost().is_empty());
    // Opening still refuses: it checks every record it reads.
    assert!(Journal::open(&dir, after, opts(), |_| {}).is_err());
    let s = salvage(&dir, after, SalvageMode::PointInTime).expect("salvage");
    assert!(s.lost.is_empty() && s.dropped.is_empty() && s.gaps.is_empty());
    assert_eq!(s.kept, RECORDS - after);
    assert_eq!(replay(&dir, after), all[after as usize..]);
}

#[test]
fn a_whole_last_record_with_a_bad_checksum_is_quarantined_at_open() {
    let root = Root::new("last");
    let dir = root.journal();
    let all = build(&dir, 5);
    let seg = segments(&dir)[0].clone();
    let last = *frames(&seg).last().expect("frames");
    assert_eq!(last.seq, 5);
    flip(&seg, last.offset + last.len - 3);
    let damaged = fs::read(&seg).expect("read")[last.offset..].to_vec();

    let report = check(&dir, 0).expect("check");
    assert_eq!(report.damage.len(), 1);
    assert_eq!(report.damage[0].seqs, Some(range(5, 5)));

    // The node comes up without it, and its bytes are kept.
    let mut got = Vec::new();
    let mut j = Journal::open(&dir, 0, opts(), |r| got.push(r)).expect("open");
    assert_eq!(got, all[..4]);
    let q = quarantine_dir(&dir);
    assert_eq!(q, root.0.join("journal-quarantine"));
    let kept: Vec<_> = fs::read_dir(&q)
        .expect("quarantine")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(fs::read(&kept[0]).expect("read"), damaged);
    let index = fs::read_to_string(q.join("index.jsonl")).expect("index");
    assert!(index.contains("\"first_seq\":5,\"last_seq\":5"), "{index}");
    assert!(check(&dir, 0).expect("check").is_clean());
    assert_eq!(j.write(&[&[put("again")]]).expect("write"), 5);
}

#[test]
fn a_torn_tail_is_reported_but_is_not_damage() {
    let root = Root::new("torn");
    let dir = root.journal();
    build(&dir, 5);
    let seg = segments(&dir)[0].clone();
    let len = fs::metadata(&seg).expect("stat").len();
    let f = fs::OpenOptions::new().write(true).open(&seg).expect("open");
    f.set_len(len - 3).expect("cut");
    let report = check(&dir, 0).expect("check");
    assert!(report.is_clean());
    let torn = report.torn_tail.expect("torn tail");
    assert_eq!(torn.path, seg);
    assert_eq!(report.records, 4);
    let s = salvage(&dir, 0, SalvageMode::SkipDamaged).expect("salvage");
    assert!(s.original.is_none(), "nothing to salvage");
}

/// Removes one record from its segment, leaving a jump in the sequence.
fn splice_out(seg: &Path, frame: Frame) {
    let mut b = fs::read(seg).expect("read");
    b.drain(frame.offset..frame.offset + frame.len);
    fs::write(seg, b).expect("write");
}

fn gap_list(ranges: &[(u64, u64)]) -> String {
    let mut text = String::from("duanlian journal gaps v1\n");
    for (a, b) in ranges {
        text.push_str(&format!("{a} {b}\n"));
    }
    let crc = crc32c::crc32c(text.as_bytes());
    text.push_str(&format!("crc32c {crc:08x}\n"));
    text
}

#[test]
fn only_a_listed_gap_is_accepted_and_only_exactly() {
    let root = Root::new("gaps");
    let dir = root.journal();
    let all = build(&dir, 300);
    let seg = segments(&dir)[0].clone();
    let gone = frames(&seg)[20];
    splice_out(&seg, gone);
    let refused = Journal::open(&dir, 0, opts(), |_| {}).expect_err("a jump is corruption");
    assert!(
        refused
            .to_string()
            .contains(&format!("sequence {}, expected {}", gone.seq + 1, gone.seq)),
        "{refused}"
    );
    let report = check(&dir, 0).expect("check");
    assert_eq!(report.damage.len(), 1);
    assert_eq!(
        (report.damage[0].len, report.damage[0].seqs),
        (0, Some(range(gone.seq, gone.seq)))
    );
    let s = gone.seq;
    for wrong in [(s - 1, s), (s, s + 1), (s + 1, s + 1), (s - 1, s - 1)] {
        fs::write(dir.join("gaps"), gap_list(&[wrong])).expect("write");
        assert!(
            Journal::open(&dir, 0, opts(), |_| {}).is_err(),
            "listing {wrong:?} must not explain a gap at {s}"
        );
    }
    let mut damaged_list = gap_list(&[(s, s)]).into_bytes();
    damaged_list[27] ^= 1;
    fs::write(dir.join("gaps"), &damaged_list).expect("write");
    assert!(matches!(
        Journal::open(&dir, 0, opts(), |_| {}),
        Err(JournalError::GapList { .. })
    ));
    fs::write(dir.join("gaps"), gap_list(&[(s, s)])).expect("write");
    assert_eq!(replay(&dir, 0), without(&all, &[s]));
}

#[test]
fn after_a_salvage_an_unlisted_gap_is_still_refused() {
    let root = Root::new("unlisted");
    let dir = root.journal();
    build(&dir, RECORDS);
    let (seg, frame) = middle(&dir);
    flip(&seg, frame.offset + 6);
    salvage(&dir, 0, SalvageMode::SkipDamaged).expect("salvage");
    // Another record goes missing later, somewhere else.
    let later = segments(&dir)
        .into_iter()
        .rev()
        .nth(1)
        .expect("a segment near the end");
    let gone = frames(&later)[5];
    splice_out(&later, gone);
    let err = Journal::open(&dir, 0, opts(), |_| {}).expect_err("must refuse");
    assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
    let report = check(&dir, 0).expect("check");
    assert_eq!(report.lost(), [range(gone.seq, gone.seq)]);
    assert_eq!(report.accepted_gaps, [range(frame.seq, frame.seq)]);
}

#[test]
fn the_gap_is_forgotten_once_compaction_has_folded_past_it() {
    let root = Root::new("forget");
    let dir = root.journal();
    build(&dir, RECORDS);
    let (seg, frame) = middle(&dir);
    flip(&seg, frame.offset + 6);
    salvage(&dir, 0, SalvageMode::SkipDamaged).expect("salvage");
    assert!(dir.join("gaps").exists());
    // What a compaction does: fold everything closed into the snapshot, drop those segments.
    let mut j = Journal::open(&dir, 0, opts(), |_| {}).expect("open");
    j.write(&[&[put("x")]]).expect("write");
    let through = j.rotate().expect("rotate");
    let mut folded = 0;
    read(&dir, 0, through, |_| folded += 1).expect("fold");
    assert_eq!(folded, RECORDS);
    j.remove_through(through).expect("remove");
    drop(j);
    let mut j =
        Journal::open(&dir, through, opts(), |_| unreachable!("all folded")).expect("reopen");
    assert!(!dir.join("gaps").exists());
    assert_eq!(j.write(&[&[put("y")]]).expect("write"), through + 1);
    drop(j);
    assert_eq!(replay(&dir, through).len(), 1);
    assert!(check(&dir, through).expect("check").is_clean());
}

#[test]
fn an_interrupted_swap_is_finished_by_open() {
    let root = Root::new("swap");
    let dir = root.journal();
    let all = build(&dir, RECORDS);
    let (seg, frame) = middle(&dir);
    flip(&seg, frame.offset + 6);
    salvage(&dir, 0, SalvageMode::SkipDamaged).expect("salvage");
    // As if the salvage stopped between moving the original aside and the new one in.
    let ready = root.0.join("journal.salvaged");
    fs::rename(&dir, &ready).expect("rename");
    assert!(matches!(check(&dir, 0), Err(JournalError::Salvage { .. })));
    assert_eq!(replay(&dir, 0), without(&all, &[frame.seq]));
    assert!(!ready.exists());
}

#[test]
fn a_leftover_from_an_interrupted_salvage_is_replaced() {
    let root = Root::new("leftover");
    let dir = root.journal();
    build(&dir, 500);
    let seg = segments(&dir)[1].clone();
    flip(&seg, frames(&seg)[3].offset + 6);
    let before = contents(&dir);
    let tmp = root.0.join("journal.salvage-tmp");
    fs::create_dir(&tmp).expect("mkdir");
    fs::write(tmp.join("00000000000000000001.log"), b"half written").expect("write");
    let s = salvage(&dir, 0, SalvageMode::SkipDamaged).expect("salvage");
    assert_eq!(contents(s.original.as_deref().expect("aside")), before);
    assert!(!tmp.exists());
    assert_eq!(replay(&dir, 0).len(), 499);
}

#[test]
fn every_byte_flip_in_a_record_is_pinned_to_that_record() {
    let root = Root::new("every");
    let dir = root.journal();
    build(&dir, RECORDS);
    let (seg, frame) = middle(&dir);
    let pristine = fs::read(&seg).expect("read");
    for at in frame.offset..frame.offset + frame.len {
        let mut bad = pristine.clone();
        bad[at] ^= 0x01;
        fs::write(&seg, &bad).expect("write");
        let report = check(&dir, 0).expect("check");
        assert_eq!(report.damage.len(), 1, "flip at {at}: {:?}", report.damage);
        let d = &report.damage[0];
        assert_eq!(
            (d.offset, d.len, d.seqs),
            (
                frame.offset as u64,
                frame.len as u64,
                Some(range(frame.seq, frame.seq))
            ),
            "flip at {at}: {}",
            d.reason
        );
        assert_eq!(report.records, RECORDS - 1, "flip at {at}");
    }
}

#[test]
fn garbage_across_several_records_is_one_region() {
    let root = Root::new("garbage");
    let dir = root.journal();
    let all = build(&dir, RECORDS);
    let (seg, _) = middle(&dir);
    let f = frames(&seg);
    let k = f.len() / 2;
    let (from, to) = (f[k].offset + 7, f[k + 2].offset + 30);
    let mut b = fs::read(&seg).expect("read");
    for (i, byte) in b[from..to].iter_mut().enumerate() {
        *byte = (i as u8).wrapping_mul(37) ^ 0xab;
    }
    fs::write(&seg, &b).expect("write");
    let report = check(&dir, 0).expect("check");
    assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
    let d = &report.damage[0];
    assert_eq!(d.offset, f[k].offset as u64);
    assert_eq!(d.len, (f[k + 3].offset - f[k].offset) as u64);
    assert_eq!(d.seqs, Some(range(f[k].seq, f[k + 2].seq)));
    let s = salvage(&dir, 0, SalvageMode::SkipDamaged).expect("salvage");
    assert_eq!(s.gaps, [range(f[k].seq, f[k + 2].seq)]);
    assert_eq!(
        replay(&dir, 0),
        without(&all, &[f[k].seq, f[k + 1].seq, f[k + 2].seq])
    );
}

/// `check` calls clean exactly what opening accepts as it is; the one thing opening accepts
/// that `check` reports is a whole last record with a bad checksum, which opening moves to
/// the quarantine, after which `check` is clean.
fn agrees_with_open(dir: &Path, what: &str) {
    let report = check(dir, 0).unwrap_or_else(|e| panic!("{what}: check: {e}"));
    let opened = Journal::open(dir, 0, Options { segment_bytes: 300 }, |_| {});
    match (report.is_clean(), opened) {
        (true, Ok(_)) | (false, Err(_)) => {}
        (true, Err(e)) => panic!("{what}: check is clean but open refuses: {e}"),
        (false, Ok(j)) => {
            drop(j);
            assert_eq!(report.damage.len(), 1, "{what}: {:?}", report.damage);
            let after = check(dir, 0).expect("check after open");
            assert!(after.is_clean(), "{what}: open left {:?}", after.damage);
        }
    }
}

#[test]
fn check_and_open_agree_on_every_flip_and_cut() {
    let root = Root::new("agree");
    let dir = root.journal();
    let mut j = Journal::open(&dir, 0, Options { segment_bytes: 300 }, |_| {}).expect("open");
    for i in 0..8 {
        j.write(&[&[put(&format!("a{i}"))]]).expect("write");
    }
    drop(j);
    let segs = segments(&dir);
    assert!(segs.len() >= 3, "{segs:?}");
    let pristine: Vec<Vec<u8>> = segs.iter().map(|s| fs::read(s).expect("read")).collect();
    let restore = || {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        for (s, b) in segs.iter().zip(&pristine) {
            fs::write(s, b).expect("write");
        }
    };
    // Whatever the damage, a salvage in either mode leaves a journal that opens and checks
    // clean.
    let salvage_opens = |what: &str, damage: &dyn Fn()| {
        for mode in [SalvageMode::SkipDamaged, SalvageMode::PointInTime] {
            restore();
            damage();
            let s = salvage(&dir, 0, mode).unwrap_or_else(|e| panic!("{what}: {mode}: {e}"));
            if let Some(original) = &s.original {
                fs::remove_dir_all(original).expect("rm");
            }
            let mut got = 0;
            Journal::open(&dir, 0, Options { segment_bytes: 300 }, |_| got += 1)
                .unwrap_or_else(|e| panic!("{what}: {mode}: open after salvage: {e}"));
            if s.original.is_some() {
                assert_eq!(got, s.kept, "{what}: {mode}");
            }
            let again = check(&dir, 0).expect("check");
            assert!(again.is_clean(), "{what}: {mode}: {:?}", again.damage);
        }
    };
    for (n, seg) in segs.iter().enumerate() {
        for at in 0..pristine[n].len() {
            let what = format!("flip {} at {at}", seg.display());
            restore();
            flip(seg, at);
            agrees_with_open(&dir, &what);
            salvage_opens(&what, &|| flip(seg, at));
        }
        for cut in 0..pristine[n].len() {
            let what = format!("cut {} at {cut}", seg.display());
            let damage = || fs::write(seg, &pristine[n][..cut]).expect("write");
            restore();
            damage();
            agrees_with_open(&dir, &what);
            salvage_opens(&what, &damage);
        }
    }
    // An empty segment overlapping the one before.
    restore();
    fs::write(dir.join(format!("{:020}.log", 2)), b"DLJRNL01").expect("write");
    agrees_with_open(&dir, "overlapping segment");
    assert!(!check(&dir, 0).expect("check").is_clean());
}

/// A record header with a valid checksum, as a writer would have made it.
fn header(len: u32, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(20 + payload.len());
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    h.extend_from_slice(payload);
    h
}

#[test]
fn headers_that_hold_but_lie_are_damage_never_a_panic() {
    let root = Root::new("lies");
    let dir = root.journal();
    let mut j = Journal::open(&dir, 0, Options { segment_bytes: 300 }, |_| {}).expect("open");
    for i in 0..8 {
        j.write(&[&[put(&format!("l{i}"))]]).expect("write");
    }
    drop(j);
    let segs = segments(&dir);
    let pristine: Vec<Vec<u8>> = segs.iter().map(|s| fs::read(s).expect("read")).collect();
    let zero_changes = 0u32.to_le_bytes();
    let mut lies = Vec::new();
    for seq in [0, 1, 2, 5, 9, 1000, u64::MAX - 1, u64::MAX] {
        // Whole and decodable; whole but empty; longer than the file; longer than allowed.
        lies.push(header(4, seq, &zero_changes));
        lies.push(header(0, seq, &[]));
        lies.push(header(1000, seq, &[]));
        lies.push(header(u32::MAX, seq, &[]));
    }
    let restore = || {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir");
        for (s, b) in segs.iter().zip(&pristine) {
            fs::write(s, b).expect("write");
        }
    };
    for (n, seg) in segs.iter().enumerate() {
        restore();
        let frames = frames(seg);
        let middle = frames.get(frames.len() / 2).map_or(8, |f| f.offset);
        let at_points = [8, middle, pristine[n].len()];
        for lie in &lies {
            for at in at_points {
                let mut bytes = pristine[n].clone();
                bytes.splice(at..at, lie.iter().copied());
                let what = format!("{} at {at}: {lie:?}", seg.display());
                restore();
                fs::write(seg, &bytes).expect("write");
                agrees_with_open(&dir, &what);
                for mode in [SalvageMode::SkipDamaged, SalvageMode::PointInTime] {
                    restore();
                    fs::write(seg, &bytes).expect("write");
                    let s = salvage(&dir, 0, mode).unwrap_or_else(|e| panic!("{what}: {e}"));
                    if let Some(original) = &s.original {
                        fs::remove_dir_all(original).expect("rm");
                    }
                    Journal::open(&dir, 0, Options { segment_bytes: 300 }, |_| {})
                        .unwrap_or_else(|e| panic!("{what}: {mode}: open after salvage: {e}"));
                }
            }
        }
    }
}
