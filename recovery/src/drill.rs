//! The decisions of a restore drill (`tidemark drill`), pure: no IO, no clock, no
//! processes here (the agent starts the scratch server, talks to it, and cleans up).
//!
//! - [`overrides`]: the settings written into the scratch cluster's `postgresql.auto.conf`
//!   so that it can never touch the outside: its own port on loopback, its own socket
//!   folder and authentication file, no archiving, no replication, no external pid file,
//!   no sync standby to wait for, no preload library the binaries lack (see
//!   [`filter_libraries`]); [`override_block`] renders them.
//! - [`split_statements`]: the user's checks file cut into statements (quotes, comments
//!   and dollar quotes respected; `\c DB` lines switch databases), and [`evaluate_check`]:
//!   each must return exactly one row of one column that is `true`.
//! - [`compare_recovery_point`]: where the server says replay stopped against where the
//!   plan said it would, by PostgreSQL's stop rules; a drill that stops elsewhere fails.
//! - [`phases`]: the recovery time split in phases, from the moments each ended.
//! - [`age_warning`]: the warning `info` gives when the last passing drill is too old
//!   (`now` is an argument).

use std::time::Duration;

use chrono::{DateTime, Utc};
use tidemark_pg::Lsn;

use crate::autoconf::pg_quote;
use crate::plan::Target;

/// The longest path a unix socket can have (`sun_path` is 108 bytes on Linux, with the
/// terminating NUL).
pub const SOCKET_PATH_MAX: usize = 107;

/// Where the scratch cluster lives, and what it may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scratch {
    /// The PostgreSQL major of the binaries (some settings exist only in some majors).
    pub major: u32,
    /// The TCP port (on 127.0.0.1), found free when the drill started; also names the
    /// socket file.
    pub port: u16,
    /// The socket folder (the scratch folder itself, owned by the drill's user, 0700).
    pub socket_dir: String,
    /// The drill's own `pg_hba.conf`: local connections only (see [`HBA_FILE`]).
    pub hba_file: String,
    /// The drill's own (empty) `pg_ident.conf`.
    pub ident_file: String,
    /// `shared_preload_libraries` as it will be written (see [`filter_libraries`]).
    pub shared_preload_libraries: Vec<String>,
    /// `session_preload_libraries`, filtered the same way.
    pub session_preload_libraries: Vec<String>,
    /// `local_preload_libraries`, filtered the same way.
    pub local_preload_libraries: Vec<String>,
}

/// The drill's `pg_hba.conf`: every local (unix socket) connection trusted, nothing else.
/// The socket folder is the scratch folder, which only the drill's user can enter, so
/// nobody else can connect; TCP connections (the loopback port) match no line and are
/// refused.
pub const HBA_FILE: &str =
    "# tidemark drill: unix socket connections only, in a folder only the drill's user can enter\n\
local all all trust\n";

/// Preload libraries that act on the outside by themselves once loaded (job schedulers
/// that run queries which may reach other hosts, logical replication that connects to
/// its providers): never loaded in a scratch cluster, even when the binaries have them.
pub const OUTSIDE_ACTORS: [&str; 5] = ["pg_cron", "pglogical", "pg_partman_bgw", "bdr", "pgactive"];

