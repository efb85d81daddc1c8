//! Settings: the config file, merged under flags and `TIDEMARK_*` variables, then checked.
//!
//! The file is TOML with the flags' names (`repo = "s3://…"`, `pg_port = 5433`); unknown
//! keys are an error, so a typo cannot silently fall back to a default. Secrets are held
//! as [`Secret`] and never logged; a file holding one that other users can read gets a
//! warning.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use serde::Deserialize;
use tidemark_store::catalog::Stanza;
use tidemark_store::url::{BackendOptions, RepoUrl, S3Options, Secret};
use tidemark_store::Compression;

use super::args::SettingArgs;
use super::duration::parse_duration;
use crate::daemon::schedule::Schedule;
use crate::daemon::JobKind;
use tidemark_pgclient::settings::PgSettings;
use tidemark_recovery::retention::{RetentionPolicy, Tiers};

/// The config file used when none is named and it exists.
pub const DEFAULT_CONFIG: &str = "/etc/tidemark/tidemark.toml";
/// The repository used when none is configured.
pub const DEFAULT_REPO: &str = "file:///var/lib/tidemark";
/// The spool folder used when none is configured.
pub const DEFAULT_SPOOL: &str = "/var/spool/tidemark";
/// Days after which `info` warns that the last passing drill is too old.
pub const DEFAULT_DRILL_MAX_AGE_DAYS: f64 = 7.0;
/// Garbage collection's default grace: far longer than any writer takes between storing
/// a blob and writing the record that names it (archive-push: seconds; verify: its run),
/// with room for clocks that disagree, yet short enough that what an interrupted backup
/// left goes on the next day's expire.
pub const DEFAULT_GC_GRACE: Duration = Duration::from_secs(6 * 3600);
/// The spool's default limit, in MiB.
pub const DEFAULT_SPOOL_MAX_MIB: u64 = 4096;
/// Segments archive-get keeps prefetched by default: enough for PostgreSQL to replay
/// from local disk while the next ones arrive, from S3 too.
pub const DEFAULT_PREFETCH_DEPTH: usize = 32;
/// The prefetch folder's default limit, in MiB (64 segments of the default size).
pub const DEFAULT_PREFETCH_MAX_MIB: u64 = 1024;
/// The recovery point objective when none is configured (issue 16: "RPO 1 hour with WAL
/// archiving").
pub const DEFAULT_RPO_TARGET: Duration = Duration::from_secs(3600);
/// The age of the newest backup past which `status` and the agent warn, when none is
/// configured: a daily backup, plus two hours for it to run late.
pub const DEFAULT_BACKUP_MAX_AGE: Duration = Duration::from_secs(26 * 3600);
/// Where the agent serves its metrics when nothing else is configured.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9187";

/// The local state folder when none is configured (job locks, the agent's history), when
/// it exists: the agent's systemd unit creates it (docs/agent.md).
pub const DEFAULT_STATE: &str = "/var/lib/tidemark-agent";

/// The state folder when none is configured: [`DEFAULT_STATE`] when it exists, so that a
/// command run by hand takes the same job locks as the agent installed beside it;
/// otherwise `~/.local/state/tidemark` of the user this runs as (from the user database,
/// not `$HOME`, which `sudo` may or may not carry over), so that a `tidemark backup` from
/// cron on a machine without the agent still has its lock. Without a home folder either:
/// [`DEFAULT_STATE`], whose error then says what to set.
fn default_state_path() -> PathBuf {
    let shared = PathBuf::from(DEFAULT_STATE);
    if shared.is_dir() {
        return shared;
    }
    // SAFETY: getpwuid returns a pointer into static storage or null; the fields read are
    // copied out at once, and nothing else in this thread calls it meanwhile.
    let home = unsafe {
        let entry = libc::getpwuid(libc::geteuid());
        if entry.is_null() || (*entry).pw_dir.is_null() {
            None
        } else {
            let dir = std::ffi::CStr::from_ptr((*entry).pw_dir);
            Some(PathBuf::from(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(dir.to_bytes()),
            ))
        }
    };
    match home {
        Some(home) if home.is_absolute() && home.is_dir() => {
            home.join(".local").join("state").join("tidemark")
        }
        _ => shared,
    }
}

