//! Progress of long work (backups, restores), on stderr: a line redrawn in place a few times a
//! second on a terminal, a plain log line every ten seconds otherwise (cron mail and
//! journald get a readable record rather than a wall of carriage returns).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a terminal line is redrawn.
const TERMINAL_EVERY: Duration = Duration::from_millis(250);
/// How often a line is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Reports bytes (or, from [`Progress::counting`], steps) done against an estimate of the
/// total.
#[derive(Debug)]
pub struct Progress {
    what: &'static str,
    /// What is counted when not bytes ("steps").
    unit: Option<&'static str>,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last: Instant,
    terminal: bool,
    enabled: bool,
    drawn: bool,
}

impl Progress {
    /// Progress of `what` (a verb: "backup"), with `total` bytes expected when known.
    /// `enabled: false` keeps it silent (`--json`).
    pub fn new(what: &'static str, total: Option<u64>, enabled: bool) -> Progress {
        let now = Instant::now();
        Progress {
            what,
            unit: None,
            total,
            done: 0,
            started: now,
            last: now,
            terminal: std::io::stderr().is_terminal(),
            enabled,
            drawn: false,
        }
    }

    /// Progress counted in `unit`s ("steps") instead of bytes.
    pub fn counting(
        what: &'static str,
        unit: &'static str,
        total: Option<u64>,
        enabled: bool,
    ) -> Progress {
        Progress {
            unit: Some(unit),
            ..Progress::new(what, total, enabled)
        }
    }

    /// Sets the expected total.
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
    }

    /// Adds `bytes` done, and shows them when it is time to.
    pub fn add(&mut self, bytes: u64) {
        self.done += bytes;
        if !self.enabled {
            return;
        }
        let every = if self.terminal {
            TERMINAL_EVERY
        } else {
            LOG_EVERY
        };
        if self.last.elapsed() >= every {
            self.last = Instant::now();
            self.show();
        }
    }

    /// Clears the terminal line, if one was drawn.
    pub fn finish(&mut self) {
        if self.enabled && self.terminal && self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.drawn = false;
        }
    }

    fn show(&mut self) {
        let line = match self.unit {
            Some(unit) => render_count(
                self.what,
                unit,
                self.done,
                self.total,
                self.started.elapsed(),
            ),
            None => render(self.what, self.done, self.total, self.started.elapsed()),
        };
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{line}");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "tidemark: {line}");
        }
        let _ = err.flush();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One progress line: `backup: 312 of 830 MiB (37%), 210 MiB/s, about 3 s left`.
pub fn render(what: &str, done: u64, total: Option<u64>, elapsed: Duration) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = mib(done) / secs;
    match total {
        Some(total) if total > 0 => {
            // The server's total is an estimate; never show more than 100% or a negative ETA.
            let share = (done as f64 / total as f64).min(1.0);
            let left = if rate > 0.0 {
                (mib(total.saturating_sub(done)) / rate).ceil()
            } else {
                f64::NAN
            };
            let eta = if left.is_finite() {
                format!(", about {left:.0} s left")
            } else {
                String::new()
            };
            format!(
                "{what}: {:.0} of {:.0} MiB ({:.0}%), {rate:.0} MiB/s{eta}",
                mib(done),
                mib(total),
                share * 100.0
            )
        }
        _ => format!("{what}: {:.0} MiB, {rate:.0} MiB/s", mib(done)),
    }
}

/// One progress line of counted work: `expire: 120 of 357 steps (34%), about 4 s left`.
pub fn render_count(
    what: &str,
    unit: &str,
    done: u64,
    total: Option<u64>,
    elapsed: Duration,
) -> String {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-3);
    match total {
        Some(total) if total > 0 => {
            let done = done.min(total);
            let left = if rate > 0.0 {
                format!(
                    ", about {:.0} s left",
                    ((total - done) as f64 / rate).ceil()
                )
            } else {
                String::new()
            };
            format!(
                "{what}: {done} of {total} {unit} ({:.0}%){left}",
                done as f64 * 100.0 / total as f64
            )
        }
        _ => format!("{what}: {done} {unit}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_lines_say_done_total_and_time_left() {
        let line = render_count("expire", "steps", 100, Some(400), Duration::from_secs(2));
        assert_eq!(line, "expire: 100 of 400 steps (25%), about 6 s left");
        assert_eq!(
            render_count("expire", "steps", 7, None, Duration::from_secs(1)),
            "expire: 7 steps"
        );
    }

    #[test]
    fn lines_say_done_total_rate_and_time_left() {
        let line = render("backup", 300 << 20, Some(900 << 20), Duration::from_secs(3));
        assert_eq!(
            line,
            "backup: 300 of 900 MiB (33%), 100 MiB/s, about 6 s left"
        );
        // An estimate the work outgrew stays at 100%.
        let over = render(
            "backup",
            1000 << 20,
            Some(900 << 20),
            Duration::from_secs(10),
        );
        assert!(
            over.contains("(100%)") && over.contains("about 0 s left"),
            "{over}"
        );
        assert_eq!(
            render("backup", 10 << 20, None, Duration::from_secs(1)),
            "backup: 10 MiB, 10 MiB/s"
        );
    }
}
