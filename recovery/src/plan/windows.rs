//! What `info` shows per timeline (issue 14 item 5): the stretches a restore can reach
//! with that timeline as its target, each from a backup's consistent point to the end of
//! the WAL that replay can read from it without a gap or damage, with the last commit
//! time the index knows there; and where the timeline forked off its parent. Pure.

use chrono::{DateTime, Utc};

use super::timelines::{known_timelines, parent_of, TimelinePath};
use super::walk::{walk, Archive, Verdict, WalkEnd};
use super::{BackupPoint, CatalogSnapshot, TimelineWindow, Window};

/// See [`super::windows`].
pub(super) fn windows(snapshot: &CatalogSnapshot) -> Vec<TimelineWindow> {
    let archive = Archive::new(snapshot);
    let mut out = Vec::new();
    for tli in known_timelines(snapshot) {
        let path = TimelinePath::of(snapshot, tli);
        let mut backups: Vec<&BackupPoint> = snapshot
            .backups
            .iter()
            .filter(|b| path.admits(b).is_ok())
            .collect();
        backups.sort_by_key(|b| (b.stop_lsn, b.stop_time));

        let mut stretches: Vec<Window> = Vec::new();
        for backup in backups {
            // A backup whose consistent point an earlier stretch covers reads the same WAL
            // to the same end: it adds nothing.
            if stretches
                .last()
                .is_some_and(|w| w.from_lsn <= backup.stop_lsn && backup.stop_lsn <= w.to_lsn)
            {
                continue;
            }
            let walked = walk(&archive, &path, backup.start_lsn, None, |_| {
                Verdict::<()>::NotHere
            });
            let Some(last) = walked.visited.last() else {
                continue;
            };
            let to_lsn = last.end_of_wal(&archive);
            if to_lsn < backup.stop_lsn {
                continue;
            }
            let gap_at = match walked.end {
                WalkEnd::Missing {
                    tli,
                    segno,
                    more_after: true,
                } => Some(archive.name(tli, segno)),
                WalkEnd::Damaged(_) => Some(last.facts.name.clone()),
                _ => None,
            };
            // The newest completion the index knows, unless an unread segment follows it.
            let mut to_time = None;
            for seg in walked.visited.iter().rev() {
                match seg.summary() {
                    None => break,
                    Some(s) => {
                        if let Some(x) = s.xacts {
                            to_time =
                                DateTime::<Utc>::from_timestamp_micros(x.max_time.unix_micros());
                            break;
                        }
                    }
                }
            }
            stretches.push(Window {
                from_lsn: backup.stop_lsn,
                from_time: backup.stop_time,
                to_lsn,
                to_time,
                gap_at,
            });
        }
        // Keep the stretches that reach this timeline itself; the others belong to an
        // ancestor and are shown there.
        if let Some(begin) = path.step(tli).and_then(|s| s.begin) {
            stretches.retain(|w| w.to_lsn >= begin);
        }
        out.push(TimelineWindow {
            timeline: tli,
            parent: parent_of(snapshot, tli),
            windows: stretches,
        });
    }
    out
}
