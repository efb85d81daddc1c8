//! Checks a backup's file list before a restore writes anything. Pure: no IO here.
//!
//! The file list comes from the repository and is not trusted: a crafted or damaged list
//! must not make a restore write outside its target directories, follow a link it did
//! not create, or produce a file whose content does not add up. [`check`] turns a
//! [`FileList`] plus its [`BackupRecord`] into a [`Layout`] or refuses it, naming the
//! entry and why:
//!
//! - every path is relative and made of normal components (no empty, `.` or `..`
//!   component, no NUL);
//! - an entry of a tablespace names a tablespace of the record;
//! - symbolic links exist only as `pg_tblspc/<oid>` in the data directory for a
//!   tablespace of the record; the restore creates those links itself, pointing at the
//!   tablespace's target directory (never at the target the list stores);
//! - nothing lies beneath a symbolic link or a file, and no path appears twice;
//! - a file has exactly `ceil(size / chunk_size)` chunks;
//! - modes are masked to `0o7777`.
//!
//! Directories that entries need but the list does not name are created with mode 0700.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use tidemark_store::backup::{BackupRecord, EntryKind, FileList};
use tidemark_store::Digest;

use crate::{Error, Result};

/// The largest chunk size a restore accepts: a chunk is held in memory while it is
/// verified, and a bounded number of them are in flight.
pub const MAX_CHUNK_SIZE: u64 = 64 << 20;

/// Files of the data directory's top level that the restore writes or replaces itself. A
/// file of that name in the list is not restored; any other kind of entry there is
/// refused. `tablespace_map` (written by backups taken with the `TABLESPACE_MAP` option)
/// would make PostgreSQL recreate the tablespace links at their original locations,
/// undoing `--tablespace-map`: the links the restore makes replace it.
pub const RESTORE_WRITES: [&str; 3] = ["backup_manifest", "recovery.signal", "tablespace_map"];

/// `postgresql.auto.conf`, which the restore appends the recovery settings to.
pub const AUTO_CONF: &str = "postgresql.auto.conf";

/// Where an entry lives: the data directory or a tablespace's directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Root {
    /// The data directory.
    Data,
    /// The directory of the tablespace with this OID.
    Tablespace(u32),
}

/// A directory to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirNode {
    /// Where it lives.
    pub root: Root,
    /// Its path relative to the root, `/`-separated, checked.
    pub path: String,
    /// Its permission bits.
    pub mode: u32,
    /// Its modification time (seconds since the epoch); `None` for a directory the list
    /// does not name.
    pub mtime: Option<i64>,
}

/// A regular file to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileNode {
    /// Where it lives.
    pub root: Root,
    /// Its path relative to the root, `/`-separated, checked.
    pub path: String,
    /// Its permission bits.
    pub mode: u32,
    /// Its modification time, seconds since the epoch.
    pub mtime: i64,
    /// Its size in bytes.
    pub size: u64,
    /// Its chunks: chunk `i` holds bytes `i * chunk_size ..`.
    pub chunks: Vec<Digest>,
}

/// A checked file list: what a restore creates, in an order that is safe to create in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The chunk size of the backup.
    pub chunk_size: u64,
    /// Directories, parents before children.
    pub dirs: Vec<DirNode>,
    /// Regular files.
    pub files: Vec<FileNode>,
    /// The tablespaces whose `pg_tblspc/<oid>` link the restore creates (all of the
    /// record's).
    pub links: Vec<u32>,
    /// Total bytes of the files.
    pub bytes: u64,
    /// Total chunks of the files.
    pub chunks: u64,
}

impl fmt::Display for Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Root::Data => f.write_str("data directory"),
            Root::Tablespace(oid) => write!(f, "tablespace {oid}"),
        }
    }
}

/// How an entry is named in messages: `path`, or `tablespace OID: path`.
pub fn entry_name(root: Root, path: &str) -> String {
    match root {
        Root::Data => path.to_string(),
        Root::Tablespace(oid) => format!("tablespace {oid}: {path}"),
    }
}

/// The number of chunks a file of `size` bytes is cut into.
pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
    size.div_ceil(chunk_size)
}

