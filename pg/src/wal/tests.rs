//! Unit tests on synthetic WAL: a small builder lays records out as PostgreSQL does
//! (page headers, continuation flags, MAXALIGN, CRC-32C, `xl_prev`), then the decoder is
//! fed the bytes whole, one byte at a time and in uneven pieces.

use super::*;
use crate::types::{Lsn, PgMajor, PgTimestamp};

const SEG: u64 = 1 << 20;
const PAGE: u64 = XLOG_BLCKSZ;
const SYSID: u64 = 0x7000_0000_1234_5678;

/// Lays out WAL from `start` (a segment start) as PostgreSQL would.
struct Builder {
    major: PgMajor,
    start: u64,
    bytes: Vec<u8>,
    prev: u64,
}

impl Builder {
    fn new(major: PgMajor, start: u64) -> Builder {
        Builder {
            major,
            start,
            bytes: Vec::new(),
            prev: 0,
        }
    }

    fn pos(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    fn page_header(&mut self, cont: bool, rem_len: u32) {
        let page = self.pos();
        assert_eq!(page % PAGE, 0);
        let long = page % SEG == 0;
        let mut info = 0u16;
        if cont {
            info |= 0x0001;
        }
        if long {
            info |= 0x0002;
        }
        let mut h = Vec::new();
        h.extend_from_slice(&self.major.page_magic().to_le_bytes());
        h.extend_from_slice(&info.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes());
        h.extend_from_slice(&page.to_le_bytes());
        h.extend_from_slice(&rem_len.to_le_bytes());
        h.extend_from_slice(&[0; 4]);
        if long {
            h.extend_from_slice(&SYSID.to_le_bytes());
            h.extend_from_slice(&(SEG as u32).to_le_bytes());
            h.extend_from_slice(&(PAGE as u32).to_le_bytes());
        }
        self.bytes.extend_from_slice(&h);
    }

    /// The bytes of a record with `main` as main data (and no block references).
    fn record_bytes(&self, rmid: u8, info: u8, xid: u32, main: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        if main.len() < 256 {
            body.push(255);
            body.push(main.len() as u8);
        } else {
            body.push(254);
            body.extend_from_slice(&(main.len() as u32).to_le_bytes());
        }
        body.extend_from_slice(main);
        let tot = (24 + body.len()) as u32;
        let mut rec = Vec::new();
        rec.extend_from_slice(&tot.to_le_bytes());
        rec.extend_from_slice(&xid.to_le_bytes());
        rec.extend_from_slice(&self.prev.to_le_bytes());
        rec.push(info);
        rec.push(rmid);
        rec.extend_from_slice(&[0, 0]);
        rec.extend_from_slice(&[0; 4]);
        rec.extend_from_slice(&body);
        let crc = record::record_crc(&rec);
        rec[20..24].copy_from_slice(&crc.to_le_bytes());
        rec
    }

    /// Appends a record; returns its start and end.
    fn push(&mut self, rmid: u8, info: u8, xid: u32, main: &[u8]) -> (u64, u64) {
        let rec = self.record_bytes(rmid, info, xid, main);
        self.push_raw(&rec)
    }

    fn push_raw(&mut self, rec: &[u8]) -> (u64, u64) {
        while self.pos() % 8 != 0 {
            self.bytes.push(0);
        }
        if self.pos() % PAGE == 0 {
            self.page_header(false, 0);
        }
        let lsn = self.pos();
        let mut left = rec;
        while !left.is_empty() {
            if self.pos() % PAGE == 0 {
                self.page_header(true, left.len() as u32);
            }
            let room = (PAGE - self.pos() % PAGE) as usize;
            let n = room.min(left.len());
            self.bytes.extend_from_slice(&left[..n]);
            left = &left[n..];
        }
        self.prev = lsn;
        (lsn, self.pos())
    }

    /// Zeros up to the end of the current page.
    fn zero_page_rest(&mut self) {
        while self.pos() % PAGE != 0 {
            self.bytes.push(0);
        }
    }

    /// Fills with small records until fewer than `left` bytes remain in the segment.
    fn fill_until(&mut self, left: u64) {
        while SEG - self.pos() % SEG > left {
            self.push(10, 0, 1, &[7u8; 100]);
        }
    }
}

fn commit_body(time: i64, subxacts: &[u32]) -> Vec<u8> {
    let mut d = time.to_le_bytes().to_vec();
    d.extend_from_slice(&0x3u32.to_le_bytes()); // dbinfo | subxacts
    d.extend_from_slice(&5u32.to_le_bytes());
    d.extend_from_slice(&1663u32.to_le_bytes());
    d.extend_from_slice(&(subxacts.len() as u32).to_le_bytes());
    for x in subxacts {
        d.extend_from_slice(&x.to_le_bytes());
    }
    d
}

fn restore_point_body(time: i64, name: &str) -> Vec<u8> {
    let mut d = time.to_le_bytes().to_vec();
    let mut n = [0u8; 64];
    n[..name.len()].copy_from_slice(name.as_bytes());
    d.extend_from_slice(&n);
    d
}

/// The standard synthetic WAL: small records, a 20 KB record crossing three pages, a
/// 30 KB record crossing the segment boundary, a commit with subtransactions and a
/// restore point, then zeros.
fn sample() -> (Builder, Vec<(u64, u64)>) {
    let mut b = Builder::new(PgMajor::V15, SEG);
    let mut at = Vec::new();
    for i in 0..5 {
        at.push(b.push(10, 0, 700 + i, &[i as u8; 60]));
    }
    at.push(b.push(21, 0, 0, &vec![0x5A; 20_000]));
    b.fill_until(12_000);
    let big = b.push(21, 0, 0, &vec![0xA5; 30_000]);
    assert!(
        big.0 / SEG == 1 && big.1 / SEG == 2,
        "crosses the segment boundary"
    );
    at.push(big);
    at.push(b.push(1, 0x80, 900, &commit_body(123_456_789, &[901, 902, 903])));
    at.push(b.push(
        0,
        0x70,
        0,
        &restore_point_body(123_456_999, "before-upgrade"),
    ));
    b.zero_page_rest();
    b.bytes.extend_from_slice(&[0u8; PAGE as usize]);
    (b, at)
}

fn decode_in_pieces(bytes: &[u8], start: u64, sizes: &[usize]) -> (Vec<WalRecord>, WalDecoder) {
    let mut d = WalDecoder::new(DecoderConfig::new(SEG, Lsn(start))).unwrap();
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        d.feed_into(&rest[..n], &mut out).unwrap();
        rest = &rest[n..];
        i += 1;
    }
    (out, d)
}

