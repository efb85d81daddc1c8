//! The retention policy (pure): which backups a policy keeps, why, and what stays
//! restorable afterwards. `tidemark expire` (issue 16) applies the decision; nothing here
//! reads or deletes anything, and `now` is an argument.
//!
//! A policy combines any of four rules, and a backup kept by one is kept:
//!
//! - **count** `N`: the `N` newest backups;
//! - **recovery window** `W`: every moment of the last `W` stays restorable. That needs
//!   the newest backup whose consistent point is at or before `now - W` (the window's
//!   *anchor*), every newer one, and all WAL from the anchor's start on. It is not "delete
//!   backups older than `W`": that would leave the start of the window with no backup to
//!   replay from;
//! - **tiers** (daily, weekly, monthly, yearly: `N` of each): in each of the `N` most recent
//!   days (ISO weeks, months, years, in UTC) that have a backup, the newest backup of it;
//! - **forever**: backups named by id or label.
//!
//! The newest backup is always kept, whatever the policy, and an empty policy is refused:
//! a missing setting must never read as "keep nothing".
//!
//! Backups are ordered by their consistent point (stop time, then stop LSN), never by id
//! or name. The decision says from which backup on WAL must be kept without a gap (the
//! oldest backup kept by the count or the window: every moment from its consistent point
//! to the newest archived commit stays restorable), and the window that guarantees;
//! backups kept only by a tier or forever keep the WAL that makes them consistent and are
//! restorable to that point. [`wal_to_expire`] turns a decision and the catalog snapshot
//! into the segments and history files that may go, timeline by timeline.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Datelike, Duration, Utc};
use tidemark_pg::Lsn;

use crate::plan::timelines::{known_timelines, TimelinePath};
use crate::plan::CatalogSnapshot;

/// How many backups of each calendar period to keep (0: that tier is off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tiers {
    /// Days (UTC).
    pub daily: u32,
    /// ISO weeks.
    pub weekly: u32,
    /// Months.
    pub monthly: u32,
    /// Years.
    pub yearly: u32,
}

impl Tiers {
    fn is_empty(&self) -> bool {
        self.daily == 0 && self.weekly == 0 && self.monthly == 0 && self.yearly == 0
    }
}

/// A retention policy (what the settings `retention_count`, `retention_window` and
/// `retention_tiers` of issue 16 will say, and the backups kept forever).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the newest `N` backups.
    pub count: Option<u32>,
    /// Keep every moment of the last `window` restorable.
    pub window: Option<Duration>,
    /// Keep the newest backup of so many calendar periods.
    pub tiers: Tiers,
    /// Keep these backups (ids or labels) forever.
    pub forever: BTreeSet<String>,
}

impl RetentionPolicy {
    /// Whether no rule is set.
    pub fn is_empty(&self) -> bool {
        self.count.is_none() && self.window.is_none() && self.tiers.is_empty()
    }
}

/// What the policy needs to know of a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetainedBackup {
    /// Its id.
    pub id: String,
    /// Its label, if it was given one.
    pub label: Option<String>,
    /// Where replay from it starts.
    pub start_lsn: Lsn,
    /// The timeline it starts on.
    pub timeline: u32,
    /// Its consistent point.
    pub stop_lsn: Lsn,
    /// When it reached its consistent point.
    pub stop_time: DateTime<Utc>,
}

/// Why a backup is kept.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeptBecause {
    /// The newest backup is always kept.
    Newest,
    /// Among the `count` newest (its rank, 1 = newest).
    Count(u32),
    /// Inside the recovery window, or its anchor.
    Window,
    /// The newest backup of this period (`"daily 2026-12-06"`, `"weekly 2026-W49"`, …).
    Tier(String),
    /// Named in `forever` (by id or label).
    Forever,
}

impl fmt::Display for KeptBecause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeptBecause::Newest => write!(f, "newest"),
            KeptBecause::Count(rank) => write!(f, "count (#{rank})"),
            KeptBecause::Window => write!(f, "recovery window"),
            KeptBecause::Tier(period) => write!(f, "{period}"),
            KeptBecause::Forever => write!(f, "kept forever"),
        }
    }
}

/// A backup the policy keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kept {
    /// Its id.
    pub id: String,
    /// Every rule that keeps it.
    pub because: Vec<KeptBecause>,
}

/// What a policy decides for a stanza's backups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionDecision {
    /// The backups kept, oldest first.
    pub kept: Vec<Kept>,
    /// The backups the policy lets go, oldest first.
    pub expired: Vec<String>,
    /// The backup from whose start WAL must be kept without a gap (on the timeline line
    /// that leads to the newest backup): the oldest kept by the count or the window, or
    /// the newest backup when neither is set.
    pub continuous_from: String,
    /// Every moment from this one (`continuous_from`'s consistent point) to the newest
    /// archived commit stays restorable.
    pub restorable_since: DateTime<Utc>,
    /// The recovery window the kept backups guarantee at `now`.
    pub guaranteed_window: Duration,
    /// The configured window, when the backups cannot cover it yet (no backup is old
    /// enough): the window is shorter than asked, and nothing is expired for it.
    pub window_short_of: Option<Duration>,
}

