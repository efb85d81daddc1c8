//! `tidemark agent` through the binary, against real PostgreSQL 15 clusters, on a local
//! repository and on S3 (s3s-fs).
//!
//! What is proven here:
//! - a `2s` backup schedule takes backup after backup; each run is recorded in the local
//!   history and as a job record in the repository; SIGTERM stops the agent at once, exit 0;
//! - the local history is read back: an hourly schedule whose last run was 30 minutes ago
//!   runs nothing, one whose last run was two hours ago (missed while no agent ran) runs
//!   at once; with the state folder deleted nothing is lost nor run again: the last runs
//!   are rebuilt from the repository (the agent's own job record and backup, or a backup
//!   taken by hand, hold an hourly schedule back);
//! - one backup at a time: a backup started by hand while another runs exits 7 with one
//!   line naming the holder; the agent's scheduled backup while a hand-started one holds
//!   the lock is skipped, not failed, and the schedule goes on after it;
//! - a failing backup (the server stopped) is retried with a pause that doubles, each
//!   failure logged and recorded (locally and in the repository, with its kind and the
//!   child's error line); once the server is back the retry succeeds;
//! - SIGTERM during a backup: the backup child is stopped, no backup is listed, the agent
//!   exits 0 within seconds (local and S3);
//! - SIGTERM during a drill: the scratch cluster and its folder are gone, nothing recorded;
//! - a backup whose agent is killed (SIGKILL) is stopped by the kernel's SIGTERM
//!   (`PR_SET_PDEATHSIG`) and lists nothing;
//! - SIGHUP rereads the file: an invalid schedule is refused and the old one kept, a valid
//!   new one takes effect at once; a second agent for the stanza exits 7;
//! - with `spool_drainer = "agent"` the agent drains the spool and archive-push starts no
//!   drainer of its own; once the agent is stopped, archive-push's own drainer does it;
//!   kinds without a schedule never run.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::backup::{backup_ok, local_tidemark, pg_args, s3_tidemark, wait_until, PASSWORD};
use crate::harness::pg::{chown_to_user, pg_bin, Cluster, ClusterOptions, TestDir};
use crate::harness::s3::S3Server;
use crate::harness::tidemark::Tidemark;
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

/// A running `tidemark agent`, its stderr in a file; killed if a test ends without
/// stopping it.
struct Agent {
    child: Option<Child>,
    log: PathBuf,
}

