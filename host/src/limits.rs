//! Per-caller limits on tool calls: a token bucket (calls per minute, with a burst) and a
//! cap on calls in flight, kept per identity, so one runaway agent cannot take the
//! capacity the others need. Static tokens can carry their own limits (tokens file).
//! With a shared store (`--store-url`) the limits hold across every replica (the store
//! decides); while it is down, each replica enforces its share of them.

use crate::access::{Identity, Origin};
use crate::metrics::Metrics;
use crate::store::{Admission, Lease, LimitSpec, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// JSON-RPC code of a call refused by a per-caller limit (documented in docs/operating.md).
pub const LIMITED_CODE: i32 = -32029;
/// Past this many callers tracked, idle OAuth subjects (full bucket by their own limits,
/// nothing in flight) are forgotten: they are not a bounded set. Configured tokens are,
/// and are never forgotten.
const PRUNE_AT: usize = 4096;

/// A rate: `count` calls per `per`, e.g. `120/min`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    fn per_second(self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

impl std::str::FromStr for Rate {
    type Err = String;

    /// `N/s`, `N/min` or `N/h` (also `sec`, `second`, `m`, `minute`, `hour`).
    fn from_str(text: &str) -> Result<Self, String> {
        let (count, unit) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("`{text}` is not a rate; use N/s, N/min or N/h"))?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| format!("`{text}`: the count must be a positive integer"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("`{other}` is not a unit; use s, min or h")),
        };
        Ok(Rate { count, per })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

/// One caller's limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallerLimits {
    pub rate: Option<Rate>,
    /// calls the bucket holds when full (default: the rate's count)
    pub burst: Option<u32>,
    pub max_in_flight: Option<u32>,
}

impl CallerLimits {
    /// `self`, with what it leaves unset taken from `default`.
    pub fn or(self, default: CallerLimits) -> CallerLimits {
        CallerLimits {
            rate: self.rate.or(default.rate),
            burst: self.burst.or(if self.rate.is_some() {
                None
            } else {
                default.burst
            }),
            max_in_flight: self.max_in_flight.or(default.max_in_flight),
        }
    }

    /// One replica's share of these limits among `replicas` (rounded up: a share is
    /// never zero).
    fn share(self, replicas: u32) -> CallerLimits {
        if replicas <= 1 {
            return self;
        }
        let part = |n: u32| n.div_ceil(replicas).max(1);
        CallerLimits {
            rate: self.rate.map(|rate| Rate {
                count: part(rate.count),
                per: rate.per,
            }),
            burst: self.burst.map(part),
            max_in_flight: self.max_in_flight.map(part),
        }
    }

    /// These limits as the store applies them.
    fn spec(&self, lease_ttl: Duration) -> LimitSpec {
        LimitSpec {
            interval: self.rate.map(|rate| rate.per / rate.count),
            burst: self.burst.or(self.rate.map(|rate| rate.count)).unwrap_or(1),
            max_in_flight: self.max_in_flight,
            lease_ttl,
        }
    }

    fn capacity(&self) -> f64 {
        match (self.burst, self.rate) {
            (Some(burst), _) => f64::from(burst.max(1)),
            (None, Some(rate)) => f64::from(rate.count),
            (None, None) => f64::INFINITY,
        }
    }
}

/// Why a call was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Limited {
    Rate { rate: Rate, retry_after: Duration },
    InFlight { max: u32 },
}

impl Limited {
    /// The `limit` label of `mcp_sandbox_limited_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Limited::Rate { .. } => "rate",
            Limited::InFlight { .. } => "in_flight",
        }
    }

    /// Whole seconds to wait before trying again (at least 1).
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Limited::Rate { retry_after, .. } => retry_after.as_secs_f64().ceil().max(1.0) as u64,
            Limited::InFlight { .. } => 1,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Limited::Rate { rate, .. } => format!(
                "rate limit reached: this caller may make {rate} tool calls; retry after {} s",
                self.retry_after_secs()
            ),
            Limited::InFlight { max } => format!(
                "too many calls in flight: this caller may have {max} tool calls running at once"
            ),
        }
    }
}

/// The limiter; cheap to clone.
#[derive(Clone)]
pub struct Limiter(Arc<Inner>);

struct Inner {
    default: CallerLimits,
    /// by static token name
    per_token: HashMap<String, CallerLimits>,
    callers: Mutex<HashMap<String, State>>,
    metrics: Arc<Metrics>,
    /// the fleet's store, when there is one, and how long a lease outlives its replica
    cluster: Option<(Store, Duration)>,
}

