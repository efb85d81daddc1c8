//! The S3 backend against a real S3 server (s3s-fs, started per test by the harness).
//!
//! - the backend conformance suite, on `S3Backend` alone and wrapped in `Retrying`;
//! - error mapping that only a real server shows: a wrong secret key is a permanent
//!   `Backend` error, a missing bucket too, a stopped server is `Unavailable` (transient);
//! - faults: `Retrying` gives up after its bound while the server is down, and rides out a
//!   restart; the backend works again once the server is back;
//! - prefixes isolate repositories sharing a bucket; listings paginate past 1000 keys;
//!   a multipart upload without parts completes as an empty object.
//!
//! Every test skips (or fails under `CI`) when s3s-fs is not installed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidemark_store::backend::conformance;
use tidemark_store::backend::retry::Retrying;
use tidemark_store::backend::s3::S3Backend;
use tidemark_store::backend::{Backend, PutMode, MIN_PART_SIZE};
use tidemark_store::url::{open_backend, BackendOptions, RepoUrl, S3Options, Secret};
use tidemark_store::{Error, Key};

use crate::harness::s3::{unique_prefix, S3Server};
use crate::skip_or_fail;

fn key(s: &str) -> Key {
    Key::new(s).expect("valid test key")
}

/// Starts a server, or skips the calling test.
macro_rules! s3_server {
    () => {
        match S3Server::start_new() {
            Some(s) => s,
            None => skip_or_fail!("s3s-fs not found (install: cargo install s3s-fs@0.14.1 --features binary --locked)"),
        }
    };
}

async fn backend(server: &S3Server, prefix: &str) -> S3Backend {
    S3Backend::new(server.bucket(), prefix, &server.options())
        .await
        .expect("S3 backend")
}

/// s3s-fs checks `If-None-Match: *` and then writes, in two steps, so concurrent creates
/// of one key can all succeed (AWS S3 lets exactly one win). What tidemark needs from such
/// a store is checked by `s3s_fs_concurrent_creates_leave_one_whole_object` instead.
const S3S_FS: conformance::Capabilities = conformance::Capabilities {
    atomic_concurrent_create: false,
};

async fn run_all_but_concurrent_create(b: &dyn Backend) {
    conformance::run_all_with(b, S3S_FS).await;
}

#[tokio::test]
async fn s3_conformance_suite() {
    let server = s3_server!();
    let b = backend(&server, &unique_prefix("conformance")).await;
    run_all_but_concurrent_create(&b).await;
}

#[tokio::test]
async fn s3_conformance_suite_through_retrying() {
    let server = s3_server!();
    let inner = Arc::new(backend(&server, &unique_prefix("conformance-retrying")).await);
    let b = Retrying::new(inner, Duration::from_secs(5));
    run_all_but_concurrent_create(&b).await;
}

#[tokio::test]
async fn s3s_fs_concurrent_creates_leave_one_whole_object() {
    // The weaker guarantee tidemark relies on (see the S3 backend's module doc): every
    // writer gets success or `AlreadyExists`, and the key ends up holding exactly one
    // writer's bytes, never a mix. With content determined by the key, that is enough.
    let server = s3_server!();
    let b = Arc::new(backend(&server, "race").await);
    let k = key("object");
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..8u8 {
        let (b, k) = (b.clone(), k.clone());
        writers.spawn(async move {
            b.put(&k, Bytes::from(vec![i; 64 * 1024]), PutMode::Create)
                .await
        });
    }
    let mut winners = 0;
    while let Some(done) = writers.join_next().await {
        match done.expect("writer") {
            Ok(()) => winners += 1,
            Err(Error::AlreadyExists { .. }) => {}
            Err(e) => panic!("a racing create failed otherwise: {e:?}"),
        }
    }
    assert!(winners >= 1, "someone wins");
    let got = b.get(&k).await.expect("get");
    assert_eq!(got.len(), 64 * 1024);
    assert!(
        got.iter().all(|&x| x == got[0]),
        "one writer's bytes, whole"
    );
    // Once the key exists, later creates are refused.
    assert!(matches!(
        b.put(&k, Bytes::from_static(b"late"), PutMode::Create)
            .await,
        Err(Error::AlreadyExists { .. })
    ));
}

