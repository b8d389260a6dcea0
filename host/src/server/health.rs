//! The probes, neither of which needs a token.
//!
//! `GET /health`: liveness plus a summary, answered by the health component (in its
//! sandbox, under a short deadline). If that component traps, hangs or is missing, the
//! host still answers, with 503 and the reason.
//!
//! `GET /ready`: 200 only when the database answers and every component instantiates;
//! 503 with the reasons otherwise, and from the moment shutdown begins. A file in the
//! components directory that stands rejected does not fail it (the last good version
//! serves; a typo in one file must not take every replica out of service): it is
//! named in `warnings`, in `/health` (state `degraded`) and by a metric.
//!
//! With a sources file each source is checked and reported on its own: one down makes
//! `/health` degraded and `/ready` warn (its tools fail, the others serve); only every
//! source down fails them.
//!
//! For both, concurrent probes share one check and a result answers further probes for
//! [`PROBE_CACHE`], so a flood of probes costs at most a few checks per second and never
//! starves tool calls. Anyone gets the states; the full report (components, digests,
//! error text) needs a valid token.

use super::App;
use super::respond::{self, Body};
use crate::db::{Db, Source};
use crate::runtime::HealthState;
use http::{HeaderMap, Response, StatusCode};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long one probe result answers further probes.
pub const PROBE_CACHE: Duration = Duration::from_millis(500);
/// How long `/ready` waits for the database.
const READY_PING_TIMEOUT: Duration = Duration::from_millis(500);

/// The last result of one probe, and the lock that makes concurrent probes share a check.
#[derive(Default)]
pub struct ProbeCache {
    last: Mutex<Option<(Instant, StatusCode, Value)>>,
}

impl ProbeCache {
    /// The cached result while fresh, else `check`'s (run by one probe while the others
    /// wait for it).
    async fn get<F: Future<Output = (StatusCode, Value)>>(
        &self,
        check: impl FnOnce() -> F,
    ) -> (StatusCode, Value) {
        let mut last = self.last.lock().await;
        if let Some((at, status, body)) = last.as_ref()
            && at.elapsed() < PROBE_CACHE
        {
            return (*status, body.clone());
        }
        let (status, body) = check().await;
        *last = Some((Instant::now(), status, body.clone()));
        (status, body)
    }
}

/// Whether this probe may see the full report.
async fn detailed(app: &App, headers: &HeaderMap) -> bool {
    app.settings.auth.token_holder(headers).await.is_some()
}

pub async fn health(app: &App, headers: &HeaderMap) -> Response<Body> {
    let (status, body) = app.health.get(|| check(app)).await;
    if detailed(app, headers).await {
        return respond::json(status, &body);
    }
    let checks: Vec<Value> = body["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({"name": c["name"], "state": c["state"]}))
        .collect();
    let mut summary = json!({"state": body["state"], "checks": checks});
    if let Some(sources) = body["sources"].as_array() {
        let states: Vec<Value> = sources
            .iter()
            .map(|s| json!({"name": s["name"], "state": s["state"]}))
            .collect();
        summary["sources"] = json!(states);
    }
    respond::json(status, &summary)
}

async fn check(app: &App) -> (StatusCode, Value) {
    let sources = app.runtime.sources();
    let list = sources.list();
    let reports = futures::future::join_all(list.iter().map(|s| source_report(app, s))).await;
    // A rejected file: what the operator shipped is not what serves.
    let rejected = rejected_report(app);
    let sources_rejected = sources.rejected();
    let state = combined(reports.iter().map(|(state, _)| *state));
    let state = match state {
        HealthState::Ok if !rejected.is_empty() || sources_rejected.is_some() => {
            HealthState::Degraded
        }
        state => state,
    };
    let status = if state == HealthState::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut body = json!({
        "service": "mcp-sandbox",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "state": state,
        "components": app.runtime.components(),
        "rejected": rejected,
    });
    if sources.is_named() {
        // Each source on its own; the checks named by source, for the summary.
        let checks: Vec<Value> = reports
            .iter()
            .flat_map(|(_, report)| {
                let source = report["name"].as_str().unwrap_or_default().to_owned();
                report["checks"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |mut check| {
                        let name = check["name"].as_str().unwrap_or_default();
                        check["name"] = json!(format!("{source}/{name}"));
                        check
                    })
            })
            .collect();
        body["checks"] = json!(checks);
        body["sources"] = json!(reports.into_iter().map(|(_, r)| r).collect::<Vec<_>>());
        body["sources_rejected"] = json!(sources_rejected);
    } else if let Some((_, Value::Object(report))) = reports.into_iter().next() {
        // One database: its report is the body, as before sources had names (the state
        // stays the server's, which counts rejected files).
        for (key, value) in report {
            if key != "name" && key != "state" {
                body[key] = value;
            }
        }
    }
    (status, body)
}

/// The health component's report on one source, with its pool and how it is reached.
async fn source_report(app: &App, source: &Source) -> (HealthState, Value) {
    let invocation = app.runtime.check_health(source).await;
    let (state, checks, error) = match &invocation.result {
        Ok(report) => (report.state, json!(report.checks), None),
        Err(fault) => (HealthState::Down, json!([]), Some(fault.to_string())),
    };
    let report = json!({
        "name": &*source.name,
        "state": state,
        "checks": checks,
        "error": error,
        "check": {
            "component": invocation.component.as_deref(),
            "digest": invocation.digest.as_deref(),
            "micros": invocation.timings.total.as_micros() as u64,
        },
        "pool": source.db.status(),
        "role_pools": source.db.role_pool_count(),
        "database": database_report(&source.db),
    });
    (state, report)
}

/// Several sources' states as one: down only when every source is down (the others
/// still serve), degraded when any is not ok.
fn combined(states: impl Iterator<Item = HealthState>) -> HealthState {
    let (mut any, mut all_down, mut all_ok) = (false, true, true);
    for state in states {
        any = true;
        all_down &= state == HealthState::Down;
        all_ok &= state == HealthState::Ok;
    }
    match (any, all_down, all_ok) {
        (false, _, _) | (true, true, _) => HealthState::Down,
        (true, false, true) => HealthState::Ok,
        (true, false, false) => HealthState::Degraded,
    }
}

/// The files of the components directory that stand rejected, with the reasons.
fn rejected_report(app: &App) -> Vec<Value> {
    app.runtime
        .rejected_components()
        .iter()
        .map(|(name, r)| json!({"name": name, "reason": r.reason}))
        .collect()
}

/// How the server reaches a database: TLS, and what the login role may do.
fn database_report(db: &Db) -> Value {
    let status = db.status();
    json!({
        "tls": {
            "sslmode": db.ssl_mode().as_str(),
            "encrypted_connections": status.encrypted,
            "connections": status.size,
        },
        "role": db.role().map(|report| json!({
            "name": report.role,
            "read_only": report.read_only(),
            "capabilities": report.capabilities,
            "notes": report.notes,
            "allowed_by_override": !report.read_only() && db.allows_privileged_role(),
        })),
    })
}

pub async fn ready(app: &App, headers: &HeaderMap) -> Response<Body> {
    // Shutting down is known at once, not one cache period later.
    let (status, body) = if app.draining.load(Ordering::Relaxed) {
        let reasons = ["shutting down"];
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ready": false, "reasons": reasons}),
        )
    } else {
        app.readiness.get(|| readiness(app)).await
    };
    if detailed(app, headers).await {
        return respond::json(status, &body);
    }
    respond::json(status, &json!({"ready": body["ready"]}))
}

