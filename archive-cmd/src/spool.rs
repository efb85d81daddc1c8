//! The asynchronous spool: with `archive_async` on, `archive-push` acknowledges a WAL file
//! once it is durable in a local folder, and a drainer moves it into the repository. The
//! archiver then waits on the local disk only, however slow or unreachable the store is;
//! the backlog is counted and its age is shown, so the exposure is measured, not guessed.
//!
//! Layout of `<spool_path>/<stanza>/`:
//! - `wal/<name>.<digest>`: each queued file's stored body, in the repository's blob
//!   format, written before the acknowledgement (temporary file, fsync, link, fsync of the
//!   folder: the local backend's create-only write). The drainer uploads it as it is,
//!   after checking it against the SHA-256 of the body taken when it was queued;
//! - `queue/`: a sled database. Tree `queue` maps each file name to its [`SpoolEntry`]
//!   (JSON), so the queue drains in WAL order (a `.history` file sorts before its
//!   timeline's segments). Tree `cache` holds the stanza's cluster record per repository:
//!   the repository never changes that record, so a cached copy cannot go stale, and a
//!   segment of another cluster is refused while the store is down;
//! - `drain.lock`: locked (`flock`) by the one drainer at work;
//! - `index-unreachable`: written when a push found the repository's index unreachable
//!   (pushes queue unchecked, without asking, for a while after).
//!
//! The rules that keep an acknowledged file safe:
//! - an entry exists only while its body does: the body is durable before the entry is
//!   written and flushed, and the entry is removed (and flushed) before the body.
//!   "Flushed" includes an fsync of sled's log and folder (sled's own flush does not
//!   fsync), and every folder is fsynced into its parent when created;
//! - a body never goes without having reached the repository: one no entry names (a lost
//!   queue) is queued again by the next drain, from its file name and its checked
//!   content, never deleted;
//! - a name is never given a second content: the same content again is a success,
//!   different content is refused and the new file stays in `pg_wal`; the repository's
//!   index is asked first (for [`INDEX_CHECK_WAIT`] at most), so a content that
//!   conflicts with it is refused as a synchronous push refuses it;
//! - the spool never takes more than `spool_max_mib`: past it, and for segments too large
//!   to hold in memory, the caller pushes synchronously instead, so WAL waits in
//!   `pg_wal` (PostgreSQL's own queue) rather than anything being dropped.
//!
//! sled lets one process at a time open a database, so each user opens it for one short
//! step and closes it, waiting while another process holds it. Holding it also
//! serialises what must not interleave: a push linking a body and queueing it, and the
//! drainer looking for bodies that no entry names.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tidemark_pg::{SegmentIdentity, SegmentSize, SystemId, WalFileName};
use tidemark_store::backend::local::LocalBackend;
use tidemark_store::backend::{Backend, Staged};
use tidemark_store::catalog::{self, ClusterRecord, Stanza};
use tidemark_store::repo::{check_same_cluster, now, EncodedBlob, WalNameState, IN_MEMORY_MAX};
use tidemark_store::wal_content::WalContent;
use tidemark_store::{Compression, Digest, Key, Repo};

use crate::content::Summarized;
use crate::push::{self, Content, PushOutcome};
use crate::{Error, ErrorKind, Result};

/// How long a step waits for another process to close the queue database.
const QUEUE_WAIT: Duration = Duration::from_secs(30);
/// A temporary body older than this was left by a killed push.
const STALE_TEMP: Duration = Duration::from_secs(15 * 60);
/// The longest pause between two attempts while the repository fails.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long an asynchronous push waits for the repository's index before it queues the
/// file unchecked: the archiver must not wait on a store that is down (the point of
/// asynchronous mode), nor for `retry_timeout`.
pub const INDEX_CHECK_WAIT: Duration = Duration::from_secs(3);
/// After a check found the repository unreachable, pushes queue unchecked without
/// trying for this long, so that an outage costs each push one stat, not a wait.
const UNREACHABLE_SKIP: Duration = Duration::from_secs(30);
/// The marker of that (its time is when a check last failed).
const UNREACHABLE_MARKER: &str = "index-unreachable";

/// One queued file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolEntry {
    /// The WAL file name.
    pub name: String,
    /// SHA-256 of its content, hex.
    pub digest: String,
    /// Raw bytes.
    pub raw_size: u64,
    /// Bytes of the stored body in the spool.
    pub stored_size: u64,
    /// SHA-256 of the stored body, hex: the drainer checks the body against it instead of
    /// decoding and hashing the whole content again (a tenth of the work).
    pub stored_sha256: String,
    /// What the segment's first page said about its cluster (segments only), checked
    /// against the repository's cluster record when the file is moved.
    pub identity: Option<EntryIdentity>,
    /// The body's compression.
    pub compression: Compression,
    /// When the push was acknowledged.
    pub queued_at: DateTime<Utc>,
    /// Failed attempts to move it into the repository.
    #[serde(default)]
    pub attempts: u32,
    /// The last attempt's error.
    #[serde(default)]
    pub last_error: Option<String>,
    /// True when the name was checked against the repository's index before the push
    /// was acknowledged; false when the repository did not answer in time (a conflict
    /// with it then shows only when the file is drained).
    #[serde(default)]
    pub index_checked: bool,
    /// The segment's content summary for the repository's index, decoded when it was
    /// queued (`None`: not a segment, the decoder gave none, or queued by a build from
    /// before the index, in which case the drainer decodes the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<WalContent>,
}

