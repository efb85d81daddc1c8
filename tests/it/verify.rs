//! `tidemark verify` through the binary, on real PostgreSQL 15 archives, local and on S3.
//!
//! What is proven here:
//! - a healthy repository passes (exit 0, no problem), the run is recorded under
//!   `stanzas/main/verify/` and `info` shows it; the first run reads every referenced
//!   blob, the second reads none (all proven by the first and listed unchanged), `--full`
//!   reads all again (the JSON counts say so);
//! - `--backup ID` checks that backup and only the WAL it needs; an unknown id exits 1;
//!   `--since` a date before everything covers it all, one after everything nothing; an
//!   unreadable date exits 2;
//! - each damage is found and named, with exit 4, each on its own copy of the
//!   repository: a chunk blob overwritten with damaged bytes (found by the incremental
//!   run: the object changed since it was proven), a chunk blob removed (named with its
//!   backup and file), a WAL segment's index entry removed in the middle (a gap naming
//!   the segment and timeline), and a missing history file (timeline 2 made by a real
//!   promotion);
//! - a quarantined push (other bytes under an archived name) is a note, not a failure;
//! - on S3 (s3s-fs): a healthy pass, an incremental second run that reads nothing, and a
//!   WAL blob overwritten in the server's folder, named with its WAL file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::backup::{backup_ok, cluster, local_tidemark, restore_ok, s3_tidemark, start_copy};
use crate::harness::pg::{pg_bin, Cluster, TestDir};
use crate::harness::s3::S3Server;
use crate::harness::tidemark::Tidemark;
use crate::pitr::{copy_dir, remove_index_entries};
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

/// `tidemark verify --json <args>`: its exit code and parsed report.
fn verify(tm: &Tidemark, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let run = tm.run(&all);
    let json = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}): {run:?}"));
    (run.code, json)
}

fn count(v: &Value, name: &str) -> u64 {
    v["counts"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no count {name}: {v}"))
}

/// The problems of a report as (kind, detail).
fn problems(v: &Value) -> Vec<(String, String)> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_string(),
                p["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A cluster archiving into `tm`, with data, a backup, and WAL after it over several
/// segments, all archived. Returns the cluster, the backup id, and the segments archived
/// after the backup (in order).
fn archive_with_backup(t: &TestDir, tm: &Tidemark) -> (Cluster, String, Vec<String>) {
    let c = cluster(t, "pg", Some(tm));
    c.workload(20_000);
    let backup = backup_ok(tm, &c, &["--label", "verify"]);
    let mut after = Vec::new();
    for _ in 0..4 {
        c.workload(2_000);
        after.push(c.switch_wal());
    }
    c.wait_archived(after.last().unwrap(), Duration::from_secs(60));
    (c, backup["id"].as_str().unwrap().to_string(), after)
}

/// Every stored file under `root` whose path contains `/blobs/`.
fn blob_files(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains("/blobs/") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The blob file of `digest` under `root`.
fn blob_file(root: &Path, digest: &str) -> PathBuf {
    blob_files(root)
        .into_iter()
        .find(|p| p.file_name().unwrap().to_string_lossy() == digest)
        .unwrap_or_else(|| panic!("no blob {digest} under {}", root.display()))
}

/// A chunk of a relation file of backup `id` in the local repository at `repo`: its
/// digest and the file's path (read through the store's own API).
fn a_chunk(repo: &Path, id: &str) -> (String, String) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let backend =
            std::sync::Arc::new(tidemark_store::backend::local::LocalBackend::new(repo).unwrap());
        let repo = tidemark_store::Repo::new(backend, tidemark_store::Compression::Lz4);
        let stanza = tidemark_store::catalog::Stanza::new("main").unwrap();
        let record = repo.backup(&stanza, id).await.unwrap().unwrap();
        let list = repo.backup_files(&record).await.unwrap();
        for page in &list.pages {
            let page = repo.file_list_page(page).await.unwrap();
            for entry in page.entries {
                if let tidemark_store::backup::EntryKind::File { chunks } = entry.kind {
                    if entry.path.starts_with("base/") && !chunks.is_empty() {
                        return (chunks[0].to_string(), entry.path);
                    }
                }
            }
        }
        panic!("backup {id} has no relation file with chunks")
    })
}

/// Flips bytes near the end of a stored object (its size kept).
fn damage(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() - 8;
    for b in &mut bytes[at..] {
        *b ^= 0x5a;
    }
    // A later modification time than the proof's, as a replaced object has.
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(path, &bytes).unwrap();
}

fn runner(t: &TestDir, repo: &Path) -> Tidemark {
    Tidemark::new(t).with_args(["--repo", &format!("file://{}", repo.display())])
}

