//! `snapshot build`'s side of bulk input: the file, the `--format` flag and a progress bar. The
//! rows are read by `duanlian_input::bulk`, with the admin API's field reader.
use anyhow::{Context, Result};
use duanlian_input::bulk::{self, Imported, Source};
use duanlian_link::Domain;
use std::io::{IsTerminal, Read};
use std::path::Path;

/// Input formats of `snapshot build`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

impl Format {
    pub(crate) fn from_path(path: &Path) -> Option<Format> {
        bulk::Format::from_path(path).map(|f| match f {
            bulk::Format::Csv => Format::Csv,
            bulk::Format::Jsonl => Format::Jsonl,
        })
    }

    fn bulk(self) -> bulk::Format {
        match self {
            Format::Csv => bulk::Format::Csv,
            Format::Jsonl => bulk::Format::Jsonl,
        }
    }
}

/// Text encodings of `snapshot build`'s input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Encoding {
    /// UTF-8, or GBK if the first non-ASCII characters are not UTF-8.
    Auto,
    /// UTF-8.
    #[value(name = "utf-8", alias = "utf8")]
    Utf8,
    /// GBK (read as GB 18030).
    #[value(alias = "gb18030")]
    Gbk,
}

impl Encoding {
    fn bulk(self) -> bulk::Encoding {
        match self {
            Encoding::Auto => bulk::Encoding::Auto,
            Encoding::Utf8 => bulk::Encoding::Utf8,
            Encoding::Gbk => bulk::Encoding::Gbk,
        }
    }
}

/// Reads `path` and lays out the table.
pub(crate) fn import(
    path: &Path,
    format: Format,
    encoding: Encoding,
    default_domain: Option<Domain>,
) -> Result<Imported> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    import_from(
        &path.display().to_string(),
        file,
        size,
        format,
        encoding,
        default_domain,
    )
}

/// Reads links from `input` (of about `size` bytes), naming it `name` in every error.
pub(crate) fn import_from(
    name: &str,
    input: impl Read,
    size: u64,
    format: Format,
    encoding: Encoding,
    default_domain: Option<Domain>,
) -> Result<Imported> {
    let progress = Progress::new(size);
    let src = Source {
        name,
        size,
        format: format.bulk(),
        default_domain: default_domain.as_ref(),
        encoding: encoding.bulk(),
    };
    let imported = bulk::read(src, input, |rows, pos| progress.tick(rows, pos));
    progress.finish();
    Ok(imported?)
}

/// A progress bar on stderr, only when a person is watching.
struct Progress(Option<indicatif::ProgressBar>);

impl Progress {
    fn new(bytes: u64) -> Progress {
        if !std::io::stderr().is_terminal() || bytes < 8 << 20 {
            return Progress(None);
        }
        let bar = indicatif::ProgressBar::new(bytes);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} reading {bytes}/{total_bytes} [{bar:30}] {msg} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress(Some(bar))
    }

    fn tick(&self, rows: usize, pos: u64) {
        if let Some(bar) = &self.0 {
            bar.set_position(pos);
            bar.set_message(format!("{rows} links"));
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
