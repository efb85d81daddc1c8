//! `tidemark archive-get [--timeline TLI] [--until WALFILE] [--latest] %f %p`:
//! PostgreSQL's restore_command, and the replay feed behind it
//! (`tidemark_archive_cmd::prefetch`).
//!
//! A segment already prefetched is handed over by one rename, before the repository is
//! even opened. Otherwise the call makes sure a background prefetcher works from this
//! position (a `tidemark archive-get --prefetch-worker` process in a session of its own,
//! logging to `pg_wal/tidemark-prefetch/<key>.log`), then fetches its file directly, as
//! without prefetching: every failure of the direct fetch is the call's failure.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use tidemark_archive_cmd::prefetch::{self, WorkerOptions};
use tidemark_archive_cmd::GetOutcome;
use tidemark_pg::WalFileName;
use tidemark_store::url::RepoUrl;

use super::open_repo;
use super::report::Report;
use crate::cli::config::{ConfigError, Settings};
use crate::exit::{self, Failure};

/// The prefetcher exits when recovery has taken nothing for this long (a paused
/// recovery, a server stopped); the next call that misses starts another.
const WORKER_IDLE: Duration = Duration::from_secs(60);
/// Fetches at once from a local repository (reading and hashing: the cores' work) and
/// from S3 (waiting on requests).
const LOCAL_PARALLEL: usize = 2;
const S3_PARALLEL: usize = 8;
/// How long a call waits for the prefetcher to finish the segment it is fetching, before
/// it fetches that segment itself.
const WAIT_FOR_WORKER: Duration = Duration::from_secs(5);
/// The worker's log is started afresh past this size.
const LOG_LIMIT: u64 = 1 << 20;

/// What archive-get was asked, beyond the file and the destination.
#[derive(Clone, Debug, Default)]
pub struct Following {
    /// `--timeline`.
    pub timeline: Option<u32>,
    /// `--until`.
    pub until: Option<String>,
    /// `--latest`.
    pub latest: bool,
}

/// What archive-get answers PostgreSQL: only an exit code, nothing on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The file is at the destination (exit 0).
    Restored,
    /// The file is not in the archive (exit 1, which PostgreSQL reads as "not found").
    NotInArchive,
}

impl Report for Fetched {
    fn text(&self) -> String {
        String::new()
    }

    fn json(&self) -> String {
        String::new()
    }

    fn code(&self) -> u8 {
        match self {
            Fetched::Restored => exit::OK,
            Fetched::NotInArchive => exit::FAILED,
        }
    }
}

