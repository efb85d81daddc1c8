//! The agent: everything behind the `tidemark` binary, as a library so that integration
//! tests can drive its parts (the replication client, above all) against real servers.
//!
//! - [`backup`]: taking a base backup (stream, chunk, deduplicate, store, wait for WAL);
//! - [`cli`]: arguments, settings (file, flags, `TIDEMARK_*`), PostgreSQL connection settings;
//! - [`cmd`]: one module per subcommand, returning a [`cmd::Report`] or an [`exit::Failure`];
//! - [`daemon`]: `tidemark agent`, the long-running process (schedules, services);
//! - [`exit`]: exit codes;
//! - [`joblock`]: the per-stanza job lock of backup, verify, drill and expire;
//! - [`progress`]: progress lines for long work;
//! - [`server`]: what a server says about itself over SQL (identity, archiving);
//! - [`status`]: the measured RPO, `status`, the metrics endpoint and the RPO watch.
//!
//! PostgreSQL connections (SQL and replication, TLS, libpq-style settings) come from the
//! `tidemark-pgclient` crate; [`cli::config`] fills its plain settings struct.
//!
//! `main.rs` is the only place that prints errors or exits.

pub mod backup;
pub mod cli;
pub mod cmd;
pub mod daemon;
pub mod exit;
pub mod joblock;
pub mod progress;
pub mod server;
pub mod status;
