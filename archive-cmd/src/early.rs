//! A segment's checks and hashing, begun before the arguments are parsed.
//!
//! PostgreSQL starts one `archive-push` process per segment and waits for it. The first
//! 2-3 ms of that process are single-threaded (loading, argument parsing, settings, the
//! runtime, the repository's folders) while the other core idles, and the hashing is the
//! longest sequential part of the push after them (SHA-256 of 16 MiB, about 10 ms). So
//! the binary's `main` calls [`begin`] before anything else: when its arguments end in
//! `archive-push … PATH` and PATH names a WAL segment, a thread maps the file and runs
//! the push's own page checks and hashing on it, frame by frame, as the push would.
//!
//! The push takes the mapping and the digest over ([`take`]) only when the file it
//! opened itself is the same file (device, inode, size, modification time); otherwise it
//! maps and hashes as before, and the early thread stops at its next frame. When an
//! early check fails, the push checks and hashes again itself, so that a bad file is
//! reported exactly as without this. Nothing here writes anything: a wrong guess about
//! the arguments costs only some CPU on a core that was idle.

use std::ffi::OsString;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use tidemark_pg::{self as pg, PageScan, WalFileName};
use tidemark_store::repo::{check_and_hash, HashedElsewhere, IN_MEMORY_MAX};

use crate::mapped::MappedFile;

/// What identifies one version of a file: the push uses the early work only when the
/// file it opened matches on all of it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileKey {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

impl FileKey {
    fn of(meta: &Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
        }
    }
}

/// The early work, once the file is mapped.
struct Begun {
    key: FileKey,
    mapped: Arc<MappedFile>,
    digest: mpsc::Receiver<Option<tidemark_store::Digest>>,
    /// Cleared when the push declines it: the early thread stops.
    wanted: Arc<AtomicBool>,
}

/// The early work, and whether the push has asked for it (once asked, nothing more is
/// published: work begun after that would never be taken).
struct Slot {
    begun: Option<Begun>,
    asked: bool,
}

static SLOT: Mutex<Slot> = Mutex::new(Slot {
    begun: None,
    asked: false,
});

/// What [`take`] hands the push: the file's mapping, and a wait for its digest.
pub(crate) struct Taken {
    pub(crate) mapped: Arc<MappedFile>,
    pub(crate) digest: HashedElsewhere,
}

/// Starts the early checks and hashing when `args` (the process's arguments, program
/// name first) end in `archive-push … PATH` with PATH naming a WAL segment. Returns at
/// once.
pub fn begin(args: impl IntoIterator<Item = OsString>) {
    let args: Vec<OsString> = args.into_iter().skip(1).collect();
    if !args.iter().any(|a| a == "archive-push") {
        return;
    }
    let Some(path) = args.last().map(PathBuf::from) else {
        return;
    };
    let Ok(name) = crate::push::file_name_of(&path) else {
        return;
    };
    if !matches!(name, WalFileName::Segment(_) | WalFileName::Partial(_)) {
        return;
    }
    let allowed = allowed_cpus();
    let spawned = std::thread::Builder::new()
        .name("tidemark-early".into())
        .spawn(move || {
            // Running on another core now: free to go anywhere again.
            if let Some(allowed) = allowed {
                set_thread_cpus(0, &allowed);
            }
            early_work(path, name)
        });
    if let (Ok(thread), Some(mut others)) = (spawned, allowed) {
        // A new thread is queued on its parent's core, and the scheduler may leave it
        // there for milliseconds, behind the start-up below, with the other core idle
        // (`perf sched timehist`: 1.3 ms before its first run, then `main` itself
        // waiting 3.9 ms behind it). So it starts on any core but this one.
        // SAFETY: `sched_getcpu` takes no arguments and only reads.
        let here = unsafe { libc::sched_getcpu() };
        if here >= 0 && (here as usize) < libc::CPU_SETSIZE as usize {
            // SAFETY: `here` is within the set, checked just above.
            unsafe { libc::CPU_CLR(here as usize, &mut others) };
            if cpu_count(&others) > 0 {
                use std::os::unix::thread::JoinHandleExt;
                set_thread_cpus(thread.as_pthread_t(), &others);
            }
        }
    }
}

