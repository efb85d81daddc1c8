//! Restore drills as the repository records them: one [`DrillRecord`] per drill, under
//! the stanza, written once and never changed.
//!
//! ```text
//! stanzas/<stanza>/drills/<YYYYMMDDTHHMMSSZ>-<id>.json     one drill's result
//! ```
//!
//! The key starts with the drill's start time in UTC, so that a listing sorts the drills
//! oldest first and the newest is the last name; the id (random hex) keeps two drills
//! started in the same second apart. Records are written create-only, in the usual
//! envelope ([`crate::catalog::encode_record`]): a damaged one is refused when read.
//! What a drill checks, and why, is the agent's and `tidemark_recovery::drill`'s
//! business: this module only keeps the result.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::Stanza;
use crate::{Error, Key, Repo, Result};

/// One drill's result, as `tidemark drill` records it (`docs/repository-format.md`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DrillRecord {
    /// Its id (random hex; also in the key).
    pub id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// True when every check passed.
    pub passed: bool,
    /// Why it failed, in one line (`None` when it passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The backup restored.
    pub backup: String,
    /// The target as asked (`latest`, `time 2026-11-21T10:32:07Z`, …).
    pub target: String,
    /// Where the plan said replay stops, in words.
    pub expected_stop: String,
    /// The plan's stop record's start (for `latest`: the end of the archived WAL), when
    /// it names one (`X/X`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_lsn: Option<String>,
    /// The plan's stop record's time, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_time: Option<DateTime<Utc>>,
    /// The recovery point the server reached (`null` when it never got there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reached: Option<ReachedPoint>,
    /// The phases of the recovery, in order, with their seconds.
    pub phases: Vec<PhaseRecord>,
    /// The recovery time: the phases' seconds added up (`null` when it did not get as far
    /// as a server accepting writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// Every check, in the order run.
    pub checks: Vec<CheckRecord>,
    /// The tidemark version that ran it.
    pub tidemark_version: String,
    /// The PostgreSQL version that ran the scratch cluster (`server_version`), when it
    /// started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_version: Option<String>,
}

/// Where the scratch server stopped replaying, as it said.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReachedPoint {
    /// `pg_last_xact_replay_timestamp()`: the time of the last commit or abort replayed
    /// (`null` when none was replayed).
    pub last_commit_time: Option<DateTime<Utc>>,
    /// `pg_last_wal_replay_lsn()`: the end of the last record replayed (`X/X`).
    pub replay_lsn: String,
}

/// One phase of a drill's recovery.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PhaseRecord {
    /// `plan`, `files restored`, `WAL replayed to the target`, `accepting writes`.
    pub name: String,
    /// How long it took.
    pub seconds: f64,
}

/// One check of a drill.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckRecord {
    /// What was checked (`recovery point`, `tables of database app`, `checks.sql
    /// statement 3`, `amcheck in app`).
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What it found, in one line.
    pub detail: String,
}

/// The prefix of a stanza's drill records.
pub fn drills_prefix(stanza: &Stanza) -> String {
    format!("stanzas/{stanza}/drills/")
}

/// The key of a drill started at `started_at` with id `id` (`[0-9a-f]`, 1 to 32).
pub fn drill_key(stanza: &Stanza, started_at: DateTime<Utc>, id: &str) -> Result<Key> {
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::Catalog {
            what: format!("drill id {id:?}"),
            detail: "not 1 to 32 hexadecimal digits".into(),
        });
    }
    Key::new(format!(
        "{}{}-{id}.json",
        drills_prefix(stanza),
        started_at.format("%Y%m%dT%H%M%SZ")
    ))
}

/// The most recent drills, as [`Repo::recent_drills`] finds them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecentDrills {
    /// The newest drill, passing or not.
    pub last: Option<DrillRecord>,
    /// The newest passing drill.
    pub last_passed: Option<DrillRecord>,
    /// How many drills the stanza has on record.
    pub count: usize,
    /// Records that could not be read (key and why), among those read.
    pub damaged: Vec<String>,
}

