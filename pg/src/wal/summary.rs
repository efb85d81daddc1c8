//! What one WAL segment holds that the recovery planner needs: its content summary.
//!
//! archive-push decodes every segment it stores and keeps a [`SegmentSummary`] beside
//! the index entry; the planner proves targets from these summaries without reading
//! the segments again. A summary is bounded in size whatever the workload: a segment of
//! a hundred thousand tiny transactions gives a few counters and ranges
//! ([`XactStats`]), not a list.
//!
//! # Records that cross segments
//!
//! A record that starts in segment N and ends in N+1 can be decoded from neither alone.
//! N's summary keeps the start of that record ([`CrossingStart`]), N+1's the rest
//! ([`CrossingEnd`]), each as raw record bytes when they are short (at most
//! [`CROSSING_BYTES_MAX`]); [`join_crossing`] puts them together and decodes the record
//! with its CRC checked. Commits, aborts and restore points are short, so the planner
//! can nearly always join them from two summaries; when it cannot (a long record, or a
//! summary missing), the caller reads the two segments.
//!
//! The statistics of a summary cover the records that **start** in the segment and
//! complete in it: the crossing record is counted only once joined
//! ([`SegmentSummary::absorb`]).

use super::{DecodeError, WalRecord};
use crate::types::{Lsn, PgMajor, PgTimestamp};

/// The most bytes of a crossing record a summary keeps, at either side.
pub const CROSSING_BYTES_MAX: usize = 2048;

/// The most restore points a summary lists; the rest are counted
/// ([`SegmentSummary::restore_points_omitted`]).
pub const RESTORE_POINTS_MAX: usize = 16;

/// What a segment holds, for the planner (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSummary {
    /// The LSN of the segment's first byte.
    pub segment_start: Lsn,
    /// The timeline in the page headers (`xlp_tli`).
    pub timeline: u32,
    /// The PostgreSQL major of its page magic.
    pub major: PgMajor,
    /// The start of the first record that starts in this segment.
    pub first_record: Option<Lsn>,
    /// The start of the last record that starts and completes in this segment.
    pub last_record: Option<Lsn>,
    /// The end of that record (where the next record starts, before alignment).
    pub end_of_records: Lsn,
    /// Records that start and complete in this segment.
    pub records: u64,
    /// The segment ends with `XLOG_SWITCH` (the rest is padding).
    pub switched: bool,
    /// The written WAL ended inside the segment (a `.partial` file, or the server's
    /// last segment read from `pg_wal`): where. `None` for a complete segment.
    pub ended_at: Option<Lsn>,
    /// Commits and aborts (plain and prepared) that start in this segment.
    pub xacts: Option<XactStats>,
    /// Restore points, in LSN order, at most [`RESTORE_POINTS_MAX`].
    pub restore_points: Vec<RestorePointAt>,
    /// Restore points beyond the first [`RESTORE_POINTS_MAX`], not listed.
    pub restore_points_omitted: u32,
    /// Checkpoints and end-of-recovery records that change the timeline.
    pub timeline_switches: Vec<TimelineSwitchAt>,
    /// The end of a record begun in an earlier segment (the segment's first bytes).
    pub crossing_end: Option<CrossingEnd>,
    /// The start of a record that continues into the next segment.
    pub crossing_start: Option<CrossingStart>,
    /// The decoder stopped at invalid WAL: where and why. The summary covers the records
    /// before it. PostgreSQL's replay would stop there too.
    pub damage: Option<DecodeError>,
}

/// Counters and ranges over a segment's transaction completions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XactStats {
    /// Commit records (plain and prepared).
    pub commits: u64,
    /// Abort records (plain and prepared).
    pub aborts: u64,
    /// The first completion's start LSN.
    pub first_lsn: Lsn,
    /// The last completion's start LSN.
    pub last_lsn: Lsn,
    /// The first completion's time (in LSN order).
    pub first_time: PgTimestamp,
    /// The last completion's time (in LSN order).
    pub last_time: PgTimestamp,
    /// The earliest completion time (times are taken before the record is inserted, so
    /// they are not quite in LSN order).
    pub min_time: PgTimestamp,
    /// The latest completion time.
    pub max_time: PgTimestamp,
    /// The smallest xid a recovery target can name here (the record's xid, or the
    /// prepared transaction's), compared as 32-bit numbers.
    pub min_xid: u32,
    /// The largest such xid.
    pub max_xid: u32,
}

/// A restore point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePointAt {
    /// The record's start.
    pub lsn: Lsn,
    /// When it was created.
    pub time: PgTimestamp,
    /// Its name.
    pub name: String,
}

/// A record that changes the timeline (a shutdown checkpoint or end-of-recovery record
/// whose previous timeline differs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineSwitchAt {
    /// The record's start.
    pub lsn: Lsn,
    /// The timeline left.
    pub from: u32,
    /// The timeline entered.
    pub to: u32,
}

/// The start of a record that continues into the next segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrossingStart {
    /// The record's start.
    pub lsn: Lsn,
    /// `xl_tot_len`, when the header is complete in this segment.
    pub total_len: Option<u32>,
    /// `xl_rmid`, when the header is complete in this segment.
    pub rmid: Option<u8>,
    /// `xl_info`, when the header is complete in this segment.
    pub info: Option<u8>,
    /// `xl_xid`, when the header is complete in this segment.
    pub xid: Option<u32>,
    /// The record's bytes in this segment (page headers removed), when at most
    /// [`CROSSING_BYTES_MAX`].
    pub bytes: Option<Vec<u8>>,
}

/// The end of a record that began in an earlier segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrossingEnd {
    /// The record's bytes still to come at the segment's start (`xlp_rem_len`).
    pub remaining: u32,
    /// Those bytes (page headers removed), when at most [`CROSSING_BYTES_MAX`] and
    /// all in this segment.
    pub bytes: Option<Vec<u8>>,
}

/// Decodes one whole segment (or a `.partial` file) starting at `segment_start`.
pub fn summarize_segment(
    bytes: &[u8],
    segment_size: u64,
    segment_start: Lsn,
    major: Option<PgMajor>,
) -> Result<SegmentSummary, DecodeError> {
    let _ = (bytes, segment_size, segment_start, major);
    todo!("issue 14 item 2")
}

/// Joins the two halves of a crossing record and decodes it (CRC checked).
pub fn join_crossing(
    start: &CrossingStart,
    end: &CrossingEnd,
    major: PgMajor,
) -> Result<WalRecord, DecodeError> {
    let _ = (start, end, major);
    todo!("issue 14 item 2")
}

impl SegmentSummary {
    /// Counts a record decoded elsewhere (a joined crossing record) as this segment's.
    pub fn absorb(&mut self, record: &WalRecord) {
        let _ = record;
        todo!("issue 14 item 2")
    }
}
