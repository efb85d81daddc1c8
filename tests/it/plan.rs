//! `tidemark plan`, `tidemark restore --target-…` and `tidemark info`'s recoverable
//! windows, through the binary, on a real PostgreSQL 15 archive, local and on S3.
//! (The PITR oracle, restoring to many targets and checking the rows, is `pitr.rs`.)
//!
//! What is proven here:
//! - `plan` prints the chosen backup, the timeline, the WAL range, the bytes to fetch and
//!   the stop point, as text and as `--json`, and picks the backup that precedes the
//!   target (the older one when the target lies between two backups), local and on S3;
//! - a time without a zone is read in the local zone (`TZ`), and the plan shows the UTC
//!   instant it resolved to, which is also what is written (with an explicit offset);
//! - a target before the first backup and one beyond the archive are refused with exit 5
//!   and one line naming the kind and the nearest reachable point; `restore` then leaves
//!   its target directory absent, or as it was when it existed (empty, its mode kept);
//! - `restore --target-…` writes exactly the plan's settings into
//!   `postgresql.auto.conf` (one target, every other kind `''`, the timeline as a
//!   number, the action, the inclusiveness), the restore of the plan's backup, and a
//!   server started on it stops where the plan said;
//! - `info` shows each timeline's recoverable window.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::backup::{backup_ok, cluster, local_tidemark, s3_tidemark, start_copy};
use crate::harness::pg::{pg_bin, Cluster, TestDir};
use crate::harness::s3::S3Server;
use crate::harness::tidemark::{Run, Tidemark};
use crate::skip_or_fail;

macro_rules! need_pg {
    () => {
        if pg_bin().is_none() {
            skip_or_fail!(
                "PostgreSQL server binaries not found (/usr/lib/postgresql/15/bin, or set PG_BIN)"
            );
        }
    };
}

/// What the archive of [`history`] holds.
struct History {
    /// The two backups' ids, oldest first.
    backups: [String; 2],
    /// A moment between the first backup's end and row 2's commit (rows: 1).
    between: DateTime<Utc>,
    /// The insert position after row 3's commit, before row 4's (rows: 1, 2, 3).
    lsn_after_3: String,
    /// The restore point created after row 4 (rows: 1 to 4).
    restore_point: &'static str,
}

/// A cluster archiving into `tm`: backup A, row 1, [between], row 2, backup B, row 3,
/// [lsn_after_3], row 4, restore point, row 5, and the last segment archived. Each row
/// its own transaction, a second apart.
fn history(t: &TestDir, tm: &Tidemark) -> (Cluster, History) {
    let c = cluster(t, "pg", Some(tm));
    c.psql("create table marks(id int primary key, at timestamptz default clock_timestamp())");
    let first = backup_ok(tm, &c, &["--label", "a"]);
    let insert = |id: u32| {
        c.psql(&format!("insert into marks(id) values ({id})"));
        std::thread::sleep(Duration::from_millis(1100));
    };
    insert(1);
    let between: DateTime<Utc> = c
        .psql("select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        .parse()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    insert(2);
    let second = backup_ok(tm, &c, &["--label", "b"]);
    insert(3);
    let lsn_after_3 = c.psql("select pg_current_wal_insert_lsn()");
    insert(4);
    c.psql("select pg_create_restore_point('before-five')");
    insert(5);
    let last = c.switch_wal();
    c.wait_archived(&last, Duration::from_secs(60));
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    (
        c,
        History {
            backups: [id(&first), id(&second)],
            between,
            lsn_after_3,
            restore_point: "before-five",
        },
    )
}

/// `tidemark plan --json <args>`, which must succeed; parsed.
fn plan_json(tm: &Tidemark, args: &[&str]) -> Value {
    let mut all = vec!["plan", "--json"];
    all.extend_from_slice(args);
    let run = tm.run(&all);
    assert_eq!(run.code, 0, "plan failed: {run:?}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"))
}

