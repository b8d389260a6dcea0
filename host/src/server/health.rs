//! The probes, neither of which needs a token.
//!
//! `GET /health`: liveness plus a summary, answered by the health component (in its
//! sandbox, under a short deadline). If that component traps, hangs or is missing, the
//! host still answers, with 503 and the reason. Concurrent probes share one check, and a
//! result is reused for [`HEALTH_CACHE`], so many probes cost at most a few checks per
//! second.
//!
//! `GET /ready`: 200 only when the database answers, every component instantiates and
//! no file in the components directory stands rejected; 503 with the reasons
//! otherwise, and from the moment shutdown begins.

use super::App;
use super::respond::{self, Body};
use crate::runtime::HealthState;
use http::{Response, StatusCode};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How long one health result answers further probes.
pub const HEALTH_CACHE: Duration = Duration::from_millis(500);
/// How long `/ready` waits for the database.
const READY_PING_TIMEOUT: Duration = Duration::from_millis(500);

/// The last health result, and the lock that makes concurrent probes share a check.
#[derive(Default)]
pub struct HealthCache {
    last: Mutex<Option<(Instant, StatusCode, Value)>>,
}

pub async fn health(app: &App) -> Response<Body> {
    let mut last = app.health.last.lock().await;
    if let Some((at, status, body)) = last.as_ref()
        && at.elapsed() < HEALTH_CACHE
    {
        return respond::json(*status, body);
    }
    let (status, body) = check(app).await;
    let response = respond::json(status, &body);
    *last = Some((Instant::now(), status, body));
    response
}

async fn check(app: &App) -> (StatusCode, Value) {
    let invocation = app.runtime.check_health().await;
    let (state, checks, error) = match &invocation.result {
        Ok(report) => (report.state, json!(report.checks), None),
        Err(fault) => (HealthState::Down, json!([]), Some(fault.to_string())),
    };
    let status = if state == HealthState::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let body = json!({
        "service": "mcp-sandbox",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "state": state,
        "checks": checks,
        "error": error,
        "check": {
            "component": invocation.component.as_deref(),
            "digest": invocation.digest.as_deref(),
            "micros": invocation.timings.total.as_micros() as u64,
        },
        "pool": app.runtime.db().status(),
        "components": app.runtime.components(),
    });
    (status, body)
}

pub async fn ready(app: &App) -> Response<Body> {
    let mut reasons = Vec::new();
    if app.draining.load(Ordering::Relaxed) {
        reasons.push("shutting down".to_owned());
    }
    let database = match app.runtime.db().ping(READY_PING_TIMEOUT).await {
        Ok(latency) => json!({"ok": true, "micros": latency.as_micros() as u64}),
        Err(reason) => {
            reasons.push(format!("database: {reason}"));
            json!({"ok": false, "error": reason})
        }
    };
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
    // A file in the components directory that failed validation: the old version (or
    // none) is serving, not what the operator shipped.
    let rejected: Vec<Value> = app
        .runtime
        .rejected_components()
        .iter()
        .map(|(name, r)| {
            reasons.push(format!("component {name} was rejected: {}", r.reason));
            json!({"name": name, "reason": r.reason})
        })
        .collect();
    let ready = reasons.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond::json(
        status,
        &json!({
            "ready": ready,
            "reasons": reasons,
            "database": database,
            "components": components,
            "rejected": rejected,
        }),
    )
}
