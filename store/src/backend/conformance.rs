//! The backend conformance suite: one `pub async fn` per contract of [`Backend`].
//!
//! Every backend runs all of it: the local backend as unit tests, S3 against a real
//! server in `tests/it/s3_conformance.rs` (built with the `conformance` feature). A new
//! trait method gets its conformance function first. Functions panic on a broken
//! contract, with a message naming it; each works under its own key prefix.

use bytes::Bytes;

use super::{Backend, PutMode, MIN_PART_SIZE};
use crate::{Error, Key};

fn key(s: &str) -> Key {
    Key::new(s).expect("test keys are valid")
}

/// What a backend under test can promise beyond the trait's baseline.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    /// Of concurrent `Create`s of one key exactly one wins. The local backend and AWS S3
    /// promise it; some S3-compatible stores check and write in two steps (s3s-fs) or
    /// ignore the condition (Garage). The repository stays correct without it, because
    /// everything it creates has content determined by its key.
    pub atomic_concurrent_create: bool,
}

impl Capabilities {
    /// Everything promised.
    pub const ALL: Capabilities = Capabilities {
        atomic_concurrent_create: true,
    };
}

/// Runs every contract in turn.
pub async fn run_all(b: &dyn Backend) {
    run_all_with(b, Capabilities::ALL).await
}

/// Runs every contract the backend's capabilities cover.
pub async fn run_all_with(b: &dyn Backend, caps: Capabilities) {
    put_get_round_trip(b).await;
    empty_object_round_trips(b).await;
    missing_is_not_found(b).await;
    create_is_exclusive(b).await;
    overwrite_replaces(b).await;
    if caps.atomic_concurrent_create {
        concurrent_create_has_one_winner(b).await;
    }
    get_range_clamps_to_the_end(b).await;
    list_is_prefix_scoped_and_sorted(b).await;
    list_pages_walk_in_key_order(b).await;
    delete_is_idempotent(b).await;
    delete_many_removes_every_key_in_batches(b).await;
    create_all_creates_and_reports_existing(b).await;
    create_chain_stops_at_a_taken_gate(b).await;
    multipart_visible_only_on_complete(b).await;
    multipart_create_is_exclusive(b).await;
    multipart_abort_leaves_nothing(b).await;
}

/// What is put comes back byte for byte, and `head` gives its size.
pub async fn put_get_round_trip(b: &dyn Backend) {
    let k = key("conf/round-trip/object");
    let data = Bytes::from((0..100_000u32).map(|i| (i % 253) as u8).collect::<Vec<_>>());
    b.put(&k, data.clone(), PutMode::Create).await.expect("put");
    assert_eq!(
        b.get(&k).await.expect("get"),
        data,
        "get returns what was put"
    );
    assert_eq!(
        b.head(&k).await.expect("head").size,
        data.len() as u64,
        "head gives the size"
    );
}

/// A zero-byte object is an object.
pub async fn empty_object_round_trips(b: &dyn Backend) {
    let k = key("conf/empty/object");
    b.put(&k, Bytes::new(), PutMode::Create)
        .await
        .expect("put empty");
    assert_eq!(b.get(&k).await.expect("get empty").len(), 0);
    assert_eq!(b.head(&k).await.expect("head empty").size, 0);
}

/// Reading a missing key is `NotFound`, never another error.
pub async fn missing_is_not_found(b: &dyn Backend) {
    let k = key("conf/missing/nothing-here");
    assert!(
        matches!(b.get(&k).await, Err(Error::NotFound { .. })),
        "get of a missing key"
    );
    assert!(
        matches!(b.head(&k).await, Err(Error::NotFound { .. })),
        "head of a missing key"
    );
    assert!(
        matches!(b.get_range(&k, 0..10).await, Err(Error::NotFound { .. })),
        "get_range of a missing key"
    );
}

