//! `tidemark restore --pgdata DIR [--backup ID]`: materializes a backup (work in progress).

use crate::cli::args::RestoreArgs;
use crate::cli::config::{ConfigError, Settings};
use crate::exit::Failure;

/// Runs the command; prints its report and returns the exit code.
pub async fn run(_settings: &Settings, _args: &RestoreArgs) -> Result<u8, Failure> {
    Err(ConfigError("restore is not built yet".into()).into())
}