/// Why no decision could be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// No rule is configured.
    #[error(
        "no retention policy is configured (retention_count, retention_window or \
         retention_tiers): nothing is expired without one"
    )]
    Empty,
    /// `count = 0` or a window of zero or less.
    #[error("retention {0} must be positive")]
    NotPositive(&'static str),
    /// There are no backups to decide about.
    #[error("the stanza has no backup")]
    NoBackups,
}

/// Applies `policy` to `backups` at `now`.
pub fn decide(
    backups: &[RetainedBackup],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<RetentionDecision, PolicyError> {
    if policy.is_empty() {
        return Err(PolicyError::Empty);
    }
    if policy.count == Some(0) {
        return Err(PolicyError::NotPositive("count"));
    }
    if policy.window.is_some_and(|w| w <= Duration::zero()) {
        return Err(PolicyError::NotPositive("window"));
    }
    // Newest first, by consistent point.
    let mut order: Vec<&RetainedBackup> = backups.iter().collect();
    order.sort_by_key(|b| std::cmp::Reverse((b.stop_time, b.stop_lsn)));
    let Some(newest) = order.first() else {
        return Err(PolicyError::NoBackups);
    };

    let mut reasons: BTreeMap<String, BTreeSet<KeptBecause>> = BTreeMap::new();
    let mut keep = |b: &RetainedBackup, why: KeptBecause| {
        reasons.entry(b.id.clone()).or_default().insert(why);
    };
    keep(newest, KeptBecause::Newest);
    // The oldest backup that WAL must run from without a gap.
    let mut continuous = *newest;

    if let Some(count) = policy.count {
        for (rank, b) in order.iter().take(count as usize).enumerate() {
            keep(b, KeptBecause::Count(rank as u32 + 1));
            continuous = b;
        }
    }

    let mut window_short_of = None;
    if let Some(window) = policy.window {
        let cutoff = now - window;
        for b in &order {
            keep(b, KeptBecause::Window);
            if b.stop_time <= continuous.stop_time {
                continuous = b;
            }
            if b.stop_time <= cutoff {
                // The anchor: replay from it reaches every moment after the cutoff.
                break;
            }
        }
        if order.last().is_some_and(|oldest| oldest.stop_time > cutoff) {
            window_short_of = Some(window);
        }
    }

    for (count, tier) in [
        (policy.tiers.daily, Tier::Daily),
        (policy.tiers.weekly, Tier::Weekly),
        (policy.tiers.monthly, Tier::Monthly),
        (policy.tiers.yearly, Tier::Yearly),
    ] {
        if count == 0 {
            continue;
        }
        // Newest first, so the first backup seen in a period is its newest.
        let mut periods_seen = Vec::new();
        for b in &order {
            let period = tier.period(b.stop_time);
            if periods_seen.contains(&period) {
                continue;
            }
            if periods_seen.len() == count as usize {
                break;
            }
            keep(b, KeptBecause::Tier(period.clone()));
            periods_seen.push(period);
        }
    }

    for b in &order {
        if policy.forever.contains(&b.id)
            || b.label.as_ref().is_some_and(|l| policy.forever.contains(l))
        {
            keep(b, KeptBecause::Forever);
        }
    }

    let mut kept = Vec::new();
    let mut expired = Vec::new();
    for b in order.iter().rev() {
        match reasons.remove(&b.id) {
            Some(why) => kept.push(Kept {
                id: b.id.clone(),
                because: why.into_iter().collect(),
            }),
            None => expired.push(b.id.clone()),
        }
    }
    Ok(RetentionDecision {
        kept,
        expired,
        continuous_from: continuous.id.clone(),
        restorable_since: continuous.stop_time,
        guaranteed_window: (now - continuous.stop_time).max(Duration::zero()),
        window_short_of,
    })
}

/// The WAL a retention decision lets go (see [`wal_to_expire`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalExpiry {
    /// Archived segments (timeline, segment number) that no kept backup and no moment of
    /// the guaranteed window needs, in order.
    pub segments: Vec<(u32, u64)>,
    /// History files (by timeline) that no kept segment or backup needs.
    pub histories: Vec<u32>,
    /// Of the other segment-shaped files passed to [`wal_files_to_expire`] (`.partial`
    /// and `.backup` files, names archived with two contents), the positions (timeline,
    /// segment number) that go by the same rules as a segment there.
    pub others: Vec<(u32, u64)>,
    /// Why no WAL may go at all, when it cannot be decided safely.
    pub held: Option<String>,
}

