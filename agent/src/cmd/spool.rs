//! `tidemark spool status|drain`, and the background drainer `archive-push` starts in
//! asynchronous mode.
//!
//! The drainer is a separate `tidemark spool drain --background` process in a session of
//! its own, so that PostgreSQL's archiver gets its answer as soon as the file is in the
//! spool and a restart of the archiver does not stop the drain. It is given the resolved
//! settings as `TIDEMARK_*` variables, logs to `drain.log` in the spool folder, and exits
//! once the queue has stayed empty for a few seconds; the next push starts another.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use tidemark_archive_cmd::spool::{self, DrainOptions, DrainReport, SpoolStatus};
use tidemark_archive_cmd::{Error, Spool};

use super::open_repo;
use super::report::{json_lines, Report};
use crate::cli::config::Settings;
use crate::exit::Failure;

/// How long the background drainer watches an empty queue before it exits.
const BACKGROUND_LINGER: Duration = Duration::from_secs(10);
/// Files the drainer moves at once: enough to hide a remote store's latency, few enough
/// to bound memory (each holds its raw and stored bytes while it is checked).
const DRAIN_PARALLEL: usize = 4;

/// The configured stanza's spool.
pub fn open_spool(settings: &Settings) -> Result<Spool, Failure> {
    Ok(Spool::new(
        &settings.spool_path,
        &settings.stanza,
        settings.spool_max_bytes,
        &settings.repo.to_string(),
    )?)
}

/// Starts a background drainer unless one is at work. A failure is logged, not returned:
/// the file is already safe in the spool, and the next push tries again.
pub fn ensure_drainer(settings: &Settings, spool: &Spool) {
    match spool.draining() {
        Ok(true) => {}
        Ok(false) => {
            if let Err(e) = start_drainer(settings, spool) {
                tracing::warn!(
                    "cannot start the spool drainer: {e}; the next archive-push tries again, or run `tidemark spool drain`"
                );
            }
        }
        Err(e) => tracing::warn!("cannot check for a spool drainer: {e}"),
    }
}

fn start_drainer(settings: &Settings, spool: &Spool) -> std::io::Result<()> {
    let exe = std::env::current_exe()?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(spool.dir().join("drain.log"))?;
    let mut command = std::process::Command::new(exe);
    command
        .args(["spool", "drain", "--background"])
        .envs(settings.child_env())
        .stderr(log);
    spawn_detached(command)
}

/// Starts `command` as a background process of tidemark's own (the spool's drainer, the
/// replay feed's prefetcher), stdin and stdout on /dev/null: in a session of its own, so
/// that signals to the PostgreSQL process group that started this one pass it by, and
/// holding none of the server's descriptors (its log pipe among them: they close at exec).
pub(crate) fn spawn_detached(mut command: std::process::Command) -> std::io::Result<()> {
    command.stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: only async-signal-safe calls (setsid, close_range, fcntl) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            close_inherited_at_exec();
            Ok(())
        });
    }
    command.spawn()?;
    Ok(())
}

/// Marks every descriptor above stderr close-on-exec.
fn close_inherited_at_exec() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: plain system calls on descriptor numbers; no memory is touched.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) == 0 {
            return;
        }
        for fd in 3..4096 {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
    }
}

/// `tidemark spool status`.
pub async fn status(settings: &Settings) -> Result<SpoolStatus, Failure> {
    Ok(open_spool(settings)?.status().await?)
}

