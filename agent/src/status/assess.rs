//! From what was collected ([`Facts`]) to what `status` reports and the metrics export
//! ([`StatusReport`]): the RPO at `now`, the WAL lag, the backup's age, the retention
//! window, and the warnings that make `status` exit [`crate::exit::STATUS_WARNING`].
//! Pure: `now` is an argument, so the agent collects every few seconds and assesses at
//! every scrape, and tests drive every rule without a clock.
//!
//! The RPO is what a disaster now would lose: the time since the newest commit a restore
//! reaches ([`tidemark_recovery::rpo`]), while the server holds WAL the repository lacks
//! (its position is past the durable LSN) or cannot be asked; zero when the repository
//! holds every byte of WAL the server wrote. An idle database is not behind, however old
//! its last commit (the RPO watch closes the segment of a quiet server's last writes so
//! that this stays true: [`super::watch`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tidemark_archive_cmd::spool::Backlog;
use tidemark_pg::Lsn;
use tidemark_recovery::rpo::Recoverable;
use tidemark_store::drill::{PhaseRecord, RecentDrills};
use tidemark_store::verify::VerifyRecord;

use super::probe::ServerProbe;

/// What one collection found (repository and server); see [`super::collect`].
#[derive(Clone, Debug, PartialEq)]
pub struct Facts {
    /// Repository URL.
    pub repo: String,
    /// Stanza.
    pub stanza: String,
    /// When it was collected.
    pub collected_at: DateTime<Utc>,
    /// The stanza's cluster (system identifier).
    pub system_identifier: String,
    /// What the archive makes recoverable (`None`: the planner cannot read the catalog;
    /// `catalog_warnings` says why).
    pub recoverable: Option<Recoverable>,
    /// What the planner says of the catalog (records it leaves out, summaries it cannot
    /// read; or, without `recoverable`, why it cannot read the catalog at all).
    pub catalog_warnings: Vec<String>,
    /// WAL names archived with two contents (treated as missing).
    pub conflicts: Vec<String>,
    /// Segments without a content summary (`tidemark reindex`).
    pub segments_not_indexed: u64,
    /// When the newest WAL file reached the repository.
    pub last_archived_at: Option<DateTime<Utc>>,
    /// Usable backups.
    pub backups: usize,
    /// Backup records that cannot be read.
    pub damaged_backups: usize,
    /// The newest backup.
    pub newest_backup: Option<BackupFacts>,
    /// The last verify run (without its proof lists).
    pub last_verify: Option<VerifyRecord>,
    /// The last drills.
    pub drills: RecentDrills,
    /// The spool's backlog, or why it cannot be read.
    pub spool: Result<Backlog, String>,
    /// The server.
    pub server: ServerProbe,
}

/// The newest backup, as status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupFacts {
    /// Its id.
    pub id: String,
    /// Its label.
    pub label: String,
    /// When it started.
    pub start_time: DateTime<Utc>,
    /// When it was complete.
    pub stop_time: DateTime<Utc>,
    /// Bytes of the database.
    pub size: u64,
    /// Bytes it added to the repository.
    pub added_bytes: u64,
}

/// The thresholds the assessment compares with (from the settings).
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// `rpo_target`.
    pub rpo_target: Duration,
    /// `backup_max_age`.
    pub backup_max_age: Duration,
    /// `drill_max_age`.
    pub drill_max_age: Duration,
    /// The configured retention window, when a retention policy sets one
    /// ([`super::configured_retention_window`]).
    pub retention_window: Option<Duration>,
}

/// What `status --json` prints (and the metrics export).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusReport {
    /// Repository URL.
    pub repo: String,
    /// Stanza.
    pub stanza: String,
    /// When the repository and the server were read.
    pub collected_at: DateTime<Utc>,
    /// When this was assessed (the RPO and ages are as of then).
    pub assessed_at: DateTime<Utc>,
    /// No warning stands.
    pub healthy: bool,
    /// What needs a person; any of them makes `status` exit 8.
    pub warnings: Vec<Warning>,
    /// Worth knowing, not alarming.
    pub notes: Vec<String>,
    /// The recovery point.
    pub rpo: RpoStatus,
    /// WAL: durable position and lag.
    pub wal: WalStatus,
    /// The server, as it answered.
    pub server: ServerProbe,
    /// What a restore can reach, per timeline.
    pub timelines: Vec<TimelineStatus>,
    /// Base backups.
    pub backup: BackupStatus,
    /// The recovery window.
    pub retention: RetentionStatus,
    /// The last verify run.
    pub verify: Option<VerifyStatus>,
    /// Restore drills.
    pub drill: DrillStatus,
    /// The asynchronous-archiving spool.
    pub spool: SpoolStatus,
}

