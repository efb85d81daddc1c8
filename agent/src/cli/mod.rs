//! The command line: [`args`] (parsing), [`config`] (file + flags + environment →
//! settings), [`pgconn`] (PostgreSQL connection settings the libpq way).

pub mod args;
pub mod config;
pub mod pgconn;