#[test]
fn verify_local_passes_then_names_each_damage() {
    need_pg!();
    let t = TestDir::new("verify-local");
    let tm = local_tidemark(&t);
    let (c, id, after) = archive_with_backup(&t, &tm);
    let repo = t.path().join("repo");

    // Healthy: everything read once, then nothing, then everything with --full.
    let (code, first) = verify(&tm, &[]);
    assert_eq!(code, 0, "{first}");
    assert_eq!(first["passed"], true);
    assert!(problems(&first).is_empty(), "{first}");
    let blobs = count(&first, "blobs");
    assert!(blobs > 10, "{first}");
    assert_eq!(count(&first, "blobs_read"), blobs);
    assert_eq!(count(&first, "backups"), 1);
    assert!(count(&first, "file_list_blobs") >= 2);
    let (code, second) = verify(&tm, &[]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(count(&second, "blobs"), blobs);
    assert_eq!(count(&second, "blobs_read"), 0, "{second}");
    assert_eq!(count(&second, "blobs_proven_before"), blobs);
    let (code, full) = verify(&tm, &["--full"]);
    assert_eq!(code, 0, "{full}");
    assert_eq!(count(&full, "blobs_read"), blobs);
    assert_eq!(full["scope"]["full"], true);

    // Every run is recorded, and info shows the last.
    let records = std::fs::read_dir(repo.join("stanzas/main/verify"))
        .unwrap()
        .count();
    assert_eq!(records, 3);
    let info = tm.info();
    assert_eq!(info["last_verify"]["passed"], true, "{info}");
    assert_eq!(info["last_verify"]["scope"]["full"], true, "{info}");
    let text = tm.ok(&["info"]);
    assert!(
        text.contains("verify      last run ") && text.contains("(everything, full): passed"),
        "{text}"
    );

    // One backup: it and the WAL from its start to its stop, not all of the archive.
    let (code, one) = verify(&tm, &["--backup", &id]);
    assert_eq!(code, 0, "{one}");
    assert_eq!(count(&one, "backups"), 1);
    assert!(
        count(&one, "wal_entries") < count(&first, "wal_entries"),
        "{one}"
    );
    assert_eq!(count(&one, "blobs_read"), 0, "proven by the earlier runs");
    // Since a date: a date before everything covers what the whole run covers; one after
    // everything covers nothing (and says that continuity was not checked); a date that
    // cannot be read is a usage error.
    let (code, since) = verify(&tm, &["--since", "2000-01-01 00:00:00+00"]);
    assert_eq!(code, 0, "{since}");
    assert_eq!(count(&since, "blobs"), blobs);
    assert_eq!(count(&since, "wal_entries"), count(&first, "wal_entries"));
    let (code, later) = verify(&tm, &["--since", "2999-01-01"]);
    assert_eq!(code, 0, "{later}");
    assert_eq!(
        (
            count(&later, "backups"),
            count(&later, "wal_entries"),
            count(&later, "blobs")
        ),
        (0, 0, 0)
    );
    assert_eq!(later["notes"][0]["kind"], "no-backup", "{later}");
    let bad = tm.run(&["verify", "--since", "yesterday-ish"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert_eq!(bad.stderr_lines().len(), 1, "{bad:?}");
    let unknown = tm.run(&["verify", "--backup", "20000101T000000Z"]);
    assert_eq!(unknown.code, 1, "{unknown:?}");
    assert!(unknown.stderr.contains("20000101T000000Z"), "{unknown:?}");

    // A chunk overwritten with damaged bytes: the incremental run reads it again (the
    // object changed since it was proven) and names it, its backup and its file.
    let (chunk, file) = a_chunk(&repo, &id);
    let damaged = t.path().join("repo-damaged");
    copy_dir(&repo, &damaged);
    damage(&blob_file(&damaged, &chunk));
    let (code, v) = verify(&runner(&t, &damaged), &[]);
    assert_eq!(code, 4, "{v}");
    assert_eq!(v["passed"], false);
    let found = problems(&v);
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0].0, "corrupt-blob");
    assert!(
        found[0].1.contains(&chunk) && found[0].1.contains(&format!("backup {id} file {file}")),
        "{found:?}"
    );
    assert_eq!(
        count(&v, "blobs_read"),
        1,
        "only the changed object is read: {v}"
    );

    // A chunk removed.
    let missing = t.path().join("repo-missing-chunk");
    copy_dir(&repo, &missing);
    std::fs::remove_file(blob_file(&missing, &chunk)).unwrap();
    let (code, v) = verify(&runner(&t, &missing), &[]);
    assert_eq!(code, 4, "{v}");
    let found = problems(&v);
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0].0, "missing-blob");
    assert!(
        found[0].1.contains(&chunk)
            && found[0].1.contains("is missing")
            && found[0].1.contains(&format!("backup {id} file {file}")),
        "{found:?}"
    );

    // A segment's index entry removed in the middle of the archive: a gap.
    let gap = t.path().join("repo-gap");
    copy_dir(&repo, &gap);
    let hole = &after[1];
    assert_eq!(remove_index_entries(&gap, hole), 1);
    let (code, v) = verify(&runner(&t, &gap), &[]);
    assert_eq!(code, 4, "{v}");
    let found = problems(&v);
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0].0, "wal-gap");
    assert!(
        found[0]
            .1
            .starts_with(&format!("{hole} is missing on timeline 1")),
        "{found:?}"
    );
    let text = runner(&t, &gap).run(&["verify"]);
    assert_eq!(text.code, 4);
    assert!(
        text.stdout
            .contains(&format!("PROBLEM wal-gap: {hole} is missing")),
        "{text:?}"
    );

    // Timeline 2 by a real promotion, archiving into the stanza: still healthy.
    drop(c);
    restore_ok(&t, &tm, "primary", &["--archive-mode", "preserve"]);
    let mut primary = start_copy(&t, "primary");
    primary.workload(100);
    let last = primary.switch_wal();
    assert!(last.starts_with("00000002"), "{last}");
    primary.wait_archived(&last, Duration::from_secs(60));
    primary.stop();
    let (code, v) = verify(&tm, &[]);
    assert_eq!(code, 0, "{v}");
    // Then its history file missing.
    let no_history = t.path().join("repo-no-history");
    copy_dir(&repo, &no_history);
    assert_eq!(remove_index_entries(&no_history, "00000002.history"), 1);
    let (code, v) = verify(&runner(&t, &no_history), &[]);
    assert_eq!(code, 4, "{v}");
    let found = problems(&v);
    assert!(
        found
            .iter()
            .any(|(kind, detail)| kind == "history-missing" && detail.contains("00000002.history")),
        "{found:?}"
    );

    // Different bytes pushed under an archived name are quarantined: a note naming the
    // file, no failure (what is archived is intact).
    let name = &after[0];
    let qdir = t.mkdir("quarantine-src");
    let copy = qdir.join(name);
    tm.ok(&["archive-get", name, copy.to_str().unwrap()]);
    let mut bytes = std::fs::read(&copy).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&copy, &bytes).unwrap();
    let refused = tm.run(&["archive-push", copy.to_str().unwrap()]);
    assert_eq!(refused.code, 4, "{refused:?}");
    let (code, v) = verify(&tm, &[]);
    assert_eq!(code, 0, "{v}");
    let notes = v["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n["kind"] == "quarantined" && n["subject"] == name.as_str()),
        "{v}"
    );
}

