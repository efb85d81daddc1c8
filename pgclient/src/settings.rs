//! PostgreSQL connection settings, resolved the way libpq users expect.
//!
//! The caller's own settings ([`PgSettings`]: tidemark's `pg_host`, … from flags,
//! `TIDEMARK_*` or the config file) win; then the libpq environment (`PGHOST`, `PGPORT`,
//! `PGUSER`, `PGPASSWORD`, `PGSSLMODE`, `PGDATABASE`, `PGPASSFILE`, `PGSSLROOTCERT`); then
//! `~/.pgpass` and `~/.postgresql/root.crt`; then libpq's defaults (the socket folder
//! `/var/run/postgresql`, port 5432, the OS user, sslmode `prefer`). The result is a
//! [`PgTarget`], which [`crate::sql::connect`] and [`crate::conn::ReplicationConn`] connect
//! to, with TLS as [`crate::tls`] decides.
//!
//! [`PgSettings`] is plain data: whoever parses a command line or a file fills it in.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A password: kept out of `Debug` output (and so out of logs).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why settings do not resolve into a [`PgTarget`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// `PGPORT` is not a port number.
    #[error("PGPORT {0:?} is not a port number")]
    BadPort(String),
    /// `PGSSLMODE` is not one of libpq's modes.
    #[error(transparent)]
    SslMode(#[from] UnknownSslMode),
    /// The password file cannot be read.
    #[error("cannot read pg_password_file {}: {source}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A `sslmode` that libpq does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown pg_sslmode {0:?} (disable, allow, prefer, require, verify-ca, verify-full)")]
pub struct UnknownSslMode(pub String);

/// Connection settings as configured (anything unset is looked up in [`resolve`]).
#[derive(Debug, Clone, Default)]
pub struct PgSettings {
    /// Host name, IP address, or socket folder (absolute path).
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// User.
    pub user: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// File holding the password (first line).
    pub password_file: Option<PathBuf>,
    /// TLS mode.
    pub sslmode: Option<SslMode>,
    /// PEM file of the root certificates that verify the server (`sslrootcert`).
    pub sslrootcert: Option<PathBuf>,
}

/// libpq's `sslmode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server insists on it. tidemark treats it as `disable` (it never retries
    /// with TLS after a refusal, as libpq's `allow` does).
    Allow,
    /// TLS if available, else plain (the libpq default).
    Prefer,
    /// TLS required; the certificate is checked only when the root certificate file exists.
    Require,
    /// TLS with a verified CA (not the host name).
    VerifyCa,
    /// TLS with a verified CA and host name.
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = UnknownSslMode;
    fn from_str(s: &str) -> Result<Self, UnknownSslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(UnknownSslMode(s.to_string())),
        })
    }
}

/// Fully resolved connection parameters.
#[derive(Debug, Clone)]
pub struct PgTarget {
    /// Host name or socket folder.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User.
    pub user: String,
    /// Database for ordinary SQL.
    pub dbname: String,
    /// Password, if any source had one.
    pub password: Option<Secret>,
    /// TLS mode.
    pub sslmode: SslMode,
    /// Where the root certificates are (`pg_sslrootcert`, `PGSSLROOTCERT` or
    /// `~/.postgresql/root.crt`); the file need not exist (see [`crate::tls`]).
    pub sslrootcert: Option<PathBuf>,
}

