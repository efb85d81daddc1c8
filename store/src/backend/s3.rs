//! A repository in an S3 bucket (AWS S3 or any S3-compatible store), under a key prefix.
//!
//! [`S3Backend`] maps the [`Backend`] contract onto plain S3 calls: PutObject, GetObject
//! (with a `Range` header for [`Backend::get_range`]), HeadObject, ListObjectsV2 (paginated),
//! DeleteObject, and CreateMultipartUpload / UploadPart / CompleteMultipartUpload /
//! AbortMultipartUpload for [`Backend::put_multipart`]. Every repository key is stored as
//! `prefix/key` (just `key` with an empty prefix), and listings strip the prefix again, so
//! several repositories can share one bucket.
//!
//! # Conditional creates
//!
//! [`PutMode::Create`] sends `If-None-Match: *` on PutObject and on CompleteMultipartUpload;
//! the store answers 412 (or 409 `ConditionalRequestConflict` for a concurrent one) when
//! the key exists, which becomes [`Error::AlreadyExists`]. AWS S3 honours it on both calls;
//! so does s3s-fs (the test server), but there the check and the write are two steps, so
//! concurrent creates of one key can both succeed. Some stores (Garage) ignore the header
//! and overwrite. tidemark's repository stays correct on all of them, because every object
//! it writes with `Create` but one has content determined by its key (blobs are named by
//! the SHA-256 of their content; index keys carry the content digest): a lost race or an
//! ignored condition writes identical bytes over identical bytes. The exception is a WAL
//! name's claim, whose create decides between two contents: it is read back, and
//! `docs/repository-format.md` says what it guarantees on stores of each kind.
//!
//! # Client settings
//!
//! - Checksums only when an operation requires them
//!   (`RequestChecksumCalculation::WhenRequired`, `ResponseChecksumValidation::WhenRequired`):
//!   the SDK's default aws-chunked bodies with CRC trailers break many S3-compatible stores,
//!   and tidemark checks end-to-end integrity with its own SHA-256 anyway.
//! - The SDK's own retries keep their default (3 attempts); [`super::retry::Retrying`] bounds
//!   the total time spent on transient failures.
//!
//! # Timeouts: a store that accepts connections and never answers
//!
//! Every wait is bounded per request, never per whole transfer, so that a large object sent
//! in parts over a slow link is not cut while it moves:
//! - connecting (TCP and TLS): [`CONNECT_TIMEOUT`];
//! - one attempt of a request, until the answer's headers arrive: [`ATTEMPT_TIMEOUT`], plus,
//!   for a request that sends object data (put, one part of an upload), the time that data
//!   takes at [`MIN_SEND_RATE`] (an 8 MiB part: 30 + 32 s). The SDK then tries again;
//! - a response body (get) that stops moving: the SDK's stalled-stream protection fails it
//!   after [`STALL_GRACE`] below 1 byte/s, however long the body is;
//! - the whole request, the SDK's attempts included, under [`super::retry::Retrying`]: until
//!   the operation's deadline ([`super::retry::deadline`], its start plus `retry_timeout`),
//!   but never less than [`LAST_ATTEMPT_TIME`] plus the data's time at [`MIN_SEND_RATE`], so
//!   that the last attempt (or `retry_timeout = 0`) still gets a fair chance. A store that
//!   never answers thus fails an operation after `max(retry_timeout, 5 s)` when it sends no
//!   data, and after at most `retry_timeout` or 5 s plus the data's time at 256 KiB/s when it
//!   does (the client cannot tell a dead store from a slow link while its bytes sit in
//!   buffers), with "the store did not answer within N s".
//!
//! # Errors
//!
//! 404 → [`Error::NotFound`] (but `NoSuchBucket` and `NoSuchUpload`); 412, and 409
//! `ConditionalRequestConflict`, on a conditional create → [`Error::AlreadyExists`];
//! connection failures, timeouts, 5xx, 429 and throttling codes → [`Error::Unavailable`]
//! (transient); everything else (403, `NoSuchBucket`, 416, …) → [`Error::Backend`], naming
//! the S3 error code. A request that cannot even be sent for a reason other than the network
//! (no credentials found, an invalid endpoint) is [`Error::Backend`] too: retrying would not
//! help. A HEAD on a missing bucket is indistinguishable from a missing key (HEAD answers
//! carry no error code), so it is `NotFound`.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::meta::region::RegionProviderChain;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_types::retry::ErrorKind;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::{Backend, ObjectMeta, PutMode, Upload};
use crate::url::S3Options;
use crate::{Error, Key, Result};

