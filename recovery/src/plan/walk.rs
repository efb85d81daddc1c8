//! Walking the archived WAL the way replay reads it: segment after segment from a start
//! position, each from the timeline file [`TimelinePath::file_timeline`] names, until a
//! judge finds what it looks for, a segment is missing, damaged, or the written WAL ends.
//! Pure; the walk only reads the snapshot.
//!
//! A judge answers per segment: found, not here, or "cannot tell from the index" (a
//! segment archived before the content index, or a summary that cannot answer). The
//! walk collects those last ones up to the point where it stops, and the planner asks
//! for them in full ([`super::Outcome::NeedsSegments`]) before concluding anything, at
//! most [`UNDECIDED_BATCH`] at a time: the first of them may settle the question, and a
//! repository archived before the content index can hold thousands.

use tidemark_pg::wal::{DecodeError, SegmentSummary};
use tidemark_pg::{Lsn, SegmentSize, TimelineId, WalSegmentName};

use super::timelines::TimelinePath;
use super::{CatalogSnapshot, DecodedSegment, SegmentContent, SegmentFacts};

/// The most undecided segments one walk collects before it stops to ask for them.
pub(crate) const UNDECIDED_BATCH: usize = 16;

/// The snapshot with its segment arithmetic.
#[derive(Clone, Copy)]
pub(crate) struct Archive<'a> {
    /// The catalog.
    pub snapshot: &'a CatalogSnapshot,
    size: SegmentSize,
}

impl<'a> Archive<'a> {
    pub fn new(snapshot: &'a CatalogSnapshot) -> Self {
        // A snapshot is built from the stanza's catalog, whose segment size PostgreSQL
        // checked; an impossible one can only come from a hand-made snapshot.
        let size = SegmentSize::new(snapshot.segment_size).unwrap_or(SegmentSize::DEFAULT);
        Archive { snapshot, size }
    }

    /// The segment holding `lsn`.
    pub fn segment_of(&self, lsn: Lsn) -> u64 {
        lsn.0 / self.size.bytes()
    }

    /// Where segment `segno` starts.
    pub fn segment_start(&self, segno: u64) -> Lsn {
        Lsn(segno.saturating_mul(self.size.bytes()))
    }

    /// The file name of `segno` on `tli`.
    pub fn name(&self, tli: u32, segno: u64) -> String {
        WalSegmentName::from_segment_number(TimelineId(tli), segno, self.size).to_string()
    }

    /// The archived segment `segno` replay reads on `path`, if archived. A `.partial`
    /// file does not count: PostgreSQL never asks `restore_command` for one.
    pub fn on_path(&self, path: &TimelinePath, segno: u64) -> Option<Seg<'a>> {
        let tli = path.file_timeline(segno);
        self.snapshot
            .segments
            .get(&(tli, segno))
            .filter(|facts| !facts.name.ends_with(".partial"))
            .map(|facts| Seg { tli, segno, facts })
    }

    /// Whether the archive holds any segment of `path` after `segno` (a gap, as opposed
    /// to the end of the archive).
    pub fn has_segments_after(&self, path: &TimelinePath, segno: u64) -> bool {
        path.steps.iter().any(|step| {
            let Some((first, last)) = path.segment_span(step.tli) else {
                return false;
            };
            let from = first.max(segno.saturating_add(1));
            if last.is_some_and(|l| from > l) {
                return false;
            }
            self.snapshot
                .segments
                .range((step.tli, from)..=(step.tli, last.unwrap_or(u64::MAX)))
                .next()
                .is_some()
        })
    }
}

/// One archived segment on a path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Seg<'a> {
    /// The timeline of its file.
    pub tli: u32,
    /// Its number.
    pub segno: u64,
    /// What the catalog knows.
    pub facts: &'a SegmentFacts,
}

