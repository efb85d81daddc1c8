//! WAL continuity on one timeline line, found from the archived segments given one at a
//! time (pure): what `expire` checks while it walks the WAL index a page at a time, and
//! so cannot hand a whole catalog snapshot to `verify`'s walk
//! ([`crate::verify::check::check_wal`], which this agrees with: see the tests).
//!
//! A line is a target timeline and its ancestry ([`TimelinePath`], read from the history
//! files): segment `n` is expected in the file of the timeline replay reads there
//! (`XLogFileReadAnyTLI`), so a segment of the old timeline after a switch point is not
//! expected, and the file of the new timeline holding the switch point is. A **gap** is a
//! stretch of expected segments missing between `from` and the newest archived segment
//! of the line; what lies after the newest one is the end of the archive, not a gap.
//!
//! Segments must be given in the WAL index's key order, i.e. (timeline, segment number)
//! ascending: a child timeline's number is always greater than its parent's, so the
//! line's expected files come in ascending segment order.

use tidemark_pg::{SegmentSize, TimelineId, WalSegmentName};

use crate::plan::timelines::TimelinePath;
use crate::plan::CatalogSnapshot;

/// A stretch of missing segments on a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The timeline whose file the first missing segment is expected in.
    pub timeline: u32,
    /// The first missing segment (number).
    pub first_segno: u64,
    /// The last missing segment (number).
    pub last_segno: u64,
    /// The first missing file's name.
    pub first: String,
    /// The last missing file's name (possibly of a later timeline of the line).
    pub last: String,
}

impl Gap {
    /// How many segments are missing.
    pub fn segments(&self) -> u64 {
        self.last_segno - self.first_segno + 1
    }
}

/// The gaps of one line from a segment on, fed the archived segments in order (see the
/// module doc).
#[derive(Clone, Debug)]
pub struct LineGaps {
    path: TimelinePath,
    size: Option<SegmentSize>,
    /// The next segment expected.
    next: u64,
    gaps: Vec<Gap>,
}

impl LineGaps {
    /// The line that leads to timeline `target` (its history file in `snapshot` gives its
    /// ancestry), checked from segment `from` on.
    pub fn new(snapshot: &CatalogSnapshot, target: u32, from: u64) -> LineGaps {
        LineGaps {
            path: TimelinePath::of(snapshot, target),
            size: SegmentSize::new(snapshot.segment_size).ok(),
            next: from,
            gaps: Vec::new(),
        }
    }

    /// The line that leads to timeline `target`, checked from the start of backup
    /// `backup_id` on; `None` when the backup is not in the snapshot or cannot start
    /// replay towards `target` (it is not on that line).
    pub fn from_backup(
        snapshot: &CatalogSnapshot,
        target: u32,
        backup_id: &str,
    ) -> Option<LineGaps> {
        let backup = snapshot.backups.iter().find(|b| b.id == backup_id)?;
        let path = TimelinePath::of(snapshot, target);
        path.admits(backup).ok()?;
        let from = backup.start_lsn.0 / snapshot.segment_size.max(1);
        Some(LineGaps::new(snapshot, target, from))
    }

    /// The target timeline.
    pub fn target(&self) -> u32 {
        self.path.target
    }

    /// Segment `segno` of timeline `tli` is archived. Segments of timelines off the line,
    /// or of a line's timeline where replay reads another's file, are not looked at.
    pub fn archived(&mut self, tli: u32, segno: u64) {
        if self.path.step(tli).is_none() || self.path.file_timeline(segno) != tli {
            return;
        }
        if segno < self.next {
            return;
        }
        if segno > self.next {
            let (first, last) = (self.next, segno - 1);
            let first_tli = self.path.file_timeline(first);
            self.gaps.push(Gap {
                timeline: first_tli,
                first_segno: first,
                last_segno: last,
                first: self.name(first_tli, first),
                last: self.name(self.path.file_timeline(last), last),
            });
        }
        self.next = segno + 1;
    }

    /// The gaps found so far, oldest first.
    pub fn gaps(&self) -> &[Gap] {
        &self.gaps
    }

