//! `tidemark plan [--target-… ] [--target-timeline T] [--target-action A]
//! [--target-exclusive] [--backup ID] [--pg-bin DIR] [--json]`: how a recovery target
//! would be reached, or why it cannot be, before anything is written.
//!
//! The work is `tidemark_recovery::snapshot` (reads the catalog, runs the planner, decodes
//! the segments it asks for) and `tidemark_recovery::plan` (pure). This module turns the
//! arguments into a [`PlanRequest`] ([`request`]), finds the extensions of `--pg-bin`
//! ([`available_extensions`]), and renders the plan ([`PlanReport`]) or the refusal
//! ([`Unreachable`], exit 5). `restore` plans through [`make_plan`] before it creates
//! anything.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tidemark_pg::PgTimestamp;
use tidemark_recovery::autoconf::TargetSettings;
use tidemark_recovery::plan::{
    self, Outcome, Plan, PlanRequest, Refusal, RefusalKind, Target, TargetAction, TimelineRequest,
};
use tidemark_recovery::snapshot;
use tidemark_store::Repo;

use super::info::bytes;
use super::report::{json_lines, Report};
use crate::cli::args::{PlanArgs, TargetArgs};
use crate::cli::config::{ConfigError, Settings};
use crate::exit::Failure;

/// The planner refused the target (exit 5, [`crate::exit::TARGET_UNREACHABLE`]).
#[derive(Debug, thiserror::Error)]
#[error("{}", self.line())]
pub struct Unreachable {
    /// Why, by kind (`docs/recovery.md` has a section for each).
    pub kind: RefusalKind,
    /// What and why.
    pub message: String,
    /// The reachable points nearest the target.
    pub nearest: Vec<String>,
    /// What the catalog itself says about the names in the message (a conflict).
    pub notes: Vec<String>,
}

impl Unreachable {
    fn line(&self) -> String {
        let mut out = format!(
            "target unreachable ({}): {}",
            kind_name(self.kind),
            self.message
        );
        for note in &self.notes {
            out.push_str(&format!(" ({note})"));
        }
        if self.nearest.is_empty() {
            out.push_str("; nothing is reachable");
        } else {
            out.push_str(&format!("; nearest reachable: {}", self.nearest.join("; ")));
        }
        out.push_str("; nothing was written");
        out
    }
}

/// The refusal kinds as `docs/recovery.md` names them.
pub fn kind_name(kind: RefusalKind) -> &'static str {
    match kind {
        RefusalKind::NoBackup => "no-backup",
        RefusalKind::BeforeFirstBackup => "before-first-backup",
        RefusalKind::BeyondArchive => "beyond-archive",
        RefusalKind::WalGap => "wal-gap",
        RefusalKind::DamagedWal => "damaged-wal",
        RefusalKind::UnknownTimeline => "unknown-timeline",
        RefusalKind::HistoryHole => "history-hole",
        _ => "unreachable",
    }
}

/// Runs `plan`.
pub async fn run(settings: &Settings, args: &PlanArgs) -> Result<PlanReport, Failure> {
    let repo = super::open_repo(settings).await?;
    make_plan(&repo, settings, &args.target, args.backup.clone()).await
}

/// Plans `target` (from `backup` when given) on the stanza's catalog: the report, or the
/// refusal as a [`Failure::Unreachable`]. Reads only.
pub async fn make_plan(
    repo: &Repo,
    settings: &Settings,
    target: &TargetArgs,
    backup: Option<String>,
) -> Result<PlanReport, Failure> {
    plan_report(repo, settings, target, backup, false).await
}

/// [`make_plan`], naming the stop record exactly where the index only places it in a
/// segment ([`snapshot::plan_exact`]: that segment is read): what `drill` compares the
/// server's recovery point with.
pub async fn make_exact_plan(
    repo: &Repo,
    settings: &Settings,
    target: &TargetArgs,
    backup: Option<String>,
) -> Result<PlanReport, Failure> {
    plan_report(repo, settings, target, backup, true).await
}

