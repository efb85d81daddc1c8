//! Checks a backup's file list before a restore writes anything. Pure: no IO here.
//!
//! The file list comes from the repository and is not trusted: a crafted or damaged list
//! must not make a restore write outside its target directories, follow a link it did
//! not create, or produce a file whose content does not add up. A [`Checker`] is fed the
//! list's pages in order and turns them, with the [`BackupRecord`], into a [`Layout`] or
//! refuses them, naming the entry and why:
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
//!
//! The list is checked whole before anything is written, but held a page at a time: the
//! [`Layout`] keeps the directories and totals, and the files of each page are produced
//! again from the page, when the restore writes them ([`Layout::page_files`]; a page is a
//! blob named by its digest, so it reads back the same). What the check keeps per entry
//! is a 16-byte hash of its path with its kind (duplicates, and what lies beneath a file
//! or a link), and per directory that holds entries its path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use tidemark_store::backup::{BackupRecord, Chunked, EntryKind, FileEntry, FileList, FileListPage};
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
/// Files come page by page from [`Layout::page_files`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The chunk size of the backup.
    pub chunk_size: u64,
    /// Directories, parents before children.
    pub dirs: Vec<DirNode>,
    /// The tablespaces whose `pg_tblspc/<oid>` link the restore creates (all of the
    /// record's).
    pub links: Vec<u32>,
    /// Number of regular files to create.
    pub files: u64,
    /// Total bytes of the files.
    pub bytes: u64,
    /// Total chunks of the files.
    pub chunks: u64,
    /// The list's pages, in order.
    pub pages: Vec<Digest>,
    /// PostgreSQL's `backup_manifest`, checked to have the chunks its size needs.
    pub pg_manifest: Chunked,
    rules: Rules,
}

/// The regular files of one page of the list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageFiles {
    /// The chunk size of the backup.
    pub chunk_size: u64,
    /// The files, in the list's order.
    pub files: Vec<FileNode>,
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

/// What the record says about entries: the chunk size and the tablespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rules {
    backup: String,
    chunk_size: u64,
    tablespaces: BTreeSet<u32>,
}

/// One entry, checked on its own.
enum Node {
    Dir(DirNode),
    File(FileNode),
    /// Nothing to create from the list: a tablespace link (the restore makes it) or a
    /// file the restore writes itself.
    Skipped,
}

impl Rules {
    fn new(record: &BackupRecord) -> Result<Rules> {
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
        Ok(Rules {
            backup: record.id.clone(),
            chunk_size: record.chunk_size,
            tablespaces,
        })
    }

    fn refuse(&self, root: Root, path: &str, reason: String) -> Error {
        Error::UnsafeEntry {
            backup: self.backup.clone(),
            entry: entry_name(root, path),
            reason,
        }
    }

    /// Where `entry` lives, checked.
    fn root(&self, entry: &FileEntry) -> Result<Root> {
        match entry.tablespace {
            None => Ok(Root::Data),
            Some(oid) if self.tablespaces.contains(&oid) => Ok(Root::Tablespace(oid)),
            Some(oid) => Err(self.refuse(
                Root::Tablespace(oid),
                &entry.path,
                "the backup has no tablespace with this OID".into(),
            )),
        }
    }

