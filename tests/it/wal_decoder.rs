//! The WAL record decoder (`tidemark-pg`, the library) on WAL written by real servers.
//!
//! One named workload runs on a cluster with 1 MiB segments (so that records cross
//! segment boundaries cheaply), `track_commit_timestamp = on`, prepared transactions and
//! compressed full-page images (`wal_compression = on`):
//! 200 small commits (a DO loop with COMMIT), a 3 MB transaction with savepoints (two
//! released, one rolled back) crossing segments, a prepared transaction committed and one
//! rolled back, a dropped table (relations and statistics in the commit record), two
//! restore points with the same name, a checkpoint, a 2.5 MB non-transactional logical
//! message (one record over three segments), `pg_switch_wal()`, more commits, three
//! commits of 150 subtransactions each placed (by padding the WAL with logical messages)
//! so that they cross a segment boundary, then a clean shutdown. Every segment in
//! `pg_wal` is then decoded, whole and in uneven pieces.
//!
//! What is proven:
//! - PostgreSQL 15: every record `pg_waldump` prints for the same segments, with the same
//!   LSN, resource manager, lengths (total, and without images), xid and `xl_prev`, none
//!   more and none fewer; commit/abort timestamps and subtransaction counts and restore
//!   point names equal what `pg_waldump` prints;
//! - every major present (13 to 18, the server binaries from `scripts/fetch-postgres.sh`):
//!   the decoder reads the major from the page magic, and its records agree with SQL
//!   facts: each xid from `txid_current()` has its commit with the time of
//!   `pg_xact_commit_timestamp()`; the big transaction's commit lists its two released
//!   subtransactions and the rolled-back one has its own abort; the prepared ones end with
//!   COMMIT/ABORT PREPARED under their xids; the restore points' ends are what
//!   `pg_create_restore_point()` returned; the checkpoint record is at
//!   `pg_control_checkpoint()`'s LSN with its redo, timeline and time; the switch record
//!   ends where `pg_switch_wal()` said; the WAL ends with the shutdown checkpoint;
//! - segment summaries (`summarize_segment`, every major; against `pg_waldump`'s lines on
//!   15, against the decoder's records elsewhere): each segment summarised alone has the
//!   records, commits and aborts (numbers, first and last LSN and time, earliest and
//!   latest time, xid range), restore points and switch of that segment; records
//!   crossing a boundary are joined from the two summaries (`join_crossing`), among them
//!   at least one of the placed commits, and counted (`absorb`); only the last segment
//!   ends inside; decoding each segment in full with the next ones
//!   (`summarize_segment_with`) hands over every commit and abort once; a flipped byte in
//!   a commit is damage at its LSN with the records before it summarised;
//! - a timeline switch: the cluster is then promoted as a standby without a source;
//!   timeline 2, decoded from its first segment, holds timeline 1's copied records, then
//!   the end-of-recovery record (1 -> 2) exactly at `00000002.history`'s switch point
//!   (which the segment's summary lists as its timeline switch), then the commit made
//!   after the promotion.
//!
//! - damage in the middle of real WAL (15): a flipped byte is a CRC error at its record's
//!   LSN, a zeroed record header followed by written WAL on its page is an error, not an
//!   end; a segment cut short ends inside the segment, which `WalEnd::within_segment`
//!   says.
//!
//! Skips (or fails under `CI`) when a major's binaries are missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use tidemark_pg::wal::{
    summarize_segment, summarize_segment_with, DecodeError, DecodeErrorKind, DecoderConfig,
    EndReason, Payload, SegmentSummary, TimelineSwitchAt, WalDecoder, WalEnd, WalRecord, XactKind,
};
use tidemark_pg::{Lsn, PgMajor};

use crate::harness::pg::{pg_bin, server_bin, Cluster, ClusterOptions, TestDir};
use crate::skip_or_fail;

pub(crate) const SEG: u64 = 1 << 20;

/// What SQL said while the workload ran.
#[derive(Debug, Default)]
struct Facts {
    /// xid of each small commit, with its commit time (UTC text, microseconds).
    commits: Vec<(u32, String)>,
    big_xid: u32,
    p1_xid: u32,
    p2_xid: u32,
    restore_point_ends: Vec<Lsn>,
    checkpoint: (Lsn, Lsn, u32, i64),
    switch_end: Lsn,
    message_end: Lsn,
    /// Transactions whose commit record was placed across a segment boundary.
    cross_xids: Vec<u32>,
}

fn lsn(s: &str) -> Lsn {
    Lsn::parse(s).unwrap_or_else(|| panic!("not an LSN: {s:?}"))
}

fn cluster(dir: &TestDir, bin: Option<PathBuf>) -> Cluster {
    let mut c = Cluster::init(
        dir,
        "pg",
        ClusterOptions {
            wal_segsize_mb: Some(1),
            bin,
            settings: vec![
                ("track_commit_timestamp".into(), "on".into()),
                ("max_prepared_transactions".into(), "5".into()),
                // Compressed full-page images (pglz; `on` in every major): the image
                // header then carries a hole length, and its flag moved in 15.
                ("wal_compression".into(), "on".into()),
            ],
            ..Default::default()
        },
    );
    c.start();
    c
}

