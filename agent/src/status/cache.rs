//! The agent's latest status, shared by the RPO watch (which collects every few seconds)
//! and the metrics endpoint (which only reads): a scrape never reads the repository. One
//! per agent process ([`StatusCache::shared`]); it holds one [`Facts`] (bounded: a few
//! records and one line per timeline), replaced whole at each collection.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::assess::Facts;
use super::metrics::Collection;

/// The latest facts and how collecting went.
#[derive(Debug)]
pub struct StatusCache {
    /// The latest facts, `None` until the first collection succeeds; a watch channel so
    /// that the first scrape after the agent starts can wait for them.
    latest: watch::Sender<Option<Arc<Facts>>>,
    /// Collections that failed, and when the last one succeeded.
    collection: Mutex<Collection>,
}

impl StatusCache {
    /// An empty cache.
    pub fn new() -> StatusCache {
        StatusCache {
            latest: watch::channel(None).0,
            collection: Mutex::new(Collection {
                last_success: None,
                errors: 0,
            }),
        }
    }

    /// The agent's cache.
    pub fn shared() -> &'static StatusCache {
        static SHARED: OnceLock<StatusCache> = OnceLock::new();
        SHARED.get_or_init(StatusCache::new)
    }

    /// A successful collection.
    pub fn publish(&self, facts: Facts) {
        let at: DateTime<Utc> = facts.collected_at;
        self.latest.send_replace(Some(Arc::new(facts)));
        self.collection
            .lock()
            .expect("the status cache lock")
            .last_success = Some(at);
    }

    /// A collection that could not read the repository: the last facts stay.
    pub fn failed(&self) {
        self.collection
            .lock()
            .expect("the status cache lock")
            .errors += 1;
    }

    /// The latest facts.
    pub fn facts(&self) -> Option<Arc<Facts>> {
        self.latest.borrow().clone()
    }

    /// The latest facts, waiting up to `wait` for the first collection.
    pub async fn facts_within(&self, wait: Duration) -> Option<Arc<Facts>> {
        let mut receiver = self.latest.subscribe();
        let first = async {
            receiver
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|f| f.clone())
        };
        tokio::time::timeout(wait, first).await.ok().flatten()
    }

    /// How collecting went.
    pub fn collection(&self) -> Collection {
        self.collection
            .lock()
            .expect("the status cache lock")
            .clone()
    }
}

impl Default for StatusCache {
    fn default() -> Self {
        StatusCache::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::assess::tests::facts;

    #[tokio::test]
    async fn the_first_reader_waits_for_the_first_collection_and_failures_keep_the_facts() {
        let cache = Arc::new(StatusCache::new());
        assert!(cache
            .facts_within(Duration::from_millis(10))
            .await
            .is_none());
        let reader = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.facts_within(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        cache.publish(facts());
        assert_eq!(reader.await.unwrap().unwrap().stanza, "main");
        cache.failed();
        cache.failed();
        assert_eq!(cache.facts().unwrap().stanza, "main");
        let c = cache.collection();
        assert_eq!(c.errors, 2);
        assert_eq!(c.last_success, Some(facts().collected_at));
    }
}