#[test]
fn records_across_pages_and_segments_whole_and_in_pieces() {
    let (b, _) = sample();
    let (whole, dec) = decode_in_pieces(&b.bytes, b.start, &[b.bytes.len()]);
    assert_eq!(dec.major(), Some(PgMajor::V15));
    assert_eq!(dec.system_identifier(), Some(SYSID));
    let end = *dec.end().expect("zeros after the last record end the WAL");
    assert_eq!(end.reason, EndReason::ZeroRecordHeader);
    assert_eq!(end.last_record_end, whole.last().unwrap().end);
    for sizes in [
        &[1usize][..],
        &[7, 8191, 3, 40, 24, 100_000],
        &[8192],
        &[SEG as usize],
    ] {
        let (pieces, dec2) = decode_in_pieces(&b.bytes, b.start, sizes);
        assert_eq!(pieces, whole, "pieces {sizes:?}");
        assert_eq!(dec2.end(), Some(&end));
    }
}

#[test]
fn every_record_is_found_with_its_lsn_and_payload() {
    let (b, at) = sample();
    let (recs, _) = decode_in_pieces(&b.bytes, b.start, &[4096]);
    let lsns: Vec<(u64, u64)> = recs.iter().map(|r| (r.lsn.0, r.end.0)).collect();
    for a in &at {
        assert!(lsns.contains(a), "record {a:?} decoded");
    }
    let big = recs.iter().find(|r| r.main_data.len() == 30_000).unwrap();
    assert!(big.main_data.iter().all(|&x| x == 0xA5));
    let commit = recs
        .iter()
        .find_map(|r| r.payload.xact_completion())
        .unwrap();
    assert_eq!(commit.xid, 900);
    assert_eq!(commit.kind, XactKind::Plain);
    assert_eq!(commit.subxacts, vec![901, 902, 903]);
    assert_eq!(commit.db, Some((5, 1663)));
    assert_eq!(commit.time, PgTimestamp(123_456_789));
    let rp = recs.last().unwrap();
    assert_eq!(
        rp.payload,
        Payload::RestorePoint(RestorePoint {
            time: PgTimestamp(123_456_999),
            name: "before-upgrade".into()
        })
    );
    // xl_prev chains every record to the one before.
    for w in recs.windows(2) {
        assert_eq!(w[1].header.prev, w[0].lsn);
    }
}

#[test]
fn a_flipped_byte_is_a_crc_error_naming_the_record() {
    let (mut b, at) = sample();
    let (lsn, _) = at[5]; // the 20 KB record, crossing pages
    let off = (lsn - b.start) as usize + 10_000;
    b.bytes[off] ^= 0x01;
    for sizes in [&[b.bytes.len()][..], &[1]] {
        let mut d = WalDecoder::new(DecoderConfig::new(SEG, Lsn(b.start))).unwrap();
        let mut out = Vec::new();
        let mut err = None;
        for piece in b.bytes.chunks(sizes[0]) {
            if let Err(e) = d.feed_into(piece, &mut out) {
                err = Some(e);
                break;
            }
        }
        let e = err.expect("damage is an error");
        assert_eq!(e.lsn, Lsn(lsn));
        assert!(matches!(e.kind, DecodeErrorKind::CrcMismatch { .. }), "{e}");
        assert_eq!(out.len(), 5, "the records before it were returned");
        // The error repeats; nothing after it is decoded.
        assert_eq!(d.feed(&[0]).unwrap_err(), e);
        assert!(e.to_string().contains(&Lsn(lsn).to_string()));
    }
}

#[test]
fn a_record_whose_prev_is_wrong_is_an_error() {
    let mut b = Builder::new(PgMajor::V16, SEG);
    b.push(10, 0, 1, &[1; 50]);
    let first = b.prev;
    b.prev = 0x1234_5678;
    let (bad, _) = b.push(10, 0, 1, &[2; 50]);
    b.zero_page_rest();
    let mut d = WalDecoder::new(DecoderConfig::new(SEG, Lsn(SEG))).unwrap();
    let e = d.feed(&b.bytes).unwrap_err();
    assert_eq!(e.lsn, Lsn(bad));
    assert_eq!(
        e.kind,
        DecodeErrorKind::PrevMismatch {
            expected: Lsn(first),
            found: Lsn(0x1234_5678)
        }
    );
}

#[test]
fn impossible_lengths_and_garbage_after_the_end_are_errors() {
    let mut b = Builder::new(PgMajor::V15, SEG);
    b.push(10, 0, 1, &[1; 50]);
    let at = b.pos().next_multiple_of(8);
    let mut bytes = b.bytes.clone();
    bytes.resize((at - SEG) as usize, 0);
    bytes.extend_from_slice(&5u32.to_le_bytes());
    bytes.resize(PAGE as usize, 0);
    let e = WalDecoder::new(DecoderConfig::new(SEG, Lsn(SEG)))
        .unwrap()
        .feed(&bytes)
        .unwrap_err();
    assert_eq!(
        (e.lsn, e.kind),
        (Lsn(at), DecodeErrorKind::ImpossibleLength(5))
    );

    // A zeroed record header followed by non-zero bytes on the same page: the "end"
    // would hide written WAL, so it is damage.
    let mut bytes = b.bytes.clone();
    bytes.resize((at - SEG) as usize + 64, 0);
    bytes.extend_from_slice(&[1, 2, 3]);
    bytes.resize(PAGE as usize, 0);
    let e = WalDecoder::new(DecoderConfig::new(SEG, Lsn(SEG)))
        .unwrap()
        .feed(&bytes)
        .unwrap_err();
    assert_eq!(e.kind, DecodeErrorKind::NonZeroAfterEnd);
    assert_eq!(e.lsn, Lsn(at + 64));
}

#[test]
fn starting_at_a_segment_that_begins_with_a_continuation_skips_it() {
    let (b, at) = sample();
    let seg2 = 2 * SEG;
    let bytes = &b.bytes[(seg2 - b.start) as usize..];
    let (recs, d) = decode_in_pieces(bytes, seg2, &[333]);
    let (_, big_end) = at[6];
    assert_eq!(d.skipped_continuation().map(|(p, _)| p), Some(Lsn(seg2)));
    assert_eq!(recs[0].lsn.0, big_end.next_multiple_of(8));
    assert_eq!(recs.len(), 2);
}