fn workload(c: &Cluster) -> Facts {
    let mut f = Facts::default();
    c.psql("create table tm_marks(xid bigint, pad text); create table tm_drop(x int)");
    c.psql(
        "do $$ begin for i in 1..200 loop \
           insert into tm_marks values (txid_current(), 'small' || i); commit; \
         end loop; end $$",
    );
    c.psql(
        "begin; insert into tm_marks values (txid_current(), 'big'); \
         savepoint s1; insert into tm_marks select 0, repeat('x', 1000) from generate_series(1, 1500); release s1; \
         savepoint s2; insert into tm_marks select 0, repeat('y', 1000) from generate_series(1, 500); rollback to s2; \
         savepoint s3; insert into tm_marks select 0, repeat('z', 1000) from generate_series(1, 1500); release s3; \
         commit",
    );
    c.psql("begin; insert into tm_marks values (txid_current(), 'p1'); prepare transaction 'p1'");
    c.psql("commit prepared 'p1'");
    c.psql("begin; insert into tm_marks values (txid_current(), 'p2'); prepare transaction 'p2'");
    f.p2_xid = c
        .psql("select transaction from pg_prepared_xacts where gid = 'p2'")
        .parse()
        .unwrap();
    c.psql("rollback prepared 'p2'");
    c.psql("drop table tm_drop");
    for _ in 0..2 {
        f.restore_point_ends
            .push(lsn(&c.psql("select pg_create_restore_point('tm-rp')")));
    }
    c.psql("checkpoint");
    let cp = c.psql(
        "select checkpoint_lsn, redo_lsn, timeline_id, extract(epoch from checkpoint_time)::bigint \
         from pg_control_checkpoint()",
    );
    let p: Vec<&str> = cp.split('|').collect();
    f.checkpoint = (
        lsn(p[0]),
        lsn(p[1]),
        p[2].parse().unwrap(),
        p[3].parse().unwrap(),
    );
    f.message_end =
        lsn(&c.psql("select pg_logical_emit_message(false, 'tm', repeat('m', 2500000))"));
    f.switch_end = lsn(&c.psql("select pg_switch_wal()"));
    c.psql(
        "do $$ begin for i in 1..20 loop \
           insert into tm_marks values (txid_current(), 'after' || i); commit; \
         end loop; end $$",
    );
    f.cross_xids = commits_across_segments(c, 150);
    let rows = c.psql(
        "select xid, to_char(pg_xact_commit_timestamp(xid::text::xid) at time zone 'UTC', \
         'YYYY-MM-DD HH24:MI:SS.US') from tm_marks where pad like 'small%' or pad like 'after%' \
         or pad in ('big', 'p1') order by xid",
    );
    for line in rows.lines() {
        let (x, t) = line.split_once('|').unwrap();
        f.commits.push((x.parse().unwrap(), t.to_string()));
    }
    f.big_xid = c
        .psql("select xid from tm_marks where pad = 'big'")
        .parse()
        .unwrap();
    f.p1_xid = c
        .psql("select xid from tm_marks where pad = 'p1'")
        .parse()
        .unwrap();
    f
}

/// Three transactions whose commit record (about 50 bytes and 4 per subtransaction: 650
/// bytes for 150) starts 100 to 500 bytes before a boundary of [`SEG`]-byte segments: each
/// pads the WAL with non-transactional logical messages until the insert position is
/// there, then commits. Other backends may write in between (the background writer's
/// snapshots): the caller checks which commits did cross. Their xids. Needs the table
/// `tm_marks(xid bigint, pad text)`.
pub(crate) fn commits_across_segments(c: &Cluster, subxacts: u32) -> Vec<u32> {
    for i in 0..3 {
        c.psql(&format!(
            "begin; \
             do $$ begin for i in 1..{subxacts} loop \
               begin insert into tm_marks values (txid_current(), 'cross-sub'); \
               exception when others then null; end; \
             end loop; end $$; \
             insert into tm_marks values (txid_current(), 'cross-{i}'); \
             do $$ declare d bigint; n bigint; begin \
               for k in 1..20 loop \
                 d := {SEG} - (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint % {SEG}; \
                 exit when d between 100 and 500; \
                 n := case when d > 400 then d - 300 else d + {SEG} - 300 end; \
                 n := n - 80 - 24 * (n / 8192 + 1); \
                 perform pg_logical_emit_message(false, 'tm-pad', repeat('p', greatest(n, 1)::int)); \
               end loop; end $$; \
             commit"
        ));
    }
    c.psql("select xid from tm_marks where pad like 'cross-_' order by pad")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// The WAL segment files in `pg_wal`, sorted.
fn segments(pg_wal: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = std::fs::read_dir(pg_wal)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit()))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = std::fs::read(pg_wal.join(&n)).unwrap();
            (n, bytes)
        })
        .collect()
}