/// Which archived WAL `decision` lets go, timeline by timeline.
///
/// A segment of timeline `X` stays when any of these holds:
/// - the window's backup (`decision.continuous_from`) can start replay towards `X`
///   (`X`'s history says so) and the segment is at or after that backup's start: every
///   moment after it stays restorable, on the line that leads to now and on any other
///   line that forks off after it (a test restore's timeline, the abandoned rest of a
///   parent); a line that forked off before it is expired, whatever its number;
/// - a kept backup starts or ends on `X` and the segment lies between its start and its
///   consistent point (a backup kept by a tier or forever stays restorable to that point);
/// - `X` has no history file (a hole in the chain: nothing can be proven about it, so
///   nothing of it goes).
///
/// A history file stays while its timeline or a later one on its line keeps a segment or
/// a backup, and always for the newest timeline and its ancestors (they say what "now"
/// is). Nothing at all goes when the window's backup is not in the snapshot.
pub fn wal_to_expire(snapshot: &CatalogSnapshot, decision: &RetentionDecision) -> WalExpiry {
    wal_files_to_expire(snapshot, decision, &BTreeSet::new())
}

/// [`wal_to_expire`], and also which of `others` go: the positions (timeline, segment
/// number) of archived files the snapshot does not list as segments (`.partial` and
/// `.backup` files, a name archived with two contents). Each goes when a segment at its
/// position would; none of them keeps a timeline's history file by itself.
pub fn wal_files_to_expire(
    snapshot: &CatalogSnapshot,
    decision: &RetentionDecision,
    others: &BTreeSet<(u32, u64)>,
) -> WalExpiry {
    let keep = match WalKeep::new(snapshot, decision) {
        Ok(keep) => keep,
        Err(held) => {
            return WalExpiry {
                held: Some(held),
                ..Default::default()
            }
        }
    };
    let mut keeps_wal: BTreeSet<u32> = BTreeSet::new();
    let mut segments = Vec::new();
    for &(tli, segno) in snapshot.segments.keys() {
        if keep.stays(tli, segno) {
            keeps_wal.insert(tli);
        } else {
            segments.push((tli, segno));
        }
    }
    let others = others
        .iter()
        .filter(|&&(tli, segno)| !keep.stays(tli, segno))
        .copied()
        .collect();
    let histories = keep.histories_to_expire(&keeps_wal, known_timelines(snapshot));
    WalExpiry {
        segments,
        histories,
        others,
        held: None,
    }
}

/// The rules of [`wal_files_to_expire`], one archived position at a time, for a caller
/// that walks the WAL index a page at a time instead of holding it (`expire`). It keeps
/// what it needs of the snapshot (backups and history files, not its segments).
#[derive(Clone, Debug)]
pub struct WalKeep {
    /// The snapshot's backups and history files (no segments).
    lines: CatalogSnapshot,
    /// Where the window's backup starts, as a segment number.
    anchor_segno: u64,
    /// Per timeline the snapshot shows: whether the window's backup can start replay
    /// towards it.
    reaches: BTreeMap<u32, bool>,
    /// The window's backup.
    anchor: crate::plan::BackupPoint,
    /// Kept backups: (start timeline, stop timeline, first segment, last segment).
    kept_ranges: Vec<(u32, u32, u64, u64)>,
    /// The timelines kept backups start or end on.
    kept_timelines: BTreeSet<u32>,
}

impl WalKeep {
    /// The rules for `decision` over `snapshot` (its segments are not needed); `Err`
    /// says why no WAL may go at all (the window's backup is not in the snapshot).
    pub fn new(snapshot: &CatalogSnapshot, decision: &RetentionDecision) -> Result<Self, String> {
        let Some(anchor) = snapshot
            .backups
            .iter()
            .find(|b| b.id == decision.continuous_from)
        else {
            return Err(format!(
                "backup {} is not in the catalog: no WAL is expired",
                decision.continuous_from
            ));
        };
        let size = snapshot.segment_size.max(1);
        let kept: BTreeSet<&str> = decision.kept.iter().map(|k| k.id.as_str()).collect();
        let kept_backups = snapshot
            .backups
            .iter()
            .filter(|b| kept.contains(b.id.as_str()));
        let kept_ranges = kept_backups
            .clone()
            .map(|b| {
                (
                    b.timeline,
                    b.stop_timeline,
                    b.start_lsn.0 / size,
                    b.stop_lsn.0 / size,
                )
            })
            .collect();
        let kept_timelines = kept_backups
            .flat_map(|b| [b.timeline, b.stop_timeline])
            .collect();
        let reaches = known_timelines(snapshot)
            .into_iter()
            .map(|tli| (tli, TimelinePath::of(snapshot, tli).admits(anchor).is_ok()))
            .collect();
        Ok(WalKeep {
            lines: CatalogSnapshot {
                system_id: snapshot.system_id,
                segment_size: snapshot.segment_size,
                pg_major: snapshot.pg_major,
                backups: snapshot.backups.clone(),
                histories: snapshot.histories.clone(),
                segments: Default::default(),
            },
            anchor_segno: anchor.start_lsn.0 / size,
            reaches,
            anchor: anchor.clone(),
            kept_ranges,
            kept_timelines,
        })
    }

