//! Made-up catalogs of any size, for the planner's benchmark ("plan over 2,000 segments
//! and 50 backups") and for tests that need volume rather than a story. Not a model of
//! any real workload: one timeline, every segment indexed, a minute of commits each.
//!
//! Segment `i` (counting from 1) holds 100 commits between `BASE + i minutes + 1 s` and
//! `+ 59 s`, xids `3 + 100 i` to `102 + 100 i`, and every hundredth segment a restore
//! point `rp-<i>`. Backups are spread evenly; each starts in a segment and is consistent
//! at the start of the next, at that segment's minute.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use tidemark_pg::wal::{RestorePointAt, SegmentSummary, XactStats};
use tidemark_pg::{Lsn, PgMajor, PgTimestamp, SystemId};

use super::{BackupPoint, CatalogSnapshot, SegmentContent, SegmentFacts};

/// 2026-12-01 00:00:00 UTC, as Unix microseconds: the synthetic archive's first minute.
pub const BASE_UNIX_MICROS: i64 = 1_796_083_200_000_000;

const SEGMENT_SIZE: u64 = 16 * 1024 * 1024;
const MINUTE: i64 = 60_000_000;
const SECOND: i64 = 1_000_000;

/// The time of second `second` of segment `segno`'s minute.
pub fn segment_time(segno: u64, second: i64) -> PgTimestamp {
    PgTimestamp::from_unix_micros(BASE_UNIX_MICROS + segno as i64 * MINUTE + second * SECOND)
}

/// A catalog of `segments` archived segments (numbers 1 to `segments`) on timeline 1 and
/// `backups` backups spread over them (at most one per two segments).
pub fn catalog(segments: u64, backups: usize) -> CatalogSnapshot {
    let segments = segments.max(3);
    let backups = backups.clamp(1, (segments / 2) as usize);
    let mut map = BTreeMap::new();
    for segno in 1..=segments {
        map.insert(
            (1, segno),
            SegmentFacts {
                name: format!("{:08X}{:08X}{:08X}", 1, segno >> 8, segno & 0xFF),
                stored_size: SEGMENT_SIZE / 4,
                content: SegmentContent::Summary(Box::new(summary(segno))),
            },
        );
    }
    let spacing = (segments - 2) / backups as u64;
    let backups = (0..backups as u64)
        .map(|j| {
            let start = 1 + j * spacing;
            let stop_time = segment_time(start + 1, 0);
            BackupPoint {
                id: format!("synthetic-{j:03}"),
                timeline: 1,
                start_lsn: Lsn(start * SEGMENT_SIZE + 0x28),
                stop_timeline: 1,
                stop_lsn: Lsn((start + 1) * SEGMENT_SIZE + 0x100),
                start_time: to_utc(segment_time(start, 0)),
                stop_time: to_utc(stop_time),
                size: 1 << 30,
                extensions: BTreeSet::from(["plpgsql".to_string()]),
            }
        })
        .collect();
    CatalogSnapshot {
        system_id: SystemId(7_000_000_000_000_000_001),
        segment_size: SEGMENT_SIZE,
        pg_major: PgMajor::V16,
        backups,
        histories: BTreeMap::new(),
        segments: map,
    }
}

fn to_utc(t: PgTimestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.unix_micros()).expect("in range")
}

fn summary(segno: u64) -> SegmentSummary {
    let start = segno * SEGMENT_SIZE;
    let min_xid = 3 + 100 * segno as u32;
    SegmentSummary {
        segment_start: Lsn(start),
        timeline: 1,
        major: PgMajor::V16,
        first_record: Some(Lsn(start + 0x28)),
        last_record: Some(Lsn(start + SEGMENT_SIZE - 0x200)),
        end_of_records: Lsn(start + SEGMENT_SIZE - 0x100),
        records: 1000,
        switched: false,
        ended_at: None,
        xacts: Some(XactStats {
            commits: 100,
            aborts: 0,
            first_lsn: Lsn(start + 0x200),
            last_lsn: Lsn(start + SEGMENT_SIZE - 0x400),
            first_time: segment_time(segno, 1),
            last_time: segment_time(segno, 59),
            min_time: segment_time(segno, 1),
            max_time: segment_time(segno, 59),
            min_xid,
            max_xid: min_xid + 99,
        }),
        restore_points: if segno % 100 == 0 {
            vec![RestorePointAt {
                lsn: Lsn(start + 0x300),
                time: segment_time(segno, 2),
                name: format!("rp-{segno}"),
            }]
        } else {
            Vec::new()
        },
        restore_points_omitted: 0,
        timeline_switches: Vec::new(),
        crossing_end: None,
        crossing_start: None,
        damage: None,
    }
}
