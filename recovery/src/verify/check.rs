//! The pure parts of `verify`: WAL continuity and the history chain over a catalog
//! snapshot (with the planner's own walk and timeline rules), and the per-shard merge of
//! what must be read, what an earlier run proved, and what the store lists. No IO here.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use tidemark_store::verify::{ListedBlob, ProofEntry};
use tidemark_store::Digest;

use crate::plan::timelines::{history_name, known_timelines, TimelinePath};
use crate::plan::walk::{walk, Archive, Verdict, WalkEnd};
use crate::plan::{CatalogSnapshot, SegmentContent};

/// A problem or a note, before it is recorded.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// Its kind (`wal-gap`, `history-missing`, …).
    pub kind: &'static str,
    /// What it is about.
    pub subject: String,
    /// One line.
    pub detail: String,
}

impl Finding {
    pub(crate) fn new(kind: &'static str, subject: impl Into<String>, detail: String) -> Self {
        Finding {
            kind,
            subject: subject.into(),
            detail,
        }
    }
}

/// Which WAL the continuity check covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalScope {
    /// From the oldest backup's start (of those started at or after `since`, when
    /// given) to the end of the archive, on every timeline.
    All {
        /// `--since`.
        since: Option<DateTime<Utc>>,
    },
    /// What this backup needs to become consistent: its start to its stop, on its path.
    Backup(String),
}

/// What the WAL check found: problems, notes, and the segments it walked (for the
/// `--backup` scope, whose blobs are then the ones to read).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WalFindings {
    /// Failures.
    pub problems: Vec<Finding>,
    /// Not failures.
    pub notes: Vec<Finding>,
    /// The (timeline, segment) pairs walked, sorted.
    pub walked: BTreeSet<(u32, u64)>,
    /// The timelines whose history files the walked paths use.
    pub histories: BTreeSet<u32>,
}

/// Checks WAL continuity per timeline and the history chain (see the module doc).
///
/// - For every timeline the archive shows, its path (its history file's ancestry) is
///   walked as replay would read it, from the oldest start among the backups the path
///   admits, to the end of the archive; each missing stretch followed by more WAL is a
///   `wal-gap` naming the first and last missing segment and its timeline, each segment
///   whose summary records damage is `wal-damaged`. A stretch is reported once even when
///   several paths share it.
/// - Every timeline from 2 to the newest must have its history file: PostgreSQL's
///   `latest` probe stops at the first missing one (`history-missing`).
/// - Segments archived without a content summary are a note (`tidemark reindex` adds
///   it), as is a timeline that no backup leads to.
pub fn check_wal(snapshot: &CatalogSnapshot, scope: &WalScope) -> WalFindings {
    let mut out = WalFindings::default();
    let archive = Archive::new(snapshot);
    let known = known_timelines(snapshot);
    let newest = known.last().copied().unwrap_or(1);
    for tli in 2..=newest {
        if !snapshot.histories.contains_key(&tli) {
            out.problems.push(Finding::new(
                "history-missing",
                history_name(tli),
                format!(
                    "{} is not in the archive (or cannot be read) while timeline {newest} is: recovery to the latest timeline would stop at timeline {}",
                    history_name(tli),
                    tli - 1
                ),
            ));
        }
    }
    let mut reported = BTreeSet::new();
    match scope {
        WalScope::Backup(id) => {
            let Some(backup) = snapshot.backups.iter().find(|b| b.id == *id) else {
                return out;
            };
            let path = TimelinePath::of(snapshot, backup.stop_timeline);
            if let Err(why) = path.admits(backup) {
                out.problems
                    .push(Finding::new("backup-timeline", id.clone(), why));
                return out;
            }
            let until = archive.segment_of(backup.stop_lsn);
            walk_path(
                &archive,
                &path,
                archive.segment_of(backup.start_lsn),
                Some(until),
                &mut reported,
                &mut out,
            );
        }
        WalScope::All { since } => {
            let in_scope: Vec<_> = snapshot
                .backups
                .iter()
                .filter(|b| since.is_none_or(|s| b.start_time >= s))
                .collect();
            if in_scope.is_empty() {
                out.notes.push(Finding::new(
                    "no-backup",
                    "",
                    "no backup in scope: WAL continuity is not checked (it starts at a backup)"
                        .into(),
                ));
            }
            for tli in &known {
                let path = TimelinePath::of(snapshot, *tli);
                let start = in_scope
                    .iter()
                    .filter(|b| path.admits(b).is_ok())
                    .map(|b| b.start_lsn)
                    .min();
                let Some(start) = start else {
                    if !in_scope.is_empty()
                        && snapshot
                            .segments
                            .range((*tli, 0)..(*tli + 1, 0))
                            .next()
                            .is_some()
                    {
                        out.notes.push(Finding::new(
                            "timeline-without-backup",
                            format!("timeline {tli}"),
                            format!("no backup in scope leads to timeline {tli} ({}): its WAL is not checked for continuity", path.describe()),
                        ));
                    }
                    continue;
                };
                walk_path(
                    &archive,
                    &path,
                    archive.segment_of(start),
                    None,
                    &mut reported,
                    &mut out,
                );
            }
        }
    }
    let not_indexed: Vec<&str> = snapshot
        .segments
        .values()
        .filter(|s| matches!(s.content, SegmentContent::NotIndexed))
        .map(|s| s.name.as_str())
        .collect();
    if let (Some(first), Some(last)) = (not_indexed.first(), not_indexed.last()) {
        out.notes.push(Finding::new(
            "not-indexed",
            format!("{first}..{last}"),
            format!(
                "{} segments have no content summary ({first} .. {last}): run `tidemark reindex` (plans to a time or xid read them in full meanwhile)",
                not_indexed.len()
            ),
        ));
    }
    out
}

