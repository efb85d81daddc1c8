//! Blob garbage collection (mark and sweep), and the presence markers that keep it safe
//! beside writers that run at the same time, on any store (see `docs/repository-format.md`,
//! "Garbage collection").
//!
//! **Mark.** Every blob something in the repository names is referenced: of every stanza,
//! each backup's file list, its pages, their files' chunks and the chunks of the server's
//! manifest; each WAL index entry (segments, `.partial`, `.backup`, history files); a
//! claim whose name has no entry yet (a push at work between its claim and its entry);
//! each quarantine record; the proof lists the newest verify record names. Records the
//! caller is about to remove (`expire --dry-run`) are passed as [`GcRequest::excluded`]
//! and do not count. A backup record that cannot be read stops the collection before
//! anything is removed: what it names cannot be known.
//!
//! **Bounded memory.** The references are written, 32 bytes each, to one temporary file
//! per blob shard (the digest's first byte, as in `blobs/<hh>/`); the sweep then takes the
//! shards one at a time: it reads the shard's references, sorts them, lists the shard's
//! blobs and removes the unreferenced ones. Memory holds one shard's references and one
//! page of a file list, so about 1/256 of the references; time is linear in the objects
//! (plus a sort per shard). The listings that grow with the archive are walked a page at
//! a time: the WAL index one archived position at a time ([`WalIndexWalk`]), the
//! stanzas by skipping from one stanza's keys to the next. A shard's blob listing is held
//! while it is swept (1/256 of the blobs, as its references are).
//!
//! **Sweep.** A blob is removed only when no reference names it and the store says it was
//! written more than the grace ago (`gc_grace`); a blob without a modification time is
//! kept. The grace covers the writers that hold no lease: archive-push between its blob
//! and its index entry, verify between a proof list and its record.
//!
//! **Presence markers.** A writer that may name a blob it found already there (a backup
//! deduplicating a chunk against an old, unreferenced one) cannot rely on the grace. So:
//! a backup writes a **lease** (`leases/<id>`, refreshed while it runs) before it writes
//! anything, then waits while a **collection marker** (`gc/<id>`) is live; the collection
//! writes its marker, then looks at the leases, and sweeps only when none is live. Each
//! side writes its own object before it looks for the other's, so at least one of them
//! sees the other: the backup waits for the collection to end, or the collection skips
//! its sweep. A lease or marker that expired long ago (its writer died) is removed by the
//! next collection. archive-push writes no lease (it must stay fast): when it found its
//! blob already there, it looks for a live collection marker after its index entry is
//! written, and if there is one waits for it to end and stores its blob again (see
//! [`Repo::wait_while_collecting`]).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::backend::{ObjectMeta, PutMode, TempFiles, DELETE_BATCH};
use crate::backup::{self, BackupRecord};
use crate::catalog::{self, Stanza, WalRecord};
use crate::wal_walk::WalIndexWalk;
use crate::{Digest, Error, Key, Repo, Result};

/// Where writers' leases live.
pub const LEASES_PREFIX: &str = "leases/";
/// Where collections' markers live.
pub const GC_MARKERS_PREFIX: &str = "gc/";
/// How long a lease or marker stays live without being refreshed. Refreshed every
/// quarter of it.
pub const PRESENCE_TTL: StdDuration = StdDuration::from_secs(600);
/// How long past its expiry a lease or marker is still taken for live: room for clocks
/// that disagree between hosts.
pub const CLOCK_MARGIN: StdDuration = StdDuration::from_secs(300);
/// How often a writer looks again while a collection runs.
const WAIT_POLL: StdDuration = StdDuration::from_millis(500);

/// A lease or a collection marker: who is at work, and until when it counts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Presence {
    /// `backup`, `expire`, …
    pub kind: String,
    /// The stanza it works on.
    pub stanza: String,
    /// The host and process id, for a person reading it.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Until when it counts (refreshed while its writer runs).
    pub expires_at: DateTime<Utc>,
}

impl Presence {
    /// Whether it still counts at `now`: not expired, with the clock margin.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at + margin()
    }
}

