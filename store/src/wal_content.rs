//! The WAL content index in the repository: the JSON form of a segment's
//! [`SegmentSummary`] (what the recovery planner needs of it), and where it is kept.
//!
//! archive-push writes it inside the segment's index entry ([`WalRecord::content`]);
//! `tidemark reindex` writes it for entries archived before the index existed, as a
//! sidecar record beside the entry ([`wal_content_key`]): index entries are create-only
//! and never rewritten. Readers take the entry's own content first, then the sidecar's.
//!
//! The form is decided here, not in `pg` (which has no serde): LSNs as PostgreSQL's text,
//! times as RFC 3339 in UTC with microseconds, the raw bytes of a crossing record as
//! lower-case hex. Its size is bounded whatever the workload: a few counters and ranges,
//! at most [`RESTORE_POINTS_MAX`](crate::pg::wal::RESTORE_POINTS_MAX) restore points, and
//! at most [`CROSSING_BYTES_MAX`](crate::pg::wal::CROSSING_BYTES_MAX) bytes at either end.
//!
//! [`WalRecord::content`]: crate::catalog::WalRecord::content

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{self, Stanza};
use crate::codec::Digest;
use crate::key::Key;
use crate::pg::wal::{
    CrossingEnd, CrossingStart, DecodeError, DecodeErrorKind, RestorePointAt, SegmentSummary,
    TimelineSwitchAt, XactStats,
};
use crate::pg::{Lsn, PgMajor, PgTimestamp, WalFileName};
use crate::serde_pg;

/// The version of [`WalContent`]'s form; readers refuse a newer one.
pub const WAL_CONTENT_FORMAT: u32 = 1;

/// The sidecar record `tidemark reindex` writes beside an index entry archived without
/// content: `<folder>/<walfile>.<sha256>.content`. `.content` is no digest, so no reader
/// of the index (this build's or an older one) takes it for an entry.
pub fn wal_content_key(stanza: &Stanza, name: &WalFileName, digest: &Digest) -> Key {
    let entry = catalog::wal_key(stanza, name, digest);
    Key::new(format!("{entry}.content")).expect("valid")
}

/// Reads `(name, digest)` back out of a sidecar key.
pub fn parse_wal_content_key(key: &Key) -> Option<(WalFileName, Digest)> {
    let entry = key.as_str().strip_suffix(".content")?;
    catalog::parse_wal_key(&Key::new(entry).ok()?)
}

