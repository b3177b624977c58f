//! `duanlian`: build, check and serve short-link snapshots.
#![forbid(unsafe_code)]

mod args;
mod autocompact;
mod clicks;
mod cluster;
mod config;
mod import;
mod journal_cmd;
mod node;
mod snapshot_cmd;
mod test_hooks;

use anyhow::{anyhow, Result};
pub(crate) use args::{parse_period, ServeArgs};
use args::{Cli, ClicksCmd, Command, ConfigCmd, LogFormat, SnapshotCmd};
use duanlian_link::Domain;
pub(crate) use node::recorder_options;
use std::path::Path;

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
        }) => snapshot_cmd::build(&input, &output, default_domain.as_deref(), format),
        Command::Snapshot(SnapshotCmd::Inspect { file }) => snapshot_cmd::inspect(&file),
        Command::Snapshot(SnapshotCmd::Publish(args)) => cluster::publish(&args),
        Command::Snapshot(SnapshotCmd::Verify { file }) => snapshot_cmd::verify(&file),
        Command::Serve(mut args) => {
            if let (Some(path), Some(m)) =
                (args.config.clone(), matches.subcommand_matches("serve"))
            {
                config::apply(config::read(&path)?, &mut args, m)
                    .map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
            }
            node::serve(*args)
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
    use clap::{CommandFactory, FromArgMatches};
    let m = Cli::command().try_get_matches_from(["duanlian", "serve"])?;
    let Command::Serve(mut args) = Cli::from_arg_matches(&m)?.command else {
        return Err(anyhow!("internal: serve arguments"));
    };
    let serve = m
        .subcommand_matches("serve")
        .ok_or_else(|| anyhow!("internal: serve matches"))?;
    config::apply(config::read(file)?, &mut args, serve)
        .map_err(|e| anyhow!("{}: {e:#}", file.display()))?;
    // The checks `serve` makes before it starts anything.
    node::domain_policies(&args).map_err(|e| anyhow!("{}: {e:#}", file.display()))?;
    for d in &args.domains {
        Domain::parse(d).map_err(|e| anyhow!("{}: domains: {d}: {e}", file.display()))?;
    }
    print!("{}", config::describe(&args));
    println!("# {}: ok", file.display());
    Ok(())
}