/// The config file's contents.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    repo: Option<String>,
    stanza: Option<String>,
    compression: Option<String>,
    s3_endpoint: Option<String>,
    s3_region: Option<String>,
    s3_path_style: Option<bool>,
    s3_access_key_id: Option<String>,
    s3_secret_access_key: Option<String>,
    pg_host: Option<String>,
    pg_port: Option<u16>,
    pg_user: Option<String>,
    pg_password: Option<String>,
    pg_password_file: Option<PathBuf>,
    pg_sslmode: Option<String>,
    pg_sslrootcert: Option<PathBuf>,
    pgdata: Option<PathBuf>,
    retry_timeout: Option<u64>,
    log_level: Option<String>,
    archive_async: Option<bool>,
    spool_path: Option<PathBuf>,
    spool_max_mib: Option<u64>,
    spool_drainer: Option<String>,
    prefetch_depth: Option<usize>,
    prefetch_max_mib: Option<u64>,
    drill_path: Option<PathBuf>,
    drill_user: Option<String>,
    drill_max_age: Option<f64>,
    rpo_target: Option<String>,
    backup_max_age: Option<String>,
    metrics_listen: Option<String>,
    metrics_allow_remote: Option<bool>,
    state_path: Option<PathBuf>,
    backup_schedule: Option<String>,
    verify_schedule: Option<String>,
    drill_schedule: Option<String>,
    expire_schedule: Option<String>,
    retention_count: Option<u32>,
    retention_window: Option<String>,
    retention_tiers: Option<TierSettings>,
    retention_forever: Option<Vec<String>>,
    gc_grace: Option<String>,
}

/// `retention_tiers = { daily = 7, weekly = 4, monthly = 12, yearly = 0 }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TierSettings {
    daily: Option<u32>,
    weekly: Option<u32>,
    monthly: Option<u32>,
    yearly: Option<u32>,
}

/// Every setting, resolved and checked.
#[derive(Debug, Clone)]
// `config_file` and `pgdata` are read by backup and restore (next milestone).
#[allow(dead_code)]
pub struct Settings {
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// The repository.
    pub repo: RepoUrl,
    /// The stanza.
    pub stanza: Stanza,
    /// Compression of new blobs.
    pub compression: Compression,
    /// S3 settings.
    pub s3: S3Options,
    /// How long transient repository failures are retried.
    pub retry_for: Duration,
    /// PostgreSQL connection settings as given (libpq defaults apply later).
    pub pg: PgSettings,
    /// The data directory.
    pub pgdata: Option<PathBuf>,
    /// The log filter.
    pub log_level: String,
    /// Asynchronous archiving through the spool.
    pub archive_async: bool,
    /// The spool folder (absolute).
    pub spool_path: PathBuf,
    /// The spool's limit in bytes.
    pub spool_max_bytes: u64,
    /// Whether archive-push starts a background drainer.
    pub spool_auto_drain: bool,
    /// Segments archive-get keeps prefetched (0: no prefetching).
    pub prefetch_depth: usize,
    /// The prefetch folder's limit in bytes.
    pub prefetch_max_bytes: u64,
    /// Where drills create their scratch folder (absolute; `None`: the system's
    /// temporary folder).
    pub drill_path: Option<PathBuf>,
    /// The user that runs a drill's scratch server when tidemark runs as root.
    pub drill_user: Option<String>,
    /// How old the last passing drill may be before `info` warns.
    pub drill_max_age: Duration,
    /// The retention policy `expire` applies (may be empty: `expire` then refuses).
    pub retention: RetentionPolicy,
    /// Garbage collection never removes a blob younger than this.
    pub gc_grace: Duration,
    /// The recovery point objective (`status`, the RPO watch).
    pub rpo_target: Duration,
    /// How old the newest backup may be before `status` and the RPO watch warn.
    pub backup_max_age: Duration,
    /// Where the agent serves its metrics (`None`: "off"), as configured: the agent
    /// takes it through [`Settings::metrics_address`], which applies the loopback rule.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `metrics_allow_remote`: `metrics_listen` may be an address other hosts reach.
    pub metrics_allow_remote: bool,
    /// The local state folder (absolute): job locks, the agent's job history. Losing it
    /// loses nothing: the repository is the source of truth.
    pub state_path: PathBuf,
    /// The agent's schedules, by kind of job (a kind without one is not run).
    pub schedules: BTreeMap<JobKind, Schedule>,
    /// `spool_drainer = "agent"`: the agent drains the spool while it runs (archive-push
    /// starts its own drainer when the agent does not run).
    pub spool_drained_by_agent: bool,
}