fn segment_start(name: &str) -> u64 {
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    (log * (0x1_0000_0000 / SEG) + seg) * SEG
}

/// Decodes the segments in order, each fed in pieces of `sizes` (cycled), until the WAL
/// ends. Returns the records, the end, and the names of the segments read.
fn decode(segs: &[(String, Vec<u8>)], sizes: &[usize]) -> (Vec<WalRecord>, WalEnd, PgMajor) {
    let start = segment_start(&segs[0].0);
    let mut d = WalDecoder::new(DecoderConfig::new(SEG, Lsn(start))).unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    for (n, (name, bytes)) in segs.iter().enumerate() {
        assert_eq!(
            segment_start(name),
            start + n as u64 * SEG,
            "segments in a row"
        );
        let mut rest = &bytes[..];
        while !rest.is_empty() && d.end().is_none() {
            let k = sizes[i % sizes.len()].min(rest.len());
            i += 1;
            d.feed_into(&rest[..k], &mut out)
                .unwrap_or_else(|e| panic!("decoding {name}: {e}"));
            rest = &rest[k..];
        }
        if d.end().is_some() {
            break;
        }
    }
    let end = *d.end().expect("the written WAL ends in pg_wal");
    (out, end, d.major().unwrap())
}

/// Decodes the segments whole; the first error, if any.
fn try_decode(segs: &[(String, Vec<u8>)]) -> Result<Option<WalEnd>, DecodeError> {
    let start = segment_start(&segs[0].0);
    let mut d = WalDecoder::new(DecoderConfig::new(SEG, Lsn(start))).unwrap();
    for (_, bytes) in segs {
        d.feed(bytes)?;
        if d.end().is_some() {
            break;
        }
    }
    Ok(d.end().copied())
}

/// Damage in the middle of real WAL is an error naming where, never an early end.
fn damage_is_named(segs: &[(String, Vec<u8>)], recs: &[WalRecord]) {
    let start = segment_start(&segs[0].0);
    let at = |lsn: u64| ((lsn - start) / SEG) as usize;
    let off = |lsn: u64| ((lsn - start) % SEG) as usize;
    let page = 8192;

    // A flipped byte inside a commit record: a CRC error at the record's LSN.
    let c = recs
        .iter()
        .find(|r| matches!(r.payload, Payload::Commit(_)) && r.lsn.0 / page == (r.end.0 - 1) / page)
        .unwrap();
    let mut bad = segs.to_vec();
    bad[at(c.lsn.0)].1[off(c.lsn.0) + 26] ^= 0x40;
    let e = try_decode(&bad).unwrap_err();
    assert_eq!(e.lsn, c.lsn);
    assert!(matches!(e.kind, DecodeErrorKind::CrcMismatch { .. }), "{e}");

    // A zeroed record header with written WAL after it on the page: not an end of WAL.
    let (r, _) = recs
        .windows(2)
        .map(|w| (&w[0], &w[1]))
        .find(|(r, next)| {
            r.lsn.0 % page > 100
                && next.lsn.0 / page == r.lsn.0 / page
                && next.end.0 / page == r.lsn.0 / page
        })
        .unwrap();
    let mut bad = segs.to_vec();
    let o = off(r.lsn.0);
    bad[at(r.lsn.0)].1[o..o + 24].fill(0);
    let e = try_decode(&bad).unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::NonZeroAfterEnd, "{e}");
    assert!(e.lsn > r.lsn && e.lsn.0 / page == r.lsn.0 / page, "{e}");

    // A segment whose second half is zeros (a truncated copy): the decoder sees the end of
    // WAL there, and says it lies inside the segment, which a caller holding a complete
    // archived segment treats as damage.
    let mut bad = segs.to_vec();
    bad[1].1[(SEG / 2) as usize..].fill(0);
    let end = try_decode(&bad).unwrap().expect("an end");
    let half = segment_start(&segs[1].0) + SEG / 2;
    assert_eq!(end.reason, EndReason::ZeroPage);
    // At the zero page, or at the start of the record it cut (which never completed).
    assert!(
        end.at.0 == half || end.incomplete_record == Some(end.at),
        "{end:?}"
    );
    assert!(end.within_segment(SEG));
}

fn align8(l: Lsn) -> Lsn {
    Lsn(l.0.next_multiple_of(8))
}

