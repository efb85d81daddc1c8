//! What a server says about itself over SQL: who it is (system identifier, version, WAL
//! segment and page size) and how it archives. `init` records it; `backup` also checks
//! that its backups could be restored. [`ServerError`] is what can go wrong on the way:
//! the settings, the connection (pgclient's errors, kept as they are), or the answers.

use tidemark_pg::SystemId;
use tidemark_pgclient::settings::{self as pgsettings, PgSettings, PgTarget, ProcessEnv};
use tidemark_pgclient::sql::{self, describe_pg_error};
use tidemark_store::catalog::ClusterRecord;
use tidemark_store::repo::now;

/// Why the server could not be asked (or did not answer sensibly). Exit code 1 for all
/// (`crate::exit`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The connection settings do not resolve (a bad `PGPORT`, an unreadable password
    /// file, …).
    #[error(transparent)]
    Settings(#[from] pgsettings::SettingsError),
    /// The server cannot be reached, or refused the connection or the credentials.
    #[error(transparent)]
    Connect(#[from] sql::ConnectError),
    /// A query failed.
    #[error("{what}: {why}")]
    Query {
        /// What was being read (`querying the server`, `listing databases`).
        what: &'static str,
        /// The server's message, or tokio-postgres's error in words.
        why: String,
    },
    /// The server's answer cannot be read.
    #[error("the server reported an unreadable {0}")]
    Unreadable(&'static str),
}

impl ServerError {
    /// A failed query, named by what it was reading.
    pub fn query(what: &'static str, e: &tokio_postgres::Error) -> ServerError {
        ServerError::Query {
            what,
            why: describe_pg_error(e),
        }
    }
}

/// Resolves the connection settings the libpq way and opens an SQL connection.
pub async fn connect(
    settings: &PgSettings,
) -> Result<(PgTarget, tokio_postgres::Client), ServerError> {
    let target = pgsettings::resolve(settings, &ProcessEnv)?;
    let client = sql::connect(&target).await?;
    Ok((target, client))
}

/// Who the server is, and how it archives.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    /// `pg_control`'s system identifier.
    pub system_id: u64,
    /// `server_version`, as the server reports it.
    pub version: String,
    /// `server_version_num` (150008 for 15.8).
    pub version_num: i32,
    /// WAL segment size in bytes.
    pub segment_size: u64,
    /// WAL page size in bytes.
    pub page_size: u32,
    /// `archive_mode`.
    pub archive_mode: String,
    /// `archive_command`.
    pub archive_command: String,
    /// `archive_library` (PostgreSQL 15+; empty before).
    pub archive_library: String,
    /// `pg_is_in_recovery()`: a standby.
    pub in_recovery: bool,
}

impl ServerFacts {
    /// Reads them over an SQL connection.
    pub async fn read(client: &tokio_postgres::Client) -> Result<ServerFacts, ServerError> {
        let row = client
            .query_one(
                "SELECT system_identifier::text, current_setting('server_version_num')::int, \
                        current_setting('server_version'), current_setting('wal_segment_size'), \
                        current_setting('wal_block_size')::int, current_setting('archive_mode'), \
                        current_setting('archive_command'), \
                        coalesce(current_setting('archive_library', true), ''), \
                        pg_is_in_recovery() \
                 FROM pg_control_system()",
                &[],
            )
            .await
            .map_err(|e| ServerError::query("querying the server", &e))?;
        let system_id = row
            .get::<_, String>(0)
            .parse()
            .map_err(|_| ServerError::Unreadable("system identifier"))?;
        let segment_size = parse_size(&row.get::<_, String>(3))
            .ok_or(ServerError::Unreadable("wal_segment_size"))?;
        Ok(ServerFacts {
            system_id,
            version_num: row.get(1),
            version: row.get(2),
            segment_size,
            page_size: row.get::<_, i32>(4) as u32,
            archive_mode: row.get(5),
            archive_command: row.get(6),
            archive_library: row.get(7),
            in_recovery: row.get(8),
        })
    }

    /// The major version (15 for 15.8).
    pub fn pg_major(&self) -> u32 {
        (self.version_num / 10000) as u32
    }

    /// The cluster record this server would have, written by `created_by`.
    pub fn cluster_record(&self, created_by: &str) -> ClusterRecord {
        ClusterRecord {
            system_id: SystemId(self.system_id),
            pg_major: self.pg_major(),
            wal_segment_size: self.segment_size,
            wal_page_size: self.page_size,
            created_at: now(),
            created_by: created_by.into(),
        }
    }
}

/// Reads `current_setting('wal_segment_size')`, which PostgreSQL prints with a unit.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    Some(match unit.trim() {
        "" | "B" => n,
        "kB" => n << 10,
        "MB" => n << 20,
        "GB" => n << 30,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_with_units() {
        assert_eq!(super::parse_size("16MB"), Some(16 << 20));
        assert_eq!(super::parse_size("1GB"), Some(1 << 30));
        assert_eq!(super::parse_size("8192"), Some(8192));
        assert_eq!(super::parse_size("lots"), None);
    }
}
