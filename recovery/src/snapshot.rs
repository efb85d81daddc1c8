//! Loading the catalog snapshot the planner reads, and running the planner to a plan or a
//! refusal: the IO around [`crate::plan`], which is pure.
//!
//! [`load`] reads a stanza's catalog once: the cluster record, the backup records
//! ([`Repo::backups`]), the WAL index with each segment's content summary
//! ([`Repo::wal_catalog`]) and the archived history files (read and parsed). It then joins
//! the records that cross from one segment into the next from the two summaries
//! ([`SegmentSummary::join_next`], [`SegmentSummary::absorb`]); when a summary kept too few bytes of
//! such a record and both segments are archived, it reads the two segments and decodes the
//! record itself. What the catalog holds that a restore cannot use is said, not hidden:
//!
//! - a backup record that cannot be read is left out, with a warning naming it (a plan
//!   that asks for it by `--backup` fails as damaged data);
//! - a WAL name archived with two contents (a conflict, which `archive-get` refuses to
//!   serve) is left out of the snapshot, as if it were missing, and named in
//!   [`Loaded::conflicts`]: a plan whose path crosses it is refused;
//! - a history file that cannot be read or parsed is left out the same way, with a
//!   warning;
//! - a segment whose stored content is missing or fails its checks is damaged from its
//!   first byte: the planner refuses to replay across it (and names the nearest
//!   reachable points) instead of the command failing.
//!
//! [`plan`] asks the planner, and when it answers [`Outcome::NeedsSegments`], reads and
//! decodes those segments in full ([`SegmentContent::Decoded`], a bounded number at a
//! time) and asks again, until it has a plan or a refusal.
//!
//! The decoding of one segment, and of one crossing record, is pure ([`decode_segment`],
//! [`decode_crossing`]) and unit-tested.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use tidemark_pg::wal::{
    summarize_segment_with, DecodeError, DecodeErrorKind, Payload, RestorePointAt, SegmentSummary,
    WalRecord,
};
use tidemark_pg::{parse_history, Lsn, PgMajor, SegmentSize, WalFileName, WalSegmentName};
use tidemark_store::catalog::{ClusterRecord, Stanza};
use tidemark_store::repo::{Backups, IndexedWal};
use tidemark_store::{Digest, Repo};

use crate::plan::{
    self, BackupPoint, CatalogSnapshot, Completion, DecodedSegment, Outcome, PlanRequest,
    SegmentContent, SegmentFacts,
};
use crate::{Error, Result};

/// The memory the segments being decoded may take: each task holds one segment and at
/// most the next one (16 MiB each by default, so four at a time; with 1 GiB segments,
/// one).
const DECODE_MEMORY: u64 = 128 << 20;

/// Segments read and decoded at once, within [`DECODE_MEMORY`] (at least one).
fn decode_at_once(segment_size: u64) -> usize {
    (DECODE_MEMORY / (2 * segment_size.max(1))).clamp(1, 4) as usize
}

/// The catalog as the planner reads it, and what it takes to read segments on demand.
#[derive(Debug)]
pub struct Loaded {
    /// What the planner reads.
    pub snapshot: CatalogSnapshot,
    /// What the operator should know about the catalog itself (damaged backup records,
    /// unreadable history files), one line each: the plan's warnings start with these.
    pub warnings: Vec<String>,
    /// WAL names archived with more than one content: left out of the snapshot.
    pub conflicts: Vec<String>,
    /// The backup records that cannot be read, by id.
    pub damaged_backups: Vec<String>,
    /// Each archived segment's content digest.
    digests: BTreeMap<(u32, u64), Digest>,
}

/// Reads the stanza's catalog (see the module doc). Fails when the repository cannot be
/// read, or the stanza has no cluster record.
pub async fn load(repo: &Repo, stanza: &Stanza) -> Result<Loaded> {
    let cluster = repo.require_cluster(stanza).await?;
    let listing = repo.backups(stanza).await?;
    let wal = repo.wal_catalog(stanza).await?;
    build(repo, stanza, &cluster, &listing, &wal).await
}

/// [`load`] from what the caller already read (`info` reads the same records for its own
/// report): the cluster record, the backups and the WAL index. Reads the history files,
/// and the segments a crossing record needs.
pub async fn build(
    repo: &Repo,
    stanza: &Stanza,
    cluster: &ClusterRecord,
    listing: &Backups,
    wal: &[IndexedWal],
) -> Result<Loaded> {
    let entries = wal
        .iter()
        .map(|e| Entry {
            name: &e.name,
            digest: e.digest,
            stored_size: e.record.stored_size,
            content: e.content.as_ref(),
            content_error: e.content_error.as_deref(),
        })
        .collect();
    build_from(repo, stanza, cluster, listing, entries).await
}

