//! Exit codes, in one place (documented in `docs/exit-codes.md`).
//!
//! Every code stays at or below 125 except [`RESTORE_FATAL`]: PostgreSQL reads an exit
//! status above 125 from `archive_command` as a crash of the command and from
//! `restore_command` as fatal. archive-get uses that on purpose, archive-push never.

use crate::backup::BackupError;
use crate::cli::config::ConfigError;
use crate::cmd::init::DataDirError;
use crate::server::ServerError;

/// Success.
pub const OK: u8 = 0;
/// The command failed (repository error, invalid input), or archive-get: not in the archive.
pub const FAILED: u8 = 1;
/// Usage or configuration error.
pub const USAGE: u8 = 2;
/// The WAL or server belongs to another cluster than the stanza's.
pub const CLUSTER_MISMATCH: u8 = 3;
/// Integrity: conflicting content, corruption. A person must look.
pub const INTEGRITY: u8 = 4;
/// plan, restore: the recovery target cannot be reached with what the repository holds
/// (before the first backup, beyond the archived WAL, across a gap, …); nothing was
/// written. The message names the nearest reachable point(s).
pub const TARGET_UNREACHABLE: u8 = 5;
/// drill: the drill ran and failed (the scratch server did not start or reach the target,
/// it stopped elsewhere than the plan said, or a check failed); the report names what,
/// and the result is recorded in the repository.
pub const DRILL_FAILED: u8 = 6;
/// backup, verify, drill, expire, agent: another run of the same kind holds the stanza's
/// job lock (see `crate::joblock`); nothing was done. The agent counts its own run as
/// skipped, not failed.
pub const LOCKED: u8 = 7;
/// status: a warning stands (the RPO is breached, the newest backup is older than
/// `backup_max_age`, a WAL gap, a failing archiver, …); the report names each. For
/// monitoring scripts: 0 is healthy, this is "look", 1 and up are failures to even tell.
pub const STATUS_WARNING: u8 = 8;
/// archive-get could not tell whether the file exists, or could not deliver it intact:
/// PostgreSQL must stop recovery rather than end it at the wrong point.
pub const RESTORE_FATAL: u8 = 128;

