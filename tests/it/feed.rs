//! The replay feed: `archive-get` prefetching under real point-in-time restores.
//!
//! Each restored server's `restore_command` is wrapped (the restore's own, with
//! `TIDEMARK_LOG_LEVEL=debug` and its stderr in a log, then `cp %p` of every file it
//! handed over into a folder), so that the test sees exactly what PostgreSQL was given and
//! by which path.
//!
//! What is proven, on a local repository and on S3 (s3s-fs):
//! - a restore to a time in the middle of the WAL: every segment PostgreSQL was handed is
//!   byte for byte an archived content of that name (its sha256 is the digest in the
//!   name's index entry), most were handed over from the prefetch folder (the debug line of
//!   the fast path, counted: the test fails if prefetching silently never happens), the
//!   restored server holds the marker committed before the target and not the one after,
//!   and once recovery is over no prefetcher is left running and its folder is gone;
//! - a restore to `latest`: replay reaches the last marker, PostgreSQL's question for the
//!   segment after the archive's end is answered "not in the archive" (exit 1) and
//!   recovery ends there, with no prefetcher and no folder left;
//! - (local) timelines: a restore to the end of timeline 2, which forked from timeline 1
//!   while timeline 1 went on (so both timelines hold segments of the same numbers after
//!   the fork): the prefetcher follows timeline 2's history, and timeline 2's segments come
//!   from the prefetch folder, each the archived content of its name;
//! - two `archive-get` calls at once for each of the prefetched segments: both succeed
//!   and both files are the archived content (a file is handed over once; the other call
//!   fetches directly);
//! - (local) a blob corrupted in the middle of the WAL makes recovery stop with
//!   PostgreSQL's FATAL on that segment: never a promotion, as a "not found" would cause;
//! - (S3) the S3 server stopped while the prefetcher works (depth 2, each call slowed down
//!   so that recovery is still running): recovery stops with a FATAL, never promotes;
//! - (local) `.partial`: with `--latest`, a segment the archive lacks is served from its
//!   archived `.partial` file, byte for byte, only while nothing newer exists (a later
//!   timeline's history file stops it) and never without `--latest`.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::backup::{backup_ok, local_tidemark, s3_tidemark, wait_until, PASSWORD};
use crate::harness::pg::{chown_to_user, pg_bin, Cluster, ClusterOptions, TestDir};
use crate::harness::s3::S3Server;
use crate::harness::tidemark::{sha256_file, Tidemark};
use crate::skip_or_fail;

/// The fast path's debug line (agent/src/cmd/archive_get.rs).
const HANDED_OVER: &str = "handed over from the prefetch folder";

macro_rules! need_pg {
    () => {
        if pg_bin().is_none() {
            skip_or_fail!(
                "PostgreSQL server binaries not found (/usr/lib/postgresql/15/bin, or set PG_BIN)"
            );
        }
    };
}

/// A cluster with 1 MiB segments archiving through `tm`.
fn archiving_cluster(t: &TestDir, tm: &Tidemark) -> Cluster {
    let mut c = Cluster::init(
        t,
        "pg",
        ClusterOptions {
            wal_segsize_mb: Some(1),
            password: Some(PASSWORD.into()),
            archive_command: Some(format!("{} archive-push %p", tm.shell_prefix())),
            ..Default::default()
        },
    );
    tm.init_stanza(&c);
    c.start();
    c.psql("create table marker(id int primary key)");
    c
}

/// What the workload left: the target time between markers 1 and 2, and the last
/// archived segment.
struct Workload {
    target: String,
    last_segment: String,
}