/// [`build`] from the WAL index's keys alone (`wal_listed`: a listing of
/// [`tidemark_store::catalog::wal_prefix`], or of a part of it), without reading a single
/// index record: one listing instead of one read per archived file. Every segment is
/// [`SegmentContent::NotIndexed`] and its `stored_size` is its index record's size, not
/// its blob's: enough for what needs only which segments exist and the timelines, not
/// for a plan. `expire` passes the history files' listing alone
/// ([`tidemark_store::catalog::wal_history_prefix`]): backups and histories, no segments.
pub async fn build_index_only(
    repo: &Repo,
    stanza: &Stanza,
    cluster: &ClusterRecord,
    listing: &Backups,
    wal_listed: &[tidemark_store::backend::ObjectMeta],
) -> Result<Loaded> {
    let parsed: Vec<(WalFileName, Digest, u64)> = wal_listed
        .iter()
        .filter_map(|m| tidemark_store::catalog::parse_wal_key(&m.key).map(|(n, d)| (n, d, m.size)))
        .collect();
    let entries = parsed
        .iter()
        .map(|(name, digest, size)| Entry {
            name,
            digest: *digest,
            stored_size: *size,
            content: None,
            content_error: None,
        })
        .collect();
    build_from(repo, stanza, cluster, listing, entries).await
}

/// What [`build_from`] needs of one WAL index entry.
struct Entry<'a> {
    name: &'a WalFileName,
    digest: Digest,
    stored_size: u64,
    content: Option<&'a SegmentSummary>,
    content_error: Option<&'a str>,
}

async fn build_from(
    repo: &Repo,
    stanza: &Stanza,
    cluster: &ClusterRecord,
    listing: &Backups,
    wal: Vec<Entry<'_>>,
) -> Result<Loaded> {
    let size = SegmentSize::new(cluster.wal_segment_size).map_err(|e| Error::WalContent {
        name: format!("stanza {stanza}"),
        detail: format!("the cluster record's WAL segment size: {e}"),
    })?;
    let major = PgMajor::from_number(cluster.pg_major).ok_or_else(|| Error::WalContent {
        name: format!("stanza {stanza}"),
        detail: format!(
            "the cluster record names PostgreSQL {}, which tidemark cannot decode",
            cluster.pg_major
        ),
    })?;
    let mut warnings = Vec::new();

    let damaged_backups: Vec<String> = listing.damaged.iter().map(|d| d.id.clone()).collect();
    for d in &listing.damaged {
        warnings.push(format!(
            "backup {} is left out: its record cannot be read ({})",
            d.id, d.error
        ));
    }
    let mut backups = Vec::with_capacity(listing.records.len());
    for r in &listing.records {
        if r.system_id != cluster.system_id {
            warnings.push(format!(
                "backup {} is left out: it is of system {}, the stanza's cluster is {}",
                r.id, r.system_id, cluster.system_id
            ));
            continue;
        }
        let mut extensions = BTreeSet::new();
        for db in &r.databases {
            match &db.extensions {
                // template0 takes no connections, and holds what initdb put there.
                None if db.name == "template0" => {}
                Some(list) => extensions.extend(list.iter().map(|e| e.name.clone())),
                None => warnings.push(format!(
                    "backup {}: the extensions of database {:?} are unknown (it could not be read when the backup was taken)",
                    r.id, db.name
                )),
            }
        }
        backups.push(BackupPoint {
            id: r.id.clone(),
            timeline: r.timeline.0,
            start_lsn: r.start_lsn,
            stop_timeline: r.stop_timeline.0,
            stop_lsn: r.stop_lsn,
            start_time: r.start_time,
            stop_time: r.stop_time,
            size: r.size,
            extensions,
        });
    }

    // Every index entry, grouped by name: more than one content is a conflict.
    let mut by_name: BTreeMap<String, Vec<Entry<'_>>> = BTreeMap::new();
    for entry in wal {
        by_name
            .entry(entry.name.to_string())
            .or_default()
            .push(entry);
    }
    let mut conflicts = Vec::new();
    let mut segments = BTreeMap::new();
    let mut digests = BTreeMap::new();
    let mut history_digests = BTreeMap::new();
    for (name, mut entries) in by_name {
        entries.dedup_by(|a, b| a.digest == b.digest);
        if entries.len() > 1 {
            conflicts.push(name);
            continue;
        }
        let entry = entries.pop().expect("a name has an entry");
        if let Some(why) = entry.content_error {
            warnings.push(format!(
                "{name}: its content summary cannot be read ({why}): it is decoded when the plan needs it"
            ));
        }
        match entry.name {
            WalFileName::Segment(seg) => {
                let Ok(segno) = seg.segment_number(size) else {
                    continue;
                };
                let key = (seg.timeline.0, segno);
                digests.insert(key, entry.digest);
                segments.insert(
                    key,
                    SegmentFacts {
                        name,
                        stored_size: entry.stored_size,
                        content: match entry.content {
                            Some(summary) => SegmentContent::Summary(Box::new(summary.clone())),
                            None => SegmentContent::NotIndexed,
                        },
                    },
                );
            }
            WalFileName::History(tli) => {
                history_digests.insert(tli.0, entry.digest);
            }
            // restore_command is never asked for these.
            WalFileName::Partial(_) | WalFileName::Backup { .. } => {}
        }
    }
    for name in &conflicts {
        warnings.push(format!(
            "{name} is archived with two different contents (a conflict archive-get refuses to serve): treated as missing"
        ));
    }

    // History files are few (one per promotion) and small.
    let read: Vec<(u32, Option<Vec<u8>>)> = futures::stream::iter(history_digests)
        .map(|(tli, digest)| async move {
            match repo.get_blob(&digest).await {
                Ok(bytes) => Ok((tli, Some(bytes))),
                Err(e) if unreadable(&e) => Ok((tli, None)),
                Err(e) => Err(Error::from(e)),
            }
        })
        .buffered(16)
        .try_collect()
        .await?;
    let mut histories = BTreeMap::new();
    for (tli, bytes) in read {
        let Some(bytes) = bytes else {
            warnings.push(format!(
                "the history file of timeline {tli} cannot be read from the repository (missing or damaged): treated as missing"
            ));
            continue;
        };
        match parse_history(&bytes) {
            Ok(entries) => {
                histories.insert(tli, entries);
            }
            Err(e) => warnings.push(format!(
                "the history file of timeline {tli} cannot be parsed ({e}): treated as missing"
            )),
        }
    }

    let mut loaded = Loaded {
        snapshot: CatalogSnapshot {
            system_id: cluster.system_id,
            segment_size: size.bytes(),
            pg_major: major,
            backups,
            histories,
            segments,
        },
        warnings,
        conflicts,
        damaged_backups,
        digests,
    };
    loaded.join_crossing_records(repo).await?;
    Ok(loaded)
}