/// The cores this process may run on, if the system says.
fn allowed_cpus() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most
    // its size into it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        (libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0)
            .then_some(set)
    }
}

fn cpu_count(set: &libc::cpu_set_t) -> u32 {
    // SAFETY: reads a valid set.
    unsafe { libc::CPU_COUNT(set) as u32 }
}

/// Sets the cores `thread` (0: the calling one) may run on; advice only, so a refusal
/// is ignored.
fn set_thread_cpus(thread: libc::pthread_t, set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid cpu_set_t of the size given; `thread` is this thread (0
    // means the caller for sched_setaffinity) or one still running, whose handle we hold.
    unsafe {
        if thread == 0 {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
        } else {
            libc::pthread_setaffinity_np(thread, std::mem::size_of::<libc::cpu_set_t>(), set);
        }
    }
}

/// The push's own file, opened and measured: the early mapping and a wait for the
/// early digest when they are of the same file, else `None` (and the early work stops).
pub(crate) fn take(meta: &Metadata) -> Option<Taken> {
    let begun = {
        let mut slot = SLOT.lock().ok()?;
        slot.asked = true;
        slot.begun.take()?
    };
    if begun.key != FileKey::of(meta) {
        begun.wanted.store(false, Ordering::Relaxed);
        return None;
    }
    let digest = begun.digest;
    Some(Taken {
        mapped: begun.mapped,
        digest: Box::new(move || digest.recv().ok().flatten()),
    })
}

/// The early thread: maps the file, publishes the mapping for [`take`], then checks and
/// hashes it and sends the digest (`None` when a check fails or the push declined).
fn early_work(path: PathBuf, name: WalFileName) {
    let (WalFileName::Segment(seg) | WalFileName::Partial(seg)) = name else {
        return;
    };
    let Ok(file) = crate::push::open_regular(&path) else {
        return;
    };
    let Ok(meta) = file.metadata() else {
        return;
    };
    let len = meta.len();
    if len == 0 || len > IN_MEMORY_MAX {
        return;
    }
    let Ok(mapped) = MappedFile::map(&file, len) else {
        return;
    };
    drop(file);
    let mapped = Arc::new(mapped);
    let (tx, rx) = mpsc::channel();
    let wanted = Arc::new(AtomicBool::new(true));
    {
        let Ok(mut slot) = SLOT.lock() else { return };
        if slot.asked {
            return;
        }
        slot.begun = Some(Begun {
            key: FileKey::of(&meta),
            mapped: Arc::clone(&mapped),
            digest: rx,
            wanted: Arc::clone(&wanted),
        });
    }
    // The push's own checks (`pg::check_pages`, as in `push::encode_segment`) through
    // the hashing thread's own loop, so the pieces and their order are the same.
    let bytes = mapped.bytes();
    let digest = pg::check_segment_start(&seg, bytes, len)
        .ok()
        .and_then(|id| {
            let mut scan = PageScan::default();
            check_and_hash(bytes, |offset, piece| {
                if !wanted.load(Ordering::Relaxed) {
                    return Err(());
                }
                pg::check_pages(&seg, &id, offset, piece, &mut scan).map_err(|_| ())
            })
            .ok()
        });
    // This thread's reference goes before the digest does: the push's is then the last,
    // and the push decides where the unmap runs.
    drop(mapped);
    let _ = tx.send(digest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::Path;
    use std::time::{Duration, Instant};
    use tidemark_store::Digest;

    /// The slot is one per process: these tests take turns, each from an empty slot.
    static TURN: Mutex<()> = Mutex::new(());

    fn fresh_slot() -> std::sync::MutexGuard<'static, ()> {
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        *SLOT.lock().unwrap() = Slot {
            begun: None,
            asked: false,
        };
        turn
    }

    const NAME: &str = "000000010000000000000003";
    const SEG: usize = 1 << 20;

    /// A 1 MiB segment of PostgreSQL 15 pages: a header with its own address on every
    /// page (the long one first), the rest of each page numbered bytes.
    fn write_segment(path: &Path, bad_page: Option<usize>) -> Vec<u8> {
        const PAGE: usize = 8192;
        let start = 3 * SEG as u64;
        let mut bytes = Vec::with_capacity(SEG);
        for i in 0..SEG / PAGE {
            let mut page: Vec<u8> = (0..PAGE).map(|k| (k * 7 + i) as u8).collect();
            let magic: u16 = if bad_page == Some(i) { 0xBEEF } else { 0xD110 };
            page[0..2].copy_from_slice(&magic.to_le_bytes());
            page[2..4].copy_from_slice(&(if i == 0 { 2u16 } else { 0 }).to_le_bytes());
            page[4..8].copy_from_slice(&1u32.to_le_bytes());
            page[8..16].copy_from_slice(&(start + (i * PAGE) as u64).to_le_bytes());
            page[16..24].fill(0);
            if i == 0 {
                page[24..32].copy_from_slice(&0x7312_0000_0000_0001u64.to_le_bytes());
                page[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
                page[36..40].copy_from_slice(&(PAGE as u32).to_le_bytes());
            }
            bytes.extend_from_slice(&page);
        }
        std::fs::File::create(path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        bytes
    }

    fn args(path: &Path) -> Vec<OsString> {
        ["tidemark", "--repo", "file:///nowhere", "archive-push"]
            .iter()
            .map(OsString::from)
            .chain([path.as_os_str().to_owned()])
            .collect()
    }

    /// Waits for the early thread to publish its mapping.
    fn published() -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if SLOT.lock().unwrap().begun.is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn the_push_takes_over_the_mapping_and_the_digest_of_the_same_file() {
        let _turn = fresh_slot();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NAME);
        let bytes = write_segment(&path, None);
        begin(args(&path));
        assert!(published());
        let meta = std::fs::metadata(&path).unwrap();
        let taken = take(&meta).expect("the same file");
        assert_eq!(taken.mapped.bytes(), &bytes[..]);
        assert_eq!((taken.digest)(), Some(Digest::of(&bytes)));
        // Asked once: nothing more is handed out.
        assert!(take(&meta).is_none());
    }

    #[test]
    fn another_file_under_the_name_is_declined_and_the_early_work_stops() {
        let _turn = fresh_slot();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NAME);
        write_segment(&path, None);
        begin(args(&path));
        assert!(published());
        let wanted = Arc::clone(&SLOT.lock().unwrap().begun.as_ref().unwrap().wanted);
        // Replaced by another file (another inode) before the push opens it.
        std::fs::remove_file(&path).unwrap();
        write_segment(&path, None);
        assert!(take(&std::fs::metadata(&path).unwrap()).is_none());
        assert!(!wanted.load(Ordering::Relaxed));
    }

    #[test]
    fn a_failed_early_check_leaves_the_checking_to_the_push() {
        let _turn = fresh_slot();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NAME);
        write_segment(&path, Some(77));
        begin(args(&path));
        assert!(published());
        let taken = take(&std::fs::metadata(&path).unwrap()).expect("the same file");
        // No digest: the push checks the pages itself and reports the bad one.
        assert_eq!((taken.digest)(), None);
    }

    #[test]
    fn nothing_begins_for_other_commands_or_files() {
        let _turn = fresh_slot();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NAME);
        write_segment(&path, None);
        let not_a_push: Vec<OsString> = ["tidemark", "archive-get", NAME, "/tmp/x"]
            .iter()
            .map(OsString::from)
            .collect();
        begin(not_a_push);
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, b"not WAL").unwrap();
        begin(args(&other));
        begin(args(&dir.path().join("00000002.history")));
        std::thread::sleep(Duration::from_millis(50));
        assert!(SLOT.lock().unwrap().begun.is_none());
    }
}
