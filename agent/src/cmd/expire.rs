//! `tidemark expire [--dry-run] [--json]`: applies the retention policy
//! (`tidemark_recovery::retention`, pure) to the stanza's catalog, removes what it lets
//! go, then collects the blobs nothing references any more (`tidemark_store::gc`).
//!
//! Order of removals, so that an expire stopped at any point leaves nothing visible that
//! is broken: the backup records first (a backup without its record does not exist),
//! then the WAL index entries and their sidecars, then their claims, then the history
//! files no kept WAL needs, and only then the blobs (the collection marks what remains).
//! A rerun finishes what an interrupted run left.
//!
//! `--dry-run` computes the same decision and the same collection (treating the records
//! it would remove as gone), prints what would go and the window that would remain, and
//! writes nothing, not even the collection marker.
//!
//! Exit codes: 0 done (or shown); 2 no retention policy configured (an empty policy never
//! reads as "keep nothing"); 1 the repository failed; the job lock's code when another
//! expire of the stanza runs. A backup record that cannot be read is left alone and
//! stops the collection (what it references cannot be known), with a warning.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use tidemark_recovery::retention::{self, PolicyError, RetainedBackup, RetentionDecision};
use tidemark_recovery::snapshot;
use tidemark_store::backup::{backups_prefix, parse_backup_key};
use tidemark_store::catalog::{self, parse_wal_key};
use tidemark_store::gc::{self, GcReport, GcRequest, GcStep};
use tidemark_store::pg::WalFileName;
use tidemark_store::wal_content::parse_wal_content_key;
use tidemark_store::Key;

use super::open_repo;
use super::report::{json_lines, Report};
use crate::cli::args::ExpireArgs;
use crate::cli::config::Settings;
use crate::exit::Failure;
use crate::progress::Progress;

/// A backup the run keeps, and why.
#[derive(Clone, Debug, Serialize)]
pub struct KeptBackup {
    /// Its id.
    pub id: String,
    /// Every rule that keeps it, in words.
    pub because: Vec<String>,
}

/// Archived WAL files removed from one timeline, as a range of names.
#[derive(Clone, Debug, Serialize)]
pub struct WalRange {
    /// The timeline.
    pub timeline: u32,
    /// The first file name removed.
    pub first: String,
    /// The last.
    pub last: String,
    /// Files removed in between (index entries; a range may skip files that stay).
    pub files: u64,
}

/// What `expire` did (or, with `--dry-run`, would do).
#[derive(Clone, Debug, Serialize)]
pub struct Expired {
    /// The repository.
    pub repo: String,
    /// The stanza.
    pub stanza: String,
    /// True for `--dry-run`: nothing was changed.
    pub dry_run: bool,
    /// When the decision was made.
    pub now: DateTime<Utc>,
    /// The backups kept, oldest first.
    pub kept: Vec<KeptBackup>,
    /// The backups removed, oldest first.
    pub expired_backups: Vec<String>,
    /// WAL removed, per timeline.
    pub wal: Vec<WalRange>,
    /// WAL index keys removed (entries, sidecars, claims).
    pub wal_keys: u64,
    /// History files removed (timelines).
    pub histories: Vec<u32>,
    /// Every moment from this one on stays restorable (from the window's backup), while
    /// the archive after it is continuous.
    pub restorable_since: Option<DateTime<Utc>>,
    /// The recovery window that guarantees, in seconds.
    pub guaranteed_window_seconds: Option<i64>,
    /// The configured window, in seconds.
    pub configured_window_seconds: Option<i64>,
    /// How far short of the configured window the backups fall, in seconds (none are old
    /// enough yet: nothing was expired for the window).
    pub window_short_seconds: Option<i64>,
    /// Why no WAL was expired, when it could not be decided safely.
    pub wal_held: Option<String>,
    /// The blob collection.
    pub gc: GcReport,
    /// Requests sent to the store (S3), when it counts them.
    pub requests: Option<u64>,
    /// What the operator should know (damaged records left alone, conflicts).
    pub warnings: Vec<String>,
}

