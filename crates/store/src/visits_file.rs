//! `visits.bin`: the visit counters, saved every few seconds and at shutdown.
//!
//! ```text
//! magic "DLVISIT1", then per link: key_len:u16 key:"domain/code" count:u64, then crc32c:u32
//! ```
//! Written to a temporary file, fsynced and renamed, so a crash leaves the previous save.
use crate::error::io_err;
use crate::StoreError;
use std::fs;
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 8] = b"DLVISIT1";

/// `(domain/code, count)` pairs.
pub(crate) type Counts = Vec<(Box<[u8]>, u64)>;

pub(crate) fn save(path: &Path, counts: &Counts) -> Result<(), StoreError> {
    let mut buf = Vec::with_capacity(8 + counts.len() * 32);
    buf.extend_from_slice(MAGIC);
    for (key, count) in counts {
        buf.extend_from_slice(&(key.len() as u16).to_le_bytes());
        buf.extend_from_slice(key);
        buf.extend_from_slice(&count.to_le_bytes());
    }
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let tmp = path.with_extension("bin.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(io_err(path))
}

/// The saved counts; none if there is no file yet. A damaged file is an error rather than a
/// silent reset of every count.
pub(crate) fn load(path: &Path) -> Result<Counts, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(path)(e)),
    };
    let damaged = |why: &str| StoreError::Io {
        path: path.to_path_buf(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned()),
    };
    if bytes.len() < MAGIC.len() + 4 || &bytes[..8] != MAGIC {
        return Err(damaged("not a visits file"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err(damaged("checksum mismatch"));
    }
    let mut out = Vec::new();
    let mut i = MAGIC.len();
    while i < body.len() {
        let len = body
            .get(i..i + 2)
            .map(|l| usize::from(u16::from_le_bytes([l[0], l[1]])))
            .ok_or_else(|| damaged("cut short"))?;
        let key = body
            .get(i + 2..i + 2 + len)
            .ok_or_else(|| damaged("cut short"))?;
        let count = body
            .get(i + 2 + len..i + 10 + len)
            .ok_or_else(|| damaged("cut short"))?;
        let mut w = [0u8; 8];
        w.copy_from_slice(count);
        out.push((key.into(), u64::from_le_bytes(w)));
        i += 10 + len;
    }
    Ok(out)
}
