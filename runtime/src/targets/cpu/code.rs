//! Loading the artifact's code object (an ELF shared object) straight from
//! memory, and looking up its kernels.
//!
//! `dlopen` needs a path, so the bytes are first written to an anonymous
//! in-memory file (`memfd_create`) and opened as `/proc/self/fd/N`:
//! nothing is written to any file system and nothing can be left behind,
//! even if the process is killed. Where that is unavailable (no memfd, no
//! `/proc`, or a kernel that forbids executable memfds), the bytes go to a
//! file in a fresh private (0700) directory under the temporary directory,
//! which is deleted right after `dlopen` returns. That is safe on Linux:
//! `dlopen` has mapped the file's pages by then, and a mapping keeps an
//! unlinked file's data alive until it is unmapped; the name is unique per
//! process and load (pid, counter, clock) and no other user can enter the
//! directory to replace the file in between.
//!
//! glibc recognises an already loaded library by its path name, and file
//! descriptor numbers are reused, so the memfd is kept open for as long as
//! the library is loaded: while it is, no other load can get the same
//! `/proc/self/fd/N` name. [`CodeObject`] drops the library (dlclose)
//! before the descriptor.
//!
//! Loading runs the object's initializers, so the caller validates
//! everything else in the artifact first.

use crate::elf::ElfFile;
use std::ffi::c_void;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A loaded shared object. Symbols looked up in it stay valid while it lives.
pub struct CodeObject {
    library: Option<libloading::Library>,
    /// The memfd the library was loaded from (see the module docs).
    _memfd: Option<File>,
}

impl std::fmt::Debug for CodeObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeObject").finish_non_exhaustive()
    }
}

impl CodeObject {
    /// Loads `bytes` (checked with [`ElfFile::parse`] first: a truncated
    /// object would otherwise be mapped and fault on first use). The error
    /// is the loader's own message, made readable.
    pub fn load(bytes: &[u8]) -> Result<Self, String> {
        ElfFile::parse(bytes)?;
        #[cfg(target_os = "linux")]
        {
            match Self::load_memfd(bytes) {
                Ok(object) => {
                    tracing::debug!(bytes = bytes.len(), "code object loaded from a memfd");
                    return Ok(object);
                }
                Err(reason) => {
                    tracing::debug!(%reason, "memfd loading failed; trying a temporary file")
                }
            }
        }
        Self::load_temp_file(bytes)
    }

    #[cfg(target_os = "linux")]
    fn load_memfd(bytes: &[u8]) -> Result<Self, String> {
        use std::os::fd::{AsRawFd, FromRawFd};
        extern "C" {
            // glibc >= 2.27, musl >= 1.1.20.
            fn memfd_create(
                name: *const std::ffi::c_char,
                flags: std::ffi::c_uint,
            ) -> std::ffi::c_int;
        }
        const MFD_CLOEXEC: std::ffi::c_uint = 1;
        // SAFETY: a valid NUL-terminated name and flags; the result is a
        // new descriptor we take ownership of, or -1.
        let fd = unsafe { memfd_create(c"q35-kernels".as_ptr(), MFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` is open and owned by nobody else.
        let mut file = unsafe { File::from_raw_fd(fd) };
        file.write_all(bytes)
            .map_err(|e| format!("writing the memfd: {e}"))?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        let library = open(&path)?;
        Ok(Self {
            library: Some(library),
            _memfd: Some(file),
        })
    }

    fn load_temp_file(bytes: &[u8]) -> Result<Self, String> {
        static LOADS: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "q35-rt-{}-{}-{nanos}",
            std::process::id(),
            LOADS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join("kernels.so");
        let result = std::fs::write(&path, bytes)
            .map_err(|e| format!("writing {}: {e}", path.display()))
            .and_then(|()| open(&path));
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir(&dir);
        Ok(Self {
            library: Some(result?),
            _memfd: None,
        })
    }

    /// The address of `symbol`, or `None` if the object does not export it.
    pub fn symbol(&self, symbol: &str) -> Option<*const c_void> {
        let library = self.library.as_ref()?;
        // SAFETY: we only take the symbol's address; it is called through a
        // correctly typed pointer by the executor, and not after `self` drops.
        let found = unsafe { library.get::<*const c_void>(symbol.as_bytes()) }.ok()?;
        let address = *found;
        (!address.is_null()).then_some(address)
    }
}

impl Drop for CodeObject {
    fn drop(&mut self) {
        // dlclose before the memfd closes (see the module docs).
        drop(self.library.take());
    }
}

fn open(path: &Path) -> Result<libloading::Library, String> {
    // SAFETY: loading runs the object's initializers. The object came from
    // a validated artifact whose checksums matched; running its code is
    // the purpose of the runtime.
    unsafe { libloading::Library::new(path) }.map_err(|e| {
        // dlerror() starts with the path, which is ours (a memfd or a
        // deleted temporary file) and means nothing to the user.
        e.to_string().replace(&format!("{}: ", path.display()), "")
    })
}
