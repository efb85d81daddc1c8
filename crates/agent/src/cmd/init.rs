//! `tidemark init`: records (or checks) the stanza's cluster by asking the server.
//!
//! The first archive-push would record the cluster from a WAL segment's header anyway;
//! `init` does it up front, and checks that the server's archiving settings point at
//! tidemark, so that a wrong repository or stanza shows up before the first segment.

use serde::Serialize;
use tidemark_store::catalog::ClusterRecord;
use tidemark_store::repo::now;

use super::open_repo;
use crate::cli::config::Settings;
use crate::cli::pgconn::{self, describe_pg_error, ProcessEnv};
use crate::exit::Failure;

/// What `init` found and did.
#[derive(Debug, Serialize)]
pub struct InitReport {
    /// Stanza.
    pub stanza: String,
    /// Repository URL.
    pub repo: String,
    /// The server's system identifier.
    pub system_identifier: String,
    /// PostgreSQL major version.
    pub pg_version: u32,
    /// WAL segment size.
    pub wal_segment_size: u64,
    /// True when this call created the record.
    pub created: bool,
    /// Server settings worth a look (archive_mode off, archive_command not tidemark).
    pub warnings: Vec<String>,
}

/// Connects, reads the identity, records or checks it.
pub async fn run(settings: &Settings) -> Result<InitReport, Failure> {
    let target = pgconn::resolve(&settings.pg, &ProcessEnv).map_err(Failure::Postgres)?;
    let client = pgconn::connect(&target).await.map_err(Failure::Postgres)?;
    let q = |e: tokio_postgres::Error| {
        Failure::Postgres(format!("querying the server: {}", describe_pg_error(&e)))
    };
    let row = client
        .query_one(
            "SELECT system_identifier::text, current_setting('server_version_num')::int, \
                    current_setting('wal_segment_size')::text, current_setting('wal_block_size')::int, \
                    current_setting('archive_mode'), current_setting('archive_command') \
             FROM pg_control_system()",
            &[],
        )
        .await
        .map_err(q)?;
    let system_id: u64 = row
        .get::<_, String>(0)
        .parse()
        .map_err(|_| Failure::Postgres("unreadable system identifier".into()))?;
    let version_num: i32 = row.get(1);
    let segment_size = parse_size(&row.get::<_, String>(2))
        .ok_or_else(|| Failure::Postgres("unreadable wal_segment_size".into()))?;
    let page_size: i32 = row.get(3);
    let archive_mode: String = row.get(4);
    let archive_command: String = row.get(5);

    let mut warnings = Vec::new();
    if archive_mode == "off" {
        warnings.push("archive_mode is off: set archive_mode = on (needs a restart)".to_string());
    }
    if !archive_command.contains("tidemark") {
        warnings.push(format!(
            "archive_command is {archive_command:?}: set it to 'tidemark archive-push %p'"
        ));
    }

    let repo = open_repo(settings).await?;
    repo.ensure_format().await?;
    let existed = repo.cluster(&settings.stanza).await?.is_some();
    let proposed = ClusterRecord {
        system_id,
        pg_major: (version_num / 10000) as u32,
        wal_segment_size: segment_size,
        wal_page_size: page_size as u32,
        created_at: now(),
        created_by: "init".into(),
    };
    let record = repo.ensure_cluster(&settings.stanza, &proposed).await?;
    Ok(InitReport {
        stanza: settings.stanza.to_string(),
        repo: settings.repo.to_string(),
        system_identifier: record.system_id.to_string(),
        pg_version: record.pg_major,
        wal_segment_size: record.wal_segment_size,
        created: !existed,
        warnings,
    })
}

/// Reads `current_setting('wal_segment_size')`, which PostgreSQL prints with a unit.
fn parse_size(s: &str) -> Option<u64> {
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
