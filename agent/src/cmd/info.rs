//! `tidemark info [--json]`: what the repository holds for a stanza.
//!
//! WAL is summarised per timeline as runs of consecutive segments, with the gaps between
//! them named: a gap is a stretch of time no restore can cross. Names archived with two
//! different contents are listed as conflicts. [`summarize`] is pure and unit-tested;
//! [`gather`] reads the repository.
//!
//! Backups: a record that cannot be read is listed as damaged (`damaged_backups`); for
//! every readable one, `info` reads its file list's index (small, verified) and checks
//! with a size request that each page of the list and each chunk of PostgreSQL's
//! `backup_manifest` is there ([`missing_data`]): what a restore needs before it reads
//! a single file. The data chunks themselves are not checked (a restore reads and
//! verifies every one; that is `verify`'s work, not a status page's).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tidemark_pg::{SegmentSize, WalFileName, WalSegmentName};
use tidemark_recovery::{plan, snapshot};
use tidemark_store::backup::BackupRecord;
use tidemark_store::catalog::{self, ClusterRecord, WalRecord};
use tidemark_store::drill::{DrillRecord, RecentDrills};
use tidemark_store::{Digest, Repo};

use super::open_repo;
use super::report::{json_lines, Report};
use crate::cli::config::Settings;
use crate::exit::Failure;

/// The whole report (`--json` prints it as is).
#[derive(Debug, Serialize, PartialEq)]
pub struct InfoReport {
    /// Repository URL.
    pub repo: String,
    /// Stanza.
    pub stanza: String,
    /// Repository format, `null` when nothing was ever written.
    pub format: Option<u32>,
    /// The cluster on record.
    pub cluster: Option<ClusterInfo>,
    /// The WAL archive.
    pub wal: WalSummary,
    /// Segment and `.partial` files without a WAL content summary (archived before the
    /// index existed): `tidemark reindex` builds it.
    pub segments_not_indexed: u64,
    /// Refused contents kept for forensics.
    pub quarantined: usize,
    /// Temporary files killed writers left in a local repository (the next `backup`
    /// removes them; docs/repository-format.md).
    pub stale_temp_files: u64,
    /// Base backups, oldest first.
    pub backups: Vec<BackupInfo>,
    /// Backup records that cannot be read, by id: no restore can use them.
    pub damaged_backups: Vec<DamagedBackupInfo>,
    /// What a restore can reach, per timeline (`null` when nothing was ever written).
    pub recovery: Option<RecoveryInfo>,
    /// The last `tidemark verify` run, as recorded (`null`: none yet).
    pub last_verify: Option<tidemark_store::verify::VerifyRecord>,
    /// Restore drills (`tidemark drill`): the last one, the last passing one, and the
    /// warning when that is too old (`null` when nothing was ever written).
    pub drills: Option<DrillsInfo>,
}

/// What `info` says of the stanza's restore drills.
#[derive(Debug, Serialize, PartialEq)]
pub struct DrillsInfo {
    /// How many are on record.
    pub count: usize,
    /// The newest, passing or not.
    pub last: Option<DrillRecord>,
    /// The newest passing one.
    pub last_passed: Option<DrillRecord>,
    /// Why recoverability is not proven lately (no passing drill, or it is older than
    /// `drill_max_age`).
    pub warning: Option<String>,
    /// Drill records that cannot be read.
    pub damaged: Vec<String>,
}

/// `info`'s drill summary from what the repository holds, at `now` (pure).
pub fn drills_info(
    recent: RecentDrills,
    now: DateTime<Utc>,
    max_age: std::time::Duration,
) -> DrillsInfo {
    let warning = tidemark_recovery::drill::age_warning(
        recent.last_passed.as_ref().map(|d| d.started_at),
        recent.count,
        now,
        max_age,
    );
    DrillsInfo {
        count: recent.count,
        last: recent.last,
        last_passed: recent.last_passed,
        warning,
        damaged: recent.damaged,
    }
}

/// The drill lines of `info`'s text (pure).
pub fn drill_lines(d: &DrillsInfo) -> Vec<String> {
    let when = |r: &DrillRecord| r.started_at.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    let rto = |r: &DrillRecord| match r.rto_seconds {
        Some(s) => format!("RTO {s:.1} s"),
        None => "no RTO (it did not get as far as a writable server)".into(),
    };
    let mut out = Vec::new();
    match &d.last {
        None => out.push("drill       none on record".to_string()),
        Some(last) if last.passed => out.push(format!(
            "drill       last {} PASSED, {} (backup {}, target {}; {} on record)",
            when(last),
            rto(last),
            last.backup,
            last.target,
            d.count
        )),
        Some(last) => {
            out.push(format!(
                "drill       last {} FAILED: {} (backup {}, target {}; {} on record)",
                when(last),
                last.failure.as_deref().unwrap_or("see the record"),
                last.backup,
                last.target,
                d.count
            ));
            if let Some(ok) = &d.last_passed {
                out.push(format!(
                    "            last passing {}, {} (backup {})",
                    when(ok),
                    rto(ok),
                    ok.backup
                ));
            }
        }
    }
    if let Some(w) = &d.warning {
        out.push(format!("  WARNING: {w}"));
    }
    for damaged in &d.damaged {
        out.push(format!("  DAMAGED drill record: {damaged}"));
    }
    out
}