/// Whether a read failed because of the stored object itself (missing, or failing its
/// checks), rather than because the repository could not be reached: the planner then
/// treats what it holds as damaged, and refuses with the nearest reachable points.
fn unreadable(e: &tidemark_store::Error) -> bool {
    e.is_not_found() || e.kind() == tidemark_store::ErrorKind::Integrity
}

/// A WAL file's bytes, or, when its stored object is missing or damaged, the damage to
/// record at `at` (where replay would stop).
async fn read_wal(
    repo: &Repo,
    digest: &Digest,
    at: Lsn,
) -> Result<std::result::Result<Vec<u8>, DecodeError>> {
    match repo.get_blob(digest).await {
        Ok(bytes) => Ok(Ok(bytes)),
        Err(e) if unreadable(&e) => Ok(Err(DecodeError {
            lsn: at,
            kind: DecodeErrorKind::Recorded(format!(
                "its content cannot be read from the repository: {e}"
            )),
        })),
        Err(e) => Err(e.into()),
    }
}

/// What joining the neighbours' halves left to do.
#[derive(Debug, Default, PartialEq, Eq)]
struct Joined {
    /// Segments whose crossing record needs the bytes of both segments.
    need_bytes: Vec<(u32, u64)>,
}

impl Loaded {
    /// Joins every record that crosses from an indexed segment into the next archived one
    /// (see the module doc): from the summaries when both halves are there, else from the
    /// two segments' bytes.
    async fn join_crossing_records(&mut self, repo: &Repo) -> Result<()> {
        let joined = join_from_summaries(&mut self.snapshot);
        let size = self.snapshot.segment_size;
        let major = self.snapshot.pg_major;
        let work: Vec<((u32, u64), Digest, Digest, Lsn)> = joined
            .need_bytes
            .iter()
            .filter_map(|&(tli, segno)| {
                let here = *self.digests.get(&(tli, segno))?;
                let next = *self.digests.get(&(tli, segno + 1))?;
                let lsn = match &self.snapshot.segments.get(&(tli, segno))?.content {
                    SegmentContent::Summary(s) => s.crossing_start.as_ref()?.lsn,
                    _ => return None,
                };
                Some(((tli, segno), here, next, lsn))
            })
            .collect();
        let decoded: Vec<((u32, u64), std::result::Result<WalRecord, DecodeError>)> =
            futures::stream::iter(work)
                .map(|(key, here, next, lsn)| async move {
                    // Either segment unreadable: replay cannot get past the record.
                    let (a, b) = match (
                        read_wal(repo, &here, lsn).await?,
                        read_wal(repo, &next, lsn).await?,
                    ) {
                        (Ok(a), Ok(b)) => (a, b),
                        (Err(damage), _) | (_, Err(damage)) => return Ok((key, Err(damage))),
                    };
                    let start = Lsn(key.1 * size);
                    let record = tokio::task::spawn_blocking(move || {
                        decode_crossing(&a, &b, start, lsn, size, major)
                    })
                    .await
                    .expect("decoding panicked");
                    Ok::<_, Error>((key, record))
                })
                .buffer_unordered(decode_at_once(size))
                .try_collect()
                .await?;
        for (key, record) in decoded {
            if let Some(SegmentFacts {
                content: SegmentContent::Summary(summary),
                ..
            }) = self.snapshot.segments.get_mut(&key)
            {
                match record {
                    Ok(record) => summary.absorb(&record),
                    // Replay stops there too: the planner must see the damage.
                    Err(e) => {
                        if summary.damage.is_none() {
                            summary.damage = Some(e);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Joins the crossing records whose two halves the summaries of segment N and N+1 both
/// kept (absorbed into N's summary; a record that fails its CRC marks N as damaged).
/// Returns the segments whose crossing record needs the segments' bytes (only records
/// that may matter to recovery, see
/// [`tidemark_pg::wal::CrossingStart::may_matter_to_recovery`]). Pure.
fn join_from_summaries(snapshot: &mut CatalogSnapshot) -> Joined {
    let mut joined = Joined::default();
    let keys: Vec<(u32, u64)> = snapshot.segments.keys().copied().collect();
    for key in keys {
        let next = (key.0, key.1 + 1);
        let next = match snapshot.segments.get(&next).map(|s| &s.content) {
            Some(SegmentContent::Summary(s)) => Some(s.clone()),
            Some(SegmentContent::NotIndexed) => None,
            // Decoded segments come later, from `plan`; a missing one cannot be joined.
            Some(SegmentContent::Decoded(_)) | None => continue,
        };
        let Some(SegmentFacts {
            content: SegmentContent::Summary(summary),
            ..
        }) = snapshot.segments.get_mut(&key)
        else {
            continue;
        };
        let Some(start) = &summary.crossing_start else {
            continue;
        };
        let both_kept = |next: &SegmentSummary| {
            start.bytes.is_some()
                && next
                    .crossing_end
                    .as_ref()
                    .is_some_and(|end| end.bytes.is_some())
        };
        match next {
            Some(next) if both_kept(&next) => match summary.join_next(&next) {
                Some(Ok(record)) => summary.absorb(&record),
                // The first damage is where replay stops.
                Some(Err(e)) if summary.damage.is_none() => summary.damage = Some(e),
                Some(Err(_)) | None => {}
            },
            // Reading two segments is worth it only for a record that can change the
            // plan (a commit, a restore point, …), not for a heap change or a page image.
            _ if start.may_matter_to_recovery() => joined.need_bytes.push(key),
            _ => {}
        }
    }
    joined
}

/// Decodes the record that starts at `lsn` in segment `here` (which starts at
/// `segment_start`) and ends in `next`, the following segment. Pure.
pub fn decode_crossing(
    here: &[u8],
    next: &[u8],
    segment_start: Lsn,
    lsn: Lsn,
    segment_size: u64,
    major: PgMajor,
) -> std::result::Result<WalRecord, DecodeError> {
    let mut found = None;
    let summary = summarize_segment_with(
        here,
        segment_size,
        segment_start,
        Some(major),
        &[next],
        |r| {
            if r.lsn == lsn {
                found = Some(r.clone());
            }
        },
    )?;
    match (found, summary.damage) {
        (Some(record), _) => Ok(record),
        (None, Some(damage)) => Err(damage),
        (None, None) => Err(DecodeError {
            lsn,
            kind: DecodeErrorKind::Crossing(
                "the record does not complete in the next segment".into(),
            ),
        }),
    }
}

/// Decodes segment `here` (starting at `start`) in full: its summary and every commit,
/// abort and restore point that starts in it, the record that crosses into `next` (the
/// following segment, when archived) included and counted in the summary. Damage in the
/// middle of the segment ends the lists there (the summary says where). `indexed`: the
/// content index had a summary of it. Pure.
pub fn decode_segment(
    here: &[u8],
    next: Option<&[u8]>,
    start: Lsn,
    segment_size: u64,
    major: PgMajor,
    indexed: bool,
) -> std::result::Result<DecodedSegment, DecodeError> {
    let end = Lsn(start.0 + segment_size);
    let mut completions = Vec::new();
    let mut restore_points = Vec::new();
    let mut crossing = None;
    let following: Vec<&[u8]> = next.into_iter().collect();
    let mut summary =
        summarize_segment_with(here, segment_size, start, Some(major), &following, |r| {
            if let Some(x) = r.payload.xact_completion() {
                completions.push(Completion {
                    lsn: r.lsn,
                    xid: x.xid,
                    time: x.time,
                    commit: matches!(r.payload, Payload::Commit(_)),
                });
            }
            if let Payload::RestorePoint(rp) = &r.payload {
                restore_points.push(RestorePointAt {
                    lsn: r.lsn,
                    time: rp.time,
                    name: rp.name.clone(),
                });
            }
            if r.end > end {
                crossing = Some(r.clone());
            }
        })?;
    if let Some(record) = &crossing {
        summary.absorb(record);
    }
    Ok(DecodedSegment {
        summary,
        completions,
        restore_points,
        indexed,
    })
}

/// Plans `request` on `loaded`, decoding the segments the planner asks for (at most
/// [`decode_at_once`] at a time) until it answers with a plan or a refusal. The loader's
/// warnings come first among the plan's.
pub async fn plan(repo: &Repo, loaded: &mut Loaded, request: &PlanRequest) -> Result<Outcome> {
    let mut asked: BTreeSet<(u32, u64)> = BTreeSet::new();
    loop {
        match plan::plan(&loaded.snapshot, request) {
            Outcome::NeedsSegments(wanted) => {
                for key in &wanted {
                    if !asked.insert(*key) || !loaded.digests.contains_key(key) {
                        return Err(Error::Planner(format!(
                            "the planner asked for segment {} of timeline {} {}",
                            key.1,
                            key.0,
                            if loaded.digests.contains_key(key) {
                                "twice"
                            } else {
                                "which is not archived"
                            }
                        )));
                    }
                }
                loaded.decode(repo, &wanted).await?;
            }
            Outcome::Plan(mut p) => {
                let mut warnings = loaded.warnings.clone();
                warnings.append(&mut p.warnings);
                p.warnings = warnings;
                return Ok(Outcome::Plan(p));
            }
            refused @ Outcome::Refused(_) => return Ok(refused),
        }
    }
}

/// [`plan`], then, when the plan places its stop record only in a segment (the
/// index's summary of that segment does not name the record: a time target whose first
/// commit there does not pass it), that segment decoded in full and the target planned
/// again, so that the plan names the record, its LSN and its time. `tidemark drill`
/// compares them with where the server stopped; a restore does not need them.
pub async fn plan_exact(
    repo: &Repo,
    loaded: &mut Loaded,
    request: &PlanRequest,
) -> Result<Outcome> {
    let outcome = plan(repo, loaded, request).await?;
    let Outcome::Plan(p) = &outcome else {
        return Ok(outcome);
    };
    if p.stop.lsn.is_some() {
        return Ok(outcome);
    }
    let size = SegmentSize::new(loaded.snapshot.segment_size).map_err(|e| Error::WalContent {
        name: "the stanza's cluster record".into(),
        detail: e.to_string(),
    })?;
    let key = p.wal.last().and_then(|range| {
        let name = range.last.parse::<WalFileName>().ok()?.segment()?;
        Some((name.timeline.0, name.segment_number(size).ok()?))
    });
    let undecoded = key.filter(|k| {
        loaded.digests.contains_key(k)
            && loaded
                .snapshot
                .segments
                .get(k)
                .is_some_and(|f| !matches!(f.content, SegmentContent::Decoded(_)))
    });
    let Some(key) = undecoded else {
        return Ok(outcome);
    };
    loaded.decode(repo, &[key]).await?;
    plan(repo, loaded, request).await
}

impl Loaded {
    /// Reads and decodes `wanted` in full, replacing their content in the snapshot.
    async fn decode(&mut self, repo: &Repo, wanted: &[(u32, u64)]) -> Result<()> {
        let size = self.snapshot.segment_size;
        let major = self.snapshot.pg_major;
        type Work = ((u32, u64), Digest, Option<Digest>, bool);
        let work: Vec<Work> = wanted
            .iter()
            .map(|&key| {
                let facts = &self.snapshot.segments[&key];
                let indexed = !matches!(facts.content, SegmentContent::NotIndexed);
                let next = self.digests.get(&(key.0, key.1 + 1)).copied();
                (key, self.digests[&key], next, indexed)
            })
            .collect();
        let decoded: Vec<((u32, u64), DecodedSegment)> = futures::stream::iter(work)
            .map(|(key, here, next, indexed)| async move {
                let start = Lsn(key.1 * size);
                // Damaged from its first byte: the planner refuses to cross it.
                let damaged = |damage: DecodeError| {
                    let mut summary = SegmentSummary::new(start, key.0, major);
                    summary.damage = Some(damage);
                    DecodedSegment {
                        summary,
                        completions: Vec::new(),
                        restore_points: Vec::new(),
                        indexed,
                    }
                };
                let a = match read_wal(repo, &here, start).await? {
                    Ok(a) => a,
                    Err(damage) => return Ok((key, damaged(damage))),
                };
                // The next segment only completes this one's last record: unreadable, it
                // is left out here (the planner meets its damage when it gets there).
                let b = match next {
                    Some(d) => read_wal(repo, &d, Lsn(start.0 + size)).await?.ok(),
                    None => None,
                };
                let decoded = tokio::task::spawn_blocking(move || {
                    decode_segment(&a, b.as_deref(), start, size, major, indexed)
                })
                .await
                .expect("decoding panicked");
                // Nothing in it can be read (its first page header): damaged from its start.
                Ok::<_, Error>((key, decoded.unwrap_or_else(damaged)))
            })
            .buffer_unordered(decode_at_once(size))
            .try_collect()
            .await?;
        for (key, d) in decoded {
            if let Some(facts) = self.snapshot.segments.get_mut(&key) {
                facts.content = SegmentContent::Decoded(Box::new(d));
            }
        }
        Ok(())
    }

    /// The name of segment `segno` of `timeline`.
    pub fn segment_name(&self, timeline: u32, segno: u64) -> String {
        let size = SegmentSize::new(self.snapshot.segment_size).expect("checked when loaded");
        WalSegmentName::from_segment_number(tidemark_pg::TimelineId(timeline), segno, size)
            .to_string()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tidemark_pg::wal::{CrossingEnd, CrossingStart};
    use tidemark_pg::SystemId;

    const SEG: u64 = 16 << 20;

    fn summary(segno: u64) -> SegmentSummary {
        SegmentSummary::new(Lsn(segno * SEG), 1, PgMajor::V15)
    }

    fn start(segno: u64, bytes: Option<Vec<u8>>) -> CrossingStart {
        CrossingStart {
            lsn: Lsn(segno * SEG + SEG - 40),
            total_len: Some(100),
            rmid: Some(1),
            info: Some(0),
            xid: Some(745),
            bytes,
        }
    }

    fn end(bytes: Option<Vec<u8>>) -> CrossingEnd {
        CrossingEnd {
            remaining: 60,
            bytes,
        }
    }

    fn snapshot(segments: Vec<(u64, SegmentContent)>) -> CatalogSnapshot {
        CatalogSnapshot {
            system_id: SystemId(1),
            segment_size: SEG,
            pg_major: PgMajor::V15,
            backups: Vec::new(),
            histories: BTreeMap::new(),
            segments: segments
                .into_iter()
                .map(|(segno, content)| {
                    (
                        (1, segno),
                        SegmentFacts {
                            name: format!("{segno}"),
                            stored_size: 1,
                            content,
                        },
                    )
                })
                .collect(),
        }
    }

    fn indexed(s: SegmentSummary) -> SegmentContent {
        SegmentContent::Summary(Box::new(s))
    }

    /// A local repository with stanza `main` of a PostgreSQL 15 cluster (system 1).
    pub(crate) async fn repo(dir: &std::path::Path) -> (Repo, Stanza) {
        use std::sync::Arc;
        let backend = Arc::new(tidemark_store::backend::local::LocalBackend::new(dir).unwrap());
        let repo = Repo::new(backend, tidemark_store::Compression::Lz4);
        let stanza = Stanza::new("main").unwrap();
        repo.ensure_format().await.unwrap();
        let cluster = ClusterRecord {
            system_id: SystemId(1),
            pg_major: 15,
            wal_segment_size: SEG,
            wal_page_size: 8192,
            created_at: chrono::Utc::now(),
            created_by: "test".into(),
        };
        repo.ensure_cluster(&stanza, &cluster).await.unwrap();
        (repo, stanza)
    }

    /// Indexes `content` under `name` (no content summary).
    async fn archive(repo: &Repo, stanza: &Stanza, name: &str, content: &[u8]) {
        let name: WalFileName = name.parse().unwrap();
        let put = repo
            .put_blob(bytes::Bytes::copy_from_slice(content))
            .await
            .unwrap();
        let record = tidemark_store::catalog::WalRecord {
            name: name.to_string(),
            kind: name.kind().into(),
            digest: put.digest,
            raw_size: content.len() as u64,
            stored_size: 7,
            compression: tidemark_store::Compression::Lz4,
            archived_at: chrono::Utc::now(),
            system_id: None,
            start_lsn: None,
            tidemark_version: "test".into(),
            content: None,
        };
        repo.put_wal_record(stanza, &name, &put.digest, &record)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn what_a_restore_cannot_use_is_left_out_and_said() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, stanza) = repo(dir.path()).await;
        let at = chrono::Utc::now();
        let mut backup = tidemark_store::backup::BackupRecord::example("20261121T103207Z", at);
        backup.databases = vec![
            tidemark_store::backup::DatabaseRecord {
                name: "template0".into(),
                oid: 4,
                extensions: None,
            },
            tidemark_store::backup::DatabaseRecord {
                name: "shop".into(),
                oid: 16384,
                extensions: Some(vec![tidemark_store::backup::ExtensionRecord {
                    name: "hstore".into(),
                    version: "1.8".into(),
                }]),
            },
            tidemark_store::backup::DatabaseRecord {
                name: "locked".into(),
                oid: 16385,
                extensions: None,
            },
        ];
        repo.put_backup(&stanza, &backup).await.unwrap();
        let mut other = tidemark_store::backup::BackupRecord::example("20261121T113207Z", at);
        other.system_id = SystemId(2);
        repo.put_backup(&stanza, &other).await.unwrap();
        archive(&repo, &stanza, "000000010000000000000002", b"two").await;
        archive(&repo, &stanza, "000000010000000000000003", b"three").await;
        archive(&repo, &stanza, "000000010000000000000003", b"three, again").await;
        archive(&repo, &stanza, "000000010000000000000004.partial", b"p").await;
        archive(&repo, &stanza, "00000002.history", b"not a history file").await;
        archive(
            &repo,
            &stanza,
            "00000003.history",
            b"1\t0/3000000\tx\n2\t0/5000000\ty\n",
        )
        .await;

        let loaded = load(&repo, &stanza).await.unwrap();
        let snap = &loaded.snapshot;
        // The backup of another cluster is left out; the other's extensions are known.
        assert_eq!(snap.backups.len(), 1);
        assert_eq!(
            snap.backups[0].extensions.iter().collect::<Vec<_>>(),
            ["hstore"]
        );
        // The conflict is missing from the snapshot, the partial file is not a segment.
        assert_eq!(snap.segments.keys().collect::<Vec<_>>(), [&(1, 2)]);
        assert_eq!(snap.segments[&(1, 2)].content, SegmentContent::NotIndexed);
        assert_eq!(snap.segments[&(1, 2)].stored_size, 7);
        assert_eq!(loaded.conflicts, ["000000010000000000000003"]);
        assert_eq!(snap.histories.keys().collect::<Vec<_>>(), [&3]);
        assert_eq!(snap.histories[&3].len(), 2);
        let warnings = loaded.warnings.join("\n");
        for needle in [
            "backup 20261121T113207Z is left out: it is of system 2",
            "the extensions of database \"locked\" are unknown",
            "000000010000000000000003 is archived with two different contents",
            "the history file of timeline 2 cannot be parsed",
        ] {
            assert!(warnings.contains(needle), "{needle:?} not in {warnings}");
        }
        assert!(!warnings.contains("template0"), "{warnings}");
        assert_eq!(loaded.warnings.len(), 4, "{warnings}");
    }

    #[tokio::test]
    async fn a_segment_whose_content_is_gone_is_damage_the_planner_refuses() {
        use crate::plan::{PlanRequest, RefusalKind, Target};
        let dir = tempfile::tempdir().unwrap();
        let (repo, stanza) = repo(dir.path()).await;
        let at = chrono::Utc::now();
        let backup = tidemark_store::backup::BackupRecord::example("20261121T103207Z", at);
        repo.put_backup(&stanza, &backup).await.unwrap();
        // The backup's segment (0/2000028 .. 0/2000100), archived before the index: the
        // planner must read it, and its blob is gone.
        archive(&repo, &stanza, "000000010000000000000002", b"two").await;
        let digest = tidemark_store::Digest::of(b"two");
        let key = tidemark_store::catalog::blob_key(&digest);
        std::fs::remove_file(dir.path().join(key.as_str())).unwrap();
        archive(&repo, &stanza, "00000002.history", b"1\t0/3000000\tx\n").await;
        let history =
            tidemark_store::catalog::blob_key(&tidemark_store::Digest::of(b"1\t0/3000000\tx\n"));
        std::fs::remove_file(dir.path().join(history.as_str())).unwrap();

        let mut loaded = load(&repo, &stanza).await.unwrap();
        assert!(loaded.snapshot.histories.is_empty());
        assert!(
            loaded
                .warnings
                .iter()
                .any(|w| w
                    .contains("the history file of timeline 2 cannot be read from the repository")),
            "{:?}",
            loaded.warnings
        );
        // The end of the archive: the planner reads the segment to find where it ends.
        let request = PlanRequest {
            target: Target::Latest,
            timeline: crate::plan::TimelineRequest::Current,
            action: Default::default(),
            backup: None,
            available_extensions: None,
        };
        let outcome = plan(&repo, &mut loaded, &request).await.unwrap();
        let Outcome::Refused(refusal) = outcome else {
            panic!("not refused: {outcome:?}")
        };
        assert_eq!(refusal.kind, RefusalKind::DamagedWal, "{refusal:?}");
        assert!(
            refusal.message.contains("000000010000000000000002"),
            "{refusal:?}"
        );
        let SegmentContent::Decoded(d) = &loaded.snapshot.segments[&(1, 2)].content else {
            panic!("decoded")
        };
        assert!(!d.indexed);
        assert_eq!(d.summary.damage.as_ref().unwrap().lsn, Lsn(2 * SEG));
    }

    #[test]
    fn decoding_stays_within_its_memory() {
        assert_eq!(decode_at_once(16 << 20), 4);
        assert_eq!(decode_at_once(32 << 20), 2);
        assert_eq!(decode_at_once(1 << 30), 1);
        assert_eq!(decode_at_once(1 << 20), 4);
    }

    #[test]
    fn crossing_records_are_joined_from_summaries_or_left_to_the_segments_bytes() {
        // 2 -> 3: the start's bytes were not kept: the segments must be read.
        let mut s2 = summary(2);
        s2.crossing_start = Some(start(2, None));
        let mut s3 = summary(3);
        s3.crossing_end = Some(end(Some(vec![0; 60])));
        // 4 -> 5: 5 was archived before the index: the segments must be read.
        let mut s4 = summary(4);
        s4.crossing_start = Some(start(4, Some(vec![0; 40])));
        // 6 -> (7 missing): nothing to join: the planner sees the gap.
        let mut s6 = summary(6);
        s6.crossing_start = Some(start(6, Some(vec![0; 40])));
        // 10 -> 11: a heap record too long to keep: not worth reading the segments for.
        let mut s10 = summary(10);
        let mut heap = start(10, None);
        (heap.rmid, heap.info) = (Some(10), Some(0));
        s10.crossing_start = Some(heap);
        let mut s11 = summary(11);
        s11.crossing_end = Some(end(None));
        // 8 -> 9: both halves kept, but they do not make a record: damage at its start.
        let mut s8 = summary(8);
        s8.crossing_start = Some(start(8, Some(vec![0xAB; 40])));
        let mut s9 = summary(9);
        s9.crossing_end = Some(end(Some(vec![0xCD; 60])));
        let mut snap = snapshot(vec![
            (2, indexed(s2)),
            (3, indexed(s3)),
            (4, indexed(s4)),
            (5, SegmentContent::NotIndexed),
            (6, indexed(s6)),
            (8, indexed(s8)),
            (9, indexed(s9)),
            (10, indexed(s10)),
            (11, indexed(s11)),
        ]);
        let joined = join_from_summaries(&mut snap);
        assert_eq!(joined.need_bytes, [(1, 2), (1, 4)]);
        let SegmentContent::Summary(s8) = &snap.segments[&(1, 8)].content else {
            panic!("still a summary")
        };
        let damage = s8.damage.as_ref().expect("the bad join is damage");
        assert_eq!(damage.lsn, Lsn(8 * SEG + SEG - 40));
        for segno in [2, 4, 6] {
            let SegmentContent::Summary(s) = &snap.segments[&(1, segno)].content else {
                panic!("still a summary")
            };
            assert_eq!(s.damage, None, "segment {segno}");
            assert_eq!(s.xacts, None, "nothing absorbed into {segno}");
        }
    }
}
