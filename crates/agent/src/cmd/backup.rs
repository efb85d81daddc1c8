//! `tidemark backup`: a base backup into the repository (work in progress).

use crate::cli::args::BackupArgs;
use crate::cli::config::{ConfigError, Settings};
use crate::exit::Failure;

/// Runs the command; prints its report and returns the exit code.
pub async fn run(_settings: &Settings, _args: &BackupArgs) -> Result<u8, Failure> {
    Err(ConfigError("backup is not built yet".into()).into())
}