/// The UTC instant a plan's time target was read as.
fn resolved_utc(plan: &Value) -> DateTime<Utc> {
    let text = plan["target"]["resolved_utc"].as_str();
    text.and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no resolved_utc: {plan}"))
}

/// Asserts `run` was refused as unreachable: exit 5, one line on stderr naming the kind
/// and the nearest reachable point, nothing on stdout.
fn assert_unreachable(run: &Run, command: &str, kind: &str) {
    assert_eq!(run.code, 5, "{run:?}");
    let lines = run.stderr_lines();
    assert_eq!(lines.len(), 1, "one line expected: {run:?}");
    let prefix = format!("tidemark: {command}: target unreachable ({kind}): ");
    assert!(lines[0].starts_with(&prefix), "{:?}", lines[0]);
    assert!(lines[0].contains("; nearest reachable: "), "{:?}", lines[0]);
    assert!(run.stdout.is_empty(), "{run:?}");
}

/// `tidemark restore --pgdata <pgdata> <args>` (not checked).
fn restore(tm: &Tidemark, pgdata: &Path, args: &[&str]) -> Run {
    let mut all = vec!["restore", "--pgdata", pgdata.to_str().unwrap()];
    all.extend_from_slice(args);
    tm.run(&all)
}

/// [`restore`], which must succeed; its stdout.
fn restore_ok(tm: &Tidemark, pgdata: &Path, args: &[&str]) -> String {
    let run = restore(tm, pgdata, args);
    assert_eq!(run.code, 0, "restore failed: {run:?}");
    run.stdout
}

/// The settings of `postgresql.auto.conf`'s last tidemark block, as `name = value` lines.
fn restore_block(pgdata: &Path) -> Vec<String> {
    let conf = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
    let (_, block) = conf
        .rsplit_once("# tidemark restore of backup ")
        .unwrap_or_else(|| panic!("no tidemark block: {conf}"));
    block.lines().skip(1).map(str::to_string).collect()
}

/// The plan's text and JSON on one archive; see the module doc.
fn plan_text_and_json(t: &TestDir, tm: &Tidemark) {
    let (_c, h) = history(t, tm);

    // Between the backups: the older backup is the one that reaches it.
    let at = h.between.to_rfc3339();
    let plan = plan_json(tm, &["--target-time", &at]);
    assert_eq!(plan["backup"]["id"], h.backups[0].as_str(), "{plan}");
    assert_eq!(plan["timeline"], 1, "{plan}");
    assert_eq!(plan["target"]["kind"], "time");
    assert_eq!(resolved_utc(&plan), h.between, "{plan}");
    let settings = &plan["settings"];
    let written = settings["recovery_target_time"].as_str().unwrap();
    assert!(!written.is_empty(), "{plan}");
    for other in [
        "recovery_target",
        "recovery_target_name",
        "recovery_target_xid",
        "recovery_target_lsn",
    ] {
        assert_eq!(settings[other], "", "{plan}");
    }
    assert_eq!(settings["recovery_target_timeline"], "1", "{plan}");
    assert_eq!(settings["recovery_target_action"], "pause", "{plan}");
    assert_eq!(settings["recovery_target_inclusive"], "on", "{plan}");
    assert_eq!(plan["wal"][0]["timeline"], 1, "{plan}");
    assert!(plan["wal"][0]["segments"].as_u64().unwrap() >= 1, "{plan}");
    assert!(
        plan["fetch"]["backup_bytes"].as_u64().unwrap() > 0,
        "{plan}"
    );
    assert!(plan["fetch"]["wal_bytes"].as_u64().unwrap() > 0, "{plan}");
    assert!(
        !plan["stop"]["description"].as_str().unwrap().is_empty(),
        "{plan}"
    );
    // The stop record is row 2's commit, after the target (when the plan names the
    // record: from the content index it may know only the segment).
    if let Some(stop) = plan["stop"]["time"].as_str() {
        assert!(stop.parse::<DateTime<Utc>>().unwrap() > h.between, "{plan}");
    }

    // After the second backup: the newer one.
    let plan = plan_json(tm, &["--target-lsn", &h.lsn_after_3, "--target-exclusive"]);
    assert_eq!(plan["backup"]["id"], h.backups[1].as_str(), "{plan}");
    assert_eq!(
        plan["settings"]["recovery_target_lsn"],
        h.lsn_after_3.as_str()
    );
    assert_eq!(plan["settings"]["recovery_target_inclusive"], "off");
    assert_eq!(plan["settings"]["recovery_target_time"], "");

    // The same plan as text: every part named.
    let text = tm.ok(&[
        "plan",
        "--target-name",
        h.restore_point,
        "--target-action",
        "promote",
    ]);
    for needle in [
        "target      name before-five".to_string(),
        format!("backup      {} (timeline 1", h.backups[1]),
        "timelines   1 (recovery_target_timeline = 1)".to_string(),
        "wal         timeline 1: 000000010000000000000".to_string(),
        "fetch       ".to_string(),
        "stops       ".to_string(),
        "; then promote".to_string(),
        "settings    recovery_target_name = 'before-five'".to_string(),
    ] {
        assert!(text.contains(&needle), "{needle:?} not in:\n{text}");
    }
    // A backup chosen by id.
    let plan = plan_json(tm, &["--target", "immediate", "--backup", &h.backups[0]]);
    assert_eq!(plan["backup"]["id"], h.backups[0].as_str(), "{plan}");
    assert_eq!(plan["settings"]["recovery_target"], "immediate", "{plan}");
}

