//! PostgreSQL's two archive hooks and the WAL content index, as library calls that never
//! print or exit:
//!
//! - [`push`]: `archive_command = 'tidemark archive-push %p'`: validate a WAL file, store
//!   it durably in the repository, and index it, refusing anything that would overwrite.
//! - [`spool`]: the same checks, then the file made durable in a local spool that a
//!   drainer moves into the repository (`archive_async`), so the archiver never waits on
//!   the store;
//! - [`get`]: `restore_command = 'tidemark archive-get %f %p'`: fetch, verify, and write a
//!   file atomically, telling "not in the archive" apart from every real failure;
//! - [`reindex`]: the WAL content index for segments archived before it existed
//!   ([`content`]: how a segment is decoded for it, by archive-push and by reindex).
//!
//! The `agent` crate maps [`Error::kind`] to exit codes.

#![deny(missing_docs)]

use std::io;
use std::path::PathBuf;

use tidemark_pg::WalError;

pub mod content;
pub mod early;
pub mod get;
mod mapped;
pub mod prefetch;
pub mod push;
pub mod reindex;
pub mod spool;

pub use get::{get, get_for_latest, GetOutcome};
pub use push::{push, PushOutcome};
pub use reindex::{reindex, ReindexReport};
pub use spool::{push_to_spool, Spool, SpoolOutcome};

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an archive command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file to archive cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The restored file cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The destination.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not the WAL its name says.
    #[error(transparent)]
    Wal(#[from] WalError),
    /// The repository failed or refused.
    #[error(transparent)]
    Store(#[from] tidemark_store::Error),
    /// The name already holds different content: nothing was replaced.
    #[error(
        "{name} is already archived with different content (archived sha256 {archived}, this file {new}); \
         nothing was overwritten, the new bytes are kept as {quarantine}"
    )]
    Conflict {
        /// The file name.
        name: String,
        /// The digest(s) already archived.
        archived: String,
        /// This file's digest.
        new: String,
        /// Where the refused content is recorded.
        quarantine: String,
    },
    /// The name is claimed for different content by another push that has not indexed
    /// it yet (one at work, or one that stopped and will be retried): nothing was
    /// replaced, and nothing of this file was indexed.
    #[error(
        "{name} is already claimed by another push of different content (claimed sha256 {claimed}, not indexed yet; this file {new}); \
         nothing was overwritten, the new bytes are kept as {quarantine}"
    )]
    ClaimConflict {
        /// The file name.
        name: String,
        /// The claimed content's digest.
        claimed: String,
        /// This file's digest.
        new: String,
        /// Where the refused content is recorded.
        quarantine: String,
    },
    /// The archive holds several contents for one name (from a store that ignored a
    /// conditional write, or a race): restoring either could be wrong.
    #[error("{name} has {count} different versions in the archive ({digests}): refusing to guess which is right")]
    Ambiguous {
        /// The file name.
        name: String,
        /// How many.
        count: usize,
        /// Their digests.
        digests: String,
    },
    /// The spool already queues this name with different content.
    #[error(
        "{name} is already queued in the spool with different content (queued sha256 {queued}, this file {new}); \
         nothing was replaced, and PostgreSQL keeps the file"
    )]
    QueuedConflict {
        /// The file name.
        name: String,
        /// The queued content's digest.
        queued: String,
        /// This file's digest.
        new: String,
    },
    /// The local spool failed (asynchronous archiving).
    #[error("spool {}: {detail}", path.display())]
    Spool {
        /// The spool file or folder.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// Spooled files that cannot be moved into the repository without a person.
    #[error(
        "{count} spooled files cannot be moved into the repository (first: {name}: {error}); \
         they stay in the spool"
    )]
    SpoolStuck {
        /// How many.
        count: usize,
        /// The first one.
        name: String,
        /// Its error.
        error: String,
    },
}

/// What kind of failure an [`Error`] is, for exit codes and log levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input: the file is missing, unreadable or not valid WAL.
    Input,
    /// The file belongs to another cluster than the stanza's.
    ClusterMismatch,
    /// Content conflicts or corruption: something a person must look at.
    Integrity,
    /// The repository or the local file system failed.
    Repository,
    /// Settings that cannot work: no repository or no such stanza at the configured
    /// place (`tidemark init` not run, or a wrong setting), an unknown format.
    Config,
}

impl Error {
    /// Classifies the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Read { .. } | Error::Wal(_) => ErrorKind::Input,
            Error::Write { .. } | Error::Spool { .. } => ErrorKind::Repository,
            Error::Conflict { .. }
            | Error::ClaimConflict { .. }
            | Error::Ambiguous { .. }
            | Error::QueuedConflict { .. }
            | Error::SpoolStuck { .. } => ErrorKind::Integrity,
            Error::Store(e) => ErrorKind::from(e.kind()),
        }
    }
}

/// The store decides what its errors mean; archive-push and archive-get only fold its
/// kinds into theirs.
impl From<tidemark_store::ErrorKind> for ErrorKind {
    fn from(kind: tidemark_store::ErrorKind) -> ErrorKind {
        use tidemark_store::ErrorKind as S;
        match kind {
            S::ClusterMismatch => ErrorKind::ClusterMismatch,
            S::Integrity => ErrorKind::Integrity,
            S::Usage | S::NotInitialized => ErrorKind::Config,
            // A missing object the push or get needed (a get's own "not in the archive"
            // is an outcome, not an error), a write refused, a store that did not answer.
            S::NotFound | S::AlreadyExists | S::Unreachable | S::Failed => ErrorKind::Repository,
        }
    }
}