#[test]
fn a_segment_ending_inside_a_record_leaves_it_pending() {
    let (b, at) = sample();
    let bytes = &b.bytes[..(2 * SEG - b.start) as usize];
    let (recs, d) = decode_in_pieces(bytes, b.start, &[65536]);
    assert_eq!(d.pending_record(), Some(Lsn(at[6].0)));
    assert!(d.end().is_none());
    assert!(recs.last().unwrap().end.0 <= at[6].0);
}

#[test]
fn after_a_switch_the_rest_of_the_segment_is_skipped() {
    let mut b = Builder::new(PgMajor::V17, SEG);
    b.push(10, 0, 1, &[1; 50]);
    let (sw, _) = b.push(0, 0x40, 0, &[]);
    // Whatever follows in the segment is not read (PostgreSQL pads it).
    b.bytes.resize(SEG as usize, 0xEE);
    let (next, _) = b.push(10, 0, 2, &[2; 50]);
    b.zero_page_rest();
    let (recs, d) = decode_in_pieces(&b.bytes, SEG, &[1000]);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[1].payload, Payload::Switch);
    assert_eq!(recs[1].lsn, Lsn(sw));
    assert_eq!(recs[2].lsn, Lsn(next));
    assert_eq!(recs[2].header.prev, Lsn(sw));
    assert!(d.end().is_some());
}

#[test]
fn a_recycled_or_zero_page_ends_the_wal() {
    let mut b = Builder::new(PgMajor::V18, SEG);
    // A record that fills the first page exactly (8192 - 40 = 24 + 5 + 8123).
    let (_, end) = b.push(10, 0, 1, &[1; 8123]);
    assert_eq!(end, SEG + PAGE);
    // The next page still carries an address from the file's earlier use.
    let mut old = Builder::new(PgMajor::V18, 0);
    old.bytes.resize(PAGE as usize, 0);
    old.page_header(false, 0);
    let mut bytes = b.bytes.clone();
    bytes.extend_from_slice(&old.bytes[PAGE as usize..]);
    bytes.resize(3 * PAGE as usize, 0x33);
    let (recs, d) = decode_in_pieces(&bytes, SEG, &[bytes.len()]);
    assert_eq!(recs.len(), 1);
    let end = d.end().unwrap();
    assert_eq!(end.at, Lsn(SEG + PAGE));
    assert_eq!(end.reason, EndReason::RecycledPage { found: Lsn(PAGE) });
    assert!(end.within_segment(SEG));

    let (_, d) = decode_in_pieces(&[0u8; 3 * PAGE as usize], SEG, &[5000]);
    assert_eq!(d.end().unwrap().reason, EndReason::ZeroPage);
    assert_eq!(d.end().unwrap().at, Lsn(SEG));
}

#[test]
fn an_unknown_magic_or_another_cluster_is_an_error() {
    let mut b = Builder::new(PgMajor::V15, SEG);
    b.push(10, 0, 1, &[1; 50]);
    let mut bytes = b.bytes.clone();
    bytes[0] = 0x99;
    let e = WalDecoder::new(DecoderConfig::new(SEG, Lsn(SEG)))
        .unwrap()
        .feed(&bytes)
        .unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::UnknownPageMagic(_)));
    let e = WalDecoder::new(DecoderConfig::new(SEG, Lsn(SEG)).with_major(PgMajor::V16))
        .unwrap()
        .feed(&b.bytes)
        .unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::PageMagicMismatch { .. }));
    let e = WalDecoder::new(DecoderConfig::new(2 * SEG, Lsn(SEG)))
        .unwrap()
        .feed(&b.bytes)
        .unwrap_err();
    assert!(matches!(
        e.kind,
        DecodeErrorKind::SegmentSizeMismatch { .. }
    ));
}

#[test]
fn a_continuation_without_its_flag_is_an_error() {
    let mut b = Builder::new(PgMajor::V15, SEG);
    let (lsn, _) = b.push(21, 0, 0, &vec![3; 10_000]);
    // Clear the continuation flag of the second page.
    let info_at = PAGE as usize + 2;
    b.bytes[info_at] &= !0x01;
    let e = WalDecoder::new(DecoderConfig::new(SEG, Lsn(SEG)))
        .unwrap()
        .feed(&b.bytes)
        .unwrap_err();
    assert_eq!(e.lsn, Lsn(lsn));
    assert!(matches!(
        e.kind,
        DecodeErrorKind::MissingContinuation { .. }
    ));
}

#[test]
fn block_references_are_skipped_to_the_main_data() {
    let b = Builder::new(PgMajor::V15, SEG);
    // Block 0 with a compressed image with a hole (15+: PGLZ 0x04, hole 0x01) and data,
    // block 1 on the same relation with data only, an origin, then the main data.
    let mut body = vec![0u8, 0x10 | 0x20, 3, 0];
    body.extend_from_slice(&100u16.to_le_bytes()); // bimg_len
    body.extend_from_slice(&64u16.to_le_bytes()); // hole_offset
    body.push(0x01 | 0x04); // bimg_info
    body.extend_from_slice(&4000u16.to_le_bytes()); // hole_length
    body.extend_from_slice(&[1; 12]); // relfilelocator
    body.extend_from_slice(&7u32.to_le_bytes());
    body.extend_from_slice(&[1, 0x20 | 0x80, 2, 0]);
    body.extend_from_slice(&8u32.to_le_bytes());
    body.push(253);
    body.extend_from_slice(&9u16.to_le_bytes());
    body.extend_from_slice(&[255, 4]);
    body.extend_from_slice(&[0xEE; 100]); // image
    body.extend_from_slice(&[0xDD; 3]); // block 0 data
    body.extend_from_slice(&[0xCC; 2]); // block 1 data
    body.extend_from_slice(&[1, 2, 3, 4]); // main data
    let mut rec = b.record_bytes(10, 0, 5, &[]);
    rec.truncate(24);
    rec.extend_from_slice(&body);
    let tot = rec.len() as u32;
    rec[0..4].copy_from_slice(&tot.to_le_bytes());
    let crc = record::record_crc(&rec);
    rec[20..24].copy_from_slice(&crc.to_le_bytes());
    let r = record::decode(Lsn(SEG + 40), 1, &rec, PgMajor::V15).unwrap();
    assert_eq!(r.main_data, vec![1, 2, 3, 4]);
    assert_eq!((r.block_refs, r.fpi_bytes, r.origin), (2, 100, Some(9)));
    // Read as PostgreSQL 14, 0x04 is BKPIMAGE_APPLY: no hole length, so the lengths no
    // longer add up.
    assert!(record::decode(Lsn(SEG + 40), 1, &rec, PgMajor::V14).is_err());
}