#[test]
fn plan_text_and_json_local() {
    need_pg!();
    let t = TestDir::new("plan-local");
    let tm = local_tidemark(&t);
    plan_text_and_json(&t, &tm);
}

#[test]
fn plan_text_and_json_s3() {
    need_pg!();
    let Some(server) = S3Server::start_new() else {
        skip_or_fail!(
            "s3s-fs not found (install: cargo install s3s-fs@0.14.1 --features binary --locked)"
        );
    };
    let t = TestDir::new("plan-s3");
    let tm = s3_tidemark(&t, &server);
    plan_text_and_json(&t, &tm);
}

/// Refusals exit 5 and write nothing; a time without a zone is read in the local one;
/// `restore --target-…` writes exactly the plan's settings and replay stops there.
#[test]
fn refusals_write_nothing_and_restore_writes_the_plan() {
    need_pg!();
    let t = TestDir::new("plan-restore");
    let tm = local_tidemark(&t);
    let (c, h) = history(&t, &tm);

    // Before the first backup: refused by plan and by restore, which creates nothing.
    let before = "2001-02-03 04:05:06+00";
    assert_unreachable(
        &tm.run(&["plan", "--target-time", before]),
        "plan",
        "before-first-backup",
    );
    let absent = t.path().join("absent/data");
    let run = restore(&tm, &absent, &["--target-time", before]);
    assert_unreachable(&run, "restore", "before-first-backup");
    assert!(!t.path().join("absent").exists());
    // Beyond the archive (no commit after it): refused; an empty target stays as it was.
    let empty = t.mkdir("empty");
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o750)).unwrap();
    let future = (Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let run = restore(&tm, &empty, &["--target-time", &future]);
    assert_unreachable(&run, "restore", "beyond-archive");
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
    assert_eq!(
        std::fs::metadata(&empty).unwrap().permissions().mode() & 0o7777,
        0o750
    );
    // A restore point name never created: refused too.
    assert_unreachable(
        &tm.run(&["plan", "--target-name", "never-created"]),
        "plan",
        "beyond-archive",
    );

    // A local time (no zone) in the zone TZ names: the UTC instant is shown and written.
    let tokyo = tm.clone().with_env("TZ", "Asia/Tokyo");
    let local = (h.between + chrono::Duration::hours(9))
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string();
    let plan = plan_json(&tokyo, &["--target-time", &local]);
    assert_eq!(plan["target"]["local_zone"], true, "{plan}");
    assert_eq!(resolved_utc(&plan), h.between, "{plan}");
    let written = plan["settings"]["recovery_target_time"]
        .as_str()
        .unwrap()
        .to_string();
    let text = tokyo.ok(&["plan", "--target-time", &local]);
    assert!(
        text.contains("(no zone given: read in the local zone)"),
        "{text}"
    );

    // restore writes exactly the plan's settings, from the plan's (older) backup.
    let pgdata = t.path().join("copy/data");
    let out = restore_ok(
        &tokyo,
        &pgdata,
        &["--target-time", &local, "--target-action", "promote"],
    );
    assert!(
        out.contains(&format!("restored backup {}:", h.backups[0])),
        "{out}"
    );
    let block = restore_block(&pgdata);
    assert_eq!(
        block[1..],
        [
            "recovery_target = ''".to_string(),
            "recovery_target_name = ''".to_string(),
            "recovery_target_xid = ''".to_string(),
            "recovery_target_lsn = ''".to_string(),
            // The set kind after the empty ones: PostgreSQL refuses an empty kind after
            // a set one ("multiple recovery targets specified").
            format!("recovery_target_time = '{written}'"),
            "recovery_target_inclusive = 'on'".to_string(),
            "recovery_target_timeline = '1'".to_string(),
            "recovery_target_action = 'promote'".to_string(),
            "archive_mode = off".to_string(),
        ],
        "{block:#?}"
    );
    assert!(block[0].starts_with("restore_command = '"), "{block:#?}");
    assert!(pgdata.join("recovery.signal").exists());
    // PostgreSQL stops there: row 1 only.
    let mut copy = start_copy(&t, "copy");
    assert_eq!(
        copy.psql("select string_agg(id::text, ',' order by id) from marks"),
        "1"
    );
    copy.stop();

    // An LSN target, exclusive, and a restore point: each written alone.
    let pgdata = t.path().join("lsn/data");
    let lsn_target = [
        "--target-lsn",
        &h.lsn_after_3,
        "--target-exclusive",
        "--target-action",
        "shutdown",
        "--json",
    ];
    // --json: the restore's report, the settings written, and the plan it followed.
    let report: Value = serde_json::from_str(&restore_ok(&tm, &pgdata, &lsn_target)).unwrap();
    assert_eq!(report["backup"], h.backups[1].as_str(), "{report}");
    assert_eq!(
        report["plan"]["backup"]["id"],
        h.backups[1].as_str(),
        "{report}"
    );
    assert_eq!(
        report["recovery_target"]["recovery_target_lsn"],
        h.lsn_after_3.as_str(),
        "{report}"
    );
    assert_eq!(
        report["recovery_target"], report["plan"]["settings"],
        "{report}"
    );
    assert_eq!(report["archive_mode"], "off", "{report}");
    let block = restore_block(&pgdata);
    for line in [
        "recovery_target_time = ''".to_string(),
        format!("recovery_target_lsn = '{}'", h.lsn_after_3),
        "recovery_target_inclusive = 'off'".to_string(),
        "recovery_target_action = 'shutdown'".to_string(),
    ] {
        assert!(block.contains(&line), "{line:?} not in {block:#?}");
    }
    let pgdata = t.path().join("named/data");
    let name_target = [
        "--target-name",
        h.restore_point,
        "--target-action",
        "promote",
    ];
    restore_ok(&tm, &pgdata, &name_target);
    let mut named = start_copy(&t, "named");
    assert_eq!(
        named.psql("select string_agg(id::text, ',' order by id) from marks"),
        "1,2,3,4"
    );
    named.stop();
    drop(c);
}

