//! The content-addressed repository over a [`Backend`]: blobs and records.
//!
//! - Blobs are named by the SHA-256 of their raw content and written with
//!   [`PutMode::Create`]: an existing name means the same content is already there, so
//!   writing it again is a no-op (deduplication, whoever wrote it first).
//! - Every blob read re-hashes what it decodes; corrupt content is an error, never data.
//! - Records (cluster, WAL index, …) go through [`catalog`]'s checked envelope.
//!
//! Memory stays bounded: content larger than [`IN_MEMORY_MAX`] is streamed from its file
//! in frames and uploaded in parts, and read back in ranges.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;

use bytes::Bytes;
use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::backend::{Backend, ObjectMeta, PutMode, Staged};
use crate::backup::{
    self, BackupRecord, Chunked, FileEntry, FileList, FileListPage, FileListPages,
};
use crate::catalog::{self, ClusterRecord, RepositoryRecord, Stanza, WalRecord, REPOSITORY_FORMAT};
use crate::codec::{self, BlobDecoder, Compression, Digest, Hasher, FRAME_RAW_MAX};
use crate::pg::WalFileName;
use crate::{Error, Key, Result};

/// Content up to this size is hashed and compressed in memory, in parallel; larger
/// content is streamed (two passes over its file).
pub const IN_MEMORY_MAX: u64 = 32 << 20;
/// Size of the parts large blobs are uploaded in, and of the ranges they are read in.
pub const PART_SIZE: usize = 8 << 20;

/// What writing a blob did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobPut {
    /// The content's digest (the blob's name).
    pub digest: Digest,
    /// Raw bytes.
    pub raw_len: u64,
    /// Bytes stored (this write's encoding; for a deduplicated blob, what it would have taken).
    pub stored_len: u64,
    /// True when the blob was already there and nothing was written.
    pub deduplicated: bool,
}

impl BlobPut {
    /// The stored bytes this write added to the repository (0 when deduplicated).
    pub fn added(&self) -> u64 {
        if self.deduplicated {
            0
        } else {
            self.stored_len
        }
    }
}

/// Content hashed and encoded in memory, ready to store.
#[derive(Clone, Debug)]
pub struct EncodedBlob {
    /// The raw content's digest.
    pub digest: Digest,
    /// Raw length.
    pub raw_len: u64,
    /// The stored body in order (header, then frames), joined only when a store needs it
    /// whole: a body already streamed to a staged file never is, which spares allocating
    /// and copying megabytes.
    pieces: Vec<Bytes>,
}

impl EncodedBlob {
    /// A blob whose stored body was encoded by the caller.
    pub fn from_stored(digest: Digest, raw_len: u64, stored: Bytes) -> EncodedBlob {
        EncodedBlob {
            digest,
            raw_len,
            pieces: vec![stored],
        }
    }

    /// The stored body's length.
    pub fn stored_len(&self) -> u64 {
        self.pieces.iter().map(|p| p.len() as u64).sum()
    }

    /// The SHA-256 of the stored body (not of the content, which [`EncodedBlob::digest`]
    /// names): a cheap check that a copy of the body kept elsewhere is intact.
    pub fn stored_digest(&self) -> Digest {
        let mut hasher = crate::codec::Hasher::new();
        for piece in &self.pieces {
            hasher.update(piece);
        }
        hasher.finish()
    }

    /// The stored body, whole.
    pub fn stored(&self) -> Bytes {
        match &self.pieces[..] {
            [one] => one.clone(),
            pieces => {
                let mut whole = Vec::with_capacity(self.stored_len() as usize);
                for piece in pieces {
                    whole.extend_from_slice(piece);
                }
                Bytes::from(whole)
            }
        }
    }

    /// Hashes and compresses `raw` at once, on two threads: SHA-256 is sequential, lz4
    /// frames are independent. One thread hashes and then helps compress; the other
    /// compresses from the start. Frames are claimed from a shared counter, so the two
    /// finish together whatever the ratio of hashing to compression speed.
    pub fn encode(raw: &[u8], compression: Compression) -> EncodedBlob {
        let unchecked = |_: u64, _: &[u8]| Ok::<(), std::convert::Infallible>(());
        match EncodedBlob::encode_checked(raw, compression, unchecked, None) {
            Ok(blob) => blob,
            Err(never) => match never {},
        }
    }

    /// [`EncodedBlob::encode`], with two additions that let a caller overlap its own work
    /// with the encoding instead of running it before or after:
    ///
    /// - `check` sees `raw` piece by piece, in order (offset, piece), on the hashing thread
    ///   just before each piece is hashed, so validating the input costs no time of its
    ///   own. Its first error stops the encoding and is returned;
    /// - `sink`, when given, receives the stored body (header, then frames in order) as
    ///   frames complete, so that writing it out overlaps the compression of later frames.
    ///   The sink is an optimisation: after its first error it gets nothing more, and the
    ///   encoding goes on (the caller can tell by the length it took).
    pub fn encode_checked<E: Send>(
        raw: &[u8],
        compression: Compression,
        check: impl FnMut(u64, &[u8]) -> std::result::Result<(), E> + Send,
        sink: Option<&mut (dyn Write + Send)>,
    ) -> std::result::Result<EncodedBlob, E> {
        EncodedBlob::encode_announced(raw, compression, check, sink, |_| {})
    }

    /// [`EncodedBlob::encode_checked`] that also tells `digest_known` the digest as soon as
    /// the hashing thread has it, every piece checked, while frames are still being
    /// compressed: a caller can prepare where the blob goes (its folder) meanwhile. Not
    /// called when a check fails.
    pub fn encode_announced<E: Send>(
        raw: &[u8],
        compression: Compression,
        check: impl FnMut(u64, &[u8]) -> std::result::Result<(), E> + Send,
        sink: Option<&mut (dyn Write + Send)>,
        digest_known: impl FnOnce(&Digest) + Send,
    ) -> std::result::Result<EncodedBlob, E> {
        EncodedBlob::encode_hashed_elsewhere(raw, compression, None, check, sink, digest_known)
    }

    /// [`EncodedBlob::encode_announced`] for content that another thread may already be
    /// checking and hashing (with the same checks, piece by piece in the same order):
    /// the hashing thread waits for `elsewhere` instead, and compresses meanwhile only
    /// what the other thread leaves it. When `elsewhere` gives `None` (that thread gave
    /// up, or one of its checks failed), the hashing thread checks and hashes `raw`
    /// itself, so that a failed check is reported exactly as without it.
    pub fn encode_hashed_elsewhere<E: Send>(
        raw: &[u8],
        compression: Compression,
        elsewhere: Option<HashedElsewhere>,
        check: impl FnMut(u64, &[u8]) -> std::result::Result<(), E> + Send,
        sink: Option<&mut (dyn Write + Send)>,
        digest_known: impl FnOnce(&Digest) + Send,
    ) -> std::result::Result<EncodedBlob, E> {
        let frames: Vec<&[u8]> = raw.chunks(FRAME_RAW_MAX).collect();
        let mut header = Vec::with_capacity(codec::HEADER_LEN);
        codec::encode_header(compression, raw.len() as u64, &mut header);
        // Every frame is encoded straight into its own slot of one buffer: no scratch
        // buffer, no copy, one allocation. The buffer is mapped lazily by the kernel, so
        // only the bytes the frames really take cost memory.
        let slot_len = codec::frame_slot_len();
        let mut out = vec![0u8; slot_len * frames.len()];
        let slots: Vec<Mutex<Option<&mut [u8]>>> = out
            .chunks_mut(slot_len)
            .map(|slot| Mutex::new(Some(slot)))
            .collect();
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        // Frames finished out of order wait here until the ones before them are out.
        let ordered = Mutex::new(OrderedSink {
            sink,
            next: 0,
            done: vec![None; frames.len()],
        });
        ordered.lock().expect("sink lock").write(&header);
        let compress_frames = || loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(frame) = frames.get(i) else { break };
            let slot = slots[i]
                .lock()
                .expect("slot")
                .take()
                .expect("each slot once");
            let len = codec::encode_frame_into(compression, frame, slot);
            let encoded: &[u8] = slot;
            ordered
                .lock()
                .expect("sink lock")
                .finish(i, &encoded[..len]);
        };
        let hashed = std::thread::scope(|s| {
            let helper = s.spawn(|| {
                let digest = match elsewhere.and_then(|wait| wait()) {
                    Some(digest) => digest,
                    None => check_and_hash(raw, check).inspect_err(|_| {
                        stop.store(true, Ordering::Relaxed);
                    })?,
                };
                digest_known(&digest);
                compress_frames();
                Ok(digest)
            });
            compress_frames();
            helper.join().expect("hashing thread")
        });
        let digest = hashed?;
        let lens: Vec<usize> = ordered
            .into_inner()
            .expect("sink lock")
            .done
            .into_iter()
            .map(|encoded| encoded.expect("every frame encoded").len())
            .collect();
        drop(slots);
        let out = Bytes::from(out);
        let mut pieces = Vec::with_capacity(1 + frames.len());
        pieces.push(Bytes::from(header));
        pieces.extend(
            lens.iter()
                .enumerate()
                .map(|(i, len)| out.slice(i * slot_len..i * slot_len + len)),
        );
        Ok(EncodedBlob {
            digest,
            raw_len: raw.len() as u64,
            pieces,
        })
    }
}

/// Checks `raw` piece by piece (at [`FRAME_RAW_MAX`], with its offset) and hashes each
/// piece once checked: what [`EncodedBlob::encode_announced`]'s hashing thread does, for
/// a caller that does it on a thread of its own ([`HashedElsewhere`]) and must do it
/// exactly alike. The first refused piece ends it with its error.
pub fn check_and_hash<E>(
    raw: &[u8],
    mut check: impl FnMut(u64, &[u8]) -> std::result::Result<(), E>,
) -> std::result::Result<Digest, E> {
    let mut hasher = Hasher::new();
    let mut offset = 0u64;
    for piece in raw.chunks(FRAME_RAW_MAX) {
        check(offset, piece)?;
        hasher.update(piece);
        offset += piece.len() as u64;
    }
    Ok(hasher.finish())
}

/// The digest of content checked and hashed on another thread, waited for: `None` when
/// that thread gave up or found a fault (see [`EncodedBlob::encode_hashed_elsewhere`]).
pub type HashedElsewhere = Box<dyn FnOnce() -> Option<Digest> + Send>;

/// Encoded frames on their way to a sink, in order.
struct OrderedSink<'s, 'f> {
    sink: Option<&'s mut (dyn Write + Send)>,
    /// The first frame not yet handed to the sink.
    next: usize,
    /// Each frame's encoded bytes (in its slot), once encoded.
    done: Vec<Option<&'f [u8]>>,
}

impl<'f> OrderedSink<'_, 'f> {
    /// Records frame `i`, and passes on every frame now in order: a frame finished
    /// early waits in its slot for the thread that finishes the one before it.
    fn finish(&mut self, i: usize, encoded: &'f [u8]) {
        self.done[i] = Some(encoded);
        while let Some(Some(frame)) = self.done.get(self.next) {
            if self.sink.is_none() {
                break;
            }
            write_or_drop(&mut self.sink, frame);
            self.next += 1;
        }
    }

    /// Writes to the sink, and drops the sink at its first error.
    fn write(&mut self, bytes: &[u8]) {
        write_or_drop(&mut self.sink, bytes);
    }
}

fn write_or_drop(sink: &mut Option<&mut (dyn Write + Send)>, bytes: &[u8]) {
    if let Some(w) = sink.as_mut() {
        if w.write_all(bytes).is_err() {
            *sink = None;
        }
    }
}

/// A repository: a backend plus the codec settings new blobs are written with.
#[derive(Clone, Debug)]
pub struct Repo {
    backend: Arc<dyn Backend>,
    compression: Compression,
    /// How messages name this repository (its URL, when the caller gives it).
    location: Arc<str>,
}

impl Repo {
    /// A repository over `backend`, writing new blobs with `compression`.
    pub fn new(backend: Arc<dyn Backend>, compression: Compression) -> Repo {
        Repo {
            backend,
            compression,
            location: Arc::from("this location"),
        }
    }