fn xact_header(info: u8, xid: u32) -> record::RecordHeader {
    record::RecordHeader {
        tot_len: 0,
        xid,
        prev: Lsn(0),
        info,
        rmid: 1,
        crc: 0,
    }
}

#[test]
fn commit_prepared_with_every_optional_part() {
    for (major, item) in [
        (PgMajor::V15, 12usize),
        (PgMajor::V17, 12),
        (PgMajor::V18, 16),
    ] {
        let xinfo: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x20 | 0x80 | 0x100;
        let mut d = 42i64.to_le_bytes().to_vec();
        d.extend_from_slice(&xinfo.to_le_bytes());
        d.extend_from_slice(&[5, 0, 0, 0, 0x7F, 6, 0, 0]);
        d.extend_from_slice(&2u32.to_le_bytes());
        d.extend_from_slice(&11u32.to_le_bytes());
        d.extend_from_slice(&12u32.to_le_bytes());
        d.extend_from_slice(&1u32.to_le_bytes());
        d.extend_from_slice(&[0; 12]);
        d.extend_from_slice(&2u32.to_le_bytes());
        d.extend(std::iter::repeat_n(0u8, 2 * item));
        d.extend_from_slice(&1u32.to_le_bytes());
        d.extend_from_slice(&[0; 16]);
        d.extend_from_slice(&10u32.to_le_bytes());
        d.extend_from_slice(b"gid-1\0");
        d.extend_from_slice(&0x99u64.to_le_bytes());
        d.extend_from_slice(&43i64.to_le_bytes());
        let p = payload::decode(major, &xact_header(0x30 | 0x80, 0), &d).unwrap();
        let Payload::Commit(c) = p else { panic!() };
        assert_eq!(c.kind, XactKind::Prepared);
        assert_eq!(c.xid, 10);
        assert_eq!(c.subxacts, vec![11, 12]);
        assert_eq!((c.dropped_rels, c.dropped_stats, c.invals), (1, 2, 1));
        assert_eq!(c.gid.as_deref(), Some("gid-1"));
        assert_eq!(c.origin, Some((Lsn(0x99), PgTimestamp(43))));
        // One byte more or less does not add up.
        assert!(payload::decode(major, &xact_header(0xB0, 0), &d[..d.len() - 1]).is_err());
    }
}

#[test]
fn end_of_recovery_and_checkpoints_mark_timeline_switches() {
    let mut d = 77i64.to_le_bytes().to_vec();
    d.extend_from_slice(&3u32.to_le_bytes());
    d.extend_from_slice(&2u32.to_le_bytes());
    let h = record::RecordHeader {
        tot_len: 0,
        xid: 0,
        prev: Lsn(0),
        info: 0x90,
        rmid: 0,
        crc: 0,
    };
    let p = payload::decode(PgMajor::V15, &h, &d).unwrap();
    assert_eq!(p.timeline_switch(), Some(TimelineSwitch { from: 2, to: 3 }));
    d.extend_from_slice(&1i32.to_le_bytes());
    d.extend_from_slice(&[0; 4]);
    let Payload::EndOfRecovery(e) = payload::decode(PgMajor::V18, &h, &d).unwrap() else {
        panic!()
    };
    assert_eq!(e.wal_level, Some(1));

    let mut c = vec![0u8; 88];
    c[0..8].copy_from_slice(&0x0100_0028u64.to_le_bytes());
    c[8..12].copy_from_slice(&2u32.to_le_bytes());
    c[12..16].copy_from_slice(&1u32.to_le_bytes());
    c[64..72].copy_from_slice(&1_796_533_262i64.to_le_bytes());
    let h = record::RecordHeader { info: 0x00, ..h };
    let Payload::Checkpoint(cp) = payload::decode(PgMajor::V15, &h, &c).unwrap() else {
        panic!()
    };
    assert!(cp.shutdown);
    assert_eq!(cp.redo, Lsn(0x0100_0028));
    assert_eq!(cp.time_unix_secs, 1_796_533_262);
    assert_eq!(
        Payload::Checkpoint(cp).timeline_switch(),
        Some(TimelineSwitch { from: 1, to: 2 })
    );
}

#[test]
fn a_record_given_up_by_the_server_is_replaced_by_the_overwrite_record() {
    // A record begins on the first page and should continue on the second; the server
    // crashed before writing the continuation, and after recovery wrote
    // XLOG_OVERWRITE_CONTRECORD at the second page, whose header carries
    // XLP_FIRST_IS_OVERWRITE_CONTRECORD (0x0008) instead of a continuation.
    let mut b = Builder::new(PgMajor::V15, SEG);
    let (kept, _) = b.push(10, 0, 1, &[1; 50]);
    b.fill_until(SEG - PAGE + 200);
    let before = b.prev;
    let rec = b.record_bytes(10, 0, 2, &[2; 1000]);
    while b.pos() % 8 != 0 {
        b.bytes.push(0);
    }
    let aborted = b.pos();
    let room = (PAGE - aborted % PAGE) as usize;
    b.bytes.extend_from_slice(&rec[..room]);
    // The second page: header with the overwrite flag, then the overwrite record, whose
    // xl_prev is the last record replayed (the one before the aborted one).
    let mut page = Builder::new(PgMajor::V15, SEG + PAGE);
    page.page_header(false, 0);
    page.bytes[2] |= 0x08;
    b.bytes.extend_from_slice(&page.bytes);
    b.prev = before;
    let mut body = aborted.to_le_bytes().to_vec();
    body.extend_from_slice(&5i64.to_le_bytes());
    let (ow, _) = b.push(0, 0xD0, 0, &body);
    b.zero_page_rest();
    let (recs, d) = decode_in_pieces(&b.bytes, SEG, &[1, 500]);
    assert_eq!(recs[0].lsn, Lsn(kept));
    let last = recs.last().unwrap();
    assert_eq!(last.lsn, Lsn(ow));
    assert_eq!(
        last.payload,
        Payload::OverwriteContrecord {
            overwritten: Lsn(aborted),
            time: PgTimestamp(5)
        }
    );
    assert!(
        recs.iter().all(|r| r.lsn.0 != aborted),
        "the given-up record is not returned"
    );
    assert!(d.end().is_some());
}