/// Fetches one file. "Not in the archive" is an answer, not an error: PostgreSQL asks
/// about such files constantly, and it is not worth more than a debug line.
pub async fn run(
    settings: &Settings,
    name: &str,
    dest: &Path,
    following: &Following,
) -> Result<Fetched, Failure> {
    let until = parse_until(following)?;
    // Only for PostgreSQL's own calls (`%p` is `pg_wal/RECOVERYXLOG`): a person fetching a
    // file into another folder gets it directly, with nothing left beside it.
    let for_recovery = dest
        .parent()
        .and_then(Path::file_name)
        .is_some_and(|d| d == "pg_wal");
    let folder = (settings.prefetch_depth > 0 && for_recovery)
        .then(|| prefetch::folder(dest, &settings.repo.to_string(), &settings.stanza));
    if let Some(folder) = &folder {
        if prefetch::take_or_wait(folder, name, dest, WAIT_FOR_WORKER) {
            tracing::debug!("{name}: handed over from the prefetch folder");
            return Ok(Fetched::Restored);
        }
        // A segment that was not ready: the prefetcher works from here on while this
        // call fetches it directly.
        if matches!(name.parse::<WalFileName>(), Ok(WalFileName::Segment(_))) {
            match prefetch::want(folder, name) {
                Ok(true) => {
                    if let Err(e) = start_worker(settings, folder, name, following, until) {
                        tracing::warn!("cannot start the prefetcher: {e}; fetching directly");
                    }
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(
                    "cannot use the prefetch folder {}: {e}; fetching directly",
                    folder.display()
                ),
            }
        }
    }
    let repo = open_repo(settings).await?;
    let outcome = if following.latest {
        tidemark_archive_cmd::get_for_latest(&repo, &settings.stanza, name, dest).await?
    } else {
        tidemark_archive_cmd::get(&repo, &settings.stanza, name, dest).await?
    };
    match outcome {
        GetOutcome::Restored {
            len, from_partial, ..
        } => {
            if from_partial {
                tracing::info!(
                    "restored {name} from {name}.partial, the newest WAL of the archive ({len} bytes) to {}",
                    dest.display()
                );
            } else {
                tracing::info!("restored {name} ({len} bytes) to {}", dest.display());
            }
            Ok(Fetched::Restored)
        }
        GetOutcome::NotFound => {
            tracing::debug!("{name} is not in the archive");
            Ok(Fetched::NotInArchive)
        }
    }
}

fn parse_until(following: &Following) -> Result<Option<tidemark_pg::WalSegmentName>, Failure> {
    match following.until.as_deref().map(str::parse::<WalFileName>) {
        None => Ok(None),
        Some(Ok(WalFileName::Segment(s))) => Ok(Some(s)),
        Some(_) => Err(ConfigError(format!(
            "--until {:?}: not a WAL segment name",
            following.until.as_deref().unwrap_or_default()
        ))
        .into()),
    }
}

/// Starts `tidemark archive-get --prefetch-worker … NAME FOLDER` in a session of its own,
/// with this call's settings, its output appended to the folder's log.
fn start_worker(
    settings: &Settings,
    folder: &Path,
    name: &str,
    following: &Following,
    until: Option<tidemark_pg::WalSegmentName>,
) -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    // Absolute: the worker's checks of the data directory must not depend on its cwd.
    let folder = &std::path::absolute(folder)?;
    let log_path = folder.with_extension("log");
    if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > LOG_LIMIT) {
        let _ = std::fs::remove_file(&log_path);
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&log_path)?;
    let mut command = std::process::Command::new(exe);
    command.args(["archive-get", "--prefetch-worker"]);
    if let Some(t) = following.timeline {
        command.args(["--timeline", &t.to_string()]);
    }
    if let Some(u) = until {
        command.args(["--until", &u.to_string()]);
    }
    command
        .arg(name)
        .arg(folder)
        .envs(settings.child_env())
        .stderr(log);
    // It notices the end of recovery by itself.
    super::spool::spawn_detached(command)
}

/// The background prefetcher: `tidemark archive-get --prefetch-worker NAME FOLDER`.
pub async fn worker(
    settings: &Settings,
    start: &str,
    folder: &Path,
    following: &Following,
) -> Result<Fetched, Failure> {
    let until = parse_until(following)?;
    let repo = open_repo(settings).await?;
    let options = WorkerOptions {
        depth: settings.prefetch_depth,
        max_bytes: settings.prefetch_max_bytes,
        parallel: match settings.repo {
            RepoUrl::S3 { .. } => S3_PARALLEL,
            _ => LOCAL_PARALLEL,
        },
        idle: WORKER_IDLE,
        timeline: following.timeline,
        until,
    };
    tracing::info!("prefetching after {start} into {}", folder.display());
    let report = prefetch::run_worker(&repo, &settings.stanza, folder, start, &options).await?;
    if report.already_running {
        tracing::info!("another prefetcher works this folder");
    } else {
        let (user, system) = cpu_seconds();
        tracing::info!(
            "prefetcher done: {} segments prefetched, {} taken by recovery, {} removed unused; stopped because {}; CPU {user:.2} s user, {system:.2} s system",
            report.fetched,
            report.taken,
            report.removed,
            report.stopped
        );
    }
    Ok(Fetched::Restored)
}

/// This process's CPU time so far (user, system), in seconds: the worker logs what the
/// feed cost, which shares the cores with the server's replay.
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: an all-zero rusage is a valid value, and getrusage only fills the struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF needs nothing else.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (secs(usage.ru_utime), secs(usage.ru_stime))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::report::Format;

    #[test]
    fn not_in_the_archive_exits_1_and_nothing_is_printed() {
        assert_eq!(Fetched::Restored.code(), exit::OK);
        assert_eq!(Fetched::NotInArchive.code(), exit::FAILED);
        for f in [Fetched::Restored, Fetched::NotInArchive] {
            assert_eq!(f.render(Format::Text), "");
            assert_eq!(f.render(Format::Json), "");
        }
    }
}
