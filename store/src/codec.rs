//! The blob codec: SHA-256 digests and the stored body format. Pure: no IO here.
//!
//! A blob is named by the SHA-256 of its *uncompressed* bytes. Its stored body is
//!
//! ```text
//! header (16 bytes): "TMBL" | format u8 (1) | codec u8 (0 none, 1 lz4) | 0u16 | raw length u64 LE
//! frames, each:      raw length u32 LE | stored length u32 LE (bit 31: stored raw) | bytes
//! ```
//!
//! Frames hold at most [`FRAME_RAW_MAX`] raw bytes, so encoding and decoding work in
//! bounded memory whatever the blob's size, and a frame that lz4 cannot shrink is kept
//! raw. [`BlobDecoder`] checks the header, every frame, the total length and the digest:
//! a blob that does not hash to its name is never handed out.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::{Error, Key, Result};

/// The SHA-256 of a blob's uncompressed content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Hashes `data` in one go.
    pub fn of(data: &[u8]) -> Digest {
        Digest(Sha256::digest(data).into())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
        }
        s
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        let bad = || Error::BadDigest(s.to_string());
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let hex = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            };
            out[i] = (hex(pair[0]).ok_or_else(bad)? << 4) | hex(pair[1]).ok_or_else(bad)?;
        }
        Ok(Digest(out))
    }
}

// Digests travel as their hex form in records and manifests.
impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An incremental SHA-256, for content read in pieces.
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Hasher {
        Hasher(Sha256::new())
    }
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

/// How a blob's frames are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as is.
    None,
    /// LZ4 block compression, per frame (the default: fast enough to keep up with WAL).
    #[default]
    Lz4,
}

impl Compression {
    fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            _ => Err(format!("unknown compression {s:?} (expected lz4 or none)")),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
        })
    }
}

/// The blob body format this build writes and the newest it reads.
pub const BLOB_FORMAT: u8 = 1;
/// Length of the blob header.
pub const HEADER_LEN: usize = 16;
/// Largest raw size of one frame (1 MiB).
pub const FRAME_RAW_MAX: usize = 1 << 20;
const FRAME_HEADER_LEN: usize = 8;
const STORED_RAW_FLAG: u32 = 1 << 31;
const MAGIC: &[u8; 4] = b"TMBL";

/// Writes the blob header for `raw_len` bytes of content.
pub fn encode_header(compression: Compression, raw_len: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(MAGIC);
    out.push(BLOB_FORMAT);
    out.push(compression.code());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&raw_len.to_le_bytes());
}

/// Encodes frames, reusing one scratch buffer for lz4's worst case so that no frame
/// pays for allocating and zeroing a fresh megabyte.
pub struct FrameEncoder {
    compression: Compression,
    scratch: Vec<u8>,
}

impl FrameEncoder {
    /// An encoder for `compression`.
    pub fn new(compression: Compression) -> FrameEncoder {
        let scratch = match compression {
            Compression::None => Vec::new(),
            Compression::Lz4 => vec![0u8; lz4_bound(FRAME_RAW_MAX)],
        };
        FrameEncoder {
            compression,
            scratch,
        }
    }

    /// Appends `raw` as frames (cut at [`FRAME_RAW_MAX`]) to `out`.
    pub fn encode(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        for frame in raw.chunks(FRAME_RAW_MAX) {
            let compressed = match self.compression {
                Compression::None => None,
                Compression::Lz4 => {
                    let n = lz4_block_encode(frame, &mut self.scratch);
                    // Keep the frame raw when lz4 does not shrink it (already compressed data).
                    (n < frame.len()).then_some(n)
                }
            };
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            match compressed {
                Some(n) => {
                    out.extend_from_slice(&(n as u32).to_le_bytes());
                    out.extend_from_slice(&self.scratch[..n]);
                }
                None => {
                    out.extend_from_slice(&(frame.len() as u32 | STORED_RAW_FLAG).to_le_bytes());
                    out.extend_from_slice(frame);
                }
            }
        }
    }
}

