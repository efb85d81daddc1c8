//! `verify`: proves that what the repository holds can be restored, and records the run.
//!
//! One run, in order:
//!
//! 1. **Catalog.** The stanza's backup records, every WAL index entry (read one by one, so
//!    that an unreadable entry is named rather than failing the run), the history files
//!    and the quarantine. Held in memory as the planner holds them.
//! 2. **WAL** ([`check::check_wal`], pure, on the planner's snapshot): continuity per
//!    timeline from the oldest backup's start, damaged segments, the history chain.
//! 3. **Backups.** Each backup's file list and its pages are read (verified) and checked
//!    as a restore checks them ([`crate::layout::Checker`]: paths, chunk counts, the
//!    manifest's chunks), and every chunk digest is collected.
//! 4. **Blobs**, shard by shard (`blobs/<hh>/`, in digest order): the shard is listed,
//!    which proves existence; the previous run's proofs of that shard are merged in
//!    ([`check::plan_shard`]); the blobs without a proof that still holds are read,
//!    decoded and hashed ([`Repo::check_blob`], nothing written), `concurrency` at a
//!    time; the shard's new proof list is stored.
//! 5. **Names.** Each missing or corrupt blob is named with where it is used (backup and
//!    file, WAL file), by a second pass over the lists, which only runs when there is one.
//! 6. **Record.** The run's [`VerifyRecord`] is written (also when it found problems).
//!
//! Memory: the referenced digests are held once, sorted, 32 bytes each (plus, while they
//! are gathered, at most as many again before each deduplication); a shard's listing and
//! proofs (about 1/256 of the repository's blobs, ~100 bytes per listed blob) for the
//! few shards in work; one file-list page (about 1 MiB) at a time; at most `concurrency`
//! blob reads of up to 8 MiB each. The WAL index is held whole, as the planner holds it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use tidemark_pg::WalFileName;
use tidemark_store::backup::BackupRecord;
use tidemark_store::catalog::{self, QuarantineRecord, Stanza};
use tidemark_store::repo::IndexedWal;
use tidemark_store::verify::{
    verify_id, ListedBlob, ProofEntry, ShardProofs, VerifyCounts, VerifyProblem, VerifyRecord,
    VerifyScope, PROBLEMS_RECORDED,
};
use tidemark_store::{Digest, Key, Repo};

use crate::layout::Checker;
use crate::snapshot;
use crate::{Error, Result};

pub mod check;

pub use check::Finding;
use check::{check_wal, merge_proofs, plan_shard, shard_range, WalScope};

/// Blob reads in flight by default: enough for S3's latency, few enough for a disk.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Shards in work at once (each lists, then reads with the shared concurrency).
const SHARDS_AT_ONCE: usize = 4;
/// How many places a missing or corrupt blob is named in.
const USES_NAMED: usize = 3;

/// What to verify.
#[derive(Clone, Debug)]
pub struct VerifyRequest {
    /// Scope and `--full`.
    pub scope: VerifyScope,
    /// Blob reads in flight.
    pub concurrency: usize,
    /// The run's start (recorded; the clock is the caller's).
    pub now: DateTime<Utc>,
    /// The tidemark version, for the record.
    pub tidemark_version: String,
}

/// Progress of a run, for a progress line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The catalog is read: `backups` and `wal_entries` in scope.
    Catalog {
        /// Backups in scope.
        backups: u64,
        /// WAL entries in scope.
        wal_entries: u64,
    },
    /// The blobs to check are known: this many referenced.
    Blobs {
        /// Distinct referenced blobs.
        referenced: u64,
    },
    /// A blob was read and hashed (its stored bytes).
    Read(u64),
}

/// A finished run.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    /// What was recorded.
    pub record: VerifyRecord,
    /// Where.
    pub record_key: Key,
    /// What is worth knowing but is no failure.
    pub notes: Vec<Finding>,
}

