//! `duanlian journal check|salvage`: find damage in a data directory's journal, and get past it
//! without losing the intact records behind it.
use anyhow::{bail, Context, Result};
use duanlian_journal::{quarantine_dir, JournalError, SalvageMode, SeqRange};
use duanlian_store::{DataDir, StoreError};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub(crate) enum JournalCommand {
    /// Read every journal segment and report every damaged record: file, offset, length, the
    /// sequence numbers it held, and why. Changes nothing; exits non-zero when there is damage.
    /// The server must be stopped.
    Check(CheckArgs),
    /// Rebuild a damaged journal from its intact records. The original directory is kept
    /// (journal.damaged-<unix time>), the damaged bytes are copied to journal-quarantine/, and
    /// the new journal is swapped in. The server must be stopped.
    Salvage(SalvageArgs),
}

#[derive(clap::Args, Debug)]
pub(crate) struct CheckArgs {
    /// The data directory.
    #[arg(long, default_value = "duanlian-data")]
    data_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Mode {
    /// Keep the records up to the first lost one and drop everything after it, as if the node
    /// had stopped there (for when later writes depend on earlier ones).
    PointInTime,
    /// Keep every intact record and skip only the damaged ones (loses the least).
    SkipDamaged,
}

#[derive(clap::Args, Debug)]
pub(crate) struct SalvageArgs {
    /// The data directory.
    #[arg(long, default_value = "duanlian-data")]
    data_dir: PathBuf,
    /// What to keep after the damage. No default: the choice is the operator's.
    #[arg(long, value_enum)]
    mode: Mode,
}

pub(crate) fn run(cmd: &JournalCommand) -> Result<()> {
    match cmd {
        JournalCommand::Check(args) => check(&args.data_dir),
        JournalCommand::Salvage(args) => salvage(
            &args.data_dir,
            match args.mode {
                Mode::PointInTime => SalvageMode::PointInTime,
                Mode::SkipDamaged => SalvageMode::SkipDamaged,
            },
        ),
    }
}

/// Locks the data directory (so no server can start meanwhile, and none is running) and reads
/// the sequence number its snapshot includes.
fn open(data_dir: &Path) -> Result<(DataDir, u64)> {
    // `DataDir::open` would create a missing directory: a typo must not look like a clean one.
    if !data_dir.is_dir() {
        bail!("{}: no such data directory", data_dir.display());
    }
    let dir = match DataDir::open(data_dir) {
        Ok(dir) => dir,
        Err(StoreError::Locked(_)) => bail!(
            "{} is in use by a running duanlian server: stop it first (the journal must not change underneath)",
            data_dir.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("data directory {}", data_dir.display()))
        }
    };
    let after = if dir.has_snapshot() {
        duanlian_snapshot::Snapshot::open(dir.snapshot_path())
            .with_context(|| format!("snapshot {}", dir.snapshot_path().display()))?
            .header()
            .sequence
    } else {
        0
    };
    Ok((dir, after))
}

