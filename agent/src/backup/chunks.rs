//! The chunk pipeline: file bytes in, deduplicated blobs out, in bounded memory.
//!
//! The backup's reader hands each file's bytes to a [`Chunker`], which cuts them at fixed
//! offsets ([`CHUNK_SIZE`]) and gives every complete chunk to the [`Uploader`]. The
//! uploader runs each chunk as its own task: hash and (unless the repository is known to
//! hold it) compress on the blocking pool, which uses every core, then a `Create` write.
//! At most `max_in_flight` chunks are alive at once: when that many are in flight, the
//! reader waits, the replication stream stops being read, and the server waits in turn.
//! So memory is bounded by `max_in_flight` × (chunk + its compressed copy), whatever the
//! database's size, and nothing is staged on local disk.
//!
//! Which chunks the repository already holds comes from the previous backup's file list,
//! kept as [`KnownChunks`]: 16 bytes per chunk, and at most [`KNOWN_MAX`] of them (64 MiB,
//! a 4 TiB database). A chunk it does not know about is compressed and written with
//! `Create`, which stores each content once anyway: the set saves work, never decides
//! what is stored.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tidemark_store::backup::CHUNK_SIZE;
use tidemark_store::codec;
use tidemark_store::repo::EncodedBlob;
use tidemark_store::{Compression, Digest, Repo};
use tokio::task::JoinHandle;

/// Where a chunk belongs: the index of its file in the backup's list, and its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlace {
    /// The file's index in the entry list.
    pub entry: usize,
    /// The chunk's index in the file.
    pub index: usize,
}

/// What storing one chunk did.
#[derive(Clone, Copy, Debug)]
pub struct ChunkDone {
    /// Where it belongs.
    pub place: ChunkPlace,
    /// Its digest.
    pub digest: Digest,
    /// Raw bytes.
    pub raw_len: u64,
    /// Bytes written to the repository (0 when it was already there).
    pub stored_added: u64,
}

/// Running totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadStats {
    /// Chunks handled.
    pub chunks: u64,
    /// Chunks written (the rest were in the repository already).
    pub chunks_added: u64,
    /// Raw bytes handled.
    pub raw_bytes: u64,
    /// Stored bytes written.
    pub stored_added: u64,
}

/// Stores chunks with bounded parallelism; see the module doc.
#[derive(Debug)]
pub struct Uploader {
    repo: Repo,
    compression: Compression,
    /// Digests the repository is known to hold (the previous backup's chunks): neither
    /// compressed nor written.
    known: Arc<KnownChunks>,
    in_flight: FuturesUnordered<JoinHandle<tidemark_store::Result<ChunkDone>>>,
    max_in_flight: usize,
    stats: UploadStats,
}

impl Uploader {
    /// An uploader into `repo`; `known` are digests already in the repository.
    pub fn new(repo: Repo, known: KnownChunks, max_in_flight: usize) -> Uploader {
        Uploader {
            compression: repo.compression(),
            repo,
            known: Arc::new(known),
            in_flight: FuturesUnordered::new(),
            max_in_flight: max_in_flight.max(1),
            stats: UploadStats::default(),
        }
    }

    /// Starts storing `data` for `place`. First waits for a chunk in flight to finish
    /// when the limit is reached; what finished is returned for the caller to record.
    pub async fn submit(
        &mut self,
        place: ChunkPlace,
        data: Bytes,
    ) -> tidemark_store::Result<Vec<ChunkDone>> {
        let mut done = Vec::new();
        while self.in_flight.len() >= self.max_in_flight {
            done.push(self.next_done().await?.expect("a chunk is in flight"));
        }
        let repo = self.repo.clone();
        let known = Arc::clone(&self.known);
        let compression = self.compression;
        // A task of its own, so that it progresses while the reader awaits the network.
        self.in_flight.push(tokio::spawn(async move {
            store_chunk(repo, known, compression, place, data).await
        }));
        Ok(done)
    }

    /// Waits for every chunk in flight; returns what finished.
    pub async fn drain(&mut self) -> tidemark_store::Result<Vec<ChunkDone>> {
        let mut done = Vec::new();
        while let Some(d) = self.next_done().await? {
            done.push(d);
        }
        Ok(done)
    }

    /// Chunks in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The totals so far (of finished chunks).
    pub fn stats(&self) -> UploadStats {
        self.stats
    }

