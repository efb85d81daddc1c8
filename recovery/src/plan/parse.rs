//! Reading the target flags of `plan` and `restore` (`--target-time`, `--target-lsn`,
//! `--target-xid`, `--target-timeline`, `--target-action`, `--target`) into the planner's
//! types, so that the CLI only maps flags. Pure: the local time zone is an argument
//! (the CLI passes `chrono::Local`, tests pass fixed offsets or a zone with a DST change).
//!
//! Times are read as RFC 3339 or as PostgreSQL's `timestamptz` text: a date, `T` or a
//! space, `HH:MM[:SS[.fraction]]`, then an optional zone (`Z`, `UTC`, `GMT`, or a numeric
//! offset `+02`, `+0530`, `+05:30`, `-08:00:00`). A time without a zone is the local
//! time; one that a daylight-saving change makes ambiguous or skips is refused, because
//! guessing an hour is exactly the mistake a recovery must not make. Zone names such as
//! `Europe/Paris` are refused with a hint: PostgreSQL would read them with its own zone
//! database, which may differ from this machine's. Fractions finer than a microsecond are
//! rounded to the microsecond, PostgreSQL's precision.

use chrono::{
    DateTime, Duration, FixedOffset, MappedLocalTime, NaiveDate, NaiveDateTime, NaiveTime,
    TimeZone, Utc,
};
use tidemark_pg::Lsn;

use super::{TargetAction, TimelineRequest};

/// A target flag that cannot be read: the message says which and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TargetParseError(String);

impl TargetParseError {
    fn new(message: impl Into<String>) -> Self {
        TargetParseError(message.into())
    }
}

/// What every time-format error ends with.
const TIME_EXAMPLES: &str =
    "expected e.g. 2026-12-06 10:32:07+02, 2026-12-06T10:32:07.123Z or 2026-12-06 10:32:07 (local time)";

/// Reads `--target-time`; a time without a zone is read in `local`.
pub fn parse_target_time<Tz: TimeZone>(
    text: &str,
    local: &Tz,
) -> Result<DateTime<Utc>, TargetParseError> {
    let trimmed = text.trim();
    let mut cursor = Cursor::new(trimmed);
    let bad = |why: &str| {
        TargetParseError::new(format!("cannot read time {text:?}: {why}; {TIME_EXAMPLES}"))
    };

    let year = cursor.digits(4, 4).ok_or_else(|| bad("no year"))?;
    let month = (cursor.eat('-'))
        .then(|| cursor.digits(1, 2))
        .flatten()
        .ok_or_else(|| bad("no month"))?;
    let day = (cursor.eat('-'))
        .then(|| cursor.digits(1, 2))
        .flatten()
        .ok_or_else(|| bad("no day"))?;
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)
        .ok_or_else(|| bad(&format!("{year:04}-{month:02}-{day:02} is not a date")))?;

    // The time of day: after `T` or white space; a bare date is midnight, as in PostgreSQL.
    let mut time = NaiveTime::MIN;
    let mut micros: i64 = 0;
    let had_separator = cursor.eat('T') || cursor.eat('t') || cursor.skip_spaces();
    if had_separator && cursor.peek().is_some_and(|c| c.is_ascii_digit()) {
        let hour = cursor.digits(1, 2).ok_or_else(|| bad("no hour"))?;
        let minute = cursor
            .eat(':')
            .then(|| cursor.digits(2, 2))
            .flatten()
            .ok_or_else(|| bad("no minutes"))?;
        let mut second = 0;
        if cursor.eat(':') {
            second = cursor.digits(2, 2).ok_or_else(|| bad("no seconds"))?;
            if cursor.eat('.') || cursor.eat(',') {
                micros = cursor.fraction_micros().ok_or_else(|| bad("no fraction"))?;
            }
        }
        time = NaiveTime::from_hms_opt(hour, minute, second).ok_or_else(|| {
            bad(&format!(
                "{hour:02}:{minute:02}:{second:02} is not a time of day"
            ))
        })?;
        cursor.skip_spaces();
    }
    let naive: NaiveDateTime = date.and_time(time) + Duration::microseconds(micros);

    let zone = cursor.rest();
    let instant = if zone.is_empty() {
        match local.from_local_datetime(&naive) {
            MappedLocalTime::Single(t) => t.with_timezone(&Utc),
            MappedLocalTime::Ambiguous(a, b) => {
                return Err(TargetParseError::new(format!(
                    "time {text:?} is ambiguous in the local time zone: a daylight-saving change \
                     repeats it ({} or {}); give the offset, e.g. {}",
                    a.fixed_offset().format("%Y-%m-%d %H:%M:%S%:z"),
                    b.fixed_offset().format("%Y-%m-%d %H:%M:%S%:z"),
                    a.fixed_offset().format("%Y-%m-%d %H:%M:%S%:z"),
                )))
            }
            MappedLocalTime::None => {
                return Err(TargetParseError::new(format!(
                    "time {text:?} does not exist in the local time zone (a daylight-saving \
                     change skips it); give the offset you mean, e.g. \"{} +01\"",
                    naive.format("%Y-%m-%d %H:%M:%S")
                )))
            }
        }
    } else {
        let offset = parse_zone(zone).map_err(|why| bad(&why))?;
        match offset.from_local_datetime(&naive) {
            MappedLocalTime::Single(t) => t.with_timezone(&Utc),
            _ => return Err(bad("the instant is out of range")),
        }
    };
    Ok(instant)
}

