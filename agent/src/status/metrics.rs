//! The metrics in the Prometheus text exposition format (version 0.0.4): `# HELP` and
//! `# TYPE` for every family, label values escaped, `+Inf`/`NaN` spelt as Prometheus
//! reads them. Pure: [`render`] takes an assessed [`StatusReport`] and the job counters,
//! and the HTTP side only serves the string.
//!
//! Every family is always present (its HELP and TYPE lines), so that a dashboard or an
//! alert never sees a metric vanish. A value that is not known is written the way an
//! alert expects: a "last success" timestamp that never happened is 0 (so
//! `time() - tidemark_drill_last_success_timestamp > …` fires), the RPO when nothing is
//! recoverable is `+Inf`, other unknown gauges `NaN` (no comparison fires on them), and
//! a per-timeline or per-phase family has no sample for what does not exist. The units
//! are in the names (seconds, bytes, Unix-epoch seconds for `_timestamp`); docs/monitoring.md
//! lists them.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use super::assess::StatusReport;
use super::probe::ServerProbe;

/// Every metric family issue 16 asks for ([`render`] writes more).
pub const ISSUE_METRICS: [&str; 15] = [
    "tidemark_rpo_seconds",
    "tidemark_wal_durable_lsn",
    "tidemark_wal_lag_bytes",
    "tidemark_pitr_earliest_timestamp",
    "tidemark_pitr_latest_timestamp",
    "tidemark_wal_gap_segments",
    "tidemark_backup_last_success_timestamp",
    "tidemark_backup_duration_seconds",
    "tidemark_backup_added_bytes",
    "tidemark_retention_window_seconds",
    "tidemark_drill_last_success_timestamp",
    "tidemark_drill_rto_seconds",
    "tidemark_spool_files",
    "tidemark_spool_oldest_seconds",
    "tidemark_job_failures_total",
];

/// One job counter: failures of `job` (backup, verify, drill, expire) of `kind`, since
/// the agent started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobFailures {
    /// The job.
    pub job: &'static str,
    /// How it failed.
    pub kind: &'static str,
    /// How many times.
    pub count: u64,
}

/// How the last collection went, for the freshness metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct Collection {
    /// When the last successful collection read the repository.
    pub last_success: Option<DateTime<Utc>>,
    /// Collections that failed since the agent started.
    pub errors: u64,
}

/// A float as Prometheus reads it.
fn value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// A label value escaped: backslash, double quote and line feed.
pub fn escape_label(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A HELP text escaped: backslash and line feed.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn seconds_of(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

/// The text being written, family by family.
struct Exposition {
    out: String,
    /// `stanza="…"`: on every sample, so that several clusters' agents can be told apart
    /// whatever the scrape's own labels.
    stanza: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        let mut text = format!("stanza=\"{}\"", self.stanza);
        for (k, val) in labels {
            let _ = write!(text, ",{k}=\"{}\"", escape_label(val));
        }
        let _ = writeln!(self.out, "{name}{{{text}}} {}", value(v));
    }

    fn gauge(&mut self, name: &str, help: &str, v: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], v);
    }
}

