//! `tidemark backup` and `tidemark restore` against real PostgreSQL 15 clusters, through
//! the binary, on a local repository and on S3 (s3s-fs).
//!
//! What is proven here:
//! - a backup taken while pgbench writes, of a cluster with a tablespace and several
//!   databases, over scram-sha-256 TCP, restores (tablespace relocated with
//!   `--tablespace-map`) into a folder that `pg_verifybackup` accepts with the WAL fetched
//!   from the archive; the restored server replays the archive to its end, and its data
//!   equals the original's, including what was committed after the backup;
//! - a later backup after a small change adds only a few chunks;
//! - TLS `require` works for the whole backup;
//! - a backup killed midway leaves no listed backup, and the next one succeeds;
//! - archiving off, a role without `REPLICATION`, no `pg_hba.conf` replication line,
//!   another cluster, and WAL that never reaches the repository each fail with a specific
//!   one-line error and list no backup;
//! - a restored copy, started as is, promotes without archiving into the stanza; with
//!   `--archive-mode preserve` it archives its new timeline, which later restores name;
//! - a recovery target in the backup's `postgresql.auto.conf` (and another kind in
//!   `postgresql.conf`) does not apply: the restore replays to the end of the archive;
//! - one damaged backup record stops neither the next backup nor the default restore.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::pg::{chown_to_user, pg_bin, server_bin, Cluster, ClusterOptions, TestDir};
use crate::harness::s3::{unique_prefix, S3Server};
use crate::harness::tidemark::{sha256_file, Run, Tidemark};
use crate::skip_or_fail;

pub(crate) const PASSWORD: &str = "secret";

macro_rules! need_pg {
    () => {
        if pg_bin().is_none() {
            skip_or_fail!(
                "PostgreSQL server binaries not found (/usr/lib/postgresql/15/bin, or set PG_BIN)"
            );
        }
    };
}

/// A runner over a fresh local repository, with the cluster password in its environment.
pub(crate) fn local_tidemark(t: &TestDir) -> Tidemark {
    let repo = t.mkdir("repo");
    Tidemark::new(t)
        .with_args(["--repo", &format!("file://{}", repo.display())])
        .with_env("PGPASSWORD", PASSWORD)
}

/// A runner over a fresh prefix of `server`'s bucket, configured by a config file (the
/// restored server's restore_command names the file, and finds the credentials in it).
pub(crate) fn s3_tidemark(t: &TestDir, server: &S3Server) -> Tidemark {
    let config = format!(
        "repo = \"{}\"\ns3_endpoint = \"{}\"\ns3_region = \"us-east-1\"\ns3_path_style = true\n\
         s3_access_key_id = \"{}\"\ns3_secret_access_key = \"{}\"\n",
        server.url(&unique_prefix("backup")),
        server.endpoint(),
        server.access_key(),
        server.secret_key()
    );
    let path = t.write("tidemark.toml", config.as_bytes());
    Tidemark::new(t)
        .with_args(["--config", &path.display().to_string()])
        .with_env("PGPASSWORD", PASSWORD)
}

/// A started scram-sha-256 cluster archiving through `archive` (a tidemark runner; `None`
/// leaves archiving off).
pub(crate) fn cluster(t: &TestDir, name: &str, archive: Option<&Tidemark>) -> Cluster {
    let mut c = Cluster::init(
        t,
        name,
        ClusterOptions {
            password: Some(PASSWORD.into()),
            archive_command: archive.map(|tm| format!("{} archive-push %p", tm.shell_prefix())),
            ..Default::default()
        },
    );
    if let Some(tm) = archive {
        tm.init_stanza(&c);
    }
    c.start();
    c
}

/// Connection flags for `c` over TCP as `user`.
fn pg_args_as(c: &Cluster, user: &str) -> Vec<String> {
    vec![
        "--pg-host".into(),
        "127.0.0.1".into(),
        "--pg-port".into(),
        c.port().to_string(),
        "--pg-user".into(),
        user.into(),
    ]
}

/// Connection flags for `c` over TCP as the superuser.
pub(crate) fn pg_args(c: &Cluster) -> Vec<String> {
    pg_args_as(c, "postgres")
}

