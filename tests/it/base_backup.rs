//! A base backup streamed through tidemark's own replication client (the library, not the
//! binary) from a real PostgreSQL 15 cluster, extracted, and checked by PostgreSQL's own
//! `pg_verifybackup`.
//!
//! What is proven here:
//! - `BASE_BACKUP` over scram-sha-256 TCP with a `REPLICATION` role streams one archive per
//!   tablespace (`<oid>.tar` first, `base.tar` last) whose members the streaming tar reader
//!   turns into files, directories and symlinks (`pg_tblspc/<oid>`, relocated as
//!   `pg_basebackup -T` does) with their modes, plus a manifest, progress reports, and
//!   start/end positions;
//! - the extracted folder plus `backup_manifest` passes `pg_verifybackup -n` (every file's
//!   size and CRC-32C checksum as the server computed them; `-n` because the backup is
//!   taken without WAL);
//! - the label arrives quoted correctly, and the connection is usable after the backup.
//!
//! It skips (or fails under `CI`) when PostgreSQL or `pg_verifybackup` is missing.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use tidemark_pgclient::conn::{BackupEvent, ReplicationConn};
use tidemark_pgclient::proto::BaseBackupOptions;
use tidemark_pgclient::settings::{self as pgconn, PgSettings, Secret, SslMode};
use tidemark_pgclient::tar::EntryKind;

use crate::harness::pg::{chown_to_user, pg_bin, user_command, Cluster, ClusterOptions, TestDir};
use crate::skip_or_fail;

/// `pg_verifybackup` of the machine's PostgreSQL 15 (`PG_BIN` may point to a server-only
/// build without it).
const PG_VERIFYBACKUP: &str = "/usr/lib/postgresql/15/bin/pg_verifybackup";

/// No libpq variables from the developer's environment: only the settings given.
struct NoEnv;

impl pgconn::Env for NoEnv {
    fn var(&self, _name: &str) -> Option<String> {
        None
    }
}

/// `rel` as a path inside `root`, refusing absolute paths and `..` (a hostile archive must
/// not write outside the folder). `.` is fine: PostgreSQL names pg_wal's subfolder
/// `./pg_wal/archive_status`.
fn inside(root: &Path, rel: &str) -> PathBuf {
    let p = Path::new(rel);
    assert!(
        p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir)),
        "archive member {rel:?} is absolute or leaves the folder"
    );
    root.join(p)
}

/// What the backup produced, besides the extracted files.
#[derive(Debug, Default)]
struct Seen {
    archives: Vec<(String, Option<String>)>,
    start: Option<tidemark_pgclient::proto::BackupStart>,
    end: Option<tidemark_pgclient::proto::BackupEnd>,
    progress: Vec<u64>,
    files: Vec<(String, u64)>,
    dirs: usize,
    symlinks: usize,
    manifest_bytes: usize,
    /// The server's warnings, as logged.
    notices: Vec<String>,
}

