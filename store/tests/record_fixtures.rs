//! The repository's records, byte for byte: fixtures written by the code before the
//! records held types (issue 13, item 4: `start_lsn: Lsn`, not `String`) must decode and
//! re-encode to the same bytes, so that typed records change nothing in a repository.
//!
//! `tests/fixtures/records/*.record` were written by `encode_record`/`encode_record_as`
//! of commit aa54c6e (string LSNs, `u64` system ids, `u32` timelines, `String` digests),
//! with every optional field of each record set (and, for WAL records, unset). Never
//! regenerate them with newer code: that would prove nothing.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tidemark_store::backup::BackupRecord;
use tidemark_store::catalog::{
    decode_record, encode_record_as, ClusterRecord, QuarantineRecord, WalRecord,
};
use tidemark_store::Key;

/// Reads a fixture, checks that decoding and re-encoding gives its exact bytes, and
/// returns the decoded record.
fn round_trip<T: Serialize + DeserializeOwned>(file: &str) -> T {
    let path = format!(
        "{}/tests/fixtures/records/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap();
    let format: u32 =
        std::str::from_utf8(&bytes[..bytes.iter().position(|&b| b == b'\n').unwrap()])
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
    let key = Key::new(format!("fixtures/{file}")).unwrap();
    let record: T = decode_record(&key, &bytes).unwrap();
    let again = encode_record_as(&record, format);
    assert!(
        again == bytes,
        "{file} re-encodes differently:\n{}\n---\n{}",
        String::from_utf8_lossy(&bytes),
        String::from_utf8_lossy(&again)
    );
    record
}

#[test]
fn cluster_record_is_byte_identical() {
    let _: ClusterRecord = round_trip("cluster.record");
}

#[test]
fn wal_records_are_byte_identical() {
    let _: WalRecord = round_trip("wal-segment.record");
    let _: WalRecord = round_trip("wal-history.record");
}

#[test]
fn backup_record_is_byte_identical() {
    let _: BackupRecord = round_trip("backup.record");
}

#[test]
fn quarantine_record_is_byte_identical() {
    let _: QuarantineRecord = round_trip("quarantine.record");
}
