//! Asynchronous archiving through the spool (`archive_async`), end to end.
//!
//! What is proven here (DESIGN.md's promise 1 in asynchronous mode, and 2 and 3):
//! - with S3 stopped, PostgreSQL's archiver keeps succeeding (the files are durable in the
//!   spool), the background drainer retries, and once S3 is back every segment reaches
//!   the repository and comes back byte-identical;
//! - the spool refuses what a synchronous push refuses (not WAL, another cluster) and a
//!   second content under a queued name, each with its exit code and nothing changed;
//!   a repeat push of the same content succeeds and writes nothing;
//! - a full spool pushes synchronously instead of dropping anything;
//! - `spool drain` moves the queue; a conflict with the repository or a spooled body that
//!   no longer decodes stays queued, is reported (exit 4), and changes no index entry;
//!   a body no entry names is queued again when it holds what its name says (a lost
//!   queue loses nothing), and kept aside otherwise; `spool forget` removes a stuck file
//!   only when the repository holds its content;
//! - an asynchronous push checks the name against the repository's index first
//!   (conflict: exit 4, as a synchronous push), and queues unchecked, saying so, while the
//!   store is down; a spool whose disk fails makes archive-push go direct.

use super::*;
use tidemark_pg::WalFileName;

/// `spool status --json`, parsed.
fn spool_status(tm: &Tidemark) -> Value {
    serde_json::from_str(&tm.ok(&["spool", "status", "--json"])).expect("status is JSON")
}

