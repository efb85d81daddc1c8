//! Schedules and the decision of when a job runs next: pure functions of the schedule,
//! what is known of the last runs, and `now` (the caller's clock).
//!
//! A schedule is an interval (`"15s"`, `"30m"`, `"6h"`, `"1d"`, `"2w"`) or a cron
//! expression (`"0 2 * * *"`, five fields, or six with seconds first; `@daily` and the
//! like), parsed by the `croner` crate and evaluated in the system's local time, as cron
//! does.
//!
//! The rules ([`next_run`]):
//! - never run (nothing recorded locally nor in the repository): due now;
//! - otherwise the schedule's first time after the last run's start; if that time has
//!   passed (the agent was down, or a run took longer than the period) it is due now,
//!   once, however many times were missed;
//! - after a failure, the retry comes first: the last failure's end plus a pause of one
//!   minute doubling with each failure in a row, never longer than the schedule's period
//!   (so a failing hourly backup is retried at 1, 2, 4, … minutes, then hourly).
//!
//! A run skipped because another held the job lock counts as a run (the other one did the
//! work): the next is the schedule's next time.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Local, TimeZone, Utc};

/// When a kind of job runs.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// Every so often, counted from the last run's start.
    Every(Duration),
    /// At the times a cron expression names (in local time).
    Cron {
        /// As written in the settings.
        expression: String,
        /// As parsed.
        cron: Box<croner::Cron>,
    },
}

/// A schedule that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not a schedule ({why}): use an interval such as \"15s\", \"30m\", \"6h\", \"1d\", or a cron expression such as \"0 2 * * *\"")]
pub struct ScheduleError {
    text: String,
    why: String,
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = text.trim();
        let err = |why: String| ScheduleError {
            text: text.to_string(),
            why,
        };
        if let Some(interval) = parse_interval(trimmed) {
            let interval = interval.map_err(err)?;
            return Ok(Schedule::Every(interval));
        }
        let cron = croner::Cron::from_str(trimmed).map_err(|e| err(e.to_string()))?;
        // An expression that never matches (February 30th) would leave the job unscheduled
        // forever without a word: refuse it now.
        cron.find_next_occurrence(&Utc::now(), false)
            .map_err(|e| err(format!("it never matches: {e}")))?;
        Ok(Schedule::Cron {
            expression: trimmed.to_string(),
            cron: Box::new(cron),
        })
    }
}

/// `Some` when `text` looks like an interval (a number first, no spaces: `"15s"`, `"6h"`,
/// `"1h30m"`), with its value (read as every duration setting is,
/// [`crate::cli::duration::parse_duration`]) or why it is not one; `None` when it does not
/// look like one (a cron expression, maybe).
fn parse_interval(text: &str) -> Option<Result<Duration, String>> {
    if !text.starts_with(|c: char| c.is_ascii_digit()) || text.contains(char::is_whitespace) {
        return None;
    }
    Some(crate::cli::duration::parse_duration(text).and_then(|d| {
        if d.is_zero() {
            Err("an interval must be longer than zero".to_string())
        } else {
            Ok(d)
        }
    }))
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {} s", d.as_secs()),
            Schedule::Cron { expression, .. } => write!(f, "cron {expression:?}"),
        }
    }
}

impl Schedule {
    /// The schedule's first time strictly after `after` (cron in local time).
    pub fn next_after(&self, after: DateTime<Utc>) -> DateTime<Utc> {
        self.next_after_in(after, &Local)
    }

    /// The schedule's first time strictly after `after`, cron evaluated in `zone`.
    pub fn next_after_in<Z: TimeZone>(&self, after: DateTime<Utc>, zone: &Z) -> DateTime<Utc> {
        match self {
            Schedule::Every(interval) => after + chrono_duration(*interval),
            Schedule::Cron { cron, .. } => cron
                .find_next_occurrence(&after.with_timezone(zone), false)
                .map(|t| t.with_timezone(&Utc))
                // Checked when parsed to match at least once; should the search still give
                // up (a date beyond its horizon), try again in a day rather than never.
                .unwrap_or(after + chrono::Duration::days(1)),
        }
    }

    /// The time between two runs around `at` (a cron expression's gaps may vary: the one
    /// after `at`'s next run).
    pub fn period_in<Z: TimeZone>(&self, at: DateTime<Utc>, zone: &Z) -> Duration {
        match self {
            Schedule::Every(interval) => *interval,
            Schedule::Cron { .. } => {
                let first = self.next_after_in(at, zone);
                let second = self.next_after_in(first, zone);
                (second - first).to_std().unwrap_or(Duration::from_secs(60))
            }
        }
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::days(36_500))
}

/// The first pause before a failed job is retried; it doubles with each failure in a row,
/// up to the schedule's period.
pub const FIRST_RETRY: Duration = Duration::from_secs(60);

/// What the decision needs to know of a kind's past runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Past {
    /// When the last run (of any outcome: succeeded, failed, skipped) started.
    pub last_start: Option<DateTime<Utc>>,
    /// When the last run ended, if it failed, and how many failed in a row up to it.
    pub failing: Option<(DateTime<Utc>, u32)>,
}

/// When the job runs next: due now when the answer is not after `now`. Cron evaluated in
/// local time; `first_retry` is the first pause after a failure ([`FIRST_RETRY`]).
pub fn next_run(
    schedule: &Schedule,
    past: &Past,
    now: DateTime<Utc>,
    first_retry: Duration,
) -> DateTime<Utc> {
    next_run_in(schedule, past, now, first_retry, &Local)
}

