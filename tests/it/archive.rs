//! `archive-push` and `archive-get` end to end: real PostgreSQL clusters archiving through
//! `archive_command` into a local or S3 (s3s-fs) repository, and the built binary run the
//! way PostgreSQL runs it.
//!
//! What is proven here (DESIGN.md's promises 1-4):
//! - every segment PostgreSQL archives comes back byte-identical through `archive-get`,
//!   and `info --json` counts it: local and S3 backends, 1, 16 and 64 MiB segments (64 MiB
//!   takes the streaming path);
//! - an S3 outage makes PostgreSQL keep its `.ready` files and retry, and nothing is lost
//!   once the server is back; `archive-get` says 128 (not "not found") while it is down;
//! - an `archive-push` killed with SIGKILL mid-write leaves nothing indexed and no object
//!   that does not decode, and a later push completes;
//! - bad input gets its exit code, one `tidemark: ` line on stderr, and changes nothing in
//!   the repository; `archive-get` exit codes follow PostgreSQL's `restore_command` rules;
//! - nothing is overwritten: a repeat push succeeds, different content under an archived
//!   name (segment or `.history`) exits 4 and is quarantined;
//! - `tidemark init` records the cluster over TCP with scram-sha-256, and refuses another
//!   cluster for the same stanza (exit 3).
//!
//! Each test owns its folder, cluster(s), port and repository, so they run in parallel.
//! They skip (or fail under `CI`) when PostgreSQL or s3s-fs is missing.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use tidemark_pg::{SegmentSize, TimelineId, WalSegmentName};
use tidemark_store::codec::{self, Digest};
use tidemark_store::Key;

use crate::harness::pg::{chown_to_user, pg_bin, Cluster, ClusterOptions, TestDir};
use crate::harness::s3::{unique_prefix, S3Server};
use crate::harness::tidemark::{
    repo_snapshot, same_content, sha256_file, snapshot_diff, Run, Tidemark,
};
use crate::skip_or_fail;

/// How long PostgreSQL may take to archive what a test asked for.
const ARCHIVE_WAIT: Duration = Duration::from_secs(90);

const MIB: u64 = 1 << 20;

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

/// Starts an S3 server, or skips the test.
macro_rules! s3_server {
    () => {
        match S3Server::start_new() {
            Some(s) => s,
            None => skip_or_fail!(
                "s3s-fs not found (install: cargo install s3s-fs@0.14.1 --features binary --locked)"
            ),
        }
    };
}

/// A runner for a fresh local repository `repo/` in the test folder.
fn local_tidemark(t: &TestDir) -> (Tidemark, PathBuf) {
    let repo = t.mkdir("repo");
    let tm = Tidemark::new(t).with_args(["--repo", &format!("file://{}", repo.display())]);
    (tm, repo)
}

/// A runner for a fresh prefix of `server`'s bucket.
fn s3_tidemark(t: &TestDir, server: &S3Server) -> Tidemark {
    s3_tidemark_at(t, server, &unique_prefix("archive"))
}

/// A runner for the repository under `prefix` in `server`'s bucket.
fn s3_tidemark_at(t: &TestDir, server: &S3Server, prefix: &str) -> Tidemark {
    Tidemark::new(t).with_args([
        "--repo",
        &server.url(prefix),
        "--s3-endpoint",
        &server.endpoint(),
        "--s3-path-style",
        "true",
        "--s3-region",
        "us-east-1",
        "--s3-access-key-id",
        server.access_key(),
        "--s3-secret-access-key",
        server.secret_key(),
    ])
}

/// A started cluster whose `archive_command` is `tidemark <tm's options> <extra> archive-push %p`.
fn archiving_cluster(
    t: &TestDir,
    tm: &Tidemark,
    segsize_mb: Option<u32>,
    extra: &[&str],
) -> Cluster {
    let mut command = tm.shell_prefix();
    for e in extra {
        command.push(' ');
        command.push_str(e);
    }
    command.push_str(" archive-push %p");
    let mut c = Cluster::init(
        t,
        "pg",
        ClusterOptions {
            wal_segsize_mb: segsize_mb,
            archive_command: Some(command),
            ..Default::default()
        },
    );
    tm.init_stanza(&c);
    c.start();
    c
}

/// A started cluster that archives with `cp` into `spool/` (so a test holds real segments
/// without having pushed them anywhere yet); `n` segments are completed and archived.
fn spooling_cluster(t: &TestDir, name: &str, n: usize) -> (Cluster, PathBuf, Vec<String>) {
    let spool = t.mkdir(&format!("{name}-spool"));
    let mut c = Cluster::init(
        t,
        name,
        ClusterOptions {
            archive_command: Some(format!("test ! -f {0}/%f && cp %p {0}/%f", spool.display())),
            ..Default::default()
        },
    );
    c.start();
    let names = switch_segments(&c, n, 2000);
    c.wait_archived(names.last().unwrap(), ARCHIVE_WAIT);
    (c, spool, names)
}

/// Completes `n` segments, each after a workload of `rows` rows; returns their names.
fn switch_segments(c: &Cluster, n: usize, rows: u32) -> Vec<String> {
    (0..n)
        .map(|_| {
            c.workload(rows);
            c.switch_wal()
        })
        .collect()
}

