//! `archive-push`: one WAL file from PostgreSQL's `archive_command` into the repository.
//!
//! The order is what keeps PostgreSQL's promise (exit 0 only once the file is durable)
//! and tidemark's (nothing is ever overwritten; bad input changes nothing):
//!
//! 1. check the name and the content: page headers of every page against the name, the
//!    segment size and truncation; history and backup files for their shape. Nothing in
//!    the repository has changed yet (a staged body is a hidden temporary file, removed
//!    when the push fails), so bad input leaves it exactly as it was;
//! 2. check that the repository and the stanza exist (only `tidemark init` creates them:
//!    a push pointed at a typo or an unmounted mount point must fail, so that the WAL
//!    waits in `pg_wal`, rather than start a repository there), and the stanza's cluster
//!    identity against the segment's long page header: another cluster's WAL is refused.
//!    These reads (and the index listing of 3) run while 1 still checks and encodes:
//!    they change nothing, and an input error is reported before any of theirs;
//! 3. if the name is already indexed with the same digest: success, nothing written (the
//!    archiver retries after crashes and must not fail on its own earlier success); with
//!    another digest, or claimed for another digest by a push still at work: the new
//!    bytes are kept in quarantine, nothing of them is indexed, and the push fails;
//! 4. write the blob, then the name's claim (create-only, under a key without the
//!    digest, so that of two concurrent pushes of different content only one creates
//!    it);
//! 5. read the claim back: only its content gets an index entry (create-only); the
//!    other push quarantines its bytes and fails. The name is listed once more, so that
//!    on a store whose create is not exclusive two indexed contents are reported rather
//!    than acknowledged (`docs/repository-format.md` says what such stores guarantee).
//!    Where the store's create is exclusive (a local folder), 4 and 5 are one round:
//!    blob, claim and entry are made durable together, the entry linked only if this
//!    push created the claim ([`Repo::put_wal`]).
//!
//! The index entry (and the claim, its copy) carries the segment's content summary for
//! the recovery planner ([`crate::content`]): segments and `.partial` files are decoded
//! while they are checked, on a thread of their own; whatever the decoder finds or
//! fails at, the file is stored.
//!
//! Segments up to [`IN_MEMORY_MAX`] are mapped, then checked, hashed and compressed in
//! parallel, the page checks riding on the hashing thread; in a local repository the
//! compressed body streams into a staged file meanwhile, so that its fsync overlaps the
//! compression (`docs/performance.md` has the figures). The `tidemark` binary begins the
//! mapping, page checks and hashing of the segment its arguments name before it parses
//! them ([`crate::early`]); the push takes that work over when the file it opens is the
//! same one, and otherwise does it all itself. Larger ones (up to 1 GiB) are
//! checked and hashed in a first streaming pass and sent in a second, so memory stays
//! bounded; the decoder reads them through a read-only mapping (the page cache, not
//! memory of the process's own).

use std::io::Read;
use std::path::{Path, PathBuf};

use tidemark_pg::{
    self as pg, PageScan, SegmentIdentity, TimelineId, WalError, WalFileName, WalSegmentName,
};
use tidemark_store::backend::Staged;
use tidemark_store::catalog::{self, ClusterRecord, QuarantineRecord, Stanza, WalRecord};
use tidemark_store::codec::Hasher;
use tidemark_store::repo::{
    check_same_cluster, now, BlobPut, EncodedBlob, HashedElsewhere, WalCommit, WalNameState,
    IN_MEMORY_MAX,
};
use tidemark_store::{Compression, Digest, Repo};

use crate::content::Summarized;
use crate::{Error, Result};

/// Largest `.history` or `.backup` file accepted (they are a few hundred bytes).
const SMALL_FILE_MAX: u64 = 1 << 20;

/// What a successful push did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// Stored and indexed.
    Pushed {
        /// The file name.
        name: WalFileName,
        /// Its content digest.
        digest: Digest,
        /// Raw bytes.
        raw_len: u64,
        /// Bytes added to the repository (0 when the content was already there).
        stored_len: u64,
    },
    /// Already archived with identical content: nothing written.
    AlreadyArchived {
        /// The file name.
        name: WalFileName,
        /// Its content digest.
        digest: Digest,
    },
}

