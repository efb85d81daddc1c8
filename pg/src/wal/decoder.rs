//! [`WalDecoder`]: reassembles records from pages fed in pieces of any size. Sans-IO.
//!
//! The decoder walks the bytes as PostgreSQL laid them out: a header at every 8 KiB page
//! (long on a segment's first page), records at MAXALIGN (8) boundaries, a record's bytes
//! continuing after the next page's header when it does not fit. See the module
//! documentation of [`crate::wal`] for what ends decoding and what is an error.

use super::record::{self, RecordHeader, RECORD_HEADER_LEN};
use super::{payload, DecodeError, DecodeErrorKind, WalRecord, XLOG_BLCKSZ};
use crate::crc32c::Crc32c;
use crate::types::{Lsn, PgMajor};

const SHORT_PHD: usize = 24;
const LONG_PHD: usize = 40;
const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const XLP_LONG_HEADER: u16 = 0x0002;
/// 0x0008 in 13 to 18 (0x0004 is `XLP_BKP_REMOVABLE` there). PostgreSQL's development
/// branch (magic 0xD120) dropped `XLP_BKP_REMOVABLE` and moved this flag to 0x0004: a
/// new major needs this checked again.
const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
const XLP_ALL_FLAGS: u16 = 0x000F;
/// `MaxAllocSize`: no record can be longer (16 and later cap them lower still,
/// `XLogRecordMaxSize`, 1020 MiB).
const MAX_RECORD_LEN: u32 = 0x3FFF_FFFF;
/// How much of a streamed record is kept (see [`State::Record`]): the 24-byte header and
/// every block header fit, whatever the record (at most 33 block headers of 27 bytes
/// and the origin, top-level-xid and main-data headers: under 1 KiB).
const STREAMED_PREFIX: usize = 2048;

/// How a decoder starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// The WAL segment size in bytes (a power of two, 1 MiB to 1 GiB).
    pub segment_size: u64,
    /// The LSN of the first byte that will be fed: a page start (typically a segment
    /// start), or a record start known to the caller (then `major` is required).
    pub start: Lsn,
    /// The PostgreSQL major; `None`: taken from the first page header's magic.
    pub major: Option<PgMajor>,
    /// The start of the record before `start`, when known: checked against the first
    /// record's `xl_prev`.
    pub prev_record: Option<Lsn>,
    /// Keep every record's [`WalRecord::main_data`] (true by default); the typed
    /// [`payload`](WalRecord::payload) is decoded either way.
    pub main_data: bool,
    /// Keep the bytes of a continuation skipped at the start (a record begun before
    /// `start`) when its `xlp_rem_len` is at most this many: see
    /// [`WalDecoder::skipped_continuation_bytes`]. 0: not kept.
    pub keep_continuation: u32,
}

impl DecoderConfig {
    /// Starts at `start` in WAL of `segment_size`-byte segments, major from the WAL.
    pub fn new(segment_size: u64, start: Lsn) -> DecoderConfig {
        DecoderConfig {
            segment_size,
            start,
            major: None,
            prev_record: None,
            main_data: true,
            keep_continuation: 0,
        }
    }

    /// Expects (and requires) this major's WAL.
    pub fn with_major(mut self, major: PgMajor) -> DecoderConfig {
        self.major = Some(major);
        self
    }

    /// The start of the record before `start`, to check the first record's `xl_prev`.
    pub fn with_prev_record(mut self, prev: Lsn) -> DecoderConfig {
        self.prev_record = Some(prev);
        self
    }

    /// Leaves [`WalRecord::main_data`] empty: an allocation and a copy saved per record,
    /// for a caller that needs only the typed payloads (a segment's summary).
    pub fn without_main_data(mut self) -> DecoderConfig {
        self.main_data = false;
        self
    }

    /// Keeps a skipped continuation's bytes when it is at most `max` bytes long.
    pub fn keeping_continuation(mut self, max: u32) -> DecoderConfig {
        self.keep_continuation = max;
        self
    }
}

/// Why the decoder says the written WAL ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// A record header with `xl_tot_len` 0 at a record boundary.
    ZeroRecordHeader,
    /// An all-zero page header.
    ZeroPage,
    /// A page header with a valid magic but another page's address: a recycled segment.
    RecycledPage {
        /// `xlp_pageaddr` found.
        found: Lsn,
    },
}

