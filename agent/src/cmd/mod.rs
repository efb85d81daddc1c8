//! One module per subcommand. Each takes resolved [`Settings`] and returns a [`Report`]
//! (its result, which renders itself as text or JSON and names its exit code) for `main`
//! to print, or a [`Failure`]; none prints its result or errors, or exits itself.
//! Progress and warnings on the way go to stderr (logging, `crate::progress`).

use std::sync::Arc;

use tidemark_store::Repo;

use crate::cli::config::Settings;
use crate::exit::Failure;

pub mod agent;
pub mod archive_get;
pub mod archive_push;
pub mod backup;
pub mod drill;
pub mod expire;
pub mod info;
pub mod init;
pub mod plan;
pub mod reindex;
pub mod report;
pub mod restore;
pub mod spool;
pub mod status;
pub mod verify;

pub use report::{Format, Report};

/// Opens the configured repository (changes nothing, contacts nothing yet).
pub async fn open_repo(settings: &Settings) -> Result<Repo, Failure> {
    let backend = tidemark_store::url::open_backend(&settings.backend_options()).await?;
    Ok(Repo::new(Arc::clone(&backend), settings.compression)
        .with_location(settings.repo.to_string()))
}
