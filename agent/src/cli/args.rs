//! Command-line arguments: parsing only, no side effects.
//!
//! Every setting is a global flag (usable before or after the subcommand) that clap also
//! reads from `TIDEMARK_<NAME>`; values left unset fall back to the config file and then
//! to defaults in [`super::config`]. Flags win over the environment, which wins over the
//! file.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

/// tidemark: point-in-time recovery for PostgreSQL.
/// Archives WAL (archive-push, archive-get, spool) and base backups (backup) in a repository
/// on disk or S3, plans a recovery to a point in time and proves it reachable (plan),
/// restores a data directory to that point (restore), proves that what the repository holds
/// can be restored (verify) and that backups restore (drill), and sets up and shows the
/// repository (init, info).
///
/// (Help shows this comment's first paragraph, as written: the package description
/// describes the crate, not the tool.)
#[derive(Debug, Parser)]
#[command(
    name = "tidemark",
    version,
    long_about = None,
    propagate_version = true,
    verbatim_doc_comment
)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub settings: SettingArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Archive one WAL file (PostgreSQL's archive_command: `tidemark archive-push %p`).
    ArchivePush {
        /// Path of the WAL file, as PostgreSQL passes it (%p).
        path: PathBuf,
    },
    /// Restore one WAL file (PostgreSQL's restore_command: `tidemark archive-get %f %p`).
    ///
    /// Exit 0: restored; 1: not in the archive; 128: any other failure (PostgreSQL then
    /// stops recovery instead of ending it early).
    ArchiveGet {
        /// The WAL file name PostgreSQL asks for (%f).
        name: String,
        /// Where PostgreSQL wants it written (%p).
        dest: PathBuf,
        /// The timeline recovery follows (restore writes the plan's): segments are
        /// prefetched along its history.
        #[arg(long, value_name = "TLI")]
        timeline: Option<u32>,
        /// The last segment recovery needs (restore writes the plan's): nothing after it
        /// is prefetched.
        #[arg(long, value_name = "WALFILE")]
        until: Option<String>,
        /// Recovery goes to the end of the archive: a segment the archive lacks is served
        /// from its `.partial` file when that is the newest WAL there is.
        #[arg(long)]
        latest: bool,
        /// Internal: run as the background prefetcher of the folder DEST, from NAME on.
        #[arg(long, hide = true)]
        prefetch_worker: bool,
    },
    /// Create the repository and the stanza (or check them): the only command that does.
    ///
    /// Reads the cluster's identity by connecting to PostgreSQL, or with --offline from
    /// global/pg_control in the data directory (--pgdata), with the server up or down.
    Init {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Read the cluster's identity from <pgdata>/global/pg_control instead of
        /// connecting to the server (which may be down).
        #[arg(long)]
        offline: bool,
    },
    /// Take a base backup over the replication protocol into the repository.
    ///
    /// Needs a role with REPLICATION, a `replication` line in pg_hba.conf, and WAL
    /// archiving into the same repository (archive_command = 'tidemark archive-push %p').
    Backup(BackupArgs),
    /// Restore a backup into an empty data directory, set up to replay WAL from the
    /// repository to the target (default: the end of the archived WAL).
    ///
    /// Plans first (as `tidemark plan`): an unreachable target exits 5 and writes nothing.
    Restore(RestoreArgs),
    /// Show how a target would be reached (backup, timelines, WAL, where replay stops),
    /// or why it cannot be: reads the repository, writes nothing.
    ///
    /// Exit 0: reachable; 5: unreachable (one line on stderr names the nearest reachable
    /// points).
    Plan(PlanArgs),
    /// Prove that a backup restores: restore it into a scratch folder, start PostgreSQL
    /// there (its own loopback port and socket, archiving off), replay to the target,
    /// promote, run checks, measure the recovery time, record the result, remove
    /// everything.
    ///
    /// Exit 0: the drill passed; 6: it ran and failed (the report names the check); 5:
    /// the target is unreachable (nothing was created).
    Drill(DrillArgs),
    /// Run as the cluster's agent: backup, verify, drill and expire on their schedules
    /// (each a `tidemark` child process), the spool drained (spool_drainer = "agent"), until
    /// SIGTERM or SIGINT; SIGHUP rereads the configuration. See docs/agent.md.
    Agent,
    /// Show what the repository holds for the stanza: cluster, WAL ranges and gaps, sizes.
    Info {
        /// Print JSON (for scripts and monitoring).
        #[arg(long)]
        json: bool,
    },
    /// How far behind the repository is: the RPO (now against the newest recoverable
    /// commit in archived WAL) and its target, the WAL lag behind the server, the last
    /// backup and its age, the recovery window, verify, drills, the spool, warnings.
    /// Reads the repository and asks PostgreSQL; works with or without the agent.
    ///
    /// Exit 0: healthy; 8: a warning stands (RPO breached, backup too old, a WAL gap, …);
    /// 1: the repository cannot be read.
    Status {
        /// Print JSON (for scripts and monitoring).
        #[arg(long)]
        json: bool,
    },
    /// Build the WAL content index (what each archived segment holds, for recovery to a
    /// target) for segments archived before tidemark kept it. Resumable: a rerun skips
    /// what is done.
    Reindex {
        /// Print the result as JSON (and no progress line).
        #[arg(long)]
        json: bool,
    },
    /// Prove that the backups and WAL in the repository can be restored, without
    /// restoring them.
    ///
    /// Every blob a backup or WAL index entry names exists and hashes to its name, every
    /// backup's file list is complete, WAL is continuous per timeline from the oldest
    /// backup, the history chain has no hole. Incremental: blobs proven by an earlier run
    /// and unchanged are not read again (--full reads everything). The run is recorded in
    /// the repository.
    ///
    /// Exit 0: no problem; 4: problems found (each named); 1: the repository failed.
    Verify(VerifyArgs),
    /// Apply the retention policy: remove the backups it lets go, the WAL no kept backup
    /// and no moment of the guaranteed window needs, and the blobs nothing references
    /// any more (after a grace). Reports the recovery window that remains.
    ///
    /// Exit 0: done (or, with --dry-run, shown); 2: no retention policy is configured.
    Expire(ExpireArgs),
    /// The asynchronous-archiving spool: what waits in it, and moving it into the repository.
    Spool {
        /// What to do.
        #[command(subcommand)]
        action: SpoolAction,
    },
}

