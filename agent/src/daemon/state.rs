//! The agent's local state, in sled under `<state_path>/<stanza>/agent.sled`: the job
//! history (every run: kind, start, end, outcome, exit code, failure kind, stderr tail),
//! from which the last runs and the retry bookkeeping (failures in a row) are read back
//! when the agent starts.
//!
//! The repository stays the only source of truth. Nothing here is needed to restore
//! anything, and deleting the folder loses nothing: the agent then rebuilds what it needs
//! from the repository ([`restore_from_repository`]: the newest backup record gives the last backup,
//! the newest verify and drill records theirs, the job records under
//! `stanzas/<stanza>/jobs/` every kind's last run). sled's flush is not an fsync: a run
//! lost from here by a crash is at worst run again.
//!
//! Each finished run is also summarized in the repository (a create-only job record, see
//! `tidemark_store::jobs`), which is what survives the loss of this folder.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tidemark_store::catalog::Stanza;
use tidemark_store::jobs::JobRecord;
use tidemark_store::Repo;

use super::board::{FailureKind, JobBoard, JobKind, JobRun, Outcome};
use crate::cli::config::Settings;

/// Runs kept per kind; older ones are removed as new ones come.
const KEPT_PER_KIND: usize = 1000;
/// sled's page cache: the history is small and read once, at start.
const CACHE_BYTES: u64 = 1 << 20;

/// The local job history.
pub struct LocalState {
    db: sled::Db,
    history: sled::Tree,
    path: PathBuf,
}

impl std::fmt::Debug for LocalState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalState")
            .field("path", &self.path)
            .finish()
    }
}

/// The local state could not be used.
#[derive(Debug, thiserror::Error)]
#[error("local state {path}: {detail}")]
pub struct StateError {
    path: PathBuf,
    detail: String,
}

/// What the history says of one kind's recent runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recent {
    /// The last run.
    pub last_run: Option<JobRun>,
    /// The last one that succeeded.
    pub last_success: Option<JobRun>,
    /// Failures since that success (skipped and cancelled runs neither count nor reset).
    pub consecutive_failures: u32,
}

impl LocalState {
    /// The history's folder for the configured stanza.
    pub fn path(settings: &Settings) -> PathBuf {
        settings
            .state_path
            .join(settings.stanza.as_str())
            .join("agent.sled")
    }

    /// Opens (or creates) the history.
    pub fn open(settings: &Settings) -> Result<LocalState, StateError> {
        let path = LocalState::path(settings);
        let err = |detail: String| StateError {
            path: path.clone(),
            detail,
        };
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(CACHE_BYTES)
            // Flushed by each write below; no background thread.
            .flush_every_ms(None)
            .open()
            .map_err(|e| err(format!("cannot open: {e}")))?;
        let history = db
            .open_tree("history")
            .map_err(|e| err(format!("cannot open the history: {e}")))?;
        Ok(LocalState { db, history, path })
    }

