//! The admin API (admin-scoped tokens only): list the components, and put, remove or
//! roll back one while the server serves (see `runtime/swap.rs`).

use super::App;
use super::respond::{self, Body};
use crate::runtime::SwapError;
use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;

pub async fn handle(app: &App, request: Request<Incoming>) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let Some(rest) = path.strip_prefix("/admin/components") else {
        return respond::error(StatusCode::NOT_FOUND, "no such admin resource");
    };
    let segments: Vec<&str> = rest.split('/').skip(1).collect();
    match (method, segments.as_slice()) {
        (Method::GET, []) => list(app).await,
        (_, []) => super::routes::method_not_allowed("GET"),
        (Method::GET, [name]) => show(app, name).await,
        (Method::PUT, [name]) => put(app, name, request.into_body()).await,
        (Method::DELETE, [name]) => swapped(
            app.runtime
                .remove_component(name)
                .await
                .map(|()| json!({"removed": name})),
        ),
        (_, [_]) => super::routes::method_not_allowed("GET, PUT, DELETE"),
        (Method::POST, [name, "rollback"]) => swapped(
            app.runtime
                .rollback_component(name)
                .await
                .map(|info| json!({"component": info})),
        ),
        (_, [_, "rollback"]) => super::routes::method_not_allowed("POST"),
        _ => respond::error(StatusCode::NOT_FOUND, "no such admin resource"),
    }
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
async fn put(app: &App, name: &str, body: Incoming) -> Response<Body> {
    let limit = app.max_component_bytes;
    let Ok(read) = tokio::time::timeout(app.idle_timeout, read_limited(body, limit)).await else {
        return respond::error(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the component did not arrive within {} s (--idle-timeout)",
                app.idle_timeout.as_secs()
            ),
        );
    };
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(None) => {
            return respond::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the component exceeds {} MiB (see --max-component-mib)",
                    limit >> 20
                ),
            );
        }
        Err(Some(e)) => {
            return respond::error(
                StatusCode::BAD_REQUEST,
                &format!("reading the request body failed: {e}"),
            );
        }
    };
    if bytes.is_empty() {
        return respond::error(
            StatusCode::BAD_REQUEST,
            "the body must be the component's .wasm bytes",
        );
    }
    swapped(
        app.runtime
            .put_component(name, bytes.to_vec())
            .await
            .map(|info| json!({"component": info})),
    )
}

/// Past the limit, this much more is read and dropped, so a client still sending gets
/// the 413 rather than a connection reset mid-upload; beyond it the connection closes.
const DRAIN_BYTES: usize = 64 << 20;

/// The body if it is at most `limit` bytes; `Err(None)` when it is larger.
async fn read_limited(mut body: Incoming, limit: usize) -> Result<Bytes, Option<hyper::Error>> {
    let mut bytes = BytesMut::new();
    let mut drained = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(Some)?.into_data() else {
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

/// The response to a change: 200 with `ok`, or the status that names the failure.
fn swapped(result: Result<serde_json::Value, SwapError>) -> Response<Body> {
    match result {
        Ok(body) => respond::json(StatusCode::OK, &body),
        Err(e) => {
            let status = match e {
                SwapError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
                SwapError::NotFound(_) => StatusCode::NOT_FOUND,
                SwapError::NoHistory(_) => StatusCode::CONFLICT,
                SwapError::BadName(_) => StatusCode::BAD_REQUEST,
            };
            respond::error(status, &e.to_string())
        }
    }
}
