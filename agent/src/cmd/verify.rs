//! `tidemark verify [--backup ID] [--since DATE] [--full] [--concurrency N] [--json]`:
//! proves that what the repository holds can be restored (see
//! `tidemark_recovery::verify`), with a progress line on stderr, and reports every
//! problem by name. The run is recorded in the repository whatever it finds.
//!
//! Exit codes: 0 when nothing is wrong (notes, such as segments without a content
//! summary, are no failure); 4 when any problem was found (a person must look: the
//! report names each); 1 when the repository could not be read; 2 for bad arguments
//! (an unreadable `--since`; `--backup` naming no backup is 1, as for `restore`).

use serde::Serialize;
use tidemark_recovery::plan::parse_target_time;
use tidemark_recovery::verify::{self, Finding, Step, VerifyRequest, DEFAULT_CONCURRENCY};
use tidemark_store::verify::{VerifyRecord, VerifyScope};

use super::open_repo;
use super::report::{json_lines, Report};
use crate::cli::args::VerifyArgs;
use crate::cli::config::Settings;
use crate::exit::{self, Failure};
use crate::progress::Progress;

/// A note as `--json` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Note {
    /// Its kind.
    pub kind: String,
    /// What it is about.
    pub subject: String,
    /// One line.
    pub detail: String,
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// The repository.
    pub repo: String,
    /// The stanza.
    pub stanza: String,
    /// The run as recorded (counts, problems, pass/fail), without its proof lists.
    #[serde(flatten)]
    pub record: VerifyRecord,
    /// Where it is recorded.
    pub record_key: String,
    /// What is worth knowing but no failure.
    pub notes: Vec<Note>,
}

