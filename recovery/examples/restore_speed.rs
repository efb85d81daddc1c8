//! Measures restore speed: writes a synthetic backup of page-like, compressible data
//! (PostgreSQL heap pages: headers, tuples, free space) into a temporary local
//! repository, then restores it a few times from the warm repository and prints MiB/s.
//!
//! ```text
//! cargo run --release -p tidemark-recovery --example restore_speed -- [MiB] [syncfs|fsync] [runs]
//! ```
//!
//! Defaults: 800 MiB, fsync (the restore's default), 3 runs. The temporary directory is created under
//! `$TMPDIR` (or /tmp); the repository and the restored data directories share its file
//! system. Every chunk is unique, so nothing is saved by deduplication. Each run prints
//! the wall time, MiB/s and the CPU time the process used.
//!
//! Environment knobs, for file systems that remember recent deletions (ext4 without a
//! journal skips inodes freed in the last 30 s when it allocates, so creating files
//! right after deleting many is slow): `SETTLE=<seconds>` waits between writing the
//! backup and the first restore; `DELETE_BETWEEN=1` deletes each restored copy before the
//! next run (by default they are kept until the end). `IN_FLIGHT=<n>` sets how many
//! chunks are in flight (default: the restore's, 2 × cores + 2).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tidemark_recovery::restore::{prepare, Progress, RestoreRequest, SyncMode};
use tidemark_store::backend::local::LocalBackend;
use tidemark_store::backup::{BackupRecord, EntryKind, FileEntry, CHUNK_SIZE, PAGE_BYTES};
use tidemark_store::catalog::Stanza;
use tidemark_store::{Compression, Repo};

const PAGE: usize = 8192;

/// One 8 KiB heap page: a header, line pointers, tuples of text and numbers, and free
/// space (zeros) between them, as in a table filled to about 75%.
fn page(out: &mut Vec<u8>, n: u64, rng: &mut u64) {
    let start = out.len();
    out.resize(start + PAGE, 0);
    let p = &mut out[start..];
    p[0..8].copy_from_slice(&(0x1_0000_0000 + n * 97).to_le_bytes()); // LSN
    p[8..10].copy_from_slice(&(n as u16).to_le_bytes()); // checksum
    let tuples = 40;
    let tuple_len = 150;
    for t in 0..tuples {
        let lp = 24 + t * 4;
        let off = (PAGE - (t + 1) * tuple_len) as u32;
        p[lp..lp + 4].copy_from_slice(&(off | (tuple_len as u32) << 17).to_le_bytes());
        let tuple = &mut p[off as usize..off as usize + tuple_len];
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        tuple[0..8].copy_from_slice(&rng.to_le_bytes()); // xmin/xmax-like noise
        tuple[8..16].copy_from_slice(&(n * 1000 + t as u64).to_le_bytes()); // an id
        let text = format!(
            "customer-{:08} order {:06} status shipped note: the quick brown fox {}",
            *rng % 100_000_000,
            (*rng >> 20) % 1_000_000,
            *rng % 7
        );
        let len = text.len().min(tuple_len - 16);
        tuple[16..16 + len].copy_from_slice(&text.as_bytes()[..len]);
    }
}