#[tokio::test]
async fn s3_keys_sit_under_the_prefix_in_the_bucket() {
    let server = s3_server!();
    let b = backend(&server, "repo/one").await;
    b.put(
        &key("blobs/ab/cd"),
        Bytes::from_static(b"x"),
        PutMode::Create,
    )
    .await
    .expect("put");
    assert!(server
        .data_dir()
        .join(server.bucket())
        .join("repo/one/blobs/ab/cd")
        .is_file());
}

#[tokio::test]
async fn s3_wrong_secret_key_is_a_backend_error() {
    let server = s3_server!();
    let opts = S3Options {
        endpoint: Some(server.endpoint()),
        region: Some("us-east-1".into()),
        path_style: true,
        access_key_id: Some(server.access_key().to_string()),
        secret_access_key: Some(Secret::new("not-the-secret")),
    };
    let b = S3Backend::new(server.bucket(), "p", &opts)
        .await
        .expect("S3 backend");
    let k = key("some/object");
    for (what, result) in [
        (
            "put",
            b.put(&k, Bytes::from_static(b"x"), PutMode::Create)
                .await
                .map(drop),
        ),
        ("get", b.get(&k).await.map(drop)),
        ("list", b.list("").await.map(drop)),
    ] {
        let err = result.expect_err(what);
        assert!(matches!(err, Error::Backend { .. }), "{what}: {err:?}");
        assert!(!err.is_transient(), "{what}: {err}");
        let msg = err.to_string();
        eprintln!("{what} with a wrong secret: {msg}");
        assert!(
            msg.contains("SignatureDoesNotMatch")
                || msg.contains("AccessDenied")
                || msg.contains("403"),
            "{what}: {msg}"
        );
        assert!(
            !msg.contains("not-the-secret") && !msg.contains(server.secret_key()),
            "{what}: the secret leaks: {msg}"
        );
    }
}

#[tokio::test]
async fn s3_missing_bucket_is_a_backend_error() {
    let server = s3_server!();
    let b = S3Backend::new("no-such-bucket", "p", &server.options())
        .await
        .expect("S3 backend");
    // s3s-fs creates a missing bucket's folder on PutObject, and GetObject says NoSuchKey:
    // ListObjectsV2 is where it answers NoSuchBucket (AWS does on every call).
    let list = b.list("").await.expect_err("list");
    assert!(
        matches!(list, Error::Backend { .. }) && list.to_string().contains("NoSuchBucket"),
        "{list:?}"
    );
}

#[tokio::test]
async fn s3_range_past_the_end_is_a_backend_error() {
    let server = s3_server!();
    let b = backend(&server, "range").await;
    let k = key("object");
    b.put(&k, Bytes::from_static(b"0123456789"), PutMode::Create)
        .await
        .expect("put");
    let err = b.get_range(&k, 10..20).await.expect_err("range at the end");
    assert!(
        matches!(err, Error::Backend { .. }) && err.to_string().contains("416"),
        "{err:?}"
    );
}

