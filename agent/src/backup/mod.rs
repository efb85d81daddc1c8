//! Taking a base backup into the repository.
//!
//! In order:
//! 1. an SQL connection reads who the server is and whether it archives WAL (a backup
//!    without its WAL cannot be restored, so a server that does not archive is refused
//!    before any work), and the databases with their extensions;
//! 2. the stanza's cluster record is checked: a repository or stanza that does not
//!    exist (only `tidemark init` creates them) and another cluster's backup are refused;
//! 3. `BASE_BACKUP` (with the server's manifest) streams over a replication connection;
//!    every file is cut into chunks that the [`chunks`] pipeline hashes, deduplicates,
//!    compresses and stores with bounded parallelism and memory. The server's warnings
//!    (a skipped special file, a page whose data checksum fails) are logged and counted
//!    into the record; its closing checksum error fails the backup unless the operator
//!    asked to ignore it;
//! 4. the file list is stored page by page as its entries complete (see [`Copy`]), and
//!    PostgreSQL's `backup_manifest` chunk by chunk as it arrives, then the list's index;
//! 5. [`wal`] waits until the WAL from the backup's start to its stop is archived;
//! 6. only then is the backup's record written. Until that moment the backup does not
//!    exist: an interrupted one leaves unreferenced blobs and nothing `info` lists.
//!
//! What fails on the PostgreSQL side is a [`BackupError`]; the repository's failures stay
//! `tidemark_store::Error`s.

pub mod chunks;
mod error;
pub mod wal;

pub use error::BackupError;

use std::collections::VecDeque;
use std::path::{Component, Path};
use std::time::{Duration, Instant};

use serde::Serialize;
use tidemark_pg::{Lsn, SegmentSize, SystemId, TimelineId};
use tidemark_store::backup::{
    self, BackupRecord, Chunked, DatabaseRecord, EntryKind, ExtensionRecord, FileEntry,
    TablespaceRecord, CHUNK_SIZE, PAGE_BYTES,
};
use tidemark_store::repo::FileListWriter;
use tidemark_store::repo::{check_same_cluster, now};
use tidemark_store::{Digest, Repo};

use crate::cli::config::Settings;
use crate::cmd::open_repo;
use crate::exit::Failure;
use crate::progress::Progress;
use crate::server::{ServerError, ServerFacts};
use chunks::{chunk_count, ChunkDone, Chunker, KnownChunks, Uploader, KNOWN_MAX};
use tidemark_pgclient::conn::{BackupEvent, ReplError, ReplicationConn};
use tidemark_pgclient::proto::{BackupStart, BaseBackupOptions, ServerNotice, DATA_CORRUPTED};
use tidemark_pgclient::settings::{self as pgsettings, PgTarget, ProcessEnv};
use tidemark_pgclient::sql::{self, describe_pg_error};
use tidemark_pgclient::tar;

/// What the caller asks for.
#[derive(Debug, Clone)]
pub struct BackupRequest {
    /// The label; `None` for `tidemark <id>`.
    pub label: Option<String>,
    /// An immediate checkpoint rather than a spread one.
    pub fast_checkpoint: bool,
    /// How long to wait for the backup's WAL to be archived.
    pub wal_timeout: Duration,
    /// No progress output (for `--json`).
    pub quiet: bool,
    /// Record the backup even when the server reports data checksum failures.
    pub ignore_checksum_failures: bool,
}

/// What a backup did (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// Repository URL.
    pub repo: String,
    /// Stanza.
    pub stanza: String,
    /// The backup's id.
    pub id: String,
    /// Its label.
    pub label: String,
    /// Timeline and positions.
    pub timeline: u32,
    /// Start LSN.
    pub start_lsn: String,
    /// Stop LSN.
    pub stop_lsn: String,
    /// Regular files.
    pub files: u64,
    /// Bytes of the database backed up.
    pub size: u64,
    /// Chunks, and how many were new.
    pub chunks: u64,
    /// Chunks written.
    pub chunks_added: u64,
    /// Bytes added to the repository.
    pub stored_added: u64,
    /// Seconds streaming and storing the data.
    pub copy_seconds: f64,
    /// Seconds waiting for the WAL to be archived.
    pub wal_wait_seconds: f64,
    /// Seconds in all.
    pub seconds: f64,
    /// Warnings about the server's settings.
    pub warnings: Vec<String>,
    /// Warnings the server sent during the backup (each was logged on stderr).
    pub notices: u64,
    /// True when the server reported data checksum failures and the backup was recorded
    /// anyway (`--ignore-checksum-failures`).
    pub checksum_failures_ignored: bool,
}

