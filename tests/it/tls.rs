//! `pg_sslmode` with real TLS, through `tidemark init --json` (one SQL connection, then one
//! replication connection) against a real PostgreSQL with `ssl = on`.
//!
//! A throwaway CA and server certificates are made with the `openssl` command (skipped, or
//! failed under `CI`, when it is missing). TLS is proven to be in use, not just tolerated:
//! the TLS cluster's `pg_hba.conf` has only `hostssl` lines for TCP (so a plain connection is
//! refused, which the test also shows), and `log_connections` must log "SSL enabled" for
//! both the SQL and the replication connection.
//!
//! What is proven here:
//! - `require` (no root certificate) works for SQL and replication over TLS; so does the
//!   default, `prefer`; `disable` is refused by the `hostssl`-only server;
//! - `verify-full` with the right CA works by IP (`127.0.0.1`, an IP SAN) and by name
//!   (`localhost`); with a wrong CA it fails with a certificate error; `require` with a
//!   root certificate file verifies the chain too (libpq's rule), here a wrong one, given
//!   through `PGSSLROOTCERT`;
//! - `verify-ca` accepts a certificate whose names do not match the host, where
//!   `verify-full` refuses it;
//! - `prefer` against a server that refuses TLS sessions (`hostnossl` lines) retries in
//!   plain text, for SQL and replication, as libpq does;
//! - against `ssl = off`, `require` fails clearly and `prefer` works in plain text.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::pg::{pg_bin, Cluster, ClusterOptions, TestDir};
use crate::harness::tidemark::{Run, Tidemark};
use crate::skip_or_fail;

/// Skips the test when PostgreSQL or the openssl command is missing.
macro_rules! need_pg_and_openssl {
    () => {
        if pg_bin().is_none() {
            skip_or_fail!(
                "PostgreSQL server binaries not found (/usr/lib/postgresql/15/bin, or set PG_BIN)"
            );
        }
        if Command::new("openssl").arg("version").output().is_err() {
            skip_or_fail!("the openssl command is not installed");
        }
    };
}

