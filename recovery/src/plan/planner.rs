//! The planner proper: resolve the target timeline, try the backups on its path newest
//! first, prove for each that replay from it reaches the target (WAL continuity, no
//! damage, the stop record), and assemble the first that works into a [`Plan`]; or
//! refuse with the most useful reason. Pure.
//!
//! PostgreSQL's rules it keeps (xlogrecovery.c, `recoveryStopsBefore` /
//! `recoveryStopsAfter`):
//! - replay tests the target on every record from the backup's redo point on, before
//!   and after consistency alike; a stop before the consistent point is FATAL
//!   ("requested recovery stop point is before consistent recovery point"). So a backup
//!   is usable only when the stop record replay meets first lies at or after its
//!   `stop_lsn`;
//! - time: the stop is *before* the first commit or abort (plain or prepared) whose
//!   `xact_time` is `>` the target (inclusive) or `>=` it (exclusive); restore points
//!   never stop a time target. Commits before a backup's `stop_lsn` are no later than its
//!   `stop_time`, so a backup whose `stop_time` is `<=` (inclusive) or `<` (exclusive) the
//!   target cannot stop early;
//! - xid: the commit or abort record of exactly that xid (the prepared transaction's for
//!   the two-phase kinds); after it when inclusive, before it when exclusive;
//! - name: after the first restore point of that name replay meets;
//! - LSN: the first record whose start is `>=` the target; after it when inclusive,
//!   before it when exclusive;
//! - immediate: at the consistent point.
//!
//! Segments archived before the content index ([`SegmentContent::NotIndexed`]) are asked
//! for when their content decides the answer: where a time, xid or name stop may lie, and
//! for `latest`, whose end PostgreSQL would not question (damage there ends recovery
//! early and silently). For an LSN or `immediate` target PostgreSQL itself fails when the
//! WAL does not reach the target, so they are not read.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use tidemark_pg::{Lsn, PgTimestamp};

use super::parse::time_setting;
use super::timelines::{
    first_missing_history, history_name, known_timelines, newest_timeline, TimelinePath,
};
use super::walk::{walk, Archive, Seg, Verdict, Walk, WalkEnd};
use super::{
    BackupPoint, Branch, CatalogSnapshot, Completion, DecodedSegment, Outcome, Plan, PlanRequest,
    Refusal, RefusalKind, SegmentContent, StopPoint, Target, TimelineRequest, TimelineStep,
    WalRange,
};

/// Why planning stopped without a plan.
enum Halt {
    Refused(Refusal),
    Needs(Vec<(u32, u64)>),
}

fn refusal(kind: RefusalKind, message: String, nearest: Vec<String>) -> Refusal {
    Refusal {
        kind,
        message,
        nearest,
    }
}

/// Plans `request` on `snapshot` (see [`super::plan`]).
pub(super) fn plan(snapshot: &CatalogSnapshot, request: &PlanRequest) -> Outcome {
    let planner = Planner {
        archive: Archive::new(snapshot),
        snapshot,
        request,
    };
    match planner.run() {
        Ok(plan) => Outcome::Plan(plan),
        Err(Halt::Refused(r)) => Outcome::Refused(r),
        Err(Halt::Needs(segments)) => Outcome::NeedsSegments(segments),
    }
}

struct Planner<'a> {
    archive: Archive<'a>,
    snapshot: &'a CatalogSnapshot,
    request: &'a PlanRequest,
}

/// The record replay stops at (or before), as far as the index tells.
#[derive(Clone, Debug, Default)]
struct Hit {
    lsn: Option<Lsn>,
    time: Option<PgTimestamp>,
    xid: Option<u32>,
    commit: Option<bool>,
}

/// A backup proven to reach the target.
struct Proof<'a> {
    backup: &'a BackupPoint,
    path: TimelinePath,
    /// The segments replay reads, in order.
    segments: Vec<Seg<'a>>,
    stop: StopPoint,
    warnings: Vec<String>,
}

/// Why one backup does not do.
enum Failure {
    Needs(Vec<(u32, u64)>),
    Rejected(Refusal),
}

type Proven<'a> = Result<Proof<'a>, Failure>;

fn ts(t: DateTime<Utc>) -> PgTimestamp {
    PgTimestamp::from_unix_micros(t.timestamp_micros())
}

