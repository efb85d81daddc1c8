//! The WAL record decoder (`tidemark-pg`, the library) on WAL written by real servers.
//!
//! One named workload runs on a cluster with 1 MiB segments (so that records cross
//! segment boundaries cheaply), `track_commit_timestamp = on`, prepared transactions and
//! compressed full-page images (`wal_compression = on`):
//! 200 small commits (a DO loop with COMMIT), a 3 MB transaction with savepoints (two
//! released, one rolled back) crossing segments, a prepared transaction committed and one
//! rolled back, a dropped table (relations and statistics in the commit record), two
//! restore points with the same name, a checkpoint, a 2.5 MB non-transactional logical
//! message (one record over three segments), `pg_switch_wal()`, more commits, then a
//! clean shutdown. Every segment in `pg_wal` is then decoded, whole and in uneven pieces.
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
//! - a timeline switch: the cluster is then promoted as a standby without a source;
//!   timeline 2, decoded from its first segment, holds timeline 1's copied records, then
//!   the end-of-recovery record (1 -> 2) exactly at `00000002.history`'s switch point,
//!   then the commit made after the promotion.
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
    DecodeError, DecodeErrorKind, DecoderConfig, EndReason, Payload, WalDecoder, WalEnd, WalRecord,
    XactKind,
};
use tidemark_pg::{Lsn, PgMajor};

use crate::harness::pg::{pg_bin, server_bin, Cluster, ClusterOptions, TestDir};
use crate::skip_or_fail;

const SEG: u64 = 1 << 20;

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