/// Room one frame of up to [`FRAME_RAW_MAX`] raw bytes can take once encoded: its header
/// and lz4's worst case.
pub fn frame_slot_len() -> usize {
    FRAME_HEADER_LEN + lz4_bound(FRAME_RAW_MAX).max(FRAME_RAW_MAX)
}

/// lz4's worst case for `len` raw bytes (`LZ4_COMPRESSBOUND`).
fn lz4_bound(len: usize) -> usize {
    len + len / 255 + 16
}

/// Encodes `frame` as one LZ4 block into `out` (at least [`lz4_bound`] of it), returning
/// the block's length.
///
/// liblz4's `LZ4_compress_default` rather than `lz4_flex`: a few per cent faster on WAL
/// segments (`examples/encode_speed.rs`: 9.5-11.8 against 10.0-12.4 ms for 16 MiB pool
/// segments here, noisy) and about a fifth on relation data (4.1 against 3.4 GB/s,
/// `docs/performance.md`), where archive-push and backups spend a third of their CPU.
/// Same block format, so blobs written by either decode alike.
fn lz4_block_encode(frame: &[u8], out: &mut [u8]) -> usize {
    assert!(frame.len() <= FRAME_RAW_MAX && out.len() >= lz4_bound(frame.len()));
    // SAFETY: both pointers come from live, non-overlapping slices of the given lengths
    // (at most 1 MiB and its bound, well within i32), and the destination holds lz4's
    // worst case, so LZ4_compress_default writes within it and never fails.
    let n = unsafe {
        lz4_sys::LZ4_compress_default(
            frame.as_ptr().cast(),
            out.as_mut_ptr().cast(),
            frame.len() as i32,
            out.len().min(i32::MAX as usize) as i32,
        )
    };
    assert!(n > 0 || frame.is_empty(), "lz4 failed within its bound");
    n.max(0) as usize
}

/// Encodes one frame (at most [`FRAME_RAW_MAX`] raw bytes) straight into `slot` (at least
/// [`frame_slot_len`] bytes), with no scratch buffer and no copy of the compressed bytes;
/// returns the encoded length. The bytes match [`encode_frames`] for the same frame.
pub fn encode_frame_into(compression: Compression, frame: &[u8], slot: &mut [u8]) -> usize {
    assert!(frame.len() <= FRAME_RAW_MAX && slot.len() >= frame_slot_len());
    let (header, body) = slot.split_at_mut(FRAME_HEADER_LEN);
    let compressed = match compression {
        Compression::None => None,
        Compression::Lz4 => {
            let n = lz4_block_encode(frame, body);
            // Keep the frame raw when lz4 does not shrink it (already compressed data).
            (n < frame.len()).then_some(n)
        }
    };
    let stored = match compressed {
        Some(n) => n as u32,
        None => {
            body[..frame.len()].copy_from_slice(frame);
            frame.len() as u32 | STORED_RAW_FLAG
        }
    };
    header[..4].copy_from_slice(&(frame.len() as u32).to_le_bytes());
    header[4..].copy_from_slice(&stored.to_le_bytes());
    FRAME_HEADER_LEN + (stored & !STORED_RAW_FLAG) as usize
}

/// Appends `raw` as frames (cut at [`FRAME_RAW_MAX`]) to `out`.
pub fn encode_frames(compression: Compression, raw: &[u8], out: &mut Vec<u8>) {
    FrameEncoder::new(compression).encode(raw, out)
}

/// Encodes a whole blob in memory: header plus frames.
pub fn encode(compression: Compression, raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + raw.len() / 2);
    encode_header(compression, raw.len() as u64, &mut out);
    encode_frames(compression, raw, &mut out);
    out
}

/// Decodes and verifies a stored blob fed in arbitrary pieces, in bounded memory.
pub struct BlobDecoder {
    key: Key,
    expected: Digest,
    pending: Vec<u8>,
    header: Option<(Compression, u64)>,
    produced: u64,
    hasher: Hasher,
    scratch: Vec<u8>,
}