/// `tidemark spool`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum SpoolAction {
    /// Show the files waiting in the spool, their bytes, and the oldest one's age.
    Status {
        /// Print JSON (for scripts and monitoring).
        #[arg(long)]
        json: bool,
    },
    /// Move every queued file into the repository now; exit 0 once the spool is empty.
    ///
    /// Waits for a drainer already at work to finish first. Retries a failing repository
    /// for retry_timeout seconds.
    Drain {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// Run as the background drainer archive-push starts: quit at once if another
        /// drainer is at work, linger a few seconds for new files, and never give up on a
        /// failing repository.
        #[arg(long, hide = true)]
        background: bool,
        /// With --background: the agent's drainer (spool_drainer = "agent"), which never
        /// ends for an empty queue; it runs until SIGTERM.
        #[arg(long, hide = true, requires = "background")]
        follow: bool,
    },
    /// Remove one queued file the drain cannot move (after a conflict), once the
    /// repository holds its content, archived or quarantined; refused otherwise.
    Forget {
        /// The WAL file name, as `spool status` lists it.
        name: String,
    },
}

/// `tidemark backup`'s arguments.
#[derive(Debug, Args, Clone)]
pub struct BackupArgs {
    /// A label for the backup (shown by `info`, written into backup_label).
    #[arg(long, value_name = "TEXT")]
    pub label: Option<String>,
    /// fast: start with an immediate checkpoint; spread: wait for a spread one (gentler
    /// on the server, slower to start).
    #[arg(long, value_name = "MODE", default_value = "fast", value_parser = ["fast", "spread"])]
    pub checkpoint: String,
    /// Seconds to wait for the backup's WAL to reach the repository before failing.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub wal_timeout: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Record the backup even when the server reports pages whose data checksum fails
    /// (by default such a backup fails and is not recorded). The count of the server's
    /// warnings is kept in the record, and `info` shows it.
    #[arg(long)]
    pub ignore_checksum_failures: bool,
}