/// Fetches every segment PostgreSQL has archived and compares it with `pg_wal`'s copy.
/// Returns the names checked.
fn assert_every_archived_segment_round_trips(
    t: &TestDir,
    tm: &Tidemark,
    c: &Cluster,
) -> Vec<String> {
    let done = c.archived_segments();
    assert!(!done.is_empty(), "PostgreSQL archived nothing");
    let restore = t.mkdir("restore");
    for name in &done {
        let dest = restore.join(name);
        let run = tm.run(&["archive-get", name, &dest.display().to_string()]);
        assert_eq!(run.code, 0, "archive-get {name}: {run:?}");
        assert!(
            same_content(&dest, &c.pg_wal().join(name)),
            "{name} came back different"
        );
        std::fs::remove_file(&dest).unwrap();
    }
    let left: Vec<_> = std::fs::read_dir(&restore)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "archive-get left files behind: {left:?}");
    done
}

/// A JSON value that may be a number or a decimal string (a system identifier).
fn as_decimal(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("expected a number or a string, got {other}"),
    }
}

/// `info --json` counts exactly the contiguous segments `done`, for this cluster.
fn assert_info_counts(tm: &Tidemark, c: &Cluster, done: &[String], segment_bytes: u64) {
    let info = tm.info();
    let ctx = || format!("info --json: {info:#}");
    assert_eq!(info["stanza"], "main", "{}", ctx());
    assert_eq!(info["format"], 1, "{}", ctx());
    let cluster = &info["cluster"];
    assert_eq!(
        as_decimal(&cluster["system_identifier"]),
        c.system_identifier(),
        "{}",
        ctx()
    );
    assert_eq!(cluster["pg_version"], 15, "{}", ctx());
    assert_eq!(cluster["wal_segment_size"], segment_bytes, "{}", ctx());
    let wal = &info["wal"];
    let n = done.len() as u64;
    assert_eq!(wal["segments"], n, "{}", ctx());
    for kind in ["partial", "backup", "history"] {
        assert_eq!(wal[kind], 0, "{kind}: {}", ctx());
    }
    assert_eq!(wal["raw_bytes"], n * segment_bytes, "{}", ctx());
    assert!(
        wal["stored_bytes"].as_u64().is_some_and(|b| b > 0),
        "{}",
        ctx()
    );
    assert_eq!(
        wal["newest"]["name"],
        done.last().unwrap().as_str(),
        "{}",
        ctx()
    );
    let timelines = wal["timelines"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", ctx()));
    assert_eq!(timelines.len(), 1, "{}", ctx());
    let tl = &timelines[0];
    assert_eq!(tl["timeline"], 1, "{}", ctx());
    assert_eq!(tl["first"], done[0].as_str(), "{}", ctx());
    assert_eq!(tl["last"], done.last().unwrap().as_str(), "{}", ctx());
    assert_eq!(tl["segments"], n, "{}", ctx());
    assert_eq!(tl["ranges"].as_array().map(Vec::len), Some(1), "{}", ctx());
    assert_eq!(tl["gaps"].as_array().map(Vec::len), Some(0), "{}", ctx());
    assert_eq!(info["quarantined"], 0, "{}", ctx());
}

/// The shared body of the round-trip tests.
fn round_trip(t: &TestDir, tm: &Tidemark, segsize_mb: Option<u32>, switches: usize) {
    let c = archiving_cluster(t, tm, segsize_mb, &[]);
    let names = switch_segments(&c, switches, 2000);
    c.wait_archived(names.last().unwrap(), ARCHIVE_WAIT);
    let done = assert_every_archived_segment_round_trips(t, tm, &c);
    for name in &names {
        assert!(
            done.contains(name),
            "{name} not among the archived {done:?}"
        );
    }
    let segment_bytes = u64::from(segsize_mb.unwrap_or(16)) * MIB;
    assert_info_counts(tm, &c, &done, segment_bytes);
}

#[test]
fn archived_wal_round_trips_local() {
    need_pg!();
    let t = TestDir::new("roundtrip-local");
    let (tm, _repo) = local_tidemark(&t);
    round_trip(&t, &tm, None, 3);
}

#[test]
fn archived_wal_round_trips_s3() {
    need_pg!();
    let server = s3_server!();
    let t = TestDir::new("roundtrip-s3");
    let tm = s3_tidemark(&t, &server);
    round_trip(&t, &tm, None, 3);
}

#[test]
fn one_mib_segments_round_trip() {
    need_pg!();
    let t = TestDir::new("segsize-1");
    let (tm, _repo) = local_tidemark(&t);
    round_trip(&t, &tm, Some(1), 4);
}

#[test]
fn sixty_four_mib_segments_round_trip_through_the_streaming_path() {
    need_pg!();
    let t = TestDir::new("segsize-64");
    let (tm, _repo) = local_tidemark(&t);
    round_trip(&t, &tm, Some(64), 1);
}

#[test]
fn s3_outage_while_archiving_loses_nothing() {
    need_pg!();
    let mut server = s3_server!();
    let t = TestDir::new("s3-outage");
    let tm = s3_tidemark(&t, &server);
    let c = archiving_cluster(&t, &tm, None, &["--retry-timeout", "2"]);
    let first = switch_segments(&c, 1, 1000);
    c.wait_archived(&first[0], ARCHIVE_WAIT);

    server.stop();
    let before = c.archiver_stats();
    let waiting = switch_segments(&c, 2, 1000);
    let deadline = Instant::now() + ARCHIVE_WAIT;
    while c.archiver_stats().failed_count <= before.failed_count {
        assert!(
            Instant::now() < deadline,
            "no failed archive attempt while S3 is down: {:?}",
            c.archiver_stats()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready = c.status_files("ready");
    for name in &waiting {
        assert!(
            ready.contains(name),
            "{name} should wait in archive_status: ready {ready:?}"
        );
        assert!(
            !c.archived_segments().contains(name),
            "{name} marked done while S3 is down"
        );
    }

    // While the repository is unreachable, restore_command must not say "not found".
    let dest = t.mkdir("restore-down").join(&first[0]);
    let run = tm.run(&[
        "--retry-timeout",
        "1",
        "archive-get",
        &first[0],
        &dest.display().to_string(),
    ]);
    assert_eq!(run.code, 128, "archive-get with S3 down: {run:?}");
    assert_one_tidemark_line(&run, "");
    assert!(
        !dest.exists(),
        "archive-get wrote {} with S3 down",
        dest.display()
    );

    server.start();
    let after = switch_segments(&c, 1, 1000);
    c.wait_archived(&after[0], ARCHIVE_WAIT);
    let done = assert_every_archived_segment_round_trips(&t, &tm, &c);
    for name in waiting.iter().chain(&first).chain(&after) {
        assert!(
            done.contains(name),
            "{name} not archived after the outage: {done:?}"
        );
    }
    let still_ready = c.status_files("ready");
    assert!(
        waiting.iter().all(|n| !still_ready.contains(n)),
        "still waiting: {still_ready:?}"
    );
    assert_info_counts(&tm, &c, &done, 16 * MIB);
}

/// Writes a segment-shaped file for PostgreSQL 15 (as `pg/src/walfile.rs`'s tests do):
/// every 8 KiB page has a header with its own address, page 0 the long header, and the
/// rest of each page is pseudo-random, so that it does not compress and takes time.
fn write_synthetic_segment(path: &Path, name: &WalSegmentName, size: SegmentSize, sysid: u64) {
    const PAGE: usize = 8192;
    let start = name.start_lsn(size).unwrap().0;
    let mut out = std::io::BufWriter::with_capacity(4 << 20, std::fs::File::create(path).unwrap());
    let mut state = sysid ^ 0x9E37_79B9_7F4A_7C15;
    let mut page = vec![0u8; PAGE];
    for i in 0..(size.bytes() as usize / PAGE) {
        for word in page.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        page[2..4].copy_from_slice(&(if i == 0 { 2u16 } else { 0 }).to_le_bytes());
        page[4..8].copy_from_slice(&name.timeline.0.to_le_bytes());
        page[8..16].copy_from_slice(&(start + (i * PAGE) as u64).to_le_bytes());
        page[16..24].fill(0);
        if i == 0 {
            page[24..32].copy_from_slice(&sysid.to_le_bytes());
            page[32..36].copy_from_slice(&(size.bytes() as u32).to_le_bytes());
            page[36..40].copy_from_slice(&(PAGE as u32).to_le_bytes());
        }
        out.write_all(&page).unwrap();
    }
    out.flush().unwrap();
    drop(out);
    chown_to_user(path);
}

/// Regular files under `dir` (recursively) whose name does not start with `.tmp-`.
fn objects_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(objects_under(&p));
        } else if !e.file_name().to_string_lossy().starts_with(".tmp-") {
            out.push(p);
        }
    }
    out
}

