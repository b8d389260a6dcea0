//! HTTP for the legacy HTTP+SSE transport (2024-11-05): `GET /sse` opens a session's
//! stream, `POST /messages/?session_id=…` delivers a client message to it (202).
//! Authentication and Origin checks are those of `/mcp`, done by the router.

use super::respond::RequestBody;
use super::respond::{self, Body};
use super::{App, Identity};
use crate::access::RequestInfo;
use crate::mcp::legacy_sse::PostError;
use crate::mcp::validate;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use rmcp::model::{ClientJsonRpcMessage, GetExtensions};
use std::sync::Arc;

/// Where clients post their messages; the `endpoint` event names it.
pub const MESSAGES_PATH: &str = "/messages/";

impl App {
    /// `GET /sse`: a new session and its event stream.
    pub(super) fn open_legacy_stream(
        &self,
        identity: &Identity,
        room: super::sessions::Reservation,
    ) -> Response<Body> {
        let (session, body) = self.legacy.open(
            self.handler.clone(),
            Arc::from(identity.owner()),
            MESSAGES_PATH,
            self.settings.sse_keep_alive,
            &self.streams,
        );
        room.opened(session.clone(), super::sessions::Kind::Legacy);
        tracing::info!(%session, caller = &*identity.name, "legacy SSE session opened");
        let mut response = Response::new(BodyExt::boxed(body));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Tells nginx not to buffer the stream.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        response
    }

    /// `POST /messages/?session_id=…`: 202 once the message is handed to the session;
    /// the answer comes on the session's stream.
    pub(super) async fn post_legacy_message<B: RequestBody>(
        &self,
        identity: Identity,
        info: &crate::access::RequestInfo,
        request: Request<B>,
    ) -> Response<Body> {
        let Some(session) = session_id(request.uri().query()) else {
            return respond::error(
                StatusCode::BAD_REQUEST,
                "the session_id query parameter is required (from the `endpoint` event of GET /sse)",
            );
        };
        let (mut parts, body) = request.into_parts();
        let bytes = match self.read_mcp_body(&parts, body).await {
            Ok(bytes) => bytes,
            Err(response) => return *response,
        };
        if let Err(response) = self.step_up(&identity, info, &parts.headers, &bytes).await {
            return *response;
        }
        if let Err(rejection) = validate::check(&bytes) {
            return respond::json(StatusCode::BAD_REQUEST, &rejection.to_json());
        }
        let mut message: ClientJsonRpcMessage = match serde_json::from_slice(&bytes) {
            Ok(message) => message,
            Err(e) => {
                let rejection = validate::Rejection {
                    code: validate::INVALID_REQUEST,
                    message: format!("not an MCP client message: {e}"),
                    id: serde_json::Value::Null,
                };
                return respond::json(StatusCode::BAD_REQUEST, &rejection.to_json());
            }
        };
        let caller: Arc<str> = Arc::from(identity.owner());
        // Marks the session used (the least recently used idle one is closed first); the
        // legacy registry checks the owner below.
        drop(self.book.use_session(&session, &caller));
        if let Some(info) = parts.extensions.get_mut::<RequestInfo>() {
            info.session = Some(Arc::from(session.as_str()));
        }
        if let ClientJsonRpcMessage::Request(request) = &mut message {
            // The handler finds the caller's identity here, as for Streamable HTTP.
            parts.extensions.insert(identity);
            request.request.extensions_mut().insert(parts);
        }
        match self.legacy.post(&session, &caller, message).await {
            Ok(()) => accepted(),
            Err(PostError::UnknownSession) => match &self.settings.store {
                // Legacy sessions are not shared: the stream is this process's socket.
                Some(_) => respond::error(
                    StatusCode::NOT_FOUND,
                    "unknown session on this replica: a legacy SSE (2024-11-05) session lives \
                     on the replica holding its GET /sse stream, so route /sse and /messages/ \
                     with affinity on session_id, or use Streamable HTTP (/mcp), which every \
                     replica serves",
                ),
                None => respond::error(
                    StatusCode::NOT_FOUND,
                    "unknown or closed session; open a new one with GET /sse",
                ),
            },
            Err(PostError::Closed) => respond::error(
                StatusCode::NOT_FOUND,
                "the session closed; open a new one with GET /sse",
            ),
        }
    }
}

fn accepted() -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"Accepted")).boxed());
    *response.status_mut() = StatusCode::ACCEPTED;
    response
}

/// The `session_id` query parameter (ids are UUIDs: nothing to percent-decode).
fn session_id(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("session_id="))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::session_id;

    #[test]
    fn session_id_is_read_from_the_query() {
        assert_eq!(session_id(Some("session_id=abc")), Some("abc".into()));
        assert_eq!(session_id(Some("x=1&session_id=abc")), Some("abc".into()));
        assert_eq!(session_id(Some("session_id=")), None);
        assert_eq!(session_id(Some("sessionid=abc")), None);
        assert_eq!(session_id(None), None);
    }
}