fn margin() -> Duration {
    Duration::from_std(CLOCK_MARGIN).expect("small")
}

fn ttl() -> Duration {
    Duration::from_std(PRESENCE_TTL).expect("small")
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// A lease or marker this process holds: written when taken, refreshed in the background
/// every quarter of [`PRESENCE_TTL`], removed by [`Held::release`] (or left to expire when
/// the process dies).
#[derive(Debug)]
pub struct Held {
    repo: Repo,
    key: Key,
    state: Arc<Mutex<HeldState>>,
    refresher: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct HeldState {
    record: Presence,
    /// A refresh came after the previous expiry: a collection may have taken it for dead.
    lapsed: bool,
}

impl Held {
    /// Whether it has counted without a break since it was taken, and still does: a
    /// backup checks this before its record, a collection before each removal.
    pub fn unbroken(&self) -> bool {
        let state = self.state.lock().expect("lease state");
        !state.lapsed && repo_now() < state.record.expires_at
    }

    /// Its key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Stops refreshing it and removes it.
    pub async fn release(self) -> Result<()> {
        self.refresher.abort();
        self.repo.backend().delete(&self.key).await
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

fn repo_now() -> DateTime<Utc> {
    crate::repo::now()
}

/// Presence records as listed and read: unreadable ones are kept with `None`.
type Listed = Vec<(Key, Option<Presence>, Option<DateTime<Utc>>)>;

impl Repo {
    /// Writes a lease (`leases/…`) or a collection marker (`gc/…`) for `kind` on `stanza`
    /// and keeps it refreshed until released.
    async fn hold(&self, prefix: &str, kind: &str, stanza: &Stanza) -> Result<Held> {
        let now = repo_now();
        let pid = std::process::id();
        let key = Key::new(format!(
            "{prefix}{kind}-{}-{pid}-{:08x}",
            now.format("%Y%m%dT%H%M%S%.3fZ"),
            now.timestamp_subsec_nanos()
        ))?;
        let record = Presence {
            kind: kind.to_string(),
            stanza: stanza.to_string(),
            host: host_name(),
            pid,
            started_at: now,
            expires_at: now + ttl(),
        };
        self.backend()
            .put(
                &key,
                Bytes::from(catalog::encode_record(&record)),
                PutMode::Overwrite,
            )
            .await?;
        let state = Arc::new(Mutex::new(HeldState {
            record,
            lapsed: false,
        }));
        let refresher = {
            let (repo, key, state) = (self.clone(), key.clone(), Arc::clone(&state));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(PRESENCE_TTL / 4).await;
                    let now = repo_now();
                    let mut next = state.lock().expect("lease state").record.clone();
                    next.expires_at = now + ttl();
                    let body = Bytes::from(catalog::encode_record(&next));
                    match repo.backend().put(&key, body, PutMode::Overwrite).await {
                        Ok(()) => {
                            let mut s = state.lock().expect("lease state");
                            if now >= s.record.expires_at {
                                s.lapsed = true;
                            }
                            s.record = next;
                        }
                        Err(e) => tracing::warn!("cannot refresh {key}: {e}"),
                    }
                }
            })
        };
        Ok(Held {
            repo: self.clone(),
            key,
            state,
            refresher,
        })
    }

    /// Takes a writer's lease (a backup's, before it writes anything): a collection that
    /// starts while it is live does not sweep. Then waits while a collection that started
    /// before it runs ([`Repo::wait_while_collecting`]).
    pub async fn take_lease(&self, kind: &str, stanza: &Stanza) -> Result<Held> {
        let lease = self.hold(LEASES_PREFIX, kind, stanza).await?;
        self.wait_while_collecting().await?;
        Ok(lease)
    }

    async fn presences(&self, prefix: &str) -> Result<Listed> {
        let listed = self.backend().list(prefix).await?;
        futures::stream::iter(listed)
            .map(|m| async move {
                match self.get_record::<Presence>(&m.key).await {
                    Ok(p) => Ok(Some((m.key, Some(p), m.last_modified))),
                    Err(e) if e.is_not_found() => Ok(None),
                    Err(e) if e.is_unreadable_record() => Ok(Some((m.key, None, m.last_modified))),
                    Err(e) => Err(e),
                }
            })
            .buffered(16)
            .try_filter_map(|x| async move { Ok(x) })
            .try_collect()
            .await
    }

    /// The live collection markers.
    pub async fn live_collections(&self) -> Result<Vec<Presence>> {
        let now = repo_now();
        Ok(self
            .presences(GC_MARKERS_PREFIX)
            .await?
            .into_iter()
            .filter_map(|(_, p, written)| match p {
                Some(p) => p.is_live(now).then_some(p),
                // Unreadable: live for as long as a readable one written then would be.
                None => written
                    .filter(|w| now < *w + ttl() + margin())
                    .map(|w| Presence {
                        kind: "unknown".into(),
                        stanza: String::new(),
                        host: "unknown".into(),
                        pid: 0,
                        started_at: w,
                        expires_at: w + ttl(),
                    }),
            })
            .collect())
    }

    /// Waits while a collection marker is live (a sweep may be removing unreferenced
    /// blobs). Returns whether it waited. A collection removes its marker when it ends;
    /// one whose process died stops counting [`CLOCK_MARGIN`] after its expiry.
    pub async fn wait_while_collecting(&self) -> Result<bool> {
        let mut waited = false;
        loop {
            let live = self.live_collections().await?;
            let Some(first) = live.first() else {
                return Ok(waited);
            };
            if !waited {
                tracing::warn!(
                    "garbage collection at work ({} on {}, pid {}, since {}): waiting for it to end",
                    first.kind,
                    first.host,
                    first.pid,
                    first.started_at
                );
            }
            waited = true;
            tokio::time::sleep(WAIT_POLL).await;
        }
    }
}

/// What a collection is asked to do.
#[derive(Clone, Debug)]
pub struct GcRequest {
    /// The stanza whose expire runs it (for the marker; every stanza is marked).
    pub stanza: Stanza,
    /// Now.
    pub now: DateTime<Utc>,
    /// Blobs written less than this ago are never removed.
    pub grace: Duration,
    /// Count what would go, remove nothing, write no marker.
    pub dry_run: bool,
    /// Records to treat as gone (the backup records the expire removes, for a dry run).
    pub excluded: BTreeSet<Key>,
    /// The WAL index keys to treat as gone, asked one position at a time (those the
    /// expire removes, for a dry run: too many to list in memory).
    pub wal_excluded: Option<Arc<dyn WalExclusion>>,
}

/// Which WAL index keys a collection treats as gone, decided one archived position at a
/// time as the collection walks the index ([`WalIndexWalk`]).
pub trait WalExclusion: Send + Sync + std::fmt::Debug {
    /// Of `position` (the keys of one archived position of `stanza`'s WAL index, in key
    /// order), those to treat as gone.
    fn excluded(&self, stanza: &Stanza, position: &[ObjectMeta]) -> Vec<Key>;
}

/// What a collection did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// References found (with repeats: a chunk shared by ten backups counts ten times).
    pub references: u64,
    /// Blobs listed.
    pub blobs: u64,
    /// Unreferenced blobs removed (or that would be).
    pub removed: u64,
    /// Their stored bytes.
    pub removed_bytes: u64,
    /// Unreferenced blobs kept because they are younger than the grace (or their age
    /// is unknown).
    pub young_kept: u64,
    /// Why nothing was swept, when nothing was (a writer in flight).
    pub sweep_skipped: Option<String>,
    /// Leases and markers of dead writers removed.
    pub dead_presences_removed: u64,
    /// Stale temporary files removed (or found, in a dry run).
    pub temp_files: u64,
    /// Their bytes.
    pub temp_bytes: u64,
}

