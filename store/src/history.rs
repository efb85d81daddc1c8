//! Keeping a stanza's run history bounded.
//!
//! Job records (`jobs/<kind>/`), drill records (`drills/`) and verify records (`verify/`)
//! are written once per run and never changed. An agent that runs for years would
//! otherwise leave thousands of them, and every look-up of the newest one lists them all.
//! So after a run writes its record, the oldest records of that history beyond
//! [`HISTORY_KEPT`] are removed. A record some reader still needs is spared by name: the
//! newest passing drill (`info` and `status` measure its age, however many failed after
//! it). The newest verify record, whose proof lists the next verify builds on, is always
//! among the newest kept.
//!
//! Removing history is never needed to restore anything, so a failure here is the
//! caller's to log, not to fail the run for.

use crate::catalog::Stanza;
use crate::drill::drill_key;
use crate::jobs::jobs_prefix;
use crate::{Key, Repo, Result};

/// Records of one history kept: the newest this many (a backup every 6 hours: 25 days of
/// job history; a drill a day: over three months).
pub const HISTORY_KEPT: usize = 100;

/// Which of `keys` (oldest first) go so that only the newest `keep` stay, sparing
/// `spared` wherever it is.
pub fn beyond_newest(keys: &[Key], keep: usize, spared: &[Key]) -> Vec<Key> {
    let removable = keys.len().saturating_sub(keep);
    keys[..removable]
        .iter()
        .filter(|k| !spared.contains(k))
        .cloned()
        .collect()
}

impl Repo {
    /// Removes the job records of `kind` beyond the newest [`HISTORY_KEPT`]; returns how
    /// many went.
    pub async fn prune_jobs(&self, stanza: &Stanza, kind: &str) -> Result<usize> {
        let mut keys: Vec<Key> = self
            .backend()
            .list(&jobs_prefix(stanza, kind))
            .await?
            .into_iter()
            .map(|m| m.key)
            .collect();
        // The name starts with the start time: key order is time order.
        keys.sort();
        self.remove_history(beyond_newest(&keys, HISTORY_KEPT, &[]))
            .await
    }

    /// Removes the drill records beyond the newest [`HISTORY_KEPT`], sparing the newest
    /// passing one; returns how many went.
    pub async fn prune_drills(&self, stanza: &Stanza) -> Result<usize> {
        let mut keys: Vec<Key> = self
            .backend()
            .list(&crate::drill::drills_prefix(stanza))
            .await?
            .into_iter()
            .map(|m| m.key)
            .collect();
        if keys.len() <= HISTORY_KEPT {
            return Ok(0);
        }
        keys.sort();
        let recent = self.recent_drills(stanza).await?;
        let spared: Vec<Key> = recent
            .last_passed
            .iter()
            .filter_map(|d| drill_key(stanza, d.started_at, &d.id).ok())
            .collect();
        self.remove_history(beyond_newest(&keys, HISTORY_KEPT, &spared))
            .await
    }

    /// Removes the verify records beyond the newest [`HISTORY_KEPT`]; returns how many
    /// went. Their proof lists are blobs: garbage collection takes those no kept record
    /// needs.
    pub async fn prune_verifies(&self, stanza: &Stanza) -> Result<usize> {
        let keys = self.verify_keys(stanza).await?;
        self.remove_history(beyond_newest(&keys, HISTORY_KEPT, &[]))
            .await
    }

