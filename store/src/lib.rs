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
//! - [`url`]: repository URLs (`file:///…`, `s3://bucket/prefix`).
//! - [`pg`]: the `tidemark-pg` crate, re-exported: PostgreSQL's formats (LSN, timeline,
//!   WAL names, page headers, history files, `pg_control`); no IO.
//!
//! No printing, no exiting, no argument parsing: callers get typed [`Error`]s.

#![deny(missing_docs)]

use std::io;
use std::path::PathBuf;

pub mod backend;
pub mod backup;
pub mod catalog;
pub mod codec;
pub mod key;
pub mod multihash;
pub mod repo;
mod serde_pg;
pub mod url;

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

impl Error {
    /// True when retrying the same operation later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }

    /// True when the location holds no repository, or the repository no such stanza:
    /// a setting points at the wrong place, or `tidemark init` was not run.
    pub fn is_not_initialized(&self) -> bool {
        matches!(self, Error::NoRepository { .. } | Error::NoStanza { .. })
    }

    /// True for `NotFound`.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}
