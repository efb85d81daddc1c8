//! The replay feed: `archive-get` prefetches the segments recovery will ask for next, so
//! that PostgreSQL's one-at-a-time `restore_command` calls are served from local disk.
//!
//! - The prefetch folder sits beside `%p` (PostgreSQL passes `pg_wal/RECOVERYXLOG`):
//!   `pg_wal/tidemark-prefetch/<key>/`, where the key hashes the repository, the stanza
//!   and the machine's boot id. Beside `%p`, the hand-off is one `rename` on the same file
//!   system; inside `pg_wal`, a base backup never copies it (PostgreSQL sends no content
//!   of `pg_wal`); the repository and stanza in the key keep two repositories' files
//!   apart; the boot id makes a folder written before a crash (whose renamed files may
//!   not have reached the disk: nothing is fsynced) invisible after the reboot.
//! - [`take`] is the whole cost of a call whose segment is prefetched: one rename. A file
//!   only ever gets its WAL name in the folder after its blob was read and re-hashed to
//!   the digest the index names (a temporary name before that), so what is renamed into
//!   `%p` is exactly the archived content. Two calls for the same name cannot both have
//!   it: a rename moves it once.
//! - A call whose segment the worker is fetching at that moment (its temporary file is
//!   there) waits for it ([`take_or_wait`]) rather than read the same segment twice.
//! - A call that misses fetches its file directly ([`crate::get`]), then asks a worker to
//!   prefetch what follows (the agent starts `tidemark archive-get --prefetch-worker`,
//!   which runs [`run_worker`]; a lock file lets one worker at a time work a folder).
//!   The miss also leaves the name it fetched in the folder's `want` file: a worker that
//!   was prefetching elsewhere (another timeline, an older position) starts over there.
//! - The worker follows the timeline recovery follows: with `--timeline` (the restore
//!   writes the plan's timeline into its `restore_command`) it reads that timeline's
//!   history file and asks, for each segment, the newest timeline whose start the segment
//!   is at or after, the order in which PostgreSQL asks ([`timeline_of_segment`]);
//!   without it, the timeline of the segment that was missed. It stops at the end of the
//!   archive (the first name the index does not hold), at `--until` (the plan's last
//!   segment), at the first failure (the next call then misses and fetches directly, so
//!   a store that fails reaches PostgreSQL as a failure, never as "not found"), and it
//!   keeps at most `depth` files and `max_bytes` in the folder.
//! - What it leaves is cleaned by itself: files recovery skipped (a segment of another
//!   timeline) once recovery asked for a later one; everything, and the folder, when it
//!   exits (idle, done, recovery over: the data directory's `recovery.signal` gone). A
//!   restore is redone into an empty data directory, so it starts with no folder; a
//!   worker still running for the data directory that was removed holds its folder open
//!   by descriptor and writes through it, so it can never write into the new one.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind as IoKind, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;
use std::sync::Arc;

use tidemark_pg::{
    parse_history, HistoryEntry, SegmentSize, TimelineId, WalFileName, WalSegmentName,
};
use tidemark_store::catalog::{self, Stanza};
use tidemark_store::{codec, multihash, Digest, Repo};
use tokio::task::JoinSet;

use crate::get::{one_digest, write_verified};
use crate::{Error, Result};

/// The folder (beside `%p`) that holds every prefetch folder.
pub const PREFETCH_DIR: &str = "tidemark-prefetch";
/// The file a missing call writes the name it fetched into.
const WANT_FILE: &str = "want";
/// The worker's lock.
const LOCK_FILE: &str = "worker.lock";
/// How often the worker looks at the folder when it has nothing to wait for.
const TICK: Duration = Duration::from_millis(20);
/// Segments up to this size are fetched in batches (held in memory, a batch at a time
/// per task); larger ones are streamed one by one.
const BATCH_MAX_SEGMENT: u64 = 16 << 20;
/// A batch is hashed and written in stripes of this many bytes per segment: the stripes
/// of a batch stay in the core's cache between the hashing and the write.
const STRIPE: usize = 256 << 10;

/// The prefetch folder for a call writing to `dest`, reading `repo_location`'s `stanza`.
pub fn folder(dest: &Path, repo_location: &str, stanza: &Stanza) -> PathBuf {
    let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let key =
        Digest::of(format!("{repo_location}\n{}\n{}", stanza.as_str(), boot_id.trim()).as_bytes())
            .to_hex();
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(PREFETCH_DIR).join(&key[..16])
}