/// [`next_run`], cron evaluated in `zone`.
pub fn next_run_in<Z: TimeZone>(
    schedule: &Schedule,
    past: &Past,
    now: DateTime<Utc>,
    first_retry: Duration,
    zone: &Z,
) -> DateTime<Utc> {
    if let Some((failed_at, in_a_row)) = past.failing {
        let pause = retry_pause(schedule, first_retry, in_a_row, failed_at, zone);
        return failed_at + chrono_duration(pause);
    }
    match past.last_start {
        None => now,
        Some(last) => {
            let scheduled = schedule.next_after_in(last, zone);
            // A time that passed while the agent was down is due now (once).
            if scheduled <= now {
                now
            } else {
                scheduled
            }
        }
    }
}

/// The pause after failure number `in_a_row` (1 for the first): `first` doubled with each
/// failure in a row, never longer than the schedule's period.
pub fn retry_pause<Z: TimeZone>(
    schedule: &Schedule,
    first: Duration,
    in_a_row: u32,
    failed_at: DateTime<Utc>,
    zone: &Z,
) -> Duration {
    let doubled = first.saturating_mul(1u32 << in_a_row.saturating_sub(1).min(20));
    doubled.min(
        schedule
            .period_in(failed_at, zone)
            .max(Duration::from_secs(1)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn next(schedule: &str, past: Past, now: &str) -> DateTime<Utc> {
        next_run_in(&schedule.parse().unwrap(), &past, t(now), FIRST_RETRY, &Utc)
    }

    #[test]
    fn intervals_and_cron_expressions_parse_and_nonsense_is_named() {
        assert!(
            matches!("15s".parse::<Schedule>().unwrap(), Schedule::Every(d) if d.as_secs() == 15)
        );
        assert!(
            matches!("6h".parse::<Schedule>().unwrap(), Schedule::Every(d) if d.as_secs() == 21_600)
        );
        assert!(
            matches!("2w".parse::<Schedule>().unwrap(), Schedule::Every(d) if d.as_secs() == 14 * 86_400)
        );
        assert!(matches!(
            "0 2 * * *".parse::<Schedule>().unwrap(),
            Schedule::Cron { .. }
        ));
        assert!(matches!(
            "*/10 * * * * *".parse::<Schedule>().unwrap(),
            Schedule::Cron { .. }
        ));
        assert!(matches!(
            "@daily".parse::<Schedule>().unwrap(),
            Schedule::Cron { .. }
        ));
        for bad in [
            "",
            "0s",
            "6 hours",
            "6x",
            "61 * * * *",
            "0 2 30 2 *",
            "every day",
        ] {
            let err = bad.parse::<Schedule>().unwrap_err().to_string();
            assert!(err.contains("is not a schedule"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_job_never_run_is_due_at_once() {
        let now = "2026-03-01T12:00:00Z";
        assert_eq!(next("6h", Past::default(), now), t(now));
        assert_eq!(next("0 2 * * *", Past::default(), now), t(now));
    }

    #[test]
    fn an_interval_counts_from_the_last_start() {
        let past = Past {
            last_start: Some(t("2026-03-01T10:00:00Z")),
            failing: None,
        };
        assert_eq!(
            next("6h", past, "2026-03-01T12:00:00Z"),
            t("2026-03-01T16:00:00Z")
        );
        assert_eq!(
            next("2s", past, "2026-03-01T10:00:01Z"),
            t("2026-03-01T10:00:02Z")
        );
    }

    #[test]
    fn a_cron_time_is_the_first_after_the_last_start() {
        let past = Past {
            last_start: Some(t("2026-03-01T02:00:00Z")),
            failing: None,
        };
        assert_eq!(
            next("0 2 * * *", past, "2026-03-01T12:00:00Z"),
            t("2026-03-02T02:00:00Z")
        );
        assert_eq!(
            next("30 */6 * * *", past, "2026-03-01T03:00:00Z"),
            t("2026-03-01T06:30:00Z")
        );
    }

    #[test]
    fn missed_runs_are_caught_up_once_when_the_agent_comes_back() {
        // Down for three days: the nightly backup is due now, once.
        let past = Past {
            last_start: Some(t("2026-03-01T02:00:00Z")),
            failing: None,
        };
        let now = "2026-03-04T09:13:00Z";
        assert_eq!(next("0 2 * * *", past, now), t(now));
        assert_eq!(next("6h", past, now), t(now));
        // Once that run started, the schedule goes on from it.
        let caught_up = Past {
            last_start: Some(t(now)),
            failing: None,
        };
        assert_eq!(next("0 2 * * *", caught_up, now), t("2026-03-05T02:00:00Z"));
        assert_eq!(next("6h", caught_up, now), t("2026-03-04T15:13:00Z"));
    }

    #[test]
    fn failures_are_retried_with_a_doubling_pause_bounded_by_the_period() {
        let failed_at = t("2026-03-01T02:00:10Z");
        let after = |n| Past {
            last_start: Some(t("2026-03-01T02:00:00Z")),
            failing: Some((failed_at, n)),
        };
        let now = "2026-03-01T02:00:10Z";
        assert_eq!(
            next("1h", after(1), now),
            failed_at + chrono::Duration::minutes(1)
        );
        assert_eq!(
            next("1h", after(2), now),
            failed_at + chrono::Duration::minutes(2)
        );
        assert_eq!(
            next("1h", after(4), now),
            failed_at + chrono::Duration::minutes(8)
        );
        assert_eq!(
            next("1h", after(7), now),
            failed_at + chrono::Duration::hours(1)
        );
        assert_eq!(
            next("1h", after(40), now),
            failed_at + chrono::Duration::hours(1)
        );
        // A short schedule retries at its own pace.
        assert_eq!(
            next("2s", after(1), now),
            failed_at + chrono::Duration::seconds(2)
        );
        // A daily cron: the bound is a day.
        assert_eq!(
            next("0 2 * * *", after(30), now),
            failed_at + chrono::Duration::days(1)
        );
    }
}