/// A backup, about 12 segments of writes, marker 1, the target time, marker 2, about 12
/// more segments, marker 3, everything archived.
fn workload(c: &Cluster, tm: &Tidemark) -> Workload {
    backup_ok(tm, c, &[]);
    let segments = |n: usize| {
        for _ in 0..n {
            c.workload(2000);
            c.psql("select pg_switch_wal()");
        }
    };
    segments(6);
    c.psql("insert into marker values (1)");
    std::thread::sleep(Duration::from_millis(50));
    let target = c.psql("select now()::text");
    std::thread::sleep(Duration::from_millis(50));
    c.psql("insert into marker values (2)");
    segments(6);
    c.psql("insert into marker values (3)");
    let last_segment = c.psql("select pg_walfile_name(pg_switch_wal())");
    c.wait_archived(&last_segment, Duration::from_secs(60));
    Workload {
        target,
        last_segment,
    }
}

/// Replaces the restored copy's `restore_command` with the wrapper of the module doc;
/// returns (the log, the folder of handed-over files).
fn wrap_restore_command(t: &TestDir, name: &str) -> (PathBuf, PathBuf) {
    let pgdata = t.path().join(name).join("data");
    let log = t.path().join(name).join("get.log");
    let got = t.mkdir(&format!("{name}/got"));
    let conf = pgdata.join("postgresql.auto.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let mut found = false;
    let rewritten: Vec<String> = text
        .lines()
        .map(|line| match line.strip_prefix("restore_command = '") {
            Some(rest) => {
                found = true;
                let original = rest.strip_suffix('\'').expect("a quoted restore_command");
                format!(
                    "restore_command = 'TIDEMARK_LOG_LEVEL=debug {original} 2>>{} && cp %p {}/%f'",
                    log.display(),
                    got.display()
                )
            }
            None => line.to_string(),
        })
        .collect();
    assert!(found, "no restore_command in {text}");
    std::fs::write(&conf, rewritten.join("\n") + "\n").unwrap();
    std::fs::write(&log, b"").unwrap();
    chown_to_user(&log);
    (log, got)
}

/// The names `<wal name>.<sha256>` of every WAL index entry under `root` (a local
/// repository or an S3 server's folder).
fn index_entries(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().contains("/wal/") && !name.ends_with(".claim") {
                out.insert(name);
            }
        }
    }
    out
}

/// Asserts every handed-over segment is an archived content of its name; returns how many
/// segments there were.
fn assert_archived_content(label: &str, got: &Path, store_root: &Path) -> usize {
    let entries = index_entries(store_root);
    let mut segments = 0;
    for entry in std::fs::read_dir(got).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let digest = sha256_file(&entry.path());
        assert!(
            entries.contains(&format!("{name}.{digest}")),
            "{label}: PostgreSQL was handed {name} with sha256 {digest}, which the archive does not hold under that name"
        );
        if name.len() == 24 {
            segments += 1;
        }
    }
    segments
}

/// Processes whose command line holds `needle` (the prefetchers of one data directory).
fn processes_with(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains("--prefetch-worker") && text.contains(needle) {
                out.push(text);
            }
        }
    }
    out
}

/// After recovery: no prefetcher left for `pgdata`, and no prefetch folder (only the
/// prefetchers' logs) in its `pg_wal/tidemark-prefetch`.
fn assert_nothing_left(label: &str, pgdata: &Path) {
    let needle = pgdata.display().to_string();
    wait_until(
        &format!("{label}: the prefetcher to exit"),
        Duration::from_secs(10),
        || processes_with(&needle).is_empty(),
    );
    let dir = pgdata.join("pg_wal/tidemark-prefetch");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let left: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| !n.ends_with(".log"))
            .collect();
        assert!(
            left.is_empty(),
            "{label}: left in {}: {left:?}",
            dir.display()
        );
    }
}

/// `restore --target latest --target-action promote` into `<t>/<name>/data` with the
/// wrapped restore_command; returns (the data directory, the get log).
fn restore_latest_wrapped(t: &TestDir, tm: &Tidemark, name: &str) -> (PathBuf, PathBuf) {
    let pgdata = t.path().join(name).join("data");
    tm.ok(&[
        "restore",
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--target",
        "latest",
        "--target-action",
        "promote",
    ]);
    let (log, _got) = wrap_restore_command(t, name);
    (pgdata, log)
}

