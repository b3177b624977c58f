//! `duanlian clicks export`: the click log as CSV or JSON lines.
use anyhow::{anyhow, Context, Result};
use duanlian_link::{format_rfc3339, now_secs, parse_duration, parse_rfc3339};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    Csv,
    Jsonl,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ExportArgs {
    /// The data directory whose clicks/ folder holds the log.
    #[arg(long, default_value = "duanlian-data")]
    data_dir: PathBuf,
    /// Cluster mode: read the click events of every node from the cluster's click stream on
    /// these NATS servers (comma-separated nats://HOST:PORT) instead of a data directory.
    #[arg(long, value_name = "URLS")]
    cluster: Option<String>,
    /// The cluster's links bucket (with --cluster). Default is links.
    #[arg(long, default_value = "links")]
    cluster_bucket: String,
    /// Oldest click to include: a date (2026-11-01), an RFC 3339 time, or a period back from now
    /// (7d, 12h). Default is the beginning.
    #[arg(long, value_parser = parse_time)]
    since: Option<i64>,
    /// Include clicks before this time only (same forms as --since). Default is now.
    #[arg(long, value_parser = parse_time)]
    until: Option<i64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    format: Format,
    /// Write here instead of standard output.
    #[arg(long)]
    output: Option<PathBuf>,
}

fn parse_time(s: &str) -> Result<i64, String> {
    // Dates (midnight UTC) are RFC 3339 to this parser too.
    if let Some(t) = parse_rfc3339(s) {
        return Ok(t);
    }
    match parse_duration(s) {
        Some(back) => Ok(now_secs() - back),
        None => Err(format!(
            "{s:?} is not a date (2026-11-01), an RFC 3339 time or a period such as 7d"
        )),
    }
}

/// A CSV field: quoted when it holds a comma, quote or line break (referrer hosts never do, but
/// the export must stay well-formed whatever the log holds). A cell a spreadsheet would read as
/// a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage return: a code such as
/// `-2+3`, a referrer host such as `-x.example`) gets a leading `'`, as OWASP's guidance on CSV
/// injection says, so it is shown as text.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let s: std::borrow::Cow<'_, str> = if formula {
        format!("'{s}").into()
    } else {
        s.into()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s
    }
}

pub(crate) fn export(args: &ExportArgs) -> Result<()> {
    let dir = args.data_dir.join("clicks");
    if args.cluster.is_none() && !args.data_dir.is_dir() {
        return Err(anyhow!(
            "{}: no such data directory",
            args.data_dir.display()
        ));
    }
    let out: Box<dyn Write> = match &args.output {
        Some(path) => {
            Box::new(std::fs::File::create(path).with_context(|| format!("{}", path.display()))?)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = std::io::BufWriter::new(out);
    let mut failed = None;
    if let Format::Csv = args.format {
        writeln!(out, "time,domain,code,device,referrer,client")?;
    }
    let since = args.since.unwrap_or(i64::MIN);
    let until = args.until.unwrap_or(i64::MAX);
    let mut exported = 0u64;
    let mut write = |c: duanlian_clicks::Click| {
        if failed.is_some() || c.at < since || c.at >= until {
            return;
        }
        exported += 1;
        let written = match args.format {
            Format::Csv => writeln!(
                out,
                "{},{},{},{},{},{}",
                format_rfc3339(c.at),
                csv_field(c.domain()),
                csv_field(c.code()),
                c.device.as_str(),
                csv_field(c.referrer().unwrap_or("")),
                c.client
            ),
            Format::Jsonl => writeln!(
                out,
                "{}",
                serde_json::json!({
                    "time": format_rfc3339(c.at),
                    "domain": c.domain(),
                    "code": c.code(),
                    "device": c.device.as_str(),
                    "referrer": c.referrer(),
                    "client": c.client.to_string(),
                })
            ),
        };
        if let Err(e) = written {
            failed = Some(e);
        }
    };
    let report = match &args.cluster {
        Some(servers) => {
            let mut opts = duanlian_cluster::ClusterOptions::new(servers);
            opts.bucket = args.cluster_bucket.clone();
            opts.name = format!("duanlian-export-{}", std::process::id());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("runtime")?;
            let read = rt
                .block_on(duanlian_cluster::read_click_events(&opts, &mut write))
                .with_context(|| format!("reading the click events of bucket {}", opts.bucket))?;
            duanlian_clicks::ReadReport {
                clicks: read,
                skipped: 0,
            }
        }
        None => duanlian_clicks::read_logs(&dir, since, until, &mut write)
            .with_context(|| format!("reading {}", dir.display()))?,
    };
    if let Some(e) = failed {
        return Err(e).context("writing the export");
    }
    out.flush().context("writing the export")?;
    eprintln!(
        "{exported} clicks exported{}",
        match report.skipped {
            0 => String::new(),
            n => format!("; {n} damaged lines skipped"),
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn formulas_are_neutralised_and_quoting_kept() {
        assert_eq!(csv_field("abc"), "abc");
        assert_eq!(csv_field("-2+3"), "'-2+3");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("+1"), "'+1");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tx"), "'\tx");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("x-y"), "x-y");
    }
}
