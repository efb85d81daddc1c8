//! `tidemark status [--json]`: how far behind the repository is, read from the repository
//! and asked of PostgreSQL, with or without the agent running. The work is in
//! [`crate::status`]; this runs one collection and assesses it now.

use crate::cli::config::Settings;
use crate::exit::Failure;
use crate::status::{self, StatusReport};

/// Collects and assesses (exit 0 healthy, 8 when a warning stands).
pub async fn run(settings: &Settings) -> Result<StatusReport, Failure> {
    let facts = status::collect(settings).await?;
    Ok(status::assess(
        &facts,
        &status::thresholds(settings),
        tidemark_store::repo::now(),
    ))
}
