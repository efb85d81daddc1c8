//! tidemark's own client for PostgreSQL's streaming-replication protocol.
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
//!   replication commands' result rows ([`proto::IdentifySystem`], [`proto::TimelineHistory`]).
//!   No sockets, no tokio, no clock: it is tested on constructed bytes. Framing, MD5 and
//!   SCRAM come from `postgres-protocol`.
//! - [`conn`] does the IO: [`conn::ReplicationConn`] connects over TCP or a unix socket,
//!   feeds what it reads to [`proto`] and writes what [`proto`] frames, and turns server
//!   errors into [`conn::ReplError`]s a user can act on (a missing `pg_hba.conf` line, a
//!   role without `REPLICATION`, a wrong password).
//!
//! Today only `tidemark init` uses it, to check that base backups will be able to connect;
//! `BASE_BACKUP` and `START_REPLICATION` come next.

pub mod conn;
pub mod proto;