/// A [`SegmentIdentity`] as a queue entry keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryIdentity {
    /// The system identifier.
    pub system_id: u64,
    /// The PostgreSQL major version.
    pub pg_major: u32,
    /// The WAL page magic.
    pub magic: u16,
    /// The segment size in bytes.
    pub segment_size: u64,
    /// The WAL page size.
    pub page_size: u32,
}

impl From<&SegmentIdentity> for EntryIdentity {
    fn from(id: &SegmentIdentity) -> EntryIdentity {
        EntryIdentity {
            system_id: id.system_id.0,
            pg_major: id.pg_major,
            magic: id.magic,
            segment_size: id.segment_size.bytes(),
            page_size: id.page_size,
        }
    }
}

impl EntryIdentity {
    fn to_segment_identity(self) -> Result<SegmentIdentity> {
        Ok(SegmentIdentity {
            system_id: SystemId(self.system_id),
            pg_major: self.pg_major,
            magic: self.magic,
            segment_size: SegmentSize::new(self.segment_size)?,
            page_size: self.page_size,
        })
    }
}

/// What [`push_to_spool`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpoolOutcome {
    /// Durable in the spool: PostgreSQL may recycle the file.
    Queued {
        /// The file name.
        name: WalFileName,
        /// Raw bytes.
        raw_len: u64,
        /// Bytes the spool holds for it.
        stored_len: u64,
        /// Files queued now, this one included.
        queued_files: u64,
        /// Bytes queued now, this one included.
        queued_bytes: u64,
    },
    /// Already queued with identical content (PostgreSQL retried after a crash).
    AlreadyQueued {
        /// The file name.
        name: WalFileName,
    },
    /// The repository already holds the name (same content, or a conflict, which is an
    /// error): handled as a synchronous push, nothing spooled.
    Direct(PushOutcome),
    /// Not spooled, and nothing written: the caller pushes it synchronously.
    NotSpooled {
        /// The file name.
        name: WalFileName,
        /// Why.
        reason: String,
    },
}

/// The spool of one stanza.
#[derive(Clone, Debug)]
pub struct Spool {
    inner: Arc<SpoolInner>,
}

#[derive(Debug)]
struct SpoolInner {
    dir: PathBuf,
    bodies: LocalBackend,
    max_bytes: u64,
    /// Names the repository the cached cluster record belongs to.
    repo_id: String,
}

/// The queue database, open (and so locked against other processes) while this lives.
pub struct Queue {
    db: sled::Db,
    queue: sled::Tree,
    cache: sled::Tree,
    path: PathBuf,
}

/// The drainer's lock; released when dropped.
#[derive(Debug)]
pub struct DrainLock {
    _file: File,
}

/// How a drain runs.
#[derive(Clone, Debug)]
pub struct DrainOptions {
    /// Files moved at once.
    pub parallel: usize,
    /// How long an empty queue is watched for new files before the drain ends.
    pub linger: Duration,
    /// How long the repository may keep failing before the drain gives up (`None`: never,
    /// for the background drainer, which must outlast an outage).
    pub give_up_after: Option<Duration>,
}

/// What a drain did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DrainReport {
    /// Files moved into the repository.
    pub pushed: u64,
    /// Files the repository already held with the same content.
    pub already_archived: u64,
    /// Files still queued when the drain ended.
    pub remaining: u64,
    /// Files that failed in a way retrying cannot fix (conflict, corruption, another
    /// cluster), with the error: a person must look at them.
    pub stuck: Vec<(String, String)>,
    /// The last error when the drain gave up on a failing repository.
    pub gave_up: Option<String>,
}

/// A summary of the queue for `spool status` and monitoring.
#[derive(Clone, Debug, Serialize)]
pub struct SpoolStatus {
    /// The stanza's spool folder.
    pub path: PathBuf,
    /// Files queued.
    pub files: u64,
    /// Bytes queued.
    pub bytes: u64,
    /// The spool's limit.
    pub max_bytes: u64,
    /// When the oldest queued file was acknowledged.
    pub oldest_queued_at: Option<DateTime<Utc>>,
    /// Files queued without a check against the repository's index (it was
    /// unreachable): a conflict with the repository shows only when they are drained.
    pub unchecked: u64,
    /// Spooled bodies no queue entry names (a lost queue, or a push or drain killed
    /// midway): the next drain queues them again.
    pub unqueued: u64,
    /// Whether a drainer holds the lock.
    pub draining: bool,
    /// Every queued file, in drain order.
    pub entries: Vec<SpoolEntry>,
}

/// What waits in the spool as monitoring sees it (`tidemark status`, the agent's
/// metrics): counted from the spooled bodies, without opening the queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Backlog {
    /// Spooled files not yet in the repository.
    pub files: u64,
    /// Their stored bytes.
    pub bytes: u64,
    /// When the oldest of them was written into the spool.
    pub oldest_at: Option<DateTime<Utc>>,
}

