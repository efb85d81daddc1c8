//! Typed payloads: the record kinds the recovery planner needs, decoded from main data.
//!
//! - `RM_XACT_ID` (1): commit, abort, commit prepared, abort prepared (`xl_xact_commit`,
//!   `xl_xact_abort` and their optional parts, in `ParseCommitRecord`'s order), prepare;
//! - `RM_XLOG_ID` (0): checkpoints (`CheckPoint`), `XLOG_SWITCH`, restore points
//!   (`xl_restore_point`), end of recovery (`xl_end_of_recovery`), overwrite of a missing
//!   continuation (`xl_overwrite_contrecord`).
//!
//! Every other record is [`Payload::Other`]. A record of a typed kind whose bytes do not
//! add up exactly is an error: the planner must not miss a commit because tidemark
//! misread a format. Pure: no IO.

use super::record::RecordHeader;
use crate::types::{Lsn, PgMajor, PgTimestamp};

const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;

// pg_control.h (RM_XLOG_ID info codes)
const XLOG_CHECKPOINT_SHUTDOWN: u8 = 0x00;
const XLOG_CHECKPOINT_ONLINE: u8 = 0x10;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_END_OF_RECOVERY: u8 = 0x90;
/// 0xD0: new in 15, back-patched to 13 and 14 in their late-2021 minor releases (the
/// 13.23 and 14.23 servers the tests run know it).
const XLOG_OVERWRITE_CONTRECORD: u8 = 0xD0;

// xact.h
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_HAS_INFO: u8 = 0x80;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_PREPARE: u8 = 0x10;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;

const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XACT_XINFO_HAS_RELFILENODES: u32 = 1 << 2;
const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
const XACT_XINFO_HAS_ORIGIN: u32 = 1 << 5;
// 1 << 6 is XACT_XINFO_HAS_AE_LOCKS: a flag without data.
const XACT_XINFO_HAS_GID: u32 = 1 << 7;
/// 15 and later.
const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;

/// `sizeof(RelFileNode)` / `sizeof(RelFileLocator)`: three Oids in 13 to 18.
const RELFILELOCATOR_LEN: usize = 12;
/// `sizeof(SharedInvalidationMessage)`: the largest member, `SharedInvalSmgrMsg`.
const INVAL_MSG_LEN: usize = 16;
/// `sizeof(CheckPoint)` in 13 to 18 (17's `wal_level` took padding after `fullPageWrites`).
const CHECKPOINT_LEN: usize = 88;
/// `MAXFNAMELEN`: the size of `rp_name`.
const RESTORE_POINT_NAME_LEN: usize = 64;

/// What a record means to the recovery planner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// A transaction commit (plain or prepared).
    Commit(XactCompletion),
    /// A transaction abort (plain or prepared; also a subtransaction's rollback).
    Abort(XactCompletion),
    /// `PREPARE TRANSACTION` (not a recovery target: the commit or abort comes later).
    Prepare {
        /// The prepared transaction (the record's `xl_xid`).
        xid: u32,
    },
    /// `XLOG_RESTORE_POINT`.
    RestorePoint(RestorePoint),
    /// `XLOG_CHECKPOINT_SHUTDOWN` or `XLOG_CHECKPOINT_ONLINE`.
    Checkpoint(Checkpoint),
    /// `XLOG_END_OF_RECOVERY`: a promotion's first record on the new timeline.
    EndOfRecovery(EndOfRecovery),
    /// `XLOG_SWITCH`: the rest of the segment is padding.
    Switch,
    /// `XLOG_OVERWRITE_CONTRECORD`: a record whose continuation was never written was
    /// given up; this replaces it.
    OverwriteContrecord {
        /// The start of the record given up.
        overwritten: Lsn,
        /// When.
        time: PgTimestamp,
    },
    /// Any other record.
    Other,
}

/// Plain or prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XactKind {
    /// `XLOG_XACT_COMMIT` / `XLOG_XACT_ABORT`.
    Plain,
    /// `XLOG_XACT_COMMIT_PREPARED` / `XLOG_XACT_ABORT_PREPARED`.
    Prepared,
}

