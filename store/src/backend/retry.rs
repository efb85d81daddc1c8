//! [`Retrying`]: bounded retries of transient backend failures, around any [`Backend`].
//!
//! An operation whose error [`is_transient`](crate::Error::is_transient) (the store could not
//! be reached, timed out, answered 5xx or asked to slow down) is tried again after a pause
//! that starts at [`FIRST_DELAY`] and doubles up to [`MAX_DELAY`], with a little random
//! jitter so that many clients do not retry in step, until `retry_for` has passed since the
//! operation started; then the last error is returned. The last pause is shortened so that
//! one final attempt happens right at the deadline. Any other error is returned at once.
//! Each retry is logged at `warn` level.
//!
//! Retrying is safe for every operation tidemark uses:
//! - reads, `head`, `list` and `delete` are idempotent;
//! - an `Overwrite` put writes the same bytes again;
//! - a `Create` put whose first attempt did land (only its answer was lost) gets
//!   `AlreadyExists` on the retry. tidemark treats that as "deduplicated", which is correct
//!   because everything it writes with `Create` has content determined by its key, but a
//!   WAL name's claim, which archive-push reads back to see whose it is;
//! - a multipart part sent again replaces the first copy (S3 keeps the last part uploaded
//!   under a part number; the upload only counts a part once it succeeded).
//!
//! - completing an upload again after a transient failure: the store kept it open; if the
//!   first attempt did complete it and only the answer was lost, the retry finds the object
//!   (of the upload's size) in place and reports `AlreadyExists` for `Create`.
//!
//! Starting an upload, each part, completing and aborting are all retried.
//!
//! # The deadline
//!
//! Checking the time only between attempts is not enough: a store that accepts connections
//! and never answers (a stuck proxy, a half-dead load balancer) would hold one attempt for as
//! long as the inner backend's own timeouts allow. So each attempt runs with the operation's
//! deadline (its start plus `retry_for`) in reach through [`deadline`], and a backend that
//! waits on a network bounds every wait for an answer by it (the S3 backend does; see its
//! module doc for the floor it keeps so that the last attempt, and a slow upload, get a fair
//! chance). A store that never answers thus fails the operation about `retry_for` after it
//! started, with the backend's "did not answer" error.
//!
//! The clock is tokio's, so tests can pause it.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::{Backend, ObjectMeta, PutMode, Staged, TempFiles, Upload};
use crate::{Key, Result};

/// The pause before the first retry.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest pause between two attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Retries transient failures of the inner backend for a bounded time.
#[derive(Debug)]
pub struct Retrying {
    inner: Arc<dyn Backend>,
    retry_for: Duration,
}

impl Retrying {
    /// Wraps `inner`; transient failures are retried, with backoff, for up to `retry_for`.
    pub fn new(inner: Arc<dyn Backend>, retry_for: Duration) -> Retrying {
        Retrying { inner, retry_for }
    }
}

/// Up to a quarter of `d` more, at random. No RNG dependency is needed for this: std's
/// `RandomState` is seeded randomly per instance.
fn jittered(d: Duration) -> Duration {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(d.as_nanos() as u64);
    let quarter = (d.as_nanos() / 4) as u64;
    d + Duration::from_nanos(if quarter == 0 {
        0
    } else {
        h.finish() % quarter
    })
}

tokio::task_local! {
    /// The deadline of the [`Retrying`] operation whose attempt this task is running.
    static DEADLINE: Instant;
}

/// When the [`Retrying`] operation in progress on this task gives up (its start plus
/// `retry_for`), or `None` outside of one. Backends read it to bound their waits for an
/// answer: an attempt still waiting past it would hold the operation past `retry_for`.
pub fn deadline() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// The retry schedule of one operation.
struct Backoff {
    started: Instant,
    retry_for: Duration,
    delay: Duration,
    attempts: u32,
}

impl Backoff {
    fn new(retry_for: Duration) -> Backoff {
        Backoff {
            started: Instant::now(),
            retry_for,
            delay: FIRST_DELAY,
            attempts: 1,
        }
    }