/// The recovery target, shared by `plan` and `restore` (see docs/recovery.md).
#[derive(Debug, Args, Clone, Default)]
#[command(
    group(ArgGroup::new("recovery-target").multiple(false)),
    next_help_heading = "Recovery target (one at most; none: the end of the archived WAL)"
)]
pub struct TargetArgs {
    /// Stop at this time: RFC 3339 or PostgreSQL's timestamptz text
    /// ('2026-11-21 10:32:07+01'); without a zone, the local zone. Replay stops before the
    /// first commit or abort after it (at or after it with --target-exclusive).
    #[arg(long, value_name = "TIME", group = "recovery-target")]
    pub target_time: Option<String>,
    /// Stop at this WAL position (X/X).
    #[arg(long, value_name = "LSN", group = "recovery-target")]
    pub target_lsn: Option<String>,
    /// Stop at the commit or abort of this transaction.
    #[arg(long, value_name = "XID", group = "recovery-target")]
    pub target_xid: Option<String>,
    /// Stop at the first restore point of this name (pg_create_restore_point).
    #[arg(long, value_name = "NAME", group = "recovery-target")]
    pub target_name: Option<String>,
    /// immediate: stop as soon as the backup is consistent; latest: replay all archived
    /// WAL (the default when no target is given).
    #[arg(long, value_name = "WHICH", value_parser = ["immediate", "latest"], group = "recovery-target")]
    pub target: Option<String>,
    /// The timeline to recover along: latest (the newest the history files lead to),
    /// current (the backup's) or a number [default: latest].
    #[arg(long, value_name = "TIMELINE")]
    pub target_timeline: Option<String>,
    /// What PostgreSQL does at the target: pause (look, then promote with
    /// pg_promote()), promote, or shutdown.
    #[arg(long, value_name = "ACTION", default_value = "pause", value_parser = ["pause", "promote", "shutdown"])]
    pub target_action: String,
    /// Stop just before the target instead of just after it (time, LSN, xid targets).
    #[arg(long)]
    pub target_exclusive: bool,
    /// The PostgreSQL binaries that will run the restored cluster: the plan warns about
    /// extensions the backup's databases use that they lack.
    #[arg(long, value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
}

