//! Point-in-time recovery end to end: `tidemark plan` and `tidemark restore <target>`
//! against real PostgreSQL servers, judged by an oracle computed from what the server said
//! while the workload ran, never from hard-coded results.
//!
//! The workload (one per test, shared by all of its targets): a cluster with 1 MiB WAL
//! segments archives into the repository with `archive-push` and commits marker rows one
//! transaction each. After each commit the test reads back the marker's xid
//! (`pg_current_xact_id()`), its commit time (`pg_xact_commit_timestamp`, with
//! `track_commit_timestamp = on`: the very timestamp of the commit record) and the insert
//! LSN after it. Around two backups it creates restore points (one name twice), switches
//! segments, and ends with `pg_switch_wal()` so that everything is archived. Markers are
//! committed one after another, so their commit records are in LSN order and their times
//! ascend; no marker commits while a backup runs.
//!
//! The oracle ([`Aim::expected`]) applies PostgreSQL's stop rules (xlogrecovery.c) to the
//! recorded facts: a time target stops before the first commit whose time is past it (`>`
//! inclusive, `>=` exclusive), an xid target at that xid's commit (after it, or before it
//! when exclusive), a name target after the first restore point of the name, an LSN target
//! taken from an insert LSN between two markers keeps the markers before it, `immediate` the
//! markers before the backup, `latest` all. Each restore is started (`--target-action
//! pause`: it stays in recovery, read through hot standby; `promote`; or `shutdown`: the
//! server must stop by itself saying so, and is then read by replaying to the target
//! again, paused) and must hold
//! EXACTLY the expected marker ids, from the backup the planner must choose (the newest
//! whose consistent point precedes the target).
//!
//! What is proven:
//! - the oracle: times strictly between commits (RFC 3339 in UTC, PostgreSQL's own
//!   `timestamptz` text, and a local time without offset read in tidemark's `TZ`), exact
//!   commit times inclusive and exclusive, an LSN, an xid inclusive and exclusive, a
//!   restore point, a repeated restore-point name (replay stops at the first),
//!   `immediate`, `latest`: on PostgreSQL 15 (local repository), on S3 (s3s-fs), and on
//!   PostgreSQL 16, 17 and 18. For each, `plan --json` chooses that backup and timeline,
//!   shows a time target's UTC instant, names (where it knows it) the very commit record a
//!   time or xid target stops at, and warns about a restore-point name only when it
//!   repeats; `restore` restores that backup and writes the timeline as a number;
//! - settings: the oracle's cluster carries other recovery settings when it is backed up
//!   (`recovery_target_name = 'nope'`, `recovery_target_inclusive = off` and
//!   `recovery_target_action = 'shutdown'` in `postgresql.conf`, `recovery_target_name =
//!   'rp-one'` in `postgresql.auto.conf` through `ALTER SYSTEM`; each restored copy is
//!   checked to still carry them), so every target above also proves that they change
//!   neither where replay stops nor what happens there;
//! - refusals, from `plan` and from `restore` alike: the refusal exit code, a message
//!   naming the problem and a nearest reachable point taken from the workload's facts, an
//!   absent data directory left absent and an empty one empty, the repository unchanged:
//!   a target before the first backup's consistent point, beyond the archived WAL, a time
//!   with no later commit (the last commit's own time, inclusive, and a second later), a
//!   segment missing in the middle (its index entry removed: from a copy of a local
//!   repository, in place on S3), and a missing history file (with `--target-timeline 2`
//!   and with the default `latest`);
//! - timelines: a restore promoted onto timeline 2 archives into the stanza and writes
//!   markers while the original goes on writing on timeline 1; a target on timeline 2 holds
//!   timeline 1's markers up to the fork and timeline 2's up to the target, and a target
//!   on timeline 1 after the fork (`--target-timeline 1`) holds only timeline 1's.
//!
//! When a test fails, `TIDEMARK_PITR_SELF_CHECK=1` runs the same workload and targets
//! with recovery settings written by hand instead of `plan` and the target options (see
//! [`self_check`]): if that passes, PostgreSQL agrees with the oracle and tidemark is wrong.
//!
//! Cost: every restore materializes a small backup and replays a few MiB (about 2 s with
//! the server start); a test shares its workload and repository between its targets.
//! Skips (or fails under `CI`) when a major's binaries or s3s-fs are missing.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tidemark_agent::exit;
use tidemark_pg::{Lsn, PgTimestamp};

use crate::backup::{backup_ok, local_tidemark, s3_tidemark, wait_until, PASSWORD};
use crate::harness::pg::{pg_bin, server_bin, Cluster, ClusterOptions, TestDir};
use crate::harness::s3::S3Server;
use crate::harness::tidemark::{repo_snapshot, snapshot_diff, Run, Tidemark};
use crate::skip_or_fail;

/// WAL segment size of every cluster here: switches are cheap and the workload spans
/// several segments, so that one can go missing in the middle.
const SEGMENT_MB: u64 = 1;

/// How long a restored server may take to reach its target.
const RECOVERY_WITHIN: Duration = Duration::from_secs(120);

/// One committed marker row and what the server said about its commit.
#[derive(Clone, Debug)]
pub(crate) struct Marker {
    /// The row's id (unique across timelines).
    pub(crate) id: u32,
    /// The xid of its transaction, as a target names it.
    pub(crate) xid: u32,
    /// Its commit record's time.
    pub(crate) commit: PgTimestamp,
    /// The insert LSN read after the commit: past the commit record, before the next
    /// marker's first record.
    pub(crate) lsn_after: Lsn,
}

/// A backup of the workload.
#[derive(Clone, Debug)]
struct BackupFact {
    id: String,
    /// Markers committed before it started (none commits while it runs).
    markers_before: usize,
}