fn spool_err(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::Spool {
        path: path.to_path_buf(),
        detail: what.to_string(),
    }
}

impl Spool {
    /// The spool of `stanza` under `spool_path` (which must be absolute), holding at most
    /// `max_bytes`; `repo_id` names the repository (its URL). Changes nothing.
    pub fn new(spool_path: &Path, stanza: &Stanza, max_bytes: u64, repo_id: &str) -> Result<Spool> {
        let dir = spool_path.join(stanza.as_str());
        let bodies = LocalBackend::new(&dir)?;
        Ok(Spool {
            inner: Arc::new(SpoolInner {
                dir,
                bodies,
                max_bytes,
                repo_id: repo_id.to_string(),
            }),
        })
    }

    /// The stanza's spool folder.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// True when the folder exists (something was ever spooled here). The bodies'
    /// folder counts as well as the queue: a spool whose queue was lost still holds
    /// acknowledged files, which the next drain queues again.
    pub fn exists(&self) -> bool {
        self.inner.dir.join("queue").is_dir() || self.inner.dir.join("wal").is_dir()
    }

    /// Creates the folders (owner-only) if they are missing, each fsynced into its
    /// parent: a body made durable inside must not vanish with its folder's entry.
    fn create(&self) -> Result<()> {
        for folder in ["wal", "queue"] {
            let path = self.inner.dir.join(folder);
            create_dirs_durably(&path)
                .map_err(|e| spool_err(&path, format!("cannot create: {e}")))?;
        }
        Ok(())
    }

    fn body_key(name: &str, digest: &str) -> Result<Key> {
        Ok(Key::new(format!("wal/{name}.{digest}"))?)
    }

    /// Opens the queue database, waiting up to [`QUEUE_WAIT`] while another process has it.
    pub async fn lock_queue(&self) -> Result<Queue> {
        let path = self.inner.dir.join("queue");
        tokio::task::spawn_blocking(move || Queue::open(path))
            .await
            .expect("opening the spool queue panicked")
    }

    /// Takes the drainer's lock, or `None` when another drainer holds it.
    pub fn try_lock_drain(&self) -> Result<Option<DrainLock>> {
        self.create()?;
        let path = self.inner.dir.join("drain.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| spool_err(&path, format!("cannot open: {e}")))?;
        // SAFETY: flock only uses the descriptor, which `file` keeps open.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Some(DrainLock { _file: file }));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(spool_err(&path, format!("cannot lock: {e}")))
        }
    }

    /// True when a drainer is at work.
    pub fn draining(&self) -> Result<bool> {
        if !self.exists() {
            return Ok(false);
        }
        Ok(self.try_lock_drain()?.is_none())
    }

    /// The queue, in drain order, and whether a drainer is at work.
    pub async fn status(&self) -> Result<SpoolStatus> {
        let (entries, unqueued) = if self.exists() {
            let queue = self.lock_queue().await?;
            let entries = queue.entries()?;
            let named: BTreeSet<String> = entries
                .iter()
                .map(|e| format!("wal/{}.{}", e.name, e.digest))
                .collect();
            let unqueued = self
                .inner
                .bodies
                .list("wal/")
                .await?
                .iter()
                .filter(|o| !named.contains(o.key.as_str()))
                .count() as u64;
            (entries, unqueued)
        } else {
            (Vec::new(), 0)
        };
        Ok(SpoolStatus {
            path: self.inner.dir.clone(),
            files: entries.len() as u64,
            bytes: entries.iter().map(|e| e.stored_size).sum(),
            max_bytes: self.inner.max_bytes,
            oldest_queued_at: entries.iter().map(|e| e.queued_at).min(),
            unchecked: entries.iter().filter(|e| !e.index_checked).count() as u64,
            unqueued,
            draining: self.draining()?,
            entries,
        })
    }

    /// The backlog, from a listing of the spooled bodies alone: the queue database is
    /// locked by whoever writes it (archive-push, a drainer), and a monitor asking every
    /// few seconds must never make archive-push wait. A body is removed only after the
    /// repository holds it, so every listed body is a file still at risk.
    pub async fn backlog(&self) -> Result<Backlog> {
        if !self.exists() {
            return Ok(Backlog::default());
        }
        let listed = self.inner.bodies.list("wal/").await?;
        Ok(Backlog {
            files: listed.len() as u64,
            bytes: listed.iter().map(|o| o.size).sum(),
            oldest_at: listed.iter().filter_map(|o| o.last_modified).min(),
        })
    }

    /// A file's stored body.
    async fn body(&self, entry: &SpoolEntry) -> Result<bytes::Bytes> {
        let key = Self::body_key(&entry.name, &entry.digest)?;
        Ok(self.inner.bodies.get(&key).await?)
    }

    /// Removes a file the repository now holds: the entry first, then the body.
    async fn finish(&self, entry: &SpoolEntry) -> Result<()> {
        let queue = self.lock_queue().await?;
        queue.remove(&entry.name)?;
        let key = Self::body_key(&entry.name, &entry.digest)?;
        self.inner.bodies.delete(&key).await?;
        Ok(())
    }