/// `tidemark backup <args> <connection flags as user>`.
fn backup_as(tm: &Tidemark, c: &Cluster, user: &str, args: &[&str]) -> Run {
    let mut all: Vec<String> = vec!["backup".into()];
    all.extend(args.iter().map(|a| a.to_string()));
    all.extend(pg_args_as(c, user));
    tm.run(&all)
}

/// `tidemark backup <args> <connection flags>`, as the superuser.
fn backup(tm: &Tidemark, c: &Cluster, args: &[&str]) -> Run {
    backup_as(tm, c, "postgres", args)
}

pub(crate) fn backup_ok(tm: &Tidemark, c: &Cluster, args: &[&str]) -> Value {
    let run = backup(tm, c, &[args, &["--json"]].concat());
    assert_eq!(run.code, 0, "backup failed: {run:?}\n{}", c.log_tail(20));
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"))
}

/// Asserts a failed run printed exactly one line, naming `needle`.
fn assert_fails_with(run: &Run, code: i32, needle: &str) {
    assert_eq!(run.code, code, "{run:?}");
    let lines = run.stderr_lines();
    assert_eq!(lines.len(), 1, "one line expected: {run:?}");
    assert!(
        lines[0].starts_with("tidemark: backup: ") && lines[0].contains(needle),
        "expected {needle:?} in {:?}",
        lines[0]
    );
}

fn listed_backups(tm: &Tidemark) -> Vec<Value> {
    tm.info()["backups"]
        .as_array()
        .unwrap_or_else(|| panic!("info lists no backups array"))
        .clone()
}

fn pgbench(c: &Cluster, args: &[&str]) -> std::process::Command {
    let mut cmd = c.program("pgbench");
    cmd.arg("-h")
        .arg(c.socket_dir())
        .args(["-p", &c.port().to_string(), "-U", "postgres"])
        .args(args);
    cmd
}

