//! The stateless 2026-07-28 `tools/call` answered in the request's own task, without
//! rmcp's per-request service (its task, transport, channels and re-serialization of the
//! message to check headers). Only a request that rmcp would serve as it stands takes
//! this path: every header it checks present once and plainly agreeing with the body.
//! Anything else (an error to answer, a base64 header, a tool whose schema asks for
//! `Mcp-Param-*` headers, an unknown tool) goes through rmcp, which answers it as before.

use super::handler::{CallScope, McpHandler};
use crate::access::{Identity, RequestInfo};
use crate::limits::Permit;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use rmcp::model::{
    CallToolRequestParams, ClientJsonRpcMessage, ClientRequest, ErrorCode, GetMeta,
    ProtocolVersion, RequestId, RequestMetaObject, ServerJsonRpcMessage, ServerResult,
};
use rmcp::transport::common::http_header::{
    BASE64_HEADER_PREFIX, EVENT_STREAM_MIME_TYPE, HEADER_MCP_METHOD, HEADER_MCP_NAME,
    HEADER_MCP_PROTOCOL_VERSION, JSON_MIME_TYPE,
};
use serde_json::{Map, Value};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio_util::sync::CancellationToken;

/// A `tools/call` this module answers.
pub struct DirectCall {
    id: RequestId,
    params: CallToolRequestParams,
    meta: RequestMetaObject,
}

/// The call, when `body` is a stateless 2026-07-28 `tools/call` whose headers rmcp would
/// accept as they are; `None` sends the request through rmcp. `input_schema` looks up
/// the called tool's input schema (`None`: no such tool).
pub fn recognize(
    headers: &HeaderMap,
    body: &[u8],
    input_schema: impl FnOnce(&str) -> Option<std::sync::Arc<Map<String, Value>>>,
) -> Option<DirectCall> {
    if !accepts_json_and_sse(headers) || !is_json(headers) || !plain_host(headers) {
        return None;
    }
    let version = ProtocolVersion::V_2026_07_28;
    if sole(headers, HEADER_MCP_PROTOCOL_VERSION)? != version.as_str()
        || sole(headers, HEADER_MCP_METHOD)? != "tools/call"
    {
        return None;
    }
    let ClientJsonRpcMessage::Request(mut request) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    // The request's `_meta` (rmcp keeps it apart from the params).
    let meta = std::mem::take(request.request.get_meta_mut());
    let ClientRequest::CallToolRequest(call) = request.request else {
        return None;
    };
    if meta.protocol_version().as_ref() != Some(&version)
        || !meta.missing_required_keys(&version).is_empty()
    {
        return None;
    }
    let name = sole(headers, HEADER_MCP_NAME)?;
    if name.starts_with(BASE64_HEADER_PREFIX) || name != call.params.name {
        return None;
    }
    if names_headers(input_schema(&call.params.name)?.as_ref()) {
        return None;
    }
    Some(DirectCall {
        id: request.id,
        params: call.params,
        meta,
    })
}

/// The only value of header `name`, when it is sent exactly once as visible ASCII.
fn sole<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?.to_str().ok()?;
    values.next().is_none().then_some(value)
}

/// One `Host` that reads as an authority with a numeric port if any. The server's own
/// check (`server/hosts.rs`) has passed; rmcp also refuses a missing or malformed Host
/// when an allow-list is set, so those go to rmcp.
fn plain_host(headers: &HeaderMap) -> bool {
    let Some(host) = sole(headers, http::header::HOST.as_str()) else {
        return false;
    };
    if host.parse::<http::uri::Authority>().is_err() {
        return false;
    }
    // After an IPv6 literal's `]`, or in the whole of any other host.
    let after_name = host.rfind(']').map_or(host, |i| &host[i + 1..]);
    match after_name.rsplit_once(':') {
        Some((_, port)) => port.parse::<u16>().is_ok(),
        None => true,
    }
}

/// `Accept` names both JSON and an event stream, without parameters (a quality of 0
/// would refuse one; rmcp reads those).
fn accepts_json_and_sse(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(http::header::ACCEPT) {
        // Quotes change how rmcp splits the list: its reading then.
        let Ok(value) = value.to_str() else {
            return false;
        };
        if value.contains('"') {
            return false;
        }
        for range in value.split(',') {
            let range = range.trim();
            if range.contains(';') {
                return false;
            }
            json |= range.eq_ignore_ascii_case(JSON_MIME_TYPE);
            sse |= range.eq_ignore_ascii_case(EVENT_STREAM_MIME_TYPE);
        }
    }
    json && sse
}

