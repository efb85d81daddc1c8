//! Timelines as PostgreSQL's recovery sees them (`timeline.c`): a target timeline's
//! ancestry read from its history file, which timeline a WAL position belongs to, which
//! timeline's file replay reads for a segment, and the `latest` probe. Pure.
//!
//! Facts kept from PostgreSQL's source:
//! - `readTimeLineHistory(T)`: the history file of `T` lists every ancestor with the
//!   position where its child left it; without a file, `T` is taken to have no parents
//!   (timeline 1 never has one).
//! - `tliOfPointInHistory`: a position belongs to the ancestor whose range
//!   `begin <= lsn < end` holds it.
//! - `XLogFileReadAnyTLI`: for segment `n`, replay tries the path's timelines newest first,
//!   skipping those that begin after segment `n`, and never goes back to an older timeline
//!   than the previous file's. So the segment holding a switch point is read from the
//!   *new* timeline's file (which starts with the parent's WAL up to the switch). The
//!   planner requires exactly that file: if it were missing, PostgreSQL would fall back to
//!   the parent's file of that number, which holds the parent's WAL after the fork.
//! - `findNewestTimeLine(start)`: probes `start+1`, `start+2`, … and stops at the first
//!   history file missing, whatever exists beyond it.

use std::collections::BTreeSet;

use tidemark_pg::Lsn;

use super::{BackupPoint, Branch, CatalogSnapshot};

/// One timeline on a path: the WAL positions `[begin, end)` replay reads on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Step {
    /// The timeline.
    pub tli: u32,
    /// Where it begins (its fork from the parent); `None` for the oldest.
    pub begin: Option<Lsn>,
    /// Where the next timeline on the path leaves it; `None` for the target.
    pub end: Option<Lsn>,
}

/// A target timeline and its ancestry, oldest first (PostgreSQL's `expectedTLEs`,
/// reversed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TimelinePath {
    /// The target timeline.
    pub target: u32,
    /// Its ancestors then itself.
    pub steps: Vec<Step>,
    /// The first segment number each step's file covers (parallel to `steps`).
    first_segments: Vec<u64>,
}

impl TimelinePath {
    /// The path to `target` as its history file tells (`readTimeLineHistory`).
    pub fn of(snapshot: &CatalogSnapshot, target: u32) -> TimelinePath {
        let mut steps = Vec::new();
        let mut begin = None;
        if let Some(entries) = snapshot.histories.get(&target) {
            for entry in entries {
                steps.push(Step {
                    tli: entry.parent.0,
                    begin,
                    end: Some(entry.switchpoint),
                });
                begin = Some(entry.switchpoint);
            }
        }
        steps.push(Step {
            tli: target,
            begin,
            end: None,
        });
        let size = snapshot.segment_size.max(1);
        let first_segments = steps
            .iter()
            .map(|s| s.begin.map_or(0, |b| b.0 / size))
            .collect();
        TimelinePath {
            target,
            steps,
            first_segments,
        }
    }

    /// The step of timeline `tli`, if it is on the path.
    pub fn step(&self, tli: u32) -> Option<&Step> {
        self.steps.iter().find(|s| s.tli == tli)
    }

    /// The timeline whose file replay reads for segment `segno` (`XLogFileReadAnyTLI`).
    pub fn file_timeline(&self, segno: u64) -> u32 {
        let index = self
            .first_segments
            .iter()
            .rposition(|first| *first <= segno)
            .unwrap_or(0);
        self.steps[index].tli
    }

    /// The segment numbers whose files belong to `tli` on this path: `[first, last]`,
    /// `last` unbounded for the target.
    pub fn segment_span(&self, tli: u32) -> Option<(u64, Option<u64>)> {
        let index = self.steps.iter().position(|s| s.tli == tli)?;
        let first = self.first_segments[index];
        let last = self
            .first_segments
            .get(index + 1)
            .map(|next| next.saturating_sub(1));
        Some((first, last))
    }

