//! Taking a base backup into the repository.
//!
//! In order:
//! 1. an SQL connection reads who the server is and whether it archives WAL (a backup
//!    without its WAL cannot be restored, so a server that does not archive is refused
//!    before any work), and the databases with their extensions;
//! 2. the stanza's cluster record is created or checked: another cluster's backup is
//!    refused;
//! 3. `BASE_BACKUP` (with the server's manifest) streams over a replication connection;
//!    every file is cut into chunks that the [`chunks`] pipeline hashes, deduplicates,
//!    compresses and stores with bounded parallelism and memory;
//! 4. the file list and PostgreSQL's `backup_manifest` are stored as blobs;
//! 5. [`wal`] waits until the WAL from the backup's start to its stop is archived;
//! 6. only then is the backup's record written. Until that moment the backup does not
//!    exist: an interrupted one leaves unreferenced blobs and nothing `info` lists.

pub mod chunks;
pub mod wal;

use std::collections::HashSet;
use std::path::{Component, Path};
use std::time::{Duration, Instant};

use serde::Serialize;
use tidemark_store::backup::{
    self, BackupRecord, DatabaseRecord, EntryKind, ExtensionRecord, FileEntry, FileList,
    TablespaceRecord, CHUNK_SIZE, FILE_LIST_FORMAT,
};
use tidemark_store::pg::{Lsn, SegmentSize, TimelineId};
use tidemark_store::repo::now;
use tidemark_store::{Digest, Repo};

use crate::cli::config::Settings;
use crate::cli::pgconn::{self, describe_pg_error, PgTarget, ProcessEnv};
use crate::cmd::open_repo;
use crate::exit::Failure;
use crate::progress::Progress;
use crate::replication::conn::{BackupEvent, ReplicationConn};
use crate::replication::proto::{BackupStart, BaseBackupOptions};
use crate::replication::tar;
use crate::server::ServerFacts;
use chunks::{chunk_count, ChunkDone, Chunker, Uploader};

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
}