/// The settings that keep the scratch cluster to itself, in the order they are written,
/// with their values unquoted. Each has a reason (docs/recovery.md, "What a drill
/// overrides, and why"): a production configuration carries all of these, and a scratch
/// copy that kept any of them could bind the production port, archive into the
/// production stanza, overwrite the production pid file, connect to a primary, start a
/// subscription's apply worker, or wait forever for a sync standby.
pub fn overrides(s: &Scratch) -> Vec<(String, String)> {
    let mut out: Vec<(&str, String)> = vec![
        // Its own port on loopback, its own socket folder, its own authentication.
        ("listen_addresses", "127.0.0.1".into()),
        ("port", s.port.to_string()),
        ("unix_socket_directories", s.socket_dir.clone()),
        ("unix_socket_group", String::new()),
        ("unix_socket_permissions", "0700".into()),
        ("hba_file", s.hba_file.clone()),
        ("ident_file", s.ident_file.clone()),
        ("ssl", "off".into()),
        ("bonjour", "off".into()),
        ("cluster_name", "tidemark-drill".into()),
        ("external_pid_file", String::new()),
        // Nothing leaves through archiving (restore writes archive_mode = off already;
        // the command is emptied too, in case a later line turns archiving on).
        ("archive_mode", "off".into()),
        ("archive_command", String::new()),
        // Never a standby of anything, never a subscriber that connects out.
        ("primary_conninfo", String::new()),
        ("primary_slot_name", String::new()),
        ("max_logical_replication_workers", "0".into()),
        ("recovery_end_command", String::new()),
        ("archive_cleanup_command", String::new()),
        ("recovery_min_apply_delay", "0".into()),
        // Connections during recovery (the drill reads where replay stopped), and a
        // write after the promotion that cannot hang on a standby or be refused.
        ("hot_standby", "on".into()),
        ("synchronous_standby_names", String::new()),
        ("default_transaction_read_only", "off".into()),
        // Logs go to the scratch folder's server.log (stderr), never to the production
        // log folder or syslog.
        ("logging_collector", "off".into()),
        ("log_destination", "stderr".into()),
        // A modest footprint beside a production server on the same host (the settings
        // hot standby checks against the primary's are left as they are).
        ("shared_buffers", "128MB".into()),
        ("huge_pages", "try".into()),
        (
            "shared_preload_libraries",
            s.shared_preload_libraries.join(","),
        ),
        (
            "session_preload_libraries",
            s.session_preload_libraries.join(","),
        ),
        (
            "local_preload_libraries",
            s.local_preload_libraries.join(","),
        ),
    ];
    if s.major >= 15 {
        out.push(("archive_library", String::new()));
    }
    if s.major <= 14 {
        // A shared folder such as /var/run/postgresql/15-main.pg_stat_tmp would be the
        // production server's: the default is inside the data directory.
        out.push(("stats_temp_directory", "pg_stat_tmp".into()));
    }
    if s.major <= 15 {
        out.push(("promote_trigger_file", String::new()));
    }
    out.into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

/// The block appended to the scratch cluster's `postgresql.auto.conf` (after restore's
/// own block: later lines win).
pub fn override_block(settings: &[(String, String)]) -> String {
    let mut out = String::from(
        "# tidemark drill: this is a scratch copy; these keep it to itself (docs/recovery.md)\n",
    );
    for (name, value) in settings {
        out.push_str(&format!("{name} = {}\n", pg_quote(value)));
    }
    out
}

/// A preload-library setting (`'a, "b", $libdir/c'`) split into names; the kept ones are
/// those `available` says the binaries have and that are not [`OUTSIDE_ACTORS`]. Returns
/// (kept, dropped).
pub fn filter_libraries(
    value: &str,
    available: impl Fn(&str) -> bool,
) -> (Vec<String>, Vec<String>) {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for item in value.split(',') {
        let name = item.trim().trim_matches('"').trim();
        if name.is_empty() {
            continue;
        }
        let base = library_base(name);
        if OUTSIDE_ACTORS.contains(&base) || !available(name) {
            dropped.push(name.to_string());
        } else {
            kept.push(name.to_string());
        }
    }
    (kept, dropped)
}

/// `pg_cron` for `$libdir/pg_cron.so`, `/opt/x/pg_cron.so` or `pg_cron`.
pub fn library_base(name: &str) -> &str {
    let file = name.rsplit('/').next().unwrap_or(name);
    file.strip_suffix(".so").unwrap_or(file)
}

/// Whether `dir/.s.PGSQL.<port>` fits in a unix socket address.
pub fn socket_path_fits(dir: &str, port: u16) -> Result<(), String> {
    let path = format!("{dir}/.s.PGSQL.{port}");
    if path.len() > SOCKET_PATH_MAX {
        return Err(format!(
            "the scratch server's socket {path} is {} bytes, longer than a unix socket path can be ({SOCKET_PATH_MAX}): set drill_path to a shorter folder",
            path.len()
        ));
    }
    Ok(())
}

/// One statement of a checks file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    /// Its number in the file (from 1), as the drill names it.
    pub number: usize,
    /// The line it starts on.
    pub line: usize,
    /// The database it runs in (`None`: the default, until a `\c` line).
    pub database: Option<String>,
    /// The SQL, without the final `;`.
    pub sql: String,
}

