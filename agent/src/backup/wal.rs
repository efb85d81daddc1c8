//! Waiting for a backup's WAL: a base backup is only restorable with the WAL from its
//! start to its stop position, so its record is written only once every one of those
//! segments is in the repository.
//!
//! PostgreSQL switches to a new segment when a backup stops, so the last one is archived
//! promptly when archiving works. When it does not, the wait ends with an error that says
//! which segment is missing and what `pg_stat_archiver` reports, rather than a backup
//! that cannot be restored.

use std::time::{Duration, Instant};

use tidemark_pg::{Lsn, SegmentSize, TimelineId, WalFileName, WalSegmentName};
use tidemark_store::catalog::Stanza;
use tidemark_store::Repo;

use super::BackupError;

/// How soon the repository is looked at again: at first often (the last segment is
/// usually archived within milliseconds of the backup's end), then less and less.
const POLL_FIRST: Duration = Duration::from_millis(20);
/// The longest pause between two looks.
const POLL_MAX: Duration = Duration::from_secs(1);
/// How often `pg_stat_archiver` is consulted (and the wait reported) meanwhile.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The segments holding WAL from `start` up to `stop` (exclusive: `stop` is where the
/// backup's last record ends), on `timeline`.
pub fn needed_segments(
    timeline: TimelineId,
    start: Lsn,
    stop: Lsn,
    size: SegmentSize,
) -> Vec<WalSegmentName> {
    let first = start.0 / size.bytes();
    let last = stop.0.saturating_sub(1).max(start.0) / size.bytes();
    (first..=last)
        .map(|segno| WalSegmentName::from_segment_number(timeline, segno, size))
        .collect()
}

/// What the server says about its archiver, for the error when WAL does not arrive.
#[derive(Debug, Clone, Default)]
pub struct ArchiverStatus {
    /// `pg_stat_archiver.last_archived_wal`.
    pub last_archived: Option<String>,
    /// `pg_stat_archiver.last_failed_wal`.
    pub last_failed: Option<String>,
    /// `pg_stat_archiver.failed_count`.
    pub failed_count: i64,
}

impl ArchiverStatus {
    /// Reads `pg_stat_archiver`.
    pub async fn read(client: &tokio_postgres::Client) -> Option<ArchiverStatus> {
        let row = client
            .query_one(
                "SELECT last_archived_wal, last_failed_wal, failed_count FROM pg_stat_archiver",
                &[],
            )
            .await
            .ok()?;
        Some(ArchiverStatus {
            last_archived: row.get(0),
            last_failed: row.get(1),
            failed_count: row.get(2),
        })
    }

    /// `pg_stat_archiver` in words.
    pub fn describe(&self) -> String {
        let archived = self.last_archived.as_deref().unwrap_or("nothing yet");
        match &self.last_failed {
            Some(failed) => format!(
                "the server's archiver last archived {archived} and has failed {} times, last on {failed} (see the server log)",
                self.failed_count
            ),
            None => format!("the server's archiver last archived {archived} and reports no failures"),
        }
    }
}

/// Waits until every segment in `needed` is in the repository, or `timeout` passes.
/// `client` (an SQL connection to the server) is used only to explain a long wait.
pub async fn wait_for_segments(
    repo: &Repo,
    stanza: &Stanza,
    needed: &[WalSegmentName],
    timeout: Duration,
    client: &tokio_postgres::Client,
    quiet: bool,
) -> Result<Duration, BackupError> {
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut next = 0;
    let mut pause = POLL_FIRST;
    loop {
        // Segments arrive in order; check from the first one not seen yet.
        while let Some(segment) = needed.get(next) {
            let name = WalFileName::Segment(*segment);
            let found = repo
                .wal_digests(stanza, &name)
                .await
                .map_err(BackupError::WalIndex)?;
            if found.is_empty() {
                break;
            }
            next += 1;
        }
        let Some(missing) = needed.get(next) else {
            return Ok(started.elapsed());
        };
        if started.elapsed() >= timeout {
            return Err(BackupError::WalNotArchived {
                missing: missing.to_string(),
                first: needed[0].to_string(),
                last: needed[needed.len() - 1].to_string(),
                seconds: timeout.as_secs(),
                archiver: ArchiverStatus::read(client).await.map(|s| s.describe()),
            });
        }
        if !quiet && last_report.elapsed() >= REPORT_EVERY {
            last_report = Instant::now();
            let archiver = ArchiverStatus::read(client)
                .await
                .map(|s| format!(" ({})", s.describe()))
                .unwrap_or_default();
            eprintln!(
                "tidemark: backup: waiting for WAL segment {missing} to be archived, {} s so far{archiver}",
                started.elapsed().as_secs()
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(POLL_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_segments_from_start_to_stop() {
        let size = SegmentSize::new(16 << 20).unwrap();
        let tli = TimelineId(1);
        let names = |start: u64, stop: u64| -> Vec<String> {
            needed_segments(tli, Lsn(start), Lsn(stop), size)
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        assert_eq!(
            names(0x2000028, 0x2000138),
            vec!["000000010000000000000002"]
        );
        assert_eq!(
            names(0x2000028, 0x4000100),
            vec![
                "000000010000000000000002",
                "000000010000000000000003",
                "000000010000000000000004"
            ]
        );
        // A stop exactly at a segment's start ends in the segment before it.
        assert_eq!(
            names(0x2000028, 0x3000000),
            vec!["000000010000000000000002"]
        );
        // Across the 4 GiB "log" boundary.
        assert_eq!(
            names(0xFF000028, 0x1_00000100),
            vec!["0000000100000000000000FF", "000000010000000100000000"]
        );
    }
}
