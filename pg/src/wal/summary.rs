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
//! ([`SegmentSummary::absorb`]). A caller that needs every commit and abort of a
//! segment (the planner's "decode these segments") uses [`summarize_segment_with`], which
//! hands over every record and completes the crossing one from the following segments.
//!
//! # Damage and the end of WAL
//!
//! Invalid WAL after the first page header never fails the summary and is never skipped:
//! the summary covers the records before it and [`SegmentSummary::damage`] names it
//! (PostgreSQL's replay stops there). The end of the written WAL inside the segment is a
//! fact, [`SegmentSummary::ended_at`], whose meaning depends on the file, which only the
//! caller knows: normal in a `.partial` file, damage in a segment archived as complete
//! (see [`crate::wal`]). [`SegmentSummary::defect`] gives the verdict for either, so the
//! planner asks one question: "is this segment usable to its end?".

use super::record::{self, RecordHeader, RECORD_HEADER_LEN};
use super::XLOG_BLCKSZ;
use super::{DecodeError, DecodeErrorKind, DecoderConfig, Payload, WalDecoder, WalRecord};
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
    /// The timeline in the last page header read (`xlp_tli`): the newest in the
    /// segment (the first segment of a new timeline begins with pages copied from its
    /// parent, which keep the parent's), and that of a record crossing into the next
    /// segment.
    pub timeline: u32,
    /// The PostgreSQL major of its page magic.
    pub major: PgMajor,
    /// The start of the first record that starts in this segment.
    pub first_record: Option<Lsn>,
    /// The start of the last record that starts and completes in this segment.
    pub last_record: Option<Lsn>,
    /// The end of that record (where the next record starts, before alignment); the
    /// segment's start when no record completes in it.
    pub end_of_records: Lsn,
    /// Records that start and complete in this segment.
    pub records: u64,
    /// The segment ends with `XLOG_SWITCH` (the rest is padding).
    pub switched: bool,
    /// The written WAL ended inside the segment (a `.partial` file, or the server's
    /// last segment read from `pg_wal`): where. `None` for a complete segment and after
    /// `XLOG_SWITCH`. For a segment archived as complete this is damage
    /// ([`defect`](Self::defect)). For bytes shorter than a segment, where the known WAL
    /// stops.
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