    async fn next_done(&mut self) -> tidemark_store::Result<Option<ChunkDone>> {
        let Some(joined) = self.in_flight.next().await else {
            return Ok(None);
        };
        let done = joined.expect("chunk task panicked")?;
        self.stats.chunks += 1;
        self.stats.raw_bytes += done.raw_len;
        if done.stored_added > 0 {
            self.stats.chunks_added += 1;
            self.stats.stored_added += done.stored_added;
        }
        Ok(Some(done))
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        // A failed backup stops its chunks; what they wrote is unreferenced, harmless.
        for task in self.in_flight.iter() {
            task.abort();
        }
    }
}

/// Hashes `data`; unless known, compresses and writes it with `Create` (a blob that is
/// already there counts as deduplicated: same name, same content).
async fn store_chunk(
    repo: Repo,
    known: Arc<KnownChunks>,
    compression: Compression,
    place: ChunkPlace,
    data: Bytes,
) -> tidemark_store::Result<ChunkDone> {
    let raw_len = data.len() as u64;
    let (digest, encoded) = tokio::task::spawn_blocking(move || {
        let digest = Digest::of(&data);
        if known.contains(&digest) {
            return (digest, None);
        }
        let stored = codec::encode(compression, &data);
        (digest, Some(stored))
    })
    .await
    .expect("chunk encoding panicked");
    let stored_added = match encoded {
        None => 0,
        Some(stored) => {
            let put = repo
                .put_encoded(&EncodedBlob::from_stored(
                    digest,
                    raw_len,
                    Bytes::from(stored),
                ))
                .await?;
            put.added()
        }
    };
    Ok(ChunkDone {
        place,
        digest,
        raw_len,
        stored_added,
    })
}

/// The most chunks [`KnownChunks`] holds: 4 Mi × 16 bytes = 64 MiB.
pub const KNOWN_MAX: usize = 4 << 20;

/// Chunk digests the repository is known to hold, 16 bytes each: a 128-bit hash of the
/// digest under keys drawn at random for this process, in a sorted vector.
///
/// A false match would skip storing a chunk the repository lacks. For two different
/// digests to match, their keyed hashes must collide: about 2^-128 for a pair, and no
/// one can aim for it without the keys, which never leave the process. (Truncating the
/// digest instead would let someone who writes chosen data into the database search
/// for a collision offline.) Even then the restore would refuse the chunk, whose
/// content it checks against the full digest: a backup could fail, never restore
/// wrong bytes.
#[derive(Debug)]
pub struct KnownChunks {
    keys: (RandomState, RandomState),
    sorted: Vec<u128>,
    sealed: bool,
}

impl Default for KnownChunks {
    fn default() -> KnownChunks {
        KnownChunks::new()
    }
}

impl KnownChunks {
    /// An empty set.
    pub fn new() -> KnownChunks {
        KnownChunks::with_capacity(0)
    }

    /// An empty set with room for `n` digests (at most [`KNOWN_MAX`]): sized once, it
    /// never holds its old and its grown vector at the same time.
    pub fn with_capacity(n: usize) -> KnownChunks {
        KnownChunks {
            keys: (RandomState::new(), RandomState::new()),
            sorted: Vec::with_capacity(n.min(KNOWN_MAX)),
            sealed: true,
        }
    }

    fn key(&self, digest: &Digest) -> u128 {
        (u128::from(self.keys.0.hash_one(digest.0)) << 64)
            | u128::from(self.keys.1.hash_one(digest.0))
    }

    /// Adds a digest; false (and nothing added) once [`KNOWN_MAX`] are held.
    pub fn add(&mut self, digest: &Digest) -> bool {
        if self.sorted.len() >= KNOWN_MAX {
            return false;
        }
        let key = self.key(digest);
        self.sorted.push(key);
        self.sealed = false;
        true
    }

    /// Sorts what was added, in place; call before [`KnownChunks::contains`].
    pub fn seal(&mut self) {
        self.sorted.sort_unstable();
        self.sorted.dedup();
        self.sealed = true;
    }

    /// Whether the repository is known to hold `digest`.
    pub fn contains(&self, digest: &Digest) -> bool {
        debug_assert!(self.sealed, "KnownChunks::seal before contains");
        self.sorted.binary_search(&self.key(digest)).is_ok()
    }

