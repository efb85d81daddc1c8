//! [`Cluster`]: a real PostgreSQL cluster for one test, and the unprivileged user it runs as.
//!
//! PostgreSQL refuses to run as root, and CI runs the tests as root. So when the tests run
//! as root, every command that touches a cluster (initdb, pg_ctl, psql, and tidemark
//! itself, see `harness::tidemark`) runs as the unprivileged user [`TEST_USER`], created
//! once with `useradd` (a concurrent creation by another test process is tolerated). The
//! switch is done by the child itself (`CommandExt::uid`/`gid`, which also drops root's
//! supplementary groups) rather than through `runuser`, so that a test can SIGKILL the
//! real process and not a wrapper that would leave it running. Everything a cluster and
//! its `archive_command` touch lives in a [`TestDir`] owned by that user.
//!
//! The server binaries come from `$PG_BIN`, else `/usr/lib/postgresql/15/bin`; when they
//! are missing, [`pg_bin`] returns `None` and the test calls `skip_or_fail!`.
//!
//! Each cluster gets a free loopback TCP port, a private unix socket folder, `fsync=off`
//! (what the tests check is tidemark's durability, never PostgreSQL's), a large
//! `wal_keep_size`, no autovacuum and no timed checkpoints, so that every segment it
//! archives stays in `pg_wal` for byte comparisons. Dropping a [`Cluster`] stops it (`-m immediate`).
//! No assertion about tidemark lives here: only the means to drive PostgreSQL.

use std::ffi::OsStr;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The unprivileged user clusters and tidemark run as when the tests run as root.
pub const TEST_USER: &str = "tidemark-test";

/// The database superuser every test cluster is created with.
pub const SUPERUSER: &str = "postgres";

/// Where PostgreSQL's server binaries are (`$PG_BIN`, else the machine's PostgreSQL 15),
/// or `None` when `initdb` is not there.
pub fn pg_bin() -> Option<PathBuf> {
    let dir = std::env::var_os("PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
    ["initdb", "pg_ctl", "postgres", "psql"]
        .iter()
        .all(|b| dir.join(b).is_file())
        .then_some(dir)
}

/// Server binaries of another major version (initdb, pg_ctl, postgres; no client tools),
/// as `scripts/fetch-postgres.sh` installs them: `$TIDEMARK_PG<major>_BIN`, else
/// `/opt/tidemark/pg<major>/bin`. Client programs they lack come from [`pg_bin`].
pub fn server_bin(major: u32) -> Option<PathBuf> {
    let dir = std::env::var_os(format!("TIDEMARK_PG{major}_BIN"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/opt/tidemark/pg{major}/bin")));
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).is_file())
        .then_some(dir)
}

/// A user id and group id to run children as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunAs {
    /// The user id.
    pub uid: u32,
    /// Its primary group id.
    pub gid: u32,
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The user children run as: [`TEST_USER`] (created on first use) when this process is
/// root, `None` (this process's own user) otherwise.
pub fn run_as() -> Option<RunAs> {
    static USER: OnceLock<Option<RunAs>> = OnceLock::new();
    *USER.get_or_init(|| {
        if !is_root() {
            return None;
        }
        if let Some(user) = lookup_user(TEST_USER) {
            return Some(user);
        }
        let out = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                TEST_USER,
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run useradd to create {TEST_USER}: {e}"));
        // Exit 9 is "already exists": another test process created it meanwhile.
        match lookup_user(TEST_USER) {
            Some(user) => Some(user),
            None => panic!(
                "useradd {TEST_USER} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }
    })
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let fields: Vec<&str> = line.trim().split(':').collect();
    Some(RunAs {
        uid: fields.get(2)?.parse().ok()?,
        gid: fields.get(3)?.parse().ok()?,
    })
}

/// Gives `path` (not what is inside) to the test user; nothing when not root.
pub fn chown_to_user(path: &Path) {
    if let Some(user) = run_as() {
        std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// A command that runs as the test user (when root), in `cwd`, with `HOME=cwd` and with
/// none of the caller's `TIDEMARK_*` or libpq `PG*` variables, so that the developer's
/// environment cannot change what a test does.
pub fn user_command(program: impl AsRef<OsStr>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("TIDEMARK_") || k.starts_with("PG") {
            cmd.env_remove(&key);
        }
    }
    cmd.current_dir(cwd).env("HOME", cwd).stdin(Stdio::null());
    if let Some(user) = run_as() {
        cmd.uid(user.uid).gid(user.gid);
    }
    cmd
}

/// A test's private folder, owned by the test user, removed on drop (kept when
/// `TIDEMARK_KEEP_TEST_DIRS` is set).
#[derive(Debug)]
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    /// A fresh folder `tidemark-<name>-XXXX` in the temporary folder.
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tidemark-{name}-"))
            .tempdir()
            .expect("temporary folder");
        let path = dir.path().to_path_buf();
        // 0711 lets the test user traverse even where it is not the owner (not root).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o711))
            .expect("chmod test folder");
        chown_to_user(&path);
        TestDir {
            dir: Some(dir),
            path,
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates `rel` (and its parents) owned by the test user.
    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path.join(rel);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        let mut at = p.as_path();
        while at != self.path {
            chown_to_user(at);
            at = at.parent().expect("inside the test folder");
        }
        p
    }

    /// Writes `rel` (creating its folder) owned by the test user.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = self.path.join(rel);
        if let Some(parent) = p.parent() {
            if parent != self.path {
                self.mkdir(parent.strip_prefix(&self.path).unwrap().to_str().unwrap());
            }
        }
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        chown_to_user(&p);
        p
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var_os("TIDEMARK_KEEP_TEST_DIRS").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("kept test folder {}", dir.keep().display());
            }
        }
    }
}