/// The checks that hold on every major (see the module documentation).
fn check_facts(recs: &[WalRecord], end: &WalEnd, f: &Facts, major: PgMajor) {
    let commits: Vec<_> = recs
        .iter()
        .filter_map(|r| match &r.payload {
            Payload::Commit(c) => Some(c),
            _ => None,
        })
        .collect();
    let aborts: Vec<_> = recs
        .iter()
        .filter_map(|r| match &r.payload {
            Payload::Abort(c) => Some(c),
            _ => None,
        })
        .collect();
    assert!(
        f.commits.len() >= 222,
        "{} commits from SQL",
        f.commits.len()
    );
    for (xid, time) in &f.commits {
        let c = commits
            .iter()
            .find(|c| c.xid == *xid)
            .unwrap_or_else(|| panic!("commit of xid {xid} decoded"));
        assert!(
            c.time.to_string().starts_with(time.as_str()),
            "xid {xid}: decoded {} against pg_xact_commit_timestamp {time}",
            c.time
        );
    }
    let big = commits.iter().find(|c| c.xid == f.big_xid).unwrap();
    // s1, then s2 again (ROLLBACK TO keeps the savepoint: a new subtransaction that gets
    // an xid when s3, nested in it, writes), then s3.
    assert_eq!(
        big.subxacts.len(),
        3,
        "three committed subtransactions: {big:?}"
    );
    assert!(
        aborts.iter().any(|a| a.kind == XactKind::Plain
            && a.xid > f.big_xid
            && !big.subxacts.contains(&a.xid)),
        "the rolled-back savepoint has its own abort"
    );
    let p1 = commits.iter().find(|c| c.xid == f.p1_xid).unwrap();
    assert_eq!(p1.kind, XactKind::Prepared);
    assert_eq!(p1.twophase_xid, Some(f.p1_xid));
    let p2 = aborts.iter().find(|a| a.xid == f.p2_xid).unwrap();
    assert_eq!(p2.kind, XactKind::Prepared);
    let drop = commits
        .iter()
        .find(|c| c.dropped_rels > 0)
        .expect("the dropped table's commit lists its relation");
    // Statistics entries to drop: 15 and later (12 bytes each, 16 in 18: the payload
    // parser checks that the parts add up to the record's length exactly).
    assert_eq!(drop.dropped_stats > 0, major >= PgMajor::V15, "{drop:?}");

    let rps: Vec<_> = recs
        .iter()
        .filter_map(|r| match &r.payload {
            Payload::RestorePoint(rp) => Some((rp.name.as_str(), align8(r.end))),
            _ => None,
        })
        .collect();
    assert_eq!(
        rps,
        vec![
            ("tm-rp", f.restore_point_ends[0]),
            ("tm-rp", f.restore_point_ends[1])
        ]
    );

    let (cp_lsn, redo, tli, time) = f.checkpoint;
    let cp = recs
        .iter()
        .find(|r| r.lsn == cp_lsn)
        .expect("the checkpoint record");
    let Payload::Checkpoint(c) = &cp.payload else {
        panic!("not a checkpoint at {cp_lsn}: {cp:?}")
    };
    assert_eq!((c.redo, c.timeline, c.time_unix_secs), (redo, tli, time));
    assert!(!c.shutdown);

    let msg = recs
        .iter()
        .find(|r| align8(r.end) == f.message_end)
        .expect("the logical message");
    assert_eq!(msg.rmgr_name(), "LogicalMessage");
    assert!(
        msg.end.0 / SEG - msg.lsn.0 / SEG >= 2,
        "spans three segments"
    );
    assert!(msg.main_data.len() > 2_500_000);

    let sw = recs
        .iter()
        .find(|r| r.payload == Payload::Switch)
        .expect("the switch");
    assert_eq!(align8(sw.end), f.switch_end);
    let after = recs.iter().find(|r| r.lsn > sw.lsn).unwrap();
    assert_eq!(
        after.lsn.0 % SEG,
        40,
        "the next record opens the next segment"
    );
    assert_eq!(after.header.prev, sw.lsn);

    assert!(
        recs.iter().any(|r| r.fpi_bytes > 0),
        "full-page images were skipped to the main data"
    );

    let last = recs.last().unwrap();
    assert!(
        matches!(last.payload, Payload::Checkpoint(c) if c.shutdown),
        "the WAL ends with the shutdown checkpoint: {last:?}"
    );
    assert_eq!(end.last_record_end, last.end);
    assert!(end.incomplete_record.is_none());
}

