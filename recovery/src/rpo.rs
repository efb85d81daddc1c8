//! What the RPO watch, `tidemark status` and the metrics measure from the catalog snapshot
//! (pure: no IO, no clock).
//!
//! The newest recoverable moment is not the age of the last backup: it is what a restore
//! to the end of the archive reproduces, i.e. the newest commit in archived WAL that
//! replay reaches from a backup without a gap ([`crate::plan::windows`], the planner's
//! own walk). [`recoverable`] answers, for the timeline that leads to now (the server's,
//! or the newest the archive shows):
//!
//! - the newest recoverable commit and moment on that line (a restore is at least as new
//!   as the backup's consistent point, even when no commit followed it);
//! - the durable LSN: the end of the newest segment archived without a gap from the
//!   newest usable backup along that line (the server's WAL beyond it is at risk);
//! - per timeline: the earliest and latest point-in-time-recovery times, and the missing
//!   segments between the first and the last archived one (gaps no restore crosses).

use chrono::{DateTime, Utc};
use tidemark_pg::Lsn;

use crate::plan::timelines::{known_timelines, newest_timeline, TimelinePath};
use crate::plan::walk::{walk, Archive, Verdict, WalkEnd};
use crate::plan::{self, CatalogSnapshot, TimelineWindow, Window};

/// One timeline's recoverable range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineRecoverable {
    /// The timeline.
    pub timeline: u32,
    /// The earliest moment a restore onto it reaches (the oldest usable backup's
    /// consistent point); `None` when nothing on it is reachable.
    pub earliest: Option<DateTime<Utc>>,
    /// The newest commit a restore onto it reaches (or the consistent point, when no
    /// commit follows it); `None` when nothing on it is reachable.
    pub latest: Option<DateTime<Utc>>,
    /// Segments missing between its first and last archived segment (a conflict counts
    /// as missing: the planner treats it so).
    pub gap_segments: u64,
}

/// What the archive makes recoverable, measured on the line that leads to now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recoverable {
    /// The timeline measured (its ancestry included).
    pub timeline: u32,
    /// The newest commit (or abort) time a restore to the end of the archive replays, as
    /// the content index knows it; `None` when no commit follows the backup, or the
    /// segments after the last known one are not indexed.
    pub newest_commit: Option<DateTime<Utc>>,
    /// The newest moment a restore reproduces: the newest commit, or the backup's
    /// consistent point when that is later; `None` when nothing is reachable.
    pub newest_recoverable: Option<DateTime<Utc>>,
    /// Where the newest reachable stretch ends (the end of its last complete record).
    pub newest_lsn: Option<Lsn>,
    /// The start of that stretch (its backup's consistent point): every moment from
    /// there to `newest_recoverable` is restorable.
    pub restorable_since: Option<DateTime<Utc>>,
    /// The end of the newest segment archived without a gap from the newest usable
    /// backup along the line (from the oldest archived segment when there is no
    /// backup); `None` when nothing is archived on it. A damaged segment ends it where
    /// its readable WAL ends.
    pub durable_lsn: Option<Lsn>,
    /// Per timeline, ascending.
    pub timelines: Vec<TimelineRecoverable>,
}

