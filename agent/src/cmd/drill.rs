//! `tidemark drill [--target-… (as restore)] [--backup ID] [--checks FILE.sql]
//! [--pg-bin DIR] [--run-as USER] [--keep] [--json]`: the automated restore drill.
//!
//! It plans and restores as `tidemark restore` does ([`make_exact_plan`], then
//! [`restore_planned`]) into a scratch folder of its own, then proves the copy:
//!
//! 1. before anything is created: the checks file is read, the binaries found and their
//!    major compared with the stanza's, the user who runs the server resolved (PostgreSQL
//!    refuses root), the target planned (a refusal exits 5);
//! 2. the scratch folder (`drill_path`, else the system's temporary folder; mode 0700,
//!    owned by that user) receives the data directory and every tablespace;
//! 3. [`tidemark_recovery::drill::overrides`] are appended to `postgresql.auto.conf` and
//!    read back through `postgres -C` (the binaries' own reading of the configuration,
//!    includes and all) before the server starts: a scratch copy must never bind the
//!    production port, archive into the stanza or act as the production server;
//! 4. `postgres` runs as that user, in a process group of its own (a terminal's Ctrl-C
//!    reaches tidemark, which stops it); the drill polls it over its private socket until
//!    replay pauses at the target (or, for `latest`, ends), reads where it stopped
//!    (`pg_last_xact_replay_timestamp()`, `pg_last_wal_replay_lsn()`) and compares that
//!    with the plan ([`compare_recovery_point`]), promotes, and waits for a write to
//!    succeed;
//! 5. checks: the tables of every database that allows connections are counted, the
//!    user's statements each must return one `true`, and `amcheck`'s `bt_index_check`
//!    runs on every btree index where the binaries have the extension (it is created in
//!    the scratch copy, never anywhere else);
//! 6. the server is stopped (SIGQUIT: PostgreSQL's immediate shutdown; then SIGKILL to
//!    its process group if it lingers) and the scratch folder removed, unless `--keep`;
//!    also on SIGINT/SIGTERM (then nothing is recorded) and when a check fails;
//! 7. the result is recorded in the repository (`tidemark_store::drill`) and printed;
//!    a failed drill exits [`exit::DRILL_FAILED`].
//!
//! The restore phase is not cancelled from here: the restore listens to the signals
//! itself and removes what it wrote before it returns (its blocking writers must be done
//! before the folder goes).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tidemark_pg::Lsn;
use tidemark_pgclient::settings::{PgTarget, SslMode};
use tidemark_pgclient::sql;
use tidemark_recovery::autoconf::ArchiveMode;
use tidemark_recovery::drill::{
    self as rules, compare_recovery_point, evaluate_check, CheckOutcome, ExpectedStop, Reached,
    Statement,
};
use tidemark_store::drill::{CheckRecord, DrillRecord, PhaseRecord, ReachedPoint};
use tidemark_store::repo::now;
use tidemark_store::Repo;
use tokio::sync::watch;
use tokio_postgres::{Client, SimpleQueryMessage};

use super::open_repo;
use super::plan::{make_exact_plan, PlanReport};
use super::report::{json_lines, Report};
use super::restore::{restore_planned, RestoreJob};
use crate::cli::args::DrillArgs;
use crate::cli::config::{ConfigError, Settings};
use crate::exit::{self, Failure};

/// How long a promotion may take before the drill fails.
const PROMOTE_WITHIN_SECONDS: u32 = 600;
/// How long after the promotion a write may keep failing before the drill fails.
const WRITE_WITHIN: Duration = Duration::from_secs(60);
/// How often the server is polled while it replays.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// How long the server gets to exit after SIGQUIT before its process group is killed.
const STOP_WITHIN: Duration = Duration::from_secs(15);
/// How many other ports are tried when the one found free is taken before the server
/// binds it.
const PORT_TRIES: u32 = 3;
/// The database the checks run in until a `\c` line says otherwise.
const DEFAULT_DATABASE: &str = "postgres";
/// Lines of the server log shown when the server fails.
const LOG_LINES: usize = 8;

/// A drill that could not run to a verdict.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// SIGINT or SIGTERM: everything the drill created is gone, nothing is recorded.
    #[error("interrupted; {0}")]
    Interrupted(String),
    /// The scratch folder could not be made.
    #[error("{0}")]
    Setup(String),
}

/// The drill's result (`--json` prints it; the record is what the repository keeps).
#[derive(Debug, Serialize)]
pub struct DrillReport {
    /// What is recorded.
    #[serde(flatten)]
    pub record: DrillRecord,
    /// The record's key (`null` when it could not be written: see `record_error`).
    pub recorded: Option<String>,
    /// Why the record could not be written.
    pub record_error: Option<String>,
    /// The scratch folder.
    pub scratch: PathBuf,
    /// What became of it: removed, or kept (with the server's pid and how to stop it).
    pub scratch_state: String,
    /// The scratch server's loopback port (also in its socket's name).
    pub port: u16,
    /// The scratch server's process id, when it was started (stopped unless `--keep`).
    pub server_pid: Option<i32>,
    /// What the operator should know (preload libraries left out, a configuration file
    /// created, …).
    pub warnings: Vec<String>,
    /// The plan the drill followed.
    pub plan: PlanReport,
}

impl Report for DrillReport {
    fn text(&self) -> String {
        render_text(self)
    }

    fn json(&self) -> String {
        json_lines(self)
    }

    fn code(&self) -> u8 {
        exit_code(self.record.passed, self.recorded.is_some())
    }
}

/// A drill's exit code: [`exit::DRILL_FAILED`] when it failed (recorded or not), 0 when
/// it passed and is recorded, [`exit::FAILED`] when it passed but its record could not
/// be written (the proof is not kept: the drill has not done its job).
pub fn exit_code(passed: bool, recorded: bool) -> u8 {
    match (passed, recorded) {
        (false, _) => exit::DRILL_FAILED,
        (true, false) => exit::FAILED,
        (true, true) => exit::OK,
    }
}

