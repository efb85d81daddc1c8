//! WAL files: segment sizes, WAL file names and their arithmetic, WAL page headers, and
//! the checks that a segment is the WAL its name says. Moved from `store::pg` (issue 13).
//!
//! Pure and std-only: no IO happens here. Callers hand in bytes they read; this module
//! says what they are. Everything follows `src/include/access/xlog_internal.h`:
//!
//! - a WAL file name is `TTTTTTTTXXXXXXXXYYYYYYYY` (timeline, then the segment number
//!   split into "log" and "seg" parts, where a log holds `0x1_0000_0000 / segment size`
//!   segments), with the `.partial` and `.XXXXXXXX.backup` variants, and `TTTTTTTT.history`;
//! - every `XLOG_BLCKSZ` page of a segment starts with a header (magic, flags, timeline,
//!   page address); the first page's long header also carries the system identifier, the
//!   segment size and the page size.
//!
//! WAL is written in the server's native byte order; tidemark runs on little-endian
//! machines (x86-64, aarch64) and reads it as such.

use std::fmt;
use std::str::FromStr;

use crate::types::{major_version_of_magic, Lsn, SystemId, TimelineId};

/// A WAL segment size that PostgreSQL allows: a power of two from 1 MiB to 1 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SegmentSize(u32);

impl SegmentSize {
    /// The default segment size, 16 MiB.
    pub const DEFAULT: SegmentSize = SegmentSize(16 * 1024 * 1024);

    /// Checks `bytes` against initdb's rule (`--wal-segsize`: power of two, 1 MiB..=1 GiB).
    pub fn new(bytes: u64) -> Result<Self, WalError> {
        if bytes.is_power_of_two() && (1 << 20..=1 << 30).contains(&bytes) {
            Ok(SegmentSize(bytes as u32))
        } else {
            Err(WalError::BadSegmentSize(bytes))
        }
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        u64::from(self.0)
    }

    /// How many segments one "log" (the middle 8 hex digits of a name) holds.
    pub fn segments_per_log(self) -> u64 {
        0x1_0000_0000 / self.bytes()
    }
}

/// A WAL segment: timeline plus segment number, independent of the name's split, which
/// depends on the segment size. The name itself is kept as `log`/`seg` as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WalSegmentName {
    /// Timeline of the segment.
    pub timeline: TimelineId,
    /// The middle 8 hex digits.
    pub log: u32,
    /// The last 8 hex digits.
    pub seg: u32,
}

impl WalSegmentName {
    /// The segment number for a given segment size, or an error when the `seg` part is
    /// beyond what one log holds at that size (such a name cannot come from PostgreSQL).
    pub fn segment_number(&self, size: SegmentSize) -> Result<u64, WalError> {
        let per_log = size.segments_per_log();
        if u64::from(self.seg) >= per_log {
            return Err(WalError::NameSizeMismatch {
                name: self.to_string(),
                segment_size: size.bytes(),
            });
        }
        Ok(u64::from(self.log) * per_log + u64::from(self.seg))
    }

    /// The name of segment number `segno` on `timeline`.
    pub fn from_segment_number(timeline: TimelineId, segno: u64, size: SegmentSize) -> Self {
        let per_log = size.segments_per_log();
        WalSegmentName {
            timeline,
            log: (segno / per_log) as u32,
            seg: (segno % per_log) as u32,
        }
    }

    /// The LSN at which this segment starts.
    pub fn start_lsn(&self, size: SegmentSize) -> Result<Lsn, WalError> {
        Ok(Lsn(self.segment_number(size)? * size.bytes()))
    }
}

impl fmt::Display for WalSegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.timeline.0, self.log, self.seg)
    }
}

/// Every kind of file PostgreSQL hands to `archive_command` or asks of `restore_command`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WalFileName {
    /// A full WAL segment, `000000010000000000000001`.
    Segment(WalSegmentName),
    /// The last, incomplete segment of a timeline that was promoted away from:
    /// `000000010000000000000001.partial`. Never confused with the full segment.
    Partial(WalSegmentName),
    /// A backup history file, `000000010000000000000002.00000028.backup`.
    Backup {
        /// The segment the backup started in.
        segment: WalSegmentName,
        /// The start position's offset inside that segment.
        offset: u32,
    },
    /// A timeline history file, `00000002.history`.
    History(TimelineId),
}

