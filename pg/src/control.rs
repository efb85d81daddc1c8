//! `global/pg_control`: the cluster's identity, read without a running server.
//!
//! `tidemark init --offline` records a stanza from this file (as pgBackRest's
//! `stanza-create --no-online` does), so it must read exactly what the server would say:
//! the system identifier, the control-file and catalog versions, and the WAL page and
//! segment sizes. Pure and std-only: the caller reads the file, this module decodes it.
//!
//! The layout is `ControlFileData` in PostgreSQL's `src/include/catalog/pg_control.h`,
//! written in the server's native byte order and alignment (tidemark runs on
//! little-endian 64-bit machines, like the WAL code in [`crate::walfile`]). Every field tidemark
//! reads sits at the same offset from PostgreSQL 13 to 18: `CheckPoint` kept its size
//! when 17 put `wal_level` into the padding after `fullPageWrites`, and 18's new
//! `default_char_signedness` comes after the WAL sizes. What moves is the CRC, which
//! always covers every byte before it:
//!
//! | `pg_control_version` | PostgreSQL | CRC at |
//! |---|---|---|
//! | 1300 | 13, 14, 15, 16 | 288 |
//! | 1700 | 17 | 288 |
//! | 1800 | 18 | 292 |
//!
//! (Checked against `initdb` output of 14, 15, 17 and 18, and against `pg_controldata`;
//! see the integration test `init_offline_reads_what_pg_controldata_prints`.) Other
//! versions are refused rather than guessed at. The CRC is CRC-32C, as PostgreSQL's
//! `pg_crc32c` ([`crate::crc32c`]).

use std::fmt;

use crate::crc32c::crc32c;
use crate::types::SystemId;
use crate::walfile::SegmentSize;

/// The file's path inside a data directory.
pub const CONTROL_FILE_PATH: &str = "global/pg_control";
/// PostgreSQL writes the file padded to this size (`PG_CONTROL_FILE_SIZE`).
pub const CONTROL_FILE_SIZE: usize = 8192;

const OFF_PG_CONTROL_VERSION: usize = 8;
const OFF_CATALOG_VERSION: usize = 12;
const OFF_FLOAT_FORMAT: usize = 208;
const OFF_XLOG_BLCKSZ: usize = 224;
const OFF_XLOG_SEG_SIZE: usize = 228;
const OFF_DATA_CHECKSUM_VERSION: usize = 252;
/// `FLOATFORMAT_VALUE`: a cross-check that the file was written by this architecture.
const FLOAT_FORMAT: f64 = 1_234_567.0;

/// What tidemark reads from `pg_control`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlFile {
    /// The cluster's system identifier.
    pub system_id: SystemId,
    /// `pg_control_version` (1300, 1700, 1800).
    pub pg_control_version: u32,
    /// `catalog_version_no` (202209061 for PostgreSQL 15).
    pub catalog_version: u32,
    /// `XLOG_BLCKSZ`: the WAL page size.
    pub wal_page_size: u32,
    /// The WAL segment size.
    pub wal_segment_size: SegmentSize,
    /// Non-zero when data pages carry checksums.
    pub data_checksum_version: u32,
}

impl ControlFile {
    /// The PostgreSQL major versions that write this control-file version.
    pub fn majors(&self) -> std::ops::RangeInclusive<u32> {
        majors_of(self.pg_control_version).expect("parse accepts known versions only")
    }
}

/// The majors that write `pg_control_version`, for the versions tidemark reads.
fn majors_of(pg_control_version: u32) -> Option<std::ops::RangeInclusive<u32>> {
    match pg_control_version {
        1300 => Some(13..=16),
        1700 => Some(17..=17),
        1800 => Some(18..=18),
        _ => None,
    }
}

/// Where the CRC sits for `pg_control_version` (it covers every byte before it).
fn crc_offset(pg_control_version: u32) -> Option<usize> {
    match pg_control_version {
        1300 | 1700 => Some(288),
        1800 => Some(292),
        _ => None,
    }
}

/// Why bytes are not a `pg_control` tidemark can read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlFileError {
    /// Too short to hold the fields.
    TooShort(usize),
    /// A control-file version tidemark does not know (another major, or not pg_control).
    UnknownVersion(u32),
    /// The stored CRC does not match the content.
    BadCrc {
        /// The CRC in the file.
        stored: u32,
        /// The CRC of its content.
        computed: u32,
    },
    /// A field holds a value PostgreSQL never writes.
    BadValue(String),
}

// Written by hand: `pg` has no dependencies. The messages are thiserror's were, word for word.
impl fmt::Display for ControlFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlFileError::TooShort(n) => {
                write!(f, "pg_control is {n} bytes, too short to be one")
            }
            ControlFileError::UnknownVersion(v) => write!(
                f,
                "pg_control has version {v}, not one of PostgreSQL 13-18's (1300, 1700, 1800): \
                 another PostgreSQL version, or not a pg_control file"
            ),
            ControlFileError::BadCrc { stored, computed } => write!(
                f,
                "pg_control is damaged: its CRC is {stored:08x}, its content gives {computed:08x}"
            ),
            ControlFileError::BadValue(what) => {
                write!(f, "pg_control holds an impossible value: {what}")
            }
        }
    }
}

impl std::error::Error for ControlFileError {}

fn u32_at(bytes: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(bytes[off..off + 4].try_into().expect("4 bytes"))
}

