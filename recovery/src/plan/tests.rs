//! The planner's rules on synthetic catalogs: every target kind, every refusal kind,
//! timelines (promotion, a branch off an older timeline, a hole in the history chain),
//! PostgreSQL's boundary cases, and the NeedsSegments rounds; then the flag parsers.
//!
//! The catalogs follow one simple model (see [`Cat`]): segment `n` holds commits from
//! second 1 to second 59 of minute `n`, xids `100 n` to `100 n + 99`; a backup started in
//! segment `k` is consistent early in segment `k + 1`, at minute `k + 1`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{
    DateTime, Duration, FixedOffset, MappedLocalTime, NaiveDate, NaiveDateTime, TimeZone, Utc,
};
use tidemark_pg::wal::{
    CrossingStart, DecodeError, DecodeErrorKind, RestorePointAt, SegmentSummary, XactStats,
};
use tidemark_pg::{HistoryEntry, Lsn, PgMajor, PgTimestamp, SystemId, TimelineId};

use super::*;

const SEG: u64 = 16 * 1024 * 1024;
/// 2026-12-06 00:00:00 UTC in Unix microseconds.
const BASE: i64 = 1_796_515_200_000_000;

/// `offset` bytes into segment `segno`.
fn lsn(segno: u64, offset: u64) -> Lsn {
    Lsn(segno * SEG + offset)
}

/// Second `sec` (and `micros`) of minute `segno`.
fn tm(segno: u64, sec: i64) -> PgTimestamp {
    tmu(segno, sec, 0)
}

fn tmu(segno: u64, sec: i64, micros: i64) -> PgTimestamp {
    PgTimestamp::from_unix_micros(BASE + segno as i64 * 60_000_000 + sec * 1_000_000 + micros)
}

fn utc(t: PgTimestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.unix_micros()).unwrap()
}

fn name(tli: u32, segno: u64) -> String {
    format!("{tli:08X}{:08X}{:08X}", segno >> 8, segno & 0xFF)
}

/// The default summary of segment `segno` on `tli` (see the module doc).
fn summary(tli: u32, segno: u64) -> SegmentSummary {
    let min_xid = 100 * segno as u32;
    SegmentSummary {
        first_record: Some(lsn(segno, 0x28)),
        last_record: Some(lsn(segno, SEG - 0x200)),
        end_of_records: lsn(segno, SEG - 0x100),
        records: 500,
        xacts: Some(XactStats {
            commits: 100,
            aborts: 0,
            first_lsn: lsn(segno, 0x200),
            last_lsn: lsn(segno, SEG - 0x400),
            first_time: tm(segno, 1),
            last_time: tm(segno, 59),
            min_time: tm(segno, 1),
            max_time: tm(segno, 59),
            min_xid,
            max_xid: min_xid + 99,
        }),
        ..SegmentSummary::new(lsn(segno, 0), tli, PgMajor::V16)
    }
}

/// A terse catalog builder.
#[derive(Clone)]
struct Cat(CatalogSnapshot);

impl Cat {
    fn new() -> Cat {
        Cat(CatalogSnapshot {
            system_id: SystemId(42),
            segment_size: SEG,
            pg_major: PgMajor::V16,
            backups: Vec::new(),
            histories: BTreeMap::new(),
            segments: BTreeMap::new(),
        })
    }

    /// Indexed segments `range` on `tli`.
    fn segs(mut self, tli: u32, range: std::ops::RangeInclusive<u64>) -> Cat {
        for segno in range {
            self.0.segments.insert(
                (tli, segno),
                SegmentFacts {
                    name: name(tli, segno),
                    stored_size: 1000 + segno,
                    content: SegmentContent::Summary(Box::new(summary(tli, segno))),
                },
            );
        }
        self
    }

    fn not_indexed(mut self, tli: u32, segno: u64) -> Cat {
        self.0.segments.get_mut(&(tli, segno)).unwrap().content = SegmentContent::NotIndexed;
        self
    }

    fn drop_seg(mut self, tli: u32, segno: u64) -> Cat {
        self.0.segments.remove(&(tli, segno));
        self
    }

    /// Changes a segment's summary.
    fn edit(mut self, tli: u32, segno: u64, f: impl FnOnce(&mut SegmentSummary)) -> Cat {
        match &mut self.0.segments.get_mut(&(tli, segno)).unwrap().content {
            SegmentContent::Summary(s) => f(s),
            SegmentContent::Decoded(d) => f(&mut d.summary),
            SegmentContent::NotIndexed => panic!("not indexed"),
        }
        self
    }

    /// Replaces a segment by its full decode: completions `(offset, xid, minute-second,
    /// commit)` and restore points `(offset, second, name)`.
    fn decode(
        mut self,
        tli: u32,
        segno: u64,
        completions: &[(u64, u32, i64, bool)],
        restore_points: &[(u64, i64, &str)],
    ) -> Cat {
        let facts = self.0.segments.get_mut(&(tli, segno)).unwrap();
        let (summary, indexed) = match &facts.content {
            SegmentContent::Summary(s) => ((**s).clone(), true),
            SegmentContent::Decoded(d) => (d.summary.clone(), d.indexed),
            SegmentContent::NotIndexed => (summary(tli, segno), false),
        };
        facts.content = SegmentContent::Decoded(Box::new(DecodedSegment {
            summary,
            completions: completions
                .iter()
                .map(|&(off, xid, sec, commit)| Completion {
                    lsn: lsn(segno, off),
                    xid,
                    time: tm(segno, sec),
                    commit,
                })
                .collect(),
            restore_points: restore_points
                .iter()
                .map(|&(off, sec, n)| RestorePointAt {
                    lsn: lsn(segno, off),
                    time: tm(segno, sec),
                    name: n.into(),
                })
                .collect(),
            indexed,
        }));
        self
    }

    /// Timeline `tli`'s history file: `(parent, switchpoint)` oldest first.
    fn history(mut self, tli: u32, entries: &[(u32, Lsn)]) -> Cat {
        self.0.histories.insert(
            tli,
            entries
                .iter()
                .map(|&(parent, switchpoint)| HistoryEntry {
                    parent: TimelineId(parent),
                    switchpoint,
                    reason: "no recovery target specified".into(),
                })
                .collect(),
        );
        self
    }

    /// A backup started in segment `start` on `tli`, consistent early in `start + 1`.
    fn backup(mut self, id: &str, tli: u32, start: u64) -> Cat {
        self.0.backups.push(BackupPoint {
            id: id.into(),
            timeline: tli,
            start_lsn: lsn(start, 0x28),
            stop_timeline: tli,
            stop_lsn: lsn(start + 1, 0x100),
            start_time: utc(tm(start, 0)),
            stop_time: utc(tm(start + 1, 0)),
            size: 1 << 20,
            extensions: BTreeSet::from(["plpgsql".to_string(), "postgis".to_string()]),
        });
        self
    }