    /// Notes a failed attempt on the entry, for `spool status`.
    async fn record_failure(&self, entry: &SpoolEntry, error: &Error) -> Result<()> {
        let queue = self.lock_queue().await?;
        if let Some(mut current) = queue.get(&entry.name)? {
            current.attempts += 1;
            current.last_error = Some(error.to_string());
            queue.put(&current)?;
        }
        Ok(())
    }

    /// Deals with bodies no entry names, and removes temporary bodies of killed pushes.
    ///
    /// A body no entry names was left by a push killed between linking it and queueing
    /// it, by a drainer killed between removing an entry and its body, or by a queue
    /// that was lost (a person removed a damaged `queue/` folder): the last holds
    /// acknowledged files that only this spool has. So such a body is never deleted: its
    /// file name holds its name and digest, and once it decodes to that digest it is
    /// queued again (a file the repository holds already is then simply finished by the
    /// drain). One that does not decode is renamed `.damaged-…` for a person, and never
    /// uploaded. Returns how many were queued again.
    ///
    /// The queue is held while the bodies are listed and while entries are added, so
    /// that no push is between linking a body and queueing it; not while the bodies are
    /// decoded, which may take a while.
    async fn requeue_unnamed(&self) -> Result<u64> {
        if !self.exists() {
            return Ok(0);
        }
        let unnamed: Vec<Key> = {
            let queue = self.lock_queue().await?;
            let named: BTreeSet<String> = queue
                .entries()?
                .iter()
                .map(|e| format!("wal/{}.{}", e.name, e.digest))
                .collect();
            self.inner
                .bodies
                .list("wal/")
                .await?
                .into_iter()
                .map(|o| o.key)
                .filter(|k| !named.contains(k.as_str()))
                .collect()
        };
        // Per-file lines are `info`, as the drain's others: the background drainer logs
        // them to its file, and a drain run by hand ends with one summary.
        let mut found = Vec::new();
        for key in unnamed {
            match self.recover_entry(&key).await {
                Ok(entry) => found.push(entry),
                Err(e) => {
                    let path = self.inner.dir.join(key.as_str());
                    let aside = path.with_file_name(format!(".damaged-{}", key.file_name()));
                    tracing::info!(
                        "{key}: a spooled body no queue entry names does not hold what its name says ({e}); kept as {} for a person, not uploaded",
                        aside.display()
                    );
                    let _ = fs::rename(&path, &aside);
                }
            }
        }
        let mut requeued = 0;
        if !found.is_empty() {
            let queue = self.lock_queue().await?;
            for entry in found {
                let key = Self::body_key(&entry.name, &entry.digest)?;
                match queue.get(&entry.name)? {
                    None if self.inner.dir.join(key.as_str()).is_file() => {
                        queue.put(&entry)?;
                        tracing::info!(
                            "{}: its body was in the spool but not in the queue (a lost queue?): queued again",
                            entry.name
                        );
                        requeued += 1;
                    }
                    None => {}
                    Some(other) => tracing::info!(
                        "{key}: not queued again, {} is queued with other content (sha256 {}); kept for a person",
                        other.name,
                        other.digest
                    ),
                }
            }
        }
        let wal = self.inner.dir.join("wal");
        let stale = SystemTime::now() - STALE_TEMP;
        for entry in fs::read_dir(&wal)
            .map_err(|e| spool_err(&wal, e))?
            .flatten()
        {
            let is_temp = entry.file_name().to_string_lossy().starts_with(".tmp-");
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < stale);
            if is_temp && old {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(requeued)
    }

    /// The queue entry of a body found without one: its name and digest from its file
    /// name, checked by decoding it; the rest from the body and the content.
    async fn recover_entry(&self, key: &Key) -> Result<SpoolEntry> {
        let (name, digest) = key
            .file_name()
            .rsplit_once('.')
            .ok_or_else(|| spool_err(self.dir(), format!("{key}: not <name>.<sha256>")))?;
        let wal_name: WalFileName = name.parse()?;
        let digest: Digest = digest.parse()?;
        let stored = self.inner.bodies.get(key).await?;
        let queued_at = fs::metadata(self.inner.dir.join(key.as_str()))
            .and_then(|m| m.modified())
            .map(DateTime::<Utc>::from)
            .unwrap_or_else(|_| now());
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            let raw = tidemark_store::codec::decode(&key, digest, &stored)?;
            let identity = match wal_name.segment() {
                Some(seg) if !matches!(wal_name, WalFileName::Backup { .. }) => {
                    Some(EntryIdentity::from(&tidemark_pg::check_segment_start(
                        &seg,
                        &raw,
                        raw.len() as u64,
                    )?))
                }
                _ => None,
            };
            Ok(SpoolEntry {
                name: wal_name.to_string(),
                digest: digest.to_hex(),
                raw_size: raw.len() as u64,
                stored_size: stored.len() as u64,
                stored_sha256: Digest::of(&stored).to_hex(),
                identity,
                // Byte 5 of a blob's header is its codec (decoding checked it).
                compression: if stored[5] == 0 {
                    Compression::None
                } else {
                    Compression::Lz4
                },
                queued_at,
                attempts: 0,
                last_error: None,
                index_checked: false,
                content: entry_summary(&wal_name, &raw, identity)
                    .as_ref()
                    .and_then(Summarized::content)
                    .cloned(),
            })
        })
        .await
        .expect("checking a spooled body panicked")
    }
}

