//! The WAL content index (issue 14, item 2): what archive-push records, and `tidemark
//! reindex` for repositories whose entries were archived without it.
//!
//! A real PostgreSQL 15 cluster archives through `archive-push` into a local repository A
//! (a restore point among its commits). Repository B, local or on S3, is then built the
//! way a build from before the index left its repositories: the same blobs and index
//! entries, without `content` (entries are create-only, so B is written with the store's
//! own calls). What is proven:
//! - archive-push gave every segment its content, and the name's claim is a copy of the
//!   entry, content included;
//! - `info` counts B's segments as not indexed; `reindex` writes one sidecar per segment
//!   whose summary equals what archive-push wrote for the same segment in A, and `info`
//!   then counts none;
//! - a second `reindex` is a no-op: it counts every segment as already indexed and
//!   changes nothing in the repository;
//! - a `reindex` killed (SIGKILL) after some sidecars leaves only whole ones, and the
//!   next run indexes exactly the rest;
//! - asynchronous archiving (the spool and its drainer) records the same content as a
//!   synchronous push;
//! - a segment with a damaged record is archived byte for byte (exit 0) with one warning
//!   naming the LSN and the damage in its summary; a decoder that panics (injected) never
//!   fails a push: the file is archived without content, and `reindex` indexes it;
//! - a `.partial` file's early end is no damage; the same bytes as a complete segment are.

use std::sync::Arc;

use tidemark_store::catalog::{self, Stanza, WalRecord};
use tidemark_store::url::{open_backend, BackendOptions, RepoUrl};
use tidemark_store::wal_content::{wal_content_key, WalContent};
use tidemark_store::{Compression, Repo};

use super::*;

/// A local repository opened with the store's own calls, as root.
fn local_repo(path: &Path) -> Repo {
    let backend = tidemark_store::backend::local::LocalBackend::new(path).unwrap();
    Repo::new(Arc::new(backend), Compression::Lz4)
}

/// An S3 repository under `prefix` of `server`'s bucket, opened with the store's own calls.
async fn s3_repo(server: &S3Server, prefix: &str) -> Repo {
    let options = BackendOptions {
        url: RepoUrl::parse(&server.url(prefix)).unwrap(),
        s3: server.options(),
        retry_for: Duration::from_secs(10),
    };
    Repo::new(open_backend(&options).await.unwrap(), Compression::Lz4)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Gives every file and folder under `dir` (and `dir`) to the test user: the store's
/// calls ran as root, `tidemark` runs as the test user.
fn chown_tree(dir: &Path) {
    chown_to_user(dir);
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            chown_tree(&path);
        } else {
            chown_to_user(&path);
        }
    }
}

/// A cluster archiving into the local repository of `tm`, with `segments` completed
/// segments archived and a restore point among them.
fn archived_cluster(t: &TestDir, tm: &Tidemark, segments: usize) -> Cluster {
    let c = archiving_cluster(t, tm, None, &[]);
    c.workload(500);
    c.psql("SELECT pg_create_restore_point('before the batch')");
    let names = switch_segments(&c, segments, 2000);
    c.wait_archived(names.last().unwrap(), ARCHIVE_WAIT);
    c
}

/// A's segment and `.partial` entries with the content archive-push gave them (checked
/// present, and the claim a copy of the entry), by name.
async fn pushed_contents(a: &Repo, stanza: &Stanza) -> BTreeMap<String, (WalRecord, WalContent)> {
    let mut out = BTreeMap::new();
    for (name, digest, meta) in a.wal_index(stanza).await.unwrap() {
        if !matches!(
            name,
            tidemark_pg::WalFileName::Segment(_) | tidemark_pg::WalFileName::Partial(_)
        ) {
            continue;
        }
        let record: WalRecord = a.get_record(&meta.key).await.unwrap();
        let content = record
            .content
            .clone()
            .unwrap_or_else(|| panic!("archive-push wrote {name} without content: {record:?}"));
        let claim: WalRecord = a
            .get_record(&catalog::wal_claim_key(stanza, &name))
            .await
            .unwrap();
        assert_eq!(
            claim, record,
            "{name}: the claim is not a copy of the entry"
        );
        assert_eq!(record.digest, digest);
        out.insert(name.to_string(), (record, content));
    }
    assert!(!out.is_empty(), "nothing archived");
    out
}