impl Settings {
    /// The repository settings as `TIDEMARK_*` variables, for a `tidemark` process this
    /// one starts (the spool's drainer): it then works on exactly this repository, stanza
    /// and spool whatever the flags were. Holds the S3 secret when one is set; a process's
    /// environment is readable by its owner only.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("TIDEMARK_REPO", self.repo.to_string()),
            ("TIDEMARK_STANZA", self.stanza.as_str().to_string()),
            ("TIDEMARK_COMPRESSION", self.compression.to_string()),
            (
                "TIDEMARK_RETRY_TIMEOUT",
                self.retry_for.as_secs().to_string(),
            ),
            ("TIDEMARK_LOG_LEVEL", self.log_level.clone()),
            ("TIDEMARK_ARCHIVE_ASYNC", self.archive_async.to_string()),
            ("TIDEMARK_SPOOL_PATH", self.spool_path.display().to_string()),
            (
                "TIDEMARK_SPOOL_MAX_MIB",
                (self.spool_max_bytes >> 20).to_string(),
            ),
            ("TIDEMARK_S3_PATH_STYLE", self.s3.path_style.to_string()),
            ("TIDEMARK_PREFETCH_DEPTH", self.prefetch_depth.to_string()),
            (
                "TIDEMARK_PREFETCH_MAX_MIB",
                (self.prefetch_max_bytes >> 20).to_string(),
            ),
        ];
        let optional = [
            ("TIDEMARK_S3_ENDPOINT", self.s3.endpoint.clone()),
            ("TIDEMARK_S3_REGION", self.s3.region.clone()),
            ("TIDEMARK_S3_ACCESS_KEY_ID", self.s3.access_key_id.clone()),
            (
                "TIDEMARK_S3_SECRET_ACCESS_KEY",
                self.s3
                    .secret_access_key
                    .as_ref()
                    .map(|s| s.expose().to_string()),
            ),
            (
                "TIDEMARK_CONFIG",
                self.config_file.as_ref().map(|p| p.display().to_string()),
            ),
        ];
        env.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
        env
    }
}

/// A setting that cannot work; exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Settings {
    /// The options to open the repository's backend with.
    pub fn backend_options(&self) -> BackendOptions {
        BackendOptions {
            url: self.repo.clone(),
            s3: self.s3.clone(),
            retry_for: self.retry_for,
        }
    }
}

/// Reads the config file `args` name (or the default one, if present).
pub fn load_file(
    args: &SettingArgs,
) -> Result<(Option<PathBuf>, FileSettings, Vec<String>), ConfigError> {
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((None, FileSettings::default(), vec![]))
        }
        Err(e) => {
            return Err(ConfigError(format!(
                "cannot read config file {}: {e}",
                path.display()
            )))
        }
    };
    let file: FileSettings = toml::from_str(&text)
        .map_err(|e| ConfigError(format!("config file {}: {}", path.display(), e.message())))?;
    let mut warnings = Vec::new();
    if file.s3_secret_access_key.is_some() || file.pg_password.is_some() {
        if let Some(w) = readable_by_others(&path) {
            warnings.push(w);
        }
    }
    Ok((Some(path), file, warnings))
}

