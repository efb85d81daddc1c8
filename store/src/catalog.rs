//! The repository's records and where they live: the format marker, cluster identity,
//! the WAL index and quarantine. Key layout (see `docs/repository-format.md`):
//!
//! ```text
//! repository                                          format marker
//! blobs/<hh>/<sha256>                                 content, named by its raw SHA-256
//! stanzas/<stanza>/cluster/<system-id>                cluster record
//! stanzas/<stanza>/wal/<TTTTTTTTXXXXXXXX>/<file>.<sha256>   WAL index (segments, .partial, .backup)
//! stanzas/<stanza>/wal/history/<TTTTTTTT>.history.<sha256>  timeline history files
//! stanzas/<stanza>/wal/<dir>/<file>.claim                   which content a name is given
//! stanzas/<stanza>/quarantine/<file>.<sha256>         rejected bytes kept for forensics
//! ```
//!
//! Nothing here is ever overwritten, even on a store that ignores conditional writes:
//! an index key carries its content's digest, and a cluster record key its system id, so
//! two different contents under one name are two keys that every reader sees. A name's
//! claim is the one key that does not carry the digest: archive-push creates it
//! create-only before the index entry, so that of two concurrent pushes of different
//! content exactly one wins where the store's create is exclusive (see
//! [`wal_claim_key`]). Readers never use claims: the index entries are the truth.
//!
//! Records are JSON behind a one-line envelope `tidemark-record <format> <sha256>\n`,
//! the digest covering the JSON bytes: a damaged record is refused, and a record from a
//! newer format is refused with a clear message rather than misread.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{Compression, Digest};
use crate::pg::{Lsn, SystemId, WalFileName, WalSegmentName};
use crate::serde_pg;
use crate::wal_content::WalContent;
use crate::{Error, Key, Result};

/// The repository format this build writes, and the newest it reads.
pub const REPOSITORY_FORMAT: u32 = 1;
/// The newest record envelope format this build reads. Records are written with
/// [`BASE_RECORD_FORMAT`], except backup records: format 2 (their file list in pages,
/// the server's manifest inside it, no `pg_manifest` field), which a build that reads
/// only format 1 refuses with "upgrade tidemark" rather than misreading.
pub const RECORD_FORMAT: u32 = 2;
/// The envelope format of every record but backup records.
pub const BASE_RECORD_FORMAT: u32 = 1;
/// The envelope format of backup records.
pub const BACKUP_RECORD_FORMAT: u32 = 2;
const ENVELOPE_TAG: &str = "tidemark-record";

/// A stanza: one cluster's name inside a repository (`main` by default).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Stanza(String);

impl Stanza {
    /// Validates a stanza name: 1-64 of `[A-Za-z0-9_-]`.
    pub fn new(name: &str) -> Result<Stanza> {
        if (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            Ok(Stanza(name.to_string()))
        } else {
            Err(Error::BadStanza(name.to_string()))
        }
    }
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Stanza {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Serializes a record inside its envelope, of [`BASE_RECORD_FORMAT`].
pub fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    encode_record_as(value, BASE_RECORD_FORMAT)
}

/// Serializes a record inside an envelope of `format`.
pub fn encode_record_as<T: Serialize>(value: &T, format: u32) -> Vec<u8> {
    let body = serde_json::to_vec_pretty(value).expect("records serialize");
    let mut out = format!("{ENVELOPE_TAG} {format} {}\n", Digest::of(&body)).into_bytes();
    out.extend_from_slice(&body);
    out.push(b'\n');
    out
}

/// Checks a record's envelope and parses it.
pub fn decode_record<T: DeserializeOwned>(key: &Key, bytes: &[u8]) -> Result<T> {
    let corrupt = |detail: &str| Error::Corrupt {
        key: key.clone(),
        detail: detail.to_string(),
    };
    let nl = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no record envelope"))?;
    let head =
        std::str::from_utf8(&bytes[..nl]).map_err(|_| corrupt("unreadable record envelope"))?;
    let mut parts = head.split(' ');
    if parts.next() != Some(ENVELOPE_TAG) {
        return Err(corrupt("not a tidemark record"));
    }
    let format: u32 = parts
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| corrupt("unreadable record format"))?;
    if format > RECORD_FORMAT {
        return Err(Error::UnsupportedFormat {
            what: format!("record {key}"),
            found: format,
            supported: RECORD_FORMAT,
        });
    }
    let digest: Digest = parts
        .next()
        .ok_or_else(|| corrupt("record without checksum"))?
        .parse()
        .map_err(|_| corrupt("bad record checksum"))?;
    let mut body = &bytes[nl + 1..];
    if body.last() == Some(&b'\n') {
        body = &body[..body.len() - 1];
    }
    if Digest::of(body) != digest {
        return Err(corrupt("record checksum mismatch"));
    }
    serde_json::from_slice(body).map_err(|e| Error::Catalog {
        what: format!("record {key}"),
        detail: e.to_string(),
    })
}

