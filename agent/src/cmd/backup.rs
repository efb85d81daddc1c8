//! `tidemark backup [--label TEXT] [--checkpoint fast|spread]`: takes a base backup (see
//! [`crate::backup`]) and reports what it did: one line, or the report as JSON.

use std::time::Duration;

use super::report::{json_lines, Report};
use crate::backup::{self, BackupError, BackupReport, BackupRequest};
use crate::cli::args::BackupArgs;
use crate::cli::config::Settings;
use crate::exit::Failure;

/// Runs the command; returns its report for `main` to print.
pub async fn run(settings: &Settings, args: &BackupArgs) -> Result<BackupReport, Failure> {
    // One backup of the stanza at a time, whoever started it (the agent or a person).
    let _job_lock = crate::joblock::acquire(settings, crate::daemon::JobKind::Backup)?;
    let request = BackupRequest {
        label: args.label.clone(),
        fast_checkpoint: args.checkpoint == "fast",
        wal_timeout: Duration::from_secs(args.wal_timeout),
        quiet: args.json,
        ignore_checksum_failures: args.ignore_checksum_failures,
    };
    // SIGTERM (the agent stopping, systemd) or SIGINT abandons the backup at once: the
    // replication connection closes (the server ends its side of the backup), and as the
    // record is written last, nothing of it is listed.
    tokio::select! {
        taken = backup::take(settings, &request) => taken,
        signal = interrupted() => Err(BackupError::Interrupted { signal }.into()),
    }
}

/// Waits for SIGTERM or SIGINT; returns its name. Never returns when the handlers cannot
/// be installed (the default action then stops the process, as before).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// One line (and one more when the server sent warnings).
impl Report for BackupReport {
    fn text(&self) -> String {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let mut out = format!(
            "backup {} ({}): {:.0} MiB in {} files, {:.1} MiB added to the repository ({} of {} chunks new), \
             {:.1} s ({:.0} MiB/s), WAL {} to {} on timeline {}\n",
            self.id,
            self.label,
            mib(self.size),
            self.files,
            mib(self.stored_added),
            self.chunks_added,
            self.chunks,
            self.seconds,
            mib(self.size) / self.copy_seconds.max(1e-3),
            self.start_lsn,
            self.stop_lsn,
            self.timeline
        );
        if self.notices > 0 {
            out.push_str(&format!(
                "the server sent {} warning(s) during the backup (logged above){}\n",
                self.notices,
                if self.checksum_failures_ignored {
                    ", among them data checksum failures, ignored as asked: the backup holds the damaged pages"
                } else {
                    ""
                }
            ));
        }
        out
    }

    fn json(&self) -> String {
        json_lines(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::report::Format;

    fn report() -> BackupReport {
        BackupReport {
            repo: "file:///r".into(),
            stanza: "main".into(),
            id: "20260101T000000Z".into(),
            label: "nightly".into(),
            timeline: 1,
            start_lsn: "0/2000028".parse().unwrap(),
            stop_lsn: "0/2000100".parse().unwrap(),
            files: 980,
            size: 30 << 20,
            chunks: 40,
            chunks_added: 10,
            stored_added: 3 << 19,
            copy_seconds: 2.0,
            wal_wait_seconds: 0.5,
            seconds: 2.54,
            warnings: vec![],
            notices: 0,
            checksum_failures_ignored: false,
        }
    }

    #[test]
    fn the_report_is_one_line_and_one_more_for_the_server_s_warnings() {
        let mut r = report();
        assert_eq!(
            r.render(Format::Text),
            "backup 20260101T000000Z (nightly): 30 MiB in 980 files, 1.5 MiB added to the repository (10 of 40 chunks new), \
             2.5 s (15 MiB/s), WAL 0/2000028 to 0/2000100 on timeline 1\n"
        );
        r.notices = 2;
        assert!(r.text().ends_with(
            "timeline 1\nthe server sent 2 warning(s) during the backup (logged above)\n"
        ));
        r.checksum_failures_ignored = true;
        assert!(r.text().ends_with(
            "(logged above), among them data checksum failures, ignored as asked: the backup holds the damaged pages\n"
        ));
        let json: serde_json::Value = serde_json::from_str(&r.render(Format::Json)).unwrap();
        assert_eq!(json["id"], "20260101T000000Z");
        assert!(r.json().ends_with("}\n"));
    }
}