/// A backup record that cannot be read.
#[derive(Debug, Serialize, PartialEq)]
pub struct DamagedBackupInfo {
    /// Its id (the record's name).
    pub id: String,
    /// Why it cannot be read.
    pub error: String,
}

/// One base backup as `info` lists it.
#[derive(Debug, Serialize, PartialEq)]
pub struct BackupInfo {
    /// Its id (what `restore --backup` takes).
    pub id: String,
    /// Its label.
    pub label: String,
    /// When it started.
    pub start_time: DateTime<Utc>,
    /// When the server finished sending it.
    pub stop_time: DateTime<Utc>,
    /// Where WAL replay starts.
    pub start_lsn: String,
    /// Where it becomes consistent.
    pub stop_lsn: String,
    /// Its timeline.
    pub timeline: u32,
    /// Bytes of the database.
    pub size: u64,
    /// Bytes it added to the repository.
    pub stored_added: u64,
    /// `stored_added / size`: what it cost, as a share of what it holds.
    pub added_ratio: f64,
    /// Warnings the server sent while the backup was taken (skipped files, data checksum
    /// failures); `null` for backups recorded before tidemark counted them.
    pub notices: Option<u64>,
    /// Why this backup deserves a look (e.g. much smaller than the one before).
    pub warnings: Vec<String>,
    /// What a restore of it needs and the repository lacks (its file list or a page of
    /// it, a chunk of its `backup_manifest`): empty when it is complete as far as `info`
    /// checks (see the module doc). A restore of a backup with problems fails (exit 4).
    pub problems: Vec<String>,
}

/// Lists backups, warning about one whose database size is under a tenth of the previous
/// backup's: a silently broken backup is usually a small one (pure).
pub fn summarize_backups(records: &[BackupRecord]) -> Vec<BackupInfo> {
    let mut out: Vec<BackupInfo> = Vec::with_capacity(records.len());
    for (i, b) in records.iter().enumerate() {
        let mut warnings = Vec::new();
        if let Some(prev) = i.checked_sub(1).map(|p| &records[p]) {
            if b.size.saturating_mul(10) < prev.size {
                warnings.push(format!(
                    "its database size ({}) is under 10% of the previous backup's ({}, {}): check that the right cluster was backed up",
                    bytes(b.size),
                    bytes(prev.size),
                    prev.id
                ));
            }
        }
        if b.checksum_failures_ignored {
            warnings.push(
                "the server reported data checksum failures, ignored when it was taken \
                 (--ignore-checksum-failures): it holds damaged pages"
                    .to_string(),
            );
        }
        if let Some(n) = b.notices.filter(|n| *n > 0) {
            warnings.push(format!(
                "the server sent {n} warning(s) while it was taken, logged by the backup (a file it skipped is not in the backup)"
            ));
        }
        out.push(BackupInfo {
            id: b.id.clone(),
            label: b.label.clone(),
            start_time: b.start_time,
            stop_time: b.stop_time,
            start_lsn: b.start_lsn.to_string(),
            stop_lsn: b.stop_lsn.to_string(),
            timeline: b.timeline.0,
            size: b.size,
            stored_added: b.stored_added,
            added_ratio: if b.size > 0 {
                b.stored_added as f64 / b.size as f64
            } else {
                0.0
            },
            notices: b.notices,
            warnings,
            problems: Vec::new(),
        });
    }
    out
}

/// What of `record`'s file list the repository lacks (see the module doc); `Err` only
/// when the repository cannot be read.
pub async fn missing_data(
    repo: &Repo,
    record: &BackupRecord,
) -> Result<Vec<String>, tidemark_store::Error> {
    let list_key = catalog::blob_key(&record.file_list);
    let list = match repo.backup_files(record).await {
        Ok(list) => list,
        Err(e) if e.is_not_found() => {
            return Ok(vec![format!(
                "its file list ({list_key}) is missing from the repository"
            )])
        }
        Err(e) if e.is_unreadable_record() => {
            return Ok(vec![format!("its file list cannot be read: {e}")])
        }
        Err(e) => return Err(e),
    };
    let pages = list.pages.len();
    let chunks = list.pg_manifest.chunks.len();
    let parts = list
        .pages
        .iter()
        .enumerate()
        .map(|(i, d)| (format!("page {} of {pages} of its file list", i + 1), *d))
        .chain(list.pg_manifest.chunks.iter().enumerate().map(|(i, d)| {
            (
                format!("chunk {} of {chunks} of its backup_manifest", i + 1),
                *d,
            )
        }));
    let found: Vec<(String, Digest, Option<u64>)> = futures::stream::iter(parts)
        .map(|(what, digest)| async move {
            let size = repo.blob_size(&digest).await?;
            Ok::<_, tidemark_store::Error>((what, digest, size))
        })
        .buffered(16)
        .try_collect()
        .await?;
    Ok(found
        .into_iter()
        .filter(|(_, _, size)| size.is_none())
        .map(|(what, digest, _)| {
            format!(
                "{what} ({}) is missing from the repository",
                catalog::blob_key(&digest)
            )
        })
        .collect())
}

/// The cluster identity.
#[derive(Debug, Serialize, PartialEq)]
pub struct ClusterInfo {
    /// As a string: it does not fit a JSON double.
    pub system_identifier: String,
    /// PostgreSQL major version.
    pub pg_version: u32,
    /// WAL segment size in bytes.
    pub wal_segment_size: u64,
}