/// Measures `snapshot` for `timeline` (the server's current one; `None`: the newest the
/// archive shows, as PostgreSQL's `latest`).
pub fn recoverable(snapshot: &CatalogSnapshot, timeline: Option<u32>) -> Recoverable {
    let windows = plan::windows(snapshot);
    // A timeline the archive does not know yet (just promoted, its history file not
    // archived): measured as the newest the archive shows, which it continues.
    let tli = timeline
        .filter(|t| known_timelines(snapshot).contains(t))
        .unwrap_or_else(|| newest_timeline(snapshot));
    let path = TimelinePath::of(snapshot, tli);
    // The newest stretch on the line: the timeline's own, or, before it has any (just
    // promoted, nothing of it archived yet), its nearest ancestor's.
    let newest: Option<&Window> = path
        .steps
        .iter()
        .rev()
        .find_map(|step| last_window(&windows, step.tli));
    let newest_recoverable = newest.map(|w| match w.to_time {
        Some(commit) => commit.max(w.from_time),
        None => w.from_time,
    });
    Recoverable {
        timeline: tli,
        newest_commit: newest.and_then(|w| w.to_time),
        newest_recoverable,
        newest_lsn: newest.map(|w| w.to_lsn),
        restorable_since: newest.map(|w| w.from_time),
        durable_lsn: durable_lsn(snapshot, &path),
        timelines: windows
            .iter()
            .map(|t| TimelineRecoverable {
                timeline: t.timeline,
                earliest: t.windows.iter().map(|w| w.from_time).min(),
                latest: t
                    .windows
                    .iter()
                    .map(|w| w.to_time.unwrap_or(w.from_time).max(w.from_time))
                    .max(),
                gap_segments: gap_segments(snapshot, t.timeline),
            })
            .collect(),
    }
}

/// The newest stretch of `tli` (the one that ends last).
fn last_window(windows: &[TimelineWindow], tli: u32) -> Option<&Window> {
    windows
        .iter()
        .find(|t| t.timeline == tli)?
        .windows
        .iter()
        .max_by_key(|w| w.to_lsn)
}

/// See [`Recoverable::durable_lsn`].
fn durable_lsn(snapshot: &CatalogSnapshot, path: &TimelinePath) -> Option<Lsn> {
    let archive = Archive::new(snapshot);
    let from = snapshot
        .backups
        .iter()
        .filter(|b| path.admits(b).is_ok())
        .max_by_key(|b| (b.stop_lsn, b.stop_time))
        .map(|b| b.start_lsn)
        .or_else(|| first_archived(snapshot, path).map(|segno| archive.segment_start(segno)))?;
    let walked = walk(&archive, path, from, None, |_| Verdict::<()>::NotHere);
    let last = walked.visited.last()?;
    Some(match walked.end {
        WalkEnd::Damaged(_) => last.end_of_wal(&archive),
        _ => archive.segment_start(last.segno + 1),
    })
}

/// The oldest segment archived on `path` (in a file of the timeline replay reads there).
fn first_archived(snapshot: &CatalogSnapshot, path: &TimelinePath) -> Option<u64> {
    path.steps
        .iter()
        .filter_map(|step| {
            let (first, last) = path.segment_span(step.tli)?;
            snapshot
                .segments
                .range((step.tli, first)..=(step.tli, last.unwrap_or(u64::MAX)))
                .next()
                .map(|((_, segno), _)| *segno)
        })
        .min()
}

