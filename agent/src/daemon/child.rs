//! Running one job: `tidemark <kind>` as a child process of this same binary, with the
//! agent's settings, its output relayed to the agent's log, SIGTERM forwarded when the
//! agent stops.
//!
//! The child gets the settings the agent was started with (flags and `TIDEMARK_*`
//! variables, passed as `TIDEMARK_*` variables, and the config file they name), so it
//! resolves exactly what the agent resolved, reloads included: the file is read again by
//! each child.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::{AgentContext, FailureKind, JobKind, JobRun, Outcome};
use crate::cli::args::SettingArgs;
use crate::exit;

/// How long a job may take to stop after SIGTERM before it is killed (a drill stops its
/// scratch server and removes its folder; a backup closes its connection).
pub const STOP_GRACE: Duration = Duration::from_secs(30);
/// Lines of the child's stderr kept for the history (the last ones: its error line).
const TAIL_LINES: usize = 12;
/// Bytes of them kept at most.
const TAIL_BYTES: usize = 4096;

/// Runs one job of `kind` to its end (or until the agent stops) and says how it went.
pub async fn run_job(ctx: &AgentContext, kind: JobKind) -> JobRun {
    let started = Utc::now();
    let ended = run_child(ctx, kind.as_str(), &[kind.as_str()], &ctx.cancel).await;
    let (outcome, exit_code, stderr_tail) = match ended {
        Err(why) => (Outcome::Failed(FailureKind::Spawn), None, why),
        Ok(Ended {
            code,
            stopped,
            stderr_tail,
        }) => {
            let outcome = match code {
                Some(0) => Outcome::Succeeded,
                _ if stopped => Outcome::Cancelled,
                Some(c) if c == i32::from(exit::LOCKED) => Outcome::Skipped,
                other => Outcome::Failed(FailureKind::from_exit_code(other)),
            };
            (outcome, code, stderr_tail)
        }
    };
    JobRun {
        kind,
        started,
        ended: Utc::now(),
        outcome,
        exit_code,
        stderr_tail,
    }
}

/// How a child ended.
#[derive(Debug)]
pub struct Ended {
    /// Its exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Whether `stop` fired and it was sent SIGTERM.
    pub stopped: bool,
    /// The last lines of its stderr.
    pub stderr_tail: String,
}

/// Runs `tidemark <args>` with the agent's settings until it exits; when `stop` fires
/// first, sends it SIGTERM and waits [`STOP_GRACE`] before killing it. Its output goes to
/// the agent's log, each line prefixed with `name`. `Err`: it could not be started.
pub async fn run_child(
    ctx: &AgentContext,
    name: &str,
    args: &[&str],
    stop: &CancellationToken,
) -> Result<Ended, String> {
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .envs(settings_env(&ctx.args))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Should the agent die without stopping its jobs (SIGKILL, a crash), each job gets
    // SIGTERM from the kernel and stops as it would at the agent's shutdown, rather than
    // running on unwatched. (The agent's runtime forks from its one thread, the one whose
    // death the setting follows.)
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start `tidemark {}`: {e}", args.join(" ")))?;
    tracing::info!("{name}: started (pid {})", child.id().unwrap_or(0));
    let stdout = child.stdout.take().map(|s| relay(name, s, false));
    let stderr = child.stderr.take().map(|s| relay(name, s, true));
    let relays = async {
        let out = match stdout {
            Some(f) => f.await,
            None => String::new(),
        };
        let err = match stderr {
            Some(f) => f.await,
            None => String::new(),
        };
        (out, err)
    };
    let waited = async {
        let mut stopped = false;
        let status = tokio::select! {
            s = child.wait() => s,
            _ = stop.cancelled() => {
                stopped = true;
                if let Some(pid) = child.id() {
                    tracing::info!("{name}: stopping (SIGTERM to pid {pid})");
                    // SAFETY: a plain system call on the pid of a child not yet reaped.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
                }
                match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        tracing::error!(
                            "{name}: still running {} s after SIGTERM: killed",
                            STOP_GRACE.as_secs()
                        );
                        let _ = child.start_kill();
                        child.wait().await
                    }
                }
            }
        };
        (status, stopped)
    };
    let ((status, stopped), (_stdout, stderr_tail)) = tokio::join!(waited, relays);
    let status =
        status.map_err(|e| format!("cannot wait for `tidemark {}`: {e}", args.join(" ")))?;
    Ok(Ended {
        code: status.code(),
        stopped,
        stderr_tail,
    })
}