/// The report for a person.
pub fn render_text(r: &DrillReport) -> String {
    let rec = &r.record;
    let mut out = Vec::new();
    out.push(format!(
        "drill       {}: backup {}, target {}",
        if rec.passed { "PASSED" } else { "FAILED" },
        rec.backup,
        rec.target
    ));
    out.push(format!("plan        stops {}", rec.expected_stop));
    if let Some(reached) = &rec.reached {
        out.push(format!(
            "reached     {}, replay LSN {}",
            reached
                .last_commit_time
                .map(|t| format!(
                    "last commit replayed at {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                ))
                .unwrap_or_else(|| "no commit replayed".into()),
            reached.replay_lsn
        ));
    }
    let phases = rec
        .phases
        .iter()
        .map(|p| format!("{} {:.1} s", p.name, p.seconds))
        .collect::<Vec<_>>()
        .join(", ");
    match rec.rto_seconds {
        Some(total) => out.push(format!("rto         {total:.1} s: {phases}")),
        None => out.push(format!("rto         not reached: {phases}")),
    }
    for c in &rec.checks {
        out.push(format!(
            "check       {}  {}: {}",
            if c.passed { "ok  " } else { "FAIL" },
            c.name,
            c.detail
        ));
    }
    if let Some(why) = &rec.failure {
        out.push(format!("failure     {why}"));
    }
    for w in &r.warnings {
        out.push(format!("WARNING: {w}"));
    }
    match (&r.recorded, &r.record_error) {
        (Some(key), _) => out.push(format!("recorded    {key}")),
        (None, e) => out.push(format!(
            "NOT RECORDED: {}",
            e.as_deref().unwrap_or("unknown")
        )),
    }
    out.push(format!("scratch     {}", r.scratch_state));
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// Runs the drill.
pub async fn run(settings: &Settings, args: &DrillArgs) -> Result<DrillReport, Failure> {
    // One drill of the stanza at a time, whoever started it (the agent or a person).
    let _job_lock = crate::joblock::acquire(settings, crate::daemon::JobKind::Drill)?;
    // Everything that can be refused is refused before anything is created.
    if args.target.target_action != "pause" {
        return Err(ConfigError(
            "--target-action: a drill pauses at the target to read where replay stopped, then promotes; leave it at pause".into(),
        )
        .into());
    }
    let checks = read_checks(args.checks.as_deref())?;
    let account = runner(args.run_as.as_deref().or(settings.drill_user.as_deref()))?;
    let bin = binaries(args.target.pg_bin.as_deref())?;
    let repo = open_repo(settings).await?;
    let stanza = &settings.stanza;
    let cluster = repo.require_cluster(stanza).await?;
    if bin.major != cluster.pg_major {
        return Err(ConfigError(format!(
            "the binaries in {} are PostgreSQL {} ({}), the stanza's cluster is PostgreSQL {}: give --pg-bin with binaries of {}",
            bin.dir.display(),
            bin.major,
            bin.version,
            cluster.pg_major,
            cluster.pg_major
        ))
        .into());
    }
    let mut interrupt = Interrupt::listen();
    let started = Instant::now();
    let started_at = now();
    let mut target = args.target.clone();
    // The plan warns about extensions the binaries lack (when it can list theirs).
    if super::plan::available_extensions(&bin.dir).is_ok() {
        target.pg_bin = Some(bin.dir.clone());
    }
    let plan = make_exact_plan(&repo, settings, &target, args.backup.clone()).await?;
    let planned = started.elapsed();
    let expected = expected_stop(&target, args.backup.clone(), &plan)?;
    let backup = repo.backup(stanza, &plan.backup.id).await?.ok_or_else(|| {
        tidemark_recovery::Error::UnknownBackup {
            id: plan.backup.id.clone(),
            stanza: stanza.to_string(),
            available: Vec::new(),
        }
    })?;
    if interrupt.is_set() {
        return Err(DrillError::Interrupted("nothing was created".into()).into());
    }
    let scratch = make_scratch(settings, &account, started_at)?;
    let mut drill = Drill {
        scratch: scratch.clone(),
        account,
        bin,
        port: first_port()
            .map_err(|e| DrillError::Setup(format!("cannot find a free port: {e}")))?,
        server: None,
        role: None,
        home_db: DEFAULT_DATABASE.to_string(),
        pg_version: None,
        ends: vec![("plan", planned)],
        started,
        checks: Vec::new(),
        reached: None,
        warnings: Vec::new(),
        show: !args.json && std::io::stderr().is_terminal(),
    };
    let tablespaces: BTreeMap<u32, PathBuf> = backup
        .tablespaces
        .iter()
        .map(|t| (t.oid, scratch.join("tablespaces").join(t.oid.to_string())))
        .collect();
    let mut verdict = drill
        .restore_phase(&repo, settings, plan.clone(), tablespaces, !args.json)
        .await;
    if interrupt.is_set() && verdict.is_ok() {
        verdict = Err(Stop::Interrupted);
    }
    if verdict.is_ok() {
        verdict = tokio::select! {
            result = drill.server_phases(&expected, &checks, settings) => result,
            _ = interrupt.wait() => Err(Stop::Interrupted),
        };
    }
    if drill.show {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
    let interrupted = matches!(verdict, Err(Stop::Interrupted));
    let server_pid = drill.server.as_ref().map(|s| s.pid);
    let keep = args.keep && !interrupted;
    let scratch_state = if keep {
        drill.kept_message()
    } else {
        match drill.cleanup().await {
            Ok(()) => format!("removed {} (server stopped)", scratch.display()),
            Err(e) => {
                drill.warnings.push(e.clone());
                format!("NOT removed: {e}")
            }
        }
    };
    if interrupted {
        return Err(
            DrillError::Interrupted(if scratch_state.starts_with("removed") {
                match server_pid {
                    Some(_) => format!(
                        "the scratch server was stopped and {} removed; nothing was recorded",
                        scratch.display()
                    ),
                    None => format!(
                        "{} was removed (no server had started); nothing was recorded",
                        scratch.display()
                    ),
                }
            } else {
                format!("{scratch_state}; nothing was recorded")
            })
            .into(),
        );
    }
    let failure = match &verdict {
        Err(Stop::Failed(why)) => Some(why.clone()),
        _ => drill
            .checks
            .iter()
            .find(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.detail)),
    };
    let complete = drill.ends.len() == 4;
    let (phase_list, rto) = rules::phases(&drill.ends, complete);
    let record = DrillRecord {
        id: random_id(),
        started_at,
        finished_at: now(),
        passed: failure.is_none(),
        failure,
        backup: plan.backup.id.clone(),
        target: target_words(&plan),
        expected_stop: plan.stop.description.clone(),
        expected_lsn: plan.stop.lsn.clone(),
        expected_time: plan.stop.time,
        reached: drill.reached.clone(),
        phases: phase_list
            .into_iter()
            .map(|p| PhaseRecord {
                name: p.name,
                seconds: p.seconds,
            })
            .collect(),
        rto_seconds: rto,
        checks: drill.checks.clone(),
        tidemark_version: env!("CARGO_PKG_VERSION").to_string(),
        pg_version: drill.pg_version.clone(),
    };
    let (recorded, record_error) = match repo.put_drill(stanza, &record).await {
        Ok(key) => {
            // The history stays bounded (`tidemark_store::history`).
            if let Err(e) = repo.prune_drills(stanza).await {
                tracing::warn!("old drill records were not removed: {e}");
            }
            (Some(key.to_string()), None)
        }
        Err(e) => (
            None,
            Some(format!(
                "the result could not be written to the repository: {e}"
            )),
        ),
    };
    Ok(DrillReport {
        record,
        recorded,
        record_error,
        scratch,
        scratch_state,
        port: drill.port,
        server_pid,
        warnings: drill.warnings,
        plan,
    })
}

/// The target in a few words, for the record.
fn target_words(plan: &PlanReport) -> String {
    let t = &plan.target;
    let mut out = match (&t.given, t.resolved_utc) {
        (_, Some(at)) => format!(
            "{} {}",
            t.kind,
            at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        ),
        (Some(given), None) => format!("{} {given}", t.kind),
        (None, None) => t.kind.to_string(),
    };
    if plan.exclusive {
        out.push_str(" (exclusive)");
    }
    out
}

/// Where the plan says replay stops, for [`compare_recovery_point`].
fn expected_stop(
    target: &crate::cli::args::TargetArgs,
    backup: Option<String>,
    plan: &PlanReport,
) -> Result<ExpectedStop, Failure> {
    let (request, _) = super::plan::request(target, backup, &chrono::Local)?;
    let lsn = |text: &str| {
        Lsn::parse(text).ok_or_else(|| {
            tidemark_recovery::Error::Planner(format!("the plan's LSN {text:?} cannot be read"))
        })
    };
    Ok(ExpectedStop {
        target: request.target,
        stop_lsn: plan.stop.lsn.as_deref().map(lsn).transpose()?,
        stop_time: plan.stop.time,
        consistent_lsn: lsn(&plan.backup.stop_lsn)?,
    })
}

/// Reads and cuts the checks file (a usage error when it cannot be read or cut).
fn read_checks(path: Option<&Path>) -> Result<Vec<Statement>, ConfigError> {
    let Some(path) = path else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--checks {}: {e}", path.display())))?;
    let statements = rules::split_statements(&text)
        .map_err(|e| ConfigError(format!("--checks {}: {e}", path.display())))?;
    if statements.is_empty() {
        return Err(ConfigError(format!(
            "--checks {}: no statement in it",
            path.display()
        )));
    }
    Ok(statements)
}

/// The operating-system user that runs the scratch server.
#[derive(Clone, Debug)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
    /// Its groups, supplementary ones included (a repository or config file readable
    /// through a group stays readable), looked up before any process is started.
    groups: Vec<libc::gid_t>,
    /// Whether tidemark switches to it (it runs as root); else it is tidemark's own user.
    switch: bool,
}

/// Who runs the server: `wanted` when tidemark is root (required then: PostgreSQL refuses
/// root), else tidemark's own user (`wanted`, if given, must be that user).
fn runner(wanted: Option<&str>) -> Result<Account, ConfigError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        let name = wanted.ok_or_else(|| {
            ConfigError(
                "PostgreSQL refuses to run as root: give the user that runs the scratch server with --run-as USER (or drill_user)".into(),
            )
        })?;
        let account = lookup_user(name)
            .ok_or_else(|| ConfigError(format!("--run-as {name}: no such user")))?;
        if account.uid == 0 {
            return Err(ConfigError(format!(
                "--run-as {name}: that is root, which PostgreSQL refuses"
            )));
        }
        let groups = group_list(&account.name, account.gid);
        return Ok(Account {
            switch: true,
            groups,
            ..account
        });
    }
    let me = user_by_uid(euid).ok_or_else(|| {
        ConfigError(format!(
            "cannot find the name of this process's user (uid {euid})"
        ))
    })?;
    if let Some(name) = wanted.filter(|n| *n != me.name) {
        return Err(ConfigError(format!(
            "--run-as {name}: only root can run the scratch server as another user (this is {})",
            me.name
        )));
    }
    Ok(me)
}

