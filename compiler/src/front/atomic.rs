//! Writing output files so that an error never leaves a partial file:
//! each file is a [`q35_format::output::Output`] (a temporary file created
//! exclusively in the destination's directory, renamed into place only on
//! success; removed on error, drop or a signal). A [`PendingFile`] that is
//! dropped without [`PendingFile::commit`] leaves its destination as it
//! was, so a group of files can be prepared and then committed together.

use super::error::{Error, Result};
use q35_format::output::{Output, OutputError};
use std::{io::Write, path::Path};

/// A fully written temporary file waiting to be renamed to its destination.
#[derive(Debug)]
pub(crate) struct PendingFile {
    output: Output,
    dest: std::path::PathBuf,
}

impl PendingFile {
    /// Writes `dest`'s content to a temporary file beside it with `write`.
    pub(crate) fn write(
        dest: &Path,
        write: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<Self> {
        let mut output = Output::create(dest, &[]).map_err(|e| output_error(dest, e))?;
        write(&mut output)?;
        Ok(Self {
            output,
            dest: dest.to_path_buf(),
        })
    }

    /// Renames the temporary file to its destination.
    pub(crate) fn commit(self) -> Result<()> {
        let dest = self.dest;
        self.output.commit().map_err(|e| output_error(&dest, e))
    }
}

fn output_error(dest: &Path, error: OutputError) -> Error {
    match error {
        OutputError::Io { error, .. } => Error::io(dest, error),
        other => Error::malformed(dest, other.to_string()),
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