    /// Whether a file at segment `segno` of timeline `tli` stays (see [`wal_to_expire`]).
    pub fn stays(&self, tli: u32, segno: u64) -> bool {
        let reaches = match self.reaches.get(&tli) {
            Some(r) => *r,
            // A timeline only its segments show: no history file, so no parent.
            None => TimelinePath::of(&self.lines, tli)
                .admits(&self.anchor)
                .is_ok(),
        };
        let from_anchor = reaches && segno >= self.anchor_segno;
        let for_a_backup = self
            .kept_ranges
            .iter()
            .any(|&(start_tli, stop_tli, first, last)| {
                (tli == start_tli || tli == stop_tli) && (first..=last).contains(&segno)
            });
        let unprovable = tli > 1 && !self.lines.histories.contains_key(&tli);
        from_anchor || for_a_backup || unprovable
    }

    /// The history files (by timeline) no kept WAL needs, given `keeps_wal` (the
    /// timelines where a segment stays) and `timelines` (every timeline the archive
    /// shows: its history files, segments and backups).
    pub fn histories_to_expire(
        &self,
        keeps_wal: &BTreeSet<u32>,
        timelines: BTreeSet<u32>,
    ) -> Vec<u32> {
        let mut keeps: BTreeSet<u32> = keeps_wal.clone();
        keeps.extend(&self.kept_timelines);
        // The newest timeline and its ancestors say what "now" is.
        keeps.insert(timelines.last().copied().unwrap_or(1));
        // A history file names its timeline's whole ancestry.
        let mut needed: BTreeSet<u32> = BTreeSet::new();
        for tli in &keeps {
            needed.insert(*tli);
            if let Some(entries) = self.lines.histories.get(tli) {
                needed.extend(entries.iter().map(|e| e.parent.0));
            }
        }
        self.lines
            .histories
            .keys()
            .filter(|tli| !needed.contains(tli))
            .copied()
            .collect()
    }
}

/// A recovery window that is guaranteed: every moment from `restorable_since` to the
/// newest archived commit is restorable, replaying from `from_backup`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuaranteedWindow {
    /// The backup replay starts from.
    pub from_backup: String,
    /// Its consistent point.
    pub restorable_since: DateTime<Utc>,
    /// `now - restorable_since`.
    pub window: Duration,
}

/// The window `decision` guarantees once the WAL after its start is checked: `gaps` are
/// the stretches missing on the line that leads to timeline `line` (the newest), from
/// the start of `decision.continuous_from` on ([`crate::continuity::LineGaps`]). With no
/// gap it is the decision's own window. Replay stops at a gap, so after one the window
/// starts at the consistent point of the oldest kept backup that the line admits and that
/// starts after the last gap; `None` when no kept backup does (no moment is guaranteed).
/// What expire removes does not change: the shorter window needs less than the
/// decision keeps.
pub fn guaranteed_after_gaps(
    snapshot: &CatalogSnapshot,
    decision: &RetentionDecision,
    line: u32,
    gaps: &[crate::continuity::Gap],
    now: DateTime<Utc>,
) -> Option<GuaranteedWindow> {
    let window = |from: &str, since: DateTime<Utc>| GuaranteedWindow {
        from_backup: from.to_string(),
        restorable_since: since,
        window: (now - since).max(Duration::zero()),
    };
    let Some(last_missing) = gaps.iter().map(|g| g.last_segno).max() else {
        return Some(window(&decision.continuous_from, decision.restorable_since));
    };
    let size = snapshot.segment_size.max(1);
    let path = TimelinePath::of(snapshot, line);
    let kept: BTreeSet<&str> = decision.kept.iter().map(|k| k.id.as_str()).collect();
    snapshot
        .backups
        .iter()
        .filter(|b| kept.contains(b.id.as_str()))
        .filter(|b| b.start_lsn.0 / size > last_missing && path.admits(b).is_ok())
        .min_by_key(|b| (b.stop_time, b.stop_lsn))
        .map(|b| window(&b.id, b.stop_time))
}