/// One archived WAL file as `info` sees it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its name.
    pub name: WalFileName,
    /// Its content digest.
    pub digest: Digest,
    /// Its record.
    pub record: WalRecord,
}

/// WAL per timeline plus totals.
#[derive(Debug, Serialize, PartialEq, Default)]
pub struct WalSummary {
    /// Per timeline, ascending.
    pub timelines: Vec<TimelineSummary>,
    /// Full segments.
    pub segments: usize,
    /// `.partial` files.
    pub partial: usize,
    /// `.backup` files.
    pub backup: usize,
    /// `.history` files.
    pub history: usize,
    /// Raw bytes of everything archived.
    pub raw_bytes: u64,
    /// Bytes stored for it.
    pub stored_bytes: u64,
    /// The newest segment: highest timeline, then highest position.
    pub newest: Option<Newest>,
    /// When the latest file of any kind arrived.
    pub last_archived_at: Option<DateTime<Utc>>,
    /// Names archived with more than one content.
    pub conflicts: Vec<String>,
}

/// One timeline's segments.
#[derive(Debug, Serialize, PartialEq)]
pub struct TimelineSummary {
    /// Timeline id.
    pub timeline: u32,
    /// First segment.
    pub first: String,
    /// Last segment.
    pub last: String,
    /// Segment count.
    pub segments: u64,
    /// Runs of consecutive segments.
    pub ranges: Vec<Run>,
    /// Missing runs between them.
    pub gaps: Vec<Run>,
}

/// A run of consecutive segment names.
#[derive(Debug, Serialize, PartialEq)]
pub struct Run {
    /// First segment of the run.
    pub first: String,
    /// Last segment of the run.
    pub last: String,
    /// How many.
    pub segments: u64,
}

/// The newest segment.
#[derive(Debug, Serialize, PartialEq)]
pub struct Newest {
    /// Its name.
    pub name: String,
    /// When it was archived.
    pub archived_at: DateTime<Utc>,
}

/// Builds the WAL summary from index entries (pure).
pub fn summarize(entries: &[Entry], segment_size: Option<SegmentSize>) -> WalSummary {
    let mut s = WalSummary::default();
    let mut digests_by_name: BTreeMap<String, BTreeSet<Digest>> = BTreeMap::new();
    let mut per_timeline: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
    let mut newest: Option<(u32, u64, &Entry)> = None;
    for e in entries {
        digests_by_name
            .entry(e.name.to_string())
            .or_default()
            .insert(e.digest);
        s.raw_bytes += e.record.raw_size;
        s.stored_bytes += e.record.stored_size;
        s.last_archived_at = s.last_archived_at.max(Some(e.record.archived_at));
        match e.name {
            WalFileName::Segment(seg) => {
                s.segments += 1;
                if let Some(segno) = segment_size.and_then(|size| seg.segment_number(size).ok()) {
                    per_timeline
                        .entry(seg.timeline.0)
                        .or_default()
                        .insert(segno);
                    let key = (seg.timeline.0, segno);
                    if newest.is_none_or(|(t, n, _)| key > (t, n)) {
                        newest = Some((key.0, key.1, e));
                    }
                }
            }
            WalFileName::Partial(_) => s.partial += 1,
            WalFileName::Backup { .. } => s.backup += 1,
            WalFileName::History(_) => s.history += 1,
        }
    }
    s.conflicts = digests_by_name
        .into_iter()
        .filter(|(_, d)| d.len() > 1)
        .map(|(n, _)| n)
        .collect();
    s.newest = newest.map(|(_, _, e)| Newest {
        name: e.name.to_string(),
        archived_at: e.record.archived_at,
    });
    if let Some(size) = segment_size {
        for (tli, segnos) in per_timeline {
            let name = |n: u64| {
                WalSegmentName::from_segment_number(tidemark_pg::TimelineId(tli), n, size)
                    .to_string()
            };
            let run = |a: u64, b: u64| Run {
                first: name(a),
                last: name(b),
                segments: b - a + 1,
            };
            let mut ranges = Vec::new();
            let mut gaps = Vec::new();
            let mut iter = segnos.iter().copied();
            let first = iter.next().expect("a timeline has segments");
            let (mut start, mut prev) = (first, first);
            for n in iter {
                if n != prev + 1 {
                    ranges.push(run(start, prev));
                    gaps.push(run(prev + 1, n - 1));
                    start = n;
                }
                prev = n;
            }
            ranges.push(run(start, prev));
            s.timelines.push(TimelineSummary {
                timeline: tli,
                first: name(first),
                last: name(prev),
                segments: segnos.len() as u64,
                ranges,
                gaps,
            });
        }
    }
    s
}

/// The stanza's catalog as `info` and `status` read it, once.
pub struct StanzaCatalog {
    /// The repository.
    pub repo: Repo,
    /// Its format (`None`: nothing was ever written).
    pub format: Option<u32>,
    /// The stanza's cluster record.
    pub cluster: ClusterRecord,
    /// Every WAL index entry with its record and content summary.
    pub wal: Vec<tidemark_store::repo::IndexedWal>,
    /// The backup records (and those that cannot be read).
    pub listing: tidemark_store::repo::Backups,
}

impl StanzaCatalog {
    /// Reads it. A location without a repository, or a repository without this stanza,
    /// is refused like everywhere else: it is a wrong setting, or `init` was not run.
    pub async fn read(settings: &Settings) -> Result<StanzaCatalog, Failure> {
        Self::read_reusing(settings, Vec::new()).await
    }

