//! The `Backend` trait: the few object operations a repository needs, and nothing more.
//!
//! Implementations: [`local::LocalBackend`] (a folder, the embedded default) and
//! [`s3::S3Backend`] (AWS S3 or any S3-compatible store). [`retry::Retrying`] wraps any
//! backend with bounded retries of transient failures. Every contract below is checked
//! against every backend by the `conformance` suite (built for tests and under the
//! `conformance` feature).

use std::fmt::Debug;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::{Key, Result};

pub mod local;
pub mod retry;
pub mod s3;

pub use local::Staged;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

/// How `put` treats an existing object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with `Error::AlreadyExists` when the key exists; never replace it.
    /// Content-addressed objects and WAL index records are always written this way.
    Create,
    /// Replace whatever is there, atomically.
    Overwrite,
}

/// What a listing or `head` says about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: Key,
    /// Its size in bytes.
    pub size: u64,
    /// When it was written, when the store says.
    pub last_modified: Option<DateTime<Utc>>,
}

/// A repository's object store.
///
/// Every successful write is durable when the call returns, and visible to readers whole
/// or not at all: a reader never sees a partial object, whatever happens to the writer.
#[async_trait]
pub trait Backend: Send + Sync + Debug + 'static {
    /// Writes `data` under `key`. With [`PutMode::Create`] an existing key gives
    /// `Error::AlreadyExists` and is left untouched.
    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<()>;

    /// Reads a whole object; `Error::NotFound` when it does not exist.
    async fn get(&self, key: &Key) -> Result<Bytes>;

    /// Reads `range` of an object. The end is clamped to the object's size; a start at
    /// or past the end is `Error::Backend` (S3 answers 416).
    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes>;

    /// Size and time of one object; `Error::NotFound` when it does not exist.
    async fn head(&self, key: &Key) -> Result<ObjectMeta>;

    /// Every object whose key starts with `prefix` (a plain string prefix, as in S3),
    /// in key order. Objects being written and not yet complete are never listed.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// One page of [`Backend::list`]: at most `limit` (at least 1) objects whose key starts
    /// with `prefix` and sorts strictly after `start_after` (any string; `None`: from the
    /// first), in key order (byte order, as S3's ListObjectsV2 `start-after`). An empty
    /// page means there is nothing more; a page may hold fewer than `limit` objects when
    /// more follow. Memory is one page, whatever the prefix holds: callers that walk a
    /// large prefix (the WAL index of a stanza) use [`Pages`]. The default lists the whole
    /// prefix and cuts the page out of it (correct, not bounded): stores override it.
    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectMeta>> {
        let mut all = self.list(prefix).await?;
        all.retain(|m| start_after.is_none_or(|a| m.key.as_str() > a));
        all.truncate(limit.max(1));
        Ok(all)
    }

    /// Removes an object; removing a missing object succeeds.
    async fn delete(&self, key: &Key) -> Result<()>;

    /// Removes several objects; missing ones count as removed. On error, some may be
    /// gone. The default removes them one by one; the local backend fsyncs each folder
    /// once for all its removals, and S3 sends DeleteObjects with up to
    /// [`DELETE_BATCH`] keys per request (garbage collection removes thousands).
    async fn delete_many(&self, keys: &[Key]) -> Result<()> {
        for key in keys {
            self.delete(key).await?;
        }
        Ok(())
    }

    /// How many requests this backend has sent to its store so far, for stores where
    /// requests cost (S3: the benchmark and `expire --json` report them); `None` where
    /// there is nothing to count (a local folder).
    fn requests_sent(&self) -> Option<u64> {
        None
    }

    /// Creates several objects (as [`PutMode::Create`]), each visible only after the ones
    /// before it, all durable when this returns. Returns, per item, whether it was created
    /// (false: the key already existed and was left untouched). On error, some leading
    /// items may exist. Backends that can make several objects durable at once override
    /// this (the local backend fsyncs them together); the default puts them in turn.
    async fn create_all(&self, items: Vec<(Key, Bytes)>) -> Result<Vec<bool>> {
        let mut created = Vec::with_capacity(items.len());
        for (key, data) in items {
            match self.put(&key, data, PutMode::Create).await {
                Ok(()) => created.push(true),
                Err(crate::Error::AlreadyExists { .. }) => created.push(false),
                Err(e) => return Err(e),
            }
        }
        Ok(created)
    }

    /// True when a create is exclusive: of several concurrent creates of one key exactly
    /// one succeeds, and a create never replaces what is there. The local backend's
    /// `link` is; S3 stores differ (AWS checks `If-None-Match: *` atomically, s3s-fs
    /// checks and then writes, Garage ignores it), so an S3 backend says false, and
    /// callers that decide something by a create read it back there. The default is
    /// false: a wrapper must forward it only when it keeps creates as they are.
    fn create_is_exclusive(&self) -> bool {
        false
    }

    /// Creates `staged` (when given: a body written beforehand, see [`Backend::stage`])
    /// and then `items`, as [`Backend::create_all`] does (in order, each visible only
    /// after the ones before it, all durable together on return), except that the chain
    /// stops at the first item at position `gate` or later (counting `staged` as the
    /// first) whose key is already taken: that item is left untouched and the items
    /// after it are not created. Per item: `Some(true)` created, `Some(false)` already
    /// there, `None` not attempted. An item before `gate` found taken does not stop it
    /// (content-addressed objects: "already there" is the same content).
    ///
    /// Where creates are exclusive ([`Backend::create_is_exclusive`]), a gate item this
    /// creates is this caller's alone, so what follows it may be written in the same
    /// round. The default creates the items in turn, one `put` each.
    async fn create_chain(
        &self,
        staged: Option<(Key, Staged)>,
        items: Vec<(Key, Bytes)>,
        gate: usize,
    ) -> Result<Vec<Option<bool>>> {
        let mut all = Vec::with_capacity(1 + items.len());
        if let Some((key, staged)) = staged {
            all.push((key, staged.read_back()?));
        }
        all.extend(items);
        let total = all.len();
        let mut created = Vec::with_capacity(total);
        for (i, (key, data)) in all.into_iter().enumerate() {
            match self.put(&key, data, PutMode::Create).await {
                Ok(()) => created.push(Some(true)),
                Err(crate::Error::AlreadyExists { .. }) => {
                    created.push(Some(false));
                    if i >= gate {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        created.resize(total, None);
        Ok(created)
    }

    /// A temporary file in the folder `folder` (a key prefix without its trailing `/`)
    /// to write a body into before its key is known, so that the disk starts on it while
    /// the rest is still being produced; hand it to [`Backend::create_all_staged`] once the
    /// key is known. Only stores that keep objects in local files give one, and only when
    /// that folder exists already: opening one must not change the repository (dropping
    /// it removes the file). `None` otherwise; callers then pass bytes to `create_all`.
    fn stage(&self, folder: &str) -> Option<Staged> {
        let _ = folder;
        None
    }

    /// Makes the folder `folder` (a key prefix without its trailing `/`) durable in its
    /// parents ahead of a write into it, when it exists already, so that the write's own
    /// round has less to wait for: a caller runs this beside other work. Creates nothing
    /// and changes nothing visible. Stores without folders: nothing to do.
    async fn settle_folder(&self, folder: &str) -> Result<()> {
        let _ = folder;
        Ok(())
    }

    /// Creates the folders `folders` (key prefixes without their trailing `/`) durably
    /// where they are missing, ahead of any write into them: `init` lays out the blob
    /// shards once, so that the first writes into a new repository do not each create
    /// one (a folder and two fsyncs on the write's path). Stores without folders: nothing
    /// to do.
    async fn create_folders(&self, folders: Vec<String>) -> Result<()> {
        let _ = folders;
        Ok(())
    }

    /// [`Backend::create_all`] with the first object's body written beforehand into
    /// `staged` (from [`Backend::stage`]). The default reads it back and creates from bytes.
    async fn create_all_staged(
        &self,
        first: (Key, Staged),
        rest: Vec<(Key, Bytes)>,
    ) -> Result<Vec<bool>> {
        let (key, staged) = first;
        let body = staged.read_back()?;
        let mut items = Vec::with_capacity(1 + rest.len());
        items.push((key, body));
        items.extend(rest);
        self.create_all(items).await
    }

    /// Temporary files that writers killed mid-write left in the repository (see
    /// [`TempFiles`] for what counts as left behind); with `remove`, removes them too.
    /// Only stores that keep objects in local files have any: an S3 upload that was never
    /// completed is invisible and expires by the bucket's lifecycle rules. The default
    /// finds none.
    async fn stale_temp_files(&self, remove: bool) -> Result<TempFiles> {
        let _ = remove;
        Ok(TempFiles::default())
    }

    /// Starts a write too large to hold in memory, sent in parts. Nothing is visible
    /// under `key` until [`Upload::complete`] returns; `mode` is honoured then.
    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn Upload>>;
}

/// An object written in parts, in order. Parts other than the last should be at least
/// [`MIN_PART_SIZE`] bytes (S3's rule); the local backend accepts any size.
#[async_trait]
pub trait Upload: Send {
    /// Appends the next part.
    async fn put_part(&mut self, data: Bytes) -> Result<()>;
    /// Makes the whole object visible, durably; fails like `put` would for `mode`. After
    /// a transient failure it may be called again; once it has succeeded, or failed for
    /// good, the upload is finished and further calls fail.
    async fn complete(&mut self) -> Result<()>;
    /// Drops everything written so far; may be called again after a failure.
    async fn abort(&mut self) -> Result<()>;
}

/// Temporary files left behind by killed writers, as [`Backend::stale_temp_files`] found
/// them. The local backend counts a `.tmp-<pid>-…` file as left behind only when both hold:
/// it was last written more than [`local::STALE_TEMP_AGE`] ago, and no process with its
/// writer's id runs on this machine. A live writer's file is never taken: a writer that
/// still runs keeps it however old, and a file still being written is younger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TempFiles {
    /// How many.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The objects one page of a walk over a large prefix holds (S3 answers at most 1,000 a
/// request).
pub const LIST_PAGE: usize = 1000;

/// A walk over every object under a prefix, one page ([`Backend::list_page`]) at a time,
/// in key order: memory is one page.
#[derive(Debug)]
pub struct Pages<'a> {
    backend: &'a dyn Backend,
    prefix: String,
    after: Option<String>,
    limit: usize,
    done: bool,
}

impl<'a> Pages<'a> {
    /// The walk over `prefix`, [`LIST_PAGE`] objects a page.
    pub fn new(backend: &'a dyn Backend, prefix: impl Into<String>) -> Pages<'a> {
        Pages::with_limit(backend, prefix, LIST_PAGE)
    }

    /// The walk over `prefix`, `limit` objects a page.
    pub fn with_limit(
        backend: &'a dyn Backend,
        prefix: impl Into<String>,
        limit: usize,
    ) -> Pages<'a> {
        Pages {
            backend,
            prefix: prefix.into(),
            after: None,
            limit: limit.max(1),
            done: false,
        }
    }

    /// The next page; `None` once every object was given.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ObjectMeta>>> {
        if self.done {
            return Ok(None);
        }
        let page = self
            .backend
            .list_page(&self.prefix, self.after.as_deref(), self.limit)
            .await?;
        match page.last() {
            Some(last) => {
                self.after = Some(last.key.to_string());
                Ok(Some(page))
            }
            None => {
                self.done = true;
                Ok(None)
            }
        }
    }
}

/// The most keys one S3 DeleteObjects request takes.
pub const DELETE_BATCH: usize = 1000;

/// S3's smallest part size (but for the last part).
pub const MIN_PART_SIZE: usize = 5 << 20;