/// `Create` on an existing key is `AlreadyExists` and leaves the object as it was.
pub async fn create_is_exclusive(b: &dyn Backend) {
    let k = key("conf/create/object");
    b.put(&k, Bytes::from_static(b"first"), PutMode::Create)
        .await
        .expect("first create");
    let second = b
        .put(&k, Bytes::from_static(b"second"), PutMode::Create)
        .await;
    assert!(
        matches!(second, Err(Error::AlreadyExists { .. })),
        "second create must fail: {second:?}"
    );
    assert_eq!(
        b.get(&k).await.expect("get"),
        Bytes::from_static(b"first"),
        "create never replaces"
    );
}

/// `Overwrite` replaces.
pub async fn overwrite_replaces(b: &dyn Backend) {
    let k = key("conf/overwrite/object");
    b.put(&k, Bytes::from_static(b"one"), PutMode::Overwrite)
        .await
        .expect("first");
    b.put(&k, Bytes::from_static(b"two"), PutMode::Overwrite)
        .await
        .expect("second");
    assert_eq!(b.get(&k).await.expect("get"), Bytes::from_static(b"two"));
}

/// Of many concurrent `Create`s of one key, exactly one wins and its content stays.
pub async fn concurrent_create_has_one_winner(b: &dyn Backend) {
    let k = key("conf/race/object");
    let writers = (0..8u8).map(|i| {
        let k = k.clone();
        async move {
            (
                i,
                b.put(&k, Bytes::from(vec![i; 64 * 1024]), PutMode::Create)
                    .await,
            )
        }
    });
    let results = futures::future::join_all(writers).await;
    let winners: Vec<u8> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one create wins: {results:?}");
    for (_, r) in &results {
        assert!(
            r.is_ok() || matches!(r, Err(Error::AlreadyExists { .. })),
            "losers get AlreadyExists: {r:?}"
        );
    }
    assert_eq!(
        b.get(&k).await.expect("get"),
        Bytes::from(vec![winners[0]; 64 * 1024]),
        "the winner's bytes stay"
    );
}

/// Ranges read what they say, clamped at the end; a start past the end is an error.
pub async fn get_range_clamps_to_the_end(b: &dyn Backend) {
    let k = key("conf/range/object");
    b.put(&k, Bytes::from_static(b"0123456789"), PutMode::Create)
        .await
        .expect("put");
    assert_eq!(
        b.get_range(&k, 2..5).await.expect("range"),
        Bytes::from_static(b"234")
    );
    assert_eq!(
        b.get_range(&k, 8..100).await.expect("clamped range"),
        Bytes::from_static(b"89")
    );
    assert!(
        b.get_range(&k, 10..20).await.is_err(),
        "a range starting at the end is an error"
    );
}

/// Listing is a plain string prefix, recursive, sorted, and scoped to the prefix.
pub async fn list_is_prefix_scoped_and_sorted(b: &dyn Backend) {
    for k in [
        "conf/list/a/b/c",
        "conf/list/a/b/d",
        "conf/list/a/bc",
        "conf/list/ab",
        "conf/list/z",
    ] {
        b.put(&key(k), Bytes::from_static(b"x"), PutMode::Create)
            .await
            .expect("put");
    }
    let names =
        |v: Vec<super::ObjectMeta>| v.into_iter().map(|m| m.key.to_string()).collect::<Vec<_>>();
    assert_eq!(
        names(b.list("conf/list/a/b/").await.expect("list")),
        ["conf/list/a/b/c", "conf/list/a/b/d"]
    );
    assert_eq!(
        names(b.list("conf/list/a/b").await.expect("list")),
        ["conf/list/a/b/c", "conf/list/a/b/d", "conf/list/a/bc"]
    );
    assert_eq!(
        names(b.list("conf/list/").await.expect("list")),
        [
            "conf/list/a/b/c",
            "conf/list/a/b/d",
            "conf/list/a/bc",
            "conf/list/ab",
            "conf/list/z"
        ]
    );
    assert!(b
        .list("conf/list/nothing")
        .await
        .expect("empty list")
        .is_empty());
    assert!(b
        .list("conf/nowhere/")
        .await
        .expect("list of a missing folder")
        .is_empty());
    let meta = b.list("conf/list/z").await.expect("list");
    assert_eq!(meta[0].size, 1, "listings carry sizes");
}

