//! tidemark's repository: where WAL and backups live, and the only source of truth.
//!
//! - [`backend`]: the `Backend` trait (put/get/list/… with exact contracts) and its
//!   implementations: a local folder and S3; a conformance suite both pass.
//! - [`key`]: validated object keys, so nothing can escape the repository.
//! - [`codec`]: blobs named by the SHA-256 of their raw content, stored as a small
//!   versioned header plus lz4 frames; every read re-hashes.
//! - [`repo`]: the content-addressed repository over a backend (blobs, records).
//! - [`backup`]: base backups: the backup record, its file list, fixed-size chunks.
//! - [`catalog`]: the records: repository format, cluster identity, WAL index, quarantine.
//! - [`drill`]: restore drills' results (`tidemark drill`), one record per drill.
//! - [`jobs`]: the agent's job history, one record per finished run of a scheduled job.
//! - [`wal_content`]: the WAL content index: what each archived segment holds for the
//!   recovery planner, in the index entry or in a sidecar written by `reindex`.
//! - [`verify`]: what `tidemark verify` records (its runs and the blobs it proved), and
//!   the reads it needs (a blob shard's listing, a blob checked without writing it).
//! - [`url`]: repository URLs (`file:///…`, `s3://bucket/prefix`).
//! - [`pg`]: the `tidemark-pg` crate, re-exported: PostgreSQL's formats (LSN, timeline,
//!   WAL names, page headers, history files, `pg_control`); no IO.
//!
//! No printing, no exiting, no argument parsing: callers get typed [`Error`]s, and
//! [`Error::kind`] says once, for every crate above, what each means for the user
//! ([`ErrorKind`]: not found, integrity, unreachable, usage, not initialized, …).

#![deny(missing_docs)]

use std::io;
use std::path::PathBuf;

pub mod backend;
pub mod backup;
pub mod catalog;
pub mod codec;
pub mod drill;
pub mod gc;
pub mod history;
pub mod jobs;
pub mod key;
pub mod multihash;
pub mod repo;
mod serde_pg;
pub mod url;
pub mod verify;
pub mod wal_content;
pub mod wal_walk;

pub use codec::{Compression, Digest};
pub use key::Key;
pub use repo::Repo;
/// PostgreSQL's formats (the `tidemark-pg` crate), re-exported so that the repository's
/// callers name one vocabulary (`tidemark_store::pg::Lsn` is `tidemark_pg::Lsn`).
pub use tidemark_pg as pg;

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the repository, named for what a user can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist.
    #[error("{key}: not found")]
    NotFound {
        /// The missing key.
        key: Key,
    },
    /// A `Create` found the key taken.
    #[error("{key}: already exists")]
    AlreadyExists {
        /// The existing key.
        key: Key,
    },
    /// Stored bytes do not match their name or their own framing.
    #[error("{key} is corrupt: {detail}")]
    Corrupt {
        /// The damaged object.
        key: Key,
        /// What does not match.
        detail: String,
    },
    /// Written by a newer tidemark than this one.
    #[error("{what} has format {found}, this tidemark reads up to {supported}: upgrade tidemark")]
    UnsupportedFormat {
        /// The object or record.
        what: String,
        /// Its format.
        found: u32,
        /// The newest this build reads.
        supported: u32,
    },
    /// The store could not be reached or answered with a transient failure
    /// (connection refused, timeout, 5xx, throttling): retrying may help.
    #[error("{op} {key}: repository unreachable: {message}")]
    Unavailable {
        /// The operation.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The cause.
        message: String,
    },
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
    /// The store refused the request for good (access denied, no such bucket, …).
    #[error("{op} {key}: {message}")]
    Backend {
        /// The operation.
        op: &'static str,
        /// The key or prefix.
        key: String,
        /// The store's answer.
        message: String,
    },
    /// A repository URL or backend setting that cannot work.
    #[error("repository {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// Why it cannot work.
        reason: String,
    },
    /// An invalid object key or prefix.
    #[error("invalid object key {key:?}: {reason}")]
    BadKey {
        /// The key as given.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Not a SHA-256 hex digest.
    #[error("{0:?} is not a SHA-256 digest")]
    BadDigest(String),
    /// An invalid stanza name.
    #[error("invalid stanza name {0:?}: use 1-64 of [A-Za-z0-9_-]")]
    BadStanza(String),
    /// The repository holds something this build cannot make sense of.
    #[error("{what}: {detail}")]
    Catalog {
        /// The record.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// The location holds no repository. Only `tidemark init` creates one: a command
    /// pointed at a typo, or at an unmounted mount point, must not start a repository
    /// there and acknowledge WAL onto the wrong disk.
    #[error(
        "{location} holds no tidemark repository: check the repo setting, or run `tidemark init` to create one"
    )]
    NoRepository {
        /// The repository URL (or a description of the location).
        location: String,
    },
    /// The repository has no such stanza (only `tidemark init` creates one).
    #[error(
        "stanza {stanza:?} does not exist in repository {location}: check the stanza setting, or run `tidemark init` to create it"
    )]
    NoStanza {
        /// The stanza.
        stanza: String,
        /// The repository URL (or a description of the location).
        location: String,
    },
    /// The stanza belongs to another cluster.
    #[error(
        "stanza {stanza:?} belongs to the cluster with system identifier {expected}, not {found}"
    )]
    ClusterMismatch {
        /// The stanza.
        stanza: String,
        /// The system id on record.
        expected: String,
        /// The system id presented.
        found: String,
    },
    /// The stanza's cluster record names the same system identifier but another
    /// PostgreSQL major version or WAL segment size: the WAL or server presented is not
    /// the cluster the stanza was made for (a `pg_upgrade`, an `initdb` with another
    /// `--wal-segsize`), so it is refused like another cluster's.
    #[error("stanza {stanza:?} {detail}")]
    ClusterDiffers {
        /// The stanza.
        stanza: String,
        /// What differs, as "records …, this is …".
        detail: String,
    },
}