/// `tidemark plan`'s arguments.
#[derive(Debug, Args, Clone)]
pub struct PlanArgs {
    /// Plan from this backup (an id `info` lists) [default: the planner's choice, the
    /// newest that can reach the target].
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// The target (last: its options are shown under their own heading).
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `tidemark restore`'s arguments (the data directory is the `--pgdata` setting).
#[derive(Debug, Args, Clone)]
pub struct RestoreArgs {
    /// The backup to restore (an id `info` lists) [default: the planner's choice, the
    /// newest that can reach the target].
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Put tablespace OID in DIR instead of its original location (repeatable).
    #[arg(long = "tablespace-map", value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,
    /// off: the restored cluster does not archive (archive_mode = off is written into
    /// postgresql.auto.conf); preserve: it keeps the backup's archiving settings (for the
    /// restore that becomes the new primary).
    #[arg(long, value_name = "MODE", default_value = "off", value_parser = ["off", "preserve"])]
    pub archive_mode: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// The target (last: its options are shown under their own heading).
    #[command(flatten)]
    pub target: TargetArgs,
}

/// `tidemark drill`'s arguments.
#[derive(Debug, Args, Clone)]
pub struct DrillArgs {
    /// The backup to restore (an id `info` lists) [default: the planner's choice, the
    /// newest that can reach the target].
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// SQL checks: each statement must return one row holding `true` (a `\c DB` line
    /// switches database; default: postgres).
    #[arg(long, value_name = "FILE.sql")]
    pub checks: Option<PathBuf>,
    /// Leave the scratch cluster running and its folder in place (the report says where,
    /// and how to stop and remove them).
    #[arg(long)]
    pub keep: bool,
    /// The operating-system user that runs the scratch server (needed when tidemark runs
    /// as root, which PostgreSQL refuses) [default: the drill_user setting].
    #[arg(long, value_name = "USER")]
    pub run_as: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// The target (last: its options are shown under their own heading). The drill
    /// pauses at the target to read where replay stopped, then promotes:
    /// --target-action must stay pause.
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Settings, as flags or `TIDEMARK_*` environment variables.
#[derive(Debug, Args, Default, Clone)]
pub struct SettingArgs {
    /// Config file (TOML). Default: /etc/tidemark/tidemark.toml when it exists.
    #[arg(long, global = true, env = "TIDEMARK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Repository URL: file:///absolute/path or s3://bucket/prefix.
    #[arg(long, global = true, env = "TIDEMARK_REPO", value_name = "URL")]
    pub repo: Option<String>,
    /// The cluster's name in the repository [default: main].
    #[arg(long, global = true, env = "TIDEMARK_STANZA", value_name = "NAME")]
    pub stanza: Option<String>,
    /// Compression of new blobs: lz4 or none [default: lz4].
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_COMPRESSION",
        value_name = "CODEC"
    )]
    pub compression: Option<String>,
    /// S3 endpoint for S3-compatible stores (http://127.0.0.1:9000).
    #[arg(long, global = true, env = "TIDEMARK_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, global = true, env = "TIDEMARK_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Path-style S3 addressing (most S3-compatible stores need it).
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_S3_PATH_STYLE",
        value_name = "BOOL"
    )]
    pub s3_path_style: Option<bool>,
    /// S3 access key id (else AWS_ACCESS_KEY_ID or the AWS profile).
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_S3_ACCESS_KEY_ID",
        value_name = "ID"
    )]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (else AWS_SECRET_ACCESS_KEY or the AWS profile).
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_S3_SECRET_ACCESS_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub s3_secret_access_key: Option<String>,
    /// PostgreSQL host or socket folder (else PGHOST).
    #[arg(long, global = true, env = "TIDEMARK_PG_HOST", value_name = "HOST")]
    pub pg_host: Option<String>,
    /// PostgreSQL port (else PGPORT, else 5432).
    #[arg(long, global = true, env = "TIDEMARK_PG_PORT", value_name = "PORT")]
    pub pg_port: Option<u16>,
    /// PostgreSQL user (else PGUSER, else the OS user).
    #[arg(long, global = true, env = "TIDEMARK_PG_USER", value_name = "USER")]
    pub pg_user: Option<String>,
    /// PostgreSQL password (else pg_password_file, PGPASSWORD, ~/.pgpass).
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_PG_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub pg_password: Option<String>,
    /// File holding the PostgreSQL password.
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_PG_PASSWORD_FILE",
        value_name = "FILE"
    )]
    pub pg_password_file: Option<PathBuf>,
    /// disable, allow, prefer, require, verify-ca or verify-full (else PGSSLMODE, else prefer).
    #[arg(long, global = true, env = "TIDEMARK_PG_SSLMODE", value_name = "MODE")]
    pub pg_sslmode: Option<String>,
    /// PEM file of the root certificates that verify the server (else PGSSLROOTCERT, else
    /// ~/.postgresql/root.crt).
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_PG_SSLROOTCERT",
        value_name = "FILE"
    )]
    pub pg_sslrootcert: Option<PathBuf>,
    /// The data directory of the cluster.
    #[arg(long, global = true, env = "TIDEMARK_PGDATA", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Seconds to keep retrying an unreachable repository before failing [default: 60].
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_RETRY_TIMEOUT",
        value_name = "SECONDS"
    )]
    pub retry_timeout: Option<u64>,
    /// error, warn, info, debug or trace [default: warn].
    #[arg(long, global = true, env = "TIDEMARK_LOG_LEVEL", value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Asynchronous archiving: archive-push returns once the file is durable in the local
    /// spool, and a background drainer moves it into the repository [default: false].
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_ARCHIVE_ASYNC",
        value_name = "BOOL"
    )]
    pub archive_async: Option<bool>,
    /// The spool folder for asynchronous archiving [default: /var/spool/tidemark].
    #[arg(long, global = true, env = "TIDEMARK_SPOOL_PATH", value_name = "DIR")]
    pub spool_path: Option<PathBuf>,
    /// The most the spool holds, in MiB; past it archive-push stores synchronously
    /// [default: 4096].
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_SPOOL_MAX_MIB",
        value_name = "MIB"
    )]
    pub spool_max_mib: Option<u64>,
    /// Where drills create their scratch folder [default: the system's temporary folder].
    #[arg(long, global = true, env = "TIDEMARK_DRILL_PATH", value_name = "DIR")]
    pub drill_path: Option<PathBuf>,
    /// The operating-system user that runs a drill's scratch server when tidemark runs
    /// as root.
    #[arg(long, global = true, env = "TIDEMARK_DRILL_USER", value_name = "USER")]
    pub drill_user: Option<String>,
    /// Days after which `info` warns that the last passing drill is too old [default: 7].
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_DRILL_MAX_AGE",
        value_name = "DAYS"
    )]
    pub drill_max_age: Option<f64>,
    /// Who drains the spool: auto (archive-push starts a background drainer), agent (the
    /// agent while it runs, else as auto) or manual (`tidemark spool drain`, from a timer or
    /// a service) [default: auto].
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_SPOOL_DRAINER",
        value_name = "MODE"
    )]
    pub spool_drainer: Option<String>,
    /// Segments archive-get keeps prefetched ahead of recovery; 0 turns prefetching off
    /// [default: 32].
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_PREFETCH_DEPTH",
        value_name = "SEGMENTS"
    )]
    pub prefetch_depth: Option<usize>,
    /// The most archive-get's prefetch folder holds, in MiB [default: 1024].
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_PREFETCH_MAX_MIB",
        value_name = "MIB"
    )]
    pub prefetch_max_mib: Option<u64>,
    /// Retention: keep the newest N backups (see docs/retention.md).
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_RETENTION_COUNT",
        value_name = "N"
    )]
    pub retention_count: Option<u32>,
    /// Retention: keep every moment of this recovery window restorable ("14d", "36h").
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_RETENTION_WINDOW",
        value_name = "DURATION"
    )]
    pub retention_window: Option<String>,
    /// Retention: the newest backup of so many days, weeks, months, years
    /// ("daily=7,weekly=4,monthly=12").
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_RETENTION_TIERS",
        value_name = "TIERS"
    )]
    pub retention_tiers: Option<String>,
    /// Retention: backups (ids or labels, comma-separated) kept forever.
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_RETENTION_FOREVER",
        value_name = "IDS"
    )]
    pub retention_forever: Option<String>,
    /// Garbage collection never removes a blob younger than this [default: 6h].
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_GC_GRACE",
        value_name = "DURATION"
    )]
    pub gc_grace: Option<String>,
    /// The recovery point objective: `status` and the agent warn when the newest
    /// recoverable commit is older than this (e.g. "1h", "15m") [default: 1h].
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_RPO_TARGET",
        value_name = "DURATION"
    )]
    pub rpo_target: Option<String>,
    /// `status` and the agent warn when the newest backup is older than this (e.g.
    /// "26h", "8d") [default: 26h].
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_BACKUP_MAX_AGE",
        value_name = "DURATION"
    )]
    pub backup_max_age: Option<String>,
    /// Where the agent serves Prometheus metrics (`GET /metrics`), `host:port`, or "off"
    /// [default: 127.0.0.1:9187]. Loopback only unless metrics_allow_remote is true.
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_METRICS_LISTEN",
        value_name = "ADDR"
    )]
    pub metrics_listen: Option<String>,
    /// Let metrics_listen be an address other hosts can reach [default: false].
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_METRICS_ALLOW_REMOTE",
        value_name = "BOOL"
    )]
    pub metrics_allow_remote: Option<bool>,
    /// The local state folder: job locks, the agent's job history
    /// [default: /var/lib/tidemark-agent].
    #[arg(long, global = true, env = "TIDEMARK_STATE_PATH", value_name = "DIR")]
    pub state_path: Option<PathBuf>,
    /// When the agent runs backups: an interval ("6h") or a cron expression ("0 2 * * *").
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_BACKUP_SCHEDULE",
        value_name = "WHEN"
    )]
    pub backup_schedule: Option<String>,
    /// When the agent runs verify (as backup_schedule).
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_VERIFY_SCHEDULE",
        value_name = "WHEN"
    )]
    pub verify_schedule: Option<String>,
    /// When the agent runs drills (as backup_schedule).
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_DRILL_SCHEDULE",
        value_name = "WHEN"
    )]
    pub drill_schedule: Option<String>,
    /// When the agent runs expire (as backup_schedule).
    #[arg(
        long,
        global = true,
        env = "TIDEMARK_EXPIRE_SCHEDULE",
        value_name = "WHEN"
    )]
    pub expire_schedule: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_before_and_after_the_subcommand() {
        let before =
            Cli::try_parse_from(["tidemark", "--repo", "file:///r", "archive-push", "p"]).unwrap();
        let after =
            Cli::try_parse_from(["tidemark", "archive-push", "p", "--repo", "file:///r"]).unwrap();
        assert_eq!(before.settings.repo.as_deref(), Some("file:///r"));
        assert_eq!(after.settings.repo.as_deref(), Some("file:///r"));
        assert!(
            Cli::try_parse_from(["tidemark", "archive-push"]).is_err(),
            "%p is required"
        );
    }

    #[test]
    fn one_target_at_most() {
        let parse = |args: &[&str]| {
            let mut all = vec!["tidemark"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all)
        };
        let Command::Plan(p) = parse(&["plan", "--target-lsn", "0/3000000"])
            .unwrap()
            .command
        else {
            panic!("not plan")
        };
        assert_eq!(p.target.target_lsn.as_deref(), Some("0/3000000"));
        assert_eq!(p.target.target_action, "pause");
        for both in [
            &["plan", "--target-lsn", "0/1", "--target-xid", "7"][..],
            &[
                "restore",
                "--target-time",
                "2026-11-21 10:00:00+00",
                "--target",
                "latest",
            ],
            &["restore", "--target-name", "a", "--target-name", "b"],
        ] {
            assert!(parse(both).is_err(), "{both:?}");
        }
        assert!(parse(&["plan", "--target", "soon"]).is_err());
        assert!(parse(&["plan", "--target-action", "resume"]).is_err());
        let Command::Restore(r) = parse(&[
            "restore",
            "--target",
            "immediate",
            "--target-timeline",
            "current",
            "--target-action",
            "promote",
        ])
        .unwrap()
        .command
        else {
            panic!("not restore")
        };
        assert_eq!(r.target.target.as_deref(), Some("immediate"));
        assert_eq!(r.target.target_timeline.as_deref(), Some("current"));
        assert_eq!(r.target.target_action, "promote");
    }
}

/// `tidemark verify`'s flags.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Verify only this backup (an id `info` lists) and the WAL it needs to become
    /// consistent.
    #[arg(long, value_name = "ID", conflicts_with = "since")]
    pub backup: Option<String>,
    /// Verify only backups started and WAL archived at or after this time (e.g.
    /// 2026-12-06 or 2026-12-06 10:00:00+00; without a zone, local time).
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Read and hash every blob, trusting no earlier run's proofs.
    #[arg(long)]
    pub full: bool,
    /// Blob reads in flight [default: 16].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Print the result as JSON (and no progress line).
    #[arg(long)]
    pub json: bool,
}

/// `tidemark expire`'s flags.
#[derive(Debug, Args, Clone)]
pub struct ExpireArgs {
    /// Print exactly what would be removed and the window that would remain; change
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON (and no progress line).
    #[arg(long)]
    pub json: bool,
}