/// The WAL segment name holding `lsn` (`X/X`) on timeline 1 with 16 MiB segments.
fn segment_of(lsn: &str) -> u64 {
    let (hi, lo) = lsn.split_once('/').expect("X/X");
    let lsn = (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap();
    lsn >> 24
}

fn segment_name(segno: u64) -> String {
    format!("{:08X}{:08X}{:08X}", 1, segno >> 8, segno & 0xFF)
}

/// What the data looks like: compared between the original and the restored cluster.
fn fingerprint(c: &Cluster) -> Vec<String> {
    vec![
        c.psql("select count(*), sum(abalance) from pgbench_accounts"),
        c.psql("select count(*), coalesce(sum(delta), 0) from pgbench_history"),
        c.psql_db(
            "shop",
            "select count(*), max(id), md5(string_agg(item, ',' order by id)) from orders",
        ),
        c.psql("select string_agg(datname, ',' order by datname) from pg_database"),
    ]
}

pub(crate) fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Creates tablespace `ts1` in a new folder of the test's; returns the folder.
fn create_tablespace(t: &TestDir, c: &Cluster) -> PathBuf {
    let dir = t.mkdir("ts-original");
    c.psql(&format!(
        "create tablespace ts1 location '{}'",
        dir.display()
    ));
    dir
}

/// Starts a server (archiving off) on the data directory restored at `restored/data`,
/// and waits until it has replayed the archive and left recovery.
fn start_restored(t: &TestDir, bin: Option<PathBuf>) -> Cluster {
    let mut r = Cluster::adopt(
        t,
        "restored",
        bin,
        Some(PASSWORD),
        &[("archive_mode".into(), "off".into())],
    );
    r.start();
    wait_until("the end of recovery", Duration::from_secs(120), || {
        r.try_psql("select pg_is_in_recovery()").as_deref() == Ok("f")
    });
    r
}

/// The whole round trip on one repository; see the module doc.
fn backup_under_load_then_restore(t: &TestDir, tm: &Tidemark) {
    let c = cluster(t, "pg", Some(tm));
    create_tablespace(t, &c);
    c.psql("create database shop tablespace ts1");
    c.psql("create database empty_db");
    c.psql_db(
        "shop",
        "create table orders(id int primary key, item text);
         insert into orders select g, md5(g::text) from generate_series(1, 20000) g",
    );
    let out = pgbench(&c, &["-i", "-s", "3", "-q", "postgres"])
        .output()
        .unwrap();
    assert!(out.status.success(), "pgbench -i: {out:?}");
    let ts_oid = c.psql("select oid from pg_tablespace where spcname = 'ts1'");

    // The backup runs while pgbench writes.
    let mut load = pgbench(&c, &["-c", "2", "-T", "60", "-n", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let report = backup_ok(tm, &c, &["--label", "under load"]);
    unsafe { libc::kill(load.id() as i32, libc::SIGINT) };
    let _ = load.wait();
    assert!(report["files"].as_u64().unwrap() > 900, "{report}");
    assert!(report["size"].as_u64().unwrap() > 40 << 20, "{report}");
    assert!(report["chunks_added"].as_u64().unwrap() > 0, "{report}");

    let listed = listed_backups(tm);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], report["id"]);
    assert_eq!(listed[0]["label"], "under load");
    assert!(listed[0]["warnings"].as_array().unwrap().is_empty());

    // Committed after the backup: the restore replays it from the archive.
    c.psql_db(
        "shop",
        "insert into orders values (100001, 'after the backup')",
    );
    let last = c.switch_wal();
    c.wait_archived(&last, Duration::from_secs(60));
    let expected = fingerprint(&c);

    // Restore with the tablespace relocated: the original location is in use.
    let restored = t.path().join("restored/data");
    let ts_new = t.path().join("ts-restored");
    let run = tm.run(&[
        "restore",
        "--pgdata",
        &restored.display().to_string(),
        "--tablespace-map",
        &format!("{ts_oid}={}", ts_new.display()),
    ]);
    assert_eq!(run.code, 0, "restore failed: {run:?}");
    assert!(restored.join("recovery.signal").exists());
    let link = std::fs::read_link(restored.join("pg_tblspc").join(&ts_oid)).unwrap();
    assert_eq!(link, ts_new);

    // PostgreSQL's own check, with the backup's WAL from the archive.
    let wal = t.mkdir("verify-wal");
    let (first, last) = (
        segment_of(report["start_lsn"].as_str().unwrap()),
        segment_of(report["stop_lsn"].as_str().unwrap()),
    );
    for segno in first..=last {
        let name = segment_name(segno);
        tm.ok(&["archive-get", &name, &wal.join(&name).display().to_string()]);
    }
    let verify = c
        .program("pg_verifybackup")
        .arg("-w")
        .arg(&wal)
        .arg(&restored)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "pg_verifybackup: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // Start it: it replays the archive to its end, then opens.
    let mut r = start_restored(t, None);
    assert_eq!(fingerprint(&r), expected);
    assert_eq!(
        r.psql_db("shop", "select item from orders where id = 100001"),
        "after the backup"
    );
    r.stop();

    // pgbench changed pages all over its tables during the first backup; a second backup
    // catches up with that, and a third, after a small change, adds only what changed.
    backup_ok(tm, &c, &[]);
    c.psql("update pgbench_accounts set abalance = abalance + 1 where aid <= 3000");
    let third = backup_ok(tm, &c, &[]);
    let (first_added, third_added) = (
        report["stored_added"].as_u64().unwrap(),
        third["stored_added"].as_u64().unwrap(),
    );
    assert!(
        third_added * 5 < first_added,
        "the third backup added {third_added} bytes, the first {first_added}"
    );
    let (chunks, added) = (
        third["chunks"].as_u64().unwrap(),
        third["chunks_added"].as_u64().unwrap(),
    );
    assert!(added * 10 < chunks, "{added} of {chunks} chunks were new");
    assert_eq!(listed_backups(tm).len(), 3);
}

#[test]
fn backup_under_load_restores_exactly_local() {
    need_pg!();
    let t = TestDir::new("backup-local");
    let tm = local_tidemark(&t);
    backup_under_load_then_restore(&t, &tm);
}

#[test]
fn backup_under_load_restores_exactly_s3() {
    need_pg!();
    let Some(server) = S3Server::start_new() else {
        skip_or_fail!(
            "s3s-fs not found (install: cargo install s3s-fs@0.14.1 --features binary --locked)"
        );
    };
    let t = TestDir::new("backup-s3");
    let tm = s3_tidemark(&t, &server);
    backup_under_load_then_restore(&t, &tm);
}

/// Over TLS (`require`, a self-signed server certificate, `hostssl`-only pg_hba.conf), a
/// backup works, and its record lists every database and its extensions.
#[test]
fn backups_over_tls_record_databases_and_extensions() {
    need_pg!();
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        skip_or_fail!("the openssl command is not installed");
    }
    let t = TestDir::new("backup-tls");
    let tm = local_tidemark(&t);
    let mut c = cluster(&t, "pg", Some(&tm));
    let certs = t.mkdir("certs");
    // A self-signed certificate: `require` encrypts without verifying, as libpq does.
    let cert = std::fs::read(crate::tls::make_ca(&certs, "self-signed")).unwrap();
    let key = std::fs::read(certs.join("self-signed.key")).unwrap();
    c.enable_ssl(&cert, &key);
    // TLS or nothing over TCP, for SQL and replication alike.
    c.write_hba(&[
        "local all all scram-sha-256",
        "hostssl all all 127.0.0.1/32 scram-sha-256",
        "hostssl replication all 127.0.0.1/32 scram-sha-256",
    ]);
    c.stop();
    c.start();
    c.psql("create database app");
    c.psql_db("app", "create extension if not exists plpgsql");
    let plain = backup(&tm, &c, &["--pg-sslmode", "disable"]);
    assert_fails_with(&plain, 1, "pg_hba.conf");
    let report = backup_ok(&tm, &c, &["--pg-sslmode", "require"]);
    assert!(report["files"].as_u64().unwrap() > 900, "{report}");
    assert_eq!(listed_backups(&tm).len(), 1);

    // The record (a checked envelope line, then JSON) lists every database: the ones
    // that accept connections with their extensions, template0 without.
    let id = report["id"].as_str().unwrap();
    // Its key is `<id>.<sha256 of its bytes>` (docs/repository-format.md).
    let records: Vec<PathBuf> = std::fs::read_dir(t.path().join("repo/stanzas/main/backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{id}."))
        })
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let text = std::fs::read_to_string(&records[0]).unwrap();
    let digest = records[0]
        .extension()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert_eq!(
        digest,
        sha256_file(&records[0]),
        "the key names the record's digest"
    );
    let (envelope, json) = text.split_once('\n').unwrap();
    assert!(envelope.starts_with("tidemark-record 2 "), "{envelope}");
    let record: Value = serde_json::from_str(json).unwrap();
    let databases = record["databases"].as_array().unwrap();
    let find = |name: &str| {
        databases
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {databases:?}"))
    };
    let app = find("app")["extensions"].as_array().unwrap();
    assert!(app.iter().any(|e| e["name"] == "plpgsql"), "{app:?}");
    assert!(find("postgres")["extensions"].is_array());
    assert!(find("template0")["extensions"].is_null());
    assert_eq!(record["system_id"].to_string(), c.system_identifier());
}