/// How long to wait for a TCP (and TLS) connection to the store.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one attempt of a request may wait for the answer's headers, beyond the time its
/// object data takes to send at [`MIN_SEND_RATE`].
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The slowest upload rate a request is given time for (256 KiB/s, about 2 Mbit/s): a
/// request that sends `n` bytes may take `n / MIN_SEND_RATE` longer than one that sends none.
pub const MIN_SEND_RATE: u64 = 256 << 10;
/// The least time a request gets when its operation's retry deadline is near or past (the
/// last attempt, or `retry_timeout = 0`), beyond its data's time at [`MIN_SEND_RATE`].
pub const LAST_ATTEMPT_TIME: Duration = Duration::from_secs(5);
/// A response body moving slower than 1 byte/s for this long fails (stalled-stream protection).
pub const STALL_GRACE: Duration = Duration::from_secs(5);

/// The region used when neither the options nor AWS's default chain name one.
const FALLBACK_REGION: &str = "us-east-1";

/// A repository in an S3 bucket under a prefix.
#[derive(Clone)]
pub struct S3Backend {
    client: Client,
    bucket: String,
    /// `""` or the prefix with one trailing `/`, ready to put in front of a key.
    prefix: String,
    /// Requests sent so far (each SDK call once, its own retries not counted), for
    /// [`Backend::requests_sent`].
    requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl fmt::Debug for S3Backend {
    // By hand: the client's configuration is not ours to print (it holds the credentials
    // provider), and bucket plus prefix is what identifies the repository.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl S3Backend {
    /// Builds a client for `bucket`, putting every key under `prefix` (may be empty).
    ///
    /// Credentials are `opts`' access key pair when given, else AWS's default chain
    /// (environment, profile, …); the region is `opts.region`, else the default chain, else
    /// `us-east-1`. Nothing is sent to the store here: a wrong bucket or credentials show on
    /// the first request.
    pub async fn new(bucket: &str, prefix: &str, opts: &S3Options) -> Result<S3Backend> {
        let bad = |reason: &str| Error::BadUrl {
            url: format!("s3://{bucket}/{prefix}"),
            reason: reason.to_string(),
        };
        let region = RegionProviderChain::first_try(opts.region.clone().map(Region::new))
            .or_default_provider()
            .or_else(Region::new(FALLBACK_REGION));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region)
            .timeout_config(timeouts)
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(STALL_GRACE)
                    .build(),
            )
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        match (&opts.access_key_id, &opts.secret_access_key) {
            (Some(id), Some(secret)) => {
                loader = loader.credentials_provider(Credentials::new(
                    id,
                    secret.expose(),
                    None,
                    None,
                    "tidemark",
                ));
            }
            (None, None) => {}
            _ => {
                return Err(bad(
                    "give both an access key id and a secret access key, or neither",
                ))
            }
        }
        if let Some(endpoint) = &opts.endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(bad("the S3 endpoint must be an http:// or https:// URL"));
            }
            loader = loader.endpoint_url(endpoint);
        }
        let shared = loader.load().await;
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(opts.path_style)
            .build();
        let prefix = prefix.trim_matches('/');
        Ok(S3Backend {
            client: Client::from_conf(config),
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            requests: Default::default(),
        })
    }

    /// The S3 object key for a repository key.
    fn object_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// A listed object as a repository object; `None` for objects tidemark did not write
    /// (outside the prefix, or invalid names), which are not part of the repository.
    fn listed(&self, object: &aws_sdk_s3::types::Object) -> Option<ObjectMeta> {
        let name = object.key()?.strip_prefix(&self.prefix)?;
        Some(ObjectMeta {
            key: Key::new(name).ok()?,
            size: object.size().unwrap_or(0).max(0) as u64,
            last_modified: object.last_modified().and_then(to_chrono),
        })
    }

    /// `s3://bucket/prefix/key`, for error messages.
    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}{key}", self.bucket, self.prefix)
    }

    /// Turns an SDK failure on `key` into this crate's error (see the module doc).
    fn error<E>(
        &self,
        op: &'static str,
        key: &Key,
        mode: Option<PutMode>,
        err: SdkError<E>,
    ) -> Error
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        match classify(&err) {
            Failure::NotFound => Error::NotFound { key: key.clone() },
            Failure::Precondition if mode == Some(PutMode::Create) => {
                Error::AlreadyExists { key: key.clone() }
            }
            other => other.into_error(op, self.location(key.as_str())),
        }
    }

    /// Waits for `request` (an SDK `send()`, its own attempts included) that sends `sent`
    /// bytes of object data on `key`, no longer than the [`Retrying`](super::retry::Retrying)
    /// operation's deadline allows (see the module doc): a store that never answers must not
    /// hold the operation past `retry_timeout`. Without a deadline, only the SDK's own
    /// timeouts apply.
    async fn answer<T, E>(
        &self,
        op: &'static str,
        key: &str,
        sent: u64,
        request: impl Future<Output = std::result::Result<T, SdkError<E>>>,
    ) -> Result<std::result::Result<T, SdkError<E>>> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let left = super::retry::deadline()
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
        let Some(limit) = answer_limit(left, sent) else {
            return Ok(request.await);
        };
        tokio::time::timeout(limit, request)
            .await
            .map_err(|_| Error::Unavailable {
                op,
                key: self.location(key),
                message: format!(
                    "the store did not answer within {:.0} s",
                    limit.as_secs_f64()
                ),
            })
    }

    async fn put_object(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<()> {
        let sent = data.len() as u64;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(key.as_str()))
            .body(ByteStream::from(data));
        if mode == PutMode::Create {
            req = req.if_none_match("*");
        }
        let request = req.customize().config_override(send_timeouts(sent)).send();
        self.answer("put", key.as_str(), sent, request)
            .await?
            .map(drop)
            .map_err(|e| self.error("put", key, Some(mode), e))
    }
}

