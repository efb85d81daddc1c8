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
//! Memory does not grow with the archived WAL: the backup records and the history files
//! are read whole (few), the WAL index is walked once, a page at a time, one archived
//! position at a time (`tidemark_store::wal_walk`). What a position loses is decided there
//! (`tidemark_recovery::retention::WalKeep`) and removed a batch at a time as the walk
//! passes; claims wait in a temporary file until every entry is gone, history files until
//! the walk has seen which timelines keep WAL. The same walk checks the line to now for
//! gaps after the window's backup (`tidemark_recovery::continuity`): after a gap, the
//! guaranteed window starts at the oldest kept backup that begins after it (none: no
//! window), the report names the gap, and nothing more is removed than without it.
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
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use tidemark_recovery::continuity::{Gap, LineGaps};
use tidemark_recovery::retention::{self, PolicyError, RetainedBackup, RetentionDecision, WalKeep};
use tidemark_recovery::snapshot;
use tidemark_store::backend::{ObjectMeta, DELETE_BATCH};
use tidemark_store::backup::{backups_prefix, parse_backup_key};
use tidemark_store::catalog::{self, parse_wal_key, Stanza};
use tidemark_store::gc::{self, GcReport, GcRequest, GcStep, WalExclusion};
use tidemark_store::pg::{SegmentSize, WalFileName};
use tidemark_store::wal_content::parse_wal_content_key;
use tidemark_store::wal_walk::WalIndexWalk;
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

/// A stretch of WAL missing on the line to now.
#[derive(Clone, Debug, Serialize)]
pub struct WalGap {
    /// The timeline whose file the first missing segment is expected in.
    pub timeline: u32,
    /// The first missing file.
    pub first: String,
    /// The last missing file.
    pub last: String,
    /// How many segments are missing.
    pub segments: u64,
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
    /// Every moment from this one on stays restorable (from `window_from_backup`): the
    /// archived WAL after it was checked for gaps on the line to now. `None` when a gap
    /// leaves no moment guaranteed (see `wal_gaps`).
    pub restorable_since: Option<DateTime<Utc>>,
    /// The backup the guaranteed window replays from.
    pub window_from_backup: Option<String>,
    /// The recovery window that guarantees, in seconds.
    pub guaranteed_window_seconds: Option<i64>,
    /// The configured window, in seconds.
    pub configured_window_seconds: Option<i64>,
    /// How far short of the configured window the backups fall, in seconds (none are old
    /// enough yet: nothing was expired for the window).
    pub window_short_seconds: Option<i64>,
    /// WAL missing on the line to now after the window's start (each also a warning):
    /// the guaranteed window starts after the last one.
    pub wal_gaps: Vec<WalGap>,
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
    limit_malloc_arenas();
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

    // The backup records and the history files (few); the WAL index is walked below, a
    // page at a time, and never held.
    let cluster = repo.require_cluster(stanza).await?;
    let backup_keys = repo.backend().list(&backups_prefix(stanza)).await?;
    let listing = repo.backups(stanza).await?;
    let history_listing = repo
        .backend()
        .list(&catalog::wal_history_prefix(stanza))
        .await?;
    let loaded =
        snapshot::build_index_only(&repo, stanza, &cluster, &listing, &history_listing).await?;
    let snapshot = &loaded.snapshot;
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

    // Which backup records go: removed first (a backup without its record does not
    // exist).
    let mut doomed_backups: Vec<Key> = Vec::new();
    if let Some(decision) = &decision {
        let expired: BTreeSet<&str> = decision.expired.iter().map(String::as_str).collect();
        doomed_backups = backup_keys
            .iter()
            .filter(|m| parse_backup_key(&m.key).is_some_and(|(id, _)| expired.contains(id)))
            .map(|m| m.key.clone())
            .collect();
    }
    if !args.dry_run {
        repo.backend().delete_many(&doomed_backups).await?;
    }

