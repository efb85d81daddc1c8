//! What `tidemark verify` keeps in the repository, and the repository reads it needs.
//!
//! ```text
//! stanzas/<stanza>/verify/<run id>.<sha256>    one record per verify run (VerifyRecord)
//! ```
//!
//! A run's record says when it ran, on what scope, what it counted and found, and whether
//! it passed. It also names its **proofs**: per blob shard (`blobs/<hh>/`, the first byte
//! of the digest) a blob holding the sorted list of the blobs proven good so far
//! ([`ProofEntry`]: digest, stored size and the store's modification time when the content
//! was read and hashed). The next run reads the newest run's proofs and re-reads only the
//! blobs that have none, or whose listing no longer matches (another size or modification
//! time: the object was replaced); it still checks every blob's existence by listing its
//! shard. The proofs live in the repository, the only source of truth, so a fresh
//! machine verifies incrementally too.
//!
//! The record's key carries the digest of its bytes, like a backup record's: nothing is
//! ever overwritten, even on a store that ignores conditional writes. Run ids are the
//! start time (`YYYYMMDDTHHMMSS.mmmZ`), so key order is time order.
//!
//! Also here: listing one blob shard ([`Repo::list_blob_shard`]) and reading a blob to
//! check it without writing it anywhere ([`Repo::check_blob`]).

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{self, Stanza};
use crate::codec::{BlobDecoder, Digest};
use crate::repo::PART_SIZE;
use crate::{Error, Key, Repo, Result};

/// The format of a proof list this build writes and reads.
pub const PROOF_FORMAT: u32 = 1;
const PROOF_MAGIC: &[u8] = b"tidemark-proofs 1\n";
/// Bytes per entry in a proof list: digest, stored size, modification time.
pub const PROOF_ENTRY_LEN: usize = 32 + 8 + 8;

/// The prefix of a stanza's verify records.
pub fn verify_prefix(stanza: &Stanza) -> String {
    format!("stanzas/{stanza}/verify/")
}

/// The key of a verify record: `<id>.<digest of its bytes>`.
pub fn verify_key(stanza: &Stanza, id: &str, digest: &Digest) -> Result<Key> {
    Key::new(format!("{}{id}.{digest}", verify_prefix(stanza)))
}

/// A run id from its start time: `20261206T101500.123Z` (sorts as time does).
pub fn verify_id(started: DateTime<Utc>) -> String {
    started.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// A record key's place in time order: its id's time, then its `-n` suffix.
fn run_order(key: &Key) -> (String, u32) {
    let id = key.file_name().rsplit_once('.').map_or("", |(id, _)| id);
    match id.rsplit_once('-') {
        Some((base, n)) if n.parse::<u32>().is_ok() => (base.to_string(), n.parse().unwrap_or(1)),
        _ => (id.to_string(), 1),
    }
}

/// One blob proven good: its content was read, decoded and hashed to its digest when the
/// store listed it with this size and modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProofEntry {
    /// The blob.
    pub digest: Digest,
    /// Its stored size then.
    pub stored_size: u64,
    /// Its modification time then, in milliseconds since the epoch (`i64::MIN` when the
    /// store gave none: such a proof is never taken as still valid).
    pub modified_ms: i64,
}

impl ProofEntry {
    /// Whether a listing of the blob still matches this proof (same object).
    pub fn matches(&self, listed: &ListedBlob) -> bool {
        self.digest == listed.digest
            && self.stored_size == listed.stored_size
            && self.modified_ms != i64::MIN
            && self.modified_ms == listed.modified_ms
    }
}

/// One blob as a shard listing shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListedBlob {
    /// The blob.
    pub digest: Digest,
    /// Its stored size.
    pub stored_size: u64,
    /// Its modification time in ms since the epoch, `i64::MIN` when unknown.
    pub modified_ms: i64,
}

impl ListedBlob {
    /// The proof this listing gets once its content is checked.
    pub fn proof(&self) -> ProofEntry {
        ProofEntry {
            digest: self.digest,
            stored_size: self.stored_size,
            modified_ms: self.modified_ms,
        }
    }
}

/// Encodes a proof list (entries sorted by digest, no duplicates).
pub fn encode_proofs(entries: &[ProofEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROOF_MAGIC.len() + entries.len() * PROOF_ENTRY_LEN);
    out.extend_from_slice(PROOF_MAGIC);
    for e in entries {
        out.extend_from_slice(&e.digest.0);
        out.extend_from_slice(&e.stored_size.to_be_bytes());
        out.extend_from_slice(&e.modified_ms.to_be_bytes());
    }
    out
}