async fn plan_report(
    repo: &Repo,
    settings: &Settings,
    target: &TargetArgs,
    backup: Option<String>,
    exact: bool,
) -> Result<PlanReport, Failure> {
    let (request, asked) = request(target, backup, &chrono::Local)?;
    let stanza = &settings.stanza;
    // Refuses a location without the repository or the stanza (exit 2), as everywhere.
    let mut loaded = snapshot::load(repo, stanza).await?;
    if let Some(id) = &request.backup {
        if loaded.damaged_backups.contains(id) {
            // Restoring it would fail on its record: say so now, as damage (exit 4).
            repo.backup(stanza, id).await?;
        }
        if !loaded.snapshot.backups.iter().any(|b| &b.id == id) {
            // A wrong id is a typo to fix (exit 1, as restore always said), not a target
            // that the archive cannot reach.
            return Err(tidemark_recovery::Error::UnknownBackup {
                id: id.clone(),
                stanza: stanza.to_string(),
                available: loaded
                    .snapshot
                    .backups
                    .iter()
                    .map(|b| b.id.clone())
                    .collect(),
            }
            .into());
        }
    }
    let outcome = if exact {
        snapshot::plan_exact(repo, &mut loaded, &request).await?
    } else {
        snapshot::plan(repo, &mut loaded, &request).await?
    };
    match outcome {
        Outcome::Plan(plan) => PlanReport::new(stanza.to_string(), asked, &request, plan),
        Outcome::Refused(refusal) => Err(refused(refusal, &loaded.conflicts).into()),
        Outcome::NeedsSegments(_) => unreachable!("snapshot::plan decodes what is needed"),
    }
}

/// The refusal, with a note when it names a WAL file that is archived twice.
fn refused(refusal: Refusal, conflicts: &[String]) -> Unreachable {
    let notes = conflicts
        .iter()
        .filter(|name| refusal.message.contains(name.as_str()))
        .map(|name| {
            format!("{name} is archived with two different contents: a person must decide which is right; see `tidemark info`")
        })
        .collect();
    Unreachable {
        kind: refusal.kind,
        message: refusal.message,
        nearest: refusal.nearest,
        notes,
    }
}

/// The target as the user gave it, for the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AskedTarget {
    /// `time`, `lsn`, `xid`, `name`, `immediate` or `latest`.
    pub kind: &'static str,
    /// The text given (`null` for immediate and latest).
    pub given: Option<String>,
    /// For a time: the instant it was read as, in UTC.
    pub resolved_utc: Option<DateTime<Utc>>,
    /// Whether the time carried no zone and was read in the local one.
    pub local_zone: bool,
}

/// Turns the arguments into the planner's request; a time without a zone is read in
/// `local` (pure, but for `--pg-bin`, which lists a folder).
pub fn request<Tz: chrono::TimeZone>(
    args: &TargetArgs,
    backup: Option<String>,
    local: &Tz,
) -> Result<(PlanRequest, AskedTarget), ConfigError> {
    let exclusive = args.target_exclusive;
    let usage = |s: String| ConfigError(s);
    let (target, asked) = if let Some(text) = &args.target_time {
        let (at, local) =
            parse_time(text, local).map_err(|e| usage(format!("--target-time: {e}")))?;
        (
            Target::Time { at, exclusive },
            AskedTarget {
                kind: "time",
                given: Some(text.clone()),
                resolved_utc: Some(at),
                local_zone: local,
            },
        )
    } else if let Some(text) = &args.target_lsn {
        let lsn = plan::parse_target_lsn(text).map_err(|e| usage(format!("--target-lsn: {e}")))?;
        (Target::Lsn { lsn, exclusive }, asked("lsn", text))
    } else if let Some(text) = &args.target_xid {
        let xid = plan::parse_target_xid(text).map_err(|e| usage(format!("--target-xid: {e}")))?;
        (Target::Xid { xid, exclusive }, asked("xid", text))
    } else if let Some(text) = &args.target_name {
        let name = parse_name(text).map_err(|e| usage(format!("--target-name {text:?}: {e}")))?;
        (Target::Name(name), asked("name", text))
    } else if args.target.as_deref() == Some("immediate") {
        (Target::Immediate, fixed("immediate"))
    } else {
        (Target::Latest, fixed("latest"))
    };
    if exclusive
        && !matches!(
            target,
            Target::Time { .. } | Target::Lsn { .. } | Target::Xid { .. }
        )
    {
        return Err(usage(
            "--target-exclusive applies to --target-time, --target-lsn and --target-xid only"
                .into(),
        ));
    }
    let timeline = match &args.target_timeline {
        None => TimelineRequest::Latest,
        Some(text) => plan::parse_target_timeline(text)
            .map_err(|e| usage(format!("--target-timeline: {e}")))?,
    };
    let action = plan::parse_target_action(&args.target_action)
        .map_err(|e| usage(format!("--target-action: {e}")))?;
    let available_extensions = match &args.pg_bin {
        Some(dir) => Some(available_extensions(dir)?),
        None => None,
    };
    Ok((
        PlanRequest {
            target,
            timeline,
            action,
            backup,
            available_extensions,
        },
        asked,
    ))
}