/// A zone suffix: `Z`, `UTC`, `GMT`, or `±HH[[:]MM[[:]SS]]`.
fn parse_zone(zone: &str) -> Result<FixedOffset, String> {
    if ["z", "utc", "gmt", "+00", "-00"]
        .iter()
        .any(|z| zone.eq_ignore_ascii_case(z))
    {
        return Ok(FixedOffset::east_opt(0).expect("zero offset"));
    }
    let sign = match zone.chars().next() {
        Some('+') => 1,
        Some('-') => -1,
        _ => {
            return Err(format!(
                "time zone {zone:?} is not read (only UTC, Z or a numeric offset such as +02 or \
                 -05:30: a zone name would be resolved by a zone database that may differ from \
                 PostgreSQL's)"
            ))
        }
    };
    let mut cursor = Cursor::new(&zone[1..]);
    // `+5`, `+05`, `+0530`, `+05:30`, `+053000`, `+05:30:00`: two digits per field
    // except a lone hour digit.
    let hours = cursor
        .leading_digits(2)
        .ok_or_else(|| format!("offset {zone:?} has no hours"))?;
    let mut minutes = 0;
    let mut seconds = 0;
    for (field, what) in [(&mut minutes, "minutes"), (&mut seconds, "seconds")] {
        if cursor.rest().is_empty() {
            break;
        }
        let colon = cursor.eat(':');
        if !colon && !cursor.peek().is_some_and(|c| c.is_ascii_digit()) {
            break;
        }
        let before = cursor.at;
        *field = cursor
            .leading_digits(2)
            .filter(|_| cursor.at - before == 2)
            .ok_or_else(|| format!("offset {zone:?} has no {what} (two digits)"))?;
    }
    if !cursor.rest().is_empty() {
        return Err(format!("unexpected {:?} after the offset", cursor.rest()));
    }
    // PostgreSQL accepts offsets up to 15:59:59 either way.
    if hours > 15 || minutes > 59 || seconds > 59 {
        return Err(format!(
            "offset {zone:?} is out of range (at most ±15:59:59)"
        ));
    }
    let total = sign * (hours * 3600 + minutes * 60 + seconds) as i32;
    FixedOffset::east_opt(total).ok_or_else(|| format!("offset {zone:?} is out of range"))
}