impl WalFileName {
    /// The timeline the file belongs to.
    pub fn timeline(&self) -> TimelineId {
        match self {
            WalFileName::Segment(s) | WalFileName::Partial(s) => s.timeline,
            WalFileName::Backup { segment, .. } => segment.timeline,
            WalFileName::History(t) => *t,
        }
    }

    /// A short word for messages and `info`: `segment`, `partial`, `backup`, `history`.
    pub fn kind(&self) -> &'static str {
        match self {
            WalFileName::Segment(_) => "segment",
            WalFileName::Partial(_) => "partial",
            WalFileName::Backup { .. } => "backup",
            WalFileName::History(_) => "history",
        }
    }

    /// The segment for segment-shaped files (segments, partials, backup files).
    pub fn segment(&self) -> Option<WalSegmentName> {
        match self {
            WalFileName::Segment(s) | WalFileName::Partial(s) => Some(*s),
            WalFileName::Backup { segment, .. } => Some(*segment),
            WalFileName::History(_) => None,
        }
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalFileName::Segment(s) => write!(f, "{s}"),
            WalFileName::Partial(s) => write!(f, "{s}.partial"),
            WalFileName::Backup { segment, offset } => write!(f, "{segment}.{offset:08X}.backup"),
            WalFileName::History(t) => write!(f, "{:08X}.history", t.0),
        }
    }
}

fn parse_hex8(s: &str) -> Option<u32> {
    // PostgreSQL writes upper-case hex; accepting only that keeps one spelling per file.
    if s.len() == 8
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        u32::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

fn parse_segment(s: &str) -> Option<WalSegmentName> {
    if s.len() != 24 {
        return None;
    }
    let timeline = parse_hex8(&s[0..8])?;
    if timeline == 0 {
        return None;
    }
    Some(WalSegmentName {
        timeline: TimelineId(timeline),
        log: parse_hex8(&s[8..16])?,
        seg: parse_hex8(&s[16..24])?,
    })
}

impl FromStr for WalFileName {
    type Err = WalError;
    fn from_str(s: &str) -> Result<Self, WalError> {
        let bad = || WalError::BadFileName(s.to_string());
        if let Some(tli) = s.strip_suffix(".history") {
            let t = parse_hex8(tli).filter(|t| *t > 0).ok_or_else(bad)?;
            return Ok(WalFileName::History(TimelineId(t)));
        }
        if let Some(seg) = s.strip_suffix(".partial") {
            return parse_segment(seg).map(WalFileName::Partial).ok_or_else(bad);
        }
        if let Some(rest) = s.strip_suffix(".backup") {
            let (seg, offset) = rest.split_once('.').ok_or_else(bad)?;
            let segment = parse_segment(seg).ok_or_else(bad)?;
            let offset = parse_hex8(offset).ok_or_else(bad)?;
            return Ok(WalFileName::Backup { segment, offset });
        }
        parse_segment(s).map(WalFileName::Segment).ok_or_else(bad)
    }
}

/// `XLP_LONG_HEADER`: the page carries the long header (first page of a segment).
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// All flag bits PostgreSQL defines in `xlp_info` up to version 18 (the 0x0008
/// `XLP_FIRST_IS_OVERWRITE_CONTRECORD` bit arrived in 14).
pub const XLP_ALL_FLAGS: u16 = 0x000F;
/// `SizeOfXLogShortPHD`: the short page header, MAXALIGNed.
pub const SHORT_PAGE_HEADER_LEN: usize = 24;
/// `SizeOfXLogLongPHD`: the long page header, MAXALIGNed.
pub const LONG_PAGE_HEADER_LEN: usize = 40;

/// One WAL page header as read from the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    /// `xlp_magic`: the WAL format version.
    pub magic: u16,
    /// `xlp_info`: flag bits.
    pub info: u16,
    /// `xlp_tli`: timeline of the first record on the page.
    pub timeline: TimelineId,
    /// `xlp_pageaddr`: the LSN of the page's first byte.
    pub page_address: Lsn,
}