/// A restore point of the workload.
#[derive(Clone, Debug)]
struct RestorePoint {
    name: String,
    /// The end of its record, as `pg_create_restore_point` returned it.
    end: Lsn,
    /// Markers committed before it.
    markers_before: usize,
}

/// Everything the workload recorded on one timeline, in commit order.
#[derive(Clone, Debug, Default)]
struct History {
    markers: Vec<Marker>,
    backups: Vec<BackupFact>,
    restore_points: Vec<RestorePoint>,
}

/// Drives a cluster's workload and records what it says.
struct Workload<'a> {
    c: &'a Cluster,
    tm: &'a Tidemark,
    history: History,
}

impl<'a> Workload<'a> {
    /// Creates the marker table on `c`.
    fn start(c: &'a Cluster, tm: &'a Tidemark) -> Workload<'a> {
        c.psql("create table marks(id int primary key, xid xid8 not null)");
        Workload {
            c,
            tm,
            history: History::default(),
        }
    }

    /// Continues on `c` (a promoted copy) after `history`.
    fn resume(c: &'a Cluster, tm: &'a Tidemark, history: History) -> Workload<'a> {
        Workload { c, tm, history }
    }

    /// Commits markers `ids`, one transaction each, and records their facts.
    fn markers(&mut self, ids: impl IntoIterator<Item = u32>) {
        for id in ids {
            let marker = commit_marker(self.c, id);
            if let Some(last) = self.history.markers.last() {
                // The oracle's stop rules rely on this (see the module doc).
                assert!(
                    marker.commit > last.commit && marker.lsn_after > last.lsn_after,
                    "marker {id} does not follow marker {}: {marker:?} after {last:?}",
                    last.id
                );
            }
            self.history.markers.push(marker);
        }
    }

    /// Takes a backup (through the tidemark runner's repository).
    fn backup(&mut self) {
        let report = backup_ok(self.tm, self.c, &[]);
        self.history.backups.push(BackupFact {
            id: report["id"].as_str().expect("backup id").to_string(),
            markers_before: self.history.markers.len(),
        });
    }

    /// Creates restore point `name`.
    fn restore_point(&mut self, name: &str) {
        let end = self
            .c
            .psql(&format!("select pg_create_restore_point('{name}')"));
        self.history.restore_points.push(RestorePoint {
            name: name.to_string(),
            end: Lsn::parse(&end).expect("LSN"),
            markers_before: self.history.markers.len(),
        });
    }

    /// Completes the current segment with no transaction (a commit would move the last
    /// commit time) and waits until it is archived.
    fn switch_and_archive(&self) {
        let last = self.c.psql("select pg_walfile_name(pg_switch_wal())");
        self.c.wait_archived(&last, Duration::from_secs(60));
    }
}

/// Commits marker `id` and reads back its xid, commit time and the LSN after it.
pub(crate) fn commit_marker(c: &Cluster, id: u32) -> Marker {
    c.psql(&format!(
        "insert into marks(id, xid) values ({id}, pg_current_xact_id())"
    ));
    let row = c.psql(&format!(
        "select xid::text, \
                (extract(epoch from pg_xact_commit_timestamp(xid::text::xid)) * 1000000)::bigint, \
                pg_current_wal_insert_lsn() \
         from marks where id = {id}"
    ));
    let f: Vec<&str> = row.split('|').collect();
    assert_eq!(f.len(), 3, "marker {id}: {row:?}");
    let xid: u64 = f[0].parse().expect("xid");
    Marker {
        id,
        xid: u32::try_from(xid).expect("a fresh cluster's xids fit in 32 bits"),
        commit: PgTimestamp::from_unix_micros(f[1].parse().expect("commit time")),
        lsn_after: Lsn::parse(f[2]).expect("LSN"),
    }
}

/// A recovery target as the test asks for it.
#[derive(Clone, Debug)]
enum Aim {
    /// `--target-time` (written as `text`).
    Time {
        at: PgTimestamp,
        text: String,
        exclusive: bool,
    },
    Lsn(Lsn),
    Xid {
        xid: u32,
        exclusive: bool,
    },
    Name(String),
    /// `--target immediate --backup <the backup at this index>`.
    Immediate(usize),
    Latest,
}

/// `2026-12-06T07:10:00.123456Z`.
pub(crate) fn rfc3339(t: PgTimestamp) -> String {
    let (y, mo, d, h, mi, s, us) = t.to_utc_parts();
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}Z")
}

/// An RFC 3339 UTC instant written with `Z` and without trailing zeros in its fraction,
/// so that two spellings of one instant compare equal.
pub(crate) fn rfc3339_normalized(text: &str) -> String {
    let utc = text
        .strip_suffix("+00:00")
        .map_or(text.to_string(), |t| format!("{t}Z"));
    let Some((whole, fraction)) = utc.strip_suffix('Z').and_then(|t| t.split_once('.')) else {
        return utc;
    };
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{whole}Z")
    } else {
        format!("{whole}.{fraction}Z")
    }
}

impl Aim {
    /// A time target written as RFC 3339 in UTC.
    fn time(at: PgTimestamp, exclusive: bool) -> Aim {
        Aim::Time {
            at,
            text: rfc3339(at),
            exclusive,
        }
    }

    /// A time target halfway between two markers' commits.
    fn between(a: &Marker, b: &Marker) -> Aim {
        assert!(b.commit.0 - a.commit.0 >= 2, "{a:?} and {b:?} too close");
        Aim::time(PgTimestamp((a.commit.0 + b.commit.0) / 2), false)
    }

