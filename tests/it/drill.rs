//! `tidemark drill` against real PostgreSQL, on a local repository and on S3: the drill
//! restores into a scratch folder, replays to the target, promotes, checks, records, and
//! leaves nothing behind.
//!
//! The workload is the PITR tests' (`crate::pitr`): a cluster with 1 MiB segments,
//! commit timestamps on, and other recovery settings in its `postgresql.conf` that no
//! restore may apply; marker rows committed one transaction each, their commit times read
//! back from the server. Every drill runs while that cluster (the "production" one) is
//! still up and archiving into the same stanza.
//!
//! What is proven:
//! - a drill to a time between two markers passes, restores the backup before it, and
//!   records as its recovery point exactly the commit of the last marker before the
//!   target (the server's own `pg_last_xact_replay_timestamp()`), with the plan's stop
//!   record (the next marker's commit) named; the user's checks (one per database, with
//!   `\c`) and amcheck pass; the phases and the RTO are recorded; `info` shows the drill
//!   and `--json` holds it; the scratch folder is gone, its server's pid is gone and its
//!   port is closed; the production cluster is untouched and no timeline was archived
//!   from the promoted copy (local: run as root with `--run-as` when the tests run as
//!   root, with a tablespace whose rows a check reads in the scratch copy while the
//!   production tablespace folder stays byte for byte as it was; S3: as the test user);
//! - the same time target on PostgreSQL 13 and 18 (settings that exist in some majors
//!   only; 13's pause probe) stops at exactly the same commit, amcheck included;
//! - a drill whose SQL check returns `false` exits 6, names the statement and what it
//!   returned, is recorded as failed (`info` warns that no drill passed), and leaves no
//!   folder and no process;
//! - a drill interrupted with SIGTERM while its scratch server replays (signalled as soon
//!   as the server's pid file exists, with 40 MiB of WAL to replay) exits 1 saying so,
//!   records nothing, and leaves no folder and no process; so does one interrupted with
//!   SIGINT as soon as its scratch folder exists (the restore); a refused target exits
//!   5 and creates nothing;
//! - a backed-up `postgresql.conf` that names the production data directory
//!   (`data_directory`) is caught by reading the configuration back: the drill fails
//!   before any server starts, and production runs on untouched;
//! - `--keep` leaves the server running in its folder (it answers on its socket) and the
//!   report says how to stop it; that drill's first port is taken (the test holds it),
//!   and the server starts on another.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tidemark_agent::exit;

use crate::backup::{backup_ok, local_tidemark, s3_tidemark};
use crate::harness::pg::{pg_bin, Cluster, TestDir, SUPERUSER};
use crate::harness::s3::S3Server;
use crate::harness::tidemark::{Run, Tidemark};
use crate::pitr::{archiving_cluster, commit_marker, rfc3339, rfc3339_normalized, Marker};
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

/// The production side of a drill test: the cluster, its markers, its backup.
struct Production {
    c: Cluster,
    markers: Vec<Marker>,
    backup: String,
}

/// Markers 1-3, a backup, markers 4-6, `extra_rows` more rows of WAL, a final switch
/// (everything archived); on `bin`'s major (default 15), with a tablespace when
/// `tablespace` names a folder for it.
fn production(
    t: &TestDir,
    tm: &Tidemark,
    extra_rows: u32,
    bin: Option<PathBuf>,
    tablespace: Option<&Path>,
) -> Production {
    let c = archiving_cluster(t, tm, bin);
    c.psql("create table marks(id int primary key, xid xid8 not null)");
    if let Some(dir) = tablespace {
        c.psql(&format!(
            "create tablespace elsewhere location '{}'",
            dir.display()
        ));
        c.psql("create table kept_elsewhere tablespace elsewhere as select generate_series(1, 1000) as n");
    }
    let mut markers: Vec<Marker> = (1..=3).map(|id| commit_marker(&c, id)).collect();
    let backup = backup_ok(tm, &c, &[])["id"]
        .as_str()
        .expect("backup id")
        .to_string();
    markers.extend((4..=6).map(|id| commit_marker(&c, id)));
    if extra_rows > 0 {
        c.workload(extra_rows);
    }
    let last = c.psql("select pg_walfile_name(pg_switch_wal())");
    c.wait_archived(&last, Duration::from_secs(120));
    Production { c, markers, backup }
}

