//! Base backups in the repository: the backup record, its file list, and their keys.
//!
//! A backup is two things:
//!
//! - its **record**, `stanzas/<stanza>/backups/<id>` (a checked record, see
//!   [`crate::catalog`]): where it starts and stops in WAL, when, what PostgreSQL, the
//!   tablespaces, the databases and their extensions, sizes, and the digest of its file
//!   list;
//! - its **file list** (a blob holding [`FileList`] as JSON): the digests of its
//!   **pages** (blobs holding [`FileListPage`]: every directory, symlink and file of the
//!   data directory and of each tablespace, with mode, size and the digests of the file's
//!   chunks, in the order the server sent them), and PostgreSQL's own `backup_manifest`,
//!   cut into chunks like any file.
//!
//! The list is written in pages of about [`PAGE_BYTES`] as the backup runs, and read
//! page by page by a restore, so neither holds more than a page of it in memory whatever
//! the size of the database: a page of 1 MiB describes about 15 GB of data, and the index
//! of pages takes about 70 bytes per page.
//!
//! Files are cut into chunks of [`CHUNK_SIZE`] bytes at fixed offsets (the last one
//! shorter). PostgreSQL changes relation files in place, page by page, so fixed offsets
//! keep every unchanged megabyte identical from one backup to the next, and identical
//! chunks are stored once. Fixed offsets also let a restore write chunks in parallel,
//! each at its own offset.
//!
//! The record is written last, with `Create`, after every blob it names is durable: a
//! backup without its record does not exist, and an interrupted backup leaves only
//! unreferenced blobs behind.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{self, Stanza};
use crate::pg::{Lsn, SystemId, TimelineId};
use crate::serde_pg;
use crate::{Digest, Error, Key, Result};

/// The size of the chunks files are cut into (the last chunk of a file is shorter).
pub const CHUNK_SIZE: u64 = 1 << 20;

/// The format of [`FileList`] and [`FileListPage`] this build writes and reads. Format 1
/// (sessions before paging) held every entry in one blob and is not read.
pub const FILE_LIST_FORMAT: u32 = 2;

/// The size a page of the file list is closed at (its JSON; the entry that crosses it
/// ends the page).
pub const PAGE_BYTES: usize = 1 << 20;

/// Everything about one base backup except its file list.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupRecord {
    /// The backup's id: its start time, `YYYYMMDDTHHMMSSZ`, with `-2`, `-3`… added when
    /// backups started in the same second.
    pub id: String,
    /// The label it was taken with.
    pub label: String,
    /// The cluster's system identifier.
    #[serde(with = "serde_pg::system_id")]
    pub system_id: SystemId,
    /// The server's `server_version`, as it reported it.
    pub pg_version: String,
    /// The server's major version.
    pub pg_major: u32,
    /// WAL segment size of the cluster.
    pub wal_segment_size: u64,
    /// The timeline the backup starts on.
    #[serde(with = "serde_pg::timeline")]
    pub timeline: TimelineId,
    /// Where WAL replay must start (the backup checkpoint's redo point), stored as `X/X`.
    #[serde(with = "serde_pg::lsn")]
    pub start_lsn: Lsn,
    /// The timeline the backup ends on.
    #[serde(with = "serde_pg::timeline")]
    pub stop_timeline: TimelineId,
    /// Where the backup becomes consistent, stored as `X/X`.
    #[serde(with = "serde_pg::lsn")]
    pub stop_lsn: Lsn,
    /// When the backup started (before `BASE_BACKUP` was sent).
    pub start_time: DateTime<Utc>,
    /// When the server finished sending it.
    pub stop_time: DateTime<Utc>,
    /// The tablespaces other than the data directory.
    pub tablespaces: Vec<TablespaceRecord>,
    /// The databases, with their extensions.
    pub databases: Vec<DatabaseRecord>,
    /// The chunk size the files were cut with.
    pub chunk_size: u64,
    /// The blob holding the [`FileList`] (its pages and PostgreSQL's `backup_manifest`).
    pub file_list: Digest,
    /// Number of regular files.
    pub files: u64,
    /// Bytes of all regular files: the database's size as backed up.
    pub size: u64,
    /// Number of chunks the files were cut into.
    pub chunks: u64,
    /// Chunks this backup stored (the others were already in the repository).
    pub chunks_added: u64,
    /// Bytes this backup added to the repository (stored, compressed), file list included.
    pub stored_added: u64,
    /// The tidemark version that took it.
    pub tidemark_version: String,
    /// How many warnings (`NoticeResponse`) the server sent during `BASE_BACKUP`: a file
    /// it skipped, a page whose data checksum failed. `None` in records written before
    /// tidemark counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notices: Option<u64>,
    /// True when the server reported data checksum failures and the backup was recorded
    /// anyway (`backup --ignore-checksum-failures`): it holds damaged pages.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub checksum_failures_ignored: bool,
}

