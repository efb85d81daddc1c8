//! The scheduler service: for each kind of job with a schedule, waits until it is due
//! ([`schedule::next_run`]), runs it as a child process, records how it went, and starts
//! over. Kinds run independently of each other (a long drill does not hold back a
//! backup); within a kind, one run at a time, here and against runs started by hand (the
//! commands take the job lock themselves: see `crate::joblock`).
//!
//! It wakes at least once a minute to look again, so that a change of the system clock
//! (or a suspended machine) delays nothing for long, and at once when a reload changes
//! the settings.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use std::sync::atomic::{AtomicU32, Ordering};

use super::board::{JobRun, JobStatus, Outcome};
use super::schedule::{self, Past};
use super::state::{self, LocalState};
use super::{child, AgentContext, JobKind, ServiceResult};

/// The longest the scheduler sleeps before it looks at the clock again.
const LOOK_AGAIN: Duration = Duration::from_secs(60);

/// How long the record of a finished run may take to reach the repository (at shutdown
/// too) before the agent goes on without it (it stays in the local history).
const RECORD_TIMEOUT: Duration = Duration::from_secs(10);

/// The first pause after a failure: [`schedule::FIRST_RETRY`]. Debug builds only:
/// `TIDEMARK_TEST_FIRST_RETRY_MS` shortens it, so that tests see the backoff double in
/// seconds; release builds have no such switch.
fn first_retry() -> Duration {
    #[cfg(debug_assertions)]
    if let Some(ms) = std::env::var("TIDEMARK_TEST_FIRST_RETRY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Duration::from_millis(ms);
    }
    schedule::FIRST_RETRY
}

/// How long reading the last runs from the repository may take at start.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs every kind's schedule until the agent stops.
pub async fn run(ctx: Arc<AgentContext>) -> ServiceResult {
    let settings = ctx.settings();
    let local = match LocalState::open(&settings) {
        Ok(state) => Some(state),
        Err(e) => {
            tracing::warn!(
                "{e}; going on without a local history (the repository's records stand in)"
            );
            None
        }
    };
    // Bounded, and given up at once when the agent is stopped: a repository that does
    // not answer must neither hold the schedules back for long nor the shutdown at all.
    state::restore_local(&ctx.jobs, local.as_ref());
    let restored = async {
        match crate::cmd::open_repo(&settings).await {
            Ok(repo) => state::restore_from_repository(&ctx.jobs, &repo, &settings.stanza).await,
            Err(e) => tracing::warn!(
                "cannot open the repository to read the last runs: {}",
                e.one_line()
            ),
        }
    };
    tokio::select! {
        _ = ctx.cancel.cancelled() => return Ok(()),
        timed = tokio::time::timeout(RESTORE_TIMEOUT, restored) => if timed.is_err() {
            tracing::warn!(
                "the repository did not give the last runs within {} s: scheduling from the local history",
                RESTORE_TIMEOUT.as_secs()
            );
        },
    }
    let local = Arc::new(local);
    let loops = JobKind::ALL.map(|kind| run_kind(Arc::clone(&ctx), kind, Arc::clone(&local)));
    futures::future::join_all(loops).await;
    Ok(())
}

/// Keeps a finished run: in the local history, and (unless skipped) as a job record in the
/// repository. Failures are logged: neither is needed to restore anything.
async fn keep(ctx: &AgentContext, local: &Option<LocalState>, run: &JobRun) {
    if let Some(local) = local {
        if let Err(e) = local.record(run) {
            tracing::warn!("{}: not kept in the local history: {e}", run.kind);
        }
    }
    let Some(record) = state::record_of_run(run) else {
        return;
    };
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let id = format!(
        "{:x}{:04x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let settings = ctx.settings();
    let put = async {
        let repo = crate::cmd::open_repo(&settings)
            .await
            .map_err(|e| e.one_line())?;
        repo.put_job(&settings.stanza, &id, &record)
            .await
            .map_err(|e| e.to_string())?;
        // The history stays bounded (`tidemark_store::history`): the oldest beyond the
        // newest hundred go. Never worth failing the run's record for.
        if let Err(e) = repo.prune_jobs(&settings.stanza, &record.kind).await {
            tracing::warn!("{}: old job records were not removed: {e}", record.kind);
        }
        Ok::<(), String>(())
    };
    match tokio::time::timeout(RECORD_TIMEOUT, put).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(
            "{}: the run's record was not written to the repository: {e}",
            run.kind
        ),
        Err(_) => tracing::warn!(
            "{}: the run's record was not written to the repository within {} s",
            run.kind,
            RECORD_TIMEOUT.as_secs()
        ),
    }
}

/// What the schedule decision needs, from what the board knows.
pub(super) fn past_of(status: &JobStatus) -> Past {
    let last = status.last_run.as_ref();
    Past {
        last_start: last.map(|r| r.started),
        failing: match last {
            Some(r) if status.consecutive_failures > 0 => {
                Some((r.ended, status.consecutive_failures))
            }
            _ => None,
        },
    }
}

async fn run_kind(ctx: Arc<AgentContext>, kind: JobKind, local: Arc<Option<LocalState>>) {
    let mut settings_rx = ctx.settings.clone();
    while !ctx.cancel.is_cancelled() {
        let settings = Arc::clone(&settings_rx.borrow_and_update());
        let Some(schedule) = settings.schedules.get(&kind).cloned() else {
            ctx.jobs.update(kind, |s| {
                s.scheduled = false;
                s.next_run = None;
            });
            tokio::select! {
                _ = ctx.cancel.cancelled() => return,
                changed = settings_rx.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let now = Utc::now();
        let next = schedule::next_run(
            &schedule,
            &past_of(&ctx.jobs.status(kind)),
            now,
            first_retry(),
        );
        ctx.jobs.update(kind, |s| {
            s.scheduled = true;
            s.next_run = Some(next);
        });
        if next > now {
            let wait = (next - now).to_std().unwrap_or_default().min(LOOK_AGAIN);
            tokio::select! {
                _ = ctx.cancel.cancelled() => return,
                changed = settings_rx.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        ctx.jobs.started(kind, Utc::now());
        let run = child::run_job(&ctx, kind).await;
        let seconds = (run.ended - run.started).num_milliseconds() as f64 / 1000.0;
        let why = run.stderr_tail.lines().last().unwrap_or("").to_string();
        match run.outcome {
            Outcome::Succeeded => tracing::info!("{kind}: succeeded in {seconds:.1} s"),
            Outcome::Skipped => tracing::warn!(
                "{kind}: skipped, another run holds the job lock ({why}); next at the schedule's next time"
            ),
            Outcome::Cancelled => tracing::warn!("{kind}: stopped by the agent's shutdown after {seconds:.1} s"),
            Outcome::Failed(failure) => {
                let in_a_row = ctx.jobs.status(kind).consecutive_failures + 1;
                let retry = schedule::retry_pause(
                    &schedule,
                    first_retry(),
                    in_a_row,
                    run.ended,
                    &chrono::Local,
                );
                tracing::error!(
                    "{kind}: failed ({failure}, exit {}) after {seconds:.1} s, {in_a_row} in a row: {why}; retrying in {:.1} s",
                    run.exit_code.map_or("by signal".to_string(), |c| c.to_string()),
                    retry.as_secs_f64()
                );
            }
        }
        ctx.jobs.finished(&run);
        keep(&ctx, &local, &run).await;
    }
}