/// A restore point name as `pg_create_restore_point` takes it: 1 to 63 bytes
/// (`MAXFNAMELEN` - 1); PostgreSQL refuses a longer `recovery_target_name`.
fn parse_name(text: &str) -> Result<String, String> {
    if text.is_empty() || text.len() >= 64 {
        return Err("a restore point name has 1 to 63 bytes".into());
    }
    Ok(text.to_string())
}

/// `--target-time` in `local` when it has no zone: the instant, and whether the local
/// zone was used (the same text read in two zones an hour apart gives two instants).
fn parse_time<Tz: chrono::TimeZone>(
    text: &str,
    local: &Tz,
) -> Result<(DateTime<Utc>, bool), plan::TargetParseError> {
    let at = plan::parse_target_time(text, local)?;
    let east = chrono::FixedOffset::east_opt(3600).expect("one hour is an offset");
    let zoneless = plan::parse_target_time(text, &Utc)? != plan::parse_target_time(text, &east)?;
    Ok((at, zoneless))
}

fn asked(kind: &'static str, text: &str) -> AskedTarget {
    AskedTarget {
        kind,
        given: Some(text.to_string()),
        resolved_utc: None,
        local_zone: false,
    }
}

fn fixed(kind: &'static str) -> AskedTarget {
    AskedTarget {
        kind,
        given: None,
        resolved_utc: None,
        local_zone: false,
    }
}

