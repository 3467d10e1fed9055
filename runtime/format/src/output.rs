//! Writing an output file without ever losing or clobbering anything else.
//!
//! Every `-o` of `q35c`, `q35-opt` and `q35-rt` goes through [`Output`]:
//!
//! - `-` is standard output;
//! - a path that names something other than a regular file (a character
//!   device such as `/dev/null` or `/dev/full`, a FIFO, `/dev/stdout` on a
//!   pipe) is written in place, and never renamed over;
//! - a regular file (new or existing) is written to a temporary file in
//!   its directory, created exclusively under an unpredictable name (so no
//!   planted symlink is followed), then renamed over the destination only
//!   when every byte is on disk; a symlink to a regular file has its target
//!   replaced, the link itself is kept;
//! - a destination that is one of the command's input files is refused
//!   before anything is written;
//! - SIGINT, SIGTERM and SIGHUP while a temporary file exists remove it
//!   before the process dies, and an error or a drop removes it too.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{Mutex, Once},
};

/// Why an output could not be written; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("refusing to write {output}: it is the input {input}; choose another output path")]
    IsInput { output: String, input: String },
    #[error("cannot write {path}: it is a directory")]
    IsDirectory { path: String },
    #[error("cannot write {path}: the path names no file")]
    NoFileName { path: String },
    #[error("failed to write {path}: {error}")]
    Io { path: String, error: io::Error },
}

impl OutputError {
    fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            error: source,
        }
    }
}

/// Where the bytes go.
enum Sink {
    Stdout(io::Stdout),
    /// A device, FIFO or socket, written in place.
    InPlace { file: File },
    /// A temporary file renamed over `dest` on commit.
    Replace {
        file: io::BufWriter<File>,
        temp: PathBuf,
        dest: PathBuf,
        /// The replaced file's permissions, kept on the new one.
        mode: Option<std::fs::Permissions>,
    },
}

/// An output being written: [`Output::commit`] makes it appear; dropping
/// it uncommitted leaves the destination as it was.
pub struct Output {
    sink: Sink,
    shown: String,
}