/// Checks `list` against `record` and returns what to create, or the first problem. The
/// list is consumed: its chunk digests move into the layout rather than being copied.
pub fn check(record: &BackupRecord, list: FileList) -> Result<Layout> {
    let bad_record = |detail: String| Error::BadRecord {
        backup: record.id.clone(),
        detail,
    };
    if record.chunk_size == 0 || record.chunk_size > MAX_CHUNK_SIZE {
        return Err(bad_record(format!(
            "chunk size {} is outside 1..={MAX_CHUNK_SIZE}",
            record.chunk_size
        )));
    }
    let mut tablespaces = BTreeSet::new();
    for ts in &record.tablespaces {
        if !tablespaces.insert(ts.oid) {
            return Err(bad_record(format!("tablespace {} is listed twice", ts.oid)));
        }
    }
    let refuse = |root: Root, path: &str, reason: String| Error::UnsafeEntry {
        backup: record.id.clone(),
        entry: entry_name(root, path),
        reason,
    };

    // First pass: each entry on its own.
    let mut kinds: BTreeMap<(Root, String), Kind> = BTreeMap::new();
    let mut layout = Layout {
        chunk_size: record.chunk_size,
        dirs: Vec::new(),
        files: Vec::new(),
        links: tablespaces.iter().copied().collect(),
        bytes: 0,
        chunks: 0,
    };
    for entry in list.entries {
        let root = match entry.tablespace {
            None => Root::Data,
            Some(oid) if tablespaces.contains(&oid) => Root::Tablespace(oid),
            Some(oid) => {
                return Err(refuse(
                    Root::Tablespace(oid),
                    &entry.path,
                    "the backup has no tablespace with this OID".into(),
                ))
            }
        };
        let path = entry.path.as_str();
        if let Err(reason) = check_path(path) {
            return Err(refuse(root, path, reason));
        }
        let kind = match entry.kind {
            EntryKind::File { .. } => Kind::File,
            EntryKind::Dir => Kind::Dir,
            EntryKind::Symlink { .. } => Kind::Symlink,
        };
        if kinds.insert((root, path.to_string()), kind).is_some() {
            return Err(refuse(root, path, "the path appears twice".into()));
        }
        if root == Root::Data {
            if let Some((link, _)) = path
                .match_indices('/')
                .map(|(i, _)| path.split_at(i))
                .find(|(p, _)| tablespace_link_oid(p).is_some_and(|o| tablespaces.contains(&o)))
            {
                return Err(refuse(
                    root,
                    path,
                    format!("lies beneath {link}, the link the restore makes to its tablespace"),
                ));
            }
        }
        let tablespace_link = (root == Root::Data)
            .then(|| tablespace_link_oid(path))
            .flatten()
            .filter(|oid| tablespaces.contains(oid));
        if let Some(oid) = tablespace_link {
            if kind != Kind::Symlink {
                return Err(refuse(
                    root,
                    path,
                    format!("must be the link to tablespace {oid}, not a file or directory"),
                ));
            }
            // The restore makes this link itself, to the tablespace's target.
            continue;
        }
        if root == Root::Data && (RESTORE_WRITES.contains(&path) || path == AUTO_CONF) {
            if kind != Kind::File {
                return Err(refuse(
                    root,
                    path,
                    "the restore writes this file itself; it must be a regular file".into(),
                ));
            }
            if RESTORE_WRITES.contains(&path) {
                continue;
            }
        }
        let mode = entry.mode & 0o7777;
        match entry.kind {
            EntryKind::Symlink { .. } => return Err(refuse(
                root,
                path,
                "symbolic links are allowed only as pg_tblspc/<oid> for a tablespace of the backup"
                    .into(),
            )),
            EntryKind::Dir => layout.dirs.push(DirNode {
                root,
                path: path.to_string(),
                mode,
                mtime: Some(entry.mtime),
            }),
            EntryKind::File { chunks } => {
                let expected = chunk_count(entry.size, record.chunk_size);
                if chunks.len() as u64 != expected {
                    return Err(refuse(
                        root,
                        path,
                        format!(
                            "{} bytes make {expected} chunks of {}, the list has {}",
                            entry.size,
                            record.chunk_size,
                            chunks.len()
                        ),
                    ));
                }
                layout.bytes = layout
                    .bytes
                    .checked_add(entry.size)
                    .ok_or_else(|| refuse(root, path, "sizes add up past 2^64 bytes".into()))?;
                layout.chunks += expected;
                layout.files.push(FileNode {
                    root,
                    path: path.to_string(),
                    mode,
                    mtime: entry.mtime,
                    size: entry.size,
                    chunks,
                });
            }
        }
    }

    // Second pass: what lies above each entry. Every ancestor must be a directory (named
    // or implied); implied ones are created with mode 0700.
    let mut implied: BTreeSet<(Root, String)> = BTreeSet::new();
    if !tablespaces.is_empty() {
        implied.insert((Root::Data, "pg_tblspc".to_string()));
    }
    for (root, path) in kinds.keys() {
        let (root, path) = (*root, path.as_str());
        for (i, _) in path.match_indices('/') {
            let ancestor = &path[..i];
            match kinds.get(&(root, ancestor.to_string())) {
                Some(Kind::Dir) => {}
                Some(Kind::File) => {
                    return Err(refuse(
                        root,
                        path,
                        format!("lies beneath the file {ancestor}"),
                    ))
                }
                Some(Kind::Symlink) => {
                    return Err(refuse(
                        root,
                        path,
                        format!("lies beneath the symbolic link {ancestor}"),
                    ))
                }
                None => {
                    implied.insert((root, ancestor.to_string()));
                }
            }
        }
    }
    if let Some(kind) = kinds.get(&(Root::Data, "pg_tblspc".to_string())) {
        if *kind != Kind::Dir && !tablespaces.is_empty() {
            return Err(refuse(
                Root::Data,
                "pg_tblspc",
                "must be a directory: it holds the tablespace links".into(),
            ));
        }
    }
    for (root, path) in implied {
        if !kinds.contains_key(&(root, path.clone())) {
            layout.dirs.push(DirNode {
                root,
                path,
                mode: 0o700,
                mtime: None,
            });
        }
    }
    // Parents before children: a parent's path is a prefix of its children's, and so
    // sorts first.
    layout
        .dirs
        .sort_by(|a, b| (a.root, &a.path).cmp(&(b.root, &b.path)));
    Ok(layout)
}