#[cfg(any(test, feature = "test-support"))]
impl BackupRecord {
    /// A record for tests: `id`, started and stopped at `at`, WAL `0/2000028` to
    /// `0/2000100` on timeline 1, PostgreSQL 15, no tablespaces or databases, 1 MiB
    /// chunks, placeholder digests and zero sizes. Set the fields a test cares about.
    pub fn example(id: &str, at: DateTime<Utc>) -> BackupRecord {
        BackupRecord {
            id: id.to_string(),
            label: format!("test {id}"),
            system_id: SystemId(1),
            pg_version: "15.8".into(),
            pg_major: 15,
            wal_segment_size: 16 << 20,
            timeline: TimelineId(1),
            start_lsn: Lsn(0x200_0028),
            stop_timeline: TimelineId(1),
            stop_lsn: Lsn(0x200_0100),
            start_time: at,
            stop_time: at,
            tablespaces: vec![],
            databases: vec![],
            chunk_size: CHUNK_SIZE,
            file_list: Digest::of(b"file list"),
            files: 0,
            size: 0,
            chunks: 0,
            chunks_added: 0,
            stored_added: 0,
            tidemark_version: "test".into(),
            notices: None,
            checksum_failures_ignored: false,
        }
    }
}

/// A tablespace other than the data directory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct TablespaceRecord {
    /// Its OID (the name of its link in `pg_tblspc`).
    pub oid: u32,
    /// Where it was on the server.
    pub location: String,
}

/// A database and its extensions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DatabaseRecord {
    /// Its name.
    pub name: String,
    /// Its OID.
    pub oid: u32,
    /// Its extensions; `None` when the database could not be read (no connection
    /// allowed, or no privilege).
    pub extensions: Option<Vec<ExtensionRecord>>,
}

/// An installed extension.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExtensionRecord {
    /// `pg_extension.extname`.
    pub name: String,
    /// `pg_extension.extversion`.
    pub version: String,
}

/// A backup's file list: its pages, in order, and the server's `backup_manifest`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileList {
    /// [`FILE_LIST_FORMAT`].
    pub format: u32,
    /// The blobs holding the [`FileListPage`]s; their entries, in this order, are every
    /// member of the backup in the order the server sent them.
    pub pages: Vec<Digest>,
    /// Number of entries over all pages.
    pub entries: u64,
    /// PostgreSQL's `backup_manifest`, byte for byte.
    pub pg_manifest: Chunked,
}

/// Content stored as chunks of [`CHUNK_SIZE`] (the last one shorter).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Chunked {
    /// Its size in bytes.
    pub size: u64,
    /// Its chunks, in order.
    pub chunks: Vec<Digest>,
}

/// One page of a file list.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileListPage {
    /// [`FILE_LIST_FORMAT`].
    pub format: u32,
    /// The members, in the order the server sent them.
    pub entries: Vec<FileEntry>,
}

/// What kind of member an entry is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum EntryKind {
    /// A regular file, whose content is its chunks.
    File {
        /// The digests of its chunks, in order.
        chunks: Vec<Digest>,
    },
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink {
        /// The link's target.
        target: String,
    },
}

/// One member of a backup.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// The tablespace it belongs to; `None` for the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace: Option<u32>,
    /// Its path relative to the data directory or the tablespace's directory, as the
    /// server sent it. Not trusted: a restore checks it before writing anything.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes (0 for directories and symlinks).
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// What it is.
    #[serde(flatten)]
    pub kind: EntryKind,
}

impl FileList {
    /// Encodes the list for its blob.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a file list serializes")
    }

    /// Decodes a list read from the blob `digest`.
    pub fn from_bytes(digest: &Digest, bytes: &[u8]) -> Result<FileList> {
        let list: FileList = decode(digest, bytes, "file list")?;
        check_format(digest, list.format)?;
        Ok(list)
    }
}

impl FileListPage {
    /// Decodes a page read from the blob `digest`.
    pub fn from_bytes(digest: &Digest, bytes: &[u8]) -> Result<FileListPage> {
        let page: FileListPage = decode(digest, bytes, "file list page")?;
        check_format(digest, page.format)?;
        Ok(page)
    }
}