impl CrossingStart {
    /// Whether joining this record can change what the planner concludes: true for a
    /// commit, abort, restore point, checkpoint, end of recovery or WAL switch, and
    /// when the header is split (its kind unknown); false for every other record (a
    /// heap change, a full-page image), which a caller need not read two segments for.
    pub fn may_matter_to_recovery(&self) -> bool {
        match (self.rmid, self.info) {
            (Some(rmid), Some(info)) => super::payload::matters_to_recovery(rmid, info),
            _ => true,
        }
    }
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

/// The size of the long page header that opens every segment (`SizeOfXLogLongPHD`).
const LONG_PAGE_HEADER: usize = 40;

// join_crossing relies on both halves of a joinable record lying on one page each: the
// start on the last page of its segment, the end on the first page of the next.
const _: () = assert!(CROSSING_BYTES_MAX <= XLOG_BLCKSZ as usize - LONG_PAGE_HEADER);

/// Decodes one whole segment (or a `.partial` file) starting at `segment_start`.
///
/// `bytes` is the segment from its first byte: all `segment_size` of them for an
/// archived segment or a `.partial` file (both are full-size files), fewer for a copy cut
/// short. `major`, when given, is required of the page magic (else read from it).
///
/// - Invalid WAL after the first page header is not an `Err`: the summary covers the
///   records before it and [`SegmentSummary::damage`] says where and why.
/// - The end of the written WAL inside the segment is reported in
///   [`SegmentSummary::ended_at`] and nowhere else: normal for a `.partial` file, damage
///   for a segment archived as complete. Only the caller knows which it holds;
///   [`SegmentSummary::defect`] makes the judgement with that knowledge.
/// - `bytes` shorter than a segment without an end found in them: `ended_at` is where
///   the written WAL stops being known (the start of the record cut, or the last byte),
///   and no record is said to cross into the next segment.
///
/// `Err` only when nothing can be decoded: bad arguments, or a first page whose header
/// is invalid, all zeros, or another segment's (a recycled file).
pub fn summarize_segment(
    bytes: &[u8],
    segment_size: u64,
    segment_start: Lsn,
    major: Option<PgMajor>,
) -> Result<SegmentSummary, DecodeError> {
    summarize_segment_with(bytes, segment_size, segment_start, major, &[], |_| {})
}

/// [`summarize_segment`], and every record decoded in full passed to `on_record`, in LSN
/// order: for a caller that needs more than the summary (every commit and abort, when
/// the planner asks for a segment to be decoded in full). The records' typed payloads
/// are complete; their [`WalRecord::main_data`] is left empty (nothing here needs it,
/// and not copying it is a good part of the speed).
///
/// `following` are the next segments' bytes, in order (may be empty): the record that
/// crosses out of this segment is completed from them and passed to `on_record` last. The
/// returned summary is the same as [`summarize_segment`]'s (that record is not counted
/// in it; [`SegmentSummary::absorb`] counts it), except that a crossing record found
/// invalid when completed (its CRC, its continuation) is reported in
/// [`SegmentSummary::damage`]: PostgreSQL's replay stops there too.
pub fn summarize_segment_with(
    bytes: &[u8],
    segment_size: u64,
    segment_start: Lsn,
    major: Option<PgMajor>,
    following: &[&[u8]],
    mut on_record: impl FnMut(&WalRecord),
) -> Result<SegmentSummary, DecodeError> {
    let bad = |why: String| DecodeError {
        lsn: segment_start,
        kind: DecodeErrorKind::BadStart(why),
    };
    let mut config = DecoderConfig::new(segment_size, segment_start)
        .keeping_continuation(CROSSING_BYTES_MAX as u32)
        .without_main_data();
    if let Some(m) = major {
        config = config.with_major(m);
    }
    // Checks the segment size first (a zero would divide by zero below).
    let mut decoder = WalDecoder::new(config)?;
    if segment_start.0 % segment_size != 0 {
        return Err(bad(format!(
            "not the start of a {segment_size}-byte segment"
        )));
    }
    if bytes.len() as u64 > segment_size {
        return Err(bad(format!(
            "{} bytes, more than a {segment_size}-byte segment",
            bytes.len()
        )));
    }
    if bytes.len() < LONG_PAGE_HEADER {
        return Err(bad(format!(
            "{} bytes, not even the first page header",
            bytes.len()
        )));
    }
    // The first page header alone: it says whether anything here can be read.
    decoder.feed_with(&bytes[..LONG_PAGE_HEADER], |_| {})?;
    if let Some(end) = decoder.end() {
        return Err(bad(match end.reason {
            super::EndReason::RecycledPage { found } => {
                format!("the first page header is for {found}: a recycled file, not this segment")
            }
            _ => "the first page header is all zeros: no WAL was written here".to_string(),
        }));
    }
    let (Some(timeline), Some(major)) = (decoder.page_timeline(), decoder.major()) else {
        unreachable!("a page header was read");
    };
    let mut summary = SegmentSummary::new(segment_start, timeline, major);
    let fed = decoder.feed_with(&bytes[LONG_PAGE_HEADER..], |record| {
        summary.count_own(&record);
        on_record(&record);
    });
    if let Err(e) = fed {
        summary.damage = Some(e);
    }
    summary.timeline = decoder.page_timeline().unwrap_or(timeline);
    if let Some((_, remaining)) = decoder.skipped_continuation() {
        summary.crossing_end = Some(CrossingEnd {
            remaining,
            bytes: decoder.skipped_continuation_bytes().map(<[u8]>::to_vec),
        });
    }
    if summary.damage.is_some() {
        return Ok(summary);
    }
    if let Some(end) = decoder.end() {
        summary.ended_at = Some(end.at);
    } else if (bytes.len() as u64) < segment_size {
        if !summary.switched {
            summary.ended_at = Some(decoder.pending_record().unwrap_or(decoder.position()));
        }
    } else if let Some(pending) = decoder.pending_record_bytes() {
        let lsn = pending.start;
        let so_far = pending.kept;
        let header = (so_far.len() >= RECORD_HEADER_LEN).then(|| RecordHeader::parse(so_far));
        summary.crossing_start = Some(CrossingStart {
            lsn,
            total_len: header.map(|h| h.tot_len),
            rmid: header.map(|h| h.rmid),
            info: header.map(|h| h.info),
            xid: header.map(|h| h.xid),
            bytes: pending
                .bytes()
                .filter(|b| b.len() <= CROSSING_BYTES_MAX)
                .map(<[u8]>::to_vec),
        });
        if !following.is_empty() {
            match complete_crossing(&mut decoder, lsn, following) {
                Ok(Some(record)) => on_record(&record),
                Ok(None) => {}
                Err(e) => summary.damage = Some(e),
            }
        }
    }
    Ok(summary)
}

/// Feeds the following segments until the record begun at `lsn` completes. `Ok(None)`
/// when they end first (the WAL ends, or they are not enough); an error of that record
/// (not of a later one, nor of a page header that belongs to the next segment's own
/// summary) is returned.
fn complete_crossing(
    decoder: &mut WalDecoder,
    lsn: Lsn,
    following: &[&[u8]],
) -> Result<Option<WalRecord>, DecodeError> {
    let mut completed = Vec::new();
    for segment in following {
        // A page at a time: the record completes on some page; what follows it on that
        // page is decoded too and dropped.
        for page in segment.chunks(XLOG_BLCKSZ as usize) {
            if let Err(e) = decoder.feed_into(page, &mut completed) {
                return if e.lsn == lsn { Err(e) } else { Ok(None) };
            }
            if let Some(i) = completed.iter().position(|r| r.lsn == lsn) {
                return Ok(Some(completed.swap_remove(i)));
            }
            if decoder.end().is_some() || decoder.pending_record() != Some(lsn) {
                return Ok(None);
            }
        }
    }
    Ok(None)
}

/// Joins the two halves of a crossing record and decodes it (CRC checked).
///
/// `start` is segment N's [`SegmentSummary::crossing_start`], `end` segment N+1's
/// [`SegmentSummary::crossing_end`]. Both must hold their bytes (records of at most
/// about [`CROSSING_BYTES_MAX`] bytes on each side); otherwise, or when the halves do
/// not make the record (lengths, CRC, payload), the error names the record's LSN
/// ([`DecodeErrorKind::Crossing`] for what is missing or does not fit). `xl_prev` is
/// checked only when the header was complete in segment N (by the decoder there); a
/// caller may compare [`RecordHeader::prev`] with N's [`SegmentSummary::last_record`].
///
/// The record's [`timeline`](WalRecord::timeline) is 0 (`start` does not carry it):
/// [`SegmentSummary::join_next`] sets it from segment N's summary.
pub fn join_crossing(
    start: &CrossingStart,
    end: &CrossingEnd,
    major: PgMajor,
) -> Result<WalRecord, DecodeError> {
    let fail = |why: String| DecodeError {
        lsn: start.lsn,
        kind: DecodeErrorKind::Crossing(why),
    };
    let head = start.bytes.as_deref().ok_or_else(|| {
        fail("its start was not kept (more bytes than a summary keeps)".to_string())
    })?;
    let tail = end
        .bytes
        .as_deref()
        .ok_or_else(|| fail(format!("its end ({} bytes) was not kept", end.remaining)))?;
    if tail.len() != end.remaining as usize {
        return Err(fail(format!(
            "the end holds {} bytes where {} remain",
            tail.len(),
            end.remaining
        )));
    }
    if head.len() > CROSSING_BYTES_MAX || tail.len() > CROSSING_BYTES_MAX {
        return Err(fail("a half is longer than a summary keeps".to_string()));
    }
    // The start runs to the end of its page, the last of its segment.
    let next_segment = (start.lsn.0 / XLOG_BLCKSZ + 1) * XLOG_BLCKSZ;
    if start.lsn.0 + head.len() as u64 != next_segment {
        return Err(fail(format!(
            "its start holds {} bytes, which do not reach the segment's end {}",
            head.len(),
            Lsn(next_segment)
        )));
    }
    let total = head.len() + tail.len();
    if total < RECORD_HEADER_LEN {
        return Err(fail(format!(
            "{total} bytes in all, less than a record header"
        )));
    }
    let mut bytes = Vec::with_capacity(total);
    bytes.extend_from_slice(head);
    bytes.extend_from_slice(tail);
    let header = RecordHeader::parse(&bytes);
    if header.tot_len as usize != total {
        return Err(fail(format!(
            "xl_tot_len is {}, the halves hold {} + {} bytes",
            header.tot_len,
            head.len(),
            tail.len()
        )));
    }
    let known = (start.total_len, start.rmid, start.info, start.xid);
    if known != (None, None, None, None)
        && known
            != (
                Some(header.tot_len),
                Some(header.rmid),
                Some(header.info),
                Some(header.xid),
            )
    {
        return Err(fail(
            "the header differs from the one the start's summary recorded".to_string(),
        ));
    }
    let mut joined = record::decode(start.lsn, 0, &bytes, major).map_err(|kind| DecodeError {
        lsn: start.lsn,
        kind,
    })?;
    joined.end = Lsn(next_segment + LONG_PAGE_HEADER as u64 + tail.len() as u64);
    Ok(joined)
}

impl SegmentSummary {
    /// A summary of nothing yet: the segment at `segment_start`, of `timeline` and `major`.
    pub fn new(segment_start: Lsn, timeline: u32, major: PgMajor) -> SegmentSummary {
        SegmentSummary {
            segment_start,
            timeline,
            major,
            first_record: None,
            last_record: None,
            end_of_records: segment_start,
            records: 0,
            switched: false,
            ended_at: None,
            xacts: None,
            restore_points: Vec::new(),
            restore_points_omitted: 0,
            timeline_switches: Vec::new(),
            crossing_end: None,
            crossing_start: None,
            damage: None,
        }
    }

