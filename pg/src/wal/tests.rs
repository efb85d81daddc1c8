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
