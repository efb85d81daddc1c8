//! The command line: [`args`] (parsing), [`config`] (file + flags + environment →
//! settings, the PostgreSQL connection settings among them as
//! `tidemark_pgclient::settings::PgSettings`, which that crate resolves the libpq way).

pub mod args;
pub mod config;