/// The end of the written WAL (not an error; see [`crate::wal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalEnd {
    /// Where no further record was found: the record boundary, the page, or the start of
    /// a record begun on an earlier page whose continuation was never written.
    pub at: Lsn,
    /// The end of the last complete record (the decoder's start when there was none).
    pub last_record_end: Lsn,
    /// Why.
    pub reason: EndReason,
    /// The start of a record begun but never completed, if any.
    pub incomplete_record: Option<Lsn>,
}

impl WalEnd {
    /// Whether the end lies before the last byte of its segment: impossible in a
    /// complete archived segment, where it means damage (see [`crate::wal`]).
    pub fn within_segment(&self, segment_size: u64) -> bool {
        self.at.0 % segment_size != 0
    }
}

#[derive(Debug)]
enum State {
    /// The next content byte starts a record.
    Boundary,
    /// Alignment bytes before the next record.
    Padding { remaining: u64 },
    /// A record being reassembled: its first `got` bytes have been read. They are all in
    /// `buf`, unless the record is streamed (`crc` set): a record of a resource manager
    /// whose payload is not decoded, longer than [`STREAMED_PREFIX`], when the caller
    /// does not keep main data (a segment's summary). Then only the first
    /// [`STREAMED_PREFIX`] bytes are kept (its header and block headers) and the rest only
    /// runs through the checksum: full-page images, the bulk of most segments' bytes, are
    /// never copied.
    Record {
        start: u64,
        timeline: u32,
        buf: Vec<u8>,
        got: u64,
        tot_len: Option<u32>,
        checked_header: bool,
        crc: Option<Crc32c>,
    },
    /// The rest of a record that began before the decoder's start.
    SkipContinuation { remaining: u64 },
    /// After `XLOG_SWITCH`: the rest of the segment.
    SkipSegment,
    /// The written WAL ended; bytes up to `check_until` must be zero.
    Ended { check_until: u64 },
    /// Failed: the error repeats.
    Failed(DecodeError),
}

/// A record begun but not complete where the input stopped: see
/// [`WalDecoder::pending_record_bytes`].
#[derive(Clone, Copy, Debug)]
pub struct PendingRecord<'a> {
    /// Where it starts.
    pub start: Lsn,
    /// The timeline of the page it starts on.
    pub timeline: u32,
    /// Its bytes so far (page headers removed; the 24-byte header is complete when there
    /// are at least 24): all of them when `kept.len() == len`, else only the first ones
    /// (a streamed record, see [`DecoderConfig::main_data`]).
    pub kept: &'a [u8],
    /// How many of its bytes were read.
    pub len: u64,
}

impl PendingRecord<'_> {
    /// All the bytes read so far, when they were kept.
    pub fn bytes(&self) -> Option<&[u8]> {
        (self.kept.len() as u64 == self.len).then_some(self.kept)
    }
}

/// Checks `xl_prev` in a record's header against the previous record's start (when known).
fn prev_matches(prev: Option<u64>, header: &[u8]) -> Result<(), DecodeErrorKind> {
    let found = RecordHeader::parse(header).prev;
    match prev {
        Some(expected) if found.0 != expected => Err(DecodeErrorKind::PrevMismatch {
            expected: Lsn(expected),
            found,
        }),
        _ => Ok(()),
    }
}

/// The incremental WAL record decoder (see [`crate::wal`]).
#[derive(Debug)]
pub struct WalDecoder {
    seg_size: u64,
    major: Option<PgMajor>,
    system_id: Option<u64>,
    /// The LSN of the next byte to be fed.
    pos: u64,
    /// The page whose header has been read (content bytes may follow).
    header_page: Option<u64>,
    /// A page header being collected.
    hdr: Vec<u8>,
    /// `xlp_tli` of the current page.
    page_tli: u32,
    state: State,
    /// The start of the last complete record (what the next `xl_prev` must be).
    prev: Option<u64>,
    last_end: u64,
    /// No page header seen yet: a continuation there belongs to a record that began
    /// before the start, and is skipped.
    first_page: bool,
    end: Option<WalEnd>,
    skipped_continuation: Option<(Lsn, u32)>,
    /// See [`DecoderConfig::main_data`].
    main_data: bool,
    /// See [`DecoderConfig::keep_continuation`].
    keep_continuation: u32,
    /// The skipped continuation's bytes, while they are collected (only when kept).
    continuation: Option<Vec<u8>>,
    /// All of the kept continuation was read.
    continuation_complete: bool,
    /// The buffer of the last record that needed one (crossing a page or a piece of
    /// input), kept for the next: one allocation per decoder, not per record.
    spare: Vec<u8>,
}