/// The end of a transaction (`xl_xact_parsed_commit` / `_abort`, the parts tidemark keeps).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XactCompletion {
    /// Plain or prepared.
    pub kind: XactKind,
    /// The transaction that ended: `xl_xid` for a plain one, the two-phase xid for a
    /// prepared one (whose record is written by another backend). This is what
    /// `recovery_target_xid` compares.
    pub xid: u32,
    /// `xact_time`: what `recovery_target_time` compares.
    pub time: PgTimestamp,
    /// `xinfo` (0 when the record has none).
    pub xinfo: u32,
    /// `(database, tablespace)` when present.
    pub db: Option<(u32, u32)>,
    /// The subtransactions that ended with it.
    pub subxacts: Vec<u32>,
    /// Relations dropped.
    pub dropped_rels: u32,
    /// Statistics entries dropped (15 and later).
    pub dropped_stats: u32,
    /// Cache invalidation messages.
    pub invals: u32,
    /// The two-phase xid, for a prepared transaction.
    pub twophase_xid: Option<u32>,
    /// The prepared transaction's GID (logged with `wal_level = logical`).
    pub gid: Option<String>,
    /// Replication origin `(lsn, timestamp)`.
    pub origin: Option<(Lsn, PgTimestamp)>,
}

/// A restore point (`pg_create_restore_point`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePoint {
    /// `rp_time`.
    pub time: PgTimestamp,
    /// `rp_name` (names may repeat).
    pub name: String,
}

/// A checkpoint record's `CheckPoint`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// A shutdown checkpoint (else online).
    pub shutdown: bool,
    /// `redo`: where replay from this checkpoint starts.
    pub redo: Lsn,
    /// `ThisTimeLineID`.
    pub timeline: u32,
    /// `PrevTimeLineID` (differs from `timeline` in an end-of-recovery checkpoint).
    pub prev_timeline: u32,
    /// `fullPageWrites`.
    pub full_page_writes: bool,
    /// `nextXid` (a `FullTransactionId`: epoch in the high 32 bits).
    pub next_xid: u64,
    /// `nextOid`.
    pub next_oid: u32,
    /// `oldestXid`.
    pub oldest_xid: u32,
    /// `time`: a `pg_time_t`, **seconds since the Unix epoch** (not a `TimestampTz`).
    pub time_unix_secs: i64,
    /// `oldestActiveXid`.
    pub oldest_active_xid: u32,
}

/// `xl_end_of_recovery`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndOfRecovery {
    /// `end_time`.
    pub time: PgTimestamp,
    /// `ThisTimeLineID`: the new timeline.
    pub timeline: u32,
    /// `PrevTimeLineID`: the timeline it forked from.
    pub prev_timeline: u32,
    /// `wal_level` (17 and later log it; `None` before).
    pub wal_level: Option<i32>,
}

/// A timeline switch, as a record marks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelineSwitch {
    /// The timeline forked from.
    pub from: u32,
    /// The new timeline.
    pub to: u32,
}

impl Payload {
    /// The timeline switch this record marks: `XLOG_END_OF_RECOVERY`, or a checkpoint
    /// whose `ThisTimeLineID` differs from `PrevTimeLineID` (an end-of-recovery
    /// checkpoint, written instead when a promotion is not "fast").
    pub fn timeline_switch(&self) -> Option<TimelineSwitch> {
        match self {
            Payload::EndOfRecovery(e) => Some(TimelineSwitch {
                from: e.prev_timeline,
                to: e.timeline,
            }),
            Payload::Checkpoint(c) if c.timeline != c.prev_timeline => Some(TimelineSwitch {
                from: c.prev_timeline,
                to: c.timeline,
            }),
            _ => None,
        }
    }

    /// The commit or abort, if this is one.
    pub fn xact_completion(&self) -> Option<&XactCompletion> {
        match self {
            Payload::Commit(x) | Payload::Abort(x) => Some(x),
            _ => None,
        }
    }
}

struct Data<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Data<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.b.len() - self.at < n {
            return Err(format!(
                "{} bytes end inside {what} (at offset {})",
                self.b.len(),
                self.at
            ));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    fn i64(&mut self, what: &str) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8, what)?.try_into().unwrap()))
    }
    fn count(&mut self, what: &str) -> Result<usize, String> {
        let n = self.u32(what)? as i32;
        usize::try_from(n).map_err(|_| format!("negative count {n} of {what}"))
    }
}

