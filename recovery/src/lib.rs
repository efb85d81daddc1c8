//! tidemark's recovery side: turning a backup in the repository back into a data
//! directory that PostgreSQL can start from.
//!
//! - [`layout`]: checks a backup's file list against its record before anything is
//!   written (pure, no IO): relative, normal paths only, symbolic links only where
//!   PostgreSQL puts tablespace links, chunk counts that match sizes, no duplicates.
//! - [`restore`]: picks the backup, checks the targets, materializes the files in
//!   parallel (every chunk verified), writes the recovery settings, makes it durable,
//!   and removes everything it created when anything fails.
//! - [`autoconf`]: the `postgresql.auto.conf` block and `restore_command` quoting (pure).
//! - [`drill`]: the decisions of a restore drill (pure): the scratch cluster's settings,
//!   the checks file, the recovery point against the plan, the phases, the age warning.
//! - [`plan`]: the recovery planner (pure): a catalog snapshot and a target to a plan
//!   or a refusal.
//! - [`snapshot`]: reads the catalog snapshot from the repository and runs the planner,
//!   decoding the segments it asks for.
//! - [`retention`]: which backups a retention policy keeps and what stays restorable
//!   (pure; `tidemark expire` applies it).
//! - [`rpo`]: what the archive makes recoverable now (the newest recoverable commit, the
//!   durable LSN, each timeline's range and gaps), for `status` and the RPO watch (pure).
//! - [`verify`]: proves what the repository holds can be restored (every blob, every
//!   backup's list, WAL continuity, the history chain), incrementally, and records the run.
//!
//! No printing, no exiting, no argument parsing: callers get a typed [`Error`] whose
//! [`kind`](Error::kind) says what the failure means (usage, integrity, …).
//!
//! ```no_run
//! # async fn example(repo: tidemark_store::Repo) -> tidemark_recovery::Result<()> {
//! use tidemark_recovery::restore::{restore, Progress, RestoreRequest};
//! let stanza = tidemark_store::catalog::Stanza::new("main").unwrap();
//! let request = RestoreRequest {
//!     backup: None, // the newest
//!     pgdata: "/var/lib/postgresql/15/restored".into(),
//!     tablespace_map: Default::default(),
//!     restore_command: "tidemark archive-get %f %p".into(),
//!     archive_mode: Default::default(), // archive_mode = off in the restored cluster
//!     // Where replay stops: a plan's settings (`plan::Plan::settings`), checked.
//!     targets: tidemark_recovery::autoconf::TargetSettings::end_of_archive(1),
//! };
//! let progress = std::sync::Arc::new(Progress::default());
//! let report = restore(&repo, &stanza, &request, &progress).await?;
//! println!("{} files", report.files);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

use std::io;
use std::path::PathBuf;

pub mod autoconf;
pub mod continuity;
pub mod drill;
pub mod layout;
pub mod plan;
pub mod restore;
pub mod retention;
pub mod rpo;
pub mod snapshot;
pub mod verify;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a failure means for the user (and for the exit code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad arguments or an unusable target (not empty, not a directory), or settings
    /// the repository refuses: fix the command.
    Usage,
    /// The backup asked for does not exist.
    NotFound,
    /// The backup's file list or data cannot be trusted: a person must look.
    Integrity,
    /// The repository or the local file system failed.
    Failed,
}

