//! One complete record: its header (`XLogRecord`), CRC check, block references (skipped)
//! and main data. Pure: works on the record's bytes, already reassembled across pages.

use super::payload::{self, Payload};
use super::DecodeErrorKind;
use crate::crc32c::Crc32c;
use crate::types::{Lsn, PgMajor};

/// `SizeOfXLogRecord`: the fixed record header.
pub(crate) const RECORD_HEADER_LEN: usize = 24;
/// `offsetof(XLogRecord, xl_crc)`.
pub(crate) const CRC_OFFSET: usize = 20;

/// `XLR_MAX_BLOCK_ID` (32 in 13 to 18).
const XLR_MAX_BLOCK_ID: u8 = 32;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
/// Since 14: the top-level xid of a subtransaction's first record (logical decoding).
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;

const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_HAS_DATA: u8 = 0x20;
const BKPBLOCK_SAME_REL: u8 = 0x80;

const BKPIMAGE_HAS_HOLE: u8 = 0x01;
/// 13 and 14: `BKPIMAGE_IS_COMPRESSED` (pglz only).
const BKPIMAGE_IS_COMPRESSED_14: u8 = 0x02;
/// 15 and later: `BKPIMAGE_COMPRESS_PGLZ | _LZ4 | _ZSTD` (0x02 became `BKPIMAGE_APPLY`).
const BKPIMAGE_COMPRESSED_15: u8 = 0x04 | 0x08 | 0x10;

/// The fixed header of a record (`XLogRecord`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// `xl_tot_len`: the whole record, header included.
    pub tot_len: u32,
    /// `xl_xid`: the transaction that wrote it (0 when none).
    pub xid: u32,
    /// `xl_prev`: the start of the previous record.
    pub prev: Lsn,
    /// `xl_info`: the low 4 bits are generic flags, the high 4 the resource manager's.
    pub info: u8,
    /// `xl_rmid`: the resource manager.
    pub rmid: u8,
    /// `xl_crc`.
    pub crc: u32,
}

impl RecordHeader {
    pub(crate) fn parse(b: &[u8]) -> RecordHeader {
        RecordHeader {
            tot_len: u32::from_le_bytes(b[0..4].try_into().unwrap()),
            xid: u32::from_le_bytes(b[4..8].try_into().unwrap()),
            prev: Lsn(u64::from_le_bytes(b[8..16].try_into().unwrap())),
            info: b[16],
            rmid: b[17],
            crc: u32::from_le_bytes(b[20..24].try_into().unwrap()),
        }
    }

    /// The resource manager's bits of `xl_info` (`XLR_RMGR_INFO_MASK`).
    pub fn rmgr_info(&self) -> u8 {
        self.info & 0xF0
    }
}

/// A decoded WAL record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRecord {
    /// Where it starts (what `pg_waldump` prints as `lsn`).
    pub lsn: Lsn,
    /// Where it ends: the first byte after it. `XLogInsert` (and so
    /// `pg_create_restore_point()`, `pg_switch_wal()`, `pg_logical_emit_message()`)
    /// returns this rounded up to 8, where the next record may start.
    pub end: Lsn,
    /// The timeline of the page it starts on (`xlp_tli`).
    pub timeline: u32,
    /// The fixed header.
    pub header: RecordHeader,
    /// Block references it carries.
    pub block_refs: u32,
    /// Bytes of full-page images in it (`tot_len - fpi_bytes` is `pg_waldump`'s `rec` length).
    pub fpi_bytes: u32,
    /// The replication origin (`XLR_BLOCK_ID_ORIGIN`), if any.
    pub origin: Option<u16>,
    /// The top-level xid (`XLR_BLOCK_ID_TOPLEVEL_XID`, 14 and later), if any.
    pub toplevel_xid: Option<u32>,
    /// The resource manager's main data.
    pub main_data: Vec<u8>,
    /// The main data, typed, for the kinds the recovery planner needs.
    pub payload: Payload,
}