/// How long a request that sends `sent` bytes may wait for its answer when its operation
/// has `left` until its retry deadline: the time left, but never less than
/// [`LAST_ATTEMPT_TIME`] plus the data's time at [`MIN_SEND_RATE`]. `None` (no bound beyond
/// the SDK's own timeouts) outside of a [`Retrying`](super::retry::Retrying) operation.
fn answer_limit(left: Option<Duration>, sent: u64) -> Option<Duration> {
    left.map(|left| left.max(LAST_ATTEMPT_TIME + send_time(sent)))
}

/// How long `sent` bytes take at [`MIN_SEND_RATE`].
fn send_time(sent: u64) -> Duration {
    Duration::from_secs_f64(sent as f64 / MIN_SEND_RATE as f64)
}

/// Per-request override for a request that sends `sent` bytes of object data: its attempts
/// get the time that data takes at [`MIN_SEND_RATE`] on top of [`ATTEMPT_TIMEOUT`].
fn send_timeouts(sent: u64) -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(
        TimeoutConfig::builder()
            .operation_attempt_timeout(ATTEMPT_TIMEOUT + send_time(sent))
            .build(),
    )
}

fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos())
}

/// What an S3 failure means for tidemark.
#[derive(Debug)]
enum Failure {
    /// 404 for an object.
    NotFound,
    /// 412, or 409 `ConditionalRequestConflict`: a condition did not hold.
    Precondition,
    /// Retrying later may succeed.
    Transient(String),
    /// Retrying will not help.
    Permanent(String),
}

impl Failure {
    /// The error for a failure that has no more specific meaning for the operation.
    fn into_error(self, op: &'static str, key: String) -> Error {
        match self {
            Failure::NotFound => Error::Backend {
                op,
                key,
                message: "not found (http 404)".into(),
            },
            Failure::Precondition => Error::Backend {
                op,
                key,
                message: "precondition failed (http 412)".into(),
            },
            Failure::Transient(message) => Error::Unavailable { op, key, message },
            Failure::Permanent(message) => Error::Backend { op, key, message },
        }
    }
}

/// S3 error codes that mean "try again later", whatever the HTTP status.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
];

