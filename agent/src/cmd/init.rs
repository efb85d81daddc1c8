//! `tidemark init`: creates the repository and the stanza (or checks them). It is the
//! only command that does: every other one refuses a location without a repository, so
//! that a typo or an unmounted mount point cannot start a repository in the wrong place.
//!
//! The cluster's identity (system identifier, PostgreSQL major version, WAL segment and
//! page size) comes from the server, or with `--offline` from `global/pg_control` in the
//! data directory, so that a stanza can be created while the server is down (as
//! pgBackRest's `stanza-create --no-online` does). Online, `init` also checks that the
//! server's archiving settings point at tidemark, and opens a replication connection, as
//! base backups will, and reports whether that works (a missing `pg_hba.conf` line, a
//! role without `REPLICATION`): a warning, not a failure, since archiving does not need it.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tidemark_pg::control::{parse_control_file, ControlFile, ControlFileError, CONTROL_FILE_PATH};
use tidemark_pg::parse_history;
use tidemark_store::catalog::ClusterRecord;
use tidemark_store::repo::now;

use super::open_repo;
use crate::cli::config::{ConfigError, Settings};
use crate::exit::Failure;
use crate::server::ServerFacts;
use tidemark_pgclient::conn::{ReplError, ReplicationConn};
use tidemark_pgclient::proto::IdentifySystem;
use tidemark_pgclient::settings::PgTarget;

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
    /// Whether a replication connection (what base backups use) works; absent with
    /// `--offline`, which contacts no server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication: Option<ReplicationCheck>,
    /// Where the identity came from: `server`, or the `pg_control` file read.
    pub identity_from: String,
    /// `pg_control`'s catalog version (with `--offline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog_version: Option<u32>,
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

/// One line for the stanza, one for the replication check (or where the identity came
/// from), one per warning.
impl crate::cmd::report::Report for InitReport {
    fn text(&self) -> String {
        let mut out = format!(
            "stanza {}: cluster {} (PostgreSQL {}, {} MiB WAL segments) {} in {}\n",
            self.stanza,
            self.system_identifier,
            self.pg_version,
            self.wal_segment_size >> 20,
            if self.created {
                "recorded"
            } else {
                "already recorded"
            },
            self.repo
        );
        match &self.replication {
            Some(rep) => match (
                &rep.error,
                &rep.system_identifier,
                rep.timeline,
                &rep.xlogpos,
            ) {
                (None, Some(id), Some(tli), Some(pos)) if rep.ok => out.push_str(&format!(
                    "replication: ok (system identifier {id}, timeline {tli}, at {pos})\n"
                )),
                (Some(e), ..) => out.push_str(&format!("replication: {e}\n")),
                _ => out.push_str("replication: ok\n"),
            },
            None => out.push_str(&format!(
                "identity read from {}; no server contacted\n",
                self.identity_from
            )),
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        out
    }

    fn json(&self) -> String {
        crate::cmd::report::json_lines(self)
    }
}

/// Reads the identity (from the server, or from `pg_control` when `offline`), then
/// creates or checks the repository and the stanza.
pub async fn run(settings: &Settings, offline: bool) -> Result<InitReport, Failure> {
    if offline {
        return run_offline(settings).await;
    }
    let (target, client) = crate::server::connect(&settings.pg).await?;
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

    let (record, created) = record(settings, &server.cluster_record("init")).await?;
    let replication = check_replication(&target, server.system_id).await;
    Ok(InitReport {
        stanza: settings.stanza.to_string(),
        repo: settings.repo.to_string(),
        system_identifier: record.system_id.to_string(),
        pg_version: record.pg_major,
        wal_segment_size: record.wal_segment_size,
        created,
        warnings,
        replication: Some(replication),
        identity_from: "server".into(),
        catalog_version: None,
    })
}

/// Creates the repository (when the location holds none) and the stanza's record (when it
/// has none), or checks `proposed` against the record there. Returns the record in force
/// and whether this call created it.
async fn record(
    settings: &Settings,
    proposed: &ClusterRecord,
) -> Result<(ClusterRecord, bool), Failure> {
    let repo = open_repo(settings).await?;
    repo.ensure_format().await?;
    let existed = repo.cluster(&settings.stanza).await?.is_some();
    let record = repo.ensure_cluster(&settings.stanza, proposed).await?;
    repo.lay_out_blob_folders().await?;
    Ok((record, !existed))
}

/// How often a `pg_control` whose CRC does not match is read again: a running server
/// rewrites it at every checkpoint, and a read can catch a write half done.
const CONTROL_READS: u32 = 5;

/// `init --offline`: the identity from `<pgdata>/global/pg_control` and `PG_VERSION`.
async fn run_offline(settings: &Settings) -> Result<InitReport, Failure> {
    let pgdata = settings.pgdata.as_deref().ok_or_else(|| {
        ConfigError(
            "init --offline reads the cluster's identity from its data directory: give --pgdata DIR \
             (or TIDEMARK_PGDATA, or pgdata in the config file)"
                .into(),
        )
    })?;
    let facts = read_data_directory(pgdata).await?;
    let (record, created) = record(settings, &facts.cluster_record("init --offline")).await?;
    Ok(InitReport {
        stanza: settings.stanza.to_string(),
        repo: settings.repo.to_string(),
        system_identifier: record.system_id.to_string(),
        pg_version: record.pg_major,
        wal_segment_size: record.wal_segment_size,
        created,
        warnings: vec![
            "offline: the server's archive_mode and archive_command were not checked".into(),
        ],
        replication: None,
        identity_from: facts.control_path.display().to_string(),
        catalog_version: Some(facts.control.catalog_version),
    })
}

/// A data directory whose `pg_control` cannot be trusted (exit 1; one that is no data
/// directory at all is a configuration error instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// `pg_control` is damaged (its CRC fails on every read) or holds impossible values.
    #[error("{}: {source}", path.display())]
    ControlFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ControlFileError,
    },
    /// `pg_control` was written by another major version than `PG_VERSION` names.
    #[error(
        "{} says PostgreSQL {pg_major}, but {} has version {control_version}, which PostgreSQL {}-{} writes",
        version_path.display(),
        control_path.display(),
        majors.start(),
        majors.end()
    )]
    VersionMismatch {
        /// `PG_VERSION`.
        version_path: PathBuf,
        /// Its major version.
        pg_major: u32,
        /// `global/pg_control`.
        control_path: PathBuf,
        /// Its `pg_control_version`.
        control_version: u32,
        /// The major versions that write it.
        majors: std::ops::RangeInclusive<u32>,
    },
}

