//! `tidemark archive-push %p`: PostgreSQL's archive_command.

use std::path::Path;
use std::time::Instant;

use tidemark_archive_cmd::PushOutcome;

use super::open_repo;
use crate::cli::config::Settings;
use crate::exit::Failure;

/// Archives one file; `Ok` only once it is durable in the repository.
pub async fn run(settings: &Settings, path: &Path) -> Result<(), Failure> {
    let started = Instant::now();
    let repo = open_repo(settings).await?;
    match tidemark_archive_cmd::push(&repo, &settings.stanza, path).await? {
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
    Ok(())
}