/// Progress of a collection, for a progress line.
#[derive(Clone, Copy, Debug)]
pub enum GcStep {
    /// A backup's references were written down.
    Marked,
    /// Every reference is written down; the sweep starts.
    MarkDone,
    /// One shard was swept.
    Swept,
}

/// The references, one temporary file per blob shard (see the module doc).
struct ShardSpill {
    dir: tempfile::TempDir,
    writers: Vec<BufWriter<File>>,
    count: u64,
}

impl ShardSpill {
    fn new() -> Result<ShardSpill> {
        let dir = tempfile::Builder::new()
            .prefix("tidemark-gc-")
            .tempdir()
            .map_err(|e| io("create", std::env::temp_dir(), e))?;
        let mut writers = Vec::with_capacity(256);
        for shard in 0..256 {
            let path = dir.path().join(format!("{shard:02x}"));
            let file = File::create(&path).map_err(|e| io("create", path, e))?;
            writers.push(BufWriter::with_capacity(4096, file));
        }
        Ok(ShardSpill {
            dir,
            writers,
            count: 0,
        })
    }

    fn add(&mut self, digest: &Digest) -> Result<()> {
        self.count += 1;
        let shard = usize::from(digest.0[0]);
        self.writers[shard]
            .write_all(&digest.0)
            .map_err(|e| io("write", self.dir.path().to_path_buf(), e))
    }