/// Runs the command; `args.json` keeps the progress line off stderr.
pub async fn run(settings: &Settings, args: &VerifyArgs) -> Result<Verified, Failure> {
    // One verify of the stanza at a time, whoever started it (the agent or a person).
    let _job_lock = crate::joblock::acquire(settings, crate::daemon::JobKind::Verify)?;
    let since = match &args.since {
        None => None,
        Some(text) => Some(parse_target_time(text, &chrono::Local).map_err(|e| {
            Failure::Recovery(tidemark_recovery::Error::Usage(format!("--since: {e}")))
        })?),
    };
    if args.concurrency == Some(0) {
        return Err(Failure::Recovery(tidemark_recovery::Error::Usage(
            "--concurrency must be at least 1".into(),
        )));
    }
    let repo = open_repo(settings).await?;
    let request = VerifyRequest {
        scope: VerifyScope {
            full: args.full,
            backup: args.backup.clone(),
            since,
        },
        concurrency: args.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
        now: tidemark_store::repo::now(),
        tidemark_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let mut progress = Progress::new("verify", None, !args.json);
    let report = verify::verify(&repo, &settings.stanza, &request, |step| match step {
        Step::Catalog {
            backups,
            wal_entries,
        } => tracing::info!("verify: {backups} backups, {wal_entries} WAL files in scope"),
        Step::Blobs { referenced } => tracing::info!("verify: {referenced} blobs referenced"),
        Step::Read(bytes) => progress.add(bytes),
    })
    .await?;
    progress.finish();
    // The history stays bounded (`tidemark_store::history`); never worth failing for.
    if let Err(e) = repo.prune_verifies(&settings.stanza).await {
        tracing::warn!("old verify records were not removed: {e}");
    }
    let mut record = report.record;
    // The proof lists' digests are for the next run, not for a person or a script.
    record.proofs.clear();
    Ok(Verified {
        repo: settings.repo.to_string(),
        stanza: settings.stanza.to_string(),
        record,
        record_key: report.record_key.to_string(),
        notes: report.notes.into_iter().map(note).collect(),
    })
}

fn note(f: Finding) -> Note {
    Note {
        kind: f.kind.to_string(),
        subject: f.subject,
        detail: f.detail,
    }
}

/// The scope in words: `everything`, `backup X`, `since …`, and `(full)`.
pub fn describe_scope(scope: &VerifyScope) -> String {
    let mut s = match (&scope.backup, &scope.since) {
        (Some(id), _) => format!("backup {id}"),
        (None, Some(since)) => format!("since {}", since.format("%Y-%m-%d %H:%M:%S UTC")),
        (None, None) => "everything".to_string(),
    };
    if scope.full {
        s.push_str(", full");
    }
    s
}

impl Report for Verified {
    fn text(&self) -> String {
        let r = &self.record;
        let c = &r.counts;
        let mut out = format!(
            "verify of stanza {} ({}): {}\n",
            self.stanza,
            describe_scope(&r.scope),
            if r.passed {
                "PASSED".to_string()
            } else {
                format!("FAILED, {} problem(s)", c.problems)
            }
        );
        out.push_str(&format!(
            "  {} backups, {} WAL files; {} blobs referenced: {} read and hashed ({:.1} MiB), {} proven by earlier runs and listed unchanged; {} file-list blobs read\n",
            c.backups,
            c.wal_entries,
            c.blobs,
            c.blobs_read,
            c.bytes_read as f64 / (1 << 20) as f64,
            c.blobs_proven_before,
            c.file_list_blobs
        ));
        for p in &r.problems {
            out.push_str(&format!("PROBLEM {}: {}\n", p.kind, p.detail));
        }
        if (r.problems.len() as u64) < c.problems {
            out.push_str(&format!(
                "… and {} more (the record keeps the first {})\n",
                c.problems - r.problems.len() as u64,
                r.problems.len()
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("note {}: {}\n", n.kind, n.detail));
        }
        out.push_str(&format!("recorded as {}\n", self.record_key));
        out
    }

    fn json(&self) -> String {
        json_lines(self)
    }

    fn code(&self) -> u8 {
        if self.record.passed {
            exit::OK
        } else {
            exit::INTEGRITY
        }
    }
}

/// `info`'s one line about the last verify run.
pub fn last_run_line(r: &VerifyRecord) -> String {
    format!(
        "verify      last run {} ({}): {}; {} blobs referenced, {} read",
        r.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
        describe_scope(&r.scope),
        if r.passed {
            "passed".to_string()
        } else {
            format!(
                "FAILED with {} problem(s): see `tidemark verify`",
                r.counts.problems
            )
        },
        r.counts.blobs,
        r.counts.blobs_read
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_store::verify::{VerifyCounts, VerifyProblem};

    fn verified(problems: Vec<VerifyProblem>) -> Verified {
        let at = "2026-12-06T10:00:00Z".parse().unwrap();
        Verified {
            repo: "file:///r".into(),
            stanza: "main".into(),
            record: VerifyRecord {
                id: "20261206T100000.000Z".into(),
                started_at: at,
                finished_at: at,
                scope: VerifyScope::default(),
                counts: VerifyCounts {
                    blobs: 10,
                    blobs_read: 4,
                    problems: problems.len() as u64,
                    ..VerifyCounts::default()
                },
                passed: problems.is_empty(),
                problems,
                proofs: vec![],
                tidemark_version: "0.1.0".into(),
            },
            record_key: "stanzas/main/verify/x".into(),
            notes: vec![Note {
                kind: "not-indexed".into(),
                subject: "a..b".into(),
                detail: "2 segments have no content summary".into(),
            }],
        }
    }

    #[test]
    fn problems_fail_the_run_and_are_named() {
        let clean = verified(vec![]);
        assert_eq!(clean.code(), exit::OK);
        assert!(clean
            .text()
            .starts_with("verify of stanza main (everything): PASSED\n"));
        assert!(clean.text().contains("note not-indexed: 2 segments"));
        let json: serde_json::Value = serde_json::from_str(&clean.json()).unwrap();
        assert_eq!(json["passed"], true);
        assert_eq!(json["counts"]["blobs_read"], 4);
        assert_eq!(json["notes"][0]["kind"], "not-indexed");

        let bad = verified(vec![VerifyProblem {
            kind: "wal-gap".into(),
            subject: "000000010000000000000004".into(),
            detail: "000000010000000000000004 is missing on timeline 1".into(),
        }]);
        assert_eq!(bad.code(), exit::INTEGRITY);
        assert!(bad
            .text()
            .contains("PROBLEM wal-gap: 000000010000000000000004 is missing on timeline 1\n"));
        assert!(last_run_line(&bad.record).contains("FAILED with 1 problem(s)"));
        assert_eq!(
            last_run_line(&clean.record),
            "verify      last run 2026-12-06 10:00:00 UTC (everything): passed; 10 blobs referenced, 4 read"
        );
    }
}
