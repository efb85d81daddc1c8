//! The recovery settings a restore appends to `postgresql.auto.conf`, the earlier ones it
//! comments out there ([`without_recovery_settings`]), and the quoting they need. Pure:
//! no IO here ([`crate::restore`] writes the result).
//!
//! Two layers of quoting meet in `restore_command`:
//!
//! - PostgreSQL runs the command through `/bin/sh` after replacing `%f`, `%p`, `%r` and
//!   `%%`: each argument is shell-quoted ([`shell_quote`]) and a literal `%` is written
//!   `%%` ([`restore_command`]);
//! - the setting is a string in the configuration file's syntax, where a single quote is
//!   doubled and a backslash starts an escape ([`pg_quote`], as `ALTER SYSTEM` writes it).

use chrono::{DateTime, SecondsFormat, Utc};

/// Quotes `value` as a string of PostgreSQL's configuration files: single quotes and
/// backslashes are doubled (as `ALTER SYSTEM` does), line breaks written as escapes (a
/// string may not span lines).
pub fn pg_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Quotes one argument for `/bin/sh`: left as is when it holds only characters the shell
/// does not interpret, else in single quotes (a single quote becomes `'\''`).
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'-' | b'.' | b'/' | b':' | b',' | b'=' | b'+' | b'@' | b'%'
                )
        });
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// The `restore_command` that runs `program args… archive-get %f %p`: every argument
/// shell-quoted, and `%` doubled so that PostgreSQL leaves it alone.
pub fn restore_command<S: AsRef<str>>(program: &str, args: &[S]) -> String {
    restore_command_following::<S>(program, args, &[])
}

/// As [`restore_command`], with `get_args` (archive-get's own flags: the timeline and the
/// last segment the replay feed follows) after `archive-get`.
pub fn restore_command_following<S: AsRef<str>>(
    program: &str,
    args: &[S],
    get_args: &[S],
) -> String {
    let quoted = |a: &S| shell_quote(a.as_ref()).replace('%', "%%");
    let mut words = vec![shell_quote(program).replace('%', "%%")];
    words.extend(args.iter().map(quoted));
    words.push("archive-get".into());
    words.extend(get_args.iter().map(quoted));
    words.push("%f %p".into());
    words.join(" ")
}

/// Whether the restored cluster archives WAL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveMode {
    /// `archive_mode = off` in the block: a restored copy (a test, a look at old data)
    /// never archives into the repository, where its new timeline would be followed by
    /// every later restore (PostgreSQL's `recovery_target_timeline` is `latest`).
    #[default]
    Off,
    /// The backup's own archiving settings stay: for the restore that becomes the new
    /// primary and must go on archiving.
    Preserve,
}

/// PostgreSQL's recovery settings (the "Archive Recovery" and "Recovery Target" groups of
/// its documentation, PostgreSQL 12 to 18, and `recovery_min_apply_delay`, which archive
/// recovery honours too). Lines setting any of them in the backup's
/// `postgresql.auto.conf` (an earlier point-in-time restore, an `ALTER SYSTEM`) are
/// commented out: only the restore's own block applies. Standby settings
/// (`primary_conninfo`, `primary_slot_name`) are left: they do nothing without
/// `standby.signal`, and the restore writes `recovery.signal`.
pub const RECOVERY_SETTINGS: [&str; 12] = [
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "recovery_target",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
    "recovery_min_apply_delay",
];

/// The settings that each name a kind of recovery target. PostgreSQL refuses to start
/// when more than one is set, wherever it is set: the block sets every one it does not
/// use to `''`, so that one left in `postgresql.conf` can neither add a second target
/// nor stop recovery early.
pub const TARGET_KINDS: [&str; 5] = [
    "recovery_target",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_xid",
    "recovery_target_lsn",
];

/// The prefix of a line the restore commented out.
pub const REMOVED_PREFIX: &str = "# removed by tidemark restore: ";