/// Streams a base backup into `dir` (files, directories, symlinks with their modes, and
/// `backup_manifest`), writing each piece as it arrives. Each tablespace goes to
/// `<dir>-ts-<oid>`, and its `pg_tblspc` symlink is pointed there (as `pg_basebackup -T`
/// does).
async fn backup_into(conn: &mut ReplicationConn, dir: &Path, label: &str) -> Seen {
    let opts = BaseBackupOptions {
        label: label.into(),
        fast_checkpoint: true,
        manifest: true,
        server_major: 0, // filled in from the connection
    };
    let mut stream = conn.base_backup(&opts).await.expect("BASE_BACKUP");
    let mut seen = Seen::default();
    let mut manifest = File::create(dir.join("backup_manifest")).expect("backup_manifest");
    chown_to_user(&dir.join("backup_manifest"));
    // The member being written: its path, declared size, mode, open file, bytes written.
    let mut open: Option<(PathBuf, String, u64, u32, File, u64)> = None;
    // Tablespace location → where it is extracted; the current archive's folder.
    let mut relocated: HashMap<String, PathBuf> = HashMap::new();
    let mut root = dir.to_path_buf();
    while let Some(event) = stream.next_event().await.expect("backup event") {
        match event {
            BackupEvent::Started(start) => {
                for ts in &start.tablespaces {
                    if let (Some(oid), Some(location)) = (ts.oid, &ts.location) {
                        let to = PathBuf::from(format!("{}-ts-{oid}", dir.display()));
                        std::fs::create_dir(&to).unwrap();
                        std::fs::set_permissions(&to, PermissionsExt::from_mode(0o700)).unwrap();
                        chown_to_user(&to);
                        relocated.insert(location.clone(), to);
                    }
                }
                seen.start = Some(start);
            }
            BackupEvent::ArchiveStart {
                name,
                tablespace_location,
            } => {
                root = match &tablespace_location {
                    Some(location) => relocated
                        .get(location)
                        .unwrap_or_else(|| panic!("archive {name}: unknown tablespace {location}"))
                        .clone(),
                    None => dir.to_path_buf(),
                };
                seen.archives.push((name, tablespace_location));
            }
            BackupEvent::Entry(e) => {
                let path = inside(&root, &e.path);
                match e.kind {
                    EntryKind::Dir => {
                        std::fs::create_dir_all(&path).unwrap();
                        std::fs::set_permissions(&path, PermissionsExt::from_mode(e.mode)).unwrap();
                        chown_to_user(&path);
                        seen.dirs += 1;
                    }
                    EntryKind::Symlink { target } => {
                        let target = relocated
                            .get(&target)
                            .cloned()
                            .unwrap_or_else(|| PathBuf::from(&target));
                        std::os::unix::fs::symlink(&target, &path).unwrap_or_else(|err| {
                            panic!("symlink {} -> {}: {err}", path.display(), target.display())
                        });
                        seen.symlinks += 1;
                        chown_to_user(&path);
                    }
                    EntryKind::File => {
                        let f = File::create(&path)
                            .unwrap_or_else(|err| panic!("create {}: {err}", path.display()));
                        open = Some((path, e.path, e.size, e.mode, f, 0));
                    }
                }
            }
            BackupEvent::Data(piece) => {
                let (_, _, _, _, f, written) = open.as_mut().expect("data outside a file");
                f.write_all(&piece).unwrap();
                *written += piece.len() as u64;
            }
            BackupEvent::EntryEnd => {
                if let Some((path, rel, size, mode, f, written)) = open.take() {
                    assert_eq!(written, size, "{rel}: bytes written vs header size");
                    drop(f);
                    std::fs::set_permissions(&path, PermissionsExt::from_mode(mode)).unwrap();
                    chown_to_user(&path);
                    seen.files.push((rel, size));
                }
            }
            BackupEvent::ArchiveEnd => assert!(open.is_none(), "archive ended inside a file"),
            BackupEvent::Manifest(piece) => {
                manifest.write_all(&piece).unwrap();
                seen.manifest_bytes += piece.len();
            }
            BackupEvent::Progress(done) => seen.progress.push(done),
            BackupEvent::Finished(end) => seen.end = Some(end),
            BackupEvent::Notice(notice) => seen.notices.push(notice.to_string()),
        }
    }
    seen
}