/// `create_dir_all` that fsyncs each folder it creates into its parent.
fn create_dirs_durably(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs_durably(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    fsync_dir(dir.parent().unwrap_or(dir))
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Queue {
    fn open(path: PathBuf) -> Result<Queue> {
        // Never recreate a spool that was removed (sled would create the folders).
        let dir = path.parent().expect("the queue is inside the spool folder");
        let meta = fs::metadata(dir).map_err(|e| spool_err(dir, e))?;
        // Files another user created in the queue (root running `spool status`, say)
        // would lock the owner's drainer out of its own queue.
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        let owner = meta.uid();
        if owner != me {
            return Err(spool_err(
                dir,
                format!("belongs to uid {owner}, not to this user (uid {me}): run tidemark as the spool's owner, the user PostgreSQL runs as"),
            ));
        }
        // sled would create a missing folder without fsyncing it into its parent.
        create_dirs_durably(&path).map_err(|e| spool_err(&path, format!("cannot create: {e}")))?;
        let deadline = Instant::now() + QUEUE_WAIT;
        let mut pause = Duration::from_millis(1);
        let db = loop {
            // No background flusher: every change is flushed by the step that made it.
            match sled::Config::new().path(&path).flush_every_ms(None).open() {
                Ok(db) => break db,
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(e) => return Err(spool_err(&path, format!("cannot open the queue: {e}"))),
            }
        };
        let tree = |name: &str| {
            db.open_tree(name)
                .map_err(|e| spool_err(&path, format!("cannot open tree {name}: {e}")))
        };
        Ok(Queue {
            queue: tree("queue")?,
            cache: tree("cache")?,
            db,
            path,
        })
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        spool_err(&self.path, e)
    }

    /// Makes every change so far durable. sled's flush writes its log with
    /// `sync_file_range`, which leaves the file's metadata and the device's cache
    /// unflushed: fsync the log and the folder too, so that an entry written (or
    /// removed) is so after a power loss, before its body is trusted (or deleted).
    fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map_err(|e| self.err(format!("cannot flush: {e}")))?;
        File::open(self.path.join("db"))
            .and_then(|f| f.sync_all())
            .and_then(|()| fsync_dir(&self.path))
            .map_err(|e| self.err(format!("cannot fsync: {e}")))?;
        Ok(())
    }

    /// The entry for `name`, if queued.
    pub fn get(&self, name: &str) -> Result<Option<SpoolEntry>> {
        match self.queue.get(name).map_err(|e| self.err(e))? {
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| self.err(format!("entry {name} does not parse: {e}"))),
            None => Ok(None),
        }
    }

    /// Every entry, in drain order.
    pub fn entries(&self) -> Result<Vec<SpoolEntry>> {
        self.queue
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|e| self.err(e))?;
                serde_json::from_slice(&v).map_err(|e| {
                    self.err(format!(
                        "entry {} does not parse: {e}",
                        String::from_utf8_lossy(&k)
                    ))
                })
            })
            .collect()
    }

    /// Writes `entry` durably.
    fn put(&self, entry: &SpoolEntry) -> Result<()> {
        let value = serde_json::to_vec(entry).expect("entries serialize");
        self.queue
            .insert(entry.name.as_bytes(), value)
            .map_err(|e| self.err(e))?;
        self.flush()
    }

    /// Removes `name`'s entry durably.
    fn remove(&self, name: &str) -> Result<()> {
        self.queue.remove(name).map_err(|e| self.err(e))?;
        self.flush()
    }

    fn cached_cluster(&self, repo_id: &str) -> Result<Option<ClusterRecord>> {
        match self.cache.get(repo_id).map_err(|e| self.err(e))? {
            // A cache entry that does not parse is ignored: the repository has the record.
            Some(v) => Ok(serde_json::from_slice(&v).ok()),
            None => Ok(None),
        }
    }

    fn cache_cluster(&self, repo_id: &str, record: &ClusterRecord) -> Result<()> {
        let value = serde_json::to_vec(record).expect("records serialize");
        self.cache.insert(repo_id, value).map_err(|e| self.err(e))?;
        self.flush()
    }
}