#[test]
fn verify_s3_incremental_and_a_damaged_wal_blob() {
    need_pg!();
    let Some(server) = S3Server::start_new() else {
        skip_or_fail!(
            "s3s-fs not found (install: cargo install s3s-fs@0.14.1 --features binary --locked)"
        );
    };
    let t = TestDir::new("verify-s3");
    let tm = s3_tidemark(&t, &server);
    let (_c, _id, after) = archive_with_backup(&t, &tm);

    let (code, first) = verify(&tm, &[]);
    assert_eq!(code, 0, "{first}");
    let blobs = count(&first, "blobs");
    assert_eq!(count(&first, "blobs_read"), blobs);
    let (code, second) = verify(&tm, &[]);
    assert_eq!(code, 0, "{second}");
    assert_eq!(count(&second, "blobs_read"), 0, "{second}");
    assert_eq!(count(&second, "blobs_proven_before"), blobs);

    // Overwrite a WAL segment's blob in the server's folder.
    let segment = &after[1];
    let entry = {
        let mut found = None;
        let mut stack = vec![server.data_dir()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                if p.is_dir() {
                    stack.push(p);
                } else if name.starts_with(&format!("{segment}.")) && !name.ends_with(".claim") {
                    found = Some(name);
                }
            }
        }
        found.unwrap_or_else(|| panic!("no index entry of {segment}"))
    };
    let digest = entry.rsplit_once('.').unwrap().1.to_string();
    damage(&blob_file(&server.data_dir(), &digest));
    let (code, v) = verify(&tm, &[]);
    assert_eq!(code, 4, "{v}");
    let found = problems(&v);
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0].0, "corrupt-blob");
    assert!(
        found[0].1.contains(&digest) && found[0].1.contains(&format!("WAL file {segment}")),
        "{found:?}"
    );
}