/// What a data directory says about its cluster.
#[derive(Debug)]
struct DataDirectoryFacts {
    control_path: PathBuf,
    control: ControlFile,
    pg_major: u32,
}

impl DataDirectoryFacts {
    fn cluster_record(&self, created_by: &str) -> ClusterRecord {
        ClusterRecord {
            system_id: self.control.system_id,
            pg_major: self.pg_major,
            wal_segment_size: self.control.wal_segment_size.bytes(),
            wal_page_size: self.control.wal_page_size,
            created_at: now(),
            created_by: created_by.into(),
        }
    }
}

/// Reads `global/pg_control` and `PG_VERSION` under `pgdata`, and checks that they agree.
/// A folder that is not a data directory is a configuration error (exit 2); a
/// `pg_control` that is damaged, or that another major version wrote than `PG_VERSION`
/// names, fails (exit 1).
async fn read_data_directory(pgdata: &Path) -> Result<DataDirectoryFacts, Failure> {
    let not_pgdata = |why: String| -> Failure {
        ConfigError(format!(
            "{} is not a PostgreSQL data directory ({why}): check --pgdata",
            pgdata.display()
        ))
        .into()
    };
    let version_path = pgdata.join("PG_VERSION");
    let control_path = pgdata.join(CONTROL_FILE_PATH);
    let version = match tokio::fs::read_to_string(&version_path).await {
        Ok(v) => v,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_pgdata("no PG_VERSION file".into()))
        }
        Err(e) => return Err(not_pgdata(format!("{}: {e}", version_path.display()))),
    };
    let pg_major: u32 = version
        .trim()
        .parse()
        .map_err(|_| not_pgdata(format!("PG_VERSION says {:?}", version.trim())))?;
    let mut attempt = 0;
    let control = loop {
        attempt += 1;
        let bytes = match tokio::fs::read(&control_path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_pgdata(format!("no {CONTROL_FILE_PATH}")))
            }
            Err(e) => return Err(not_pgdata(format!("{}: {e}", control_path.display()))),
        };
        match parse_control_file(&bytes) {
            Ok(c) => break c,
            Err(ControlFileError::BadCrc { .. }) if attempt < CONTROL_READS => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e @ ControlFileError::UnknownVersion(_)) => {
                return Err(ConfigError(format!("{}: {e}", control_path.display())).into())
            }
            Err(source) => {
                return Err(DataDirError::ControlFile {
                    path: control_path,
                    source,
                }
                .into())
            }
        }
    };
    if !control.majors().contains(&pg_major) {
        return Err(DataDirError::VersionMismatch {
            version_path,
            pg_major,
            control_path,
            control_version: control.pg_control_version,
            majors: control.majors(),
        }
        .into());
    }
    Ok(DataDirectoryFacts {
        control_path,
        control,
        pg_major,
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
        Ok(id) if id.system_id != sql_system_id => ReplicationCheck {
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
            timeline: Some(id.timeline),
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
    if id.timeline > 1 {
        let history = conn.timeline_history(id.timeline).await?;
        let expected = format!("{:08X}.history", id.timeline);
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

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_pg::control::synthetic;
    use tidemark_pg::{SegmentSize, SystemId};

    fn data_directory(version: &str, control: Option<Vec<u8>>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), version).unwrap();
        if let Some(control) = control {
            std::fs::create_dir(dir.path().join("global")).unwrap();
            std::fs::write(dir.path().join(CONTROL_FILE_PATH), control).unwrap();
        }
        dir
    }

    #[tokio::test]
    async fn the_identity_comes_from_pg_control_and_pg_version_must_agree() {
        let size = SegmentSize::new(4 << 20).unwrap();
        let dir = data_directory("16\n", Some(synthetic(16, 42, 202_307_071, size)));
        let facts = read_data_directory(dir.path()).await.unwrap();
        let record = facts.cluster_record("test");
        assert_eq!(
            (record.system_id, record.pg_major, record.wal_segment_size),
            (SystemId(42), 16, 4 << 20)
        );
        assert_eq!(record.wal_page_size, 8192);

        // PostgreSQL 17 does not write the 13-16 layout.
        let dir = data_directory("17\n", Some(synthetic(16, 42, 1, size)));
        let err = read_data_directory(dir.path()).await.unwrap_err();
        assert_eq!(err.code(), crate::exit::FAILED, "{err}");
        assert!(err.to_string().contains("says PostgreSQL 17"), "{err}");

        // Damaged: exit 1, after reading it again a few times.
        let mut damaged = synthetic(15, 42, 1, size);
        damaged[50] ^= 1;
        let dir = data_directory("15\n", Some(damaged));
        let err = read_data_directory(dir.path()).await.unwrap_err();
        assert_eq!(err.code(), crate::exit::FAILED, "{err}");
        assert!(err.to_string().contains("damaged"), "{err}");

        // Not a data directory, or another version's: configuration errors (exit 2).
        let dir = data_directory("15\n", None);
        let err = read_data_directory(dir.path()).await.unwrap_err();
        assert_eq!(err.code(), crate::exit::USAGE, "{err}");
        assert!(
            err.to_string().contains("not a PostgreSQL data directory"),
            "{err}"
        );
        let empty = tempfile::tempdir().unwrap();
        let err = read_data_directory(empty.path()).await.unwrap_err();
        assert!(err.to_string().contains("no PG_VERSION"), "{err}");
        let mut old = synthetic(15, 42, 1, size);
        old[8..12].copy_from_slice(&1201u32.to_le_bytes());
        let dir = data_directory("12\n", Some(old));
        let err = read_data_directory(dir.path()).await.unwrap_err();
        assert_eq!(err.code(), crate::exit::USAGE, "{err}");
        assert!(err.to_string().contains("1201"), "{err}");
    }

    fn report(replication: Option<ReplicationCheck>) -> InitReport {
        InitReport {
            stanza: "main".into(),
            repo: "file:///r".into(),
            system_identifier: "7300000000000000001".into(),
            pg_version: 16,
            wal_segment_size: 16 << 20,
            created: true,
            warnings: vec!["archive_mode is off: set archive_mode = on (needs a restart)".into()],
            replication,
            identity_from: "server".into(),
            catalog_version: None,
        }
    }

    #[test]
    fn the_report_renders_as_init_always_printed_it() {
        use crate::cmd::report::{Format, Report};
        let ok = ReplicationCheck {
            ok: true,
            system_identifier: Some("7300000000000000001".into()),
            timeline: Some(2),
            xlogpos: Some("0/3000060".into()),
            error: None,
        };
        assert_eq!(
            report(Some(ok)).render(Format::Text),
            "stanza main: cluster 7300000000000000001 (PostgreSQL 16, 16 MiB WAL segments) recorded in file:///r\n\
             replication: ok (system identifier 7300000000000000001, timeline 2, at 0/3000060)\n\
             warning: archive_mode is off: set archive_mode = on (needs a restart)\n"
        );
        let failed = ReplicationCheck {
            ok: false,
            system_identifier: None,
            timeline: None,
            xlogpos: None,
            error: Some("no pg_hba.conf line".into()),
        };
        let mut r = report(Some(failed));
        r.created = false;
        r.warnings.clear();
        assert_eq!(
            r.text(),
            "stanza main: cluster 7300000000000000001 (PostgreSQL 16, 16 MiB WAL segments) already recorded in file:///r\n\
             replication: no pg_hba.conf line\n"
        );

        let mut offline = report(None);
        offline.identity_from = "/data/global/pg_control".into();
        offline.catalog_version = Some(202_307_071);
        offline.warnings.clear();
        assert_eq!(
            offline.text(),
            "stanza main: cluster 7300000000000000001 (PostgreSQL 16, 16 MiB WAL segments) recorded in file:///r\n\
             identity read from /data/global/pg_control; no server contacted\n"
        );
        // JSON: fields in declaration order, absent options left out, a final newline.
        assert_eq!(
            offline.render(Format::Json),
            "{\n  \"stanza\": \"main\",\n  \"repo\": \"file:///r\",\n  \"system_identifier\": \"7300000000000000001\",\n  \
             \"pg_version\": 16,\n  \"wal_segment_size\": 16777216,\n  \"created\": true,\n  \"warnings\": [],\n  \
             \"identity_from\": \"/data/global/pg_control\",\n  \"catalog_version\": 202307071\n}\n"
        );
        assert_eq!(offline.code(), crate::exit::OK);
    }
}