impl Agent {
    /// Starts `tidemark <args> agent` with `tm`'s settings.
    fn start(tm: &Tidemark, t: &TestDir, args: &[&str]) -> Agent {
        let n = std::fs::read_dir(t.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with("agent-"))
            })
            .count();
        let log = t.path().join(format!("agent-{n}.log"));
        let mut all: Vec<&str> = args.to_vec();
        all.push("agent");
        let mut cmd = tm.command(&all);
        cmd.stdout(File::create(t.path().join(format!("agent-{n}.out"))).unwrap())
            .stderr(File::create(&log).unwrap());
        let child = cmd.spawn().expect("start the agent");
        Agent {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many log lines contain `needle`.
    fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until `times` log lines contain `needle`.
    fn wait_for(&self, needle: &str, times: usize, timeout: Duration) {
        let started = Instant::now();
        while self.count(needle) < times {
            if started.elapsed() > timeout {
                panic!(
                    "{times} × {needle:?} not logged within {timeout:?}; the agent's log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> libc::pid_t {
        self.child.as_ref().expect("running").id() as libc::pid_t
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: a plain system call on our child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// SIGTERM, then waits for the exit: the exit code and how long it took.
    fn stop(&mut self) -> (i32, Duration) {
        self.signal(libc::SIGTERM);
        let asked = Instant::now();
        let mut child = self.child.take().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), asked.elapsed());
            }
            if asked.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the agent did not stop within 60 s of SIGTERM; its log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it and asserts it stopped at once and cleanly.
    fn stop_ok(&mut self) {
        let (code, took) = self.stop();
        assert_eq!(code, 0, "the agent's exit; its log:\n{}", self.log());
        assert!(
            took < Duration::from_secs(10),
            "the agent took {took:?} to stop; its log:\n{}",
            self.log()
        );
        assert!(self.log().contains("agent: stopped"), "{}", self.log());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A cluster archiving into `tm` (through `archive_prefix` before the archive command,
/// e.g. a pause), its stanza created, started.
fn archiving(t: &TestDir, tm: &Tidemark, archive_prefix: &str) -> Cluster {
    let mut c = Cluster::init(
        t,
        "pg",
        ClusterOptions {
            password: Some(PASSWORD.into()),
            archive_command: Some(format!(
                "{archive_prefix}{} archive-push %p",
                tm.shell_prefix()
            )),
            ..Default::default()
        },
    );
    tm.init_stanza(&c);
    c.start();
    c
}

fn backups(tm: &Tidemark) -> usize {
    tm.info()["backups"].as_array().map_or(0, Vec::len)
}

/// The job records of `kind` in the repository: files under `root` whose path contains
/// `/jobs/<kind>/` (a local repository's folder, or s3s-fs's).
fn job_records(root: &Path, kind: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    let needle = format!("/jobs/{kind}/");
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(&needle)
                && p.to_string_lossy().ends_with(".json")
            {
                out.push(std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    out
}

fn scheduled_backups(t: &TestDir, tm: Tidemark, repo_root: &Path) {
    let c = archiving(t, &tm, "");
    let tm = tm.with_args(pg_args(&c));
    let mut agent = Agent::start(&tm, t, &["--backup-schedule", "2s"]);
    wait_until("two scheduled backups", Duration::from_secs(60), || {
        backups(&tm) >= 2
    });
    agent.stop_ok();
    let log = agent.log();
    assert!(log.contains("schedules: backup every 2 s"), "{log}");
    assert!(agent.count("backup: succeeded") >= 2, "{log}");
    assert_eq!(agent.count("backup: failed"), 0, "{log}");
    let records = job_records(repo_root, "backup");
    // Every run is recorded; the one the stop interrupted (if any) as cancelled.
    let succeeded = records
        .iter()
        .filter(|r| r.contains("\"outcome\": \"succeeded\""))
        .count();
    let cancelled = records
        .iter()
        .filter(|r| r.contains("\"outcome\": \"cancelled\""))
        .count();
    assert!(
        succeeded >= 2 && cancelled <= 1 && succeeded + cancelled == records.len(),
        "{records:?}"
    );
    assert!(t.path().join("tidemark-state/main/agent.sled").is_dir());
}

#[test]
fn scheduled_backups_run_on_a_local_repository() {
    need_pg!();
    let t = TestDir::new("agent-schedule-local");
    let tm = local_tidemark(&t);
    scheduled_backups(&t, tm, &t.path().join("repo"));
}

#[test]
fn scheduled_backups_run_on_s3() {
    need_pg!();
    let Some(server) = S3Server::start_new() else {
        skip_or_fail!("s3s-fs not found (cargo install s3s-fs)");
    };
    let t = TestDir::new("agent-schedule-s3");
    let tm = s3_tidemark(&t, &server);
    scheduled_backups(&t, tm, &server.data_dir());
}

/// Replaces the agent's local history with one successful backup `ago` ago (as a
/// previous agent would have left it), owned by the test user.
fn local_history_says_last_backup(t: &TestDir, ago: chrono::Duration) {
    use tidemark_agent::daemon::{state::LocalState, JobKind, JobRun, Outcome};
    let folder = t.path().join("tidemark-state");
    let _ = std::fs::remove_dir_all(&folder);
    let settings = state_settings(t);
    let at = chrono::Utc::now() - ago;
    LocalState::open(&settings)
        .unwrap()
        .record(&JobRun {
            kind: JobKind::Backup,
            started: at,
            ended: at,
            outcome: Outcome::Succeeded,
            exit_code: Some(0),
            stderr_tail: String::new(),
        })
        .unwrap();
    let mut stack = vec![folder];
    while let Some(p) = stack.pop() {
        chown_to_user(&p);
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
}

/// The test's local state settings (as the harness sets `TIDEMARK_STATE_PATH`).
fn state_settings(t: &TestDir) -> tidemark_agent::cli::config::Settings {
    let args = tidemark_agent::cli::args::SettingArgs {
        state_path: Some(t.path().join("tidemark-state")),
        ..Default::default()
    };
    tidemark_agent::cli::config::resolve(&args, None, Default::default()).unwrap()
}

/// The runs of `kind` in the agent's local history (the agent stopped), newest first.
fn local_history(
    t: &TestDir,
    kind: tidemark_agent::daemon::JobKind,
) -> Vec<tidemark_agent::daemon::JobRun> {
    tidemark_agent::daemon::state::LocalState::open(&state_settings(t))
        .unwrap()
        .runs(kind, 100)
}

fn missed_run_and_lost_state(t: &TestDir, base: Tidemark) {
    let c = archiving(t, &base, "");
    let tm = base.clone().with_args(pg_args(&c));
    // The local history says the last backup was half an hour ago: an hourly schedule
    // has nothing due (the repository has no backup: "never run" would start one).
    local_history_says_last_backup(t, chrono::Duration::minutes(30));
    let mut agent = Agent::start(&tm, t, &["--backup-schedule", "1h"]);
    agent.wait_for("schedules: backup every 3600 s", 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    agent.stop_ok();
    assert_eq!(agent.count("backup: started"), 0, "{}", agent.log());
    assert_eq!(backups(&base), 0);
    // Two hours ago: the run missed while no agent ran starts as soon as it is back.
    local_history_says_last_backup(t, chrono::Duration::hours(2));
    let mut agent = Agent::start(&tm, t, &["--backup-schedule", "1h"]);
    agent.wait_for("backup: succeeded", 1, Duration::from_secs(30));
    agent.stop_ok();
    assert_eq!(agent.count("backup: started"), 1, "{}", agent.log());
    assert_eq!(backups(&base), 1);
    // The state folder deleted: nothing is lost, and the last run is read back from the
    // repository (an hourly schedule does not run again at once).
    std::fs::remove_dir_all(t.path().join("tidemark-state")).unwrap();
    let mut agent = Agent::start(&tm, t, &["--backup-schedule", "1h"]);
    agent.wait_for("schedules: backup every 3600 s", 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    agent.stop_ok();
    assert_eq!(agent.count("backup: started"), 0, "{}", agent.log());
    assert_eq!(backups(&base), 1, "the backup is still listed");
    // A backup taken by hand is a run too: with the state gone again, the hourly
    // schedule waits for an hour after it.
    backup_ok(&base, &c, &[]);
    std::fs::remove_dir_all(t.path().join("tidemark-state")).unwrap();
    let mut agent = Agent::start(&tm, t, &["--backup-schedule", "1h"]);
    agent.wait_for("schedules: backup every 3600 s", 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    agent.stop_ok();
    assert_eq!(agent.count("backup: started"), 0, "{}", agent.log());
    assert_eq!(backups(&base), 2);
}

#[test]
fn a_missed_run_is_caught_up_and_lost_state_is_rebuilt_on_a_local_repository() {
    need_pg!();
    let t = TestDir::new("agent-missed-local");
    missed_run_and_lost_state(&t, local_tidemark(&t));
}

#[test]
fn a_missed_run_is_caught_up_and_lost_state_is_rebuilt_on_s3() {
    need_pg!();
    let Some(server) = S3Server::start_new() else {
        skip_or_fail!("s3s-fs not found (cargo install s3s-fs)");
    };
    let t = TestDir::new("agent-missed-s3");
    missed_run_and_lost_state(&t, s3_tidemark(&t, &server));
}

#[test]
fn one_backup_at_a_time_and_a_hand_started_one_is_respected() {
    need_pg!();
    let t = TestDir::new("agent-lock");
    let tm = local_tidemark(&t);
    // Archiving takes 2 s a segment: each backup waits that long for its WAL.
    let c = archiving(&t, &tm, "sleep 2 && ");
    let tm = tm.with_args(pg_args(&c));
    let lock = t.path().join("tidemark-state/main/backup.lock");
    let hand = tm.command(&["backup"]).spawn().unwrap();
    wait_until("the hand backup's lock", Duration::from_secs(10), || {
        std::fs::read_to_string(&lock).is_ok_and(|s| s.starts_with("pid "))
    });
    let second = tm.run(&["backup"]);
    assert_eq!(second.code, 7, "{second:?}");
    let lines = second.stderr_lines();
    assert_eq!(lines.len(), 1, "{second:?}");
    assert!(
        lines[0].starts_with("tidemark: backup: another backup of stanza main is running (pid "),
        "{lines:?}"
    );
    // The agent's run while the hand-started one holds the lock: skipped, not failed.
    let mut agent = Agent::start(&tm, &t, &["--backup-schedule", "2s"]);
    agent.wait_for("backup: skipped", 1, Duration::from_secs(10));
    let hand = hand.wait_with_output().unwrap();
    assert!(hand.status.success(), "{hand:?}");
    assert_eq!(second.stdout, "");
    agent.wait_for("backup: succeeded", 1, Duration::from_secs(40));
    agent.stop_ok();
    assert_eq!(agent.count("backup: failed"), 0, "{}", agent.log());
    assert!(backups(&tm) >= 2);
    // The skipped run is in the local history (as skipped: no failure), not in the
    // repository.
    use tidemark_agent::daemon::Outcome;
    let runs = local_history(&t, tidemark_agent::daemon::JobKind::Backup);
    assert!(
        runs.iter().any(|r| r.outcome == Outcome::Skipped),
        "{runs:?}"
    );
    assert!(
        runs.iter()
            .all(|r| !matches!(r.outcome, Outcome::Failed(_))),
        "{runs:?}"
    );
    let records = job_records(&t.path().join("repo"), "backup");
    assert!(
        records.iter().all(|r| !r.contains("skipped")),
        "{records:?}"
    );
}

#[test]
fn a_failing_backup_is_retried_with_a_doubling_pause_and_recorded() {
    need_pg!();
    let t = TestDir::new("agent-retry");
    let tm = local_tidemark(&t);
    let mut c = archiving(&t, &tm, "");
    let tm = tm
        .with_args(pg_args(&c))
        .with_env("TIDEMARK_TEST_FIRST_RETRY_MS", "400");
    c.stop();
    let mut agent = Agent::start(&tm, &t, &["--backup-schedule", "1h"]);
    agent.wait_for("backup: failed", 4, Duration::from_secs(30));
    let log = agent.log();
    for (n, pause) in [(1, "0.4"), (2, "0.8"), (3, "1.6"), (4, "3.2")] {
        assert!(
            log.contains(&format!("{n} in a row"))
                && log.contains(&format!("retrying in {pause} s")),
            "failure {n}, pause {pause} s: {log}"
        );
    }
    // Each failure says why (the child's own error line).
    assert!(log.contains("backup: failed (failed, exit 1)"), "{log}");
    c.start();
    agent.wait_for("backup: succeeded", 1, Duration::from_secs(30));
    agent.stop_ok();
    assert_eq!(backups(&tm), 1);
    // The local history: the success, after the failures (newest first).
    let runs = local_history(&t, tidemark_agent::daemon::JobKind::Backup);
    use tidemark_agent::daemon::{FailureKind, Outcome};
    assert_eq!(runs[0].outcome, Outcome::Succeeded, "{runs:?}");
    assert!(
        runs[1..5]
            .iter()
            .all(|r| r.outcome == Outcome::Failed(FailureKind::Failed) && r.exit_code == Some(1)),
        "{runs:?}"
    );
    let records = job_records(&t.path().join("repo"), "backup");
    let failed: Vec<_> = records
        .iter()
        .filter(|r| r.contains("\"outcome\": \"failed\""))
        .collect();
    assert!(failed.len() >= 4, "{records:?}");
    assert!(
        failed
            .iter()
            .all(|r| r.contains("\"failure\": \"failed\"") && r.contains("tidemark: backup:")),
        "{failed:?}"
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r.contains("\"outcome\": \"succeeded\""))
            .count(),
        1
    );
}

fn sigterm_during_a_backup(t: &TestDir, base: Tidemark) {
    // Archiving takes 3 s a segment: the backup is still waiting for its WAL when the
    // agent is stopped.
    let c = archiving(t, &base, "sleep 3 && ");
    let tm = base.clone().with_args(pg_args(&c));
    let mut agent = Agent::start(&tm, t, &["--backup-schedule", "1h"]);
    agent.wait_for("backup: started", 1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1500));
    agent.stop_ok();
    let log = agent.log();
    assert!(
        log.contains("backup: stopped by the agent's shutdown"),
        "{log}"
    );
    assert!(
        log.contains("interrupted by SIGTERM: the backup was abandoned and is not recorded"),
        "{log}"
    );
    assert_eq!(backups(&tm), 0, "no backup is listed");
    // The backup's server side ended too: the next backup runs.
    backup_ok(&base, &c, &[]);
}

#[test]
fn sigterm_during_a_backup_leaves_no_backup_on_a_local_repository() {
    need_pg!();
    let t = TestDir::new("agent-term-backup-local");
    sigterm_during_a_backup(&t, local_tidemark(&t));
}

#[test]
fn sigterm_during_a_backup_leaves_no_backup_on_s3() {
    need_pg!();
    let Some(server) = S3Server::start_new() else {
        skip_or_fail!("s3s-fs not found (cargo install s3s-fs)");
    };
    let t = TestDir::new("agent-term-backup-s3");
    sigterm_during_a_backup(&t, s3_tidemark(&t, &server));
}

#[test]
fn sigterm_during_a_drill_removes_its_scratch_cluster() {
    need_pg!();
    let t = TestDir::new("agent-term-drill");
    let drills = t.mkdir("drills");
    let path = format!(
        "{}:{}",
        pg_bin().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let base = local_tidemark(&t)
        .with_args(["--drill-path", &drills.display().to_string()])
        .with_env("PATH", &path);
    let c = archiving(&t, &base, "");
    let tm = base.clone().with_args(pg_args(&c));
    c.workload(2_000);
    backup_ok(&base, &c, &[]);
    c.wait_archived(&c.switch_wal(), Duration::from_secs(60));
    let mut agent = Agent::start(&tm, &t, &["--drill-schedule", "1h"]);
    agent.wait_for("drill: started", 1, Duration::from_secs(10));
    // Stopped once its scratch server runs.
    wait_until(
        "the drill's scratch server",
        Duration::from_secs(60),
        || {
            scratch_files(&drills)
                .iter()
                .any(|p| p.ends_with("postmaster.pid"))
        },
    );
    agent.stop_ok();
    assert!(
        std::fs::read_dir(&drills).unwrap().next().is_none(),
        "left in the drills' folder: {:?}; agent log:\n{}",
        scratch_files(&drills),
        agent.log()
    );
    assert!(
        agent
            .log()
            .contains("drill: stopped by the agent's shutdown"),
        "{}",
        agent.log()
    );
    let records = job_records(&t.path().join("repo"), "drill");
    assert!(
        records.len() == 1 && records[0].contains("\"outcome\": \"cancelled\""),
        "{records:?}"
    );
    assert_eq!(
        tm.info()["drills"]["count"].as_u64().unwrap_or(0),
        0,
        "no drill recorded"
    );
}

/// Every file under `dir`.
fn scratch_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn sighup_reloads_the_schedule_and_keeps_it_when_the_file_is_invalid() {
    need_pg!();
    let t = TestDir::new("agent-reload");
    let repo = t.mkdir("repo");
    let config = |schedule: &str| {
        format!(
            "repo = \"file://{}\"\nbackup_schedule = \"{schedule}\"\n",
            repo.display()
        )
    };
    let path = t.write("tidemark.toml", config("1h").as_bytes());
    let tm = Tidemark::new(&t)
        .with_args(["--config", &path.display().to_string()])
        .with_env("PGPASSWORD", PASSWORD);
    let c = archiving(&t, &tm, "");
    let tm = tm.with_args(pg_args(&c));
    let mut agent = Agent::start(&tm, &t, &[]);
    // Never run: the first backup is due at once; then the next in an hour.
    agent.wait_for("backup: succeeded", 1, Duration::from_secs(30));
    // One agent per stanza: a second one exits 7 at once, with one line.
    let second = tm.run(&["agent"]);
    assert_eq!(second.code, 7, "{second:?}");
    assert!(
        second.stderr_lines().last().is_some_and(
            |l| l.starts_with("tidemark: agent: another agent of stanza main is running (pid ")
        ),
        "{second:?}"
    );
    t.write("tidemark.toml", config("every other day").as_bytes());
    agent.signal(libc::SIGHUP);
    agent.wait_for("configuration not reloaded", 1, Duration::from_secs(10));
    assert!(agent
        .log()
        .contains("\"every other day\" is not a schedule"));
    t.write("tidemark.toml", config("2s").as_bytes());
    agent.signal(libc::SIGHUP);
    agent.wait_for("schedules: backup every 2 s", 1, Duration::from_secs(10));
    agent.wait_for("backup: succeeded", 3, Duration::from_secs(40));
    agent.stop_ok();
    assert!(backups(&tm) >= 3);
}

#[test]
fn the_agent_drains_the_spool_and_archive_push_starts_no_drainer_meanwhile() {
    need_pg!();
    let t = TestDir::new("agent-spool");
    let spool = t.mkdir("spool");
    let tm = local_tidemark(&t).with_args([
        "--archive-async",
        "true",
        "--spool-path",
        &spool.display().to_string(),
        "--spool-drainer",
        "agent",
    ]);
    let mut c = Cluster::init(
        &t,
        "pg",
        ClusterOptions {
            password: Some(PASSWORD.into()),
            archive_command: Some(format!("{} archive-push %p", tm.shell_prefix())),
            ..Default::default()
        },
    );
    tm.init_stanza(&c);
    let mut agent = Agent::start(&tm, &t, &[]);
    agent.wait_for("spool-drainer: started", 1, Duration::from_secs(10));
    c.start();
    c.workload(1_000);
    let first = c.switch_wal();
    c.wait_archived(&first, Duration::from_secs(60));
    let in_repo = |name: &str| {
        scratch_files(&t.path().join("repo/stanzas/main/wal"))
            .iter()
            .any(|p| p.file_name().unwrap().to_string_lossy().starts_with(name))
    };
    wait_until("the agent's drain", Duration::from_secs(30), || {
        in_repo(&first)
    });
    let drain_logs = || {
        scratch_files(&spool)
            .into_iter()
            .filter(|p| p.ends_with("drain.log"))
            .count()
    };
    assert_eq!(drain_logs(), 0, "archive-push started a drainer of its own");
    agent.stop_ok();
    // No schedule, no job.
    for kind in ["backup", "verify", "drill", "expire"] {
        assert_eq!(
            agent.count(&format!("{kind}: started")),
            0,
            "{}",
            agent.log()
        );
    }
    // Without the agent, archive-push's own drainer takes over.
    c.workload(1_000);
    let second = c.switch_wal();
    c.wait_archived(&second, Duration::from_secs(60));
    wait_until("archive-push's drain", Duration::from_secs(30), || {
        in_repo(&second)
    });
    // Failed once (session 14, full suite, not reproduced in 10 runs alone): the segment
    // was in the repository but no drainer log existed. Say how it got there if again.
    assert_eq!(
        drain_logs(),
        1,
        "spool: {:?}\nagent's log:\n{}\nserver log:\n{}",
        scratch_files(&spool),
        agent.log(),
        c.log_tail(40)
    );
}

#[test]
fn a_job_stops_when_the_agent_is_killed() {
    need_pg!();
    let t = TestDir::new("agent-killed");
    let base = local_tidemark(&t);
    let c = archiving(&t, &base, "sleep 3 && ");
    let tm = base.clone().with_args(pg_args(&c));
    let mut agent = Agent::start(&tm, &t, &["--backup-schedule", "1h"]);
    agent.wait_for("backup: started (pid ", 1, Duration::from_secs(10));
    let log = agent.log();
    let pid: u32 = log
        .split("backup: started (pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {log}"));
    std::thread::sleep(Duration::from_millis(500));
    agent.signal(libc::SIGKILL);
    let mut child = agent.child.take().unwrap();
    child.wait().unwrap();
    // The kernel tells the orphaned backup (PR_SET_PDEATHSIG), which abandons.
    wait_until("the orphaned backup's end", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    assert_eq!(backups(&base), 0);
}
