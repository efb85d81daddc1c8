//! Builds a synthetic repository for the expire/GC benchmark (`bench/expire-gc.sh`),
//! through the store's own API: a stanza `main` (cluster record), `BACKUPS` backup
//! records one hour apart on timeline 1, and `SEGMENTS` archived WAL segments, each
//! with its blob, claim and index entry, spread evenly between the backups.
//!
//! Each backup has a file list of one page naming `CHUNKS` small chunks: half of them
//! shared with the previous backup (what deduplication leaves), half its own. The blobs
//! are small (tens of bytes): the benchmark measures expire and collection, which list,
//! read records and remove objects, not bytes moved. Nothing here is real WAL: expire
//! reads WAL names, never WAL content.
//!
//! Usage: `synthetic_repo URL BACKUPS SEGMENTS CHUNKS` with `file:///…` or `s3://…`
//! (S3 settings from `TIDEMARK_S3_ENDPOINT`, `TIDEMARK_S3_ACCESS_KEY_ID`,
//! `TIDEMARK_S3_SECRET_ACCESS_KEY`; path-style).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{Duration as Span, Utc};
use futures::{StreamExt, TryStreamExt};
use tidemark_store::backup::{BackupRecord, EntryKind, FileEntry};
use tidemark_store::catalog::{ClusterRecord, Stanza, WalRecord};
use tidemark_store::pg::{Lsn, SystemId, TimelineId, WalFileName};
use tidemark_store::url::{open_backend, BackendOptions, RepoUrl, S3Options, Secret};
use tidemark_store::{Compression, Repo};

const SEGMENT: u64 = 16 << 20;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, backups, segments, chunks] = &args[..] else {
        eprintln!("usage: synthetic_repo URL BACKUPS SEGMENTS CHUNKS");
        std::process::exit(2);
    };
    let (backups, segments, chunks): (u64, u64, u64) = (
        backups.parse().unwrap(),
        segments.parse().unwrap(),
        chunks.parse().unwrap(),
    );
    let env = |k: &str| std::env::var(k).ok();
    let opts = BackendOptions {
        url: RepoUrl::parse(url).unwrap(),
        s3: S3Options {
            endpoint: env("TIDEMARK_S3_ENDPOINT"),
            region: Some("us-east-1".into()),
            path_style: true,
            access_key_id: env("TIDEMARK_S3_ACCESS_KEY_ID"),
            secret_access_key: env("TIDEMARK_S3_SECRET_ACCESS_KEY").map(Secret::new),
        },
        retry_for: Duration::from_secs(60),
    };
    let backend = open_backend(&opts).await.unwrap();
    let repo = Repo::new(Arc::clone(&backend), Compression::None);
    repo.ensure_format().await.unwrap();
    let stanza = Stanza::new("main").unwrap();
    let system_id = SystemId(7_000_000_000_000_000_001);
    let start = Utc::now() - Span::hours(backups as i64 + 1);
    repo.ensure_cluster(
        &stanza,
        &ClusterRecord {
            system_id,
            pg_major: 15,
            wal_segment_size: SEGMENT,
            wal_page_size: 8192,
            created_at: start,
            created_by: "init".into(),
        },
    )
    .await
    .unwrap();

    // WAL: segment 1.. SEGMENTS on timeline 1.
    futures::stream::iter(1..=segments)
        .map(|segno| {
            let repo = repo.clone();
            let stanza = stanza.clone();
            async move {
                let name: WalFileName = format!("00000001{:08X}{:08X}", segno >> 8, segno & 0xFF)
                    .parse()
                    .unwrap();
                let put = repo
                    .put_blob(Bytes::from(format!("wal segment {segno}")))
                    .await?;
                let record = WalRecord {
                    name: name.to_string(),
                    kind: "segment".into(),
                    digest: put.digest,
                    raw_size: SEGMENT,
                    stored_size: put.stored_len,
                    compression: Compression::None,
                    archived_at: start + Span::seconds(segno as i64),
                    system_id: Some(system_id),
                    start_lsn: Some(Lsn(segno * SEGMENT)),
                    tidemark_version: "synthetic".into(),
                    content: None,
                };
                repo.put_record(
                    &tidemark_store::catalog::wal_claim_key(&stanza, &name),
                    &record,
                )
                .await?;
                repo.put_wal_record(&stanza, &name, &put.digest, &record)
                    .await?;
                Ok::<_, tidemark_store::Error>(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();

    // Backups, one hour apart, each starting in its share of the WAL.
    let per_backup = (segments / backups.max(1)).max(1);
    futures::stream::iter(0..backups)
        .map(|i| {
            let repo = repo.clone();
            let stanza = stanza.clone();
            async move {
                let mut entries = Vec::new();
                for c in 0..chunks {
                    // Half shared with the previous backup, half its own.
                    let owner = if c % 2 == 0 { i / 2 } else { i };
                    let put = repo
                        .put_blob(Bytes::from(format!("chunk {c} of {owner}")))
                        .await?;
                    entries.push(FileEntry {
                        tablespace: None,
                        path: format!("base/1/{c}"),
                        mode: 0o600,
                        size: put.raw_len,
                        mtime: 0,
                        kind: EntryKind::File {
                            chunks: vec![put.digest],
                        },
                    });
                }
                let (list, _) = repo
                    .put_file_list(&entries, b"manifest", 1 << 20, 1 << 20)
                    .await?;
                let at = start + Span::hours(i as i64);
                let segno = 1 + i * per_backup;
                let record = BackupRecord {
                    id: at.format("%Y%m%dT%H%M%SZ").to_string(),
                    label: format!("synthetic {i}"),
                    system_id,
                    pg_version: "15.8".into(),
                    pg_major: 15,
                    wal_segment_size: SEGMENT,
                    timeline: TimelineId(1),
                    start_lsn: Lsn(segno * SEGMENT + 0x28),
                    stop_timeline: TimelineId(1),
                    stop_lsn: Lsn(segno * SEGMENT + 0x1000),
                    start_time: at,
                    stop_time: at,
                    tablespaces: vec![],
                    databases: vec![],
                    chunk_size: 1 << 20,
                    file_list: list.digest,
                    files: chunks,
                    size: 0,
                    chunks,
                    chunks_added: 0,
                    stored_added: 0,
                    tidemark_version: "synthetic".into(),
                    notices: None,
                    checksum_failures_ignored: false,
                };
                repo.put_backup(&stanza, &record).await?;
                Ok::<_, tidemark_store::Error>(())
            }
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await
        .unwrap();
    println!("built {backups} backups, {segments} segments, {chunks} chunks per backup");
}