    /// The checks that need only the entry itself.
    fn node(&self, root: Root, entry: FileEntry) -> Result<Node> {
        let path = entry.path.as_str();
        if let Err(reason) = check_path(path) {
            return Err(self.refuse(root, path, reason));
        }
        let kind = Kind::of(&entry.kind);
        if root == Root::Data {
            if let Some((link, _)) =
                path.match_indices('/')
                    .map(|(i, _)| path.split_at(i))
                    .find(|(p, _)| {
                        tablespace_link_oid(p).is_some_and(|o| self.tablespaces.contains(&o))
                    })
            {
                return Err(self.refuse(
                    root,
                    path,
                    format!("lies beneath {link}, the link the restore makes to its tablespace"),
                ));
            }
        }
        let tablespace_link = (root == Root::Data)
            .then(|| tablespace_link_oid(path))
            .flatten()
            .filter(|oid| self.tablespaces.contains(oid));
        if let Some(oid) = tablespace_link {
            if kind != Kind::Symlink {
                return Err(self.refuse(
                    root,
                    path,
                    format!("must be the link to tablespace {oid}, not a file or directory"),
                ));
            }
            // The restore makes this link itself, to the tablespace's target.
            return Ok(Node::Skipped);
        }
        if root == Root::Data && (RESTORE_WRITES.contains(&path) || path == AUTO_CONF) {
            if kind != Kind::File {
                return Err(self.refuse(
                    root,
                    path,
                    "the restore writes this file itself; it must be a regular file".into(),
                ));
            }
            if RESTORE_WRITES.contains(&path) {
                return Ok(Node::Skipped);
            }
        }
        let mode = entry.mode & 0o7777;
        match entry.kind {
            EntryKind::Symlink { .. } => Err(self.refuse(
                root,
                path,
                "symbolic links are allowed only as pg_tblspc/<oid> for a tablespace of the backup"
                    .into(),
            )),
            EntryKind::Dir => Ok(Node::Dir(DirNode {
                root,
                path: entry.path,
                mode,
                mtime: Some(entry.mtime),
            })),
            EntryKind::File { chunks } => {
                let expected = chunk_count(entry.size, self.chunk_size);
                if chunks.len() as u64 != expected {
                    return Err(self.refuse(
                        root,
                        path,
                        format!(
                            "{} bytes make {expected} chunks of {}, the list has {}",
                            entry.size,
                            self.chunk_size,
                            chunks.len()
                        ),
                    ));
                }
                Ok(Node::File(FileNode {
                    root,
                    path: entry.path,
                    mode,
                    mtime: entry.mtime,
                    size: entry.size,
                    chunks,
                }))
            }
        }
    }
}

/// A 16-byte hash of where an entry lives and its path: what the check keeps per entry
/// (a map entry of 17 bytes).
fn path_key(root: Root, path: &str) -> [u8; 16] {
    let tag = match root {
        Root::Data => "data".to_string(),
        Root::Tablespace(oid) => format!("tablespace {oid}"),
    };
    let digest = Digest::of(format!("{tag}\0{path}").as_bytes());
    let mut key = [0u8; 16];
    key.copy_from_slice(&digest.0[..16]);
    key
}

/// Checks a file list page by page; see the module docs.
pub struct Checker {
    rules: Rules,
    /// Every entry's kind, by its path's hash.
    kinds: HashMap<[u8; 16], Kind>,
    /// Every directory that holds an entry, with one of those entries (for messages).
    parents: BTreeMap<Root, BTreeMap<String, String>>,
    dirs: Vec<DirNode>,
    files: u64,
    bytes: u64,
    chunks: u64,
}

impl Checker {
    /// A checker for the backup of `record`; refuses a record that cannot be restored.
    pub fn new(record: &BackupRecord) -> Result<Checker> {
        Ok(Checker {
            rules: Rules::new(record)?,
            kinds: HashMap::new(),
            parents: BTreeMap::new(),
            dirs: Vec::new(),
            files: 0,
            bytes: 0,
            chunks: 0,
        })
    }

    /// Checks the entries of the next page.
    pub fn add_page(&mut self, page: FileListPage) -> Result<()> {
        for entry in page.entries {
            self.add(entry)?;
        }
        Ok(())
    }

    fn add(&mut self, entry: FileEntry) -> Result<()> {
        let root = self.rules.root(&entry)?;
        let kind = Kind::of(&entry.kind);
        let path = entry.path.clone();
        let node = self.rules.node(root, entry)?;
        if self.kinds.insert(path_key(root, &path), kind).is_some() {
            return Err(self
                .rules
                .refuse(root, &path, "the path appears twice".into()));
        }
        let parents = self.parents.entry(root).or_default();
        for (i, _) in path.match_indices('/') {
            if !parents.contains_key(&path[..i]) {
                parents.insert(path[..i].to_string(), path.clone());
            }
        }
        match node {
            Node::Dir(dir) => self.dirs.push(dir),
            Node::File(file) => {
                self.bytes = self.bytes.checked_add(file.size).ok_or_else(|| {
                    self.rules
                        .refuse(root, &path, "sizes add up past 2^64 bytes".into())
                })?;
                self.files += 1;
                self.chunks += file.chunks.len() as u64;
            }
            Node::Skipped => {}
        }
        Ok(())
    }

