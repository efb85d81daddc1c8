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
use tidemark_store::pg::{Lsn, SystemId, TimelineId};
use tidemark_store::{Digest, Key};

const SYSTEM_ID: SystemId = SystemId(7_312_345_678_901_234_567);

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
    let c: ClusterRecord = round_trip("cluster.record");
    assert_eq!(c.system_id, SYSTEM_ID);
}

#[test]
fn wal_records_are_byte_identical() {
    let seg: WalRecord = round_trip("wal-segment.record");
    assert_eq!(seg.digest, Digest::of(b"segment A"));
    assert_eq!(seg.system_id, Some(SYSTEM_ID));
    assert_eq!(seg.start_lsn, Some(Lsn(0xA00_0000)));
    let history: WalRecord = round_trip("wal-history.record");
    assert_eq!(history.digest, Digest::of(b"history 2"));
    assert_eq!((history.system_id, history.start_lsn), (None, None));
}

#[test]
fn backup_record_is_byte_identical() {
    let b: BackupRecord = round_trip("backup.record");
    assert_eq!(b.system_id, SYSTEM_ID);
    assert_eq!(
        (b.timeline, b.stop_timeline),
        (TimelineId(2), TimelineId(3))
    );
    assert_eq!(b.start_lsn, Lsn(0x900_0028));
    assert_eq!(b.stop_lsn, Lsn(0x1000_0100));
    // The reason for typed LSNs: as text, "0/10000100" sorts before "0/9000028".
    assert!(b.start_lsn < b.stop_lsn);
    assert!(b.start_lsn.to_string() > b.stop_lsn.to_string());
    assert_eq!(b.file_list, Digest::of(b"file list"));
    assert_eq!(b.notices, Some(2));
    assert!(b.checksum_failures_ignored);
}

#[test]
fn quarantine_record_is_byte_identical() {
    let q: QuarantineRecord = round_trip("quarantine.record");
    assert_eq!(q.digest, Digest::of(b"other A"));
    assert_eq!(
        q.archived_digests,
        vec![Digest::of(b"segment A"), Digest::of(b"third A")]
    );
}

#[test]
fn malformed_typed_fields_are_refused() {
    // What used to be any string must now be the type's text form: a record that is not
    // is refused as a catalog error (its envelope checksum is intact), never misread.
    let path = format!(
        "{}/tests/fixtures/records/backup.record",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    let body = text.split_once('\n').unwrap().1.trim_end();
    let key = Key::new("fixtures/bad").unwrap();
    for (from, to) in [
        ("\"0/9000028\"", "\"9000028\""),
        ("\"0/9000028\"", "9000028"),
        ("\"timeline\": 2", "\"timeline\": \"2\""),
    ] {
        let bad = body.replace(from, to);
        assert_ne!(bad, body);
        let bytes = encode_record_as(&serde_json::from_str::<serde_json::Value>(&bad).unwrap(), 2);
        let err = decode_record::<BackupRecord>(&key, &bytes).unwrap_err();
        assert!(
            matches!(err, tidemark_store::Error::Catalog { .. }),
            "{from} -> {to}: {err}"
        );
    }
}
