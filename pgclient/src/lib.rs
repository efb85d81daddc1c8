//! tidemark's PostgreSQL client: the streaming-replication protocol, TLS, and the
//! libpq-style connection settings.
//!
//! tokio-postgres cannot open replication connections (`replication=true` in the startup
//! packet) nor speak CopyBoth, and a walsender accepts only the simple query protocol and
//! replication commands (`IDENTIFY_SYSTEM`, `TIMELINE_HISTORY`, `BASE_BACKUP`, …; see
//! <https://www.postgresql.org/docs/current/protocol-replication.html>). So base backups
//! and WAL streaming use this small client instead, in two layers, as rust-postgres does:
//!
//! - [`proto`] is sans-IO: it frames frontend messages into a `BytesMut`, decodes backend
//!   messages from one (`Ok(None)` for a partial frame), drives authentication (trust,
//!   cleartext, MD5, SCRAM-SHA-256) and collects simple-query results, and parses the
//!   replication commands' result rows ([`proto::IdentifySystem`], [`proto::TimelineHistory`]),
//!   frames `BASE_BACKUP` ([`proto::base_backup_command`]) and decodes its reply
//!   ([`proto::BaseBackupReply`]: result sets, then the PostgreSQL 15+ CopyOut stream of
//!   typed messages). No sockets, no tokio, no clock: it is tested on constructed bytes.
//!   Framing, MD5 and SCRAM come from `postgres-protocol`.
//! - [`tar`] is sans-IO too: a streaming tar reader that turns a base backup's archive
//!   bytes into entries and data pieces without buffering any file.
//! - [`conn`] does the IO: [`conn::ReplicationConn`] connects over TCP or a unix socket,
//!   feeds what it reads to [`proto`] and writes what [`proto`] frames, and turns server
//!   errors into [`conn::ReplError`]s a user can act on (a missing `pg_hba.conf` line, a
//!   role without `REPLICATION`, a wrong password).
//!
//! Around them:
//!
//! - [`settings`]: connection settings resolved the way libpq users expect
//!   ([`settings::PgSettings`] as configured → [`settings::PgTarget`]: host, port, user,
//!   password, `~/.pgpass`, sslmode). A plain struct: the caller fills it from its own
//!   flags or files; this crate has no command line;
//! - [`tls`]: rustls with libpq's `sslmode` rules, for both kinds of connection;
//! - [`sql`]: ordinary SQL connections through tokio-postgres, with that TLS.
//!
//! `tidemark init` uses the replication client to check that base backups will be able to
//! connect; [`conn::ReplicationConn::base_backup`] streams a base backup (PostgreSQL 15+) as
//! [`conn::BackupEvent`]s, which `tidemark backup` builds on; `START_REPLICATION` comes
//! next.
//!
//! What the crate must not do: know the repository (no `tidemark-store`), parse arguments,
//! print, or exit. PostgreSQL's formats come from `tidemark-pg`; timeline ids and system
//! identifiers cross this crate's boundary as plain `u32` / `u64` until `tidemark-pg` has
//! types for them.

#![deny(missing_docs)]

pub mod conn;
pub mod proto;
pub mod settings;
pub mod sql;
pub mod tar;
pub mod tls;

/// The WAL position type in this crate's API (`tidemark-pg`'s).
pub use tidemark_pg::Lsn;