    /// The layout of the whole list: checks what lies above each entry (every ancestor
    /// must be a directory, named or implied; implied ones are created with mode 0700)
    /// and the server's manifest.
    pub fn finish(mut self, list: FileList) -> Result<Layout> {
        let rules = &self.rules;
        if !rules.tablespaces.is_empty() {
            self.parents
                .entry(Root::Data)
                .or_default()
                .entry("pg_tblspc".to_string())
                .or_insert_with(|| "pg_tblspc/<oid>".to_string());
        }
        let parents = self
            .parents
            .iter()
            .flat_map(|(root, dirs)| dirs.iter().map(move |(dir, child)| (root, dir, child)));
        for (root, ancestor, child) in parents {
            match self.kinds.get(&path_key(*root, ancestor)) {
                Some(Kind::Dir) => {}
                Some(Kind::File) if *root == Root::Data && ancestor == "pg_tblspc" => {
                    return Err(rules.refuse(
                        Root::Data,
                        "pg_tblspc",
                        "must be a directory: it holds the tablespace links".into(),
                    ))
                }
                Some(Kind::File) => {
                    return Err(rules.refuse(
                        *root,
                        child,
                        format!("lies beneath the file {ancestor}"),
                    ))
                }
                Some(Kind::Symlink) => {
                    return Err(rules.refuse(
                        *root,
                        child,
                        format!("lies beneath the symbolic link {ancestor}"),
                    ))
                }
                None => self.dirs.push(DirNode {
                    root: *root,
                    path: ancestor.clone(),
                    mode: 0o700,
                    mtime: None,
                }),
            }
        }
        let manifest = &list.pg_manifest;
        let expected = chunk_count(manifest.size, rules.chunk_size);
        if manifest.chunks.len() as u64 != expected {
            return Err(Error::BadRecord {
                backup: rules.backup.clone(),
                detail: format!(
                    "its backup_manifest of {} bytes makes {expected} chunks, the list has {}",
                    manifest.size,
                    manifest.chunks.len()
                ),
            });
        }
        // Parents before children: a parent's path is a prefix of its children's, and so
        // sorts first.
        self.dirs
            .sort_by(|a, b| (a.root, &a.path).cmp(&(b.root, &b.path)));
        Ok(Layout {
            chunk_size: rules.chunk_size,
            dirs: self.dirs,
            links: rules.tablespaces.iter().copied().collect(),
            files: self.files,
            bytes: self.bytes,
            chunks: self.chunks,
            pages: list.pages,
            pg_manifest: list.pg_manifest,
            rules: self.rules,
        })
    }
}

impl Layout {
    /// The regular files of `page`, one of [`Layout::pages`] (already checked by the
    /// [`Checker`]; the per-entry checks run again, as they are cheap).
    pub fn page_files(&self, page: FileListPage) -> Result<PageFiles> {
        let mut files = Vec::new();
        for entry in page.entries {
            let root = self.rules.root(&entry)?;
            if let Node::File(file) = self.rules.node(root, entry)? {
                files.push(file);
            }
        }
        Ok(PageFiles {
            chunk_size: self.chunk_size,
            files,
        })
    }
}

/// An entry's kind, without its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
}

impl Kind {
    fn of(kind: &EntryKind) -> Kind {
        match kind {
            EntryKind::File { .. } => Kind::File,
            EntryKind::Dir => Kind::Dir,
            EntryKind::Symlink { .. } => Kind::Symlink,
        }
    }
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

    /// Checks `entries` as a list of one page; the layout and that page's files.
    pub(crate) fn check(
        record: &BackupRecord,
        entries: Vec<FileEntry>,
    ) -> Result<(Layout, PageFiles)> {
        let page = FileListPage {
            format: FILE_LIST_FORMAT,
            entries,
        };
        let mut checker = Checker::new(record)?;
        checker.add_page(page.clone())?;
        let layout = checker.finish(FileList {
            format: FILE_LIST_FORMAT,
            pages: vec![Digest::of(b"page")],
            entries: page.entries.len() as u64,
            pg_manifest: Chunked::default(),
        })?;
        let files = layout.page_files(page)?;
        Ok((layout, files))
    }

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