/// Moves the prefetched `name` to `dest`. `Ok(true)`: handed off; `Ok(false)`: not
/// prefetched (no folder, no such file, or the rename failed: the caller fetches it
/// directly, and a failed rename is logged, never returned).
pub fn take(folder: &Path, name: &str, dest: &Path) -> bool {
    if !matches!(name.parse::<WalFileName>(), Ok(WalFileName::Segment(_))) {
        return false;
    }
    match fs::rename(folder.join(name), dest) {
        Ok(()) => true,
        Err(e) if e.kind() == IoKind::NotFound => false,
        Err(e) => {
            tracing::warn!(
                "cannot hand off the prefetched {name} from {}: {e}; fetching it directly",
                folder.display()
            );
            false
        }
    }
}

/// [`take`], and when the prefetcher is fetching `name` right now (its temporary file is
/// there), waits for it up to `limit` rather than fetch the same segment a second time:
/// recovery has caught up with the prefetcher, and two reads of one segment would only
/// slow both. `false` when it is neither ready nor under way, or not ready in time.
pub fn take_or_wait(folder: &Path, name: &str, dest: &Path, limit: Duration) -> bool {
    if take(folder, name, dest) {
        return true;
    }
    let under_way = folder.join(format!(".fetch.{name}"));
    let started = Instant::now();
    while under_way.exists() && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(1));
        if take(folder, name, dest) {
            return true;
        }
    }
    // Placed between the last look and the end of the temporary file.
    take(folder, name, dest)
}

/// After a direct fetch of `name`: records it as the folder's wanted position (creating
/// the folder) and says whether a worker must be started (none holds the lock). Errors
/// are the caller's to log: prefetching is never worth failing a call for.
pub fn want(folder: &Path, name: &str) -> std::io::Result<bool> {
    // The two levels of the folder only, never the directories above: a call still
    // running while its data directory is removed (a drill cleaning up) must not create
    // that directory again.
    for dir in [folder.parent().unwrap_or(folder), folder] {
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Err(e) if e.kind() != IoKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    let tmp = folder.join(format!(".want.{}", std::process::id()));
    fs::write(&tmp, name)?;
    fs::rename(&tmp, folder.join(WANT_FILE))?;
    // Taken and released at once: the worker started next takes it for good.
    Ok(try_lock(folder)?.is_some())
}

/// Takes the worker lock of `folder`: `None` when another process holds it.
fn try_lock(folder: &Path) -> std::io::Result<Option<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(folder.join(LOCK_FILE))?;
    // SAFETY: flock only uses the descriptor, which `file` keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(file));
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == IoKind::WouldBlock {
        Ok(None)
    } else {
        Err(e)
    }
}

/// The timeline PostgreSQL asks for first for segment `segno`, recovering along the
/// timeline whose history is `history` (its ancestors in order, each with the LSN where
/// the next one starts): the newest timeline that starts at or before that segment
/// (`XLogFileReadAnyTLI` tries the timelines newest first, skipping those that begin in a
/// later segment). With no history, `timeline` itself.
pub fn timeline_of_segment(
    timeline: u32,
    history: &[HistoryEntry],
    segno: u64,
    segment_size: SegmentSize,
) -> u32 {
    // Timeline k's start is the switch point of the entry that leaves its parent.
    let mut chosen = history.first().map_or(timeline, |e| e.parent.0);
    for (i, entry) in history.iter().enumerate() {
        let next = history.get(i + 1).map_or(timeline, |e| e.parent.0);
        if entry.switchpoint.0 / segment_size.bytes() <= segno {
            chosen = next;
        }
    }
    chosen
}

/// How the worker works.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Files kept ready at most.
    pub depth: usize,
    /// Bytes kept ready at most (counting fetches under way as full segments).
    pub max_bytes: u64,
    /// Fetches at once.
    pub parallel: usize,
    /// The worker exits when recovery has taken nothing for this long.
    pub idle: Duration,
    /// The timeline recovery follows (`--timeline`), when known.
    pub timeline: Option<u32>,
    /// The last segment recovery needs (`--until`), when known.
    pub until: Option<WalSegmentName>,
}

/// What a worker did, for its log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Another worker held the folder.
    pub already_running: bool,
    /// Files prefetched.
    pub fetched: u64,
    /// Of those, files recovery took.
    pub taken: u64,
    /// Files removed unused.
    pub removed: u64,
    /// Why it stopped.
    pub stopped: String,
}