    /// The target options, as given to `plan` and `restore`.
    fn args(&self, history: &History) -> Vec<String> {
        let mut args: Vec<String> = match self {
            Aim::Time { text, .. } => vec!["--target-time".into(), text.clone()],
            Aim::Lsn(lsn) => vec!["--target-lsn".into(), lsn.to_string()],
            Aim::Xid { xid, .. } => vec!["--target-xid".into(), xid.to_string()],
            Aim::Name(name) => vec!["--target-name".into(), name.clone()],
            Aim::Immediate(b) => vec![
                "--target".into(),
                "immediate".into(),
                "--backup".into(),
                history.backups[*b].id.clone(),
            ],
            Aim::Latest => vec!["--target".into(), "latest".into()],
        };
        if matches!(
            self,
            Aim::Time {
                exclusive: true,
                ..
            } | Aim::Xid {
                exclusive: true,
                ..
            }
        ) {
            args.push("--target-exclusive".into());
        }
        args
    }

    /// How many of `history`'s markers replay keeps, by PostgreSQL's stop rules.
    fn kept(&self, history: &History) -> usize {
        let markers = &history.markers;
        match self {
            Aim::Time { at, exclusive, .. } => markers
                .iter()
                .position(|m| {
                    if *exclusive {
                        m.commit >= *at
                    } else {
                        m.commit > *at
                    }
                })
                .unwrap_or(markers.len()),
            Aim::Lsn(lsn) => markers.iter().take_while(|m| m.lsn_after <= *lsn).count(),
            Aim::Xid { xid, exclusive } => {
                let at = markers
                    .iter()
                    .position(|m| m.xid == *xid)
                    .unwrap_or_else(|| panic!("no marker has xid {xid}"));
                if *exclusive {
                    at
                } else {
                    at + 1
                }
            }
            Aim::Name(name) => {
                history
                    .restore_points
                    .iter()
                    .find(|rp| &rp.name == name)
                    .unwrap_or_else(|| panic!("no restore point {name}"))
                    .markers_before
            }
            Aim::Immediate(b) => history.backups[*b].markers_before,
            Aim::Latest => markers.len(),
        }
    }

    /// The record replay stops at, as far as the facts place it: for a time or xid
    /// target a marker's commit record (its time, and its start between the marker before
    /// it and the LSN after it; between two markers nothing else commits, so the first
    /// commit past a time is a marker's), for a name the FIRST restore point of that name
    /// (its start between the marker before it and the end it was created with).
    fn stop_record(&self, history: &History) -> Option<StopRecord> {
        let kept = self.kept(history);
        let after = |n: usize| {
            n.checked_sub(1)
                .map_or(Lsn(0), |i| history.markers[i].lsn_after)
        };
        let commit = |at: usize| {
            let m = history.markers.get(at)?;
            Some(StopRecord {
                what: format!("marker {}'s commit", m.id),
                after: after(at),
                before: m.lsn_after,
                time: Some(m.commit),
            })
        };
        match self {
            Aim::Time { .. } => commit(kept),
            Aim::Xid { exclusive, .. } => commit(if *exclusive { kept } else { kept - 1 }),
            Aim::Name(name) => {
                let rp = history.restore_points.iter().find(|rp| &rp.name == name)?;
                Some(StopRecord {
                    what: format!("the first restore point {name}"),
                    after: after(rp.markers_before),
                    before: rp.end,
                    time: None,
                })
            }
            _ => None,
        }
    }

    /// The marker ids the restored cluster must hold.
    fn expected(&self, history: &History) -> Vec<u32> {
        history.markers[..self.kept(history)]
            .iter()
            .map(|m| m.id)
            .collect()
    }

    /// The backup the planner must choose: the one named for `immediate`, else the newest
    /// whose consistent point precedes the target. No marker commits during a backup, and
    /// no target here lies between a backup and the marker before it, so that is the
    /// newest taken when at most the kept markers were committed.
    fn backup<'h>(&self, history: &'h History) -> &'h BackupFact {
        if let Aim::Immediate(b) = self {
            return &history.backups[*b];
        }
        let kept = self.kept(history);
        history
            .backups
            .iter()
            .rev()
            .find(|b| b.markers_before <= kept)
            .unwrap_or_else(|| panic!("{self:?} lies before every backup"))
    }
}

/// `TIDEMARK_PITR_SELF_CHECK` set: check the oracle against PostgreSQL alone, without
/// `plan` and the target options of `restore` (when a test fails, this says whether the
/// oracle or tidemark is wrong). Refusals are not checked then.
fn self_check() -> bool {
    std::env::var_os("TIDEMARK_PITR_SELF_CHECK").is_some()
}

/// What PostgreSQL does at the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Pause,
    Promote,
    Shutdown,
}

impl Action {
    fn arg(self) -> &'static str {
        match self {
            Action::Pause => "pause",
            Action::Promote => "promote",
            Action::Shutdown => "shutdown",
        }
    }
}

/// One target to restore to, and how.
#[derive(Clone, Debug)]
struct Case {
    label: &'static str,
    aim: Aim,
    action: Action,
    /// More restore options (`--target-timeline 1`).
    extra: Vec<String>,
    /// The timeline the plan must follow.
    timeline: u32,
    /// `TZ` for tidemark (a time target written without offset is read in it).
    zone: Option<&'static str>,
}

impl Case {
    fn new(label: &'static str, aim: Aim, action: Action) -> Case {
        Case {
            label,
            aim,
            action,
            extra: Vec::new(),
            timeline: 1,
            zone: None,
        }
    }
}

/// Where restores go and with what.
struct Bench<'a> {
    t: &'a TestDir,
    tm: &'a Tidemark,
    /// Server binaries of the cluster's major (`None`: PostgreSQL 15's).
    bin: Option<PathBuf>,
}