/// Promotes the stopped cluster as a standby without a source (it replays its own
/// `pg_wal`, then `pg_promote()` starts timeline 2), commits once more, and decodes
/// timeline 2 from the start of its first segment: a copy of timeline 1's records up to
/// the switch point, then the record that marks the switch, exactly at the switch point
/// `00000002.history` names.
fn timeline_switch(c: &mut Cluster, major: PgMajor) {
    let signal = c.data_dir().join("standby.signal");
    std::fs::write(&signal, b"").unwrap();
    crate::harness::pg::chown_to_user(&signal);
    c.start();
    assert_eq!(c.psql("select pg_promote(true, 60)"), "t");
    c.psql("insert into tm_marks values (txid_current(), 'tl2')");
    let xid: u32 = c
        .psql("select xid from tm_marks where pad = 'tl2'")
        .parse()
        .unwrap();
    c.stop();
    let history = std::fs::read_to_string(c.pg_wal().join("00000002.history")).unwrap();
    let switch_point = lsn(history.lines().last().unwrap().split('\t').nth(1).unwrap());
    let segs: Vec<_> = segments(&c.pg_wal())
        .into_iter()
        .filter(|(n, _)| n.starts_with("00000002"))
        .collect();
    let (recs, _, _) = decode(&segs, &[5000]);
    let switch: Vec<_> = recs
        .iter()
        .filter_map(|r| r.payload.timeline_switch().map(|s| (r.lsn, s, r)))
        .collect();
    assert_eq!(switch.len(), 1, "one timeline switch: {switch:?}");
    let (at, sw, rec) = switch[0];
    assert_eq!((sw.from, sw.to), (1, 2));
    let summary = summarize_segment(&segs[0].1, SEG, Lsn(segment_start(&segs[0].0)), None)
        .unwrap_or_else(|e| panic!("{}: {e}", segs[0].0));
    assert_eq!(
        summary.timeline_switches,
        vec![TimelineSwitchAt {
            lsn: at,
            from: 1,
            to: 2
        }],
        "the summary of timeline 2's first segment"
    );
    assert_eq!(
        at, switch_point,
        "the switch record is at the history file's switch point"
    );
    assert!(
        recs.iter().any(|r| r.lsn < at && r.timeline == 1),
        "timeline 1's copy before it"
    );
    let after = recs
        .iter()
        .find_map(|r| r.payload.xact_completion().filter(|x| x.xid == xid))
        .expect("the commit on timeline 2");
    assert!(after.time.unix_micros() > 0);
    if let Payload::EndOfRecovery(e) = &rec.payload {
        // wal_level joined xl_end_of_recovery in 17 (replica = 1).
        let expected = (major >= PgMajor::V17).then_some(1);
        assert_eq!(e.wal_level, expected, "{major}: {e:?}");
    }
    eprintln!(
        "timeline switch 1 -> 2 at {at} ({}), {} records decoded on timeline 2",
        match rec.payload {
            Payload::EndOfRecovery(_) => "XLOG_END_OF_RECOVERY",
            _ => "end-of-recovery checkpoint",
        },
        recs.len()
    );
}

/// What [`run`] leaves for further checks: the test folder (the cluster's `pg_wal`), the
/// segments read, the records and the end.
struct Run {
    dir: TestDir,
    segs: Vec<(String, Vec<u8>)>,
    recs: Vec<WalRecord>,
    end: WalEnd,
    /// [`Facts::cross_xids`].
    cross_xids: Vec<u32>,
}

/// Runs the workload on a cluster of `major` and decodes its WAL.
fn run(major: PgMajor, bin: Option<PathBuf>) -> Run {
    let dir = TestDir::new(&format!("wal-decoder-{}", major.number()));
    let mut c = cluster(&dir, bin);
    let facts = workload(&c);
    c.stop();
    let segs = segments(&c.pg_wal());
    let segs: Vec<_> = segs
        .into_iter()
        .filter(|(n, _)| n.starts_with("00000001"))
        .collect();
    let (recs, end, found) = decode(&segs, &[segs[0].1.len()]);
    assert_eq!(found, major, "major read from the page magic");
    // The same records when fed in uneven pieces (1 byte to more than a page).
    let (pieces, end2, _) = decode(&segs, &[1, 7, 8192, 3, 65_537, 24, 100_000]);
    assert_eq!(pieces, recs);
    assert_eq!(end2, end);
    check_facts(&recs, &end, &facts, major);
    let seen: Vec<Seen> = recs.iter().map(Seen::from_record).collect();
    check_summaries(&segs, &seen, &facts.cross_xids);
    timeline_switch(&mut c, major);
    eprintln!(
        "{major}: {} records decoded from {} segments, end at {} ({:?})",
        recs.len(),
        segs.len(),
        end.at,
        end.reason
    );
    Run {
        dir,
        segs,
        recs,
        end,
        cross_xids: facts.cross_xids,
    }
}

/// One line of `pg_waldump`.
#[derive(Debug, PartialEq)]
struct DumpLine {
    rmgr: String,
    rec_len: u32,
    tot_len: u32,
    xid: u32,
    lsn: Lsn,
    prev: Lsn,
    desc: String,
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key:?} in {line:?}"))
        + key.len();
    line[at..].trim_start()
}

