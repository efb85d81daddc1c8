//! `tidemark archive-get %f %p`: PostgreSQL's restore_command.

use std::path::Path;

use tidemark_archive_cmd::GetOutcome;

use super::open_repo;
use super::report::Report;
use crate::cli::config::Settings;
use crate::exit::{self, Failure};

/// What archive-get answers PostgreSQL: only an exit code, nothing on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The file is at the destination (exit 0).
    Restored,
    /// The file is not in the archive (exit 1, which PostgreSQL reads as "not found").
    NotInArchive,
}

impl Report for Fetched {
    fn text(&self) -> String {
        String::new()
    }

    fn json(&self) -> String {
        String::new()
    }

    fn code(&self) -> u8 {
        match self {
            Fetched::Restored => exit::OK,
            Fetched::NotInArchive => exit::FAILED,
        }
    }
}

/// Fetches one file. "Not in the archive" is an answer, not an error: PostgreSQL asks
/// about such files constantly, and it is not worth more than a debug line.
pub async fn run(settings: &Settings, name: &str, dest: &Path) -> Result<Fetched, Failure> {
    let repo = open_repo(settings).await?;
    match tidemark_archive_cmd::get(&repo, &settings.stanza, name, dest).await? {
        GetOutcome::Restored { len, .. } => {
            tracing::info!("restored {name} ({len} bytes) to {}", dest.display());
            Ok(Fetched::Restored)
        }
        GetOutcome::NotFound => {
            tracing::debug!("{name} is not in the archive");
            Ok(Fetched::NotInArchive)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::report::Format;

    #[test]
    fn not_in_the_archive_exits_1_and_nothing_is_printed() {
        assert_eq!(Fetched::Restored.code(), exit::OK);
        assert_eq!(Fetched::NotInArchive.code(), exit::FAILED);
        for f in [Fetched::Restored, Fetched::NotInArchive] {
            assert_eq!(f.render(Format::Text), "");
            assert_eq!(f.render(Format::Json), "");
        }
    }
}