/// Everything that can go wrong in a restore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stanza has no backup at all.
    #[error("stanza {stanza:?} has no backups: take one with `tidemark backup`")]
    NoBackups {
        /// The stanza.
        stanza: String,
    },
    /// No backup has the id asked for.
    #[error(
        "stanza {stanza:?} has no backup {id:?}; available: {}",
        list(available)
    )]
    UnknownBackup {
        /// The id asked for.
        id: String,
        /// The stanza.
        stanza: String,
        /// The ids it has, oldest first.
        available: Vec<String>,
    },
    /// An entry of the file list is unsafe or inconsistent; nothing was written.
    #[error("backup {backup}: refusing file list entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The backup.
        backup: String,
        /// The entry, as `path` or `tablespace OID: path`.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backup record itself is inconsistent (chunk size, tablespaces).
    #[error("backup {backup}: {detail}")]
    BadRecord {
        /// The backup.
        backup: String,
        /// What is wrong.
        detail: String,
    },
    /// A chunk's content does not fit the file list (wrong length), or is missing.
    #[error("backup {backup}: {path}: {detail}")]
    BadData {
        /// The backup.
        backup: String,
        /// The file being restored.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The request cannot work (a bad tablespace mapping, a relative path).
    #[error("{0}")]
    Usage(String),
    /// A target directory already holds something.
    #[error("{} is not empty: restore only into an empty or absent directory", path.display())]
    TargetNotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// The backup's file list, or one of its pages, is missing, damaged or unreachable.
    #[error("backup {backup}: {what} {}", list_failure(source))]
    FileList {
        /// The backup.
        backup: String,
        /// Which part: `its file list`, `page 3 of 12 of its file list`.
        what: String,
        /// What the repository said.
        #[source]
        source: tidemark_store::Error,
    },
    /// Reading a chunk of a file failed (corrupt, missing, unreachable).
    #[error("restoring {path} (chunk {index}): {source}")]
    Chunk {
        /// The file being restored.
        path: String,
        /// The chunk's index in the file.
        index: u64,
        /// What the repository said.
        #[source]
        source: tidemark_store::Error,
    },
    /// The caller interrupted the restore (see `Progress::interrupt`); what it had
    /// written was removed.
    #[error("interrupted; everything the restore wrote was removed")]
    Interrupted,
    /// A restore failed, and removing what it had written failed too.
    #[error("{cause}; removing what the restore wrote failed too: {}: {source}", path.display())]
    CleanupFailed {
        /// Why the restore failed.
        cause: Box<Error>,
        /// What could not be removed.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The stanza's cluster record names what the planner cannot use (a WAL segment size
    /// or a PostgreSQL major it does not know). A damaged segment is not an error: the
    /// planner refuses to replay across it.
    #[error("{name} {detail}")]
    WalContent {
        /// The file (or `stanza NAME` for the cluster record).
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// The planner broke its own contract (asked for a segment twice): a bug.
    #[error("internal error in the recovery planner: {0}")]
    Planner(String),
    /// The repository.
    #[error(transparent)]
    Store(#[from] tidemark_store::Error),
    /// A local file-system failure.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// What the failure means.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoBackups { .. } | Error::UnknownBackup { .. } => ErrorKind::NotFound,
            Error::UnsafeEntry { .. }
            | Error::BadRecord { .. }
            | Error::BadData { .. }
            | Error::WalContent { .. } => ErrorKind::Integrity,
            Error::Planner(_) => ErrorKind::Failed,
            Error::Usage(_) | Error::TargetNotEmpty { .. } => ErrorKind::Usage,
            // A chunk or a page the record names must be there: missing data is damage.
            Error::Chunk { source, .. } | Error::FileList { source, .. }
                if source.is_not_found() =>
            {
                ErrorKind::Integrity
            }
            Error::Chunk { source, .. } | Error::FileList { source, .. } | Error::Store(source) => {
                ErrorKind::from(source.kind())
            }
            Error::Io { .. } | Error::Interrupted => ErrorKind::Failed,
            Error::CleanupFailed { cause, .. } => cause.kind(),
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// The end of [`Error::FileList`]'s message (the store's text kept whole, so that the
/// cause is not repeated when the chain is printed).
fn list_failure(source: &tidemark_store::Error) -> String {
    if source.is_not_found() {
        format!("is missing from the repository ({source}): this backup cannot be restored")
    } else {
        format!("cannot be read: {source}")
    }
}

fn list(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".into()
    } else {
        ids.join(", ")
    }
}

/// The store decides what its errors mean; a restore only folds its kinds into these.
impl From<tidemark_store::ErrorKind> for ErrorKind {
    fn from(kind: tidemark_store::ErrorKind) -> ErrorKind {
        use tidemark_store::ErrorKind as S;
        match kind {
            // A restore checks no cluster identity: records that name another cluster
            // than the stanza's are records that cannot be trusted.
            S::Integrity | S::ClusterMismatch => ErrorKind::Integrity,
            // The agent checks that the repository and stanza exist before it restores
            // (`Repo::require_cluster`), so `NotInitialized` reaches here only if they
            // vanish meanwhile: a setting to fix, as for every other command.
            S::Usage | S::NotInitialized => ErrorKind::Usage,
            // A missing chunk or page is damage, decided in `Error::kind` where the
            // context is known; elsewhere the repository failed.
            S::NotFound | S::AlreadyExists | S::Unreachable | S::Failed => ErrorKind::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_keep_the_store_s_meaning() {
        let store = |e: tidemark_store::Error| Error::Store(e).kind();
        let no_stanza = tidemark_store::Error::NoStanza {
            stanza: "main".into(),
            location: "file:///r".into(),
        };
        assert_eq!(store(no_stanza), ErrorKind::Usage);
        let other_cluster = tidemark_store::Error::ClusterMismatch {
            stanza: "main".into(),
            expected: "1".into(),
            found: "2".into(),
        };
        assert_eq!(store(other_cluster), ErrorKind::Integrity);
        let unreachable = tidemark_store::Error::Unavailable {
            op: "get",
            key: "k".into(),
            message: "timeout".into(),
        };
        assert_eq!(store(unreachable), ErrorKind::Failed);
        let corrupt = tidemark_store::Error::Catalog {
            what: "w".into(),
            detail: "d".into(),
        };
        assert_eq!(store(corrupt), ErrorKind::Integrity);
    }
}