/// Checks that `path` may be written by a command that reads `inputs`
/// (call it before long work so a mistake costs nothing). `-` always may.
pub fn check_output(path: &Path, inputs: &[&Path]) -> Result<(), OutputError> {
    if path == Path::new("-") {
        return Ok(());
    }
    let Ok(target) = std::fs::metadata(path) else {
        return Ok(());
    };
    if target.is_dir() {
        return Err(OutputError::IsDirectory {
            path: path.display().to_string(),
        });
    }
    for input in inputs {
        if std::fs::metadata(input).is_ok_and(|m| same_file(&m, &target)) {
            return Err(OutputError::IsInput {
                output: path.display().to_string(),
                input: input.display().to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    (a.dev(), a.ino()) == (b.dev(), b.ino())
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    false
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output").field("path", &self.shown).finish_non_exhaustive()
    }
}

impl Output {
    /// Opens `path` for writing (see the module docs); `inputs` are the
    /// files the command reads, which it must not overwrite.
    pub fn create(path: &Path, inputs: &[&Path]) -> Result<Self, OutputError> {
        let shown = path.display().to_string();
        if path == Path::new("-") {
            return Ok(Self {
                sink: Sink::Stdout(io::stdout()),
                shown: "standard output".into(),
            });
        }
        check_output(path, inputs)?;
        let existing = std::fs::metadata(path).ok();
        if let Some(meta) = existing.as_ref().filter(|m| !m.is_file()) {
            debug_assert!(!meta.is_dir());
            let file = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| OutputError::io(path, e))?;
            return Ok(Self {
                sink: Sink::InPlace { file },
                shown,
            });
        }
        // A symlink to a regular file: replace what it points to.
        let dest = match std::fs::symlink_metadata(path) {
            Ok(link) if link.file_type().is_symlink() => {
                std::fs::canonicalize(path).map_err(|e| OutputError::io(path, e))?
            }
            _ => path.to_path_buf(),
        };
        let name = dest.file_name().ok_or_else(|| OutputError::NoFileName {
            path: shown.clone(),
        })?;
        let dir = match dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let mut prefix = std::ffi::OsString::from(".");
        prefix.push(name);
        prefix.push(".");
        // O_CREAT | O_EXCL under a random name: an existing file or a
        // planted symlink makes the open fail and tempfile retries.
        let temp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(|e| OutputError::io(path, e))?;
        let (file, temp) = temp.keep().map_err(|e| OutputError::io(path, e.error))?;
        register_temp(&temp);
        Ok(Self {
            sink: Sink::Replace {
                file: io::BufWriter::new(file),
                temp,
                dest,
                mode: existing.map(|m| m.permissions()),
            },
            shown,
        })
    }

    /// The path as the user gave it (or "standard output").
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Makes the output appear: flushes, syncs and renames a temporary file
    /// over its destination.
    pub fn commit(mut self) -> Result<(), OutputError> {
        let shown = PathBuf::from(&self.shown);
        let io_err = |e| OutputError::io(&shown, e);
        match &mut self.sink {
            Sink::Stdout(out) => out.flush().map_err(io_err),
            Sink::InPlace { file } => file.flush().map_err(io_err),
            Sink::Replace {
                file,
                temp,
                dest,
                mode,
            } => {
                file.flush().map_err(io_err)?;
                let file = file.get_ref();
                file.set_permissions(mode.clone().unwrap_or_else(default_permissions))
                    .map_err(io_err)?;
                file.sync_all().map_err(io_err)?;
                std::fs::rename(&*temp, &*dest).map_err(io_err)?;
                unregister_temp(temp);
                // Renamed: nothing left for drop to remove.
                temp.clear();
                Ok(())
            }
        }
    }
}

#[cfg(unix)]
fn default_permissions() -> std::fs::Permissions {
    // What `File::create` gives under the usual umask 022.
    std::os::unix::fs::PermissionsExt::from_mode(0o644)
}

#[cfg(not(unix))]
fn default_permissions() -> std::fs::Permissions {
    std::fs::metadata(".").map(|m| m.permissions()).expect("current directory")
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Stdout(out) => out.write(buf),
            Sink::InPlace { file } => file.write(buf),
            Sink::Replace { file, .. } => file.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.sink {
            Sink::Stdout(out) => out.write_all(buf),
            Sink::InPlace { file } => file.write_all(buf),
            Sink::Replace { file, .. } => file.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Stdout(out) => out.flush(),
            Sink::InPlace { file } => file.flush(),
            Sink::Replace { file, .. } => file.flush(),
        }
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Sink::Replace { temp, .. } = &self.sink {
            if !temp.as_os_str().is_empty() {
                // Best effort: the error that got us here matters more.
                let _ = std::fs::remove_file(temp);
                unregister_temp(temp);
            }
        }
    }
}

/// Writes `bytes` to `path` as one [`Output`].
pub fn write_output(path: &Path, inputs: &[&Path], bytes: &[u8]) -> Result<(), OutputError> {
    let mut out = Output::create(path, inputs)?;
    out.write_all(bytes)
        .map_err(|e| OutputError::io(Path::new(out.shown()), e))?;
    out.commit()
}

/// Temporary files that a signal must remove.
static TEMPS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn register_temp(path: &Path) {
    static HANDLER: Once = Once::new();
    HANDLER.call_once(install_signal_cleanup);
    TEMPS.lock().unwrap_or_else(|e| e.into_inner()).push(path.to_path_buf());
}

fn unregister_temp(path: &Path) {
    let mut temps = TEMPS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(i) = temps.iter().position(|t| t == path) {
        temps.swap_remove(i);
    }
}

/// A thread that waits for SIGINT, SIGTERM or SIGHUP, removes the
/// registered temporary files, then lets the signal's default action end
/// the process (so the exit status still says which signal it was). The
/// handler proper only writes to a pipe; the removal runs on this thread,
/// where taking a lock is allowed.
#[cfg(unix)]
fn install_signal_cleanup() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        tracing_free_warning("could not install the signal handler that removes temporary files");
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("q35-output-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let temps = TEMPS.lock().unwrap_or_else(|e| e.into_inner());
                for temp in temps.iter() {
                    let _ = std::fs::remove_file(temp);
                }
                let _ = signal_hook::low_level::emulate_default_handler(signal);
                std::process::exit(128 + signal);
            }
        });
    if spawned.is_err() {
        tracing_free_warning("could not start the thread that removes temporary files on signals");
    }
}