/// The marker at the root of every repository.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RepositoryRecord {
    /// The repository format ([`REPOSITORY_FORMAT`] when written by this build).
    pub format: u32,
}

/// Who a stanza's cluster is. Created by the first archive-push (from the segment's long
/// page header) or by `tidemark init` (from the server).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterRecord {
    /// `pg_control`'s system identifier.
    #[serde(with = "serde_pg::system_id")]
    pub system_id: SystemId,
    /// PostgreSQL major version (15, 16, …).
    pub pg_major: u32,
    /// WAL segment size in bytes.
    pub wal_segment_size: u64,
    /// WAL page size in bytes.
    pub wal_page_size: u32,
    /// When this record was written.
    pub created_at: DateTime<Utc>,
    /// What wrote it (`archive-push`, `init`).
    pub created_by: String,
}

/// One archived WAL file: what the index key names, plus what `info` and the planner need.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WalRecord {
    /// The file name PostgreSQL gave it.
    pub name: String,
    /// `segment`, `partial`, `backup` or `history`.
    pub kind: String,
    /// SHA-256 of the raw content (also in the key).
    pub digest: Digest,
    /// Raw size in bytes.
    pub raw_size: u64,
    /// Bytes the blob takes in the repository.
    pub stored_size: u64,
    /// The blob's compression.
    pub compression: Compression,
    /// When it was archived.
    pub archived_at: DateTime<Utc>,
    /// The cluster's system id, for segment-shaped files.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_pg::opt_system_id"
    )]
    pub system_id: Option<SystemId>,
    /// Where the file starts in WAL, for segments and partials (stored as `X/X`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_pg::opt_lsn"
    )]
    pub start_lsn: Option<Lsn>,
    /// The tidemark version that archived it.
    pub tidemark_version: String,
    /// What the segment holds for the recovery planner (the WAL content index; see
    /// [`crate::wal_content`]). `None` for files archived before the index existed (then
    /// `tidemark reindex` writes it beside the entry), for history and backup-label files,
    /// and for segments the decoder could not read at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<WalContent>,
}

/// Bytes refused for a name that already holds other content, kept for forensics.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct QuarantineRecord {
    /// The file name.
    pub name: String,
    /// SHA-256 of the refused content; its blob holds the bytes.
    pub digest: Digest,
    /// The digests already archived under this name.
    pub archived_digests: Vec<Digest>,
    /// Raw size of the refused content.
    pub raw_size: u64,
    /// When it was refused.
    pub quarantined_at: DateTime<Utc>,
}

/// The format marker's key.
pub fn repository_key() -> Key {
    Key::new("repository").expect("valid")
}

/// Where the blob with this digest lives.
pub fn blob_key(digest: &Digest) -> Key {
    let hex = digest.to_hex();
    Key::new(format!("{BLOBS_FOLDER}/{}/{hex}", &hex[..2])).expect("valid")
}

/// The folder every blob key lies under.
pub const BLOBS_FOLDER: &str = "blobs";

/// The prefix of a stanza's cluster records.
pub fn cluster_prefix(stanza: &Stanza) -> String {
    format!("stanzas/{stanza}/cluster/")
}

/// A cluster record's key.
pub fn cluster_key(stanza: &Stanza, system_id: SystemId) -> Key {
    Key::new(format!("stanzas/{stanza}/cluster/{system_id}")).expect("valid")
}

/// The prefix of a stanza's whole WAL index.
pub fn wal_prefix(stanza: &Stanza) -> String {
    format!("stanzas/{stanza}/wal/")
}

fn wal_dir(stanza: &Stanza, name: &WalFileName) -> String {
    match name.segment() {
        Some(WalSegmentName { timeline, log, .. }) => {
            format!("stanzas/{stanza}/wal/{:08X}{log:08X}", timeline.0)
        }
        None => wal_history_prefix(stanza).trim_end_matches('/').to_string(),
    }
}

/// The prefix of a stanza's timeline history files in the WAL index (nothing else lies
/// under it).
pub fn wal_history_prefix(stanza: &Stanza) -> String {
    format!("stanzas/{stanza}/wal/history/")
}

/// The prefix under which every index entry of exactly this file name lies (and, since
/// it is a string prefix, entries of longer names such as `.partial`: filter with
/// [`parse_wal_key`]).
pub fn wal_name_prefix(stanza: &Stanza, name: &WalFileName) -> String {
    format!("{}/{name}.", wal_dir(stanza, name))
}