/// Temporary files (`.tmp-…`) anywhere under `dir`, with their sizes.
fn temp_files(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(temp_files(&p));
        } else if e.file_name().to_string_lossy().starts_with(".tmp-") {
            out.insert(p, e.metadata().map(|m| m.len()).unwrap_or(0));
        }
    }
    out
}

/// After an interrupted push: every blob decodes to its name, the records read (`info`),
/// and `name` is either absent (`archive-get` says so) or whole.
fn assert_repository_consistent(
    t: &TestDir,
    tm: &Tidemark,
    repo: &Path,
    name: &str,
    original: &Path,
) {
    for blob in objects_under(&repo.join("blobs")) {
        let rel = blob.strip_prefix(repo).unwrap().display().to_string();
        let hex = blob.file_name().unwrap().to_str().unwrap();
        let digest: Digest = hex
            .parse()
            .unwrap_or_else(|e| panic!("{rel} is not named by a digest: {e}"));
        let stored = std::fs::read(&blob).unwrap();
        if let Err(e) = codec::decode(&Key::new(rel.clone()).unwrap(), digest, &stored) {
            panic!("{rel} is listed but does not decode: {e}");
        }
    }
    let info = tm.info();
    let indexed = objects_under(&repo.join("stanzas/main/wal"))
        .iter()
        .any(|p| p.file_name().unwrap().to_string_lossy().starts_with(name));
    let dest = t.path().join("restore").join(name);
    let run = tm.run(&["archive-get", name, &dest.display().to_string()]);
    if indexed {
        assert_eq!(
            run.code, 0,
            "{name} is indexed but archive-get fails: {run:?}"
        );
        assert!(
            same_content(&dest, original),
            "{name} indexed with other content"
        );
        std::fs::remove_file(&dest).unwrap();
    } else {
        assert_eq!(
            run.code, 1,
            "{name} not indexed: archive-get should say not found: {run:?}\n{info:#}"
        );
        assert_eq!(run.stderr, "", "not found is quiet");
    }
    assert!(!dest.exists());
}

/// When a killed push is killed.
#[derive(Clone, Copy, Debug)]
enum KillAt {
    /// After a delay: while the file is read and checked, or early in the upload.
    Delay(Duration),
    /// As soon as a new temporary file appears in the repository: the upload has begun.
    UploadStarts,
    /// When a new temporary file has grown to this many bytes: in the middle of the upload.
    UploadReaches(u64),
}