/// `archive-push` in asynchronous mode: checks the file exactly as a synchronous push
/// does, then makes it durable in the spool. Nothing reaches the repository here,
/// except on the stanza's first contact, when the cluster record is read there once and
/// then cached. A repository or stanza that does not exist is refused as a synchronous
/// push refuses it (only `tidemark init` creates them), whatever the file.
pub async fn push_to_spool(
    spool: &Spool,
    repo: &Repo,
    stanza: &Stanza,
    path: &Path,
) -> Result<SpoolOutcome> {
    let name = push::file_name_of(path)?;
    let len = fs::metadata(path)
        .map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    if len > IN_MEMORY_MAX {
        return Ok(SpoolOutcome::NotSpooled {
            name,
            reason: format!(
                "{len}-byte files are pushed directly (the spool takes files up to {IN_MEMORY_MAX} bytes)"
            ),
        });
    }
    spool.create()?;
    let compression = repo.compression();
    let staged = spool.inner.bodies.stage("wal");
    let checked = push::check_file(path, name, compression, staged, None).await?;
    let (identity, summary) = (checked.identity, checked.summary);
    let Content::InMemory(blob, staged) = checked.content else {
        // Grew past IN_MEMORY_MAX since it was measured: streamed, so pushed directly.
        return Ok(SpoolOutcome::NotSpooled {
            name,
            reason: "the file grew past the spool's size limit while it was read".into(),
        });
    };
    // The repository decides what a name holds: when it answers in time, a name it
    // holds already (the same content, or a conflict) is handled exactly as a
    // synchronous push handles it, so that conflicting content is never acknowledged.
    let index_checked = match check_index(spool, repo, stanza, &name).await {
        Some(state) => {
            let fresh = match (state.indexed.as_slice(), state.claimed) {
                ([], None) => true,
                ([], Some(claimed)) => claimed == blob.digest,
                _ => false,
            };
            if !fresh {
                // The staged body is in the spool's folder, not the repository's.
                drop(staged);
                let checked = push::Checked {
                    content: Content::InMemory(blob, None),
                    identity,
                    summary,
                };
                return push::store_checked(repo, stanza, name, checked, compression)
                    .await
                    .map(SpoolOutcome::Direct);
            }
            true
        }
        None => false,
    };
    let digest = blob.digest.to_hex();
    let mut queue = spool.lock_queue().await?;
    let record = match queue.cached_cluster(&spool.inner.repo_id)? {
        Some(record) => record,
        None => {
            // First contact: the repository must have the stanza's record (`init` wrote
            // it). The queue is not held meanwhile: a slow store must not hold up others.
            drop(queue);
            let record = repo.require_cluster(stanza).await?;
            queue = spool.lock_queue().await?;
            queue.cache_cluster(&spool.inner.repo_id, &record)?;
            record
        }
    };
    if let Some(id) = &identity {
        check_same_cluster(stanza, &record, &push::cluster_record(id))?;
    }
    if let Some(queued) = queue.get(&name.to_string())? {
        if queued.digest != digest {
            return Err(Error::QueuedConflict {
                name: name.to_string(),
                queued: queued.digest,
                new: digest,
            });
        }
        return Ok(SpoolOutcome::AlreadyQueued { name });
    }
    let entries = queue.entries()?;
    let queued_bytes: u64 = entries.iter().map(|e| e.stored_size).sum();
    if queued_bytes + blob.stored_len() > spool.inner.max_bytes {
        return Ok(SpoolOutcome::NotSpooled {
            name,
            reason: format!(
                "the spool is full ({queued_bytes} bytes in {} files, limit {})",
                entries.len(),
                spool.inner.max_bytes
            ),
        });
    }
    // The body first, durable; then the entry that acknowledges it.
    let key = Spool::body_key(&name.to_string(), &digest)?;
    store_body(spool, &key, &blob, staged).await?;
    let entry = SpoolEntry {
        name: name.to_string(),
        digest,
        raw_size: blob.raw_len,
        stored_size: blob.stored_len(),
        stored_sha256: blob.stored_digest().to_hex(),
        identity: identity.as_ref().map(EntryIdentity::from),
        compression,
        queued_at: now(),
        attempts: 0,
        last_error: None,
        index_checked,
        content: summary.as_ref().and_then(Summarized::content).cloned(),
    };
    // A failure here (the spool's disk) leaves the body without an entry: not removed,
    // since the entry may yet be on disk (a failed flush), and an entry must never name
    // a missing body; the next drain queues it again (a checked body of WAL that
    // PostgreSQL, told of the failure, pushes again anyway).
    queue.put(&entry)?;
    if let Some(warning) = summary.and_then(|s| s.warning(&name)) {
        tracing::warn!("{warning}");
    }
    Ok(SpoolOutcome::Queued {
        name,
        raw_len: blob.raw_len,
        stored_len: blob.stored_len(),
        queued_files: entries.len() as u64 + 1,
        queued_bytes: queued_bytes + blob.stored_len(),
    })
}

/// What the repository's index holds under `name`, or `None` when it did not answer
/// within [`INDEX_CHECK_WAIT`] (or failed): the file is then queued unchecked, as the
/// spool's whole point is that the archiver does not wait on the store. After such a
/// failure, checks are skipped for [`UNREACHABLE_SKIP`].
async fn check_index(
    spool: &Spool,
    repo: &Repo,
    stanza: &Stanza,
    name: &WalFileName,
) -> Option<WalNameState> {
    let marker = spool.inner.dir.join(UNREACHABLE_MARKER);
    let failed_lately = fs::metadata(&marker)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < UNREACHABLE_SKIP);
    if failed_lately {
        tracing::info!(
            "{name}: queued without checking the repository's index (unreachable moments ago)"
        );
        return None;
    }
    let failure =
        match tokio::time::timeout(INDEX_CHECK_WAIT, repo.wal_name_state(stanza, name)).await {
            Ok(Ok(state)) => {
                let _ = fs::remove_file(&marker);
                return Some(state);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} s", INDEX_CHECK_WAIT.as_secs()),
        };
    tracing::warn!(
        "{name}: queued without checking the repository's index ({failure}); a conflict with the repository shows when it is drained"
    );
    // Written, not just created: its time is when this check failed.
    let _ = fs::write(&marker, format!("{}\n", now().to_rfc3339()));
    None
}

