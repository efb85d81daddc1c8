//! A store that accepts connections and never answers (a stuck proxy, a half-dead load
//! balancer) must not hold `archive-push` or `archive-get` past `retry_timeout`: PostgreSQL's
//! archiver and recovery wait on them, and `pg_ctl stop -m fast` waits on the archiver.
//!
//! The "store" here is a TCP listener in the test that accepts every connection, reads
//! nothing and writes nothing. Each command must give up within `retry_timeout` plus a small
//! margin (docs/configuration.md: at most 5 s more for a request without object data), with
//! its documented exit code (archive-push 1, so PostgreSQL retries later; archive-get above
//! 125, so recovery stops instead of taking "not found") and one line saying the store did
//! not answer. A file that is not WAL is refused at once, with its own error, whatever the
//! store does.

use std::net::{TcpListener, TcpStream};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::pg::{chown_to_user, pg_bin, Cluster, ClusterOptions, TestDir};
use crate::harness::tidemark::{Run, Tidemark};
use crate::skip_or_fail;

/// The `retry_timeout` the commands run with.
const RETRY_TIMEOUT: u64 = 3;
/// What a command may take beyond `retry_timeout` before it counts as hanging: the last
/// request's floor (5 s, see the S3 backend's module doc) plus process start and slack for
/// a loaded machine.
const MARGIN: Duration = Duration::from_secs(9);
/// How long a run may go before the test kills it (without the fix, one took 901 s).
const KILL_AFTER: Duration = Duration::from_secs(60);

/// A listener on a free loopback port that accepts connections and holds them open without
/// a byte either way, until dropped.
struct SilentStore {
    port: u16,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl SilentStore {
    fn start() -> SilentStore {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                keep.lock().unwrap().push(conn);
            }
        });
        SilentStore { port, held }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn connections(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

/// Runs `child` to its end, killing it after [`KILL_AFTER`]; returns what it did and how
/// long it took.
fn run_bounded(mut child: Child) -> (Run, Duration) {
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > KILL_AFTER {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    let out = child.wait_with_output().unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    };
    (run, took)
}

/// Checks the exit code, the time and the one line of a run against the silent store.
fn assert_gave_up(run: &Run, took: Duration, command: &str, code: i32) {
    assert!(
        took <= Duration::from_secs(RETRY_TIMEOUT) + MARGIN,
        "{command} took {took:?} against a store that never answers (retry_timeout {RETRY_TIMEOUT} s): {run:?}"
    );
    assert_eq!(run.code, code, "{command}: {run:?}");
    let lines = run.stderr_lines();
    assert_eq!(lines.len(), 1, "{command}: one line on stderr: {run:?}");
    assert!(
        lines[0].starts_with(&format!("tidemark: {command}:")),
        "{command}: {lines:?}"
    );
    assert!(
        lines[0].contains("did not answer"),
        "{command}: the line says the store did not answer: {lines:?}"
    );
}

#[test]
fn a_store_that_never_answers_fails_push_and_get_within_retry_timeout() {
    if pg_bin().is_none() {
        skip_or_fail!(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/15/bin, or set PG_BIN)"
        );
    }
    let t = TestDir::new("silent-store");
    // A real WAL segment to push: the first one of a fresh cluster.
    let c = Cluster::init(&t, "pg", ClusterOptions::default());
    let segment = t.path().join("000000010000000000000001");
    std::fs::copy(c.pg_wal().join("000000010000000000000001"), &segment).unwrap();
    chown_to_user(&segment);

    let store = SilentStore::start();
    let tm = Tidemark::new(&t).with_args([
        "--repo",
        "s3://silent/prefix",
        "--s3-endpoint",
        &store.endpoint(),
        "--s3-path-style",
        "true",
        "--s3-region",
        "us-east-1",
        "--s3-access-key-id",
        "id",
        "--s3-secret-access-key",
        "secret",
        "--retry-timeout",
        &RETRY_TIMEOUT.to_string(),
    ]);

    let push = tm
        .command(&["archive-push", &segment.display().to_string()])
        .spawn()
        .unwrap();
    let (run, took) = run_bounded(push);
    assert_gave_up(&run, took, "archive-push", 1);
    assert!(
        store.connections() > 0,
        "archive-push never reached the store"
    );

    // Bad input is bad input whatever the store does: the file is refused at once, with
    // its own error, not after the store's timeout with the store's.
    let not_wal = t.path().join("000000010000000000000002");
    std::fs::write(&not_wal, vec![0u8; 16 << 20]).unwrap();
    chown_to_user(&not_wal);
    let push = tm
        .command(&["archive-push", &not_wal.display().to_string()])
        .spawn()
        .unwrap();
    let (run, took) = run_bounded(push);
    assert_eq!(run.code, 1, "{run:?}");
    let lines = run.stderr_lines();
    assert_eq!(lines.len(), 1, "one line on stderr: {run:?}");
    assert!(
        lines[0].contains("not a WAL segment") && !lines[0].contains("did not answer"),
        "the input's error, not the store's: {lines:?}"
    );
    assert!(
        took < Duration::from_secs(RETRY_TIMEOUT),
        "a file that is not WAL was refused only after {took:?}: it waited for the store"
    );

    let dest = t.path().join("restored");
    let get = tm
        .command(&[
            "archive-get",
            "000000010000000000000001",
            &dest.display().to_string(),
        ])
        .spawn()
        .unwrap();
    let (run, took) = run_bounded(get);
    assert_gave_up(&run, took, "archive-get", 128);
    assert!(!dest.exists(), "archive-get wrote {}", dest.display());
}
