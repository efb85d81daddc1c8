//! Restoring a backup into an empty data directory: [`prepare`] picks the backup and
//! checks everything (file list, targets) without writing; [`Prepared::run`] writes.
//!
//! How it writes, and why:
//!
//! - Files are cut into chunks at fixed offsets, so chunks are independent: a bounded
//!   number of them are fetched concurrently, in batches, and each batch is decoded,
//!   verified and written with `pwrite` at its offsets on the blocking pool (batches of
//!   two chunks per core at a time, so that one is decoded while another waits on the
//!   disk), which keeps every core busy even under the agent's single-threaded runtime.
//!   Memory stays at one stored chunk per chunk in flight plus one batch's buffer per
//!   decoder, whatever the size of the backup. The file list is read a page at a time
//!   (see [`layout`]): checked whole by [`prepare`], then written page by page.
//! - Batches in flight come from different files (see `Jobs`): buffered writes to one
//!   file take its inode lock, and a second writer of the same file spins on it. A batch
//!   holds consecutive chunks, written with one call where they are of one file. Files
//!   are created by one thread running ahead of the chunks (a directory's lock again),
//!   the large direct ones with their blocks allocated (see `allocate_blocks`).
//! - Every chunk is verified (frames, length, SHA-256) before the restore can succeed:
//!   [`Repo::read_blob`]'s checks, with one ranged read per chunk instead of a size
//!   request plus a read, and the decoding on the blocking pool. Buffered chunks reach
//!   the target file while they are being decoded, before the hash is checked: the data
//!   directory is not usable until the restore reports success, and on any failure
//!   everything the restore created is removed, so nothing unverified is ever left behind.
//! - Files whose size is a multiple of 4 KiB (PostgreSQL's relation files: nearly all the
//!   bytes) are written with `O_DIRECT`: no copy into the page cache, which was the
//!   largest item of the restore's CPU, and write-back that cannot lag behind (same
//!   800 MiB, alternating runs: 1.21-1.43 s against 2.17-2.57 s buffered). Their chunks
//!   go to the blocking pool in batches of [`multihash::LANES`]: each is decoded into an
//!   aligned buffer (frames decompressed where they land, no intermediate copy), the batch
//!   is hashed as that many SHA-256 streams interleaved on one core (nearly twice the
//!   throughput of one stream; SHA-256 was half the restore's CPU), and the batch is
//!   written once it is all verified. Other files, and file systems without
//!   `O_DIRECT` (tmpfs), are written buffered, chunk by chunk.
//! - Durability: every file is fsynced once it is finished, in groups (see `Unsynced`:
//!   fsyncs taken together share their metadata writes), and every directory at the end
//!   ([`SyncMode::FsyncEach`], the default). Each chunk's write-back is started as soon
//!   as it is written (`sync_file_range`, as PostgreSQL's `pg_flush_data` does), so the
//!   disk works while later chunks are decoded and the fsyncs find little left to wait
//!   for. Measured with `examples/restore_speed.rs` (800 MiB in 1090 files, ext4 on
//!   virtio, alternating runs): fsync-each with write-back 1.7-2.3 s, one `syncfs(2)` at
//!   the end ([`SyncMode::SyncFs`]) 2.5-2.6 s in the same minutes; without the early
//!   write-back fsync-each had been about a third slower than syncfs. syncfs also flushes
//!   whatever else is dirty on the file system (a running server's pages: 1.6 s became
//!   3.1-3.4 s with 1 GB of someone else's dirty data) and reports write-back errors only
//!   since Linux 5.8, so it is kept as an option only.
//! - `backup_manifest` (PostgreSQL's own, from its chunks in the repository) is written
//!   first; the recovery settings in `postgresql.auto.conf` and an empty
//!   `recovery.signal` are written last.
//!
//! The targets (the data directory and each tablespace's directory) must be absent or
//! empty at the start, so undoing a failed restore means putting them back to that. It
//! removes only what this run created (see `Ledger`): targets are created with a `mkdir`
//! that fails when they exist (an existing one is accepted only if empty), every entry
//! with a create that fails when its name is taken, so a folder that appeared meanwhile,
//! or another restore's data directory in the same path, is never removed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;
use tidemark_store::backup::BackupRecord;
use tidemark_store::catalog::{self, Stanza};
use tidemark_store::codec::{self, BlobDecoder};
use tidemark_store::multihash;
use tidemark_store::{Digest, Repo};

use crate::autoconf::{self, ArchiveMode};
use crate::layout::{self, entry_name, FileNode, Layout, PageFiles, Root};
use crate::{Error, Result};

/// What to restore, and where.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    /// The backup's id; `None` for the newest.
    pub backup: Option<String>,
    /// The data directory to create (absolute; absent or empty).
    pub pgdata: PathBuf,
    /// Tablespaces to put somewhere else than their original location (absolute
    /// directories, absent or empty).
    pub tablespace_map: BTreeMap<u32, PathBuf>,
    /// The `restore_command` to write into `postgresql.auto.conf` (see
    /// [`autoconf::restore_command`]).
    pub restore_command: String,
    /// Whether the restored cluster archives (default: it does not).
    pub archive_mode: ArchiveMode,
    /// The recovery target settings to write (a plan's, checked; see
    /// [`autoconf::TargetSettings`]).
    pub targets: autoconf::TargetSettings,
}

/// How the restore makes its writes durable before it reports success.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SyncMode {
    /// One `syncfs(2)` per target file system at the end (flushes other dirty data of
    /// the file system too; see the module docs).
    SyncFs,
    /// `fsync` every file as it is finished (its write-back started chunk by chunk) and
    /// every directory at the end: the default.
    FsyncEach,
}

/// Counters a caller can read while a restore runs (to draw progress).
#[derive(Debug, Default)]
pub struct Progress {
    total_bytes: AtomicU64,
    done_bytes: AtomicU64,
    total_files: AtomicU64,
    done_files: AtomicU64,
    interrupted: AtomicBool,
}

impl Progress {
    /// Bytes written so far and the total to write (0 until the file list is read).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.done_bytes.load(Ordering::Relaxed),
            self.total_bytes.load(Ordering::Relaxed),
        )
    }

    /// Asks the restore to stop (a signal): it stops at the next chunk, removes what it
    /// wrote, and fails with [`Error::Interrupted`].
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::Relaxed);
    }

    fn check_interrupted(&self) -> Result<()> {
        if self.interrupted.load(Ordering::Relaxed) {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Files finished so far and the total.
    pub fn files(&self) -> (u64, u64) {
        (
            self.done_files.load(Ordering::Relaxed),
            self.total_files.load(Ordering::Relaxed),
        )
    }
}

/// A tablespace and where it was restored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestoredTablespace {
    /// Its OID.
    pub oid: u32,
    /// Its directory (the target of `pg_tblspc/<oid>`).
    pub path: PathBuf,
}

/// What a restore did.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    /// The backup's id.
    pub backup: String,
    /// Its label.
    pub label: String,
    /// When it started.
    pub backup_start_time: chrono::DateTime<chrono::Utc>,
    /// When it stopped (the restored cluster is consistent from WAL past this point).
    pub backup_stop_time: chrono::DateTime<chrono::Utc>,
    /// Where WAL replay starts.
    pub start_lsn: String,
    /// Where the backup becomes consistent.
    pub stop_lsn: String,
    /// The data directory.
    pub pgdata: PathBuf,
    /// The tablespaces.
    pub tablespaces: Vec<RestoredTablespace>,
    /// Regular files written.
    pub files: u64,
    /// Directories created.
    pub directories: u64,
    /// Bytes of the files.
    pub bytes: u64,
    /// Chunks read and verified.
    pub chunks: u64,
    /// Wall-clock seconds, from [`prepare`] to the end.
    pub seconds: f64,
    /// How the writes were made durable.
    pub sync: SyncMode,
    /// The restore_command written into `postgresql.auto.conf`.
    pub restore_command: String,
    /// Whether the restored cluster archives: `off` (written into
    /// `postgresql.auto.conf`) or `preserve` (the backup's settings).
    pub archive_mode: ArchiveMode,
    /// Lines of the backup's `postgresql.auto.conf` that set recovery settings, commented
    /// out (see [`autoconf::RECOVERY_SETTINGS`]).
    pub removed_settings: Vec<String>,
    /// The backup's timeline.
    pub timeline: u32,
    /// The recovery target settings written into `postgresql.auto.conf`.
    pub recovery_target: autoconf::TargetSettings,
    /// Unreadable backup records skipped when choosing the newest backup.
    pub skipped_backups: Vec<SkippedBackup>,
}

/// A restore that passed every check and has not written anything yet.
#[derive(Debug)]
pub struct Prepared {
    record: BackupRecord,
    layout: Arc<Layout>,
    targets: Vec<Target>,
    restore_command: String,
    archive_mode: ArchiveMode,
    recovery_target: autoconf::TargetSettings,
    skipped: Vec<SkippedBackup>,
    sync: SyncMode,
    in_flight: usize,
    /// When [`prepare`] began: the report's time covers reading the file list too.
    began: Instant,
}

/// A target directory (checked absent or empty by [`prepare`]; claimed again by
/// [`Prepared::run`], see [`Ledger`]).
#[derive(Clone, Debug)]
struct Target {
    root: Root,
    path: PathBuf,
}

/// Chunks in flight by default: enough to keep a local repository and every core busy,
/// few enough to bound memory (about one stored chunk each, plus the buffers of the
/// chunks being decoded). A remote repository wants more ([`Prepared::with_in_flight`]).
pub fn in_flight() -> usize {
    2 * cores() + 2
}

/// Batches decoded and written at once: two per core and two more. A direct write holds
/// its thread until the disk has the data, so with one decoder per core the cores idle
/// during every write; with twice as many, one batch is decoded while another is being
/// written. Measured on the bench database (800 MiB, 2 cores, alternating runs, one chunk
/// per decoder then): 3 at a time 1.07-1.21 s, 6 at a time 0.82-0.94 s; 8 and 12 no
/// better than 6.
fn decoders() -> usize {
    2 * cores() + 2
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Picks the backup, reads and checks its file list and the targets. Writes nothing.
pub async fn prepare(repo: &Repo, stanza: &Stanza, request: &RestoreRequest) -> Result<Prepared> {
    let began = Instant::now();
    let (record, skipped) = pick_backup(repo, stanza, request.backup.as_deref()).await?;
    let list = repo
        .backup_files(&record)
        .await
        .map_err(|source| Error::FileList {
            backup: record.id.clone(),
            what: format!("its file list ({})", catalog::blob_key(&record.file_list)),
            source,
        })?;
    // The whole list is checked before anything is written, a page at a time; the
    // pages are read again as their files are written.
    let mut checker = layout::Checker::new(&record)?;
    for (i, page) in list.pages.iter().enumerate() {
        checker.add_page(read_page(repo, &record.id, i, list.pages.len(), page).await?)?;
    }
    let layout = checker.finish(list)?;
    let targets = check_targets(&record, request)?;
    Ok(Prepared {
        record,
        layout: Arc::new(layout),
        targets,
        restore_command: request.restore_command.clone(),
        archive_mode: request.archive_mode,
        recovery_target: request.targets.clone(),
        skipped,
        sync: SyncMode::FsyncEach,
        in_flight: in_flight(),
        began,
    })
}

/// [`prepare`], then [`Prepared::run`].
pub async fn restore(
    repo: &Repo,
    stanza: &Stanza,
    request: &RestoreRequest,
    progress: &Arc<Progress>,
) -> Result<RestoreReport> {
    prepare(repo, stanza, request)
        .await?
        .run(repo, progress)
        .await
}

/// Page `index` (of `pages`) of a backup's file list, its failures naming the backup and
/// the page.
async fn read_page(
    repo: &Repo,
    backup: &str,
    index: usize,
    pages: usize,
    digest: &Digest,
) -> Result<tidemark_store::backup::FileListPage> {
    repo.file_list_page(digest)
        .await
        .map_err(|source| Error::FileList {
            backup: backup.to_string(),
            what: format!(
                "page {} of {pages} of its file list ({})",
                index + 1,
                catalog::blob_key(digest)
            ),
            source,
        })
}

/// A backup record that cannot be read, skipped when choosing the newest backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedBackup {
    /// Its id.
    pub id: String,
    /// Why its record cannot be read.
    pub error: String,
}