impl BlobDecoder {
    /// A decoder for the blob stored under `key`, which must hash to `expected`.
    pub fn new(key: Key, expected: Digest) -> BlobDecoder {
        BlobDecoder {
            key,
            expected,
            pending: Vec::new(),
            header: None,
            produced: 0,
            hasher: Hasher::new(),
            scratch: Vec::new(),
        }
    }

    /// Starts over for another blob, keeping the buffers: a restore decodes thousands of
    /// 1 MiB chunks, and a fresh decoder would zero (and fault in) a new megabyte for each.
    pub fn reset(&mut self, key: Key, expected: Digest) {
        self.key = key;
        self.expected = expected;
        self.pending.clear();
        self.header = None;
        self.produced = 0;
        self.hasher = Hasher::new();
    }

    fn corrupt(&self, detail: impl Into<String>) -> Error {
        corrupt(&self.key, detail)
    }

    /// The raw length the header announces, once the header has been read.
    pub fn raw_len(&self) -> Option<u64> {
        self.header.map(|(_, len)| len)
    }

    /// Feeds stored bytes; calls `sink` with each decoded piece of raw content, in order.
    /// The content is not verified until [`finish`](Self::finish): callers must not
    /// publish what `sink` received before that returns `Ok`.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        loop {
            if self.header.is_none() {
                let need = HEADER_LEN - self.pending.len();
                let take = need.min(input.len());
                self.pending.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.pending.len() < HEADER_LEN {
                    return Ok(());
                }
                let h = std::mem::take(&mut self.pending);
                self.header = Some(parse_blob_header(&self.key, &h)?);
            }
            // Gather one frame header, then one frame body, in `pending`.
            if self.pending.len() < FRAME_HEADER_LEN {
                let take = (FRAME_HEADER_LEN - self.pending.len()).min(input.len());
                self.pending.extend_from_slice(&input[..take]);
                input = &input[take..];
                if self.pending.len() < FRAME_HEADER_LEN {
                    return Ok(());
                }
            }
            let FrameHeader {
                raw_len,
                stored_len,
                is_raw,
            } = parse_frame_header(&self.key, &self.pending)?;
            let have = self.pending.len() - FRAME_HEADER_LEN;
            let take = (stored_len - have).min(input.len());
            self.pending.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.pending.len() - FRAME_HEADER_LEN < stored_len {
                return Ok(());
            }
            let (compression, total) = self.header.expect("header read");
            if self.produced + raw_len as u64 > total {
                return Err(self.corrupt("frames hold more bytes than the header says"));
            }
            let body = &self.pending[FRAME_HEADER_LEN..];
            if is_raw {
                self.hasher.update(body);
                sink(body)?;
            } else {
                // Grows once; later frames reuse the bytes (lz4 overwrites what it reports).
                if self.scratch.len() < raw_len {
                    self.scratch.resize(raw_len, 0);
                }
                decompress_frame(&self.key, compression, body, &mut self.scratch[..raw_len])?;
                self.hasher.update(&self.scratch[..raw_len]);
                sink(&self.scratch[..raw_len])?;
            }
            self.produced += raw_len as u64;
            self.pending.clear();
            if input.is_empty() {
                return Ok(());
            }
        }
    }

    /// Checks that the blob ended where its header said and hashes to its name. The
    /// decoder is then spent until [`reset`](Self::reset).
    pub fn finish(&mut self) -> Result<u64> {
        let Some((_, total)) = self.header else {
            return Err(self.corrupt("blob is shorter than its header"));
        };
        if !self.pending.is_empty() || self.produced != total {
            return Err(self.corrupt(format!(
                "blob ends after {} of {total} bytes",
                self.produced
            )));
        }
        let actual = std::mem::take(&mut self.hasher).finish();
        check_digest(&self.key, actual, self.expected)?;
        Ok(total)
    }
}