    /// Names the repository in messages (its URL): "file:///x holds no repository".
    pub fn with_location(mut self, location: impl Into<String>) -> Repo {
        self.location = Arc::from(location.into());
        self
    }

    /// How messages name this repository.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The backend underneath.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The repository's format, or `None` for an empty repository (nothing written yet).
    /// A format newer than this build's is an error: it must not be misread.
    pub async fn format(&self) -> Result<Option<u32>> {
        let key = catalog::repository_key();
        match self.backend.get(&key).await {
            Ok(bytes) => {
                let rec: RepositoryRecord = catalog::decode_record(&key, &bytes)?;
                if rec.format > REPOSITORY_FORMAT {
                    return Err(Error::UnsupportedFormat {
                        what: "repository".into(),
                        found: rec.format,
                        supported: REPOSITORY_FORMAT,
                    });
                }
                Ok(Some(rec.format))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The repository's format; [`Error::NoRepository`] when the location holds none.
    /// Every command but `init` calls this (or [`Repo::require_cluster`]) before it
    /// writes anything: only `init` creates a repository.
    pub async fn require_format(&self) -> Result<u32> {
        self.format().await?.ok_or_else(|| Error::NoRepository {
            location: self.location.to_string(),
        })
    }

    /// Checks the format, writing the marker first if the repository is empty. Creates a
    /// repository: only `tidemark init` calls this (and tests that set one up); every
    /// other path uses [`Repo::require_format`].
    pub async fn ensure_format(&self) -> Result<()> {
        if self.format().await?.is_some() {
            return Ok(());
        }
        let body = catalog::encode_record(&RepositoryRecord {
            format: REPOSITORY_FORMAT,
        });
        match self
            .backend
            .put(
                &catalog::repository_key(),
                Bytes::from(body),
                PutMode::Create,
            )
            .await
        {
            Ok(()) => Ok(()),
            // Someone else initialised it meanwhile: check what they wrote.
            Err(Error::AlreadyExists { .. }) => self.format().await.map(|_| ()),
            Err(e) => Err(e),
        }
    }

    /// Creates the 256 blob shard folders (`blobs/00` to `blobs/ff`) where they are
    /// missing, on stores that have folders: `init` calls it, so that no write into a new
    /// repository has to create one on its way.
    pub async fn lay_out_blob_folders(&self) -> Result<()> {
        let folders = (0..=255u8)
            .map(|b| format!("{}/{b:02x}", catalog::BLOBS_FOLDER))
            .collect();
        self.backend.create_folders(folders).await
    }

    /// The compression new blobs are written with.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Stores `raw` as a blob: hashes and compresses in parallel, then writes it unless a
    /// blob of the same content is already there.
    pub async fn put_blob(&self, raw: Bytes) -> Result<BlobPut> {
        let compression = self.compression;
        let encoded = tokio::task::spawn_blocking(move || EncodedBlob::encode(&raw, compression))
            .await
            .expect("blob encoding panicked");
        self.put_encoded(&encoded).await
    }

    /// Stores a blob encoded beforehand (see [`EncodedBlob::encode`]).
    pub async fn put_encoded(&self, blob: &EncodedBlob) -> Result<BlobPut> {
        let deduplicated = self
            .put_if_absent(&catalog::blob_key(&blob.digest), blob.stored())
            .await?;
        Ok(BlobPut {
            digest: blob.digest,
            raw_len: blob.raw_len,
            stored_len: blob.stored_len(),
            deduplicated,
        })
    }

    /// Stores the content of the file at `path` as a blob, streaming it in frames so that
    /// memory stays bounded whatever its size. `expected` is the digest a first pass over
    /// the file computed; the content is hashed again as it is sent, and a file that
    /// changed in between is refused (the upload is abandoned and nothing is visible).
    pub async fn put_blob_file(&self, path: &Path, expected: Digest) -> Result<BlobPut> {
        let key = catalog::blob_key(&expected);
        if self.backend.head(&key).await.is_ok() {
            let raw_len = std::fs::metadata(path)
                .map_err(|e| io_error("stat", path, e))?
                .len();
            return Ok(BlobPut {
                digest: expected,
                raw_len,
                stored_len: 0,
                deduplicated: true,
            });
        }
        let mut file = std::fs::File::open(path).map_err(|e| io_error("open", path, e))?;
        let raw_len = file
            .metadata()
            .map_err(|e| io_error("stat", path, e))?
            .len();
        let mut upload = self.backend.put_multipart(&key, PutMode::Create).await?;
        let mut part = Vec::with_capacity(PART_SIZE + FRAME_RAW_MAX);
        codec::encode_header(self.compression, raw_len, &mut part);
        let mut hasher = Hasher::new();
        let mut encoder = codec::FrameEncoder::new(self.compression);
        let mut frame = vec![0u8; FRAME_RAW_MAX];
        let mut stored_len = 0u64;
        let mut seen = 0u64;
        loop {
            let n = read_full(&mut file, &mut frame).map_err(|e| io_error("read", path, e))?;
            if n == 0 {
                break;
            }
            seen += n as u64;
            let (mut h, mut p, chunk, mut enc) = (hasher, part, frame, encoder);
            // Hash and compress off the async thread.
            let (h, p, chunk, enc) = tokio::task::spawn_blocking(move || {
                h.update(&chunk[..n]);
                enc.encode(&chunk[..n], &mut p);
                (h, p, chunk, enc)
            })
            .await
            .expect("frame encoding panicked");
            (hasher, part, frame, encoder) = (h, p, chunk, enc);
            if part.len() >= PART_SIZE {
                stored_len += part.len() as u64;
                let full =
                    std::mem::replace(&mut part, Vec::with_capacity(PART_SIZE + FRAME_RAW_MAX));
                if let Err(e) = upload.put_part(Bytes::from(full)).await {
                    let _ = upload.abort().await;
                    return Err(e);
                }
            }
        }
        let actual = hasher.finish();
        if actual != expected || seen != raw_len {
            let _ = upload.abort().await;
            return Err(Error::Io {
                op: "read",
                path: path.to_path_buf(),
                source: std::io::Error::other("the file changed while it was being archived"),
            });
        }
        stored_len += part.len() as u64;
        if !part.is_empty() {
            if let Err(e) = upload.put_part(Bytes::from(part)).await {
                let _ = upload.abort().await;
                return Err(e);
            }
        }
        match upload.complete().await {
            Ok(()) => Ok(BlobPut {
                digest: expected,
                raw_len,
                stored_len,
                deduplicated: false,
            }),
            Err(Error::AlreadyExists { .. }) => Ok(BlobPut {
                digest: expected,
                raw_len,
                stored_len,
                deduplicated: true,
            }),
            Err(e) => Err(e),
        }
    }

    /// Stores an encoded blob and then a record that refers to it, in one durable step:
    /// the record becomes visible only after the blob, and both are durable on return.
    /// Returns what the blob write did and whether the record was created.
    ///
    /// `staged`, from [`Repo::stage_blob`], holds the blob's stored body already written
    /// out (by [`EncodedBlob::encode_checked`]'s sink); it is published instead of
    /// writing the body again.
    pub async fn put_blob_then_record<T: Serialize>(
        &self,
        blob: &EncodedBlob,
        staged: Option<Staged>,
        key: &Key,
        record: &T,
    ) -> Result<(BlobPut, bool)> {
        let blob_key = catalog::blob_key(&blob.digest);
        let record = (key.clone(), Bytes::from(catalog::encode_record(record)));
        // A sink that failed midway took less than the whole body: write the bytes.
        let staged = staged.filter(|st| st.len() == blob.stored_len());
        let created = match staged {
            Some(staged) => {
                self.backend
                    .create_all_staged((blob_key, staged), vec![record])
                    .await?
            }
            None => {
                let items = vec![(blob_key, blob.stored()), record];
                self.backend.create_all(items).await?
            }
        };
        let put = BlobPut {
            digest: blob.digest,
            raw_len: blob.raw_len,
            stored_len: blob.stored_len(),
            deduplicated: !created[0],
        };
        Ok((put, created[1]))
    }

    /// A temporary file to stream a blob's stored body into while it is encoded, before
    /// its name (the digest) is known, for [`Repo::put_blob_then_record`]. Only local
    /// repositories that hold blobs already give one: opening it must change nothing
    /// (dropping it unused removes the file).
    pub fn stage_blob(&self) -> Option<Staged> {
        self.backend.stage(catalog::BLOBS_FOLDER)
    }

    /// Makes the existing folder the blob `digest` will be written into durable ahead of
    /// time (see [`Backend::settle_folder`]): archive-push does it once the hashing has
    /// named the blob, while compression goes on. Creates nothing.
    pub async fn settle_blob_folder(&self, digest: &Digest) -> Result<()> {
        let key = catalog::blob_key(digest);
        let folder = key
            .as_str()
            .rsplit_once('/')
            .map_or(catalog::BLOBS_FOLDER, |(folder, _)| folder);
        self.backend.settle_folder(folder).await
    }

    /// Makes the existing folders an index entry for `name` and its blob will be written
    /// into durable ahead of time (see [`Backend::settle_folder`]), so that archive-push can
    /// do it while it still encodes. Creates nothing.
    pub async fn settle_wal_folders(&self, stanza: &Stanza, name: &WalFileName) -> Result<()> {
        let entry_folder = catalog::wal_name_prefix(stanza, name);
        let entry_folder = entry_folder
            .rsplit_once('/')
            .map_or(entry_folder.as_str(), |(folder, _)| folder);
        let (entries, blobs) = tokio::join!(
            self.backend.settle_folder(entry_folder),
            self.backend.settle_folder(catalog::BLOBS_FOLDER)
        );
        entries.and(blobs)
    }

    /// The stored size of a blob, or `None` when it is absent.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.backend.head(&catalog::blob_key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Reads a blob, verified, into `sink`, in bounded memory. What reaches `sink` is not
    /// proven good until this returns `Ok`: write to a temporary place, publish after.
    pub async fn read_blob(&self, digest: &Digest, sink: &mut dyn Write) -> Result<u64> {
        let key = catalog::blob_key(digest);
        let size = self.backend.head(&key).await?.size;
        let mut decoder = BlobDecoder::new(key.clone(), *digest);
        let mut write = |piece: &[u8]| {
            sink.write_all(piece).map_err(|e| Error::Io {
                op: "write",
                path: "restored file".into(),
                source: e,
            })
        };
        if size <= PART_SIZE as u64 {
            let stored = self.backend.get(&key).await?;
            decoder.feed(&stored, &mut write)?;
        } else {
            let mut at = 0u64;
            while at < size {
                let end = (at + PART_SIZE as u64).min(size);
                let piece = self.backend.get_range(&key, at..end).await?;
                if piece.is_empty() {
                    return Err(Error::Corrupt {
                        key: key.clone(),
                        detail: format!("read stopped at {at} of {size} bytes"),
                    });
                }
                at += piece.len() as u64;
                decoder.feed(&piece, &mut write)?;
            }
        }
        decoder.finish()
    }

    /// Reads a small blob whole, verified.
    pub async fn get_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let key = catalog::blob_key(digest);
        let stored = self.backend.get(&key).await?;
        codec::decode(&key, *digest, &stored)
    }

    /// Writes a record with `Create`. Returns false when the key already held a record
    /// (left untouched).
    pub async fn put_record<T: Serialize>(&self, key: &Key, value: &T) -> Result<bool> {
        Ok(!self
            .put_if_absent(key, Bytes::from(catalog::encode_record(value)))
            .await?)
    }

    /// Reads and checks a record.
    pub async fn get_record<T: DeserializeOwned>(&self, key: &Key) -> Result<T> {
        let bytes = self.backend.get(key).await?;
        catalog::decode_record(key, &bytes)
    }

    /// `put` with `Create`; true when the key was already taken.
    async fn put_if_absent(&self, key: &Key, data: Bytes) -> Result<bool> {
        match self.backend.put(key, data, PutMode::Create).await {
            Ok(()) => Ok(false),
            Err(Error::AlreadyExists { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// The stanza's cluster record, if any. More than one record (two clusters' first
    /// pushes raced, or a store ignored a conditional write) is an error naming both.
    pub async fn cluster(&self, stanza: &Stanza) -> Result<Option<ClusterRecord>> {
        let listed = self.backend.list(&catalog::cluster_prefix(stanza)).await?;
        match listed.as_slice() {
            [] => Ok(None),
            [one] => self.get_record(&one.key).await.map(Some),
            many => Err(Error::Catalog {
                what: format!("stanza {:?}", stanza.as_str()),
                detail: format!(
                    "has {} cluster records ({}): only one cluster may archive into a stanza; remove the wrong one",
                    many.len(),
                    many.iter().map(|m| m.key.file_name()).collect::<Vec<_>>().join(", ")
                ),
            }),
        }
    }

    /// The stanza's cluster record, in a repository that exists: [`Error::NoRepository`]
    /// or [`Error::NoStanza`] otherwise. What every command but `init` checks first.
    pub async fn require_cluster(&self, stanza: &Stanza) -> Result<ClusterRecord> {
        self.require_format().await?;
        self.cluster(stanza).await?.ok_or_else(|| Error::NoStanza {
            stanza: stanza.to_string(),
            location: self.location.to_string(),
        })
    }

    /// Records `proposed` as the stanza's cluster if it has none; otherwise checks that it
    /// is the same cluster. Returns the record in force. Creates a stanza: only `tidemark
    /// init` calls this (and tests that set one up); every other path uses
    /// [`Repo::require_cluster`] and [`check_same_cluster`].
    pub async fn ensure_cluster(
        &self,
        stanza: &Stanza,
        proposed: &ClusterRecord,
    ) -> Result<ClusterRecord> {
        let existing = match self.cluster(stanza).await? {
            Some(existing) => existing,
            None => {
                self.put_record(&catalog::cluster_key(stanza, proposed.system_id), proposed)
                    .await?;
                // Read back: a concurrent init of another cluster shows up here.
                self.cluster(stanza).await?.ok_or_else(|| Error::Catalog {
                    what: format!("stanza {:?}", stanza.as_str()),
                    detail: "cluster record vanished right after it was written".into(),
                })?
            }
        };
        check_same_cluster(stanza, &existing, proposed)?;
        Ok(existing)
    }

    /// The digests archived under exactly `name` (normally zero or one; more is a conflict
    /// every reader must see).
    pub async fn wal_digests(&self, stanza: &Stanza, name: &WalFileName) -> Result<Vec<Digest>> {
        let listed = self
            .backend
            .list(&catalog::wal_name_prefix(stanza, name))
            .await?;
        let mut digests: Vec<Digest> = listed
            .iter()
            .filter_map(|m| catalog::parse_wal_key(&m.key))
            .filter(|(n, _)| n == name)
            .map(|(_, d)| d)
            .collect();
        digests.sort();
        digests.dedup();
        Ok(digests)
    }

    /// Where `name` stands in the index: what is indexed under it and, when nothing is,
    /// what its claim names.
    pub async fn wal_name_state(
        &self,
        stanza: &Stanza,
        name: &WalFileName,
    ) -> Result<WalNameState> {
        let listed = self
            .backend
            .list(&catalog::wal_name_prefix(stanza, name))
            .await?;
        let claim_key = catalog::wal_claim_key(stanza, name);
        let mut indexed: Vec<Digest> = listed
            .iter()
            .filter_map(|m| catalog::parse_wal_key(&m.key))
            .filter(|(n, _)| n == name)
            .map(|(_, d)| d)
            .collect();
        indexed.sort();
        indexed.dedup();
        // The entries are the truth: a claim matters only while nothing is indexed (a
        // push between its claim and its entry, or one that stopped there).
        let claimed = if indexed.is_empty() && listed.iter().any(|m| m.key == claim_key) {
            self.wal_claim(stanza, name).await?
        } else {
            None
        };
        Ok(WalNameState { indexed, claimed })
    }

    /// The digest `name`'s claim gives it, if it has a claim.
    async fn wal_claim(&self, stanza: &Stanza, name: &WalFileName) -> Result<Option<Digest>> {
        let key = catalog::wal_claim_key(stanza, name);
        match self.get_record::<WalRecord>(&key).await {
            // A claim whose digest is not one fails to decode: `WalRecord::digest` is a
            // `Digest`.
            Ok(record) => Ok(Some(record.digest)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Gives `name` the content `digest` (whose blob is durable already), the way
    /// archive-push does: creates the name's claim holding `record` (create-only), reads
    /// it back, then creates the index entry and lists the name again.
    ///
    /// The claim's key carries no digest, so where the store's create is exclusive (a
    /// local folder's `link`, S3's `If-None-Match`) exactly one of several concurrent
    /// contents creates it, and only that one is ever indexed: the others get
    /// [`WalCommit::Taken`] with nothing of theirs in the index. Where the store does not
    /// honour the condition, or checks and writes in two steps (s3s-fs), the read-back
    /// catches a claim replaced before it; a push that indexed its content and then finds
    /// another indexed too settles it by the claim as it ends up: the push whose content
    /// the claim names waits (up to [`WAL_SETTLE`]) for the others to remove their own
    /// entries, which they do once they read the claim naming another content twice in a
    /// row. `docs/repository-format.md` says what that does and does not guarantee.
    pub async fn commit_wal(
        &self,
        stanza: &Stanza,
        name: &WalFileName,
        digest: &Digest,
        record: &WalRecord,
    ) -> Result<WalCommit> {
        let claim_key = catalog::wal_claim_key(stanza, name);
        // Created now, or already there (our own content's earlier push, or another's):
        // either way the claim as stored decides.
        self.put_record(&claim_key, record).await?;
        self.commit_claimed_wal(stanza, name, digest, record).await
    }

    /// [`Repo::commit_wal`] once the claim has been written (or found), e.g. together
    /// with the blob by [`Repo::put_blob_then_record`].
    pub async fn commit_claimed_wal(
        &self,
        stanza: &Stanza,
        name: &WalFileName,
        digest: &Digest,
        record: &WalRecord,
    ) -> Result<WalCommit> {
        match self.wal_claim(stanza, name).await? {
            Some(claimed) if claimed == *digest => {}
            Some(claimed) => {
                let indexed = self.wal_digests(stanza, name).await?;
                return Ok(WalCommit::Taken {
                    claimed: indexed.is_empty().then_some(claimed),
                    indexed,
                });
            }
            None => {
                return Err(Error::Catalog {
                    what: format!("{name}"),
                    detail: format!(
                        "its claim {} vanished right after it was written",
                        catalog::wal_claim_key(stanza, name)
                    ),
                })
            }
        }
        let created = self
            .put_record(&catalog::wal_key(stanza, name, digest), record)
            .await?;
        self.settle_wal(stanza, name, digest, created).await
    }

    /// archive-push's whole write of one WAL file's content: the blob (when given; a
    /// streamed blob is stored beforehand), the name's claim holding `record`, and the
    /// index entry, deciding between concurrent contents as [`Repo::commit_wal`] does.
    ///
    /// Where the store's create is exclusive ([`Backend::create_is_exclusive`]: a local
    /// folder), the three are created in one round ([`Backend::create_chain`], gated on
    /// the claim): a claim this call creates gives the name to this content alone, so the
    /// entry is linked right after it, and their fsyncs are one round; the claim is not
    /// read back, and the name is listed once. A claim found there already (this
    /// content's earlier push, or another content's) stops the chain before the entry,
    /// and the claim is read back as elsewhere. Elsewhere, blob and claim are created
    /// together and then [`Repo::commit_claimed_wal`] reads the claim back.
    pub async fn put_wal(
        &self,
        stanza: &Stanza,
        name: &WalFileName,
        blob: Option<(&EncodedBlob, Option<Staged>)>,
        record: &WalRecord,
    ) -> Result<(Option<BlobPut>, WalCommit)> {
        let digest = record.digest;
        let claim_key = catalog::wal_claim_key(stanza, name);
        let (blob, staged) = match blob {
            Some((blob, staged)) => (Some(blob), staged),
            None => (None, None),
        };
        if !self.backend.create_is_exclusive() {
            let put = match blob {
                Some(blob) => Some(
                    self.put_blob_then_record(blob, staged, &claim_key, record)
                        .await?
                        .0,
                ),
                None => {
                    self.put_record(&claim_key, record).await?;
                    None
                }
            };
            let commit = self
                .commit_claimed_wal(stanza, name, &digest, record)
                .await?;
            return Ok((put, commit));
        }
        let encoded = Bytes::from(catalog::encode_record(record));
        let mut items = Vec::with_capacity(3);
        let mut first = None;
        if let Some(blob) = blob {
            let blob_key = catalog::blob_key(&blob.digest);
            // A sink that failed midway took less than the whole body: write the bytes.
            match staged.filter(|st| st.len() == blob.stored_len()) {
                Some(staged) => first = Some((blob_key, staged)),
                None => items.push((blob_key, blob.stored())),
            }
        }
        let gate = usize::from(blob.is_some());
        items.push((claim_key, encoded.clone()));
        items.push((catalog::wal_key(stanza, name, &digest), encoded));
        let created = self.backend.create_chain(first, items, gate).await?;
        let put = blob.map(|blob| BlobPut {
            digest: blob.digest,
            raw_len: blob.raw_len,
            stored_len: blob.stored_len(),
            deduplicated: created[0] != Some(true),
        });
        let commit = if created[gate] == Some(true) {
            let entry_created = created[gate + 1] == Some(true);
            if self.wal_digests(stanza, name).await? == [digest] {
                WalCommit::Indexed {
                    created: entry_created,
                }
            } else {
                // Another content indexed without a claim (a build from before claims,
                // which the format forbids): settled as on any store.
                self.settle_wal(stanza, name, &digest, entry_created)
                    .await?
            }
        } else {
            self.commit_claimed_wal(stanza, name, &digest, record)
                .await?
        };
        Ok((put, commit))
    }

    /// The end of [`Repo::commit_claimed_wal`], once this content's entry is written
    /// (`created`: by this call): lists the name until this content is its only entry,
    /// or backs off as the claim decides.
    async fn settle_wal(
        &self,
        stanza: &Stanza,
        name: &WalFileName,
        digest: &Digest,
        created: bool,
    ) -> Result<WalCommit> {
        // Where the store's create is exclusive, this content is the only one indexed:
        // the first round finds it alone and claimed. Otherwise another content may have
        // got past its claim too, and the claim as it ends up decides: the other push
        // backs off, removing its own entry. An entry is removed only by the push that
        // created it, once the claim names another content in two reads in a row.
        let deadline = tokio::time::Instant::now() + WAL_SETTLE;
        let mut not_ours = 0;
        let claimed = loop {
            let indexed = self.wal_digests(stanza, name).await?;
            let claimed = self.wal_claim(stanza, name).await?;
            if claimed == Some(*digest) {
                not_ours = 0;
                if indexed.as_slice() == [*digest] {
                    return Ok(WalCommit::Indexed { created });
                }
                // Others indexed under a claim that is ours: they back off, unless one
                // was acknowledged before a late claim replaced its own (then ours goes).
                if tokio::time::Instant::now() >= deadline {
                    break claimed;
                }
            } else {
                not_ours += 1;
                if not_ours >= 2 {
                    break claimed;
                }
            }
            tokio::time::sleep(WAL_SETTLE_POLL).await;
        };
        if created {
            self.backend
                .delete(&catalog::wal_key(stanza, name, digest))
                .await?;
        }
        let indexed = self.wal_digests(stanza, name).await?;
        if indexed.contains(digest) {
            // Created by a push of the same content, which backs off the same way.
            return Ok(WalCommit::Ambiguous(indexed));
        }
        Ok(WalCommit::Taken {
            claimed: claimed.filter(|c| indexed.is_empty() && c != digest),
            indexed,
        })
    }

    /// Every WAL index entry of a stanza, in key order.
    pub async fn wal_index(
        &self,
        stanza: &Stanza,
    ) -> Result<Vec<(WalFileName, Digest, ObjectMeta)>> {
        let listed = self.backend.list(&catalog::wal_prefix(stanza)).await?;
        Ok(listed
            .into_iter()
            .filter_map(|m| catalog::parse_wal_key(&m.key).map(|(n, d)| (n, d, m)))
            .collect())
    }

    /// Every WAL index entry of a stanza with its record and content summary, in key
    /// order: one listing, then the records read concurrently; a sidecar written by
    /// `reindex` supplies the content of an entry archived without one. An entry removed
    /// between the listing and its read is left out. A record or sidecar that cannot be
    /// read fails the whole call (the planner must not plan over a catalog it cannot
    /// read); a content summary this build cannot read (a newer format) is left `None`
    /// and named in [`IndexedWal::content_error`].
    pub async fn wal_catalog(&self, stanza: &Stanza) -> Result<Vec<IndexedWal>> {
        self.wal_catalog_entries(stanza)
            .await?
            .into_iter()
            .map(|entry| entry.map_err(|(_, e)| e))
            .collect()
    }

    /// [`Repo::wal_catalog`], entry by entry: an index record or sidecar that cannot be
    /// read is returned in place of its entry, with its file name (`verify` names each),
    /// instead of failing the call. Fails only when the listing or a read fails for
    /// another reason (the store is unreachable, …).
    pub async fn wal_catalog_entries(
        &self,
        stanza: &Stanza,
    ) -> Result<Vec<std::result::Result<IndexedWal, (WalFileName, Error)>>> {
        self.wal_catalog_entries_reusing(stanza, Vec::new()).await
    }

    /// [`Repo::wal_catalog`] for a caller that read it before (the agent's status, every
    /// few seconds): one listing, and only the entries `previous` does not hold are read.
    /// Index entries are immutable, so a listed entry found in `previous` is taken from
    /// there, unless it had no content summary and a `reindex` sidecar appeared since;
    /// entries no longer listed (expired) are left out.
    pub async fn wal_catalog_reusing(
        &self,
        stanza: &Stanza,
        previous: Vec<IndexedWal>,
    ) -> Result<Vec<IndexedWal>> {
        self.wal_catalog_entries_reusing(stanza, previous)
            .await?
            .into_iter()
            .map(|entry| entry.map_err(|(_, e)| e))
            .collect()
    }

    async fn wal_catalog_entries_reusing(
        &self,
        stanza: &Stanza,
        previous: Vec<IndexedWal>,
    ) -> Result<Vec<std::result::Result<IndexedWal, (WalFileName, Error)>>> {
        use futures::{StreamExt, TryStreamExt};
        let mut known: std::collections::HashMap<(WalFileName, Digest), IndexedWal> = previous
            .into_iter()
            .map(|e| ((e.name, e.digest), e))
            .collect();
        let listed = self.backend.list(&catalog::wal_prefix(stanza)).await?;
        let sidecars: std::collections::BTreeSet<(WalFileName, Digest)> = listed
            .iter()
            .filter_map(|m| crate::wal_content::parse_wal_content_key(&m.key))
            .collect();
        // Each listed entry with the earlier read of it, when that can stand.
        let entries: Vec<(WalFileName, Digest, Key, Option<IndexedWal>)> = listed
            .iter()
            .filter_map(|m| catalog::parse_wal_key(&m.key).map(|(n, d)| (n, d, m.key.clone())))
            .map(|(name, digest, key)| {
                let sidecar = sidecars.contains(&(name, digest));
                let reusable = known
                    .remove(&(name, digest))
                    .filter(|e| e.content.is_some() || e.content_error.is_some() || !sidecar);
                (name, digest, key, reusable)
            })
            .collect();
        let read: Vec<Option<std::result::Result<IndexedWal, (WalFileName, Error)>>> =
            futures::stream::iter(entries)
                .map(|(name, digest, key, reusable)| {
                    let sidecar = sidecars.contains(&(name, digest));
                    async move {
                        if let Some(entry) = reusable {
                            return Ok(Some(Ok(entry)));
                        }
                        let damaged = |e: Error| {
                            if e.is_unreadable_record() {
                                Ok(Some(Err((name, e))))
                            } else {
                                Err(e)
                            }
                        };
                        let record: WalRecord = match self.get_record(&key).await {
                            Err(e) if e.is_not_found() => return Ok(None),
                            Err(e) => return damaged(e),
                            Ok(record) => record,
                        };
                        let mut content = record.content.clone();
                        if content.is_none() && sidecar {
                            let key = crate::wal_content::wal_content_key(stanza, &name, &digest);
                            content = match self.get_record(&key).await {
                                Err(e) if e.is_not_found() => None,
                                Err(e) => return damaged(e),
                                Ok(content) => Some(content),
                            };
                        }
                        let (content, content_error) = match content.map(|c| c.to_summary()) {
                            None => (None, None),
                            Some(Ok(summary)) => (Some(summary), None),
                            Some(Err(error)) => (None, Some(error)),
                        };
                        Ok(Some(Ok(IndexedWal {
                            name,
                            digest,
                            record,
                            content,
                            content_error,
                        })))
                    }
                })
                .buffered(32)
                .try_collect()
                .await?;
        Ok(read.into_iter().flatten().collect())
    }

    /// Writes a WAL index record alone, without the name's claim (tools and tests):
    /// archive-push goes through [`Repo::commit_wal`], which decides between concurrent
    /// contents. Returns false when the identical entry already existed.
    pub async fn put_wal_record(
        &self,
        stanza: &Stanza,
        name: &WalFileName,
        digest: &Digest,
        record: &WalRecord,
    ) -> Result<bool> {
        self.put_record(&catalog::wal_key(stanza, name, digest), record)
            .await
    }
}

/// How long a push whose content a name's claim names waits for other contents indexed
/// under that name (on a store whose create is not exclusive) to be removed by their
/// pushes, before it gives up itself.
pub const WAL_SETTLE: std::time::Duration = std::time::Duration::from_secs(10);
/// The pause between two looks at such a name.
const WAL_SETTLE_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Where one WAL file name stands, for archive-push ([`Repo::wal_name_state`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalNameState {
    /// The digests indexed under exactly this name, sorted: normally none or one (more
    /// is a conflict every reader refuses).
    pub indexed: Vec<Digest>,
    /// The digest the name's claim gives it, read only when nothing is indexed.
    pub claimed: Option<Digest>,
}

/// How [`Repo::commit_wal`] ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalCommit {
    /// This content is the name's one index entry: every reader hands it back.
    Indexed {
        /// True when this call wrote the entry (false: a push of the same content had).
        created: bool,
    },
    /// Other content has the name; nothing of this content was indexed.
    Taken {
        /// What is indexed under the name (what readers hand back).
        indexed: Vec<Digest>,
        /// When nothing is indexed yet: the content whose push claimed the name and has
        /// not written its entry (it is at work, or stopped and will be retried).
        claimed: Option<Digest>,
    },
    /// Several contents are indexed under the name, this one among them: possible only
    /// on a store whose create is not exclusive. Every reader refuses the name.
    Ambiguous(Vec<Digest>),
}

/// Base backups.
impl Repo {
    /// Writes a backup's record, last, after every blob it names is durable, under
    /// `backups/<id>.<digest of its bytes>` ([`backup::backup_record_key`]). When another
    /// record already holds the id, returns `AlreadyExists` and writes nothing (the caller
    /// takes the next id). Writing the same record again (a retry after a lost answer)
    /// succeeds without a second copy.
    ///
    /// Safe without conditional writes: the key depends on the content, so nothing is ever
    /// replaced. Two backups that check the id at the same moment both write; each then
    /// lists the id again, and one that sees another record under it removes its own
    /// (never acknowledged) and returns `AlreadyExists`. Both may yield (each then tries
    /// the next id); a record is never acknowledged while another one shares its id, unless
    /// a writer was killed between its write and its removal (readers then refuse the id:
    /// see [`Repo::backup`]).
    pub async fn put_backup(&self, stanza: &Stanza, record: &BackupRecord) -> Result<()> {
        let body = Bytes::from(catalog::encode_record_as(
            record,
            catalog::BACKUP_RECORD_FORMAT,
        ));
        let key =
            backup::backup_record_key(stanza, &record.id, &Digest::of(&body)).ok_or_else(|| {
                Error::Catalog {
                    what: format!("backup {:?}", record.id),
                    detail: "not a valid backup id".into(),
                }
            })?;
        let holders = self.backup_keys(stanza, &record.id).await?;
        if let Some(other) = holders.iter().find(|k| **k != key) {
            return Err(Error::AlreadyExists { key: other.clone() });
        }
        if holders.is_empty() {
            // Taken meanwhile by the same key: the same bytes, by construction.
            self.put_if_absent(&key, body).await?;
        }
        let holders = self.backup_keys(stanza, &record.id).await?;
        if let Some(other) = holders.iter().find(|k| **k != key) {
            // A concurrent backup chose the same id: ours was never acknowledged, so it
            // goes, and the caller takes the next id.
            self.backend.delete(&key).await?;
            return Err(Error::AlreadyExists { key: other.clone() });
        }
        if !holders.contains(&key) {
            return Err(Error::Catalog {
                what: format!("backup {:?}", record.id),
                detail: format!("{key} is not listed right after it was written"),
            });
        }
        Ok(())
    }

    /// The keys of the records that hold backup id `id` (normally zero or one), whether
    /// written with their digest or, before that, as `backups/<id>`.
    pub async fn backup_keys(&self, stanza: &Stanza, id: &str) -> Result<Vec<Key>> {
        let Some(old) = backup::backup_key(stanza, id) else {
            return Ok(Vec::new());
        };
        let listed = self.backend.list(old.as_str()).await?;
        Ok(listed
            .into_iter()
            .map(|m| m.key)
            .filter(|k| backup::parse_backup_key(k).is_some_and(|(i, _)| i == id))
            .collect())
    }

    /// A stanza's backups: the readable records oldest first, and apart the records that
    /// cannot be read (see [`Backups`]). Fails only when the listing or a read fails for
    /// another reason than the record itself (the store is unreachable, …).
    pub async fn backups(&self, stanza: &Stanza) -> Result<Backups> {
        let listed = self.backend.list(&backup::backups_prefix(stanza)).await?;
        use futures::{StreamExt, TryStreamExt};
        let read: Vec<(Key, Option<Result<BackupRecord>>)> = futures::stream::iter(&listed)
            .map(|m| async move {
                match self.get_record::<BackupRecord>(&m.key).await {
                    // Removed between the listing and the read: not a backup any more.
                    Err(e) if e.is_not_found() => Ok((m.key.clone(), None)),
                    Err(e) if damages_record(&e) => Ok((m.key.clone(), Some(Err(e)))),
                    Err(e) => Err(e),
                    Ok(record) => Ok((m.key.clone(), Some(Ok(record)))),
                }
            })
            .buffered(16)
            .try_collect()
            .await?;
        let mut out = Backups::default();
        for (key, read) in read {
            match read {
                Some(Ok(record)) => out.records.push(record),
                Some(Err(error)) => out.damaged.push(DamagedBackup {
                    // The id a person uses for it: the key's name without the digest.
                    id: backup::parse_backup_key(&key)
                        .map_or(key.file_name(), |(id, _)| id)
                        .to_string(),
                    key,
                    error,
                }),
                None => {}
            }
        }
        out.records
            .sort_by(|a, b| (a.start_time, &a.id).cmp(&(b.start_time, &b.id)));
        out.damaged.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One backup by id; `Ok(None)` when the stanza has no backup of that id. Two records
    /// under one id (a backup killed while yielding the id to a concurrent one, on a store
    /// without conditional writes) is an error naming both: which one was acknowledged
    /// cannot be told from the repository.
    pub async fn backup(&self, stanza: &Stanza, id: &str) -> Result<Option<BackupRecord>> {
        let keys = self.backup_keys(stanza, id).await?;
        match keys.as_slice() {
            [] => Ok(None),
            [one] => self.get_record(one).await.map(Some),
            many => Err(Error::Catalog {
                what: format!("backup {id:?}"),
                detail: format!(
                    "has {} records ({}): remove the one that is not wanted",
                    many.len(),
                    many.iter()
                        .map(|k| k.file_name())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }),
        }
    }

    /// A backup's file list (its pages' digests and the server's manifest), verified.
    pub async fn backup_files(&self, record: &BackupRecord) -> Result<FileList> {
        let mut bytes = Vec::new();
        self.read_blob(&record.file_list, &mut bytes).await?;
        FileList::from_bytes(&record.file_list, &bytes)
    }

    /// One page of a file list, verified.
    pub async fn file_list_page(&self, digest: &Digest) -> Result<FileListPage> {
        let mut bytes = Vec::new();
        self.read_blob(digest, &mut bytes).await?;
        FileListPage::from_bytes(digest, &bytes)
    }

    /// Stores `content` (held in memory) as chunks of `chunk_size` (the backup's,
    /// [`backup::CHUNK_SIZE`]); returns them and the stored bytes this added.
    pub async fn put_chunked(&self, content: &[u8], chunk_size: u64) -> Result<(Chunked, u64)> {
        let mut chunked = Chunked {
            size: content.len() as u64,
            chunks: Vec::new(),
        };
        let mut added = 0;
        for piece in content.chunks(chunk_size.max(1) as usize) {
            let put = self.put_blob(Bytes::copy_from_slice(piece)).await?;
            added += put.added();
            chunked.chunks.push(put.digest);
        }
        Ok((chunked, added))
    }

    /// Stores a whole file list held in memory (tools and tests; a backup writes its
    /// pages as it goes, with a [`FileListWriter`]): pages closed at `page_limit` bytes,
    /// the manifest as chunks of `chunk_size`. Returns the list's blob and the stored
    /// bytes this added.
    pub async fn put_file_list(
        &self,
        entries: &[FileEntry],
        pg_manifest: &[u8],
        chunk_size: u64,
        page_limit: usize,
    ) -> Result<(BlobPut, u64)> {
        let mut writer = FileListWriter::new(self.clone(), page_limit);
        for entry in entries {
            writer.push(entry).await?;
        }
        let (pg_manifest, manifest_added) = self.put_chunked(pg_manifest, chunk_size).await?;
        let (put, added) = writer.finish(pg_manifest).await?;
        Ok((put, added + manifest_added))
    }
}

/// One WAL index entry as [`Repo::wal_catalog`] reads it.
#[derive(Clone, Debug)]
pub struct IndexedWal {
    /// The file name.
    pub name: WalFileName,
    /// Its content's digest.
    pub digest: Digest,
    /// The index record.
    pub record: WalRecord,
    /// What the segment holds for the planner: from the record, else from the sidecar
    /// `reindex` wrote; `None` when neither has it (archived before the index, or not a
    /// segment).
    pub content: Option<crate::pg::wal::SegmentSummary>,
    /// Why a content summary that is there could not be read (a newer format).
    pub content_error: Option<String>,
}

/// A stanza's backup records as [`Repo::backups`] finds them.
#[derive(Debug, Default)]
pub struct Backups {
    /// The readable records, oldest first.
    pub records: Vec<BackupRecord>,
    /// The records that cannot be read (damaged, or written by a newer tidemark), by id:
    /// the newest-backup choice and the backup's deduplication skip them, with a warning
    /// naming each; `info` lists them; only a restore of that very backup fails.
    pub damaged: Vec<DamagedBackup>,
}

impl Backups {
    /// The newest readable backup.
    pub fn newest(&self) -> Option<&BackupRecord> {
        self.records.last()
    }
}

/// A backup record that cannot be read.
#[derive(Debug)]
pub struct DamagedBackup {
    /// The backup's id (the record's key's last part).
    pub id: String,
    /// The record's key.
    pub key: Key,
    /// Why it cannot be read.
    pub error: Error,
}

/// Whether `e`, reading a record, is about the record itself (its bytes or its format)
/// rather than about reaching it.
fn damages_record(e: &Error) -> bool {
    e.is_unreadable_record()
}

/// Stores a file list as its entries arrive: each page once it fills, the last page and
/// the list itself at [`FileListWriter::finish`]. Memory: one page and the pages' digests.
#[derive(Debug)]
pub struct FileListWriter {
    repo: Repo,
    pages: FileListPages,
    digests: Vec<Digest>,
    added: u64,
}

impl FileListWriter {
    /// A writer into `repo` whose pages close at `page_limit` bytes
    /// ([`backup::PAGE_BYTES`] outside tests).
    pub fn new(repo: Repo, page_limit: usize) -> FileListWriter {
        FileListWriter {
            repo,
            pages: FileListPages::new(page_limit),
            digests: Vec::new(),
            added: 0,
        }
    }

    /// Adds the next entry, storing the page it fills.
    pub async fn push(&mut self, entry: &FileEntry) -> Result<()> {
        match self.pages.push(entry) {
            Some(page) => self.store(page).await,
            None => Ok(()),
        }
    }

    /// Stores the last page and the list, with `pg_manifest` (stored beforehand). Returns
    /// the list's blob and the stored bytes the pages and the list added.
    pub async fn finish(mut self, pg_manifest: Chunked) -> Result<(BlobPut, u64)> {
        if let Some(page) = self.pages.finish() {
            self.store(page).await?;
        }
        let list = FileList {
            format: backup::FILE_LIST_FORMAT,
            pages: self.digests,
            entries: self.pages.entries(),
            pg_manifest,
        };
        let put = self.repo.put_blob(list.to_bytes().into()).await?;
        Ok((put, self.added + put.added()))
    }

    async fn store(&mut self, page: Vec<u8>) -> Result<()> {
        let put = self.repo.put_blob(page.into()).await?;
        self.added += put.added();
        self.digests.push(put.digest);
        Ok(())
    }
}

/// Checks that `proposed` (from a WAL file or a server) is the cluster `existing` records
/// for `stanza`: the same system identifier, PostgreSQL major version and segment size.
pub fn check_same_cluster(
    stanza: &Stanza,
    existing: &ClusterRecord,
    proposed: &ClusterRecord,
) -> Result<()> {
    if existing.system_id != proposed.system_id {
        return Err(Error::ClusterMismatch {
            stanza: stanza.to_string(),
            expected: existing.system_id.to_string(),
            found: proposed.system_id.to_string(),
        });
    }
    if existing.wal_segment_size != proposed.wal_segment_size
        || existing.pg_major != proposed.pg_major
    {
        return Err(Error::ClusterDiffers {
            stanza: stanza.to_string(),
            detail: format!(
                "records PostgreSQL {} with {} WAL segments, this is PostgreSQL {} with {} segments",
                existing.pg_major,
                segment_size_text(existing.wal_segment_size),
                proposed.pg_major,
                segment_size_text(proposed.wal_segment_size)
            ),
        });
    }
    Ok(())
}

/// A WAL segment size as people write it: "16 MiB", or the bytes when it is not whole MiB.
fn segment_size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes}-byte")
    }
}

/// A record's "now", in one place so that tests can reason about it.
pub fn now() -> chrono::DateTime<Utc> {
    Utc::now()
}

fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::pg::SystemId;

    fn repo() -> (tempfile::TempDir, Repo) {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(LocalBackend::new(dir.path().join("repo")).unwrap());
        (dir, Repo::new(backend, Compression::Lz4))
    }

    fn content(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed;
        (0..len)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 3 == 0 {
                    (x >> 16) as u8
                } else {
                    0
                }
            })
            .collect()
    }

    #[tokio::test]
    async fn blobs_dedup_and_read_back_verified() {
        let (_d, repo) = repo();
        let raw = content(3 << 20, 1);
        let first = repo.put_blob(Bytes::from(raw.clone())).await.unwrap();
        assert!(!first.deduplicated);
        assert!(first.stored_len < raw.len() as u64);
        let again = repo.put_blob(Bytes::from(raw.clone())).await.unwrap();
        assert!(again.deduplicated);
        assert_eq!(again.digest, first.digest);
        let mut out = Vec::new();
        assert_eq!(
            repo.read_blob(&first.digest, &mut out).await.unwrap(),
            raw.len() as u64
        );
        assert_eq!(out, raw);
        assert_eq!(repo.get_blob(&first.digest).await.unwrap(), raw);
    }

    #[test]
    fn parallel_encoding_matches_the_plain_codec() {
        for len in [0usize, 5, FRAME_RAW_MAX, 7 * FRAME_RAW_MAX + 3] {
            let raw = content(len, 9);
            let blob = EncodedBlob::encode(&raw, Compression::Lz4);
            assert_eq!(blob.digest, Digest::of(&raw));
            assert_eq!(
                &blob.stored()[..],
                &codec::encode(Compression::Lz4, &raw)[..],
                "len {len}"
            );
        }
    }

    #[test]
    fn checked_encoding_sees_every_piece_in_order_and_streams_the_body() {
        let raw = content(5 * FRAME_RAW_MAX + 77, 4);
        let mut seen = Vec::new();
        let mut sink = Vec::new();
        let blob = EncodedBlob::encode_checked(
            &raw,
            Compression::Lz4,
            |offset, piece| {
                seen.push((offset, piece.len()));
                Ok::<(), ()>(())
            },
            Some(&mut sink),
        )
        .unwrap();
        let expected: Vec<(u64, usize)> = raw
            .chunks(FRAME_RAW_MAX)
            .enumerate()
            .map(|(i, c)| ((i * FRAME_RAW_MAX) as u64, c.len()))
            .collect();
        assert_eq!(seen, expected);
        assert_eq!(sink, &codec::encode(Compression::Lz4, &raw)[..]);
        assert_eq!(&blob.stored()[..], &sink[..]);
        assert_eq!(blob.stored_len(), sink.len() as u64);
    }

    #[test]
    fn a_digest_hashed_elsewhere_is_used_and_the_body_is_the_same() {
        let raw = content(5 * FRAME_RAW_MAX + 77, 6);
        let mut checked = 0;
        let mut sink = Vec::new();
        let mut told = None;
        let digest = Digest::of(&raw);
        let blob = EncodedBlob::encode_hashed_elsewhere(
            &raw,
            Compression::Lz4,
            Some(Box::new(move || Some(digest))),
            |_, _| {
                checked += 1;
                Ok::<(), ()>(())
            },
            Some(&mut sink),
            |d: &Digest| told = Some(*d),
        )
        .unwrap();
        assert_eq!(checked, 0, "checked where it was hashed");
        assert_eq!(blob.digest, digest);
        assert_eq!(told, Some(digest));
        assert_eq!(sink, &codec::encode(Compression::Lz4, &raw)[..]);
        assert_eq!(&blob.stored()[..], &sink[..]);
    }

    #[test]
    fn when_the_other_hashing_gives_up_the_content_is_checked_and_hashed_here() {
        let raw = content(4 * FRAME_RAW_MAX, 7);
        let mut checked = 0;
        let blob = EncodedBlob::encode_hashed_elsewhere(
            &raw,
            Compression::Lz4,
            Some(Box::new(|| None)),
            |_, _| {
                checked += 1;
                Ok::<(), ()>(())
            },
            None,
            |_: &Digest| {},
        )
        .unwrap();
        assert_eq!(checked, 4);
        assert_eq!(blob.digest, Digest::of(&raw));
        // And a refused piece is reported as without it.
        let refused = EncodedBlob::encode_hashed_elsewhere(
            &raw,
            Compression::Lz4,
            Some(Box::new(|| None)),
            |offset, _| match offset {
                0 => Ok(()),
                _ => Err(format!("bad piece at {offset}")),
            },
            None,
            |_: &Digest| {},
        );
        assert_eq!(
            refused.unwrap_err(),
            format!("bad piece at {FRAME_RAW_MAX}")
        );
    }

    #[test]
    fn a_refused_piece_stops_the_encoding_with_its_error() {
        let raw = content(6 * FRAME_RAW_MAX, 5);
        let mut checked = 0;
        let result = EncodedBlob::encode_checked(
            &raw,
            Compression::Lz4,
            |offset, _| {
                checked += 1;
                if offset == 2 * FRAME_RAW_MAX as u64 {
                    Err(format!("bad piece at {offset}"))
                } else {
                    Ok(())
                }
            },
            None,
        );
        assert_eq!(
            result.unwrap_err(),
            format!("bad piece at {}", 2 * FRAME_RAW_MAX)
        );
        assert_eq!(checked, 3, "nothing is checked after the refused piece");
    }

    #[test]
    fn a_failing_sink_is_dropped_and_the_blob_is_still_whole() {
        /// Takes `room` bytes, then fails.
        struct Full {
            room: usize,
            took: usize,
        }
        impl Write for Full {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if self.took + buf.len() > self.room {
                    return Err(std::io::Error::other("no space left"));
                }
                self.took += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let raw = content(4 * FRAME_RAW_MAX, 6);
        let mut sink = Full {
            room: 100_000,
            took: 0,
        };
        let blob = EncodedBlob::encode_checked(
            &raw,
            Compression::Lz4,
            |_, _| Ok::<(), ()>(()),
            Some(&mut sink),
        )
        .unwrap();
        assert!(sink.took < blob.stored_len() as usize);
        assert_eq!(
            &blob.stored()[..],
            &codec::encode(Compression::Lz4, &raw)[..]
        );
    }

    #[tokio::test]
    async fn a_staged_body_is_published_under_its_digest_with_its_record() {
        let (dir, repo) = repo();
        let root = dir.path().join("repo");
        // No blob folder yet: staging must not create one.
        assert!(repo.stage_blob().is_none());
        assert!(!root.exists());

        let first = repo.put_blob(Bytes::from(content(1000, 7))).await.unwrap();
        let raw = content(3 * FRAME_RAW_MAX + 5, 8);
        let mut staged = repo
            .stage_blob()
            .expect("a local repository with blobs stages");
        let blob = EncodedBlob::encode_checked(
            &raw,
            Compression::Lz4,
            |_, _| Ok::<(), ()>(()),
            Some(&mut staged),
        )
        .unwrap();
        let key = Key::new("stanzas/main/wal/x/record").unwrap();
        let record = RepositoryRecord { format: 1 };
        let (put, record_created) = repo
            .put_blob_then_record(&blob, Some(staged), &key, &record)
            .await
            .unwrap();
        assert!(!put.deduplicated && record_created);
        assert_eq!(repo.get_blob(&blob.digest).await.unwrap(), raw);
        assert_eq!(
            std::fs::read(root.join(catalog::blob_key(&blob.digest).as_str())).unwrap(),
            &blob.stored()[..]
        );
        let temporaries = || {
            std::fs::read_dir(root.join(catalog::BLOBS_FOLDER))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with('.'))
                .collect::<Vec<_>>()
        };
        assert_eq!(temporaries(), Vec::<String>::new());

        // Staged for content already stored: nothing is replaced, the file goes away.
        let mut again = repo.stage_blob().unwrap();
        again.write_all(b"not what the blob holds").unwrap();
        let first_blob = EncodedBlob::encode(&content(1000, 7), Compression::Lz4);
        assert_eq!(first_blob.digest, first.digest);
        let key2 = Key::new("stanzas/main/wal/x/record2").unwrap();
        // A staged file whose length is not the body's is never published.
        let (put, _) = repo
            .put_blob_then_record(&first_blob, Some(again), &key2, &record)
            .await
            .unwrap();
        assert!(put.deduplicated);
        assert_eq!(
            repo.get_blob(&first.digest).await.unwrap(),
            content(1000, 7)
        );
        assert_eq!(temporaries(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn streamed_blobs_match_in_memory_ones() {
        let (dir, repo) = repo();
        let raw = content(PART_SIZE * 2 + 12345, 2);
        let path = dir.path().join("big");
        std::fs::write(&path, &raw).unwrap();
        let digest = Digest::of(&raw);
        let put = repo.put_blob_file(&path, digest).await.unwrap();
        assert!(!put.deduplicated);
        let mut out = Vec::new();
        repo.read_blob(&digest, &mut out).await.unwrap();
        assert_eq!(out, raw);
        // The same content again is deduplicated without reading it.
        assert!(
            repo.put_blob_file(&path, digest)
                .await
                .unwrap()
                .deduplicated
        );
    }

    #[tokio::test]
    async fn a_file_that_changed_between_passes_leaves_nothing() {
        let (dir, repo) = repo();
        let path = dir.path().join("changing");
        std::fs::write(&path, content(1 << 20, 3)).unwrap();
        let wrong = Digest::of(b"what the first pass saw");
        assert!(repo.put_blob_file(&path, wrong).await.is_err());
        assert!(repo.backend().list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_corrupt_blob_is_refused() {
        let (dir, repo) = repo();
        let raw = content(100_000, 4);
        let put = repo.put_blob(Bytes::from(raw)).await.unwrap();
        let path = dir
            .path()
            .join("repo")
            .join(catalog::blob_key(&put.digest).as_str());
        let mut stored = std::fs::read(&path).unwrap();
        let mid = stored.len() / 2;
        stored[mid] ^= 0xff;
        std::fs::write(&path, stored).unwrap();
        let err = repo
            .read_blob(&put.digest, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    #[tokio::test]
    async fn format_marker_is_checked() {
        let (dir, repo) = repo();
        assert_eq!(repo.format().await.unwrap(), None);
        repo.ensure_format().await.unwrap();
        assert_eq!(repo.format().await.unwrap(), Some(REPOSITORY_FORMAT));
        let newer = catalog::encode_record(&RepositoryRecord {
            format: REPOSITORY_FORMAT + 1,
        });
        std::fs::write(dir.path().join("repo/repository"), newer).unwrap();
        assert!(matches!(
            repo.format().await,
            Err(Error::UnsupportedFormat { .. })
        ));
        assert!(repo.ensure_format().await.is_err());
    }

    #[tokio::test]
    async fn backups_are_recorded_in_format_2_with_their_list_in_pages() {
        use crate::backup::{EntryKind, FileEntry};
        let (_d, repo) = repo();
        let stanza = Stanza::new("main").unwrap();
        let entries: Vec<FileEntry> = (0..50)
            .map(|i| FileEntry {
                tablespace: None,
                path: format!("base/1/{i}"),
                mode: 0o600,
                size: 3,
                mtime: 1,
                kind: EntryKind::File {
                    chunks: vec![Digest::of(format!("{i}").as_bytes())],
                },
            })
            .collect();
        let manifest = content(5000, 3);
        let (list, added) = repo
            .put_file_list(&entries, &manifest, 2048, 1000)
            .await
            .unwrap();
        assert!(added > 0);
        let mut record = BackupRecord::example("20261121T103207Z", now());
        record.file_list = list.digest;
        repo.put_backup(&stanza, &record).await.unwrap();

        let listed = repo
            .backend()
            .list(&backup::backups_prefix(&stanza))
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        let key = listed[0].key.clone();
        let stored = repo.backend().get(&key).await.unwrap();
        assert_eq!(
            key,
            backup::backup_record_key(&stanza, &record.id, &Digest::of(&stored)).unwrap(),
            "the key carries the digest of the record's bytes"
        );
        assert!(stored.starts_with(b"tidemark-record 2 "), "{stored:?}");
        let read = repo.backup(&stanza, &record.id).await.unwrap().unwrap();
        assert_eq!(read, record);
        let files = repo.backup_files(&read).await.unwrap();
        assert!(files.pages.len() > 1, "{} pages", files.pages.len());
        let mut back = Vec::new();
        for page in &files.pages {
            back.extend(repo.file_list_page(page).await.unwrap().entries);
        }
        assert_eq!(back, entries);
        assert_eq!(files.entries, 50);
        assert_eq!(files.pg_manifest.size, 5000);
        assert_eq!(files.pg_manifest.chunks.len(), 3, "chunks of 2048");
        let mut manifest_back = Vec::new();
        for chunk in &files.pg_manifest.chunks {
            manifest_back.extend(repo.get_blob(chunk).await.unwrap());
        }
        assert_eq!(manifest_back, manifest);
        // A second record under the same id is refused and changes nothing.
        assert!(matches!(
            repo.put_backup(&stanza, &BackupRecord::example(&record.id, now()))
                .await,
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(repo.backend().get(&key).await.unwrap(), stored);
        // The same record again (a retry whose first write landed) is no second copy.
        repo.put_backup(&stanza, &record).await.unwrap();
        assert_eq!(
            repo.backend()
                .list(&backup::backups_prefix(&stanza))
                .await
                .unwrap()
                .len(),
            1
        );
    }

    /// Records written before keys carried the digest (`backups/<id>`) are still read,
    /// listed, and hold their id.
    #[tokio::test]
    async fn records_under_keys_without_a_digest_are_read_and_hold_their_id() {
        let (_d, repo) = repo();
        let stanza = Stanza::new("main").unwrap();
        let old = BackupRecord::example("20261121T103207Z", now());
        let key = backup::backup_key(&stanza, &old.id).unwrap();
        let body = catalog::encode_record_as(&old, catalog::BACKUP_RECORD_FORMAT);
        repo.backend()
            .put(&key, Bytes::from(body), PutMode::Create)
            .await
            .unwrap();
        assert_eq!(
            repo.backup(&stanza, &old.id).await.unwrap(),
            Some(old.clone())
        );
        assert_eq!(
            repo.backups(&stanza).await.unwrap().records,
            vec![old.clone()]
        );
        let mut next = BackupRecord::example(&old.id, now());
        next.label = "another".into();
        assert!(matches!(
            repo.put_backup(&stanza, &next).await,
            Err(Error::AlreadyExists { .. })
        ));
        next.id = format!("{}-2", old.id);
        repo.put_backup(&stanza, &next).await.unwrap();
        assert_eq!(repo.backup(&stanza, &old.id).await.unwrap(), Some(old));
        assert_eq!(repo.backup(&stanza, &next.id).await.unwrap(), Some(next));
    }

    /// On a store that ignores conditional writes, a second backup under a taken id is
    /// refused (the caller takes the next id) and the first record is untouched; two
    /// backups racing for one id never both succeed, and what succeeded is what is read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn backup_records_survive_a_store_without_conditional_writes() {
        use crate::backend::conformance::IgnoresCreate;
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(LocalBackend::new(dir.path().join("repo")).unwrap());
        let repo = Repo::new(Arc::new(IgnoresCreate(local)), Compression::Lz4);
        let stanza = Stanza::new("main").unwrap();
        let mut a = BackupRecord::example("20261121T103207Z", now());
        a.label = "a".into();
        let mut b = a.clone();
        b.label = "b".into();
        repo.put_backup(&stanza, &a).await.unwrap();
        assert!(matches!(
            repo.put_backup(&stanza, &b).await,
            Err(Error::AlreadyExists { .. })
        ));
        assert_eq!(repo.backup(&stanza, &a.id).await.unwrap(), Some(a.clone()));
        assert_eq!(repo.backups(&stanza).await.unwrap().records, vec![a]);

        for round in 0..50 {
            let id = format!("20261121T1033{:02}Z", round);
            let racers: Vec<_> = ["x", "y"]
                .into_iter()
                .map(|label| {
                    let repo = repo.clone();
                    let stanza = stanza.clone();
                    let mut r = BackupRecord::example(&id, now());
                    r.label = label.into();
                    tokio::spawn(async move {
                        let result = repo.put_backup(&stanza, &r).await;
                        (r, result)
                    })
                })
                .collect();
            let mut won = Vec::new();
            for racer in racers {
                let (r, result) = racer.await.unwrap();
                match result {
                    Ok(()) => won.push(r),
                    Err(Error::AlreadyExists { .. }) => {}
                    Err(e) => panic!("round {round}: {e}"),
                }
            }
            assert!(
                won.len() <= 1,
                "round {round}: both writers acknowledged {id}"
            );
            assert_eq!(
                repo.backup(&stanza, &id).await.unwrap(),
                won.pop(),
                "round {round}: what was acknowledged is what is read"
            );
        }
    }

    /// A create whose first attempt landed and whose answer was lost is retried; the retry
    /// must not be taken for another backup holding the id (which made the agent write a
    /// duplicate record under `<id>-2`).
    #[tokio::test(start_paused = true)]
    async fn a_retried_record_whose_first_write_landed_is_one_record() {
        use crate::backend::retry::Retrying;
        use crate::backend::Upload;
        use std::ops::Range;

        /// Lands the first put, then says the store was unreachable.
        #[derive(Debug)]
        struct LostAnswer {
            inner: LocalBackend,
            lost: AtomicBool,
        }
        #[async_trait::async_trait]
        impl Backend for LostAnswer {
            async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<()> {
                self.inner.put(key, data, mode).await?;
                if self.lost.swap(true, Ordering::SeqCst) {
                    return Ok(());
                }
                Err(Error::Unavailable {
                    op: "put",
                    key: key.to_string(),
                    message: "connection reset".into(),
                })
            }
            async fn get(&self, key: &Key) -> Result<Bytes> {
                self.inner.get(key).await
            }
            async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes> {
                self.inner.get_range(key, range).await
            }
            async fn head(&self, key: &Key) -> Result<ObjectMeta> {
                self.inner.head(key).await
            }
            async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
                self.inner.list(prefix).await
            }
            async fn delete(&self, key: &Key) -> Result<()> {
                self.inner.delete(key).await
            }
            async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn Upload>> {
                self.inner.put_multipart(key, mode).await
            }
        }

        let dir = tempfile::tempdir().unwrap();
        let lossy = LostAnswer {
            inner: LocalBackend::new(dir.path().join("repo")).unwrap(),
            lost: AtomicBool::new(false),
        };
        let backend = Retrying::new(Arc::new(lossy), std::time::Duration::from_secs(10));
        let repo = Repo::new(Arc::new(backend), Compression::Lz4);
        let stanza = Stanza::new("main").unwrap();
        let record = BackupRecord::example("20261121T103207Z", now());
        repo.put_backup(&stanza, &record).await.unwrap();
        assert_eq!(repo.backups(&stanza).await.unwrap().records, vec![record]);
    }

    /// A WAL record for `content` under `name`.
    fn wal_record(name: &WalFileName, content: &[u8]) -> (Digest, WalRecord) {
        let digest = Digest::of(content);
        let record = WalRecord {
            name: name.to_string(),
            kind: name.kind().to_string(),
            digest,
            raw_size: content.len() as u64,
            stored_size: 0,
            compression: Compression::Lz4,
            archived_at: now(),
            system_id: None,
            start_lsn: None,
            tidemark_version: "test".into(),
            content: None,
        };
        (digest, record)
    }

    #[tokio::test]
    async fn the_wal_catalog_takes_content_from_the_entry_then_the_sidecar() {
        use crate::pg::wal::SegmentSummary;
        use crate::pg::{Lsn, PgMajor};
        use crate::wal_content::{wal_content_key, WalContent};
        let (_d, repo) = repo();
        let stanza = Stanza::new("main").unwrap();
        let summary = |start: u64| SegmentSummary {
            first_record: Some(Lsn(start + 40)),
            last_record: Some(Lsn(start + 4096)),
            end_of_records: Lsn(start + 4200),
            records: 7,
            switched: true,
            ..SegmentSummary::new(Lsn(start), 1, PgMajor::from_number(15).unwrap())
        };
        let names: Vec<WalFileName> = (1..=3)
            .map(|n| format!("00000001000000000000000{n}").parse().unwrap())
            .collect();
        // 1: content in the entry; 2: archived without, reindexed (sidecar); 3: neither.
        let (d1, mut r1) = wal_record(&names[0], b"one");
        r1.content = Some(WalContent::from(&summary(0x0100_0000)));
        repo.put_wal_record(&stanza, &names[0], &d1, &r1)
            .await
            .unwrap();
        let (d2, r2) = wal_record(&names[1], b"two");
        repo.put_wal_record(&stanza, &names[1], &d2, &r2)
            .await
            .unwrap();
        let sidecar = WalContent::from(&summary(0x0200_0000));
        let key = wal_content_key(&stanza, &names[1], &d2);
        assert!(repo.put_record(&key, &sidecar).await.unwrap());
        let (d3, r3) = wal_record(&names[2], b"three");
        repo.put_wal_record(&stanza, &names[2], &d3, &r3)
            .await
            .unwrap();

        let catalog = repo.wal_catalog(&stanza).await.unwrap();
        let got: Vec<_> = catalog
            .iter()
            .map(|e| (e.name, e.digest, e.content.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (names[0], d1, Some(summary(0x0100_0000))),
                (names[1], d2, Some(summary(0x0200_0000))),
                (names[2], d3, None),
            ]
        );
        // The sidecar is not an entry: the plain index still lists three.
        assert_eq!(repo.wal_index(&stanza).await.unwrap().len(), 3);

        // Read again reusing the first read: entries still listed are taken from it (a
        // marked copy of entry 2 proves it was not read again), entry 3 is read again
        // because a sidecar appeared for it, a new entry is read, an expired one is gone.
        let mut previous = catalog.clone();
        previous[1].record.raw_size = 999;
        let key3 = wal_content_key(&stanza, &names[2], &d3);
        assert!(repo
            .put_record(&key3, &WalContent::from(&summary(0x0300_0000)))
            .await
            .unwrap());
        let name4: WalFileName = "000000010000000000000004".parse().unwrap();
        let (d4, r4) = wal_record(&name4, b"four");
        repo.put_wal_record(&stanza, &name4, &d4, &r4)
            .await
            .unwrap();
        repo.backend()
            .delete(&catalog::wal_key(&stanza, &names[0], &d1))
            .await
            .unwrap();
        let again = repo.wal_catalog_reusing(&stanza, previous).await.unwrap();
        let got: Vec<_> = again
            .iter()
            .map(|e| (e.name, e.record.raw_size, e.content.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (names[1], 999, Some(summary(0x0200_0000))),
                (names[2], r3.raw_size, Some(summary(0x0300_0000))),
                (name4, r4.raw_size, None),
            ]
        );
    }

    #[tokio::test]
    async fn of_concurrent_contents_exactly_one_is_indexed() {
        let (_d, repo) = repo();
        let stanza = Stanza::new("main").unwrap();
        let name: WalFileName = "000000010000000000000003".parse().unwrap();
        for round in 0..20u8 {
            let name = match round {
                0 => name,
                r => format!("0000000100000000000000{:02X}", 3 + r)
                    .parse()
                    .unwrap(),
            };
            let tasks: Vec<_> = (0..4u8)
                .map(|i| {
                    let repo = repo.clone();
                    let stanza = stanza.clone();
                    tokio::spawn(async move {
                        let (digest, record) = wal_record(&name, &[round, i]);
                        let commit = repo.commit_wal(&stanza, &name, &digest, &record).await;
                        (digest, commit.unwrap())
                    })
                })
                .collect();
            let mut winners = Vec::new();
            let mut losers = Vec::new();
            for task in tasks {
                let (digest, commit) = task.await.unwrap();
                match commit {
                    WalCommit::Indexed { created: true } => winners.push(digest),
                    WalCommit::Taken { .. } => losers.push(digest),
                    other => panic!("round {round}: {other:?}"),
                }
            }
            assert_eq!(winners.len(), 1, "round {round}: {winners:?}");
            assert_eq!(losers.len(), 3, "round {round}");
            assert_eq!(repo.wal_digests(&stanza, &name).await.unwrap(), winners);
            let state = repo.wal_name_state(&stanza, &name).await.unwrap();
            assert_eq!(state.indexed, winners);
            assert_eq!(
                state.claimed, None,
                "a claim is read only while nothing is indexed"
            );
        }
    }

    /// archive-push's one-round write (`put_wal`, on a local folder whose create is
    /// exclusive): of four concurrent contents under one name exactly one is indexed, the
    /// others get `Taken` with nothing of theirs indexed; the claim and the entry are the
    /// same record; a content whose claim is already there (its own earlier push) still
    /// gets its entry, and another content is refused while that claim holds the name.
    #[tokio::test]
    async fn in_one_round_exactly_one_content_is_indexed_and_its_claim_is_its_entry() {
        let (_d, repo) = repo();
        let stanza = Stanza::new("main").unwrap();
        assert!(repo.backend().create_is_exclusive());
        for round in 0..20u8 {
            let name: WalFileName = format!("0000000100000000000000{:02X}", 3 + round)
                .parse()
                .unwrap();
            let tasks: Vec<_> = (0..4u8)
                .map(|i| {
                    let repo = repo.clone();
                    let stanza = stanza.clone();
                    tokio::spawn(async move {
                        let raw = vec![round, i, 7, 7];
                        let blob = EncodedBlob::encode(&raw, Compression::Lz4);
                        let (digest, record) = wal_record(&name, &raw);
                        let (put, commit) = repo
                            .put_wal(&stanza, &name, Some((&blob, None)), &record)
                            .await
                            .unwrap();
                        assert_eq!(put.unwrap().digest, digest);
                        (raw, record, commit)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            let mut losers = 0;
            for task in tasks {
                let (raw, record, commit) = task.await.unwrap();
                match commit {
                    WalCommit::Indexed { created: true } => winners.push((raw, record)),
                    WalCommit::Taken { indexed, .. } => {
                        assert!(!indexed.contains(&record.digest), "round {round}");
                        losers += 1;
                    }
                    other => panic!("round {round}: {other:?}"),
                }
            }
            assert_eq!((winners.len(), losers), (1, 3), "round {round}");
            let (raw, record) = &winners[0];
            let digest = &record.digest;
            assert_eq!(repo.wal_digests(&stanza, &name).await.unwrap(), [*digest]);
            let entry: WalRecord = repo
                .get_record(&catalog::wal_key(&stanza, &name, digest))
                .await
                .unwrap();
            let claim: WalRecord = repo
                .get_record(&catalog::wal_claim_key(&stanza, &name))
                .await
                .unwrap();
            assert_eq!((&entry, &claim), (record, record));
            assert_eq!(&repo.get_blob(digest).await.unwrap(), raw);
        }

        // A push that stopped after its claim: its retry completes it; meanwhile and after,
        // other content is refused with nothing of it indexed.
        let name: WalFileName = "000000010000000000000099".parse().unwrap();
        let (a, rec_a) = wal_record(&name, b"a");
        let (_, rec_b) = wal_record(&name, b"b");
        repo.put_record(&catalog::wal_claim_key(&stanza, &name), &rec_a)
            .await
            .unwrap();
        let blob_b = EncodedBlob::encode(b"b", Compression::Lz4);
        let (_, commit) = repo
            .put_wal(&stanza, &name, Some((&blob_b, None)), &rec_b)
            .await
            .unwrap();
        assert_eq!(
            commit,
            WalCommit::Taken {
                indexed: vec![],
                claimed: Some(a)
            }
        );
        let blob_a = EncodedBlob::encode(b"a", Compression::Lz4);
        let (_, commit) = repo
            .put_wal(&stanza, &name, Some((&blob_a, None)), &rec_a)
            .await
            .unwrap();
        assert_eq!(commit, WalCommit::Indexed { created: true });
        let (_, commit) = repo.put_wal(&stanza, &name, None, &rec_b).await.unwrap();
        assert_eq!(
            commit,
            WalCommit::Taken {
                indexed: vec![a],
                claimed: None
            }
        );
        assert_eq!(repo.wal_digests(&stanza, &name).await.unwrap(), vec![a]);
    }

    #[tokio::test]
    async fn a_claim_without_its_entry_holds_the_name_for_its_content() {
        let (_d, repo) = repo();
        let stanza = Stanza::new("main").unwrap();
        let name: WalFileName = "00000002.history".parse().unwrap();
        let (a, rec_a) = wal_record(&name, b"a");
        let (b, rec_b) = wal_record(&name, b"b");
        // A push of `a` that stopped after its claim.
        repo.put_record(&catalog::wal_claim_key(&stanza, &name), &rec_a)
            .await
            .unwrap();
        let state = repo.wal_name_state(&stanza, &name).await.unwrap();
        assert_eq!((state.indexed.len(), state.claimed), (0, Some(a)));
        assert_eq!(
            repo.commit_wal(&stanza, &name, &b, &rec_b).await.unwrap(),
            WalCommit::Taken {
                indexed: vec![],
                claimed: Some(a)
            }
        );
        assert!(repo.wal_digests(&stanza, &name).await.unwrap().is_empty());
        // Its retry completes it; the other content then finds it indexed.
        assert_eq!(
            repo.commit_wal(&stanza, &name, &a, &rec_a).await.unwrap(),
            WalCommit::Indexed { created: true }
        );
        assert_eq!(
            repo.commit_wal(&stanza, &name, &b, &rec_b).await.unwrap(),
            WalCommit::Taken {
                indexed: vec![a],
                claimed: None
            }
        );
        assert_eq!(repo.wal_digests(&stanza, &name).await.unwrap(), vec![a]);
    }

    /// A store that ignores conditional writes (Garage ignores `If-None-Match`): every
    /// `Create` silently overwrites.
    #[derive(Debug)]
    struct IgnoresCreate(LocalBackend);

    #[async_trait::async_trait]
    impl Backend for IgnoresCreate {
        async fn put(&self, key: &Key, data: Bytes, _mode: PutMode) -> Result<()> {
            self.0.put(key, data, PutMode::Overwrite).await
        }
        async fn get(&self, key: &Key) -> Result<Bytes> {
            self.0.get(key).await
        }
        async fn get_range(&self, key: &Key, range: std::ops::Range<u64>) -> Result<Bytes> {
            self.0.get_range(key, range).await
        }
        async fn head(&self, key: &Key) -> Result<ObjectMeta> {
            self.0.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            self.0.list(prefix).await
        }
        async fn delete(&self, key: &Key) -> Result<()> {
            self.0.delete(key).await
        }
        async fn put_multipart(
            &self,
            key: &Key,
            _mode: PutMode,
        ) -> Result<Box<dyn crate::backend::Upload>> {
            self.0.put_multipart(key, PutMode::Overwrite).await
        }
    }

    /// What `docs/repository-format.md` says of stores without conditional writes: a push
    /// whose claim was replaced before it read it back loses with nothing indexed; a push
    /// whose claim lands after another content was indexed and acknowledged (a late
    /// writer: its create was not refused) indexes its content, finds the other, waits,
    /// and removes its own entry: readers hand back the acknowledged content, and see two
    /// entries (and refuse the name) only meanwhile.
    #[tokio::test(start_paused = true)]
    async fn without_conditional_writes_the_claim_settles_a_race() {
        let dir = tempfile::tempdir().unwrap();
        let local = LocalBackend::new(dir.path().join("repo")).unwrap();
        let repo = Repo::new(Arc::new(IgnoresCreate(local)), Compression::Lz4);
        let stanza = Stanza::new("main").unwrap();
        let claim = |name: &WalFileName| catalog::wal_claim_key(&stanza, name);

        // B's claim lands over A's before A reads it back: A loses, nothing of it indexed.
        let name: WalFileName = "000000010000000000000003".parse().unwrap();
        let (a, rec_a) = wal_record(&name, b"a");
        let (b, rec_b) = wal_record(&name, b"b");
        assert!(repo.put_record(&claim(&name), &rec_a).await.unwrap());
        assert!(
            repo.put_record(&claim(&name), &rec_b).await.unwrap(),
            "the store took the second create"
        );
        assert_eq!(
            repo.commit_claimed_wal(&stanza, &name, &a, &rec_a)
                .await
                .unwrap(),
            WalCommit::Taken {
                indexed: vec![],
                claimed: Some(b)
            }
        );
        assert_eq!(
            repo.commit_claimed_wal(&stanza, &name, &b, &rec_b)
                .await
                .unwrap(),
            WalCommit::Indexed { created: true }
        );
        assert_eq!(repo.wal_digests(&stanza, &name).await.unwrap(), vec![b]);

        // A is indexed and acknowledged; B's claim then replaces A's (the store took the
        // create): B indexes, finds A, waits for it, and removes its own entry.
        let name: WalFileName = "000000010000000000000004".parse().unwrap();
        let (a, rec_a) = wal_record(&name, b"a");
        let (b, rec_b) = wal_record(&name, b"b");
        assert_eq!(
            repo.commit_wal(&stanza, &name, &a, &rec_a).await.unwrap(),
            WalCommit::Indexed { created: true }
        );
        let started = tokio::time::Instant::now();
        assert_eq!(
            repo.commit_wal(&stanza, &name, &b, &rec_b).await.unwrap(),
            WalCommit::Taken {
                indexed: vec![a],
                claimed: None
            }
        );
        assert!(started.elapsed() >= WAL_SETTLE);
        assert_eq!(repo.wal_digests(&stanza, &name).await.unwrap(), vec![a]);
        // The claim names B now; the entries decide, for readers and for pushes.
        let state = repo.wal_name_state(&stanza, &name).await.unwrap();
        assert_eq!((state.indexed, state.claimed), (vec![a], None));

        // Two contents indexed concurrently: A read its claim back before B's replaced
        // it (here B's claim lands right after A's entry). The claim ends up naming B:
        // A removes its own entry and loses, B waits for that and wins.
        let name: WalFileName = "000000010000000000000005".parse().unwrap();
        let (a, rec_a) = wal_record(&name, b"a");
        let (b, rec_b) = wal_record(&name, b"b");
        let late = IgnoresCreate(LocalBackend::new(dir.path().join("repo")).unwrap());
        let after = (
            catalog::wal_key(&stanza, &name, &a),
            claim(&name),
            Bytes::from(catalog::encode_record(&rec_b)),
        );
        let hooked = Repo::new(
            Arc::new(AfterPut {
                inner: late,
                after: Mutex::new(Some(after)),
            }),
            Compression::Lz4,
        );
        let (for_a, for_b) = tokio::join!(hooked.commit_wal(&stanza, &name, &a, &rec_a), async {
            // B goes on once its claim is in place.
            while repo.wal_claim(&stanza, &name).await.unwrap() != Some(b) {
                tokio::time::sleep(WAL_SETTLE_POLL).await;
            }
            repo.commit_claimed_wal(&stanza, &name, &b, &rec_b).await
        });
        // (B's entry may or may not be there yet when A lists the name last.)
        match for_a.unwrap() {
            WalCommit::Taken { indexed, .. } => assert!(!indexed.contains(&a), "{indexed:?}"),
            other => panic!("A: {other:?}"),
        }
        assert_eq!(for_b.unwrap(), WalCommit::Indexed { created: true });
        assert_eq!(repo.wal_digests(&stanza, &name).await.unwrap(), vec![b]);
    }

    /// A backend that, right after one given key is written, writes another: a
    /// concurrent writer's request landing at exactly that moment.
    #[derive(Debug)]
    struct AfterPut {
        inner: IgnoresCreate,
        after: Mutex<Option<(Key, Key, Bytes)>>,
    }

    #[async_trait::async_trait]
    impl Backend for AfterPut {
        async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<()> {
            self.inner.put(key, data, mode).await?;
            let then = {
                let mut after = self.after.lock().unwrap();
                match after.as_ref() {
                    Some((trigger, _, _)) if trigger == key => after.take(),
                    _ => None,
                }
            };
            if let Some((_, other, bytes)) = then {
                self.inner.put(&other, bytes, PutMode::Overwrite).await?;
            }
            Ok(())
        }
        async fn get(&self, key: &Key) -> Result<Bytes> {
            self.inner.get(key).await
        }
        async fn get_range(&self, key: &Key, range: std::ops::Range<u64>) -> Result<Bytes> {
            self.inner.get_range(key, range).await
        }
        async fn head(&self, key: &Key) -> Result<ObjectMeta> {
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &Key) -> Result<()> {
            self.inner.delete(key).await
        }
        async fn put_multipart(
            &self,
            key: &Key,
            mode: PutMode,
        ) -> Result<Box<dyn crate::backend::Upload>> {
            self.inner.put_multipart(key, mode).await
        }
    }

    #[tokio::test]
    async fn a_damaged_backup_record_is_listed_apart() {
        let (dir, repo) = repo();
        let stanza = Stanza::new("main").unwrap();
        let t = |s: i64| now() + chrono::Duration::seconds(s);
        for (id, at) in [
            ("20261121T000000Z", t(0)),
            ("20261122T000000Z", t(1)),
            ("20261123T000000Z", t(2)),
        ] {
            repo.put_backup(&stanza, &BackupRecord::example(id, at))
                .await
                .unwrap();
        }
        // One byte of the oldest and of the newest record flipped.
        for id in ["20261121T000000Z", "20261123T000000Z"] {
            let keys = repo.backup_keys(&stanza, id).await.unwrap();
            let path = dir.path().join("repo").join(keys[0].as_str());
            let mut body = std::fs::read(&path).unwrap();
            let at = body.len() - 10;
            body[at] ^= 0x01;
            std::fs::write(&path, body).unwrap();
        }
        let listed = repo.backups(&stanza).await.unwrap();
        let ids: Vec<&str> = listed.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["20261122T000000Z"]);
        assert_eq!(listed.newest().unwrap().id, "20261122T000000Z");
        let damaged: Vec<(&str, String)> = listed
            .damaged
            .iter()
            .map(|d| (d.id.as_str(), d.error.to_string()))
            .collect();
        assert_eq!(damaged.len(), 2, "{damaged:?}");
        assert_eq!(damaged[0].0, "20261121T000000Z");
        assert_eq!(damaged[1].0, "20261123T000000Z");
        assert!(
            damaged[0].1.contains("record checksum mismatch"),
            "{damaged:?}"
        );
        // Reading that very backup still fails.
        assert!(matches!(
            repo.backup(&stanza, "20261121T000000Z").await,
            Err(Error::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn checks_name_a_missing_repository_or_stanza_and_create_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("absent");
        let repo = Repo::new(
            Arc::new(LocalBackend::new(&root).unwrap()),
            Compression::Lz4,
        )
        .with_location("file:///somewhere");
        let stanza = Stanza::new("main").unwrap();
        let err = repo.require_format().await.unwrap_err();
        assert!(matches!(err, Error::NoRepository { .. }), "{err}");
        assert!(err.to_string().contains("file:///somewhere"), "{err}");
        assert!(err.to_string().contains("tidemark init"), "{err}");
        let err = repo.require_cluster(&stanza).await.unwrap_err();
        assert!(matches!(err, Error::NoRepository { .. }), "{err}");
        assert!(!root.exists(), "a check created {}", root.display());

        repo.ensure_format().await.unwrap();
        assert_eq!(repo.require_format().await.unwrap(), REPOSITORY_FORMAT);
        let err = repo.require_cluster(&stanza).await.unwrap_err();
        assert!(matches!(err, Error::NoStanza { .. }), "{err}");
        assert!(err.is_not_initialized());
        assert!(err.to_string().contains("\"main\""), "{err}");
        assert!(!root.join("stanzas").exists());
        let rec = ClusterRecord {
            system_id: SystemId(7),
            pg_major: 15,
            wal_segment_size: 16 << 20,
            wal_page_size: 8192,
            created_at: now(),
            created_by: "test".into(),
        };
        repo.ensure_cluster(&stanza, &rec).await.unwrap();
        assert_eq!(
            repo.require_cluster(&stanza).await.unwrap().system_id,
            SystemId(7)
        );
    }

    #[tokio::test]
    async fn cluster_identity_is_pinned() {
        let (_d, repo) = repo();
        let stanza = Stanza::new("main").unwrap();
        let rec = ClusterRecord {
            system_id: SystemId(7),
            pg_major: 15,
            wal_segment_size: 16 << 20,
            wal_page_size: 8192,
            created_at: now(),
            created_by: "test".into(),
        };
        assert_eq!(
            repo.ensure_cluster(&stanza, &rec).await.unwrap().system_id,
            SystemId(7)
        );
        assert_eq!(
            repo.ensure_cluster(&stanza, &rec).await.unwrap().system_id,
            SystemId(7)
        );
        let other = ClusterRecord {
            system_id: SystemId(8),
            ..rec.clone()
        };
        assert!(matches!(
            repo.ensure_cluster(&stanza, &other).await,
            Err(Error::ClusterMismatch { .. })
        ));
        let resized = ClusterRecord {
            wal_segment_size: 1 << 20,
            ..rec.clone()
        };
        assert!(matches!(
            repo.ensure_cluster(&stanza, &resized).await,
            Err(Error::ClusterDiffers { .. })
        ));
        // The message names the stanza as written and both sizes as people say them.
        let message = repo
            .ensure_cluster(&stanza, &resized)
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "stanza \"main\" records PostgreSQL 15 with 16 MiB WAL segments, \
             this is PostgreSQL 15 with 1 MiB segments"
        );
        // A second record (a store that ignored Create, or a race) makes every reader stop.
        repo.put_record(&catalog::cluster_key(&stanza, SystemId(8)), &other)
            .await
            .unwrap();
        assert!(matches!(
            repo.cluster(&stanza).await,
            Err(Error::Catalog { .. })
        ));
    }
}