/// Counts blobs in a local repository.
fn blob_count(repo: &Path) -> usize {
    let Ok(dirs) = std::fs::read_dir(repo.join("blobs")) else {
        return 0;
    };
    dirs.flatten()
        .map(|d| std::fs::read_dir(d.path()).map_or(0, |f| f.count()))
        .sum()
}

#[test]
fn a_killed_backup_leaves_nothing_listed_and_the_next_succeeds() {
    need_pg!();
    let t = TestDir::new("backup-killed");
    let tm = local_tidemark(&t);
    let repo: PathBuf = t.path().join("repo");
    let c = cluster(&t, "pg", Some(&tm));
    let out = pgbench(&c, &["-i", "-s", "10", "-q", "postgres"])
        .output()
        .unwrap();
    assert!(out.status.success(), "pgbench -i: {out:?}");
    let before = blob_count(&repo);

    let mut all: Vec<String> = vec!["backup".into()];
    all.extend(pg_args(&c));
    let mut child = tm.command(&all).spawn().unwrap();
    // Kill it once it has stored some chunks, well before it could finish.
    let start = Instant::now();
    while blob_count(&repo) < before + 20 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it was killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no chunks stored"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = child.id();
    unsafe { libc::kill(killed as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert!(
        blob_count(&repo) > before,
        "chunks were stored before the kill"
    );
    assert!(
        listed_backups(&tm).is_empty(),
        "a killed backup must not be listed"
    );

    // What a killed writer leaves, once it is old: a temporary file of the killed process,
    // last written two hours ago. Beside it, one of the same process written just now,
    // and an old one of a process that still runs (this test): neither may be taken.
    let plant = |name: String, age: Duration| {
        let path = repo.join("blobs").join(name);
        std::fs::write(&path, b"partial").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - age)
            .unwrap();
        path
    };
    let two_hours = Duration::from_secs(2 * 3600);
    let stale = plant(format!(".tmp-{killed}-999-1"), two_hours);
    let fresh = plant(format!(".tmp-{killed}-999-2"), Duration::ZERO);
    let live = plant(format!(".tmp-{}-999-3", std::process::id()), two_hours);
    assert_eq!(
        tm.info()["stale_temp_files"],
        1,
        "info counts the stale file"
    );

    let report = backup_ok(&tm, &c, &[]);
    let listed = listed_backups(&tm);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], report["id"]);
    assert!(!stale.exists(), "backup removes what a killed writer left");
    assert!(
        fresh.exists(),
        "a recent temporary file may still be written"
    );
    assert!(live.exists(), "its writer still runs");
    assert_eq!(tm.info()["stale_temp_files"], 0);
}

