//! `GET /health`: liveness plus a summary, answered by the health component (run in
//! its sandbox under a short deadline). If that component traps, hangs or is missing,
//! the host still answers, with 503 and the reason.

use super::App;
use super::respond::{self, Body};
use crate::runtime::HealthState;
use http::{Response, StatusCode};
use serde_json::json;

pub async fn handle(app: &App) -> Response<Body> {
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
    respond::json(status, &body)
}
