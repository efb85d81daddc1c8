//! The agent's job history as the repository keeps it: one record per finished run of a
//! scheduled job (backup, verify, drill, expire), written once and never changed.
//!
//! ```text
//! stanzas/<stanza>/jobs/<kind>/<YYYYMMDDTHHMMSS.mmmZ>-<id>.json     one run of a job
//! ```
//!
//! The name starts with the run's start time in UTC, so that a listing sorts each kind's
//! runs oldest first and the newest is the last name; the id (hex: the agent's process id
//! and a counter) keeps two runs started in the same millisecond apart. Records are
//! written create-only, in the usual envelope ([`crate::catalog::encode_record`]). They
//! are a summary for people and for an agent whose local state was lost: what each run
//! did to the repository is in the repository already (a backup's record, a verify
//! record, a drill record); nothing here is needed to restore anything.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::Stanza;
use crate::{Error, Key, Repo, Result};

/// One finished run of a scheduled job (`docs/repository-format.md`, "Job history").
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobRecord {
    /// `backup`, `verify`, `drill` or `expire`.
    pub kind: String,
    /// When the job's process was started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// `succeeded`, `failed` or `cancelled` (runs skipped for the job lock are not
    /// recorded here).
    pub outcome: String,
    /// For a failure, its kind (`failed`, `usage`, `integrity`, `killed`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The process's exit code (`None`: killed by a signal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The last lines it wrote on stderr (its one-line error, when it failed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr_tail: String,
    /// The host the agent ran on.
    pub host: String,
    /// The tidemark version of the agent.
    pub tidemark_version: String,
}

/// The prefix of a stanza's job records of one kind.
pub fn jobs_prefix(stanza: &Stanza, kind: &str) -> String {
    format!("stanzas/{stanza}/jobs/{kind}/")
}

/// The key of a run of `kind` started at `started_at`, with id `id` (`[0-9a-f]`, 1 to 32).
pub fn job_key(stanza: &Stanza, kind: &str, started_at: DateTime<Utc>, id: &str) -> Result<Key> {
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Catalog {
            what: format!("job record id {id:?}"),
            detail: "not 1 to 32 hexadecimal digits".into(),
        });
    }
    Key::new(format!(
        "{}{}-{id}.json",
        jobs_prefix(stanza, kind),
        started_at.format("%Y%m%dT%H%M%S%.3fZ")
    ))
}

impl Repo {
    /// Records a finished run (create-only). Returns its key, or `AlreadyExists` when the
    /// id was taken.
    pub async fn put_job(&self, stanza: &Stanza, id: &str, record: &JobRecord) -> Result<Key> {
        let key = job_key(stanza, &record.kind, record.started_at, id)?;
        if !self.put_record(&key, record).await? {
            return Err(Error::AlreadyExists { key });
        }
        Ok(key)
    }

    /// The newest readable record of a kind of job (damaged ones are passed over).
    pub async fn last_job(&self, stanza: &Stanza, kind: &str) -> Result<Option<JobRecord>> {
        let mut listed = self.backend().list(&jobs_prefix(stanza, kind)).await?;
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        for meta in listed.iter().rev() {
            match self.get_record::<JobRecord>(&meta.key).await {
                Ok(record) => return Ok(Some(record)),
                Err(e) if e.is_not_found() => continue,
                Err(e @ (Error::Corrupt { .. } | Error::Catalog { .. })) => {
                    tracing::warn!("job record {} cannot be read: {e}", meta.key);
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use std::sync::Arc;

    fn record(kind: &str, at: &str, outcome: &str) -> JobRecord {
        JobRecord {
            kind: kind.into(),
            started_at: at.parse().unwrap(),
            finished_at: at.parse().unwrap(),
            outcome: outcome.into(),
            failure: None,
            exit_code: Some(0),
            stderr_tail: String::new(),
            host: "db1".into(),
            tidemark_version: "0.1.0".into(),
        }
    }

    #[tokio::test]
    async fn runs_are_recorded_once_and_the_newest_of_a_kind_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repo::new(
            Arc::new(LocalBackend::new(dir.path()).unwrap()),
            crate::Compression::Lz4,
        );
        let stanza = Stanza::new("main").unwrap();
        assert_eq!(repo.last_job(&stanza, "backup").await.unwrap(), None);
        let old = record("backup", "2026-12-01T02:00:00.5Z", "succeeded");
        let new = record("backup", "2026-12-02T02:00:00Z", "failed");
        let other = record("verify", "2026-12-03T02:00:00Z", "succeeded");
        let key = repo.put_job(&stanza, "1a", &new).await.unwrap();
        assert_eq!(
            key.as_str(),
            "stanzas/main/jobs/backup/20261202T020000.000Z-1a.json"
        );
        repo.put_job(&stanza, "1a", &old).await.unwrap();
        repo.put_job(&stanza, "1a", &other).await.unwrap();
        assert!(matches!(
            repo.put_job(&stanza, "1a", &new).await,
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(repo.last_job(&stanza, "backup").await.unwrap(), Some(new));
        assert_eq!(repo.last_job(&stanza, "verify").await.unwrap(), Some(other));
        assert!(job_key(&stanza, "backup", Utc::now(), "xyz").is_err());
    }
}