/// What backups need of a server.
impl ServerFacts {
    /// Refuses a server whose backups could not be restored; returns warnings.
    fn check_for_backup(&self) -> Result<Vec<String>, BackupError> {
        if self.in_recovery {
            return Err(BackupError::Standby);
        }
        if self.archive_mode == "off" {
            return Err(BackupError::ArchiveModeOff);
        }
        let command = self.archive_command.trim();
        if self.archive_library.trim().is_empty() && (command.is_empty() || command == "(disabled)")
        {
            return Err(BackupError::NoArchiveCommand);
        }
        let mut warnings = Vec::new();
        if !command.contains("tidemark") {
            warnings.push(format!(
                "archive_command is {command:?}, not tidemark archive-push: the backup will wait for \
                 its WAL to appear in this repository"
            ));
        }
        Ok(warnings)
    }
}

/// Takes a backup; see the module doc.
pub async fn take(settings: &Settings, req: &BackupRequest) -> Result<BackupReport, Failure> {
    // The lease tells garbage collection a backup is in flight (it may name chunks it
    // found already there): it goes when the backup ends, whichever way.
    let mut lease = None;
    let result = take_leased(settings, req, &mut lease).await;
    if let Some(lease) = lease {
        if let Err(e) = lease.release().await {
            tracing::warn!("cannot remove the backup's lease (it expires by itself): {e}");
        }
    }
    result
}

async fn take_leased(
    settings: &Settings,
    req: &BackupRequest,
    lease_slot: &mut Option<tidemark_store::gc::Held>,
) -> Result<BackupReport, Failure> {
    let started = Instant::now();
    let stanza = &settings.stanza;
    let target = pgsettings::resolve(&settings.pg, &ProcessEnv)
        .map_err(|e| BackupError::Server(e.into()))?;
    // Replication access first: it is what a backup needs above all, and its errors
    // (no REPLICATION attribute, no pg_hba.conf line) say exactly what to change.
    let mut conn = ReplicationConn::connect(&target)
        .await
        .map_err(BackupError::Replication)?;
    let identity = conn
        .identify_system()
        .await
        .map_err(BackupError::Replication)?;
    let client = sql::connect(&target)
        .await
        .map_err(|e| BackupError::Server(e.into()))?;
    let server = ServerFacts::read(&client)
        .await
        .map_err(BackupError::Server)?;
    let warnings = server.check_for_backup()?;
    if !req.quiet {
        for w in &warnings {
            eprintln!("tidemark: backup: warning: {w}");
        }
    }
    let segment_size =
        SegmentSize::new(server.segment_size).map_err(|e| BackupError::SegmentSize {
            reason: e.to_string(),
        })?;

    // The stanza must exist (only `init` creates it) and be this server's.
    let repo = open_repo(settings).await?;
    let cluster = repo.require_cluster(stanza).await?;
    check_same_cluster(stanza, &cluster, &server.cluster_record("backup"))?;
    // Before the previous backups' chunks are read: from here on no collection sweeps
    // (and one that started before waits for nothing: this waits for it to end).
    let lease = lease_slot.insert(repo.take_lease("backup", stanza).await?);

    let databases = read_databases(&target, &client).await?;
    let (known, skipped) = previous_chunks(&repo, stanza, req.quiet).await?;
    let mut warnings = warnings;
    warnings.extend(skipped);
    // Temporary files that killed writers (an earlier backup, a push) left in a local
    // repository are removed here, where the blobs they were meant to become are written;
    // a live writer's file is never taken (docs/repository-format.md).
    let collected = repo.backend().stale_temp_files(true).await?;
    if collected.count > 0 {
        tracing::info!(
            "removed {} temporary file(s) ({} bytes) left by killed writers",
            collected.count,
            collected.bytes
        );
    }

    if identity.system_id != server.system_id {
        return Err(Failure::Store(tidemark_store::Error::ClusterMismatch {
            stanza: stanza.to_string(),
            expected: server.system_id.to_string(),
            found: identity.system_id.to_string(),
        }));
    }

    let start_time = now();
    let label = req
        .label
        .clone()
        .unwrap_or_else(|| format!("tidemark {}", start_time.format("%Y-%m-%d %H:%M:%S UTC")));
    let max_in_flight = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2 + 2;
    let mut copy = Copy::new(
        repo.clone(),
        Uploader::new(repo.clone(), known, max_in_flight),
        PAGE_BYTES,
        req.quiet,
    );
    let mut stream = conn
        .base_backup(&BaseBackupOptions {
            label: label.clone(),
            fast_checkpoint: req.fast_checkpoint,
            manifest: true,
            server_major: 0,
        })
        .await
        .map_err(BackupError::Replication)?;
    stream.tolerate_checksum_failures(req.ignore_checksum_failures);
    let mut notices = Notices::default();
    while let Some(event) = stream
        .next_event()
        .await
        .map_err(|e| notices.stream_failure(e))?
    {
        match event {
            BackupEvent::Notice(notice) => notices.note(notice),
            event => copy.handle(event).await?,
        }
    }
    drop(stream);
    conn.close().await.ok();
    let copied = copy.finish().await?;
    let copy_seconds = started.elapsed().as_secs_f64();

    let (files, size) = (copied.files, copied.size);

    // The WAL that makes it consistent, before the record that makes it exist.
    if TimelineId(copied.start.timeline) != copied.stop_timeline {
        return Err(BackupError::TimelineChanged {
            start: copied.start.timeline,
            stop: copied.stop_timeline.0,
        }
        .into());
    }
    let needed = wal::needed_segments(
        TimelineId(copied.start.timeline),
        copied.start.start_lsn,
        copied.stop_lsn,
        segment_size,
    );
    let wal_wait =
        wal::wait_for_segments(&repo, stanza, &needed, req.wal_timeout, &client, req.quiet).await?;

    let stats = copied.stats;
    let record = BackupRecord {
        id: String::new(),
        label: label.clone(),
        system_id: SystemId(server.system_id),
        pg_version: server.version.clone(),
        pg_major: server.pg_major(),
        wal_segment_size: server.segment_size,
        timeline: TimelineId(copied.start.timeline),
        start_lsn: copied.start.start_lsn,
        stop_timeline: copied.stop_timeline,
        stop_lsn: copied.stop_lsn,
        start_time,
        stop_time: copied.stop_time,
        tablespaces: copied.tablespaces,
        databases,
        chunk_size: CHUNK_SIZE,
        file_list: copied.file_list,
        files,
        size,
        chunks: stats.chunks,
        chunks_added: stats.chunks_added,
        stored_added: stats.stored_added + copied.list_added,
        tidemark_version: env!("CARGO_PKG_VERSION").to_string(),
        notices: Some(notices.count),
        checksum_failures_ignored: notices.checksum_failure,
    };
    if !lease.unbroken() {
        return Err(Failure::Store(tidemark_store::Error::Catalog {
            what: "backup".into(),
            detail: format!(
                "its lease {} was not kept refreshed (the repository did not answer): a garbage collection may have removed chunks it reuses, so it is not recorded; run it again",
                lease.key()
            ),
        }));
    }
    let record = write_record(&repo, stanza, record, start_time).await?;
    let id = record.id.clone();
    Ok(BackupReport {
        repo: settings.repo.to_string(),
        stanza: stanza.to_string(),
        id,
        label,
        timeline: record.timeline.0,
        start_lsn: record.start_lsn.to_string(),
        stop_lsn: record.stop_lsn.to_string(),
        files,
        size,
        chunks: record.chunks,
        chunks_added: record.chunks_added,
        stored_added: record.stored_added,
        copy_seconds,
        wal_wait_seconds: wal_wait.as_secs_f64(),
        seconds: started.elapsed().as_secs_f64(),
        warnings,
        notices: notices.count,
        checksum_failures_ignored: notices.checksum_failure,
    })
}