/// `Content-Type` is JSON, as rmcp reads it (parameters after `;` ignored).
fn is_json(headers: &HeaderMap) -> bool {
    sole(headers, http::header::CONTENT_TYPE.as_str()).is_some_and(|value| {
        let essence = value.split_once(';').map_or(value, |(essence, _)| essence);
        essence.trim().eq_ignore_ascii_case(JSON_MIME_TYPE)
    })
}

/// Whether an input schema asks for an argument to be mirrored in an `Mcp-Param-*`
/// header (an `x-mcp-header` on any property along `properties` chains).
fn names_headers(schema: &Map<String, Value>) -> bool {
    let Some(Value::Object(properties)) = schema.get("properties") else {
        return false;
    };
    properties.values().any(|property| match property {
        Value::Object(property) => property.contains_key("x-mcp-header") || names_headers(property),
        _ => false,
    })
}

impl McpHandler {
    /// Runs the call and answers it as rmcp answers a stateless request with a JSON
    /// body: the JSON-RPC response, HTTP 200 (or the status rmcp gives the error).
    pub async fn answer_directly(
        &self,
        call: DirectCall,
        caller: Identity,
        admitted: Option<Permit>,
        info: RequestInfo,
        shutdown: &CancellationToken,
    ) -> (StatusCode, Bytes) {
        let audited = self.audit_is_on();
        let DirectCall { id, params, meta } = call;
        let client = match (audited, meta.client_info()) {
            (true, Some(client)) => (Some(client.name), Some(client.version)),
            _ => (None, None),
        };
        // Cancelled when the client goes away, or when the server stops for good (as
        // rmcp ends the stateless calls it still runs then).
        let ct = shutdown.child_token();
        let scope = CallScope {
            caller: Some(caller),
            admitted: admitted.map(Ok),
            info,
            rpc_id: id.clone(),
            client,
            ct: ct.clone(),
        };
        let handler = self.clone();
        let result = FinishAlways::new(ct, async move { handler.call(params, scope).await }).await;
        let (message, status) = match result {
            Ok(response) => (
                ServerJsonRpcMessage::response(ServerResult::from(response), id),
                StatusCode::OK,
            ),
            Err(error) => {
                let status = status_of(error.code);
                (ServerJsonRpcMessage::error(error, Some(id)), status)
            }
        };
        match serde_json::to_vec(&message) {
            Ok(body) => (status, Bytes::from(body)),
            Err(e) => {
                tracing::error!("serializing a tools/call answer failed: {e}");
                let error = rmcp::model::ErrorData::internal_error(
                    "the answer could not be serialized",
                    None,
                );
                let fallback = ServerJsonRpcMessage::error(error, None);
                let body = serde_json::to_vec(&fallback).unwrap_or_default();
                (StatusCode::INTERNAL_SERVER_ERROR, Bytes::from(body))
            }
        }
    }
}

/// The HTTP status rmcp gives a JSON-RPC error on the stateless path of a request whose
/// `_meta` is well formed (`jsonrpc_http_status` in rmcp's tower.rs).
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
        | ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY
        | ErrorCode::HEADER_MISMATCH => StatusCode::BAD_REQUEST,
        ErrorCode::METHOD_NOT_FOUND => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// A call run in the request's task that still ends properly when that task is dropped
/// (the client went away): the token is cancelled, which stops the sandbox and the
/// statement at once, and the rest runs in a task of its own, so the call is still
/// counted, logged and audited as cancelled, as when rmcp ran it in its own task.
struct FinishAlways<F: Future + Send + 'static>
where
    F::Output: Send,
{
    call: Option<Pin<Box<F>>>,
    ct: CancellationToken,
}

impl<F: Future + Send + 'static> FinishAlways<F>
where
    F::Output: Send,
{
    fn new(ct: CancellationToken, call: F) -> Self {
        Self {
            call: Some(Box::pin(call)),
            ct,
        }
    }
}

impl<F: Future + Send + 'static> Future for FinishAlways<F>
where
    F::Output: Send,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Unpin: the call is boxed.
        let this = self.get_mut();
        let Some(call) = this.call.as_mut() else {
            return Poll::Pending; // polled after completion: never again ready
        };
        let output = std::task::ready!(call.as_mut().poll(cx));
        this.call = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for FinishAlways<F>