/// Runs `openssl` in `dir` with `args` (split on spaces: no argument has one).
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args.split_whitespace())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<name>.crt`, `<name>.key`) in `dir`, EC P-256, valid for two days.
pub(crate) fn make_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
             -subj /CN=tidemark-test-{name} -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign -keyout {name}.key -out {name}.crt"
        ),
    );
    dir.join(format!("{name}.crt"))
}

/// A server certificate signed by CA `ca` for the subject alternative names `san`
/// (`DNS:localhost,IP:127.0.0.1`); returns (certificate PEM, key PEM).
fn make_server_cert(dir: &Path, ca: &str, name: &str, san: &str) -> (Vec<u8>, Vec<u8>) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName={san}\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &format!(
            "req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
             -subj /CN=tidemark-test-server -keyout {name}.key -out {name}.csr"
        ),
    );
    openssl(
        dir,
        &format!(
            "x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -set_serial 2 -days 2 \
             -extfile {name}.ext -out {name}.crt"
        ),
    );
    (
        std::fs::read(dir.join(format!("{name}.crt"))).unwrap(),
        std::fs::read(dir.join(format!("{name}.key"))).unwrap(),
    )
}

fn local_tidemark(t: &TestDir) -> Tidemark {
    let repo = t.mkdir("repo");
    Tidemark::new(t)
        .with_args(["--repo", &format!("file://{}", repo.display())])
        .with_env("PGPASSWORD", "secret")
}

/// `tidemark init --json` over TCP to `host` with `args` added.
fn init(tm: &Tidemark, c: &Cluster, host: &str, args: &[&str]) -> Run {
    let port = c.port().to_string();
    let mut all = vec![
        "init",
        "--json",
        "--pg-host",
        host,
        "--pg-port",
        &port,
        "--pg-user",
        "postgres",
    ];
    all.extend_from_slice(args);
    tm.run(&all)
}

/// Asserts that init worked, SQL and replication, and returns its report.
fn init_ok(tm: &Tidemark, c: &Cluster, host: &str, args: &[&str]) -> Value {
    let run = init(tm, c, host, args);
    assert_eq!(run.code, 0, "init {args:?}: {run:?}\n{}", c.log_tail(10));
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("init --json is not JSON ({e}): {run:?}"));
    assert_eq!(report["replication"]["ok"], true, "{report:#}");
    report
}

/// Asserts that init failed and returns its error output.
fn init_fails(tm: &Tidemark, c: &Cluster, host: &str, args: &[&str]) -> String {
    let run = init(tm, c, host, args);
    assert_ne!(run.code, 0, "init {args:?} should fail: {run:?}");
    run.stderr
}

/// The server log's "SSL enabled" connection lines since `from` bytes (SQL, replication).
fn ssl_connections(c: &Cluster, from: usize) -> (usize, usize) {
    let log = std::fs::read_to_string(c.log_path()).unwrap_or_default();
    let new = &log[from.min(log.len())..];
    let sql = new
        .lines()
        .filter(|l| l.contains("connection authorized") && !l.contains("replication connection"))
        .filter(|l| l.contains("SSL enabled"))
        .count();
    let repl = new
        .lines()
        .filter(|l| l.contains("replication connection authorized") && l.contains("SSL enabled"))
        .count();
    (sql, repl)
}

fn log_len(c: &Cluster) -> usize {
    std::fs::metadata(c.log_path())
        .map(|m| m.len() as usize)
        .unwrap_or(0)
}

/// A started scram-sha-256 cluster (superuser password `secret`), with TLS from `cert`
/// and only `hostssl` lines for TCP when given, else with `ssl = off`.
fn cluster(t: &TestDir, cert: Option<(Vec<u8>, Vec<u8>)>) -> Cluster {
    let mut c = Cluster::init(
        t,
        "pg",
        ClusterOptions {
            password: Some("secret".into()),
            settings: vec![("log_connections".into(), "on".into())],
            ..Default::default()
        },
    );
    if let Some((crt, key)) = cert {
        c.enable_ssl(&crt, &key);
        c.write_hba(&[
            "local all all scram-sha-256",
            "hostssl all all 127.0.0.1/32 scram-sha-256",
            "hostssl replication all 127.0.0.1/32 scram-sha-256",
        ]);
    }
    c.start();
    c
}

#[test]
fn tls_modes_against_a_server_with_ssl_on() {
    need_pg_and_openssl!();
    let t = TestDir::new("tls");
    // Read by tidemark, which runs as the test user.
    let certs = t.mkdir("certs");
    let ca = make_ca(&certs, "ca");
    let wrong_ca = make_ca(&certs, "wrong-ca");
    let server = make_server_cert(&certs, "ca", "server", "DNS:localhost,IP:127.0.0.1");
    let misnamed = make_server_cert(&certs, "ca", "misnamed", "DNS:db.invalid");
    for f in std::fs::read_dir(&certs).unwrap() {
        crate::harness::pg::chown_to_user(&f.unwrap().path());
    }
    let c = cluster(&t, Some(server));
    let tm = local_tidemark(&t);
    let ca = ca.display().to_string();
    let wrong_ca = wrong_ca.display().to_string();

    // require, no root certificate: encrypted, not verified. Both connections use TLS.
    let before = log_len(&c);
    init_ok(&tm, &c, "127.0.0.1", &["--pg-sslmode", "require"]);
    assert_eq!(ssl_connections(&c, before), (1, 1), "{}", c.log_tail(10));
    // prefer (the default) takes TLS when offered.
    let before = log_len(&c);
    init_ok(&tm, &c, "127.0.0.1", &[]);
    assert_eq!(ssl_connections(&c, before), (1, 1), "{}", c.log_tail(10));
    // The server really refuses plain connections.
    let e = init_fails(&tm, &c, "127.0.0.1", &["--pg-sslmode", "disable"]);
    assert!(e.contains("no pg_hba.conf entry"), "{e}");

    // verify-full with the right CA, by IP address and by name.
    for host in ["127.0.0.1", "localhost"] {
        let before = log_len(&c);
        init_ok(
            &tm,
            &c,
            host,
            &["--pg-sslmode", "verify-full", "--pg-sslrootcert", &ca],
        );
        assert_eq!(ssl_connections(&c, before), (1, 1), "{}", c.log_tail(10));
    }
    // ... with a wrong CA: a certificate error.
    let e = init_fails(
        &tm,
        &c,
        "127.0.0.1",
        &["--pg-sslmode", "verify-full", "--pg-sslrootcert", &wrong_ca],
    );
    assert!(e.contains("certificate"), "{e}");
    // require with a root certificate file checks the chain (libpq's rule): PGSSLROOTCERT.
    let e = init_fails(
        &tm.clone().with_env("PGSSLROOTCERT", &wrong_ca),
        &c,
        "127.0.0.1",
        &["--pg-sslmode", "require"],
    );
    assert!(e.contains("certificate"), "{e}");
    // verify-* without any root certificate file: the error names where it looked.
    let e = init_fails(&tm, &c, "127.0.0.1", &["--pg-sslmode", "verify-ca"]);
    assert!(e.contains(".postgresql/root.crt"), "{e}");

    // A certificate from the right CA for another name: verify-ca accepts it, verify-full
    // does not. PostgreSQL reloads its certificate files on SIGHUP.
    let (crt, key) = misnamed;
    c.enable_ssl(&crt, &key);
    c.psql("select pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let e = init_fails(
        &tm,
        &c,
        "127.0.0.1",
        &["--pg-sslmode", "verify-full", "--pg-sslrootcert", &ca],
    );
    assert!(e.contains("certificate"), "{e}");
    init_ok(
        &tm,
        &c,
        "127.0.0.1",
        &["--pg-sslmode", "verify-ca", "--pg-sslrootcert", &ca],
    );

    // A server that takes TLS but turns TLS sessions down (`hostnossl` only): prefer retries
    // in plain text, as libpq does, for SQL and replication alike; require cannot.
    c.write_hba(&[
        "local all all scram-sha-256",
        "hostnossl all all 127.0.0.1/32 scram-sha-256",
        "hostnossl replication all 127.0.0.1/32 scram-sha-256",
    ]);
    c.psql("select pg_reload_conf()");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = log_len(&c);
    init_ok(&tm, &c, "127.0.0.1", &["--pg-sslmode", "prefer"]);
    assert_eq!(ssl_connections(&c, before), (0, 0), "{}", c.log_tail(10));
    let e = init_fails(&tm, &c, "127.0.0.1", &["--pg-sslmode", "require"]);
    assert!(e.contains("no pg_hba.conf entry"), "{e}");
}

#[test]
fn tls_modes_against_a_server_with_ssl_off() {
    need_pg_and_openssl!();
    let t = TestDir::new("tls-off");
    let c = cluster(&t, None);
    let tm = local_tidemark(&t);
    let e = init_fails(&tm, &c, "127.0.0.1", &["--pg-sslmode", "require"]);
    assert!(e.contains("does not support TLS"), "{e}");
    assert!(e.contains("turn ssl on"), "{e}");
    let before = log_len(&c);
    init_ok(&tm, &c, "127.0.0.1", &["--pg-sslmode", "prefer"]);
    assert_eq!(ssl_connections(&c, before), (0, 0), "{}", c.log_tail(10));
    // Unix sockets are plain whatever the mode, as in libpq ("sslmode is ignored for Unix
    // domain socket communication").
    let sock = c.socket_dir().display().to_string();
    init_ok(&tm, &c, &sock, &["--pg-sslmode", "verify-full"]);
}
