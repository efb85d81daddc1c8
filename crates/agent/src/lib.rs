//! The agent: everything behind the `tidemark` binary, as a library so that integration
//! tests can drive its parts (the replication client, above all) against real servers.
//!
//! - [`cli`]: arguments, settings (file, flags, `TIDEMARK_*`), PostgreSQL connection settings;
//! - [`cmd`]: one module per subcommand, returning values or [`exit::Failure`]s;
//! - [`exit`]: exit codes;
//! - [`replication`]: tidemark's own replication-protocol client (`proto` has no IO);
//! - [`tls`]: rustls for PostgreSQL connections, with libpq's `sslmode` rules.
//!
//! `main.rs` is the only place that prints errors or exits.

pub mod cli;
pub mod cmd;
pub mod exit;
pub mod replication;
pub mod tls;