#[tokio::test]
async fn s3_stopped_server_is_unavailable_and_retrying_gives_up() {
    let mut server = s3_server!();
    let b = Arc::new(backend(&server, "stopped").await);
    let k = key("object");
    b.put(&k, Bytes::from_static(b"before"), PutMode::Create)
        .await
        .expect("put");
    server.stop();
    assert!(!server.is_running());

    // Alone, the backend reports a transient failure quickly (after the SDK's own few retries).
    let started = Instant::now();
    let err = b.get(&k).await.expect_err("get from a stopped server");
    eprintln!("get from a stopped server: {err}");
    assert!(
        matches!(err, Error::Unavailable { .. }) && err.is_transient(),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );

    // Wrapped, it keeps trying for its bound, then returns the last (transient) error.
    let retrying = Retrying::new(b.clone(), Duration::from_secs(3));
    let started = Instant::now();
    let err = retrying
        .put(&key("other"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .expect_err("put to a stopped server");
    let took = started.elapsed();
    assert!(err.is_transient(), "{err:?}");
    assert!(
        took >= Duration::from_secs(3),
        "gave up before its bound: {took:?}"
    );
    assert!(
        took < Duration::from_secs(20),
        "kept going long after its bound: {took:?}"
    );

    // Back up: the same backend works again, and nothing was lost.
    server.start();
    assert!(server.is_running());
    assert_eq!(
        b.get(&k).await.expect("get after restart"),
        Bytes::from_static(b"before")
    );
    b.put(&key("after"), Bytes::from_static(b"after"), PutMode::Create)
        .await
        .expect("put after restart");
}

#[tokio::test]
async fn s3_retrying_rides_out_a_restart() {
    let mut server = s3_server!();
    let b = Arc::new(backend(&server, "restart").await);
    server.stop();
    let retrying = Retrying::new(b, Duration::from_secs(60));
    let restart = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_secs(2));
        server.start();
        server
    });
    let k = key("written/while/down");
    retrying
        .put(&k, Bytes::from_static(b"patience"), PutMode::Create)
        .await
        .expect("put through a restart");
    let _server = restart.await.expect("restart");
    assert_eq!(
        retrying.get(&k).await.expect("get"),
        Bytes::from_static(b"patience")
    );
}

/// The store goes away between the last part and the completion: `Retrying` completes
/// the upload once it is back (the upload stays open on a transient failure).
#[tokio::test]
async fn s3_retrying_completes_an_upload_through_a_restart() {
    let mut server = s3_server!();
    let b = Arc::new(backend(&server, "restart-complete").await);
    let retrying = Retrying::new(b, Duration::from_secs(60));
    let k = key("uploaded/while/down");
    let part1 = Bytes::from(vec![5u8; MIN_PART_SIZE]);
    let mut up = retrying
        .put_multipart(&k, PutMode::Create)
        .await
        .expect("start");
    up.put_part(part1.clone()).await.expect("part 1");
    up.put_part(Bytes::from_static(b"tail"))
        .await
        .expect("part 2");
    server.stop();
    let restart = tokio::task::spawn_blocking(move || {
        // Longer than the SDK's own three attempts last (at most ~3 s of back-off), so
        // that only `Retrying` can ride it out.
        std::thread::sleep(Duration::from_secs(6));
        server.start();
        server
    });
    up.complete().await.expect("complete through a restart");
    let _server = restart.await.expect("restart");
    let got = retrying.get(&k).await.expect("get");
    assert_eq!(got.len(), MIN_PART_SIZE + 4);
    assert_eq!(&got[..MIN_PART_SIZE], &part1[..]);
    assert_eq!(&got[MIN_PART_SIZE..], b"tail");
}