#[test]
fn base_backup_streams_through_the_client_and_passes_pg_verifybackup() {
    if pg_bin().is_none() {
        skip_or_fail!(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/15/bin, or set PG_BIN)"
        );
    }
    if !Path::new(PG_VERIFYBACKUP).is_file() {
        skip_or_fail!("{PG_VERIFYBACKUP} not found");
    }
    let t = TestDir::new("base-backup");
    // initdb's pg_hba.conf has `host replication all 127.0.0.1/32 scram-sha-256`.
    let mut c = Cluster::init(
        &t,
        "pg",
        ClusterOptions {
            password: Some("secret".into()),
            ..Default::default()
        },
    );
    c.start();
    c.psql("create role repl login replication password 'repl-pw'");
    // A few MB of data (about 4 MB of table and index), and a tablespace with a table, so
    // that the backup has two archives and a symlink.
    c.workload(30_000);
    let rows = c.psql("select count(*) from tm_load");
    assert_eq!(rows, "30000");
    let ts = t.mkdir("ts");
    c.psql(&format!("create tablespace ts location '{}'", ts.display()));
    c.psql("create table in_ts tablespace ts as select g as id from generate_series(1, 1000) g");
    let ts_oid = c.psql("select oid from pg_tablespace where spcname = 'ts'");

    let target = pgconn::resolve(
        &PgSettings {
            host: Some("127.0.0.1".into()),
            port: Some(c.port()),
            user: Some("repl".into()),
            password: Some(Secret::new("repl-pw")),
            sslmode: Some(SslMode::Disable),
            ..Default::default()
        },
        &NoEnv,
    )
    .expect("PgTarget");
    let dir = t.mkdir("extracted");
    let label = "tidemark it 'quoted'";
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen = rt.block_on(async {
        let mut conn = ReplicationConn::connect(&target).await.expect("connect");
        assert_eq!(conn.server_major(), Some(15), "{:?}", conn.server_version());
        let started = std::time::Instant::now();
        let seen = backup_into(&mut conn, &dir, label).await;
        eprintln!("base backup streamed in {:?}", started.elapsed());
        // The server is ready for the next command on the same connection.
        let id = conn
            .identify_system()
            .await
            .expect("IDENTIFY_SYSTEM after the backup");
        assert_eq!(id.system_id.to_string(), c.system_identifier());
        conn.close().await.unwrap();
        seen
    });

    // One archive, the data directory; start ≤ end on timeline 1; progress reported.
    // One archive per tablespace, the data directory last, and pg_tblspc/<oid> a symlink.
    assert_eq!(
        seen.archives,
        vec![
            (format!("{ts_oid}.tar"), Some(ts.display().to_string())),
            ("base.tar".to_string(), None)
        ]
    );
    assert_eq!(seen.symlinks, 1, "{seen:?}");
    let link = std::fs::read_link(dir.join("pg_tblspc").join(&ts_oid)).unwrap();
    assert_eq!(
        link,
        PathBuf::from(format!("{}-ts-{ts_oid}", dir.display()))
    );
    let start = seen.start.as_ref().expect("start position");
    let end = seen.end.as_ref().expect("end position");
    assert_eq!(start.timeline, 1);
    assert_eq!(end.timeline, 1);
    assert!(start.start_lsn <= end.end_lsn, "{start:?} {end:?}");
    assert_eq!(start.tablespaces.len(), 2, "{start:?}");
    assert_eq!(
        start.tablespaces[0].oid.map(|o| o.to_string()),
        Some(ts_oid.clone())
    );
    assert_eq!(start.tablespaces[1].oid, None);
    assert!(!seen.progress.is_empty(), "no progress reports");
    assert!(
        seen.progress.windows(2).all(|w| w[0] <= w[1]),
        "{:?}",
        seen.progress
    );
    assert!(seen.manifest_bytes > 0, "no manifest");
    assert!(seen.dirs > 5, "{seen:?}");
    let size_of = |name: &str| {
        seen.files
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} not in the backup: {:?}", seen.files))
            .1
    };
    assert_eq!(size_of("PG_VERSION"), 3);
    assert_eq!(size_of("global/pg_control"), 8192);
    assert_eq!(std::fs::read(dir.join("PG_VERSION")).unwrap(), b"15\n");
    let total: u64 = seen.files.iter().map(|(_, s)| s).sum();
    assert!(total > 4 << 20, "only {total} bytes of files");
    let backup_label = std::fs::read_to_string(dir.join("backup_label")).unwrap();
    assert!(
        backup_label.contains(&format!("LABEL: {label}")),
        "{backup_label}"
    );
    let mode = std::fs::metadata(dir.join("global/pg_control"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "pg_control's mode");

    // PostgreSQL's own check: every file's size and checksum against the manifest.
    let out = user_command(PG_VERIFYBACKUP, t.path())
        .arg("-n")
        .arg(&dir)
        .output()
        .expect("run pg_verifybackup");
    assert!(
        out.status.success(),
        "pg_verifybackup failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    c.stop();
}