/// The long header fields of a segment's first page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LongPageHeader {
    /// The standard fields.
    pub page: PageHeader,
    /// `xlp_sysid`: the cluster's system identifier.
    pub system_id: SystemId,
    /// `xlp_seg_size`: the segment size the cluster was initialised with.
    pub segment_size: u32,
    /// `xlp_xlog_blcksz`: the WAL page size.
    pub page_size: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl PageHeader {
    /// Reads the short header at the start of `page` (at least 24 bytes).
    pub fn parse(page: &[u8]) -> Option<PageHeader> {
        if page.len() < SHORT_PAGE_HEADER_LEN {
            return None;
        }
        Some(PageHeader {
            magic: u16_at(page, 0),
            info: u16_at(page, 2),
            timeline: TimelineId(u32_at(page, 4)),
            page_address: Lsn(u64_at(page, 8)),
        })
    }
}

impl LongPageHeader {
    /// Reads the long header at the start of a segment (at least 40 bytes).
    pub fn parse(first_page: &[u8]) -> Option<LongPageHeader> {
        if first_page.len() < LONG_PAGE_HEADER_LEN {
            return None;
        }
        Some(LongPageHeader {
            page: PageHeader::parse(first_page)?,
            system_id: SystemId(u64_at(first_page, 24)),
            segment_size: u32_at(first_page, 32),
            page_size: u32_at(first_page, 36),
        })
    }
}

/// What a segment's first page says about the cluster that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentIdentity {
    /// The cluster's system identifier.
    pub system_id: SystemId,
    /// The PostgreSQL major version, from the page magic.
    pub pg_major: u32,
    /// The WAL page magic itself.
    pub magic: u16,
    /// The segment size.
    pub segment_size: SegmentSize,
    /// The WAL page size (`XLOG_BLCKSZ`, almost always 8192).
    pub page_size: u32,
}

/// Checks the first page of a segment-shaped file against its name and returns the
/// identity it carries. `file_len` is the whole file's length: a segment shorter than
/// its header's segment size is truncated.
pub fn check_segment_start(
    name: &WalSegmentName,
    first_page: &[u8],
    file_len: u64,
) -> Result<SegmentIdentity, WalError> {
    let what = name.to_string();
    let long = LongPageHeader::parse(first_page).ok_or_else(|| WalError::NotWal {
        name: what.clone(),
        detail: format!("{file_len} bytes is too short for a WAL page header"),
    })?;
    let pg_major = major_version_of_magic(long.page.magic).ok_or_else(|| WalError::NotWal {
        name: what.clone(),
        detail: format!("unknown WAL page magic {:#06X}", long.page.magic),
    })?;
    if long.page.info & XLP_LONG_HEADER == 0 || long.page.info & !XLP_ALL_FLAGS != 0 {
        return Err(WalError::NotWal {
            name: what,
            detail: format!(
                "first page has flags {:#06X}, expected a long header",
                long.page.info
            ),
        });
    }
    let segment_size =
        SegmentSize::new(u64::from(long.segment_size)).map_err(|_| WalError::NotWal {
            name: what.clone(),
            detail: format!(
                "header names segment size {}, not one PostgreSQL allows",
                long.segment_size
            ),
        })?;
    if !long.page_size.is_power_of_two() || !(1024..=65536).contains(&long.page_size) {
        return Err(WalError::NotWal {
            name: what,
            detail: format!("header names WAL page size {}", long.page_size),
        });
    }
    if file_len < segment_size.bytes() {
        return Err(WalError::Truncated {
            name: what,
            len: file_len,
            expected: segment_size.bytes(),
        });
    }
    if file_len > segment_size.bytes() {
        return Err(WalError::NotWal {
            name: what,
            detail: format!(
                "{file_len} bytes is longer than the header's segment size {}",
                segment_size.bytes()
            ),
        });
    }
    let start = name.start_lsn(segment_size)?;
    if long.page.page_address != start {
        return Err(WalError::WrongSegment {
            name: what,
            detail: format!(
                "first page is at {}, the name says {}",
                long.page.page_address, start
            ),
        });
    }
    // At a timeline switch the new timeline's first segment begins with pages copied
    // from the old timeline, so a page's timeline may be lower than the name's, never higher.
    if long.page.timeline.0 == 0 || long.page.timeline > name.timeline {
        return Err(WalError::WrongSegment {
            name: what,
            detail: format!(
                "first page is on timeline {}, the name says {}",
                long.page.timeline, name.timeline
            ),
        });
    }
    Ok(SegmentIdentity {
        system_id: long.system_id,
        pg_major,
        magic: long.page.magic,
        segment_size,
        page_size: long.page_size,
    })
}

