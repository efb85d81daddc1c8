//! The per-stanza job lock: one run of each kind of job (backup, verify, drill, expire) at
//! a time for a cluster, whoever starts it (the agent's schedule or a person).
//!
//! The lock is an `flock` on `<state_path>/<stanza>/<kind>.lock`, taken by the command
//! itself when it starts and held until it exits. The kernel releases it when the process
//! ends, however it ends (a crash, SIGKILL, a reboot), so it is never left stale; the file
//! staying behind means nothing. The holder writes its pid and start time into the file,
//! for the message the next one prints. The descriptor is close-on-exec: a child of the
//! holder (a drill's scratch server) does not keep it.
//!
//! A command that finds the lock held fails at once with [`crate::exit::LOCKED`] and one
//! line naming the holder; the agent reads that code as "skipped: another run did the
//! work", not as a failure.
//!
//! To take it in a command: `let _lock = crate::joblock::acquire(settings, JobKind::Expire)?;`
//! at the start of its `run` (the guard releases it when dropped).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::cli::config::Settings;
use crate::daemon::JobKind;

/// A held job lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct JobLock {
    _file: File,
    path: PathBuf,
}

impl JobLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the job lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum JobLockError {
    /// Another run of the same kind holds it.
    #[error("another {what} of stanza {stanza} is running{holder}; not started (lock {path})")]
    Held {
        /// What holds it: a kind of job, or the agent.
        what: String,
        /// The stanza.
        stanza: String,
        /// " (pid N, since T)" when the holder wrote it.
        holder: String,
        /// The lock file.
        path: PathBuf,
    },
    /// The lock file could not be made or locked (state_path missing or not writable).
    #[error("cannot take the job lock {path}: {source} (check state_path)")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Takes the job lock of `kind` for the configured stanza, without waiting.
pub fn acquire(settings: &Settings, kind: JobKind) -> Result<JobLock, JobLockError> {
    acquire_named(settings, kind.as_str(), &format!("{kind}"))
}

/// Takes the lock `<state_path>/<stanza>/<name>.lock` (`what`, for the message: "backup",
/// "agent"), without waiting.
pub fn acquire_named(settings: &Settings, name: &str, what: &str) -> Result<JobLock, JobLockError> {
    let path = settings
        .state_path
        .join(settings.stanza.as_str())
        .join(format!("{name}.lock"));
    let io = |source| JobLockError::Io {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock only uses the descriptor, which `file` keeps open.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::WouldBlock {
            return Err(io(e));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.trim();
        return Err(JobLockError::Held {
            what: what.to_string(),
            stanza: settings.stanza.as_str().to_string(),
            holder: if holder.is_empty() {
                String::new()
            } else {
                format!(" ({holder})")
            },
            path,
        });
    }
    // Who holds it, for the message of the next one; the lock does not depend on it.
    let _ = file.set_len(0).and_then(|()| {
        file.rewind()?;
        write!(
            file,
            "pid {}, since {}",
            std::process::id(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    });
    Ok(JobLock { _file: file, path })
}
