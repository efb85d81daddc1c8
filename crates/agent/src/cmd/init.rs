//! `tidemark init`: records (or checks) the stanza's cluster by asking the server.
//!
//! The first archive-push would record the cluster from a WAL segment's header anyway;
//! `init` does it up front, and checks that the server's archiving settings point at
//! tidemark, so that a wrong repository or stanza shows up before the first segment.
//! It also opens a replication connection, as base backups will, and reports whether that
//! works (a missing `pg_hba.conf` line, a role without `REPLICATION`): a warning, not a
//! failure, since archiving does not need it.

use serde::Serialize;
use tidemark_store::pg::{parse_history, TimelineId};

use super::open_repo;
use crate::cli::config::Settings;
use crate::cli::pgconn::{self, PgTarget, ProcessEnv};
use crate::exit::Failure;
use crate::replication::conn::{ReplError, ReplicationConn};
use crate::replication::proto::IdentifySystem;
use crate::server::ServerFacts;

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
    /// Whether a replication connection (what base backups use) works.
    pub replication: ReplicationCheck,
}

/// What a replication connection's `IDENTIFY_SYSTEM` said, or why it failed.
#[derive(Debug, Serialize)]
pub struct ReplicationCheck {
    /// True when the connection worked and reached the same cluster as the SQL one.
    pub ok: bool,
    /// The system identifier the walsender reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_identifier: Option<String>,
    /// The server's current timeline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// The server's current WAL position (`X/X`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xlogpos: Option<String>,
    /// Why it failed, with what to change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Connects, reads the identity, records or checks it.
pub async fn run(settings: &Settings) -> Result<InitReport, Failure> {
    let target = pgconn::resolve(&settings.pg, &ProcessEnv).map_err(Failure::Postgres)?;
    let client = pgconn::connect(&target).await.map_err(Failure::Postgres)?;
    let server = ServerFacts::read(&client).await?;
    let mut warnings = Vec::new();
    if server.archive_mode == "off" {
        warnings.push("archive_mode is off: set archive_mode = on (needs a restart)".to_string());
    }
    if !server.archive_command.contains("tidemark") {
        warnings.push(format!(
            "archive_command is {:?}: set it to 'tidemark archive-push %p'",
            server.archive_command
        ));
    }

    let repo = open_repo(settings).await?;
    repo.ensure_format().await?;
    let existed = repo.cluster(&settings.stanza).await?.is_some();
    let proposed = server.cluster_record("init");
    let record = repo.ensure_cluster(&settings.stanza, &proposed).await?;
    let replication = check_replication(&target, server.system_id).await;
    Ok(InitReport {
        stanza: settings.stanza.to_string(),
        repo: settings.repo.to_string(),
        system_identifier: record.system_id.to_string(),
        pg_version: record.pg_major,
        wal_segment_size: record.wal_segment_size,
        created: !existed,
        warnings,
        replication,
    })
}

/// Opens a replication connection and compares its `IDENTIFY_SYSTEM` with what the SQL
/// connection said (`sql_system_id`).
async fn check_replication(target: &PgTarget, sql_system_id: u64) -> ReplicationCheck {
    let failed = |error: String| ReplicationCheck {
        ok: false,
        system_identifier: None,
        timeline: None,
        xlogpos: None,
        error: Some(error),
    };
    match identify(target).await {
        Ok(id) if id.system_id.0 != sql_system_id => ReplicationCheck {
            system_identifier: Some(id.system_id.to_string()),
            ..failed(format!(
                "the replication connection reached another cluster (system identifier {}, \
                 the SQL connection's is {sql_system_id})",
                id.system_id
            ))
        },
        Ok(id) => ReplicationCheck {
            ok: true,
            system_identifier: Some(id.system_id.to_string()),
            timeline: Some(id.timeline.0),
            xlogpos: Some(id.xlogpos.to_string()),
            error: None,
        },
        Err(e) => failed(e.to_string()),
    }
}

/// `IDENTIFY_SYSTEM` over a replication connection; past timeline 1, also reads the
/// current timeline's history file, which streaming across a promotion needs.
async fn identify(target: &PgTarget) -> Result<IdentifySystem, ReplError> {
    let mut conn = ReplicationConn::connect(target).await?;
    let id = conn.identify_system().await?;
    tracing::debug!(
        "IDENTIFY_SYSTEM: system {} timeline {} at {} (database {:?})",
        id.system_id,
        id.timeline,
        id.xlogpos,
        id.dbname
    );
    if id.timeline > TimelineId(1) {
        let history = conn.timeline_history(id.timeline).await?;
        let expected = format!("{:08X}.history", id.timeline.0);
        if history.filename != expected {
            return Err(ReplError::Protocol(format!(
                "TIMELINE_HISTORY {} returned {:?}, not {expected}",
                id.timeline, history.filename
            )));
        }
        parse_history(&history.content).map_err(|e| {
            ReplError::Protocol(format!("the server's {expected} does not parse: {e}"))
        })?;
    }
    conn.close().await?;
    Ok(id)
}
