//! `tidemark reindex [--json]`: builds the WAL content index for the segments of the
//! stanza archived before it existed (see `tidemark_archive_cmd::reindex`), with progress
//! on stderr, and reports the counts.
//!
//! Exit codes: 0 when every segment has its content now (damaged segments included:
//! their damage is recorded, which is what the planner needs); 4 when a segment's content
//! in the repository is missing or corrupt (a person must look); 1 when some segments
//! could not be decoded at all, or the repository failed (a rerun resumes).

use serde::Serialize;
use tidemark_archive_cmd::reindex::{self, Progress as Step, ReindexReport};

use super::open_repo;
use super::report::{json_lines, Report};
use crate::cli::config::Settings;
use crate::exit::{self, Failure};
use crate::progress::Progress;

/// What `reindex` did, for the stanza of the repository.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reindexed {
    /// The repository.
    pub repo: String,
    /// The stanza.
    pub stanza: String,
    /// The counts and the segments to look at.
    #[serde(flatten)]
    pub report: ReindexReport,
}

/// Runs the command; `quiet` (`--json`) keeps the progress line off stderr.
pub async fn run(settings: &Settings, quiet: bool) -> Result<Reindexed, Failure> {
    let repo = open_repo(settings).await?;
    let mut progress = Progress::new("reindex", None, !quiet);
    let report = reindex::reindex(&repo, &settings.stanza, |step| match step {
        Step::Start { entries, bytes } => {
            if entries > 0 {
                tracing::info!("{entries} segments to decode");
            }
            progress.set_total(bytes);
        }
        Step::Entry { bytes, .. } => progress.add(bytes),
    })
    .await?;
    progress.finish();
    Ok(Reindexed {
        repo: settings.repo.to_string(),
        stanza: settings.stanza.to_string(),
        report,
    })
}

impl Report for Reindexed {
    fn text(&self) -> String {
        let r = &self.report;
        let mut out = format!(
            "reindex of stanza {}: {} segments; {} indexed now, {} already indexed, {} damaged, {} failed\n",
            self.stanza,
            r.segments,
            r.indexed,
            r.already_indexed,
            r.damaged.len(),
            r.failed.len()
        );
        for d in &r.damaged {
            out.push_str(&format!(
                "damaged: {}: invalid WAL at {}: {} (indexed as such: replay stops there)\n",
                d.name, d.lsn, d.reason
            ));
        }
        for f in &r.failed {
            out.push_str(&format!("failed: {}: {}\n", f.name, f.error));
        }
        if !r.failed.is_empty() {
            out.push_str("run `tidemark reindex` again once the cause is fixed: it resumes\n");
        }
        out
    }

    fn json(&self) -> String {
        json_lines(self)
    }

    fn code(&self) -> u8 {
        let failed = &self.report.failed;
        if failed.iter().any(|f| f.integrity) {
            exit::INTEGRITY
        } else if !failed.is_empty() {
            exit::FAILED
        } else {
            exit::OK
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_archive_cmd::reindex::{DamagedSegment, FailedSegment};

    fn reindexed(failed: Vec<FailedSegment>) -> Reindexed {
        Reindexed {
            repo: "file:///r".into(),
            stanza: "main".into(),
            report: ReindexReport {
                segments: 5,
                indexed: 2,
                already_indexed: 1,
                damaged: vec![DamagedSegment {
                    name: "000000010000000000000003".into(),
                    lsn: "0/3000100".into(),
                    reason: "CRC mismatch".into(),
                }],
                failed,
            },
        }
    }

    #[test]
    fn counts_damage_and_failures_decide_text_json_and_code() {
        let clean = reindexed(vec![]);
        assert_eq!(clean.code(), exit::OK);
        assert_eq!(
            clean.text(),
            "reindex of stanza main: 5 segments; 2 indexed now, 1 already indexed, 1 damaged, 0 failed\n\
             damaged: 000000010000000000000003: invalid WAL at 0/3000100: CRC mismatch (indexed as such: replay stops there)\n"
        );
        let json: serde_json::Value = serde_json::from_str(&clean.json()).unwrap();
        assert_eq!(json["indexed"], 2);
        assert_eq!(json["already_indexed"], 1);
        assert_eq!(json["damaged"][0]["lsn"], "0/3000100");
        assert_eq!(json["failed"].as_array().unwrap().len(), 0);

        let failed = |integrity| FailedSegment {
            name: "000000010000000000000004".into(),
            error: "boom".into(),
            integrity,
        };
        let undecodable = reindexed(vec![failed(false)]);
        assert_eq!(undecodable.code(), exit::FAILED);
        assert!(undecodable
            .text()
            .contains("failed: 000000010000000000000004: boom\n"));
        assert_eq!(
            reindexed(vec![failed(false), failed(true)]).code(),
            exit::INTEGRITY
        );
    }
}