/// `--pg-bin` for the harness's binaries (the drill would find them on PATH too; the
/// tests name them).
fn pg_bin_args() -> Vec<String> {
    vec![
        "--pg-bin".into(),
        pg_bin().expect("binaries").display().to_string(),
    ]
}

/// A folder for the drills' scratch folders, owned by the test user.
fn drill_folder(t: &TestDir) -> PathBuf {
    t.mkdir("drills")
}

/// What is left in the drills' folder.
fn leftovers(folder: &Path) -> Vec<String> {
    std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("read {}: {e}", folder.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect()
}

/// Whether process `pid` exists (and is not a zombie).
fn alive(pid: i64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

/// Whether something accepts connections on 127.0.0.1:`port`.
fn listening(port: u64) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port as u16)),
        Duration::from_millis(500),
    )
    .is_ok()
}

/// Asserts the drill left nothing: no folder in `folder`, no process, no port.
fn assert_nothing_left(label: &str, folder: &Path, report: &Value) {
    let left = leftovers(folder);
    assert!(left.is_empty(), "{label}: the drill left {left:?}");
    if let Some(pid) = report["server_pid"].as_i64() {
        assert!(!alive(pid), "{label}: the scratch server {pid} still runs");
    }
    let port = report["port"].as_u64().expect("port in the report");
    assert!(
        !listening(port),
        "{label}: something still listens on {port}"
    );
}

fn parse(label: &str, run: &Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("{label}: drill --json is not JSON ({e}): {run:?}"))
}

/// A time halfway between markers `a` and `b`, as RFC 3339.
fn between(a: &Marker, b: &Marker) -> String {
    rfc3339(tidemark_pg::PgTimestamp((a.commit.0 + b.commit.0) / 2))
}

fn check(report: &Value, prefix: &str) -> Value {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .find(|c| c["name"].as_str().unwrap_or_default().starts_with(prefix))
        .unwrap_or_else(|| panic!("no check {prefix:?}: {report:#}"))
        .clone()
}