/// Whether a record of this resource manager and `xl_info` is one the recovery planner
/// reads (a transaction commit or abort, a restore point, a checkpoint, an end of
/// recovery, a WAL switch, an overwritten continuation): [`Payload::Other`] for every
/// record for which this is false.
pub(crate) fn matters_to_recovery(rmid: u8, info: u8) -> bool {
    match rmid {
        RM_XACT_ID => matches!(
            info & XLOG_XACT_OPMASK,
            XLOG_XACT_COMMIT
                | XLOG_XACT_ABORT
                | XLOG_XACT_COMMIT_PREPARED
                | XLOG_XACT_ABORT_PREPARED
        ),
        RM_XLOG_ID => matches!(
            info & 0xF0,
            XLOG_CHECKPOINT_SHUTDOWN
                | XLOG_CHECKPOINT_ONLINE
                | XLOG_SWITCH
                | XLOG_RESTORE_POINT
                | XLOG_END_OF_RECOVERY
                | XLOG_OVERWRITE_CONTRECORD
        ),
        _ => false,
    }
}

fn at<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    b[off..off + N].try_into().unwrap()
}

/// Whether [`decode`] reads the main data of this resource manager's records (for the
/// others it answers [`Payload::Other`] without looking).
pub(crate) fn decodes(rmid: u8) -> bool {
    matches!(rmid, RM_XLOG_ID | RM_XACT_ID)
}

pub(crate) fn decode(major: PgMajor, h: &RecordHeader, data: &[u8]) -> Result<Payload, String> {
    let info = h.rmgr_info();
    match h.rmid {
        RM_XLOG_ID => decode_xlog(info, data),
        RM_XACT_ID => match info & XLOG_XACT_OPMASK {
            XLOG_XACT_COMMIT => Ok(Payload::Commit(decode_xact(major, h, info, data, true)?)),
            XLOG_XACT_COMMIT_PREPARED => {
                Ok(Payload::Commit(decode_xact(major, h, info, data, true)?))
            }
            XLOG_XACT_ABORT | XLOG_XACT_ABORT_PREPARED => {
                Ok(Payload::Abort(decode_xact(major, h, info, data, false)?))
            }
            XLOG_XACT_PREPARE => Ok(Payload::Prepare { xid: h.xid }),
            _ => Ok(Payload::Other),
        },
        _ => Ok(Payload::Other),
    }
}

fn decode_xlog(info: u8, d: &[u8]) -> Result<Payload, String> {
    match info {
        XLOG_CHECKPOINT_SHUTDOWN | XLOG_CHECKPOINT_ONLINE => {
            if d.len() < CHECKPOINT_LEN {
                return Err(format!("checkpoint of {} bytes", d.len()));
            }
            Ok(Payload::Checkpoint(Checkpoint {
                shutdown: info == XLOG_CHECKPOINT_SHUTDOWN,
                redo: Lsn(u64::from_le_bytes(at(d, 0))),
                timeline: u32::from_le_bytes(at(d, 8)),
                prev_timeline: u32::from_le_bytes(at(d, 12)),
                full_page_writes: d[16] != 0,
                next_xid: u64::from_le_bytes(at(d, 24)),
                next_oid: u32::from_le_bytes(at(d, 32)),
                oldest_xid: u32::from_le_bytes(at(d, 44)),
                time_unix_secs: i64::from_le_bytes(at(d, 64)),
                oldest_active_xid: u32::from_le_bytes(at(d, 80)),
            }))
        }
        XLOG_SWITCH => Ok(Payload::Switch),
        XLOG_RESTORE_POINT => {
            if d.len() < 8 + RESTORE_POINT_NAME_LEN {
                return Err(format!("restore point of {} bytes", d.len()));
            }
            let raw = &d[8..8 + RESTORE_POINT_NAME_LEN];
            let len = raw
                .iter()
                .position(|&b| b == 0)
                .ok_or("restore point name without its terminating zero")?;
            Ok(Payload::RestorePoint(RestorePoint {
                time: PgTimestamp(i64::from_le_bytes(at(d, 0))),
                name: String::from_utf8_lossy(&raw[..len]).into_owned(),
            }))
        }
        XLOG_END_OF_RECOVERY => {
            if d.len() < 16 {
                return Err(format!("end-of-recovery record of {} bytes", d.len()));
            }
            Ok(Payload::EndOfRecovery(EndOfRecovery {
                time: PgTimestamp(i64::from_le_bytes(at(d, 0))),
                timeline: u32::from_le_bytes(at(d, 8)),
                prev_timeline: u32::from_le_bytes(at(d, 12)),
                wal_level: (d.len() >= 20).then(|| i32::from_le_bytes(at(d, 16))),
            }))
        }
        XLOG_OVERWRITE_CONTRECORD => {
            if d.len() < 16 {
                return Err(format!("overwrite-contrecord record of {} bytes", d.len()));
            }
            Ok(Payload::OverwriteContrecord {
                overwritten: Lsn(u64::from_le_bytes(at(d, 0))),
                time: PgTimestamp(i64::from_le_bytes(at(d, 8))),
            })
        }
        _ => Ok(Payload::Other),
    }
}