#[cfg(not(unix))]
fn install_signal_cleanup() {}

/// This crate logs nothing else; one line on stderr is enough here.
fn tracing_free_warning(message: &str) {
    eprintln!("warning: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temps_in(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn replaces_a_regular_file_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.q35");
        std::fs::write(&path, b"old").unwrap();
        let mut out = Output::create(&path, &[]).unwrap();
        out.write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"old", "not visible before commit");
        assert_eq!(temps_in(dir.path()).len(), 1);
        out.commit().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(temps_in(dir.path()).is_empty());
    }

    #[test]
    fn dropping_uncommitted_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.q35");
        let mut out = Output::create(&path, &[]).unwrap();
        out.write_all(b"partial").unwrap();
        drop(out);
        assert!(!path.exists());
        assert!(temps_in(dir.path()).is_empty());
        assert!(!TEMPS.lock().unwrap().iter().any(|t| t.starts_with(dir.path())));
    }

    #[cfg(unix)]
    #[test]
    fn a_planted_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        // The old predictable names, planted as links to the victim.
        for name in [".m.q35.tmp1", ".m.q35.1.0.tmp"] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        write_output(&dir.path().join("m.q35"), &[], b"artifact").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(dir.path().join("m.q35")).unwrap(), b"artifact");
    }

    /// The child half of [`a_signal_removes_the_temporary_file`]: starts
    /// an output in the directory it is given and waits to be killed.
    #[test]
    fn signal_child() {
        let Some(dir) = std::env::var_os("Q35_OUTPUT_SIGNAL_CHILD") else {
            return;
        };
        let mut out = Output::create(&Path::new(&dir).join("out.q35"), &[]).unwrap();
        out.write_all(&[7u8; 1 << 20]).unwrap();
        out.flush().unwrap();
        std::thread::sleep(std::time::Duration::from_secs(30));
        panic!("not killed");
    }

    #[cfg(unix)]
    #[test]
    fn a_signal_removes_the_temporary_file() {
        use std::os::unix::process::ExitStatusExt;
        for signal in ["INT", "TERM"] {
            let dir = tempfile::tempdir().unwrap();
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "output::tests::signal_child", "--nocapture", "--test-threads=1"])
                .env("Q35_OUTPUT_SIGNAL_CHILD", dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while temps_in(dir.path()).is_empty() {
                assert!(std::time::Instant::now() < deadline, "the child made no temporary file");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            // Give it time to write and park in the sleep.
            std::thread::sleep(std::time::Duration::from_millis(200));
            let killed = std::process::Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
            let status = child.wait().unwrap();
            assert!(status.signal().is_some() || status.code().is_some_and(|c| c > 128), "{status:?}");
            assert!(temps_in(dir.path()).is_empty(), "SIG{signal} left {:?}", temps_in(dir.path()));
            assert!(!dir.path().join("out.q35").exists());
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_symlinked_output_keeps_its_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.q35");
        std::fs::write(&real, b"old").unwrap();
        let link = dir.path().join("link.q35");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        write_output(&link, &[], b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_written_in_place() {
        use std::os::unix::fs::FileTypeExt;
        write_output(Path::new("/dev/null"), &[], b"bytes").unwrap();
        assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
        let err = write_output(Path::new("/dev/full"), &[], &[0u8; 1 << 16]).unwrap_err();
        assert!(err.to_string().starts_with("failed to write /dev/full: "), "{err}");
        assert!(std::fs::metadata("/dev/full").unwrap().file_type().is_char_device());
    }

    #[test]
    fn refuses_to_overwrite_an_input() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("model.safetensors");
        std::fs::write(&input, b"weights").unwrap();
        // The same file by another spelling.
        let other = dir.path().join(".").join("model.safetensors");
        let err = write_output(&other, &[&input], b"artifact").unwrap_err();
        assert!(matches!(err, OutputError::IsInput { .. }), "{err}");
        assert!(err.to_string().contains("it is the input"), "{err}");
        assert_eq!(std::fs::read(&input).unwrap(), b"weights");
    }

    #[test]
    fn refuses_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = write_output(dir.path(), &[], b"x").unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn keeps_an_existing_files_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_output(&path, &[], b"new").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let fresh = dir.path().join("fresh");
        write_output(&fresh, &[], b"new").unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o644);
    }
}
