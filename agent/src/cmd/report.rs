//! What a command says when it succeeds.
//!
//! Every command returns a value that implements [`Report`]: it renders itself for a
//! person ([`Report::text`]) or for scripts ([`Report::json`], what `--json` prints), and
//! says which exit code it stands for ([`Report::code`]: archive-get's "not in the
//! archive" is an answer, not an error, and still exits 1). The rendering lives beside
//! each command in its module; `main` only picks the [`Format`], prints, and
//! exits. Nothing here prints.

use serde::Serialize;

use crate::exit;

/// How to render a report on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Lines for a person.
    Text,
    /// Pretty-printed JSON (`--json`).
    Json,
}

impl Format {
    /// [`Format::Json`] when the command's `--json` flag is set.
    pub fn json_if(flag: bool) -> Format {
        if flag {
            Format::Json
        } else {
            Format::Text
        }
    }
}

/// A command's result, ready to be printed.
///
/// Object safe, so that `main` handles every command's report the same way.
pub trait Report {
    /// The text for a person: whole lines, each ending in `\n`, or nothing at all.
    fn text(&self) -> String;

    /// The JSON form: pretty-printed, ending in `\n` (see [`json_lines`]), or nothing
    /// when the command has nothing to say.
    fn json(&self) -> String;

    /// The exit code this result stands for: [`exit::OK`] unless overridden.
    fn code(&self) -> u8 {
        exit::OK
    }

    /// The report in `format`.
    fn render(&self, format: Format) -> String {
        match format {
            Format::Text => self.text(),
            Format::Json => self.json(),
        }
    }
}

/// `value` as `--json` has always printed it: `serde_json`'s pretty form (fields in
/// declaration order), then a newline.
pub fn json_lines<T: Serialize + ?Sized>(value: &T) -> String {
    let mut out = serde_json::to_string_pretty(value).expect("reports are plain data");
    out.push('\n');
    out
}

/// Nothing to say: a command that ran in the background, or that only logs.
impl<R: Report> Report for Option<R> {
    fn text(&self) -> String {
        self.as_ref().map(R::text).unwrap_or_default()
    }

    fn json(&self) -> String {
        self.as_ref().map(R::json).unwrap_or_default()
    }

    fn code(&self) -> u8 {
        self.as_ref().map_or(exit::OK, R::code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Sample {
        b: u32,
        a: &'static str,
    }

    impl Report for Sample {
        fn text(&self) -> String {
            format!("{} {}\n", self.a, self.b)
        }
        fn json(&self) -> String {
            json_lines(self)
        }
    }

    #[test]
    fn json_keeps_declaration_order_and_ends_in_a_newline() {
        let s = Sample { b: 2, a: "x" };
        assert_eq!(
            s.render(Format::Json),
            "{\n  \"b\": 2,\n  \"a\": \"x\"\n}\n"
        );
        assert_eq!(s.render(Format::Text), "x 2\n");
        assert_eq!(s.code(), exit::OK);
    }

    #[test]
    fn no_report_prints_nothing() {
        let none: Option<Sample> = None;
        assert_eq!(none.render(Format::Json), "");
        assert_eq!(none.render(Format::Text), "");
        assert_eq!(none.code(), exit::OK);
        assert_eq!(Some(Sample { b: 1, a: "y" }).render(Format::Text), "y 1\n");
    }
}