/// `ParseCommitRecord` / `ParseAbortRecord`: the optional parts follow `xact_time` in
/// this order, each only when its `xinfo` bit is set.
fn decode_xact(
    major: PgMajor,
    h: &RecordHeader,
    info: u8,
    data: &[u8],
    commit: bool,
) -> Result<XactCompletion, String> {
    let what = if commit { "commit" } else { "abort" };
    let prepared = matches!(
        info & XLOG_XACT_OPMASK,
        XLOG_XACT_COMMIT_PREPARED | XLOG_XACT_ABORT_PREPARED
    );
    let mut d = Data { b: data, at: 0 };
    let time = PgTimestamp(d.i64("xact_time")?);
    let xinfo = if info & XLOG_XACT_HAS_INFO != 0 {
        d.u32("xinfo")?
    } else {
        0
    };
    let db = if xinfo & XACT_XINFO_HAS_DBINFO != 0 {
        Some((d.u32("dbinfo")?, d.u32("dbinfo")?))
    } else {
        None
    };
    let mut subxacts = Vec::new();
    if xinfo & XACT_XINFO_HAS_SUBXACTS != 0 {
        let n = d.count("subxacts")?;
        let raw = d.take(n * 4, "subxacts")?;
        subxacts = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
    }
    let mut dropped_rels = 0;
    if xinfo & XACT_XINFO_HAS_RELFILENODES != 0 {
        let n = d.count("relfilelocators")?;
        d.take(n * RELFILELOCATOR_LEN, "relfilelocators")?;
        dropped_rels = n as u32;
    }
    let mut dropped_stats = 0;
    if xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0 {
        // xl_xact_stats_item: {kind, dboid, objoid} until 17; 18 made the object id 64
        // bits (objid_lo, objid_hi).
        let item = match major {
            PgMajor::V13 | PgMajor::V14 => {
                return Err(format!("dropped-stats flag in a {major} {what} record"))
            }
            PgMajor::V15 | PgMajor::V16 | PgMajor::V17 => 12,
            PgMajor::V18 => 16,
        };
        let n = d.count("stats items")?;
        d.take(n * item, "stats items")?;
        dropped_stats = n as u32;
    }
    let mut invals = 0;
    if xinfo & XACT_XINFO_HAS_INVALS != 0 {
        let n = d.count("invalidation messages")?;
        d.take(n * INVAL_MSG_LEN, "invalidation messages")?;
        invals = n as u32;
    }
    let mut twophase_xid = None;
    let mut gid = None;
    if xinfo & XACT_XINFO_HAS_TWOPHASE != 0 {
        twophase_xid = Some(d.u32("twophase xid")?);
        if xinfo & XACT_XINFO_HAS_GID != 0 {
            let rest = &data[d.at..];
            let len = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or("gid without its terminating zero")?;
            gid = Some(String::from_utf8_lossy(&rest[..len]).into_owned());
            d.at += len + 1;
        }
    }
    let mut origin = None;
    if xinfo & XACT_XINFO_HAS_ORIGIN != 0 {
        let lsn = Lsn(u64::from_le_bytes(d.take(8, "origin")?.try_into().unwrap()));
        let ts = PgTimestamp(d.i64("origin")?);
        origin = Some((lsn, ts));
    }
    if d.at != data.len() {
        return Err(format!(
            "{what} record of {} bytes, its parts (xinfo {xinfo:#x}) end at {}",
            data.len(),
            d.at
        ));
    }
    let xid = if prepared {
        twophase_xid.ok_or_else(|| format!("prepared {what} without its two-phase xid"))?
    } else {
        h.xid
    };
    Ok(XactCompletion {
        kind: if prepared {
            XactKind::Prepared
        } else {
            XactKind::Plain
        },
        xid,
        time,
        xinfo,
        db,
        subxacts,
        dropped_rels,
        dropped_stats,
        invals,
        twophase_xid,
        gid,
        origin,
    })
}