/// The folder's directory, held open: every path inside goes through the descriptor, so
/// a folder removed (and perhaps created again by a new restore) is never written to.
struct HeldFolder {
    dir: File,
    path: PathBuf,
}

impl HeldFolder {
    fn at(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.dir.as_raw_fd()))
    }

    fn removed(&self) -> bool {
        self.dir.metadata().map_or(true, |m| m.nlink() == 0)
    }

    fn exists(&self, name: &str) -> bool {
        self.at(name).exists()
    }
}

/// Prefetches the segments after `start` into `folder` until the end of the archive,
/// `until`, a failure, idleness or the end of recovery; then removes what it left.
pub async fn run_worker(
    repo: &Repo,
    stanza: &Stanza,
    folder: &Path,
    start: &str,
    options: &WorkerOptions,
) -> Result<WorkerReport> {
    let mut report = WorkerReport::default();
    let Some(lock) = try_lock(folder).map_err(|source| Error::Write {
        path: folder.to_path_buf(),
        source,
    })?
    else {
        report.already_running = true;
        return Ok(report);
    };
    let held = Arc::new(HeldFolder {
        dir: File::open(folder).map_err(|source| Error::Read {
            path: folder.to_path_buf(),
            source,
        })?,
        path: folder.to_path_buf(),
    });
    let mut in_flight = JoinSet::new();
    let result = work(
        repo,
        stanza,
        &held,
        start,
        options,
        &mut report,
        &mut in_flight,
    )
    .await;
    // Fetches still under way end before the clean-up, so that none writes after it.
    in_flight.shutdown().await;
    // Whatever stopped it: nothing it prefetched stays behind.
    report.removed += clean(&held, true);
    drop(lock);
    result.map(|()| report)
}

/// The data directory `folder` belongs to, when it is one (`pg_wal/tidemark-prefetch/KEY`).
fn data_directory(folder: &Path) -> Option<PathBuf> {
    let pgdata = folder.parent()?.parent()?.parent()?;
    pgdata
        .join("PG_VERSION")
        .exists()
        .then(|| pgdata.to_path_buf())
}

fn recovery_over(pgdata: Option<&Path>) -> bool {
    pgdata
        .is_some_and(|d| !d.join("recovery.signal").exists() && !d.join("standby.signal").exists())
}

/// Removes the prefetched segments and temporary files (an earlier worker's, stopped
/// abruptly, at the start; this worker's own when it exits); with `all`, the `want` file,
/// the lock and the folder too. Returns the number of segments removed.
fn clean(held: &HeldFolder, all: bool) -> u64 {
    let mut removed = remove_files(held, all);
    if all && !held.removed() {
        // Still holding the lock (on the file's inode): a call that misses meanwhile finds
        // it held, and writes its `want` file (or `.want.<pid>`, before its rename) without
        // starting a worker. Such a file, written after the pass above, would keep the
        // folder from going and outlive every worker: the folder is emptied again, unless
        // a new lock file says a newer worker (started by a call that found the file
        // gone) owns it now and cleans it itself.
        let _ = fs::remove_file(held.at(LOCK_FILE));
        for _ in 0..3 {
            if fs::remove_dir(&held.path).is_ok() || held.exists(LOCK_FILE) {
                break;
            }
            removed += remove_files(held, true);
        }
        if let Some(parent) = held.path.parent() {
            // The shared parent goes when no other folder is left in it.
            let _ = fs::remove_dir(parent);
        }
    }
    removed
}

/// Removes the prefetched segments and temporary files, and with `all` the `want` files
/// of calls; returns the number of segments removed.
fn remove_files(held: &HeldFolder, all: bool) -> u64 {
    let mut removed = 0;
    let Ok(entries) = fs::read_dir(held.at(".")) else {
        return 0;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let segment = matches!(name.parse::<WalFileName>(), Ok(WalFileName::Segment(_)));
        let temporary = name.starts_with(".fetch.");
        let wanted = all && (name == WANT_FILE || name.starts_with(".want."));
        if segment || temporary || wanted {
            let gone = fs::remove_file(entry.path()).is_ok();
            if gone && segment {
                removed += 1;
            }
        }
    }
    removed
}

/// A finished fetch task: its generation (the position it was started for), and the
/// segment number, name and outcome of each segment of its batch.
type FetchDone = (u64, Vec<(u64, WalSegmentName, Result<Fetched>)>);

