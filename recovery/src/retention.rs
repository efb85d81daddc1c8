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
//! restorable to that point.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Datelike, Duration, Utc};
use tidemark_pg::Lsn;

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
}