/// The JSON form of a [`SegmentSummary`] (field meanings there).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WalContent {
    /// [`WAL_CONTENT_FORMAT`].
    pub format: u32,
    #[serde(with = "serde_pg::lsn")]
    segment_start: Lsn,
    timeline: u32,
    pg_major: u32,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_pg::opt_lsn"
    )]
    first_record: Option<Lsn>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_pg::opt_lsn"
    )]
    last_record: Option<Lsn>,
    #[serde(with = "serde_pg::lsn")]
    end_of_records: Lsn,
    records: u64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    switched: bool,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_pg::opt_lsn"
    )]
    ended_at: Option<Lsn>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    xacts: Option<XactsJson>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    restore_points: Vec<RestorePointJson>,
    #[serde(default, skip_serializing_if = "is_zero")]
    restore_points_omitted: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    timeline_switches: Vec<TimelineSwitchJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crossing_end: Option<CrossingEndJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crossing_start: Option<CrossingStartJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    damage: Option<DamageJson>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct XactsJson {
    commits: u64,
    aborts: u64,
    #[serde(with = "serde_pg::lsn")]
    first_lsn: Lsn,
    #[serde(with = "serde_pg::lsn")]
    last_lsn: Lsn,
    #[serde(with = "pg_time")]
    first_time: PgTimestamp,
    #[serde(with = "pg_time")]
    last_time: PgTimestamp,
    #[serde(with = "pg_time")]
    min_time: PgTimestamp,
    #[serde(with = "pg_time")]
    max_time: PgTimestamp,
    min_xid: u32,
    max_xid: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct RestorePointJson {
    #[serde(with = "serde_pg::lsn")]
    lsn: Lsn,
    #[serde(with = "pg_time")]
    time: PgTimestamp,
    name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct TimelineSwitchJson {
    #[serde(with = "serde_pg::lsn")]
    lsn: Lsn,
    from: u32,
    to: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct CrossingEndJson {
    remaining: u32,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_bytes")]
    bytes: Option<Vec<u8>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct CrossingStartJson {
    #[serde(with = "serde_pg::lsn")]
    lsn: Lsn,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    total_len: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rmid: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    info: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    xid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_bytes")]
    bytes: Option<Vec<u8>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct DamageJson {
    #[serde(with = "serde_pg::lsn")]
    lsn: Lsn,
    reason: String,
}

impl From<&SegmentSummary> for WalContent {
    fn from(s: &SegmentSummary) -> WalContent {
        WalContent {
            format: WAL_CONTENT_FORMAT,
            segment_start: s.segment_start,
            timeline: s.timeline,
            pg_major: s.major.number(),
            first_record: s.first_record,
            last_record: s.last_record,
            end_of_records: s.end_of_records,
            records: s.records,
            switched: s.switched,
            ended_at: s.ended_at,
            xacts: s.xacts.map(|x| XactsJson {
                commits: x.commits,
                aborts: x.aborts,
                first_lsn: x.first_lsn,
                last_lsn: x.last_lsn,
                first_time: x.first_time,
                last_time: x.last_time,
                min_time: x.min_time,
                max_time: x.max_time,
                min_xid: x.min_xid,
                max_xid: x.max_xid,
            }),
            restore_points: s
                .restore_points
                .iter()
                .map(|r| RestorePointJson {
                    lsn: r.lsn,
                    time: r.time,
                    name: r.name.clone(),
                })
                .collect(),
            restore_points_omitted: s.restore_points_omitted,
            timeline_switches: s
                .timeline_switches
                .iter()
                .map(|t| TimelineSwitchJson {
                    lsn: t.lsn,
                    from: t.from,
                    to: t.to,
                })
                .collect(),
            crossing_end: s.crossing_end.as_ref().map(|c| CrossingEndJson {
                remaining: c.remaining,
                bytes: c.bytes.clone(),
            }),
            crossing_start: s.crossing_start.as_ref().map(|c| CrossingStartJson {
                lsn: c.lsn,
                total_len: c.total_len,
                rmid: c.rmid,
                info: c.info,
                xid: c.xid,
                bytes: c.bytes.clone(),
            }),
            damage: s.damage.as_ref().map(|d| DamageJson {
                lsn: d.lsn,
                reason: d.kind.to_string(),
            }),
        }
    }
}

impl WalContent {
    /// The summary this form holds; `Err` names what this build cannot read (a newer
    /// format, a major it does not know).
    pub fn to_summary(&self) -> Result<SegmentSummary, String> {
        if self.format > WAL_CONTENT_FORMAT {
            return Err(format!(
                "WAL content format {} is newer than this build reads ({WAL_CONTENT_FORMAT}): upgrade tidemark",
                self.format
            ));
        }
        let major = PgMajor::from_number(self.pg_major)
            .ok_or_else(|| format!("unknown PostgreSQL major {}", self.pg_major))?;
        Ok(SegmentSummary {
            segment_start: self.segment_start,
            timeline: self.timeline,
            major,
            first_record: self.first_record,
            last_record: self.last_record,
            end_of_records: self.end_of_records,
            records: self.records,
            switched: self.switched,
            ended_at: self.ended_at,
            xacts: self.xacts.as_ref().map(|x| XactStats {
                commits: x.commits,
                aborts: x.aborts,
                first_lsn: x.first_lsn,
                last_lsn: x.last_lsn,
                first_time: x.first_time,
                last_time: x.last_time,
                min_time: x.min_time,
                max_time: x.max_time,
                min_xid: x.min_xid,
                max_xid: x.max_xid,
            }),
            restore_points: self
                .restore_points
                .iter()
                .map(|r| RestorePointAt {
                    lsn: r.lsn,
                    time: r.time,
                    name: r.name.clone(),
                })
                .collect(),
            restore_points_omitted: self.restore_points_omitted,
            timeline_switches: self
                .timeline_switches
                .iter()
                .map(|t| TimelineSwitchAt {
                    lsn: t.lsn,
                    from: t.from,
                    to: t.to,
                })
                .collect(),
            crossing_end: self.crossing_end.as_ref().map(|c| CrossingEnd {
                remaining: c.remaining,
                bytes: c.bytes.clone(),
            }),
            crossing_start: self.crossing_start.as_ref().map(|c| CrossingStart {
                lsn: c.lsn,
                total_len: c.total_len,
                rmid: c.rmid,
                info: c.info,
                xid: c.xid,
                bytes: c.bytes.clone(),
            }),
            damage: self.damage.as_ref().map(|d| DecodeError {
                lsn: d.lsn,
                kind: DecodeErrorKind::Recorded(d.reason.clone()),
            }),
        })
    }
}

/// A [`PgTimestamp`] as RFC 3339 in UTC with microseconds (`2026-12-06T10:32:07.123456Z`).
mod pg_time {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &PgTimestamp, s: S) -> Result<S::Ok, S::Error> {
        let at = DateTime::<Utc>::from_timestamp_micros(t.unix_micros())
            .ok_or_else(|| serde::ser::Error::custom("timestamp out of range"))?;
        s.collect_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PgTimestamp, D::Error> {
        let text = String::deserialize(d)?;
        let at = DateTime::parse_from_rfc3339(&text).map_err(serde::de::Error::custom)?;
        Ok(PgTimestamp::from_unix_micros(at.timestamp_micros()))
    }
}

/// Bytes as lower-case hex.
mod hex_bytes {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => {
                let mut text = String::with_capacity(b.len() * 2);
                for byte in b {
                    text.push_str(&format!("{byte:02x}"));
                }
                s.serialize_str(&text)
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        if text.len() % 2 != 0 || !text.is_ascii() {
            return Err(serde::de::Error::custom("odd or non-ASCII hex"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(serde::de::Error::custom))
            .collect::<Result<Vec<u8>, _>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentSummary {
        SegmentSummary {
            segment_start: Lsn(0x0300_0000),
            timeline: 2,
            major: PgMajor::from_number(16).unwrap(),
            first_record: Some(Lsn(0x0300_0028)),
            last_record: Some(Lsn(0x03FF_FF00)),
            end_of_records: Lsn(0x03FF_FF40),
            records: 12345,
            switched: false,
            ended_at: None,
            xacts: Some(XactStats {
                commits: 10,
                aborts: 2,
                first_lsn: Lsn(0x0300_0100),
                last_lsn: Lsn(0x03FF_0000),
                first_time: PgTimestamp(849_000_000_123_456),
                last_time: PgTimestamp(849_000_010_000_001),
                min_time: PgTimestamp(849_000_000_000_000),
                max_time: PgTimestamp(849_000_010_000_001),
                min_xid: 740,
                max_xid: 751,
            }),
            restore_points: vec![RestorePointAt {
                lsn: Lsn(0x0300_2000),
                time: PgTimestamp(849_000_005_000_000),
                name: "before \"upgrade\"".into(),
            }],
            restore_points_omitted: 3,
            timeline_switches: vec![TimelineSwitchAt {
                lsn: Lsn(0x0300_0028),
                from: 1,
                to: 2,
            }],
            crossing_end: Some(CrossingEnd {
                remaining: 40,
                bytes: Some(vec![0, 1, 0xab, 0xff]),
            }),
            crossing_start: Some(CrossingStart {
                lsn: Lsn(0x03FF_FF40),
                total_len: Some(98),
                rmid: Some(1),
                info: Some(0),
                xid: Some(752),
                bytes: None,
            }),
            damage: Some(DecodeError {
                lsn: Lsn(0x03FF_FF40),
                kind: DecodeErrorKind::Recorded("CRC mismatch".into()),
            }),
        }
    }

    #[test]
    fn a_summary_reads_back_as_written() {
        let summary = sample();
        let json = serde_json::to_string(&WalContent::from(&summary)).unwrap();
        let back: WalContent = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_summary().unwrap(), summary);
        assert!(
            json.contains("\"first_time\":\"2026-11-26T09:20:00.123456Z\""),
            "{json}"
        );
        assert!(json.contains("\"bytes\":\"0001abff\""), "{json}");
    }

    #[test]
    fn a_newer_format_is_refused_not_misread() {
        let mut content = WalContent::from(&sample());
        content.format = WAL_CONTENT_FORMAT + 1;
        let err = content.to_summary().unwrap_err();
        assert!(err.contains("upgrade tidemark"), "{err}");
    }

    #[test]
    fn sidecar_keys_are_never_index_entries() {
        let stanza = Stanza::new("main").unwrap();
        let name: WalFileName = "000000020000000000000003".parse().unwrap();
        let digest = Digest::of(b"segment");
        let key = wal_content_key(&stanza, &name, &digest);
        assert_eq!(catalog::parse_wal_key(&key), None);
        assert_eq!(parse_wal_content_key(&key), Some((name, digest)));
        let entry = catalog::wal_key(&stanza, &name, &digest);
        assert_eq!(parse_wal_content_key(&entry), None);
    }
}