    fn refused(rec: &BackupRecord, entries: Vec<FileEntry>) -> String {
        match check(rec, entries) {
            Err(e @ Error::UnsafeEntry { .. }) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_normal_list_is_laid_out_parents_first() {
        let rec = record(&[16384]);
        let mut ts_file = file("PG_15_1/5/16385", 9);
        ts_file.tablespace = Some(16384);
        let (layout, files) = check(
            &rec,
            vec![
                file("base/1/1259", 5),
                dir("base"),
                file("PG_VERSION", 3),
                file("empty", 0),
                link("pg_tblspc/16384"),
                ts_file,
                file("backup_manifest", 1),
                file("tablespace_map", 1),
            ],
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
        assert_eq!(files.files.len(), 4, "backup_manifest is the restore's own");
        assert_eq!(layout.files, 4);
        assert_eq!(layout.bytes, 5 + 3 + 9);
        assert_eq!(layout.chunks, 2 + 1 + 3);
        assert_eq!(layout.links, [16384]);
        assert_eq!(files.files[0].mode, 0o600, "modes are masked");
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

    /// Checks `pages` as one list; the layout, or the refusal's message.
    fn check_pages(
        rec: &BackupRecord,
        pages: Vec<Vec<FileEntry>>,
        manifest: Chunked,
    ) -> std::result::Result<Layout, String> {
        let mut checker = Checker::new(rec).map_err(|e| e.to_string())?;
        for entries in &pages {
            checker
                .add_page(FileListPage {
                    format: FILE_LIST_FORMAT,
                    entries: entries.clone(),
                })
                .map_err(|e| e.to_string())?;
        }
        checker
            .finish(FileList {
                format: FILE_LIST_FORMAT,
                pages: pages.iter().map(|_| Digest::of(b"page")).collect(),
                entries: pages.iter().map(Vec::len).sum::<usize>() as u64,
                pg_manifest: manifest,
            })
            .map_err(|e| e.to_string())
    }

    #[test]
    fn checks_span_the_pages_of_a_list() {
        let rec = record(&[]);
        let none = Chunked::default;
        // A child before its directory, pages apart: one directory, named, not implied.
        let layout = check_pages(
            &rec,
            vec![
                vec![file("base/1/1259", 5)],
                vec![dir("base/1")],
                vec![dir("base")],
            ],
            none(),
        )
        .unwrap();
        let dirs: Vec<_> = layout
            .dirs
            .iter()
            .map(|d| (d.path.as_str(), d.mtime))
            .collect();
        assert_eq!(dirs, [("base", Some(5)), ("base/1", Some(5))]);
        assert_eq!((layout.files, layout.bytes, layout.chunks), (1, 5, 2));
        assert_eq!(layout.pages.len(), 3);

        let msg =
            check_pages(&rec, vec![vec![file("a", 1)], vec![file("a", 1)]], none()).unwrap_err();
        assert!(msg.contains("appears twice"), "{msg}");
        let msg =
            check_pages(&rec, vec![vec![file("a/b", 1)], vec![file("a", 1)]], none()).unwrap_err();
        assert!(
            msg.contains("\"a/b\"") && msg.contains("beneath the file a"),
            "{msg}"
        );

        // The server's manifest must have the chunks its size makes.
        let manifest = |size: u64, chunks: usize| Chunked {
            size,
            chunks: vec![Digest::of(b"m"); chunks],
        };
        assert!(check_pages(&rec, vec![], manifest(9, 3)).is_ok());
        let msg = check_pages(&rec, vec![], manifest(9, 2)).unwrap_err();
        assert!(
            msg.contains("backup_manifest of 9 bytes makes 3 chunks"),
            "{msg}"
        );
    }

    #[test]
    fn bad_records_are_refused() {
        let mut rec = record(&[1, 1]);
        assert!(matches!(check(&rec, vec![]), Err(Error::BadRecord { .. })));
        rec.tablespaces.pop();
        rec.chunk_size = 0;
        assert!(matches!(check(&rec, vec![]), Err(Error::BadRecord { .. })));
    }
}
