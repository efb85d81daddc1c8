//! A repository in a local folder (`file:///var/lib/tidemark`): the embedded default.
//!
//! Durability before success: every write goes to a temporary file in the target's own
//! folder (named `.tmp-…`, which no key can be; a [`Staged`] body, written before its key
//! is known, sits in a parent folder of the target instead), is fsynced, then becomes
//! visible with `link` (for [`PutMode::Create`]: fails if the name exists, so nothing is
//! ever replaced) or `rename` (for [`PutMode::Overwrite`]), and the folder itself is
//! fsynced. A create that finds its name taken fsyncs the folder too before it answers
//! `AlreadyExists`: the name may have been linked by a writer that crashed before its own
//! folder fsync, and "already there" must be as durable as "created".
//! Folders a write creates are fsynced themselves and into their parents; an empty folder
//! of the repository found already there is fsynced into its parent once per process (a
//! crashed run may have created it); one holding an entry is durable already (see
//! `create_dirs_durably`). A writer killed at any point leaves at most a `.tmp-` file,
//! which listings never show.
//!
//! File-system calls are blocking; they run on tokio's blocking pool.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{Backend, ObjectMeta, PutMode, Upload};
use crate::{Error, Key, Result};

/// A repository rooted at an absolute folder.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn io_err(op: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

fn temp_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        ".tmp-{}-{}-{nanos}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn fsync_dir(dir: &Path) -> Result<()> {
    #[cfg(test)]
    tests::record_fsync(dir);
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("fsync folder", dir, e))
}

/// Folders this process has made durable (created and fsynced into their parent, or found
/// and fsynced into their parent once): later writes skip them.
static DURABLE_DIRS: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

fn known_durable(dir: &Path) -> bool {
    DURABLE_DIRS
        .lock()
        .expect("durable folders")
        .as_ref()
        .is_some_and(|set| set.contains(dir))
}

fn mark_durable(dir: &Path) {
    DURABLE_DIRS
        .lock()
        .expect("durable folders")
        .get_or_insert_with(HashSet::new)
        .insert(dir.to_path_buf());
}

/// `create_dir_all` that makes every folder on the way durable: a new folder is fsynced
/// itself (its entries) and into its parent. A folder that already exists but is empty is
/// fsynced into its parent too, once per process: an earlier run may have created it and
/// crashed before its own parent fsync, and a durable file must never sit inside a folder
/// whose entry could vanish in a crash. Ancestors are handled the same way up to the
/// repository's `root`; above it only the folders this call creates (existing ones are the
/// user's).
///
/// A folder of the repository with anything in it is durable in its parent already, and
/// so are its ancestors: every writer of this backend runs this function on a folder
/// before it puts anything there (files, temporary files, folders), so whoever put the
/// first entry there had made the folder durable first, or had found it holding an entry,
/// which by the same argument was put there after that. Checking costs one read of the
/// folder's first entries, where the fsync it saves costs a flush of the disk's cache
/// (about 8 of a push's 14 fsyncs were of such folders).
fn create_dirs_durably(root: &Path, dir: &Path) -> Result<()> {
    let exists = dir.is_dir();
    // A folder removed since (by another process) is created again, durably.
    if exists && known_durable(dir) {
        return Ok(());
    }
    if exists && !dir.starts_with(root) {
        return Ok(());
    }
    if exists && has_entries(dir) {
        mark_durable(dir);
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_durably(root, parent)?;
    }
    let created = match fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => false,
        Err(e) => return Err(io_err("create folder", dir, e)),
    };
    if created {
        fsync_dir(dir)?;
    }
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    mark_durable(dir);
    Ok(())
}

/// Whether `dir` holds at least one entry (a failure to read it counts as none: the
/// caller then fsyncs, as for an empty folder).
fn has_entries(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

/// A temporary file last written longer ago than this, whose writer's process is gone, was
/// left by a killed writer (see [`super::TempFiles`]). Far above the time between two
/// writes of any writer (a part of an upload, a staged body, a record), so a file still
/// being written is never this old, even when its writer runs in another process namespace
/// or on another machine (a shared folder), where its process id says nothing.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// The writer's process id in a temporary file's name (`.tmp-<pid>-<n>-<nanos>`, see
/// [`temp_name`]).
fn temp_writer(name: &str) -> Option<i32> {
    name.strip_prefix(".tmp-")?.split('-').next()?.parse().ok()
}

/// True when a process with id `pid` may run on this machine: it exists, or exists under
/// another user (`EPERM`). Only "no such process" (`ESRCH`) says it is gone.
fn process_runs(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    if unsafe { libc::kill(pid, 0) } == 0 {
        return true;
    }
    io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn modified(meta: &fs::Metadata) -> Option<DateTime<Utc>> {
    meta.modified().ok().map(DateTime::<Utc>::from)
}

/// Moves a finished, fsynced temporary file to its name, honouring `mode`.
fn publish(tmp: &Path, dest: &Path, key: &Key, mode: PutMode) -> Result<()> {
    let dir = dest.parent().expect("keys have a parent folder");
    let result = match mode {
        PutMode::Create => match fs::hard_link(tmp, dest) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(Error::AlreadyExists { key: key.clone() })
            }
            Err(e) => Err(io_err("link", dest, e)),
        },
        PutMode::Overwrite => fs::rename(tmp, dest).map_err(|e| io_err("rename", dest, e)),
    };
    // After a rename the temporary name is gone already; after link (or a failure) remove it.
    let _ = fs::remove_file(tmp);
    if let Err(Error::AlreadyExists { .. }) = result {
        // The name may come from a writer that crashed between its link and its folder
        // fsync: "already there" must be as durable as "created" before anyone relies on it.
        fsync_dir(dir)?;
    }
    result?;
    fsync_dir(dir)
}