#[tokio::test]
async fn s3_prefixes_isolate_repositories() {
    let server = s3_server!();
    let one = backend(&server, &unique_prefix("one")).await;
    let two = backend(&server, &unique_prefix("two")).await;
    let k = key("shared/name");
    one.put(&k, Bytes::from_static(b"one"), PutMode::Create)
        .await
        .expect("put one");
    two.put(&k, Bytes::from_static(b"two"), PutMode::Create)
        .await
        .expect("same key, other prefix");
    assert_eq!(one.get(&k).await.expect("get"), Bytes::from_static(b"one"));
    assert_eq!(two.get(&k).await.expect("get"), Bytes::from_static(b"two"));
    let listed: Vec<String> = one
        .list("")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(
        listed,
        ["shared/name"],
        "listings are relative to the prefix"
    );
    one.delete(&k).await.expect("delete");
    assert_eq!(
        two.get(&k)
            .await
            .expect("the other repository keeps its object"),
        Bytes::from_static(b"two")
    );

    // A prefix that is a string prefix of another ("p" and "p2") still sees only its own keys.
    let p = backend(&server, "p").await;
    let p2 = backend(&server, "p2").await;
    p2.put(&key("x"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .expect("put");
    assert!(p.list("").await.expect("list").is_empty());
}

#[tokio::test]
async fn s3_listing_paginates() {
    let server = s3_server!();
    let b = Arc::new(backend(&server, &unique_prefix("many")).await);
    // S3 answers at most 1000 keys a page.
    let n = 1010;
    let mut writers = tokio::task::JoinSet::new();
    for chunk in 0..10 {
        let b = b.clone();
        writers.spawn(async move {
            for i in (chunk..n).step_by(10) {
                b.put(&key(&format!("k/{i:05}")), Bytes::new(), PutMode::Create)
                    .await
                    .expect("put");
            }
        });
    }
    while let Some(done) = writers.join_next().await {
        done.expect("writer");
    }
    let listed = b.list("k/").await.expect("list");
    assert_eq!(listed.len(), n);
    assert!(
        listed.windows(2).all(|w| w[0].key < w[1].key),
        "sorted, without duplicates"
    );
    assert_eq!(listed[0].key.as_str(), "k/00000");
    assert_eq!(listed[n - 1].key.as_str(), format!("k/{:05}", n - 1));
}

#[tokio::test]
async fn s3_multipart_without_parts_is_an_empty_object() {
    let server = s3_server!();
    let b = backend(&server, "empty-multipart").await;
    let k = key("empty");
    let mut up = b.put_multipart(&k, PutMode::Create).await.expect("start");
    up.complete().await.expect("complete without parts");
    assert_eq!(b.head(&k).await.expect("head").size, 0);
    let mut up = b.put_multipart(&k, PutMode::Create).await.expect("start");
    assert!(
        matches!(up.complete().await, Err(Error::AlreadyExists { .. })),
        "an empty create is still exclusive"
    );
}

#[tokio::test]
async fn s3_conditional_create_is_honoured_on_put_and_complete() {
    // Recorded for the repository's sake: s3s-fs answers 412 to `If-None-Match: *` on
    // PutObject and on CompleteMultipartUpload (sequential writers; see the module doc of
    // the S3 backend about concurrent ones).
    let server = s3_server!();
    let b = backend(&server, "conditional").await;
    let k = key("object");
    b.put(&k, Bytes::from_static(b"first"), PutMode::Create)
        .await
        .expect("create");
    assert!(matches!(
        b.put(&k, Bytes::from_static(b"second"), PutMode::Create)
            .await,
        Err(Error::AlreadyExists { .. })
    ));
    let mut up = b.put_multipart(&k, PutMode::Create).await.expect("start");
    up.put_part(Bytes::from_static(b"third"))
        .await
        .expect("part");
    assert!(matches!(
        up.complete().await,
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(b.get(&k).await.expect("get"), Bytes::from_static(b"first"));
    b.put(&k, Bytes::from_static(b"fourth"), PutMode::Overwrite)
        .await
        .expect("overwrite");
    assert_eq!(b.get(&k).await.expect("get"), Bytes::from_static(b"fourth"));
}

#[tokio::test]
async fn s3_open_backend_from_a_repository_url() {
    // The path the command line takes: URL + options → `open_backend` (S3, wrapped in retries).
    let server = s3_server!();
    let prefix = unique_prefix("opened");
    let url = RepoUrl::parse(&server.url(&prefix)).expect("repository URL");
    assert_eq!(
        url,
        RepoUrl::S3 {
            bucket: server.bucket().to_string(),
            prefix: prefix.clone()
        }
    );
    let opts = BackendOptions {
        url,
        s3: server.options(),
        retry_for: Duration::from_secs(5),
    };
    let b = open_backend(&opts).await.expect("open");
    b.put(&key("a/b"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .expect("put");
    assert!(server
        .data_dir()
        .join(server.bucket())
        .join(&prefix)
        .join("a/b")
        .is_file());
}
