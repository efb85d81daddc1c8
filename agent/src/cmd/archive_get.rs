//! `tidemark archive-get %f %p`: PostgreSQL's restore_command.

use std::path::Path;

use tidemark_archive_cmd::GetOutcome;

use super::open_repo;
use crate::cli::config::Settings;
use crate::exit::Failure;

/// Fetches one file. `Ok(false)` means "not in the archive", which PostgreSQL asks about
/// constantly and which is not worth more than a debug line.
pub async fn run(settings: &Settings, name: &str, dest: &Path) -> Result<bool, Failure> {
    let repo = open_repo(settings).await?;
    match tidemark_archive_cmd::get(&repo, &settings.stanza, name, dest).await? {
        GetOutcome::Restored { len, .. } => {
            tracing::info!("restored {name} ({len} bytes) to {}", dest.display());
            Ok(true)
        }
        GetOutcome::NotFound => {
            tracing::debug!("{name} is not in the archive");
            Ok(false)
        }
    }
}