impl Bench<'_> {
    /// Plans `case` (exit 0, naming the backup), restores it into a fresh data directory,
    /// starts the server, waits until it has reached the target and asserts it holds
    /// exactly the expected markers. The restored copy is removed afterwards.
    fn check(&self, case: &Case, history: &History) {
        let expected = case.aim.expected(history);
        let mut target = case.aim.args(history);
        target.extend(case.extra.iter().cloned());

        let name = format!("restore-{}", case.label);
        if self_check() {
            self.restore_by_hand(&name, case, history);
        } else {
            self.plan_and_restore(&name, case, history, target);
        }
        assert_other_targets_backed_up(&self.t.path().join(&name).join("data"));
        let got = self.start_and_read(&name, case.action);
        assert_eq!(
            got,
            expected,
            "{}: {:?} ({} {:?}): the restored cluster holds other markers than those \
             committed up to the target",
            case.label,
            case.aim,
            case.action.arg(),
            case.extra
        );
        std::fs::remove_dir_all(self.t.path().join(&name)).expect("remove restored copy");
    }

    /// `plan --json` (exit 0, naming the backup), then `restore` into `<dir>/<name>/data`
    /// with the target, which must restore that backup.
    fn plan_and_restore(&self, name: &str, case: &Case, history: &History, target: Vec<String>) {
        let label = case.label;
        let backup = case.aim.backup(history);
        let tm = match case.zone {
            Some(zone) => self.tm.clone().with_env("TZ", zone),
            None => self.tm.clone(),
        };
        let mut plan_args = vec!["plan".to_string(), "--json".into()];
        plan_args.extend(target.iter().cloned());
        let run = tm.run(&plan_args);
        assert_eq!(run.code, 0, "{label}: plan failed: {run:?}");
        let plan: Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("{label}: plan --json is not JSON ({e}): {run:?}"));
        assert_eq!(
            plan["backup"]["id"],
            backup.id.as_str(),
            "{label}: {plan:#}"
        );
        assert_eq!(plan["timeline"], case.timeline, "{label}: {plan:#}");
        if let Some(stop) = case.aim.stop_record(history) {
            stop.assert_planned(label, &plan["stop"]);
        }
        if let Aim::Time { at, .. } = &case.aim {
            let resolved = plan["target"]["resolved_utc"].as_str().unwrap_or_default();
            assert_eq!(
                rfc3339_normalized(resolved),
                rfc3339_normalized(&rfc3339(*at)),
                "{label}: the plan shows another instant: {plan:#}"
            );
        }
        if let Aim::Name(name) = &case.aim {
            // A name that repeats is warned about; one that does not, not.
            let repeats = history
                .restore_points
                .iter()
                .filter(|rp| &rp.name == name)
                .count()
                > 1;
            let warned = plan["warnings"]
                .as_array()
                .expect("warnings")
                .iter()
                .any(|w| w.as_str().unwrap_or_default().contains(name.as_str()));
            assert_eq!(warned, repeats, "{label}: repeated {repeats}: {plan:#}");
        }

        let pgdata = self.t.path().join(name).join("data");
        let mut args = vec![
            "restore".to_string(),
            "--pgdata".into(),
            pgdata.display().to_string(),
            "--target-action".into(),
            case.action.arg().into(),
        ];
        args.extend(target);
        let run = tm.run(&args);
        assert_eq!(run.code, 0, "{label}: restore failed: {run:?}");
        assert!(
            run.stdout
                .contains(&format!("restored backup {}", backup.id)),
            "{label}: expected backup {} to be restored: {}",
            backup.id,
            run.stdout
        );
        let auto = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
        assert!(
            auto.contains(&format!(
                "\nrecovery_target_timeline = '{}'\n",
                case.timeline
            )),
            "{label}: the timeline is not written as a number: {auto}"
        );
    }

    /// The self-check (see [`self_check`]): `restore --backup` of the backup the planner
    /// must choose, with the recovery settings appended to `postgresql.auto.conf` by hand.
    fn restore_by_hand(&self, name: &str, case: &Case, history: &History) {
        let backup = case.aim.backup(history);
        let pgdata = self.t.path().join(name).join("data");
        self.tm.ok(&[
            "restore",
            "--pgdata",
            pgdata.to_str().unwrap(),
            "--backup",
            &backup.id,
        ]);
        let (kind, value) = match &case.aim {
            Aim::Time { at, .. } => ("recovery_target_time", at.to_string()),
            Aim::Lsn(lsn) => ("recovery_target_lsn", lsn.to_string()),
            Aim::Xid { xid, .. } => ("recovery_target_xid", xid.to_string()),
            Aim::Name(name) => ("recovery_target_name", name.clone()),
            Aim::Immediate(_) => ("recovery_target", "immediate".into()),
            // No target: replay to the end, then promote whatever the action.
            Aim::Latest => ("recovery_target", String::new()),
        };
        let inclusive = !case
            .aim
            .args(history)
            .iter()
            .any(|a| a == "--target-exclusive");
        let timeline = match case.extra.iter().position(|a| a == "--target-timeline") {
            Some(i) => case.extra[i + 1].clone(),
            None => "latest".into(),
        };
        let lines = format!(
            "{kind} = '{value}'\nrecovery_target_inclusive = {inclusive}\n\
             recovery_target_action = '{}'\nrecovery_target_timeline = '{timeline}'\n",
            case.action.arg()
        );
        use std::io::Write;
        let conf = pgdata.join("postgresql.auto.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| f.write_all(lines.as_bytes()))
            .unwrap_or_else(|e| panic!("append to {}: {e}", conf.display()));
    }

    /// Starts the copy restored into `<dir>/<name>/data`, waits for the target action
    /// and returns the marker ids it holds.
    fn start_and_read(&self, name: &str, action: Action) -> Vec<u32> {
        let mut r = Cluster::adopt(self.t, name, self.bin.clone(), Some(PASSWORD), &[]);
        if action == Action::Shutdown {
            shut_down_at_the_target(&r);
            // To read what it holds, replay again to the target (from its last restart
            // point), pausing there this time: the later line wins.
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(r.data_dir().join("postgresql.auto.conf"))
                .and_then(|mut f| f.write_all(b"recovery_target_action = 'pause'\n"))
                .expect("append to postgresql.auto.conf");
            return self.read_paused(r);
        }
        r.start();
        let (what, probe, want) = match action {
            Action::Pause => (
                "replay paused at the target",
                "select pg_get_wal_replay_pause_state()",
                "paused",
            ),
            Action::Promote => ("promotion at the target", "select pg_is_in_recovery()", "f"),
            Action::Shutdown => unreachable!("handled above"),
        };
        wait_until_or_log(&r, what, || r.try_psql(probe).as_deref() == Ok(want));
        if action == Action::Pause {
            assert_eq!(
                r.psql("select pg_is_in_recovery()"),
                "t",
                "paused in recovery"
            );
        }
        // Dropping it stops it at once (`-m immediate`): only what it holds matters here.
        marker_ids(&r)
    }

    /// Starts `r` to pause at its target and returns the marker ids it holds.
    fn read_paused(&self, mut r: Cluster) -> Vec<u32> {
        r.start();
        wait_until_or_log(&r, "replay paused at the target", || {
            r.try_psql("select pg_get_wal_replay_pause_state()")
                .as_deref()
                == Ok("paused")
        });
        marker_ids(&r)
    }

    /// Asserts that `restore` (and `plan`) refuse `target` with the refusal code and a
    /// message holding every one of `needles`, and that no data directory is left.
    fn refused(&self, label: &str, target: &[String], needles: &[&str]) {
        if self_check() {
            return;
        }
        let mut plan_args = vec!["plan".to_string()];
        plan_args.extend(target.iter().cloned());
        let plan = self.tm.run(&plan_args);
        assert_refusal(label, "plan", &plan, needles);

        // Into an absent data directory (it stays absent) and an empty one (it stays empty).
        let absent = self.t.path().join(format!("refused-{label}"));
        let empty = self.t.mkdir(&format!("refused-{label}-empty"));
        for pgdata in [&absent, &empty] {
            let mut args = vec![
                "restore".to_string(),
                "--pgdata".into(),
                pgdata.display().to_string(),
            ];
            args.extend(target.iter().cloned());
            let run = self.tm.run(&args);
            assert_refusal(label, "restore", &run, needles);
        }
        assert!(
            !absent.exists(),
            "{label}: a refused restore left {}",
            absent.display()
        );
        let left: Vec<_> = std::fs::read_dir(&empty).unwrap().collect();
        assert!(left.is_empty(), "{label}: a refused restore wrote {left:?}");
    }
}

