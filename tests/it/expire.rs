//! `tidemark expire` through the binary, on real PostgreSQL 15 archives, local and on S3.
//!
//! What is proven here:
//! - an empty retention policy is refused (exit 2) and changes nothing;
//! - on a catalog of three backups across two timelines (the third after a real
//!   promotion), `retention_count = 2` keeps exactly the two newest, and the dry run
//!   changes nothing (the repository's files identical before and after) and names
//!   exactly what the real run then removes (backups, WAL ranges, keys, blobs);
//! - the window it reports is restorable: a restore to its oldest point
//!   (`restorable_since`) starts on a real server and holds the rows committed then;
//! - a WAL index entry missing after the window's backup (a gap on the line to now)
//!   shortens the guaranteed window to the next kept backup that starts after the gap:
//!   the dry run and the real run report that window and name the gap (timeline, first
//!   and last file) as a warning, the real run removes no more than without the gap, and
//!   a restore to the reported window's oldest point succeeds with the rows committed
//!   by then;
//! - an interrupted backup's chunks (a backup that failed waiting for its WAL: chunks,
//!   no record) stay while younger than the grace and go once past it;
//! - on S3, expire with garbage collection running again and again beside archive-push
//!   and a backup loses nothing: `verify` passes afterwards (every WAL entry's blob and
//!   every chunk of every kept backup is there) and the newest backup restores to the
//!   end of the archived WAL with every committed row.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::backup::{
    backup_ok, cluster, local_tidemark, restore_ok, s3_tidemark, start_copy, PASSWORD,
};
use crate::harness::pg::{pg_bin, Cluster, ClusterOptions, TestDir};
use crate::harness::s3::S3Server;
use crate::harness::tidemark::{repo_snapshot, snapshot_diff, Tidemark};
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

/// `tidemark expire --json <args>` with `env` set: exit code and report.
fn expire(tm: &Tidemark, env: &[(&str, &str)], args: &[&str]) -> (i32, Value) {
    let mut tm = tm.clone();
    for (k, v) in env {
        tm = tm.with_env(k, v);
    }
    let mut all = vec!["expire", "--json"];
    all.extend_from_slice(args);
    let run = tm.run(&all);
    let json = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("expire printed no JSON ({e}): {run:?}"));
    (run.code, json)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn blob_count(repo: &Path) -> usize {
    repo_snapshot(repo)
        .into_iter()
        .filter(|(k, v)| k.starts_with("blobs/") && v != "<dir>")
        .count()
}

