//! The WAL content index, as archive-push and `reindex` make it: a segment's bytes
//! decoded into the [`WalContent`] its index entry (or sidecar) carries.
//!
//! The decoder must never cost WAL. PostgreSQL hands a segment to `archive_command`
//! until it exits 0, and never again after: a push that failed because the decoder
//! could not read the segment would stop archiving for good (the same segment is
//! handed over and over), and a segment refused as damaged would never be archived at
//! all. So whatever the decoder does, the segment is stored:
//!
//! - a summary that ends in damage (invalid WAL inside the segment) is kept, damage
//!   included, so that the planner knows where replay would stop;
//! - a decoder that gives no summary at all (an error before any record) or panics (a
//!   bug) leaves the content out (`None`): the planner then reads the segment itself,
//!   and `tidemark reindex` can try again.
//!
//! Either way the caller logs [`Summarized::warning`] (naming the file and the LSN) once
//! the file is stored: not before, since a push refused for another reason stores
//! nothing.
//!
//! A panic is contained (`contain`): the `tidemark` binary's panic hook, which
//! otherwise ends the process at once, lets a panic inside it unwind (see
//! [`panic_is_contained`]). The decoder is pure (no IO, no shared state), so nothing is
//! left half-done by it.

use std::cell::Cell;

use tidemark_pg::wal::summarize_segment;
use tidemark_pg::{Lsn, PgMajor, SegmentIdentity, WalFileName};
use tidemark_store::wal_content::WalContent;

thread_local! {
    /// Set while this thread runs code whose panics [`contain`] catches.
    static CONTAINED: Cell<bool> = const { Cell::new(false) };
}

/// True while the calling thread is inside `contain`: a process-wide panic hook that
/// ends the process must let such a panic unwind instead (it is caught and turned into a
/// warning).
pub fn panic_is_contained() -> bool {
    CONTAINED.with(Cell::get)
}

/// Runs `f`, turning a panic inside it into `Err` with the panic's message.
fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            CONTAINED.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CONTAINED.with(|c| c.replace(true)));
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into())
    })
}

/// How decoding one segment ended, for the caller's counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Summarized {
    /// Decoded to its end.
    Whole(WalContent),
    /// Decoded up to invalid WAL, or (a complete segment) WAL that ends before the
    /// segment does: the content records it ([`SegmentSummary::defect`]).
    ///
    /// [`SegmentSummary::defect`]: tidemark_pg::wal::SegmentSummary::defect
    Damaged {
        /// The summary, damage included.
        content: WalContent,
        /// Where replay would stop.
        lsn: Lsn,
        /// Why.
        reason: String,
    },
    /// No summary: why.
    Failed(String),
}

impl Summarized {
    /// What to warn of once the file named `name` is stored, if anything.
    pub fn warning(&self, name: &WalFileName) -> Option<String> {
        match self {
            Summarized::Whole(_) => None,
            Summarized::Damaged { lsn, reason, .. } => Some(format!(
                "{name}: invalid WAL at {lsn}: {reason}; archived as it is, and its content index says where replay would stop"
            )),
            Summarized::Failed(why) => Some(format!(
                "{name}: content not indexed, {why}; the file is archived all the same"
            )),
        }
    }

    /// The content to record, if any.
    pub fn content(&self) -> Option<&WalContent> {
        match self {
            Summarized::Whole(content) | Summarized::Damaged { content, .. } => Some(content),
            Summarized::Failed(_) => None,
        }
    }
}

/// Decodes a segment or `.partial` file (`bytes`, whole) whose first page carries `id`.
/// Never fails: see the module doc. `None` for files that are not segment-shaped.
pub fn summarize(name: &WalFileName, bytes: &[u8], id: &SegmentIdentity) -> Option<Summarized> {
    let seg = match name {
        WalFileName::Segment(seg) | WalFileName::Partial(seg) => seg,
        WalFileName::History(_) | WalFileName::Backup { .. } => return None,
    };
    let start = match seg.start_lsn(id.segment_size) {
        Ok(start) => start,
        Err(e) => return Some(Summarized::Failed(format!("no start LSN: {e}"))),
    };
    let major = PgMajor::from_number(id.pg_major);
    let partial = matches!(name, WalFileName::Partial(_));
    let decoded = contain(|| {
        inject_panic_for_tests();
        summarize_segment(bytes, id.segment_size.bytes(), start, major)
    });
    Some(match decoded {
        Ok(Ok(summary)) => match summary.defect(partial) {
            Some(defect) => Summarized::Damaged {
                content: WalContent::from(&summary),
                lsn: defect.lsn,
                reason: defect.kind.to_string(),
            },
            None => Summarized::Whole(WalContent::from(&summary)),
        },
        Ok(Err(e)) => Summarized::Failed(format!("cannot decode at LSN {}: {}", e.lsn, e.kind)),
        Err(panic) => Summarized::Failed(format!(
            "the decoder failed (a bug in tidemark; please report it) on the segment starting at LSN {start}: {panic}"
        )),
    })
}

/// Debug builds only: `TIDEMARK_TEST_PANIC=wal-decoder` makes the decoder panic, so that
/// tests can prove what a decoder bug does to a push (the `tidemark` binary's switch for
/// the commands themselves is in its `main`). Release builds have no such switch.
fn inject_panic_for_tests() {
    #[cfg(debug_assertions)]
    if std::env::var("TIDEMARK_TEST_PANIC").is_ok_and(|wanted| wanted == "wal-decoder") {
        panic!("injected by TIDEMARK_TEST_PANIC");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_is_an_error_and_the_flag_is_restored() {
        assert!(!panic_is_contained());
        let inside = contain(panic_is_contained).unwrap();
        assert!(inside);
        let err = contain(|| -> u32 { panic!("decoder bug at {}", 7) }).unwrap_err();
        assert_eq!(err, "decoder bug at 7");
        assert!(!panic_is_contained());
    }
}