/// The passing drill of the module doc, run by `run` (as the test user or as root);
/// returns its report.
fn passing_drill(
    t: &TestDir,
    tm: &Tidemark,
    p: &Production,
    extra_checks: &str,
    run: impl Fn(&[String]) -> Run,
) -> Value {
    let folder = drill_folder(t);
    let checks = t.write(
        "checks.sql",
        format!(
            "-- the markers up to the target\nselect count(*) = 4 from marks;\n\
             select max(id) = 4 from marks;\n\\c template1\nselect current_database() = 'template1';\n\
             \\c postgres\n{extra_checks}"
        )
        .as_bytes(),
    );
    let tables = p.c.psql(
        "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
         where c.relkind in ('r', 'p') and c.relpersistence <> 't' \
         and n.nspname not in ('pg_catalog', 'information_schema') \
         and n.nspname not like 'pg_toast%'",
    );
    let target = between(&p.markers[3], &p.markers[4]);
    let before = p.c.psql("select count(*) from marks");
    let args: Vec<String> = [
        "--drill-path",
        folder.to_str().unwrap(),
        "drill",
        "--json",
        "--target-time",
        &target,
        "--checks",
        checks.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(pg_bin_args())
    .collect();
    let out = run(&args);
    assert_eq!(out.code, 0, "the drill failed: {out:?}");
    let r = parse("pass", &out);
    assert_eq!(r["passed"], true, "{r:#}");
    assert_eq!(r["backup"], p.backup.as_str(), "{r:#}");
    // The recovery point is the commit of marker 4 (the last before the target), as the
    // server replayed it; the plan stops before marker 5's commit.
    let reached = r["reached"]["last_commit_time"].as_str().expect("reached");
    assert_eq!(
        rfc3339_normalized(reached),
        rfc3339_normalized(&rfc3339(p.markers[3].commit)),
        "{r:#}"
    );
    assert_eq!(
        rfc3339_normalized(r["plan"]["stop"]["time"].as_str().expect("stop time")),
        rfc3339_normalized(&rfc3339(p.markers[4].commit)),
        "{r:#}"
    );
    assert_eq!(check(&r, "recovery point")["passed"], true, "{r:#}");
    assert_eq!(r["expected_time"], r["plan"]["stop"]["time"], "{r:#}");
    assert_eq!(r["expected_lsn"], r["plan"]["stop"]["lsn"], "{r:#}");
    for prefix in [
        "checks statement 1 (line 2, database postgres",
        "checks statement 2 (line 3, database postgres",
        "checks statement 3 (line 5, database template1",
        "tables of database postgres",
        "amcheck in database postgres",
    ] {
        assert_eq!(check(&r, prefix)["passed"], true, "{prefix}: {r:#}");
    }
    assert_eq!(
        check(&r, "tables of database postgres")["detail"],
        format!("{tables} tables")
    );
    let failed: Vec<&Value> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] != true)
        .collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let amcheck = check(&r, "amcheck in database postgres")["detail"].clone();
    assert!(
        amcheck.as_str().unwrap().ends_with("btree indexes checked"),
        "amcheck did not run: {amcheck}"
    );
    let phases: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "plan",
            "files restored",
            "WAL replayed to the target",
            "accepting writes"
        ]
    );
    let sum: f64 = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["seconds"].as_f64().unwrap())
        .sum();
    let rto = r["rto_seconds"].as_f64().expect("rto");
    assert!(rto > 0.0 && (rto - sum).abs() < 1e-6, "{r:#}");
    assert!(
        r["pg_version"]
            .as_str()
            .unwrap_or_default()
            .starts_with("15"),
        "{r:#}"
    );
    assert_nothing_left("pass", &folder, &r);
    // The production cluster went on, untouched; the promoted copy archived nothing.
    assert_eq!(p.c.psql("select count(*) from marks"), before);
    let info = tm.info();
    assert_eq!(
        info["wal"]["history"], 0,
        "a timeline was archived: {info:#}"
    );
    assert_eq!(info["drills"]["last"]["id"], r["id"], "{info:#}");
    assert_eq!(info["drills"]["last"]["passed"], true);
    // The record in the repository is the report's.
    for field in [
        "reached",
        "expected_time",
        "expected_lsn",
        "rto_seconds",
        "checks",
        "backup",
    ] {
        assert_eq!(info["drills"]["last"][field], r[field], "{field}: {info:#}");
    }
    assert!(info["drills"]["warning"].is_null(), "{info:#}");
    let text = tm.ok(&["info"]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("drill ") && l.contains("PASSED") && l.contains("RTO")),
        "{text}"
    );
    r
}

