//! Durations as the config file writes them: a number and a unit, or several in a row
//! (`"90s"`, `"15m"`, `"1h"`, `"1h30m"`, `"14d"`, `"2w"`), for settings such as
//! `rpo_target` and `backup_max_age`. Pure. A bare number is refused: a missing unit is
//! the typo that turns an hour into a second.

use std::time::Duration;

/// Parses `text` (see the module doc). The error says what is wrong, for a one-line
/// configuration error.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("an empty duration: write e.g. \"30s\", \"15m\", \"1h\" or \"7d\"".into());
    }
    let mut total = 0f64;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration (e.g. \"30s\", \"1h30m\", \"7d\")"))?;
        let seconds = match unit.trim() {
            "ms" => 0.001,
            "s" | "sec" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "w" => 7.0 * 86_400.0,
            "" => {
                return Err(format!(
                    "{text:?} has no unit: write e.g. \"{number}s\", \"{number}m\" or \"{number}h\""
                ))
            }
            other => {
                return Err(format!(
                    "{text:?}: unknown unit {other:?} (use ms, s, m, h, d or w)"
                ))
            }
        };
        total += value * seconds;
        rest = next;
    }
    if !(total.is_finite() && total < 100.0 * 365.0 * 86_400.0) {
        return Err(format!("{text:?} is too long"));
    }
    Ok(Duration::from_secs_f64(total))
}

/// `d` for a person: `1h`, `26h`, `90s`, `1h30m`, `2.5s` (what [`parse_duration`] reads).
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_millis() != 0 || secs == 0 {
        return format!("{}s", (d.as_secs_f64() * 1000.0).round() / 1000.0);
    }
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_combinations() {
        let secs = |t: &str| parse_duration(t).unwrap().as_secs_f64();
        assert_eq!(secs("3s"), 3.0);
        assert_eq!(secs("15m"), 900.0);
        assert_eq!(secs("1h"), 3600.0);
        assert_eq!(secs("1h30m"), 5400.0);
        assert_eq!(secs("14d"), 14.0 * 86_400.0);
        assert_eq!(secs("2w"), 14.0 * 86_400.0);
        assert_eq!(secs(" 1.5h "), 5400.0);
        assert_eq!(secs("500ms"), 0.5);
        for bad in ["", "3", "1x", "h", "1h 30", "-1h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_duration("3").unwrap_err().contains("no unit"));
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["1h", "26h", "90s", "1h30m", "2.5s", "1m"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{text}");
        }
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }
}
