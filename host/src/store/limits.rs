//! Cluster-wide per-caller limits: one GCRA rate and in-flight leases per caller, decided
//! in one script on the store's clock. A lease expires by itself (call timeout + slack)
//! when the replica that took it dies, so a crash never keeps a caller's slots.

use super::sessions::{Touch, valid_session_id};
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
    /// Gives the slot back before the call's answer leaves, and waits for the store to
    /// confirm it (bounded, like every store operation). Not sooner: a caller who has
    /// its answer may send its next call at once, to any replica, and must find its
    /// slot free there. (Sending the release without awaiting its reply lost that race
    /// under load: the next admission, on another replica's connection, reached the
    /// store first and was refused `in_flight`.)
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

fn lease_member(store: &Store) -> String {
    format!(
        "{}/{}/{}",
        store.replica(),
        *super::NONCE,
        LEASES.fetch_add(1, Ordering::Relaxed)
    )
}

impl Store {
    /// Admits one call of `owner` under `spec`, cluster-wide.
    pub async fn admit(&self, owner: &str, spec: LimitSpec) -> Result<Admission, StoreError> {
        let rate = self.caller_key(owner, "rate");
        let inflight = self.caller_key(owner, "inflight");
        let member = lease_member(self);
        let mut conn = self.conn();
        let mut invocation = scripts::ADMIT.prepare_invoke();
        invocation.key(&rate).key(&inflight);
        admission_args(&mut invocation, spec, &member);
        match self
            .run("admit", false, invocation.invoke_async(&mut conn))
            .await
        {
            Ok(reply) => self.admission(reply, spec, inflight, member),
            Err(e) => Err(self.lost(e, spec, inflight, member)),
        }
    }

    /// A session's tool call: the session confirmed and the call admitted in one round
    /// trip (the admission only when the session is confirmed).
    pub async fn touch_and_admit(
        &self,
        id: &str,
        owner: &str,
        ttl: Duration,
        grace: Duration,
        spec: LimitSpec,
    ) -> Result<(Touch, Option<Admission>), StoreError> {
        if !valid_session_id(id) {
            return Ok((Touch::Absent, None));
        }
        let inflight = self.caller_key(owner, "inflight");
        let member = lease_member(self);
        let mut conn = self.conn();
        let mut invocation = scripts::TOUCH_ADMIT.prepare_invoke();
        self.touch_invocation(&mut invocation, id, owner, ttl, grace);
        invocation
            .key(self.caller_key(owner, "rate"))
            .key(&inflight);
        admission_args(&mut invocation, spec, &member);
        let (status, _epoch, code, wait): (i64, String, i64, i64) = match self
            .run("touch_admit", false, invocation.invoke_async(&mut conn))
            .await
        {
            Ok(reply) => reply,
            Err(e) => return Err(self.lost(e, spec, inflight, member)),
        };
        let touch = Touch::from_status(status);
        if touch != Touch::Confirmed {
            return Ok((touch, None));
        }
        let admission = self.admission((code, wait), spec, inflight, member)?;
        Ok((touch, Some(admission)))
    }

    /// An admission that failed: the script may still run after we gave up on it, and a
    /// lease nobody holds would keep the caller's slot until it expires. Taken back.
    fn lost(&self, e: StoreError, spec: LimitSpec, inflight: String, member: String) -> StoreError {
        if spec.max_in_flight.unwrap_or(0) > 0 && !matches!(e, StoreError::Down) {
            drop(Lease {
                store: self.clone(),
                key: inflight,
                member,
            });
        }
        e
    }

    /// The admission a script's reply says.
    fn admission(
        &self,
        reply: (i64, i64),
        spec: LimitSpec,
        inflight: String,
        member: String,
    ) -> Result<Admission, StoreError> {
        tracing::debug!(member, ?reply, "admission");
        Ok(match reply {
            (0, _) => {
                Admission::Admitted(spec.max_in_flight.is_some_and(|m| m > 0).then(|| Lease {
                    store: self.clone(),
                    key: inflight,
                    member,
                }))
            }
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

/// `spec` as the admission's arguments.
fn admission_args(invocation: &mut redis::ScriptInvocation<'_>, spec: LimitSpec, member: &str) {
    invocation
        .arg(spec.interval.map_or(0, |i| i.as_micros().max(1) as u64))
        .arg(spec.burst.max(1))
        .arg(spec.max_in_flight.unwrap_or(0))
        .arg(member)
        .arg(spec.lease_ttl.as_micros() as u64);
}