/// Renders every metric (see the module doc).
pub fn render(r: &StatusReport, jobs: &[JobFailures], collection: &Collection) -> String {
    let mut x = Exposition {
        out: String::new(),
        stanza: escape_label(&r.stanza),
    };
    let nan = f64::NAN;
    x.gauge(
        "tidemark_rpo_seconds",
        "What a disaster now would lose: seconds since the newest commit a restore reaches (from archived WAL), while the server has WAL the repository lacks; 0 when the repository holds all of it; +Inf when nothing is recoverable.",
        r.rpo.seconds.unwrap_or(f64::INFINITY),
    );
    x.gauge(
        "tidemark_rpo_target_seconds",
        "The configured recovery point objective (rpo_target).",
        r.rpo.target_seconds,
    );
    x.gauge(
        "tidemark_wal_durable_lsn",
        "The end of the newest WAL segment archived without a gap on the server's timeline, as a byte position.",
        r.wal.durable_lsn_bytes.map_or(nan, |b| b as f64),
    );
    x.gauge(
        "tidemark_wal_lag_bytes",
        "The server's current WAL position minus the durable LSN (NaN when the server cannot be asked).",
        r.wal.lag_bytes.map_or(nan, |b| b as f64),
    );
    let timeline_family =
        |x: &mut Exposition, name: &str, help: &str, get: &dyn Fn(usize) -> Option<f64>| {
            x.family(name, "gauge", help);
            for (i, t) in r.timelines.iter().enumerate() {
                if let Some(v) = get(i) {
                    x.sample(name, &[("timeline", &t.timeline.to_string())], v);
                }
            }
        };
    timeline_family(
        &mut x,
        "tidemark_pitr_earliest_timestamp",
        "The earliest moment a restore onto this timeline reaches (Unix time).",
        &|i| r.timelines[i].pitr_earliest.map(seconds_of),
    );
    timeline_family(
        &mut x,
        "tidemark_pitr_latest_timestamp",
        "The newest commit a restore onto this timeline reaches (Unix time).",
        &|i| r.timelines[i].pitr_latest.map(seconds_of),
    );
    timeline_family(
        &mut x,
        "tidemark_wal_gap_segments",
        "WAL segments missing between the first and the last archived segment of this timeline.",
        &|i| Some(r.timelines[i].gap_segments as f64),
    );
    let last = r.backup.last.as_ref();
    x.gauge(
        "tidemark_backup_last_success_timestamp",
        "When the newest backup was complete (Unix time; 0: none).",
        last.map_or(0.0, |b| seconds_of(b.stop_time)),
    );
    x.gauge(
        "tidemark_backup_duration_seconds",
        "How long the newest backup took.",
        last.map_or(nan, |b| b.duration_seconds),
    );
    x.gauge(
        "tidemark_backup_added_bytes",
        "Bytes the newest backup added to the repository (what changed since the others).",
        last.map_or(nan, |b| b.added_bytes as f64),
    );
    x.gauge(
        "tidemark_backup_max_age_seconds",
        "The configured backup_max_age.",
        r.backup.max_age_seconds,
    );
    x.family(
        "tidemark_retention_window_seconds",
        "gauge",
        "The recovery window: guaranteed = every moment of the last this many seconds is restorable now; configured = what the retention policy asks for.",
    );
    x.sample(
        "tidemark_retention_window_seconds",
        &[("window", "guaranteed")],
        r.retention.guaranteed_seconds.unwrap_or(0.0),
    );
    if let Some(c) = r.retention.configured_seconds {
        x.sample(
            "tidemark_retention_window_seconds",
            &[("window", "configured")],
            c,
        );
    }
    x.gauge(
        "tidemark_drill_last_success_timestamp",
        "When the last passing restore drill started (Unix time; 0: none).",
        r.drill.last_success_at.map_or(0.0, seconds_of),
    );
    x.family(
        "tidemark_drill_rto_seconds",
        "gauge",
        "The last passing drill's recovery time, by phase; phase=\"total\" is the RTO.",
    );
    for p in &r.drill.phases {
        x.sample(
            "tidemark_drill_rto_seconds",
            &[("phase", &p.name)],
            p.seconds,
        );
    }
    if let Some(total) = r.drill.rto_seconds {
        x.sample("tidemark_drill_rto_seconds", &[("phase", "total")], total);
    }
    x.gauge(
        "tidemark_spool_files",
        "WAL files acknowledged into the asynchronous-archiving spool and not yet in the repository.",
        r.spool.files as f64,
    );
    x.gauge(
        "tidemark_spool_oldest_seconds",
        "Age of the oldest file in the spool (0 when it is empty).",
        r.spool.oldest_seconds,
    );
    x.family(
        "tidemark_job_failures_total",
        "counter",
        "Failed runs of the agent's jobs since it started, by job and kind of failure.",
    );
    for j in jobs {
        x.sample(
            "tidemark_job_failures_total",
            &[("job", j.job), ("kind", j.kind)],
            j.count as f64,
        );
    }
    x.gauge(
        "tidemark_server_up",
        "1 when PostgreSQL answered the last collection, 0 when it could not be asked.",
        if matches!(r.server, ServerProbe::Reachable(_)) {
            1.0
        } else {
            0.0
        },
    );
    x.gauge(
        "tidemark_warnings",
        "Warnings standing (what makes `tidemark status` exit 8).",
        r.warnings.len() as f64,
    );
    x.gauge(
        "tidemark_status_collected_timestamp",
        "When the repository was last read successfully (Unix time): the other values are as of then.",
        collection.last_success.map_or(0.0, seconds_of),
    );
    x.family(
        "tidemark_status_collect_errors_total",
        "counter",
        "Collections that could not read the repository since the agent started.",
    );
    x.sample(
        "tidemark_status_collect_errors_total",
        &[],
        collection.errors as f64,
    );
    x.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::assess::assess;
    use crate::status::assess::tests::{at, facts, limits};

    fn rendered() -> String {
        let mut f = facts();
        f.stanza = "ma\"in".into();
        f.drills.last_passed = Some(crate::status::text::tests::drill(true));
        f.drills.last = f.drills.last_passed.clone();
        f.drills.count = 1;
        let mut l = limits();
        l.retention_window = Some(std::time::Duration::from_secs(86_400));
        let r = assess(&f, &l, at("2026-12-06T12:00:00Z"));
        render(
            &r,
            &[
                JobFailures {
                    job: "backup",
                    kind: "unreachable",
                    count: 2,
                },
                JobFailures {
                    job: "backup",
                    kind: "failed",
                    count: 0,
                },
            ],
            &Collection {
                last_success: Some(at("2026-12-06T12:00:00Z")),
                errors: 1,
            },
        )
    }

    #[test]
    fn every_metric_of_the_issue_has_help_type_and_samples() {
        let text = rendered();
        for name in ISSUE_METRICS {
            assert!(
                text.contains(&format!("\n# HELP {name} "))
                    || text.starts_with(&format!("# HELP {name} ")),
                "{name} HELP"
            );
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} TYPE"
            );
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{name}{{"))),
                "{name} has no sample:\n{text}"
            );
        }
        // Every non-comment line is `name{labels} value` with a value Prometheus reads.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            assert!(
                v == "NaN" || v == "+Inf" || v.parse::<f64>().is_ok(),
                "{line}"
            );
        }
    }

    #[test]
    fn values_units_and_labels() {
        let text = rendered();
        let want = [
            // The stanza label is escaped.
            "tidemark_rpo_seconds{stanza=\"ma\\\"in\"} 0",
            "tidemark_rpo_target_seconds{stanza=\"ma\\\"in\"} 3600",
            "tidemark_wal_durable_lsn{stanza=\"ma\\\"in\"} 83886080",
            "tidemark_wal_lag_bytes{stanza=\"ma\\\"in\"} 0",
            "tidemark_pitr_earliest_timestamp{stanza=\"ma\\\"in\",timeline=\"1\"} 1796555100",
            "tidemark_pitr_latest_timestamp{stanza=\"ma\\\"in\",timeline=\"1\"} 1796558370",
            "tidemark_wal_gap_segments{stanza=\"ma\\\"in\",timeline=\"1\"} 0",
            "tidemark_backup_last_success_timestamp{stanza=\"ma\\\"in\"} 1796555100",
            "tidemark_backup_duration_seconds{stanza=\"ma\\\"in\"} 300",
            "tidemark_backup_added_bytes{stanza=\"ma\\\"in\"} 100",
            "tidemark_retention_window_seconds{stanza=\"ma\\\"in\",window=\"guaranteed\"} 3300",
            "tidemark_retention_window_seconds{stanza=\"ma\\\"in\",window=\"configured\"} 86400",
            "tidemark_drill_last_success_timestamp{stanza=\"ma\\\"in\"} 1796551200",
            "tidemark_drill_rto_seconds{stanza=\"ma\\\"in\",phase=\"files restored\"} 2.5",
            "tidemark_drill_rto_seconds{stanza=\"ma\\\"in\",phase=\"total\"} 3.5",
            "tidemark_spool_files{stanza=\"ma\\\"in\"} 0",
            "tidemark_spool_oldest_seconds{stanza=\"ma\\\"in\"} 0",
            "tidemark_job_failures_total{stanza=\"ma\\\"in\",job=\"backup\",kind=\"unreachable\"} 2",
            "tidemark_job_failures_total{stanza=\"ma\\\"in\",job=\"backup\",kind=\"failed\"} 0",
            "tidemark_server_up{stanza=\"ma\\\"in\"} 1",
            "tidemark_status_collect_errors_total{stanza=\"ma\\\"in\"} 1",
        ];
        for line in want {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn unknown_values_read_as_alerts_expect() {
        let mut f = facts();
        f.newest_backup = None;
        f.recoverable = None;
        f.catalog_warnings = vec!["cannot tell".into()];
        f.server = ServerProbe::Unreachable {
            error: "down".into(),
        };
        let r = assess(&f, &limits(), at("2026-12-06T12:00:00Z"));
        let text = render(
            &r,
            &[],
            &Collection {
                last_success: None,
                errors: 0,
            },
        );
        for line in [
            "tidemark_rpo_seconds{stanza=\"main\"} +Inf",
            "tidemark_wal_durable_lsn{stanza=\"main\"} NaN",
            "tidemark_wal_lag_bytes{stanza=\"main\"} NaN",
            "tidemark_backup_last_success_timestamp{stanza=\"main\"} 0",
            "tidemark_backup_duration_seconds{stanza=\"main\"} NaN",
            "tidemark_drill_last_success_timestamp{stanza=\"main\"} 0",
            "tidemark_server_up{stanza=\"main\"} 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Families without samples keep their HELP and TYPE.
        assert!(
            text.contains(
                "# TYPE tidemark_pitr_latest_timestamp gauge\n# HELP tidemark_wal_gap_segments"
            ),
            "{text}"
        );
        assert!(!text.contains("window=\"configured\""));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(escape_help("x\\y\nz"), "x\\\\y\\nz");
        assert_eq!(value(1.5), "1.5");
        assert_eq!(value(1e21), "1000000000000000000000");
        assert_eq!(value(f64::NAN), "NaN");
    }
}