impl<'a> Seg<'a> {
    /// The summary, from the index or from a full decode.
    pub fn summary(&self) -> Option<&'a SegmentSummary> {
        match &self.facts.content {
            SegmentContent::NotIndexed => None,
            SegmentContent::Summary(s) => Some(s),
            SegmentContent::Decoded(d) => Some(&d.summary),
        }
    }

    /// The full decode, when the caller made one.
    pub fn decoded(&self) -> Option<&'a DecodedSegment> {
        match &self.facts.content {
            SegmentContent::Decoded(d) => Some(d),
            _ => None,
        }
    }

    /// `(timeline, segment)` as [`super::Outcome::NeedsSegments`] names it.
    pub fn key(&self) -> (u32, u64) {
        (self.tli, self.segno)
    }

    /// Where readable WAL ends in this segment if nothing follows it: the end of its last
    /// complete record; for a segment without summary, its end.
    pub fn end_of_wal(&self, archive: &Archive<'_>) -> Lsn {
        match self.summary() {
            Some(s) => s.end_of_records,
            None => archive.segment_start(self.segno + 1),
        }
    }

    /// The start of a record that continues into the next segment.
    pub fn crossing_start(&self) -> Option<Lsn> {
        self.summary()
            .and_then(|s| s.crossing_start.as_ref())
            .map(|c| c.lsn)
    }
}

/// What a judge says of one segment.
pub(crate) enum Verdict<T> {
    /// Here it is.
    Found(T),
    /// Not in this segment.
    NotHere,
    /// The index cannot tell: the segment must be read in full.
    Unknown,
}

/// Why a walk stopped.
#[derive(Debug)]
pub(crate) enum WalkEnd<T> {
    /// The judge found it in the last visited segment.
    Found(T),
    /// The last segment asked for was visited.
    Limit,
    /// Segment `segno` of timeline `tli` is not archived; `more_after`: the archive holds
    /// later segments of the path (a gap, not the end).
    Missing {
        /// Its timeline.
        tli: u32,
        /// Its number.
        segno: u64,
        /// Later segments exist.
        more_after: bool,
    },
    /// The last visited segment is damaged: replay stops there.
    Damaged(DecodeError),
    /// [`UNDECIDED_BATCH`] segments wait to be read in full.
    Undecided,
}

/// A finished walk.
pub(crate) struct Walk<'a, T> {
    /// The segments read, in order.
    pub visited: Vec<Seg<'a>>,
    /// Segments the judge could not decide, in order.
    pub unknown: Vec<(u32, u64)>,
    /// Why it stopped.
    pub end: WalkEnd<T>,
}

impl<'a, T> Walk<'a, T> {
    /// The latest commit or abort time among the visited segments, if any is known.
    pub fn latest_completion(&self) -> Option<tidemark_pg::PgTimestamp> {
        self.visited
            .iter()
            .filter_map(|s| s.summary().and_then(|s| s.xacts))
            .map(|x| x.max_time)
            .max()
    }
}

/// Walks `path` from the segment holding `from` up to segment `until` (included) or the
/// end, asking `judge` about each segment.
pub(crate) fn walk<'a, T>(
    archive: &Archive<'a>,
    path: &TimelinePath,
    from: Lsn,
    until: Option<u64>,
    mut judge: impl FnMut(&Seg<'a>) -> Verdict<T>,
) -> Walk<'a, T> {
    let mut visited = Vec::new();
    let mut unknown = Vec::new();
    let mut segno = archive.segment_of(from);
    let end = loop {
        let Some(seg) = archive.on_path(path, segno) else {
            break WalkEnd::Missing {
                tli: path.file_timeline(segno),
                segno,
                more_after: archive.has_segments_after(path, segno),
            };
        };
        visited.push(seg);
        match judge(&seg) {
            Verdict::Found(found) => break WalkEnd::Found(found),
            Verdict::Unknown => {
                unknown.push(seg.key());
                if unknown.len() == UNDECIDED_BATCH {
                    break WalkEnd::Undecided;
                }
            }
            Verdict::NotHere => {}
        }
        if let Some(summary) = seg.summary() {
            // Every segment on the path is a complete one (`.partial` files are not on
            // it): WAL that ends before its last byte is damage, as much as a bad record.
            if let Some(defect) = summary.defect(false) {
                break WalkEnd::Damaged(defect);
            }
        }
        if until == Some(segno) {
            break WalkEnd::Limit;
        }
        segno += 1;
    };
    Walk {
        visited,
        unknown,
        end,
    }
}