/// Cuts a checks file into statements at the `;` that are outside quotes (`'…'` with
/// `''`, `E'…'` with backslash escapes, `"…"`), comments (`--`, nested `/* */`) and
/// dollar quotes (`$tag$…$tag$`). A line `\c DB` or `\connect DB` (psql's spelling)
/// between statements makes the ones after it run in database DB. Empty statements are
/// skipped. Fails on an unterminated quote or comment, naming the line it starts on.
pub fn split_statements(text: &str) -> Result<Vec<Statement>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut database: Option<String> = None;
    let mut current = String::new();
    let mut start_line = 1;
    let mut has_code = false;
    let mut line = 1;
    let mut i = 0;
    let push = |current: &mut String,
                out: &mut Vec<Statement>,
                database: &Option<String>,
                start: usize| {
        let sql = current.trim();
        if !sql.is_empty() && !only_comments(sql) {
            out.push(Statement {
                number: out.len() + 1,
                line: start,
                database: database.clone(),
                sql: sql.to_string(),
            });
        }
        current.clear();
    };
    while i < bytes.len() {
        let c = bytes[i];
        // A meta-command line, only where no statement has begun.
        if c == b'\\' && current.trim().is_empty() && at_line_start(bytes, i) {
            let end = bytes[i..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |p| i + p);
            let command = &text[i..end];
            let mut words = command.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("\\c" | "\\connect"), Some(db), None) => {
                    database = Some(db.trim_matches('"').to_string());
                }
                _ => {
                    return Err(format!(
                        "line {line}: {command:?}: the only meta-command a checks file may hold is \\c DATABASE"
                    ))
                }
            }
            current.clear();
            i = end;
            continue;
        }
        // A statement starts on the line of its first token, not of a comment before it.
        let comment = (c == b'-' && bytes.get(i + 1) == Some(&b'-'))
            || (c == b'/' && bytes.get(i + 1) == Some(&b'*'));
        if !has_code && !c.is_ascii_whitespace() && !comment && c != b';' {
            start_line = line;
            has_code = true;
        }
        match c {
            b'\n' => {
                line += 1;
                current.push('\n');
                i += 1;
            }
            b';' => {
                push(&mut current, &mut out, &database, start_line);
                has_code = false;
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                let end = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |p| i + p);
                current.push_str(&text[i..end]);
                i = end;
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                let opened = line;
                let mut depth = 0usize;
                let mut j = i;
                loop {
                    if j + 1 >= bytes.len() {
                        return Err(format!("line {opened}: a /* comment is never closed"));
                    }
                    if bytes[j] == b'/' && bytes[j + 1] == b'*' {
                        depth += 1;
                        j += 2;
                    } else if bytes[j] == b'*' && bytes[j + 1] == b'/' {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if bytes[j] == b'\n' {
                            line += 1;
                        }
                        j += 1;
                    }
                }
                current.push_str(&text[i..j]);
                i = j;
            }
            b'\'' | b'"' => {
                let escapes = c == b'\''
                    && i > 0
                    && matches!(bytes[i - 1], b'E' | b'e')
                    && (i < 2 || !(bytes[i - 2].is_ascii_alphanumeric() || bytes[i - 2] == b'_'));
                let opened = line;
                let mut j = i + 1;
                loop {
                    match bytes.get(j) {
                        None => {
                            return Err(format!(
                                "line {opened}: a {} quote is never closed",
                                if c == b'"' { "double" } else { "single" }
                            ))
                        }
                        Some(b'\\') if escapes => j += 2,
                        Some(&b) if b == c => {
                            if bytes.get(j + 1) == Some(&c) {
                                j += 2;
                            } else {
                                j += 1;
                                break;
                            }
                        }
                        Some(b'\n') => {
                            line += 1;
                            j += 1;
                        }
                        Some(_) => j += 1,
                    }
                }
                let j = j.min(bytes.len());
                current.push_str(&text[i..j]);
                i = j;
            }
            b'$' if dollar_tag(bytes, i).is_some() => {
                let tag_len = dollar_tag(bytes, i).expect("checked");
                let tag = &text[i..i + tag_len];
                let opened = line;
                let body_start = i + tag_len;
                let Some(close) = text[body_start..].find(tag) else {
                    return Err(format!(
                        "line {opened}: the dollar quote {tag} is never closed"
                    ));
                };
                let end = body_start + close + tag_len;
                line += text[i..end].matches('\n').count();
                current.push_str(&text[i..end]);
                i = end;
            }
            _ => {
                let ch = text[i..].chars().next().expect("in bounds");
                current.push(ch);
                i += ch.len_utf8();
            }
        }
    }
    push(&mut current, &mut out, &database, start_line);
    Ok(out)
}

/// Whether `sql` holds nothing but `--` comments.
fn only_comments(sql: &str) -> bool {
    sql.lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
}

fn at_line_start(bytes: &[u8], i: usize) -> bool {
    bytes[..i]
        .iter()
        .rev()
        .take_while(|&&b| b != b'\n')
        .all(|b| b.is_ascii_whitespace())
}