/// `list_page` gives what `list` gives, a page at a time, in byte order (`a-c` before
/// `a/b`, as the keys compare, whatever folders a store keeps), each page after the
/// `start_after` it was given (also one that is not a key), and an empty page at the end.
pub async fn list_pages_walk_in_key_order(b: &dyn Backend) {
    let keys = [
        "conf/pages/a-c",
        "conf/pages/a.d",
        "conf/pages/a/b",
        "conf/pages/a/b0/x",
        "conf/pages/a/c/d/e",
        "conf/pages/a0",
        "conf/pages/a_z",
        "conf/pages/b/1",
        "conf/pages/b/2",
        "conf/pages/b/3",
        "conf/pagesX/outside",
    ];
    for k in keys {
        b.put(&key(k), Bytes::from_static(b"xy"), PutMode::Create)
            .await
            .expect("put");
    }
    let inside: Vec<&str> = keys[..keys.len() - 1].to_vec();
    let listed: Vec<String> = b
        .list("conf/pages/")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(listed, inside, "list sorts in byte order");
    for limit in [1, 2, 3, 1000] {
        let mut pages = super::Pages::with_limit(b, "conf/pages/", limit);
        let mut walked = Vec::new();
        while let Some(page) = pages.next_page().await.expect("page") {
            assert!(
                !page.is_empty() && page.len() <= limit,
                "a page holds 1..=limit"
            );
            assert!(page.iter().all(|m| m.size == 2), "pages carry sizes");
            walked.extend(page.into_iter().map(|m| m.key.to_string()));
        }
        assert_eq!(
            walked, inside,
            "pages of {limit} walk what list gives, in order"
        );
    }
    let names =
        |v: Vec<super::ObjectMeta>| v.into_iter().map(|m| m.key.to_string()).collect::<Vec<_>>();
    assert_eq!(
        names(
            b.list_page("conf/pages/", Some("conf/pages/a/b0"), 2)
                .await
                .expect("page")
        ),
        ["conf/pages/a/b0/x", "conf/pages/a/c/d/e"],
        "start_after need not be a key"
    );
    assert_eq!(
        names(
            b.list_page("conf/pages/", Some("conf/pages/a0"), 10)
                .await
                .expect("page")
        ),
        [
            "conf/pages/a_z",
            "conf/pages/b/1",
            "conf/pages/b/2",
            "conf/pages/b/3"
        ],
        "a folder sorted wholly before start_after is skipped"
    );
    assert!(b
        .list_page("conf/pages/", Some("conf/pages/b/3"), 10)
        .await
        .expect("page")
        .is_empty());
    assert_eq!(
        names(b.list_page("conf/pages/b", None, 10).await.expect("page")),
        ["conf/pages/b/1", "conf/pages/b/2", "conf/pages/b/3"]
    );
}

/// Deleting removes; deleting again still succeeds.
pub async fn delete_is_idempotent(b: &dyn Backend) {
    let k = key("conf/delete/object");
    b.put(&k, Bytes::from_static(b"x"), PutMode::Create)
        .await
        .expect("put");
    b.delete(&k).await.expect("delete");
    assert!(
        matches!(b.get(&k).await, Err(Error::NotFound { .. })),
        "deleted object is gone"
    );
    b.delete(&k).await.expect("second delete succeeds");
}

/// `delete_many` removes every key it is given, more than one S3 batch of them, in
/// several folders, and takes missing keys for removed; what it is not given stays.
pub async fn delete_many_removes_every_key_in_batches(b: &dyn Backend) {
    let n = super::DELETE_BATCH + 5;
    let keys: Vec<Key> = (0..n)
        .map(|i| key(&format!("conf/delete-many/{:02x}/{i}", i % 3)))
        .collect();
    for k in &keys {
        b.put(k, Bytes::from_static(b"x"), PutMode::Create)
            .await
            .expect("put");
    }
    let kept = key("conf/delete-many/kept");
    b.put(&kept, Bytes::from_static(b"k"), PutMode::Create)
        .await
        .expect("put");
    let mut doomed = keys.clone();
    doomed.push(key("conf/delete-many/never-written"));
    b.delete_many(&doomed).await.expect("delete_many");
    let left: Vec<Key> = b
        .list("conf/delete-many/")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(
        left,
        std::slice::from_ref(&kept),
        "only the key not given stays"
    );
    b.delete_many(&doomed).await.expect("again: all missing");
    b.delete(&kept).await.expect("delete");
}