    fn plan(&self, target: Target) -> Outcome {
        plan(&self.0, &req(target))
    }

    fn plan_with(&self, target: Target, f: impl FnOnce(&mut PlanRequest)) -> Outcome {
        let mut r = req(target);
        f(&mut r);
        plan(&self.0, &r)
    }
}

fn req(target: Target) -> PlanRequest {
    PlanRequest {
        target,
        timeline: TimelineRequest::Latest,
        action: TargetAction::Pause,
        backup: None,
        available_extensions: None,
    }
}

fn time(t: PgTimestamp) -> Target {
    Target::Time {
        at: utc(t),
        exclusive: false,
    }
}

fn time_excl(t: PgTimestamp) -> Target {
    Target::Time {
        at: utc(t),
        exclusive: true,
    }
}

fn xid(xid: u32) -> Target {
    Target::Xid {
        xid,
        exclusive: false,
    }
}

fn xid_excl(xid: u32) -> Target {
    Target::Xid {
        xid,
        exclusive: true,
    }
}

fn at_lsn(lsn: Lsn) -> Target {
    Target::Lsn {
        lsn,
        exclusive: false,
    }
}

fn at_lsn_excl(lsn: Lsn) -> Target {
    Target::Lsn {
        lsn,
        exclusive: true,
    }
}

#[track_caller]
fn ok(o: Outcome) -> Plan {
    match o {
        Outcome::Plan(p) => p,
        other => panic!("expected a plan, got {other:#?}"),
    }
}

#[track_caller]
fn refused(o: Outcome, kind: RefusalKind) -> Refusal {
    match o {
        Outcome::Refused(r) if r.kind == kind => r,
        other => panic!("expected a {kind:?} refusal, got {other:#?}"),
    }
}

#[track_caller]
fn needs(o: Outcome) -> Vec<(u32, u64)> {
    match o {
        Outcome::NeedsSegments(v) => v,
        other => panic!("expected NeedsSegments, got {other:#?}"),
    }
}

fn setting<'p>(p: &'p Plan, key: &str) -> &'p str {
    &p.settings.iter().find(|(k, _)| k == key).unwrap().1
}

/// Timeline 1, segments 1..=10, backups in 2 and 6.
fn simple() -> Cat {
    Cat::new()
        .segs(1, 1..=10)
        .backup("b2", 1, 2)
        .backup("b6", 1, 6)
}

// ----- time targets -----

#[test]
fn time_target_stops_in_the_first_segment_with_a_later_commit() {
    let p = ok(simple().plan(time(tmu(8, 30, 500_000))));
    assert_eq!(p.backup.id, "b6");
    assert_eq!(p.timeline, 1);
    assert_eq!(p.wal.len(), 1);
    assert_eq!(p.wal[0].first, name(1, 6));
    assert_eq!(p.wal[0].last, name(1, 8));
    assert_eq!(p.wal_segments, 3);
    assert_eq!(p.wal_bytes, 1006 + 1007 + 1008);
    // Only the segment is known: its first commit (second 1) does not pass the target.
    assert_eq!(p.stop.lsn, None);
    assert!(
        p.stop.description.contains(&name(1, 8)),
        "{}",
        p.stop.description
    );
    assert_eq!(
        setting(&p, "recovery_target_time"),
        "2026-12-06 00:08:30.500000+00"
    );
    assert_eq!(setting(&p, "recovery_target_inclusive"), "on");
}

#[test]
fn time_target_before_a_segments_first_commit_is_exact() {
    // Between minute 7's last commit (second 59) and minute 8's first (second 1).
    let p = ok(simple().plan(time(tmu(8, 0, 500_000))));
    assert_eq!(p.stop.lsn, Some(lsn(8, 0x200)));
    assert_eq!(p.stop.time, Some(tm(8, 1)));
    assert_eq!(p.wal[0].last, name(1, 8));
}

#[test]
fn time_target_at_an_exact_commit_time_inclusive_and_exclusive() {
    // Segment 8 decoded: commits at seconds 10, 20, 20, 30.
    let cat = simple().decode(
        1,
        8,
        &[
            (0x1000, 801, 10, true),
            (0x2000, 802, 20, true),
            (0x3000, 803, 20, true),
            (0x4000, 804, 30, false),
        ],
        &[],
    );
    // Inclusive: stop before the first commit whose time is > 20: both commits at 20 replay.
    let p = ok(cat.plan(time(tm(8, 20))));
    assert_eq!(p.stop.lsn, Some(lsn(8, 0x4000)));
    assert!(
        p.stop.description.contains("abort of xid 804"),
        "{}",
        p.stop.description
    );
    // Exclusive: stop before the first commit whose time is >= 20.
    let p = ok(cat.plan(time_excl(tm(8, 20))));
    assert_eq!(p.stop.lsn, Some(lsn(8, 0x2000)));
    assert!(p.stop.description.contains("commit of xid 802"));
    assert_eq!(setting(&p, "recovery_target_inclusive"), "off");
}

#[test]
fn time_target_equal_to_a_segments_last_commit_moves_to_the_next_when_inclusive() {
    // Second 59 is segment 7's latest commit: inclusive needs one later (segment 8).
    let p = ok(simple().plan(time(tm(7, 59))));
    assert_eq!(p.wal[0].last, name(1, 8));
    assert_eq!(p.stop.lsn, Some(lsn(8, 0x200)));
    let p = ok(simple().plan(time_excl(tm(7, 59))));
    assert_eq!(p.wal[0].last, name(1, 7));
}

#[test]
fn time_target_picks_the_newest_backup_consistent_before_it() {
    // Between b2's consistent point (minute 3) and b6's (minute 7).
    let p = ok(simple().plan(time(tm(5, 30))));
    assert_eq!(p.backup.id, "b2");
    assert_eq!(p.wal[0].first, name(1, 2));
    assert_eq!(p.wal[0].last, name(1, 5));
}

#[test]
fn time_target_at_a_backups_consistent_time_is_inclusive_only() {
    // b6 is consistent at minute 7, second 0.
    let p = ok(simple().plan(time(tm(7, 0))));
    assert_eq!(p.backup.id, "b6");
    let p = ok(simple().plan(time_excl(tm(7, 0))));
    assert_eq!(p.backup.id, "b2");
}

#[test]
fn time_before_every_backup_is_refused_with_the_earliest_consistent_point() {
    let r = refused(
        simple().plan(time(tm(2, 30))),
        RefusalKind::BeforeFirstBackup,
    );
    assert!(r.message.contains("b2"), "{}", r.message);
    assert!(r.message.contains("consistent recovery point"));
    assert!(r.nearest[0].contains("earliest consistent point"));
    assert!(r.nearest[0].contains("b2"));
}