/// The length of a dollar-quote opening tag at `i` (`$$`, `$tag$`), if one starts there
/// (not a positional parameter such as `$1`, not inside an identifier).
fn dollar_tag(bytes: &[u8], i: usize) -> Option<usize> {
    if i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_') {
        return None;
    }
    let mut j = i + 1;
    while let Some(&b) = bytes.get(j) {
        if b == b'$' {
            return Some(j - i + 1);
        }
        let ok = b.is_ascii_alphabetic() || b == b'_' || (j > i + 1 && b.is_ascii_digit());
        if !ok {
            return None;
        }
        j += 1;
    }
    None
}

/// What one check statement gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Rows (each a list of column values as text, `None` for NULL), from the last
    /// statement that returned rows; `columns` is their count.
    Rows {
        /// How many columns the result has.
        columns: usize,
        /// The rows.
        rows: Vec<Vec<Option<String>>>,
    },
    /// A statement that returns no rows at all (`CREATE …`).
    NoResult,
    /// The server's error.
    Error(String),
}

/// Whether a check passed: exactly one row of one column whose value is `true` (`t` in
/// PostgreSQL's text form). Otherwise what it returned, in words.
pub fn evaluate_check(outcome: &CheckOutcome) -> Result<(), String> {
    match outcome {
        CheckOutcome::Error(e) => Err(format!("failed: {e}")),
        CheckOutcome::NoResult => {
            Err("returned no result (a check must be a query returning one true)".into())
        }
        CheckOutcome::Rows { columns, rows } => {
            if *columns != 1 {
                return Err(format!("returned {columns} columns, not one"));
            }
            match rows.as_slice() {
                [] => Err("returned no rows".into()),
                [row] => match row.first() {
                    Some(Some(v)) if v == "t" => Ok(()),
                    Some(Some(v)) => Err(format!("returned {}", shorten(v))),
                    _ => Err("returned NULL".into()),
                },
                more => Err(format!("returned {} rows, not one", more.len())),
            }
        }
    }
}

/// A value cut to 200 characters, for a one-line message.
fn shorten(v: &str) -> String {
    let one_line = v.replace('\n', " ");
    if one_line.chars().count() > 200 {
        format!("{:?}…", one_line.chars().take(200).collect::<String>())
    } else {
        format!("{one_line:?}")
            .replace("\"t\"", "t")
            .replace("\"f\"", "f")
    }
}

/// Where the plan says replay stops.
#[derive(Clone, Debug, PartialEq)]
pub struct ExpectedStop {
    /// The target.
    pub target: Target,
    /// The stop record's start (for `latest`: the end of the archived WAL), when known.
    pub stop_lsn: Option<Lsn>,
    /// The stop record's time, when it has one and the plan knows it.
    pub stop_time: Option<DateTime<Utc>>,
    /// The backup's consistent point.
    pub consistent_lsn: Lsn,
}

/// Where the server says replay stopped (read before the promotion).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reached {
    /// `pg_last_xact_replay_timestamp()`.
    pub last_commit_time: Option<DateTime<Utc>>,
    /// `pg_last_wal_replay_lsn()`: the end of the last record replayed.
    pub replay_lsn: Lsn,
}

/// The most bytes between the end of one record and the start of the next: alignment
/// (8) and a long page header (40) when the next one starts a page.
const NEXT_RECORD_SLACK: u64 = 8 + 40;

/// The most bytes a restore point record takes (header, name, page headers crossed).
const RESTORE_POINT_SPAN: u64 = 1024;