impl<'a> Planner<'a> {
    fn run(&self) -> Result<Plan, Halt> {
        let snapshot = self.snapshot;
        if snapshot.backups.is_empty() {
            return Err(Halt::Refused(refusal(
                RefusalKind::NoBackup,
                "the stanza has no backup: nothing to restore from (take one with `tidemark backup`)"
                    .into(),
                Vec::new(),
            )));
        }
        let candidates: Vec<&BackupPoint> = match &self.request.backup {
            Some(id) => match snapshot.backups.iter().find(|b| &b.id == id) {
                Some(b) => vec![b],
                None => {
                    return Err(Halt::Refused(refusal(
                        RefusalKind::NoBackup,
                        format!("the stanza has no backup {id:?}"),
                        snapshot
                            .backups
                            .iter()
                            .map(|b| self.describe_backup(b))
                            .collect(),
                    )))
                }
            },
            None => {
                let mut all: Vec<&BackupPoint> = snapshot.backups.iter().collect();
                all.sort_by_key(|b| std::cmp::Reverse((b.stop_lsn, b.stop_time)));
                all
            }
        };

        let known = known_timelines(snapshot);
        let newest = newest_timeline(snapshot);
        if let TimelineRequest::Exact(n) = self.request.timeline {
            if !known.contains(&n) {
                return Err(Halt::Refused(refusal(
                    RefusalKind::UnknownTimeline,
                    format!(
                        "timeline {n} is not in the archive (no history file, segment or backup of it)"
                    ),
                    vec![format!("timelines in the archive: {}", join(&known))],
                )));
            }
        }

        let mut paths: BTreeMap<u32, TimelinePath> = BTreeMap::new();
        let mut rejects: Vec<Refusal> = Vec::new();
        let mut off_path: Vec<String> = Vec::new();
        let mut on_path: Vec<&BackupPoint> = Vec::new();
        for backup in &candidates {
            let tli = match self.request.timeline {
                TimelineRequest::Latest => newest,
                TimelineRequest::Current => backup.timeline,
                TimelineRequest::Exact(n) => n,
            };
            let path = paths
                .entry(tli)
                .or_insert_with(|| TimelinePath::of(snapshot, tli))
                .clone();
            if let Err(why) = path.admits(backup) {
                off_path.push(why);
                continue;
            }
            if self.request.timeline == TimelineRequest::Latest {
                if let Some(hole) = first_missing_history(snapshot, backup.timeline, newest) {
                    return Err(Halt::Refused(self.history_hole(hole, newest)));
                }
            }
            on_path.push(backup);
            match self.prove(backup, path) {
                Ok(mut proof) => {
                    // A newer backup passed over for a broken archive, not for being too
                    // late, is news to the operator.
                    for r in rejects
                        .iter()
                        .filter(|r| matches!(r.kind, RefusalKind::WalGap | RefusalKind::DamagedWal))
                    {
                        proof
                            .warnings
                            .push(format!("a newer backup is not usable: {}", r.message));
                    }
                    return Ok(self.assemble(proof));
                }
                Err(Failure::Needs(segments)) => return Err(Halt::Needs(segments)),
                Err(Failure::Rejected(r)) => rejects.push(r),
            }
        }

        if on_path.is_empty() {
            if self.request.timeline == TimelineRequest::Latest {
                let lowest = candidates.iter().map(|b| b.timeline).min().unwrap_or(1);
                if let Some(hole) = first_missing_history(snapshot, lowest, newest) {
                    return Err(Halt::Refused(self.history_hole(hole, newest)));
                }
            }
            return Err(Halt::Refused(
                self.no_backup_on_path(&candidates, &off_path),
            ));
        }
        // The newest backup's reason, unless it is only "too late": then an older backup's
        // reason says more (a gap, damage), and when every backup is too late the oldest's
        // (the earliest consistent point) is the one to report.
        let chosen = rejects
            .iter()
            .find(|r| r.kind != RefusalKind::BeforeFirstBackup)
            .or(rejects.last())
            .cloned()
            .expect("a backup on the path was tried");
        let mut chosen = chosen;
        if chosen.kind == RefusalKind::BeforeFirstBackup {
            let oldest = on_path.last().expect("non-empty");
            let line = if self.request.backup.is_some() {
                format!(
                    "{}; without --backup the planner looks for an older one",
                    self.describe_backup(oldest)
                )
            } else {
                format!(
                    "earliest consistent point: {}",
                    self.describe_backup(oldest)
                )
            };
            chosen.nearest.insert(0, line);
        }
        Err(Halt::Refused(chosen))
    }

    fn describe_backup(&self, b: &BackupPoint) -> String {
        format!(
            "backup {} (timeline {}, consistent at {} {})",
            b.id,
            b.stop_timeline,
            b.stop_lsn,
            time_setting(b.stop_time)
        )
    }

    fn history_hole(&self, hole: u32, newest: u32) -> Refusal {
        let below = hole - 1;
        refusal(
            RefusalKind::HistoryHole,
            format!(
                "history file {} is missing from the archive while timeline {newest} exists: \
                 PostgreSQL's recovery_target_timeline = 'latest' would stop probing at timeline \
                 {below} and silently recover an older history",
                history_name(hole)
            ),
            // The newest timeline can be followed only through its own history file (it
            // names every ancestor); without it, suggesting it would suggest a refusal.
            self.snapshot
                .histories
                .contains_key(&newest)
                .then(|| {
                    format!(
                        "--target-timeline {newest} follows the newest timeline ({})",
                        TimelinePath::of(self.snapshot, newest).describe()
                    )
                })
                .into_iter()
                .chain([format!(
                    "--target-timeline {below} follows the last timeline before the hole"
                )])
                .collect(),
        )
    }