/// The backup asked for (its record must be readable), or the newest readable one with
/// the unreadable records that were skipped.
async fn pick_backup(
    repo: &Repo,
    stanza: &Stanza,
    id: Option<&str>,
) -> Result<(BackupRecord, Vec<SkippedBackup>)> {
    if let Some(id) = id {
        if let Some(record) = repo.backup(stanza, id).await? {
            return Ok((record, Vec::new()));
        }
    }
    let all = repo.backups(stanza).await?;
    let skipped = all
        .damaged
        .iter()
        .map(|d| SkippedBackup {
            id: d.id.clone(),
            error: d.error.to_string(),
        })
        .collect();
    match id {
        None => match all.records.into_iter().last() {
            Some(newest) => Ok((newest, skipped)),
            None => Err(Error::NoBackups {
                stanza: stanza.to_string(),
            }),
        },
        Some(id) => Err(Error::UnknownBackup {
            id: id.to_string(),
            stanza: stanza.to_string(),
            available: all.records.into_iter().map(|r| r.id).collect(),
        }),
    }
}

/// True for an absolute path without `.` or `..` components.
fn is_clean_absolute(path: &Path) -> bool {
    path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

fn check_targets(record: &BackupRecord, request: &RestoreRequest) -> Result<Vec<Target>> {
    let usage = |s: String| Error::Usage(s);
    if !is_clean_absolute(&request.pgdata) {
        return Err(usage(format!(
            "the data directory {} must be an absolute path without . or ..",
            request.pgdata.display()
        )));
    }
    let known: BTreeSet<u32> = record.tablespaces.iter().map(|t| t.oid).collect();
    for (oid, dir) in &request.tablespace_map {
        if !known.contains(oid) {
            let has = if known.is_empty() {
                "it has none".to_string()
            } else {
                format!(
                    "it has {}",
                    known
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(usage(format!(
                "--tablespace-map {oid}: backup {} has no tablespace {oid} ({has})",
                record.id
            )));
        }
        if !is_clean_absolute(dir) {
            return Err(usage(format!(
                "--tablespace-map {oid}={}: the directory must be an absolute path without . or ..",
                dir.display()
            )));
        }
    }
    let mut wanted = vec![(Root::Data, request.pgdata.clone())];
    for ts in &record.tablespaces {
        let path = match request.tablespace_map.get(&ts.oid) {
            Some(dir) => dir.clone(),
            None => {
                let original = PathBuf::from(&ts.location);
                if !is_clean_absolute(&original) {
                    return Err(Error::BadRecord {
                        backup: record.id.clone(),
                        detail: format!(
                            "tablespace {} has location {:?}, not a clean absolute path: choose one with --tablespace-map {}=DIR",
                            ts.oid, ts.location, ts.oid
                        ),
                    });
                }
                original
            }
        };
        wanted.push((Root::Tablespace(ts.oid), path));
    }
    for (i, (ra, a)) in wanted.iter().enumerate() {
        for (rb, b) in &wanted[i + 1..] {
            if a.starts_with(b) || b.starts_with(a) {
                return Err(usage(format!(
                    "the {ra} ({}) and the {rb} ({}) overlap: give each its own directory (--pgdata, --tablespace-map OID=DIR)",
                    a.display(),
                    b.display()
                )));
            }
        }
    }
    wanted
        .into_iter()
        .map(|(root, path)| {
            check_target(&path)?;
            Ok(Target { root, path })
        })
        .collect()
}

/// Checks that `path` is an empty directory (returns its mode) or absent (returns `None`)
/// and that its nearest existing ancestor is a directory.
fn check_target(path: &Path) -> Result<Option<u32>> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let mut entries = fs::read_dir(path).map_err(|e| Error::io("read", path, e))?;
            if entries.next().is_some() {
                return Err(Error::TargetNotEmpty {
                    path: path.to_path_buf(),
                });
            }
            Ok(Some(meta.permissions().mode() & 0o7777))
        }
        Ok(_) => Err(Error::Usage(format!(
            "{} exists and is not a directory",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut top = path.to_path_buf();
            loop {
                let parent = top
                    .parent()
                    .expect("an absolute path has a parent")
                    .to_path_buf();
                match fs::metadata(&parent) {
                    Ok(meta) if meta.is_dir() => break,
                    Ok(_) => {
                        return Err(Error::Usage(format!(
                            "cannot create {}: {} is not a directory",
                            path.display(),
                            parent.display()
                        )))
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => top = parent,
                    Err(e) => return Err(Error::io("stat", parent, e)),
                }
            }
            Ok(None)
        }
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

/// What this run created, so that a failed restore removes exactly that: never a folder
/// that appeared between [`prepare`] and the writing (another process's, or another
/// restore's into the same path), never an entry someone else put into a target.
///
/// Every target is created with a `mkdir` that fails when the path exists (and so is
/// each missing directory above it); when it exists, it is accepted only if it is an
/// empty directory, as in [`prepare`], and then the entries the restore creates at its
/// top level are recorded one by one as they are created (each with a create that fails
/// when the name is taken). Below those, everything is the restore's.
#[derive(Debug, Default)]
struct Ledger(Mutex<Vec<Claim>>);

/// How one target was claimed, and what the restore created for it.
#[derive(Debug)]
struct Claim {
    target: PathBuf,
    /// The directories created above the target, outermost first.
    ancestors: Vec<PathBuf>,
    /// Whether this run created the target itself.
    created: bool,
    /// When the target was found empty instead: its mode before the restore, and the
    /// entries of its top level this run created.
    found_empty: Option<u32>,
    entries: Vec<PathBuf>,
}

impl Ledger {
    /// Creates `target` (and the missing directories above it) or accepts it as an
    /// existing empty directory; records what it created as it goes.
    fn claim(&self, target: &Path) -> Result<()> {
        let index = {
            let mut claims = self.0.lock().expect("ledger");
            claims.push(Claim {
                target: target.to_path_buf(),
                ancestors: Vec::new(),
                created: false,
                found_empty: None,
                entries: Vec::new(),
            });
            claims.len() - 1
        };
        let record = |f: &mut dyn FnMut(&mut Claim)| f(&mut self.0.lock().expect("ledger")[index]);
        let mut missing = Vec::new();
        let mut above = target.parent();
        while let Some(dir) = above {
            match fs::metadata(dir) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(dir),
                Err(e) => return Err(Error::io("stat", dir, e)),
            }
            above = dir.parent();
        }
        for dir in missing.into_iter().rev() {
            match fs::create_dir(dir) {
                Ok(()) => record(&mut |c| c.ancestors.push(dir.to_path_buf())),
                // Created meanwhile by someone else: usable, and not ours to remove.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) => return Err(Error::io("create", dir, e)),
            }
        }
        match fs::DirBuilder::new().mode(0o700).create(target) {
            Ok(()) => record(&mut |c| c.created = true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // It appeared after `prepare`: as there, only an empty directory will do.
                let Some(mode) = check_target(target)? else {
                    return Err(Error::io("create", target, e));
                };
                record(&mut |c| c.found_empty = Some(mode));
                fs::set_permissions(target, fs::Permissions::from_mode(0o700))
                    .map_err(|e| Error::io("chmod", target, e))?;
            }
            Err(e) => return Err(Error::io("create", target, e)),
        }
        Ok(())
    }

    /// Records `path`, just created by this run, when it lies at the top level of a
    /// target that was found empty (everything else is inside something the run created).
    fn created(&self, path: &Path) {
        let Some(parent) = path.parent() else { return };
        let mut claims = self.0.lock().expect("ledger");
        if let Some(claim) = claims
            .iter_mut()
            .find(|c| c.found_empty.is_some() && c.target == parent)
        {
            claim.entries.push(path.to_path_buf());
        }
    }

    /// The directories whose entries make `target` reachable and must be fsynced: the
    /// directories created above it and the one that holds the outermost of them (or
    /// the target).
    fn reachable_by(&self, target: &Path) -> Vec<PathBuf> {
        let claims = self.0.lock().expect("ledger");
        let mut dirs = Vec::new();
        let mut outermost = target.to_path_buf();
        if let Some(claim) = claims.iter().find(|c| c.target == target) {
            dirs.extend(claim.ancestors.iter().cloned());
            if let Some(first) = claim.ancestors.first() {
                outermost = first.clone();
            }
        }
        dirs.extend(outermost.parent().map(Path::to_path_buf));
        dirs
    }

    /// Removes what this run created: a target it created with everything in it, the
    /// directories it created above (only if empty: anything another process put there
    /// stays); in a target found empty, only the entries the run created, and the
    /// target's mode is put back. Returns the first path it could not remove.
    fn undo(&self) -> std::result::Result<(), (PathBuf, io::Error)> {
        let claims = self.0.lock().expect("ledger");
        for claim in claims.iter() {
            if claim.created {
                remove_tree(&claim.target)?;
            }
            if let Some(mode) = claim.found_empty {
                for entry in &claim.entries {
                    remove_tree(entry)?;
                }
                match fs::set_permissions(&claim.target, fs::Permissions::from_mode(mode)) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err((claim.target.clone(), e))
                    }
                    _ => {}
                }
            }
            for dir in claim.ancestors.iter().rev() {
                match fs::remove_dir(dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    // Someone else's files are in it now: it stays, with them.
                    Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => break,
                    Err(e) => return Err((dir.clone(), e)),
                }
            }
        }
        Ok(())
    }
}

impl Prepared {
    /// The backup that will be restored.
    pub fn record(&self) -> &BackupRecord {
        &self.record
    }

    /// The unreadable backup records skipped when choosing the newest backup (none when a
    /// backup was asked for by id): the caller warns about each.
    pub fn skipped(&self) -> &[SkippedBackup] {
        &self.skipped
    }

    /// What will be created.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Chooses how writes are made durable (default [`SyncMode::FsyncEach`]).
    pub fn with_sync(mut self, sync: SyncMode) -> Prepared {
        self.sync = sync;
        self
    }

    /// Chooses how many chunks are fetched at once (default [`in_flight`]); decoding stays
    /// at two chunks per core (and two more) whatever this is.
    pub fn with_in_flight(mut self, n: usize) -> Prepared {
        self.in_flight = n.max(1);
        self
    }

    /// Writes the backup into the targets, durably; on failure removes everything it
    /// created and returns the error.
    pub async fn run(self, repo: &Repo, progress: &Arc<Progress>) -> Result<RestoreReport> {
        progress
            .total_bytes
            .store(self.layout.bytes, Ordering::Relaxed);
        progress
            .total_files
            .store(self.layout.files, Ordering::Relaxed);
        let ledger = Arc::new(Ledger::default());
        match self.write(repo, progress, &ledger).await {
            Ok(removed) => Ok(self.report(self.began.elapsed(), removed)),
            Err(cause) => {
                let cleanup = tokio::task::spawn_blocking(move || ledger.undo())
                    .await
                    .expect("clean-up panicked");
                match cleanup {
                    Ok(()) => Err(cause),
                    Err((path, source)) => Err(Error::CleanupFailed {
                        cause: Box::new(cause),
                        path,
                        source,
                    }),
                }
            }
        }
    }

    fn root_path(&self, root: Root) -> &Path {
        &self
            .targets
            .iter()
            .find(|t| t.root == root)
            .expect("every root has a target")
            .path
    }

    fn pgdata(&self) -> &Path {
        self.root_path(Root::Data)
    }

    fn report(&self, elapsed: Duration, removed_settings: Vec<String>) -> RestoreReport {
        let r = &self.record;
        RestoreReport {
            backup: r.id.clone(),
            label: r.label.clone(),
            backup_start_time: r.start_time,
            backup_stop_time: r.stop_time,
            start_lsn: r.start_lsn.to_string(),
            stop_lsn: r.stop_lsn.to_string(),
            pgdata: self.pgdata().to_path_buf(),
            tablespaces: self
                .targets
                .iter()
                .filter_map(|t| match t.root {
                    Root::Tablespace(oid) => Some(RestoredTablespace {
                        oid,
                        path: t.path.clone(),
                    }),
                    Root::Data => None,
                })
                .collect(),
            files: self.layout.files,
            directories: self.layout.dirs.len() as u64,
            bytes: self.layout.bytes,
            chunks: self.layout.chunks,
            seconds: elapsed.as_secs_f64(),
            sync: self.sync,
            restore_command: self.restore_command.clone(),
            archive_mode: self.archive_mode,
            removed_settings,
            timeline: r.timeline.0,
            recovery_target: self.recovery_target.clone(),
            skipped_backups: self.skipped.clone(),
        }
    }

    /// Writes everything; returns the lines of `postgresql.auto.conf` it commented out.
    async fn write(
        &self,
        repo: &Repo,
        progress: &Arc<Progress>,
        ledger: &Arc<Ledger>,
    ) -> Result<Vec<String>> {
        // The skeleton: targets, directories (0700 while files go in), links. Every
        // create fails when its name is taken, so what the ledger records is this run's.
        for t in &self.targets {
            ledger.claim(&t.path)?;
        }
        for d in &self.layout.dirs {
            let path = self.root_path(d.root).join(&d.path);
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .map_err(|e| Error::io("create", &path, e))?;
            ledger.created(&path);
        }
        for &oid in &self.layout.links {
            let target = self.root_path(Root::Tablespace(oid));
            let link = self.pgdata().join("pg_tblspc").join(oid.to_string());
            std::os::unix::fs::symlink(target, &link)
                .map_err(|e| Error::io("symlink", &link, e))?;
        }

        // PostgreSQL's manifest first: small, and a missing one fails the restore early.
        let manifest = self.pgdata().join("backup_manifest");
        let mut out = create_new(&manifest, 0o600)?;
        ledger.created(&manifest);
        let mut written = 0;
        for (index, chunk) in self.layout.pg_manifest.chunks.iter().enumerate() {
            written += repo
                .read_blob(chunk, &mut out)
                .await
                .map_err(|source| Error::Chunk {
                    path: "backup_manifest".into(),
                    index: index as u64,
                    source,
                })?;
        }
        if written != self.layout.pg_manifest.size {
            return Err(Error::BadRecord {
                backup: self.record.id.clone(),
                detail: format!(
                    "its backup_manifest's chunks hold {written} bytes, not the {} the list says",
                    self.layout.pg_manifest.size
                ),
            });
        }
        self.finish_small_file(&manifest, out)?;

        // The files, a page of the list at a time: memory holds one page whatever the
        // size of the backup.
        for (i, page) in self.layout.pages.iter().enumerate() {
            progress.check_interrupted()?;
            let pages = self.layout.pages.len();
            let page = read_page(repo, &self.record.id, i, pages, page).await?;
            let files = self.layout.page_files(page)?;
            if !files.files.is_empty() {
                self.write_files(repo, progress, ledger, Arc::new(files))
                    .await?;
            }
        }
        progress.check_interrupted()?;

        // Recovery settings.
        let auto_conf = self.pgdata().join(layout::AUTO_CONF);
        let (existing, mode) = match fs::read(&auto_conf) {
            Ok(bytes) => {
                let mode = fs::metadata(&auto_conf)
                    .map_err(|e| Error::io("stat", &auto_conf, e))?
                    .permissions()
                    .mode();
                (bytes, mode & 0o7777)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (Vec::new(), 0o600),
            Err(e) => return Err(Error::io("read", &auto_conf, e)),
        };
        let block = autoconf::recovery_block(
            &self.record.id,
            chrono::Utc::now(),
            &self.restore_command,
            &self.recovery_target,
            self.archive_mode,
        );
        let (existing, removed) = autoconf::without_recovery_settings(&existing);
        let staged = self.pgdata().join("postgresql.auto.conf.tidemark");
        let mut out = create_new(&staged, mode)?;
        ledger.created(&staged);
        out.write_all(&autoconf::append_block(&existing, &block))
            .map_err(|e| Error::io("write", &staged, e))?;
        self.finish_small_file(&staged, out)?;
        fs::rename(&staged, &auto_conf).map_err(|e| Error::io("rename", &auto_conf, e))?;
        ledger.created(&auto_conf);
        let signal = self.pgdata().join("recovery.signal");
        let out = create_new(&signal, 0o600)?;
        ledger.created(&signal);
        self.finish_small_file(&signal, out)?;

        // Directory modes and times, children before parents (a parent may become
        // read-only), then durability.
        let fsync_each = self.sync == SyncMode::FsyncEach;
        for d in self.layout.dirs.iter().rev() {
            let path = self.root_path(d.root).join(&d.path);
            let dir = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
            if let Some(mtime) = d.mtime {
                dir.set_modified(system_time(mtime))
                    .map_err(|e| Error::io("set the time of", &path, e))?;
            }
            dir.set_permissions(fs::Permissions::from_mode(d.mode))
                .map_err(|e| Error::io("chmod", &path, e))?;
            if fsync_each {
                dir.sync_all().map_err(|e| Error::io("fsync", &path, e))?;
            }
        }
        match self.sync {
            SyncMode::FsyncEach => {
                for t in &self.targets {
                    let mut dirs = vec![t.path.clone()];
                    if t.root == Root::Data && !self.layout.links.is_empty() {
                        dirs.push(t.path.join("pg_tblspc"));
                    }
                    // The entries that make the target itself reachable.
                    dirs.extend(ledger.reachable_by(&t.path));
                    for dir in dirs {
                        File::open(&dir)
                            .and_then(|d| d.sync_all())
                            .map_err(|e| Error::io("fsync", &dir, e))?;
                    }
                }
            }
            SyncMode::SyncFs => {
                let mut seen = BTreeSet::new();
                for t in &self.targets {
                    let dir = File::open(&t.path).map_err(|e| Error::io("open", &t.path, e))?;
                    let dev = dir
                        .metadata()
                        .map_err(|e| Error::io("stat", &t.path, e))?
                        .dev();
                    if seen.insert(dev) {
                        syncfs(&dir).map_err(|e| Error::io("syncfs", &t.path, e))?;
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Syncs a small file the restore writes itself when files are synced one by one.
    fn finish_small_file(&self, path: &Path, file: File) -> Result<()> {
        if self.sync == SyncMode::FsyncEach {
            file.sync_all().map_err(|e| Error::io("fsync", path, e))?;
        }
        Ok(())
    }

    /// Writes the files of one page of the list.
    async fn write_files(
        &self,
        repo: &Repo,
        progress: &Arc<Progress>,
        ledger: &Arc<Ledger>,
        page: Arc<PageFiles>,
    ) -> Result<()> {
        let files: Arc<Vec<OpenFile>> = Arc::new(
            page.files
                .iter()
                .map(|f| OpenFile {
                    path: self.root_path(f.root).join(&f.path),
                    file: Mutex::new(None),
                    remaining: AtomicU64::new(f.chunks.len().max(1) as u64),
                })
                .collect(),
        );
        let cancelled = Arc::new(AtomicBool::new(false));
        let chunk_size = page.chunk_size;
        // Chunks go to the blocking pool in batches of `multihash::LANES`, verified
        // together (see `write_batch`). Enough batches are in flight for every decoder,
        // and for `in_flight` chunks when that is more (a remote repository).
        let batch = multihash::LANES;
        let batches_in_flight = decoders().max(self.in_flight.div_ceil(batch));
        // One lane per batch in flight, a batch's worth of consecutive jobs at a time:
        // batches in flight are from different places, mostly different files, and a
        // batch holds neighbouring chunks that are written with one call.
        let jobs = Jobs::new(&page.files, batches_in_flight, batch);
        // Files are created by one thread, ahead of the chunks, in the order the chunks
        // need them. Creating takes the directory's lock: creators on several threads
        // mostly spin on it, burning the cores the chunks need (and on ext4 without a
        // journal a create can cost a scan past recently freed inodes). Chunks only open
        // files that exist, waiting for the creator when they get ahead of it.
        let creator = Arc::new(Creator::new(jobs.iter(), files.len()));
        let creating = {
            let (creator, files, cancelled, ledger) = (
                creator.clone(),
                files.clone(),
                cancelled.clone(),
                ledger.clone(),
            );
            let sizes: Vec<(u64, bool)> = page
                .files
                .iter()
                .map(|f| {
                    let allocate = f.size >= chunk_size && direct_io_fits(f.size, chunk_size);
                    (f.size, allocate)
                })
                .collect();
            tokio::task::spawn_blocking(move || creator.run(&files, &sizes, &cancelled, &ledger))
        };
        // Fetching waits on the repository, decoding and writing on the cores and the
        // disk: many chunks may be fetched at once (a remote store needs that), but only
        // `decoders()` batches are decoded and written at a time, which bounds their
        // buffers.
        let decoders = tokio::sync::Semaphore::new(decoders());
        let buffers = Arc::new(BufferPool::default());
        let unsynced = Arc::new(Unsynced::default());
        let mut done = futures::stream::iter(jobs.iter())
            .chunks(batch)
            .map(|batch| {
                let (files, cancelled, progress, creator, buffers, unsynced) = (
                    files.clone(),
                    cancelled.clone(),
                    progress.clone(),
                    creator.clone(),
                    buffers.clone(),
                    unsynced.clone(),
                );
                let page = page.clone();
                let decoders = &decoders;
                let sync_each = self.sync == SyncMode::FsyncEach;
                let record_id = self.record.id.as_str();
                async move {
                    if cancelled.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    progress.check_interrupted()?;
                    let fetches = batch.iter().map(|&(f, i)| {
                        let node = &page.files[f];
                        async move {
                            let Some(digest) = node.chunks.get(i) else {
                                return Ok(None); // an empty file
                            };
                            let len = chunk_len(node.size, chunk_size, i as u64);
                            match fetch_chunk(repo, digest, len).await {
                                Ok(stored) => Ok(Some((*digest, stored, len))),
                                Err(source) => Err(Error::Chunk {
                                    path: entry_name(node.root, &node.path),
                                    index: i as u64,
                                    source,
                                }),
                            }
                        }
                    });
                    let chunks = futures::future::try_join_all(fetches).await?;
                    let record_id = record_id.to_string();
                    let _decoding = decoders.acquire().await.expect("never closed");
                    tokio::task::spawn_blocking(move || {
                        let writer = ChunkWriter {
                            backup: &record_id,
                            page: &page,
                            files: &files,
                            chunk_size,
                            sync_each,
                            progress: &progress,
                            buffers: &buffers,
                            unsynced: &unsynced,
                        };
                        writer.write_batch(&batch, chunks, &creator, &cancelled)
                    })
                    .await
                    .expect("chunk writer panicked")
                }
            })
            .buffer_unordered(batches_in_flight);
        // Drain every job even after a failure (they return at once), so that nothing is
        // still writing when the caller cleans up.
        let mut first_error = None;
        while let Some(result) = done.next().await {
            if let Err(e) = result {
                cancelled.store(true, Ordering::Relaxed);
                first_error.get_or_insert(e);
            }
        }
        // The creator stops at a failure or a cancellation; its own error is the cause of
        // the chunks that gave up waiting for it.
        let created = creating.await.expect("file creation panicked");
        if created.is_ok() && first_error.is_none() {
            // The files of the last, unfilled group.
            let (unsynced, files) = (unsynced.clone(), files.clone());
            if let Err(e) = tokio::task::spawn_blocking(move || unsynced.finish(&files))
                .await
                .expect("fsync panicked")
            {
                first_error = Some(e);
            }
        }
        created.and(first_error.map_or(Ok(()), Err))
    }
}

/// Creates the files (empty, at their size) on one thread, in the order the chunks need
/// them, and lets chunk writers wait for theirs.
struct Creator {
    /// Files in creation order.
    order: Vec<usize>,
    /// Each file's position in `order`.
    rank: Vec<usize>,
    /// How many of `order` exist, and whether creation stopped early.
    state: Mutex<(usize, bool)>,
    wake: std::sync::Condvar,
}

impl Creator {
    fn new(jobs: impl Iterator<Item = (usize, usize)>, files: usize) -> Creator {
        let mut rank = vec![usize::MAX; files];
        let mut order = Vec::with_capacity(files);
        for (f, _) in jobs {
            if rank[f] == usize::MAX {
                rank[f] = order.len();
                order.push(f);
            }
        }
        Creator {
            order,
            rank,
            state: Mutex::new((0, false)),
            wake: std::sync::Condvar::new(),
        }
    }

    /// Creates the files at their sizes (`sizes[f]`: the size, and whether to allocate
    /// the blocks too, see [`allocate_blocks`]).
    fn run(
        &self,
        files: &[OpenFile],
        sizes: &[(u64, bool)],
        cancelled: &AtomicBool,
        ledger: &Ledger,
    ) -> Result<()> {
        let mut result = Ok(());
        for (k, &f) in self.order.iter().enumerate() {
            if cancelled.load(Ordering::Relaxed) {
                break;
            }
            let path = &files[f].path;
            let (size, allocate) = sizes[f];
            let created = create_new(path, 0o600).and_then(|file| {
                ledger.created(path);
                if allocate {
                    allocate_blocks(&file, size)
                } else {
                    file.set_len(size)
                }
                .map_err(|e| Error::io("allocate", path, e))
            });
            if let Err(e) = created {
                cancelled.store(true, Ordering::Relaxed);
                result = Err(e);
                break;
            }
            self.state.lock().expect("creator state").0 = k + 1;
            self.wake.notify_all();
        }
        self.state.lock().expect("creator state").1 = true;
        self.wake.notify_all();
        result
    }

    /// Waits until file `f` exists; false when it never will (creation stopped).
    fn wait_for(&self, f: usize) -> bool {
        let rank = self.rank[f];
        let mut state = self.state.lock().expect("creator state");
        loop {
            if state.0 > rank {
                return true;
            }
            if state.1 {
                return false;
            }
            state = self.wake.wait(state).expect("creator state");
        }
    }
}

/// The work, one job per chunk (an empty file is one job with no chunk behind it, which
/// only finishes the file), in the order it is handed out, computed rather than stored:
/// memory is per file, not per chunk.
///
/// In file order, job `g` is chunk `g - starts[f]` of the file `f` whose range holds it.
/// That sequence is cut into `lanes` contiguous runs, and jobs are handed out `stride`
/// at a time from each run in turn. With one batch per lane and a batch's size as the
/// stride, the batches processed at the same moment belong to different files (buffered
/// writes to one file hold its inode lock while they copy, and a second writer of the
/// same file spins on that lock instead of working), while a batch holds consecutive
/// chunks, which lie back to back in its buffer and go to the disk in one write. Each
/// run still goes through its files in order, so only a few files are open at once.
struct Jobs {
    /// The first job of each file, in file order.
    starts: Vec<u64>,
    /// Jobs in all.
    total: u64,
    /// Number of runs.
    lanes: u64,
    /// Jobs per run (the last may have fewer).
    per_lane: u64,
    /// Consecutive jobs of a run handed out together.
    stride: u64,
}

impl Jobs {
    fn new(files: &[FileNode], lanes: usize, stride: usize) -> Jobs {
        let mut starts = Vec::with_capacity(files.len());
        let mut total = 0u64;
        for f in files {
            starts.push(total);
            total += (f.chunks.len() as u64).max(1);
        }
        let lanes = (lanes as u64).max(1);
        Jobs {
            starts,
            total,
            lanes,
            per_lane: total.div_ceil(lanes).max(1),
            stride: (stride as u64).max(1),
        }
    }

    /// Job `g` of the file-order sequence, as `(file, chunk)`.
    fn at(&self, g: u64) -> (usize, usize) {
        let f = self.starts.partition_point(|&start| start <= g) - 1;
        (f, (g - self.starts[f]) as usize)
    }

    /// The jobs in the order they are handed out: `stride` consecutive jobs of each run
    /// in turn.
    fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let stride = self.stride;
        (0..self.per_lane.div_ceil(stride))
            .flat_map(move |step| {
                (0..self.lanes).flat_map(move |run| {
                    let first = step * stride;
                    let last = (first + stride).min(self.per_lane);
                    (first..last).map(move |i| run * self.per_lane + i)
                })
            })
            .filter(move |&g| g < self.total)
            .map(move |g| self.at(g))
    }
}

/// A file being written: opened by whichever of its chunks comes first, closed (after its
/// time and mode are set) by whichever comes last.
struct OpenFile {
    path: PathBuf,
    /// The open file, and whether it was opened with `O_DIRECT`.
    file: Mutex<Option<(Arc<File>, bool)>>,
    remaining: AtomicU64,
}

/// The length of chunk `index` of a file of `size` bytes.
fn chunk_len(size: u64, chunk_size: u64, index: u64) -> u64 {
    (size - index * chunk_size).min(chunk_size)
}

/// The largest stored body a chunk of `raw_len` bytes can have (frames that lz4 cannot
/// shrink are stored raw, plus small headers), with room to spare. Anything larger is
/// not that chunk, and reading at most this much keeps memory bounded whatever the
/// repository holds.
fn stored_max(raw_len: u64) -> u64 {
    raw_len + raw_len / 16 + 4096
}

/// Reads a chunk's stored body: one ranged request, bounded.
///
/// This is [`Repo::read_blob`]'s read without its size request first (one round trip per
/// chunk instead of two); the body is verified by the same decoder on the blocking pool.
async fn fetch_chunk(repo: &Repo, digest: &Digest, raw_len: u64) -> tidemark_store::Result<Bytes> {
    let key = catalog::blob_key(digest);
    let max = stored_max(raw_len);
    let stored = repo.backend().get_range(&key, 0..max + 1).await?;
    if stored.len() as u64 > max {
        return Err(tidemark_store::Error::Corrupt {
            key,
            detail: format!("stored body is larger than a chunk of {raw_len} bytes can be"),
        });
    }
    Ok(stored)
}

/// A fetched chunk: its digest, its stored body and its raw length (`None` for the one
/// job of an empty file).
type Fetched = Option<(Digest, Bytes, u64)>;

/// Writes batches of chunks on the blocking pool.
struct ChunkWriter<'a> {
    backup: &'a str,
    page: &'a PageFiles,
    files: &'a [OpenFile],
    chunk_size: u64,
    sync_each: bool,
    progress: &'a Progress,
    buffers: &'a BufferPool,
    unsynced: &'a Unsynced,
}

/// Files written but not yet fsynced, fsynced in groups of [`Unsynced::GROUP`] by
/// whichever writer fills a group, and the rest at the end (every file is durable before
/// the restore reports success, as before).
///
/// Why in groups: on ext4 an fsync of a new file writes the block of the inode table
/// that holds its inode and its directory's changed block, then flushes the disk's
/// cache. Fsynced right after it is written, each file pays for those writes while the
/// next files keep dirtying the same blocks; fsynced together, most find their inode's
/// block (shared by sixteen inodes) and their directory's already written by the one
/// before. On the bench database that took the restore from about 3,900 write requests
/// to 2,900-3,000 (`/proc/diskstats`). Bounded, so that few descriptors stay open.
#[derive(Default)]
struct Unsynced(Mutex<Vec<(usize, Arc<File>)>>);

impl Unsynced {
    const GROUP: usize = 64;

    fn add(&self, f: usize, file: Arc<File>, files: &[OpenFile]) -> Result<()> {
        let full = {
            let mut list = self.0.lock().expect("unsynced");
            list.push((f, file));
            if list.len() < Self::GROUP {
                return Ok(());
            }
            std::mem::take(&mut *list)
        };
        Self::sync(full, files)
    }

    fn finish(&self, files: &[OpenFile]) -> Result<()> {
        let rest = std::mem::take(&mut *self.0.lock().expect("unsynced"));
        Self::sync(rest, files)
    }

    fn sync(list: Vec<(usize, Arc<File>)>, files: &[OpenFile]) -> Result<()> {
        for (f, file) in list {
            file.sync_all()
                .map_err(|e| Error::io("fsync", &files[f].path, e))?;
        }
        Ok(())
    }
}

impl ChunkWriter<'_> {
    /// Decodes, verifies and writes a batch of chunks (an empty file's job only finishes
    /// the file). The chunks of files written directly (nearly all the bytes) are decoded
    /// into aligned buffers and then hashed together, [`multihash::LANES`] streams on one
    /// core, which is nearly twice as fast as hashing them one after another; nothing is
    /// written before its chunk is verified. Other chunks are decoded and written
    /// buffered, one by one. A file's last chunk sets its time and mode.
    fn write_batch(
        &self,
        jobs: &[(usize, usize)],
        chunks: Vec<Fetched>,
        creator: &Creator,
        cancelled: &AtomicBool,
    ) -> Result<()> {
        let mut direct = Vec::with_capacity(jobs.len());
        for (&(f, i), chunk) in jobs.iter().zip(chunks) {
            if !creator.wait_for(f) || cancelled.load(Ordering::Relaxed) {
                return Ok(()); // the creator's error, or another chunk's, is the cause
            }
            let (file, is_direct) = self.open(f)?;
            match chunk {
                Some(chunk) if is_direct => direct.push((f, i as u64, file, chunk)),
                chunk => {
                    if let Some((digest, stored, len)) = chunk {
                        self.write_buffered(f, i as u64, &file, digest, &stored, len)?;
                    }
                    self.job_done(f, &file)?;
                }
            }
        }
        if direct.is_empty() {
            return Ok(());
        }
        let mut buffer = self.buffers.take();
        let written = (|| {
            // One aligned buffer for the batch, the chunks back to back: every direct
            // chunk is a multiple of the alignment long, so each starts aligned, and
            // consecutive chunks of one file lie where one write can take them together.
            let mut offsets = Vec::with_capacity(direct.len() + 1);
            offsets.push(0usize);
            for (_, _, _, (_, _, len)) in &direct {
                offsets.push(offsets[offsets.len() - 1] + *len as usize);
            }
            let all = aligned_part(&mut buffer, offsets[direct.len()]);
            for (k, (f, i, _, (digest, stored, len))) in direct.iter().enumerate() {
                let piece = &mut all[offsets[k]..offsets[k + 1]];
                let n = codec::decode_unverified_into(&catalog::blob_key(digest), stored, piece)
                    .map_err(|source| self.chunk_error(*f, *i, source))?;
                check_chunk_len(self.backup, &self.page.files[*f], *i, n as u64, *len)?;
            }
            let piece = |k: usize| &all[offsets[k]..offsets[k + 1]];
            let pieces: Vec<&[u8]> = (0..direct.len()).map(piece).collect();
            let actual = multihash::digest_many(&pieces);
            for ((f, i, _, (digest, _, _)), actual) in direct.iter().zip(actual) {
                codec::check_decoded(&catalog::blob_key(digest), actual, *digest)
                    .map_err(|source| self.chunk_error(*f, *i, source))?;
            }
            // Verified: written in runs, one call for each run of consecutive chunks of a
            // file, which lie back to back in the buffer (a larger request, and one
            // hand-over of the file's lock between writers instead of one per chunk).
            let mut k = 0;
            while k < direct.len() {
                let (f, first, file, _) = &direct[k];
                let mut end = k + 1;
                while end < direct.len()
                    && direct[end].0 == *f
                    && direct[end].1 == direct[end - 1].1 + 1
                {
                    end += 1;
                }
                let run = &all[offsets[k]..offsets[end]];
                file.write_all_at(run, first * self.chunk_size)
                    .map_err(|e| Error::io("write", &self.files[*f].path, e))?;
                self.progress
                    .done_bytes
                    .fetch_add(run.len() as u64, Ordering::Relaxed);
                k = end;
            }
            Ok::<_, Error>(())
        })();
        self.buffers.put(buffer);
        written?;
        for (f, _, file, _) in &direct {
            self.job_done(*f, file)?;
        }
        Ok(())
    }

    /// The open file `f`: opened by whichever of its chunks comes first (it was created,
    /// empty and at its size, before the chunks started); says whether it has `O_DIRECT`.
    fn open(&self, f: usize) -> Result<(Arc<File>, bool)> {
        let open = &self.files[f];
        let mut slot = open.file.lock().expect("file slot");
        if let Some((file, direct)) = &*slot {
            return Ok((file.clone(), *direct));
        }
        // Never follow a link put in its place.
        let node = &self.page.files[f];
        let (file, direct) =
            open_for_chunks(&open.path, direct_io_fits(node.size, self.chunk_size))?;
        let file = Arc::new(file);
        *slot = Some((file.clone(), direct));
        Ok((file, direct))
    }

    /// Decodes, verifies and writes chunk `index` of file `f` through the page cache.
    fn write_buffered(
        &self,
        f: usize,
        index: u64,
        file: &File,
        digest: Digest,
        stored: &[u8],
        len: u64,
    ) -> Result<()> {
        let path = &self.files[f].path;
        let start = index * self.chunk_size;
        let mut at = start;
        let node = &self.page.files[f];
        decode_checked(
            self.backup,
            node,
            index,
            digest,
            stored,
            len,
            &mut |piece| {
                file.write_all_at(piece, at)
                    .map_err(|source| tidemark_store::Error::Io {
                        op: "write",
                        path: path.clone(),
                        source,
                    })?;
                at += piece.len() as u64;
                Ok(())
            },
        )?;
        if self.sync_each {
            // Start this chunk's write-back now, so that it overlaps the decoding of the
            // next ones and the file's fsync finds little left to wait for.
            start_write_back(file, start, len);
        }
        self.progress.done_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Counts one of file `f`'s jobs as done; the last one sets the file's time and mode
    /// and hands it over to be made durable (see [`Unsynced`]) and closed.
    fn job_done(&self, f: usize, file: &File) -> Result<()> {
        let open = &self.files[f];
        if open.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return Ok(());
        }
        let node = &self.page.files[f];
        file.set_modified(system_time(node.mtime))
            .map_err(|e| Error::io("set the time of", &open.path, e))?;
        file.set_permissions(fs::Permissions::from_mode(node.mode))
            .map_err(|e| Error::io("chmod", &open.path, e))?;
        let slot = open.file.lock().expect("file slot").take();
        if self.sync_each {
            if let Some((file, _)) = slot {
                self.unsynced.add(f, file, self.files)?;
            }
        }
        self.progress.done_files.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn chunk_error(&self, f: usize, index: u64, source: tidemark_store::Error) -> Error {
        let node = &self.page.files[f];
        Error::Chunk {
            path: entry_name(node.root, &node.path),
            index,
            source,
        }
    }
}

/// The buffers batches decode their direct chunks into (one per batch, the chunks back
/// to back), reused from batch to batch (fresh megabytes would be zeroed and faulted in
/// for every batch). Shared rather than per thread: the blocking pool runs batches on
/// whichever of its threads is free, and buffers kept by every thread that ever ran one
/// added up to 150 MiB.
#[derive(Default)]
struct BufferPool(Mutex<Vec<Vec<u8>>>);

impl BufferPool {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .expect("buffer pool")
            .pop()
            .unwrap_or_default()
    }

    fn put(&self, buffer: Vec<u8>) {
        self.0.lock().expect("buffer pool").push(buffer);
    }
}

/// The first `len` bytes of `buffer` that start at a [`DIRECT_ALIGN`] boundary, growing
/// the buffer if it is too small.
fn aligned_part(buffer: &mut Vec<u8>, len: usize) -> &mut [u8] {
    let need = len + DIRECT_ALIGN;
    if buffer.len() < need {
        buffer.resize(need, 0);
    }
    let skip = buffer.as_ptr().align_offset(DIRECT_ALIGN);
    &mut buffer[skip..skip + len]
}

thread_local! {
    /// One decoder per blocking-pool thread, reset for each chunk: its buffers are reused
    /// instead of a fresh megabyte zeroed and faulted in for every chunk.
    static DECODER: std::cell::RefCell<Option<BlobDecoder>> =
        const { std::cell::RefCell::new(None) };
}

/// Decodes and verifies the stored chunk `digest` into `sink` with this thread's decoder;
/// returns the raw length.
fn decode_chunk(
    key: &tidemark_store::Key,
    digest: Digest,
    stored: &[u8],
    sink: &mut dyn FnMut(&[u8]) -> tidemark_store::Result<()>,
) -> tidemark_store::Result<u64> {
    DECODER.with(|slot| {
        let mut slot = slot.borrow_mut();
        let decoder = match slot.as_mut() {
            Some(decoder) => {
                decoder.reset(key.clone(), digest);
                decoder
            }
            None => slot.insert(BlobDecoder::new(key.clone(), digest)),
        };
        decoder.feed(stored, sink)?;
        decoder.finish()
    })
}

/// The block size direct writes are aligned to (offsets, lengths and buffer addresses):
/// 4 KiB covers the logical block size of the disks and file systems PostgreSQL runs on.
const DIRECT_ALIGN: usize = 4096;

/// Whether a file of `size` bytes can be written with direct I/O: every chunk's offset
/// and length are then multiples of [`DIRECT_ALIGN`]. PostgreSQL's relation files (all
/// multiples of 8 KiB) are; small files such as `PG_VERSION` are written buffered.
fn direct_io_fits(size: u64, chunk_size: u64) -> bool {
    size > 0 && size % DIRECT_ALIGN as u64 == 0 && chunk_size % DIRECT_ALIGN as u64 == 0
}

/// Opens a pre-created file for its chunks (never following a link put in its place);
/// says whether it got `O_DIRECT`.
/// With `direct`, `O_DIRECT`: the chunks go from tidemark's buffer to the disk without a
/// copy into the page cache, which on the project's machine cost more CPU than SHA-256
/// and made write-back timing erratic (`dd` of 800 MiB: 0.5-0.9 s direct, 0.55-2.5 s
/// buffered with fsync). A file system that refuses `O_DIRECT` (tmpfs) gets buffered
/// writes.
fn open_for_chunks(path: &Path, direct: bool) -> Result<(File, bool)> {
    let open = |flags| {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | flags)
            .open(path)
    };
    let opened = if direct {
        match open(libc::O_DIRECT) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => open(0).map(|f| (f, false)),
            other => other.map(|f| (f, true)),
        }
    } else {
        open(0).map(|f| (f, false))
    };
    opened.map_err(|e| Error::io("open", path, e))
}

/// Decodes and verifies chunk `index` of `node` (the blob `digest`, stored as `stored`)
/// into `sink`, which never gets more than the `len` bytes the file list gives the chunk;
/// fails unless exactly `len` came out and they hash to `digest`.
#[allow(clippy::too_many_arguments)]
fn decode_checked(
    backup: &str,
    node: &FileNode,
    index: u64,
    digest: Digest,
    stored: &[u8],
    len: u64,
    sink: &mut dyn FnMut(&[u8]) -> tidemark_store::Result<()>,
) -> Result<()> {
    let key = catalog::blob_key(&digest);
    let mut produced = 0u64;
    let mut bounded = |piece: &[u8]| -> tidemark_store::Result<()> {
        produced += piece.len() as u64;
        if produced > len {
            return Err(tidemark_store::Error::Corrupt {
                key: key.clone(),
                detail: format!("holds more than the {len} bytes the file list gives the chunk"),
            });
        }
        sink(piece)
    };
    let n = decode_chunk(&key, digest, stored, &mut bounded).map_err(|source| Error::Chunk {
        path: entry_name(node.root, &node.path),
        index,
        source,
    })?;
    check_chunk_len(backup, node, index, n, len)
}

/// A chunk that decoded (and verified) to `n` bytes where the file list says `len`.
fn check_chunk_len(backup: &str, node: &FileNode, index: u64, n: u64, len: u64) -> Result<()> {
    if n != len {
        return Err(Error::BadData {
            backup: backup.to_string(),
            path: entry_name(node.root, &node.path),
            detail: format!("chunk {index} holds {n} bytes, the file list says {len}"),
        });
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes at `offset` back to disk, without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, as PostgreSQL's `pg_flush_data` does). A
/// hint only: durability still comes from the fsync, so a failure here is ignored.
fn start_write_back(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads the descriptor, which `file` keeps open.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// Gives a new, empty file its size with its blocks allocated (`fallocate(2)`), where the
/// file system can; else sets only the size (a sparse file).
///
/// For the large files written with `O_DIRECT`: ext4 serialises direct writes that
/// allocate blocks on the file's lock, each waiting for the disk, while writes into
/// allocated blocks go ahead side by side; one allocation up front also replaces one per
/// write. On the bench database (800 MiB, alternating restores into fresh directories,
/// 4 rounds) restores took a median 0.81 s with it against 0.91 s without. It also makes
/// a full disk fail the restore at the start of the file rather than midway.
fn allocate_blocks(file: &File, size: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(size)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large"))?;
    // SAFETY: fallocate only reads the descriptor, which `file` keeps open.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => file.set_len(size),
        _ => Err(err),
    }
}

fn create_new(path: &Path, mode: u32) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io("create", path, e))
}

fn system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn syncfs(dir: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open for the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Removes `path` and everything beneath it, never following a symbolic link, making
/// directories writable first (the restore may have given them read-only modes).
fn remove_tree(path: &Path) -> std::result::Result<(), (PathBuf, io::Error)> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err((path.to_path_buf(), e)),
    };
    if meta.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
            .map_err(|e| (path.to_path_buf(), e))?;
        for entry in fs::read_dir(path).map_err(|e| (path.to_path_buf(), e))? {
            let entry = entry.map_err(|e| (path.to_path_buf(), e))?;
            remove_tree(&entry.path())?;
        }
        fs::remove_dir(path).map_err(|e| (path.to_path_buf(), e))
    } else {
        fs::remove_file(path).map_err(|e| (path.to_path_buf(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use tidemark_store::backend::local::LocalBackend;
    use tidemark_store::backup::{EntryKind, FileEntry, TablespaceRecord};
    use tidemark_store::Compression;

    const CHUNK: u64 = 1000;
    const TS: u32 = 16384;

    struct Fixture {
        dir: tempfile::TempDir,
        repo: Repo,
        stanza: Stanza,
        chunk: u64,
    }

    impl Fixture {
        fn new() -> Fixture {
            Fixture::with_chunk(CHUNK)
        }

        fn with_chunk(chunk: u64) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let backend = Arc::new(LocalBackend::new(dir.path().join("repo")).unwrap());
            Fixture {
                dir,
                repo: Repo::new(backend, Compression::Lz4),
                stanza: Stanza::new("main").unwrap(),
                chunk,
            }
        }

        fn path(&self, p: &str) -> PathBuf {
            self.dir.path().join(p)
        }

        /// Where chunk `index` of `entry` is stored in the local repository.
        fn stored_chunk(&self, entry: &FileEntry, index: usize) -> PathBuf {
            let EntryKind::File { chunks } = &entry.kind else {
                panic!("{} is not a file", entry.path)
            };
            self.path("repo")
                .join(catalog::blob_key(&chunks[index]).as_str())
        }

        /// Flips a bit in the last byte of chunk `index` of `entry`'s stored blob.
        fn rot(&self, entry: &FileEntry, index: usize) {
            let stored = self.stored_chunk(entry, index);
            let mut body = fs::read(&stored).unwrap();
            let last = body.len() - 1;
            body[last] ^= 0x20;
            fs::write(&stored, body).unwrap();
        }

        /// A file entry whose chunks are stored in the repository.
        async fn file(&self, ts: Option<u32>, path: &str, content: &[u8], mode: u32) -> FileEntry {
            let mut chunks = Vec::new();
            for piece in content.chunks(self.chunk as usize) {
                let put = self
                    .repo
                    .put_blob(Bytes::copy_from_slice(piece))
                    .await
                    .unwrap();
                chunks.push(put.digest);
            }
            FileEntry {
                tablespace: ts,
                path: path.into(),
                mode,
                size: content.len() as u64,
                mtime: 1_700_000_000,
                kind: EntryKind::File { chunks },
            }
        }

        /// Stores a backup with these entries (and a tablespace `TS`) and returns its record.
        async fn backup(&self, id: &str, entries: Vec<FileEntry>) -> BackupRecord {
            // Small pages, so that every restore here reads a list of several.
            let manifest =
                format!("{{\"PostgreSQL-Backup-Manifest-Version\": 1, \"id\": \"{id}\"}}\n");
            let (list_put, _) = self
                .repo
                .put_file_list(&entries, manifest.as_bytes(), self.chunk, 300)
                .await
                .unwrap();
            let mut record = crate::layout::tests::record(&[]);
            record.id = id.into();
            record.start_time += chrono::Duration::seconds(id.len() as i64);
            record.tablespaces = vec![TablespaceRecord {
                oid: TS,
                location: self.path("original-ts").display().to_string(),
            }];
            record.chunk_size = self.chunk;
            record.file_list = list_put.digest;
            self.repo.put_backup(&self.stanza, &record).await.unwrap();
            record
        }

        fn request(&self, backup: Option<&str>) -> RestoreRequest {
            RestoreRequest {
                backup: backup.map(str::to_string),
                pgdata: self.path("pgdata"),
                tablespace_map: [(TS, self.path("ts"))].into(),
                restore_command: "/usr/bin/tidemark --repo 'file:///r' archive-get %f %p".into(),
                archive_mode: ArchiveMode::Off,
                targets: lsn_target(),
            }
        }

        async fn restore(&self, backup: Option<&str>) -> Result<RestoreReport> {
            restore(
                &self.repo,
                &self.stanza,
                &self.request(backup),
                &Arc::new(Progress::default()),
            )
            .await
        }
    }

    fn content(len: usize, seed: u8) -> Vec<u8> {
        // Page-like: runs of zeros and a varying header, so some chunks repeat.
        (0..len)
            .map(|i| {
                if i % 512 < 16 {
                    seed.wrapping_add((i / 512) as u8)
                } else {
                    0
                }
            })
            .collect()
    }

    fn dir(path: &str, mode: u32) -> FileEntry {
        FileEntry {
            tablespace: None,
            path: path.into(),
            mode,
            size: 0,
            mtime: 1_600_000_000,
            kind: EntryKind::Dir,
        }
    }

    fn link(path: &str, target: &str) -> FileEntry {
        FileEntry {
            tablespace: None,
            path: path.into(),
            mode: 0o777,
            size: 0,
            mtime: 0,
            kind: EntryKind::Symlink {
                target: target.into(),
            },
        }
    }

    /// A plan's settings for an LSN target on timeline 1.
    fn lsn_target() -> autoconf::TargetSettings {
        let pairs = [
            ("recovery_target_lsn", "0/3000060"),
            ("recovery_target", ""),
            ("recovery_target_name", ""),
            ("recovery_target_time", ""),
            ("recovery_target_xid", ""),
            ("recovery_target_inclusive", "on"),
            ("recovery_target_timeline", "1"),
            ("recovery_target_action", "pause"),
        ];
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        autoconf::TargetSettings::new(&pairs).unwrap()
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    /// The order [`Jobs`] computes, built the plain way.
    fn interleaved(page: &PageFiles, lanes: usize, stride: usize) -> Vec<(usize, usize)> {
        let jobs: Vec<(usize, usize)> = page
            .files
            .iter()
            .enumerate()
            .flat_map(|(f, node)| (0..node.chunks.len().max(1)).map(move |i| (f, i)))
            .collect();
        let per_lane = jobs.len().div_ceil(lanes).max(1);
        let runs: Vec<&[(usize, usize)]> = jobs.chunks(per_lane).collect();
        let mut out = Vec::new();
        for step in (0..per_lane).step_by(stride) {
            for run in &runs {
                out.extend(run.iter().skip(step).take(stride));
            }
        }
        out
    }

    #[test]
    fn jobs_are_interleaved_across_files_and_each_handed_out_once() {
        let node = |chunks: usize| FileNode {
            root: Root::Data,
            path: "f".into(),
            mode: 0o600,
            mtime: 0,
            size: chunks as u64,
            chunks: vec![Digest::of(b""); chunks],
        };
        let mut page = PageFiles {
            chunk_size: 1,
            files: vec![node(3), node(3), node(1)],
        };
        let jobs = Jobs::new(&page.files, 2, 1);
        assert_eq!(
            jobs.iter().collect::<Vec<_>>(),
            [(0, 0), (1, 1), (0, 1), (1, 2), (0, 2), (2, 0), (1, 0)]
        );
        // Two at a time from each run: consecutive chunks of a file go out together.
        let jobs = Jobs::new(&page.files, 2, 2);
        assert_eq!(
            jobs.iter().collect::<Vec<_>>(),
            [(0, 0), (0, 1), (1, 1), (1, 2), (0, 2), (1, 0), (2, 0)]
        );
        page.files = vec![
            node(0),
            node(5),
            node(0),
            node(1),
            node(12),
            node(0),
            node(7),
        ];
        for lanes in 1..12 {
            for stride in 1..6 {
                let computed: Vec<_> = Jobs::new(&page.files, lanes, stride).iter().collect();
                let expected = interleaved(&page, lanes, stride);
                assert_eq!(computed, expected, "{lanes} lanes, stride {stride}");
                let mut sorted = computed;
                sorted.sort();
                sorted.dedup();
                assert_eq!(sorted.len(), 5 + 1 + 1 + 1 + 12 + 1 + 7);
            }
        }
        page.files.clear();
        assert_eq!(Jobs::new(&page.files, 3, 4).iter().count(), 0);
    }

    #[tokio::test]
    async fn a_backup_is_restored_byte_for_byte() {
        let fx = Fixture::new();
        let files: Vec<(Option<u32>, &str, Vec<u8>, u32)> = vec![
            (None, "PG_VERSION", b"15\n".to_vec(), 0o600),
            (None, "global/pg_control", content(8192, 1), 0o600),
            (
                None,
                "base/1/1259",
                content(2 * CHUNK as usize + 17, 2),
                0o640,
            ),
            (None, "base/1/exact", content(CHUNK as usize, 3), 0o600),
            (None, "base/1/empty", Vec::new(), 0o600),
            (
                None,
                "postgresql.auto.conf",
                b"# Do not edit this file manually!\nrecovery_target = 'immediate'\nwork_mem = '4MB'"
                    .to_vec(),
                0o600,
            ),
            (
                Some(TS),
                "PG_15_202209061/5/16385",
                content(3 * CHUNK as usize + 1, 4),
                0o600,
            ),
        ];
        let mut entries = vec![
            dir("base", 0o700),
            dir("base/1", 0o750),
            dir("global", 0o700),
        ];
        for (ts, path, bytes, m) in &files {
            entries.push(fx.file(*ts, path, bytes, *m).await);
        }
        entries.push(link("pg_tblspc/16384", "/somewhere/else"));
        fx.backup("20261121T103207Z", entries).await;
        let progress = Arc::new(Progress::default());
        let report = restore(&fx.repo, &fx.stanza, &fx.request(None), &progress)
            .await
            .unwrap();
        assert_eq!(report.backup, "20261121T103207Z");
        assert_eq!(report.files, files.len() as u64);
        let total: u64 = files.iter().map(|f| f.2.len() as u64).sum();
        assert_eq!(report.bytes, total);
        assert_eq!(progress.bytes(), (total, total));
        assert_eq!(progress.files(), (files.len() as u64, files.len() as u64));

        let pgdata = fx.path("pgdata");
        let ts = fx.path("ts");
        for (t, path, bytes, m) in &files {
            let p = match t {
                None => pgdata.join(path),
                Some(_) => ts.join(path),
            };
            if *path == "postgresql.auto.conf" {
                continue;
            }
            assert_eq!(&fs::read(&p).unwrap(), bytes, "{path}");
            assert_eq!(mode(&p), *m, "{path}");
            assert_eq!(fs::metadata(&p).unwrap().mtime(), 1_700_000_000, "{path}");
        }
        assert_eq!(mode(&pgdata), 0o700);
        assert_eq!(mode(&pgdata.join("base/1")), 0o750);
        assert_eq!(
            fs::metadata(pgdata.join("base/1")).unwrap().mtime(),
            1_600_000_000
        );
        assert_eq!(mode(&ts), 0o700);
        assert_eq!(
            mode(&ts.join("PG_15_202209061")),
            0o700,
            "implied directories"
        );
        // The link points at the tablespace's target, not at what the list stored.
        assert_eq!(fs::read_link(pgdata.join("pg_tblspc/16384")).unwrap(), ts);
        assert_eq!(
            fs::read_to_string(pgdata.join("backup_manifest")).unwrap(),
            "{\"PostgreSQL-Backup-Manifest-Version\": 1, \"id\": \"20261121T103207Z\"}\n"
        );
        let conf = fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
        let (before, block) = conf
            .split_once("\n# tidemark restore of backup 20261121T103207Z (")
            .unwrap();
        // An earlier recovery target is commented out; the block sets the plan's target
        // and every other kind to ''.
        assert_eq!(
            before,
            "# Do not edit this file manually!\n\
             # removed by tidemark restore: recovery_target = 'immediate'\n\
             work_mem = '4MB'"
        );
        assert_eq!(report.removed_settings, ["recovery_target = 'immediate'"]);
        assert!(
            block.ends_with(
                ")\nrestore_command = '/usr/bin/tidemark --repo ''file:///r'' archive-get %f %p'\n\
                 recovery_target = ''\nrecovery_target_name = ''\nrecovery_target_time = ''\n\
                 recovery_target_xid = ''\nrecovery_target_lsn = '0/3000060'\n\
                 recovery_target_inclusive = 'on'\nrecovery_target_timeline = '1'\n\
                 recovery_target_action = 'pause'\narchive_mode = off\n"
            ),
            "{conf}"
        );
        assert_eq!(report.recovery_target, lsn_target());
        assert_eq!(mode(&pgdata.join("postgresql.auto.conf")), 0o600);
        assert_eq!(fs::read(pgdata.join("recovery.signal")).unwrap(), b"");
        assert_eq!(mode(&pgdata.join("recovery.signal")), 0o600);
        assert!(!pgdata.join("postgresql.auto.conf.tidemark").exists());
    }

    #[tokio::test]
    async fn backups_are_picked_by_id_or_newest() {
        let fx = Fixture::new();
        let err = fx.restore(None).await.unwrap_err();
        assert!(matches!(err, Error::NoBackups { .. }), "{err}");
        let a = fx.file(None, "PG_VERSION", b"a", 0o600).await;
        fx.backup("20261121T000000Z", vec![a]).await;
        let b = fx.file(None, "PG_VERSION", b"b", 0o600).await;
        fx.backup("20261122T000000Z0", vec![b]).await;
        let err = fx.restore(Some("nope")).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotFound);
        assert!(
            err.to_string()
                .contains("20261121T000000Z, 20261122T000000Z0"),
            "{err}"
        );
        assert!(!fx.path("pgdata").exists());
        let report = fx.restore(None).await.unwrap();
        assert_eq!(report.backup, "20261122T000000Z0");
        assert_eq!(fs::read(fx.path("pgdata/PG_VERSION")).unwrap(), b"b");
        fs::remove_dir_all(fx.path("pgdata")).unwrap();
        fs::remove_dir_all(fx.path("ts")).unwrap();
        fx.restore(Some("20261121T000000Z")).await.unwrap();
        assert_eq!(fs::read(fx.path("pgdata/PG_VERSION")).unwrap(), b"a");
    }

    #[tokio::test]
    async fn unsafe_file_lists_are_refused_before_anything_is_written() {
        let fx = Fixture::new();
        let ok = fx.file(None, "PG_VERSION", b"15\n", 0o600).await;
        let mut cases: Vec<(&str, Vec<FileEntry>)> = Vec::new();
        for path in ["../x", "/etc/x", "a/../../x"] {
            cases.push((
                path,
                vec![ok.clone(), fx.file(None, path, b"evil", 0o600).await],
            ));
        }
        cases.push(("stray symlink", vec![ok.clone(), link("base", "/etc")]));
        cases.push((
            "below pg_tblspc/<oid>",
            vec![
                link("pg_tblspc/16384", "/x"),
                fx.file(None, "pg_tblspc/16384/PG_15/evil", b"evil", 0o600)
                    .await,
            ],
        ));
        cases.push((
            "unknown tablespace",
            vec![ok.clone(), fx.file(Some(99), "PG_15/x", b"x", 0o600).await],
        ));
        cases.push(("duplicate", vec![ok.clone(), ok.clone()]));
        let mut short = fx
            .file(None, "big", &content(3 * CHUNK as usize, 5), 0o600)
            .await;
        if let EntryKind::File { chunks } = &mut short.kind {
            chunks.pop();
        }
        cases.push(("chunk count", vec![ok.clone(), short]));
        for (i, (what, entries)) in cases.into_iter().enumerate() {
            let id = format!("20261121T0000{i:02}Z");
            fx.backup(&id, entries).await;
            let err = fx.restore(Some(&id)).await.unwrap_err();
            assert!(matches!(err, Error::UnsafeEntry { .. }), "{what}: {err}");
            assert_eq!(err.kind(), crate::ErrorKind::Integrity, "{what}");
            assert!(!fx.path("pgdata").exists(), "{what}: nothing is created");
            assert!(!fx.path("ts").exists(), "{what}");
        }
        assert!(!fx.dir.path().join("x").exists() && !fx.path("original-ts").exists());
    }

    #[tokio::test]
    async fn targets_must_be_empty_and_maps_must_name_tablespaces() {
        let fx = Fixture::new();
        let f = fx.file(None, "PG_VERSION", b"15\n", 0o600).await;
        fx.backup("20261121T103207Z", vec![f]).await;
        fs::create_dir(fx.path("pgdata")).unwrap();
        fs::write(fx.path("pgdata/keep"), b"mine").unwrap();
        let err = fx.restore(None).await.unwrap_err();
        assert!(matches!(err, Error::TargetNotEmpty { .. }), "{err}");
        assert_eq!(err.kind(), crate::ErrorKind::Usage);
        let names: Vec<_> = fs::read_dir(fx.path("pgdata"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keep"]);
        assert!(!fx.path("ts").exists());

        let mut req = fx.request(None);
        req.pgdata = fx.path("other");
        req.tablespace_map.insert(7, fx.path("ts7"));
        let err = prepare(&fx.repo, &fx.stanza, &req).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Usage);
        assert!(
            err.to_string().contains("no tablespace 7 (it has 16384)"),
            "{err}"
        );
        req.tablespace_map = [(TS, PathBuf::from("relative"))].into();
        assert_eq!(
            prepare(&fx.repo, &fx.stanza, &req)
                .await
                .unwrap_err()
                .kind(),
            crate::ErrorKind::Usage
        );
        req.tablespace_map = [(TS, fx.path("other/ts"))].into();
        let err = prepare(&fx.repo, &fx.stanza, &req).await.unwrap_err();
        assert!(err.to_string().contains("overlap"), "{err}");
        // Without a map, the tablespace goes back where it was.
        req.tablespace_map.clear();
        let report = restore(&fx.repo, &fx.stanza, &req, &Arc::new(Progress::default()))
            .await
            .unwrap();
        assert_eq!(report.tablespaces[0].path, fx.path("original-ts"));
        assert_eq!(
            fs::read_link(fx.path("other/pg_tblspc/16384")).unwrap(),
            fx.path("original-ts")
        );
    }

    #[tokio::test]
    async fn syncfs_and_one_chunk_in_flight_restore_the_same_bytes() {
        // The default (fsync each, several chunks in flight) is what the other tests use.
        let fx = Fixture::new();
        let bytes = content(7 * CHUNK as usize + 3, 9);
        let mut ts_file = fx.file(Some(TS), "PG_15/5/1", &bytes, 0o600).await;
        ts_file.mtime = 1_500_000_000;
        let entries = vec![fx.file(None, "base/1/2", &bytes, 0o640).await, ts_file];
        fx.backup("20261121T103207Z", entries).await;
        let prepared = prepare(&fx.repo, &fx.stanza, &fx.request(None))
            .await
            .unwrap()
            .with_sync(SyncMode::SyncFs)
            .with_in_flight(1);
        assert_eq!(prepared.record().id, "20261121T103207Z");
        assert_eq!(prepared.layout().chunks, 16);
        let report = prepared
            .run(&fx.repo, &Arc::new(Progress::default()))
            .await
            .unwrap();
        assert_eq!(report.sync, SyncMode::SyncFs);
        assert_eq!(fs::read(fx.path("pgdata/base/1/2")).unwrap(), bytes);
        assert_eq!(fs::read(fx.path("ts/PG_15/5/1")).unwrap(), bytes);
        assert_eq!(
            fs::metadata(fx.path("ts/PG_15/5/1")).unwrap().mtime(),
            1_500_000_000
        );
    }

    #[tokio::test]
    async fn a_relative_tablespace_location_needs_a_map() {
        let fx = Fixture::new();
        let f = fx.file(None, "PG_VERSION", b"15\n", 0o600).await;
        let mut record = fx.backup("20261121T103207Z", vec![f]).await;
        record.id = "20261121T103208Z".into();
        record.start_time += chrono::Duration::seconds(10);
        record.tablespaces[0].location = "../ts".into();
        fx.repo.put_backup(&fx.stanza, &record).await.unwrap();
        let mut request = fx.request(None);
        request.tablespace_map.clear();
        let err = prepare(&fx.repo, &fx.stanza, &request).await.unwrap_err();
        assert!(matches!(err, Error::BadRecord { .. }), "{err}");
        assert!(
            err.to_string().contains("--tablespace-map 16384=DIR"),
            "{err}"
        );
        // With a map the location does not matter.
        fx.restore(None).await.unwrap();
    }

    #[tokio::test]
    async fn a_damaged_record_is_skipped_by_the_default_and_fails_only_its_own_restore() {
        let fx = Fixture::new();
        let a = fx.file(None, "PG_VERSION", b"a", 0o600).await;
        fx.backup("20261121T000000Z", vec![a]).await;
        let b = fx.file(None, "PG_VERSION", b"b", 0o600).await;
        fx.backup("20261122T000000Z", vec![b]).await;
        let keys = fx
            .repo
            .backup_keys(&fx.stanza, "20261122T000000Z")
            .await
            .unwrap();
        let stored = fx.path("repo").join(keys[0].as_str());
        let mut body = fs::read(&stored).unwrap();
        let at = body.len() - 5;
        body[at] ^= 0x01;
        fs::write(&stored, body).unwrap();

        let prepared = prepare(&fx.repo, &fx.stanza, &fx.request(None))
            .await
            .unwrap();
        assert_eq!(prepared.record().id, "20261121T000000Z");
        assert_eq!(prepared.skipped().len(), 1);
        assert_eq!(prepared.skipped()[0].id, "20261122T000000Z");
        assert!(
            prepared.skipped()[0].error.contains("checksum mismatch"),
            "{:?}",
            prepared.skipped()
        );
        let report = prepared
            .run(&fx.repo, &Arc::new(Progress::default()))
            .await
            .unwrap();
        assert_eq!(report.skipped_backups.len(), 1);
        assert_eq!(fs::read(fx.path("pgdata/PG_VERSION")).unwrap(), b"a");
        fs::remove_dir_all(fx.path("pgdata")).unwrap();
        fs::remove_dir_all(fx.path("ts")).unwrap();

        let err = fx.restore(Some("20261122T000000Z")).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Integrity, "{err}");
        assert!(err.to_string().contains("20261122T000000Z"), "{err}");
        assert!(!fx.path("pgdata").exists());
    }

    #[tokio::test]
    async fn a_missing_file_list_or_page_names_the_backup_and_the_part() {
        let fx = Fixture::new();
        let mut entries = Vec::new();
        for i in 0..40 {
            entries.push(fx.file(None, &format!("f{i}"), b"x", 0o600).await);
        }
        let record = fx.backup("20261121T103207Z", entries).await;
        let list = fx.repo.backup_files(&record).await.unwrap();
        assert!(list.pages.len() > 2, "{} pages", list.pages.len());
        let page_key = catalog::blob_key(&list.pages[1]);
        fs::remove_file(fx.path("repo").join(page_key.as_str())).unwrap();
        let err = fx.restore(None).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Integrity, "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("backup 20261121T103207Z: page 2 of ")
                && text.contains(&format!("{page_key}: not found"))
                && text.contains("is missing from the repository"),
            "{text}"
        );
        assert!(!fx.path("pgdata").exists());

        let list_key = catalog::blob_key(&record.file_list);
        fs::remove_file(fx.path("repo").join(list_key.as_str())).unwrap();
        let err = fx.restore(None).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Integrity, "{err}");
        assert!(
            err.to_string().starts_with(&format!(
                "backup 20261121T103207Z: its file list ({list_key}) is missing"
            )),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_second_restore_into_the_same_path_leaves_the_first_intact() {
        // Both prepared while the targets were absent; the first finishes, then the
        // second must fail without touching what the first wrote.
        let fx = Fixture::new();
        let relation = content(3 * CHUNK as usize, 1);
        let entries = vec![
            dir("base", 0o700),
            fx.file(None, "PG_VERSION", b"15\n", 0o600).await,
            fx.file(None, "base/1259", &relation, 0o600).await,
            fx.file(Some(TS), "PG_15/1", b"ts", 0o600).await,
        ];
        fx.backup("20261121T103207Z", entries).await;
        let first = prepare(&fx.repo, &fx.stanza, &fx.request(None))
            .await
            .unwrap();
        let second = prepare(&fx.repo, &fx.stanza, &fx.request(None))
            .await
            .unwrap();
        first
            .run(&fx.repo, &Arc::new(Progress::default()))
            .await
            .unwrap();
        let err = second
            .run(&fx.repo, &Arc::new(Progress::default()))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::TargetNotEmpty { .. }), "{err}");
        assert_eq!(fs::read(fx.path("pgdata/PG_VERSION")).unwrap(), b"15\n");
        assert_eq!(fs::read(fx.path("pgdata/base/1259")).unwrap(), relation);
        assert!(fx.path("pgdata/recovery.signal").exists());
        assert_eq!(fs::read(fx.path("ts/PG_15/1")).unwrap(), b"ts");
    }

    #[tokio::test]
    async fn a_folder_that_appears_after_prepare_is_never_removed() {
        let fx = Fixture::new();
        let bad = fx.file(None, "base/1", b"this chunk will rot", 0o600).await;
        fx.backup("20261121T103207Z", vec![dir("base", 0o700), bad.clone()])
            .await;
        let mut request = fx.request(None);
        request.pgdata = fx.path("new/pgdata");

        // The data directory itself appears, with someone's file in it: refused, kept.
        let prepared = prepare(&fx.repo, &fx.stanza, &request).await.unwrap();
        fs::create_dir_all(fx.path("new/pgdata")).unwrap();
        fs::write(fx.path("new/pgdata/theirs"), b"keep me").unwrap();
        let err = prepared
            .run(&fx.repo, &Arc::new(Progress::default()))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::TargetNotEmpty { .. }), "{err}");
        assert_eq!(fs::read(fx.path("new/pgdata/theirs")).unwrap(), b"keep me");
        assert!(!fx.path("ts").exists(), "nothing else was created");
        fs::remove_dir_all(fx.path("new")).unwrap();

        // A folder above it appears (with a file) and the restore fails later: what the
        // restore created goes, the folder and the file stay.
        fx.rot(&bad, 0);
        let prepared = prepare(&fx.repo, &fx.stanza, &request).await.unwrap();
        fs::create_dir(fx.path("new")).unwrap();
        fs::write(fx.path("new/theirs"), b"keep me").unwrap();
        let err = prepared
            .run(&fx.repo, &Arc::new(Progress::default()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Integrity, "{err}");
        assert_eq!(fs::read(fx.path("new/theirs")).unwrap(), b"keep me");
        assert!(!fx.path("new/pgdata").exists() && !fx.path("ts").exists());

        // The data directory appears empty: accepted (as in prepare), and on failure
        // emptied of what the restore wrote, its mode given back.
        fs::remove_dir_all(fx.path("new")).unwrap();
        let prepared = prepare(&fx.repo, &fx.stanza, &request).await.unwrap();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(fx.path("new/pgdata"))
            .unwrap();
        let err = prepared
            .run(&fx.repo, &Arc::new(Progress::default()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Integrity, "{err}");
        assert_eq!(fs::read_dir(fx.path("new/pgdata")).unwrap().count(), 0);
        assert_eq!(mode(&fx.path("new/pgdata")), 0o750);
    }

    #[tokio::test]
    async fn an_interrupted_restore_removes_what_it_wrote() {
        let fx = Fixture::new();
        let f = fx
            .file(None, "base/1/1259", &content(3 * CHUNK as usize, 1), 0o600)
            .await;
        fx.backup("20261121T103207Z", vec![f]).await;
        let progress = Arc::new(Progress::default());
        progress.interrupt();
        let err = restore(&fx.repo, &fx.stanza, &fx.request(None), &progress)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Interrupted), "{err}");
        assert!(!fx.path("pgdata").exists() && !fx.path("ts").exists());
    }

    #[tokio::test]
    async fn a_manifest_whose_chunks_do_not_add_up_is_refused_and_undone() {
        let fx = Fixture::new();
        let f = fx.file(None, "base/1/1259", &content(3000, 1), 0o600).await;
        let good = fx.backup("20261121T103207Z", vec![f]).await;
        // The same list, its manifest said to be of another size with as many chunks.
        let mut list = fx.repo.backup_files(&good).await.unwrap();
        let (n, real) = (list.pg_manifest.chunks.len() as u64, list.pg_manifest.size);
        list.pg_manifest.size = ((n - 1) * fx.chunk + 1..=n * fx.chunk)
            .find(|&size| size != real)
            .unwrap();
        let put = fx
            .repo
            .put_blob(Bytes::from(list.to_bytes()))
            .await
            .unwrap();
        let bad = BackupRecord {
            id: "20261121T103208Z".into(),
            file_list: put.digest,
            ..good
        };
        fx.repo.put_backup(&fx.stanza, &bad).await.unwrap();
        let err = fx.restore(Some(&bad.id)).await.unwrap_err();
        assert!(
            matches!(err, Error::BadRecord { .. }) && err.to_string().contains("chunks hold"),
            "{err}"
        );
        assert!(!fx.path("pgdata").exists() && !fx.path("ts").exists());
        fx.restore(Some(&good.id)).await.unwrap();
    }

    #[tokio::test]
    async fn block_aligned_files_go_direct_and_are_verified_first() {
        assert!(direct_io_fits(3 * 8192, 1 << 20));
        assert!(!direct_io_fits(3 * 8192 + 3, 1 << 20));
        assert!(!direct_io_fits(0, 1 << 20));
        assert!(!direct_io_fits(8192, 1000));
        // 8 KiB chunks: a relation-like file (direct), a small one (buffered).
        // Direct chunks are verified in batches, hashed side by side: several direct
        // files (one ending in a half chunk, so a batch holds unequal lengths) and more
        // chunks than one batch holds.
        let fx = Fixture::with_chunk(8192);
        let relation = content(5 * 8192, 3);
        let uneven = content(9 * 8192 + 4096, 5);
        let small = content(3 * 8192 + 100, 4);
        let entries = vec![
            dir("base", 0o700),
            fx.file(None, "base/16384", &relation, 0o600).await,
            fx.file(None, "base/16386", &uneven, 0o600).await,
            fx.file(None, "base/PG_VERSION", &small, 0o600).await,
        ];
        fx.backup("20261121T103207Z", entries).await;
        fx.restore(None).await.unwrap();
        assert_eq!(fs::read(fx.path("pgdata/base/16384")).unwrap(), relation);
        assert_eq!(fs::read(fx.path("pgdata/base/16386")).unwrap(), uneven);
        assert_eq!(fs::read(fx.path("pgdata/base/PG_VERSION")).unwrap(), small);

        // A corrupt chunk of a direct file fails the restore before it is written.
        let fx = Fixture::with_chunk(8192);
        let bad = fx.file(None, "base/16385", &relation, 0o600).await;
        fx.backup("20261121T103207Z", vec![dir("base", 0o700), bad.clone()])
            .await;
        fx.rot(&bad, 2);
        let err = fx.restore(None).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Integrity, "{err}");
        assert!(err.to_string().contains("base/16385"), "{err}");
        assert!(!fx.path("pgdata").exists());
    }

    #[tokio::test]
    async fn a_corrupt_chunk_fails_the_restore_and_leaves_nothing() {
        let fx = Fixture::new();
        let mut entries = vec![dir("base", 0o500)];
        for i in 0..20 {
            entries.push(
                fx.file(
                    None,
                    &format!("base/{i}"),
                    &content(5 * CHUNK as usize, i),
                    0o400,
                )
                .await,
            );
        }
        let bad = fx
            .file(Some(TS), "PG_15/bad", b"this chunk will rot", 0o600)
            .await;
        entries.push(bad.clone());
        fx.backup("20261121T103207Z", entries).await;
        fx.rot(&bad, 0);

        // Absent targets are removed again; an empty one is emptied and keeps its mode.
        let err = fx.restore(None).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Integrity, "{err}");
        assert!(
            err.to_string().contains("tablespace 16384: PG_15/bad"),
            "{err}"
        );
        assert!(!fx.path("pgdata").exists());
        assert!(!fx.path("ts").exists());
        fs::DirBuilder::new()
            .mode(0o750)
            .create(fx.path("pgdata"))
            .unwrap();
        let err = fx.restore(None).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Integrity, "{err}");
        assert_eq!(fs::read_dir(fx.path("pgdata")).unwrap().count(), 0);
        assert_eq!(mode(&fx.path("pgdata")), 0o750);
        assert!(!fx.path("ts").exists());

        // A missing chunk is damage too.
        fs::remove_file(fx.stored_chunk(&bad, 0)).unwrap();
        let err = fx.restore(None).await.unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Integrity, "{err}");
        assert_eq!(fs::read_dir(fx.path("pgdata")).unwrap().count(), 0);
    }
}