/// Missing segment numbers between `tli`'s first and last archived segment.
fn gap_segments(snapshot: &CatalogSnapshot, tli: u32) -> u64 {
    let mut on_timeline = snapshot
        .segments
        .range((tli, 0)..=(tli, u64::MAX))
        .map(|((_, segno), _)| *segno);
    let Some(first) = on_timeline.next() else {
        return 0;
    };
    let (count, last) = on_timeline.fold((1u64, first), |(n, _), segno| (n + 1, segno));
    (last - first + 1) - count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::synthetic::{catalog, segment_time};
    use tidemark_pg::HistoryEntry;

    const SEG: u64 = 16 * 1024 * 1024;

    fn utc(t: tidemark_pg::PgTimestamp) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(t.unix_micros()).unwrap()
    }

    #[test]
    fn the_newest_commit_is_the_last_one_replay_reaches_and_the_durable_lsn_ends_its_segment() {
        // Segments 1..=20, backups at segments 1 and 10 (spacing 9).
        let snap = catalog(20, 2);
        let r = recoverable(&snap, None);
        assert_eq!(r.timeline, 1);
        assert_eq!(r.newest_commit, Some(utc(segment_time(20, 59))));
        assert_eq!(r.newest_recoverable, r.newest_commit);
        assert_eq!(r.durable_lsn, Some(Lsn(21 * SEG)));
        // The newest backup's stretch (its consistent point at segment 11's minute): the
        // older backup's stretch is the same WAL, and windows keep the first one.
        assert_eq!(r.restorable_since, Some(utc(segment_time(2, 0))));
        assert_eq!(
            r.timelines,
            vec![TimelineRecoverable {
                timeline: 1,
                earliest: Some(utc(segment_time(2, 0))),
                latest: Some(utc(segment_time(20, 59))),
                gap_segments: 0,
            }]
        );
    }

    #[test]
    fn a_gap_stops_the_newest_commit_and_the_durable_lsn_and_is_counted() {
        let mut snap = catalog(20, 2);
        snap.segments.remove(&(1, 15));
        snap.segments.remove(&(1, 16));
        let r = recoverable(&snap, Some(1));
        assert_eq!(r.newest_commit, Some(utc(segment_time(14, 59))));
        assert_eq!(r.durable_lsn, Some(Lsn(15 * SEG)));
        assert_eq!(r.timelines[0].gap_segments, 2);
        // WAL archived after the gap does not count, whatever its commits.
        assert_eq!(r.timelines[0].latest, Some(utc(segment_time(14, 59))));
    }

    #[test]
    fn no_commit_after_the_backup_leaves_its_consistent_point_as_the_newest_moment() {
        let mut snap = catalog(20, 1);
        // Only segments 1..=3 remain, without any commit: the backup (start in 1,
        // consistent in 2 at segment 2's minute) is the newest moment.
        snap.segments.retain(|(_, segno), _| *segno <= 3);
        for facts in snap.segments.values_mut() {
            if let plan::SegmentContent::Summary(s) = &mut facts.content {
                s.xacts = None;
            }
        }
        let r = recoverable(&snap, None);
        assert_eq!(r.newest_commit, None);
        assert_eq!(r.newest_recoverable, Some(utc(segment_time(2, 0))));
        assert_eq!(r.durable_lsn, Some(Lsn(4 * SEG)));
    }

    #[test]
    fn without_a_backup_nothing_is_recoverable_but_the_durable_lsn_is_known() {
        let mut snap = catalog(10, 1);
        snap.backups.clear();
        snap.segments.remove(&(1, 7));
        let r = recoverable(&snap, None);
        assert_eq!((r.newest_commit, r.newest_recoverable), (None, None));
        // From the oldest archived segment (1) to the gap at 7.
        assert_eq!(r.durable_lsn, Some(Lsn(7 * SEG)));
        assert_eq!(r.timelines[0].earliest, None);
        assert_eq!(r.timelines[0].gap_segments, 1);
    }

    #[test]
    fn a_new_timeline_with_nothing_archived_yet_is_measured_on_its_parent() {
        let mut snap = catalog(20, 2);
        // Timeline 2 forks off 1 in segment 21, which is not archived yet.
        snap.histories.insert(
            2,
            vec![HistoryEntry {
                parent: tidemark_pg::TimelineId(1),
                switchpoint: Lsn(21 * SEG + 0x100),
                reason: "promoted".into(),
            }],
        );
        let r = recoverable(&snap, None);
        assert_eq!(r.timeline, 2);
        assert_eq!(r.newest_commit, Some(utc(segment_time(20, 59))));
        assert_eq!(r.durable_lsn, Some(Lsn(21 * SEG)));
        // A server on timeline 3, which the archive does not know yet: measured on 2.
        assert_eq!(recoverable(&snap, Some(3)), r);
        let empty = catalog(3, 1);
        let nothing = recoverable(
            &CatalogSnapshot {
                segments: Default::default(),
                backups: Vec::new(),
                ..empty
            },
            None,
        );
        assert_eq!(
            (nothing.durable_lsn, nothing.newest_recoverable),
            (None, None)
        );
    }
}