fn decode<T: serde::de::DeserializeOwned>(digest: &Digest, bytes: &[u8], what: &str) -> Result<T> {
    // The format first, so that a list of another format is named as such rather than
    // as malformed.
    #[derive(Deserialize)]
    struct Format {
        format: u32,
    }
    if let Ok(Format { format }) = serde_json::from_slice::<Format>(bytes) {
        check_format(digest, format)?;
    }
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        key: catalog::blob_key(digest),
        detail: format!("not a backup {what}: {e}"),
    })
}

fn check_format(digest: &Digest, format: u32) -> Result<()> {
    if format == FILE_LIST_FORMAT {
        return Ok(());
    }
    Err(Error::Corrupt {
        key: catalog::blob_key(digest),
        detail: format!(
            "file list format {format} is not one this build reads ({FILE_LIST_FORMAT}){}",
            if format < FILE_LIST_FORMAT {
                ": the backup was taken by an earlier tidemark; take a new one"
            } else {
                ": upgrade tidemark"
            }
        ),
    })
}

/// Builds a file list's pages as entries arrive: [`FileListPages::push`] hands back a
/// full page's bytes to store, [`FileListPages::finish`] the last one. Memory: one page.
#[derive(Debug)]
pub struct FileListPages {
    limit: usize,
    page: Vec<u8>,
    in_page: usize,
    entries: u64,
}

impl FileListPages {
    /// Pages closed once their JSON reaches `limit` bytes ([`PAGE_BYTES`] outside tests).
    pub fn new(limit: usize) -> FileListPages {
        FileListPages {
            limit: limit.max(1),
            page: Vec::new(),
            in_page: 0,
            entries: 0,
        }
    }

    /// Adds `entry`; returns the page it closed, if it did.
    pub fn push(&mut self, entry: &FileEntry) -> Option<Vec<u8>> {
        if self.in_page == 0 {
            self.page.clear();
            self.page.extend_from_slice(
                format!("{{\"format\":{FILE_LIST_FORMAT},\"entries\":[").as_bytes(),
            );
        } else {
            self.page.push(b',');
        }
        serde_json::to_writer(&mut self.page, entry).expect("an entry serializes");
        self.in_page += 1;
        self.entries += 1;
        (self.page.len() >= self.limit).then(|| self.close())
    }

    /// The last page, if entries are waiting in it.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (self.in_page > 0).then(|| self.close())
    }

    /// Entries pushed so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    fn close(&mut self) -> Vec<u8> {
        self.page.extend_from_slice(b"]}");
        self.in_page = 0;
        std::mem::take(&mut self.page)
    }
}