/// Walks `path` from segment `from` (to `until`, or the end), across gaps and damage,
/// recording each once.
fn walk_path(
    archive: &Archive<'_>,
    path: &TimelinePath,
    mut from: u64,
    until: Option<u64>,
    reported: &mut BTreeSet<(u32, u64)>,
    out: &mut WalFindings,
) {
    for step in &path.steps {
        if step.tli > 1 {
            out.histories.insert(step.tli);
        }
    }
    loop {
        let w = walk(archive, path, archive.segment_start(from), until, |_| {
            Verdict::<()>::NotHere
        });
        out.walked.extend(w.visited.iter().map(|s| s.key()));
        let next = match w.end {
            WalkEnd::Found(()) | WalkEnd::Limit | WalkEnd::Undecided => return,
            WalkEnd::Damaged(e) => {
                let seg = w
                    .visited
                    .last()
                    .expect("damage is found in a visited segment");
                if reported.insert(seg.key()) {
                    out.problems.push(Finding::new(
                        "wal-damaged",
                        seg.facts.name.clone(),
                        format!(
                            "{}: invalid WAL at {}: {}: replay stops there",
                            seg.facts.name, e.lsn, e.kind
                        ),
                    ));
                }
                seg.segno + 1
            }
            WalkEnd::Missing {
                tli,
                segno,
                more_after,
            } => {
                let resume = next_archived(archive, path, segno);
                let last_missing = match (more_after, resume) {
                    (true, Some(resume)) => resume - 1,
                    // The end of the archive on this path, or of the scope: when the
                    // scope ends at `until`, everything up to it is needed.
                    _ => match until {
                        Some(until) => until,
                        None => return,
                    },
                };
                let last_missing = until.map_or(last_missing, |u| last_missing.min(u));
                if reported.insert((tli, segno)) {
                    let first = archive.name(tli, segno);
                    let last = archive.name(path.file_timeline(last_missing), last_missing);
                    let count = last_missing - segno + 1;
                    out.problems.push(Finding::new(
                        "wal-gap",
                        first.clone(),
                        if count == 1 {
                            format!("{first} is missing on timeline {tli}: WAL after it cannot be replayed from an older backup")
                        } else {
                            format!("{first} .. {last} ({count} segments) are missing on timeline {tli}: WAL after them cannot be replayed from an older backup")
                        },
                    ));
                }
                match resume {
                    Some(resume) if until.is_none_or(|u| resume <= u) => resume,
                    _ => return,
                }
            }
        };
        if until.is_some_and(|u| next > u) {
            return;
        }
        from = next;
    }
}