fn classify<E>(err: &SdkError<E>) -> Failure
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match err {
        SdkError::TimeoutError(_) => Failure::Transient(format!("timed out: {}", chain(err))),
        SdkError::DispatchFailure(failure) => {
            // Network trouble is transient. A failure the connector cannot classify comes,
            // in practice, from before the request left: no credentials found, for one.
            if failure.is_io()
                || failure.is_timeout()
                || matches!(
                    failure.as_other(),
                    Some(
                        ErrorKind::TransientError
                            | ErrorKind::ThrottlingError
                            | ErrorKind::ServerError
                    )
                )
            {
                Failure::Transient(format!("request failed: {}", chain(err)))
            } else {
                Failure::Permanent(format!("request could not be sent: {}", chain(err)))
            }
        }
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            let status = err.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            let code = err.code().unwrap_or("");
            if status == 404 && code != "NoSuchBucket" && code != "NoSuchUpload" {
                return Failure::NotFound;
            }
            if status == 412 || (status == 409 && code == "ConditionalRequestConflict") {
                return Failure::Precondition;
            }
            let label = if code.is_empty() {
                format!("http {status}")
            } else {
                format!("{code} (http {status})")
            };
            if status >= 500 || status == 429 || TRANSIENT_CODES.contains(&code) {
                return Failure::Transient(format!("s3 error {label}"));
            }
            if matches!(err, SdkError::ResponseError(_)) && (200..300).contains(&status) {
                // A success whose body could not be read or parsed: a connection cut mid-answer.
                return Failure::Transient(format!("response could not be read: {}", chain(err)));
            }
            match err.message() {
                Some(m) if !m.is_empty() => Failure::Permanent(format!("s3 error {label}: {m}")),
                _ => Failure::Permanent(format!("s3 error {label}")),
            }
        }
        _ => Failure::Permanent(chain(err)),
    }
}

/// An error and its sources, `: `-separated, skipping repeats (wrappers often repeat
/// their source's message).
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        next = e.source();
    }
    parts.join(": ")
}

impl S3Backend {
    /// GET of a whole object, or of an HTTP `range` of it: the answer's headers within the
    /// attempt timeout (and the deadline); the body then as long as it moves
    /// (stalled-stream protection): see the module doc.
    async fn read(&self, op: &'static str, key: &Key, range: Option<String>) -> Result<Bytes> {
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(key.as_str()))
            .set_range(range)
            .send();
        let out = self
            .answer(op, key.as_str(), 0, request)
            .await?
            .map_err(|e| self.error(op, key, None, e))?;
        collect(out.body, op, self.location(key.as_str())).await
    }
}

#[async_trait]
impl Backend for S3Backend {
    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<()> {
        self.put_object(key, data, mode).await
    }

    async fn get(&self, key: &Key) -> Result<Bytes> {
        self.read("get", key, None).await
    }

