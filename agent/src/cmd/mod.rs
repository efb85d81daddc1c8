//! One module per subcommand. Each takes resolved [`Settings`] and returns a value for
//! `main` to print, or a [`Failure`]; none prints errors or exits itself.

use std::sync::Arc;

use tidemark_store::Repo;

use crate::cli::config::Settings;
use crate::exit::Failure;

pub mod archive_get;
pub mod archive_push;
pub mod backup;
pub mod info;
pub mod init;
pub mod restore;
pub mod spool;

/// Opens the configured repository (changes nothing, contacts nothing yet).
pub async fn open_repo(settings: &Settings) -> Result<Repo, Failure> {
    let backend = tidemark_store::url::open_backend(&settings.backend_options()).await?;
    Ok(Repo::new(Arc::clone(&backend), settings.compression)
        .with_location(settings.repo.to_string()))
}