#[test]
fn time_with_no_later_commit_is_beyond_the_archive() {
    let r = refused(simple().plan(time(tm(10, 59))), RefusalKind::BeyondArchive);
    assert!(r
        .message
        .contains("recovery ended before configured recovery target"));
    assert!(
        r.nearest
            .iter()
            .any(|n| n.contains(&tm(10, 59).to_string())),
        "{:?}",
        r.nearest
    );
    assert!(r.nearest.iter().any(|n| n.contains("--target latest")));
}

#[test]
fn a_gap_before_the_target_is_refused_naming_the_first_missing_segment() {
    let cat = simple().drop_seg(1, 8).drop_seg(1, 9);
    let r = refused(cat.plan(time(tm(9, 30))), RefusalKind::WalGap);
    assert!(r.message.contains(&name(1, 8)), "{}", r.message);
    assert!(r.nearest[0].contains(&name(1, 7)), "{:?}", r.nearest);
    assert!(r.nearest.iter().any(|n| n.contains(&tm(7, 59).to_string())));
    // A target before the gap is fine.
    ok(cat.plan(time(tm(7, 30))));
}

#[test]
fn a_missing_tail_is_the_end_of_the_archive_not_a_gap() {
    let cat = simple().drop_seg(1, 9).drop_seg(1, 10);
    refused(cat.plan(time(tm(9, 30))), RefusalKind::BeyondArchive);
}

#[test]
fn damage_before_the_stop_is_refused_and_after_it_is_not() {
    let damage = |at: Lsn| DecodeError {
        lsn: at,
        kind: DecodeErrorKind::CrcMismatch {
            stored: 1,
            computed: 2,
        },
    };
    let cat = simple().edit(1, 7, |s| {
        s.damage = Some(damage(lsn(7, 0x8000)));
        s.xacts = None;
    });
    let r = refused(cat.plan(time(tm(8, 30))), RefusalKind::DamagedWal);
    assert!(r.message.contains(&name(1, 7)));
    assert!(r.message.contains(&lsn(7, 0x8000).to_string()));
    // In the stop segment, after the commits its summary counted: the stop is readable.
    let cat = simple().edit(1, 8, |s| s.damage = Some(damage(lsn(8, SEG - 0x100))));
    let p = ok(cat.plan(time(tm(8, 30))));
    assert_eq!(p.wal[0].last, name(1, 8));
}

#[test]
fn a_complete_segment_whose_wal_ends_early_is_damage_not_the_end_of_the_archive() {
    // Segment 7 is archived complete, yet its WAL stops at 0x8000: PostgreSQL would end
    // recovery there and open a copy that silently lacks segments 8-10.
    let cat = simple().edit(1, 7, |s| {
        s.ended_at = Some(lsn(7, 0x8000));
        s.xacts = None;
    });
    let r = refused(cat.plan(time(tm(8, 30))), RefusalKind::DamagedWal);
    assert!(
        r.message.contains(&lsn(7, 0x8000).to_string()),
        "{}",
        r.message
    );
    refused(cat.plan(Target::Latest), RefusalKind::DamagedWal);
}

#[test]
fn unindexed_segments_are_asked_for_only_where_the_stop_may_lie() {
    // 7 (b6's consistent point is in 7) and 8 may hold the stop; 6 cannot; 10 is after it.
    let cat = simple()
        .not_indexed(1, 6)
        .not_indexed(1, 7)
        .not_indexed(1, 8)
        .not_indexed(1, 10);
    let asked = needs(cat.plan(time(tm(9, 30))));
    assert_eq!(asked, vec![(1, 7), (1, 8)]);
    // Decoded, they are not asked again; the plan says they were decoded on the fly.
    let cat = cat
        .clone()
        .decode(1, 7, &[(0x200, 700, 1, true), (0x300, 701, 59, true)], &[])
        .decode(1, 8, &[(0x200, 800, 1, true), (0x300, 801, 59, true)], &[]);
    let p = ok(cat.plan(time(tm(9, 30))));
    assert_eq!(p.wal[0].last, name(1, 9));
    assert!(
        p.warnings.iter().any(|w| w.contains("decoded on the fly")),
        "{:?}",
        p.warnings
    );
    // The stop inside a decoded segment is exact.
    let p = ok(cat.plan(time(tm(8, 30))));
    assert_eq!(p.stop.lsn, Some(lsn(8, 0x300)));
    assert_eq!(p.stop.time, Some(tm(8, 59)));
}

#[test]
fn a_stop_record_that_may_cross_into_a_missing_segment_is_read_first() {
    // Segment 10 is the last; its last record continues into 11, which is not archived.
    let cat = simple().edit(1, 10, |s| {
        s.crossing_start = Some(CrossingStart {
            lsn: lsn(10, SEG - 0x100),
            total_len: Some(300),
            rmid: Some(1),
            info: Some(0),
            xid: Some(1099),
            bytes: None,
        })
    });
    assert_eq!(needs(cat.plan(time(tm(10, 30)))), vec![(1, 10)]);
    // Decoded: the stop lies before the crossing record, so 11 is not needed.
    let decoded = cat.clone().decode(
        1,
        10,
        &[(0x200, 1000, 1, true), (0x300, 1001, 40, true)],
        &[],
    );
    let p = ok(decoded.plan(time(tm(10, 30))));
    assert_eq!(p.stop.lsn, Some(lsn(10, 0x300)));
    // Decoded and the stop is the crossing record: 11 is missing.
    let crossing = cat
        .clone()
        .decode(1, 10, &[(SEG - 0x100, 1001, 40, true)], &[]);
    let r = refused(crossing.plan(time(tm(10, 30))), RefusalKind::WalGap);
    assert!(r.message.contains(&name(1, 11)));
    // With 11 archived, it joins the range.
    let p = ok(cat.segs(1, 11..=11).plan(time(tm(10, 30))));
    assert_eq!(p.wal[0].last, name(1, 11));
}

#[test]
fn a_decoded_commit_before_the_consistent_point_past_the_target_moves_to_an_older_backup() {
    // Segment 6 (inside b6's backup) holds a commit stamped after b6's stop time: clocks
    // apart. Replay from b6 would stop there, before consistency.
    let cat = simple().decode(
        1,
        6,
        &[(0x1000, 650, 5, true), (0x2000, 651, 80, true)],
        &[],
    );
    let p = ok(cat.plan(time(tm(7, 10))));
    assert_eq!(p.backup.id, "b2");
    assert_eq!(p.stop.lsn, Some(lsn(6, 0x2000)));
}

