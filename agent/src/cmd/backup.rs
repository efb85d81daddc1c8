//! `tidemark backup [--label TEXT] [--checkpoint fast|spread]`: takes a base backup (see
//! [`crate::backup`]) and prints what it did: one line, or the report as JSON.

use std::time::Duration;

use crate::backup::{self, BackupRequest};
use crate::cli::args::BackupArgs;
use crate::cli::config::Settings;
use crate::exit::{self, Failure};

/// Runs the command; prints its report and returns the exit code.
pub async fn run(settings: &Settings, args: &BackupArgs) -> Result<u8, Failure> {
    let report = backup::take(
        settings,
        &BackupRequest {
            label: args.label.clone(),
            fast_checkpoint: args.checkpoint == "fast",
            wal_timeout: Duration::from_secs(args.wal_timeout),
            quiet: args.json,
            ignore_checksum_failures: args.ignore_checksum_failures,
        },
    )
    .await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("serializable")
        );
    } else {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!(
            "backup {} ({}): {:.0} MiB in {} files, {:.1} MiB added to the repository ({} of {} chunks new), \
             {:.1} s ({:.0} MiB/s), WAL {} to {} on timeline {}",
            report.id,
            report.label,
            mib(report.size),
            report.files,
            mib(report.stored_added),
            report.chunks_added,
            report.chunks,
            report.seconds,
            mib(report.size) / report.copy_seconds.max(1e-3),
            report.start_lsn,
            report.stop_lsn,
            report.timeline
        );
        if report.notices > 0 {
            println!(
                "the server sent {} warning(s) during the backup (logged above){}",
                report.notices,
                if report.checksum_failures_ignored {
                    ", among them data checksum failures, ignored as asked: the backup holds the damaged pages"
                } else {
                    ""
                }
            );
        }
    }
    Ok(exit::OK)
}