/// Runs the command.
pub async fn run(settings: &Settings, args: &ExpireArgs) -> Result<Expired, Failure> {
    let policy = &settings.retention;
    if policy.is_empty() {
        return Err(usage(PolicyError::Empty.to_string()));
    }
    // One expire per stanza at a time, by hand or scheduled; a dry run changes nothing
    // and needs no lock. (A backup on another host is kept safe by its lease.)
    let _job_lock = if args.dry_run {
        None
    } else {
        Some(crate::joblock::acquire(
            settings,
            crate::daemon::JobKind::Expire,
        )?)
    };
    let repo = open_repo(settings).await?;
    repo.require_format().await?;
    let stanza = &settings.stanza;
    let now = tidemark_store::repo::now();
    // Counted in steps: one per backup marked, one when the mark is done, one per shard
    // swept (its total is set once the backups are known).
    let mut progress = Progress::counting("expire", "steps", None, !args.json);

    // One read of the catalog: the backup records, one listing of the WAL index.
    let cluster = repo.require_cluster(stanza).await?;
    let backup_keys = repo.backend().list(&backups_prefix(stanza)).await?;
    let listing = repo.backups(stanza).await?;
    let wal_listing = repo.backend().list(&catalog::wal_prefix(stanza)).await?;
    let loaded =
        snapshot::build_index_only(&repo, stanza, &cluster, &listing, &wal_listing).await?;
    let snapshot = &loaded.snapshot;
    tracing::info!(
        "expire: catalog read: {} backups, {} segments",
        snapshot.backups.len(),
        snapshot.segments.len()
    );
    let mut warnings = loaded.warnings.clone();
    if !loaded.damaged_backups.is_empty() {
        warnings.push(format!(
            "{} backup record(s) cannot be read ({}): they are left alone, and no blob is collected",
            loaded.damaged_backups.len(),
            loaded.damaged_backups.join(", ")
        ));
    }

    // Labels come from the records (the snapshot keeps what the planner needs).
    let labels: BTreeMap<&str, &str> = listing
        .records
        .iter()
        .map(|r| (r.id.as_str(), r.label.as_str()))
        .collect();
    let retained: Vec<RetainedBackup> = snapshot
        .backups
        .iter()
        .map(|b| RetainedBackup {
            id: b.id.clone(),
            label: labels
                .get(b.id.as_str())
                .filter(|l| !l.is_empty())
                .map(|l| l.to_string()),
            start_lsn: b.start_lsn,
            timeline: b.timeline,
            stop_lsn: b.stop_lsn,
            stop_time: b.stop_time,
        })
        .collect();
    let decision = match retention::decide(&retained, policy, now) {
        Ok(d) => Some(d),
        Err(PolicyError::NoBackups) => {
            warnings.push("the stanza has no backup: no backup or WAL is expired".into());
            None
        }
        Err(e) => return Err(usage(e.to_string())),
    };

    // Which keys go.
    let mut doomed_backups: Vec<Key> = Vec::new();
    let mut wal_doomed = WalDoomed::default();
    let mut wal_held = None;
    if let Some(decision) = &decision {
        let expired: BTreeSet<&str> = decision.expired.iter().map(String::as_str).collect();
        doomed_backups = backup_keys
            .iter()
            .filter(|m| parse_backup_key(&m.key).is_some_and(|(id, _)| expired.contains(id)))
            .map(|m| m.key.clone())
            .collect();
        wal_doomed = wal_to_remove(
            snapshot,
            decision,
            &wal_listing,
            now - chrono_grace(settings),
        );
        wal_held = wal_doomed.held.clone();
    }

    let mut excluded: BTreeSet<Key> = doomed_backups.iter().cloned().collect();
    excluded.extend(wal_doomed.all_keys().cloned());
    tracing::info!(
        "expire: decided: {} backup records, {} WAL keys to remove",
        doomed_backups.len(),
        wal_doomed.all_keys().count()
    );
    if !args.dry_run {
        // Backups first, then the WAL entries and sidecars, then claims, then history.
        repo.backend().delete_many(&doomed_backups).await?;
        repo.backend().delete_many(&wal_doomed.entries).await?;
        repo.backend().delete_many(&wal_doomed.claims).await?;
        repo.backend().delete_many(&wal_doomed.histories).await?;
        tracing::info!("expire: records removed");
    }

    let gc_request = GcRequest {
        stanza: stanza.clone(),
        now,
        grace: chrono_grace(settings),
        dry_run: args.dry_run,
        excluded,
    };
    let mut marked = 0u64;
    // Backup records left to mark (those listed, less the ones removed), the mark's end,
    // the 256 shards.
    let to_mark = backup_keys.len().saturating_sub(doomed_backups.len()) as u64;
    progress.set_total(to_mark + 1 + 256);
    let gc = if loaded.damaged_backups.is_empty() {
        gc::collect(&repo, &gc_request, &mut |step| {
            if let GcStep::Marked = step {
                marked += 1;
            }
            progress.add(1);
        })
        .await?
    } else {
        GcReport {
            sweep_skipped: Some("a backup record cannot be read".into()),
            ..Default::default()
        }
    };
    progress.finish();
    tracing::info!("expire: {marked} backups marked");

    let window = decision.as_ref();
    Ok(Expired {
        repo: settings.repo.to_string(),
        stanza: stanza.to_string(),
        dry_run: args.dry_run,
        now,
        kept: window
            .map(|d| {
                d.kept
                    .iter()
                    .map(|k| KeptBackup {
                        id: k.id.clone(),
                        because: k.because.iter().map(ToString::to_string).collect(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        expired_backups: window.map(|d| d.expired.clone()).unwrap_or_default(),
        wal: wal_doomed.ranges.clone(),
        wal_keys: wal_doomed.all_keys().count() as u64,
        histories: wal_doomed.history_timelines.clone(),
        restorable_since: window.map(|d| d.restorable_since),
        guaranteed_window_seconds: window.map(|d| d.guaranteed_window.num_seconds()),
        configured_window_seconds: policy.window.map(|w| w.num_seconds()),
        window_short_seconds: window.and_then(|d| {
            d.window_short_of
                .map(|w| (w - d.guaranteed_window).num_seconds().max(0))
        }),
        wal_held,
        gc,
        requests: repo.backend().requests_sent(),
        warnings,
    })
}

fn usage(message: String) -> Failure {
    Failure::Recovery(tidemark_recovery::Error::Usage(message))
}

fn chrono_grace(settings: &Settings) -> Duration {
    Duration::from_std(settings.gc_grace).unwrap_or(Duration::MAX)
}

/// The WAL index keys a decision removes, sorted into the order they go in.
#[derive(Debug, Default)]
struct WalDoomed {
    /// Index entries and their `.content` sidecars of segments, `.partial` and `.backup`.
    entries: Vec<Key>,
    /// Their names' claims.
    claims: Vec<Key>,
    /// History files' entries.
    histories: Vec<Key>,
    /// The timelines whose history file goes.
    history_timelines: Vec<u32>,
    /// For the report: per timeline, the ranges of names removed.
    ranges: Vec<WalRange>,
    /// Why nothing goes.
    held: Option<String>,
}

impl WalDoomed {
    fn all_keys(&self) -> impl Iterator<Item = &Key> {
        self.entries
            .iter()
            .chain(&self.claims)
            .chain(&self.histories)
    }
}

/// The file name a WAL index key (entry, sidecar or claim) is about.
fn wal_name_of(key: &Key) -> Option<WalFileName> {
    if let Some((name, _)) = parse_wal_key(key).or_else(|| parse_wal_content_key(key)) {
        return Some(name);
    }
    key.file_name().strip_suffix(".claim")?.parse().ok()
}

/// Which of `listed` (the stanza's WAL index keys) `decision` removes. A claim whose name
/// has no entry left is removed only when older than `claims_before`: a push may be at
/// work between its claim and its entry.
fn wal_to_remove(
    snapshot: &tidemark_recovery::plan::CatalogSnapshot,
    decision: &RetentionDecision,
    listed: &[tidemark_store::backend::ObjectMeta],
    claims_before: DateTime<Utc>,
) -> WalDoomed {
    let size = snapshot.segment_size.max(1);
    let position = |name: &WalFileName| -> Option<(u32, u64)> {
        let seg = name.segment()?;
        let segno = seg
            .segment_number(tidemark_store::pg::SegmentSize::new(size).ok()?)
            .ok()?;
        Some((seg.timeline.0, segno))
    };
    // Positions of the files the snapshot does not list as segments.
    let others: BTreeSet<(u32, u64)> = listed
        .iter()
        .filter_map(|m| parse_wal_key(&m.key))
        .filter_map(|(name, _)| position(&name).map(|p| (name, p)))
        .filter(|(name, p)| {
            !matches!(name, WalFileName::Segment(_)) || !snapshot.segments.contains_key(p)
        })
        .map(|(_, p)| p)
        .collect();
    let expiry = retention::wal_files_to_expire(snapshot, decision, &others);
    let mut doomed = WalDoomed {
        held: expiry.held.clone(),
        history_timelines: expiry.histories.clone(),
        ..Default::default()
    };
    if expiry.held.is_some() {
        return doomed;
    }
    let gone: BTreeSet<(u32, u64)> = expiry
        .segments
        .iter()
        .chain(&expiry.others)
        .copied()
        .collect();
    let histories: BTreeSet<u32> = expiry.histories.iter().copied().collect();
    let with_entry: BTreeSet<String> = listed
        .iter()
        .filter_map(|m| parse_wal_key(&m.key))
        .map(|(name, _)| name.to_string())
        .collect();
    let mut per_timeline: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for m in listed {
        let Some(name) = wal_name_of(&m.key) else {
            continue;
        };
        let goes = match &name {
            WalFileName::History(tli) => histories.contains(&tli.0),
            other => position(other).is_some_and(|p| gone.contains(&p)),
        };
        if !goes {
            continue;
        }
        let is_claim = m.key.as_str().ends_with(".claim");
        if is_claim {
            let orphan = !with_entry.contains(&name.to_string());
            if !orphan || m.last_modified.is_some_and(|t| t <= claims_before) {
                doomed.claims.push(m.key.clone());
            }
        } else if matches!(name, WalFileName::History(_)) {
            doomed.histories.push(m.key.clone());
        } else {
            if parse_wal_key(&m.key).is_some() {
                per_timeline
                    .entry(name.timeline().0)
                    .or_default()
                    .push(name.to_string());
            }
            doomed.entries.push(m.key.clone());
        }
    }
    for (timeline, mut names) in per_timeline {
        // Names of one timeline sort by position (fixed-width hex), which is LSN order.
        names.sort();
        doomed.ranges.push(WalRange {
            timeline,
            first: names.first().cloned().unwrap_or_default(),
            last: names.last().cloned().unwrap_or_default(),
            files: names.len() as u64,
        });
    }
    doomed
}

fn human_duration(seconds: i64) -> String {
    let (d, h, m) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

impl Report for Expired {
    fn text(&self) -> String {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let mut out = format!(
            "expire of stanza {}{}\n",
            self.stanza,
            if self.dry_run {
                " (dry run: nothing changed)"
            } else {
                ""
            }
        );
        for k in &self.kept {
            out.push_str(&format!(
                "  keep   backup {} ({})\n",
                k.id,
                k.because.join(", ")
            ));
        }
        for id in &self.expired_backups {
            out.push_str(&format!("  {verb} backup {id}\n"));
        }
        for r in &self.wal {
            out.push_str(&format!(
                "  {verb} WAL of timeline {}: {} .. {} ({} files)\n",
                r.timeline, r.first, r.last, r.files
            ));
        }
        for tli in &self.histories {
            out.push_str(&format!("  {verb} history file {tli:08X}.history\n"));
        }
        if let Some(why) = &self.wal_held {
            out.push_str(&format!("  no WAL removed: {why}\n"));
        }
        match &self.gc.sweep_skipped {
            Some(why) if !self.dry_run => {
                out.push_str(&format!("  blobs: none removed, {why}\n"))
            }
            _ => out.push_str(&format!(
                "  blobs: {verb} {} unreferenced ({:.1} MiB) of {}; {} unreferenced but younger than the grace kept; {} stale temporary files\n",
                self.gc.removed,
                self.gc.removed_bytes as f64 / (1 << 20) as f64,
                self.gc.blobs,
                self.gc.young_kept,
                self.gc.temp_files
            )),
        }
        if let (Some(since), Some(window)) = (self.restorable_since, self.guaranteed_window_seconds)
        {
            out.push_str(&format!(
                "recovery window {}: every moment since {} is restorable (while the archived WAL after it is continuous)",
                if self.dry_run { "that would remain" } else { "guaranteed" },
                since.format("%Y-%m-%d %H:%M:%S UTC"),
            ));
            out.push_str(&format!(" — {}", human_duration(window)));
            if let Some(configured) = self.configured_window_seconds {
                out.push_str(&format!(", configured {}", human_duration(configured)));
            }
            out.push('\n');
        }
        if let Some(short) = self.window_short_seconds {
            out.push_str(&format!(
                "WARNING: the backups do not reach back as far as the configured window yet: {} short; nothing was expired for the window\n",
                human_duration(short)
            ));
        }
        for w in &self.warnings {
            out.push_str(&format!("WARNING: {w}\n"));
        }
        out
    }

    fn json(&self) -> String {
        json_lines(self)
    }
}