where
    F::Output: Send,
{
    fn drop(&mut self) {
        let Some(call) = self.call.take() else { return };
        self.ct.cancel();
        if std::thread::panicking() {
            return; // the call itself panicked: polling it again would panic again
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                call.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use serde_json::json;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    const GOOD: [(&str, &str); 6] = [
        ("host", "127.0.0.1:8080"),
        ("accept", "application/json, text/event-stream"),
        ("content-type", "application/json"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "query_sql"),
    ];

    fn body(name: &str, meta_version: &str) -> Vec<u8> {
        json!({
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {
                "name": name, "arguments": {"sql": "SELECT 1"},
                "_meta": {
                    "io.modelcontextprotocol/protocolVersion": meta_version,
                    "io.modelcontextprotocol/clientCapabilities": {},
                }
            }
        })
        .to_string()
        .into_bytes()
    }

    fn schema(value: Value) -> Option<std::sync::Arc<Map<String, Value>>> {
        match value {
            Value::Object(map) => Some(std::sync::Arc::new(map)),
            _ => None,
        }
    }

    fn plain(_: &str) -> Option<std::sync::Arc<Map<String, Value>>> {
        schema(json!({"type": "object", "properties": {"sql": {"type": "string"}}}))
    }

    #[test]
    fn a_plain_stateless_call_is_answered_directly() {
        let call = recognize(&headers(&GOOD), &body("query_sql", "2026-07-28"), plain);
        let call = call.expect("recognized");
        assert_eq!(call.params.name, "query_sql");
        assert_eq!(call.id, RequestId::Number(7));
    }

    /// Each of these is left to rmcp, which answers it (mostly with an error).
    #[test]
    fn anything_rmcp_would_judge_goes_through_rmcp() {
        let good = body("query_sql", "2026-07-28");
        let with = |name: &'static str, value: &'static str| {
            let mut h = headers(&GOOD);
            h.insert(name, HeaderValue::from_static(value));
            h
        };
        let without = |name: &str| {
            let mut h = headers(&GOOD);
            h.remove(name);
            h
        };
        let duplicated = |name: &'static str, value: &'static str| {
            let mut h = headers(&GOOD);
            h.append(name, HeaderValue::from_static(value));
            h
        };
        let cases: Vec<(&str, HeaderMap, Vec<u8>)> = vec![
            ("no accept", without("accept"), good.clone()),
            ("json only", with("accept", "application/json"), good.clone()),
            (
                "a quality",
                with("accept", "application/json, text/event-stream;q=0"),
                good.clone(),
            ),
            (
                "a quote",
                with("accept", "x\"y, application/json, text/event-stream"),
                good.clone(),
            ),
            ("no host", without("host"), good.clone()),
            ("odd host", with("host", "localhost:abc"), good.clone()),
            ("form body", with("content-type", "text/plain"), good.clone()),
            ("no version header", without("mcp-protocol-version"), good.clone()),
            ("old version", with("mcp-protocol-version", "2025-06-18"), good.clone()),
            ("no method header", without("mcp-method"), good.clone()),
            ("other method header", with("mcp-method", "tools/list"), good.clone()),
            ("two method headers", duplicated("mcp-method", "tools/call"), good.clone()),
            ("no name header", without("mcp-name"), good.clone()),
            ("other name", with("mcp-name", "list_tables"), good.clone()),
            ("two names", duplicated("mcp-name", "query_sql"), good.clone()),
            ("base64 name", with("mcp-name", "=?base64?cXVlcnlfc3Fs?="), good.clone()),
            ("meta disagrees", headers(&GOOD), body("query_sql", "2025-06-18")),
            ("not JSON", headers(&GOOD), b"{".to_vec()),
            (
                "no meta",
                headers(&GOOD),
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "query_sql", "arguments": {}}})
                .to_string()
                .into_bytes(),
            ),
            (
                "no capabilities in meta",
                headers(&GOOD),
                json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "query_sql", "arguments": {},
                                  "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}})
                .to_string()
                .into_bytes(),
            ),
            (
                "a notification",
                headers(&GOOD),
                json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "query_sql"}})
                    .to_string()
                    .into_bytes(),
            ),
        ];
        for (case, headers, body) in cases {
            assert!(recognize(&headers, &body, plain).is_none(), "{case}");
        }
        let good_headers = headers(&GOOD);
        assert!(
            recognize(&good_headers, &good, |_| None).is_none(),
            "unknown tool"
        );
        let annotated = |_: &str| {
            schema(
                json!({"type": "object", "properties": {"filter": {"type": "object",
                "properties": {"region": {"type": "string", "x-mcp-header": "Region"}}}}}),
            )
        };
        assert!(
            recognize(&good_headers, &good, annotated).is_none(),
            "Mcp-Param-*"
        );
    }
}
