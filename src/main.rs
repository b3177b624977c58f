//! `duanlian`: build, check and serve short-link snapshots.
#![forbid(unsafe_code)]

mod acme;
mod args;
mod autocompact;
mod clicks;
mod cluster;
mod config;
mod import;
mod journal_cmd;
mod node;
mod settings;
mod snapshot_cmd;
mod test_hooks;

use anyhow::{anyhow, Result};
use args::{Cli, ClicksCmd, Command, ConfigCmd, LogFormat, SnapshotCmd};
use settings::Settings;
use std::path::Path;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_logging(cli.log_format);
    if let Err(e) = run(cli, &matches) {
        eprintln!("duanlian: error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(format: LogFormat) {
    let level = std::env::var("DUANLIAN_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Auto if !terminal => builder.json().init(),
        LogFormat::Text | LogFormat::Auto => builder.with_ansi(terminal).init(),
    }
}

fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<()> {
    match cli.command {
        Command::Snapshot(SnapshotCmd::Build {
            input,
            output,
            default_domain,
            format,
            encoding,
        }) => snapshot_cmd::build(&input, &output, default_domain.as_deref(), format, encoding),
        Command::Snapshot(SnapshotCmd::Inspect { file }) => snapshot_cmd::inspect(&file),
        Command::Snapshot(SnapshotCmd::Publish(args)) => cluster::publish(&args),
        Command::Snapshot(SnapshotCmd::Verify { file }) => snapshot_cmd::verify(&file),
        Command::Serve(args) => {
            let settings = match (&args.config, matches.subcommand_matches("serve")) {
                (Some(file), Some(given)) => config::layered(file, given)?.check(file)?,
                _ => Settings::check(*args)?,
            };
            node::serve(settings)
        }
        Command::Config(ConfigCmd::Check { file }) => config_check(&file),
        Command::Clicks(ClicksCmd::Export(args)) => clicks::export(&args),
        Command::Journal(cmd) => journal_cmd::run(&cmd),
        Command::Compact {
            data_dir,
            expired_retention,
        } => snapshot_cmd::compact(&data_dir, expired_retention),
    }
}

fn config_check(file: &Path) -> Result<()> {
    use clap::CommandFactory;
    // As `serve` with no flags: the environment applies on top of the file.
    let m = Cli::command().try_get_matches_from(["duanlian", "serve"])?;
    let given = m
        .subcommand_matches("serve")
        .ok_or_else(|| anyhow!("internal: serve matches"))?;
    let layered = config::layered(file, given)?;
    let described = config::describe(&layered.matches);
    // The checks `serve` makes before it opens anything.
    layered.check(file)?;
    print!("{described}");
    println!("# {}: ok", file.display());
    Ok(())
}

/// `n` with its noun, singular for one: "1 link", "2 links".
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
