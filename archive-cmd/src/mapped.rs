//! A WAL file mapped read-only into memory, instead of copied.
//!
//! Copying a 16 MiB segment into a fresh buffer costs more than hashing it: the kernel
//! must fault in and zero 4096 new pages first. Mapping the file lets the page checks,
//! hashing and compression read the page cache directly. The mapping is faulted in
//! lazily (the kernel maps neighbouring cached pages per fault); measured here, that beat
//! `MAP_POPULATE`, which maps every page up front before any work can start
//! (p50 25-28 ms per segment against 29-38 ms, `docs/performance.md`).
//!
//! Unmapping is not free either: tearing down the 4096 page mappings of a segment took
//! about 0.9 ms here, between the end of the encoding and the start of the store. A
//! push hands the mapping to a thread of its own once it is done with it
//! ([`MappedFile::release_in_background`]), which unmaps it while the store waits for
//! its fsyncs (each of 120-150 segments pushed by both builds in turn: 0.6-1.7 ms
//! shorter at the median, `bench/archive-push-pair.py`, `docs/performance.md`).
//!
//! The one hazard of a mapping is a file truncated underneath it (SIGBUS). PostgreSQL
//! never truncates a WAL file while its archive_command runs; it renames or removes it
//! only after the command has exited 0.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// A read-only mapping of a whole file; unmapped on drop.
pub struct MappedFile {
    ptr: *mut libc::c_void,
    len: usize,
}

impl MappedFile {
    /// Maps the first `len` bytes of `file` (its length as just read from its metadata).
    pub fn map(file: &File, len: u64) -> io::Result<MappedFile> {
        if len == 0 {
            // mmap refuses empty mappings; an empty slice needs none.
            return Ok(MappedFile {
                ptr: std::ptr::null_mut(),
                len: 0,
            });
        }
        let len = usize::try_from(len).map_err(|_| io::Error::other("file too large to map"))?;
        // SAFETY: a fresh read-only private mapping of a file we hold open; nothing else
        // aliases it, and it lives until `drop` unmaps it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MappedFile { ptr, len })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }

    /// Lets go of a shared mapping on a short-lived thread of its own, so that the caller
    /// does not wait for the unmap (when it holds the last reference); does it right here
    /// if no thread can be started. The file may be given along, to be closed there too.
    pub fn release_in_background(mapped: std::sync::Arc<MappedFile>, file: Option<File>) {
        let release = move || drop((mapped, file));
        // A thread that cannot be started drops `release`, and so unmaps, right here.
        let _ = std::thread::Builder::new()
            .name("tidemark-unmap".into())
            .spawn(release);
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly what `map` mapped, once.
            unsafe {
                libc::munmap(self.ptr, self.len);
            }
        }
    }
}

// The mapping is read-only and owned: sending it to another thread is sound.
unsafe impl Send for MappedFile {}
unsafe impl Sync for MappedFile {}