    async fn remove_history(&self, doomed: Vec<Key>) -> Result<usize> {
        if !doomed.is_empty() {
            self.backend().delete_many(&doomed).await?;
        }
        Ok(doomed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::drill::{DrillRecord, ReachedPoint};
    use crate::jobs::JobRecord;
    use chrono::{DateTime, Duration, Utc};
    use std::sync::Arc;

    fn repo(dir: &std::path::Path) -> Repo {
        Repo::new(
            Arc::new(LocalBackend::new(dir).unwrap()),
            crate::Compression::Lz4,
        )
    }

    fn job(kind: &str, at: DateTime<Utc>) -> JobRecord {
        JobRecord {
            kind: kind.into(),
            started_at: at,
            finished_at: at,
            outcome: "succeeded".into(),
            failure: None,
            exit_code: Some(0),
            stderr_tail: String::new(),
            host: "db1".into(),
            tidemark_version: "0.1.0".into(),
        }
    }

    fn drill(id: &str, at: DateTime<Utc>, passed: bool) -> DrillRecord {
        DrillRecord {
            id: id.into(),
            started_at: at,
            finished_at: at,
            passed,
            failure: (!passed).then(|| "statement 1 returned f".to_string()),
            backup: "20261121T100000Z".into(),
            target: "latest".into(),
            expected_stop: "at the end of archived WAL".into(),
            expected_lsn: None,
            expected_time: None,
            reached: Some(ReachedPoint {
                last_commit_time: None,
                replay_lsn: "0/3000060".into(),
            }),
            phases: vec![],
            rto_seconds: None,
            checks: vec![],
            tidemark_version: "0.1.0".into(),
            pg_version: Some("17".into()),
        }
    }

    #[test]
    fn only_what_is_beyond_the_newest_goes_and_the_spared_stays() {
        let keys: Vec<Key> = (0..5)
            .map(|i| Key::new(format!("h/{i}")).unwrap())
            .collect();
        assert_eq!(beyond_newest(&keys, 3, &[]), keys[..2].to_vec());
        assert_eq!(
            beyond_newest(&keys, 3, &[keys[0].clone()]),
            vec![keys[1].clone()]
        );
        assert!(beyond_newest(&keys, 5, &[]).is_empty());
        assert!(beyond_newest(&keys, 9, &[]).is_empty());
    }

    #[tokio::test]
    async fn job_history_keeps_the_newest_of_each_kind() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let stanza = Stanza::new("main").unwrap();
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let extra = 7;
        for i in 0..(HISTORY_KEPT + extra) {
            let at = t0 + Duration::hours(i as i64);
            repo.put_job(&stanza, "1", &job("backup", at))
                .await
                .unwrap();
        }
        repo.put_job(&stanza, "1", &job("verify", t0))
            .await
            .unwrap();
        assert_eq!(repo.prune_jobs(&stanza, "backup").await.unwrap(), extra);
        assert_eq!(repo.prune_jobs(&stanza, "backup").await.unwrap(), 0);
        assert_eq!(repo.prune_jobs(&stanza, "verify").await.unwrap(), 0);
        let left = repo
            .backend()
            .list(&jobs_prefix(&stanza, "backup"))
            .await
            .unwrap();
        assert_eq!(left.len(), HISTORY_KEPT);
        // The oldest went; the newest is still the newest.
        let newest = t0 + Duration::hours((HISTORY_KEPT + extra - 1) as i64);
        let last = repo.last_job(&stanza, "backup").await.unwrap().unwrap();
        assert_eq!(last.started_at, newest);
        let oldest_left = left.iter().map(|m| m.key.clone()).min().unwrap();
        assert!(oldest_left.as_str().contains(
            &(t0 + Duration::hours(extra as i64))
                .format("%Y%m%dT%H%M%S")
                .to_string()
        ));
    }

    #[tokio::test]
    async fn the_newest_passing_drill_outlives_a_run_of_failures() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let stanza = Stanza::new("main").unwrap();
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        repo.put_drill(&stanza, &drill("a0", t0, true))
            .await
            .unwrap();
        repo.put_drill(&stanza, &drill("a1", t0 + Duration::days(1), true))
            .await
            .unwrap();
        for i in 0..HISTORY_KEPT {
            let at = t0 + Duration::days(2 + i as i64);
            repo.put_drill(&stanza, &drill(&format!("b{i:x}"), at, false))
                .await
                .unwrap();
        }
        // Two beyond the newest: the older passing one goes, the newest passing stays.
        assert_eq!(repo.prune_drills(&stanza).await.unwrap(), 1);
        let recent = repo.recent_drills(&stanza).await.unwrap();
        assert_eq!(recent.count, HISTORY_KEPT + 1);
        assert_eq!(recent.last_passed.unwrap().id, "a1");
        assert!(!recent.last.unwrap().passed);
    }
}