struct State {
    tokens: f64,
    refilled: Instant,
    in_flight: u32,
    /// the limits this caller was admitted under: pruning judges by them, not by the
    /// server-wide defaults (a token's own `2/h` refills far slower than `--rate-limit`)
    limits: CallerLimits,
    /// a configured token (a bounded set): never pruned
    kept: bool,
}

/// A call's slot; the caller's in-flight count drops when it is dropped.
pub struct Permit {
    limiter: Option<(Arc<Inner>, String)>,
    /// the call's slot in the store (given back by [`Permit::release`], or when dropped)
    lease: Option<Lease>,
}

impl Permit {
    /// Ends the call's hold on its slot; call it before the answer is sent.
    pub async fn release(mut self) {
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((inner, owner)) = self.limiter.take() {
            let mut callers = inner.callers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(state) = callers.get_mut(&owner) {
                state.in_flight = state.in_flight.saturating_sub(1);
            }
        }
    }
}

impl Limiter {
    pub fn new(
        default: CallerLimits,
        per_token: HashMap<String, CallerLimits>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self::clustered(default, per_token, metrics, None)
    }

    /// A limiter whose decisions the store takes, when there is one (`lease_ttl`: how
    /// long a call's slot outlives a replica that died holding it).
    pub fn clustered(
        default: CallerLimits,
        per_token: HashMap<String, CallerLimits>,
        metrics: Arc<Metrics>,
        cluster: Option<(Store, Duration)>,
    ) -> Self {
        Self(Arc::new(Inner {
            default,
            per_token,
            callers: Mutex::new(HashMap::new()),
            metrics,
            cluster,
        }))
    }

    /// No limits at all.
    pub fn unlimited(metrics: Arc<Metrics>) -> Self {
        Self::new(CallerLimits::default(), HashMap::new(), metrics)
    }

    fn limits_of(&self, identity: &Identity) -> CallerLimits {
        match identity.origin {
            Origin::Token => self
                .0
                .per_token
                .get(&*identity.name)
                .map_or(self.0.default, |l| l.or(self.0.default)),
            Origin::OAuth | Origin::Anonymous | Origin::Local => self.0.default,
        }
    }

    /// A slot for one tool call by `identity`, or why not. Counts refusals. With a
    /// store the store decides (one round trip); without one, or while it is down, this
    /// replica does, on its share of the limits.
    pub async fn admit(&self, identity: &Identity) -> Result<Permit, Limited> {
        let limits = self.limits_of(identity);
        if limits.rate.is_none() && limits.max_in_flight.is_none() {
            return Ok(Permit {
                limiter: None,
                lease: None,
            });
        }
        let owner = identity.owner();
        if let Some((store, lease_ttl)) = &self.0.cluster {
            return match store.admit(&owner, limits.spec(*lease_ttl)).await {
                Ok(admission) => self.decided(identity, admission),
                Err(e) => {
                    tracing::debug!("limits decided locally: {e}");
                    store.fell_back("limits");
                    let share = limits.share(store.replicas());
                    self.admit_locally(identity, owner, share)
                }
            };
        }
        self.admit_locally(identity, owner, limits)
    }

    /// What the store needs to admit a call of `identity` in the same round trip as
    /// another decision (a session's touch): None without a store, or when the caller
    /// has no limits (then [`Limiter::admit`] takes no round trip).
    pub fn store_spec(&self, identity: &Identity) -> Option<LimitSpec> {
        let limits = self.limits_of(identity);
        if limits.rate.is_none() && limits.max_in_flight.is_none() {
            return None;
        }
        let (_, lease_ttl) = self.0.cluster.as_ref()?;
        Some(limits.spec(*lease_ttl))
    }

    /// The store's admission of a call of `identity`: its permit, or its refusal
    /// (counted).
    pub fn decided(&self, identity: &Identity, admission: Admission) -> Result<Permit, Limited> {
        let limits = self.limits_of(identity);
        let refused = match admission {
            Admission::Admitted(lease) => {
                return Ok(Permit {
                    limiter: None,
                    lease,
                });
            }
            Admission::Rate { retry_after } => Limited::Rate {
                rate: limits.rate.unwrap_or(Rate {
                    count: 1,
                    per: Duration::from_secs(1),
                }),
                retry_after,
            },
            Admission::InFlight => Limited::InFlight {
                max: limits.max_in_flight.unwrap_or(0),
            },
        };
        self.0.metrics.limited(&label(identity), refused.kind());
        Err(refused)
    }

