//! The command line: [`args`] (parsing), [`config`] (file + flags + environment →
//! settings, the PostgreSQL connection settings among them as
//! `tidemark_pgclient::settings::PgSettings`, which that crate resolves the libpq way),
//! [`duration`] (`"1h30m"` and the like, for duration settings).

pub mod args;
pub mod config;
pub mod duration;