/// Where the environment comes from: the process, or a map in tests.
pub trait Env {
    /// One variable.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

/// Resolves settings against the libpq environment and `~/.pgpass`.
pub fn resolve(settings: &PgSettings, env: &dyn Env) -> Result<PgTarget, SettingsError> {
    let host = settings
        .host
        .clone()
        .or_else(|| env.var("PGHOST"))
        .unwrap_or_else(|| {
            if Path::new("/var/run/postgresql").is_dir() {
                "/var/run/postgresql".into()
            } else {
                "localhost".into()
            }
        });
    let port = match settings.port {
        Some(p) => p,
        None => match env.var("PGPORT") {
            Some(p) => p.parse().map_err(|_| SettingsError::BadPort(p.clone()))?,
            None => 5432,
        },
    };
    let user = settings
        .user
        .clone()
        .or_else(|| env.var("PGUSER"))
        .or_else(|| env.var("USER"))
        .unwrap_or_else(|| "postgres".into());
    let dbname = env.var("PGDATABASE").unwrap_or_else(|| "postgres".into());
    let sslmode = match settings.sslmode {
        Some(m) => m,
        None => match env.var("PGSSLMODE") {
            Some(m) => m.parse()?,
            None => SslMode::Prefer,
        },
    };
    let sslrootcert = settings
        .sslrootcert
        .clone()
        .or_else(|| env.var("PGSSLROOTCERT").map(PathBuf::from))
        .or_else(|| crate::tls::default_root_cert(env.var("HOME").as_deref()));
    let password = if let Some(p) = &settings.password {
        Some(p.clone())
    } else if let Some(file) = &settings.password_file {
        let text = std::fs::read_to_string(file).map_err(|source| SettingsError::PasswordFile {
            path: file.clone(),
            source,
        })?;
        Some(Secret::new(
            text.lines().next().unwrap_or_default().to_string(),
        ))
    } else if let Some(p) = env.var("PGPASSWORD") {
        Some(Secret::new(p))
    } else {
        let passfile = env
            .var("PGPASSFILE")
            .map(PathBuf::from)
            .or_else(|| env.var("HOME").map(|h| Path::new(&h).join(".pgpass")));
        passfile.and_then(|f| pgpass_lookup(&f, &host, port, &dbname, &user))
    };
    Ok(PgTarget {
        host,
        port,
        user,
        dbname,
        password,
        sslmode,
        sslrootcert,
    })
}

/// Looks a password up in a `.pgpass` file, as libpq does: `host:port:db:user:password`,
/// `*` matching anything, `\:` and `\\` escaped, the first matching line winning, and
/// socket connections matching `localhost`. A file other users can read is ignored.
pub fn pgpass_lookup(
    file: &Path,
    host: &str,
    port: u16,
    dbname: &str,
    user: &str,
) -> Option<Secret> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(file).ok()?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "password file {} has group or world access; ignoring it (chmod 600 it)",
                file.display()
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    let port = port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() != 5 {
            continue;
        }
        let want = [host, port.as_str(), dbname, user];
        if fields[..4]
            .iter()
            .zip(want)
            .all(|(f, w)| f == "*" || f == w)
        {
            return Some(Secret::new(fields[4].clone()));
        }
    }
    None
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("one field").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut().expect("one field").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MapEnv(HashMap<&'static str, String>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).cloned()
        }
    }

    fn pgpass(dir: &Path, text: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let f = dir.join("pgpass");
        std::fs::write(&f, text).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn settings_beat_libpq_variables_which_beat_defaults() {
        let env = MapEnv(HashMap::from([
            ("PGHOST", "envhost".to_string()),
            ("PGPORT", "5555".to_string()),
            ("PGUSER", "envuser".to_string()),
        ]));
        let t = resolve(
            &PgSettings {
                port: Some(6000),
                ..Default::default()
            },
            &env,
        )
        .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.user.as_str()),
            ("envhost", 6000, "envuser")
        );
        assert_eq!(t.sslmode, SslMode::Prefer);
        assert_eq!(t.sslrootcert, None, "no HOME, no default root.crt");
        // sslrootcert: the setting, else PGSSLROOTCERT, else ~/.postgresql/root.crt.
        let env = MapEnv(HashMap::from([("HOME", "/home/u".to_string())]));
        let t = resolve(&PgSettings::default(), &env).unwrap();
        assert_eq!(
            t.sslrootcert.unwrap(),
            Path::new("/home/u/.postgresql/root.crt")
        );
        let env = MapEnv(HashMap::from([
            ("HOME", "/home/u".to_string()),
            ("PGSSLROOTCERT", "/env/ca.pem".to_string()),
            ("PGSSLMODE", "verify-ca".to_string()),
        ]));
        let t = resolve(&PgSettings::default(), &env).unwrap();
        assert_eq!(t.sslrootcert.unwrap(), Path::new("/env/ca.pem"));
        assert_eq!(t.sslmode, SslMode::VerifyCa);
        let s = PgSettings {
            sslrootcert: Some("/flag/ca.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            resolve(&s, &env).unwrap().sslrootcert.unwrap(),
            Path::new("/flag/ca.pem")
        );
        let bad = MapEnv(HashMap::from([("PGPORT", "many".to_string())]));
        assert!(resolve(&PgSettings::default(), &bad).is_err());
    }

    #[test]
    fn pgpass_matches_like_libpq() {
        let dir = tempfile::tempdir().unwrap();
        let f = pgpass(
            dir.path(),
            "# comment\nother:5432:*:u:wrong\nlocalhost:5432:*:u:sock\\:pw\n*:*:*:*:fallback\n",
            0o600,
        );
        assert_eq!(
            pgpass_lookup(&f, "/tmp/sock", 5432, "postgres", "u")
                .unwrap()
                .expose(),
            "sock:pw"
        );
        assert_eq!(
            pgpass_lookup(&f, "db.example", 5432, "postgres", "u")
                .unwrap()
                .expose(),
            "fallback"
        );
        let loose = pgpass(dir.path(), "*:*:*:*:secret\n", 0o644);
        assert!(
            pgpass_lookup(&loose, "h", 1, "d", "u").is_none(),
            "a world-readable file is ignored"
        );
    }

    #[test]
    fn password_sources_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = pgpass(dir.path(), "*:*:*:*:from-pgpass\n", 0o600);
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, "from-file\n").unwrap();
        let env = MapEnv(HashMap::from([("PGPASSFILE", f.display().to_string())]));
        assert_eq!(
            resolve(&PgSettings::default(), &env)
                .unwrap()
                .password
                .unwrap()
                .expose(),
            "from-pgpass"
        );
        let env2 = MapEnv(HashMap::from([
            ("PGPASSFILE", f.display().to_string()),
            ("PGPASSWORD", "from-env".to_string()),
        ]));
        assert_eq!(
            resolve(&PgSettings::default(), &env2)
                .unwrap()
                .password
                .unwrap()
                .expose(),
            "from-env"
        );
        let s = PgSettings {
            password_file: Some(pwfile),
            ..Default::default()
        };
        assert_eq!(
            resolve(&s, &env2).unwrap().password.unwrap().expose(),
            "from-file"
        );
    }
}