impl WalRecord {
    /// The resource manager's name as `pg_waldump` prints it.
    pub fn rmgr_name(&self) -> String {
        rmgr_name(self.header.rmid)
    }
}

/// A resource manager's name as `pg_waldump` prints it (`rmgrlist.h`, the same ids in
/// 13 to 18; 128 and up are custom resource managers, 15 and later).
pub fn rmgr_name(rmid: u8) -> String {
    const NAMES: [&str; 22] = [
        "XLOG",
        "Transaction",
        "Storage",
        "CLOG",
        "Database",
        "Tablespace",
        "MultiXact",
        "RelMap",
        "Standby",
        "Heap2",
        "Heap",
        "Btree",
        "Hash",
        "Gin",
        "Gist",
        "Sequence",
        "SPGist",
        "BRIN",
        "CommitTs",
        "ReplicationOrigin",
        "Generic",
        "LogicalMessage",
    ];
    match NAMES.get(usize::from(rmid)) {
        Some(n) => n.to_string(),
        None => format!("custom{rmid:03}"),
    }
}

/// The CRC-32C of a whole record, as `ValidXLogRecord` computes it: the data after the
/// header first, then the header up to `xl_crc`.
pub(crate) fn record_crc(rec: &[u8]) -> u32 {
    let mut c = Crc32c::new();
    c.update(&rec[RECORD_HEADER_LEN..]);
    c.update(&rec[..CRC_OFFSET]);
    c.finish()
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], DecodeErrorKind> {
        if self.b.len() - self.at < n {
            return Err(DecodeErrorKind::BadBlockHeaders(format!(
                "record ends inside {what}"
            )));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8, DecodeErrorKind> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, DecodeErrorKind> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &str) -> Result<u32, DecodeErrorKind> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
}

/// Checks and decodes a complete record (`rec` is exactly `xl_tot_len` bytes).
pub(crate) fn decode(
    lsn: Lsn,
    timeline: u32,
    rec: &[u8],
    major: PgMajor,
) -> Result<WalRecord, DecodeErrorKind> {
    decode_keeping(lsn, timeline, rec, major, true)
}

/// [`decode`]; `keep_main_data` false leaves [`WalRecord::main_data`] empty (a copy and
/// an allocation saved per record, for callers that only need the typed payloads).
pub(crate) fn decode_keeping(
    lsn: Lsn,
    timeline: u32,
    rec: &[u8],
    major: PgMajor,
    keep_main_data: bool,
) -> Result<WalRecord, DecodeErrorKind> {
    decode_checked(
        lsn,
        timeline,
        rec,
        rec.len(),
        record_crc(rec),
        major,
        keep_main_data,
    )
}

/// [`decode_keeping`] without main data for a record of which only the first bytes were
/// kept (`prefix`: at least its header and block headers) and whose checksum the caller
/// computed (`computed`) as the bytes went by: a resource manager whose payload is not
/// decoded (see [`payload::decodes`]). `total` is its length.
pub(crate) fn decode_streamed(
    lsn: Lsn,
    timeline: u32,
    prefix: &[u8],
    total: usize,
    computed: u32,
    major: PgMajor,
) -> Result<WalRecord, DecodeErrorKind> {
    let header = RecordHeader::parse(prefix);
    debug_assert!(!payload::decodes(header.rmid), "its main data is not kept");
    decode_checked(lsn, timeline, prefix, total, computed, major, false)
}

