//! Measures what a large backup's file list costs a restore's check in memory: writes a
//! synthetic file list (no chunks) of a database of the given size into a temporary local
//! repository, then runs the restore's [`prepare`] (which reads and checks every page of
//! the list) and prints the process's peak RSS before and during the check.
//!
//! ```text
//! cargo run --release -p tidemark-recovery --example list_memory -- [GiB] [MiB per file]
//! ```
//!
//! Defaults: 4096 GiB (4 TiB) in files of 1 GiB at most, as PostgreSQL cuts relations:
//! 4 Mi chunks. The check runs in a process of its own (this program, run again with
//! `--check DIR`), so its peak RSS is the check's alone. Nothing is restored: `prepare`
//! writes nothing.
//!
//! With a third argument, a local repository's folder, the synthetic backup is written
//! there instead (stanza `main`, as its newest backup) and nothing is checked: a
//! `tidemark backup` into that repository then reads it as the previous backup, which
//! shows what the backup's set of known chunks costs.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tidemark_recovery::restore::{prepare, RestoreRequest};
use tidemark_store::backend::local::LocalBackend;
use tidemark_store::backup::{BackupRecord, EntryKind, FileEntry, CHUNK_SIZE, PAGE_BYTES};
use tidemark_store::catalog::Stanza;
use tidemark_store::{Compression, Digest, Repo};

/// The process's peak resident set (`VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

fn local_repo(dir: &Path) -> Repo {
    Repo::new(Arc::new(LocalBackend::new(dir).unwrap()), Compression::Lz4)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--check") {
        return check(Path::new(&args[2])).await;
    }
    let gib: u64 = args.get(1).map_or(4096, |a| a.parse().unwrap());
    let file_mib: u64 = args.get(2).map_or(1024, |a| a.parse().unwrap());
    let total_chunks = gib * 1024;
    let per_file = file_mib.max(1);
    let files = total_chunks.div_ceil(per_file);

    let dir = tempfile::tempdir().unwrap();
    let into = args.get(3).map(std::path::PathBuf::from);
    let repo_dir = into.clone().unwrap_or_else(|| dir.path().join("repo"));
    let repo = local_repo(&repo_dir);
    repo.ensure_format().await.unwrap();

    // Relation files in a few databases' directories, every chunk a distinct digest.
    let started = Instant::now();
    let mut entries = vec![dir_entry("base")];
    for db in 0..4 {
        entries.push(dir_entry(&format!("base/{}", 16384 + db)));
    }
    let mut chunk = 0u64;
    for f in 0..files {
        let n = per_file.min(total_chunks - chunk);
        let chunks = (chunk..chunk + n)
            .map(|c| Digest::of(&c.to_le_bytes()))
            .collect();
        chunk += n;
        entries.push(FileEntry {
            tablespace: None,
            path: format!("base/{}/{}", 16384 + f % 4, 20000 + f),
            mode: 0o600,
            size: n * CHUNK_SIZE,
            mtime: 1_700_000_000,
            kind: EntryKind::File { chunks },
        });
    }
    let (list, _) = repo
        .put_file_list(&entries, b"{}\n", CHUNK_SIZE, PAGE_BYTES)
        .await
        .unwrap();
    drop(entries);
    let list_bytes = dir_size(&repo_dir);
    let now = chrono::Utc::now();
    let record = BackupRecord {
        file_list: list.digest,
        files,
        size: total_chunks * CHUNK_SIZE,
        chunks: total_chunks,
        ..BackupRecord::example(&tidemark_store::backup::backup_id(now), now)
    };
    let stanza = Stanza::new("main").unwrap();
    repo.put_backup(&stanza, &record).await.unwrap();
    println!(
        "list: {gib} GiB in {files} files, {total_chunks} chunks; {:.1} MiB stored; written in {:.1} s; peak RSS while writing it whole {:.1} MiB",
        list_bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64(),
        peak_rss_mib()
    );

    if into.is_some() {
        return;
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--check")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
}

/// Runs the restore's check of the newest backup in `dir/repo`, in this process.
async fn check(dir: &Path) {
    let repo = local_repo(&dir.join("repo"));
    let stanza = Stanza::new("main").unwrap();
    let before = peak_rss_mib();
    let started = Instant::now();
    let request = RestoreRequest {
        backup: None,
        pgdata: dir.join("pgdata"),
        tablespace_map: Default::default(),
        restore_command: "true".into(),
        archive_mode: Default::default(),
        targets: tidemark_recovery::autoconf::TargetSettings::end_of_archive(1),
    };
    let prepared = prepare(&repo, &stanza, &request).await.unwrap();
    let layout = prepared.layout();
    println!(
        "check (a process of its own): {} pages, {} files, {} chunks in {:.1} s; peak RSS {:.1} MiB ({before:.1} MiB before it began)",
        layout.pages.len(),
        layout.files,
        layout.chunks,
        started.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
}

fn dir_entry(path: &str) -> FileEntry {
    FileEntry {
        tablespace: None,
        path: path.into(),
        mode: 0o700,
        size: 0,
        mtime: 1_700_000_000,
        kind: EntryKind::Dir,
    }
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(path).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        total += if meta.is_dir() {
            dir_size(&entry.path())
        } else {
            meta.len()
        };
    }
    total
}
