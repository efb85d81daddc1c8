//! CRC-32C (Castagnoli), the checksum of PostgreSQL's WAL records (`pg_crc32c`).
//!
//! Reflected polynomial `0x82F63B78`, initial value `0xFFFFFFFF`, final complement: the
//! same function as SSE4.2's `crc32` instruction and PostgreSQL's software fallback.
//! Where the CPU has an instruction for it (SSE 4.2 on x86-64, the CRC extension on
//! AArch64, detected at run time) it is used: archive-push checks every record of every
//! segment it stores, and the instruction is about five times as fast as the tables.
//! The instruction's latency (3 cycles) is three times its issue rate, so on x86-64 long
//! inputs are cut into three lanes hashed side by side, and the lanes' states are joined
//! with tables that advance a state over a lane of zeros (the CRC is linear: the state
//! after `A ‖ B` is the state after `A` advanced over `|B|` zero bytes, xor the state
//! from zero after `B`).
//! Elsewhere, table-driven, eight bytes per step ("slicing by 8"); the tables are built at
//! compile time. Pure: no IO.

const POLY: u32 = 0x82F6_3B78;

const fn make_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { (c >> 1) ^ POLY } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut s = 1;
        while s < 8 {
            let prev = t[s - 1][i];
            t[s][i] = (prev >> 8) ^ t[0][(prev & 0xFF) as usize];
            s += 1;
        }
        i += 1;
    }
    t
}

static TABLES: [[u32; 256]; 8] = make_tables();

/// Bytes per lane when three are hashed side by side (x86-64).
#[cfg(any(target_arch = "x86_64", test))]
const LANE: usize = 256;

/// `SHIFT[k][b]`: the raw state `b << 8k` advanced over [`LANE`] zero bytes. The advance
/// is linear in the state, so a whole state advances by xoring four lookups.
#[cfg(any(target_arch = "x86_64", test))]
static SHIFT: [[u32; 256]; 4] = make_shift_tables(LANE);

#[cfg(any(target_arch = "x86_64", test))]
const fn make_shift_tables(lane: usize) -> [[u32; 256]; 4] {
    let t = make_tables();
    // The image of each of the 32 state bits, advanced over `lane` zero bytes.
    let mut basis = [0u32; 32];
    let mut bit = 0;
    while bit < 32 {
        let mut crc = 1u32 << bit;
        let mut i = 0;
        while i < lane {
            crc = (crc >> 8) ^ t[0][(crc & 0xFF) as usize];
            i += 1;
        }
        basis[bit] = crc;
        bit += 1;
    }
    let mut shift = [[0u32; 256]; 4];
    let mut k = 0;
    while k < 4 {
        let mut b = 0;
        while b < 256 {
            let mut v = 0u32;
            let mut j = 0;
            while j < 8 {
                if b & (1 << j) != 0 {
                    v ^= basis[8 * k + j];
                }
                j += 1;
            }
            shift[k][b] = v;
            b += 1;
        }
        k += 1;
    }
    shift
}

/// Advances a raw state over [`LANE`] zero bytes.
#[cfg(any(target_arch = "x86_64", test))]
fn advance_over_lane(crc: u32) -> u32 {
    SHIFT[0][(crc & 0xFF) as usize]
        ^ SHIFT[1][((crc >> 8) & 0xFF) as usize]
        ^ SHIFT[2][((crc >> 16) & 0xFF) as usize]
        ^ SHIFT[3][(crc >> 24) as usize]
}

/// A running CRC-32C: [`update`](Crc32c::update) with pieces, then [`finish`](Crc32c::finish).
#[derive(Clone, Copy, Debug)]
pub struct Crc32c(u32);

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32c {
    /// A fresh computation (`INIT_CRC32C`).
    pub fn new() -> Self {
        Crc32c(0xFFFF_FFFF)
    }

    /// Adds `bytes` (`COMP_CRC32C`).
    pub fn update(&mut self, bytes: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE 4.2, checked just above.
            self.0 = unsafe { hardware::update(self.0, bytes) };
            return;
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("crc") {
            // SAFETY: the CPU has the CRC extension, checked just above.
            self.0 = unsafe { hardware::update(self.0, bytes) };
            return;
        }
        self.update_with_tables(bytes);
    }

    fn update_with_tables(&mut self, bytes: &[u8]) {
        let t = &TABLES;
        let mut crc = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            crc = t[7][(lo & 0xFF) as usize]
                ^ t[6][((lo >> 8) & 0xFF) as usize]
                ^ t[5][((lo >> 16) & 0xFF) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][c[4] as usize]
                ^ t[2][c[5] as usize]
                ^ t[1][c[6] as usize]
                ^ t[0][c[7] as usize];
        }
        for &b in chunks.remainder() {
            crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xFF) as usize];
        }
        self.0 = crc;
    }

    /// The checksum (`FIN_CRC32C`).
    pub fn finish(self) -> u32 {
        !self.0
    }
}

