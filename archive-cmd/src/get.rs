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

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tidemark_pg::{WalError, WalFileName};
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
    },
    /// The archive holds no such file.
    NotFound,
}

/// Fetches `file_name` from `stanza` into `dest`.
pub async fn get(repo: &Repo, stanza: &Stanza, file_name: &str, dest: &Path) -> Result<GetOutcome> {
    let name: WalFileName = file_name
        .parse()
        .map_err(|_| Error::Wal(WalError::BadFileName(file_name.to_string())))?;
    // A wrong repo or stanza setting must not read as "not in the archive".
    repo.require_cluster(stanza).await?;
    let digests = repo.wal_digests(stanza, &name).await?;
    let digest = match digests.as_slice() {
        [] => return Ok(GetOutcome::NotFound),
        [one] => *one,
        many => {
            return Err(Error::Ambiguous {
                name: name.to_string(),
                count: many.len(),
                digests: many
                    .iter()
                    .map(Digest::to_hex)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
        }
    };

    let tmp = temp_path(dest);
    let write_err = |source| Error::Write {
        path: dest.to_path_buf(),
        source,
    };
    let file = File::create(&tmp).map_err(write_err)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let result = async {
        let len = repo.read_blob(&digest, &mut out).await?;
        out.flush().map_err(write_err)?;
        Ok::<_, Error>(len)
    }
    .await;
    drop(out);
    match result {
        Ok(len) => {
            // No fsync: PostgreSQL reads the file right away and fetches it again after a
            // crash; the rename alone guarantees it never sees a partial file.
            fs::rename(&tmp, dest).map_err(|source| {
                let _ = fs::remove_file(&tmp);
                Error::Write {
                    path: dest.to_path_buf(),
                    source,
                }
            })?;
            Ok(GetOutcome::Restored { digest, len })
        }
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn temp_path(dest: &Path) -> PathBuf {
    let dir = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal");
    dir.join(format!(".{base}.tidemark-{}", std::process::id()))
}
