//! The agent: everything behind the `tidemark` binary, as a library so that integration
//! tests can drive its parts (the replication client, above all) against real servers.
//!
//! - [`backup`]: taking a base backup (stream, chunk, deduplicate, store, wait for WAL);
//! - [`cli`]: arguments, settings (file, flags, `TIDEMARK_*`), PostgreSQL connection settings;
//! - [`cmd`]: one module per subcommand, returning a [`cmd::Report`] or an [`exit::Failure`];
//! - [`exit`]: exit codes;
//! - [`progress`]: progress lines for long work;
//! - [`replication`]: tidemark's own replication-protocol client (`proto` has no IO);
//! - [`server`]: what a server says about itself over SQL (identity, archiving);
//! - [`tls`]: rustls for PostgreSQL connections, with libpq's `sslmode` rules.
//!
//! `main.rs` is the only place that prints errors or exits.

pub mod backup;
pub mod cli;
pub mod cmd;
pub mod exit;
pub mod progress;
pub mod replication;
pub mod server;
pub mod tls;
