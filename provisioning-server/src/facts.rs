//! What a heartbeat answer depends on (the recorder's key, account and revocation, the
//! account's name and whether it is disabled), kept in memory so that a heartbeat touches
//! no database.
//!
//! Coherence: changes made by this process are forgotten here at once by the code that
//! makes them. Changes made elsewhere (the admin CLI, another replica) reach every server
//! through the `fact_changes` table, which database triggers fill whoever writes: each
//! server reads it every `refresh` (default 1 s), so a change made elsewhere holds on this
//! server within that period plus one query. If reading it fails for longer than
//! `STALE_AFTER_REFRESHES` periods, the cache is not trusted and every lookup goes to the
//! database until reading works again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::store::{FactChange, Store, StoreError};

/// How far back each read of the change table looks behind the database time of the
/// previous read: a transaction that stamped its change earlier but committed later is
/// still seen. Forgetting an entry twice costs one database read.
const LOOKBACK_MS: i64 = 10_000;
/// After this many refresh periods without a successful read, cached facts are not used.
const STALE_AFTER_REFRESHES: u32 = 5;
/// Change rows older than this are deleted (by whichever server gets there).
const KEEP_CHANGES_MS: i64 = 3_600_000;
/// How often old change rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The facts about one recorder that its heartbeat needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderFacts {
    pub account_id: String,
    pub key_fingerprint: String,
    pub revoked: bool,
}

/// The facts about one account that a heartbeat answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountFacts {
    pub name: String,
    /// It or an ancestor is disabled.
    pub disabled: bool,
}

/// One map of cached facts with a generation that every forget bumps: a lookup that read
/// the database before a forget does not store what it read after it.
struct Map<T> {
    entries: RwLock<HashMap<String, Arc<T>>>,
    generation: AtomicU64,
}

impl<T> Default for Map<T> {
    fn default() -> Self {
        Map {
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }
}

impl<T> Map<T> {
    fn get(&self, id: &str) -> Option<Arc<T>> {
        self.entries.read().expect("not poisoned").get(id).cloned()
    }

    fn insert_if_current(&self, id: &str, value: Arc<T>, generation: u64) {
        let mut entries = self.entries.write().expect("not poisoned");
        // Checked under the lock that forgets take too.
        if self.generation.load(Ordering::Acquire) == generation {
            entries.insert(id.to_string(), value);
        }
    }

    fn forget(&self, id: &str) {
        let mut entries = self.entries.write().expect("not poisoned");
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(id);
    }

    fn forget_all(&self) {
        let mut entries = self.entries.write().expect("not poisoned");
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
    }