/// An entry's kind, without its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
}

/// `Some(oid)` when `path` is `pg_tblspc/<oid>`.
fn tablespace_link_oid(path: &str) -> Option<u32> {
    let name = path.strip_prefix("pg_tblspc/")?;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// A relative path of normal components, or why not.
pub fn check_path(path: &str) -> std::result::Result<(), String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.contains('\0') {
        return Err("the path contains a NUL byte".into());
    }
    if path.starts_with('/') {
        return Err("absolute path: entries must be relative to their directory".into());
    }
    for component in path.split('/') {
        match component {
            "" => return Err("empty path component".into()),
            "." | ".." => {
                return Err(format!(
                    "{component:?} component: entries must stay inside their directory"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tidemark_store::backup::{FileEntry, TablespaceRecord, FILE_LIST_FORMAT};

    pub(crate) fn record(tablespaces: &[u32]) -> BackupRecord {
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-21T10:32:07Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        BackupRecord {
            tablespaces: tablespaces
                .iter()
                .map(|&oid| TablespaceRecord {
                    oid,
                    location: format!("/srv/ts{oid}"),
                })
                .collect(),
            chunk_size: 4,
            ..BackupRecord::example("20261121T103207Z", t)
        }
    }

    fn entry(ts: Option<u32>, path: &str, kind: EntryKind, size: u64) -> FileEntry {
        FileEntry {
            tablespace: ts,
            path: path.into(),
            mode: 0o100600,
            size,
            mtime: 5,
            kind,
        }
    }

    fn dir(path: &str) -> FileEntry {
        entry(None, path, EntryKind::Dir, 0)
    }

    fn file(path: &str, size: u64) -> FileEntry {
        let chunks = (0..chunk_count(size, 4)).map(|i| Digest::of(&i.to_le_bytes()));
        entry(
            None,
            path,
            EntryKind::File {
                chunks: chunks.collect(),
            },
            size,
        )
    }

    fn link(path: &str) -> FileEntry {
        entry(
            None,
            path,
            EntryKind::Symlink {
                target: "/elsewhere".into(),
            },
            0,
        )
    }

    fn list(entries: Vec<FileEntry>) -> FileList {
        FileList {
            format: FILE_LIST_FORMAT,
            entries,
        }
    }

    fn refused(rec: &BackupRecord, entries: Vec<FileEntry>) -> String {
        match check(rec, list(entries)) {
            Err(e @ Error::UnsafeEntry { .. }) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_normal_list_is_laid_out_parents_first() {
        let rec = record(&[16384]);
        let mut ts_file = file("PG_15_1/5/16385", 9);
        ts_file.tablespace = Some(16384);
        let layout = check(
            &rec,
            list(vec![
                file("base/1/1259", 5),
                dir("base"),
                file("PG_VERSION", 3),
                file("empty", 0),
                link("pg_tblspc/16384"),
                ts_file,
                file("backup_manifest", 1),
                file("tablespace_map", 1),
            ]),
        )
        .unwrap();
        let dirs: Vec<_> = layout
            .dirs
            .iter()
            .map(|d| (d.root, d.path.as_str(), d.mode, d.mtime))
            .collect();
        assert_eq!(
            dirs,
            [
                (Root::Data, "base", 0o600, Some(5)),
                (Root::Data, "base/1", 0o700, None),
                (Root::Data, "pg_tblspc", 0o700, None),
                (Root::Tablespace(16384), "PG_15_1", 0o700, None),
                (Root::Tablespace(16384), "PG_15_1/5", 0o700, None),
            ]
        );
        assert_eq!(
            layout.files.len(),
            4,
            "backup_manifest is the restore's own"
        );
        assert_eq!(layout.bytes, 5 + 3 + 9);
        assert_eq!(layout.chunks, 2 + 1 + 3);
        assert_eq!(layout.links, [16384]);
        assert_eq!(layout.files[0].mode, 0o600, "modes are masked");
    }

    #[test]
    fn unsafe_lists_are_refused_with_the_entry_named() {
        let rec = record(&[16384]);
        for (path, why) in [
            ("../x", "\"..\" component"),
            ("/etc/x", "absolute path"),
            ("a/../../x", "\"..\" component"),
            ("a/./x", "\".\" component"),
            ("", "empty path"),
            ("a//b", "empty path component"),
            ("a/", "empty path component"),
            ("a\0b", "NUL"),
        ] {
            let msg = refused(&rec, vec![file(path, 1)]);
            assert!(msg.contains(why), "{path:?}: {msg}");
        }
        let msg = refused(&rec, vec![link("base/evil")]);
        assert!(
            msg.contains("\"base/evil\"") && msg.contains("symbolic links"),
            "{msg}"
        );
        let msg = refused(&rec, vec![link("pg_tblspc/99")]);
        assert!(msg.contains("symbolic links"), "an unknown oid: {msg}");
        let msg = refused(
            &rec,
            vec![link("pg_tblspc/16384"), file("pg_tblspc/16384/x", 1)],
        );
        assert!(msg.contains("beneath pg_tblspc/16384, the link"), "{msg}");
        let msg = refused(&rec, vec![link("base"), file("base/x", 1)]);
        assert!(
            msg.contains("beneath the symbolic link base") || msg.contains("symbolic links"),
            "{msg}"
        );
        let msg = refused(&rec, vec![file("pg_tblspc/16384/PG_15_1/x", 1)]);
        assert!(msg.contains("beneath pg_tblspc/16384"), "{msg}");
        let msg = refused(&rec, vec![dir("pg_tblspc/16384")]);
        assert!(msg.contains("link to tablespace 16384"), "{msg}");
        let msg = refused(&rec, vec![file("a", 1), file("a/b", 1)]);
        assert!(msg.contains("beneath the file a"), "{msg}");
        let mut other = file("x", 1);
        other.tablespace = Some(7);
        let msg = refused(&rec, vec![other]);
        assert!(
            msg.contains("tablespace 7: x") && msg.contains("no tablespace"),
            "{msg}"
        );
        let mut ts_link = link("x");
        ts_link.tablespace = Some(16384);
        assert!(refused(&rec, vec![ts_link]).contains("symbolic links"));
        let msg = refused(&rec, vec![file("a", 1), dir("a")]);
        assert!(msg.contains("appears twice"), "{msg}");
        let mut short = file("f", 9);
        if let EntryKind::File { chunks } = &mut short.kind {
            chunks.pop();
        }
        let msg = refused(&rec, vec![short]);
        assert!(msg.contains("make 3 chunks of 4, the list has 2"), "{msg}");
        let mut extra = file("e", 0);
        extra.kind = EntryKind::File {
            chunks: vec![Digest::of(b"")],
        };
        assert!(refused(&rec, vec![extra]).contains("make 0 chunks"));
        assert!(refused(&rec, vec![dir("recovery.signal")]).contains("writes this file"));
        assert!(refused(&rec, vec![link("postgresql.auto.conf")]).contains("writes this file"));
        let msg = refused(&rec, vec![file("pg_tblspc", 1)]);
        assert!(msg.contains("pg_tblspc"), "{msg}");
    }

    #[test]
    fn bad_records_are_refused() {
        let mut rec = record(&[1, 1]);
        assert!(matches!(
            check(&rec, list(vec![])),
            Err(Error::BadRecord { .. })
        ));
        rec.tablespaces.pop();
        rec.chunk_size = 0;
        assert!(matches!(
            check(&rec, list(vec![])),
            Err(Error::BadRecord { .. })
        ));
    }
}
