//! The job board: what the agent knows about each kind of job (backup, verify, drill,
//! expire), in memory, for every task of the agent to read.
//!
//! The scheduler writes it (a run started, a run ended, the next run planned); everything
//! else reads it: the metrics endpoint exports `tidemark_job_failures_total{job,kind}`
//! from [`JobStatus::failures`], status reports the last run and the next one. It is
//! rebuilt at start from the local state and the repository (see `state`), so it holds
//! nothing that is not also somewhere else.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A kind of job the agent schedules; each runs as `tidemark <subcommand>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// `tidemark backup`.
    Backup,
    /// `tidemark verify`.
    Verify,
    /// `tidemark drill`.
    Drill,
    /// `tidemark expire`.
    Expire,
}

impl JobKind {
    /// Every kind, in the order the agent lists them.
    pub const ALL: [JobKind; 4] = [
        JobKind::Backup,
        JobKind::Verify,
        JobKind::Drill,
        JobKind::Expire,
    ];

    /// The name used in settings (`<name>_schedule`), logs, metrics labels and the
    /// subcommand that runs it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Verify => "verify",
            JobKind::Drill => "drill",
            JobKind::Expire => "expire",
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a job failed: the metrics label `kind` of `tidemark_job_failures_total`. Read from
/// the child's exit code (docs/exit-codes.md), so each kind is what the command said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Exit 1: the repository or PostgreSQL failed, or the command's input was bad.
    Failed,
    /// Exit 2: configuration or usage (no repository, no stanza, a bad setting).
    Usage,
    /// Exit 3: the server belongs to another cluster than the stanza's.
    ClusterMismatch,
    /// Exit 4: integrity (verify found problems, corrupt data, checksum failures).
    Integrity,
    /// Exit 5: a recovery target that cannot be reached (drill).
    Unreachable,
    /// Exit 6: the drill ran and failed.
    DrillFailed,
    /// The child was killed by a signal it did not get from the agent (a crash, the OOM
    /// killer).
    Killed,
    /// The child could not be started, or its outcome read.
    Spawn,
    /// Any other exit code.
    Other,
}

impl FailureKind {
    /// Every kind, for exporters that list zero counts too.
    pub const ALL: [FailureKind; 9] = [
        FailureKind::Failed,
        FailureKind::Usage,
        FailureKind::ClusterMismatch,
        FailureKind::Integrity,
        FailureKind::Unreachable,
        FailureKind::DrillFailed,
        FailureKind::Killed,
        FailureKind::Spawn,
        FailureKind::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Failed => "failed",
            FailureKind::Usage => "usage",
            FailureKind::ClusterMismatch => "cluster_mismatch",
            FailureKind::Integrity => "integrity",
            FailureKind::Unreachable => "unreachable",
            FailureKind::DrillFailed => "drill_failed",
            FailureKind::Killed => "killed",
            FailureKind::Spawn => "spawn",
            FailureKind::Other => "other",
        }
    }

    /// The kind of a failed exit code (`None`: killed by a signal).
    pub fn from_exit_code(code: Option<i32>) -> FailureKind {
        use crate::exit;
        match code {
            None => FailureKind::Killed,
            Some(c) if c == i32::from(exit::FAILED) => FailureKind::Failed,
            Some(c) if c == i32::from(exit::USAGE) => FailureKind::Usage,
            Some(c) if c == i32::from(exit::CLUSTER_MISMATCH) => FailureKind::ClusterMismatch,
            Some(c) if c == i32::from(exit::INTEGRITY) => FailureKind::Integrity,
            Some(c) if c == i32::from(exit::TARGET_UNREACHABLE) => FailureKind::Unreachable,
            Some(c) if c == i32::from(exit::DRILL_FAILED) => FailureKind::DrillFailed,
            Some(_) => FailureKind::Other,
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "failure")]
pub enum Outcome {
    /// Exit 0.
    Succeeded,
    /// It failed; retried with backoff.
    Failed(FailureKind),
    /// Another run of the same kind held the job lock (a `tidemark backup` started by
    /// hand, or another agent): not a failure, the next tick tries again.
    Skipped,
    /// The agent stopped it (SIGTERM or SIGINT to the agent).
    Cancelled,
}

impl Outcome {
    /// The word logs and the history use.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed(_) => "failed",
            Outcome::Skipped => "skipped",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// One finished run of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRun {
    /// What ran.
    pub kind: JobKind,
    /// When the child was started.
    pub started: DateTime<Utc>,
    /// When it ended.
    pub ended: DateTime<Utc>,
    /// How.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The child's exit code (`None`: killed by a signal, or never started).
    pub exit_code: Option<i32>,
    /// The end of what the child wrote on stderr (its one-line error, when it failed).
    pub stderr_tail: String,
}