/// What an [`Error`] means for the user: decided here, once, for every crate that wraps
/// the store's errors (archive-cmd, recovery) and for the exit codes the agent chooses.
///
/// Deliberately not `#[non_exhaustive]`: a new kind must be a compile error in every
/// `match` that maps kinds (to exit codes, to a wrapping crate's own kinds), so that no
/// failure silently falls into a catch-all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The object asked for does not exist ([`Error::NotFound`]). Whether that is a
    /// failure is the caller's call: archive-get answers "not in the archive", a restore
    /// whose backup names a missing chunk calls it damage.
    NotFound,
    /// A `Create` found the name taken ([`Error::AlreadyExists`]). Writers of
    /// content-addressed objects take it as "deduplicated"; escaping to the user, it is a
    /// plain failure.
    AlreadyExists,
    /// Stored bytes or records that cannot be trusted (corrupt, contradictory): a person
    /// must look.
    Integrity,
    /// The store did not answer, or answered with a transient failure: retrying may help.
    Unreachable,
    /// Settings or input that cannot work (a bad URL or stanza name, a repository written
    /// by a newer tidemark): retrying alone never helps, a person must change something.
    Usage,
    /// No repository at the configured location, or no such stanza in it: a wrong
    /// setting, an unmounted disk, or `tidemark init` not run. Only `init` creates them.
    NotInitialized,
    /// The WAL or server presented belongs to another cluster than the stanza's.
    ClusterMismatch,
    /// Anything else: a local IO error, a store that refused the request for good, an
    /// invalid key.
    Failed,
}

impl ErrorKind {
    /// Every kind, for tables and checks that must cover them all (a new kind goes here
    /// too; a test checks that every error's kind is listed).
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::Integrity,
        ErrorKind::Unreachable,
        ErrorKind::Usage,
        ErrorKind::NotInitialized,
        ErrorKind::ClusterMismatch,
        ErrorKind::Failed,
    ];
}

