//! The recovery settings a restore appends to `postgresql.auto.conf`, and the quoting
//! they need. Pure: no IO here ([`crate::restore`] writes the result).
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
    let mut words = vec![shell_quote(program).replace('%', "%%")];
    for a in args {
        words.push(shell_quote(a.as_ref()).replace('%', "%%"));
    }
    words.push("archive-get %f %p".into());
    words.join(" ")
}

/// The block a restore appends to `postgresql.auto.conf`: a comment naming the backup and
/// when it was restored, then `restore_command`.
pub fn recovery_block(
    backup_id: &str,
    restored_at: DateTime<Utc>,
    restore_command: &str,
) -> String {
    format!(
        "# tidemark restore of backup {} ({})\nrestore_command = {}\n",
        backup_id.replace(['\n', '\r'], " "),
        restored_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        pg_quote(restore_command)
    )
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

    #[test]
    fn the_block_is_a_comment_and_one_setting() {
        let at = DateTime::parse_from_rfc3339("2026-11-22T00:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let block = recovery_block(
            "20261121T103207Z",
            at,
            "/bin/tidemark --repo 'a b' archive-get %f %p",
        );
        assert_eq!(
            block,
            "# tidemark restore of backup 20261121T103207Z (2026-11-22T00:10:00Z)\n\
             restore_command = '/bin/tidemark --repo ''a b'' archive-get %f %p'\n"
        );
        assert_eq!(append_block(b"", "x\n"), b"x\n");
        assert_eq!(append_block(b"a = 1", "x\n"), b"a = 1\nx\n");
        assert_eq!(append_block(b"a = 1\n", "x\n"), b"a = 1\nx\n");
    }
}
