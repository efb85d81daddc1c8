//! Writes a synthetic catalog for the `plan` benchmark (`bench/plan.sh`): a stanza `main`
//! whose WAL index holds N segments on timeline 1 with content summaries (no blobs: the
//! planner reads only the index), and M backups spread over them. The segments' summaries
//! look like a steady workload: 1,000 commits a segment, one second of commits each,
//! a restore point every 100 segments.
//!
//! ```text
//! cargo run --release -p tidemark-recovery --example plan_catalog -- URL [N] [M]
//! ```
//!
//! `URL` is `file:///path` or `s3://bucket/prefix` (S3 settings from the same
//! `TIDEMARK_S3_*` variables as tidemark's). Defaults: 2,000 segments, 50 backups. It
//! prints the time range the commits cover, for choosing targets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use futures::{StreamExt, TryStreamExt};
use tidemark_store::backup::BackupRecord;
use tidemark_store::catalog::{ClusterRecord, Stanza, WalRecord};
use tidemark_store::pg::wal::{
    CrossingEnd, CrossingStart, RestorePointAt, SegmentSummary, XactStats,
};
use tidemark_store::pg::{
    Lsn, PgMajor, PgTimestamp, SegmentSize, SystemId, TimelineId, WalFileName, WalSegmentName,
};
use tidemark_store::url::{open_backend, BackendOptions, RepoUrl, S3Options, Secret};
use tidemark_store::wal_content::WalContent;
use tidemark_store::{Compression, Digest, Repo};

const SEGMENT: u64 = 16 << 20;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn at(base: DateTime<Utc>, micros: i64) -> PgTimestamp {
    PgTimestamp::from_unix_micros(base.timestamp_micros() + micros)
}

fn summary(segno: u64, base: DateTime<Utc>) -> SegmentSummary {
    let start = segno * SEGMENT;
    let t0 = segno as i64 * 1_000_000;
    let restore_points = if segno % 100 == 50 {
        vec![RestorePointAt {
            lsn: Lsn(start + 0x8000),
            time: at(base, t0 + 500_000),
            name: format!("point-{segno}"),
        }]
    } else {
        Vec::new()
    };
    SegmentSummary {
        segment_start: Lsn(start),
        timeline: 1,
        major: PgMajor::from_number(16).expect("16"),
        first_record: Some(Lsn(start + 0x60)),
        last_record: Some(Lsn(start + SEGMENT - 0x100)),
        end_of_records: Lsn(start + SEGMENT - 0xC0),
        records: 60_000,
        switched: false,
        ended_at: None,
        xacts: Some(XactStats {
            commits: 990,
            aborts: 10,
            first_lsn: Lsn(start + 0x200),
            last_lsn: Lsn(start + SEGMENT - 0x400),
            first_time: at(base, t0),
            last_time: at(base, t0 + 999_000),
            min_time: at(base, t0),
            max_time: at(base, t0 + 999_000),
            min_xid: 1000 + segno as u32 * 1000,
            max_xid: 1999 + segno as u32 * 1000,
        }),
        restore_points,
        restore_points_omitted: 0,
        timeline_switches: Vec::new(),
        // A heap record crosses every boundary: nothing the planner needs to join.
        crossing_end: (segno > 1).then_some(CrossingEnd {
            remaining: 120,
            bytes: None,
        }),
        crossing_start: Some(CrossingStart {
            lsn: Lsn(start + SEGMENT - 0xC0),
            total_len: Some(312),
            rmid: Some(10),
            info: Some(0),
            xid: Some(1999 + segno as u32 * 1000),
            bytes: None,
        }),
        damage: None,
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .expect("usage: plan_catalog URL [segments] [backups]");
    let segments: u64 = args.get(2).map_or(2000, |a| a.parse().expect("segments"));
    let backups: u64 = args.get(3).map_or(50, |a| a.parse().expect("backups"));
    let opts = BackendOptions {
        url: RepoUrl::parse(url).expect("URL"),
        s3: S3Options {
            endpoint: env("TIDEMARK_S3_ENDPOINT"),
            region: env("TIDEMARK_S3_REGION"),
            path_style: env("TIDEMARK_S3_PATH_STYLE").as_deref() == Some("true"),
            access_key_id: env("TIDEMARK_S3_ACCESS_KEY_ID"),
            secret_access_key: env("TIDEMARK_S3_SECRET_ACCESS_KEY").map(Secret::new),
        },
        retry_for: Duration::from_secs(30),
    };
    let repo = Repo::new(
        open_backend(&opts).await.expect("backend"),
        Compression::Lz4,
    );
    let stanza = Stanza::new("main").unwrap();
    let started = Instant::now();
    repo.ensure_format().await.expect("format");
    let base = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let system_id = SystemId(7_400_000_000_000_000_001);
    repo.ensure_cluster(
        &stanza,
        &ClusterRecord {
            system_id,
            pg_major: 16,
            wal_segment_size: SEGMENT,
            wal_page_size: 8192,
            created_at: base,
            created_by: "plan_catalog".into(),
        },
    )
    .await
    .expect("cluster");

    let size = SegmentSize::new(SEGMENT).unwrap();
    let repo = Arc::new(repo);
    futures::stream::iter(1..=segments)
        .map(|segno| {
            let repo = repo.clone();
            let stanza = stanza.clone();
            async move {
                let seg = WalSegmentName::from_segment_number(TimelineId(1), segno, size);
                let name = WalFileName::Segment(seg);
                let digest = Digest::of(format!("segment {segno}").as_bytes());
                let record = WalRecord {
                    name: name.to_string(),
                    kind: name.kind().to_string(),
                    digest,
                    raw_size: SEGMENT,
                    stored_size: 4 << 20,
                    compression: Compression::Lz4,
                    archived_at: base,
                    system_id: Some(system_id),
                    start_lsn: Some(Lsn(segno * SEGMENT)),
                    tidemark_version: "plan_catalog".into(),
                    content: Some(WalContent::from(&summary(segno, base))),
                };
                repo.put_wal_record(&stanza, &name, &digest, &record).await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<bool>>()
        .await
        .expect("WAL index");

    let every = (segments / backups.max(1)).max(1);
    for k in 0..backups {
        let segno = 2 + k * every;
        if segno + 1 > segments {
            break;
        }
        let start_time = base + chrono::Duration::microseconds(segno as i64 * 1_000_000 + 100);
        let mut record = BackupRecord::example(
            &format!("{}", start_time.format("%Y%m%dT%H%M%SZ")),
            start_time,
        );
        record.system_id = system_id;
        record.pg_major = 16;
        record.pg_version = "16.4".into();
        record.start_lsn = Lsn(segno * SEGMENT + 0x28);
        record.stop_lsn = Lsn(segno * SEGMENT + 0x4000);
        record.stop_time = start_time + chrono::Duration::milliseconds(200);
        record.size = 1 << 30;
        repo.put_backup(&stanza, &record).await.expect("backup");
    }
    let first = base + chrono::Duration::seconds(1);
    let last = base + chrono::Duration::seconds(segments as i64 + 1);
    println!(
        "wrote {segments} segments and {backups} backups in {:.1} s; commits from {} to {}",
        started.elapsed().as_secs_f64(),
        first.to_rfc3339(),
        last.to_rfc3339()
    );
}
