//! Timeline history files (`TTTTTTTT.history`): which timeline a timeline branched from,
//! and where. Moved from `store::pg` (issue 13). Pure: the caller reads the file.

use crate::types::{Lsn, TimelineId};
use crate::walfile::WalError;

/// One entry of a timeline history file: `parent_tli <TAB> switchpoint <TAB> reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The timeline that was left.
    pub parent: TimelineId,
    /// Where the new timeline branched off.
    pub switchpoint: Lsn,
    /// PostgreSQL's free-text reason.
    pub reason: String,
}

/// Parses a `.history` file as PostgreSQL writes it (`writeTimeLineHistory`): comment
/// lines start with `#`, blank lines are allowed, parent timelines strictly increase.
pub fn parse_history(content: &[u8]) -> Result<Vec<HistoryEntry>, WalError> {
    let text =
        std::str::from_utf8(content).map_err(|_| WalError::BadHistory("not UTF-8 text".into()))?;
    let mut entries: Vec<HistoryEntry> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let bad = || WalError::BadHistory(format!("unreadable line {line:?}"));
        let parent: u32 = fields.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let switchpoint: Lsn = fields.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let reason = fields.collect::<Vec<_>>().join(" ");
        if let Some(prev) = entries.last() {
            if parent <= prev.parent.0 {
                return Err(WalError::BadHistory(format!(
                    "timeline {parent} does not follow {}",
                    prev.parent
                )));
            }
        }
        entries.push(HistoryEntry {
            parent: TimelineId(parent),
            switchpoint,
            reason,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_files_parse() {
        let h =
            b"1\t0/3000000\tno recovery target specified\n\n2\t0/5000160\tat restore point \"x\"\n";
        let entries = parse_history(h).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].parent, TimelineId(2));
        assert_eq!(entries[1].switchpoint, Lsn(0x5000160));
        assert!(parse_history(b"2\t0/1\tx\n1\t0/2\ty\n").is_err());
        assert!(parse_history(b"garbage\n").is_err());
        assert!(parse_history(&[0xff, 0xfe]).is_err());
    }
}