/// Decodes a proof list read from the blob `digest`: refuses another format, a torn
/// entry, or entries out of order (the merge that reads them relies on the order).
pub fn decode_proofs(digest: &Digest, bytes: &[u8]) -> Result<Vec<ProofEntry>> {
    let corrupt = |detail: &str| Error::Corrupt {
        key: catalog::blob_key(digest),
        detail: format!("not a verify proof list: {detail}"),
    };
    let body = bytes
        .strip_prefix(PROOF_MAGIC)
        .ok_or_else(|| corrupt("unknown header"))?;
    if body.len() % PROOF_ENTRY_LEN != 0 {
        return Err(corrupt("torn entry"));
    }
    let mut out: Vec<ProofEntry> = Vec::with_capacity(body.len() / PROOF_ENTRY_LEN);
    for raw in body.chunks_exact(PROOF_ENTRY_LEN) {
        let entry = ProofEntry {
            digest: Digest(raw[..32].try_into().expect("32 bytes")),
            stored_size: u64::from_be_bytes(raw[32..40].try_into().expect("8 bytes")),
            modified_ms: i64::from_be_bytes(raw[40..48].try_into().expect("8 bytes")),
        };
        if out.last().is_some_and(|last| last.digest >= entry.digest) {
            return Err(corrupt("entries out of order"));
        }
        out.push(entry);
    }
    Ok(out)
}

/// The proofs of one blob shard.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ShardProofs {
    /// The shard: the digests' first byte.
    pub shard: u8,
    /// The blob holding the shard's [`ProofEntry`] list.
    pub list: Digest,
    /// Entries in it.
    pub entries: u64,
}

/// What a verify run covered.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyScope {
    /// `--full`: every blob re-read, no proof trusted.
    pub full: bool,
    /// `--backup ID`: this backup and the WAL it needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// `--since`: backups started and WAL archived since then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
}

/// One problem a run found.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyProblem {
    /// Its kind (`missing-blob`, `corrupt-blob`, `wal-gap`, …; see docs/recovery.md).
    pub kind: String,
    /// What it concerns: a blob digest, a backup id, a WAL file name.
    pub subject: String,
    /// One line: what is wrong, and where it is used.
    pub detail: String,
}

/// A verify run's counts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyCounts {
    /// Backups checked.
    pub backups: u64,
    /// WAL index entries checked.
    pub wal_entries: u64,
    /// Distinct content blobs referenced (chunks, WAL), file lists apart.
    pub blobs: u64,
    /// Of those, read and hashed by this run.
    pub blobs_read: u64,
    /// Stored bytes of those.
    pub bytes_read: u64,
    /// Referenced blobs not re-read: proven by an earlier run and listed unchanged.
    pub blobs_proven_before: u64,
    /// File lists and their pages read (always, to know the chunks).
    pub file_list_blobs: u64,
    /// Problems found.
    pub problems: u64,
    /// Notes (not failures).
    pub notes: u64,
}

/// The record of one verify run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct VerifyRecord {
    /// The run id ([`verify_id`] of `started_at`).
    pub id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// What it covered.
    pub scope: VerifyScope,
    /// What it counted.
    pub counts: VerifyCounts,
    /// True when it found no problem.
    pub passed: bool,
    /// The problems it found (at most [`PROBLEMS_RECORDED`]; `counts.problems` has them all).
    pub problems: Vec<VerifyProblem>,
    /// The blobs proven good after this run, per shard (left out of reports, where it is
    /// emptied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proofs: Vec<ShardProofs>,
    /// The tidemark version that ran it.
    pub tidemark_version: String,
}

/// The most problems a record keeps (the count is always whole).
pub const PROBLEMS_RECORDED: usize = 1000;