/// The passing drill on a local repository: as root with `--run-as` when the tests run
/// as root (PostgreSQL refuses root; the drill must switch), else as the test user.
#[test]
fn drill_to_a_time_passes_local() {
    need_pg!();
    let t = TestDir::new("drill-local");
    let tm = local_tidemark(&t);
    let ts = t.mkdir("tablespace");
    let p = production(&t, &tm, 0, None, Some(&ts));
    let ts_before = crate::harness::tidemark::repo_snapshot(&ts);
    let root = crate::harness::pg::is_root();
    // As root without a user: refused before anything is created.
    if root {
        let out = tm
            .command_as_invoker(&["drill", "--target", "immediate"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(i32::from(exit::USAGE)), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--run-as"));
    }
    // The tablespace's rows, restored into the scratch folder (never into its original
    // location, which production uses).
    passing_drill(
        &t,
        &tm,
        &p,
        "select count(*) = 1000 from kept_elsewhere;\n",
        |args| {
            if root {
                let mut all = args.to_vec();
                all.extend(["--run-as".to_string(), crate::harness::pg::TEST_USER.into()]);
                let out = tm.command_as_invoker(&all).output().unwrap();
                Run {
                    code: out.status.code().unwrap_or(-1),
                    stdout: String::from_utf8_lossy(&out.stdout).to_string(),
                    stderr: String::from_utf8_lossy(&out.stderr).to_string(),
                }
            } else {
                tm.run(args)
            }
        },
    );
    let diff = crate::harness::tidemark::snapshot_diff(
        &ts_before,
        &crate::harness::tidemark::repo_snapshot(&ts),
    );
    assert!(
        diff.is_empty(),
        "the drill touched production's tablespace: {diff:?}"
    );
}

/// A drill on the oldest and the newest majors (settings that exist in some majors only,
/// PostgreSQL 13's pause probe): a time target, exact.
#[test]
fn drill_on_postgres_13_and_18() {
    need_pg!();
    for major in [13, 18] {
        let Some(bin) = crate::harness::pg::server_bin(major) else {
            skip_or_fail!(
                "PostgreSQL {major} server binaries not found (scripts/fetch-postgres.sh)"
            );
        };
        let t = TestDir::new(&format!("drill-{major}"));
        let tm = local_tidemark(&t);
        let p = production(&t, &tm, 0, Some(bin.clone()), None);
        let folder = drill_folder(&t);
        let out = tm.run(&[
            "--drill-path",
            folder.to_str().unwrap(),
            "drill",
            "--json",
            "--target-time",
            &between(&p.markers[4], &p.markers[5]),
            "--pg-bin",
            bin.to_str().unwrap(),
        ]);
        assert_eq!(out.code, 0, "PostgreSQL {major}: {out:?}");
        let r = parse("major", &out);
        assert!(
            r["pg_version"]
                .as_str()
                .unwrap()
                .starts_with(&major.to_string()),
            "{r:#}"
        );
        assert_eq!(
            rfc3339_normalized(r["reached"]["last_commit_time"].as_str().unwrap()),
            rfc3339_normalized(&rfc3339(p.markers[4].commit)),
            "PostgreSQL {major}: {r:#}"
        );
        let amcheck = check(&r, "amcheck in database postgres")["detail"].clone();
        assert!(
            amcheck.as_str().unwrap().ends_with("btree indexes checked"),
            "PostgreSQL {major}: {amcheck}"
        );
        assert_nothing_left("major", &folder, &r);
    }
}

/// The passing drill on S3, then `--keep`.
#[test]
fn drill_to_a_time_passes_s3_and_keep_keeps() {
    need_pg!();
    let Some(server) = S3Server::start_new() else {
        skip_or_fail!(
            "s3s-fs not found (install: cargo install s3s-fs@0.14.1 --features binary --locked)"
        );
    };
    let t = TestDir::new("drill-s3");
    let tm = s3_tidemark(&t, &server);
    let config = t.path().join("tidemark.toml");
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let p = production(&t, &tm, 0, None, None);
    passing_drill(&t, &tm, &p, "", |args| tm.run(args));

    // --keep: the server stays up in its folder, and the report says how to stop it.
    // Its first port is one this test holds (debug builds take it from
    // TIDEMARK_TEST_DRILL_PORT): the server cannot bind it, and the drill moves on to
    // another.
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let folder = t.mkdir("kept");
    let out = tm
        .clone()
        .with_env("TIDEMARK_TEST_DRILL_PORT", &taken_port.to_string())
        .run(&[
            "--drill-path",
            folder.to_str().unwrap(),
            "drill",
            "--json",
            "--target",
            "immediate",
            "--keep",
            "--pg-bin",
            &pg_bin().unwrap().display().to_string(),
        ]);
    assert_eq!(out.code, 0, "{out:?}");
    let r = parse("keep", &out);
    assert_ne!(r["port"], taken_port, "{r:#}");
    drop(taken);
    let scratch = PathBuf::from(r["scratch"].as_str().unwrap());
    let log = std::fs::read_to_string(scratch.join("server.log")).unwrap();
    assert!(
        log.contains("could not bind"),
        "the first start did not meet the taken port: {log}"
    );
    let pid = r["server_pid"].as_i64().expect("pid");
    assert!(scratch.join("data/PG_VERSION").is_file(), "{r:#}");
    assert!(alive(pid), "{r:#}");
    let state = r["scratch_state"].as_str().unwrap();
    assert!(
        state.starts_with("kept ") && state.contains(&format!("kill -QUIT {pid}")),
        "{state}"
    );
    // It answers on its own socket, promoted, holding the markers before the backup.
    let psql = crate::harness::pg::user_command(pg_bin().unwrap().join("psql"), t.path())
        .args(["-X", "-A", "-t", "-h"])
        .arg(&scratch)
        .args(["-p", &r["port"].to_string(), "-U", SUPERUSER, "-c"])
        .arg("select pg_is_in_recovery()::text || ' ' || count(*) from marks")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&psql.stdout).trim(),
        "false 3",
        "{psql:?}"
    );
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid as i32, libc::SIGQUIT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pid), "the kept server did not stop");
    std::fs::remove_dir_all(&scratch).unwrap();
}

