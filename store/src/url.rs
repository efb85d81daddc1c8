//! Repository URLs and opening the backend they name.
//!
//! - `file:///var/lib/tidemark`: a local folder (absolute path), the embedded default;
//! - `s3://bucket/optional/prefix`: AWS S3 or any S3-compatible store, with the endpoint,
//!   region, addressing style and credentials in [`S3Options`].

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::local::LocalBackend;
use crate::backend::retry::Retrying;
use crate::backend::s3::S3Backend;
use crate::backend::Backend;
use crate::{Error, Result};

/// A parsed repository URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepoUrl {
    /// A local folder.
    File(PathBuf),
    /// An S3 bucket and key prefix (without leading or trailing `/`; may be empty).
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix every key is put under.
        prefix: String,
    },
}

impl RepoUrl {
    /// Parses `file:///abs/path` or `s3://bucket/prefix`.
    pub fn parse(url: &str) -> Result<RepoUrl> {
        let bad = |reason: &str| Error::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "a file URL needs an absolute path: file:///var/lib/tidemark",
                ));
            }
            if path.split('/').any(|s| s == "..") {
                return Err(bad("'..' is not allowed in the path"));
            }
            let trimmed = path.trim_end_matches('/');
            return Ok(RepoUrl::File(PathBuf::from(if trimmed.is_empty() {
                "/"
            } else {
                trimmed
            })));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !bucket_ok {
                return Err(bad("the bucket name must be 3-63 of [a-z0-9.-]"));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if !prefix.is_empty() {
                crate::Key::new(prefix.clone())
                    .map_err(|_| bad("the prefix must be /-separated [A-Za-z0-9._-] segments"))?;
            }
            return Ok(RepoUrl::S3 {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        Err(bad("expected file:///absolute/path or s3://bucket/prefix"))
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepoUrl::File(p) => write!(f, "file://{}", p.display()),
            RepoUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            RepoUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// A secret string: never printed, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How to reach an S3-compatible store.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// A custom endpoint (`http://127.0.0.1:9000`); AWS when absent.
    pub endpoint: Option<String>,
    /// The region; AWS's default chain, then `us-east-1`, when absent.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible stores need.
    pub path_style: bool,
    /// The access key id; AWS's default chain (environment, profile) when absent.
    pub access_key_id: Option<String>,
    /// The secret access key, with `access_key_id`.
    pub secret_access_key: Option<Secret>,
}

/// Everything needed to open a repository's backend.
#[derive(Clone, Debug)]
pub struct BackendOptions {
    /// Where.
    pub url: RepoUrl,
    /// S3 settings (ignored for local folders).
    pub s3: S3Options,
    /// How long transient failures are retried before an operation fails.
    pub retry_for: Duration,
}

/// Opens the backend a URL names, wrapped in bounded retries of transient failures.
/// Opening changes nothing and does not contact the store.
pub async fn open_backend(opts: &BackendOptions) -> Result<Arc<dyn Backend>> {
    let inner: Arc<dyn Backend> = match &opts.url {
        RepoUrl::File(path) => Arc::new(LocalBackend::new(path.clone())?),
        RepoUrl::S3 { bucket, prefix } => Arc::new(S3Backend::new(bucket, prefix, &opts.s3).await?),
    };
    Ok(Arc::new(Retrying::new(inner, opts.retry_for)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        assert_eq!(
            RepoUrl::parse("file:///var/lib/tidemark/").unwrap(),
            RepoUrl::File("/var/lib/tidemark".into())
        );
        assert_eq!(
            RepoUrl::parse("s3://my-bucket/prod/db1").unwrap(),
            RepoUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "prod/db1".into()
            }
        );
        assert_eq!(
            RepoUrl::parse("s3://my-bucket").unwrap(),
            RepoUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "".into()
            }
        );
        for bad in [
            "",
            "/var/lib",
            "file://relative",
            "file:///a/../b",
            "s3://",
            "s3://UPPER",
            "s3://b/../x",
            "http://x",
            "s3://ab",
        ] {
            assert!(RepoUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            RepoUrl::parse("s3://my-bucket/p").unwrap().to_string(),
            "s3://my-bucket/p"
        );
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let o = S3Options {
            secret_access_key: Some(s),
            ..Default::default()
        };
        assert!(!format!("{o:?}").contains("hunter2"));
    }
}
