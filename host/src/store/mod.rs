//! The shared store of a fleet of replicas (`--store-url`, Valkey or Redis): session
//! records and owners, cluster-wide per-caller limits, and which replicas are alive.
//! Without it each replica keeps these in its own memory (the embedded default, today's
//! code). Every operation is bounded by `--store-timeout`, timed and counted; a failure
//! marks the store down until the heartbeat reaches it again, and while it is down
//! operations fail at once instead of each waiting out the timeout. The callers decide
//! how to degrade (ARCHITECTURE.md, "Scale-out").

mod catalog;
mod events;
mod heartbeat;
mod limits;
mod scripts;
mod sessions;

pub use catalog::{AdminAction, AdminEntry};
pub use events::{Cursor, Events, Replay, ResumeError, Retention};
pub use heartbeat::GRACE;
pub use limits::{Admission, Lease, LimitSpec};
pub use sessions::{Opened, SessionRecords, Touch};

use crate::metrics::Metrics;
use crate::secret::Secret;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// This process's part of the names it writes (lease members, its liveness): a replica
/// restarted under the same name (a container restart keeps the pod's) is another
/// process, and must neither release its predecessor's leases nor vouch for its calls.
static NONCE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{:08x}", heartbeat::rand_u64() as u32));

/// The least bound on an event's write or read (`--store-timeout` if longer).
const EVENTS_BOUND: Duration = Duration::from_secs(2);

/// How the store is reached and named.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `redis://`, `rediss://` (TLS) or `redis+unix://`; may carry a password
    pub url: Secret,
    /// the first part of every key, so several fleets can share one store
    pub prefix: String,
    /// this replica's name in the store (leases, heartbeats, logs)
    pub replica: String,
    /// the bound on one operation
    pub timeout: Duration,
    /// how long and how many events a resumable stream keeps
    pub retention: Retention,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("--store-url is not a Valkey/Redis URL (redis://, rediss:// or redis+unix://): {0}")]
    Url(String),
    #[error("the store is down (since the last failed operation; the heartbeat retries)")]
    Down,
    #[error("the store did not answer within {0} ms (--store-timeout)")]
    Timeout(u128),
    #[error("the store failed: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the store answered something unexpected: {0}")]
    Reply(String),
}

impl StoreError {
    /// A refusal of our credentials: a configuration error, not an outage.
    pub fn is_auth(&self) -> bool {
        matches!(self, StoreError::Redis(e) if e.kind() == redis::ErrorKind::AuthenticationFailed
            || e.code().is_some_and(|c| c == "WRONGPASS" || c == "NOAUTH" || c == "NOPERM"))
    }
}

/// The store; cheap to clone.
#[derive(Clone)]
pub struct Store(Arc<Inner>);

/// Consecutive timeouts that make the store count as down.
const TIMEOUTS_TO_DOWN: u32 = 3;

/// The connection's own response timeout, behind ours.
const CONNECTION_BACKSTOP: Duration = Duration::from_secs(60);