/// Where a scan of a segment's pages stands, carried across [`check_pages`] calls.
///
/// WAL ends inside a segment after `pg_switch_wal()` or in a `.partial` file: the pages
/// after that point are zeros (a new segment) or stale pages of an older segment (a
/// recycled one). So pages are checked up to the first page that does not carry its own
/// address; after it, a page that *does* carry its exact address would be WAL after a hole,
/// which PostgreSQL never writes, and is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageScan {
    last_timeline: TimelineId,
    ended_at: Option<u64>,
}

impl Default for PageScan {
    fn default() -> Self {
        PageScan {
            last_timeline: TimelineId(1),
            ended_at: None,
        }
    }
}

impl PageScan {
    /// The offset where written WAL ended, if it did before the end of what was scanned.
    pub fn ended_at(&self) -> Option<u64> {
        self.ended_at
    }
}

/// Checks every page header in `chunk`, which starts `offset` bytes into segment `name`
/// (a multiple of the page size). Written pages must carry the segment's magic, their own
/// address, and timelines that never go down nor pass the name's; see [`PageScan`] for
/// where written WAL may end.
pub fn check_pages(
    name: &WalSegmentName,
    identity: &SegmentIdentity,
    offset: u64,
    chunk: &[u8],
    scan: &mut PageScan,
) -> Result<(), WalError> {
    let page_size = identity.page_size as usize;
    debug_assert_eq!(offset % page_size as u64, 0);
    let start = name.start_lsn(identity.segment_size)?;
    for (i, page) in chunk.chunks(page_size).enumerate() {
        let at = offset + (i * page_size) as u64;
        let header = PageHeader::parse(page).ok_or_else(|| WalError::Truncated {
            name: name.to_string(),
            len: at + page.len() as u64,
            expected: identity.segment_size.bytes(),
        })?;
        let bad = |detail: String| WalError::WrongSegment {
            name: name.to_string(),
            detail,
        };
        let expected = Lsn(start.0 + at);
        let carries_own_address = header.page_address == expected && header.magic == identity.magic;
        if let Some(ended) = scan.ended_at {
            if carries_own_address {
                return Err(bad(format!(
                    "page at offset {at} holds WAL after unwritten pages at offset {ended}"
                )));
            }
            continue;
        }
        if header.page_address != expected {
            if at == 0 {
                return Err(bad(format!(
                    "first page is at {}, expected {expected}",
                    header.page_address
                )));
            }
            scan.ended_at = Some(at);
            continue;
        }
        if header.magic != identity.magic {
            return Err(bad(format!(
                "page at offset {at} has magic {:#06X}, not {:#06X}",
                header.magic, identity.magic
            )));
        }
        if header.timeline < scan.last_timeline || header.timeline > name.timeline {
            return Err(bad(format!(
                "page at offset {at} is on timeline {}",
                header.timeline
            )));
        }
        scan.last_timeline = header.timeline;
    }
    Ok(())
}

/// Why bytes or a name are not the WAL they claim to be.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WalError {
    /// Not a name PostgreSQL gives WAL, history, partial or backup files.
    BadFileName(String),
    /// Not an LSN in `X/X` form.
    BadLsn(String),
    /// Not a segment size PostgreSQL allows.
    BadSegmentSize(u64),
    /// The name's segment part is impossible at this segment size.
    NameSizeMismatch {
        /// The file name.
        name: String,
        /// The segment size in force.
        segment_size: u64,
    },
    /// The bytes are not WAL at all.
    NotWal {
        /// The file name.
        name: String,
        /// What gave it away.
        detail: String,
    },
    /// The segment is shorter than its header's segment size.
    Truncated {
        /// The file name.
        name: String,
        /// Bytes present.
        len: u64,
        /// Bytes a segment has.
        expected: u64,
    },
    /// WAL, but not the segment the name says.
    WrongSegment {
        /// The file name.
        name: String,
        /// What does not match.
        detail: String,
    },
    /// A `.history` file that PostgreSQL could not have written.
    BadHistory(String),
}