/// One warning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// What kind (`rpo_breached`, `backup_too_old`, `no_backup`, `nothing_recoverable`,
    /// `wal_gap`, `archiver_failing`, `server_unreachable`, `other_cluster`,
    /// `damaged_catalog`, `verify_failed`, `drill_failed`: docs/monitoring.md).
    pub kind: &'static str,
    /// In words.
    pub message: String,
}

/// The recovery point.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RpoStatus {
    /// What a disaster now would lose, in seconds (see the module doc); `null` when
    /// nothing is recoverable at all.
    pub seconds: Option<f64>,
    /// `rpo_target` in seconds.
    pub target_seconds: f64,
    /// `seconds` is above the target (or nothing is recoverable).
    pub breached: bool,
    /// The server holds WAL the repository lacks, or cannot be asked.
    pub wal_at_risk: bool,
    /// The timeline measured (the server's, or the newest in the archive).
    pub timeline: u32,
    /// The newest moment a restore reproduces (the newest commit, or the backup's
    /// consistent point when later).
    pub newest_recoverable: Option<DateTime<Utc>>,
    /// The newest commit in archived WAL that replay reaches from a backup without a gap.
    pub newest_commit: Option<DateTime<Utc>>,
    /// Where that stretch of WAL ends.
    pub newest_lsn: Option<String>,
}

/// Durable WAL and lag.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WalStatus {
    /// The end of the newest segment archived without a gap on the timeline measured.
    pub durable_lsn: Option<String>,
    /// The same as a number.
    pub durable_lsn_bytes: Option<u64>,
    /// The server's position minus `durable_lsn` (0 when the repository is ahead);
    /// `null` when either is unknown.
    pub lag_bytes: Option<u64>,
    /// When the newest WAL file reached the repository.
    pub last_archived_at: Option<DateTime<Utc>>,
    /// Segments without a content summary.
    pub segments_not_indexed: u64,
}

/// One timeline's recoverable range.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimelineStatus {
    /// The timeline.
    pub timeline: u32,
    /// The earliest point a restore reaches.
    pub pitr_earliest: Option<DateTime<Utc>>,
    /// The latest.
    pub pitr_latest: Option<DateTime<Utc>>,
    /// Segments missing between its first and last archived segment.
    pub gap_segments: u64,
}

/// Base backups.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackupStatus {
    /// Usable backups.
    pub count: usize,
    /// Records that cannot be read.
    pub damaged: usize,
    /// The newest.
    pub last: Option<LastBackup>,
    /// `backup_max_age` in seconds.
    pub max_age_seconds: f64,
    /// The newest is older than that (or there is none).
    pub too_old: bool,
}

/// The newest backup.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LastBackup {
    /// Its id.
    pub id: String,
    /// Its label.
    pub label: String,
    /// When it started.
    pub start_time: DateTime<Utc>,
    /// When it was complete.
    pub stop_time: DateTime<Utc>,
    /// How long it took.
    pub duration_seconds: f64,
    /// Bytes of the database.
    pub size: u64,
    /// Bytes it added to the repository.
    pub added_bytes: u64,
    /// Seconds since it was complete.
    pub age_seconds: f64,
}

/// The recovery window.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetentionStatus {
    /// Every moment of the last this many seconds is restorable now (from the newest
    /// stretch's backup to now); `null` when nothing is.
    pub guaranteed_seconds: Option<f64>,
    /// What the retention policy asks for (`null`: no window is configured).
    pub configured_seconds: Option<f64>,
}

/// The last verify run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VerifyStatus {
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// It found no problem.
    pub passed: bool,
    /// Problems found.
    pub problems: u64,
}

/// Restore drills.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DrillStatus {
    /// When the last drill started.
    pub last_at: Option<DateTime<Utc>>,
    /// Whether it passed.
    pub last_passed: Option<bool>,
    /// When the last passing drill started.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Its recovery time, in seconds.
    pub rto_seconds: Option<f64>,
    /// Its phases.
    pub phases: Vec<PhaseRecord>,
}

/// The spool.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpoolStatus {
    /// Files waiting for the repository.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// When the oldest was spooled.
    pub oldest_at: Option<DateTime<Utc>>,
    /// Its age in seconds (0 when the spool is empty).
    pub oldest_seconds: f64,
    /// Why the spool could not be read.
    pub error: Option<String>,
}