#[test]
fn unindexed_segments_are_asked_for_in_batches_in_replay_order() {
    // An archive from before the content index: 40 segments, none indexed.
    let mut cat = Cat::new().segs(1, 1..=40).backup("b1", 1, 1);
    for segno in 1..=40 {
        cat = cat.not_indexed(1, segno);
    }
    let first = needs(cat.plan(time(tm(30, 30))));
    assert_eq!(first, (2..=17).map(|n| (1, n)).collect::<Vec<_>>());
    // Decoded, the next batch; never the same segment twice.
    for segno in 2..=17 {
        cat = cat.decode(1, segno, &[(0x200, 1, 1, true), (0x300, 2, 59, true)], &[]);
    }
    let second = needs(cat.plan(time(tm(30, 30))));
    assert_eq!(second, (18..=33).map(|n| (1, n)).collect::<Vec<_>>());
    for segno in 18..=33 {
        cat = cat.decode(1, segno, &[(0x200, 1, 1, true), (0x300, 2, 59, true)], &[]);
    }
    let p = ok(cat.plan(time(tm(30, 30))));
    assert_eq!(p.stop.lsn, Some(lsn(30, 0x300)));
}

// ----- xid targets -----

#[test]
fn xid_target_asks_for_candidate_segments_then_finds_the_exact_record() {
    let cat = simple();
    // Xid 850 is in segment 8's range only.
    assert_eq!(needs(cat.plan(xid(850))), vec![(1, 8)]);
    let cat = cat.decode(
        1,
        8,
        &[(0x1000, 849, 10, true), (0x2000, 850, 12, true)],
        &[],
    );
    let p = ok(cat.plan(xid(850)));
    assert_eq!(p.stop.lsn, Some(lsn(8, 0x2000)));
    assert_eq!(p.stop.time, Some(tm(8, 12)));
    assert!(p
        .stop
        .description
        .starts_with("after the commit of xid 850"));
    assert_eq!(setting(&p, "recovery_target_xid"), "850");
    assert_eq!(setting(&p, "recovery_target_inclusive"), "on");
    let p = ok(cat.plan(xid_excl(850)));
    assert!(p.stop.description.starts_with("before"));
    assert_eq!(setting(&p, "recovery_target_inclusive"), "off");
}