    /// Joins this segment's [`crossing_start`](Self::crossing_start) with `next`'s
    /// [`crossing_end`](Self::crossing_end) ([`join_crossing`]), the record's timeline
    /// set from this summary; `None` when either half is missing (no record crosses, or
    /// `next` does not begin with its continuation).
    pub fn join_next(&self, next: &SegmentSummary) -> Option<Result<WalRecord, DecodeError>> {
        let (start, end) = (self.crossing_start.as_ref()?, next.crossing_end.as_ref()?);
        Some(join_crossing(start, end, self.major).map(|mut record| {
            record.timeline = self.timeline;
            record
        }))
    }

    /// Counts a record decoded elsewhere (a joined crossing record) as this segment's:
    /// in the transaction statistics, restore points and timeline switches, not in
    /// [`records`](Self::records) (which counts the records that complete here). A
    /// record absorbed twice is counted twice.
    pub fn absorb(&mut self, record: &WalRecord) {
        let lsn = record.lsn;
        match &record.payload {
            Payload::Commit(x) => self.count_xact(lsn, x.xid, x.time, true),
            Payload::Abort(x) => self.count_xact(lsn, x.xid, x.time, false),
            Payload::RestorePoint(rp) => {
                // In LSN order, the first RESTORE_POINTS_MAX kept.
                let at = self.restore_points.partition_point(|r| r.lsn < lsn);
                if at >= RESTORE_POINTS_MAX {
                    self.restore_points_omitted += 1;
                } else {
                    self.restore_points.insert(
                        at,
                        RestorePointAt {
                            lsn,
                            time: rp.time,
                            name: rp.name.clone(),
                        },
                    );
                    if self.restore_points.len() > RESTORE_POINTS_MAX {
                        self.restore_points.pop();
                        self.restore_points_omitted += 1;
                    }
                }
            }
            other => {
                if let Some(switch) = other.timeline_switch() {
                    let at = self.timeline_switches.partition_point(|t| t.lsn < lsn);
                    self.timeline_switches.insert(
                        at,
                        TimelineSwitchAt {
                            lsn,
                            from: switch.from,
                            to: switch.to,
                        },
                    );
                }
            }
        }
    }