    /// After a failed attempt: pauses and returns `Ok` when another attempt should follow,
    /// or returns the error when it is permanent or time is up.
    async fn pause_or_fail(&mut self, err: crate::Error, op: &str, what: &str) -> Result<()> {
        if !err.is_transient() {
            return Err(err);
        }
        let left = self.retry_for.saturating_sub(self.started.elapsed());
        if left.is_zero() {
            // The caller prints one line for the failure: say there how hard we tried.
            return Err(match err {
                crate::Error::Unavailable { op, key, message } if self.attempts > 1 => {
                    crate::Error::Unavailable {
                        op,
                        key,
                        message: format!(
                            "{message} (gave up after {} attempts in {:.1} s)",
                            self.attempts,
                            self.started.elapsed().as_secs_f64()
                        ),
                    }
                }
                other => other,
            });
        }
        let pause = jittered(self.delay).min(MAX_DELAY).min(left);
        // Debug only: PostgreSQL's log gets one line per failed archive command, from main.
        tracing::debug!(
            "{op} {what}: repository unreachable, retrying in {} ms: {err}",
            pause.as_millis()
        );
        tokio::time::sleep(pause).await;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        self.attempts += 1;
        Ok(())
    }

    /// When the operation gives up: its start plus `retry_for`.
    fn deadline(&self) -> Instant {
        self.started + self.retry_for
    }