/// Links the staged body under `key` (or writes it from memory). A body already there
/// under this name has this content (the name holds the digest), so it is kept.
///
/// Every failure here is the spool's disk (unwritable, full, failing), never the
/// repository's: it is an [`Error::Spool`], which makes archive-push go direct.
async fn store_body(
    spool: &Spool,
    key: &Key,
    blob: &EncodedBlob,
    staged: Option<Staged>,
) -> Result<()> {
    let bodies = &spool.inner.bodies;
    let staged = staged.filter(|st| st.len() == blob.stored_len());
    let stored = match staged {
        Some(staged) => {
            bodies
                .create_all_staged((key.clone(), staged), vec![])
                .await
        }
        None => bodies.create_all(vec![(key.clone(), blob.stored())]).await,
    };
    stored.map(|_| ()).map_err(|e| {
        spool_err(
            &spool.inner.dir.join("wal"),
            format!("cannot store {key}: {e}"),
        )
    })
}

/// Moves queued files into the repository, oldest name first, `parallel` at a time, until
/// the queue stays empty for `linger` (files that failed in a way retrying cannot fix are
/// left queued and reported). Returns `None` when another drainer is at work.
///
/// While the repository fails, every queued file is retried with a growing pause (up to
/// 30 s), for `give_up_after` or forever.
pub async fn drain(
    spool: &Spool,
    repo: &Repo,
    stanza: &Stanza,
    options: &DrainOptions,
) -> Result<Option<DrainReport>> {
    // The repository must exist before anything is moved (only `init` creates it): a
    // drain pointed at the wrong place fails at once, and the spool keeps every file.
    repo.require_cluster(stanza).await?;
    let Some(mut lock) = spool.try_lock_drain()? else {
        return Ok(None);
    };
    let requeued = spool.requeue_unnamed().await?;
    if requeued > 0 {
        tracing::info!("queued again {requeued} spooled files the queue had lost");
    }
    let mut report = DrainReport::default();
    // Names that failed for good in this drain: not retried by it.
    let mut stuck: BTreeSet<String> = BTreeSet::new();
    loop {
        drain_locked(spool, repo, stanza, options, &mut report, &mut stuck).await?;
        drop(lock);
        // A push that queued a file while this drain was finishing saw the lock taken and
        // started no drainer: look once more, now that the lock is free.
        let waiting = spool
            .lock_queue()
            .await?
            .entries()?
            .into_iter()
            .any(|e| !stuck.contains(&e.name));
        if !waiting || report.gave_up.is_some() {
            break;
        }
        match spool.try_lock_drain()? {
            Some(again) => lock = again,
            None => break,
        }
    }
    let entries = spool.lock_queue().await?.entries()?;
    report.remaining = entries.len() as u64;
    report.stuck = entries
        .into_iter()
        .filter(|e| stuck.contains(&e.name))
        .map(|e| {
            let error = e.last_error.unwrap_or_default();
            (e.name, error)
        })
        .collect();
    Ok(Some(report))
}