#[test]
fn xid_target_that_aborted_warns() {
    let cat = simple().decode(1, 8, &[(0x2000, 850, 12, false)], &[]);
    let p = ok(cat.plan(xid(850)));
    assert!(
        p.warnings.iter().any(|w| w.contains("aborted")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn xid_target_not_archived_is_beyond_the_archive() {
    let r = refused(simple().plan(xid(5000)), RefusalKind::BeyondArchive);
    assert!(r.message.contains("transaction 5000"));
    assert!(
        r.nearest.iter().any(|n| n.contains("xids 600 to 1099")),
        "{:?}",
        r.nearest
    );
}

#[test]
fn xid_completed_before_the_newest_backups_consistent_point_uses_an_older_backup() {
    // Xid 650 completes in segment 6 (b6 starts there, is consistent in 7): PostgreSQL would
    // stop before b6 is consistent; b2 reaches it.
    let cat = simple().decode(1, 6, &[(0x1000, 650, 5, true)], &[]);
    let p = ok(cat.plan(xid(650)));
    assert_eq!(p.backup.id, "b2");
    // Forced to b6, it is refused.
    let r = refused(
        cat.plan_with(xid(650), |r| r.backup = Some("b6".into())),
        RefusalKind::BeforeFirstBackup,
    );
    assert!(r.message.contains("consistent point"));
}

#[test]
fn xid_before_the_newest_backups_start_asks_for_the_older_backups_segments() {
    // Xid 450 (segment 4): from b6 there is no candidate; from b2, segment 4 is one.
    assert_eq!(needs(simple().plan(xid(450))), vec![(1, 4)]);
}

// ----- name targets -----

fn with_restore_point(cat: Cat, segno: u64, offset: u64, n: &str) -> Cat {
    cat.edit(1, segno, |s| {
        s.restore_points.push(RestorePointAt {
            lsn: lsn(segno, offset),
            time: tm(segno, 30),
            name: n.into(),
        })
    })
}

#[test]
fn name_target_stops_at_the_restore_point() {
    let cat = with_restore_point(simple(), 8, 0x5000, "before-migration");
    let p = ok(cat.plan(Target::Name("before-migration".into())));
    assert_eq!(p.backup.id, "b6");
    assert_eq!(p.stop.lsn, Some(lsn(8, 0x5000)));
    assert_eq!(setting(&p, "recovery_target_name"), "before-migration");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn a_repeated_name_warns_and_stops_at_the_first_after_the_backup_start() {
    let cat = with_restore_point(simple(), 4, 0x5000, "daily");
    let cat = with_restore_point(cat, 8, 0x5000, "daily");
    let cat = with_restore_point(cat, 9, 0x5000, "daily");
    let p = ok(cat.plan(Target::Name("daily".into())));
    assert_eq!(p.backup.id, "b6");
    assert_eq!(p.stop.lsn, Some(lsn(8, 0x5000)));
    let w = p
        .warnings
        .iter()
        .find(|w| w.contains("3 times"))
        .expect("warned");
    assert!(w.contains(&lsn(8, 0x5000).to_string()));
    // From b2 replay meets the one in segment 4 first.
    let p = ok(cat.plan_with(Target::Name("daily".into()), |r| {
        r.backup = Some("b2".into())
    }));
    assert_eq!(p.stop.lsn, Some(lsn(4, 0x5000)));
}

#[test]
fn a_name_met_before_the_consistent_point_is_refused_for_that_backup() {
    // In segment 6 after b6's start, before its consistent point (early in 7).
    let cat = with_restore_point(simple(), 6, 0x5000, "x");
    let p = ok(cat.plan(Target::Name("x".into())));
    assert_eq!(p.backup.id, "b2");
    let r = refused(
        cat.plan_with(Target::Name("x".into()), |r| r.backup = Some("b6".into())),
        RefusalKind::BeforeFirstBackup,
    );
    assert!(r.message.contains("before its consistent point"));
}

#[test]
fn an_unknown_name_is_beyond_the_archive_and_lists_the_names_there() {
    let cat = with_restore_point(simple(), 8, 0x5000, "a");
    let r = refused(
        cat.plan(Target::Name("b".into())),
        RefusalKind::BeyondArchive,
    );
    assert!(r.message.contains("\"b\""));
    assert!(r
        .nearest
        .iter()
        .any(|n| n.contains("restore points archived") && n.contains('a')));
}

#[test]
fn omitted_restore_points_and_unindexed_segments_are_read_for_a_name() {
    let cat = simple()
        .edit(1, 7, |s| s.restore_points_omitted = 3)
        .not_indexed(1, 8);
    let cat = with_restore_point(cat, 9, 0x5000, "x");
    assert_eq!(
        needs(cat.plan(Target::Name("x".into()))),
        vec![(1, 7), (1, 8)]
    );
    // Decoded: the omitted list of 7 holds "x".
    let cat = cat
        .decode(1, 7, &[], &[(0x9000, 10, "y"), (0xA000, 11, "x")])
        .decode(1, 8, &[], &[]);
    let p = ok(cat.plan(Target::Name("x".into())));
    assert_eq!(p.stop.lsn, Some(lsn(7, 0xA000)));
    assert!(
        p.warnings.iter().any(|w| w.contains("2 times")),
        "{:?}",
        p.warnings
    );
}

// ----- LSN, immediate, latest -----

#[test]
fn lsn_target_is_proven_by_a_record_at_or_after_it() {
    let p = ok(simple().plan(at_lsn(lsn(8, 0x1234))));
    assert_eq!(p.backup.id, "b6");
    assert_eq!(p.wal[0].last, name(1, 8));
    assert_eq!(
        setting(&p, "recovery_target_lsn"),
        lsn(8, 0x1234).to_string()
    );
    let p = ok(simple().plan(at_lsn_excl(lsn(8, 0x1234))));
    assert!(p.stop.description.starts_with("before"));
    assert_eq!(setting(&p, "recovery_target_inclusive"), "off");
}

#[test]
fn lsn_target_after_a_segments_last_record_needs_the_next_segment() {
    // After segment 10's last record: the stop record is in 11, not archived.
    let r = refused(
        simple().plan(at_lsn(lsn(10, SEG - 0x80))),
        RefusalKind::BeyondArchive,
    );
    assert!(r.message.contains("LSN"));
    let p = ok(simple().plan(at_lsn(lsn(9, SEG - 0x80))));
    assert_eq!(p.wal[0].last, name(1, 10));
    // The last record that starts in 9 continues into 10: 10 is needed and archived.
    let cat = simple().edit(1, 9, |s| {
        s.last_record = Some(lsn(9, SEG - 0x800));
        s.crossing_start = Some(CrossingStart {
            lsn: lsn(9, SEG - 0x80),
            total_len: Some(400),
            rmid: Some(1),
            info: Some(0),
            xid: None,
            bytes: None,
        });
    });
    let p = ok(cat.plan(at_lsn(lsn(9, SEG - 0x100))));
    assert_eq!(p.wal[0].last, name(1, 10));
    assert_eq!(p.stop.lsn, None);
    // Not indexed and the last: read it.
    let cat = simple().not_indexed(1, 10);
    assert_eq!(needs(cat.plan(at_lsn(lsn(10, 0x1000)))), vec![(1, 10)]);
}

#[test]
fn lsn_target_before_the_consistent_point_uses_an_older_backup_or_is_refused() {
    let p = ok(simple().plan(at_lsn(lsn(7, 0x50))));
    assert_eq!(p.backup.id, "b2");
    let r = refused(
        simple().plan(at_lsn(lsn(3, 0x50))),
        RefusalKind::BeforeFirstBackup,
    );
    assert!(r.nearest[0].contains("b2"));
}

#[test]
fn immediate_stops_at_the_newest_backups_consistent_point() {
    let p = ok(simple().plan(Target::Immediate));
    assert_eq!(p.backup.id, "b6");
    assert_eq!(p.stop.lsn, Some(lsn(7, 0x100)));
    assert_eq!(p.wal[0].first, name(1, 6));
    assert_eq!(p.wal[0].last, name(1, 7));
    assert_eq!(setting(&p, "recovery_target"), "immediate");
    // A missing segment inside the newest backup: the older one, and a warning why.
    let cat = simple().drop_seg(1, 7);
    let p = ok(cat.plan(Target::Immediate));
    assert_eq!(p.backup.id, "b2");
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("b6") && w.contains(&name(1, 7))),
        "{:?}",
        p.warnings
    );
    let r = refused(
        cat.plan_with(Target::Immediate, |r| r.backup = Some("b6".into())),
        RefusalKind::WalGap,
    );
    assert!(r.message.contains(&name(1, 7)));
}

#[test]
fn latest_reaches_the_end_of_contiguous_wal() {
    let p = ok(simple().plan(Target::Latest));
    assert_eq!(p.backup.id, "b6");
    assert_eq!(p.stop.lsn, Some(lsn(10, SEG - 0x100)));
    assert_eq!(p.wal[0].last, name(1, 10));
    assert!(p.settings[..5]
        .iter()
        .all(|(k, v)| k.starts_with("recovery_target") && v.is_empty()));
    assert!(p.warnings.iter().any(|w| w.contains("opens for writes")));
}

#[test]
fn latest_refuses_a_gap_with_wal_after_it_and_reads_unindexed_segments() {
    let r = refused(
        simple().drop_seg(1, 8).plan(Target::Latest),
        RefusalKind::WalGap,
    );
    assert!(r.message.contains(&name(1, 8)));
    assert!(
        r.nearest[0].contains(&lsn(7, SEG - 0x100).to_string()),
        "{:?}",
        r.nearest
    );
    assert_eq!(
        needs(simple().not_indexed(1, 9).plan(Target::Latest)),
        vec![(1, 9)]
    );
}

// ----- settings, backups, warnings -----

#[test]
fn settings_name_every_target_kind_once() {
    let p = ok(simple().plan_with(time(tmu(8, 0, 123_456)), |r| {
        r.action = TargetAction::Promote
    }));
    let keys: Vec<&str> = p.settings.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "recovery_target_time",
            "recovery_target",
            "recovery_target_lsn",
            "recovery_target_name",
            "recovery_target_xid",
            "recovery_target_timeline",
            "recovery_target_action",
            "recovery_target_inclusive"
        ]
    );
    assert_eq!(p.settings[0].1, "2026-12-06 00:08:00.123456+00");
    assert!(p.settings[1..5].iter().all(|(_, v)| v.is_empty()));
    assert_eq!(setting(&p, "recovery_target_timeline"), "1");
    assert_eq!(setting(&p, "recovery_target_action"), "promote");
}

#[test]
fn no_backup_or_an_unknown_backup_is_refused() {
    let r = refused(
        Cat::new().segs(1, 1..=3).plan(Target::Latest),
        RefusalKind::NoBackup,
    );
    assert!(r.message.contains("no backup"));
    let r = refused(
        simple().plan_with(Target::Latest, |r| r.backup = Some("nope".into())),
        RefusalKind::NoBackup,
    );
    assert!(r.message.contains("nope"));
    assert_eq!(r.nearest.len(), 2);
}