/// Starts the restored copy `name` without waiting for it (it may never accept
/// connections); returns it, not marked as running.
fn start_unwaited(t: &TestDir, name: &str) -> Cluster {
    let r = Cluster::adopt(t, name, None, Some(PASSWORD), &[]);
    let out = r
        .program("pg_ctl")
        .args(["start", "-D"])
        .arg(r.data_dir())
        .arg("-l")
        .arg(r.log_path())
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_ctl start: {out:?}");
    r
}

/// Waits until `r` has shut down, and asserts it stopped recovery with the FATAL of a
/// failed `restore_command` (naming `file`, when given) instead of ending it.
fn assert_recovery_stopped(r: &Cluster, file: Option<&str>) {
    let server_log = || std::fs::read_to_string(r.log_path()).unwrap_or_default();
    wait_until("the server to stop", Duration::from_secs(120), || {
        server_log().contains("database system is shut down")
    });
    let text = server_log();
    let fatal = match file {
        Some(f) => format!("FATAL:  could not restore file \"{f}\" from archive"),
        None => "FATAL:  could not restore file".to_string(),
    };
    assert!(
        text.contains(&fatal),
        "recovery did not stop ({fatal}):\n{text}"
    );
    assert!(
        !text.contains("archive recovery complete") && !text.contains("selected new timeline"),
        "recovery ended instead of stopping:\n{text}"
    );
    assert!(
        r.data_dir().join("recovery.signal").exists(),
        "recovery is not over"
    );
}

/// Restores into `<t>/<name>/data` with `target`, wraps its restore_command, starts it,
/// waits until it accepts writes; returns (the server, the get log, the got folder).
fn restore_and_start(
    t: &TestDir,
    tm: &Tidemark,
    name: &str,
    target: &[&str],
    timeline: u32,
) -> (Cluster, PathBuf, PathBuf) {
    let pgdata = t.path().join(name).join("data");
    let mut args = vec!["restore", "--pgdata", pgdata.to_str().unwrap()];
    args.extend(target);
    args.extend(["--target-action", "promote"]);
    tm.ok(&args);
    let auto = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains(&format!("archive-get --timeline {timeline} ")),
        "{name}: the restore_command does not name timeline {timeline} to follow: {auto}"
    );
    let (log, got) = wrap_restore_command(t, name);
    let mut r = Cluster::adopt(t, name, None, Some(PASSWORD), &[]);
    r.start();
    wait_until(
        &format!("{name}: promotion"),
        Duration::from_secs(120),
        || r.try_psql("select pg_is_in_recovery()").as_deref() == Ok("f"),
    );
    (r, log, got)
}

fn markers(c: &Cluster) -> String {
    c.psql("select string_agg(id::text, ',' order by id) from marker")
}

/// The restores of the module doc, on `tm` whose store keeps its files under `root`.
fn feed_under_restores(t: &TestDir, tm: &Tidemark, store_root: &Path) {
    let c = archiving_cluster(t, tm);
    let w = workload(&c, tm);

    // To a time between markers 1 and 2.
    let (r, log, got) = restore_and_start(t, tm, "to-time", &["--target-time", &w.target], 1);
    assert_eq!(
        markers(&r),
        "1",
        "the restore to the target holds marker 1 only"
    );
    let handed = assert_archived_content("to-time", &got, store_root);
    let log_text = std::fs::read_to_string(&log).unwrap();
    let prefetched = log_text.matches(HANDED_OVER).count();
    assert!(
        handed >= 8 && prefetched * 2 >= handed,
        "to-time: {prefetched} of {handed} segments came from the prefetch folder:\n{log_text}"
    );
    let auto = std::fs::read_to_string(t.path().join("to-time/data/postgresql.auto.conf")).unwrap();
    assert!(
        auto.contains("--until "),
        "a target inside the archive names its last segment: {auto}"
    );
    drop(r);
    assert_nothing_left("to-time", &t.path().join("to-time/data"));

    // To the end of the archive.
    let (r, log, got) = restore_and_start(t, tm, "to-latest", &["--target", "latest"], 1);
    assert_eq!(
        markers(&r),
        "1,2,3",
        "the restore to latest replays everything"
    );
    let handed = assert_archived_content("to-latest", &got, store_root);
    let log_text = std::fs::read_to_string(&log).unwrap();
    let prefetched = log_text.matches(HANDED_OVER).count();
    assert!(
        prefetched * 2 >= handed,
        "to-latest: {prefetched} of {handed} segments came from the prefetch folder:\n{log_text}"
    );
    assert!(
        got.join(&w.last_segment).exists(),
        "to-latest: the last archived segment {} was handed over",
        w.last_segment
    );
    drop(r);
    assert_nothing_left("to-latest", &t.path().join("to-latest/data"));
    // The segment after the end: not in the archive.
    let next = next_segment(&w.last_segment);
    let probe = t.mkdir("probe");
    let run = tm.run(&["archive-get", &next, probe.join("x").to_str().unwrap()]);
    assert_eq!(run.code, 1, "the segment after the archive's end: {run:?}");
}