/// Writes into `b` (initialised, same cluster) what a build from before the content index
/// would have: each segment's blob and its index entry, without content.
async fn copy_without_content(
    a: &Repo,
    b: &Repo,
    stanza: &Stanza,
    pushed: &BTreeMap<String, (WalRecord, WalContent)>,
) {
    for (name, (record, _)) in pushed {
        let raw = a.get_blob(&record.digest).await.unwrap();
        b.put_blob(raw.into()).await.unwrap();
        let old = WalRecord {
            content: None,
            tidemark_version: "0.9.0".into(),
            ..record.clone()
        };
        let name: tidemark_pg::WalFileName = name.parse().unwrap();
        assert!(b
            .put_wal_record(stanza, &name, &record.digest, &old)
            .await
            .unwrap());
    }
}

/// Every sidecar `reindex` wrote into `b` holds exactly what archive-push wrote into A's
/// entry for the same segment, and the planner's catalog reads it back.
async fn assert_sidecars_match(
    b: &Repo,
    stanza: &Stanza,
    pushed: &BTreeMap<String, (WalRecord, WalContent)>,
) {
    for (name, (record, content)) in pushed {
        let wal_name: tidemark_pg::WalFileName = name.parse().unwrap();
        let sidecar: WalContent = b
            .get_record(&wal_content_key(stanza, &wal_name, &record.digest))
            .await
            .unwrap_or_else(|e| panic!("{name}: no sidecar: {e}"));
        assert_eq!(
            &sidecar, content,
            "{name}: reindex and archive-push disagree"
        );
    }
    let catalog = b.wal_catalog(stanza).await.unwrap();
    assert_eq!(catalog.len(), pushed.len());
    for entry in catalog {
        let (_, content) = &pushed[&entry.name.to_string()];
        assert_eq!(
            entry.content,
            Some(content.to_summary().unwrap()),
            "{}",
            entry.name
        );
    }
}

