//! A streaming tar reader without IO: feed it byte pieces of any size, take events.
//!
//! PostgreSQL's `BASE_BACKUP` sends each tablespace as a tar archive (ustar, see
//! `src/backend/backup/basebackup.c`, `tarCreateHeader` in `src/port/tar.c`). This reader
//! turns such a stream into [`TarEvent`]s as bytes arrive: an [`TarEvent::Entry`] per
//! header, [`TarEvent::Data`] pieces that are slices of the input (never copied, never
//! collected: a file of any size costs no memory), [`TarEvent::EntryEnd`], and
//! [`TarEvent::End`] at the two zero blocks that end an archive.
//!
//! Only headers are buffered: one 512-byte block, plus the payload of a GNU long name
//! (`L`, `K`) or a pax extended header (`x`, `g`), capped at [`MAX_EXTENSION`]. Headers
//! are checked (their checksum, octal or base-256 numbers, a known entry type); anything
//! else is a [`TarError`]. No IO here, and nothing about where entries are written: the
//! caller decides (and must refuse `..` and absolute paths).
//!
//! Main types: [`TarReader`], [`TarEvent`], [`TarEntry`], [`EntryKind`], [`TarError`].

use bytes::{Buf, Bytes};

/// Tar's block size.
pub const BLOCK: usize = 512;

/// The largest GNU long name or pax extended header payload accepted, in bytes.
pub const MAX_EXTENSION: u64 = 64 * 1024;

/// What kind of entry a header describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file (`0` or NUL); its bytes follow as [`TarEvent::Data`].
    File,
    /// A directory (`5`).
    Dir,
    /// A symbolic link (`2`) to `target`.
    Symlink {
        /// The link's target, as stored.
        target: String,
    },
}

/// One archive member, as its header (and any pax or GNU extension before it) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    /// The member's path, as stored (a directory's trailing `/` removed). Not checked:
    /// the caller must refuse absolute paths and `..`.
    pub path: String,
    /// The size of its data (0 for directories and symlinks).
    pub size: u64,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// What it is.
    pub kind: EntryKind,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
}

/// What the reader found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TarEvent {
    /// A new member; its data (if any) follows.
    Entry(TarEntry),
    /// A piece of the current member's data (a slice of the input, not a copy).
    Data(Bytes),
    /// The current member's data is complete.
    EntryEnd,
    /// The two zero blocks that end the archive; bytes after them are ignored.
    End,
}

/// A malformed or truncated archive.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tar archive: {0}")]
pub struct TarError(String);

fn bad(why: impl Into<String>) -> TarError {
    TarError(why.into())
}

/// Which extension payload is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extension {
    /// GNU `L`: the next member's path.
    LongName,
    /// GNU `K`: the next member's link target.
    LongLink,
    /// pax `x`: records for the next member.
    Pax,
    /// pax `g`: global records, ignored.
    PaxGlobal,
}

#[derive(Debug)]
enum State {
    /// Expecting a header block (`header` holds a partial one).
    Header,
    /// Reading an extension's payload into `buf`, then `padding` bytes.
    Extension {
        which: Extension,
        remaining: u64,
        padding: u64,
        buf: Vec<u8>,
    },
    /// Passing a member's data on (`emit` false: skipped), then its padding.
    Data {
        remaining: u64,
        padding: u64,
        emit: bool,
    },
    /// Seen one zero block; the next must be zero too.
    SecondZero,
    /// Both zero blocks seen.
    End,
}

/// Values from GNU long names and pax headers, for the next member.
#[derive(Debug, Default)]
struct Pending {
    path: Option<String>,
    linkpath: Option<String>,
    size: Option<u64>,
    mtime: Option<i64>,
}

/// The reader: [`push`](Self::push) bytes, then call [`next_event`](Self::next_event)
/// until it returns `None` (it needs more bytes); [`finish`](Self::finish) at the end of
/// the input says whether the archive was complete.
#[derive(Debug)]
pub struct TarReader {
    /// Input not yet consumed.
    input: Bytes,
    /// A partial header block.
    header: Vec<u8>,
    state: State,
    pending: Pending,
    /// Whether the last event was an entry whose `EntryEnd` is still due.
    in_entry: bool,
}