    fn no_backup_on_path(&self, candidates: &[&BackupPoint], reasons: &[String]) -> Refusal {
        let target = match self.request.timeline {
            TimelineRequest::Latest => newest_timeline(self.snapshot),
            TimelineRequest::Exact(n) => n,
            TimelineRequest::Current => candidates.first().map_or(1, |b| b.timeline),
        };
        let path = TimelinePath::of(self.snapshot, target);
        let mut kind = RefusalKind::UnknownTimeline;
        let message = match (candidates.len(), reasons.first()) {
            // PostgreSQL takes a timeline without history file for one without parents.
            _ if target > 1 && !self.snapshot.histories.contains_key(&target) => {
                kind = RefusalKind::HistoryHole;
                format!(
                    "history file {} is missing from the archive: timeline {target}'s ancestry is \
                     unknown and no backup lies on timeline {target} itself",
                    history_name(target)
                )
            }
            (1, Some(why)) => why.clone(),
            _ => format!(
                "no backup lies on timeline {target}'s history ({}): {}",
                path.describe(),
                reasons.first().map_or("", String::as_str)
            ),
        };
        let mut nearest: Vec<String> = candidates
            .iter()
            .map(|b| {
                format!(
                    "--target-timeline {} reaches {}",
                    b.timeline,
                    self.describe_backup(b)
                )
            })
            .collect();
        nearest.dedup();
        refusal(kind, message, nearest)
    }