/// Where the facts place the record replay stops at.
#[derive(Debug)]
struct StopRecord {
    /// Which record, in words.
    what: String,
    /// Its start lies at or after this LSN…
    after: Lsn,
    /// …and before this one.
    before: Lsn,
    /// Its time, for a commit.
    time: Option<PgTimestamp>,
}

impl StopRecord {
    /// The plan's stop point, where it names one (a summary from the content index may
    /// only name the segment), is this record.
    fn assert_planned(&self, label: &str, planned: &Value) {
        if let (Some(time), Some(expected)) = (planned["time"].as_str(), self.time) {
            assert_eq!(
                rfc3339_normalized(time),
                rfc3339_normalized(&rfc3339(expected)),
                "{label}: the plan stops elsewhere than {}: {planned:#}",
                self.what
            );
        }
        if let Some(lsn) = planned["lsn"].as_str() {
            let lsn = Lsn::parse(lsn).unwrap_or_else(|| panic!("{label}: stop LSN {lsn:?}"));
            assert!(
                self.after <= lsn && lsn < self.before,
                "{label}: the plan's stop {lsn} is not {} (from {} to before {}): {planned:#}",
                self.what,
                self.after,
                self.before
            );
        }
    }
}

/// The premise of the settings check: the restored copy carries the other recovery
/// settings [`archiving_cluster`] gave the original (tidemark does not edit
/// `postgresql.conf`; `postgresql.auto.conf` keeps its line, commented out or not).
fn assert_other_targets_backed_up(pgdata: &Path) {
    let read = |f: &str| {
        std::fs::read_to_string(pgdata.join(f))
            .unwrap_or_else(|e| panic!("read {f} of {}: {e}", pgdata.display()))
    };
    let conf = read("postgresql.conf");
    for line in OTHER_RECOVERY_SETTINGS {
        assert!(
            conf.lines().any(|l| l == line),
            "{line} is not in the restored postgresql.conf"
        );
    }
    let auto = read("postgresql.auto.conf");
    assert!(
        auto.contains("recovery_target_name = 'rp-one'"),
        "the restored postgresql.auto.conf lost the backed-up target: {auto}"
    );
}

/// The refusal code and one line naming the problem and the nearest reachable point.
fn assert_refusal(label: &str, command: &str, run: &Run, needles: &[&str]) {
    assert_eq!(
        run.code,
        i32::from(exit::TARGET_UNREACHABLE),
        "{label}: {command} did not refuse: {run:?}"
    );
    let lines = run.stderr_lines();
    assert!(
        lines.len() == 1 && lines[0].starts_with(&format!("tidemark: {command}: ")),
        "{label}: {command}'s refusal is not one line of its own: {}",
        run.stderr
    );
    let text = lines[0].to_lowercase();
    assert!(
        text.contains("nearest"),
        "{label}: {command} names no nearest point: {}",
        run.stderr
    );
    for needle in needles {
        assert!(
            text.contains(&needle.to_lowercase()),
            "{label}: {command}'s refusal does not name {needle:?}: {}",
            run.stderr
        );
    }
}

/// Waits for `what` on the restored server `r`; on a timeout, fails with its log.
fn wait_until_or_log(r: &Cluster, what: &str, ok: impl FnMut() -> bool) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(what, RECOVERY_WITHIN, ok)
    }));
    if result.is_err() {
        panic!("{what}: not reached; server log:\n{}", r.log_tail(30));
    }
}

