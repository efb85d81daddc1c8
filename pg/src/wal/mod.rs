//! The WAL record decoder: sans-IO and incremental.
//!
//! [`WalDecoder`] is created with the segment size, the LSN of the first byte it will be
//! fed, and optionally the PostgreSQL major (otherwise read from the first page header's
//! magic). It is fed bytes in pieces of any size, from one byte to whole segments, and
//! returns the [`WalRecord`]s that completed. It never reads a file itself.
//!
//! What it understands (PostgreSQL 13 to 18; each fact checked in PostgreSQL's source,
//! `src/include/access/xlog_internal.h`, `xlogrecord.h`, `xact.h`, `pg_control.h`, and in
//! `xlogreader.c` / `xactdesc.c`):
//!
//! - page headers, short (24 bytes) and long (40 bytes, first page of a segment: system
//!   identifier, segment size, page size), `xlp_rem_len` with `XLP_FIRST_IS_CONTRECORD` for
//!   records continued from the previous page or segment, and
//!   `XLP_FIRST_IS_OVERWRITE_CONTRECORD` (0x0008 in 13 to 18; 0x0004 is the old
//!   `XLP_BKP_REMOVABLE`), which marks a page where the server gave up a record whose
//!   continuation was never written: the partial record is dropped, and the
//!   `XLOG_OVERWRITE_CONTRECORD` record that follows names it;
//! - records crossing pages and segments, MAXALIGN (8) between records, a record header
//!   split across two pages (only `xl_tot_len` is sure to be on the first);
//! - the record header and its CRC-32C, which covers the bytes after the 24-byte header,
//!   then the header up to `xl_crc` (`ValidXLogRecord` in `xlogreader.c`);
//! - block references, parsed only as far as needed to find the main data and skip the
//!   images (`DecodeXLogRecord`; image compression flags changed in 15);
//! - the payloads the recovery planner needs ([`Payload`]).
//!
//! # End of WAL, and damage
//!
//! PostgreSQL stops replay at the first record it cannot read, whatever the reason: it
//! cannot tell the end of written WAL from damage, and does not try. tidemark must tell
//! them apart, because the planner must never treat a damaged archive as a shorter one.
//! The decoder reports **the end of written WAL** ([`WalEnd`], not an error) only for
//! what PostgreSQL itself leaves behind where it stopped writing:
//!
//! - at a record boundary, a record header whose `xl_tot_len` is zero (PostgreSQL zeroes
//!   every WAL page in memory before it writes records into it, so the bytes after the
//!   last record of a page are zeros); the rest of that page must then be zeros too,
//!   else the decoder reports damage ([`DecodeErrorKind::NonZeroAfterEnd`]);
//! - where a page header belongs, an all-zero header (a freshly created segment) or a
//!   header with a valid magic whose `xlp_pageaddr` is not this page's address (a
//!   recycled segment: an earlier use of the file).
//!
//! Everything else that is invalid is an error naming its LSN, never skipped: a CRC
//! mismatch, an `xl_prev` that does not point at the previous record, an impossible
//! length, a page header with an unknown magic, bad flags or a wrong segment size, a
//! missing or inconsistent continuation, block headers or a payload that do not add up.
//! After an error or the end the decoder ignores further input (an error repeats).
//!
//! A caller that knows its input is a complete archived segment (archive-push) knows
//! more: a full segment is archived only once the server has written past it, so its WAL
//! cannot end before the segment's last byte except after an `XLOG_SWITCH` record (which
//! the decoder follows to the next segment, skipping the padding). Such a caller treats
//! [`WalEnd::within_segment`] as damage. A torn last record in a crashed server's
//! `pg_wal` is reported as an error too (a CRC mismatch): only the caller can know that it
//! is the last one.

mod decoder;
mod payload;
mod record;
mod summary;

pub use decoder::{DecoderConfig, EndReason, PendingRecord, WalDecoder, WalEnd};
pub use payload::{
    Checkpoint, EndOfRecovery, Payload, RestorePoint, TimelineSwitch, XactCompletion, XactKind,
};
pub use record::{rmgr_name, RecordHeader, WalRecord};
pub use summary::{
    join_crossing, summarize_segment, summarize_segment_with, CrossingEnd, CrossingStart,
    RestorePointAt, SegmentSummary, TimelineSwitchAt, XactStats, CROSSING_BYTES_MAX,
    RESTORE_POINTS_MAX,
};

use std::fmt;

use crate::types::{Lsn, PgMajor};

/// `XLOG_BLCKSZ`: the size of a WAL page. PostgreSQL can be built with another; the long
/// page header says which, and the decoder refuses any other.
pub const XLOG_BLCKSZ: u64 = 8192;

/// A WAL decoding failure: what, and the LSN where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Where: the record's start for a record, the page's start for a page header.
    pub lsn: Lsn,
    /// What.
    pub kind: DecodeErrorKind,
}