/// Checks the checksum `computed` over a record of `total` bytes and decodes its headers
/// from `rec` (all of the record, or its first bytes for a streamed one) and its payload
/// from its main data (when `rec` holds all of it).
fn decode_checked(
    lsn: Lsn,
    timeline: u32,
    rec: &[u8],
    total: usize,
    computed: u32,
    major: PgMajor,
    keep_main_data: bool,
) -> Result<WalRecord, DecodeErrorKind> {
    let header = RecordHeader::parse(rec);
    if computed != header.crc {
        return Err(DecodeErrorKind::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    // DecodeXLogRecord: block headers, then (by convention last) the main data header;
    // then the block images and data in block order, then the main data.
    let mut r = Reader {
        b: rec,
        at: RECORD_HEADER_LEN,
    };
    let mut datatotal: u64 = 0;
    let mut main_len: u32 = 0;
    let mut block_refs = 0u32;
    let mut fpi_bytes = 0u32;
    let mut origin = None;
    let mut toplevel_xid = None;
    let mut max_block: Option<u8> = None;
    let mut have_rel = false;
    while (total - r.at) as u64 > datatotal {
        let id = r.u8("a block id")?;
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = u32::from(r.u8("the main data length")?);
                datatotal += u64::from(main_len);
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = r.u32("the main data length")?;
                datatotal += u64::from(main_len);
                break;
            }
            XLR_BLOCK_ID_ORIGIN => origin = Some(r.u16("the origin")?),
            XLR_BLOCK_ID_TOPLEVEL_XID => toplevel_xid = Some(r.u32("the top-level xid")?),
            id if id <= XLR_MAX_BLOCK_ID => {
                if max_block.is_some_and(|m| id <= m) {
                    return Err(DecodeErrorKind::BadBlockHeaders(format!(
                        "block id {id} out of order"
                    )));
                }
                max_block = Some(id);
                block_refs += 1;
                let fork_flags = r.u8("a block header")?;
                let data_len = r.u16("a block header")?;
                let has_data = fork_flags & BKPBLOCK_HAS_DATA != 0;
                if has_data != (data_len != 0) {
                    return Err(DecodeErrorKind::BadBlockHeaders(format!(
                        "block {id}: data flag {has_data} with data length {data_len}"
                    )));
                }
                datatotal += u64::from(data_len);
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    let bimg_len = r.u16("an image header")?;
                    let _hole_offset = r.u16("an image header")?;
                    let bimg_info = r.u8("an image header")?;
                    let compressed = match major {
                        PgMajor::V13 | PgMajor::V14 => bimg_info & BKPIMAGE_IS_COMPRESSED_14 != 0,
                        _ => bimg_info & BKPIMAGE_COMPRESSED_15 != 0,
                    };
                    if bimg_info & BKPIMAGE_HAS_HOLE != 0 && compressed {
                        let _hole_length = r.u16("an image's hole length")?;
                    }
                    if bimg_len == 0 {
                        return Err(DecodeErrorKind::BadBlockHeaders(format!(
                            "block {id}: image of length 0"
                        )));
                    }
                    datatotal += u64::from(bimg_len);
                    fpi_bytes += u32::from(bimg_len);
                }
                if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    r.take(12, "a relation locator")?;
                    have_rel = true;
                } else if !have_rel {
                    return Err(DecodeErrorKind::BadBlockHeaders(format!(
                        "block {id}: same relation as a previous block, but none came before"
                    )));
                }
                r.u32("a block number")?;
            }
            other => {
                return Err(DecodeErrorKind::BadBlockHeaders(format!(
                    "invalid block id {other}"
                )))
            }
        }
    }
    let remaining = (total - r.at) as u64;
    if remaining != datatotal {
        return Err(DecodeErrorKind::BadBlockHeaders(format!(
            "headers announce {datatotal} bytes of data, the record holds {remaining}"
        )));
    }
    // A streamed record's main data was not kept; its payload is not decoded either.
    let main = match rec.len() == total {
        true => &rec[total - main_len as usize..],
        false => &[],
    };
    let payload = payload::decode(major, &header, main).map_err(DecodeErrorKind::BadPayload)?;
    let main_data = if keep_main_data {
        main.to_vec()
    } else {
        Vec::new()
    };
    Ok(WalRecord {
        lsn,
        end: Lsn(lsn.0), // set by the decoder, which knows where the record ended
        timeline,
        header,
        block_refs,
        fpi_bytes,
        origin,
        toplevel_xid,
        main_data,
        payload,
    })
}