#[test]
fn starting_mid_page_at_a_known_record() {
    let (b, at) = sample();
    let (second, _) = at[1];
    let bytes = &b.bytes[(second - b.start) as usize..];
    // Without the major, a start inside a page is refused (no page header to read it from).
    let e = WalDecoder::new(DecoderConfig::new(SEG, Lsn(second))).unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::BadStart(_)));
    let cfg = DecoderConfig::new(SEG, Lsn(second))
        .with_major(PgMajor::V15)
        .with_prev_record(Lsn(at[0].0));
    let mut d = WalDecoder::new(cfg).unwrap();
    let recs = d.feed(bytes).unwrap();
    assert_eq!(recs[0].lsn, Lsn(second));
    assert_eq!(
        recs.len(),
        at.len() - 1 + recs.iter().filter(|r| r.main_data == [7u8; 100]).count()
    );
    // A wrong previous record is caught on the first one.
    let cfg = DecoderConfig::new(SEG, Lsn(second))
        .with_major(PgMajor::V15)
        .with_prev_record(Lsn(8));
    let e = WalDecoder::new(cfg).unwrap().feed(bytes).unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::PrevMismatch { .. }));
}

// ---- Segment summaries (summary.rs) ----

/// The bytes of segment `n` (counting from the builder's start), zero-padded to a full
/// segment as PostgreSQL's files are.
fn segment_of(b: &Builder, n: u64) -> Vec<u8> {
    let from = (n * SEG) as usize;
    let mut seg = b.bytes[from.min(b.bytes.len())..].to_vec();
    seg.truncate(SEG as usize);
    seg.resize(SEG as usize, 0);
    seg
}

fn summarize(b: &Builder, n: u64) -> SegmentSummary {
    summarize_segment(&segment_of(b, n), SEG, Lsn(b.start + n * SEG), None).unwrap()
}

/// `xl_xact_commit` with `xinfo` (dbinfo, subxacts, two-phase xid when `twophase`).
fn xact_body(time: i64, subxacts: u32, twophase: Option<u32>) -> Vec<u8> {
    let mut xinfo = 0x1 | 0x2;
    if twophase.is_some() {
        xinfo |= 0x10;
    }
    let mut d = time.to_le_bytes().to_vec();
    d.extend_from_slice(&(xinfo as u32).to_le_bytes());
    d.extend_from_slice(&5u32.to_le_bytes());
    d.extend_from_slice(&1663u32.to_le_bytes());
    d.extend_from_slice(&subxacts.to_le_bytes());
    for x in 0..subxacts {
        d.extend_from_slice(&(10_000 + x).to_le_bytes());
    }
    if let Some(x) = twophase {
        d.extend_from_slice(&x.to_le_bytes());
    }
    d
}

const COMMIT: u8 = 0x80;
const ABORT: u8 = 0x20 | 0x80;
const COMMIT_PREPARED: u8 = 0x30 | 0x80;
const ABORT_PREPARED: u8 = 0x40 | 0x80;

/// Segment 1 ends inside a 1.3 KB commit (a few hundred bytes in each segment); segment 2
/// holds the rest of it and two more records, then the WAL ends.
fn crossing_commit() -> (Builder, (u64, u64)) {
    let mut b = Builder::new(PgMajor::V16, SEG);
    b.push(1, COMMIT, 700, &xact_body(1_000, 0, None));
    b.fill_until(500);
    let left = SEG - b.pos() % SEG;
    assert!((372..500).contains(&left), "{left} bytes left");
    let crossing = b.push(1, COMMIT, 901, &xact_body(2_000, 300, None));
    assert_eq!(crossing.0 / SEG, 1, "starts in segment 1");
    assert_eq!(crossing.1 / SEG, 2, "ends in segment 2");
    b.push(10, 0, 1, &[1; 50]);
    b.push(1, ABORT, 902, &xact_body(3_000, 0, None));
    b.zero_page_rest();
    (b, crossing)
}

#[test]
fn a_record_crossing_segments_is_joined_from_the_two_summaries() {
    let (b, (lsn, end)) = crossing_commit();
    let mut first = summarize(&b, 0);
    let second = summarize(&b, 1);

    let start = first
        .crossing_start
        .clone()
        .expect("segment 1 ends inside a record");
    assert_eq!(start.lsn, Lsn(lsn));
    assert_eq!((start.rmid, start.xid), (Some(1), Some(901)));
    let head = start.bytes.as_ref().expect("short: kept");
    assert_eq!(
        lsn + head.len() as u64,
        2 * SEG,
        "its bytes up to the segment's end"
    );
    let tail_len = end - 2 * SEG - 40;
    let stop = second
        .crossing_end
        .clone()
        .expect("segment 2 begins with the rest");
    assert_eq!(u64::from(stop.remaining), tail_len);
    assert_eq!(stop.bytes.as_ref().map(Vec::len), Some(tail_len as usize));
    assert_eq!(start.total_len, Some((head.len() as u64 + tail_len) as u32));

    // Neither summary counts it; each counts what starts and completes in it.
    let xacts = first.xacts.unwrap();
    assert_eq!((xacts.commits, xacts.aborts), (1, 0));
    assert!(first.last_record.unwrap().0 < lsn);
    let later = second.xacts.unwrap();
    assert_eq!((later.commits, later.aborts, later.min_xid), (0, 1, 902));
    assert_eq!(second.first_record.unwrap().0, end.next_multiple_of(8));

    assert_eq!(
        join_crossing(&start, &stop, PgMajor::V16).unwrap().timeline,
        0
    );
    let joined = first.join_next(&second).unwrap().unwrap();
    assert_eq!(joined.timeline, 1);
    assert_eq!((joined.lsn, joined.end), (Lsn(lsn), Lsn(end)));
    assert_eq!(joined.header.prev, first.last_record.unwrap());
    let Payload::Commit(c) = &joined.payload else {
        panic!("{:?}", joined.payload)
    };
    assert_eq!(
        (c.xid, c.time, c.subxacts.len()),
        (901, PgTimestamp(2_000), 300)
    );
    // The decoder reading both segments in a row finds the same record.
    let (all, _) = decode_in_pieces(&b.bytes, SEG, &[SEG as usize]);
    let whole = all.iter().find(|r| r.lsn == Lsn(lsn)).unwrap();
    assert_eq!(&joined, whole);

    first.absorb(&joined);
    let xacts = first.xacts.unwrap();
    assert_eq!((xacts.commits, xacts.last_lsn), (2, Lsn(lsn)));
    assert_eq!((xacts.max_xid, xacts.last_time), (901, PgTimestamp(2_000)));

    // One flipped byte in either half: a CRC error at the record.
    let mut bad = stop.clone();
    bad.bytes.as_mut().unwrap()[100] ^= 1;
    let e = join_crossing(&start, &bad, PgMajor::V16).unwrap_err();
    assert_eq!(e.lsn, Lsn(lsn));
    assert!(matches!(e.kind, DecodeErrorKind::CrcMismatch { .. }), "{e}");
    // A half that does not fit: an error naming the record, not a panic.
    let mut short = stop.clone();
    short.bytes.as_mut().unwrap().pop();
    short.remaining -= 1;
    let e = join_crossing(&start, &short, PgMajor::V16).unwrap_err();
    assert_eq!(e.lsn, Lsn(lsn));
    assert!(matches!(e.kind, DecodeErrorKind::Crossing(_)), "{e}");
}