/// `info` shows timeline 1's recoverable window: from the first backup's consistent
/// point to the end of the archived WAL, without a gap.
#[test]
fn info_shows_the_recoverable_window() {
    need_pg!();
    let t = TestDir::new("plan-info");
    let tm = local_tidemark(&t);
    let (_c, h) = history(&t, &tm);
    let info = tm.info();
    let windows = &info["recovery"]["timelines"];
    let t1 = windows
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["timeline"] == 1)
        .unwrap_or_else(|| panic!("no window for timeline 1: {info}"));
    let w = &t1["windows"][0];
    let from: DateTime<Utc> = w["from_time"].as_str().unwrap().parse().unwrap();
    assert!(from < h.between, "{info}");
    // The window reaches past row 4 (by LSN: the index may not know the times of
    // segments archived before it), and its last commit, when known, is after `between`.
    let lsn = |v: &Value| {
        let (hi, lo) = v.as_str().unwrap().split_once('/').unwrap();
        (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
    };
    assert!(
        lsn(&w["to_lsn"]) > lsn(&Value::String(h.lsn_after_3.clone())),
        "{info}"
    );
    if let Some(to) = w["to_time"].as_str() {
        assert!(to.parse::<DateTime<Utc>>().unwrap() > h.between, "{info}");
    }
    assert!(w["gap_at"].is_null(), "{info}");
    let text = tm.ok(&["info"]);
    assert!(
        text.contains(&format!(
            "  timeline 1: recoverable from {} (",
            w["from_lsn"].as_str().unwrap()
        )),
        "{text}"
    );
}