/// The outcome of one prefetch.
enum Fetched {
    Placed(u64),
    NotInArchive,
    /// Not fetched: an earlier segment of the batch was missing or failed.
    NotTried,
}

async fn work(
    repo: &Repo,
    stanza: &Stanza,
    held: &Arc<HeldFolder>,
    start: &str,
    options: &WorkerOptions,
    report: &mut WorkerReport,
    in_flight: &mut JoinSet<FetchDone>,
) -> Result<()> {
    let start = match start.parse::<WalFileName>()? {
        WalFileName::Segment(s) => s,
        other => {
            return Err(Error::Wal(tidemark_pg::WalError::BadFileName(format!(
                "{other} is not a segment: nothing to prefetch after it"
            ))))
        }
    };
    let cluster = repo.require_cluster(stanza).await?;
    let size = SegmentSize::new(cluster.wal_segment_size)?;
    // The timeline recovery follows, when its history is known.
    let (followed, history) = match options.timeline {
        Some(t) if t > 1 => match read_history(repo, stanza, t).await {
            Ok(h) => (Some(t), h),
            Err(e) => {
                tracing::warn!("cannot read the history of timeline {t} ({e}): prefetching along the timeline asked for");
                (None, Vec::new())
            }
        },
        other => (other, Vec::new()),
    };
    let pgdata = data_directory(&held.path);
    // Files a worker that stopped abruptly left are of unknown age: start clean.
    report.removed += clean(held, false);
    let until = match options.until {
        Some(u) => Some(u.segment_number(size)?),
        None => None,
    };
    let follow = |timeline: u32, segno: u64| -> WalSegmentName {
        let tli = match followed {
            Some(t) => timeline_of_segment(t, &history, segno, size),
            None => timeline,
        };
        WalSegmentName::from_segment_number(TimelineId(tli), segno, size)
    };

    let mut timeline = start.timeline.0;
    let mut next = start.segment_number(size)? + 1;
    let mut want_seen = start.to_string();
    // Prefetched and not yet taken: segment number -> (name, bytes).
    let mut placed: BTreeMap<u64, (String, u64)> = BTreeMap::new();
    // Fetches under way, each a task of its own (reading and hashing run on every core
    // of the runtime), and their segment numbers.
    let mut pending: BTreeSet<u64> = BTreeSet::new();
    let mut generation = 0u64;
    let mut stopped: Option<String> = None;
    let mut last_taken = Instant::now();
    // Segments of the usual sizes are fetched [`multihash::LANES`] at a time and hashed
    // together (SHA-256 was over half of the worker's CPU, and four streams on one core
    // hash nearly twice as fast as one), in buffers kept for the next batch; larger ones
    // one at a time, streamed, so that memory stays small whatever the segment size.
    let batch_len = if size.bytes() <= BATCH_MAX_SEGMENT {
        multihash::LANES
    } else {
        1
    };
    let buffers = Arc::new(Buffers::new(size.bytes() as usize));
    // The first task after a start (or a new position) fetches one segment, the next
    // two, then whole batches: recovery asks for the segment after the one it missed
    // within milliseconds, and a batch is ready only when all of it is. With a batch of
    // four first, that second call waited 160-320 ms for it; now 10-60 ms.
    let mut batch_cap = 1usize;
    loop {
        if held.removed() {
            report.stopped = "its folder was removed".into();
            return Ok(());
        }
        if recovery_over(pgdata.as_deref()) {
            report.stopped = "recovery is over".into();
            return Ok(());
        }
        // A call that missed asks for a position: start over there unless it is where
        // this worker already is.
        if let Ok(wanted) = fs::read_to_string(held.at(WANT_FILE)) {
            let wanted = wanted.trim().to_string();
            if wanted != want_seen {
                want_seen = wanted.clone();
                if let Ok(WalFileName::Segment(w)) = wanted.parse::<WalFileName>() {
                    let segno = w.segment_number(size)?;
                    let expected = follow(timeline, segno);
                    // Where this worker is: its oldest file ready or under way.
                    let lowest = [placed.keys().next(), pending.first()]
                        .into_iter()
                        .flatten()
                        .copied()
                        .min()
                        .unwrap_or(next);
                    if expected != w || segno >= next || segno + 1 < lowest {
                        tracing::info!("recovery asked for {w}: prefetching from there");
                        if options.timeline.is_none() {
                            timeline = w.timeline.0;
                        }
                        next = segno + 1;
                        generation += 1;
                        batch_cap = 1;
                        stopped = None;
                        report.removed += clean(held, false);
                        placed.clear();
                    }
                }
            }
        }
        // Taken files are gone from the folder; those before the newest taken were
        // skipped by recovery (another timeline's) and go too.
        let taken: Vec<u64> = placed
            .iter()
            .filter(|(_, (name, _))| !held.exists(name))
            .map(|(s, _)| *s)
            .collect();
        if let Some(&newest) = taken.iter().max() {
            last_taken = Instant::now();
            report.taken += taken.len() as u64;
            for s in &taken {
                placed.remove(s);
            }
            let skipped: Vec<u64> = placed.range(..newest).map(|(s, _)| *s).collect();
            for s in skipped {
                if let Some((name, _)) = placed.remove(&s) {
                    if fs::remove_file(held.at(&name)).is_ok() {
                        report.removed += 1;
                    }
                }
            }
        }
        // Start fetches while there is room: a batch of consecutive segments per task.
        let ready_bytes: u64 = placed.values().map(|(_, b)| b).sum();
        while stopped.is_none() && in_flight.len() < options.parallel.max(1) {
            let mut batch = Vec::with_capacity(batch_len);
            let this_batch_len = batch_len.min(batch_cap);
            while batch.len() < this_batch_len
                && placed.len() + pending.len() < options.depth
                && ready_bytes + (pending.len() as u64 + 1) * size.bytes() <= options.max_bytes
            {
                if until.is_some_and(|u| next > u) {
                    stopped = Some("the plan's last segment is prefetched".into());
                    break;
                }
                batch.push((next, follow(timeline, next)));
                pending.insert(next);
                next += 1;
            }
            if batch.is_empty() {
                break;
            }
            batch_cap = (batch_cap * 2).min(batch_len);
            let this_generation = generation;
            let (repo, stanza, held, buffers) = (
                repo.clone(),
                stanza.clone(),
                Arc::clone(held),
                Arc::clone(&buffers),
            );
            // On a blocking thread of its own, driven there: the blob reader's sink is not
            // `Send`, and decoding and hashing should not hold up this loop.
            let runtime = tokio::runtime::Handle::current();
            in_flight.spawn_blocking(move || {
                let names: Vec<WalSegmentName> = batch.iter().map(|(_, n)| *n).collect();
                let outcomes = if names.len() == 1 {
                    vec![runtime.block_on(fetch_one(&repo, &stanza, &held, &names[0]))]
                } else {
                    runtime.block_on(fetch_batch(&repo, &stanza, &held, &names, &buffers))
                };
                let done = batch
                    .into_iter()
                    .zip(outcomes)
                    .map(|((segno, name), outcome)| (segno, name, outcome))
                    .collect();
                (this_generation, done)
            });
        }
        if in_flight.is_empty() {
            if stopped.is_some() && placed.is_empty() {
                report.stopped = stopped.unwrap_or_default();
                return Ok(());
            }
            if last_taken.elapsed() >= options.idle {
                report.stopped = format!("recovery took nothing for {} s", options.idle.as_secs());
                return Ok(());
            }
            tokio::time::sleep(TICK).await;
            continue;
        }
        let done = tokio::time::timeout(TICK, in_flight.join_next()).await;
        let Ok(Some(joined)) = done else {
            continue;
        };
        let (this_generation, done) = match joined {
            Ok(result) => result,
            // A fetch task cannot be cancelled here, and a panic ends the process
            // (the binary's panic hook): nothing to place.
            Err(e) => {
                report.stopped = format!("a prefetch task failed: {e}");
                return Ok(());
            }
        };
        for (segno, name, outcome) in done {
            pending.remove(&segno);
            match outcome {
                Ok(Fetched::Placed(len)) if this_generation == generation => {
                    report.fetched += 1;
                    tracing::debug!("prefetched {name}");
                    placed.insert(segno, (name.to_string(), len));
                }
                Ok(Fetched::Placed(_)) => {
                    // Fetched for a position recovery left: not wanted any more.
                    let _ = fs::remove_file(held.at(&name.to_string()));
                }
                Ok(Fetched::NotInArchive) => {
                    if this_generation == generation && stopped.is_none() {
                        stopped = Some(format!("the archive ends before {name}"));
                    }
                }
                // An earlier segment of its batch ended the batch: that one says why.
                Ok(Fetched::NotTried) => {}
                Err(e) => {
                    tracing::warn!("cannot prefetch {name}: {e}; recovery fetches it directly");
                    if this_generation == generation {
                        stopped = Some(format!("prefetching {name} failed: {e}"));
                    }
                }
            }
        }
    }
}