fn corrupt(key: &Key, detail: impl Into<String>) -> Error {
    Error::Corrupt {
        key: key.clone(),
        detail: detail.into(),
    }
}

/// Checks the blob header (`HEADER_LEN` bytes): magic, format, codec; returns the codec
/// and the raw length it announces.
fn parse_blob_header(key: &Key, h: &[u8]) -> Result<(Compression, u64)> {
    if &h[0..4] != MAGIC {
        return Err(corrupt(key, "not a tidemark blob (bad magic)"));
    }
    if h[4] > BLOB_FORMAT || h[4] == 0 {
        return Err(Error::UnsupportedFormat {
            what: format!("blob {key}"),
            found: u32::from(h[4]),
            supported: u32::from(BLOB_FORMAT),
        });
    }
    let compression = match h[5] {
        0 => Compression::None,
        1 => Compression::Lz4,
        c => return Err(corrupt(key, format!("unknown codec {c}"))),
    };
    Ok((
        compression,
        u64::from_le_bytes(h[8..16].try_into().expect("8 bytes")),
    ))
}

/// A frame's header, checked for sizes a frame can have.
struct FrameHeader {
    raw_len: usize,
    stored_len: usize,
    is_raw: bool,
}

fn parse_frame_header(key: &Key, h: &[u8]) -> Result<FrameHeader> {
    let raw_len = u32::from_le_bytes(h[0..4].try_into().expect("4")) as usize;
    let stored_field = u32::from_le_bytes(h[4..8].try_into().expect("4"));
    let is_raw = stored_field & STORED_RAW_FLAG != 0;
    let stored_len = (stored_field & !STORED_RAW_FLAG) as usize;
    if raw_len == 0
        || raw_len > FRAME_RAW_MAX
        || stored_len > FRAME_RAW_MAX
        || (is_raw && stored_len != raw_len)
    {
        return Err(corrupt(
            key,
            format!("bad frame header (raw {raw_len}, stored {stored_len})"),
        ));
    }
    Ok(FrameHeader {
        raw_len,
        stored_len,
        is_raw,
    })
}

/// Decompresses a compressed frame's `body` into exactly `out` (its raw length).
fn decompress_frame(
    key: &Key,
    compression: Compression,
    body: &[u8],
    out: &mut [u8],
) -> Result<()> {
    if compression != Compression::Lz4 {
        return Err(corrupt(key, "compressed frame in an uncompressed blob"));
    }
    match lz4_block_decode(body, out) {
        Some(n) if n == out.len() => Ok(()),
        Some(n) => Err(corrupt(
            key,
            format!("frame decoded to {n} bytes, header says {}", out.len()),
        )),
        None => Err(corrupt(key, "lz4: malformed frame")),
    }
}

/// Decodes one LZ4 block (the format [`lz4_block_encode`] and earlier `lz4_flex` write) into `out`, returning the
/// decoded length, or `None` if the block is malformed or would not fit.
///
/// liblz4's `LZ4_decompress_safe` rather than `lz4_flex`: on PostgreSQL relation data it
/// decodes 16 GB/s against 3.5 GB/s on this machine, and decoding was a quarter of a
/// restore's CPU. The "safe" variant is liblz4's decoder for untrusted input: it reads only
/// `body` and writes only `out`, whatever the bytes, and reports bad input as a negative
/// return (its fuzzed guarantee, and the only one relied on here).
fn lz4_block_decode(body: &[u8], out: &mut [u8]) -> Option<usize> {
    let src_len = i32::try_from(body.len()).ok()?;
    let dst_len = i32::try_from(out.len()).ok()?;
    // SAFETY: both pointers come from live slices of the given lengths, which do not
    // overlap (one is shared, one exclusive), and LZ4_decompress_safe stays within them.
    let n = unsafe {
        lz4_sys::LZ4_decompress_safe(
            body.as_ptr().cast(),
            out.as_mut_ptr().cast(),
            src_len,
            dst_len,
        )
    };
    usize::try_from(n).ok()
}