#[test]
fn backup_refusals_are_specific_and_list_nothing() {
    need_pg!();
    let t = TestDir::new("backup-refusals");
    let tm = local_tidemark(&t);

    // Archiving off: refused before any work.
    let mut off = cluster(&t, "off", None);
    assert_fails_with(&backup(&tm, &off, &[]), 1, "archive_mode = off");
    off.stop();

    let c = cluster(&t, "pg", Some(&tm));
    // A role without REPLICATION.
    c.psql("create role app login password 'secret'");
    let run = backup_as(&tm, &c, "app", &[]);
    assert_fails_with(&run, 1, "REPLICATION");
    // No replication line in pg_hba.conf.
    c.write_hba(&[
        "local all all scram-sha-256",
        "host all all 127.0.0.1/32 scram-sha-256",
    ]);
    c.psql("select pg_reload_conf()");
    std::thread::sleep(Duration::from_millis(300));
    assert_fails_with(&backup(&tm, &c, &[]), 1, "pg_hba.conf");

    // The stanza belongs to the first cluster: another one is refused.
    let other_stanza = tm.clone().with_args(["--stanza", "other"]);
    let second = cluster(&t, "second", Some(&other_stanza));
    tm.ok(&[
        &["init"],
        pg_args(&c)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
    ]
    .concat());
    assert_fails_with(&backup(&tm, &second, &[]), 3, "system identifier");

    // WAL that never reaches this stanza: the backup waits, then gives up.
    let third = tm.clone().with_args(["--stanza", "third"]);
    third.init_stanza(&second);
    let run = backup(&third, &second, &["--wal-timeout", "3"]);
    assert_fails_with(&run, 1, "did not reach the repository within 3 s");
    assert!(listed_backups(&third).is_empty());
    assert!(listed_backups(&tm).is_empty());
}

/// The server's warnings during BASE_BACKUP are logged, counted in the record and shown
/// by `info`: a special file it skips (a FIFO in the data directory), and pages whose data
/// checksum fails, which fail the backup (exit 4, nothing recorded) unless
/// `--ignore-checksum-failures`.
#[test]
fn server_warnings_are_counted_and_checksum_failures_fail_the_backup() {
    need_pg!();
    let t = TestDir::new("backup-notices");
    notices_and_checksum_failures(&t, None);
}

/// The same on PostgreSQL 14, whose reply has one CopyOut per archive (the closing error
/// comes after the last one).
#[test]
fn server_warnings_are_counted_and_checksum_failures_fail_the_backup_on_14() {
    need_pg!();
    let Some(bin14) = server_bin(14) else {
        skip_or_fail!("PostgreSQL 14 binaries not found (scripts/fetch-postgres.sh 14.23.0-beta.17 /opt/tidemark/pg14)");
    };
    let t = TestDir::new("backup-notices-14");
    notices_and_checksum_failures(&t, Some(bin14));
}