#[test]
fn decoding_in_full_hands_over_every_record_and_completes_the_crossing_one() {
    let (b, (lsn, _)) = crossing_commit();
    let (seg1, seg2) = (segment_of(&b, 0), segment_of(&b, 1));
    let mut seen = Vec::new();
    let summary = summarize_segment_with(&seg1, SEG, Lsn(SEG), None, &[&seg2], |r| {
        seen.push((r.lsn, r.payload.xact_completion().map(|x| x.xid)))
    })
    .unwrap();
    assert_eq!(summary, summarize(&b, 0), "the same summary");
    assert_eq!(seen.len() as u64, summary.records + 1);
    assert_eq!(
        seen.last(),
        Some(&(Lsn(lsn), Some(901))),
        "the crossing one last"
    );
    assert_eq!(seen[0], (Lsn(SEG + 40), Some(700)));
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "in LSN order");
    // Without the next segment it is not handed over.
    let mut n = 0;
    summarize_segment_with(&seg1, SEG, Lsn(SEG), None, &[], |_| n += 1).unwrap();
    assert_eq!(n, summary.records);
    // A damaged continuation: the crossing record is damage, named at its start.
    let mut bad2 = seg2.clone();
    bad2[60] ^= 0x10;
    let s = summarize_segment_with(&seg1, SEG, Lsn(SEG), None, &[&bad2], |_| {}).unwrap();
    let e = s.damage.expect("the record cannot be completed");
    assert_eq!(e.lsn, Lsn(lsn));
    assert!(matches!(e.kind, DecodeErrorKind::CrcMismatch { .. }), "{e}");
}

#[test]
fn a_crossing_record_longer_than_the_cap_keeps_no_bytes() {
    let (b, at) = sample();
    let (big, big_end) = at[6]; // 30 KB, about 12 KB of it in the first segment
    let first = summarize(&b, 0);
    let second = summarize(&b, 1);
    let start = first.crossing_start.clone().unwrap();
    assert_eq!(start.lsn, Lsn(big));
    assert_eq!(start.total_len, Some(24 + 5 + 30_000));
    assert_eq!(start.rmid, Some(21));
    assert_eq!(
        start.bytes, None,
        "more than CROSSING_BYTES_MAX in the first segment"
    );
    let stop = second.crossing_end.clone().unwrap();
    assert!(stop.remaining as usize > CROSSING_BYTES_MAX);
    assert_eq!(stop.bytes, None);
    let e = join_crossing(&start, &stop, PgMajor::V15).unwrap_err();
    assert_eq!(e.lsn, Lsn(big));
    assert!(matches!(e.kind, DecodeErrorKind::Crossing(_)), "{e}");
    // The caller that needs it decodes the two segments.
    let mut got = None;
    let (seg1, seg2) = (segment_of(&b, 0), segment_of(&b, 1));
    summarize_segment_with(&seg1, SEG, Lsn(SEG), None, &[&seg2], |r| {
        if r.lsn == Lsn(big) {
            got = Some((r.end, r.header.tot_len));
        }
    })
    .unwrap();
    assert_eq!(got, Some((Lsn(big_end), 24 + 5 + 30_000)));
    // The second segment: the commit and the restore point after the continuation.
    assert_eq!(second.xacts.unwrap().commits, 1);
    assert_eq!(second.restore_points.len(), 1);
    assert_eq!(second.restore_points[0].name, "before-upgrade");
    assert_eq!(second.first_record, Some(Lsn(big_end.next_multiple_of(8))));
    assert!(
        second.ended_at.is_some(),
        "the WAL ends in the second segment"
    );
}

#[test]
fn invalid_wal_mid_segment_is_damage_with_the_records_before_it_summarised() {
    let mut b = Builder::new(PgMajor::V15, SEG);
    let mut commits = Vec::new();
    for i in 0..5 {
        b.push(10, 0, 1, &[1; 300]);
        commits.push(b.push(1, COMMIT, 800 + i, &xact_body(100 + i as i64, 2, None)));
    }
    b.zero_page_rest();
    let (bad, _) = commits[3];
    let mut seg = segment_of(&b, 0);
    seg[(bad - SEG) as usize + 30] ^= 0x04;
    let s = summarize_segment(&seg, SEG, Lsn(SEG), Some(PgMajor::V15)).unwrap();
    let e = s.damage.clone().expect("damage reported");
    assert_eq!(e.lsn, Lsn(bad));
    assert!(matches!(e.kind, DecodeErrorKind::CrcMismatch { .. }), "{e}");
    assert_eq!(s.records, 7, "the records before it");
    let x = s.xacts.unwrap();
    assert_eq!(
        (x.commits, x.last_lsn, x.max_xid),
        (3, Lsn(commits[2].0), 802)
    );
    assert_eq!((s.ended_at, s.crossing_start.clone()), (None, None));
    assert_eq!(s.defect(true), Some(e.clone()), "damage whatever the file");

    // Without damage the same segment ends inside: normal for a .partial only.
    let s = summarize(&b, 0);
    assert_eq!(s.damage, None);
    assert_eq!(s.xacts.unwrap().commits, 5);
    let at = s.ended_at.expect("the WAL ends inside");
    assert_eq!(at, Lsn(commits[4].1.next_multiple_of(8)));
    assert_eq!(s.defect(true), None);
    let cut = s.defect(false).expect("a complete segment cut short");
    assert_eq!(
        (cut.lsn, cut.kind),
        (at, DecodeErrorKind::EndsInsideSegment)
    );

    // Nothing decodable at all: an error.
    let mut seg = segment_of(&b, 0);
    seg[0] = 0x99;
    let e = summarize_segment(&seg, SEG, Lsn(SEG), None).unwrap_err();
    assert!(
        matches!(e.kind, DecodeErrorKind::UnknownPageMagic(_)),
        "{e}"
    );
    let zeros = vec![0u8; SEG as usize];
    let e = summarize_segment(&zeros, SEG, Lsn(SEG), None).unwrap_err();
    assert!(e.to_string().contains("all zeros"), "{e}");
    let seg = segment_of(&b, 0);
    let recycled = summarize_segment(&seg, SEG, Lsn(3 * SEG), None).unwrap_err();
    assert!(recycled.to_string().contains("recycled"), "{recycled}");
    let e = summarize_segment(&seg, SEG, Lsn(SEG + 8192), None).unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::BadStart(_)), "{e}");
    let e = summarize_segment(&[seg.clone(), vec![0]].concat(), SEG, Lsn(SEG), None);
    assert!(e.is_err(), "more than a segment");
    let e = summarize_segment(&seg, SEG, Lsn(SEG), Some(PgMajor::V17)).unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::PageMagicMismatch { .. }));
}