/// What backups need of a server.
impl ServerFacts {
    /// Refuses a server whose backups could not be restored; returns warnings.
    fn check_for_backup(&self) -> Result<Vec<String>, Failure> {
        if self.in_recovery {
            return Err(Failure::Postgres(
                "the server is a standby (in recovery): tidemark takes backups from the primary; \
                 point pg_host at the primary"
                    .into(),
            ));
        }
        if self.archive_mode == "off" {
            return Err(Failure::Postgres(
                "WAL archiving is not configured (archive_mode = off): a backup cannot be restored \
                 without its WAL; set archive_mode = on and archive_command = 'tidemark archive-push %p' \
                 in postgresql.conf, restart PostgreSQL, and run the backup again"
                    .into(),
            ));
        }
        let command = self.archive_command.trim();
        if self.archive_library.trim().is_empty() && (command.is_empty() || command == "(disabled)")
        {
            return Err(Failure::Postgres(
                "WAL archiving is not configured: archive_mode is on but archive_command is empty; \
                 set archive_command = 'tidemark archive-push %p' and reload PostgreSQL"
                    .into(),
            ));
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
    let started = Instant::now();
    let stanza = &settings.stanza;
    let target = pgconn::resolve(&settings.pg, &ProcessEnv).map_err(Failure::Postgres)?;
    // Replication access first: it is what a backup needs above all, and its errors
    // (no REPLICATION attribute, no pg_hba.conf line) say exactly what to change.
    let mut conn = ReplicationConn::connect(&target)
        .await
        .map_err(|e| Failure::Postgres(e.to_string()))?;
    let identity = conn
        .identify_system()
        .await
        .map_err(|e| Failure::Postgres(e.to_string()))?;
    let client = pgconn::connect(&target).await.map_err(Failure::Postgres)?;
    let server = ServerFacts::read(&client).await?;
    let warnings = server.check_for_backup()?;
    if !req.quiet {
        for w in &warnings {
            eprintln!("tidemark: backup: warning: {w}");
        }
    }
    let segment_size = SegmentSize::new(server.segment_size)
        .map_err(|e| Failure::Postgres(format!("the server's WAL segment size: {e}")))?;

    let repo = open_repo(settings).await?;
    repo.ensure_format().await?;
    repo.ensure_cluster(stanza, &server.cluster_record("backup"))
        .await?;

    let databases = read_databases(&target, &client).await?;
    let known = previous_chunks(&repo, stanza, req.quiet).await?;

    if identity.system_id.0 != server.system_id {
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
    let mut copy = Copy::new(Uploader::new(repo.clone(), known, max_in_flight), req.quiet);
    let mut stream = conn
        .base_backup(&BaseBackupOptions {
            label: label.clone(),
            fast_checkpoint: req.fast_checkpoint,
            manifest: true,
            server_major: 0,
        })
        .await
        .map_err(|e| Failure::Postgres(e.to_string()))?;
    while let Some(event) = stream
        .next_event()
        .await
        .map_err(|e| Failure::Postgres(format!("the backup stream failed: {e}")))?
    {
        copy.handle(event).await?;
    }
    drop(stream);
    conn.close().await.ok();
    let copied = copy.finish().await?;
    let copy_seconds = started.elapsed().as_secs_f64();

    // The file list and the server's manifest, stored like any blob.
    let list = FileList {
        format: FILE_LIST_FORMAT,
        entries: copied.entries,
    };
    let files = list
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .count() as u64;
    let size: u64 = list.entries.iter().map(|e| e.size).sum();
    let list_put = repo.put_blob(list.to_bytes().into()).await?;
    let manifest_put = repo.put_blob(copied.pg_manifest.into()).await?;

    // The WAL that makes it consistent, before the record that makes it exist.
    if copied.start.timeline != copied.stop_timeline {
        return Err(Failure::Postgres(format!(
            "the server's timeline changed during the backup ({} to {}): take it again",
            copied.start.timeline, copied.stop_timeline
        )));
    }
    let needed = wal::needed_segments(
        copied.start.timeline,
        copied.start.start_lsn,
        copied.stop_lsn,
        segment_size,
    );
    let wal_wait =
        wal::wait_for_segments(&repo, stanza, &needed, req.wal_timeout, &client, req.quiet)
            .await
            .map_err(Failure::Postgres)?;

    let stats = copied.stats;
    let added = |p: &tidemark_store::repo::BlobPut| if p.deduplicated { 0 } else { p.stored_len };
    let record = BackupRecord {
        id: String::new(),
        label: label.clone(),
        system_id: server.system_id,
        pg_version: server.version.clone(),
        pg_major: server.pg_major(),
        wal_segment_size: server.segment_size,
        timeline: copied.start.timeline.0,
        start_lsn: copied.start.start_lsn.to_string(),
        stop_timeline: copied.stop_timeline.0,
        stop_lsn: copied.stop_lsn.to_string(),
        start_time,
        stop_time: copied.stop_time,
        tablespaces: copied.tablespaces,
        databases,
        chunk_size: CHUNK_SIZE,
        file_list: list_put.digest,
        pg_manifest: manifest_put.digest,
        files,
        size,
        chunks: stats.chunks,
        chunks_added: stats.chunks_added,
        stored_added: stats.stored_added + added(&list_put) + added(&manifest_put),
        tidemark_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let record = write_record(&repo, stanza, record, start_time).await?;
    let id = record.id.clone();
    Ok(BackupReport {
        repo: settings.repo.to_string(),
        stanza: stanza.to_string(),
        id,
        label,
        timeline: record.timeline,
        start_lsn: record.start_lsn,
        stop_lsn: record.stop_lsn,
        files,
        size,
        chunks: record.chunks,
        chunks_added: record.chunks_added,
        stored_added: record.stored_added,
        copy_seconds,
        wal_wait_seconds: wal_wait.as_secs_f64(),
        seconds: started.elapsed().as_secs_f64(),
        warnings,
    })
}

/// Writes the record under the id of its start time; when a backup that started in the
/// same second holds that id, under the next free `<id>-<n>`. Create-only writes make
/// the choice safe between concurrent backups.
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
    Err(Failure::Postgres(format!(
        "a hundred backups started in the second {base}: no free id left"
    )))
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
        .map_err(|e| Failure::Postgres(format!("listing databases: {}", describe_pg_error(&e))))?;
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
    let client = pgconn::connect(&target).await?;
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

/// The chunks of the stanza's newest backup: the repository holds them, so they are
/// neither compressed nor written again.
async fn previous_chunks(
    repo: &Repo,
    stanza: &tidemark_store::catalog::Stanza,
    quiet: bool,
) -> Result<HashSet<Digest>, Failure> {
    let backups = repo.backups(stanza).await?;
    let Some(newest) = backups.last() else {
        return Ok(HashSet::new());
    };
    match repo.backup_files(newest).await {
        Ok(list) => Ok(list
            .entries
            .into_iter()
            .flat_map(|e| match e.kind {
                EntryKind::File { chunks } => chunks,
                _ => Vec::new(),
            })
            .collect()),
        Err(e) => {
            // Not fatal: every chunk is then written with `Create`, which still stores
            // each content once.
            if !quiet {
                eprintln!(
                    "tidemark: backup: warning: cannot read backup {}'s file list ({e}): deduplicating without it",
                    newest.id
                );
            }
            Ok(HashSet::new())
        }
    }
}

/// What the copy phase produced.
struct Copied {
    start: BackupStart,
    stop_lsn: Lsn,
    stop_timeline: TimelineId,
    stop_time: chrono::DateTime<chrono::Utc>,
    tablespaces: Vec<TablespaceRecord>,
    entries: Vec<FileEntry>,
    pg_manifest: Vec<u8>,
    stats: chunks::UploadStats,
}

/// The copy phase: turns the stream's events into file entries and stored chunks.
struct Copy {
    uploader: Uploader,
    progress: Progress,
    start: Option<BackupStart>,
    stop: Option<(Lsn, TimelineId, chrono::DateTime<chrono::Utc>)>,
    tablespaces: Vec<TablespaceRecord>,
    /// The tablespace of the archive being read (`None`: the data directory).
    archive: Option<Option<u32>>,
    entries: Vec<FileEntry>,
    /// Chunks stored so far per file entry (to check every one arrived).
    stored: Vec<usize>,
    /// The file being read, its chunker and the bytes seen.
    file: Option<(Chunker, u64)>,
    pg_manifest: Vec<u8>,
}

/// A stream that does not follow the protocol's order.
fn out_of_order(what: &str) -> Failure {
    Failure::Postgres(format!("the backup stream is malformed: {what}"))
}

impl Copy {
    fn new(uploader: Uploader, quiet: bool) -> Copy {
        Copy {
            uploader,
            progress: Progress::new("backup", None, !quiet),
            start: None,
            stop: None,
            tablespaces: Vec::new(),
            archive: None,
            entries: Vec::new(),
            stored: Vec::new(),
            file: None,
            pg_manifest: Vec::new(),
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
                        self.file = Some((Chunker::new(self.entries.len()), 0));
                        EntryKind::File {
                            chunks: vec![Digest([0; 32]); chunk_count(entry.size)],
                        }
                    }
                    tar::EntryKind::Dir => EntryKind::Dir,
                    tar::EntryKind::Symlink { target } => EntryKind::Symlink { target },
                };
                self.entries.push(FileEntry {
                    tablespace,
                    path,
                    mode: entry.mode & 0o7777,
                    size: entry.size,
                    mtime: entry.mtime,
                    kind,
                });
                self.stored.push(0);
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
            }
            BackupEvent::EntryEnd => {
                if let Some((chunker, seen)) = self.file.take() {
                    let entry = self.entries.last().expect("the file's entry");
                    if seen != entry.size {
                        return Err(out_of_order(&format!(
                            "{} announced {} bytes and carried {seen}",
                            entry.path, entry.size
                        )));
                    }
                    if let Some((place, data)) = chunker.finish() {
                        let done = self.uploader.submit(place, data).await?;
                        self.record(done);
                    }
                }
            }
            BackupEvent::ArchiveEnd => self.archive = None,
            BackupEvent::Manifest(piece) => self.pg_manifest.extend_from_slice(&piece),
            BackupEvent::Progress(_) => {}
            BackupEvent::Finished(end) => {
                self.stop = Some((end.end_lsn, end.timeline, now()));
            }
        }
        Ok(())
    }

    fn record(&mut self, done: Vec<ChunkDone>) {
        for d in done {
            if let EntryKind::File { chunks } = &mut self.entries[d.place.entry].kind {
                chunks[d.place.index] = d.digest;
                self.stored[d.place.entry] += 1;
            }
        }
    }

    async fn finish(mut self) -> Result<Copied, Failure> {
        let done = self.uploader.drain().await?;
        self.record(done);
        self.progress.finish();
        let start = self
            .start
            .take()
            .ok_or_else(|| out_of_order("no start position"))?;
        let (stop_lsn, stop_timeline, stop_time) = self
            .stop
            .take()
            .ok_or_else(|| out_of_order("no end position"))?;
        if self.pg_manifest.is_empty() {
            return Err(out_of_order("no backup_manifest"));
        }
        for (entry, stored) in self.entries.iter().zip(&self.stored) {
            if let EntryKind::File { chunks } = &entry.kind {
                if chunks.len() != *stored {
                    return Err(out_of_order(&format!(
                        "{}: {stored} of {} chunks stored",
                        entry.path,
                        chunks.len()
                    )));
                }
            }
        }
        Ok(Copied {
            start,
            stop_lsn,
            stop_timeline,
            stop_time,
            tablespaces: self.tablespaces,
            stats: self.uploader.stats(),
            entries: self.entries,
            pg_manifest: self.pg_manifest,
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

    #[tokio::test]
    async fn backups_started_in_one_second_get_their_own_ids() {
        let dir = tempfile::tempdir().unwrap();
        let backend =
            tidemark_store::backend::local::LocalBackend::new(dir.path().join("repo")).unwrap();
        let repo = Repo::new(
            std::sync::Arc::new(backend),
            tidemark_store::Compression::Lz4,
        );
        let stanza = tidemark_store::catalog::Stanza::new("main").unwrap();
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-21T10:32:07.25Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(
                write_record(&repo, &stanza, BackupRecord::example("", t), t)
                    .await
                    .unwrap()
                    .id,
            );
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
            .into_iter()
            .map(|b| b.id)
            .collect();
        assert_eq!(listed, ids);
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