// Written by hand: `pg` has no dependencies (DESIGN.md, "Crates"). The messages are the
// ones `store::pg` printed through thiserror, word for word.
impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::BadFileName(name) => write!(
                f,
                "{name:?} is not a WAL file name (segment, .history, .partial or .backup)"
            ),
            WalError::BadLsn(s) => {
                write!(f, "{s:?} is not an LSN (expected the form 16/B374D848)")
            }
            WalError::BadSegmentSize(n) => write!(
                f,
                "{n} is not a WAL segment size PostgreSQL allows (a power of two from 1 MiB to 1 GiB)"
            ),
            WalError::NameSizeMismatch { name, segment_size } => {
                write!(f, "{name} cannot exist with {segment_size}-byte segments")
            }
            WalError::NotWal { name, detail } => write!(f, "{name} is not a WAL segment: {detail}"),
            WalError::Truncated {
                name,
                len,
                expected,
            } => write!(f, "{name} is truncated: {len} bytes, a segment has {expected}"),
            WalError::WrongSegment { name, detail } => {
                write!(f, "{name} does not hold the WAL its name says: {detail}")
            }
            WalError::BadHistory(detail) => write!(f, "not a timeline history file: {detail}"),
        }
    }
}

impl std::error::Error for WalError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a synthetic segment the way PostgreSQL lays one out (headers only).
    pub(crate) fn synth_segment(
        name: &WalSegmentName,
        size: SegmentSize,
        sysid: u64,
        magic: u16,
    ) -> Vec<u8> {
        let page = 8192usize;
        let mut buf = vec![0u8; size.bytes() as usize];
        let start = name.start_lsn(size).unwrap().0;
        for (i, p) in buf.chunks_mut(page).enumerate() {
            p[0..2].copy_from_slice(&magic.to_le_bytes());
            let info: u16 = if i == 0 { XLP_LONG_HEADER } else { 0 };
            p[2..4].copy_from_slice(&info.to_le_bytes());
            p[4..8].copy_from_slice(&name.timeline.0.to_le_bytes());
            p[8..16].copy_from_slice(&(start + (i * page) as u64).to_le_bytes());
            if i == 0 {
                p[24..32].copy_from_slice(&sysid.to_le_bytes());
                p[32..36].copy_from_slice(&(size.bytes() as u32).to_le_bytes());
                p[36..40].copy_from_slice(&(page as u32).to_le_bytes());
            }
        }
        buf
    }

    #[test]
    fn lsn_round_trips_in_postgres_notation() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        for bad in ["", "16", "/1", "1/", "G/0", "123456789/0", "1/2/3"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn file_names_parse_and_print_the_same() {
        for name in [
            "000000010000000000000001",
            "00000002000000AB000000FF",
            "000000010000000000000001.partial",
            "000000010000000000000002.00000028.backup",
            "00000002.history",
        ] {
            let parsed: WalFileName = name.parse().unwrap();
            assert_eq!(parsed.to_string(), name);
        }
        for bad in [
            "",
            "00000001000000000000001",
            "0000000100000000000000011",
            "000000000000000000000001",
            "00000001000000000000000g",
            "000000010000000000000001.history",
            "00000000.history",
            "000000010000000000000001.backup",
            "000000010000000000000001.0000002.backup",
            "000000010000000000000001.tmp",
            "../00000001000000000000001",
            "000000010000000000000001 ",
        ] {
            assert!(bad.parse::<WalFileName>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn segment_numbers_depend_on_segment_size() {
        let s16 = SegmentSize::DEFAULT;
        let s1g = SegmentSize::new(1 << 30).unwrap();
        let name: WalSegmentName = "0000000100000001000000FF"
            .parse::<WalFileName>()
            .unwrap()
            .segment()
            .unwrap();
        assert_eq!(name.segment_number(s16).unwrap(), 0x1FF);
        assert_eq!(name.start_lsn(s16).unwrap().to_string(), "1/FF000000");
        // With 1 GiB segments a log holds 4 segments: seg 0xFF is impossible.
        assert!(name.segment_number(s1g).is_err());
        let n = WalSegmentName::from_segment_number(TimelineId(1), 9, s1g);
        assert_eq!(n.to_string(), "000000010000000200000001");
        assert!(SegmentSize::new(3 << 20).is_err());
        assert!(SegmentSize::new(1 << 19).is_err());
        assert!(SegmentSize::new(1 << 31).is_err());
    }

    #[test]
    fn a_well_formed_segment_passes_every_size() {
        for mib in [1u64, 16, 64] {
            let size = SegmentSize::new(mib << 20).unwrap();
            let name = WalSegmentName::from_segment_number(TimelineId(3), 5, size);
            let bytes = synth_segment(&name, size, 42, 0xD110);
            let id = check_segment_start(&name, &bytes, bytes.len() as u64).unwrap();
            assert_eq!(id.system_id, SystemId(42));
            assert_eq!(id.pg_major, 15);
            assert_eq!(id.segment_size, size);
            let mut scan = PageScan::default();
            check_pages(&name, &id, 0, &bytes, &mut scan).unwrap();
            assert_eq!(scan.ended_at(), None);
        }
    }

    #[test]
    fn bad_segments_are_named_precisely() {
        let size = SegmentSize::new(1 << 20).unwrap();
        let name = WalSegmentName::from_segment_number(TimelineId(1), 7, size);
        let good = synth_segment(&name, size, 42, 0xD110);

        let short = &good[..good.len() / 2];
        assert!(matches!(
            check_segment_start(&name, short, short.len() as u64),
            Err(WalError::Truncated { .. })
        ));

        let text = b"hello, this is not WAL at all, just some text that is long enough";
        assert!(matches!(
            check_segment_start(&name, text, text.len() as u64),
            Err(WalError::NotWal { .. })
        ));

        let other = WalSegmentName::from_segment_number(TimelineId(1), 8, size);
        assert!(matches!(
            check_segment_start(&other, &good, good.len() as u64),
            Err(WalError::WrongSegment { .. })
        ));

        let higher_tli = WalSegmentName {
            timeline: TimelineId(2),
            ..name
        };
        let copied_at_switch = check_segment_start(&higher_tli, &good, good.len() as u64);
        assert!(
            copied_at_switch.is_ok(),
            "a page from an older timeline is allowed: {copied_at_switch:?}"
        );
        let lower_tli = synth_segment(&higher_tli, size, 42, 0xD110);
        assert!(matches!(
            check_segment_start(&name, &lower_tli, lower_tli.len() as u64),
            Err(WalError::WrongSegment { .. })
        ));

        // A zeroed page ends the written WAL; a written page after it is a hole.
        let mut hole = good.clone();
        hole[8192 * 3..8192 * 4].fill(0);
        let id = check_segment_start(&name, &hole, hole.len() as u64).unwrap();
        let err = check_pages(&name, &id, 0, &hole, &mut PageScan::default()).unwrap_err();
        assert!(
            err.to_string().contains("offset 32768") && err.to_string().contains("24576"),
            "{err}"
        );

        let mut bad_magic = good.clone();
        bad_magic[8192 * 3] ^= 0x01;
        let err = check_pages(&name, &id, 0, &bad_magic, &mut PageScan::default()).unwrap_err();
        assert!(err.to_string().contains("offset 24576"), "{err}");
    }

    #[test]
    fn wal_may_end_early_in_zeros_or_stale_pages() {
        let size = SegmentSize::new(1 << 20).unwrap();
        let name = WalSegmentName::from_segment_number(TimelineId(1), 7, size);
        let old = WalSegmentName::from_segment_number(TimelineId(1), 3, size);
        let id = check_segment_start(&name, &synth_segment(&name, size, 42, 0xD110), size.bytes())
            .unwrap();
        // After pg_switch_wal(): zeros to the end of a fresh segment.
        let mut switched = synth_segment(&name, size, 42, 0xD110);
        switched[8192 * 10..].fill(0);
        let mut scan = PageScan::default();
        check_pages(&name, &id, 0, &switched, &mut scan).unwrap();
        assert_eq!(scan.ended_at(), Some(8192 * 10));
        // A recycled segment: stale pages of an older segment after the switch point,
        // also when scanned in pieces.
        let mut recycled = synth_segment(&old, size, 42, 0xD110);
        recycled[..8192 * 10].copy_from_slice(&switched[..8192 * 10]);
        let mut scan = PageScan::default();
        for (i, piece) in recycled.chunks(8192 * 7).enumerate() {
            check_pages(&name, &id, (i * 8192 * 7) as u64, piece, &mut scan).unwrap();
        }
        assert_eq!(scan.ended_at(), Some(8192 * 10));
    }
}