#[test]
fn a_chosen_backup_consistent_after_the_target_is_refused() {
    let r = refused(
        simple().plan_with(time(tm(5, 30)), |r| r.backup = Some("b6".into())),
        RefusalKind::BeforeFirstBackup,
    );
    assert!(r.message.contains("b6"));
    assert!(r.nearest[0].contains("without --backup"), "{:?}", r.nearest);
}

#[test]
fn extensions_missing_from_the_binaries_are_warned() {
    let p = ok(simple().plan_with(Target::Latest, |r| {
        r.available_extensions = Some(BTreeSet::from(["plpgsql".to_string()]))
    }));
    assert!(
        p.warnings.iter().any(|w| w.contains("postgis")),
        "{:?}",
        p.warnings
    );
    let p = ok(simple().plan_with(Target::Latest, |r| {
        r.available_extensions = Some(BTreeSet::from([
            "plpgsql".to_string(),
            "postgis".to_string(),
        ]))
    }));
    assert!(!p.warnings.iter().any(|w| w.contains("extensions")));
}

// ----- timelines -----

/// Timeline 1 with segments 1..=8, promoted to 2 in segment 5 (2's file of 5 holds 1's
/// WAL up to the fork), timeline 2 segments 5..=9; backups in 2 (timeline 1) and 7 (2).
fn promoted() -> Cat {
    Cat::new()
        .segs(1, 1..=8)
        .segs(2, 5..=9)
        .history(2, &[(1, lsn(5, 0x4000))])
        .backup("b2", 1, 2)
}

#[test]
fn latest_follows_the_promotion_reading_the_new_timelines_file_at_the_switch() {
    let p = ok(promoted().plan(time(tm(6, 30))));
    assert_eq!(p.timeline, 2);
    assert_eq!(
        p.timeline_path,
        vec![
            TimelineStep {
                timeline: 1,
                until: Some(lsn(5, 0x4000))
            },
            TimelineStep {
                timeline: 2,
                until: None
            }
        ]
    );
    assert_eq!(p.wal.len(), 2);
    assert_eq!(
        (p.wal[0].first.as_str(), p.wal[0].last.as_str()),
        (name(1, 2).as_str(), name(1, 4).as_str())
    );
    assert_eq!(
        (p.wal[1].first.as_str(), p.wal[1].last.as_str()),
        (name(2, 5).as_str(), name(2, 6).as_str())
    );
    assert_eq!(setting(&p, "recovery_target_timeline"), "2");
}

#[test]
fn the_old_timeline_going_on_past_the_fork_is_named_and_not_followed() {
    // Timeline 1 holds segments 6-8 after the fork to 2 (in 5): not replayed, and said.
    let p = ok(promoted().plan(time(tm(6, 30))));
    assert_eq!(p.timeline, 2);
    let w = p
        .warnings
        .iter()
        .find(|w| w.contains("goes on past its fork"))
        .unwrap_or_else(|| panic!("{:?}", p.warnings));
    assert!(
        w.contains(&name(1, 8)) && w.contains("--target-timeline 1"),
        "{w}"
    );
    // Without WAL of timeline 1 after the fork's segment, nothing to say.
    let p = ok(promoted()
        .drop_seg(1, 6)
        .drop_seg(1, 7)
        .drop_seg(1, 8)
        .plan(time(tm(6, 30))));
    assert!(!p
        .warnings
        .iter()
        .any(|w| w.contains("goes on past its fork")));
}

#[test]
fn a_point_on_the_old_timeline_after_the_fork_needs_that_timeline() {
    let p = ok(promoted().plan_with(time(tm(7, 30)), |r| r.timeline = TimelineRequest::Exact(1)));
    assert_eq!(p.timeline, 1);
    assert_eq!(p.wal.len(), 1);
    assert_eq!(p.wal[0].last, name(1, 7));
    assert_eq!(setting(&p, "recovery_target_timeline"), "1");
    // `current` is the backup's timeline.
    let p = ok(promoted().plan_with(time(tm(7, 30)), |r| r.timeline = TimelineRequest::Current));
    assert_eq!(p.timeline, 1);
}

#[test]
fn the_switch_segment_must_come_from_the_new_timeline() {
    // 2's segment 5 missing: PostgreSQL would fall back to 1's, which holds 1's WAL after
    // the fork.
    let r = refused(
        promoted().drop_seg(2, 5).plan(time(tm(6, 30))),
        RefusalKind::WalGap,
    );
    assert!(r.message.contains(&name(2, 5)), "{}", r.message);
}

#[test]
fn a_backup_started_after_the_fork_is_not_on_the_new_timelines_path() {
    // b6 starts on timeline 1 after timeline 2 left it.
    let cat = promoted().backup("b6", 1, 6);
    let p = ok(cat.plan(time(tm(7, 30))));
    assert_eq!(p.backup.id, "b2");
    // Alone, it is refused, and the way to its own timeline is named.
    let r = refused(
        cat.plan_with(time(tm(7, 30)), |r| r.backup = Some("b6".into())),
        RefusalKind::UnknownTimeline,
    );
    assert!(
        r.message.contains("after timeline 2 forked off it"),
        "{}",
        r.message
    );
    assert!(r.nearest.iter().any(|n| n.contains("--target-timeline 1")));
}

#[test]
fn a_partial_file_is_not_the_segment_replay_asks_for() {
    // Timeline 1's last segment before the promotion, archived as .partial by the old
    // primary: recovering timeline 1 past the fork cannot use it.
    let mut cat = promoted().drop_seg(1, 6).drop_seg(1, 7).drop_seg(1, 8);
    cat.0.segments.get_mut(&(1, 5)).unwrap().name = format!("{}.partial", name(1, 5));
    let p = ok(cat.plan_with(Target::Latest, |r| r.timeline = TimelineRequest::Exact(1)));
    assert_eq!(p.wal[0].last, name(1, 4));
    let r = refused(
        cat.plan_with(time(tm(5, 30)), |r| r.timeline = TimelineRequest::Exact(1)),
        RefusalKind::BeyondArchive,
    );
    assert!(r.nearest[0].contains(&name(1, 4)), "{:?}", r.nearest);
    // Timeline 2 reads its own file of segment 5.
    ok(cat.plan(Target::Latest));
}

#[test]
fn a_backup_on_the_new_timeline_is_preferred_when_newer() {
    let cat = promoted().backup("b7", 2, 7);
    let p = ok(cat.plan(time(tm(8, 30))));
    assert_eq!(p.backup.id, "b7");
    assert_eq!(
        p.timeline_path,
        vec![TimelineStep {
            timeline: 2,
            until: None
        }]
    );
    assert_eq!(
        p.wal,
        vec![WalRange {
            timeline: 2,
            first: name(2, 7),
            last: name(2, 8),
            segments: 2
        }]
    );
}

