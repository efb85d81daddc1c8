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
//!   issue 16, and the values match `status --json` taken alongside (S3, with a drill on
//!   record); a non-loopback `metrics_listen` stops the agent at start (exit 2), and no
//!   other command, unless `metrics_allow_remote`; there, a scheduled backup that fails
//!   (no server) is counted in `tidemark_job_failures_total` (local).
//! - (archive/spool.rs) status counts spooled files from their bodies, a lost queue
//!   included.

use std::time::{Duration, Instant};

use serde_json::Value;
use tidemark_agent::status::metrics::ISSUE_METRICS;
use tidemark_pg::Lsn;

use crate::backup::{backup_ok, local_tidemark, pg_args, s3_tidemark, wait_until};
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

/// A free loopback port (bound then released: the agent binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `GET path` on 127.0.0.1:`port`: the status code and the body, `None` when nothing
/// answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// A running `tidemark agent`, its stderr collected as it comes; stopped with SIGTERM.
struct Agent {
    child: std::process::Child,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Agent {
    /// Starts `tidemark <args> agent` with a state folder of its own in `t`.
    fn start(t: &TestDir, tm: &Tidemark, args: &[String]) -> Agent {
        let state = t.mkdir("agent-state");
        let mut all: Vec<String> = vec![
            "--state-path".into(),
            state.display().to_string(),
            "--log-level".into(),
            "info".into(),
        ];
        all.extend(args.iter().cloned());
        all.push("agent".into());
        let mut child = tm.command(&all).spawn().expect("start the agent");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Agent { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// SIGTERM, then the exit code (within 20 s).
    fn stop(&mut self) -> i32 {
        // SAFETY: a plain kill(2) of our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code().unwrap_or(-1);
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the agent did not stop on SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The samples of a Prometheus text page, by `name{labels}`.
fn samples(page: &str) -> std::collections::BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            let value = match value {
                "NaN" => f64::NAN,
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("{l:?}")),
            };
            (key.to_string(), value)
        })
        .collect()
}

fn epoch(v: &Value) -> f64 {
    let t: chrono::DateTime<chrono::Utc> = v
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap();
    t.timestamp_micros() as f64 / 1e6
}

#[test]
fn agent_metrics_s3_serve_every_metric_matching_status() {
    need_pg!();
    let Some(server) = S3Server::start_new() else {
        skip_or_fail!("s3s-fs not found (cargo install s3s-fs --features binary)");
    };
    let t = TestDir::new("status-metrics-s3");
    let tm = s3_tidemark(&t, &server);
    // The drill's restored server reads the config (credentials) through restore_command.
    let config = t.path().join("tidemark.toml");
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (c, _) = stanza_with_archived_markers(&t, &tm);
    let drills = t.mkdir("drills");
    let drill = tm.run(&[
        "--drill-path",
        drills.to_str().unwrap(),
        "drill",
        "--json",
        "--target",
        "immediate",
        "--pg-bin",
        pg_bin().unwrap().to_str().unwrap(),
    ]);
    assert_eq!(drill.code, 0, "{drill:?}");

    let port = free_port();
    let mut args = pg_args(&c);
    args.extend(["--metrics-listen".into(), format!("127.0.0.1:{port}")]);
    let mut agent = Agent::start(&t, &tm, &args);
    let mut page = None;
    wait_until("the metrics endpoint", Duration::from_secs(30), || {
        page = http_get(port, "/metrics").filter(|(code, _)| *code == 200);
        page.is_some()
    });
    let (code, s, run) = status(&tm, &c, &[]);
    let (_, page) = page.unwrap();
    assert_eq!(code, 0, "{run:?}");
    let m = samples(&page);
    for name in ISSUE_METRICS {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert!(
            page.contains(&format!("# HELP {name} ")),
            "{name}: no HELP\n{page}"
        );
        assert!(
            page.contains(&format!("# TYPE {name} {kind}\n")),
            "{name}: no TYPE\n{page}"
        );
        assert!(
            m.keys().any(|k| k.starts_with(&format!("{name}{{"))),
            "{name}: no sample\n{page}"
        );
    }
    let get = |key: &str| -> f64 {
        *m.get(key)
            .unwrap_or_else(|| panic!("no sample {key} in\n{page}"))
    };
    let close = |a: f64, b: f64, tolerance: f64, what: &str| {
        assert!(
            (a - b).abs() <= tolerance,
            "{what}: metrics {a}, status {b}"
        );
    };
    let st = "stanza=\"main\"";
    assert_eq!(
        get(&format!("tidemark_wal_durable_lsn{{{st}}}")),
        lsn(&s["wal"]["durable_lsn_bytes"]) as f64
    );
    let t1 = &s["timelines"][0];
    close(
        get(&format!(
            "tidemark_pitr_latest_timestamp{{{st},timeline=\"1\"}}"
        )),
        epoch(&t1["pitr_latest"]),
        1e-3,
        "pitr latest",
    );
    close(
        get(&format!(
            "tidemark_pitr_earliest_timestamp{{{st},timeline=\"1\"}}"
        )),
        epoch(&t1["pitr_earliest"]),
        1e-3,
        "pitr earliest",
    );
    assert_eq!(
        get(&format!("tidemark_wal_gap_segments{{{st},timeline=\"1\"}}")),
        0.0
    );
    let last = &s["backup"]["last"];
    close(
        get(&format!("tidemark_backup_last_success_timestamp{{{st}}}")),
        epoch(&last["stop_time"]),
        1e-3,
        "backup time",
    );
    close(
        get(&format!("tidemark_backup_duration_seconds{{{st}}}")),
        last["duration_seconds"].as_f64().unwrap(),
        1e-6,
        "backup duration",
    );
    assert_eq!(
        get(&format!("tidemark_backup_added_bytes{{{st}}}")),
        last["added_bytes"].as_f64().unwrap()
    );
    assert!(last["added_bytes"].as_u64().unwrap() > 0);
    // Assessed a moment apart: the window grows with the clock.
    close(
        get(&format!(
            "tidemark_retention_window_seconds{{{st},window=\"guaranteed\"}}"
        )),
        s["retention"]["guaranteed_seconds"].as_f64().unwrap(),
        30.0,
        "retention window",
    );
    close(
        get(&format!("tidemark_drill_last_success_timestamp{{{st}}}")),
        epoch(&s["drill"]["last_success_at"]),
        1e-3,
        "drill",
    );
    close(
        get(&format!(
            "tidemark_drill_rto_seconds{{{st},phase=\"total\"}}"
        )),
        s["drill"]["rto_seconds"].as_f64().unwrap(),
        1e-9,
        "RTO",
    );
    for phase in s["drill"]["phases"].as_array().unwrap() {
        let name = phase["name"].as_str().unwrap();
        close(
            get(&format!(
                "tidemark_drill_rto_seconds{{{st},phase=\"{name}\"}}"
            )),
            phase["seconds"].as_f64().unwrap(),
            1e-9,
            name,
        );
    }
    assert_eq!(
        get(&format!("tidemark_spool_files{{{st}}}")),
        s["spool"]["files"].as_f64().unwrap()
    );
    assert_eq!(get(&format!("tidemark_spool_oldest_seconds{{{st}}}")), 0.0);
    for job in ["backup", "verify", "drill", "expire"] {
        assert_eq!(
            get(&format!(
                "tidemark_job_failures_total{{{st},job=\"{job}\",kind=\"failed\"}}"
            )),
            0.0
        );
    }
    // The RPO and the lag move with the server's background WAL: equal when nothing is
    // at risk, else within the seconds between the two reads.
    let rpo = get(&format!("tidemark_rpo_seconds{{{st}}}"));
    let status_rpo = s["rpo"]["seconds"].as_f64().unwrap();
    if s["rpo"]["wal_at_risk"] == false && rpo == 0.0 {
        assert_eq!(status_rpo, 0.0);
    } else {
        close(rpo, status_rpo, 30.0, "RPO");
    }
    let lag = get(&format!("tidemark_wal_lag_bytes{{{st}}}"));
    assert!(lag >= 0.0 && lag < SEGMENT as f64, "lag {lag}");
    assert!(lsn(&s["wal"]["lag_bytes"]) < SEGMENT);
    assert_eq!(get(&format!("tidemark_server_up{{{st}}}")), 1.0);

    assert_eq!(http_get(port, "/nope").map(|r| r.0), Some(404));
    assert_eq!(agent.stop(), 0, "{}", agent.log());
}

#[test]
fn agent_local_rpo_watch_nudges_warns_once_and_clears() {
    need_pg!();
    let t = TestDir::new("status-watch");
    let tm = local_tidemark(&t);
    let (c, _) = stanza_with_archived_markers(&t, &tm);
    let mut args = pg_args(&c);
    args.extend([
        "--rpo-target".into(),
        "3s".into(),
        "--metrics-listen".into(),
        format!("127.0.0.1:{}", free_port()),
    ]);
    let mut agent = Agent::start(&t, &tm, &args);
    let newest = |s: &Value| time_text(&s["rpo"]["newest_commit"]);

    // A write left in the current segment: the watch closes the segment (the test does
    // not), archive_command takes it, and the commit becomes recoverable.
    let m3 = commit_marker(&c, 3);
    let mut last = Value::Null;
    wait_until(
        "the agent's pg_switch_wal() nudge",
        Duration::from_secs(20),
        || {
            last = status(&tm, &c, &["--rpo-target", "3s"]).1;
            newest(&last) == rfc3339_normalized(&rfc3339(m3.commit))
        },
    );
    assert!(
        agent.log().contains("rpo watch: pg_switch_wal() at "),
        "{}",
        agent.log()
    );

    // Archiving broken: the next write cannot reach the repository, the RPO passes 3 s.
    c.psql("alter system set archive_command = 'false'");
    c.psql("select pg_reload_conf()");
    let m4 = commit_marker(&c, 4);
    let mut breached = Value::Null;
    wait_until("the RPO breach", Duration::from_secs(20), || {
        let (code, s, _) = status(&tm, &c, &["--rpo-target", "3s"]);
        breached = s;
        code == 8 && kinds(&breached).contains(&"rpo_breached".to_string())
    });
    assert_eq!(newest(&breached), rfc3339_normalized(&rfc3339(m3.commit)));
    assert!(
        breached["rpo"]["seconds"].as_f64().unwrap() > 3.0,
        "{breached:#}"
    );
    wait_until("the watch's warning", Duration::from_secs(10), || {
        agent
            .log()
            .contains("rpo watch: rpo_breached: RPO breached")
    });
    // Logged once, not at every tick (the watch ticks every second at this target).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        agent.log().matches("rpo watch: rpo_breached:").count(),
        1,
        "{}",
        agent.log()
    );