#[test]
fn archive_push_killed_mid_write_leaves_no_trace() {
    let t = TestDir::new("kill");
    let (tm, repo) = local_tidemark(&t);
    t.mkdir("restore");
    // 64 MiB: above the 32 MiB in-memory limit, so the segment is streamed in two passes
    // and uploaded in parts, and a debug build takes seconds over it.
    let bytes = 64 * MIB;
    let size = SegmentSize::new(bytes).unwrap();
    let name = WalSegmentName::from_segment_number(TimelineId(1), 3, size);
    let wal = t.mkdir("wal").join(name.to_string());
    write_synthetic_segment(&wal, &name, size, 0x7312_0000_dead_beef);
    tm.init_synthetic(&t, "fake-pg", 0x7312_0000_dead_beef, size);
    let name = name.to_string();
    let wal_arg = wal.display().to_string();

    let plan = [
        KillAt::Delay(Duration::from_millis(20)),
        KillAt::Delay(Duration::from_millis(80)),
        KillAt::Delay(Duration::from_millis(200)),
        KillAt::UploadStarts,
        KillAt::UploadReaches(bytes / 2),
        KillAt::UploadReaches(bytes * 9 / 10),
    ];
    let mut killed = Vec::new();
    for at in plan {
        let old_temps = temp_files(&repo);
        let started = Instant::now();
        let mut child = tm
            .command(&["archive-push", &wal_arg])
            .spawn()
            .expect("spawn archive-push");
        let running = loop {
            if child.try_wait().expect("try_wait").is_some() {
                break false;
            }
            let new_temps = || {
                temp_files(&repo)
                    .into_iter()
                    .filter(|(p, _)| !old_temps.contains_key(p))
            };
            let now = match at {
                KillAt::Delay(d) => started.elapsed() >= d,
                KillAt::UploadStarts => new_temps().next().is_some(),
                KillAt::UploadReaches(n) => new_temps().any(|(_, len)| len >= n),
            };
            if now {
                break true;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if running {
            child.kill().expect("SIGKILL");
            killed.push(format!("{at:?} after {:?}", started.elapsed()));
        }
        let out = child.wait_with_output().expect("wait");
        assert!(
            running || out.status.success(),
            "archive-push failed by itself: {out:?}"
        );
        assert_repository_consistent(&t, &tm, &repo, &name, &wal);
        if !running {
            eprintln!("archive-push finished before {at:?}");
            break;
        }
    }
    eprintln!("killed: {killed:?}");
    assert!(
        killed.len() >= 4 && killed.iter().any(|k| k.starts_with("Upload")),
        "too few pushes were killed while running, or none during the upload: {killed:?}"
    );

    let started = Instant::now();
    tm.ok(&["archive-push", &wal_arg]);
    eprintln!(
        "unkilled push of {} MiB took {:?}",
        bytes / MIB,
        started.elapsed()
    );
    assert_repository_consistent(&t, &tm, &repo, &name, &wal);
}

/// A repository holding real archived segments, for the bad-input tests.
struct Archived {
    /// Keeps the cluster alive as long as the test (declared first: dropped before `t`).
    _cluster: Cluster,
    t: TestDir,
    tm: Tidemark,
    repo: PathBuf,
    spool: PathBuf,
    /// Segments in the repository.
    archived: Vec<String>,
    /// A real segment of the same cluster that is not in the repository.
    spare: String,
}

impl Archived {
    fn new(name: &str) -> Archived {
        let t = TestDir::new(name);
        let (tm, repo) = local_tidemark(&t);
        let (cluster, spool, names) = spooling_cluster(&t, "pg", 3);
        tm.init_stanza(&cluster);
        for n in &names[..2] {
            tm.ok(&["archive-push", &spool.join(n).display().to_string()]);
        }
        Archived {
            tm,
            repo,
            _cluster: cluster,
            archived: names[..2].to_vec(),
            spare: names[2].clone(),
            spool,
            t,
        }
    }

    fn spooled(&self, name: &str) -> PathBuf {
        self.spool.join(name)
    }

    fn snapshot(&self) -> BTreeMap<String, String> {
        repo_snapshot(&self.repo)
    }
}

/// Exactly one non-empty stderr line, starting with `tidemark: ` and containing `needle`
/// (case-insensitive); the problems found, if any.
fn one_line_problems(run: &Run, needle: &str) -> Vec<String> {
    let lines = run.stderr_lines();
    let mut problems = Vec::new();
    if lines.len() != 1 {
        problems.push(format!(
            "{} stderr lines, expected 1: {:?}",
            lines.len(),
            run.stderr
        ));
    }
    match lines.first() {
        Some(l) if !l.starts_with("tidemark: ") => {
            problems.push(format!("stderr does not start with `tidemark: `: {l:?}"))
        }
        None => problems.push("nothing on stderr".into()),
        _ => {}
    }
    if !run.stderr.to_lowercase().contains(&needle.to_lowercase()) {
        problems.push(format!(
            "stderr does not mention {needle:?}: {:?}",
            run.stderr
        ));
    }
    problems
}

fn assert_one_tidemark_line(run: &Run, needle: &str) {
    let problems = one_line_problems(run, needle);
    assert!(problems.is_empty(), "{problems:?}");
}

/// Sets the mode of every folder under (and including) `dir`.
fn chmod_dirs(dir: &Path, mode: u32) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            chmod_dirs(&e.path(), mode);
        }
    }
}