    /// [`StanzaCatalog::read`], taking from `previous` (an earlier read's `wal`) the WAL
    /// index entries it already holds ([`Repo::wal_catalog_reusing`]).
    pub async fn read_reusing(
        settings: &Settings,
        previous: Vec<tidemark_store::repo::IndexedWal>,
    ) -> Result<StanzaCatalog, Failure> {
        let repo: Repo = open_repo(settings).await?;
        let stanza = &settings.stanza;
        let cluster = repo.require_cluster(stanza).await?;
        let format = repo.format().await?;
        // Every index entry with its record and content summary (read concurrently).
        let (wal, listing) = if format.is_some() {
            (
                repo.wal_catalog_reusing(stanza, previous).await?,
                repo.backups(stanza).await?,
            )
        } else {
            (Vec::new(), Default::default())
        };
        Ok(StanzaCatalog {
            repo,
            format,
            cluster,
            wal,
            listing,
        })
    }

    /// The index entries as [`summarize`] takes them.
    pub fn entries(&self) -> Vec<Entry> {
        self.wal
            .iter()
            .map(|e| Entry {
                name: e.name,
                digest: e.digest,
                record: e.record.clone(),
            })
            .collect()
    }

    /// The WAL segment size on record.
    pub fn segment_size(&self) -> Option<SegmentSize> {
        SegmentSize::new(self.cluster.wal_segment_size).ok()
    }