/// After a restore promoted with `--archive-mode preserve` (timeline 2, archiving into the
/// stanza): `info` draws timeline 2 under timeline 1 with its fork point, the default
/// plan follows timeline 2 (the path 1 -> 2), and `--target-timeline current` stays on 1
/// and names timeline 2 as not followed.
#[test]
fn timelines_are_drawn_as_a_tree_and_followed_as_asked() {
    need_pg!();
    let t = TestDir::new("plan-timelines");
    let tm = local_tidemark(&t);
    let (c, _h) = history(&t, &tm);
    drop(c);
    let pgdata = t.path().join("primary/data");
    restore_ok(&tm, &pgdata, &["--archive-mode", "preserve"]);
    let mut primary = start_copy(&t, "primary");
    primary.psql("insert into marks(id) values (6)");
    let last = primary.switch_wal();
    assert!(last.starts_with("00000002"), "{last}");
    primary.wait_archived(&last, Duration::from_secs(60));
    primary.stop();

    let info = tm.info();
    let timelines = info["recovery"]["timelines"].as_array().unwrap();
    let two = timelines
        .iter()
        .find(|w| w["timeline"] == 2)
        .unwrap_or_else(|| panic!("no timeline 2: {info}"));
    assert_eq!(two["parent"], 1, "{info}");
    let fork = two["fork_lsn"].as_str().unwrap().to_string();
    assert!(!two["windows"].as_array().unwrap().is_empty(), "{info}");
    let text = tm.ok(&["info"]);
    assert!(
        text.contains(&format!(
            "    timeline 2 (off timeline 1 at {fork}): recoverable from "
        )),
        "{text}"
    );

    let plan = plan_json(&tm, &[]);
    assert_eq!(plan["timeline"], 2, "{plan}");
    assert_eq!(plan["timeline_path"][0]["timeline"], 1, "{plan}");
    assert_eq!(plan["timeline_path"][0]["until"], fork.as_str(), "{plan}");
    assert_eq!(plan["timeline_path"][1]["timeline"], 2, "{plan}");
    assert_eq!(plan["settings"]["recovery_target_timeline"], "2", "{plan}");

    let plan = plan_json(&tm, &["--target-timeline", "current"]);
    assert_eq!(plan["timeline"], 1, "{plan}");
    assert_eq!(plan["settings"]["recovery_target_timeline"], "1", "{plan}");
    let branches = plan["other_branches"].as_array().unwrap();
    assert!(
        branches
            .iter()
            .any(|b| b["timeline"] == 2 && b["parent"] == 1 && b["fork"] == fork.as_str()),
        "{plan}"
    );
    let text = tm.ok(&["plan", "--target-timeline", "current"]);
    assert!(
        text.contains(&format!("not followed: timeline 2 (off 1 at {fork})")),
        "{text}"
    );
}

