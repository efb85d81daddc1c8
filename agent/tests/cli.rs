//! End-to-end tests of the `tidemark` binary's command line that need no server: exit
//! codes, one-line errors, and how flags, `TIDEMARK_*` variables and the config file
//! combine. (Having integration tests here also makes `cargo test --workspace` build the
//! binary that `tests/it` runs against PostgreSQL and S3.)

use std::path::Path;
use std::process::{Command, Output};

fn tidemark(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.args(args);
    // Start from a clean slate: no settings leak in from the developer's environment.
    for (k, _) in std::env::vars() {
        if k.starts_with("TIDEMARK_") || k.starts_with("PG") || k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("tidemark runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `info` against a repository that holds no stanza, which it refuses (exit 2) with
/// a line naming both the stanza and the repository it was given: "<repo> <stanza>".
fn info_repo(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut all = vec!["info", "--json"];
    all.extend_from_slice(args);
    let out = tidemark(&all, env);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty(), "{err}");
    let (stanza, repo) = err
        .trim()
        .strip_prefix("tidemark: info: stanza \"")
        .and_then(|rest| rest.split_once("\" does not exist in repository "))
        .unwrap_or_else(|| panic!("unexpected refusal: {err}"));
    let repo = repo.split(':').take(2).collect::<Vec<_>>().join(":");
    format!("{repo} {stanza}")
}

/// An empty repository (format marker only) at `path`, as `tidemark init` starts one.
fn empty_repository(path: &Path) {
    use std::sync::Arc;
    use tidemark_store::backend::local::LocalBackend;
    use tidemark_store::{Compression, Repo};
    let repo = Repo::new(Arc::new(LocalBackend::new(path).unwrap()), Compression::Lz4);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(repo.ensure_format())
        .unwrap();
}

#[test]
fn version_and_help_exit_zero() {
    assert_eq!(tidemark(&["--version"], &[]).status.code(), Some(0));
    assert_eq!(tidemark(&["--help"], &[]).status.code(), Some(0));
}

#[test]
fn usage_errors_are_one_line_and_exit_2() {
    let out = tidemark(&["archive-push"], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("tidemark: ") && err.contains("<PATH>"),
        "{err}"
    );
}

#[test]
fn archive_get_usage_errors_stop_recovery() {
    // A restore_command missing %p must not read as "not in the archive" (exit 1).
    let out = tidemark(&["archive-get", "000000010000000000000001"], &[]);
    assert_eq!(out.status.code(), Some(128), "{}", stderr(&out));
    let out = tidemark(
        &[
            "--repo",
            "relative/path",
            "archive-get",
            "000000010000000000000001",
            "x",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(128), "{}", stderr(&out));
}

#[test]
fn a_panic_never_reads_as_not_found() {
    // Exit 101 (Rust's panic status) from restore_command reads as "not in the
    // archive": recovery would end early. archive-get must exit above 125, archive-push
    // with an ordinary failure (1..125), each with one line. The panic is injected on a
    // worker thread (debug builds only), where a caught panic could otherwise be turned
    // into some other outcome.
    let dir = tempfile::tempdir().unwrap();
    let repo = format!("file://{}", dir.path().join("repo").display());
    let dest = dir.path().join("dest");
    let wal = dir.path().join("000000010000000000000001");
    std::fs::write(&wal, b"not read: the panic comes first").unwrap();
    let get = vec![
        "archive-get",
        "000000010000000000000001",
        dest.to_str().unwrap(),
    ];
    let cases = [
        (get.clone(), "archive-get", 128),
        (get, "archive-get:worker", 128),
        (
            vec!["archive-push", wal.to_str().unwrap()],
            "archive-push",
            1,
        ),
        (
            vec!["archive-push", wal.to_str().unwrap()],
            "archive-push:worker",
            1,
        ),
        (vec!["info"], "info", 1),
    ];
    for (args, command, code) in cases {
        let mut all = vec!["--repo", repo.as_str()];
        all.extend(args);
        let out = tidemark(&all, &[("TIDEMARK_TEST_PANIC", command)]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{command}: {err}");
        assert_eq!(err.lines().count(), 1, "{command}: {err}");
        assert!(
            err.starts_with("tidemark: internal error") && err.contains("TIDEMARK_TEST_PANIC"),
            "{command}: {err}"
        );
        assert!(!dest.exists(), "nothing delivered");
    }
}

#[test]
fn bad_settings_exit_2_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--repo".into(), "relative/path".into(), "info".into()],
            "file:///",
        ),
        (
            vec!["--stanza".into(), "a/b".into(), "info".into()],
            "stanza",
        ),
        (
            vec!["--compression".into(), "zstd".into(), "info".into()],
            "compression",
        ),
        (
            vec![
                "--config".into(),
                dir.path().join("missing.toml").display().to_string(),
                "info".into(),
            ],
            "missing.toml",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = tidemark(&args, &[]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "repoo = 'file:///x'\n").unwrap();
    let out = tidemark(&["--config", bad_toml.to_str().unwrap(), "info"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("repoo"),
        "unknown keys are named: {}",
        stderr(&out)
    );
}

#[test]
fn flags_beat_environment_beats_file() {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| {
        let path = dir.path().join(name);
        empty_repository(&path);
        format!("file://{}", path.display())
    };
    let (from_file, from_env, from_flag) = (url("from-file"), url("from-env"), url("from-flag"));
    let conf = dir.path().join("tidemark.toml");
    std::fs::write(
        &conf,
        format!("repo = '{from_file}'\nstanza = 'filestanza'\n"),
    )
    .unwrap();
    let c = conf.to_str().unwrap();
    assert_eq!(
        info_repo(&["--config", c], &[]),
        format!("{from_file} filestanza")
    );
    assert_eq!(
        info_repo(&["--config", c], &[("TIDEMARK_REPO", &from_env)]),
        format!("{from_env} filestanza")
    );
    assert_eq!(
        info_repo(
            &["--config", c, "--repo", &from_flag],
            &[("TIDEMARK_REPO", &from_env)]
        ),
        format!("{from_flag} filestanza")
    );
    // Global flags work before the subcommand too, and TIDEMARK_CONFIG names the file.
    assert_eq!(
        info_repo(&["--stanza", "early"], &[("TIDEMARK_CONFIG", c)]),
        format!("{from_file} early")
    );
}

#[test]
fn commands_refuse_a_location_without_a_repository_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let absent = dir.path().join("absent");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let wal = dir.path().join("000000010000000000000001");
    std::fs::write(&wal, vec![0u8; 16 << 20]).unwrap();
    let dest = dir.path().join("restored");
    for place in [&absent, &empty] {
        let url = format!("file://{}", place.display());
        let cases: Vec<(Vec<&str>, i32)> = vec![
            (vec!["info"], 2),
            (vec!["info", "--json"], 2),
            (vec!["spool", "drain"], 2),
            (vec!["restore", "--pgdata", dest.to_str().unwrap()], 2),
            // restore_command: anything but "restored" or "not found" stops recovery.
            (vec!["archive-get", "000000010000000000000001", "x"], 128),
        ];
        for (args, code) in cases {
            let mut all = vec!["--repo", &url, "--spool-path"];
            let spool = dir.path().join("spool");
            let spool = spool.to_str().unwrap();
            all.push(spool);
            all.extend(&args);
            let out = tidemark(&all, &[]);
            let err = stderr(&out);
            assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
            assert!(
                err.contains("holds no tidemark repository") && err.contains("tidemark init"),
                "{args:?}: {err}"
            );
            assert!(err.contains(&url), "{args:?}: {err}");
        }
        assert_eq!(
            std::fs::read_dir(&empty).unwrap().count(),
            0,
            "something was written into the empty folder"
        );
        assert!(!absent.exists(), "the absent folder was created");
        assert!(!dest.exists(), "restore created its target");
    }
}

#[test]
fn a_config_file_with_secrets_readable_by_others_is_flagged() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("tidemark.toml");
    std::fs::write(&conf, "repo = 'file:///x'\npg_password = 'hunter2'\n").unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = tidemark(
        &[
            "--config",
            conf.to_str().unwrap(),
            "--log-level",
            "trace",
            "info",
        ],
        &[],
    );
    let err = stderr(&out);
    assert!(err.contains("readable by other users"), "{err}");
    assert!(
        !err.contains("hunter2") && !String::from_utf8_lossy(&out.stdout).contains("hunter2"),
        "secret leaked"
    );
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = tidemark(&["--config", conf.to_str().unwrap(), "info"], &[]);
    assert!(!stderr(&out).contains("readable"), "{}", stderr(&out));
    assert!(Path::new(&conf).exists());
}

/// A backup whose file list holds `entries` (files made of `content`), in a local
/// repository at `repo`, written through the store's public API.
async fn crafted_backup(repo: &Path, paths: &[&str], content: &[u8]) {
    crafted_backup_at(repo, paths, content, chrono::Utc::now()).await;
}

/// [`crafted_backup`] started at `at` (its id); returns the record.
async fn crafted_backup_at(
    repo: &Path,
    paths: &[&str],
    content: &[u8],
    at: chrono::DateTime<chrono::Utc>,
) -> tidemark_store::backup::BackupRecord {
    use std::sync::Arc;
    use tidemark_store::backend::local::LocalBackend;
    use tidemark_store::backup::{BackupRecord, EntryKind, FileEntry, CHUNK_SIZE, PAGE_BYTES};
    use tidemark_store::catalog::Stanza;
    use tidemark_store::{Compression, Repo};

    let repo = Repo::new(Arc::new(LocalBackend::new(repo).unwrap()), Compression::Lz4);
    repo.ensure_format().await.unwrap();
    let stanza = Stanza::new("main").unwrap();
    repo.ensure_cluster(
        &stanza,
        &tidemark_store::catalog::ClusterRecord {
            system_id: tidemark_pg::SystemId(7),
            pg_major: 15,
            wal_segment_size: 16 << 20,
            wal_page_size: 8192,
            created_at: chrono::Utc::now(),
            created_by: "test".into(),
        },
    )
    .await
    .unwrap();
    let chunk = repo
        .put_blob(bytes::Bytes::copy_from_slice(content))
        .await
        .unwrap();
    let entries = paths
        .iter()
        .map(|p| FileEntry {
            tablespace: None,
            path: p.to_string(),
            mode: 0o600,
            size: content.len() as u64,
            mtime: 1_700_000_000,
            kind: EntryKind::File {
                chunks: vec![chunk.digest],
            },
        })
        .collect();
    let entries: Vec<FileEntry> = entries;
    let (list, _) = repo
        .put_file_list(&entries, b"{}\n", CHUNK_SIZE, PAGE_BYTES)
        .await
        .unwrap();
    let record = BackupRecord {
        label: "crafted".into(),
        file_list: list.digest,
        files: paths.len() as u64,
        size: content.len() as u64 * paths.len() as u64,
        chunks: paths.len() as u64,
        chunks_added: 1,
        // The stanza's cluster: a backup of another is not one a restore can use.
        system_id: tidemark_pg::SystemId(7),
        ..BackupRecord::example(&tidemark_store::backup::backup_id(at), at)
    };
    repo.put_backup(&stanza, &record).await.unwrap();
    archive_backup_wal(&repo, &stanza, &record).await;
    record
}

/// Indexes the segment of `record`'s WAL (0/2000028 to 0/2000100, timeline 1), with a
/// content summary that says it holds that WAL whole: restore plans before it writes,
/// and a backup without its WAL in the archive is a target the planner refuses.
async fn archive_backup_wal(
    repo: &tidemark_store::Repo,
    stanza: &tidemark_store::catalog::Stanza,
    record: &tidemark_store::backup::BackupRecord,
) {
    use tidemark_pg::wal::SegmentSummary;
    use tidemark_pg::{Lsn, PgMajor, WalFileName};
    let segment = Lsn(record.start_lsn.0 & !((16 << 20) - 1));
    let mut summary = SegmentSummary::new(segment, 1, PgMajor::V15);
    summary.first_record = Some(record.start_lsn);
    summary.last_record = Some(record.stop_lsn);
    summary.end_of_records = Lsn(record.stop_lsn.0 + 0x50);
    summary.records = 2;
    let bytes = b"a stand-in for the segment's bytes";
    let put = repo
        .put_blob(bytes::Bytes::copy_from_slice(bytes))
        .await
        .unwrap();
    let name: WalFileName = "000000010000000000000002".parse().unwrap();
    let wal = tidemark_store::catalog::WalRecord {
        name: name.to_string(),
        kind: name.kind().into(),
        digest: put.digest,
        raw_size: 16 << 20,
        stored_size: put.stored_len,
        compression: tidemark_store::Compression::Lz4,
        archived_at: chrono::Utc::now(),
        system_id: Some(tidemark_pg::SystemId(7)),
        start_lsn: Some(segment),
        tidemark_version: "test".into(),
        content: Some(tidemark_store::wal_content::WalContent::from(&summary)),
    };
    repo.put_wal_record(stanza, &name, &put.digest, &wal)
        .await
        .unwrap();
}

/// The file of backup `id`'s record in `folder` (`<id>.<sha256>`).
fn record_file(folder: &Path, id: &str) -> std::path::PathBuf {
    let prefix = format!("{id}.");
    std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .unwrap_or_else(|| panic!("no record of backup {id} in {}", folder.display()))
}

/// `tidemark --repo REPO restore --pgdata PGDATA <extra>`.
fn restore(repo_url: &str, pgdata: &Path, extra: &[&str]) -> Output {
    let pgdata = pgdata.to_str().unwrap();
    let mut args = vec!["--repo", repo_url, "restore", "--pgdata", pgdata];
    args.extend_from_slice(extra);
    tidemark(&args, &[])
}

#[tokio::test]
async fn restore_refuses_an_escaping_file_list_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    crafted_backup(&repo, &["PG_VERSION", "base/../../escaped"], b"15\n").await;
    let pgdata = dir.path().join("restored/data");
    let repo_url = format!("file://{}", repo.display());
    let out = restore(&repo_url, &pgdata, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("tidemark: restore: ") && err.contains("base/../../escaped"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    assert!(!dir.path().join("restored").exists(), "nothing is created");
    assert!(!dir.path().join("escaped").exists());

    // Without --pgdata: a usage error, exit 2.
    let out = tidemark(&["--repo", &repo_url, "restore"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--pgdata"), "{}", stderr(&out));
    // An unknown backup: exit 1, naming the ones there are.
    let out = restore(&repo_url, &pgdata, &["--backup", "19990101T000000Z"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("available: 20"), "{}", stderr(&out));
    assert!(!dir.path().join("restored").exists());
}

#[tokio::test]
async fn restore_writes_the_files_and_a_restore_command_for_this_repository() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    crafted_backup(&repo, &["PG_VERSION", "base/1/1259"], b"15\n").await;
    let pgdata = dir.path().join("restored");
    let repo_url = format!("file://{}", repo.display());
    let out = restore(&repo_url, &pgdata, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The plan first (the backup, the end of the archived WAL), then what was restored.
    assert!(
        stdout.starts_with("target      latest: the end of the archived WAL\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("\nrestored backup ") && stdout.contains(" 2 files"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(pgdata.join("base/1/1259")).unwrap(), b"15\n");
    let conf = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(conf.contains("# tidemark restore of backup "), "{conf}");
    assert!(
        conf.contains(&format!(
            "--repo {repo_url} --stanza main archive-get --timeline 1 --latest %f %p'"
        )),
        "{conf}"
    );
    assert!(pgdata.join("recovery.signal").exists());
    // Restoring again into the now-full directory is refused (exit 2), nothing changed.
    let again = restore(&repo_url, &pgdata, &["--json"]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));
    assert_eq!(
        std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap(),
        conf
    );
}

/// `info --json` on `repo_url`.
fn info_json(repo_url: &str) -> serde_json::Value {
    let out = tidemark(&["--repo", repo_url, "info", "--json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("info --json prints JSON")
}

#[tokio::test]
async fn a_damaged_record_is_listed_and_skipped_and_only_its_own_restore_fails() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_url = format!("file://{}", repo.display());
    let t = chrono::Utc::now();
    let old = crafted_backup_at(&repo, &["PG_VERSION"], b"old\n", t).await;
    let new = crafted_backup_at(
        &repo,
        &["PG_VERSION"],
        b"new\n",
        t + chrono::Duration::seconds(5),
    )
    .await;
    // One byte of the newest record flipped.
    let record = record_file(&repo.join("stanzas/main/backups"), &new.id);
    let mut body = std::fs::read(&record).unwrap();
    let at = body.len() - 4;
    body[at] ^= 0x01;
    std::fs::write(&record, body).unwrap();

    let info = info_json(&repo_url);
    let listed: Vec<&str> = info["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [old.id.as_str()]);
    assert_eq!(info["damaged_backups"][0]["id"], new.id.as_str());
    assert!(
        info["damaged_backups"][0]["error"]
            .as_str()
            .unwrap()
            .contains("record checksum mismatch"),
        "{info}"
    );
    let text = tidemark(&["--repo", &repo_url, "info"], &[]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("  {}  DAMAGED: its record cannot be read", new.id)),
        "{text}"
    );

    // The default restore takes the newest readable backup, its plan warning about the
    // damaged one.
    let pgdata = dir.path().join("restored");
    let out = restore(&repo_url, &pgdata, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "WARNING: backup {} is left out: its record cannot be read",
            new.id
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("\nrestored backup {}:", old.id)),
        "{stdout}"
    );
    assert_eq!(std::fs::read(pgdata.join("PG_VERSION")).unwrap(), b"old\n");
    // Only a restore of that very backup fails.
    let other = dir.path().join("other");
    let out = restore(&repo_url, &other, &["--backup", &new.id]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains(&new.id), "{}", stderr(&out));
    assert!(!other.exists());
}

#[tokio::test]
async fn a_backup_whose_file_list_is_missing_is_flagged_and_restores_with_exit_4() {
    use tidemark_store::catalog::blob_key;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_url = format!("file://{}", repo.display());
    let t = chrono::Utc::now();
    let fine = crafted_backup_at(&repo, &["PG_VERSION"], b"a\n", t).await;
    let broken = crafted_backup_at(
        &repo,
        &["PG_VERSION", "base/1/1"],
        b"b\n",
        t + chrono::Duration::seconds(5),
    )
    .await;
    assert!(info_json(&repo_url)["backups"][1]["problems"]
        .as_array()
        .unwrap()
        .is_empty());
    let list_key = blob_key(&broken.file_list);
    std::fs::remove_file(repo.join(list_key.as_str())).unwrap();
    // A third backup whose list is there but its one page is not.
    let paged = crafted_backup_at(
        &repo,
        &["PG_VERSION", "base/1/2"],
        b"c\n",
        t + chrono::Duration::seconds(10),
    )
    .await;
    let list = tidemark_store::backup::FileList::from_bytes(
        &paged.file_list,
        &std::fs::read(repo.join(blob_key(&paged.file_list).as_str()))
            .map(|stored| {
                tidemark_store::codec::decode(&blob_key(&paged.file_list), paged.file_list, &stored)
                    .unwrap()
            })
            .unwrap(),
    )
    .unwrap();
    let page_key = blob_key(&list.pages[0]);
    std::fs::remove_file(repo.join(page_key.as_str())).unwrap();

    let info = info_json(&repo_url);
    assert!(info["backups"][0]["problems"]
        .as_array()
        .unwrap()
        .is_empty());
    let problems = info["backups"][1]["problems"].as_array().unwrap();
    assert_eq!(
        problems[0].as_str().unwrap(),
        format!("its file list ({list_key}) is missing from the repository")
    );
    assert_eq!(
        info["backups"][2]["problems"][0].as_str().unwrap(),
        format!("page 1 of 1 of its file list ({page_key}) is missing from the repository")
    );
    let text = tidemark(&["--repo", &repo_url, "info"], &[]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("backups     3, 2 of them DAMAGED"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );

    let pgdata = dir.path().join("restored");
    let out = restore(&repo_url, &pgdata, &["--backup", &broken.id]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "tidemark: restore: backup {}: its file list ({list_key}) is missing from the repository",
            broken.id
        )),
        "{err}"
    );
    let out = restore(&repo_url, &pgdata, &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.starts_with(&format!(
            "tidemark: restore: backup {}: page 1 of 1 of its file list ({page_key}) is missing",
            paged.id
        )),
        "{err}"
    );
    assert!(!pgdata.exists());
    let out = restore(&repo_url, &pgdata, &["--backup", &fine.id]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}