/// The server's warnings during `BASE_BACKUP`: each is logged as it comes (a skipped
/// file, a page whose data checksum failed), and counted into the backup's record. The
/// same warning twice counts once: with `PROGRESS` the server walks the data directory
/// twice (a size estimate first) and warns about a skipped file in both walks.
#[derive(Debug, Default)]
struct Notices {
    /// How many different ones arrived.
    count: u64,
    /// Those seen, to tell a repeat.
    seen: std::collections::HashSet<String>,
    /// The first one, to name in a failure.
    first: Option<ServerNotice>,
    /// Whether the server reported data checksum failures (and they were tolerated).
    checksum_failure: bool,
}

impl Notices {
    fn note(&mut self, notice: ServerNotice) {
        if !self.seen.insert(format!("{notice} [{}]", notice.code)) {
            return;
        }
        tracing::warn!("the server, during the backup: {notice}");
        self.count += 1;
        if notice.is_checksum_failure() {
            self.checksum_failure = true;
        }
        self.first.get_or_insert(notice);
    }

    /// The failure for a stream that broke; the server's checksum verdict gets a message
    /// of its own, since it means the cluster's data (not tidemark, not the network) is
    /// damaged.
    fn stream_failure(&self, e: ReplError) -> BackupError {
        match e {
            ReplError::Server { code, message } if code == DATA_CORRUPTED => {
                BackupError::DataChecksums {
                    message,
                    first: self.first.as_ref().map(|n| n.message.clone()),
                }
            }
            e => BackupError::Stream(e),
        }
    }
}