    /// The shard's references, sorted and distinct.
    fn shard(&mut self, shard: u8) -> Result<Vec<[u8; 32]>> {
        let path = self.dir.path().join(format!("{shard:02x}"));
        self.writers[usize::from(shard)]
            .flush()
            .map_err(|e| io("write", path.clone(), e))?;
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| io("read", path.clone(), e))?;
        let mut refs: Vec<[u8; 32]> = bytes
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect();
        drop(bytes);
        refs.sort_unstable();
        refs.dedup();
        // The shard is done with: give its disk back.
        let _ = std::fs::remove_file(&path);
        Ok(refs)
    }
}

fn io(op: &'static str, path: PathBuf, source: std::io::Error) -> Error {
    Error::Io { op, path, source }
}

/// The stanzas the repository holds: every name under `stanzas/`, also one whose cluster
/// record is missing (a damaged stanza's blobs are still referenced).
/// One listing request per stanza: after a stanza's first key, the next asks for what
/// sorts after `stanzas/<name>0` (`0` follows `/`), past all of that stanza's keys.
async fn stanzas(repo: &Repo) -> Result<Vec<Stanza>> {
    let mut names = BTreeSet::new();
    let mut after: Option<String> = None;
    loop {
        let page = repo
            .backend()
            .list_page("stanzas/", after.as_deref(), 1)
            .await?;
        let Some(m) = page.first() else { break };
        let Some(name) = m.key.as_str().split('/').nth(1) else {
            break;
        };
        if m.key.as_str().split('/').count() > 2 {
            names.insert(name.to_string());
            after = Some(format!("stanzas/{name}0"));
        } else {
            // An object named like a stanza folder: not a stanza.
            after = Some(m.key.to_string());
        }
    }
    names.iter().map(|n| Stanza::new(n)).collect()
}