impl WalDecoder {
    /// A decoder for bytes starting at `config.start`.
    pub fn new(config: DecoderConfig) -> Result<WalDecoder, DecodeError> {
        let bad = |s: &str| DecodeError {
            lsn: config.start,
            kind: DecodeErrorKind::BadStart(s.to_string()),
        };
        let seg = config.segment_size;
        if !seg.is_power_of_two() || !(1 << 20..=1 << 30).contains(&seg) {
            return Err(bad(&format!(
                "segment size {seg} is not a power of two from 1 MiB to 1 GiB"
            )));
        }
        let start = config.start.0;
        if start % 8 != 0 {
            return Err(bad("not 8-byte aligned"));
        }
        let page = start - start % XLOG_BLCKSZ;
        let mid_page = start != page;
        if mid_page && config.major.is_none() {
            return Err(bad("a start inside a page needs the PostgreSQL major"));
        }
        if mid_page && start - page < SHORT_PHD as u64 {
            return Err(bad("inside a page header"));
        }
        Ok(WalDecoder {
            seg_size: seg,
            major: config.major,
            system_id: None,
            pos: start,
            header_page: mid_page.then_some(page),
            hdr: Vec::with_capacity(LONG_PHD),
            page_tli: 0,
            state: State::Boundary,
            prev: config.prev_record.map(|l| l.0),
            last_end: start,
            first_page: !mid_page,
            end: None,
            skipped_continuation: None,
            main_data: config.main_data,
            keep_continuation: config.keep_continuation,
            continuation: None,
            continuation_complete: false,
            spare: Vec::new(),
        })
    }

