//! The agent's Prometheus endpoint: `GET /metrics` on `metrics_listen` (hyper, HTTP/1),
//! rendered from the [`StatusCache`] the RPO watch keeps fresh and from the job board:
//! a scrape reads no repository and asks no server.
//!
//! Loopback only unless `metrics_allow_remote` ([`Settings::metrics_address`]); a reload
//! that moves the address rebinds, one that would expose it is refused (logged, the old
//! address kept). At most [`MAX_CONNECTIONS`] scrapes are served at once, and a client
//! gets [`HEADER_TIMEOUT`] to send its request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::cache::StatusCache;
use super::metrics::{render, JobFailures};
use crate::cli::config::Settings;
use crate::daemon::{AgentContext, FailureKind, JobKind, ServiceResult};

/// Connections served at once; more wait in the listen queue.
pub const MAX_CONNECTIONS: usize = 16;
/// How long a client may take to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the first scrape after the agent starts waits for the first collection.
const FIRST_COLLECTION_WAIT: Duration = Duration::from_secs(10);

/// The job counters from the board: every job kind by every failure kind, zeros
/// included (a counter that appears only once it is 1 hides the first failure from
/// `increase()`).
pub fn job_failures(ctx: &AgentContext) -> Vec<JobFailures> {
    let board = ctx.jobs.snapshot();
    let mut out = Vec::with_capacity(JobKind::ALL.len() * FailureKind::ALL.len());
    for job in JobKind::ALL {
        let failures = board.get(&job).map(|s| &s.failures);
        for kind in FailureKind::ALL {
            out.push(JobFailures {
                job: job.as_str(),
                kind: kind.as_str(),
                count: failures.and_then(|f| f.get(&kind)).copied().unwrap_or(0),
            });
        }
    }
    out
}

/// The answer to one request.
async fn answer(ctx: Arc<AgentContext>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let plain = |status: StatusCode, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(Full::new(Bytes::from(body)))
            .expect("a static response")
    };
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {}
        (&Method::GET, "/") => {
            return plain(
                StatusCode::OK,
                "tidemark agent: metrics at /metrics\n".into(),
            )
        }
        (_, "/metrics") => {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
        }
        _ => return plain(StatusCode::NOT_FOUND, "not found: try /metrics\n".into()),
    }
    let cache = StatusCache::shared();
    let Some(facts) = cache.facts_within(FIRST_COLLECTION_WAIT).await else {
        return plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "no status collected yet: the repository could not be read (see the agent's log)\n"
                .into(),
        );
    };
    let settings = ctx.settings();
    let report = super::assess(
        &facts,
        &super::thresholds(&settings),
        tidemark_store::repo::now(),
    );
    let body = render(&report, &job_failures(&ctx), &cache.collection());
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .expect("a static response")
}

/// The address to serve on, or why not (logged by the caller).
fn address(settings: &Settings) -> Result<Option<SocketAddr>, String> {
    settings.metrics_address().map_err(|e| e.to_string())
}

/// The service (registered in `daemon::services`).
pub async fn serve(ctx: Arc<AgentContext>) -> ServiceResult {
    let mut settings_changes = ctx.settings.clone();
    let mut current = address(&ctx.settings())?;
    loop {
        let Some(addr) = current else {
            // "off": wait for a reload that turns it on, or the end.
            tokio::select! {
                _ = ctx.cancel.cancelled() => return Ok(()),
                changed = settings_changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    current = next_address(&ctx, current);
                    continue;
                }
            }
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (metrics_listen): {e}"))?;
        tracing::info!("metrics: serving http://{addr}/metrics");
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            tokio::select! {
                _ = ctx.cancel.cancelled() => return Ok(()),
                changed = settings_changes.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let next = next_address(&ctx, current);
                    if next != current {
                        current = next;
                        break;
                    }
                }
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of descriptors and the like: pause rather than spin.
                            tracing::warn!("metrics: accept failed: {e}");
                            if !ctx.sleep(Duration::from_millis(100)).await {
                                return Ok(());
                            }
                            continue;
                        }
                    };
                    let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                        return Ok(());
                    };
                    let ctx = Arc::clone(&ctx);
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |request| {
                            let ctx = Arc::clone(&ctx);
                            async move { Ok::<_, Infallible>(answer(ctx, request).await) }
                        });
                        let mut http = hyper::server::conn::http1::Builder::new();
                        http.timer(TokioTimer::new())
                            .header_read_timeout(HEADER_TIMEOUT);
                        if let Err(e) = http.serve_connection(TokioIo::new(stream), service).await {
                            tracing::debug!("metrics: a connection ended badly: {e}");
                        }
                        drop(permit);
                    });
                }
            }
        }
    }
}

/// The address after a reload: the new one, or `current` when the new one is refused.
fn next_address(ctx: &AgentContext, current: Option<SocketAddr>) -> Option<SocketAddr> {
    match address(&ctx.settings()) {
        Ok(next) => next,
        Err(e) => {
            tracing::error!(
                "metrics: the reloaded setting is refused ({e}); still serving as before"
            );
            current
        }
    }
}