/// Where a file's content is while it is pushed.
pub(crate) enum Content {
    /// Read whole, then hashed and compressed (in parallel) in one go; in a local
    /// repository, its stored body was streamed into a staged file meanwhile.
    InMemory(EncodedBlob, Option<Staged>),
    /// Too big to hold: hashed in a first pass, streamed from the file again when stored.
    Streamed {
        /// The raw content's digest.
        digest: Digest,
        /// The file it is read from again.
        path: PathBuf,
    },
}

impl Content {
    pub(crate) fn digest(&self) -> Digest {
        match self {
            Content::InMemory(blob, _) => blob.digest,
            Content::Streamed { digest, .. } => *digest,
        }
    }
}

/// Archives the file at `path` into `stanza`.
pub async fn push(repo: &Repo, stanza: &Stanza, path: &Path) -> Result<PushOutcome> {
    let name = file_name_of(path)?;
    let started = std::time::Instant::now();
    // 1. Everything about the input is checked before the repository is changed. The
    //    repository is read meanwhile (it changes nothing; what a bad file makes of the
    //    reads is dropped unawaited, and its error is the one reported).
    //    Once the hashing names the blob (every page checked), its folder is made durable
    //    while the compression goes on, rather than in the store's round after it.
    let compression = repo.compression();
    let (named_tx, named_rx) = tokio::sync::oneshot::channel::<Digest>();
    let announce: DigestKnown = Box::new(move |digest: &Digest| {
        let _ = named_tx.send(*digest);
    });
    let check = check_file(path, name, compression, repo.stage_blob(), Some(announce));
    let read = read_ahead(repo, stanza, &name);
    let settle = async {
        // Not announced: a check failed, or the file is streamed. Settling is advice
        // only: a folder that cannot be settled fails the store's own round.
        if let Ok(digest) = named_rx.await {
            let _ = repo.settle_blob_folder(&digest).await;
        }
    };
    tokio::pin!(check, read, settle);
    let (mut ahead, mut settled) = (None, false);
    let checked = loop {
        tokio::select! {
            checked = &mut check => break checked?,
            read = &mut read, if ahead.is_none() => ahead = Some(read),
            () = &mut settle, if !settled => settled = true,
        }
    };
    let ahead = match ahead {
        Some(read) => read?,
        None => read.await?,
    };
    if !settled {
        settle.await;
    }
    let encoded_at = started.elapsed();
    let outcome = store_ahead(repo, stanza, name, checked, compression, ahead).await?;
    tracing::debug!(
        "{name}: read, checked and encoded in {} ms, stored in {} ms",
        encoded_at.as_millis(),
        (started.elapsed() - encoded_at).as_millis()
    );
    Ok(outcome)
}

/// The WAL file name at the end of `path`.
pub(crate) fn file_name_of(path: &Path) -> Result<WalFileName> {
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Wal(WalError::BadFileName(path.display().to_string())))?;
    Ok(file_name.parse()?)
}

/// A file checked and encoded, ready to be stored.
pub(crate) struct Checked {
    /// Its content.
    pub(crate) content: Content,
    /// What a segment's first page says about its cluster.
    pub(crate) identity: Option<SegmentIdentity>,
    /// A segment's content summary for the index (`None`: not a segment; see
    /// [`crate::content`]).
    pub(crate) summary: Option<Summarized>,
}

/// What a push reads of the repository before it writes: independent of the content, so
/// read while the file is still being checked and encoded.
pub(crate) struct Ahead {
    /// The stanza's cluster record (the stanza must exist: it is never created here).
    cluster: ClusterRecord,
    /// What the index holds under the name.
    state: WalNameState,
}

/// Reads what [`store_ahead`] needs, and settles the folders it will write into.
pub(crate) async fn read_ahead(repo: &Repo, stanza: &Stanza, name: &WalFileName) -> Result<Ahead> {
    let (settled, cluster) = tokio::join!(
        repo.settle_wal_folders(stanza, name),
        repo.require_cluster(stanza)
    );
    settled?;
    let cluster = cluster?;
    let state = repo.wal_name_state(stanza, name).await?;
    Ok(Ahead { cluster, state })
}