async fn drain_locked(
    spool: &Spool,
    repo: &Repo,
    stanza: &Stanza,
    options: &DrainOptions,
    report: &mut DrainReport,
    stuck: &mut BTreeSet<String>,
) -> Result<()> {
    let mut pause = Duration::from_secs(1);
    let mut failing_since: Option<Instant> = None;
    let mut idle_since: Option<Instant> = None;
    loop {
        let entries: Vec<SpoolEntry> = spool
            .lock_queue()
            .await?
            .entries()?
            .into_iter()
            .filter(|e| !stuck.contains(&e.name))
            .collect();
        if entries.is_empty() {
            let idle = idle_since.get_or_insert_with(Instant::now);
            if idle.elapsed() >= options.linger {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        idle_since = None;
        let mut attempts = futures::stream::iter(entries)
            .map(|entry| async move {
                let result = move_one(spool, repo, stanza, &entry).await;
                (entry, result)
            })
            .buffer_unordered(options.parallel.max(1));
        let mut last_failure = None;
        while let Some((entry, result)) = attempts.next().await {
            match result {
                Ok(outcome) => {
                    spool.finish(&entry).await?;
                    match outcome {
                        PushOutcome::Pushed { .. } => report.pushed += 1,
                        PushOutcome::AlreadyArchived { .. } => report.already_archived += 1,
                    }
                    tracing::info!("{}: moved from the spool into the repository", entry.name);
                }
                Err(e) => {
                    spool.record_failure(&entry, &e).await?;
                    // Per-file lines are `info`: the background drainer logs at that
                    // level to its file, and a drain run by hand ends with one summary.
                    if e.kind() == ErrorKind::Repository {
                        tracing::info!("{}: still queued: {e}", entry.name);
                        last_failure = Some(e.to_string());
                    } else {
                        tracing::info!(
                            "{}: cannot be moved into the repository, left in the spool for a person to look at: {e}",
                            entry.name
                        );
                        stuck.insert(entry.name.clone());
                    }
                }
            }
        }
        drop(attempts);
        let Some(error) = last_failure else {
            pause = Duration::from_secs(1);
            failing_since = None;
            continue;
        };
        let since = *failing_since.get_or_insert_with(Instant::now);
        if options
            .give_up_after
            .is_some_and(|limit| since.elapsed() >= limit)
        {
            report.gave_up = Some(error);
            return Ok(());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

/// Where the repository holds a queued file's content, which makes it safe to forget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldAs {
    /// Indexed under its name.
    Archived,
    /// Kept as quarantined bytes (the name holds other content).
    Quarantined,
}

/// Removes a queued file from the spool, for a person resolving one the drain cannot move
/// (a conflict): only when the repository holds its content, archived or quarantined, so
/// that forgetting loses nothing. The repository is read before the queue is locked, so a
/// slow store never holds up archive-push.
pub async fn forget(spool: &Spool, repo: &Repo, stanza: &Stanza, name: &str) -> Result<HeldAs> {
    let not_queued = || spool_err(spool.dir(), format!("{name} is not queued"));
    if !spool.exists() {
        return Err(not_queued());
    }
    let entry = spool
        .lock_queue()
        .await?
        .get(name)?
        .ok_or_else(not_queued)?;
    let wal_name: WalFileName = entry.name.parse()?;
    let digest: Digest = entry.digest.parse()?;
    let blob_held = repo.blob_size(&digest).await?.is_some();
    let indexed = repo.wal_digests(stanza, &wal_name).await?.contains(&digest);
    let quarantined = match repo
        .backend()
        .head(&catalog::quarantine_key(stanza, &wal_name, &digest))
        .await
    {
        Ok(_) => true,
        Err(tidemark_store::Error::NotFound { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    let held = match (blob_held, indexed, quarantined) {
        (true, true, _) => HeldAs::Archived,
        (true, false, true) => HeldAs::Quarantined,
        _ => {
            return Err(spool_err(
                spool.dir(),
                format!(
                "the repository does not hold {name} with sha256 {}: forgetting it would lose it",
                entry.digest
            ),
            ))
        }
    };
    let queue = spool.lock_queue().await?;
    match queue.get(name)? {
        Some(current) if current.digest == entry.digest => {
            queue.remove(name)?;
            spool
                .inner
                .bodies
                .delete(&Spool::body_key(&entry.name, &entry.digest)?)
                .await?;
            Ok(held)
        }
        _ => Err(not_queued()),
    }
}

/// Moves one queued file: its body is checked against the digest taken when it was
/// queued (a spool disk can rot too; an upload would carry the damage under a name that
/// promises the content), then stored exactly as a synchronous push stores it.
async fn move_one(
    spool: &Spool,
    repo: &Repo,
    stanza: &Stanza,
    entry: &SpoolEntry,
) -> Result<PushOutcome> {
    let name: WalFileName = entry.name.parse()?;
    let digest: Digest = entry.digest.parse()?;
    let body = spool.body(entry).await?;
    let checked = body.clone();
    let found = tokio::task::spawn_blocking(move || Digest::of(&checked))
        .await
        .expect("hashing a spooled body panicked");
    if body.len() as u64 != entry.stored_size || found.to_hex() != entry.stored_sha256 {
        return Err(tidemark_store::Error::Corrupt {
            key: Spool::body_key(&entry.name, &entry.digest)?,
            detail: format!(
                "the spooled body changed since it was queued ({} bytes with sha256 {}, queued as {} bytes with sha256 {})",
                body.len(),
                found.to_hex(),
                entry.stored_size,
                entry.stored_sha256
            ),
        }
        .into());
    }
    let identity = entry
        .identity
        .map(EntryIdentity::to_segment_identity)
        .transpose()?;
    let summary = match (&entry.content, identity) {
        // Decoded when it was queued; its damage, if any, was reported then.
        (Some(content), _) => Some(Summarized::Whole(content.clone())),
        // Queued by a build from before the content index: decoded from the body now.
        (None, Some(_)) if matches!(name, WalFileName::Segment(_) | WalFileName::Partial(_)) => {
            let key = Spool::body_key(&entry.name, &entry.digest)?;
            let stored = body.clone();
            let raw = tokio::task::spawn_blocking(move || {
                tidemark_store::codec::decode(&key, digest, &stored)
            })
            .await
            .expect("decoding a spooled body panicked")?;
            let queued = EntryIdentity::from(&identity.expect("matched"));
            tokio::task::spawn_blocking(move || entry_summary(&name, &raw, Some(queued)))
                .await
                .expect("the WAL decoder contains its panics")
        }
        (None, _) => None,
    };
    let blob = EncodedBlob::from_stored(digest, entry.raw_size, body);
    let checked = push::Checked {
        content: Content::InMemory(blob, None),
        identity,
        summary,
    };
    push::store_checked(repo, stanza, name, checked, entry.compression).await
}

/// The content summary of a spooled segment's raw bytes (see [`crate::content`]).
fn entry_summary(
    name: &WalFileName,
    raw: &[u8],
    identity: Option<EntryIdentity>,
) -> Option<Summarized> {
    let id = identity?.to_segment_identity().ok()?;
    crate::content::summarize(name, raw, &id)
}