/// The companions of the target kinds: written after them, in this order.
pub const TARGET_COMPANIONS: [&str; 3] = [
    "recovery_target_inclusive",
    "recovery_target_timeline",
    "recovery_target_action",
];

/// A plan's recovery target settings, checked before they are written (see
/// [`TargetSettings::new`]): every target kind once, at most one of them set, the target
/// timeline a number, the action and inclusiveness spelled as PostgreSQL reads them.
/// Values are unquoted; [`recovery_block`] quotes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSettings {
    /// `(name, value)` in the order they are written: the [`TARGET_KINDS`] set to `''`,
    /// then the one set (if any), then [`TARGET_COMPANIONS`]. The set one must come after
    /// the empty ones: PostgreSQL applies the settings in file order, and each target
    /// kind's assign hook fails with "multiple recovery targets specified" when another
    /// kind is already set, even when its own value is empty (`assign_recovery_target_*`
    /// in xlogrecovery.c, PostgreSQL 13 to 18; seen on 15: `recovery_target_xid = ''`
    /// after `recovery_target_time = '…'` stops the server at start).
    settings: Vec<(String, String)>,
}

impl TargetSettings {
    /// Checks `settings` (a plan's, in any order) and puts them in the order they are
    /// written. Refused: a name that is not a recovery target setting, a name given twice,
    /// a target kind or companion missing, two target kinds set (PostgreSQL refuses to
    /// start), a timeline that is not a number (`latest` and `current` are resolved by
    /// the planner), an unknown action, an inclusiveness other than `on`/`off`,
    /// `recovery_target` other than `immediate`. The error says which.
    pub fn new(settings: &[(String, String)]) -> Result<TargetSettings, String> {
        let known = |name: &str| TARGET_KINDS.contains(&name) || TARGET_COMPANIONS.contains(&name);
        let mut by_name: std::collections::BTreeMap<&str, &str> = Default::default();
        for (name, value) in settings {
            if !known(name) {
                return Err(format!("{name} is not a recovery target setting"));
            }
            if by_name.insert(name, value).is_some() {
                return Err(format!("{name} is given twice"));
            }
        }
        for name in TARGET_KINDS.iter().chain(TARGET_COMPANIONS.iter()) {
            if !by_name.contains_key(name) {
                return Err(format!("{name} is missing"));
            }
        }
        // The empty kinds, the set one, the companions (see `settings`).
        let empty = TARGET_KINDS.iter().filter(|k| by_name[*k].is_empty());
        let set_kind = TARGET_KINDS.iter().filter(|k| !by_name[*k].is_empty());
        let ordered: Vec<(String, String)> = empty
            .chain(set_kind)
            .chain(TARGET_COMPANIONS.iter())
            .map(|name| (name.to_string(), by_name[name].to_string()))
            .collect();
        let set: Vec<&str> = TARGET_KINDS
            .iter()
            .copied()
            .filter(|k| !by_name[k].is_empty())
            .collect();
        if set.len() > 1 {
            return Err(format!(
                "more than one recovery target is set ({}): PostgreSQL refuses to start",
                set.join(", ")
            ));
        }
        let target = by_name["recovery_target"];
        if !target.is_empty() && target != "immediate" {
            return Err(format!(
                "recovery_target = {target:?}: only 'immediate' exists"
            ));
        }
        let timeline = by_name["recovery_target_timeline"];
        if !timeline.parse::<u32>().is_ok_and(|t| t >= 1) {
            return Err(format!(
                "recovery_target_timeline = {timeline:?}: a timeline number is written, never 'latest' or 'current'"
            ));
        }
        let action = by_name["recovery_target_action"];
        if !matches!(action, "pause" | "promote" | "shutdown") {
            return Err(format!(
                "recovery_target_action = {action:?}: not pause, promote or shutdown"
            ));
        }
        let inclusive = by_name["recovery_target_inclusive"];
        if !matches!(inclusive, "on" | "off") {
            return Err(format!(
                "recovery_target_inclusive = {inclusive:?}: not on or off"
            ));
        }
        Ok(TargetSettings { settings: ordered })
    }