/// Starts the restored copy `r` (restored with `--target-action shutdown`) and waits
/// until the server has stopped by itself, saying it did so at the recovery target. Not
/// `Cluster::start`: its `pg_ctl start -w` may see the server go before it accepts
/// connections.
fn shut_down_at_the_target(r: &Cluster) {
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    r.append_conf(&[("port".into(), port.to_string())]);
    let started = r
        .program("pg_ctl")
        .args(["start", "-W", "-D"])
        .arg(r.data_dir())
        .arg("-l")
        .arg(r.log_path())
        .output()
        .expect("run pg_ctl start");
    assert!(started.status.success(), "pg_ctl start: {started:?}");
    // `-W` returns before the server writes its pid file: wait for its own word that it
    // stopped at the target, then for it to be gone.
    let pid_file = r.data_dir().join("postmaster.pid");
    let said_so = || {
        std::fs::read_to_string(r.log_path())
            .is_ok_and(|log| log.contains("shutdown at recovery target"))
    };
    let stopped = std::panic::catch_unwind(|| {
        wait_until(
            "the server shuts down at the target",
            RECOVERY_WITHIN,
            || said_so() && !pid_file.exists(),
        )
    });
    if stopped.is_err() {
        let _ = r
            .program("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(r.data_dir())
            .output();
        panic!(
            "the server did not shut down at the target by itself; log:\n{}",
            r.log_tail(30)
        );
    }
}

/// The marker ids a cluster holds, ascending.
fn marker_ids(c: &Cluster) -> Vec<u32> {
    let text = c.psql("select coalesce(string_agg(id::text, ',' order by id), '') from marks");
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("marker id"))
        .collect()
}

/// Recovery settings in the original's `postgresql.conf`: applied by a restore, each
/// would change where replay stops or what happens there (a name never created, every
/// target exclusive, a shutdown at the target).
const OTHER_RECOVERY_SETTINGS: [&str; 3] = [
    "recovery_target_name = 'nope'",
    "recovery_target_inclusive = off",
    "recovery_target_action = 'shutdown'",
];

/// A started cluster with 1 MiB segments archiving through `tm`, commit timestamps on, and
/// the recovery settings of the module doc in `postgresql.conf`, which no restore of it
/// may apply.
pub(crate) fn archiving_cluster(t: &TestDir, tm: &Tidemark, bin: Option<PathBuf>) -> Cluster {
    let mut c = Cluster::init(
        t,
        "pg",
        ClusterOptions {
            wal_segsize_mb: Some(SEGMENT_MB as u32),
            password: Some(PASSWORD.into()),
            archive_command: Some(format!("{} archive-push %p", tm.shell_prefix())),
            bin,
            settings: std::iter::once(("track_commit_timestamp".into(), "on".into()))
                .chain(OTHER_RECOVERY_SETTINGS.iter().map(|line| {
                    let (k, v) = line.split_once(" = ").unwrap();
                    (k.to_string(), v.to_string())
                }))
                .collect(),
            ..Default::default()
        },
    );
    tm.init_stanza(&c);
    c.start();
    // In postgresql.auto.conf, which the backup carries: a target replay would reach.
    c.psql("alter system set recovery_target_name = 'rp-one'");
    c
}

/// The oracle's workload: markers 1-3, backup 0, markers 4-6, restore point `rp-one`,
/// markers 7-9, backup 1, markers 10-11, `rp-twice`, marker 12, a segment switch, marker
/// 13, `rp-twice` again, marker 14, a switch, markers 15-16, a final switch.
fn oracle_workload(c: &Cluster, tm: &Tidemark) -> History {
    let mut w = Workload::start(c, tm);
    w.markers(1..=3);
    w.backup();
    w.markers(4..=6);
    w.restore_point("rp-one");
    w.markers(7..=9);
    w.backup();
    w.markers(10..=11);
    w.restore_point("rp-twice");
    w.markers([12]);
    c.psql("select pg_switch_wal()");
    w.markers([13]);
    w.restore_point("rp-twice");
    w.markers([14]);
    c.psql("select pg_switch_wal()");
    w.markers(15..=16);
    w.switch_and_archive();
    w.history
}

fn marker(h: &History, id: u32) -> &Marker {
    h.markers
        .iter()
        .find(|m| m.id == id)
        .unwrap_or_else(|| panic!("no marker {id}"))
}

/// Every oracle target, by label.
fn oracle_cases(h: &History) -> Vec<Case> {
    use Action::{Pause, Promote, Shutdown};
    let m = |id| marker(h, id);
    vec![
        Case::new("time-between-b0", Aim::between(m(5), m(6)), Promote),
        Case::new("time-between-b1", Aim::between(m(14), m(15)), Pause),
        // Stops the server there; read by replaying to the target again, paused.
        Case::new(
            "time-between-shutdown",
            Aim::between(m(10), m(11)),
            Shutdown,
        ),
        Case::new("time-exact", Aim::time(m(11).commit, false), Pause),
        Case::new("time-exact-excl", Aim::time(m(11).commit, true), Promote),
        Case::new(
            // PostgreSQL's own timestamptz text, with its `+00` offset.
            "time-pg-text",
            Aim::Time {
                at: m(7).commit,
                text: m(7).commit.to_string(),
                exclusive: false,
            },
            Pause,
        ),
        Case {
            // Without an offset: read in tidemark's local zone (India: +05:30, no DST).
            zone: Some("Asia/Kolkata"),
            ..Case::new("time-local-zone", local_time(m(13), m(14), 330), Pause)
        },
        Case::new("lsn", Aim::Lsn(m(8).lsn_after), Pause),
        Case::new(
            "xid",
            Aim::Xid {
                xid: m(12).xid,
                exclusive: false,
            },
            Promote,
        ),
        Case::new(
            "xid-excl",
            Aim::Xid {
                xid: m(12).xid,
                exclusive: true,
            },
            Pause,
        ),
        Case::new("name", Aim::Name("rp-one".into()), Pause),
        Case::new("name-twice", Aim::Name("rp-twice".into()), Promote),
        Case::new("immediate", Aim::Immediate(0), Pause),
        Case::new("latest", Aim::Latest, Promote),
    ]
}