/// The CPU's CRC-32C instruction, eight bytes at a time (the same polynomial and bit
/// order as the tables: the running value goes in and out unchanged).
#[cfg(target_arch = "x86_64")]
mod hardware {
    use super::{advance_over_lane, LANE};
    use std::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};

    /// # Safety
    /// The CPU must have SSE 4.2.
    #[target_feature(enable = "sse4.2")]
    pub(super) unsafe fn update(crc: u32, bytes: &[u8]) -> u32 {
        // Three lanes at a time while there are, each its own dependency chain.
        let mut triples = bytes.chunks_exact(3 * LANE);
        let mut crc = crc;
        for triple in &mut triples {
            let (a, rest) = triple.split_at(LANE);
            let (b, c) = rest.split_at(LANE);
            let (mut x, mut y, mut z) = (u64::from(crc), 0u64, 0u64);
            for ((wa, wb), wc) in a
                .chunks_exact(8)
                .zip(b.chunks_exact(8))
                .zip(c.chunks_exact(8))
            {
                x = _mm_crc32_u64(x, u64::from_le_bytes(wa.try_into().unwrap()));
                y = _mm_crc32_u64(y, u64::from_le_bytes(wb.try_into().unwrap()));
                z = _mm_crc32_u64(z, u64::from_le_bytes(wc.try_into().unwrap()));
            }
            let ab = advance_over_lane(x as u32) ^ y as u32;
            crc = advance_over_lane(ab) ^ z as u32;
        }
        let bytes = triples.remainder();
        let mut chunks = bytes.chunks_exact(8);
        let mut wide = u64::from(crc);
        for c in &mut chunks {
            wide = _mm_crc32_u64(wide, u64::from_le_bytes(c.try_into().unwrap()));
        }
        // The rest (under 8 bytes; a record header's 20 leave 4) in at most three steps.
        let mut crc = wide as u32;
        let mut rest = chunks.remainder();
        if rest.len() >= 4 {
            crc = _mm_crc32_u32(crc, u32::from_le_bytes(rest[..4].try_into().unwrap()));
            rest = &rest[4..];
        }
        if rest.len() >= 2 {
            crc = _mm_crc32_u16(crc, u16::from_le_bytes(rest[..2].try_into().unwrap()));
            rest = &rest[2..];
        }
        if let [b] = rest {
            crc = _mm_crc32_u8(crc, *b);
        }
        crc
    }
}

#[cfg(target_arch = "aarch64")]
mod hardware {
    use std::arch::aarch64::{__crc32cb, __crc32cd};

    /// # Safety
    /// The CPU must have the CRC extension.
    #[target_feature(enable = "crc")]
    pub(super) unsafe fn update(mut crc: u32, bytes: &[u8]) -> u32 {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            crc = __crc32cd(crc, u64::from_le_bytes(c.try_into().unwrap()));
        }
        for &b in chunks.remainder() {
            crc = __crc32cb(crc, b);
        }
        crc
    }
}

/// The CRC-32C of `bytes` in one call.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut c = Crc32c::new();
    c.update(bytes);
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitwise(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn known_vectors() {
        // The CRC catalogue's check value for CRC-32C, and RFC 3720's test patterns.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
    }

    #[test]
    fn the_tables_agree_with_the_instruction() {
        // `update` uses the CPU's instruction where there is one: both ways must agree.
        let data: Vec<u8> = (0..4099u32).map(|i| (i * 31 + i / 7) as u8).collect();
        for len in [0, 1, 5, 8, 13, 64, 100, 4099] {
            let mut tables = Crc32c::new();
            tables.update_with_tables(&data[..len]);
            assert_eq!(tables.finish(), crc32c(&data[..len]), "len {len}");
            assert_eq!(tables.finish(), bitwise(&data[..len]), "len {len}");
        }
    }

    #[test]
    fn advancing_over_a_lane_of_zeros_matches_feeding_them() {
        for state in [0u32, 1, 0xFFFF_FFFF, 0x1234_5678, 0x8000_0001] {
            let mut fed = Crc32c(state);
            fed.update_with_tables(&[0u8; LANE]);
            assert_eq!(advance_over_lane(state), fed.0, "state {state:#x}");
        }
    }

    #[test]
    fn three_lanes_agree_with_the_tables_at_every_length_and_offset() {
        // Lengths around multiples of the three lanes, from unaligned starts.
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 131 + i / 5) as u8).collect();
        for start in [0, 1, 3, 7] {
            for len in (0..4 * 3 * LANE)
                .step_by(37)
                .chain([3 * LANE - 1, 3 * LANE, 6 * LANE + 9])
            {
                let piece = &data[start..start + len];
                let mut tables = Crc32c::new();
                tables.update_with_tables(piece);
                assert_eq!(crc32c(piece), tables.finish(), "start {start} len {len}");
            }
        }
    }

    #[test]
    fn pieces_and_lengths_agree_with_the_bitwise_definition() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + i / 3) as u8).collect();
        for len in [0, 1, 7, 8, 9, 63, 64, 65, 999, 1000] {
            assert_eq!(crc32c(&data[..len]), bitwise(&data[..len]), "len {len}");
        }
        let mut c = Crc32c::new();
        for piece in data.chunks(13) {
            c.update(piece);
        }
        assert_eq!(c.finish(), bitwise(&data));
    }
}