    /// Recovery to the end of the archived WAL on `timeline`, pausing there (no target:
    /// what a restore without a plan's target writes; tools and tests).
    pub fn end_of_archive(timeline: u32) -> TargetSettings {
        let mut settings: Vec<(String, String)> = TARGET_KINDS
            .iter()
            .map(|k| (k.to_string(), String::new()))
            .collect();
        settings.push(("recovery_target_inclusive".into(), "on".into()));
        settings.push((
            "recovery_target_timeline".into(),
            timeline.max(1).to_string(),
        ));
        settings.push(("recovery_target_action".into(), "pause".into()));
        TargetSettings { settings }
    }

    /// The settings, in the order they are written.
    pub fn settings(&self) -> &[(String, String)] {
        &self.settings
    }

    /// The one target kind set, if any: `(name, value)`.
    pub fn target(&self) -> Option<(&str, &str)> {
        self.settings
            .iter()
            .find(|(n, v)| TARGET_KINDS.contains(&n.as_str()) && !v.is_empty())
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The value of `name`, if it is one of the settings.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// As a JSON object, `{"recovery_target": "", …}`, in the order the settings are written.
impl serde::Serialize for TargetSettings {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.settings.len()))?;
        for (name, value) in &self.settings {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// The block a restore appends to `postgresql.auto.conf`: a comment naming the backup and
/// when it was restored, `restore_command`, the plan's target settings (every target kind
/// written, the unused ones as `''`, so that one left in `postgresql.conf` can neither add
/// a second target nor stop recovery elsewhere; the timeline as a number; the action and
/// inclusiveness), and `archive_mode = off` unless the archiving is kept.
pub fn recovery_block(
    backup_id: &str,
    restored_at: DateTime<Utc>,
    restore_command: &str,
    targets: &TargetSettings,
    archive: ArchiveMode,
) -> String {
    let mut block = format!(
        "# tidemark restore of backup {} ({})\nrestore_command = {}\n",
        backup_id.replace(['\n', '\r'], " "),
        restored_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        pg_quote(restore_command)
    );
    for (name, value) in targets.settings() {
        block.push_str(&format!("{name} = {}\n", pg_quote(value)));
    }
    if archive == ArchiveMode::Off {
        block.push_str("archive_mode = off\n");
    }
    block
}

/// The name a configuration line sets, if it sets one (`name = value`, `name value`;
/// not a comment, not a blank line).
fn setting_name(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(t.len());
    let name = &t[..end];
    let first = name.chars().next()?;
    (first.is_ascii_alphabetic() || first == '_').then_some(name)
}

/// `existing` (the restored `postgresql.auto.conf`) with every line that sets one of the
/// [`RECOVERY_SETTINGS`] (names compare without case, as PostgreSQL's do) commented out
/// with [`REMOVED_PREFIX`]; returns the new text and the lines commented out.
pub fn without_recovery_settings(existing: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut out = Vec::with_capacity(existing.len());
    let mut removed = Vec::new();
    for line in existing.split_inclusive(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);
        let recovery = setting_name(&text).is_some_and(|name| {
            RECOVERY_SETTINGS
                .iter()
                .any(|s| s.eq_ignore_ascii_case(name))
        });
        if recovery {
            out.extend_from_slice(REMOVED_PREFIX.as_bytes());
            removed.push(text.trim_end().to_string());
        }
        out.extend_from_slice(line);
    }
    (out, removed)
}

/// `existing` (the restored `postgresql.auto.conf`, possibly empty) with `block` appended
/// on lines of its own.
pub fn append_block(existing: &[u8], block: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(existing.len() + block.len() + 1);
    out.extend_from_slice(existing);
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(block.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_strings_double_quotes_and_backslashes() {
        assert_eq!(pg_quote("plain"), "'plain'");
        assert_eq!(pg_quote("it's"), "'it''s'");
        assert_eq!(pg_quote("a\\b"), "'a\\\\b'");
        assert_eq!(pg_quote("two\nlines"), "'two\\nlines'");
        assert_eq!(pg_quote(""), "''");
    }

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("/usr/bin/tidemark"), "/usr/bin/tidemark");
        assert_eq!(shell_quote("s3://bucket/p"), "s3://bucket/p");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn the_command_escapes_percent_and_keeps_the_placeholders() {
        let cmd = restore_command(
            "/opt/tide mark/tidemark",
            &["--repo", "file:///srv/100%", "--stanza", "main"],
        );
        assert_eq!(
            cmd,
            "'/opt/tide mark/tidemark' --repo file:///srv/100%% --stanza main archive-get %f %p"
        );
    }

    fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    /// A plan's settings for a time target, in another order than the block's.
    fn time_target() -> Vec<(String, String)> {
        settings(&[
            ("recovery_target_time", "2026-11-21 10:32:07.5+00"),
            ("recovery_target_action", "promote"),
            ("recovery_target", ""),
            ("recovery_target_lsn", ""),
            ("recovery_target_name", ""),
            ("recovery_target_xid", ""),
            ("recovery_target_timeline", "3"),
            ("recovery_target_inclusive", "off"),
        ])
    }

    #[test]
    fn the_block_writes_one_target_and_every_companion_explicitly() {
        let at = DateTime::parse_from_rfc3339("2026-11-22T00:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let targets = TargetSettings::new(&time_target()).unwrap();
        assert_eq!(
            targets.target(),
            Some(("recovery_target_time", "2026-11-21 10:32:07.5+00"))
        );
        let block = recovery_block(
            "20261121T103207Z",
            at,
            "/bin/tidemark --repo 'a b' archive-get %f %p",
            &targets,
            ArchiveMode::Off,
        );
        assert_eq!(
            block,
            "# tidemark restore of backup 20261121T103207Z (2026-11-22T00:10:00Z)\n\
             restore_command = '/bin/tidemark --repo ''a b'' archive-get %f %p'\n\
             recovery_target = ''\n\
             recovery_target_name = ''\n\
             recovery_target_xid = ''\n\
             recovery_target_lsn = ''\n\
             recovery_target_time = '2026-11-21 10:32:07.5+00'\n\
             recovery_target_inclusive = 'off'\n\
             recovery_target_timeline = '3'\n\
             recovery_target_action = 'promote'\n\
             archive_mode = off\n"
        );
        let kept = recovery_block("x", at, "c", &targets, ArchiveMode::Preserve);
        assert!(!kept.contains("archive_mode"), "{kept}");
        assert!(
            kept.ends_with("recovery_target_action = 'promote'\n"),
            "{kept}"
        );
        // A name is quoted as a configuration string.
        let mut named = time_target();
        named[0].1 = String::new();
        named[4].1 = "before 'the' migration".into();
        let block = recovery_block(
            "x",
            at,
            "c",
            &TargetSettings::new(&named).unwrap(),
            ArchiveMode::Off,
        );
        assert!(
            block.contains(
                "recovery_target_lsn = ''\nrecovery_target_name = 'before ''the'' migration'\n\
                 recovery_target_inclusive"
            ),
            "the set kind comes after every empty one: {block}"
        );
        // No target: every kind empty, the timeline still a number.
        let end = TargetSettings::end_of_archive(2);
        assert_eq!(end.target(), None);
        let block = recovery_block("x", at, "c", &end, ArchiveMode::Off);
        for kind in TARGET_KINDS {
            assert!(block.contains(&format!("\n{kind} = ''\n")), "{block}");
        }
        assert!(
            block.contains("recovery_target_timeline = '2'\n"),
            "{block}"
        );
        assert_eq!(append_block(b"", "x\n"), b"x\n");
        assert_eq!(append_block(b"a = 1", "x\n"), b"a = 1\nx\n");
        assert_eq!(append_block(b"a = 1\n", "x\n"), b"a = 1\nx\n");
    }

    #[test]
    fn settings_that_postgresql_would_misread_are_refused() {
        let with = |name: &str, value: &str| {
            let mut s = time_target();
            match s.iter_mut().find(|(n, _)| n == name) {
                Some(pair) => pair.1 = value.to_string(),
                None => s.push((name.to_string(), value.to_string())),
            }
            TargetSettings::new(&s)
        };
        let refused = |r: Result<TargetSettings, String>, needle: &str| {
            let e = r.unwrap_err();
            assert!(e.contains(needle), "{e}");
        };
        refused(
            with("recovery_target_xid", "745"),
            "more than one recovery target",
        );
        refused(
            with("recovery_target_timeline", "latest"),
            "a timeline number",
        );
        refused(with("recovery_target_timeline", "0"), "a timeline number");
        refused(
            with("recovery_target_timeline", "current"),
            "a timeline number",
        );
        refused(with("recovery_target_action", "resume"), "not pause");
        refused(with("recovery_target_inclusive", "yes"), "not on or off");
        refused(
            with("restore_command", "cp"),
            "not a recovery target setting",
        );
        refused(with("archive_mode", "off"), "not a recovery target setting");
        let mut twice = time_target();
        twice.push(("recovery_target_lsn".into(), String::new()));
        refused(
            TargetSettings::new(&twice),
            "recovery_target_lsn is given twice",
        );
        let mut missing = time_target();
        missing.retain(|(n, _)| n != "recovery_target_xid");
        refused(
            TargetSettings::new(&missing),
            "recovery_target_xid is missing",
        );
        let mut immediate = time_target();
        immediate[0].1 = String::new();
        immediate[2].1 = "soon".into();
        refused(TargetSettings::new(&immediate), "only 'immediate'");
        immediate[2].1 = "immediate".into();
        assert_eq!(
            TargetSettings::new(&immediate).unwrap().target(),
            Some(("recovery_target", "immediate"))
        );
    }

    #[test]
    fn earlier_recovery_settings_are_commented_out() {
        let before = "# Do not edit this file manually!\n\
                      work_mem = '4MB'\n\
                      recovery_target = 'immediate'\n\
                      \tRecovery_Target_Time='2026-11-21 10:00:00+00'\n\
                      restore_command 'cp /old/%f %p'\n\
                      recovery_target_timeline = '3'\n\
                      recovery_min_apply_delay = '1h'\n\
                      # recovery_target_name = 'a comment stays'\n\
                      recovery_targets_are_not_a_setting = 1\n\
                      primary_conninfo = 'host=p'\n\
                      archive_mode = 'on'";
        let (after, removed) = without_recovery_settings(before.as_bytes());
        let after = String::from_utf8(after).unwrap();
        assert_eq!(
            removed,
            [
                "recovery_target = 'immediate'",
                "\tRecovery_Target_Time='2026-11-21 10:00:00+00'",
                "restore_command 'cp /old/%f %p'",
                "recovery_target_timeline = '3'",
                "recovery_min_apply_delay = '1h'",
            ]
        );
        assert_eq!(
            after,
            "# Do not edit this file manually!\n\
             work_mem = '4MB'\n\
             # removed by tidemark restore: recovery_target = 'immediate'\n\
             # removed by tidemark restore: \tRecovery_Target_Time='2026-11-21 10:00:00+00'\n\
             # removed by tidemark restore: restore_command 'cp /old/%f %p'\n\
             # removed by tidemark restore: recovery_target_timeline = '3'\n\
             # removed by tidemark restore: recovery_min_apply_delay = '1h'\n\
             # recovery_target_name = 'a comment stays'\n\
             recovery_targets_are_not_a_setting = 1\n\
             primary_conninfo = 'host=p'\n\
             archive_mode = 'on'"
        );
        // Nothing to remove: the same bytes.
        let plain = b"a = 1\nb = 2";
        assert_eq!(without_recovery_settings(plain), (plain.to_vec(), vec![]));
    }
}