/// Writes down every reference of one stanza (see the module doc).
async fn mark_stanza(
    repo: &Repo,
    stanza: &Stanza,
    request: &GcRequest,
    spill: &mut ShardSpill,
    on_step: &mut (dyn FnMut(GcStep) + Send),
) -> Result<()> {
    let excluded = &request.excluded;
    // Backups: every record must be readable, or nothing is swept.
    let listed = repo.backend().list(&backup::backups_prefix(stanza)).await?;
    for m in listed.iter().filter(|m| !excluded.contains(&m.key)) {
        let record: BackupRecord = match repo.get_record(&m.key).await {
            Ok(r) => r,
            Err(e) if e.is_not_found() => continue,
            Err(e) => {
                return Err(Error::Catalog {
                    what: format!("backup record {}", m.key),
                    detail: format!(
                        "cannot be read ({e}): garbage collection cannot know what it references, and removes nothing"
                    ),
                })
            }
        };
        spill.add(&record.file_list)?;
        let list = repo.backup_files(&record).await?;
        for chunk in &list.pg_manifest.chunks {
            spill.add(chunk)?;
        }
        let mut pages = futures::stream::iter(list.pages.clone())
            .map(|digest| async move { repo.file_list_page(&digest).await.map(|p| (digest, p)) })
            .buffered(8);
        while let Some((digest, page)) = pages.try_next().await? {
            spill.add(&digest)?;
            for entry in &page.entries {
                if let backup::EntryKind::File { chunks } = &entry.kind {
                    for chunk in chunks {
                        spill.add(chunk)?;
                    }
                }
            }
        }
        on_step(GcStep::Marked);
    }

    // The WAL index, one position at a time: entries name their blob in their key; a
    // claim is read only when its name has no entry (a push between its claim and its
    // entry). A name's entries and claim are keys of the same position.
    let mut walk = WalIndexWalk::new(repo.backend().as_ref(), stanza);
    while let Some(position) = walk.next_position().await? {
        let gone: BTreeSet<Key> = match &request.wal_excluded {
            Some(exclusion) => exclusion.excluded(stanza, &position).into_iter().collect(),
            None => BTreeSet::new(),
        };
        let mut named = BTreeSet::new();
        let mut claims = Vec::new();
        for m in position
            .iter()
            .filter(|m| !excluded.contains(&m.key) && !gone.contains(&m.key))
        {
            if let Some((name, digest)) = catalog::parse_wal_key(&m.key) {
                spill.add(&digest)?;
                named.insert(catalog::wal_claim_key(stanza, &name));
            } else if m.key.as_str().ends_with(".claim") {
                claims.push(&m.key);
            }
        }
        for claim in claims.into_iter().filter(|k| !named.contains(*k)) {
            match repo.get_record::<WalRecord>(claim).await {
                Ok(record) => spill.add(&record.digest)?,
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    return Err(Error::Catalog {
                        what: format!("claim {claim}"),
                        detail: format!("cannot be read ({e}): garbage collection removes nothing"),
                    })
                }
            }
        }
    }

    // Quarantine: the key carries the refused content's digest.
    for m in repo
        .backend()
        .list(&catalog::quarantine_prefix(stanza))
        .await?
    {
        if let Some(digest) = m
            .key
            .file_name()
            .rsplit_once('.')
            .and_then(|(_, d)| d.parse::<Digest>().ok())
        {
            spill.add(&digest)?;
        }
    }

    // The proof lists the newest verify record names (the next run's incremental base).
    match repo.last_verify(stanza).await {
        Ok(Some(record)) => {
            for shard in &record.proofs {
                spill.add(&shard.list)?;
            }
        }
        Ok(None) => {}
        // Without them the next verify reads everything again: worth a warning only.
        Err(e) if e.is_unreadable_record() => {
            tracing::warn!("the newest verify record of stanza {stanza} cannot be read ({e}): its proof lists are not kept")
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Removes the leases and markers of writers that died (expired past the clock margin),
/// returns the live leases and how many dead ones were removed.
async fn sort_leases(
    repo: &Repo,
    now: DateTime<Utc>,
    dry_run: bool,
    own: Option<&Key>,
) -> Result<(Vec<Presence>, u64)> {
    let mut live = Vec::new();
    let mut dead = Vec::new();
    for prefix in [LEASES_PREFIX, GC_MARKERS_PREFIX] {
        for (key, presence, written) in repo.presences(prefix).await? {
            if Some(&key) == own {
                continue;
            }
            let alive = match &presence {
                Some(p) => p.is_live(now),
                None => written.is_none_or(|w| now < w + ttl() + margin()),
            };
            if alive {
                if prefix == LEASES_PREFIX {
                    live.push(presence.unwrap_or(Presence {
                        kind: "unreadable lease".into(),
                        stanza: String::new(),
                        host: key.to_string(),
                        pid: 0,
                        started_at: written.unwrap_or(now),
                        expires_at: written.unwrap_or(now) + ttl(),
                    }));
                }
            } else {
                dead.push(key);
            }
        }
    }
    let removed = dead.len() as u64;
    if !dry_run {
        repo.backend().delete_many(&dead).await?;
    }
    Ok((live, removed))
}

/// Runs a collection (see the module doc). In a real run, writes the collection marker
/// first and removes it at the end, also when it fails.
pub async fn collect(
    repo: &Repo,
    request: &GcRequest,
    on_step: &mut (dyn FnMut(GcStep) + Send),
) -> Result<GcReport> {
    let marker = if request.dry_run {
        None
    } else {
        Some(
            repo.hold(GC_MARKERS_PREFIX, "expire", &request.stanza)
                .await?,
        )
    };
    let result = collect_marked(repo, request, marker.as_ref(), on_step).await;
    if let Some(marker) = marker {
        let released = marker.release().await;
        if result.is_ok() {
            released?;
        }
    }
    result
}

async fn collect_marked(
    repo: &Repo,
    request: &GcRequest,
    marker: Option<&Held>,
    on_step: &mut (dyn FnMut(GcStep) + Send),
) -> Result<GcReport> {
    let mut report = GcReport::default();
    // After the marker is written: a lease written before it is seen here; a backup that
    // writes its lease later sees the marker and waits.
    let (live, dead) =
        sort_leases(repo, request.now, request.dry_run, marker.map(Held::key)).await?;
    report.dead_presences_removed = dead;
    if let Some(first) = live.first() {
        report.sweep_skipped = Some(format!(
            "{} of stanza {} on {} (pid {}, since {}) is in flight: no blob is removed while it may name one it found already there",
            first.kind, first.stanza, first.host, first.pid, first.started_at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
        if !request.dry_run {
            return Ok(report);
        }
    }

    let mut spill = ShardSpill::new()?;
    for stanza in stanzas(repo).await? {
        mark_stanza(repo, &stanza, request, &mut spill, on_step).await?;
    }
    report.references = spill.count;
    tracing::info!("gc: marked, {} references", spill.count);
    on_step(GcStep::MarkDone);

    let cutoff = request.now - request.grace;
    // Removals wait until a batch is full (S3: one DeleteObjects request; local: folders
    // emptied in parallel), across shards.
    let mut doomed = Vec::new();
    for shard in 0..=255u8 {
        let refs = spill.shard(shard)?;
        let listed = repo
            .backend()
            .list(&format!("{}/{shard:02x}/", catalog::BLOBS_FOLDER))
            .await?;
        report.blobs += listed.len() as u64;
        for m in listed {
            let Ok(digest) = m.key.file_name().parse::<Digest>() else {
                continue;
            };
            if refs.binary_search(&digest.0).is_ok() {
                continue;
            }
            match m.last_modified {
                Some(t) if t <= cutoff => {
                    report.removed += 1;
                    report.removed_bytes += m.size;
                    doomed.push(m.key);
                }
                _ => report.young_kept += 1,
            }
        }
        if doomed.len() >= DELETE_BATCH || shard == 255 {
            remove(repo, request, marker, &mut doomed).await?;
        }
        on_step(GcStep::Swept);
    }
    tracing::info!("gc: swept, {} blobs removed", report.removed);
    let temp: TempFiles = repo.backend().stale_temp_files(!request.dry_run).await?;
    report.temp_files = temp.count;
    report.temp_bytes = temp.bytes;
    Ok(report)
}

/// Removes `doomed` (unless a dry run) and empties it, once the collection's marker is
/// known to have counted all along.
async fn remove(
    repo: &Repo,
    request: &GcRequest,
    marker: Option<&Held>,
    doomed: &mut Vec<Key>,
) -> Result<()> {
    if request.dry_run || doomed.is_empty() {
        doomed.clear();
        return Ok(());
    }
    if marker.is_some_and(|m| !m.unbroken()) {
        return Err(Error::Catalog {
            what: "garbage collection".into(),
            detail: "its marker could not be kept refreshed: it stops rather than remove blobs a writer may be using".into(),
        });
    }
    repo.backend().delete_many(doomed).await?;
    doomed.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::Compression;

    async fn repo(dir: &std::path::Path) -> Repo {
        let backend = LocalBackend::new(dir).unwrap();
        Repo::new(Arc::new(backend), Compression::Lz4)
    }

    /// Stanzas are found by skipping from one stanza's keys to the next: names that
    /// sort around each other's folders (`a-b/` before `a/`, `a0/` after) are all found.
    #[tokio::test]
    async fn every_stanza_is_found_by_skipping_past_each_ones_keys() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path()).await;
        for key in [
            "stanzas/a/wal/0000000100000000/x",
            "stanzas/a/wal/history/y",
            "stanzas/a/backups/z",
            "stanzas/a-b/cluster",
            "stanzas/a0/wal/0000000100000000/x",
            "stanzas/b/cluster",
        ] {
            repo.backend()
                .put(&Key::new(key).unwrap(), Bytes::new(), PutMode::Create)
                .await
                .unwrap();
        }
        let found: Vec<String> = stanzas(&repo)
            .await
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found, ["a", "a-b", "a0", "b"]);
    }

    #[tokio::test]
    async fn the_spill_sorts_each_shard_and_forgets_repeats() {
        let mut spill = ShardSpill::new().unwrap();
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        for d in [a, b, a, a] {
            spill.add(&d).unwrap();
        }
        assert_eq!(spill.count, 4);
        let mut all = Vec::new();
        for shard in 0..=255u8 {
            let refs = spill.shard(shard).unwrap();
            assert!(refs.iter().all(|r| r[0] == shard));
            assert!(refs.windows(2).all(|w| w[0] < w[1]));
            all.extend(refs);
        }
        all.sort();
        let mut expected = vec![a.0, b.0];
        expected.sort();
        assert_eq!(all, expected);
    }

    #[tokio::test]
    async fn a_collection_waits_for_no_one_but_a_backup_lease_stops_its_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path()).await;
        let stanza = Stanza::new("main").unwrap();
        let old = repo
            .put_blob(Bytes::from_static(b"unreferenced"))
            .await
            .unwrap();
        let request = |now| GcRequest {
            stanza: stanza.clone(),
            now,
            grace: Duration::hours(1),
            dry_run: false,
            excluded: BTreeSet::new(),
            wal_excluded: None,
        };
        // Young: kept whatever.
        let r = collect(&repo, &request(repo_now()), &mut |_| {})
            .await
            .unwrap();
        assert_eq!((r.removed, r.young_kept), (0, 1));
        // A lease in flight: no sweep, even of an old blob (grace 0 below).
        let lease = repo.take_lease("backup", &stanza).await.unwrap();
        let later = repo_now() + Duration::seconds(1);
        let request = |now| GcRequest {
            grace: Duration::zero(),
            ..request(now)
        };
        let r = collect(&repo, &request(later), &mut |_| {}).await.unwrap();
        assert!(r.sweep_skipped.is_some(), "{r:?}");
        assert!(repo.blob_size(&old.digest).await.unwrap().is_some());
        assert!(
            repo.live_collections().await.unwrap().is_empty(),
            "its marker is gone"
        );
        assert!(lease.unbroken());
        lease.release().await.unwrap();
        // Nothing in flight: the old unreferenced blob goes.
        let r = collect(&repo, &request(later), &mut |_| {}).await.unwrap();
        assert_eq!((r.removed, r.sweep_skipped.clone()), (1, None), "{r:?}");
        assert!(repo.blob_size(&old.digest).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_dead_writers_lease_is_removed_and_does_not_stop_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path()).await;
        let stanza = Stanza::new("main").unwrap();
        let lease = repo.take_lease("backup", &stanza).await.unwrap();
        let key = lease.key().clone();
        drop(lease); // the process "died": its lease stays, unrefreshed
        let long_after = repo_now() + ttl() + margin() + Duration::seconds(1);
        let request = GcRequest {
            stanza,
            now: long_after,
            grace: Duration::hours(1),
            dry_run: false,
            excluded: BTreeSet::new(),
            wal_excluded: None,
        };
        let r = collect(&repo, &request, &mut |_| {}).await.unwrap();
        assert_eq!(r.dead_presences_removed, 1);
        assert_eq!(r.sweep_skipped, None);
        assert!(repo.backend().head(&key).await.is_err());
    }

    /// The race worried about most: a push (or the spool drainer) finds its blob already
    /// there, old and unreferenced, after a collection has marked and before it sweeps.
    /// The collection removes the blob; the push, having written its entry, sees the
    /// marker, waits for the end, and stores the blob again: the acknowledged segment
    /// keeps its content.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_push_that_deduplicated_during_a_sweep_stores_its_blob_again() {
        use crate::pg::WalFileName;
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path()).await;
        let stanza = Stanza::new("main").unwrap();
        let name: WalFileName = "000000010000000000000003".parse().unwrap();
        let raw = Bytes::from_static(b"segment bytes"); // 13 bytes
        let encoded = crate::repo::EncodedBlob::encode(&raw, Compression::None);
        repo.put_encoded(&encoded).await.unwrap(); // an old, unreferenced blob

        // The collection (this task) pauses between its mark and its sweep, while the
        // push (another task) runs.
        let (marked_tx, marked_rx) = std::sync::mpsc::channel::<()>();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let push = {
            let (repo, stanza, encoded) = (repo.clone(), stanza.clone(), encoded.clone());
            tokio::spawn(async move {
                tokio::task::spawn_blocking(move || marked_rx.recv().unwrap())
                    .await
                    .unwrap();
                // Its blob is found there; claim and entry written.
                let record = WalRecord {
                    name: name.to_string(),
                    kind: "segment".into(),
                    digest: encoded.digest,
                    raw_size: 13,
                    stored_size: encoded.stored_len(),
                    compression: Compression::None,
                    archived_at: repo_now(),
                    system_id: None,
                    start_lsn: None,
                    tidemark_version: "test".into(),
                    content: None,
                };
                let (put, _) = repo
                    .put_wal(&stanza, &name, Some((&encoded, None)), &record)
                    .await
                    .unwrap();
                assert!(put.unwrap().deduplicated);
                let waiter = {
                    let repo = repo.clone();
                    tokio::spawn(async move { repo.wait_while_collecting().await })
                };
                tokio::time::sleep(StdDuration::from_millis(300)).await;
                assert!(
                    !waiter.is_finished(),
                    "the push waits while the collection runs"
                );
                go_tx.send(()).unwrap();
                waiter.await.unwrap().unwrap()
            })
        };
        let request = GcRequest {
            stanza: stanza.clone(),
            now: repo_now() + Duration::seconds(1),
            grace: Duration::zero(),
            dry_run: false,
            excluded: BTreeSet::new(),
            wal_excluded: None,
        };
        let report = collect(&repo, &request, &mut move |step| {
            if let GcStep::MarkDone = step {
                marked_tx.send(()).unwrap();
                go_rx.recv().unwrap();
            }
        })
        .await
        .unwrap();
        assert_eq!(
            report.removed, 1,
            "the sweep removed the blob: the race was real"
        );
        assert!(repo.blob_size(&encoded.digest).await.unwrap().is_none());
        assert!(push.await.unwrap(), "the push saw the collection");
        repo.put_encoded(&encoded).await.unwrap(); // what push.rs does then
        assert_eq!(repo.get_blob(&encoded.digest).await.unwrap(), raw);
        // The next collection keeps it: its entry names it.
        let request = GcRequest {
            stanza,
            now: repo_now() + Duration::seconds(1),
            grace: Duration::zero(),
            dry_run: false,
            excluded: BTreeSet::new(),
            wal_excluded: None,
        };
        let again = collect(&repo, &request, &mut |_| {}).await.unwrap();
        assert_eq!(again.removed, 0);
        assert_eq!(again.references, 1);
    }

    #[tokio::test]
    async fn a_writer_sees_a_live_collection_marker_and_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path()).await;
        let stanza = Stanza::new("main").unwrap();
        let marker = repo
            .hold(GC_MARKERS_PREFIX, "expire", &stanza)
            .await
            .unwrap();
        assert_eq!(repo.live_collections().await.unwrap().len(), 1);
        let waiter = {
            let repo = repo.clone();
            tokio::spawn(async move { repo.wait_while_collecting().await })
        };
        tokio::time::sleep(StdDuration::from_millis(700)).await;
        assert!(
            !waiter.is_finished(),
            "the writer waits while the marker is live"
        );
        marker.release().await.unwrap();
        assert!(waiter.await.unwrap().unwrap(), "it says it waited");
    }
}
