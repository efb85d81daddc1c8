//! `tidemark agent`: one long-running process per PostgreSQL cluster, a thin loop over the
//! commands that exist.
//!
//! The agent runs *services*, each a task of its own that lives as long as the agent:
//! the scheduler (which starts `backup`, `verify`, `drill` and `expire` as child processes
//! of this same binary when their schedules say so), the spool drainer, and whatever else
//! registers in [`services::all`] (the metrics endpoint, the RPO watch). Every service gets
//! the same [`AgentContext`]:
//!
//! - `settings`: the current settings; SIGHUP rereads the configuration and, when it is
//!   valid, publishes the new settings here (an invalid one is reported and the old kept);
//! - `cancel`: the one cancellation signal, fired by SIGTERM or SIGINT; every service
//!   returns soon after it fires, and running jobs get SIGTERM;
//! - `jobs`: the [`JobBoard`], what is known about each kind of job.
//!
//! # Adding a service
//!
//! Write `async fn my_service(ctx: Arc<AgentContext>) -> ServiceResult` that runs until
//! `ctx.cancel` fires (`tokio::select!` on `ctx.cancel.cancelled()`, or check
//! `ctx.cancel.is_cancelled()` between steps) and then returns `Ok(())`; add one line to
//! [`services::all`]: `Service::new("my-service", |ctx| Box::pin(my_service(ctx)))`. A
//! service that returns an error before the agent stops is logged and started again after
//! a pause (1 s, doubling to a minute); one that returns `Ok(())` early is logged and not
//! restarted. The agent waits for every service to return before it exits.

pub mod board;
pub mod child;
mod drainer;
pub mod schedule;
mod scheduler;
pub mod services;
pub mod state;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cli::args::SettingArgs;
use crate::cli::config::Settings;

pub use board::{FailureKind, JobBoard, JobKind, JobRun, JobStatus, Outcome};
pub use services::Service;

/// What every task of the agent shares.
#[derive(Debug)]
pub struct AgentContext {
    /// The current settings: `borrow()` for a look, `changed().await` to hear of a reload.
    pub settings: watch::Receiver<Arc<Settings>>,
    /// Fired once, when the agent is asked to stop (SIGTERM, SIGINT).
    pub cancel: CancellationToken,
    /// What is known about each kind of job.
    pub jobs: Arc<JobBoard>,
    /// The flags and `TIDEMARK_*` variables the agent was started with: a reload merges
    /// them over the reread file, and jobs are started with them.
    pub args: Arc<SettingArgs>,
}

impl AgentContext {
    /// A context with these settings, a fresh cancellation token and an empty job board,
    /// and the sender that publishes reloaded settings.
    pub fn new(
        args: SettingArgs,
        settings: Settings,
    ) -> (Arc<AgentContext>, watch::Sender<Arc<Settings>>) {
        let (sender, receiver) = watch::channel(Arc::new(settings));
        let ctx = AgentContext {
            settings: receiver,
            cancel: CancellationToken::new(),
            jobs: Arc::new(JobBoard::new()),
            args: Arc::new(args),
        };
        (Arc::new(ctx), sender)
    }

    /// The settings in force now.
    pub fn settings(&self) -> Arc<Settings> {
        Arc::clone(&self.settings.borrow())
    }

    /// Sleeps for `duration`; `false` when the agent was asked to stop meanwhile.
    pub async fn sleep(&self, duration: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(duration) => true,
        }
    }
}

/// What a service returns: `Ok(())` once the agent stops, or why it could not go on.
pub type ServiceResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A running service, as [`Service`] starts it. Services run on the agent's one thread
/// (a `LocalSet`), so their futures need not be `Send`: they may await the commands'
/// own code (`cmd::info::gather`, the repository's listings) directly.
pub type ServiceFuture = Pin<Box<dyn Future<Output = ServiceResult>>>;