    // Archiving repaired: the archiver retries what waits (a reload wakes it), the
    // watch's switch gets marker 4 out, the warning clears.
    c.psql("alter system reset archive_command");
    c.psql("select pg_reload_conf()");
    wait_until("the RPO to recover", Duration::from_secs(30), || {
        let (code, s, _) = status(&tm, &c, &["--rpo-target", "3s"]);
        last = s;
        if code != 0 {
            let _ = c.try_psql("select pg_reload_conf()");
        }
        code == 0
    });
    assert_eq!(newest(&last), rfc3339_normalized(&rfc3339(m4.commit)));
    wait_until("the watch's all-clear", Duration::from_secs(10), || {
        agent.log().contains("rpo watch: rpo_breached cleared")
    });
    assert_eq!(agent.stop(), 0, "{}", agent.log());
}

#[test]
fn agent_refuses_a_non_loopback_metrics_address_unless_allowed() {
    let t = TestDir::new("status-listen");
    let tm = local_tidemark(&t);
    tm.init_synthetic(
        &t,
        "pgdata",
        7_000_000_000_000_000_077,
        tidemark_pg::SegmentSize::DEFAULT,
    );
    let state = t.mkdir("agent-state");
    let port = free_port();
    let exposed = format!("0.0.0.0:{port}");
    let refused = tm.run(&[
        "--state-path",
        state.to_str().unwrap(),
        "--metrics-listen",
        &exposed,
        "agent",
    ]);
    assert_eq!(refused.code, 2, "{refused:?}");
    let lines = refused.stderr_lines();
    assert_eq!(lines.len(), 1, "{refused:?}");
    assert!(
        lines[0].starts_with("tidemark: agent: metrics_listen 0.0.0.0:")
            && lines[0].contains("metrics_allow_remote = true"),
        "{lines:?}"
    );
    // Other commands are not stopped by it: archive-push must never be.
    let info = tm.run(&["--metrics-listen", &exposed, "info"]);
    assert_eq!(info.code, 0, "{info:?}");

    // Allowed explicitly: it serves there (reached here through loopback), with no
    // server to ask (none is configured at this port).
    let mut agent = Agent::start(
        &t,
        &tm,
        &[
            "--metrics-listen".into(),
            exposed,
            "--metrics-allow-remote".into(),
            "true".into(),
            "--pg-host".into(),
            "127.0.0.1".into(),
            "--pg-port".into(),
            free_port().to_string(),
            // A backup every second, which fails (no server): the job board's counter.
            "--backup-schedule".into(),
            "1s".into(),
        ],
    );
    let mut page = None;
    let failed = "tidemark_job_failures_total{stanza=\"main\",job=\"backup\",kind=\"failed\"}";
    wait_until("a failed backup counted", Duration::from_secs(30), || {
        page = http_get(port, "/metrics").filter(|(code, _)| *code == 200);
        page.as_ref()
            .is_some_and(|(_, p)| samples(p).get(failed).is_some_and(|n| *n >= 1.0))
    });
    let m = samples(&page.unwrap().1);
    assert_eq!(m["tidemark_server_up{stanza=\"main\"}"], 0.0);
    assert_eq!(m["tidemark_rpo_seconds{stanza=\"main\"}"], f64::INFINITY);
    assert_eq!(
        m["tidemark_job_failures_total{stanza=\"main\",job=\"verify\",kind=\"failed\"}"],
        0.0
    );
    assert_eq!(agent.stop(), 0, "{}", agent.log());
}