/// Compares where the server stopped with the plan, by PostgreSQL's stop rules
/// (xlogrecovery.c): replay that stops *before* a record has replayed up to the record
/// before it (the server's replay LSN is then just short of the stop record's start);
/// replay that stops *after* a record has replayed it (its end lies past its start), and
/// for a commit its time is the last one replayed. Ok: what matched, in words; Err: how
/// it differs.
pub fn compare_recovery_point(
    expected: &ExpectedStop,
    reached: &Reached,
) -> Result<String, String> {
    let end = reached.replay_lsn;
    let commit = reached.last_commit_time;
    let commit_text = || match commit {
        Some(t) => format!(
            "last commit replayed at {}",
            t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        ),
        None => "no commit replayed".to_string(),
    };
    // Stopped right before the record at `stop` (replay's end within alignment and a
    // page header of its start).
    let just_before = |stop: Lsn| -> Result<(), String> {
        if end.0 <= stop.0 && stop.0 <= end.0 + NEXT_RECORD_SLACK {
            Ok(())
        } else {
            Err(format!(
                "replay ended at {end}, the plan stops right before the record at {stop}"
            ))
        }
    };
    match &expected.target {
        Target::Time { at, exclusive } => {
            if let Some(t) = commit {
                let past = if *exclusive { t >= *at } else { t > *at };
                if past {
                    return Err(format!(
                        "{}, {} the target {}",
                        commit_text(),
                        if *exclusive { "at or after" } else { "after" },
                        at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                    ));
                }
            }
            if let Some(stop) = expected.stop_lsn {
                just_before(stop)?;
            }
            Ok(format!(
                "{} ({end}), before the plan's stop record",
                commit_text()
            ))
        }
        Target::Xid {
            exclusive: false, ..
        }
        | Target::Name(_)
        | Target::Lsn {
            exclusive: false, ..
        } => {
            // Stopped after the stop record: replayed it.
            if let Some(stop) = expected.stop_lsn {
                if end <= stop {
                    return Err(format!(
                        "replay ended at {end}, before the plan's stop record at {stop} was replayed"
                    ));
                }
                if matches!(expected.target, Target::Name(_)) && end.0 > stop.0 + RESTORE_POINT_SPAN
                {
                    return Err(format!(
                        "replay ended at {end}, well past the restore point at {stop}"
                    ));
                }
            }
            if let Target::Lsn { lsn, .. } = &expected.target {
                if end <= *lsn {
                    return Err(format!("replay ended at {end}, not past the target {lsn}"));
                }
            }
            match (&expected.target, expected.stop_time, commit) {
                (Target::Xid { .. }, Some(want), got) if got != Some(want) => Err(format!(
                    "{}, the plan's stop commit is at {}",
                    commit_text(),
                    want.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                )),
                (Target::Name(_), Some(rp), Some(got)) if got > rp => Err(format!(
                    "{}, after the restore point's time {}",
                    commit_text(),
                    rp.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                )),
                _ => Ok(format!(
                    "{} ({end}), the plan's stop record replayed",
                    commit_text()
                )),
            }
        }
        Target::Xid {
            exclusive: true, ..
        }
        | Target::Lsn {
            exclusive: true, ..
        } => {
            if let Some(stop) = expected.stop_lsn {
                just_before(stop)?;
            }
            if let Target::Lsn { lsn, .. } = &expected.target {
                if end > *lsn {
                    return Err(format!("replay ended at {end}, past the target {lsn}"));
                }
            }
            Ok(format!(
                "{} ({end}), right before the plan's stop record",
                commit_text()
            ))
        }
        Target::Immediate => {
            if end < expected.consistent_lsn {
                Err(format!(
                    "replay ended at {end}, before the backup's consistent point {}",
                    expected.consistent_lsn
                ))
            } else {
                Ok(format!(
                    "{} ({end}), at the backup's consistent point",
                    commit_text()
                ))
            }
        }
        Target::Latest => match expected.stop_lsn {
            Some(stop) if end < stop => Err(format!(
                "replay ended at {end}, before the end of the archived WAL the plan found ({stop})"
            )),
            _ => Ok(format!(
                "{} ({end}), the end of the archived WAL",
                commit_text()
            )),
        },
    }
}

/// One phase of the recovery time.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    /// Its name.
    pub name: String,
    /// How long it took.
    pub seconds: f64,
}

/// The phases from the moments each ended, measured from the drill's start (in order;
/// a phase that did not end is absent): each phase is the time since the previous one
/// ended. Returns them and their sum, the recovery time, when `complete` (every phase
/// ended).
pub fn phases(ends: &[(&str, Duration)], complete: bool) -> (Vec<Phase>, Option<f64>) {
    let mut out = Vec::with_capacity(ends.len());
    let mut previous = Duration::ZERO;
    for (name, end) in ends {
        let end = (*end).max(previous);
        out.push(Phase {
            name: name.to_string(),
            seconds: (end - previous).as_secs_f64(),
        });
        previous = end;
    }
    let total = complete.then_some(previous.as_secs_f64());
    (out, total)
}