    /// [`Limiter::admit`] in this replica's memory.
    fn admit_locally(
        &self,
        identity: &Identity,
        owner: String,
        limits: CallerLimits,
    ) -> Result<Permit, Limited> {
        let now = Instant::now();
        let mut callers = self.0.callers.lock().unwrap_or_else(|e| e.into_inner());
        if callers.len() >= PRUNE_AT && !callers.contains_key(&owner) {
            prune(&mut callers, now);
        }
        let capacity = limits.capacity();
        let state = callers.entry(owner.clone()).or_insert(State {
            tokens: capacity,
            refilled: now,
            in_flight: 0,
            limits,
            kept: identity.origin == Origin::Token,
        });
        if let Err(limited) = check(state, &limits, capacity, now) {
            drop(callers);
            self.0.metrics.limited(&label(identity), limited.kind());
            return Err(limited);
        }
        Ok(Permit {
            limiter: Some((self.0.clone(), owner)),
            lease: None,
        })
    }

    /// Counts a session (`sessions`) or stream (`streams`) refused for `identity` (see
    /// `server/sessions.rs`, `server/stream_budget.rs`).
    pub fn count_refusal(&self, identity: &Identity, limit: &'static str) {
        self.0.metrics.limited(&label(identity), limit);
    }
}

/// Takes one token and one in-flight slot, or says which limit is reached.
fn check(
    state: &mut State,
    limits: &CallerLimits,
    capacity: f64,
    now: Instant,
) -> Result<(), Limited> {
    if let Some(max) = limits.max_in_flight
        && state.in_flight >= max
    {
        return Err(Limited::InFlight { max });
    }
    if let Some(rate) = limits.rate {
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        state.tokens = (state.tokens + elapsed * rate.per_second()).min(capacity);
        state.refilled = now;
        if state.tokens < 1.0 {
            let wait = (1.0 - state.tokens) / rate.per_second();
            return Err(Limited::Rate {
                rate,
                retry_after: Duration::from_secs_f64(wait),
            });
        }
        state.tokens -= 1.0;
    }
    state.in_flight += 1;
    Ok(())
}

/// Forgets callers that a fresh entry would equal: not a configured token, nothing in
/// flight, and a bucket refilled by the caller's own rate. Forgetting any other would
/// hand a limited caller a fresh bucket.
fn prune(callers: &mut HashMap<String, State>, now: Instant) {
    callers.retain(|_, state| state.kept || state.in_flight > 0 || !refilled(state, now));
}

fn refilled(state: &State, now: Instant) -> bool {
    state.limits.rate.is_none_or(|rate| {
        let elapsed = now.saturating_duration_since(state.refilled).as_secs_f64();
        state.tokens + elapsed * rate.per_second() >= state.limits.capacity()
    })
}