/// What the agent knows about one kind of job.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct JobStatus {
    /// Whether a schedule is configured for it.
    pub scheduled: bool,
    /// Set while a run is in flight: when it started.
    pub running_since: Option<DateTime<Utc>>,
    /// The last finished run, whatever its outcome.
    pub last_run: Option<JobRun>,
    /// The last run that succeeded.
    pub last_success: Option<JobRun>,
    /// When the next run starts (a retry after a failure, or the schedule's next time);
    /// `None` when the kind is not scheduled.
    pub next_run: Option<DateTime<Utc>>,
    /// Failures since the agent started, by kind (a counter: never goes down while the
    /// agent runs).
    pub failures: BTreeMap<FailureKind, u64>,
    /// Failures since the last success (what the retry backoff grows with).
    pub consecutive_failures: u32,
}

/// The job board, shared by every task of the agent (`Arc<JobBoard>`). Reads take a
/// snapshot: no lock is held across an await.
#[derive(Debug, Default)]
pub struct JobBoard {
    jobs: Mutex<BTreeMap<JobKind, JobStatus>>,
}

impl JobBoard {
    /// An empty board.
    pub fn new() -> JobBoard {
        JobBoard::default()
    }

    /// What is known about `kind`.
    pub fn status(&self, kind: JobKind) -> JobStatus {
        self.lock().get(&kind).cloned().unwrap_or_default()
    }

    /// Every kind's status (all four, in [`JobKind::ALL`] order).
    pub fn snapshot(&self) -> BTreeMap<JobKind, JobStatus> {
        let jobs = self.lock();
        JobKind::ALL
            .iter()
            .map(|k| (*k, jobs.get(k).cloned().unwrap_or_default()))
            .collect()
    }

    /// Changes what is known about `kind` (the scheduler's only way to write).
    pub(crate) fn update(&self, kind: JobKind, change: impl FnOnce(&mut JobStatus)) {
        change(self.lock().entry(kind).or_default());
    }

    /// Records that a run of `kind` started at `at`.
    pub(crate) fn started(&self, kind: JobKind, at: DateTime<Utc>) {
        self.update(kind, |s| s.running_since = Some(at));
    }

    /// Records a finished run: last run, last success, failure counters.
    pub(crate) fn finished(&self, run: &JobRun) {
        self.update(run.kind, |s| {
            s.running_since = None;
            match run.outcome {
                Outcome::Succeeded => {
                    s.last_success = Some(run.clone());
                    s.consecutive_failures = 0;
                }
                Outcome::Failed(kind) => {
                    *s.failures.entry(kind).or_default() += 1;
                    s.consecutive_failures += 1;
                }
                Outcome::Skipped | Outcome::Cancelled => {}
            }
            s.last_run = Some(run.clone());
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<JobKind, JobStatus>> {
        // A panic ends the process (main's hook), so a poisoned lock is never seen.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: JobKind, outcome: Outcome, minute: u32) -> JobRun {
        let at = DateTime::parse_from_rfc3339(&format!("2026-01-01T00:{minute:02}:00Z"))
            .unwrap()
            .with_timezone(&Utc);
        JobRun {
            kind,
            started: at,
            ended: at,
            outcome,
            exit_code: None,
            stderr_tail: String::new(),
        }
    }

    #[test]
    fn failures_are_counted_by_kind_and_a_success_resets_the_streak_only() {
        let board = JobBoard::new();
        board.started(
            JobKind::Backup,
            run(JobKind::Backup, Outcome::Skipped, 0).started,
        );
        assert!(board.status(JobKind::Backup).running_since.is_some());
        board.finished(&run(
            JobKind::Backup,
            Outcome::Failed(FailureKind::Failed),
            1,
        ));
        board.finished(&run(
            JobKind::Backup,
            Outcome::Failed(FailureKind::Failed),
            2,
        ));
        board.finished(&run(
            JobKind::Backup,
            Outcome::Failed(FailureKind::Usage),
            3,
        ));
        board.finished(&run(JobKind::Backup, Outcome::Skipped, 4));
        let s = board.status(JobKind::Backup);
        assert_eq!(s.running_since, None);
        assert_eq!(s.consecutive_failures, 3);
        assert_eq!(s.failures[&FailureKind::Failed], 2);
        assert_eq!(s.failures[&FailureKind::Usage], 1);
        assert_eq!(s.last_run.as_ref().unwrap().outcome, Outcome::Skipped);
        assert_eq!(s.last_success, None);
        board.finished(&run(JobKind::Backup, Outcome::Succeeded, 5));
        let s = board.status(JobKind::Backup);
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(
            s.failures[&FailureKind::Failed],
            2,
            "a counter never goes down"
        );
        assert_eq!(
            s.last_success.unwrap().started,
            run(JobKind::Backup, Outcome::Succeeded, 5).started
        );
        let all = board.snapshot();
        assert_eq!(all.len(), 4);
        assert_eq!(all[&JobKind::Drill], JobStatus::default());
    }

    #[test]
    fn exit_codes_map_to_their_documented_kinds() {
        assert_eq!(FailureKind::from_exit_code(Some(1)), FailureKind::Failed);
        assert_eq!(FailureKind::from_exit_code(Some(4)), FailureKind::Integrity);
        assert_eq!(
            FailureKind::from_exit_code(Some(6)),
            FailureKind::DrillFailed
        );
        assert_eq!(FailureKind::from_exit_code(None), FailureKind::Killed);
        assert_eq!(FailureKind::from_exit_code(Some(99)), FailureKind::Other);
    }
}
