//! tidemark's replication-protocol client against real PostgreSQL, through `tidemark init`,
//! which opens a replication connection (as base backups will) and reports in `--json`
//! `"replication": {"ok", "system_identifier", "timeline", "xlogpos"}` or `{"ok": false,
//! "error"}`. A replication failure is a warning: init still succeeds.
//!
//! What is proven here:
//! - scram-sha-256 over TCP with a `REPLICATION` role and a `host replication` line works,
//!   and `IDENTIFY_SYSTEM` reports the cluster's system identifier, timeline and LSN;
//! - a role without `REPLICATION` gets advice naming `ALTER ROLE … REPLICATION`;
//! - a missing `pg_hba.conf` replication line gets advice with the line to add;
//! - a wrong password is an authentication error (here the SQL connection is `trust`, so
//!   only the replication connection checks the password).
//!
//! They skip (or fail under `CI`) when PostgreSQL is missing.

use serde_json::Value;

use crate::harness::pg::{pg_bin, Cluster, ClusterOptions, TestDir};
use crate::harness::tidemark::Tidemark;
use crate::skip_or_fail;

/// Skips the test when the PostgreSQL binaries are missing.
macro_rules! need_pg {
    () => {
        if pg_bin().is_none() {
            skip_or_fail!(
                "PostgreSQL server binaries not found (/usr/lib/postgresql/15/bin, or set PG_BIN)"
            );
        }
    };
}

/// `tidemark init --json` over TCP as `user` with `password`; asserts exit 0 (a
/// replication failure must not fail init) and returns the `replication` object.
fn init_replication(tm: &Tidemark, c: &Cluster, user: &str, password: &str) -> Value {
    let port = c.port().to_string();
    let run = tm.clone().with_env("PGPASSWORD", password).run(&[
        "init",
        "--json",
        "--pg-host",
        "127.0.0.1",
        "--pg-port",
        &port,
        "--pg-user",
        user,
    ]);
    assert_eq!(run.code, 0, "init as {user}: {run:?}");
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("init --json is not JSON ({e}): {run:?}"));
    report["replication"].clone()
}

/// A started cluster with scram-sha-256 everywhere (the superuser's password is
/// `secret`), or with `hba` as its `pg_hba.conf`.
fn cluster(t: &TestDir, hba: Option<&[&str]>) -> Cluster {
    let mut c = Cluster::init(
        t,
        "pg",
        ClusterOptions {
            password: Some("secret".into()),
            ..Default::default()
        },
    );
    if let Some(lines) = hba {
        c.write_hba(lines);
    }
    c.start();
    c
}

fn local_tidemark(t: &TestDir) -> Tidemark {
    let repo = t.mkdir("repo");
    Tidemark::new(t).with_args(["--repo", &format!("file://{}", repo.display())])
}

fn error_of(r: &Value) -> String {
    assert_eq!(r["ok"], false, "{r:#}");
    r["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error text: {r:#}"))
        .to_string()
}

#[test]
fn replication_role_over_scram_identifies_the_system_and_others_get_advice() {
    need_pg!();
    let t = TestDir::new("replication");
    let tm = local_tidemark(&t);
    // initdb's pg_hba.conf has `host replication all 127.0.0.1/32 scram-sha-256`.
    let c = cluster(&t, None);
    c.psql(
        "create role repl login replication password 'repl-pw';
         create role plain login password 'plain-pw';",
    );

    // (a) A REPLICATION role, scram-sha-256 over TCP.
    let r = init_replication(&tm, &c, "repl", "repl-pw");
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["system_identifier"], c.system_identifier(), "{r:#}");
    assert_eq!(r["timeline"], 1, "{r:#}");
    let xlogpos = r["xlogpos"].as_str().expect("xlogpos");
    let (hi, lo) = xlogpos.split_once('/').expect("X/X");
    assert!(
        u32::from_str_radix(hi, 16).is_ok() && u32::from_str_radix(lo, 16).is_ok(),
        "{r:#}"
    );
    assert!(r.get("error").is_none(), "{r:#}");
    // The client said goodbye (Terminate): its walsender goes away, soon.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while c.psql("select count(*) from pg_stat_replication") != "0" {
        assert!(
            std::time::Instant::now() < deadline,
            "the walsender outlived init"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // (b) A role without REPLICATION.
    let r = init_replication(&tm, &c, "plain", "plain-pw");
    let e = error_of(&r);
    assert!(e.contains("ALTER ROLE plain REPLICATION"), "{e}");
}

#[test]
fn missing_hba_line_and_wrong_password_are_reported_with_advice() {
    need_pg!();
    let t = TestDir::new("replication-hba");
    let tm = local_tidemark(&t);
    // SQL over TCP is trusted, so that only the replication connection checks passwords;
    // and only `repl` may open replication connections.
    let c = cluster(
        &t,
        Some(&[
            "local all all scram-sha-256",
            "host all all 127.0.0.1/32 trust",
            "host replication repl 127.0.0.1/32 scram-sha-256",
        ]),
    );
    c.psql("create role repl login replication password 'repl-pw';");

    let r = init_replication(&tm, &c, "repl", "repl-pw");
    assert_eq!(r["ok"], true, "{r:#}");

    // (c) No pg_hba.conf line for the superuser's replication connections.
    let r = init_replication(&tm, &c, "postgres", "secret");
    let e = error_of(&r);
    assert!(e.contains("no pg_hba.conf entry"), "{e}");
    assert!(
        e.contains("host replication postgres 127.0.0.1/32 scram-sha-256"),
        "{e}"
    );

    // (d) A wrong password.
    let r = init_replication(&tm, &c, "repl", "not-the-password");
    let e = error_of(&r);
    assert!(e.contains("authentication failed"), "{e}");
    assert!(
        e.contains("password authentication failed for user \"repl\""),
        "{e}"
    );
}