/// How a cluster is created.
#[derive(Clone, Debug, Default)]
pub struct ClusterOptions {
    /// `initdb --wal-segsize` in MiB (default: PostgreSQL's 16).
    pub wal_segsize_mb: Option<u32>,
    /// When set, the superuser gets this password and both local and TCP connections
    /// use scram-sha-256; otherwise `trust`.
    pub password: Option<String>,
    /// `archive_command` (then `archive_mode=on`); `None` leaves archiving off.
    pub archive_command: Option<String>,
    /// More `postgresql.conf` settings, as `(name, value-as-written)`.
    pub settings: Vec<(String, String)>,
    /// Server binaries to use instead of [`pg_bin`]'s (another major version).
    pub bin: Option<PathBuf>,
    /// `initdb --data-checksums`.
    pub data_checksums: bool,
}

/// What `pg_stat_archiver` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiverStats {
    /// Files archived successfully.
    pub archived_count: u64,
    /// The last file archived successfully.
    pub last_archived_wal: String,
    /// Failed attempts.
    pub failed_count: u64,
    /// The last file that failed.
    pub last_failed_wal: String,
}

/// A PostgreSQL cluster owned by one test.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    /// The cluster's folder (`data/`, `sock/`, `server.log`).
    root: PathBuf,
    port: u16,
    password: Option<String>,
    running: bool,
    /// The postmaster's pid while running, to kill it should `pg_ctl` fail at drop.
    postmaster: Option<i32>,
}

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free loopback port");
    l.local_addr().expect("local address").port()
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Quotes a `postgresql.conf` string value.
pub fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Cluster {
    /// `initdb` a new cluster in `dir/<name>`, configured but not started. Panics on failure.
    pub fn init(dir: &TestDir, name: &str, opts: ClusterOptions) -> Cluster {
        let bin = opts
            .bin
            .clone()
            .unwrap_or_else(|| pg_bin().expect("PostgreSQL binaries (call pg_bin() first)"));
        let root = dir.mkdir(name);
        let sock = dir.mkdir(&format!("{name}/sock"));
        let cluster = Cluster {
            bin,
            root,
            port: 0,
            password: opts.password.clone(),
            running: false,
            postmaster: None,
        };
        let mut cmd = cluster.pg_command("initdb");
        cmd.arg("-D")
            .arg(cluster.data_dir())
            // No `--no-instructions`: PostgreSQL 13's initdb lacks it (the output is
            // captured anyway).
            .args(["-U", SUPERUSER, "-E", "UTF8", "--locale=C", "--no-sync"]);
        if let Some(mb) = opts.wal_segsize_mb {
            cmd.arg(format!("--wal-segsize={mb}"));
        }
        if opts.data_checksums {
            cmd.arg("--data-checksums");
        }
        match &opts.password {
            Some(pw) => {
                let pwfile = dir.write(&format!("{name}/pwfile"), format!("{pw}\n").as_bytes());
                cmd.args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256"])
                    .arg(format!("--pwfile={}", pwfile.display()));
            }
            None => {
                cmd.args(["--auth-local=trust", "--auth-host=trust"]);
            }
        }
        let out = cmd.output().expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", output_text(&out));

        let mut conf = vec![
            ("listen_addresses".to_string(), conf_quote("127.0.0.1")),
            (
                "unix_socket_directories".to_string(),
                conf_quote(&sock.display().to_string()),
            ),
            ("fsync".into(), "off".into()),
            ("shared_buffers".into(), "'16MB'".into()),
            ("max_connections".into(), "20".into()),
            ("max_wal_senders".into(), "4".into()),
            // Keep every segment in pg_wal (tests compare them with what was archived),
            // and no checkpoint that a test did not ask for.
            ("wal_keep_size".into(), "'16GB'".into()),
            ("max_wal_size".into(), "'16GB'".into()),
            ("checkpoint_timeout".into(), "'1d'".into()),
            // No background WAL (autovacuum) completing segments behind a test's back.
            ("autovacuum".into(), "off".into()),
            ("log_line_prefix".into(), "'%m [%p] '".into()),
        ];
        if let Some(ac) = &opts.archive_command {
            conf.push(("archive_mode".into(), "on".into()));
            conf.push(("archive_command".into(), conf_quote(ac)));
        }
        conf.extend(opts.settings.iter().cloned());
        cluster.append_conf(&conf);
        cluster
    }

    /// A cluster over a data directory made elsewhere (a restore) at `dir/<name>/data`:
    /// gets its own socket folder and, at start, its own port; `settings` are appended to
    /// `postgresql.conf` (a restored copy carries the original's). Not started.
    pub fn adopt(
        dir: &TestDir,
        name: &str,
        bin: Option<PathBuf>,
        password: Option<&str>,
        settings: &[(String, String)],
    ) -> Cluster {
        let bin =
            bin.unwrap_or_else(|| pg_bin().expect("PostgreSQL binaries (call pg_bin() first)"));
        let root = dir.path().join(name);
        let sock = dir.mkdir(&format!("{name}/sock"));
        let cluster = Cluster {
            bin,
            root,
            port: 0,
            password: password.map(str::to_string),
            running: false,
            postmaster: None,
        };
        assert!(
            cluster.data_dir().join("PG_VERSION").exists(),
            "no data directory at {}",
            cluster.data_dir().display()
        );
        let mut conf = vec![(
            "unix_socket_directories".to_string(),
            conf_quote(&sock.display().to_string()),
        )];
        conf.extend(settings.iter().cloned());
        cluster.append_conf(&conf);
        cluster
    }

    /// A PostgreSQL program (`pgbench`, `pg_verifybackup`, …) as the test user, with the
    /// cluster's password; not started.
    pub fn program(&self, program: &str) -> Command {
        self.pg_command(program)
    }

    /// Runs SQL in database `db` (see [`psql`](Self::psql)).
    pub fn psql_db(&self, db: &str, sql: &str) -> String {
        self.try_psql_db(db, sql)
            .unwrap_or_else(|e| panic!("psql -d {db} {sql:?} failed: {e}"))
    }

    /// Appends settings to `postgresql.conf` (later lines win).
    pub fn append_conf(&self, settings: &[(String, String)]) {
        use std::io::Write;
        let path = self.data_dir().join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        writeln!(f, "\n# tidemark tests").unwrap();
        for (k, v) in settings {
            writeln!(f, "{k} = {v}").unwrap();
        }
    }

    /// Replaces `pg_hba.conf` with `lines` (read at the next start, or reload). Keep a
    /// `local` line for the superuser: [`psql`](Self::psql) connects through the socket.
    pub fn write_hba(&self, lines: &[&str]) {
        let path = self.data_dir().join("pg_hba.conf");
        let mut text = lines.join("\n");
        text.push('\n');
        // Overwriting keeps the file's owner (the test user) and mode.
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Turns TLS on with this certificate chain and key (PEM): writes `server.crt` and
    /// `server.key` (mode 0600, owned by the test user, as PostgreSQL demands) into the
    /// data directory and sets `ssl = on`. Takes effect at the next start, or at a reload
    /// when TLS is already on (PostgreSQL reloads its certificate files on SIGHUP).
    pub fn enable_ssl(&self, cert_pem: &[u8], key_pem: &[u8]) {
        let data = self.data_dir();
        for (name, bytes) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, bytes)
                .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
            chown_to_user(&path);
        }
        self.append_conf(&[
            ("ssl".into(), "on".into()),
            ("ssl_cert_file".into(), conf_quote("server.crt")),
            ("ssl_key_file".into(), conf_quote("server.key")),
        ]);
    }

    fn pg_command(&self, program: &str) -> Command {
        let mut path = self.bin.join(program);
        if !path.is_file() {
            // Server-only builds have no client programs: use the machine's.
            if let Some(default) = pg_bin() {
                path = default.join(program);
            }
        }
        let mut cmd = user_command(path, &self.root);
        if let Some(pw) = &self.password {
            cmd.env("PGPASSWORD", pw);
        }
        cmd.env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// `pg_wal` inside the data directory.
    pub fn pg_wal(&self) -> PathBuf {
        self.data_dir().join("pg_wal")
    }

    /// The private unix socket folder.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    /// The TCP port on 127.0.0.1 (0 before the first start).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server log.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// The last `lines` lines of the server log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Starts the server on a free port (another one if that port was taken meanwhile).
    pub fn start(&mut self) {
        assert!(!self.running, "cluster already running");
        let mut last = String::new();
        for _ in 0..5 {
            let port = if self.port == 0 {
                free_port()
            } else {
                self.port
            };
            self.append_conf(&[("port".into(), port.to_string())]);
            let out = self
                .pg_command("pg_ctl")
                .arg("start")
                .args(["-w", "-t", "60", "-D"])
                .arg(self.data_dir())
                .arg("-l")
                .arg(self.log_path())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .expect("run pg_ctl start");
            if out.status.success() {
                self.port = port;
                self.running = true;
                self.postmaster = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
                    .ok()
                    .and_then(|pid| pid.lines().next()?.trim().parse().ok());
                return;
            }
            last = format!("{}\n{}", output_text(&out), self.log_tail(20));
            if !last.contains("could not bind") && !last.contains("already in use") {
                break;
            }
            self.port = 0;
        }
        panic!("PostgreSQL did not start: {last}");
    }

    /// Stops the server (`-m fast`: a clean shutdown). Panics when pg_ctl fails.
    #[allow(dead_code)] // for the backup and recovery tests
    pub fn stop(&mut self) {
        if let Err(e) = self.pg_ctl_stop("fast") {
            panic!("{e}");
        }
    }

    fn pg_ctl_stop(&mut self, mode: &str) -> Result<(), String> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let out = self
            .pg_command("pg_ctl")
            .arg("stop")
            .args(["-w", "-t", "60", "-m", mode, "-D"])
            .arg(self.data_dir())
            .output()
            .map_err(|e| format!("cannot run pg_ctl stop: {e}"))?;
        if !out.status.success() {
            return Err(format!("pg_ctl stop failed: {}", output_text(&out)));
        }
        self.postmaster = None;
        Ok(())
    }

    /// Runs SQL through psql (`-X -A -t -q -v ON_ERROR_STOP=1`, unix socket) and returns
    /// its output, trimmed. Panics when psql fails.
    pub fn psql(&self, sql: &str) -> String {
        self.try_psql(sql)
            .unwrap_or_else(|e| panic!("psql {sql:?} failed: {e}"))
    }

    /// Like [`psql`](Self::psql), returning psql's error output on failure.
    pub fn try_psql(&self, sql: &str) -> Result<String, String> {
        self.try_psql_db("postgres", sql)
    }

    /// Like [`psql_db`](Self::psql_db), returning psql's error output on failure.
    pub fn try_psql_db(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = self
            .pg_command("psql")
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-d", db])
            .args(["-c", sql])
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(output_text(&out))
        }
    }

    /// The cluster's system identifier, as PostgreSQL prints it.
    pub fn system_identifier(&self) -> String {
        self.psql("select system_identifier from pg_control_system()")
    }

    /// Writes some WAL: `rows` rows of ~100 bytes into a test table.
    pub fn workload(&self, rows: u32) {
        self.psql(&format!(
            "create table if not exists tm_load(id bigserial primary key, pad text);
             insert into tm_load(pad) select repeat(md5(g::text), 3) from generate_series(1, {rows}) g"
        ));
    }

    /// Writes a little WAL, then `pg_switch_wal()`; returns the name of the segment the
    /// switch completed (the one the archiver gets next).
    pub fn switch_wal(&self) -> String {
        self.workload(100);
        self.psql("select pg_walfile_name(pg_switch_wal())")
    }

    /// What `pg_stat_archiver` says now.
    pub fn archiver_stats(&self) -> ArchiverStats {
        let line = self.psql(
            "select archived_count, coalesce(last_archived_wal, ''), failed_count, \
             coalesce(last_failed_wal, '') from pg_stat_archiver",
        );
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f.len(), 4, "unexpected pg_stat_archiver row {line:?}");
        ArchiverStats {
            archived_count: f[0].parse().expect("archived_count"),
            last_archived_wal: f[1].to_string(),
            failed_count: f[2].parse().expect("failed_count"),
            last_failed_wal: f[3].to_string(),
        }
    }

    /// Waits until the archiver has archived `name` (pg_stat_archiver has passed it on its
    /// timeline, or its `.done` status file exists). Panics after `timeout` with the
    /// archiver's statistics and the end of the server log.
    pub fn wait_archived(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut nudged = Instant::now();
        loop {
            let stats = self.archiver_stats();
            let last = &stats.last_archived_wal;
            let passed = last.len() == 24 && last[..8] == name[..8] && last.as_str() >= name;
            if passed || self.status_files("done").iter().any(|n| n == name) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{name} not archived within {timeout:?}: {stats:?}\nready: {:?}\nserver log:\n{}",
                    self.status_files("ready"),
                    self.log_tail(30)
                );
            }
            // After three failures the archiver sleeps for up to a minute; a reload wakes it.
            if nudged.elapsed() > Duration::from_secs(3) {
                let _ = self.try_psql("select pg_reload_conf()");
                nudged = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The names of the files with a `pg_wal/archive_status/<name>.<suffix>` status file
    /// (`done` or `ready`), sorted.
    pub fn status_files(&self, suffix: &str) -> Vec<String> {
        let dir = self.pg_wal().join("archive_status");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().to_string();
                name.strip_suffix(&format!(".{suffix}")).map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }

    /// The full segments PostgreSQL has archived (their `.done` files), sorted.
    pub fn archived_segments(&self) -> Vec<String> {
        self.status_files("done")
            .into_iter()
            .filter(|n| n.len() == 24)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.pg_ctl_stop("immediate") {
            // Its folder may be gone already: never leave a server behind.
            eprintln!("{e}");
            if let Some(pid) = self.postmaster.take() {
                // SAFETY: kill has no memory preconditions; SIGQUIT is an immediate shutdown.
                unsafe { libc::kill(pid, libc::SIGQUIT) };
            }
        }
    }
}