fn reindex_json(tm: &Tidemark) -> Value {
    let run = tm.run(&["reindex", "--json"]);
    assert_eq!(run.code, 0, "reindex: {run:?}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

/// The shared body: B (behind `tm_b` and `b`) built without content, indexed by
/// `reindex`, then reindexed again. `snapshot` lists B's objects when it is local.
fn reindex_builds_what_archive_push_writes(
    t: &TestDir,
    b: &Repo,
    tm_b: &Tidemark,
    snapshot: &dyn Fn() -> Option<BTreeMap<String, String>>,
    after_copy: &dyn Fn(),
) {
    let (tm_a, repo_a) = local_tidemark(t);
    let c = archived_cluster(t, &tm_a, 4);
    let stanza = Stanza::new("main").unwrap();
    let a = local_repo(&repo_a);
    let rt = runtime();
    let pushed = rt.block_on(pushed_contents(&a, &stanza));
    tm_b.init_stanza(&c);
    rt.block_on(copy_without_content(&a, b, &stanza, &pushed));
    after_copy();
    let n = pushed.len() as u64;
    assert_eq!(tm_b.info()["segments_not_indexed"], n);
    let text = tm_b.ok(&["info"]);
    assert!(
        text.contains(&format!("{n} segments not indexed: run `tidemark reindex`")),
        "{text}"
    );

    let first = reindex_json(tm_b);
    assert_eq!(
        (
            &first["segments"],
            &first["indexed"],
            &first["already_indexed"]
        ),
        (&n.into(), &n.into(), &0.into()),
        "{first:#}"
    );
    assert_eq!(first["damaged"], Value::Array(vec![]), "{first:#}");
    assert_eq!(first["failed"], Value::Array(vec![]), "{first:#}");
    rt.block_on(assert_sidecars_match(b, &stanza, &pushed));
    assert_eq!(tm_b.info()["segments_not_indexed"], 0);

    let before = snapshot();
    let again = reindex_json(tm_b);
    assert_eq!(
        (&again["indexed"], &again["already_indexed"]),
        (&0.into(), &n.into()),
        "{again:#}"
    );
    assert_eq!(
        before,
        snapshot(),
        "a second reindex changed the repository"
    );
}

#[test]
fn reindex_builds_what_archive_push_writes_local() {
    need_pg!();
    let t = TestDir::new("reindex-local");
    let repo_b = t.mkdir("repo-b");
    let tm_b = Tidemark::new(&t).with_args(["--repo", &format!("file://{}", repo_b.display())]);
    let b = local_repo(&repo_b);
    reindex_builds_what_archive_push_writes(
        &t,
        &b,
        &tm_b,
        &|| Some(repo_snapshot(&repo_b)),
        &|| chown_tree(&repo_b),
    );
}

#[test]
fn reindex_builds_what_archive_push_writes_s3() {
    need_pg!();
    let server = s3_server!();
    let t = TestDir::new("reindex-s3");
    let prefix = unique_prefix("reindex");
    let tm_b = s3_tidemark_at(&t, &server, &prefix);
    let b = runtime().block_on(s3_repo(&server, &prefix));
    let objects = server.data_dir().join(server.bucket()).join(&prefix);
    reindex_builds_what_archive_push_writes(
        &t,
        &b,
        &tm_b,
        &|| Some(repo_snapshot(&objects)),
        &|| {},
    );
}

/// Sidecar files under a local repository.
fn sidecars(repo: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.to_string_lossy().ends_with(".content") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo.join("stanzas"), &mut out);
    out
}

#[test]
fn an_interrupted_reindex_loses_nothing_and_the_next_run_completes_it() {
    need_pg!();
    let t = TestDir::new("reindex-killed");
    let (tm_a, repo_a) = local_tidemark(&t);
    let c = archived_cluster(&t, &tm_a, 10);
    let stanza = Stanza::new("main").unwrap();
    let a = local_repo(&repo_a);
    let rt = runtime();
    let pushed = rt.block_on(pushed_contents(&a, &stanza));
    let n = pushed.len();
    let repo_b = t.mkdir("repo-b");
    let tm_b = Tidemark::new(&t).with_args(["--repo", &format!("file://{}", repo_b.display())]);
    tm_b.init_stanza(&c);
    let b = local_repo(&repo_b);
    rt.block_on(copy_without_content(&a, &b, &stanza, &pushed));
    chown_tree(&repo_b);

    // Killed once its first sidecar is there, while it still runs.
    let mut child = tm_b.command(&["reindex"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let killed_after = loop {
        let done = sidecars(&repo_b).len();
        if done >= 1 {
            let still_running = child.try_wait().unwrap().is_none();
            assert!(
                still_running,
                "reindex finished before it could be interrupted ({done} of {n} sidecars)"
            );
            child.kill().unwrap();
            child.wait().unwrap();
            break sidecars(&repo_b).len();
        }
        assert!(Instant::now() < deadline, "no sidecar after 120 s");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("reindex exited ({status}) without writing a sidecar");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(
        (1..n).contains(&killed_after),
        "{killed_after} of {n} sidecars when killed"
    );
    // What it left is whole: every sidecar reads back and is archive-push's.
    for path in sidecars(&repo_b) {
        let key = Key::new(path.strip_prefix(&repo_b).unwrap().to_str().unwrap()).unwrap();
        let content: WalContent = rt.block_on(b.get_record(&key)).unwrap();
        let (entry_name, _) = tidemark_store::wal_content::parse_wal_content_key(&key).unwrap();
        assert_eq!(content, pushed[&entry_name.to_string()].1, "{key}");
    }

    let rerun = reindex_json(&tm_b);
    assert_eq!(
        (&rerun["indexed"], &rerun["already_indexed"]),
        (&(n - killed_after).into(), &killed_after.into()),
        "{rerun:#}"
    );
    assert_eq!(sidecars(&repo_b).len(), n);
    rt.block_on(assert_sidecars_match(&b, &stanza, &pushed));
}

/// Asynchronous archiving records the same content: the summary taken when the file is
/// spooled reaches the index entry (and the claim) when the drainer moves it.
#[test]
fn the_spool_records_what_a_synchronous_push_records() {
    need_pg!();
    let t = TestDir::new("content-spool");
    let (c, wal, names) = spooling_cluster(&t, "pg", 3);
    let runner = |dir: &str| {
        let repo = t.mkdir(dir);
        let tm = Tidemark::new(&t).with_args(["--repo", &format!("file://{}", repo.display())]);
        tm.init_stanza(&c);
        (tm, repo)
    };
    let (tm_sync, repo_sync) = runner("repo-sync");
    let (tm_async, repo_async) = runner("repo-async");
    let spool = t.mkdir("spool");
    let tm_async = tm_async.with_args([
        "--archive-async",
        "true",
        "--spool-drainer",
        "manual",
        "--spool-path",
        &spool.display().to_string(),
    ]);
    for name in &names {
        let path = wal.join(name).display().to_string();
        tm_sync.ok(&["archive-push", &path]);
        tm_async.ok(&["archive-push", &path]);
    }
    assert!(
        std::fs::read_dir(repo_async.join("stanzas/main"))
            .unwrap()
            .flatten()
            .all(|e| e.file_name() != "wal"),
        "the asynchronous pushes wrote into the repository before the drain"
    );
    // The summary is taken when the file is spooled, and waits in its queue entry.
    let status: Value = serde_json::from_str(&tm_async.ok(&["spool", "status", "--json"])).unwrap();
    let entries = status["entries"].as_array().unwrap();
    assert_eq!(entries.len(), names.len(), "{status:#}");
    assert!(
        entries.iter().all(|e| e["content"]["format"] == 1),
        "{status:#}"
    );
    tm_async.ok(&["spool", "drain"]);
    let stanza = Stanza::new("main").unwrap();
    let rt = runtime();
    let sync = rt.block_on(pushed_contents(&local_repo(&repo_sync), &stanza));
    let spooled = rt.block_on(pushed_contents(&local_repo(&repo_async), &stanza));
    let contents = |m: &BTreeMap<String, (WalRecord, WalContent)>| -> Vec<(String, WalContent)> {
        m.iter().map(|(n, (_, c))| (n.clone(), c.clone())).collect()
    };
    assert_eq!(contents(&spooled), contents(&sync));
    assert_eq!(sync.len(), names.len());
}

/// A runner for a fresh local repository `dir` in the test folder, its stanza created for `c`.
fn initialised(t: &TestDir, c: &Cluster, dir: &str) -> (Tidemark, PathBuf) {
    let repo = t.mkdir(dir);
    let tm = Tidemark::new(t).with_args(["--repo", &format!("file://{}", repo.display())]);
    tm.init_stanza(c);
    (tm, repo)
}

/// The index entry of `name` in the local repository `repo`.
fn entry_of(repo: &Path, name: &str) -> WalRecord {
    let stanza = Stanza::new("main").unwrap();
    let wal_name: tidemark_pg::WalFileName = name.parse().unwrap();
    let r = local_repo(repo);
    runtime().block_on(async {
        let digests = r.wal_digests(&stanza, &wal_name).await.unwrap();
        assert_eq!(digests.len(), 1, "{name}: {digests:?}");
        r.get_record(&catalog::wal_key(&stanza, &wal_name, &digests[0]))
            .await
            .unwrap()
    })
}

/// A segment with a damaged record is archived as it is (PostgreSQL will not hand it over
/// again): exit 0, its bytes back from archive-get, one warning naming the LSN, and the
/// damage in its content summary.
#[test]
fn a_damaged_segment_is_archived_with_its_damage_and_a_warning() {
    need_pg!();
    let t = TestDir::new("content-damaged");
    let (c, wal, names) = spooling_cluster(&t, "pg", 2);
    let (tm, repo) = initialised(&t, &c, "repo");
    // The second segment starts right after a WAL switch: its first record is right
    // after the long page header, at byte 40. Its xid (bytes 4-7) is under the CRC.
    let name = &names[1];
    let mut bytes = std::fs::read(wal.join(name)).unwrap();
    bytes[40 + 4] ^= 0x55;
    let damaged = t.write(&format!("damaged/{name}"), &bytes);
    let wal_name: tidemark_pg::WalFileName = name.parse().unwrap();
    let lsn = wal_name
        .segment()
        .unwrap()
        .start_lsn(SegmentSize::new(16 * MIB).unwrap())
        .unwrap()
        .0
        + 40;
    let lsn_text = format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF);

    let run = tm.run(&["archive-push", &damaged.display().to_string()]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines = run.stderr_lines();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert!(
        lines[0].contains("WARN")
            && lines[0].contains(name.as_str())
            && lines[0].contains(&format!("invalid WAL at {lsn_text}")),
        "{run:?}"
    );
    let content = entry_of(&repo, name)
        .content
        .expect("content with its damage")
        .to_summary()
        .unwrap();
    let damage = content.damage.clone().expect("the damage is recorded");
    assert_eq!(damage.lsn.to_string(), lsn_text);
    assert_eq!(content.records, 0, "{content:?}");
    let back = t.mkdir("back").join(name);
    tm.ok(&["archive-get", name, &back.display().to_string()]);
    assert!(
        same_content(&back, &damaged),
        "archive-get changed the bytes"
    );
}

/// A decoder that fails (here a panic injected into it, as a bug would) never fails a
/// push: the file is archived without content, with one warning, and `reindex` indexes it
/// later.
#[test]
fn a_decoder_failure_never_fails_a_push_and_reindex_catches_up() {
    need_pg!();
    let t = TestDir::new("content-panic");
    let (c, wal, names) = spooling_cluster(&t, "pg", 1);
    let (tm, repo) = initialised(&t, &c, "repo");
    let path = wal.join(&names[0]).display().to_string();
    let run = tm
        .clone()
        .with_env("TIDEMARK_TEST_PANIC", "wal-decoder")
        .run(&["archive-push", &path]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines = run.stderr_lines();
    assert_eq!(lines.len(), 1, "{run:?}");
    assert!(
        lines[0].contains("content not indexed")
            && lines[0].contains("injected by TIDEMARK_TEST_PANIC")
            && lines[0].contains("archived all the same"),
        "{run:?}"
    );
    assert_eq!(entry_of(&repo, &names[0]).content, None);
    assert_eq!(tm.info()["segments_not_indexed"], 1);
    let back = t.mkdir("back").join(&names[0]);
    tm.ok(&["archive-get", &names[0], &back.display().to_string()]);
    assert!(same_content(&back, &wal.join(&names[0])));

    let report = reindex_json(&tm);
    assert_eq!(report["indexed"], 1, "{report:#}");
    assert_eq!(tm.info()["segments_not_indexed"], 0);
}

/// A `.partial` file's WAL ends early, which is normal: archived without a warning, its
/// summary saying where the WAL ends. The same bytes under the complete segment's name
/// are damage (a complete segment is archived only once the server wrote past it): still
/// archived, with a warning.
#[test]
fn a_partial_file_ends_early_without_damage_and_a_complete_segment_does_not() {
    need_pg!();
    let t = TestDir::new("content-partial");
    let (c, _, _) = spooling_cluster(&t, "pg", 1);
    c.workload(200);
    let current = c.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    let current = current.trim();
    c.psql("CHECKPOINT");
    let bytes = std::fs::read(c.pg_wal().join(current)).unwrap();
    let partial = t.write(&format!("partial/{current}.partial"), &bytes);
    let complete = t.write(&format!("complete/{current}"), &bytes);

    let (tm, repo) = initialised(&t, &c, "repo");
    let run = tm.run(&["archive-push", &partial.display().to_string()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr_lines().is_empty(), "{run:?}");
    let summary = entry_of(&repo, &format!("{current}.partial"))
        .content
        .expect("content")
        .to_summary()
        .unwrap();
    assert!(summary.ended_at.is_some(), "{summary:?}");
    assert!(
        summary.damage.is_none() && summary.records > 0,
        "{summary:?}"
    );

    let run = tm.run(&["archive-push", &complete.display().to_string()]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines = run.stderr_lines();
    let ended = summary.ended_at.unwrap().to_string();
    assert!(
        lines.len() == 1 && lines[0].contains(&format!("invalid WAL at {ended}")),
        "{run:?}"
    );
    assert_eq!(
        entry_of(&repo, current)
            .content
            .map(|c| c.to_summary().unwrap()),
        Some(summary)
    );
}