fn lookup_user(name: &str) -> Option<Account> {
    let c_name = CString::new(name).ok()?;
    passwd(|pwd, buf, result| {
        // SAFETY: every pointer is valid for the call; the buffer outlives the result.
        unsafe { libc::getpwnam_r(c_name.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
}

fn user_by_uid(uid: u32) -> Option<Account> {
    passwd(|pwd, buf, result| {
        // SAFETY: as in `lookup_user`.
        unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
}

/// Runs a `getpw*_r` call and copies the entry out.
fn passwd(
    call: impl Fn(&mut libc::passwd, &mut Vec<libc::c_char>, &mut *mut libc::passwd) -> libc::c_int,
) -> Option<Account> {
    let mut buf: Vec<libc::c_char> = vec![0; 16 * 1024];
    // SAFETY: passwd is plain data; zeroed is a valid (empty) value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    if call(&mut pwd, &mut buf, &mut result) != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points at a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) }
        .to_string_lossy()
        .to_string();
    Some(Account {
        name,
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
        groups: Vec::new(),
        switch: false,
    })
}

/// `name`'s groups (`getgrouplist`), its primary group `gid` among them.
fn group_list(name: &str, gid: u32) -> Vec<libc::gid_t> {
    let Ok(c_name) = CString::new(name) else {
        return vec![gid];
    };
    let mut size: libc::c_int = 64;
    loop {
        let mut groups: Vec<libc::gid_t> = vec![0; size as usize];
        let mut n = size;
        // SAFETY: the buffer holds `n` entries; getgrouplist writes at most that many and
        // sets `n` to the number it needs when that is more (and returns -1).
        let rc = unsafe { libc::getgrouplist(c_name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            return groups;
        }
        if n <= size || size >= 65_536 {
            return vec![gid];
        }
        size = n;
    }
}

/// The PostgreSQL binaries the drill runs.
#[derive(Clone, Debug)]
struct Binaries {
    dir: PathBuf,
    /// `postgres --version`'s version (`15.8`).
    version: String,
    major: u32,
}

/// `--pg-bin`, else the folder `pg_config --bindir` names (pg_config found on PATH),
/// else the folder on PATH that holds `postgres`.
fn binaries(given: Option<&Path>) -> Result<Binaries, ConfigError> {
    let dir = match given {
        Some(dir) => dir.to_path_buf(),
        None => find_binaries().ok_or_else(|| {
            ConfigError(
                "no PostgreSQL binaries found (no pg_config or postgres on PATH): give --pg-bin DIR".into(),
            )
        })?,
    };
    let postgres = dir.join("postgres");
    let out = Command::new(&postgres)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            ConfigError(format!(
                "--pg-bin {}: cannot run {}: {e}",
                dir.display(),
                postgres.display()
            ))
        })?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "(PostgreSQL)")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let major = version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
        .filter(|_| out.status.success())
        .ok_or_else(|| {
            ConfigError(format!(
                "--pg-bin {}: `postgres --version` said {:?}, not a PostgreSQL version",
                dir.display(),
                text.trim()
            ))
        })?;
    Ok(Binaries {
        dir,
        version,
        major,
    })
}

fn find_binaries() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        let pg_config = dir.join("pg_config");
        if pg_config.is_file() {
            if let Ok(out) = Command::new(&pg_config).arg("--bindir").output() {
                let bindir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
                if out.status.success() && bindir.join("postgres").is_file() {
                    return Some(bindir);
                }
            }
        }
        // A link on PATH (/usr/local/bin/postgres) leads to the real folder, where the
        // share and lib folders are found beside it.
        if let Ok(real) = dir.join("postgres").canonicalize() {
            if real.is_file() {
                return real.parent().map(Path::to_path_buf);
            }
        }
    }
    None
}

/// Creates `<drill_path>/tidemark-drill-<stanza>-<time>-<id>` (0700, given to the
/// runner): exclusive, so that nothing that was there is ever taken over.
fn make_scratch(
    settings: &Settings,
    account: &Account,
    at: DateTime<Utc>,
) -> Result<PathBuf, Failure> {
    let base = settings
        .drill_path
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let base = base
        .canonicalize()
        .map_err(|e| DrillError::Setup(format!("drill_path {}: {e}", base.display())))?;
    let dir = base.join(format!(
        "tidemark-drill-{}-{}-{}",
        settings.stanza,
        at.format("%Y%m%dT%H%M%SZ"),
        &random_id()[..8]
    ));
    let text = dir
        .to_str()
        .ok_or_else(|| ConfigError(format!("the scratch folder {} is not UTF-8", dir.display())))?;
    rules::socket_path_fits(text, 65535).map_err(ConfigError)?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| {
            DrillError::Setup(format!(
                "cannot create the scratch folder {}: {e}",
                dir.display()
            ))
        })?;
    let made = (|| -> std::io::Result<()> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.join("tablespaces"))?;
        if account.switch {
            give(&dir, account)?;
            give(&dir.join("tablespaces"), account)?;
        }
        Ok(())
    })();
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(DrillError::Setup(format!(
            "cannot prepare the scratch folder {}: {e}",
            dir.display()
        ))
        .into());
    }
    Ok(dir)
}