#[test]
fn other_branches_after_the_backup_are_named() {
    // Timeline 3 also branches off 1, earlier than 2; latest is 3, and 2 is named.
    let cat = promoted().segs(3, 4..=6).history(3, &[(1, lsn(4, 0x100))]);
    let p = ok(cat.plan(time(tm(5, 30))));
    assert_eq!(p.timeline, 3);
    assert!(p.other_branches.is_empty(), "2 forks off 1 after 3 left it");
    // Following 2 explicitly: 3 branched off the path after the backup's start.
    let p = ok(cat.plan_with(time(tm(6, 30)), |r| r.timeline = TimelineRequest::Exact(2)));
    assert_eq!(
        p.other_branches,
        vec![Branch {
            timeline: 3,
            parent: 1,
            fork: lsn(4, 0x100)
        }]
    );
    assert!(p
        .warnings
        .iter()
        .any(|w| w.contains("timeline 3") && w.contains("follows timeline 2")));
}

#[test]
fn a_hole_in_the_history_chain_is_refused_for_latest() {
    // 3.history is missing; 4 exists (forked off 2). PostgreSQL's probe would land on 2.
    let cat = promoted().segs(4, 9..=10).history(
        4,
        &[(1, lsn(5, 0x4000)), (2, lsn(9, 0x100)), (3, lsn(9, 0x200))],
    );
    let r = refused(cat.plan(time(tm(9, 30))), RefusalKind::HistoryHole);
    assert!(r.message.contains("00000003.history"), "{}", r.message);
    assert!(r.nearest.iter().any(|n| n.contains("--target-timeline 4")));
    assert!(r.nearest.iter().any(|n| n.contains("--target-timeline 2")));
}

#[test]
fn a_timeline_without_a_history_file_is_a_hole_too() {
    // Segments of timeline 3 are archived, its history file is not.
    let cat = promoted().segs(3, 9..=10);
    let r = refused(cat.plan(Target::Latest), RefusalKind::HistoryHole);
    assert!(r.message.contains("00000003.history"));
    // Timeline 3 cannot be followed without its history file: not suggested.
    assert!(
        !r.nearest.iter().any(|n| n.contains("--target-timeline 3")),
        "{:?}",
        r.nearest
    );
    assert!(r.nearest.iter().any(|n| n.contains("--target-timeline 2")));
}

#[test]
fn an_explicit_timeline_without_history_file_and_backup_is_a_hole() {
    let cat = promoted().segs(3, 9..=10);
    let r = refused(
        cat.plan_with(Target::Latest, |r| r.timeline = TimelineRequest::Exact(3)),
        RefusalKind::HistoryHole,
    );
    assert!(r.message.contains("00000003.history"), "{}", r.message);
    assert!(r.nearest.iter().any(|n| n.contains("--target-timeline 1")));
}

#[test]
fn an_unknown_timeline_is_refused_with_the_ones_there() {
    let r = refused(
        promoted().plan_with(Target::Latest, |r| r.timeline = TimelineRequest::Exact(7)),
        RefusalKind::UnknownTimeline,
    );
    assert!(r.message.contains("timeline 7"));
    assert!(r.nearest[0].contains("1, 2"));
}

// ----- windows -----

#[test]
fn windows_split_at_gaps_and_show_the_fork() {
    let cat = promoted()
        .backup("b7", 2, 7)
        .segs(2, 10..=12)
        .drop_seg(2, 10)
        .backup("b11", 2, 11);
    let w = windows(&cat.0);
    assert_eq!(w.len(), 2);
    let one = &w[0];
    assert_eq!(one.timeline, 1);
    assert_eq!(one.parent, None);
    assert_eq!(one.windows.len(), 1);
    assert_eq!(one.windows[0].from_lsn, lsn(3, 0x100));
    assert_eq!(one.windows[0].to_lsn, lsn(8, SEG - 0x100));
    assert_eq!(one.windows[0].to_time, Some(utc(tm(8, 59))));
    let two = &w[1];
    assert_eq!(
        two.parent,
        Some(Branch {
            timeline: 2,
            parent: 1,
            fork: lsn(5, 0x4000)
        })
    );
    assert_eq!(two.windows.len(), 2, "{:#?}", two.windows);
    assert_eq!(two.windows[0].from_lsn, lsn(3, 0x100));
    assert_eq!(two.windows[0].to_lsn, lsn(9, SEG - 0x100));
    assert_eq!(two.windows[0].gap_at, Some(name(2, 10)));
    assert_eq!(two.windows[1].from_lsn, lsn(12, 0x100));
    assert_eq!(two.windows[1].to_lsn, lsn(12, SEG - 0x100));
    assert_eq!(two.windows[1].gap_at, None);
}

// ----- the benchmark catalog -----

#[test]
fn the_synthetic_catalog_plans_every_target_kind() {
    let snap = synthetic::catalog(2000, 50);
    assert_eq!(snap.segments.len(), 2000);
    assert_eq!(snap.backups.len(), 50);
    let mid = utc(synthetic::segment_time(1500, 30));
    let p = ok(plan(
        &snap,
        &req(Target::Time {
            at: mid,
            exclusive: false,
        }),
    ));
    assert_eq!(p.stop.lsn, None);
    assert!(p.wal_segments < 60);
    ok(plan(&snap, &req(Target::Latest)));
    ok(plan(&snap, &req(Target::Name("rp-1500".into()))));
    needs(plan(
        &snap,
        &req(Target::Xid {
            xid: 150_050,
            exclusive: false,
        }),
    ));
    assert!(windows(&snap)[0].windows.len() == 1);
}

// ----- parsers -----

fn p(text: &str) -> Result<DateTime<Utc>, TargetParseError> {
    parse_target_time(text, &FixedOffset::east_opt(3600).unwrap())
}