fn check_digest(key: &Key, actual: Digest, expected: Digest) -> Result<()> {
    if actual != expected {
        return Err(corrupt(
            key,
            format!("content hashes to {actual}, its name says {expected}"),
        ));
    }
    Ok(())
}

/// Decodes a whole stored blob held in memory straight into `out` like [`decode_into`],
/// checking its header, frames and length, but **not its digest**: the caller must hash
/// what `out` holds and pass that to [`check_decoded`] before using it. For callers that
/// hash several blobs at once ([`crate::multihash`]). Returns the raw length.
pub fn decode_unverified_into(key: &Key, stored: &[u8], out: &mut [u8]) -> Result<usize> {
    decode_frames_into(key, stored, out, &mut |_| {})
}

/// Refuses content that does not hash to its blob's name: `actual` is the SHA-256 of what
/// [`decode_unverified_into`] produced.
pub fn check_decoded(key: &Key, actual: Digest, expected: Digest) -> Result<()> {
    check_digest(key, actual, expected)
}

/// Decodes and verifies a whole stored blob held in memory straight into `out`, with no
/// intermediate buffer: each frame is decompressed in place and hashed there. Returns the
/// raw length. Content longer than `out` is an error (nothing is written past it); what
/// `out` holds is not proven good unless this returns `Ok`.
pub fn decode_into(key: &Key, expected: Digest, stored: &[u8], out: &mut [u8]) -> Result<usize> {
    let mut hasher = Hasher::new();
    let produced = decode_frames_into(key, stored, out, &mut |piece| hasher.update(piece))?;
    check_digest(key, hasher.finish(), expected)?;
    Ok(produced)
}

/// The frames of a stored blob decoded into `out`, each handed to `each_frame` once it is
/// in place (while it is still in the cache); checks everything but the digest.
fn decode_frames_into(
    key: &Key,
    stored: &[u8],
    out: &mut [u8],
    each_frame: &mut dyn FnMut(&[u8]),
) -> Result<usize> {
    let Some((header, mut rest)) = stored.split_at_checked(HEADER_LEN) else {
        return Err(corrupt(key, "blob is shorter than its header"));
    };
    let (compression, total) = parse_blob_header(key, header)?;
    if total > out.len() as u64 {
        return Err(corrupt(
            key,
            format!("holds {total} bytes, more than the {} expected", out.len()),
        ));
    }
    let mut produced = 0usize;
    while !rest.is_empty() {
        let Some((frame_header, after)) = rest.split_at_checked(FRAME_HEADER_LEN) else {
            return Err(corrupt(key, "blob ends inside a frame header"));
        };
        let frame = parse_frame_header(key, frame_header)?;
        let Some((body, after)) = after.split_at_checked(frame.stored_len) else {
            return Err(corrupt(key, "blob ends inside a frame"));
        };
        if (produced + frame.raw_len) as u64 > total {
            return Err(corrupt(key, "frames hold more bytes than the header says"));
        }
        let piece = &mut out[produced..produced + frame.raw_len];
        if frame.is_raw {
            piece.copy_from_slice(body);
        } else {
            decompress_frame(key, compression, body, piece)?;
        }
        each_frame(piece);
        produced += frame.raw_len;
        rest = after;
    }
    if produced as u64 != total {
        return Err(corrupt(
            key,
            format!("blob ends after {produced} of {total} bytes"),
        ));
    }
    Ok(produced)
}

