//! `tidemark reindex`: the WAL content index for segments archived before it existed.
//!
//! archive-push writes a segment's content summary into its index entry. Entries written
//! by builds from before the index have none, and entries are create-only, never
//! rewritten: so for each segment or `.partial` entry of the stanza with no content,
//! neither in the entry nor in a sidecar, this fetches the blob (verified against its
//! digest), decodes it exactly as archive-push does ([`crate::content::summarize`]), and
//! writes the summary as a sidecar record beside the entry
//! (`tidemark_store::wal_content::wal_content_key`), create-only.
//!
//! - **Bounded memory**: one listing of the stanza's WAL folder (names only), then at
//!   most [`IN_FLIGHT`] segments held at once, whatever the archive's size.
//! - **Resumable**: a sidecar is one create-only write, whole or absent; a run that is
//!   interrupted loses nothing and the next run skips every entry that has one (without
//!   reading its entry). Two runs at once write the same bytes; the second finds the
//!   sidecar there.
//! - **Nothing else changes**: no entry, claim or blob is written or removed.
//!
//! A segment the decoder stops in (invalid WAL) gets its sidecar all the same, the damage
//! recorded: that is what the planner must know. A segment whose blob is missing or
//! corrupt, or that the decoder cannot summarize at all, is reported and skipped (the
//! next run tries it again); a repository that fails otherwise (unreachable) stops the
//! run, which a rerun resumes.

use std::collections::BTreeSet;

use futures::StreamExt;
use serde::Serialize;
use tidemark_pg::WalFileName;
use tidemark_store::catalog::{self, Stanza, WalRecord};
use tidemark_store::wal_content::{parse_wal_content_key, wal_content_key, WalContent};
use tidemark_store::{Digest, ErrorKind as StoreKind, Key, Repo};

use crate::content::Summarized;
use crate::Result;

/// Segments fetched and decoded at once: enough to overlap one segment's fetch with
/// another's decoding, and a bound on memory (two segments).
pub const IN_FLIGHT: usize = 2;

/// What a reindex did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReindexReport {
    /// Segment and `.partial` entries of the stanza.
    pub segments: u64,
    /// Summaries written now, the segment decoded to its end.
    pub indexed: u64,
    /// Entries that had their content already (in the entry, or a sidecar).
    pub already_indexed: u64,
    /// Summaries written now of segments with invalid WAL: where, and why.
    pub damaged: Vec<DamagedSegment>,
    /// Entries left without a summary: why (the next run tries them again).
    pub failed: Vec<FailedSegment>,
}

/// A segment the decoder stopped in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DamagedSegment {
    /// The WAL file name.
    pub name: String,
    /// Where its WAL is invalid (`X/X`).
    pub lsn: String,
    /// Why.
    pub reason: String,
}

/// An entry left without a summary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailedSegment {
    /// The WAL file name.
    pub name: String,
    /// What failed.
    pub error: String,
    /// True when the repository's content is at fault (a blob missing or not what its
    /// digest says): a person must look.
    pub integrity: bool,
}

/// How one entry ended.
enum Done {
    Already,
    Indexed,
    Damaged(DamagedSegment),
    Failed(FailedSegment),
}

/// Builds the missing content summaries of `stanza`'s WAL index. `progress` is called
/// once before the first entry with how many are to be looked at, and after each.
pub async fn reindex(
    repo: &Repo,
    stanza: &Stanza,
    mut progress: impl FnMut(Progress),
) -> Result<ReindexReport> {
    // Only `init` creates a stanza: a typo in the settings must not look like an empty one.
    let cluster = repo.require_cluster(stanza).await?;
    let listed = repo.backend().list(&catalog::wal_prefix(stanza)).await?;
    let sidecars: BTreeSet<(WalFileName, Digest)> = listed
        .iter()
        .filter_map(|m| parse_wal_content_key(&m.key))
        .collect();
    let mut report = ReindexReport::default();
    let mut todo: Vec<(WalFileName, Digest, Key)> = Vec::new();
    for meta in &listed {
        let Some((name, digest)) = catalog::parse_wal_key(&meta.key) else {
            continue;
        };
        if !matches!(name, WalFileName::Segment(_) | WalFileName::Partial(_)) {
            continue;
        }
        report.segments += 1;
        if sidecars.contains(&(name, digest)) {
            report.already_indexed += 1;
        } else {
            todo.push((name, digest, meta.key.clone()));
        }
    }
    drop(listed);
    drop(sidecars);
    progress(Progress::Start {
        entries: todo.len() as u64,
        bytes: todo.len() as u64 * cluster.wal_segment_size,
    });
    let mut results = futures::stream::iter(todo)
        .map(|(name, digest, key)| async move {
            let done = reindex_one(repo, stanza, name, digest, &key).await;
            (name, done)
        })
        .buffer_unordered(IN_FLIGHT);
    while let Some((name, done)) = results.next().await {
        match done? {
            Done::Already => report.already_indexed += 1,
            Done::Indexed => report.indexed += 1,
            Done::Damaged(d) => report.damaged.push(d),
            Done::Failed(f) => report.failed.push(f),
        }
        progress(Progress::Entry {
            name,
            bytes: cluster.wal_segment_size,
        });
    }
    report.damaged.sort_by(|a, b| a.name.cmp(&b.name));
    report.failed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(report)
}

