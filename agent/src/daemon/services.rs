//! The services the agent runs, and how it runs them (see the module doc of `daemon`).

use std::sync::Arc;
use std::time::Duration;

use super::{AgentContext, ServiceFuture};

/// A long-running task of the agent: a name (for logs) and how to start it.
#[derive(Clone, Copy)]
pub struct Service {
    /// The name logs use.
    pub name: &'static str,
    /// Starts the service; it runs until `ctx.cancel` fires.
    pub start: fn(Arc<AgentContext>) -> ServiceFuture,
}

impl Service {
    /// A service named `name`, started by `start`.
    pub const fn new(name: &'static str, start: fn(Arc<AgentContext>) -> ServiceFuture) -> Service {
        Service { name, start }
    }
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("name", &self.name).finish()
    }
}

/// Every service of the agent. One line each; the agent starts them in this order.
pub fn all() -> Vec<Service> {
    vec![
        Service::new("scheduler", |ctx| Box::pin(super::scheduler::run(ctx))),
        Service::new("spool-drainer", |ctx| Box::pin(super::drainer::run(ctx))),
        Service::new("rpo-watch", |ctx| Box::pin(crate::status::watch::run(ctx))),
        Service::new("metrics", |ctx| Box::pin(crate::status::http::serve(ctx))),
    ]
}

/// The first pause before a failed service starts again, and the longest.
const RESTART_PAUSE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60));

/// Runs `service` until the agent stops: started again after a pause when it fails.
pub(crate) async fn supervise(service: Service, ctx: Arc<AgentContext>) {
    let mut pause = RESTART_PAUSE.0;
    loop {
        let result = (service.start)(Arc::clone(&ctx)).await;
        if ctx.cancel.is_cancelled() {
            if let Err(e) = result {
                tracing::warn!("{}: stopped with an error: {e}", service.name);
            }
            return;
        }
        match result {
            Ok(()) => {
                tracing::info!("{}: finished", service.name);
                return;
            }
            Err(e) => {
                tracing::error!(
                    "{}: failed: {e}; starting it again in {} s",
                    service.name,
                    pause.as_secs()
                );
                if !ctx.sleep(pause).await {
                    return;
                }
                pause = (pause * 2).min(RESTART_PAUSE.1);
            }
        }
    }
}