impl Repo {
    /// Records `record` under its key (create-only: a drill is recorded once). Returns the
    /// key.
    pub async fn put_drill(&self, stanza: &Stanza, record: &DrillRecord) -> Result<Key> {
        let key = drill_key(stanza, record.started_at, &record.id)?;
        if !self.put_record(&key, record).await? {
            return Err(Error::AlreadyExists { key });
        }
        Ok(key)
    }

    /// The newest drill and the newest passing one: reads the records newest first until
    /// it has found a passing one (usually one or two reads, whatever the history).
    pub async fn recent_drills(&self, stanza: &Stanza) -> Result<RecentDrills> {
        let mut listed = self.backend().list(&drills_prefix(stanza)).await?;
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        let mut out = RecentDrills {
            count: listed.len(),
            ..RecentDrills::default()
        };
        for meta in listed.iter().rev() {
            let record: DrillRecord = match self.get_record(&meta.key).await {
                Ok(record) => record,
                // Removed meanwhile (a person cleaning up): not a drill any more.
                Err(e) if e.is_not_found() => continue,
                Err(e @ (Error::Corrupt { .. } | Error::Catalog { .. })) => {
                    out.damaged.push(format!("{}: {e}", meta.key));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if out.last.is_none() {
                out.last = Some(record.clone());
            }
            if record.passed {
                out.last_passed = Some(record);
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use std::sync::Arc;

    fn record(id: &str, at: &str, passed: bool) -> DrillRecord {
        DrillRecord {
            id: id.into(),
            started_at: at.parse().unwrap(),
            finished_at: at.parse().unwrap(),
            passed,
            failure: (!passed).then(|| "statement 1 returned f".to_string()),
            backup: "20261121T100000Z".into(),
            target: "latest".into(),
            expected_stop: "at the end of archived WAL".into(),
            expected_lsn: Some("0/3000060".into()),
            expected_time: None,
            reached: Some(ReachedPoint {
                last_commit_time: Some("2026-11-21T10:32:07.5Z".parse().unwrap()),
                replay_lsn: "0/3000060".into(),
            }),
            phases: vec![PhaseRecord {
                name: "files restored".into(),
                seconds: 1.5,
            }],
            rto_seconds: Some(4.25),
            checks: vec![CheckRecord {
                name: "recovery point".into(),
                passed: true,
                detail: "as planned".into(),
            }],
            tidemark_version: "0.1.0".into(),
            pg_version: Some("15.8".into()),
        }
    }

    #[test]
    fn keys_sort_by_start_time_and_refuse_odd_ids() {
        let stanza = Stanza::new("main").unwrap();
        let at: DateTime<Utc> = "2026-12-06T10:15:00Z".parse().unwrap();
        assert_eq!(
            drill_key(&stanza, at, "3fa9c2d1").unwrap().as_str(),
            "stanzas/main/drills/20261206T101500Z-3fa9c2d1.json"
        );
        for bad in ["", "../x", "3FA9/", "g1"] {
            assert!(drill_key(&stanza, at, bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_newest_and_the_newest_passing_drill_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(LocalBackend::new(dir.path()).unwrap());
        let repo = Repo::new(backend, crate::Compression::Lz4);
        let stanza = Stanza::new("main").unwrap();
        assert_eq!(
            repo.recent_drills(&stanza).await.unwrap(),
            RecentDrills::default()
        );
        let old_pass = record("01", "2026-12-01T10:00:00Z", true);
        let new_pass = record("02", "2026-12-03T10:00:00Z", true);
        let failed = record("03", "2026-12-05T10:00:00Z", false);
        for r in [&failed, &old_pass, &new_pass] {
            repo.put_drill(&stanza, r).await.unwrap();
        }
        // Recorded once: a second write of the same drill is refused, the first kept.
        assert!(matches!(
            repo.put_drill(&stanza, &failed).await,
            Err(Error::AlreadyExists { .. })
        ));
        let recent = repo.recent_drills(&stanza).await.unwrap();
        assert_eq!(recent.count, 3);
        assert_eq!(recent.last.as_ref(), Some(&failed));
        assert_eq!(recent.last_passed.as_ref(), Some(&new_pass));
        assert!(recent.damaged.is_empty());
    }
}
