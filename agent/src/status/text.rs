//! `tidemark status` for a person: the few lines an on-call engineer reads first (RPO
//! against its target, the newest recoverable commit, the WAL lag, the last backup and
//! its age, the retention window, verify, drill, spool), then the warnings. Pure.

use chrono::{DateTime, Utc};

use super::assess::{human_seconds, StatusReport};
use super::probe::ServerProbe;
use crate::cmd::report::{json_lines, Report};
use crate::exit;

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `status`: healthy exits 0, any warning [`exit::STATUS_WARNING`].
impl Report for StatusReport {
    fn text(&self) -> String {
        render_text(self)
    }

    fn json(&self) -> String {
        json_lines(self)
    }

    fn code(&self) -> u8 {
        if self.healthy {
            exit::OK
        } else {
            exit::STATUS_WARNING
        }
    }
}

/// Renders the report for a person.
pub fn render_text(r: &StatusReport) -> String {
    let mut out = Vec::new();
    let verdict = if r.healthy {
        "OK".to_string()
    } else {
        format!("{} WARNING(S)", r.warnings.len())
    };
    out.push(format!(
        "status      {verdict}  (stanza {}, {})",
        r.stanza, r.repo
    ));
    let target = human_seconds(r.rpo.target_seconds);
    out.push(match r.rpo.seconds {
        Some(_) if !r.rpo.wal_at_risk => format!(
            "rpo         0 s (target {target}): the repository holds all WAL the server wrote"
        ),
        Some(s) => format!(
            "rpo         {}{} (target {target})",
            human_seconds(s),
            if r.rpo.breached { " BREACHED" } else { "" }
        ),
        None => format!("rpo         unknown: nothing is recoverable (target {target})"),
    });
    out.push(match (r.rpo.newest_commit, r.rpo.newest_recoverable) {
        (Some(c), _) => format!(
            "recoverable to {} (newest archived commit, timeline {}, WAL to {})",
            when(c),
            r.rpo.timeline,
            r.rpo.newest_lsn.as_deref().unwrap_or("?")
        ),
        (None, Some(t)) => format!(
            "recoverable to {} (the backup's consistent point: no commit archived after it)",
            when(t)
        ),
        (None, None) => "recoverable nothing yet".to_string(),
    });
    let server = match &r.server {
        ServerProbe::Reachable(w) => format!(
            "{} at {} on timeline {}",
            if w.in_recovery { "standby" } else { "primary" },
            w.current_lsn,
            w.timeline
        ),
        ServerProbe::Unreachable { error } => format!("UNREACHABLE ({error})"),
    };
    out.push(format!(
        "wal         durable to {}, lag {}; server {server}",
        r.wal.durable_lsn.as_deref().unwrap_or("nothing"),
        r.wal
            .lag_bytes
            .map(|b| if b < 1024 {
                format!("{b} bytes")
            } else {
                format!("{} ({b} bytes)", crate::cmd::info::bytes(b))
            })
            .unwrap_or_else(|| "unknown".into()),
    ));
    if let Some(at) = r.wal.last_archived_at {
        out.push(format!(
            "            last WAL reached the repository {}",
            when(at)
        ));
    }
    out.push(match &r.backup.last {
        Some(b) => format!(
            "backup      last {} ({:?}) at {}, {} old{} (max {}); took {}, added {}; {} in all",
            b.id,
            b.label,
            when(b.stop_time),
            human_seconds(b.age_seconds),
            if r.backup.too_old { " TOO OLD" } else { "" },
            human_seconds(r.backup.max_age_seconds),
            human_seconds(b.duration_seconds),
            crate::cmd::info::bytes(b.added_bytes),
            r.backup.count
        ),
        None => "backup      none".to_string(),
    });
    out.push(format!(
        "retention   window {} restorable, {} configured",
        r.retention
            .guaranteed_seconds
            .map(human_seconds)
            .unwrap_or_else(|| "nothing".into()),
        r.retention
            .configured_seconds
            .map(human_seconds)
            .unwrap_or_else(|| "no window".into())
    ));
    out.push(match &r.verify {
        Some(v) if v.passed => format!("verify      last {} passed", when(v.finished_at)),
        Some(v) => format!(
            "verify      last {} FOUND {} PROBLEM(S)",
            when(v.finished_at),
            v.problems
        ),
        None => "verify      never run".to_string(),
    });
    out.push(match (&r.drill.last_success_at, r.drill.last_passed) {
        (Some(ok), Some(last_ok)) => format!(
            "drill       last passing {}{}{}",
            when(*ok),
            r.drill
                .rto_seconds
                .map(|s| format!(", RTO {s:.1} s"))
                .unwrap_or_default(),
            if last_ok { "" } else { "; the last one FAILED" }
        ),
        (None, Some(_)) => "drill       none passed; the last one FAILED".to_string(),
        _ => "drill       never run".to_string(),
    });
    out.push(match (&r.spool.error, r.spool.files) {
        (Some(e), _) => format!("spool       unreadable: {e}"),
        (None, 0) => "spool       empty".to_string(),
        (None, n) => format!(
            "spool       {n} file(s), {}, oldest {} old",
            crate::cmd::info::bytes(r.spool.bytes),
            human_seconds(r.spool.oldest_seconds)
        ),
    });
    for w in &r.warnings {
        out.push(format!("  WARNING: {}", w.message));
    }
    for n in &r.notes {
        out.push(format!("  note: {n}"));
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::status::assess::tests::{at, facts, limits};
    use crate::status::assess::{assess, Facts};
    use tidemark_store::drill::{DrillRecord, PhaseRecord};

    pub fn drill(passed: bool) -> DrillRecord {
        DrillRecord {
            id: "ab".into(),
            started_at: at("2026-12-06T10:00:00Z"),
            finished_at: at("2026-12-06T10:01:00Z"),
            passed,
            failure: (!passed).then(|| "checks statement 1: returned f".to_string()),
            backup: "20261206T090000Z".into(),
            target: "latest".into(),
            expected_stop: "end of archived WAL".into(),
            expected_lsn: None,
            expected_time: None,
            reached: None,
            phases: vec![
                PhaseRecord {
                    name: "files restored".into(),
                    seconds: 2.5,
                },
                PhaseRecord {
                    name: "accepting writes".into(),
                    seconds: 1.0,
                },
            ],
            rto_seconds: passed.then_some(3.5),
            checks: Vec::new(),
            tidemark_version: "0.1.0".into(),
            pg_version: None,
        }
    }

    fn with_drill(mut f: Facts) -> Facts {
        f.drills.last = Some(drill(true));
        f.drills.last_passed = Some(drill(true));
        f.drills.count = 1;
        f
    }

    #[test]
    fn a_healthy_stanza_reads_in_a_few_lines_and_exits_0() {
        let r = assess(&with_drill(facts()), &limits(), at("2026-12-06T12:00:00Z"));
        let text = render_text(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..4],
            [
                "status      OK  (stanza main, file:///r)",
                "rpo         0 s (target 60.0 min): the repository holds all WAL the server wrote",
                "recoverable to 2026-12-06 11:59:30 UTC (newest archived commit, timeline 1, WAL to 0/4FFFF00)",
                "wal         durable to 0/5000000, lag 0 bytes; server primary at 0/5000000 on timeline 1",
            ]
        );
        assert!(text.contains("backup      last 20261206T110000Z (\"nightly\") at 2026-12-06 11:05:00 UTC, 55.0 min old (max 26.0 h); took 5.0 min, added 100 B; 1 in all"), "{text}");
        assert!(
            text.contains("drill       last passing 2026-12-06 10:00:00 UTC, RTO 3.5 s"),
            "{text}"
        );
        assert!(
            text.contains("retention   window 55.0 min restorable, no window configured"),
            "{text}"
        );
        assert!(text.contains("note: never verified"), "{text}");
        assert_eq!(r.code(), exit::OK);
    }

    #[test]
    fn a_breach_says_so_and_exits_with_the_warning_code() {
        let mut f = with_drill(facts());
        f.server = ServerProbe::Unreachable {
            error: "connection refused".into(),
        };
        let r = assess(&f, &limits(), at("2026-12-06T13:00:00Z"));
        let text = render_text(&r);
        assert!(text.starts_with("status      2 WARNING(S)"), "{text}");
        assert!(
            text.contains("rpo         60.5 min BREACHED (target 60.0 min)"),
            "{text}"
        );
        assert!(
            text.contains("lag unknown; server UNREACHABLE (connection refused)"),
            "{text}"
        );
        assert!(
            text.contains("  WARNING: RPO breached: the newest recoverable commit is 60.5 min old"),
            "{text}"
        );
        assert_eq!(r.code(), exit::STATUS_WARNING);
        let json: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        assert_eq!(json["rpo"]["seconds"], 3630.0);
        assert_eq!(json["warnings"][1]["kind"], "rpo_breached");
        assert_eq!(json["server"]["state"], "unreachable");
        assert_eq!(json["healthy"], false);
    }
}