/// Gives `path` itself (a symbolic link is not followed) to the runner.
fn give(path: &Path, account: &Account) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(account.uid), Some(account.gid))
}

/// Gives `root` and everything under it to the runner (links themselves, not their
/// targets: a tablespace link points into the scratch folder, given on its own).
fn give_tree(root: &Path, account: &Account) -> std::io::Result<()> {
    give(root, account)?;
    if std::fs::symlink_metadata(root)?.is_dir() {
        for entry in std::fs::read_dir(root)? {
            give_tree(&entry?.path(), account)?;
        }
    }
    Ok(())
}

/// 16 random hexadecimal digits (from the kernel).
fn random_id() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Never short for 8 bytes; fall back on the clock and pid anyway.
        let t =
            now().timestamp_nanos_opt().unwrap_or_default() as u64 ^ u64::from(std::process::id());
        bytes = t.to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The port the drill tries first: a free one. Debug builds only:
/// `TIDEMARK_TEST_DRILL_PORT` names it instead, so that a test can hand the drill a
/// port it holds and prove that the start moves to another one.
fn first_port() -> std::io::Result<u16> {
    #[cfg(debug_assertions)]
    if let Some(port) = std::env::var("TIDEMARK_TEST_DRILL_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
    {
        return Ok(port);
    }
    free_port()
}

/// A free TCP port on 127.0.0.1 (free when asked: the start retries on another one if
/// it is taken meanwhile).
fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// SIGINT and SIGTERM, noticed from the start of the drill to its end.
struct Interrupt {
    seen: watch::Receiver<bool>,
}

impl Interrupt {
    /// Registers the handlers now (so that no signal is missed), and watches them.
    fn listen() -> Interrupt {
        use tokio::signal::unix::{signal, SignalKind};
        let (tx, rx) = watch::channel(false);
        let mut int = signal(SignalKind::interrupt()).ok();
        let mut term = signal(SignalKind::terminate()).ok();
        tokio::spawn(async move {
            async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                _ = next(&mut int) => {}
                _ = next(&mut term) => {}
            }
            let _ = tx.send(true);
        });
        Interrupt { seen: rx }
    }

    fn is_set(&self) -> bool {
        *self.seen.borrow()
    }

    async fn wait(&mut self) {
        while !*self.seen.borrow_and_update() {
            if self.seen.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Why the drill stopped before its verdict.
#[derive(Debug)]
enum Stop {
    /// A signal.
    Interrupted,
    /// The drill failed: why.
    Failed(String),
}

/// The scratch server.
struct Server {
    child: Child,
    pid: i32,
}

/// One drill's state: what it created, and what it found.
struct Drill {
    scratch: PathBuf,
    account: Account,
    bin: Binaries,
    port: u16,
    server: Option<Server>,
    /// The role the checks connect as (the bootstrap superuser).
    role: Option<String>,
    /// The database the first connection reached (`postgres`, else `template1`): the
    /// write after the promotion and the list of databases go through it.
    home_db: String,
    pg_version: Option<String>,
    /// When each phase ended, from the start.
    ends: Vec<(&'static str, Duration)>,
    started: Instant,
    checks: Vec<CheckRecord>,
    reached: Option<ReachedPoint>,
    warnings: Vec<String>,
    /// Draw a progress line on stderr.
    show: bool,
}

impl Drill {
    fn data(&self) -> PathBuf {
        self.scratch.join("data")
    }

    fn mark(&mut self, phase: &'static str) {
        self.ends.push((phase, self.started.elapsed()));
    }

    fn progress(&self, line: &str) {
        if self.show {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[Ktidemark: drill: {line}");
            let _ = err.flush();
        }
    }

    /// Restores into the scratch folder through restore's own path.
    async fn restore_phase(
        &mut self,
        repo: &Repo,
        settings: &Settings,
        plan: PlanReport,
        tablespace_map: BTreeMap<u32, PathBuf>,
        show_progress: bool,
    ) -> Result<(), Stop> {
        let job = RestoreJob {
            pgdata: self.data(),
            tablespace_map,
            archive_mode: ArchiveMode::Off,
            show_progress,
        };
        match restore_planned(repo, settings, plan, &job).await {
            Ok(_) => {}
            Err(Failure::Recovery(tidemark_recovery::Error::Interrupted)) => {
                return Err(Stop::Interrupted)
            }
            Err(e) => return Err(Stop::Failed(format!("restore: {}", e.one_line()))),
        }
        self.mark("files restored");
        Ok(())
    }

    /// Configures, starts, replays, promotes, checks.
    async fn server_phases(
        &mut self,
        expected: &ExpectedStop,
        checks: &[Statement],
        settings: &Settings,
    ) -> Result<(), Stop> {
        self.configure().map_err(Stop::Failed)?;
        self.start().map_err(Stop::Failed)?;
        let (client, in_recovery) = self.wait_for_target(expected, settings).await?;
        self.mark("WAL replayed to the target");
        let reached = read_reached(&client).await.map_err(Stop::Failed)?;
        self.reached = Some(ReachedPoint {
            last_commit_time: reached.last_commit_time,
            replay_lsn: reached.replay_lsn.to_string(),
        });
        let point = compare_recovery_point(expected, &reached);
        self.checks.push(CheckRecord {
            name: "recovery point".into(),
            passed: point.is_ok(),
            detail: point.clone().unwrap_or_else(|e| e),
        });
        if in_recovery {
            self.progress("promoting");
            let promoted = scalar(
                &client,
                &format!("select pg_promote(true, {PROMOTE_WITHIN_SECONDS})"),
            )
            .await
            .map_err(|e| Stop::Failed(format!("pg_promote(): {e}")))?;
            if promoted.as_deref() != Some("t") {
                return Err(Stop::Failed(format!(
                    "the server did not finish its promotion within {PROMOTE_WITHIN_SECONDS} s"
                )));
            }
        }
        drop(client);
        self.wait_for_write().await?;
        self.mark("accepting writes");
        self.run_checks(checks).await;
        Ok(())
    }

    /// Writes the drill's configuration files and overrides, and reads them back.
    fn configure(&mut self) -> Result<(), String> {
        let data = self.data();
        let io =
            |what: &str, path: &Path, e: std::io::Error| format!("{what} {}: {e}", path.display());
        if self.account.switch {
            give_tree(&self.scratch, &self.account)
                .map_err(|e| io("cannot give to the drill's user", &self.scratch, e))?;
        }
        let conf = data.join("postgresql.conf");
        if !conf.exists() {
            // A backup of a cluster configured from /etc (Debian's layout) has none.
            self.write_file(&conf, "")?;
            self.warnings.push(
                "the backup has no postgresql.conf (its configuration lived outside the data directory): the scratch cluster ran with PostgreSQL's defaults and the drill's settings".into(),
            );
        }
        let hba = self.scratch.join("drill_hba.conf");
        let ident = self.scratch.join("drill_ident.conf");
        self.write_file(&hba, rules::HBA_FILE)?;
        self.write_file(&ident, "")?;
        let libdir = self.bin.pkglibdir();
        let has = |name: &str| library_present(libdir.as_deref(), name);
        let mut lists = Vec::new();
        for setting in [
            "shared_preload_libraries",
            "session_preload_libraries",
            "local_preload_libraries",
        ] {
            let value = self.setting(setting)?;
            let (kept, dropped) = rules::filter_libraries(&value, has);
            if !dropped.is_empty() {
                self.warnings.push(format!(
                    "{setting}: left out {} in the scratch cluster (missing from {}, or acting outside by itself)",
                    dropped.join(", "),
                    self.bin.dir.display()
                ));
            }
            lists.push(kept);
        }
        let socket_dir = text_path(&self.scratch)?;
        let scratch = rules::Scratch {
            major: self.bin.major,
            port: self.port,
            socket_dir: socket_dir.clone(),
            hba_file: text_path(&hba)?,
            ident_file: text_path(&ident)?,
            local_preload_libraries: lists.pop().unwrap_or_default(),
            session_preload_libraries: lists.pop().unwrap_or_default(),
            shared_preload_libraries: lists.pop().unwrap_or_default(),
        };
        let overrides = rules::overrides(&scratch);
        let auto = data.join("postgresql.auto.conf");
        let existing = std::fs::read(&auto).map_err(|e| io("cannot read", &auto, e))?;
        let text = tidemark_recovery::autoconf::append_block(
            &existing,
            &rules::override_block(&overrides),
        );
        std::fs::write(&auto, text).map_err(|e| io("cannot write", &auto, e))?;
        // Proved, not hoped: the binaries' own reading of the whole configuration.
        let data_text = text_path(&data)?;
        let mut wanted: Vec<(String, String)> = vec![("data_directory".into(), data_text)];
        for name in [
            "port",
            "listen_addresses",
            "unix_socket_directories",
            "hba_file",
            "archive_mode",
            "archive_command",
            "primary_conninfo",
            "max_logical_replication_workers",
            "external_pid_file",
            "synchronous_standby_names",
            "shared_preload_libraries",
        ] {
            let value = overrides
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            wanted.push((name.to_string(), value));
        }
        for (name, want) in wanted {
            let got = self.setting(&name)?;
            let same = if name == "shared_preload_libraries" {
                got.replace(' ', "") == want.replace(' ', "")
            } else {
                got == want
            };
            if !same {
                return Err(format!(
                    "the scratch cluster's configuration reads {name} = {got:?}, not {want:?}: something in its configuration overrides the drill's settings; refusing to start it"
                ));
            }
        }
        Ok(())
    }

    /// Writes a small file owned by the runner, 0600.
    fn write_file(&self, path: &Path, text: &str) -> Result<(), String> {
        let made = (|| -> std::io::Result<()> {
            std::fs::write(path, text)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            if self.account.switch {
                give(path, &self.account)?;
            }
            Ok(())
        })();
        made.map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// A command for the binaries, as the runner.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.dir.join(program));
        cmd.current_dir(&self.scratch).stdin(Stdio::null());
        if self.account.switch {
            let (uid, gid, groups) = (
                self.account.uid,
                self.account.gid,
                self.account.groups.clone(),
            );
            // The user's groups, then its group, then the user: in the child, before exec,
            // with the list looked up beforehand (only system calls after the fork).
            // SAFETY: the closure makes async-signal-safe system calls only.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd
    }

    /// `postgres -C name`: the setting as the server would read it.
    fn setting(&self, name: &str) -> Result<String, String> {
        let out = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .arg("-C")
            .arg(name)
            .output()
            .map_err(|e| format!("cannot run postgres -C {name}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "postgres -C {name} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', " ")
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Moves the server to another free port: a `port` line appended to
    /// `postgresql.auto.conf` (after the drill's block: later lines win), read back.
    fn move_port(&mut self) -> Result<(), String> {
        self.port = free_port().map_err(|e| format!("cannot find a free port: {e}"))?;
        let auto = self.data().join("postgresql.auto.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&auto)
            .map_err(|e| format!("cannot open {}: {e}", auto.display()))?;
        writeln!(
            file,
            "# tidemark drill: the first port was taken\nport = '{}'",
            self.port
        )
        .map_err(|e| format!("cannot write {}: {e}", auto.display()))?;
        let read = self.setting("port")?;
        if read != self.port.to_string() {
            return Err(format!(
                "the scratch cluster's configuration reads port = {read:?}, not {}",
                self.port
            ));
        }
        Ok(())
    }

    /// Starts `postgres` in its own process group, its output into `server.log`.
    fn start(&mut self) -> Result<(), String> {
        let log_path = self.scratch.join("server.log");
        // Appended to: a start again on another port keeps the first one's lines.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        if self.account.switch {
            give(&log_path, &self.account)
                .map_err(|e| format!("chown {}: {e}", log_path.display()))?;
        }
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .process_group(0)
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e}",
                    self.bin.dir.join("postgres").display()
                )
            })?;
        let pid = child.id() as i32;
        self.server = Some(Server { child, pid });
        Ok(())
    }

    /// The last lines of the server log, on one line.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.scratch.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_LINES)..].join(" | ")
    }

    /// Whether the server has exited: its status.
    fn exited(&mut self) -> Option<String> {
        let server = self.server.as_mut()?;
        match server.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    fn target(&self, user: &str, dbname: &str) -> PgTarget {
        PgTarget {
            host: self.scratch.display().to_string(),
            port: self.port,
            user: user.to_string(),
            dbname: dbname.to_string(),
            password: None,
            sslmode: SslMode::Disable,
            sslrootcert: None,
        }
    }

    /// Connects as the checks' role to `dbname`.
    async fn connect(&self, dbname: &str) -> Result<Client, String> {
        let role = self.role.as_deref().unwrap_or("postgres");
        sql::connect(&self.target(role, dbname))
            .await
            .map_err(|e| e.to_string())
    }

    /// The first connection: finds a role that exists (the configured PostgreSQL user,
    /// `postgres`, the runner's name), then the bootstrap superuser (oid 10), whose
    /// connection it returns. `Ok(None)`: not accepting connections yet.
    async fn first_connection(&mut self, settings: &Settings) -> Result<Option<Client>, String> {
        let mut roles: Vec<String> = Vec::new();
        for r in [
            settings.pg.user.clone(),
            Some("postgres".to_string()),
            Some(self.account.name.clone()),
        ]
        .into_iter()
        .flatten()
        {
            if !roles.contains(&r) {
                roles.push(r);
            }
        }
        let mut refused = Vec::new();
        for role in &roles {
            for db in [DEFAULT_DATABASE, "template1"] {
                match sql::connect(&self.target(role, db)).await {
                    Ok(client) => {
                        let superuser =
                            scalar(&client, "select rolname from pg_roles where oid = 10")
                                .await?
                                .ok_or("the scratch cluster has no bootstrap superuser (oid 10)")?;
                        self.role = Some(superuser.clone());
                        self.home_db = db.to_string();
                        if &superuser == role {
                            return Ok(Some(client));
                        }
                        return sql::connect(&self.target(&superuser, db))
                            .await
                            .map(Some)
                            .map_err(|e| e.to_string());
                    }
                    // No such role (28000) or database (3D000): the next candidate.
                    Err(e) if matches!(e.code(), Some("28000" | "3D000")) => {
                        refused.push(e.to_string());
                    }
                    // Not yet (57P03: starting up, not yet consistent), or no socket yet.
                    Err(_) => return Ok(None),
                }
            }
        }
        Err(format!(
            "cannot connect to the scratch cluster as any of {}: {}",
            roles.join(", "),
            refused.join("; ")
        ))
    }

    /// Polls until replay pauses at the target (or, without one, recovery ends).
    /// Returns the connection and whether the server is still in recovery.
    async fn wait_for_target(
        &mut self,
        expected: &ExpectedStop,
        settings: &Settings,
    ) -> Result<(Client, bool), Stop> {
        let began = Instant::now();
        let mut client: Option<Client> = None;
        let mut version_num = 0u32;
        let mut port_tries = 0;
        let stops_at = expected
            .stop_lsn
            .map(|l| format!(" (the plan stops at {l})"))
            .unwrap_or_default();
        loop {
            if let Some(status) = self.exited() {
                let log =
                    std::fs::read_to_string(self.scratch.join("server.log")).unwrap_or_default();
                // The port was free when found, and taken before the server bound it:
                // another one, written after the drill's block (later lines win).
                if client.is_none() && port_tries < PORT_TRIES && log.contains("could not bind") {
                    port_tries += 1;
                    self.server = None;
                    self.move_port().map_err(Stop::Failed)?;
                    self.start().map_err(Stop::Failed)?;
                    continue;
                }
                return Err(Stop::Failed(format!(
                    "the scratch server exited ({status}) before reaching the target; its log ends: {}",
                    self.log_tail()
                )));
            }
            if client.is_none() {
                client = self
                    .first_connection(settings)
                    .await
                    .map_err(Stop::Failed)?;
                if let Some(c) = &client {
                    version_num = scalar(c, "show server_version_num")
                        .await
                        .ok()
                        .flatten()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    self.pg_version = scalar(c, "show server_version").await.ok().flatten();
                }
            }
            if let Some(c) = &client {
                let paused = if version_num >= 140_000 {
                    "pg_get_wal_replay_pause_state() = 'paused'"
                } else {
                    "pg_is_wal_replay_paused()"
                };
                let query = format!(
                    "select pg_is_in_recovery(), case when pg_is_in_recovery() then {paused} end, pg_last_wal_replay_lsn()::text"
                );
                match row(c, &query).await {
                    Ok(r) => {
                        let recovering = r.first().cloned().flatten().as_deref() == Some("t");
                        let paused = r.get(1).cloned().flatten().as_deref() == Some("t");
                        if !recovering || paused {
                            return Ok((client.take().expect("connected"), recovering));
                        }
                        let at = r.get(2).cloned().flatten().unwrap_or_default();
                        self.progress(&format!(
                            "replaying WAL: at {at}{stops_at}, {:.0} s",
                            began.elapsed().as_secs_f64()
                        ));
                    }
                    // The connection broke (a restart after a crash): connect again.
                    Err(_) => client = None,
                }
            } else {
                self.progress(&format!(
                    "starting the scratch server (not yet consistent), {:.0} s",
                    began.elapsed().as_secs_f64()
                ));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Waits until a write (a temporary table's insert) succeeds on a new connection.
    async fn wait_for_write(&mut self) -> Result<(), Stop> {
        let deadline = Instant::now() + WRITE_WITHIN;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Err(Stop::Failed(format!(
                    "the scratch server exited ({status}) after the promotion; its log ends: {}",
                    self.log_tail()
                )));
            }
            match self.connect(&self.home_db).await {
                Ok(c) => match c
                    .simple_query(
                        "create temporary table tidemark_drill_write(at timestamptz); \
                         insert into tidemark_drill_write values (now()); \
                         drop table tidemark_drill_write",
                    )
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(e) => last = sql::describe_pg_error(&e),
                },
                Err(e) => last = e,
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        Err(Stop::Failed(format!(
            "the promoted server did not accept a write within {} s: {last}",
            WRITE_WITHIN.as_secs()
        )))
    }

    /// The checks after the promotion; each one's result is recorded, none stops the
    /// others.
    async fn run_checks(&mut self, statements: &[Statement]) {
        let mut connections: BTreeMap<String, Client> = BTreeMap::new();
        let databases = match self.connect(&self.home_db).await {
            Ok(c) => {
                let listed = c
                    .simple_query("select datname from pg_database where datallowconn order by 1")
                    .await
                    .map_err(|e| sql::describe_pg_error(&e));
                connections.insert(self.home_db.clone(), c);
                listed.map(|messages| {
                    messages
                        .iter()
                        .filter_map(|m| match m {
                            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                            _ => None,
                        })
                        .collect::<Vec<String>>()
                })
            }
            Err(e) => Err(e),
        };
        let databases = match databases {
            Ok(d) => d,
            Err(e) => {
                self.checks.push(CheckRecord {
                    name: "databases".into(),
                    passed: false,
                    detail: format!("cannot list them: {e}"),
                });
                Vec::new()
            }
        };
        for db in &databases {
            self.progress(&format!("checking database {db}"));
            if !connections.contains_key(db) {
                match self.connect(db).await {
                    Ok(c) => {
                        connections.insert(db.clone(), c);
                    }
                    Err(e) => {
                        self.checks.push(CheckRecord {
                            name: format!("database {db}"),
                            passed: false,
                            detail: format!("cannot connect: {e}"),
                        });
                        continue;
                    }
                }
            }
            let client = &connections[db];
            let tables = scalar(
                client,
                // Temporary tables are sessions' own, not the database's (and another
                // session's can still be listed while it ends).
                "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
                 where c.relkind in ('r', 'p') and c.relpersistence <> 't' \
                 and n.nspname not in ('pg_catalog', 'information_schema') \
                 and n.nspname not like 'pg_toast%'",
            )
            .await;
            self.checks.push(CheckRecord {
                name: format!("tables of database {db}"),
                passed: tables.is_ok(),
                detail: match tables {
                    Ok(n) => format!("{} tables", n.unwrap_or_default()),
                    Err(e) => format!("cannot count them: {e}"),
                },
            });
            let amcheck = amcheck(client).await;
            self.checks.push(CheckRecord {
                name: format!("amcheck in database {db}"),
                passed: amcheck.is_ok(),
                detail: amcheck.unwrap_or_else(|e| e),
            });
        }
        for s in statements {
            let db = s
                .database
                .clone()
                .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
            self.progress(&format!("check statement {}", s.number));
            if !connections.contains_key(&db) {
                match self.connect(&db).await {
                    Ok(c) => {
                        connections.insert(db.clone(), c);
                    }
                    Err(e) => {
                        self.checks.push(CheckRecord {
                            name: statement_name(s, &db),
                            passed: false,
                            detail: format!("cannot connect to database {db}: {e}"),
                        });
                        continue;
                    }
                }
            }
            let outcome = check_outcome(&connections[&db], &s.sql).await;
            let verdict = evaluate_check(&outcome);
            self.checks.push(CheckRecord {
                name: statement_name(s, &db),
                passed: verdict.is_ok(),
                detail: match verdict {
                    Ok(()) => "true".into(),
                    Err(e) => e,
                },
            });
        }
    }

    /// What `--keep` leaves, and how to stop and remove it.
    fn kept_message(&self) -> String {
        let user = if self.account.switch {
            format!(" (as {})", self.account.name)
        } else {
            String::new()
        };
        match &self.server {
            Some(s) => format!(
                "kept {}: the server (pid {}) listens on socket {}/.s.PGSQL.{} and 127.0.0.1:{}; stop it with `{}/pg_ctl stop -m immediate -D {}`{user} or `kill -QUIT {}`, then `rm -rf {}`",
                self.scratch.display(),
                s.pid,
                self.scratch.display(),
                self.port,
                self.port,
                self.bin.dir.display(),
                self.data().display(),
                s.pid,
                self.scratch.display()
            ),
            None => format!(
                "kept {} (no server was started); remove it with `rm -rf {}`",
                self.scratch.display(),
                self.scratch.display()
            ),
        }
    }

    /// Stops the server (SIGQUIT, PostgreSQL's immediate shutdown; SIGKILL to its
    /// process group if it has not exited in time) and removes the scratch folder.
    async fn cleanup(&mut self) -> Result<(), String> {
        if let Some(mut server) = self.server.take() {
            if server.child.try_wait().ok().flatten().is_none() {
                // SAFETY: kill has no memory preconditions; the pid is our own child's,
                // not yet reaped, so it cannot name another process.
                unsafe { libc::kill(server.pid, libc::SIGQUIT) };
                let deadline = Instant::now() + STOP_WITHIN;
                while server.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            // Whatever is left in its process group (a backend outliving a killed
            // postmaster, or the postmaster itself).
            // SAFETY: as above; the group is the postmaster's own (process_group(0)).
            unsafe { libc::kill(-server.pid, libc::SIGKILL) };
            let _ = server.child.wait();
        }
        std::fs::remove_dir_all(&self.scratch).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(format!("cannot remove {}: {e}", self.scratch.display()))
            }
        })
    }
}

impl Binaries {
    /// Where the binaries' libraries are: `pg_config --pkglibdir`, else
    /// `../lib/postgresql` or `../lib` beside them (holding `plpgsql.so`).
    fn pkglibdir(&self) -> Option<PathBuf> {
        let pg_config = self.dir.join("pg_config");
        if let Ok(out) = Command::new(&pg_config).arg("--pkglibdir").output() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && dir.is_dir() {
                return Some(dir);
            }
        }
        ["../lib/postgresql", "../lib"]
            .iter()
            .map(|rel| self.dir.join(rel))
            .find(|dir| dir.join("plpgsql.so").is_file())
    }
}

/// Whether a preload library is there for the binaries (`name`, `$libdir/name` or an
/// absolute path, with or without `.so`). Without a known library folder, only absolute
/// paths can be found.
fn library_present(libdir: Option<&Path>, name: &str) -> bool {
    let candidates = |path: PathBuf| {
        let so = PathBuf::from(format!("{}.so", path.display()));
        path.is_file() || so.is_file()
    };
    if name.starts_with('/') {
        return candidates(PathBuf::from(name));
    }
    let Some(libdir) = libdir else {
        return false;
    };
    let rest = name.strip_prefix("$libdir/").unwrap_or(name);
    candidates(libdir.join(rest))
}

fn text_path(path: &Path) -> Result<String, String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{} is not UTF-8", path.display()))
}

fn statement_name(s: &Statement, db: &str) -> String {
    let first = s
        .sql
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
        .unwrap_or("")
        .trim();
    let shown: String = first.chars().take(80).collect();
    format!(
        "checks statement {} (line {}, database {db}: {shown}{})",
        s.number,
        s.line,
        if shown.len() < first.len() { "…" } else { "" }
    )
}

/// The first column of the first row of `sql` (`None` for NULL or no row).
async fn scalar(client: &Client, sql: &str) -> Result<Option<String>, String> {
    Ok(row(client, sql).await?.into_iter().next().flatten())
}

/// The first row of `sql`, as text values.
async fn row(client: &Client, sql: &str) -> Result<Vec<Option<String>>, String> {
    let messages = client
        .simple_query(sql)
        .await
        .map_err(|e| sql::describe_pg_error(&e))?;
    for m in messages {
        if let SimpleQueryMessage::Row(r) = m {
            return Ok((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
        }
    }
    Ok(Vec::new())
}

/// Where replay stopped, read from the server before the promotion.
async fn read_reached(client: &Client) -> Result<Reached, String> {
    let r = row(
        client,
        "select to_char(pg_last_xact_replay_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
         pg_last_wal_replay_lsn()::text",
    )
    .await
    .map_err(|e| format!("reading where replay stopped: {e}"))?;
    let last_commit_time = match r.first().cloned().flatten() {
        Some(t) => Some(
            t.parse::<DateTime<Utc>>()
                .map_err(|e| format!("the server's last replay time {t:?}: {e}"))?,
        ),
        None => None,
    };
    let lsn_text = r.get(1).cloned().flatten().unwrap_or_default();
    let replay_lsn = Lsn::parse(&lsn_text)
        .ok_or_else(|| format!("the server's replay LSN {lsn_text:?} cannot be read"))?;
    Ok(Reached {
        last_commit_time,
        replay_lsn,
    })
}

/// What one check statement returned: the last result set it produced.
async fn check_outcome(client: &Client, statement: &str) -> CheckOutcome {
    match client.simple_query(statement).await {
        Err(e) => CheckOutcome::Error(sql::describe_pg_error(&e)),
        Ok(messages) => {
            let mut outcome = CheckOutcome::NoResult;
            for m in messages {
                match m {
                    SimpleQueryMessage::RowDescription(columns) => {
                        outcome = CheckOutcome::Rows {
                            columns: columns.len(),
                            rows: Vec::new(),
                        }
                    }
                    SimpleQueryMessage::Row(r) => {
                        let values = (0..r.len()).map(|i| r.get(i).map(str::to_string)).collect();
                        match &mut outcome {
                            CheckOutcome::Rows { rows, .. } => rows.push(values),
                            _ => {
                                outcome = CheckOutcome::Rows {
                                    columns: r.len(),
                                    rows: vec![values],
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            outcome
        }
    }
}

/// `bt_index_check` on every btree index of the database, where the binaries have
/// amcheck (the extension is created in the scratch copy if it is not there). Ok: what
/// was checked, or why nothing was (not a failure of the backup); Err: the indexes that
/// fail, named.
async fn amcheck(client: &Client) -> Result<String, String> {
    let available = scalar(
        client,
        "select count(*) from pg_available_extensions where name = 'amcheck'",
    )
    .await?;
    if available.as_deref() != Some("1") {
        return Ok("not run: these binaries have no amcheck extension".into());
    }
    if let Err(e) = client
        .simple_query("create extension if not exists amcheck")
        .await
    {
        return Ok(format!(
            "not run: amcheck cannot be created in the scratch copy: {}",
            sql::describe_pg_error(&e)
        ));
    }
    let schema = scalar(
        client,
        "select quote_ident(n.nspname) from pg_extension e join pg_namespace n on n.oid = e.extnamespace where e.extname = 'amcheck'",
    )
    .await?
    .ok_or("amcheck is not installed after CREATE EXTENSION")?;
    let messages = client
        .simple_query(
            "select c.oid::text, quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
             from pg_index i join pg_class c on c.oid = i.indexrelid \
             join pg_namespace n on n.oid = c.relnamespace join pg_am a on a.oid = c.relam \
             where a.amname = 'btree' and c.relpersistence <> 't' and i.indisvalid and i.indisready \
             order by c.oid",
        )
        .await
        .map_err(|e| format!("listing the indexes: {}", sql::describe_pg_error(&e)))?;
    let indexes: Vec<(String, String)> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((r.get(0)?.to_string(), r.get(1)?.to_string())),
            _ => None,
        })
        .collect();
    let mut failures = Vec::new();
    for (oid, name) in &indexes {
        if let Err(e) = client
            .simple_query(&format!(
                "select {schema}.bt_index_check({oid}::oid::regclass)"
            ))
            .await
        {
            failures.push(format!("{name}: {}", sql::describe_pg_error(&e)));
        }
    }
    if failures.is_empty() {
        Ok(format!("{} btree indexes checked", indexes.len()))
    } else {
        let shown = failures.len().min(5);
        Err(format!(
            "{} of {} btree indexes fail bt_index_check: {}{}",
            failures.len(),
            indexes.len(),
            failures[..shown].join("; "),
            if failures.len() > shown { "; …" } else { "" }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_are_found_by_name_libdir_or_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg_stat_statements.so"), b"").unwrap();
        let lib = Some(dir.path());
        assert!(library_present(lib, "pg_stat_statements"));
        assert!(library_present(lib, "$libdir/pg_stat_statements"));
        assert!(!library_present(lib, "timescaledb"));
        let abs = dir.path().join("pg_stat_statements.so");
        assert!(library_present(None, abs.to_str().unwrap()));
        assert!(!library_present(None, "pg_stat_statements"));
    }

    #[test]
    fn a_users_groups_include_its_own() {
        assert!(group_list("root", 0).contains(&0));
        assert_eq!(group_list("no-such-user-tidemark", 4242), [4242]);
    }

    #[test]
    fn a_failed_drill_exits_6_and_an_unrecorded_pass_1() {
        assert_eq!(exit_code(true, true), exit::OK);
        assert_eq!(exit_code(true, false), exit::FAILED);
        assert_eq!(exit_code(false, true), exit::DRILL_FAILED);
        assert_eq!(exit_code(false, false), exit::DRILL_FAILED);
    }

    #[test]
    fn root_needs_a_user_and_others_run_as_themselves() {
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let e = runner(None).unwrap_err().to_string();
            assert!(e.contains("--run-as"), "{e}");
            let e = runner(Some("root")).unwrap_err().to_string();
            assert!(e.contains("root"), "{e}");
            assert!(runner(Some("no-such-user-tidemark")).is_err());
        } else {
            let me = runner(None).unwrap();
            assert!(!me.switch);
            assert!(runner(Some(&me.name)).is_ok());
            assert!(runner(Some("root")).is_err());
        }
    }
}
