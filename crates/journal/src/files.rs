//! Publishing files and directories: temp file, fsync, rename, fsync the directory, the same
//! discipline as `duanlian_snapshot::write_atomic`, so a crash leaves the old file or the whole
//! new one and never a mix.
use crate::error::{io_err, JournalError};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The new journal of a salvage, complete and synced, waiting to be moved into place:
/// `<journal dir>.salvaged`.
pub(crate) const SALVAGED_SUFFIX: &str = ".salvaged";

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// The directory holding `path` (`.` for a bare name, which `Path::parent` gives as "").
pub(crate) fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `dir` with `suffix` appended to its last component: `data/journal` → `data/journal-quarantine`.
/// Siblings rather than fixed names so two journals in one directory (tests, tools) never share.
pub(crate) fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir
        .file_name()
        .map_or_else(|| "journal".into(), |n| n.to_os_string());
    name.push(suffix);
    parent(dir).join(name)
}

/// The first of `path`, `path-2`, `path-3`... that does not exist yet.
pub(crate) fn unused(path: &Path) -> PathBuf {
    let mut candidate = path.to_path_buf();
    let mut n = 1;
    while fs::symlink_metadata(&candidate).is_ok() {
        n += 1;
        let mut name = path.as_os_str().to_os_string();
        name.push(format!("-{n}"));
        candidate = PathBuf::from(name);
    }
    candidate
}

/// Publishes `bytes` at `path`: readers see either the old file or the whole new one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), JournalError> {
    let dir = parent(path);
    let mut tmp_name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_os_string());
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(bytes).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err(path))?;
        fsync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` (and its parents) if it is missing, making the new entry durable.
pub(crate) fn create_dir_durably(dir: &Path) -> Result<(), JournalError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    fsync_dir(&parent(dir))
}
