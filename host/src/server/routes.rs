//! Routing. Probes, open to anyone and unchecked: `/health`, `/ready` (their details only
//! for a valid token). Every other route passes the Host and Origin checks first; then
//! the OAuth metadata is open, `/mcp`, `/sse`, `/messages/` and `/metrics` need a token,
//! and `/admin/...` an admin token (even with authentication off). Every request is
//! counted by route and status.

use super::respond::RequestBody;
use super::respond::{self, Body, method_not_allowed};
use super::streamable::held;
use super::{App, Remote, admin, health, legacy, wellknown};
use crate::access::RequestInfo;
use crate::audit::{AdminRefusedRecord, caller_json, request_members};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

/// The `route` label: a fixed set, whatever path a client sends.
fn route_label(path: &str) -> &'static str {
    match path {
        "/mcp" => "/mcp",
        "/sse" => "/sse",
        "/messages" | legacy::MESSAGES_PATH => "/messages",
        "/health" => "/health",
        "/ready" => "/ready",
        "/metrics" => "/metrics",
        p if p.starts_with("/.well-known/") => "/.well-known",
        p if p.starts_with("/admin/") => "/admin",
        _ => "other",
    }
}

impl App {
    /// Serves one request on the main port.
    pub async fn handle<B: RequestBody>(&self, mut request: Request<B>) -> Response<Body> {
        let started = Instant::now();
        // HTTP/2 sends the host as `:authority` (in the URI); every check, the metadata
        // and rmcp read the Host header, so give them one.
        if !request.headers().contains_key(header::HOST)
            && let Some(authority) = request.uri().authority()
            && let Ok(value) = HeaderValue::from_str(authority.as_str())
        {
            request.headers_mut().insert(header::HOST, value);
        }
        let route = route_label(request.uri().path());
        let info = RequestInfo {
            // Only audit records name the request: no id to make without them.
            id: match self.settings.audit.is_on() {
                true => request_id(request.headers()),
                false => Arc::from(""),
            },
            remote: request.extensions().get::<Remote>().map(|r| r.0),
            session: None,
        };
        request.extensions_mut().insert(info);
        let response = self.route(request).await;
        self.metrics.http_request(
            route,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        response
    }

    /// Serves one request on the metrics port: `/metrics` only, no token, after the
    /// Origin check (not the Host check: scrapers address pods by IP).
    pub async fn handle_metrics_port<B: RequestBody>(&self, request: Request<B>) -> Response<Body> {
        if let Err(refused) = self.check_origin(request.headers()) {
            return *refused;
        }
        match request.uri().path() {
            "/metrics" => self.metrics_response().await,
            _ => respond::error(StatusCode::NOT_FOUND, "only /metrics is served here"),
        }
    }

    async fn route<B: RequestBody>(&self, request: Request<B>) -> Response<Body> {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        let info = request
            .extensions()
            .get::<RequestInfo>()
            .cloned()
            .unwrap_or_default();
        let route = route_label(&path);
        // Probes come from load balancers and kubelets, with whatever Host they use.
        match path.as_str() {
            "/health" => {
                return match method {
                    Method::GET | Method::HEAD => health::health(self, request.headers()).await,
                    _ => method_not_allowed("GET, HEAD"),
                };
            }
            "/ready" => {
                return match method {
                    Method::GET | Method::HEAD => health::ready(self, request.headers()).await,
                    _ => method_not_allowed("GET, HEAD"),
                };
            }
            _ => {}
        }
        if let Err(refused) = self.check_host_and_origin(request.headers(), request.uri()) {
            return *refused;
        }
        match path.as_str() {
            wellknown::METADATA_PATH | wellknown::ROOT_METADATA_PATH => match method {
                Method::GET | Method::HEAD => wellknown::metadata(self, request.headers()),
                _ => method_not_allowed("GET, HEAD"),
            },
            "/metrics" => match self.authenticate(request.headers(), &info, route).await {
                Err(response) => *response,
                // An OAuth token with none of this server's scopes (any client of the
                // organisation's authorization server has one) sees nothing.
                Ok(identity) if !identity.grants_anything() => {
                    let scope = self.tools_scope();
                    self.forbidden(request.headers(), &scope)
                }
                Ok(_) => self.metrics_response().await,
            },
            "/mcp" => {
                let identity = match self.authenticate(request.headers(), &info, route).await {
                    Ok(identity) => identity,
                    Err(response) => return *response,
                };
                self.serve_mcp(request, identity, info).await
            }
            "/sse" => {
                let identity = match self.authenticate(request.headers(), &info, route).await {
                    Ok(identity) => identity,
                    Err(response) => return *response,
                };
                match method {
                    Method::GET => {
                        let slot =
                            match self.stream_slot(&identity, request.headers(), &Value::Null) {
                                Ok(slot) => slot,
                                Err(refused) => return *refused,
                            };
                        match self.make_session_room(&identity, &Value::Null).await {
                            Ok(room) => held(self.open_legacy_stream(&identity, room), slot),
                            Err(refused) => *refused,
                        }
                    }
                    _ => method_not_allowed("GET"),
                }
            }
            "/messages" | legacy::MESSAGES_PATH => {
                let identity = match self.authenticate(request.headers(), &info, route).await {
                    Ok(identity) => identity,
                    Err(response) => return *response,
                };
                match method {
                    Method::POST => self.post_legacy_message(identity, &info, request).await,
                    _ => method_not_allowed("POST"),
                }
            }
            p if p.starts_with("/admin/") => {
                let identity = match self.authenticate(request.headers(), &info, route).await {
                    Ok(identity) => identity,
                    Err(response) => return *response,
                };
                if !identity.admin {
                    if self.settings.audit.is_on() {
                        let (time, request_id, remote) = request_members(&info);
                        let record = AdminRefusedRecord {
                            caller: caller_json(Some(&identity)),
                            error_class: "not_admin",
                            event: "admin",
                            method: request.method().as_str(),
                            outcome: "refused",
                            path: request.uri().path(),
                            remote,
                            request_id,
                            status: 403,
                            time,
                        };
                        self.audit_refusal(&record).await;
                    }
                    let scope = self.admin_scope(&identity);
                    return self.forbidden(request.headers(), &scope);
                }
                admin::handle(self, request, &identity, &info).await
            }
            _ => respond::error(
                StatusCode::NOT_FOUND,
                "not found; MCP is served at /mcp (and the legacy SSE transport at /sse)",
            ),
        }
    }

    async fn metrics_response(&self) -> Response<Body> {
        let sessions = self.sessions.sessions.read().await.len() + self.legacy.len();
        let sources = self.runtime.sources().list();
        let privileged = sources
            .iter()
            .any(|s| s.db.role().is_some_and(|r| !r.read_only()));
        let pools: Vec<(&str, _)> = sources.iter().map(|s| (&*s.name, s.db.status())).collect();
        let rejected = self.runtime.rejected_components().len();
        let text = self.metrics.render(&pools, privileged, sessions, rejected);
        let mut response = Response::new(respond::text(text));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }
}

/// The proxy's `X-Request-Id` when it is short and plain, else a new one.
fn request_id(headers: &HeaderMap) -> Arc<str> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(Arc::from)
        .unwrap_or_else(rmcp::transport::common::server_side_http::session_id)
}
