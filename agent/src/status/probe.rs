//! What `status` and the RPO watch ask PostgreSQL: where its WAL is
//! (`pg_current_wal_lsn()`, or the replay position on a standby), its timeline, whether it
//! is a standby, its system identifier, and what its archiver last did
//! (`pg_stat_archiver`); and the RPO watch's one write, `pg_switch_wal()`.
//!
//! A server that cannot be reached within [`PROBE_TIMEOUT`] is an answer
//! ([`ServerProbe::Unreachable`]), not a failure: status still reports what the
//! repository knows.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tidemark_pg::Lsn;
use tidemark_pgclient::settings::PgSettings;

use crate::server::{connect, ServerError};

/// How long a probe may take, connection included: a monitor must answer even when the
/// server's host is gone.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the server said, or why it could not be asked.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ServerProbe {
    /// It answered.
    Reachable(ServerWal),
    /// It could not be reached or asked (the message says why).
    Unreachable {
        /// Why.
        error: String,
    },
}

/// The server's WAL position and archiver.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerWal {
    /// `pg_is_in_recovery()`: a standby (its position is the replay position).
    pub in_recovery: bool,
    /// `pg_current_wal_lsn()` on a primary, `pg_last_wal_replay_lsn()` on a standby.
    #[serde(serialize_with = "super::lsn_text")]
    pub current_lsn: Lsn,
    /// The same position as a number of bytes.
    pub current_lsn_bytes: u64,
    /// The timeline it writes (a standby: its last checkpoint's).
    pub timeline: u32,
    /// `pg_control`'s system identifier (as a string: it does not fit a JSON double).
    pub system_identifier: String,
    /// `pg_stat_archiver`.
    pub archiver: Archiver,
}

/// `pg_stat_archiver`, as the server counts since its statistics were last reset.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Archiver {
    /// The last segment `archive_command` succeeded with.
    pub last_archived_wal: Option<String>,
    /// When.
    pub last_archived_at: Option<DateTime<Utc>>,
    /// Failed attempts.
    pub failed_count: i64,
    /// The last segment it failed with.
    pub last_failed_wal: Option<String>,
    /// When.
    pub last_failed_at: Option<DateTime<Utc>>,
}

impl Archiver {
    /// Whether the archiver's last attempt failed: archive_command is failing now.
    pub fn failing(&self) -> bool {
        match (self.last_failed_at, self.last_archived_at) {
            (Some(failed), Some(archived)) => failed > archived,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// Asks the server (see the module doc); never fails.
pub async fn probe(settings: &PgSettings) -> ServerProbe {
    match tokio::time::timeout(PROBE_TIMEOUT, read(settings)).await {
        Ok(Ok(wal)) => ServerProbe::Reachable(wal),
        Ok(Err(e)) => ServerProbe::Unreachable {
            error: crate::exit::Failure::from(e).one_line(),
        },
        Err(_) => ServerProbe::Unreachable {
            error: format!(
                "PostgreSQL did not answer within {} s",
                PROBE_TIMEOUT.as_secs()
            ),
        },
    }
}

async fn read(settings: &PgSettings) -> Result<ServerWal, ServerError> {
    let (_, client) = connect(settings).await?;
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(|e| ServerError::query("asking whether the server is a standby", &e))?
        .get(0);
    // A standby has no current WAL position of its own (pg_current_wal_lsn() fails there):
    // what it has replayed is what it holds.
    let position = if in_recovery {
        "coalesce(pg_last_wal_replay_lsn(), '0/0')::text, \
         (SELECT timeline_id FROM pg_control_checkpoint())::bigint"
    } else {
        "pg_current_wal_lsn()::text, \
         ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint"
    };
    let row = client
        .query_one(
            &format!(
                "SELECT {position}, \
                        (SELECT system_identifier::text FROM pg_control_system()), \
                        a.last_archived_wal, extract(epoch FROM a.last_archived_time)::float8, \
                        a.failed_count, \
                        a.last_failed_wal, extract(epoch FROM a.last_failed_time)::float8 \
                 FROM pg_stat_archiver a"
            ),
            &[],
        )
        .await
        .map_err(|e| ServerError::query("reading the server's WAL position", &e))?;
    let current_lsn =
        Lsn::parse(&row.get::<_, String>(0)).ok_or(ServerError::Unreadable("WAL position"))?;
    let timeline =
        u32::try_from(row.get::<_, i64>(1)).map_err(|_| ServerError::Unreadable("timeline"))?;
    let at = |epoch: Option<f64>| {
        epoch.and_then(|s| DateTime::<Utc>::from_timestamp_micros((s * 1e6).round() as i64))
    };
    Ok(ServerWal {
        in_recovery,
        current_lsn,
        current_lsn_bytes: current_lsn.0,
        timeline,
        system_identifier: row.get(2),
        archiver: Archiver {
            last_archived_wal: row.get(3),
            last_archived_at: at(row.get(4)),
            failed_count: row.get(5),
            last_failed_wal: row.get(6),
            last_failed_at: at(row.get(7)),
        },
    })
}

/// `pg_switch_wal()`: closes the current segment so that `archive_command` gets it. Needs
/// a superuser, or `GRANT EXECUTE ON FUNCTION pg_switch_wal() TO <role>`. Returns the
/// position where the switch happened.
pub async fn switch_wal(settings: &PgSettings) -> Result<Lsn, ServerError> {
    let work = async {
        let (_, client) = connect(settings).await?;
        let text: String = client
            .query_one("SELECT pg_switch_wal()::text", &[])
            .await
            .map_err(|e| ServerError::query("switching to a new WAL segment", &e))?
            .get(0);
        Lsn::parse(&text).ok_or(ServerError::Unreadable("WAL position"))
    };
    match tokio::time::timeout(PROBE_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(ServerError::Query {
            what: "switching to a new WAL segment",
            why: format!(
                "PostgreSQL did not answer within {} s",
                PROBE_TIMEOUT.as_secs()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archiver_is_failing_when_its_last_attempt_failed() {
        let t = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        let mut a = Archiver::default();
        assert!(!a.failing());
        a.last_failed_at = t("2026-12-06T10:00:00Z");
        assert!(a.failing(), "failed and never archived");
        a.last_archived_at = t("2026-12-06T10:00:01Z");
        assert!(!a.failing(), "archived since");
        a.last_failed_at = t("2026-12-06T10:00:02Z");
        assert!(a.failing());
    }
}