/// What [`reindex`] tells its caller as it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// The entries without content, to be looked at.
    Start {
        /// How many.
        entries: u64,
        /// Their bytes (segments are all of the cluster's segment size).
        bytes: u64,
    },
    /// One of them is done.
    Entry {
        /// Its name.
        name: WalFileName,
        /// Its bytes.
        bytes: u64,
    },
}

/// One entry: its record, and unless it has content, its blob decoded and the sidecar
/// written. `Err` only for a repository failure that should stop the run.
async fn reindex_one(
    repo: &Repo,
    stanza: &Stanza,
    name: WalFileName,
    digest: Digest,
    key: &Key,
) -> Result<Done> {
    let failed = |error: String, integrity: bool| {
        Ok(Done::Failed(FailedSegment {
            name: name.to_string(),
            error,
            integrity,
        }))
    };
    let record: WalRecord = match repo.get_record(key).await {
        Ok(record) => record,
        // Removed since the listing (by a person): nothing to index.
        Err(e) if e.is_not_found() => return Ok(Done::Already),
        Err(e) if e.kind() == StoreKind::Integrity => return failed(e.to_string(), true),
        Err(e) => return Err(e.into()),
    };
    if record.content.is_some() {
        return Ok(Done::Already);
    }
    let mut raw = Vec::with_capacity(record.raw_size.min(1 << 30) as usize);
    match repo.read_blob(&digest, &mut raw).await {
        Ok(_) => {}
        Err(e) if e.is_not_found() => {
            return failed(format!("its content (blob {digest}) is missing: {e}"), true)
        }
        Err(e) if e.kind() == StoreKind::Integrity => return failed(e.to_string(), true),
        Err(e) => return Err(e.into()),
    }
    let summarized = tokio::task::spawn_blocking(move || {
        let seg = name.segment().expect("segments and partials have one");
        let id = tidemark_pg::check_segment_start(&seg, &raw, raw.len() as u64)
            .map_err(|e| e.to_string())?;
        crate::content::summarize(&name, &raw, &id).ok_or_else(|| "not a segment".to_string())
    })
    .await
    .expect("the WAL decoder contains its panics");
    let summarized = match summarized {
        Ok(s) => s,
        Err(e) => return failed(e, false),
    };
    let (content, damaged) = match summarized {
        Summarized::Failed(why) => return failed(why, false),
        Summarized::Whole(content) => (content, None),
        Summarized::Damaged {
            content,
            lsn,
            reason,
        } => (
            content,
            Some(DamagedSegment {
                name: name.to_string(),
                lsn: lsn.to_string(),
                reason,
            }),
        ),
    };
    let sidecar = wal_content_key(stanza, &name, &digest);
    let mut created = repo.put_record(&sidecar, &content).await?;
    if !created {
        // Already there: a retried create whose first attempt landed (its answer lost,
        // which S3 clients retry on their own), or another run meanwhile. Ours if it
        // holds what this run decoded.
        let found: WalContent = repo.get_record(&sidecar).await?;
        created = found == content;
    }
    Ok(match (created, damaged) {
        (false, _) => Done::Already,
        (true, Some(d)) => Done::Damaged(d),
        (true, None) => Done::Indexed,
    })
}