    fn len(&self) -> usize {
        self.entries.read().expect("not poisoned").len()
    }
}

/// The in-memory facts, shared by the heartbeat path and everything that changes them.
pub struct Facts {
    recorders: Map<RecorderFacts>,
    accounts: Map<AccountFacts>,
    refresh: Duration,
    /// When the change table was last read successfully (None: not yet).
    synced_at: RwLock<Option<Instant>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Facts {
    pub fn new(refresh: Duration) -> Arc<Self> {
        Arc::new(Facts {
            recorders: Map::default(),
            accounts: Map::default(),
            refresh,
            synced_at: RwLock::new(None),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Whether cached entries may be used: the change table was read recently.
    fn trusted(&self) -> bool {
        match *self.synced_at.read().expect("not poisoned") {
            Some(at) => at.elapsed() < self.refresh * STALE_AFTER_REFRESHES,
            None => false,
        }
    }

    fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The recorder's facts, from memory or else from the store (None: no such recorder).
    pub async fn recorder(
        &self,
        store: &dyn Store,
        id: &str,
    ) -> Result<Option<Arc<RecorderFacts>>, StoreError> {
        let trusted = self.trusted();
        if trusted {
            if let Some(facts) = self.recorders.get(id) {
                self.count(true);
                return Ok(Some(facts));
            }
        }
        self.count(false);
        let generation = self.recorders.generation.load(Ordering::Acquire);
        let Some(recorder) = store.recorder(id).await? else {
            return Ok(None);
        };
        let facts = Arc::new(RecorderFacts {
            account_id: recorder.account_id,
            key_fingerprint: recorder.key_fingerprint,
            revoked: recorder.revoked_at.is_some(),
        });
        if trusted {
            self.recorders
                .insert_if_current(id, facts.clone(), generation);
        }
        Ok(Some(facts))
    }

    /// The account's facts, from memory or else from the store (None: no such account).
    pub async fn account(
        &self,
        store: &dyn Store,
        id: &str,
    ) -> Result<Option<Arc<AccountFacts>>, StoreError> {
        let trusted = self.trusted();
        if trusted {
            if let Some(facts) = self.accounts.get(id) {
                self.count(true);
                return Ok(Some(facts));
            }
        }
        self.count(false);
        let generation = self.accounts.generation.load(Ordering::Acquire);
        let Some(account) = store.account(id).await? else {
            return Ok(None);
        };
        let facts = Arc::new(AccountFacts {
            disabled: account.effectively_disabled(),
            name: account.name,
        });
        if trusted {
            self.accounts
                .insert_if_current(id, facts.clone(), generation);
        }
        Ok(Some(facts))
    }

    /// A recorder was revoked, moved, re-keyed or removed by this process.
    pub fn forget_recorder(&self, id: &str) {
        self.recorders.forget(id);
    }

    /// An account was renamed, disabled or enabled: that can change every account below
    /// it, and accounts are few beside recorders, so all are read again.
    pub fn forget_accounts(&self) {
        self.accounts.forget_all();
    }

    fn apply(&self, changes: &[FactChange]) {
        let mut accounts_changed = false;
        for change in changes {
            match change {
                FactChange::Recorder(id) => self.recorders.forget(id),
                FactChange::Account(_) => accounts_changed = true,
            }
        }
        if accounts_changed {
            self.forget_accounts();
        }
    }

    /// (hits, misses) since start.
    pub fn lookups(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// (recorders, accounts) held in memory.
    pub fn sizes(&self) -> (usize, usize) {
        (self.recorders.len(), self.accounts.len())
    }

    /// Reads the change table every `refresh` until shutdown, forgetting what changed,
    /// and deletes old change rows now and then.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn Store>, shutdown: CancellationToken) {
        // Where to read from: the database's "now" at the first read, so history from
        // before this process started (when nothing was cached) is skipped.
        let mut since: Option<i64> = None;
        let mut last_prune = Instant::now();
        let mut failing = false;
        loop {
            match store.fact_changes_since(since.unwrap_or(i64::MAX)).await {
                Ok(read) => {
                    self.apply(&read.changes);
                    since = Some(read.now_ms - LOOKBACK_MS);
                    *self.synced_at.write().expect("not poisoned") = Some(Instant::now());
                    if failing {
                        log::info!("reading heartbeat fact changes works again");
                        failing = false;
                    }
                    if last_prune.elapsed() >= PRUNE_EVERY {
                        last_prune = Instant::now();
                        if let Err(e) = store
                            .prune_fact_changes(read.now_ms - KEEP_CHANGES_MS)
                            .await
                        {
                            log::warn!("deleting old fact changes failed: {e}");
                        }
                    }
                }
                Err(e) => {
                    if !failing {
                        log::warn!(
                            "reading heartbeat fact changes failed ({e}); heartbeats read the \
                             database until it works again"
                        );
                        failing = true;
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.refresh) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_that_read_before_a_forget_does_not_store_what_it_read() {
        let map: Map<u32> = Map::default();
        let generation = map.generation.load(Ordering::Acquire);
        map.forget("r1");
        map.insert_if_current("r1", Arc::new(1), generation);
        assert!(map.get("r1").is_none());
        let generation = map.generation.load(Ordering::Acquire);
        map.insert_if_current("r1", Arc::new(2), generation);
        assert_eq!(map.get("r1").as_deref(), Some(&2));
    }

    #[test]
    fn an_account_change_forgets_every_account_and_a_recorder_change_only_that_recorder() {
        let facts = Facts::new(Duration::from_secs(1));
        for id in ["r1", "r2"] {
            facts.recorders.insert_if_current(
                id,
                Arc::new(RecorderFacts {
                    account_id: "a".into(),
                    key_fingerprint: "k".into(),
                    revoked: false,
                }),
                0,
            );
        }
        for id in ["a", "b"] {
            let generation = facts.accounts.generation.load(Ordering::Acquire);
            facts.accounts.insert_if_current(
                id,
                Arc::new(AccountFacts {
                    name: id.into(),
                    disabled: false,
                }),
                generation,
            );
        }
        facts.apply(&[FactChange::Recorder("r1".into())]);
        assert_eq!(facts.sizes(), (1, 2));
        facts.apply(&[FactChange::Account("b".into())]);
        assert_eq!(facts.sizes(), (1, 0));
    }
}