async fn readiness(app: &App) -> (StatusCode, Value) {
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    let sources = app.runtime.sources();
    let list = sources.list();
    let pings =
        futures::future::join_all(list.iter().map(|source| source.db.ping(READY_PING_TIMEOUT)))
            .await;
    let all_down = pings.iter().all(Result::is_err);
    let mut database = Value::Null;
    let mut named = Vec::new();
    for (source, ping) in list.iter().zip(pings) {
        let report = match ping {
            Ok(latency) => json!({"ok": true, "micros": latency.as_micros() as u64}),
            Err(reason) => {
                // One source down leaves the others serving: only all down is unready
                // (every replica sees the same databases).
                match (sources.is_named(), all_down) {
                    (false, _) => reasons.push(format!("database: {reason}")),
                    (true, true) => reasons.push(format!("source {}: {reason}", source.name)),
                    (true, false) => warnings.push(format!(
                        "source {} is down (its tools fail; the other sources serve): {reason}",
                        source.name
                    )),
                }
                json!({"ok": false, "error": reason})
            }
        };
        if sources.is_named() {
            let mut report = report;
            report["name"] = json!(&*source.name);
            named.push(report);
        } else {
            database = report;
        }
    }
    if let Some(reason) = sources.rejected() {
        warnings.push(format!(
            "the sources file was refused (the previous sources serve): {reason}"
        ));
    }
    let components: Vec<Value> = app
        .runtime
        .instantiate_all()
        .await
        .into_iter()
        .map(|(name, result)| match result {
            Ok(()) => json!({"name": name, "instantiable": true}),
            Err(reason) => {
                reasons.push(format!("component {name}: {reason}"));
                json!({"name": name, "instantiable": false, "error": reason})
            }
        })
        .collect();
    // An OAuth issuer whose keys are not known: its tokens are refused until they are.
    let oauth: Vec<Value> = app
        .settings
        .auth
        .oauth()
        .map(|verifier| verifier.status())
        .unwrap_or_default()
        .into_iter()
        .map(|status| {
            if let Some(error) = &status.error
                && status.keys == 0
            {
                reasons.push(format!("OAuth issuer {}: no keys: {error}", status.issuer));
            }
            json!(status)
        })
        .collect();
    // A file in the components directory that failed validation: the old version (or
    // none) is serving, not what the operator shipped. Not a reason to take this
    // replica out: every replica reads the same files, so all would go at once.
    let rejected = rejected_report(app);
    warnings.extend(rejected.iter().map(|r| {
        format!(
            "component {} was rejected (its last good version, if any, serves): {}",
            r["name"].as_str().unwrap_or_default(),
            r["reason"].as_str().unwrap_or_default()
        )
    }));
    // The shared store: a replica without it still serves (stateless calls, its own
    // sessions, its share of the limits), so an outage degrades but never fails
    // readiness: failing it everywhere would turn a store outage into a full one.
    let store = app.settings.store.as_ref().map(|store| {
        let up = store.is_up();
        let degraded: &[&str] = if up {
            &[]
        } else {
            &[
                "limits: this replica enforces its share of each limit",
                "sessions: only the sessions this replica holds are served; others get 503",
                "new sessions are refused",
            ]
        };
        json!({
            "up": up,
            "replica": store.replica(),
            "replicas": store.replicas(),
            "degraded": degraded,
        })
    });
    let ready = reasons.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut body = json!({
        "ready": ready,
        "reasons": reasons,
        "warnings": warnings,
        "database": database,
        "components": components,
        "rejected": rejected,
        "oauth": oauth,
        "store": store,
    });
    if sources.is_named() {
        body["sources"] = json!(named);
    }
    (status, body)
}
