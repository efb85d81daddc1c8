//! The spool drainer service (`spool_drainer = "agent"`): keeps one
//! `tidemark spool drain --background --follow` child running, the drainer archive-push
//! would start, told never to stop for an empty queue. It holds the spool's drain lock
//! while it lives, so archive-push sees a drainer at work and starts none of its own; when
//! the agent stops (or was never started), the lock is free and archive-push drains as
//! it does without the agent.
//!
//! A child that ends (another drainer held the lock, a crash) is started again after a
//! pause. SIGTERM ends it between or during moves: a file is dequeued only once it is
//! durable in the repository, so a drain cut short loses nothing and the next one redoes
//! what was in flight.

use std::sync::Arc;
use std::time::Duration;

use super::{child, AgentContext, ServiceResult};

/// The pause before the drainer is started again after it ended.
const RESTART: (Duration, Duration) = (Duration::from_secs(2), Duration::from_secs(60));

/// Runs the drainer while the settings ask for it, until the agent stops.
pub async fn run(ctx: Arc<AgentContext>) -> ServiceResult {
    let mut settings_rx = ctx.settings.clone();
    let mut pause = RESTART.0;
    while !ctx.cancel.is_cancelled() {
        let wanted = settings_rx.borrow_and_update().spool_drained_by_agent;
        if !wanted {
            tokio::select! {
                _ = ctx.cancel.cancelled() => break,
                changed = settings_rx.changed() => if changed.is_err() { break },
            }
            continue;
        }
        // Stopped by the agent's shutdown, or by a reload that turns the agent's drain off.
        let stop = ctx.cancel.child_token();
        let watch_settings = {
            let stop = stop.clone();
            let mut rx = settings_rx.clone();
            async move {
                while rx.changed().await.is_ok() {
                    if !rx.borrow_and_update().spool_drained_by_agent {
                        stop.cancel();
                        return;
                    }
                }
            }
        };
        let started = std::time::Instant::now();
        let watcher = tokio::spawn(watch_settings);
        let ended = child::run_child(
            &ctx,
            "spool-drainer",
            &["spool", "drain", "--background", "--follow"],
            &stop,
        )
        .await;
        watcher.abort();
        if ctx.cancel.is_cancelled() || stop.is_cancelled() {
            continue;
        }
        match ended {
            Ok(e) => tracing::warn!(
                "spool-drainer: ended (exit {}){}; starting it again in {} s",
                e.code.map_or("by signal".to_string(), |c| c.to_string()),
                e.stderr_tail
                    .lines()
                    .last()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default(),
                pause.as_secs()
            ),
            Err(why) => tracing::error!(
                "spool-drainer: {why}; trying again in {} s",
                pause.as_secs()
            ),
        }
        if started.elapsed() > RESTART.1 {
            pause = RESTART.0;
        }
        if !ctx.sleep(pause).await {
            break;
        }
        pause = (pause * 2).min(RESTART.1);
    }
    Ok(())
}