impl Default for TarReader {
    fn default() -> Self {
        TarReader::new()
    }
}

impl TarReader {
    /// A reader at the start of an archive.
    pub fn new() -> TarReader {
        TarReader {
            input: Bytes::new(),
            header: Vec::with_capacity(BLOCK),
            state: State::Header,
            pending: Pending::default(),
            in_entry: false,
        }
    }

    /// Adds the next piece of the archive. Call [`next_event`](Self::next_event) until it
    /// returns `None` before pushing more: the reader keeps one piece at a time.
    pub fn push(&mut self, piece: Bytes) {
        if self.input.is_empty() {
            self.input = piece;
        } else {
            // Only when the caller pushes twice without draining: still correct.
            let mut joined = Vec::with_capacity(self.input.len() + piece.len());
            joined.extend_from_slice(&self.input);
            joined.extend_from_slice(&piece);
            self.input = Bytes::from(joined);
        }
    }

    /// Whether the two zero blocks have been seen.
    pub fn is_end(&self) -> bool {
        matches!(self.state, State::End)
    }

    /// The end of the input: an error unless the archive ended with its zero blocks.
    pub fn finish(&self) -> Result<(), TarError> {
        match &self.state {
            State::End => Ok(()),
            State::Header if self.header.is_empty() => Err(bad(
                "truncated: the two zero blocks that end an archive are missing",
            )),
            State::Header | State::SecondZero => Err(bad("truncated inside a header block")),
            State::Extension { .. } => Err(bad("truncated inside an extended header")),
            State::Data { remaining, .. } => Err(bad(format!(
                "truncated: {remaining} bytes of the last member (or its padding) are missing"
            ))),
        }
    }

    /// The next event, or `None` when more input is needed.
    pub fn next_event(&mut self) -> Result<Option<TarEvent>, TarError> {
        loop {
            match &mut self.state {
                State::End => {
                    // Whatever follows (record padding) is not part of the archive.
                    self.input.clear();
                    return Ok(None);
                }
                State::Data {
                    remaining,
                    padding,
                    emit,
                } => {
                    if *remaining > 0 {
                        if self.input.is_empty() {
                            return Ok(None);
                        }
                        let n = (*remaining).min(self.input.len() as u64) as usize;
                        *remaining -= n as u64;
                        let piece = self.input.split_to(n);
                        if *emit {
                            return Ok(Some(TarEvent::Data(piece)));
                        }
                        continue;
                    }
                    if *padding > 0 {
                        let n = (*padding).min(self.input.len() as u64) as usize;
                        *padding -= n as u64;
                        self.input.advance(n);
                        if *padding > 0 {
                            return Ok(None);
                        }
                    }
                    self.state = State::Header;
                    if std::mem::take(&mut self.in_entry) {
                        return Ok(Some(TarEvent::EntryEnd));
                    }
                }
                State::Extension {
                    which,
                    remaining,
                    padding,
                    buf,
                } => {
                    if *remaining > 0 {
                        if self.input.is_empty() {
                            return Ok(None);
                        }
                        let n = (*remaining).min(self.input.len() as u64) as usize;
                        *remaining -= n as u64;
                        buf.extend_from_slice(&self.input[..n]);
                        self.input.advance(n);
                        continue;
                    }
                    if *padding > 0 {
                        let n = (*padding).min(self.input.len() as u64) as usize;
                        *padding -= n as u64;
                        self.input.advance(n);
                        if *padding > 0 {
                            return Ok(None);
                        }
                    }
                    let which = *which;
                    let buf = std::mem::take(buf);
                    self.state = State::Header;
                    self.apply_extension(which, &buf)?;
                }
                State::Header | State::SecondZero => {
                    let need = BLOCK - self.header.len();
                    let n = need.min(self.input.len());
                    self.header.extend_from_slice(&self.input[..n]);
                    self.input.advance(n);
                    if self.header.len() < BLOCK {
                        return Ok(None);
                    }
                    let block = std::mem::replace(&mut self.header, Vec::with_capacity(BLOCK));
                    let zero = block.iter().all(|b| *b == 0);
                    if matches!(self.state, State::SecondZero) {
                        if !zero {
                            return Err(bad("a single zero block inside the archive"));
                        }
                        self.state = State::End;
                        return Ok(Some(TarEvent::End));
                    }
                    if zero {
                        self.state = State::SecondZero;
                        continue;
                    }
                    if let Some(entry) = self.header_block(&block)? {
                        return Ok(Some(TarEvent::Entry(entry)));
                    }
                }
            }
        }
    }