/// Writes the record under the id of its start time; when a backup that started in the
/// same second holds that id, under the next free `<id>-<n>`. `Repo::put_backup` makes
/// the choice safe between concurrent backups, also on a store that ignores conditional
/// writes, and takes a write repeated after a lost answer for what it is (not a second
/// backup holding the id).
async fn write_record(
    repo: &Repo,
    stanza: &tidemark_store::catalog::Stanza,
    mut record: BackupRecord,
    start_time: chrono::DateTime<chrono::Utc>,
) -> Result<BackupRecord, Failure> {
    let base = backup::backup_id(start_time);
    for n in 1..=100 {
        record.id = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        match repo.put_backup(stanza, &record).await {
            Ok(()) => return Ok(record),
            Err(tidemark_store::Error::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(BackupError::NoFreeId { base }.into())
}

/// The databases and their extensions. A database that cannot be read (connections not
/// allowed, no privilege) is listed with `extensions: None`.
async fn read_databases(
    target: &PgTarget,
    client: &tokio_postgres::Client,
) -> Result<Vec<DatabaseRecord>, Failure> {
    let rows = client
        .query(
            "SELECT oid::int8, datname, datallowconn FROM pg_database ORDER BY oid",
            &[],
        )
        .await
        .map_err(|e| BackupError::Server(ServerError::query("listing databases", &e)))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let oid: i64 = row.get(0);
        let name: String = row.get(1);
        let allowed: bool = row.get(2);
        let extensions = if allowed {
            match read_extensions(target, &name).await {
                Ok(ext) => Some(ext),
                Err(e) => {
                    tracing::warn!("cannot list the extensions of database {name:?}: {e}");
                    None
                }
            }
        } else {
            None
        };
        out.push(DatabaseRecord {
            name,
            oid: oid as u32,
            extensions,
        });
    }
    Ok(out)
}

async fn read_extensions(target: &PgTarget, dbname: &str) -> Result<Vec<ExtensionRecord>, String> {
    let mut target = target.clone();
    target.dbname = dbname.to_string();
    let client = sql::connect(&target).await.map_err(|e| e.to_string())?;
    let rows = client
        .query(
            "SELECT extname::text, extversion FROM pg_extension ORDER BY extname",
            &[],
        )
        .await
        .map_err(|e| describe_pg_error(&e))?;
    Ok(rows
        .iter()
        .map(|r| ExtensionRecord {
            name: r.get(0),
            version: r.get(1),
        })
        .collect())
}

/// The chunks of the stanza's newest readable backup: the repository holds them, so they
/// are neither compressed nor written again. Read page by page into a compact set (see
/// [`KnownChunks`]). A backup record that cannot be read is skipped, with a warning
/// naming it (printed unless `quiet`, and returned for the report): one damaged record
/// must not stop every later backup.
async fn previous_chunks(
    repo: &Repo,
    stanza: &tidemark_store::catalog::Stanza,
    quiet: bool,
) -> Result<(KnownChunks, Vec<String>), Failure> {
    let backups = repo.backups(stanza).await?;
    let skipped: Vec<String> = backups
        .damaged
        .iter()
        .map(|d| {
            format!(
                "backup {}'s record cannot be read ({}): skipped; `info` lists it as damaged",
                d.id, d.error
            )
        })
        .collect();
    if !quiet {
        for w in &skipped {
            eprintln!("tidemark: backup: warning: {w}");
        }
    }
    let Some(newest) = backups.newest() else {
        return Ok((KnownChunks::new(), skipped));
    };
    // Sized from the record (a wrong count only costs a reallocation).
    let mut known = KnownChunks::with_capacity(newest.chunks.try_into().unwrap_or(usize::MAX));
    let read = async {
        let list = repo.backup_files(newest).await?;
        for page in &list.pages {
            for entry in repo.file_list_page(page).await?.entries {
                if let EntryKind::File { chunks } = entry.kind {
                    for chunk in &chunks {
                        if !known.add(chunk) {
                            return Ok(false);
                        }
                    }
                }
            }
        }
        Ok::<bool, tidemark_store::Error>(true)
    };
    match read.await {
        Ok(true) => {}
        Ok(false) if !quiet => eprintln!(
            "tidemark: backup: note: backup {} has more than {KNOWN_MAX} chunks; the rest are compressed again and stored only where new",
            newest.id
        ),
        Ok(false) => {}
        Err(e) => {
            // Not fatal: every chunk is then written with `Create`, which still stores
            // each content once.
            if !quiet {
                eprintln!(
                    "tidemark: backup: warning: cannot read backup {}'s file list ({e}): deduplicating without it",
                    newest.id
                );
            }
            known = KnownChunks::new();
        }
    }
    known.seal();
    Ok((known, skipped))
}

/// What the copy phase produced.
struct Copied {
    start: BackupStart,
    stop_lsn: Lsn,
    stop_timeline: TimelineId,
    stop_time: chrono::DateTime<chrono::Utc>,
    tablespaces: Vec<TablespaceRecord>,
    /// The file list's blob.
    file_list: Digest,
    /// Regular files, and their bytes.
    files: u64,
    size: u64,
    /// Stored bytes the list (pages, index) and the server's manifest added.
    list_added: u64,
    stats: chunks::UploadStats,
}

/// The most entries waiting for their chunks before the reader waits for them.
const MAX_PENDING: usize = 10_000;

/// A member of the backup that is not in a page of the file list yet.
struct Pending {
    entry: FileEntry,
    /// Chunks stored so far (a file).
    stored: usize,
    /// Whether all of its data arrived (a file).
    ended: bool,
}

/// The copy phase: turns the stream's events into stored chunks and the file list, the
/// list written page by page as its entries complete. Memory holds the chunks in flight,
/// the entries waiting for them (those of the last few files) and one page.
struct Copy {
    repo: Repo,
    uploader: Uploader,
    progress: Progress,
    start: Option<BackupStart>,
    stop: Option<(Lsn, TimelineId, chrono::DateTime<chrono::Utc>)>,
    tablespaces: Vec<TablespaceRecord>,
    /// The tablespace of the archive being read (`None`: the data directory).
    archive: Option<Option<u32>>,
    /// Entries not yet in a page, in the server's order; the first is entry number
    /// `first`. A file leaves once every chunk of it is stored, and only from the front,
    /// so the pages keep the server's order.
    pending: VecDeque<Pending>,
    first: usize,
    /// [`MAX_PENDING`] (tests lower it).
    max_pending: usize,
    /// The file being read, its chunker and the bytes seen.
    file: Option<(Chunker, u64)>,
    list: FileListWriter,
    files: u64,
    size: u64,
    /// Stored bytes the server's manifest added.
    manifest_added: u64,
    /// The server's `backup_manifest`: its chunker, and its chunks so far.
    manifest: Option<Chunker>,
    manifest_chunks: Chunked,
}

/// A stream that does not follow the protocol's order.
fn out_of_order(what: &str) -> Failure {
    BackupError::Malformed(what.to_string()).into()
}

impl Copy {
    fn new(repo: Repo, uploader: Uploader, page_bytes: usize, quiet: bool) -> Copy {
        Copy {
            list: FileListWriter::new(repo.clone(), page_bytes),
            repo,
            uploader,
            progress: Progress::new("backup", None, !quiet),
            start: None,
            stop: None,
            tablespaces: Vec::new(),
            archive: None,
            pending: VecDeque::new(),
            first: 0,
            max_pending: MAX_PENDING,
            file: None,
            files: 0,
            size: 0,
            manifest_added: 0,
            manifest: None,
            manifest_chunks: Chunked::default(),
        }
    }

    async fn handle(&mut self, event: BackupEvent) -> Result<(), Failure> {
        match event {
            BackupEvent::Started(start) => {
                let total: u64 = start.tablespaces.iter().filter_map(|t| t.size_kb).sum();
                if total > 0 {
                    self.progress.set_total(total * 1024);
                }
                for t in &start.tablespaces {
                    if let (Some(oid), Some(location)) = (t.oid, &t.location) {
                        self.tablespaces.push(TablespaceRecord {
                            oid,
                            location: location.clone(),
                        });
                    }
                }
                self.start = Some(start);
            }
            BackupEvent::ArchiveStart {
                name,
                tablespace_location,
            } => {
                let tablespace = match tablespace_location {
                    None => None,
                    Some(location) => Some(
                        self.tablespaces
                            .iter()
                            .find(|t| t.location == location)
                            .map(|t| t.oid)
                            .ok_or_else(|| {
                                out_of_order(&format!(
                                    "archive {name} is for {location:?}, not a tablespace the backup announced"
                                ))
                            })?,
                    ),
                };
                self.archive = Some(tablespace);
            }
            BackupEvent::Entry(entry) => {
                let Some(tablespace) = self.archive else {
                    return Err(out_of_order("a member outside any archive"));
                };
                if self.file.is_some() {
                    return Err(out_of_order("a member inside another"));
                }
                let Some(path) = normalize(&entry.path) else {
                    // The archive's root itself (`.` or `./`).
                    return Ok(());
                };
                let kind = match entry.kind {
                    tar::EntryKind::File => {
                        let number = self.first + self.pending.len();
                        self.file = Some((Chunker::new(number), 0));
                        EntryKind::File {
                            chunks: vec![Digest([0; 32]); chunk_count(entry.size)],
                        }
                    }
                    tar::EntryKind::Dir => EntryKind::Dir,
                    tar::EntryKind::Symlink { target } => EntryKind::Symlink { target },
                };
                let is_file = matches!(kind, EntryKind::File { .. });
                self.pending.push_back(Pending {
                    entry: FileEntry {
                        tablespace,
                        path,
                        mode: entry.mode & 0o7777,
                        size: entry.size,
                        mtime: entry.mtime,
                        kind,
                    },
                    stored: 0,
                    ended: !is_file,
                });
                self.flush().await?;
            }
            BackupEvent::Data(piece) => {
                let Some((chunker, seen)) = &mut self.file else {
                    return Err(out_of_order("data outside a file"));
                };
                *seen += piece.len() as u64;
                self.progress.add(piece.len() as u64);
                let chunks = chunker.push(piece);
                for (place, data) in chunks {
                    let done = self.uploader.submit(place, data).await?;
                    self.record(done);
                }
                self.flush().await?;
            }
            BackupEvent::EntryEnd => {
                if let Some((chunker, seen)) = self.file.take() {
                    let pending = self.pending.back_mut().expect("the file's entry");
                    if seen != pending.entry.size {
                        return Err(out_of_order(&format!(
                            "{} announced {} bytes and carried {seen}",
                            pending.entry.path, pending.entry.size
                        )));
                    }
                    pending.ended = true;
                    if let Some((place, data)) = chunker.finish() {
                        let done = self.uploader.submit(place, data).await?;
                        self.record(done);
                    }
                    self.flush().await?;
                }
            }
            BackupEvent::ArchiveEnd => self.archive = None,
            BackupEvent::Manifest(piece) => {
                // Small (a line per file) and last: stored chunk by chunk as it comes.
                self.manifest_chunks.size += piece.len() as u64;
                let chunker = self.manifest.get_or_insert_with(|| Chunker::new(0));
                for (_, data) in chunker.push(piece) {
                    self.store_manifest_chunk(data).await?;
                }
            }
            // Counted and logged by the caller (`Notices`) before events reach here.
            BackupEvent::Progress(_) | BackupEvent::Notice(_) => {}
            BackupEvent::Finished(end) => {
                // pgclient's plain values into the repository's types.
                self.stop = Some((end.end_lsn, TimelineId(end.timeline), now()));
            }
        }
        Ok(())
    }

    fn record(&mut self, done: Vec<ChunkDone>) {
        for d in done {
            let pending = &mut self.pending[d.place.entry - self.first];
            if let EntryKind::File { chunks } = &mut pending.entry.kind {
                chunks[d.place.index] = d.digest;
                pending.stored += 1;
            }
        }
    }

    /// Moves the complete entries at the front into the pages, storing each page that
    /// fills. When more than [`MAX_PENDING`] entries wait (small files behind a chunk
    /// slow to store), waits for every chunk in flight first.
    async fn flush(&mut self) -> Result<(), Failure> {
        while let Some(front) = self.pending.front() {
            let complete = front.ended
                && match &front.entry.kind {
                    EntryKind::File { chunks } => front.stored == chunks.len(),
                    _ => true,
                };
            if !complete {
                if self.pending.len() <= self.max_pending || self.uploader.in_flight() == 0 {
                    break;
                }
                let done = self.uploader.drain().await?;
                self.record(done);
                continue;
            }
            let done = self.pending.pop_front().expect("a front entry");
            self.first += 1;
            if let EntryKind::File { .. } = done.entry.kind {
                self.files += 1;
                self.size += done.entry.size;
            }
            self.list.push(&done.entry).await?;
        }
        Ok(())
    }

    async fn store_manifest_chunk(&mut self, data: bytes::Bytes) -> Result<(), Failure> {
        let put = self.repo.put_blob(data).await?;
        self.manifest_added += put.added();
        self.manifest_chunks.chunks.push(put.digest);
        Ok(())
    }

    async fn finish(mut self) -> Result<Copied, Failure> {
        if self.file.is_some() {
            return Err(out_of_order("the stream ended inside a file"));
        }
        let done = self.uploader.drain().await?;
        self.record(done);
        self.flush().await?;
        self.progress.finish();
        let start = self
            .start
            .take()
            .ok_or_else(|| out_of_order("no start position"))?;
        let (stop_lsn, stop_timeline, stop_time) = self
            .stop
            .take()
            .ok_or_else(|| out_of_order("no end position"))?;
        if let Some(waiting) = self.pending.front() {
            let chunks = match &waiting.entry.kind {
                EntryKind::File { chunks } => chunks.len(),
                _ => 0,
            };
            return Err(out_of_order(&format!(
                "{}: {} of {chunks} chunks stored",
                waiting.entry.path, waiting.stored
            )));
        }
        if let Some(chunker) = self.manifest.take() {
            if let Some((_, data)) = chunker.finish() {
                self.store_manifest_chunk(data).await?;
            }
        }
        if self.manifest_chunks.size == 0 {
            return Err(out_of_order("no backup_manifest"));
        }
        let (put, list_added) = self.list.finish(self.manifest_chunks).await?;
        Ok(Copied {
            start,
            stop_lsn,
            stop_timeline,
            stop_time,
            tablespaces: self.tablespaces,
            file_list: put.digest,
            files: self.files,
            size: self.size,
            list_added: list_added + self.manifest_added,
            stats: self.uploader.stats(),
        })
    }
}

/// A member's path without `.` components (PostgreSQL writes `./pg_wal/archive_status`);
/// `None` for the archive's root. Anything else is kept as sent: `restore` refuses
/// paths that would leave the data directory.
fn normalize(path: &str) -> Option<String> {
    let parts: Vec<String> = Path::new(path)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.is_empty() {
        None
    } else if path.starts_with('/') {
        // Keep an absolute path visibly absolute (restore refuses it).
        Some(format!("/{}", parts[1..].join("/")))
    } else {
        Some(parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tidemark_pgclient::proto::{BackupEnd, BackupTablespace};
    use tidemark_store::backup::FileList;

    /// A local repository in a temporary directory.
    fn local_repo() -> (tempfile::TempDir, Repo) {
        let dir = tempfile::tempdir().unwrap();
        let backend =
            tidemark_store::backend::local::LocalBackend::new(dir.path().join("repo")).unwrap();
        let repo = Repo::new(
            std::sync::Arc::new(backend),
            tidemark_store::Compression::Lz4,
        );
        (dir, repo)
    }

    #[tokio::test]
    async fn backups_started_in_one_second_get_their_own_ids() {
        let (_dir, repo) = local_repo();
        let stanza = tidemark_store::catalog::Stanza::new("main").unwrap();
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-21T10:32:07.25Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let mut ids = Vec::new();
        for i in 0..3 {
            // Three backups: their records differ (the same record twice is one backup
            // whose write was repeated, and keeps its id).
            let mut record = BackupRecord::example("", t);
            record.label = format!("backup {i}");
            ids.push(write_record(&repo, &stanza, record, t).await.unwrap().id);
        }
        assert_eq!(
            ids,
            [
                "20261121T103207Z",
                "20261121T103207Z-2",
                "20261121T103207Z-3"
            ]
        );
        let listed: Vec<String> = repo
            .backups(&stanza)
            .await
            .unwrap()
            .records
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(listed, ids);
    }

    #[tokio::test]
    async fn a_damaged_record_is_skipped_by_the_deduplication_hint() {
        let (dir, repo) = local_repo();
        let stanza = tidemark_store::catalog::Stanza::new("main").unwrap();
        let t = now();
        let mut digests = Vec::new();
        for (i, id) in ["20261121T000000Z", "20261122T000000Z"].iter().enumerate() {
            let chunk = repo
                .put_blob(bytes::Bytes::from(format!("chunk of {id}")))
                .await
                .unwrap()
                .digest;
            digests.push(chunk);
            let entry = FileEntry {
                tablespace: None,
                path: "PG_VERSION".into(),
                mode: 0o600,
                size: 10,
                mtime: 1,
                kind: EntryKind::File {
                    chunks: vec![chunk],
                },
            };
            let (list, _) = repo
                .put_file_list(&[entry], b"{}", CHUNK_SIZE, PAGE_BYTES)
                .await
                .unwrap();
            let record = BackupRecord {
                file_list: list.digest,
                ..BackupRecord::example(id, t + chrono::Duration::seconds(i as i64))
            };
            repo.put_backup(&stanza, &record).await.unwrap();
        }
        // The newest record damaged: the older one's chunks are the hint, and the
        // warning names the damaged one.
        let keys = repo.backup_keys(&stanza, "20261122T000000Z").await.unwrap();
        let path = dir.path().join("repo").join(keys[0].as_str());
        let mut body = std::fs::read(&path).unwrap();
        let at = body.len() - 3;
        body[at] ^= 0x01;
        std::fs::write(&path, body).unwrap();
        let (known, warnings) = previous_chunks(&repo, &stanza, true).await.unwrap();
        assert!(known.contains(&digests[0]) && !known.contains(&digests[1]));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with("backup 20261122T000000Z's record cannot be read")
                && warnings[0].contains("checksum mismatch"),
            "{warnings:?}"
        );
    }

    fn member(path: &str, size: u64, kind: tar::EntryKind) -> BackupEvent {
        BackupEvent::Entry(tar::TarEntry {
            path: path.into(),
            size,
            mode: 0o100600,
            kind,
            mtime: 7,
        })
    }

    /// The events of a backup of `files` (path, content) with a directory between each
    /// two, the data in pieces of `piece` bytes, and `manifest` as the server's manifest.
    fn stream(files: &[(&str, Vec<u8>)], piece: usize, manifest: &[u8]) -> Vec<BackupEvent> {
        let mut events = vec![
            BackupEvent::Started(BackupStart {
                start_lsn: tidemark_pgclient::Lsn(0x2000028),
                timeline: 1,
                tablespaces: vec![BackupTablespace {
                    oid: None,
                    location: None,
                    size_kb: None,
                }],
            }),
            BackupEvent::ArchiveStart {
                name: "base.tar".into(),
                tablespace_location: None,
            },
            member(".", 0, tar::EntryKind::Dir),
        ];
        for (i, (path, content)) in files.iter().enumerate() {
            events.push(member(&format!("./d{i}"), 0, tar::EntryKind::Dir));
            events.push(member(path, content.len() as u64, tar::EntryKind::File));
            for part in content.chunks(piece) {
                events.push(BackupEvent::Data(Bytes::copy_from_slice(part)));
            }
            events.push(BackupEvent::EntryEnd);
        }
        events.push(BackupEvent::ArchiveEnd);
        for part in manifest.chunks(1000) {
            events.push(BackupEvent::Manifest(Bytes::copy_from_slice(part)));
        }
        events.push(BackupEvent::Finished(BackupEnd {
            end_lsn: tidemark_pgclient::Lsn(0x2000100),
            timeline: 1,
        }));
        events
    }

    async fn copy(
        repo: &Repo,
        events: Vec<BackupEvent>,
        page_bytes: usize,
        max_pending: usize,
    ) -> Result<Copied, Failure> {
        let uploader = Uploader::new(repo.clone(), KnownChunks::new(), 3);
        let mut copy = Copy::new(repo.clone(), uploader, page_bytes, true);
        copy.max_pending = max_pending;
        for event in events {
            copy.handle(event).await?;
        }
        copy.finish().await
    }

    #[tokio::test]
    async fn the_file_list_is_written_in_pages_in_the_servers_order() {
        let (_dir, repo) = local_repo();
        let chunk = CHUNK_SIZE as usize;
        let content = |len: usize, seed: u8| -> Vec<u8> {
            (0..len)
                .map(|i| (i as u8).wrapping_mul(31) ^ seed)
                .collect()
        };
        let files = [
            ("base/1/1259", content(2 * chunk + 5, 1)),
            ("empty", Vec::new()),
            ("PG_VERSION", b"15\n".to_vec()),
            ("base/1/2619", content(chunk, 2)),
        ];
        let manifest = content(3 * chunk / 2, 9);
        // A page per entry (each one crosses the limit); pieces that straddle chunk
        // boundaries, so chunks complete out of order with entries waiting on them; and
        // the same with the reader waiting for the chunks whenever an entry waits.
        for max_pending in [MAX_PENDING, 1] {
            let copied = copy(&repo, stream(&files, 300_000, &manifest), 1, max_pending)
                .await
                .unwrap();
            assert_eq!((copied.files, copied.size), (4, (3 * chunk + 5 + 3) as u64));

            let index = repo.get_blob(&copied.file_list).await.unwrap();
            let list = FileList::from_bytes(&copied.file_list, &index).unwrap();
            assert_eq!(list.pages.len(), 8);
            let mut entries = Vec::new();
            for page in &list.pages {
                entries.extend(repo.file_list_page(page).await.unwrap().entries);
            }
            assert_eq!(list.entries, entries.len() as u64);
            let got: Vec<(&str, bool)> = entries
                .iter()
                .map(|e| (e.path.as_str(), matches!(e.kind, EntryKind::Dir)))
                .collect();
            assert_eq!(
                got,
                [
                    ("d0", true),
                    ("base/1/1259", false),
                    ("d1", true),
                    ("empty", false),
                    ("d2", true),
                    ("PG_VERSION", false),
                    ("d3", true),
                    ("base/1/2619", false),
                ]
            );
            // Every file's chunks, in order, are its content.
            for (entry, (_, content)) in entries.iter().skip(1).step_by(2).zip(&files) {
                let EntryKind::File { chunks } = &entry.kind else {
                    panic!("{entry:?}")
                };
                let mut restored = Vec::new();
                for digest in chunks {
                    restored.extend(repo.get_blob(digest).await.unwrap());
                }
                assert_eq!(&restored, content, "{}", entry.path);
            }
            let mut restored = Vec::new();
            for digest in &list.pg_manifest.chunks {
                restored.extend(repo.get_blob(digest).await.unwrap());
            }
            assert_eq!(list.pg_manifest.size, manifest.len() as u64);
            assert_eq!(restored, manifest);
        }
    }

    #[tokio::test]
    async fn a_stream_cut_short_or_without_a_manifest_is_refused() {
        let (_dir, repo) = local_repo();
        let mut events = stream(&[("f", vec![1; 10])], 4, b"{}");
        // Cut inside the file: after its first piece.
        events.truncate(6);
        let e = copy(&repo, events, 100, MAX_PENDING)
            .await
            .err()
            .expect("refused");
        assert!(e.to_string().contains("inside a file"), "{e}");
        let events = stream(&[("f", vec![1; 10])], 4, b"");
        let e = copy(&repo, events, 100, MAX_PENDING)
            .await
            .err()
            .expect("refused");
        assert!(e.to_string().contains("no backup_manifest"), "{e}");
    }

    #[test]
    fn member_paths_lose_dot_components_only() {
        assert_eq!(
            normalize("./pg_wal/archive_status").as_deref(),
            Some("pg_wal/archive_status")
        );
        assert_eq!(normalize("base/1/1259").as_deref(), Some("base/1/1259"));
        assert_eq!(normalize("."), None);
        assert_eq!(normalize("./"), None);
        assert_eq!(normalize("../x").as_deref(), Some("../x"));
        assert_eq!(normalize("/etc/passwd").as_deref(), Some("/etc/passwd"));
    }
}