/// The first archived segment of `path` after `segno`, if any.
fn next_archived(archive: &Archive<'_>, path: &TimelinePath, segno: u64) -> Option<u64> {
    path.steps
        .iter()
        .filter_map(|step| {
            let (first, last) = path.segment_span(step.tli)?;
            let from = first.max(segno + 1);
            if last.is_some_and(|l| from > l) {
                return None;
            }
            archive
                .snapshot
                .segments
                .range((step.tli, from)..=(step.tli, last.unwrap_or(u64::MAX)))
                .find(|(_, facts)| !facts.name.ends_with(".partial"))
                .map(|((_, n), _)| *n)
        })
        .min()
}

/// What to do with one blob shard.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ShardPlan {
    /// Referenced, not listed: missing.
    pub missing: Vec<Digest>,
    /// Referenced and listed, with no proof that still holds: read and hash.
    pub read: Vec<ListedBlob>,
    /// Referenced, listed, proven by an earlier run and unchanged since: not read.
    pub proven: u64,
    /// Earlier proofs that still hold (referenced this run or not), to carry forward.
    pub carried: Vec<ProofEntry>,
}

/// Merges one shard's referenced digests (`required`, sorted, distinct), its listing
/// (sorted) and the earlier proofs (sorted) in one pass. With `full`, no proof spares a
/// read (the proofs of blobs this run does not reference are still carried). A proof
/// holds only while the listing shows the same size and modification time: a replaced
/// object is read again, a vanished one loses its proof.
pub fn plan_shard(
    required: &[Digest],
    listed: &[ListedBlob],
    proofs: &[ProofEntry],
    full: bool,
) -> ShardPlan {
    let mut plan = ShardPlan::default();
    let (mut r, mut p) = (0, 0);
    for blob in listed {
        while r < required.len() && required[r] < blob.digest {
            plan.missing.push(required[r]);
            r += 1;
        }
        while p < proofs.len() && proofs[p].digest < blob.digest {
            p += 1;
        }
        let proof = proofs.get(p).filter(|proof| proof.matches(blob)).copied();
        let is_required = required.get(r) == Some(&blob.digest);
        if is_required {
            r += 1;
        }
        match (is_required, proof) {
            (true, Some(proof)) if !full => {
                plan.proven += 1;
                plan.carried.push(proof);
            }
            (true, _) => plan.read.push(*blob),
            (false, Some(proof)) => plan.carried.push(proof),
            (false, None) => {}
        }
    }
    plan.missing.extend_from_slice(&required[r..]);
    plan
}

/// Merges two sorted proof lists with distinct digests into one (a digest in both: the
/// newer, `fresh`, wins).
pub fn merge_proofs(carried: Vec<ProofEntry>, mut fresh: Vec<ProofEntry>) -> Vec<ProofEntry> {
    fresh.sort();
    let mut out = Vec::with_capacity(carried.len() + fresh.len());
    let (mut a, mut b) = (carried.into_iter().peekable(), fresh.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.digest < y.digest => out.push(a.next().expect("peeked")),
            (Some(x), Some(y)) if x.digest == y.digest => {
                a.next();
                out.push(b.next().expect("peeked"));
            }
            (_, Some(_)) => out.push(b.next().expect("peeked")),
            (Some(_), None) => out.push(a.next().expect("peeked")),
            (None, None) => return out,
        }
    }
}