/// A time target halfway between two markers' commits, written as the local time of a
/// zone `offset_minutes` east of UTC, without offset.
fn local_time(a: &Marker, b: &Marker, offset_minutes: i64) -> Aim {
    let Aim::Time { at, .. } = Aim::between(a, b) else {
        unreachable!()
    };
    let local = rfc3339(PgTimestamp(at.0 + offset_minutes * 60_000_000));
    Aim::Time {
        at,
        text: local.trim_end_matches('Z').replace('T', " "),
        exclusive: false,
    }
}

/// The refusals the oracle's repository must give (see the module doc), none of which
/// changes the repository.
fn oracle_refusals(b: &Bench, h: &History, store: &Store) {
    let m = |id| marker(h, id);
    let last = h.markers.last().unwrap();
    let first_backup = &h.backups[0].id;
    let untouched = repo_snapshot(&store.folder());

    // The nearest points each refusal must name, from the workload's facts: the first
    // backup (before it), the last archived segment (the final switch completed the one
    // holding the last marker) and the last commit's time (beyond it).
    let last_segment = segment_name(1, last.lsn_after);
    let last_commit = last.commit.to_string();

    // Before the first backup's consistent point: between markers 2 and 3.
    let before = Aim::between(m(2), m(3));
    b.refused(
        "before-first-backup",
        &before.args(h),
        &["before", first_backup],
    );
    // Beyond the archived WAL: 64 MiB past the last LSN the workload saw.
    let beyond = Aim::Lsn(Lsn(last.lsn_after.0 + (64 << 20)));
    b.refused("beyond-archive", &beyond.args(h), &[&last_segment]);
    // A time with no later commit: the last commit's own time, inclusive, and later.
    b.refused(
        "no-later-commit",
        &Aim::time(last.commit, false).args(h),
        &[&last_segment],
    );
    b.refused(
        "time-after-last-commit",
        &Aim::time(PgTimestamp(last.commit.0 + 1_000_000), false).args(h),
        &[&last_segment, &last_commit],
    );

    let diff = snapshot_diff(&untouched, &repo_snapshot(&store.folder()));
    assert!(diff.is_empty(), "refusals changed the repository: {diff:?}");

    // A segment missing in the middle: the one holding markers 13 and 14, between the
    // second backup and the target. Its index entry goes, from a copy of a local
    // repository, in place on S3 (the last use of that repository).
    let missing = segment_name(1, m(13).lsn_after);
    let (gap_tm, folder) = match store {
        Store::Local(repo) => {
            let copy = b.t.path().join("repo-gap");
            copy_dir(repo, &copy);
            (local_runner(b.t, &copy), copy)
        }
        Store::S3(server) => (b.tm.clone(), server.data_dir()),
    };
    assert_eq!(
        remove_index_entries(&folder, &missing),
        1,
        "{missing}'s index entry in {}",
        folder.display()
    );
    let before = repo_snapshot(&folder);
    let gap = Bench {
        t: b.t,
        tm: &gap_tm,
        bin: b.bin.clone(),
    };
    // Named: the missing segment, and the last one replay reads before it.
    gap.refused(
        "missing-segment",
        &Aim::between(m(15), m(16)).args(h),
        &[&missing, &segment_name(1, m(12).lsn_after)],
    );
    let diff = snapshot_diff(&before, &repo_snapshot(&folder));
    assert!(diff.is_empty(), "refusals changed the repository: {diff:?}");
}

/// Where a test's repository is, for the checks that look at it or damage it.
enum Store<'a> {
    /// A local repository: its folder.
    Local(&'a Path),
    /// Under a prefix of this server's bucket.
    S3(&'a S3Server),
}

impl Store<'_> {
    /// The folder holding the repository's files (for S3: everything the server holds).
    fn folder(&self) -> PathBuf {
        match self {
            Store::Local(repo) => repo.to_path_buf(),
            Store::S3(server) => server.data_dir(),
        }
    }
}

/// A runner over the local repository at `repo`.
fn local_runner(t: &TestDir, repo: &Path) -> Tidemark {
    Tidemark::new(t)
        .with_args(["--repo", &format!("file://{}", repo.display())])
        .with_env("PGPASSWORD", PASSWORD)
}

/// Removes the WAL index entries (`<name>.<sha256>`, not the claim) of WAL file `name`
/// found anywhere under `root` (a repository's folder, or an S3 server's); returns how many.
pub(crate) fn remove_index_entries(root: &Path, name: &str) -> usize {
    let mut removed = 0;
    for entry in std::fs::read_dir(root).unwrap_or_else(|e| panic!("read {}: {e}", root.display()))
    {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            removed += remove_index_entries(&path, name);
        } else if file.starts_with(&format!("{name}."))
            && !file.ends_with(".claim")
            && path.parent().unwrap().to_string_lossy().contains("/wal/")
        {
            std::fs::remove_file(&path).unwrap();
            removed += 1;
        }
    }
    removed
}

