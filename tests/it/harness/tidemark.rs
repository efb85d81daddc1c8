//! [`Tidemark`]: runs the built `tidemark` binary the way PostgreSQL and an operator would,
//! and [`repo_snapshot`], a fingerprint of a local repository to prove "nothing changed".
//!
//! The binary is `$TIDEMARK_BIN`, else `target/debug/tidemark` beside this package (or
//! under `$CARGO_TARGET_DIR`); build it first with `cargo build -p tidemark-agent`. A
//! missing binary fails the test with that hint: it is part of this workspace, not an
//! optional component.
//!
//! When the tests run as root, clusters run as an unprivileged user who may not be able
//! to reach `target/` (a clone under `/root`), so the binary is copied once into a
//! world-readable folder of the temporary folder (reused while the build is the same)
//! and that copy is used everywhere: in `archive_command`s and by [`Tidemark::run`],
//! which also runs as that user, so the repository files it writes stay writable for the
//! cluster's `archive_command`, and mode bits (an unwritable repository) mean what they say.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use tidemark_pg::control;
use tidemark_pg::SegmentSize;
use tidemark_store::codec::Hasher;

use super::pg::{user_command, Cluster, TestDir};

/// The built binary, before it is copied.
fn built_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TIDEMARK_BIN") {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let p = PathBuf::from(dir).join("debug").join("tidemark");
        if p.is_file() {
            return p;
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("debug")
        .join("tidemark")
}

/// The copy of the binary every test uses (see the module doc).
pub fn tidemark_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let built = built_binary();
        let meta = std::fs::metadata(&built).unwrap_or_else(|e| {
            panic!(
                "tidemark binary not found at {} ({e}): build it first with \
                 `cargo build -p tidemark-agent`, or set TIDEMARK_BIN",
                built.display()
            )
        });
        let tag = format!("{}-{}-{}", meta.len(), meta.mtime(), meta.mtime_nsec());
        let tmp = std::env::temp_dir();
        let dir = tmp.join(format!("tidemark-test-bin-{tag}"));
        let bin = dir.join("tidemark");
        remove_stale_copies(&tmp, &dir);
        if std::fs::metadata(&bin).map(|m| m.len()).ok() == Some(meta.len()) {
            return bin;
        }
        std::fs::create_dir_all(&dir).expect("binary copy folder");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .expect("chmod binary copy folder");
        // Another test process may do this at the same time: place aside, then rename.
        // A hard link costs no space (a debug build is ~100+ MB); across file systems, copy.
        let part = dir.join(format!(".tidemark-{}", std::process::id()));
        let _ = std::fs::remove_file(&part);
        if std::fs::hard_link(&built, &part).is_err() {
            std::fs::copy(&built, &part)
                .unwrap_or_else(|e| panic!("copy {} to {}: {e}", built.display(), part.display()));
        }
        std::fs::set_permissions(&part, std::fs::Permissions::from_mode(0o755))
            .expect("chmod binary copy");
        std::fs::rename(&part, &bin).expect("publish binary copy");
        bin
    })
}

/// Removes copies of older builds an hour after they were made (a test run of an older
/// build may still be using its copy until then).
fn remove_stale_copies(tmp: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 3_600);
        if name.starts_with("tidemark-test-bin-") && path != keep && old {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// The stderr lines that are not empty.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }
}

/// Runs `tidemark` with a fixed set of global options (repository, stanza, …) for a test.
#[derive(Clone, Debug)]
pub struct Tidemark {
    cwd: PathBuf,
    global: Vec<String>,
    env: Vec<(String, String)>,
}

impl Tidemark {
    /// A runner working in `dir` (as the test user when root), without global options.
    pub fn new(dir: &TestDir) -> Tidemark {
        Tidemark {
            cwd: dir.path().to_path_buf(),
            global: Vec::new(),
            env: Vec::new(),
        }
    }