impl Repo {
    /// Writes a run's record under its id (the next free one: `-2`, `-3`… when two runs
    /// started in the same millisecond) and returns its key.
    pub async fn put_verify(&self, stanza: &Stanza, record: &mut VerifyRecord) -> Result<Key> {
        let base = record.id.clone();
        for n in 1.. {
            if n > 1 {
                record.id = format!("{base}-{n}");
            }
            let body = catalog::encode_record(record);
            let key = verify_key(stanza, &record.id, &Digest::of(&body))?;
            let taken = self
                .backend()
                .list(&format!("{}{}.", verify_prefix(stanza), record.id))
                .await?;
            if !taken.is_empty() {
                continue;
            }
            self.backend()
                .put(&key, Bytes::from(body), crate::backend::PutMode::Create)
                .await
                .or_else(|e| match e {
                    Error::AlreadyExists { .. } => Ok(()),
                    e => Err(e),
                })?;
            return Ok(key);
        }
        unreachable!("some id is free")
    }

    /// The keys of a stanza's verify records, oldest first.
    pub async fn verify_keys(&self, stanza: &Stanza) -> Result<Vec<Key>> {
        let mut keys: Vec<Key> = self
            .backend()
            .list(&verify_prefix(stanza))
            .await?
            .into_iter()
            .map(|m| m.key)
            .collect();
        // `<id>.<digest>`, where a second run in the same millisecond is `<id>-2`: order
        // by the time, then by that number (plain key order would put `-2` first).
        keys.sort_by_key(run_order);
        Ok(keys)
    }

    /// The newest verify record, if any.
    pub async fn last_verify(&self, stanza: &Stanza) -> Result<Option<VerifyRecord>> {
        match self.verify_keys(stanza).await?.last() {
            None => Ok(None),
            Some(key) => self.get_record(key).await.map(Some),
        }
    }

    /// A proof list, verified.
    pub async fn proofs(&self, digest: &Digest) -> Result<Vec<ProofEntry>> {
        let bytes = self.get_blob(digest).await?;
        decode_proofs(digest, &bytes)
    }

    /// Stores a proof list; returns its blob's digest.
    pub async fn put_proofs(&self, entries: &[ProofEntry]) -> Result<Digest> {
        Ok(self
            .put_blob(Bytes::from(encode_proofs(entries)))
            .await?
            .digest)
    }

