//! The offline commands on files: `snapshot build|inspect|verify` and `compact`.
use crate::import::{self, Encoding, Format};
use anyhow::{anyhow, Context, Result};
use duanlian_link::{format_rfc3339, Domain};
use duanlian_snapshot::{Snapshot, SnapshotError};
use duanlian_store::DataDir;
use std::path::Path;
use std::time::Instant;

pub(crate) fn build(
    input: &Path,
    output: &Path,
    default_domain: Option<&str>,
    format: Option<Format>,
    encoding: Encoding,
) -> Result<()> {
    let started = Instant::now();
    let format = format.or_else(|| Format::from_path(input)).ok_or_else(|| {
        anyhow!(
            "{}: cannot tell the format from the extension; pass --format csv or --format jsonl",
            input.display()
        )
    })?;
    let default_domain = default_domain
        .map(|d| Domain::parse(d).map_err(|e| anyhow!("--default-domain: {e}")))
        .transpose()?;
    let imported = import::import(input, format, encoding, default_domain)?;
    let size = imported.table.write(output, 0)?;
    eprintln!(
        "wrote {} ({}, {} bytes) in {:.2}s",
        output.display(),
        crate::count(imported.rows as u64, "link", "links"),
        size,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Opens a snapshot, naming the file in every error.
fn open(path: &Path) -> Result<Snapshot> {
    Snapshot::open(path).map_err(|e| named(path, e))
}

/// A snapshot error that names its file (I/O errors already do).
pub(crate) fn named(path: &Path, e: SnapshotError) -> anyhow::Error {
    match e {
        SnapshotError::Io { .. } | SnapshotError::NotAFile { .. } => anyhow!(e),
        other => anyhow!("{}: {other}", path.display()),
    }
}

pub(crate) fn inspect(path: &Path) -> Result<()> {
    let snap = open(path)?;
    let h = snap.header();
    println!(
        "file            {} ({} bytes)",
        path.display(),
        snap.file_len()
    );
    println!(
        "format version  {} (rkyv format {:#x})",
        h.format_version, h.rkyv_format
    );
    println!("links           {}", h.link_count);
    println!("sequence        {}", h.sequence);
    if h.feed_id != 0 {
        println!("feed            {:016x} (a cluster bucket)", h.feed_id);
    }
    println!(
        "built at        {} ({})",
        format_rfc3339(h.built_at),
        h.built_at
    );
    println!("payload crc32c  {:#010x}", h.payload_crc32c);
    println!("domains");
    for (domain, count) in snap.domain_counts() {
        println!("  {domain:<40} {count}");
    }
    Ok(())
}

pub(crate) fn verify(path: &Path) -> Result<()> {
    let started = Instant::now();
    let snap = open(path)?;
    let report = snap
        .verify()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    println!(
        "{}: ok: {} on {} ({} with an expiry), verified in {:.2}s",
        path.display(),
        crate::count(snap.len() as u64, "link", "links"),
        crate::count(report.domains.len() as u64, "domain", "domains"),
        report.with_expiry,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(crate) fn compact(data_dir: &Path, retention: i64) -> Result<()> {
    let dir = DataDir::open(data_dir)
        .with_context(|| format!("data directory {}", data_dir.display()))?;
    let report = duanlian_store::compact_offline(&dir, retention)?;
    println!(
        "{}: snapshot at sequence {} with {}; {} removed; {:.2}s",
        data_dir.display(),
        report.sequence,
        crate::count(report.links as u64, "link", "links"),
        crate::count(
            report.segments_removed as u64,
            "journal segment",
            "journal segments"
        ),
        report.elapsed.as_secs_f64()
    );
    Ok(())
}
