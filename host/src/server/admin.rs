//! The admin API (admin-scoped tokens only): list the components, and put, remove or
//! roll back one while the server serves (see `runtime/swap.rs`).

use super::respond::RequestBody;
use super::respond::{self, Body};
use super::{App, Identity};
use crate::access::RequestInfo;
use crate::audit::{AdminRecord, caller_json, request_members};
use crate::runtime::SwapError;
use crate::store::AdminAction;
use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;

pub async fn handle<B: RequestBody>(
    app: &App,
    request: Request<B>,
    identity: &Identity,
    info: &RequestInfo,
) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let Some(rest) = path.strip_prefix("/admin/components") else {
        return respond::error(StatusCode::NOT_FOUND, "no such admin resource");
    };
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    let action = match (&method, segments.as_slice()) {
        (&Method::PUT, [_]) => Some("put"),
        (&Method::DELETE, [_]) => Some("delete"),
        (&Method::POST, [_, "rollback"]) => Some("rollback"),
        _ => None,
    };
    if action.is_some() && app.settings.audit.refuses() {
        app.settings.audit.count_refusal("admin");
        return respond::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "refused: the audit log cannot be written (--audit-required); the operator must \
             fix it before components can change",
        );
    }
    if action.is_some()
        && let Some(store) = &app.settings.store
        && !store.is_up()
    {
        return respond::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "refused: admin changes go through the shared store (--store-url) so that every \
             replica applies them, and it is unreachable; nothing was changed, retry when \
             /ready shows the store up",
        );
    }
    let response = match (method, segments.as_slice()) {
        (Method::GET, []) => return list(app).await,
        (_, []) => return super::respond::method_not_allowed("GET"),
        (Method::GET, [name]) => return show(app, name).await,
        (Method::PUT, [name]) => put(app, name, request.into_body()).await,
        (Method::DELETE, [name]) => app
            .runtime
            .remove_component(name)
            .await
            .map(|()| (json!({"removed": name}), None))
            .map_err(Refusal::from),
        (_, [_]) => return super::respond::method_not_allowed("GET, PUT, DELETE"),
        (Method::POST, [name, "rollback"]) => app
            .runtime
            .rollback_component(name)
            .await
            .map(|info| (json!({"component": info}), None))
            .map_err(Refusal::from),
        (_, [_, "rollback"]) => return super::respond::method_not_allowed("POST"),
        _ => return respond::error(StatusCode::NOT_FOUND, "no such admin resource"),
    };
    let response = match (response, action, segments.first()) {
        (Ok(body), Some(action), Some(component)) => record(app, action, component, body).await,
        (response, _, _) => response.map(|(body, _)| body),
    };
    if let (Some(action), Some(component)) = (action, segments.first()) {
        audit(app, identity, info, action, component, &response).await;
    }
    match response {
        Ok(body) => respond::json(StatusCode::OK, &body),
        Err(refusal) => respond::error(refusal.status, &refusal.message),
    }
}

/// Records a change done here in the shared store, for the other replicas; a failure is
/// a 503 that says the change holds on this replica only.
async fn record(
    app: &App,
    action: &str,
    component: &str,
    body: (serde_json::Value, Option<Bytes>),
) -> Result<serde_json::Value, Refusal> {
    let (body, bytes) = body;
    let action = match action {
        "put" => AdminAction::Put,
        "delete" => AdminAction::Remove,
        _ => AdminAction::Rollback,
    };
    let digest = body.pointer("/component/digest").and_then(|d| d.as_str());
    match app
        .record_admin(component, action, digest, bytes.as_deref())
        .await
    {
        Ok(()) => Ok(body),
        Err(e) => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "applied on this replica only: recording it in the shared store failed \
                 ({e}), so the other replicas do not have it; retry the request"
            ),
        )),
    }
}