/// Why a command failed, carrying what decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad settings or arguments.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// archive-push / archive-get.
    #[error(transparent)]
    Archive(#[from] tidemark_archive_cmd::Error),
    /// The repository.
    #[error(transparent)]
    Store(#[from] tidemark_store::Error),
    /// PostgreSQL over SQL (init): settings, connection, a query.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// A base backup, on the PostgreSQL side.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// init --offline: a `pg_control` that cannot be trusted.
    #[error(transparent)]
    DataDirectory(#[from] DataDirError),
    /// restore.
    #[error(transparent)]
    Recovery(#[from] tidemark_recovery::Error),
    /// plan, restore: the planner refused the target.
    #[error(transparent)]
    Unreachable(#[from] crate::cmd::plan::Unreachable),
    /// drill: interrupted, or its scratch folder could not be made (a drill that ran and
    /// failed is a report, exit [`DRILL_FAILED`]).
    #[error(transparent)]
    Drill(#[from] crate::cmd::drill::DrillError),
    /// The stanza's job lock (or the agent's).
    #[error(transparent)]
    JobLock(#[from] crate::joblock::JobLockError),
}

impl Failure {
    /// The failure and its causes on one line (each cause once).
    pub fn one_line(&self) -> String {
        let mut msg = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let text = s.to_string();
            if !msg.contains(&text) {
                msg.push_str(": ");
                msg.push_str(&text);
            }
            source = s.source();
        }
        msg.replace('\n', " ")
    }

    /// The exit code for this failure.
    pub fn code(&self) -> u8 {
        use tidemark_archive_cmd::ErrorKind as K;
        match self {
            Failure::Config(_) => USAGE,
            Failure::Server(_) | Failure::DataDirectory(_) => FAILED,
            Failure::Backup(e) => backup_code(e),
            Failure::Archive(e) => match e.kind() {
                K::Input | K::Repository => FAILED,
                K::Config => USAGE,
                K::ClusterMismatch => CLUSTER_MISMATCH,
                K::Integrity => INTEGRITY,
            },
            Failure::Store(e) => store_code(e),
            Failure::Recovery(e) => recovery_code(e),
            Failure::Unreachable(_) => TARGET_UNREACHABLE,
            Failure::Drill(_) => FAILED,
            Failure::JobLock(crate::joblock::JobLockError::Held { .. }) => LOCKED,
            Failure::JobLock(crate::joblock::JobLockError::Io { .. }) => FAILED,
        }
    }
}

fn store_code(e: &tidemark_store::Error) -> u8 {
    store_kind_code(e.kind())
}

/// The exit code for each kind of store failure (the store decides the kind). An
/// exhaustive match: a new kind does not compile until it has a code here.
pub const fn store_kind_code(kind: tidemark_store::ErrorKind) -> u8 {
    use tidemark_store::ErrorKind as K;
    match kind {
        K::ClusterMismatch => CLUSTER_MISMATCH,
        K::Integrity => INTEGRITY,
        // No repository or no stanza: a person must fix the setting or run `init`
        // (docs/exit-codes.md, "No repository, or no stanza: exit 2").
        K::Usage | K::NotInitialized => USAGE,
        K::NotFound | K::AlreadyExists | K::Unreachable | K::Failed => FAILED,
    }
}

/// backup: the server's data is damaged (pages whose data checksum fails) is 4, a person
/// must look; everything else on the PostgreSQL side (unreachable, refused, not
/// backed up, a broken stream, WAL not archived in time) is 1. No wildcard: a new
/// variant must be given its code here.
fn backup_code(e: &BackupError) -> u8 {
    use BackupError as B;
    match e {
        B::DataChecksums { .. } => INTEGRITY,
        B::Server(_)
        | B::Replication(_)
        | B::Standby
        | B::ArchiveModeOff
        | B::NoArchiveCommand
        | B::SegmentSize { .. }
        | B::Stream(_)
        | B::Malformed(_)
        | B::TimelineChanged { .. }
        | B::WalIndex(_)
        | B::WalNotArchived { .. }
        | B::NoFreeId { .. }
        | B::Interrupted { .. } => FAILED,
    }
}

/// restore: an unsafe file list or corrupt data is 4, a target that is not empty or a bad
/// argument 2, no such backup or a repository failure 1.
fn recovery_code(e: &tidemark_recovery::Error) -> u8 {
    use tidemark_recovery::ErrorKind as K;
    match e.kind() {
        K::Usage => USAGE,
        K::Integrity => INTEGRITY,
        K::NotFound | K::Failed => FAILED,
        _ => FAILED,
    }
}

// Checked at compile time: PostgreSQL reads statuses above 125 as a crash or as fatal.
const _: () = {
    assert!(FAILED <= 125 && USAGE <= 125 && CLUSTER_MISMATCH <= 125 && INTEGRITY <= 125);
    assert!(TARGET_UNREACHABLE <= 125 && DRILL_FAILED <= 125 && LOCKED <= 125);
    assert!(STATUS_WARNING <= 125);
    // Every code means one thing: a script tells "unreachable" from every other failure.
    let codes = [
        OK,
        FAILED,
        USAGE,
        CLUSTER_MISMATCH,
        INTEGRITY,
        TARGET_UNREACHABLE,
        DRILL_FAILED,
        LOCKED,
        STATUS_WARNING,
        RESTORE_FATAL,
    ];
    let mut a = 0;
    while a < codes.len() {
        let mut b = a + 1;
        while b < codes.len() {
            assert!(codes[a] != codes[b]);
            b += 1;
        }
        a += 1;
    }
    assert!(RESTORE_FATAL > 125);
    // Every kind of store failure has an ordinary code (archive-get alone goes above 125,
    // by its own rule in `main`).
    let mut i = 0;
    while i < tidemark_store::ErrorKind::ALL.len() {
        let code = store_kind_code(tidemark_store::ErrorKind::ALL[i]);
        assert!(code != OK && code <= 125);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_store::{Error as S, ErrorKind as K};

    /// A store error of each kind, with the code docs/exit-codes.md gives it.
    fn samples() -> Vec<(fn() -> S, u8)> {
        vec![
            (
                || S::NotFound {
                    key: tidemark_store::Key::new("a/b").unwrap(),
                },
                FAILED,
            ),
            (
                || S::AlreadyExists {
                    key: tidemark_store::Key::new("a/b").unwrap(),
                },
                FAILED,
            ),
            (
                || S::Catalog {
                    what: "w".into(),
                    detail: "d".into(),
                },
                INTEGRITY,
            ),
            (
                || S::Unavailable {
                    op: "get",
                    key: "k".into(),
                    message: "timeout".into(),
                },
                FAILED,
            ),
            (|| S::BadStanza("/".into()), USAGE),
            (
                || S::NoRepository {
                    location: "file:///x".into(),
                },
                USAGE,
            ),
            (
                || S::ClusterMismatch {
                    stanza: "main".into(),
                    expected: "1".into(),
                    found: "2".into(),
                },
                CLUSTER_MISMATCH,
            ),
            (
                || S::Backend {
                    op: "put",
                    key: "k".into(),
                    message: "access denied".into(),
                },
                FAILED,
            ),
        ]
    }

    #[test]
    fn store_failures_have_their_documented_codes_directly_and_through_archive_cmd() {
        let kinds: Vec<K> = samples().iter().map(|(e, _)| e().kind()).collect();
        for kind in K::ALL {
            assert!(kinds.contains(&kind), "no sample of {kind:?}");
        }
        for (error, code) in samples() {
            assert_eq!(Failure::Store(error()).code(), code, "{}", error());
            let archive = tidemark_archive_cmd::Error::Store(error());
            assert_eq!(Failure::Archive(archive).code(), code, "{}", error());
        }
    }
}