    /// After a success: a success that needed retries is worth one line.
    fn succeeded(&self, op: &str, what: &str) {
        if self.attempts > 1 {
            tracing::warn!(
                "{op} {what}: repository reachable again after {} attempts in {:.1} s",
                self.attempts,
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `retry_for` has passed.
/// `op` and `what` name the operation in the log.
async fn with_retries<T, F, Fut>(
    retry_for: Duration,
    op: &str,
    what: &str,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut backoff = Backoff::new(retry_for);
    loop {
        match DEADLINE.scope(backoff.deadline(), attempt()).await {
            Ok(v) => {
                backoff.succeeded(op, what);
                return Ok(v);
            }
            Err(e) => backoff.pause_or_fail(e, op, what).await?,
        }
    }
}

#[async_trait]
impl Backend for Retrying {
    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<()> {
        // `Bytes` clones share the buffer: each attempt sends the same bytes without copying.
        with_retries(self.retry_for, "put", key.as_str(), || {
            self.inner.put(key, data.clone(), mode)
        })
        .await
    }

    async fn get(&self, key: &Key) -> Result<Bytes> {
        with_retries(self.retry_for, "get", key.as_str(), || self.inner.get(key)).await
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes> {
        with_retries(self.retry_for, "read range", key.as_str(), || {
            self.inner.get_range(key, range.clone())
        })
        .await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        with_retries(self.retry_for, "head", key.as_str(), || {
            self.inner.head(key)
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        with_retries(self.retry_for, "list", prefix, || self.inner.list(prefix)).await
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectMeta>> {
        with_retries(self.retry_for, "list", prefix, || {
            self.inner.list_page(prefix, start_after, limit)
        })
        .await
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        with_retries(self.retry_for, "delete", key.as_str(), || {
            self.inner.delete(key)
        })
        .await
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<()> {
        // Idempotent: a retry removes what is left (missing keys count as removed).
        let what = format!("{} objects", keys.len());
        with_retries(self.retry_for, "delete", &what, || {
            self.inner.delete_many(keys)
        })
        .await
    }

    fn requests_sent(&self) -> Option<u64> {
        self.inner.requests_sent()
    }

    fn stage(&self, folder: &str) -> Option<Staged> {
        self.inner.stage(folder)
    }

    async fn settle_folder(&self, folder: &str) -> Result<()> {
        // Local folders only: nothing transient to retry.
        self.inner.settle_folder(folder).await
    }

    async fn stale_temp_files(&self, remove: bool) -> Result<TempFiles> {
        // Local files only: nothing transient to retry.
        self.inner.stale_temp_files(remove).await
    }

    async fn create_all_staged(
        &self,
        first: (Key, Staged),
        rest: Vec<(Key, Bytes)>,
    ) -> Result<Vec<bool>> {
        // A staged body lives in one local file and cannot be sent twice; local writes
        // have no transient failures to retry.
        self.inner.create_all_staged(first, rest).await
    }

    fn create_is_exclusive(&self) -> bool {
        // Retries change no create's meaning: a create retried after its first attempt
        // landed finds its own object and reports it as already there.
        self.inner.create_is_exclusive()
    }

    async fn create_chain(
        &self,
        staged: Option<(Key, Staged)>,
        items: Vec<(Key, Bytes)>,
        gate: usize,
    ) -> Result<Vec<Option<bool>>> {
        if staged.is_some() {
            // As `create_all_staged`: one local file, nothing transient to retry.
            return self.inner.create_chain(staged, items, gate).await;
        }
        // A retry after a partial success finds the first attempt's objects taken: the
        // caller reads a gate item it finds taken back, and sees that it is its own.
        let what = items
            .first()
            .map(|(k, _)| k.to_string())
            .unwrap_or_default();
        with_retries(self.retry_for, "create", &what, || {
            self.inner.create_chain(None, items.clone(), gate)
        })
        .await
    }

    async fn create_all(&self, items: Vec<(Key, Bytes)>) -> Result<Vec<bool>> {
        // A retry after a partial success reports the objects the first attempt created
        // as already existing: for content-addressed objects that is the same thing.
        let what = items
            .first()
            .map(|(k, _)| k.to_string())
            .unwrap_or_default();
        with_retries(self.retry_for, "create", &what, || {
            self.inner.create_all(items.clone())
        })
        .await
    }

    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn Upload>> {
        // An upload started by an attempt whose answer was lost is never completed; S3
        // lifecycle rules (or the store) clean such leftovers, and nothing ever lists them.
        let inner = with_retries(self.retry_for, "start upload", key.as_str(), || {
            self.inner.put_multipart(key, mode)
        })
        .await?;
        Ok(Box::new(RetryingUpload {
            inner,
            key: key.clone(),
            retry_for: self.retry_for,
        }))
    }
}

/// An upload whose every step is retried like [`Retrying`]'s operations.
struct RetryingUpload {
    inner: Box<dyn Upload>,
    key: Key,
    retry_for: Duration,
}

impl RetryingUpload {
    async fn with_retries(
        &mut self,
        op: &'static str,
        mut attempt: impl FnMut(&mut dyn Upload) -> BoxFuture<'_, Result<()>> + Send,
    ) -> Result<()> {
        let mut backoff = Backoff::new(self.retry_for);
        loop {
            match DEADLINE
                .scope(backoff.deadline(), attempt(self.inner.as_mut()))
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => backoff.pause_or_fail(e, op, self.key.as_str()).await?,
            }
        }
    }
}

/// What `async_trait` methods return.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[async_trait]
impl Upload for RetryingUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        self.with_retries("upload part", |up| up.put_part(data.clone()))
            .await
    }

    async fn complete(&mut self) -> Result<()> {
        // A complete whose first attempt landed and whose answer was lost reports
        // `AlreadyExists` on the retry (for `Create`): deduplicated, as for `put`.
        self.with_retries("complete upload", |up| up.complete())
            .await
    }

    async fn abort(&mut self) -> Result<()> {
        self.with_retries("abort upload", |up| up.abort()).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::backend::conformance;
    use crate::backend::local::LocalBackend;
    use crate::Error;

    /// A local backend whose next `failures` calls (of any operation) fail with `error`.
    #[derive(Debug)]
    struct Faulty {
        inner: LocalBackend,
        failures: AtomicU32,
        transient: bool,
        calls: AtomicU32,
    }

    impl Faulty {
        fn new(dir: &tempfile::TempDir, failures: u32, transient: bool) -> Arc<Faulty> {
            Arc::new(Faulty {
                inner: LocalBackend::new(dir.path().join("repo")).unwrap(),
                failures: AtomicU32::new(failures),
                transient,
                calls: AtomicU32::new(0),
            })
        }

        fn check(&self, op: &'static str) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let left = self.failures.load(Ordering::SeqCst);
            if left == 0 {
                return Ok(());
            }
            self.failures.store(left - 1, Ordering::SeqCst);
            Err(if self.transient {
                Error::Unavailable {
                    op,
                    key: "k".into(),
                    message: "connection refused".into(),
                }
            } else {
                Error::Backend {
                    op,
                    key: "k".into(),
                    message: "s3 error AccessDenied (http 403)".into(),
                }
            })
        }

        fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Backend for Faulty {
        async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<()> {
            self.check("put")?;
            self.inner.put(key, data, mode).await
        }
        async fn get(&self, key: &Key) -> Result<Bytes> {
            self.check("get")?;
            self.inner.get(key).await
        }
        async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes> {
            self.check("read range")?;
            self.inner.get_range(key, range).await
        }
        async fn head(&self, key: &Key) -> Result<ObjectMeta> {
            self.check("head")?;
            self.inner.head(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
            self.check("list")?;
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &Key) -> Result<()> {
            self.check("delete")?;
            self.inner.delete(key).await
        }
        async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn Upload>> {
            self.check("start upload")?;
            let inner = self.inner.put_multipart(key, mode).await?;
            Ok(Box::new(FaultyUpload {
                inner,
                parts_failing: 2,
                completes_failing: 2,
            }))
        }
    }

    /// An upload whose first two `put_part` calls, and first two `complete` calls, fail
    /// transiently without doing anything.
    struct FaultyUpload {
        inner: Box<dyn Upload>,
        parts_failing: u32,
        completes_failing: u32,
    }

    #[async_trait]
    impl Upload for FaultyUpload {
        async fn put_part(&mut self, data: Bytes) -> Result<()> {
            if self.parts_failing > 0 {
                self.parts_failing -= 1;
                return Err(Error::Unavailable {
                    op: "upload part",
                    key: "k".into(),
                    message: "timed out".into(),
                });
            }
            self.inner.put_part(data).await
        }
        async fn complete(&mut self) -> Result<()> {
            if self.completes_failing > 0 {
                self.completes_failing -= 1;
                return Err(Error::Unavailable {
                    op: "complete upload",
                    key: "k".into(),
                    message: "timed out".into(),
                });
            }
            self.inner.complete().await
        }
        async fn abort(&mut self) -> Result<()> {
            self.inner.abort().await
        }
    }

    fn key(s: &str) -> Key {
        Key::new(s).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_success() {
        let dir = tempfile::tempdir().unwrap();
        let faulty = Faulty::new(&dir, 4, true);
        let b = Retrying::new(faulty.clone(), Duration::from_secs(60));
        let started = Instant::now();
        b.put(&key("a/b"), Bytes::from_static(b"data"), PutMode::Create)
            .await
            .expect("put after 4 failures");
        assert_eq!(faulty.calls(), 5);
        // Pauses of about 100 + 200 + 400 + 800 ms, each with up to 25 % jitter.
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1500) && waited <= Duration::from_millis(1900),
            "{waited:?}"
        );
        assert_eq!(
            b.get(&key("a/b")).await.unwrap(),
            Bytes::from_static(b"data")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let dir = tempfile::tempdir().unwrap();
        let faulty = Faulty::new(&dir, 1, false);
        let b = Retrying::new(faulty.clone(), Duration::from_secs(60));
        let started = Instant::now();
        let err = b.get(&key("a/b")).await.unwrap_err();
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
        assert_eq!(faulty.calls(), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
        // Not-found is an answer, not a failure: returned at once too.
        assert!(b.get(&key("a/b")).await.unwrap_err().is_not_found());
        assert_eq!(faulty.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_retry_for() {
        let dir = tempfile::tempdir().unwrap();
        let faulty = Faulty::new(&dir, u32::MAX, true);
        let b = Retrying::new(faulty.clone(), Duration::from_secs(20));
        let started = Instant::now();
        let err = b.list("").await.unwrap_err();
        assert!(err.is_transient(), "the last error is returned: {err:?}");
        // The last pause is cut short so that the final attempt falls on the deadline.
        assert_eq!(started.elapsed(), Duration::from_secs(20));
        // 100, 200, 400, 800, 1600, 3200 ms (+ jitter), then 5 s pauses: 9 to 10 attempts.
        assert!(
            (8..=11).contains(&faulty.calls()),
            "{} attempts",
            faulty.calls()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_retry_for_tries_once() {
        let dir = tempfile::tempdir().unwrap();
        let faulty = Faulty::new(&dir, 1, true);
        let b = Retrying::new(faulty.clone(), Duration::ZERO);
        assert!(b.head(&key("x")).await.unwrap_err().is_transient());
        assert_eq!(faulty.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn multipart_start_parts_and_complete_are_retried() {
        let dir = tempfile::tempdir().unwrap();
        let faulty = Faulty::new(&dir, 2, true);
        let b = Retrying::new(faulty.clone(), Duration::from_secs(60));
        let mut up = b
            .put_multipart(&key("m/obj"), PutMode::Create)
            .await
            .expect("start after 2 failures");
        assert_eq!(faulty.calls(), 3);
        up.put_part(Bytes::from_static(b"hello "))
            .await
            .expect("part after 2 failures");
        up.put_part(Bytes::from_static(b"world"))
            .await
            .expect("part");
        up.complete().await.expect("complete after 2 failures");
        assert_eq!(
            b.get(&key("m/obj")).await.unwrap(),
            Bytes::from_static(b"hello world")
        );
        assert!(
            !up.complete().await.unwrap_err().is_transient(),
            "a finished upload cannot complete again, and that is not worth retrying"
        );
    }

    /// Every attempt sees the operation's deadline (its start plus `retry_for`), so that a
    /// backend can bound a wait for an answer by it; outside an operation there is none.
    #[tokio::test(start_paused = true)]
    async fn attempts_see_the_operation_deadline() {
        #[derive(Debug)]
        struct Records(std::sync::Mutex<Vec<Option<Instant>>>);
        #[async_trait]
        impl Backend for Records {
            async fn put(&self, _: &Key, _: Bytes, _: PutMode) -> Result<()> {
                unreachable!()
            }
            async fn get(&self, _: &Key) -> Result<Bytes> {
                self.0.lock().unwrap().push(deadline());
                Err(Error::Unavailable {
                    op: "get",
                    key: "k".into(),
                    message: "the store did not answer".into(),
                })
            }
            async fn get_range(&self, _: &Key, _: Range<u64>) -> Result<Bytes> {
                unreachable!()
            }
            async fn head(&self, _: &Key) -> Result<ObjectMeta> {
                unreachable!()
            }
            async fn list(&self, _: &str) -> Result<Vec<ObjectMeta>> {
                unreachable!()
            }
            async fn delete(&self, _: &Key) -> Result<()> {
                unreachable!()
            }
            async fn put_multipart(&self, _: &Key, _: PutMode) -> Result<Box<dyn Upload>> {
                unreachable!()
            }
        }
        assert_eq!(deadline(), None);
        let inner = Arc::new(Records(std::sync::Mutex::new(Vec::new())));
        let b = Retrying::new(inner.clone(), Duration::from_secs(3));
        let started = Instant::now();
        assert!(b.get(&key("a")).await.is_err());
        let seen = inner.0.lock().unwrap().clone();
        assert!(seen.len() > 2, "{seen:?}");
        assert!(
            seen.iter()
                .all(|d| *d == Some(started + Duration::from_secs(3))),
            "{seen:?}"
        );
        assert_eq!(deadline(), None);
    }

    #[tokio::test]
    async fn conformance_suite_through_the_wrapper() {
        let dir = tempfile::tempdir().unwrap();
        let b = Retrying::new(
            Arc::new(LocalBackend::new(dir.path().join("repo")).unwrap()),
            Duration::from_secs(1),
        );
        conformance::run_all(&b).await;
    }

    #[test]
    fn jitter_stays_within_a_quarter() {
        for _ in 0..1000 {
            let d = jittered(Duration::from_millis(400));
            assert!(
                d >= Duration::from_millis(400) && d < Duration::from_millis(500),
                "{d:?}"
            );
        }
        assert_eq!(jittered(Duration::ZERO), Duration::ZERO);
    }
}