    /// The planner's snapshot of it, or why the planner cannot use it (a cluster record it
    /// cannot read: said as a warning, the rest of the report stands).
    pub async fn snapshot(
        &self,
        stanza: &tidemark_store::catalog::Stanza,
    ) -> Result<Result<snapshot::Loaded, String>, Failure> {
        match snapshot::build(&self.repo, stanza, &self.cluster, &self.listing, &self.wal).await {
            Ok(loaded) => Ok(Ok(loaded)),
            Err(e @ tidemark_recovery::Error::WalContent { .. }) => {
                Ok(Err(format!("cannot tell what a restore can reach: {e}")))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The last verify run, without its proof lists (the next run's business, not a status
/// page's); a record that cannot be read is logged and reads as none.
pub async fn last_verify(
    repo: &Repo,
    stanza: &tidemark_store::catalog::Stanza,
) -> Result<Option<tidemark_store::verify::VerifyRecord>, Failure> {
    match repo.last_verify(stanza).await {
        Ok(last) => Ok(last.map(|mut v| {
            v.proofs.clear();
            v
        })),
        Err(e) if e.is_unreadable_record() => {
            tracing::warn!("the last verify record cannot be read: {e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads everything `info` reports.
pub async fn gather(settings: &Settings) -> Result<InfoReport, Failure> {
    let stanza = &settings.stanza;
    let catalog = StanzaCatalog::read(settings).await?;
    let repo = &catalog.repo;
    let format = catalog.format;
    let entries = catalog.entries();
    let quarantined = if format.is_some() {
        repo.backend()
            .list(&catalog::quarantine_prefix(stanza))
            .await?
            .len()
    } else {
        0
    };
    let stale_temp_files = repo.backend().stale_temp_files(false).await?.count;
    let drills = match format {
        Some(_) => Some(drills_info(
            repo.recent_drills(stanza).await?,
            tidemark_store::repo::now(),
            settings.drill_max_age,
        )),
        None => None,
    };
    let (backups, damaged_backups, recovery) = if format.is_some() {
        let listing = &catalog.listing;
        let recovery = Some(match catalog.snapshot(stanza).await? {
            Ok(loaded) => recovery_info(&loaded),
            Err(warning) => RecoveryInfo {
                timelines: Vec::new(),
                warnings: vec![warning],
            },
        });
        let mut backups = summarize_backups(&listing.records);
        let problems: Vec<Vec<String>> = futures::stream::iter(&listing.records)
            .map(|record| missing_data(repo, record))
            .buffered(4)
            .try_collect()
            .await?;
        for (info, problems) in backups.iter_mut().zip(problems) {
            info.problems = problems;
        }
        let damaged = listing
            .damaged
            .iter()
            .map(|d| DamagedBackupInfo {
                id: d.id.clone(),
                error: d.error.to_string(),
            })
            .collect();
        (backups, damaged, recovery)
    } else {
        (Vec::new(), Vec::new(), None)
    };
    let last_verify = last_verify(repo, stanza).await?;
    let c = &catalog.cluster;
    Ok(InfoReport {
        last_verify,
        repo: settings.repo.to_string(),
        stanza: stanza.to_string(),
        format,
        cluster: Some(ClusterInfo {
            system_identifier: c.system_id.to_string(),
            pg_version: c.pg_major,
            wal_segment_size: c.wal_segment_size,
        }),
        segments_not_indexed: segments_not_indexed(&catalog.wal),
        wal: summarize(&entries, catalog.segment_size()),
        quarantined,
        stale_temp_files,
        backups,
        damaged_backups,
        recovery,
        drills,
    })
}

/// What a restore can reach, per timeline ([`plan::windows`] over the catalog snapshot).
pub fn recovery_info(loaded: &snapshot::Loaded) -> RecoveryInfo {
    let timelines = plan::windows(&loaded.snapshot)
        .into_iter()
        .map(|t| TimelineWindowInfo {
            timeline: t.timeline,
            parent: t.parent.map(|b| b.parent),
            fork_lsn: t.parent.map(|b| b.fork.to_string()),
            windows: t
                .windows
                .into_iter()
                .map(|w| WindowInfo {
                    from_lsn: w.from_lsn.to_string(),
                    from_time: w.from_time,
                    to_lsn: w.to_lsn.to_string(),
                    to_time: w.to_time,
                    gap_at: w.gap_at,
                })
                .collect(),
        })
        .collect();
    RecoveryInfo {
        timelines,
        warnings: loaded.warnings.clone(),
    }
}

/// What a restore can reach (`info`'s `recovery`).
#[derive(Debug, Serialize, PartialEq)]
pub struct RecoveryInfo {
    /// Per timeline, ascending: its parent and fork point (the timeline tree) and its
    /// recoverable windows.
    pub timelines: Vec<TimelineWindowInfo>,
    /// What the planner leaves out of the catalog (damaged records, conflicts).
    pub warnings: Vec<String>,
}

/// One timeline's recoverable windows.
#[derive(Debug, Serialize, PartialEq)]
pub struct TimelineWindowInfo {
    /// The timeline.
    pub timeline: u32,
    /// The timeline it branched off (`null` for timeline 1, or without a history file).
    pub parent: Option<u32>,
    /// Where it branched off.
    pub fork_lsn: Option<String>,
    /// Continuous reachable stretches, oldest first.
    pub windows: Vec<WindowInfo>,
}

/// One continuous reachable stretch of a timeline.
#[derive(Debug, Serialize, PartialEq)]
pub struct WindowInfo {
    /// The earliest reachable point (a backup's consistent point).
    pub from_lsn: String,
    /// Its time.
    pub from_time: DateTime<Utc>,
    /// The latest reachable point (the end of contiguous archived WAL).
    pub to_lsn: String,
    /// The last commit time there, when the index knows it.
    pub to_time: Option<DateTime<Utc>>,
    /// The first missing segment after it, when the archive goes on after a gap.
    pub gap_at: Option<String>,
}

/// Segment and `.partial` entries with no content summary, neither in the entry nor in
/// a sidecar `tidemark reindex` wrote: [`Repo::wal_catalog`] has already merged the
/// sidecars, so this reads nothing more. A summary that is there but in a newer format is
/// not counted (reindex would not rewrite it).
pub fn segments_not_indexed(catalog: &[tidemark_store::repo::IndexedWal]) -> u64 {
    catalog
        .iter()
        .filter(|e| matches!(e.name, WalFileName::Segment(_) | WalFileName::Partial(_)))
        .filter(|e| e.content.is_none() && e.content_error.is_none())
        .count() as u64
}

/// `n` bytes for a person (`1.5 MiB`).
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `info`: the text is [`render_text`].
impl Report for InfoReport {
    fn text(&self) -> String {
        render_text(self)
    }

    fn json(&self) -> String {
        json_lines(self)
    }
}

/// Renders the report for a person.
pub fn render_text(r: &InfoReport) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("repository  {}  (stanza {})", r.repo, r.stanza));
    let Some(_) = r.format else {
        line("  empty: nothing has been archived yet".into());
        return out;
    };
    match &r.cluster {
        Some(c) => line(format!(
            "cluster     system identifier {}, PostgreSQL {}, {} WAL segments",
            c.system_identifier,
            c.pg_version,
            bytes(c.wal_segment_size)
        )),
        None => line("cluster     none recorded for this stanza yet".into()),
    }
    let w = &r.wal;
    line(format!(
        "wal         {} segments, {} partial, {} backup, {} history files; {} raw, {} stored{}",
        w.segments,
        w.partial,
        w.backup,
        w.history,
        bytes(w.raw_bytes),
        bytes(w.stored_bytes),
        if w.stored_bytes > 0 {
            format!(" ({:.1}x)", w.raw_bytes as f64 / w.stored_bytes as f64)
        } else {
            String::new()
        }
    ));
    for t in &w.timelines {
        line(format!(
            "  timeline {}: {} .. {} ({} segments)",
            t.timeline, t.first, t.last, t.segments
        ));
        for g in &t.gaps {
            line(format!(
                "    GAP: {} .. {} missing ({} segments): no restore can cross it",
                g.first, g.last, g.segments
            ));
        }
    }
    if let Some(n) = &w.newest {
        line(format!(
            "  newest segment {} archived {}",
            n.name,
            n.archived_at.format("%Y-%m-%d %H:%M:%S UTC")
        ));
    }
    for c in &w.conflicts {
        line(format!(
            "  CONFLICT: {c} is archived with more than one content"
        ));
    }
    if r.segments_not_indexed > 0 {
        line(format!(
            "  {} segments not indexed: run `tidemark reindex`",
            r.segments_not_indexed
        ));
    }
    if r.quarantined > 0 {
        line(format!(
            "  {} refused file(s) kept in quarantine",
            r.quarantined
        ));
    }
    if r.stale_temp_files > 0 {
        line(format!(
            "  {} temporary file(s) left by killed writers (the next backup removes them)",
            r.stale_temp_files
        ));
    }
    if let Some(recovery) = &r.recovery {
        for l in recovery_lines(recovery) {
            line(l);
        }
    }
    let damaged =
        r.damaged_backups.len() + r.backups.iter().filter(|b| !b.problems.is_empty()).count();
    match (r.backups.len() + r.damaged_backups.len(), damaged) {
        (0, _) => line("backups     none".into()),
        (n, 0) => line(format!("backups     {n}")),
        (n, d) => line(format!("backups     {n}, {d} of them DAMAGED")),
    }
    for b in &r.backups {
        line(format!(
            "  {}  {:?}  {} .. {}  timeline {}  WAL {} .. {}  {} in the database, {} added ({:.1}%)",
            b.id,
            b.label,
            b.start_time.format("%Y-%m-%d %H:%M:%S"),
            b.stop_time.format("%H:%M:%S UTC"),
            b.timeline,
            b.start_lsn,
            b.stop_lsn,
            bytes(b.size),
            bytes(b.stored_added),
            b.added_ratio * 100.0
        ));
        for w in &b.warnings {
            line(format!("    WARNING: {w}"));
        }
        for p in &b.problems {
            line(format!("    DAMAGED: {p}: a restore of this backup fails"));
        }
    }
    for d in &r.damaged_backups {
        line(format!(
            "  {}  DAMAGED: its record cannot be read ({}): restores skip it when choosing the newest backup; `restore --backup {}` fails",
            d.id, d.error, d.id
        ));
    }
    line(match &r.last_verify {
        Some(v) => super::verify::last_run_line(v),
        None => {
            "verify      never run: `tidemark verify` proves the backups and WAL can be read".into()
        }
    });
    if let Some(drills) = &r.drills {
        for l in drill_lines(drills) {
            line(l);
        }
    }
    out
}

/// The recoverable windows as a timeline tree: each timeline under the one it branched
/// off, with its fork point, its windows and the gaps between them (pure).
pub fn recovery_lines(r: &RecoveryInfo) -> Vec<String> {
    let mut out = vec![
        "recovery    what a restore can reach (prove a target with `tidemark plan`)".to_string(),
    ];
    // (No timeline at all with a warning: the windows could not be worked out.)
    let unknown = r.timelines.is_empty() && !r.warnings.is_empty();
    if !unknown && r.timelines.iter().all(|t| t.windows.is_empty()) {
        out.push("  nothing yet: no backup with the WAL to make it consistent".into());
    }
    let known: BTreeSet<u32> = r.timelines.iter().map(|t| t.timeline).collect();
    // Roots: timelines whose parent is not listed.
    let mut stack: Vec<(&TimelineWindowInfo, usize)> = r
        .timelines
        .iter()
        .filter(|t| !t.parent.is_some_and(|p| known.contains(&p)))
        .rev()
        .map(|t| (t, 1))
        .collect();
    let mut seen = BTreeSet::new();
    while let Some((t, depth)) = stack.pop() {
        if !seen.insert(t.timeline) {
            continue;
        }
        let indent = "  ".repeat(depth);
        let fork = match (t.parent, &t.fork_lsn) {
            (Some(p), Some(at)) => format!(" (off timeline {p} at {at})"),
            _ => String::new(),
        };
        if t.windows.is_empty() {
            out.push(format!(
                "{indent}timeline {}{fork}: not reachable (no backup with continuous WAL to it)",
                t.timeline
            ));
        }
        for w in &t.windows {
            let to_time = w
                .to_time
                .map(|at| format!(", last commit {}", at.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default();
            out.push(format!(
                "{indent}timeline {}{fork}: recoverable from {} ({}) to {}{to_time}",
                t.timeline,
                w.from_lsn,
                w.from_time.format("%Y-%m-%d %H:%M:%S UTC"),
                w.to_lsn
            ));
            if let Some(gap) = &w.gap_at {
                out.push(format!(
                    "{indent}  GAP: {gap} is missing: replay from before it stops at {}",
                    w.to_lsn
                ));
            }
        }
        for child in r
            .timelines
            .iter()
            .filter(|c| c.parent == Some(t.timeline))
            .rev()
        {
            stack.push((child, depth + 1));
        }
    }
    for w in &r.warnings {
        out.push(format!("  WARNING: {w}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_store::Compression;

    #[test]
    fn the_timeline_tree_nests_children_under_their_fork() {
        let at = |m: u32| -> DateTime<Utc> { format!("2026-11-21T10:{m:02}:00Z").parse().unwrap() };
        let window = |from: &str, to: &str, gap: Option<&str>| WindowInfo {
            from_lsn: from.into(),
            from_time: at(1),
            to_lsn: to.into(),
            to_time: Some(at(9)),
            gap_at: gap.map(str::to_string),
        };
        let r = RecoveryInfo {
            timelines: vec![
                TimelineWindowInfo {
                    timeline: 1,
                    parent: None,
                    fork_lsn: None,
                    windows: vec![
                        window("0/2000100", "0/4FFFFFF", Some("000000010000000000000005")),
                        window("0/6000100", "0/7000000", None),
                    ],
                },
                TimelineWindowInfo {
                    timeline: 2,
                    parent: Some(1),
                    fork_lsn: Some("0/3000000".into()),
                    windows: vec![window("0/2000100", "0/8000000", None)],
                },
                TimelineWindowInfo {
                    timeline: 3,
                    parent: Some(2),
                    fork_lsn: Some("0/7000000".into()),
                    windows: vec![],
                },
            ],
            warnings: vec!["w".into()],
        };
        let lines = recovery_lines(&r);
        assert_eq!(
            lines[1..],
            [
                "  timeline 1: recoverable from 0/2000100 (2026-11-21 10:01:00 UTC) to 0/4FFFFFF, last commit 2026-11-21 10:09:00 UTC",
                "    GAP: 000000010000000000000005 is missing: replay from before it stops at 0/4FFFFFF",
                "  timeline 1: recoverable from 0/6000100 (2026-11-21 10:01:00 UTC) to 0/7000000, last commit 2026-11-21 10:09:00 UTC",
                "    timeline 2 (off timeline 1 at 0/3000000): recoverable from 0/2000100 (2026-11-21 10:01:00 UTC) to 0/8000000, last commit 2026-11-21 10:09:00 UTC",
                "      timeline 3 (off timeline 2 at 0/7000000): not reachable (no backup with continuous WAL to it)",
                "  WARNING: w",
            ]
        );
    }

    fn entry(name: &str, content: &[u8], minute: u32) -> Entry {
        let name: WalFileName = name.parse().unwrap();
        Entry {
            name,
            digest: Digest::of(content),
            record: WalRecord {
                name: name.to_string(),
                kind: name.kind().into(),
                digest: Digest::of(content),
                raw_size: 100,
                stored_size: 10,
                compression: Compression::Lz4,
                archived_at: format!("2026-11-21T10:{minute:02}:00Z").parse().unwrap(),
                system_id: None,
                start_lsn: None,
                tidemark_version: "test".into(),
                content: None,
            },
        }
    }

    #[test]
    fn ranges_gaps_conflicts_and_newest() {
        let entries = vec![
            entry("000000010000000000000001", b"1", 1),
            entry("000000010000000000000002", b"2", 2),
            entry("000000010000000000000005", b"5", 3),
            entry("0000000100000000000000FF", b"ff", 4),
            entry("000000010000000100000000", b"100", 5),
            entry("000000020000000100000000", b"t2", 6),
            entry("000000020000000100000000", b"t2-other", 7),
            entry("00000002.history", b"h", 8),
            entry("000000010000000100000000.partial", b"p", 9),
        ];
        let s = summarize(&entries, Some(SegmentSize::DEFAULT));
        assert_eq!(s.segments, 7);
        assert_eq!((s.partial, s.history, s.backup), (1, 1, 0));
        assert_eq!(s.raw_bytes, 900);
        assert_eq!(s.timelines.len(), 2);
        let t1 = &s.timelines[0];
        assert_eq!(t1.segments, 5);
        let ranges: Vec<_> = t1
            .ranges
            .iter()
            .map(|r| (r.first.as_str(), r.last.as_str(), r.segments))
            .collect();
        assert_eq!(
            ranges,
            [
                ("000000010000000000000001", "000000010000000000000002", 2),
                ("000000010000000000000005", "000000010000000000000005", 1),
                // 0/FF and 1/00 are consecutive: the log boundary is not a gap.
                ("0000000100000000000000FF", "000000010000000100000000", 2),
            ]
        );
        let gaps: Vec<_> = t1
            .gaps
            .iter()
            .map(|r| (r.first.as_str(), r.last.as_str(), r.segments))
            .collect();
        assert_eq!(
            gaps,
            [
                ("000000010000000000000003", "000000010000000000000004", 2),
                ("000000010000000000000006", "0000000100000000000000FE", 249)
            ]
        );
        assert_eq!(s.conflicts, ["000000020000000100000000"]);
        assert_eq!(s.newest.unwrap().name, "000000020000000100000000");
        assert_eq!(
            s.last_archived_at.unwrap().to_rfc3339(),
            "2026-11-21T10:09:00+00:00"
        );
    }

    #[test]
    fn an_empty_archive_summarises_to_nothing() {
        let s = summarize(&[], Some(SegmentSize::DEFAULT));
        assert_eq!(s, WalSummary::default());
    }

    fn backup(id: &str, size: u64, stored_added: u64) -> BackupRecord {
        let t = DateTime::parse_from_rfc3339("2026-11-21T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        BackupRecord {
            size,
            stored_added,
            ..BackupRecord::example(id, t)
        }
    }

    #[test]
    fn a_backup_much_smaller_than_the_one_before_is_flagged() {
        let list = summarize_backups(&[
            backup("a", 1000, 400),
            backup("b", 900, 9),
            backup("c", 89, 89),
            backup("d", 90, 0),
        ]);
        let warned: Vec<&str> = list
            .iter()
            .filter(|b| !b.warnings.is_empty())
            .map(|b| b.id.as_str())
            .collect();
        // 89 < 900 / 10; 900 is not under 1000 / 10; 90 is not under 89 / 10.
        assert_eq!(warned, vec!["c"]);
        assert!(
            list[2].warnings[0].contains("under 10%"),
            "{:?}",
            list[2].warnings
        );
        assert_eq!(list[0].added_ratio, 0.4);
        assert_eq!(list[1].added_ratio, 0.01);
        let text = render_text(&InfoReport {
            repo: "file:///r".into(),
            stanza: "main".into(),
            format: Some(1),
            cluster: None,
            wal: WalSummary::default(),
            segments_not_indexed: 0,
            quarantined: 0,
            stale_temp_files: 0,
            backups: list,
            recovery: None,
            last_verify: None,
            drills: None,
            damaged_backups: vec![DamagedBackupInfo {
                id: "e".into(),
                error: "stanzas/main/backups/e is corrupt: record checksum mismatch".into(),
            }],
        });
        assert!(text.contains("backups     5, 1 of them DAMAGED"), "{text}");
        assert!(
            text.contains(
                "  e  DAMAGED: its record cannot be read (stanzas/main/backups/e is corrupt"
            ),
            "{text}"
        );
        assert!(text.contains("WARNING: its database size"), "{text}");
    }

    #[test]
    fn the_servers_warnings_during_a_backup_are_counted_and_shown() {
        // A record from before notices were counted reads as "unknown", without warnings.
        let old = backup("old", 100, 100);
        let json = serde_json::to_string(&old).unwrap();
        assert!(
            !json.contains("notices") && !json.contains("checksum"),
            "{json}"
        );
        let read: BackupRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (read.notices, read.checksum_failures_ignored),
            (None, false)
        );
        let clean = BackupRecord {
            notices: Some(0),
            ..backup("clean", 100, 100)
        };
        let noisy = BackupRecord {
            notices: Some(3),
            checksum_failures_ignored: true,
            ..backup("noisy", 100, 100)
        };
        let list = summarize_backups(&[read, clean, noisy]);
        assert_eq!(
            list.iter().map(|b| b.notices).collect::<Vec<_>>(),
            [None, Some(0), Some(3)]
        );
        assert!(list[0].warnings.is_empty() && list[1].warnings.is_empty());
        assert_eq!(list[2].warnings.len(), 2, "{:?}", list[2].warnings);
        let json = serde_json::to_value(&list[2]).unwrap();
        assert_eq!(json["notices"], 3);
        let text = render_text(&InfoReport {
            repo: "file:///r".into(),
            stanza: "main".into(),
            format: Some(1),
            cluster: None,
            wal: WalSummary::default(),
            segments_not_indexed: 0,
            quarantined: 0,
            stale_temp_files: 0,
            backups: list,
            damaged_backups: Vec::new(),
            recovery: None,
            last_verify: None,
            drills: None,
        });
        assert!(
            text.contains("WARNING: the server sent 3 warning(s)"),
            "{text}"
        );
        assert!(text.contains("data checksum failures"), "{text}");
    }

    #[test]
    fn segments_without_content_ask_for_reindex() {
        let report = |n| InfoReport {
            repo: "file:///r".into(),
            stanza: "main".into(),
            format: Some(1),
            cluster: None,
            wal: WalSummary::default(),
            segments_not_indexed: n,
            quarantined: 0,
            stale_temp_files: 0,
            backups: Vec::new(),
            damaged_backups: Vec::new(),
            recovery: None,
            last_verify: None,
            drills: None,
        };
        let line = "  7 segments not indexed: run `tidemark reindex`\n";
        assert!(render_text(&report(7)).contains(line));
        assert!(!render_text(&report(0)).contains("not indexed"));
    }

    fn drill(at: &str, passed: bool) -> DrillRecord {
        DrillRecord {
            id: "ab".into(),
            started_at: at.parse().unwrap(),
            finished_at: at.parse().unwrap(),
            passed,
            failure: (!passed).then(|| "checks statement 2: returned f".to_string()),
            backup: "20261201T000000Z".into(),
            target: "latest".into(),
            expected_stop: "at the end of archived WAL".into(),
            expected_lsn: None,
            expected_time: None,
            reached: None,
            phases: Vec::new(),
            rto_seconds: passed.then_some(42.25),
            checks: Vec::new(),
            tidemark_version: "0.1.0".into(),
            pg_version: None,
        }
    }

    #[test]
    fn the_last_drill_and_its_rto_are_shown_and_an_old_one_warned_about() {
        let week = std::time::Duration::from_secs(7 * 86_400);
        let now: DateTime<Utc> = "2026-12-10T12:00:00Z".parse().unwrap();
        let fresh = drills_info(
            RecentDrills {
                last: Some(drill("2026-12-09T12:00:00Z", true)),
                last_passed: Some(drill("2026-12-09T12:00:00Z", true)),
                count: 4,
                damaged: Vec::new(),
            },
            now,
            week,
        );
        assert_eq!(
            drill_lines(&fresh),
            ["drill       last 2026-12-09 12:00:00 UTC PASSED, RTO 42.2 s (backup 20261201T000000Z, target latest; 4 on record)"]
        );
        let stale = drills_info(
            RecentDrills {
                last: Some(drill("2026-12-09T12:00:00Z", false)),
                last_passed: Some(drill("2026-12-01T12:00:00Z", true)),
                count: 5,
                damaged: Vec::new(),
            },
            now,
            week,
        );
        let lines = drill_lines(&stale);
        assert!(
            lines[0].contains("FAILED: checks statement 2: returned f"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("last passing 2026-12-01 12:00:00 UTC, RTO 42.2 s"),
            "{lines:?}"
        );
        assert!(
            lines[2].starts_with("  WARNING: the last passing restore drill is 9.0 days old"),
            "{lines:?}"
        );
        let none = drills_info(RecentDrills::default(), now, week);
        assert_eq!(
            none.warning
                .as_deref()
                .map(|w| w.starts_with("no restore drill")),
            Some(true)
        );
        let json = serde_json::to_value(&stale).unwrap();
        assert_eq!(json["last_passed"]["rto_seconds"], 42.25);
    }
}