/// A body being written to a temporary file before its key is known (see
/// [`Backend::stage`]). Every megabyte written is handed to the disk at once
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, as PostgreSQL's `pg_flush_data` does), so
/// that the fsync that publishes it finds little left to write. Dropped unpublished, the
/// file is removed; a writer killed meanwhile leaves a `.tmp-` file no listing shows.
#[derive(Debug)]
pub struct Staged {
    file: File,
    path: PathBuf,
    written: u64,
    flushed: u64,
}

/// How much a [`Staged`] body accumulates before its write-back is started.
const STAGED_FLUSH_EVERY: u64 = 1 << 20;
/// Folders `delete_many` empties at once.
const DELETE_THREADS: usize = 8;

impl Staged {
    fn create(dir: &Path) -> io::Result<Staged> {
        let path = dir.join(temp_name());
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)?;
        Ok(Staged {
            file,
            path,
            written: 0,
            flushed: 0,
        })
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    /// True when nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// The body as written, for stores that take bytes.
    pub fn read_back(mut self) -> Result<Bytes> {
        let mut body = Vec::with_capacity(self.written as usize);
        self.file
            .seek(SeekFrom::Start(0))
            .and_then(|_| self.file.read_to_end(&mut body))
            .map_err(|e| io_err("read", &self.path, e))?;
        Ok(Bytes::from(body))
    }

    fn start_write_back(&mut self) {
        use std::os::fd::AsRawFd;
        let (from, len) = (self.flushed, self.written - self.flushed);
        // SAFETY: sync_file_range only reads the descriptor, which `self.file` keeps open.
        // It is advice: a failure here is found again by the fsync that publishes the file.
        unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                from as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
        self.flushed = self.written;
    }
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.flushed >= STAGED_FLUSH_EVERY {
            self.start_write_back();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Published bodies were linked under their key first: this removes only the
        // temporary name.
        let _ = fs::remove_file(&self.path);
    }
}

/// A body for [`LocalBackend::create_all_blocking`].
enum Body {
    Bytes(Bytes),
    Staged(Staged),
}

impl LocalBackend {
    /// A backend rooted at `root`, which must be an absolute path. The folder is created
    /// on first write, not here, so that opening never changes anything.
    pub fn new(root: impl Into<PathBuf>) -> Result<LocalBackend> {
        let root = root.into();
        if !root.is_absolute() {
            return Err(Error::BadUrl {
                url: root.display().to_string(),
                reason: "a local repository needs an absolute path".into(),
            });
        }
        Ok(LocalBackend { root })
    }