/// A commit record too long for the segment summaries to keep both halves (700
/// subtransactions: about 2.8 KiB, most of it in the next segment) is decoded by the
/// loader from the two segments: `decode_crossing` gives the commit, and
/// `decode_segment` lists it among the first segment's completions and counts it.
#[test]
fn a_long_commit_across_segments_is_decoded_from_both() {
    use tidemark_pg::wal::{summarize_segment, Payload, CROSSING_BYTES_MAX};
    use tidemark_pg::{Lsn, PgMajor};
    use tidemark_recovery::snapshot::{decode_crossing, decode_segment};
    need_pg!();
    let t = TestDir::new("plan-long-commit");
    let mut c = Cluster::init(
        &t,
        "pg",
        crate::harness::pg::ClusterOptions {
            wal_segsize_mb: Some(1),
            ..Default::default()
        },
    );
    c.start();
    c.psql("create table tm_marks(xid bigint, pad text)");
    let xids = crate::wal_decoder::commits_across_segments(&c, 700);
    c.psql("select pg_switch_wal()");
    c.stop();
    let seg = crate::wal_decoder::SEG;
    let mut files: Vec<(u64, Vec<u8>)> = std::fs::read_dir(c.pg_wal())
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let segno = u64::from_str_radix(name.get(8..24)?, 16).ok()?;
            (name.len() == 24).then(|| {
                let (log, low) = (segno >> 32, segno & 0xFFFF_FFFF);
                (
                    log * (0x1_0000_0000 / seg) + low,
                    std::fs::read(e.path()).unwrap(),
                )
            })
        })
        .collect();
    files.sort_by_key(|(n, _)| *n);
    let mut proven = 0;
    for pair in files.windows(2) {
        let ((n, here), (next_n, next)) = (&pair[0], &pair[1]);
        if *next_n != n + 1 {
            continue;
        }
        let start = Lsn(n * seg);
        let Ok(summary) = summarize_segment(here, seg, start, Some(PgMajor::V15)) else {
            continue;
        };
        let Some(crossing) = &summary.crossing_start else {
            continue;
        };
        // Ours, and its end too long for the next segment's summary to keep.
        let next_summary = summarize_segment(next, seg, Lsn(next_n * seg), Some(PgMajor::V15));
        let end_kept = next_summary
            .ok()
            .and_then(|s| s.crossing_end)
            .is_none_or(|end| end.bytes.is_some());
        if !crossing.xid.is_some_and(|x| xids.contains(&x)) || end_kept {
            continue;
        }
        assert!(crossing.total_len.unwrap() as usize > CROSSING_BYTES_MAX);
        let xid = crossing.xid.unwrap();
        let record = decode_crossing(here, next, start, crossing.lsn, seg, PgMajor::V15).unwrap();
        let Payload::Commit(commit) = &record.payload else {
            panic!("not a commit: {record:?}")
        };
        assert_eq!((record.lsn, commit.xid), (crossing.lsn, xid));
        assert_eq!(commit.subxacts.len(), 700);
        let decoded = decode_segment(here, Some(next), start, seg, PgMajor::V15, true).unwrap();
        let last = decoded.completions.last().unwrap();
        assert_eq!((last.lsn, last.xid, last.commit), (crossing.lsn, xid, true));
        let xacts = decoded.summary.xacts.unwrap();
        assert_eq!(xacts.last_lsn, crossing.lsn);
        let alone = summary.xacts.map_or(0, |x| x.commits);
        assert_eq!(
            xacts.commits,
            alone + 1,
            "the crossing commit is counted once"
        );
        // Without the next segment the record cannot be completed: not counted.
        let cut = decode_segment(here, None, start, seg, PgMajor::V15, true).unwrap();
        assert!(cut.completions.iter().all(|c| c.lsn != crossing.lsn));
        proven += 1;
    }
    assert!(
        proven > 0,
        "none of the commits {xids:?} crossed a segment boundary with more than the summaries keep"
    );
}