/// The name of the 1 MiB segment holding `lsn` on `timeline`.
fn segment_name(timeline: u32, lsn: Lsn) -> String {
    let segno = lsn.0 / (SEGMENT_MB << 20);
    let per_id = 0x1_0000_0000 / (SEGMENT_MB << 20);
    format!("{timeline:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// `cp -a`: a copy keeping owners and modes (the test user's).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .expect("run cp");
    assert!(out.status.success(), "cp -a: {out:?}");
}

/// The workload on `bin`'s major through `tm` into `store`, then every oracle target
/// and the refusals.
fn run_oracle(t: &TestDir, tm: &Tidemark, store: &Store, bin: Option<PathBuf>) {
    let started = std::time::Instant::now();
    let c = archiving_cluster(t, tm, bin.clone());
    let history = oracle_workload(&c, tm);
    drop(c);
    eprintln!("workload: {:.1} s", started.elapsed().as_secs_f64());
    let bench = Bench { t, tm, bin };
    for case in oracle_cases(&history) {
        let started = std::time::Instant::now();
        bench.check(&case, &history);
        eprintln!("{}: {:.1} s", case.label, started.elapsed().as_secs_f64());
    }
    oracle_refusals(&bench, &history, store);
}

macro_rules! need_pg {
    () => {
        if pg_bin().is_none() {
            skip_or_fail!(
                "PostgreSQL server binaries not found (/usr/lib/postgresql/15/bin, or set PG_BIN)"
            );
        }
    };
}

/// The whole oracle and the refusals on PostgreSQL 15 and a local repository.
#[test]
fn pitr_oracle_local() {
    need_pg!();
    let t = TestDir::new("pitr-oracle");
    let tm = local_tidemark(&t);
    run_oracle(&t, &tm, &Store::Local(&t.path().join("repo")), None);
}

/// The oracle and the refusals on S3.
#[test]
fn pitr_oracle_s3() {
    need_pg!();
    let Some(server) = S3Server::start_new() else {
        skip_or_fail!(
            "s3s-fs not found (install: cargo install s3s-fs@0.14.1 --features binary --locked)"
        );
    };
    let t = TestDir::new("pitr-oracle-s3");
    let tm = s3_tidemark(&t, &server);
    // The config holds the S3 secret: readable by its owner only, or every command warns
    // (and a refusal is to be one line).
    let config = t.path().join("tidemark.toml");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", config.display()));
    run_oracle(&t, &tm, &Store::S3(&server), None);
}

/// The oracle and the refusals on another major.
fn oracle_on_major(major: u32) {
    need_pg!();
    let Some(bin) = server_bin(major) else {
        skip_or_fail!("PostgreSQL {major} server binaries not found (scripts/fetch-postgres.sh)");
    };
    let t = TestDir::new(&format!("pitr-oracle-{major}"));
    let tm = local_tidemark(&t);
    run_oracle(&t, &tm, &Store::Local(&t.path().join("repo")), Some(bin));
}

#[test]
fn pitr_oracle_postgres_16() {
    oracle_on_major(16);
}

#[test]
fn pitr_oracle_postgres_17() {
    oracle_on_major(17);
}

#[test]
fn pitr_oracle_postgres_18() {
    oracle_on_major(18);
}

/// Timelines (see the module doc), and a missing history file refused.
#[test]
fn pitr_timelines() {
    need_pg!();
    let t = TestDir::new("pitr-timelines");
    let tm = local_tidemark(&t);
    let c = archiving_cluster(&t, &tm, None);
    let mut w = Workload::start(&c, &tm);
    w.markers(1..=3);
    w.backup();
    w.markers(4..=6);
    w.switch_and_archive();
    let fork_history = w.history.clone();
    let bench = Bench {
        t: &t,
        tm: &tm,
        bin: None,
    };

    // The copy that becomes the new primary: to the end, promoted, archiving.
    let pgdata = t.path().join("primary2/data");
    let mut args = vec!["restore", "--pgdata", pgdata.to_str().unwrap()];
    args.extend(["--archive-mode", "preserve"]);
    if !self_check() {
        args.extend(["--target", "latest", "--target-action", "promote"]);
    }
    tm.ok(&args);
    let mut copy = Cluster::adopt(&t, "primary2", None, Some(PASSWORD), &[]);
    copy.start();
    wait_until_or_log(&copy, "the copy's promotion", || {
        copy.try_psql("select pg_is_in_recovery()").as_deref() == Ok("f")
    });
    assert_eq!(
        copy.psql("select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"),
        "00000002",
        "the copy writes timeline 2"
    );
    assert_eq!(marker_ids(&copy), [1, 2, 3, 4, 5, 6]);

    // Both write on: the original on timeline 1, the copy on timeline 2.
    w.markers(7..=9);
    w.switch_and_archive();
    let timeline1 = w.history.clone();
    let mut w2 = Workload::resume(&copy, &tm, fork_history);
    w2.markers(101..=103);
    w2.switch_and_archive();
    wait_until("00000002.history archived", Duration::from_secs(60), || {
        copy.status_files("done")
            .iter()
            .any(|n| n == "00000002.history")
    });
    let timeline2 = w2.history.clone();
    copy.stop();
    drop(c);

    let mut on2 = Case::new(
        "timeline-2",
        Aim::between(marker(&timeline2, 101), marker(&timeline2, 102)),
        Action::Pause,
    );
    on2.timeline = 2;
    bench.check(&on2, &timeline2);
    let mut on1 = Case::new(
        "timeline-1-after-fork",
        Aim::between(marker(&timeline1, 7), marker(&timeline1, 8)),
        Action::Promote,
    );
    on1.extra = vec!["--target-timeline".into(), "1".into()];
    bench.check(&on1, &timeline1);

    // A missing history file: timeline 2's, from a copy of the repository.
    let copy_repo = t.path().join("repo-no-history");
    copy_dir(&t.path().join("repo"), &copy_repo);
    assert_eq!(remove_index_entries(&copy_repo, "00000002.history"), 1);
    let hole_tm = local_runner(&t, &copy_repo);
    let hole = Bench {
        t: &t,
        tm: &hole_tm,
        bin: None,
    };
    let mut target = on2.aim.args(&timeline2);
    target.extend(["--target-timeline".to_string(), "2".into()]);
    hole.refused("missing-history", &target, &["00000002.history"]);
    hole.refused(
        "missing-history-latest",
        &Aim::Latest.args(&timeline2),
        &["00000002.history"],
    );
}