fn notices_and_checksum_failures(t: &TestDir, bin: Option<PathBuf>) {
    let tm = local_tidemark(t);
    let mut c = Cluster::init(
        t,
        "pg",
        ClusterOptions {
            password: Some(PASSWORD.into()),
            archive_command: Some(format!("{} archive-push %p", tm.shell_prefix())),
            data_checksums: true,
            bin,
            ..Default::default()
        },
    );
    tm.init_stanza(&c);
    c.start();
    // A named pipe in the data directory: the server skips it with a warning.
    let fifo = c.data_dir().join("a-fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    chown_to_user(&fifo);
    let run = backup(&tm, &c, &["--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["notices"], 1, "{report:#}\n{}", run.stderr);
    let listed = listed_backups(&tm);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["notices"], 1, "{listed:#?}");
    let text = tm.ok(&["info"]);
    assert!(text.contains("the server sent 1 warning(s)"), "{text}");
    let run = backup(&tm, &c, &[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("skipping special file") && run.stderr.contains("a-fifo"),
        "the skipped file is not logged: {:?}",
        run.stderr
    );
    std::fs::remove_file(&fifo).unwrap();

    // A damaged page: written, checkpointed, then one byte flipped with the server down.
    c.psql("create table t(id int, pad text)");
    c.psql("insert into t select g, repeat('x', 100) from generate_series(1, 1000) g");
    let file = c
        .data_dir()
        .join(c.psql("select pg_relation_filepath('t')"));
    c.psql("checkpoint");
    c.stop();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[4000] ^= 0xFF;
    std::fs::write(&file, &bytes).unwrap();
    c.start();

    let run = backup(&tm, &c, &[]);
    assert_eq!(run.code, 4, "{run:?}");
    let last = run
        .stderr_lines()
        .last()
        .copied()
        .unwrap_or_default()
        .to_string();
    assert!(
        last.starts_with("tidemark: backup: ") && last.contains("data checksum fails"),
        "{run:?}"
    );
    assert!(last.contains("--ignore-checksum-failures"), "{last}");
    assert!(
        run.stderr.contains("checksum verification failed"),
        "the damaged page is not named: {:?}",
        run.stderr
    );
    assert_eq!(
        listed_backups(&tm).len(),
        2,
        "a backup with checksum failures was recorded"
    );

    let report = backup_ok(&tm, &c, &["--ignore-checksum-failures"]);
    assert_eq!(report["checksum_failures_ignored"], true, "{report:#}");
    let notices = report["notices"].as_u64().unwrap();
    assert!(
        notices >= 2,
        "a page warning and the closing error: {report:#}"
    );
    let listed = listed_backups(&tm);
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[2]["notices"], notices, "{listed:#?}");
    let warnings = listed[2]["warnings"].to_string();
    assert!(warnings.contains("data checksum failures"), "{warnings}");
}

/// PostgreSQL 13–14 send one CopyOut per tablespace instead of 15's typed messages: a
/// backup of a PostgreSQL 14 cluster (binaries from `scripts/fetch-postgres.sh`) with a
/// tablespace restores and replays like one of 15.
#[test]
fn postgresql_14_backups_restore() {
    need_pg!();
    let Some(bin14) = server_bin(14) else {
        skip_or_fail!("PostgreSQL 14 binaries not found (scripts/fetch-postgres.sh 14.23.0-beta.17 /opt/tidemark/pg14)");
    };
    let t = TestDir::new("backup-pg14");
    let tm = local_tidemark(&t);
    let mut c = Cluster::init(
        &t,
        "pg",
        ClusterOptions {
            password: Some(PASSWORD.into()),
            archive_command: Some(format!("{} archive-push %p", tm.shell_prefix())),
            bin: Some(bin14.clone()),
            ..Default::default()
        },
    );
    tm.init_stanza(&c);
    c.start();
    assert!(c.psql("show server_version").starts_with("14."));
    let ts_dir = create_tablespace(&t, &c);
    c.psql("create table big(id int, pad text) tablespace ts1");
    c.psql("insert into big select g, repeat(md5(g::text), 20) from generate_series(1, 50000) g");
    let report = backup_ok(&tm, &c, &[]);
    assert!(report["files"].as_u64().unwrap() > 900, "{report}");
    c.psql("insert into big values (-1, 'after the backup')");
    let last = c.switch_wal();
    c.wait_archived(&last, Duration::from_secs(60));
    let expected = c.psql("select count(*), md5(string_agg(pad, ',' order by id)) from big");
    let ts_oid = c.psql("select oid from pg_tablespace where spcname = 'ts1'");
    c.stop();

    // The original tablespace folder is free now: restore into the original location.
    std::fs::remove_dir_all(&ts_dir).unwrap();
    let restored = t.path().join("restored/data");
    let run = tm.run(&["restore", "--pgdata", &restored.display().to_string()]);
    assert_eq!(run.code, 0, "restore failed: {run:?}");
    assert_eq!(
        std::fs::read_link(restored.join("pg_tblspc").join(&ts_oid)).unwrap(),
        ts_dir
    );
    let mut r = start_restored(&t, Some(bin14));
    assert_eq!(
        r.psql("select count(*), md5(string_agg(pad, ',' order by id)) from big"),
        expected
    );
    r.stop();
}

/// `tidemark restore --pgdata <dir>/<name>/data <extra>`, which must succeed; returns
/// its stdout.
pub(crate) fn restore_ok(t: &TestDir, tm: &Tidemark, name: &str, extra: &[&str]) -> String {
    let pgdata = t.path().join(name).join("data");
    let mut args = vec!["restore", "--pgdata", pgdata.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = tm.run(&args);
    assert_eq!(run.code, 0, "restore failed: {run:?}");
    run.stdout
}

/// Starts the copy restored at `<dir>/<name>/data` with nothing added to its settings
/// (as an operator would: `pg_ctl start`), and waits until it has promoted.
pub(crate) fn start_copy(t: &TestDir, name: &str) -> Cluster {
    let mut r = Cluster::adopt(t, name, None, Some(PASSWORD), &[]);
    r.start();
    wait_until("the end of recovery", Duration::from_secs(120), || {
        r.try_psql("select pg_is_in_recovery()").as_deref() == Ok("f")
    });
    r
}

/// The timeline history files the local repository's WAL index holds for stanza main.
fn archived_histories(t: &TestDir) -> Vec<String> {
    let dir = t.path().join("repo/stanzas/main/wal/history");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Issue 12, item 1: a restored copy started as is promotes to timeline 2 without
/// archiving anything into the production stanza; `--archive-mode preserve` keeps the
/// archiving (the copy's `00000002.history` arrives); the next restore names timeline 2.
#[test]
fn a_restored_cluster_does_not_archive_unless_asked() {
    need_pg!();
    let t = TestDir::new("restore-archive-mode");
    let tm = local_tidemark(&t);
    let c = cluster(&t, "pg", Some(&tm));
    c.psql("create table t(id int); insert into t values (1)");
    backup_ok(&tm, &c, &[]);
    c.psql("insert into t values (2)");
    let last = c.switch_wal();
    c.wait_archived(&last, Duration::from_secs(60));

    let out = restore_ok(&t, &tm, "copy", &[]);
    assert!(
        out.contains("archiving: off in the restored cluster"),
        "{out}"
    );
    assert!(
        !out.contains("not followed"),
        "no other timeline yet: {out}"
    );
    let mut copy = start_copy(&t, "copy");
    assert_eq!(copy.psql("select count(*) from t"), "2");
    assert_eq!(copy.psql("show archive_mode"), "off");
    assert_eq!(
        copy.psql("select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"),
        "00000002",
        "the copy promoted to timeline 2"
    );
    // A segment completed on timeline 2, and time for an archiver to act: nothing of
    // timeline 2 reaches the stanza.
    copy.psql("insert into t values (3); select pg_switch_wal()");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(archived_histories(&t), Vec::<String>::new());
    let info = tm.info();
    let timelines: Vec<u64> = info["wal"]["timelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["timeline"].as_u64().unwrap())
        .collect();
    assert_eq!(timelines, [1], "{info}");
    copy.stop();

    // The restore that becomes the new primary keeps archiving.
    let out = restore_ok(&t, &tm, "primary", &["--archive-mode", "preserve"]);
    assert!(out.contains("archiving: as backed up"), "{out}");
    let mut primary = start_copy(&t, "primary");
    assert_eq!(primary.psql("show archive_mode"), "on");
    wait_until(
        "00000002.history in the stanza",
        Duration::from_secs(60),
        || {
            archived_histories(&t)
                .iter()
                .any(|n| n.starts_with("00000002.history."))
        },
    );
    primary.stop();

    // The default target timeline (latest) is timeline 2 from now on: the restore's plan
    // says so, and writes its number.
    let out = restore_ok(&t, &tm, "later", &[]);
    assert!(out.contains("timelines   1 (until "), "{out}");
    assert!(
        out.contains(") -> 2 (recovery_target_timeline = 2)"),
        "{out}"
    );
    let conf = std::fs::read_to_string(t.path().join("later/data/postgresql.auto.conf")).unwrap();
    assert!(
        conf.contains("\nrecovery_target_timeline = '2'\n"),
        "{conf}"
    );
}

/// Issue 12, item 2: a cluster with `recovery_target = 'immediate'` in its
/// `postgresql.auto.conf` (`ALTER SYSTEM`) and `recovery_target_name` in
/// `postgresql.conf` is backed up; its restore replays every row committed after the
/// backup (not stopping at consistency, not refusing two targets).
#[test]
fn recovery_settings_in_the_backup_do_not_apply() {
    need_pg!();
    let t = TestDir::new("restore-recovery-settings");
    let tm = local_tidemark(&t);
    let mut c = Cluster::init(
        &t,
        "pg",
        ClusterOptions {
            password: Some(PASSWORD.into()),
            archive_command: Some(format!("{} archive-push %p", tm.shell_prefix())),
            settings: vec![("recovery_target_name".into(), "'nowhere'".into())],
            ..Default::default()
        },
    );
    tm.init_stanza(&c);
    c.start();
    c.psql("alter system set recovery_target = 'immediate'");
    c.psql("create table t(id int); insert into t values (1)");
    backup_ok(&tm, &c, &[]);
    c.psql("insert into t select generate_series(2, 1000)");
    let last = c.switch_wal();
    c.wait_archived(&last, Duration::from_secs(60));

    let out = restore_ok(&t, &tm, "copy", &[]);
    assert!(
        out.contains("commented out in postgresql.auto.conf: recovery_target = 'immediate'"),
        "{out}"
    );
    let copy = start_copy(&t, "copy");
    assert_eq!(copy.psql("select count(*) from t"), "1000");
}

/// Issue 12, item 8: with one byte of the oldest backup record flipped, the next backup
/// succeeds (its deduplication skips the record with a warning naming it), `info` lists
/// it as damaged, the default restore takes the newest, and only a restore of the
/// damaged backup fails.
#[test]
fn one_damaged_record_stops_neither_backups_nor_the_default_restore() {
    need_pg!();
    let t = TestDir::new("backup-damaged-record");
    let tm = local_tidemark(&t);
    let c = cluster(&t, "pg", Some(&tm));
    let first = backup_ok(&tm, &c, &[]);
    let id = first["id"].as_str().unwrap().to_string();
    let folder = t.path().join("repo/stanzas/main/backups");
    let record = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{id}."))
        })
        .expect("the first backup's record");
    let mut body = std::fs::read(&record).unwrap();
    let at = body.len() / 2;
    body[at] ^= 0x01;
    std::fs::write(&record, body).unwrap();

    let second = backup_ok(&tm, &c, &[]);
    let warnings = second["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .starts_with(&format!("backup {id}'s record cannot be read"))),
        "{second}"
    );
    let info = tm.info();
    assert_eq!(info["damaged_backups"][0]["id"], id.as_str(), "{info}");
    assert_eq!(listed_backups(&tm).len(), 1);

    // The plan leaves the damaged record out (and says so), and restores the newest.
    let out = restore_ok(&t, &tm, "copy", &[]);
    assert!(
        out.contains(&format!(
            "\nrestored backup {}",
            second["id"].as_str().unwrap()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "WARNING: backup {id} is left out: its record cannot be read"
        )),
        "{out}"
    );
    let other = t.path().join("other/data");
    let run = tm.run(&[
        "restore",
        "--pgdata",
        other.to_str().unwrap(),
        "--backup",
        &id,
    ]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(!other.exists());
}
