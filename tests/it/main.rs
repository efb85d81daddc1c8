//! tidemark's integration tests: one binary, run against real PostgreSQL clusters and a
//! real S3 server (s3s-fs) that the harness starts itself. See `harness/` for how.
//!
//! When a component is missing on a developer's machine the test prints why and skips;
//! under `CI` a missing component fails the test instead.

mod harness;

mod agent;

mod archive;

mod backup;

mod layout;

mod plan;

mod base_backup;

mod drill;
mod expire;
mod feed;

mod pitr;

mod replication;

mod s3_conformance;

mod silent_store;

mod status;

mod tls;

mod verify;

mod wal_decoder;