/// The status as text: one line, then one line per file (the first 20).
pub fn render_status(status: &SpoolStatus) -> String {
    let mib = |b: u64| b as f64 / f64::from(1u32 << 20);
    let mut out = format!(
        "spool {}: {} files, {:.1} MiB of {:.0} MiB",
        status.path.display(),
        status.files,
        mib(status.bytes),
        mib(status.max_bytes)
    );
    if let Some(oldest) = status.oldest_queued_at {
        out.push_str(&format!(
            ", oldest queued {} s ago ({})",
            (Utc::now() - oldest).num_seconds().max(0),
            oldest.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    out.push_str(if status.draining {
        "; a drainer is at work\n"
    } else {
        "; no drainer running\n"
    });
    if status.unqueued > 0 {
        out.push_str(&format!(
            "{} spooled files are not in the queue (a lost queue?): the next drain queues them again\n",
            status.unqueued
        ));
    }
    if status.unchecked > 0 {
        out.push_str(&format!(
            "{} queued unchecked: the repository did not answer when they were pushed, so a conflict with what it holds shows only when they are drained\n",
            status.unchecked
        ));
    }
    for e in status.entries.iter().take(20) {
        out.push_str(&format!("  {}  {} bytes", e.name, e.stored_size));
        if !e.index_checked {
            out.push_str("  unchecked");
        }
        if let Some(error) = &e.last_error {
            out.push_str(&format!("  {} failed attempts, last: {error}", e.attempts));
        }
        out.push('\n');
    }
    if status.entries.len() > 20 {
        out.push_str(&format!("  … and {} more\n", status.entries.len() - 20));
    }
    out
}

/// `spool status`: the text is [`render_status`].
impl Report for SpoolStatus {
    fn text(&self) -> String {
        render_status(self)
    }

    fn json(&self) -> String {
        json_lines(self)
    }
}

/// `tidemark spool forget NAME`: how the repository holds what was forgotten.
pub async fn forget(settings: &Settings, name: &str) -> Result<Forgotten, Failure> {
    let spool = open_spool(settings)?;
    let repo = open_repo(settings).await?;
    let held = spool::forget(&spool, &repo, &settings.stanza, name).await?;
    Ok(Forgotten {
        name: name.to_string(),
        held,
    })
}

/// What `spool forget` did.
#[derive(Debug, Serialize)]
pub struct Forgotten {
    /// The file removed from the spool.
    pub name: String,
    /// How the repository holds its content.
    pub held: spool::HeldAs,
}

impl Report for Forgotten {
    fn text(&self) -> String {
        format!(
            "{} removed from the spool; the repository holds its content {}\n",
            self.name,
            match self.held {
                spool::HeldAs::Archived => "under its name",
                spool::HeldAs::Quarantined => "in quarantine",
            }
        )
    }

    fn json(&self) -> String {
        json_lines(self)
    }
}

/// What `spool drain` prints.
#[derive(Debug, Serialize)]
pub struct DrainResult {
    /// The spool folder.
    pub spool: String,
    /// What the drain did.
    #[serde(flatten)]
    pub report: DrainReport,
}

impl Report for DrainResult {
    fn text(&self) -> String {
        format!(
            "spool {}: {} files moved into the repository, {} were there already; the spool is empty\n",
            self.spool, self.report.pushed, self.report.already_archived
        )
    }

    fn json(&self) -> String {
        json_lines(self)
    }
}

/// `tidemark spool drain`: moves everything now (after any drainer already at work), and
/// fails unless the spool ends empty. With `background`, the drainer `archive-push`
/// starts: it quits if another is at work and never gives up on the repository, and
/// returns `None` (it prints nothing: its log is `drain.log`).
///
/// With `follow` (the agent's drainer), the background drainer never ends for an empty
/// queue: it holds the drain lock, and so keeps archive-push from starting its own, until
/// it is stopped.
pub async fn drain(
    settings: &Settings,
    background: bool,
    follow: bool,
) -> Result<Option<DrainResult>, Failure> {
    let spool = open_spool(settings)?;
    let repo = open_repo(settings).await?;
    // A drain pointed at a location without the repository (or the stanza) is refused
    // even with nothing queued: only `init` creates them, and the setting is wrong.
    repo.require_cluster(&settings.stanza).await?;
    if !spool.exists() && !background {
        return Ok(Some(DrainResult {
            spool: spool.dir().display().to_string(),
            report: DrainReport::default(),
        }));
    }
    let options = DrainOptions {
        parallel: DRAIN_PARALLEL,
        linger: if follow {
            Duration::MAX
        } else if background {
            BACKGROUND_LINGER
        } else {
            Duration::ZERO
        },
        give_up_after: (!background).then_some(settings.retry_for),
    };
    let deadline = Instant::now() + settings.retry_for;
    let report = loop {
        match spool::drain(&spool, &repo, &settings.stanza, &options).await? {
            Some(report) => break report,
            None if background => return Ok(None),
            None if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            None => {
                return Err(Error::Spool {
                    path: spool.dir().to_path_buf(),
                    detail: format!(
                        "another drainer kept the spool for {} s; try again later",
                        settings.retry_for.as_secs()
                    ),
                }
                .into())
            }
        }
    };
    if background {
        for (name, error) in &report.stuck {
            tracing::error!("{name} stays in the spool until a person looks at it: {error}");
        }
        return Ok(None);
    }
    if !report.stuck.is_empty() {
        let (name, error) = &report.stuck[0];
        return Err(Error::SpoolStuck {
            count: report.stuck.len(),
            name: name.clone(),
            error: error.clone(),
        }
        .into());
    }
    if report.remaining > 0 {
        return Err(Error::Spool {
            path: spool.dir().to_path_buf(),
            detail: format!(
                "{} files still queued after retrying for {} s: {}",
                report.remaining,
                settings.retry_for.as_secs(),
                report
                    .gave_up
                    .as_deref()
                    .unwrap_or("new files kept arriving")
            ),
        }
        .into());
    }
    Ok(Some(DrainResult {
        spool: spool.dir().display().to_string(),
        report,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::report::Format;

    fn entry(name: &str, index_checked: bool, last_error: Option<&str>) -> spool::SpoolEntry {
        spool::SpoolEntry {
            name: name.into(),
            digest: "d".into(),
            raw_size: 16 << 20,
            stored_size: 1234,
            stored_sha256: "s".into(),
            identity: None,
            compression: tidemark_store::Compression::Lz4,
            queued_at: Utc::now(),
            attempts: 3,
            last_error: last_error.map(Into::into),
            index_checked,
            content: None,
        }
    }

    #[test]
    fn status_renders_one_line_then_one_per_file() {
        let mut status = SpoolStatus {
            path: "/var/spool/tidemark/main".into(),
            files: 2,
            bytes: 3 << 20,
            max_bytes: 4096 << 20,
            oldest_queued_at: None,
            unchecked: 1,
            unqueued: 2,
            draining: false,
            entries: vec![
                entry("000000010000000000000001", true, None),
                entry("000000010000000000000002", false, Some("unreachable")),
            ],
        };
        assert_eq!(
            status.render(Format::Text),
            "spool /var/spool/tidemark/main: 2 files, 3.0 MiB of 4096 MiB; no drainer running\n\
             2 spooled files are not in the queue (a lost queue?): the next drain queues them again\n\
             1 queued unchecked: the repository did not answer when they were pushed, so a conflict with what it holds shows only when they are drained\n  \
             000000010000000000000001  1234 bytes\n  \
             000000010000000000000002  1234 bytes  unchecked  3 failed attempts, last: unreachable\n"
        );
        status.entries = (0..21)
            .map(|i| entry(&format!("{i:024X}"), true, None))
            .collect();
        status.draining = true;
        status.unchecked = 0;
        status.unqueued = 0;
        let text = status.text();
        assert!(
            text.starts_with("spool /var/spool/tidemark/main: 2 files, 3.0 MiB of 4096 MiB; a drainer is at work\n"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 22, "{text}");
        assert!(text.ends_with("  … and 1 more\n"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&status.json()).unwrap();
        assert_eq!(json["files"], 2);
    }

    #[test]
    fn drain_and_forget_render_one_line() {
        let drained = DrainResult {
            spool: "/var/spool/tidemark/main".into(),
            report: DrainReport {
                pushed: 3,
                already_archived: 1,
                ..DrainReport::default()
            },
        };
        assert_eq!(
            drained.render(Format::Text),
            "spool /var/spool/tidemark/main: 3 files moved into the repository, 1 were there already; the spool is empty\n"
        );
        // The report's fields sit beside `spool`, not under a `report` key.
        assert_eq!(
            drained.render(Format::Json),
            "{\n  \"spool\": \"/var/spool/tidemark/main\",\n  \"pushed\": 3,\n  \"already_archived\": 1,\n  \
             \"remaining\": 0,\n  \"stuck\": [],\n  \"gave_up\": null\n}\n"
        );
        // The background drainer prints nothing, whatever the format.
        let background: Option<DrainResult> = None;
        assert_eq!(background.render(Format::Json), "");

        let forgotten = |held| Forgotten {
            name: "000000010000000000000001".into(),
            held,
        };
        assert_eq!(
            forgotten(spool::HeldAs::Archived).text(),
            "000000010000000000000001 removed from the spool; the repository holds its content under its name\n"
        );
        assert_eq!(
            forgotten(spool::HeldAs::Quarantined).text(),
            "000000010000000000000001 removed from the spool; the repository holds its content in quarantine\n"
        );
    }
}