#[derive(Clone, Copy)]
enum Tier {
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Tier {
    /// The calendar period (UTC) `t` falls in, named for the report.
    fn period(self, t: DateTime<Utc>) -> String {
        match self {
            Tier::Daily => format!("daily {}", t.format("%Y-%m-%d")),
            Tier::Weekly => {
                let week = t.iso_week();
                format!("weekly {}-W{:02}", week.year(), week.week())
            }
            Tier::Monthly => format!("monthly {}", t.format("%Y-%m")),
            Tier::Yearly => format!("yearly {}", t.year()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    /// A backup that reached its consistent point at `stop`; ids sort against time on
    /// purpose (`z…` oldest), so that ordering by id would be caught.
    fn backup(n: u32, stop: DateTime<Utc>) -> RetainedBackup {
        RetainedBackup {
            id: format!("z{:03}", 999 - n),
            label: None,
            start_lsn: Lsn(u64::from(n) << 24),
            timeline: 1,
            stop_lsn: Lsn((u64::from(n) << 24) + 0x100),
            stop_time: stop,
        }
    }

    /// One backup a day at 02:00 from 2026-11-01 for `days` days.
    fn nightly(days: u32) -> Vec<RetainedBackup> {
        (0..days)
            .map(|i| backup(i, at(2026, 11, 1, 2) + Duration::days(i64::from(i))))
            .collect()
    }

    fn ids(d: &RetentionDecision) -> Vec<&str> {
        d.kept.iter().map(|k| k.id.as_str()).collect()
    }

    #[test]
    fn an_empty_or_nonsensical_policy_is_refused() {
        let now = at(2026, 12, 6, 12);
        let b = nightly(3);
        assert_eq!(
            decide(&b, &RetentionPolicy::default(), now),
            Err(PolicyError::Empty)
        );
        let zero = RetentionPolicy {
            count: Some(0),
            ..Default::default()
        };
        assert_eq!(
            decide(&b, &zero, now),
            Err(PolicyError::NotPositive("count"))
        );
        let negative = RetentionPolicy {
            window: Some(Duration::hours(-1)),
            ..Default::default()
        };
        assert_eq!(
            decide(&b, &negative, now),
            Err(PolicyError::NotPositive("window"))
        );
        let count = RetentionPolicy {
            count: Some(2),
            ..Default::default()
        };
        assert_eq!(decide(&[], &count, now), Err(PolicyError::NoBackups));
    }

    #[test]
    fn count_keeps_the_newest_by_consistent_point_not_by_id() {
        let b = nightly(5);
        let policy = RetentionPolicy {
            count: Some(2),
            ..Default::default()
        };
        let d = decide(&b, &policy, at(2026, 11, 6, 0)).unwrap();
        assert_eq!(ids(&d), [b[3].id.as_str(), b[4].id.as_str()]);
        assert_eq!(
            d.expired,
            [b[0].id.clone(), b[1].id.clone(), b[2].id.clone()]
        );
        assert_eq!(d.continuous_from, b[3].id);
        assert_eq!(d.restorable_since, b[3].stop_time);
        assert_eq!(
            d.kept[1].because,
            [KeptBecause::Newest, KeptBecause::Count(1)]
        );
        assert_eq!(d.kept[0].because, [KeptBecause::Count(2)]);
    }

    #[test]
    fn the_window_keeps_its_anchor_before_it_not_only_what_lies_inside() {
        // Nightly at 02:00; a 3-day window at 12:00 on the 6th reaches back to 12:00 on
        // the 3rd: the backup of the 3rd (02:00) is the anchor, the 4th-6th lie inside.
        let b = nightly(6);
        let now = at(2026, 11, 6, 12);
        let policy = RetentionPolicy {
            window: Some(Duration::days(3)),
            ..Default::default()
        };
        let d = decide(&b, &policy, now).unwrap();
        assert_eq!(ids(&d), [&b[2].id, &b[3].id, &b[4].id, &b[5].id]);
        assert_eq!(d.expired, [b[0].id.clone(), b[1].id.clone()]);
        assert_eq!(d.continuous_from, b[2].id);
        assert_eq!(d.guaranteed_window, Duration::hours(3 * 24 + 10));
        assert!(d.guaranteed_window >= Duration::days(3));
        assert_eq!(d.window_short_of, None);
        // Exactly at the cutoff, that backup is the anchor itself.
        let d = decide(&b, &policy, at(2026, 11, 6, 2)).unwrap();
        assert_eq!(d.continuous_from, b[2].id);
        assert_eq!(d.guaranteed_window, Duration::days(3));
    }

    #[test]
    fn a_window_longer_than_the_backups_reach_keeps_everything_and_says_so() {
        let b = nightly(3);
        let policy = RetentionPolicy {
            window: Some(Duration::days(14)),
            ..Default::default()
        };
        let d = decide(&b, &policy, at(2026, 11, 4, 0)).unwrap();
        assert!(d.expired.is_empty());
        assert_eq!(d.continuous_from, b[0].id);
        assert_eq!(d.window_short_of, Some(Duration::days(14)));
        assert!(d.guaranteed_window < Duration::days(14));
    }

    #[test]
    fn tiers_keep_the_newest_backup_of_each_recent_period() {
        // Two backups a day (02:00 and 14:00) for 70 days from Sunday 2026-11-01.
        let mut b = Vec::new();
        for day in 0..70 {
            for hour in [2, 14] {
                let n = b.len() as u32;
                b.push(backup(n, at(2026, 11, 1, hour) + Duration::days(day)));
            }
        }
        let now = at(2027, 1, 10, 0);
        let policy = RetentionPolicy {
            tiers: Tiers {
                daily: 3,
                weekly: 2,
                monthly: 3,
                yearly: 0,
            },
            ..Default::default()
        };
        let d = decide(&b, &policy, now).unwrap();
        let last = b.len() - 1;
        let tier_of = |id: &str| {
            d.kept
                .iter()
                .find(|k| k.id == id)
                .map(|k| k.because.clone())
                .unwrap_or_default()
        };
        // Daily: the 14:00 backups of the last three days (Jan 9, 8, 7).
        for (i, day) in [
            (last, "2027-01-09"),
            (last - 2, "2027-01-08"),
            (last - 4, "2027-01-07"),
        ] {
            assert!(
                tier_of(&b[i].id).contains(&KeptBecause::Tier(format!("daily {day}"))),
                "{day}: {:?}",
                d.kept
            );
        }
        // Not the 02:00 one of a kept day.
        assert!(d.expired.contains(&b[last - 1].id));
        // Weekly: 2027-W01 (Jan 4-10: its newest is Jan 9 14:00) and 2026-W53 (Dec 28 -
        // Jan 3: Jan 3 14:00).
        assert!(tier_of(&b[last].id).contains(&KeptBecause::Tier("weekly 2027-W01".into())));
        let jan3 = b
            .iter()
            .position(|x| x.stop_time == at(2027, 1, 3, 14))
            .unwrap();
        assert!(tier_of(&b[jan3].id).contains(&KeptBecause::Tier("weekly 2026-W53".into())));
        // Monthly: January, December (Dec 31 14:00), November (Nov 30 14:00).
        for (y, m, d_) in [(2026, 12, 31), (2026, 11, 30)] {
            let i = b
                .iter()
                .position(|x| x.stop_time == at(y, m, d_, 14))
                .unwrap();
            assert!(
                tier_of(&b[i].id)
                    .iter()
                    .any(|k| matches!(k, KeptBecause::Tier(p) if p.starts_with("monthly"))),
                "{y}-{m}"
            );
        }
        // 3 daily + 1 more weekly + 2 more monthly, nothing else.
        assert_eq!(d.kept.len(), 6, "{:?}", d.kept);
        assert_eq!(d.kept.len() + d.expired.len(), b.len());
        // Tiers alone: point-in-time recovery runs from the newest backup only.
        assert_eq!(d.continuous_from, b[last].id);
    }

    #[test]
    fn rules_combine_and_forever_keeps_by_id_or_label() {
        let mut b = nightly(10);
        b[1].label = Some("pre-migration".into());
        let policy = RetentionPolicy {
            count: Some(2),
            window: Some(Duration::days(4)),
            forever: ["pre-migration".to_string(), b[4].id.clone()].into(),
            ..Default::default()
        };
        let d = decide(&b, &policy, at(2026, 11, 10, 12)).unwrap();
        // Window: anchor the 6th (02:00 <= 12:00 on the 6th), so 6th-10th; count: 9th,
        // 10th; forever: the 2nd (label) and the 5th (id).
        assert_eq!(
            ids(&d),
            [&b[1].id, &b[4].id, &b[5].id, &b[6].id, &b[7].id, &b[8].id, &b[9].id]
        );
        assert_eq!(
            d.continuous_from, b[5].id,
            "the window reaches further than the count"
        );
        let pre = d.kept.iter().find(|k| k.id == b[1].id).unwrap();
        assert_eq!(pre.because, [KeptBecause::Forever]);
    }

    mod wal {
        use super::super::*;
        use crate::plan::{BackupPoint, SegmentContent, SegmentFacts};
        use chrono::TimeZone;
        use tidemark_pg::{HistoryEntry, PgMajor, SystemId, TimelineId};

        const SEG: u64 = 16 << 20;

        /// Segments `first..=last` archived on `tli`.
        fn archive(snapshot: &mut CatalogSnapshot, tli: u32, first: u64, last: u64) {
            for segno in first..=last {
                snapshot.segments.insert(
                    (tli, segno),
                    SegmentFacts {
                        name: format!("{tli:08X}{:08X}{:08X}", segno >> 8, segno & 0xFF),
                        stored_size: 1,
                        content: SegmentContent::NotIndexed,
                    },
                );
            }
        }

        /// A backup on `tli` starting in segment `segno`, consistent in the same segment,
        /// at hour `hour` of 2026-12-01.
        fn backup_at(id: &str, tli: u32, segno: u64, hour: u32) -> BackupPoint {
            let t = Utc.with_ymd_and_hms(2026, 12, 1, hour, 0, 0).unwrap();
            BackupPoint {
                id: id.into(),
                timeline: tli,
                start_lsn: Lsn(segno * SEG + 0x28),
                stop_timeline: tli,
                stop_lsn: Lsn(segno * SEG + 0x1000),
                start_time: t,
                stop_time: t,
                size: 1,
                extensions: Default::default(),
            }
        }

        fn history(snapshot: &mut CatalogSnapshot, tli: u32, parents: &[(u32, u64)]) {
            snapshot.histories.insert(
                tli,
                parents
                    .iter()
                    .map(|&(parent, segno)| HistoryEntry {
                        parent: TimelineId(parent),
                        switchpoint: Lsn(segno * SEG + 0x2000),
                        reason: "test".into(),
                    })
                    .collect(),
            );
        }

        fn snapshot() -> CatalogSnapshot {
            CatalogSnapshot {
                system_id: SystemId(7),
                segment_size: SEG,
                pg_major: PgMajor::V15,
                backups: Vec::new(),
                histories: Default::default(),
                segments: Default::default(),
            }
        }

        fn kept(snapshot: &CatalogSnapshot, policy: &RetentionPolicy) -> RetentionDecision {
            let backups: Vec<RetainedBackup> = snapshot
                .backups
                .iter()
                .map(|b| RetainedBackup {
                    id: b.id.clone(),
                    label: None,
                    start_lsn: b.start_lsn,
                    timeline: b.timeline,
                    stop_lsn: b.stop_lsn,
                    stop_time: b.stop_time,
                })
                .collect();
            decide(
                &backups,
                policy,
                Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap(),
            )
            .unwrap()
        }

        fn count(n: u32) -> RetentionPolicy {
            RetentionPolicy {
                count: Some(n),
                ..Default::default()
            }
        }

        /// A gap after the window's start moves the guaranteed window to the oldest kept
        /// backup after the last gap, or leaves none; a gap on another line, or none,
        /// leaves the decision's window; what goes does not change.
        #[test]
        fn a_gap_after_the_window_start_shortens_the_guaranteed_window() {
            use crate::continuity::LineGaps;
            let mut s = snapshot();
            archive(&mut s, 1, 1, 40);
            s.backups = vec![
                backup_at("a", 1, 5, 1),
                backup_at("b", 1, 12, 2),
                backup_at("c", 1, 20, 3),
                backup_at("d", 1, 30, 4),
            ];
            let d = kept(&s, &count(3));
            assert_eq!(d.continuous_from, "b");
            let now = Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap();
            let gaps_of = |s: &CatalogSnapshot| {
                let mut line = LineGaps::new(s, 1, 12);
                for &(tli, segno) in s.segments.keys() {
                    line.archived(tli, segno);
                }
                line.gaps().to_vec()
            };
            let whole = guaranteed_after_gaps(&s, &d, 1, &gaps_of(&s), now).unwrap();
            assert_eq!(
                (
                    whole.from_backup.as_str(),
                    whole.restorable_since,
                    whole.window
                ),
                ("b", d.restorable_since, d.guaranteed_window)
            );
            let before = wal_to_expire(&s, &d);

            // Segments 15 and 16 missing: c (starting at 20) is the oldest after the gap.
            let mut gapped = s.clone();
            gapped.segments.remove(&(1, 15));
            gapped.segments.remove(&(1, 16));
            let gaps = gaps_of(&gapped);
            assert_eq!(gaps.len(), 1);
            assert_eq!(gaps[0].first, "00000001000000000000000F");
            assert_eq!(gaps[0].last, "000000010000000000000010");
            let w = guaranteed_after_gaps(&gapped, &d, 1, &gaps, now).unwrap();
            assert_eq!(w.from_backup, "c");
            assert_eq!(
                w.restorable_since,
                Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap()
            );
            assert_eq!(w.window, Duration::hours(21));
            // The same decision removes the same WAL (less is missing to remove).
            let after = wal_to_expire(&gapped, &d);
            assert_eq!(
                after.segments, before.segments,
                "a gap never makes expire remove more"
            );

            // A gap after the newest backup's start: nothing is guaranteed.
            let mut late = s.clone();
            late.segments.remove(&(1, 33));
            assert_eq!(
                guaranteed_after_gaps(&late, &d, 1, &gaps_of(&late), now),
                None
            );

            // A gap before the window's start does not count.
            let mut early = s.clone();
            early.segments.remove(&(1, 8));
            assert_eq!(gaps_of(&early), vec![]);
        }

        #[test]
        fn one_timeline_keeps_everything_from_the_window_backup_and_kept_backups_ranges() {
            let mut s = snapshot();
            archive(&mut s, 1, 1, 40);
            s.backups = vec![
                backup_at("a", 1, 5, 1),
                backup_at("b", 1, 12, 2),
                backup_at("c", 1, 20, 3),
                backup_at("d", 1, 30, 4),
            ];
            // Count 2 keeps c and d; "a" forever: only its own segment stays.
            let mut policy = count(2);
            policy.forever.insert("a".into());
            let d = kept(&s, &policy);
            assert_eq!(d.continuous_from, "c");
            let e = wal_to_expire(&s, &d);
            let gone: Vec<u64> = e.segments.iter().map(|(_, n)| *n).collect();
            let expected: Vec<u64> = (1..20).filter(|n| *n != 5).collect();
            assert_eq!(gone, expected);
            assert!(e.segments.iter().all(|(tli, _)| *tli == 1));
            assert_eq!(e.held, None);
        }

        #[test]
        fn a_line_forked_after_the_window_backup_stays_one_forked_before_it_goes() {
            // Timeline 1 to segment 40; timeline 2 forked off it in segment 10 (a test
            // restore, abandoned), timeline 3 forked in segment 25 (the line to now).
            let mut s = snapshot();
            archive(&mut s, 1, 1, 40);
            archive(&mut s, 2, 10, 14);
            archive(&mut s, 3, 25, 50);
            history(&mut s, 2, &[(1, 10)]);
            history(&mut s, 3, &[(1, 25)]);
            s.backups = vec![backup_at("a", 1, 5, 1), backup_at("b", 1, 20, 2)];
            let d = kept(&s, &count(1));
            assert_eq!(d.continuous_from, "b");
            let e = wal_to_expire(&s, &d);
            let gone = |tli: u32| -> Vec<u64> {
                e.segments
                    .iter()
                    .filter(|(t, _)| *t == tli)
                    .map(|(_, n)| *n)
                    .collect()
            };
            assert_eq!(gone(1), (1..20).collect::<Vec<_>>(), "timeline 1 before b");
            assert_eq!(gone(2), (10..=14).collect::<Vec<_>>(), "forked before b");
            assert!(gone(3).is_empty(), "the line to now");
            // Timeline 1 after the fork to 3 is reachable from b: kept.
            assert!(!e.segments.contains(&(1, 30)));
            assert_eq!(e.histories, [2], "timeline 2's history goes with its WAL");
        }

        #[test]
        fn the_window_backup_on_a_later_timeline_lets_the_parent_go() {
            let mut s = snapshot();
            archive(&mut s, 1, 1, 12);
            archive(&mut s, 2, 10, 30);
            history(&mut s, 2, &[(1, 10)]);
            s.backups = vec![backup_at("a", 1, 3, 1), backup_at("b", 2, 20, 2)];
            let e = wal_to_expire(&s, &kept(&s, &count(1)));
            let expected: Vec<(u32, u64)> = (1..=12)
                .map(|n| (1, n))
                .chain((10..20).map(|n| (2, n)))
                .collect();
            assert_eq!(e.segments, expected);
            assert!(
                e.histories.is_empty(),
                "timeline 2's history stays: it is now's line"
            );
        }

        #[test]
        fn partial_and_backup_files_go_by_their_position() {
            // Timeline 1's last segment 12 is a `.partial` (promotion to 2 in 12); a
            // `.backup` file at segment 3 (backup a's start) and one at 20 (b's).
            let mut s = snapshot();
            archive(&mut s, 1, 1, 11);
            archive(&mut s, 2, 12, 30);
            history(&mut s, 2, &[(1, 12)]);
            s.backups = vec![backup_at("a", 1, 3, 1), backup_at("b", 2, 20, 2)];
            let others: BTreeSet<(u32, u64)> = [(1, 12), (1, 3), (2, 20)].into();
            let e = wal_files_to_expire(&s, &kept(&s, &count(1)), &others);
            assert_eq!(e.others, [(1, 3), (1, 12)], "b's own file stays");
            assert_eq!(e.segments.len(), 11 + 8);
        }

        #[test]
        fn a_timeline_without_its_history_file_is_kept_whole() {
            let mut s = snapshot();
            archive(&mut s, 1, 1, 20);
            archive(&mut s, 2, 3, 6);
            s.backups = vec![backup_at("a", 1, 15, 1)];
            let e = wal_to_expire(&s, &kept(&s, &count(1)));
            assert!(e.segments.iter().all(|(tli, _)| *tli == 1));
            assert_eq!(e.segments.len(), 14);
        }

        #[test]
        fn nothing_goes_when_the_window_backup_is_unknown() {
            let mut s = snapshot();
            archive(&mut s, 1, 1, 20);
            s.backups = vec![backup_at("a", 1, 15, 1)];
            let mut d = kept(&s, &count(1));
            d.continuous_from = "gone".into();
            let e = wal_to_expire(&s, &d);
            assert!(e.segments.is_empty() && e.histories.is_empty());
            assert!(e.held.unwrap().contains("gone"));
        }
    }
}