    /// The folder this backend writes to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &Key) -> PathBuf {
        self.root.join(key.as_str())
    }

    fn put_blocking(&self, key: &Key, data: &[u8], mode: PutMode) -> Result<()> {
        let dest = self.path(key);
        let dir = dest.parent().expect("keys have a parent folder");
        create_dirs_durably(&self.root, dir)?;
        if mode == PutMode::Create && dest.exists() {
            // Cheap early answer; `link` below is what makes Create exclusive. The name may
            // come from a writer that crashed between its link and its folder fsync: make it
            // durable before answering "already there" (see `publish`).
            fsync_dir(dir)?;
            return Err(Error::AlreadyExists { key: key.clone() });
        }
        let tmp = dir.join(temp_name());
        let written = (|| {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", &tmp, e));
        }
        publish(&tmp, &dest, key, mode)
    }

    /// Several creates with one round of file fsyncs and one of folder fsyncs, run
    /// concurrently, instead of two rounds per object: the file system can commit them
    /// together. Links happen in order, so readers see each object only after the ones
    /// before it. With a `gate`, the links stop at the first item from that position on
    /// whose name is taken (see [`Backend::create_chain`]): `link` is exclusive, so a
    /// gate item linked here is this writer's alone when the items after it are linked.
    /// Per item: created, already there, or (after a stop) not attempted.
    fn create_all_blocking(
        &self,
        items: Vec<(Key, Body)>,
        gate: Option<usize>,
    ) -> Result<Vec<Option<bool>>> {
        /// One object on its way: its finished temporary file and its name.
        struct Pending {
            tmp: PathBuf,
            dest: PathBuf,
            /// Set for a staged body, whose file is still open (its drop removes `tmp`).
            staged: Option<Staged>,
        }
        let mut pending: Vec<Option<Pending>> = Vec::with_capacity(items.len());
        let mut existing_dirs: Vec<PathBuf> = Vec::new();
        let cleanup = |pending: &[Option<Pending>]| {
            for p in pending.iter().flatten() {
                let _ = fs::remove_file(&p.tmp);
            }
        };
        for (key, body) in items {
            let dest = self.path(&key);
            let dir = dest.parent().expect("keys have a parent folder");
            if let Err(e) = create_dirs_durably(&self.root, dir) {
                cleanup(&pending);
                return Err(e);
            }
            if dest.exists() {
                // Already there, maybe linked by a writer that crashed before its folder
                // fsync: the folder is fsynced below with the others (see `publish`).
                let dir = dir.to_path_buf();
                if !existing_dirs.contains(&dir) {
                    existing_dirs.push(dir);
                }
                pending.push(None);
                continue;
            }
            match body {
                Body::Staged(staged) => pending.push(Some(Pending {
                    tmp: staged.path.clone(),
                    dest,
                    staged: Some(staged),
                })),
                Body::Bytes(data) => {
                    let tmp = dir.join(temp_name());
                    let written = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&tmp)
                        .and_then(|mut f| f.write_all(&data));
                    if let Err(e) = written {
                        let _ = fs::remove_file(&tmp);
                        cleanup(&pending);
                        return Err(io_err("write", &tmp, e));
                    }
                    pending.push(Some(Pending {
                        tmp,
                        dest,
                        staged: None,
                    }));
                }
            }
        }
        let synced = std::thread::scope(|s| {
            let handles: Vec<_> = pending
                .iter()
                .flatten()
                .map(|p| {
                    s.spawn(|| {
                        match &p.staged {
                            Some(staged) => staged.file.sync_all(),
                            None => File::open(&p.tmp).and_then(|f| f.sync_all()),
                        }
                        .map_err(|e| io_err("fsync", &p.tmp, e))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("fsync thread"))
                .collect::<Result<Vec<()>>>()
        });
        if let Err(e) = synced {
            cleanup(&pending);
            return Err(e);
        }
        let total = pending.len();
        let mut created = Vec::with_capacity(total);
        let mut dirs: Vec<PathBuf> = existing_dirs;
        let stops_here = |i: usize| gate.is_some_and(|g| i >= g);
        for (i, p) in pending.iter().enumerate() {
            let Some(p) = p else {
                created.push(Some(false));
                if stops_here(i) {
                    cleanup(&pending[i..]);
                    break;
                }
                continue;
            };
            let linked = match fs::hard_link(&p.tmp, &p.dest) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
                Err(e) => {
                    cleanup(&pending[i..]);
                    return Err(io_err("link", &p.dest, e));
                }
            };
            created.push(Some(linked));
            let dir = p.dest.parent().expect("parent").to_path_buf();
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
            let _ = fs::remove_file(&p.tmp);
            if !linked && stops_here(i) {
                cleanup(&pending[i + 1..]);
                break;
            }
        }
        created.resize(total, None);
        std::thread::scope(|s| {
            let handles: Vec<_> = dirs.iter().map(|d| s.spawn(|| fsync_dir(d))).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("fsync thread"))
                .collect::<Result<Vec<()>>>()
        })?;
        Ok(created)
    }

    /// Finds (and with `remove`, removes) the temporary files in every folder of the
    /// repository that killed writers left (see [`STALE_TEMP_AGE`]), as of `now`.
    fn stale_temp_blocking(&self, remove: bool, now: SystemTime) -> Result<super::TempFiles> {
        let mut found = super::TempFiles::default();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("list", &dir, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| io_err("list", &dir, e))?;
                let name = entry.file_name().to_string_lossy().to_string();
                let file_type = entry
                    .file_type()
                    .map_err(|e| io_err("list", &entry.path(), e))?;
                if file_type.is_dir() {
                    // Only the repository's own folders: not `lost+found` at a mount point,
                    // which another user may own (no key can name it).
                    if Key::new(name.as_str()).is_ok() {
                        stack.push(entry.path());
                    }
                    continue;
                }
                if !file_type.is_file() || !name.starts_with(".tmp-") {
                    continue;
                }
                let path = entry.path();
                let meta = match entry.metadata() {
                    Ok(m) => m,
                    // Published or removed by its writer meanwhile.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("stat", &path, e)),
                };
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or(Duration::ZERO);
                if age <= STALE_TEMP_AGE || temp_writer(&name).is_some_and(process_runs) {
                    continue;
                }
                if remove {
                    match fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io_err("remove", &path, e)),
                    }
                }
                found.count += 1;
                found.bytes += meta.len();
            }
        }
        Ok(found)
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        // The page walk, with no end to the page: folders in key order, so no sort after.
        self.list_page_blocking(prefix, None, usize::MAX)
    }

    /// [`Backend::list_page`]: a depth-first walk that reads each folder's names, sorts
    /// them as the keys below them sort (a folder `a` as `a/`: `a-c` comes before
    /// `a/b`), skips every folder whose keys all sort at or before `after`, and stops
    /// once the page is full. Memory is the page and the names of the folders on the way
    /// down (a WAL index folder holds one log file's segments).
    fn list_page_blocking(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectMeta>> {
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let mut out = Vec::new();
        self.page_folder(dir_part, prefix, after, limit.max(1), &mut out)?;
        Ok(out)
    }

    /// Adds the objects of the folder `rel` (a key prefix without its `/`) to `out`, in
    /// key order, until it holds `limit`.
    fn page_folder(
        &self,
        rel: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        out: &mut Vec<ObjectMeta>,
    ) -> Result<()> {
        let dir = if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        };
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.kind() == io::ErrorKind::NotADirectory =>
            {
                return Ok(())
            }
            Err(e) => return Err(io_err("list", &dir, e)),
        };
        // (how the keys below sort, the key, whether a folder)
        let mut names: Vec<(String, String, bool)> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_err("list", &dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') {
                continue; // temporary files
            }
            let key = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let is_dir = entry
                .file_type()
                .map_err(|e| io_err("list", &entry.path(), e))?
                .is_dir();
            if is_dir {
                let as_dir = format!("{key}/");
                let in_prefix = as_dir.starts_with(prefix) || prefix.starts_with(&as_dir);
                // Every key below sorts after `as_dir`; all of them sort at or before
                // `after` when `after` is past `as_dir` without starting with it.
                let passed = after.is_some_and(|a| a > as_dir.as_str() && !a.starts_with(&as_dir));
                if in_prefix && !passed {
                    names.push((as_dir, key, true));
                }
            } else if key.starts_with(prefix) && after.is_none_or(|a| key.as_str() > a) {
                names.push((key.clone(), key, false));
            }
        }
        names.sort_unstable();
        for (_, key, is_dir) in names {
            if out.len() >= limit {
                return Ok(());
            }
            if is_dir {
                self.page_folder(&key, prefix, after, limit, out)?;
                continue;
            }
            let Ok(key) = Key::new(key) else { continue };
            let path = self.path(&key);
            let meta = match fs::metadata(&path) {
                Ok(meta) => meta,
                // Removed since the folder was read: not an object any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("stat", &path, e)),
            };
            out.push(ObjectMeta {
                key,
                size: meta.len(),
                last_modified: modified(&meta),
            });
        }
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking file-system task panicked")
}