/// The caller's label in metrics: a configured token's name, or the kind of caller
/// (OAuth subjects are not a bounded set).
pub fn label(identity: &Identity) -> String {
    match identity.origin {
        Origin::Token => identity.name.to_string(),
        Origin::OAuth => "oauth".to_owned(),
        Origin::Anonymous => "anonymous".to_owned(),
        // One per process, but its name is the user's: the label stays bounded.
        Origin::Local => "local".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Without a store, admission never waits.
    fn admit(limiter: &Limiter, identity: &Identity) -> Result<Permit, Limited> {
        futures::executor::block_on(limiter.admit(identity))
    }

    #[test]
    fn a_share_rounds_up_and_is_never_zero() {
        let limits = CallerLimits {
            rate: Some("10/min".parse().unwrap()),
            burst: Some(4),
            max_in_flight: Some(1),
        };
        let share = limits.share(3);
        assert_eq!(share.rate.map(|r| r.count), Some(4));
        assert_eq!(share.burst, Some(2));
        assert_eq!(share.max_in_flight, Some(1));
        assert_eq!(limits.share(1), limits);
        let spec = limits.spec(Duration::from_secs(40));
        assert_eq!(spec.interval, Some(Duration::from_secs(6)));
        assert_eq!(spec.burst, 4);
    }

    fn token(name: &str) -> Identity {
        Identity {
            name: Arc::from(name),
            client: None,
            issuer: None,
            tools: None::<Arc<BTreeSet<String>>>,
            admin: false,
            origin: Origin::Token,
            subject_claimed: false,
            databases: None,
        }
    }

    #[test]
    fn rates_parse_and_print() {
        let rate: Rate = "120/min".parse().unwrap();
        assert_eq!(rate.count, 120);
        assert_eq!(rate.per, Duration::from_secs(60));
        assert_eq!(rate.to_string(), "120/min");
        assert!("0/min".parse::<Rate>().is_err());
        assert!("12/fortnight".parse::<Rate>().is_err());
        assert!("12".parse::<Rate>().is_err());
        assert_eq!("5/s".parse::<Rate>().unwrap().per, Duration::from_secs(1));
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_a_retry_time() {
        let limits = CallerLimits {
            rate: Some("60/min".parse().unwrap()),
            burst: Some(3),
            max_in_flight: None,
        };
        let limiter = Limiter::new(limits, HashMap::new(), Arc::new(Metrics::new()));
        let ci = token("ci");
        let permits: Vec<_> = (0..3)
            .map(|_| admit(&limiter, &ci).expect("burst"))
            .collect();
        let refused = admit(&limiter, &ci).err().expect("over the burst");
        assert_eq!(refused.kind(), "rate");
        assert_eq!(refused.retry_after_secs(), 1);
        // Another caller has its own bucket.
        assert!(admit(&limiter, &token("other")).is_ok());
        drop(permits);
    }

    fn oauth(name: &str) -> Identity {
        Identity {
            origin: Origin::OAuth,
            issuer: Some(Arc::from("https://i")),
            ..token(name)
        }
    }

    #[test]
    fn pruning_never_forgets_a_limited_caller() {
        // The server-wide limits have no rate (the red team's case): judged by them,
        // every idle caller looked refilled.
        let default = CallerLimits {
            max_in_flight: Some(4),
            ..CallerLimits::default()
        };
        let mut per_token = HashMap::new();
        let slow = CallerLimits {
            rate: Some("2/h".parse().unwrap()),
            ..CallerLimits::default()
        };
        per_token.insert("slow".to_owned(), slow);
        let limiter = Limiter::new(default, per_token, Arc::new(Metrics::new()));
        let slow = token("slow");
        drop((admit(&limiter, &slow), admit(&limiter, &slow)));
        assert!(admit(&limiter, &slow).is_err());
        for i in 0..(PRUNE_AT + 100) {
            drop(admit(&limiter, &oauth(&format!("subject-{i}"))));
        }
        assert_eq!(admit(&limiter, &slow).err().map(|l| l.kind()), Some("rate"));
        // Idle subjects were forgotten: the map stays bounded.
        let tracked = limiter.0.callers.lock().unwrap().len();
        assert!(tracked < PRUNE_AT + 10, "{tracked} callers tracked");

        // An OAuth subject that used its bucket up is kept until it refills.
        let limiter = Limiter::new(
            CallerLimits {
                rate: Some("100/h".parse().unwrap()),
                ..CallerLimits::default()
            },
            HashMap::new(),
            Arc::new(Metrics::new()),
        );
        let lone = oauth("lone");
        for _ in 0..100 {
            drop(admit(&limiter, &lone));
        }
        assert!(admit(&limiter, &lone).is_err());
        for i in 0..(PRUNE_AT + 100) {
            drop(admit(&limiter, &oauth(&format!("subject-{i}"))));
        }
        assert_eq!(admit(&limiter, &lone).err().map(|l| l.kind()), Some("rate"));
    }

    #[test]
    fn in_flight_slots_come_back_when_calls_end_and_tokens_override() {
        let limits = CallerLimits {
            rate: None,
            burst: None,
            max_in_flight: Some(2),
        };
        let mut per_token = HashMap::new();
        per_token.insert(
            "batch".to_owned(),
            CallerLimits {
                max_in_flight: Some(1),
                ..CallerLimits::default()
            },
        );
        let limiter = Limiter::new(limits, per_token, Arc::new(Metrics::new()));
        let ci = token("ci");
        let a = admit(&limiter, &ci).unwrap();
        let _b = admit(&limiter, &ci).unwrap();
        assert_eq!(
            admit(&limiter, &ci).err(),
            Some(Limited::InFlight { max: 2 })
        );
        drop(a);
        assert!(admit(&limiter, &ci).is_ok());
        let batch = token("batch");
        let _c = admit(&limiter, &batch).unwrap();
        assert_eq!(
            admit(&limiter, &batch).err(),
            Some(Limited::InFlight { max: 1 })
        );
    }
}
