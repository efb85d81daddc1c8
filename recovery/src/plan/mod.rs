//! The recovery planner: from a snapshot of the catalog and one recovery target to a plan
//! that is proven reachable, or a refusal that says what can be had instead. Pure: no IO,
//! no clock (the caller resolves local times), so every rule is unit-tested on synthetic
//! catalogs.
//!
//! The rules it keeps are PostgreSQL's (xlogrecovery.c, timeline.c, xlogarchive.c) and
//! are listed in DESIGN.md and docs/recovery.md.
//!
//! The planner may need more than the summaries say (an xid target whose segment must be
//! read to find the exact commit, a segment archived before the content index existed):
//! it then answers [`Outcome::NeedsSegments`], the caller decodes those segments fully
//! into [`SegmentContent::Decoded`] and asks again. It never asks twice for one segment.
//!
//! The parts:
//! - [`parse`]: the target flags read into these types (times with their zone);
//! - `timelines`: a timeline's ancestry, which timeline's file replay reads, the
//!   `latest` probe;
//! - `walk`: reading the archived segments along a path as replay does;
//! - `planner`: the rules per target and the plan;
//! - `windows`: what `info` shows;
//! - [`synthetic`]: large made-up catalogs for the benchmark.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use tidemark_pg::wal::{RestorePointAt, SegmentSummary};
use tidemark_pg::{HistoryEntry, Lsn, PgMajor, PgTimestamp, SystemId};

pub mod parse;
mod planner;
pub mod synthetic;
pub(crate) mod timelines;
pub(crate) mod walk;
mod windows;

#[cfg(test)]
mod tests;

pub use parse::{
    parse_target_action, parse_target_keyword, parse_target_lsn, parse_target_time,
    parse_target_timeline, parse_target_xid, time_setting, TargetParseError,
};

/// Where recovery should stop (one kind, as PostgreSQL allows one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `recovery_target = 'immediate'`: the backup's consistent point.
    Immediate,
    /// No target: the end of the archived WAL on the target timeline.
    Latest,
    /// `recovery_target_time`, already resolved to an instant.
    Time {
        /// The instant.
        at: DateTime<Utc>,
        /// `recovery_target_inclusive = off`.
        exclusive: bool,
    },
    /// `recovery_target_lsn`.
    Lsn {
        /// The LSN.
        lsn: Lsn,
        /// `recovery_target_inclusive = off`.
        exclusive: bool,
    },
    /// `recovery_target_xid`.
    Xid {
        /// The 32-bit xid as PostgreSQL compares it.
        xid: u32,
        /// `recovery_target_inclusive = off`.
        exclusive: bool,
    },
    /// `recovery_target_name`.
    Name(String),
}

/// `recovery_target_timeline` as asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimelineRequest {
    /// The newest timeline the history files lead to (PostgreSQL's default).
    #[default]
    Latest,
    /// The backup's timeline.
    Current,
    /// This timeline.
    Exact(u32),
}

/// `recovery_target_action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TargetAction {
    /// Pause at the target (PostgreSQL's default).
    #[default]
    Pause,
    /// End recovery and open for writes (a new timeline).
    Promote,
    /// Stop the server at the target.
    Shutdown,
}

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanRequest {
    /// The target.
    pub target: Target,
    /// The target timeline.
    pub timeline: TimelineRequest,
    /// What PostgreSQL does at the target.
    pub action: TargetAction,
    /// A backup chosen by id (`--backup`) instead of the planner's choice.
    pub backup: Option<String>,
    /// Extensions the given binaries provide (`--pg-bin`); `None`: not checked.
    pub available_extensions: Option<BTreeSet<String>>,
}

/// A backup as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupPoint {
    /// Its id.
    pub id: String,
    /// The timeline it starts on.
    pub timeline: u32,
    /// Where replay starts (the backup checkpoint's redo point).
    pub start_lsn: Lsn,
    /// The timeline it ends on.
    pub stop_timeline: u32,
    /// Where it becomes consistent.
    pub stop_lsn: Lsn,
    /// When it started.
    pub start_time: DateTime<Utc>,
    /// When it ended: no commit before `stop_lsn` is later than this.
    pub stop_time: DateTime<Utc>,
    /// Bytes of data to restore.
    pub size: u64,
    /// Extensions its databases use (names).
    pub extensions: BTreeSet<String>,
}

/// One archived segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFacts {
    /// Its file name.
    pub name: String,
    /// Bytes restore_command will fetch (stored size).
    pub stored_size: u64,
    /// What it holds.
    pub content: SegmentContent,
}

/// What the planner knows of a segment's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentContent {
    /// Archived before the content index: the planner asks for it when it matters.
    NotIndexed,
    /// The summary from the index, crossing records already joined by the caller.
    Summary(Box<SegmentSummary>),
    /// Decoded on demand: the summary and every transaction completion.
    Decoded(Box<DecodedSegment>),
}

/// A segment decoded in full (see [`Outcome::NeedsSegments`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedSegment {
    /// Its summary.
    pub summary: SegmentSummary,
    /// Every commit and abort that starts in it (the crossing one included), in LSN order.
    pub completions: Vec<Completion>,
    /// Every restore point that starts in it, in LSN order (the summary lists at most
    /// [`tidemark_pg::wal::RESTORE_POINTS_MAX`]).
    pub restore_points: Vec<RestorePointAt>,
    /// The content index held a summary of it (false: archived before the index, decoded
    /// on the fly; the plan says so).
    pub indexed: bool,
}