/// The extensions the binaries in `bin` provide: the names of the `*.control` files in
/// their share directory's `extension` folder. The share directory is what
/// `bin/pg_config --sharedir` says when it runs, else `bin/../share/postgresql` or
/// `bin/../share` (the layouts of PostgreSQL's own install and of packaged builds).
pub fn available_extensions(bin: &Path) -> Result<BTreeSet<String>, ConfigError> {
    let bad = |why: String| ConfigError(format!("--pg-bin {}: {why}", bin.display()));
    if !bin.is_dir() {
        return Err(bad("not a directory".into()));
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    let pg_config = bin.join("pg_config");
    if pg_config.is_file() {
        if let Ok(out) = std::process::Command::new(&pg_config)
            .arg("--sharedir")
            .output()
        {
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if out.status.success() && !text.is_empty() {
                candidates.push(PathBuf::from(text));
            }
        }
    }
    candidates.push(bin.join("../share/postgresql"));
    candidates.push(bin.join("../share"));
    let Some(folder) = candidates
        .iter()
        .map(|share| share.join("extension"))
        .find(|f| f.is_dir())
    else {
        return Err(bad(format!(
            "no extension folder found (looked in {})",
            candidates
                .iter()
                .map(|c| c.join("extension").display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let entries = std::fs::read_dir(&folder)
        .map_err(|e| bad(format!("cannot list {}: {e}", folder.display())))?;
    let mut names = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| bad(format!("cannot list {}: {e}", folder.display())))?;
        let name = entry.file_name();
        if let Some(ext) = name.to_str().and_then(|n| n.strip_suffix(".control")) {
            names.insert(ext.to_string());
        }
    }
    Ok(names)
}

/// A plan, as `plan` prints it (`--json` prints this object; docs/recovery.md lists its
/// fields).
#[derive(Clone, Debug, Serialize)]
pub struct PlanReport {
    /// The stanza.
    pub stanza: String,
    /// The target as given.
    pub target: AskedTarget,
    /// `true`: the target excludes the stop record (`recovery_target_inclusive = off`).
    pub exclusive: bool,
    /// The backup to restore.
    pub backup: PlannedBackup,
    /// The target timeline, as a number.
    pub timeline: u32,
    /// The timelines replay walks, with where each is left.
    pub timeline_path: Vec<PathStep>,
    /// Timelines branching off the path after the backup that are not followed.
    pub other_branches: Vec<BranchView>,
    /// The WAL replay reads, per timeline.
    pub wal: Vec<WalRangeView>,
    /// What restore and replay fetch from the repository.
    pub fetch: FetchView,
    /// Where replay stops.
    pub stop: StopView,
    /// What PostgreSQL does there.
    pub action: &'static str,
    /// The recovery settings restore writes into `postgresql.auto.conf`.
    pub settings: TargetSettings,
    /// What the operator should know, one line each.
    pub warnings: Vec<String>,
}

/// The backup of a plan.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedBackup {
    /// Its id.
    pub id: String,
    /// The timeline it starts on.
    pub timeline: u32,
    /// Where replay starts.
    pub start_lsn: String,
    /// Where it is consistent.
    pub stop_lsn: String,
    /// When it started.
    pub start_time: DateTime<Utc>,
    /// When it ended.
    pub stop_time: DateTime<Utc>,
    /// Bytes of data.
    pub size: u64,
}

/// A timeline on the replay path.
#[derive(Clone, Debug, Serialize)]
pub struct PathStep {
    /// The timeline.
    pub timeline: u32,
    /// Where replay leaves it (`null` for the target timeline).
    pub until: Option<String>,
}

/// A timeline not followed.
#[derive(Clone, Debug, Serialize)]
pub struct BranchView {
    /// The timeline.
    pub timeline: u32,
    /// The timeline it left.
    pub parent: u32,
    /// Where.
    pub fork: String,
}

/// Segments of one timeline.
#[derive(Clone, Debug, Serialize)]
pub struct WalRangeView {
    /// The timeline.
    pub timeline: u32,
    /// The first segment.
    pub first: String,
    /// The last segment.
    pub last: String,
    /// How many.
    pub segments: u64,
}

/// Bytes to fetch.
#[derive(Clone, Debug, Serialize)]
pub struct FetchView {
    /// The backup's data.
    pub backup_bytes: u64,
    /// The WAL segments (as stored in the repository).
    pub wal_bytes: u64,
    /// How many segments.
    pub wal_segments: u64,
}

/// Where replay stops.
#[derive(Clone, Debug, Serialize)]
pub struct StopView {
    /// The stop record's start, when known.
    pub lsn: Option<String>,
    /// Its time, when it has one.
    pub time: Option<DateTime<Utc>>,
    /// In words.
    pub description: String,
}

/// A PostgreSQL timestamp as a UTC instant (`None` outside chrono's range).
pub fn pg_time(t: PgTimestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(t.unix_micros())
}

impl PlanReport {
    /// The report of `plan`; fails when the planner's settings do not pass
    /// [`TargetSettings::new`] (a bug: nothing is written with them).
    pub fn new(
        stanza: String,
        target: AskedTarget,
        request: &PlanRequest,
        plan: Plan,
    ) -> Result<PlanReport, Failure> {
        let settings = TargetSettings::new(&plan.settings).map_err(|e| {
            tidemark_recovery::Error::Planner(format!("the plan's recovery settings: {e}"))
        })?;
        let exclusive = matches!(
            plan.target,
            Target::Time {
                exclusive: true,
                ..
            } | Target::Lsn {
                exclusive: true,
                ..
            } | Target::Xid {
                exclusive: true,
                ..
            }
        );
        let b = &plan.backup;
        Ok(PlanReport {
            stanza,
            target,
            exclusive,
            backup: PlannedBackup {
                id: b.id.clone(),
                timeline: b.timeline,
                start_lsn: b.start_lsn.to_string(),
                stop_lsn: b.stop_lsn.to_string(),
                start_time: b.start_time,
                stop_time: b.stop_time,
                size: b.size,
            },
            timeline: plan.timeline,
            timeline_path: plan
                .timeline_path
                .iter()
                .map(|s| PathStep {
                    timeline: s.timeline,
                    until: s.until.map(|l| l.to_string()),
                })
                .collect(),
            other_branches: plan
                .other_branches
                .iter()
                .map(|b| BranchView {
                    timeline: b.timeline,
                    parent: b.parent,
                    fork: b.fork.to_string(),
                })
                .collect(),
            wal: plan
                .wal
                .iter()
                .map(|w| WalRangeView {
                    timeline: w.timeline,
                    first: w.first.clone(),
                    last: w.last.clone(),
                    segments: w.segments,
                })
                .collect(),
            fetch: FetchView {
                backup_bytes: b.size,
                wal_bytes: plan.wal_bytes,
                wal_segments: plan.wal_segments,
            },
            stop: StopView {
                lsn: plan.stop.lsn.map(|l| l.to_string()),
                time: plan.stop.time.and_then(pg_time),
                description: plan.stop.description.clone(),
            },
            action: match request.action {
                TargetAction::Pause => "pause",
                TargetAction::Promote => "promote",
                TargetAction::Shutdown => "shutdown",
            },
            settings,
            warnings: plan.warnings,
        })
    }

    /// The lines for a person.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let t = &self.target;
        let target = match (&t.given, t.resolved_utc) {
            (Some(given), Some(at)) => format!(
                "{} {given:?} = {}{}{}",
                t.kind,
                at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                if t.local_zone {
                    " (no zone given: read in the local zone)"
                } else {
                    ""
                },
                if self.exclusive { ", exclusive" } else { "" }
            ),
            (Some(given), None) => format!(
                "{} {given}{}",
                t.kind,
                if self.exclusive { ", exclusive" } else { "" }
            ),
            (None, _) => match t.kind {
                "immediate" => "immediate: the end of the backup (its consistent point)".into(),
                _ => "latest: the end of the archived WAL".into(),
            },
        };
        out.push(format!("target      {target}"));
        let b = &self.backup;
        out.push(format!(
            "backup      {} (timeline {}, WAL from {}, consistent at {}, {}), {}",
            b.id,
            b.timeline,
            b.start_lsn,
            b.stop_lsn,
            b.stop_time.to_rfc3339_opts(SecondsFormat::Secs, true),
            bytes(b.size)
        ));
        let path: Vec<String> = self
            .timeline_path
            .iter()
            .map(|s| match &s.until {
                Some(until) => format!("{} (until {until})", s.timeline),
                None => s.timeline.to_string(),
            })
            .collect();
        out.push(format!(
            "timelines   {} (recovery_target_timeline = {})",
            path.join(" -> "),
            self.timeline
        ));
        for br in &self.other_branches {
            out.push(format!(
                "            not followed: timeline {} (off {} at {})",
                br.timeline, br.parent, br.fork
            ));
        }
        for w in &self.wal {
            out.push(format!(
                "wal         timeline {}: {} .. {} ({})",
                w.timeline,
                w.first,
                w.last,
                segments(w.segments)
            ));
        }
        out.push(format!(
            "fetch       {} of data, {} of WAL ({})",
            bytes(self.fetch.backup_bytes),
            bytes(self.fetch.wal_bytes),
            segments(self.fetch.wal_segments)
        ));
        let mut stop = self.stop.description.clone();
        if let Some(lsn) = self
            .stop
            .lsn
            .as_ref()
            .filter(|l| !stop.contains(l.as_str()))
        {
            stop.push_str(&format!(" (at {lsn})"));
        }
        out.push(format!("stops       {stop}; then {}", self.action));
        out.push(format!(
            "settings    {}",
            self.settings
                .settings()
                .iter()
                .filter(|(_, value)| !value.is_empty())
                .map(|(name, value)| format!("{name} = '{value}'"))
                .collect::<Vec<_>>()
                .join(", ")
                + " (every other recovery_target* = '')"
        ));
        for w in &self.warnings {
            out.push(format!("WARNING: {w}"));
        }
        out
    }
}

/// `n segments`, or `1 segment`.
fn segments(n: u64) -> String {
    if n == 1 {
        "1 segment".into()
    } else {
        format!("{n} segments")
    }
}

/// `plan`: the text is [`PlanReport::lines`].
impl Report for PlanReport {
    fn text(&self) -> String {
        let mut out = String::new();
        for line in self.lines() {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    fn json(&self) -> String {
        json_lines(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> TargetArgs {
        TargetArgs {
            target_action: "pause".into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_time_without_a_zone_is_read_in_the_local_one_and_said_so() {
        let tokyo = chrono::FixedOffset::east_opt(9 * 3600).unwrap();
        let mut a = args();
        a.target_time = Some("2026-11-21 19:32:07.5".into());
        let (req, asked) = request(&a, None, &tokyo).unwrap();
        let at: DateTime<Utc> = "2026-11-21T10:32:07.5Z".parse().unwrap();
        assert_eq!(
            req.target,
            Target::Time {
                at,
                exclusive: false
            }
        );
        assert_eq!(
            (asked.kind, asked.resolved_utc, asked.local_zone),
            ("time", Some(at), true)
        );
        // With a zone, the local one does not matter.
        a.target_time = Some("2026-11-21 11:32:07.5+01".into());
        let (req, asked) = request(&a, None, &tokyo).unwrap();
        assert_eq!(asked.resolved_utc, Some(at));
        assert!(!asked.local_zone);
        assert_eq!(req.timeline, TimelineRequest::Latest);
        assert_eq!(req.action, TargetAction::Pause);
        assert_eq!(req.available_extensions, None);
    }

    #[test]
    fn bad_targets_are_usage_errors_naming_the_flag() {
        let utc = Utc;
        let refused = |a: TargetArgs, needle: &str| {
            let e = request(&a, None, &utc).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        };
        let mut a = args();
        a.target_time = Some("yesterday".into());
        refused(a, "--target-time: ");
        let mut a = args();
        a.target_lsn = Some("0/XYZ".into());
        refused(a, "--target-lsn: ");
        let mut a = args();
        a.target_name = Some("n".repeat(64));
        refused(a, "1 to 63 bytes");
        let mut a = args();
        a.target_name = Some("before".into());
        a.target_exclusive = true;
        refused(a, "--target-exclusive applies to");
        let mut a = args();
        a.target_timeline = Some("newest".into());
        refused(a, "--target-timeline: ");
        let mut a = args();
        a.pg_bin = Some("/nonexistent/bin".into());
        refused(a, "--pg-bin /nonexistent/bin: not a directory");

        // No target: latest. A timeline number and an action are passed on.
        let mut a = args();
        a.target_timeline = Some("3".into());
        a.target_action = "promote".into();
        let (req, asked) = request(&a, Some("B".into()), &utc).unwrap();
        assert_eq!(req.target, Target::Latest);
        assert_eq!(asked.kind, "latest");
        assert_eq!(req.timeline, TimelineRequest::Exact(3));
        assert_eq!(req.action, TargetAction::Promote);
        assert_eq!(req.backup.as_deref(), Some("B"));
    }

    #[test]
    fn extensions_come_from_the_binaries_share_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("pg/bin");
        std::fs::create_dir_all(&bin).unwrap();
        // Without pg_config: ../share/postgresql/extension.
        let ext = dir.path().join("pg/share/postgresql/extension");
        std::fs::create_dir_all(&ext).unwrap();
        for f in [
            "plpgsql.control",
            "hstore.control",
            "hstore--1.8.sql",
            "README",
        ] {
            std::fs::write(ext.join(f), b"").unwrap();
        }
        let found = available_extensions(&bin).unwrap();
        assert_eq!(found.into_iter().collect::<Vec<_>>(), ["hstore", "plpgsql"]);
        // pg_config --sharedir wins when it runs.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(elsewhere.join("extension")).unwrap();
        std::fs::write(elsewhere.join("extension/postgis.control"), b"").unwrap();
        let script = bin.join("pg_config");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho {}\n", elsewhere.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let found = available_extensions(&bin).unwrap();
        assert_eq!(found.into_iter().collect::<Vec<_>>(), ["postgis"]);
        // Nothing anywhere: said, with where it looked.
        let empty = dir.path().join("empty/bin");
        std::fs::create_dir_all(&empty).unwrap();
        let e = available_extensions(&empty).unwrap_err().to_string();
        assert!(e.contains("no extension folder found (looked in "), "{e}");
    }

    /// A plan from timeline 1 to 2 for a local time, exclusive, with a branch not
    /// followed and a warning.
    fn sample_plan() -> (PlanRequest, AskedTarget, Plan) {
        use tidemark_pg::Lsn;
        use tidemark_recovery::plan::{BackupPoint, Branch, StopPoint, TimelineStep, WalRange};
        let tokyo = chrono::FixedOffset::east_opt(9 * 3600).unwrap();
        let mut a = args();
        a.target_time = Some("2026-11-21 19:32:07".into());
        a.target_exclusive = true;
        a.target_action = "promote".into();
        let (req, asked) = request(&a, None, &tokyo).unwrap();
        let at: DateTime<Utc> = "2026-11-21T10:00:00Z".parse().unwrap();
        let settings = [
            ("recovery_target_time", "2026-11-21 10:32:07.000000+00"),
            ("recovery_target", ""),
            ("recovery_target_name", ""),
            ("recovery_target_xid", ""),
            ("recovery_target_lsn", ""),
            ("recovery_target_timeline", "2"),
            ("recovery_target_action", "promote"),
            ("recovery_target_inclusive", "off"),
        ];
        let plan = Plan {
            backup: BackupPoint {
                id: "20261121T100000Z".into(),
                timeline: 1,
                start_lsn: Lsn(0x200_0028),
                stop_timeline: 1,
                stop_lsn: Lsn(0x200_0100),
                start_time: at,
                stop_time: at,
                size: 3 << 20,
                extensions: BTreeSet::new(),
            },
            target: req.target.clone(),
            timeline: 2,
            timeline_path: vec![
                TimelineStep {
                    timeline: 1,
                    until: Some(Lsn(0x300_0000)),
                },
                TimelineStep {
                    timeline: 2,
                    until: None,
                },
            ],
            other_branches: vec![Branch {
                timeline: 3,
                parent: 1,
                fork: Lsn(0x280_0000),
            }],
            wal: vec![WalRange {
                timeline: 1,
                first: "000000010000000000000002".into(),
                last: "000000010000000000000002".into(),
                segments: 1,
            }],
            wal_segments: 1,
            wal_bytes: 1 << 20,
            stop: StopPoint {
                lsn: Some(Lsn(0x300_1FA0)),
                time: None,
                description: "before commit of xid 745".into(),
            },
            settings: settings
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            warnings: vec!["extension postgis is missing".into()],
        };
        (req, asked, plan)
    }

    #[test]
    fn the_plan_reads_line_by_line() {
        let (req, asked, plan) = sample_plan();
        let report = PlanReport::new("main".into(), asked, &req, plan).unwrap();
        assert_eq!(
            report.lines(),
            [
                "target      time \"2026-11-21 19:32:07\" = 2026-11-21T10:32:07Z (no zone given: read in the local zone), exclusive",
                "backup      20261121T100000Z (timeline 1, WAL from 0/2000028, consistent at 0/2000100, 2026-11-21T10:00:00Z), 3.0 MiB",
                "timelines   1 (until 0/3000000) -> 2 (recovery_target_timeline = 2)",
                "            not followed: timeline 3 (off 1 at 0/2800000)",
                "wal         timeline 1: 000000010000000000000002 .. 000000010000000000000002 (1 segment)",
                "fetch       3.0 MiB of data, 1.0 MiB of WAL (1 segment)",
                "stops       before commit of xid 745 (at 0/3001FA0); then promote",
                "settings    recovery_target_time = '2026-11-21 10:32:07.000000+00', recovery_target_inclusive = 'off', recovery_target_timeline = '2', recovery_target_action = 'promote' (every other recovery_target* = '')",
                "WARNING: extension postgis is missing",
            ]
        );
        let json: serde_json::Value = serde_json::from_str(&report.json()).unwrap();
        assert_eq!(json["exclusive"], true);
        assert_eq!(json["action"], "promote");
        assert_eq!(json["timeline_path"][0]["until"], "0/3000000");
        assert_eq!(json["timeline_path"][1]["until"], serde_json::Value::Null);
        assert_eq!(json["other_branches"][0]["fork"], "0/2800000");
        assert_eq!(json["fetch"]["wal_bytes"], 1 << 20);
        assert_eq!(json["stop"]["lsn"], "0/3001FA0");
        assert_eq!(json["target"]["resolved_utc"], "2026-11-21T10:32:07Z");
        // The settings in the order they are written: the set kind after the empty ones.
        let text = report.json();
        let at = |name: &str| text.find(&format!("\"{name}\": ")).unwrap();
        assert!(
            at("recovery_target_lsn") < at("recovery_target_time"),
            "{text}"
        );
        assert!(
            at("recovery_target_time") < at("recovery_target_action"),
            "{text}"
        );
        assert_eq!(json["settings"]["recovery_target_inclusive"], "off");
    }

    #[test]
    fn settings_a_plan_must_not_write_fail_the_report() {
        let (req, asked, mut plan) = sample_plan();
        plan.settings.retain(|(n, _)| n != "recovery_target_xid");
        let e = PlanReport::new("main".into(), asked, &req, plan).unwrap_err();
        assert!(
            e.to_string()
                .contains("the plan's recovery settings: recovery_target_xid is missing"),
            "{e}"
        );
        assert_eq!(e.code(), crate::exit::FAILED);
    }

    #[test]
    fn a_refusal_is_one_line_with_its_kind_and_the_nearest_points() {
        let refusal = Refusal {
            kind: RefusalKind::WalGap,
            message: "segment 000000010000000000000005 is missing".into(),
            nearest: vec!["0/4FFFFF8 (2026-11-21 10:00:00+00)".into(), "latest".into()],
        };
        let conflicts = vec!["000000010000000000000005".to_string()];
        let line = refused(refusal, &conflicts).to_string();
        assert_eq!(
            line,
            "target unreachable (wal-gap): segment 000000010000000000000005 is missing \
             (000000010000000000000005 is archived with two different contents: a person must \
             decide which is right; see `tidemark info`); nearest reachable: 0/4FFFFF8 \
             (2026-11-21 10:00:00+00); latest; nothing was written"
        );
        assert!(!line.contains('\n'));
        let failure: Failure = refused(
            Refusal {
                kind: RefusalKind::NoBackup,
                message: "no backup".into(),
                nearest: vec![],
            },
            &[],
        )
        .into();
        assert_eq!(failure.code(), crate::exit::TARGET_UNREACHABLE);
        assert!(failure
            .to_string()
            .ends_with("; nothing is reachable; nothing was written"));
    }
}