/// Runs `verify` on `stanza` (see the module doc). Fails only when the repository cannot
/// be read (or `--backup` names no backup); everything found wrong in it is a problem in
/// the report, which is recorded in the repository.
pub async fn verify(
    repo: &Repo,
    stanza: &Stanza,
    request: &VerifyRequest,
    mut progress: impl FnMut(Step),
) -> Result<VerifyReport> {
    let scope = &request.scope;
    let cluster = repo.require_cluster(stanza).await?;
    let listing = repo.backups(stanza).await?;
    let mut problems: Vec<Finding> = Vec::new();
    let mut notes: Vec<Finding> = Vec::new();

    // 1. The catalog.
    for damaged in &listing.damaged {
        if scope.backup.as_ref().is_none_or(|id| *id == damaged.id) {
            problems.push(Finding::new(
                "backup-record",
                damaged.id.clone(),
                format!(
                    "the record of backup {} cannot be read ({}): it cannot be restored",
                    damaged.id, damaged.error
                ),
            ));
        }
    }
    let backups: Vec<&BackupRecord> = match &scope.backup {
        Some(id) => {
            let found: Vec<_> = listing.records.iter().filter(|r| r.id == *id).collect();
            if found.is_empty() && !listing.damaged.iter().any(|d| d.id == *id) {
                return Err(Error::UnknownBackup {
                    id: id.clone(),
                    stanza: stanza.to_string(),
                    available: listing.records.iter().map(|r| r.id.clone()).collect(),
                });
            }
            found
        }
        None => listing
            .records
            .iter()
            .filter(|r| scope.since.is_none_or(|s| r.start_time >= s))
            .collect(),
    };
    let (wal, wal_problems, wal_notes) = read_wal_index(repo, stanza).await?;
    problems.extend(wal_problems);
    notes.extend(wal_notes);
    for q in read_quarantine(repo, stanza).await? {
        notes.push(q);
    }

    // 2. WAL continuity and the history chain, on the planner's snapshot.
    let loaded = snapshot::build(repo, stanza, &cluster, &listing, &wal).await?;
    for name in &loaded.conflicts {
        problems.push(Finding::new(
            "wal-conflict",
            name.clone(),
            format!("{name} is archived with two different contents: archive-get refuses to serve it (see docs/archiving.md)"),
        ));
    }
    let wal_scope = match &scope.backup {
        Some(id) => WalScope::Backup(id.clone()),
        None => WalScope::All { since: scope.since },
    };
    let found = check_wal(&loaded.snapshot, &wal_scope);
    problems.extend(found.problems);
    notes.extend(found.notes);

    // The WAL entries whose blobs are checked.
    let segment_size = loaded.snapshot.segment_size;
    let wal_in_scope: Vec<&IndexedWal> = wal
        .iter()
        .filter(|w| match &scope.backup {
            Some(_) => match &w.name {
                WalFileName::Segment(seg) => seg
                    .segment_number(tidemark_pg::SegmentSize::new(segment_size).expect("checked"))
                    .is_ok_and(|n| found.walked.contains(&(seg.timeline.0, n))),
                WalFileName::History(tli) => found.histories.contains(&tli.0),
                _ => false,
            },
            None => scope.since.is_none_or(|s| w.record.archived_at >= s),
        })
        .collect();
    progress(Step::Catalog {
        backups: backups.len() as u64,
        wal_entries: wal_in_scope.len() as u64,
    });

    // 3. Backups: their lists, and every chunk they name.
    let mut counts = VerifyCounts {
        backups: backups.len() as u64,
        wal_entries: wal_in_scope.len() as u64,
        ..VerifyCounts::default()
    };
    let mut required = Digests::default();
    for w in &wal_in_scope {
        required.push(w.digest);
    }
    for record in &backups {
        let listed = check_backup(repo, record, &mut |d| required.push(d)).await?;
        counts.file_list_blobs += listed.blobs_read;
        problems.extend(listed.problems);
    }
    let required = required.finish();
    counts.blobs = required.len() as u64;
    progress(Step::Blobs {
        referenced: counts.blobs,
    });

    // 4. Blobs, shard by shard.
    let previous = if scope.full {
        BTreeMap::new()
    } else {
        match repo.last_verify(stanza).await {
            Ok(Some(last)) => last.proofs.into_iter().map(|p| (p.shard, p.list)).collect(),
            Ok(None) => BTreeMap::new(),
            Err(e) if e.is_unreadable_record() => {
                notes.push(Finding::new(
                    "proofs-unreadable",
                    "",
                    format!(
                        "the last verify record cannot be read ({e}): every blob is read again"
                    ),
                ));
                BTreeMap::new()
            }
            Err(e) => return Err(e.into()),
        }
    };
    let per_shard = (request.concurrency.max(1)).div_ceil(SHARDS_AT_ONCE).max(1);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let shards = futures::stream::iter(0..=255u8)
        .map(|shard| {
            let slice = shard_range(&required, shard);
            let proofs = previous.get(&shard).copied();
            let tx = tx.clone();
            async move {
                verify_shard(repo, shard, slice, proofs, scope.full, per_shard, &tx).await
            }
        })
        .buffered(SHARDS_AT_ONCE)
        .try_collect::<Vec<ShardDone>>();

    let shards = {
        tokio::pin!(shards);
        loop {
            tokio::select! {
                done = &mut shards => break done?,
                Some(bytes) = rx.recv() => progress(Step::Read(bytes)),
            }
        }
    };
    let mut bad: BTreeMap<Digest, String> = BTreeMap::new();
    let mut proofs = Vec::new();
    for done in shards {
        counts.blobs_read += done.read;
        counts.bytes_read += done.bytes;
        counts.blobs_proven_before += done.proven;
        notes.extend(done.notes);
        for d in done.missing {
            bad.insert(d, "is missing from the repository".into());
        }
        bad.extend(done.corrupt);
        proofs.extend(done.proofs);
    }

    // 5. Name where each bad blob is used.
    if !bad.is_empty() {
        let mut uses: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for w in &wal_in_scope {
            if bad.contains_key(&w.digest) {
                uses.entry(w.digest)
                    .or_default()
                    .push(format!("WAL file {}", w.name));
            }
        }
        for record in &backups {
            name_uses(repo, record, &bad, &mut uses).await?;
        }
        for (digest, what) in &bad {
            let used = uses.get(digest).map(Vec::as_slice).unwrap_or_default();
            let kind = if what.starts_with("is missing") {
                "missing-blob"
            } else {
                "corrupt-blob"
            };
            problems.push(Finding::new(
                kind,
                digest.to_string(),
                format!(
                    "blob {digest} {what}; used by {}",
                    if used.is_empty() {
                        "(no longer named by anything in scope)".to_string()
                    } else {
                        used.join(", ")
                    }
                ),
            ));
        }
    }

    // 6. The record.
    problems.sort();
    problems.dedup();
    counts.problems = problems.len() as u64;
    counts.notes = notes.len() as u64;
    let mut record = VerifyRecord {
        id: verify_id(request.now),
        started_at: request.now,
        finished_at: tidemark_store::repo::now(),
        scope: scope.clone(),
        counts,
        passed: problems.is_empty(),
        problems: problems
            .iter()
            .take(PROBLEMS_RECORDED)
            .map(|f| VerifyProblem {
                kind: f.kind.to_string(),
                subject: f.subject.clone(),
                detail: f.detail.clone(),
            })
            .collect(),
        proofs,
        tidemark_version: request.tidemark_version.clone(),
    };
    let record_key = repo.put_verify(stanza, &mut record).await?;
    Ok(VerifyReport {
        record,
        record_key,
        notes,
    })
}