/// `create_all` creates what is new, leaves what exists untouched, and says which was which.
pub async fn create_all_creates_and_reports_existing(b: &dyn Backend) {
    let existing = key("conf/create-all/b/existing");
    b.put(&existing, Bytes::from_static(b"old"), PutMode::Create)
        .await
        .expect("put");
    let items = vec![
        (
            key("conf/create-all/a/first"),
            Bytes::from(vec![1u8; 100_000]),
        ),
        (existing.clone(), Bytes::from_static(b"new")),
        (key("conf/create-all/b/second"), Bytes::from_static(b"2")),
    ];
    let created = b.create_all(items).await.expect("create_all");
    assert_eq!(created, [true, false, true]);
    assert_eq!(
        b.get(&key("conf/create-all/a/first"))
            .await
            .expect("get")
            .len(),
        100_000
    );
    assert_eq!(
        b.get(&existing).await.expect("get"),
        Bytes::from_static(b"old"),
        "existing objects stay"
    );
    assert_eq!(
        b.get(&key("conf/create-all/b/second")).await.expect("get"),
        Bytes::from_static(b"2")
    );
    assert!(b
        .create_all(Vec::new())
        .await
        .expect("nothing to create")
        .is_empty());
}

/// `create_chain` creates in order; an item before the gate found taken is left as it is
/// and does not stop it; the first item from the gate on found taken stops it: that
/// item is left as it is and nothing after it is created.
pub async fn create_chain_stops_at_a_taken_gate(b: &dyn Backend) {
    let taken = key("conf/chain/w/claim");
    let content = key("conf/chain/blob");
    for (k, v) in [(&taken, "theirs"), (&content, "old")] {
        b.put(k, Bytes::from(v), PutMode::Create)
            .await
            .expect("put");
    }
    let after = key("conf/chain/w/entry");
    let items = vec![
        (content.clone(), Bytes::from_static(b"new")),
        (taken.clone(), Bytes::from_static(b"mine")),
        (after.clone(), Bytes::from_static(b"mine")),
    ];
    let created = b.create_chain(None, items, 1).await.expect("create_chain");
    assert_eq!(created, [Some(false), Some(false), None]);
    assert_eq!(
        b.get(&content).await.expect("get"),
        Bytes::from_static(b"old")
    );
    assert_eq!(
        b.get(&taken).await.expect("get"),
        Bytes::from_static(b"theirs")
    );
    assert!(b.get(&after).await.expect_err("not created").is_not_found());

    let free = [key("conf/chain/w/claim2"), key("conf/chain/w/entry2")];
    let items = free
        .iter()
        .map(|k| (k.clone(), Bytes::from_static(b"mine")))
        .collect();
    let created = b.create_chain(None, items, 0).await.expect("create_chain");
    assert_eq!(created, [Some(true), Some(true)]);
    for k in &free {
        assert_eq!(b.get(k).await.expect("get"), Bytes::from_static(b"mine"));
    }
}