    /// The blobs of one shard (`blobs/<hh>/`), in digest order. Objects under it whose
    /// name is not a digest (a backend's leftovers) are not blobs and are left out.
    pub async fn list_blob_shard(&self, shard: u8) -> Result<Vec<ListedBlob>> {
        let prefix = format!("{}/{shard:02x}/", catalog::BLOBS_FOLDER);
        let mut out: Vec<ListedBlob> = self
            .backend()
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|m| {
                let digest: Digest = m.key.file_name().parse().ok()?;
                (digest.0[0] == shard).then(|| ListedBlob {
                    digest,
                    stored_size: m.size,
                    modified_ms: m.last_modified.map_or(i64::MIN, |t| t.timestamp_millis()),
                })
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Reads the blob `digest` (of `stored_size` bytes, from a listing) and checks that it
    /// decodes to its digest, writing nothing anywhere; returns its raw length. Decoding
    /// and hashing run on a blocking thread, so that reads go on meanwhile; at most
    /// [`PART_SIZE`] stored bytes of it are held at once.
    pub async fn check_blob(&self, digest: &Digest, stored_size: u64) -> Result<u64> {
        let key = catalog::blob_key(digest);
        let mut decoder = BlobDecoder::new(key.clone(), *digest);
        let mut at = 0u64;
        loop {
            let piece = if at == 0 && stored_size <= PART_SIZE as u64 {
                self.backend().get(&key).await?
            } else {
                let end = (at + PART_SIZE as u64).min(stored_size);
                self.backend().get_range(&key, at..end).await?
            };
            if piece.is_empty() && at < stored_size {
                return Err(Error::Corrupt {
                    key: key.clone(),
                    detail: format!("read stopped at {at} of {stored_size} bytes"),
                });
            }
            at += piece.len() as u64;
            let last = at >= stored_size;
            decoder = tokio::task::spawn_blocking(move || {
                decoder.feed(&piece, &mut |_| Ok(()))?;
                Ok::<_, Error>(decoder)
            })
            .await
            .expect("blob decoding panicked")?;
            if last {
                return decoder.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::local::LocalBackend;
    use crate::Compression;
    use std::sync::Arc;

    fn entry(byte: u8, size: u64) -> ProofEntry {
        ProofEntry {
            digest: Digest([byte; 32]),
            stored_size: size,
            modified_ms: 1_700_000_000_000 + i64::from(byte),
        }
    }

    #[test]
    fn proof_lists_round_trip_and_refuse_damage() {
        let entries = vec![entry(1, 10), entry(2, 20), entry(9, 0)];
        let d = Digest::of(b"list");
        let bytes = encode_proofs(&entries);
        assert_eq!(bytes.len(), PROOF_MAGIC.len() + 3 * PROOF_ENTRY_LEN);
        assert_eq!(decode_proofs(&d, &bytes).unwrap(), entries);
        assert!(decode_proofs(&d, &bytes[..bytes.len() - 1]).is_err());
        assert!(decode_proofs(&d, b"something else").is_err());
        let unordered = encode_proofs(&[entry(2, 20), entry(1, 10)]);
        assert!(decode_proofs(&d, &unordered).is_err());
        let twice = encode_proofs(&[entry(2, 20), entry(2, 20)]);
        assert!(decode_proofs(&d, &twice).is_err());
        assert!(decode_proofs(&d, PROOF_MAGIC).unwrap().is_empty());
    }

    #[test]
    fn a_proof_holds_only_for_the_same_object() {
        let proof = entry(1, 10);
        let listed = ListedBlob {
            digest: proof.digest,
            stored_size: 10,
            modified_ms: proof.modified_ms,
        };
        assert!(proof.matches(&listed));
        assert!(!proof.matches(&ListedBlob {
            stored_size: 11,
            ..listed
        }));
        assert!(!proof.matches(&ListedBlob {
            modified_ms: proof.modified_ms + 1,
            ..listed
        }));
        let unknown = ListedBlob {
            modified_ms: i64::MIN,
            ..listed
        };
        assert!(!unknown.proof().matches(&unknown));
        assert_eq!(
            verify_id("2026-12-06T10:15:00.123Z".parse().unwrap()),
            "20261206T101500.123Z"
        );
    }

    #[tokio::test]
    async fn shards_list_blobs_and_check_reads_them_whole() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(LocalBackend::new(dir.path().join("repo")).unwrap());
        let repo = Repo::new(backend, Compression::Lz4);
        let big: Vec<u8> = (0..(PART_SIZE as u32 / 2 + 4096))
            .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
            .collect();
        let small = repo.put_blob(Bytes::from_static(b"small")).await.unwrap();
        let large = repo.put_blob(Bytes::from(big.clone())).await.unwrap();
        assert!(large.stored_len > PART_SIZE as u64, "read in ranges");
        for put in [small, large] {
            let listed = repo.list_blob_shard(put.digest.0[0]).await.unwrap();
            let found = listed.iter().find(|l| l.digest == put.digest).unwrap();
            assert_eq!(found.stored_size, put.stored_len);
            assert_ne!(found.modified_ms, i64::MIN);
            assert_eq!(
                repo.check_blob(&put.digest, found.stored_size)
                    .await
                    .unwrap(),
                put.raw_len
            );
        }
        // Damage one byte of the large blob: the check names it corrupt.
        let path = dir
            .path()
            .join("repo")
            .join(catalog::blob_key(&large.digest).as_str());
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() - 100;
        bytes[at] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let err = repo
            .check_blob(&large.digest, large.stored_len)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Integrity, "{err}");
        std::fs::remove_file(&path).unwrap();
        let err = repo
            .check_blob(&large.digest, large.stored_len)
            .await
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[tokio::test]
    async fn records_are_kept_per_run_and_the_newest_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(LocalBackend::new(dir.path().join("repo")).unwrap());
        let repo = Repo::new(backend, Compression::Lz4);
        let stanza = Stanza::new("main").unwrap();
        assert_eq!(repo.last_verify(&stanza).await.unwrap(), None);
        let at: DateTime<Utc> = "2026-12-06T10:15:00Z".parse().unwrap();
        let mut record = VerifyRecord {
            id: verify_id(at),
            started_at: at,
            finished_at: at,
            scope: VerifyScope::default(),
            counts: VerifyCounts::default(),
            passed: true,
            problems: vec![],
            proofs: vec![],
            tidemark_version: "test".into(),
        };
        repo.put_verify(&stanza, &mut record).await.unwrap();
        let mut second = record.clone();
        second.passed = false;
        repo.put_verify(&stanza, &mut second).await.unwrap();
        assert_eq!(second.id, format!("{}-2", record.id));
        assert_eq!(repo.verify_keys(&stanza).await.unwrap().len(), 2);
        assert_eq!(repo.last_verify(&stanza).await.unwrap(), Some(second));
    }
}