    /// What makes this segment unusable past some LSN, if anything: its
    /// [`damage`](Self::damage), or, for a segment archived as complete (`partial`
    /// false), the written WAL ending inside it ([`DecodeErrorKind::EndsInsideSegment`]
    /// at [`ended_at`](Self::ended_at)): a complete segment is archived only once the
    /// server has written past it, so its WAL cannot end early except after
    /// `XLOG_SWITCH`. For a `.partial` file (`partial` true) the end is normal.
    pub fn defect(&self, partial: bool) -> Option<DecodeError> {
        if let Some(d) = &self.damage {
            return Some(d.clone());
        }
        match self.ended_at {
            Some(at) if !partial => Some(DecodeError {
                lsn: at,
                kind: DecodeErrorKind::EndsInsideSegment,
            }),
            _ => None,
        }
    }

    /// Counts a record that starts and completes in this segment.
    fn count_own(&mut self, record: &WalRecord) {
        self.records += 1;
        self.first_record.get_or_insert(record.lsn);
        self.last_record = Some(record.lsn);
        self.end_of_records = record.end;
        if matches!(record.payload, Payload::Switch) {
            self.switched = true;
        }
        self.absorb(record);
    }

    fn count_xact(&mut self, lsn: Lsn, xid: u32, time: PgTimestamp, commit: bool) {
        let s = self.xacts.get_or_insert(XactStats {
            commits: 0,
            aborts: 0,
            first_lsn: lsn,
            last_lsn: lsn,
            first_time: time,
            last_time: time,
            min_time: time,
            max_time: time,
            min_xid: xid,
            max_xid: xid,
        });
        if commit {
            s.commits += 1;
        } else {
            s.aborts += 1;
        }
        if lsn < s.first_lsn {
            (s.first_lsn, s.first_time) = (lsn, time);
        }
        if lsn > s.last_lsn {
            (s.last_lsn, s.last_time) = (lsn, time);
        }
        s.min_time = s.min_time.min(time);
        s.max_time = s.max_time.max(time);
        s.min_xid = s.min_xid.min(xid);
        s.max_xid = s.max_xid.max(xid);
    }
}
