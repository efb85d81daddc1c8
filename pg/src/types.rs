//! Small vocabulary types: [`Lsn`], [`TimelineId`], [`SystemId`], [`PgTimestamp`],
//! [`PgMajor`], and the one table from WAL page magic to major version. Pure, no IO.
//!
//! `Lsn`, `TimelineId` and `SystemId` came from `store::pg` (issue 13): one `Lsn` for the
//! whole workspace.

use std::fmt;
use std::str::FromStr;

use crate::walfile::WalError;

/// A write-ahead-log position (`XLogRecPtr`), displayed as PostgreSQL does (`16/B374D848`).
///
/// Ordered as a number: `0/9000000` comes before `0/10000000`, where their text forms sort
/// the other way round (the reason the repository's records hold `Lsn`s, not strings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Lsn {
    /// Parses PostgreSQL's text form (`16/B374D848`), ignoring surrounding white space;
    /// `None` when it is not one. [`str::parse`] is the strict form with an error.
    pub fn parse(s: &str) -> Option<Lsn> {
        s.trim().parse().ok()
    }
}

/// The strict text form: exactly `X/X`, each part 1 to 8 hex digits, nothing around it.
impl FromStr for Lsn {
    type Err = WalError;
    fn from_str(s: &str) -> Result<Self, WalError> {
        let bad = || WalError::BadLsn(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(bad());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// A timeline id. Timeline 0 does not exist; the first timeline of a cluster is 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimelineId(pub u32);

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A cluster's system identifier (from `pg_control`, repeated in every WAL segment's first page).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SystemId(pub u64);

impl fmt::Display for SystemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// `XLOG_PAGE_MAGIC` of every PostgreSQL major version tidemark recognises, oldest first
/// (`src/include/access/xlog_internal.h`, bumped whenever the WAL format changes).
/// Archive-push accepts the WAL of all of them; the record decoder reads 13 and later
/// ([`PgMajor`]). The one place a magic is mapped to a version.
const PAGE_MAGICS: [(u16, u32); 9] = [
    (0xD097, 10),
    (0xD098, 11),
    (0xD101, 12),
    (0xD106, 13),
    (0xD10D, 14),
    (0xD110, 15),
    (0xD113, 16),
    (0xD116, 17),
    (0xD118, 18),
];

/// The PostgreSQL major version whose WAL pages carry `magic` (10 to 18).
pub fn major_version_of_magic(magic: u16) -> Option<u32> {
    PAGE_MAGICS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, major)| *major)
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 00:00:00 UTC).
pub const POSTGRES_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;

/// A PostgreSQL `TimestampTz`: microseconds since 2000-01-01 00:00:00 UTC, as WAL
/// records carry it. Displayed in UTC (`2026-12-06 05:01:02.123456+00`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// The same instant as microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        self.0.saturating_add(POSTGRES_EPOCH_UNIX_MICROS)
    }

    /// The instant `micros` after the Unix epoch.
    pub fn from_unix_micros(micros: i64) -> PgTimestamp {
        PgTimestamp(micros.saturating_sub(POSTGRES_EPOCH_UNIX_MICROS))
    }

    /// `(year, month, day, hour, minute, second, microsecond)` in UTC.
    pub fn to_utc_parts(self) -> (i64, u32, u32, u32, u32, u32, u32) {
        let us = self.unix_micros();
        let secs = us.div_euclid(1_000_000);
        let micro = us.rem_euclid(1_000_000) as u32;
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400) as u32;
        let (y, m, d) = civil_from_days(days);
        (y, m, d, sod / 3600, sod / 60 % 60, sod % 60, micro)
    }
}

impl fmt::Display for PgTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s, us) = self.to_utc_parts();
        write!(f, "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{us:06}+00")
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A PostgreSQL major version whose WAL format the decoder knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PgMajor {
    /// PostgreSQL 13 (`XLOG_PAGE_MAGIC` 0xD106).
    V13,
    /// PostgreSQL 14 (0xD10D).
    V14,
    /// PostgreSQL 15 (0xD110).
    V15,
    /// PostgreSQL 16 (0xD113).
    V16,
    /// PostgreSQL 17 (0xD116).
    V17,
    /// PostgreSQL 18 (0xD118).
    V18,
}

impl PgMajor {
    /// Every version the decoder knows, oldest first.
    pub const ALL: [PgMajor; 6] = [
        PgMajor::V13,
        PgMajor::V14,
        PgMajor::V15,
        PgMajor::V16,
        PgMajor::V17,
        PgMajor::V18,
    ];

    /// The version's `XLOG_PAGE_MAGIC` (`src/include/access/xlog_internal.h`).
    pub fn page_magic(self) -> u16 {
        let n = self.number();
        PAGE_MAGICS
            .iter()
            .find(|(_, major)| *major == n)
            .map(|(magic, _)| *magic)
            .expect("every PgMajor has a page magic")
    }

    /// The version whose WAL pages carry `magic`, if the decoder reads it.
    pub fn from_page_magic(magic: u16) -> Option<PgMajor> {
        major_version_of_magic(magic).and_then(PgMajor::from_number)
    }

    /// The major version number (13..=18).
    pub fn number(self) -> u32 {
        match self {
            PgMajor::V13 => 13,
            PgMajor::V14 => 14,
            PgMajor::V15 => 15,
            PgMajor::V16 => 16,
            PgMajor::V17 => 17,
            PgMajor::V18 => 18,
        }
    }

    /// The version numbered `n`.
    pub fn from_number(n: u32) -> Option<PgMajor> {
        PgMajor::ALL.into_iter().find(|m| m.number() == n)
    }
}

impl fmt::Display for PgMajor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgreSQL {}", self.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trip() {
        let l = Lsn(0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn::parse("16/B374D848"), Some(l));
        assert_eq!(Lsn::parse("0/0"), Some(Lsn(0)));
        assert_eq!(Lsn::parse("x"), None);
        assert_eq!(Lsn::parse("/1"), None);
    }

    #[test]
    fn timestamps_convert_and_display_in_utc() {
        assert_eq!(PgTimestamp(0).unix_micros(), 946_684_800_000_000);
        assert_eq!(PgTimestamp(0).to_string(), "2000-01-01 00:00:00.000000+00");
        // 2026-12-06 05:01:02.123456 UTC is Unix 1796533262.123456.
        let t = PgTimestamp::from_unix_micros(1_796_533_262_123_456);
        assert_eq!(t.to_string(), "2026-12-06 05:01:02.123456+00");
        assert_eq!(t.unix_micros(), 1_796_533_262_123_456);
        // Before 2000: negative PostgreSQL timestamps.
        assert_eq!(PgTimestamp(-1).to_string(), "1999-12-31 23:59:59.999999+00");
        assert_eq!(
            PgTimestamp::from_unix_micros(951_782_400_000_000).to_string(),
            "2000-02-29 00:00:00.000000+00"
        );
    }

    #[test]
    fn majors_and_magics() {
        for m in PgMajor::ALL {
            assert_eq!(PgMajor::from_page_magic(m.page_magic()), Some(m));
            assert_eq!(PgMajor::from_number(m.number()), Some(m));
        }
        // 12's magic is a known version, but not one the decoder reads.
        assert_eq!(major_version_of_magic(0xD101), Some(12));
        assert_eq!(PgMajor::from_page_magic(0xD101), None);
        assert_eq!(PgMajor::V15.page_magic(), 0xD110);
        assert_eq!(PgMajor::V18.page_magic(), 0xD118);
        assert_eq!(major_version_of_magic(0xD000), None);
    }
}