    async fn get_range(&self, key: &Key, range: Range<u64>) -> Result<Bytes> {
        if range.end <= range.start {
            return Err(Error::Backend {
                op: "read range",
                key: self.location(key.as_str()),
                message: format!("empty range {range:?}"),
            });
        }
        // HTTP ranges are inclusive; S3 clamps the end to the object's size itself, and
        // answers 416 (InvalidRange, a `Backend` error) when the start is at or past it.
        let range = format!("bytes={}-{}", range.start, range.end - 1);
        self.read("read range", key, Some(range)).await
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let request = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.object_key(key.as_str()))
            .send();
        let out = self
            .answer("head", key.as_str(), 0, request)
            .await?
            .map_err(|e| self.error("head", key, None, e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size: out.content_length.unwrap_or(0).max(0) as u64,
            last_modified: out.last_modified.as_ref().and_then(to_chrono),
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        Key::check_prefix(prefix)?;
        let full = self.object_key(prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_continuation_token(token.take())
                .send();
            let page = self
                .answer("list", prefix, 0, request)
                .await?
                .map_err(|e| classify(&e).into_error("list", self.location(prefix)))?;
            out.extend(page.contents().iter().filter_map(|o| self.listed(o)));
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) && !t.is_empty() => {
                    token = Some(t.to_string())
                }
                _ => break,
            }
        }
        // S3 lists in UTF-8 byte order already; some compatible stores do not promise it.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectMeta>> {
        Key::check_prefix(prefix)?;
        let full = self.object_key(prefix);
        let mut after = start_after.map(|a| self.object_key(a));
        let max_keys = limit.clamp(1, super::LIST_PAGE) as i32;
        loop {
            let request = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_start_after(after.clone())
                .max_keys(max_keys)
                .send();
            let page = self
                .answer("list", prefix, 0, request)
                .await?
                .map_err(|e| classify(&e).into_error("list", self.location(prefix)))?;
            let mut out: Vec<ObjectMeta> = page
                .contents()
                .iter()
                .filter_map(|o| self.listed(o))
                .collect();
            let last_listed = page
                .contents()
                .last()
                .and_then(|o| o.key())
                .map(str::to_string);
            // A page of names that are not keys only: ask for the next one, as an empty
            // page would end the caller's walk.
            match last_listed {
                Some(last) if out.is_empty() && page.is_truncated() == Some(true) => {
                    after = Some(last)
                }
                _ => {
                    out.sort_by(|a, b| a.key.cmp(&b.key));
                    return Ok(out);
                }
            }
        }
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let request = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.object_key(key.as_str()))
            .send();
        match self.answer("delete", key.as_str(), 0, request).await? {
            Ok(_) => Ok(()),
            Err(e) => match self.error("delete", key, None, e) {
                // S3 answers 204 for a missing key; a store that says 404 means the same.
                Error::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        for batch in keys.chunks(super::DELETE_BATCH) {
            let Some(first) = batch.first() else { break };
            let objects = batch
                .iter()
                .map(|k| {
                    ObjectIdentifier::builder()
                        .key(self.object_key(k.as_str()))
                        .build()
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| Error::Backend {
                    op: "delete",
                    key: self.location(first.as_str()),
                    message: e.to_string(),
                })?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| Error::Backend {
                    op: "delete",
                    key: self.location(first.as_str()),
                    message: e.to_string(),
                })?;
            let request = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send();
            let out = self
                .answer("delete", first.as_str(), 0, request)
                .await?
                .map_err(|e| classify(&e).into_error("delete", self.location(first.as_str())))?;
            // Quiet mode: only the keys that failed are listed. A missing key is no failure.
            if let Some(failed) = out.errors().iter().find(|e| e.code() != Some("NoSuchKey")) {
                return Err(Error::Backend {
                    op: "delete",
                    key: format!("s3://{}/{}", self.bucket, failed.key().unwrap_or_default()),
                    message: format!(
                        "{}: {}",
                        failed.code().unwrap_or("error"),
                        failed.message().unwrap_or_default()
                    ),
                });
            }
        }
        Ok(())
    }

    fn requests_sent(&self) -> Option<u64> {
        Some(self.requests.load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn Upload>> {
        let request = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(self.object_key(key.as_str()))
            .send();
        let out = self
            .answer("start upload", key.as_str(), 0, request)
            .await?
            .map_err(|e| self.error("start upload", key, None, e))?;
        let Some(upload_id) = out.upload_id else {
            return Err(Error::Backend {
                op: "start upload",
                key: self.location(key.as_str()),
                message: "the store answered without an upload id".into(),
            });
        };
        Ok(Box::new(S3Upload {
            backend: self.clone(),
            key: key.clone(),
            mode,
            upload_id: Some(upload_id),
            parts: Vec::new(),
            size: 0,
        }))
    }
}

async fn collect(body: ByteStream, op: &'static str, key: String) -> Result<Bytes> {
    match body.collect().await {
        Ok(data) => Ok(data.into_bytes()),
        // The answer started and then stopped: the connection, not the object, is at fault.
        Err(e) => Err(Error::Unavailable {
            op,
            key,
            message: format!("response body could not be read: {}", chain(&e)),
        }),
    }
}

/// A multipart upload in progress. Dropped without `complete` or `abort`, it aborts itself
/// in the background (when a tokio runtime is still there), so that no parts linger in the
/// bucket (on AWS they are billed until aborted or expired by a lifecycle rule).
struct S3Upload {
    backend: S3Backend,
    key: Key,
    mode: PutMode,
    /// `None` once completed or aborted.
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
    /// Bytes sent so far.
    size: u64,
}

impl S3Upload {
    /// The upload's id while it is open; an error once it is finished.
    fn open_upload_id(&self, op: &'static str) -> Result<String> {
        self.upload_id.clone().ok_or_else(|| Error::Backend {
            op,
            key: self.key.to_string(),
            message: "the upload is already finished".into(),
        })
    }

    async fn abort_upload(&self, upload_id: &str) -> Result<()> {
        let b = &self.backend;
        let request = b
            .client
            .abort_multipart_upload()
            .bucket(&b.bucket)
            .key(b.object_key(self.key.as_str()))
            .upload_id(upload_id)
            .send();
        match b
            .answer("abort upload", self.key.as_str(), 0, request)
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) => match b.error("abort upload", &self.key, None, e) {
                // Already gone (aborted before, or expired): nothing is left, which is the point.
                Error::NotFound { .. } => Ok(()),
                Error::Backend { message, .. } if message.contains("NoSuchUpload") => Ok(()),
                other => Err(other),
            },
        }
    }

    /// A `NoSuchUpload` on complete usually means that an earlier attempt (the SDK's own
    /// retry) did complete it and the answer was lost. When the key now holds an object of
    /// our size, take it as done: for `Create` that is `AlreadyExists`, which callers treat
    /// as deduplicated (see the module doc on why identical keys hold identical bytes).
    async fn after_lost_complete(&self, err: Error) -> Result<()> {
        match self.backend.head(&self.key).await {
            Ok(meta) if meta.size == self.size => match self.mode {
                PutMode::Create => Err(Error::AlreadyExists {
                    key: self.key.clone(),
                }),
                PutMode::Overwrite => Ok(()),
            },
            _ => Err(err),
        }
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let b = self.backend.clone();
        let key = b.object_key(self.key.as_str());
        runtime.spawn(async move {
            if let Err(e) = b
                .client
                .abort_multipart_upload()
                .bucket(&b.bucket)
                .key(&key)
                .upload_id(upload_id)
                .send()
                .await
            {
                tracing::debug!(
                    "abort of an abandoned upload to s3://{}/{key} failed: {}",
                    b.bucket,
                    chain(&e)
                );
            }
        });
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        // Part numbers start at 1. A retry after a transient failure reuses the number, and
        // S3 keeps the last part uploaded under it, so retrying a part is safe.
        let number = self.parts.len() as i32 + 1;
        let len = data.len() as u64;
        let upload_id = self.open_upload_id("upload part")?;
        let b = &self.backend;
        let request = b
            .client
            .upload_part()
            .bucket(&b.bucket)
            .key(b.object_key(self.key.as_str()))
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(data))
            .customize()
            .config_override(send_timeouts(len))
            .send();
        let out = b
            .answer("upload part", self.key.as_str(), len, request)
            .await?
            .map_err(|e| b.error("upload part", &self.key, None, e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag)
                .build(),
        );
        self.size += len;
        Ok(())
    }

    async fn complete(&mut self) -> Result<()> {
        let upload_id = self.open_upload_id("complete upload")?;
        if self.parts.is_empty() {
            // S3 refuses to complete an upload without parts; an empty object is one put.
            // The abort only tidies up: its failure changes nothing for the object.
            self.upload_id = None;
            let _ = self.abort_upload(&upload_id).await;
            return self
                .backend
                .put_object(&self.key, Bytes::new(), self.mode)
                .await;
        }
        let b = &self.backend;
        // The parts are cloned, not taken: after a transient failure the call is repeated.
        let mut req = b
            .client
            .complete_multipart_upload()
            .bucket(&b.bucket)
            .key(b.object_key(self.key.as_str()))
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(self.parts.clone()))
                    .build(),
            );
        if self.mode == PutMode::Create {
            req = req.if_none_match("*");
        }
        // Completing sends no object data, but the store may assemble the parts before it
        // answers: the attempt timeout alone bounds that, as for any request.
        let result = b
            .answer("complete upload", self.key.as_str(), 0, req.send())
            .await?;
        match result {
            Ok(_) => {
                self.upload_id = None;
                Ok(())
            }
            Err(e) => {
                let no_such_upload = e.code() == Some("NoSuchUpload");
                let err = b.error("complete upload", &self.key, Some(self.mode), e);
                if no_such_upload {
                    // An earlier attempt may have completed it: see `after_lost_complete`.
                    self.upload_id = None;
                    return self.after_lost_complete(err).await;
                }
                if !err.is_transient() {
                    // Refused (`AlreadyExists` included): finished for good, and its parts
                    // would linger until aborted. A transient failure keeps the upload
                    // open for another attempt (and `Drop` aborts it if none comes).
                    self.upload_id = None;
                    let _ = self.abort_upload(&upload_id).await;
                }
                Err(err)
            }
        }
    }

    async fn abort(&mut self) -> Result<()> {
        let Some(upload_id) = self.upload_id.clone() else {
            return Ok(()); // completed or aborted already: nothing is left to drop
        };
        self.abort_upload(&upload_id).await?;
        self.upload_id = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_go_under_the_prefix() {
        let opts = S3Options {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("us-east-1".into()),
            path_style: true,
            access_key_id: Some("id".into()),
            secret_access_key: Some(crate::url::Secret::new("secret")),
        };
        let b = S3Backend::new("bucket", "/a/b/", &opts).await.unwrap();
        assert_eq!(b.object_key("k/x"), "a/b/k/x");
        assert_eq!(b.location("k"), "s3://bucket/a/b/k");
        let b = S3Backend::new("bucket", "", &opts).await.unwrap();
        assert_eq!(b.object_key("k/x"), "k/x");
        assert!(!format!("{b:?}").contains("secret"));
    }

    #[tokio::test]
    async fn half_credentials_are_refused() {
        let opts = S3Options {
            access_key_id: Some("id".into()),
            region: Some("us-east-1".into()),
            ..Default::default()
        };
        assert!(matches!(
            S3Backend::new("bucket", "", &opts).await,
            Err(Error::BadUrl { .. })
        ));
    }

    #[test]
    fn waits_are_bounded_by_the_deadline_but_leave_time_for_the_data() {
        // Outside of a retrying operation only the SDK's timeouts apply.
        assert_eq!(answer_limit(None, 0), None);
        // Well before the deadline: the time left.
        let minute = Duration::from_secs(60);
        assert_eq!(answer_limit(Some(minute), 0), Some(minute));
        // At or near it: the floor, plus the data's time at 256 KiB/s (an 8 MiB part: 32 s).
        assert_eq!(
            answer_limit(Some(Duration::ZERO), 0),
            Some(LAST_ATTEMPT_TIME)
        );
        assert_eq!(
            answer_limit(Some(Duration::from_secs(1)), 8 << 20),
            Some(LAST_ATTEMPT_TIME + Duration::from_secs(32))
        );
        assert_eq!(
            answer_limit(Some(minute), 8 << 20),
            Some(minute),
            "a part that fits the time left gets the time left"
        );
    }

    /// A store that accepts connections and never answers: a request under a retrying
    /// operation gives up at the deadline's floor with "did not answer", not after the
    /// SDK's attempts (30 s each, three of them).
    #[tokio::test]
    async fn a_store_that_never_answers_fails_at_the_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                conns.push(conn);
            }
        });
        let opts = S3Options {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            region: Some("us-east-1".into()),
            path_style: true,
            access_key_id: Some("id".into()),
            secret_access_key: Some(crate::url::Secret::new("secret")),
        };
        let s3 = S3Backend::new("bucket", "p", &opts).await.unwrap();
        let b = super::super::retry::Retrying::new(std::sync::Arc::new(s3), Duration::from_secs(1));
        let started = std::time::Instant::now();
        let err = b.head(&Key::new("x").unwrap()).await.unwrap_err();
        let took = started.elapsed();
        assert!(err.is_transient(), "{err}");
        assert!(
            err.to_string().contains("did not answer within 5 s"),
            "{err}"
        );
        assert!(
            took >= LAST_ATTEMPT_TIME && took < LAST_ATTEMPT_TIME + Duration::from_secs(3),
            "{took:?}"
        );
        held.abort();
    }

    #[tokio::test]
    async fn refused_connections_are_transient() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let opts = S3Options {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("us-east-1".into()),
            path_style: true,
            access_key_id: Some("id".into()),
            secret_access_key: Some(crate::url::Secret::new("secret")),
        };
        let b = S3Backend::new("bucket", "p", &opts).await.unwrap();
        let err = b.head(&Key::new("x").unwrap()).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
    }
}