    /// The binary's path (the user-reachable copy).
    pub fn bin(&self) -> &'static Path {
        tidemark_bin()
    }

    /// Adds global options, given before the subcommand on every run.
    pub fn with_args<S: AsRef<str>>(mut self, args: impl IntoIterator<Item = S>) -> Tidemark {
        self.global
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    /// Adds an environment variable for every run.
    pub fn with_env(mut self, key: &str, value: &str) -> Tidemark {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// `<bin> <global options>` as one shell word list, for an `archive_command`
    /// (test paths and options have no characters the shell would interpret).
    pub fn shell_prefix(&self) -> String {
        let mut words = vec![self.bin().display().to_string()];
        words.extend(self.global.iter().cloned());
        for w in &words {
            assert!(
                w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/:._-=@+,".contains(c)),
                "{w:?} would need shell quoting"
            );
        }
        words.join(" ")
    }

    /// The command for `args`, not started: for tests that spawn and kill it.
    pub fn command<S: AsRef<str>>(&self, args: &[S]) -> Command {
        // Job locks and the agent's state stay in the test's folder (tests run in
        // parallel, many with the stanza `main`); a test may name another with `with_env`.
        self.finish(user_command(self.bin(), &self.cwd), "tidemark-state", args)
    }

    /// `cmd` with its state folder (`<test folder>/<state>`), the global options, `args`,
    /// the test's environment and piped output.
    fn finish<S: AsRef<str>>(&self, mut cmd: Command, state: &str, args: &[S]) -> Command {
        cmd.env("TIDEMARK_STATE_PATH", self.cwd.join(state))
            .args(&self.global)
            .args(args.iter().map(|a| a.as_ref()))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// The command for `args` as the user running the tests (root in CI), not the test
    /// user: for what tidemark itself must do about root (a drill's `--run-as`).
    pub fn command_as_invoker<S: AsRef<str>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(self.bin());
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("TIDEMARK_") || k.starts_with("PG") {
                cmd.env_remove(&key);
            }
        }
        cmd.current_dir(&self.cwd).stdin(Stdio::null());
        // Not the test user's folder: a lock file root made there would be root's.
        self.finish(cmd, "tidemark-state-invoker", args)
    }

    /// Runs `tidemark <global options> <args>` to the end.
    pub fn run<S: AsRef<str>>(&self, args: &[S]) -> Run {
        let out = self
            .command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin().display()));
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    /// Runs like [`Tidemark::run`], but kills the command if it has not finished within
    /// `limit`: `None` then (a hang is a failure the test reports, not a test that never
    /// ends).
    pub fn run_within<S: AsRef<str>>(&self, args: &[S], limit: std::time::Duration) -> Option<Run> {
        let mut child = self
            .command(args)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin().display()));
        let started = std::time::Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if started.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("wait");
        Some(Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        })
    }

    /// Runs and asserts exit 0; returns stdout.
    pub fn ok<S: AsRef<str>>(&self, args: &[S]) -> String {
        let run = self.run(args);
        assert_eq!(
            run.code,
            0,
            "tidemark {:?} failed: {run:?}",
            args.iter().map(|a| a.as_ref()).collect::<Vec<_>>()
        );
        run.stdout
    }

    /// `init --offline` for `c`'s data directory: creates the repository and the stanza
    /// from its `pg_control`, as every test must before anything archives or backs up
    /// (only `init` creates them). Works with the cluster stopped, so that it can come
    /// before the first start, when the archiver may already push. Returns stdout.
    pub fn init_stanza(&self, c: &Cluster) -> String {
        let pgdata = c.data_dir().display().to_string();
        self.ok(&["--pgdata", &pgdata, "init", "--offline"])
    }

    /// `init --offline` for a made-up PostgreSQL 15 cluster (`system_id`, `segment_size`):
    /// a data directory holding only `PG_VERSION` and a `global/pg_control`, in `dir/name`.
    /// For tests that push synthetic WAL of a cluster that never ran.
    pub fn init_synthetic(
        &self,
        dir: &TestDir,
        name: &str,
        system_id: u64,
        segment_size: SegmentSize,
    ) -> String {
        dir.write(&format!("{name}/PG_VERSION"), b"15\n");
        let control = control::synthetic(15, system_id, 202_209_061, segment_size);
        let path = dir.write(&format!("{name}/{}", control::CONTROL_FILE_PATH), &control);
        let pgdata = path.parent().unwrap().parent().unwrap();
        self.ok(&[
            "--pgdata",
            &pgdata.display().to_string(),
            "init",
            "--offline",
        ])
    }

    /// `info --json`, parsed.
    pub fn info(&self) -> serde_json::Value {
        let out = self.ok(&["info", "--json"]);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("info --json is not JSON ({e}): {out}"))
    }
}

/// The lower-case hex SHA-256 of a file, read in pieces.
pub fn sha256_file(path: &Path) -> String {
    let mut f =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finish().to_hex()
}

/// Whether two files hold the same bytes (compared directly: much faster than hashing
/// in a debug build). Panics when either cannot be read.
pub fn same_content(a: &Path, b: &Path) -> bool {
    let open =
        |p: &Path| std::fs::File::open(p).unwrap_or_else(|e| panic!("open {}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a), open(b));
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba, a);
        let m = read_full(&mut fb, &mut bb, b);
        if n != m || ba[..n] != bb[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8], path: &Path) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => panic!("read {}: {e}", path.display()),
        }
    }
    n
}

/// Every entry under `dir`, by path relative to it: files map to their SHA-256,
/// folders to `"<dir>"`, symlinks to `"-> target"`. Nothing is ignored, temporary files
/// included: a failed command must not leave even those behind.
pub fn repo_snapshot(dir: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, at: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(at) else {
            return;
        };
        for entry in entries {
            let entry = entry.expect("dir entry");
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let ft = entry.file_type().expect("file type");
            if ft.is_dir() {
                out.insert(rel, "<dir>".into());
                walk(root, &path, out);
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path).expect("readlink");
                out.insert(rel, format!("-> {}", target.display()));
            } else {
                out.insert(rel, sha256_file(&path));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The differences between two snapshots, one line each (`+ added`, `- removed`,
/// `~ changed`), for assertion messages.
pub fn snapshot_diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut diff = Vec::new();
    for (k, v) in before {
        match after.get(k) {
            None => diff.push(format!("- {k}")),
            Some(w) if w != v => diff.push(format!("~ {k}")),
            _ => {}
        }
    }
    for k in after.keys() {
        if !before.contains_key(k) {
            diff.push(format!("+ {k}"));
        }
    }
    diff
}