    // The WAL index, one position at a time: what goes is removed as the walk passes it
    // (entries and sidecars now, claims once every entry is gone, history files last),
    // the line to now is checked for gaps.
    let mut rule = WalRule {
        stanza: stanza.clone(),
        keep: None,
        segment_size: SegmentSize::new(snapshot.segment_size).ok(),
        claims_before: now - chrono_grace(settings),
        histories: BTreeSet::new(),
    };
    let mut wal_held = None;
    let mut walked = WalWalked::default();
    if let Some(decision) = &decision {
        match WalKeep::new(snapshot, decision) {
            Ok(keep) => rule.keep = Some(keep),
            Err(why) => wal_held = Some(why),
        }
        walked = walk_wal(&repo, snapshot, decision, &mut rule, args.dry_run).await?;
    }
    tracing::info!(
        "expire: {} backup records, {} WAL keys {}",
        doomed_backups.len(),
        walked.keys,
        if args.dry_run { "to remove" } else { "removed" }
    );

    // The window, told truthfully: replay stops at a gap.
    let guaranteed = decision.as_ref().and_then(|d| {
        retention::guaranteed_after_gaps(snapshot, d, walked.line, &walked.gaps, now)
    });
    if let (Some(d), false) = (&decision, walked.gaps.is_empty()) {
        let after = match &guaranteed {
            Some(g) => format!(
                "the guaranteed window starts at backup {}'s consistent point ({}), not at backup {}'s",
                g.from_backup,
                g.restorable_since.format("%Y-%m-%d %H:%M:%S UTC"),
                d.continuous_from
            ),
            None => "no kept backup starts after it: no recovery window is guaranteed".into(),
        };
        for g in &walked.gaps {
            warnings.push(format!(
                "WAL is missing on the line to timeline {} after backup {}'s start: timeline {}, {} .. {} ({} segments); no restore crosses it, so {after}",
                walked.line,
                d.continuous_from,
                g.timeline,
                g.first,
                g.last,
                g.segments()
            ));
        }
    }
    if let Some(why) = &walked.unchecked {
        warnings.push(why.clone());
    }

    let gc_request = GcRequest {
        stanza: stanza.clone(),
        now,
        grace: chrono_grace(settings),
        dry_run: args.dry_run,
        excluded: doomed_backups.iter().cloned().collect(),
        // Only a dry run needs it: a real run has removed those keys, and an entry a push
        // writes at such a position meanwhile must keep its blob.
        wal_excluded: args
            .dry_run
            .then(|| Arc::new(rule) as Arc<dyn WalExclusion>),
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
        wal: walked.ranges(),
        wal_keys: walked.keys,
        histories: walked.histories.clone(),
        restorable_since: guaranteed.as_ref().map(|g| g.restorable_since),
        window_from_backup: guaranteed.as_ref().map(|g| g.from_backup.clone()),
        guaranteed_window_seconds: guaranteed.as_ref().map(|g| g.window.num_seconds()),
        configured_window_seconds: policy.window.map(|w| w.num_seconds()),
        window_short_seconds: window.and_then(|d| {
            d.window_short_of
                .map(|w| (w - d.guaranteed_window).num_seconds().max(0))
        }),
        wal_gaps: walked
            .gaps
            .iter()
            .map(|g| WalGap {
                timeline: g.timeline,
                first: g.first.clone(),
                last: g.last.clone(),
                segments: g.segments(),
            })
            .collect(),
        wal_held,
        gc,
        requests: repo.backend().requests_sent(),
        warnings,
    })
}

/// Keeps expire's memory flat whatever the repository's size. A local repository's
/// removals run on threads started per batch, and glibc gives new threads arenas of their
/// own that keep what was freed in them: peak RSS grew by about 2 MiB per doubling of the
/// archived segments (16.8 MiB at 5,000, 23.2 MiB at 40,000), up to a cap of eight arenas
/// per core. Two arenas keep it flat (17.4 MiB at 40,000) and cost nothing measurable:
/// the removal threads wait on the disk, not on the allocator.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; glibc takes its own lock.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn usage(message: String) -> Failure {
    Failure::Recovery(tidemark_recovery::Error::Usage(message))
}

