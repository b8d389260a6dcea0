//! Admin changes across a fleet on a shared store: an admin action done on one replica
//! is recorded in the store (`store/catalog.rs`); every replica polls the store's
//! generation each second and applies what it has not, through the same validation as
//! the admin API. So a change reaches every replica within about a second plus its load
//! time. A replica starting applies the store's admin layer before it serves.

use super::App;
use crate::runtime::{SwapError, hex_sha256};
use crate::store::{AdminAction, AdminEntry, Store, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a replica looks for admin changes made elsewhere.
pub const POLL: Duration = Duration::from_secs(1);

/// What this replica has applied of the store's admin layer.
#[derive(Default)]
pub struct Applied {
    /// the generation last read
    generation: Mutex<u64>,
    /// per name, the generation of the entry applied (or found already true here)
    names: Mutex<HashMap<String, u64>>,
}

impl Applied {
    fn names(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, u64> {
        self.generation.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An entry applied (or refused, or this replica's own) at `generation`: nothing
    /// more to do for it. A pass that read an older entry never lowers it.
    pub fn own(&self, name: &str, generation: u64) {
        let mut names = self.names();
        let done = names.entry(name.to_owned()).or_default();
        *done = (*done).max(generation);
    }
}

impl App {
    /// Records an admin action this replica just did, so the others apply it.
    pub(super) async fn record_admin(
        &self,
        name: &str,
        action: AdminAction,
        digest: Option<&str>,
        bytes: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let Some(store) = &self.settings.store else {
            return Ok(());
        };
        let generation = store.record_admin(name, action, digest, bytes).await?;
        self.applied.own(name, generation);
        Ok(())
    }

    /// One pass: applies the store's admin entries this replica has not applied.
    pub(super) async fn converge(&self, store: &Store) -> Result<(), StoreError> {
        let generation = store.admin_generation().await?;
        {
            let seen = self.applied.seen();
            if *seen == generation {
                return Ok(());
            }
            if generation < *seen {
                // The store lost its data (restarted empty): its generations start over.
                tracing::warn!("the store's admin generation went back; reading it afresh");
                self.applied.names().clear();
            }
        }
        let entries = store.admin_entries().await?;
        for (name, entry) in &entries {
            let done = self.applied.names().get(name).copied();
            if done.is_some_and(|g| g >= entry.generation) {
                continue;
            }
            match self.apply(store, name, entry).await {
                Ok(()) => self.applied.own(name, entry.generation),
                // Tried again at the next poll.
                Err(Failed::Store(e)) => return Err(e),
                Err(Failed::Here(e)) => {
                    // Refused here (validation, a history that differs): the live version
                    // stays, drift shows in component_info; not retried until it changes.
                    tracing::warn!(
                        component = name,
                        "an admin change made on another replica was not applied here: {e}"
                    );
                    self.applied.own(name, entry.generation);
                }
            }
        }
        *self.applied.seen() = generation;
        Ok(())
    }

    async fn apply(&self, store: &Store, name: &str, entry: &AdminEntry) -> Result<(), Failed> {
        let here = |e: String| Failed::Here(e);
        let live = self
            .runtime
            .component_views()
            .await
            .0
            .into_iter()
            .find(|v| v.name == name);
        let live_digest = live
            .as_ref()
            .and_then(|v| v.live.as_ref())
            .map(|i| i.digest.to_string());
        let pinned = live.as_ref().is_some_and(|v| v.admin_override);
        match (entry.action, &entry.digest) {
            (AdminAction::Remove, _) => match self.runtime.remove_component(name).await {
                Ok(()) | Err(SwapError::NotFound(_)) => {}
                Err(e) => return Err(here(e.to_string())),
            },
            (AdminAction::Put | AdminAction::Rollback, Some(digest)) => {
                if pinned && live_digest.as_deref() == Some(digest) {
                    return Ok(());
                }
                match store.admin_blob(digest).await.map_err(Failed::Store)? {
                    Some(bytes) => {
                        // The digest the runtime gives a component: the entry names it so.
                        let actual = hex_sha256(&bytes);
                        if actual != *digest {
                            return Err(here(format!(
                                "the store's bytes for {digest} hash to {actual}; refused"
                            )));
                        }
                        self.runtime
                            .put_component(name, bytes)
                            .await
                            .map_err(|e| here(e.to_string()))?;
                    }
                    // The version is live here already (the directory's, the built-in).
                    None if live_digest.as_deref() == Some(digest) => {}
                    // A rollback to a version never put through the admin API (the
                    // directory's, the built-in): this replica's own history has it. Only
                    // to the same version as elsewhere, checked first, so a history that
                    // differs leaves this replica as it was.
                    None if entry.action == AdminAction::Rollback => {
                        let previous = live.as_ref().and_then(|v| v.previous.last());
                        if previous != Some(digest) {
                            return Err(here(format!(
                                "this replica's previous version is {previous:?}, not {digest}"
                            )));
                        }
                        self.runtime
                            .rollback_component(name)
                            .await
                            .map_err(|e| here(e.to_string()))?;
                    }
                    None => return Err(here(format!("the store has no bytes for {digest}"))),
                }
            }
            (_, None) => return Err(here("an entry without a digest".to_owned())),
        }
        tracing::info!(
            component = name,
            generation = entry.generation,
            "applied an admin change made on another replica"
        );
        Ok(())
    }
}

/// Why an entry was not applied: the store (tried again at the next poll), or this
/// replica refused it (not retried until the entry changes).
enum Failed {
    Store(StoreError),
    Here(String),
}

/// Polls the store for admin changes until `stop` (or the app is gone).
pub fn spawn(app: Weak<App>, store: Store, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(app) = app.upgrade() else { return };
            if let Err(e) = app.converge(&store).await {
                tracing::debug!("admin changes not read from the store: {e}");
            }
        }
    });
}

impl App {
    /// At start: the store's admin layer applied before the replica serves (when the
    /// store answers; otherwise the poll applies it once it does).
    pub async fn apply_admin_layer(self: &Arc<Self>) {
        if let Some(store) = &self.settings.store
            && store.is_up()
            && let Err(e) = self.converge(store).await
        {
            tracing::warn!("the store's admin changes were not applied at start: {e}");
        }
    }
}