/// The name of the segment after `name` (1 MiB segments: 4096 per log).
fn next_segment(name: &str) -> String {
    let tli = &name[..8];
    let log = u32::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u32::from_str_radix(&name[16..], 16).unwrap();
    let (log, seg) = if seg + 1 == 4096 {
        (log + 1, 0)
    } else {
        (log, seg + 1)
    };
    format!("{tli}{log:08X}{seg:08X}")
}

#[test]
fn feed_under_restores_local() {
    need_pg!();
    let t = TestDir::new("feed-local");
    let tm = local_tidemark(&t);
    feed_under_restores(&t, &tm, &t.path().join("repo"));
}

#[test]
fn feed_under_restores_s3() {
    need_pg!();
    let Some(server) = S3Server::start_new() else {
        skip_or_fail!(
            "s3s-fs not found (install: cargo install s3s-fs@0.14.1 --features binary --locked)"
        );
    };
    let t = TestDir::new("feed-s3");
    let tm = s3_tidemark(&t, &server);
    let config = t.path().join("tidemark.toml");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    feed_under_restores(&t, &tm, &server.data_dir());
}

/// Two calls at once for each prefetched segment: both succeed with the archived content.
#[test]
fn feed_two_calls_at_once() {
    need_pg!();
    let t = TestDir::new("feed-concurrent");
    let tm = local_tidemark(&t);
    let c = archiving_cluster(&t, &tm);
    let w = workload(&c, &tm);
    let archived = c.archived_segments();
    drop(c);
    // A folder shaped like pg_wal, so that the prefetch folder is where a server's is.
    let pg_wal = t.mkdir("data/pg_wal");
    let first = &archived[archived.len() - 10];
    let run = tm.run(&[
        "archive-get",
        first,
        pg_wal.join("RECOVERYXLOG").to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let folder_root = pg_wal.join("tidemark-prefetch");
    let later: Vec<&String> = archived[archived.len() - 9..].iter().collect();
    let ready = || {
        std::fs::read_dir(&folder_root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
            .filter(|f| later.iter().any(|n| **n == f.file_name().to_string_lossy()))
            .count()
    };
    wait_until(
        "the prefetcher to fill its folder",
        Duration::from_secs(30),
        || ready() == later.len(),
    );
    let entries = index_entries(&t.path().join("repo"));
    for name in &later {
        let dests = [pg_wal.join("A"), pg_wal.join("B")];
        let children: Vec<_> = dests
            .iter()
            .map(|d| {
                tm.command(&["archive-get", name.as_str(), d.to_str().unwrap()])
                    .env("TIDEMARK_LOG_LEVEL", "debug")
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outputs: Vec<_> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let mut from_folder = 0;
        for (out, dest) in outputs.iter().zip(&dests) {
            assert!(out.status.success(), "{name}: {out:?}");
            let digest = sha256_file(dest);
            assert!(
                entries.contains(&format!("{name}.{digest}")),
                "{name}: {} holds {digest}",
                dest.display()
            );
            from_folder += usize::from(String::from_utf8_lossy(&out.stderr).contains(HANDED_OVER));
            std::fs::remove_file(dest).unwrap();
        }
        assert_eq!(
            from_folder, 1,
            "{name}: exactly one call has the prefetched file"
        );
    }
    assert_eq!(w.last_segment, **later.last().unwrap());
}

/// A blob corrupted in the middle: recovery stops with a FATAL on it, never promotes.
#[test]
fn feed_store_failure_stops_recovery() {
    need_pg!();
    let t = TestDir::new("feed-failure");
    let tm = local_tidemark(&t);
    let c = archiving_cluster(&t, &tm);
    workload(&c, &tm);
    let archived = c.archived_segments();
    drop(c);
    let broken = archived[archived.len() - 6].clone();
    let repo = t.path().join("repo");
    let entry = index_entries(&repo)
        .into_iter()
        .find(|e| e.starts_with(&format!("{broken}.")))
        .unwrap();
    let hex = entry.rsplit_once('.').unwrap().1.to_string();
    let blob = repo.join("blobs").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&blob).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();

    let (_pgdata, log) = restore_latest_wrapped(&t, &tm, "broken");
    let r = start_unwaited(&t, "broken");
    assert_recovery_stopped(&r, Some(&broken));
    let get_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        get_log.contains(&hex) || get_log.contains(&broken),
        "archive-get named the broken content:\n{get_log}"
    );
    assert!(
        get_log.contains(HANDED_OVER),
        "segments before it came from the prefetch folder"
    );
}

/// `.partial` served for `--latest` only while it is the newest WAL.
#[test]
fn feed_partial_for_latest() {
    need_pg!();
    let t = TestDir::new("feed-partial");
    let tm = local_tidemark(&t);
    let c = archiving_cluster(&t, &tm);
    c.workload(500);
    let last = c.psql("select pg_walfile_name(pg_switch_wal())");
    c.wait_archived(&last, Duration::from_secs(60));
    c.workload(500);
    c.psql("checkpoint");
    // The segment being written, archived as a `.partial` (as the streaming issue will).
    let current = c.psql("select pg_walfile_name(pg_current_wal_insert_lsn())");
    assert_eq!(current, next_segment(&last));
    let spare = t.mkdir("spare");
    let partial = spare.join(format!("{current}.partial"));
    std::fs::copy(c.pg_wal().join(&current), &partial).unwrap();
    chown_to_user(&partial);
    tm.ok(&["archive-push", partial.to_str().unwrap()]);

    let dest = spare.join("got");
    let get = |latest: bool| {
        let _ = std::fs::remove_file(&dest);
        let mut args = vec!["archive-get"];
        if latest {
            args.push("--latest");
        }
        args.extend([current.as_str(), dest.to_str().unwrap()]);
        tm.run(&args)
    };
    assert_eq!(
        get(false).code,
        1,
        "without --latest the full segment is not there"
    );
    let run = get(true);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        sha256_file(&dest),
        sha256_file(&partial),
        "the partial's bytes"
    );
    // A later timeline exists: the partial is no longer the end of the WAL.
    let history = spare.join("00000002.history");
    std::fs::write(
        &history,
        format!(
            "1\t{}\tno recovery target specified\n",
            c.psql("select pg_current_wal_lsn()")
        ),
    )
    .unwrap();
    chown_to_user(&history);
    tm.ok(&["archive-push", history.to_str().unwrap()]);
    assert_eq!(get(true).code, 1, "a newer timeline exists: not served");
}

/// A restore to the end of timeline 2, forked while timeline 1 went on.
#[test]
fn feed_follows_the_timeline() {
    need_pg!();
    let t = TestDir::new("feed-timelines");
    let tm = local_tidemark(&t);
    let c = archiving_cluster(&t, &tm);
    backup_ok(&tm, &c, &[]);
    let segments = |c: &Cluster, n: usize| {
        for _ in 0..n {
            c.workload(2000);
            c.psql("select pg_switch_wal()");
        }
    };
    segments(&c, 3);
    c.psql("insert into marker values (1)");
    let fork = c.psql("select pg_walfile_name(pg_switch_wal())");
    c.wait_archived(&fork, Duration::from_secs(60));

    // The copy that becomes timeline 2, archiving into the same stanza.
    let pgdata = t.path().join("primary2/data");
    tm.ok(&[
        "restore",
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--archive-mode",
        "preserve",
        "--target",
        "latest",
        "--target-action",
        "promote",
    ]);
    let mut copy = Cluster::adopt(&t, "primary2", None, Some(PASSWORD), &[]);
    copy.start();
    wait_until("the copy's promotion", Duration::from_secs(120), || {
        copy.try_psql("select pg_is_in_recovery()").as_deref() == Ok("f")
    });
    // Both go on: timeline 1 past the fork, timeline 2 further.
    segments(&c, 4);
    c.psql("insert into marker values (2)");
    let last1 = c.psql("select pg_walfile_name(pg_switch_wal())");
    c.wait_archived(&last1, Duration::from_secs(60));
    segments(&copy, 8);
    copy.psql("insert into marker values (102)");
    let last2 = copy.psql("select pg_walfile_name(pg_switch_wal())");
    copy.wait_archived(&last2, Duration::from_secs(60));
    assert!(last2.starts_with("00000002"), "{last2}");
    copy.stop();
    drop(c);

    let (r, log, got) = restore_and_start(&t, &tm, "on2", &["--target", "latest"], 2);
    assert_eq!(
        markers(&r),
        "1,102",
        "timeline 2's end: its marker, not timeline 1's later one"
    );
    drop(r);
    assert_archived_content("on2", &got, &t.path().join("repo"));
    let log_text = std::fs::read_to_string(&log).unwrap();
    let prefetched_on2 = log_text
        .lines()
        .filter(|l| l.contains(HANDED_OVER) && l.contains(" 00000002"))
        .count();
    assert!(
        prefetched_on2 >= 5,
        "only {prefetched_on2} segments of timeline 2 came from the prefetch folder:\n{log_text}"
    );
    assert_nothing_left("on2", &t.path().join("on2/data"));
}

/// The S3 server stops while the prefetcher works: recovery stops, it does not end.
#[test]
fn feed_s3_stopping_mid_prefetch_stops_recovery() {
    need_pg!();
    let Some(mut server) = S3Server::start_new() else {
        skip_or_fail!(
            "s3s-fs not found (install: cargo install s3s-fs@0.14.1 --features binary --locked)"
        );
    };
    let t = TestDir::new("feed-s3-failure");
    let tm = s3_tidemark(&t, &server);
    let config = t.path().join("tidemark.toml");
    let c = archiving_cluster(&t, &tm);
    workload(&c, &tm);
    drop(c);
    // Two segments ahead at most, and a store that stays down fails a call in 2 s.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("retry_timeout = 2\nprefetch_depth = 2\n");
    std::fs::write(&config, text).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    chown_to_user(&config);

    let (pgdata, log) = restore_latest_wrapped(&t, &tm, "down");
    // Each call 0.3 s slower: recovery is still running when the store goes.
    let conf = pgdata.join("postgresql.auto.conf");
    let slowed = std::fs::read_to_string(&conf).unwrap().replace(
        "restore_command = 'TIDEMARK",
        "restore_command = 'sleep 0.3; TIDEMARK",
    );
    std::fs::write(&conf, slowed).unwrap();
    let r = start_unwaited(&t, "down");
    let get_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(
        "a segment handed over from the prefetch folder",
        Duration::from_secs(60),
        || get_log().contains(HANDED_OVER),
    );
    server.stop();
    assert_recovery_stopped(&r, None);
    assert!(
        get_log().contains("tidemark: archive-get: "),
        "archive-get said why it failed:\n{}",
        get_log()
    );
}