/// What went wrong (see [`DecodeError`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The decoder cannot start there (not 8-aligned, or mid-page without a major).
    BadStart(String),
    /// A page header's magic is not one of a known PostgreSQL major.
    UnknownPageMagic(u16),
    /// A page header's magic belongs to another major than the WAL so far.
    PageMagicMismatch {
        /// The major so far (or configured).
        expected: PgMajor,
        /// The magic found.
        found: u16,
    },
    /// Undefined bits in `xlp_info`.
    BadPageFlags(u16),
    /// The first page of a segment without a long header.
    MissingLongHeader,
    /// The long header's segment size is not the configured one.
    SegmentSizeMismatch {
        /// Configured.
        expected: u64,
        /// Found in the header.
        found: u32,
    },
    /// The long header's WAL page size is not 8192.
    BlockSizeMismatch(u32),
    /// The long header's system identifier differs from an earlier segment's.
    SystemIdMismatch {
        /// The earlier one.
        expected: u64,
        /// This one.
        found: u64,
    },
    /// A record continues onto a page whose header does not say so.
    MissingContinuation {
        /// The page.
        page: Lsn,
    },
    /// A page continues a record, but with another remaining length.
    ContinuationLengthMismatch {
        /// Bytes the record still needs.
        expected: u64,
        /// `xlp_rem_len`.
        found: u32,
    },
    /// A page says it continues a record where none was begun.
    UnexpectedContinuation {
        /// `xlp_rem_len`.
        rem_len: u32,
    },
    /// `xl_tot_len` is below the header size or beyond what PostgreSQL can write.
    ImpossibleLength(u32),
    /// `xl_prev` does not point at the previous record.
    PrevMismatch {
        /// The previous record's start.
        expected: Lsn,
        /// `xl_prev`.
        found: Lsn,
    },
    /// The record's CRC-32C does not match.
    CrcMismatch {
        /// `xl_crc`.
        stored: u32,
        /// Computed over the record.
        computed: u32,
    },
    /// The block references and data lengths do not add up.
    BadBlockHeaders(String),
    /// A payload the decoder types (commit, checkpoint, …) is malformed.
    BadPayload(String),
    /// Non-zero bytes after the end of WAL on the same page.
    NonZeroAfterEnd,
    /// The written WAL ends inside a segment archived as complete (not `.partial`, and
    /// not after `XLOG_SWITCH`): it was cut short. See
    /// [`SegmentSummary::defect`].
    EndsInsideSegment,
    /// The two halves of a record that crosses segments do not make a record, or were not
    /// kept in the summaries (then the caller decodes the two segments).
    Crossing(String),
    /// A failure found earlier and kept as its text (a segment summary read back from
    /// the repository's index says where the segment was damaged when it was archived).
    Recorded(String),
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DecodeErrorKind::*;
        match self {
            BadStart(s) => write!(f, "cannot start decoding here: {s}"),
            UnknownPageMagic(m) => write!(f, "page header with unknown magic {m:#06X}"),
            PageMagicMismatch { expected, found } => {
                write!(
                    f,
                    "page magic {found:#06X} where {expected} WAL was expected"
                )
            }
            BadPageFlags(i) => write!(f, "page header with invalid flags {i:#06X}"),
            MissingLongHeader => write!(f, "first page of a segment without a long header"),
            SegmentSizeMismatch { expected, found } => {
                write!(f, "segment size {found} in the header, expected {expected}")
            }
            BlockSizeMismatch(b) => write!(f, "WAL page size {b}, only 8192 is supported"),
            SystemIdMismatch { expected, found } => {
                write!(
                    f,
                    "system identifier {found}, earlier segments have {expected}"
                )
            }
            MissingContinuation { page } => {
                write!(
                    f,
                    "record continues, but page {page} has no continuation flag"
                )
            }
            ContinuationLengthMismatch { expected, found } => write!(
                f,
                "continuation page says {found} bytes remain, the record needs {expected}"
            ),
            UnexpectedContinuation { rem_len } => {
                write!(
                    f,
                    "page continues a record ({rem_len} bytes) where none began"
                )
            }
            ImpossibleLength(l) => write!(f, "impossible record length {l}"),
            PrevMismatch { expected, found } => write!(
                f,
                "xl_prev {found} does not point at the previous record {expected}"
            ),
            CrcMismatch { stored, computed } => write!(
                f,
                "CRC mismatch: stored {stored:#010X}, computed {computed:#010X}"
            ),
            BadBlockHeaders(s) => write!(f, "invalid block references: {s}"),
            BadPayload(s) => write!(f, "invalid payload: {s}"),
            NonZeroAfterEnd => write!(f, "non-zero bytes after the end of WAL on its page"),
            EndsInsideSegment => write!(
                f,
                "the WAL ends here, inside a segment archived as complete (cut short)"
            ),
            Crossing(s) => write!(f, "record crossing segments: {s}"),
            Recorded(s) => f.write_str(s),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid WAL at {}: {}", self.lsn, self.kind)
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests;