/// Decodes and verifies a whole stored blob held in memory.
pub fn decode(key: &Key, expected: Digest, stored: &[u8]) -> Result<Vec<u8>> {
    let mut dec = BlobDecoder::new(key.clone(), expected);
    let mut out = Vec::new();
    dec.feed(stored, &mut |piece| {
        out.extend_from_slice(piece);
        Ok(())
    })?;
    dec.finish()?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn key() -> Key {
        Key::new("blobs/test").unwrap()
    }

    /// Pseudo-random bytes (xorshift64), the same for the same seed: incompressible.
    pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn sample(len: usize) -> Vec<u8> {
        // Half compressible, half noise: exercises both compressed and raw frames.
        let mut x: u32 = 12345;
        (0..len)
            .map(|i| {
                if (i / FRAME_RAW_MAX) % 2 == 0 {
                    (i % 251) as u8
                } else {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                }
            })
            .collect()
    }

    #[test]
    fn a_frame_encoded_into_a_slot_matches_the_appended_encoding() {
        let incompressible = noise(FRAME_RAW_MAX, 0x2545_f491);
        for compression in [Compression::Lz4, Compression::None] {
            for frame in [
                &sample(FRAME_RAW_MAX)[..],
                &sample(1000)[..],
                &incompressible[..],
            ] {
                let mut appended = Vec::new();
                encode_frames(compression, frame, &mut appended);
                let mut slot = vec![0xAA; frame_slot_len()];
                let len = encode_frame_into(compression, frame, &mut slot);
                assert_eq!(
                    &slot[..len],
                    &appended[..],
                    "{compression:?}, {} bytes",
                    frame.len()
                );
            }
        }
    }

    #[test]
    fn digest_hex_round_trips() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_hex().parse::<Digest>().unwrap(), d);
        assert!("BA7816BF".parse::<Digest>().is_err());
        assert!(d.to_hex().to_uppercase().parse::<Digest>().is_err());
    }

    #[test]
    fn round_trip_in_any_piece_size() {
        for compression in [Compression::Lz4, Compression::None] {
            for len in [0usize, 1, 1000, FRAME_RAW_MAX, 3 * FRAME_RAW_MAX + 17] {
                let raw = sample(len);
                let digest = Digest::of(&raw);
                let stored = encode(compression, &raw);
                assert_eq!(decode(&key(), digest, &stored).unwrap(), raw);
                for piece in [1usize, 7, 4096, 1 << 20] {
                    let mut dec = BlobDecoder::new(key(), digest);
                    let mut out = Vec::new();
                    for p in stored.chunks(piece) {
                        dec.feed(p, &mut |b| {
                            out.extend_from_slice(b);
                            Ok(())
                        })
                        .unwrap();
                    }
                    assert_eq!(dec.finish().unwrap(), len as u64);
                    assert_eq!(out, raw);
                }
            }
        }
    }

    #[test]
    fn lz4_shrinks_compressible_content() {
        let raw = vec![7u8; 4 * FRAME_RAW_MAX];
        assert!(encode(Compression::Lz4, &raw).len() < raw.len() / 50);
    }

    /// Both ways of decoding a blob held in memory: through [`BlobDecoder`] and in place.
    type Decode = fn(Digest, &[u8]) -> Result<Vec<u8>>;

    fn decoders() -> [(&'static str, Decode); 3] {
        [
            ("decode", |digest, stored| decode(&key(), digest, stored)),
            (
                "decode_unverified_into + check_decoded",
                |digest, stored| {
                    let mut out = vec![0u8; 4 * FRAME_RAW_MAX];
                    let n = decode_unverified_into(&key(), stored, &mut out)?;
                    out.truncate(n);
                    let actual = crate::multihash::digest_many(&[&out])[0];
                    check_decoded(&key(), actual, digest)?;
                    Ok(out)
                },
            ),
            ("decode_into", |digest, stored| {
                let mut out = vec![0u8; 4 * FRAME_RAW_MAX];
                let n = decode_into(&key(), digest, stored, &mut out)?;
                out.truncate(n);
                Ok(out)
            }),
        ]
    }

    #[test]
    fn every_corruption_is_refused() {
        let raw = sample(2 * FRAME_RAW_MAX + 5);
        let digest = Digest::of(&raw);
        let stored = encode(Compression::Lz4, &raw);
        for (name, decode) in decoders() {
            assert_eq!(decode(digest, &stored).unwrap(), raw, "{name}");
            // Flip one byte at a time across the header, frame headers and bodies.
            for at in [
                0,
                4,
                5,
                9,
                16,
                20,
                24,
                100,
                stored.len() / 2,
                stored.len() - 1,
            ] {
                let mut bad = stored.clone();
                bad[at] ^= 0x01;
                assert!(
                    decode(digest, &bad).is_err(),
                    "{name}: flip at {at} not caught"
                );
            }
            for cut in [1, 8, stored.len() - HEADER_LEN - 1, stored.len() - 3] {
                assert!(
                    decode(digest, &stored[..stored.len() - cut]).is_err(),
                    "{name}: truncation by {cut} not caught"
                );
            }
            let mut longer = stored.clone();
            longer.extend_from_slice(&stored[HEADER_LEN..HEADER_LEN + 8]);
            assert!(
                decode(digest, &longer).is_err(),
                "{name}: extra frame not caught"
            );
            assert!(matches!(
                decode(Digest::of(b"other"), &stored),
                Err(Error::Corrupt { .. })
            ));
            let mut future = stored.clone();
            future[4] = BLOB_FORMAT + 1;
            assert!(matches!(
                decode(digest, &future),
                Err(Error::UnsupportedFormat { .. })
            ));
        }
    }

    /// Blobs were encoded with lz4_flex before liblz4 took over: the decoder must read
    /// both encoders' blocks, and refuse (not crash on, not overrun) whatever bytes it is
    /// given.
    #[test]
    fn liblz4_decodes_what_either_encoder_wrote_and_refuses_malformed_blocks() {
        for raw in [
            sample(FRAME_RAW_MAX),
            sample(777),
            vec![0u8; 70_000],
            b"x".to_vec(),
        ] {
            let mut ours = vec![0u8; lz4_bound(raw.len())];
            let n = lz4_block_encode(&raw, &mut ours);
            ours.truncate(n);
            let mut out = vec![0u8; raw.len()];
            assert_eq!(lz4_block_decode(&ours, &mut out), Some(raw.len()));
            assert_eq!(out, raw);
            let block = lz4_flex::block::compress(&raw);
            out.fill(0);
            assert_eq!(lz4_block_decode(&block, &mut out), Some(raw.len()));
            assert_eq!(out, raw);
            if raw.len() > 1 {
                let mut short = vec![0u8; raw.len() - 1];
                assert_eq!(
                    lz4_block_decode(&block, &mut short),
                    None,
                    "overrun allowed"
                );
            }
            for cut in 1..block.len().min(40) {
                let got = lz4_block_decode(&block[..block.len() - cut], &mut out);
                assert_ne!(got, Some(raw.len()), "truncated by {cut} decoded whole");
            }
        }
        // Pseudo-random garbage, including lengths that claim far more than the output.
        for len in [1usize, 2, 15, 16, 255, 4096] {
            let garbage = noise(len, len as u64);
            let mut out = vec![0u8; 64];
            let _ = lz4_block_decode(&garbage, &mut out); // must return, whatever it says
        }
        let mut out = vec![0u8; 64];
        assert!(lz4_block_decode(&[0xF0, 0xFF, 0xFF, 0xFF], &mut out).is_none());
    }

    #[test]
    fn decoding_in_place_fills_exactly_and_refuses_what_does_not_fit() {
        for compression in [Compression::Lz4, Compression::None] {
            for len in [0usize, 1, 1000, FRAME_RAW_MAX, 3 * FRAME_RAW_MAX + 17] {
                let raw = sample(len);
                let digest = Digest::of(&raw);
                let stored = encode(compression, &raw);
                let mut out = vec![0xEE; len];
                assert_eq!(decode_into(&key(), digest, &stored, &mut out).unwrap(), len);
                assert_eq!(out, raw);
                if len > 0 {
                    let mut short = vec![0xEE; len - 1];
                    assert!(matches!(
                        decode_into(&key(), digest, &stored, &mut short),
                        Err(Error::Corrupt { .. })
                    ));
                    assert!(short.iter().all(|&b| b == 0xEE), "nothing written");
                }
            }
        }
    }
}