/// A failing SQL check: exit 6, the statement named, recorded as failed, nothing left.
#[test]
fn a_failing_check_fails_the_drill_and_leaves_nothing() {
    need_pg!();
    let t = TestDir::new("drill-fail");
    let tm = local_tidemark(&t);
    let p = production(&t, &tm, 0, None, None);
    let folder = drill_folder(&t);
    let checks = t.write(
        "checks.sql",
        b"select true;\nselect count(*) = 999 from marks; -- wrong on purpose\nselect 1/0 = 1;\n",
    );
    let args = |json: bool| {
        let mut a = vec![
            "--drill-path".to_string(),
            folder.display().to_string(),
            "drill".into(),
            "--checks".into(),
            checks.display().to_string(),
        ];
        if json {
            a.push("--json".into());
        }
        a.extend(pg_bin_args());
        a
    };
    let out = tm.run(&args(true));
    assert_eq!(out.code, i32::from(exit::DRILL_FAILED), "{out:?}");
    let r = parse("fail", &out);
    assert_eq!(r["passed"], false);
    let second = check(
        &r,
        "checks statement 2 (line 2, database postgres: select count(*) = 999 from marks",
    );
    assert_eq!(second["passed"], false, "{r:#}");
    assert_eq!(second["detail"], "returned f", "{r:#}");
    let third = check(
        &r,
        "checks statement 3 (line 3, database postgres: select 1/0 = 1)",
    );
    assert!(
        third["detail"]
            .as_str()
            .unwrap()
            .contains("division by zero"),
        "{r:#}"
    );
    assert_eq!(check(&r, "checks statement 1")["passed"], true);
    assert!(
        r["failure"].as_str().unwrap().contains("statement 2"),
        "{r:#}"
    );
    // Everything else passed: latest, replayed to the end of the archive.
    assert_eq!(check(&r, "recovery point")["passed"], true, "{r:#}");
    assert_nothing_left("fail", &folder, &r);
    // Text: the failing statement and what it returned, on its line.
    let out = tm.run(&args(false));
    assert_eq!(out.code, i32::from(exit::DRILL_FAILED), "{out:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("check       FAIL  checks statement 2")
                && l.ends_with(": returned f")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.starts_with("drill       FAILED"),
        "{}",
        out.stdout
    );
    assert!(leftovers(&folder).is_empty());
    // Recorded: info shows the failed drill and warns that none passed.
    let info = tm.info();
    assert_eq!(info["drills"]["count"], 2, "{info:#}");
    assert_eq!(info["drills"]["last"]["passed"], false);
    assert!(info["drills"]["last_passed"].is_null());
    assert!(
        info["drills"]["warning"]
            .as_str()
            .unwrap()
            .contains("none of the 2"),
        "{info:#}"
    );
    drop(p);
}

/// A backed-up `postgresql.conf` naming the production data directory (`data_directory`,
/// which `postgresql.auto.conf` cannot override): the drill reads the configuration back
/// before it starts anything, refuses, fails (6), and leaves production alone.
#[test]
fn a_configuration_pointing_at_production_is_refused() {
    need_pg!();
    let t = TestDir::new("drill-datadir");
    let tm = local_tidemark(&t);
    let c = archiving_cluster(&t, &tm, None);
    // Harmless for production (its own folder), fatal for a copy that would obey it.
    c.append_conf(&[(
        "data_directory".into(),
        crate::harness::pg::conf_quote(&c.data_dir().display().to_string()),
    )]);
    backup_ok(&tm, &c, &[]);
    let last = c.psql("select pg_walfile_name(pg_switch_wal())");
    c.wait_archived(&last, Duration::from_secs(60));
    let pid_before = std::fs::read_to_string(c.data_dir().join("postmaster.pid")).unwrap();
    let folder = drill_folder(&t);
    let mut args = vec![
        "--drill-path".to_string(),
        folder.display().to_string(),
        "drill".into(),
        "--json".into(),
    ];
    args.extend(pg_bin_args());
    let out = tm.run(&args);
    assert_eq!(out.code, i32::from(exit::DRILL_FAILED), "{out:?}");
    let r = parse("data_directory", &out);
    let failure = r["failure"].as_str().unwrap();
    assert!(
        failure.contains("data_directory") && failure.contains("refusing to start it"),
        "{failure}"
    );
    assert!(r["server_pid"].is_null(), "a server was started: {r:#}");
    assert_nothing_left("data_directory", &folder, &r);
    // Production runs on, the same postmaster.
    assert_eq!(
        std::fs::read_to_string(c.data_dir().join("postmaster.pid")).unwrap(),
        pid_before
    );
    assert_eq!(c.psql("select 1"), "1");
}