/// Fetches `name` into the folder: a temporary name, the blob re-hashed to the digest the
/// index names as it is written, then the WAL name.
async fn fetch_one(
    repo: &Repo,
    stanza: &Stanza,
    held: &HeldFolder,
    name: &WalSegmentName,
) -> Result<Fetched> {
    let Some(digest) = one_digest(repo, stanza, &WalFileName::Segment(*name)).await? else {
        return Ok(Fetched::NotInArchive);
    };
    let final_name = name.to_string();
    let tmp = held.at(&format!(".fetch.{final_name}"));
    let shown = held.path.join(&final_name);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|source| Error::Write {
            path: shown.clone(),
            source,
        })?;
    let len = write_verified(repo, &digest, file, &tmp, &held.at(&final_name), &shown).await?;
    Ok(Fetched::Placed(len))
}

/// Fetches a batch of consecutive segments into the folder, each as [`fetch_one`] does:
/// a temporary name first (so that a call for it waits rather than fetch it again), the
/// WAL name only once its content hashes to the digest the index names. The blobs are
/// read at once, decoded into buffers and hashed together. The batch ends at the first
/// segment the archive lacks or that fails; the ones after it are not tried.
async fn fetch_batch(
    repo: &Repo,
    stanza: &Stanza,
    held: &HeldFolder,
    names: &[WalSegmentName],
    buffers: &Buffers,
) -> Vec<Result<Fetched>> {
    let mut outcomes: Vec<Result<Fetched>> = Vec::with_capacity(names.len());
    // Up to the first segment that is missing or fails: its digest and temporary file.
    let mut found = Vec::with_capacity(names.len());
    for name in names {
        let final_name = name.to_string();
        let tmp = held.at(&format!(".fetch.{final_name}"));
        let digest = match one_digest(repo, stanza, &WalFileName::Segment(*name)).await {
            Ok(Some(digest)) => digest,
            Ok(None) => {
                outcomes.push(Ok(Fetched::NotInArchive));
                break;
            }
            Err(e) => {
                outcomes.push(Err(e));
                break;
            }
        };
        let opened = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp);
        match opened {
            Ok(file) => found.push((final_name, digest, file, tmp)),
            Err(source) => {
                outcomes.push(Err(Error::Write {
                    path: held.path.join(&final_name),
                    source,
                }));
                break;
            }
        }
    }
    let reads = found.iter().map(|(_, digest, _, _)| {
        let key = catalog::blob_key(digest);
        async move { repo.backend().get(&key).await }
    });
    let stored = futures::future::join_all(reads).await;
    // Decoded up to the first blob that cannot be read or decoded; `failed` is the error
    // of the first segment not placed, whichever step it failed at.
    let mut decoded = Vec::with_capacity(found.len());
    let mut failed = None;
    for ((_, digest, _, _), stored) in found.iter().zip(stored) {
        let mut buffer = buffers.take();
        let key = catalog::blob_key(digest);
        let len =
            stored.and_then(|stored| codec::decode_unverified_into(&key, &stored, &mut buffer));
        match len {
            Ok(len) => decoded.push((buffer, len)),
            Err(e) => {
                buffers.put(buffer);
                failed = Some(Error::from(e));
                break;
            }
        }
    }
    // Hashed and written stripe by stripe, every lane's stripe written while it is still
    // in the cache, into the temporary files; a file is named only once its digest
    // matches. Segments of one size (all of them, in practice) are hashed side by side;
    // otherwise one after another.
    let mut written: Vec<std::io::Result<()>> = (0..decoded.len()).map(|_| Ok(())).collect();
    let mut write_stripe = |lane: usize, bytes: &[u8]| {
        if written[lane].is_ok() {
            let mut file: &File = &found[lane].2;
            written[lane] = file.write_all(bytes);
        }
    };
    let same_len = decoded.windows(2).all(|w| w[0].1 == w[1].1);
    let digests: Vec<Digest> = if same_len && !decoded.is_empty() {
        let len = decoded[0].1;
        let whole = len / 64 * 64;
        let mut lanes = multihash::Lanes::new(decoded.len());
        for at in (0..whole).step_by(STRIPE) {
            let end = (at + STRIPE).min(whole);
            let stripe: Vec<&[u8]> = decoded.iter().map(|(b, _)| &b[at..end]).collect();
            lanes.update(&stripe);
            for (lane, bytes) in stripe.iter().enumerate() {
                write_stripe(lane, bytes);
            }
        }
        let tails: Vec<&[u8]> = decoded.iter().map(|(b, _)| &b[whole..len]).collect();
        for (lane, bytes) in tails.iter().enumerate() {
            write_stripe(lane, bytes);
        }
        lanes.finish(&tails)
    } else {
        let pieces: Vec<&[u8]> = decoded.iter().map(|(b, len)| &b[..*len]).collect();
        for (lane, bytes) in pieces.iter().enumerate() {
            write_stripe(lane, bytes);
        }
        multihash::digest_many(&pieces)
    };
    let mut placed = Vec::with_capacity(decoded.len());
    for (((final_name, digest, _, tmp), (_, len)), (actual, write)) in found
        .iter()
        .zip(&decoded)
        .zip(digests.into_iter().zip(written))
    {
        let key = catalog::blob_key(digest);
        let shown = held.path.join(final_name);
        let named = codec::check_decoded(&key, actual, *digest)
            .map_err(Error::from)
            .and_then(|()| {
                write
                    .and_then(|()| fs::rename(tmp, held.at(final_name)))
                    .map_err(|source| Error::Write {
                        path: shown,
                        source,
                    })
            });
        match named {
            Ok(()) => placed.push(*len as u64),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    for (buffer, _) in decoded {
        buffers.put(buffer);
    }
    // Every temporary file not renamed goes: nothing half-written stays in the folder.
    for (_, _, _, tmp) in found.iter().skip(placed.len()) {
        let _ = fs::remove_file(tmp);
    }
    let tried = placed.len();
    let mut head: Vec<Result<Fetched>> = placed
        .into_iter()
        .map(|len| Ok(Fetched::Placed(len)))
        .collect();
    if tried < found.len() {
        head.push(Err(failed.expect("a segment found but not placed failed")));
    } else {
        head.append(&mut outcomes);
    }
    head.resize_with(names.len(), || Ok(Fetched::NotTried));
    head
}

/// Buffers of one segment's size, kept between batches: a fresh one costs a page fault
/// per 4 KiB written into it. At most the batches under way hold them.
struct Buffers {
    size: usize,
    free: std::sync::Mutex<Vec<Vec<u8>>>,
}

impl Buffers {
    fn new(size: usize) -> Buffers {
        Buffers {
            size,
            free: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Vec<u8> {
        let kept = self.free.lock().expect("buffers").pop();
        kept.unwrap_or_else(|| vec![0; self.size])
    }

    fn put(&self, buffer: Vec<u8>) {
        self.free.lock().expect("buffers").push(buffer);
    }
}

/// The parsed history file of `timeline`, read (verified) from the repository.
async fn read_history(repo: &Repo, stanza: &Stanza, timeline: u32) -> Result<Vec<HistoryEntry>> {
    let name = WalFileName::History(TimelineId(timeline));
    let digests = repo.wal_digests(stanza, &name).await?;
    let [digest] = digests.as_slice() else {
        return Err(Error::Wal(tidemark_pg::WalError::BadHistory(format!(
            "{name}: {} versions in the archive",
            digests.len()
        ))));
    };
    let bytes = repo.get_blob(digest).await?;
    Ok(parse_history(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_pg::Lsn;

    fn entry(parent: u32, lsn: u64) -> HistoryEntry {
        HistoryEntry {
            parent: TimelineId(parent),
            switchpoint: Lsn(lsn),
            reason: String::new(),
        }
    }

    #[test]
    fn the_timeline_asked_for_switches_in_the_segment_of_the_switch_point() {
        let size = SegmentSize::new(16 << 20).unwrap();
        let seg = 16u64 << 20;
        // Timeline 3: left 1 in segment 5, left 2 in segment 9.
        let history = [entry(1, 5 * seg + 100), entry(2, 9 * seg + 200)];
        let asked: Vec<u32> = (3..12)
            .map(|s| timeline_of_segment(3, &history, s, size))
            .collect();
        assert_eq!(asked, vec![1, 1, 2, 2, 2, 2, 3, 3, 3]);
        assert_eq!(timeline_of_segment(1, &[], 7, size), 1);
        // A switch exactly at a segment boundary: the new timeline from that segment.
        assert_eq!(timeline_of_segment(2, &[entry(1, 6 * seg)], 5, size), 1);
        assert_eq!(timeline_of_segment(2, &[entry(1, 6 * seg)], 6, size), 2);
    }

    #[test]
    fn take_hands_a_file_over_once_and_only_segments() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("f");
        fs::create_dir(&folder).unwrap();
        let name = "000000010000000000000003";
        fs::write(folder.join(name), b"wal").unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        assert!(take(&folder, name, &dest));
        assert_eq!(fs::read(&dest).unwrap(), b"wal");
        assert!(!take(&folder, name, &dest), "a file is handed over once");
        fs::write(folder.join("00000002.history"), b"x").unwrap();
        assert!(
            !take(&folder, "00000002.history", &dest),
            "history files are never prefetched"
        );
        assert!(!take(&dir.path().join("none"), name, &dest));
    }

    #[test]
    fn a_call_waits_for_the_segment_under_way_and_only_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("f");
        fs::create_dir(&folder).unwrap();
        let dest = dir.path().join("RECOVERYXLOG");
        let name = "000000010000000000000004";
        let under_way = folder.join(format!(".fetch.{name}"));
        fs::write(&under_way, b"partly").unwrap();
        let placing = {
            let (under_way, done) = (under_way.clone(), folder.join(name));
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                fs::write(&under_way, b"whole").unwrap();
                fs::rename(&under_way, &done).unwrap();
            })
        };
        assert!(take_or_wait(&folder, name, &dest, Duration::from_secs(5)));
        placing.join().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"whole");
        // A temporary file that never completes: given up after the limit.
        fs::write(folder.join(".fetch.000000010000000000000005"), b"stuck").unwrap();
        let started = Instant::now();
        assert!(!take_or_wait(
            &folder,
            "000000010000000000000005",
            &dest,
            Duration::from_millis(100)
        ));
        assert!(started.elapsed() >= Duration::from_millis(100));
        // Nothing under way: no wait at all.
        assert!(!take_or_wait(
            &folder,
            "000000010000000000000006",
            &dest,
            Duration::from_secs(60)
        ));
    }

    #[test]
    fn want_says_whether_a_worker_must_start() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("a/b");
        assert!(
            want(&dir.path().join("gone/a/b"), "000000010000000000000003").is_err(),
            "the directories above the folder are never created"
        );
        assert!(want(&folder, "000000010000000000000003").unwrap());
        assert_eq!(
            fs::read_to_string(folder.join(WANT_FILE)).unwrap(),
            "000000010000000000000003"
        );
        let held = try_lock(&folder).unwrap().unwrap();
        assert!(!want(&folder, "000000010000000000000004").unwrap());
        drop(held);
        assert!(want(&folder, "000000010000000000000004").unwrap());
    }

    /// A worker that exits removes every file a call may have left while it held the
    /// lock (the `want` file and a `.want.<pid>` not yet renamed), and the folder with
    /// them.
    #[test]
    fn an_exiting_worker_leaves_no_want_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("tidemark-prefetch/k");
        want(&folder, "000000010000000000000003").unwrap();
        let lock = try_lock(&folder).unwrap().unwrap();
        fs::write(folder.join(".want.4242"), "000000010000000000000005").unwrap();
        fs::write(folder.join("000000010000000000000004"), b"wal").unwrap();
        fs::write(folder.join(".fetch.000000010000000000000005"), b"w").unwrap();
        let held = HeldFolder {
            dir: File::open(&folder).unwrap(),
            path: folder.clone(),
        };
        assert_eq!(clean(&held, true), 1);
        drop(lock);
        assert!(!folder.exists(), "the folder went with every file in it");
        assert!(!dir.path().join("tidemark-prefetch").exists());
    }

    #[test]
    fn folders_differ_by_repository_and_stanza() {
        let dest = Path::new("pg_wal/RECOVERYXLOG");
        let a = folder(dest, "file:///r", &Stanza::new("main").unwrap());
        let b = folder(dest, "file:///other", &Stanza::new("main").unwrap());
        let c = folder(dest, "file:///r", &Stanza::new("x").unwrap());
        assert!(a.starts_with("pg_wal/tidemark-prefetch"));
        assert!(a != b && a != c && b != c);
    }
}
