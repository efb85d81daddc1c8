//! Why a base backup failed on the PostgreSQL side, named for what the user can act on.
//!
//! Repository failures stay `tidemark_store::Error`s (`crate::exit::Failure::Store`);
//! everything else a backup can meet is a [`BackupError`]: the server cannot be reached
//! or asked ([`ServerError`]), refuses replication ([`ReplError`]), cannot be backed up
//! (a standby, archiving off), breaks the stream, damaged data, WAL that does not arrive.
//! pgclient's errors are kept as the sources. `crate::exit` maps the variants to exit
//! codes, in one place; the messages are the ones `docs/exit-codes.md` and the tests know.

use tidemark_pgclient::conn::ReplError;

use crate::server::ServerError;

/// Why a base backup failed (other than the repository).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The SQL connection: settings, server unreachable, authentication, a query.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The replication connection could not be opened or refused a command (no
    /// `REPLICATION` attribute, no `pg_hba.conf` line, a wrong password, …).
    #[error(transparent)]
    Replication(#[from] ReplError),
    /// The server is a standby: backups are taken from the primary.
    #[error(
        "the server is a standby (in recovery): tidemark takes backups from the primary; \
         point pg_host at the primary"
    )]
    Standby,
    /// `archive_mode = off`: the backup could never be restored.
    #[error(
        "WAL archiving is not configured (archive_mode = off): a backup cannot be restored \
         without its WAL; set archive_mode = on and archive_command = 'tidemark archive-push %p' \
         in postgresql.conf, restart PostgreSQL, and run the backup again"
    )]
    ArchiveModeOff,
    /// `archive_mode` is on but nothing archives.
    #[error(
        "WAL archiving is not configured: archive_mode is on but archive_command is empty; \
         set archive_command = 'tidemark archive-push %p' and reload PostgreSQL"
    )]
    NoArchiveCommand,
    /// The server's WAL segment size is not one PostgreSQL allows.
    #[error("the server's WAL segment size: {reason}")]
    SegmentSize {
        /// Why it is refused.
        reason: String,
    },
    /// The stream broke (the connection, the server, an archive in it).
    #[error("the backup stream failed: {0}")]
    Stream(#[source] ReplError),
    /// The stream's events came in an order the protocol does not allow.
    #[error("the backup stream is malformed: {0}")]
    Malformed(String),
    /// The server found pages whose data checksum fails: the cluster's data is damaged.
    #[error(
        "the server found pages whose data checksum fails: {message}{}; \
         the backup is not recorded. Find the damaged pages in the warnings above \
         (or with pg_checksums), or take the backup with --ignore-checksum-failures \
         to record it with the pages as they are",
        first.as_ref().map(|n| format!(" (first: {n})")).unwrap_or_default()
    )]
    DataChecksums {
        /// The server's closing error.
        message: String,
        /// The first of its warnings during the backup, if any.
        first: Option<String>,
    },
    /// The server was promoted (or otherwise changed timeline) while the backup ran.
    #[error("the server's timeline changed during the backup ({start} to {stop}): take it again")]
    TimelineChanged {
        /// The timeline at the start.
        start: u32,
        /// The timeline at the end.
        stop: u32,
    },
    /// The WAL index could not be read while waiting for the backup's WAL.
    #[error("reading the WAL index: {0}")]
    WalIndex(#[source] tidemark_store::Error),
    /// The backup's WAL did not reach the repository in time.
    #[error(
        "WAL segment {missing} (needed from {first} to {last}) did not reach the repository within {seconds} s: \
         check that archive_mode is on and archive_command is 'tidemark archive-push %p' \
         with this repository and stanza{}",
        archiver.as_ref().map(|a| format!("; {a}")).unwrap_or_default()
    )]
    WalNotArchived {
        /// The first segment not in the repository.
        missing: String,
        /// The first segment the backup needs.
        first: String,
        /// The last one.
        last: String,
        /// How long the wait was.
        seconds: u64,
        /// `pg_stat_archiver` in words, when it could be read.
        archiver: Option<String>,
    },
    /// A hundred backups started in the same second.
    #[error("a hundred backups started in the second {base}: no free id left")]
    NoFreeId {
        /// The id of that second.
        base: String,
    },
    /// SIGTERM or SIGINT: the backup was abandoned. Its record is written last, so nothing
    /// of it is listed; the chunks it stored are unreferenced, for expire to collect.
    #[error("interrupted by {signal}: the backup was abandoned and is not recorded")]
    Interrupted {
        /// The signal.
        signal: &'static str,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::{Failure, FAILED, INTEGRITY};

    fn code(e: BackupError) -> u8 {
        Failure::from(e).code()
    }

    /// The messages are the ones `Failure::Postgres(format!(…))` printed before the
    /// variants existed (docs and integration tests match on them).
    #[test]
    fn messages_are_unchanged() {
        let e = BackupError::DataChecksums {
            message: "checksum verification failure during base backup".into(),
            first: Some("checksum verification failed in file \"base/5/16384\"".into()),
        };
        assert_eq!(
            e.to_string(),
            "the server found pages whose data checksum fails: checksum verification failure \
             during base backup (first: checksum verification failed in file \"base/5/16384\"); \
             the backup is not recorded. Find the damaged pages in the warnings above (or with \
             pg_checksums), or take the backup with --ignore-checksum-failures to record it with \
             the pages as they are"
        );
        let e = BackupError::DataChecksums {
            message: "m".into(),
            first: None,
        };
        assert!(e
            .to_string()
            .starts_with("the server found pages whose data checksum fails: m; the backup"));
        let wal = |archiver: Option<&str>| BackupError::WalNotArchived {
            missing: "000000010000000000000003".into(),
            first: "000000010000000000000002".into(),
            last: "000000010000000000000003".into(),
            seconds: 5,
            archiver: archiver.map(str::to_string),
        };
        assert_eq!(
            wal(Some(
                "the server's archiver last archived nothing yet and reports no failures"
            ))
            .to_string(),
            "WAL segment 000000010000000000000003 (needed from 000000010000000000000002 to \
             000000010000000000000003) did not reach the repository within 5 s: check that \
             archive_mode is on and archive_command is 'tidemark archive-push %p' with this \
             repository and stanza; the server's archiver last archived nothing yet and reports \
             no failures"
        );
        assert!(wal(None)
            .to_string()
            .ends_with("with this repository and stanza"));
        assert_eq!(
            BackupError::TimelineChanged { start: 1, stop: 2 }.to_string(),
            "the server's timeline changed during the backup (1 to 2): take it again"
        );
        assert_eq!(
            BackupError::Malformed("data outside a file".into()).to_string(),
            "the backup stream is malformed: data outside a file"
        );
        assert_eq!(
            BackupError::Server(ServerError::Unreadable("wal_segment_size")).to_string(),
            "the server reported an unreadable wal_segment_size"
        );
    }

    /// docs/exit-codes.md: damaged data is 4, the rest of the PostgreSQL side 1.
    #[test]
    fn exit_codes() {
        let damaged = BackupError::DataChecksums {
            message: "m".into(),
            first: None,
        };
        assert_eq!(code(damaged), INTEGRITY);
        for e in [
            BackupError::Standby,
            BackupError::ArchiveModeOff,
            BackupError::NoArchiveCommand,
            BackupError::Malformed("x".into()),
            BackupError::TimelineChanged { start: 1, stop: 2 },
            BackupError::Stream(ReplError::Protocol("x".into())),
            BackupError::Replication(ReplError::Auth {
                message: "x".into(),
            }),
            BackupError::NoFreeId { base: "x".into() },
            BackupError::Interrupted { signal: "SIGTERM" },
        ] {
            assert_eq!(code(e), FAILED);
        }
    }
}
