//! `Key`: a validated object name inside a repository.
//!
//! Backends never see raw strings: a key is one or more `/`-separated segments of
//! `[A-Za-z0-9._-]`, none empty, none starting with `.` (so `..` cannot escape a local
//! repository, and names starting with `.` stay free for a backend's temporary files).

use std::fmt;

use crate::{Error, Result};

/// A validated object key, e.g. `blobs/ab/ab12…`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

fn segment_ok(seg: &str) -> bool {
    !seg.is_empty()
        && !seg.starts_with('.')
        && seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Key {
    /// Validates `s` as a key.
    pub fn new(s: impl Into<String>) -> Result<Key> {
        let s = s.into();
        if s.len() > 1024 || !s.split('/').all(segment_ok) {
            return Err(Error::BadKey {
                key: s,
                reason: "segments must be non-empty [A-Za-z0-9._-], not starting with '.'",
            });
        }
        Ok(Key(s))
    }

    /// Joins validated segments with `/`.
    pub fn join(parts: &[&str]) -> Result<Key> {
        Key::new(parts.join("/"))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// Checks a listing prefix: a key, optionally ending in `/`, or a key's first part
    /// (so `wal/0000000100000000/000000010000000000000001.` is a valid prefix). Empty lists all.
    pub fn check_prefix(prefix: &str) -> Result<()> {
        let body = prefix.strip_suffix('/').unwrap_or(prefix);
        if body.is_empty() {
            return if prefix.is_empty() {
                Ok(())
            } else {
                Err(Error::BadKey {
                    key: prefix.into(),
                    reason: "a prefix cannot be '/'",
                })
            };
        }
        let mut segs: Vec<&str> = body.split('/').collect();
        let last = segs.pop().unwrap_or_default();
        let last_ok = last
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            && !last.starts_with('.')
            && !last.is_empty();
        if prefix.len() > 1024 || !segs.into_iter().all(segment_ok) || !last_ok {
            return Err(Error::BadKey {
                key: prefix.into(),
                reason: "not a valid key prefix",
            });
        }
        Ok(())
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_or_hide() {
        for ok in [
            "a",
            "blobs/ab/abcdef",
            "stanzas/main/wal/0000000100000000/000000010000000000000001.ab12",
            "a-b_c.d",
        ] {
            assert!(Key::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "..", "a/../b", ".hidden", "a/.tmp", "a b", "a\\b", "ü", "a\0",
        ] {
            assert!(Key::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn prefixes_may_be_partial() {
        for ok in ["", "blobs/", "blobs/a", "stanzas/main/wal/x.", "a-"] {
            assert!(Key::check_prefix(ok).is_ok(), "{ok}");
        }
        for bad in ["/", "../", "a//", "a/../", "a/.x", "//"] {
            assert!(Key::check_prefix(bad).is_err(), "{bad:?} accepted");
        }
    }
}