/// `tidemark drill` (to the end of the archive) started in the background.
fn spawn_drill(tm: &Tidemark, folder: &Path) -> std::process::Child {
    let mut args = vec![
        "--drill-path".to_string(),
        folder.display().to_string(),
        "drill".into(),
    ];
    args.extend(pg_bin_args());
    tm.command(&args).spawn().unwrap()
}

/// SIGTERM while the scratch server replays: exit 1, nothing recorded, nothing left.
#[test]
fn a_drill_interrupted_by_sigterm_leaves_nothing() {
    need_pg!();
    let t = TestDir::new("drill-sigterm");
    let tm = local_tidemark(&t);
    // About 40 MiB of WAL after the backup: replay fetches 40 segments one by one.
    let p = production(&t, &tm, 200_000, None, None);
    let folder = drill_folder(&t);
    let mut child = spawn_drill(&tm, &folder);
    // The scratch server's pid file, with the postmaster's pid on its first line: it
    // has started and is replaying.
    let deadline = Instant::now() + Duration::from_secs(120);
    let postmaster = loop {
        let found = leftovers(&folder).into_iter().find_map(|name| {
            let text =
                std::fs::read_to_string(folder.join(name).join("data/postmaster.pid")).ok()?;
            text.lines().next()?.trim().parse::<i64>().ok()
        });
        if let Some(pid) = found {
            break pid;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the drill ended before its server started: {:?}",
            child.wait_with_output()
        );
        assert!(Instant::now() < deadline, "no scratch server within 120 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(alive(postmaster));
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(i32::from(exit::FAILED)), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .unwrap_or_default()
            .contains("drill: interrupted"),
        "{stderr}"
    );
    assert!(leftovers(&folder).is_empty(), "{:?}", leftovers(&folder));
    assert!(
        !alive(postmaster),
        "the scratch server {postmaster} still runs"
    );

    // SIGINT as soon as the scratch folder exists (during the restore, or just after):
    // the same end, whichever phase it reaches.
    let mut child = spawn_drill(&tm, &folder);
    let deadline = Instant::now() + Duration::from_secs(120);
    while leftovers(&folder).is_empty() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the drill ended before its scratch folder existed: {:?}",
            child.wait_with_output()
        );
        assert!(Instant::now() < deadline, "no scratch folder within 120 s");
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(i32::from(exit::FAILED)), "{stderr}");
    assert!(stderr.contains("drill: interrupted"), "{stderr}");
    assert!(leftovers(&folder).is_empty(), "{:?}", leftovers(&folder));

    // A target the planner refuses: exit 5, nothing created.
    let before_backup = rfc3339(p.markers[0].commit);
    let out = tm.run(&[
        "--drill-path",
        folder.to_str().unwrap(),
        "drill",
        "--target-time",
        &before_backup,
        "--pg-bin",
        &pg_bin().unwrap().display().to_string(),
    ]);
    assert_eq!(out.code, i32::from(exit::TARGET_UNREACHABLE), "{out:?}");
    assert!(leftovers(&folder).is_empty(), "{:?}", leftovers(&folder));

    let info = tm.info();
    assert_eq!(
        info["drills"]["count"], 0,
        "an interrupted or refused drill was recorded: {info:#}"
    );
    drop(p);
}