#[cfg(unix)]
fn readable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "config file {} holds secrets and is readable by other users (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        )
    })
}

#[cfg(not(unix))]
fn readable_by_others(_path: &Path) -> Option<String> {
    None
}

/// Merges flags/env over the file over defaults, and checks every value.
pub fn resolve(
    args: &SettingArgs,
    config_file: Option<PathBuf>,
    file: FileSettings,
) -> Result<Settings, ConfigError> {
    let retention = retention_policy(args, &file)?;
    let gc_grace = match args.gc_grace.as_ref().or(file.gc_grace.as_ref()) {
        Some(text) => parse_duration(text).map_err(|e| ConfigError(format!("gc_grace: {e}")))?,
        None => DEFAULT_GC_GRACE,
    };
    let repo_text = args
        .repo
        .clone()
        .or(file.repo)
        .unwrap_or_else(|| DEFAULT_REPO.to_string());
    let repo = RepoUrl::parse(&repo_text).map_err(|e| ConfigError(e.to_string()))?;
    let stanza_text = args
        .stanza
        .clone()
        .or(file.stanza)
        .unwrap_or_else(|| "main".to_string());
    let stanza = Stanza::new(&stanza_text).map_err(|e| ConfigError(e.to_string()))?;
    let compression = match args.compression.clone().or(file.compression) {
        Some(c) => c.parse().map_err(ConfigError)?,
        None => Compression::Lz4,
    };
    let s3 = S3Options {
        endpoint: args.s3_endpoint.clone().or(file.s3_endpoint),
        region: args.s3_region.clone().or(file.s3_region),
        path_style: args.s3_path_style.or(file.s3_path_style).unwrap_or(false),
        access_key_id: args.s3_access_key_id.clone().or(file.s3_access_key_id),
        secret_access_key: args
            .s3_secret_access_key
            .clone()
            .or(file.s3_secret_access_key)
            .map(Secret::new),
    };
    if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
        return Err(ConfigError(
            "s3_access_key_id and s3_secret_access_key go together: set both or neither".into(),
        ));
    }
    let sslmode = args.pg_sslmode.clone().or(file.pg_sslmode);
    let pg = PgSettings {
        host: args.pg_host.clone().or(file.pg_host),
        port: args.pg_port.or(file.pg_port),
        user: args.pg_user.clone().or(file.pg_user),
        password: args
            .pg_password
            .clone()
            .or(file.pg_password)
            .map(tidemark_pgclient::settings::Secret::new),
        password_file: args.pg_password_file.clone().or(file.pg_password_file),
        sslmode: match sslmode {
            Some(m) => Some(m.parse().map_err(|e| ConfigError(format!("{e}")))?),
            None => None,
        },
        sslrootcert: args.pg_sslrootcert.clone().or(file.pg_sslrootcert),
    };
    let retry_for = Duration::from_secs(args.retry_timeout.or(file.retry_timeout).unwrap_or(60));
    let spool_path = args
        .spool_path
        .clone()
        .or(file.spool_path)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL));
    if !spool_path.is_absolute() {
        return Err(ConfigError(format!(
            "spool_path {} must be an absolute path",
            spool_path.display()
        )));
    }
    let spool_max_mib = args
        .spool_max_mib
        .or(file.spool_max_mib)
        .unwrap_or(DEFAULT_SPOOL_MAX_MIB);
    let (spool_auto_drain, spool_drained_by_agent) =
        match args.spool_drainer.clone().or(file.spool_drainer).as_deref() {
            None | Some("auto") => (true, false),
            Some("manual") => (false, false),
            // The agent drains while it runs; archive-push's own drainer when it does not.
            Some("agent") => (true, true),
            Some(other) => {
                return Err(ConfigError(format!(
                    "spool_drainer {other:?}: use auto, agent or manual"
                )))
            }
        };
    let state_path = args
        .state_path
        .clone()
        .or(file.state_path)
        .unwrap_or_else(default_state_path);
    if !state_path.is_absolute() {
        return Err(ConfigError(format!(
            "state_path {} must be an absolute path",
            state_path.display()
        )));
    }
    let mut schedules = BTreeMap::new();
    for (kind, text) in [
        (
            JobKind::Backup,
            args.backup_schedule.clone().or(file.backup_schedule),
        ),
        (
            JobKind::Verify,
            args.verify_schedule.clone().or(file.verify_schedule),
        ),
        (
            JobKind::Drill,
            args.drill_schedule.clone().or(file.drill_schedule),
        ),
        (
            JobKind::Expire,
            args.expire_schedule.clone().or(file.expire_schedule),
        ),
    ] {
        // An empty string turns a schedule of the file off from a flag or the environment.
        if let Some(text) = text.filter(|t| !t.trim().is_empty()) {
            let schedule = text
                .parse::<Schedule>()
                .map_err(|e| ConfigError(format!("{kind}_schedule: {e}")))?;
            schedules.insert(kind, schedule);
        }
    }
    let drill_path = args.drill_path.clone().or(file.drill_path);
    if let Some(path) = drill_path.as_ref().filter(|p| !p.is_absolute()) {
        return Err(ConfigError(format!(
            "drill_path {} must be an absolute path",
            path.display()
        )));
    }
    let drill_max_age_days = args
        .drill_max_age
        .or(file.drill_max_age)
        .unwrap_or(DEFAULT_DRILL_MAX_AGE_DAYS);
    if !(drill_max_age_days.is_finite()
        && drill_max_age_days > 0.0
        && drill_max_age_days < 36_500.0)
    {
        return Err(ConfigError(format!(
            "drill_max_age {drill_max_age_days}: a number of days above 0"
        )));
    }
    let duration = |name: &str, value: Option<String>, default: Duration| match value {
        None => Ok(default),
        Some(text) => match super::duration::parse_duration(&text) {
            Ok(d) if d.is_zero() => Err(ConfigError(format!("{name} {text:?} must be above 0"))),
            Ok(d) => Ok(d),
            Err(e) => Err(ConfigError(format!("{name}: {e}"))),
        },
    };
    let rpo_target = duration(
        "rpo_target",
        args.rpo_target.clone().or(file.rpo_target),
        DEFAULT_RPO_TARGET,
    )?;
    let backup_max_age = duration(
        "backup_max_age",
        args.backup_max_age.clone().or(file.backup_max_age),
        DEFAULT_BACKUP_MAX_AGE,
    )?;
    let metrics_listen = metrics_listen(
        args.metrics_listen
            .clone()
            .or(file.metrics_listen)
            .as_deref()
            .unwrap_or(DEFAULT_METRICS_LISTEN),
    )?;
    Ok(Settings {
        retention,
        gc_grace,
        rpo_target,
        backup_max_age,
        metrics_listen,
        metrics_allow_remote: args
            .metrics_allow_remote
            .or(file.metrics_allow_remote)
            .unwrap_or(false),
        drill_path,
        drill_user: args.drill_user.clone().or(file.drill_user),
        drill_max_age: Duration::from_secs_f64(drill_max_age_days * 86_400.0),
        config_file,
        repo,
        stanza,
        compression,
        s3,
        retry_for,
        pg,
        pgdata: args.pgdata.clone().or(file.pgdata),
        log_level: args
            .log_level
            .clone()
            .or(file.log_level)
            .unwrap_or_else(|| "warn".to_string()),
        archive_async: args.archive_async.or(file.archive_async).unwrap_or(false),
        spool_path,
        spool_max_bytes: spool_max_mib.saturating_mul(1 << 20),
        spool_auto_drain,
        prefetch_depth: args
            .prefetch_depth
            .or(file.prefetch_depth)
            .unwrap_or(DEFAULT_PREFETCH_DEPTH),
        prefetch_max_bytes: args
            .prefetch_max_mib
            .or(file.prefetch_max_mib)
            .unwrap_or(DEFAULT_PREFETCH_MAX_MIB)
            .saturating_mul(1 << 20),
        state_path,
        schedules,
        spool_drained_by_agent,
    })
}

