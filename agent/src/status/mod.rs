//! How far behind the repository is, measured: what `tidemark status` prints, what the
//! agent's Prometheus endpoint exports, and what its RPO watch acts on (issue 16, items 3
//! and 4).
//!
//! - [`collect`] reads the stanza's catalog once (the same reads as `tidemark info`,
//!   through [`crate::cmd::info::StanzaCatalog`]), asks PostgreSQL where its WAL is
//!   ([`probe`]), and measures the archive with the planner's own walk
//!   ([`tidemark_recovery::rpo`]): the result is [`Facts`];
//! - [`assess`] turns facts, thresholds and `now` into the [`StatusReport`] (pure);
//! - [`text`] renders it for a person; [`metrics`] in the Prometheus text format (pure);
//! - [`cache`] keeps the latest facts in the agent, refreshed every few seconds, so that
//!   a scrape never scans the repository; [`http`] serves `GET /metrics`; [`watch`] is the
//!   RPO watch (its decisions pure, its actions a log line and `pg_switch_wal()`).

use std::time::Duration;

use serde::Serializer;
use tidemark_pg::Lsn;
use tidemark_store::repo::IndexedWal;

use crate::cli::config::Settings;
use crate::cmd::info::{segments_not_indexed, summarize, StanzaCatalog};
use crate::exit::Failure;

pub mod assess;
pub mod cache;
pub mod http;
pub mod metrics;
pub mod probe;
pub mod text;
pub mod watch;

pub use assess::{assess, Facts, StatusReport, Thresholds};

/// Serializes an LSN in PostgreSQL's text form.
pub(crate) fn lsn_text<S: Serializer>(lsn: &Lsn, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(lsn)
}

/// The recovery window the retention policy asks for (`retention_window`, which `expire`
/// keeps restorable); `None` when no window is configured, and status then reports only
/// the window the repository guarantees.
pub fn configured_retention_window(settings: &Settings) -> Option<Duration> {
    settings.retention.window.and_then(|w| w.to_std().ok())
}

/// The thresholds in `settings`.
pub fn thresholds(settings: &Settings) -> Thresholds {
    Thresholds {
        rpo_target: settings.rpo_target,
        backup_max_age: settings.backup_max_age,
        drill_max_age: settings.drill_max_age,
        retention_window: configured_retention_window(settings),
    }
}

/// Reads the repository and asks the server (see the module doc). Fails only when the
/// repository cannot be read; an unreachable server is a fact.
pub async fn collect(settings: &Settings) -> Result<Facts, Failure> {
    Ok(collect_reusing(settings, Vec::new()).await?.0)
}

/// [`collect`], reusing the WAL index entries an earlier collection read (`previous`),
/// and returning this one's for the next: the agent's refresh reads only what is new.
pub async fn collect_reusing(
    settings: &Settings,
    previous: Vec<IndexedWal>,
) -> Result<(Facts, Vec<IndexedWal>), Failure> {
    let stanza = &settings.stanza;
    // The server first: its timeline decides which line of the archive is measured.
    let server = probe::probe(&settings.pg).await;
    let catalog = StanzaCatalog::read_reusing(settings, previous).await?;
    let collected_at = tidemark_store::repo::now();
    let server_timeline = match &server {
        probe::ServerProbe::Reachable(w)
            if w.system_identifier == catalog.cluster.system_id.to_string() =>
        {
            Some(w.timeline)
        }
        _ => None,
    };
    let (recoverable, catalog_warnings, conflicts) = match catalog.snapshot(stanza).await? {
        Ok(loaded) => {
            let recoverable =
                tidemark_recovery::rpo::recoverable(&loaded.snapshot, server_timeline);
            // Damaged backup records and conflicts are counted on their own.
            let warnings = loaded
                .warnings
                .into_iter()
                .filter(|w| {
                    !loaded
                        .damaged_backups
                        .iter()
                        .any(|id| w.starts_with(&format!("backup {id} ")))
                        && !loaded
                            .conflicts
                            .iter()
                            .any(|name| w.starts_with(name.as_str()))
                })
                .collect();
            (Some(recoverable), warnings, loaded.conflicts)
        }
        Err(warning) => (None, vec![warning], Vec::new()),
    };
    let wal = summarize(&catalog.entries(), catalog.segment_size());
    let newest_backup = catalog.listing.newest().map(|b| assess::BackupFacts {
        id: b.id.clone(),
        label: b.label.clone(),
        start_time: b.start_time,
        stop_time: b.stop_time,
        size: b.size,
        added_bytes: b.stored_added,
    });
    let drills = if catalog.format.is_some() {
        catalog.repo.recent_drills(stanza).await?
    } else {
        Default::default()
    };
    let spool = match crate::cmd::spool::open_spool(settings) {
        Ok(spool) => spool.backlog().await.map_err(|e| e.to_string()),
        Err(e) => Err(e.one_line()),
    };
    let facts = Facts {
        repo: settings.repo.to_string(),
        stanza: stanza.to_string(),
        collected_at,
        system_identifier: catalog.cluster.system_id.to_string(),
        recoverable,
        catalog_warnings,
        conflicts,
        segments_not_indexed: segments_not_indexed(&catalog.wal),
        last_archived_at: wal.last_archived_at,
        backups: catalog.listing.records.len(),
        damaged_backups: catalog.listing.damaged.len(),
        newest_backup,
        last_verify: crate::cmd::info::last_verify(&catalog.repo, stanza).await?,
        drills,
        spool,
        server,
    };
    Ok((facts, catalog.wal))
}
