//! The RPO watch: a service of the agent that collects the status every few seconds
//! (into the [`super::cache`] the metrics endpoint serves from), logs each warning once
//! when it starts and once when it clears, and nudges a quiet primary with
//! `pg_switch_wal()` so that its last writes reach the repository.
//!
//! What to do is decided by [`decide`], a pure function of (the last state, the assessed
//! report, the RPO target, now):
//!
//! - a warning of a kind not standing before is logged as a warning (`rpo_breached`,
//!   `backup_too_old`, …, with its message); a kind that stood and no longer does is
//!   logged at info level as cleared; nothing is logged while nothing changes;
//! - `pg_switch_wal()` when the server is this cluster's primary, has written WAL past
//!   the durable LSN, nothing reached the repository for half the RPO target, and its
//!   archiver is not failing (a new segment would only wait behind the failing one); at
//!   most once per half target. PostgreSQL archives a segment only once it is complete:
//!   without the switch, a quiet server's last commits wait in `pg_wal` for as long as it
//!   stays quiet (`archive_timeout` does the same for every segment, busy or not).
//!   The role needs `pg_switch_wal()`: a superuser, or
//!   `GRANT EXECUTE ON FUNCTION pg_switch_wal() TO <role>`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use tidemark_store::repo::IndexedWal;

use super::assess::{Facts, StatusReport};
use super::cache::StatusCache;
use super::probe::ServerProbe;
use crate::cli::config::Settings;
use crate::daemon::{AgentContext, ServiceResult};

/// What the watch remembers between ticks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WatchState {
    /// The warnings standing at the last tick, by kind (their messages).
    pub standing: BTreeMap<&'static str, String>,
    /// When the watch last ran `pg_switch_wal()`.
    pub last_switch: Option<DateTime<Utc>>,
}

/// One thing to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Log a warning that started.
    Warn(String),
    /// Log (info) a warning that cleared.
    Cleared(String),
    /// Run `pg_switch_wal()`; the reason, for the log.
    SwitchWal(String),
}

/// How often the agent collects: a tenth of the RPO target, between 1 and 15 seconds
/// (an RPO of minutes is watched within seconds; a large repository is read at most
/// four times a minute, and only what is new in its WAL index).
pub fn refresh_interval(rpo_target: Duration) -> Duration {
    (rpo_target / 10).clamp(Duration::from_secs(1), Duration::from_secs(15))
}

