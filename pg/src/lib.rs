//! PostgreSQL's on-disk formats, as tidemark needs them: std only, no IO, no async.
//!
//! Callers read bytes wherever they come from (a file, the repository, a replication
//! stream) and hand them in; this crate says what they are. It knows nothing of the rest
//! of tidemark (DESIGN.md, "Crates": `pg` knows nothing of anything).
//!
//! - [`types`]: small vocabulary types ([`Lsn`], [`TimelineId`], [`SystemId`],
//!   [`PgTimestamp`], [`PgMajor`]) and the one map from WAL page magic to major version;
//! - [`walfile`]: WAL segment sizes, WAL file names and their arithmetic, WAL page
//!   headers, and the checks that a segment is the WAL its name says ([`WalError`]);
//! - [`history`]: timeline history files;
//! - [`control`]: `global/pg_control`, the cluster's identity read offline;
//! - [`crc32c`]: CRC-32C (Castagnoli), as PostgreSQL computes it for WAL records and
//!   `pg_control`;
//! - [`wal`]: the incremental WAL record decoder ([`wal::WalDecoder`]) and the typed
//!   payloads the recovery planner needs (commits, aborts, restore points, checkpoints,
//!   end of recovery, WAL switches).
//!
//! ```
//! use tidemark_pg::wal::{DecoderConfig, WalDecoder};
//! use tidemark_pg::Lsn;
//!
//! let mut decoder = WalDecoder::new(DecoderConfig::new(16 << 20, Lsn(0x0100_0000))).unwrap();
//! // Feed bytes as they arrive, in pieces of any size; records come out as they complete.
//! let records = decoder.feed(&[0u8; 8192]).unwrap();
//! assert!(records.is_empty());
//! // An all-zero page where a page header should be: the written WAL ended there.
//! assert_eq!(decoder.end().unwrap().at, Lsn(0x0100_0000));
//! ```
//!
//! No dependencies, not even serde: the repository's JSON form of these types is the
//! repository's format, so it lives in `tidemark-store` (`store/src/serde_pg.rs`), and crates
//! that never touch the repository (the replication client) do not pay for it.

#![deny(missing_docs)]

pub mod control;
pub mod crc32c;
pub mod history;
pub mod types;
pub mod wal;
pub mod walfile;

pub use history::{parse_history, HistoryEntry};
pub use types::{major_version_of_magic, Lsn, PgMajor, PgTimestamp, SystemId, TimelineId};
pub use walfile::{
    check_pages, check_segment_start, LongPageHeader, PageHeader, PageScan, SegmentIdentity,
    SegmentSize, WalError, WalFileName, WalSegmentName, LONG_PAGE_HEADER_LEN,
    SHORT_PAGE_HEADER_LEN, XLP_ALL_FLAGS, XLP_LONG_HEADER,
};