/// The index key of `name` with content `digest`.
pub fn wal_key(stanza: &Stanza, name: &WalFileName, digest: &Digest) -> Key {
    Key::new(format!("{}/{name}.{digest}", wal_dir(stanza, name))).expect("valid")
}

/// The key of `name`'s claim: a copy of the [`WalRecord`] of the content that archive-push
/// gave the name, created (create-only) after its blob and before its index entry. The
/// create is what decides between two concurrent pushes of different content: only one
/// can create it. Its key carries no digest, and `.claim` is no digest, so
/// [`parse_wal_key`] (and so every reader of the index, this build's and older ones)
/// never takes it for an entry.
pub fn wal_claim_key(stanza: &Stanza, name: &WalFileName) -> Key {
    Key::new(format!("{}/{name}.claim", wal_dir(stanza, name))).expect("valid")
}

/// Reads the file name and digest back out of an index key.
pub fn parse_wal_key(key: &Key) -> Option<(WalFileName, Digest)> {
    let (name, digest) = key.file_name().rsplit_once('.')?;
    Some((WalFileName::from_str(name).ok()?, digest.parse().ok()?))
}

/// The prefix of a stanza's quarantine records.
pub fn quarantine_prefix(stanza: &Stanza) -> String {
    format!("stanzas/{stanza}/quarantine/")
}

/// Where refused content for `name` is recorded.
pub fn quarantine_key(stanza: &Stanza, name: &WalFileName, digest: &Digest) -> Key {
    Key::new(format!("{}{name}.{digest}", quarantine_prefix(stanza))).expect("valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_damage() {
        let key = Key::new("stanzas/main/cluster/1").unwrap();
        let rec = ClusterRecord {
            system_id: SystemId(u64::MAX - 1),
            pg_major: 15,
            wal_segment_size: 16 << 20,
            wal_page_size: 8192,
            created_at: "2026-11-21T10:00:00Z".parse().unwrap(),
            created_by: "init".into(),
        };
        let bytes = encode_record(&rec);
        assert!(bytes.starts_with(b"tidemark-record 1 "));
        assert_eq!(decode_record::<ClusterRecord>(&key, &bytes).unwrap(), rec);

        let text = String::from_utf8(bytes.clone()).unwrap();
        let damaged = text.replace("\"pg_major\": 15", "\"pg_major\": 16");
        assert!(matches!(
            decode_record::<ClusterRecord>(&key, damaged.as_bytes()),
            Err(Error::Corrupt { .. })
        ));
        let two = text.replacen("tidemark-record 1 ", "tidemark-record 2 ", 1);
        assert_eq!(
            decode_record::<ClusterRecord>(&key, two.as_bytes()).unwrap(),
            rec
        );
        let newer = text.replacen("tidemark-record 1 ", "tidemark-record 3 ", 1);
        assert!(matches!(
            decode_record::<ClusterRecord>(&key, newer.as_bytes()),
            Err(Error::UnsupportedFormat { .. })
        ));
        assert!(decode_record::<ClusterRecord>(&key, b"{}").is_err());
    }

    #[test]
    fn wal_keys_carry_name_and_digest() {
        let stanza = Stanza::new("main").unwrap();
        let d = Digest::of(b"x");
        for name in [
            "000000010000000A000000FF",
            "000000010000000A000000FF.partial",
            "000000010000000A000000FF.00000028.backup",
            "00000002.history",
        ] {
            let name: WalFileName = name.parse().unwrap();
            let key = wal_key(&stanza, &name, &d);
            assert!(key.as_str().starts_with(&wal_name_prefix(&stanza, &name)));
            assert_eq!(parse_wal_key(&key), Some((name, d)));
            // A claim lies under the name's prefix, and is never taken for an entry.
            let claim = wal_claim_key(&stanza, &name);
            assert!(claim.as_str().starts_with(&wal_name_prefix(&stanza, &name)));
            assert_eq!(parse_wal_key(&claim), None, "{claim}");
        }
        let seg: WalFileName = "000000010000000A000000FF".parse().unwrap();
        assert_eq!(
            wal_claim_key(&stanza, &seg).as_str(),
            "stanzas/main/wal/000000010000000A/000000010000000A000000FF.claim"
        );
        assert_eq!(
            wal_key(&stanza, &seg, &d).as_str(),
            format!("stanzas/main/wal/000000010000000A/000000010000000A000000FF.{d}")
        );
        assert!(Stanza::new("").is_err());
        assert!(Stanza::new("a/b").is_err());
        assert!(Stanza::new("..").is_err());
    }
}