/// Steps 2 to 5 for content already checked: the cluster's identity, the index, the
/// blob and its record. `compression` is the one the content is encoded with.
pub(crate) async fn store_checked(
    repo: &Repo,
    stanza: &Stanza,
    name: WalFileName,
    checked: Checked,
    compression: Compression,
) -> Result<PushOutcome> {
    let ahead = read_ahead(repo, stanza, &name).await?;
    store_ahead(repo, stanza, name, checked, compression, ahead).await
}

/// [`store_checked`] with the repository read beforehand.
async fn store_ahead(
    repo: &Repo,
    stanza: &Stanza,
    name: WalFileName,
    checked: Checked,
    compression: Compression,
    ahead: Ahead,
) -> Result<PushOutcome> {
    let Checked {
        mut content,
        identity,
        summary,
    } = checked;
    let Ahead { cluster, state } = ahead;
    let wal_content = summary.as_ref().and_then(Summarized::content).cloned();
    // 2. The cluster's identity.
    if let Some(id) = &identity {
        check_same_cluster(stanza, &cluster, &cluster_record(id))?;
    }

    // 3. Already there? The index entries decide; a claim only while none exists.
    let digest = content.digest();
    match (state.indexed.as_slice(), state.claimed) {
        ([one], _) if *one == digest => {
            // Make sure the content it points at is really there (a damaged repository
            // must not turn a retry into a silent success).
            if repo.blob_size(&digest).await?.is_none() {
                store_blob(repo, &content).await?;
            }
            return Ok(PushOutcome::AlreadyArchived { name, digest });
        }
        // Nothing yet, or claimed for this content by a push that stopped before its
        // entry (this one's earlier attempt, or a twin's): go on, the claim is ours.
        ([], None) => {}
        ([], Some(claimed)) if claimed == digest => {}
        ([], Some(claimed)) => {
            return Err(quarantine(
                repo,
                stanza,
                &name,
                &content,
                digest,
                Held::Claimed(claimed),
            )
            .await)
        }
        (indexed, _) if indexed.contains(&digest) => return Err(ambiguous(&name, indexed)),
        (indexed, _) => {
            return Err(quarantine(
                repo,
                stanza,
                &name,
                &content,
                digest,
                Held::Indexed(indexed.to_vec()),
            )
            .await)
        }
    }

    // 4. Blob, then the name's claim (create-only, its key without the digest: of two
    //    concurrent contents only one creates it), visible in that order, durable
    //    together; then the claim read back, the index entry, and the name listed again.
    let make_record = |raw_size: u64, stored_size: u64| WalRecord {
        name: name.to_string(),
        kind: name.kind().to_string(),
        digest,
        raw_size,
        stored_size,
        compression,
        archived_at: now(),
        system_id: identity.map(|id| id.system_id),
        start_lsn: match (name.segment(), identity) {
            (Some(seg), Some(id)) if !matches!(name, WalFileName::Backup { .. }) => {
                seg.start_lsn(id.segment_size).ok()
            }
            _ => None,
        },
        tidemark_version: env!("CARGO_PKG_VERSION").to_string(),
        // The claim is a copy of the entry, content included.
        content: wal_content.clone(),
    };
    //    Where the store's create is exclusive (a local folder), blob, claim and entry
    //    are created in one round that stops at a claim found taken (`Repo::put_wal`).
    let (put, commit) = match &mut content {
        Content::InMemory(blob, staged) => {
            let record = make_record(blob.raw_len, blob.stored_len());
            let (put, commit) = repo
                .put_wal(stanza, &name, Some((blob, staged.take())), &record)
                .await?;
            (put.expect("the blob was given"), commit)
        }
        Content::Streamed { digest, path } => {
            let put = repo.put_blob_file(path, *digest).await?;
            let record = make_record(put.raw_len, put.stored_len);
            let (_, commit) = repo.put_wal(stanza, &name, None, &record).await?;
            (put, commit)
        }
    };

    // 5. Only the claim's content is indexed; a different content that raced this one
    //    in is reported by the push that lost.
    match commit {
        WalCommit::Indexed { .. } => {
            // A blob found already there may be one a garbage collection is removing
            // (unreferenced until this entry): the entry is written, so a collection that
            // starts now keeps it; one at work may not have seen it. Wait for it to end,
            // then store the blob again (docs/repository-format.md, "Garbage collection").
            if put.deduplicated && repo.wait_while_collecting().await? {
                store_blob(repo, &content).await?;
            }
            if let Some(warning) = summary.and_then(|s| s.warning(&name)) {
                tracing::warn!("{warning}");
            }
            Ok(PushOutcome::Pushed {
                name,
                digest,
                raw_len: put.raw_len,
                stored_len: put.added(),
            })
        }
        WalCommit::Taken { indexed, claimed } => {
            let held = match claimed {
                Some(claimed) if indexed.is_empty() => Held::Claimed(claimed),
                _ => Held::Indexed(indexed),
            };
            Err(quarantine(repo, stanza, &name, &content, digest, held).await)
        }
        WalCommit::Ambiguous(indexed) => Err(ambiguous(&name, &indexed)),
    }
}