struct Inner {
    conn: ConnectionManager,
    blobs: ConnectionManager,
    /// resumable streams' events (results: up to a megabyte each), apart from the
    /// decisions on `conn`
    events: ConnectionManager,
    prefix: String,
    replica: String,
    timeout: Duration,
    retention: Retention,
    metrics: Arc<Metrics>,
    up: AtomicBool,
    /// timeouts in a row
    timeouts: AtomicU32,
    /// replicas alive at the last heartbeat (at least this one)
    replicas: AtomicU32,
    /// the store's epoch as last seen: a new one means it lost its data
    epoch: Mutex<Option<String>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.0.prefix)
            .field("replica", &self.0.replica)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A handle on the store; connects lazily (a store that is down at start is an
    /// outage, reported and retried, not a reason to stay down).
    pub fn new(settings: Settings, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        let client = redis::Client::open(settings.url.expose())
            .map_err(|e| StoreError::Url(e.to_string()))?;
        // Our own timeouts bound every operation; the connection's are a backstop.
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(CONNECTION_BACKSTOP))
            .set_connection_timeout(Some(settings.timeout.max(Duration::from_millis(500))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| StoreError::Url(e.to_string()))?;
        // Component bytes (megabytes) travel on a connection of their own, so they never
        // hold up the decisions queued behind them on the multiplexed one.
        let blobs = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| StoreError::Url(e.to_string()))?;
        let events = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| StoreError::Url(e.to_string()))?;
        metrics.declare_store();
        metrics.store_up(false);
        Ok(Self(Arc::new(Inner {
            conn,
            blobs,
            events,
            prefix: settings.prefix,
            replica: settings.replica,
            timeout: settings.timeout,
            retention: settings.retention,
            metrics,
            up: AtomicBool::new(false),
            timeouts: AtomicU32::new(0),
            replicas: AtomicU32::new(1),
            epoch: Mutex::new(None),
        })))
    }

    /// One round trip at start: a store that refuses our credentials stops the start;
    /// one that does not answer is reported, and the replica starts degraded.
    pub async fn check(&self) -> Result<(), StoreError> {
        match self.heartbeat_once().await {
            Ok(()) => Ok(()),
            Err(e) if e.is_auth() => Err(e),
            Err(e) => {
                tracing::warn!(
                    "the store does not answer yet ({e}); serving degraded until it does"
                );
                Ok(())
            }
        }
    }

    /// How long and how many events a resumable stream keeps.
    pub fn retention(&self) -> Retention {
        self.0.retention
    }

    pub fn replica(&self) -> &str {
        &self.0.replica
    }

    /// Whether the last operation reached the store.
    pub fn is_up(&self) -> bool {
        self.0.up.load(Ordering::Relaxed)
    }

    /// Replicas alive at the last heartbeat (at least 1): a limit's local share while
    /// the store is down.
    pub fn replicas(&self) -> u32 {
        self.0.replicas.load(Ordering::Relaxed).max(1)
    }

    /// Counts a decision taken without the store (`limits`, `sessions`).
    pub fn fell_back(&self, what: &str) {
        self.0.metrics.store_fallback(what);
    }

    fn key(&self, rest: &str) -> String {
        format!("{}:{rest}", self.0.prefix)
    }

    /// The keys of one caller share a hash tag: a short digest of the owner, so no OAuth
    /// subject appears in a key name. (The scripts still assume a standalone server.)
    fn caller_key(&self, owner: &str, what: &str) -> String {
        let digest = Sha256::digest(owner.as_bytes());
        let tag: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        self.key(&format!("{{c:{tag}}}:{what}"))
    }

    /// The fingerprint stored as a session's owner.
    fn fingerprint(owner: &str) -> String {
        Sha256::digest(owner.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn conn(&self) -> ConnectionManager {
        self.0.conn.clone()
    }

    fn blob_conn(&self) -> ConnectionManager {
        self.0.blobs.clone()
    }

    /// The name this process beats under: its replica and its nonce.
    fn process(&self) -> String {
        format!("{}/{}", self.replica(), *NONCE)
    }

    /// An operation on events: on their own connection, bounded by the events' bound,
    /// timed and counted, but never marking the store down (a large result or a full
    /// store must not degrade the replica's decisions); fails at once while it is down.
    async fn run_events<T, F>(&self, op: &'static str, work: F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        self.unless_down(op)?;
        self.timed(op, self.0.timeout.max(EVENTS_BOUND), work).await
    }

    /// [`Store::run`] with its own bound (moving a component's bytes takes longer than
    /// a decision); running past that bound alone does not count toward the store being
    /// down.
    async fn run_within<T, F>(
        &self,
        op: &'static str,
        bound: Duration,
        work: F,
    ) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        self.unless_down(op)?;
        let result = self.timed(op, bound, work).await;
        if !matches!(result, Err(StoreError::Timeout(_))) {
            self.note(op, &result);
        }
        result
    }

    /// Runs one operation: fails at once while the store is down (the heartbeat probes
    /// it), else bounded by the timeout; timed, counted, and the store's state updated.
    async fn run<T, F>(&self, op: &'static str, probe: bool, work: F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        if !probe {
            self.unless_down(op)?;
        }
        let result = self.timed(op, self.0.timeout, work).await;
        self.note(op, &result);
        result
    }

    /// Fails at once (counted) while the store is down.
    fn unless_down(&self, op: &'static str) -> Result<(), StoreError> {
        if self.is_up() {
            return Ok(());
        }
        self.0.metrics.store_op(op, false, None);
        Err(StoreError::Down)
    }

    /// `work` within `bound`, timed and counted.
    async fn timed<T, F>(&self, op: &'static str, bound: Duration, work: F) -> Result<T, StoreError>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let started = Instant::now();
        let result = match tokio::time::timeout(bound, work).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StoreError::Redis(e)),
            Err(_) => Err(StoreError::Timeout(bound.as_millis())),
        };
        let elapsed = started.elapsed();
        self.0
            .metrics
            .store_op(op, result.is_ok(), result.is_ok().then_some(elapsed));
        result
    }

    /// The store's state after an operation: up on an answer; down on a lost connection
    /// at once, on slowness only when it lasts (one slow answer on a loaded store must
    /// not degrade the replica).
    fn note<T>(&self, op: &'static str, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => {
                self.0.timeouts.store(0, Ordering::Relaxed);
                if !self.0.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(replica = self.replica(), "the store is reachable");
                    self.0.metrics.store_up(true);
                }
            }
            Err(e) => {
                let slow = matches!(e, StoreError::Timeout(_));
                let timeouts = match slow {
                    true => self.0.timeouts.fetch_add(1, Ordering::Relaxed) + 1,
                    false => 0,
                };
                if (!slow || timeouts >= TIMEOUTS_TO_DOWN)
                    && self.0.up.swap(false, Ordering::Relaxed)
                {
                    tracing::warn!(op, "the store is down: {e}; degrading until it answers");
                    self.0.metrics.store_up(false);
                }
            }
        }
    }
}

/// A name for this replica: the host's name (a pod's name in Kubernetes) and the process.
pub fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caller_keys_share_a_tag_and_hide_the_owner() {
        let store = Store::new(
            Settings {
                url: Secret::new("redis://127.0.0.1:1/"),
                prefix: "p".into(),
                replica: "r".into(),
                timeout: Duration::from_millis(10),
                retention: Retention {
                    time: Duration::from_secs(1),
                    events: 1,
                },
            },
            Arc::new(Metrics::new()),
        );
        let store = store.expect("a lazy handle needs no server");
        let rate = store.caller_key("oauth https://i alice", "rate");
        let inflight = store.caller_key("oauth https://i alice", "inflight");
        assert!(!rate.contains("alice"));
        assert_eq!(rate.split(':').nth(1), inflight.split(':').nth(1));
        assert!(
            rate.starts_with("p:{c:") && rate.ends_with("}:rate"),
            "{rate}"
        );
        assert_eq!(Store::fingerprint("x").len(), 64);
    }

    #[test]
    fn a_url_of_another_database_is_refused_by_name() {
        let err = Store::new(
            Settings {
                url: Secret::new("mysql://u:secret@h/db"),
                prefix: "p".into(),
                replica: "r".into(),
                timeout: Duration::from_millis(10),
                retention: Retention {
                    time: Duration::from_secs(1),
                    events: 1,
                },
            },
            Arc::new(Metrics::new()),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("--store-url"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }
}