impl Error {
    /// What the failure means for the user: the one classification of store errors.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::Corrupt { .. } | Error::Catalog { .. } => ErrorKind::Integrity,
            Error::Unavailable { .. } => ErrorKind::Unreachable,
            Error::UnsupportedFormat { .. } | Error::BadUrl { .. } | Error::BadStanza(_) => {
                ErrorKind::Usage
            }
            Error::NoRepository { .. } | Error::NoStanza { .. } => ErrorKind::NotInitialized,
            Error::ClusterMismatch { .. } | Error::ClusterDiffers { .. } => {
                ErrorKind::ClusterMismatch
            }
            Error::Io { .. }
            | Error::Backend { .. }
            | Error::BadKey { .. }
            | Error::BadDigest(_) => ErrorKind::Failed,
        }
    }

    /// True when retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Unreachable
    }

    /// True when the location holds no repository, or the repository no such stanza:
    /// a setting points at the wrong place, or `tidemark init` was not run.
    pub fn is_not_initialized(&self) -> bool {
        self.kind() == ErrorKind::NotInitialized
    }

    /// True for `NotFound`.
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    /// True when an object or record was reached but cannot be used: its bytes are
    /// damaged ([`ErrorKind::Integrity`]) or a newer tidemark wrote it. Listings report
    /// such a record and go on (`info`, picking a backup) instead of failing whole, as
    /// they must when the repository itself cannot be read.
    pub fn is_unreadable_record(&self) -> bool {
        self.kind() == ErrorKind::Integrity || matches!(self, Error::UnsupportedFormat { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of every variant, with the kind it must have.
    fn every_variant() -> Vec<(Error, ErrorKind)> {
        let key = || Key::new("a/b").unwrap();
        let s = || String::from("x");
        vec![
            (Error::NotFound { key: key() }, ErrorKind::NotFound),
            (
                Error::AlreadyExists { key: key() },
                ErrorKind::AlreadyExists,
            ),
            (
                Error::Corrupt {
                    key: key(),
                    detail: s(),
                },
                ErrorKind::Integrity,
            ),
            (
                Error::Catalog {
                    what: s(),
                    detail: s(),
                },
                ErrorKind::Integrity,
            ),
            (
                Error::UnsupportedFormat {
                    what: s(),
                    found: 9,
                    supported: 1,
                },
                ErrorKind::Usage,
            ),
            (
                Error::Unavailable {
                    op: "get",
                    key: s(),
                    message: s(),
                },
                ErrorKind::Unreachable,
            ),
            (
                Error::Io {
                    op: "read",
                    path: "/x".into(),
                    source: io::Error::other("disk"),
                },
                ErrorKind::Failed,
            ),
            (
                Error::Backend {
                    op: "put",
                    key: s(),
                    message: s(),
                },
                ErrorKind::Failed,
            ),
            (
                Error::BadUrl {
                    url: s(),
                    reason: s(),
                },
                ErrorKind::Usage,
            ),
            (
                Error::BadKey {
                    key: s(),
                    reason: "empty",
                },
                ErrorKind::Failed,
            ),
            (Error::BadDigest(s()), ErrorKind::Failed),
            (Error::BadStanza(s()), ErrorKind::Usage),
            (
                Error::NoRepository { location: s() },
                ErrorKind::NotInitialized,
            ),
            (
                Error::NoStanza {
                    stanza: s(),
                    location: s(),
                },
                ErrorKind::NotInitialized,
            ),
            (
                Error::ClusterMismatch {
                    stanza: s(),
                    expected: s(),
                    found: s(),
                },
                ErrorKind::ClusterMismatch,
            ),
            (
                Error::ClusterDiffers {
                    stanza: s(),
                    detail: s(),
                },
                ErrorKind::ClusterMismatch,
            ),
        ]
    }

    #[test]
    fn every_error_has_the_kind_the_exit_code_table_needs() {
        for (error, kind) in every_variant() {
            assert_eq!(error.kind(), kind, "{error:?}");
            assert_eq!(error.is_transient(), kind == ErrorKind::Unreachable);
            assert_eq!(error.is_not_found(), kind == ErrorKind::NotFound);
            assert_eq!(
                error.is_not_initialized(),
                kind == ErrorKind::NotInitialized
            );
            assert_eq!(
                error.is_unreadable_record(),
                kind == ErrorKind::Integrity || matches!(error, Error::UnsupportedFormat { .. })
            );
        }
    }

    #[test]
    fn all_lists_every_kind_once() {
        let kinds: std::collections::HashSet<ErrorKind> = ErrorKind::ALL.into_iter().collect();
        assert_eq!(kinds.len(), ErrorKind::ALL.len());
        for (_, kind) in every_variant() {
            assert!(kinds.contains(&kind), "{kind:?} missing from ALL");
        }
        for kind in ErrorKind::ALL {
            assert!(
                every_variant().iter().any(|(_, k)| *k == kind),
                "no error has kind {kind:?}"
            );
        }
    }
}