fn utc_of(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn times_are_read_in_rfc3339_and_postgresql_forms() {
    let cases = [
        ("2026-12-06T10:32:07Z", "2026-12-06T10:32:07Z"),
        (
            "2026-12-06T10:32:07.123456+00:00",
            "2026-12-06T10:32:07.123456Z",
        ),
        ("2026-12-06 10:32:07+02", "2026-12-06T08:32:07Z"),
        ("2026-12-06 10:32:07.123+05:30", "2026-12-06T05:02:07.123Z"),
        ("2026-12-06 10:32:07 +0530", "2026-12-06T05:02:07Z"),
        ("2026-12-06 10:32:07-08", "2026-12-06T18:32:07Z"),
        ("2026-12-06 10:32:07-8", "2026-12-06T18:32:07Z"),
        ("2026-12-06 10:32:07+05:30:15", "2026-12-06T05:01:52Z"),
        ("2026-12-06 10:32:07 UTC", "2026-12-06T10:32:07Z"),
        ("2026-12-06 10:32:07 gmt", "2026-12-06T10:32:07Z"),
        ("2026-12-06t10:32:07z", "2026-12-06T10:32:07Z"),
        // No zone: the local one (+01 here).
        ("2026-12-06 10:32:07", "2026-12-06T09:32:07Z"),
        ("2026-12-06 10:32", "2026-12-06T09:32:00Z"),
        ("2026-12-06", "2026-12-05T23:00:00Z"),
        ("  2026-12-06 10:32:07.5  ", "2026-12-06T09:32:07.5Z"),
    ];
    for (text, want) in cases {
        assert_eq!(p(text).unwrap(), utc_of(want), "{text}");
    }
}

#[test]
fn fractions_round_to_microseconds() {
    assert_eq!(
        p("2026-12-06 10:32:07.1234565Z").unwrap(),
        utc_of("2026-12-06T10:32:07.123457Z")
    );
    assert_eq!(
        p("2026-12-06 10:32:59.9999999Z").unwrap(),
        utc_of("2026-12-06T10:33:00Z")
    );
}

#[test]
fn bad_times_are_refused_with_a_reason() {
    for (text, why) in [
        ("yesterday", "no year"),
        ("2026-02-30 10:00:00Z", "not a date"),
        ("2026-12-06 25:00:00Z", "not a time of day"),
        ("2026-12-06 10:32:07 Europe/Paris", "zone name"),
        ("2026-12-06 10:32:07+16", "out of range"),
        ("2026-12-06 10:32:07+02junk", "after the offset"),
        ("2026-12-06 10:3", "no minutes"),
        ("2026-12-06 10:32:07+05:3", "no minutes"),
    ] {
        let e = p(text).unwrap_err().to_string();
        assert!(e.contains(why), "{text}: {e}");
        assert!(e.contains(text.trim()) || e.contains(text), "{e}");
    }
}

/// Central European time in 2026: +01, and +02 from 29 March 01:00 UTC to 25 October
/// 01:00 UTC.
#[derive(Clone, Copy, Debug)]
struct Cet;

impl Cet {
    fn switch(month: u32, day: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, month, day)
            .unwrap()
            .and_hms_opt(1, 0, 0)
            .unwrap()
    }
}

impl TimeZone for Cet {
    type Offset = FixedOffset;

    fn from_offset(_: &FixedOffset) -> Cet {
        Cet
    }

    fn offset_from_local_date(&self, local: &NaiveDate) -> MappedLocalTime<FixedOffset> {
        self.offset_from_local_datetime(&local.and_hms_opt(12, 0, 0).unwrap())
    }

    fn offset_from_local_datetime(&self, local: &NaiveDateTime) -> MappedLocalTime<FixedOffset> {
        let fits: Vec<FixedOffset> = [3600, 7200]
            .into_iter()
            .map(|s| FixedOffset::east_opt(s).unwrap())
            .filter(|o| {
                let as_utc = *local - Duration::seconds(i64::from(o.local_minus_utc()));
                self.offset_from_utc_datetime(&as_utc) == *o
            })
            .collect();
        match fits[..] {
            [] => MappedLocalTime::None,
            [one] => MappedLocalTime::Single(one),
            [a, b, ..] => MappedLocalTime::Ambiguous(a, b),
        }
    }

    fn offset_from_utc_date(&self, utc: &NaiveDate) -> FixedOffset {
        self.offset_from_utc_datetime(&utc.and_hms_opt(0, 0, 0).unwrap())
    }

    fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> FixedOffset {
        let summer = *utc >= Cet::switch(3, 29) && *utc < Cet::switch(10, 25);
        FixedOffset::east_opt(if summer { 7200 } else { 3600 }).unwrap()
    }
}

#[test]
fn local_times_that_daylight_saving_repeats_or_skips_are_refused() {
    let e = parse_target_time("2026-10-25 02:30:00", &Cet)
        .unwrap_err()
        .to_string();
    assert!(e.contains("ambiguous"), "{e}");
    assert!(e.contains("+02:00") && e.contains("+01:00"), "{e}");
    let e = parse_target_time("2026-03-29 02:30:00", &Cet)
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not exist"), "{e}");
    assert_eq!(
        parse_target_time("2026-07-01 12:00:00", &Cet).unwrap(),
        utc_of("2026-07-01T10:00:00Z")
    );
    // With an offset the local zone does not matter.
    assert_eq!(
        parse_target_time("2026-10-25 02:30:00+01", &Cet).unwrap(),
        utc_of("2026-10-25T01:30:00Z")
    );
}

#[test]
fn the_other_flags_parse() {
    assert_eq!(
        parse_target_lsn(" 16/B374D848 ").unwrap(),
        Lsn(0x16_B374_D848)
    );
    assert!(parse_target_lsn("16-B374")
        .unwrap_err()
        .to_string()
        .contains("X/X"));
    assert_eq!(parse_target_xid("745").unwrap(), 745);
    // A full xid with epoch 1 is its low 32 bits, as PostgreSQL reads it.
    assert_eq!(parse_target_xid("4294968041").unwrap(), 745);
    assert!(parse_target_xid("2").is_err());
    assert!(parse_target_xid("-5").is_err());
    assert!(parse_target_xid("0x10").is_err());
    assert_eq!(
        parse_target_timeline("latest").unwrap(),
        TimelineRequest::Latest
    );
    assert_eq!(
        parse_target_timeline("Current").unwrap(),
        TimelineRequest::Current
    );
    assert_eq!(
        parse_target_timeline("3").unwrap(),
        TimelineRequest::Exact(3)
    );
    assert!(parse_target_timeline("0").is_err());
    assert!(parse_target_timeline("newest").is_err());
    assert_eq!(
        parse_target_action("promote").unwrap(),
        TargetAction::Promote
    );
    assert_eq!(parse_target_action("PAUSE").unwrap(), TargetAction::Pause);
    assert_eq!(
        parse_target_action("shutdown").unwrap(),
        TargetAction::Shutdown
    );
    assert!(parse_target_action("stop").is_err());
    assert_eq!(
        parse_target_keyword("immediate").unwrap(),
        Target::Immediate
    );
    assert_eq!(parse_target_keyword("latest").unwrap(), Target::Latest);
    assert!(parse_target_keyword("now").is_err());
    assert_eq!(
        time_setting(utc_of("2026-12-06T10:32:07.123Z")),
        "2026-12-06 10:32:07.123000+00"
    );
}