#[test]
fn bad_archive_push_inputs_change_nothing() {
    need_pg!();
    let a = Archived::new("bad-push");
    let spare = a.spare.clone();
    let real = std::fs::read(a.spooled(&spare)).unwrap();

    // The inputs: files named like the next segment that are not what they claim.
    let not_wal = a.t.write(
        &format!("notwal/{spare}"),
        &b"just some text, not WAL\n".repeat(1000),
    );
    let truncated =
        a.t.write(&format!("truncated/{spare}"), &real[..real.len() / 2]);
    let renamed = a.t.write(
        &format!("renamed/{spare}"),
        &std::fs::read(a.spooled(&a.archived[0])).unwrap(),
    );
    let bad_name = a.t.write("notes.txt", b"hello\n");
    let missing = a.t.path().join(format!("missing/{spare}"));
    let (_other, other_spool, other_names) = spooling_cluster(&a.t, "other", 1);
    let foreign = other_spool.join(&other_names[0]);
    // A named pipe under the next segment's name: opening it for reading would wait for
    // a writer forever.
    let fifo = a.t.mkdir("fifo").join(&spare);
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    chown_to_user(&fifo);
    // This cluster's WAL, but cut into 1 MiB segments where the stanza records 16 MiB.
    let one_mib = SegmentSize::new(MIB).unwrap();
    let resized_name = WalSegmentName::from_segment_number(TimelineId(1), 0xA_0123, one_mib);
    let resized = a.t.mkdir("resized").join(resized_name.to_string());
    write_synthetic_segment(
        &resized,
        &resized_name,
        one_mib,
        a._cluster.system_identifier().parse().unwrap(),
    );

    struct Case {
        what: &'static str,
        args: Vec<String>,
        code: i32,
        needle: &'static str,
        unwritable: bool,
    }
    let push = |path: &Path| vec!["archive-push".to_string(), path.display().to_string()];
    let cases = [
        Case {
            what: "not WAL",
            args: push(&not_wal),
            code: 1,
            needle: "not a WAL segment",
            unwritable: false,
        },
        Case {
            what: "truncated",
            args: push(&truncated),
            code: 1,
            needle: "truncated",
            unwritable: false,
        },
        Case {
            what: "content of another name",
            args: push(&renamed),
            code: 1,
            needle: "does not hold the WAL its name says",
            unwritable: false,
        },
        Case {
            what: "not a WAL file name",
            args: push(&bad_name),
            code: 1,
            needle: "not a WAL file name",
            unwritable: false,
        },
        Case {
            what: "nonexistent path",
            args: push(&missing),
            code: 1,
            needle: "no such file",
            unwritable: false,
        },
        Case {
            what: "another cluster",
            args: push(&foreign),
            code: 3,
            needle: "system identifier",
            unwritable: false,
        },
        Case {
            what: "a named pipe",
            args: push(&fifo),
            code: 1,
            needle: "a named pipe, not a regular file",
            unwritable: false,
        },
        Case {
            what: "another segment size",
            args: push(&resized),
            code: 3,
            needle: "stanza \"main\" records PostgreSQL 15 with 16 MiB WAL segments, this is PostgreSQL 15 with 1 MiB segments",
            unwritable: false,
        },
        Case {
            what: "missing %p",
            args: vec!["archive-push".into()],
            code: 2,
            needle: "path",
            unwritable: false,
        },
        Case {
            what: "unwritable repository",
            args: [
                vec!["--retry-timeout".to_string(), "2".into()],
                push(&a.spooled(&spare)),
            ]
            .concat(),
            code: 1,
            needle: "permission denied",
            unwritable: true,
        },
    ];

    let mut failures = Vec::new();
    for case in &cases {
        let before = a.snapshot();
        if case.unwritable {
            chmod_dirs(&a.repo, 0o555);
        }
        let Some(run) = a.tm.run_within(&case.args, Duration::from_secs(60)) else {
            failures.push(format!(
                "{} ({:?}): still running after 60 s",
                case.what, case.args
            ));
            continue;
        };
        eprintln!("{}: exit {}, stderr {:?}", case.what, run.code, run.stderr);
        if case.unwritable {
            chmod_dirs(&a.repo, 0o755);
        }
        let mut problems = one_line_problems(&run, case.needle);
        if run.code != case.code {
            problems.insert(0, format!("exit {} (expected {})", run.code, case.code));
        }
        let diff = snapshot_diff(&before, &a.snapshot());
        if !diff.is_empty() {
            problems.push(format!("repository changed: {diff:?}"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({:?}): {}",
                case.what,
                case.args,
                problems.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "bad inputs:\n{}", failures.join("\n"));

    // The repository still works, and takes the spare segment once it is writable.
    a.tm.ok(&["archive-push", &a.spooled(&spare).display().to_string()]);
}

#[test]
fn archive_get_failures_follow_restore_command_rules() {
    need_pg!();
    let a = Archived::new("bad-get");
    let restore = a.t.mkdir("restore");
    let dest = restore.join("RECOVERYXLOG");
    let dest_arg = dest.display().to_string();
    let name = a.archived[0].clone();

    // The blob of an archived segment, with one byte flipped in its middle.
    let sha = sha256_file(&a.spooled(&name));
    let blob = a.repo.join("blobs").join(&sha[..2]).join(&sha);
    assert!(blob.is_file(), "no blob at {}", blob.display());
    let corrupt_blob = || {
        let mode = std::fs::metadata(&blob).unwrap().permissions();
        std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut bytes = std::fs::read(&blob).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x5A;
        std::fs::write(&blob, &bytes).unwrap();
        std::fs::set_permissions(&blob, mode).unwrap();
    };

    struct Case {
        what: &'static str,
        args: Vec<String>,
        code: i32,
        /// `None`: stderr must be empty.
        needle: Option<&'static str>,
        corrupt_first: bool,
    }
    let get = |n: &str| vec!["archive-get".to_string(), n.to_string(), dest_arg.clone()];
    let cases = [
        Case {
            what: "not in the archive",
            args: get(&a.spare),
            code: 1,
            needle: None,
            corrupt_first: false,
        },
        Case {
            what: "history not in the archive",
            args: get("00000002.history"),
            code: 1,
            needle: None,
            corrupt_first: false,
        },
        Case {
            what: "unknown stanza",
            args: [vec!["--stanza".to_string(), "nosuch".into()], get(&name)].concat(),
            code: 128,
            needle: Some("nosuch"),
            corrupt_first: false,
        },
        Case {
            what: "a name that is not WAL",
            args: get("pg_wal"),
            code: 128,
            needle: Some("not a WAL file name"),
            corrupt_first: false,
        },
        Case {
            what: "missing %p",
            args: vec!["archive-get".into(), name.clone()],
            code: 128,
            needle: Some("DEST"),
            corrupt_first: false,
        },
        Case {
            what: "corrupt blob",
            args: get(&name),
            code: 128,
            needle: Some("corrupt"),
            corrupt_first: true,
        },
    ];

    let mut failures = Vec::new();
    for case in &cases {
        if case.corrupt_first {
            corrupt_blob();
        }
        let before = a.snapshot();
        let run = a.tm.run(&case.args);
        eprintln!("{}: exit {}, stderr {:?}", case.what, run.code, run.stderr);
        let mut problems = match case.needle {
            Some(needle) => one_line_problems(&run, needle),
            None if !run.stderr.is_empty() => {
                vec![format!("stderr should be empty: {:?}", run.stderr)]
            }
            None => vec![],
        };
        if run.code != case.code {
            problems.insert(0, format!("exit {} (expected {})", run.code, case.code));
        }
        let left: Vec<_> = std::fs::read_dir(&restore)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        if !left.is_empty() {
            problems.push(format!("files left in the destination folder: {left:?}"));
            for e in std::fs::read_dir(&restore).unwrap().flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let diff = snapshot_diff(&before, &a.snapshot());
        if !diff.is_empty() {
            problems.push(format!("repository changed: {diff:?}"));
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{} ({:?}): {}",
                case.what,
                case.args,
                problems.join("; ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "archive-get failures:\n{}",
        failures.join("\n")
    );

    // The other segment, untouched, still restores.
    a.tm.ok(&["archive-get", &a.archived[1], &dest_arg]);
    assert!(same_content(&dest, &a.spooled(&a.archived[1])));
}

#[test]
fn nothing_archived_is_ever_overwritten() {
    need_pg!();
    let a = Archived::new("overwrite");
    let name = a.archived[0].clone();
    let original = a.spooled(&name);

    // The same segment again: success, nothing written.
    let before = a.snapshot();
    a.tm.ok(&["archive-push", &original.display().to_string()]);
    assert_eq!(
        snapshot_diff(&before, &a.snapshot()),
        Vec::<String>::new(),
        "a repeat push wrote"
    );

    // Different (still valid) content under the same name: the last page's body changes.
    let mut altered = std::fs::read(&original).unwrap();
    let at = altered.len() - 100;
    altered[at] ^= 0xFF;
    let altered_path = a.t.write(&format!("altered/{name}"), &altered);
    let altered_sha = sha256_file(&altered_path);
    let run =
        a.tm.run(&["archive-push", &altered_path.display().to_string()]);
    assert_eq!(run.code, 4, "conflicting push: {run:?}");
    assert_one_tidemark_line(&run, "different content");
    let after = a.snapshot();
    let diff = snapshot_diff(&before, &after);
    assert!(
        diff.iter().all(|d| d.starts_with('+')),
        "something replaced or removed: {diff:?}"
    );
    let quarantine = format!("stanzas/main/quarantine/{name}.{altered_sha}");
    assert!(
        after.contains_key(&quarantine),
        "no quarantine record {quarantine}: {diff:?}"
    );
    assert!(
        !diff.iter().any(|d| d.contains("stanzas/main/wal/")),
        "the conflicting content was indexed: {diff:?}"
    );
    let dest = a.t.mkdir("restore").join(&name);
    a.tm.ok(&["archive-get", &name, &dest.display().to_string()]);
    assert!(
        same_content(&dest, &original),
        "the archived segment changed"
    );
    assert_eq!(a.tm.info()["quarantined"], 1);

    // Timeline history files are immutable too.
    let history = "00000002.history";
    let first = a.t.write(
        &format!("hist-a/{history}"),
        b"1\t0/3000000\tno recovery target specified\n",
    );
    let second = a.t.write(
        &format!("hist-b/{history}"),
        b"1\t0/4000000\tno recovery target specified\n",
    );
    a.tm.ok(&["archive-push", &first.display().to_string()]);
    let before = a.snapshot();
    a.tm.ok(&["archive-push", &first.display().to_string()]);
    assert_eq!(
        snapshot_diff(&before, &a.snapshot()),
        Vec::<String>::new(),
        "a repeat history push wrote"
    );
    let run = a.tm.run(&["archive-push", &second.display().to_string()]);
    assert_eq!(run.code, 4, "conflicting history push: {run:?}");
    assert_one_tidemark_line(&run, "different content");
    let diff = snapshot_diff(&before, &a.snapshot());
    assert!(
        diff.iter()
            .all(|d| d.starts_with('+') && !d.contains("/wal/")),
        "{diff:?}"
    );
    let dest = a.t.path().join("restore").join(history);
    a.tm.ok(&["archive-get", history, &dest.display().to_string()]);
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        std::fs::read(&first).unwrap()
    );
    let info = a.tm.info();
    assert_eq!(info["wal"]["history"], 1, "{info:#}");
    assert_eq!(info["quarantined"], 2, "{info:#}");
}

#[test]
fn init_records_the_cluster_over_scram_and_refuses_another() {
    need_pg!();
    let t = TestDir::new("init");
    let (tm, _repo) = local_tidemark(&t);
    let mut a = Cluster::init(
        &t,
        "a",
        ClusterOptions {
            password: Some("secret-a".into()),
            ..Default::default()
        },
    );
    a.start();
    let pwfile = t.write("password-a", b"secret-a\n");
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tcp = |c: &Cluster| {
        vec![
            "--pg-host".to_string(),
            "127.0.0.1".into(),
            "--pg-port".into(),
            c.port().to_string(),
            "--pg-user".into(),
            "postgres".into(),
        ]
    };
    let init_a = [
        vec!["init".to_string()],
        tcp(&a),
        vec!["--pg-password-file".into(), pwfile.display().to_string()],
    ]
    .concat();

    tm.ok(&init_a);
    let info = tm.info();
    assert_eq!(
        as_decimal(&info["cluster"]["system_identifier"]),
        a.system_identifier(),
        "{info:#}"
    );
    assert_eq!(info["cluster"]["pg_version"], 15, "{info:#}");
    assert_eq!(info["cluster"]["wal_segment_size"], 16 * MIB, "{info:#}");
    tm.ok(&init_a); // checking again is fine

    // scram-sha-256 is really in force: a wrong password is refused.
    let wrong = t.write("password-wrong", b"not-the-password\n");
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = tm.run(
        &[
            vec!["init".to_string()],
            tcp(&a),
            vec!["--pg-password-file".into(), wrong.display().to_string()],
        ]
        .concat(),
    );
    assert!(
        run.code != 0 && run.code != 3,
        "init with a wrong password: {run:?}"
    );
    assert_one_tidemark_line(&run, "");

    // Another cluster for the same stanza, password from PGPASSWORD.
    let mut b = Cluster::init(
        &t,
        "b",
        ClusterOptions {
            password: Some("secret-b".into()),
            ..Default::default()
        },
    );
    b.start();
    let run = tm
        .clone()
        .with_env("PGPASSWORD", "secret-b")
        .run(&[vec!["init".to_string()], tcp(&b)].concat());
    assert_eq!(run.code, 3, "init of another cluster: {run:?}");
    assert_one_tidemark_line(&run, &a.system_identifier());
    assert_eq!(
        as_decimal(&tm.info()["cluster"]["system_identifier"]),
        a.system_identifier()
    );
}

#[test]
fn only_init_creates_a_repository_or_a_stanza() {
    need_pg!();
    let t = TestDir::new("only-init");
    let (c, wal, names) = spooling_cluster(&t, "pg", 2);
    let segment = wal.join(&names[0]).display().to_string();
    let absent = t.path().join("mnt/repo");
    let empty = t.mkdir("empty");
    let spool = t.mkdir("spool");
    let at = |place: &Path| {
        Tidemark::new(&t).with_args(["--repo", &format!("file://{}", place.display())])
    };
    let asynchronous = |tm: Tidemark| {
        tm.with_args([
            "--archive-async",
            "true",
            "--spool-drainer",
            "manual",
            "--spool-path",
            &spool.display().to_string(),
        ])
    };

    // archive-push (synchronous and asynchronous), spool drain and backup into an absent
    // path or an empty folder: refused with one line that says to run init (exit 2, so
    // that PostgreSQL keeps the segment in pg_wal), and nothing created.
    for place in [&absent, &empty] {
        let url = format!("file://{}", place.display());
        for (what, tm, args) in [
            ("push", at(place), vec!["archive-push", segment.as_str()]),
            (
                "async push",
                asynchronous(at(place)),
                vec!["archive-push", segment.as_str()],
            ),
            ("drain", asynchronous(at(place)), vec!["spool", "drain"]),
        ] {
            let run = tm.run(&args);
            assert_eq!(run.code, 2, "{what} into {url}: {run:?}");
            assert_one_tidemark_line(&run, "holds no tidemark repository");
            assert_one_tidemark_line(&run, "run `tidemark init`");
            assert_one_tidemark_line(&run, &url);
        }
        assert!(!absent.exists(), "{} was created", absent.display());
        assert!(
            repo_snapshot(&empty).is_empty(),
            "written into the empty folder: {:?}",
            repo_snapshot(&empty)
        );
        assert_eq!(
            repo_snapshot(&spool.join("main/wal"))
                .keys()
                .filter(|k| !k.starts_with(".tmp-"))
                .count(),
            0,
            "the refused push was spooled"
        );
    }
    assert!(
        !t.path().join("mnt").exists(),
        "the absent path's parent was created"
    );

    // init --offline on a folder that is not a data directory: refused, nothing created.
    let not_pgdata = t.mkdir("not-pgdata");
    let run = at(&absent).run(&[
        "--pgdata",
        &not_pgdata.display().to_string(),
        "init",
        "--offline",
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_one_tidemark_line(&run, "not a PostgreSQL data directory");
    assert!(!absent.exists());
    let run = at(&absent).run(&["init", "--offline"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_one_tidemark_line(&run, "--pgdata");
    assert!(!absent.exists());

    // init --offline with the server running, then pushes work, synchronous and not.
    let tm = at(&absent);
    let out = tm.init_stanza(&c);
    assert!(out.contains("recorded in"), "{out}");
    tm.ok(&["archive-push", &segment]);
    let info = tm.info();
    assert_eq!(
        as_decimal(&info["cluster"]["system_identifier"]),
        c.system_identifier(),
        "{info:#}"
    );
    assert_eq!(info["wal"]["segments"], 1, "{info:#}");
    let spooled = asynchronous(tm.clone());
    spooled.ok(&["archive-push", &wal.join(&names[1]).display().to_string()]);
    spooled.ok(&["spool", "drain"]);
    assert_eq!(tm.info()["wal"]["segments"], 2);
    assert!(tm.init_stanza(&c).contains("already recorded"));

    // A repository without the stanza: refused the same way, naming the stanza.
    let before = repo_snapshot(&absent);
    let other = tm.clone().with_args(["--stanza", "other"]);
    for (what, tm, args) in [
        (
            "push",
            other.clone(),
            vec!["archive-push", segment.as_str()],
        ),
        (
            "async push",
            asynchronous(other.clone()),
            vec!["archive-push", segment.as_str()],
        ),
        ("info", other.clone(), vec!["info"]),
    ] {
        let run = tm.run(&args);
        assert_eq!(run.code, 2, "{what}: {run:?}");
        assert_one_tidemark_line(&run, "stanza \"other\" does not exist");
        assert_one_tidemark_line(&run, "run `tidemark init`");
    }
    assert_eq!(
        snapshot_diff(&before, &repo_snapshot(&absent)),
        Vec::<String>::new()
    );
}

/// `init --offline` reads from `global/pg_control` exactly what `pg_controldata` prints
/// and what the server says over SQL, for every PostgreSQL version at hand (15 always;
/// 14, 16, 17, 18 when `TIDEMARK_PG<major>_BIN` or `/opt/tidemark/pg<major>` has them).
#[test]
fn init_offline_reads_what_pg_controldata_prints() {
    need_pg!();
    let t = TestDir::new("init-offline");
    // PostgreSQL 15 with 4 MiB segments, checked against pg_controldata.
    let c = Cluster::init(
        &t,
        "pg15",
        ClusterOptions {
            wal_segsize_mb: Some(4),
            ..Default::default()
        },
    );
    let tm =
        Tidemark::new(&t).with_args(["--repo", &format!("file://{}", t.mkdir("repo15").display())]);
    let out = tm.ok(&[
        "--pgdata",
        &c.data_dir().display().to_string(),
        "init",
        "--offline",
        "--json",
    ]);
    let report: Value = serde_json::from_str(&out).unwrap();
    let controldata = c
        .program("pg_controldata")
        .arg(c.data_dir())
        .output()
        .unwrap();
    assert!(controldata.status.success(), "{controldata:?}");
    let text = String::from_utf8_lossy(&controldata.stdout).to_string();
    let field = |label: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} in pg_controldata's output:\n{text}"))
            .trim_start_matches(':')
            .trim()
            .to_string()
    };
    assert_eq!(
        as_decimal(&report["system_identifier"]),
        field("Database system identifier"),
        "{report:#}"
    );
    assert_eq!(
        report["catalog_version"].to_string(),
        field("Catalog version number"),
        "{report:#}"
    );
    assert_eq!(
        report["wal_segment_size"].to_string(),
        field("Bytes per WAL segment"),
        "{report:#}"
    );
    assert_eq!(report["pg_version"], 15, "{report:#}");
    assert_eq!(report["created"], true, "{report:#}");
    assert!(report.get("replication").is_none(), "{report:#}");

    // Every other version at hand: what the offline init records is what the online one
    // (the server, over SQL) records.
    for major in [14, 16, 17, 18] {
        let Some(bin) = crate::harness::pg::server_bin(major) else {
            eprintln!("PostgreSQL {major} not at hand: skipped");
            continue;
        };
        let mut c = Cluster::init(
            &t,
            &format!("pg{major}"),
            ClusterOptions {
                bin: Some(bin),
                wal_segsize_mb: Some(2),
                ..Default::default()
            },
        );
        let offline = Tidemark::new(&t).with_args([
            "--repo",
            &format!("file://{}", t.mkdir(&format!("off{major}")).display()),
        ]);
        let online = Tidemark::new(&t).with_args([
            "--repo",
            &format!("file://{}", t.mkdir(&format!("on{major}")).display()),
        ]);
        offline.init_stanza(&c);
        c.start();
        online.ok(&[
            "init",
            "--pg-host",
            &c.socket_dir().display().to_string(),
            "--pg-port",
            &c.port().to_string(),
            "--pg-user",
            "postgres",
        ]);
        let (a, b) = (offline.info(), online.info());
        assert_eq!(a["cluster"], b["cluster"], "PostgreSQL {major}");
        assert_eq!(a["cluster"]["pg_version"], major, "{a:#}");
        assert_eq!(a["cluster"]["wal_segment_size"], 2 * MIB, "{a:#}");
    }
}

/// Concurrent pushes of different content under one name.
mod race;
/// The WAL content index: what archive-push records, and `tidemark reindex`.
mod reindex;
/// Asynchronous archiving through the spool.
mod spool;
