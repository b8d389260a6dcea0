//! Every metric, defined in one place (Prometheus text format at `/metrics`). Names
//! follow Prometheus conventions: base units, `_seconds`, `_total`. Buckets start at
//! 5 µs because the sandbox costs microseconds and the database milliseconds.

use crate::db::PoolStatus;
use crate::invocation::{ComponentInfo, Outcome, Timings, TrapKind};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Latency buckets from 5 µs to 30 s.
const BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The label a tool call is counted under when the tool does not exist: client-chosen
/// names must not become label values (unbounded cardinality).
pub const UNKNOWN_TOOL: &str = "_unknown";

const AUTH_FAILURE_REASONS: &[&str] = &[
    "missing",
    "malformed",
    "invalid",
    "insufficient_scope",
    "forbidden_origin",
    "forbidden_host",
];
const HEALTH_STATES: &[&str] = &["ok", "degraded", "down", "failed"];

/// Where the metrics live; cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    tool_calls: IntCounterVec,
    tool_call_duration: HistogramVec,
    instantiate: HistogramVec,
    execute: HistogramVec,
    db_query: HistogramVec,
    health_checks: IntCounterVec,
    health_check_duration: HistogramVec,
    traps: IntCounterVec,
    pool_connections: IntGaugeVec,
    source_connections: IntGaugeVec,
    pool_waiting: IntGauge,
    pool_max: IntGauge,
    pool_encrypted: IntGauge,
    role_privileged: IntGauge,
    components_rejected: IntGauge,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    auth_failures: IntCounterVec,
    component_info: IntGaugeVec,
    swaps: IntCounterVec,
    sessions: IntGauge,
    connections_open: IntGauge,
    connections_refused: IntCounterVec,
    tls_expiry: IntGaugeVec,
    tls_reloads: IntCounterVec,
    audit_records: IntCounterVec,
    audit_failures: IntCounterVec,
    audit_refused: IntCounterVec,
    limited: IntCounterVec,
    store_up: IntGauge,
    store_replicas: IntGauge,
    store_ops: IntCounterVec,
    store_round_trip: HistogramVec,
    store_fallbacks: IntCounterVec,
}

/// Why a connection was closed by the server before it was served to its end.
pub const CONNECTION_REFUSALS: &[&str] = &["over_capacity", "header_timeout", "tls_handshake"];

/// Counts an open connection until dropped.
pub struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )
    .expect("a valid histogram definition")
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter definition")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid gauge definition")
}