fn not_found_or(key: &Key, op: &'static str, path: &Path, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::NotFound { key: key.clone() }
    } else {
        io_err(op, path, e)
    }
}

#[async_trait]
impl Backend for LocalBackend {
    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<()> {
        let (this, key) = (self.clone(), key.clone());
        blocking(move || this.put_blocking(&key, &data, mode)).await
    }

    async fn create_all(&self, items: Vec<(Key, Bytes)>) -> Result<Vec<bool>> {
        let this = self.clone();
        let items = items
            .into_iter()
            .map(|(k, b)| (k, Body::Bytes(b)))
            .collect();
        let created = blocking(move || this.create_all_blocking(items, None)).await?;
        Ok(created.into_iter().map(|c| c == Some(true)).collect())
    }

    fn create_is_exclusive(&self) -> bool {
        // `link` fails when the name exists (see `publish`).
        true
    }

    async fn create_chain(
        &self,
        staged: Option<(Key, Staged)>,
        items: Vec<(Key, Bytes)>,
        gate: usize,
    ) -> Result<Vec<Option<bool>>> {
        let this = self.clone();
        let mut all = Vec::with_capacity(1 + items.len());
        if let Some((key, staged)) = staged {
            all.push((key, Body::Staged(staged)));
        }
        all.extend(items.into_iter().map(|(k, b)| (k, Body::Bytes(b))));
        blocking(move || this.create_all_blocking(all, Some(gate))).await
    }

    fn stage(&self, folder: &str) -> Option<Staged> {
        let dir = self.root.join(folder);
        if !dir.is_dir() {
            return None;
        }
        // Like every write, a staged body goes only into a folder made durable first (see
        // `create_dirs_durably`: an entry proves its folder durable).
        create_dirs_durably(&self.root, &dir).ok()?;
        Staged::create(&dir).ok()
    }

    async fn settle_folder(&self, folder: &str) -> Result<()> {
        let root = self.root.clone();
        let dir = self.root.join(folder);
        blocking(move || {
            // The same fsyncs a write into it would make first (once per process), now.
            if dir.is_dir() {
                create_dirs_durably(&root, &dir)?;
            }
            Ok(())
        })
        .await
    }