/// The retention settings, merged (flags and `TIDEMARK_*` over the file) and checked.
fn retention_policy(
    args: &SettingArgs,
    file: &FileSettings,
) -> Result<RetentionPolicy, ConfigError> {
    let window = match args
        .retention_window
        .as_ref()
        .or(file.retention_window.as_ref())
    {
        None => None,
        Some(text) => {
            let d =
                parse_duration(text).map_err(|e| ConfigError(format!("retention_window: {e}")))?;
            if d.is_zero() {
                return Err(ConfigError("retention_window must be longer than 0".into()));
            }
            Some(
                chrono::Duration::from_std(d)
                    .map_err(|_| ConfigError(format!("retention_window {text:?} is too long")))?,
            )
        }
    };
    let count = args.retention_count.or(file.retention_count);
    if count == Some(0) {
        return Err(ConfigError(
            "retention_count must be at least 1 (the newest backup is always kept)".into(),
        ));
    }
    let tiers = match &args.retention_tiers {
        Some(text) => {
            let mut t = Tiers::default();
            for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let bad = || {
                    ConfigError(format!(
                        "retention_tiers {text:?}: use daily=N,weekly=N,monthly=N,yearly=N"
                    ))
                };
                let (name, n) = part.split_once('=').ok_or_else(bad)?;
                let n: u32 = n.trim().parse().map_err(|_| bad())?;
                match name.trim() {
                    "daily" => t.daily = n,
                    "weekly" => t.weekly = n,
                    "monthly" => t.monthly = n,
                    "yearly" => t.yearly = n,
                    _ => return Err(bad()),
                }
            }
            t
        }
        None => file
            .retention_tiers
            .as_ref()
            .map(|t| Tiers {
                daily: t.daily.unwrap_or(0),
                weekly: t.weekly.unwrap_or(0),
                monthly: t.monthly.unwrap_or(0),
                yearly: t.yearly.unwrap_or(0),
            })
            .unwrap_or_default(),
    };
    let forever = match &args.retention_forever {
        Some(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        None => file
            .retention_forever
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    };
    Ok(RetentionPolicy {
        count,
        window,
        tiers,
        forever,
    })
}

