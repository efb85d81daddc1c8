//! `tidemark archive-push %p`: PostgreSQL's archive_command.
//!
//! Synchronous (the default): `Ok` only once the file is durable in the repository.
//! Asynchronous (`archive_async`): `Ok` once it is durable in the local spool, and a
//! background drainer is started if none is at work; a name the repository already
//! holds (checked first, for a few seconds at most) is handled as a synchronous push,
//! so that content conflicting with the repository is refused (exit 4), never queued. Whatever the spool cannot take (it is
//! full, the file is too large to hold, the spool's disk fails) is pushed synchronously
//! instead: PostgreSQL keeps the file until one of the two has it.

use std::path::Path;
use std::time::Instant;

use tidemark_archive_cmd::{Error, PushOutcome, SpoolOutcome};

use super::open_repo;
use super::report::Report;
use super::spool::{ensure_drainer, open_spool};
use crate::cli::config::Settings;
use crate::exit::Failure;

/// What archive-push answers PostgreSQL: exit 0, nothing on stdout (the archiver reads
/// only the code; what happened is logged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Archived;

impl Report for Archived {
    fn text(&self) -> String {
        String::new()
    }

    fn json(&self) -> String {
        String::new()
    }
}

/// Archives one file; `Ok` only once it is durable in the repository, or in the spool in
/// asynchronous mode.
pub async fn run(settings: &Settings, path: &Path) -> Result<Archived, Failure> {
    let started = Instant::now();
    let repo = open_repo(settings).await?;
    if settings.archive_async {
        let spool = open_spool(settings)?;
        let spooled =
            tidemark_archive_cmd::push_to_spool(&spool, &repo, &settings.stanza, path).await;
        match spooled {
            Ok(SpoolOutcome::Queued {
                name,
                raw_len,
                stored_len,
                queued_files,
                queued_bytes,
            }) => {
                tracing::info!(
                    "spooled {name}: {raw_len} bytes, {stored_len} stored, in {} ms ({queued_files} files, {queued_bytes} bytes queued)",
                    started.elapsed().as_millis()
                );
                if settings.spool_auto_drain {
                    ensure_drainer(settings, &spool);
                }
                return Ok(Archived);
            }
            Ok(SpoolOutcome::AlreadyQueued { name }) => {
                tracing::info!("{name} was already spooled with identical content");
                if settings.spool_auto_drain {
                    ensure_drainer(settings, &spool);
                }
                return Ok(Archived);
            }
            Ok(SpoolOutcome::Direct(outcome)) => {
                // The repository already held the name with this content (a conflict is
                // an error, exit 4, as for a synchronous push).
                report(&outcome, started);
                return Ok(Archived);
            }
            Ok(SpoolOutcome::NotSpooled { name, reason }) => {
                tracing::warn!("{name}: pushing directly: {reason}");
                if settings.spool_auto_drain {
                    ensure_drainer(settings, &spool);
                }
            }
            Err(e @ Error::Spool { .. }) => {
                tracing::warn!("pushing directly, the spool failed: {e}");
            }
            Err(e) => return Err(e.into()),
        }
    }
    let outcome = tidemark_archive_cmd::push(&repo, &settings.stanza, path).await?;
    report(&outcome, started);
    Ok(Archived)
}

fn report(outcome: &PushOutcome, started: Instant) {
    match outcome {
        PushOutcome::Pushed {
            name,
            raw_len,
            stored_len,
            ..
        } => tracing::info!(
            "archived {name}: {raw_len} bytes, {stored_len} stored, in {} ms",
            started.elapsed().as_millis()
        ),
        PushOutcome::AlreadyArchived { name, .. } => {
            tracing::info!("{name} was already archived with identical content")
        }
    }
}