    fn name(&self, tli: u32, segno: u64) -> String {
        match self.size {
            Some(size) => {
                WalSegmentName::from_segment_number(TimelineId(tli), segno, size).to_string()
            }
            None => format!("segment {segno} of timeline {tli}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::check::tests::snapshot;
    use crate::verify::check::{check_wal, WalScope};

    /// The gaps of `target`'s line from segment 2, fed in key order.
    fn line_gaps(snap: &CatalogSnapshot, target: u32) -> Vec<(u32, String, String)> {
        let mut line = LineGaps::new(snap, target, 2);
        for &(tli, segno) in snap.segments.keys() {
            line.archived(tli, segno);
        }
        line.gaps()
            .iter()
            .map(|g| (g.timeline, g.first.clone(), g.last.clone()))
            .collect()
    }

    /// The first missing segment of each `wal-gap` verify reports.
    fn verify_gaps(snap: &CatalogSnapshot) -> Vec<String> {
        check_wal(snap, &WalScope::All { since: None })
            .problems
            .into_iter()
            .filter(|f| f.kind == "wal-gap")
            .map(|f| f.subject)
            .collect()
    }

    #[test]
    fn a_continuous_line_across_a_switch_has_no_gap_and_the_old_timelines_rest_is_not_expected() {
        // Timeline 2 forks from 1 in segment 5: 1's segments 6 and 7 (its abandoned
        // rest) are not on 2's line, and 2's file of segment 5 is.
        let snap = snapshot(
            &[
                (1, 2),
                (1, 3),
                (1, 4),
                (1, 5),
                (1, 6),
                (1, 7),
                (2, 5),
                (2, 6),
            ],
            &[(2, 1, 5)],
        );
        assert_eq!(line_gaps(&snap, 2), vec![]);
        assert_eq!(line_gaps(&snap, 1), vec![]);
        assert_eq!(verify_gaps(&snap), Vec::<String>::new());
    }

    #[test]
    fn gaps_are_named_by_timeline_first_and_last_and_agree_with_verify() {
        // 4 missing on timeline 1; 7-8 missing on timeline 3's line (3 forks from 1 at 6).
        let snap = snapshot(
            &[(1, 2), (1, 3), (1, 5), (1, 6), (3, 6), (3, 9), (3, 10)],
            &[(3, 1, 6)],
        );
        let found = line_gaps(&snap, 3);
        assert_eq!(
            found,
            vec![
                (
                    1,
                    "000000010000000000000004".into(),
                    "000000010000000000000004".into()
                ),
                (
                    3,
                    "000000030000000000000007".into(),
                    "000000030000000000000008".into()
                ),
            ]
        );
        // verify's walk over the whole snapshot names the same stretches.
        assert_eq!(
            verify_gaps(&snap),
            found.iter().map(|g| g.1.clone()).collect::<Vec<_>>()
        );
        // The switch segment missing on the new timeline is a gap, although the old
        // timeline's file of that number is there (replay would read the wrong WAL).
        let snap = snapshot(
            &[(1, 2), (1, 3), (1, 4), (1, 5), (2, 6), (2, 7)],
            &[(2, 1, 5)],
        );
        assert_eq!(
            line_gaps(&snap, 2),
            vec![(
                2,
                "000000020000000000000005".into(),
                "000000020000000000000005".into()
            )]
        );
        assert_eq!(verify_gaps(&snap), vec!["000000020000000000000005"]);
    }

    #[test]
    fn before_the_start_and_after_the_newest_segment_is_no_gap() {
        let snap = snapshot(&[(1, 1), (1, 3), (1, 4), (1, 5)], &[]);
        // b1 starts in segment 2: it is on timeline 1's line, not on timeline 2's.
        assert!(LineGaps::from_backup(&snap, 2, "b1").is_none());
        assert!(LineGaps::from_backup(&snap, 1, "nope").is_none());
        let mut line = LineGaps::from_backup(&snap, 1, "b1").unwrap();
        for &(tli, segno) in snap.segments.keys() {
            line.archived(tli, segno);
        }
        assert_eq!(
            line.gaps().len(),
            1,
            "segment 2 is missing after b1's start"
        );
        let mut line = LineGaps::new(&snap, 1, 3);
        for &(tli, segno) in snap.segments.keys() {
            line.archived(tli, segno);
        }
        assert_eq!(line.gaps(), &[]);
        let mut line = LineGaps::new(&snap, 1, 2);
        for &(tli, segno) in snap.segments.keys() {
            line.archived(tli, segno);
        }
        assert_eq!(line.gaps().len(), 1);
        assert_eq!(line.gaps()[0].segments(), 1);
        assert_eq!(line.target(), 1);
    }
}
