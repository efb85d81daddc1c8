//! `tidemark agent`: runs the agent (see [`crate::daemon`]) until SIGTERM or SIGINT.
//!
//! One agent per stanza and state folder: it holds `<state_path>/<stanza>/agent.lock`
//! while it runs, and a second one exits at once with [`crate::exit::LOCKED`]. SIGHUP
//! rereads the configuration file (the flags and `TIDEMARK_*` variables the agent was
//! started with still win over it): a valid one takes effect at once (schedules are
//! recomputed), an invalid one is logged and the settings in force are kept.

use std::sync::Arc;

use serde::Serialize;
use tokio::signal::unix::{signal, SignalKind};

use super::report::{json_lines, Report};
use crate::cli::args::SettingArgs;
use crate::cli::config::{self, Settings};
use crate::daemon::{services, AgentContext};
use crate::exit::Failure;
use crate::joblock;

/// What the agent prints when it stops.
#[derive(Debug, Serialize)]
pub struct AgentStopped {
    /// The signal that stopped it.
    pub signal: &'static str,
}

impl Report for AgentStopped {
    fn text(&self) -> String {
        format!("agent stopped ({})\n", self.signal)
    }

    fn json(&self) -> String {
        json_lines(self)
    }
}

/// Runs the agent until SIGTERM or SIGINT, then waits for its jobs to stop.
pub async fn run(args: &SettingArgs, settings: &Settings) -> Result<AgentStopped, Failure> {
    settings.metrics_address()?; // an exposed metrics endpoint needs metrics_allow_remote
    let _agent_lock = joblock::acquire_named(settings, "agent", "agent")?;
    // Handlers first: a signal from now on is never missed (nor fatal).
    let signal_err = |e: std::io::Error| {
        Failure::Config(config::ConfigError(format!(
            "cannot install the signal handlers: {e}"
        )))
    };
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_err)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_err)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(signal_err)?;

    let (ctx, publish) = AgentContext::new(args.clone(), settings.clone());
    tracing::info!(
        "agent for stanza {} started (pid {}); schedules: {}",
        settings.stanza.as_str(),
        std::process::id(),
        describe_schedules(settings)
    );
    // Services run on this thread, together (their futures need not be `Send`).
    let local = tokio::task::LocalSet::new();
    let tasks: Vec<_> = services::all()
        .into_iter()
        .map(|service| local.spawn_local(services::supervise(service, Arc::clone(&ctx))))
        .collect();
    let stopped_by = local
        .run_until(async {
            let stopped_by = loop {
                tokio::select! {
                    _ = terminate.recv() => break "SIGTERM",
                    _ = interrupt.recv() => break "SIGINT",
                    _ = hangup.recv() => reload(args, &publish),
                }
            };
            tracing::info!("agent: {stopped_by} received, stopping every job");
            ctx.cancel.cancel();
            for task in tasks {
                let _ = task.await;
            }
            stopped_by
        })
        .await;
    tracing::info!("agent: stopped");
    Ok(AgentStopped { signal: stopped_by })
}

/// Rereads the configuration; publishes it when it is valid.
fn reload(args: &SettingArgs, publish: &tokio::sync::watch::Sender<Arc<Settings>>) {
    let reread = config::load_file(args).and_then(|(path, file, warnings)| {
        for w in warnings {
            tracing::warn!("{w}");
        }
        config::resolve(args, path, file)
    });
    match reread {
        Ok(settings) => {
            tracing::info!(
                "agent: configuration reloaded (SIGHUP); schedules: {}",
                describe_schedules(&settings)
            );
            publish.send_replace(Arc::new(settings));
        }
        Err(e) => tracing::error!(
            "agent: configuration not reloaded (SIGHUP), the settings in force are kept: {e}"
        ),
    }
}

fn describe_schedules(settings: &Settings) -> String {
    if settings.schedules.is_empty() {
        return "none".to_string();
    }
    settings
        .schedules
        .iter()
        .map(|(kind, schedule)| format!("{kind} {schedule}"))
        .collect::<Vec<_>>()
        .join(", ")
}