/// The id of a backup that started at `start`.
pub fn backup_id(start: DateTime<Utc>) -> String {
    start.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The prefix of a stanza's backup records.
pub fn backups_prefix(stanza: &Stanza) -> String {
    format!("stanzas/{stanza}/backups/")
}

/// The key a backup record had before records carried their digest (`backups/<id>`);
/// `None` for an id that is not a valid key segment. Still read, never written.
pub fn backup_key(stanza: &Stanza, id: &str) -> Option<Key> {
    if !id_ok(id) {
        return None;
    }
    Key::new(format!("{}{id}", backups_prefix(stanza))).ok()
}

/// A backup record's key: `backups/<id>.<sha256>`, the digest of the record's stored bytes.
/// The digest makes the key depend on the content, so that a store that ignores
/// conditional writes can never replace one record with another: two backups that chose
/// the same id are two keys, and a create repeated after a lost answer writes the same
/// bytes under the same key. `None` for an id that is not a valid key segment.
pub fn backup_record_key(stanza: &Stanza, id: &str, digest: &Digest) -> Option<Key> {
    if !id_ok(id) {
        return None;
    }
    Key::new(format!("{}{id}.{digest}", backups_prefix(stanza))).ok()
}

/// Ids are one key segment without `.`, which separates the id from the digest.
fn id_ok(id: &str) -> bool {
    !id.is_empty() && !id.contains('/') && !id.contains('.')
}

/// The id (and the digest, for keys written since records carry it) of a key under
/// [`backups_prefix`]; `None` for anything else.
pub fn parse_backup_key(key: &Key) -> Option<(&str, Option<Digest>)> {
    let name = key.file_name();
    match name.rsplit_once('.') {
        Some((id, digest)) => Some((id, Some(digest.parse().ok()?))),
        None => Some((name, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<FileEntry> {
        vec![
            FileEntry {
                tablespace: None,
                path: "base".into(),
                mode: 0o700,
                size: 0,
                mtime: 1,
                kind: EntryKind::Dir,
            },
            FileEntry {
                tablespace: Some(16384),
                path: "PG_15_202209061/5/16385".into(),
                mode: 0o600,
                size: 3,
                mtime: 2,
                kind: EntryKind::File {
                    chunks: vec![Digest::of(b"abc")],
                },
            },
            FileEntry {
                tablespace: None,
                path: "pg_tblspc/16384".into(),
                mode: 0o777,
                size: 0,
                mtime: 3,
                kind: EntryKind::Symlink {
                    target: "/srv/ts".into(),
                },
            },
        ]
    }

    /// The pages `limit` cuts `entries` into, decoded.
    fn paged(entries: &[FileEntry], limit: usize) -> Vec<Vec<FileEntry>> {
        let mut pages = FileListPages::new(limit);
        let mut out: Vec<Vec<u8>> = entries.iter().filter_map(|e| pages.push(e)).collect();
        out.extend(pages.finish());
        assert_eq!(pages.entries(), entries.len() as u64);
        out.iter()
            .map(|bytes| {
                let text = String::from_utf8(bytes.clone()).unwrap();
                FileListPage::from_bytes(&Digest::of(bytes), bytes)
                    .unwrap_or_else(|e| panic!("{e}: {text}"))
                    .entries
            })
            .collect()
    }

    #[test]
    fn file_lists_are_cut_into_pages_that_round_trip() {
        let entries = entries();
        // One page when everything fits; one entry per page when every entry crosses
        // the limit; in order either way.
        assert_eq!(paged(&entries, PAGE_BYTES), vec![entries.clone()]);
        let one_each: Vec<Vec<FileEntry>> = entries.iter().map(|e| vec![e.clone()]).collect();
        assert_eq!(paged(&entries, 1), one_each);
        let two_first = paged(&entries, 200);
        assert_eq!(two_first.concat(), entries);
        assert!(two_first.len() > 1, "{two_first:?}");
        assert!(paged(&[], 1).is_empty());

        let list = FileList {
            format: FILE_LIST_FORMAT,
            pages: vec![Digest::of(b"page")],
            entries: 3,
            pg_manifest: Chunked {
                size: 3,
                chunks: vec![Digest::of(b"abc")],
            },
        };
        let bytes = list.to_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(&Digest::of(b"abc").to_hex()), "{text}");
        let digest = Digest::of(&bytes);
        assert_eq!(FileList::from_bytes(&digest, &bytes).unwrap(), list);
        assert!(FileList::from_bytes(&digest, b"nope").is_err());
    }

    #[test]
    fn lists_of_other_formats_are_named_as_such() {
        let d = Digest::of(b"x");
        let older = FileList::from_bytes(&d, b"{\"format\":1,\"entries\":[]}").unwrap_err();
        assert!(older.to_string().contains("format 1"), "{older}");
        assert!(older.to_string().contains("earlier tidemark"), "{older}");
        let newer = FileListPage::from_bytes(&d, b"{\"format\":3}").unwrap_err();
        assert!(newer.to_string().contains("upgrade tidemark"), "{newer}");
    }

    #[test]
    fn ids_are_keys() {
        let stanza = Stanza::new("main").unwrap();
        let start = DateTime::parse_from_rfc3339("2026-11-21T10:32:07Z")
            .unwrap()
            .with_timezone(&Utc);
        let id = backup_id(start);
        assert_eq!(id, "20261121T103207Z");
        assert_eq!(
            backup_key(&stanza, &id).unwrap().as_str(),
            "stanzas/main/backups/20261121T103207Z"
        );
        assert!(backup_key(&stanza, "../x").is_none());
        assert!(backup_key(&stanza, "").is_none());
        let d = Digest::of(b"record");
        let key = backup_record_key(&stanza, &id, &d).unwrap();
        assert_eq!(
            key.as_str(),
            format!("stanzas/main/backups/20261121T103207Z.{d}")
        );
        assert_eq!(parse_backup_key(&key), Some((id.as_str(), Some(d))));
        let old = backup_key(&stanza, "20261121T103207Z-2").unwrap();
        assert_eq!(parse_backup_key(&old), Some(("20261121T103207Z-2", None)));
        assert!(backup_record_key(&stanza, "a.b", &d).is_none());
        assert_eq!(
            parse_backup_key(&Key::new("stanzas/main/backups/x.notadigest").unwrap()),
            None
        );
    }
}