fn ranges(r: &[SeqRange]) -> String {
    if r.is_empty() {
        return "none".into();
    }
    r.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sequence numbers in `r`, and whether the count is exact (a range running to the end of
/// the journal has no known end).
fn count(r: &[SeqRange]) -> (u64, bool) {
    r.iter().fold((0, true), |(n, exact), s| match s.count() {
        Some(c) => (n + c, exact),
        None => (n + 1, false),
    })
}

/// `1 record`, `2 records`.
fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// How many records `r` holds: `3 records`, `at least 1 record`.
fn counted(r: &[SeqRange]) -> String {
    match count(r) {
        (n, true) => plural(n, "record"),
        (n, false) => format!("at least {}", plural(n, "record")),
    }
}

/// `3 records, seq 5..=7` or `none`.
fn summary(r: &[SeqRange]) -> String {
    if r.is_empty() {
        return "none".into();
    }
    format!("{}, seq {}", counted(r), ranges(r))
}

fn check(data_dir: &Path) -> Result<()> {
    let (dir, after) = open(data_dir)?;
    let journal = dir.journal_dir();
    let report = match duanlian_journal::check(&journal, after) {
        Ok(r) => r,
        Err(JournalError::Io { error, .. })
            if error.kind() == std::io::ErrorKind::NotFound && !journal.exists() =>
        {
            println!(
                "{}: no journal yet (nothing written since the snapshot)",
                journal.display()
            );
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    for d in &report.damage {
        println!("{d}");
    }
    if let Some(t) = &report.torn_tail {
        println!(
            "{}: offset {} ({} bytes): torn write at the end: {} (never acknowledged; cut off at the next start)",
            t.path.display(),
            t.offset,
            t.len,
            t.reason
        );
    }
    if !report.accepted_gaps.is_empty() {
        println!(
            "skipped by an earlier salvage (accepted): seq {}",
            ranges(&report.accepted_gaps)
        );
    }
    let span = match (report.first_seq, report.last_seq) {
        (Some(a), Some(b)) => format!(" (seq {a}..={b})"),
        _ => String::new(),
    };
    println!(
        "{}: {}, {} intact{span}, {}; the snapshot includes seq {after}",
        journal.display(),
        plural(report.segments as u64, "segment"),
        plural(report.records, "record"),
        plural(report.damage.len() as u64, "damaged region"),
    );
    if report.is_clean() {
        return Ok(());
    }
    let lost = report.lost();
    if lost.is_empty() {
        println!("no writes are lost (the snapshot has every damaged record), but the server will not start until the journal is salvaged");
    } else {
        println!("lost writes past the snapshot: {}", summary(&lost));
    }
    bail!(
        "{} in {}; `duanlian journal salvage --data-dir {} --mode skip-damaged` (or point-in-time) rebuilds it from the intact records",
        plural(report.damage.len() as u64, "damaged region"),
        journal.display(),
        data_dir.display()
    )
}

fn salvage(data_dir: &Path, mode: SalvageMode) -> Result<()> {
    let (dir, after) = open(data_dir)?;
    let journal = dir.journal_dir();
    let report = duanlian_journal::salvage(&journal, after, mode)
        .with_context(|| format!("salvaging {}", journal.display()))?;
    let Some(original) = &report.original else {
        println!(
            "{}: no damage found; nothing to salvage (run `duanlian journal check` for details)",
            journal.display()
        );
        return Ok(());
    };
    for d in &report.check.damage {
        println!("damaged: {d}");
    }
    let span = match (report.first_kept, report.last_kept) {
        (Some(a), Some(b)) => format!(" (seq {a}..={b})"),
        _ => String::new(),
    };
    println!(
        "kept {}{span} past the snapshot (seq {after}), mode {mode}",
        plural(report.kept, "record")
    );
    println!("lost to damage: {}", summary(&report.lost));
    if mode == SalvageMode::PointInTime {
        println!(
            "dropped, intact but after the first loss (still in the original): {}",
            summary(&report.dropped)
        );
    }
    if !report.gaps.is_empty() {
        println!(
            "skipped sequence numbers the journal now accepts once: {}",
            ranges(&report.gaps)
        );
    }
    println!("the next write gets seq {}", report.next_seq);
    println!("original journal, unchanged: {}", original.display());
    println!(
        "damaged bytes: {} ({}, listed in index.jsonl)",
        quarantine_dir(&journal).display(),
        plural(report.quarantined.len() as u64, "file")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{count, counted, ranges};
    use duanlian_journal::SeqRange;

    #[test]
    fn ranges_and_counts_read_naturally() {
        let r = [
            SeqRange {
                first: 5,
                last: Some(9),
            },
            SeqRange {
                first: 20,
                last: None,
            },
        ];
        assert_eq!(ranges(&r), "5..=9, 20..");
        assert_eq!(count(&r), (6, false));
        assert_eq!(count(&r[..1]), (5, true));
        assert_eq!(ranges(&[]), "none");
        assert_eq!(counted(&r), "at least 6 records");
        assert_eq!(counted(&r[1..]), "at least 1 record");
    }
}