/// Decides (see the module doc). Pure.
pub fn decide(
    state: &WatchState,
    report: &StatusReport,
    rpo_target: Duration,
    now: DateTime<Utc>,
) -> (WatchState, Vec<Action>) {
    let mut actions = Vec::new();
    let standing: BTreeMap<&'static str, String> = report
        .warnings
        .iter()
        .map(|w| (w.kind, w.message.clone()))
        .collect();
    for (kind, message) in &standing {
        if !state.standing.contains_key(kind) {
            actions.push(Action::Warn(format!("{kind}: {message}")));
        }
    }
    for kind in state.standing.keys() {
        if !standing.contains_key(kind) {
            actions.push(Action::Cleared(format!("{kind} cleared")));
        }
    }
    let half = chrono::Duration::from_std(rpo_target / 2).unwrap_or(chrono::Duration::MAX);
    let mut last_switch = state.last_switch;
    let primary = match &report.server {
        ServerProbe::Reachable(w) if !w.in_recovery && !w.archiver.failing() => Some(w),
        _ => None,
    };
    // `lag_bytes` is known only for this cluster's server with a durable LSN.
    if let (Some(w), Some(lag)) = (primary, report.wal.lag_bytes.filter(|l| *l > 0)) {
        let quiet_since = report.wal.last_archived_at;
        let quiet = quiet_since.is_none_or(|t| now - t >= half);
        let not_lately = state.last_switch.is_none_or(|t| now - t >= half);
        if quiet && not_lately {
            actions.push(Action::SwitchWal(format!(
                "{lag} bytes of WAL written up to {} are not in the repository, and nothing reached it since {}: closing the segment so that archive_command gets it",
                w.current_lsn,
                quiet_since.map_or_else(|| "ever".to_string(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            )));
            last_switch = Some(now);
        }
    }
    (
        WatchState {
            standing,
            last_switch,
        },
        actions,
    )
}

/// What one collection returns: the facts and the WAL index entries for the next, or
/// the failure in one line.
type Collected = Result<(Facts, Vec<IndexedWal>), String>;

/// A collection asked of the collector thread.
type CollectRequest = (
    Arc<Settings>,
    Vec<IndexedWal>,
    tokio::sync::oneshot::Sender<Collected>,
);

/// Starts the thread that collects, with a runtime of its own. The repository's reads
/// are futures rustc cannot prove `Send` for every lifetime (streams of closures over
/// borrowed records: `implementation of Send is not general enough`), so they cannot
/// run inside a service's `Send` future; on a thread of their own they need not, and a
/// slow repository holds up no other service. The thread ends when the sender is
/// dropped (the service returned).
fn start_collector() -> std::io::Result<tokio::sync::mpsc::Sender<CollectRequest>> {
    let (sender, mut requests) = tokio::sync::mpsc::channel::<CollectRequest>(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("tidemark-status".into())
        .spawn(move || {
            while let Some((settings, previous, reply)) = requests.blocking_recv() {
                let collected = runtime
                    .block_on(super::collect_reusing(&settings, previous))
                    .map_err(|e| e.one_line());
                let _ = reply.send(collected);
            }
        })?;
    Ok(sender)
}

/// The service: collect, publish, decide, act; every [`refresh_interval`] until the
/// agent stops.
pub async fn run(ctx: Arc<AgentContext>) -> ServiceResult {
    let cache = StatusCache::shared();
    let collector = start_collector()?;
    let mut state = WatchState::default();
    let mut previous_wal = Vec::new();
    let mut repository_failing = false;
    loop {
        let settings = ctx.settings();
        let (reply, answer) = tokio::sync::oneshot::channel();
        collector
            .send((
                Arc::clone(&settings),
                std::mem::take(&mut previous_wal),
                reply,
            ))
            .await
            .map_err(|_| "the status collector thread stopped")?;
        let collected = tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            c = answer => c.map_err(|_| "the status collector thread stopped")?,
        };
        match collected {
            Ok((facts, wal)) => {
                previous_wal = wal;
                cache.publish(facts);
                if std::mem::take(&mut repository_failing) {
                    tracing::info!("rpo watch: the repository can be read again");
                }
            }
            Err(e) => {
                cache.failed();
                if !repository_failing {
                    tracing::warn!(
                        "rpo watch: cannot read the repository: {e}; the metrics keep the last values read (tidemark_status_collected_timestamp says when)"
                    );
                    repository_failing = true;
                }
            }
        }
        if let Some(facts) = cache.facts() {
            let now = tidemark_store::repo::now();
            let report = super::assess(&facts, &super::thresholds(&settings), now);
            let (next, actions) = decide(&state, &report, settings.rpo_target, now);
            state = next;
            for action in actions {
                match action {
                    Action::Warn(text) => tracing::warn!("rpo watch: {text}"),
                    Action::Cleared(text) => tracing::info!("rpo watch: {text}"),
                    Action::SwitchWal(why) => match super::probe::switch_wal(&settings.pg).await {
                        Ok(at) => tracing::info!("rpo watch: pg_switch_wal() at {at}: {why}"),
                        Err(e) => tracing::warn!(
                            "rpo watch: pg_switch_wal() failed ({}): the role needs EXECUTE on pg_switch_wal(); {why}",
                            crate::exit::Failure::from(e).one_line()
                        ),
                    },
                }
            }
        }
        if !ctx.sleep(refresh_interval(settings.rpo_target)).await {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::assess::assess;
    use crate::status::assess::tests::{at, facts, limits};
    use crate::status::assess::Facts;
    use tidemark_pg::Lsn;

    const HOUR: Duration = Duration::from_secs(3600);

    fn with_server_at(lsn: u64) -> Facts {
        let mut f = facts();
        if let ServerProbe::Reachable(w) = &mut f.server {
            w.current_lsn = Lsn(lsn);
            w.current_lsn_bytes = lsn;
        }
        f
    }

    fn step(state: &WatchState, f: &Facts, now: &str) -> (WatchState, Vec<Action>) {
        let r = assess(f, &limits(), at(now));
        decide(state, &r, HOUR, at(now))
    }

    fn kinds_of(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Warn(t) => format!("warn {}", t.split(':').next().unwrap()),
                Action::Cleared(t) => format!("info {t}"),
                Action::SwitchWal(_) => "switch".to_string(),
            })
            .collect()
    }

    #[test]
    fn a_warning_is_logged_when_it_starts_and_when_it_clears_not_every_tick() {
        // Unarchived writes since 11:59:30; the last WAL reached the repository at
        // 11:59:40. The archiver is failing, so no switch is tried.
        let mut f = with_server_at(0x500_0100);
        if let ServerProbe::Reachable(w) = &mut f.server {
            w.archiver.last_failed_at = Some(at("2026-12-06T12:00:00Z"));
        }
        let s0 = WatchState::default();
        let (s1, a) = step(&s0, &f, "2026-12-06T12:30:00Z");
        assert_eq!(kinds_of(&a), ["warn archiver_failing"]);
        let (s2, a) = step(&s1, &f, "2026-12-06T13:00:00Z");
        assert_eq!(kinds_of(&a), ["warn rpo_breached"]);
        let (s3, a) = step(&s2, &f, "2026-12-06T13:00:05Z");
        assert!(a.is_empty(), "nothing changed: {a:?}");
        assert_eq!(s3.standing.len(), 2);
        // Archived again: both clear, each once.
        let (s4, a) = step(&s3, &facts(), "2026-12-06T13:00:10Z");
        assert_eq!(
            kinds_of(&a),
            ["info archiver_failing cleared", "info rpo_breached cleared"]
        );
        let (_, a) = step(&s4, &facts(), "2026-12-06T13:00:20Z");
        assert!(a.is_empty());
        // The backup's age is watched the same way.
        let (_, a) = step(&s4, &facts(), "2026-12-07T13:06:00Z");
        assert_eq!(kinds_of(&a), ["warn backup_too_old"]);
    }

    #[test]
    fn quiet_unarchived_writes_get_one_switch_per_half_target() {
        let f = with_server_at(0x500_0100);
        let s0 = WatchState::default();
        // 11:59:40 + 29 min: not yet half the target.
        let (s1, a) = step(&s0, &f, "2026-12-06T12:28:40Z");
        assert!(a.is_empty(), "{a:?}");
        let (s2, a) = step(&s1, &f, "2026-12-06T12:29:40Z");
        assert_eq!(kinds_of(&a), ["switch"]);
        assert_eq!(s2.last_switch, Some(at("2026-12-06T12:29:40Z")));
        match &a[0] {
            Action::SwitchWal(why) => assert!(
                why.starts_with("256 bytes of WAL written up to 0/5000100"),
                "{why}"
            ),
            other => panic!("{other:?}"),
        }
        // Still unarchived: not again before another half target.
        let (s3, a) = step(&s2, &f, "2026-12-06T12:50:00Z");
        assert!(a.is_empty(), "{a:?}");
        let (_, a) = step(&s3, &f, "2026-12-06T12:59:40Z");
        assert_eq!(kinds_of(&a), ["warn rpo_breached", "switch"]);
    }

    #[test]
    fn no_switch_without_writes_on_a_standby_or_with_a_failing_archiver() {
        let s0 = WatchState::default();
        // Everything archived.
        let (_, a) = step(&s0, &facts(), "2026-12-06T14:00:00Z");
        assert!(a.is_empty(), "{a:?}");
        // A standby.
        let mut standby = with_server_at(0x500_0100);
        if let ServerProbe::Reachable(w) = &mut standby.server {
            w.in_recovery = true;
        }
        let (_, a) = step(&s0, &standby, "2026-12-06T12:40:00Z");
        assert!(
            !a.iter().any(|a| matches!(a, Action::SwitchWal(_))),
            "{a:?}"
        );
        // WAL reached the repository lately (within half the target).
        let mut busy = with_server_at(0x500_0100);
        busy.last_archived_at = Some(at("2026-12-06T12:20:00Z"));
        let (_, a) = step(&s0, &busy, "2026-12-06T12:40:00Z");
        assert!(a.is_empty(), "{a:?}");
        // The server unreachable: nothing to switch.
        let mut down = with_server_at(0x500_0100);
        down.server = ServerProbe::Unreachable { error: "x".into() };
        let (_, a) = step(&s0, &down, "2026-12-06T12:40:00Z");
        assert_eq!(kinds_of(&a), ["warn server_unreachable"]);
    }

    #[test]
    fn the_refresh_follows_the_target_within_bounds() {
        assert_eq!(refresh_interval(HOUR), Duration::from_secs(15));
        assert_eq!(
            refresh_interval(Duration::from_secs(60)),
            Duration::from_secs(6)
        );
        assert_eq!(
            refresh_interval(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
    }
}