    /// Feeds the next bytes; returns the records they completed, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<WalRecord>, DecodeError> {
        let mut out = Vec::new();
        self.feed_into(bytes, &mut out)?;
        Ok(out)
    }

    /// Like [`feed`](Self::feed), appending to `out` (records completed before an error
    /// are kept there).
    pub fn feed_into(&mut self, bytes: &[u8], out: &mut Vec<WalRecord>) -> Result<(), DecodeError> {
        self.feed_with(bytes, |record| out.push(record))
    }

    /// Like [`feed`](Self::feed), handing each record to `sink` as it completes (records
    /// completed before an error have been handed over): the fastest way, nothing is
    /// collected.
    pub fn feed_with(
        &mut self,
        bytes: &[u8],
        mut sink: impl FnMut(WalRecord),
    ) -> Result<(), DecodeError> {
        let mut input = bytes;
        while !input.is_empty() {
            if let State::Failed(e) = &self.state {
                return Err(e.clone());
            }
            if let Err(e) = self.step(&mut input, &mut sink) {
                self.state = State::Failed(e.clone());
                return Err(e);
            }
        }
        if let State::Failed(e) = &self.state {
            return Err(e.clone());
        }
        Ok(())
    }

    /// The end of the written WAL, once found.
    pub fn end(&self) -> Option<&WalEnd> {
        self.end.as_ref()
    }

    /// The LSN of the next byte to be fed.
    pub fn position(&self) -> Lsn {
        Lsn(self.pos)
    }

    /// The major, once known.
    pub fn major(&self) -> Option<PgMajor> {
        self.major
    }

    /// The system identifier from the long page headers, once seen.
    pub fn system_identifier(&self) -> Option<u64> {
        self.system_id
    }

    /// The end of the last complete record.
    pub fn last_record_end(&self) -> Lsn {
        Lsn(self.last_end)
    }

    /// The start of a record begun but not yet complete: when the input ends here, it
    /// continues in bytes not fed (the next segment).
    pub fn pending_record(&self) -> Option<Lsn> {
        match &self.state {
            State::Record { start, got, .. } if *got > 0 => Some(Lsn(*start)),
            _ => None,
        }
    }

    /// The continuation skipped at the start (a record that began before the first
    /// byte fed): the page where it was found and its `xlp_rem_len`.
    pub fn skipped_continuation(&self) -> Option<(Lsn, u32)> {
        self.skipped_continuation
    }

    /// The bytes of that continuation (the record's content, page headers removed), once
    /// all of them were fed, when [`DecoderConfig::keep_continuation`] allowed keeping them.
    /// A continuation given up by the server (`XLP_FIRST_IS_OVERWRITE_CONTRECORD`) is never
    /// complete.
    pub fn skipped_continuation_bytes(&self) -> Option<&[u8]> {
        match &self.continuation {
            Some(b) if self.continuation_complete => Some(b),
            _ => None,
        }
    }

    /// The record still being reassembled when the input stopped (it continues in bytes
    /// not fed, typically the next segment). `None` at a record boundary, after the end
    /// of the WAL or an error.
    pub fn pending_record_bytes(&self) -> Option<PendingRecord<'_>> {
        match &self.state {
            State::Record {
                start,
                timeline,
                buf,
                got,
                ..
            } if *got > 0 => Some(PendingRecord {
                start: Lsn(*start),
                timeline: *timeline,
                kept: buf,
                len: *got,
            }),
            _ => None,
        }
    }

    /// `xlp_tli` of the last page header read (`None` before the first).
    pub fn page_timeline(&self) -> Option<u32> {
        (self.page_tli != 0).then_some(self.page_tli)
    }

    fn err(&self, lsn: u64, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            lsn: Lsn(lsn),
            kind,
        }
    }

    fn finish_end(&mut self, at: u64, reason: EndReason, check_until: u64) {
        let incomplete = match &self.state {
            State::Record { start, .. } => Some(Lsn(*start)),
            _ => None,
        };
        self.end = Some(WalEnd {
            at: Lsn(at),
            last_record_end: Lsn(self.last_end),
            reason,
            incomplete_record: incomplete,
        });
        self.state = State::Ended { check_until };
    }

    fn step(
        &mut self,
        input: &mut &[u8],
        out: &mut dyn FnMut(WalRecord),
    ) -> Result<(), DecodeError> {
        match self.state {
            State::Ended { check_until } => {
                let n = (check_until.saturating_sub(self.pos) as usize).min(input.len());
                if let Some(i) = input[..n].iter().position(|&b| b != 0) {
                    return Err(self.err(self.pos + i as u64, DecodeErrorKind::NonZeroAfterEnd));
                }
                self.pos += input.len() as u64;
                *input = &[];
                return Ok(());
            }
            State::SkipSegment => {
                let seg_end = (self.pos / self.seg_size + 1) * self.seg_size;
                let n = ((seg_end - self.pos) as usize).min(input.len());
                self.pos += n as u64;
                *input = &input[n..];
                if self.pos % self.seg_size == 0 {
                    self.state = State::Boundary;
                }
                return Ok(());
            }
            _ => {}
        }
        let page = self.pos - self.pos % XLOG_BLCKSZ;
        if self.header_page != Some(page) {
            return self.collect_page_header(page, input);
        }
        let page_end = page + XLOG_BLCKSZ;
        let room = (page_end - self.pos) as usize;
        match &mut self.state {
            State::Boundary => {
                let whole: &[u8] = input;
                let avail = room.min(whole.len());
                if avail >= RECORD_HEADER_LEN {
                    let t = u32::from_le_bytes(whole[0..4].try_into().unwrap()) as usize;
                    if (RECORD_HEADER_LEN..=avail).contains(&t) {
                        // The whole record is on this page and in this input (most
                        // records are): decoded where it lies, without copying it.
                        let start = self.pos;
                        self.check_prev(start, &whole[..RECORD_HEADER_LEN])?;
                        self.pos += t as u64;
                        *input = &whole[t..];
                        return self.complete_record(start, self.page_tli, &whole[..t], out);
                    }
                }
                let mut buf = std::mem::take(&mut self.spare);
                buf.clear();
                self.state = State::Record {
                    start: self.pos,
                    timeline: self.page_tli,
                    buf,
                    got: 0,
                    tot_len: None,
                    checked_header: false,
                    crc: None,
                };
                Ok(())
            }
            State::Padding { remaining } => {
                let n = (*remaining as usize).min(input.len());
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.state = State::Boundary;
                }
                self.pos += n as u64;
                *input = &input[n..];
                Ok(())
            }
            State::SkipContinuation { remaining } => {
                let n = (*remaining as usize).min(input.len()).min(room);
                *remaining -= n as u64;
                let done = *remaining == 0;
                if let Some(kept) = &mut self.continuation {
                    kept.extend_from_slice(&input[..n]);
                }
                self.pos += n as u64;
                *input = &input[n..];
                if done {
                    self.continuation_complete = self.continuation.is_some();
                    self.after_record();
                }
                Ok(())
            }
            State::Record { .. } => self.record_bytes(input, room, out),
            State::SkipSegment | State::Ended { .. } | State::Failed(_) => unreachable!(),
        }
    }

    /// Alignment to the next record after a record (or skipped continuation) ended at `pos`.
    fn after_record(&mut self) {
        let next = (self.pos + 7) & !7;
        self.state = if next == self.pos {
            State::Boundary
        } else {
            State::Padding {
                remaining: next - self.pos,
            }
        };
    }

    fn record_bytes(
        &mut self,
        input: &mut &[u8],
        room: usize,
        out: &mut dyn FnMut(WalRecord),
    ) -> Result<(), DecodeError> {
        let State::Record {
            start,
            timeline,
            buf,
            got,
            tot_len,
            checked_header,
            crc,
        } = &mut self.state
        else {
            unreachable!()
        };
        let start = *start;
        let target = match tot_len {
            // Up to the length first, so that a zero header ends the WAL right away; then
            // up to the end of the header, which decides whether the record is streamed.
            None if *got < 4 => 4,
            _ if *got < RECORD_HEADER_LEN as u64 => RECORD_HEADER_LEN as u64,
            Some(t) => u64::from(*t),
            None => unreachable!("the length is read with the first 4 bytes"),
        };
        let n = ((target - *got) as usize).min(room).min(input.len());
        let piece = &input[..n];
        match crc {
            Some(crc) => {
                crc.update(piece);
                let keep = STREAMED_PREFIX.saturating_sub(buf.len()).min(n);
                buf.extend_from_slice(&piece[..keep]);
            }
            None => buf.extend_from_slice(piece),
        }
        *got += n as u64;
        self.pos += n as u64;
        *input = &input[n..];
        if tot_len.is_none() && *got >= 4 {
            let t = u32::from_le_bytes(buf[0..4].try_into().unwrap());
            if t == 0 {
                let page_end = self.pos - self.pos % XLOG_BLCKSZ + XLOG_BLCKSZ;
                self.state = State::Boundary;
                self.finish_end(start, EndReason::ZeroRecordHeader, page_end);
                return Ok(());
            }
            if t < RECORD_HEADER_LEN as u32 || t > MAX_RECORD_LEN {
                return Err(self.err(start, DecodeErrorKind::ImpossibleLength(t)));
            }
            *tot_len = Some(t);
        }
        if !*checked_header && *got >= RECORD_HEADER_LEN as u64 {
            *checked_header = true;
            let header = RecordHeader::parse(&buf[..RECORD_HEADER_LEN]);
            let t = header.tot_len as usize;
            if !self.main_data && t > STREAMED_PREFIX && !payload::decodes(header.rmid) {
                *crc = Some(Crc32c::new());
                buf.reserve(STREAMED_PREFIX.saturating_sub(buf.len()));
            } else {
                // Room for the record at once (capped: the length is not yet known to be
                // valid).
                buf.reserve_exact(t.min(1 << 16).saturating_sub(buf.len()));
            }
            let prev = self.prev;
            if let Err(kind) = prev_matches(prev, &buf[..RECORD_HEADER_LEN]) {
                return Err(self.err(start, kind));
            }
        }
        if tot_len.is_some_and(|t| *got == u64::from(t)) {
            let timeline = *timeline;
            let buf = std::mem::take(buf);
            let done = match crc.take() {
                None => self.complete_record(start, timeline, &buf, out),
                Some(mut crc) => {
                    // The checksum covers the data after the header, then the header up
                    // to its own field.
                    crc.update(&buf[..record::CRC_OFFSET]);
                    let total = tot_len.expect("checked above") as usize;
                    self.complete_streamed(start, timeline, &buf, total, crc.finish(), out)
                }
            };
            // The buffer serves the next record that needs one.
            self.spare = buf;
            return done;
        }
        Ok(())
    }

    /// `xl_prev` of a record starting at `start` (its first 24 bytes in `header`) must be
    /// the previous record's start, when known.
    fn check_prev(&self, start: u64, header: &[u8]) -> Result<(), DecodeError> {
        prev_matches(self.prev, header).map_err(|kind| self.err(start, kind))
    }

    /// Decodes the complete record `rec` that started at `start` and ended at `self.pos`,
    /// and moves on to the next.
    fn complete_record(
        &mut self,
        start: u64,
        timeline: u32,
        rec: &[u8],
        out: &mut dyn FnMut(WalRecord),
    ) -> Result<(), DecodeError> {
        let major = self.major.expect("known once a page header was read");
        let record = record::decode_keeping(Lsn(start), timeline, rec, major, self.main_data)
            .map_err(|kind| self.err(start, kind))?;
        self.record_done(start, record, out)
    }

    /// Like [`complete_record`](Self::complete_record) for a streamed record: `prefix` is
    /// its first bytes, `total` its length, `crc` the checksum computed over all of it.
    fn complete_streamed(
        &mut self,
        start: u64,
        timeline: u32,
        prefix: &[u8],
        total: usize,
        crc: u32,
        out: &mut dyn FnMut(WalRecord),
    ) -> Result<(), DecodeError> {
        let major = self.major.expect("known once a page header was read");
        let record = record::decode_streamed(Lsn(start), timeline, prefix, total, crc, major)
            .map_err(|kind| self.err(start, kind))?;
        self.record_done(start, record, out)
    }

    /// Hands a decoded record over and moves on to the next.
    fn record_done(
        &mut self,
        start: u64,
        mut record: WalRecord,
        out: &mut dyn FnMut(WalRecord),
    ) -> Result<(), DecodeError> {
        record.end = Lsn(self.pos);
        self.prev = Some(start);
        self.last_end = self.pos;
        let switch = matches!(record.payload, super::Payload::Switch);
        out(record);
        if switch && self.pos % self.seg_size != 0 {
            self.state = State::SkipSegment;
        } else {
            self.after_record();
        }
        Ok(())
    }

    fn collect_page_header(&mut self, page: u64, input: &mut &[u8]) -> Result<(), DecodeError> {
        let need = if self.hdr.len() >= SHORT_PHD
            && u16::from_le_bytes([self.hdr[2], self.hdr[3]]) & XLP_LONG_HEADER != 0
        {
            LONG_PHD
        } else {
            SHORT_PHD
        };
        let n = (need - self.hdr.len()).min(input.len());
        self.hdr.extend_from_slice(&input[..n]);
        self.pos += n as u64;
        *input = &input[n..];
        if self.hdr.len() < SHORT_PHD {
            return Ok(());
        }
        let info = u16::from_le_bytes([self.hdr[2], self.hdr[3]]);
        if info & XLP_LONG_HEADER != 0 && self.hdr.len() < LONG_PHD {
            return Ok(());
        }
        let hdr = std::mem::take(&mut self.hdr);
        self.page_header(page, &hdr)
    }

    fn page_header(&mut self, page: u64, h: &[u8]) -> Result<(), DecodeError> {
        // Where a record in progress began: an end there means it was never completed.
        let at = match &self.state {
            State::Record { start, .. } => *start,
            _ => page,
        };
        if h[..SHORT_PHD].iter().all(|&b| b == 0) {
            self.finish_end(at, EndReason::ZeroPage, 0);
            return Ok(());
        }
        let magic = u16::from_le_bytes([h[0], h[1]]);
        let info = u16::from_le_bytes([h[2], h[3]]);
        let tli = u32::from_le_bytes(h[4..8].try_into().unwrap());
        let pageaddr = u64::from_le_bytes(h[8..16].try_into().unwrap());
        let rem_len = u32::from_le_bytes(h[16..20].try_into().unwrap());
        let Some(found) = PgMajor::from_page_magic(magic) else {
            return Err(self.err(page, DecodeErrorKind::UnknownPageMagic(magic)));
        };
        match self.major {
            Some(m) if m != found => {
                return Err(self.err(
                    page,
                    DecodeErrorKind::PageMagicMismatch {
                        expected: m,
                        found: magic,
                    },
                ))
            }
            _ => self.major = Some(found),
        }
        if info & !XLP_ALL_FLAGS != 0 {
            return Err(self.err(page, DecodeErrorKind::BadPageFlags(info)));
        }
        if pageaddr != page {
            self.finish_end(
                at,
                EndReason::RecycledPage {
                    found: Lsn(pageaddr),
                },
                0,
            );
            return Ok(());
        }
        if page % self.seg_size == 0 && info & XLP_LONG_HEADER == 0 {
            return Err(self.err(page, DecodeErrorKind::MissingLongHeader));
        }
        if info & XLP_LONG_HEADER != 0 {
            let sysid = u64::from_le_bytes(h[24..32].try_into().unwrap());
            let seg_size = u32::from_le_bytes(h[32..36].try_into().unwrap());
            let blcksz = u32::from_le_bytes(h[36..40].try_into().unwrap());
            if u64::from(seg_size) != self.seg_size {
                return Err(self.err(
                    page,
                    DecodeErrorKind::SegmentSizeMismatch {
                        expected: self.seg_size,
                        found: seg_size,
                    },
                ));
            }
            if u64::from(blcksz) != XLOG_BLCKSZ {
                return Err(self.err(page, DecodeErrorKind::BlockSizeMismatch(blcksz)));
            }
            match self.system_id {
                Some(s) if s != sysid => {
                    return Err(self.err(
                        page,
                        DecodeErrorKind::SystemIdMismatch {
                            expected: s,
                            found: sysid,
                        },
                    ))
                }
                _ => self.system_id = Some(sysid),
            }
        }
        self.header_page = Some(page);
        self.page_tli = tli;
        let first_page = std::mem::replace(&mut self.first_page, false);
        let cont = info & XLP_FIRST_IS_CONTRECORD != 0;
        let overwrite = info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0;
        match &mut self.state {
            State::Record { got, tot_len, .. } => {
                if overwrite {
                    // The server gave this record up (its continuation was never
                    // written); the record starting here replaces it and names it.
                    self.state = State::Boundary;
                    return Ok(());
                }
                if !cont {
                    return Err(
                        self.err(at, DecodeErrorKind::MissingContinuation { page: Lsn(page) })
                    );
                }
                let t = tot_len.expect("the length is on the record's first page");
                let expected = u64::from(t) - *got;
                if u64::from(rem_len) != expected {
                    return Err(self.err(
                        at,
                        DecodeErrorKind::ContinuationLengthMismatch {
                            expected,
                            found: rem_len,
                        },
                    ));
                }
            }
            State::SkipContinuation { remaining } => {
                let remaining = *remaining;
                if overwrite {
                    self.state = State::Boundary;
                } else if !cont || u64::from(rem_len) != remaining {
                    return Err(self.err(
                        page,
                        DecodeErrorKind::ContinuationLengthMismatch {
                            expected: remaining,
                            found: if cont { rem_len } else { 0 },
                        },
                    ));
                }
            }
            State::Boundary | State::Padding { .. } => {
                self.state = State::Boundary;
                if cont && !overwrite {
                    if !first_page {
                        return Err(
                            self.err(page, DecodeErrorKind::UnexpectedContinuation { rem_len })
                        );
                    }
                    self.skipped_continuation = Some((Lsn(page), rem_len));
                    self.state = State::SkipContinuation {
                        remaining: u64::from(rem_len),
                    };
                    if self.keep_continuation > 0 && rem_len <= self.keep_continuation {
                        self.continuation = Some(Vec::with_capacity(rem_len as usize));
                    }
                    // The record before the first one is unknown.
                    self.prev = None;
                    if rem_len == 0 {
                        self.continuation_complete = self.continuation.is_some();
                        self.after_record();
                    }
                }
            }
            State::SkipSegment | State::Ended { .. } | State::Failed(_) => unreachable!(),
        }
        Ok(())
    }
}