    fn prove(&self, backup: &'a BackupPoint, path: TimelinePath) -> Proven<'a> {
        match &self.request.target {
            Target::Immediate => self.prove_immediate(backup, path),
            Target::Latest => self.prove_latest(backup, path),
            Target::Time { at, exclusive } => self.prove_time(backup, path, *at, *exclusive),
            Target::Lsn { lsn, .. } => self.prove_lsn(backup, path, *lsn),
            Target::Xid { xid, .. } => self.prove_xid(backup, path, *xid),
            Target::Name(name) => self.prove_name(backup, path, name),
        }
    }

    // ----- per target -----

    fn prove_immediate(&self, backup: &'a BackupPoint, path: TimelinePath) -> Proven<'a> {
        let last = self
            .archive
            .segment_of(Lsn(backup.stop_lsn.0.saturating_sub(1)));
        let stop_lsn = backup.stop_lsn;
        let walk = walk(&self.archive, &path, backup.start_lsn, Some(last), |seg| {
            if seg.segno != last {
                return Verdict::NotHere;
            }
            match seg.summary() {
                Some(s)
                    if s.damage.as_ref().is_some_and(|d| d.lsn < stop_lsn)
                        || s.ended_at.is_some_and(|e| e < stop_lsn) =>
                {
                    Verdict::NotHere
                }
                _ => Verdict::Found(()),
            }
        });
        match walk.end {
            WalkEnd::Found(()) | WalkEnd::Limit => {
                let stop = StopPoint {
                    lsn: Some(stop_lsn),
                    time: None,
                    description: format!(
                        "at backup {}'s consistent point {stop_lsn} ({})",
                        backup.id,
                        time_setting(backup.stop_time)
                    ),
                };
                Ok(self.proof(backup, path, walk.visited, stop))
            }
            _ => Err(self.walk_failure(
                backup,
                &path,
                &walk,
                &format!("backup {}'s consistent point {stop_lsn}", backup.id),
                Vec::new(),
            )),
        }
    }

    fn prove_latest(&self, backup: &'a BackupPoint, path: TimelinePath) -> Proven<'a> {
        let walk = walk(&self.archive, &path, backup.start_lsn, None, |seg| {
            if seg.summary().is_none() {
                Verdict::Unknown
            } else {
                Verdict::NotHere::<()>
            }
        });
        if !walk.unknown.is_empty() {
            return Err(Failure::Needs(walk.unknown));
        }
        let last = walk.visited.last().copied();
        match (&walk.end, last) {
            (
                WalkEnd::Missing {
                    more_after: false, ..
                },
                Some(last),
            ) if last.end_of_wal(&self.archive) >= backup.stop_lsn => {
                let end = last.end_of_wal(&self.archive);
                let latest = walk
                    .latest_completion()
                    .map(|t| format!(", last commit or abort at {t}"))
                    .unwrap_or_default();
                let stop = StopPoint {
                    lsn: Some(end),
                    time: None,
                    description: format!(
                        "at the end of archived WAL on timeline {}: {end} (segment {}{latest})",
                        path.target, last.facts.name
                    ),
                };
                Ok(self.proof(backup, path, walk.visited, stop))
            }
            _ => Err(self.walk_failure(
                backup,
                &path,
                &walk,
                "the end of the archived WAL",
                Vec::new(),
            )),
        }
    }

    fn prove_time(
        &self,
        backup: &'a BackupPoint,
        path: TimelinePath,
        at: DateTime<Utc>,
        exclusive: bool,
    ) -> Proven<'a> {
        let target = ts(at);
        let passes = |t: PgTimestamp| if exclusive { t >= target } else { t > target };
        let consistent = ts(backup.stop_time);
        let early = if exclusive {
            consistent >= target
        } else {
            consistent > target
        };
        if early {
            return Err(Failure::Rejected(refusal(
                RefusalKind::BeforeFirstBackup,
                format!(
                    "the target {} lies before backup {}'s consistent point ({}, {}): PostgreSQL \
                     would stop before it and fail (\"requested recovery stop point is before \
                     consistent recovery point\")",
                    time_setting(at),
                    backup.id,
                    time_setting(backup.stop_time),
                    backup.stop_lsn
                ),
                Vec::new(),
            )));
        }
        let start = backup.start_lsn;
        let matters_from = self.archive.segment_of(backup.stop_lsn);
        let walk = walk(&self.archive, &path, start, None, |seg| {
            if let Some(decoded) = seg.decoded() {
                return first_completion(decoded, start, |c| passes(c.time));
            }
            match seg.summary() {
                Some(s) => match s.xacts {
                    Some(x) if passes(x.max_time) => {
                        // The first completion is the stop when it passes already.
                        let exact = passes(x.first_time) && x.first_lsn >= start;
                        Verdict::Found(Hit {
                            lsn: exact.then_some(x.first_lsn),
                            time: exact.then_some(x.first_time),
                            ..Hit::default()
                        })
                    }
                    _ => Verdict::NotHere,
                },
                // Before the consistent point no commit can pass the target (see above).
                None if seg.segno >= matters_from => Verdict::Unknown,
                None => Verdict::NotHere,
            }
        });
        if !walk.unknown.is_empty() {
            return Err(Failure::Needs(walk.unknown));
        }
        let what = format!(
            "commit or abort {} {}",
            if exclusive { "at or after" } else { "after" },
            time_setting(at)
        );
        let WalkEnd::Found(hit) = &walk.end else {
            let mut nearest = Vec::new();
            if let Some(t) = walk.latest_completion() {
                nearest.push(format!("latest commit or abort archived: {t}"));
            }
            return Err(self.walk_failure(backup, &path, &walk, &format!("a {what}"), nearest));
        };
        let hit = hit.clone();
        if let Some(at_lsn) = hit.lsn.filter(|l| *l < backup.stop_lsn) {
            // Only when a commit before the consistent point is later than the backup's
            // stop time (clocks apart): the decode shows what PostgreSQL would do.
            return Err(Failure::Rejected(refusal(
                RefusalKind::BeforeFirstBackup,
                format!(
                    "the first commit or abort past the target is at {at_lsn}, before backup {}'s \
                     consistent point {}: PostgreSQL would stop there and fail",
                    backup.id, backup.stop_lsn
                ),
                Vec::new(),
            )));
        }
        let seg = *walk.visited.last().expect("found in a visited segment");
        let exact = match (hit.lsn, hit.xid, hit.time) {
            (Some(lsn), Some(xid), Some(time)) => format!(
                ": {} of xid {xid} at {time} ({lsn})",
                if hit.commit == Some(false) {
                    "abort"
                } else {
                    "commit"
                }
            ),
            (Some(lsn), _, Some(time)) => format!(": the one at {time} ({lsn})"),
            _ => format!(", in segment {}", seg.facts.name),
        };
        let stop = StopPoint {
            lsn: hit.lsn,
            time: hit.time,
            description: format!("before the first {what}{exact}"),
        };
        self.finish(backup, path, walk, &hit, stop, Vec::new())
    }

    fn prove_lsn(&self, backup: &'a BackupPoint, path: TimelinePath, lsn: Lsn) -> Proven<'a> {
        let exclusive = matches!(
            self.request.target,
            Target::Lsn {
                exclusive: true,
                ..
            }
        );
        if lsn < backup.stop_lsn {
            return Err(Failure::Rejected(refusal(
                RefusalKind::BeforeFirstBackup,
                format!(
                    "LSN {lsn} lies before backup {}'s consistent point {}: PostgreSQL would stop \
                     before it and fail",
                    backup.id, backup.stop_lsn
                ),
                Vec::new(),
            )));
        }
        let holder = self.archive.segment_of(lsn);
        let walk = walk(
            &self.archive,
            &path,
            backup.start_lsn,
            Some(holder),
            |seg| {
                if seg.segno != holder {
                    return Verdict::NotHere;
                }
                // A record at or after the target that also completes here; the first
                // such is the segment's first record when that one is at or after it.
                match seg.summary() {
                    Some(s) if s.last_record.is_some_and(|r| r >= lsn) => Verdict::Found(Hit {
                        lsn: s.first_record.filter(|r| *r >= lsn),
                        ..Hit::default()
                    }),
                    _ => Verdict::NotHere,
                }
            },
        );
        let what = format!("LSN {lsn}");
        let side = if exclusive { "before" } else { "after" };
        let describe = |hit: &Hit| match hit.lsn {
            Some(at) => format!("{side} the first record at or after {lsn}: the one at {at}"),
            None => format!("{side} the first record at or after {lsn}"),
        };
        match walk.end {
            WalkEnd::Found(hit) => {
                let stop = StopPoint {
                    lsn: hit.lsn,
                    time: None,
                    description: describe(&hit),
                };
                Ok(self.proof(backup, path, walk.visited, stop))
            }
            WalkEnd::Limit => {
                // No record known to start at or after the target in its segment: the one
                // replay stops at begins in (or continues into) the next.
                let seg = *walk.visited.last().expect("the limit was visited");
                match self.archive.on_path(&path, holder + 1) {
                    Some(next) => {
                        let mut visited = walk.visited;
                        visited.push(next);
                        let hit = Hit::default();
                        let stop = StopPoint {
                            lsn: None,
                            time: None,
                            description: describe(&hit),
                        };
                        Ok(self.proof(backup, path, visited, stop))
                    }
                    None if seg.summary().is_none() => Err(Failure::Needs(vec![seg.key()])),
                    None => Err(self.walk_failure(
                        backup,
                        &path,
                        &Walk {
                            visited: walk.visited,
                            unknown: Vec::new(),
                            end: WalkEnd::<()>::Missing {
                                tli: path.file_timeline(holder + 1),
                                segno: holder + 1,
                                more_after: self.archive.has_segments_after(&path, holder + 1),
                            },
                        },
                        &what,
                        Vec::new(),
                    )),
                }
            }
            _ => Err(self.walk_failure(backup, &path, &walk, &what, Vec::new())),
        }
    }

    fn prove_xid(&self, backup: &'a BackupPoint, path: TimelinePath, xid: u32) -> Proven<'a> {
        let exclusive = matches!(
            self.request.target,
            Target::Xid {
                exclusive: true,
                ..
            }
        );
        let start = backup.start_lsn;
        let walk = walk(&self.archive, &path, start, None, |seg| {
            if let Some(decoded) = seg.decoded() {
                return first_completion(decoded, start, |c| c.xid == xid);
            }
            match seg.summary() {
                Some(s) => match s.xacts {
                    Some(x) if x.min_xid <= xid && xid <= x.max_xid => Verdict::Unknown,
                    _ => Verdict::NotHere,
                },
                None => Verdict::Unknown,
            }
        });
        if !walk.unknown.is_empty() {
            return Err(Failure::Needs(walk.unknown));
        }
        let what = format!("the commit or abort of transaction {xid}");
        let WalkEnd::Found(hit) = &walk.end else {
            let mut nearest = Vec::new();
            let ranges: Vec<(u32, u32)> = walk
                .visited
                .iter()
                .filter_map(|s| s.summary().and_then(|s| s.xacts))
                .map(|x| (x.min_xid, x.max_xid))
                .collect();
            if let (Some(lo), Some(hi)) = (
                ranges.iter().map(|r| r.0).min(),
                ranges.iter().map(|r| r.1).max(),
            ) {
                nearest.push(format!(
                    "transactions completed after backup {}'s start: xids {lo} to {hi}",
                    backup.id
                ));
            }
            return Err(self.walk_failure(backup, &path, &walk, &what, nearest));
        };
        let hit = hit.clone();
        let lsn = hit.lsn.expect("decoded completions are exact");
        let time = hit.time.expect("decoded completions are exact");
        if lsn < backup.stop_lsn {
            return Err(Failure::Rejected(refusal(
                RefusalKind::BeforeFirstBackup,
                format!(
                    "transaction {xid} completes at {lsn} ({time}), before backup {}'s consistent \
                     point {}: PostgreSQL would stop there and fail",
                    backup.id, backup.stop_lsn
                ),
                Vec::new(),
            )));
        }
        let committed = hit.commit != Some(false);
        let mut warnings = Vec::new();
        if !committed {
            warnings.push(format!(
                "transaction {xid} was aborted (at {time}): the restored cluster has none of its \
                 changes"
            ));
        }
        let stop = StopPoint {
            lsn: Some(lsn),
            time: Some(time),
            description: format!(
                "{} the {} of xid {xid} at {time} ({lsn})",
                if exclusive { "before" } else { "after" },
                if committed { "commit" } else { "abort" }
            ),
        };
        self.finish(backup, path, walk, &hit, stop, warnings)
    }

    fn prove_name(&self, backup: &'a BackupPoint, path: TimelinePath, name: &str) -> Proven<'a> {
        let start = backup.start_lsn;
        let walk = walk(&self.archive, &path, start, None, |seg| {
            let (listed, omitted) = match (&seg.facts.content, seg.summary()) {
                (SegmentContent::Decoded(d), _) => (
                    d.restore_points
                        .iter()
                        .chain(d.summary.restore_points.iter())
                        .filter(|rp| rp.lsn >= start && rp.name == name)
                        .min_by_key(|rp| rp.lsn),
                    0,
                ),
                (_, Some(s)) => (
                    s.restore_points
                        .iter()
                        .find(|rp| rp.lsn >= start && rp.name == name),
                    s.restore_points_omitted,
                ),
                (_, None) => return Verdict::Unknown,
            };
            match listed {
                Some(rp) => Verdict::Found(Hit {
                    lsn: Some(rp.lsn),
                    time: Some(rp.time),
                    ..Hit::default()
                }),
                // The listed points come first in LSN order; an omitted one may match.
                None if omitted > 0 => Verdict::Unknown,
                None => Verdict::NotHere,
            }
        });
        if !walk.unknown.is_empty() {
            return Err(Failure::Needs(walk.unknown));
        }
        let what = format!("restore point {name:?}");
        let WalkEnd::Found(hit) = &walk.end else {
            let mut names: BTreeSet<&str> = BTreeSet::new();
            for seg in &walk.visited {
                if let Some(s) = seg.summary() {
                    names.extend(s.restore_points.iter().map(|rp| rp.name.as_str()));
                }
            }
            let nearest = if names.is_empty() {
                vec!["no restore point is archived after the backup's start".into()]
            } else {
                vec![format!(
                    "restore points archived after backup {}'s start: {}",
                    backup.id,
                    names
                        .iter()
                        .take(10)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                )]
            };
            return Err(self.walk_failure(backup, &path, &walk, &what, nearest));
        };
        let hit = hit.clone();
        let lsn = hit.lsn.expect("restore points are exact");
        let time = hit.time.expect("restore points are exact");
        if lsn < backup.stop_lsn {
            return Err(Failure::Rejected(refusal(
                RefusalKind::BeforeFirstBackup,
                format!(
                    "restore point {name:?} at {lsn}, the first replay from backup {} meets, lies \
                     before its consistent point {}: PostgreSQL would stop there and fail",
                    backup.id, backup.stop_lsn
                ),
                Vec::new(),
            )));
        }
        let mut warnings = Vec::new();
        let all = self.restore_points_named(&path, name);
        if all.len() > 1 {
            warnings.push(format!(
                "restore point name {name:?} occurs {} times on this timeline path (at {}): \
                 replay stops at the first after backup {}'s start, {lsn}",
                all.len(),
                all.iter()
                    .map(Lsn::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                backup.id
            ));
        }
        let stop = StopPoint {
            lsn: Some(lsn),
            time: Some(time),
            description: format!("after restore point {name:?} at {lsn} ({time})"),
        };
        self.finish(backup, path, walk, &hit, stop, warnings)
    }

    /// Every known restore point named `name` on `path` (listed in summaries or decoded).
    fn restore_points_named(&self, path: &TimelinePath, name: &str) -> Vec<Lsn> {
        let mut found = BTreeSet::new();
        for step in &path.steps {
            let Some((first, last)) = path.segment_span(step.tli) else {
                continue;
            };
            let range = self
                .snapshot
                .segments
                .range((step.tli, first)..=(step.tli, last.unwrap_or(u64::MAX)));
            for (_, facts) in range {
                let (summary, extra) = match &facts.content {
                    SegmentContent::NotIndexed => continue,
                    SegmentContent::Summary(s) => (&**s, &[][..]),
                    SegmentContent::Decoded(d) => (&d.summary, &d.restore_points[..]),
                };
                found.extend(
                    summary
                        .restore_points
                        .iter()
                        .chain(extra)
                        .filter(|rp| rp.name == name)
                        .map(|rp| rp.lsn),
                );
            }
        }
        found.into_iter().collect()
    }

    // ----- shared -----

    /// Completes a proof whose stop record was found in the last visited segment: the
    /// record must be read whole, so when it may continue into the next segment, that
    /// one is needed too.
    fn finish(
        &self,
        backup: &'a BackupPoint,
        path: TimelinePath,
        walk: Walk<'a, Hit>,
        hit: &Hit,
        stop: StopPoint,
        warnings: Vec<String>,
    ) -> Proven<'a> {
        let mut visited = walk.visited;
        let last = *visited.last().expect("found in a visited segment");
        if let Some(crossing) = last.crossing_start() {
            if hit.lsn.is_none_or(|l| l >= crossing) {
                match self.archive.on_path(&path, last.segno + 1) {
                    Some(next) => visited.push(next),
                    // Reading the segment in full tells whether the stop is before it.
                    None if last.decoded().is_none() => {
                        return Err(Failure::Needs(vec![last.key()]))
                    }
                    None => {
                        let missing = self
                            .archive
                            .name(path.file_timeline(last.segno + 1), last.segno + 1);
                        return Err(Failure::Rejected(refusal(
                            RefusalKind::WalGap,
                            format!(
                                "WAL segment {missing} is missing from the archive: the stop record \
                                 at {crossing} continues into it"
                            ),
                            vec![format!(
                                "WAL is readable up to {}",
                                last.end_of_wal(&self.archive)
                            )],
                        )));
                    }
                }
            }
        }
        let mut proof = self.proof(backup, path, visited, stop);
        proof.warnings.extend(warnings);
        Ok(proof)
    }

    fn proof(
        &self,
        backup: &'a BackupPoint,
        path: TimelinePath,
        segments: Vec<Seg<'a>>,
        stop: StopPoint,
    ) -> Proof<'a> {
        Proof {
            backup,
            path,
            segments,
            stop,
            warnings: Vec::new(),
        }
    }

    /// The refusal for a walk that ended before finding `what`.
    fn walk_failure<T>(
        &self,
        backup: &BackupPoint,
        path: &TimelinePath,
        walk: &Walk<'_, T>,
        what: &str,
        mut nearest: Vec<String>,
    ) -> Failure {
        let readable = walk
            .visited
            .last()
            .map(|s| (s.end_of_wal(&self.archive), s.facts.name.clone()));
        let reach = match &readable {
            Some((end, name)) => format!(
                "WAL from backup {} is readable up to {end} (segment {name})",
                backup.id
            ),
            None => format!(
                "no WAL is archived from backup {}'s start {}",
                backup.id, backup.start_lsn
            ),
        };
        let latest = walk
            .latest_completion()
            .map(|t| format!("latest commit or abort before it: {t}"));
        let (kind, message) = match &walk.end {
            WalkEnd::Missing {
                tli,
                segno,
                more_after,
            } if *more_after
                || readable
                    .as_ref()
                    .is_none_or(|(end, _)| *end < backup.stop_lsn) =>
            {
                (
                    RefusalKind::WalGap,
                    format!(
                        "WAL segment {} is missing from the archive: replay from backup {} cannot \
                         reach {what}",
                        self.archive.name(*tli, *segno),
                        backup.id
                    ),
                )
            }
            WalkEnd::Damaged(error) => {
                let name = walk
                    .visited
                    .last()
                    .map(|s| s.facts.name.clone())
                    .unwrap_or_default();
                (
                    RefusalKind::DamagedWal,
                    format!(
                        "WAL segment {name} is damaged at {} ({}): replay from backup {} stops \
                         there, before {what}",
                        error.lsn, error.kind, backup.id
                    ),
                )
            }
            _ => (
                RefusalKind::BeyondArchive,
                format!(
                    "{what} is not in the archived WAL of timeline {} ({}): {}",
                    path.target,
                    path.describe(),
                    match &readable {
                        Some((end, _)) => format!(
                            "it ends at {end}, and PostgreSQL would fail at its end (\"recovery \
                             ended before configured recovery target was reached\")"
                        ),
                        None => "nothing is archived".into(),
                    }
                ),
            ),
        };
        nearest.insert(0, reach);
        if let Some(latest) = latest {
            if !nearest.iter().any(|n| n.starts_with("latest commit")) {
                nearest.push(latest);
            }
        }
        if kind == RefusalKind::BeyondArchive {
            nearest.push("--target latest recovers all the archived WAL".into());
        }
        Failure::Rejected(refusal(kind, message, nearest))
    }

    // ----- the plan -----

    fn assemble(&self, proof: Proof<'_>) -> Plan {
        let Proof {
            backup,
            path,
            segments,
            stop,
            mut warnings,
        } = proof;
        let start = path
            .steps
            .iter()
            .position(|s| s.tli == backup.timeline)
            .unwrap_or(0);
        let timeline_path: Vec<TimelineStep> = path.steps[start..]
            .iter()
            .map(|s| TimelineStep {
                timeline: s.tli,
                until: s.end,
            })
            .collect();

        let mut wal: Vec<WalRange> = Vec::new();
        for seg in &segments {
            match wal.last_mut() {
                Some(range) if range.timeline == seg.tli => {
                    range.last = seg.facts.name.clone();
                    range.segments += 1;
                }
                _ => wal.push(WalRange {
                    timeline: seg.tli,
                    first: seg.facts.name.clone(),
                    last: seg.facts.name.clone(),
                    segments: 1,
                }),
            }
        }
        let wal_bytes = segments.iter().map(|s| s.facts.stored_size).sum();

        let other_branches = self.other_branches(&path, backup);
        if !other_branches.is_empty() {
            warnings.push(format!(
                "the archive holds other branches after backup {}'s start: {}; this plan follows \
                 timeline {} ({})",
                backup.id,
                other_branches
                    .iter()
                    .map(|b| format!(
                        "timeline {} (off timeline {} at {})",
                        b.timeline, b.parent, b.fork
                    ))
                    .collect::<Vec<_>>()
                    .join(", "),
                path.target,
                path.describe()
            ));
        }
        // The other side of each fork on the path: a timeline left at a switch point may
        // have gone on (the old primary kept writing, or a test copy promoted away from
        // it). Its later WAL is not replayed: say so, and how to have it instead.
        for pair in path.steps.windows(2) {
            let (left, next) = (&pair[0], &pair[1]);
            let Some(fork) = left.end.filter(|f| *f >= backup.start_lsn) else {
                continue;
            };
            let fork_segno = self.archive.segment_of(fork);
            let beyond = self
                .snapshot
                .segments
                .range((left.tli, fork_segno + 1)..=(left.tli, u64::MAX))
                .next_back();
            if let Some((_, last)) = beyond {
                warnings.push(format!(
                    "timeline {} goes on past its fork to timeline {} at {fork} (archived up to                      {}): this plan does not replay it; `--target-timeline {}` does",
                    left.tli, next.tli, last.name, left.tli
                ));
            }
        }
        if let Some(available) = &self.request.available_extensions {
            let missing: Vec<&str> = backup
                .extensions
                .iter()
                .filter(|e| !available.contains(*e))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                warnings.push(format!(
                    "the backup's databases use extensions the given PostgreSQL binaries lack: {} \
                     (the restored cluster cannot load them)",
                    missing.join(", ")
                ));
            }
        }
        let on_the_fly: Vec<&str> = segments
            .iter()
            .filter(|s| s.decoded().is_some_and(|d| !d.indexed))
            .map(|s| s.facts.name.as_str())
            .collect();
        if !on_the_fly.is_empty() {
            warnings.push(format!(
                "{} segment(s) archived before the content index were decoded on the fly (first \
                 {}); `tidemark reindex` indexes them",
                on_the_fly.len(),
                on_the_fly[0]
            ));
        }
        if self.request.target == Target::Latest {
            warnings.push(
                "without a recovery target PostgreSQL ends recovery at the end of the archived WAL \
                 and opens for writes on a new timeline; recovery_target_action applies only to a \
                 target"
                    .into(),
            );
        }

        Plan {
            backup: backup.clone(),
            target: self.request.target.clone(),
            timeline: path.target,
            timeline_path,
            other_branches,
            wal,
            wal_segments: segments.len() as u64,
            wal_bytes,
            stop,
            settings: settings(&self.request.target, path.target, self.request),
            warnings,
        }
    }

    /// Timelines that branch off `path` after `backup`'s start and are not on it.
    fn other_branches(&self, path: &TimelinePath, backup: &BackupPoint) -> Vec<Branch> {
        let mut branches = Vec::new();
        for tli in self.snapshot.histories.keys() {
            if path.step(*tli).is_some() {
                continue;
            }
            let Some(branch) = super::timelines::parent_of(self.snapshot, *tli) else {
                continue;
            };
            let Some(parent) = path.step(branch.parent) else {
                continue;
            };
            let on_parent_part = parent.begin.is_none_or(|b| b <= branch.fork)
                && parent.end.is_none_or(|e| branch.fork <= e);
            if on_parent_part && branch.fork >= backup.start_lsn {
                branches.push(branch);
            }
        }
        branches
    }
}

/// The first completion of a decoded segment at or after `start` that `stops` says
/// replay stops at.
fn first_completion(
    decoded: &DecodedSegment,
    start: Lsn,
    stops: impl Fn(&Completion) -> bool,
) -> Verdict<Hit> {
    match decoded
        .completions
        .iter()
        .find(|c| c.lsn >= start && stops(c))
    {
        Some(c) => Verdict::Found(Hit {
            lsn: Some(c.lsn),
            time: Some(c.time),
            xid: Some(c.xid),
            commit: Some(c.commit),
        }),
        None => Verdict::NotHere,
    }
}

/// The recovery settings, in the order [`Plan::settings`] documents.
fn settings(target: &Target, timeline: u32, request: &PlanRequest) -> Vec<(String, String)> {
    const KINDS: [&str; 5] = [
        "recovery_target",
        "recovery_target_lsn",
        "recovery_target_name",
        "recovery_target_time",
        "recovery_target_xid",
    ];
    let (chosen, value, exclusive) = match target {
        Target::Immediate => (Some("recovery_target"), "immediate".to_string(), false),
        Target::Latest => (None, String::new(), false),
        Target::Time { at, exclusive } => {
            // PostgreSQL keeps microseconds; the planner compared the same truncated value.
            let micros = DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(*at);
            (
                Some("recovery_target_time"),
                time_setting(micros),
                *exclusive,
            )
        }
        Target::Lsn { lsn, exclusive } => {
            (Some("recovery_target_lsn"), lsn.to_string(), *exclusive)
        }
        Target::Xid { xid, exclusive } => {
            (Some("recovery_target_xid"), xid.to_string(), *exclusive)
        }
        Target::Name(name) => (Some("recovery_target_name"), name.clone(), false),
    };
    let mut out = Vec::new();
    if let Some(kind) = chosen {
        out.push((kind.to_string(), value));
    }
    for kind in KINDS {
        if Some(kind) != chosen {
            out.push((kind.to_string(), String::new()));
        }
    }
    out.push(("recovery_target_timeline".into(), timeline.to_string()));
    out.push((
        "recovery_target_action".into(),
        request.action.as_setting().into(),
    ));
    out.push((
        "recovery_target_inclusive".into(),
        if exclusive { "off" } else { "on" }.into(),
    ));
    out
}

fn join(set: &BTreeSet<u32>) -> String {
    set.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