/// What holds a name that a push found taken.
enum Held {
    /// These contents are indexed under it.
    Indexed(Vec<Digest>),
    /// Nothing is indexed, and a push of this content claimed it.
    Claimed(Digest),
}

/// Several contents indexed under one name (a store whose create is not exclusive):
/// every reader refuses it, so the push must not report success.
fn ambiguous(name: &WalFileName, indexed: &[Digest]) -> Error {
    Error::Ambiguous {
        name: name.to_string(),
        count: indexed.len(),
        digests: indexed
            .iter()
            .map(Digest::to_hex)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

async fn store_blob(repo: &Repo, content: &Content) -> Result<BlobPut> {
    Ok(match content {
        Content::InMemory(blob, _) => repo.put_encoded(blob).await?,
        Content::Streamed { digest, path } => repo.put_blob_file(path, *digest).await?,
    })
}

/// Keeps refused bytes under a quarantine key and builds the conflict error.
async fn quarantine(
    repo: &Repo,
    stanza: &Stanza,
    name: &WalFileName,
    content: &Content,
    digest: Digest,
    held: Held,
) -> Error {
    let key = catalog::quarantine_key(stanza, name, &digest);
    let holders = match &held {
        Held::Indexed(indexed) => indexed.clone(),
        Held::Claimed(claimed) => vec![*claimed],
    };
    let kept = async {
        let put = store_blob(repo, content).await?;
        let record = QuarantineRecord {
            name: name.to_string(),
            digest,
            archived_digests: holders.clone(),
            raw_size: put.raw_len,
            quarantined_at: now(),
        };
        repo.put_record(&key, &record).await?;
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = kept {
        return e;
    }
    let hex = |digests: &[Digest]| {
        digests
            .iter()
            .map(Digest::to_hex)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match held {
        Held::Indexed(indexed) => Error::Conflict {
            name: name.to_string(),
            archived: hex(&indexed),
            new: digest.to_hex(),
            quarantine: key.to_string(),
        },
        Held::Claimed(claimed) => Error::ClaimConflict {
            name: name.to_string(),
            claimed: claimed.to_hex(),
            new: digest.to_hex(),
            quarantine: key.to_string(),
        },
    }
}

/// The cluster record a segment's long page header implies.
pub(crate) fn cluster_record(id: &SegmentIdentity) -> ClusterRecord {
    ClusterRecord {
        system_id: id.system_id,
        pg_major: id.pg_major,
        wal_segment_size: id.segment_size.bytes(),
        wal_page_size: id.page_size,
        created_at: now(),
        created_by: "archive-push".into(),
    }
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Told a segment's digest as soon as it is known (see [`EncodedBlob::encode_announced`]).
pub(crate) type DigestKnown = Box<dyn FnOnce(&Digest) + Send>;

/// [`read_and_check`] on a blocking thread: the file is mapped, checked, hashed,
/// compressed and (segments) decoded for the content index there, off the async runtime.
///
/// The thread starts at the call, not when the future is first polled: the encoding is
/// the push's critical path, and a lazy start let the repository reads' threads (polled
/// first in the caller's `select!`) start before it.
pub(crate) fn check_file(
    path: &Path,
    name: WalFileName,
    compression: Compression,
    staged: Option<Staged>,
    digest_known: Option<DigestKnown>,
) -> impl std::future::Future<Output = Result<Checked>> {
    let path = path.to_path_buf();
    let encoding = tokio::task::spawn_blocking(move || {
        read_and_check(&path, &name, compression, staged, digest_known)
    });
    async move { encoding.await.expect("reading the WAL file panicked") }
}

/// Reads and validates a file; returns its content and, for segment-shaped files, the
/// identity its first page carries and the content summary of segments and partials.
///
/// A segment held in memory streams its stored body into `staged` meanwhile, when given
/// one; the content then carries it. The decoding for the content index runs on a
/// thread of its own beside the page checks, hashing and compression, over the same
/// mapping: it adds CPU, not a pass of its own.
fn read_and_check(
    path: &Path,
    name: &WalFileName,
    compression: Compression,
    mut staged: Option<Staged>,
    digest_known: Option<DigestKnown>,
) -> Result<Checked> {
    let mut file = open_regular(path)?;
    let meta = file.metadata().map_err(read_err(path))?;
    let len = meta.len();
    match name {
        WalFileName::Segment(seg) | WalFileName::Partial(seg) => {
            // Mapped, checked and hashed already when `main` began it early (the same file).
            let (mapped, hashed_early) = match crate::early::take(&meta) {
                Some(taken) => (taken.mapped, Some(taken.digest)),
                None => {
                    let mapped =
                        crate::mapped::MappedFile::map(&file, len).map_err(read_err(path))?;
                    (std::sync::Arc::new(mapped), None)
                }
            };
            let bytes = mapped.bytes();
            let id = pg::check_segment_start(seg, bytes, len)?;
            let summarize = || crate::content::summarize(name, bytes, &id);
            let (content, summary) = std::thread::scope(|s| {
                let summary = s.spawn(summarize);
                let content = if len <= IN_MEMORY_MAX {
                    encode_segment(
                        seg,
                        &id,
                        bytes,
                        compression,
                        hashed_early,
                        staged.as_mut(),
                        digest_known,
                    )
                    .map(|blob| Content::InMemory(blob, staged))
                } else {
                    check_segment_streaming(seg, &mut file, len, path).map(|(digest, _)| {
                        Content::Streamed {
                            digest,
                            path: path.to_path_buf(),
                        }
                    })
                };
                // The decoder contains its own panics: a panic here is a bug elsewhere.
                (content, summary.join().expect("the WAL decoding thread"))
            });
            // Every reader of the mapping is done: the store need not wait for the unmap.
            crate::mapped::MappedFile::release_in_background(mapped, Some(file));
            Ok(Checked {
                content: content?,
                identity: Some(id),
                summary,
            })
        }
        WalFileName::History(tli) => {
            let buf = read_small(&mut file, len, path, name)?;
            check_history(*tli, &buf)?;
            Ok(Checked {
                content: Content::InMemory(EncodedBlob::encode(&buf, compression), None),
                identity: None,
                summary: None,
            })
        }
        WalFileName::Backup { .. } => {
            let buf = read_small(&mut file, len, path, name)?;
            if !buf.starts_with(b"START WAL LOCATION: ") {
                return Err(WalError::NotWal {
                    name: name.to_string(),
                    detail: "a backup history file starts with \"START WAL LOCATION: \"".into(),
                }
                .into());
            }
            Ok(Checked {
                content: Content::InMemory(EncodedBlob::encode(&buf, compression), None),
                identity: None,
                summary: None,
            })
        }
    }
}

/// Opens `path` for reading if it is a regular file (or a symlink to one), and refuses
/// anything else as bad input. The open itself must not wait: opening a named pipe for
/// reading blocks until a writer appears, which would hang the archiver forever. So the
/// file is opened non-blocking, checked with `fstat` on the very descriptor (no window
/// for a swap between a check and the open), and only then switched back to blocking.
pub(crate) fn open_regular(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err(path))?;
    let kind = file.metadata().map_err(read_err(path))?.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a named pipe"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "a special file"
        };
        return Err(Error::Read {
            path: path.to_path_buf(),
            source: std::io::Error::other(format!(
                "{what}, not a regular file: only WAL files are archived"
            )),
        });
    }
    // SAFETY: fcntl on a descriptor this function owns; F_GETFL/F_SETFL take no pointers.
    let cleared = unsafe {
        let fd = file.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0
    };
    if !cleared {
        return Err(read_err(path)(std::io::Error::last_os_error()));
    }
    Ok(file)
}

fn read_small(
    file: &mut std::fs::File,
    len: u64,
    path: &Path,
    name: &WalFileName,
) -> Result<Vec<u8>> {
    if len > SMALL_FILE_MAX {
        return Err(WalError::NotWal {
            name: name.to_string(),
            detail: format!("{len} bytes is far too large for a {} file", name.kind()),
        }
        .into());
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.read_to_end(&mut buf).map_err(read_err(path))?;
    Ok(buf)
}

fn check_history(tli: TimelineId, content: &[u8]) -> Result<()> {
    let entries = pg::parse_history(content)?;
    let Some(last) = entries.last() else {
        return Err(WalError::BadHistory("no timeline switch in it".into()).into());
    };
    if last.parent >= tli {
        return Err(WalError::BadHistory(format!(
            "names parent timeline {} for timeline {tli}",
            last.parent
        ))
        .into());
    }
    Ok(())
}

/// Checks, hashes and compresses a whole segment held in memory. The page checks run on
/// the hashing thread, piece by piece ahead of the hash, so they cost no time of their
/// own. A refused page stops the encoding; the caller drops `staged` with the error,
/// which removes it, so the repository is as it was.
fn encode_segment(
    seg: &WalSegmentName,
    id: &SegmentIdentity,
    bytes: &[u8],
    compression: Compression,
    hashed_early: Option<HashedElsewhere>,
    staged: Option<&mut Staged>,
    digest_known: Option<DigestKnown>,
) -> Result<EncodedBlob> {
    let mut scan = PageScan::default();
    let check = |offset: u64, piece: &[u8]| pg::check_pages(seg, id, offset, piece, &mut scan);
    let sink = staged.map(|st| st as &mut (dyn std::io::Write + Send));
    let announce = |digest: &Digest| {
        if let Some(told) = digest_known {
            told(digest);
        }
    };
    Ok(EncodedBlob::encode_hashed_elsewhere(
        bytes,
        compression,
        hashed_early,
        check,
        sink,
        announce,
    )?)
}

/// First pass over a segment too large to hold: page checks and hashing, frame by frame.
fn check_segment_streaming(
    seg: &WalSegmentName,
    file: &mut std::fs::File,
    len: u64,
    path: &Path,
) -> Result<(Digest, SegmentIdentity)> {
    let mut buf = vec![0u8; 8 << 20];
    let mut hasher = Hasher::new();
    let mut offset = 0u64;
    let mut identity: Option<SegmentIdentity> = None;
    let mut scan = PageScan::default();
    loop {
        let mut n = 0;
        while n < buf.len() {
            match file.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_err(path)(e)),
            }
        }
        if n == 0 {
            break;
        }
        let piece = &buf[..n];
        let id = match identity {
            Some(id) => id,
            None => pg::check_segment_start(seg, piece, len)?,
        };
        pg::check_pages(seg, &id, offset, piece, &mut scan)?;
        identity = Some(id);
        hasher.update(piece);
        offset += n as u64;
    }
    let id = identity.ok_or_else(|| WalError::NotWal {
        name: seg.to_string(),
        detail: "empty file".into(),
    })?;
    if offset != len {
        return Err(WalError::Truncated {
            name: seg.to_string(),
            len: offset,
            expected: len,
        }
        .into());
    }
    Ok((hasher.finish(), id))
}
