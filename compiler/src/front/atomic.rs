//! Writing output files so that an error never leaves a partial file: each
//! file is written to a temporary file in the destination's directory
//! (same file system, so the final rename is atomic) and renamed into
//! place only on success. A [`PendingFile`] that is dropped without
//! [`PendingFile::commit`] removes its temporary file, so a group of files
//! can be prepared and then committed together.

use super::error::{Error, Result};
use std::{
    fs::{File, OpenOptions},
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// A fully written temporary file waiting to be renamed to its destination.
#[derive(Debug)]
pub(crate) struct PendingFile {
    temp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl PendingFile {
    /// Writes `dest`'s content to a temporary file beside it with `write`.
    pub(crate) fn write(
        dest: &Path,
        write: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = dest
            .file_name()
            .ok_or_else(|| Error::malformed(dest, "is not a file path"))?
            .to_string_lossy();
        let temp = dir.join(format!(
            ".{name}.{}.{}.tmp",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io(dest, e))?;
        // From here on, dropping `pending` removes the temporary file.
        let pending = PendingFile {
            temp,
            dest: dest.to_path_buf(),
            committed: false,
        };
        let mut out = BufWriter::new(file);
        write(&mut out)?;
        let file: File = out
            .into_inner()
            .map_err(|e| Error::io(dest, e.into_error()))?;
        file.sync_all().map_err(|e| Error::io(dest, e))?;
        Ok(pending)
    }

    /// Renames the temporary file to its destination.
    pub(crate) fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.temp, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the error that got us here matters more.
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes one file atomically.
pub(crate) fn write_file(
    dest: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    PendingFile::write(dest, write)?.commit()
}

/// An I/O error while writing `dest`.
pub(crate) fn write_error(dest: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(dest, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_renames_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.json");
        write_file(&dest, |w| w.write_all(b"{}").map_err(write_error(&dest))).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"{}");

        let other = dir.path().join("b.json");
        let pending =
            PendingFile::write(&other, |w| w.write_all(b"x").map_err(write_error(&other))).unwrap();
        drop(pending);
        let failed = PendingFile::write(&other, |_| Err(Error::malformed(&other, "boom")));
        assert!(failed.is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }
}