    /// Adds a finished run (and forgets the oldest of its kind beyond the limit).
    pub fn record(&self, run: &JobRun) -> Result<(), StateError> {
        let err = |e: sled::Error| StateError {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let value = serde_json::to_vec(run).map_err(|e| StateError {
            path: self.path.clone(),
            detail: e.to_string(),
        })?;
        self.history
            .insert(history_key(run.kind, run.started), value)
            .map_err(err)?;
        let prefix = format!("{}/", run.kind.as_str());
        let excess = self
            .history
            .scan_prefix(&prefix)
            .count()
            .saturating_sub(KEPT_PER_KIND);
        for old in self.history.scan_prefix(&prefix).keys().take(excess) {
            self.history.remove(old.map_err(err)?).map_err(err)?;
        }
        self.db.flush().map_err(err)?;
        Ok(())
    }

    /// The runs of `kind`, newest first, at most `limit`.
    pub fn runs(&self, kind: JobKind, limit: usize) -> Vec<JobRun> {
        self.history
            .scan_prefix(format!("{}/", kind.as_str()))
            .values()
            .rev()
            .filter_map(|v| v.ok())
            .filter_map(|v| serde_json::from_slice(&v).ok())
            .take(limit)
            .collect()
    }

    /// What the history says of `kind`.
    pub fn recent(&self, kind: JobKind) -> Recent {
        let mut recent = Recent::default();
        for run in self.runs(kind, KEPT_PER_KIND) {
            if recent.last_run.is_none() {
                recent.last_run = Some(run.clone());
            }
            match run.outcome {
                Outcome::Succeeded => {
                    recent.last_success = Some(run);
                    break;
                }
                Outcome::Failed(_) => recent.consecutive_failures += 1,
                Outcome::Skipped | Outcome::Cancelled => {}
            }
        }
        recent
    }
}

/// `<kind>/<start, nanoseconds since the epoch, 20 digits>`: sorts by time within a kind.
fn history_key(kind: JobKind, started: DateTime<Utc>) -> Vec<u8> {
    let nanos = started
        .timestamp_nanos_opt()
        .unwrap_or(started.timestamp_millis().saturating_mul(1_000_000))
        .max(0);
    format!("{}/{nanos:020}", kind.as_str()).into_bytes()
}

/// The newest run of `kind` the repository knows of: the newest job record, or the
/// newest backup, verify or drill record when that is newer (a run started by hand, or
/// before the agent kept records).
pub async fn last_run_in_repository(
    repo: &Repo,
    stanza: &Stanza,
    kind: JobKind,
) -> Result<Option<JobRun>, tidemark_store::Error> {
    let from_job = repo
        .last_job(stanza, kind.as_str())
        .await?
        .and_then(|r| run_of_record(kind, &r));
    let from_result = match kind {
        JobKind::Backup => repo
            .backups(stanza)
            .await?
            .records
            .last()
            .map(|b| recorded_run(kind, b.start_time, b.stop_time, None, String::new())),
        JobKind::Verify => repo.last_verify(stanza).await?.map(|v| {
            let failed = (!v.passed).then_some(FailureKind::Integrity);
            recorded_run(kind, v.started_at, v.finished_at, failed, String::new())
        }),
        JobKind::Drill => repo.recent_drills(stanza).await?.last.map(|d| {
            let failed = (!d.passed).then_some(FailureKind::DrillFailed);
            let why = d.failure.unwrap_or_default();
            recorded_run(kind, d.started_at, d.finished_at, failed, why)
        }),
        JobKind::Expire => None,
    };
    Ok(match (from_job, from_result) {
        (Some(a), Some(b)) => Some(if b.started > a.started { b } else { a }),
        (a, b) => a.or(b),
    })
}

/// A run as a command's own record tells it (a backup, verify or drill record): failed
/// with `failed`, else succeeded; the exit code is the one that failure exits with.
fn recorded_run(
    kind: JobKind,
    started: DateTime<Utc>,
    ended: DateTime<Utc>,
    failed: Option<FailureKind>,
    stderr_tail: String,
) -> JobRun {
    let (outcome, code) = match failed {
        None => (Outcome::Succeeded, 0),
        Some(f @ FailureKind::DrillFailed) => {
            (Outcome::Failed(f), i32::from(crate::exit::DRILL_FAILED))
        }
        Some(f) => (Outcome::Failed(f), i32::from(crate::exit::INTEGRITY)),
    };
    JobRun {
        kind,
        started,
        ended,
        outcome,
        exit_code: Some(code),
        stderr_tail,
    }
}

/// A job record read back as a run (`None`: an outcome this version does not know).
fn run_of_record(kind: JobKind, record: &JobRecord) -> Option<JobRun> {
    let outcome = match record.outcome.as_str() {
        "succeeded" => Outcome::Succeeded,
        "cancelled" => Outcome::Cancelled,
        "failed" => Outcome::Failed(
            FailureKind::ALL
                .into_iter()
                .find(|f| Some(f.as_str()) == record.failure.as_deref())
                .unwrap_or(FailureKind::Other),
        ),
        _ => return None,
    };
    Some(JobRun {
        kind,
        started: record.started_at,
        ended: record.finished_at,
        outcome,
        exit_code: record.exit_code,
        stderr_tail: record.stderr_tail.clone(),
    })
}

/// A finished run as the repository records it (`None`: skipped runs are not recorded).
pub fn record_of_run(run: &JobRun) -> Option<JobRecord> {
    let (outcome, failure) = match run.outcome {
        Outcome::Skipped => return None,
        Outcome::Succeeded => ("succeeded", None),
        Outcome::Cancelled => ("cancelled", None),
        Outcome::Failed(kind) => ("failed", Some(kind.as_str().to_string())),
    };
    Some(JobRecord {
        kind: run.kind.as_str().to_string(),
        started_at: run.started,
        finished_at: run.ended,
        outcome: outcome.to_string(),
        failure,
        exit_code: run.exit_code,
        stderr_tail: run.stderr_tail.clone(),
        host: host_name(),
        tidemark_version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// This machine's name (empty when it cannot be read).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Fills the board at start from the local history: each kind's last run, last success
/// and failures in a row.
pub fn restore_local(board: &JobBoard, local: Option<&LocalState>) {
    for kind in JobKind::ALL {
        let recent = local.map(|l| l.recent(kind)).unwrap_or_default();
        board.update(kind, |s| {
            s.last_run = recent.last_run;
            s.last_success = recent.last_success;
            s.consecutive_failures = recent.consecutive_failures;
        });
    }
}

/// Then from the repository, where it knows of a newer run than the board (the local
/// state is gone, or a run was started by hand). A repository that cannot be read is
/// logged and the board left as it is.
pub async fn restore_from_repository(board: &JobBoard, repo: &Repo, stanza: &Stanza) {
    for kind in JobKind::ALL {
        let from_repo = match last_run_in_repository(repo, stanza, kind).await {
            Ok(run) => run,
            Err(e) => {
                tracing::warn!(
                    "{kind}: cannot read the last run from the repository ({e}); using the local history alone"
                );
                None
            }
        };
        board.update(kind, |s| {
            let newer = from_repo.filter(|r| {
                s.last_run
                    .as_ref()
                    .is_none_or(|local| r.started > local.started)
            });
            if let Some(run) = newer {
                match run.outcome {
                    Outcome::Succeeded => {
                        s.last_success = Some(run.clone());
                        s.consecutive_failures = 0;
                    }
                    Outcome::Failed(_) => s.consecutive_failures = s.consecutive_failures.max(1),
                    Outcome::Skipped | Outcome::Cancelled => {}
                }
                s.last_run = Some(run);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::SettingArgs;

    fn run(kind: JobKind, outcome: Outcome, second: u32) -> JobRun {
        let at: DateTime<Utc> = format!("2026-01-01T00:00:{second:02}Z").parse().unwrap();
        JobRun {
            kind,
            started: at,
            ended: at,
            outcome,
            exit_code: None,
            stderr_tail: "tidemark: backup: down".into(),
        }
    }

    #[test]
    fn the_history_gives_back_the_last_runs_and_the_failures_in_a_row() {
        let dir = tempfile::tempdir().unwrap();
        let args = SettingArgs {
            state_path: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let settings = crate::cli::config::resolve(&args, None, Default::default()).unwrap();
        let failed = Outcome::Failed(FailureKind::Failed);
        {
            let state = LocalState::open(&settings).unwrap();
            assert_eq!(state.recent(JobKind::Backup), Recent::default());
            for (i, outcome) in [Outcome::Succeeded, failed, Outcome::Skipped, failed]
                .into_iter()
                .enumerate()
            {
                state
                    .record(&run(JobKind::Backup, outcome, i as u32))
                    .unwrap();
            }
            state
                .record(&run(JobKind::Verify, Outcome::Succeeded, 9))
                .unwrap();
        }
        // Read back by a new process (the agent restarted).
        let state = LocalState::open(&settings).unwrap();
        let recent = state.recent(JobKind::Backup);
        assert_eq!(recent.last_run, Some(run(JobKind::Backup, failed, 3)));
        assert_eq!(
            recent.last_success,
            Some(run(JobKind::Backup, Outcome::Succeeded, 0))
        );
        assert_eq!(recent.consecutive_failures, 2);
        assert_eq!(state.runs(JobKind::Verify, 10).len(), 1);
        assert_eq!(state.recent(JobKind::Drill), Recent::default());
        // Every run survives a round trip through the repository's record, but skipped
        // ones, which are not recorded there.
        for outcome in [Outcome::Succeeded, failed, Outcome::Cancelled] {
            let r = run(JobKind::Drill, outcome, 5);
            assert_eq!(
                run_of_record(JobKind::Drill, &record_of_run(&r).unwrap()),
                Some(r)
            );
        }
        assert_eq!(
            record_of_run(&run(JobKind::Drill, Outcome::Skipped, 5)),
            None
        );
    }
}