#[test]
fn restore_points_beyond_the_cap_are_counted_not_listed() {
    let mut b = Builder::new(PgMajor::V17, SEG);
    let mut lsns = Vec::new();
    for i in 0..RESTORE_POINTS_MAX + 3 {
        let name = format!("rp-{i}");
        lsns.push(
            b.push(0, 0x70, 0, &restore_point_body(50 + i as i64, &name))
                .0,
        );
    }
    b.zero_page_rest();
    let mut s = summarize(&b, 0);
    assert_eq!(s.restore_points.len(), RESTORE_POINTS_MAX);
    assert_eq!(s.restore_points_omitted, 3);
    for (i, rp) in s.restore_points.iter().enumerate() {
        assert_eq!(rp.name, format!("rp-{i}"));
        assert_eq!(
            (rp.lsn, rp.time),
            (Lsn(lsns[i]), PgTimestamp(50 + i as i64))
        );
    }
    // An absorbed earlier one takes its place in LSN order; the last listed is counted.
    let mut early = Builder::new(PgMajor::V17, SEG);
    early.push(0, 0x70, 0, &restore_point_body(7, "early"));
    let (recs, _) = decode_in_pieces(&early.bytes, SEG, &[8192]);
    let mut rec = recs[0].clone();
    rec.lsn = Lsn(SEG + 8);
    s.absorb(&rec);
    assert_eq!(s.restore_points.len(), RESTORE_POINTS_MAX);
    assert_eq!(s.restore_points[0].name, "early");
    assert_eq!(s.restore_points_omitted, 4);
    assert_eq!(
        s.restore_points.last().unwrap().name,
        format!("rp-{}", RESTORE_POINTS_MAX - 2)
    );
}

#[test]
fn prepared_completions_count_the_two_phase_xid() {
    let mut b = Builder::new(PgMajor::V15, SEG);
    // Times out of LSN order, as sessions write them.
    let plain = b.push(1, COMMIT, 900, &xact_body(5_000, 0, None)).0;
    b.push(1, ABORT, 901, &xact_body(4_000, 0, None));
    // COMMIT/ABORT PREPARED are written by the session that finishes them, whose own
    // xl_xid is not the prepared transaction's.
    b.push(1, COMMIT_PREPARED, 7, &xact_body(6_000, 1, Some(4242)));
    let last = b
        .push(1, ABORT_PREPARED, 7, &xact_body(4_500, 0, Some(4243)))
        .0;
    b.push(1, 0x10, 4244, &[0; 40]); // PREPARE: not a completion
    b.zero_page_rest();
    let s = summarize(&b, 0);
    let x = s.xacts.unwrap();
    assert_eq!((x.commits, x.aborts), (2, 2));
    assert_eq!((x.min_xid, x.max_xid), (900, 4243));
    assert_eq!(
        (x.first_lsn, x.first_time),
        (Lsn(plain), PgTimestamp(5_000))
    );
    assert_eq!((x.last_lsn, x.last_time), (Lsn(last), PgTimestamp(4_500)));
    assert_eq!(
        (x.min_time, x.max_time),
        (PgTimestamp(4_000), PgTimestamp(6_000))
    );
    assert_eq!(s.records, 5);
}

#[test]
fn timeline_switches_and_wal_switches_are_summarised() {
    let mut b = Builder::new(PgMajor::V18, SEG);
    let mut eor = 77i64.to_le_bytes().to_vec();
    eor.extend_from_slice(&3u32.to_le_bytes());
    eor.extend_from_slice(&2u32.to_le_bytes());
    eor.extend_from_slice(&1i32.to_le_bytes());
    eor.extend_from_slice(&[0; 4]);
    let at = b.push(0, 0x90, 0, &eor).0;
    let mut online = vec![0u8; 88];
    online[8..12].copy_from_slice(&3u32.to_le_bytes());
    online[12..16].copy_from_slice(&3u32.to_le_bytes());
    b.push(0, 0x10, 0, &online); // same timeline: not a switch
    let (sw, sw_end) = b.push(0, 0x40, 0, &[]);
    b.bytes.resize(SEG as usize, 0);
    let s = summarize(&b, 0);
    assert_eq!(
        s.timeline_switches,
        vec![TimelineSwitchAt {
            lsn: Lsn(at),
            from: 2,
            to: 3
        }]
    );
    assert!(s.switched);
    assert_eq!(
        (s.last_record, s.end_of_records),
        (Some(Lsn(sw)), Lsn(sw_end))
    );
    assert_eq!((s.ended_at, s.crossing_start.clone()), (None, None));
    assert_eq!(s.defect(false), None, "a switched segment is complete");
    assert_eq!((s.major, s.timeline, s.records), (PgMajor::V18, 1, 3));

    // A copy cut short (not a whole file): where the known WAL stops, nothing crossing.
    let cut = &segment_of(&b, 0)[..20_000];
    let s = summarize_segment(cut, SEG, Lsn(SEG), None).unwrap();
    assert!(s.switched && s.ended_at.is_none());
    let (b2, (lsn, _)) = crossing_commit();
    let s = summarize_segment(
        &segment_of(&b2, 0)[..(lsn - SEG) as usize + 100],
        SEG,
        Lsn(SEG),
        None,
    )
    .unwrap();
    assert_eq!((s.ended_at, s.crossing_start), (Some(Lsn(lsn)), None));
}