/// Seconds from `then` to `now`, never negative (clocks of two hosts disagree).
fn since(now: DateTime<Utc>, then: DateTime<Utc>) -> f64 {
    ((now - then).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6).max(0.0)
}

/// `d` for a person: `42 s`, `12.5 min`, `3.2 h`, `4.1 d`.
pub fn human_seconds(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3600.0)
    } else {
        format!("{:.1} d", s / 86_400.0)
    }
}

/// Assesses `facts` against `limits` at `now` (pure; see the module doc).
pub fn assess(facts: &Facts, limits: &Thresholds, now: DateTime<Utc>) -> StatusReport {
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    let mut warn = |kind: &'static str, message: String| warnings.push(Warning { kind, message });
    let rec = facts.recoverable.as_ref();
    let durable = rec.and_then(|r| r.durable_lsn);

    // The server, if it is this stanza's cluster.
    let server = match &facts.server {
        ServerProbe::Reachable(w) if w.system_identifier != facts.system_identifier => {
            warn(
                "other_cluster",
                format!(
                    "the server answering is system {}, the stanza's cluster is {}: check the pg_* settings",
                    w.system_identifier, facts.system_identifier
                ),
            );
            None
        }
        ServerProbe::Reachable(w) => Some(w),
        ServerProbe::Unreachable { error } => {
            warn(
                "server_unreachable",
                format!(
                    "PostgreSQL cannot be asked ({error}): the RPO assumes its newest WAL is lost"
                ),
            );
            None
        }
    };
    let lag_bytes = match (server, durable) {
        (Some(w), Some(d)) => Some(w.current_lsn.0.saturating_sub(d.0)),
        _ => None,
    };
    if let Some(w) = server.filter(|w| w.archiver.failing()) {
        warn(
            "archiver_failing",
            format!(
                "archive_command is failing: its last attempt{} failed at {} ({} failures since the statistics were reset)",
                w.archiver
                    .last_failed_wal
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
                w.archiver
                    .last_failed_at
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default(),
                w.archiver.failed_count
            ),
        );
    }

    // The RPO.
    let target = limits.rpo_target.as_secs_f64();
    let wal_at_risk = match (server, durable) {
        (Some(w), Some(d)) => w.current_lsn > d,
        _ => true,
    };
    let newest = rec.and_then(|r| r.newest_recoverable);
    let rpo_seconds = newest.map(|t| if wal_at_risk { since(now, t) } else { 0.0 });
    let breached = rpo_seconds.is_none_or(|s| s > target);
    match (rpo_seconds, newest) {
        (Some(s), Some(t)) if s > target => warn(
            "rpo_breached",
            format!(
                "RPO breached: the newest recoverable commit is {} old ({}), over the {} target{}",
                human_seconds(s),
                t.format("%Y-%m-%d %H:%M:%S UTC"),
                human_seconds(target),
                lag_bytes
                    .map(|b| format!("; {b} bytes of WAL are not in the repository"))
                    .unwrap_or_default()
            ),
        ),
        (None, _) if facts.recoverable.is_some() => warn(
            "nothing_recoverable",
            "nothing is recoverable: no backup has the WAL that makes it consistent".into(),
        ),
        _ => {}
    }

    // Gaps: on the line that leads to now a warning, elsewhere (an abandoned timeline) a
    // note.
    let measured = rec.map(|r| r.timeline);
    for t in rec.map(|r| r.timelines.as_slice()).unwrap_or_default() {
        if t.gap_segments == 0 {
            continue;
        }
        let text = format!(
            "timeline {} misses {} segment(s) between its first and last archived one: no restore crosses the gap (`tidemark info` names them)",
            t.timeline, t.gap_segments
        );
        if Some(t.timeline) == measured {
            warn("wal_gap", text);
        } else {
            notes.push(text);
        }
    }
    if rec.is_none() {
        for w in &facts.catalog_warnings {
            warn("damaged_catalog", w.clone());
        }
    } else {
        notes.extend(facts.catalog_warnings.iter().cloned());
    }
    if !facts.conflicts.is_empty() {
        warn(
            "damaged_catalog",
            format!(
                "{} WAL name(s) are archived with two contents, which no restore crosses: {}",
                facts.conflicts.len(),
                facts.conflicts.join(", ")
            ),
        );
    }
    if facts.damaged_backups > 0 {
        warn(
            "damaged_catalog",
            format!(
                "{} backup record(s) cannot be read (`tidemark info` names them)",
                facts.damaged_backups
            ),
        );
    }
    if facts.segments_not_indexed > 0 {
        notes.push(format!(
            "{} segment(s) have no content summary: the newest commit may be older than shown; run `tidemark reindex`",
            facts.segments_not_indexed
        ));
    }

    // Backups.
    let max_age = limits.backup_max_age.as_secs_f64();
    let last = facts.newest_backup.as_ref().map(|b| LastBackup {
        id: b.id.clone(),
        label: b.label.clone(),
        start_time: b.start_time,
        stop_time: b.stop_time,
        duration_seconds: since(b.stop_time, b.start_time),
        size: b.size,
        added_bytes: b.added_bytes,
        age_seconds: since(now, b.stop_time),
    });
    let too_old = last.as_ref().is_none_or(|b| b.age_seconds > max_age);
    match &last {
        None => warn("no_backup", "no backup: run `tidemark backup`".into()),
        Some(b) if too_old => warn(
            "backup_too_old",
            format!(
                "the newest backup ({}) is {} old, over backup_max_age ({})",
                b.id,
                human_seconds(b.age_seconds),
                human_seconds(max_age)
            ),
        ),
        Some(_) => {}
    }

    // Verify and drills.
    let verify = facts.last_verify.as_ref().map(|v| VerifyStatus {
        finished_at: v.finished_at,
        passed: v.passed,
        problems: v.counts.problems,
    });
    match &verify {
        Some(v) if !v.passed => warn(
            "verify_failed",
            format!(
                "the last verify ({}) found {} problem(s): `tidemark info`, then `tidemark verify`",
                v.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
                v.problems
            ),
        ),
        None => notes.push(
            "never verified: `tidemark verify` proves the backups and WAL can be read".into(),
        ),
        _ => {}
    }
    let drills = &facts.drills;
    if let Some(d) = drills.last.as_ref().filter(|d| !d.passed) {
        warn(
            "drill_failed",
            format!(
                "the last restore drill ({}) failed: {}",
                d.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                d.failure.as_deref().unwrap_or("see `tidemark info`")
            ),
        );
    }
    if let Some(w) = tidemark_recovery::drill::age_warning(
        drills.last_passed.as_ref().map(|d| d.started_at),
        drills.count,
        now,
        limits.drill_max_age,
    ) {
        notes.push(w);
    }
    let drill = DrillStatus {
        last_at: drills.last.as_ref().map(|d| d.started_at),
        last_passed: drills.last.as_ref().map(|d| d.passed),
        last_success_at: drills.last_passed.as_ref().map(|d| d.started_at),
        rto_seconds: drills.last_passed.as_ref().and_then(|d| d.rto_seconds),
        phases: drills
            .last_passed
            .as_ref()
            .map(|d| d.phases.clone())
            .unwrap_or_default(),
    };

    // Retention.
    let guaranteed = rec
        .and_then(|r| r.restorable_since)
        .map(|since_t| since(now, since_t));
    let configured = limits.retention_window.map(|w| w.as_secs_f64());
    if let (Some(g), Some(c)) = (guaranteed, configured) {
        if g < c {
            notes.push(format!(
                "the recovery window is {}, short of the {} configured (not enough history yet, or WAL is missing)",
                human_seconds(g),
                human_seconds(c)
            ));
        }
    }

    // The spool.
    let spool = match &facts.spool {
        Ok(b) => SpoolStatus {
            files: b.files,
            bytes: b.bytes,
            oldest_at: b.oldest_at,
            oldest_seconds: b.oldest_at.map_or(0.0, |t| since(now, t)),
            error: None,
        },
        Err(e) => {
            notes.push(format!("the spool cannot be read: {e}"));
            SpoolStatus {
                files: 0,
                bytes: 0,
                oldest_at: None,
                oldest_seconds: 0.0,
                error: Some(e.clone()),
            }
        }
    };

    StatusReport {
        repo: facts.repo.clone(),
        stanza: facts.stanza.clone(),
        collected_at: facts.collected_at,
        assessed_at: now,
        healthy: warnings.is_empty(),
        warnings,
        notes,
        rpo: RpoStatus {
            seconds: rpo_seconds,
            target_seconds: target,
            breached,
            wal_at_risk,
            timeline: measured.unwrap_or(1),
            newest_recoverable: newest,
            newest_commit: rec.and_then(|r| r.newest_commit),
            newest_lsn: rec.and_then(|r| r.newest_lsn).map(|l| l.to_string()),
        },
        wal: WalStatus {
            durable_lsn: durable.map(|l| l.to_string()),
            durable_lsn_bytes: durable.map(|l: Lsn| l.0),
            lag_bytes,
            last_archived_at: facts.last_archived_at,
            segments_not_indexed: facts.segments_not_indexed,
        },
        server: facts.server.clone(),
        timelines: rec
            .map(|r| {
                r.timelines
                    .iter()
                    .map(|t| TimelineStatus {
                        timeline: t.timeline,
                        pitr_earliest: t.earliest,
                        pitr_latest: t.latest,
                        gap_segments: t.gap_segments,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        backup: BackupStatus {
            count: facts.backups,
            damaged: facts.damaged_backups,
            last,
            max_age_seconds: max_age,
            too_old,
        },
        retention: RetentionStatus {
            guaranteed_seconds: guaranteed,
            configured_seconds: configured,
        },
        verify,
        drill,
        spool,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::status::probe::{Archiver, ServerWal};
    use tidemark_recovery::rpo::TimelineRecoverable;

    pub fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    /// A healthy stanza at 12:00: backup 11:00-11:05, last commit 11:59:30, durable to
    /// 0/5000000, the server at 0/5000000 on timeline 1.
    pub fn facts() -> Facts {
        Facts {
            repo: "file:///r".into(),
            stanza: "main".into(),
            collected_at: at("2026-12-06T12:00:00Z"),
            system_identifier: "7000000000000000001".into(),
            recoverable: Some(Recoverable {
                timeline: 1,
                newest_commit: Some(at("2026-12-06T11:59:30Z")),
                newest_recoverable: Some(at("2026-12-06T11:59:30Z")),
                newest_lsn: Some(Lsn(0x4FF_FF00)),
                restorable_since: Some(at("2026-12-06T11:05:00Z")),
                durable_lsn: Some(Lsn(0x500_0000)),
                timelines: vec![TimelineRecoverable {
                    timeline: 1,
                    earliest: Some(at("2026-12-06T11:05:00Z")),
                    latest: Some(at("2026-12-06T11:59:30Z")),
                    gap_segments: 0,
                }],
            }),
            catalog_warnings: Vec::new(),
            conflicts: Vec::new(),
            segments_not_indexed: 0,
            last_archived_at: Some(at("2026-12-06T11:59:40Z")),
            backups: 1,
            damaged_backups: 0,
            newest_backup: Some(BackupFacts {
                id: "20261206T110000Z".into(),
                label: "nightly".into(),
                start_time: at("2026-12-06T11:00:00Z"),
                stop_time: at("2026-12-06T11:05:00Z"),
                size: 1000,
                added_bytes: 100,
            }),
            last_verify: None,
            drills: RecentDrills::default(),
            spool: Ok(Backlog::default()),
            server: ServerProbe::Reachable(ServerWal {
                in_recovery: false,
                current_lsn: Lsn(0x500_0000),
                current_lsn_bytes: 0x500_0000,
                timeline: 1,
                system_identifier: "7000000000000000001".into(),
                archiver: Archiver::default(),
            }),
        }
    }

    pub fn limits() -> Thresholds {
        Thresholds {
            rpo_target: Duration::from_secs(3600),
            backup_max_age: Duration::from_secs(26 * 3600),
            drill_max_age: Duration::from_secs(7 * 86_400),
            retention_window: None,
        }
    }

    fn kinds(r: &StatusReport) -> Vec<&'static str> {
        r.warnings.iter().map(|w| w.kind).collect()
    }

    fn server_at(f: &mut Facts, lsn: u64) {
        if let ServerProbe::Reachable(w) = &mut f.server {
            w.current_lsn = Lsn(lsn);
            w.current_lsn_bytes = lsn;
        }
    }

    #[test]
    fn everything_archived_is_no_loss_however_old_the_last_commit() {
        let f = facts();
        let r = assess(&f, &limits(), at("2026-12-06T15:00:00Z"));
        assert_eq!(r.rpo.seconds, Some(0.0));
        assert!(!r.rpo.wal_at_risk && !r.rpo.breached);
        assert_eq!(r.wal.lag_bytes, Some(0));
        assert_eq!(kinds(&r), Vec::<&str>::new());
        assert!(r.healthy);
        assert_eq!(r.backup.last.as_ref().unwrap().duration_seconds, 300.0);
        assert_eq!(
            r.backup.last.as_ref().unwrap().age_seconds,
            3.0 * 3600.0 + 3300.0
        );
        assert_eq!(r.retention.guaranteed_seconds, Some(3.0 * 3600.0 + 3300.0));
    }

    #[test]
    fn unarchived_writes_make_the_rpo_the_age_of_the_newest_recoverable_commit() {
        let mut f = facts();
        server_at(&mut f, 0x500_0100);
        let r = assess(&f, &limits(), at("2026-12-06T12:30:00Z"));
        assert_eq!(r.rpo.seconds, Some(1830.0));
        assert_eq!(r.wal.lag_bytes, Some(0x100));
        assert!(r.healthy, "{:?}", r.warnings);
        let late = assess(&f, &limits(), at("2026-12-06T13:00:00Z"));
        assert_eq!(late.rpo.seconds, Some(3630.0));
        assert_eq!(kinds(&late), ["rpo_breached"]);
        assert!(
            late.warnings[0].message.contains("256 bytes of WAL"),
            "{:?}",
            late.warnings
        );
        // Unreachable: the newest WAL counts as lost, and that is said too.
        f.server = ServerProbe::Unreachable {
            error: "connection refused".into(),
        };
        let r = assess(&f, &limits(), at("2026-12-06T13:00:00Z"));
        assert_eq!(r.rpo.seconds, Some(3630.0));
        assert_eq!(r.wal.lag_bytes, None);
        assert_eq!(kinds(&r), ["server_unreachable", "rpo_breached"]);
    }

    #[test]
    fn another_clusters_server_is_not_measured() {
        let mut f = facts();
        if let ServerProbe::Reachable(w) = &mut f.server {
            w.system_identifier = "42".into();
        }
        let r = assess(&f, &limits(), at("2026-12-06T12:10:00Z"));
        assert_eq!(r.wal.lag_bytes, None);
        assert!(r.rpo.wal_at_risk);
        assert_eq!(kinds(&r), ["other_cluster"]);
    }

    #[test]
    fn an_old_or_missing_backup_gaps_and_failures_are_warnings() {
        let mut f = facts();
        let r = assess(&f, &limits(), at("2026-12-07T13:06:00Z"));
        assert_eq!(kinds(&r), ["backup_too_old"]);
        assert!(r.backup.too_old);
        f.newest_backup = None;
        f.backups = 0;
        f.recoverable.as_mut().unwrap().newest_recoverable = None;
        f.recoverable.as_mut().unwrap().timelines[0].gap_segments = 3;
        if let ServerProbe::Reachable(w) = &mut f.server {
            w.archiver.last_failed_at = Some(at("2026-12-06T11:59:50Z"));
            w.archiver.last_failed_wal = Some("000000010000000000000005".into());
            w.archiver.failed_count = 2;
        }
        f.drills.last = Some(crate::status::text::tests::drill(false));
        f.drills.count = 1;
        let r = assess(&f, &limits(), at("2026-12-06T12:00:00Z"));
        assert_eq!(
            kinds(&r),
            [
                "archiver_failing",
                "nothing_recoverable",
                "wal_gap",
                "no_backup",
                "drill_failed"
            ]
        );
        assert_eq!(r.rpo.seconds, None);
        assert!(r.rpo.breached && !r.healthy);
        assert!(r.warnings[0].message.contains("000000010000000000000005"));
    }

    #[test]
    fn a_gap_on_an_abandoned_timeline_is_a_note_and_the_short_window_too() {
        let mut f = facts();
        f.recoverable
            .as_mut()
            .unwrap()
            .timelines
            .push(TimelineRecoverable {
                timeline: 2,
                earliest: None,
                latest: None,
                gap_segments: 1,
            });
        let mut l = limits();
        l.retention_window = Some(Duration::from_secs(14 * 86_400));
        let r = assess(&f, &l, at("2026-12-06T12:00:00Z"));
        assert!(r.healthy, "{:?}", r.warnings);
        assert!(
            r.notes.iter().any(|n| n.starts_with("timeline 2 misses 1")),
            "{:?}",
            r.notes
        );
        assert!(
            r.notes.iter().any(|n| n.contains("short of the 14.0 d")),
            "{:?}",
            r.notes
        );
        assert_eq!(r.retention.configured_seconds, Some(14.0 * 86_400.0));
    }
}