/// The names queued in the spool.
fn queued(tm: &Tidemark) -> Vec<String> {
    spool_status(tm)["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_string())
        .collect()
}

/// Waits until the spool is empty and no drainer is at work.
fn wait_spool_empty(tm: &Tidemark, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let status = spool_status(tm);
        if status["files"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the spool did not drain within {timeout:?}: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fetches `name` and compares it with `expected`.
fn assert_archived_as(t: &TestDir, tm: &Tidemark, name: &str, expected: &Path) {
    let dest = t.mkdir("fetched").join(name);
    let _ = std::fs::remove_file(&dest);
    tm.ok(&["archive-get", name, &dest.display().to_string()]);
    assert!(same_content(&dest, expected), "{name} came back different");
    std::fs::remove_file(&dest).unwrap();
}

#[test]
fn async_archiving_acknowledges_through_an_s3_outage_and_loses_nothing() {
    need_pg!();
    let mut server = s3_server!();
    let t = TestDir::new("spool-outage");
    let spool = t.mkdir("spool");
    let tm = s3_tidemark(&t, &server).with_args([
        "--retry-timeout",
        "2",
        "--archive-async",
        "true",
        "--spool-path",
        &spool.display().to_string(),
    ]);
    let c = archiving_cluster(&t, &tm, None, &[]);
    let first = switch_segments(&c, 1, 1000);
    c.wait_archived(&first[0], ARCHIVE_WAIT);
    wait_spool_empty(&tm, ARCHIVE_WAIT);

    server.stop();
    let before = c.archiver_stats();
    let during = switch_segments(&c, 3, 1000);
    // Acknowledged from the spool: PostgreSQL sees no failure and keeps nothing waiting.
    c.wait_archived(during.last().unwrap(), ARCHIVE_WAIT);
    assert_eq!(
        c.archiver_stats().failed_count,
        before.failed_count,
        "archiving failed while the spool could take the files: {}",
        c.log_tail(20)
    );
    let waiting = queued(&tm);
    for name in &during {
        assert!(
            waiting.contains(name),
            "{name} is neither in the repository (S3 is down) nor in the spool: {waiting:?}"
        );
    }
    // The drainer keeps trying, and says why it cannot finish.
    let deadline = Instant::now() + ARCHIVE_WAIT;
    loop {
        let status = spool_status(&tm);
        let entries = status["entries"].as_array().unwrap();
        if entries.iter().any(|e| e["last_error"].is_string()) {
            assert_eq!(status["draining"], true, "{status:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed drain attempt recorded: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    server.start();
    wait_spool_empty(&tm, ARCHIVE_WAIT);
    let done = assert_every_archived_segment_round_trips(&t, &tm, &c);
    for name in first.iter().chain(&during) {
        assert!(done.contains(name), "{name} lost: {done:?}");
    }
    let log = std::fs::read_to_string(spool.join("main/drain.log")).unwrap();
    assert!(
        log.contains("still queued") && log.contains("moved from the spool"),
        "the drainer's log does not tell the outage: {log}"
    );
}

#[test]
fn the_spool_refuses_what_a_push_refuses_and_replaces_nothing() {
    need_pg!();
    let a = Archived::new("spool-rules");
    let spool = a.t.mkdir("async-spool");
    let spooled_in = |dir: &Path| {
        a.tm.clone().with_args([
            "--archive-async",
            "true",
            "--spool-drainer",
            "manual",
            "--spool-path",
            &dir.display().to_string(),
        ])
    };
    let tm = spooled_in(&spool);
    let bodies = spool.join("main/wal");
    let spare = a.spooled(&a.spare);
    let push = |tm: &Tidemark, path: &Path| tm.run(&["archive-push", &path.display().to_string()]);

    // Queued: the spool has it, the repository does not yet.
    let repo_before = a.snapshot();
    let run = push(&tm, &spare);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(queued(&tm), vec![a.spare.clone()]);
    assert_eq!(
        snapshot_diff(&repo_before, &a.snapshot()),
        Vec::<String>::new()
    );

    // The same content again: success, nothing written.
    let spool_before = repo_snapshot(&bodies);
    assert_eq!(push(&tm, &spare).code, 0);
    assert_eq!(
        snapshot_diff(&spool_before, &repo_snapshot(&bodies)),
        Vec::<String>::new()
    );

    // Refused, each with its code and one line, and nothing changed anywhere.
    let mut altered = std::fs::read(&spare).unwrap();
    let at = altered.len() - 100;
    altered[at] ^= 0xFF;
    let altered_spare = a.t.write(&format!("altered/{}", a.spare), &altered);
    let spare_name: WalFileName = a.spare.parse().unwrap();
    let spare_segment = spare_name.segment().unwrap();
    let next = WalSegmentName {
        seg: spare_segment.seg + 1,
        ..spare_segment
    };
    let foreign = a.t.path().join(format!("foreign/{next}"));
    a.t.mkdir("foreign");
    let size = SegmentSize::new(16 * MIB).unwrap();
    write_synthetic_segment(&foreign, &next, size, 0x7312_0000_dead_beef);
    let not_wal =
        a.t.write(&format!("notwal/{next}"), &b"not WAL\n".repeat(1000));
    for (what, path, code, needle) in [
        (
            "another content",
            &altered_spare,
            4,
            "already queued in the spool",
        ),
        ("another cluster", &foreign, 3, "cluster"),
        ("not WAL", &not_wal, 1, "not a WAL segment"),
    ] {
        let run = push(&tm, path);
        assert_eq!(run.code, code, "{what}: {run:?}");
        assert_one_tidemark_line(&run, needle);
        assert_eq!(
            snapshot_diff(&spool_before, &repo_snapshot(&bodies)),
            Vec::<String>::new(),
            "{what} changed the spool"
        );
        assert_eq!(queued(&tm), vec![a.spare.clone()], "{what}");
        assert_eq!(
            snapshot_diff(&repo_before, &a.snapshot()),
            Vec::<String>::new(),
            "{what} changed the repository"
        );
    }

    // A spool with no room: the push goes to the repository directly.
    let more = switch_segments(&a._cluster, 2, 1000);
    a._cluster.wait_archived(&more[1], ARCHIVE_WAIT);
    let full = tm.clone().with_args(["--spool-max-mib", "0"]);
    assert_eq!(push(&full, &a.spooled(&more[0])).code, 0);
    assert_eq!(queued(&tm), vec![a.spare.clone()]);
    assert_archived_as(&a.t, &a.tm, &more[0], &a.spooled(&more[0]));

    // Draining moves the queue into the repository.
    let report: Value = serde_json::from_str(&tm.ok(&["spool", "drain", "--json"])).expect("JSON");
    assert_eq!(report["pushed"], 1, "{report:#}");
    assert_eq!(queued(&tm), Vec::<String>::new());
    assert_eq!(
        repo_snapshot(&bodies).len(),
        0,
        "bodies left after the drain"
    );
    assert_archived_as(&a.t, &a.tm, &a.spare, &spare);

    // A conflict with the repository: refused at once, exactly as a synchronous push
    // refuses it (exit 4, the bytes in quarantine, nothing indexed), nothing queued.
    let mut conflicting = std::fs::read(a.spooled(&more[0])).unwrap();
    let at = conflicting.len() - 100;
    conflicting[at] ^= 0xFF;
    let conflicting = a.t.write(&format!("conflicting/{}", more[0]), &conflicting);
    let run = push(&tm, &conflicting);
    assert_eq!(run.code, 4, "{run:?}");
    assert_one_tidemark_line(&run, "different content");
    assert_eq!(queued(&tm), Vec::<String>::new());
    assert_eq!(a.tm.info()["quarantined"], 1);
    assert_archived_as(&a.t, &a.tm, &more[0], &a.spooled(&more[0]));

    // While the repository cannot be read, the spool takes it unchecked (and says so);
    // the drain refuses it, quarantines the bytes, and keeps the entry for a person.
    std::fs::set_permissions(&a.repo, std::fs::Permissions::from_mode(0o000)).unwrap();
    let run = push(&tm, &conflicting);
    std::fs::set_permissions(&a.repo, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    let status = spool_status(&tm);
    assert_eq!(status["unchecked"], 1, "{status:#}");
    assert_eq!(status["entries"][0]["index_checked"], false, "{status:#}");
    let text = tm.ok(&["spool", "status"]);
    assert!(text.contains("1 queued unchecked"), "{text}");
    let run = tm.run(&["spool", "drain"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert_one_tidemark_line(&run, "cannot be moved into the repository");
    let status = spool_status(&tm);
    assert_eq!(status["files"], 1, "{status:#}");
    let error = status["entries"][0]["last_error"].as_str().unwrap_or("");
    assert!(error.contains("different content"), "{status:#}");
    assert_archived_as(&a.t, &a.tm, &more[0], &a.spooled(&more[0]));
    assert_eq!(a.tm.info()["quarantined"], 1);
    // The repository holds the refused bytes in quarantine: a person may now forget it.
    let out = tm.ok(&["spool", "forget", &more[0]]);
    assert!(out.contains("in quarantine"), "{out}");
    assert_eq!(queued(&tm), Vec::<String>::new());
    assert_eq!(
        repo_snapshot(&bodies).len(),
        0,
        "the forgotten body is still there"
    );

    // A spooled body that no longer decodes is never uploaded; a body no entry names is
    // removed.
    let spool2 = a.t.mkdir("async-spool-2");
    let tm2 = spooled_in(&spool2);
    assert_eq!(push(&tm2, &a.spooled(&more[1])).code, 0);
    let bodies2 = spool2.join("main/wal");
    let body = std::fs::read_dir(&bodies2)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .expect("a spooled body");
    let orphan = bodies2.join(format!("{next}.{}", "ab".repeat(32)));
    std::fs::copy(&body, &orphan).unwrap();
    let mut rotten = std::fs::read(&body).unwrap();
    let at = rotten.len() / 2;
    rotten[at] ^= 0x55;
    std::fs::write(&body, &rotten).unwrap();
    let run = tm2.run(&["spool", "drain"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert_one_tidemark_line(&run, "cannot be moved into the repository");
    // Its content is not what its name says: kept aside for a person, never uploaded.
    assert!(!orphan.exists(), "the orphan body is still there");
    let aside = bodies2.join(format!(
        ".damaged-{}",
        orphan.file_name().unwrap().to_string_lossy()
    ));
    assert!(aside.is_file(), "the orphan body was not kept aside");
    assert!(body.exists(), "the queued body was removed");
    assert_eq!(queued(&tm2), vec![more[1].clone()]);
    let dest = a.t.path().join("fetched").join(&more[1]);
    let run =
        a.tm.run(&["archive-get", &more[1], &dest.display().to_string()]);
    assert_eq!(
        run.code, 1,
        "a rotten spooled body reached the repository: {run:?}"
    );
}

/// A spool whose disk fails (here its `wal/` folder is not writable for the user
/// PostgreSQL runs as; a full disk takes the same path) makes archive-push go direct: the
/// repository is healthy, so the file is archived there, and the spool is left as it was.
#[test]
fn a_failing_spool_disk_falls_back_to_a_synchronous_push() {
    need_pg!();
    let a = Archived::new("spool-disk");
    let spool = a.t.mkdir("async-spool");
    let tm = a.tm.clone().with_args([
        "--archive-async",
        "true",
        "--spool-drainer",
        "manual",
        "--spool-path",
        &spool.display().to_string(),
    ]);
    let bodies = a.t.mkdir("async-spool/main/wal");
    std::fs::set_permissions(&bodies, std::fs::Permissions::from_mode(0o555)).unwrap();
    let run = tm.run(&["archive-push", &a.spooled(&a.spare).display().to_string()]);
    std::fs::set_permissions(&bodies, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(run.code, 0, "push with an unwritable spool: {run:?}");
    assert_archived_as(&a.t, &a.tm, &a.spare, &a.spooled(&a.spare));
    assert_eq!(queued(&tm), Vec::<String>::new());
    assert_eq!(
        repo_snapshot(&bodies).len(),
        0,
        "{:?}",
        repo_snapshot(&bodies)
    );
}

/// An asynchronous push checks the name against the repository's index before it
/// acknowledges: conflicting content exits 4 with its bytes in quarantine, as a
/// synchronous push does, and the same content again is a success with nothing queued.
/// With the store down, the check gives up within seconds (not `retry_timeout`), and the
/// file is queued and listed as unchecked.
#[test]
fn an_async_push_checks_the_index_and_queues_unchecked_while_the_store_is_down() {
    need_pg!();
    let mut server = s3_server!();
    let t = TestDir::new("spool-check");
    let (c, wal, names) = spooling_cluster(&t, "pg", 3);
    let spool = t.mkdir("spool");
    let sync = s3_tidemark(&t, &server);
    sync.init_stanza(&c);
    let tm = sync.clone().with_args([
        "--retry-timeout",
        "60",
        "--archive-async",
        "true",
        "--spool-drainer",
        "manual",
        "--spool-path",
        &spool.display().to_string(),
    ]);
    let path = |n: &str| wal.join(n).display().to_string();
    sync.ok(&["archive-push", &path(&names[0])]);

    let mut altered = std::fs::read(wal.join(&names[0])).unwrap();
    let at = altered.len() - 100;
    altered[at] ^= 0xFF;
    let altered = t.write(&format!("altered/{}", names[0]), &altered);
    let run = tm.run(&["archive-push", &altered.display().to_string()]);
    assert_eq!(run.code, 4, "async push of conflicting content: {run:?}");
    assert_one_tidemark_line(&run, "different content");
    assert!(run.stderr.contains("quarantine"), "{run:?}");
    let info = sync.info();
    assert_eq!(info["quarantined"], 1, "{info:#}");
    assert_eq!(queued(&tm), Vec::<String>::new());
    assert_archived_as(&t, &sync, &names[0], &wal.join(&names[0]));
    // The archived content again: a success, nothing queued.
    tm.ok(&["archive-push", &path(&names[0])]);
    assert_eq!(queued(&tm), Vec::<String>::new());

    // Checked and queued while the store is up.
    tm.ok(&["archive-push", &path(&names[1])]);
    assert_eq!(queued(&tm), vec![names[1].clone()]);
    server.stop();
    let started = Instant::now();
    let run = tm.run(&["archive-push", &path(&names[2])]);
    let took = started.elapsed();
    assert_eq!(run.code, 0, "async push with the store down: {run:?}");
    assert!(
        took < Duration::from_secs(15),
        "the check waited {took:?} (retry_timeout is 60 s)"
    );
    let status = spool_status(&tm);
    assert_eq!(status["files"], 2, "{status:#}");
    assert_eq!(status["unchecked"], 1, "{status:#}");
    let entries = status["entries"].as_array().unwrap();
    assert_eq!(entries[0]["index_checked"], true, "{status:#}");
    assert_eq!(entries[1]["index_checked"], false, "{status:#}");
    let text = tm.ok(&["spool", "status"]);
    assert!(text.contains("1 queued unchecked"), "{text}");

    server.start();
    let report: Value = serde_json::from_str(&tm.ok(&["spool", "drain", "--json"])).expect("JSON");
    assert_eq!(report["pushed"], 2, "{report:#}");
    for name in &names {
        assert_archived_as(&t, &sync, name, &wal.join(name));
    }
}

/// A queue folder lost (a person removed a damaged `queue/`): the next drain queues
/// every acknowledged body again, from its file name and content, and moves it into the
/// repository; none is deleted unarchived.
#[test]
fn a_lost_queue_is_rebuilt_from_the_bodies_and_nothing_is_deleted() {
    need_pg!();
    let a = Archived::new("spool-lost-queue");
    let spool = a.t.mkdir("async-spool");
    let tm = a.tm.clone().with_args([
        "--archive-async",
        "true",
        "--spool-drainer",
        "manual",
        "--spool-path",
        &spool.display().to_string(),
    ]);
    let mut names = vec![a.spare.clone()];
    names.extend(switch_segments(&a._cluster, 2, 1000));
    a._cluster
        .wait_archived(names.last().unwrap(), ARCHIVE_WAIT);
    for name in &names {
        tm.ok(&["archive-push", &a.spooled(name).display().to_string()]);
    }
    assert_eq!(queued(&tm), names);
    let bodies = spool.join("main/wal");
    assert_eq!(repo_snapshot(&bodies).len(), names.len());

    // `tidemark status` counts what waits from the bodies themselves (issue 16), without
    // opening the queue: a lost queue hides nothing from it.
    let at_risk = |tm: &Tidemark| -> Value {
        let run = tm.run(&["status", "--json"]);
        serde_json::from_str::<Value>(&run.stdout)
            .unwrap_or_else(|e| panic!("status --json ({e}): {run:?}"))["spool"]
            .clone()
    };
    let before = at_risk(&tm);
    assert_eq!(before["files"], names.len(), "{before:#}");
    assert!(
        before["oldest_seconds"].as_f64().unwrap() >= 0.0,
        "{before:#}"
    );

    std::fs::remove_dir_all(spool.join("main/queue")).unwrap();
    let status = spool_status(&tm);
    assert_eq!(
        (status["files"].as_u64(), status["unqueued"].as_u64()),
        (Some(0), Some(names.len() as u64)),
        "{status:#}"
    );
    assert_eq!(at_risk(&tm)["files"], names.len());
    let report: Value = serde_json::from_str(&tm.ok(&["spool", "drain", "--json"])).expect("JSON");
    assert_eq!(report["pushed"], names.len(), "{report:#}");
    assert_eq!(report["remaining"], 0, "{report:#}");
    for name in &names {
        assert_archived_as(&a.t, &a.tm, name, &a.spooled(name));
    }
    assert_eq!(queued(&tm), Vec::<String>::new());
    assert_eq!(
        repo_snapshot(&bodies).len(),
        0,
        "bodies left after the drain"
    );
}
