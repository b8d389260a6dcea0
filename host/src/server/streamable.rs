//! `/mcp`, Streamable HTTP (sessions and the stateless revision) for an authenticated
//! caller: the body read and checked, OAuth step-up, sessions bound to their caller and
//! capped, long-lived streams held to the stream budget, the stateless path's limits
//! answered in HTTP (429), then rmcp (or `mcp/direct.rs` for a plain stateless call).
//! Mirrors `legacy.rs`, which serves the 2024-11-05 transport.

use super::respond::RequestBody;
use super::respond::{self, Body, too_many};
use super::sessions::Kind;
use super::{App, Identity, stream_budget};
use crate::access::{Origin, RequestInfo};
use crate::audit::{RefusedCallRecord, caller_json, request_members};
use crate::invocation::Outcome;
use crate::limits::Limited;
use crate::mcp::{Admitted, direct, validate};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use std::sync::Arc;
use tower_service::Service;

/// Retry-After of a stream refused by the budget: streams end when clients close them.
const STREAM_RETRY_SECS: u64 = 5;

/// `response`, with `guard` kept until its body is done (sent, or its client gone).
pub(super) fn held<T: Send + Sync + 'static>(response: Response<Body>, guard: T) -> Response<Body> {
    response.map(|body| {
        BodyExt::boxed(body.map_frame(move |frame| {
            let _ = &guard;
            frame
        }))
    })
}

impl App {
    /// `/mcp` for an authenticated caller: its sessions bound to it and capped, the
    /// stateless path's limits answered in HTTP (429), then rmcp.
    pub(super) async fn serve_mcp<B: RequestBody>(
        &self,
        request: Request<B>,
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
            Some(id) => {
                let deleting = parts.method == Method::DELETE;
                let calling = peek
                    .as_ref()
                    .is_some_and(|p| p.method.as_deref() == Some("tools/call"));
                match self.use_session(id, &identity, deleting, calling).await {
                    Ok((guard, admitted)) => {
                        busy = Some(guard);
                        if let Some(admitted) = admitted {
                            parts.extensions.insert(admitted);
                        }
                    }
                    Err(refused) => return *refused,
                }
            }
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
                        Some("tools/call") => match self.limiter.admit(&identity).await {
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
                                parts.extensions.insert(Admitted::new(Ok(permit)));
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
        let recorder = opening.as_ref().and_then(|_| self.recorder());
        let opener = identity.clone();
        let rpc_id = peek.as_ref().map_or(Value::Null, |p| p.id.clone());
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
                let id: Arc<str> = Arc::from(id);
                room.opened(id.clone(), Kind::Streamable);
                // With a store, the session exists once the store has its owner.
                if let Some(recorder) = recorder
                    && let Err(refused) = recorder.record(&id, &opener, &rpc_id).await
                {
                    return refused;
                }
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
                if let Some(records) = &self.records {
                    records.forget(id);
                }
                if let Some(store) = &self.settings.store
                    && let Err(e) = store.session_closed(id, &owner).await
                {
                    // Ended here, but other replicas would go on serving it: the client
                    // must hear that, and retry.
                    tracing::warn!("an ended session could not be removed from the store: {e}");
                    return respond::error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the session ended on this replica, but the shared store could not \
                         record it; retry the DELETE",
                    );
                }
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
    pub(super) fn stream_slot(
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

    /// The audit record of a stateless call refused by a limit (the handler never sees
    /// it).
    pub(super) async fn audit_limited(
        &self,
        identity: &Identity,
        info: &RequestInfo,
        peek: &validate::Peek,
        limited: &Limited,
    ) {
        if !self.settings.audit.is_on() {
            return;
        }
        let message = limited.message();
        let record = self.refused_call(
            identity,
            info,
            peek,
            Outcome::Limited,
            limited.kind(),
            &message,
        );
        self.audit_record(&record).await;
    }

    /// The audit record of a `tools/call` refused before the handler saw it (its
    /// arguments redacted as the handler's records are).
    pub(super) fn refused_call<'a>(
        &self,
        identity: &Identity,
        info: &RequestInfo,
        peek: &'a validate::Peek,
        outcome: Outcome,
        error_class: &'a str,
        error: &'a str,
    ) -> RefusedCallRecord<'a> {
        let mut arguments = peek.arguments.clone().unwrap_or(Value::Null);
        self.settings.audit.redact(&mut arguments);
        let (time, request_id, remote) = request_members(info);
        RefusedCallRecord {
            arguments,
            caller: caller_json(Some(identity)),
            claimed_session: None,
            error,
            error_class,
            event: "tool_call",
            outcome,
            remote,
            request_id,
            rpc_id: &peek.id,
            time,
            tool: peek.tool.as_deref(),
        }
    }

    /// Reads an `/mcp` body up to the size limit (413 beyond it) and, for JSON posts,
    /// rejects malformed JSON-RPC with a 400 and the JSON-RPC error the spec names.
    pub(super) async fn read_mcp_body<B: RequestBody>(
        &self,
        parts: &http::request::Parts,
        body: B,
    ) -> Result<Bytes, Box<Response<Body>>> {
        let limited = http_body_util::Limited::new(body, self.settings.max_request_bytes);
        // A body trickled in forever would hold the connection and this task.
        let Ok(collected) =
            tokio::time::timeout(self.settings.idle_timeout, limited.collect()).await
        else {
            return Err(Box::new(respond::error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body did not arrive within {} s (--idle-timeout)",
                    self.settings.idle_timeout.as_secs()
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
                    &format!(
                        "the request body exceeds {} bytes",
                        self.settings.max_request_bytes
                    ),
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
        let Some(verifier) = self.settings.auth.oauth() else {
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
        if self.settings.audit.is_on() {
            let message = format!("the token lacks the scope `{scope}`");
            let mut record = self.refused_call(
                identity,
                info,
                &peek,
                Outcome::Denied,
                "insufficient_scope",
                &message,
            );
            // as the request named it: ownership is checked only after this
            record.claimed_session = Some(info.session.as_deref());
            self.audit_refusal(&record).await;
        }
        Err(Box::new(self.forbidden(headers, &scope)))
    }
}