/// `metrics_listen` read: an address and port, or "off" (`None`).
fn metrics_listen(text: &str) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    if text.trim() == "off" {
        return Ok(None);
    }
    let addr: std::net::SocketAddr = text.trim().parse().map_err(|_| {
        ConfigError(format!(
            "metrics_listen {text:?}: an IP address and port (\"127.0.0.1:9187\", \"[::1]:9187\") or \"off\""
        ))
    })?;
    Ok(Some(addr))
}

impl Settings {
    /// Where the agent serves its metrics (`None`: "off"), checked: an address other hosts
    /// can reach is refused unless `metrics_allow_remote` (the metrics describe the
    /// cluster, its WAL and its backups, and the endpoint has no authentication: exposing
    /// it is the operator's explicit choice). Checked by the agent when it starts, not by
    /// every command: a metrics setting must never stop archive-push.
    pub fn metrics_address(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        match self.metrics_listen {
            Some(addr) if !addr.ip().is_loopback() && !self.metrics_allow_remote => {
                Err(ConfigError(format!(
                    "metrics_listen {addr} is not a loopback address: other hosts could read the metrics; \
                     set metrics_allow_remote = true to serve them there"
                )))
            }
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> FileSettings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file = parse(
            "repo = 's3://from-file/x'\nstanza = 'filestanza'\npg_port = 5444\nretry_timeout = 5\n",
        );
        let args = SettingArgs {
            stanza: Some("flag".into()),
            ..Default::default()
        };
        let s = resolve(&args, None, file).unwrap();
        assert_eq!(s.stanza.as_str(), "flag");
        assert_eq!(s.repo.to_string(), "s3://from-file/x");
        assert_eq!(s.pg.port, Some(5444));
        assert_eq!(s.pg.sslrootcert, None);
        let tls_file = parse("pg_sslmode = 'verify-full'\npg_sslrootcert = '/etc/ca.pem'\n");
        let tls_args = SettingArgs {
            pg_sslrootcert: Some("/flag/ca.pem".into()),
            ..Default::default()
        };
        let tls = resolve(&tls_args, None, tls_file).unwrap();
        assert_eq!(
            tls.pg.sslmode,
            Some(tidemark_pgclient::settings::SslMode::VerifyFull)
        );
        assert_eq!(tls.pg.sslrootcert, Some(PathBuf::from("/flag/ca.pem")));
        assert_eq!(s.retry_for, Duration::from_secs(5));
        assert_eq!(s.compression, Compression::Lz4);
        let d = resolve(&SettingArgs::default(), None, FileSettings::default()).unwrap();
        assert_eq!(d.repo.to_string(), DEFAULT_REPO);
        assert_eq!(d.stanza.as_str(), "main");
        assert_eq!(d.drill_max_age, Duration::from_secs(7 * 86_400));
        assert_eq!((d.drill_path.as_ref(), d.drill_user.as_ref()), (None, None));
        let drill = resolve(
            &SettingArgs::default(),
            None,
            parse("drill_path = '/srv/drills'\ndrill_user = 'postgres'\ndrill_max_age = 1.5\n"),
        )
        .unwrap();
        assert_eq!(drill.drill_path, Some(PathBuf::from("/srv/drills")));
        assert_eq!(drill.drill_user.as_deref(), Some("postgres"));
        assert_eq!(drill.drill_max_age, Duration::from_secs(36 * 3600));
        assert_eq!(d.rpo_target, Duration::from_secs(3600));
        assert_eq!(d.backup_max_age, Duration::from_secs(26 * 3600));
        assert_eq!(d.metrics_listen, Some("127.0.0.1:9187".parse().unwrap()));
        let watch = resolve(
            &SettingArgs {
                rpo_target: Some("3s".into()),
                ..Default::default()
            },
            None,
            parse("rpo_target = '1h'\nbackup_max_age = '8d'\nmetrics_listen = '[::1]:9100'\n"),
        )
        .unwrap();
        assert_eq!(watch.rpo_target, Duration::from_secs(3));
        assert_eq!(watch.backup_max_age, Duration::from_secs(8 * 86_400));
        assert_eq!(watch.metrics_listen, Some("[::1]:9100".parse().unwrap()));
        let remote = resolve(
            &SettingArgs::default(),
            None,
            parse("metrics_listen = '0.0.0.0:9187'\nmetrics_allow_remote = true\n"),
        )
        .unwrap();
        assert_eq!(
            remote.metrics_address().unwrap(),
            Some("0.0.0.0:9187".parse().unwrap())
        );
        for text in ["0.0.0.0:9187", "10.1.2.3:9187", "[::]:9187"] {
            let refused = resolve(
                &SettingArgs::default(),
                None,
                parse(&format!("metrics_listen = '{text}'\n")),
            )
            .unwrap();
            let err = refused.metrics_address().unwrap_err().to_string();
            assert!(
                err.contains("not a loopback") && err.contains("metrics_allow_remote"),
                "{err}"
            );
        }
        assert_eq!(
            watch.metrics_address().unwrap(),
            Some("[::1]:9100".parse().unwrap())
        );
        let off = resolve(
            &SettingArgs::default(),
            None,
            parse("metrics_listen = 'off'\n"),
        )
        .unwrap();
        assert_eq!(off.metrics_listen, None);
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("repo = 'relative/path'", "file:///"),
            ("stanza = 'a/b'", "stanza"),
            ("compression = 'zstd'", "compression"),
            ("s3_access_key_id = 'x'", "go together"),
            ("pg_sslmode = 'sometimes'", "sslmode"),
            ("spool_path = 'relative'", "spool_path"),
            ("spool_drainer = 'cron'", "spool_drainer"),
            ("drill_path = 'tmp'", "drill_path"),
            ("drill_max_age = 0", "drill_max_age"),
            ("drill_max_age = -1.5", "drill_max_age"),
            ("rpo_target = '60'", "rpo_target"),
            ("rpo_target = '0s'", "rpo_target"),
            ("backup_max_age = 'soon'", "backup_max_age"),
            ("metrics_listen = 'localhost'", "metrics_listen"),
            ("state_path = 'var/x'", "state_path"),
            ("backup_schedule = '6 hours'", "backup_schedule"),
            ("drill_schedule = '0 25 * * *'", "drill_schedule"),
        ];
        for (text, needle) in cases {
            let err = resolve(&SettingArgs::default(), None, parse(text))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        assert!(
            toml::from_str::<FileSettings>("repoo = 'x'").is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn retention_settings_are_read_and_checked() {
        let s = resolve(
            &SettingArgs::default(),
            None,
            parse(
                "retention_count = 3\nretention_window = '1d12h'\ngc_grace = '2h'\n\
                 retention_forever = ['pre-upgrade']\n\
                 retention_tiers = { daily = 7, monthly = 12 }\n",
            ),
        )
        .unwrap();
        assert_eq!(s.retention.count, Some(3));
        assert_eq!(s.retention.window, Some(chrono::Duration::hours(36)));
        assert_eq!(
            s.retention.tiers,
            Tiers {
                daily: 7,
                weekly: 0,
                monthly: 12,
                yearly: 0
            }
        );
        assert!(s.retention.forever.contains("pre-upgrade"));
        assert_eq!(s.gc_grace, Duration::from_secs(7200));
        let d = resolve(&SettingArgs::default(), None, FileSettings::default()).unwrap();
        assert!(
            d.retention.is_empty(),
            "no setting: an empty policy, which expire refuses"
        );
        assert_eq!(d.gc_grace, DEFAULT_GC_GRACE);
        let flags = SettingArgs {
            retention_tiers: Some("weekly=4, yearly=2".into()),
            retention_forever: Some("a,b".into()),
            ..Default::default()
        };
        let f = resolve(&flags, None, FileSettings::default()).unwrap();
        assert_eq!((f.retention.tiers.weekly, f.retention.tiers.yearly), (4, 2));
        assert_eq!(f.retention.forever.len(), 2);
        for (text, needle) in [
            ("retention_count = 0", "retention_count"),
            ("retention_window = '14 days'", "retention_window"),
            ("retention_window = '0d'", "retention_window"),
            ("gc_grace = 'soon'", "gc_grace"),
            ("retention_tiers = { hourly = 3 }", "unknown field"),
        ] {
            let err = match toml::from_str::<FileSettings>(text) {
                Err(e) => e.to_string(),
                Ok(file) => resolve(&SettingArgs::default(), None, file)
                    .unwrap_err()
                    .to_string(),
            };
            assert!(err.contains(needle), "{text}: {err}");
        }
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("").is_err() && parse_duration("5").is_err());
    }

    #[test]
    fn a_readable_file_with_secrets_is_flagged() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        std::fs::write(&path, "pg_password = 'hunter2'\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let args = SettingArgs {
            config: Some(path.clone()),
            ..Default::default()
        };
        let (_, file, warnings) = load_file(&args).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(!warnings[0].contains("hunter2"));
        let s = resolve(&args, Some(path.clone()), file).unwrap();
        assert!(
            !format!("{s:?}").contains("hunter2"),
            "secrets never reach Debug output"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_file(&args).unwrap().2.is_empty());
        let missing = SettingArgs {
            config: Some(dir.path().join("nope.toml")),
            ..Default::default()
        };
        assert!(
            load_file(&missing).is_err(),
            "a named config file must exist"
        );
    }
}
