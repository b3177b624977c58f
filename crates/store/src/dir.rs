//! The data directory: `LOCK`, `snapshot.snap`, `journal/`.
use crate::error::io_err;
use crate::StoreError;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

/// An open data directory, locked against a second process for as long as this lives.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Creates the directory if needed and takes its lock.
    pub fn open(path: &Path) -> Result<DataDir, StoreError> {
        fs::create_dir_all(path).map_err(io_err(path))?;
        let lock_path = path.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(path.to_path_buf()))
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the current snapshot lives.
    pub fn snapshot_path(&self) -> PathBuf {
        self.path.join("snapshot.snap")
    }

    /// Where the journal segments live.
    pub fn journal_dir(&self) -> PathBuf {
        self.path.join("journal")
    }

    /// Where visit counts are saved.
    pub fn visits_path(&self) -> PathBuf {
        self.path.join("visits.bin")
    }

    /// Whether a snapshot has been written here yet.
    pub fn has_snapshot(&self) -> bool {
        self.snapshot_path().exists()
    }

    /// Makes `source` this directory's first snapshot: validated, then copied in with the same
    /// temp-file, fsync, rename discipline as any other snapshot write.
    pub fn seed_from_file(&self, source: &Path) -> Result<(), StoreError> {
        duanlian_snapshot::Snapshot::open(source)?;
        let target = self.snapshot_path();
        let tmp = self
            .path
            .join(format!("snapshot.snap.seed.{}", std::process::id()));
        let result = (|| {
            fs::copy(source, &tmp).map_err(io_err(&tmp))?;
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&tmp))?;
            fs::rename(&tmp, &target).map_err(io_err(&target))?;
            File::open(&self.path)
                .and_then(|d| d.sync_all())
                .map_err(io_err(&self.path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Makes a snapshot image this directory's first snapshot.
    pub fn seed_from_bytes(&self, bytes: &[u8]) -> Result<(), StoreError> {
        Ok(duanlian_snapshot::write_atomic(
            &self.snapshot_path(),
            bytes,
        )?)
    }
}