/// A multipart object appears whole on `complete`, and not before.
pub async fn multipart_visible_only_on_complete(b: &dyn Backend) {
    let k = key("conf/multipart/object");
    let part1 = Bytes::from(vec![1u8; MIN_PART_SIZE]);
    let part2 = Bytes::from(vec![2u8; 1000]);
    let mut up = b.put_multipart(&k, PutMode::Create).await.expect("start");
    up.put_part(part1.clone()).await.expect("part 1");
    assert!(
        matches!(b.head(&k).await, Err(Error::NotFound { .. })),
        "invisible before complete"
    );
    assert!(
        b.list("conf/multipart/").await.expect("list").is_empty(),
        "unlisted before complete"
    );
    up.put_part(part2.clone()).await.expect("part 2");
    up.complete().await.expect("complete");
    let got = b.get(&k).await.expect("get");
    assert_eq!(got.len(), part1.len() + part2.len());
    assert_eq!(&got[..part1.len()], &part1[..]);
    assert_eq!(&got[part1.len()..], &part2[..]);
    // Finished: no more parts or completes, and an abort drops nothing that is published.
    assert!(
        up.put_part(part2.clone()).await.is_err(),
        "part after complete"
    );
    assert!(up.complete().await.is_err(), "second complete");
    up.abort().await.expect("abort after complete is a no-op");
    assert_eq!(b.get(&k).await.expect("get").len(), got.len());
}

/// A `Create` multipart onto an existing key fails on `complete` and replaces nothing.
pub async fn multipart_create_is_exclusive(b: &dyn Backend) {
    let k = key("conf/multipart-exclusive/object");
    b.put(&k, Bytes::from_static(b"original"), PutMode::Create)
        .await
        .expect("put");
    let mut up = b.put_multipart(&k, PutMode::Create).await.expect("start");
    up.put_part(Bytes::from(vec![9u8; 1000]))
        .await
        .expect("part");
    let done = up.complete().await;
    assert!(
        matches!(done, Err(Error::AlreadyExists { .. })),
        "complete onto an existing key: {done:?}"
    );
    assert_eq!(
        b.get(&k).await.expect("get"),
        Bytes::from_static(b"original")
    );
}

/// An aborted upload leaves no object.
pub async fn multipart_abort_leaves_nothing(b: &dyn Backend) {
    let k = key("conf/abort/object");
    let mut up = b.put_multipart(&k, PutMode::Create).await.expect("start");
    up.put_part(Bytes::from(vec![3u8; 1000]))
        .await
        .expect("part");
    up.abort().await.expect("abort");
    assert!(
        matches!(b.head(&k).await, Err(Error::NotFound { .. })),
        "nothing after abort"
    );
    assert!(b.list("conf/abort/").await.expect("list").is_empty());
}

/// A backend that ignores conditional writes, as some S3-compatible stores do (Garage):
/// every `Create` silently replaces whatever the key held, and never reports
/// `AlreadyExists`. The repository must stay correct on it (docs/repository-format.md:
/// every key is determined by its content), and tests prove that with this wrapper.
#[derive(Debug)]
pub struct IgnoresCreate(pub std::sync::Arc<dyn Backend>);

#[async_trait::async_trait]
impl Backend for IgnoresCreate {
    async fn put(&self, key: &Key, data: Bytes, _mode: PutMode) -> crate::Result<()> {
        self.0.put(key, data, PutMode::Overwrite).await
    }
    async fn get(&self, key: &Key) -> crate::Result<Bytes> {
        self.0.get(key).await
    }
    async fn get_range(&self, key: &Key, range: std::ops::Range<u64>) -> crate::Result<Bytes> {
        self.0.get_range(key, range).await
    }
    async fn head(&self, key: &Key) -> crate::Result<super::ObjectMeta> {
        self.0.head(key).await
    }
    async fn list(&self, prefix: &str) -> crate::Result<Vec<super::ObjectMeta>> {
        self.0.list(prefix).await
    }
    async fn delete(&self, key: &Key) -> crate::Result<()> {
        self.0.delete(key).await
    }
    async fn stale_temp_files(&self, remove: bool) -> crate::Result<super::TempFiles> {
        self.0.stale_temp_files(remove).await
    }
    async fn create_all(&self, items: Vec<(Key, Bytes)>) -> crate::Result<Vec<bool>> {
        let mut created = Vec::with_capacity(items.len());
        for (key, data) in items {
            self.0.put(&key, data, PutMode::Overwrite).await?;
            created.push(true);
        }
        Ok(created)
    }
    async fn put_multipart(
        &self,
        key: &Key,
        _mode: PutMode,
    ) -> crate::Result<Box<dyn super::Upload>> {
        self.0.put_multipart(key, PutMode::Overwrite).await
    }
}