/// The digests of `required` (sorted) that fall in `shard`.
pub fn shard_range(required: &[Digest], shard: u8) -> &[Digest] {
    let start = required.partition_point(|d| d.0[0] < shard);
    let end = required.partition_point(|d| d.0[0] <= shard);
    &required[start..end]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::plan::{BackupPoint, SegmentFacts};
    use std::collections::BTreeMap;
    use tidemark_pg::wal::SegmentSummary;
    use tidemark_pg::{HistoryEntry, Lsn, PgMajor, SystemId, TimelineId};

    const SEG: u64 = 16 << 20;

    fn d(first: u8, rest: u8) -> Digest {
        let mut b = [rest; 32];
        b[0] = first;
        Digest(b)
    }

    fn listed(digest: Digest, size: u64) -> ListedBlob {
        ListedBlob {
            digest,
            stored_size: size,
            modified_ms: 1000,
        }
    }

    #[test]
    fn a_shard_reads_what_has_no_valid_proof_and_names_what_is_missing() {
        let (a, b, c, e, f) = (d(7, 1), d(7, 2), d(7, 3), d(7, 5), d(7, 6));
        let required = [a, b, c, e];
        // c is not listed (missing); f is listed but not referenced.
        let listing = [listed(a, 10), listed(b, 20), listed(e, 50), listed(f, 60)];
        // a proven unchanged; b proven at another size (replaced since); f proven.
        let proofs = [
            listed(a, 10).proof(),
            listed(b, 21).proof(),
            listed(f, 60).proof(),
        ];
        let plan = plan_shard(&required, &listing, &proofs, false);
        assert_eq!(plan.missing, vec![c]);
        assert_eq!(plan.read, vec![listed(b, 20), listed(e, 50)]);
        assert_eq!(plan.proven, 1);
        assert_eq!(plan.carried, vec![proofs[0], proofs[2]]);

        let full = plan_shard(&required, &listing, &proofs, true);
        assert_eq!(full.read.len(), 3);
        assert_eq!(full.proven, 0);
        assert_eq!(
            full.carried,
            vec![proofs[2]],
            "an unreferenced proof is kept"
        );

        // A proof of a blob that is gone is dropped, and a missing blob at the end of the
        // shard is named.
        let gone = plan_shard(&[a, f], &[listed(a, 10)], &proofs, false);
        assert_eq!(gone.missing, vec![f]);
        assert_eq!(gone.carried, vec![proofs[0]]);

        let merged = merge_proofs(
            plan.carried.clone(),
            vec![listed(e, 50).proof(), listed(b, 20).proof()],
        );
        let digests: Vec<Digest> = merged.iter().map(|p| p.digest).collect();
        assert_eq!(digests, vec![a, b, e, f]);
        assert_eq!(
            merge_proofs(vec![proofs[1]], vec![listed(b, 20).proof()]),
            vec![listed(b, 20).proof()]
        );

        let all = [d(0, 1), d(7, 1), d(7, 9), d(255, 0)];
        assert_eq!(shard_range(&all, 7), &all[1..3]);
        assert!(shard_range(&all, 8).is_empty());
        assert_eq!(shard_range(&all, 255), &all[3..]);
    }

    /// Segments archived (indexed, undamaged), history files as (timeline, parent, fork
    /// segment), one backup `b1` from segment 2 to 3 of timeline 1 (also used by
    /// `continuity`'s tests).
    pub(crate) fn snapshot(
        segments: &[(u32, u64)],
        histories: &[(u32, u32, u64)],
    ) -> CatalogSnapshot {
        let mut segs = BTreeMap::new();
        for &(tli, segno) in segments {
            let name = format!("{tli:08X}{:08X}{:08X}", segno >> 8, segno & 0xff);
            let mut summary = SegmentSummary::new(Lsn(segno * SEG), tli, PgMajor::V15);
            summary.end_of_records = Lsn((segno + 1) * SEG);
            segs.insert(
                (tli, segno),
                SegmentFacts {
                    name,
                    stored_size: 1,
                    content: SegmentContent::Summary(Box::new(summary)),
                },
            );
        }
        let mut hist = BTreeMap::new();
        for &(tli, parent, fork_segno) in histories {
            let mut entries: Vec<HistoryEntry> = hist.get(&parent).cloned().unwrap_or_default();
            entries.push(HistoryEntry {
                parent: TimelineId(parent),
                switchpoint: Lsn(fork_segno * SEG + 0x100),
                reason: String::new(),
            });
            hist.insert(tli, entries);
        }
        let at: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
        CatalogSnapshot {
            system_id: SystemId(1),
            segment_size: SEG,
            pg_major: PgMajor::V15,
            backups: vec![BackupPoint {
                id: "b1".into(),
                timeline: 1,
                start_lsn: Lsn(2 * SEG + 0x28),
                stop_timeline: 1,
                stop_lsn: Lsn(3 * SEG + 0x100),
                start_time: at,
                stop_time: at,
                size: 0,
                extensions: Default::default(),
            }],
            histories: hist,
            segments: segs,
        }
    }

    fn kinds(f: &[Finding]) -> Vec<(&str, &str)> {
        f.iter().map(|f| (f.kind, f.subject.as_str())).collect()
    }

    #[test]
    fn continuous_wal_on_two_timelines_passes() {
        let snap = snapshot(
            &[(1, 2), (1, 3), (1, 4), (1, 5), (2, 5), (2, 6)],
            &[(2, 1, 5)],
        );
        let found = check_wal(&snap, &WalScope::All { since: None });
        assert_eq!(found.problems, vec![]);
        assert!(found.walked.contains(&(2, 6)) && found.walked.contains(&(1, 5)));
        assert!(found.notes.is_empty(), "{:?}", found.notes);
    }

    #[test]
    fn gaps_damage_and_history_holes_are_named_once() {
        // Segment 4 missing on timeline 1 (shared by both paths), 7-8 on timeline 3's
        // path, no history file for timeline 2.
        let mut snap = snapshot(
            &[(1, 2), (1, 3), (1, 5), (1, 6), (3, 6), (3, 9), (3, 10)],
            &[(3, 1, 6)],
        );
        if let Some(SegmentFacts {
            content: SegmentContent::Summary(s),
            ..
        }) = snap.segments.get_mut(&(1, 5))
        {
            s.damage = Some(tidemark_pg::wal::DecodeError {
                lsn: Lsn(5 * SEG + 0x40),
                kind: tidemark_pg::wal::DecodeErrorKind::Recorded("bad crc".into()),
            });
        }
        let found = check_wal(&snap, &WalScope::All { since: None });
        assert_eq!(
            kinds(&found.problems),
            vec![
                ("history-missing", "00000002.history"),
                ("wal-gap", "000000010000000000000004"),
                ("wal-damaged", "000000010000000000000005"),
                ("wal-gap", "000000030000000000000007"),
            ]
        );
        assert!(
            found.problems[3]
                .detail
                .contains("000000030000000000000008 (2 segments)"),
            "{}",
            found.problems[3].detail
        );

        // The backup's own scope: only from its start to its stop.
        let scoped = check_wal(&snap, &WalScope::Backup("b1".into()));
        assert_eq!(
            kinds(&scoped.problems),
            vec![("history-missing", "00000002.history")]
        );
        assert_eq!(scoped.walked, [(1, 2), (1, 3)].into_iter().collect());
        // Its stop segment missing: a gap inside the scope even at the end of the archive.
        snap.segments.remove(&(1, 3));
        snap.segments.retain(|k, _| k.0 == 1 && k.1 < 4);
        snap.histories.clear();
        let scoped = check_wal(&snap, &WalScope::Backup("b1".into()));
        assert_eq!(
            kinds(&scoped.problems),
            vec![("wal-gap", "000000010000000000000003")]
        );
    }

    #[test]
    fn the_end_of_the_archive_is_no_gap_and_unindexed_segments_are_a_note() {
        let mut snap = snapshot(&[(1, 2), (1, 3), (1, 4)], &[]);
        snap.segments.get_mut(&(1, 4)).unwrap().content = SegmentContent::NotIndexed;
        let found = check_wal(&snap, &WalScope::All { since: None });
        assert!(found.problems.is_empty(), "{:?}", found.problems);
        assert_eq!(
            kinds(&found.notes),
            vec![(
                "not-indexed",
                "000000010000000000000004..000000010000000000000004"
            )]
        );
        let later: DateTime<Utc> = "2026-12-02T00:00:00Z".parse().unwrap();
        let none = check_wal(&snap, &WalScope::All { since: Some(later) });
        assert_eq!(none.notes[0].kind, "no-backup");
        assert!(none.walked.is_empty());
    }
}