fn chrono_grace(settings: &Settings) -> Duration {
    Duration::from_std(settings.gc_grace).unwrap_or(Duration::MAX)
}

/// Which WAL index keys go, decided one archived position at a time (the same answer for
/// the walk that removes them and, in a dry run, for the collection that treats them as
/// gone).
#[derive(Debug)]
struct WalRule {
    stanza: Stanza,
    /// The retention rules; `None`: no WAL goes.
    keep: Option<WalKeep>,
    segment_size: Option<SegmentSize>,
    /// A claim whose name has no entry goes only when older than this: a push may be at
    /// work between its claim and its entry.
    claims_before: DateTime<Utc>,
    /// The timelines whose history file goes (known once the walk is done).
    histories: BTreeSet<u32>,
}

/// What goes of one position.
#[derive(Debug, Default)]
struct PositionDoom {
    /// Index entries and their `.content` sidecars.
    entries: Vec<Key>,
    /// Claims.
    claims: Vec<Key>,
}

impl WalRule {
    /// (timeline, segment number) of a segment-shaped name.
    fn position(&self, name: &WalFileName) -> Option<(u32, u64)> {
        let seg = name.segment()?;
        Some((seg.timeline.0, seg.segment_number(self.segment_size?).ok()?))
    }

    /// What goes of `keys` (one position of the index, see `WalIndexWalk`).
    fn doomed(&self, keys: &[ObjectMeta]) -> PositionDoom {
        let mut doom = PositionDoom::default();
        let Some(keep) = &self.keep else {
            return doom;
        };
        let with_entry: BTreeSet<String> = keys
            .iter()
            .filter_map(|m| parse_wal_key(&m.key))
            .map(|(name, _)| name.to_string())
            .collect();
        for m in keys {
            let Some(name) = wal_name_of(&m.key) else {
                continue;
            };
            let goes = match &name {
                WalFileName::History(tli) => self.histories.contains(&tli.0),
                other => self
                    .position(other)
                    .is_some_and(|(tli, segno)| !keep.stays(tli, segno)),
            };
            if !goes {
                continue;
            }
            if m.key.as_str().ends_with(".claim") {
                let orphan = !with_entry.contains(&name.to_string());
                if !orphan || m.last_modified.is_some_and(|t| t <= self.claims_before) {
                    doom.claims.push(m.key.clone());
                }
            } else {
                doom.entries.push(m.key.clone());
            }
        }
        doom
    }
}

impl WalExclusion for WalRule {
    fn excluded(&self, stanza: &Stanza, position: &[ObjectMeta]) -> Vec<Key> {
        if *stanza != self.stanza {
            return Vec::new();
        }
        let doom = self.doomed(position);
        doom.entries.into_iter().chain(doom.claims).collect()
    }
}

/// The file name a WAL index key (entry, sidecar or claim) is about.
fn wal_name_of(key: &Key) -> Option<WalFileName> {
    if let Some((name, _)) = parse_wal_key(key).or_else(|| parse_wal_content_key(key)) {
        return Some(name);
    }
    key.file_name().strip_suffix(".claim")?.parse().ok()
}

/// What the walk over the WAL index found and removed (or would).
#[derive(Debug, Default)]
struct WalWalked {
    /// Per timeline: the first and last file name removed, and the index entries removed.
    removed: BTreeMap<u32, (String, String, u64)>,
    /// WAL index keys removed (entries, sidecars, claims).
    keys: u64,
    /// The timelines whose history file was removed.
    histories: Vec<u32>,
    /// The timeline that leads to now (the newest the archive shows).
    line: u32,
    /// The gaps on that line after the window's start.
    gaps: Vec<Gap>,
    /// Why the line was not checked, when it was not.
    unchecked: Option<String>,
}