    /// How many digests it holds.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

/// Cuts one file's bytes into chunks at fixed offsets.
#[derive(Debug)]
pub struct Chunker {
    entry: usize,
    next_index: usize,
    buf: BytesMut,
}

impl Chunker {
    /// A chunker for the file at `entry`.
    pub fn new(entry: usize) -> Chunker {
        Chunker {
            entry,
            next_index: 0,
            buf: BytesMut::new(),
        }
    }

    /// Adds a piece of the file; returns the chunks it completed.
    pub fn push(&mut self, mut piece: Bytes) -> Vec<(ChunkPlace, Bytes)> {
        let size = CHUNK_SIZE as usize;
        let mut out = Vec::new();
        while !piece.is_empty() {
            if self.buf.is_empty() && piece.len() >= size {
                // A whole chunk inside one piece: hand it on without copying.
                let whole = piece.split_to(size);
                out.push((self.place(), whole));
                continue;
            }
            if self.buf.capacity() == 0 {
                self.buf.reserve(size);
            }
            let take = (size - self.buf.len()).min(piece.len());
            self.buf.extend_from_slice(&piece.split_to(take));
            if self.buf.len() == size {
                let chunk = self.buf.split().freeze();
                out.push((self.place(), chunk));
            }
        }
        out
    }

    /// The file's last (short) chunk, if any bytes are left.
    pub fn finish(mut self) -> Option<(ChunkPlace, Bytes)> {
        if self.buf.is_empty() {
            None
        } else {
            let chunk = self.buf.split().freeze();
            Some((self.place(), chunk))
        }
    }

    /// Chunks handed out so far.
    pub fn chunks(&self) -> usize {
        self.next_index
    }

    fn place(&mut self) -> ChunkPlace {
        let place = ChunkPlace {
            entry: self.entry,
            index: self.next_index,
        };
        self.next_index += 1;
        place
    }
}

/// How many chunks a file of `size` bytes has.
pub fn chunk_count(size: u64) -> usize {
    size.div_ceil(CHUNK_SIZE) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(pieces: &[usize]) -> Vec<(usize, usize)> {
        let mut c = Chunker::new(7);
        let mut out = Vec::new();
        let mut byte = 0u8;
        for &len in pieces {
            let piece: Vec<u8> = (0..len)
                .map(|_| {
                    byte = byte.wrapping_add(1);
                    byte
                })
                .collect();
            out.extend(c.push(Bytes::from(piece)));
        }
        out.extend(c.finish());
        // Reassembled, the chunks are the input, in order.
        let all: Vec<u8> = out.iter().flat_map(|(_, b)| b.to_vec()).collect();
        let total: usize = pieces.iter().sum();
        assert_eq!(all.len(), total);
        assert!(all
            .iter()
            .enumerate()
            .all(|(i, b)| *b == ((i + 1) % 256) as u8));
        out.iter()
            .map(|(p, b)| {
                assert_eq!(p.entry, 7);
                (p.index, b.len())
            })
            .collect()
    }

    #[test]
    fn known_chunks_match_exactly_the_digests_added() {
        let mut known = KnownChunks::new();
        let added: Vec<Digest> = (0u32..1000).map(|i| Digest::of(&i.to_le_bytes())).collect();
        for d in added.iter().chain(&added[..10]) {
            assert!(known.add(d));
        }
        known.seal();
        assert_eq!(known.len(), 1000, "duplicates are held once");
        assert!(added.iter().all(|d| known.contains(d)));
        assert!((1000u32..3000).all(|i| !known.contains(&Digest::of(&i.to_le_bytes()))));
        // Another process (other keys) agrees on membership.
        let mut other = KnownChunks::new();
        other.add(&added[3]);
        other.seal();
        assert!(other.contains(&added[3]) && !other.contains(&added[4]));
        assert!(!KnownChunks::new().contains(&added[0]));
    }

    #[test]
    fn chunks_fall_at_fixed_offsets_whatever_the_pieces() {
        let c = CHUNK_SIZE as usize;
        let expect = vec![(0, c), (1, c), (2, 5)];
        assert_eq!(cut(&[2 * c + 5]), expect);
        assert_eq!(cut(&[1, c, c + 4]), expect);
        let pages: Vec<usize> = [8192; 256].into_iter().chain([5]).collect();
        assert_eq!(cut(&pages), expect);
        assert_eq!(cut(&[c]), vec![(0, c)]);
        assert_eq!(cut(&[]), vec![]);
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(CHUNK_SIZE), 1);
        assert_eq!(chunk_count(CHUNK_SIZE + 1), 2);
    }
}
