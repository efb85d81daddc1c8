//! `archive-get`: one file for PostgreSQL's `restore_command`.
//!
//! PostgreSQL asks for files that do not exist all the time (the next segment, history
//! files of future timelines) and takes a plain failure as "not in the archive", which
//! ends archive recovery. So this module distinguishes, with care:
//!
//! - [`GetOutcome::NotFound`]: the repository answered and holds no such file;
//! - every error: the repository could not answer, the content is corrupt or ambiguous,
//!   the stanza does not exist, the name is not WAL (a swapped `%f %p`). The caller must
//!   make PostgreSQL stop rather than end recovery at the wrong point.
//!
//! The file is written to a temporary name beside `%p`, verified against its digest as it
//! is decoded, and only then renamed into place: PostgreSQL never sees a partial file.
//!
//! [`get_for_latest`] also serves the newest `.partial` segment of a timeline under the
//! full segment's name, when recovery goes to the end of the archive and nothing newer
//! exists (see [`newest_partial`]).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tidemark_pg::{WalError, WalFileName, WalSegmentName};
use tidemark_store::catalog::Stanza;
use tidemark_store::{Digest, Repo};

use crate::{Error, Result};

/// What archive-get found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GetOutcome {
    /// Written to the destination.
    Restored {
        /// Its content digest.
        digest: Digest,
        /// Bytes written.
        len: u64,
        /// Served from the `.partial` file of the segment asked for.
        from_partial: bool,
    },
    /// The archive holds no such file.
    NotFound,
}

/// Fetches `file_name` from `stanza` into `dest`.
pub async fn get(repo: &Repo, stanza: &Stanza, file_name: &str, dest: &Path) -> Result<GetOutcome> {
    get_with(repo, stanza, file_name, dest, false).await
}

/// As [`get`], for a recovery that goes to the end of the archive (`latest`): a segment
/// the archive does not hold is served from its `.partial` file when that is the newest
/// WAL there is ([`newest_partial`]).
pub async fn get_for_latest(
    repo: &Repo,
    stanza: &Stanza,
    file_name: &str,
    dest: &Path,
) -> Result<GetOutcome> {
    get_with(repo, stanza, file_name, dest, true).await
}

async fn get_with(
    repo: &Repo,
    stanza: &Stanza,
    file_name: &str,
    dest: &Path,
    partial_for_latest: bool,
) -> Result<GetOutcome> {
    let name: WalFileName = file_name
        .parse()
        .map_err(|_| Error::Wal(WalError::BadFileName(file_name.to_string())))?;
    // A wrong repo or stanza setting must not read as "not in the archive".
    repo.require_cluster(stanza).await?;
    let mut from_partial = false;
    let digest = match (one_digest(repo, stanza, &name).await?, name) {
        (Some(digest), _) => digest,
        (None, WalFileName::Segment(segment)) if partial_for_latest => {
            match newest_partial(repo, stanza, segment).await? {
                Some(digest) => {
                    from_partial = true;
                    digest
                }
                None => return Ok(GetOutcome::NotFound),
            }
        }
        (None, _) => return Ok(GetOutcome::NotFound),
    };

    let tmp = temp_path(dest);
    let file = File::create(&tmp).map_err(|source| Error::Write {
        path: dest.to_path_buf(),
        source,
    })?;
    // No fsync: PostgreSQL reads the file right away and fetches it again after a crash;
    // the rename alone guarantees it never sees a partial file.
    let len = write_verified(repo, &digest, file, &tmp, dest, dest).await?;
    Ok(GetOutcome::Restored {
        digest,
        len,
        from_partial,
    })
}

/// Writes blob `digest` into `file` (just created at `tmp`), verified as it is decoded,
/// then renames `tmp` to `dest`; on any failure `tmp` is removed. Errors name `shown`.
/// Returns the bytes written.
pub(crate) async fn write_verified(
    repo: &Repo,
    digest: &Digest,
    file: File,
    tmp: &Path,
    dest: &Path,
    shown: &Path,
) -> Result<u64> {
    let write_err = |source| Error::Write {
        path: shown.to_path_buf(),
        source,
    };
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let result = async {
        let len = repo.read_blob(digest, &mut out).await?;
        out.flush().map_err(write_err)?;
        Ok::<_, Error>(len)
    }
    .await;
    drop(out);
    let result = result.and_then(|len| {
        fs::rename(tmp, dest).map_err(write_err)?;
        Ok(len)
    });
    if result.is_err() {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// The one digest archived under `name`; `None` when there is none; an error when there
/// are several (a conflict every reader must see).
pub(crate) async fn one_digest(
    repo: &Repo,
    stanza: &Stanza,
    name: &WalFileName,
) -> Result<Option<Digest>> {
    let digests = repo.wal_digests(stanza, name).await?;
    match digests.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(Error::Ambiguous {
            name: name.to_string(),
            count: many.len(),
            digests: many
                .iter()
                .map(Digest::to_hex)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The digest of `segment.partial` when it is the newest WAL of the archive: no later
/// segment (full, partial or backup file) on its timeline, and no history file of a later
/// timeline (a promotion left this timeline: recovery must switch, not read a partial
/// segment as the end). `None` otherwise, or when there is no such partial file.
pub async fn newest_partial(
    repo: &Repo,
    stanza: &Stanza,
    segment: WalSegmentName,
) -> Result<Option<Digest>> {
    let Some(digest) = one_digest(repo, stanza, &WalFileName::Partial(segment)).await? else {
        return Ok(None);
    };
    let index = repo.wal_index(stanza).await?;
    let newer = index.iter().any(|(name, _, _)| match name {
        WalFileName::History(t) => t.0 > segment.timeline.0,
        other => other
            .segment()
            .is_some_and(|s| s.timeline == segment.timeline && s > segment),
    });
    Ok((!newer).then_some(digest))
}

fn temp_path(dest: &Path) -> PathBuf {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal");
    dir.join(format!(".{base}.tidemark-{}", std::process::id()))
}