    /// Whether `backup` can start replay on this path, or why not (PostgreSQL refuses a
    /// backup whose checkpoint lies after the fork off its timeline: "requested timeline
    /// is not a child of this server's history"; one that ends after that fork holds data
    /// the path never had).
    pub fn admits(&self, backup: &BackupPoint) -> Result<(), String> {
        let describe = || self.describe();
        let Some(step) = self.step(backup.timeline) else {
            return Err(format!(
                "backup {} is on timeline {}, which is not in timeline {}'s history ({})",
                backup.id,
                backup.timeline,
                self.target,
                describe()
            ));
        };
        if let Some(end) = step.end {
            if backup.start_lsn >= end {
                return Err(format!(
                    "backup {} starts at {} on timeline {}, after timeline {} forked off it at {end}",
                    backup.id,
                    backup.start_lsn,
                    backup.timeline,
                    self.next_after(backup.timeline).unwrap_or(self.target)
                ));
            }
        }
        let Some(stop_step) = self.step(backup.stop_timeline) else {
            return Err(format!(
                "backup {} ends on timeline {}, which is not in timeline {}'s history ({})",
                backup.id,
                backup.stop_timeline,
                self.target,
                describe()
            ));
        };
        let within = stop_step.begin.is_none_or(|b| b <= backup.stop_lsn)
            && stop_step.end.is_none_or(|e| backup.stop_lsn <= e);
        if !within {
            return Err(format!(
                "backup {} ends at {} on timeline {}, outside that timeline's part of timeline {}'s history ({})",
                backup.id,
                backup.stop_lsn,
                backup.stop_timeline,
                self.target,
                describe()
            ));
        }
        Ok(())
    }

    /// The timeline that follows `tli` on the path.
    fn next_after(&self, tli: u32) -> Option<u32> {
        let index = self.steps.iter().position(|s| s.tli == tli)?;
        self.steps.get(index + 1).map(|s| s.tli)
    }

    /// `1 → 2 at 0/5000160 → 4 at 0/9000000`.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for (i, step) in self.steps.iter().enumerate() {
            if i > 0 {
                text.push_str(" → ");
            }
            text.push_str(&step.tli.to_string());
            if let Some(begin) = step.begin {
                text.push_str(&format!(" at {begin}"));
            }
        }
        text
    }
}

/// Every timeline the archive shows: history files, segments, backups.
pub(crate) fn known_timelines(snapshot: &CatalogSnapshot) -> BTreeSet<u32> {
    let mut known: BTreeSet<u32> = snapshot.histories.keys().copied().collect();
    // Segments are keyed by timeline first: one range walk per distinct timeline.
    let mut next = 0u32;
    while let Some(((tli, _), _)) = snapshot.segments.range((next, 0)..).next() {
        known.insert(*tli);
        match tli.checked_add(1) {
            Some(n) => next = n,
            None => break,
        }
    }
    for b in &snapshot.backups {
        known.insert(b.timeline);
        known.insert(b.stop_timeline);
    }
    known
}

/// The newest timeline the archive shows.
pub(crate) fn newest_timeline(snapshot: &CatalogSnapshot) -> u32 {
    known_timelines(snapshot).last().copied().unwrap_or(1)
}

/// The first history file PostgreSQL's `latest` probe from `start` misses before
/// reaching `newest`: a hole that would make it land on an older timeline.
pub(crate) fn first_missing_history(
    snapshot: &CatalogSnapshot,
    start: u32,
    newest: u32,
) -> Option<u32> {
    (start.saturating_add(1)..=newest).find(|t| *t > 1 && !snapshot.histories.contains_key(t))
}

/// The parent and fork of `tli`, from its history file.
pub(crate) fn parent_of(snapshot: &CatalogSnapshot, tli: u32) -> Option<Branch> {
    let last = snapshot.histories.get(&tli)?.last()?;
    Some(Branch {
        timeline: tli,
        parent: last.parent.0,
        fork: last.switchpoint,
    })
}

/// `00000003.history`.
pub(crate) fn history_name(tli: u32) -> String {
    format!("{tli:08X}.history")
}