async fn store_file(
    repo: &Repo,
    path: String,
    size: usize,
    pages: &mut u64,
    rng: &mut u64,
) -> FileEntry {
    let mut chunks = Vec::new();
    let mut left = size;
    while left > 0 {
        let len = left.min(CHUNK_SIZE as usize);
        let mut raw = Vec::with_capacity(len + PAGE);
        while raw.len() < len {
            page(&mut raw, *pages, rng);
            *pages += 1;
        }
        raw.truncate(len);
        chunks.push(repo.put_blob(Bytes::from(raw)).await.unwrap().digest);
        left -= len;
    }
    FileEntry {
        tablespace: None,
        path,
        mode: 0o600,
        size: size as u64,
        mtime: 1_700_000_000,
        kind: EntryKind::File { chunks },
    }
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(path).unwrap() {
        let e = e.unwrap();
        let m = e.metadata().unwrap();
        total += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    total
}

/// User plus system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(800, |a| a.parse().expect("MiB"));
    let sync = match args.next().as_deref() {
        Some("syncfs") => SyncMode::SyncFs,
        None | Some("fsync") => SyncMode::FsyncEach,
        Some(other) => panic!("unknown sync mode {other}: syncfs or fsync"),
    };
    let runs: usize = args.next().map_or(3, |a| a.parse().expect("runs"));

    let dir = tempfile::tempdir().unwrap();
    // KEEP_REPO=DIR writes the repository there and keeps it, for timing the real
    // command: `tidemark --repo file://DIR --stanza bench restore --pgdata …`.
    let repo_dir =
        std::env::var_os("KEEP_REPO").map_or_else(|| dir.path().join("repo"), Into::into);
    let repo = Repo::new(
        Arc::new(LocalBackend::new(&repo_dir).unwrap()),
        Compression::Lz4,
    );
    let stanza = Stanza::new("bench").unwrap();

    // A data directory's shape: a few large relations (80% of the bytes), some 1 MiB
    // ones, and many small files.
    let total = mib << 20;
    let big = total * 8 / 10 / 10;
    let mut sizes: Vec<(String, usize)> = (0..10)
        .map(|i| (format!("base/5/{}", 16400 + i), big))
        .collect();
    let mid_count = total / 10 / (1 << 20);
    sizes.extend((0..mid_count).map(|i| (format!("base/5/{}", 17000 + i), 1 << 20)));
    let used: usize = sizes.iter().map(|s| s.1).sum();
    // About a thousand small files (catalogs, free-space and visibility maps), as in a
    // freshly initialised cluster.
    let small = ((total - used) / 1000).max(1);
    sizes.extend((0..(total - used) / small).map(|i| (format!("base/1/{}", 1000 + i), small)));

    let t = Instant::now();
    let mut entries = vec![FileEntry {
        tablespace: None,
        path: "base".into(),
        mode: 0o700,
        size: 0,
        mtime: 1_700_000_000,
        kind: EntryKind::Dir,
    }];
    let (mut pages, mut rng) = (0u64, 0x9e37_79b9_7f4a_7c15u64);
    for (path, size) in sizes {
        entries.push(store_file(&repo, path, size, &mut pages, &mut rng).await);
    }
    let files = entries.len() - 1;
    let (list, _) = repo
        .put_file_list(
            &entries,
            b"{\"PostgreSQL-Backup-Manifest-Version\": 1}\n",
            CHUNK_SIZE,
            PAGE_BYTES,
        )
        .await
        .unwrap();
    let list_digest = list.digest;
    let now = chrono::Utc::now();
    let bytes = (mib as u64) << 20;
    let record = BackupRecord {
        label: "bench".into(),
        file_list: list_digest,
        files: files as u64,
        size: bytes,
        ..BackupRecord::example("20261121T000000Z", now)
    };
    repo.put_backup(&stanza, &record).await.unwrap();
    let stored = dir_size(&repo_dir);
    println!(
        "backup: {files} files, {} MiB raw, {} MiB stored ({:.1}x), written in {:.1} s",
        bytes >> 20,
        stored >> 20,
        bytes as f64 / stored as f64,
        t.elapsed().as_secs_f64()
    );

    if let Some(secs) = std::env::var("SETTLE").ok().and_then(|s| s.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
    for run in 1..=runs {
        let pgdata = dir.path().join(format!("pgdata{run}"));
        let request = RestoreRequest {
            backup: None,
            pgdata: pgdata.clone(),
            tablespace_map: Default::default(),
            restore_command: "tidemark archive-get %f %p".into(),
            archive_mode: Default::default(),
            targets: tidemark_recovery::autoconf::TargetSettings::end_of_archive(1),
        };
        let progress = Arc::new(Progress::default());
        let cpu_before = cpu_seconds();
        let t = Instant::now();
        let prepared = prepare(&repo, &stanza, &request)
            .await
            .unwrap()
            .with_sync(sync);
        let prepared = match std::env::var("IN_FLIGHT").ok().and_then(|v| v.parse().ok()) {
            Some(n) => prepared.with_in_flight(n),
            None => prepared,
        };
        let report = prepared.run(&repo, &progress).await.unwrap();
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_seconds() - cpu_before;
        println!(
            "restore {run}: {} files, {} MiB ({:.0} MB) in {:.3} s: {:.0} MiB/s ({sync:?}; {cpu:.2} s of CPU)",
            report.files,
            report.bytes >> 20,
            report.bytes as f64 / 1e6,
            secs,
            report.bytes as f64 / (1 << 20) as f64 / secs
        );
        // Kept until the end unless DELETE_BETWEEN is set: on ext4 without a journal,
        // inodes freed in the last 30 s are skipped when allocating new ones, which makes
        // creating files right after deleting many of them several times slower.
        if std::env::var_os("DELETE_BETWEEN").is_some() {
            std::fs::remove_dir_all(&pgdata).unwrap();
        }
    }
}