/// The admin action's audit record: who changed which component, and how it ended.
async fn audit(
    app: &App,
    identity: &Identity,
    info: &RequestInfo,
    action: &str,
    component: &str,
    response: &Result<serde_json::Value, Refusal>,
) {
    if !app.settings.audit.is_on() {
        return;
    }
    let (outcome, status, digest) = match response {
        Ok(body) => ("ok", 200, body.pointer("/component/digest").cloned()),
        Err(refusal) => (
            if refusal.status == StatusCode::UNPROCESSABLE_ENTITY {
                "rejected"
            } else {
                "failed"
            },
            refusal.status.as_u16(),
            None,
        ),
    };
    let (time, request_id, remote) = request_members(info);
    let record = AdminRecord {
        action,
        caller: caller_json(Some(identity)),
        component,
        digest,
        error: response.as_ref().err().map(|r| r.message.as_str()),
        event: "admin",
        outcome,
        remote,
        request_id,
        status,
        time,
    };
    // The change is made; a record that cannot be written is counted and logged.
    app.audit_record(&record).await;
}

async fn list(app: &App) -> Response<Body> {
    let (views, rejected) = app.runtime.component_views().await;
    let rejected: serde_json::Map<String, serde_json::Value> = rejected
        .into_iter()
        .map(|(name, r)| (name, json!({"digest": r.digest, "reason": r.reason})))
        .collect();
    respond::json(
        StatusCode::OK,
        &json!({ "components": views, "rejected": rejected }),
    )
}

async fn show(app: &App, name: &str) -> Response<Body> {
    let (views, rejected) = app.runtime.component_views().await;
    match views.into_iter().find(|v| v.name == name) {
        Some(view) => {
            let rejected = rejected
                .get(name)
                .map(|r| json!({"digest": r.digest, "reason": r.reason}));
            respond::json(
                StatusCode::OK,
                &json!({"component": view, "rejected": rejected}),
            )
        }
        None => respond::error(
            StatusCode::NOT_FOUND,
            &format!("no component named `{name}`"),
        ),
    }
}

/// `PUT /admin/components/NAME` with the `.wasm` bytes as the body.
/// A put's answer, and the bytes put (for the shared store).
async fn put<B: RequestBody>(
    app: &App,
    name: &str,
    body: B,
) -> Result<(serde_json::Value, Option<Bytes>), Refusal> {
    let limit = app.settings.max_component_bytes;
    let Ok(read) = tokio::time::timeout(app.settings.idle_timeout, read_limited(body, limit)).await
    else {
        return Err(Refusal::new(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the component did not arrive within {} s (--idle-timeout)",
                app.settings.idle_timeout.as_secs()
            ),
        ));
    };
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(None) => {
            return Err(Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the component exceeds {} MiB (see --max-component-mib)",
                    limit >> 20
                ),
            ));
        }
        Err(Some(e)) => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("reading the request body failed: {e}"),
            ));
        }
    };
    if bytes.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "the body must be the component's .wasm bytes",
        ));
    }
    app.runtime
        .put_component(name, bytes.to_vec())
        .await
        .map(|info| (json!({"component": info}), Some(bytes)))
        .map_err(Refusal::from)
}

/// Past the limit, this much more is read and dropped, so a client still sending gets
/// the 413 rather than a connection reset mid-upload; beyond it the connection closes.
const DRAIN_BYTES: usize = 64 << 20;

/// The body if it is at most `limit` bytes; `Err(None)` when it is larger.
async fn read_limited<B: RequestBody>(
    mut body: B,
    limit: usize,
) -> Result<Bytes, Option<Box<dyn std::error::Error + Send + Sync>>> {
    let mut bytes = BytesMut::new();
    let mut drained = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|e| Some(e.into()))?.into_data() else {
            continue;
        };
        if drained > 0 || bytes.len() + data.len() > limit {
            drained += data.len();
            if drained > DRAIN_BYTES {
                break;
            }
        } else {
            bytes.extend_from_slice(&data);
        }
    }
    if drained > 0 {
        return Err(None);
    }
    Ok(bytes.freeze())
}

/// Why a change was not made: the status and the message to send.
pub struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<SwapError> for Refusal {
    fn from(e: SwapError) -> Self {
        let status = match e {
            SwapError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            // the database could not check it: try again later
            SwapError::Unchecked(_) => StatusCode::SERVICE_UNAVAILABLE,
            SwapError::NotFound(_) => StatusCode::NOT_FOUND,
            SwapError::NoHistory(_) => StatusCode::CONFLICT,
            SwapError::BadName(_) => StatusCode::BAD_REQUEST,
        };
        Self::new(status, e.to_string())
    }
}