impl Metrics {
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::new(),
            tool_calls: counter(
                "mcp_tool_calls_total",
                "Tool calls by tool, component and outcome (ok, tool_error, protocol_error, trap, timeout, unavailable, denied, cancelled)",
                &["tool", "component", "outcome"],
            ),
            tool_call_duration: histogram(
                "mcp_tool_call_duration_seconds",
                "Tool call latency in the host, from dispatch to result",
                &["tool", "component"],
            ),
            instantiate: histogram(
                "wasm_instantiate_seconds",
                "Time to create a fresh component instance",
                &["component"],
            ),
            execute: histogram(
                "wasm_execute_seconds",
                "Time executing in the guest, host calls excluded",
                &["component"],
            ),
            db_query: histogram(
                "db_query_seconds",
                "Time of one sql.query host call, guard included",
                &["component"],
            ),
            health_checks: counter(
                "health_checks_total",
                "Health component invocations by resulting state (ok, degraded, down, failed)",
                &["component", "state"],
            ),
            health_check_duration: histogram(
                "health_check_duration_seconds",
                "Health check latency, including the database ping",
                &["component"],
            ),
            traps: counter(
                "component_traps_total",
                "Component invocations that trapped, by kind (timeout included)",
                &["component", "kind"],
            ),
            pool_connections: gauge(
                "db_pool_connections",
                "Database connections in the pool by state",
                &["state"],
            ),
            source_connections: gauge(
                "db_source_connections",
                "Each source's pool (its name from the sources file, or default) by state: idle, in_use, retired, waiting, max",
                &["source", "state"],
            ),
            pool_waiting: IntGauge::new(
                "db_pool_waiting",
                "Callers waiting for a database connection",
            )
            .expect("a valid gauge"),
            pool_max: IntGauge::new(
                "db_pool_max_connections",
                "Upper bound of the database pool",
            )
            .expect("a valid gauge"),
            pool_encrypted: IntGauge::new(
                "db_pool_connections_encrypted",
                "Pooled database connections that negotiated TLS",
            )
            .expect("a valid gauge"),
            role_privileged: IntGauge::new(
                "db_role_privileged",
                "1 when the database role can do more than read and --insecure-allow-privileged-role let it in",
            )
            .expect("a valid gauge"),
            components_rejected: IntGauge::new(
                "components_rejected",
                "Files in the components directory that stand rejected (the last good version of each, or none, serves; /health names them)",
            )
            .expect("a valid gauge"),
            http_requests: counter(
                "http_requests_total",
                "HTTP requests by route and status",
                &["route", "status"],
            ),
            http_duration: histogram(
                "http_request_duration_seconds",
                "HTTP request latency until the response head (streams excluded)",
                &["route"],
            ),
            auth_failures: counter(
                "auth_failures_total",
                "Refused requests by reason (missing, malformed, invalid, insufficient_scope, forbidden_origin, forbidden_host)",
                &["reason"],
            ),
            component_info: gauge(
                "component_info",
                "Loaded components (value 1), labelled with their SHA-256 digest",
                &["component", "digest", "world"],
            ),
            swaps: counter(
                "component_swaps_total",
                "Component changes after start-up by result (applied, removed, rejected; rejections at start-up count too)",
                &["result"],
            ),
            sessions: IntGauge::new("mcp_sessions_active", "Open MCP sessions")
                .expect("a valid gauge"),
            connections_open: IntGauge::new(
                "http_connections_open",
                "Client connections open (all listeners)",
            )
            .expect("a valid gauge"),
            tls_expiry: gauge(
                "tls_certificate_expiry_timestamp_seconds",
                "When the certificate a listener serves expires (its notAfter), seconds since the epoch",
                &["listener"],
            ),
            tls_reloads: counter(
                "tls_certificate_reloads_total",
                "Certificate files that changed and were loaded (applied) or not (rejected: the old certificate keeps serving)",
                &["listener", "result"],
            ),
            audit_records: counter(
                "mcp_sandbox_audit_records_total",
                "Audit records written, by event (tool_call, admin, auth_refused, audit_open)",
                &["event"],
            ),
            audit_failures: counter(
                "mcp_sandbox_audit_failures_total",
                "Audit records that could not be written, by reason (write, queue_full, timeout, closed)",
                &["reason"],
            ),
            audit_refused: counter(
                "mcp_sandbox_audit_refused_total",
                "Requests refused because their audit record could not be written (--audit-required), by kind (tool_call, admin)",
                &["kind"],
            ),
            limited: counter(
                "mcp_sandbox_limited_total",
                "Requests refused by a per-caller limit, by caller (a configured token's name, or oauth, anonymous) and limit (rate, in_flight, sessions)",
                &["caller", "limit"],
            ),
            store_up: IntGauge::new(
                "mcp_sandbox_store_up",
                "1 while the shared store (--store-url) answers, 0 while this replica degrades without it",
            )
            .expect("a valid gauge"),
            store_replicas: IntGauge::new(
                "mcp_sandbox_store_replicas",
                "Replicas alive in the shared store at this replica's last heartbeat",
            )
            .expect("a valid gauge"),
            store_ops: counter(
                "mcp_sandbox_store_operations_total",
                "Shared-store operations by operation (admit, touch, open, load, store, ...) and result (ok, error)",
                &["op", "result"],
            ),
            store_round_trip: histogram(
                "mcp_sandbox_store_round_trip_seconds",
                "Round trip of a shared-store operation that succeeded",
                &["op"],
            ),
            store_fallbacks: counter(
                "mcp_sandbox_store_fallback_total",
                "Decisions taken without the shared store while it was down, by what (limits: this replica's share; sessions: a session served from this replica's memory)",
                &["what"],
            ),
            connections_refused: counter(
                "http_connections_refused_total",
                "Connections the server closed unserved, by reason (over_capacity: --max-connections reached; header_timeout: no complete request head within --header-timeout; tls_handshake: failed or too slow)",
                &["reason"],
            ),
        };
        let build = gauge("build_info", "Build information (value 1)", &["version"]);
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.tool_calls.clone()),
            Box::new(m.tool_call_duration.clone()),
            Box::new(m.instantiate.clone()),
            Box::new(m.execute.clone()),
            Box::new(m.db_query.clone()),
            Box::new(m.health_checks.clone()),
            Box::new(m.health_check_duration.clone()),
            Box::new(m.traps.clone()),
            Box::new(m.pool_connections.clone()),
            Box::new(m.source_connections.clone()),
            Box::new(m.pool_waiting.clone()),
            Box::new(m.pool_max.clone()),
            Box::new(m.pool_encrypted.clone()),
            Box::new(m.role_privileged.clone()),
            Box::new(m.components_rejected.clone()),
            Box::new(m.http_requests.clone()),
            Box::new(m.http_duration.clone()),
            Box::new(m.auth_failures.clone()),
            Box::new(m.component_info.clone()),
            Box::new(m.swaps.clone()),
            Box::new(m.sessions.clone()),
            Box::new(m.connections_open.clone()),
            Box::new(m.connections_refused.clone()),
            Box::new(m.tls_expiry.clone()),
            Box::new(m.tls_reloads.clone()),
            Box::new(m.audit_records.clone()),
            Box::new(m.audit_failures.clone()),
            Box::new(m.audit_refused.clone()),
            Box::new(m.limited.clone()),
            Box::new(build),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for collector in collectors {
            m.registry
                .register(collector)
                .expect("metric names are unique");
        }
        for result in ["applied", "rejected", "removed"] {
            m.swaps.with_label_values(&[result]);
        }
        for reason in AUTH_FAILURE_REASONS {
            m.auth_failures.with_label_values(&[reason]);
        }
        for reason in CONNECTION_REFUSALS {
            m.connections_refused.with_label_values(&[reason]);
        }
        for reason in ["write", "queue_full", "timeout", "closed"] {
            m.audit_failure_declare(reason);
        }
        for event in ["tool_call", "admin", "auth_refused"] {
            m.audit_records.with_label_values(&[event]);
        }
        m
    }

    /// The shared store's metrics, exported only when there is a store (an alert on
    /// `mcp_sandbox_store_up == 0` must not fire on a single server without one).
    pub fn declare_store(&self) {
        let collectors: [Box<dyn prometheus::core::Collector>; 5] = [
            Box::new(self.store_up.clone()),
            Box::new(self.store_replicas.clone()),
            Box::new(self.store_ops.clone()),
            Box::new(self.store_round_trip.clone()),
            Box::new(self.store_fallbacks.clone()),
        ];
        for collector in collectors {
            // Declared twice (a second store handle in one process) is harmless.
            let _ = self.registry.register(collector);
        }
        for what in ["limits", "sessions"] {
            self.store_fallbacks.with_label_values(&[what]);
        }
    }

    /// Whether the shared store answers.
    pub fn store_up(&self, up: bool) {
        self.store_up.set(i64::from(up));
    }

    /// Replicas alive at the last heartbeat.
    pub fn store_replicas(&self, alive: u32) {
        self.store_replicas.set(i64::from(alive));
    }

    /// One shared-store operation; `round_trip` when it succeeded.
    pub fn store_op(&self, op: &str, ok: bool, round_trip: Option<std::time::Duration>) {
        let result = if ok { "ok" } else { "error" };
        self.store_ops.with_label_values(&[op, result]).inc();
        if let Some(round_trip) = round_trip {
            self.store_round_trip
                .with_label_values(&[op])
                .observe(round_trip.as_secs_f64());
        }
    }

    /// A decision taken without the store.
    pub fn store_fallback(&self, what: &str) {
        self.store_fallbacks.with_label_values(&[what]).inc();
    }

    /// A connection was accepted; it counts as open until the guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections_open.inc();
        OpenConnection(self.connections_open.clone())
    }

    /// The certificate `listener` serves now, by its expiry; its reload counters at zero.
    pub fn tls_certificate(&self, listener: &str, not_after: Option<i64>) {
        self.tls_expiry
            .with_label_values(&[listener])
            .set(not_after.unwrap_or(0));
        for result in ["applied", "rejected"] {
            self.tls_reloads.with_label_values(&[listener, result]);
        }
    }

    /// Changed certificate files were loaded (`applied`) or not (`rejected`).
    pub fn tls_reload(&self, listener: &str, result: &str) {
        self.tls_reloads
            .with_label_values(&[listener, result])
            .inc();
    }

    /// A connection was closed unserved; `reason` is one of [`CONNECTION_REFUSALS`].
    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused.with_label_values(&[reason]).inc();
    }

    /// One tool call, counted once where every transport's calls pass (`mcp/`);
    /// `component` is empty when the tool was unknown. The runtime records the phases
    /// ([`Metrics::phases`]).
    pub fn tool_call(
        &self,
        tool: &str,
        component: &str,
        outcome: Outcome,
        total: std::time::Duration,
    ) {
        self.tool_calls
            .with_label_values(&[tool, component, outcome.as_str()])
            .inc();
        self.tool_call_duration
            .with_label_values(&[tool, component])
            .observe(total.as_secs_f64());
    }

    pub fn health_check(&self, component: &str, state: &str, timings: &Timings) {
        self.health_checks
            .with_label_values(&[component, state])
            .inc();
        self.health_check_duration
            .with_label_values(&[component])
            .observe(timings.total.as_secs_f64());
        self.phases(component, timings);
    }

    /// Where an invocation's time went (instantiation, guest, database).
    pub fn phases(&self, component: &str, timings: &Timings) {
        if component.is_empty() || timings.instantiate.is_zero() {
            return; // never reached a component
        }
        self.instantiate
            .with_label_values(&[component])
            .observe(timings.instantiate.as_secs_f64());
        self.execute
            .with_label_values(&[component])
            .observe(timings.guest.as_secs_f64());
    }

    pub fn db_query(&self, component: &str, seconds: f64) {
        self.db_query
            .with_label_values(&[component])
            .observe(seconds);
    }

    pub fn trap(&self, component: &str, kind: &str) {
        self.traps.with_label_values(&[component, kind]).inc();
    }

    pub fn http_request(&self, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[route])
            .observe(seconds);
    }

    /// Makes the `auth_failures_total` series for `reasons` exist at 0 (the OAuth ones,
    /// when OAuth is on), so a rate over them is defined before the first failure.
    pub fn declare_auth_failures<'a>(&self, reasons: impl IntoIterator<Item = &'a str>) {
        for reason in reasons {
            self.auth_failures.with_label_values(&[reason]);
        }
    }

    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures.with_label_values(&[reason]).inc();
    }

    pub fn audit_record(&self, event: &str) {
        self.audit_records.with_label_values(&[event]).inc();
    }

    /// Makes an `audit_failures_total` series exist at 0.
    pub fn audit_failure_declare(&self, reason: &str) {
        self.audit_failures.with_label_values(&[reason]);
        for kind in ["tool_call", "admin"] {
            self.audit_refused.with_label_values(&[kind]);
        }
    }

    pub fn audit_failure(&self, reason: &str) {
        self.audit_failures.with_label_values(&[reason]).inc();
    }

    pub fn audit_refused(&self, kind: &str) {
        self.audit_refused.with_label_values(&[kind]).inc();
    }

    /// Makes the `limited_total` series of `callers` exist at 0.
    pub fn declare_limited<'a>(&self, callers: impl IntoIterator<Item = &'a str>) {
        for caller in callers {
            for limit in ["rate", "in_flight", "sessions", "streams"] {
                self.limited.with_label_values(&[caller, limit]);
            }
        }
    }

    /// `caller` is a configured token's name or a fixed word: bounded.
    pub fn limited(&self, caller: &str, limit: &str) {
        self.limited.with_label_values(&[caller, limit]).inc();
    }

    pub fn swap(&self, result: &str) {
        self.swaps.with_label_values(&[result]).inc();
    }

    /// Replaces the `component_info` series with the loaded set, and creates every
    /// counter series the loaded components can produce, at zero: alerts and dashboards
    /// see 0, not "no data", until the first event.
    pub fn set_components(&self, components: &[ComponentInfo]) {
        self.component_info.reset();
        for c in components {
            self.component_info
                .with_label_values(&[c.name.as_str(), c.digest.as_str(), c.world])
                .set(1);
            // Every `TrapKind`, and `timeout`.
            for kind in TrapKind::ALL
                .map(TrapKind::as_str)
                .into_iter()
                .chain(["timeout"])
            {
                self.traps.with_label_values(&[c.name.as_str(), kind]);
            }
            for tool in &c.tools {
                for outcome in Outcome::COUNTED {
                    self.tool_calls.with_label_values(&[
                        tool.as_str(),
                        c.name.as_str(),
                        outcome.as_str(),
                    ]);
                }
            }
            if c.world == "health-component" {
                for state in HEALTH_STATES {
                    self.health_checks
                        .with_label_values(&[c.name.as_str(), state]);
                }
            }
        }
    }

    /// The metrics text, after setting the gauges of the pools (each source's, and
    /// their sums), the role, sessions and rejected files.
    pub fn render(
        &self,
        pools: &[(&str, PoolStatus)],
        role_privileged: bool,
        sessions: usize,
        rejected: usize,
    ) -> String {
        self.components_rejected
            .set(i64::try_from(rejected).unwrap_or(i64::MAX));
        self.role_privileged.set(i64::from(role_privileged));
        // A source removed by a reload leaves no stale series.
        self.source_connections.reset();
        for (source, pool) in pools {
            for (state, n) in [
                ("idle", pool.idle),
                ("in_use", pool.in_use),
                ("retired", pool.retired),
                ("waiting", pool.waiting),
                ("max", pool.max),
            ] {
                self.source_connections
                    .with_label_values(&[source, state])
                    .set(i64::from(n));
            }
        }
        let sum: PoolStatus = pools.iter().map(|(_, pool)| *pool).sum();
        self.pool_encrypted.set(i64::from(sum.encrypted));
        for (state, n) in [
            ("idle", sum.idle),
            ("in_use", sum.in_use),
            ("retired", sum.retired),
        ] {
            self.pool_connections
                .with_label_values(&[state])
                .set(i64::from(n));
        }
        self.pool_waiting.set(i64::from(sum.waiting));
        self.pool_max.set(i64::from(sum.max));
        self.sessions
            .set(i64::try_from(sessions).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
