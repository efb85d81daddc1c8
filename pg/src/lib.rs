//! PostgreSQL's on-disk formats, as tidemark needs them: std only, no IO, no async.
//!
//! Callers read bytes wherever they come from (a file, the repository, a replication
//! stream) and hand them in; this crate says what they are. It knows nothing of the rest
//! of tidemark (DESIGN.md, "Crates": `pg` knows nothing of anything).
//!
//! - [`types`]: small vocabulary types ([`Lsn`], [`PgTimestamp`], [`PgMajor`]);
//! - [`crc32c`]: CRC-32C (Castagnoli), as PostgreSQL computes it for WAL records;
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
//! `store/src/pg.rs` holds an older, overlapping vocabulary (its own `Lsn`, WAL file
//! names, page-header checks); a later layout change moves it here. Until then the types
//! here are self-contained on purpose.

#![deny(missing_docs)]

pub mod crc32c;
pub mod types;
pub mod wal;

pub use types::{Lsn, PgMajor, PgTimestamp};