#[test]
fn only_crossing_records_the_planner_reads_need_joining() {
    let start = |rmid: Option<u8>, info: Option<u8>| CrossingStart {
        lsn: Lsn(SEG - 0x40),
        total_len: rmid.map(|_| 200),
        rmid,
        info,
        xid: rmid.map(|_| 900),
        bytes: None,
    };
    for (rmid, info, matters) in [
        (1, COMMIT, true),
        (1, ABORT, true),
        (1, COMMIT_PREPARED, true),
        (1, ABORT_PREPARED, true),
        (1, 0x10, false),  // PREPARE: its commit or abort comes later
        (1, 0x50, false),  // ASSIGNMENT
        (0, 0x70, true),   // RESTORE_POINT
        (0, 0x00, true),   // CHECKPOINT_SHUTDOWN
        (0, 0x90, true),   // END_OF_RECOVERY
        (0, 0x40, true),   // SWITCH
        (0, 0xA0, false),  // FPI
        (10, 0x00, false), // heap insert
    ] {
        assert_eq!(
            start(Some(rmid), Some(info)).may_matter_to_recovery(),
            matters,
            "rmid {rmid} info {info:#04x}"
        );
    }
    // A header split across the boundary: its kind is unknown, so it may matter.
    assert!(start(None, None).may_matter_to_recovery());
}

/// A heap-like record (rmid 10) with one full-page image of `image` bytes and 4 bytes of
/// main data, as PostgreSQL lays out a record with a block reference.
fn image_record(b: &Builder, image: u16, fill: u8) -> Vec<u8> {
    let mut body = vec![0u8, 0x10 | 0x20, 3, 0]; // block 0: image and 3 bytes of data
    body.extend_from_slice(&image.to_le_bytes()); // bimg_len
    body.extend_from_slice(&0u16.to_le_bytes()); // hole_offset
    body.push(0); // bimg_info: no hole, not compressed
    body.extend_from_slice(&[1; 12]); // relfilelocator
    body.extend_from_slice(&7u32.to_le_bytes()); // block number
    body.extend_from_slice(&[255, 4]); // main data header
    body.extend(std::iter::repeat_n(fill, usize::from(image)));
    body.extend_from_slice(&[0xDD; 3]);
    body.extend_from_slice(&[1, 2, 3, 4]);
    let mut rec = b.record_bytes(10, 0, 5, &[]);
    rec.truncate(24);
    rec.extend_from_slice(&body);
    let tot = rec.len() as u32;
    rec[0..4].copy_from_slice(&tot.to_le_bytes());
    let crc = record::record_crc(&rec);
    rec[20..24].copy_from_slice(&crc.to_le_bytes());
    rec
}

/// Full-page images crossing pages, a commit between them, the last image crossing into
/// the next segment.
fn images_across_pages() -> (Builder, Vec<(u64, u64)>) {
    let mut b = Builder::new(PgMajor::V16, SEG);
    let mut at = Vec::new();
    for i in 0..40u8 {
        let rec = image_record(&b, 8000 - u16::from(i) * 100, i);
        at.push(b.push_raw(&rec));
        if i % 7 == 0 {
            at.push(b.push(
                1,
                0x80,
                900 + u32::from(i),
                &commit_body(1000 + i64::from(i), &[]),
            ));
        }
    }
    b.fill_until(5000);
    let rec = image_record(&b, 7000, 0xAB);
    at.push(b.push_raw(&rec));
    b.zero_page_rest();
    b.bytes.extend_from_slice(&[0u8; PAGE as usize]);
    (b, at)
}

fn decode_without_main_data(
    bytes: &[u8],
    start: u64,
    piece: usize,
) -> Result<Vec<WalRecord>, DecodeError> {
    let config = DecoderConfig::new(SEG, Lsn(start)).without_main_data();
    let mut d = WalDecoder::new(config).unwrap();
    let mut out = Vec::new();
    for p in bytes.chunks(piece) {
        d.feed_into(p, &mut out)?;
    }
    Ok(out)
}

#[test]
fn without_main_data_long_records_are_checked_as_they_stream_and_decode_alike() {
    let (b, at) = images_across_pages();
    let (full, _) = decode_in_pieces(&b.bytes, b.start, &[b.bytes.len()]);
    assert!(at
        .iter()
        .all(|a| full.iter().any(|r| (r.lsn.0, r.end.0) == *a)));
    let crossing_pages = |r: &WalRecord| r.lsn.0 / PAGE != (r.end.0 - 1) / PAGE;
    assert!(
        full.iter()
            .filter(|r| r.fpi_bytes > 4000 && crossing_pages(r))
            .count()
            > 20,
        "most images cross a page"
    );
    for piece in [1, 13, 8192, b.bytes.len()] {
        let lean = decode_without_main_data(&b.bytes, b.start, piece).unwrap();
        assert_eq!(lean.len(), full.len(), "piece {piece}");
        for (l, f) in lean.iter().zip(&full) {
            let f = WalRecord {
                main_data: Vec::new(),
                ..f.clone()
            };
            assert_eq!(l, &f, "piece {piece}");
        }
    }
    // A flipped byte deep inside a streamed image is still a checksum error on its record.
    let (lsn, end) = at[3];
    assert!(end - lsn > 4096 && lsn / PAGE != end / PAGE);
    let mut damaged = b.bytes.clone();
    damaged[(lsn - b.start) as usize + 4000] ^= 0x10;
    for piece in [1, 8192, damaged.len()] {
        let e = decode_without_main_data(&damaged, b.start, piece).unwrap_err();
        assert_eq!(e.lsn, Lsn(lsn), "piece {piece}");
        assert!(matches!(e.kind, DecodeErrorKind::CrcMismatch { .. }), "{e}");
    }
}

#[test]
fn a_streamed_record_crossing_the_segment_keeps_its_header_but_no_bytes() {
    let (b, at) = images_across_pages();
    let (last, _) = *at.last().unwrap();
    assert_eq!(last / SEG, 1, "starts in the first segment");
    let first = summarize(&b, 0);
    let start = first.crossing_start.clone().expect("the image crosses");
    assert_eq!(start.lsn, Lsn(last));
    assert_eq!(start.rmid, Some(10));
    assert_eq!(start.bytes, None, "only its first bytes were kept");
    assert!(!start.may_matter_to_recovery());
}