impl WalWalked {
    fn ranges(&self) -> Vec<WalRange> {
        self.removed
            .iter()
            .map(|(timeline, (first, last, files))| WalRange {
                timeline: *timeline,
                first: first.clone(),
                last: last.clone(),
                files: *files,
            })
            .collect()
    }
}

/// Keys removed per call to `delete_many`: eight full DeleteObjects requests on S3, and
/// on a local folder enough folders (a WAL index folder holds one log file's 256
/// segments) for its removals to run side by side (an unlink waits on the disk). About
/// 1 MiB of keys, whatever the archive holds.
const REMOVAL_BATCH: usize = 8 * DELETE_BATCH;

/// Keys removed a batch at a time ([`REMOVAL_BATCH`]), or only counted in a dry run.
struct Removals<'a> {
    repo: &'a tidemark_store::Repo,
    dry_run: bool,
    batch: Vec<Key>,
    count: u64,
}

impl<'a> Removals<'a> {
    fn new(repo: &'a tidemark_store::Repo, dry_run: bool) -> Self {
        Removals {
            repo,
            dry_run,
            batch: Vec::new(),
            count: 0,
        }
    }

    async fn add(&mut self, key: Key) -> Result<(), Failure> {
        self.count += 1;
        if self.dry_run {
            return Ok(());
        }
        self.batch.push(key);
        if self.batch.len() >= REMOVAL_BATCH {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Failure> {
        if !self.batch.is_empty() {
            self.repo.backend().delete_many(&self.batch).await?;
            self.batch.clear();
        }
        Ok(())
    }
}

/// Claims to remove once every entry is gone, written to an unnamed temporary file (one
/// line each) so that memory does not grow with them.
struct ClaimSpill {
    file: std::io::BufWriter<std::fs::File>,
    count: u64,
}

impl ClaimSpill {
    fn new() -> Result<Self, Failure> {
        let file = tempfile::tempfile().map_err(|e| spill_error("create", e))?;
        Ok(ClaimSpill {
            file: std::io::BufWriter::new(file),
            count: 0,
        })
    }

    fn add(&mut self, key: &Key) -> Result<(), Failure> {
        use std::io::Write;
        self.count += 1;
        writeln!(self.file, "{key}").map_err(|e| spill_error("write", e))
    }

    /// Removes every claim written, a batch at a time.
    async fn remove_all(self, removals: &mut Removals<'_>) -> Result<(), Failure> {
        use std::io::{BufRead, Seek};
        let mut file = self
            .file
            .into_inner()
            .map_err(|e| spill_error("write", e.into_error()))?;
        file.rewind().map_err(|e| spill_error("read", e))?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(|e| spill_error("read", e))?;
            let key = Key::new(line)?;
            removals.add(key).await?;
        }
        removals.flush().await
    }
}

fn spill_error(op: &'static str, source: std::io::Error) -> Failure {
    Failure::from(tidemark_store::Error::Io {
        op,
        path: std::env::temp_dir(),
        source,
    })
}

/// Walks the stanza's WAL index once (see the module doc): removes, or counts in a dry
/// run, what `rule` lets go, finds the history files no kept WAL needs, and checks the
/// line to now for gaps after the window's start.
async fn walk_wal(
    repo: &tidemark_store::Repo,
    snapshot: &tidemark_recovery::plan::CatalogSnapshot,
    decision: &RetentionDecision,
    rule: &mut WalRule,
    dry_run: bool,
) -> Result<WalWalked, Failure> {
    let mut walked = WalWalked::default();
    // Every line the window's backup is on, so that the one to now is checked whichever
    // it turns out to be (a timeline's segments come after its ancestors').
    let mut timelines: BTreeSet<u32> = snapshot.histories.keys().copied().collect();
    timelines.extend(
        snapshot
            .backups
            .iter()
            .flat_map(|b| [b.timeline, b.stop_timeline]),
    );
    timelines.insert(1);
    let mut lines: BTreeMap<u32, LineGaps> = timelines
        .iter()
        .filter_map(|&tli| {
            LineGaps::from_backup(snapshot, tli, &decision.continuous_from).map(|l| (tli, l))
        })
        .collect();
    let mut keeps_wal: BTreeSet<u32> = BTreeSet::new();
    let mut history_positions: Vec<Vec<ObjectMeta>> = Vec::new();
    let mut entries = Removals::new(repo, dry_run);
    let mut claims = ClaimSpill::new()?;
    let mut walk = WalIndexWalk::new(repo.backend().as_ref(), &rule.stanza);
    while let Some(keys) = walk.next_position().await? {
        let Some(name) = keys.iter().find_map(|m| wal_name_of(&m.key)) else {
            continue;
        };
        if matches!(name, WalFileName::History(_)) {
            // Decided once every segment is seen; few.
            history_positions.push(keys);
            continue;
        }
        let Some((tli, segno)) = rule.position(&name) else {
            continue;
        };
        // The segment itself, archived with one content (two are a conflict, which
        // restore refuses: missing, as the planner treats it).
        let contents: BTreeSet<_> = keys
            .iter()
            .filter_map(|m| parse_wal_key(&m.key))
            .filter(|(n, _)| matches!(n, WalFileName::Segment(_)))
            .map(|(_, digest)| digest)
            .collect();
        if contents.len() == 1 {
            timelines.insert(tli);
            for line in lines.values_mut() {
                line.archived(tli, segno);
            }
            if rule.keep.as_ref().is_none_or(|k| k.stays(tli, segno)) {
                keeps_wal.insert(tli);
            }
        }
        let doom = rule.doomed(&keys);
        for key in doom.entries {
            if let Some((name, _)) = parse_wal_key(&key) {
                let name = name.to_string();
                let range = walked
                    .removed
                    .entry(tli)
                    .or_insert_with(|| (name.clone(), name.clone(), 0));
                range.0 = range.0.clone().min(name.clone());
                range.1 = range.1.clone().max(name);
                range.2 += 1;
            }
            entries.add(key).await?;
        }
        for key in &doom.claims {
            claims.add(key)?;
        }
    }
    entries.flush().await?;
    // Claims once their entries are gone, then the history files.
    let mut removals = Removals::new(repo, dry_run);
    claims.remove_all(&mut removals).await?;
    if let Some(keep) = &rule.keep {
        rule.histories = keep
            .histories_to_expire(&keeps_wal, timelines.clone())
            .into_iter()
            .collect();
        walked.histories = rule.histories.iter().copied().collect();
    }
    let history_doom: Vec<PositionDoom> =
        history_positions.iter().map(|k| rule.doomed(k)).collect();
    for key in history_doom.iter().flat_map(|d| &d.claims) {
        removals.add(key.clone()).await?;
    }
    removals.flush().await?;
    for key in history_doom.into_iter().flat_map(|d| d.entries) {
        removals.add(key).await?;
    }
    removals.flush().await?;
    walked.keys = entries.count + removals.count;

    walked.line = timelines.last().copied().unwrap_or(1);
    match lines.remove(&walked.line) {
        Some(line) => walked.gaps = line.gaps().to_vec(),
        None => {
            walked.unchecked = Some(format!(
            "backup {} is not on the line to timeline {}: the WAL after it is not checked for gaps",
            decision.continuous_from, walked.line
        ))
        }
    }
    Ok(walked)
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
                "recovery window {}: every moment since {} is restorable (the archived WAL after it is continuous)",
                if self.dry_run { "that would remain" } else { "guaranteed" },
                since.format("%Y-%m-%d %H:%M:%S UTC"),
            ));
            out.push_str(&format!(" — {}", human_duration(window)));
            if let Some(configured) = self.configured_window_seconds {
                out.push_str(&format!(", configured {}", human_duration(configured)));
            }
            out.push('\n');
        }
        if self.restorable_since.is_none() && !self.wal_gaps.is_empty() {
            out.push_str(
                "no recovery window is guaranteed: WAL is missing after the newest kept backup's start (see the warnings)\n",
            );
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