fn parse_dump_line(line: &str) -> DumpLine {
    let rmgr = field(line, "rmgr:").split_whitespace().next().unwrap();
    let len = field(line, "len (rec/tot):");
    let (rec, tot) = len.split_once('/').unwrap();
    let tot = tot.trim_start().split(',').next().unwrap();
    let tx = field(line, "tx:").split(',').next().unwrap();
    let l = field(line, "lsn:").split(',').next().unwrap();
    let prev = field(line, "prev ").split(',').next().unwrap();
    DumpLine {
        rmgr: rmgr.to_string(),
        rec_len: rec.trim().parse().unwrap(),
        tot_len: tot.trim().parse().unwrap(),
        xid: tx.trim().parse().unwrap(),
        lsn: lsn(l),
        prev: lsn(prev),
        desc: field(line, "desc:").to_string(),
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` as `pg_waldump` prints it (TZ=UTC).
fn waldump_time(desc: &str) -> Option<&str> {
    let b = desc.as_bytes();
    (0..b.len().saturating_sub(26)).find_map(|i| {
        let s = &desc[i..i + 26];
        let ok = s.bytes().enumerate().all(|(k, c)| match k {
            4 | 7 => c == b'-',
            10 => c == b' ',
            13 | 16 => c == b':',
            19 => c == b'.',
            _ => c.is_ascii_digit(),
        });
        ok.then_some(s)
    })
}

#[test]
fn decodes_postgres_15_wal_as_pg_waldump_does() {
    let Some(bin) = pg_bin() else {
        skip_or_fail!("PostgreSQL 15 binaries not found");
    };
    let waldump = bin.join("pg_waldump");
    if !waldump.is_file() {
        skip_or_fail!("no pg_waldump at {}", waldump.display());
    }
    let Run {
        dir,
        segs,
        recs,
        end,
        cross_xids,
    } = run(PgMajor::V15, None);
    let wal = dir.path().join("pg/data/pg_wal");
    let out = Command::new(&waldump)
        .env("TZ", "UTC")
        .arg("-p")
        .arg(&wal)
        .arg(&segs[0].0)
        .arg(&segs.last().unwrap().0)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // pg_waldump ends where the written WAL ends, with an error message saying so.
    assert!(
        out.status.success() || stderr.contains("invalid record length"),
        "pg_waldump: {stderr}"
    );
    assert!(
        stderr.contains(&end.at.to_string()),
        "pg_waldump stopped at {}: {stderr}",
        end.at
    );
    let lines: Vec<DumpLine> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("rmgr:"))
        .map(parse_dump_line)
        .collect();
    assert_eq!(lines.len(), recs.len(), "as many records as pg_waldump");
    damage_is_named(&segs, &recs);
    let (mut times, mut names, mut subx) = (0, 0, 0);
    for (r, l) in recs.iter().zip(&lines) {
        let ours = DumpLine {
            rmgr: r.rmgr_name(),
            rec_len: r.header.tot_len - r.fpi_bytes,
            tot_len: r.header.tot_len,
            xid: r.header.xid,
            lsn: r.lsn,
            prev: r.header.prev,
            desc: l.desc.clone(),
        };
        assert_eq!(&ours, l);
        if let Some(x) = r.payload.xact_completion() {
            let t = waldump_time(&l.desc).unwrap_or_else(|| panic!("a time in {:?}", l.desc));
            assert!(x.time.to_string().starts_with(t), "{} against {t}", x.time);
            times += 1;
            let n = l
                .desc
                .split("; subxacts:")
                .nth(1)
                .map(|s| s.split(';').next().unwrap().split_whitespace().count())
                .unwrap_or(0);
            assert_eq!(x.subxacts.len(), n, "{}", l.desc);
            subx += n;
        }
        if let Payload::RestorePoint(rp) = &r.payload {
            assert_eq!(l.desc, format!("RESTORE_POINT {}", rp.name));
            names += 1;
        }
    }
    eprintln!(
        "matched {} records against pg_waldump ({times} commit/abort times, {subx} subxacts, {names} restore points)",
        recs.len()
    );
    // The segments' summaries, against pg_waldump's lines this time.
    let seen: Vec<Seen> = lines.iter().map(Seen::from_dump).collect();
    check_summaries(&segs, &seen, &cross_xids);
}

fn other_major(n: u32) {
    let major = PgMajor::from_number(n).unwrap();
    let Some(bin) = server_bin(n) else {
        skip_or_fail!("PostgreSQL {n} server binaries not found (scripts/fetch-postgres.sh)");
    };
    if pg_bin().is_none() {
        skip_or_fail!("PostgreSQL 15 client binaries not found");
    }
    run(major, Some(bin));
}

#[test]
fn decodes_postgres_13_wal() {
    other_major(13);
}

#[test]
fn decodes_postgres_14_wal() {
    other_major(14);
}

#[test]
fn decodes_postgres_16_wal() {
    other_major(16);
}

#[test]
fn decodes_postgres_17_wal() {
    other_major(17);
}

#[test]
fn decodes_postgres_18_wal() {
    other_major(18);
}

/// A record as a segment summary must see it (from `pg_waldump`'s line, or from the
/// decoder's record).
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    lsn: Lsn,
    what: SeenKind,
}

#[derive(Clone, Debug, PartialEq)]
enum SeenKind {
    /// A commit (true) or abort: the xid a target names, the time as `pg_waldump` prints
    /// it (UTC, microseconds).
    Completion(bool, u32, String),
    RestorePoint(String),
    Switch,
    Other,
}

impl Seen {
    fn from_dump(l: &DumpLine) -> Seen {
        let word = l.desc.split_whitespace().next().unwrap_or("");
        let time = || waldump_time(&l.desc).unwrap_or_else(|| panic!("a time in {l:?}"));
        let what = match (l.rmgr.as_str(), word) {
            ("Transaction", "COMMIT" | "ABORT") => {
                SeenKind::Completion(word == "COMMIT", l.xid, time().to_string())
            }
            // COMMIT PREPARED / ABORT PREPARED: "<two-phase xid>: <time>…".
            ("Transaction", "COMMIT_PREPARED" | "ABORT_PREPARED") => {
                let xid = l.desc[word.len()..]
                    .trim_start()
                    .split(':')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap_or_else(|_| panic!("a two-phase xid in {l:?}"));
                SeenKind::Completion(word == "COMMIT_PREPARED", xid, time().to_string())
            }
            ("XLOG", "RESTORE_POINT") => {
                SeenKind::RestorePoint(l.desc["RESTORE_POINT ".len()..].to_string())
            }
            ("XLOG", "SWITCH") => SeenKind::Switch,
            _ => SeenKind::Other,
        };
        Seen { lsn: l.lsn, what }
    }

    fn from_record(r: &WalRecord) -> Seen {
        let what = match &r.payload {
            Payload::Commit(x) | Payload::Abort(x) => SeenKind::Completion(
                matches!(r.payload, Payload::Commit(_)),
                x.xid,
                x.time.to_string()[..26].to_string(),
            ),
            Payload::RestorePoint(rp) => SeenKind::RestorePoint(rp.name.clone()),
            Payload::Switch => SeenKind::Switch,
            _ => SeenKind::Other,
        };
        Seen { lsn: r.lsn, what }
    }
}

/// Summarises every segment alone, joins the records that cross from one to the next
/// from the two summaries, and checks each summary against `seen` (every record of the
/// same segments, in order): counts, first and last record, commits and aborts (number,
/// first and last LSN and time, earliest and latest time, xid range), restore points,
/// the switch, and where the WAL ends. At least one of the commits of `cross_xids` must
/// have crossed and been joined. Then decodes each segment in full with the next two
/// (`summarize_segment_with`): every commit and abort once, crossing ones included; and a
/// flipped byte in a commit is damage at that commit. Returns how many records were
/// joined.
fn check_summaries(segs: &[(String, Vec<u8>)], seen: &[Seen], cross_xids: &[u32]) -> usize {
    let start = |i: usize| Lsn(segment_start(&segs[i].0));
    let seg_of = |l: Lsn| {
        segs.iter()
            .position(|(n, _)| l.0 / SEG == segment_start(n) / SEG)
    };
    let mut sums: Vec<SegmentSummary> = segs
        .iter()
        .enumerate()
        .map(|(i, (name, bytes))| {
            let s = summarize_segment(bytes, SEG, start(i), None)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(s.damage, None, "{name}");
            s
        })
        .collect();
    let completion = |s: &Seen| matches!(s.what, SeenKind::Completion(..));

    // Join what crosses; a crossing completion that cannot be joined (a half longer than
    // a summary keeps) is left out of the expected statistics.
    let mut joined = Vec::new();
    let mut unjoined = Vec::new();
    for i in 0..segs.len() - 1 {
        let Some(joining) = sums[i].join_next(&sums[i + 1]) else {
            continue;
        };
        let (a, b) = (
            sums[i].crossing_start.clone().unwrap(),
            sums[i + 1].crossing_end.clone().unwrap(),
        );
        match joining {
            Ok(r) => {
                assert_eq!(r.lsn, a.lsn);
                assert_eq!(r.timeline, sums[i].timeline);
                assert_eq!(Some(r.header.prev), sums[i].last_record, "{}", r.lsn);
                assert_eq!(
                    Seen::from_record(&r),
                    *seen.iter().find(|s| s.lsn == r.lsn).unwrap(),
                    "the joined record is the one pg_waldump shows"
                );
                sums[i].absorb(&r);
                joined.push(r);
            }
            Err(e) => {
                assert!(
                    matches!(e.kind, DecodeErrorKind::Crossing(_))
                        && (a.bytes.is_none() || b.bytes.is_none()),
                    "{}: {e}",
                    segs[i].0
                );
                unjoined.push(a.lsn);
            }
        }
    }

    for (i, s) in sums.iter().enumerate() {
        let name = &segs[i].0;
        let here: Vec<&Seen> = seen.iter().filter(|r| seg_of(r.lsn) == Some(i)).collect();
        let crossing = s.crossing_start.as_ref().map(|c| c.lsn);
        let own: Vec<&&Seen> = here.iter().filter(|r| Some(r.lsn) != crossing).collect();
        assert_eq!(s.records, own.len() as u64, "{name}");
        assert_eq!(s.first_record, own.first().map(|r| r.lsn), "{name}");
        assert_eq!(s.last_record, own.last().map(|r| r.lsn), "{name}");
        assert_eq!(
            s.switched,
            own.iter().any(|r| r.what == SeenKind::Switch),
            "{name}"
        );
        let xacts: Vec<(Lsn, bool, u32, String)> = here
            .iter()
            .filter(|r| !unjoined.contains(&r.lsn))
            .filter_map(|r| match &r.what {
                SeenKind::Completion(c, x, t) => Some((r.lsn, *c, *x, t.clone())),
                _ => None,
            })
            .collect();
        match &s.xacts {
            None => assert!(xacts.is_empty(), "{name}: {xacts:?}"),
            Some(x) => {
                let t = |t: tidemark_pg::PgTimestamp| t.to_string()[..26].to_string();
                let commits = xacts.iter().filter(|c| c.1).count() as u64;
                assert_eq!(
                    (x.commits, x.aborts),
                    (commits, xacts.len() as u64 - commits)
                );
                let (first, last) = (xacts.first().unwrap(), xacts.last().unwrap());
                assert_eq!((x.first_lsn, t(x.first_time)), (first.0, first.3.clone()));
                assert_eq!((x.last_lsn, t(x.last_time)), (last.0, last.3.clone()));
                let times = xacts.iter().map(|c| c.3.clone());
                assert_eq!(t(x.min_time), times.clone().min().unwrap(), "{name}");
                assert_eq!(t(x.max_time), times.max().unwrap(), "{name}");
                let xids = xacts.iter().map(|c| c.2);
                assert_eq!(
                    (x.min_xid, x.max_xid),
                    (xids.clone().min().unwrap(), xids.max().unwrap())
                );
            }
        }
        let rps: Vec<(Lsn, &str)> = here
            .iter()
            .filter_map(|r| match &r.what {
                SeenKind::RestorePoint(n) => Some((r.lsn, n.as_str())),
                _ => None,
            })
            .collect();
        let ours: Vec<(Lsn, &str)> = s
            .restore_points
            .iter()
            .map(|r| (r.lsn, r.name.as_str()))
            .collect();
        assert_eq!((ours, s.restore_points_omitted), (rps, 0), "{name}");
        // pg_wal's last segment is where the server stopped writing: like a `.partial`.
        let last = i == segs.len() - 1;
        assert_eq!(s.ended_at.is_some(), last, "{name}");
        assert_eq!(s.defect(true), None, "{name}");
        assert_eq!(s.defect(false).is_some(), last, "{name}");
    }

    let crossed: Vec<u32> = cross_xids
        .iter()
        .copied()
        .filter(|x| {
            joined.iter().any(|r| {
                r.payload
                    .xact_completion()
                    .is_some_and(|c| c.xid == *x && matches!(r.payload, Payload::Commit(_)))
            })
        })
        .collect();
    assert!(
        !crossed.is_empty(),
        "a commit of {cross_xids:?} crossed a segment boundary and was joined"
    );

    // In full: every commit and abort once, in order, crossing ones included.
    let mut all = Vec::new();
    for (i, (_, bytes)) in segs.iter().enumerate() {
        let next: Vec<&[u8]> = segs[i + 1..(i + 3).min(segs.len())]
            .iter()
            .map(|(_, b)| &b[..])
            .collect();
        let s = summarize_segment_with(bytes, SEG, start(i), None, &next, |r| {
            let s = Seen::from_record(r);
            if matches!(s.what, SeenKind::Completion(..)) {
                all.push(s);
            }
        })
        .unwrap();
        assert_eq!(s.damage, None);
    }
    let expected: Vec<Seen> = seen.iter().filter(|s| completion(s)).cloned().collect();
    assert_eq!(all, expected);

    // A flipped byte inside a commit that lies within one segment: damage there, the
    // records before it summarised.
    let (i, victim) = seen
        .iter()
        .filter(|r| completion(r) && r.lsn.0 % SEG > 8192 && r.lsn.0 % 8192 < 8000)
        .find_map(|r| {
            let i = seg_of(r.lsn)?;
            (sums[i].crossing_start.as_ref().map(|c| c.lsn) != Some(r.lsn)).then_some((i, r))
        })
        .unwrap();
    let mut bytes = segs[i].1.clone();
    bytes[(victim.lsn.0 % SEG) as usize + 26] ^= 0x40;
    let s = summarize_segment(&bytes, SEG, start(i), None).unwrap();
    let damage = s.damage.clone().expect("damage");
    assert_eq!(damage.lsn, victim.lsn);
    assert!(matches!(damage.kind, DecodeErrorKind::CrcMismatch { .. }));
    let before = seen
        .iter()
        .filter(|r| seg_of(r.lsn) == Some(i) && r.lsn < victim.lsn)
        .count();
    assert_eq!(s.records, before as u64);
    assert_eq!(s.defect(true), Some(damage));
    eprintln!(
        "summaries of {} segments agree; {} crossing records joined (commits {crossed:?}), {} not joinable",
        segs.len(),
        joined.len(),
        unjoined.len()
    );
    joined.len()
}
