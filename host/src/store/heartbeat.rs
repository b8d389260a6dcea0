//! Each replica's heartbeat (every second): it probes the store (bringing it back up
//! after an outage), counts the replicas alive (a limit's share while the store is down)
//! and watches the store's epoch. A new epoch means the store lost its data (restarted
//! empty, flushed); the replica then writes back the sessions it serves.

use super::{SessionRecords, Store, StoreError, scripts};
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often a replica beats.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How long a replica counts as alive after its last beat.
pub(super) const ALIVE_FOR: Duration = Duration::from_secs(3);
/// How long after the store lost its data an unknown session is "unconfirmed" (503)
/// rather than absent (404): every live replica beats within the first second of it and
/// then writes its sessions back (one round trip each), which this must outlast.
pub const GRACE: Duration = Duration::from_secs(5);

impl Store {
    /// One heartbeat; returns whether the epoch changed since the last one seen.
    async fn beat(&self) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let fresh = format!("{:016x}", rand_u64());
        let mut invocation = scripts::HEARTBEAT.prepare_invoke();
        invocation
            .key(self.key("epoch"))
            .key(self.key("replicas"))
            .arg(self.process())
            .arg(ALIVE_FOR.as_micros() as u64)
            .arg(fresh)
            .arg(super::events::LATE.as_micros() as u64);
        let (epoch, alive): (String, u32) = self
            .run("heartbeat", true, invocation.invoke_async(&mut conn))
            .await?;
        self.0.replicas.store(alive.max(1), Ordering::Relaxed);
        self.0.metrics.store_replicas(alive);
        let mut seen = self.0.epoch.lock().unwrap_or_else(|e| e.into_inner());
        let changed = seen.as_ref().is_some_and(|old| *old != epoch);
        *seen = Some(epoch);
        Ok(changed)
    }

    pub(super) async fn heartbeat_once(&self) -> Result<(), StoreError> {
        self.beat().await.map(|_| ())
    }

    /// Beats until `stop`; `live` lists the sessions this replica serves, written back
    /// through `records` when the store lost its data.
    pub fn spawn_heartbeat<L, F>(
        &self,
        records: Arc<SessionRecords>,
        live: L,
        stop: CancellationToken,
    ) where
        L: Fn() -> F + Send + Sync + 'static,
        F: Future<Output = HashSet<String>> + Send,
    {
        let store = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut beats: u64 = 0;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                beats += 1;
                match store.beat().await {
                    Ok(true) => {
                        let live = live().await;
                        match records.reseed(&live).await {
                            Ok(n) => tracing::warn!(
                                sessions = n,
                                "the store lost its data (a new epoch); wrote back this \
                                 replica's sessions"
                            ),
                            Err(e) => {
                                tracing::warn!("writing sessions back to the store failed: {e}");
                                // Try again at the next beat.
                                *store.0.epoch.lock().unwrap_or_else(|e| e.into_inner()) =
                                    Some(String::new());
                            }
                        }
                    }
                    Ok(false) => {
                        if beats.is_multiple_of(30) {
                            records.prune(&live().await);
                        }
                    }
                    Err(e) => tracing::debug!("heartbeat: {e}"),
                }
            }
        });
    }
}

/// A random epoch name (ring's system random, which the TLS stack already uses).
pub(super) fn rand_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    u64::from_le_bytes(bytes)
}