/// The warning `info` gives about drills, if any: none ever passed, or the last one
/// that passed is older than `max_age` at `now`.
pub fn age_warning(
    last_passed: Option<DateTime<Utc>>,
    drills: usize,
    now: DateTime<Utc>,
    max_age: Duration,
) -> Option<String> {
    let days = |d: Duration| d.as_secs_f64() / 86_400.0;
    match last_passed {
        None if drills == 0 => Some(
            "no restore drill on record: run `tidemark drill` to prove a backup restores".into(),
        ),
        None => Some(format!(
            "none of the {drills} restore drill(s) on record passed: a restore is not proven"
        )),
        Some(at) => {
            let age = (now - at).to_std().unwrap_or(Duration::ZERO);
            (age > max_age).then(|| {
                format!(
                    "the last passing restore drill is {:.1} days old (drill_max_age is {:.0} days): run `tidemark drill`",
                    days(age),
                    days(max_age)
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(major: u32) -> Scratch {
        Scratch {
            major,
            port: 54321,
            socket_dir: "/tmp/d".into(),
            hba_file: "/tmp/d/hba.conf".into(),
            ident_file: "/tmp/d/ident.conf".into(),
            shared_preload_libraries: vec!["pg_stat_statements".into()],
            session_preload_libraries: vec![],
            local_preload_libraries: vec![],
        }
    }

    #[test]
    fn the_overrides_keep_the_scratch_cluster_to_itself() {
        let list = overrides(&scratch(15));
        let get = |name: &str| {
            list.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{name} is not overridden"))
        };
        assert_eq!(get("port"), "54321");
        assert_eq!(get("listen_addresses"), "127.0.0.1");
        assert_eq!(get("unix_socket_directories"), "/tmp/d");
        assert_eq!(get("hba_file"), "/tmp/d/hba.conf");
        assert_eq!(get("archive_mode"), "off");
        assert_eq!(get("archive_command"), "");
        assert_eq!(get("archive_library"), "");
        assert_eq!(get("primary_conninfo"), "");
        assert_eq!(get("max_logical_replication_workers"), "0");
        assert_eq!(get("external_pid_file"), "");
        assert_eq!(get("synchronous_standby_names"), "");
        assert_eq!(get("hot_standby"), "on");
        assert_eq!(get("shared_preload_libraries"), "pg_stat_statements");
        assert_eq!(get("promote_trigger_file"), "");
        // Names are written once each.
        let mut names: Vec<&str> = list.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before);
        // Settings a major does not know would stop its server at start.
        let names = |major| -> Vec<String> {
            overrides(&scratch(major))
                .into_iter()
                .map(|(n, _)| n)
                .collect()
        };
        assert!(!names(13).contains(&"archive_library".to_string()));
        assert!(names(14).contains(&"stats_temp_directory".to_string()));
        assert!(!names(15).contains(&"stats_temp_directory".to_string()));
        assert!(!names(16).contains(&"promote_trigger_file".to_string()));
        let block = override_block(&overrides(&scratch(16)));
        assert!(block.starts_with("# tidemark drill"), "{block}");
        assert!(block.contains("\nport = '54321'\n"), "{block}");
        assert!(block.contains("\narchive_command = ''\n"), "{block}");
    }

    #[test]
    fn preload_libraries_the_binaries_lack_or_that_act_outside_are_dropped() {
        let have = |name: &str| {
            ["pg_stat_statements", "pg_cron", "auto_explain"].contains(&library_base(name))
        };
        let (kept, dropped) = filter_libraries(
            "pg_stat_statements, \"$libdir/auto_explain\" ,timescaledb, pg_cron,",
            have,
        );
        assert_eq!(kept, ["pg_stat_statements", "$libdir/auto_explain"]);
        assert_eq!(dropped, ["timescaledb", "pg_cron"]);
        assert_eq!(filter_libraries("", have), (vec![], vec![]));
        assert_eq!(library_base("/opt/lib/pg_cron.so"), "pg_cron");
    }

    #[test]
    fn long_socket_paths_are_refused_before_anything_starts() {
        assert!(
            socket_path_fits("/tmp/tidemark-drill-main-20261206T101500Z-3fa9c2d1", 54321).is_ok()
        );
        let long = format!("/{}", "x".repeat(100));
        let e = socket_path_fits(&long, 5432).unwrap_err();
        assert!(e.contains("drill_path"), "{e}");
    }

    #[test]
    fn statements_are_cut_outside_quotes_comments_and_dollar_quotes() {
        let text = "-- the orders are there\nselect count(*) > 0 from orders;\n\
                    select 'a;b' = 'a;b' and \"x;y\" is null from t;\n\
                    /* a ; comment /* nested ; */ */ select E'it\\'s;' <> '';\n\
                    \\c app\n\
                    select $$;$$ = $q$;$q$;\n\
                    select $1;  \n;;\n-- only a comment\n";
        let after_comment = split_statements("select 1; -- a note\n/* more */\nselect 2;").unwrap();
        assert_eq!(after_comment[1].line, 3, "{after_comment:?}");
        let s = split_statements(text).unwrap();
        let sqls: Vec<(&str, usize, Option<&str>)> = s
            .iter()
            .map(|s| (s.sql.as_str(), s.line, s.database.as_deref()))
            .collect();
        assert_eq!(
            sqls,
            [
                (
                    "-- the orders are there\nselect count(*) > 0 from orders",
                    2,
                    None
                ),
                ("select 'a;b' = 'a;b' and \"x;y\" is null from t", 3, None),
                (
                    "/* a ; comment /* nested ; */ */ select E'it\\'s;' <> ''",
                    4,
                    None
                ),
                ("select $$;$$ = $q$;$q$", 6, Some("app")),
                ("select $1", 7, Some("app")),
            ]
        );
        assert_eq!(
            s.iter().map(|s| s.number).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        for (bad, needle) in [
            ("select 'open;", "line 1: a single quote is never closed"),
            ("select 1;\n/* open", "line 2: a /* comment"),
            ("select $x$ open", "dollar quote $x$"),
            ("\\i other.sql\n", "only meta-command"),
        ] {
            let e = split_statements(bad).unwrap_err();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }

    #[test]
    fn a_check_passes_only_with_one_true() {
        let rows = |columns, rows: &[&[Option<&str>]]| CheckOutcome::Rows {
            columns,
            rows: rows
                .iter()
                .map(|r| r.iter().map(|v| v.map(str::to_string)).collect())
                .collect(),
        };
        assert_eq!(evaluate_check(&rows(1, &[&[Some("t")]])), Ok(()));
        let failed = |o: CheckOutcome, needle: &str| {
            let e = evaluate_check(&o).unwrap_err();
            assert!(e.contains(needle), "{e}");
        };
        failed(rows(1, &[&[Some("f")]]), "returned f");
        failed(rows(1, &[&[Some("42")]]), "returned \"42\"");
        failed(rows(1, &[&[None]]), "returned NULL");
        failed(rows(1, &[]), "returned no rows");
        failed(rows(1, &[&[Some("t")], &[Some("t")]]), "returned 2 rows");
        failed(rows(2, &[&[Some("t"), Some("t")]]), "returned 2 columns");
        failed(CheckOutcome::NoResult, "no result");
        failed(
            CheckOutcome::Error("relation \"x\" does not exist".into()),
            "failed: relation",
        );
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn expect(target: Target, stop_lsn: Option<u64>, stop_time: Option<&str>) -> ExpectedStop {
        ExpectedStop {
            target,
            stop_lsn: stop_lsn.map(Lsn),
            stop_time: stop_time.map(at),
            consistent_lsn: Lsn(0x200_0100),
        }
    }

    fn reached(lsn: u64, commit: Option<&str>) -> Reached {
        Reached {
            last_commit_time: commit.map(at),
            replay_lsn: Lsn(lsn),
        }
    }

    #[test]
    fn a_time_target_stops_right_before_the_first_commit_past_it() {
        let e = expect(
            Target::Time {
                at: at("2026-11-21T10:00:05Z"),
                exclusive: false,
            },
            Some(0x300_1000),
            Some("2026-11-21T10:00:06Z"),
        );
        // Replay ended at the end of the record just before the stop record.
        assert!(
            compare_recovery_point(&e, &reached(0x300_0FFA, Some("2026-11-21T10:00:04Z"))).is_ok()
        );
        assert!(
            compare_recovery_point(&e, &reached(0x300_1000, Some("2026-11-21T10:00:05Z"))).is_ok()
        );
        // Stopped early (a commit before the stop record was not replayed).
        let early = compare_recovery_point(&e, &reached(0x300_0800, Some("2026-11-21T10:00:04Z")))
            .unwrap_err();
        assert!(
            early.contains("right before the record at 0/3001000"),
            "{early}"
        );
        // Replayed the stop record, or a commit past the target.
        assert!(
            compare_recovery_point(&e, &reached(0x300_1050, Some("2026-11-21T10:00:04Z"))).is_err()
        );
        let late = compare_recovery_point(&e, &reached(0x300_0FFA, Some("2026-11-21T10:00:06Z")))
            .unwrap_err();
        assert!(late.contains("after the target"), "{late}");
        // Exclusive: a commit at the target itself is past it.
        let ex = expect(
            Target::Time {
                at: at("2026-11-21T10:00:05Z"),
                exclusive: true,
            },
            None,
            None,
        );
        assert!(
            compare_recovery_point(&ex, &reached(0x300_1000, Some("2026-11-21T10:00:05Z")))
                .is_err()
        );
        assert!(
            compare_recovery_point(&ex, &reached(0x300_1000, Some("2026-11-21T10:00:04.9Z")))
                .is_ok()
        );
    }

    #[test]
    fn xid_name_lsn_immediate_and_latest_follow_their_rules() {
        let xid = expect(
            Target::Xid {
                xid: 745,
                exclusive: false,
            },
            Some(0x300_1000),
            Some("2026-11-21T10:00:06Z"),
        );
        assert!(
            compare_recovery_point(&xid, &reached(0x300_1030, Some("2026-11-21T10:00:06Z")))
                .is_ok()
        );
        assert!(
            compare_recovery_point(&xid, &reached(0x300_0FF0, Some("2026-11-21T10:00:05Z")))
                .is_err()
        );
        assert!(
            compare_recovery_point(&xid, &reached(0x300_1030, Some("2026-11-21T10:00:07Z")))
                .is_err()
        );
        let xid_ex = expect(
            Target::Xid {
                xid: 745,
                exclusive: true,
            },
            Some(0x300_1000),
            None,
        );
        assert!(compare_recovery_point(&xid_ex, &reached(0x300_0FF8, None)).is_ok());
        assert!(compare_recovery_point(&xid_ex, &reached(0x300_1030, None)).is_err());

        let name = expect(
            Target::Name("before".into()),
            Some(0x300_1000),
            Some("2026-11-21T10:00:06Z"),
        );
        assert!(
            compare_recovery_point(&name, &reached(0x300_1060, Some("2026-11-21T10:00:05Z")))
                .is_ok()
        );
        assert!(
            compare_recovery_point(&name, &reached(0x300_1000, Some("2026-11-21T10:00:05Z")))
                .is_err()
        );
        assert!(
            compare_recovery_point(&name, &reached(0x310_0000, Some("2026-11-21T10:00:05Z")))
                .is_err()
        );

        let lsn = expect(
            Target::Lsn {
                lsn: Lsn(0x300_0F00),
                exclusive: false,
            },
            Some(0x300_1000),
            None,
        );
        assert!(compare_recovery_point(&lsn, &reached(0x300_1040, None)).is_ok());
        assert!(compare_recovery_point(&lsn, &reached(0x300_0E00, None)).is_err());

        let immediate = expect(Target::Immediate, None, None);
        assert!(compare_recovery_point(&immediate, &reached(0x200_0100, None)).is_ok());
        assert!(compare_recovery_point(&immediate, &reached(0x200_00F0, None)).is_err());

        let latest = expect(Target::Latest, Some(0x500_0000), None);
        assert!(compare_recovery_point(&latest, &reached(0x500_0000, None)).is_ok());
        let short = compare_recovery_point(&latest, &reached(0x4FF_0000, None)).unwrap_err();
        assert!(
            short.contains("before the end of the archived WAL"),
            "{short}"
        );
    }

    #[test]
    fn phases_are_the_time_between_their_ends() {
        let ends = [
            ("plan", Duration::from_millis(500)),
            ("files restored", Duration::from_millis(2_000)),
            ("WAL replayed to the target", Duration::from_millis(5_250)),
            ("accepting writes", Duration::from_millis(5_500)),
        ];
        let (list, total) = phases(&ends, true);
        let seconds: Vec<f64> = list.iter().map(|p| p.seconds).collect();
        assert_eq!(seconds, [0.5, 1.5, 3.25, 0.25]);
        assert_eq!(total, Some(5.5));
        // A drill that stopped before the end: the phases it finished, no total.
        let (list, total) = phases(&ends[..2], false);
        assert_eq!(list.len(), 2);
        assert_eq!(total, None);
    }

    #[test]
    fn an_old_or_missing_passing_drill_is_warned_about() {
        let now = at("2026-12-10T12:00:00Z");
        let week = Duration::from_secs(7 * 86_400);
        assert!(age_warning(Some(at("2026-12-04T12:00:00Z")), 3, now, week).is_none());
        let old = age_warning(Some(at("2026-12-01T12:00:00Z")), 3, now, week).unwrap();
        assert!(
            old.contains("9.0 days old (drill_max_age is 7 days)"),
            "{old}"
        );
        assert!(age_warning(None, 0, now, week)
            .unwrap()
            .contains("no restore drill"));
        assert!(age_warning(None, 2, now, week)
            .unwrap()
            .contains("none of the 2"));
    }
}