/// A commit or abort record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// The record's start.
    pub lsn: Lsn,
    /// The xid a target names (the record's, or the prepared transaction's).
    pub xid: u32,
    /// `xact_time`.
    pub time: PgTimestamp,
    /// Commit (true) or abort.
    pub commit: bool,
}

/// Everything the planner reads: the stanza's catalog at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogSnapshot {
    /// The stanza's cluster.
    pub system_id: SystemId,
    /// Its WAL segment size.
    pub segment_size: u64,
    /// Its major.
    pub pg_major: PgMajor,
    /// The backups, oldest first.
    pub backups: Vec<BackupPoint>,
    /// The archived history files, parsed, by timeline.
    pub histories: BTreeMap<u32, Vec<HistoryEntry>>,
    /// The archived segments by (timeline, segment number).
    pub segments: BTreeMap<(u32, u64), SegmentFacts>,
}

/// The answer.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// The target is reachable: how.
    Plan(Plan),
    /// It is not: why, and what is.
    Refused(Refusal),
    /// Decode these (timeline, segment number) in full and ask again.
    NeedsSegments(Vec<(u32, u64)>),
}

/// A proven plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The backup to restore.
    pub backup: BackupPoint,
    /// The target as asked.
    pub target: Target,
    /// The target timeline, resolved to a number.
    pub timeline: u32,
    /// The timelines replay walks, from the backup's to the target's, with where each is
    /// left.
    pub timeline_path: Vec<TimelineStep>,
    /// Other timelines that branch off the path after the backup's start (not followed).
    pub other_branches: Vec<Branch>,
    /// The WAL replay reads: first and last segment names per timeline.
    pub wal: Vec<WalRange>,
    /// Segments and bytes restore_command will fetch.
    pub wal_segments: u64,
    /// Bytes of those segments in the repository.
    pub wal_bytes: u64,
    /// Where replay is proven to stop (the stop record), as far as the index tells.
    pub stop: StopPoint,
    /// The recovery settings to write, in order (`recovery_target_time`, every other
    /// `recovery_target*` as `''`, `recovery_target_timeline` as a number,
    /// `recovery_target_action`, `recovery_target_inclusive`), values unquoted.
    pub settings: Vec<(String, String)>,
    /// What the operator should know (a repeated restore point name, missing
    /// extensions, segments decoded on the fly, …), one line each.
    pub warnings: Vec<String>,
}

/// One timeline on the replay path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineStep {
    /// The timeline.
    pub timeline: u32,
    /// Where replay leaves it (the next step's switch point); `None` for the last.
    pub until: Option<Lsn>,
}

/// A timeline branching off another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Branch {
    /// The new timeline.
    pub timeline: u32,
    /// The one it left.
    pub parent: u32,
    /// Where.
    pub fork: Lsn,
}

/// Segments of one timeline that replay reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRange {
    /// The timeline.
    pub timeline: u32,
    /// The first segment's name.
    pub first: String,
    /// The last segment's name.
    pub last: String,
    /// Segments in between, both included.
    pub segments: u64,
}

/// Where replay stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopPoint {
    /// The stop record's start, or the end of WAL for `latest`; `None` when only the
    /// segment is known.
    pub lsn: Option<Lsn>,
    /// Its time, when it is a commit, abort or restore point.
    pub time: Option<PgTimestamp>,
    /// What it is, in words ("commit of xid 745 at …", "end of archived WAL").
    pub description: String,
}

/// Why a target cannot be reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The reason, by kind.
    pub kind: RefusalKind,
    /// One line: what and why, naming the first missing segment or history file.
    pub message: String,
    /// The reachable points nearest the target, in words.
    pub nearest: Vec<String>,
}

/// Refusal kinds (each has a line in docs/recovery.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalKind {
    /// No backup at all, or the one asked for does not exist.
    NoBackup,
    /// The target lies before every usable backup's consistent point.
    BeforeFirstBackup,
    /// The target lies beyond the archived WAL (no commit past the time, LSN not
    /// reached, xid or name not found).
    BeyondArchive,
    /// A segment on the path is missing.
    WalGap,
    /// A segment on the path is damaged.
    DamagedWal,
    /// The target timeline is not in the archive, or not reachable from any backup.
    UnknownTimeline,
    /// The chain of history files has a hole.
    HistoryHole,
}

/// Plans `request` on `snapshot` (see the module doc).
pub fn plan(snapshot: &CatalogSnapshot, request: &PlanRequest) -> Outcome {
    planner::plan(snapshot, request)
}

/// What `info` shows per timeline: the recoverable window(s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineWindow {
    /// The timeline.
    pub timeline: u32,
    /// Its parent and fork point, from its history file (`None` for timeline 1).
    pub parent: Option<Branch>,
    /// Reachable stretches, split by gaps: earliest and latest reachable LSN and time.
    pub windows: Vec<Window>,
}

/// One continuous reachable stretch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// The earliest reachable point (a backup's consistent point).
    pub from_lsn: Lsn,
    /// Its time.
    pub from_time: DateTime<Utc>,
    /// The latest reachable point (the end of contiguous WAL).
    pub to_lsn: Lsn,
    /// The last commit time there, when the index knows it.
    pub to_time: Option<DateTime<Utc>>,
    /// The first missing segment after it, if the archive continues past a gap (or the
    /// damaged segment where replay stops).
    pub gap_at: Option<String>,
}

/// The recoverable windows per timeline.
pub fn windows(snapshot: &CatalogSnapshot) -> Vec<TimelineWindow> {
    windows::windows(snapshot)
}
