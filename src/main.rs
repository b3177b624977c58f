//! `duanlian`: build, check and serve short-link snapshots.
#![forbid(unsafe_code)]

mod import;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand};
use duanlian_index::Index;
use duanlian_link::{format_rfc3339, Domain};
use duanlian_server::{Options, RuntimeShape};
use duanlian_snapshot::{Snapshot, SnapshotError};
use import::Format;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The links `duanlian serve` answers when given no snapshot, so a first run shows a redirect.
const SAMPLE_CSV: &str = include_str!("../data/sample-links.csv");

#[derive(Parser, Debug)]
#[command(
    name = "duanlian",
    version,
    about = "短链 duanlian: a fast short-link redirect service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build, inspect and verify snapshot files.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Serve redirects.
    Serve(ServeArgs),
}

#[derive(Subcommand, Debug)]
enum SnapshotCmd {
    /// Build a snapshot from CSV (header row: url, code, and optionally domain, redirect,
    /// expires_at, valid_since, created_at) or JSON Lines with the same field names.
    Build {
        /// Input file; the format follows its extension (.csv, .jsonl, .ndjson) unless --format.
        #[arg(long)]
        input: PathBuf,
        /// Snapshot file to write (atomically: temp file, fsync, rename).
        #[arg(long)]
        output: PathBuf,
        /// Domain for rows without one.
        #[arg(long)]
        default_domain: Option<String>,
        /// Input format. Default is taken from the input's extension.
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Print a snapshot's header, link count and domains.
    Inspect {
        /// Snapshot file.
        file: PathBuf,
    },
    /// Check a snapshot thoroughly: checksum, archive, and every link.
    Verify {
        /// Snapshot file.
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Snapshot to serve. Default is the built-in sample links (data/sample-links.csv).
    #[arg(long)]
    snapshot: Option<PathBuf>,
    /// Address of the redirect listener; port 0 picks a free port. Default is 127.0.0.1:8080.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Worker threads. Default is the number of CPUs.
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds a client may take to send a request head (also the idle keep-alive limit).
    /// Default is 30.
    #[arg(long, default_value_t = 30)]
    header_read_timeout: u64,
    /// Runtime layout: one current-thread runtime per thread with SO_REUSEPORT (per-core), or
    /// one work-stealing runtime (multi-thread). Default is per-core.
    #[arg(long, value_enum, default_value_t = Shape::PerCore)]
    runtime: Shape,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Shape {
    PerCore,
    MultiThread,
}

fn main() {
    let cli = Cli::parse();
    init_logging();
    if let Err(e) = run(cli) {
        eprintln!("duanlian: error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging() {
    let level = std::env::var("DUANLIAN_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Snapshot(SnapshotCmd::Build {
            input,
            output,
            default_domain,
            format,
        }) => build(&input, &output, default_domain.as_deref(), format),
        Command::Snapshot(SnapshotCmd::Inspect { file }) => inspect(&file),
        Command::Snapshot(SnapshotCmd::Verify { file }) => verify(&file),
        Command::Serve(args) => serve(args),
    }
}

fn build(
    input: &Path,
    output: &Path,
    default_domain: Option<&str>,
    format: Option<Format>,
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
    let imported = import::import(input, format, default_domain)?;
    let bytes = imported
        .table
        .to_bytes(0)
        .map_err(|e| anyhow!("{}: {e}", output.display()))?;
    duanlian_snapshot::write_atomic(output, &bytes)?;
    eprintln!(
        "wrote {} ({} links, {} bytes) in {:.2}s",
        output.display(),
        imported.rows,
        bytes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Opens a snapshot, naming the file in every error.
fn open(path: &Path) -> Result<Snapshot> {
    Snapshot::open(path).map_err(|e| match e {
        SnapshotError::Io { .. } => anyhow!(e),
        other => anyhow!("{}: {other}", path.display()),
    })
}

fn inspect(path: &Path) -> Result<()> {
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

fn verify(path: &Path) -> Result<()> {
    let started = Instant::now();
    let snap = open(path)?;
    let report = snap
        .verify()
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    println!(
        "{}: ok: {} links on {} domains ({} with an expiry), verified in {:.2}s",
        path.display(),
        snap.len(),
        report.domains.len(),
        report.with_expiry,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn serve(args: ServeArgs) -> Result<()> {
    let started = Instant::now();
    let snapshot = match &args.snapshot {
        Some(path) => open(path)?,
        None => sample_snapshot().context("building the built-in sample links")?,
    };
    tracing::info!(
        snapshot = %args.snapshot.as_deref().map_or("built-in sample".into(), |p| p.display().to_string()),
        links = snapshot.len(),
        sequence = snapshot.header().sequence,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "snapshot loaded"
    );
    let index = Arc::new(Index::new(Arc::new(snapshot)));
    let defaults = Options::default();
    let opts = Options {
        listen: args.listen,
        threads: args.threads.unwrap_or(defaults.threads),
        header_read_timeout: Duration::from_secs(args.header_read_timeout),
        shape: match args.runtime {
            Shape::PerCore => RuntimeShape::PerCore,
            Shape::MultiThread => RuntimeShape::MultiThread,
        },
    };
    duanlian_server::run(index, &opts).with_context(|| format!("serving on {}", args.listen))
}

fn sample_snapshot() -> Result<Snapshot> {
    let dir = std::env::temp_dir().join(format!("duanlian-sample-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let csv = dir.join("sample-links.csv");
    std::fs::write(&csv, SAMPLE_CSV)?;
    let imported = import::import(&csv, Format::Csv, None);
    let _ = std::fs::remove_dir_all(&dir);
    let bytes = imported?.table.to_bytes(0).map_err(|e| anyhow!("{e}"))?;
    Snapshot::from_bytes(bytes).map_err(|e| anyhow!("{e}"))
}
