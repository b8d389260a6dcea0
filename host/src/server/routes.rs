//! Routing. Probes, open to anyone and unchecked: `/health`, `/ready` (their details only
//! for a valid token). Every other route passes the Host and Origin checks first; then
//! the OAuth metadata is open, `/mcp`, `/sse`, `/messages/` and `/metrics` need a token,
//! and `/admin/...` an admin token (even with authentication off). Every request is
//! counted by route and status.

use super::respond::{self, Body};
use super::sessions::{Kind, NotOwner, Reservation};
use super::{App, Denied, Identity, Remote, admin, health, legacy, stream_budget, wellknown};
use crate::access::{Origin, RequestInfo};
use crate::limits::{LIMITED_CODE, Limited};
use crate::mcp::{Admitted, caller_json};
use crate::mcp::{direct, validate};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use rmcp::transport::streamable_http_server::session::SessionManager;
use serde_json::Value;
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tower_service::Service;

/// How long an opening waits for the sessions it replaces to close (a session whose
/// worker stopped draining could hold it forever).
const EVICTION_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Retry-After of a stream refused by the budget: streams end when clients close them.
const STREAM_RETRY_SECS: u64 = 5;

/// `response`, with `guard` kept until its body is done (sent, or its client gone).
fn held<T: Send + Sync + 'static>(response: Response<Body>, guard: T) -> Response<Body> {
    response.map(|body| {
        BodyExt::boxed(body.map_frame(move |frame| {
            let _ = &guard;
            frame
        }))
    })
}

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
    pub async fn handle(&self, mut request: Request<Incoming>) -> Response<Body> {
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
            id: match self.audit.is_on() {
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
    pub async fn handle_metrics_port(&self, request: Request<Incoming>) -> Response<Body> {
        if let Err(refused) = self.check_origin(request.headers()) {
            return *refused;
        }
        match request.uri().path() {
            "/metrics" => self.metrics_response().await,
            _ => respond::error(StatusCode::NOT_FOUND, "only /metrics is served here"),
        }
    }

    async fn route(&self, request: Request<Incoming>) -> Response<Body> {
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
                    if self.audit.is_on() {
                        let record = json!({
                            "time": crate::audit::now_rfc3339(),
                            "event": "admin",
                            "request_id": &*info.id,
                            "remote": info.remote.map(|r| r.to_string()),
                            "caller": caller_json(Some(&identity)),
                            "method": request.method().as_str(),
                            "path": request.uri().path(),
                            "outcome": "refused",
                            "error_class": "not_admin",
                            "status": 403,
                        });
                        self.audit_refusal(record).await;
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

    /// `/mcp` for an authenticated caller: its sessions bound to it and capped, the
    /// stateless path's limits answered in HTTP (429), then rmcp.
    async fn serve_mcp(
        &self,
        request: Request<Incoming>,
        identity: Identity,
        mut info: RequestInfo,
    ) -> Response<Body> {
        let (mut parts, body) = request.into_parts();
        let session: Option<Arc<str>> = parts
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(Arc::from);
        info.session = session.clone();
        parts.extensions.insert(info.clone());
        parts.extensions.insert(identity.clone());
        let body = match self.read_mcp_body(&parts, body).await {
            Ok(body) => body,
            Err(response) => return *response,
        };
        if let Err(response) = self.step_up(&identity, &info, &parts.headers, &body).await {
            return *response;
        }
        let owner = identity.owner();
        let posting = parts.method == Method::POST;
        let peek = posting.then(|| validate::peek(&body));
        // A stream that lasts (a session's GET, a listen request, in a session or not)
        // takes a slot of the caller's stream budget first.
        let streams = parts.method == Method::GET
            || peek
                .as_ref()
                .is_some_and(|p| p.method.as_deref() == Some("subscriptions/listen"));
        let slot = match streams {
            true => {
                let id = peek.as_ref().map_or(&Value::Null, |p| &p.id);
                match self.stream_slot(&identity, &parts.headers, id) {
                    Ok(slot) => Some(slot),
                    Err(refused) => return *refused,
                }
            }
            false => None,
        };
        let mut busy = None;
        let mut opening = None;
        match &session {
            Some(id) => match self.book.use_session(id, &owner) {
                Ok(guard) => busy = Some(guard),
                Err(NotOwner) => {
                    tracing::info!(caller = &*identity.name, "refused another caller's session");
                    return respond::error(
                        StatusCode::NOT_FOUND,
                        "session not found; start a new one with initialize",
                    );
                }
            },
            None => {
                if let Some(peek) = &peek {
                    match peek.method.as_deref() {
                        Some("initialize") => {
                            match self.make_session_room(&identity, &peek.id).await {
                                Ok(room) => opening = Some(room),
                                Err(refused) => return *refused,
                            }
                        }
                        // The stateless revision: a limit is answered in HTTP, 429.
                        Some("tools/call") => match self.limiter.admit(&identity) {
                            Ok(permit) => {
                                // The common case, answered here without rmcp's machinery.
                                if let Some(call) =
                                    direct::recognize(&parts.headers, &body, |name| {
                                        self.runtime.input_schema(name)
                                    })
                                {
                                    let (status, answer) = self
                                        .handler
                                        .answer_directly(
                                            call,
                                            identity,
                                            Some(permit),
                                            info,
                                            &self.streams,
                                        )
                                        .await;
                                    return respond::json_bytes(status, answer);
                                }
                                parts
                                    .extensions
                                    .insert(Admitted(Arc::new(Mutex::new(Some(permit)))));
                            }
                            Err(limited) => {
                                self.audit_limited(&identity, &info, peek, &limited).await;
                                return too_many(
                                    &peek.id,
                                    &limited.message(),
                                    limited.kind(),
                                    limited.retry_after_secs(),
                                );
                            }
                        },
                        _ => {}
                    }
                }
            }
        }
        let deleting = parts.method == Method::DELETE;
        let mut mcp = self.mcp.clone();
        let request = Request::from_parts(parts, Full::new(body));
        let opens = opening.is_some();
        let call = async move {
            let response = match mcp.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if let Some(room) = opening
                && let Some(id) = response
                    .headers()
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
            {
                room.opened(Arc::from(id), Kind::Streamable);
            }
            response
        };
        // An opening runs to its end in a task of its own: a client that goes away after
        // rmcp made the session must not leave it open, out of the book.
        let response = if opens {
            match tokio::spawn(call).await {
                Ok(response) => response,
                Err(e) => {
                    tracing::error!("opening a session failed: {e}");
                    return respond::error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "opening the session failed",
                    );
                }
            }
        } else {
            call.await
        };
        if deleting && response.status().is_success() {
            if let Some(id) = &session {
                self.book.closed(id);
            }
            if response.status() == StatusCode::ACCEPTED {
                // rmcp answers a session's DELETE with 202; there is nothing left to
                // accept, and the Python SDK logs anything but 200/204 as a failure.
                let mut ended = Response::new(respond::empty());
                *ended.status_mut() = StatusCode::NO_CONTENT;
                return ended;
            }
        }
        // The session stays busy (not evictable), and a stream keeps its slot, until the
        // answer has been sent or its client left.
        match (busy, slot) {
            (None, None) => response,
            guards => held(response, guards),
        }
    }

    /// A slot of the stream budget for `identity`, or 429 (counted, logged); 403 for a
    /// caller who may do nothing here (an OAuth token without this server's scopes),
    /// which must not spend the server's budget.
    fn stream_slot(
        &self,
        identity: &Identity,
        headers: &HeaderMap,
        id: &Value,
    ) -> Result<stream_budget::Slot, Box<Response<Body>>> {
        if !identity.grants_anything() {
            let scope = self.tools_scope();
            return Err(Box::new(self.forbidden(headers, &scope)));
        }
        self.stream_budget.take(&identity.owner()).map_err(|spent| {
            self.limiter.count_refusal(identity, "streams");
            tracing::info!(
                caller = &*identity.name,
                "refused a stream: {}",
                spent.message
            );
            Box::new(too_many(id, &spent.message, "streams", STREAM_RETRY_SECS))
        })
    }

    /// Room for one more session of `identity`: closes the least recently used idle
    /// sessions past the caps, or answers 429 when every one is busy.
    async fn make_session_room(
        &self,
        identity: &Identity,
        id: &Value,
    ) -> Result<Reservation, Box<Response<Body>>> {
        let seen = std::time::Instant::now();
        let live: HashSet<Arc<str>> = self
            .sessions
            .sessions
            .read()
            .await
            .keys()
            .cloned()
            .collect();
        let legacy = &self.legacy;
        let room = self
            .book
            .make_room(&identity.owner(), seen, |id, kind| match kind {
                Kind::Streamable => live.contains(id),
                Kind::Legacy => legacy.contains(id),
                Kind::Reserved => true,
            });
        match room {
            Ok((evicted, room)) => {
                let mut closing = Vec::new();
                for (session, kind) in evicted {
                    tracing::info!(
                        %session,
                        caller = &*identity.name,
                        "closing the least recently used idle session: a session cap was reached"
                    );
                    match kind {
                        // Closed in a task of its own: a request cancelled while it waits
                        // for rmcp's lock must not leave the session open, out of the book.
                        Kind::Streamable => {
                            let sessions = self.sessions.clone();
                            closing.push(tokio::spawn(async move {
                                let _ = sessions.close_session(&session).await;
                            }));
                        }
                        Kind::Legacy => self.legacy.close(&session),
                        Kind::Reserved => {}
                    }
                }
                // The new session opens only once the ones it replaces are gone: rmcp's
                // map never holds more than the caps allow, however many openings race.
                for close in closing {
                    match tokio::time::timeout(EVICTION_WAIT, close).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::error!("closing an evicted session failed: {e}"),
                        Err(_) => tracing::warn!(
                            "an evicted session did not close within {} s; opening anyway",
                            EVICTION_WAIT.as_secs()
                        ),
                    }
                }
                Ok(room)
            }
            Err(full) => {
                self.limiter.count_refusal(identity, "sessions");
                tracing::info!(
                    caller = &*identity.name,
                    "refused a session: {}",
                    full.message
                );
                Err(Box::new(too_many(id, &full.message, "sessions", 1)))
            }
        }
    }

    /// The audit record of a stateless call refused by a limit (the handler never sees
    /// it).
    async fn audit_limited(
        &self,
        identity: &Identity,
        info: &RequestInfo,
        peek: &validate::Peek,
        limited: &Limited,
    ) {
        if !self.audit.is_on() {
            return;
        }
        let record = self.refused_call(
            identity,
            info,
            peek,
            "limited",
            limited.kind(),
            &limited.message(),
        );
        let _ = self
            .audit
            .write(&record, self.runtime.limits().timeout)
            .await;
    }

    /// The audit record of a `tools/call` refused before the handler saw it.
    fn refused_call(
        &self,
        identity: &Identity,
        info: &RequestInfo,
        peek: &validate::Peek,
        outcome: &str,
        error_class: &str,
        error: &str,
    ) -> Value {
        let mut arguments = peek.arguments.clone().unwrap_or(Value::Null);
        self.audit.redact(&mut arguments);
        json!({
            "time": crate::audit::now_rfc3339(),
            "event": "tool_call",
            "request_id": &*info.id,
            "rpc_id": peek.id,
            "remote": info.remote.map(|r| r.to_string()),
            "caller": caller_json(Some(identity)),
            "tool": peek.tool,
            "arguments": arguments,
            "outcome": outcome,
            "error_class": error_class,
            "error": error,
        })
    }

    /// The rules of every route but the probes: an allowed Host (HTTP/2 sends it as the
    /// `:authority`, which hyper puts in the URI), and an allowed Origin when one is sent
    /// (a browser page on another site). (rmcp checks the Host of the `/mcp` requests it
    /// serves again; `mcp/direct.rs` leaves it any request without a plain Host.)
    fn check_host_and_origin(
        &self,
        headers: &HeaderMap,
        uri: &http::Uri,
    ) -> Result<(), Box<Response<Body>>> {
        let host = headers
            .get(header::HOST)
            .map(|h| h.to_str().unwrap_or("\u{0}"))
            .or_else(|| uri.authority().map(|a| a.as_str()));
        // (`handle` has copied an HTTP/2 `:authority` into Host already.)
        if !self.hosts.allows(host) {
            self.metrics.auth_failure("forbidden_host");
            tracing::info!(host, "refused a request for a foreign Host");
            return Err(Box::new(respond::error(
                StatusCode::FORBIDDEN,
                "this Host is not allowed (see --allowed-host)",
            )));
        }
        self.check_origin(headers)
    }

    /// Reads an `/mcp` body up to the size limit (413 beyond it) and, for JSON posts,
    /// rejects malformed JSON-RPC with a 400 and the JSON-RPC error the spec names.
    pub(super) async fn read_mcp_body(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
    ) -> Result<Bytes, Box<Response<Body>>> {
        let limited = http_body_util::Limited::new(body, self.max_request_bytes);
        // A body trickled in forever would hold the connection and this task.
        let Ok(collected) = tokio::time::timeout(self.idle_timeout, limited.collect()).await else {
            return Err(Box::new(respond::error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body did not arrive within {} s (--idle-timeout)",
                    self.idle_timeout.as_secs()
                ),
            )));
        };
        let bytes = match collected {
            Ok(collected) => collected.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Err(Box::new(respond::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("the request body exceeds {} bytes", self.max_request_bytes),
                )));
            }
            Err(e) => {
                return Err(Box::new(respond::error(
                    StatusCode::BAD_REQUEST,
                    &format!("reading the request body failed: {e}"),
                )));
            }
        };
        let is_json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        if parts.method == Method::POST
            && is_json
            && let Err(rejection) = validate::check(&bytes)
        {
            return Err(Box::new(respond::json(
                StatusCode::BAD_REQUEST,
                &rejection.to_json(),
            )));
        }
        Ok(bytes)
    }

    async fn metrics_response(&self) -> Response<Body> {
        let sessions = self.sessions.sessions.read().await.len() + self.legacy.len();
        let db = self.runtime.db();
        let privileged = db.role().is_some_and(|r| !r.read_only());
        let text = self.metrics.render(db.status(), privileged, sessions);
        let mut response = Response::new(respond::text(text));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }

    /// The caller's identity, or the 401 to send (after its audit record).
    async fn authenticate(
        &self,
        headers: &HeaderMap,
        info: &RequestInfo,
        route: &'static str,
    ) -> Result<Identity, Box<Response<Body>>> {
        let denied = match self.auth.check(headers).await {
            Ok(identity) => return Ok(identity),
            Err(denied) => denied,
        };
        if self.audit.is_on() {
            let record = json!({
                "time": crate::audit::now_rfc3339(),
                "event": "auth_refused",
                "request_id": &*info.id,
                "remote": info.remote.map(|r| r.to_string()),
                "route": route,
                "outcome": "refused",
                "error_class": denied.reason(),
            });
            let _ = self
                .audit
                .write(&record, self.runtime.limits().timeout)
                .await;
        }
        {
            self.metrics.auth_failure(denied.reason());
            tracing::info!(reason = denied.reason(), "authentication failed");
            let challenge = match denied {
                Denied::Invalid | Denied::Token(_) => {
                    wellknown::Challenge::InvalidToken(denied.description().unwrap_or(""))
                }
                Denied::Missing | Denied::Malformed => wellknown::Challenge::Missing,
            };
            let mut response = respond::error(
                StatusCode::UNAUTHORIZED,
                denied
                    .description()
                    .unwrap_or("a valid bearer token is required (Authorization: Bearer <token>)"),
            );
            if let Ok(value) =
                HeaderValue::from_str(&wellknown::challenge(self, headers, challenge))
            {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            Err(Box::new(response))
        }
    }

    /// The scope that grants every tool.
    fn tools_scope(&self) -> String {
        self.auth.oauth().map_or("tools".to_owned(), |v| {
            v.settings().scopes.all_tools.clone()
        })
    }

    /// The scope that grants the admin API, as the caller would ask for it.
    fn admin_scope(&self, identity: &Identity) -> String {
        match (identity.origin, self.auth.oauth()) {
            (Origin::OAuth, Some(verifier)) => verifier.settings().scopes.admin.clone(),
            _ => "admin".to_owned(),
        }
    }

    /// 403 with an `insufficient_scope` challenge naming `scope`, so an OAuth client can
    /// ask for it.
    fn forbidden(&self, headers: &HeaderMap, scope: &str) -> Response<Body> {
        self.metrics.auth_failure("insufficient_scope");
        let mut response = respond::error(
            StatusCode::FORBIDDEN,
            &format!("this token lacks the `{scope}` scope"),
        );
        let challenge = wellknown::challenge(
            self,
            headers,
            wellknown::Challenge::InsufficientScope(scope),
        );
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }

    /// For an OAuth caller, a `tools/call` of a tool its scopes do not grant is refused
    /// at the HTTP level (403, `insufficient_scope` naming the tool's scope), so the
    /// client can step up; static tokens keep the JSON-RPC error (-32003), which the
    /// handler sends.
    pub(super) async fn step_up(
        &self,
        identity: &Identity,
        info: &RequestInfo,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(), Box<Response<Body>>> {
        let Some(verifier) = self.auth.oauth() else {
            return Ok(());
        };
        if identity.origin != Origin::OAuth {
            return Ok(());
        }
        let peek = validate::peek(body);
        let Some(tool) = peek.tool.as_deref() else {
            return Ok(());
        };
        if identity.may_call(tool) || self.runtime.tool(tool).is_none() {
            return Ok(());
        }
        tracing::info!(
            tool,
            caller = &*identity.name,
            "tools/call outside the token's scopes"
        );
        let scope = verifier.settings().scopes.for_tool(tool);
        if self.audit.is_on() {
            let mut record = self.refused_call(
                identity,
                info,
                &peek,
                "denied",
                "insufficient_scope",
                &format!("the token lacks the scope `{scope}`"),
            );
            // as the request named it: ownership is checked only after this
            record["claimed_session"] = json!(info.session.as_deref());
            self.audit_refusal(record).await;
        }
        Err(Box::new(self.forbidden(headers, &scope)))
    }

    /// Writes the record of a refusal made before any tool or admin action ran (the
    /// refusal stands whether or not the record is written; a failure is counted).
    async fn audit_refusal(&self, record: Value) {
        self.audit
            .write_refusal(&record, self.runtime.limits().timeout)
            .await;
    }

    fn check_origin(&self, headers: &HeaderMap) -> Result<(), Box<Response<Body>>> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin.to_str().unwrap_or("");
        if self.origins.allows(origin) {
            return Ok(());
        }
        self.metrics.auth_failure("forbidden_origin");
        tracing::info!(origin, "refused a request from a foreign origin");
        Err(Box::new(respond::error(
            StatusCode::FORBIDDEN,
            "this Origin is not allowed (see --allowed-origin)",
        )))
    }
}

/// 429 with `Retry-After` and a JSON-RPC error (code [`LIMITED_CODE`]) naming the limit.
fn too_many(id: &Value, message: &str, kind: &str, retry_after: u64) -> Response<Body> {
    let body = json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": {
            "code": LIMITED_CODE,
            "message": message,
            "data": {"kind": kind, "retryAfter": retry_after},
        },
    });
    let mut response = respond::json(StatusCode::TOO_MANY_REQUESTS, &body);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    response
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

pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = respond::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}