/// Logs each line of a child's output (stdout at info, stderr as the child's own log
/// lines, at info too: the agent logs the outcome at its own level) and returns the last
/// lines of it.
async fn relay(name: &str, stream: impl tokio::io::AsyncRead + Unpin, is_stderr: bool) -> String {
    let mut lines = BufReader::new(stream).lines();
    let mut tail: VecDeque<String> = VecDeque::new();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        tracing::info!("{name}: {}{line}", if is_stderr { "" } else { "| " });
        if is_stderr {
            tail.push_back(line);
            while tail.len() > TAIL_LINES
                || (tail.len() > 1 && tail.iter().map(String::len).sum::<usize>() > TAIL_BYTES)
            {
                tail.pop_front();
            }
        }
    }
    let mut text = Vec::from(tail).join("\n");
    if text.len() > TAIL_BYTES {
        let mut cut = text.len() - TAIL_BYTES;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text = text[cut..].to_string();
    }
    text
}

/// The agent's settings as given (flags and variables), as the `TIDEMARK_*` variables a
/// child reads them from. Unset ones are left out (the child then reads the file, as the
/// agent did).
pub fn settings_env(args: &SettingArgs) -> Vec<(&'static str, OsString)> {
    fn text(v: &Option<impl ToString>) -> Option<OsString> {
        v.as_ref().map(|v| OsString::from(v.to_string()))
    }
    fn path(v: &Option<std::path::PathBuf>) -> Option<OsString> {
        v.as_ref().map(|p| p.clone().into_os_string())
    }
    let all = [
        ("TIDEMARK_CONFIG", path(&args.config)),
        ("TIDEMARK_REPO", text(&args.repo)),
        ("TIDEMARK_STANZA", text(&args.stanza)),
        ("TIDEMARK_COMPRESSION", text(&args.compression)),
        ("TIDEMARK_S3_ENDPOINT", text(&args.s3_endpoint)),
        ("TIDEMARK_S3_REGION", text(&args.s3_region)),
        ("TIDEMARK_S3_PATH_STYLE", text(&args.s3_path_style)),
        ("TIDEMARK_S3_ACCESS_KEY_ID", text(&args.s3_access_key_id)),
        (
            "TIDEMARK_S3_SECRET_ACCESS_KEY",
            text(&args.s3_secret_access_key),
        ),
        ("TIDEMARK_PG_HOST", text(&args.pg_host)),
        ("TIDEMARK_PG_PORT", text(&args.pg_port)),
        ("TIDEMARK_PG_USER", text(&args.pg_user)),
        ("TIDEMARK_PG_PASSWORD", text(&args.pg_password)),
        ("TIDEMARK_PG_PASSWORD_FILE", path(&args.pg_password_file)),
        ("TIDEMARK_PG_SSLMODE", text(&args.pg_sslmode)),
        ("TIDEMARK_PG_SSLROOTCERT", path(&args.pg_sslrootcert)),
        ("TIDEMARK_PGDATA", path(&args.pgdata)),
        ("TIDEMARK_RETRY_TIMEOUT", text(&args.retry_timeout)),
        ("TIDEMARK_LOG_LEVEL", text(&args.log_level)),
        ("TIDEMARK_ARCHIVE_ASYNC", text(&args.archive_async)),
        ("TIDEMARK_SPOOL_PATH", path(&args.spool_path)),
        ("TIDEMARK_SPOOL_MAX_MIB", text(&args.spool_max_mib)),
        ("TIDEMARK_DRILL_PATH", path(&args.drill_path)),
        ("TIDEMARK_DRILL_USER", text(&args.drill_user)),
        ("TIDEMARK_DRILL_MAX_AGE", text(&args.drill_max_age)),
        ("TIDEMARK_SPOOL_DRAINER", text(&args.spool_drainer)),
        ("TIDEMARK_PREFETCH_DEPTH", text(&args.prefetch_depth)),
        ("TIDEMARK_PREFETCH_MAX_MIB", text(&args.prefetch_max_mib)),
        ("TIDEMARK_STATE_PATH", path(&args.state_path)),
        ("TIDEMARK_BACKUP_SCHEDULE", text(&args.backup_schedule)),
        ("TIDEMARK_VERIFY_SCHEDULE", text(&args.verify_schedule)),
        ("TIDEMARK_DRILL_SCHEDULE", text(&args.drill_schedule)),
        ("TIDEMARK_EXPIRE_SCHEDULE", text(&args.expire_schedule)),
    ];
    all.into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}