/// Digests gathered in any order, then sorted and distinct: duplicates are folded away
/// whenever the list doubles, so it holds at most about twice the distinct digests.
#[derive(Default)]
struct Digests {
    all: Vec<Digest>,
    distinct_at_last_fold: usize,
}

impl Digests {
    fn push(&mut self, d: Digest) {
        self.all.push(d);
        if self.all.len() >= 2 * self.distinct_at_last_fold.max(1 << 16) {
            self.fold();
        }
    }

    fn fold(&mut self) {
        self.all.sort_unstable();
        self.all.dedup();
        self.distinct_at_last_fold = self.all.len();
    }

    fn finish(mut self) -> Vec<Digest> {
        self.fold();
        self.all.shrink_to_fit();
        self.all
    }
}

/// Every WAL index entry read on its own ([`Repo::wal_catalog_entries`]): the readable
/// ones, a problem for each record (or reindex sidecar) that cannot be read, a note for
/// each content summary this build cannot read.
async fn read_wal_index(
    repo: &Repo,
    stanza: &Stanza,
) -> Result<(Vec<IndexedWal>, Vec<Finding>, Vec<Finding>)> {
    let (mut wal, mut problems, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    for entry in repo.wal_catalog_entries(stanza).await? {
        match entry {
            Ok(w) => {
                if let Some(why) = &w.content_error {
                    notes.push(Finding::new(
                        "wal-content-unreadable",
                        w.name.to_string(),
                        format!("{}: its content summary cannot be read ({why}): plans decode the segment instead", w.name),
                    ));
                }
                wal.push(w);
            }
            Err((name, e)) => problems.push(Finding::new(
                "wal-index-entry",
                name.to_string(),
                format!(
                    "the index entry of {name} cannot be read ({e}): archive-get cannot serve it"
                ),
            )),
        }
    }
    Ok((wal, problems, notes))
}

/// A note per quarantine record: bytes refused for a name that holds other content.
async fn read_quarantine(repo: &Repo, stanza: &Stanza) -> Result<Vec<Finding>> {
    let listed = repo
        .backend()
        .list(&catalog::quarantine_prefix(stanza))
        .await?;
    let mut out = Vec::new();
    for m in listed {
        let finding = match repo.get_record::<QuarantineRecord>(&m.key).await {
            Ok(q) => Finding::new(
                "quarantined",
                q.name.clone(),
                format!(
                    "{}: content {} was refused at {} (the archive keeps {}): find which server sent it",
                    q.name,
                    q.digest,
                    q.quarantined_at.format("%Y-%m-%d %H:%M:%S UTC"),
                    q.archived_digests
                        .iter()
                        .map(Digest::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            Err(e) if e.is_not_found() => continue,
            Err(e) if e.is_unreadable_record() => Finding::new(
                "quarantined",
                m.key.file_name().to_string(),
                format!("quarantine record {} cannot be read: {e}", m.key),
            ),
            Err(e) => return Err(e.into()),
        };
        out.push(finding);
    }
    Ok(out)
}

/// What reading one backup's lists found.
struct ListedBackup {
    blobs_read: u64,
    problems: Vec<Finding>,
}

/// Reads a backup's file list and pages (verified), checks them as a restore would, and
/// hands every chunk digest (files and the server's manifest) to `chunk`.
async fn check_backup(
    repo: &Repo,
    record: &BackupRecord,
    chunk: &mut dyn FnMut(Digest),
) -> Result<ListedBackup> {
    let id = &record.id;
    let mut out = ListedBackup {
        blobs_read: 0,
        problems: Vec::new(),
    };
    let problem = |detail: String| Finding::new("file-list", id.clone(), detail);
    let list = match repo.backup_files(record).await {
        Ok(list) => list,
        Err(e) if unreadable(&e) => {
            out.problems.push(problem(format!(
                "backup {id}: its file list {} cannot be read ({e}): the backup cannot be restored",
                record.file_list
            )));
            return Ok(out);
        }
        Err(e) => return Err(e.into()),
    };
    out.blobs_read += 1;
    let mut checker = match Checker::new(record) {
        Ok(c) => Some(c),
        Err(e) => {
            out.problems.push(problem(format!("backup {id}: {e}")));
            None
        }
    };
    let mut entries = 0u64;
    for (n, page_digest) in list.pages.iter().enumerate() {
        let page = match repo.file_list_page(page_digest).await {
            Ok(page) => page,
            Err(e) if unreadable(&e) => {
                out.problems.push(problem(format!(
                    "backup {id}: page {} of its file list ({page_digest}) cannot be read ({e}): the backup cannot be restored",
                    n + 1
                )));
                checker = None;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        out.blobs_read += 1;
        entries += page.entries.len() as u64;
        for entry in &page.entries {
            if let tidemark_store::backup::EntryKind::File { chunks } = &entry.kind {
                for c in chunks {
                    chunk(*c);
                }
            }
        }
        if let Some(c) = checker.as_mut() {
            if let Err(e) = c.add_page(page) {
                out.problems.push(problem(format!("backup {id}: {e}")));
                checker = None;
            }
        }
    }
    for c in &list.pg_manifest.chunks {
        chunk(*c);
    }
    if entries != list.entries {
        out.problems.push(problem(format!(
            "backup {id}: its file list says {} entries, its pages hold {entries}: the list is incomplete",
            list.entries
        )));
    } else if let Some(c) = checker {
        // Paths, chunk counts per file and for the server's manifest, as a restore checks.
        if let Err(e) = c.finish(list) {
            out.problems.push(problem(format!("backup {id}: {e}")));
        }
    }
    Ok(out)
}

/// Whether a read failed because of the object itself (missing or damaged) rather than
/// the repository.
fn unreadable(e: &tidemark_store::Error) -> bool {
    e.is_not_found() || e.is_unreadable_record()
}

/// What one shard's check found.
struct ShardDone {
    read: u64,
    bytes: u64,
    proven: u64,
    missing: Vec<Digest>,
    corrupt: Vec<(Digest, String)>,
    proofs: Option<ShardProofs>,
    notes: Vec<Finding>,
}

/// Checks one shard (step 4 of the module doc) and stores its new proofs.
async fn verify_shard(
    repo: &Repo,
    shard: u8,
    required: &[Digest],
    previous: Option<Digest>,
    full: bool,
    concurrency: usize,
    progress: &tokio::sync::mpsc::UnboundedSender<u64>,
) -> Result<ShardDone> {
    let mut notes = Vec::new();
    let listed = repo.list_blob_shard(shard).await?;
    let proofs: Vec<ProofEntry> = match previous {
        None => Vec::new(),
        Some(list) => match repo.proofs(&list).await {
            Ok(p) => p,
            Err(e) if unreadable(&e) => {
                notes.push(Finding::new(
                    "proofs-unreadable",
                    format!("shard {shard:02x}"),
                    format!("the proofs of blob shard {shard:02x} cannot be read ({e}): its blobs are read again"),
                ));
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        },
    };
    let plan = plan_shard(required, &listed, &proofs, full);
    drop(listed);
    drop(proofs);
    let results: Vec<(ListedBlob, std::result::Result<u64, tidemark_store::Error>)> =
        futures::stream::iter(plan.read)
            .map(|blob| async move {
                let r = repo.check_blob(&blob.digest, blob.stored_size).await;
                (blob, r)
            })
            .buffer_unordered(concurrency)
            .inspect(|(blob, r)| {
                if r.is_ok() {
                    let _ = progress.send(blob.stored_size);
                }
            })
            .collect()
            .await;
    let mut done = ShardDone {
        read: 0,
        bytes: 0,
        proven: plan.proven,
        missing: plan.missing,
        corrupt: Vec::new(),
        proofs: None,
        notes,
    };
    let mut fresh = Vec::new();
    for (blob, r) in results {
        match r {
            Ok(_) => {
                done.read += 1;
                done.bytes += blob.stored_size;
                fresh.push(blob.proof());
            }
            // Listed a moment ago, gone now: missing all the same.
            Err(e) if e.is_not_found() => done.missing.push(blob.digest),
            Err(e) if e.is_unreadable_record() => {
                done.read += 1;
                done.bytes += blob.stored_size;
                done.corrupt
                    .push((blob.digest, format!("is corrupt ({e})")));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let merged = merge_proofs(plan.carried, fresh);
    if !merged.is_empty() {
        let list = repo.put_proofs(&merged).await?;
        done.proofs = Some(ShardProofs {
            shard,
            list,
            entries: merged.len() as u64,
        });
    }
    Ok(done)
}

/// Names, for each bad blob, the first few places a backup uses it.
async fn name_uses(
    repo: &Repo,
    record: &BackupRecord,
    bad: &BTreeMap<Digest, String>,
    uses: &mut BTreeMap<Digest, Vec<String>>,
) -> Result<()> {
    let Ok(list) = repo.backup_files(record).await else {
        return Ok(());
    };
    let mut note = |d: &Digest, what: String| {
        if bad.contains_key(d) {
            let places = uses.entry(*d).or_default();
            if places.len() < USES_NAMED {
                places.push(what);
            } else if places.len() == USES_NAMED {
                places.push("…".into());
            }
        }
    };
    for (i, d) in list.pg_manifest.chunks.iter().enumerate() {
        note(
            d,
            format!("backup {} backup_manifest (chunk {})", record.id, i + 1),
        );
    }
    for page in &list.pages {
        let Ok(page) = repo.file_list_page(page).await else {
            continue;
        };
        for entry in &page.entries {
            if let tidemark_store::backup::EntryKind::File { chunks } = &entry.kind {
                for (i, d) in chunks.iter().enumerate() {
                    let path = match entry.tablespace {
                        Some(oid) => format!("tablespace {oid}/{}", entry.path),
                        None => entry.path.clone(),
                    };
                    note(
                        d,
                        format!(
                            "backup {} file {path} (chunk {} of {})",
                            record.id,
                            i + 1,
                            chunks.len()
                        ),
                    );
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::repo;
    use tidemark_store::backup::{EntryKind, FileEntry, FileList, CHUNK_SIZE};

    fn request(full: bool) -> VerifyRequest {
        VerifyRequest {
            scope: VerifyScope {
                full,
                ..VerifyScope::default()
            },
            concurrency: 4,
            now: Utc::now(),
            tidemark_version: "test".into(),
        }
    }

    /// A backup of one file of `content`, its list written by the store.
    async fn backup(repo: &Repo, stanza: &Stanza, id: &str, content: &[u8]) -> BackupRecord {
        let (chunked, _) = repo.put_chunked(content, CHUNK_SIZE).await.unwrap();
        let entries = vec![
            FileEntry {
                tablespace: None,
                path: "base".into(),
                mode: 0o700,
                size: 0,
                mtime: 0,
                kind: EntryKind::Dir,
            },
            FileEntry {
                tablespace: None,
                path: "base/16384".into(),
                mode: 0o600,
                size: content.len() as u64,
                mtime: 0,
                kind: EntryKind::File {
                    chunks: chunked.chunks.clone(),
                },
            },
        ];
        let (list, _) = repo
            .put_file_list(&entries, b"{\"manifest\": 1}", CHUNK_SIZE, 1 << 20)
            .await
            .unwrap();
        let mut record = BackupRecord::example(id, Utc::now());
        record.file_list = list.digest;
        repo.put_backup(stanza, &record).await.unwrap();
        record
    }

    #[tokio::test]
    async fn proofs_spare_reads_and_an_incomplete_list_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, stanza) = repo(dir.path()).await;
        let content: Vec<u8> = (0..(CHUNK_SIZE as usize * 2 + 100))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        backup(&repo, &stanza, "20261121T103207Z", &content).await;

        let first = verify(&repo, &stanza, &request(false), |_| {})
            .await
            .unwrap();
        let c = &first.record.counts;
        assert!(first.record.passed, "{:?}", first.record.problems);
        // Three chunks of the file and one of the manifest.
        assert_eq!((c.blobs, c.blobs_read, c.blobs_proven_before), (4, 4, 0));
        assert_eq!(c.file_list_blobs, 2, "the list and its one page");
        assert!(first.record.proofs.iter().map(|p| p.entries).sum::<u64>() >= 4);
        let second = verify(&repo, &stanza, &request(false), |_| {})
            .await
            .unwrap();
        let c = &second.record.counts;
        assert_eq!((c.blobs, c.blobs_read, c.blobs_proven_before), (4, 0, 4));
        let full = verify(&repo, &stanza, &request(true), |_| {})
            .await
            .unwrap();
        assert_eq!(full.record.counts.blobs_read, 4);
        assert_eq!(
            repo.last_verify(&stanza).await.unwrap().unwrap().id,
            full.record.id
        );

        // A list that claims an entry its pages do not hold.
        let good = backup(&repo, &stanza, "20261121T113207Z", &content[..10]).await;
        let list = repo.backup_files(&good).await.unwrap();
        let short = FileList {
            entries: list.entries + 1,
            ..list
        };
        let put = repo
            .put_blob(bytes::Bytes::from(short.to_bytes()))
            .await
            .unwrap();
        let mut bad = BackupRecord::example("20261121T123207Z", Utc::now());
        bad.file_list = put.digest;
        repo.put_backup(&stanza, &bad).await.unwrap();
        let found = verify(&repo, &stanza, &request(false), |_| {})
            .await
            .unwrap();
        assert!(!found.record.passed);
        let problems: Vec<_> = found
            .record
            .problems
            .iter()
            .map(|p| (p.kind.as_str(), p.subject.as_str()))
            .collect();
        assert_eq!(problems, vec![("file-list", "20261121T123207Z")]);
        assert!(found.record.problems[0]
            .detail
            .contains("the list is incomplete"));
        // Only the new small chunk was read; the rest was proven before.
        assert_eq!(found.record.counts.blobs_read, 1);
    }
}