    async fn create_folders(&self, folders: Vec<String>) -> Result<()> {
        let root = self.root.clone();
        blocking(move || {
            let dirs: Vec<PathBuf> = folders.iter().map(|f| root.join(f)).collect();
            // The parents first (each made durable once), then the missing folders, their
            // fsyncs spread over a few threads (an empty folder's fsync is mostly waiting),
            // then each parent once more for the new entries.
            let mut parents: Vec<PathBuf> = dirs
                .iter()
                .filter_map(|d| d.parent())
                .map(Path::to_path_buf)
                .collect();
            parents.sort();
            parents.dedup();
            for parent in &parents {
                create_dirs_durably(&root, parent)?;
            }
            let mut created = Vec::new();
            for dir in &dirs {
                match fs::create_dir(dir) {
                    Ok(()) => created.push(dir.clone()),
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                    Err(e) => return Err(io_err("create folder", dir, e)),
                }
            }
            let threads = 8.min(created.len().max(1));
            std::thread::scope(|s| {
                let handles: Vec<_> = (0..threads)
                    .map(|t| {
                        let created = &created;
                        s.spawn(move || {
                            created
                                .iter()
                                .skip(t)
                                .step_by(threads)
                                .try_for_each(|d| fsync_dir(d))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .try_for_each(|h| h.join().expect("fsync thread"))
            })?;
            for parent in &parents {
                fsync_dir(parent)?;
            }
            for dir in &dirs {
                mark_durable(dir);
            }
            Ok(())
        })
        .await
    }

    async fn stale_temp_files(&self, remove: bool) -> Result<super::TempFiles> {
        let this = self.clone();
        blocking(move || this.stale_temp_blocking(remove, SystemTime::now())).await
    }

    async fn create_all_staged(
        &self,
        first: (Key, Staged),
        rest: Vec<(Key, Bytes)>,
    ) -> Result<Vec<bool>> {
        let this = self.clone();
        let mut items = Vec::with_capacity(1 + rest.len());
        items.push((first.0, Body::Staged(first.1)));
        items.extend(rest.into_iter().map(|(k, b)| (k, Body::Bytes(b))));
        let created = blocking(move || this.create_all_blocking(items, None)).await?;
        Ok(created.into_iter().map(|c| c == Some(true)).collect())
    }

    async fn get(&self, key: &Key) -> Result<Bytes> {
        let (path, key) = (self.path(key), key.clone());
        blocking(move || {
            fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| not_found_or(&key, "read", &path, e))
        })
        .await
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes> {
        let (path, key) = (self.path(key), key.clone());
        blocking(move || {
            let mut f = File::open(&path).map_err(|e| not_found_or(&key, "read", &path, e))?;
            let len = f.metadata().map_err(|e| io_err("stat", &path, e))?.len();
            if range.start >= len || range.end <= range.start {
                return Err(Error::Backend {
                    op: "read range",
                    key: key.to_string(),
                    message: format!("range {range:?} outside an object of {len} bytes"),
                });
            }
            let end = range.end.min(len);
            let mut buf = vec![0u8; (end - range.start) as usize];
            f.seek(SeekFrom::Start(range.start))
                .and_then(|_| f.read_exact(&mut buf))
                .map_err(|e| io_err("read", &path, e))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let (path, key) = (self.path(key), key.clone());
        blocking(move || {
            let meta = fs::metadata(&path).map_err(|e| not_found_or(&key, "stat", &path, e))?;
            if !meta.is_file() {
                return Err(Error::NotFound { key });
            }
            Ok(ObjectMeta {
                key,
                size: meta.len(),
                last_modified: modified(&meta),
            })
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Key::check_prefix(prefix)?;
        let (this, prefix) = (self.clone(), prefix.to_string());
        blocking(move || this.list_blocking(&prefix)).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectMeta>> {
        Key::check_prefix(prefix)?;
        let (this, prefix) = (self.clone(), prefix.to_string());
        let after = start_after.map(str::to_string);
        blocking(move || this.list_page_blocking(&prefix, after.as_deref(), limit)).await
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let path = self.path(key);
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => fsync_dir(path.parent().expect("parent")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("delete", &path, e)),
        })
        .await
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<()> {
        // Grouped by folder, folders in parallel (a removal waits on the disk, and on a
        // file system mounted with `discard` that wait is most of its cost; removals in
        // one folder serialize on it anyway), each folder made durable once at its end.
        let mut folders: std::collections::BTreeMap<PathBuf, Vec<PathBuf>> = Default::default();
        for key in keys {
            let path = self.path(key);
            let folder = path.parent().expect("parent").to_path_buf();
            folders.entry(folder).or_default().push(path);
        }
        blocking(move || {
            let work = Mutex::new(folders.into_iter());
            let threads = DELETE_THREADS.min(work.lock().expect("work").len()).max(1);
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        scope.spawn(|| -> Result<()> {
                            loop {
                                let Some((folder, paths)) = work.lock().expect("work").next()
                                else {
                                    return Ok(());
                                };
                                let mut removed = false;
                                for path in &paths {
                                    match fs::remove_file(path) {
                                        Ok(()) => removed = true,
                                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                                        Err(e) => return Err(io_err("delete", path, e)),
                                    }
                                }
                                if removed {
                                    fsync_dir(&folder)?;
                                }
                            }
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .try_for_each(|w| w.join().expect("a removal thread panicked"))
            })
        })
        .await
    }

    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn Upload>> {
        let dest = self.path(key);
        let key = key.clone();
        let root = self.root.clone();
        blocking(move || {
            let dir = dest.parent().expect("parent").to_path_buf();
            create_dirs_durably(&root, &dir)?;
            let tmp = dir.join(temp_name());
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| io_err("create", &tmp, e))?;
            Ok(Box::new(LocalUpload {
                key,
                dest,
                tmp,
                file: Some(file),
                mode,
            }) as Box<dyn Upload>)
        })
        .await
    }
}

/// A multipart write into a temporary file, published on `complete`.
struct LocalUpload {
    key: Key,
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    mode: PutMode,
}

impl LocalUpload {
    fn finished(&self, op: &'static str) -> Error {
        Error::Backend {
            op,
            key: self.key.to_string(),
            message: "the upload is already finished".into(),
        }
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        // Neither completed nor aborted (an error or a panic upstream): leave nothing behind.
        if self.file.is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[async_trait]
impl Upload for LocalUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| self.finished("upload part"))?;
        let tmp = self.tmp.clone();
        let (file, result) = tokio::task::spawn_blocking(move || {
            let r = file.write_all(&data);
            (file, r)
        })
        .await
        .expect("blocking write panicked");
        self.file = Some(file);
        result.map_err(|e| io_err("write", &tmp, e))
    }

    async fn complete(&mut self) -> Result<()> {
        let file = self
            .file
            .take()
            .ok_or_else(|| self.finished("complete upload"))?;
        let (tmp, dest, key, mode) = (
            self.tmp.clone(),
            self.dest.clone(),
            self.key.clone(),
            self.mode,
        );
        blocking(move || {
            if let Err(e) = file.sync_all() {
                let _ = fs::remove_file(&tmp);
                return Err(io_err("fsync", &tmp, e));
            }
            drop(file);
            publish(&tmp, &dest, &key, mode)
        })
        .await
    }

    async fn abort(&mut self) -> Result<()> {
        self.file.take();
        let tmp = self.tmp.clone();
        blocking(move || match fs::remove_file(&tmp) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &tmp, e)),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::conformance;

    /// Every folder fsync of this test process, in order (tests run in parallel: each
    /// looks only at the paths under its own temporary folder).
    static FSYNCED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    pub(super) fn record_fsync(dir: &Path) {
        FSYNCED.lock().unwrap().push(dir.to_path_buf());
    }

    /// How many folder fsyncs `dir` got so far.
    fn fsyncs_of(dir: &Path) -> usize {
        FSYNCED.lock().unwrap().iter().filter(|d| *d == dir).count()
    }

    /// A create that finds its name taken fsyncs the folder before answering: the name may
    /// have been linked by a writer that crashed before its own folder fsync, and the
    /// retry's "already there" must not acknowledge a link a power loss could undo. The
    /// same for `create_all` and for a multipart upload that completes onto a taken name.
    #[tokio::test]
    async fn already_exists_makes_the_name_durable_first() {
        let (_dir, b) = backend();
        let folder = b.root().join("blobs").join("ab");
        std::fs::create_dir_all(&folder).unwrap();
        // What a writer killed between `link` and the folder fsync leaves.
        std::fs::write(folder.join("abcd"), b"x").unwrap();
        std::fs::write(folder.join("abce"), b"y").unwrap();
        std::fs::write(folder.join("abcf"), b"z").unwrap();

        let before = fsyncs_of(&folder);
        let key = Key::new("blobs/ab/abcd").unwrap();
        let err = b
            .put(&key, Bytes::from_static(b"x"), PutMode::Create)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        assert!(
            fsyncs_of(&folder) > before,
            "put: the folder was not fsynced"
        );

        let before = fsyncs_of(&folder);
        let created = b
            .create_all(vec![(
                Key::new("blobs/ab/abce").unwrap(),
                Bytes::from_static(b"y"),
            )])
            .await
            .unwrap();
        assert_eq!(created, [false]);
        assert!(
            fsyncs_of(&folder) > before,
            "create_all: the folder was not fsynced"
        );

        let before = fsyncs_of(&folder);
        let mut up = b
            .put_multipart(&Key::new("blobs/ab/abcf").unwrap(), PutMode::Create)
            .await
            .unwrap();
        up.put_part(Bytes::from_static(b"z")).await.unwrap();
        assert!(matches!(
            up.complete().await,
            Err(Error::AlreadyExists { .. })
        ));
        assert!(
            fsyncs_of(&folder) > before,
            "complete: the folder was not fsynced"
        );
    }

    /// Creating the repository's folders fsyncs each new folder and its parent; an empty
    /// folder found already there (an earlier run may have crashed before its parent
    /// fsync) is fsynced into its parent too, once per process; a folder holding an entry
    /// is not (whoever put the entry there made it durable first).
    #[tokio::test]
    async fn folders_on_the_way_are_made_durable() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let b = LocalBackend::new(&root).unwrap();
        b.put(
            &Key::new("stanzas/main/cluster/1").unwrap(),
            Bytes::from_static(b"c"),
            PutMode::Create,
        )
        .await
        .unwrap();
        for created in [
            root.clone(),
            root.join("stanzas"),
            root.join("stanzas/main"),
            root.join("stanzas/main/cluster"),
        ] {
            assert!(fsyncs_of(&created) >= 1, "{} itself", created.display());
            let parent = created.parent().unwrap();
            assert!(
                fsyncs_of(parent) >= 1,
                "{} into its parent",
                created.display()
            );
        }
        assert_eq!(fsyncs_of(dir.path().parent().unwrap()), 0, "above the root");

        // Left by a crashed run: the folder exists, empty, and its parent's entry may not
        // be durable. Its parent holds it: a crashed run made the parent durable before it
        // created anything in it, so the parent is not fsynced into the root again.
        let left = root.join("blobs").join("cd");
        std::fs::create_dir_all(&left).unwrap();
        let parent = root.join("blobs");
        assert_eq!(fsyncs_of(&parent), 0);
        let root_before = fsyncs_of(&root);
        b.put(
            &Key::new("blobs/cd/cdef").unwrap(),
            Bytes::from_static(b"b"),
            PutMode::Create,
        )
        .await
        .unwrap();
        assert_eq!(fsyncs_of(&parent), 1, "blobs/cd into blobs/");
        assert_eq!(
            fsyncs_of(&root),
            root_before,
            "blobs/ holds an entry: durable"
        );
        b.put(
            &Key::new("blobs/cd/cdeg").unwrap(),
            Bytes::from_static(b"b"),
            PutMode::Create,
        )
        .await
        .unwrap();
        assert_eq!(fsyncs_of(&parent), 1, "once per process");
        assert_eq!(
            fsyncs_of(&root),
            root_before,
            "blobs/ holds an entry: durable"
        );

        // Removed by someone else meanwhile: created again.
        std::fs::remove_dir_all(&left).unwrap();
        b.put(
            &Key::new("blobs/cd/cdeh").unwrap(),
            Bytes::from_static(b"b"),
            PutMode::Create,
        )
        .await
        .unwrap();
        assert_eq!(fsyncs_of(&parent), 2, "blobs/cd created again, into blobs/");

        // Found holding an entry: not fsynced into its parent (only itself, for the link).
        let full = root.join("blobs").join("ef");
        std::fs::create_dir_all(&full).unwrap();
        std::fs::write(full.join("efaa"), b"b").unwrap();
        b.put(
            &Key::new("blobs/ef/efab").unwrap(),
            Bytes::from_static(b"b"),
            PutMode::Create,
        )
        .await
        .unwrap();
        assert_eq!(fsyncs_of(&parent), 2, "blobs/ef holds an entry: durable");
        assert_eq!(fsyncs_of(&full), 1, "the link into blobs/ef");
    }

    fn backend() -> (tempfile::TempDir, LocalBackend) {
        let dir = tempfile::tempdir().unwrap();
        let b = LocalBackend::new(dir.path().join("repo")).unwrap();
        (dir, b)
    }

    /// `create_folders` makes the missing folders (and their parents), keeps what is
    /// there, and empty folders are no objects: listings stay as they were.
    #[tokio::test]
    async fn created_folders_are_empty_and_keep_what_is_there() {
        let (_dir, b) = backend();
        let kept = Key::new("blobs/ab/abcd").unwrap();
        b.put(&kept, Bytes::from_static(b"blob"), PutMode::Create)
            .await
            .unwrap();
        let folders: Vec<String> = ["blobs/ab", "blobs/cd", "blobs/ef"]
            .iter()
            .map(|f| f.to_string())
            .collect();
        b.create_folders(folders.clone()).await.unwrap();
        for f in &folders {
            assert!(b.root.join(f).is_dir(), "{f} created");
        }
        assert_eq!(b.get(&kept).await.unwrap(), Bytes::from_static(b"blob"));
        let listed: Vec<String> = b
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key.to_string())
            .collect();
        assert_eq!(listed, vec!["blobs/ab/abcd".to_string()]);
        // Again: nothing to do, nothing changes.
        b.create_folders(folders).await.unwrap();
        assert_eq!(b.list("").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn conformance_suite() {
        let (_dir, b) = backend();
        conformance::run_all(&b).await;
    }

    /// A temporary file is collected only when it is older than `STALE_TEMP_AGE` and its
    /// writer's process is gone: a fresh one, or an old one whose writer still runs, stays.
    #[tokio::test]
    async fn only_temporary_files_of_gone_writers_are_collected() {
        let (_dir, b) = backend();
        b.put(
            &Key::new("blobs/ab/abcd").unwrap(),
            Bytes::from_static(b"blob"),
            PutMode::Create,
        )
        .await
        .unwrap();
        // A process id that ran and is gone.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id() as i32;
        child.wait().unwrap();
        assert!(!process_runs(gone));
        let mine = std::process::id() as i32;
        assert!(process_runs(mine));

        let old = SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(60);
        let place = |rel: &str, body: &[u8], mtime: Option<SystemTime>| {
            let path = b.root().join(rel);
            std::fs::write(&path, body).unwrap();
            if let Some(t) = mtime {
                File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(t)
                    .unwrap();
            }
            path
        };
        // Not the repository's: never looked into.
        std::fs::create_dir(b.root().join("lost+found")).unwrap();
        let foreign = place(&format!("lost+found/.tmp-{gone}-0-0"), b"x", Some(old));
        let stale = place(&format!("blobs/.tmp-{gone}-0-1"), b"left", Some(old));
        let stale_deep = place(&format!("blobs/ab/.tmp-{gone}-1-2"), b"behind", Some(old));
        let fresh = place(&format!("blobs/.tmp-{gone}-2-3"), b"being written", None);
        let live = place(&format!("blobs/.tmp-{mine}-3-4"), b"slow writer", Some(old));

        let counted = b.stale_temp_files(false).await.unwrap();
        assert_eq!(counted.count, 2);
        assert_eq!(counted.bytes, 10);
        assert!(stale.exists(), "counting removes nothing");

        let removed = b.stale_temp_files(true).await.unwrap();
        assert_eq!(removed, counted);
        assert!(!stale.exists() && !stale_deep.exists());
        assert!(fresh.exists(), "a recent file may still be written");
        assert!(live.exists(), "its writer still runs");
        assert!(foreign.exists(), "outside the repository's folders");
        assert_eq!(
            b.get(&Key::new("blobs/ab/abcd").unwrap()).await.unwrap(),
            "blob"
        );
        assert_eq!(b.stale_temp_files(false).await.unwrap().count, 0);
    }

    #[test]
    fn temporary_names_carry_their_writer() {
        let name = temp_name();
        assert_eq!(temp_writer(&name), Some(std::process::id() as i32));
        assert_eq!(temp_writer(".tmp-x-1-2"), None);
        assert_eq!(temp_writer("abcd"), None);
    }

    #[tokio::test]
    async fn temporary_files_are_never_listed() {
        let (_dir, b) = backend();
        let key = Key::new("a/b").unwrap();
        b.put(&key, Bytes::from_static(b"x"), PutMode::Create)
            .await
            .unwrap();
        std::fs::write(b.root().join("a").join(".tmp-1-2-3"), b"partial").unwrap();
        let listed = b.list("").await.unwrap();
        assert_eq!(
            listed.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
            ["a/b"]
        );
    }

    #[tokio::test]
    async fn a_staged_body_is_removed_unless_published_and_never_replaces() {
        let (_dir, b) = backend();
        assert!(b.stage("blobs").is_none(), "no folder, no staging");
        assert!(!b.root().exists(), "asking for staging changed nothing");
        std::fs::create_dir_all(b.root().join("blobs")).unwrap();
        let temporaries = || {
            std::fs::read_dir(b.root().join("blobs"))
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with('.')
                })
                .count()
        };

        let mut dropped = b.stage("blobs").unwrap();
        dropped.write_all(b"abandoned").unwrap();
        assert_eq!(temporaries(), 1);
        drop(dropped);
        assert_eq!(temporaries(), 0);

        let key = Key::new("blobs/ab/c").unwrap();
        let record = Key::new("index/c").unwrap();
        // More than one write-back interval, to go through sync_file_range.
        let body = vec![7u8; 3 * STAGED_FLUSH_EVERY as usize + 11];
        let mut staged = b.stage("blobs").unwrap();
        staged.write_all(&body).unwrap();
        assert_eq!(staged.len(), body.len() as u64);
        let created = b
            .create_all_staged(
                (key.clone(), staged),
                vec![(record.clone(), Bytes::from_static(b"r"))],
            )
            .await
            .unwrap();
        assert_eq!(created, [true, true]);
        assert_eq!(b.get(&key).await.unwrap(), body);
        assert_eq!(temporaries(), 0);

        let mut second = b.stage("blobs").unwrap();
        second.write_all(b"other").unwrap();
        let created = b
            .create_all_staged((key.clone(), second), vec![])
            .await
            .unwrap();
        assert_eq!(created, [false]);
        assert_eq!(b.get(&key).await.unwrap(), body, "never replaced");
        assert_eq!(temporaries(), 0);
    }

    /// A local folder behind the trait's defaults: only the base operations are
    /// forwarded, so staging, `create_all`, `create_chain` and `create_is_exclusive` are
    /// the trait's own (what a store that takes bytes, one `put` at a time, gets).
    #[derive(Debug)]
    struct BytesOnly(LocalBackend);

    #[async_trait]
    impl Backend for BytesOnly {
        async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<()> {
            self.0.put(key, data, mode).await
        }
        async fn get(&self, key: &Key) -> Result<Bytes> {
            self.0.get(key).await
        }
        async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes> {
            self.0.get_range(key, range).await
        }
        async fn head(&self, key: &Key) -> Result<ObjectMeta> {
            self.0.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            self.0.list(prefix).await
        }
        async fn delete(&self, key: &Key) -> Result<()> {
            self.0.delete(key).await
        }
        async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn Upload>> {
            self.0.put_multipart(key, mode).await
        }
    }

    #[tokio::test]
    async fn other_stores_read_a_staged_body_back() {
        // The trait's default, used by stores that take bytes: `Retrying` forwards
        // staging to what it wraps, so check the default on a wrapper that does not.
        let (_dir, local) = backend();
        std::fs::create_dir_all(local.root().join("blobs")).unwrap();
        let mut staged = local.stage("blobs").unwrap();
        staged.write_all(b"body").unwrap();
        let bytes_only = BytesOnly(local.clone());
        assert!(bytes_only.stage("blobs").is_none());
        let key = Key::new("blobs/x/y").unwrap();
        let created = bytes_only
            .create_all_staged((key.clone(), staged), vec![])
            .await
            .unwrap();
        assert_eq!(created, [true]);
        assert_eq!(&local.get(&key).await.unwrap()[..], b"body");
    }

    /// `create_chain` stops at a gate item found taken, leaves it as it was, creates
    /// nothing after it and leaves no temporary file; items before the gate found taken
    /// do not stop it. The default (one `put` after another) answers the same.
    #[tokio::test]
    async fn a_chain_stops_at_a_taken_gate_and_leaves_nothing_after_it() {
        let (_dir, local) = backend();
        let in_turn = BytesOnly(local.clone());
        assert!(local.create_is_exclusive());
        assert!(!in_turn.create_is_exclusive());
        let key = |k: &str| Key::new(k).unwrap();
        let bytes = |b: &'static [u8]| Bytes::from_static(b);
        for (round, b) in [&local as &dyn Backend, &in_turn].into_iter().enumerate() {
            let p = |k: &str| format!("r{round}/{k}");
            b.put(&key(&p("blob")), bytes(b"old blob"), PutMode::Create)
                .await
                .unwrap();
            b.put(&key(&p("w/claim")), bytes(b"theirs"), PutMode::Create)
                .await
                .unwrap();
            let items = vec![
                (key(&p("blob")), bytes(b"new blob")),
                (key(&p("w/claim")), bytes(b"mine")),
                (key(&p("w/entry")), bytes(b"mine")),
            ];
            let created = b.create_chain(None, items, 1).await.unwrap();
            assert_eq!(created, [Some(false), Some(false), None], "round {round}");
            assert_eq!(&b.get(&key(&p("blob"))).await.unwrap()[..], b"old blob");
            assert_eq!(&b.get(&key(&p("w/claim"))).await.unwrap()[..], b"theirs");
            assert!(b.get(&key(&p("w/entry"))).await.unwrap_err().is_not_found());
            // A free gate: everything is created, in order.
            let items = vec![
                (key(&p("w/claim2")), bytes(b"mine")),
                (key(&p("w/entry2")), bytes(b"mine")),
            ];
            let created = b.create_chain(None, items, 0).await.unwrap();
            assert_eq!(created, [Some(true), Some(true)], "round {round}");
            assert_eq!(&b.get(&key(&p("w/entry2"))).await.unwrap()[..], b"mine");
        }
        // A staged first body before a taken gate: the blob is created, nothing after.
        std::fs::create_dir_all(local.root().join("blobs")).unwrap();
        let mut staged = local.stage("blobs").unwrap();
        staged.write_all(b"body").unwrap();
        let items = vec![
            (key("r0/w/claim"), bytes(b"mine")),
            (key("r0/w/entry3"), bytes(b"mine")),
        ];
        let created = local
            .create_chain(Some((key("blobs/s/t"), staged)), items, 1)
            .await
            .unwrap();
        assert_eq!(created, [Some(true), Some(false), None]);
        assert_eq!(&local.get(&key("blobs/s/t")).await.unwrap()[..], b"body");
        let leftovers: Vec<_> = walk(local.root())
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".tmp-")
            })
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walk(&path));
            } else {
                out.push(path);
            }
        }
        out
    }

    #[test]
    fn relative_roots_are_refused() {
        assert!(LocalBackend::new("relative/path").is_err());
    }
}