/// Decodes `pg_control` (the whole file, or at least its first 296 bytes).
pub fn parse_control_file(bytes: &[u8]) -> Result<ControlFile, ControlFileError> {
    if bytes.len() < 296 {
        return Err(ControlFileError::TooShort(bytes.len()));
    }
    let version = u32_at(bytes, OFF_PG_CONTROL_VERSION);
    let crc_at = crc_offset(version).ok_or(ControlFileError::UnknownVersion(version))?;
    let stored = u32_at(bytes, crc_at);
    let computed = crc32c(&bytes[..crc_at]);
    if stored != computed {
        return Err(ControlFileError::BadCrc { stored, computed });
    }
    let float_format = f64::from_le_bytes(
        bytes[OFF_FLOAT_FORMAT..OFF_FLOAT_FORMAT + 8]
            .try_into()
            .expect("8 bytes"),
    );
    if float_format != FLOAT_FORMAT {
        return Err(ControlFileError::BadValue(format!(
            "floatFormat is {float_format}, not {FLOAT_FORMAT} (written by another architecture?)"
        )));
    }
    let wal_page_size = u32_at(bytes, OFF_XLOG_BLCKSZ);
    if !wal_page_size.is_power_of_two() || !(1024..=65536).contains(&wal_page_size) {
        return Err(ControlFileError::BadValue(format!(
            "a WAL page size of {wal_page_size} bytes"
        )));
    }
    let seg = u32_at(bytes, OFF_XLOG_SEG_SIZE);
    let wal_segment_size =
        SegmentSize::new(u64::from(seg)).map_err(|e| ControlFileError::BadValue(e.to_string()))?;
    Ok(ControlFile {
        system_id: SystemId(u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"))),
        pg_control_version: version,
        catalog_version: u32_at(bytes, OFF_CATALOG_VERSION),
        wal_page_size,
        wal_segment_size,
        data_checksum_version: u32_at(bytes, OFF_DATA_CHECKSUM_VERSION),
    })
}

/// A `pg_control` file as PostgreSQL `major` (13-18) would write it, with the fields
/// tidemark reads set and the rest zero, for tests that need a cluster's identity
/// without a cluster (synthetic WAL of a made-up system identifier).
#[cfg(any(test, feature = "test-support"))]
pub fn synthetic(
    major: u32,
    system_id: u64,
    catalog_version: u32,
    wal_segment_size: SegmentSize,
) -> Vec<u8> {
    let version: u32 = match major {
        13..=16 => 1300,
        17 => 1700,
        18 => 1800,
        other => panic!("no pg_control layout for PostgreSQL {other}"),
    };
    let mut out = vec![0u8; CONTROL_FILE_SIZE];
    out[0..8].copy_from_slice(&system_id.to_le_bytes());
    out[OFF_PG_CONTROL_VERSION..OFF_PG_CONTROL_VERSION + 4].copy_from_slice(&version.to_le_bytes());
    out[OFF_CATALOG_VERSION..OFF_CATALOG_VERSION + 4]
        .copy_from_slice(&catalog_version.to_le_bytes());
    out[OFF_FLOAT_FORMAT..OFF_FLOAT_FORMAT + 8].copy_from_slice(&FLOAT_FORMAT.to_le_bytes());
    out[OFF_XLOG_BLCKSZ..OFF_XLOG_BLCKSZ + 4].copy_from_slice(&8192u32.to_le_bytes());
    out[OFF_XLOG_SEG_SIZE..OFF_XLOG_SEG_SIZE + 4]
        .copy_from_slice(&(wal_segment_size.bytes() as u32).to_le_bytes());
    let crc_at = crc_offset(version).expect("known version");
    let crc = crc32c(&out[..crc_at]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_layout_round_trips() {
        let size = SegmentSize::new(64 << 20).unwrap();
        for major in 13..=18 {
            let bytes = synthetic(major, 7_312_000_000 + u64::from(major), 202_209_061, size);
            let c = parse_control_file(&bytes).unwrap();
            assert_eq!(c.system_id, SystemId(7_312_000_000 + u64::from(major)));
            assert_eq!(c.wal_segment_size, size);
            assert_eq!(c.wal_page_size, 8192);
            assert_eq!(c.catalog_version, 202_209_061);
            assert!(c.majors().contains(&major), "{major}: {:?}", c.majors());
        }
    }

    #[test]
    fn damage_and_unknown_versions_are_refused() {
        let size = SegmentSize::new(16 << 20).unwrap();
        let good = synthetic(15, 42, 1, size);
        // One flipped bit anywhere the CRC covers.
        let mut flipped = good.clone();
        flipped[100] ^= 1;
        assert!(matches!(
            parse_control_file(&flipped),
            Err(ControlFileError::BadCrc { .. })
        ));
        // The 18 layout's CRC sits elsewhere: a 15 file relabelled 1800 fails its CRC.
        let mut relabelled = good.clone();
        relabelled[8..12].copy_from_slice(&1800u32.to_le_bytes());
        assert!(matches!(
            parse_control_file(&relabelled),
            Err(ControlFileError::BadCrc { .. })
        ));
        let mut unknown = good.clone();
        unknown[8..12].copy_from_slice(&1201u32.to_le_bytes());
        assert_eq!(
            parse_control_file(&unknown),
            Err(ControlFileError::UnknownVersion(1201))
        );
        assert_eq!(
            parse_control_file(&good[..100]),
            Err(ControlFileError::TooShort(100))
        );
        assert!(matches!(
            parse_control_file(&[0u8; 8192]),
            Err(ControlFileError::UnknownVersion(0))
        ));
        // A valid CRC over an impossible segment size.
        let mut odd = good;
        odd[OFF_XLOG_SEG_SIZE..OFF_XLOG_SEG_SIZE + 4].copy_from_slice(&12345u32.to_le_bytes());
        let crc = crc32c(&odd[..288]);
        odd[288..292].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            parse_control_file(&odd),
            Err(ControlFileError::BadValue(_))
        ));
    }
}