/// A small reader over ASCII text.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor { text, at: 0 }
    }

    fn peek(&self) -> Option<char> {
        self.text[self.at..].chars().next()
    }

    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.at += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) -> bool {
        let before = self.at;
        while self.peek().is_some_and(|c| c == ' ' || c == '\t') {
            self.at += 1;
        }
        self.at > before
    }

    /// `min..=max` decimal digits as a number.
    fn digits(&mut self, min: usize, max: usize) -> Option<u32> {
        let run = self.rest().bytes().take_while(u8::is_ascii_digit).count();
        if run < min || run > max {
            return None;
        }
        let value = self.rest()[..run].parse().ok()?;
        self.at += run;
        Some(value)
    }

    /// One or up to `max` decimal digits, whatever follows them.
    fn leading_digits(&mut self, max: usize) -> Option<u32> {
        let run = self
            .rest()
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count()
            .min(max);
        if run == 0 {
            return None;
        }
        let value = self.rest()[..run].parse().ok()?;
        self.at += run;
        Some(value)
    }

    /// A decimal fraction of a second, rounded to microseconds (half up).
    fn fraction_micros(&mut self) -> Option<i64> {
        let run = self.rest().bytes().take_while(u8::is_ascii_digit).count();
        if run == 0 {
            return None;
        }
        let digits = &self.rest()[..run];
        self.at += run;
        let mut micros: i64 = 0;
        for (i, b) in digits.bytes().take(6).enumerate() {
            micros += i64::from(b - b'0') * 10_i64.pow(5 - i as u32);
        }
        if digits.len() > 6 && digits.as_bytes()[6] >= b'5' {
            micros += 1;
        }
        Some(micros)
    }
}

/// Reads `--target-lsn`: PostgreSQL's `X/X` (hexadecimal).
pub fn parse_target_lsn(text: &str) -> Result<Lsn, TargetParseError> {
    text.trim().parse::<Lsn>().map_err(|_| {
        TargetParseError::new(format!(
            "cannot read LSN {text:?}: expected two hexadecimal numbers as X/X, e.g. 0/3000060"
        ))
    })
}

/// Reads `--target-xid`: a transaction id in decimal. A 64-bit id with its epoch (as
/// `pg_current_xact_id()` shows it) is reduced to its 32 bits, as PostgreSQL does with
/// `recovery_target_xid`; the special ids 0 to 2 are refused.
pub fn parse_target_xid(text: &str) -> Result<u32, TargetParseError> {
    let trimmed = text.trim();
    let value: u64 = if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        trimmed.parse().map_err(|_| {
            TargetParseError::new(format!("transaction id {text:?} is larger than 64 bits"))
        })?
    } else {
        return Err(TargetParseError::new(format!(
            "cannot read transaction id {text:?}: expected a decimal number such as 745"
        )));
    };
    let xid = value as u32;
    if xid < 3 {
        return Err(TargetParseError::new(format!(
            "transaction id {text:?} is not a normal transaction id (the first is 3)"
        )));
    }
    Ok(xid)
}

/// Reads `--target-timeline`: `latest`, `current` or a timeline number.
pub fn parse_target_timeline(text: &str) -> Result<TimelineRequest, TargetParseError> {
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("latest") {
        return Ok(TimelineRequest::Latest);
    }
    if trimmed.eq_ignore_ascii_case("current") {
        return Ok(TimelineRequest::Current);
    }
    match trimmed.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(TimelineRequest::Exact(n)),
        _ => Err(TargetParseError::new(format!(
            "cannot read timeline {text:?}: expected latest, current or a timeline number (1 or more)"
        ))),
    }
}

/// Reads `--target-action`: `pause`, `promote` or `shutdown`.
pub fn parse_target_action(text: &str) -> Result<TargetAction, TargetParseError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "pause" => Ok(TargetAction::Pause),
        "promote" => Ok(TargetAction::Promote),
        "shutdown" => Ok(TargetAction::Shutdown),
        _ => Err(TargetParseError::new(format!(
            "cannot read target action {text:?}: expected pause, promote or shutdown"
        ))),
    }
}

/// Reads `--target`: `immediate` or `latest`.
pub fn parse_target_keyword(text: &str) -> Result<super::Target, TargetParseError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "immediate" => Ok(super::Target::Immediate),
        "latest" => Ok(super::Target::Latest),
        _ => Err(TargetParseError::new(format!(
            "cannot read target {text:?}: expected immediate or latest (or use --target-time, \
             --target-lsn, --target-xid, --target-name)"
        ))),
    }
}

impl TargetAction {
    /// The value of `recovery_target_action`.
    pub fn as_setting(self) -> &'static str {
        match self {
            TargetAction::Pause => "pause",
            TargetAction::Promote => "promote",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// The text written for `recovery_target_time`: UTC with an explicit offset and every
/// microsecond, e.g. `2026-12-06 10:32:07.123456+00`.
pub fn time_setting(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()
}