#[test]
fn expire_local_keeps_what_the_policy_says_across_two_timelines() {
    need_pg!();
    let t = TestDir::new("expire-local");
    let tm = local_tidemark(&t);
    let repo = t.path().join("repo");
    let c = cluster(&t, "pg", Some(&tm));
    c.psql("create table kept(i int)");
    c.workload(200);
    let b1 = backup_ok(&tm, &c, &["--label", "first"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.workload(200);
    c.psql("insert into kept select generate_series(1, 10)");
    let b2 = backup_ok(&tm, &c, &[])["id"].as_str().unwrap().to_string();
    c.psql("insert into kept select generate_series(11, 15)");
    let last = c.switch_wal();
    c.wait_archived(&last, Duration::from_secs(60));

    // Timeline 2 by a real promotion (the old server is gone), and a backup on it.
    drop(c);
    restore_ok(&t, &tm, "primary", &["--archive-mode", "preserve"]);
    let mut primary = start_copy(&t, "primary");
    primary.workload(500);
    let b3 = backup_ok(&tm, &primary, &[])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let last = primary.switch_wal();
    assert!(last.starts_with("00000002"), "{last}");
    primary.wait_archived(&last, Duration::from_secs(60));
    primary.stop();

    // No policy: refused, nothing changed.
    let before = repo_snapshot(&repo);
    let refused = tm.run(&["expire"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("no retention policy"),
        "{refused:?}"
    );

    // The dry run: names b1 and the WAL before b2, changes nothing.
    let policy = [
        ("TIDEMARK_RETENTION_COUNT", "2"),
        ("TIDEMARK_GC_GRACE", "0s"),
    ];
    let (code, dry) = expire(&tm, &policy, &["--dry-run"]);
    assert_eq!(code, 0, "{dry}");
    assert_eq!(
        snapshot_diff(&before, &repo_snapshot(&repo)),
        Vec::<String>::new(),
        "a dry run changes nothing"
    );
    assert_eq!(strings(&dry["expired_backups"]), [b1]);
    let kept: Vec<&str> = dry["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, [b2.as_str(), b3.as_str()]);
    let wal = dry["wal"].as_array().unwrap();
    assert!(!wal.is_empty(), "{dry}");
    assert!(
        wal.iter().all(|r| r["timeline"] == 1),
        "only timeline 1 before b2 goes: {dry}"
    );
    assert!(
        dry["gc"]["removed"].as_u64().unwrap() > 0,
        "b1's own chunks go: {dry}"
    );

    // The real run removes exactly that.
    let (code, done) = expire(&tm, &policy, &[]);
    assert_eq!(code, 0, "{done}");
    for field in [
        "expired_backups",
        "wal",
        "wal_keys",
        "histories",
        "restorable_since",
    ] {
        assert_eq!(done[field], dry[field], "{field}");
    }
    assert_eq!(done["gc"]["removed"], dry["gc"]["removed"]);
    assert_eq!(done["gc"]["removed_bytes"], dry["gc"]["removed_bytes"]);
    let after = repo_snapshot(&repo);
    let removed = snapshot_diff(&before, &after);
    // Only removals (and the collection marker's folder).
    let removed: Vec<String> = removed.into_iter().filter(|l| l != "+ gc").collect();
    assert!(removed.iter().all(|l| l.starts_with("- ")), "{removed:?}");
    let removed_keys = removed.iter().filter(|l| l.contains("/wal/")).count() as u64;
    assert_eq!(removed_keys, done["wal_keys"].as_u64().unwrap());
    assert_eq!(
        removed.iter().filter(|l| l.starts_with("- blobs/")).count() as u64,
        done["gc"]["removed"].as_u64().unwrap()
    );
    let info = tm.info();
    let listed: Vec<&str> = info["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [b2.as_str(), b3.as_str()]);
    // Again: nothing more to do.
    let (_, again) = expire(&tm, &policy, &[]);
    assert_eq!(strings(&again["expired_backups"]), Vec::<String>::new());
    assert_eq!(again["gc"]["removed"], 0);
    // verify: what is kept is whole.
    tm.ok(&["verify"]);

    // The guaranteed window's oldest point restores, on timeline 1 where it lies.
    let since = done["restorable_since"].as_str().unwrap().to_string();
    let oldest = t.path().join("oldest/data");
    tm.ok(&[
        "restore",
        "--pgdata",
        oldest.to_str().unwrap(),
        "--target-time",
        &since,
        "--target-timeline",
        "1",
        "--target-action",
        "promote",
    ]);
    let mut r = start_copy(&t, "oldest");
    assert_eq!(r.psql("select count(*) from kept"), "10");
    r.stop();
}

#[test]
fn expire_local_reports_the_window_after_a_wal_gap_truthfully() {
    need_pg!();
    let t = TestDir::new("expire-gap");
    let tm = local_tidemark(&t);
    let repo = t.path().join("repo");
    let c = cluster(&t, "pg", Some(&tm));
    c.psql("create table kept(i int)");
    c.workload(100);
    let b0 = backup_ok(&tm, &c, &[])["id"].as_str().unwrap().to_string();
    c.workload(100);
    let b1 = backup_ok(&tm, &c, &[])["id"].as_str().unwrap().to_string();
    // The segment after b1's start: its index entry goes missing below.
    c.psql("insert into kept select generate_series(1, 10)");
    let lost = c.switch_wal();
    let b2 = backup_ok(&tm, &c, &[])["id"].as_str().unwrap().to_string();
    c.psql("insert into kept select generate_series(11, 15)");
    let last = c.switch_wal();
    c.wait_archived(&last, Duration::from_secs(60));
    drop(c);

    // Remove `lost`'s index entry (not its claim, nor its blob): the archive has a gap
    // between b1's start and b2's.
    let entries: Vec<String> = repo_snapshot(&repo)
        .into_keys()
        .filter(|k| {
            let name = k.rsplit('/').next().unwrap();
            k.contains("/wal/")
                && name.starts_with(&format!("{lost}."))
                && !name.ends_with(".claim")
                && !name.ends_with(".content")
        })
        .collect();
    assert_eq!(entries.len(), 1, "one index entry of {lost}: {entries:?}");
    std::fs::remove_file(repo.join(&entries[0])).unwrap();

    let policy = [
        ("TIDEMARK_RETENTION_COUNT", "2"),
        ("TIDEMARK_GC_GRACE", "0s"),
    ];
    let before = repo_snapshot(&repo);
    let (code, dry) = expire(&tm, &policy, &["--dry-run"]);
    assert_eq!(code, 0, "{dry}");
    assert_eq!(
        snapshot_diff(&before, &repo_snapshot(&repo)),
        Vec::<String>::new(),
        "a dry run changes nothing"
    );
    let (code, done) = expire(&tm, &policy, &[]);
    assert_eq!(code, 0, "{done}");
    let info = tm.info();
    let stop_of = |id: &str| {
        info["backups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["id"] == id)
            .unwrap_or_else(|| panic!("backup {id} not listed: {info}"))["stop_time"]
            .clone()
    };
    for report in [&dry, &done] {
        // The count keeps b1 and b2, and the window would run from b1; the gap moves it
        // to b2, whose consistent point is its oldest moment.
        assert_eq!(strings(&report["expired_backups"]), [b0.as_str()]);
        assert_eq!(report["window_from_backup"], b2.as_str(), "{report}");
        let gaps = report["wal_gaps"].as_array().unwrap();
        assert_eq!(gaps.len(), 1, "{report}");
        assert_eq!(gaps[0]["timeline"], 1);
        assert_eq!(gaps[0]["first"], lost.as_str());
        assert_eq!(gaps[0]["last"], lost.as_str());
        assert_eq!(gaps[0]["segments"], 1);
        let warned: Vec<&str> = report["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap())
            .filter(|w| w.contains(&format!("{lost} .. {lost}")))
            .collect();
        assert_eq!(warned.len(), 1, "the gap is a warning: {report}");
        assert!(warned[0].contains(&b2), "{}", warned[0]);
        // Only WAL before b1 (the count's oldest backup) goes: nothing b1 or b2 needs.
        for range in report["wal"].as_array().unwrap() {
            assert!(
                range["last"].as_str().unwrap() < lost.as_str(),
                "{range} lies before the gap and b1: {report}"
            );
        }
    }
    for field in ["restorable_since", "wal", "wal_keys"] {
        assert_eq!(done[field], dry[field], "{field}");
    }
    let since = done["restorable_since"].as_str().unwrap().to_string();
    let b2_stop: chrono::DateTime<chrono::Utc> = serde_json::from_value(stop_of(&b2)).unwrap();
    let reported: chrono::DateTime<chrono::Utc> = since.parse().unwrap();
    // The window's length is measured from each run's own "now": the two runs may sit on
    // either side of a second's edge, so each is checked against the clock, not the other.
    let age = (chrono::Utc::now() - reported).num_seconds();
    for report in [&dry, &done] {
        let seconds = report["guaranteed_window_seconds"].as_i64().unwrap();
        assert!(
            seconds >= 0 && seconds <= age && age - seconds <= 60,
            "guaranteed_window_seconds {seconds} for a window that began {age} s ago: {report}"
        );
    }
    assert_eq!(
        reported, b2_stop,
        "the window starts at b2's consistent point"
    );
    let listed: Vec<&str> = info["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [b1.as_str(), b2.as_str()], "b1 and b2 are kept");

    // The reported window's oldest point restores, with the rows committed by then.
    let oldest = t.path().join("oldest/data");
    tm.ok(&[
        "restore",
        "--pgdata",
        oldest.to_str().unwrap(),
        "--target-time",
        &since,
        "--target-action",
        "promote",
    ]);
    let mut r = start_copy(&t, "oldest");
    assert_eq!(r.psql("select count(*) from kept"), "10");
    r.stop();
}

#[test]
fn expire_collects_an_interrupted_backups_chunks_after_the_grace_only() {
    need_pg!();
    let t = TestDir::new("expire-interrupted");
    let tm = local_tidemark(&t);
    let repo = t.path().join("repo");
    // Archiving that always fails: the backup stores its chunks, then gives up waiting
    // for its WAL, and records nothing.
    let mut c = Cluster::init(
        &t,
        "pg",
        ClusterOptions {
            password: Some(PASSWORD.into()),
            archive_command: Some("false".into()),
            ..Default::default()
        },
    );
    tm.init_stanza(&c);
    c.start();
    c.workload(1_000);
    let run = tm.run(&[
        "backup",
        "--pg-host",
        "127.0.0.1",
        "--pg-port",
        &c.port().to_string(),
        "--pg-user",
        "postgres",
        "--wal-timeout",
        "1",
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    c.stop();
    let left = blob_count(&repo);
    assert!(left > 0, "the interrupted backup left chunks");
    assert!(
        repo_snapshot(&repo)
            .keys()
            .all(|k| !k.starts_with("leases/") || k == "leases"),
        "the failed backup removed its lease"
    );

    // Younger than the grace: kept.
    let (code, young) = expire(&tm, &[("TIDEMARK_RETENTION_COUNT", "1")], &[]);
    assert_eq!(code, 0, "{young}");
    assert_eq!(young["gc"]["removed"], 0);
    assert_eq!(young["gc"]["young_kept"].as_u64().unwrap(), left as u64);
    assert_eq!(blob_count(&repo), left);

    // Past the grace: collected.
    std::thread::sleep(Duration::from_millis(1100));
    let (code, old) = expire(
        &tm,
        &[
            ("TIDEMARK_RETENTION_COUNT", "1"),
            ("TIDEMARK_GC_GRACE", "1s"),
        ],
        &[],
    );
    assert_eq!(code, 0, "{old}");
    assert_eq!(old["gc"]["removed"].as_u64().unwrap(), left as u64, "{old}");
    assert_eq!(blob_count(&repo), 0);
}

#[test]
fn expire_s3_beside_archive_push_and_a_backup_loses_nothing() {
    need_pg!();
    let Some(server) = S3Server::start_new() else {
        skip_or_fail!("s3s-fs not found");
    };
    let t = TestDir::new("expire-s3");
    let tm = s3_tidemark(&t, &server);
    let c = cluster(&t, "pg", Some(&tm));
    c.psql("create table rows(i int)");
    backup_ok(&tm, &c, &[]);
    c.psql("insert into rows select generate_series(1, 100)");
    backup_ok(&tm, &c, &[]);

    // Writes, WAL switches (archive-push) and a backup, while expire runs again and
    // again with a short grace.
    let policy = [
        ("TIDEMARK_RETENTION_COUNT", "1"),
        ("TIDEMARK_GC_GRACE", "2s"),
    ];
    let writer = {
        let c_port = c.port();
        let tm = tm.clone();
        std::thread::spawn(move || {
            let run = tm.run(&[
                "backup",
                "--pg-host",
                "127.0.0.1",
                "--pg-port",
                &c_port.to_string(),
                "--pg-user",
                "postgres",
                "--json",
            ]);
            assert_eq!(run.code, 0, "{run:?}");
        })
    };
    let mut skipped = 0;
    let mut removed = 0;
    for round in 0..4 {
        c.psql(&format!(
            "insert into rows select generate_series({0} * 1000, {0} * 1000 + 99)",
            round + 1
        ));
        c.switch_wal();
        let (code, v) = expire(&tm, &policy, &[]);
        assert_eq!(code, 0, "{v}");
        skipped += u64::from(!v["gc"]["sweep_skipped"].is_null());
        removed += v["gc"]["removed"].as_u64().unwrap();
        assert!(
            v["requests"].as_u64().unwrap() > 0,
            "S3 requests are counted"
        );
    }
    writer.join().unwrap();
    let last = c.switch_wal();
    c.wait_archived(&last, Duration::from_secs(60));
    let (code, v) = expire(&tm, &policy, &[]);
    assert_eq!(code, 0, "{v}");
    removed += v["gc"]["removed"].as_u64().unwrap();
    eprintln!("expire beside writers: {skipped} sweeps skipped, {removed} blobs removed");
    let rows = c.psql("select count(*) from rows");
    drop(c);

    // Everything kept is whole, and the newest backup restores to the end of the WAL.
    tm.ok(&["verify"]);
    let pgdata = t.path().join("restored/data");
    tm.ok(&["restore", "--pgdata", pgdata.to_str().unwrap()]);
    let mut r = start_copy(&t, "restored");
    assert_eq!(r.psql("select count(*) from rows"), rows);
    r.stop();
}
