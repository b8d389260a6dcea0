//! Cluster-wide per-caller limits: one GCRA rate and in-flight leases per caller, decided
//! in one script on the store's clock. A lease expires by itself (call timeout + slack)
//! when the replica that took it dies, so a crash never keeps a caller's slots.

use super::{Store, StoreError, scripts};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One caller's limits as the store applies them.
#[derive(Clone, Copy, Debug)]
pub struct LimitSpec {
    /// the time one call's token takes to come back (period / count); None: no rate
    pub interval: Option<Duration>,
    /// calls allowed at once on a full bucket
    pub burst: u32,
    pub max_in_flight: Option<u32>,
    /// how long a lease outlives a replica that died holding it
    pub lease_ttl: Duration,
}

/// The store's decision.
#[derive(Debug)]
pub enum Admission {
    Admitted(Option<Lease>),
    Rate { retry_after: Duration },
    InFlight,
}

/// A call's in-flight slot in the store; given back when dropped (in the background: a
/// lost release expires with the lease).
pub struct Lease {
    store: Store,
    key: String,
    member: String,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lease")
    }
}

impl Lease {
    /// Gives the slot back before the call's answer leaves, so the caller's next call
    /// finds it free (a release in the background would race it).
    pub async fn release(mut self) {
        let key = std::mem::take(&mut self.key);
        let member = std::mem::take(&mut self.member);
        release(&self.store, &key, &member).await;
    }
}

async fn release(store: &Store, key: &str, member: &str) {
    let mut conn = store.conn();
    let mut command = redis::cmd("ZREM");
    command.arg(key).arg(member);
    let release = command.query_async::<i64>(&mut conn);
    // Tried even while the store is marked down: a slot kept over a blip would refuse
    // the caller until the lease expires.
    let released = store.run("release", true, release).await;
    tracing::debug!(member, ?released, "release");
    if let Err(e) = released {
        tracing::debug!("a lease was not released ({e}); it expires by itself");
    }
}

impl Drop for Lease {
    /// A call dropped before its end (cancelled, its client gone): released in the
    /// background.
    fn drop(&mut self) {
        if self.key.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let key = std::mem::take(&mut self.key);
        let member = std::mem::take(&mut self.member);
        runtime.spawn(async move { release(&store, &key, &member).await });
    }
}

static LEASES: AtomicU64 = AtomicU64::new(0);

/// This process's part of a lease's name: a replica restarted under the same name (a
/// container restart keeps the pod's) must not release its predecessor's leases.
static NONCE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{:08x}", super::heartbeat::rand_u64() as u32));

impl Store {
    /// Admits one call of `owner` under `spec`, cluster-wide.
    pub async fn admit(&self, owner: &str, spec: LimitSpec) -> Result<Admission, StoreError> {
        let rate = self.caller_key(owner, "rate");
        let inflight = self.caller_key(owner, "inflight");
        let member = format!(
            "{}/{}/{}",
            self.replica(),
            *NONCE,
            LEASES.fetch_add(1, Ordering::Relaxed)
        );
        let interval = spec.interval.map_or(0, |i| i.as_micros().max(1) as u64);
        let max = spec.max_in_flight.unwrap_or(0);
        let mut conn = self.conn();
        let mut invocation = scripts::ADMIT.prepare_invoke();
        invocation
            .key(&rate)
            .key(&inflight)
            .arg(interval)
            .arg(spec.burst.max(1))
            .arg(max)
            .arg(&member)
            .arg(spec.lease_ttl.as_micros() as u64);
        let reply: (i64, i64) = match self
            .run("admit", false, invocation.invoke_async(&mut conn))
            .await
        {
            Ok(reply) => reply,
            Err(e) => {
                // The script may still run after we gave up on it: a lease nobody holds
                // would keep the caller's slot until it expires. Take it back.
                if max > 0 && !matches!(e, StoreError::Down) {
                    drop(Lease {
                        store: self.clone(),
                        key: inflight,
                        member,
                    });
                }
                return Err(e);
            }
        };
        tracing::debug!(member, ?reply, "admission");
        Ok(match reply {
            (0, _) => Admission::Admitted((max > 0).then(|| Lease {
                store: self.clone(),
                key: inflight,
                member,
            })),
            (1, wait) => Admission::Rate {
                retry_after: Duration::from_micros(wait.max(0) as u64),
            },
            (2, _) => Admission::InFlight,
            (other, _) => {
                return Err(StoreError::Reply(format!("admit returned {other}")));
            }
        })
    }
}
