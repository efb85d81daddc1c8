//! [`S3Server`]: a real S3 server (s3s-fs) for one test, on a free loopback port.
//!
//! s3s-fs 0.14.1 serves the S3 API over a folder (each bucket a sub-folder), verifies SigV4
//! signatures and honours `If-None-Match: *`. The harness looks for its binary in
//! `$S3S_FS` (a path), then on `PATH`, then in `$CARGO_HOME/bin` and `~/.cargo/bin`
//! (`cargo install s3s-fs@0.14.1 --features binary --locked` puts it there). When it is
//! missing, [`S3Server::start_new`] returns `None` and the test calls `skip_or_fail!`.
//!
//! Each server gets its own temporary folder, random access and secret keys and one bucket
//! ([`BUCKET`]). Fault tests [`S3Server::stop`] it (the process is killed: clients see
//! refused connections) and [`S3Server::start`] it again on the same port and folder, so
//! objects written before survive. Dropping the server kills the process. Its output goes
//! to `s3s-fs.log` in its folder, which is kept when `TIDEMARK_KEEP_TEST_DIRS` is set.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tidemark_store::url::{S3Options, Secret};

/// The bucket every test server starts with.
pub const BUCKET: &str = "tidemark-test";

/// How long a starting server may take to accept connections (it takes about 0.02 s).
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A running (or stopped) s3s-fs server owned by one test.
#[derive(Debug)]
pub struct S3Server {
    bin: PathBuf,
    /// Holds `data/` (the served folder, one sub-folder per bucket) and the log.
    dir: tempfile::TempDir,
    port: u16,
    access_key: String,
    secret_key: String,
    /// `None` while stopped.
    child: Option<Child>,
}

/// Where the s3s-fs binary is, if anywhere.
pub fn find_s3s_fs() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("S3S_FS").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    let cargo_home = std::env::var_os("CARGO_HOME").map(PathBuf::from);
    let home_cargo = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo"));
    on_path
        .chain(
            cargo_home
                .into_iter()
                .chain(home_cargo)
                .map(|c| c.join("bin")),
        )
        .map(|dir| dir.join("s3s-fs"))
        .find(|p| p.is_file())
}

/// A random lower-case hex string of 16 characters (std's `RandomState` is randomly seeded).
pub fn random_hex() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// A repository prefix unique to one test: `name-<random>`.
pub fn unique_prefix(name: &str) -> String {
    format!("{name}-{}", random_hex())
}

fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free loopback port");
    l.local_addr().expect("local address").port()
}

impl S3Server {
    /// Starts a fresh server with an empty bucket [`BUCKET`]; `None` when s3s-fs is not
    /// installed. Panics when it is installed but does not start.
    pub fn start_new() -> Option<S3Server> {
        let bin = find_s3s_fs()?;
        let dir = tempfile::Builder::new()
            .prefix("tidemark-s3-")
            .tempdir()
            .expect("temporary folder");
        std::fs::create_dir_all(dir.path().join("data").join(BUCKET)).expect("bucket folder");
        let mut server = S3Server {
            bin,
            dir,
            port: 0,
            access_key: format!("AK{}", random_hex().to_uppercase()),
            secret_key: format!("{}{}", random_hex(), random_hex()),
            child: None,
        };
        // Another test may grab the free port between our probe and the server's bind:
        // then the server exits at once, and we try another port.
        for _ in 0..5 {
            server.port = free_port();
            if server.try_start().is_ok() {
                return Some(server);
            }
        }
        panic!("s3s-fs did not start; see {}", server.log_path().display());
    }

    /// Starts the stopped server again, on the same port and folder.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "s3s-fs is already running");
        // The port was ours a moment ago; allow for a slow release.
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            match self.try_start() {
                Ok(()) => return,
                Err(why) if Instant::now() >= deadline => {
                    panic!("s3s-fs did not restart on port {}: {why}", self.port)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Kills the server and waits for it to exit. Clients then get refused connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// The access key id the server accepts.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// The secret access key the server accepts.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// The folder s3s-fs serves (`<bucket>/<key>` files inside).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Options that reach this server with its credentials.
    pub fn options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.endpoint()),
            region: Some("us-east-1".into()),
            path_style: true,
            access_key_id: Some(self.access_key.clone()),
            secret_access_key: Some(Secret::new(self.secret_key.clone())),
        }
    }

    /// The repository URL for `prefix` in this server's bucket.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    /// Spawns s3s-fs and waits until it accepts connections.
    fn try_start(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.bin)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args([
                "--access-key",
                &self.access_key,
                "--secret-key",
                &self.secret_key,
            ])
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("s3s-fs exited at start with {status}"));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "s3s-fs did not accept connections within {READY_WITHIN:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("TIDEMARK_KEEP_TEST_DIRS").is_some() {
            let path: &Path = self.dir.path();
            eprintln!("kept s3s-fs folder {}", path.display());
            let dir = std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("temporary folder"),
            );
            let _ = dir.keep();
        }
    }
}