    /// Parses one non-zero header block: `Some` for a member, `None` for an extension
    /// (whose payload is read next).
    fn header_block(&mut self, block: &[u8]) -> Result<Option<TarEntry>, TarError> {
        verify_checksum(block)?;
        let size = number(&block[124..136], "size")?;
        let typeflag = block[156];
        let extension = match typeflag {
            b'L' => Some(Extension::LongName),
            b'K' => Some(Extension::LongLink),
            b'x' => Some(Extension::Pax),
            b'g' => Some(Extension::PaxGlobal),
            _ => None,
        };
        if let Some(which) = extension {
            if size > MAX_EXTENSION {
                return Err(bad(format!(
                    "an extended header of {size} bytes (at most {MAX_EXTENSION} accepted)"
                )));
            }
            self.state = State::Extension {
                which,
                remaining: size,
                padding: padding(size),
                buf: Vec::with_capacity(size as usize),
            };
            return Ok(None);
        }
        let pending = std::mem::take(&mut self.pending);
        let ustar = &block[257..263] == b"ustar\0";
        let mut path = match pending.path {
            Some(p) => p,
            None => {
                let name = text(&block[0..100], "name")?;
                let prefix = if ustar {
                    text(&block[345..500], "prefix")?
                } else {
                    String::new()
                };
                if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                }
            }
        };
        let size = pending.size.unwrap_or(size);
        let mode = (number(&block[100..108], "mode")? & 0o7777) as u32;
        let mtime = match pending.mtime {
            Some(t) => t,
            None => i64::try_from(number(&block[136..148], "mtime")?)
                .map_err(|_| bad("mtime out of range"))?,
        };
        let kind = match typeflag {
            b'0' | 0 | b'7' => EntryKind::File,
            b'5' => EntryKind::Dir,
            b'2' => EntryKind::Symlink {
                target: match pending.linkpath {
                    Some(t) => t,
                    None => text(&block[157..257], "linkname")?,
                },
            },
            other => {
                return Err(bad(format!(
                    "{path:?}: unsupported entry type {:?} (only files, directories and symlinks)",
                    other as char
                )))
            }
        };
        // A directory's name ends with `/`; PostgreSQL's `tarCreateHeader` (src/port/tar.c)
        // also appends one to symlinks (`pg_tblspc/16384/`: "we only support symbolic
        // links to directories").
        if kind != EntryKind::File {
            while path.len() > 1 && path.ends_with('/') {
                path.pop();
            }
        }
        if path.is_empty() {
            return Err(bad("an entry with an empty name"));
        }
        // Data follows for every type that declares a size; only a file's is passed on.
        self.state = State::Data {
            remaining: size,
            padding: padding(size),
            emit: kind == EntryKind::File,
        };
        self.in_entry = true;
        Ok(Some(TarEntry {
            path,
            size,
            mode,
            kind,
            mtime,
        }))
    }

    fn apply_extension(&mut self, which: Extension, payload: &[u8]) -> Result<(), TarError> {
        match which {
            Extension::LongName => self.pending.path = Some(c_text(payload, "GNU long name")?),
            Extension::LongLink => {
                self.pending.linkpath = Some(c_text(payload, "GNU long link name")?)
            }
            Extension::PaxGlobal => {}
            Extension::Pax => {
                for (key, value) in pax_records(payload)? {
                    let utf8 = |v: &[u8]| {
                        String::from_utf8(v.to_vec())
                            .map_err(|_| bad(format!("pax {key}: not UTF-8")))
                    };
                    match key.as_str() {
                        "path" => self.pending.path = Some(utf8(value)?),
                        "linkpath" => self.pending.linkpath = Some(utf8(value)?),
                        "size" => {
                            let v = utf8(value)?;
                            self.pending.size =
                                Some(v.parse().map_err(|_| bad(format!("pax size {v:?}")))?);
                        }
                        "mtime" => {
                            // Seconds, maybe with a fraction: keep the whole seconds.
                            let v = utf8(value)?;
                            let whole = v.split('.').next().unwrap_or_default();
                            self.pending.mtime =
                                Some(whole.parse().map_err(|_| bad(format!("pax mtime {v:?}")))?);
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }
}

/// Bytes of padding after `size` bytes of data, up to the next block.
fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

/// The header checksum: the sum of the block's bytes with the checksum field read as
/// spaces. Unsigned, as POSIX says; the signed sum of some old tars is accepted too.
fn verify_checksum(block: &[u8]) -> Result<(), TarError> {
    let stored = number(&block[148..156], "checksum")?;
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { *b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::try_from(stored).ok() == Some(signed) {
        Ok(())
    } else {
        Err(bad(format!(
            "header checksum mismatch (stored {stored}, computed {unsigned}): corrupt archive"
        )))
    }
}

/// A numeric field: octal (NUL- or space-terminated), or base-256 when the first byte
/// has its high bit set (GNU, for sizes of 8 GiB and more).
fn number(field: &[u8], name: &str) -> Result<u64, TarError> {
    if field[0] & 0x80 != 0 {
        if field[0] & 0x40 != 0 {
            return Err(bad(format!("negative {name}")));
        }
        let mut v: u64 = u64::from(field[0] & 0x3f);
        for b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(*b)))
                .ok_or_else(|| bad(format!("{name} out of range")))?;
        }
        return Ok(v);
    }
    let digits: &[u8] = {
        let start = field.iter().position(|b| *b != b' ').unwrap_or(field.len());
        let rest = &field[start..];
        let end = rest
            .iter()
            .position(|b| *b == 0 || *b == b' ')
            .unwrap_or(rest.len());
        &rest[..end]
    };
    if digits.is_empty() {
        return Ok(0);
    }
    let mut v: u64 = 0;
    for b in digits {
        if !(b'0'..=b'7').contains(b) {
            return Err(bad(format!("{name} field is not octal: {field:?}")));
        }
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| bad(format!("{name} out of range")))?;
    }
    Ok(v)
}

/// A NUL-padded text field.
fn text(field: &[u8], name: &str) -> Result<String, TarError> {
    c_text(field, name)
}

/// Bytes up to the first NUL, as UTF-8.
fn c_text(bytes: &[u8], name: &str) -> Result<String, TarError> {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8(bytes[..end].to_vec()).map_err(|_| bad(format!("{name} is not UTF-8")))
}

/// pax records: `LEN key=value\n`, where LEN counts the whole record.
fn pax_records(mut payload: &[u8]) -> Result<Vec<(String, &[u8])>, TarError> {
    let mut records = Vec::new();
    while !payload.is_empty() {
        let space = payload
            .iter()
            .position(|b| *b == b' ')
            .ok_or_else(|| bad("malformed pax record"))?;
        let len: usize = std::str::from_utf8(&payload[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|l| *l > space + 1 && *l <= payload.len())
            .ok_or_else(|| bad("malformed pax record length"))?;
        let record = &payload[space + 1..len];
        let record = record
            .strip_suffix(b"\n")
            .ok_or_else(|| bad("pax record without its newline"))?;
        let eq = record
            .iter()
            .position(|b| *b == b'=')
            .ok_or_else(|| bad("pax record without '='"))?;
        let key = String::from_utf8(record[..eq].to_vec()).map_err(|_| bad("pax key not UTF-8"))?;
        records.push((key, &record[eq + 1..]));
        payload = &payload[len..];
    }
    Ok(records)
}

/// A tiny tar writer for tests (here and in [`super::conn`]).
#[cfg(test)]
pub(crate) mod builder {
    use super::padding;

    /// A tiny tar writer for the tests.
    #[derive(Default)]
    pub(crate) struct Builder {
        out: Vec<u8>,
    }

    fn octal(field: &mut [u8], v: u64) {
        let s = format!("{:0w$o}\0", v, w = field.len() - 1);
        field.copy_from_slice(s.as_bytes());
    }

    impl Builder {
        pub(crate) fn header(
            &mut self,
            name: &str,
            prefix: &str,
            size: u64,
            flag: u8,
            link: &str,
        ) -> [u8; 512] {
            let mut h = [0u8; 512];
            h[..name.len()].copy_from_slice(name.as_bytes());
            octal(&mut h[100..108], 0o640);
            octal(&mut h[108..116], 0);
            octal(&mut h[116..124], 0);
            octal(&mut h[124..136], size);
            octal(&mut h[136..148], 1_700_000_000);
            h[156] = flag;
            h[157..157 + link.len()].copy_from_slice(link.as_bytes());
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
            h
        }

        pub(crate) fn finish_header(&mut self, mut h: [u8; 512]) {
            h[148..156].copy_from_slice(b"        ");
            let sum: u64 = h.iter().map(|b| u64::from(*b)).sum();
            let s = format!("{sum:06o}\0 ");
            h[148..156].copy_from_slice(s.as_bytes());
            self.out.extend_from_slice(&h);
        }

        pub(crate) fn data(&mut self, data: &[u8]) {
            self.out.extend_from_slice(data);
            self.out
                .resize(self.out.len() + padding(data.len() as u64) as usize, 0);
        }

        pub(crate) fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            let h = self.header(name, "", data.len() as u64, b'0', "");
            self.finish_header(h);
            self.data(data);
            self
        }

        pub(crate) fn raw(&mut self, h: [u8; 512], data: &[u8]) -> &mut Self {
            self.finish_header(h);
            self.data(data);
            self
        }

        pub(crate) fn end(&mut self) -> Vec<u8> {
            let mut v = std::mem::take(&mut self.out);
            v.extend_from_slice(&[0; 1024]);
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::builder::Builder;
    use super::*;

    /// What a whole read produced: entries with their data joined (for comparisons).
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Entry(TarEntry, Vec<u8>),
        End,
    }

    fn read_in_pieces(
        bytes: &[u8],
        sizes: &mut dyn FnMut() -> usize,
    ) -> Result<Vec<Seen>, TarError> {
        let mut r = TarReader::new();
        let mut seen = Vec::new();
        let mut open: Option<(TarEntry, Vec<u8>)> = None;
        let mut at = 0;
        while at < bytes.len() {
            let n = sizes().clamp(1, bytes.len() - at);
            r.push(Bytes::copy_from_slice(&bytes[at..at + n]));
            at += n;
            while let Some(ev) = r.next_event()? {
                match ev {
                    TarEvent::Entry(e) => {
                        assert!(open.is_none(), "entry inside an entry");
                        open = Some((e, Vec::new()));
                    }
                    TarEvent::Data(d) => {
                        assert!(!d.is_empty());
                        open.as_mut()
                            .expect("data outside an entry")
                            .1
                            .extend_from_slice(&d)
                    }
                    TarEvent::EntryEnd => {
                        let (e, d) = open.take().expect("end outside an entry");
                        seen.push(Seen::Entry(e, d));
                    }
                    TarEvent::End => seen.push(Seen::End),
                }
            }
        }
        r.finish()?;
        Ok(seen)
    }

    /// Reads `bytes` whole, in 1-byte pieces and in pseudo-random pieces; all must agree.
    fn read_all_ways(bytes: &[u8]) -> Result<Vec<Seen>, TarError> {
        let whole = read_in_pieces(bytes, &mut || usize::MAX)?;
        assert_eq!(read_in_pieces(bytes, &mut || 1)?, whole);
        for seed in 1..20u64 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 1500) as usize + 1
            };
            assert_eq!(read_in_pieces(bytes, &mut next)?, whole, "seed {seed}");
        }
        Ok(whole)
    }

    fn entry(path: &str, size: u64, kind: EntryKind) -> TarEntry {
        TarEntry {
            path: path.into(),
            size,
            mode: 0o640,
            kind,
            mtime: 1_700_000_000,
        }
    }

    #[test]
    fn files_dirs_symlinks_and_the_end() {
        let big: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        let mut b = Builder::default();
        let dir = b.header("base/", "", 0, b'5', "");
        b.raw(dir, b"");
        b.file("PG_VERSION", b"15\n");
        b.file("base/1/1259", &big);
        b.file("empty", b"");
        let exact = vec![9u8; 1024];
        b.file("exact", &exact);
        let link = b.header("pg_tblspc/16384/", "", 0, b'2', "/srv/ts");
        b.raw(link, b"");
        let bytes = b.end();
        let seen = read_all_ways(&bytes).unwrap();
        assert_eq!(
            seen,
            vec![
                Seen::Entry(entry("base", 0, EntryKind::Dir), vec![]),
                Seen::Entry(entry("PG_VERSION", 3, EntryKind::File), b"15\n".to_vec()),
                Seen::Entry(entry("base/1/1259", 5000, EntryKind::File), big),
                Seen::Entry(entry("empty", 0, EntryKind::File), vec![]),
                Seen::Entry(entry("exact", 1024, EntryKind::File), exact),
                Seen::Entry(
                    entry(
                        "pg_tblspc/16384",
                        0,
                        EntryKind::Symlink {
                            target: "/srv/ts".into()
                        }
                    ),
                    vec![]
                ),
                Seen::End,
            ]
        );
        // Record padding after the end is ignored.
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0; 8192]);
        assert_eq!(read_all_ways(&padded).unwrap(), seen);
    }

    #[test]
    fn data_pieces_are_slices_of_the_input() {
        let mut b = Builder::default();
        b.file("f", &[1u8; 3000]);
        let bytes = Bytes::from(b.end());
        let mut r = TarReader::new();
        r.push(bytes.clone());
        let mut pieces = Vec::new();
        while let Some(ev) = r.next_event().unwrap() {
            if let TarEvent::Data(d) = ev {
                pieces.push(d);
            }
        }
        assert_eq!(pieces.len(), 1);
        assert_eq!(pieces[0].as_ptr(), bytes[512..].as_ptr(), "no copy");
        assert!(r.is_end());
    }

    #[test]
    fn ustar_prefix_gnu_long_names_and_pax_headers() {
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let mut b = Builder::default();
        // ustar name + prefix.
        let h = b.header("name", "some/prefix", 2, b'0', "");
        b.raw(h, b"ab");
        // GNU long name and long link.
        let h = b.header("././@LongLink", "", long.len() as u64 + 1, b'L', "");
        b.raw(h, format!("{long}\0").as_bytes());
        let h = b.header("truncated-name", "", 1, b'0', "");
        b.raw(h, b"x");
        let target = "t".repeat(150);
        let h = b.header("././@LongLink", "", target.len() as u64, b'K', "");
        b.raw(h, target.as_bytes());
        let h = b.header("link", "", 0, b'2', "short");
        b.raw(h, b"");
        // pax: path, linkpath, size (over the header's), mtime with a fraction; a global
        // header is skipped.
        let rec = |k: &str, v: &str| {
            let body = format!(" {k}={v}\n");
            let mut len = body.len();
            while format!("{len}{body}").len() != len {
                len += 1;
            }
            format!("{len}{body}")
        };
        let g = rec("comment", "whatever ok");
        let h = b.header("pax_global_header", "", g.len() as u64, b'g', "");
        b.raw(h, g.as_bytes());
        let pax = [
            rec("path", &long),
            rec("size", "4"),
            rec("mtime", "1700000001.5"),
        ]
        .concat();
        let h = b.header("PaxHeaders/x", "", pax.len() as u64, b'x', "");
        b.raw(h, pax.as_bytes());
        let h = b.header("short", "", 0o77777777777, b'0', "");
        b.raw(h, b"wxyz");
        let pax = rec("linkpath", &target);
        let h = b.header("PaxHeaders/y", "", pax.len() as u64, b'x', "");
        b.raw(h, pax.as_bytes());
        let h = b.header("l2", "", 0, b'2', "");
        b.raw(h, b"");
        let seen = read_all_ways(&b.end()).unwrap();
        let mut pax_file = entry(&long, 4, EntryKind::File);
        pax_file.mtime = 1_700_000_001;
        assert_eq!(
            seen,
            vec![
                Seen::Entry(
                    entry("some/prefix/name", 2, EntryKind::File),
                    b"ab".to_vec()
                ),
                Seen::Entry(entry(&long, 1, EntryKind::File), b"x".to_vec()),
                Seen::Entry(
                    entry(
                        "link",
                        0,
                        EntryKind::Symlink {
                            target: target.clone()
                        }
                    ),
                    vec![]
                ),
                Seen::Entry(pax_file, b"wxyz".to_vec()),
                Seen::Entry(entry("l2", 0, EntryKind::Symlink { target }), vec![]),
                Seen::End,
            ]
        );
    }

    #[test]
    fn base_256_sizes() {
        let mut b = Builder::default();
        let mut h = b.header("f", "", 0, b'0', "");
        h[124..136].fill(0);
        h[124] = 0x80;
        h[135] = 5;
        b.raw(h, b"hello");
        let seen = read_all_ways(&b.end()).unwrap();
        assert_eq!(
            seen[0],
            Seen::Entry(entry("f", 5, EntryKind::File), b"hello".to_vec())
        );
        assert_eq!(
            number(&[0x80, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0], "size").unwrap(),
            1 << 33
        );
        assert!(number(&[0xff; 12], "size").is_err());
        assert!(number(b"0000000008\0 ", "size").is_err());
        assert_eq!(number(b"   17 \0", "mode").unwrap(), 0o17);
    }

    #[test]
    fn a_corrupt_header_checksum_is_an_error() {
        let mut b = Builder::default();
        b.file("PG_VERSION", b"15\n");
        let mut bytes = b.end();
        bytes[3] ^= 0x01; // the name changes, the stored checksum does not
        let e = read_in_pieces(&bytes, &mut || 7).unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        let mut bytes = b.file("x", b"").end();
        bytes[150] = b'9';
        assert!(read_in_pieces(&bytes, &mut || 512).is_err());
    }

    #[test]
    fn truncated_archives_are_errors_at_finish() {
        let mut b = Builder::default();
        b.file("a", &[1; 700]);
        let bytes = b.end();
        // Cut inside data, inside padding, at a header boundary, inside a header, and
        // between the two zero blocks.
        for cut in [600, 1100, 1536, 1600, 2048, 2100] {
            let e = read_in_pieces(&bytes[..cut], &mut || 100).unwrap_err();
            assert!(e.to_string().contains("truncated"), "cut {cut}: {e}");
        }
        assert!(read_in_pieces(&bytes, &mut || 100).is_ok());
        assert!(TarReader::new().finish().is_err(), "empty input");
    }

    #[test]
    fn unsupported_and_malformed_entries_are_errors() {
        let mut b = Builder::default();
        let h = b.header("hard", "", 0, b'1', "target");
        let e = read_in_pieces(&b.raw(h, b"").end(), &mut || 512).unwrap_err();
        assert!(e.to_string().contains("unsupported entry type"), "{e}");
        // An oversized extension is refused before it is read.
        let h = b.header("x", "", MAX_EXTENSION + 1, b'x', "");
        b.finish_header(h);
        let e = read_in_pieces(&b.end(), &mut || 512).unwrap_err();
        assert!(e.to_string().contains("extended header"), "{e}");
        // A malformed pax record.
        let h = b.header("x", "", 10, b'x', "");
        let e = read_in_pieces(&b.raw(h, b"99 path=a\n").end(), &mut || 512).unwrap_err();
        assert!(e.to_string().contains("pax"), "{e}");
        // A zero block followed by a header.
        let mut bytes = vec![0u8; 512];
        bytes.extend(Builder::default().file("a", b"").end());
        assert!(read_in_pieces(&bytes, &mut || 512).is_err());
    }
}
